//! Multi-process clusters over TCP, measured against the embedded cluster in the same
//! run: the paper's workload (half `set data`, half `get data`) from closed-loop TCP clients
//! against three `tara run` processes under `tara cluster`'s supervisor, and the same workload on
//! an embedded cluster of three worker threads. Then real crashes: kill -9 of a process three
//! times under load, with the time from each kill to the first command answered again.
//!
//! `cargo bench --bench multi_process`; `TARA_BENCH_CLIENTS=1,16,64`, `TARA_BENCH_SECONDS=5`.
//! Writes `papers/multi-process.csv`, `papers/multi-process.svg`, `papers/kill-9.csv` and
//! `papers/kill-9.svg`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tara::app::coordination::{CoordOp, Coordination};
use tara::client::{Client, ClientOptions, tcp};
use tara::cluster::plot::{Series, line_chart};
use tara::cluster::supervisor::{SupervisorOptions, supervise};
use tara::cluster::workload::{self, Remote, Summary, Target, Workload};
use tara::cluster::{Cluster, Description};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// `n` distinct free ports, all held while they are chosen.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("an address").port()).collect()
}

/// `dataflows/local-f1.toml` on free ports, with its state in `dir`.
fn local_description(dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/local-f1.toml"))
        .expect("dataflows/local-f1.toml");
    text =
        text.lines().filter(|l| !l.starts_with("state_dir") && !l.contains("127.0.0.1")).collect::<Vec<_>>().join("\n");
    text = text.replace("[[process]]", "");
    text.push_str(&format!("\nstate_dir = {:?}\n", dir.join("state").to_str().expect("UTF-8")));
    for pair in free_ports(6).chunks(2) {
        text.push_str(&format!(
            "[[process]]\ntimely = \"127.0.0.1:{}\"\nclients = \"127.0.0.1:{}\"\n",
            pair[0], pair[1]
        ));
    }
    let path = dir.join("local.toml");
    std::fs::write(&path, text).expect("the description is written");
    path
}

/// A supervised local cluster for the length of a closure.
struct Supervised {
    description: Description,
    remote: Remote,
    stop: Arc<AtomicBool>,
    pids: Arc<Mutex<Vec<u32>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    fn start(config: &Path) -> Supervised {
        let description = Description::from_file(config).expect("the description parses");
        let submit = description.client_addresses().expect("front ends");
        let status = description.process.iter().map(|p| p.clients.clone()).collect();
        let options = ClientOptions { client_window: 64, retry_timeout: Duration::from_millis(300) };
        let remote = Remote { submit, status, options };
        let pids = Arc::new(Mutex::new(Vec::new()));
        let supervisor = SupervisorOptions {
            program: PathBuf::from(env!("CARGO_BIN_EXE_tara")),
            config: config.to_path_buf(),
            probe: CoordOp::Exists { path: "/".into() }.encode(),
            max_restarts: Some(20),
            pids: pids.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (d, flag) = (description.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            if let Err(e) = supervise(&d, &supervisor, flag) {
                eprintln!("supervisor: {e}");
            }
        });
        let cluster = Supervised { description, remote, stop, pids, handle: Some(handle) };
        assert!(cluster.first_answer(Duration::from_secs(60)).is_some(), "the cluster never served");
        cluster
    }

    /// How long until a fresh client gets an answer (each attempt waits 50 ms).
    fn first_answer(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let Ok(pool) = tcp::pool(&self.remote.submit, self.remote.options.clone()) else { continue };
            let mut client = Client::new(pool);
            client.set_deadline(Duration::from_millis(50));
            if client.invoke(CoordOp::Exists { path: "/".into() }.encode()).is_ok() {
                return Some(start.elapsed());
            }
        }
        None
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn workload(clients: u64, seconds: u64, description: &Description, sample_ms: Option<u64>) -> Workload {
    Workload {
        clients: clients as usize,
        duration: Duration::from_secs(seconds),
        payload_bytes: description.payload_bytes,
        pool_znodes: description.pool_znodes,
        seed: 3,
        progress: false,
        sample_ms,
    }
}

fn run(target: &dyn Target, description: &Description, clients: u64, seconds: u64) -> Summary {
    workload::setup(target, description.pool_znodes, description.payload_bytes).expect("setup");
    let summary = workload::run(target, &workload(clients, seconds, description, None)).expect("the workload runs");
    assert_eq!(summary.errors, 0, "wrong answers");
    summary
}

fn main() {
    let clients = env_list("TARA_BENCH_CLIENTS", "1,16,64");
    let seconds = env_list("TARA_BENCH_SECONDS", "5")[0];
    let papers = Path::new(env!("CARGO_MANIFEST_DIR")).join("papers");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = local_description(dir.path());
    let mut rows: Vec<(&str, u64, Summary)> = Vec::new();
    println!("{:<34} {:>7} {:>10} {:>8} {:>8}", "system", "clients", "ops/s", "p50_us", "p99_us");
    let embedded = Description::embedded();
    let cluster = Cluster::start(&embedded, |_| Coordination::default()).expect("the embedded cluster");
    let supervised = Supervised::start(&config);
    for &n in &clients {
        let systems: [(&str, &dyn Target, &Description); 2] = [
            ("embedded, 3 threads", &cluster, &embedded),
            ("3 processes over TCP", &supervised.remote, &supervised.description),
        ];
        for (name, target, description) in systems {
            let summary = run(target, description, n, seconds);
            println!("{name:<34} {n:>7} {:>10.0} {:>8} {:>8}", summary.throughput_ops, summary.p50_us, summary.p99_us);
            rows.push((name, n, summary));
        }
    }
    assert!(supervised.remote.executors_agree(3, Duration::from_secs(30)), "executors disagree");
    drop(cluster);
    println!("\nratio of 3 processes over TCP to the embedded cluster, same clients");
    for (n, tcp) in rows.iter().filter(|r| r.0 != "embedded, 3 threads").map(|r| (r.1, &r.2)) {
        if let Some(base) = rows.iter().find(|r| r.0 == "embedded, 3 threads" && r.1 == n) {
            println!("clients {n:>4}: {:.2}", tcp.throughput_ops / base.2.throughput_ops);
        }
    }
    write_throughput(&papers, &rows);
    kill_9_under_load(&supervised, &papers);
}

fn write_throughput(papers: &Path, rows: &[(&str, u64, Summary)]) {
    let mut csv = String::from("system,clients,ops_per_second,p50_us,p99_us\n");
    for (name, n, s) in rows {
        csv.push_str(&format!("{name},{n},{:.0},{},{}\n", s.throughput_ops, s.p50_us, s.p99_us));
    }
    let _ = std::fs::write(papers.join("multi-process.csv"), csv);
    let series: Vec<Series> = ["embedded, 3 threads", "3 processes over TCP"]
        .iter()
        .map(|name| Series {
            label: name.to_string(),
            points: rows
                .iter()
                .filter(|r| r.0 == *name)
                .map(|r| (r.2.throughput_ops / 1000.0, r.2.p50_us as f64 / 1000.0))
                .collect(),
        })
        .collect();
    let svg = papers.join("multi-process.svg");
    match line_chart(&svg, "throughput vs median latency", "throughput (k ops/s)", "p50 latency (ms)", &series) {
        Ok(()) => println!("wrote papers/multi-process.csv and papers/multi-process.svg"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}

/// Kills process 1, 2 and 0 (SIGKILL) at 3, 8 and 13 s of a 18 s run with 16 clients; records
/// the throughput every 100 ms and, per kill, the time until a fresh client is answered again.
fn kill_9_under_load(cluster: &Supervised, papers: &Path) {
    let kills = [(3.0, 1usize), (8.0, 2), (13.0, 0)];
    let load = workload(16, 18, &cluster.description, Some(100));
    let start = Instant::now();
    let (summary, recoveries) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut recoveries = Vec::new();
            for (at, process) in kills {
                std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed()));
                let pid = cluster.pids.lock().expect("pids")[process];
                // SAFETY: kill(2) on a child of the supervisor, by pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let back = cluster.first_answer(Duration::from_secs(30));
                println!("kill -9 of process {process} at {at} s: first answer after {:?}", back);
                recoveries.push((at, process, back));
            }
            recoveries
        });
        let summary = workload::run(&cluster.remote, &load).expect("the workload survives the kills");
        (summary, killer.join().expect("the killer"))
    });
    assert_eq!(summary.errors, 0, "wrong answers");
    assert!(cluster.remote.executors_agree(3, Duration::from_secs(30)), "executors disagree after the kills");
    let mut csv = String::from("seconds,ops_per_second\n");
    for (t, rate) in &summary.timeline {
        csv.push_str(&format!("{t:.1},{rate:.0}\n"));
    }
    let _ = std::fs::write(papers.join("kill-9.csv"), csv);
    let mut recovery_csv = String::from("kill_at_seconds,process,first_answer_ms\n");
    for (at, process, back) in &recoveries {
        let ms = back.map_or(String::from("never"), |d| d.as_millis().to_string());
        recovery_csv.push_str(&format!("{at},{process},{ms}\n"));
    }
    let _ = std::fs::write(papers.join("kill-9-recovery.csv"), recovery_csv);
    let top = summary.timeline.iter().map(|(_, r)| *r).fold(0.0, f64::max) / 1000.0;
    let mut series = vec![Series {
        label: "throughput (16 TCP clients)".into(),
        points: summary.timeline.iter().map(|(t, r)| (*t, r / 1000.0)).collect(),
    }];
    for (at, process, _) in &recoveries {
        series.push(Series { label: format!("kill -9 process {process}"), points: vec![(*at, 0.0), (*at, top)] });
    }
    let svg = papers.join("kill-9.svg");
    match line_chart(&svg, "throughput per 100 ms around kill -9", "seconds", "k ops/s", &series) {
        Ok(()) => println!("wrote papers/kill-9.csv, papers/kill-9-recovery.csv and papers/kill-9.svg"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}
