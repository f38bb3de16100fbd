//! The engine's HTTP API and viewer: alerts, KPI values, rule health, and
//! Prometheus metrics of the engine itself.
//!
//! - `GET /`: the viewer (alerts table, a chart per KPI), reading the API below
//! - `GET /api/alerts`, `GET /api/kpis?kpi=NAME`, `GET /api/rules`
//! - `GET /metrics`: Prometheus text format
//! - `GET /healthz`

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;

use crate::alerts::Alert;
use crate::evaluator::{Output, RuleHealth, Stats};
use crate::kpi::KpiValue;

const KEEP_ALERTS: usize = 10_000;
const KEEP_KPIS: usize = 100_000;

/// What the API shows; the evaluating task updates it.
#[derive(Default)]
pub struct Board {
    pub alerts: VecDeque<Alert>,
    pub kpis: VecDeque<KpiValue>,
    pub rules: Vec<RuleHealth>,
    pub stats: Stats,
    pub rejected: Vec<(String, u64)>,
    pub rule_errors: Vec<String>,
    pub source: String,
}

impl Board {
    pub fn record(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Alert(a) => {
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
        .route("/api/kpis", get(kpis))
        .route("/api/rules", get(rules))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn alerts(State(s): State<Shared>) -> impl IntoResponse {
    let b = board(&s);
    Json(b.alerts.iter().cloned().collect::<Vec<_>>())
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

async fn rules(State(s): State<Shared>) -> impl IntoResponse {
    let b = board(&s);
    Json(serde_json::json!({ "rules": b.rules, "errors": b.rule_errors, "source": b.source }))
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
        "# HELP otelguard_rule_failures Consecutive failed evaluations, by rule.\n# TYPE otelguard_rule_failures gauge"
    );
    for r in &b.rules {
        let _ = writeln!(
            m,
            "otelguard_rule_failures{{rule=\"{}\"}} {}",
            r.id, r.failures
        );
    }
    m
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let text = render_metrics(&board(&s));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Binds the API's address, with an error that says what to do.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another engine running? pick another with --listen)"
        )
    })?;
    eprintln!("viewer and API on http://{}/", listener.local_addr()?);
    Ok(listener)
}

/// Serves the API on a bound listener until the process ends.
pub async fn serve_on(listener: tokio::net::TcpListener, shared: Shared) -> anyhow::Result<()> {
    axum::serve(listener, router(shared)).await?;
    Ok(())
}

/// Binds `addr` and serves the API until the process ends.
pub async fn serve(addr: &str, shared: Shared) -> anyhow::Result<()> {
    serve_on(bind(addr).await?, shared).await
}
