//! Kafka housekeeping for the tests that make topics of their own.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;

/// The local stack's broker.
pub const BROKERS: &str = "127.0.0.1:19092";

/// A producer to the local stack's broker.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("a Kafka producer")
}

/// Creates a topic of a test's own, with `partitions` partitions.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .expect("a Kafka admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
        .await
        .unwrap_or_else(|e| panic!("cannot reach Kafka at {BROKERS} ({e}); is the stack up? `compose/local/stack up kafka`"));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// Deletes a test's own topics once it has passed. The broker's data lives in
/// `~/.cache`, from one run of the suite to the next, so topics left behind
/// would pile up run after run. A topic that cannot be deleted is reported,
/// not a failure: the test itself has passed.
pub async fn delete_topics(names: &[&str]) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create();
    let result = match admin {
        Ok(admin) => admin
            .delete_topics(
                names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(results) => {
            for r in results {
                if let Err((topic, e)) = r {
                    eprintln!("could not delete test topic {topic}: {e}");
                }
            }
        }
        Err(e) => eprintln!("could not delete test topics {names:?}: {e}"),
    }
}
