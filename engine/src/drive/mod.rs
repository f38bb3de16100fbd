//! The drivers: the loops that feed a source through the evaluator to the
//! sinks, as library code that tests call without spawning the binary.
//!
//! - [`replay`]: a capture through the evaluator (`replay`, `rules test`, `demo`).
//! - [`live`]: the live loop of `run`, from the OTLP receiver or Kafka, with
//!   its commit bookkeeping (offsets committed once their effects are durable).
//! - [`judge`]: a rule pack's fixture cases replayed and judged (`rules test`).
//! - [`postgres`]: the BI store of the commands that evaluate, and the
//!   incidents it restores.
//!
//! Each takes a plain config struct; `cli` only parses arguments into one.

pub mod judge;
#[cfg(feature = "kafka")]
pub mod keyed;
pub mod live;
pub mod postgres;
pub mod replay;
#[cfg(feature = "kafka")]
pub mod shuffle;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::api;
use crate::api::panels::Dashboards;
use crate::rules::{RuleSet, Which};

/// Where the API, the viewer and /metrics listen, and who may read them
/// (see `api::Access`).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// e.g. 127.0.0.1:8080
    pub listen: String,
    /// the bearer token the API requires (required when `listen` is not loopback)
    pub token: Option<String>,
    /// host names the API answers to besides loopback and its own address
    pub hosts: Vec<String>,
}

impl ApiConfig {
    /// Binds the address and checks who may read it; `quiet` leaves the
    /// address unsaid (the caller says it later).
    pub async fn bind(
        &self,
        quiet: bool,
    ) -> anyhow::Result<(tokio::net::TcpListener, api::Access)> {
        let listener = match quiet {
            true => api::bind_quietly(&self.listen).await?,
            false => api::bind(&self.listen).await?,
        };
        let access = api::Access::for_listener(
            listener.local_addr()?,
            self.token.clone(),
            self.hosts.clone(),
        )?;
        Ok((listener, access))
    }
}

/// The answer to `--kafka` from an engine built without the `kafka` feature.
#[cfg(not(feature = "kafka"))]
pub fn kafka_not_built() -> anyhow::Error {
    anyhow::anyhow!(
        "--kafka: this engine was built without Kafka support (the `kafka` cargo feature); \
         build it with Kafka, e.g. `cargo run --release -p engine --features kafka -- run --kafka 127.0.0.1:19092`"
    )
}

/// Bad input's accounting, with a dead-letter file when one is asked for.
pub fn dead_letters(
    path: Option<&Path>,
    counts: Arc<ingest::RejectCounts>,
) -> anyhow::Result<ingest::write::dead_letter::Rejections> {
    let rejections = ingest::write::dead_letter::Rejections::new(counts);
    Ok(match path {
        Some(p) => rejections.with_sink(Box::new(
            ingest::write::dead_letter::DeadLetterFile::create(p)
                .with_context(|| format!("cannot create the dead-letter file {}", p.display()))?,
        )),
        None => rejections,
    })
}

/// Loads a rule set, reporting every broken file on stderr; the others run.
pub async fn load_rules(dir: &Path, which: Which) -> anyhow::Result<RuleSet> {
    let set = RuleSet::load(dir, which).await?;
    for e in &set.errors {
        eprintln!("error: {e}\n  (this file is skipped; the other rules run)");
    }
    if set.rules.is_empty() && !set.errors.is_empty() {
        anyhow::bail!("no usable rules in {}", dir.display());
    }
    if set.rules.is_empty() {
        // a folder with no rules at all: the engine still takes input (to
        // record it, or to measure intake alone) and evaluates nothing
        eprintln!(
            "note: no rules in {}: input is taken and counted, nothing is evaluated",
            dir.display()
        );
    }
    Ok(set)
}

/// The viewer's dashboards: from the outputs in memory, or from the BI store
/// when one is given.
pub fn dashboards(rules: &Path, postgres: Option<&str>) -> anyhow::Result<Dashboards> {
    let d = Dashboards::load(rules);
    match postgres {
        #[cfg(feature = "postgres")]
        Some(url) => d.reading(url),
        _ => Ok(d),
    }
}
