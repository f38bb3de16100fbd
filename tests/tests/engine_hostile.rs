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
    metric(api, "otelguard_future_rows_total{table=\"spans\"}").await
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

/// A figure of the engine's `/metrics` (a line `NAME VALUE`).
async fn metric(api: &str, name: &str) -> Option<u64> {
    let metrics = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.parse().ok())
}

/// A field of `/proc/PID/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn many_large_resource_attributes_over_many_spans_are_held_once_not_per_row() {
    // --idle 10m: the spans stay in open windows while the figures are read
    let Running {
        engine, api, otlp, ..
    } = run_receiving(&["--idle", "10m"]);
    let pid = engine.0.id();
    let (attributes, value_bytes, spans) = (1000usize, 200usize, 4000i64);
    let mut body = spans_every(
        chrono::Utc::now().timestamp_nanos_opt().expect("now") - 5_000_000_000,
        0,
        spans,
        1_000_000,
        "203.0.113.9",
    );
    let resource: Vec<Value> = (0..attributes)
        .map(|i| {
            serde_json::json!({"key": format!("attacker.{i}"),
                "value": {"stringValue": "x".repeat(value_bytes)}})
        })
        .collect();
    body["resourceSpans"][0]["resource"]["attributes"]
        .as_array_mut()
        .expect("the resource's attributes")
        .extend(resource);
    let peak_before = proc_bytes(pid, "VmHWM");
    // one copy per row would be 4000 x 200 KB = 800 MB: refused over budget
    // before resource attributes were kept once; accepted now
    post_traces(&otlp, &body).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let rows = metric(&api, "otelguard_buffered_rows").await.unwrap_or(0);
        if rows >= spans as u64 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held, spans as u64, "the spans are held for their windows");
    let bytes = metric(&api, "otelguard_buffered_bytes")
        .await
        .expect("otelguard_buffered_bytes");
    let per_row = bytes / held;
    let copies = (attributes * value_bytes) as u64;
    assert!(
        per_row < 1024,
        "{per_row} bytes per buffered row ({bytes} in all): not a copy of the resource ({copies} bytes) each"
    );
    let peak_growth = proc_bytes(pid, "VmHWM").saturating_sub(peak_before);
    assert!(
        peak_growth < copies * spans as u64 / 4,
        "the peak resident set grew by {peak_growth} bytes"
    );
    eprintln!(
        "hostile input: {attributes} resource attributes of {value_bytes} bytes over {spans} spans: \
         {per_row} bytes per buffered row, peak resident set +{:.1} MB",
        peak_growth as f64 / 1e6
    );
}
