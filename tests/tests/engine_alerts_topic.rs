//! `engine run --alerts-topic` against the local stack's Kafka: the alerts of
//! a flood arrive on the topic, one record per state change, keyed by the
//! incident's identity; and a broker that does not answer costs counted
//! retries, never a stalled engine.

use std::time::Duration;

use e2e::engine::{flood_rule_folder, post_traces, run_receiving_rules, spans};
use e2e::kafka::{BROKERS, create_topic, delete_topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use serde_json::Value;

/// Posts a flood from `client` (4000 requests in 40 s from `t0`), then a span
/// from elsewhere `late_s` seconds after `t0`, which moves the watermark on.
async fn flood(otlp: &str, t0: i64, client: &str, late_s: i64) {
    for (from, to) in [(0, 2000), (2000, 4000)] {
        post_traces(otlp, &spans(t0, from, to, client)).await;
    }
    let late = late_s * 100;
    post_traces(otlp, &spans(t0, late, late + 1, "192.0.2.1")).await;
}

/// The engine's `/metrics` text.
async fn metrics(api: &str) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .expect("the API answers")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample `name` in a Prometheus text, if present.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every record of `topic` (all partitions, from the start) as (key, value),
/// read until `want` have come and then three quiet seconds, or until a
/// minute passes without one.
async fn read_topic(topic: &str, want: usize) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the topic's metadata");
    let mut all = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        all.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&all).expect("assign the partitions");
    let mut records = Vec::new();
    let (mut quiet, mut settled) = (0, 0);
    while quiet < 60 && settled < 3 {
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => {
                quiet += 1;
                if records.len() >= want {
                    settled += 1;
                }
            }
            Ok(message) => {
                let message = message.expect("a record");
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
                let value = serde_json::from_slice(message.payload().unwrap_or_default())
                    .expect("a JSON value");
                records.push((key, value));
                quiet = 0;
            }
        }
    }
    records
}

#[tokio::test]
async fn alerts_of_a_flood_arrive_on_the_topic_once_per_state_change() {
    let run = format!("{:x}", e2e::shop::nonce());
    let topic = format!("e2e_alerts_{run}");
    create_topic(&topic, 3).await;
    let rules = flood_rule_folder("alerts-topic", &run);
    let running = run_receiving_rules(
        rules.to_str().expect("a UTF-8 path"),
        &["--alerts-topic", &topic, "--alerts-brokers", BROKERS],
    );
    let client = format!("203.0.113.{}", e2e::shop::nonce() % 200 + 1);
    // event time ten minutes ago; the late span five minutes after the flood
    // closes every window that holds it: the incident fires, then resolves
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    flood(&running.otlp, t0, &client, 300).await;

    let records = read_topic(&topic, 2).await;
    let states: Vec<&str> = records
        .iter()
        .map(|(_, v)| v["state"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(states, ["firing", "resolved"], "{records:?}");
    let (key, firing) = &records[0];
    assert_eq!(key.len(), 16, "the key is the alert's identity: {key}");
    assert_eq!(firing["id"].as_str(), Some(key.as_str()));
    assert_eq!(firing["rule_id"], "dos.http_flood.single_source");
    assert_eq!(firing["entity"]["client.address"], client.as_str());
    assert_eq!(firing["incident_start"], firing["window_start"]);
    assert!(
        firing["value"].as_u64().is_some_and(|v| v >= 3000),
        "{firing}"
    );
    let (resolved_key, resolved) = &records[1];
    assert_eq!(resolved_key, key, "one incident, one key");
    assert_eq!(resolved["id"], firing["id"]);

    let text = metrics(&running.api).await;
    assert_eq!(
        sample(&text, "otelguard_sink_delivered_total{sink=\"kafka\"}"),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(&text, "otelguard_sink_dropped_total{sink=\"kafka\"}"),
        Some(0)
    );
    assert_eq!(
        sample(&text, "otelguard_sink_queue_depth{sink=\"kafka\"}"),
        Some(0)
    );
    drop(running);
    delete_topics(&[&topic]).await;
    let _ = std::fs::remove_dir_all(rules);
}

#[tokio::test]
async fn a_broker_that_is_down_costs_counted_retries_and_never_stalls_the_engine() {
    let run = format!("{:x}", e2e::shop::nonce());
    // a port nothing listens on: bound, then let go
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let rules = flood_rule_folder("alerts-topic-down", &run);
    let running = run_receiving_rules(
        rules.to_str().expect("a UTF-8 path"),
        &["--alerts-topic", "alerts", "--alerts-brokers", &down],
    );
    let client = format!("198.51.100.{}", e2e::shop::nonce() % 200 + 1);
    let t0 = (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000;
    flood(&running.otlp, t0, &client, 120).await;

    // evaluation and stdout go on
    let line = running
        .out
        .recv_timeout(Duration::from_secs(60))
        .expect("the alert on stdout while the alerts topic is down");
    let alert: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(alert["entity"]["client.address"], client.as_str());

    // the Kafka sink retries, counted, and says why on stderr
    let retried = "otelguard_sink_retried_total{sink=\"kafka\"}";
    let mut text = String::new();
    for _ in 0..600 {
        text = metrics(&running.api).await;
        if sample(&text, retried).is_some_and(|n| n >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sample(&text, retried).is_some_and(|n| n >= 1), "{text}");
    assert_eq!(
        sample(&text, "otelguard_sink_delivered_total{sink=\"kafka\"}"),
        Some(0)
    );
    assert!(
        sample(&text, "otelguard_sink_queue_depth{sink=\"kafka\"}").is_some_and(|n| n >= 1),
        "the firing alert waits in the queue: {text}"
    );
    let complaint = format!("kafka at {down}, topic alerts:");
    let said = std::iter::from_fn(|| running.err.recv_timeout(Duration::from_secs(30)).ok())
        .any(|l| l.contains(&complaint) && l.contains("retrying"));
    assert!(said, "stderr names the sink, its brokers and topic");

    // and rows are still taken in
    let rows = "otelguard_rows_total{table=\"spans\"}";
    let before = sample(&metrics(&running.api).await, rows).expect("rows counted");
    post_traces(&running.otlp, &spans(t0, 20_000, 20_010, "192.0.2.2")).await;
    let mut after = None;
    for _ in 0..100 {
        after = sample(&metrics(&running.api).await, rows);
        if after == Some(before + 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after, Some(before + 10));
    drop(running);
    let _ = std::fs::remove_dir_all(rules);
}
