//! Issue 12, the live engine (`engine run` with its OTLP/HTTP receiver) fed as
//! a service manager and an attacker would: SIGTERM must not lose what was
//! acknowledged, and a span dated 2099 must not blind it.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::engine::{Running, post_traces, run_receiving, spans_every};
use serde_json::Value;

const FLOOD_RULE: &str = "dos.http_flood.single_source";
/// The engine's built-in alert on future-dated rows (`engine::evaluator::FUTURE_ROWS_RULE`).
const FUTURE_RULE: &str = engine::evaluator::FUTURE_ROWS_RULE;

/// 4000 requests from `client`, one every 2 ms, the last about 1 s ago:
/// every one-minute window holding 3000 of them is still open (the watermark
/// trails the newest row by the 5 s lateness).
async fn flood_just_now(otlp: &str, client: &str) {
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("now");
    let t0 = now - 9_000_000_000;
    for (from, to) in [(0, 2000), (2000, 4000)] {
        post_traces(otlp, &spans_every(t0, from, to, 2_000_000, client)).await;
    }
}

/// The JSON lines on stdout, until it closes or `within` passes.
fn lines_until_closed(out: &mpsc::Receiver<String>, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match out.recv_timeout(left) {
            Ok(line) => lines.push(serde_json::from_str(&line).expect("a JSON line")),
            Err(_) => break,
        }
    }
    lines
}

fn firing(alerts: &[Value], rule: &str) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| a["rule_id"] == rule && a["state"] == "firing")
        .cloned()
        .collect()
}

#[tokio::test]
async fn sigterm_evaluates_the_open_windows_of_what_was_acknowledged_and_exits_0() {
    // --idle 10m: only the drain can close the flood's windows; the flood
    // rule would fire before they close, early firing is off
    let Running {
        mut engine,
        err,
        out,
        otlp,
        ..
    } = run_receiving(&["--idle", "10m", "--early-every", "off"]);
    flood_just_now(&otlp, "203.0.113.77").await;
    // acknowledged, and not yet judged: its windows are open
    assert!(
        out.recv_timeout(Duration::from_secs(2)).is_err(),
        "an alert before the windows closed"
    );

    let pid = engine.0.id().to_string();
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let alerts = lines_until_closed(&out, Duration::from_secs(60));
    let status = loop {
        if let Some(status) = engine.0.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status:?}");
    let flood = firing(&alerts, FLOOD_RULE);
    assert!(
        flood
            .iter()
            .any(|a| a["entity"]["client.address"] == "203.0.113.77"
                && a["value"].as_u64().is_some_and(|v| v >= 3000)),
        "no flood alert printed on SIGTERM: {alerts:?}"
    );
    eprintln!(
        "hostile input: SIGTERM: {status}, {} alert lines printed by the drain, flood value {}, \
         engine peak resident {peak} (debug)",
        alerts.len(),
        flood[0]["value"]
    );
    let said: Vec<String> = err.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("stopping (SIGTERM)")),
        "{said:?}"
    );
}

/// The `otelguard_future_rows_total{table="spans"}` figure of the engine's `/metrics`.
async fn future_spans(api: &str) -> Option<u64> {
    let metrics = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("otelguard_future_rows_total{table=\"spans\"} "))
        .and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn a_span_dated_2099_is_counted_and_reported_and_the_flood_after_it_still_alerts() {
    let Running {
        engine: _engine,
        out,
        api,
        otlp,
        ..
    } = run_receiving(&[]);
    // 2099-01-01T00:00:00Z
    let future = 4_070_908_800_000_000_000;
    post_traces(&otlp, &spans_every(future, 0, 1, 1, "198.51.100.99")).await;
    // the flood of engine_run, ten minutes ago, then a later span that closes its windows
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    for (from, to) in [(0, 2000), (2000, 4000), (12_000, 12_001)] {
        post_traces(
            &otlp,
            &spans_every(t0, from, to, 10_000_000, "203.0.113.50"),
        )
        .await;
    }
    let mut alerts: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while firing(&alerts, FLOOD_RULE).is_empty() || firing(&alerts, FUTURE_RULE).is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_default();
        match out.recv_timeout(left) {
            Ok(line) => alerts.push(serde_json::from_str(&line).expect("a JSON line")),
            Err(_) => panic!("not both alerts within 60 s: {alerts:?}"),
        }
    }
    let flood = firing(&alerts, FLOOD_RULE);
    assert_eq!(flood[0]["entity"]["client.address"], "203.0.113.50");
    assert!(
        flood[0]["value"].as_u64().is_some_and(|v| v >= 3000),
        "{flood:?}"
    );
    let notice = firing(&alerts, FUTURE_RULE);
    assert_eq!(notice[0]["entity"]["table"], "spans");
    assert_eq!(notice[0]["value"], 1);
    assert!(
        notice[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("2099")),
        "{notice:?}"
    );
    assert_eq!(future_spans(&api).await, Some(1));
    eprintln!(
        "hostile input: 2099: 1 future span counted and reported, flood alert value {}",
        flood[0]["value"]
    );
}
