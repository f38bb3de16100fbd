//! The engine's Alertmanager sink against the real Alertmanager of the local
//! stack (`compose/local/stack up`, 127.0.0.1:19093): a firing incident is
//! listed once, with its members and its rule's notes, and once it is sent as
//! resolved it is no longer active.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::alerts::{Alert, Notes, State, rfc3339};
use engine::incidents::{Correlator, Incident};
use engine::rules::definition::Maturity;
use engine::sinks::alertmanager::Alertmanager;
use serde_json::Value;

const ALERTMANAGER: &str = "http://127.0.0.1:19093";

/// An alert of the incident that began at `incident` (ns): its firing and its
/// resolution are one alert at Alertmanager (one `incident_id` label).
fn alert(rule_id: &str, state: State, incident: i64) -> Alert {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let (start, end) = match state {
        State::Firing => (now - 60_000_000_000, now + 60_000_000_000),
        State::Resolved => (now - 60_000_000_000, now - 1_000_000_000),
    };
    Alert {
        rule_id: rule_id.to_string(),
        severity: "high".into(),
        state,
        entity: BTreeMap::from([("client.address".to_string(), "203.0.113.9".to_string())]),
        window_start: rfc3339(start),
        window_end: rfc3339(end),
        value: serde_json::json!(4000),
        tags: vec!["T1498".into()],
        summary: "4000 requests in one minute from 203.0.113.9".into(),
        trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
        at_ns: end,
        rule_version: "e2e".into(),
        incident_start_ns: Some(incident),
        first_seen_ns: None,
        detected_at_ns: None,
        notes: Some(Arc::new(Notes {
            runbook: Some("1. Block the address at the edge.".into()),
            false_positives: Some("A load test.".into()),
            maturity: Maturity::Experimental,
        })),
    }
}

/// The same alert for another address: the same rule, so the same incident.
fn other(a: &Alert) -> Alert {
    let mut b = a.clone();
    b.entity
        .insert("client.address".to_string(), "203.0.113.10".to_string());
    b
}

async fn active(rule_id: &str) -> Vec<Value> {
    let url = format!("{ALERTMANAGER}/api/v2/alerts?active=true&filter=rule_id%3D%22{rule_id}%22");
    let resp = reqwest::get(&url).await.unwrap_or_else(|e| {
        panic!("Alertmanager does not answer at {ALERTMANAGER} ({e}); start it with `compose/local/stack up alertmanager`")
    });
    resp.json::<Vec<Value>>()
        .await
        .expect("Alertmanager lists alerts as JSON")
}

#[tokio::test]
async fn alertmanager_receives_firing_then_resolved() {
    let rule_id = format!("e2e.flood.{:x}", e2e::shop::nonce());
    let sink = Alertmanager::new(ALERTMANAGER);
    let incident = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 60_000_000_000;
    let mut correlator = Correlator::default();

    let firing = alert(&rule_id, State::Firing, incident);
    sink.send(&correlator.correlate([&firing, &other(&firing)]))
        .await
        .expect("Alertmanager takes a firing incident");
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = active(&rule_id).await;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 1, "one incident of two alerts: {listed:?}");
    let a = &listed[0];
    assert_eq!(a["labels"]["alertname"], Value::from(rule_id.clone()));
    assert_eq!(a["labels"]["severity"], "high");
    assert_eq!(a["labels"]["client_address"], "203.0.113.9");
    assert_eq!(a["labels"]["incident_id"], Value::from(firing.identity()));
    assert_eq!(a["labels"]["maturity"], "experimental");
    assert_eq!(a["annotations"]["tags"], "T1498");
    assert_eq!(a["annotations"]["member_count"], "2");
    assert_eq!(a["annotations"]["entity_count"], "2");
    assert_eq!(
        a["annotations"]["runbook"],
        "1. Block the address at the edge."
    );
    assert_eq!(a["annotations"]["false_positives"], "A load test.");
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("[experimental] 4000 requests")),
        "{a}"
    );

    let resolved = alert(&rule_id, State::Resolved, incident);
    sink.send(&correlator.correlate([&resolved, &other(&resolved)]))
        .await
        .expect("Alertmanager takes a resolved incident");
    let mut still = listed;
    for _ in 0..50 {
        still = active(&rule_id).await;
        if still.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        still.is_empty(),
        "the resolved alert is no longer active: {still:?}"
    );
}

#[tokio::test]
async fn an_unreachable_alertmanager_is_a_clear_error() {
    let sink = Alertmanager::new("http://127.0.0.1:9");
    let err = sink
        .send(&[Incident::single(&alert(
            "e2e.unreachable",
            State::Firing,
            0,
        ))])
        .await
        .expect_err("nothing listens on port 9");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:9"), "{text}");
    assert!(text.contains("attempts"), "{text}");
}
