//! `engine shuffle`: the repartition stage of the scaled-out form (issue 18).
//!
//! A consumer group on the Collector's OTLP topics. Each instance decodes
//! the messages of its partitions once and writes their rows, keeping only
//! the columns the pack reads, to the keyed topics of the plan
//! ([`crate::rules::topology`]): each row to the partition of its key's
//! value ([`ingest::decode::shuffled::partition_of`]), to every topic whose
//! rules read its table; every row the global rules read to the one
//! partition of `otelguard_global`. Records are Arrow IPC
//! ([`ingest::decode::shuffled`]).
//!
//! **Transactions.** The instance works in short transactions
//! (`--commit-every`): the rows read, a watermark per source partition read
//! (the newest event time read from it, to every partition of every topic
//! that reads its table), and the input offsets
//! (`send_offsets_to_transaction`) commit together or not at all. A crash or
//! a rebalance in the middle aborts the transaction: its rows are never
//! seen by the evaluating engines (they read `read_committed`), and the
//! input is read again from the committed offsets, by this instance or the
//! one that takes the partition over. Nothing is lost and nothing doubled.
//!
//! A watermark is sent only for a source partition read in the transaction,
//! so a writer with nothing to read sends nothing, and evaluating engines
//! stop waiting for it after their idle timeout (`engine evaluate --idle`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use ingest::Table;
use ingest::decode::shuffled::{self, Origin};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::rules::topology::Route;

/// Rows per keyed record at most; a record over [`MAX_RECORD_BYTES`] is
/// split again.
const ROWS_PER_RECORD: usize = 4096;
/// Below the stack's broker limit (`message.max.bytes`, 8 MiB) and
/// librdkafka's default producer limit (1 MB).
const MAX_RECORD_BYTES: usize = 900 * 1024;
/// How long a transaction's calls to the broker may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the delivery reports of purged records may take before an abort.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `engine shuffle` runs with.
#[derive(Debug, Clone)]
pub struct ShuffleConfig {
    pub brokers: String,
    /// the consumer group of the repartitioning instances
    pub group: String,
    /// this instance's name: its transactional id is
    /// `otelguard-shuffle-GROUP-NAME` ([`ShuffleConfig::transactional_id`]),
    /// so a restarted instance fences off its former self and two groups
    /// never fence each other
    pub writer: String,
    /// the OTLP topics read, each with its table
    pub topics: Vec<(String, Table)>,
    pub routes: Vec<Route>,
    pub earliest: bool,
    pub commit_every: Duration,
    pub session_timeout: Option<Duration>,
}

impl ShuffleConfig {
    /// The producer's transactional id: one per (group, name), so that a
    /// restart fences off the instance it replaces, and a second deployment
    /// (another group) with the same names does not.
    pub fn transactional_id(&self) -> String {
        format!("otelguard-shuffle-{}-{}", self.group, self.writer)
    }
}

/// What a run did, for its last line and its progress lines.
#[derive(Debug, Default)]
pub struct ShuffleStats {
    pub messages: AtomicU64,
    pub rows: AtomicU64,
    pub records: AtomicU64,
    pub transactions: AtomicU64,
    pub aborted: AtomicU64,
    pub rejected: AtomicU64,
}

impl ShuffleStats {
    pub fn line(&self) -> String {
        format!(
            "{} messages, {} rows read; {} keyed records written in {} transactions ({} aborted); {} messages that do not decode",
            self.messages.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.transactions.load(Ordering::Relaxed),
            self.aborted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}

/// Notes every rebalance, so that the transaction under way is aborted.
struct Watcher {
    rebalanced: AtomicBool,
}

impl ClientContext for Watcher {}

impl ConsumerContext for Watcher {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalanced.store(true, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(list) => {
                eprintln!("shuffle: assigned {}", listed(list));
            }
            Rebalance::Revoke(list) => {
                eprintln!("shuffle: revoked {}", listed(list));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed"),
        }
    }
}

fn listed(list: &TopicPartitionList) -> String {
    let parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(" ")
    }
}

/// Creates the keyed topics that do not exist yet, with the plan's
/// partitions. An existing topic is kept as it is (its partition count is
/// checked by the evaluating engines' keys only through the plan: change
/// `--partitions` only with new topics).
pub async fn create_topics(brokers: &str, routes: &[Route]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .with_context(|| format!("cannot reach Kafka at {brokers}"))?;
    let topics: Vec<NewTopic<'_>> = routes
        .iter()
        .map(|r| NewTopic::new(&r.topic, r.partitions as i32, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .with_context(|| format!("cannot create the keyed topics at {brokers}"))?;
    for result in results {
        match result {
            Ok(topic) => eprintln!("shuffle: created topic {topic}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => anyhow::bail!("cannot create the keyed topic {topic}: {e}"),
        }
    }
    Ok(())
}

/// Runs the stage until `stop` is set or the brokers fail it for good.
pub fn run(config: &ShuffleConfig, stats: &ShuffleStats, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set(
            "auto.offset.reset",
            if config.earliest {
                "earliest"
            } else {
                "latest"
            },
        );
    if let Some(t) = config.session_timeout {
        client.set("session.timeout.ms", t.as_millis().to_string());
    }
    let consumer: BaseConsumer<Watcher> = client
        .create_with_context(Watcher {
            rebalanced: AtomicBool::new(false),
        })
        .with_context(|| format!("cannot create the consumer for {}", config.brokers))?;
    let names: Vec<&str> = config.topics.iter().map(|(t, _)| t.as_str()).collect();
    consumer
        .subscribe(&names)
        .with_context(|| format!("cannot subscribe to {names:?}"))?;
    eprintln!(
        "shuffle {}: group {} on {} -> {} (transactional id {})",
        config.writer,
        config.group,
        names.join(", "),
        config
            .routes
            .iter()
            .map(|r| format!("{} ({} partitions)", r.topic, r.partitions))
            .collect::<Vec<_>>()
            .join(", "),
        config.transactional_id(),
    );
    let mut shuffler = Shuffler {
        config,
        producer: transactional_producer(config)?,
        stats,
        newest: BTreeMap::new(),
    };
    let mut last_report = Instant::now();
    // fatal producer errors in a row without a committed transaction between
    let mut fatal_in_a_row = 0;
    while !stop.load(Ordering::Relaxed) {
        match shuffler.transaction(&consumer, stop) {
            Ok(()) => fatal_in_a_row = 0,
            Err(e) => match shuffler.producer.client().fatal_error() {
                // the broker gave the transactional id to a newer producer:
                // another instance runs under this name, and it keeps the work
                Some((code, reason))
                    if matches!(
                        code,
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::Fenced
                    ) =>
                {
                    anyhow::bail!(
                        "shuffle {}: fenced off: another instance runs with the transactional id {} \
                         (give every instance of group {} its own --id): {reason}",
                        config.writer,
                        config.transactional_id(),
                        config.group
                    );
                }
                // any other fatal error leaves the producer unusable: a new
                // one (same transactional id) aborts what the old one left
                // open, and reading starts again from the committed offsets
                Some((code, reason)) => {
                    fatal_in_a_row += 1;
                    if fatal_in_a_row > MAX_FATAL_IN_A_ROW {
                        anyhow::bail!(
                            "shuffle {}: the transactional producer failed for good {} times in a row, last: {code:?}: {reason}",
                            config.writer,
                            fatal_in_a_row
                        );
                    }
                    tracing::warn!(error = %e, ?code, %reason, "shuffle: the transactional producer failed for good; starting a new one and reading again from the committed offsets");
                    stats.aborted.fetch_add(1, Ordering::Relaxed);
                    shuffler.renew(&consumer)?;
                }
                None if consumer.context().rebalanced.load(Ordering::SeqCst) => {
                    tracing::info!(
                        "shuffle: a rebalance cut the transaction short; aborting it and reading again from the committed offsets"
                    );
                    shuffler.abort(&consumer)?;
                }
                None => {
                    tracing::warn!(error = %e, "shuffle: transaction aborted; reading again from the committed offsets");
                    shuffler.abort(&consumer)?;
                }
            },
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("shuffle {}: {}", config.writer, stats.line());
        }
    }
    Ok(())
}

/// How many fatal producer errors in a row `engine shuffle` recovers from by
/// starting a new producer before it gives up (and exits non-zero).
const MAX_FATAL_IN_A_ROW: u32 = 3;

/// A producer with the instance's transactional id, its transactions
/// initialised: this fences off any older producer with the same id and
/// aborts what it left open.
fn transactional_producer(config: &ShuffleConfig) -> anyhow::Result<BaseProducer> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("transactional.id", config.transactional_id())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set(
            "message.max.bytes",
            (MAX_RECORD_BYTES + 64 * 1024).to_string(),
        )
        .create()
        .with_context(|| {
            format!(
                "cannot create the transactional producer for {}",
                config.brokers
            )
        })?;
    producer.init_transactions(TRANSACTION_TIMEOUT).with_context(|| {
        format!(
            "cannot start transactions at {} as {} (the broker needs transaction.state.log.* settings)",
            config.brokers,
            config.transactional_id()
        )
    })?;
    Ok(producer)
}

struct Shuffler<'a> {
    config: &'a ShuffleConfig,
    producer: BaseProducer,
    stats: &'a ShuffleStats,
    /// per source stream (table, partition), the newest event time read
    /// from it in committed or current transactions: its watermark
    newest: BTreeMap<(Table, i32), i64>,
}

impl Shuffler<'_> {
    /// One transaction: read for `commit_every`, write, commit. A rebalance
    /// seen during it aborts it.
    fn transaction(
        &mut self,
        consumer: &BaseConsumer<Watcher>,
        stop: &AtomicBool,
    ) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.config.commit_every;
        let mut read: BTreeSet<(Table, i32)> = BTreeSet::new();
        let mut open = false;
        consumer.context().rebalanced.store(false, Ordering::SeqCst);
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Some(message) = consumer.poll(wait.min(Duration::from_millis(100))) else {
                continue;
            };
            if consumer.context().rebalanced.load(Ordering::SeqCst) {
                if open {
                    return Err(KafkaError::Canceled);
                }
                consumer.context().rebalanced.store(false, Ordering::SeqCst);
            }
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "shuffle: Kafka consumer error");
                    continue;
                }
            };
            if !open {
                self.producer.begin_transaction()?;
                open = true;
            }
            let Some(table) = self
                .config
                .topics
                .iter()
                .find(|(t, _)| t == message.topic())
                .map(|(_, table)| *table)
            else {
                continue;
            };
            self.stats.messages.fetch_add(1, Ordering::Relaxed);
            let partition = message.partition();
            read.insert((table, partition));
            let decoded = ingest::decode::decode_any(table, message.payload().unwrap_or_default());
            match decoded {
                Ok(d) => self.send_rows(table, partition, &d.batch)?,
                Err(e) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        origin = %format!("{}/{}/{}", message.topic(), partition, message.offset()),
                        error = %e,
                        "shuffle: a message that does not decode is skipped"
                    );
                }
            }
        }
        if !open {
            return Ok(());
        }
        if consumer.context().rebalanced.load(Ordering::SeqCst) {
            return Err(KafkaError::Canceled);
        }
        self.send_watermarks(&read)?;
        // the next offset to read of every partition read from (a partition
        // assigned and not read yet has none)
        let mut position = TopicPartitionList::new();
        for e in consumer.position()?.elements() {
            if let Offset::Offset(o) = e.offset() {
                position.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
        let group = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
        self.producer
            .send_offsets_to_transaction(&position, &group, TRANSACTION_TIMEOUT)?;
        self.producer.commit_transaction(TRANSACTION_TIMEOUT)?;
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a failed or cut-short transaction: abort it and read again from
    /// the committed offsets. The watermarks start afresh from the rows read
    /// again.
    ///
    /// The records still queued or in flight are purged first and their
    /// delivery reports served here: librdkafka's abort waits for those
    /// reports and, on a producer nobody else polls, would otherwise wait
    /// out its whole timeout (30 s without a record reaching the
    /// evaluating engines, which then take the source for idle).
    ///
    /// An abort that fails for any reason but "no transaction" (it timed
    /// out, the coordinator is slow) leaves the producer with an abort in
    /// progress, which every later call then conflicts with: a new producer
    /// with the same transactional id takes its place (its start fences the
    /// old one and aborts what it left open).
    fn abort(&mut self, consumer: &BaseConsumer<Watcher>) -> anyhow::Result<()> {
        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        if let Err(e) = self.producer.flush(PURGE_TIMEOUT) {
            tracing::debug!(error = %e, left = self.producer.in_flight_count(), "shuffle: purged records still unreported");
        }
        match self.producer.abort_transaction(TRANSACTION_TIMEOUT) {
            Ok(()) => {}
            Err(KafkaError::Transaction(e)) if e.code() == RDKafkaErrorCode::State => {
                tracing::debug!(error = %e, "shuffle: nothing to abort");
            }
            Err(e) => {
                tracing::warn!(error = %e, "shuffle: the abort failed; starting a new producer");
                return self.renew(consumer);
            }
        }
        self.rewind(consumer);
        Ok(())
    }

    /// A new producer in place of one that cannot go on, under the same
    /// transactional id (its start fences the old one off and aborts what it
    /// left open), then back to the committed offsets.
    fn renew(&mut self, consumer: &BaseConsumer<Watcher>) -> anyhow::Result<()> {
        self.producer = transactional_producer(self.config)?;
        self.rewind(consumer);
        Ok(())
    }

    /// Back to the committed offsets of every assigned partition; the
    /// watermarks start afresh from the rows read again.
    fn rewind(&mut self, consumer: &BaseConsumer<Watcher>) {
        self.newest.clear();
        let rewound = consumer.assignment().and_then(|assigned| {
            let committed = consumer.committed_offsets(assigned, TRANSACTION_TIMEOUT)?;
            let mut to = TopicPartitionList::new();
            for e in committed.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ if self.config.earliest => Offset::Beginning,
                    _ => Offset::End,
                };
                to.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
            consumer.seek_partitions(to, TRANSACTION_TIMEOUT)
        });
        if let Err(e) = rewound {
            tracing::warn!(error = %e, "shuffle: cannot rewind to the committed offsets");
        }
        consumer.context().rebalanced.store(false, Ordering::SeqCst);
    }

    /// The rows of one message to every route that reads its table.
    fn send_rows(
        &mut self,
        table: Table,
        partition: i32,
        batch: &RecordBatch,
    ) -> Result<(), KafkaError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.stats
            .rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if let Ok(times) = crate::window::times(batch)
            && let Some(newest) = times.iter().flatten().max()
        {
            // no watermark past the wall clock: a forged time moves nothing
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            let entry = self.newest.entry((table, partition)).or_insert(i64::MIN);
            *entry = (*entry).max(newest.min(now));
        }
        let origin = Origin {
            writer: &self.config.writer,
            table,
            partition,
        };
        for route in &self.config.routes {
            let Some(columns) = route.columns.get(&table) else {
                continue;
            };
            let kept = project(batch, columns.as_ref());
            for (target, rows) in split(&kept, route) {
                for record in encode(origin, &rows) {
                    self.send(&route.topic, target, &record?)?;
                }
            }
        }
        Ok(())
    }

    /// A watermark for each source partition read, to every partition of
    /// every route reading its table.
    fn send_watermarks(&mut self, read: &BTreeSet<(Table, i32)>) -> Result<(), KafkaError> {
        for &(table, partition) in read {
            let Some(&newest) = self.newest.get(&(table, partition)) else {
                continue;
            };
            let record = shuffled::encode_watermark(
                Origin {
                    writer: &self.config.writer,
                    table,
                    partition,
                },
                newest,
            );
            for route in &self.config.routes {
                if !route.columns.contains_key(&table) {
                    continue;
                }
                for target in 0..route.partitions as i32 {
                    self.send(&route.topic, target, &record)?;
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, topic: &str, partition: i32, payload: &[u8]) -> Result<(), KafkaError> {
        loop {
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(payload);
            match self.producer.send(record) {
                Ok(()) => {
                    self.stats.records.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// The columns of `batch` a route carries (all when `None`).
fn project(batch: &RecordBatch, columns: Option<&BTreeSet<String>>) -> RecordBatch {
    let Some(columns) = columns else {
        return batch.clone();
    };
    let indices: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(f.name()))
        .map(|(i, _)| i)
        .collect();
    batch.project(&indices).unwrap_or_else(|_| batch.clone())
}

/// The rows of `batch` per partition of the route, by their key's value.
fn split(batch: &RecordBatch, route: &Route) -> Vec<(i32, RecordBatch)> {
    let Some(key) = route
        .key_column
        .as_deref()
        .and_then(|k| batch.column_by_name(k))
    else {
        // the global topic, or a batch without the key column: one partition
        let p = if route.key_column.is_some() {
            shuffled::partition_of(None, route.partitions)
        } else {
            0
        };
        return vec![(p, batch.clone())];
    };
    let key = text(key);
    let mut rows: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let value = key.as_ref().and_then(|k| {
            let k = k.as_string::<i32>();
            k.is_valid(i).then(|| k.value(i).as_bytes())
        });
        rows.entry(shuffled::partition_of(value, route.partitions))
            .or_default()
            .push(i as u32);
    }
    if rows.len() == 1 {
        let (p, _) = rows.pop_first().expect("one partition");
        return vec![(p, batch.clone())];
    }
    rows.into_iter()
        .filter_map(|(p, indices)| {
            take_record_batch(batch, &UInt32Array::from(indices))
                .ok()
                .map(|b| (p, b))
        })
        .collect()
}

/// The key column as UTF-8 text (keys are text in the schema; anything else
/// is cast, and `None` when it cannot be).
fn text(column: &ArrayRef) -> Option<ArrayRef> {
    match column.data_type() {
        DataType::Utf8 => Some(column.clone()),
        _ => arrow::compute::cast(column, &DataType::Utf8).ok(),
    }
}

/// Records of at most [`ROWS_PER_RECORD`] rows and [`MAX_RECORD_BYTES`].
fn encode(origin: Origin<'_>, rows: &RecordBatch) -> Vec<Result<Vec<u8>, KafkaError>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.num_rows() {
        let mut len = ROWS_PER_RECORD.min(rows.num_rows() - start);
        loop {
            let slice = rows.slice(start, len);
            match shuffled::encode_rows(origin, &slice) {
                Ok(record) if record.len() > MAX_RECORD_BYTES && len > 1 => len /= 2,
                Ok(record) => {
                    out.push(Ok(record));
                    break;
                }
                Err(e) => {
                    out.push(Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::InvalidMessage,
                    )));
                    tracing::error!(error = %e, "shuffle: rows that do not encode as Arrow IPC");
                    break;
                }
            }
        }
        start += len;
    }
    out
}
