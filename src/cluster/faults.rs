//! Scheduled replica crashes and restarts: from a description file's `[[fault]]` list, from the
//! command line (`--fault proposers:0@2000+3000`), or from code.
//!
//! ```
//! use tara::cluster::faults::Fault;
//! use tara::dataflow::Stage;
//!
//! let fault: Fault = "proposers:0@2000+3000".parse().unwrap();
//! assert_eq!(fault, Fault { stage: Stage::Proposer, replica: 0, crash_at_ms: 2000, restart_after_ms: Some(3000) });
//! assert!("proposers:x@1".parse::<Fault>().unwrap_err().contains("replica"));
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataflow::{Control, Stage};
use crate::protocol::Params;

/// One crash (and optional restart) of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The stage of the replica.
    pub stage: Stage,
    /// The replica index within its stage.
    pub replica: u32,
    /// When it crashes, in milliseconds from the start of the workload.
    pub crash_at_ms: u64,
    /// How long it stays down before it restarts with its durable state; never if `None`.
    pub restart_after_ms: Option<u64>,
}

/// `[[fault]]` in a description file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The stage: sources, proposers, committers, executors, gc or controllers.
    pub stage: String,
    /// The replica index within its stage.
    pub replica: u32,
    /// When it crashes, in milliseconds from the start of the workload.
    pub crash_at_ms: u64,
    /// How long it stays down before it restarts (absent: it stays down).
    pub restart_after_ms: Option<u64>,
}

/// Parses a stage name as in description files (singular or plural).
pub fn parse_stage(name: &str) -> Result<Stage, String> {
    let name = name.trim().to_ascii_lowercase();
    Stage::ALL.into_iter().find(|s| s.name() == name || s.name().trim_end_matches('s') == name).ok_or_else(|| {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        format!("unknown stage {name:?}; use one of {}", names.join(", "))
    })
}

impl FaultSpec {
    /// Checks the spec against the deployment's replica counts.
    pub fn resolve(&self, params: &Params) -> Result<Fault, String> {
        let stage = parse_stage(&self.stage)?;
        let replicas = stage.replicas(params);
        if self.replica as usize >= replicas {
            return Err(format!(
                "[[fault]] {} replica {}: the stage has {replicas} replicas (0 to {}) with f = {}",
                stage.name(),
                self.replica,
                replicas - 1,
                params.f
            ));
        }
        Ok(Fault {
            stage,
            replica: self.replica,
            crash_at_ms: self.crash_at_ms,
            restart_after_ms: self.restart_after_ms,
        })
    }
}

impl FromStr for Fault {
    type Err = String;

    /// `STAGE:REPLICA@CRASH_MS[+RESTART_AFTER_MS]`, e.g. `proposers:0@2000+3000`.
    fn from_str(text: &str) -> Result<Fault, String> {
        let usage = "use STAGE:REPLICA@CRASH_MS[+RESTART_AFTER_MS], e.g. proposers:0@2000+3000";
        let (stage, rest) = text.split_once(':').ok_or_else(|| format!("fault {text:?}: {usage}"))?;
        let (replica, times) = rest.split_once('@').ok_or_else(|| format!("fault {text:?}: {usage}"))?;
        let replica = replica.parse().map_err(|_| format!("fault {text:?}: the replica must be a number; {usage}"))?;
        let (crash, restart) = match times.split_once('+') {
            Some((crash, restart)) => (crash, Some(restart)),
            None => (times, None),
        };
        let number =
            |t: &str| t.parse::<u64>().map_err(|_| format!("fault {text:?}: {t:?} is not milliseconds; {usage}"));
        Ok(Fault {
            stage: parse_stage(stage)?,
            replica,
            crash_at_ms: number(crash)?,
            restart_after_ms: restart.map(number).transpose()?,
        })
    }
}

/// Applies `faults` to a running dataflow on a thread of its own, with times measured from now;
/// the thread ends after the last event or when the dataflow stops.
pub fn schedule(control: Arc<Control>, faults: Vec<Fault>) -> std::thread::JoinHandle<()> {
    let start = Instant::now();
    let mut events: Vec<(u64, bool, Stage, u32)> = Vec::new();
    for f in &faults {
        events.push((f.crash_at_ms, true, f.stage, f.replica));
        if let Some(after) = f.restart_after_ms {
            events.push((f.crash_at_ms + after, false, f.stage, f.replica));
        }
    }
    events.sort_by_key(|e| e.0);
    std::thread::spawn(move || {
        for (at_ms, crash, stage, replica) in events {
            while start.elapsed() < Duration::from_millis(at_ms) {
                if control.stopped() {
                    return;
                }
                std::thread::sleep(
                    Duration::from_millis(at_ms).saturating_sub(start.elapsed()).min(Duration::from_millis(20)),
                );
            }
            let (verb, result) = if crash {
                ("crash", control.crash(stage, replica))
            } else {
                ("restart", control.restart(stage, replica))
            };
            match result {
                Ok(()) => tracing::info!("fault: {verb} {} {replica} at {at_ms} ms", stage.name()),
                Err(e) => tracing::error!("fault: cannot {verb} {} {replica}: {e}", stage.name()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("executor:2@10".parse::<Fault>().unwrap().restart_after_ms, None);
        for bad in ["proposers", "proposers:0", "wizards:0@1", "proposers:0@soon", "proposers:0@1+later"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        let spec = FaultSpec { stage: "committers".into(), replica: 3, crash_at_ms: 0, restart_after_ms: None };
        let err = spec.resolve(&Params::default()).unwrap_err();
        assert!(err.contains("has 3 replicas"), "{err}");
    }
}
