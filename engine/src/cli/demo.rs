//! `demo`: replay the bundled recording through the rule pack, say what it
//! found against the recording's ground truth, and serve the viewer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::{RulesArg, bundled};
use crate::alerts::{Alert, State};
use crate::api::{self, Board};
use crate::drive::judge::{Truth, parse_time, scenarios_of};
use crate::drive::replay::{self, Speed};
use crate::drive::{dashboards, load_rules};
use crate::evaluator::{Evaluator, Output};
use crate::rules::Which;
use crate::sinks::stdout::{Format, Printer};

/// The demo's arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// the capture to replay (default: rules/captures/demo.jsonl.zst)
    #[arg(long)]
    pub capture: Option<PathBuf>,
    #[command(flatten)]
    pub rules: RulesArg,
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// print the alerts and exit instead of serving the viewer
    #[arg(long)]
    pub no_serve: bool,
    /// also write the KPI values and alerts to this PostgreSQL (the BI store
    /// the Grafana dashboards read), and draw the viewer's dashboards from it
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE; needs the `postgres`
    /// cargo feature)
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let capture = args
        .capture
        .unwrap_or_else(|| bundled("rules/captures/demo.jsonl.zst"));
    let mut set = load_rules(&args.rules.dir(), Which::All).await?;
    // The recording is simulated traffic: the simulator models no runtime
    // internals (scheduler gaps, pool waits, own time of a service), so the
    // performance pack, proven on recordings of the real shop, is not run on it.
    let perf = args.rules.dir().join("perf");
    let before = set.rules.len();
    set.rules.retain(|r| !r.def.path.starts_with(&perf));
    if set.rules.len() < before {
        eprintln!(
            "note: the {} performance rules ({}) are not run on the demo: its traffic is simulated and models no runtime internals; `engine run` runs them on a live shop",
            before - set.rules.len(),
            perf.display()
        );
    }
    let bi = crate::drive::postgres::start(args.postgres.as_deref(), &set)?;
    // bind first: a taken port is an error now, not after the replay
    let listener = match args.no_serve {
        true => None,
        false => Some(args.api.bind(true).await?),
    };
    let shared = Arc::new(Mutex::new(Board {
        source: format!("replay of {}", capture.display()),
        rule_errors: set.errors.iter().map(|e| e.to_string()).collect(),
        dashboards: Arc::new(dashboards(&args.rules.dir(), args.postgres.as_deref())?),
        ..Board::default()
    }));
    let mut ev = Evaluator::new(set, 5_000_000_000);
    shared.lock().unwrap_or_else(|e| e.into_inner()).samples = ev.samples();
    let mut printer = Printer::new(std::io::stdout().lock(), Format::Table);
    let board = shared.clone();
    let mut firing: Vec<Alert> = Vec::new();
    let summary = replay::replay(std::slice::from_ref(&capture), &mut ev, Speed::Max, |o| {
        board.lock().unwrap_or_else(|e| e.into_inner()).record(o);
        if let Some(bi) = &bi {
            bi.send(o);
        }
        let alerts: Vec<Output> = o
            .iter()
            .filter(|x| matches!(x, Output::Alert(_)))
            .cloned()
            .collect();
        firing.extend(o.iter().filter_map(|x| match x {
            Output::Alert(a) if a.state == State::Firing => Some(a.clone()),
            _ => None,
        }));
        Ok(printer.print(&alerts)?)
    })
    .await
    .with_context(|| format!("replaying the demo capture {}", capture.display()))?;
    drop(printer);
    {
        let mut b = shared.lock().unwrap_or_else(|e| e.into_inner());
        b.rules = ev.health().to_vec();
        b.stats = ev.stats();
        b.rejected = summary
            .rejected
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
    }
    eprintln!("{}", summary.line());
    if let Some(bi) = bi {
        eprintln!("{}", bi.finish().await?);
    }
    if let Some(truth) = truth_beside(&capture) {
        eprintln!("\n{}", against_truth(&truth, &firing));
    }
    if let Some((listener, access)) = listener {
        let addr = listener.local_addr()?;
        eprintln!(
            "\nThe viewer is on http://{addr}/ (Ctrl-C to stop). Look first at:\n\
             \x20 1. Alerts: one line per incident, with the rule, the entity (an address, an\n\
             \x20    account, a card), the window, the value against the threshold and sample trace ids.\n\
             \x20 2. KPIs: orders, revenue and conversion per minute, and the login failure ratio\n\
             \x20    rising while the stuffing and brute-force attacks run.\n\
             \x20 3. Rules: every rule's health (evaluations, alerts fired, failures).\n\
             The same data as JSON: http://{addr}/api/alerts, /api/kpis, /api/rules; Prometheus text: /metrics."
        );
        api::serve_on(listener, shared, access).await?;
    }
    Ok(())
}

/// `NAME.truth.json` beside `NAME.jsonl.zst`, if there is one and it reads.
fn truth_beside(capture: &Path) -> Option<Truth> {
    let name = capture.file_name()?.to_str()?;
    let stem = name.split('.').next()?;
    let path = capture.with_file_name(format!("{stem}.truth.json"));
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// One line per scenario of the ground truth: for an attack, the rules that
/// caught it and how long after its start; for a look-alike, whether anything
/// fired on it.
pub fn against_truth(truth: &Truth, firing: &[Alert]) -> String {
    let mut lines = vec![format!(
        "What the recording holds, and what the rule pack made of it ({} scenarios):",
        truth.scenarios.len()
    )];
    for s in &truth.scenarios {
        let mut caught: Vec<(&str, f64)> = Vec::new();
        let belongs = |a: &&Alert| {
            scenarios_of(&truth.scenarios, a)
                .iter()
                .any(|x| std::ptr::eq(*x, s))
        };
        for a in firing.iter().filter(belongs) {
            let Some(end) = parse_time(&a.window_end) else {
                continue;
            };
            let delay = (end - s.start).num_milliseconds() as f64 / 1000.0;
            match caught.iter_mut().find(|(rule, _)| *rule == a.rule_id) {
                Some((_, first)) => *first = first.min(delay),
                None => caught.push((&a.rule_id, delay)),
            }
        }
        caught.sort_by(|a, b| a.1.total_cmp(&b.1));
        let found = caught
            .iter()
            .map(|(rule, delay)| format!("{rule} after {delay:.0} s"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(match (s.class.as_str(), caught.is_empty()) {
            ("attack", false) => format!("  attack     {:<24} caught: {found}", s.name),
            ("attack", true) => format!("  attack     {:<24} MISSED: no rule fired on it", s.name),
            (_, true) => format!("  look-alike {:<24} silent, as it should be", s.name),
            (_, false) => format!("  look-alike {:<24} FALSE ALARM: {found}", s.name),
        });
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, entity: (&str, &str), summary: &str, start: &str, end: &str) -> Alert {
        Alert {
            rule_id: rule.into(),
            severity: "high".into(),
            state: State::Firing,
            entity: [(entity.0.to_string(), entity.1.to_string())].into(),
            window_start: start.into(),
            window_end: end.into(),
            value: 1.into(),
            tags: vec![],
            summary: summary.into(),
            trace_ids: vec![],
            at_ns: 0,
            rule_version: String::new(),
            incident_start_ns: None,
            first_seen_ns: None,
            detected_at_ns: None,
            notes: None,
        }
    }

    #[test]
    fn an_alert_tied_by_time_only_goes_to_the_scenarios_it_names() {
        let truth: Truth = serde_json::from_value(serde_json::json!({"scenarios": [
            {"name": "flash_sale", "class": "benign",
             "start": "2026-01-15T10:08:00Z", "end": "2026-01-15T10:15:00Z",
             "indicators": {"client.address": ["198.51.100.10", "198.51.100.11"]}},
            {"name": "card_testing", "class": "attack",
             "start": "2026-01-15T10:09:00Z", "end": "2026-01-15T10:13:00Z",
             "indicators": {"client.address": ["203.0.113.184"]}},
        ]}))
        .unwrap();
        // a population alert on the payments service naming the card tester
        let population = alert(
            "fraud.card_testing.population",
            ("service.name", "shop-payments"),
            "tiny payments declined on 12 cards; top addresses: 203.0.113.184 (11)",
            "2026-01-15T10:06:00Z",
            "2026-01-15T10:11:00Z",
        );
        let text = against_truth(&truth, &[population]);
        assert!(text.contains("flash_sale               silent"), "{text}");
        assert!(
            text.contains("card_testing             caught: fraud.card_testing.population"),
            "{text}"
        );
        // an alert naming nobody is tied by time to both
        let route = alert(
            "dos.route_error_surge",
            ("http.route", "/api/payments"),
            "errors on /api/payments",
            "2026-01-15T10:09:00Z",
            "2026-01-15T10:10:00Z",
        );
        let text = against_truth(&truth, &[route]);
        assert!(
            text.contains("flash_sale               FALSE ALARM"),
            "{text}"
        );
        assert!(text.contains("card_testing             caught"), "{text}");
    }
}
