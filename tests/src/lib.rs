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
