//! The ingest Kafka source against the real Kafka of the local stack
//! (`compose/local/stack up kafka`, listener 127.0.0.1:19092).
//!
//! Each run uses topics and a consumer group of its own (suffixed with the run's
//! time), so it neither reads nor disturbs the Collector's `otlp_*` topics. It
//! produces protobuf, JSON and garbage messages with rdkafka, consumes them
//! through `ingest::source::kafka::KafkaSource`, and checks rows, reject counts, the
//! dead-letter topic, and that commits decide what a restarted member reads.
//!
//! Run: `cargo test -p e2e --test ingest_kafka`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use ingest::source::kafka::{KafkaConfig, KafkaItem, KafkaSource, OffsetsUpTo};
use ingest::write::dead_letter::{DeadLetterTopic, Rejections};
use ingest::{Reason, RejectCounts, Table};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};

use e2e::kafka::BROKERS;
/// 2026-01-01T00:00:00Z in Unix nanoseconds.
const T0: u64 = 1_767_225_600_000_000_000;

struct Topics {
    spans: String,
    logs: String,
    metrics: String,
    dead: String,
    group: String,
}

fn topics() -> Topics {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Topics {
        spans: format!("e2e_spans_{run}"),
        logs: format!("e2e_logs_{run}"),
        metrics: format!("e2e_metrics_{run}"),
        dead: format!("e2e_dead_letter_{run}"),
        group: format!("e2e-ingest-{run}"),
    }
}

async fn create_topics(t: &Topics) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .context("admin client")?;
    let new: Vec<NewTopic<'_>> = [&t.spans, &t.logs, &t.metrics, &t.dead]
        .iter()
        .map(|name| NewTopic::new(name, 2, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .with_context(|| {
            format!("creating topics on {BROKERS}: is Kafka up? `compose/local/stack up kafka`")
        })?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("creating topic {topic}: {code}");
        }
    }
    Ok(())
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn spans_proto(n: usize) -> Vec<u8> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![0x42; 16],
            span_id: vec![i as u8 + 1; 8],
            name: "POST /api/login".into(),
            kind: 2,
            start_time_unix_nano: T0 + i as u64,
            end_time_unix_nano: T0 + i as u64 + 1_000,
            attributes: vec![text("client.address", "203.0.113.9")],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics_proto() -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "shop.cart.size".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: T0,
                            value: Some(
                                opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                                    2.0,
                                ),
                            ),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

const LOGS_JSON: &str = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
  {"timeUnixNano":"1767225600000000000","eventName":"shop.auth.login",
   "attributes":[{"key":"shop.auth.outcome","value":{"stringValue":"failure"}}]},
  {"timeUnixNano":"0","eventName":"shop.auth.login"}]}]}]}"#;

async fn produce(topic: &str, payload: &[u8]) -> Result<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("message.timeout.ms", "20000")
        .create()
        .context("producer")?;
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(payload),
            Duration::from_secs(20),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))
}

fn config(t: &Topics) -> KafkaConfig {
    let mut config = KafkaConfig::new(BROKERS, t.group.clone());
    config.topics = vec![
        (t.spans.clone(), Table::Spans),
        (t.logs.clone(), Table::Logs),
        (t.metrics.clone(), Table::Metrics),
    ];
    config.keep_raw = true;
    config
}

async fn recv(source: &KafkaSource) -> Result<KafkaItem> {
    Ok(tokio::time::timeout(Duration::from_secs(60), source.recv())
        .await
        .context("no message within 60 s")??)
}

#[tokio::test]
async fn kafka_source_decodes_dead_letters_and_commits() -> Result<()> {
    let t = topics();
    create_topics(&t).await?;

    let spans = spans_proto(2);
    let garbage = b"\x0a\xff\xff\xff\x0f not protobuf".to_vec();
    produce(&t.spans, &spans).await?;
    produce(&t.logs, LOGS_JSON.as_bytes()).await?;
    produce(&t.metrics, &metrics_proto()).await?;
    produce(&t.spans, &garbage).await?;
    produce(&t.logs, b"{\"resourceLogs\": [ not json").await?;

    let counts = Arc::new(RejectCounts::default());
    let dead = DeadLetterTopic::new(BROKERS, Some(&t.dead))?;
    let rejections = Arc::new(Rejections::new(counts.clone()).with_sink(Box::new(dead)));
    let source = KafkaSource::connect(config(&t), rejections.clone()).await?;

    let mut items = Vec::new();
    while items.len() < 5 {
        items.push(recv(&source).await?);
    }
    items.sort_by_key(|i| (i.topic.to_string(), i.offset));
    let summary: Vec<String> = items
        .iter()
        .map(|i| {
            let what = match &i.decoded {
                Ok(d) => format!("{} rows of {}", d.batch.num_rows(), d.table.name()),
                Err(e) => format!("rejected {}", e.reason.as_str()),
            };
            format!(
                "{}/{}/{} {what}",
                i.topic.split('_').nth(1).unwrap_or("?"),
                i.partition,
                i.offset
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "logs/0/0 1 rows of logs",
            "logs/0/1 rejected bad_json",
            "metrics/0/0 1 rows of metrics",
            "spans/0/0 2 rows of spans",
            "spans/0/1 rejected corrupt_protobuf",
        ]
    );
    assert_eq!(
        items[3].raw.as_deref(),
        Some(&spans[..]),
        "raw payload kept"
    );
    assert_eq!(
        counts.snapshot(),
        vec![
            (Reason::CorruptProtobuf, 1),
            (Reason::BadJson, 1),
            (Reason::AbsurdTimestamp, 1)
        ]
    );

    // Dead letters: the two bad messages, with their reason and origin.
    rejections.flush()?;
    let dead_consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", format!("{}-dead", t.group))
        .set("auto.offset.reset", "earliest")
        .create()?;
    dead_consumer.subscribe(&[t.dead.as_str()])?;
    let mut letters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while letters.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(message) = dead_consumer.poll(Duration::from_millis(500)) {
            let message = message?;
            let header = |name: &str| -> String {
                message
                    .headers()
                    .and_then(|h| h.iter().find(|x| x.key == name))
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            letters.push((
                header("reason"),
                header("origin"),
                message.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    letters.sort();
    ensure!(letters.len() == 2, "dead letters: {letters:?}");
    assert_eq!(letters[0].0, "bad_json");
    assert_eq!(letters[0].1, format!("{}/0/1", t.logs));
    assert_eq!(letters[1].0, "corrupt_protobuf");
    assert_eq!(letters[1].1, format!("{}/0/1", t.spans));
    assert_eq!(letters[1].2.as_deref(), Some(&garbage[..]));

    // Commit everything read: offset + 1 per partition.
    let mut done = OffsetsUpTo::default();
    for item in &items {
        done.mark(item);
    }
    source.commit(&done, true)?;
    let committed = source.committed(Duration::from_secs(10))?;
    for (topic, next) in [(&t.spans, 2), (&t.logs, 2), (&t.metrics, 1)] {
        ensure!(
            committed.contains(&(topic.clone(), 0, Some(next))),
            "{topic}/0 should be committed at {next}: {committed:?}"
        );
    }
    drop(source);

    // A restarted member reads from the commit: only what came after.
    produce(&t.metrics, &metrics_proto()).await?;
    let source = KafkaSource::connect(config(&t), rejections.clone()).await?;
    let item = recv(&source).await?;
    assert_eq!(
        (&*item.topic, item.partition, item.offset),
        (t.metrics.as_str(), 0, 1)
    );
    // ... and, not committing it, the next member reads it again (at-least-once).
    drop(source);
    let source = KafkaSource::connect(config(&t), rejections).await?;
    let again = recv(&source).await?;
    assert_eq!(
        (&*again.topic, again.partition, again.offset),
        (t.metrics.as_str(), 0, 1)
    );
    drop(source);
    e2e::kafka::delete_topics(&[&t.spans, &t.logs, &t.metrics, &t.dead]).await;
    Ok(())
}
