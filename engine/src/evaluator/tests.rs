//! Reloading the rule pack while rows flow: what carries on, what starts anew.

use crate::alerts::{Alert, State};
use crate::evaluator::{Evaluator, Output};
use crate::testutil::*;

fn alerts(out: &[Output]) -> Vec<&Alert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a),
            Output::Kpi(_) => None,
        })
        .collect()
}

/// `test.flood` (5 spans a minute from one address, sliding by 10 s) under another id.
fn flood(id: &str) -> String {
    flood_rule("1m", "10s", 5, 1, "15m").replace("test.flood", id)
}

/// Ten spans from `a` at 0..10 s, then one from `z` at 62 s: the window
/// [0 s, 60 s) is final and `a` has an open, firing incident in every rule.
async fn open_incident(ev: &mut Evaluator) -> Vec<Output> {
    let early: Vec<(f64, &str)> = (0..10).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&early)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(62.0, "z")]))
        .unwrap();
    ev.evaluate().await
}

#[tokio::test]
async fn an_unchanged_rule_keeps_its_incident_across_a_reload() {
    let (kept, removed) = (flood("test.flood"), flood("test.gone"));
    let mut ev = Evaluator::new(rule_set(&[&kept, &removed]).await, 0);
    let before = open_incident(&mut ev).await;
    let fired: Vec<(&str, State)> = alerts(&before)
        .iter()
        .map(|a| (a.rule_id.as_str(), a.state))
        .collect();
    assert_eq!(
        fired,
        vec![("test.flood", State::Firing), ("test.gone", State::Firing)]
    );
    let version = ev.rules().version();

    // the same flood rule, a new one in its session, a KPI of a spec no
    // running rule has; test.gone removed
    let added = flood("test.new");
    let kpi = count_kpi("30s", "30s");
    let report = ev
        .reload(rule_set(&[&kept, &added, &kpi]).await)
        .await
        .expect("a pack without errors is taken");
    assert_eq!(report.kept, vec!["test.flood"]);
    assert_eq!(report.added, vec!["requests", "test.new"]);
    assert_eq!(report.removed, vec!["test.gone"]);
    assert!(report.changed.is_empty());
    assert_ne!(report.version, version);
    assert_eq!(ev.rules().version(), report.version);
    // the removed rule's open incident is resolved, under its identity
    let gone = alerts(&report.outputs);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(
        (gone[0].rule_id.as_str(), gone[0].state),
        ("test.gone", State::Resolved)
    );
    assert_eq!(gone[0].identity(), alerts(&before)[1].identity());

    // `a` goes on flooding after the reload, then everything closes
    let later: Vec<(f64, &str)> = (0..10).map(|i| (63.0 + i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&later)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let after = ev.evaluate().await;
    let flood_alerts: Vec<State> = alerts(&after)
        .iter()
        .filter(|a| a.rule_id == "test.flood")
        .map(|a| a.state)
        .collect();
    // the open incident went on: no second firing, one resolution
    assert_eq!(flood_alerts, vec![State::Resolved]);
    let resolved = alerts(&after)
        .into_iter()
        .find(|a| a.rule_id == "test.flood")
        .unwrap();
    assert_eq!(resolved.identity(), alerts(&before)[0].identity());
    // the new rule starts empty at the first window not yet evaluated (10 s):
    // it fires once, on the rows after the reload
    let new: Vec<&Alert> = alerts(&after)
        .into_iter()
        .filter(|a| a.rule_id == "test.new")
        .collect();
    assert_eq!(new[0].state, State::Firing, "{new:?}");
    assert_eq!(new[0].window_start, "2026-01-15T10:00:10Z");
    // the KPI of a new spec starts at the first 30 s window not evaluated
    // ([30 s, 60 s), empty): its first value is [60 s, 90 s)
    let first_kpi = after.iter().find_map(|o| match o {
        Output::Kpi(k) => Some(k.window_start.clone()),
        Output::Alert(_) => None,
    });
    assert_eq!(first_kpi.as_deref(), Some("2026-01-15T10:01:00Z"));
}

#[tokio::test]
async fn a_pack_with_a_broken_rule_is_refused_and_the_running_one_stays() {
    let kept = flood("test.flood");
    let mut ev = Evaluator::new(rule_set(&[&kept]).await, 0);
    let before = open_incident(&mut ev).await;
    assert_eq!(alerts(&before).len(), 1);
    let version = ev.rules().version();

    let broken = flood("test.broken").replace("count(*) AS requests", "count(*) AS requests,,");
    let errors = ev
        .reload(rule_set(&[&kept, &broken]).await)
        .await
        .expect_err("a broken rule refuses the pack");
    assert_eq!(errors.len(), 1);
    let at = errors[0].location.to_string();
    assert!(at.starts_with("rule1.sql:"), "{at}");
    assert_eq!(ev.rules().version(), version);
    assert_eq!(ev.rules().rules.len(), 1);

    // the running pack goes on: the incident is still open
    let later: Vec<(f64, &str)> = (0..10).map(|i| (63.0 + i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&later)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let states: Vec<State> = alerts(&ev.evaluate().await)
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, vec![State::Resolved]);
}

#[tokio::test]
async fn a_changed_rule_starts_anew_and_its_old_incident_is_resolved() {
    let mut ev = Evaluator::new(rule_set(&[&flood("test.flood")]).await, 0);
    let before = open_incident(&mut ev).await;
    let stricter = flood_rule("1m", "10s", 8, 1, "15m");
    let report = ev.reload(rule_set(&[&stricter]).await).await.unwrap();
    assert_eq!(report.changed, vec!["test.flood"]);
    let resolved = alerts(&report.outputs);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, State::Resolved);
    assert_eq!(resolved[0].identity(), alerts(&before)[0].identity());
    assert_eq!(ev.health()[0].evaluations, 0);
}
