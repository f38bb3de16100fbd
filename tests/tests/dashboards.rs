//! The Business and Security dashboards proven without Grafana (issue 14): the
//! bundled demo recording, and a small flood of the test's own still going on
//! when its capture ends (so that one incident stays open), replayed into the
//! stack's PostgreSQL by `engine replay --postgres`, then every SQL panel and
//! SQL variable query of the committed
//! dashboards (`dashboards/grafana/*.json`), expanded as Grafana expands it
//! (`dashboards::expand`), run on that PostgreSQL:
//!
//! - no query fails, over the whole capture and over its second half, with
//!   every variable at All and with chosen values (one and several);
//! - every panel's rows are what its `Check` (`dashboards::grafana`) says in
//!   terms of the KPI values and alerts the engine printed for the same
//!   capture (and the incidents the engine's `Correlator` folds those alerts
//!   into), value by value (sums and means within 1e-9, relative), and
//!   what the engine's viewer draws for the same panel from memory
//!   (`dashboards::frames`);
//!   `time_series` panels have a `time` column and numeric values, as
//!   Grafana needs;
//! - the store holds one row per distinct KPI value, alert transition, rule
//!   and correlated incident, nothing was dropped, and a second replay
//!   changes no row count (every write is an upsert).
//!
//! And the sink's own failures, found by running it on a real PostgreSQL: a
//! store that refuses it for good (a wrong password, a missing schema) fails
//! the replay with what to do, where the replay used to wait for ever; text
//! PostgreSQL cannot hold (NUL, from telemetry anyone can send) is stored
//! with U+FFFD, where one such alert used to stop the sink for good; an
//! output refused for its data is dropped alone.
//!
//! Starts the stack's PostgreSQL (`compose/local/stack up postgres`); each
//! test works in a schema of its own, dropped at the end. Needs the engine built
//! with the `postgres` feature, as the workspace build makes it: `cargo build
//! --workspace --bins`. Run: `cargo test -p e2e --test dashboards`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use dashboards::expand::{ALL, TimeRange, expand_sql};
use dashboards::grafana::{Check, Datasource, Query};
use e2e::dashboards::Target;
use engine::sinks::postgres::sqlx::postgres::PgConnection;
use engine::sinks::postgres::sqlx::{self, Column as _, Connection as _, Row as _, TypeInfo as _};
use serde_json::Value;

/// The stack's PostgreSQL (compose/local/stack).
const DATABASE: &str = "postgres://otelguard:otelguard@127.0.0.1:55432/otelguard";
/// The bundled recording replayed: 15 minutes of the demo's mixed traffic
/// (then a small flood of the test's own, see [`flood`]).
const CAPTURE: &str = "demo.jsonl.zst";
/// The dimension the `currency` variable filters.
const CURRENCY: &str = "shop.order.currency";
/// Relative tolerance of sums and means computed in another order.
const TOLERANCE: f64 = 1e-9;

// ---------------------------------------------------------------------------
// What the engine printed

#[derive(Debug, Clone)]
struct Kpi {
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dims: BTreeMap<String, String>,
    value: Option<f64>,
}

#[derive(Debug, Clone)]
struct Alert {
    rule: String,
    severity: String,
    firing: bool,
    entity: BTreeMap<String, String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    value: Option<f64>,
    summary: String,
    trace_ids: Vec<String>,
    /// the extension fields: the incident's start (the store's key), its
    /// first evidence and when the engine emitted the alert
    incident: DateTime<Utc>,
    first_seen: Option<DateTime<Utc>>,
    detected_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// `key=value` pairs in key order, as the store's `entity_text` writes them.
    fn who(&self) -> String {
        self.entity
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A firing and, when one was printed, its resolution.
#[derive(Debug, Clone)]
struct Incident {
    firing: Alert,
    resolved: Option<Alert>,
}

fn time(v: &Value, field: &str) -> Result<DateTime<Utc>> {
    let text = v[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in {v}"))?;
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{field} {text:?} of {v}"))?
        .with_timezone(&Utc))
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn required(v: &Value, field: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("no {field} in {v}"))
}

fn kpi(v: &Value) -> Result<Kpi> {
    Ok(Kpi {
        name: required(v, "kpi")?,
        start: time(v, "window_start")?,
        end: time(v, "window_end")?,
        dims: strings(&v["dimensions"]),
        value: v["value"].as_f64(),
    })
}

fn alert(v: &Value) -> Result<Alert> {
    Ok(Alert {
        rule: required(v, "rule_id")?,
        severity: v["severity"].as_str().unwrap_or_default().to_string(),
        firing: match v["state"].as_str() {
            Some("firing") => true,
            Some("resolved") => false,
            other => bail!("state {other:?} in {v}"),
        },
        entity: strings(&v["entity"]),
        start: time(v, "window_start")?,
        end: time(v, "window_end")?,
        value: v["value"].as_f64(),
        summary: v["summary"].as_str().unwrap_or_default().to_string(),
        trace_ids: v["trace_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        incident: time(v, "incident_start")?,
        first_seen: v
            .get("first_seen")
            .map(|_| time(v, "first_seen"))
            .transpose()?,
        detected_at: v
            .get("detected_at")
            .map(|_| time(v, "detected_at"))
            .transpose()?,
    })
}

/// A printed alert as the engine's own [`engine::alerts::Alert`], to fold it
/// as the PostgreSQL sink folds the alerts it is sent. The engine's notices
/// (no rule version) belong to no incident. Its identity must be the printed
/// `id`: rule, version, entity and incident start read back as they were.
fn engine_alert(v: &Value) -> Result<engine::alerts::Alert> {
    use engine::alerts::{Notes, State};
    let ns = |field: &str| time(v, field).map(nanos);
    let texts = |field: &str| -> Vec<String> {
        v[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let optional = |field: &str| v[field].as_str().map(String::from);
    let rule_version = optional("rule_version").unwrap_or_default();
    let notes = match v.get("maturity") {
        Some(m) => Some(std::sync::Arc::new(Notes {
            runbook: optional("runbook"),
            false_positives: optional("false_positives"),
            maturity: serde_json::from_value(m.clone())
                .with_context(|| format!("maturity of {v}"))?,
        })),
        None => None,
    };
    let a = engine::alerts::Alert {
        rule_id: required(v, "rule_id")?,
        severity: required(v, "severity")?,
        state: match v["state"].as_str() {
            Some("firing") => State::Firing,
            Some("resolved") => State::Resolved,
            other => bail!("state {other:?} in {v}"),
        },
        entity: strings(&v["entity"]),
        window_start: required(v, "window_start")?,
        window_end: required(v, "window_end")?,
        value: v["value"].clone(),
        tags: texts("tags"),
        summary: required(v, "summary")?,
        trace_ids: texts("trace_ids"),
        at_ns: ns("window_end")?,
        incident_start_ns: match rule_version.is_empty() {
            true => None,
            false => Some(ns("incident_start")?),
        },
        rule_version,
        first_seen_ns: v.get("first_seen").map(|_| ns("first_seen")).transpose()?,
        detected_at_ns: v
            .get("detected_at")
            .map(|_| ns("detected_at"))
            .transpose()?,
        notes,
    };
    ensure!(
        v["id"].as_str() == Some(a.identity().as_str()),
        "the alert read back has the identity {}, the engine printed {v}",
        a.identity()
    );
    Ok(a)
}

/// The alerts of one replay folded into incidents by the engine's own
/// correlator, as the PostgreSQL sink folds them (one correlator per engine
/// run, every alert in the order printed): each incident's last state.
fn correlated(alerts: &[engine::alerts::Alert]) -> Vec<engine::incidents::Incident> {
    let mut correlator = engine::incidents::Correlator::default();
    let mut latest: BTreeMap<String, engine::incidents::Incident> = BTreeMap::new();
    for a in alerts {
        if let Some(inc) = correlator.take(a).update {
            latest.insert(inc.id.clone(), inc);
        }
    }
    latest.into_values().collect()
}

/// The alerts as incidents, in the order they fired: a resolution closes the
/// open incident of its rule and entity.
fn incidents(alerts: &[Alert]) -> Vec<Incident> {
    let mut all: Vec<Incident> = Vec::new();
    let mut open: BTreeMap<(String, BTreeMap<String, String>), usize> = BTreeMap::new();
    for a in alerts {
        let key = (a.rule.clone(), a.entity.clone());
        if a.firing {
            open.insert(key, all.len());
            all.push(Incident {
                firing: a.clone(),
                resolved: None,
            });
        } else if let Some(i) = open.remove(&key) {
            all[i].resolved = Some(a.clone());
        }
    }
    all
}

/// What `postgres: N queued, N written, N retried batches, N dropped` says.
#[derive(Debug)]
struct SinkLine {
    queued: u64,
    written: u64,
    retried: u64,
    dropped: u64,
}

fn sink_line(line: &str) -> Option<SinkLine> {
    let counts = line.strip_prefix("postgres: ")?.split(';').next()?;
    let n: Vec<u64> = counts
        .split(", ")
        .map(|part| part.split_whitespace().next()?.parse().ok())
        .collect::<Option<_>>()?;
    match n.as_slice() {
        [queued, written, retried, dropped] => Some(SinkLine {
            queued: *queued,
            written: *written,
            retried: *retried,
            dropped: *dropped,
        }),
        _ => None,
    }
}

struct Replayed {
    lines: Vec<Value>,
    sink: SinkLine,
    took: Duration,
}

/// How many 100 ms polls a replay gets to end: a guard against a replay that
/// waits for ever (as one did for a store that refused it), not a speed check.
const REPLAY_POLLS: u32 = 6_000;

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// `engine replay CAPTURE --format json --postgres URL [--kpis]`, however it
/// ends, and how long it took.
fn engine_replay(capture: &Path, url: &str, kpis: bool) -> Result<(Output, Duration)> {
    let repo = dashboards::repo_dir();
    let mut cmd = Command::new(e2e::workspace_binary("engine"));
    cmd.arg("replay")
        .arg(capture)
        .arg("--rules")
        .arg(repo.join("rules"))
        .args(["--format", "json", "--postgres", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if kpis {
        cmd.arg("--kpis");
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("running engine replay")?;
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let mut status = None;
    for _ in 0..REPLAY_POLLS {
        status = child.try_wait()?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "engine replay of {} did not end after {REPLAY_POLLS} polls: it waits for a store that does not take its writes",
            capture.display()
        );
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    let text = String::from_utf8_lossy(&output.stderr);
    if text.contains("built without PostgreSQL support") {
        bail!(
            "the engine binary has no `postgres` feature: build it as the workspace does, \
             `cargo build --workspace --bins`"
        );
    }
    Ok((output, started.elapsed()))
}

/// [`engine_replay`], which must succeed: what it printed and what its sink did.
fn replay(capture: &Path, url: &str, kpis: bool) -> Result<Replayed> {
    let (out, took) = engine_replay(capture, url, kpis)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "engine replay failed:\n{stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("a JSON line: {l}")))
        .collect::<Result<Vec<Value>>>()?;
    let sink = stderr
        .lines()
        .find_map(sink_line)
        .ok_or_else(|| anyhow!("no `postgres: ...` line on stderr:\n{stderr}"))?;
    Ok(Replayed { lines, sink, took })
}

// ---------------------------------------------------------------------------
// Rows, as the store gives them and as they should be

#[derive(Debug, Clone)]
enum Cell {
    Null,
    Num(f64),
    Time(DateTime<Utc>),
    Text(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Num(a), Cell::Num(b)) => {
                (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
            }
            (Cell::Time(a), Cell::Time(b)) => a == b,
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl Cell {
    fn rank(&self) -> u8 {
        match self {
            Cell::Null => 0,
            Cell::Num(_) => 1,
            Cell::Time(_) => 2,
            Cell::Text(_) => 3,
        }
    }

    /// A total order, to sort rows whose order the query does not fix.
    fn order(&self, other: &Cell) -> std::cmp::Ordering {
        match (self, other) {
            (Cell::Num(a), Cell::Num(b)) => a.total_cmp(b),
            (Cell::Time(a), Cell::Time(b)) => a.cmp(b),
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

fn num(v: Option<f64>) -> Cell {
    v.map_or(Cell::Null, Cell::Num)
}

fn text(v: Option<&str>) -> Cell {
    v.map_or(Cell::Null, |s| Cell::Text(s.to_string()))
}

fn mean(values: &[f64]) -> Cell {
    if values.is_empty() {
        Cell::Null
    } else {
        Cell::Num(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// A query's answer: column names and rows.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

/// Runs `sql` as Grafana does (the simple query protocol: values come as
/// text) and types each value by its column's type.
async fn run(conn: &mut PgConnection, sql: &str) -> Result<Table> {
    let rows = sqlx::raw_sql(sql).fetch_all(&mut *conn).await?;
    let mut table = Table {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for row in &rows {
        table.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        let mut cells = Vec::new();
        for (i, col) in row.columns().iter().enumerate() {
            let value: Option<String> = row.try_get_unchecked(i)?;
            cells.push(match (col.type_info().name(), value) {
                (_, None) => Cell::Null,
                ("TIMESTAMPTZ", Some(v)) => Cell::Time(
                    DateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f%#z")
                        .with_context(|| format!("timestamptz {v:?}"))?
                        .with_timezone(&Utc),
                ),
                ("FLOAT8" | "FLOAT4" | "NUMERIC" | "INT8" | "INT4" | "INT2", Some(v)) => {
                    Cell::Num(v.parse().with_context(|| format!("number {v:?}"))?)
                }
                (_, Some(v)) => Cell::Text(v),
            });
        }
        table.rows.push(cells);
    }
    Ok(table)
}

async fn count(conn: &mut PgConnection, table: &str) -> Result<u64> {
    let t = run(conn, &format!("SELECT count(*) FROM {table}")).await?;
    match t.rows.first().and_then(|r| r.first()) {
        Some(Cell::Num(n)) => Ok(*n as u64),
        other => bail!("count of {table}: {other:?}"),
    }
}

async fn counts(conn: &mut PgConnection) -> Result<BTreeMap<&'static str, u64>> {
    let mut all = BTreeMap::new();
    for table in ["kpi_values", "alerts", "rules", "correlated_incidents"] {
        all.insert(table, count(conn, table).await?);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------
// What each panel must show

/// The engine's outputs for the capture, as the store should hold them (the
/// last of equal keys wins, as the upserts do).
struct Outputs {
    kpis: Vec<Kpi>,
    incidents: Vec<Incident>,
    /// the correlated incidents, each in its last state
    correlated: Vec<engine::incidents::Incident>,
    runbooks: BTreeMap<String, Option<String>>,
}

impl Outputs {
    fn new(
        kpis: Vec<Kpi>,
        alerts: &[Alert],
        correlated: Vec<engine::incidents::Incident>,
        pack: &dashboards::pack::Pack,
    ) -> Outputs {
        let mut by_key = BTreeMap::new();
        for k in kpis {
            by_key.insert((k.name.clone(), k.start, k.end, k.dims.clone()), k.clone());
        }
        let mut by_firing = BTreeMap::new();
        for i in incidents(alerts) {
            let f = &i.firing;
            by_firing.insert((f.rule.clone(), f.entity.clone(), f.start), i.clone());
        }
        Outputs {
            kpis: by_key.into_values().collect(),
            incidents: by_firing.into_values().collect(),
            correlated,
            runbooks: pack
                .rules
                .iter()
                .map(|r| (r.id.clone(), r.runbook.clone()))
                .collect(),
        }
    }

    /// Rows the `alerts` table should hold: each firing, each resolution.
    fn alert_rows(&self) -> u64 {
        self.incidents
            .iter()
            .map(|i| 1 + u64::from(i.resolved.is_some()))
            .sum()
    }
}

/// Chosen variable values; `None` is All.
#[derive(Debug, Clone, Default)]
struct Selection {
    currency: Option<Vec<String>>,
    rule: Option<Vec<String>>,
    severity: Option<Vec<String>>,
}

impl Selection {
    fn vars(&self) -> BTreeMap<String, Vec<String>> {
        let all = || vec![ALL.to_string()];
        BTreeMap::from([
            ("currency".into(), self.currency.clone().unwrap_or_else(all)),
            ("rule".into(), self.rule.clone().unwrap_or_else(all)),
            ("severity".into(), self.severity.clone().unwrap_or_else(all)),
        ])
    }
}

impl Selection {
    /// The variables as the viewer takes them (`*` for All).
    fn viewer_vars(&self) -> BTreeMap<String, Vec<String>> {
        self.vars()
            .into_iter()
            .map(|(k, v)| {
                let v = if v.iter().any(|x| x == ALL) {
                    vec!["*".to_string()]
                } else {
                    v
                };
                (k, v)
            })
            .collect()
    }
}

/// The outputs as the viewer's frames take them.
struct ViewerRecords {
    kpis: Vec<dashboards::frames::KpiRecord>,
    alerts: Vec<dashboards::frames::AlertRecord>,
    incidents: Vec<dashboards::frames::IncidentRecord>,
    runbooks: BTreeMap<String, String>,
}

impl ViewerRecords {
    fn new(out: &Outputs) -> ViewerRecords {
        let kpis = out
            .kpis
            .iter()
            .map(|k| dashboards::frames::KpiRecord {
                kpi: k.name.clone(),
                window_start: nanos(k.start),
                window_end: nanos(k.end),
                dimensions: k.dims.clone(),
                value: k.value,
            })
            .collect();
        // an incident is known by its start, as in the store
        let record = |a: &Alert, incident_start: DateTime<Utc>| dashboards::frames::AlertRecord {
            rule_id: a.rule.clone(),
            severity: a.severity.clone(),
            state: if a.firing { "firing" } else { "resolved" }.into(),
            entity: a.entity.clone(),
            incident_start: nanos(incident_start),
            window_end: nanos(a.end),
            value: a.value,
            summary: a.summary.clone(),
            trace_ids: a.trace_ids.clone(),
            first_seen: a.first_seen.map(nanos),
            detected_at: a.detected_at.map(nanos),
        };
        let alerts = out
            .incidents
            .iter()
            .flat_map(|i| {
                std::iter::once(record(&i.firing, i.firing.incident))
                    .chain(i.resolved.iter().map(|r| record(r, i.firing.incident)))
            })
            .collect();
        let runbooks = out
            .runbooks
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        // as the engine's board hands them to the viewer
        let incidents = out
            .correlated
            .iter()
            .map(engine::api::panels::incident_record)
            .collect();
        ViewerRecords {
            kpis,
            alerts,
            incidents,
            runbooks,
        }
    }

    fn records(&self) -> dashboards::frames::Records<'_> {
        dashboards::frames::Records {
            kpis: &self.kpis,
            alerts: &self.alerts,
            incidents: &self.incidents,
            runbooks: &self.runbooks,
        }
    }
}

/// Rows read cell by cell with the kind of the frame's column.
fn per_column<T>(
    rows: &[Vec<T>],
    frame: &dashboards::frames::Frame,
    cell: impl Fn(&T, &str) -> Cell,
) -> Vec<Vec<Cell>> {
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&frame.columns)
                .map(|(x, c)| cell(x, c.kind))
                .collect()
        })
        .collect()
}

/// The store's answer and the viewer's frame in the same cells: the
/// frame's times are milliseconds, and a `time` column the store gives as
/// epoch seconds (`$__timeGroupAlias`) is read as a time.
fn as_viewer(got: &Table, frame: &dashboards::frames::Frame) -> (Table, Vec<Vec<Cell>>) {
    let ms = |n: f64| DateTime::from_timestamp_millis(n as i64).map_or(Cell::Null, Cell::Time);
    let store = per_column(&got.rows, frame, |cell, kind| match (cell, kind) {
        (Cell::Num(s), "time") => ms(s * 1000.0),
        (other, _) => other.clone(),
    });
    let viewer = per_column(&frame.rows, frame, |v, kind| match (v, kind) {
        (Value::Null, _) => Cell::Null,
        (v, "time") => v.as_f64().map_or(Cell::Null, ms),
        (v, "number") => v.as_f64().map_or(Cell::Null, Cell::Num),
        (v, _) => Cell::Text(v.as_str().unwrap_or_default().to_string()),
    });
    let table = Table {
        columns: got.columns.clone(),
        rows: store,
    };
    (table, viewer)
}

/// One view of the dashboards: a time range and variable values.
struct View<'a> {
    out: &'a Outputs,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sel: &'a Selection,
}

fn chosen(list: &Option<Vec<String>>, value: Option<&String>) -> bool {
    match list {
        None => true,
        Some(l) => value.is_some_and(|v| l.contains(v)),
    }
}

impl View<'_> {
    fn in_range(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.to
    }

    /// A bucket `[start, start + size)` that overlaps the range.
    fn overlaps(&self, start: DateTime<Utc>, size: TimeDelta) -> bool {
        start <= self.to && start + size > self.from
    }

    fn kpis<'k>(&'k self, name: &'k str, dims: &'k [String]) -> impl Iterator<Item = &'k Kpi> {
        let filtered = dims.iter().any(|d| d == CURRENCY);
        self.out.kpis.iter().filter(move |k| {
            k.name == name && (!filtered || chosen(&self.sel.currency, k.dims.get(CURRENCY)))
        })
    }

    fn firings(&self) -> impl Iterator<Item = &Incident> {
        self.out.incidents.iter().filter(|i| {
            chosen(&self.sel.rule, Some(&i.firing.rule))
                && chosen(&self.sel.severity, Some(&i.firing.severity))
        })
    }

    /// The rows a panel must show, and whether their order is the query's.
    fn expected(&self, check: &Check) -> (Vec<Vec<Cell>>, bool) {
        let metric = |k: &Kpi, dims: &[String]| {
            if dims.is_empty() {
                k.name.clone()
            } else {
                dims.iter()
                    .filter_map(|d| k.dims.get(d).cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        match check {
            Check::KpiSeries { kpi, dimensions } => (
                self.kpis(kpi, dimensions)
                    .filter(|k| self.in_range(k.end))
                    .map(|k| {
                        vec![
                            Cell::Time(k.end),
                            Cell::Text(metric(k, dimensions)),
                            num(k.value),
                        ]
                    })
                    .collect(),
                false,
            ),
            Check::KpiMean { kpi, dimensions } => {
                let earliest = self.from - (self.to - self.from);
                let mut groups: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
                for k in self
                    .kpis(kpi, dimensions)
                    .filter(|k| earliest <= k.end && k.end <= self.to)
                {
                    let (this, previous) = groups.entry(metric(k, dimensions)).or_default();
                    if let Some(v) = k.value {
                        if k.end >= self.from {
                            this.push(v);
                        } else {
                            previous.push(v);
                        }
                    }
                }
                let rows = groups
                    .into_iter()
                    .map(|(m, (this, previous))| vec![Cell::Text(m), mean(&this), mean(&previous)])
                    .collect();
                (rows, false)
            }
            Check::Revenue { bucket } => {
                let size = match *bucket {
                    "hour" => TimeDelta::hours(1),
                    _ => TimeDelta::days(1),
                };
                // (bucket, currency) -> [revenue, orders]
                let mut groups: BTreeMap<_, [Option<f64>; 2]> = BTreeMap::new();
                for k in self.out.kpis.iter().filter(|k| {
                    (k.name == "revenue" || k.name == "orders")
                        && chosen(&self.sel.currency, k.dims.get(CURRENCY))
                }) {
                    let Ok(start) = k.start.duration_trunc(size) else {
                        continue;
                    };
                    if !self.overlaps(start, size) {
                        continue;
                    }
                    let sums = groups
                        .entry((start, k.dims.get(CURRENCY).cloned()))
                        .or_default();
                    let sum = &mut sums[usize::from(k.name == "orders")];
                    if let Some(v) = k.value {
                        *sum = Some(sum.unwrap_or(0.0) + v);
                    }
                }
                let rows = groups
                    .into_iter()
                    .map(|((t, currency), [revenue, orders])| {
                        vec![
                            Cell::Time(t),
                            text(currency.as_deref()),
                            num(revenue),
                            num(orders),
                        ]
                    })
                    .collect();
                (rows, false)
            }
            Check::Funnel { steps } => {
                let rows = steps
                    .iter()
                    .map(|step| {
                        let name = format!("checkout_funnel.{step}");
                        let values: Vec<f64> = self
                            .out
                            .kpis
                            .iter()
                            .filter(|k| k.name == name && self.in_range(k.end))
                            .filter_map(|k| k.value)
                            .collect();
                        let sum = (!values.is_empty()).then(|| values.iter().sum());
                        vec![Cell::Text(step.clone()), num(sum)]
                    })
                    .collect();
                (rows, false)
            }
            Check::AlertsOverTime { by } => {
                let mut groups: BTreeMap<(i64, String), u64> = BTreeMap::new();
                for i in self.firings().filter(|i| self.in_range(i.firing.end)) {
                    let f = &i.firing;
                    let minute = (f.end.timestamp_millis() as f64 / 1000.0 / 60.0).floor() as i64;
                    let value = if *by == "severity" {
                        f.severity.clone()
                    } else {
                        f.rule.clone()
                    };
                    *groups.entry((minute * 60, value)).or_default() += 1;
                }
                let rows = groups
                    .into_iter()
                    .map(|((t, v), n)| {
                        vec![Cell::Num(t as f64), Cell::Text(v), Cell::Num(n as f64)]
                    })
                    .collect();
                (rows, false)
            }
            Check::AlertsHourly => {
                let mut groups: BTreeMap<(DateTime<Utc>, String, String), u64> = BTreeMap::new();
                for i in self.firings() {
                    let f = &i.firing;
                    let Ok(hour) = f.end.duration_trunc(TimeDelta::hours(1)) else {
                        continue;
                    };
                    if self.overlaps(hour, TimeDelta::hours(1)) {
                        *groups
                            .entry((hour, f.rule.clone(), f.severity.clone()))
                            .or_default() += 1;
                    }
                }
                let rows = groups
                    .into_iter()
                    .map(|((h, r, s), n)| {
                        vec![
                            Cell::Time(h),
                            Cell::Text(r),
                            Cell::Text(s),
                            Cell::Num(n as f64),
                        ]
                    })
                    .collect();
                (rows, false)
            }
            Check::TopEntities { limit } => {
                let mut groups: BTreeMap<(String, String), (u64, DateTime<Utc>)> = BTreeMap::new();
                for i in self.firings().filter(|i| self.in_range(i.firing.end)) {
                    let f = &i.firing;
                    let e = groups
                        .entry((f.who(), f.rule.clone()))
                        .or_insert((0, f.end));
                    e.0 += 1;
                    e.1 = e.1.max(f.end);
                }
                let mut rows: Vec<(String, String, u64, DateTime<Utc>)> = groups
                    .into_iter()
                    .map(|((who, rule), (n, last))| (who, rule, n, last))
                    .collect();
                rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
                rows.truncate(*limit);
                let rows = rows
                    .into_iter()
                    .map(|(who, rule, n, last)| {
                        vec![
                            Cell::Text(who),
                            Cell::Text(rule),
                            Cell::Num(n as f64),
                            Cell::Time(last),
                        ]
                    })
                    .collect();
                (rows, true)
            }
            Check::OpenIncidents => {
                let mut open: Vec<&Alert> = self
                    .firings()
                    .filter(|i| i.resolved.is_none())
                    .map(|i| &i.firing)
                    .collect();
                open.sort_by(|a, b| {
                    b.end
                        .cmp(&a.end)
                        .then(a.rule.cmp(&b.rule))
                        .then(a.who().cmp(&b.who()))
                });
                let rows = open
                    .into_iter()
                    .map(|f| {
                        vec![
                            Cell::Time(f.end),
                            Cell::Text(f.rule.clone()),
                            Cell::Text(f.severity.clone()),
                            Cell::Text(f.who()),
                            num(f.value),
                            Cell::Text(f.summary.clone()),
                            Cell::Text(f.trace_ids.join(" ")),
                            text(self.out.runbooks.get(&f.rule).cloned().flatten().as_deref()),
                        ]
                    })
                    .collect();
                (rows, true)
            }
            Check::CorrelatedIncidents => {
                let chosen_rule = |rules: &[String]| match &self.sel.rule {
                    None => true,
                    Some(l) => rules.iter().any(|r| l.contains(r)),
                };
                let mut firing: Vec<&engine::incidents::Incident> = self
                    .out
                    .correlated
                    .iter()
                    .filter(|i| {
                        i.state == engine::alerts::State::Firing
                            && i.start_ns <= nanos(self.to)
                            && chosen_rule(&i.rules)
                            && chosen(&self.sel.severity, Some(&i.highest_severity))
                    })
                    .collect();
                firing.sort_by(|a, b| b.start_ns.cmp(&a.start_ns).then(a.id.cmp(&b.id)));
                let rows = firing
                    .into_iter()
                    .map(|i| {
                        vec![
                            Cell::Time(DateTime::from_timestamp_nanos(i.start_ns)),
                            Cell::Text(i.lead.rule_id.clone()),
                            Cell::Text(i.highest_severity.clone()),
                            Cell::Num(i.entity_count as f64),
                            Cell::Num(i.member_count as f64),
                            Cell::Text(i.rules.join(", ")),
                            // the store holds no NUL
                            Cell::Text(i.summary().replace('\0', "\u{FFFD}")),
                        ]
                    })
                    .collect();
                (rows, true)
            }
            Check::DetectionDelay => {
                // seconds from first evidence to firing, per rule, of the
                // incidents the engine emitted in the range
                let mut delays: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for i in self.firings() {
                    let f = &i.firing;
                    if let (Some(seen), Some(at)) = (f.first_seen, f.detected_at)
                        && self.in_range(at)
                    {
                        let delay = (at - seen).num_microseconds().unwrap_or(i64::MAX);
                        delays
                            .entry(f.rule.clone())
                            .or_default()
                            .push(delay as f64 / 1e6);
                    }
                }
                let rows = delays
                    .into_iter()
                    .map(|(rule, mut d)| {
                        d.sort_by(f64::total_cmp);
                        let n = d.len();
                        // percentile_cont(0.5): between the two middle ones
                        let median = (d[(n - 1) / 2] + d[n / 2]) / 2.0;
                        vec![
                            Cell::Text(rule),
                            Cell::Num(n as f64),
                            Cell::Num(median),
                            Cell::Num(d[n - 1]),
                        ]
                    })
                    .collect();
                (rows, true)
            }
        }
    }
}

/// The rows equal, in the query's order or as multisets.
fn same_rows(got: &Table, mut want: Vec<Vec<Cell>>, ordered: bool) -> Result<()> {
    let mut got_rows = got.rows.clone();
    if !ordered {
        let order = |a: &Vec<Cell>, b: &Vec<Cell>| {
            a.iter()
                .zip(b)
                .map(|(x, y)| x.order(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        };
        got_rows.sort_by(order);
        want.sort_by(order);
    }
    for (n, (g, w)) in got_rows.iter().zip(&want).enumerate() {
        ensure!(
            g == w,
            "row {n} differs (columns {:?}):\n  store:  {g:?}\n  engine: {w:?}",
            got.columns
        );
    }
    ensure!(
        got_rows.len() == want.len(),
        "{} rows from the store, {} from the engine's outputs; first extra: {:?}",
        got_rows.len(),
        want.len(),
        got_rows.get(want.len()).or(want.get(got_rows.len()))
    );
    Ok(())
}

/// What Grafana needs of a `time_series` answer: a `time` column of times
/// or epoch numbers, and numbers in every column but `time` and `metric`.
fn time_series_shape(t: &Table) -> Result<()> {
    if t.rows.is_empty() {
        return Ok(());
    }
    ensure!(
        t.columns.iter().any(|c| c == "time"),
        "no column named time: {:?}",
        t.columns
    );
    for row in &t.rows {
        for (c, cell) in t.columns.iter().zip(row) {
            let fine = match c.as_str() {
                "time" => matches!(cell, Cell::Time(_) | Cell::Num(_)),
                "metric" => matches!(cell, Cell::Text(_) | Cell::Null),
                _ => matches!(cell, Cell::Num(_) | Cell::Null),
            };
            ensure!(fine, "column {c} holds {cell:?}, which Grafana cannot plot");
        }
    }
    Ok(())
}

/// The OTLP/JSON of a flood that is still going on when its capture ends:
/// 4000 requests from `client` in 5 s, all within one slide of the flood
/// rule's window, so that the last window a replay evaluates still holds the
/// flood and its incident stays open. Five minutes after the demo's end.
fn flood(client: &str) -> Value {
    let t0 = DateTime::parse_from_rfc3339("2026-01-15T10:20:01Z")
        .map(|t| nanos(t.with_timezone(&Utc)))
        .unwrap_or_default();
    e2e::engine::spans_every(t0, 0, 4000, 1_250_000, client)
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or_default()
}

// ---------------------------------------------------------------------------

/// Runs `body` in a schema of its own on the stack's PostgreSQL (started if
/// it is not), and drops the schema after, whatever `body` gave.
async fn in_schema<F, Fut>(prefix: &str, body: F) -> Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    e2e::compose::stack(&["up", "postgres"])?;
    let schema = format!("{prefix}_{:x}", e2e::shop::nonce());
    let mut admin = PgConnection::connect(DATABASE)
        .await
        .with_context(|| format!("connecting to {DATABASE}"))?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let done = body(schema.clone()).await;
    let dropped = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await;
    done?;
    dropped.with_context(|| format!("dropping schema {schema}"))?;
    Ok(())
}

/// The URL of the stack's database with `schema` first in the search path.
fn url_of(schema: &str) -> String {
    format!("{DATABASE}?options[search_path]={schema}")
}

/// A capture file of the test's own: one OTLP/JSON line per value.
fn capture_of(name: &str, lines: &[Value]) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("e2e-{name}-{:x}.jsonl", e2e::shop::nonce()));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_panel_shows_what_the_engine_printed() -> Result<()> {
    in_schema(
        "e2e_dashboards",
        |schema| async move { prove(&schema).await },
    )
    .await
}

/// A store that refuses the sink for good (a wrong password, a schema that
/// does not exist) ends the replay with the reason and what to do. Before,
/// the replay retried for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_for_good_fails_the_replay_with_what_to_do() -> Result<()> {
    e2e::compose::stack(&["up", "postgres"])?;
    let capture = capture_of("refused", &[flood("203.0.113.251")])?;
    let missing = format!("e2e_no_such_schema_{:x}", e2e::shop::nonce());
    let cases = [
        (
            DATABASE.replace("otelguard:otelguard@", "otelguard:not-the-password@"),
            "check the user and password",
        ),
        (url_of(&missing), "CREATE SCHEMA"),
    ];
    for (url, says) in cases {
        let (out, _) = engine_replay(&capture, &url, false)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "a refused replay succeeded:\n{stderr}"
        );
        ensure!(
            stderr.contains("refused the BI store's writes") && stderr.contains(says),
            "the error does not say {says:?}:\n{stderr}"
        );
    }
    let _ = std::fs::remove_file(&capture);
    Ok(())
}

/// Text PostgreSQL cannot hold (a NUL in an entity, from telemetry anyone
/// can send) is stored with U+FFFD; before, one such alert stopped the sink
/// for good. And an output PostgreSQL refuses for its data is dropped alone:
/// here a constraint of the test's own refuses one of two alerts of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgres_cannot_take_does_not_stop_the_sink() -> Result<()> {
    in_schema("e2e_bi_refusals", |schema| async move {
        let url = url_of(&schema);
        let nul = capture_of("nul", &[flood("203.0.113.252\0evil")])?;
        let r = replay(&nul, &url, false)?;
        ensure!(
            r.sink.dropped == 0 && r.sink.written == r.sink.queued,
            "{:?}",
            r.sink
        );
        let mut conn = PgConnection::connect(&url).await?;
        let who = run(
            &mut conn,
            "SELECT entity ->> 'client.address' FROM alerts WHERE state = 'firing'",
        )
        .await?;
        ensure!(
            who.rows == vec![vec![Cell::Text("203.0.113.252\u{FFFD}evil".into())]],
            "{:?}",
            who.rows
        );

        sqlx::raw_sql(
            "ALTER TABLE alerts ADD CONSTRAINT e2e_refuses CHECK (entity ->> 'client.address' <> '203.0.113.253')",
        )
        .execute(&mut conn)
        .await?;
        let two = capture_of("two-floods", &[flood("203.0.113.253"), flood("203.0.113.254")])?;
        let r = replay(&two, &url, false)?;
        ensure!(
            r.sink.dropped == 1 && r.sink.written + 1 == r.sink.queued,
            "one alert refused, the rest written: {:?}",
            r.sink
        );
        let who = run(
            &mut conn,
            "SELECT entity ->> 'client.address' FROM alerts WHERE state = 'firing' ORDER BY 1",
        )
        .await?;
        ensure!(
            who.rows
                == vec![
                    vec![Cell::Text("203.0.113.252\u{FFFD}evil".into())],
                    vec![Cell::Text("203.0.113.254".into())]
                ],
            "{:?}",
            who.rows
        );
        for path in [nul, two] {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
    .await
}

async fn prove(schema: &str) -> Result<()> {
    let url = url_of(schema);
    let pack = dashboards::pack::Pack::load(&dashboards::repo_dir().join("rules"))?;

    let mut conn = PgConnection::connect(&url).await?;
    sqlx::raw_sql("SET TIME ZONE 'UTC'")
        .execute(&mut conn)
        .await?;
    // Every incident of the demo has resolved by the end of its capture; a
    // flood still going on when its capture ends leaves one open.
    let open = capture_of("open-flood", &[flood("203.0.113.251")])?;
    let captures = [
        dashboards::repo_dir().join("rules/captures").join(CAPTURE),
        open.clone(),
    ];
    let (mut kpis, mut alerts, mut folded) = (Vec::new(), Vec::new(), Vec::new());
    for capture in &captures {
        let name = capture.file_name().unwrap_or_default().to_string_lossy();
        // Replayed twice: the KPI values printed, then the alerts; both runs
        // write both into the store.
        let first = replay(capture, &url, true)?;
        let after_first = counts(&mut conn).await?;
        let second = replay(capture, &url, false)?;
        let after_second = counts(&mut conn).await?;
        for (run, r) in [("first", &first), ("second", &second)] {
            eprintln!(
                "replay of {name} into PostgreSQL ({run}, {} lines printed): {:.1} s; postgres: {} queued, {} written, {} retried batches, {} dropped",
                r.lines.len(),
                r.took.as_secs_f64(),
                r.sink.queued,
                r.sink.written,
                r.sink.retried,
                r.sink.dropped
            );
            ensure!(
                r.sink.dropped == 0 && r.sink.written == r.sink.queued,
                "the {run} replay of {name} did not write everything: {:?}",
                r.sink
            );
        }
        eprintln!("rows in the store after {name}: {after_first:?}");
        ensure!(
            after_first == after_second,
            "a second replay of {name} changed the row counts: {after_first:?} then {after_second:?}"
        );
        kpis.extend(first.lines.iter().map(kpi).collect::<Result<Vec<_>>>()?);
        alerts.extend(second.lines.iter().map(alert).collect::<Result<Vec<_>>>()?);
        // each replay is an engine of its own, with a correlator of its own
        let printed = second
            .lines
            .iter()
            .map(engine_alert)
            .collect::<Result<Vec<_>>>()?;
        folded.extend(correlated(&printed));
    }
    let _ = std::fs::remove_file(&open);
    let after = counts(&mut conn).await?;
    ensure!(
        !kpis.is_empty() && !alerts.is_empty(),
        "the replays printed nothing"
    );
    let out = Outputs::new(kpis, &alerts, folded, &pack);
    // every firing says when its first evidence was and when the engine
    // emitted it (the detection delay panel's two ends)
    for i in &out.incidents {
        let f = &i.firing;
        ensure!(
            matches!((f.first_seen, f.detected_at), (Some(s), Some(d)) if f.incident <= s && s <= d),
            "a firing without a sound detection delay: {f:?}"
        );
    }
    let want_counts = BTreeMap::from([
        ("kpi_values", out.kpis.len() as u64),
        ("alerts", out.alert_rows()),
        ("rules", pack.rules.len() as u64),
        ("correlated_incidents", out.correlated.len() as u64),
    ]);
    ensure!(
        after == want_counts,
        "the store holds {after:?}; the engine printed {want_counts:?} distinct rows"
    );

    // the capture's time range, and its second half
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = out
        .kpis
        .iter()
        .map(|k| (k.start, k.end))
        .chain(alerts.iter().map(|a| (a.start, a.end)))
        .collect();
    let from = windows.iter().map(|w| w.0).min().context("no output")?;
    let to = windows.iter().map(|w| w.1).max().context("no output")?;
    let middle = (from + (to - from) / 2).duration_trunc(TimeDelta::minutes(1))?;
    let ranges = [("the whole capture", from), ("its second half", middle)];

    let mut currencies: BTreeMap<String, usize> = BTreeMap::new();
    for k in out.kpis.iter().filter(|k| k.name == "orders") {
        if let Some(c) = k.dims.get(CURRENCY) {
            *currencies.entry(c.clone()).or_default() += 1;
        }
    }
    let busiest = currencies
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, _)| c.clone())
        .context("no orders KPI with a currency")?;
    let fired: Vec<&Alert> = out.incidents.iter().map(|i| &i.firing).collect();
    let mut two_rules: Vec<String> = fired.iter().map(|a| a.rule.clone()).collect();
    two_rules.dedup();
    two_rules.truncate(2);
    let selections = [
        Selection::default(),
        Selection {
            currency: Some(vec![busiest]),
            rule: Some(two_rules),
            severity: None,
        },
        Selection {
            currency: Some(currencies.keys().cloned().collect()),
            rule: None,
            severity: Some(vec![
                fired.first().context("no alert fired")?.severity.clone(),
            ]),
        },
    ];

    let records = ViewerRecords::new(&out);
    let (targets, variables) = e2e::dashboards::load()?;
    let sql: Vec<&Target> = targets
        .iter()
        .filter(|t| matches!(t.query, Query::Sql { .. }))
        .collect();
    ensure!(!sql.is_empty(), "no SQL panel");
    let (mut queries, mut rows, mut empty) = (0, 0, BTreeSet::new());
    let mut whole: BTreeMap<String, usize> = BTreeMap::new();
    for (range_name, start) in ranges {
        let range = TimeRange::new(nanos(start), nanos(to), Duration::from_secs(60));
        for (n, sel) in selections.iter().enumerate() {
            let vars = sel.vars();
            let view = View {
                out: &out,
                from: start,
                to,
                sel,
            };
            for t in &sql {
                let Query::Sql { sql, format, check } = &t.query else {
                    continue;
                };
                let context = || format!("{} over {range_name}, variables {sel:?}", t.name());
                let expanded = expand_sql(sql, &range, &vars).with_context(context)?;
                let got = run(&mut conn, &expanded)
                    .await
                    .with_context(|| format!("{}:\n{expanded}", context()))?;
                queries += 1;
                if *format == "time_series" {
                    time_series_shape(&got).with_context(context)?;
                }
                let (want, ordered) = view.expected(check);
                rows += want.len();
                if n == 0 && start == from {
                    whole.insert(t.name(), want.len());
                    if want.is_empty() {
                        empty.insert(t.name());
                    }
                }
                same_rows(&got, want, ordered)
                    .with_context(|| format!("{}:\n{expanded}", context()))?;
                // the engine's viewer draws the same panel from memory
                let viewer = dashboards::frames::frame(
                    check,
                    &records.records(),
                    dashboards::frames::Range {
                        from: nanos(start),
                        to: nanos(to),
                    },
                    &sel.viewer_vars(),
                );
                let (got_as_viewer, viewer_rows) = as_viewer(&got, &viewer);
                same_rows(&got_as_viewer, viewer_rows, ordered).with_context(|| {
                    format!("{}: the viewer's rows (dashboards::frames)", context())
                })?;
            }
        }
    }
    ensure!(
        empty.is_empty(),
        "panels with no rows to compare over the whole capture: {empty:?}"
    );

    let all = Selection::default().vars();
    let range = TimeRange::new(nanos(from), nanos(to), Duration::from_secs(60));
    for v in variables
        .iter()
        .filter(|v| v.datasource == Datasource::Postgres)
    {
        let expanded = expand_sql(&v.query, &range, &all)?;
        let got = run(&mut conn, &expanded)
            .await
            .with_context(|| format!("{} variable {}:\n{expanded}", v.board, v.name))?;
        let values: BTreeSet<Option<String>> = got
            .rows
            .iter()
            .map(|r| match r.first() {
                Some(Cell::Text(s)) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let want: BTreeSet<Option<String>> = match v.name.as_str() {
            "currency" => out
                .kpis
                .iter()
                .filter(|k| k.name == "orders")
                .map(|k| k.dims.get(CURRENCY).cloned())
                .collect(),
            other => bail!(
                "no expectation for the variable {other} of {}; add one here",
                v.board
            ),
        };
        ensure!(
            values == want,
            "{} variable {}: {values:?}, the engine printed {want:?}",
            v.board,
            v.name
        );
        queries += 1;
    }
    eprintln!(
        "{queries} expanded queries run ({} SQL panel queries over 2 ranges and {} variable selections, and the SQL variable queries); {rows} rows compared",
        sql.len(),
        selections.len()
    );
    eprintln!("rows per panel over the whole capture, variables at All: {whole:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// The viewer on the BI store, and `engine run --postgres`

/// A JSON cell for comparing frames: numbers within [`TOLERANCE`].
fn same_cell(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// A frame's rows in an order that does not depend on the database's collation.
fn sorted_rows(frame: &Value) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = frame["rows"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|row| row.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    rows
}

/// `engine demo --postgres` draws the SQL panels from the BI store (the
/// panels' own SQL, expanded as Grafana would): every panel of the Business
/// and Security dashboards shows the same rows as the viewer of a demo
/// without PostgreSQL, which draws them from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_draws_the_panels_from_the_bi_store_when_given_one() -> Result<()> {
    in_schema("e2e_viewer", |schema| async move {
        let url = url_of(&schema);
        let (_stored, stored_err, _o1) =
            e2e::engine::spawn(&["demo", "--postgres", &url, "--listen", "127.0.0.1:0"]);
        let (_memory, memory_err, _o2) = e2e::engine::spawn(&["demo", "--listen", "127.0.0.1:0"]);
        let stored = e2e::engine::address_after(&stored_err, "The viewer is on http://");
        let memory = e2e::engine::address_after(&memory_err, "The viewer is on http://");
        let get = |url: String| async move {
            let r = reqwest::get(&url).await.with_context(|| url.clone())?;
            anyhow::Ok(r.json::<Value>().await?)
        };
        let span = get(format!("http://{memory}/api/dashboards")).await?["span"].clone();
        let range = format!("from={}&to={}", span["from"], span["to"]);
        let mut compared = 0;
        for uid in ["otelguard-business", "otelguard-security"] {
            let d = get(format!("http://{memory}/api/dashboards/{uid}")).await?;
            for p in d["panels"].as_array().into_iter().flatten() {
                if p["targets"].as_array().is_none() {
                    continue;
                }
                let (id, title) = (&p["id"], p["title"].as_str().unwrap_or_default());
                let path = format!("/api/dashboards/{uid}/panels/{id}?{range}");
                let from_store = get(format!("http://{stored}{path}")).await?;
                let from_memory = get(format!("http://{memory}{path}")).await?;
                ensure!(
                    from_store["source"] == "postgres",
                    "{uid} {title}: not drawn from the store: {from_store}"
                );
                let (a, b) = (
                    sorted_rows(&from_store["frames"][0]),
                    sorted_rows(&from_memory["frames"][0]),
                );
                let same = a.len() == b.len()
                    && a.iter().zip(&b).all(|(x, y)| {
                        x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same_cell(u, v))
                    });
                ensure!(
                    same,
                    "{uid} {title}: the store gives {a:?}\nmemory gives {b:?}"
                );
                compared += a.len();
            }
        }
        ensure!(compared > 100, "only {compared} rows compared");
        eprintln!("{compared} panel rows equal from the store and from memory");
        // the currency variable asks the store
        let values = get(format!(
            "http://{stored}/api/dashboards/otelguard-business/variables/currency"
        ))
        .await?;
        ensure!(
            values["values"] == serde_json::json!(["EUR", "GBP", "USD"]),
            "{values}"
        );
        Ok(())
    })
    .await
}

/// `engine run --postgres`: the live engine writes its alerts to the BI store
/// as a durable sink, counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_engine_writes_the_bi_store() -> Result<()> {
    in_schema("e2e_run", |schema| async move {
        let url = url_of(&schema);
        let engine = e2e::engine::run_receiving(&["--postgres", &url]);
        let (api, otlp, out) = (&engine.api, &engine.otlp, &engine.out);
        let t0 = (Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
        for (from, to, who) in [
            (0, 2000, "203.0.113.61"),
            (2000, 4000, "203.0.113.61"),
            (12_000, 12_001, "192.0.2.1"),
        ] {
            e2e::engine::post_traces(otlp, &e2e::engine::spans(t0, from, to, who)).await;
        }
        let client = reqwest::Client::new();
        out.recv_timeout(Duration::from_secs(120))
            .context("an alert on stdout")?;
        let mut conn = PgConnection::connect(&url).await?;
        let mut stored = 0;
        for _ in 0..100 {
            stored = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM alerts WHERE entity ->> 'client.address' = '203.0.113.61'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0);
            if stored > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(stored > 0, "the flood's alert is not in the store");
        // the sinks' counters reach /metrics with the loop's next report
        let (mut delivered, mut metrics) = (0, String::new());
        for _ in 0..100 {
            metrics = client
                .get(format!("http://{api}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            delivered = metrics
                .lines()
                .find_map(|l| l.strip_prefix("otelguard_sink_delivered_total{sink=\"postgres\"} "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if delivered > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(delivered > 0, "no delivery to postgres counted:\n{metrics}");
        Ok(())
    })
    .await
}

/// A PostgreSQL that is down when the engine starts, and comes back: the
/// sink says why once, retries, and writes everything once the store is
/// back (nothing queued meanwhile is lost). The store is reached through a
/// port of the test's own that refuses connections until the test starts
/// forwarding it to the stack's PostgreSQL, so the other tests' store stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_gets_everything_once_it_is_back() -> Result<()> {
    in_schema("e2e_bi_down", |schema| async move {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let url = url_of(&schema).replace("127.0.0.1:55432", &format!("127.0.0.1:{port}"));
        let capture = capture_of("down", &[flood("203.0.113.253")])?;
        let replaying = {
            let (capture, url) = (capture.clone(), url.clone());
            tokio::task::spawn_blocking(move || replay(&capture, &url, false))
        };
        // the store is away for a few seconds, then the port forwards to it
        tokio::time::sleep(Duration::from_secs(4)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let forwarding = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:55432").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        let r = replaying.await??;
        forwarding.abort();
        let _ = std::fs::remove_file(&capture);
        ensure!(
            r.sink.retried > 0,
            "the store was down at first, yet no batch was retried: {:?}",
            r.sink
        );
        ensure!(
            r.sink.dropped == 0 && r.sink.written == r.sink.queued,
            "not everything was written once the store was back: {:?}",
            r.sink
        );
        let mut conn = PgConnection::connect(&url_of(&schema)).await?;
        let alerts = count(&mut conn, "alerts").await?;
        let printed = r.lines.len() as u64;
        ensure!(
            alerts == printed && alerts > 0,
            "{alerts} alert rows in the store, {printed} alerts printed"
        );
        Ok(())
    })
    .await
}
