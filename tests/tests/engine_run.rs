//! `engine run` as the embedded default (no external service needed): the built-in OTLP receiver takes
//! OTLP/HTTP, alerts come out on stdout as JSON lines and in the API.

use std::process::Command;
use std::time::Duration;

use e2e::engine::{address_after, post_traces, run_receiving, spans, spawn};
use serde_json::{Value, json};

#[tokio::test]
async fn run_receives_otlp_and_raises_alerts() {
    let running = run_receiving(&[]);
    let (out_lines, api, otlp) = (&running.out, &running.api, &running.otlp);

    // event time: ten minutes ago, as a live shop's would be
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    let client = reqwest::Client::new();
    for (from, to) in [(0, 2000), (2000, 4000)] {
        post_traces(otlp, &spans(t0, from, to, "203.0.113.50")).await;
    }
    // a later span moves the watermark past the windows of the flood
    client
        .post(format!("http://{otlp}/v1/traces"))
        .json(&spans(t0, 12_000, 12_001, "192.0.2.1"))
        .send()
        .await
        .expect("post the late span");

    let line = out_lines
        .recv_timeout(Duration::from_secs(60))
        .expect("an alert on stdout");
    let alert: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(alert["rule_id"], "dos.http_flood.single_source");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["entity"], json!({"client.address": "203.0.113.50"}));

    let listed: Vec<Value> = client
        .get(format!("http://{api}/api/alerts"))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("alerts as JSON");
    assert!(
        listed
            .iter()
            .any(|a| a["rule_id"] == "dos.http_flood.single_source"),
        "{listed:?}"
    );
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = client
            .get(format!("http://{api}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("otelguard_rows_total{table=\"spans\"} 4001") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("otelguard_rows_total{table=\"spans\"} 4001"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otelguard_alerts_fired_total{rule=\"dos.http_flood.single_source\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn record_writes_a_capture_that_replays_to_the_same_alert() {
    let dir = std::env::temp_dir().join(format!("otelguard-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("recorded.jsonl.zst");
    let (mut recorder, err_lines, _out) = spawn(&[
        "record",
        out.to_str().unwrap(),
        "--otlp-grpc",
        "off",
        "--otlp-http",
        "127.0.0.1:0",
        "--max-messages",
        "3",
    ]);
    let otlp = address_after(&err_lines, "HTTP ");
    let t0 = 1_768_471_200_000_000_000;
    let client = reqwest::Client::new();
    for (from, to) in [(0, 2000), (2000, 4000), (12_000, 12_001)] {
        let r = client
            .post(format!("http://{otlp}/v1/traces"))
            .json(&spans(t0, from, to, "203.0.113.77"))
            .send()
            .await
            .expect("post spans");
        assert!(r.status().is_success());
    }
    let status = recorder.0.wait().expect("record exits after 3 messages");
    assert!(status.success());
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let replay = Command::new(e2e::workspace_binary("engine"))
        .args([
            "replay",
            out.to_str().unwrap(),
            "--rules",
            rules,
            "--format",
            "json",
        ])
        .output()
        .expect("replay the recording");
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        text.contains("\"rule_id\":\"dos.http_flood.single_source\""),
        "{text}"
    );
    assert!(text.contains("203.0.113.77"), "{text}");
}
