//! Hot reload of the rule pack: `engine run` on a copy of rules/, a broken
//! edit refused with its `file:line:col` while the running pack keeps
//! alerting, then a fixed pack with a new rule taken on `POST /api/reload`
//! (and again on SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use e2e::engine::{post_traces, run_receiving_rules, spans};
use serde_json::Value;

/// Copies the rule files (`.sql`, `.toml`) of `from` into `to`, folders
/// included, the recorded captures left out.
fn copy_rules(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if path.is_dir() {
            if name != "captures" {
                copy_rules(&path, &to.join(name));
            }
        } else if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// Reads stdout until an alert of `rule` arrives.
fn alert_of(out: &mpsc::Receiver<String>, rule: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = out
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no alert of {rule} on stdout"));
        let alert: Value = serde_json::from_str(&line).expect("a JSON line");
        if alert["rule_id"] == rule {
            return alert;
        }
    }
}

async fn get_json(api: &str, path: &str) -> Value {
    reqwest::get(format!("http://{api}{path}"))
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON")
}

/// `POST /api/reload`: its status and JSON answer.
async fn reload(api: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("http://{api}/api/reload"))
        .send()
        .await
        .expect("the API answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("JSON"))
}

async fn metrics(api: &str) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `/metrics` has `line`.
async fn metric_line(api: &str, line: &str) {
    for _ in 0..100 {
        if metrics(api).await.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no `{line}` in\n{}", metrics(api).await);
}

#[tokio::test]
async fn a_broken_pack_is_refused_and_a_fixed_one_is_taken_with_its_new_rule() {
    let dir = std::env::temp_dir().join(format!("otelguard-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let workspace_rules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"));
    copy_rules(&workspace_rules, &dir);
    // no wall-clock idleness: the test's event time stays where it puts it
    let running = run_receiving_rules(dir.to_str().unwrap(), &["--idle", "1h"]);
    let (api, otlp) = (&running.api, &running.otlp);
    let client = reqwest::Client::new();
    let version = get_json(api, "/api/rules").await["version"].clone();
    assert!(version.as_str().is_some_and(|v| v.len() == 16), "{version}");

    // a broken edit: a misspelt column in the scraping rule's SQL
    let scraping = dir.join("dos/scraping.sql");
    let good = std::fs::read_to_string(&scraping).unwrap();
    let target = "       v.distinct_products,";
    let broken = good.replacen(target, "       v.distinct_produts,", 1);
    let broken_line = 1 + good[..good.find(target).unwrap()].matches('\n').count();
    std::fs::write(&scraping, &broken).unwrap();
    let (status, refused) = reload(api).await;
    assert_eq!(status, 422);
    let errors = refused["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{refused}");
    let location = errors[0]["location"].as_str().unwrap();
    let expected = format!("{}:{broken_line}:10", scraping.display());
    assert!(location.starts_with(&expected), "{location} for {expected}");
    assert_eq!(refused["version"], version);
    assert_eq!(get_json(api, "/api/rules").await["version"], version);
    // a reload is a state change: only POST
    let get = client
        .get(format!("http://{api}/api/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);

    // the running pack keeps alerting: a flood, then a span that closes its windows
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    for (from, to) in [(0, 2000), (2000, 4000)] {
        post_traces(otlp, &spans(t0, from, to, "203.0.113.50")).await;
    }
    post_traces(otlp, &spans(t0, 12_000, 12_001, "192.0.2.1")).await;
    let flood = alert_of(&running.out, "dos.http_flood.single_source");
    assert_eq!(flood["state"], "firing");

    // fixed, and a new rule added
    std::fs::write(&scraping, &good).unwrap();
    std::fs::write(
        dir.join("dos/reload_probe.sql"),
        r#"/*
id = "test.reload.probe"
title = "Added by a reload"
severity = "low"
window = "1m"
slide = "10s"
entity = ["client.address"]
value = "requests"
summary = "{value} requests from {client.address}"
*/
SELECT window_start, window_end, client_address, count(*) AS requests
FROM spans
WHERE client_address = '198.51.100.7'
GROUP BY window_start, window_end, client_address
HAVING count(*) >= 100
"#,
    )
    .unwrap();
    let (status, taken) = reload(api).await;
    assert_eq!(status, 200);
    assert_eq!(taken["added"], serde_json::json!(["test.reload.probe"]));
    assert_eq!(taken["changed"], serde_json::json!([]));
    assert_eq!(taken["removed"], serde_json::json!([]));
    assert!(
        taken["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "dos.http_flood.single_source"),
        "{taken}"
    );
    let rules = get_json(api, "/api/rules").await;
    assert_eq!(rules["version"], taken["version"]);
    assert_ne!(rules["version"], version);
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "test.reload.probe"),
        "{rules}"
    );

    // the new rule fires on what comes after
    post_traces(otlp, &spans(t0, 18_000, 18_200, "198.51.100.7")).await;
    post_traces(otlp, &spans(t0, 30_000, 30_001, "192.0.2.1")).await;
    let probe = alert_of(&running.out, "test.reload.probe");
    assert_eq!(probe["state"], "firing");
    assert_eq!(probe["value"], 200);

    // SIGHUP reloads too; the pack is unchanged, so is its version
    let pid = running.engine.0.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    metric_line(api, "otelguard_rules_reloads_total{result=\"ok\"} 2").await;
    metric_line(api, "otelguard_rules_reloads_total{result=\"refused\"} 1").await;
    assert_eq!(
        get_json(api, "/api/rules").await["version"],
        taken["version"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
