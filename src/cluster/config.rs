//! Description files (`dataflows/*.toml`): one file per runnable cluster shape.
//!
//! ```
//! use tara::cluster::Description;
//!
//! let d = Description::from_toml("f = 1\nworkers = 3\nwindow = 64\ncheckpoint_interval = 32").unwrap();
//! assert_eq!(d.params().unwrap().window, 64);
//! assert!(Description::from_toml("f = 0").unwrap().validate().unwrap_err().to_string().contains("`f`"));
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::faults::{Fault, FaultSpec};
use crate::dataflow::{Deployment, Placement, Stage};
use crate::protocol::Params;

/// The embedded default: an f=1 cluster on one worker thread of one process.
pub const EMBEDDED_F1: &str = include_str!("../../dataflows/embedded-f1.toml");

/// A description file, as written by an operator. Every key is optional; absent keys take the
/// defaults of `dataflows/embedded-f1.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Description {
    /// Crashes tolerated per stage.
    pub f: usize,
    /// Timely worker threads (per process).
    pub workers: usize,
    /// Commands per request at most.
    pub batch_size: usize,
    /// How long a partial batch waits for more commands; 0 sends whatever arrived as soon as
    /// the source has drained its input.
    pub batch_timeout_ms: f64,
    /// Sequence numbers in flight above the stability threshold.
    pub window: u64,
    /// Executors checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// Commands one client may have outstanding.
    pub client_window: u64,
    /// Client sessions an executor holds at most; opening one more ends the least recently
    /// active session.
    pub max_sessions: usize,
    /// A client session ends, with its ephemeral znodes, once this many execution slots
    /// passed since its latest command or keep-alive.
    pub session_timeout: u64,
    /// How often operators advance their timely capabilities, in milliseconds.
    pub epoch_ms: u64,
    /// A client retransmits a command without reply after this long.
    pub retry_timeout_ms: u64,
    /// Controllers change the view after this long without progress while work is outstanding.
    pub view_timeout_ms: u64,
    /// Independent ordering groups (Section IV); each has its own sources, proposers,
    /// committers and controllers, and a client's commands go to partition `client mod P`.
    pub partitions: usize,
    /// The throttled proposer of the paper's Figure 7: at least this long between two proposals
    /// of one proposer, in microseconds (0: no throttle).
    pub proposer_delay_us: u64,
    /// Consensus instances proposed and not yet committed, at most (1 to `window`; absent:
    /// `window`). 1 is the sequential baseline of the paper's Section VI-B.
    pub max_in_flight: Option<u64>,
    /// Committers sync their record log before sending commits (the protection against the
    /// "amnesia" case of Section III-E). Switching it off is faster and unsafe if a committer
    /// process can lose its memory.
    pub durable_records: bool,
    /// Data bytes per `set data` of the demo workload.
    pub payload_bytes: usize,
    /// Znodes in the demo workload's shared pool.
    pub pool_znodes: usize,
    /// Explicit replica placement per stage (worker indices); absent stages are spread.
    pub placement: PlacementSection,
    /// `tara bench`: closed-loop clients.
    pub bench_clients: usize,
    /// `tara bench`: seconds to run.
    pub bench_seconds: u64,
    /// Replica crashes and restarts during `tara demo` and `tara bench` (`[[fault]]`).
    pub fault: Vec<FaultSpec>,
    /// Where durable state lives (checkpoints, record logs, led views); the embedded cluster
    /// uses a fresh temporary directory when absent.
    pub state_dir: Option<String>,
    /// The largest client frame a front end accepts, in bytes.
    pub max_frame_bytes: usize,
    /// Connections one front end serves at once.
    pub max_connections: usize,
    /// Commands awaiting their reply per front-end connection.
    pub max_outstanding: usize,
    /// Bytes buffered per front-end connection (received plus to send); at least twice
    /// `max_frame_bytes`.
    pub max_connection_bytes: usize,
    /// `tara cluster`: how often the supervisor checks that the cluster answers. Each probe is a
    /// read through consensus that wakes every process; a hang is detected after
    /// `probe_timeout_ms` whatever the interval, so an interval far below it only costs an idle
    /// cluster CPU.
    pub probe_interval_ms: u64,
    /// `tara cluster`: how long a probe may go unanswered before the cluster is restarted.
    pub probe_timeout_ms: u64,
    /// `tara run`: how long a process waits for all the others to connect before it gives up.
    pub connect_timeout_ms: u64,
    /// The processes of a multi-process cluster, in timely's process order (`[[process]]`).
    pub process: Vec<ProcessSpec>,
    /// `tara run`: where process 0 serves its Prometheus metrics (`host:port`); process `i`
    /// listens on the same host at port + `i`. Absent: no metrics endpoint.
    pub metrics_addr: Option<String>,
}

/// `[[process]]`: one process of a multi-process cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The address timely uses between processes (`host:port`).
    pub timely: String,
    /// The address its client front end listens on (`host:port`); only processes that host a
    /// request source serve clients.
    pub clients: String,
}

/// `[placement]`: the workers of each stage's replicas, by replica index. Listing a stage
/// allows co-locating its replicas on one worker (for tests and small machines).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// Request sources (f+1).
    pub sources: Option<Vec<u32>>,
    /// Proposers (f+1).
    pub proposers: Option<Vec<u32>>,
    /// Committers (2f+1).
    pub committers: Option<Vec<u32>>,
    /// Executors (2f+1).
    pub executors: Option<Vec<u32>>,
    /// Garbage-collection sources (2f+1).
    pub gc: Option<Vec<u32>>,
    /// Controllers (2f+1).
    pub controllers: Option<Vec<u32>>,
}

impl PlacementSection {
    fn listed(&self) -> Vec<(Stage, Vec<u32>)> {
        let all = [
            (Stage::Source, &self.sources),
            (Stage::Proposer, &self.proposers),
            (Stage::Committer, &self.committers),
            (Stage::Executor, &self.executors),
            (Stage::Gc, &self.gc),
            (Stage::Controller, &self.controllers),
        ];
        all.into_iter().filter_map(|(stage, list)| list.clone().map(|l| (stage, l))).collect()
    }
}

/// A description that cannot run, with what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Description {
    fn default() -> Self {
        let params = Params::default();
        Description {
            f: params.f,
            workers: 3,
            batch_size: params.batch_size,
            batch_timeout_ms: 0.0,
            window: params.window,
            checkpoint_interval: params.checkpoint_interval,
            client_window: params.client_window,
            max_sessions: params.max_sessions,
            session_timeout: params.session_timeout,
            epoch_ms: 5,
            retry_timeout_ms: 1000,
            view_timeout_ms: params.view_timeout_us / 1000,
            partitions: params.partitions,
            proposer_delay_us: params.proposer_delay_us,
            max_in_flight: params.max_in_flight,
            durable_records: true,
            payload_bytes: 64,
            pool_znodes: 1000,
            placement: PlacementSection::default(),
            bench_clients: 64,
            bench_seconds: 10,
            fault: Vec::new(),
            state_dir: None,
            max_frame_bytes: crate::net::wire::MAX_FRAME_BYTES,
            max_connections: crate::net::Limits::default().max_connections,
            max_outstanding: crate::net::Limits::default().max_outstanding,
            max_connection_bytes: crate::net::Limits::default().max_connection_bytes,
            probe_interval_ms: 1000,
            probe_timeout_ms: 3000,
            connect_timeout_ms: 30_000,
            process: Vec::new(),
            metrics_addr: None,
        }
    }
}

impl Description {
    /// Parses a description; unknown keys are errors (a misspelt key must not be ignored).
    pub fn from_toml(text: &str) -> Result<Description, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("invalid description: {e}")))
    }

    /// Reads and parses a description file.
    pub fn from_file(path: &Path) -> Result<Description, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read description file {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// The embedded default description (`dataflows/embedded-f1.toml`).
    pub fn embedded() -> Description {
        Self::from_toml(EMBEDDED_F1).unwrap_or_default()
    }

    /// The protocol parameters; errors name the field and the fix.
    pub fn params(&self) -> Result<Params, ConfigError> {
        if !(self.batch_timeout_ms >= 0.0 && self.batch_timeout_ms <= 10_000.0) {
            return Err(ConfigError(format!(
                "`batch_timeout_ms`: must be between 0 and 10000, got {}; 0 sends batches as soon as input is drained",
                self.batch_timeout_ms
            )));
        }
        let params = Params {
            f: self.f,
            window: self.window,
            batch_size: self.batch_size,
            batch_timeout_us: (self.batch_timeout_ms * 1000.0) as u64,
            checkpoint_interval: self.checkpoint_interval,
            client_window: self.client_window,
            view_timeout_us: self.view_timeout_ms.saturating_mul(1000),
            partitions: self.partitions,
            proposer_delay_us: self.proposer_delay_us,
            max_sessions: self.max_sessions,
            session_timeout: self.session_timeout,
            max_in_flight: self.max_in_flight,
        };
        params.validate().map_err(|e| ConfigError(e.to_string()))?;
        Ok(params)
    }

    /// The placement of every replica: on the `workers` threads of each listed process, or of
    /// the single process of an embedded cluster.
    pub fn placement(&self, params: &Params) -> Result<Placement, ConfigError> {
        self.placement_in(params, self.process.len().max(1))
    }

    /// The placement of every replica on `processes` processes of `workers` threads each.
    pub fn placement_in(&self, params: &Params, processes: usize) -> Result<Placement, ConfigError> {
        Placement::new(params, processes, self.workers, &self.placement.listed()).map_err(|e| ConfigError(e.0))
    }

    /// The bounds of every front end.
    pub fn limits(&self) -> crate::net::Limits {
        crate::net::Limits {
            max_connections: self.max_connections,
            max_outstanding: self.max_outstanding,
            max_connection_bytes: self.max_connection_bytes,
        }
    }

    /// Checks everything; the error names the field and the fix.
    pub fn validate(&self) -> Result<(Params, Placement), ConfigError> {
        let params = self.params()?;
        if self.workers == 0 {
            return Err(ConfigError(
                "`workers`: must be at least 1 per process; 3 give every replica of f = 1 its own thread".into(),
            ));
        }
        if self.epoch_ms == 0 || self.epoch_ms > 1000 {
            return Err(ConfigError(format!("`epoch_ms`: must be between 1 and 1000, got {}", self.epoch_ms)));
        }
        if self.retry_timeout_ms == 0 {
            return Err(ConfigError("`retry_timeout_ms`: must be at least 1".into()));
        }
        // A reply frame wraps at most `max_result_bytes` of result: it must fit the frame limit
        // every client reads with, whatever this description says.
        const _: () = assert!(
            crate::app::coordination::RESULT_BYTES_MAX + crate::app::coordination::RESULT_ENVELOPE_BYTES
                <= crate::net::wire::MAX_FRAME_BYTES
        );
        if self.max_frame_bytes < 1024 {
            return Err(ConfigError(format!("`max_frame_bytes`: must be at least 1024, got {}", self.max_frame_bytes)));
        }
        self.limits().validate(self.max_frame_bytes).map_err(ConfigError)?;
        if self.probe_timeout_ms == 0 || self.probe_interval_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(ConfigError(
                "`probe_interval_ms`, `probe_timeout_ms` and `connect_timeout_ms`: must be at least 1".into(),
            ));
        }
        if self.state_dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(ConfigError(
                "`state_dir`: must name a directory (durable records, checkpoints and views live there); \
                 remove the key for the default"
                    .into(),
            ));
        }
        let placement = self.placement(&params)?;
        self.faults(&params)?;
        Ok((params, placement))
    }

    /// The shape of a multi-process cluster: timely and client addresses, per process, checked.
    /// `timely_override` replaces the timely addresses (a timely hostfile).
    pub fn processes(&self, timely_override: Option<Vec<String>>) -> Result<Vec<ProcessSpec>, ConfigError> {
        let mut processes = self.process.clone();
        if let Some(addresses) = timely_override {
            if addresses.len() != processes.len() {
                return Err(ConfigError(format!(
                    "the hostfile lists {} processes but the description has {} [[process]] entries; list one line per process",
                    addresses.len(),
                    processes.len()
                )));
            }
            for (process, address) in processes.iter_mut().zip(addresses) {
                process.timely = address;
            }
        }
        if processes.is_empty() {
            return Err(ConfigError(
                "`[[process]]`: a multi-process cluster lists its processes (timely and clients addresses)".into(),
            ));
        }
        let params = self.params()?;
        let needed = params.committers();
        if processes.len() < needed && self.placement == PlacementSection::default() {
            return Err(ConfigError(format!(
                "`[[process]]`: f = {} needs {needed} processes so that the replicas of each stage run in distinct \
                 processes; list {needed} or more",
                params.f
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in processes.iter().enumerate() {
            let metrics = self.metrics_address(i)?.map(|a| a.to_string());
            for address in [&p.timely, &p.clients].into_iter().chain(metrics.as_ref()) {
                address.parse::<std::net::SocketAddr>().map_err(|e| {
                    ConfigError(format!("[[process]] {i}: {address:?} is not host:port with a numeric address ({e})"))
                })?;
                if !seen.insert(address.clone()) {
                    return Err(ConfigError(format!(
                        "[[process]] {i}: address {address} is used twice; every address must be distinct"
                    )));
                }
            }
        }
        Ok(processes)
    }

    /// Where process `index` serves its Prometheus metrics: `metrics_addr` with its port
    /// raised by `index`; `None` without `metrics_addr`.
    ///
    /// ```
    /// use tara::cluster::Description;
    /// let d = Description::from_toml("metrics_addr = \"127.0.0.1:9100\"").unwrap();
    /// assert_eq!(d.metrics_address(2).unwrap().unwrap().to_string(), "127.0.0.1:9102");
    /// assert!(Description::default().metrics_address(0).unwrap().is_none());
    /// ```
    pub fn metrics_address(&self, index: usize) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(base) = &self.metrics_addr else { return Ok(None) };
        let mut address: std::net::SocketAddr = base.parse().map_err(|e| {
            ConfigError(format!("`metrics_addr`: {base:?} is not host:port with a numeric address ({e})"))
        })?;
        let port = u16::try_from(address.port() as usize + index).map_err(|_| {
            ConfigError(format!("`metrics_addr`: port {} + process index {index} is past 65535", address.port()))
        })?;
        if address.port() == 0 {
            return Err(ConfigError("`metrics_addr`: name a port (process `i` listens on port + `i`), not 0".into()));
        }
        address.set_port(port);
        Ok(Some(address))
    }

    /// The client front-end addresses of the processes that host a request source: where
    /// clients connect.
    pub fn client_addresses(&self) -> Result<Vec<String>, ConfigError> {
        let processes = self.processes(None)?;
        let params = self.params()?;
        let placement = self.placement_in(&params, processes.len())?;
        let mut hosting: Vec<usize> = placement.stage(Stage::Source).iter().map(|w| placement.process_of(*w)).collect();
        hosting.sort_unstable();
        hosting.dedup();
        Ok(hosting.into_iter().map(|p| processes[p].clients.clone()).collect())
    }

    /// Where the processes of a multi-process cluster keep their durable state: `state_dir`, or
    /// `tara-state`, relative to the working directory of `tara run` / `tara cluster`. It
    /// outlives the cluster, so a restart (or the next run) continues from it.
    pub fn process_state_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.state_dir.as_deref().unwrap_or("tara-state"))
    }

    /// The deployment this description asks for, on `placement`, with durable state in
    /// `state_dir`: the one place where description keys become dataflow settings.
    pub fn deployment(&self, params: Params, placement: Placement, state_dir: std::path::PathBuf) -> Deployment {
        let mut deployment = Deployment::new(params, placement).state_dir(state_dir);
        deployment.epoch_ms = self.epoch_ms;
        deployment.durable_records = self.durable_records;
        deployment
    }

    /// The `[[fault]]` list, checked against the replica counts.
    pub fn faults(&self, params: &Params) -> Result<Vec<Fault>, ConfigError> {
        self.fault.iter().map(|f| f.resolve(params).map_err(ConfigError)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid() {
        let d = Description::embedded();
        assert_eq!(d, Description::from_toml(EMBEDDED_F1).unwrap());
        let (params, placement) = d.validate().unwrap();
        assert_eq!(params.f, 1);
        assert_eq!(placement.workers(), 1, "one process: every replica on one worker");
    }

    fn error_of(text: &str) -> String {
        match Description::from_toml(text) {
            Err(e) => e.0,
            Ok(d) => d.validate().unwrap_err().0,
        }
    }

    #[test]
    fn configuration_errors_name_the_field_and_the_fix() {
        let cases = [
            ("f = 0", "`f`: must be at least 1"),
            ("window = 0", "`window`"),
            ("window = 64\ncheckpoint_interval = 128", "`checkpoint_interval`"),
            ("window = 64\ncheckpoint_interval = 32\nmax_in_flight = 65", "`max_in_flight`"),
            ("workers = 0", "`workers`"),
            ("batch_size = 0", "`batch_size`"),
            ("batch_timeout_ms = -1.0", "`batch_timeout_ms`"),
            ("epoch_ms = 0", "`epoch_ms`"),
            ("state_dir = \"\"", "`state_dir`: must name a directory"),
            ("windw = 64", "unknown field `windw`"),
            ("[placement]\nexecutors = [0, 1]", "list exactly 3"),
            ("[placement]\nexecutors = [0, 1, 9]", "worker 9 does not exist"),
            ("[[fault]]\nstage = \"wizards\"\nreplica = 0\ncrash_at_ms = 1", "unknown stage"),
            ("[[fault]]\nstage = \"proposers\"\nreplica = 5\ncrash_at_ms = 1", "the stage has 2 replicas"),
        ];
        for (text, expected) in cases {
            let message = error_of(text);
            assert!(message.contains(expected), "{text:?} gave {message:?}, expected {expected:?}");
        }
    }

    #[test]
    fn explicit_placement_allows_fewer_workers() {
        let text = "workers = 1\n[placement]\nsources = [0, 0]\nproposers = [0, 0]\ncommitters = [0, 0, 0]\nexecutors = [0, 0, 0]\ngc = [0, 0, 0]\ncontrollers = [0, 0, 0]";
        let (_, placement) = Description::from_toml(text).unwrap().validate().unwrap();
        assert_eq!(placement.replicas_on(Stage::Executor, 0), vec![0, 1, 2]);
    }
}
