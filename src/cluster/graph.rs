//! `tara graph`: the TARA dataflow of a description as Graphviz DOT.
//!
//! One node per stage (with its replica count and where each replica runs), one edge per tuple
//! kind and receiving stage, derived from the topology table (so it shows exactly what `tara()`
//! builds), the feedback loops dashed and named, and one box per process listing the replicas
//! it hosts.
//!
//! ```
//! let d = tara::cluster::Description::embedded();
//! let dot = tara::cluster::graph::dot(&d).unwrap();
//! assert!(dot.starts_with("digraph tara {"));
//! assert!(dot.contains("\"committers\" -> \"executors\" [label=\"Commit\"]"));
//! assert!(dot.contains("\"executors\" -> \"proposers\" [label=\"Nack (repair loop)\", style=dashed]"));
//! ```

use std::fmt::Write;

use super::config::{ConfigError, Description};
use crate::dataflow::{Placement, Stage};
use crate::protocol::topology::{ROUTES, To};

/// One edge of the picture: (from, to, label, dashed).
type Edge = (&'static str, &'static str, String, bool);

/// Every edge, from the topology table: a tuple kind to each stage that receives it.
fn edges() -> Vec<Edge> {
    let mut edges = Vec::new();
    for route in ROUTES.iter() {
        let from = route.from.map_or("clients", Stage::name);
        let label = match route.loop_name() {
            Some(name) => format!("{:?} ({name})", route.kind),
            None => format!("{:?}", route.kind),
        };
        for to in route.to {
            edges.push((from, to.name(), label.clone(), route.is_loop()));
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
    let _ = writeln!(
        out,
        "  label=\"TARA, f = {}, {} process(es) x {} worker(s)\";",
        params.f,
        processes,
        placement.threads()
    );
    let _ = writeln!(out, "  \"clients\" [shape=ellipse];\n  \"executed stream\" [shape=ellipse];");
    for stage in Stage::ALL {
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", stage.name(), stage_label(&placement, stage));
    }
    for (from, to, label, dashed) in edges() {
        let style = if dashed { ", style=dashed" } else { "" };
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{label}\"{style}];");
    }
    for process in 0..processes {
        let _ = writeln!(out, "  subgraph \"cluster_process_{process}\" {{");
        let _ = writeln!(out, "    label=\"process {process}\";");
        let _ =
            writeln!(out, "    \"process {process}\" [shape=note, label=\"{}\"];", process_label(&placement, process));
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    Ok(out)
}

/// `committers (3)` and one line per replica: its worker and process.
fn stage_label(placement: &Placement, stage: Stage) -> String {
    let workers = placement.stage(stage);
    let mut label = format!("{} ({})", stage.name(), workers.len());
    for (replica, worker) in workers.iter().enumerate() {
        let _ = write!(label, "\\n{replica}: worker {worker}, process {}", placement.process_of(*worker));
    }
    label
}

/// The replicas one process hosts, one line per worker.
fn process_label(placement: &Placement, process: usize) -> String {
    let threads = placement.threads();
    let lines: Vec<String> = (process * threads..(process + 1) * threads)
        .map(|worker| {
            let hosted: Vec<String> = Stage::ALL
                .into_iter()
                .flat_map(|stage| {
                    placement.replicas_on(stage, worker).into_iter().map(move |r| format!("{} {r}", stage.name()))
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

    #[test]
    fn every_replica_and_loop_appears() {
        let text = "f = 1\nworkers = 1\n[[process]]\ntimely = \"127.0.0.1:7000\"\nclients = \"127.0.0.1:7100\"\n\
                    [[process]]\ntimely = \"127.0.0.1:7001\"\nclients = \"127.0.0.1:7101\"\n\
                    [[process]]\ntimely = \"127.0.0.1:7002\"\nclients = \"127.0.0.1:7102\"\n";
        let d = Description::from_toml(text).unwrap();
        let dot = dot(&d).unwrap();
        for process in 0..3 {
            assert!(dot.contains(&format!("cluster_process_{process}")), "{dot}");
        }
        assert!(
            dot.contains("committers (3)\\n0: worker 0, process 0\\n1: worker 1, process 1\\n2: worker 2, process 2"),
            "{dot}"
        );
        assert!(dot.contains("proposers (2)"), "{dot}");
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

    #[test]
    fn an_invalid_description_is_an_error() {
        let d = Description::from_toml("f = 1\nworkers = 2").unwrap();
        assert!(dot(&d).unwrap_err().to_string().contains("workers"));
    }
}
