//! A supervised multi-process cluster over TCP (`dataflows/local-f1.toml` on free ports, three
//! `tara run` processes under `tara cluster`'s supervisor) and real crashes under load: kill -9
//! of a process, with the time from each kill to the first command answered again. Shared by
//! `benches/multi_process.rs` and `benches/paper.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tara::app::coordination::CoordOp;
use tara::client::{Client, ClientOptions, tcp};
use tara::cluster::Description;
use tara::cluster::plot::{Series, line_chart};
use tara::cluster::supervisor::{SupervisorOptions, supervise};
use tara::cluster::workload::{self, Remote, Workload};

/// `n` distinct free ports, all held while they are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("an address").port()).collect()
}

/// `dataflows/local-f1.toml` on free ports, with its state in `dir`.
pub fn local_description(dir: &Path) -> PathBuf {
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
pub struct Supervised {
    pub description: Description,
    pub remote: Remote,
    stop: Arc<AtomicBool>,
    pub pids: Arc<Mutex<Vec<u32>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    pub fn start(config: &Path) -> Supervised {
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
    pub fn first_answer(&self, limit: Duration) -> Option<Duration> {
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

pub fn workload(clients: u64, seconds: u64, description: &Description, sample_ms: Option<u64>) -> Workload {
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

/// One kill -9 experiment: `clients` TCP clients for `seconds`, process `process` killed at
/// each `(seconds, process)`.
pub struct KillPlan {
    pub clients: u64,
    pub seconds: u64,
    pub kills: Vec<(f64, usize)>,
}

impl KillPlan {
    /// Processes 1, 2 and 0 at 3, 8 and 13 s of an 18 s run with 16 clients.
    pub fn standard() -> KillPlan {
        KillPlan { clients: 16, seconds: 18, kills: vec![(3.0, 1), (8.0, 2), (13.0, 0)] }
    }
}

/// What a kill -9 experiment saw.
pub struct Kill9 {
    /// Throughput per 100 ms: (seconds, ops/s).
    pub timeline: Vec<(f64, f64)>,
    /// Per kill: (at seconds, process, time to the first answer after it).
    pub recoveries: Vec<(f64, usize, Option<Duration>)>,
}

/// Runs `plan` against `cluster`, recording the throughput every 100 ms and, per kill, the time
/// until a fresh client is answered again; writes kill-9.csv, kill-9-recovery.csv and kill-9.svg
/// into `out` (`caption` ends the plot's title). Wrong answers or executors that disagree afterwards are an error.
pub fn kill_9_under_load(cluster: &Supervised, out: &Path, plan: &KillPlan, caption: &str) -> Result<Kill9, String> {
    let d = &cluster.description;
    // The workload's znodes (a no-op if an earlier run created them).
    workload::setup(&cluster.remote, d.pool_znodes, d.payload_bytes)?;
    let load = workload(plan.clients, plan.seconds, d, Some(100));
    let start = Instant::now();
    let (summary, recoveries) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut recoveries = Vec::new();
            for &(at, process) in &plan.kills {
                std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed()));
                let pid = cluster.pids.lock().expect("pids")[process];
                // SAFETY: kill(2) on a child of the supervisor, by pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let back = cluster.first_answer(Duration::from_secs(30));
                eprintln!("kill -9 of process {process} at {at} s: first answer after {back:?}");
                recoveries.push((at, process, back));
            }
            recoveries
        });
        let summary = workload::run(&cluster.remote, &load);
        (summary, killer.join().expect("the killer"))
    });
    let summary = summary.map_err(|e| format!("the workload did not survive the kills: {e:?}"))?;
    if summary.errors > 0 {
        return Err(format!("{} wrong answers", summary.errors));
    }
    if !cluster.remote.executors_agree(3, Duration::from_secs(30)) {
        return Err("executors disagree after the kills".into());
    }
    write_kill_9(out, &summary.timeline, &recoveries, plan.clients, caption)?;
    Ok(Kill9 { timeline: summary.timeline, recoveries })
}

/// kill-9.csv (the timeline), kill-9-recovery.csv (per kill) and kill-9.svg.
fn write_kill_9(
    out: &Path,
    timeline: &[(f64, f64)],
    recoveries: &[(f64, usize, Option<Duration>)],
    clients: u64,
    caption: &str,
) -> Result<(), String> {
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    let mut csv = String::from("seconds,ops_per_second\n");
    for (t, rate) in timeline {
        csv.push_str(&format!("{t:.1},{rate:.0}\n"));
    }
    write("kill-9.csv", csv)?;
    let mut recovery_csv = String::from("kill_at_seconds,process,first_answer_ms\n");
    for (at, process, back) in recoveries {
        let ms = back.map_or(String::from("never"), |d| d.as_millis().to_string());
        recovery_csv.push_str(&format!("{at},{process},{ms}\n"));
    }
    write("kill-9-recovery.csv", recovery_csv)?;
    let top = timeline.iter().map(|(_, r)| *r).fold(0.0, f64::max) / 1000.0;
    let mut series = vec![Series {
        label: format!("throughput ({clients} TCP clients)"),
        points: timeline.iter().map(|(t, r)| (*t, r / 1000.0)).collect(),
    }];
    for (at, process, _) in recoveries {
        series.push(Series { label: format!("kill -9 process {process}"), points: vec![(*at, 0.0), (*at, top)] });
    }
    let title = format!("throughput per 100 ms around kill -9, 3 processes over TCP{caption}");
    line_chart(&out.join("kill-9.svg"), &title, "time (s)", "throughput (k ops/s)", &series)
}
