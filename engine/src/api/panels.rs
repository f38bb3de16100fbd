//! The Grafana dashboards in the engine's viewer, for a user without Grafana.
//!
//! The engine generates the same dashboards the `dashboards` crate commits
//! (from the rule pack it loaded) and serves them with the data of their
//! panels:
//!
//! - `GET /api/dashboards`: `{dashboards: [{uid, title, datasource}], span: {from, to}}`,
//!   the span being the event time the engine holds data for (milliseconds)
//! - `GET /api/dashboards/{uid}`: the dashboard's Grafana JSON, as committed
//! - `GET /api/dashboards/{uid}/panels/{id}?from=MS&to=MS&var-NAME=A,B`: one
//!   frame per query of the panel (`{columns, rows}`), computed from the KPI
//!   values, alerts and correlated incidents in memory with the same rows the
//!   panel's SQL gives on the BI store (`dashboards::frames`); a panel that
//!   reads Prometheus says so
//! - `GET /api/dashboards/{uid}/variables/{name}`: the values a variable offers

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use dashboards::frames::{AlertRecord, IncidentRecord, KpiRecord, Range, Records};
use dashboards::grafana::{Board as Dashboard, Query as PanelQuery, Variable};
use serde_json::{Value, json};

use super::{Board, Shared, board};
use crate::alerts::{Alert, State as AlertState};
use crate::incidents::Incident;
use crate::kpi::KpiValue;

#[cfg(feature = "postgres")]
mod store;

/// The dashboards of the loaded pack, and the rules' runbooks.
#[derive(Debug, Default)]
pub struct Dashboards {
    boards: Vec<Dashboard>,
    runbooks: BTreeMap<String, String>,
    /// why there are none, when the pack's headers did not read
    error: Option<String>,
    /// the BI store the SQL panels read, when the engine writes one
    #[cfg(feature = "postgres")]
    store: Option<sqlx::PgPool>,
}

impl Dashboards {
    /// The dashboards generated from the rule pack in `rules_dir`. A pack the
    /// generator cannot read leaves the viewer without dashboards (and says
    /// why at `/api/dashboards`); the engine runs on.
    pub fn load(rules_dir: &Path) -> Dashboards {
        match dashboards::pack::Pack::load(rules_dir) {
            Ok(pack) => Dashboards {
                runbooks: pack
                    .rules
                    .iter()
                    .filter_map(|r| Some((r.id.clone(), r.runbook.clone()?)))
                    .collect(),
                boards: dashboards::boards::boards(&pack),
                ..Dashboards::default()
            },
            Err(e) => {
                tracing::warn!(dir = %rules_dir.display(), error = %e, "no dashboards in the viewer");
                Dashboards {
                    error: Some(format!(
                        "the dashboards could not be made from {}: {e}",
                        rules_dir.display()
                    )),
                    ..Dashboards::default()
                }
            }
        }
    }

    /// The SQL panels read the BI store at `url` (the engine's `--postgres`)
    /// instead of the outputs in memory.
    #[cfg(feature = "postgres")]
    pub fn reading(mut self, url: &str) -> anyhow::Result<Dashboards> {
        self.store = Some(store::connect(url)?);
        Ok(self)
    }

    fn find(&self, uid: &str) -> Option<&Dashboard> {
        self.boards.iter().find(|b| b.uid == uid)
    }
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
}

fn nanos(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()?
        .timestamp_nanos_opt()
}

fn kpi_record(k: &KpiValue) -> Option<KpiRecord> {
    Some(KpiRecord {
        kpi: k.kpi.clone(),
        window_start: nanos(&k.window_start)?,
        window_end: nanos(&k.window_end)?,
        dimensions: k.dimensions.clone(),
        value: k.value.as_f64(),
    })
}

fn alert_record(a: &Alert) -> Option<AlertRecord> {
    Some(AlertRecord {
        rule_id: a.rule_id.clone(),
        severity: a.severity.clone(),
        state: match a.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
        .into(),
        entity: a.entity.clone(),
        incident_start: match a.incident_start_ns {
            Some(ns) => ns,
            None => nanos(&a.window_start)?,
        },
        window_end: nanos(&a.window_end)?,
        value: a.value.as_f64(),
        summary: a.summary.clone(),
        trace_ids: a.trace_ids.clone(),
        first_seen: a.first_seen_ns,
        detected_at: a.detected_at_ns,
    })
}

/// A correlated incident's state as the PostgreSQL sink writes it (a row of
/// `correlated_incidents`), for `dashboards::frames`.
pub fn incident_record(i: &Incident) -> IncidentRecord {
    IncidentRecord {
        id: i.id.clone(),
        state: match i.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
        .into(),
        rule_id: i.lead.rule_id.clone(),
        highest_severity: i.highest_severity.clone(),
        rules: i.rules.clone(),
        member_count: i.member_count,
        entity_count: i.entity_count,
        summary: i.summary(),
        start: i.start_ns,
    }
}

/// The board's KPI values as the BI store's rows.
fn kpi_records(b: &Board) -> Vec<KpiRecord> {
    b.kpis.iter().filter_map(kpi_record).collect()
}

/// The board's outputs as the BI store's rows: KPI values, alerts and
/// correlated incidents.
fn records(b: &Board) -> (Vec<KpiRecord>, Vec<AlertRecord>, Vec<IncidentRecord>) {
    (
        kpi_records(b),
        b.alerts.iter().filter_map(alert_record).collect(),
        b.incidents.incidents().map(incident_record).collect(),
    )
}

pub(super) async fn list(State(s): State<Shared>) -> Json<Value> {
    let b = board(&s);
    let kpis = kpi_records(&b);
    let alerts: Vec<AlertRecord> = b.alerts.iter().filter_map(alert_record).collect();
    let starts = kpis.iter().map(|k| k.window_start);
    let ends = kpis.iter().map(|k| k.window_end);
    let from = starts.chain(alerts.iter().map(|a| a.incident_start)).min();
    let to = ends.chain(alerts.iter().map(|a| a.window_end)).max();
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    Json(json!({
        "dashboards": b.dashboards.boards.iter().map(|d| json!({
            "uid": d.uid,
            "title": d.title,
            "datasource": datasource(d),
        })).collect::<Vec<_>>(),
        "span": from.zip(to).map(|(f, t)| json!({ "from": ms(f), "to": ms(t) })),
        "error": b.dashboards.error,
    }))
}

/// `postgres` when every query reads the BI store, else `prometheus`.
fn datasource(d: &Dashboard) -> &'static str {
    let prom = d
        .panels
        .iter()
        .flat_map(|p| &p.queries)
        .any(|q| matches!(q, PanelQuery::Prom { .. }));
    if prom { "prometheus" } else { "postgres" }
}

pub(super) async fn one(State(s): State<Shared>, UrlPath(uid): UrlPath<String>) -> Response {
    let b = board(&s);
    match b.dashboards.find(&uid) {
        Some(d) => Json(d.to_json()).into_response(),
        None => not_found(format!("no dashboard {uid}")),
    }
}

/// A panel's time range and variables, from its query string:
/// `from` and `to` in milliseconds, `var-NAME=A,B` (`*` or nothing: All).
fn choices(q: &HashMap<String, String>) -> Result<(Range, BTreeMap<String, Vec<String>>), String> {
    let ms = |name: &str| -> Result<i64, String> {
        let text = q.get(name).ok_or(format!(
            "`{name}` is required (milliseconds since the epoch)"
        ))?;
        let v: i64 = text
            .parse()
            .map_err(|_| format!("`{name}` is not a number of milliseconds: {text:?}"))?;
        v.checked_mul(1_000_000)
            .ok_or(format!("`{name}` is out of range: {text}"))
    };
    let range = Range {
        from: ms("from")?,
        to: ms("to")?,
    };
    if range.from > range.to {
        return Err("`from` is after `to`".into());
    }
    let vars = q
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("var-")?;
            let values = v
                .split(',')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect();
            Some((name.to_string(), values))
        })
        .collect();
    Ok((range, vars))
}

pub(super) async fn panel(
    State(s): State<Shared>,
    UrlPath((uid, id)): UrlPath<(String, usize)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (range, vars) = match choices(&q) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    };
    #[cfg(feature = "postgres")]
    {
        let stored = {
            let b = board(&s);
            let d = b.dashboards.find(&uid).cloned();
            b.dashboards.store.clone().zip(d)
        };
        if let Some((pool, d)) = stored {
            return from_store(&pool, &d, id, range, &vars).await;
        }
    }
    let b = board(&s);
    let Some(d) = b.dashboards.find(&uid) else {
        return not_found(format!("no dashboard {uid}"));
    };
    // panel ids are their places, from 1 (grafana::Board::to_json)
    let Some(p) = id.checked_sub(1).and_then(|i| d.panels.get(i)) else {
        return not_found(format!("no panel {id} on dashboard {uid}"));
    };
    let (kpis, alerts, incidents) = records(&b);
    let records = Records {
        kpis: &kpis,
        alerts: &alerts,
        incidents: &incidents,
        runbooks: &b.dashboards.runbooks,
    };
    let frames: Vec<Value> = p
        .queries
        .iter()
        .map(|query| match query {
            PanelQuery::Sql { check, .. } => {
                json!(dashboards::frames::frame(check, &records, range, &vars))
            }
            PanelQuery::Prom { expr, .. } => unavailable(expr),
        })
        .collect();
    Json(json!({ "frames": frames })).into_response()
}

/// A panel's frames from the BI store.
#[cfg(feature = "postgres")]
async fn from_store(
    pool: &sqlx::PgPool,
    d: &Dashboard,
    id: usize,
    range: Range,
    vars: &BTreeMap<String, Vec<String>>,
) -> Response {
    let Some(p) = id.checked_sub(1).and_then(|i| d.panels.get(i)) else {
        return not_found(format!("no panel {id} on dashboard {}", d.uid));
    };
    let mut frames = Vec::new();
    for query in &p.queries {
        frames.push(match query {
            PanelQuery::Sql { sql, .. } => {
                match store::frame(pool, d, sql, range.from, range.to, vars).await {
                    Ok(f) => json!(f),
                    Err(e) => {
                        return (StatusCode::BAD_GATEWAY, Json(json!({ "error": e })))
                            .into_response();
                    }
                }
            }
            PanelQuery::Prom { expr, .. } => unavailable(expr),
        });
    }
    Json(json!({ "frames": frames, "source": "postgres" })).into_response()
}

fn unavailable(expr: &str) -> Value {
    json!({
        "unavailable": "this panel reads Prometheus: open the dashboard in Grafana (docs/dashboards.md)",
        "expr": expr,
    })
}

pub(super) async fn variable(
    State(s): State<Shared>,
    UrlPath((uid, name)): UrlPath<(String, String)>,
) -> Response {
    #[cfg(feature = "postgres")]
    {
        // a query variable on the BI store asks it
        let stored = {
            let b = board(&s);
            let d = b.dashboards.find(&uid);
            let query = d
                .and_then(|d| d.variables.iter().find(|v| v.name() == name))
                .and_then(|v| match v {
                    Variable::Query {
                        query,
                        datasource: dashboards::grafana::Datasource::Postgres,
                        ..
                    } => Some(query.clone()),
                    _ => None,
                });
            b.dashboards.store.clone().zip(d.cloned()).zip(query)
        };
        if let Some(((pool, d), query)) = stored {
            let all = Range {
                from: i64::MIN / 4,
                to: i64::MAX / 4,
            };
            return match store::frame(&pool, &d, &query, all.from, all.to, &BTreeMap::new()).await {
                Ok(f) => {
                    let values: Vec<String> = f
                        .rows
                        .iter()
                        .filter_map(|r| r.first()?.as_str().map(String::from))
                        .collect();
                    Json(json!({ "values": values })).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({ "error": e }))).into_response(),
            };
        }
    }
    let b = board(&s);
    let Some(d) = b.dashboards.find(&uid) else {
        return not_found(format!("no dashboard {uid}"));
    };
    let Some(v) = d.variables.iter().find(|v| v.name() == name) else {
        return not_found(format!("no variable {name} on dashboard {uid}"));
    };
    let values: Vec<String> = match v {
        Variable::Custom { values, .. } => values.clone(),
        Variable::Query {
            name: "currency", ..
        } => dashboards::frames::currencies(&kpi_records(&b)),
        // the other query variables read Prometheus
        Variable::Query { .. } => vec![],
    };
    Json(json!({ "values": values })).into_response()
}

#[cfg(test)]
mod tests;
