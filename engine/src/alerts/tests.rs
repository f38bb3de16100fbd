use crate::alerts::{Alert, State};
use crate::evaluator::{Evaluator, Output};
use crate::testutil::*;

fn alerts(out: Vec<Output>) -> Vec<Alert> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a),
            Output::Kpi(_) => None,
        })
        .collect()
}

/// `n` spans from `client` spread over the 10 s starting at `at` seconds.
fn burst(at: f64, n: usize, client: &str) -> Vec<(f64, String)> {
    (0..n)
        .map(|i| (at + i as f64 * 10.0 / n as f64, client.to_string()))
        .collect()
}

async fn run(rule: &str, rows: Vec<(f64, String)>) -> Vec<Alert> {
    let mut ev = Evaluator::new(rule_set(&[rule]).await, 0);
    let rows: Vec<(f64, &str)> = rows.iter().map(|(t, c)| (*t, c.as_str())).collect();
    ev.push(ingest::Table::Spans, spans(&rows)).unwrap();
    alerts(ev.finish().await)
}

#[tokio::test]
async fn fires_once_then_resolves_when_the_condition_clears() {
    let mut rows = burst(0.0, 20, "a");
    rows.extend(burst(10.0, 20, "a"));
    rows.extend(burst(50.0, 1, "quiet"));
    let got = run(&flood_rule("10s", "10s", 10, 1, "0s"), rows).await;
    let states: Vec<(State, &str, &str)> = got
        .iter()
        .map(|a| {
            (
                a.state,
                a.entity["client.address"].as_str(),
                a.window_start.as_str(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (State::Firing, "a", "2026-01-15T10:00:00Z"),
            (State::Resolved, "a", "2026-01-15T10:00:20Z"),
        ]
    );
    let firing = &got[0];
    assert_eq!(firing.rule_id, "test.flood");
    assert_eq!(firing.severity, "high");
    assert_eq!(firing.value, serde_json::json!(20));
    assert_eq!(firing.tags, vec!["T1498"]);
    assert_eq!(firing.summary, "20 requests from a");
    assert_eq!(firing.window_end, "2026-01-15T10:00:10Z");
}

#[tokio::test]
async fn for_needs_consecutive_windows() {
    // two separate bursts never fire with for = 2; two adjacent ones do
    let mut apart = burst(0.0, 20, "a");
    apart.extend(burst(20.0, 20, "a"));
    assert!(
        run(&flood_rule("10s", "10s", 10, 2, "0s"), apart)
            .await
            .is_empty()
    );
    let mut adjacent = burst(0.0, 20, "a");
    adjacent.extend(burst(10.0, 20, "a"));
    let got = run(&flood_rule("10s", "10s", 10, 2, "0s"), adjacent).await;
    assert_eq!(got[0].state, State::Firing);
    assert_eq!(got[0].window_start, "2026-01-15T10:00:10Z");
}

#[tokio::test]
async fn one_incident_per_entity_and_repeats_are_suppressed() {
    let mut rows = burst(0.0, 20, "a");
    rows.extend(burst(10.0, 20, "b"));
    // "a" again after it resolved, inside the 5 minute suppression
    rows.extend(burst(40.0, 20, "a"));
    let got = run(&flood_rule("10s", "10s", 10, 1, "5m"), rows).await;
    let firing: Vec<&str> = got
        .iter()
        .filter(|a| a.state == State::Firing)
        .map(|a| a.entity["client.address"].as_str())
        .collect();
    assert_eq!(firing, vec!["a", "b"]);
    let resolved = got.iter().filter(|a| a.state == State::Resolved).count();
    assert_eq!(
        resolved, 2,
        "the suppressed repeat is not resolved either: {got:?}"
    );
}

#[tokio::test]
async fn trace_ids_are_sampled_sorted_and_at_most_five() {
    let got = run(&flood_rule("10s", "10s", 10, 1, "0s"), burst(0.0, 20, "a")).await;
    let ids = &got[0].trace_ids;
    assert_eq!(ids.len(), 5, "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(&sorted, ids);
    assert_eq!(
        ids[0],
        format!("{:032x}", 1),
        "the first span of the burst, at 0 ms"
    );
}

#[tokio::test]
async fn a_rule_failing_at_run_time_is_disabled_and_the_others_run() {
    // plans fine, fails on every evaluation with rows: integer division by zero
    let failing = "/*\nid = \"test.broken\"\nseverity = \"low\"\nwindow = \"10s\"\nentity = [\"client.address\"]\nvalue = \"v\"\n*/\nSELECT window_start, window_end, client_address, count(*) / (count(*) - count(*)) AS v FROM spans GROUP BY 1, 2, 3";
    let good = flood_rule("10s", "10s", 10, 1, "0s");
    let mut ev = Evaluator::new(rule_set(&[failing, &good]).await, 0);
    let fired = five_bursts(&mut ev, None).await;
    assert_broken_alone(&ev, "test.broken", "Divide by zero", &fired);
}

/// Five bursts of 20 requests from new clients, ten seconds apart (each with
/// one more request from `extra`, if any), evaluated as they come.
async fn five_bursts(ev: &mut Evaluator, extra: Option<&str>) -> Vec<Alert> {
    let mut fired = Vec::new();
    for i in 0..5 {
        let mut rows = burst(i as f64 * 10.0, 20, &format!("c{i}"));
        if let Some(extra) = extra {
            rows.push((i as f64 * 10.0 + 1.0, extra.to_string()));
        }
        let rows: Vec<(f64, &str)> = rows.iter().map(|(t, c)| (*t, c.as_str())).collect();
        ev.push(ingest::Table::Spans, spans(&rows)).unwrap();
        fired.extend(alerts(ev.evaluate().await));
    }
    fired.extend(alerts(ev.finish().await));
    fired
}

/// Rule `id` was disabled after repeated failures, the last with `error`,
/// while `test.flood` kept running and firing.
fn assert_broken_alone(ev: &Evaluator, id: &str, error: &str, fired: &[Alert]) {
    let health = ev.health();
    let broken = health.iter().find(|h| h.id == id).unwrap();
    assert!(
        !broken.enabled,
        "disabled after repeated failures: {broken:?}"
    );
    assert_eq!(broken.failures, crate::evaluator::MAX_FAILURES);
    assert!(
        broken.last_error.as_deref().unwrap_or("").contains(error),
        "{broken:?}"
    );
    let good_health = health.iter().find(|h| h.id == "test.flood").unwrap();
    assert!(good_health.enabled);
    assert!(
        fired.iter().filter(|a| a.state == State::Firing).count() >= 4,
        "the other rule keeps firing: {fired:?}"
    );
}

#[tokio::test]
async fn a_rule_that_panics_fails_alone_and_is_disabled() {
    use std::sync::Arc;

    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    // a function that panics on the address "boom", as a bug in an operator might
    let boom = create_udf(
        "boom",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = arrow::array::AsArray::as_string::<i32>(arrays[0].as_ref());
            if text.iter().flatten().any(|v| v == "boom") {
                panic!("boom");
            }
            Ok(ColumnarValue::Array(Arc::new(
                arrow::array::BooleanArray::from(vec![true; arrays[0].len()]),
            )))
        }),
    );
    let panicking = "/*\nid = \"test.panics\"\nseverity = \"low\"\nwindow = \"10s\"\nentity = [\"client.address\"]\nvalue = \"n\"\n*/\nSELECT window_start, window_end, client_address, count(*) AS n FROM spans WHERE boom(client_address) GROUP BY 1, 2, 3";
    let good = flood_rule("10s", "10s", 10, 1, "0s");
    let mut ev = Evaluator::new(rule_set_with(&[panicking, &good], &[boom]).await, 0);
    let fired = five_bursts(&mut ev, Some("boom")).await;
    assert_broken_alone(&ev, "test.panics", "panicked", &fired);
}

/// A population rule: one entity for the whole service, and the addresses
/// that contribute most named in the summary through an extra text column.
#[tokio::test]
async fn the_summary_names_extra_text_columns() {
    let rule = r#"/*
id = "test.population"
severity = "high"
window = "10s"
entity = ["service.name"]
value = "requests"
summary = "{value} requests, most from {top_addresses}"
*/
WITH per_address AS (
    SELECT window_start, window_end, service_name, client_address, count(*) AS n
    FROM spans GROUP BY 1, 2, 3, 4
)
SELECT window_start, window_end, service_name, sum(n) AS requests,
       array_to_string(array_slice(array_agg(client_address || ' (' || n || ')'
           ORDER BY n DESC, client_address), 1, 3), ', ') AS top_addresses
FROM per_address GROUP BY 1, 2, 3 HAVING sum(n) >= 10"#;
    let mut rows = burst(0.0, 6, "a");
    rows.extend(burst(0.0, 3, "b"));
    rows.extend(burst(0.0, 2, "c"));
    rows.extend(burst(0.0, 1, "d"));
    rows.extend(burst(30.0, 1, "quiet"));
    let got = run(rule, rows).await;
    let summaries: Vec<(State, &str)> = got.iter().map(|a| (a.state, a.summary.as_str())).collect();
    assert_eq!(
        summaries,
        vec![
            (State::Firing, "12 requests, most from a (6), b (3), c (2)"),
            (
                State::Resolved,
                "resolved: 12 requests, most from a (6), b (3), c (2)"
            ),
        ]
    );
    assert_eq!(
        got[0].entity.keys().collect::<Vec<_>>(),
        vec!["service.name"]
    );
}

/// At the cap of open incidents a new entity is refused and counted while
/// the open ones go on; room comes back as they resolve. At the cap of
/// suppression memories the oldest is forgotten: that entity is notified again.
#[tokio::test]
async fn at_the_incident_cap_new_entities_are_refused_and_counted_and_evaluation_goes_on() {
    let rule = flood_rule("10s", "10s", 3, 1, "1h");
    let mut ev = Evaluator::new(rule_set(&[&rule]).await, 0).with_incident_cap(2);
    let mut rows = Vec::new();
    for (at, clients) in [
        (0.0, &["a", "b"][..]),
        (10.0, &["a", "b", "c", "d"][..]),
        (30.0, &["c", "d"][..]),
        (50.0, &["a"][..]),
    ] {
        for client in clients {
            rows.extend(burst(at, 5, client));
        }
    }
    rows.sort_by(|x, y| x.0.total_cmp(&y.0));
    let rows: Vec<(f64, &str)> = rows.iter().map(|(t, c)| (*t, c.as_str())).collect();
    ev.push(ingest::Table::Spans, spans(&rows)).unwrap();
    let fired: Vec<(String, String)> = alerts(ev.finish().await)
        .into_iter()
        .filter(|a| a.state == State::Firing)
        .map(|a| (a.window_start, a.entity["client.address"].clone()))
        .collect();
    let at = |s: &str, c: &str| (format!("2026-01-15T10:00:{s}Z"), c.to_string());
    assert_eq!(
        fired,
        vec![
            at("00", "a"),
            at("00", "b"),
            // c and d, refused at 10:00:10 while a and b were open
            at("30", "c"),
            at("30", "d"),
            // a's suppression (1 h) forgotten to make room for c and d
            at("50", "a"),
        ]
    );
    let stats = ev.stats();
    assert_eq!(stats.incidents_refused.get("test.flood"), Some(&2));
    assert_eq!(stats.suppressions_forgotten.get("test.flood"), Some(&3));
}

/// The flood rule with the optional `first_seen` column.
fn flood_rule_with_first_seen(window: &str, slide: &str, min: u32) -> String {
    flood_rule(window, slide, min, 1, "1h").replace(
        "count(*) AS requests,",
        "count(*) AS requests, min(end_time) AS first_seen,",
    )
}

#[tokio::test]
async fn the_detection_delay_runs_from_the_first_evidence_to_the_firing() {
    // 20 requests from 12 s to 21.5 s; a 30 s window sliding by 10 s holds
    // 10 of them first in the window starting at -10 s
    let rows = burst(12.0, 20, "a");
    let with = run(&flood_rule_with_first_seen("30s", "10s", 10), rows.clone()).await;
    let firing = &with[0];
    assert_eq!(firing.state, State::Firing);
    assert_eq!(firing.window_start, "2026-01-15T09:59:50Z");
    // the rule's first_seen, not the window start
    assert_eq!(firing.first_seen_ns, Some(T0 + 12 * S));
    // emitted at the end of input: the newest row's time
    assert_eq!(firing.detected_at_ns, Some(T0 + 21_500_000_000));
    assert_eq!(firing.detection_delay_seconds(), Some(9.5));
    let json = serde_json::to_value(firing).unwrap();
    assert_eq!(json["first_seen"], "2026-01-15T10:00:12Z");
    assert_eq!(json["detected_at"], "2026-01-15T10:00:21.500Z");
    assert_eq!(json["id"], firing.identity());
    assert_eq!(json["incident_start"], "2026-01-15T09:59:50Z");
    // without the column, the first window's start is the first evidence
    let without = run(&flood_rule("30s", "10s", 10, 1, "1h"), rows).await;
    assert_eq!(without[0].first_seen_ns, Some(T0 - 10 * S));
    assert_eq!(without[0].window_start, firing.window_start);
}

#[tokio::test]
async fn a_restored_open_incident_is_not_notified_again_and_resolves_under_its_identity() {
    let rule = flood_rule("10s", "10s", 10, 1, "0s");
    // the first run: fires at [0, 10 s) and is stopped before it resolves
    let first = run(&rule, burst(0.0, 20, "a")).await;
    let fired = first
        .iter()
        .find(|a| a.state == State::Firing)
        .expect("a firing");
    let stored = crate::alerts::Stored {
        rule_id: fired.rule_id.clone(),
        rule_version: Some(fired.rule_version.clone()),
        entity: fired.entity.clone(),
        incident_start_ns: fired.incident_start_ns.unwrap(),
        fired_start_ns: T0,
        fired_end_ns: T0 + 10 * S,
        first_seen_ns: fired.first_seen_ns,
        value: Some(20.0),
        trace_ids: fired.trace_ids.clone(),
        open: true,
    };
    // the restarted run reads the same rows again, and then quiet ones
    let mut ev = Evaluator::new(rule_set(&[&rule]).await, 0);
    let restored = ev.restore_incidents(std::slice::from_ref(&stored));
    assert_eq!(
        (restored.open, restored.notified, restored.skipped),
        (1, 1, 0)
    );
    let mut rows = burst(0.0, 20, "a");
    rows.extend(burst(10.0, 20, "a"));
    rows.extend(burst(30.0, 1, "quiet"));
    let rows: Vec<(f64, &str)> = rows.iter().map(|(t, c)| (*t, c.as_str())).collect();
    ev.push(ingest::Table::Spans, spans(&rows)).unwrap();
    let again = alerts(ev.finish().await);
    assert!(
        again.iter().all(|a| a.state == State::Resolved),
        "notified twice: {again:?}"
    );
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].identity(), fired.identity());

    // an incident of another version of the rule is not restored
    let mut ev = Evaluator::new(rule_set(&[&rule]).await, 0);
    let other = crate::alerts::Stored {
        rule_version: Some("another".into()),
        ..stored.clone()
    };
    let restored = ev.restore_incidents(&[other]);
    assert_eq!((restored.open, restored.skipped), (0, 1));
}

#[tokio::test]
async fn a_restored_notification_suppresses_a_repeat() {
    let rule = flood_rule("10s", "10s", 10, 1, "15m");
    let stored = crate::alerts::Stored {
        rule_id: "test.flood".into(),
        rule_version: None,
        entity: [("client.address".to_string(), "a".to_string())].into(),
        incident_start_ns: T0 - 60 * S,
        fired_start_ns: T0 - 60 * S,
        fired_end_ns: T0 - 50 * S,
        first_seen_ns: None,
        value: Some(20.0),
        trace_ids: vec![],
        open: false,
    };
    let mut ev = Evaluator::new(rule_set(&[&rule]).await, 0);
    let restored = ev.restore_incidents(&[stored]);
    assert_eq!((restored.open, restored.notified), (0, 1));
    let rows = burst(0.0, 20, "a");
    let rows: Vec<(f64, &str)> = rows.iter().map(|(t, c)| (*t, c.as_str())).collect();
    ev.push(ingest::Table::Spans, spans(&rows)).unwrap();
    assert!(alerts(ev.finish().await).is_empty());
}
