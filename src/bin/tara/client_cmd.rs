//! `tara client`: one coordination-service operation against a running cluster over TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use tara::app::coordination::{CoordOp, CoordResponse, decode_result};
use tara::client::{Client, ClientError, ClientOptions, tcp};

/// A coordination-service operation.
#[derive(Subcommand, Debug)]
pub enum Op {
    /// Create a znode with DATA (with --sequential, a counter is appended to the name).
    Create {
        /// The path, e.g. /app/config.
        path: String,
        /// The initial data (UTF-8).
        data: String,
        /// Append the parent's 10-digit sequence counter to the name.
        #[arg(long)]
        sequential: bool,
        /// Tie the znode to this command's session and keep the command running: keep-alives
        /// hold the session; Ctrl-C or SIGTERM deletes the znode and exits. If the command dies
        /// otherwise (kill -9, lost network), the znode goes when its session expires, once
        /// `session_timeout` execution slots of other traffic passed since the last keep-alive.
        #[arg(long)]
        ephemeral: bool,
        /// With --ephemeral: milliseconds between two keep-alives.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        keep_alive_ms: u64,
    },
    /// Print a znode's data and stat.
    Get {
        /// The path.
        path: String,
    },
    /// Replace a znode's data (only at --version V if given).
    #[command(override_usage = "tara client --connect <ADDRS> set <PATH> <DATA> [--version <V>]")]
    Set {
        /// The path.
        path: String,
        /// The new data (UTF-8).
        data: String,
        /// The version the znode must be at.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete a znode without children (only at --version V if given).
    #[command(override_usage = "tara client --connect <ADDRS> delete <PATH> [--version <V>]")]
    Delete {
        /// The path.
        path: String,
        /// The version the znode must be at.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List a znode's children.
    Ls {
        /// The path.
        path: String,
    },
    /// Tell whether a znode exists: prints true or false and exits with 0 or 1, as `test` does.
    Exists {
        /// The path.
        path: String,
    },
}

impl Op {
    fn encode(self) -> CoordOp {
        match self {
            Op::Create { path, data, sequential, ephemeral: false, .. } => {
                CoordOp::Create { path, data: data.into_bytes(), sequential }
            }
            Op::Create { path, data, sequential, ephemeral: true, .. } => {
                CoordOp::CreateEphemeral { path, data: data.into_bytes(), sequential }
            }
            Op::Get { path } => CoordOp::GetData { path },
            Op::Set { path, data, version } => CoordOp::SetData { path, data: data.into_bytes(), version },
            Op::Delete { path, version } => CoordOp::Delete { path, version },
            Op::Ls { path } => CoordOp::GetChildren { path },
            Op::Exists { path } => CoordOp::Exists { path },
        }
    }
}

/// Runs `op` through the front ends in `connect` (comma-separated); prints the answer.
/// `Ok(false)` for an error answer of the service (printed on stderr).
pub fn run(connect: &str, timeout_ms: u64, op: Op) -> Result<bool, String> {
    let addresses: Vec<&str> = connect.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if addresses.is_empty() {
        return Err("--connect: give at least one front-end address, host:port[,host:port...]".into());
    }
    let options =
        ClientOptions { retry_timeout: Duration::from_millis((timeout_ms / 4).max(100)), ..Default::default() };
    let pool = tcp::pool(&addresses, options).map_err(|e| format!("--connect {connect}: {e}"))?;
    let mut client = Client::new(pool);
    client.set_deadline(Duration::from_millis(timeout_ms));
    let hold = match op {
        Op::Create { ephemeral: true, keep_alive_ms, .. } => Some(Duration::from_millis(keep_alive_ms)),
        _ => None,
    };
    // Installed before the create, so that a Ctrl-C right after it still deletes the znode.
    let interrupted = hold.map(|_| interrupt_flag()).transpose()?;
    let answer = client.invoke(op.encode().encode()).map_err(|e| unanswered(connect, timeout_ms, e))?;
    match decode_result(&answer)? {
        Ok(CoordResponse::Created { path }) if hold.is_some() => {
            println!("created {path}");
            let (every, interrupted) = (hold.unwrap_or_default(), interrupted.unwrap_or_default());
            hold_ephemeral(&mut client, &path, every, &interrupted).map_err(|e| unanswered(connect, timeout_ms, e))
        }
        Ok(response) => {
            // `exists` answers like `test`: exit 1 when the znode is absent, for scripts.
            let found = !matches!(response, CoordResponse::Exists(None));
            print_response(response);
            Ok(found)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(false)
        }
    }
}

fn unanswered(connect: &str, timeout_ms: u64, error: ClientError) -> String {
    match error {
        ClientError::Timeout => {
            format!("no answer from the cluster at {connect} within {timeout_ms} ms; is it running?")
        }
        ClientError::Refused(why) => format!("the cluster at {connect} refused the command: {why}"),
        other => format!("the cluster at {connect} did not answer: {other}"),
    }
}

/// A flag that Ctrl-C and SIGTERM raise.
fn interrupt_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    let raised = flag.clone();
    ctrlc::set_handler(move || raised.store(true, Ordering::Release))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(flag)
}

/// `create --ephemeral`: holds the session that owns `path` with a keep-alive `every` until
/// `interrupted`, then deletes `path` (at once, rather than a session timeout later).
/// `Ok(false)` if the session expired meanwhile: the cluster deleted `path` itself.
fn hold_ephemeral(
    client: &mut Client,
    path: &str,
    every: Duration,
    interrupted: &AtomicBool,
) -> Result<bool, ClientError> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!("holding {path} in client session {}: Ctrl-C deletes it and exits", client.id());
    let tick = Duration::from_millis(10).min(every);
    let mut last = Instant::now();
    while !interrupted.load(Ordering::Acquire) {
        std::thread::sleep(tick);
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        match client.keep_alive() {
            Ok(()) => {}
            Err(ClientError::SessionExpired) => {
                eprintln!("error: session expired: the cluster deleted {path}");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    let deleted = client.invoke(CoordOp::Delete { path: path.to_string(), version: None }.encode())?;
    match decode_result(&deleted) {
        Ok(Ok(_)) => println!("deleted {path}"),
        Ok(Err(error)) => eprintln!("error: {error}"),
        Err(error) => eprintln!("error: {error}"),
    }
    Ok(true)
}

fn print_response(response: CoordResponse) {
    match response {
        CoordResponse::Created { path } => println!("created {path}"),
        CoordResponse::Deleted => println!("deleted"),
        CoordResponse::Set(stat) => println!("version {}", stat.version),
        CoordResponse::Data { data, stat } => {
            println!("{}", String::from_utf8_lossy(&data));
            println!("version {}, {} children", stat.version, stat.num_children);
        }
        CoordResponse::Exists(Some(stat)) => {
            println!("true (version {}, {} children)", stat.version, stat.num_children)
        }
        CoordResponse::Exists(None) => println!("false"),
        CoordResponse::Children(children) => children.iter().for_each(|c| println!("{c}")),
    }
}
