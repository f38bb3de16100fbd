//! Alerts to a Kafka topic (`engine run --alerts-topic TOPIC`), one record
//! per alert state change, with an idempotent producer.
//!
//! Each record's value is the alert as the webhook's JSON body holds it (the
//! telemetry contract's object plus `id`, `rule_version` and
//! `incident_start`: [`super::webhook::alert_json`]); its key is the alert's
//! identity ([`Alert::identity`]), so the firing and the resolved record of
//! one incident go to the same partition, in that order, and a compacted
//! topic keeps each incident's latest state:
//!
//! ```text
//! $ kcat -C -b 127.0.0.1:19092 -t alerts -f '%k %s\n'
//! 9f2c41d07a3be815 {"id":"9f2c41d07a3be815","rule_id":"dos.http_flood.single_source","state":"firing",...}
//! 9f2c41d07a3be815 {"id":"9f2c41d07a3be815","rule_id":"dos.http_flood.single_source","state":"resolved",...}
//! ```
//!
//! One record per state change: a firing alert the engine sends again for an
//! incident already written as firing (the close of a window confirming an
//! early firing, a reload) is not written again while the sink remembers the
//! incident (from its firing to its resolution, at most [`REMEMBERED`]
//! incidents; beyond, it forgets them all and says so, and a repeat may be
//! written). After a restart the sink remembers nothing: an incident the
//! engine reads again is written again under the same key.
//!
//! The producer has `enable.idempotence=true` (so `acks=all`): librdkafka's
//! own retries within [`MESSAGE_TIMEOUT`] never write a record twice nor out
//! of order. A record the broker has not acknowledged by then fails the
//! delivery, and the fan-out tries the batch again with backoff (counted in
//! `otelguard_sink_retried_total{sink="kafka"}`); the records of that batch
//! the broker did take are not sent again. The sink is durable: Kafka offset
//! commits of the source wait until the broker has the alerts.
//!
//! A broker that is down when the engine starts is not an error at start:
//! the engine runs, evaluates and delivers to its other sinks, and this one
//! retries (logged once, counted) until the broker answers.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Sink, SinkError, Takes, webhook::alert_json};
use crate::alerts::Alert;
use crate::evaluator::Output;

/// How long librdkafka tries to get one record acknowledged before the
/// delivery fails (`message.timeout.ms`) and the fan-out retries it.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open incidents the sink remembers as written, to write each state once.
pub const REMEMBERED: usize = 100_000;

/// The alerts topic sink; see the module documentation.
pub struct KafkaAlerts {
    brokers: String,
    topic: String,
    producer: FutureProducer,
    /// records of the batch being delivered that the broker already took,
    /// by (identity, state, window end): not sent again when the batch is retried
    taken: HashSet<(String, &'static str, String)>,
    /// the incidents written as firing and not yet resolved, by identity
    firing: HashSet<String>,
}

/// A producer that cannot be made (a bad property or topic name).
#[derive(Debug, thiserror::Error)]
#[error("--alerts-topic {topic} on {brokers}: {reason}")]
pub struct KafkaAlertsError {
    pub topic: String,
    pub brokers: String,
    pub reason: String,
}

impl KafkaAlerts {
    /// An idempotent producer to `topic` on `brokers` (`host:port,...`).
    /// It does not connect yet: a broker that is down is retried on delivery.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaAlertsError> {
        let error = |reason: String| KafkaAlertsError {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            reason,
        };
        if topic.is_empty()
            || topic.len() > 249
            || !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(error(
                "not a Kafka topic name (letters, digits, `.`, `_` and `-`, at most 249)".into(),
            ));
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "otelguard-engine-alerts")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            .create()
            .map_err(|e| error(e.to_string()))?;
        Ok(KafkaAlerts {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            producer,
            taken: HashSet::new(),
            firing: HashSet::new(),
        })
    }
}

impl KafkaAlerts {
    /// Notes a record written: its incident is firing, or no longer.
    fn remember(&mut self, (key, state, _): &(String, &'static str, String)) {
        if *state != "firing" {
            self.firing.remove(key);
            return;
        }
        if self.firing.len() >= REMEMBERED {
            tracing::warn!(
                topic = %self.topic,
                incidents = self.firing.len(),
                "the alerts topic sink forgets the incidents it wrote as firing (its cap): \
                 a firing sent again for one of them is written again"
            );
            self.firing.clear();
        }
        self.firing.insert(key.clone());
    }
}

/// What tells one record of an alert from another: the incident, its state
/// and the window it was reported at.
fn record_id(a: &Alert) -> (String, &'static str, String) {
    let state = match a.state {
        crate::alerts::State::Firing => "firing",
        crate::alerts::State::Resolved => "resolved",
    };
    (a.identity(), state, a.window_end.clone())
}

#[async_trait]
impl Sink for KafkaAlerts {
    fn name(&self) -> &str {
        "kafka"
    }

    fn address(&self) -> String {
        format!("{}, topic {}", self.brokers, self.topic)
    }

    fn durable(&self) -> bool {
        true
    }

    fn takes(&self) -> Takes {
        Takes::Alerts
    }

    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        let alerts: Vec<(&Alert, (String, &'static str, String))> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some((a, record_id(a))),
                Output::Kpi(_) => None,
            })
            .filter(|(_, id)| !self.taken.contains(id))
            .filter(|(_, (key, state, _))| !(*state == "firing" && self.firing.contains(key)))
            .collect();
        // every record is handed to librdkafka first (in order, one
        // partition per key), then the acknowledgements are awaited
        let sends: Vec<_> = alerts
            .iter()
            .map(|(a, (key, _, _))| {
                let value = alert_json(a).to_string();
                let producer = self.producer.clone();
                let topic = self.topic.clone();
                let key = key.clone();
                async move {
                    let record = FutureRecord::to(&topic).key(&key).payload(&value);
                    producer
                        .send(record, MESSAGE_TIMEOUT)
                        .await
                        .map_err(|(e, _)| e)
                }
            })
            .collect();
        let results = futures::future::join_all(sends).await;
        let mut failed = None;
        for ((_, id), result) in alerts.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    self.remember(&id);
                    self.taken.insert(id);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            None => {
                self.taken.clear();
                Ok(())
            }
            Some(e) => Err(SinkError {
                sink: "kafka".into(),
                address: self.address(),
                message: format!(
                    "{} (is the broker up? the records the broker took are not sent again)",
                    super::error_chain(&e)
                ),
                permanent: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_name_kafka_refuses_is_an_error_naming_it() {
        let e = KafkaAlerts::new("127.0.0.1:19092", "alerts for ops")
            .err()
            .expect("a space is refused");
        assert!(
            e.to_string().starts_with(
                "--alerts-topic alerts for ops on 127.0.0.1:19092: not a Kafka topic name"
            ),
            "{e}"
        );
        assert!(KafkaAlerts::new("127.0.0.1:19092", "otelguard.alerts_v1").is_ok());
    }

    #[test]
    fn each_incident_is_remembered_from_its_firing_to_its_resolution() {
        let mut sink = KafkaAlerts::new("127.0.0.1:9", "alerts").expect("a producer");
        let firing = crate::sinks::testing::sample_alert(crate::alerts::State::Firing);
        let resolved = crate::sinks::testing::sample_alert(crate::alerts::State::Resolved);
        sink.remember(&record_id(&firing));
        assert!(sink.firing.contains(&firing.identity()));
        sink.remember(&record_id(&resolved));
        assert!(sink.firing.is_empty());
    }

    #[tokio::test]
    async fn a_broker_that_does_not_answer_fails_the_delivery_to_be_retried() {
        let mut sink = KafkaAlerts::new("127.0.0.1:9", "alerts").expect("a producer");
        let alert = crate::sinks::testing::sample_alert(crate::alerts::State::Firing);
        let e = sink
            .deliver(&[Output::Alert(alert)])
            .await
            .expect_err("nothing listens on port 9");
        assert!(!e.permanent, "{e}");
        assert!(
            e.to_string()
                .starts_with("kafka at 127.0.0.1:9, topic alerts: "),
            "{e}"
        );
        assert!(sink.taken.is_empty());
    }
}
