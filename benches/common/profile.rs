//! Timely's own logging, summed over the workers of a closed-loop run while it records
//! (`TARA_PAPER_TIMELY_LOG=1` with `TARA_PAPER_PROFILE`): activations and busy time per
//! operator, batches and records per channel, progress messages, and how often workers park.
//! Divided by the commands completed, it says what each command costs where.

// Only the paper bench reads the totals; the other benches that include the closed loop install
// the (disabled) loggers only.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder, TimelyProgressEventBuilder};
use timely::worker::Worker;

use super::Stats;

/// What every worker logged while the run recorded.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Operator name -> (activations, busy time).
    pub operators: HashMap<String, (u64, Duration)>,
    /// "source -> target" -> (batches sent, records sent); a channel within a worker counts too.
    pub channels: HashMap<String, (u64, i64)>,
    /// Progress messages sent, and the updates they carried.
    pub progress: (u64, u64),
    /// Times a worker parked, and the time it spent parked.
    pub parks: (u64, Duration),
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: OnceLock<Mutex<Totals>> = OnceLock::new();

fn totals() -> &'static Mutex<Totals> {
    TOTALS.get_or_init(|| Mutex::new(Totals::default()))
}

/// Turns logging on for the runs that follow and clears what earlier runs logged.
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
    take();
}

/// What the runs since the last call logged.
pub fn take() -> Totals {
    std::mem::take(&mut *totals().lock().expect("profile totals"))
}

/// An operator's address and one of its ports.
type Port = (Vec<usize>, usize);

/// One worker's view: names of operators and channels, and operators started but not stopped.
#[derive(Default)]
struct Local {
    names: HashMap<Vec<usize>, String>,
    ids: HashMap<usize, String>,
    /// Channel id -> (source address and port, target address and port); operators are
    /// named only after their inputs connected, so names are looked up when messages flow.
    channels: HashMap<usize, (Port, Port)>,
    started: HashMap<usize, Duration>,
    parked: Option<Duration>,
}

/// Registers the loggers on `worker` (before it builds its dataflow) if [`enable`] was called.
pub fn install(worker: &mut Worker, stats: &Arc<Stats>) {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    let local = Rc::new(RefCell::new(Local::default()));
    let recording = stats.clone();
    let Some(mut registry) = worker.log_register() else { return };
    registry.insert::<TimelyEventBuilder, _>("timely", move |_, data| {
        let Some(data) = data else { return };
        let on = recording.recording.load(Ordering::Relaxed);
        let mut local = local.borrow_mut();
        let mut sum = totals().lock().expect("profile totals");
        for (time, event) in data.iter() {
            local.note(*time, event, on, &mut sum);
        }
    });
    let recording = stats.clone();
    registry.insert::<TimelyProgressEventBuilder<u64>, _>("timely/progress/u64", move |_, data| {
        let Some(data) = data else { return };
        if !recording.recording.load(Ordering::Relaxed) {
            return;
        }
        let mut sum = totals().lock().expect("profile totals");
        for (_, event) in data.iter().filter(|(_, e)| e.is_send) {
            sum.progress.0 += 1;
            sum.progress.1 += (event.messages.len() + event.internal.len()) as u64;
        }
    });
}

impl Local {
    fn channel_name(&self, id: usize) -> String {
        let Some(((from, out), (to, input))) = self.channels.get(&id) else { return format!("channel {id}") };
        let name = |addr: &Vec<usize>| self.names.get(addr).cloned().unwrap_or_else(|| format!("{addr:?}"));
        format!("{}.{out} -> {}.{input}", name(from), name(to))
    }

    fn note(&mut self, time: Duration, event: &TimelyEvent, on: bool, sum: &mut Totals) {
        match event {
            TimelyEvent::Operates(op) => {
                self.names.insert(op.addr.clone(), op.name.clone());
                self.ids.insert(op.id, op.name.clone());
            }
            TimelyEvent::Channels(ch) => {
                let end = |(index, port): (usize, usize)| {
                    let mut addr = ch.scope_addr.clone();
                    addr.push(index);
                    (addr, port)
                };
                self.channels.insert(ch.id, (end(ch.source), end(ch.target)));
            }
            TimelyEvent::Schedule(s) => match s.start_stop {
                StartStop::Start => drop(self.started.insert(s.id, time)),
                StartStop::Stop => {
                    let Some(start) = self.started.remove(&s.id) else { return };
                    if on {
                        let name = self.ids.get(&s.id).cloned().unwrap_or_else(|| format!("operator {}", s.id));
                        let entry = sum.operators.entry(name).or_default();
                        entry.0 += 1;
                        entry.1 += time.saturating_sub(start);
                    }
                }
            },
            TimelyEvent::Messages(m) if m.is_send && on => {
                let entry = sum.channels.entry(self.channel_name(m.channel)).or_default();
                entry.0 += 1;
                entry.1 += m.record_count;
            }
            TimelyEvent::Park(timely::logging::ParkEvent::Park(_)) => self.parked = Some(time),
            TimelyEvent::Park(timely::logging::ParkEvent::Unpark) => {
                if let (Some(at), true) = (self.parked.take(), on) {
                    sum.parks.0 += 1;
                    sum.parks.1 += time.saturating_sub(at);
                }
            }
            _ => {}
        }
    }
}

/// The totals per command, as a table: operators by busy time, then channels by records.
pub fn table(totals: &Totals, commands: f64, seconds: f64, workers: usize) -> String {
    let commands = commands.max(1.0);
    // The dataflow's own schedule encloses its operators': what is left is timely's scheduling
    // and progress tracking.
    let dataflow = totals.operators.get("Dataflow").map_or(Duration::ZERO, |(_, d)| *d);
    let mut ops: Vec<(String, u64, Duration)> =
        totals.operators.iter().filter(|(n, _)| *n != "Dataflow").map(|(n, (c, d))| (n.clone(), *c, *d)).collect();
    let busy: Duration = ops.iter().map(|(_, _, d)| *d).sum();
    let activations = totals.operators.get("Dataflow").map_or(0, |(c, _)| *c);
    ops.push(("(timely: scheduling, progress)".into(), activations, dataflow.saturating_sub(busy)));
    let busy = busy.max(dataflow);
    let wall = seconds * workers as f64;
    let mut out = format!(
        "operators: busy {:.1}% of {workers} workers' time ({:.2} us per command); parked {:.1}%, {:.3} parks per command\n",
        busy.as_secs_f64() / wall * 100.0,
        busy.as_secs_f64() * 1e6 / commands,
        totals.parks.1.as_secs_f64() / wall * 100.0,
        totals.parks.0 as f64 / commands
    );
    out.push_str("  operator                          activations/cmd   busy us/cmd   share of busy\n");
    ops.sort_by_key(|op| std::cmp::Reverse(op.2));
    for (name, count, time) in ops {
        out.push_str(&format!(
            "  {name:<33} {:>15.3} {:>13.2} {:>14.1}%\n",
            count as f64 / commands,
            time.as_secs_f64() * 1e6 / commands,
            time.as_secs_f64() / busy.as_secs_f64().max(1e-9) * 100.0
        ));
    }
    out.push_str("channels (sends within and across workers)\n");
    out.push_str("  channel                                                records/cmd   batches/cmd\n");
    let mut chans: Vec<_> = totals.channels.iter().filter(|(_, (_, r))| *r > 0).collect();
    chans.sort_by_key(|(_, (_, records))| std::cmp::Reverse(*records));
    let (mut records, mut batches) = (0.0, 0.0);
    for (name, (sends, count)) in chans {
        records += *count as f64 / commands;
        batches += *sends as f64 / commands;
        out.push_str(&format!("  {name:<54} {:>11.3} {:>13.3}\n", *count as f64 / commands, *sends as f64 / commands));
    }
    out.push_str(&format!("  {:<54} {records:>11.3} {batches:>13.3}\n", "all"));
    out.push_str(&format!(
        "progress: {:.3} messages and {:.3} updates per command\n",
        totals.progress.0 as f64 / commands,
        totals.progress.1 as f64 / commands
    ));
    out
}
