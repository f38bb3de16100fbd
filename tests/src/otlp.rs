//! Reading the Collector's OTLP topics back from Kafka.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The local stack's Kafka.
pub const KAFKA: &str = "127.0.0.1:19092";

/// A consumer of every partition of `topics`, from the first record at or
/// after `since_ms` (Unix milliseconds) on, in consumer group `group`
/// (nothing is committed).
pub fn consumer_since(topics: &[&str], since_ms: i64, group: &str) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
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
    let start = consumer
        .offsets_for_times(wanted, Duration::from_secs(10))
        .context("kafka: offsets for the test's start time")?;
    consumer
        .assign(&start)
        .context("kafka: assigning partitions")?;
    Ok(consumer)
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
