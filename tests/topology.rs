//! The picture matches the dataflow: every channel between two stage operators, or between a
//! stage operator and the `Merge` in front of the executors, that `tara()` builds (read from
//! timely's own logging) is an edge of `tara graph`, every such channel that runs through a
//! feedback loop is drawn as a loop, and every edge the picture draws between those nodes exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tara::cluster::Description;
use tara::cluster::graph::MERGE;
use tara::dataflow::{Deployment, Submit, tara};
use tara::protocol::Stage;
use timely::dataflow::operators::Input;
use timely::logging::{TimelyEvent, TimelyEventBuilder};

/// (operator index, name) and (from operator, to operator) as timely logged them.
type Logged = (BTreeMap<usize, String>, Vec<(usize, usize)>);

fn build_and_log(description: &Description) -> Logged {
    let logged: Arc<Mutex<Logged>> = Arc::default();
    let sink = logged.clone();
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

/// A node of the picture that the dataflow has an operator for: a stage, or the Merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Stage(Stage),
    Merge,
}

impl Node {
    /// The node's name in `tara graph`.
    fn name(self) -> &'static str {
        match self {
            Node::Stage(stage) => stage.name(),
            Node::Merge => MERGE,
        }
    }

    /// Every node, as the picture names them.
    fn all() -> Vec<Node> {
        Stage::ALL.into_iter().map(Node::Stage).chain([Node::Merge]).collect()
    }
}

fn node_of(operator: &str) -> Option<Node> {
    Node::all().into_iter().find(|node| match node {
        Node::Stage(stage) => stage.operator() == operator,
        Node::Merge => operator == MERGE,
    })
}

/// Node-to-node connections: (from, to, through a feedback loop), following channels through
/// the operators in between (feedback, exchange and unwrapping operators).
fn node_edges((names, channels): &Logged) -> BTreeSet<(Node, Node, bool)> {
    let mut edges = BTreeSet::new();
    for (op, name) in names {
        let Some(from) = node_of(name) else { continue };
        let mut frontier: Vec<(usize, bool)> = vec![(*op, false)];
        let mut seen = BTreeSet::new();
        while let Some((at, looped)) = frontier.pop() {
            for (_, target) in channels.iter().filter(|(source, _)| *source == at) {
                let name = names.get(target).map(String::as_str).unwrap_or("");
                match node_of(name) {
                    Some(to) => drop(edges.insert((from, to, looped))),
                    None if seen.insert((*target, looped)) => frontier.push((*target, looped || name == "Feedback")),
                    None => {}
                }
            }
        }
    }
    edges
}

/// Checks the picture of `description` against the dataflow `tara()` builds for it.
fn check(description: &Description) {
    let logged = build_and_log(description);
    assert!(logged.0.values().any(|n| n == "Feedback"), "no feedback operator was logged: {:?}", logged.0);
    assert_eq!(logged.0.values().filter(|n| *n == MERGE).count(), 1, "one Merge operator: {:?}", logged.0);
    let edges = node_edges(&logged);
    let dot = tara::cluster::graph::dot(description).unwrap();
    let loops: Vec<&(Node, Node, bool)> = edges.iter().filter(|e| e.2).collect();
    assert!(loops.len() >= 8, "expected the reply, GC, view, record, state-transfer and repair loops: {loops:?}");
    // Commits run committers -> Merge -> executors, and only that way.
    let (committer, executor) = (Node::Stage(Stage::Committer), Node::Stage(Stage::Executor));
    let merge_edges: Vec<&(Node, Node, bool)> =
        edges.iter().filter(|e| e.0 == Node::Merge || e.1 == Node::Merge).collect();
    assert_eq!(merge_edges, [&(committer, Node::Merge, false), &(Node::Merge, executor, false)], "{edges:?}");
    assert!(!edges.iter().any(|e| (e.0, e.1) == (committer, executor)), "a channel bypasses the Merge: {edges:?}");
    for (from, to, looped) in &edges {
        let edge = format!("\"{}\" -> \"{}\" [label=", from.name(), to.name());
        let drawn: Vec<&str> = dot.lines().filter(|l| l.contains(&edge)).collect();
        assert!(!drawn.is_empty(), "the dataflow connects {from:?} to {to:?}, the graph does not:\n{dot}");
        if *looped {
            assert!(drawn.iter().any(|l| l.contains("loop)") && l.contains("dashed")), "{from:?} -> {to:?}: {drawn:?}");
        }
    }
    // The other way round: every edge of the picture between two such nodes exists in the
    // dataflow.
    let nodes: Vec<&str> = Node::all().into_iter().map(Node::name).collect();
    for line in dot.lines().filter(|l| l.contains(" -> ")) {
        let names: Vec<&str> = line.split('"').collect();
        let (from, to) = (names[1], names[3]);
        if nodes.contains(&from) && nodes.contains(&to) {
            let found = edges.iter().any(|(f, t, _)| f.name() == from && t.name() == to);
            assert!(found, "the graph draws {from} -> {to}, the dataflow has no such channel");
        }
    }
}

#[test]
fn the_graph_shows_every_channel_and_loop_that_tara_builds() {
    check(&Description::embedded());
}

/// The same with two partitions: more replicas, the same operators and channels.
#[test]
fn the_graph_of_two_partitions_shows_every_channel_and_loop_that_tara_builds() {
    let mut description = Description::embedded();
    description.partitions = 2;
    check(&description);
}
