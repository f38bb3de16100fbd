//! What a SQL panel shows, computed from KPI values, alerts and correlated
//! incidents held in memory, with the same rows, columns and order as the
//! panel's SQL gives on the BI store. The engine's viewer draws the
//! dashboards with it when no PostgreSQL is configured (`engine demo`), and
//! the end-to-end test compares it with what PostgreSQL answers for the same
//! capture.
//!
//! Each [`Check`] is one panel's meaning; [`frame`] evaluates it over a time
//! range and the dashboard's variables. Times are nanoseconds since the Unix
//! epoch in the records and milliseconds in the frame (what a browser takes).
//!
//! ```
//! use std::collections::BTreeMap;
//! use dashboards::frames::{frame, KpiRecord, Range, Records};
//! use dashboards::grafana::Check;
//!
//! let minute = 60_000_000_000;
//! let kpis = vec![KpiRecord {
//!     kpi: "orders".into(),
//!     window_start: 0,
//!     window_end: minute,
//!     dimensions: BTreeMap::new(),
//!     value: Some(3.0),
//! }];
//! let records = Records { kpis: &kpis, alerts: &[], incidents: &[], runbooks: &BTreeMap::new() };
//! let check = Check::KpiSeries { kpi: "orders".into(), dimensions: vec![] };
//! let f = frame(&check, &records, Range { from: 0, to: minute }, &BTreeMap::new());
//! assert_eq!(serde_json::Value::from(f.rows), serde_json::json!([[60_000, "orders", 3.0]]));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::grafana::Check;

/// The dimension the Business dashboard's `currency` variable filters.
pub const CURRENCY: &str = "shop.order.currency";

const NS_PER_MS: i64 = 1_000_000;
const MINUTE: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// One KPI value (a row of `kpi_values`).
#[derive(Debug, Clone, PartialEq)]
pub struct KpiRecord {
    pub kpi: String,
    pub window_start: i64,
    pub window_end: i64,
    pub dimensions: BTreeMap<String, String>,
    /// `None` when the figure is not a number
    pub value: Option<f64>,
}

/// One alert transition (a row of `alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub rule_id: String,
    pub severity: String,
    /// `firing` or `resolved`
    pub state: String,
    pub entity: BTreeMap<String, String>,
    pub incident_start: i64,
    pub window_end: i64,
    pub value: Option<f64>,
    pub summary: String,
    pub trace_ids: Vec<String>,
    /// the incident's first evidence and when the engine emitted the alert
    /// (whole microseconds, as the store keeps them), when known
    pub first_seen: Option<i64>,
    pub detected_at: Option<i64>,
}

/// One state of a correlated incident (a row of `correlated_incidents`):
/// the alerts of one attack folded by the engine's correlator.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    /// its identity, its lead alert's
    pub id: String,
    /// `firing` or `resolved`
    pub state: String,
    /// the lead alert's rule
    pub rule_id: String,
    pub highest_severity: String,
    /// the rules of its members, sorted
    pub rules: Vec<String>,
    pub member_count: u64,
    pub entity_count: u64,
    pub summary: String,
    /// event time its earliest member's incident began
    pub start: i64,
}

/// What the panels read.
pub struct Records<'a> {
    pub kpis: &'a [KpiRecord],
    pub alerts: &'a [AlertRecord],
    /// correlated incidents in the order their states were written: the last
    /// state of an id is its row, as the sink's upsert keeps it
    pub incidents: &'a [IncidentRecord],
    /// rule id -> runbook (the `rules` table)
    pub runbooks: &'a BTreeMap<String, String>,
}

/// A closed time range, as `$__timeFilter` makes it (`BETWEEN from AND to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    fn holds(&self, t: i64) -> bool {
        self.from <= t && t <= self.to
    }

    /// Whether the bucket of `size` starting at `start` overlaps the range.
    fn overlaps(&self, start: i64, size: i64) -> bool {
        start <= self.to && start > self.from - size
    }
}

/// A column's kind: `time` (milliseconds), `string` or `number`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    pub name: String,
    pub kind: &'static str,
}

/// A panel's rows, in the panel SQL's column order and row order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

fn columns(spec: &[(&'static str, &'static str)]) -> Vec<Column> {
    spec.iter()
        .map(|&(name, kind)| Column {
            name: name.to_string(),
            kind,
        })
        .collect()
}

/// Whether a variable lets any of `values` through: no selection, or All
/// (`*`), passes everything.
fn passes_any(vars: &BTreeMap<String, Vec<String>>, name: &str, values: &[String]) -> bool {
    passes(vars, name, None) || values.iter().any(|v| passes(vars, name, Some(v)))
}

/// Whether a variable lets `value` through: no selection, or All (`*`),
/// passes everything; a missing value passes only All.
fn passes(vars: &BTreeMap<String, Vec<String>>, name: &str, value: Option<&str>) -> bool {
    match vars.get(name) {
        None => true,
        Some(chosen) if chosen.is_empty() || chosen.iter().any(|c| c == "*") => true,
        Some(chosen) => value.is_some_and(|v| chosen.iter().any(|c| c == v)),
    }
}

fn number(v: Option<f64>) -> Value {
    v.filter(|v| v.is_finite())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

fn ms(ns: i64) -> Value {
    Value::from(ns.div_euclid(NS_PER_MS))
}

/// The series label of a KPI value: its dimensions' values joined by a space
/// (`concat_ws` skips missing ones), or the KPI's name.
fn metric(k: &KpiRecord, dimensions: &[String]) -> String {
    if dimensions.is_empty() {
        k.kpi.clone()
    } else {
        dimensions
            .iter()
            .filter_map(|d| k.dimensions.get(d).map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An entity as `entity_text` writes it: `key=value` pairs in key order.
pub fn entity_text(entity: &BTreeMap<String, String>) -> String {
    entity
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sums in SQL's manner: `None` when nothing was summed.
fn add(total: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v {
        *total = Some(total.unwrap_or(0.0) + v);
    }
}

/// The mean of the present values, `None` with none.
#[derive(Default)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.sum += v;
            self.n += 1;
        }
    }
    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// The rows of the panel whose meaning is `check`, over `range`, with the
/// dashboard's variables (name -> chosen values; `*` is All).
pub fn frame(
    check: &Check,
    records: &Records,
    range: Range,
    vars: &BTreeMap<String, Vec<String>>,
) -> Frame {
    let currency_ok = |k: &KpiRecord, dims: &[String]| {
        !dims.iter().any(|d| d == CURRENCY)
            || passes(
                vars,
                "currency",
                k.dimensions.get(CURRENCY).map(String::as_str),
            )
    };
    let alert_ok = |a: &AlertRecord| {
        passes(vars, "rule", Some(&a.rule_id)) && passes(vars, "severity", Some(&a.severity))
    };
    let firing = || {
        latest(records.alerts)
            .into_iter()
            .filter(|a| a.state == "firing" && alert_ok(a))
    };
    match check {
        Check::KpiSeries { kpi, dimensions } => {
            let mut rows: Vec<(i64, String, Option<f64>)> = records
                .kpis
                .iter()
                .filter(|k| {
                    &k.kpi == kpi && range.holds(k.window_end) && currency_ok(k, dimensions)
                })
                .map(|k| (k.window_end, metric(k, dimensions), k.value))
                .collect();
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            Frame {
                columns: columns(&[("time", "time"), ("metric", "string"), ("value", "number")]),
                rows: rows
                    .into_iter()
                    .map(|(t, m, v)| vec![ms(t), m.into(), number(v)])
                    .collect(),
            }
        }
        Check::KpiMean { kpi, dimensions } => {
            let before = range.from - (range.to - range.from);
            let mut means: BTreeMap<String, (Mean, Mean)> = BTreeMap::new();
            for k in records.kpis.iter().filter(|k| {
                &k.kpi == kpi
                    && before <= k.window_end
                    && k.window_end <= range.to
                    && currency_ok(k, dimensions)
            }) {
                let (this, previous) = means.entry(metric(k, dimensions)).or_default();
                if k.window_end >= range.from {
                    this.add(k.value);
                } else {
                    previous.add(k.value);
                }
            }
            Frame {
                columns: columns(&[
                    ("metric", "string"),
                    ("this period", "number"),
                    ("previous period", "number"),
                ]),
                rows: means
                    .into_iter()
                    .map(|(m, (this, previous))| {
                        vec![m.into(), number(this.get()), number(previous.get())]
                    })
                    .collect(),
            }
        }
        Check::Revenue { bucket } => {
            let size = if *bucket == "day" { DAY } else { HOUR };
            // (bucket start, currency) -> (revenue, orders)
            type Sums = BTreeMap<(i64, Option<String>), (Option<f64>, Option<f64>)>;
            let mut sums = Sums::new();
            for k in records
                .kpis
                .iter()
                .filter(|k| k.kpi == "revenue" || k.kpi == "orders")
            {
                let at = k.window_start - k.window_start.rem_euclid(size);
                let currency = k.dimensions.get(CURRENCY).cloned();
                if !range.overlaps(at, size) || !passes(vars, "currency", currency.as_deref()) {
                    continue;
                }
                let (revenue, orders) = sums.entry((at, currency)).or_default();
                add(if k.kpi == "revenue" { revenue } else { orders }, k.value);
            }
            Frame {
                columns: columns(&[
                    ("time", "time"),
                    ("currency", "string"),
                    ("revenue", "number"),
                    ("orders", "number"),
                ]),
                rows: sums
                    .into_iter()
                    .map(|((t, c), (r, o))| {
                        vec![
                            ms(t),
                            c.map(Value::from).unwrap_or(Value::Null),
                            number(r),
                            number(o),
                        ]
                    })
                    .collect(),
            }
        }
        Check::Funnel { steps } => {
            let mut sessions: Vec<Option<f64>> = vec![None; steps.len()];
            for k in records.kpis.iter().filter(|k| range.holds(k.window_end)) {
                let step = k.kpi.strip_prefix("checkout_funnel.");
                if let Some(i) = step.and_then(|s| steps.iter().position(|x| x == s)) {
                    add(&mut sessions[i], k.value);
                }
            }
            Frame {
                columns: columns(&[("step", "string"), ("sessions", "number")]),
                rows: steps
                    .iter()
                    .zip(sessions)
                    .map(|(s, v)| vec![s.as_str().into(), number(v)])
                    .collect(),
            }
        }
        Check::AlertsOverTime { by } => {
            let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
            for a in firing().filter(|a| range.holds(a.window_end)) {
                let key = if *by == "severity" {
                    &a.severity
                } else {
                    &a.rule_id
                };
                let minute = a.window_end - a.window_end.rem_euclid(MINUTE);
                *counts.entry((minute, key.clone())).or_default() += 1;
            }
            Frame {
                columns: columns(&[("time", "time"), ("metric", "string"), ("alerts", "number")]),
                rows: counts
                    .into_iter()
                    .map(|((t, m), n)| vec![ms(t), m.into(), n.into()])
                    .collect(),
            }
        }
        Check::AlertsHourly => {
            let mut counts: BTreeMap<(i64, String, String), u64> = BTreeMap::new();
            for a in firing() {
                let hour = a.window_end - a.window_end.rem_euclid(HOUR);
                if range.overlaps(hour, HOUR) {
                    *counts
                        .entry((hour, a.rule_id.clone(), a.severity.clone()))
                        .or_default() += 1;
                }
            }
            Frame {
                columns: columns(&[
                    ("time", "time"),
                    ("rule_id", "string"),
                    ("severity", "string"),
                    ("alerts", "number"),
                ]),
                rows: counts
                    .into_iter()
                    .map(|((t, r, s), n)| vec![ms(t), r.into(), s.into(), n.into()])
                    .collect(),
            }
        }
        Check::TopEntities { limit } => {
            let mut counts: BTreeMap<(String, String), (u64, i64)> = BTreeMap::new();
            for a in firing().filter(|a| range.holds(a.window_end)) {
                let e = counts
                    .entry((entity_text(&a.entity), a.rule_id.clone()))
                    .or_insert((0, i64::MIN));
                e.0 += 1;
                e.1 = e.1.max(a.window_end);
            }
            let mut rows: Vec<_> = counts.into_iter().collect();
            rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(*limit);
            Frame {
                columns: columns(&[
                    ("who", "string"),
                    ("rule_id", "string"),
                    ("alerts", "number"),
                    ("last_seen", "time"),
                ]),
                rows: rows
                    .into_iter()
                    .map(|((who, rule), (n, last))| {
                        vec![who.into(), rule.into(), n.into(), ms(last)]
                    })
                    .collect(),
            }
        }
        Check::DetectionDelay => {
            let mut delays: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for a in firing() {
                if let (Some(seen), Some(at)) = (a.first_seen, a.detected_at)
                    && range.holds(at)
                {
                    delays
                        .entry(a.rule_id.as_str())
                        .or_default()
                        .push((at - seen) as f64 / 1e9);
                }
            }
            Frame {
                columns: columns(&[
                    ("rule_id", "string"),
                    ("incidents", "number"),
                    ("median_delay", "number"),
                    ("max_delay", "number"),
                ]),
                rows: delays
                    .into_iter()
                    .map(|(rule, mut d)| {
                        d.sort_by(f64::total_cmp);
                        vec![
                            rule.into(),
                            d.len().into(),
                            number(median(&d)),
                            number(d.last().copied()),
                        ]
                    })
                    .collect(),
            }
        }
        Check::CorrelatedIncidents => {
            let mut latest: BTreeMap<&str, &IncidentRecord> = BTreeMap::new();
            for i in records.incidents {
                latest.insert(i.id.as_str(), i);
            }
            let mut firing: Vec<&IncidentRecord> = latest
                .into_values()
                .filter(|i| {
                    i.state == "firing"
                        && i.start <= range.to
                        && passes_any(vars, "rule", &i.rules)
                        && passes(vars, "severity", Some(&i.highest_severity))
                })
                .collect();
            firing.sort_by(|a, b| b.start.cmp(&a.start).then_with(|| a.id.cmp(&b.id)));
            Frame {
                columns: columns(&[
                    ("time", "time"),
                    ("rule_id", "string"),
                    ("highest_severity", "string"),
                    ("entity_count", "number"),
                    ("member_count", "number"),
                    ("rules", "string"),
                    ("summary", "string"),
                ]),
                rows: firing
                    .into_iter()
                    .map(|i| {
                        vec![
                            ms(i.start),
                            i.rule_id.as_str().into(),
                            i.highest_severity.as_str().into(),
                            i.entity_count.into(),
                            i.member_count.into(),
                            i.rules.join(", ").into(),
                            i.summary.as_str().into(),
                        ]
                    })
                    .collect(),
            }
        }
        Check::OpenIncidents => {
            let resolved: BTreeSet<(&str, &BTreeMap<String, String>, i64)> = records
                .alerts
                .iter()
                .filter(|a| a.state == "resolved")
                .map(|a| (a.rule_id.as_str(), &a.entity, a.incident_start))
                .collect();
            let mut open: Vec<&AlertRecord> = firing()
                .filter(|a| !resolved.contains(&(a.rule_id.as_str(), &a.entity, a.incident_start)))
                .collect();
            open.sort_by(|a, b| {
                b.window_end
                    .cmp(&a.window_end)
                    .then_with(|| a.rule_id.cmp(&b.rule_id))
                    .then_with(|| entity_text(&a.entity).cmp(&entity_text(&b.entity)))
            });
            Frame {
                columns: columns(&[
                    ("time", "time"),
                    ("rule_id", "string"),
                    ("severity", "string"),
                    ("who", "string"),
                    ("value", "number"),
                    ("summary", "string"),
                    ("trace_ids", "string"),
                    ("runbook", "string"),
                ]),
                rows: open
                    .into_iter()
                    .map(|a| {
                        vec![
                            ms(a.window_end),
                            a.rule_id.as_str().into(),
                            a.severity.as_str().into(),
                            entity_text(&a.entity).into(),
                            number(a.value),
                            a.summary.as_str().into(),
                            a.trace_ids.join(" ").into(),
                            records
                                .runbooks
                                .get(&a.rule_id)
                                .map(|r| Value::from(r.as_str()))
                                .unwrap_or(Value::Null),
                        ]
                    })
                    .collect(),
            }
        }
    }
}

/// The median of sorted values as PostgreSQL's `percentile_cont(0.5)` gives
/// it: the middle value, or between the two middle ones.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => {
            let (lo, hi) = (sorted[n / 2 - 1], sorted[n / 2]);
            Some(lo + (hi - lo) * 0.5)
        }
    }
}

/// The alerts as the store keeps them: one row per (rule, entity, incident
/// start, state), the latest write winning, as the sink's upsert does.
fn latest(alerts: &[AlertRecord]) -> Vec<&AlertRecord> {
    // (rule, entity, incident start, state): the store's key
    type Key<'a> = (&'a str, &'a BTreeMap<String, String>, i64, &'a str);
    let mut by_key: BTreeMap<Key, &AlertRecord> = BTreeMap::new();
    for a in alerts {
        by_key.insert(
            (
                a.rule_id.as_str(),
                &a.entity,
                a.incident_start,
                a.state.as_str(),
            ),
            a,
        );
    }
    let mut rows: Vec<&AlertRecord> = by_key.into_values().collect();
    rows.sort_by_key(|a| a.window_end);
    rows
}

/// The values a query variable offers, from the records (the `currency`
/// variable: `SELECT DISTINCT dimensions ->> 'shop.order.currency' FROM
/// kpi_values WHERE kpi = 'orders'`).
pub fn currencies(kpis: &[KpiRecord]) -> Vec<String> {
    kpis.iter()
        .filter(|k| k.kpi == "orders")
        .filter_map(|k| k.dimensions.get(CURRENCY).cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests;
