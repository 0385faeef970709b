//! The results: medians over rounds, a table and ratios on the terminal, and
//! `compare.csv`, `compare.json` and `compare.svg` in the output folder.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::idle_side::Idle;
use crate::{Run, Settings, System};

/// The median of one (system, clients) over the rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The system's label.
    pub system: &'static str,
    /// Closed-loop clients.
    pub clients: usize,
    /// Median of the rounds' throughputs.
    pub ops_per_s: f64,
    /// Median of the rounds' median latencies, microseconds.
    pub p50_us: f64,
    /// Median of the rounds' 99th-percentile latencies, microseconds.
    pub p99_us: f64,
    /// Rounds measured.
    pub rounds: usize,
}

/// Throughput ratios at one client count (NaN where a system did not run).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// Closed-loop clients.
    pub clients: usize,
    /// `tara non-durable` / openraft.
    pub non_durable: f64,
    /// `tara durable` / openraft.
    pub durable: f64,
    /// `tara coordination (durable)` / openraft.
    pub coordination: f64,
    /// `tara non-durable` / `tara core`: what the embedded path keeps of the core.
    pub embedded_of_core: f64,
    /// `tara durable` / `tara non-durable`.
    pub durable_of_non_durable: f64,
    /// `tara over TCP` / `tara coordination (durable)`: the same workload, three processes.
    pub tcp_of_embedded: f64,
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    date: String,
}

/// Everything `compare.json` holds.
#[derive(Serialize)]
struct Json<'a> {
    machine: &'a Machine,
    settings: &'a Settings,
    note: &'static str,
    medians: &'a [Row],
    throughput_ratios: &'a [Ratio],
    runs: &'a [Run],
    idle: Option<&'a Idle>,
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Medians per (system, clients), in table order.
fn medians(settings: &Settings, runs: &[Run]) -> Vec<Row> {
    let mut rows = Vec::new();
    for system in System::ALL {
        for &clients in &settings.clients {
            let of = |f: &dyn Fn(&Run) -> f64| {
                median(runs.iter().filter(|r| r.system == system.label() && r.clients == clients).map(f).collect())
            };
            let rounds = runs.iter().filter(|r| r.system == system.label() && r.clients == clients).count();
            rows.push(Row {
                system: system.label(),
                clients,
                ops_per_s: of(&|r| r.measurement.ops_per_s),
                p50_us: of(&|r| r.measurement.p50_us as f64),
                p99_us: of(&|r| r.measurement.p99_us as f64),
                rounds,
            });
        }
    }
    rows
}

/// tara/openraft throughput per client count.
fn ratios(settings: &Settings, rows: &[Row]) -> Vec<Ratio> {
    let ops = |system: System, clients: usize| {
        rows.iter().find(|r| r.system == system.label() && r.clients == clients).map_or(f64::NAN, |r| r.ops_per_s)
    };
    settings
        .clients
        .iter()
        .map(|&clients| {
            let [raft, non_durable, durable, coordination, tcp, core] = System::ALL.map(|s| ops(s, clients));
            Ratio {
                clients,
                non_durable: non_durable / raft,
                durable: durable / raft,
                coordination: coordination / raft,
                embedded_of_core: non_durable / core,
                durable_of_non_durable: durable / non_durable,
                tcp_of_embedded: tcp / coordination,
            }
        })
        .collect()
}

/// CPU count, CPU model (from /proc/cpuinfo) and today's date (UTC).
fn machine() -> Machine {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU")
        .to_string();
    Machine { nproc, cpu, date: today() }
}

/// Today's date as YYYY-MM-DD, UTC (days to civil date, Howard Hinnant's algorithm).
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

/// The terminal table and ratios.
fn table(rows: &[Row], ratios: &[Ratio], machine: &Machine) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{} cores, {}, {}; medians over rounds", machine.nproc, machine.cpu, machine.date);
    let _ = writeln!(out, "{:<38} {:>7} {:>11} {:>9} {:>9}", "system", "clients", "ops/s", "p50 us", "p99 us");
    for r in rows.iter().filter(|r| r.rounds > 0) {
        let _ = writeln!(
            out,
            "{:<38} {:>7} {:>11.0} {:>9.0} {:>9.0}",
            r.system, r.clients, r.ops_per_s, r.p50_us, r.p99_us
        );
    }
    let _ = writeln!(out, "\nthroughput ratios (openraft in memory; NaN: a system did not run):");
    let _ = writeln!(
        out,
        "{:>7} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "clients", "non-dur/raft", "durable/raft", "coord/raft", "embedded/core", "dur/non-dur", "tcp/embedded"
    );
    for r in ratios {
        let _ = writeln!(
            out,
            "{:>7} {:>14.2} {:>14.2} {:>14.2} {:>14.2} {:>14.2} {:>14.2}",
            r.clients,
            r.non_durable,
            r.durable,
            r.coordination,
            r.embedded_of_core,
            r.durable_of_non_durable,
            r.tcp_of_embedded
        );
    }
    out
}

/// The idle measurement, on the terminal.
fn idle_table(idle: &Idle) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nidle three-process cluster (probe every {} ms), {:.0} s:",
        idle.probe_interval_ms, idle.seconds
    );
    for (i, (cpu, wakeups)) in idle.cpu_percent.iter().zip(&idle.wakeups_per_s).enumerate() {
        let _ = writeln!(out, "  process {i}: {cpu:.2}% of a core, {wakeups:.0} wake-ups/s");
    }
    let _ = writeln!(
        out,
        "  first command, median: {} us after {:.0} s idle, {} us after {} ms; steady p50 {} us; idle/short {:.2}",
        idle.first_after_idle_p50_us(),
        idle.gap_seconds,
        idle.first_after_short_p50_us(),
        idle.short_gap_ms,
        idle.steady_p50_us,
        idle.idle_over_short()
    );
    out
}

/// `compare-idle.csv`: one row per process, then the latencies.
fn idle_csv(idle: &Idle) -> String {
    let mut csv = String::from("measure,process,value\n");
    for (i, cpu) in idle.cpu_percent.iter().enumerate() {
        let _ = writeln!(csv, "idle_cpu_percent,{i},{cpu:.3}");
    }
    for (i, wakeups) in idle.wakeups_per_s.iter().enumerate() {
        let _ = writeln!(csv, "idle_wakeups_per_s,{i},{wakeups:.1}");
    }
    let _ = writeln!(csv, "steady_p50_us,,{}", idle.steady_p50_us);
    for latency in &idle.first_after_idle_us {
        let _ = writeln!(csv, "first_after_idle_us,,{latency}");
    }
    for latency in &idle.first_after_short_us {
        let _ = writeln!(csv, "first_after_short_us,,{latency}");
    }
    csv
}

/// Prints the results and writes the files into `settings.out`: `compare.csv`, `.json`, `.svg`,
/// and `compare-idle.csv` if the idle measurement ran.
pub fn write(settings: &Settings, runs: &[Run], idle: Option<&Idle>) -> Result<(), String> {
    let rows = medians(settings, runs);
    let ratios = ratios(settings, &rows);
    let machine = machine();
    print!("{}", table(&rows, &ratios, &machine));
    if let Some(idle) = idle {
        print!("{}", idle_table(idle));
    }
    let out = &settings.out;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut csv = String::from("system,clients,ops_per_s,p50_us,p99_us,rounds\n");
    for r in rows.iter().filter(|r| r.rounds > 0) {
        // System names hold commas ("coordination, durable"): quoted, as CSV wants.
        let (system, clients) = (r.system.replace('"', "\"\""), r.clients);
        let _ = writeln!(csv, "\"{system}\",{clients},{:.0},{:.0},{:.0},{}", r.ops_per_s, r.p50_us, r.p99_us, r.rounds);
    }
    let written = |path: &Path, e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let csv_path = out.join("compare.csv");
    std::fs::write(&csv_path, csv).map_err(|e| written(&csv_path, e))?;
    let json = Json {
        machine: &machine,
        settings,
        note: "openraft runs in memory (no disk, function-call network), as its own minimal benchmark; \
               tara durable fsyncs its committers' record logs",
        medians: &rows,
        throughput_ratios: &ratios,
        runs,
        idle,
    };
    let json_path = out.join("compare.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n").map_err(|e| written(&json_path, e))?;
    if let Some(idle) = idle {
        let idle_path = out.join("compare-idle.csv");
        std::fs::write(&idle_path, idle_csv(idle)).map_err(|e| written(&idle_path, e))?;
    }
    let svg_path = out.join("compare.svg");
    plot(&svg_path, settings, &rows, &machine).map_err(|e| format!("cannot draw {}: {e}", svg_path.display()))?;
    eprintln!("\nwrote {}, {} and {}", csv_path.display(), json_path.display(), svg_path.display());
    Ok(())
}

/// Throughput (x) against median latency (y), both on log scales, one line per system through its
/// client counts, each point labelled with its client count.
fn plot(path: &Path, settings: &Settings, rows: &[Row], machine: &Machine) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let finite = rows.iter().filter(|r| r.ops_per_s.is_finite() && r.p50_us > 0.0);
    let x_min = finite.clone().map(|r| r.ops_per_s / 1000.0).fold(f64::INFINITY, f64::min).min(1e9) / 1.5;
    let x_max = finite.clone().map(|r| r.ops_per_s / 1000.0).fold(0.01, f64::max) * 1.5;
    let y_min = finite.clone().map(|r| r.p50_us).fold(f64::INFINITY, f64::min).min(1e9) / 1.6;
    let y_max = finite.map(|r| r.p50_us).fold(1.0, f64::max) * 1.6;
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (chart_area, caption_area) = root.split_vertically(596);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption("tara vs openraft: closed-loop writes of 64 bytes, 3 replicas per stage", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min.max(0.001)..x_max).log_scale(), (y_min.max(1.0)..y_max).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("throughput (k ops/s, log scale)")
        .y_desc("median latency (us, log scale)")
        .x_label_formatter(&|x| if *x >= 10.0 { format!("{x:.0}") } else { format!("{x:.1}") })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|x| e(&x))?;
    let colors = [
        RGBColor(200, 60, 40),
        RGBColor(40, 110, 200),
        RGBColor(30, 150, 70),
        RGBColor(140, 70, 170),
        RGBColor(220, 140, 20),
        RGBColor(90, 90, 90),
    ];
    for (i, (system, color)) in System::ALL.iter().zip(colors).enumerate() {
        let points: Vec<(f64, f64, usize)> = rows
            .iter()
            .filter(|r| r.system == system.label() && r.ops_per_s.is_finite() && r.p50_us > 0.0)
            .map(|r| (r.ops_per_s / 1000.0, r.p50_us, r.clients))
            .collect();
        if points.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), style))
            .map_err(|x| e(&x))?
            .label(system.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled()))).map_err(|x| e(&x))?;
        // Labels above the points, but below them for the third line, whose points lie close to
        // the fourth's.
        let below = if i == 2 { VPos::Top } else { VPos::Bottom };
        let label_style = ("sans-serif", 13).into_font().color(&color).pos(Pos::new(HPos::Left, below));
        chart
            .draw_series(points.iter().map(|p| Text::new(format!(" {}", p.2), (p.0, p.1), label_style.clone())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    let caption = format!(
        "Point labels: closed-loop clients, 1 write outstanding each; medians of {} rounds x {} s. \
         openraft {} in memory (no disk, no network).",
        settings.rounds, settings.seconds, settings.openraft_version
    );
    let machine_line = format!(
        "tara f = 1: embedded (clients outside the dataflow), 3 processes over TCP, core (clients inside). Machine: {} cores, {}; {}.",
        machine.nproc, machine.cpu, machine.date
    );
    let style = ("sans-serif", 13).into_font().color(&BLACK);
    caption_area.draw(&Text::new(caption, (16, 4), style.clone())).map_err(|x| e(&x))?;
    caption_area.draw(&Text::new(machine_line, (16, 22), style)).map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}
