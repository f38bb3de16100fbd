//! Incidents: the alerts of one attack folded into one thing to notify.
//!
//! The alert lifecycle ([`crate::alerts`]) runs per rule and entity, so a
//! flood from 300 addresses is 300 alerts. A [`Correlator`] folds the alerts
//! it is given, in the order the engine emits them (event time), into
//! incidents; the same alerts always fold the same way, so a replay gives
//! the same incidents, with the same identities, every time.
//!
//! How it decides, for each firing alert that is not yet a member:
//!
//! - it joins an incident that still has firing members, or whose last member
//!   event is at most [`Config::gap_ns`] before the alert's incident began,
//!   when the two are related:
//!   - the incident has alerts of the same rule (one rule on many entities:
//!     a botnet, a spray from many addresses), or
//!   - the alert's entity shares a value with the incident's members (the
//!     same address, account or route: related rules on one source or target), or
//!   - the alert's summary names one of those values, or theirs names one of
//!     its entity's (a population rule lists its top addresses);
//!
//!   among several, the one that opened first takes it;
//! - otherwise it opens a new incident and leads it. The incident's identity
//!   is its lead's ([`Alert::identity`]): an incident of one alert is known
//!   by the alert's own id, and the same alerts replayed or read again after a
//!   restart give the same id.
//!
//! A resolved alert closes its member; the incident resolves when its last
//! firing member does. A related alert within the gap opens it again, under
//! the same identity. A firing alert of a member already in (the close of
//! a window confirming an early firing) changes nothing.
//!
//! Bounds: [`Config::listed`] members are listed per incident (the highest
//! values), the rest counted; [`Config::max_incidents`] incidents are kept
//! (past it the oldest is forgotten: its members' later resolutions are
//! reported as incidents of their own) and [`Config::max_members`] firing
//! members are followed (past it a member is counted but not followed: its
//! incident may resolve before it does). Both are counted ([`Correlator::stats`]).
//!
//! Engine notices that belong to no incident (no `incident_start`) are
//! incidents of their own and never fold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::alerts::{Alert, State, rfc3339};

/// How alerts fold; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// how long after its last member event an incident still takes related alerts
    pub gap_ns: i64,
    /// members listed per incident
    pub listed: usize,
    /// incidents kept at most (open, or resolved and still joinable)
    pub max_incidents: usize,
    /// firing members followed at most, over all incidents
    pub max_members: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gap_ns: 5 * 60 * 1_000_000_000,
            listed: 10,
            max_incidents: 10_000,
            max_members: crate::alerts::DEFAULT_MAX_INCIDENTS,
        }
    }
}

/// Entity values and summary text kept per incident for relating alerts.
const MAX_VALUES: usize = 1_000;
const MAX_SAID: usize = 8 * 1024;
/// Distinct entities counted exactly per incident; beyond, each new member counts as one.
const MAX_ENTITIES: usize = 10_000;
/// A value shorter than this is not looked for in summaries (`GET`, `200`).
const MIN_NAMED: usize = 7;

/// One member of an incident, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// the alert's identity
    pub id: String,
    pub rule_id: String,
    pub entity: BTreeMap<String, String>,
    pub value: Value,
    pub state: State,
    pub window_end: String,
    /// its rule is marked experimental
    pub experimental: bool,
}

impl Member {
    fn of(a: &Alert) -> Self {
        Member {
            id: a.identity(),
            rule_id: a.rule_id.clone(),
            entity: a.entity.clone(),
            value: a.value.clone(),
            state: a.state,
            window_end: a.window_end.clone(),
            experimental: a.is_experimental(),
        }
    }

    /// One line for people: `rule k=v ... = value`.
    pub fn line(&self) -> String {
        let who: Vec<String> = self
            .entity
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mark = if self.experimental {
            " [experimental]"
        } else {
            ""
        };
        format!("{}{mark} {} = {}", self.rule_id, who.join(" "), self.value)
    }

    fn rank(&self) -> f64 {
        self.value.as_f64().unwrap_or(f64::NEG_INFINITY)
    }
}

/// An incident as sinks notify it: its lead alert (the one that opened it),
/// its members and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// its identity: its lead's
    pub id: String,
    /// firing while a member fires
    pub state: State,
    /// the alert that opened it
    pub lead: Alert,
    /// up to [`Config::listed`] members, the highest values first
    pub members: Vec<Member>,
    /// members ever, listed or not
    pub member_count: u64,
    /// members firing now
    pub open_members: u64,
    /// distinct entities among the members
    pub entity_count: u64,
    /// the rules of its members, sorted
    pub rules: Vec<String>,
    /// the highest severity among its members
    pub highest_severity: String,
    /// event time its earliest member's incident began
    pub start_ns: i64,
    /// event time of its latest member event (a window end)
    pub end_ns: i64,
}

impl Incident {
    /// An incident of one alert, as [`Correlator`] makes for an alert that
    /// folds into nothing it knows.
    pub fn single(a: &Alert) -> Self {
        Incident {
            id: a.identity(),
            state: a.state,
            lead: a.clone(),
            members: vec![Member::of(a)],
            member_count: 1,
            open_members: u64::from(a.state == State::Firing),
            entity_count: 1,
            rules: vec![a.rule_id.clone()],
            highest_severity: a.severity.clone(),
            start_ns: a.incident_start_ns.unwrap_or(a.at_ns),
            end_ns: a.at_ns,
        }
    }

    /// Members not listed.
    pub fn not_listed(&self) -> u64 {
        self.member_count.saturating_sub(self.members.len() as u64)
    }

    /// Its summary: the lead's, and for more than one member what else it holds.
    pub fn summary(&self) -> String {
        let lead = self
            .lead
            .summary
            .strip_prefix("resolved: ")
            .unwrap_or(&self.lead.summary);
        let mut text = if self.lead.is_experimental() {
            format!("[experimental] {lead}")
        } else {
            lead.to_string()
        };
        if self.member_count > 1 {
            text.push_str(&format!(
                " (one incident of {} alerts on {} entities: {})",
                self.member_count,
                self.entity_count,
                self.rules.join(", ")
            ));
        }
        match self.state {
            State::Firing => text,
            State::Resolved => format!("resolved: {text}"),
        }
    }

    /// The listed members one per line, and how many more there are.
    pub fn member_lines(&self) -> String {
        let mut lines: Vec<String> = self.members.iter().map(Member::line).collect();
        if self.not_listed() > 0 {
            lines.push(format!("... and {} more", self.not_listed()));
        }
        lines.join("\n")
    }

    /// The incident as webhook and Kafka records carry it: its lead alert's
    /// JSON ([`Alert`]'s serialization: rule, entity, window, rule notes...)
    /// with the incident's `id`, `state`, `summary`, `incident_start` and
    /// `incident_end`, then `member_count`, `open_members`, `entity_count`,
    /// `rules`, `highest_severity`, `members` (the listed ones) and
    /// `members_not_listed`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.lead).unwrap_or_else(|_| json!({}));
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "rule_id": m.rule_id,
                    "entity": m.entity,
                    "value": m.value,
                    "state": m.state,
                    "window_end": m.window_end,
                })
            })
            .collect();
        if let Value::Object(o) = &mut v {
            o.insert("id".into(), json!(self.id));
            o.insert("state".into(), json!(self.state));
            o.insert("summary".into(), json!(self.summary()));
            o.insert("incident_start".into(), json!(rfc3339(self.start_ns)));
            o.insert("incident_end".into(), json!(rfc3339(self.end_ns)));
            o.insert("member_count".into(), json!(self.member_count));
            o.insert("open_members".into(), json!(self.open_members));
            o.insert("entity_count".into(), json!(self.entity_count));
            o.insert("rules".into(), json!(self.rules));
            o.insert("highest_severity".into(), json!(self.highest_severity));
            o.insert("members".into(), Value::Array(members));
            o.insert("members_not_listed".into(), json!(self.not_listed()));
        }
        v
    }
}

/// Severity names in rising order; an unknown name ranks lowest.
fn severity_rank(s: &str) -> usize {
    ["info", "low", "medium", "high", "critical"]
        .iter()
        .position(|x| *x == s)
        .map_or(0, |i| i + 1)
}

/// An incident being followed, with what relates alerts to it.
struct Open {
    inc: Incident,
    /// its members' entity values (at most [`MAX_VALUES`])
    values: BTreeSet<String>,
    /// its members' summaries (at most [`MAX_SAID`] bytes)
    said: String,
    /// hashes of its members' entities (at most [`MAX_ENTITIES`])
    entities: BTreeSet<u64>,
}

impl Open {
    fn new(a: &Alert) -> Self {
        let mut open = Open {
            inc: Incident::single(a),
            values: BTreeSet::new(),
            said: String::new(),
            entities: BTreeSet::new(),
        };
        open.note(a);
        open
    }

    /// Keeps what relates later alerts to this incident.
    fn note(&mut self, a: &Alert) {
        for v in a.entity.values() {
            if self.values.len() < MAX_VALUES {
                self.values.insert(v.clone());
            }
        }
        if self.said.len() + a.summary.len() < MAX_SAID {
            self.said.push_str(&a.summary);
            self.said.push('\n');
        }
        let hash = entity_hash(a);
        if self.entities.len() < MAX_ENTITIES {
            self.entities.insert(hash);
            self.inc.entity_count = self.entities.len() as u64;
        } else if !self.entities.contains(&hash) {
            self.inc.entity_count += 1;
        }
    }

    /// Whether `a` may join: in time, and related.
    fn takes(&self, a: &Alert, start: i64, gap_ns: i64) -> bool {
        let in_time = self.inc.open_members > 0 || start <= self.inc.end_ns.saturating_add(gap_ns);
        in_time
            && (self.inc.rules.contains(&a.rule_id)
                || a.entity.values().any(|v| self.values.contains(v))
                || self
                    .values
                    .iter()
                    .any(|v| v.len() >= MIN_NAMED && a.summary.contains(v.as_str()))
                || a.entity
                    .values()
                    .any(|v| v.len() >= MIN_NAMED && self.said.contains(v.as_str())))
    }

    /// Adds a firing alert that is not yet a member; `followed` says whether
    /// its resolution will be known.
    fn join(&mut self, a: &Alert, listed: usize, followed: bool) {
        let inc = &mut self.inc;
        inc.member_count += 1;
        if followed {
            inc.open_members += 1;
        }
        inc.state = State::Firing;
        if let Err(at) = inc.rules.binary_search(&a.rule_id) {
            inc.rules.insert(at, a.rule_id.clone());
        }
        if severity_rank(&a.severity) > severity_rank(&inc.highest_severity) {
            inc.highest_severity = a.severity.clone();
        }
        inc.start_ns = inc.start_ns.min(a.incident_start_ns.unwrap_or(a.at_ns));
        inc.end_ns = inc.end_ns.max(a.at_ns);
        let m = Member::of(a);
        if inc.members.len() < listed {
            inc.members.push(m);
        } else if let Some(lowest) = inc
            .members
            .iter()
            .enumerate()
            .skip(1) // the lead stays listed
            .min_by(|(_, x), (_, y)| x.rank().total_cmp(&y.rank()))
            .map(|(i, _)| i)
            && m.rank() > inc.members[lowest].rank()
        {
            inc.members[lowest] = m;
        }
        // the lead first, then the highest values
        if inc.members.len() > 2 {
            inc.members[1..].sort_by(|x, y| y.rank().total_cmp(&x.rank()).then(x.id.cmp(&y.id)));
        }
        self.note(a);
    }
}

fn entity_hash(a: &Alert) -> u64 {
    let text = format!(
        "{}\0{}",
        a.rule_id,
        serde_json::to_string(&a.entity).unwrap_or_default()
    );
    crate::rules::definition::fnv1a64(text.as_bytes())
}

/// What [`Correlator::take`] did with one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// the identity of the incident the alert belongs to
    pub incident: String,
    /// the incident as it is now, when the alert changed it (a new member,
    /// its opening, its resolution); `None` when it did not
    pub update: Option<Incident>,
}

/// What the correlator had to let go of at its bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// incidents opened
    pub opened: u64,
    /// incidents forgotten at [`Config::max_incidents`] while still joinable
    pub forgotten: u64,
    /// members counted but not followed at [`Config::max_members`]
    pub unfollowed: u64,
}

/// Folds alerts into incidents; see the module documentation.
pub struct Correlator {
    config: Config,
    /// incidents by the order they opened in
    open: BTreeMap<u64, Open>,
    /// the incident of each firing member, by the member's identity
    member_of: HashMap<String, u64>,
    next: u64,
    stats: Stats,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(Config::default())
    }
}

impl Correlator {
    pub fn new(config: Config) -> Self {
        Correlator {
            config,
            open: BTreeMap::new(),
            member_of: HashMap::new(),
            next: 0,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Incidents kept now (firing, or resolved and still joinable).
    pub fn kept(&self) -> usize {
        self.open.len()
    }

    /// Folds one alert in; alerts must come in the order the engine emits them.
    pub fn take(&mut self, a: &Alert) -> Taken {
        let id = a.identity();
        let Some(start) = a.incident_start_ns else {
            // a notice: an incident of its own
            return Taken {
                incident: id,
                update: Some(Incident::single(a)),
            };
        };
        if let Some(&seq) = self.member_of.get(&id)
            && let Some(open) = self.open.get_mut(&seq)
        {
            let inc = &mut open.inc;
            if let Some(m) = inc.members.iter_mut().find(|m| m.id == id) {
                m.value = a.value.clone();
                m.state = a.state;
                m.window_end = a.window_end.clone();
            }
            if a.state == State::Firing {
                return Taken {
                    incident: inc.id.clone(),
                    update: None,
                };
            }
            self.member_of.remove(&id);
            inc.open_members = inc.open_members.saturating_sub(1);
            inc.end_ns = inc.end_ns.max(a.at_ns);
            let update = (inc.open_members == 0).then(|| {
                inc.state = State::Resolved;
                inc.clone()
            });
            return Taken {
                incident: inc.id.clone(),
                update,
            };
        }
        if a.state == State::Resolved {
            // a member this correlator never saw fire (before a restart) or
            // has forgotten: it resolves as an incident of its own
            return Taken {
                incident: id,
                update: Some(Incident::single(a)),
            };
        }
        self.expire(start);
        let followed = self.member_of.len() < self.config.max_members;
        if !followed {
            self.stats.unfollowed += 1;
        }
        let gap = self.config.gap_ns;
        let seq = match self
            .open
            .iter()
            .find(|(_, o)| o.takes(a, start, gap))
            .map(|(s, _)| *s)
        {
            Some(seq) => {
                if let Some(open) = self.open.get_mut(&seq) {
                    open.join(a, self.config.listed, followed);
                }
                seq
            }
            None => {
                self.make_room();
                let seq = self.next;
                self.next += 1;
                let mut open = Open::new(a);
                if !followed {
                    open.inc.open_members = 0;
                }
                self.open.insert(seq, open);
                self.stats.opened += 1;
                seq
            }
        };
        if followed {
            self.member_of.insert(id, seq);
        }
        let inc = &self.open[&seq].inc;
        Taken {
            incident: inc.id.clone(),
            update: Some(inc.clone()),
        }
    }

    /// Folds a batch of alerts in and returns the incidents it changed, each
    /// once per state it reached (so a batch that opens and resolves one
    /// gives both), with its latest content, in the order they changed.
    pub fn correlate<'a>(&mut self, alerts: impl IntoIterator<Item = &'a Alert>) -> Vec<Incident> {
        let mut out: Vec<Incident> = Vec::new();
        let mut last: HashMap<String, usize> = HashMap::new();
        for a in alerts {
            let Some(inc) = self.take(a).update else {
                continue;
            };
            match last.get(&inc.id) {
                Some(&i) if out[i].state == inc.state => out[i] = inc,
                _ => {
                    last.insert(inc.id.clone(), out.len());
                    out.push(inc);
                }
            }
        }
        out
    }

    /// Lets go of resolved incidents no alert starting at `start` can join.
    fn expire(&mut self, start: i64) {
        let gap = self.config.gap_ns;
        self.open
            .retain(|_, o| o.inc.open_members > 0 || start <= o.inc.end_ns.saturating_add(gap));
    }

    /// At [`Config::max_incidents`], forgets the oldest resolved incident,
    /// else the oldest.
    fn make_room(&mut self) {
        if self.open.len() < self.config.max_incidents.max(1) {
            return;
        }
        let victim = self
            .open
            .iter()
            .find(|(_, o)| o.inc.open_members == 0)
            .or_else(|| self.open.iter().next())
            .map(|(s, _)| *s);
        if let Some(seq) = victim {
            self.open.remove(&seq);
            self.member_of.retain(|_, s| *s != seq);
            self.stats.forgotten += 1;
        }
    }
}

/// The latest incidents, as the viewer lists them and draws the Security
/// dashboard's "Correlated incidents" from them: alerts folded as they come
/// (as the BI store's sink folds them), each incident's latest state kept,
/// the `cap` most recently changed.
pub struct Recent {
    correlator: Correlator,
    latest: std::collections::VecDeque<Incident>,
    cap: usize,
}

impl Default for Recent {
    /// As many incidents as the correlator keeps ([`Config::max_incidents`]).
    fn default() -> Self {
        Recent::with_cap(Config::default().max_incidents)
    }
}

impl Recent {
    pub fn with_cap(cap: usize) -> Self {
        Recent {
            correlator: Correlator::default(),
            latest: std::collections::VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Folds one alert in.
    pub fn take(&mut self, a: &Alert) {
        let Some(inc) = self.correlator.take(a).update else {
            return;
        };
        self.latest.retain(|i| i.id != inc.id);
        if self.latest.len() == self.cap {
            self.latest.pop_front();
        }
        self.latest.push_back(inc);
    }

    /// The incidents kept in their latest state, the least recently changed first.
    pub fn incidents(&self) -> impl DoubleEndedIterator<Item = &Incident> + ExactSizeIterator {
        self.latest.iter()
    }

    /// The `n` most recently changed incidents, the least recently changed
    /// first, as JSON ([`Incident::to_json`]).
    pub fn to_json(&self, n: usize) -> Value {
        let skip = self.latest.len().saturating_sub(n);
        Value::Array(
            self.latest
                .iter()
                .skip(skip)
                .map(Incident::to_json)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
