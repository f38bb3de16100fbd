//! The engine's own telemetry on the local stack: `engine run --kafka` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at the Collector exports its spans
//! (decode of a message, evaluation passes, sink deliveries) as service
//! `otelguard-engine`, which arrive in the Collector's `otlp_spans` topic, and
//! its metrics, which the Collector's Prometheus exporter shows; its own
//! `/metrics` shows the consumer lag of every partition it read. Its alerts
//! also go to a topic of alerts on the brokers of `--kafka` (a durable sink:
//! the offsets committed are those whose alert the broker has).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::engine::{Engine, address_after, flood_rule_folder, spans};
use e2e::kafka::{BROKERS, create_topic, delete_topics, producer};
use e2e::otlp::{Signal, attr_str, consumer_since, read_spans_and_logs};
use rdkafka::Message as _;
use rdkafka::producer::FutureRecord;

/// The Collector's Prometheus exporter (compose/otelcol/config.yaml).
const COLLECTOR_PROMETHEUS: &str = "http://127.0.0.1:8889/metrics";

async fn text(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls `url` until a line holds every one of `parts`; returns that line.
async fn line_with(url: &str, parts: &[&str]) -> Option<String> {
    for _ in 0..300 {
        let found = text(url)
            .await
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_string);
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test]
async fn the_engine_exports_its_spans_and_metrics_and_shows_its_lag() {
    let run = format!("{:x}", e2e::shop::nonce());
    let topic = format!("e2e_selftel_spans_{run}");
    let logs_topic = format!("e2e_selftel_logs_{run}");
    let metrics_topic = format!("e2e_selftel_metrics_{run}");
    let alerts_topic = format!("e2e_selftel_alerts_{run}");
    create_topic(&topic, 3).await;
    create_topic(&alerts_topic, 1).await;
    create_topic(&logs_topic, 1).await;
    create_topic(&metrics_topic, 1).await;
    let since_ms = chrono::Utc::now().timestamp_millis() - 1_000;
    // a flood in partitions 0 and 1, and a span 120 s later in partition 2
    // that closes its windows
    let client = format!("203.0.113.{}", e2e::shop::nonce() % 200 + 1);
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 200_000_000_000;
    let producer = producer();
    for (partition, (from, to)) in [(0, (0, 2000)), (1, (2000, 4000)), (2, (12_000, 12_001))] {
        let payload = spans(t0, from, to, &client).to_string();
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce to Kafka at {BROKERS} ({e})"));
    }

    let rules = flood_rule_folder("selftel", &run);
    let group = format!("e2e-selftel-{run}");
    let mut child = Command::new(e2e::workspace_binary("engine"))
        .args(["run", "--rules", rules.to_str().expect("a UTF-8 path")])
        .args([
            "--kafka",
            BROKERS,
            "--group",
            &group,
            "--start-at",
            "earliest",
        ])
        .args(["--spans-topic", &topic, "--logs-topic", &logs_topic])
        .args(["--metrics-topic", &metrics_topic])
        .args(["--alerts-topic", &alerts_topic])
        .args(["--otlp-grpc", "off", "--otlp-http", "off"])
        .args(["--listen", "127.0.0.1:0"])
        // the standard variables, to the stack's Collector over OTLP/HTTP;
        // the default service name; exports every 200 ms and every second
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engine run --kafka");
    let stderr = child.stderr.take().expect("stderr");
    let _engine = Engine(child);
    let (tx, err) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let api = address_after(&err, "viewer and API on http://");
    let metrics = format!("http://{api}/metrics");

    // its /metrics: every partition read to its end, and the flood's two
    // partitions committed once the alert was delivered
    for partition in 0..3 {
        let labels = format!("{{topic=\"{topic}\",partition=\"{partition}\"}}");
        let unread = format!("otelguard_kafka_unread{labels} 0");
        assert!(
            line_with(&metrics, &[&unread]).await.is_some(),
            "{unread} in {}",
            text(&metrics).await
        );
    }
    for partition in 0..2 {
        let lag = format!(
            "otelguard_kafka_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} 0"
        );
        assert!(
            line_with(&metrics, &[&lag]).await.is_some(),
            "{lag} in {}",
            text(&metrics).await
        );
    }
    let incidents = "otelguard_incidents_open{rule=\"dos.http_flood.single_source\"}";
    assert!(line_with(&metrics, &[incidents]).await.is_some());

    // its metrics through the Collector, as service otelguard-engine
    let exported = line_with(
        COLLECTOR_PROMETHEUS,
        &[
            "otelguard_kafka_unread{",
            "service_name=\"otelguard-engine\"",
            &format!("topic=\"{topic}\""),
        ],
    )
    .await;
    assert!(
        exported.is_some(),
        "the engine's lag in the Collector's Prometheus exporter"
    );

    // its spans in the Collector's Kafka topic
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let read = read_spans_and_logs(
        since_ms,
        &format!("e2e-selftel-reader-{run}"),
        &mut seen,
        |seen, signal| {
            let Signal::Span(service, span) = signal else {
                return;
            };
            if service != "otelguard-engine" {
                return;
            }
            let what = match span.name.as_str() {
                "engine.decode" => {
                    if attr_str(&span.attributes, "messaging.destination.name")
                        != Some(topic.as_str())
                    {
                        return;
                    }
                    "engine.decode of our topic".to_string()
                }
                "engine.sink.deliver" => format!(
                    "engine.sink.deliver to {}",
                    attr_str(&span.attributes, "sink").unwrap_or("?")
                ),
                other => other.to_string(),
            };
            seen.insert(what);
        },
        |seen| {
            [
                "engine.decode of our topic",
                "engine.evaluate",
                "engine.sink.deliver to stdout",
                "engine.sink.deliver to kafka",
            ]
            .iter()
            .all(|w| seen.contains(*w))
        },
    )
    .await
    .expect("read otlp_spans");
    assert!(read.complete, "the engine's own spans: {seen:?}");

    // the alerts topic: the incident's firing, then its resolution, under
    // one key (the close of the window that confirms an early firing is not
    // a state change, and is not written again)
    let reader = consumer_since(&[&alerts_topic], since_ms, &format!("{group}-alerts"))
        .expect("a reader of the alerts topic");
    let mut records: Vec<(String, String)> = Vec::new();
    let mut quiet = 0;
    while quiet < 5 {
        match tokio::time::timeout(Duration::from_secs(1), reader.recv()).await {
            Err(_) => quiet += 1,
            Ok(m) => {
                let m = m.expect("a record");
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
                let alert: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
                assert_eq!(alert["id"].as_str(), Some(key.as_str()), "{alert}");
                records.push((key, alert["state"].as_str().unwrap_or("?").to_string()));
            }
        }
    }
    let states: Vec<&str> = records.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states, ["firing", "resolved"], "{records:?}");
    assert_eq!(records[0].0, records[1].0, "one incident, one key");
    drop(_engine);
    delete_topics(&[&topic, &logs_topic, &metrics_topic, &alerts_topic]).await;
    let _ = std::fs::remove_dir_all(rules);
}
