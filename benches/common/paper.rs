//! The paper's evaluation in one run (`cargo bench --bench paper`): Figures 5 and 6 (throughput
//! against latency for a growing number of closed-loop clients, non-batched and batched),
//! Figure 7 (partitions with the throttled proposer), Figure 8 (two proposer crashes), recovery
//! after kill -9 over TCP, and Table I. Points of Figures 5 to 7 are interleaved: every round
//! runs every client count of every system (the order rotating per round), so that machine noise
//! hits every system alike; the files report the median of the rounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::closed_loop::Measurement;
use super::supervised::{self, KillPlan, Supervised};
use super::table_one;
use super::{bare, tara_loop};
use tara::cluster::Description;
use tara::cluster::plot::{Series, line_chart, log_chart};
use tara::protocol::Params;

/// How a source batches: a fixed size (waiting up to [`FIXED_BATCH_TIMEOUT_US`] for it to fill),
/// or adaptively (up to 64, sent whenever the source has drained its input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Batch {
    Fixed(usize),
    Adaptive,
}

/// How long a fixed-size batch waits to fill.
pub const FIXED_BATCH_TIMEOUT_US: u64 = 1_000;

/// A system of Figures 5 and 6.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum System {
    /// tara, the whole window in flight.
    Pipelined(Batch),
    /// tara with `max_in_flight = 1` (dataflows/baseline-sequential.toml).
    Sequential(Batch),
    /// Bare timely with TARA's hops and no consensus logic: the limit.
    Bare(usize),
    /// openraft in memory, from benches/compare.
    OpenRaft,
}

impl System {
    /// The legend entry.
    pub fn label(self) -> String {
        let batch = |b: Batch| match b {
            Batch::Fixed(1) => "no batching".to_string(),
            Batch::Fixed(n) => format!("batch {n}"),
            Batch::Adaptive => "adaptive batch (up to 64)".to_string(),
        };
        match self {
            System::Pipelined(b) => format!("tara pipelined, {}", batch(b)),
            System::Sequential(b) => format!("sequential baseline, {}", batch(b)),
            System::Bare(1) => "bare timely (limit), no batching".to_string(),
            System::Bare(n) => format!("bare timely (limit), batches up to {n}"),
            System::OpenRaft => "openraft (in-memory, own batching)".to_string(),
        }
    }

    fn params(batch: Batch) -> Params {
        match batch {
            Batch::Fixed(n) => Params { batch_size: n, batch_timeout_us: FIXED_BATCH_TIMEOUT_US, ..Params::default() },
            Batch::Adaptive => Params { batch_size: 64, batch_timeout_us: 0, ..Params::default() },
        }
    }
}

/// Figure 5 (non-batched) and Figure 6 (batched); openraft batches on its own and is in both.
pub fn figure_systems(figure: u8, openraft: bool) -> Vec<System> {
    let mut systems = match figure {
        5 => vec![System::Pipelined(Batch::Fixed(1)), System::Sequential(Batch::Fixed(1)), System::Bare(1)],
        _ => vec![
            System::Pipelined(Batch::Fixed(5)),
            System::Pipelined(Batch::Fixed(16)),
            System::Pipelined(Batch::Fixed(64)),
            System::Pipelined(Batch::Adaptive),
            System::Sequential(Batch::Fixed(5)),
            System::Bare(64),
        ],
    };
    if openraft {
        systems.push(System::OpenRaft);
    }
    systems
}

/// The run's settings (`Settings::from_env` for the bench, `Settings::smoke` for the test).
#[derive(Clone, Debug)]
pub struct Settings {
    pub out: PathBuf,
    pub smoke: bool,
    pub clients: Vec<usize>,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub rounds: usize,
    pub openraft: bool,
    pub partitions: Vec<usize>,
    pub fig7_clients: usize,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

fn env_list(name: &str, default: &str) -> Result<Vec<usize>, String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.into());
    text.split(',')
        .map(|v| v.trim().parse().ok().filter(|&v: &usize| v > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("{name}={text:?}: expected positive numbers separated by commas"))
}

impl Settings {
    /// The full run (about 6 minutes on 2 cores), changed by `TARA_PAPER_*` variables.
    pub fn from_env(repo: &Path) -> Result<Settings, String> {
        let smoke = env("TARA_PAPER_SMOKE", 0u8)? == 1;
        let out = std::env::var_os("TARA_PAPER_OUT").map_or_else(|| repo.join("papers/evaluation"), PathBuf::from);
        if smoke {
            return Ok(Settings { openraft: env("TARA_PAPER_OPENRAFT", 0u8)? == 1, ..Settings::smoke(out) });
        }
        Ok(Settings {
            out,
            smoke,
            clients: env_list("TARA_PAPER_CLIENTS", "1,4,16,64,256")?,
            seconds: env("TARA_PAPER_SECONDS", 1.5f64)?.max(0.1),
            warmup_seconds: env("TARA_PAPER_WARMUP_MS", 300.0f64)?.max(0.0) / 1000.0,
            rounds: env("TARA_PAPER_ROUNDS", 2usize)?.max(1),
            openraft: env("TARA_PAPER_OPENRAFT", 1u8)? == 1,
            partitions: env_list("TARA_PAPER_PARTITIONS", "1,2,4,8")?,
            fig7_clients: env("TARA_PAPER_FIG7_CLIENTS", 256usize)?,
        })
    }

    /// A fraction of a second per point, two client counts, one round, no openraft (its build
    /// takes minutes), short timelines for Figure 8 and kill -9.
    pub fn smoke(out: PathBuf) -> Settings {
        Settings {
            out,
            smoke: true,
            clients: vec![1, 16],
            seconds: 0.2,
            warmup_seconds: 0.1,
            rounds: 1,
            openraft: false,
            partitions: vec![1, 2],
            fig7_clients: 16,
        }
    }
}

/// One measured point.
#[derive(Clone, Debug)]
pub struct Point {
    pub system: String,
    pub clients: usize,
    pub round: usize,
    pub ops_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Point {
    fn json(&self) -> Value {
        json!({ "system": self.system, "clients": self.clients, "round": self.round,
                "ops_per_second": self.ops_per_second.round(), "p50_us": self.p50_us, "p99_us": self.p99_us })
    }
}

/// Everything the run measured.
pub struct Report {
    pub fig5: Vec<Point>,
    pub fig6: Vec<Point>,
    /// `system` is "P = n".
    pub fig7: Vec<Point>,
    pub fig8_recoveries: Value,
    pub kill9_recoveries: Vec<(f64, usize, Option<Duration>)>,
    pub table: table_one::Table,
    pub ratios: Value,
    pub files: Vec<PathBuf>,
}

/// The machine and the date, for the captions.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}, {}", today())
}

/// Today's UTC date, YYYY-MM-DD (civil from days, Howard Hinnant's algorithm).
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The openraft side: the compare binary, built once.
struct OpenRaft {
    program: PathBuf,
    scratch: tempfile::TempDir,
}

impl OpenRaft {
    /// Builds benches/compare (minutes the first time) and finds its executable.
    fn build(repo: &Path) -> Result<OpenRaft, String> {
        eprintln!("paper: building benches/compare for openraft (TARA_PAPER_OPENRAFT=0 leaves it out)");
        let output = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--message-format=json", "--manifest-path"])
            .arg(repo.join("benches/compare/Cargo.toml"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !output.status.success() {
            return Err("benches/compare does not build".into());
        }
        let program = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"]["name"] == "tara-compare")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .ok_or("cargo named no tara-compare executable")?;
        Ok(OpenRaft { program, scratch: tempfile::tempdir().map_err(|e| e.to_string())? })
    }

    /// One point: the compare binary with only openraft, one client count, one round.
    fn run(&self, clients: usize, settings: &Settings) -> Result<Measurement, String> {
        let status = std::process::Command::new(&self.program)
            .env("COMPARE_SYSTEMS", "openraft")
            .env("COMPARE_CLIENTS", clients.to_string())
            .env("COMPARE_ROUNDS", "1")
            .env("COMPARE_SECONDS", settings.seconds.to_string())
            .env("COMPARE_WARMUP_MS", (settings.warmup_seconds * 1000.0).to_string())
            .env("COMPARE_OUT", self.scratch.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if !status.success() {
            return Err(format!("{} failed: {status}", self.program.display()));
        }
        let path = self.scratch.path().join("compare.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let run = &value["runs"][0];
        let number = |key: &str| run[key].as_f64().ok_or_else(|| format!("compare.json: no {key}"));
        Ok(Measurement {
            ops_per_second: number("ops_per_s")?,
            p50_us: number("p50_us")? as u64,
            p99_us: number("p99_us")? as u64,
            mean_us: 0.0,
        })
    }
}

/// Measures one point of Figures 5 and 6.
fn measure(
    system: System,
    clients: usize,
    settings: &Settings,
    openraft: Option<&OpenRaft>,
) -> Result<Measurement, String> {
    let (warmup, seconds) =
        (Duration::from_secs_f64(settings.warmup_seconds), Duration::from_secs_f64(settings.seconds));
    let counter = |_| tara_loop::Counter::default();
    Ok(match system {
        System::Pipelined(b) => {
            tara_loop::run(clients, System::params(b), tara_loop::Ops::Opaque, counter, warmup, seconds)
        }
        System::Sequential(b) => {
            let params = Params { max_in_flight: Some(1), ..System::params(b) };
            tara_loop::run(clients, params, tara_loop::Ops::Opaque, counter, warmup, seconds)
        }
        System::Bare(batch) => bare::run(clients, batch, warmup, seconds),
        System::OpenRaft => openraft.ok_or("openraft was not built")?.run(clients, settings)?,
    })
}

/// Figure 7's description: dataflows/fig7.toml with `partitions` partitions.
fn fig7_params(repo: &Path, partitions: usize) -> Result<Params, String> {
    let mut description = Description::from_file(&repo.join("dataflows/fig7.toml")).map_err(|e| e.to_string())?;
    description.partitions = partitions;
    description.params().map_err(|e| e.to_string())
}

fn point(system: String, clients: usize, round: usize, m: &Measurement) -> Point {
    Point { system, clients, round, ops_per_second: m.ops_per_second, p50_us: m.p50_us as f64, p99_us: m.p99_us as f64 }
}

/// Runs the whole evaluation and writes its files into `settings.out`.
pub fn run(repo: &Path, settings: &Settings) -> Result<Report, String> {
    std::fs::create_dir_all(&settings.out).map_err(|e| format!("{}: {e}", settings.out.display()))?;
    let openraft = match settings.openraft {
        true => Some(OpenRaft::build(repo)?),
        false => None,
    };
    let mut systems = figure_systems(5, settings.openraft);
    systems.extend(figure_systems(6, false));
    let total = settings.rounds * (settings.clients.len() * systems.len() + settings.partitions.len());
    let (mut done, mut points, mut fig7) = (0, Vec::new(), Vec::new());
    for round in 1..=settings.rounds {
        for &clients in &settings.clients {
            for i in 0..systems.len() {
                let system = systems[(i + round - 1) % systems.len()];
                let m = measure(system, clients, settings, openraft.as_ref())
                    .map_err(|e| format!("{}: {e}", system.label()))?;
                done += 1;
                eprintln!(
                    "paper [{done}/{total}] round {round}/{}: {:<42} {clients:>4} clients {:>9.0} ops/s p50 {:>6} us",
                    settings.rounds,
                    system.label(),
                    m.ops_per_second,
                    m.p50_us
                );
                points.push((system, point(system.label(), clients, round, &m)));
            }
        }
        for &p in &settings.partitions {
            let params = fig7_params(repo, p)?;
            let ids = (1..=settings.fig7_clients as u64).collect();
            let (warmup, seconds) =
                (Duration::from_secs_f64(settings.warmup_seconds), Duration::from_secs_f64(settings.seconds * 2.0));
            let m = tara_loop::run_clients(
                ids,
                params,
                tara_loop::Ops::Opaque,
                |_| tara_loop::Counter::default(),
                warmup,
                seconds,
            );
            done += 1;
            eprintln!(
                "paper [{done}/{total}] round {round}/{}: Figure 7, P = {p}: {:.0} ops/s",
                settings.rounds, m.ops_per_second
            );
            fig7.push(point(format!("P = {p}"), settings.fig7_clients, round, &m));
        }
    }
    let in_figure = |figure: u8| -> Vec<Point> {
        let wanted = figure_systems(figure, settings.openraft);
        points.iter().filter(|(s, _)| wanted.contains(s)).map(|(_, p)| p.clone()).collect()
    };
    let (fig5, fig6) = (in_figure(5), in_figure(6));
    let mut files = Vec::new();
    let caption = machine();
    files.extend(write_figure(
        &settings.out,
        "fig5",
        &format!("Figure 5: non-batched, closed-loop clients, {caption}"),
        &fig5,
    )?);
    files.extend(write_figure(
        &settings.out,
        "fig6",
        &format!("Figure 6: batched, closed-loop clients, {caption}"),
        &fig6,
    )?);
    files.extend(write_fig7(&settings.out, &fig7, &caption)?);
    let (fig8_recoveries, fig8_files) = figure_8(settings)?;
    files.extend(fig8_files);
    let kill9 = kill_9(settings, &caption)?;
    files.extend(["kill-9.csv", "kill-9-recovery.csv", "kill-9.svg"].map(|f| settings.out.join(f)));
    let table = table_one::write(repo, &settings.out)?;
    files.extend(["table1.md", "table1.csv"].map(|f| settings.out.join(f)));
    let ratios = ratios(&fig5, &fig6, &fig7, &table);
    let report = Report { fig5, fig6, fig7, fig8_recoveries, kill9_recoveries: kill9.recoveries, table, ratios, files };
    write_summary(settings, &report, &caption)?;
    Ok(report)
}

/// The median of the rounds for every (system, clients), in first-seen order.
pub fn medians(points: &[Point]) -> Vec<Point> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for p in points {
        if !keys.contains(&(p.system.clone(), p.clients)) {
            keys.push((p.system.clone(), p.clients));
        }
    }
    keys.into_iter()
        .map(|(system, clients)| {
            let of: Vec<&Point> = points.iter().filter(|p| p.system == system && p.clients == clients).collect();
            let median = |f: fn(&Point) -> f64| {
                let mut v: Vec<f64> = of.iter().map(|p| f(p)).collect();
                v.sort_by(f64::total_cmp);
                let n = v.len();
                if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
            };
            Point {
                system,
                clients,
                round: 0,
                ops_per_second: median(|p| p.ops_per_second),
                p50_us: median(|p| p.p50_us),
                p99_us: median(|p| p.p99_us),
            }
        })
        .collect()
}

fn write_file(path: PathBuf, text: String) -> Result<PathBuf, String> {
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// `<stem>.csv` (every round), `<stem>.json` (rounds and medians) and `<stem>.svg` (medians:
/// throughput against median latency, one line per system, clients growing along the line).
fn write_figure(out: &Path, stem: &str, title: &str, points: &[Point]) -> Result<Vec<PathBuf>, String> {
    let mut csv = String::from("system,clients,round,ops_per_second,p50_us,p99_us\n");
    for p in points {
        // System names hold commas ("tara pipelined, no batching"): quoted, as CSV wants.
        csv.push_str(&format!(
            "\"{}\",{},{},{:.0},{},{}\n",
            p.system.replace('"', "\"\""),
            p.clients,
            p.round,
            p.ops_per_second,
            p.p50_us,
            p.p99_us
        ));
    }
    let medians = medians(points);
    let json = json!({ "title": title, "runs": points.iter().map(Point::json).collect::<Vec<_>>(),
                       "medians": medians.iter().map(Point::json).collect::<Vec<_>>() });
    let mut labels: Vec<&str> = Vec::new();
    for p in &medians {
        if !labels.contains(&p.system.as_str()) {
            labels.push(&p.system);
        }
    }
    let series: Vec<Series> = labels
        .iter()
        .map(|label| Series {
            label: label.to_string(),
            points: medians
                .iter()
                .filter(|p| p.system == *label)
                .map(|p| (p.ops_per_second / 1000.0, p.p50_us / 1000.0))
                .collect(),
        })
        .collect();
    let svg = out.join(format!("{stem}.svg"));
    log_chart(&svg, title, "throughput (k requests/s, log scale)", "median latency (ms, log scale)", &series)?;
    Ok(vec![
        write_file(out.join(format!("{stem}.csv")), csv)?,
        write_file(out.join(format!("{stem}.json")), serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?)?,
        svg,
    ])
}

/// fig7.csv, fig7.json and fig7.svg: throughput by partitions, with the throttle's bound.
fn write_fig7(out: &Path, points: &[Point], caption: &str) -> Result<Vec<PathBuf>, String> {
    let mut csv = String::from("partitions,clients,round,ops_per_second,p50_us,p99_us\n");
    for p in points {
        csv.push_str(&format!(
            "{},{},{},{:.0},{},{}\n",
            &p.system[4..],
            p.clients,
            p.round,
            p.ops_per_second,
            p.p50_us,
            p.p99_us
        ));
    }
    let medians = medians(points);
    let partitions = |p: &Point| p.system[4..].parse::<f64>().unwrap_or(0.0);
    // dataflows/fig7.toml: one command per proposal, at most one proposal per 2000 us.
    let bound = |p: f64| p * 500.0 / 1000.0;
    let series = vec![
        Series {
            label: "tara, median of the rounds".into(),
            points: medians.iter().map(|p| (partitions(p), p.ops_per_second / 1000.0)).collect(),
        },
        Series {
            label: "throttle bound: P x 500 commands/s".into(),
            points: medians.iter().map(|p| (partitions(p), bound(partitions(p)))).collect(),
        },
    ];
    let svg = out.join("fig7.svg");
    let title = format!("Figure 7: partitions, proposers throttled to 2 ms per proposal, {caption}");
    line_chart(&svg, &title, "partitions P", "throughput (k requests/s)", &series)?;
    let json = json!({ "title": title, "runs": points.iter().map(Point::json).collect::<Vec<_>>(),
                       "medians": medians.iter().map(Point::json).collect::<Vec<_>>() });
    Ok(vec![
        write_file(out.join("fig7.csv"), csv)?,
        write_file(out.join("fig7.json"), serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?)?,
        svg,
    ])
}

/// Figure 8 by `tara bench` on dataflows/fig8.toml (in smoke mode: the same two crashes at a
/// tenth of the times, with a 100 ms view timeout); returns its recoveries and files.
fn figure_8(settings: &Settings) -> Result<(Value, Vec<PathBuf>), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = scratch.path().join("fig8.toml");
    let text = match settings.smoke {
        false => std::fs::read_to_string(repo.join("dataflows/fig8.toml")).map_err(|e| e.to_string())?,
        true => "f = 1\nworkers = 3\nbatch_size = 64\nview_timeout_ms = 100\npool_znodes = 10\nbench_clients = 8\n\
                 bench_seconds = 2\n[[fault]]\nstage = \"proposers\"\nreplica = 0\ncrash_at_ms = 500\nrestart_after_ms = 300\n\
                 [[fault]]\nstage = \"proposers\"\nreplica = 1\ncrash_at_ms = 1200\n"
            .to_string(),
    };
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    eprintln!("paper: Figure 8, two proposer crashes (tara bench --config dataflows/fig8.toml)");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tara"))
        .arg("bench")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&settings.out)
        .arg("--json")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run tara bench: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("tara bench printed no summary ({}): {stdout}", output.status))?;
    if !output.status.success() {
        return Err(format!("tara bench for Figure 8 failed ({}): {summary}", output.status));
    }
    let files = ["fig8-throughput.csv", "fig8-throughput.svg"].map(|f| settings.out.join(f)).to_vec();
    Ok((summary["recoveries"].clone(), files))
}

/// kill -9 of processes of a supervised 3-process cluster over TCP (smoke: one kill in 3 s).
fn kill_9(settings: &Settings, caption: &str) -> Result<supervised::Kill9, String> {
    eprintln!("paper: kill -9 under load, 3 processes over TCP");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cluster = Supervised::start(&supervised::local_description(scratch.path()));
    let plan = match settings.smoke {
        true => KillPlan { clients: 4, seconds: 3, kills: vec![(1.0, 1)] },
        false => KillPlan::standard(),
    };
    supervised::kill_9_under_load(&cluster, &settings.out, &plan, &format!(", {caption}"))
}

/// The highest median throughput of `system` over the client counts, and at `clients`.
fn best(points: &[Point], system: &str) -> Option<f64> {
    medians(points).iter().filter(|p| p.system == system).map(|p| p.ops_per_second).reduce(f64::max)
}

fn at(points: &[Point], system: &str, clients: usize) -> Option<f64> {
    medians(points).iter().find(|p| p.system == system && p.clients == clients).map(|p| p.ops_per_second)
}

/// The ratios, each of two numbers of this run.
fn ratios(fig5: &[Point], fig6: &[Point], fig7: &[Point], table: &table_one::Table) -> Value {
    let label = |s: System| s.label();
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (a / b * 100.0).round() / 100.0);
    let most = fig5.iter().map(|p| p.clients).max().unwrap_or(0);
    let all: Vec<Point> = fig5.iter().chain(fig6).cloned().collect();
    let p64 = if fig5.iter().any(|p| p.clients == 64) { 64 } else { most };
    let partitions = |p: &Point| p.system[4..].parse::<usize>().unwrap_or(0);
    let (fewest, widest) = (fig7.iter().map(partitions).min(), fig7.iter().map(partitions).max());
    let fig7_at = |p: Option<usize>| p.and_then(|p| best(fig7, &format!("P = {p}")));
    json!({
        "pipelined_over_sequential_non_batched_at_saturation": ratio(best(fig5, &label(System::Pipelined(Batch::Fixed(1)))), best(fig5, &label(System::Sequential(Batch::Fixed(1))))),
        "pipelined_over_sequential_batch_5_at_saturation": ratio(best(fig6, &label(System::Pipelined(Batch::Fixed(5)))), best(fig6, &label(System::Sequential(Batch::Fixed(5))))),
        "batched_adaptive_over_non_batched_at_most_clients": ratio(at(&all, &label(System::Pipelined(Batch::Adaptive)), most), at(&all, &label(System::Pipelined(Batch::Fixed(1))), most)),
        "batch_5_over_non_batched_at_most_clients": ratio(at(&all, &label(System::Pipelined(Batch::Fixed(5))), most), at(&all, &label(System::Pipelined(Batch::Fixed(1))), most)),
        "most_clients": most,
        "tara_over_bare_timely_non_batched_at_64_clients": ratio(at(fig5, &label(System::Pipelined(Batch::Fixed(1))), p64), at(fig5, &label(System::Bare(1)), p64)),
        "tara_adaptive_over_bare_timely_batch_64_at_64_clients": ratio(at(fig6, &label(System::Pipelined(Batch::Adaptive)), p64), at(fig6, &label(System::Bare(64)), p64)),
        "fig7_widest_over_one_partition": ratio(fig7_at(widest), fig7_at(fewest)),
        "fig7_partitions": [fewest, widest],
        "table1_five_mechanisms_lines": table.paper_total(),
        "table1_paper_tara_lines": table_one::PAPER_TARA_TOTAL,
    })
}

/// summary.json: settings, machine, the ratios, Figure 8's and kill -9's recoveries, Table I.
fn write_summary(settings: &Settings, report: &Report, caption: &str) -> Result<(), String> {
    let summary = json!({
        "machine": caption,
        "settings": { "clients": settings.clients, "seconds_per_point": settings.seconds, "warmup_seconds": settings.warmup_seconds,
                      "rounds": settings.rounds, "openraft": settings.openraft, "partitions": settings.partitions,
                      "fig7_clients": settings.fig7_clients, "smoke": settings.smoke,
                      "fixed_batch_timeout_us": FIXED_BATCH_TIMEOUT_US },
        "ratios": report.ratios,
        "fig8_recoveries": report.fig8_recoveries,
        "kill9_recoveries": report.kill9_recoveries.iter().map(|(at, process, back)| json!({
            "kill_at_seconds": at, "process": process, "first_answer_ms": back.map(|d| d.as_millis() as u64) })).collect::<Vec<_>>(),
        "table1": report.table.rows.iter().map(|r| json!({ "mechanism": r.name, "lines": r.lines, "paper_tara": r.paper_tara,
                      "paper_bft_smart": r.paper_bft_smart })).collect::<Vec<_>>(),
        "files": report.files.iter().map(|f| f.file_name().map(|n| n.to_string_lossy().to_string())).collect::<Vec<_>>(),
    });
    write_file(settings.out.join("summary.json"), serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?)?;
    Ok(())
}

/// A system of the profile mode: `bare` (the limit, no batching), `bare-64` (batches up to 64),
/// or `tara` (Figure 5's, no batching) with changes separated by `/`: `a` (adaptive batching,
/// Figure 6's), `b` (`max_in_flight` one below the window, so that commits also travel to the
/// proposers), `wN` (window N), `cN` (checkpoint interval N). `tara/w1024/c128` is tara with a
/// window of 1,024 and checkpoints every 128 instances.
fn profile_point(name: &str, clients: usize, warmup: Duration, seconds: Duration) -> Result<Measurement, String> {
    let unknown = || format!("TARA_PAPER_PROFILE: unknown system {name:?} (bare, bare-64, tara[/a][/b][/wN][/cN])");
    match name {
        "bare" => return Ok(bare::run(clients, 1, warmup, seconds)),
        "bare-64" => return Ok(bare::run(clients, 64, warmup, seconds)),
        _ => {}
    }
    let mut parts = name.split('/');
    if parts.next() != Some("tara") {
        return Err(unknown());
    }
    let (mut params, mut bounded) = (System::params(Batch::Fixed(1)), false);
    for part in parts {
        let number = || part[1..].parse::<u64>().map_err(|_| unknown());
        match part.chars().next() {
            Some('a') => {
                params = Params {
                    window: params.window,
                    checkpoint_interval: params.checkpoint_interval,
                    ..System::params(Batch::Adaptive)
                }
            }
            Some('b') => bounded = true,
            Some('w') => params.window = number()?,
            Some('c') => params.checkpoint_interval = number()?,
            _ => return Err(unknown()),
        }
    }
    if bounded {
        params.max_in_flight = Some(params.window - 1);
    }
    params.validate().map_err(|e| format!("{name}: {e}"))?;
    let counter = |_| tara_loop::Counter::default();
    Ok(tara_loop::run(clients, params, tara_loop::Ops::Opaque, counter, warmup, seconds))
}

/// The profile mode (`TARA_PAPER_PROFILE=tara,bare`): only the named systems at
/// `TARA_PAPER_CLIENTS` (default 64), `TARA_PAPER_SECONDS` per point (default 5),
/// `TARA_PAPER_ROUNDS` rounds (default 3) interleaved, the order rotating per round; prints
/// every point, the medians and their ratios to the first system. With `TARA_PAPER_TIMELY_LOG=1`
/// it also prints timely's logging per command after every point (which slows the run: use it
/// for counts and shares, not for throughput). Run it under `perf record` for a profile.
pub fn profile(systems: &str) -> Result<(), String> {
    let names: Vec<&str> = systems.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let clients = env_list("TARA_PAPER_CLIENTS", "64")?;
    let seconds = env("TARA_PAPER_SECONDS", 5.0f64)?.max(0.1);
    let warmup = env("TARA_PAPER_WARMUP_MS", 500.0f64)?.max(0.0) / 1000.0;
    let rounds = env("TARA_PAPER_ROUNDS", 3usize)?.max(1);
    let log = env("TARA_PAPER_TIMELY_LOG", 0u8)? == 1;
    if log {
        super::closed_loop::profile::enable();
    }
    let mut points = Vec::new();
    for round in 1..=rounds {
        for &c in &clients {
            for i in 0..names.len() {
                let name = names[(i + round - 1) % names.len()];
                let (w, s) = (Duration::from_secs_f64(warmup), Duration::from_secs_f64(seconds));
                let m = profile_point(name, c, w, s)?;
                eprintln!(
                    "profile round {round}/{rounds}: {name:<14} {c:>4} clients {:>9.0} ops/s p50 {:>6} us",
                    m.ops_per_second, m.p50_us
                );
                if log {
                    let totals = super::closed_loop::profile::take();
                    eprint!("{}", super::closed_loop::profile::table(&totals, m.ops_per_second * seconds, seconds, 3));
                }
                points.push(point(name.to_string(), c, round, &m));
            }
        }
    }
    let medians = medians(&points);
    for &c in &clients {
        let first = medians.iter().find(|p| p.clients == c && p.system == names[0]).map_or(1.0, |p| p.ops_per_second);
        for p in medians.iter().filter(|p| p.clients == c) {
            println!(
                "median {:<14} {c:>4} clients {:>9.0} ops/s p50 {:>6} us  ratio to {}: {:.3}",
                p.system,
                p.ops_per_second,
                p.p50_us,
                names[0],
                p.ops_per_second / first
            );
        }
    }
    Ok(())
}
