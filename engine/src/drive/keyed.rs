//! `engine evaluate`: an evaluating engine of the scaled-out form (issue 18).
//!
//! Several of these share the keyed topics that `engine shuffle` writes, in
//! one consumer group: Kafka gives each a set of partitions. A partition of a
//! keyed topic holds every row of its key values, so the topic's rules run
//! on it alone and find exactly what they find on all rows; each partition
//! is a *task* of its own (as in Kafka Streams): its own evaluator, with the
//! topic's share of the pack, its own watermark and its own offsets. A
//! partition moved to another engine by a rebalance moves as a whole: the
//! new owner starts a task from the committed offset and its resume point
//! (`otelguard.resume_ns=` in the commit's metadata), and evaluates no window
//! the former owner had committed. Windows the former owner evaluated but
//! had not committed are evaluated again: their alerts and KPI values come
//! again, with the same identity (rule or KPI, window, entity), which the
//! BI store and Alertmanager take as the same.
//!
//! **Event time.** A task's streams are the source partitions of the OTLP
//! topics, as for `engine run --kafka`: rows carry the partition they were
//! read from, and the writers' watermark records move a stream on when none
//! of its rows fall in this partition. Every source partition is expected
//! from the start, so a window closes only when every one has passed it or
//! has been quiet for `--idle` (a writer gone, or with nothing to read).
//! With nothing read at all for `--idle`, the wall clock moves event time
//! on, as in `engine run`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ingest::Table;
use ingest::decode::shuffled::{self, Shuffled};
use ingest::source::kafka::{RESUME_METADATA, parse_resume};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::evaluator::{Evaluator, Output};
use crate::rules::RuleSet;
use crate::rules::topology::Route;
use crate::sinks::stdout::{Format, Printer};
use crate::window::{Idleness, Stream};

/// What `engine evaluate` runs with.
#[derive(Debug, Clone)]
pub struct EvaluateConfig {
    pub brokers: String,
    pub group: String,
    pub group_instance_id: Option<String>,
    pub session_timeout: Option<Duration>,
    pub rules_dir: PathBuf,
    /// the keyed topics read, with their rules
    pub routes: Vec<Route>,
    /// the OTLP topics the shuffle reads: their partitions are the streams
    pub source_topics: Vec<(String, Table)>,
    pub earliest: bool,
    pub lateness_ns: i64,
    pub idle: Duration,
    pub clock_skew: Duration,
    pub format: Format,
}

/// Partitions taken away by rebalances, for the loop to drop their tasks.
struct Handover {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for Handover {}

impl ConsumerContext for Handover {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => eprintln!("evaluate: assigned {}", listed(list)),
            Rebalance::Revoke(list) => {
                eprintln!("evaluate: revoked {}", listed(list));
                self.revoked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(
                        list.elements()
                            .iter()
                            .map(|e| (e.topic().to_string(), e.partition())),
                    );
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

/// One keyed partition's evaluation.
struct Task {
    ev: Evaluator,
    /// offsets read and not committed, with the newest event time of their rows
    waiting: VecDeque<(i64, i64)>,
}

/// Counts for the progress and last lines.
#[derive(Debug, Default)]
struct Counts {
    records: u64,
    rows: u64,
    watermarks: u64,
    rejected: u64,
    outputs: u64,
    tasks_started: u64,
}

struct Evaluating<'a> {
    config: &'a EvaluateConfig,
    consumer: StreamConsumer<Handover>,
    /// per OTLP topic's table, its partitions
    sources: Vec<(Table, i32)>,
    tasks: BTreeMap<(String, i32), Task>,
    printer: Printer<Box<dyn Write + Send>>,
    counts: Counts,
}

/// Runs until SIGINT or SIGTERM; then evaluates the windows that are final,
/// commits, and leaves the group.
pub async fn run(config: EvaluateConfig) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        // partitions move one by one: the others keep their tasks
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "auto.offset.reset",
            if config.earliest {
                "earliest"
            } else {
                "latest"
            },
        );
    if let Some(id) = &config.group_instance_id {
        client.set("group.instance.id", id);
    }
    if let Some(t) = config.session_timeout {
        client.set("session.timeout.ms", t.as_millis().to_string());
    }
    let consumer: StreamConsumer<Handover> = client
        .create_with_context(Handover {
            revoked: Mutex::new(Vec::new()),
        })
        .with_context(|| format!("cannot create a Kafka consumer for {}", config.brokers))?;
    let mut sources = Vec::new();
    for (topic, table) in &config.source_topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| {
                format!(
                    "cannot read the partitions of {topic} at {}",
                    config.brokers
                )
            })?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            tracing::warn!(
                topic,
                "the OTLP topic has no partition yet: its rows are not waited for"
            );
        }
        sources.extend((0..partitions).map(|p| (*table, p)));
    }
    let topics: Vec<&str> = config.routes.iter().map(|r| r.topic.as_str()).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("cannot subscribe to {topics:?}"))?;
    eprintln!(
        "evaluate: group {} on {} ({} source partitions)",
        config.group,
        topics.join(", "),
        sources.len()
    );
    let mut engine = Evaluating {
        config: &config,
        consumer,
        sources,
        tasks: BTreeMap::new(),
        printer: Printer::new(Box::new(std::io::stdout()), config.format),
        counts: Counts::default(),
    };
    engine.run().await
}

impl Evaluating<'_> {
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_record = Instant::now();
        let mut last_report = Instant::now();
        loop {
            tokio::select! {
                message = self.consumer.recv() => {
                    let (topic, partition, offset, payload) = match message {
                        Ok(m) => (
                            m.topic().to_string(),
                            m.partition(),
                            m.offset(),
                            m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "Kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    self.drop_revoked();
                    last_record = Instant::now();
                    self.take(&topic, partition, offset, &payload).await?;
                }
                _ = tick.tick() => {
                    self.drop_revoked();
                    let quiet = last_record.elapsed() >= self.config.idle;
                    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                    let keys: Vec<(String, i32)> = self.tasks.keys().cloned().collect();
                    for key in keys {
                        if let Some(task) = self.tasks.get_mut(&key)
                            && quiet
                            && task.ev.watermark().is_some()
                        {
                            task.ev.advance(now);
                        }
                        self.evaluate(&key, false).await?;
                    }
                    if last_report.elapsed() >= Duration::from_secs(10) {
                        last_report = Instant::now();
                        eprintln!("evaluate: {}", self.line());
                    }
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        // the final windows only: open ones are read again from the committed offsets
        let keys: Vec<(String, i32)> = self.tasks.keys().cloned().collect();
        for key in keys {
            self.evaluate(&key, true).await?;
        }
        eprintln!("evaluate: {}", self.line());
        Ok(())
    }

    fn line(&self) -> String {
        let c = &self.counts;
        let late: u64 = self.tasks.values().map(|t| t.ev.stats().late_rows).sum();
        format!(
            "{} partitions evaluated ({} tasks started); {} records read: {} rows, {} watermarks, {} that do not decode; {} rows late (tasks of now); {} outputs",
            self.tasks.len(),
            c.tasks_started,
            c.records,
            c.rows,
            c.watermarks,
            c.rejected,
            late,
            c.outputs
        )
    }

    /// Drops the tasks of partitions taken away: their windows are the new
    /// owner's now, read again from the committed offsets.
    fn drop_revoked(&mut self) {
        let revoked: Vec<(String, i32)> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for key in revoked {
            if self.tasks.remove(&key).is_some() {
                tracing::info!(topic = key.0, partition = key.1, "a partition handed over");
            }
        }
    }

    /// One record of a keyed partition.
    async fn take(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let key = (topic.to_string(), partition);
        if !self.tasks.contains_key(&key) {
            let task = self.start(topic, partition).await?;
            self.tasks.insert(key.clone(), task);
        }
        self.counts.records += 1;
        let task = self.tasks.get_mut(&key).expect("a task for the partition");
        let newest = match shuffled::decode(payload) {
            Ok(Shuffled::Rows {
                partition: source,
                decoded,
                ..
            }) => {
                let stream = Stream {
                    table: decoded.table,
                    partition: source,
                };
                self.counts.rows += decoded.batch.num_rows() as u64;
                let newest = crate::window::times(&decoded.batch)
                    .ok()
                    .and_then(|t| t.iter().flatten().max())
                    .unwrap_or(i64::MIN);
                if let Err(e) = task.ev.push_from(stream, decoded.batch) {
                    tracing::error!(error = %e, origin = %format!("{topic}/{partition}/{offset}"), "rows skipped");
                }
                newest
            }
            Ok(Shuffled::Watermark {
                table,
                partition: source,
                newest_ns,
                ..
            }) => {
                self.counts.watermarks += 1;
                task.ev.observe_source(
                    Stream {
                        table,
                        partition: source,
                    },
                    newest_ns,
                );
                i64::MIN
            }
            Err(e) => {
                self.counts.rejected += 1;
                tracing::warn!(origin = %format!("{topic}/{partition}/{offset}"), error = %e, "a keyed record that does not decode is skipped");
                i64::MIN
            }
        };
        task.waiting.push_back((offset, newest));
        self.evaluate(&key, false).await
    }

    /// A task for a partition newly read: the topic's rules, every source
    /// partition expected, and the resume point committed with its offset.
    async fn start(&mut self, topic: &str, partition: i32) -> anyhow::Result<Task> {
        let route = self
            .config
            .routes
            .iter()
            .find(|r| r.topic == topic)
            .with_context(|| {
                format!("a record from {topic}, which is not a keyed topic of the pack")
            })?;
        let ids: &BTreeSet<String> = &route.rules;
        let set = RuleSet::load_matching(&self.config.rules_dir, |d| ids.contains(&d.id))
            .await
            .with_context(|| format!("cannot load the rules of {topic}"))?;
        let mut ev = Evaluator::new(set, self.config.lateness_ns)
            .with_idleness(Idleness::WallClock(self.config.idle))
            .with_future_limit(self.config.clock_skew);
        for &(table, p) in &self.sources {
            if route.columns.contains_key(&table) {
                ev.expect_stream(Stream {
                    table,
                    partition: p,
                });
            }
        }
        let mut asked = TopicPartitionList::new();
        asked.add_partition(topic, partition);
        match self
            .consumer
            .committed_offsets(asked, Duration::from_secs(10))
        {
            Ok(committed) => {
                for e in committed.elements() {
                    if let Some(ns) = parse_resume(e.metadata()) {
                        ev.resume_from(ns);
                        eprintln!(
                            "evaluate: {topic}/{partition} resumes from {}: windows that start before it were evaluated by its former owner",
                            crate::alerts::rfc3339(ns)
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, topic, partition, "cannot read the resume point; every window read is evaluated")
            }
        }
        self.counts.tasks_started += 1;
        Ok(Task {
            ev,
            waiting: VecDeque::new(),
        })
    }

    /// Evaluates a task's final windows if any, prints the outputs and
    /// commits the offsets whose rows are all in evaluated windows.
    async fn evaluate(&mut self, key: &(String, i32), sync: bool) -> anyhow::Result<()> {
        let Some(task) = self.tasks.get_mut(key) else {
            return Ok(());
        };
        if task.ev.has_news() {
            let out: Vec<Output> = task.ev.evaluate().await;
            self.counts.outputs += out.len() as u64;
            self.printer
                .print(&out)
                .context("cannot write the outputs to stdout")?;
        }
        let Some(done) = task.ev.evaluated_upto() else {
            return Ok(());
        };
        let mut last = None;
        while let Some(&(offset, newest)) = task.waiting.front() {
            if newest >= done {
                break;
            }
            last = Some(offset);
            task.waiting.pop_front();
        }
        let Some(offset) = last else {
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        let mut elem = list.add_partition(&key.0, key.1);
        elem.set_offset(Offset::Offset(offset + 1))?;
        elem.set_metadata(format!("{RESUME_METADATA}{done}"));
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&list, mode) {
            tracing::warn!(error = %e, topic = key.0, partition = key.1, "cannot commit; the partition's windows will be read again after a handover");
        }
        Ok(())
    }
}
