//! `tara graph`: the TARA dataflow of a description as Graphviz DOT.
//!
//! One node per stage (with its replica count, its partitions, and where each replica runs), one
//! node for the `Merge` operator that turns the partitions' commits into one execution order in
//! front of the executors (Section IV), one edge per tuple kind and receiving stage, derived from
//! the topology table (so it shows exactly what `tara()` builds), the feedback loops dashed and
//! named, and one box per process listing the replicas it hosts.
//!
//! ```
//! let d = tara::cluster::Description::embedded();
//! let dot = tara::cluster::graph::dot(&d).unwrap();
//! assert!(dot.starts_with("digraph tara {"));
//! assert!(dot.contains("\"committers\" -> \"Merge\" [label=\"Commit\"]"));
//! assert!(dot.contains("\"Merge\" -> \"executors\" [label=\"Commit (merged)\"]"));
//! assert!(!dot.contains("\"committers\" -> \"executors\""), "commits reach the executors through the Merge only");
//! assert!(dot.contains("\"executors\" -> \"proposers\" [label=\"Nack (repair loop)\", style=dashed]"));
//! ```

use std::fmt::Write;

use super::config::{ConfigError, Description};
use crate::dataflow::{Placement, Stage};
use crate::protocol::Params;
use crate::protocol::topology::{self, Kind, ROUTES, To};

/// The node of the `Merge` operator, named as the operator is in the dataflow (and in timely's
/// logs).
pub const MERGE: &str = "Merge";

/// The tuple kind that passes the Merge on its way into its receivers (`tara()` puts the Merge
/// in front of the executors' commit input, Section IV).
const MERGED: Kind = Kind::Commit;

/// One edge of the picture: (from, to, label, dashed).
type Edge = (&'static str, &'static str, String, bool);

/// Every edge, from the topology table: a tuple kind to each stage that receives it; commits
/// through the Merge.
fn edges() -> Vec<Edge> {
    let mut edges = Vec::new();
    for route in ROUTES.iter() {
        let from = route.from.map_or("clients", Stage::name);
        let plain = format!("{:?}", route.kind);
        // A receiver upstream of the sender closes a loop; commits also travel forward (through
        // the Merge, to the executors) and back (to the proposers, for `max_in_flight`).
        let label = |to: &Stage| match (route.loop_name(), route.from.is_some_and(|f| to.index() <= f.index())) {
            (Some(name), true) => (format!("{plain} ({name})"), true),
            _ => (plain.clone(), false),
        };
        if route.kind == MERGED {
            edges.push((from, MERGE, plain.clone(), false));
        }
        for to in route.to {
            let (label, dashed) = label(to);
            match route.kind {
                // Only the executors' commits pass the Merge; proposers take them directly.
                MERGED if *to == Stage::Executor => edges.push((MERGE, to.name(), format!("{label} (merged)"), dashed)),
                _ => edges.push((from, to.name(), label, dashed)),
            }
        }
        if route.to_clients {
            edges.push((from, "clients", format!("{:?}", route.kind), false));
        }
        if route.to_whom == To::Out {
            edges.push((from, "executed stream", format!("{:?}", route.kind), false));
        }
    }
    edges
}

/// The DOT text of the dataflow `description` describes (its processes, or one process).
pub fn dot(description: &Description) -> Result<String, ConfigError> {
    let params = description.params()?;
    let processes = if description.process.is_empty() { 1 } else { description.processes(None)?.len() };
    let placement = description.placement_in(&params, processes)?;
    let mut out = String::from("digraph tara {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    let partitions = match params.partitions {
        1 => String::new(),
        p => format!(", {p} partitions"),
    };
    let _ = writeln!(
        out,
        "  label=\"TARA, f = {}{partitions}, {} process(es) x {} worker(s)\";",
        params.f,
        processes,
        placement.threads()
    );
    let _ = writeln!(out, "  \"clients\" [shape=ellipse];\n  \"executed stream\" [shape=ellipse];");
    for stage in Stage::ALL {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", stage.name(), stage_label(&params, &placement, stage));
    }
    let _ = writeln!(out, "  \"{MERGE}\" [shape=trapezium, label=\"{}\"];", merge_label(&params, &placement));
    for (from, to, label, dashed) in edges() {
        let style = if dashed { ", style=dashed" } else { "" };
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{label}\"{style}];");
    }
    for process in 0..processes {
        let _ = writeln!(out, "  subgraph \"cluster_process_{process}\" {{");
        let _ = writeln!(out, "    label=\"process {process}\";");
        let label = process_label(&params, &placement, process);
        let _ = writeln!(out, "    \"process {process}\" [shape=note, label=\"{label}\"];");
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    Ok(out)
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

/// The replicas one process hosts, one line per worker.
fn process_label(params: &Params, placement: &Placement, process: usize) -> String {
    let threads = placement.threads();
    let lines: Vec<String> = (process * threads..(process + 1) * threads)
        .map(|worker| {
            let hosted: Vec<String> = Stage::ALL
                .into_iter()
                .flat_map(|stage| {
                    let replicas = placement.replicas_on(stage, worker).into_iter();
                    replicas.map(move |r| format!("{} {}", stage.name(), replica_name(params, stage, r)))
                })
                .collect();
            format!("worker {worker}: {}", if hosted.is_empty() { "idle".to_string() } else { hosted.join(", ") })
        })
        .collect();
    lines.join("\\l") + "\\l"
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
            dot.contains("\"committers\" -> \"proposers\" [label=\"Record (record loop)\", style=dashed]"),
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
                "  \"committers\" -> \"Merge\" [label=\"Commit\"];",
                "  \"Merge\" -> \"executors\" [label=\"Commit (merged)\"];"
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
        assert!(dot.contains("label=\"TARA, f = 1, 2 partitions, 3 process(es) x 1 worker(s)\""), "{dot}");
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
        assert!(dot.contains("\"committers\" -> \"Merge\" [label=\"Commit\"]"), "{dot}");
        assert!(dot.contains("\"Merge\" -> \"executors\" [label=\"Commit (merged)\"]"), "{dot}");
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
