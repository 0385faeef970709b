//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tara::cluster::{Cluster, Description};
use tara::dataflow::{ReplicaStats, Stage};
use tara::protocol::Executed;

/// Runs `f` on its own thread and fails the test if it takes longer than `seconds`: a hung
/// cluster must fail a test, not stall CI.
pub fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(seconds)) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the test body ended without a result"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {seconds} s"),
    }
}

/// The embedded f = 1 description with some keys replaced (TOML lines).
pub fn description(overrides: &str) -> Description {
    let mut text = tara::cluster::config::EMBEDDED_F1.to_string();
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap_or("").trim();
        text = text.lines().filter(|l| l.split('=').next().unwrap_or("").trim() != key).collect::<Vec<_>>().join("\n");
        text = format!("{line}\n{text}");
    }
    Description::from_toml(&text).expect("test description parses")
}

/// One counter of one replica.
pub fn stat(cluster: &Cluster, stage: Stage, replica: u32, get: impl Fn(&ReplicaStats) -> &AtomicU64) -> u64 {
    ReplicaStats::get(get(cluster.control().stats(stage, replica).expect("the replica exists")))
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// Every executor replica executed the same command at every position it executed itself (a
/// request committed in view v keeps its position in every later view; with partitions, every
/// executor executes the same merged sequence). Returns the number of positions.
pub fn positions_agree(executed: &Receiver<Executed>) -> Result<usize, String> {
    let mut decided: BTreeMap<(u64, u32), (u64, u64, u32)> = BTreeMap::new();
    for x in executed.try_iter() {
        let entry = (x.command.client, x.command.timestamp, x.executor);
        match decided.get(&(x.sequence, x.index)) {
            Some(first) if (first.0, first.1) != (entry.0, entry.1) => {
                return Err(format!(
                    "position {:?}: executor {} executed {:?}, executor {} executed {:?}",
                    (x.sequence, x.index),
                    first.2,
                    (first.0, first.1),
                    entry.2,
                    (entry.0, entry.1)
                ));
            }
            Some(_) => {}
            None => drop(decided.insert((x.sequence, x.index), entry)),
        }
    }
    Ok(decided.len())
}
