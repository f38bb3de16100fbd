//! KPI values and alerts into PostgreSQL, the BI store the Grafana dashboards
//! read (`engine/migrations/`, `docs/dashboards.md`). Built with the `postgres`
//! cargo feature.
//!
//! Off the evaluation path: [`PostgresSink::start`] returns a [`Handle`] and
//! the writing task. [`Handle::send`] puts outputs on a bounded queue and never
//! waits: what does not fit is dropped and counted. The task takes what is
//! queued in batches and writes each batch in one transaction of upserts, so a
//! replay of the same capture, a restart or a Kafka re-read writes no
//! duplicate row. When PostgreSQL refuses a batch (down, full, wrong schema),
//! the reason is logged once, the batch is retried with backoff until it is
//! written, and nothing queued is lost.
//!
//! ```no_run
//! # async fn f(outputs: Vec<engine::evaluator::Output>) -> anyhow::Result<()> {
//! use engine::sinks::postgres::PostgresSink;
//! let (pg, task) = PostgresSink::start("postgres://u:p@127.0.0.1:5432/db", 100_000)?;
//! pg.send(&outputs); // never blocks
//! pg.flush().await; // at the end of a replay: everything queued is written
//! println!("{}", pg.stats().line());
//! drop(pg);
//! task.await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::Connection;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{mpsc, oneshot};

use crate::alerts::{Alert, State};
use crate::evaluator::Output;
use crate::kpi::KpiValue;
use crate::rules::{Definition, Kind};

/// The schema, applied in order by sqlx's migrator when the sink connects.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "bi store",
    include_str!("../../migrations/0001_bi_store.sql"),
)];

/// Outputs written in one transaction at most.
const BATCH: usize = 2_000;
/// The longest wait between two tries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The BI store sink; see the module documentation.
pub struct PostgresSink;

/// A rule as the `rules` table holds it.
#[derive(Debug, Clone)]
struct RuleRow {
    id: String,
    title: String,
    severity: String,
    tags: Vec<String>,
    runbook: Option<String>,
}

enum Item {
    Output(Box<Output>),
    Rules(Vec<RuleRow>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

/// What the sink did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// outputs taken onto the queue
    pub queued: u64,
    /// outputs written (committed)
    pub written: u64,
    /// batches tried again after PostgreSQL refused them
    pub retried: u64,
    /// outputs dropped because the queue was full (or the task had ended)
    pub dropped: u64,
    /// why the last try failed, while the sink is failing
    pub failing: Option<String>,
}

impl Stats {
    /// One line for stderr.
    pub fn line(&self) -> String {
        format!(
            "postgres: {} queued, {} written, {} retried batches, {} dropped{}",
            self.queued,
            self.written,
            self.retried,
            self.dropped,
            self.failing
                .as_deref()
                .map(|e| format!("; failing: {e}"))
                .unwrap_or_default()
        )
    }
}

/// Feeds the sink's task; cheap to clone. The task ends once every handle is dropped
/// and the queue is written.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Item>,
    counters: Arc<Counters>,
}

/// A URL that is not a PostgreSQL connection string.
#[derive(Debug, thiserror::Error)]
#[error(
    "--postgres {url}: not a PostgreSQL URL ({reason}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
)]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

impl PostgresSink {
    /// Starts the writing task on the current tokio runtime. `capacity` is the
    /// queue's length in outputs. Connecting happens in the task, so an absent
    /// database does not hold the caller up; a malformed URL is an error here.
    pub fn start(
        url: &str,
        capacity: usize,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>), UrlError> {
        let bad = |reason: String| UrlError {
            url: redact(url),
            reason,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("it does not start with postgres://".into()));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            options,
            place: redact(url),
            conn: None,
            counters: counters.clone(),
            runbooks: HashMap::new(),
        };
        let task = tokio::spawn(writer.run(rx));
        Ok((Handle { tx, counters }, task))
    }
}

impl Handle {
    /// Queues outputs without waiting; what does not fit is dropped and counted.
    pub fn send(&self, outputs: &[Output]) {
        for o in outputs {
            self.put(Item::Output(Box::new(o.clone())), 1);
        }
    }

    /// Queues the rule pack's descriptions (title, severity, tags, runbook) for
    /// the `rules` table and the alerts' runbooks. Send them before the alerts.
    pub fn describe<'a>(&self, definitions: impl IntoIterator<Item = &'a Definition>) {
        let rows = definitions
            .into_iter()
            .filter_map(|d| match &d.kind {
                Kind::Alert { severity, tags, .. } => Some(RuleRow {
                    id: d.id.clone(),
                    title: d.title.clone(),
                    severity: severity.as_str().to_string(),
                    tags: tags.clone(),
                    runbook: d.runbook.clone(),
                }),
                Kind::Kpi => None,
            })
            .collect::<Vec<_>>();
        let n = rows.len() as u64;
        self.put(Item::Rules(rows), n);
    }

    fn put(&self, item: Item, n: u64) {
        match self.tx.try_send(item) {
            Ok(()) => self.counters.queued.fetch_add(n, Ordering::Relaxed),
            Err(_) => self.counters.dropped.fetch_add(n, Ordering::Relaxed),
        };
    }

    /// Waits until everything queued before this call is written (however
    /// long PostgreSQL takes to come back); for the end of a replay.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            queued: c.queued.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failing: c
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The embedded migrations, for sqlx's migrator.
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies the BI store's migrations to the database `conn` is connected to
/// (in the schema its `search_path` names first).
pub async fn migrate(conn: &mut PgConnection) -> Result<(), sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await?.run_direct(conn).await
}

struct Writer {
    options: PgConnectOptions,
    place: String,
    conn: Option<PgConnection>,
    counters: Arc<Counters>,
    /// runbooks by rule id, from [`Handle::describe`]
    runbooks: HashMap<String, Option<String>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        let mut items = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut items, BATCH).await > 0 {
            let mut batch = Vec::new();
            for item in std::mem::take(&mut items) {
                match item {
                    Item::Flush(done) => {
                        self.write_until_done(&mut batch).await;
                        let _ = done.send(());
                    }
                    other => batch.push(other),
                }
            }
            self.write_until_done(&mut batch).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Writes `batch`, trying again with backoff until PostgreSQL takes it;
    /// the first failure of a run of failures is logged with its reason.
    async fn write_until_done(&mut self, batch: &mut Vec<Item>) {
        if batch.is_empty() {
            return;
        }
        let mut wait = Duration::from_millis(250);
        let mut failures = 0u64;
        loop {
            match self.write(batch).await {
                Ok(n) => {
                    self.counters.written.fetch_add(n, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::warn!(place = %self.place, failures, "PostgreSQL takes writes again; nothing queued was lost");
                        *self
                            .counters
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    batch.clear();
                    return;
                }
                Err(e) => {
                    let reason = format!("{e:#}");
                    if failures == 0 {
                        tracing::error!(place = %self.place, error = %reason, "cannot write to PostgreSQL; keeping the queue and retrying with backoff");
                        eprintln!(
                            "error: cannot write to PostgreSQL at {}: {reason} (retrying; nothing queued is lost)",
                            self.place
                        );
                    }
                    *self
                        .counters
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    failures += 1;
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    // a broken connection is made afresh (and the schema checked again)
                    if let Some(conn) = self.conn.take() {
                        let _ = conn.close().await;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connection(&mut self) -> anyhow::Result<&mut PgConnection> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut c = PgConnection::connect_with(&self.options).await?;
                migrate(&mut c)
                    .await
                    .map_err(|e| anyhow::anyhow!("applying engine/migrations: {e}"))?;
                c
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Writes one batch in one transaction; returns the outputs written.
    async fn write(&mut self, batch: &[Item]) -> anyhow::Result<u64> {
        let mut rules = Vec::new();
        // owned: what the transaction's futures hold must be Send for the spawned task
        let mut kpis: BTreeMap<(String, String, String, String), KpiValue> = BTreeMap::new();
        let mut alerts = Vec::new();
        for item in batch {
            match item {
                Item::Rules(r) => rules.extend(r.iter().cloned()),
                Item::Output(o) => match o.as_ref() {
                    // the last value of a key wins: one statement cannot upsert a row twice
                    Output::Kpi(k) => {
                        kpis.insert(
                            (
                                k.kpi.clone(),
                                k.window_start.clone(),
                                k.window_end.clone(),
                                serde_json::to_string(&k.dimensions)?,
                            ),
                            k.clone(),
                        );
                    }
                    Output::Alert(a) => alerts.push(a.clone()),
                },
                Item::Flush(_) => {}
            }
        }
        for r in &rules {
            self.runbooks.insert(r.id.clone(), r.runbook.clone());
        }
        let written = (rules.len() + kpis.len() + alerts.len()) as u64;
        let runbooks = self.runbooks.clone();
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        for r in rules {
            sqlx::query(
                "INSERT INTO rules (rule_id, title, severity, tags, runbook) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (rule_id) DO UPDATE SET title = EXCLUDED.title, severity = EXCLUDED.severity,
                   tags = EXCLUDED.tags, runbook = EXCLUDED.runbook, updated_at = now()",
            )
            .bind(r.id)
            .bind(r.title)
            .bind(r.severity)
            .bind(r.tags)
            .bind(r.runbook)
            .execute(&mut *tx)
            .await?;
        }
        if !kpis.is_empty() {
            let mut names = Vec::with_capacity(kpis.len());
            let mut starts = Vec::with_capacity(kpis.len());
            let mut ends = Vec::with_capacity(kpis.len());
            let mut dims = Vec::with_capacity(kpis.len());
            let mut values = Vec::with_capacity(kpis.len());
            for ((name, start, end, d), k) in kpis {
                names.push(name);
                starts.push(time(&start, "window_start", &k.kpi)?);
                ends.push(time(&end, "window_end", &k.kpi)?);
                dims.push(d);
                values.push(k.value.as_f64());
            }
            sqlx::query(
                "INSERT INTO kpi_values (kpi, window_start, window_end, dimensions, value)
                 SELECT k, s, e, d::jsonb, v
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::float8[]) AS t(k, s, e, d, v)
                 ON CONFLICT (kpi, window_start, window_end, dimensions)
                 DO UPDATE SET value = EXCLUDED.value, written_at = now()",
            )
            .bind(names)
            .bind(starts)
            .bind(ends)
            .bind(dims)
            .bind(values)
            .execute(&mut *tx)
            .await?;
        }
        // in order: a resolution finds its incident's firing row, written before it
        for a in alerts {
            let runbook = runbooks.get(&a.rule_id).cloned().flatten();
            write_alert(&mut tx, a, runbook).await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

fn time(text: &str, field: &str, of: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| anyhow::anyhow!("{of}: {field} `{text}` is not RFC 3339: {e}"))
}

/// Upserts one alert. A firing alert opens its incident at its window start; a
/// resolved one belongs to the latest incident of its rule and entity that
/// fired before it.
async fn write_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    a: Alert,
    runbook: Option<String>,
) -> anyhow::Result<()> {
    let start = time(&a.window_start, "window_start", &a.rule_id)?;
    let end = time(&a.window_end, "window_end", &a.rule_id)?;
    let entity = serde_json::to_string(&a.entity)?;
    let state = match a.state {
        State::Firing => "firing",
        State::Resolved => "resolved",
    };
    sqlx::query(
        "INSERT INTO alerts (rule_id, entity, incident_start, state, severity, window_start, window_end,
                             value, tags, summary, trace_ids, runbook)
         SELECT $1, $2::jsonb,
                CASE WHEN $3 = 'firing' THEN $5
                     ELSE COALESCE((SELECT max(incident_start) FROM alerts
                                    WHERE rule_id = $1 AND entity = $2::jsonb AND state = 'firing'
                                      AND incident_start < $5), $5) END,
                $3, $4, $5, $6, $7, $8, $9, $10, $11
         ON CONFLICT (rule_id, entity, incident_start, state) DO UPDATE SET
           severity = EXCLUDED.severity, window_start = EXCLUDED.window_start,
           window_end = EXCLUDED.window_end, value = EXCLUDED.value, tags = EXCLUDED.tags,
           summary = EXCLUDED.summary, trace_ids = EXCLUDED.trace_ids, runbook = EXCLUDED.runbook,
           written_at = now()",
    )
    .bind(a.rule_id)
    .bind(entity)
    .bind(state)
    .bind(a.severity)
    .bind(start)
    .bind(end)
    .bind(a.value.as_f64())
    .bind(a.tags)
    .bind(a.summary)
    .bind(a.trace_ids)
    .bind(runbook)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("postgres://otelguard:secret@127.0.0.1:55432/otelguard"),
            "postgres://otelguard@127.0.0.1:55432/otelguard"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused_at_start() {
        let Err(e) = PostgresSink::start("mysql://x", 10) else {
            panic!("a mysql URL was taken");
        };
        assert!(e.to_string().contains("not a PostgreSQL URL"), "{e}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // nothing listens on port 9: the task keeps failing, the queue fills
        let (pg, _task) = PostgresSink::start("postgres://u:p@127.0.0.1:9/db", 2).expect("url");
        let kpi = Output::Kpi(KpiValue {
            kpi: "orders".into(),
            window_start: "2026-01-15T10:00:00Z".into(),
            window_end: "2026-01-15T10:01:00Z".into(),
            dimensions: BTreeMap::new(),
            value: serde_json::json!(3),
            at_ns: 0,
        });
        for _ in 0..50 {
            pg.send(std::slice::from_ref(&kpi));
        }
        let s = pg.stats();
        assert_eq!(s.queued + s.dropped, 50, "{s:?}");
        assert!(s.dropped >= 40, "{s:?}");
        assert_eq!(s.written, 0);
    }
}
