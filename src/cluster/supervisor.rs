//! `tara cluster`: starts every process of a description on this host and keeps the cluster
//! serving.
//!
//! Timely is fail-stop (a dead process takes the others down; a hung one stalls them, and no
//! process can rejoin), so the supervisor restarts the *whole* cluster when any process exits or
//! when a health probe (a read-only command through the consensus path) goes unanswered for
//! `probe_timeout_ms`. Every process recovers from its durable state: executors from their newest
//! checkpoint, committers from their record logs, the new proposer through the record path.
//! Clients retry, and executors' duplicate detection makes every command
//! take effect once.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::{ConfigError, Description, ProcessSpec};
use super::process::exit;
use crate::client::{Client, ClientOptions, tcp};

/// How to run the cluster's processes.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// The `tara` executable that runs one process (`tara run`).
    pub program: PathBuf,
    /// The description file every process reads.
    pub config: PathBuf,
    /// The read-only command the health probe submits (the application's bytes).
    pub probe: Vec<u8>,
    /// Restart at most this many times before giving up (`None`: forever).
    pub max_restarts: Option<u64>,
    /// The pids of the running processes, by process index, updated at every (re)start: for
    /// benchmarks and tools that inject real crashes.
    pub pids: Arc<std::sync::Mutex<Vec<u32>>>,
}

/// Why the supervisor restarted the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Processes exited: (process index, exit status as the OS reports it), the first cause
    /// first. When one process dies, timely's fail-stop takes the others down within
    /// milliseconds (they abort), so those aborts are listed after the other exits.
    Exited(Vec<(usize, String)>),
    /// The health probe got no answer in time (the cluster as a whole makes no progress).
    Stalled {
        /// How long the probe waited.
        waited_ms: u64,
    },
    /// A process refused to start ([`exit::CONFIG`]: its configuration error is printed
    /// above). Restarting would fail the same way, so the supervisor gives up.
    Refused {
        /// The process index.
        process: usize,
    },
    /// A replica of a process refused to start on damaged, missing or unreadable durable state
    /// ([`exit::DAMAGED_STATE`]: the error above names the file). Restarting would fail the
    /// same way, so the supervisor gives up until an operator repairs the state.
    DamagedState {
        /// The process index.
        process: usize,
    },
    /// A process did not answer a status request in time (hung or stopped), or refused it. TARA itself keeps
    /// serving with one replica per stage gone, but timely's progress tracking stalls and the
    /// other processes buffer everything they send to it, without bound.
    Unresponsive {
        /// The process index.
        process: usize,
        /// How long the request waited.
        waited_ms: u64,
        /// What the request got instead of an answer.
        error: String,
    },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Exited(exits) => {
                let each: Vec<String> =
                    exits.iter().map(|(p, status)| format!("process {p} exited ({status})")).collect();
                f.write_str(&each.join(", then "))
            }
            Cause::Stalled { waited_ms } => write!(f, "the health probe got no answer for {waited_ms} ms"),
            Cause::Refused { process } => {
                write!(f, "process {process} refused to start (its configuration error is printed above)")
            }
            Cause::DamagedState { process } => write!(
                f,
                "process {process} refused to start: a replica's durable state is damaged, missing or unreadable \
                 (the error above names the file and what to do); repair it, then start the cluster again"
            ),
            Cause::Unresponsive { process, waited_ms, error } => write!(
                f,
                "process {process} did not answer a status request within {waited_ms} ms (hung or stopped): {error}"
            ),
        }
    }
}

/// Prints `tara cluster: <line>` on stderr in one write: the processes share that stderr, and a
/// line written in pieces could be split by theirs.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("tara cluster: {line}\n").as_bytes());
}

/// The running processes of one incarnation of the cluster.
struct Incarnation {
    children: Vec<Child>,
}

impl Incarnation {
    /// The processes that have exited, if any: once one has, the others' fail-stop exits are
    /// given a moment, so that the first cause can be told apart from its consequences.
    fn exited(&mut self) -> Option<Cause> {
        self.exits().first()?;
        let code = |c: &mut Child| c.try_wait().ok().flatten().and_then(|s| s.code());
        for (process, child) in self.children.iter_mut().enumerate() {
            match code(child) {
                Some(c) if c == i32::from(exit::CONFIG) => return Some(Cause::Refused { process }),
                Some(c) if c == i32::from(exit::DAMAGED_STATE) => return Some(Cause::DamagedState { process }),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut exits = self.exits();
        exits.sort_by_key(|(_, status)| status.contains("SIGABRT"));
        Some(Cause::Exited(exits))
    }

    fn exits(&mut self) -> Vec<(usize, String)> {
        let status = |child: &mut Child| match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        };
        self.children.iter_mut().enumerate().filter_map(|(process, child)| Some((process, status(child)?))).collect()
    }

    /// Kills every process and reaps it. SIGKILL also ends a SIGSTOPped process.
    fn kill(mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }

    /// Asks every process to stop (SIGTERM), then kills those still running after `grace`.
    fn stop(mut self, grace: Duration) {
        for child in &self.children {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let until = Instant::now() + grace;
        while Instant::now() < until && self.children.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// Checks that every address of `processes` can be listened on here, so that a cluster that
/// cannot start (another one runs on these ports) is refused before anything starts or is sent.
pub fn ports_free(processes: &[ProcessSpec]) -> Result<(), ConfigError> {
    for address in processes.iter().flat_map(|p| [&p.timely, &p.clients]) {
        std::net::TcpListener::bind(address).map_err(|e| {
            ConfigError(format!(
                "cannot listen on {address} ({e}): is another cluster running, or is the address not on this host? \
                 `tara cluster` starts every process here; on several hosts run `tara run` on each"
            ))
        })?;
    }
    Ok(())
}

/// Supervises the cluster of `description` until `stop` is set; prints every start and
/// restart on stderr (`tara cluster: ...`). Returns the number of restarts.
pub fn supervise(
    description: &Description,
    options: &SupervisorOptions,
    stop: Arc<AtomicBool>,
) -> Result<u64, ConfigError> {
    let processes = description.processes(None)?;
    description.validate()?;
    let addresses = description.client_addresses()?;
    ports_free(&processes)?;
    say(&format!(
        "{} processes, clients connect to {}; durable state in {} (kept across runs: an earlier run's \
         znodes come back; `--fresh` starts empty)",
        processes.len(),
        addresses.join(","),
        description.process_state_dir().display()
    ));
    let mut probe = Probe::new(&addresses, description, options.probe.clone());
    probe.every = processes.iter().map(|p| p.clients.clone()).collect();
    // A start may take the peers' connection timeout, then a view change.
    let limit = Duration::from_millis(description.connect_timeout_ms + description.probe_timeout_ms);
    let (mut restarts, mut failed_starts) = (0u64, 0u32);
    let mut cluster = spawn(options, processes.len())?;
    let started = Instant::now();
    let mut last_answer = wait_for_service(&mut probe, &mut cluster, &stop, limit);
    if let Some(at) = last_answer {
        say(&format!("serving after {} ms", at.duration_since(started).as_millis()));
    }
    while !stop.load(Ordering::Acquire) {
        let Some(cause) = watch(&mut probe, &mut cluster, &stop, description, &mut last_answer) else { break };
        let detected = Instant::now();
        if let Cause::Refused { .. } | Cause::DamagedState { .. } = cause {
            cluster.kill();
            return Err(ConfigError(format!("{cause}; not restarting")));
        }
        if stop.load(Ordering::Acquire) {
            // Asked to stop while the failure was being found: stopping is what was asked for.
            break;
        }
        restarts += 1;
        say(&format!("restart {restarts}: {cause}; restarting every process"));
        cluster.kill();
        if options.max_restarts.is_some_and(|max| restarts > max) {
            return Err(ConfigError(format!("gave up after {} restarts (last cause: {cause})", restarts - 1)));
        }
        // A cluster that keeps failing before it serves (a full disk, a bad host) is restarted
        // with a growing pause, up to 5 s, instead of in a tight loop.
        if failed_starts > 0 {
            std::thread::sleep(Duration::from_millis(100u64 << (failed_starts - 1).min(6)).min(Duration::from_secs(5)));
        }
        cluster = spawn(options, processes.len())?;
        failed_starts += 1;
        if let Some(back) = wait_for_service(&mut probe, &mut cluster, &stop, limit) {
            failed_starts = 0;
            let down_since = last_answer.unwrap_or(detected);
            // The last answer before the failure is up to a probe interval older than the
            // failure itself: the service was down for at most that long.
            say(&format!(
                "restart {restarts}: serving again {} ms after the failure was detected \
                 (service was down for at most {} ms)",
                back.duration_since(detected).as_millis(),
                back.duration_since(down_since).as_millis()
            ));
            last_answer = Some(back);
        }
    }
    say("stopping");
    cluster.stop(Duration::from_secs(3));
    Ok(restarts)
}

/// Starts process 0, 1, ... of the cluster as `tara run` children sharing this terminal.
fn spawn(options: &SupervisorOptions, processes: usize) -> Result<Incarnation, ConfigError> {
    let mut children: Vec<Child> = Vec::with_capacity(processes);
    for index in 0..processes {
        let mut command = Command::new(&options.program);
        command.arg("run").arg("--config").arg(&options.config).arg("--process").arg(index.to_string());
        // Its own process group: a Ctrl-C at the terminal reaches only the supervisor, which
        // then stops the processes itself.
        command.stdin(Stdio::null()).process_group(0);
        // Timely prints its connection attempts on stdout; keep stdout for the supervisor's
        // caller (`tara bench --json` prints its summary there).
        command.stdout(Stdio::from(std::io::stderr()));
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; a child must not outlive its supervisor.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match command.spawn() {
            Ok(child) => {
                say(&format!("process {index} started, pid {}", child.id()));
                children.push(child);
            }
            Err(e) => {
                Incarnation { children }.kill();
                return Err(ConfigError(format!("cannot start {}: {e}", options.program.display())));
            }
        }
    }
    if let Ok(mut pids) = options.pids.lock() {
        *pids = children.iter().map(Child::id).collect();
    }
    Ok(Incarnation { children })
}

/// Waits until the probe is answered, a process exits, or `limit` passes; the time of the
/// answer. A cluster that does not serve by then is left to [`watch`], which restarts it.
fn wait_for_service(
    probe: &mut Probe,
    cluster: &mut Incarnation,
    stop: &AtomicBool,
    limit: Duration,
) -> Option<Instant> {
    let until = Instant::now() + limit;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        if cluster.exited().is_some() {
            return None;
        }
        if probe.answered(Duration::from_millis(200)) {
            return Some(Instant::now());
        }
    }
    None
}

/// Probes the cluster every `probe_interval_ms` until a process exits, the probe stays
/// unanswered for `probe_timeout_ms`, or `stop` is set (`None`).
fn watch(
    probe: &mut Probe,
    cluster: &mut Incarnation,
    stop: &AtomicBool,
    description: &Description,
    last_answer: &mut Option<Instant>,
) -> Option<Cause> {
    let interval = Duration::from_millis(description.probe_interval_ms);
    let timeout = Duration::from_millis(description.probe_timeout_ms);
    let mut unanswered_since: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if let Some(cause) = cluster.exited() {
            return Some(cause);
        }
        let tick = Instant::now();
        if let Some((process, error)) = probe.unresponsive(timeout) {
            // A process that has just died refuses connections at once: report its exit, not a
            // hang.
            std::thread::sleep(Duration::from_millis(50));
            if let Some(cause) = cluster.exited() {
                return Some(cause);
            }
            return Some(Cause::Unresponsive { process, waited_ms: tick.elapsed().as_millis() as u64, error });
        }
        if probe.answered(interval.min(timeout)) {
            *last_answer = Some(Instant::now());
            unanswered_since = None;
        } else {
            let since = *unanswered_since.get_or_insert(tick);
            if since.elapsed() >= timeout {
                return Some(Cause::Stalled { waited_ms: since.elapsed().as_millis() as u64 });
            }
        }
        // Child exits are checked often: a kill -9 should not wait for the next probe.
        let until = tick + interval;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            if let Some(cause) = cluster.exited() {
                return Some(cause);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    None
}

/// The health probe: a client that submits the probe command and waits for its answer. A probe
/// that times out leaves its command behind, so the next probe uses a fresh client.
struct Probe {
    addresses: Vec<String>,
    /// Every process's front end, for status requests.
    every: Vec<String>,
    options: ClientOptions,
    client: Option<Client>,
    op: Vec<u8>,
}

impl Probe {
    fn new(addresses: &[String], description: &Description, op: Vec<u8>) -> Probe {
        let retry_ms = description.retry_timeout_ms.min(description.probe_timeout_ms / 2).max(50);
        let options =
            ClientOptions { client_window: description.client_window, retry_timeout: Duration::from_millis(retry_ms) };
        Probe { addresses: addresses.to_vec(), every: Vec::new(), options, client: None, op }
    }

    /// The first process whose front end does not answer a status request within `timeout`,
    /// and what it got instead.
    fn unresponsive(&self, timeout: Duration) -> Option<(usize, String)> {
        self.every
            .iter()
            .enumerate()
            .find_map(|(i, address)| tcp::status(address, timeout).err().map(|e| (i, e.to_string())))
    }

    /// True if the probe command was answered within `timeout`.
    fn answered(&mut self, timeout: Duration) -> bool {
        let client = match self.client.take() {
            Some(client) => client,
            None => match tcp::pool(&self.addresses, self.options.clone()) {
                Ok(pool) => Client::new(pool),
                Err(_) => {
                    std::thread::sleep(timeout);
                    return false;
                }
            },
        };
        let (mut client, started) = (client, Instant::now());
        client.set_deadline(timeout);
        let answered = client.invoke(self.op.clone()).is_ok();
        if answered {
            self.client = Some(client);
        } else {
            // A refusal fails at once; the next probe still comes one timeout later.
            std::thread::sleep(timeout.saturating_sub(started.elapsed()));
        }
        answered
    }
}
