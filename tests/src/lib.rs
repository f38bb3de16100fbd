//! End-to-end test helpers.

use std::path::PathBuf;

/// A binary of the workspace, built into the same target folder as the test
/// (`bash tests/run` builds every binary first).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/debug/deps/test-xxxx -> target/debug/NAME
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a target folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (bash tests/run does)",
        path.display()
    );
    path
}

/// Where the local stack's Collector writes its file-exporter capture
/// (compose/local/stack: `OTELGUARD_CAPTURE_DIR`, else `captures/` in the
/// stack's state dir, `OTELGUARD_STACK_STATE` or `~/.cache/otelguard/stack-state`).
pub fn collector_capture_file() -> PathBuf {
    let state = || {
        std::env::var_os("OTELGUARD_STACK_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/otelguard/stack-state")
            })
    };
    let dir = std::env::var_os("OTELGUARD_CAPTURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| state().join("captures"));
    dir.join("captures.jsonl")
}

/// A marker unique to this run, `PREFIX-` then letters only, so that the
/// Collector's redaction processor (which masks long digit runs as card
/// numbers) leaves it alone.
pub fn run_marker(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let letters: String = format!("{nanos}{}", std::process::id())
        .bytes()
        .map(|digit| char::from(b'a' + (digit - b'0')))
        .collect();
    format!("{prefix}-{letters}")
}

pub mod compose;
pub mod dashboards;
pub mod engine;
pub mod faults;
pub mod kafka;
pub mod otlp;
pub mod scale;
pub mod shop;
