//! `--postgres URL`: KPI values and alerts into the BI store, for the commands
//! that evaluate (`replay`; `run` next). The flag exists in every build; an
//! engine built without the `postgres` cargo feature says how to rebuild.

use crate::evaluator::Output;
use crate::rules::RuleSet;

/// The queue between evaluation and the PostgreSQL writer, in outputs.
pub const QUEUE: usize = 100_000;

/// The BI store sink of a command, started by [`start`].
pub struct BiStore {
    #[cfg(feature = "postgres")]
    handle: crate::sinks::postgres::Handle,
    #[cfg(feature = "postgres")]
    task: tokio::task::JoinHandle<()>,
    #[cfg(not(feature = "postgres"))]
    never: std::convert::Infallible,
}

/// Starts the PostgreSQL sink when `url` is given, with the rule pack's
/// descriptions (for runbooks and the `rules` table).
#[cfg(feature = "postgres")]
pub fn start(url: Option<&str>, rules: &RuleSet) -> anyhow::Result<Option<BiStore>> {
    let Some(url) = url else { return Ok(None) };
    let (handle, task) = crate::sinks::postgres::PostgresSink::start(url, QUEUE)?;
    handle.describe(rules.rules.iter().map(|r| &r.def));
    Ok(Some(BiStore { handle, task }))
}

/// Without the `postgres` feature, `--postgres` is an error that says how to rebuild.
#[cfg(not(feature = "postgres"))]
pub fn start(url: Option<&str>, _rules: &RuleSet) -> anyhow::Result<Option<BiStore>> {
    match url {
        None => Ok(None),
        Some(_) => anyhow::bail!(
            "--postgres: this engine was built without PostgreSQL support (the `postgres` cargo feature); \
             rebuild it with `cargo build --release -p engine --features postgres`"
        ),
    }
}

impl BiStore {
    /// Queues outputs; never waits (a full queue drops and counts).
    pub fn send(&self, outputs: &[Output]) {
        #[cfg(feature = "postgres")]
        self.handle.send(outputs);
        #[cfg(not(feature = "postgres"))]
        {
            let _ = outputs;
            match self.never {}
        }
    }

    /// Writes what is queued, ends the writer and returns its counters as one
    /// line; an error, with that line, when PostgreSQL refused the sink for
    /// good (then nothing more was written).
    pub async fn finish(self) -> anyhow::Result<String> {
        #[cfg(feature = "postgres")]
        {
            self.handle.flush().await;
            let stats = self.handle.stats();
            drop(self.handle);
            let _ = self.task.await;
            match &stats.refused {
                Some(why) => anyhow::bail!(
                    "PostgreSQL refused the BI store's writes: {why}\n({})",
                    stats.line()
                ),
                None => Ok(stats.line()),
            }
        }
        #[cfg(not(feature = "postgres"))]
        match self.never {}
    }
}

/// `engine run --postgres`: restores the incidents the BI store keeps into
/// the evaluator before its first evaluation, so that a restart does not
/// notify an open incident again (see [`crate::alerts::restore`]). A store
/// that cannot be read (down, refusing) is said on stderr and in the log,
/// and the engine starts with no restored state; `None` then.
#[cfg(feature = "postgres")]
pub async fn restore_incidents(
    url: &str,
    ev: &mut crate::evaluator::Evaluator,
    limit: usize,
) -> Option<crate::alerts::Restored> {
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::sinks::postgres::stored_incidents(url, limit),
    )
    .await
    .unwrap_or_else(|_| {
        Err(crate::sinks::postgres::RestoreError {
            place: "the --postgres URL".into(),
            reason: "no answer in 10 s".into(),
        })
    });
    match read {
        Ok(stored) => {
            let r = ev.restore_incidents(&stored);
            tracing::info!(
                open = r.open,
                notified = r.notified,
                skipped = r.skipped,
                "incidents restored from the BI store"
            );
            eprintln!(
                "incidents restored from PostgreSQL: {} open, {} notifications kept for suppression, \
                 {} skipped (their rule is gone or changed)",
                r.open, r.notified, r.skipped
            );
            Some(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "no incidents restored: starting without them");
            eprintln!(
                "error: {e}; starting with no restored incidents (an incident open before the \
                 restart may be notified again)"
            );
            None
        }
    }
}

/// `engine run --postgres`: restores the buckets of kept KPIs (`keep`, the
/// rollups baselines and SLO rules read) from the KPI values the BI store
/// keeps, before the first evaluation, so that a restart does not start
/// their history afresh. A store that cannot be read is said on stderr and
/// the engine starts with empty rollups.
#[cfg(feature = "postgres")]
pub async fn restore_rollups(url: &str, ev: &mut crate::evaluator::Evaluator) {
    let kept = ev.rules().rollups.kept();
    if kept.is_empty() {
        return;
    }
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        crate::sinks::postgres::stored_kpi_values(url, &kept),
    )
    .await
    .unwrap_or_else(|_| {
        Err(crate::sinks::postgres::RestoreError {
            place: "the --postgres URL".into(),
            reason: "no answer in 30 s".into(),
        })
    });
    match read {
        Ok(stored) => {
            let taken = ev.restore_rollups(&stored);
            tracing::info!(buckets = taken, "kept KPIs restored from the BI store");
            eprintln!("kept KPIs restored from PostgreSQL: {taken} buckets");
        }
        Err(e) => {
            tracing::error!(error = %e, "no kept KPIs restored: starting with empty rollups");
            eprintln!(
                "error: {e}; starting with empty rollups (baselines warm up again, burn rates read less history)"
            );
        }
    }
}
