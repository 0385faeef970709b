//! One process of a multi-process cluster (`tara run`): timely workers talking timely's cluster
//! protocol to the other processes, and a client front end that takes commands for every
//! request source (forwarding those it does not host) and answers status requests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::config::{ConfigError, Description, ProcessSpec};
use super::mesh;
use super::worker::{self, Setup};
use crate::app::Application;
use crate::dataflow::{Control, Deployment, Ingress, Mailboxes, Placement, Stage};
use crate::net::frontend::{self, FrontEndConfig};
use crate::net::wire::ClusterInfo;
use crate::protocol::topology;

/// How `tara run` exits: every failure has its own code, so that a supervisor can tell a
/// failure worth a restart from one that a restart would only repeat.
pub mod exit {
    /// A failure while running (peers that did not connect in time, a lost connection): the
    /// supervisor restarts the cluster.
    pub const RUNTIME: u8 = 1;
    /// A configuration error: restarting would fail the same way.
    pub const CONFIG: u8 = 2;
    /// A replica refused to start because its durable state is damaged, missing or unreadable:
    /// an operator must repair it (the error names the file); restarting would fail the same way.
    pub const DAMAGED_STATE: u8 = 3;
}

/// Why a process could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The description or the flags are wrong ([`exit::CONFIG`]).
    Config(ConfigError),
    /// Something failed while starting or running ([`exit::RUNTIME`]).
    Runtime(String),
}

impl RunError {
    /// The exit code of `tara run` for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => exit::CONFIG,
            RunError::Runtime(_) => exit::RUNTIME,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Config(e) => e.fmt(f),
            RunError::Runtime(message) => f.write_str(message),
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(error: ConfigError) -> RunError {
        RunError::Config(error)
    }
}

/// Which process to run, and timely's own flags (`-w -n -p -h`), which override the description.
#[derive(Clone, Debug, Default)]
pub struct ProcessOptions {
    /// This process's index (`--process` or `-p`).
    pub index: usize,
    /// Worker threads per process (`-w`).
    pub threads: Option<usize>,
    /// The number of processes (`-n`); must match the description.
    pub processes: Option<usize>,
    /// A timely hostfile (`-h`): one `host:port` per line, in process order.
    pub hostfile: Option<PathBuf>,
}

/// Reads a timely hostfile: one `host:port` a line, blank lines ignored, no repeats.
pub fn read_hostfile(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read hostfile {}: {e}", path.display())))?;
    let mut addresses: Vec<String> = Vec::new();
    for (line, address) in text.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()) {
        if address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!("{} line {}: {address:?} is not host:port", path.display(), line + 1)));
        }
        if addresses.iter().any(|a| a == address) {
            return Err(ConfigError(format!("{} line {}: {address} is listed twice", path.display(), line + 1)));
        }
        addresses.push(address.to_string());
    }
    Ok(addresses)
}

/// Everything one process needs, checked before anything starts.
struct Plan {
    description: Description,
    processes: Vec<ProcessSpec>,
    index: usize,
    placement: Placement,
    deployment: Deployment,
}

fn plan(description: &Description, options: &ProcessOptions) -> Result<Plan, ConfigError> {
    let mut description = description.clone();
    if let Some(threads) = options.threads {
        description.workers = threads;
    }
    let hostfile = options.hostfile.as_deref().map(read_hostfile).transpose()?;
    let processes = description.processes(hostfile)?;
    if let Some(n) = options.processes.filter(|n| *n != processes.len()) {
        return Err(ConfigError(format!("-n {n} does not match the {} processes of the description", processes.len())));
    }
    if options.index >= processes.len() {
        return Err(ConfigError(format!(
            "process index {} is out of range: the description has {} processes (0 to {})",
            options.index,
            processes.len(),
            processes.len() - 1
        )));
    }
    let (params, _) = description.validate()?;
    let placement = description.placement_in(&params, processes.len())?;
    let state_dir = description.process_state_dir();
    let deployment = description.deployment(params, placement.clone(), state_dir);
    deployment.validate().map_err(ConfigError)?;
    Ok(Plan { description, processes, index: options.index, placement, deployment })
}

/// The replicas hosted by process `index`.
fn local_replicas(placement: &Placement, index: usize) -> Vec<(Stage, u32)> {
    let workers = (index * placement.threads())..((index + 1) * placement.threads());
    Stage::ALL
        .into_iter()
        .flat_map(|stage| {
            workers.clone().flat_map(move |w| placement.replicas_on(stage, w).into_iter().map(move |r| (stage, r)))
        })
        .collect()
}

/// Binds `address` now, so that a wrong address fails with a clear message before timely starts.
fn bind(address: &str, what: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(address).map_err(|e| {
        ConfigError(format!("cannot listen for {what} on {address}: {e}; is the address local and the port free?"))
    })
}

/// Runs process `options.index` of the cluster described by `description` until the dataflow
/// stops (`control.stop()`, e.g. on Ctrl-C) or the process dies with another one (timely is
/// fail-stop).
pub fn run_process<A, F>(
    description: &Description,
    options: &ProcessOptions,
    app: F,
    control_out: impl FnOnce(Arc<Control>),
) -> Result<(), RunError>
where
    A: Application + 'static,
    F: Fn(u32) -> A + Send + Sync + 'static,
{
    let plan = plan(description, options)?;
    let me = &plan.processes[plan.index];
    // Bound now and kept: peers that dial early wait in its backlog (see `mesh`).
    let timely_listener = bind(&me.timely, "timely")?;
    let replicas = local_replicas(&plan.placement, plan.index);
    let sources: Vec<u32> = replicas.iter().filter(|(s, _)| *s == Stage::Source).map(|(_, r)| *r).collect();
    // Every process takes commands: those for request sources elsewhere go through its first
    // worker's ingress.
    let client_listener = bind(&me.clients, "clients")?;
    log_roles(&plan, &replicas);

    let control = plan.deployment.control.clone();
    control_out(control.clone());
    let forward_through = (plan.index * plan.placement.threads()) as u32;
    let ingress = Ingress::forwarding(Stage::Source.replicas(&plan.deployment.params), &[forward_through]);
    let mailboxes = Mailboxes::new();
    let params = plan.deployment.params.clone();
    let config = FrontEndConfig {
        sources,
        params,
        replicas,
        max_frame_bytes: plan.description.max_frame_bytes,
        forward_through: Some(forward_through),
        cluster: Some(cluster_info(&plan)),
        limits: plan.description.limits(),
    };
    let front_end = frontend::spawn(client_listener, ingress.clone(), mailboxes.clone(), control.clone(), config)
        .map_err(|e| RunError::Runtime(format!("cannot start the client front end on {}: {e}", me.clients)))?;
    tracing::info!("process {}: serving clients on {}", plan.index, front_end.addr);
    let addresses: Vec<String> = plan.processes.iter().map(|p| p.timely.clone()).collect();
    let timeout = Duration::from_millis(plan.description.connect_timeout_ms);
    let (builders, network) = mesh::connect(&addresses, plan.index, timely_listener, plan.placement.threads(), timeout)
        .map_err(|e| RunError::Runtime(e.0))?;
    tracing::info!("process {}: connected to the other {} processes", plan.index, addresses.len() - 1);
    let setup = Setup {
        deployment: plan.deployment,
        ingress,
        mailboxes,
        app: Arc::new(app),
        executed: None,
        aborted: Arc::new(AtomicBool::new(false)),
    };
    let guards = timely::execute::execute_from(
        builders,
        network,
        worker::worker_config(worker::PROCESS_IDLE_SPIN_US),
        move |worker| worker::run(worker, &setup),
    )
    .map_err(|e| RunError::Runtime(format!("cannot start timely: {e}")))?;
    drop(guards.join());
    control.stop();
    front_end.join();
    Ok(())
}

/// What the front ends tell clients about the cluster.
fn cluster_info(plan: &Plan) -> ClusterInfo {
    let d = &plan.description;
    ClusterInfo {
        f: d.f,
        partitions: plan.deployment.params.partitions,
        workers: plan.placement.threads(),
        batch_size: d.batch_size,
        window: d.window,
        checkpoint_interval: d.checkpoint_interval,
        client_window: d.client_window,
        retry_timeout_ms: d.retry_timeout_ms,
        front_ends: plan.processes.iter().map(|p| p.clients.clone()).collect(),
        direct: (0..plan.processes.len()).map(|process| direct_partitions(plan, process)).collect(),
    }
}

/// The partitions whose request sources run in `process`.
fn direct_partitions(plan: &Plan, process: usize) -> Vec<u32> {
    let params = &plan.deployment.params;
    let sources = local_replicas(&plan.placement, process).into_iter().filter(|(stage, _)| *stage == Stage::Source);
    let mut partitions: Vec<u32> = sources.map(|(_, r)| topology::locate(Stage::Source, r, params).0).collect();
    partitions.sort_unstable();
    partitions.dedup();
    partitions
}

fn log_roles(plan: &Plan, replicas: &[(Stage, u32)]) {
    tracing::info!(
        "process {} of {} (timely {}, clients {}), {} worker threads, state in {}",
        plan.index,
        plan.processes.len(),
        plan.processes[plan.index].timely,
        plan.processes[plan.index].clients,
        plan.placement.threads(),
        plan.deployment.state_path().map_or_else(|| "memory".into(), |d| d.display().to_string())
    );
    for (stage, replica) in replicas {
        tracing::info!(
            "process {}: {} {replica} on worker {}",
            plan.index,
            stage.name(),
            plan.placement.worker_of(*stage, *replica)
        );
    }
}
