//! Reading the Collector's OTLP topics back from Kafka.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

/// The local stack's Kafka.
pub const KAFKA: &str = "127.0.0.1:19092";

/// A consumer of every partition of `topics`, from the first record at or
/// after `since_ms` (Unix milliseconds) on, in consumer group `group`
/// (nothing is committed). A broker just started, or a topic just created,
/// answers with passing errors for a while (no leader yet, a leader epoch
/// newer than the broker's): they are tried again for up to a minute.
pub fn consumer_since(topics: &[&str], since_ms: i64, group: &str) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
    let started = std::time::Instant::now();
    let start = loop {
        match start_offsets(&consumer, topics, since_ms) {
            Ok(start) => break start,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("kafka at {KAFKA} not ready, trying again: {e:#}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.context("kafka: still failing after a minute")),
        }
    };
    consumer
        .assign(&start)
        .context("kafka: assigning partitions")?;
    Ok(consumer)
}

/// The offset of the first record at or after `since_ms` in every partition
/// of `topics`.
fn start_offsets(
    consumer: &StreamConsumer,
    topics: &[&str],
    since_ms: i64,
) -> Result<TopicPartitionList> {
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("kafka at {KAFKA}: metadata of {topic}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                wanted.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
            }
        }
    }
    consumer
        .offsets_for_times(wanted, Duration::from_secs(10))
        .context("kafka: offsets for the test's start time")
}

/// Quiet seconds (no record within one) after which [`read_spans_and_logs`] gives up.
const IDLE_POLLS: u32 = 60;
/// Records after which [`read_spans_and_logs`] gives up.
const MAX_RECORDS: u32 = 500_000;
/// Quiet seconds [`read_spans_and_logs`] waits for stragglers once done.
const SETTLE_POLLS: u32 = 3;

/// A span or a log record read back, with the `service.name` of its resource.
pub enum Signal {
    Span(String, Span),
    Log(String, LogRecord),
}

/// How a read ended: `complete` when `done` held, else it gave up after
/// `records` records or `idle` quiet seconds.
pub struct Read {
    pub complete: bool,
    pub records: u32,
    pub idle: u32,
}

/// Reads `otlp_spans` and `otlp_logs` from `since_ms` on, handing every span
/// and log record to `visit`, until `done(seen)` holds (then a few quiet
/// seconds for stragglers), or a minute passes without a record.
pub async fn read_spans_and_logs<S>(
    since_ms: i64,
    group: &str,
    seen: &mut S,
    mut visit: impl FnMut(&mut S, Signal),
    done: impl Fn(&S) -> bool,
) -> Result<Read> {
    let consumer = consumer_since(&["otlp_spans", "otlp_logs"], since_ms, group)?;
    let (mut idle, mut records, mut settled) = (0u32, 0u32, 0u32);
    loop {
        if done(seen) && settled >= SETTLE_POLLS {
            return Ok(Read {
                complete: true,
                records,
                idle,
            });
        }
        if idle >= IDLE_POLLS || records >= MAX_RECORDS {
            return Ok(Read {
                complete: false,
                records,
                idle,
            });
        }
        let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => {
                idle += 1;
                if done(seen) {
                    settled += 1;
                }
                continue;
            }
            Ok(m) => m.context("kafka: reading")?,
        };
        records += 1;
        let payload = message.payload().unwrap_or_default();
        if message.topic() == "otlp_spans" {
            let Ok(req) = ExportTraceServiceRequest::decode(payload) else {
                continue;
            };
            for rs in req.resource_spans {
                let service = service_of(rs.resource.as_ref());
                for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                    visit(seen, Signal::Span(service.clone(), span));
                }
            }
        } else {
            let Ok(req) = ExportLogsServiceRequest::decode(payload) else {
                continue;
            };
            for rl in req.resource_logs {
                let service = service_of(rl.resource.as_ref());
                for record in rl.scope_logs.into_iter().flat_map(|sl| sl.log_records) {
                    visit(seen, Signal::Log(service.clone(), record));
                }
            }
        }
    }
}

/// The value of attribute `key`.
pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// The value of attribute `key`, when it is a string.
pub fn attr_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The `service.name` of a resource ("" when it has none).
pub fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| attr_str(&r.attributes, "service.name"))
        .unwrap_or_default()
        .to_owned()
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A string attribute, as the OTLP protobuf types spell it.
pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}
