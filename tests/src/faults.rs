//! What the crash and fault tests share: reading the engine's `/metrics`,
//! stopping it the way a service manager does, the outputs it printed, and a
//! guard that starts the shared stack's components again however a test ends.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::engine::Engine;

/// The value of the first line of the engine's `/metrics` that starts with
/// `line_start` (`NAME{LABELS}` or `NAME`); `None` while the API does not
/// answer or has no such line.
pub async fn metric(api: &str, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `metric` (5 times a second, at most `polls` times) until its value
/// reaches `at_least`; the last value read.
pub async fn wait_metric(api: &str, line_start: &str, at_least: f64, polls: u32) -> f64 {
    let mut last = 0.0;
    for _ in 0..polls {
        last = metric(api, line_start).await.unwrap_or(last);
        if last >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// A SERVER span of the gateway at `t` (ns), 2 ms long, from `client`, with
/// trace id `run` then `id` and span id `id` (OTLP/JSON).
pub fn gateway_span(t: i64, id: u64, run: u64, client: &str, status: i64) -> Value {
    serde_json::json!({
        "traceId": format!("{run:016x}{id:016x}"), "spanId": format!("{id:016x}"),
        "name": "GET /api/products/{id}", "kind": 2,
        "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 2_000_000).to_string(),
        "attributes": [
            {"key": "client.address", "value": {"stringValue": client}},
            {"key": "http.route", "value": {"stringValue": "/api/products/{id}"}},
            {"key": "http.response.status_code", "value": {"intValue": status}},
        ],
    })
}

/// Sends SIGTERM (the engine drains: evaluates, delivers, commits) and waits
/// for the process to exit; SIGKILL after `grace`. Whether it exited by itself.
pub fn terminate(engine: &mut Engine, grace: Duration) -> bool {
    let pid = engine.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let polls = grace.as_millis() / 100;
    for _ in 0..polls {
        if let Ok(Some(_)) = engine.0.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Every line left on `lines` until its writer is gone (the process exited
/// and its output was read to the end) or nothing came for `quiet`.
pub fn drain(lines: &mpsc::Receiver<String>, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(quiet) {
        out.push(line);
    }
    out
}

/// An alert as the stdout sink prints it, reduced to what a replay of the
/// same records must give as well (trace ids are a sample and may differ).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertLine {
    pub rule_id: String,
    pub entity: String,
    pub window_start: String,
    pub window_end: String,
    pub state: String,
    pub value: String,
}

/// A KPI value's key: (kpi, window start and end in Unix milliseconds,
/// dimensions as JSON text).
pub type KpiKey = (String, i64, i64, String);

/// KPI values by key.
pub type Kpis = BTreeMap<KpiKey, Option<f64>>;

/// Unix milliseconds of an RFC 3339 time.
fn millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|e| panic!("not an RFC 3339 time ({e}): {text}"))
}

/// Splits the engine's JSON output lines (`--format json`) into alerts (in
/// the order printed) and KPI values. A line that is not JSON is an error
/// naming it.
pub fn outputs(lines: &[String]) -> (Vec<AlertLine>, Vec<(KpiKey, Option<f64>)>) {
    let mut alerts = Vec::new();
    let mut kpis = Vec::new();
    for line in lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON output line ({e}): {line}"));
        let text = |key: &str| match &v[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if v.get("rule_id").is_some() {
            alerts.push(AlertLine {
                rule_id: text("rule_id"),
                entity: v["entity"].to_string(),
                window_start: text("window_start"),
                window_end: text("window_end"),
                state: text("state"),
                value: v["value"].to_string(),
            });
        } else if v.get("kpi").is_some() {
            let key = (
                text("kpi"),
                millis(&text("window_start")),
                millis(&text("window_end")),
                v["dimensions"].to_string(),
            );
            kpis.push((key, v["value"].as_f64()));
        }
    }
    (alerts, kpis)
}

/// The stack's PostgreSQL, the BI store the engine's `--postgres` writes.
pub const DATABASE: &str = "postgres://otelguard:otelguard@127.0.0.1:55432/otelguard";

/// A schema of a test's own in the BI store.
pub struct Schema(pub String);

impl Schema {
    /// Creates `PREFIX_<nonce>` (starting PostgreSQL if it is not running).
    pub async fn create(prefix: &str) -> Schema {
        use engine::sinks::postgres::sqlx::{self, Connection as _};
        crate::compose::stack(&["up", "postgres"]).expect("the stack's PostgreSQL");
        let name = format!("{prefix}_{:x}", crate::shop::nonce());
        let mut admin = sqlx::postgres::PgConnection::connect(DATABASE)
            .await
            .unwrap_or_else(|e| panic!("connecting to {DATABASE}: {e}"));
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e}"));
        Schema(name)
    }

    /// The store's URL with this schema first in the search path.
    pub fn url(&self) -> String {
        format!("{DATABASE}?options[search_path]={}", self.0)
    }

    /// Every KPI value the engine wrote into this schema.
    pub async fn kpis(&self) -> Kpis {
        use engine::sinks::postgres::sqlx::{self, Connection as _, Row as _};
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()));
        let rows = sqlx::query(
            "SELECT kpi, (extract(epoch FROM window_start) * 1000)::bigint AS s,
                    (extract(epoch FROM window_end) * 1000)::bigint AS e,
                    dimensions::text AS d, value FROM kpi_values",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("reading kpi_values of schema {}: {e}", self.0));
        rows.iter()
            .map(|r| {
                let dims: Value =
                    serde_json::from_str(&r.get::<String, _>("d")).expect("dimensions are JSON");
                let key = (r.get("kpi"), r.get("s"), r.get("e"), dims.to_string());
                (key, r.get::<Option<f64>, _>("value"))
            })
            .collect()
    }

    /// Drops the schema and what it holds.
    pub async fn drop_all(self) {
        use engine::sinks::postgres::sqlx::{self, Connection as _};
        if let Ok(mut admin) = sqlx::postgres::PgConnection::connect(DATABASE).await
            && let Err(e) = sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.0))
                .execute(&mut admin)
                .await
        {
            eprintln!("could not drop schema {}: {e}", self.0);
        }
    }
}

/// Starts components of the local stack again when dropped, however the
/// test that stopped them ends (`compose/local/stack up NAMES`).
pub struct Restart(pub &'static [&'static str]);

impl Drop for Restart {
    fn drop(&mut self) {
        let mut args = vec!["up"];
        args.extend_from_slice(self.0);
        if let Err(e) = crate::compose::stack(&args) {
            eprintln!(
                "could not start {:?} again ({e:#}): run `compose/local/stack up`",
                self.0
            );
        }
    }
}
