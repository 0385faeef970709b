//! `tara client`: one coordination-service operation against a running cluster over TCP.

use std::time::Duration;

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
            Op::Create { path, data, sequential } => CoordOp::Create { path, data: data.into_bytes(), sequential },
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
    let answer = client.invoke(op.encode().encode()).map_err(|e| match e {
        ClientError::Timeout => {
            format!("no answer from the cluster at {connect} within {timeout_ms} ms; is it running?")
        }
        ClientError::Refused(why) => format!("the cluster at {connect} refused the command: {why}"),
        other => format!("the cluster at {connect} did not answer: {other}"),
    })?;
    match decode_result(&answer)? {
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
