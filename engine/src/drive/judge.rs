//! The fixture judge behind `rules test`.
//!
//! A rule's tests sit beside it in `NAME.test.toml`: cases naming a capture,
//! optionally its ground truth, and whether the rule must fire or stay silent.
//! Each capture is replayed once through the whole pack; every case then reads
//! the alerts of its own rule. The whole pack's alerts on each capture are
//! also folded into incidents, as the sinks fold them, and counted per
//! scenario of the capture's truth ([`Folded`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::alerts::{Alert, State};
use crate::evaluator::{Evaluator, Output};
use crate::incidents::Correlator;
use crate::rules::definition::parse_duration;
use crate::rules::{RuleSet, Which};

use super::replay::{Speed, replay};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Fire,
    Silent,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    capture: PathBuf,
    truth: Option<PathBuf>,
    expect: Expect,
    max_delay: Option<String>,
}

/// Ground truth written beside a capture by the generator.
#[derive(Debug, Deserialize, Clone)]
pub struct Truth {
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Scenario {
    pub name: String,
    pub class: String,
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub indicators: BTreeMap<String, Vec<String>>,
}

impl Scenario {
    /// Whether an alert's entity points at this scenario: every entity
    /// attribute the truth lists indicators for holds one of them.
    pub(crate) fn names(&self, alert: &Alert) -> bool {
        let mut any = false;
        for (k, v) in &alert.entity {
            if let Some(list) = self.indicators.get(k) {
                if !list.contains(v) {
                    return false;
                }
                any = true;
            }
        }
        // an entity the truth has no indicators for (a route, say) matches by time
        any || self.by_time_only(alert)
    }

    /// Whether the alert's entity has no attribute this truth lists
    /// indicators for, so that only its time can tie it to the scenario.
    pub(crate) fn by_time_only(&self, alert: &Alert) -> bool {
        !alert.entity.keys().any(|k| self.indicators.contains_key(k))
    }

    /// Whether the alert's summary names one of the scenario's indicators
    /// (a population rule lists the addresses that contributed most).
    pub(crate) fn named_in_summary(&self, alert: &Alert) -> bool {
        self.indicators
            .values()
            .flatten()
            .any(|v| v.len() >= 7 && alert.summary.contains(v.as_str()))
    }
}

/// The scenarios an alert belongs to, among those whose time it overlaps: by
/// its entity; and where some are tied to it by more than time (the entity's
/// own indicators, such as a route the scenario lists, or addresses its
/// summary names), only those: a population alert listing the card testers'
/// addresses is not laid at the door of a flash sale running at the same time.
pub(crate) fn scenarios_of<'t>(scenarios: &'t [Scenario], alert: &Alert) -> Vec<&'t Scenario> {
    let (Some(start), Some(end)) = (
        parse_time(&alert.window_start),
        parse_time(&alert.window_end),
    ) else {
        return vec![];
    };
    let matching: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| end >= s.start && start <= s.end && s.names(alert))
        .collect();
    // tied by more than time: by the entity's own indicators (a route the
    // scenario lists), or by the addresses the summary names
    let tied: Vec<&Scenario> = matching
        .iter()
        .copied()
        .filter(|s| !s.by_time_only(alert) || s.named_in_summary(alert))
        .collect();
    if tied.is_empty() { matching } else { tied }
}

/// The pack's alerts on one capture folded into incidents as the sinks fold
/// them ([`crate::incidents`]), for one scenario of its ground truth.
#[derive(Debug, Clone)]
pub struct Folded {
    /// the capture, relative to the rules folder
    pub capture: String,
    /// the scenario's name, or `-` for alerts no scenario explains
    pub scenario: String,
    /// `attack`, `benign`, or `-`
    pub class: String,
    /// firing alerts laid at the scenario's door ([`scenarios_of`])
    pub alerts: usize,
    /// the identities of the incidents those alerts belong to
    pub incidents: BTreeSet<String>,
}

/// Folds every alert of `out` (all rules, in the order emitted) and counts,
/// per scenario of `scenarios`, its firing alerts ([`scenarios_of`]) and
/// their incidents. A look-alike (`benign`) is charged only with the alerts
/// that name its own entities (by its indicators, or in their summary), not
/// with those tied to it by time alone (a performance rule on a service
/// while a flash sale runs): those count under `-`.
fn fold(capture: &str, out: &[Output], scenarios: &[Scenario]) -> Vec<Folded> {
    let mut per: Vec<Folded> = scenarios
        .iter()
        .map(|s| Folded {
            capture: capture.to_string(),
            scenario: s.name.clone(),
            class: s.class.clone(),
            alerts: 0,
            incidents: BTreeSet::new(),
        })
        .collect();
    let mut correlator = Correlator::default();
    for a in out.iter().filter_map(|o| match o {
        Output::Alert(a) => Some(a),
        Output::Kpi(_) => None,
    }) {
        let incident = correlator.take(a).incident;
        if a.state != State::Firing {
            continue;
        }
        let of: Vec<String> = scenarios_of(scenarios, a)
            .iter()
            .filter(|s| s.class == "attack" || !s.by_time_only(a) || s.named_in_summary(a))
            .map(|s| s.name.clone())
            .collect();
        let names = if of.is_empty() {
            vec!["-".to_string()]
        } else {
            of
        };
        for name in names {
            let at = match per.iter().position(|f| f.scenario == name) {
                Some(at) => at,
                None => {
                    per.push(Folded {
                        capture: capture.to_string(),
                        scenario: name,
                        class: "-".into(),
                        alerts: 0,
                        incidents: BTreeSet::new(),
                    });
                    per.len() - 1
                }
            };
            per[at].alerts += 1;
            per[at].incidents.insert(incident.clone());
        }
    }
    per
}

/// The ground truth beside a capture (`NAME.jsonl.zst` -> `NAME.truth.json`),
/// when there is one.
fn truth_beside(capture: &Path) -> Option<Truth> {
    let name = capture.file_name()?.to_str()?;
    let stem = name.split('.').next()?;
    let text =
        std::fs::read_to_string(capture.with_file_name(format!("{stem}.truth.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// A capture's path for people, relative to the rules folder: the same
/// capture named by two rules' test files (`auth/../captures/x`,
/// `dos/../captures/x`) is shown once.
fn shown(capture: &Path, dir: &Path) -> String {
    let clean = |p: &Path| {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    };
    let (capture, dir) = (clean(capture), clean(dir));
    capture
        .strip_prefix(&dir)
        .unwrap_or(&capture)
        .display()
        .to_string()
}

/// What one case found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// the rule's id
    pub rule: String,
    /// the case's name in the rule's test file
    pub case: String,
    pub passed: bool,
    /// whether every attack of the truth was detected (None for a silent case)
    pub detected: Option<bool>,
    /// the longest delay from an attack's start to its first alert, seconds
    pub delay_s: Option<f64>,
    pub false_incidents: usize,
    /// the incidents the whole pack's alerts on the case's attacks fold into
    /// (None for a case without attacks)
    pub incidents: Option<usize>,
    /// what failed, one line each, readable as a diff
    pub problems: Vec<String>,
}

/// Every fixture case of a rule pack, judged.
#[derive(Debug, Clone)]
pub struct Verdicts {
    pub outcomes: Vec<Outcome>,
    /// rules with no test file
    pub untested: Vec<String>,
    /// every capture's alerts folded into incidents, per scenario of its truth
    pub folded: Vec<Folded>,
}

impl Verdicts {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed).count()
    }
}

fn firing(out: &[Output], rule: &str) -> Vec<Alert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) if a.rule_id == rule && a.state == State::Firing => Some(a.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn judge(rule: &str, case: &Case, truth: Option<&Truth>, alerts: &[Alert]) -> Outcome {
    let mut o = Outcome {
        rule: rule.to_string(),
        case: case.name.clone(),
        passed: true,
        detected: None,
        delay_s: None,
        false_incidents: 0,
        incidents: None,
        problems: vec![],
    };
    let max_delay = case
        .max_delay
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or(std::time::Duration::from_secs(60))
        .as_secs_f64();
    let attacks: Vec<&Scenario> = truth
        .map(|t| t.scenarios.iter().filter(|s| s.class == "attack").collect())
        .unwrap_or_default();
    match case.expect {
        Expect::Silent => {
            o.false_incidents = alerts.len();
            for a in alerts {
                o.problems.push(format!(
                    "expected silence, got: {}",
                    serde_json::to_string(a).unwrap_or_default()
                ));
            }
        }
        Expect::Fire if attacks.is_empty() => {
            o.detected = Some(!alerts.is_empty());
            if alerts.is_empty() {
                o.problems
                    .push("expected at least one firing alert, got none".into());
            }
        }
        Expect::Fire => {
            let mut matched = vec![false; alerts.len()];
            let mut all_detected = true;
            for s in &attacks {
                let first = alerts
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| s.names(a))
                    .filter_map(|(i, a)| parse_time(&a.window_end).map(|t| (i, t)))
                    .filter(|(_, t)| *t >= s.start)
                    .min_by_key(|(_, t)| *t);
                for (i, a) in alerts.iter().enumerate() {
                    if s.names(a) && parse_time(&a.window_end).is_some_and(|t| t >= s.start) {
                        matched[i] = true;
                    }
                }
                match first {
                    Some((_, t)) => {
                        let delay = (t - s.start).num_milliseconds() as f64 / 1000.0;
                        o.delay_s = Some(o.delay_s.map_or(delay, |d: f64| d.max(delay)));
                        if delay > max_delay {
                            o.problems.push(format!(
                                "{}: first alert {delay:.0} s after the attack began; at most {max_delay:.0} s allowed",
                                s.name
                            ));
                        }
                    }
                    None => {
                        all_detected = false;
                        o.problems.push(format!(
                            "{}: not detected (attack {} .. {}, indicators {:?})",
                            s.name, s.start, s.end, s.indicators
                        ));
                    }
                }
            }
            o.detected = Some(all_detected);
            for (a, m) in alerts.iter().zip(&matched) {
                if !m {
                    o.false_incidents += 1;
                    o.problems.push(format!(
                        "false incident: {}",
                        serde_json::to_string(a).unwrap_or_default()
                    ));
                }
            }
        }
    }
    o.passed = o.problems.is_empty();
    o
}

/// `rules test`: run every rule's fixture cases. Prints a readable diff per
/// failing case and, with `report`, a quality table. Returns the failure count.
pub async fn test(dir: &Path, report: bool, lateness_ns: i64) -> anyhow::Result<usize> {
    let Verdicts {
        outcomes,
        untested,
        folded,
    } = verdicts(dir, lateness_ns).await?;
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    for o in &outcomes {
        let mark = if o.passed { "ok  " } else { "FAIL" };
        println!("{mark} {} :: {}", o.rule, o.case);
        for p in &o.problems {
            println!("       {p}");
        }
    }
    if report {
        println!();
        println!(
            "{:<40} {:<45} {:>9} {:>8} {:>7} {:>10}",
            "RULE", "CASE", "DETECTED", "DELAY s", "FALSE", "INCIDENTS"
        );
        for o in &outcomes {
            println!(
                "{:<40} {:<45} {:>9} {:>8} {:>7} {:>10}",
                o.rule,
                o.case,
                o.detected.map_or("-".to_string(), |d| if d {
                    "yes".into()
                } else {
                    "NO".into()
                }),
                o.delay_s.map_or("-".to_string(), |d| format!("{d:.0}")),
                o.false_incidents,
                o.incidents.map_or("-".to_string(), |n| n.to_string())
            );
        }
        // the whole pack's alerts per capture, folded as the sinks fold them
        println!();
        println!("INCIDENTS PER SCENARIO (all rules; `-`: alerts no scenario explains)");
        println!(
            "{:<50} {:<30} {:<7} {:>7} {:>10}",
            "CAPTURE", "SCENARIO", "CLASS", "ALERTS", "INCIDENTS"
        );
        for f in &folded {
            println!(
                "{:<50} {:<30} {:<7} {:>7} {:>10}",
                f.capture,
                f.scenario,
                f.class,
                f.alerts,
                f.incidents.len()
            );
        }
    }
    if !untested.is_empty() {
        println!("rules without tests: {}", untested.join(", "));
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    Ok(failed)
}

/// Runs every rule's fixture cases in `dir` (each capture replayed once
/// through the whole pack) and judges each case. An error when a rule file
/// does not load (each one also on stderr) or a test, truth or capture file
/// cannot be read.
pub async fn verdicts(dir: &Path, lateness_ns: i64) -> anyhow::Result<Verdicts> {
    let set = RuleSet::load(dir, Which::Alerts).await?;
    if !set.errors.is_empty() {
        for e in &set.errors {
            eprintln!("error: {e}");
        }
        anyhow::bail!(
            "{} rule files do not load; run `rules check`",
            set.errors.len()
        );
    }
    let ids: Vec<(String, PathBuf)> = set
        .rules
        .iter()
        .map(|r| (r.def.id.clone(), r.def.path.clone()))
        .collect();
    // (rule id, case, resolved capture path, truth)
    let mut cases: Vec<(String, Case, PathBuf, Option<Truth>)> = Vec::new();
    for (id, path) in &ids {
        let test_path = path.with_extension("test.toml");
        if !test_path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&test_path)
            .with_context(|| format!("cannot read {}", test_path.display()))?;
        let file: TestFile = toml::from_str(&text)
            .with_context(|| format!("{}: not a valid test file", test_path.display()))?;
        let base = test_path.parent().unwrap_or(Path::new("."));
        for case in file.cases {
            let capture = base.join(&case.capture);
            let truth = match &case.truth {
                Some(t) => {
                    let p = base.join(t);
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read the truth file {}", p.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{}: not a truth file", p.display()))?,
                    )
                }
                None => None,
            };
            cases.push((id.clone(), case, capture, truth));
        }
    }
    let untested: Vec<String> = ids
        .iter()
        .filter(|(id, _)| !cases.iter().any(|(r, ..)| r == id))
        .map(|(id, _)| id.clone())
        .collect();
    drop(set);
    let mut captures: Vec<PathBuf> = cases.iter().map(|(_, _, c, _)| c.clone()).collect();
    captures.sort();
    captures.dedup();
    let mut outputs: BTreeMap<PathBuf, Vec<Output>> = BTreeMap::new();
    for capture in &captures {
        let set = RuleSet::load(dir, Which::Alerts).await?;
        let mut ev = Evaluator::new(set, lateness_ns);
        let mut got = Vec::new();
        replay(std::slice::from_ref(capture), &mut ev, Speed::Max, |o| {
            got.extend_from_slice(o);
            Ok(())
        })
        .await
        .with_context(|| format!("replaying {}", capture.display()))?;
        outputs.insert(capture.clone(), got);
    }
    let mut folded: BTreeMap<String, Vec<Folded>> = BTreeMap::new();
    for capture in &captures {
        let name = shown(capture, dir);
        if folded.contains_key(&name) {
            continue;
        }
        let truth = cases
            .iter()
            .find(|(_, _, c, t)| c == capture && t.is_some())
            .and_then(|(_, _, _, t)| t.clone())
            .or_else(|| truth_beside(capture));
        let scenarios = truth.as_ref().map_or(&[][..], |t| &t.scenarios[..]);
        let per = fold(&name, &outputs[capture], scenarios);
        folded.insert(name, per);
    }
    let mut outcomes = Vec::new();
    for (rule, case, capture, truth) in &cases {
        let alerts = firing(&outputs[capture], rule);
        let mut o = judge(rule, case, truth.as_ref(), &alerts);
        if case.expect == Expect::Fire && truth.is_some() {
            let attacks: BTreeSet<&String> = folded[&shown(capture, dir)]
                .iter()
                .filter(|f| f.class == "attack")
                .flat_map(|f| &f.incidents)
                .collect();
            o.incidents = Some(attacks.len());
        }
        outcomes.push(o);
    }
    Ok(Verdicts {
        outcomes,
        untested,
        folded: folded.into_values().flatten().collect(),
    })
}
