//! Replay throughput with 0, 1, 10 and 50 rules, and peak memory.
//!
//! ```sh
//! cargo bench -p engine --bench replay -- CAPTURE [RULE_COUNTS...]
//! PANES=1 cargo bench -p engine --bench replay -- CAPTURE   # every rule in panes
//! RULES_DIR=DIR cargo bench -p engine --bench replay -- CAPTURE   # another pack
//! ```
//!
//! Each count runs in a child process of its own, so that its peak resident
//! memory (VmHWM) is its own. 0 rules measures reading, decoding and buffering
//! alone. The rules are the pack's alert rules, repeated under new ids (50 =
//! the 10 rules five times): as many plans, as much evaluation work.

/// The engine binary's allocator (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use engine::drive::replay::{Speed, replay};
use engine::evaluator::Evaluator;
use engine::rules::RuleSet;
use engine::rules::definition::{parse_file, rule_files};

/// The pack's folder, or `RULES_DIR`.
fn rules_dir() -> PathBuf {
    std::env::var_os("RULES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"))
}

async fn rule_set(count: usize) -> RuleSet {
    let mut pack = Vec::new();
    for file in rule_files(&rules_dir()).expect("the rules folder") {
        let def = parse_file(&file).expect("the pack parses");
        if !def.is_kpi() {
            pack.push(def);
        }
    }
    pack.sort_by(|a, b| a.id.cmp(&b.id));
    // the single-rule case is the cheapest common rule: the single-source flood
    if count == 1 && pack.iter().any(|d| d.id == "dos.http_flood.single_source") {
        pack.retain(|d| d.id == "dos.http_flood.single_source");
    }
    let defs = (0..count)
        .map(|i| {
            let mut d = pack[i % pack.len()].clone();
            if i >= pack.len() {
                d.id = format!("{}.copy{}", d.id, i / pack.len());
            }
            d
        })
        .collect();
    RuleSet::from_definitions(defs)
        .await
        .expect("the pack plans")
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn child(capture: &Path, count: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut set = rule_set(count).await;
        // PANES=1 measures every rule through per-slide partial aggregates,
        // PANES=0 none of them; unset, as their headers say
        match std::env::var("PANES").as_deref() {
            Ok("1") => set.set_panes(true),
            Ok("0") => set.set_panes(false),
            _ => {}
        }
        let mut ev = Evaluator::new(set, 5_000_000_000);
        let mut alerts = 0usize;
        let started = Instant::now();
        let summary = replay(&[capture.to_path_buf()], &mut ev, Speed::Max, |o| {
            alerts += o.len();
            Ok(())
        })
        .await
        .expect("replay");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:>5} rules  {:>10} rows  {:>7.2} s  {:>10.0} rows/s  {:>6} outputs  peak RSS {:>6.0} MiB",
            count,
            summary.rows,
            secs,
            summary.rows as f64 / secs,
            alerts,
            peak_rss_kib() as f64 / 1024.0
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        let capture = PathBuf::from(&args[1]);
        let count: usize = args[2].parse().expect("a rule count");
        child(&capture, count);
        return;
    }
    let Some(capture) = args.first() else {
        eprintln!("usage: cargo bench -p engine --bench replay -- CAPTURE [RULE_COUNTS...]");
        std::process::exit(2);
    };
    let counts: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        ["0", "1", "10", "50"].map(String::from).to_vec()
    };
    let size = std::fs::metadata(capture).map(|m| m.len()).unwrap_or(0);
    println!("capture {capture} ({:.1} MB on disk)", size as f64 / 1e6);
    let exe = std::env::current_exe().expect("own path");
    for count in counts {
        let status = Command::new(&exe)
            .args(["--child", capture, &count])
            .status()
            .expect("run a child");
        assert!(status.success(), "the run with {count} rules failed");
    }
}
