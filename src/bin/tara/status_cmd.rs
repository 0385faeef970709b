//! `tara status`: one table of every replica of a running cluster, from the status frames of
//! its front ends.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use tara::client::tcp;
use tara::net::ReplicaStatus;

/// How long one front end may take to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Prints the table once, or with `watch` every `interval_ms` until interrupted. Ok(false) if a
/// front end did not answer.
pub fn run(connect: &str, watch: bool, interval_ms: u64) -> Result<bool, String> {
    let addrs: Vec<&str> = connect.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if addrs.is_empty() {
        return Err("`--connect`: name the front end of every process, host:port[,host:port...]".into());
    }
    loop {
        let (table, all_answered) = table(&addrs);
        if watch && std::io::stdout().is_terminal() {
            // Clear the screen and go home: the table stays in place.
            print!("\x1b[2J\x1b[H");
        }
        print!("{table}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        if !watch {
            return Ok(all_answered);
        }
        std::thread::sleep(Duration::from_millis(interval_ms.max(100)));
    }
}

/// One row per replica, process by process; lag is how far a replica's next sequence number is
/// behind the most advanced replica of its stage and partition (executors and proposers).
fn table(addrs: &[&str]) -> (String, bool) {
    let mut rows: Vec<(usize, ReplicaStatus)> = Vec::new();
    let mut failures = Vec::new();
    for (process, addr) in addrs.iter().enumerate() {
        match tcp::status(addr, TIMEOUT) {
            Ok(status) => rows.extend(status.into_iter().map(|s| (process, s))),
            Err(e) => failures.push(format!("process {process} ({addr}): unreachable: {e}")),
        }
    }
    let mut leader: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for (_, s) in &rows {
        let most = leader.entry((s.stage.clone(), s.partition)).or_default();
        *most = (*most).max(s.next);
    }
    let mut out = format!(
        "{:<8} {:<12} {:>7} {:>9} {:>6} {:>10} {:>10} {:>8} {:>10} {:>8} {:>5}\n",
        "process", "stage", "replica", "partition", "view", "next", "stable", "lag", "executed", "restarts", "state"
    );
    rows.sort_by(|(pa, a), (pb, b)| {
        (&a.stage, a.partition, a.replica, pa).cmp(&(&b.stage, b.partition, b.replica, pb))
    });
    for (process, s) in &rows {
        // `next` is a sequence number only for executors and proposers.
        let sequenced = s.stage == "executors" || s.stage == "proposers";
        let lag = match leader.get(&(s.stage.clone(), s.partition)) {
            Some(most) if sequenced => (most - s.next).to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<8} {:<12} {:>7} {:>9} {:>6} {:>10} {:>10} {:>8} {:>10} {:>8} {:>5}\n",
            process,
            s.stage,
            s.replica,
            s.partition,
            s.view,
            s.next,
            s.stable,
            lag,
            s.executed,
            s.restarts,
            if s.down { "down" } else { "up" }
        ));
    }
    let answered = failures.is_empty();
    for failure in failures {
        out.push_str(&failure);
        out.push('\n');
    }
    (out, answered)
}
