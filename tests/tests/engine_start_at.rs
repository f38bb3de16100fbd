//! Where a new consumer group starts (`engine run --kafka --start-at`), on
//! the real Kafka of the local stack (`compose/local/stack up kafka`).
//!
//! The topics hold an old flood (an incident already notified by whoever
//! read it). A new group with `--start-at latest` reads only what is written
//! after it joined: it never reads the old flood, so it does not notify that
//! incident again, and it does alert on a new flood. Another new group with
//! `--start-at earliest` reads everything the topics hold: it
//! notifies the old flood again and counts every row.
//!
//! "After it joined" is when the consumer has asked for each partition's
//! end, which comes a moment after the assignment. Rather than sleep, the
//! test writes one marker span at a time until the engine has read one:
//! from then on everything written is read, and the old flood and any
//! marker written before are behind its start.

use std::sync::mpsc;
use std::time::Duration;

use e2e::engine::{Engine, address_after, flood_rule_folder, spans};
use e2e::kafka::{BROKERS, create_topic, producer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// The flood rule's entity key in an alert's JSON.
const ENTITY: &str = "client.address";
const OLD_FLOOD: &str = "203.0.113.61";
const NEW_FLOOD: &str = "203.0.113.62";
const MARKER: &str = "192.0.2.50";
const CLOSER: &str = "192.0.2.1";

struct Topics {
    names: [String; 3],
    rules: String,
}

impl Topics {
    async fn new() -> Topics {
        let run = format!("{:x}", e2e::shop::nonce());
        let names = [
            format!("e2e_start_at_spans_{run}"),
            format!("e2e_start_at_logs_{run}"),
            format!("e2e_start_at_metrics_{run}"),
        ];
        for t in &names {
            create_topic(t, 1).await;
        }
        let rules = flood_rule_folder("start-at", &run);
        Topics {
            names,
            rules: rules.to_str().expect("a UTF-8 path").to_string(),
        }
    }

    /// `engine run --kafka` on these topics as a new group, starting at `start_at`.
    fn engine(&self, start_at: &str) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
        let [spans, logs, metrics] = &self.names;
        let group = format!("e2e-start-at-{start_at}-{:x}", e2e::shop::nonce());
        e2e::engine::spawn(&[
            "run",
            "--rules",
            &self.rules,
            "--kafka",
            BROKERS,
            "--group",
            &group,
            "--start-at",
            start_at,
            "--spans-topic",
            spans,
            "--logs-topic",
            logs,
            "--metrics-topic",
            metrics,
            "--idle",
            "1s",
            "--otlp-grpc",
            "off",
            "--otlp-http",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
    }

    /// Spans `from..to` of [`spans`] from `client`, in messages of 2000 at
    /// most (the broker's message size limit); the messages written.
    async fn produce(
        &self,
        producer: &FutureProducer,
        t0: i64,
        from: i64,
        to: i64,
        client: &str,
    ) -> u64 {
        let mut messages = 0;
        for start in (from..to).step_by(2000) {
            let payload = spans(t0, start, (start + 2000).min(to), client).to_string();
            producer
                .send(
                    FutureRecord::<(), _>::to(&self.names[0]).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("cannot produce to Kafka at {BROKERS} ({e})"));
            messages += 1;
        }
        messages
    }

    async fn delete(&self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        e2e::kafka::delete_topics(&names).await;
    }
}

/// Event time ten minutes ago, on a minute: the engine drops rows dated
/// beyond the wall clock.
fn t0() -> i64 {
    (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000
}

/// The engine's `otelguard_rows_total{table="spans"}`.
async fn spans_read(api: &str) -> u64 {
    let metrics = reqwest::get(format!("http://{api}/metrics"))
        .await
        .expect("the API answers")
        .text()
        .await
        .expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("otelguard_rows_total{table=\"spans\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Firing alerts from the engine's stdout until one names `until`; every
/// entity seen on the way, in order.
fn firing_until(out: &mpsc::Receiver<String>, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = out
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no alert for {until}; alerts seen for {seen:?}"));
        let alert: Value = serde_json::from_str(&line).expect("a JSON line");
        if alert["state"] != "firing" {
            continue;
        }
        assert_eq!(alert["rule_id"], "dos.http_flood.single_source", "{alert}");
        let entity = alert["entity"][ENTITY].as_str().unwrap_or("").to_string();
        seen.push(entity.clone());
        if entity == until {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_new_group_at_latest_skips_what_the_topics_held_and_at_earliest_reads_it() {
    let topics = Topics::new().await;
    let producer = producer();
    let t0 = t0();
    // before any group exists: an old flood (40 s of 100 requests a second)
    // and a span two minutes later that closes its windows
    let mut written = topics.produce(&producer, t0, 0, 4000, OLD_FLOOD).await;
    written += topics.produce(&producer, t0, 12_000, 12_001, CLOSER).await;
    let old_rows = 4001;

    let (latest, err, out) = topics.engine("latest");
    let api = address_after(&err, "viewer and API on http://");
    // marker spans, one message each, 150 s on and later, until one is read
    let mut markers = 0u64;
    while spans_read(&api).await == 0 {
        assert!(
            markers < 600,
            "the engine at latest read none of {markers} markers"
        );
        topics
            .produce(
                &producer,
                t0,
                15_000 + markers as i64,
                15_001 + markers as i64,
                MARKER,
            )
            .await;
        markers += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // a new flood 200 s in, and its closing span
    written += markers;
    written += topics
        .produce(&producer, t0, 20_000, 24_000, NEW_FLOOD)
        .await;
    written += topics.produce(&producer, t0, 32_000, 32_001, CLOSER).await;
    let new_rows = 4001;
    let seen = firing_until(&out, NEW_FLOOD);
    assert!(
        !seen.iter().any(|e| e == OLD_FLOOD),
        "the group at latest notified the old flood again: {seen:?}"
    );
    // it read the new rows and the markers written after its start, never
    // the old flood's (an early alert may come before the closing span is read)
    let mut read = spans_read(&api).await;
    for _ in 0..120 {
        if read > new_rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        read = spans_read(&api).await;
    }
    assert!(
        read >= new_rows + 1 && read <= new_rows + markers,
        "read {read} spans: the new flood and closer ({new_rows}) and 1 to {markers} markers expected"
    );
    drop(latest);

    // the same topics, another new group, at earliest: everything is read
    let (_earliest, err, out) = topics.engine("earliest");
    let api = address_after(&err, "viewer and API on http://");
    let seen = firing_until(&out, NEW_FLOOD);
    assert_eq!(
        seen.first().map(String::as_str),
        Some(OLD_FLOOD),
        "the group at earliest notifies the old flood first: {seen:?}"
    );
    let all = old_rows + markers + new_rows;
    let mut read = spans_read(&api).await;
    // the alert of the new flood comes at its window's close; what follows
    // it in the topic (its closing span) may still be on its way
    for _ in 0..120 {
        if read == all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        read = spans_read(&api).await;
    }
    assert_eq!(
        read, all,
        "the group at earliest reads every span the {written} messages hold"
    );
    topics.delete().await;
}
