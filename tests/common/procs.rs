//! A multi-process cluster for tests: `tara cluster` on free loopback ports, with its state in a
//! temporary directory, its log collected line by line, and every process killed at the end.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tara::client::{ClientOptions, ClientPool, tcp};
use tara::cluster::workload::Remote;

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it meanwhile,
/// which only makes a test fail loudly at start).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports. They come from a counter over 20000-32767, below the range the
/// system picks its own ports from (for outgoing connections and port 0), so that the tests of
/// one binary, which run at the same time, never choose the same port, and no client
/// connection takes a port a cluster is about to listen on.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = (std::process::id() % 100) * 120;
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (20_000 + (start + offset) % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    held.iter().map(|l| l.local_addr().expect("an address").port()).collect()
}

/// A description of an f = 1 cluster of three processes on free ports, with `extra` TOML lines
/// first (they must not repeat the keys below).
fn description_text(state_dir: &std::path::Path, extra: &str) -> String {
    let mut text =
        format!("{extra}\nf = 1\nworkers = 1\nstate_dir = {:?}\n", state_dir.to_str().expect("a UTF-8 temporary path"));
    for pair in free_ports(6).chunks(2) {
        let (timely, front) = (pair[0], pair[1]);
        text.push_str(&format!("[[process]]\ntimely = \"127.0.0.1:{timely}\"\nclients = \"127.0.0.1:{front}\"\n"));
    }
    text
}

/// Writes the description of [`description_text`] as `cluster.toml` in `dir`, with its state
/// under `dir`; returns the file's path (as a string, for command lines) and the description.
pub fn write_description(dir: &std::path::Path, extra: &str) -> (String, tara::cluster::Description) {
    let text = description_text(&dir.join("state"), extra);
    let config = dir.join("cluster.toml");
    std::fs::write(&config, &text).expect("the description is written");
    let description = tara::cluster::Description::from_toml(&text).expect("the description parses");
    (config.to_str().expect("a UTF-8 path").to_string(), description)
}

/// A running `tara cluster`.
pub struct LocalCluster {
    supervisor: Child,
    /// Holds the description and the durable state; removed at the end.
    pub dir: tempfile::TempDir,
    /// The description file.
    pub config: PathBuf,
    /// Front ends of the processes that host a request source.
    pub sources: Vec<String>,
    /// Front ends of every process (status).
    pub every: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread that copies the supervisor's stderr into `log`; it ends at end of file.
    reader: std::thread::JoinHandle<()>,
}

impl LocalCluster {
    /// Starts a cluster and waits until it serves (at most 60 s). If another test took one of
    /// the chosen ports in the meantime, the supervisor refuses at once; then it tries again
    /// with other ports.
    pub fn start(extra: &str) -> LocalCluster {
        for _ in 0..3 {
            if let Some(cluster) = Self::try_start(extra) {
                return cluster;
            }
        }
        panic!("the cluster never served");
    }

    fn try_start(extra: &str) -> Option<LocalCluster> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (config, description) = write_description(dir.path(), extra);
        let every = description.process.iter().map(|p| p.clients.clone()).collect();
        let sources = description.client_addresses().expect("front ends");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tara"));
        command
            .args(["cluster", "--config", &config])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe. If the test process ends without dropping the
        // cluster (a `within` timeout), the supervisor dies with it, and its processes with it.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut supervisor = command.spawn().expect("tara cluster starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, lines) = (supervisor.stderr.take().expect("piped stderr"), log.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                lines.lock().expect("log lock").push(line);
            }
        });
        let config = PathBuf::from(config);
        let mut cluster = LocalCluster { supervisor, dir, config, sources, every, log, reader };
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if !cluster.lines("tara cluster: serving after").is_empty() {
                return Some(cluster);
            }
            if let Ok(Some(_)) = cluster.supervisor.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until the `n`-th (from 0) log line containing `pattern` appears.
    pub fn wait_for(&self, pattern: &str, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.lines(pattern).len() > n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The log lines containing `pattern`.
    pub fn lines(&self, pattern: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|l| l.contains(pattern)).cloned().collect()
    }

    /// The pid of process `index` of the newest incarnation.
    pub fn pid(&self, index: usize) -> u32 {
        let prefix = format!("tara cluster: process {index} started, pid ");
        let line = self.lines(&prefix).pop().expect("the process was started");
        line.rsplit(' ').next().and_then(|p| p.parse().ok()).expect("a pid")
    }

    /// Sends `signal` to process `index`.
    pub fn signal(&self, index: usize, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid(index).to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Client options that suit tests: quick retries.
    pub fn options() -> ClientOptions {
        ClientOptions { client_window: 64, retry_timeout: Duration::from_millis(300) }
    }

    /// A pool of TCP clients.
    pub fn pool(&self) -> ClientPool {
        tcp::pool(&self.sources, Self::options()).expect("a client pool")
    }

    /// The cluster as a workload target (submit to sources, status from everyone).
    pub fn remote(&self) -> Remote {
        Remote { submit: self.sources.clone(), status: self.every.clone(), options: Self::options() }
    }
}

impl LocalCluster {
    /// Sends SIGINT (Ctrl-C) to the supervisor and waits for it to exit.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_supervisor("-INT");
        self.wait_exit(timeout)
    }

    /// Sends `signal` to the supervisor.
    pub fn signal_supervisor(&self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.supervisor.id().to_string()]).status();
    }

    /// True once process `index` of the newest incarnation has exited (a zombie counts: a
    /// stopped supervisor has not reaped it yet).
    pub fn exited(&self, index: usize) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid(index))).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    }

    /// Waits for the supervisor to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.supervisor.try_wait() {
                // Its last lines may still be in the pipe: read them before anyone looks.
                let drained = Instant::now() + Duration::from_secs(5);
                while !self.reader.is_finished() && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.supervisor.try_wait() {
            return;
        }
        // SIGTERM: the supervisor stops its processes; they also die with it (parent-death signal).
        let _ = Command::new("kill").args(["-TERM", &self.supervisor.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && matches!(self.supervisor.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}
