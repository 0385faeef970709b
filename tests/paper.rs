//! The evaluation harness of `cargo bench --bench paper` in smoke mode (a fraction of a second
//! per point, one round, no openraft: its build takes minutes), into a temporary folder: every
//! system of every figure produced a point and every file was written. No speed is asserted.

#[allow(dead_code)]
#[path = "../benches/common/bare.rs"]
mod bare;
#[allow(dead_code)]
#[path = "../benches/common/closed_loop.rs"]
mod closed_loop;
#[allow(dead_code)]
#[path = "../benches/common/paper.rs"]
mod paper;
#[allow(dead_code)]
#[path = "../benches/common/supervised.rs"]
mod supervised;
#[allow(dead_code)]
#[path = "../benches/common/table_one.rs"]
mod table_one;
#[allow(dead_code)]
#[path = "../benches/common/tara_loop.rs"]
mod tara_loop;

use std::path::Path;

#[test]
fn the_smoke_run_measures_every_system_and_writes_every_file() {
    let out = tempfile::tempdir().unwrap();
    let settings = paper::Settings::smoke(out.path().to_path_buf());
    let report = paper::run(Path::new(env!("CARGO_MANIFEST_DIR")), &settings).unwrap();
    for (figure, points) in [(5, &report.fig5), (6, &report.fig6)] {
        for system in paper::figure_systems(figure, false) {
            for &clients in &settings.clients {
                let point = points.iter().find(|p| p.system == system.label() && p.clients == clients);
                let point =
                    point.unwrap_or_else(|| panic!("Figure {figure}: no point for {} at {clients}", system.label()));
                assert!(point.ops_per_second > 0.0, "Figure {figure}: {point:?} answered nothing");
            }
        }
    }
    for p in &settings.partitions {
        assert!(
            report.fig7.iter().any(|x| x.system == format!("P = {p}") && x.ops_per_second > 0.0),
            "Figure 7, P = {p}"
        );
    }
    assert_eq!(report.fig8_recoveries.as_array().map(Vec::len), Some(2), "two crashes: {}", report.fig8_recoveries);
    assert_eq!(report.kill9_recoveries.len(), 1);
    assert!(report.kill9_recoveries[0].2.is_some(), "the cluster answered again after kill -9");
    let mut expected: Vec<String> =
        ["fig5", "fig6", "fig7"].iter().flat_map(|s| ["csv", "json", "svg"].map(|e| format!("{s}.{e}"))).collect();
    expected.extend(
        ["fig8-throughput.csv", "fig8-throughput.svg", "kill-9.csv", "kill-9-recovery.csv", "kill-9.svg"]
            .map(String::from),
    );
    expected.extend(["table1.md", "table1.csv", "summary.json"].map(String::from));
    for name in &expected {
        let path = out.path().join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "{name} was not written");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert!(summary["ratios"]["pipelined_over_sequential_non_batched_at_saturation"].is_number(), "{summary}");
    let svg = std::fs::read_to_string(out.path().join("fig5.svg")).unwrap();
    for system in paper::figure_systems(5, false) {
        assert!(svg.contains(&system.label()), "the legend names {}", system.label());
    }
}
