//! tara over TCP: the three-process cluster of `dataflows/local-f1.toml` (coordination service,
//! durable records), started by the repository's release binary as `tara cluster` (built first if
//! it is missing), with the clients in one `ClientPool` over TCP driven from this thread.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tara::app::coordination::{CoordOp, CoordResponse, decode_result};
use tara::client::{Client, ClientOptions, tcp};
use tara::cluster::Description;

use crate::Measurement;
use crate::tara_side::{create_pool_znodes, drive, znode};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    repo.canonicalize().unwrap_or(repo)
}

/// The release `tara` binary, built if it is not there.
fn binary() -> Result<PathBuf, String> {
    let path = repo().join("target/release/tara");
    if !path.exists() {
        eprintln!("compare: building the tara binary (cargo build --release --bin tara)");
        let built = Command::new("cargo")
            .args(["build", "--release", "--bin", "tara"])
            .current_dir(repo())
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !built.success() {
            return Err("cargo build --release --bin tara failed".into());
        }
    }
    Ok(path)
}

/// A running `tara cluster`: stopped (Ctrl-C, then kill) when dropped; its state directory is
/// a temporary directory removed with it.
pub(crate) struct Running {
    pub(crate) child: Child,
    _state: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the cluster of `config` with its state in a fresh temporary directory.
pub(crate) fn start(config: &Path) -> Result<Running, String> {
    let state = tempfile::Builder::new().prefix("tara-compare-").tempdir().map_err(|e| e.to_string())?;
    let child = Command::new(binary()?)
        .args(["cluster", "--config"])
        .arg(config)
        .current_dir(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start tara cluster: {e}"))?;
    Ok(Running { child, _state: state })
}

/// A client that reaches every front end, once `/pool` could be created through it.
pub(crate) fn ready_client(addresses: &[String], options: &ClientOptions, within: Duration) -> Result<Client, String> {
    let until = Instant::now() + within;
    loop {
        let attempt = tcp::pool(addresses, options.clone()).map(Client::new).and_then(|mut client| {
            client.set_deadline(Duration::from_secs(2));
            let op = CoordOp::Exists { path: "/".into() };
            client.invoke(op.encode()).map(|_| client)
        });
        match attempt {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= until => {
                return Err(format!("the cluster did not serve within {within:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A fresh three-process cluster of `dataflows/local-f1.toml`, with a client that reached it.
pub(crate) struct Local {
    pub(crate) cluster: Running,
    pub(crate) description: Description,
    pub(crate) addresses: Vec<String>,
    pub(crate) options: ClientOptions,
    pub(crate) client: Client,
}

/// Starts the cluster of `dataflows/local-f1.toml` and waits until it serves.
pub(crate) fn local_cluster() -> Result<Local, String> {
    let config = repo().join("dataflows/local-f1.toml");
    let description = Description::from_file(&config).map_err(|e| e.to_string())?;
    let addresses = description.client_addresses().map_err(|e| e.to_string())?;
    let options = ClientOptions {
        client_window: description.client_window,
        retry_timeout: Duration::from_millis(description.retry_timeout_ms),
    };
    let cluster = start(&config)?;
    let client = ready_client(&addresses, &options, Duration::from_secs(30))?;
    Ok(Local { cluster, description, addresses, options, client })
}

/// Runs `clients` closed-loop clients over TCP against a fresh three-process cluster.
pub fn run(clients: usize, payload_bytes: usize, warmup: Duration, measured: Duration) -> Result<Measurement, String> {
    let Local { cluster: _cluster, description, addresses, options, mut client } = local_cluster()?;
    let pool_znodes = description.pool_znodes.max(1);
    create_pool_znodes(&mut client, pool_znodes, payload_bytes)?;
    drop(client);
    let pool = tcp::pool(&addresses, options).map_err(|e| e.to_string())?;
    let data = vec![7u8; payload_bytes];
    let op = |n: u64| CoordOp::SetData { path: znode(n as usize % pool_znodes), data: data.clone(), version: None };
    let is_set = |r: &[u8]| matches!(decode_result(r), Ok(Ok(CoordResponse::Set(_))));
    drive(pool, clients, warmup, measured, |n| op(n).encode(), is_set)
}
