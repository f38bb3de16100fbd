//! Idle is not absent: `engine run --kafka` while the broker is killed in the
//! middle of an attack. Issue 12 measured, before the fix, that the wall clock
//! moved event time on while the broker was away, so after it came back the
//! rest of the attack was judged late and never alerted.
//!
//! The test feeds the first 10 s of a flood (1000 requests, under the flood
//! rule's 3000 a minute), kills the stack's Kafka for longer than the engine's
//! `--idle`, starts it again, and feeds the next 30 s of the same flood, dated
//! during the outage (as the Collector's persistent queue delivers them). The
//! engine must judge no row late and raise the flood alert.
//!
//! Its own test binary, because it stops the broker every other Kafka test
//! uses. Run: `cargo test -p e2e --test kafka_outage` (the stack up).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::engine::{Engine, address_after, spans};
use e2e::kafka::BROKERS;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn stack(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/local/stack");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run compose/local/stack");
    assert!(status.success(), "compose/local/stack {args:?} failed");
}

async fn produce(producer: &FutureProducer, topic: &str, partition: i32, payload: &Value) {
    let payload = payload.to_string();
    // the broker may still be starting: its own retries, then ours
    for attempt in 0..30 {
        let sent = producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await;
        match sent {
            Ok(_) => return,
            Err((e, _)) if attempt < 29 => {
                eprintln!("producing to {topic}/{partition}: {e}; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err((e, _)) => panic!("cannot produce to Kafka at {BROKERS} ({e})"),
        }
    }
}

/// The value of a metric line `NAME{LABELS} VALUE` (or `NAME VALUE`) in the engine's /metrics.
async fn metric(api: &str, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_broker_outage_does_not_make_the_rest_of_an_attack_late() {
    let run = format!("{:x}", e2e::shop::nonce());
    let client = format!("198.51.100.{}", e2e::shop::nonce() % 200 + 1);
    let group = format!("e2e-outage-{run}");
    let spans_topic = format!("e2e_outage_spans_{run}");
    let logs_topic = format!("e2e_outage_logs_{run}");
    let metrics_topic = format!("e2e_outage_metrics_{run}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("a Kafka admin client");
    let topics = [
        NewTopic::new(&spans_topic, 2, TopicReplication::Fixed(1)),
        NewTopic::new(&logs_topic, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&metrics_topic, 1, TopicReplication::Fixed(1)),
    ];
    for r in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot reach Kafka at {BROKERS} ({e}); is the stack up?"))
    {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }

    let rules = e2e::engine::flood_rule_folder("outage", &run);
    let mut child = Command::new(e2e::workspace_binary("engine"))
        .args(["run", "--rules", rules.to_str().expect("a UTF-8 path")])
        .args(["--kafka", BROKERS, "--group", &group, "--idle", "10s"])
        .args(["--start-at", "earliest"])
        .args(["--spans-topic", &spans_topic, "--logs-topic", &logs_topic])
        .args(["--metrics-topic", &metrics_topic])
        .args([
            "--otlp-grpc",
            "off",
            "--otlp-http",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engine run --kafka");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let _engine = Engine(child);
    let (err_tx, err_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let api = address_after(&err_lines, "viewer and API on http://");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("message.timeout.ms", "180000")
        // queued messages reach the partition in the order they were sent
        .set("enable.idempotence", "true")
        .create()
        .expect("a Kafka producer");
    // the flood's first 10 s on partition 0; partition 1 speaks too, so both hold time
    let t0 = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 15_000_000_000;
    produce(&producer, &spans_topic, 0, &spans(t0, 0, 1000, &client)).await;
    produce(&producer, &spans_topic, 1, &spans(t0, 1000, 1001, &client)).await;
    let mut read = 0.0;
    for _ in 0..600 {
        read = metric(&api, "otelguard_rows_total{table=\"spans\"}")
            .await
            .unwrap_or(0.0);
        if read >= 1001.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read, 1001.0, "the engine read the first part of the flood");

    // the broker dies, and stays away for twice the engine's --idle
    stack(&["kill", "kafka"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // the rest of the flood, dated during the outage, in messages under the
    // broker's size limit, queued in the producer while the broker is away
    // and delivered when it is back, as the Collector's persistent queue
    // delivers (sent one by one after the restart, each waiting for the
    // producer to find the broker again, they came more than --idle apart
    // on a loaded machine, and the last was judged late: the wall clock had
    // moved event time on, as it should for a source that went quiet)
    let payloads: Vec<String> = (1000..4000)
        .step_by(500)
        .map(|from| spans(t0, from, from + 500, &client).to_string())
        .collect();
    let queued: Vec<_> = payloads
        .iter()
        .map(|payload| {
            producer
                .send_result(
                    FutureRecord::<(), _>::to(&spans_topic)
                        .partition(0)
                        .payload(payload),
                )
                .unwrap_or_else(|(e, _)| panic!("the producer refused a message ({e})"))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stack(&["up", "kafka"]);
    for delivery in queued {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("a message queued during the outage was not delivered ({e})"),
            Err(_) => panic!("the producer dropped a message queued during the outage"),
        }
    }
    let alert = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(180))
            .expect("a flood alert on stdout after the outage");
        let alert: Value = serde_json::from_str(&line).expect("a JSON line");
        if alert["entity"]["client.address"] == client.as_str() {
            break alert;
        }
    };
    assert_eq!(alert["rule_id"], "dos.http_flood.single_source");
    assert!(alert["value"].as_i64().unwrap_or(0) >= 3000, "{alert}");
    let late = metric(&api, "otelguard_late_rows_total").await;
    assert_eq!(late, Some(0.0), "rows judged late after the outage");
    e2e::kafka::delete_topics(&[&spans_topic, &logs_topic, &metrics_topic]).await;
}
