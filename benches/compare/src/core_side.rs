//! The in-dataflow core: the same configuration as the embedded runs (the embedded description's
//! workers and protocol parameters, records not durable, executors' checkpoints in files of a
//! temporary state directory), with the closed-loop clients inside the dataflow (their replies
//! come back through a feedback loop), so no thread outside timely is involved. What the
//! embedded path costs on top of the core is the difference: the doors, nothing else.

use std::time::Duration;

use tara::cluster::Description;

use crate::Measurement;
use crate::tara_loop::{self, Counter, Ops, Shape};

/// Runs `clients` in-dataflow closed-loop clients writing 64 opaque bytes to the counter.
pub fn run(clients: usize, warmup: Duration, measured: Duration) -> Result<Measurement, String> {
    let description = match std::env::var_os("COMPARE_TARA_CONFIG") {
        Some(path) => Description::from_file(std::path::Path::new(&path)).map_err(|e| e.to_string())?,
        None => Description::embedded(),
    };
    let params = description.params().map_err(|e| e.to_string())?;
    let ids = (1..=clients as u64).collect();
    let state = tempfile::Builder::new().prefix("tara-compare-core-").tempdir().map_err(|e| e.to_string())?;
    let shape = Shape { workers: description.workers, state_dir: Some(state.path().to_path_buf()) };
    let m = tara_loop::run_on(shape, ids, params, Ops::Opaque, |_| Counter::default(), warmup, measured);
    let completed = (m.ops_per_second * measured.as_secs_f64()) as u64;
    Ok(Measurement { ops_per_s: m.ops_per_second, p50_us: m.p50_us, p99_us: m.p99_us, completed, retransmissions: 0 })
}
