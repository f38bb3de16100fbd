//! A monotone rule fires before its window closes (issue 13 item 4): the
//! live engine, fed by its OTLP receiver, sends the flood's alert while the
//! watermark is still before the end of the window it names; the close
//! then confirms it with the value at close.

use std::time::Duration;

use e2e::engine::{flood_rule_folder, post_traces, run_receiving_rules, spans};
use serde_json::Value;

/// One figure of the engine's `/metrics`, by its full name and labels.
async fn metric(api: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// [`metric`], read again until it is `want` (the API's figures are
/// refreshed just after the sinks are handed the outputs); the last read.
async fn metric_reaching(api: &str, name: &str, want: f64) -> Option<f64> {
    let mut got = None;
    for _ in 0..50 {
        got = metric(api, name).await;
        if got == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

fn ns_of(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_nanos_opt()
        .expect("in range")
}

/// The next alert on stdout.
fn next_alert(out: &std::sync::mpsc::Receiver<String>) -> Value {
    let line = out
        .recv_timeout(Duration::from_secs(120))
        .expect("an alert on stdout");
    serde_json::from_str(&line).expect("a JSON line")
}

#[tokio::test]
async fn a_flood_is_alerted_before_its_window_closes() {
    let rules = flood_rule_folder("early", &format!("{:x}", e2e::shop::nonce()));
    // the wall clock must not close windows during the test: only rows do
    let running = run_receiving_rules(
        rules.to_str().expect("a UTF-8 path"),
        &["--idle", "10m", "--early-every", "100ms"],
    );
    let (out, api, otlp) = (&running.out, &running.api, &running.otlp);
    let rule = "dos.http_flood.single_source";
    let client = "203.0.113.77";

    // event time: ten minutes ago, on a minute; 3000 spans 10 ms apart, in
    // six requests: the 3000th, 29.99 s in, crosses `count(*) >= 3000`
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    for from in (0..3000).step_by(500) {
        post_traces(otlp, &spans(t0, from, from + 500, client)).await;
    }
    let early = next_alert(out);
    assert_eq!(early["rule_id"], rule, "{early}");
    assert_eq!(early["state"], "firing");
    assert_eq!(early["entity"]["client.address"], client);
    assert_eq!(early["value"], 3000, "the value when it crossed");
    // once the API shows the early firing, the watermark (only rows move
    // it here) has not reached the window's end
    let fired_early = format!("otelguard_alerts_fired_early_total{{rule=\"{rule}\"}}");
    assert_eq!(metric_reaching(api, &fired_early, 1.0).await, Some(1.0));
    let end = ns_of(&early["window_end"]);
    let watermark = metric(api, "otelguard_watermark_seconds")
        .await
        .expect("a watermark");
    assert!(
        watermark * 1e9 < end as f64,
        "alerted at watermark {watermark}, after the window's end {end}"
    );
    // and the event time it was detected at, in the alert, is before it too
    let detected = ns_of(&early["detected_at"]);
    assert!(detected < end, "detected at {detected}, window end {end}");
    let fired = format!("otelguard_alerts_fired_total{{rule=\"{rule}\"}}");
    assert_eq!(metric(api, &fired).await, Some(0.0), "no window closed yet");

    // the window is [t0 - 30 s, t0 + 30 s): 400 more spans in it, at 25 s
    // to 29 s (not late: the watermark is 5 s behind the newest row), then a
    // row two minutes on closes the windows: the close fires for the same
    // window with the value at close, then resolves
    assert_eq!(ns_of(&early["window_start"]), t0 - 30_000_000_000);
    post_traces(otlp, &spans(t0 + 25_000_000_000, 0, 400, client)).await;
    post_traces(otlp, &spans(t0, 12_000, 12_001, "192.0.2.1")).await;
    let closed = next_alert(out);
    assert_eq!(
        (&closed["state"], &closed["window_start"], &closed["entity"]),
        (&early["state"], &early["window_start"], &early["entity"]),
        "{closed}"
    );
    assert_eq!(closed["value"], 3400, "the value at close");
    assert_eq!(closed["id"], early["id"], "one incident");
    let resolved = next_alert(out);
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert_eq!(metric_reaching(api, &fired, 1.0).await, Some(1.0));
    assert_eq!(
        metric(api, "otelguard_early_withdrawn_total").await,
        Some(0.0)
    );
    assert!(out.try_recv().is_err(), "nothing else");
}
