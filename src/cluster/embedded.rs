//! A whole TARA cluster inside one process, on timely worker threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use timely::CommunicationConfig;

use super::config::{ConfigError, Description};
use super::worker::{self, Setup};
use crate::app::Application;
use crate::client::{Client, ClientError, ClientOptions, ClientPool, Replies, Transport};
use crate::dataflow::{Control, Ingress, Mailboxes, Placement, ReplicaStats, Stage};
use crate::protocol::Command;
use crate::protocol::{Executed, Params};
use crate::storage::Disk;

/// What clients of an embedded cluster share.
struct Shared {
    ingress: Arc<Ingress>,
    mailboxes: Arc<Mailboxes>,
    control: Arc<Control>,
    params: Params,
    retry_timeout: Duration,
    next_client: AtomicU64,
}

/// Commands a pool may queue at the request sources before it wakes their worker, even without
/// waiting for an answer: a bound on how long a burst of submissions stays unseen. It also keeps
/// the pool and the worker working side by side: while the pool answers and resubmits a burst
/// of replies, the worker already orders the first 32 commands of it. Waking the worker only
/// once per burst let the whole load coalesce into one batch that the two threads passed back
/// and forth, each idle while the other worked (64 non-durable clients, interleaved: 0.86 to
/// 0.90 million ops/s with 64, 1.05 to 1.09 million with 32, 16 or 8; 256 clients 1.40 million
/// with 64, 1.44 to 1.47 with 32).
pub const QUEUED_COMMANDS_MAX: usize = 32;

/// Clients of an embedded cluster reach the request sources through the in-process ingress.
/// Commands are queued quietly and the sources' worker woken once per flush (when the pool is
/// about to wait for answers, or after [`QUEUED_COMMANDS_MAX`] commands), so that the commands
/// a pool submits together reach a request source together and are ordered as one batch.
struct EmbeddedTransport {
    shared: Arc<Shared>,
    /// Commands queued since the sources' worker was last woken.
    queued: usize,
}

impl Transport for EmbeddedTransport {
    fn routes(&self) -> u32 {
        self.shared.params.sources() as u32
    }

    fn new_client_id(&mut self) -> u64 {
        self.shared.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn register(&mut self, client: u64, mailbox: &Sender<Replies>) {
        self.shared.mailboxes.register(client, mailbox.clone());
    }

    fn unregister(&mut self, client: u64) {
        self.shared.mailboxes.unregister(client);
    }

    /// A route is one of the f+1 sources of the client's partition.
    fn submit(&mut self, route: u32, command: Command) -> Result<(), ClientError> {
        let source = crate::protocol::topology::source_of(command.client, route, &self.shared.params);
        self.shared.ingress.submit_quietly(source, command).map_err(|_| ClientError::Stopped)?;
        self.queued += 1;
        if self.queued >= QUEUED_COMMANDS_MAX {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if self.queued > 0 {
            self.queued = 0;
            self.shared.ingress.wake_queued().map_err(|_| ClientError::Stopped)?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.shared.control.stopped()
    }
}

/// A running embedded cluster. Dropping it stops it.
pub struct Cluster {
    shared: Arc<Shared>,
    placement: Placement,
    state_dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
    aborted: Arc<AtomicBool>,
    guards: Option<timely::communication::WorkerGuards<()>>,
}

/// Options of [`Cluster::start_with`].
#[derive(Default)]
pub struct Options {
    /// Receives every command executed by every executor replica.
    pub executed: Option<Sender<Executed>>,
    /// Where durable state lives (`committer-<k>/`, `executor-<e>/`, ... under it); by default
    /// a fresh temporary directory that is removed when the cluster stops.
    pub state_dir: Option<PathBuf>,
    /// The disk the state directory is on (by default the file system); tests inject faults
    /// with [`crate::storage::Faulty`].
    pub disk: Option<Arc<dyn Disk>>,
}

/// The executors' final state, collected when a cluster stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Per executor replica: (next sequence number, history chain, state digest).
    pub executors: Vec<(u64, u64, u64)>,
    /// True if a worker thread panicked.
    pub aborted: bool,
}

impl StopReport {
    /// True if every executor replica ended at the same position with the same state.
    pub fn digests_agree(&self) -> bool {
        self.executors.windows(2).all(|w| w[0] == w[1])
    }
}

impl Cluster {
    /// Starts a cluster described by `description`; `app` creates each executor's application.
    pub fn start<A, F>(description: &Description, app: F) -> Result<Cluster, ConfigError>
    where
        A: Application + 'static,
        F: Fn(u32) -> A + Send + Sync + 'static,
    {
        Self::start_with(description, app, Options::default())
    }

    /// [`Cluster::start`] with options.
    pub fn start_with<A, F>(description: &Description, app: F, options: Options) -> Result<Cluster, ConfigError>
    where
        A: Application + 'static,
        F: Fn(u32) -> A + Send + Sync + 'static,
    {
        let (params, _) = description.validate()?;
        let placement = description.placement_in(&params, 1)?;
        let (state_dir, temporary) = match options.state_dir {
            Some(dir) => (dir, None),
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("tara-state-")
                    .tempdir()
                    .map_err(|e| ConfigError(format!("cannot create a temporary state directory: {e}")))?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        let mut deployment = description
            .deployment(params.clone(), placement.clone(), state_dir.clone())
            .emit_executed(options.executed.is_some());
        if let Some(disk) = options.disk {
            deployment = deployment.disk(disk);
        }
        deployment.validate().map_err(ConfigError)?;
        let shared = Arc::new(Shared {
            ingress: Ingress::new(Stage::Source.replicas(&params)),
            mailboxes: Mailboxes::new(),
            control: deployment.control.clone(),
            params,
            retry_timeout: Duration::from_millis(description.retry_timeout_ms),
            next_client: AtomicU64::new(1),
        });
        let aborted = Arc::new(AtomicBool::new(false));
        let config = timely::Config {
            communication: CommunicationConfig::Process(description.workers),
            worker: worker::worker_config(worker::EMBEDDED_IDLE_SPIN_US),
        };
        let setup = Setup {
            deployment,
            ingress: shared.ingress.clone(),
            mailboxes: shared.mailboxes.clone(),
            app: Arc::new(app),
            executed: options.executed,
            aborted: aborted.clone(),
        };
        let guards = timely::execute(config, move |worker| worker::run(worker, &setup))
            .map_err(|e| ConfigError(format!("cannot start timely workers: {e}")))?;
        Ok(Cluster { shared, placement, state_dir, _temporary: temporary, aborted, guards: Some(guards) })
    }

    /// A new client with a unique id.
    pub fn client(&self) -> Client {
        Client::new(self.pool())
    }

    /// A pool of clients sharing one mailbox, for load generators.
    pub fn pool(&self) -> ClientPool {
        let options =
            ClientOptions { client_window: self.shared.params.client_window, retry_timeout: self.shared.retry_timeout };
        ClientPool::new(
            Box::new(EmbeddedTransport { shared: self.shared.clone(), queued: 0 }),
            options,
            crossbeam_channel::unbounded(),
        )
    }

    /// Counters of every replica, and the stop signal.
    pub fn control(&self) -> &Arc<Control> {
        &self.shared.control
    }

    /// The protocol parameters.
    pub fn params(&self) -> &Params {
        &self.shared.params
    }

    /// Where executors keep their checkpoints.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The placement of replicas on workers.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Waits until every executor replica has executed up to the same sequence number, which
    /// stays unchanged for a moment; false if that does not happen within `timeout`.
    pub fn quiesce(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = Vec::new();
        while std::time::Instant::now() < deadline {
            let next: Vec<u64> =
                self.control().stage_stats(Stage::Executor).map(|(_, s)| ReplicaStats::get(&s.next)).collect();
            if next.windows(2).all(|w| w[0] == w[1]) && next == last {
                return true;
            }
            last = next;
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the dataflow, waits for the workers, and reports the executors' final state.
    pub fn stop(mut self) -> StopReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> StopReport {
        self.shared.control.stop();
        if let Some(guards) = self.guards.take() {
            drop(guards.join());
        }
        let executors = self
            .control()
            .stage_stats(Stage::Executor)
            .map(|(_, s)| {
                (ReplicaStats::get(&s.next), ReplicaStats::get(&s.history), ReplicaStats::get(&s.state_digest))
            })
            .collect();
        StopReport { executors, aborted: self.aborted.load(Ordering::Acquire) }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.guards.is_some() {
            self.shutdown();
        }
    }
}
