//! Grafana dashboards as code, generated with serde_json from the rule pack
//! and the KPI definitions in `rules/`.
//!
//! - [`pack`]: the rule and KPI files' TOML headers (read here; this crate does
//!   not depend on the engine, so it builds without DataFusion).
//! - [`grafana`]: panels, queries, variables and their Grafana JSON.
//! - [`frames`]: what a SQL panel shows, computed from KPI values, alerts and
//!   correlated incidents in memory (the engine's viewer without PostgreSQL;
//!   the panels' test).
//! - [`boards`]: the dashboards: Business, Security (PostgreSQL, the BI store the
//!   engine's `postgres` sink writes), Services and Engine (Prometheus).
//! - [`expand`]: a panel's query with Grafana's macros and variables expanded as
//!   Grafana does, to run it without Grafana (the end-to-end test, the viewer).
//!
//! `cargo run -p dashboards` writes `dashboards/grafana/*.json`; a test fails when
//! the committed files differ from what the generator makes. See docs/dashboards.md.
//!
//! ```no_run
//! let pack = dashboards::pack::Pack::load(std::path::Path::new("rules"))?;
//! for (file, json) in dashboards::render(&pack) {
//!     println!("{file}: {} bytes", json.len());
//! }
//! # Ok::<(), dashboards::pack::Error>(())
//! ```

pub mod boards;
pub mod expand;
pub mod frames;
pub mod grafana;
pub mod pack;

use std::path::{Path, PathBuf};

/// The repository's root (beside this crate).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the generated dashboards are committed.
pub fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana")
}

/// Every dashboard as (file name, pretty JSON text ending in a newline).
pub fn render(pack: &pack::Pack) -> Vec<(&'static str, String)> {
    boards::boards(pack)
        .iter()
        .map(|b| {
            let mut text = serde_json::to_string_pretty(&b.to_json())
                .unwrap_or_else(|e| unreachable!("a serde_json Value always serializes: {e}"));
            text.push('\n');
            (b.file, text)
        })
        .collect()
}
