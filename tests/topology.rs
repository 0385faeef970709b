//! The picture matches the dataflow: every channel between two stage operators that `tara()`
//! builds (read from timely's own logging) is an edge of `tara graph`, and every such channel
//! that runs through a feedback loop is drawn as a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tara::cluster::Description;
use tara::dataflow::{Deployment, Submit, tara};
use tara::protocol::Stage;
use timely::dataflow::operators::Input;
use timely::logging::{TimelyEvent, TimelyEventBuilder};

/// (operator index, name) and (from operator, to operator) as timely logged them.
type Logged = (BTreeMap<usize, String>, Vec<(usize, usize)>);

fn build_and_log() -> Logged {
    let logged: Arc<Mutex<Logged>> = Arc::default();
    let sink = logged.clone();
    let description = Description::embedded();
    let (params, _) = description.validate().unwrap();
    let placement = description.placement_in(&params, 1).unwrap();
    let deployment = Deployment::new(params, placement).durable_records(false);
    timely::execute_directly(move |worker| {
        let sink = sink.clone();
        worker.log_register().unwrap().insert::<TimelyEventBuilder, _>("timely", move |_, data| {
            for (_, event) in data.iter().flatten() {
                let mut logged = sink.lock().unwrap();
                match event {
                    TimelyEvent::Operates(op) if op.addr.len() == 2 => {
                        drop(logged.0.insert(op.addr[1], op.name.clone()))
                    }
                    TimelyEvent::Channels(ch) if ch.scope_addr.len() == 1 => logged.1.push((ch.source.0, ch.target.0)),
                    _ => {}
                }
            }
        });
        worker.dataflow::<u64, _, _>(|scope| {
            let (_input, submissions) = scope.new_input::<Vec<Submit>>();
            tara(scope, submissions, &deployment, |_| tara::app::kv::KvStore::default()).unwrap();
        });
        deployment.control.stop();
    });
    logged.lock().unwrap().clone()
}

fn stage_of(operator: &str) -> Option<Stage> {
    Stage::ALL.into_iter().find(|stage| stage.operator() == operator)
}

/// Stage-to-stage connections: (from, to, through a feedback loop), following channels through
/// the operators in between (feedback, exchange and unwrapping operators).
fn stage_edges((names, channels): &Logged) -> BTreeSet<(Stage, Stage, bool)> {
    let mut edges = BTreeSet::new();
    for (op, name) in names {
        let Some(from) = stage_of(name) else { continue };
        let mut frontier: Vec<(usize, bool)> = vec![(*op, false)];
        let mut seen = BTreeSet::new();
        while let Some((at, looped)) = frontier.pop() {
            for (_, target) in channels.iter().filter(|(source, _)| *source == at) {
                let name = names.get(target).map(String::as_str).unwrap_or("");
                match stage_of(name) {
                    Some(to) => drop(edges.insert((from, to, looped))),
                    None if seen.insert((*target, looped)) => frontier.push((*target, looped || name == "Feedback")),
                    None => {}
                }
            }
        }
    }
    edges
}

#[test]
fn the_graph_shows_every_channel_and_loop_that_tara_builds() {
    let logged = build_and_log();
    assert!(logged.0.values().any(|n| n == "Feedback"), "no feedback operator was logged: {:?}", logged.0);
    let edges = stage_edges(&logged);
    let dot = tara::cluster::graph::dot(&Description::embedded()).unwrap();
    let loops: Vec<&(Stage, Stage, bool)> = edges.iter().filter(|e| e.2).collect();
    assert!(loops.len() >= 8, "expected the reply, GC, view, record, state-transfer and repair loops: {loops:?}");
    for (from, to, looped) in &edges {
        let edge = format!("\"{}\" -> \"{}\" [label=", from.name(), to.name());
        let drawn: Vec<&str> = dot.lines().filter(|l| l.contains(&edge)).collect();
        assert!(!drawn.is_empty(), "the dataflow connects {from:?} to {to:?}, the graph does not:\n{dot}");
        if *looped {
            assert!(drawn.iter().any(|l| l.contains("loop)") && l.contains("dashed")), "{from:?} -> {to:?}: {drawn:?}");
        }
    }
    // The other way round: every stage-to-stage edge of the picture exists in the dataflow.
    let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    for line in dot.lines().filter(|l| l.contains(" -> ")) {
        let names: Vec<&str> = line.split('"').collect();
        let (from, to) = (names[1], names[3]);
        if stages.contains(&from) && stages.contains(&to) {
            let found = edges.iter().any(|(f, t, _)| f.name() == from && t.name() == to);
            assert!(found, "the graph draws {from} -> {to}, the dataflow has no such channel");
        }
    }
}
