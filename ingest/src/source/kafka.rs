//! The Kafka source: a consumer group on the Collector's topics (`otlp_spans`,
//! `otlp_logs`, `otlp_metrics` by default), each message decoded with
//! [`decode_any`] as the table of its topic (`otlp_proto` or `otlp_json`).
//!
//! # Delivery: at-least-once, committed by the caller
//!
//! Auto-commit is off, and so is librdkafka's automatic offset store. Every
//! [`KafkaItem`] carries its topic, partition and offset; the caller marks the
//! items whose effects are durable in an [`OffsetsUpTo`] and hands it to
//! [`KafkaSource::commit`], which commits `offset + 1` per partition. A message
//! that does not decode is still an item (counted, logged once and dead-lettered
//! through [`Rejections`], origin `topic/partition/offset`), so its offset is
//! committed like the others and it is not read again.
//!
//! After a rebalance, a partition taken away may be read again by its new owner
//! from the last commit: that is the at-least-once part, and why alert keys are
//! idempotent. A commit of a partition no longer assigned fails and is reported.
//!
//! # Where a new group starts, and restarting quickly
//!
//! A group with no committed offset for a partition starts where
//! [`KafkaConfig::start_at`] says: at the end (`latest`, so a new engine
//! does not notify every old incident still in the topics), at the
//! beginning (`earliest`), or at the first message at or after a time
//! (each assigned partition looked up with `offsets_for_times`). A
//! partition with a committed offset always resumes from it.
//!
//! Dropping the source closes the consumer: without
//! [`KafkaConfig::group_instance_id`] it leaves the group, which rebalances
//! at once. With one (static membership, `group.instance.id`) it does not
//! leave: the broker keeps its partitions for [`KafkaConfig::session_timeout`],
//! and a member that comes back with the same id within it gets them again
//! at once, without a rebalance; one killed without closing is replaced the
//! same way.
//!
//! # Lag
//!
//! librdkafka reports its statistics every [`STATISTICS_INTERVAL`];
//! [`KafkaSource::lag`] gives, per assigned partition, the messages not read
//! yet and those after the group's committed offset (what a restart reads
//! again), against the partition's high watermark.
//!
//! # A broker that is down
//!
//! [`KafkaSource::connect`] asks the brokers for metadata, retrying with
//! exponential backoff, and fails with an error naming the brokers after
//! [`KafkaConfig::connect_attempts`]. Once running, librdkafka reconnects by
//! itself; broker errors are logged (the first, then every 100th) with the
//! brokers' names, and [`KafkaSource::recv`] keeps waiting.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ingest::RejectCounts;
//! use ingest::write::dead_letter::Rejections;
//! use ingest::source::kafka::{KafkaConfig, KafkaSource, OffsetsUpTo};
//!
//! let rejections = Arc::new(Rejections::new(Arc::new(RejectCounts::default())));
//! let source = KafkaSource::connect(KafkaConfig::new("127.0.0.1:19092", "otelguard"), rejections).await?;
//! let mut done = OffsetsUpTo::default();
//! loop {
//!     let item = source.recv().await?;
//!     if let Ok(decoded) = &item.decoded {
//!         // ... evaluate, make the effects durable ...
//!     }
//!     done.mark(&item);
//!     source.commit(&done, true)?;
//! }
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::decode::decode_any;
use crate::write::dead_letter::{DeadLetter, Rejections};
use crate::{DecodeError, Decoded, Reason, Table};

/// The Collector kafka exporter's default topics and their tables.
pub const DEFAULT_TOPICS: [(&str, Table); 3] = [
    ("otlp_spans", Table::Spans),
    ("otlp_logs", Table::Logs),
    ("otlp_metrics", Table::Metrics),
];

/// How to consume.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub brokers: String,
    /// the consumer group
    pub group_id: String,
    /// each topic and the table its messages fill
    pub topics: Vec<(String, Table)>,
    /// where a group with no commit starts (default: earliest)
    pub start_at: StartAt,
    /// static group membership (`group.instance.id`): a restart with the
    /// same id gets its partitions back without a rebalance
    pub group_instance_id: Option<String>,
    /// how long the broker waits for a silent member before it gives its
    /// partitions to the others (`session.timeout.ms`); librdkafka's 45 s if none
    pub session_timeout: Option<Duration>,
    /// metadata requests before [`KafkaSource::connect`] gives up (default 5)
    pub connect_attempts: u32,
    /// the first wait between them, doubled each time up to 10 s (default 500 ms)
    pub connect_backoff: Duration,
    /// how long one metadata request may take (default 5 s)
    pub connect_timeout: Duration,
    /// keep each message's payload in [`KafkaItem::raw`] (for captures)
    pub keep_raw: bool,
    /// more librdkafka consumer properties, set last
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// The defaults: the Collector's three topics, [`StartAt::Earliest`], 5 attempts.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics: DEFAULT_TOPICS
                .iter()
                .map(|(t, table)| (t.to_string(), *table))
                .collect(),
            start_at: StartAt::Earliest,
            group_instance_id: None,
            session_timeout: None,
            connect_attempts: 5,
            connect_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
            keep_raw: false,
            properties: Vec::new(),
        }
    }
}

/// Where a consumer group starts reading a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// the first message still in the partition
    Earliest,
    /// the end: only what is written from now on
    Latest,
    /// the first message whose timestamp is at or after this time
    /// (milliseconds since the epoch); the end if there is none
    Time(i64),
}

/// An error of the Kafka source, naming the brokers, topic, partition or offset.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The consumer could not be created (a bad property).
    #[error("Kafka consumer for {brokers} (group {group}): {source}")]
    Create {
        /// the brokers
        brokers: String,
        /// the group
        group: String,
        /// what librdkafka said
        source: Box<KafkaError>,
    },
    /// The brokers did not answer.
    #[error(
        "cannot reach the Kafka brokers {brokers} after {attempts} attempts over {waited:?}: {source} (is Kafka running? try `compose/local/stack up kafka`)"
    )]
    Unreachable {
        /// the brokers
        brokers: String,
        /// how many metadata requests were made
        attempts: u32,
        /// how long it took
        waited: Duration,
        /// the last error
        source: Box<KafkaError>,
    },
    /// Subscribing failed.
    #[error("Kafka: cannot subscribe to {topics:?} on {brokers}: {source}")]
    Subscribe {
        /// the topics
        topics: Vec<String>,
        /// the brokers
        brokers: String,
        /// what librdkafka said
        source: Box<KafkaError>,
    },
    /// A message arrived from a topic that was not configured.
    #[error("Kafka: message from unexpected topic {topic}/{partition}/{offset}")]
    UnknownTopic {
        /// the topic
        topic: String,
        /// the partition
        partition: i32,
        /// the offset
        offset: i64,
    },
    /// The decoding task failed (a panic in a decoder).
    #[error("Kafka: decoding {topic}/{partition}/{offset} failed: {detail}")]
    Decode {
        /// the topic
        topic: String,
        /// the partition
        partition: i32,
        /// the offset
        offset: i64,
        /// what happened
        detail: String,
    },
    /// Committing offsets failed.
    #[error("Kafka: cannot commit offsets {offsets} of group {group} on {brokers}: {source}")]
    Commit {
        /// what was being committed
        offsets: String,
        /// the group
        group: String,
        /// the brokers
        brokers: String,
        /// what librdkafka said
        source: Box<KafkaError>,
    },
    /// The consumer failed in a way it does not recover from.
    #[error("Kafka consumer of group {group} on {brokers}: {source}")]
    Fatal {
        /// the group
        group: String,
        /// the brokers
        brokers: String,
        /// what librdkafka said
        source: Box<KafkaError>,
    },
}

/// One consumed message, decoded or not, and where it is.
#[derive(Debug, Clone)]
pub struct KafkaItem {
    /// the topic
    pub topic: Arc<str>,
    /// the partition
    pub partition: i32,
    /// the offset
    pub offset: i64,
    /// the table of the topic
    pub table: Table,
    /// the message's timestamp (milliseconds since the epoch), when it has one
    pub timestamp_ms: Option<i64>,
    /// its rows, or why it was rejected (already counted, logged and
    /// dead-lettered by the source)
    pub decoded: Result<Decoded, DecodeError>,
    /// the payload as received, if [`KafkaConfig::keep_raw`]
    pub raw: Option<Vec<u8>>,
    /// when its decoding began and ended (for the caller's own spans)
    pub decoding: (std::time::SystemTime, std::time::SystemTime),
}

impl KafkaItem {
    /// `topic/partition/offset`.
    pub fn origin(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The highest offset processed per (topic, partition), "up to and including".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetsUpTo {
    offsets: BTreeMap<(Arc<str>, i32), i64>,
    /// the caller's resume point: event time (ns) from which every row is at
    /// or after these offsets, committed with them as their metadata
    /// ([`RESUME_METADATA`]) so that a restart knows what was done before it
    resume: Option<i64>,
}

/// The commit metadata's prefix: `otelguard.resume_ns=<event time>` (see
/// [`OffsetsUpTo::with_resume`] and [`KafkaSource::resume_points`]).
pub const RESUME_METADATA: &str = "otelguard.resume_ns=";

impl OffsetsUpTo {
    /// Records that everything up to `item`'s offset in its partition is done.
    pub fn mark(&mut self, item: &KafkaItem) {
        self.mark_at(item.topic.clone(), item.partition, item.offset);
    }

    /// Records that everything up to `offset` in (topic, partition) is done.
    /// A lower offset than one already marked is ignored.
    pub fn mark_at(&mut self, topic: Arc<str>, partition: i32, offset: i64) {
        let entry = self.offsets.entry((topic, partition)).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    /// Takes in another set of marks (the highest wins, and the latest
    /// resume point).
    pub fn merge(&mut self, other: &OffsetsUpTo) {
        for ((topic, partition), offset) in &other.offsets {
            self.mark_at(topic.clone(), *partition, *offset);
        }
        self.resume = self.resume.max(other.resume);
    }

    /// Sets the resume point committed with these offsets: every row at or
    /// after event time `ns` is in a message after them. Callers only move
    /// it forward, as their offsets; [`merge`](Self::merge) keeps the latest.
    pub fn with_resume(mut self, ns: i64) -> Self {
        self.resume = Some(ns);
        self
    }

    /// The resume point (see [`with_resume`](Self::with_resume)).
    pub fn resume(&self) -> Option<i64> {
        self.resume
    }

    /// The marks: (topic, partition) and the last offset done.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.offsets.iter().map(|((t, p), o)| (&**t, *p, *o))
    }

    /// The last offset done in (topic, partition).
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map(|(_, o)| *o)
    }

    /// No marks.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The list to commit: each partition's next offset to read (`offset + 1`).
    pub fn to_commit_list(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.offsets {
            let mut elem = list.add_partition(topic, *partition);
            elem.set_offset(Offset::Offset(offset + 1))?;
            if let Some(ns) = self.resume {
                elem.set_metadata(format!("{RESUME_METADATA}{ns}"));
            }
        }
        Ok(list)
    }
}

/// A committed offset (the next to read); none if the partition was never committed.
fn offset_of(e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Option<i64> {
    match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The event time in a commit's metadata written by [`OffsetsUpTo::to_commit_list`].
pub fn parse_resume(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(RESUME_METADATA)?.parse().ok()
}

impl fmt::Display for OffsetsUpTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .offsets
            .iter()
            .map(|((t, p), o)| format!("{t}/{p}@{}", o + 1))
            .collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// Logs broker errors with the brokers' names, and rebalances; knows whether
/// the consumer is cut off (its brokers unreachable, or a rebalance under way).
struct Context {
    brokers: String,
    errors: AtomicU64,
    /// the brokers stopped answering; cleared by a message or a metadata answer
    unreachable: AtomicBool,
    /// between the start and the end of a rebalance
    rebalancing: AtomicBool,
    /// [`StartAt::Time`]: where partitions with no committed offset start
    start_at_ms: Option<i64>,
    /// each assigned partition's offsets, from librdkafka's statistics
    lag: std::sync::Mutex<Vec<PartitionLag>>,
}

/// How far a consumer is behind in one partition, from librdkafka's
/// statistics (every [`STATISTICS_INTERVAL`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// the topic
    pub topic: String,
    /// the partition
    pub partition: i32,
    /// the partition's end on the broker (the high watermark)
    pub high_watermark: i64,
    /// messages at or after the next offset to hand to the application: not
    /// read yet (`None` before the first read)
    pub unread: Option<i64>,
    /// messages at or after the group's committed offset: what a restart
    /// reads again (`None` with no commit yet)
    pub uncommitted: Option<i64>,
}

/// How often librdkafka reports the consumer's statistics (and so its lag).
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(2);

/// How long the look-ups of a [`StartAt::Time`] assignment may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

impl Context {
    /// Sets the start of every partition in `assigned` that has no committed
    /// offset to the first message at or after `ms` (the end if none, or if
    /// the look-up by time fails; the beginning if the committed offsets
    /// cannot be read; each failure said).
    fn start_from_time(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        assigned: &mut TopicPartitionList,
        ms: i64,
    ) {
        let committed = match consumer.committed_offsets(assigned.clone(), SEEK_TIMEOUT) {
            Ok(list) => list,
            Err(e) => {
                // librdkafka reads the committed offsets itself; a partition
                // without one then starts at the beginning (read again,
                // nothing skipped)
                tracing::warn!(error = %e, "Kafka: cannot read the committed offsets; partitions without one start at their beginning");
                return;
            }
        };
        let mut times = TopicPartitionList::new();
        for e in committed.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                let _ = times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ms));
            }
        }
        if times.count() == 0 {
            return;
        }
        let found = match consumer.offsets_for_times(times.clone(), SEEK_TIMEOUT) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka: cannot look up offsets by time; partitions without a commit start at the end");
                for e in times.elements() {
                    let _ = assigned.set_partition_offset(e.topic(), e.partition(), Offset::End);
                }
                return;
            }
        };
        for e in found.elements() {
            let start = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::End,
            };
            tracing::info!(
                topic = e.topic(),
                partition = e.partition(),
                ?start,
                "Kafka: a new partition starts at the time asked"
            );
            let _ = assigned.set_partition_offset(e.topic(), e.partition(), start);
        }
    }
}

impl ClientContext for Context {
    /// Keeps each assigned partition's lag ([`KafkaSource::lag`]).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition; a
                // partition never fetched has no high watermark
                if p.partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let behind = |offset: i64| (offset >= 0).then(|| (p.hi_offset - offset).max(0));
                lag.push(PartitionLag {
                    topic: topic.clone(),
                    partition: p.partition,
                    high_watermark: p.hi_offset,
                    unread: behind(p.app_offset),
                    uncommitted: behind(p.committed_offset),
                });
            }
        }
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.unreachable.store(true, Ordering::Relaxed);
        }
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(100) {
            tracing::warn!(brokers = %self.brokers, error = %error, reason, count = n + 1, "Kafka client error (librdkafka retries by itself)");
        }
    }
}

impl ConsumerContext for Context {
    /// rdkafka's own rebalance (pre, assign or unassign, post), with the
    /// start of new partitions set first when a time is asked.
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN,
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as REVOKE,
        };
        if err == ASSIGN
            && let Some(ms) = self.start_at_ms
        {
            self.start_from_time(consumer, tpl, ms);
        }
        let rebalance = match err {
            ASSIGN => Rebalance::Assign(tpl),
            REVOKE => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match (err, cooperative) {
            (ASSIGN, true) => consumer.incremental_assign(tpl),
            (ASSIGN, false) => consumer.assign(tpl),
            (_, true) => consumer.incremental_unassign(tpl),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "Kafka: the rebalance's assignment failed");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.rebalancing.store(true, Ordering::Relaxed);
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Revoke(_)) {
            self.rebalancing.store(false, Ordering::Relaxed);
        }
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = ?partitions(list), "Kafka partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = ?partitions(list), "Kafka partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<String> {
    list.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

/// A consumer group member reading OTLP from Kafka.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<Context>>,
    config: KafkaConfig,
    topics: Vec<(Arc<str>, Table)>,
    rejections: Arc<Rejections>,
    /// a metadata request to unreachable brokers is under way
    probing: Arc<AtomicBool>,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.config.brokers)
            .field("group", &self.config.group_id)
            .field("topics", &self.config.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer, waits for the brokers (retrying with backoff) and
    /// subscribes to the topics.
    pub async fn connect(
        config: KafkaConfig,
        rejections: Arc<Rejections>,
    ) -> Result<KafkaSource, KafkaSourceError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match config.start_at {
                    // a time is sought on assignment, and every new
                    // partition's start set there (the end when nothing is
                    // at or after it, or when the look-up fails): what is
                    // left to this setting is a position the broker no longer
                    // has in the middle of a run (a broker restarted, a log
                    // truncated), where reading again loses nothing and
                    // jumping to the end would skip what lies between
                    StartAt::Earliest | StartAt::Time(_) => "earliest",
                    StartAt::Latest => "latest",
                },
            )
            .set("client.id", "otelguard-ingest")
            .set(
                "statistics.interval.ms",
                STATISTICS_INTERVAL.as_millis().to_string(),
            );
        if let Some(id) = &config.group_instance_id {
            client.set("group.instance.id", id);
        }
        if let Some(timeout) = config.session_timeout {
            client.set("session.timeout.ms", timeout.as_millis().to_string());
        }
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let context = Context {
            brokers: config.brokers.clone(),
            errors: AtomicU64::new(0),
            unreachable: AtomicBool::new(false),
            rebalancing: AtomicBool::new(false),
            start_at_ms: match config.start_at {
                StartAt::Time(ms) => Some(ms),
                _ => None,
            },
            lag: Default::default(),
        };
        let consumer: StreamConsumer<Context> =
            client
                .create_with_context(context)
                .map_err(|e| KafkaSourceError::Create {
                    brokers: config.brokers.clone(),
                    group: config.group_id.clone(),
                    source: Box::new(e),
                })?;
        let consumer = wait_for_brokers(Arc::new(consumer), &config).await?;
        let names: Vec<&str> = config.topics.iter().map(|(t, _)| t.as_str()).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| KafkaSourceError::Subscribe {
                topics: names.iter().map(|s| s.to_string()).collect(),
                brokers: config.brokers.clone(),
                source: Box::new(e),
            })?;
        tracing::info!(brokers = %config.brokers, group = %config.group_id, topics = ?names, "Kafka source subscribed");
        let topics = config
            .topics
            .iter()
            .map(|(t, table)| (Arc::from(t.as_str()), *table))
            .collect();
        Ok(KafkaSource {
            consumer,
            config,
            topics,
            rejections,
            probing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Whether a quiet consumer is really quiet: its brokers answer and no
    /// rebalance is under way. While it is not, its partitions are absent,
    /// not idle, and event time must not move on by the wall clock. When the
    /// brokers were unreachable, a metadata request in the background (one at
    /// a time) finds out whether they are back.
    pub fn is_live(&self) -> bool {
        let context = self.consumer.context();
        if context.unreachable.load(Ordering::Relaxed)
            && !self.probing.swap(true, Ordering::Relaxed)
        {
            let consumer = self.consumer.clone();
            let probing = self.probing.clone();
            tokio::task::spawn_blocking(move || {
                if consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    consumer
                        .context()
                        .unreachable
                        .store(false, Ordering::Relaxed);
                }
                probing.store(false, Ordering::Relaxed);
            });
        }
        !context.unreachable.load(Ordering::Relaxed) && !context.rebalancing.load(Ordering::Relaxed)
    }

    /// The next message, decoded. A message that does not decode is returned
    /// too (with `decoded: Err`), after being counted and dead-lettered, so its
    /// offset can be committed. Transient consumer errors (a topic not created
    /// yet, a broker restarting) are logged and waited out.
    pub async fn recv(&self) -> Result<KafkaItem, KafkaSourceError> {
        let mut transient = 0u64;
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    self.consumer
                        .context()
                        .unreachable
                        .store(false, Ordering::Relaxed);
                    return self.item(&message).await;
                }
                Err(e) if is_fatal(&e) => {
                    return Err(KafkaSourceError::Fatal {
                        group: self.config.group_id.clone(),
                        brokers: self.config.brokers.clone(),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    if transient.is_multiple_of(100) {
                        tracing::warn!(brokers = %self.config.brokers, error = %e, "Kafka consumer error, retrying");
                    }
                    transient += 1;
                    let wait = Duration::from_millis(100 * transient.min(20));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Copies the message out of librdkafka's buffer and decodes it on a blocking
    /// thread (decoding is CPU work; the copy costs a small part of it).
    async fn item(&self, message: &BorrowedMessage<'_>) -> Result<KafkaItem, KafkaSourceError> {
        let (partition, offset) = (message.partition(), message.offset());
        let Some((topic, table)) = self
            .topics
            .iter()
            .find(|(t, _)| **t == *message.topic())
            .map(|(t, table)| (t.clone(), *table))
        else {
            return Err(KafkaSourceError::UnknownTopic {
                topic: message.topic().to_string(),
                partition,
                offset,
            });
        };
        let timestamp_ms = message.timestamp().to_millis();
        let payload = message.payload().map(<[u8]>::to_vec);
        let rejections = self.rejections.clone();
        let keep_raw = self.config.keep_raw;
        let origin = format!("{topic}/{partition}/{offset}");
        let work = move || {
            let began = std::time::SystemTime::now();
            let decoded = match &payload {
                None => Err(DecodeError::new(
                    Reason::UnknownEncoding,
                    "a message with no payload (a tombstone)",
                )),
                Some(bytes) => decode_any(table, bytes),
            };
            let bytes = payload.unwrap_or_default();
            match &decoded {
                Ok(d) => rejections.records("kafka", &origin, &d.rejected),
                Err(error) => rejections.message(&DeadLetter::new("kafka", &origin, error, &bytes)),
            }
            let decoding = (began, std::time::SystemTime::now());
            (decoded, keep_raw.then_some(bytes), decoding)
        };
        let (decoded, raw, decoding) =
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| KafkaSourceError::Decode {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    detail: e.to_string(),
                })?;
        Ok(KafkaItem {
            topic,
            partition,
            offset,
            table,
            timestamp_ms,
            decoded,
            raw,
            decoding,
        })
    }

    /// Commits `offset + 1` of every marked partition: synchronously (waits for
    /// the broker's answer) when `sync`, else in the background.
    pub fn commit(&self, offsets: &OffsetsUpTo, sync: bool) -> Result<(), KafkaSourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let error = |e: KafkaError| KafkaSourceError::Commit {
            offsets: offsets.to_string(),
            group: self.config.group_id.clone(),
            brokers: self.config.brokers.clone(),
            source: Box::new(e),
        };
        let list = offsets.to_commit_list().map_err(error)?;
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.consumer.commit(&list, mode).map_err(error)
    }

    /// The resume points committed with the group's offsets of the assigned
    /// partitions ([`OffsetsUpTo::with_resume`]), by `topic/partition`: none
    /// for a partition never committed, or committed by a consumer that
    /// wrote no resume point.
    pub fn resume_points(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(String, i32, Option<i64>)>, KafkaSourceError> {
        // metadata only our own commits wrote (`to_commit_list`): rdkafka
        // reads it as UTF-8
        self.each_committed(timeout, |e| {
            offset_of(e).and_then(|_| parse_resume(e.metadata()))
        })
    }

    /// The group's committed offsets (next offset to read) of the assigned partitions.
    pub fn committed(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(String, i32, Option<i64>)>, KafkaSourceError> {
        self.each_committed(timeout, offset_of)
    }

    /// `read` of each assigned partition's commit, by `topic/partition`.
    fn each_committed(
        &self,
        timeout: Duration,
        read: impl Fn(&rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Option<i64>,
    ) -> Result<Vec<(String, i32, Option<i64>)>, KafkaSourceError> {
        let list = self
            .consumer
            .committed(timeout)
            .map_err(|e| KafkaSourceError::Fatal {
                group: self.config.group_id.clone(),
                brokers: self.config.brokers.clone(),
                source: Box::new(e),
            })?;
        Ok(list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), read(e)))
            .collect())
    }

    /// Each assigned partition's lag, as librdkafka's last statistics
    /// (every [`STATISTICS_INTERVAL`]) reported it; empty before the first.
    pub fn lag(&self) -> Vec<PartitionLag> {
        self.consumer
            .context()
            .lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The partitions assigned to this member now, as `topic/partition`.
    pub fn assignment(&self) -> Vec<String> {
        self.consumer
            .assignment()
            .map(|list| partitions(&list))
            .unwrap_or_default()
    }
}

/// Errors `recv` does not wait out.
fn is_fatal(e: &KafkaError) -> bool {
    match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidGroupId
        ),
        None => false,
    }
}

/// Asks for metadata until the brokers answer, backing off between attempts.
async fn wait_for_brokers(
    consumer: Arc<StreamConsumer<Context>>,
    config: &KafkaConfig,
) -> Result<Arc<StreamConsumer<Context>>, KafkaSourceError> {
    let started = std::time::Instant::now();
    let mut backoff = config.connect_backoff;
    let attempts = config.connect_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let c = consumer.clone();
        let timeout = config.connect_timeout;
        let result =
            tokio::task::spawn_blocking(move || c.fetch_metadata(None, timeout).map(|_| ()))
                .await
                .unwrap_or(Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)));
        match result {
            Ok(()) => break,
            Err(e) if attempt >= attempts => {
                return Err(KafkaSourceError::Unreachable {
                    brokers: config.brokers.clone(),
                    attempts: attempt,
                    waited: started.elapsed(),
                    source: Box::new(e),
                });
            }
            Err(e) => {
                tracing::warn!(brokers = %config.brokers, attempt, error = %e, retry_in = ?backoff, "Kafka brokers not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RejectCounts;

    #[test]
    fn offsets_keep_the_highest_and_commit_the_next() {
        let mut done = OffsetsUpTo::default();
        let spans: Arc<str> = Arc::from("otlp_spans");
        done.mark_at(spans.clone(), 0, 10);
        done.mark_at(spans.clone(), 0, 7);
        done.mark_at(spans.clone(), 2, 3);
        let mut other = OffsetsUpTo::default();
        other.mark_at(Arc::from("otlp_logs"), 1, 0);
        other.mark_at(spans, 0, 12);
        done.merge(&other);
        assert_eq!(done.get("otlp_spans", 0), Some(12));
        assert_eq!(
            done.to_string(),
            "[otlp_logs/1@1, otlp_spans/0@13, otlp_spans/2@4]"
        );
        let list = done.to_commit_list().expect("list");
        assert_eq!(list.count(), 3);
        assert!(list.elements().iter().all(|e| e.metadata().is_empty()));
    }

    #[test]
    fn the_resume_point_is_committed_as_metadata_and_the_latest_wins() {
        let spans: Arc<str> = Arc::from("otlp_spans");
        let mut done = OffsetsUpTo::default();
        done.mark_at(spans.clone(), 0, 4);
        let mut done = done.with_resume(1_000);
        let mut later = OffsetsUpTo::default();
        later.mark_at(spans, 1, 9);
        done.merge(&later.with_resume(2_000));
        assert_eq!(done.resume(), Some(2_000));
        let list = done.to_commit_list().expect("list");
        for e in list.elements() {
            assert_eq!(e.metadata(), "otelguard.resume_ns=2000");
            assert_eq!(parse_resume(e.metadata()), Some(2_000));
        }
        assert_eq!(parse_resume(""), None);
        assert_eq!(parse_resume("otelguard.resume_ns=x"), None);
        assert_eq!(parse_resume("someone else's"), None);
    }

    #[tokio::test]
    async fn a_dead_broker_is_a_clear_error_after_retries() {
        let mut config = KafkaConfig::new("127.0.0.1:9", "test-dead-broker");
        config.connect_attempts = 2;
        config.connect_backoff = Duration::from_millis(50);
        config.connect_timeout = Duration::from_millis(500);
        let rejections = Arc::new(Rejections::new(Arc::new(RejectCounts::default())));
        let err = KafkaSource::connect(config, rejections)
            .await
            .expect_err("nothing listens on port 9");
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:9") && text.contains("after 2 attempts"),
            "{text}"
        );
    }
}
