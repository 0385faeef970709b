//! `tara graph`: the TARA dataflow of a description as Graphviz DOT.
//!
//! The request path runs top to bottom (`rankdir=TB`): clients, the processes' front ends,
//! request sources, proposers, committers, the `Merge` operator that turns the partitions'
//! commits into one execution order in front of the executors (Section IV), executors, and
//! below them the garbage-collection sources. Controllers sit beside the committers. Every
//! feedback loop runs against that direction, dashed, coloured and named (the GC, view, record,
//! repair (Nack), reply and state-transfer loops); the view goes to every stage it governs.
//! Each stage node lists where its replicas run, and each process is a box that holds its front
//! end (with its address) and its workers with the replicas they host; clients reach the
//! sources through those front ends. The edges come from the topology table, so the picture
//! shows exactly what `tara()` builds.
//!
//! ```
//! let d = tara::cluster::Description::embedded();
//! let dot = tara::cluster::graph::dot(&d).unwrap();
//! assert!(dot.starts_with("digraph tara {\n  rankdir=TB;"));
//! assert!(dot.contains("\"committers\" -> \"Merge\" [label=\"Commit\""));
//! assert!(dot.contains("\"Merge\" -> \"executors\" [label=\"Commit (merged)\""));
//! assert!(!dot.contains("\"committers\" -> \"executors\""), "commits reach the executors through the Merge only");
//! assert!(dot.contains("\"executors\" -> \"proposers\" [label=\"Nack (repair loop)\", style=dashed"));
//! ```

use std::fmt::Write;

use super::config::{ConfigError, Description, ProcessSpec};
use crate::dataflow::{Placement, Stage};
use crate::protocol::Params;
use crate::protocol::topology::{self, Kind, ROUTES, To};

/// The node of the `Merge` operator, named as the operator is in the dataflow (and in timely's
/// logs).
pub const MERGE: &str = "Merge";

/// The tuple kind that passes the Merge on its way into its receivers (`tara()` puts the Merge
/// in front of the executors' commit input, Section IV).
const MERGED: Kind = Kind::Commit;

/// How one edge is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Along the request path: solid, heavy, ranks its head below its tail.
    Path,
    /// Solid, but it does not rank its ends (reports to the controllers, replies to clients).
    Side,
    /// A feedback loop of this kind: dashed, coloured, does not rank its ends.
    Loop(Kind),
}

/// One edge of the picture: (from, to, label, style).
type Edge = (String, String, String, Style);

/// Every edge, from the topology table: a tuple kind to each stage that receives it; commits
/// through the Merge; commands from the clients through `front_ends` (node name, hosts a
/// request source) when there are any.
fn edges(front_ends: &[(String, bool)]) -> Vec<Edge> {
    let mut edges = Vec::new();
    let mut push = |from: &str, to: &str, label: String, style: Style| {
        edges.push((from.to_string(), to.to_string(), label, style));
    };
    for route in ROUTES.iter() {
        let from = route.from.map_or("clients", Stage::name);
        let plain = format!("{:?}", route.kind);
        let forward = match route.kind {
            Kind::Target | Kind::Actual => Style::Side,
            _ => Style::Path,
        };
        // A receiver upstream of the sender closes a loop; commits also travel forward (through
        // the Merge, to the executors) and back (to the proposers, for `max_in_flight`).
        let drawn = |to: &Stage| match (route.loop_name(), route.from.is_some_and(|f| to.index() <= f.index())) {
            (Some(name), true) => (format!("{plain} ({name})"), Style::Loop(route.kind)),
            _ => (plain.clone(), forward),
        };
        if route.kind == Kind::Command && !front_ends.is_empty() {
            for (front_end, hosts_source) in front_ends {
                push("clients", front_end, plain.clone(), forward);
                let how = if *hosts_source { plain.clone() } else { format!("{plain} (forwarded)") };
                push(front_end, Stage::Source.name(), how, forward);
            }
            continue;
        }
        if route.kind == MERGED {
            push(from, MERGE, plain.clone(), forward);
        }
        for to in route.to {
            let (label, style) = drawn(to);
            match route.kind {
                // Only the executors' commits pass the Merge; proposers take them directly.
                MERGED if *to == Stage::Executor => push(MERGE, to.name(), format!("{label} (merged)"), style),
                _ => push(from, to.name(), label, style),
            }
        }
        if route.to_clients {
            push(from, "clients", format!("{:?}", route.kind), Style::Side);
        }
        if route.to_whom == To::Out {
            push(from, "executed stream", format!("{:?}", route.kind), Style::Path);
        }
    }
    edges
}

/// The colour of each feedback loop, so that a loop can be followed across the picture.
fn loop_colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Stable => "darkgreen",
        Kind::View => "blue",
        Kind::Record => "darkorange",
        Kind::Nack => "red",
        Kind::Fetch | Kind::Transfer => "purple",
        _ => "gray40",
    }
}

/// The DOT attributes after the label.
fn attributes(style: Style) -> String {
    match style {
        Style::Path => ", weight=8".into(),
        Style::Side => ", constraint=false, color=gray40, fontcolor=gray40".into(),
        Style::Loop(kind) => {
            let colour = loop_colour(kind);
            format!(", style=dashed, constraint=false, color={colour}, fontcolor={colour}")
        }
    }
}

/// The DOT text of the dataflow `description` describes (its processes, or one process).
pub fn dot(description: &Description) -> Result<String, ConfigError> {
    let params = description.params()?;
    let processes = if description.process.is_empty() { Vec::new() } else { description.processes(None)? };
    let placement = description.placement_in(&params, processes.len().max(1))?;
    let mut out = String::from(
        "digraph tara {\n  rankdir=TB;\n  newrank=true;\n  labelloc=t;\n  \
         node [shape=box, fontname=\"monospace\"];\n  edge [fontname=\"monospace\", fontsize=10];\n",
    );
    let partitions = match params.partitions {
        1 => String::new(),
        p => format!(", {p} partitions"),
    };
    let _ = writeln!(
        out,
        "  label=\"TARA, f = {}{partitions}, {} process(es) x {} worker(s)\\n\
         solid: the request path, top to bottom; dashed: feedback loops\";",
        params.f,
        processes.len().max(1),
        placement.threads()
    );
    let _ = writeln!(out, "  \"clients\" [shape=ellipse];\n  \"executed stream\" [shape=ellipse];");
    for stage in Stage::ALL {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", stage.name(), stage_label(&params, &placement, stage));
    }
    let _ = writeln!(out, "  \"{MERGE}\" [shape=trapezium, label=\"{}\"];", merge_label(&params, &placement));
    let front_ends = write_processes(&mut out, &params, &placement, &processes);
    for (from, to, label, style) in edges(&front_ends) {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{label}\"{}];", attributes(style));
    }
    // Clients on top, then the processes, each front end beside its workers; controllers beside
    // the committers.
    out.push_str("  { rank=min; \"clients\"; }\n");
    let boxes: Vec<String> = (front_ends.iter().map(|(node, _)| node.clone()))
        .chain((0..placement.workers()).map(|w| format!("worker {w}")))
        .map(|node| format!("\"{node}\";"))
        .collect();
    let _ = writeln!(out, "  {{ rank=same; {} }}", boxes.join(" "));
    let _ = writeln!(out, "  {{ rank=same; \"{}\"; \"{}\"; }}", Stage::Committer.name(), Stage::Controller.name());
    out.push_str("}\n");
    Ok(out)
}

/// One box per process, holding its front end (for a multi-process description) and one node
/// per worker listing the replicas it hosts. Returns the front ends' node names, and whether
/// each process hosts a request source (a front end of one that does not forwards commands).
fn write_processes(
    out: &mut String,
    params: &Params,
    placement: &Placement,
    processes: &[ProcessSpec],
) -> Vec<(String, bool)> {
    let mut front_ends = Vec::new();
    for process in 0..processes.len().max(1) {
        let _ = writeln!(out, "  subgraph \"cluster_process_{process}\" {{");
        let _ = writeln!(out, "    style=rounded;");
        match processes.get(process) {
            Some(spec) => {
                let _ = writeln!(out, "    label=\"process {process}\\ntimely {}\";", spec.timely);
                let node = format!("front end {process}");
                let _ = writeln!(out, "    \"{node}\" [shape=cds, label=\"front end\\n{}\"];", spec.clients);
                let hosts_source = placement.stage(Stage::Source).iter().any(|w| placement.process_of(*w) == process);
                front_ends.push((node, hosts_source));
            }
            None => {
                let _ = writeln!(out, "    label=\"process 0 (embedded)\";");
            }
        }
        for (worker, label) in worker_labels(params, placement, process) {
            let _ = writeln!(out, "    \"worker {worker}\" [shape=note, label=\"{label}\"];");
        }
        out.push_str("  }\n");
    }
    front_ends
}

/// A replica as the picture names it: its index, or `p<partition>/<index in the partition>` for
/// a partitioned stage of a deployment with several partitions.
fn replica_name(params: &Params, stage: Stage, replica: u32) -> String {
    if params.partitions > 1 && stage.is_partitioned() {
        let (partition, local) = topology::locate(stage, replica, params);
        format!("p{partition}/{local}")
    } else {
        replica.to_string()
    }
}

/// `committers (3)`, `committers (6: 2 partitions x 3)` or `executors (3, shared by 2
/// partitions)`, and one line per replica: its worker and process.
fn stage_label(params: &Params, placement: &Placement, stage: Stage) -> String {
    let workers = placement.stage(stage);
    let mut label = match (params.partitions, stage.is_partitioned()) {
        (1, _) => format!("{} ({})", stage.name(), workers.len()),
        (p, true) => format!("{} ({}: {p} partitions x {})", stage.name(), workers.len(), stage.per_partition(params)),
        (p, false) => format!("{} ({}, shared by {p} partitions)", stage.name(), workers.len()),
    };
    for (replica, worker) in workers.iter().enumerate() {
        let name = replica_name(params, stage, replica as u32);
        let _ = write!(label, "\\n{name}: worker {worker}, process {}", placement.process_of(*worker));
    }
    label
}

/// The Merge: the rule it applies and the workers it runs on (those of the executors, where the
/// commits are renumbered).
fn merge_label(params: &Params, placement: &Placement) -> String {
    let rule = match params.partitions {
        1 => "1 partition: slot s executes as s".to_string(),
        p => format!("{p} partitions: slot s of partition i executes as s x {p} + i"),
    };
    let workers: Vec<String> =
        placement.workers_hosting(&[Stage::Executor]).iter().map(|w| format!("worker {w}")).collect();
    format!("{MERGE}\\n{rule}\\nat the executors: {}", workers.join(", "))
}

/// The workers of one process, each with a label that lists the replicas it hosts.
fn worker_labels(params: &Params, placement: &Placement, process: usize) -> Vec<(usize, String)> {
    let threads = placement.threads();
    (process * threads..(process + 1) * threads)
        .map(|worker| {
            let hosted: Vec<String> = Stage::ALL
                .into_iter()
                .flat_map(|stage| {
                    let replicas = placement.replicas_on(stage, worker).into_iter();
                    replicas.map(move |r| format!("{} {}", stage.name(), replica_name(params, stage, r)))
                })
                .collect();
            let hosted = if hosted.is_empty() { "idle".to_string() } else { hosted.join("\\l") };
            (worker, format!("worker {worker}\\l{hosted}\\l"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-process description with `extra` lines first.
    fn three_processes(extra: &str) -> Description {
        let text = format!(
            "{extra}\nf = 1\nworkers = 1\n[[process]]\ntimely = \"127.0.0.1:7000\"\nclients = \"127.0.0.1:7100\"\n\
             [[process]]\ntimely = \"127.0.0.1:7001\"\nclients = \"127.0.0.1:7101\"\n\
             [[process]]\ntimely = \"127.0.0.1:7002\"\nclients = \"127.0.0.1:7102\"\n"
        );
        Description::from_toml(&text).unwrap()
    }

    #[test]
    fn every_replica_and_loop_appears() {
        let dot = dot(&three_processes("")).unwrap();
        for process in 0..3 {
            assert!(dot.contains(&format!("cluster_process_{process}")), "{dot}");
        }
        assert!(
            dot.contains("committers (3)\\n0: worker 0, process 0\\n1: worker 1, process 1\\n2: worker 2, process 2"),
            "{dot}"
        );
        assert!(dot.contains("proposers (2)"), "{dot}");
        assert!(!dot.contains("p0/") && !dot.contains("shared by"), "one partition names no partition: {dot}");
        for tuple in
            ["Propose", "Commit", "Checkpoint", "Stable", "Target", "Actual", "Record", "Fetch", "Transfer", "Nack"]
        {
            assert!(dot.contains(&format!("label=\"{tuple}")), "{tuple} missing: {dot}");
        }
        assert!(
            dot.contains("\"committers\" -> \"proposers\" [label=\"Record (record loop)\", style=dashed,"),
            "{dot}"
        );
        for stage in ["sources", "proposers", "committers", "executors", "controllers"] {
            assert!(
                dot.contains(&format!("\"controllers\" -> \"{stage}\" [label=\"View (view loop)\"")),
                "{stage}: {dot}"
            );
        }
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }

    /// The picture reads top to bottom: clients first, every process a box that holds its front
    /// end (with its address) and its workers (with their replicas), clients reaching the
    /// sources through each front end, and every feedback loop dashed, named and kept out of
    /// the ranking, so that only the request path orders the picture.
    #[test]
    fn the_request_path_runs_down_and_processes_hold_their_replicas() {
        let description = three_processes("");
        let dot = dot(&description).unwrap();
        assert!(dot.starts_with("digraph tara {\n  rankdir=TB;"), "{dot}");
        assert!(dot.contains("  { rank=min; \"clients\"; }"), "{dot}");
        assert!(dot.contains("  { rank=same; \"committers\"; \"controllers\"; }"), "{dot}");
        // Each process box, from its opening line to its closing one.
        for (process, spec) in description.process.iter().enumerate() {
            let open = format!("  subgraph \"cluster_process_{process}\" {{\n");
            let body = &dot[dot.find(&open).expect("a box per process") + open.len()..];
            let body = &body[..body.find("\n  }\n").expect("the box closes")];
            assert!(body.contains(&format!("label=\"process {process}\\ntimely {}\"", spec.timely)), "{body}");
            let front_end = format!("\"front end {process}\" [shape=cds, label=\"front end\\n{}\"]", spec.clients);
            assert!(body.contains(&front_end), "{body}");
            assert!(body.contains(&format!("\"worker {process}\" [shape=note, label=\"worker {process}\\l")), "{body}");
            assert!(body.contains("committers ") && body.contains("executors "), "the replicas it hosts: {body}");
            assert!(dot.contains(&format!("\"clients\" -> \"front end {process}\" [label=\"Command\"")), "{dot}");
            assert!(dot.contains(&format!("\"front end {process}\" -> \"sources\" [label=\"Command")), "{dot}");
        }
        // Process 0 hosts no request source: its front end forwards.
        assert!(dot.contains("\"front end 0\" -> \"sources\" [label=\"Command (forwarded)\""), "{dot}");
        assert!(!dot.contains("\"clients\" -> \"sources\""), "clients reach the sources through front ends: {dot}");
        let edges: Vec<&str> = dot.lines().filter(|l| l.contains(" -> ")).collect();
        for name in ["GC loop", "view loop", "record loop", "repair loop", "reply loop", "state-transfer loop"] {
            assert!(edges.iter().any(|l| l.contains(&format!("({name})"))), "{name} is not labelled: {dot}");
        }
        assert!(edges.iter().any(|l| l.contains("\"executors\" -> \"proposers\" [label=\"Nack (repair loop)\"")));
        for edge in &edges {
            let looped = edge.contains("loop)");
            assert_eq!(edge.contains("style=dashed"), looped, "only loops are dashed: {edge}");
            assert!(!looped || edge.contains("constraint=false"), "a loop ranks nothing: {edge}");
        }
        for stage in Stage::ALL.into_iter().filter(|s| *s != Stage::Gc) {
            let view = format!("\"controllers\" -> \"{}\" [label=\"View (view loop)\"", stage.name());
            assert!(dot.contains(&view), "the view goes to every stage: {dot}");
        }
        // Every node an edge names is declared.
        for edge in &edges {
            let names: Vec<&str> = edge.split('"').collect();
            for name in [names[1], names[3]] {
                assert!(dot.contains(&format!("  \"{name}\" [")), "{name} is not declared: {dot}");
            }
        }
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }

    /// Commits go from the committers into the Merge and from the Merge into the executors, and
    /// nothing else touches the Merge.
    #[test]
    fn commits_pass_the_merge() {
        let dot = dot(&three_processes("")).unwrap();
        let touching: Vec<&str> =
            dot.lines().filter(|l| l.contains("\"Merge\" ->") || l.contains("-> \"Merge\"")).collect();
        assert_eq!(
            touching,
            [
                "  \"committers\" -> \"Merge\" [label=\"Commit\", weight=8];",
                "  \"Merge\" -> \"executors\" [label=\"Commit (merged)\", weight=8];"
            ],
            "{dot}"
        );
        assert!(!dot.contains("\"committers\" -> \"executors\""), "{dot}");
        assert!(dot.contains("\"Merge\" [shape=trapezium, label=\"Merge\\n1 partition"), "{dot}");
        assert!(dot.contains("at the executors: worker 0, worker 1, worker 2\"]"), "{dot}");
    }

    /// With two partitions every partitioned stage has twice the replicas, each named by its
    /// partition and its index within it; executors and GC sources are shared.
    #[test]
    fn two_partitions_show_which_replica_belongs_to_which_partition() {
        let dot = dot(&three_processes("partitions = 2")).unwrap();
        assert!(dot.contains("label=\"TARA, f = 1, 2 partitions, 3 process(es) x 1 worker(s)\\n"), "{dot}");
        let params = three_processes("partitions = 2").params().unwrap();
        let placement = three_processes("partitions = 2").placement_in(&params, 3).unwrap();
        for stage in Stage::ALL {
            let n = stage.per_partition(&params);
            let header = if stage.is_partitioned() {
                format!("\"{}\" [label=\"{} ({}: 2 partitions x {n})", stage.name(), stage.name(), 2 * n)
            } else {
                format!("\"{}\" [label=\"{} ({n}, shared by 2 partitions)", stage.name(), stage.name())
            };
            assert!(dot.contains(&header), "{stage:?}: {dot}");
            for (replica, worker) in placement.stage(stage).iter().enumerate() {
                let name = if stage.is_partitioned() {
                    format!("p{}/{}", replica / n, replica % n)
                } else {
                    replica.to_string()
                };
                let line = format!("\\n{name}: worker {worker}, process {}", placement.process_of(*worker));
                assert!(dot.contains(&line), "{stage:?} {replica}: {line} missing: {dot}");
            }
        }
        assert!(dot.contains("committers (6: 2 partitions x 3)\\np0/0: worker 0, process 0"), "{dot}");
        assert!(dot.contains("\\np1/0: worker "), "{dot}");
        assert!(dot.contains("slot s of partition i executes as s x 2 + i"), "{dot}");
        assert!(dot.contains("\"committers\" -> \"Merge\" [label=\"Commit\", weight=8]"), "{dot}");
        assert!(dot.contains("\"Merge\" -> \"executors\" [label=\"Commit (merged)\", weight=8]"), "{dot}");
        // The process boxes name replicas the same way.
        assert!(dot.contains("committers p0/0"), "{dot}");
        assert!(dot.contains("committers p1/2"), "{dot}");
        assert!(dot.contains("executors 0"), "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }

    /// The partitioned description files stay valid: the 3-process cluster with 2 partitions,
    /// and Figure 7's experiment for every partition count its bench sweeps.
    #[test]
    fn the_partitioned_description_files_are_valid() {
        let d = Description::from_toml(include_str!("../../dataflows/local-f1-p2.toml")).unwrap();
        assert_eq!((d.partitions, d.processes(None).unwrap().len()), (2, 3));
        assert!(dot(&d).unwrap().contains("2 partitions, 3 process(es) x 1 worker(s)"));
        let mut fig7 = Description::from_toml(include_str!("../../dataflows/fig7.toml")).unwrap();
        assert!(fig7.proposer_delay_us > 0 && fig7.process.is_empty(), "{fig7:?}");
        for partitions in [1, 2, 4, 8] {
            fig7.partitions = partitions;
            fig7.validate().unwrap();
        }
    }

    #[test]
    fn an_invalid_description_is_an_error() {
        let d = Description::from_toml("f = 1\nworkers = 0").unwrap();
        assert!(dot(&d).unwrap_err().to_string().contains("workers"));
    }
}
