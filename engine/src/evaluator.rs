//! The evaluator: rows in, alerts and KPI values out, in event time.
//!
//! Rows are pushed as Arrow batches (from a capture, Kafka or the OTLP
//! receiver: the same code for replay and live). Each push advances the
//! watermark; [`Evaluator::evaluate`] runs every rule over the windows that
//! became final since the last call. A window's result depends only on the rows
//! in it, so how pushes and evaluations are grouped never changes the output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::LogicalPlan;
use ingest::Table;
use serde::Serialize;

use crate::alerts::{Alert, RuleAlerts};
use crate::kpi::{self, KpiValue};
use crate::rules::snapshot::columns_read;
use crate::rules::{CompiledRule, RuleError, RuleSet, WindowSession, WindowSpec};
use crate::samples::Samples;
use crate::window::{self, Buffer, Watermark};

/// What an evaluation produced, in event-time order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Alert(Alert),
    Kpi(KpiValue),
}

impl Output {
    fn order_key(&self) -> (i64, u8, String, String) {
        match self {
            Output::Alert(a) => (
                a.at_ns,
                0,
                a.rule_id.clone(),
                serde_json::to_string(&a.entity).unwrap_or_default(),
            ),
            Output::Kpi(k) => (
                k.at_ns,
                1,
                k.kpi.clone(),
                serde_json::to_string(&k.dimensions).unwrap_or_default(),
            ),
        }
    }
}

/// How a rule is doing at run time.
#[derive(Debug, Clone, Serialize)]
pub struct RuleHealth {
    pub id: String,
    pub kind: &'static str,
    pub enabled: bool,
    /// consecutive failed evaluations; at [`MAX_FAILURES`] the rule is disabled
    pub failures: u32,
    pub last_error: Option<String>,
    pub evaluations: u64,
    pub fired: u64,
    /// how long its evaluations took (one per evaluated session of windows)
    pub eval_seconds: Durations,
    /// whether it can fire before its window closes ([`crate::rules::Growth`])
    pub monotone: bool,
    /// firings sent before their window closed
    pub fired_early: u64,
}

impl RuleHealth {
    /// A rule that has not run yet.
    fn of(rule: &CompiledRule) -> RuleHealth {
        RuleHealth {
            id: rule.def.id.clone(),
            kind: if rule.def.is_kpi() { "kpi" } else { "alert" },
            enabled: rule.def.enabled,
            failures: 0,
            last_error: None,
            evaluations: 0,
            fired: 0,
            eval_seconds: Durations::default(),
            monotone: rule.growth.is_monotone(),
            fired_early: 0,
        }
    }
}

/// A histogram of durations in seconds, with Prometheus' cumulative buckets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Durations {
    /// counts per upper bound of [`Durations::BOUNDS`], not cumulative; the
    /// last counts what exceeds every bound
    pub counts: [u64; Durations::BOUNDS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Durations {
    /// The upper bounds, in seconds.
    pub const BOUNDS: [f64; 11] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];

    pub fn observe(&mut self, seconds: f64) {
        let i = Self::BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(Self::BOUNDS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// (`le` label, cumulative count) per bucket, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, n) in self.counts.iter().enumerate() {
            total += n;
            let le = Self::BOUNDS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            out.push((le, total));
        }
        out
    }
}

/// Consecutive run-time failures after which a rule is disabled.
pub const MAX_FAILURES: u32 = 3;

/// Counters for `/metrics` and progress lines.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub rows: BTreeMap<&'static str, u64>,
    pub late_rows: u64,
    pub evaluations: u64,
    pub alerts: u64,
    pub kpi_values: u64,
    pub buffered_rows: usize,
    /// the memory of the rows held for open windows ([`Buffer::bytes`])
    pub buffered_bytes: usize,
    pub watermark_ns: Option<i64>,
    /// rows dated later than the wall clock plus the allowed skew (live only),
    /// dropped, by table
    pub future_rows: BTreeMap<&'static str, u64>,
    /// on-time rows not buffered: the buffer held its cap ([`Buffer::with_cap`]), by table
    pub buffer_refused_rows: BTreeMap<&'static str, u64>,
    /// per alerting rule: findings for a new entity refused at the cap of
    /// open incidents, and suppression memories forgotten at the cap
    /// ([`RuleAlerts::with_cap`])
    pub incidents_refused: BTreeMap<String, u64>,
    pub suppressions_forgotten: BTreeMap<String, u64>,
    /// early passes over open windows ([`Evaluator::with_early_firing`])
    pub early_passes: u64,
    /// firings sent before their window closed
    pub early_alerts: u64,
    /// early firings the close did not confirm under the same identity,
    /// resolved (should stay 0 but for rows that came late)
    pub early_withdrawn: u64,
    /// per kept KPI (`keep`): dimension sets and buckets held, and those
    /// evicted at its `max_keys` ([`crate::rules::rollup`])
    pub rollups: BTreeMap<String, crate::rules::rollup::RollupStats>,
    /// rows read again after a restart that only windows evaluated before
    /// it held ([`Evaluator::resume_from`]): skipped, not late
    pub resumed_rows: u64,
}

/// Rows dated ahead of the wall clock (live evaluation only): a forged or
/// wrong timestamp must not move event time on and make every honest row late.
#[derive(Debug, Clone)]
struct FutureGuard {
    /// how far ahead of the wall clock a row may be
    skew_ns: i64,
    /// dropped since the last evaluation, by table, with the newest time seen
    pending: BTreeMap<Table, (u64, i64)>,
}

/// The id of the built-in alert on future-dated input.
pub const FUTURE_ROWS_RULE: &str = "otelguard.input.future_timestamps";

/// Early firing of monotone rules (live evaluation).
struct EarlyFiring {
    /// at most one early pass this often
    every: std::time::Duration,
    /// when the last pass ended, and how long it took: the next one waits
    /// at least as long, so that early passes take at most half the time
    last_pass: Option<(std::time::Instant, std::time::Duration)>,
    /// rows came since the last pass
    fresh: bool,
    /// firings sent early whose window has not closed yet, by rule id and
    /// entity, with the start of that window
    fired: BTreeMap<String, SentEarly>,
}

/// One rule's early firings by entity, with the start of their window.
type SentEarly = BTreeMap<BTreeMap<String, String>, (i64, Alert)>;

/// Matches the firings of a closed window with the early firings of their
/// entities: the same identity confirms one, and the close's alert is sent
/// only when it says something new (the value at close differs from the one
/// sent early); another identity (rows came late into an earlier window,
/// where the incident then started) resolves the early one first.
fn confirm_early(
    early: &mut Option<EarlyFiring>,
    stats: &mut Stats,
    rule_id: &str,
    alerts: Vec<Alert>,
) -> Vec<Alert> {
    let Some(fired) = early.as_mut().and_then(|e| e.fired.get_mut(rule_id)) else {
        return alerts;
    };
    let mut out = Vec::with_capacity(alerts.len());
    for a in alerts {
        if a.state == crate::alerts::State::Firing
            && let Some((_, sent)) = fired.remove(&a.entity)
        {
            if sent.identity() != a.identity() {
                stats.early_withdrawn += 1;
                out.push(withdrawn(&sent, a.at_ns));
            } else if sent.value == a.value {
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// The resolution of an early firing the close did not confirm.
fn withdrawn(early: &Alert, at_ns: i64) -> Alert {
    Alert {
        state: crate::alerts::State::Resolved,
        summary: format!("resolved: {}", early.summary),
        at_ns,
        ..early.clone()
    }
}

struct SessionState {
    /// start of the first window not yet evaluated
    next_start: Option<i64>,
    tables: BTreeSet<Table>,
}

/// One rule's evaluation, from its task: its findings, and how long it took in seconds.
type Evaluated = (DfResult<Vec<crate::rules::Finding>>, f64);

/// Runs one rule over the current rows of its session, with one immediate
/// retry, planned afresh: a passing failure should not skip windows.
async fn evaluate_rule(rule: Arc<CompiledRule>, session: Arc<WindowSession>) -> Evaluated {
    let started = std::time::Instant::now();
    let mut result = rule.execute(&session).await;
    if result.is_err() {
        rule.replan();
        result = rule.execute(&session).await;
    }
    let findings = result.and_then(|batches| rule.findings(&batches));
    (findings, started.elapsed().as_secs_f64())
}

/// Rows in, alerts and KPI values out.
pub struct Evaluator {
    rules: RuleSet,
    sessions: Vec<SessionState>,
    alerts: Vec<RuleAlerts>,
    health: Vec<RuleHealth>,
    buffer: Buffer,
    watermark: Watermark,
    /// the largest event time actually seen (the watermark may be pushed to the end)
    max_seen: Option<i64>,
    min_seen: Option<i64>,
    /// the newest row's time (the watermark and `max_seen` may be past it)
    newest_row: Option<i64>,
    stats: Stats,
    future: Option<FutureGuard>,
    /// the spans and logs of the traces firing alerts name, for the viewer
    samples: Arc<Mutex<Samples>>,
    /// open incidents per rule at most ([`Evaluator::with_incident_cap`])
    incident_cap: usize,
    /// [`Evaluator::with_early_firing`]
    early: Option<EarlyFiring>,
    /// [`Evaluator::resume_from`]: rows older than this had their effects
    /// before a restart
    resumed: Option<i64>,
}

/// What a reload ([`Evaluator::reload`]) changed, by rule id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reloaded {
    /// the pack's version now ([`RuleSet::version`])
    pub version: String,
    /// rules whose file is unchanged: their windows and open incidents go on
    pub kept: Vec<String>,
    /// rules new to the pack: they start with no incident
    pub added: Vec<String>,
    /// rules whose file changed: they start anew, as new ones do
    pub changed: Vec<String>,
    /// rules gone from the pack
    pub removed: Vec<String>,
    /// the resolutions of the open incidents of changed and removed rules
    #[serde(skip)]
    pub outputs: Vec<Output>,
}

/// Where a rule of a reloaded pack comes from.
enum Origin {
    /// the running rule of that index, unchanged
    Kept(usize),
    /// planned anew; replacing the running rule of that index, if any
    New(Option<usize>),
}

/// The first multiple of `step` at or after `t`.
fn align_up(t: i64, step: i64) -> i64 {
    let down = t.div_euclid(step) * step;
    if down < t { down + step } else { down }
}

/// The first window of `spec` that holds a row at `t`.
fn first_window(spec: WindowSpec, t: i64) -> i64 {
    t.div_euclid(spec.slide_ns) * spec.slide_ns - (spec.overlap() - 1) * spec.slide_ns
}

/// The tables a plan reads (a view counts as the table under it).
fn tables_of(plan: &LogicalPlan) -> BTreeSet<Table> {
    let mut out = BTreeSet::new();
    let mut kept_only = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            kept_only |= matches!(name, "rollup" | "baseline");
            for t in Table::ALL {
                if t.name() == name || (name == "events" && t == Table::Logs) {
                    out.insert(t);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if out.is_empty() && !kept_only {
        // a plan we cannot see into: give it everything
        out.extend(Table::ALL);
    }
    out
}

impl Evaluator {
    pub fn new(rules: RuleSet, lateness_ns: i64) -> Self {
        let mut sessions: Vec<SessionState> = rules
            .sessions
            .iter()
            .map(|_| SessionState {
                next_start: None,
                tables: BTreeSet::new(),
            })
            .collect();
        for r in &rules.rules {
            sessions[r.session].tables.extend(tables_of(&r.plan));
        }
        let health = rules.rules.iter().map(|r| RuleHealth::of(r)).collect();
        let mut buffer = Buffer::default();
        buffer.keep_columns(columns_read(rules.rules.iter().map(|r| &r.plan)));
        Evaluator {
            alerts: rules.rules.iter().map(|_| RuleAlerts::default()).collect(),
            rules,
            sessions,
            health,
            buffer,
            watermark: Watermark::new(lateness_ns),
            max_seen: None,
            min_seen: None,
            newest_row: None,
            stats: Stats::default(),
            future: None,
            samples: Arc::default(),
            incident_cap: crate::alerts::DEFAULT_MAX_INCIDENTS,
            early: None,
            resumed: None,
        }
    }

    /// Replaces the rule pack while running. A pack with errors is refused
    /// as a whole (its errors returned, nothing changed). Otherwise a rule
    /// whose version (the hash of its file) is unchanged keeps its window
    /// state, its plan and its open incidents; a new or changed rule starts
    /// with none, on the rows still buffered (its first window is the first
    /// one no running rule has evaluated); the open incidents of a changed
    /// or removed rule are resolved ([`Reloaded::outputs`]: a firing one
    /// notified gets its resolution, under the identity of its version).
    pub async fn reload(&mut self, pack: RuleSet) -> Result<Reloaded, Vec<RuleError>> {
        if !pack.errors.is_empty() {
            return Err(pack.errors);
        }
        let version = pack.version();
        let running: BTreeMap<&str, usize> = self
            .rules
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.def.id.as_str(), i))
            .collect();
        // First everything that may fail, changing nothing: where each rule's
        // session is (a running session of its spec, else the new pack's),
        // and the plans of new and changed rules in running sessions.
        let mut sessions: Vec<(Arc<WindowSession>, Option<usize>)> = Vec::new();
        let mut placed: Vec<(Arc<CompiledRule>, Origin)> = Vec::new();
        for rule in &pack.rules {
            let spec = rule.def.window;
            let index = match sessions.iter().position(|(s, _)| s.spec == spec) {
                Some(i) => i,
                None => {
                    let old = self.rules.sessions.iter().position(|s| s.spec == spec);
                    let session = match old {
                        Some(o) => self.rules.sessions[o].clone(),
                        None => pack.sessions[rule.session].clone(),
                    };
                    sessions.push((session, old));
                    sessions.len() - 1
                }
            };
            let prior = running.get(rule.def.id.as_str()).copied();
            let compiled = match prior {
                Some(o) if self.rules.rules[o].def.version == rule.def.version => {
                    placed.push((
                        Arc::new(self.rules.rules[o].moved_to(index)),
                        Origin::Kept(o),
                    ));
                    continue;
                }
                _ if sessions[index].1.is_some() => {
                    CompiledRule::plan_in(rule.def.clone(), &sessions[index].0, index)
                        .await
                        .map_err(|e| vec![e])?
                }
                _ => rule.moved_to(index),
            };
            placed.push((Arc::new(compiled), Origin::New(prior)));
        }
        // Then the swap.
        let mut report = Reloaded {
            version,
            ..Reloaded::default()
        };
        let cap = self.incident_cap;
        let first_new_window = self.evaluated_upto();
        let mut old_states: Vec<Option<SessionState>> = std::mem::take(&mut self.sessions)
            .into_iter()
            .map(Some)
            .collect();
        let mut old_alerts: Vec<Option<RuleAlerts>> = std::mem::take(&mut self.alerts)
            .into_iter()
            .map(Some)
            .collect();
        let old_health = std::mem::take(&mut self.health);
        let old_rules = std::mem::take(&mut self.rules.rules);
        let mut states: Vec<SessionState> = sessions
            .iter()
            .map(|(s, old)| {
                let next_start = match old.and_then(|o| old_states[o].take()) {
                    Some(state) => state.next_start,
                    None => first_new_window.map(|t| align_up(t, s.spec.slide_ns)),
                };
                SessionState {
                    next_start,
                    tables: BTreeSet::new(),
                }
            })
            .collect();
        let mut kept = vec![false; old_rules.len()];
        for (rule, origin) in &placed {
            states[rule.session].tables.extend(tables_of(&rule.plan));
            match origin {
                Origin::Kept(o) => {
                    kept[*o] = true;
                    report.kept.push(rule.def.id.clone());
                    self.alerts.push(
                        old_alerts[*o]
                            .take()
                            .unwrap_or_else(|| RuleAlerts::with_cap(cap)),
                    );
                    self.health.push(old_health[*o].clone());
                }
                Origin::New(prior) => {
                    match prior {
                        Some(_) => report.changed.push(rule.def.id.clone()),
                        None => report.added.push(rule.def.id.clone()),
                    }
                    self.alerts.push(RuleAlerts::with_cap(cap));
                    self.health.push(RuleHealth::of(rule));
                }
            }
        }
        // the incidents of the rules that go: resolved at their next window
        for (o, rule) in old_rules.iter().enumerate() {
            if kept[o] {
                continue;
            }
            if !placed.iter().any(|(r, _)| r.def.id == rule.def.id) {
                report.removed.push(rule.def.id.clone());
            }
            let Some(mut alerts) = old_alerts[o].take() else {
                continue;
            };
            let next = self
                .rules
                .sessions
                .get(rule.session)
                .zip(first_new_window)
                .map_or(i64::MIN, |(s, t)| align_up(t, s.spec.slide_ns));
            report.outputs.extend(
                alerts
                    .resolve_all(&rule.def, next)
                    .into_iter()
                    .map(Output::Alert),
            );
        }
        if let Some(early) = &mut self.early {
            for (o, rule) in old_rules.iter().enumerate() {
                let fired = early.fired.remove(&rule.def.id).unwrap_or_default();
                if kept[o] {
                    early.fired.insert(rule.def.id.clone(), fired);
                    continue;
                }
                for (_, (_, a)) in fired {
                    self.stats.early_withdrawn += 1;
                    report.outputs.push(Output::Alert(withdrawn(&a, a.at_ns)));
                }
            }
        }
        report.outputs.sort_by_cached_key(Output::order_key);
        self.stats.alerts += report.outputs.len() as u64;
        // kept KPIs live on in the running store, which the new sessions read
        let rollups = self.rules.rollups.clone();
        for (s, old) in &sessions {
            if old.is_none() {
                s.rollups.join(&rollups);
            }
        }
        for (r, _) in &placed {
            rollups.define(&r.def);
        }
        rollups.retain(placed.iter().map(|(r, _)| &r.def));
        self.rules = RuleSet {
            sessions: sessions.into_iter().map(|(s, _)| s).collect(),
            rules: placed.into_iter().map(|(r, _)| r).collect(),
            errors: vec![],
            rollups,
        };
        self.sessions = states;
        self.buffer
            .keep_columns(columns_read(self.rules.rules.iter().map(|r| &r.plan)));
        Ok(report)
    }

    /// Live evaluation: rows dated more than `skew` ahead of the wall clock are
    /// dropped and counted ([`Stats::future_rows`]), and an evaluation after
    /// such rows reports them in a [`FUTURE_ROWS_RULE`] alert, so a source
    /// cannot run event time ahead of the clock. Replay does not use it: it
    /// stays deterministic.
    pub fn with_future_limit(mut self, skew: std::time::Duration) -> Self {
        self.future = Some(FutureGuard {
            skew_ns: i64::try_from(skew.as_nanos()).unwrap_or(i64::MAX),
            pending: BTreeMap::new(),
        });
        self
    }

    /// The source is cut off (its brokers do not answer, a rebalance is under
    /// way): quiet streams hold the watermark until [`Evaluator::resume_source`].
    pub fn suspend_source(&mut self) {
        self.watermark.suspend();
    }

    /// The source is back; see [`Evaluator::suspend_source`].
    pub fn resume_source(&mut self) {
        self.watermark.resume();
    }

    /// Whether the source is cut off; see [`Evaluator::suspend_source`].
    pub fn is_source_suspended(&self) -> bool {
        self.watermark.is_suspended()
    }

    /// With the guard on, drops the rows of `batch` dated past the wall clock
    /// plus the skew, counts them, and gives the wall clock: no stream's
    /// newest time may pass it, so the rows within the skew are kept but do
    /// not move event time ahead of the clock.
    fn drop_future_rows(
        &mut self,
        table: Table,
        batch: RecordBatch,
    ) -> Result<(RecordBatch, Option<i64>), arrow::error::ArrowError> {
        let Some(guard) = &mut self.future else {
            return Ok((batch, None));
        };
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let limit = now.saturating_add(guard.skew_ns);
        let times = window::times(&batch)?;
        let newest = times.iter().flatten().max().unwrap_or(i64::MIN);
        if newest <= limit {
            return Ok((batch, Some(now)));
        }
        let keep: arrow::array::BooleanArray = times
            .iter()
            .map(|t| Some(t.is_none_or(|t| t <= limit)))
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch, &keep)?;
        let dropped = (batch.num_rows() - kept.num_rows()) as u64;
        *self.stats.future_rows.entry(table.name()).or_default() += dropped;
        let entry = guard.pending.entry(table).or_insert((0, i64::MIN));
        if entry.0 == 0 {
            tracing::warn!(
                table = table.name(),
                rows = dropped,
                newest = %crate::alerts::rfc3339(newest),
                "rows dated ahead of the wall clock dropped (a wrong clock or forged timestamps)"
            );
        }
        entry.0 += dropped;
        entry.1 = entry.1.max(newest);
        Ok((kept, Some(now)))
    }

    /// The built-in alerts on future-dated rows since the last evaluation.
    fn future_alerts(&mut self) -> Vec<Output> {
        let Some(guard) = &mut self.future else {
            return vec![];
        };
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let skew_s = guard.skew_ns / 1_000_000_000;
        std::mem::take(&mut guard.pending)
            .into_iter()
            .map(|(table, (rows, newest))| {
                Output::Alert(Alert {
                    rule_id: FUTURE_ROWS_RULE.into(),
                    severity: "medium".into(),
                    state: crate::alerts::State::Firing,
                    entity: [("table".to_string(), table.name().to_string())].into(),
                    window_start: crate::alerts::rfc3339(now),
                    window_end: crate::alerts::rfc3339(now),
                    value: serde_json::Value::from(rows),
                    tags: vec!["input".into()],
                    summary: format!(
                        "{rows} {} rows dated more than {skew_s} s ahead of the wall clock were dropped \
                         (the newest: {}): a source's clock is wrong, or someone forges timestamps",
                        table.name(),
                        crate::alerts::rfc3339(newest)
                    ),
                    trace_ids: vec![],
                    at_ns: now,
                    rule_version: String::new(),
                    incident_start_ns: None,
                    first_seen_ns: None,
                    detected_at_ns: Some(now),
                    notes: None,
                })
            })
            .collect()
    }

    /// The sample traces of firing alerts, shared with whoever shows them.
    pub fn samples(&self) -> Arc<Mutex<Samples>> {
        self.samples.clone()
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The window buffer (rows still needed by a window not yet evaluated).
    pub fn buffer(&self) -> &crate::window::Buffer {
        &self.buffer
    }

    pub fn health(&self) -> &[RuleHealth] {
        &self.health
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.buffered_rows = self.buffer.rows();
        s.buffered_bytes = self.buffer.bytes();
        s.watermark_ns = self.watermark.get();
        s.rollups = self.rules.rollups.stats();
        for (rule, state) in self.rules.rules.iter().zip(&self.alerts) {
            if !rule.def.is_kpi() {
                let id = rule.def.id.clone();
                s.incidents_refused.insert(id.clone(), state.refused());
                s.suppressions_forgotten.insert(id, state.forgotten());
            }
        }
        s
    }

    /// Holds at most `rows` rows for open windows (live evaluation); see
    /// [`Buffer::with_cap`]. Call before the first push.
    pub fn with_buffer_cap(mut self, rows: usize) -> Self {
        self.buffer.set_cap(rows);
        self
    }

    /// Keeps at most `entities` open incidents, and as many suppression
    /// memories, per rule; see [`RuleAlerts::with_cap`].
    pub fn with_incident_cap(mut self, entities: usize) -> Self {
        self.incident_cap = entities;
        self.alerts = self
            .alerts
            .iter()
            .map(|_| RuleAlerts::with_cap(entities))
            .collect();
        self
    }

    /// Restores incidents the BI store kept, before the first evaluation
    /// (`engine run --postgres`), see [`crate::alerts::restore`].
    pub fn restore_incidents(
        &mut self,
        stored: &[crate::alerts::Stored],
    ) -> crate::alerts::Restored {
        let defs = self.rules.rules.iter().map(|r| &r.def);
        crate::alerts::restore(defs.zip(self.alerts.iter_mut()), stored)
    }

    /// Puts back the kept KPIs' buckets the BI store kept (`engine run
    /// --postgres`), before the first evaluation; see
    /// [`crate::rules::Rollups::restore`]. Returns how many were taken.
    pub fn restore_rollups(&mut self, stored: &[crate::rules::rollup::StoredValue]) -> usize {
        self.rules.rollups.restore(stored)
    }

    /// Open incidents per rule id, for the API.
    pub fn incidents(&self) -> Vec<(String, &RuleAlerts)> {
        self.rules
            .rules
            .iter()
            .zip(&self.alerts)
            .map(|(r, a)| (r.def.id.clone(), a))
            .collect()
    }

    /// Judges streams idle by wall-clock quiet instead of event-time lag (live input).
    pub fn with_idleness(mut self, idleness: window::Idleness) -> Self {
        self.watermark = self.watermark.with_idleness(idleness);
        self
    }

    /// Declares a stream that will come (a Kafka partition just assigned), so
    /// that it holds the watermark until it delivers rows or goes idle.
    pub fn expect_stream(&mut self, stream: window::Stream) {
        self.watermark.expect(stream);
    }

    /// Adds rows of `table` from a source with one stream per table (a capture,
    /// the OTLP receiver).
    pub fn push(
        &mut self,
        table: Table,
        batch: RecordBatch,
    ) -> Result<(), arrow::error::ArrowError> {
        self.push_from(table.into(), batch)
    }

    /// Adds rows of one stream. Rows older than the stream's watermark, or only
    /// in windows already evaluated, are counted as late and dropped; the
    /// watermark then advances past the batch's rows.
    pub fn push_from(
        &mut self,
        stream: window::Stream,
        batch: RecordBatch,
    ) -> Result<(), arrow::error::ArrowError> {
        let table = stream.table;
        let (batch, clock) = self.drop_future_rows(table, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = window::times(&batch)?;
        let (lo, hi) = times
            .iter()
            .flatten()
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        *self.stats.rows.entry(table.name()).or_default() += batch.num_rows() as u64;
        // late: behind its own stream's watermark, or only in windows already evaluated
        // (a session that has evaluated nothing yet holds every row)
        let evaluated_upto = self.sessions.iter().map(|s| s.next_start).min().flatten();
        let keep_from = match (self.watermark.of(stream), evaluated_upto) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // a table no rule reads is not held: it only moves the watermark
        let read = self.sessions.iter().any(|st| st.tables.contains(&table));
        let resumed = match self.resumed {
            Some(r) if lo < r => times.iter().flatten().filter(|&t| t < r).count(),
            _ => 0,
        };
        let pushed = if read {
            self.buffer.push(table, batch, keep_from)?
        } else {
            window::Pushed::default()
        };
        // rows older than the resume point are below every session's next
        // window, so the buffer took them for late: they are not
        let resumed = resumed.min(pushed.late);
        self.stats.resumed_rows += resumed as u64;
        self.stats.late_rows += (pushed.late - resumed) as u64;
        if pushed.refused > 0 {
            let refused = self
                .stats
                .buffer_refused_rows
                .entry(table.name())
                .or_default();
            if *refused == 0 {
                tracing::warn!(
                    table = table.name(),
                    held = self.buffer.rows(),
                    "the window buffer is full: rows beyond it are dropped and counted \
                     (otelguard_buffer_refused_rows_total; raise --max-buffered-rows)"
                );
            }
            *refused += pushed.refused as u64;
        }
        if let Some(early) = &mut self.early {
            early.fresh = true;
        }
        if hi >= lo {
            self.watermark
                .observe(stream, clock.map_or(hi, |now| hi.min(now)));
            self.max_seen = Some(self.max_seen.map_or(hi, |m| m.max(hi)));
            self.min_seen = Some(self.min_seen.map_or(lo, |m| m.min(lo)));
            self.newest_row = Some(self.newest_row.map_or(hi, |m| m.max(hi)));
        }
        Ok(())
    }

    /// A watermark from upstream: stream `stream` has reached event time
    /// `newest` without rows here (a keyed topic's writer read that far in
    /// the stream's source partition, issue 18). With a future limit
    /// ([`Evaluator::with_future_limit`]) it is capped at the wall clock, as
    /// rows' times are: a forged time moves no window past the present.
    pub fn observe_source(&mut self, stream: window::Stream, newest: i64) {
        let newest = match self.future {
            Some(_) => newest.min(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)),
            None => newest,
        };
        self.watermark.observe(stream, newest);
        self.max_seen = Some(self.max_seen.map_or(newest, |m| m.max(newest)));
    }

    /// Moves every stream seen so far to at least `time`: in live evaluation,
    /// when input goes quiet, the wall clock moves event time on so that windows
    /// close and incidents resolve.
    pub fn advance(&mut self, time: i64) {
        self.watermark.advance(time);
        self.max_seen = Some(self.max_seen.map_or(time, |m| m.max(time)));
    }

    /// Event time before which every window of every rule has been evaluated:
    /// a row older than this has had all its effects.
    pub fn evaluated_upto(&self) -> Option<i64> {
        self.evaluated_upto_of(|_| true)
    }

    /// Like [`Evaluator::evaluated_upto`], over the windows alerts depend on
    /// only: those of alerting rules and of kept KPIs (`keep`, which rules
    /// read). What a live engine started with `--resume alerts` commits on.
    /// With no such rule, the watermark.
    pub fn alerts_evaluated_upto(&self) -> Option<i64> {
        self.evaluated_upto_of(|si| {
            self.rules
                .rules
                .iter()
                .any(|r| r.session == si && (!r.def.is_kpi() || r.def.rollup.is_some()))
        })
    }

    /// The start of the first window not yet evaluated, over the sessions
    /// `counts` keeps (a row older than it has had its effects there); with
    /// no such session, the watermark.
    fn evaluated_upto_of(&self, counts: impl Fn(usize) -> bool) -> Option<i64> {
        let mut starts = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(si, _)| counts(*si))
            // a session that has evaluated nothing yet: from the first window
            // a row still to come may fall in, that of the oldest row seen or
            // of the watermark, whichever is older (a stream behind the
            // others may still bring rows older than any seen: a keyed task
            // of `engine evaluate`); none while an expected stream is silent
            .map(|(si, s)| {
                s.next_start.or_else(|| {
                    let oldest = self.min_seen?.min(self.watermark.get()?);
                    Some(first_window(self.rules.sessions[si].spec, oldest))
                })
            })
            .peekable();
        if starts.peek().is_none() {
            return self.watermark.get();
        }
        starts.min().flatten()
    }

    /// Before the first row of a restart: every window that starts before
    /// event time `ns` was evaluated before the stop (a Kafka resume point,
    /// committed with the offsets), or (`--resume alerts`) is a KPI window
    /// that was open at the stop and cannot be whole again. No such window is
    /// evaluated; the rows read again that only they held are counted in
    /// [`Stats::resumed_rows`], not as late. Only moves windows forward.
    pub fn resume_from(&mut self, ns: i64) {
        self.resumed = Some(self.resumed.map_or(ns, |r| r.max(ns)));
        for (st, session) in self.sessions.iter_mut().zip(&self.rules.sessions) {
            let first = align_up(ns, session.spec.slide_ns);
            st.next_start = Some(st.next_start.map_or(first, |n| n.max(first)));
        }
    }

    /// The current watermark (event time, ns).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark.get()
    }

    /// Whether some window became final since the last evaluation.
    pub fn has_final_windows(&self) -> bool {
        let Some(w) = self.watermark.get() else {
            return false;
        };
        self.rules
            .sessions
            .iter()
            .zip(&self.sessions)
            .any(|(s, st)| {
                let last = window::last_final_start(s.spec, w);
                st.next_start.is_none_or(|n| n <= last)
            })
    }

    /// Live evaluation: the rules whose condition only grows within a window
    /// ([`crate::rules::Growth::Monotone`], with `for = 1`) also run over the open windows,
    /// at most once per `every` while rows come ([`Evaluator::evaluate_early`]),
    /// and fire as soon as their condition holds. The close of the window
    /// still runs as before and reports the value at close and, later, the
    /// resolution, under the same identity. Replay does not use it: its
    /// outputs do not depend on how rows are grouped.
    pub fn with_early_firing(mut self, every: std::time::Duration) -> Self {
        self.early = Some(EarlyFiring {
            every,
            last_pass: None,
            fresh: false,
            fired: BTreeMap::new(),
        });
        self
    }

    /// Whether an early pass is due: rows came since the last one, at least
    /// `every` ago ([`Evaluator::with_early_firing`]).
    pub fn early_due(&self) -> bool {
        self.early.as_ref().is_some_and(|e| {
            e.fresh
                && e.last_pass
                    .is_none_or(|(end, took)| end.elapsed() >= e.every.max(took))
        })
    }

    /// Whether rows came since the last early pass (one is due once
    /// [`Evaluator::early_due`]).
    pub fn early_waiting(&self) -> bool {
        self.early.as_ref().is_some_and(|e| e.fresh)
    }

    /// Firings sent early whose window has not closed yet, per rule id.
    pub fn early_open(&self) -> BTreeMap<String, usize> {
        self.early
            .iter()
            .flat_map(|e| e.fired.iter().map(|(id, f)| (id.clone(), f.len())))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Whether rule `ri` may fire before its window closes: monotone, enabled,
    /// an alert that fires at the first window that holds (`for = 1`).
    fn fires_early(&self, ri: usize) -> bool {
        let rule = &self.rules.rules[ri];
        rule.growth.is_monotone()
            && self.health[ri].enabled
            && matches!(
                rule.def.kind,
                crate::rules::Kind::Alert { for_windows: 1, .. }
            )
    }

    /// An early pass: runs every monotone rule over its open windows (those
    /// not evaluated yet, up to the first that holds the newest row: the
    /// later ones hold fewer of the rows seen so far) and fires for each
    /// entity that meets the condition in one of them and has no open
    /// incident, as its window's close will. Since the condition only grows,
    /// the close finds it again: the firing is the close's own, sent early.
    pub async fn evaluate_early(&mut self) -> Vec<Output> {
        let Some(early) = &mut self.early else {
            return vec![];
        };
        early.fresh = false;
        let started = std::time::Instant::now();
        let (Some(newest), Some(min_seen)) = (self.max_seen, self.min_seen) else {
            return vec![];
        };
        self.stats.early_passes += 1;
        let mut out = Vec::new();
        for si in 0..self.rules.sessions.len() {
            let rules: Vec<usize> = (0..self.rules.rules.len())
                .filter(|&ri| self.rules.rules[ri].session == si && self.fires_early(ri))
                .collect();
            if rules.is_empty() {
                continue;
            }
            let session = self.rules.sessions[si].clone();
            let spec = session.spec;
            let first = self.sessions[si]
                .next_start
                .unwrap_or_else(|| first_window(spec, min_seen));
            let last =
                (newest - spec.size_ns).div_euclid(spec.slide_ns) * spec.slide_ns + spec.slide_ns;
            if first > last {
                continue;
            }
            session.set_frame(first, last);
            for (table, t) in &session.tables {
                if self.sessions[si].tables.contains(table) {
                    let to = last.saturating_add(spec.size_ns);
                    t.set(
                        self.buffer
                            .overlapping(*table, first, to)
                            .cloned()
                            .collect(),
                        first,
                        last,
                    );
                }
            }
            let before = out.len();
            for ri in rules {
                let rule = self.rules.rules[ri].clone();
                let found = rule
                    .execute_early(&session)
                    .await
                    .and_then(|batches| rule.findings(&batches));
                match found {
                    Ok(findings) => out.extend(self.fire_early(ri, first, last, &findings)),
                    // the close runs it again, and counts its failures
                    Err(e) => {
                        tracing::warn!(rule = %rule.def.id, error = %e, "early pass failed")
                    }
                }
            }
            // An early alert's sample traces can be opened at once, as a
            // closed window's can.
            let sampled: BTreeSet<String> = out[before..]
                .iter()
                .filter_map(|o| match o {
                    Output::Alert(a) if a.state == crate::alerts::State::Firing => Some(a),
                    _ => None,
                })
                .flat_map(|a| a.trace_ids.iter().cloned())
                .collect();
            self.keep_samples(&sampled, first, last.saturating_add(spec.size_ns), true);
            for t in session.tables.values() {
                t.clear();
            }
        }
        out.sort_by_cached_key(Output::order_key);
        if let Some(early) = &mut self.early {
            early.last_pass = Some((std::time::Instant::now(), started.elapsed()));
        }
        out
    }

    /// Keeps the spans and logs of the traces `ids` from the buffered rows of
    /// `[from, to)`, for `/api/traces/{id}`. `early`: for firings before
    /// their window closed, whose traces may not have come whole yet; the
    /// next close keeps them again (a fuller trace replaces the first).
    fn keep_samples(&self, ids: &BTreeSet<String>, from: i64, to: i64, early: bool) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let again = if early {
            samples.again_later(&ids);
            Vec::new()
        } else {
            samples.take_again()
        };
        ids.extend(again.iter().map(String::as_str));
        if ids.is_empty() {
            return;
        }
        samples.keep(
            &ids,
            self.buffer
                .overlapping(Table::Spans, from, to)
                .map(|b| &b.batch),
            self.buffer
                .overlapping(Table::Logs, from, to)
                .map(|b| &b.batch),
        );
    }

    /// The early firings of rule `ri` for the findings of an early pass
    /// over the open windows starting in `[first, last]`.
    fn fire_early(
        &mut self,
        ri: usize,
        first: i64,
        last: i64,
        findings: &[crate::rules::Finding],
    ) -> Vec<Output> {
        let detected_at = self.detected_at();
        let def = &self.rules.rules[ri].def;
        let crate::rules::Kind::Alert { suppress_ns, .. } = &def.kind else {
            return vec![];
        };
        let Some(early) = &mut self.early else {
            return vec![];
        };
        let state = &self.alerts[ri];
        let fired = early.fired.entry(def.id.clone()).or_default();
        // per entity, the first open window that holds
        let mut earliest: BTreeMap<&BTreeMap<String, String>, &crate::rules::Finding> =
            BTreeMap::new();
        for f in findings {
            if f.window_start < first || f.window_start > last {
                continue;
            }
            let e = earliest.entry(&f.keys).or_insert(f);
            if f.window_start < e.window_start {
                *e = f;
            }
        }
        let mut out = Vec::new();
        for (keys, f) in earliest {
            // an open incident has its own course; a suppression that would
            // silence the close in some window between is left to the close
            if state.incidents.contains_key(keys)
                || fired.contains_key(keys)
                || state.is_suppressed(keys, first + def.window.size_ns, *suppress_ns)
                || state.incidents.len() + fired.len() >= state.cap()
            {
                continue;
            }
            // the alert the close will make when this window opens the incident
            let made = RuleAlerts::with_cap(1).window(def, f.window_start, &[f]);
            for mut a in made {
                a.detected_at_ns = detected_at;
                fired.insert(keys.clone(), (f.window_start, a.clone()));
                self.stats.early_alerts += 1;
                self.health[ri].fired_early += 1;
                out.push(Output::Alert(a));
            }
        }
        out
    }

    /// Resolves the early firings of session `si`'s rules whose window (up
    /// to `last`) closed without a firing for their entity (the close was
    /// suppressed, refused at the cap, or failed).
    fn withdraw_unconfirmed(&mut self, si: usize, last: i64) -> Vec<Output> {
        let Some(early) = &mut self.early else {
            return vec![];
        };
        let mut out = Vec::new();
        for rule in self.rules.rules.iter().filter(|r| r.session == si) {
            let Some(fired) = early.fired.get_mut(&rule.def.id) else {
                continue;
            };
            let gone: Vec<BTreeMap<String, String>> = fired
                .iter()
                .filter(|(_, (start, _))| *start <= last)
                .map(|(k, _)| k.clone())
                .collect();
            for keys in gone {
                if let Some((_, a)) = fired.remove(&keys) {
                    self.stats.early_withdrawn += 1;
                    out.push(Output::Alert(withdrawn(&a, a.at_ns)));
                }
            }
        }
        out
    }

    /// The event time reached as alerts are emitted: the newest row, or the
    /// watermark where idleness moved it ahead (the end of input leaves the
    /// newest row).
    fn detected_at(&self) -> Option<i64> {
        match (self.watermark.get(), self.max_seen) {
            (Some(w), Some(seen)) if w != i64::MAX => Some(w.max(seen)),
            (_, seen) => seen,
        }
        .map(crate::alerts::micros)
    }

    /// Evaluates every window that is final at the current watermark.
    pub async fn evaluate(&mut self) -> Vec<Output> {
        let mut out = match self.watermark.get() {
            Some(w) => {
                self.evaluate_until(|spec| window::last_final_start(spec, w))
                    .await
            }
            None => vec![],
        };
        out.extend(self.future_alerts());
        out
    }

    /// Whether an evaluation has something to report now: a final window, or
    /// future-dated rows that were dropped.
    pub fn has_news(&self) -> bool {
        self.has_final_windows() || self.future.as_ref().is_some_and(|g| !g.pending.is_empty())
    }

    /// Ends the input: every window that holds a row is evaluated.
    pub async fn finish(&mut self) -> Vec<Output> {
        let Some(max) = self.max_seen else {
            return vec![];
        };
        self.watermark.finish();
        self.evaluate_until(|spec| max.div_euclid(spec.slide_ns) * spec.slide_ns)
            .await
    }

    async fn evaluate_until(&mut self, last_start_of: impl Fn(WindowSpec) -> i64) -> Vec<Output> {
        let Some(min_seen) = self.min_seen else {
            return vec![];
        };
        let mut out = Vec::new();
        // sessions with kept KPIs first: the rules that read them see the
        // buckets of every window that ended before theirs
        let mut order: Vec<usize> = (0..self.rules.sessions.len()).collect();
        order.sort_by_key(|&si| {
            !self
                .rules
                .rules
                .iter()
                .any(|r| r.session == si && r.def.rollup.is_some())
        });
        for si in order {
            let spec = self.rules.sessions[si].spec;
            let last = last_start_of(spec);
            let first = self.sessions[si]
                .next_start
                .unwrap_or_else(|| first_window(spec, min_seen));
            if first > last {
                // nothing final yet; a session that never evaluated stays
                // unset, so that a row older than those seen so far (a stream
                // behind the others, moved on by watermarks alone: a keyed
                // task of `engine evaluate`) still opens its window
                continue;
            }
            self.stats.evaluations += 1;
            // Windows after the newest row hold no row. When event time jumps
            // over many of them (the wall clock moving it on over a quiet input,
            // an engine started on an old topic) only the newest is evaluated:
            // rules that read kept KPIs (`rollup`, `baseline`) give a value in
            // windows without rows, and a week's jump would give one per
            // window and key. Step by step, live, every window is evaluated.
            let held = self
                .newest_row
                .map(|t| t.div_euclid(spec.slide_ns) * spec.slide_ns);
            match held {
                Some(held) if last > held.saturating_add(spec.slide_ns) => {
                    if first <= held {
                        out.extend(self.evaluate_session(si, first, held).await);
                    }
                    out.extend(self.evaluate_session(si, last, last).await);
                }
                _ => out.extend(self.evaluate_session(si, first, last).await),
            }
            self.sessions[si].next_start = Some(last + spec.slide_ns);
        }
        let keep_from = self
            .sessions
            .iter()
            .zip(&self.rules.sessions)
            .map(|(st, s)| {
                st.next_start
                    .unwrap_or_else(|| first_window(s.spec, min_seen))
            })
            .min();
        if let Some(k) = keep_from {
            self.buffer.prune(k);
            self.rules.rollups.prune(k);
        }
        out.sort_by_cached_key(Output::order_key);
        out
    }

    /// Evaluates the rules of session `si` over the windows starting in `[first, last]`.
    async fn evaluate_session(&mut self, si: usize, first: i64, last: i64) -> Vec<Output> {
        let spec = self.rules.sessions[si].spec;
        // the event time reached as the alerts are emitted: the newest row,
        // or the watermark where idleness moved it ahead (the end of input
        // leaves the newest row)
        let detected_at = self.detected_at();
        let mut out = Vec::new();
        let session = &self.rules.sessions[si];
        for (table, t) in &session.tables {
            if self.sessions[si].tables.contains(table) {
                let to = last.saturating_add(spec.size_ns);
                let rows = self
                    .buffer
                    .overlapping(*table, first, to)
                    .cloned()
                    .collect();
                t.set(rows, first, last);
            }
        }
        session.set_frame(first, last);
        // Kept KPIs run first and their buckets are recorded, so that the
        // session's rules that read them (`rollup`, `baseline`) see this
        // evaluation's windows too.
        let mut recorded: BTreeMap<usize, Evaluated> = BTreeMap::new();
        for ri in 0..self.rules.rules.len() {
            let rule = self.rules.rules[ri].clone();
            if rule.session == si && self.health[ri].enabled && rule.def.rollup.is_some() {
                let done = evaluate_rule(rule.clone(), session.clone()).await;
                if let Ok(findings) = &done.0 {
                    self.rules.rollups.record(&rule.def, findings);
                }
                recorded.insert(ri, done);
            }
        }
        // The session's rules run at once, as tasks of their own: on a runtime
        // with several threads they share the cores. Their results are then
        // taken in rule order, so the output does not depend on which ends first.
        let running: Vec<(usize, tokio::task::JoinHandle<Evaluated>)> = (0..self.rules.rules.len())
            .filter(|&ri| self.rules.rules[ri].session == si && self.health[ri].enabled)
            .map(|ri| {
                let rule = self.rules.rules[ri].clone();
                let session = self.rules.sessions[si].clone();
                let task = match recorded.remove(&ri) {
                    Some(done) => tokio::spawn(async move { done }),
                    None => tokio::spawn(evaluate_rule(rule, session)),
                };
                (ri, task)
            })
            .collect();
        let mut sampled: BTreeSet<String> = BTreeSet::new();
        for (ri, task) in running {
            let rule = &self.rules.rules[ri];
            let (findings, seconds) = task.await.unwrap_or_else(|e| {
                // planned afresh next time, in case the plan's state is what broke
                rule.replan();
                let stopped = DataFusionError::Execution(format!(
                    "the evaluation stopped: {}",
                    if e.is_panic() {
                        "it panicked"
                    } else {
                        "it was cancelled"
                    }
                ));
                (Err(stopped), 0.0)
            });
            let health = &mut self.health[ri];
            health.evaluations += 1;
            health.eval_seconds.observe(seconds);
            let findings = match findings {
                Ok(f) => {
                    health.failures = 0;
                    f
                }
                Err(e) => {
                    health.failures += 1;
                    health.last_error = Some(e.to_string());
                    tracing::error!(rule = %rule.def.id, file = %rule.def.path.display(), failures = health.failures, error = %e, "rule failed");
                    if health.failures >= MAX_FAILURES {
                        health.enabled = false;
                        tracing::error!(rule = %rule.def.id, "rule disabled after {MAX_FAILURES} failed evaluations in a row");
                    }
                    continue;
                }
            };
            if rule.def.is_kpi() {
                for f in &findings {
                    let values = kpi::values(&rule.def, f);
                    self.stats.kpi_values += values.len() as u64;
                    out.extend(values.into_iter().map(Output::Kpi));
                }
                continue;
            }
            let mut by_window: BTreeMap<i64, Vec<&crate::rules::Finding>> = BTreeMap::new();
            for f in &findings {
                if f.window_start >= first && f.window_start <= last {
                    by_window.entry(f.window_start).or_default().push(f);
                }
            }
            let state = &mut self.alerts[ri];
            let mut cursor = first;
            while cursor <= last {
                if state.is_idle() {
                    // nothing open: skip straight to the next window with findings
                    match by_window.range(cursor..).next() {
                        Some((&start, _)) => cursor = start,
                        None => break,
                    }
                }
                let found = by_window.get(&cursor).map(Vec::as_slice).unwrap_or(&[]);
                let mut alerts = state.window(&rule.def, cursor, found);
                for a in &mut alerts {
                    a.detected_at_ns = detected_at;
                }
                self.health[ri].fired += alerts
                    .iter()
                    .filter(|a| a.state == crate::alerts::State::Firing)
                    .count() as u64;
                self.stats.alerts += alerts.len() as u64;
                for a in alerts
                    .iter()
                    .filter(|a| a.state == crate::alerts::State::Firing)
                {
                    sampled.extend(a.trace_ids.iter().cloned());
                }
                let alerts = confirm_early(&mut self.early, &mut self.stats, &rule.def.id, alerts);
                out.extend(alerts.into_iter().map(Output::Alert));
                cursor += spec.slide_ns;
            }
        }
        self.keep_samples(&sampled, first, last.saturating_add(spec.size_ns), false);
        for t in self.rules.sessions[si].tables.values() {
            t.clear();
        }
        out.extend(self.withdraw_unconfirmed(si, last));
        out
    }
}

#[cfg(test)]
mod tests;
