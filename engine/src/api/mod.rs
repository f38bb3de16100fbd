//! The engine's HTTP API and viewer: alerts, KPI values, rule health, and
//! Prometheus metrics of the engine itself.
//!
//! - `GET /`: the viewer (alerts table, a chart per KPI), reading the API below
//! - `GET /api/alerts`, `GET /api/kpis?kpi=NAME`, `GET /api/rules` (with the
//!   pack's version)
//! - `POST /api/reload`: read the rules folder again (`engine run` only): `200`
//!   with what changed, or `422` with every failing rule's `file:line:col`
//!   while the running pack stays
//! - `GET /api/traces/{id}`: a sample trace of a firing alert, its spans and logs
//! - `GET /api/dashboards…`: the Grafana dashboards and their panels' data ([`panels`])
//! - `GET /metrics`: Prometheus text format
//! - `GET /healthz`

pub mod panels;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::{get, post};
use serde::Deserialize;

use ingest::source::connections::{Guarded, Limits, Refused, answer_within};

use crate::alerts::Alert;
use crate::evaluator::{Output, RuleHealth, Stats};
use crate::kpi::KpiValue;

const KEEP_ALERTS: usize = 10_000;
const KEEP_KPIS: usize = 100_000;
/// Incidents `GET /api/incidents` lists (the board keeps more, for the panels).
const LIST_INCIDENTS: usize = 200;

/// What the API shows; the evaluating task updates it.
#[derive(Default)]
pub struct Board {
    pub alerts: VecDeque<Alert>,
    /// the alerts folded into incidents, each in its latest state, the
    /// 10,000 most recently changed
    pub incidents: crate::incidents::Recent,
    pub kpis: VecDeque<KpiValue>,
    pub rules: Vec<RuleHealth>,
    pub stats: Stats,
    pub rejected: Vec<(String, u64)>,
    pub rule_errors: Vec<String>,
    pub source: String,
    /// each sink's counters, from the fan-out
    pub sinks: Vec<crate::sinks::SinkStats>,
    /// the dashboards of the loaded pack, which the viewer draws
    pub dashboards: Arc<panels::Dashboards>,
    /// the sample traces of firing alerts (the evaluator's)
    pub samples: Arc<Mutex<crate::samples::Samples>>,
    /// Kafka offsets folded into the one before at the commit queue's cap
    pub commit_folded: u64,
    /// connections the API closed (shed at its cap, idle, headers too slow)
    /// and requests it gave up on ([`API_LIMITS`])
    pub api_refused: Arc<std::sync::atomic::AtomicU64>,
    /// the running pack's version ([`crate::rules::RuleSet::version`])
    pub rules_version: String,
    /// reloads of the pack taken and refused
    pub reloads_ok: u64,
    pub reloads_refused: u64,
    /// seconds from the start of `engine run` to its first evaluation of a window
    pub first_evaluation_seconds: Option<f64>,
    /// open incidents (pending or firing) per alerting rule
    pub open_incidents: Vec<(String, u64)>,
    /// the Kafka source's lag per assigned partition (`engine run --kafka`)
    pub kafka_lag: Vec<KafkaLag>,
    /// where `POST /api/reload` asks for a reload (`engine run` only)
    pub reloader: Option<Reloader>,
}

/// How far the Kafka source is behind in one partition, in messages, as
/// librdkafka's statistics last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaLag {
    pub topic: String,
    pub partition: i32,
    /// after the next message to read (`None` before the first read)
    pub unread: Option<i64>,
    /// after the group's committed offset: what a restart reads again
    /// (`None` with no commit yet)
    pub uncommitted: Option<i64>,
}

#[cfg(feature = "kafka")]
impl From<ingest::source::kafka::PartitionLag> for KafkaLag {
    fn from(l: ingest::source::kafka::PartitionLag) -> Self {
        KafkaLag {
            topic: l.topic,
            partition: l.partition,
            unread: l.unread,
            uncommitted: l.uncommitted,
        }
    }
}

/// What a reload asked through [`Reloader`] answers: what changed, or the
/// errors for which the pack was refused.
pub type ReloadAnswer = Result<crate::evaluator::Reloaded, Vec<crate::rules::RuleError>>;

/// Asks the evaluating loop to read the rules folder again; it answers on
/// the one-shot channel sent.
pub type Reloader = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<ReloadAnswer>>;

impl Board {
    pub fn record(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Alert(a) => {
                    self.incidents.take(a);
                    if self.alerts.len() == KEEP_ALERTS {
                        self.alerts.pop_front();
                    }
                    self.alerts.push_back(a.clone());
                }
                Output::Kpi(k) => {
                    if self.kpis.len() == KEEP_KPIS {
                        self.kpis.pop_front();
                    }
                    self.kpis.push_back(k.clone());
                }
            }
        }
    }
}

pub type Shared = Arc<Mutex<Board>>;

fn board(shared: &Shared) -> std::sync::MutexGuard<'_, Board> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The API's routes over `shared`.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("viewer.html")) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/alerts", get(alerts))
        .route("/api/incidents", get(incidents))
        .route("/api/kpis", get(kpis))
        .route("/api/rules", get(rules))
        .route("/api/reload", post(reload))
        .route("/api/traces/{id}", get(trace))
        .route("/api/dashboards", get(panels::list))
        .route("/api/dashboards/{uid}", get(panels::one))
        .route("/api/dashboards/{uid}/panels/{id}", get(panels::panel))
        .route(
            "/api/dashboards/{uid}/variables/{name}",
            get(panels::variable),
        )
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Who may read the API. It shows alerts, the entities they name and sample
/// trace ids, so:
/// - the `Host` header must name the machine it listens on (a loopback name,
///   the address it is bound to, or one given with `--api-host`): a page on
///   another site that rebinds its DNS name to 127.0.0.1 gets 421;
/// - bound anywhere but loopback, a token is required (`--api-token`, or
///   `OTELGUARD_API_TOKEN`), sent as `Authorization: Bearer TOKEN`; without
///   one the engine refuses to start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// the bearer token every request but `/healthz` must carry
    pub token: Option<String>,
    /// the host names (without port) a request may name, besides loopback
    pub hosts: Vec<String>,
}

impl Access {
    /// The access rules for a listener bound to `addr`.
    pub fn for_listener(
        addr: std::net::SocketAddr,
        token: Option<String>,
        mut hosts: Vec<String>,
    ) -> anyhow::Result<Access> {
        let token = token.filter(|t| !t.is_empty());
        if !addr.ip().is_loopback() && token.is_none() {
            anyhow::bail!(
                "the API would listen on {addr}, beyond this machine, with no token: it shows alerts, \
                 the entities they name and trace ids. Give one with --api-token (or OTELGUARD_API_TOKEN), \
                 or listen on 127.0.0.1"
            );
        }
        let ip = addr.ip();
        hosts.push(match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        });
        Ok(Access { token, hosts })
    }

    /// Whether a request's `Host` header (with or without its port) names us.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') =>
            {
                name
            }
            _ => host,
        };
        let name = name.to_ascii_lowercase();
        ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str())
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&name))
    }
}

async fn guard(
    State(access): State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !access.host_allowed(host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this engine does not answer to that Host (see --api-host)\n",
        )
            .into_response();
    }
    if let Some(token) = &access.token
        && request.uri().path() != "/healthz"
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if given.is_none_or(|g| !constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (--api-token)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn alerts(State(s): State<Shared>) -> impl IntoResponse {
    let b = board(&s);
    Json(b.alerts.iter().cloned().collect::<Vec<_>>())
}

/// The latest incidents ([`crate::incidents::Recent`]), the oldest first.
async fn incidents(State(s): State<Shared>) -> impl IntoResponse {
    Json(board(&s).incidents.to_json(LIST_INCIDENTS))
}

#[derive(Deserialize)]
struct KpiQuery {
    kpi: Option<String>,
}

async fn kpis(State(s): State<Shared>, Query(q): Query<KpiQuery>) -> impl IntoResponse {
    let b = board(&s);
    let rows: Vec<KpiValue> = b
        .kpis
        .iter()
        .filter(|k| q.kpi.as_ref().is_none_or(|n| &k.kpi == n))
        .cloned()
        .collect();
    Json(rows)
}

async fn trace(
    State(s): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    let samples = board(&s).samples.clone();
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner());
    match samples.get(&id) {
        Some(t) => Json(t).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("no spans kept for trace {id}: the engine keeps those of the last {} traces firing alerts named", crate::samples::KEEP_TRACES)
            })),
        )
            .into_response(),
    }
}

async fn rules(State(s): State<Shared>) -> impl IntoResponse {
    let b = board(&s);
    Json(serde_json::json!({
        "version": b.rules_version,
        "rules": b.rules,
        "errors": b.rule_errors,
        "source": b.source,
    }))
}

/// `POST /api/reload`: the rules folder read and checked again; `200` with
/// what changed, `422` with the errors (the running pack stays), `404`
/// where the command does not reload.
async fn reload(State(s): State<Shared>) -> axum::response::Response {
    use axum::http::StatusCode;
    let Some(reloader) = board(&s).reloader.clone() else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "this command does not reload its rules (engine run does)"})),
        )
            .into_response();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let answer = match reloader.send(tx).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    match answer {
        Some(Ok(done)) => Json(done).into_response(),
        Some(Err(errors)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": "the rule pack was refused; the running one stays",
                "version": board(&s).rules_version,
                "errors": errors.iter().map(|e| serde_json::json!({
                    "location": e.location.to_string(),
                    "message": e.message,
                    "hint": e.hint,
                })).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the engine is stopping"})),
        )
            .into_response(),
    }
}

/// The engine's own metrics in Prometheus text format.
pub fn render_metrics(b: &Board) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# HELP otelguard_rows_total Rows ingested, by table.\n# TYPE otelguard_rows_total counter"
    );
    for (t, n) in &b.stats.rows {
        let _ = writeln!(m, "otelguard_rows_total{{table=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_late_rows_total Rows that arrived after the watermark.\n# TYPE otelguard_late_rows_total counter"
    );
    let _ = writeln!(m, "otelguard_late_rows_total {}", b.stats.late_rows);
    let _ = writeln!(
        m,
        "# HELP otelguard_resumed_rows_total Rows read again after a restart that only windows evaluated before it held (skipped).\n# TYPE otelguard_resumed_rows_total counter"
    );
    let _ = writeln!(m, "otelguard_resumed_rows_total {}", b.stats.resumed_rows);
    let _ = writeln!(
        m,
        "# HELP otelguard_future_rows_total Live rows dated ahead of the wall clock plus the allowed skew, dropped, by table.\n# TYPE otelguard_future_rows_total counter"
    );
    for (t, n) in &b.stats.future_rows {
        let _ = writeln!(m, "otelguard_future_rows_total{{table=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_rejected_total Messages and records rejected by ingest, by reason.\n# TYPE otelguard_rejected_total counter"
    );
    for (r, n) in &b.rejected {
        let _ = writeln!(m, "otelguard_rejected_total{{reason=\"{r}\"}} {n}");
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_buffered_rows Rows held for open windows.\n# TYPE otelguard_buffered_rows gauge"
    );
    let _ = writeln!(m, "otelguard_buffered_rows {}", b.stats.buffered_rows);
    let _ = writeln!(
        m,
        "# HELP otelguard_buffered_bytes Memory of the rows held for open windows (their Arrow buffers).\n# TYPE otelguard_buffered_bytes gauge"
    );
    let _ = writeln!(m, "otelguard_buffered_bytes {}", b.stats.buffered_bytes);
    family(
        &mut m,
        "otelguard_buffer_refused_rows_total",
        "On-time rows not held for their windows: the buffer was at its cap (--max-buffered-rows), by table.",
        by("table", &b.stats.buffer_refused_rows),
    );
    family(
        &mut m,
        "otelguard_incidents_refused_total",
        "Findings for a new entity refused: the rule had its cap of open incidents (--max-incidents), by rule.",
        by("rule", &b.stats.incidents_refused),
    );
    family(
        &mut m,
        "otelguard_suppressions_forgotten_total",
        "Entities forgotten while still suppressed: the rule remembered its cap of them (--max-incidents), by rule.",
        by("rule", &b.stats.suppressions_forgotten),
    );
    let rollups = &b.stats.rollups;
    family(
        &mut m,
        "otelguard_rollup_keys_evicted_total",
        "Dimension sets a kept KPI dropped at its max_keys (the one seen least recently), by KPI.",
        rollups
            .iter()
            .map(|(k, r)| (format!("{{kpi=\"{k}\"}}"), r.evicted)),
    );
    for (name, help, figure) in [
        (
            "otelguard_rollup_keys",
            "Dimension sets a kept KPI holds (rollups and baselines), by KPI.",
            (|r| r.keys) as fn(&crate::rules::rollup::RollupStats) -> usize,
        ),
        (
            "otelguard_rollup_buckets",
            "Windows and hourly sums a kept KPI holds, by KPI.",
            |r| r.buckets,
        ),
    ] {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (k, r) in rollups {
            let _ = writeln!(m, "{name}{{kpi=\"{k}\"}} {}", figure(r));
        }
    }
    family(
        &mut m,
        "otelguard_commit_queue_folded_total",
        "Kafka offsets waiting to be committed folded into the one before them: the queue was at its cap; they are committed later, together.",
        [(String::new(), b.commit_folded)],
    );
    if let Some(w) = b.stats.watermark_ns {
        let _ = writeln!(
            m,
            "# HELP otelguard_watermark_seconds The event-time watermark.\n# TYPE otelguard_watermark_seconds gauge"
        );
        let _ = writeln!(m, "otelguard_watermark_seconds {}", w as f64 / 1e9);
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_rule_enabled Whether a rule runs (0 once disabled after repeated failures).\n# TYPE otelguard_rule_enabled gauge"
    );
    for r in &b.rules {
        let _ = writeln!(
            m,
            "otelguard_rule_enabled{{rule=\"{}\",kind=\"{}\"}} {}",
            r.id,
            r.kind,
            u8::from(r.enabled)
        );
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_alerts_fired_total Firing alerts, by rule.\n# TYPE otelguard_alerts_fired_total counter"
    );
    for r in b.rules.iter().filter(|r| r.kind == "alert") {
        let _ = writeln!(
            m,
            "otelguard_alerts_fired_total{{rule=\"{}\"}} {}",
            r.id, r.fired
        );
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_alerts_fired_early_total Firing alerts sent before their window closed, by monotone rule.\n# TYPE otelguard_alerts_fired_early_total counter"
    );
    for r in b.rules.iter().filter(|r| r.kind == "alert" && r.monotone) {
        let _ = writeln!(
            m,
            "otelguard_alerts_fired_early_total{{rule=\"{}\"}} {}",
            r.id, r.fired_early
        );
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_early_passes_total Passes of the monotone rules over open windows.\n# TYPE otelguard_early_passes_total counter\notelguard_early_passes_total {}\n# HELP otelguard_early_withdrawn_total Early firings the close did not confirm, resolved.\n# TYPE otelguard_early_withdrawn_total counter\notelguard_early_withdrawn_total {}",
        b.stats.early_passes, b.stats.early_withdrawn
    );
    let _ = writeln!(
        m,
        "# HELP otelguard_rule_failures Consecutive failed evaluations, by rule.\n# TYPE otelguard_rule_failures gauge"
    );
    for r in &b.rules {
        let _ = writeln!(
            m,
            "otelguard_rule_failures{{rule=\"{}\"}} {}",
            r.id, r.failures
        );
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_rule_eval_seconds Time a rule's evaluation of a session of windows took, by rule.\n# TYPE otelguard_rule_eval_seconds histogram"
    );
    for r in &b.rules {
        for (le, n) in r.eval_seconds.cumulative() {
            let _ = writeln!(
                m,
                "otelguard_rule_eval_seconds_bucket{{rule=\"{}\",le=\"{le}\"}} {n}",
                r.id
            );
        }
        let _ = writeln!(
            m,
            "otelguard_rule_eval_seconds_sum{{rule=\"{}\"}} {}\notelguard_rule_eval_seconds_count{{rule=\"{}\"}} {}",
            r.id, r.eval_seconds.sum, r.id, r.eval_seconds.count
        );
    }
    let _ = writeln!(
        m,
        "# HELP otelguard_api_refused_total Connections the API closed (shed at its cap, idle, headers too slow) and requests it gave up on.\n# TYPE otelguard_api_refused_total counter"
    );
    let _ = writeln!(
        m,
        "otelguard_api_refused_total {}",
        b.api_refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    family(
        &mut m,
        "otelguard_rules_reloads_total",
        "Reloads of the rule pack (SIGHUP, POST /api/reload), by result: ok, or refused for a rule that failed its check.",
        [
            ("{result=\"ok\"}".to_string(), b.reloads_ok),
            ("{result=\"refused\"}".to_string(), b.reloads_refused),
        ],
    );
    if let Some(seconds) = b.first_evaluation_seconds {
        let _ = writeln!(
            m,
            "# HELP otelguard_first_evaluation_seconds Seconds from the start to the first evaluation of a window (how fast a restart is back at work).\n# TYPE otelguard_first_evaluation_seconds gauge\notelguard_first_evaluation_seconds {seconds}"
        );
    }
    render_sinks(&mut m, &b.sinks);
    render_incidents_and_lag(&mut m, b);
    m
}

/// Open incidents per rule, and the Kafka source's lag per partition.
fn render_incidents_and_lag(m: &mut String, b: &Board) {
    let _ = writeln!(
        m,
        "# HELP otelguard_incidents_open Open incidents (pending or firing), by rule.\n# TYPE otelguard_incidents_open gauge"
    );
    for (rule, n) in &b.open_incidents {
        let _ = writeln!(m, "otelguard_incidents_open{{rule=\"{rule}\"}} {n}");
    }
    if b.kafka_lag.is_empty() {
        return;
    }
    type Lag = fn(&KafkaLag) -> Option<i64>;
    let families: [(&str, &str, Lag); 2] = [
        (
            "otelguard_kafka_consumer_lag",
            "Messages of a Kafka partition after the group's committed offset (what a restart reads again; commits wait for windows to close and sinks to deliver).",
            |l| l.uncommitted,
        ),
        (
            "otelguard_kafka_unread",
            "Messages of a Kafka partition the engine has not read yet.",
            |l| l.unread,
        ),
    ];
    for (name, help, figure) in families {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
        for l in &b.kafka_lag {
            if let Some(n) = figure(l) {
                let _ = writeln!(
                    m,
                    "{name}{{topic=\"{}\",partition=\"{}\"}} {n}",
                    l.topic, l.partition
                );
            }
        }
    }
}

/// One counter family: its HELP and TYPE lines, then a line per (labels, value).
fn family(m: &mut String, name: &str, help: &str, rows: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, n) in rows {
        let _ = writeln!(m, "{name}{labels} {n}");
    }
}

/// Counts by one label, as [`family`] rows.
fn by<K: std::fmt::Display>(
    label: &str,
    counts: &std::collections::BTreeMap<K, u64>,
) -> Vec<(String, u64)> {
    counts
        .iter()
        .map(|(k, n)| (format!("{{{label}=\"{k}\"}}"), *n))
        .collect()
}

/// The sinks' counters: `otelguard_sink_*{sink="..."}`.
fn render_sinks(m: &mut String, sinks: &[crate::sinks::SinkStats]) {
    type Figure = fn(&crate::sinks::SinkStats) -> u64;
    let families: [(&str, &str, &str, Figure); 6] = [
        (
            "otelguard_sink_queued_total",
            "counter",
            "Outputs taken onto a sink's queue.",
            |s| s.queued,
        ),
        (
            "otelguard_sink_delivered_total",
            "counter",
            "Outputs a sink delivered.",
            |s| s.delivered,
        ),
        (
            "otelguard_sink_retried_total",
            "counter",
            "Deliveries a sink tried again after a failure.",
            |s| s.retried,
        ),
        (
            "otelguard_sink_dropped_total",
            "counter",
            "Outputs a sink dropped: its queue was full, or it refused them.",
            |s| s.dropped,
        ),
        (
            "otelguard_sink_queue_depth",
            "gauge",
            "Outputs queued for a sink and not yet delivered.",
            |s| s.depth,
        ),
        (
            "otelguard_sink_delivered_batch",
            "gauge",
            "The highest batch sequence number a sink has fully delivered (Kafka commits wait on the durable sinks').",
            |s| s.progress,
        ),
    ];
    if sinks.is_empty() {
        return;
    }
    for (name, kind, help, figure) in families {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in sinks {
            let _ = writeln!(m, "{name}{{sink=\"{}\"}} {}", s.sink, figure(s));
        }
    }
}

#[cfg(test)]
mod eval_time_tests {
    #[test]
    fn a_rules_evaluation_time_is_a_cumulative_histogram() {
        let mut durations = crate::evaluator::Durations::default();
        for s in [0.0004, 0.003, 0.003, 7.0] {
            durations.observe(s);
        }
        let board = super::Board {
            rules: vec![crate::evaluator::RuleHealth {
                id: "dos.flood".into(),
                kind: "alert",
                enabled: true,
                failures: 0,
                last_error: None,
                evaluations: 4,
                fired: 0,
                eval_seconds: durations,
                monotone: false,
                fired_early: 0,
            }],
            ..Default::default()
        };
        let text = super::render_metrics(&board);
        for line in [
            "# TYPE otelguard_rule_eval_seconds histogram",
            "otelguard_rule_eval_seconds_bucket{rule=\"dos.flood\",le=\"0.001\"} 1",
            "otelguard_rule_eval_seconds_bucket{rule=\"dos.flood\",le=\"0.0025\"} 1",
            "otelguard_rule_eval_seconds_bucket{rule=\"dos.flood\",le=\"0.005\"} 3",
            "otelguard_rule_eval_seconds_bucket{rule=\"dos.flood\",le=\"2.5\"} 3",
            "otelguard_rule_eval_seconds_bucket{rule=\"dos.flood\",le=\"+Inf\"} 4",
            "otelguard_rule_eval_seconds_count{rule=\"dos.flood\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

#[cfg(test)]
mod cap_metrics_tests {
    #[test]
    fn what_every_cap_refuses_is_a_counter() {
        let mut board = super::Board {
            commit_folded: 4,
            ..Default::default()
        };
        board.stats.buffer_refused_rows.insert("spans", 7);
        board.stats.incidents_refused.insert("dos.flood".into(), 2);
        board
            .stats
            .suppressions_forgotten
            .insert("dos.flood".into(), 1);
        let text = super::render_metrics(&board);
        for line in [
            "otelguard_buffer_refused_rows_total{table=\"spans\"} 7",
            "otelguard_incidents_refused_total{rule=\"dos.flood\"} 2",
            "otelguard_suppressions_forgotten_total{rule=\"dos.flood\"} 1",
            "otelguard_commit_queue_folded_total 4",
            "# TYPE otelguard_commit_queue_folded_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

#[cfg(test)]
mod incidents_and_lag_tests {
    use super::{Board, KafkaLag};

    #[test]
    fn metrics_show_open_incidents_per_rule_and_lag_per_partition() {
        let mut board = Board::default();
        let text = super::render_metrics(&board);
        assert!(
            !text.contains("otelguard_kafka_"),
            "no Kafka source, no lag: {text}"
        );
        board.open_incidents = vec![("dos.flood".into(), 3)];
        board.kafka_lag = vec![
            KafkaLag {
                topic: "otlp_spans".into(),
                partition: 2,
                unread: Some(0),
                uncommitted: Some(41),
            },
            KafkaLag {
                topic: "otlp_logs".into(),
                partition: 0,
                unread: None,
                uncommitted: None,
            },
        ];
        let text = super::render_metrics(&board);
        for line in [
            "# TYPE otelguard_incidents_open gauge",
            "otelguard_incidents_open{rule=\"dos.flood\"} 3",
            "otelguard_kafka_consumer_lag{topic=\"otlp_spans\",partition=\"2\"} 41",
            "otelguard_kafka_unread{topic=\"otlp_spans\",partition=\"2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(
            !text.contains("topic=\"otlp_logs\""),
            "unknown lag is not shown: {text}"
        );
    }
}

#[cfg(test)]
mod sink_metrics_tests {
    #[test]
    fn every_sink_counter_is_a_metric() {
        let board = super::Board {
            sinks: vec![crate::sinks::SinkStats {
                sink: "alertmanager".into(),
                durable: true,
                queued: 7,
                delivered: 5,
                retried: 2,
                dropped: 1,
                depth: 2,
                progress: 4,
            }],
            ..Default::default()
        };
        let text = super::render_metrics(&board);
        for line in [
            "otelguard_sink_queued_total{sink=\"alertmanager\"} 7",
            "otelguard_sink_delivered_total{sink=\"alertmanager\"} 5",
            "otelguard_sink_retried_total{sink=\"alertmanager\"} 2",
            "otelguard_sink_dropped_total{sink=\"alertmanager\"} 1",
            "otelguard_sink_queue_depth{sink=\"alertmanager\"} 2",
            "# TYPE otelguard_sink_queue_depth gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let text = render_metrics(&board(&s));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Binds the API's address, with an error that says what to do, and says where.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = bind_quietly(addr).await?;
    eprintln!("viewer and API on http://{}/", listener.local_addr()?);
    Ok(listener)
}

/// Binds the API's address, with an error that says what to do.
pub async fn bind_quietly(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another engine running? pick another with --listen)"
        )
    })
}

/// The API's connections: at most this many open (one more sheds the
/// longest idle), each closed after 30 s without a byte moving or 10 s
/// without its request's headers complete; a request is answered within
/// [`API_REQUEST_TIMEOUT`] or gets `408`. The same sockets as the OTLP
/// receiver's (`ingest::source::connections`).
pub const API_LIMITS: Limits = Limits {
    max_connections: 256,
    idle_timeout: std::time::Duration::from_secs(30),
    header_timeout: Some(std::time::Duration::from_secs(10)),
};

/// See [`API_LIMITS`].
pub const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the API on a bound listener until the process ends, to the
/// requests `access` lets in, within [`API_LIMITS`].
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    shared: Shared,
    access: Access,
) -> anyhow::Result<()> {
    serve_within(listener, shared, access, API_LIMITS, API_REQUEST_TIMEOUT).await
}

/// [`serve_on`] with other limits. Every connection closed and request
/// given up on counts in `otelguard_api_refused_total`, and is logged once.
pub async fn serve_within(
    listener: tokio::net::TcpListener,
    shared: Shared,
    access: Access,
    limits: Limits,
    request_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    let counter = board(&shared).api_refused.clone();
    let logged = Arc::new(std::sync::Once::new());
    let refused: Refused = Arc::new(move |detail: &str, what: &str| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        logged.call_once(|| tracing::warn!(%detail, "API: {what} (logged once; counted in otelguard_api_refused_total)"));
        tracing::debug!(%detail, "API: {what}");
    });
    let timeout_refused = refused.clone();
    let app = router(shared)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            guard,
        ))
        .layer(axum::middleware::from_fn(
            move |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>, request, next| {
                answer_within(
                    request_timeout,
                    timeout_refused.clone(),
                    peer,
                    request,
                    next,
                )
            },
        ))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = Guarded::new(listener, limits, refused);
    // (`tap_io` does nothing here: it lets axum give handlers the peer's SocketAddr)
    axum::serve(listener.tap_io(|_| {}), app).await?;
    Ok(())
}

#[cfg(test)]
mod access_tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The status code of one raw HTTP/1.1 request, so the test chooses the Host header.
    async fn status(addr: std::net::SocketAddr, path: &str, headers: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_api_answers_only_to_its_own_host_and_token() {
        let listener = bind_quietly("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let access =
            Access::for_listener(addr, Some("s3cret".into()), vec!["engine.internal".into()])
                .unwrap();
        tokio::spawn(serve_on(listener, Shared::default(), access));
        let host = format!("Host: {addr}\r\n");
        let bearer = "Authorization: Bearer s3cret\r\n";
        assert_eq!(
            status(addr, "/api/alerts", &format!("{host}{bearer}")).await,
            200
        );
        assert_eq!(
            status(
                addr,
                "/api/alerts",
                &format!("Host: localhost:8080\r\n{bearer}")
            )
            .await,
            200
        );
        assert_eq!(
            status(
                addr,
                "/api/alerts",
                &format!("Host: engine.internal\r\n{bearer}")
            )
            .await,
            200
        );
        // DNS rebinding: a page of another site whose name now points here
        assert_eq!(
            status(
                addr,
                "/api/alerts",
                &format!("Host: attacker.example\r\n{bearer}")
            )
            .await,
            421
        );
        assert_eq!(
            status(
                addr,
                "/api/alerts",
                &format!("Host: 127.0.0.1.attacker.example\r\n{bearer}")
            )
            .await,
            421
        );
        assert_eq!(
            status(addr, "/api/alerts", bearer).await,
            421,
            "no Host at all"
        );
        // the token
        assert_eq!(status(addr, "/api/alerts", &host).await, 401);
        assert_eq!(
            status(
                addr,
                "/metrics",
                &format!("{host}Authorization: Bearer s3creT\r\n")
            )
            .await,
            401
        );
        assert_eq!(status(addr, "/healthz", &host).await, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_hundred_idle_connections_do_not_make_the_api_unreachable() {
        let listener = bind_quietly("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let access = Access::for_listener(addr, None, vec![]).unwrap();
        let shared = Shared::default();
        let limits = Limits {
            max_connections: 32,
            ..API_LIMITS
        };
        tokio::spawn(serve_within(
            listener,
            shared.clone(),
            access,
            limits,
            API_REQUEST_TIMEOUT,
        ));
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let host = format!("Host: {addr}\r\n");
        assert_eq!(status(addr, "/api/alerts", &host).await, 200);
        // every connection over the cap shed an idle one, and says so
        let refused = board(&shared)
            .api_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(refused > 300 - 32, "{refused}");
        eprintln!(
            "hostile input: API, 300 idle connections at a cap of 32: {refused} closed, /api/alerts answered 200"
        );
        let metrics = render_metrics(&board(&shared));
        assert!(
            metrics.contains(&format!("otelguard_api_refused_total {refused}")),
            "{metrics}"
        );
        drop(idle);
    }

    #[test]
    fn beyond_loopback_the_api_needs_a_token() {
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let err = Access::for_listener(any, None, vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--api-token"), "{err}");
        assert!(Access::for_listener(any, Some(String::new()), vec![]).is_err());
        assert!(Access::for_listener(any, Some("t".into()), vec![]).is_ok());
        let local: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(Access::for_listener(local, None, vec![]).is_ok());
    }
}
