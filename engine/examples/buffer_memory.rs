//! Memory per buffered row: the rule pack loaded, a million rows of the
//! shop's recorded telemetry pushed into open windows, then what the window
//! buffer holds, by the engine's own figure and by the process's.
//!
//! ```sh
//! cargo run -p engine --example buffer_memory -- [ROWS] [CAPTURE...]
//! ```
//!
//! ROWS defaults to 1 000 000; the captures to every `rules/captures/*.jsonl.zst`.
//! The captures are read again and again, each time decoded afresh (as new
//! input would be), until ROWS rows are pushed. The allowed lateness is an
//! hour, so no window closes and no row is late or pruned: every row pushed
//! is held. Printed: rows held, the buffer's bytes (`otelguard_buffered_bytes`,
//! the Arrow buffers of the rows held), and the growth of the resident set
//! (VmRSS, /proc/self/status) from before the first row, each per row held.

/// The engine binary's allocator (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};

use engine::evaluator::Evaluator;
use engine::rules::{RuleSet, Which};
use ingest::source::capture_reader::{self, CaptureItem};

/// A field of /proc/self/status in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| {
            v.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn captures(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("rules/captures"))
        .expect("rules/captures")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .collect();
    out.sort();
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let want: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let mut paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if paths.is_empty() {
        paths = captures(&root);
    }
    let set = RuleSet::load(&root.join("rules"), Which::All)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rules = set.rules.len();
    let mut ev = Evaluator::new(set, 3_600_000_000_000);
    // what `engine run` and `engine replay` tell the decoders
    engine::rules::snapshot::decode_what_is_read(ev.rules());
    let rss_before = status_bytes("VmRSS");
    let mut pushed = 0usize;
    let mut passes = 0usize;
    'fill: loop {
        passes += 1;
        for path in &paths {
            for item in capture_reader::open(std::slice::from_ref(path))? {
                let CaptureItem::Message(m) = item else {
                    continue;
                };
                let rows = m.decoded.batch.num_rows();
                ev.push(m.decoded.table, m.decoded.batch)?;
                pushed += rows;
                if pushed >= want {
                    break 'fill;
                }
            }
        }
    }
    let stats = ev.stats();
    let rss = status_bytes("VmRSS");
    let held = stats.buffered_rows.max(1);
    println!(
        "{rules} rules and KPIs; {pushed} rows pushed ({passes} passes over {} captures), {} held, {} late",
        paths.len(),
        stats.buffered_rows,
        stats.late_rows
    );
    println!(
        "buffer: {:.1} MB, {:.0} bytes per row held (otelguard_buffered_bytes)",
        stats.buffered_bytes as f64 / 1e6,
        stats.buffered_bytes as f64 / held as f64
    );
    println!(
        "resident: {:.1} MB before, {:.1} MB after, {:.0} bytes per row held; peak {:.1} MB (VmHWM)",
        rss_before as f64 / 1e6,
        rss as f64 / 1e6,
        rss.saturating_sub(rss_before) as f64 / held as f64,
        status_bytes("VmHWM") as f64 / 1e6
    );
    // where the bytes are: per table, each column's bytes per row of the table
    for (table, (rows, columns)) in ev.buffer().column_bytes() {
        let per_row = |b: usize| b as f64 / rows.max(1) as f64;
        let total: usize = columns.iter().map(|c| c.1).sum();
        let shown: Vec<String> = columns
            .iter()
            .map(|(name, bytes)| format!("{name} {:.0}", per_row(*bytes)))
            .collect();
        println!(
            "{}: {rows} rows, {:.0} bytes per row: {}",
            table.name(),
            per_row(total),
            shown.join(", ")
        );
    }
    Ok(())
}
