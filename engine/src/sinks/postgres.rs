//! KPI values and alerts into PostgreSQL, the BI store the Grafana dashboards
//! read (`engine/migrations/`, `docs/dashboards.md`). Built with the `postgres`
//! cargo feature. The alerts are also folded into incidents
//! ([`crate::incidents`]), each kept in its latest state in the `correlated_incidents`
//! table.
//!
//! Off the evaluation path: [`PostgresSink::start`] returns a [`Handle`] and
//! the writing task. [`Handle::send`] puts outputs on a bounded queue and never
//! waits: what does not fit is dropped and counted. The task takes what is
//! queued in batches and writes each batch in one transaction of upserts, so a
//! replay of the same capture, a restart or a Kafka re-read writes no
//! duplicate row. A KPI value, once written, is never replaced: what comes
//! again for its key after a restart is a window evaluated again from part of
//! its rows. What PostgreSQL does not take is handled by why:
//! - it is away or busy (connection refused or lost, shutting down, out of
//!   room): the reason is logged once, the batch is retried with backoff until
//!   it is written, and nothing queued is lost;
//! - it refuses us for good (the password, a database or a schema that does
//!   not exist, no privilege, a store made by other migrations): the reason is
//!   logged with what to do, nothing more is tried, what is queued and what
//!   comes after is dropped and counted, and [`Stats::refused`] says why (a
//!   replay then fails with it, instead of waiting for ever);
//! - it refuses a batch for its data: the batch is written one output at a
//!   time, and only the outputs it refuses are dropped and counted.
//!
//! Text is stored with every NUL character replaced by U+FFFD: PostgreSQL
//! cannot hold NUL in `text` or `jsonb`, and an entity or dimension comes
//! from telemetry anyone can send.
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

/// The sqlx this sink is built on, for callers of [`migrate`] and for tests
/// that read the store (the end-to-end tests run the dashboards' SQL with it).
pub use sqlx;

use crate::alerts::{Alert, State};
use crate::evaluator::Output;
use crate::incidents::{Correlator, Incident};
use crate::kpi::KpiValue;
use crate::rules::{Definition, Kind};

/// The schema, applied in order by sqlx's migrator when the sink connects.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "bi store",
        include_str!("../../migrations/0001_bi_store.sql"),
    ),
    (
        2,
        "alert identity",
        include_str!("../../migrations/0002_alert_identity.sql"),
    ),
    (
        3,
        "correlated incidents",
        include_str!("../../migrations/0003_correlated_incidents.sql"),
    ),
];

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
    /// an incident's latest state, after the alert that changed it
    Incident(Box<Incident>),
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
    refused: std::sync::Mutex<Option<String>>,
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
    /// why PostgreSQL refuses the sink for good, once it has; nothing is
    /// written after that
    pub refused: Option<String>,
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
            match (&self.refused, &self.failing) {
                (Some(e), _) => format!("; refused: {e}"),
                (None, Some(e)) => format!("; failing: {e}"),
                (None, None) => String::new(),
            }
        )
    }
}

/// Feeds the sink's task; cheap to clone. The task ends once every handle is dropped
/// and the queue is written.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Item>,
    /// shared by the clones: each alert is folded once, in the order sent
    correlator: Arc<std::sync::Mutex<Correlator>>,
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
            refused: false,
        };
        let task = tokio::spawn(writer.run(rx));
        Ok((
            Handle {
                tx,
                counters,
                correlator: Arc::default(),
            },
            task,
        ))
    }
}

impl Handle {
    /// Queues outputs without waiting; what does not fit is dropped and counted.
    /// Each alert is folded into its incident here, once, in the order sent;
    /// an incident that changed is queued after the alert (not counted: when
    /// the queue is full, the alert's drop is).
    pub fn send(&self, outputs: &[Output]) {
        let mut correlator = self.correlator.lock().unwrap_or_else(|e| e.into_inner());
        for o in outputs {
            self.put(Item::Output(Box::new(o.clone())), 1);
            if let Output::Alert(a) = o
                && let Some(inc) = correlator.take(a).update
            {
                self.put(Item::Incident(Box::new(inc)), 0);
            }
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
            refused: c.refused.lock().unwrap_or_else(|e| e.into_inner()).clone(),
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
    /// set once PostgreSQL refuses the sink for good: nothing more is tried
    refused: bool,
}

/// Why a write failed, and whether trying the same again can help.
#[derive(Debug)]
struct Failure {
    reason: String,
    kind: FailureKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// PostgreSQL is away or busy: try again
    Transient,
    /// it refuses the batch for its data: the same batch fails again
    Data,
    /// it refuses the sink for good (credentials, database, schema, privilege,
    /// migrations): nothing will be written until someone changes something
    Refused,
}

impl Failure {
    fn new(kind: FailureKind, reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            kind,
        }
    }
}

/// What to do about a refusal for good, by SQLSTATE.
fn refusal_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        c if c.starts_with("28") => "check the user and password in the URL",
        "3D000" => "the database does not exist: create it, or name another in the URL",
        "3F000" => {
            "the schema the URL's options[search_path] names does not exist: create it (CREATE SCHEMA), or name another"
        }
        "42501" => {
            "the user may not create or write the BI store's tables here: grant it, or use another user or schema"
        }
        _ => return None,
    })
}

/// The kind of a failed statement or connection, and what to do about a
/// refusal for good.
fn classify(e: &sqlx::Error) -> (FailureKind, Option<&'static str>) {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if refusal_hint(code).is_some() => {
                (FailureKind::Refused, refusal_hint(code))
            }
            // data exception, integrity constraint, program limit (a value too long)
            Some(code)
                if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") =>
            {
                (FailureKind::Data, None)
            }
            _ => (FailureKind::Transient, None),
        },
        sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. } => (FailureKind::Data, None),
        sqlx::Error::Configuration(_) => (FailureKind::Refused, None),
        _ => (FailureKind::Transient, None),
    }
}

fn with_hint(text: String, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        let (kind, hint) = classify(&e);
        Failure::new(kind, with_hint(e.to_string(), hint))
    }
}

impl From<sqlx::migrate::MigrateError> for Failure {
    fn from(e: sqlx::migrate::MigrateError) -> Failure {
        let (kind, hint) = match &e {
            // a connection lost while migrating is worth another try; a
            // migration PostgreSQL refuses fails again
            sqlx::migrate::MigrateError::Execute(inner) => match classify(inner) {
                (FailureKind::Transient, hint) => (FailureKind::Transient, hint),
                (_, hint) => (FailureKind::Refused, hint),
            },
            // an edited or unknown migration: the store was made by another engine
            _ => (
                FailureKind::Refused,
                Some("the store was made by other migrations than this engine's engine/migrations"),
            ),
        };
        Failure::new(
            kind,
            with_hint(format!("applying engine/migrations: {e}"), hint),
        )
    }
}

/// How many outputs an item stands for in the counters.
fn weight(item: &Item) -> u64 {
    match item {
        Item::Output(_) => 1,
        Item::Incident(_) => 0,
        Item::Rules(r) => r.len() as u64,
        Item::Flush(_) => 0,
    }
}

/// Text as PostgreSQL can hold it: NUL replaced by U+FFFD.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn storable_map(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (storable(k), storable(v)))
        .collect()
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

    /// Writes `batch`: tried again with backoff while PostgreSQL is away;
    /// one output at a time when it refuses the batch for its data; dropped
    /// once it refuses the sink for good.
    async fn write_until_done(&mut self, batch: &mut Vec<Item>) {
        if batch.is_empty() {
            return;
        }
        match self.write_retrying(batch).await {
            None => {}
            Some(f) if f.kind == FailureKind::Data && batch.len() > 1 => {
                tracing::warn!(place = %self.place, error = %f.reason, "PostgreSQL refuses a batch for its data; writing it one output at a time");
                for item in std::mem::take(batch) {
                    let one = [item];
                    if let Some(f) = self.write_retrying(&one).await {
                        self.drop_refused(&one, &f);
                    }
                }
            }
            Some(f) => self.drop_refused(batch, &f),
        }
        batch.clear();
    }

    /// Counts what PostgreSQL did not take as dropped; a refusal for good
    /// stops the sink.
    fn drop_refused(&mut self, items: &[Item], f: &Failure) {
        let n: u64 = items.iter().map(weight).sum();
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        if f.kind == FailureKind::Refused && !self.refused {
            self.refused = true;
            tracing::error!(place = %self.place, error = %f.reason, "PostgreSQL refuses the BI store's writes; nothing more is tried, outputs are dropped and counted");
            eprintln!(
                "error: PostgreSQL at {} refuses the BI store's writes: {} (nothing more is tried)",
                self.place, f.reason
            );
            *self
                .counters
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(f.reason.clone());
        } else if f.kind == FailureKind::Data {
            tracing::error!(place = %self.place, error = %f.reason, dropped = n, "PostgreSQL refuses an output for its data; dropped");
        }
    }

    /// Writes `batch`, trying again with backoff while the failure is
    /// transient (the first of a run of failures is logged with its reason);
    /// the failure that trying again cannot mend, if any.
    async fn write_retrying(&mut self, batch: &[Item]) -> Option<Failure> {
        if self.refused {
            return Some(Failure::new(FailureKind::Refused, "refused before"));
        }
        let mut wait = Duration::from_millis(250);
        let mut failures = 0u64;
        loop {
            let f = match self.write(batch).await {
                Ok(()) => {
                    let n: u64 = batch.iter().map(weight).sum();
                    self.counters.written.fetch_add(n, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::warn!(place = %self.place, failures, "PostgreSQL takes writes again; nothing queued was lost");
                        *self
                            .counters
                            .last_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    return None;
                }
                Err(f) if f.kind != FailureKind::Transient => return Some(f),
                Err(f) => f,
            };
            if failures == 0 {
                tracing::error!(place = %self.place, error = %f.reason, "cannot write to PostgreSQL; keeping the queue and retrying with backoff");
                eprintln!(
                    "error: cannot write to PostgreSQL at {}: {} (retrying; nothing queued is lost)",
                    self.place, f.reason
                );
            }
            *self
                .counters
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(f.reason);
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

    async fn connection(&mut self) -> Result<&mut PgConnection, Failure> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let mut c = PgConnection::connect_with(&self.options).await?;
                migrate(&mut c).await?;
                c
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Writes one batch in one transaction.
    async fn write(&mut self, batch: &[Item]) -> Result<(), Failure> {
        let data = |e: anyhow::Error| Failure::new(FailureKind::Data, format!("{e:#}"));
        let mut rules = Vec::new();
        // owned: what the transaction's futures hold must be Send for the spawned task
        let mut kpis: BTreeMap<(String, String, String, String), KpiValue> = BTreeMap::new();
        let mut alerts = Vec::new();
        // the latest state of each incident, in the order they changed
        let mut incidents: Vec<Incident> = Vec::new();
        for item in batch {
            match item {
                Item::Rules(r) => rules.extend(r.iter().cloned()),
                Item::Incident(inc) => match incidents.iter_mut().find(|i| i.id == inc.id) {
                    Some(known) => *known = inc.as_ref().clone(),
                    None => incidents.push(inc.as_ref().clone()),
                },
                Item::Output(o) => match o.as_ref() {
                    // the first value of a key wins, as in the table (see the
                    // INSERT below); one statement cannot write a row twice
                    Output::Kpi(k) => {
                        let dims = serde_json::to_string(&storable_map(&k.dimensions))
                            .map_err(|e| data(e.into()))?;
                        kpis.entry((
                            storable(&k.kpi),
                            k.window_start.clone(),
                            k.window_end.clone(),
                            dims,
                        ))
                        .or_insert_with(|| k.clone());
                    }
                    Output::Alert(a) => alerts.push(a.clone()),
                },
                Item::Flush(_) => {}
            }
        }
        for r in &rules {
            self.runbooks.insert(r.id.clone(), r.runbook.clone());
        }
        let runbooks = self.runbooks.clone();
        let mut kpi_rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((name, start, end, d), k) in kpis {
            kpi_rows.0.push(name);
            kpi_rows
                .1
                .push(time(&start, "window_start", &k.kpi).map_err(data)?);
            kpi_rows
                .2
                .push(time(&end, "window_end", &k.kpi).map_err(data)?);
            kpi_rows.3.push(d);
            kpi_rows.4.push(k.value.as_f64());
        }
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        for r in rules {
            sqlx::query(
                "INSERT INTO rules (rule_id, title, severity, tags, runbook) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (rule_id) DO UPDATE SET title = EXCLUDED.title, severity = EXCLUDED.severity,
                   tags = EXCLUDED.tags, runbook = EXCLUDED.runbook, updated_at = now()",
            )
            .bind(storable(&r.id))
            .bind(storable(&r.title))
            .bind(storable(&r.severity))
            .bind(r.tags.iter().map(|t| storable(t)).collect::<Vec<_>>())
            .bind(r.runbook.as_deref().map(storable))
            .execute(&mut *tx)
            .await?;
        }
        // A KPI value is written once per key and never replaced. The engine
        // evaluates a window once per run, with every row of it: a Kafka
        // offset is committed only when every window holding its rows was
        // evaluated. What comes again for a key is a window evaluated again
        // after a restart, from the part of its rows read again: partial,
        // so the value already stored, the whole window's, stays.
        if !kpi_rows.0.is_empty() {
            sqlx::query(
                "INSERT INTO kpi_values (kpi, window_start, window_end, dimensions, value)
                 SELECT k, s, e, d::jsonb, v
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::float8[]) AS t(k, s, e, d, v)
                 ON CONFLICT (kpi, window_start, window_end, dimensions) DO NOTHING",
            )
            .bind(kpi_rows.0)
            .bind(kpi_rows.1)
            .bind(kpi_rows.2)
            .bind(kpi_rows.3)
            .bind(kpi_rows.4)
            .execute(&mut *tx)
            .await?;
        }
        // in order: a resolution finds its incident's firing row, written before it
        for a in alerts {
            let runbook = runbooks.get(&a.rule_id).cloned().flatten();
            write_alert(&mut tx, a, runbook).await?;
        }
        for inc in incidents {
            write_incident(&mut tx, inc).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn time(text: &str, field: &str, of: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| anyhow::anyhow!("{of}: {field} `{text}` is not RFC 3339: {e}"))
}

/// Upserts one alert under its incident: (rule, entity, incident start) and
/// its identity ([`Alert::identity`]), which the firing and the resolved row
/// of one incident share.
async fn write_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    a: Alert,
    runbook: Option<String>,
) -> Result<(), Failure> {
    let data = |e: anyhow::Error| Failure::new(FailureKind::Data, format!("{e:#}"));
    let start = time(&a.window_start, "window_start", &a.rule_id).map_err(data)?;
    let end = time(&a.window_end, "window_end", &a.rule_id).map_err(data)?;
    let incident = time(&a.incident_start(), "incident_start", &a.rule_id).map_err(data)?;
    let entity = serde_json::to_string(&storable_map(&a.entity)).map_err(|e| data(e.into()))?;
    let state = match a.state {
        State::Firing => "firing",
        State::Resolved => "resolved",
    };
    let at = |ns: Option<i64>| ns.map(DateTime::<Utc>::from_timestamp_nanos);
    sqlx::query(
        "INSERT INTO alerts (rule_id, entity, incident_start, state, severity, window_start, window_end,
                             value, tags, summary, trace_ids, runbook,
                             alert_id, rule_version, first_seen, detected_at)
         VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (rule_id, entity, incident_start, state) DO UPDATE SET
           severity = EXCLUDED.severity, window_start = EXCLUDED.window_start,
           window_end = EXCLUDED.window_end, value = EXCLUDED.value, tags = EXCLUDED.tags,
           summary = EXCLUDED.summary, trace_ids = EXCLUDED.trace_ids, runbook = EXCLUDED.runbook,
           alert_id = EXCLUDED.alert_id, rule_version = EXCLUDED.rule_version,
           first_seen = EXCLUDED.first_seen, detected_at = EXCLUDED.detected_at,
           written_at = now()",
    )
    .bind(storable(&a.rule_id))
    .bind(entity)
    .bind(incident)
    .bind(state)
    .bind(storable(&a.severity))
    .bind(start)
    .bind(end)
    .bind(a.value.as_f64())
    .bind(a.tags.iter().map(|t| storable(t)).collect::<Vec<_>>())
    .bind(storable(&a.summary))
    .bind(a.trace_ids.iter().map(|t| storable(t)).collect::<Vec<_>>())
    .bind(runbook.as_deref().map(storable))
    .bind(a.identity())
    .bind((!a.rule_version.is_empty()).then(|| storable(&a.rule_version)))
    .bind(at(a.first_seen_ns))
    .bind(at(a.detected_at_ns))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Upserts an incident's latest state under its identity.
async fn write_incident(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    inc: Incident,
) -> Result<(), Failure> {
    let data =
        |e: serde_json::Error| Failure::new(FailureKind::Data, format!("incident {}: {e}", inc.id));
    let json = inc.to_json();
    let entity = serde_json::to_string(&storable_map(&inc.lead.entity)).map_err(data)?;
    let members = storable(&serde_json::to_string(&json["members"]).map_err(data)?);
    let state = match inc.state {
        State::Firing => "firing",
        State::Resolved => "resolved",
    };
    let i64_of = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO correlated_incidents (incident_id, state, rule_id, severity, highest_severity, entity,
                                summary, rules, member_count, open_members, entity_count, members,
                                incident_start, incident_end)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12::jsonb, $13, $14)
         ON CONFLICT (incident_id) DO UPDATE SET
           state = EXCLUDED.state, highest_severity = EXCLUDED.highest_severity,
           summary = EXCLUDED.summary, rules = EXCLUDED.rules,
           member_count = EXCLUDED.member_count, open_members = EXCLUDED.open_members,
           entity_count = EXCLUDED.entity_count, members = EXCLUDED.members,
           incident_start = EXCLUDED.incident_start, incident_end = EXCLUDED.incident_end,
           written_at = now()",
    )
    .bind(storable(&inc.id))
    .bind(state)
    .bind(storable(&inc.lead.rule_id))
    .bind(storable(&inc.lead.severity))
    .bind(storable(&inc.highest_severity))
    .bind(entity)
    .bind(storable(&inc.summary()))
    .bind(inc.rules.iter().map(|r| storable(r)).collect::<Vec<_>>())
    .bind(i64_of(inc.member_count))
    .bind(i64_of(inc.open_members))
    .bind(i64_of(inc.entity_count))
    .bind(members)
    .bind(DateTime::<Utc>::from_timestamp_nanos(inc.start_ns))
    .bind(DateTime::<Utc>::from_timestamp_nanos(inc.end_ns))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Why the incidents kept in the store could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the open incidents from PostgreSQL at {place}: {reason}")]
pub struct RestoreError {
    pub place: String,
    pub reason: String,
}

/// Reads what the store keeps of the incidents, to restore them before the
/// first evaluation (`engine run --postgres`): per rule and entity, its
/// latest incident that fired, open (not resolved) or not (its notification
/// still counts for suppression); the most recent `limit` of them. The
/// store's migrations are applied first, so a new store answers with none.
pub async fn stored_incidents(
    url: &str,
    limit: usize,
) -> Result<Vec<crate::alerts::Stored>, RestoreError> {
    let failed = |reason: String| RestoreError {
        place: redact(url),
        reason,
    };
    let options = PgConnectOptions::from_str(url).map_err(|e| failed(e.to_string()))?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| failed(super::error_chain(&e)))?;
    migrate(&mut conn)
        .await
        .map_err(|e| failed(Failure::from(e).reason))?;
    let rows = sqlx::query(
        "SELECT rule_id, rule_version, entity::text AS entity, incident_start, window_start, window_end,
                first_seen, value, trace_ids, open
         FROM (SELECT DISTINCT ON (f.rule_id, f.entity)
                      f.rule_id, f.rule_version, f.entity, f.incident_start, f.window_start,
                      f.window_end, f.first_seen, f.value, f.trace_ids,
                      NOT EXISTS (SELECT 1 FROM alerts r
                                  WHERE r.rule_id = f.rule_id AND r.entity = f.entity
                                    AND r.incident_start = f.incident_start
                                    AND r.state = 'resolved') AS open
               FROM alerts f
               WHERE f.state = 'firing'
               ORDER BY f.rule_id, f.entity, f.incident_start DESC) latest
         ORDER BY window_end DESC
         LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut conn)
    .await
    .map_err(|e| failed(super::error_chain(&e)))?;
    let _ = conn.close().await;
    let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let stored = |r: &sqlx::postgres::PgRow| -> Result<crate::alerts::Stored, sqlx::Error> {
        use sqlx::Row;
        let entity: String = r.try_get("entity")?;
        Ok(crate::alerts::Stored {
            rule_id: r.try_get("rule_id")?,
            rule_version: r.try_get("rule_version")?,
            entity: serde_json::from_str(&entity).map_err(|e| sqlx::Error::Decode(e.into()))?,
            incident_start_ns: ns(r.try_get("incident_start")?),
            fired_start_ns: ns(r.try_get("window_start")?),
            fired_end_ns: ns(r.try_get("window_end")?),
            first_seen_ns: r.try_get::<Option<DateTime<Utc>>, _>("first_seen")?.map(ns),
            value: r.try_get("value")?,
            trace_ids: r.try_get("trace_ids")?,
            open: r.try_get("open")?,
        })
    };
    rows.iter()
        .map(stored)
        .collect::<Result<_, _>>()
        .map_err(|e| failed(super::error_chain(&e)))
}

/// Reads the values of kept KPIs ([`crate::rules::rollup`]) back from
/// `kpi_values`, to restore their buckets before the first evaluation
/// (`engine run --postgres`): for each, the windows of the last `keep`
/// before its newest stored window (from the start of that hour), and with
/// `keep_hourly` the older ones summed per hour by PostgreSQL. A KPI the
/// store has never seen gives nothing.
pub async fn stored_kpi_values(
    url: &str,
    kept: &[crate::rules::rollup::KeptKpi],
) -> Result<Vec<crate::rules::rollup::StoredValue>, RestoreError> {
    use sqlx::Row;
    const HOUR: i64 = 3_600_000_000_000;
    let failed = |reason: String| RestoreError {
        place: redact(url),
        reason,
    };
    let options = PgConnectOptions::from_str(url).map_err(|e| failed(e.to_string()))?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| failed(super::error_chain(&e)))?;
    migrate(&mut conn)
        .await
        .map_err(|e| failed(Failure::from(e).reason))?;
    let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let at = |t: i64| DateTime::<Utc>::from_timestamp_nanos(t);
    let mut out = Vec::new();
    for k in kept {
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(window_end) FROM kpi_values WHERE kpi = ANY($1)")
                .bind(&k.names)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| failed(super::error_chain(&e)))?;
        let Some(newest) = newest.map(ns) else {
            continue;
        };
        let cut = (newest - k.keep_ns).div_euclid(HOUR) * HOUR;
        let mut queries = vec![(
            false,
            sqlx::query(
                "SELECT kpi, window_start, dimensions::text AS dimensions, value
                 FROM kpi_values WHERE kpi = ANY($1) AND window_start >= $2 AND window_start < $3",
            )
            .bind(&k.names)
            .bind(at(cut))
            .bind(at(newest)),
        )];
        if let Some(hourly) = k.hourly_ns {
            queries.push((
                true,
                sqlx::query(
                    "SELECT kpi, date_trunc('hour', window_start, 'UTC') AS window_start,
                            dimensions::text AS dimensions, sum(value) AS value
                     FROM kpi_values WHERE kpi = ANY($1) AND window_start >= $2 AND window_start < $3
                     GROUP BY 1, 2, 3",
                )
                .bind(&k.names)
                .bind(at((newest - hourly).div_euclid(HOUR) * HOUR))
                .bind(at(cut)),
            ));
        }
        for (hourly, query) in queries {
            let rows = query
                .fetch_all(&mut conn)
                .await
                .map_err(|e| failed(super::error_chain(&e)))?;
            for r in &rows {
                let value = |r: &sqlx::postgres::PgRow| -> Result<_, sqlx::Error> {
                    let dimensions: String = r.try_get("dimensions")?;
                    Ok(crate::rules::rollup::StoredValue {
                        kpi: r.try_get("kpi")?,
                        window_start: ns(r.try_get("window_start")?),
                        dimensions: serde_json::from_str(&dimensions)
                            .map_err(|e| sqlx::Error::Decode(e.into()))?,
                        value: r.try_get("value")?,
                        hourly,
                    })
                };
                out.push(value(r).map_err(|e| failed(super::error_chain(&e)))?);
            }
        }
    }
    let _ = conn.close().await;
    Ok(out)
}

/// The BI store as one sink of the live loop's fan-out (`engine run
/// --postgres`): a batch is delivered once PostgreSQL has committed it, so
/// Kafka offsets wait for the store like for any durable sink. While
/// PostgreSQL is away the delivery waits (the writer retries with backoff)
/// and the fan-out's queue holds what comes meanwhile; a store that refuses
/// the sink for good fails the batch for good, with the reason.
pub struct BiStoreSink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    place: String,
}

impl BiStoreSink {
    /// Starts the writer for `url`, with the rule pack's descriptions.
    pub fn start<'a>(
        url: &str,
        definitions: impl IntoIterator<Item = &'a Definition>,
    ) -> Result<BiStoreSink, UrlError> {
        // one batch at a time is queued: the fan-out's queue is the one that holds
        let (handle, task) = PostgresSink::start(url, 100_000)?;
        handle.describe(definitions);
        Ok(BiStoreSink {
            handle,
            task,
            place: redact(url),
        })
    }
}

impl Drop for BiStoreSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl super::Sink for BiStoreSink {
    fn name(&self) -> &str {
        "postgres"
    }

    fn address(&self) -> String {
        self.place.clone()
    }

    fn durable(&self) -> bool {
        true
    }

    fn takes(&self) -> super::Takes {
        super::Takes::Everything
    }

    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), super::SinkError> {
        let before = self.handle.stats().dropped;
        self.handle.send(outputs);
        self.handle.flush().await;
        let stats = self.handle.stats();
        let failed = |message: String| super::SinkError {
            sink: "postgres".into(),
            address: self.place.clone(),
            message,
            permanent: true,
        };
        if let Some(why) = stats.refused {
            return Err(failed(format!(
                "PostgreSQL refuses the BI store's writes: {why}"
            )));
        }
        if stats.dropped > before {
            return Err(failed(format!(
                "PostgreSQL refused {} of these outputs for their data",
                stats.dropped - before
            )));
        }
        Ok(())
    }
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

    #[test]
    fn text_postgres_cannot_hold_is_stored_with_a_replacement_character() {
        assert_eq!(storable("203.0.113.9\0x"), "203.0.113.9\u{FFFD}x");
        let entity = BTreeMap::from([("client.address\0".to_string(), "a\0b".to_string())]);
        assert_eq!(
            serde_json::to_string(&storable_map(&entity)).expect("JSON"),
            "{\"client.address\u{FFFD}\":\"a\u{FFFD}b\"}"
        );
    }

    #[test]
    fn refusals_for_good_say_what_to_do_and_the_rest_is_tried_again() {
        assert!(refusal_hint("28P01").is_some_and(|h| h.contains("password")));
        assert!(refusal_hint("3F000").is_some_and(|h| h.contains("CREATE SCHEMA")));
        assert!(refusal_hint("3D000").is_some());
        assert!(refusal_hint("42501").is_some());
        // connection failure, shutting down, out of room: worth another try
        for code in ["08006", "57P01", "53100", "40001"] {
            assert_eq!(refusal_hint(code), None, "{code}");
        }
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&io).0, FailureKind::Transient);
        let config = sqlx::Error::Configuration("bad".into());
        assert_eq!(classify(&config).0, FailureKind::Refused);
    }

    #[test]
    fn a_refused_sink_says_why_in_its_line() {
        let s = Stats {
            queued: 3,
            dropped: 3,
            failing: Some("old".into()),
            refused: Some("password authentication failed".into()),
            ..Stats::default()
        };
        assert_eq!(
            s.line(),
            "postgres: 3 queued, 0 written, 0 retried batches, 3 dropped; refused: password authentication failed"
        );
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
