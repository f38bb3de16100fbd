//! `engine run --kafka` against the real Kafka of the local stack: OTLP/JSON
//! messages on `otlp_spans` raise an alert, and the consumer group's offsets are
//! committed once the windows they fed were evaluated and the alert delivered.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::engine::{Engine, spans};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use e2e::kafka::{BROKERS, create_topic, producer};

#[tokio::test]
async fn engine_consumes_kafka_alerts_and_commits() {
    // names unique to this run, not to this process: the broker's data outlives
    // the machine's runs, and a process id comes round again
    let run = format!("{:x}", e2e::shop::nonce());
    let client_address = format!("203.0.113.{}", e2e::shop::nonce() % 200 + 1);
    let group = format!("e2e-engine-{run}");
    let topic = format!("e2e_engine_spans_{run}");
    // three partitions, as the Collector's topics have: the flood's two halves
    // and the span that moves time on each land in a partition of their own, and
    // the engine must wait for the slowest partition before closing a window
    create_topic(&topic, 3).await;
    // logs and metrics topics of its own too: the shared ones carry other data,
    // whose event times would pace the watermark
    let logs_topic = format!("e2e_engine_logs_{run}");
    let metrics_topic = format!("e2e_engine_metrics_{run}");
    create_topic(&logs_topic, 1).await;
    create_topic(&metrics_topic, 1).await;
    let producer = producer();
    // dated in the past: the live engine drops rows dated beyond the wall
    // clock plus its skew, and the span that moves time on is 120 s after t0
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 200_000_000_000;
    for (partition, (from, to)) in [(2, (12_000, 12_001)), (0, (0, 2000)), (1, (2000, 4000))] {
        let payload = spans(t0, from, to, &client_address).to_string();
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

    // only the flood rule: offsets are committed once the longest window that
    // holds a message's rows is evaluated, and the pack's KPIs span 15 minutes
    let rules = e2e::engine::flood_rule_folder("kafka", &run);
    let rules = rules.to_str().expect("a UTF-8 path");
    let mut child = Command::new(e2e::workspace_binary("engine"))
        .args([
            "run",
            "--rules",
            rules,
            "--kafka",
            BROKERS,
            "--group",
            &group,
            // the messages are in the topics before the group exists
            "--start-at",
            "earliest",
            "--spans-topic",
            &topic,
        ])
        .args([
            "--logs-topic",
            &logs_topic,
            "--metrics-topic",
            &metrics_topic,
        ])
        .args([
            "--otlp-grpc",
            "off",
            "--otlp-http",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start engine run --kafka");
    let stdout = child.stdout.take().expect("stdout");
    let _engine = Engine(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let alert = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .expect("an alert for the flood on stdout");
        let alert: Value = serde_json::from_str(&line).expect("a JSON line");
        if alert["entity"]["client.address"] == client_address.as_str() {
            break alert;
        }
    };
    assert_eq!(alert["rule_id"], "dos.http_flood.single_source");
    assert_eq!(alert["state"], "firing");

    // the group's offsets on otlp_spans are committed, up to our messages
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", &group)
        .create()
        .expect("a consumer to read the group's offsets");
    let mut committed = 0i64;
    for _ in 0..100 {
        let metadata = watcher
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .expect("topic metadata");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition(&topic, p.id());
        }
        let offsets = watcher
            .committed_offsets(tpl, Duration::from_secs(5))
            .expect("committed offsets");
        committed = offsets
            .elements()
            .iter()
            .filter_map(|e| e.offset().to_raw())
            .filter(|o| *o > 0)
            .sum();
        if committed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the flood's two messages (offsets 0 in partitions 0 and 1) are committed:
    // each partition's committed offset is the next to read, 1
    assert!(
        committed >= 2,
        "the engine committed the offsets of what it evaluated ({committed})"
    );
    e2e::kafka::delete_topics(&[&topic, &logs_topic, &metrics_topic]).await;
}

#[tokio::test]
async fn engine_records_the_kafka_topics_to_a_capture() {
    let run = format!("{:x}", e2e::shop::nonce());
    // unique to this run: the topic also holds other tests' and recordings'
    // spans, whose client addresses come from the documentation ranges
    let marker = e2e::run_marker("record");
    let producer = producer();
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let payload = spans(t0, 0, 7, &marker).to_string();
    producer
        .send(
            FutureRecord::<(), _>::to("otlp_spans").payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("cannot produce to Kafka at {BROKERS} ({e})"));

    let out = std::env::temp_dir().join(format!("otelguard-record-kafka-{run}.jsonl.zst"));
    let group = format!("e2e-record-{run}");
    let status = Command::new(e2e::workspace_binary("engine"))
        .args([
            "record",
            out.to_str().unwrap(),
            "--kafka",
            BROKERS,
            "--group",
            &group,
            "--duration",
            "15s",
        ])
        .stderr(Stdio::null())
        .status()
        .expect("run engine record");
    assert!(status.success());
    let query = Command::new(e2e::workspace_binary("engine"))
        .args(["query", out.to_str().unwrap(), "--format", "csv"])
        .args([
            "--sql",
            &format!("SELECT count(*) AS n FROM spans WHERE client_address = '{marker}'"),
        ])
        .output()
        .expect("query the recording");
    let text = String::from_utf8_lossy(&query.stdout);
    assert_eq!(
        text.lines().nth(1),
        Some("7"),
        "{text}{}",
        String::from_utf8_lossy(&query.stderr)
    );
}
