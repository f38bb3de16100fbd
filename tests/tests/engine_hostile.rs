//! Issue 12, the live engine (`engine run` with its OTLP/HTTP receiver) fed as
//! a service manager and an attacker would: SIGTERM must not lose what was
//! acknowledged, and a span dated 2099 must not blind it.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::engine::{Running, post_traces, run_receiving, spans_every};
use serde_json::Value;

const FLOOD_RULE: &str = "dos.http_flood.single_source";

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
    // --idle 10m: only the drain can close the flood's windows
    let Running {
        mut engine,
        err,
        out,
        otlp,
        ..
    } = run_receiving(&["--idle", "10m"]);
    flood_just_now(&otlp, "203.0.113.77").await;
    // acknowledged, and not yet judged: its windows are open
    assert!(
        out.recv_timeout(Duration::from_secs(2)).is_err(),
        "an alert before the windows closed"
    );

    let pid = engine.0.id().to_string();
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
    let said: Vec<String> = err.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("stopping (SIGTERM)")),
        "{said:?}"
    );
}
