//! The multi-process commands: `tara run` (one process), `tara cluster` (a supervised local
//! cluster) and `tara graph` (the dataflow as DOT).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tara::app::coordination::{CoordOp, Coordination};
use tara::cluster::Description;
use tara::cluster::process::{ProcessOptions, RunError, exit, run_process};
use tara::cluster::supervisor::{SupervisorOptions, supervise};

/// What the health probe runs: a read through the whole consensus path.
pub fn probe_op() -> Vec<u8> {
    CoordOp::Exists { path: "/".into() }.encode()
}

/// `tara run`: one process of the cluster, until Ctrl-C or SIGTERM (or until a peer dies:
/// timely is fail-stop). A replica that refuses to start on damaged durable state ends the
/// process with [`exit::DAMAGED_STATE`].
pub fn run(description: &Description, options: &ProcessOptions) -> Result<bool, RunError> {
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        if text.contains("timely communication error") {
            eprintln!("tara run: lost the connection to a peer process; stopping (timely is fail-stop): {text}");
        } else {
            eprintln!("tara run: {text}");
        }
    }));
    run_process(
        description,
        options,
        |_| Coordination::default(),
        |control| {
            let failures = control.failure_events();
            std::thread::spawn(move || {
                while let Ok(failure) = failures.recv() {
                    if failure.at_start {
                        eprintln!("tara run: {failure}");
                        std::process::exit(exit::DAMAGED_STATE.into());
                    }
                }
            });
            let handler = ctrlc::set_handler(move || {
                control.stop();
                // Peers that are gone already cannot finish the dataflow with us: do not wait long.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_secs(3));
                    std::process::exit(0);
                });
            });
            if let Err(e) = handler {
                tracing::warn!("cannot install the Ctrl-C handler: {e}");
            }
        },
    )?;
    Ok(true)
}

/// `tara cluster`: every process of the description on this host, restarted as a whole when
/// one dies or the cluster stops answering, until Ctrl-C.
pub fn cluster(description: &Description, config: &Path, fresh: bool) -> Result<bool, String> {
    if fresh {
        let dir = description.process_state_dir();
        let removed = tara::storage::remove_state_dir(&dir)?;
        tara::cluster::supervisor::say(&format!("--fresh: removed {} ({removed} replica directories)", dir.display()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Release))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let options = supervisor_options(config)?;
    let restarts = supervise(description, &options, stop).map_err(|e| e.to_string())?;
    tara::cluster::supervisor::say(&format!("stopped after {restarts} restarts"));
    Ok(true)
}

/// How the supervisor starts this same executable for each process.
pub fn supervisor_options(config: &Path) -> Result<SupervisorOptions, String> {
    let program = std::env::current_exe().map_err(|e| format!("cannot find the tara executable: {e}"))?;
    let pids = Arc::default();
    Ok(SupervisorOptions { program, config: PathBuf::from(config), probe: probe_op(), max_restarts: None, pids })
}

/// `tara graph`: prints the dataflow as Graphviz DOT.
pub fn graph(description: &Description) -> Result<bool, String> {
    print!("{}", tara::cluster::graph::dot(description).map_err(|e| e.to_string())?);
    Ok(true)
}
