//! The alert lifecycle: pending -> firing -> resolved, one incident per
//! (rule, entity) until it resolves, with suppression of repeats.
//!
//! A rule's query yields, per closed window, the entities for which its
//! condition holds. An entity whose condition holds in `for` consecutive windows
//! fires; the first window in which it no longer holds resolves it. After an
//! entity was notified, a new incident for it within `suppress` is kept silent.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use serde::{Serialize, Serializer};

use crate::rules::definition::Maturity;
use crate::rules::{Definition, Finding, Kind};

/// `firing` or `resolved`, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Resolved,
}

/// One alert. As JSON ([`Alert::serialize`]): the contract's fields in the
/// contract's order, then the extension fields `id`, `rule_version`,
/// `incident_start`, `first_seen` and `detected_at` (docs/dashboards.md), and
/// the rule's notes: `maturity`, `runbook` and `false_positives`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule_id: String,
    pub severity: String,
    pub state: State,
    pub entity: BTreeMap<String, String>,
    pub window_start: String,
    pub window_end: String,
    pub value: serde_json::Value,
    pub tags: Vec<String>,
    pub summary: String,
    pub trace_ids: Vec<String>,
    /// event time of the window end, for ordering; not serialized
    pub at_ns: i64,
    /// the rule's version ([`crate::rules::Definition::version`]); part of the identity
    pub rule_version: String,
    /// event time of the first window of the incident; `None` for a notice
    /// that belongs to no incident (the engine's own built-in alerts)
    pub incident_start_ns: Option<i64>,
    /// event time of the incident's first evidence: the earliest `first_seen`
    /// its rule reported over the incident's windows, else the start of its
    /// first window; `None` for a notice
    pub first_seen_ns: Option<i64>,
    /// event time the engine had reached when it emitted this alert (the
    /// newest event seen, or the watermark if that is ahead); `None` when
    /// not known. `detected_at - first_seen` is the detection delay.
    pub detected_at_ns: Option<i64>,
    /// what the rule's header tells a responder ([`Notes`]); `None` for a notice
    pub notes: Option<Arc<Notes>>,
}

/// What a rule's header tells the person who gets its alert: how to respond
/// (`runbook`), what else could look like this (`false_positives`), and how
/// far the rule has come (`maturity`: an `experimental` rule's alerts say so
/// wherever they appear). Shared by all the alerts of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notes {
    pub runbook: Option<String>,
    pub false_positives: Option<String>,
    pub maturity: Maturity,
}

impl Notes {
    /// The notes of `def`'s header.
    pub fn of(def: &Definition) -> Self {
        Notes {
            runbook: def.runbook.clone(),
            false_positives: def.false_positives.clone(),
            maturity: def.maturity,
        }
    }
}

/// The JSON of an [`Alert`]: the contract's object and the extension fields.
#[derive(Serialize)]
struct AlertJson<'a> {
    rule_id: &'a str,
    severity: &'a str,
    state: State,
    entity: &'a BTreeMap<String, String>,
    window_start: &'a str,
    window_end: &'a str,
    value: &'a serde_json::Value,
    tags: &'a [String],
    summary: &'a str,
    trace_ids: &'a [String],
    id: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    rule_version: &'a str,
    incident_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maturity: Option<Maturity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runbook: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    false_positives: Option<&'a str>,
}

impl Serialize for Alert {
    /// The contract's fields in the contract's order, then `id`
    /// ([`Alert::identity`]), `rule_version` (absent for the engine's own
    /// notices), `incident_start`, `first_seen` and `detected_at` when
    /// known (RFC 3339, event time), and the rule's `maturity`, `runbook` and
    /// `false_positives` ([`Notes`]; absent for notices).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AlertJson {
            rule_id: &self.rule_id,
            severity: &self.severity,
            state: self.state,
            entity: &self.entity,
            window_start: &self.window_start,
            window_end: &self.window_end,
            value: &self.value,
            tags: &self.tags,
            summary: &self.summary,
            trace_ids: &self.trace_ids,
            id: self.identity(),
            rule_version: &self.rule_version,
            incident_start: self.incident_start(),
            first_seen: self.first_seen_ns.map(rfc3339),
            detected_at: self.detected_at_ns.map(rfc3339),
            maturity: self.notes.as_ref().map(|n| n.maturity),
            runbook: self.notes.as_ref().and_then(|n| n.runbook.as_deref()),
            false_positives: self
                .notes
                .as_ref()
                .and_then(|n| n.false_positives.as_deref()),
        }
        .serialize(s)
    }
}

impl Alert {
    /// The alert's stable identity: 16 hex digits of a hash of (rule id, rule
    /// version, entity, incident start). The firing and the resolved alert of
    /// one incident share it, and so does the same incident found again when
    /// a restart reads its rows again; every sink carries it, so a sink
    /// updates instead of duplicating. A notice without an incident uses its
    /// window start.
    pub fn identity(&self) -> String {
        let entity = serde_json::to_string(&self.entity).unwrap_or_default();
        let text = format!(
            "{}\0{}\0{}\0{}",
            self.rule_id,
            self.rule_version,
            entity,
            self.incident_start()
        );
        format!(
            "{:016x}",
            crate::rules::definition::fnv1a64(text.as_bytes())
        )
    }

    /// RFC 3339 text of the incident's first window start (the window start
    /// for a notice).
    pub fn incident_start(&self) -> String {
        match self.incident_start_ns {
            Some(ns) => rfc3339(ns),
            None => self.window_start.clone(),
        }
    }

    /// Whether its rule is marked `maturity = "experimental"`.
    pub fn is_experimental(&self) -> bool {
        self.notes
            .as_ref()
            .is_some_and(|n| n.maturity == Maturity::Experimental)
    }

    /// Seconds from the first evidence to the emission, when both are known.
    pub fn detection_delay_seconds(&self) -> Option<f64> {
        let (seen, detected) = self.first_seen_ns.zip(self.detected_at_ns)?;
        Some(detected.saturating_sub(seen) as f64 / 1e9)
    }
}

/// RFC 3339 UTC text of an event time in nanoseconds.
pub fn rfc3339(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An event time cut to whole microseconds, as PostgreSQL's `timestamptz`
/// keeps it: the detection delay's ends, so that the store and the engine
/// compute the same delay.
pub fn micros(ns: i64) -> i64 {
    ns - ns.rem_euclid(1_000)
}

/// A number as JSON: integral values without a fraction, NaN as null.
pub fn json_number(v: f64) -> serde_json::Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64((v * 1e6).round() / 1e6)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
}

/// An open incident of one rule for one entity.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub phase: Phase,
    /// consecutive windows in which the condition held
    pub streak: u32,
    pub last_window_start: i64,
    /// start of the first window in which the condition held
    pub first_window_start: i64,
    /// the incident's first evidence: the earliest `first_seen` of its
    /// findings, else the start of its first window
    pub first_seen: i64,
    pub value: f64,
    pub trace_ids: Vec<String>,
    /// whether its firing was notified (not suppressed)
    pub notified: bool,
    /// the latest window's summary details ([`Finding::details`])
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// The default of [`RuleAlerts::with_cap`] (`engine run --max-incidents`).
pub const DEFAULT_MAX_INCIDENTS: usize = 100_000;

/// The lifecycle state of one rule.
#[derive(Debug)]
pub struct RuleAlerts {
    pub incidents: BTreeMap<BTreeMap<String, String>, Incident>,
    /// window end of the last notification per entity, for suppression
    last_notified: Notified,
    /// see [`RuleAlerts::with_cap`]
    cap: usize,
    refused: u64,
}

/// The window end of the last notification per entity, within a cap.
#[derive(Debug)]
struct Notified {
    at: BTreeMap<BTreeMap<String, String>, i64>,
    cap: usize,
    forgotten: u64,
}

impl Notified {
    fn get(&self, keys: &BTreeMap<String, String>) -> Option<&i64> {
        self.at.get(keys)
    }

    /// Remembers that `keys` was notified at `end`, within the cap: memories
    /// whose suppression is over go first, then the oldest.
    fn remember(&mut self, keys: &BTreeMap<String, String>, end: i64, suppress_ns: i64) {
        if !self.at.contains_key(keys) && self.at.len() >= self.cap {
            self.at.retain(|_, t| end < t.saturating_add(suppress_ns));
            if self.at.len() >= self.cap
                && let Some(oldest) = self
                    .at
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
            {
                self.at.remove(&oldest);
                self.forgotten += 1;
            }
        }
        self.at.insert(keys.clone(), end);
    }
}

impl Default for RuleAlerts {
    fn default() -> Self {
        RuleAlerts::with_cap(DEFAULT_MAX_INCIDENTS)
    }
}

impl RuleAlerts {
    /// At most `entities` open incidents (pending or firing) and as many
    /// entities remembered for suppression. At the cap, a finding for an
    /// entity with no open incident is refused and counted
    /// ([`RuleAlerts::refused`]; the open ones go on, and room comes back as
    /// they resolve); a suppression memory whose time is over is forgotten
    /// first, then the oldest, counted ([`RuleAlerts::forgotten`]): that
    /// entity may be notified again within its suppression, noise rather
    /// than silence.
    pub fn with_cap(entities: usize) -> Self {
        let cap = entities.max(1);
        RuleAlerts {
            incidents: BTreeMap::new(),
            last_notified: Notified {
                at: BTreeMap::new(),
                cap,
                forgotten: 0,
            },
            cap,
            refused: 0,
        }
    }

    /// Findings refused at the cap of open incidents.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Suppression memories forgotten at the cap while still in force.
    pub fn forgotten(&self) -> u64 {
        self.last_notified.forgotten
    }

    /// Whether a firing for `keys` in a window ending at `end` would be kept
    /// silent by an earlier notification's suppression (`suppress_ns`).
    pub fn is_suppressed(
        &self,
        keys: &BTreeMap<String, String>,
        end: i64,
        suppress_ns: i64,
    ) -> bool {
        self.last_notified
            .get(keys)
            .is_some_and(|t| end < t.saturating_add(suppress_ns))
    }

    /// Open incidents at most ([`RuleAlerts::with_cap`]).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether any incident is open (so absent windows matter).
    pub fn is_idle(&self) -> bool {
        self.incidents.is_empty()
    }

    /// Applies the findings of one closed window (all of this rule's findings
    /// whose `window_start` is `start`) and returns the alerts it causes.
    pub fn window(&mut self, def: &Definition, start: i64, findings: &[&Finding]) -> Vec<Alert> {
        let Kind::Alert {
            for_windows,
            suppress_ns,
            ..
        } = &def.kind
        else {
            return vec![];
        };
        let slide = def.window.slide_ns;
        let end = start + def.window.size_ns;
        let mut out = Vec::new();
        for f in findings {
            let value = f.values.first().copied().unwrap_or(f64::NAN);
            let evidence = f.first_seen.map_or(start, |t| t.clamp(start, end));
            if self.incidents.len() >= self.cap && !self.incidents.contains_key(&f.keys) {
                if self.refused == 0 {
                    tracing::warn!(
                        rule = %def.id,
                        open = self.incidents.len(),
                        "the cap of open incidents is reached: findings for new entities are \
                         refused and counted (otelguard_incidents_refused_total; --max-incidents)"
                    );
                }
                self.refused += 1;
                continue;
            }
            let inc = self.incidents.entry(f.keys.clone()).or_insert(Incident {
                phase: Phase::Pending,
                streak: 0,
                last_window_start: i64::MIN,
                first_window_start: start,
                first_seen: evidence,
                value,
                trace_ids: vec![],
                notified: false,
                details: BTreeMap::new(),
            });
            if inc.last_window_start >= start {
                // two rows for one entity in a window (or, for an incident
                // restored after a restart, a window before the one it was
                // last seen in): keep the larger figure
                inc.value = inc.value.max(value);
                inc.first_seen = inc.first_seen.min(evidence);
                continue;
            }
            inc.streak = if inc.last_window_start == start - slide {
                inc.streak + 1
            } else {
                1
            };
            if inc.streak == 1 && inc.phase == Phase::Pending {
                inc.first_window_start = start;
                inc.first_seen = evidence;
            } else {
                inc.first_seen = inc.first_seen.min(evidence);
            }
            inc.last_window_start = start;
            inc.value = value;
            inc.details = f.details.clone();
            let mut traces = inc.trace_ids.clone();
            traces.extend(f.trace_ids.iter().cloned());
            traces.sort();
            traces.dedup();
            traces.truncate(5);
            inc.trace_ids = traces;
            if inc.phase == Phase::Pending && inc.streak >= *for_windows {
                inc.phase = Phase::Firing;
                let suppressed = self
                    .last_notified
                    .get(&f.keys)
                    .is_some_and(|t| end < t.saturating_add(*suppress_ns));
                if !suppressed {
                    inc.notified = true;
                    self.last_notified.remember(&f.keys, end, *suppress_ns);
                    out.push(alert(def, State::Firing, &f.keys, inc, start));
                }
            }
        }
        let cleared: Vec<_> = self
            .incidents
            .iter()
            // an incident restored after a restart may have been seen in a
            // later window than the one evaluated: it stays open
            .filter(|(_, inc)| inc.last_window_start < start)
            .map(|(k, _)| k.clone())
            .collect();
        for keys in cleared {
            if let Some(inc) = self.incidents.remove(&keys)
                && inc.phase == Phase::Firing
                && inc.notified
            {
                out.push(alert(def, State::Resolved, &keys, &inc, start));
            }
        }
        out
    }
}

impl RuleAlerts {
    /// Closes every open incident, as when the rule goes away (a reload
    /// removed or changed it): a notified firing incident is resolved at the
    /// window starting at `start` (the first one not evaluated), the others
    /// are forgotten.
    pub fn resolve_all(&mut self, def: &Definition, start: i64) -> Vec<Alert> {
        std::mem::take(&mut self.incidents)
            .into_iter()
            .filter(|(_, inc)| inc.phase == Phase::Firing && inc.notified)
            .map(|(keys, inc)| {
                let at = start.max(inc.last_window_start.saturating_add(def.window.slide_ns));
                alert(def, State::Resolved, &keys, &inc, at)
            })
            .collect()
    }
}

/// An incident as the BI store keeps it (its latest firing alert), to be
/// restored when the engine starts again.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub rule_id: String,
    /// `None` for alerts written before the store kept versions
    pub rule_version: Option<String>,
    pub entity: BTreeMap<String, String>,
    pub incident_start_ns: i64,
    /// the window of its firing alert
    pub fired_start_ns: i64,
    pub fired_end_ns: i64,
    pub first_seen_ns: Option<i64>,
    pub value: Option<f64>,
    pub trace_ids: Vec<String>,
    /// fired and not resolved
    pub open: bool,
}

/// What [`restore`] did with the stored incidents.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// open incidents restored: a finding for them does not notify again
    pub open: usize,
    /// notifications restored for suppression (the open ones included)
    pub notified: usize,
    /// incidents of a rule the pack no longer has, or has in another version
    /// (their rule changed: its incidents start afresh)
    pub skipped: usize,
}

impl RuleAlerts {
    /// Restores one stored incident of this rule: its notification counts
    /// for suppression, and an open one goes on firing, already notified, so
    /// that a restart does not notify it again. Its summary details are not
    /// kept by the store; the resolution's summary lacks them.
    pub fn restore(&mut self, def: &Definition, s: &Stored) -> bool {
        let Kind::Alert {
            for_windows,
            suppress_ns,
            ..
        } = &def.kind
        else {
            return false;
        };
        self.last_notified
            .remember(&s.entity, s.fired_end_ns, *suppress_ns);
        if !s.open || (self.incidents.len() >= self.cap && !self.incidents.contains_key(&s.entity))
        {
            return false;
        }
        self.incidents.insert(
            s.entity.clone(),
            Incident {
                phase: Phase::Firing,
                streak: *for_windows,
                last_window_start: s.fired_start_ns,
                first_window_start: s.incident_start_ns,
                first_seen: s.first_seen_ns.unwrap_or(s.incident_start_ns),
                value: s.value.unwrap_or(f64::NAN),
                trace_ids: s.trace_ids.clone(),
                notified: true,
                details: BTreeMap::new(),
            },
        );
        true
    }
}

/// Restores stored incidents into the lifecycle states of the rules they
/// belong to (`rules` pairs each definition with its state), before the
/// first evaluation. An incident whose rule is gone or changed version is
/// skipped and counted.
pub fn restore<'a>(
    rules: impl IntoIterator<Item = (&'a Definition, &'a mut RuleAlerts)>,
    stored: &[Stored],
) -> Restored {
    let mut by_rule: BTreeMap<&str, (&Definition, &mut RuleAlerts)> = rules
        .into_iter()
        .map(|(d, a)| (d.id.as_str(), (d, a)))
        .collect();
    let mut done = Restored::default();
    for s in stored {
        match by_rule.get_mut(s.rule_id.as_str()) {
            Some((def, state))
                if s.rule_version.as_ref().is_none_or(|v| *v == def.version) && !def.is_kpi() =>
            {
                done.notified += 1;
                if state.restore(def, s) {
                    done.open += 1;
                }
            }
            _ => done.skipped += 1,
        }
    }
    done
}

fn alert(
    def: &Definition,
    state: State,
    entity: &BTreeMap<String, String>,
    inc: &Incident,
    start: i64,
) -> Alert {
    let Kind::Alert {
        severity,
        tags,
        summary,
        ..
    } = &def.kind
    else {
        unreachable!("alerts are made for alerting rules only")
    };
    let end = start + def.window.size_ns;
    Alert {
        rule_id: def.id.clone(),
        severity: severity.as_str().to_string(),
        state,
        entity: entity.clone(),
        window_start: rfc3339(start),
        window_end: rfc3339(end),
        value: json_number(inc.value),
        tags: tags.clone(),
        summary: summarize(def, summary.as_deref(), entity, inc, state),
        trace_ids: inc.trace_ids.clone(),
        at_ns: end,
        rule_version: def.version.clone(),
        incident_start_ns: Some(inc.first_window_start),
        first_seen_ns: Some(micros(inc.first_seen)),
        detected_at_ns: None,
        notes: Some(Arc::new(Notes::of(def))),
    }
}

/// Fills a summary template: `{value}`, `{attribute.name}` of the entity and
/// `{column}` of the incident's details are replaced.
fn summarize(
    def: &Definition,
    template: Option<&str>,
    entity: &BTreeMap<String, String>,
    inc: &Incident,
    state: State,
) -> String {
    let value_text = match json_number(inc.value) {
        serde_json::Value::Null => "n/a".to_string(),
        v => v.to_string(),
    };
    let text = match template {
        Some(t) => {
            let mut s = t.replace("{value}", &value_text);
            for (k, v) in entity.iter().chain(&inc.details) {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            s
        }
        None => {
            let who: Vec<String> = entity.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{}: {} = {} for {}",
                def.title,
                def.values.join(","),
                value_text,
                who.join(" ")
            )
        }
    };
    match state {
        State::Firing => text,
        State::Resolved => format!("resolved: {text}"),
    }
}

#[cfg(test)]
mod tests;
