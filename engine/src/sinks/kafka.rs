//! Incidents to a Kafka topic (`engine run --alerts-topic TOPIC`), one record
//! per change of an incident, with an idempotent producer.
//!
//! The alerts are folded into incidents ([`crate::incidents`]). Each record's
//! value is the incident as the webhook's JSON body holds it (its lead alert,
//! the rule's notes, its members and span: [`Incident::to_json`]); its key is
//! the incident's identity ([`Incident::id`]), so the records of one incident
//! go to the same partition, in order, and a compacted topic keeps each
//! incident's latest state:
//!
//! ```text
//! $ kcat -C -b 127.0.0.1:19092 -t alerts -f '%k %s\n'
//! 9f2c41d07a3be815 {"id":"9f2c41d07a3be815","rule_id":"dos.http_flood.single_source","state":"firing","member_count":1,...}
//! 9f2c41d07a3be815 {"id":"9f2c41d07a3be815","rule_id":"dos.http_flood.single_source","state":"resolved","member_count":1,...}
//! ```
//!
//! One record per change: the incident opened, members joined (one record
//! per delivered batch that added some), resolved. A firing alert the engine
//! sends again for a member already in (the close of a window confirming an
//! early firing, a reload) changes nothing and writes nothing. After a
//! restart the sink remembers nothing: an incident the engine reads again is
//! written again under the same key.
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

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Sink, SinkError, Takes};
use crate::alerts::State;
use crate::evaluator::Output;
use crate::incidents::{Correlator, Incident};

/// How long librdkafka tries to get one record acknowledged before the
/// delivery fails (`message.timeout.ms`) and the fan-out retries it.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The alerts topic sink; see the module documentation.
pub struct KafkaAlerts {
    brokers: String,
    topic: String,
    producer: FutureProducer,
    correlator: Correlator,
    /// the incidents of the batch being delivered: a retry of the batch
    /// sends these (its alerts are already folded in)
    pending: Vec<Incident>,
    /// records of the batch being delivered that the broker already took,
    /// by (identity, state, members): not sent again when the batch is retried
    taken: BTreeSet<RecordId>,
}

/// What tells one record of an incident from another: its identity, state
/// and member count.
type RecordId = (String, State, u64);

fn record_id(inc: &Incident) -> RecordId {
    (inc.id.clone(), inc.state, inc.member_count)
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
            correlator: Correlator::default(),
            pending: Vec::new(),
            taken: BTreeSet::new(),
        })
    }
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
        if self.pending.is_empty() {
            let alerts = outputs.iter().filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                Output::Kpi(_) => None,
            });
            self.pending = self.correlator.correlate(alerts);
        }
        let incidents: Vec<(&Incident, RecordId)> = self
            .pending
            .iter()
            .map(|inc| (inc, record_id(inc)))
            .filter(|(_, id)| !self.taken.contains(id))
            .collect();
        // every record is handed to librdkafka first (in order, one
        // partition per key), then the acknowledgements are awaited
        let sends: Vec<_> = incidents
            .iter()
            .map(|(inc, (key, _, _))| {
                let value = inc.to_json().to_string();
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
        let ids: Vec<RecordId> = incidents.into_iter().map(|(_, id)| id).collect();
        for (id, result) in ids.into_iter().zip(results) {
            match result {
                Ok(_) => {
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
                self.pending.clear();
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
        assert_eq!(sink.pending.len(), 1, "kept for the retry of the batch");
        // the retry sends the same incident, though its alert is folded in already
        let again = sink.deliver(&[]).await.expect_err("still nothing listens");
        assert!(!again.permanent, "{again}");
        assert_eq!(sink.pending.len(), 1);
    }
}
