//! The paper's evaluation with one command: `cargo bench --bench paper`. Figures 5 and 6
//! (tara pipelined, the sequential baseline, openraft and the bare timely limit; batch sizes 1,
//! 5, 16, 64 and adaptive), Figure 7 (partitions, throttled proposer), Figure 8 (two proposer
//! crashes), recovery after kill -9 over TCP, and Table I, into `papers/evaluation/` as CSV,
//! JSON and SVG, with `summary.json` holding the ratios. About 6 minutes on 2 cores.
//!
//! `TARA_PAPER_CLIENTS=1,4,16,64,256`, `TARA_PAPER_SECONDS=1.5` (per point),
//! `TARA_PAPER_WARMUP_MS=300`, `TARA_PAPER_ROUNDS=2`, `TARA_PAPER_PARTITIONS=1,2,4,8`,
//! `TARA_PAPER_FIG7_CLIENTS=256`, `TARA_PAPER_OPENRAFT=0` (leave openraft out: its first build
//! takes minutes), `TARA_PAPER_OUT=dir`, `TARA_PAPER_SMOKE=1` (what `cargo test --test paper`
//! runs). Longer runs: raise `TARA_PAPER_SECONDS` and `TARA_PAPER_ROUNDS`.
//!
//! `TARA_PAPER_PROFILE=tara,bare` runs only the named systems of Figure 5 at 64 clients,
//! interleaved, for profiling (`perf record`) and with `TARA_PAPER_TIMELY_LOG=1` prints timely's
//! logging per command (`paper::profile`; papers/tara-2021.md, "Where the time goes").

#[allow(dead_code)]
#[path = "common/bare.rs"]
mod bare;
#[allow(dead_code)]
#[path = "common/closed_loop.rs"]
mod closed_loop;
#[allow(dead_code)]
#[path = "common/paper.rs"]
mod paper;
#[allow(dead_code)]
#[path = "common/supervised.rs"]
mod supervised;
#[allow(dead_code)]
#[path = "common/table_one.rs"]
mod table_one;
#[allow(dead_code)]
#[path = "common/tara_loop.rs"]
mod tara_loop;

use std::path::Path;

/// The same allocator as the `tara` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Ok(systems) = std::env::var("TARA_PAPER_PROFILE") {
        if let Err(e) = paper::profile(&systems) {
            eprintln!("paper: {e}");
            std::process::exit(1);
        }
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result =
        paper::Settings::from_env(repo).and_then(|settings| paper::run(repo, &settings).map(|r| (settings, r)));
    match result {
        Ok((settings, report)) => {
            println!("{}", serde_json::to_string_pretty(&report.ratios).unwrap_or_default());
            println!("wrote {} files into {}", report.files.len() + 1, settings.out.display());
        }
        Err(e) => {
            eprintln!("paper: {e}");
            std::process::exit(1);
        }
    }
}
