//! Dead letters to a Kafka topic (the `kafka` feature).

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{DEFAULT_TOPIC, DEFAULT_TOPIC_RAW_LIMIT, DeadLetter, DeadLetterError, DeadLetterSink};

/// Dead letters to a Kafka topic: the payload is the raw message (cut to a
/// limit), the key its origin, and the headers `reason`, `source`, `origin`,
/// `detail`, `raw_size` and, when cut, `raw_truncated: true`.
pub struct DeadLetterTopic {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    brokers: String,
    raw_limit: usize,
}

impl fmt::Debug for DeadLetterTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterTopic")
            .field("topic", &self.topic)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl DeadLetterTopic {
    /// A producer to `topic` ([`DEFAULT_TOPIC`] if `None`) on `brokers`
    /// (`host:port,...`). Creating it does not contact the brokers.
    pub fn new(brokers: &str, topic: Option<&str>) -> Result<DeadLetterTopic, DeadLetterError> {
        let topic = topic.unwrap_or(DEFAULT_TOPIC).to_string();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "30000")
            .set("compression.type", "zstd")
            .create()
            .map_err(|source| DeadLetterError::Kafka {
                topic: topic.clone(),
                brokers: brokers.to_string(),
                source: Box::new(source),
            })?;
        Ok(DeadLetterTopic {
            producer,
            topic,
            brokers: brokers.to_string(),
            raw_limit: DEFAULT_TOPIC_RAW_LIMIT,
        })
    }

    /// Keeps up to `raw_limit` raw bytes per letter.
    pub fn raw_limit(mut self, raw_limit: usize) -> Self {
        self.raw_limit = raw_limit;
        self
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn error(&self, source: rdkafka::error::KafkaError) -> DeadLetterError {
        DeadLetterError::Kafka {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            source: Box::new(source),
        }
    }
}

impl DeadLetterSink for DeadLetterTopic {
    fn send(&mut self, letter: &DeadLetter<'_>) -> Result<(), DeadLetterError> {
        let kept = &letter.raw[..letter.raw.len().min(self.raw_limit)];
        let size = letter.raw.len().to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: "source",
                value: Some(letter.source),
            })
            .insert(Header {
                key: "origin",
                value: Some(letter.origin),
            })
            .insert(Header {
                key: "detail",
                value: Some(letter.detail),
            })
            .insert(Header {
                key: "raw_size",
                value: Some(size.as_str()),
            });
        if kept.len() < letter.raw.len() {
            headers = headers.insert(Header {
                key: "raw_truncated",
                value: Some("true"),
            });
        }
        let record = BaseRecord::to(&self.topic)
            .payload(kept)
            .key(letter.origin)
            .headers(headers);
        self.producer
            .send(record)
            .map_err(|(source, _)| self.error(source))
    }

    fn flush(&mut self) -> Result<(), DeadLetterError> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|source| self.error(source))
    }
}

impl Drop for DeadLetterTopic {
    fn drop(&mut self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(topic = %self.topic, error = %e, "dead letters may be lost: flush failed");
        }
    }
}
