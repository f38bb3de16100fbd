//! The live loop behind `engine run`.
//!
//! Rows come from the built-in OTLP receiver (the default: no Collector, no
//! Kafka) or from the Collector's Kafka topics. Every output goes to the API,
//! and through the sinks' fan-out (never awaited) to stdout as a JSON line and
//! to Alertmanager, a webhook, a Kafka topic and PostgreSQL when they are given.
//! When no row arrives for a while, the wall clock moves event time on, so
//! that windows close and incidents resolve while the shop is quiet.
//! On SIGHUP or `POST /api/reload` the rules folder is read and checked
//! again, and taken only if every rule passes ([`Evaluator::reload`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use ingest::{RejectCounts, Table};
use tokio::sync::mpsc;

use super::{ApiConfig, load_rules};
use crate::api::{self, Board};
use crate::evaluator::{Evaluator, Output};
use crate::rules::{RuleSet, Which};
use crate::sinks::FanOut;
use crate::sinks::alertmanager::{Alertmanager, AlertmanagerSink};
use crate::sinks::stdout::{Format, StdoutSink};
use crate::sinks::webhook::{Webhook, WebhookFormat};

/// What the live loop runs: `engine run`'s arguments, parsed and checked.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// the folder of rule and KPI files (read again on a reload)
    pub rules_dir: PathBuf,
    /// the built-in OTLP receiver, used when `kafka` is `None`
    pub receiver: ingest::source::otlp_receiver::ReceiverConfig,
    /// consume the Collector's Kafka topics from these brokers instead
    pub kafka: Option<String>,
    /// the Kafka consumer group
    pub group: String,
    /// where a group with no committed offset starts reading a partition
    pub start_at: StartAt,
    /// static group membership (Kafka's group.instance.id)
    pub group_instance_id: Option<String>,
    /// how long the broker waits for a silent member (None: librdkafka's 45 s)
    pub session_timeout: Option<Duration>,
    /// the topics of spans, logs and metrics
    pub spans_topic: String,
    pub logs_topic: String,
    pub metrics_topic: String,
    /// an Alertmanager's base URL
    pub alertmanager: Option<String>,
    /// a webhook's URL (http only), and its body's shape
    pub webhook: Option<String>,
    pub webhook_format: WebhookFormat,
    /// the BI store (PostgreSQL URL): a durable sink, the viewer's dashboards
    /// and the incidents restored at start
    pub postgres: Option<String>,
    /// the Kafka topic of alert state changes, and its brokers (default: `kafka`'s)
    pub alerts_topic: Option<String>,
    pub alerts_brokers: Option<String>,
    /// each sink's queue, in outputs
    pub sink_queue: usize,
    /// where the API, the viewer and /metrics listen
    pub api: ApiConfig,
    /// how late a row may arrive and still count
    pub lateness_ns: i64,
    /// where messages that do not decode are written
    pub dead_letter: Option<PathBuf>,
    /// after this long with no row, the wall clock moves event time on
    pub idle: Duration,
    /// rows dated more than this ahead of the wall clock are dropped
    pub clock_skew: Duration,
    /// rows held for open windows at most
    pub max_buffered_rows: usize,
    /// open incidents per rule at most
    pub max_incidents: usize,
    /// how often monotone rules run over the open windows (None: never)
    pub early_every: Option<Duration>,
    /// what Kafka commits wait for, so what a restart reads again
    pub resume: Resume,
}

/// What Kafka offset commits wait for (`--resume`), and so what a restart
/// reads again. Every commit carries its resume point, the event time from
/// which every row is after the committed offsets; a restart evaluates no
/// window that starts before it ([`Evaluator::resume_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// every window of every rule and KPI: a restart reads again as far back
    /// as the longest open window (15 minutes for the pack's funnel), and
    /// every KPI window is whole
    #[default]
    All,
    /// the windows of alerting rules and of kept KPIs only: a restart reads
    /// again what the alert rules' open windows hold (a minute or so); a KPI
    /// window open at the stop is not written (its first rows are not read
    /// again), and the log says from when
    Alerts,
}

/// Where a new consumer group starts (`--start-at`), as the Kafka source
/// takes it; without the `kafka` feature, the same words are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// milliseconds since the epoch
    Time(i64),
}

#[cfg(feature = "kafka")]
impl From<StartAt> for ingest::source::kafka::StartAt {
    fn from(start: StartAt) -> Self {
        match start {
            StartAt::Earliest => ingest::source::kafka::StartAt::Earliest,
            StartAt::Latest => ingest::source::kafka::StartAt::Latest,
            StartAt::Time(ms) => ingest::source::kafka::StartAt::Time(ms),
        }
    }
}

/// The Kafka source, or with no `kafka` feature a type that has no value, so
/// that the live loop reads the same either way and `--kafka` is refused.
#[cfg(feature = "kafka")]
mod kafka {
    pub use ingest::source::kafka::{KafkaSource as Source, OffsetsUpTo};
}
#[cfg(not(feature = "kafka"))]
mod kafka {
    /// No Kafka source can exist in this build.
    pub enum Source {}

    impl Source {
        pub fn assignment(&self) -> Vec<String> {
            match *self {}
        }

        pub fn lag(&self) -> Vec<crate::api::KafkaLag> {
            match *self {}
        }

        pub fn is_live(&self) -> bool {
            match *self {}
        }

        pub fn commit(&self, _: &OffsetsUpTo, _: bool) -> Result<(), std::convert::Infallible> {
            match *self {}
        }

        pub fn resume_points(
            &self,
            _: std::time::Duration,
        ) -> Result<Vec<(String, i32, Option<i64>)>, std::convert::Infallible> {
            match *self {}
        }
    }

    /// Offsets to commit: none are ever taken in this build.
    #[derive(Debug, Default)]
    pub struct OffsetsUpTo {}

    impl OffsetsUpTo {
        pub fn mark_at(&mut self, _: std::sync::Arc<str>, _: i32, _: i64) {}

        pub fn is_empty(&self) -> bool {
            true
        }

        pub fn merge(&mut self, _: &OffsetsUpTo) {}

        pub fn with_resume(self, _: i64) -> Self {
            self
        }
    }
}

/// One batch of rows from a live source.
pub struct Incoming {
    pub table: Table,
    /// no rows for a message that did not decode (still to be committed)
    pub batch: Option<RecordBatch>,
    /// where it came from in Kafka, so its offset is committed once its effects are durable
    pub kafka: Option<(Arc<str>, i32, i64)>,
}

/// A Kafka topic and partition.
type Partition = (Arc<str>, i32);

/// Entries of the commit queue at most ([`Uncommitted`]): about 3 MB.
const COMMIT_QUEUE_CAP: usize = 100_000;

/// Kafka offsets waiting for their rows' windows to be evaluated and the
/// resulting alerts delivered: per partition, in order, (offset, newest row
/// time); then, once evaluated, with the sequence number of the last batch of
/// outputs handed to the sinks, until every durable sink has delivered it.
///
/// At most `cap` entries wait in each of the two queues (long windows at a
/// high rate, or a durable sink down for long, would grow them without end).
/// At the cap a new entry is folded into the last one of its queue: a
/// message's offset joins the one before it in its partition (committed
/// when both messages' rows are evaluated), an evaluated set joins the one
/// before it (committed when the sinks have delivered both). Nothing is
/// committed early and nothing is lost; commits come later and coarser.
/// Counted in `folded` (`otelguard_commit_queue_folded_total`).
struct Uncommitted {
    partitions: std::collections::BTreeMap<Partition, std::collections::VecDeque<(i64, i64)>>,
    evaluated: std::collections::VecDeque<(u64, kafka::OffsetsUpTo)>,
    /// entries in `partitions`, across partitions
    waiting: usize,
    cap: usize,
    folded: u64,
}

impl Default for Uncommitted {
    fn default() -> Self {
        Uncommitted::with_cap(COMMIT_QUEUE_CAP)
    }
}

impl Uncommitted {
    fn with_cap(cap: usize) -> Self {
        Uncommitted {
            partitions: Default::default(),
            evaluated: Default::default(),
            waiting: 0,
            cap: cap.max(1),
            folded: 0,
        }
    }

    fn add(&mut self, topic: Arc<str>, partition: i32, offset: i64, newest: i64) {
        let queue = self.partitions.entry((topic, partition)).or_default();
        if self.waiting >= self.cap
            && let Some(last) = queue.back_mut()
        {
            *last = (offset, last.1.max(newest));
            self.folded += 1;
            return;
        }
        queue.push_back((offset, newest));
        self.waiting += 1;
    }

    /// Queues offsets whose windows are evaluated, to be committed once the
    /// sinks have delivered up to batch `seq`.
    fn evaluated(&mut self, seq: u64, offsets: kafka::OffsetsUpTo) {
        if self.evaluated.len() >= self.cap
            && let Some((last_seq, last)) = self.evaluated.back_mut()
        {
            *last_seq = seq;
            last.merge(&offsets);
            self.folded += 1;
            return;
        }
        self.evaluated.push_back((seq, offsets));
    }

    /// Takes the offsets, from the front of each partition, whose rows are all
    /// older than `done` (every window they are in was evaluated), with
    /// `done` as their resume point: every row from then on is after them.
    fn take_done(&mut self, done: i64) -> kafka::OffsetsUpTo {
        let mut out = kafka::OffsetsUpTo::default();
        for ((topic, partition), queue) in &mut self.partitions {
            while let Some(&(offset, newest)) = queue.front() {
                if newest >= done {
                    break;
                }
                out.mark_at(topic.clone(), *partition, offset);
                queue.pop_front();
                self.waiting -= 1;
            }
        }
        out.with_resume(done)
    }
}

/// How long the sinks get at the end to deliver what they hold.
const SINKS_GRACE: Duration = Duration::from_secs(10);

/// Everything outputs go to: the API's board at once, and the sinks through
/// their fan-out, which never waits for a sink (`sinks::fanout`).
struct Delivery {
    board: Arc<Mutex<Board>>,
    sinks: FanOut,
}

impl Delivery {
    /// The sinks the arguments name: stdout always; Alertmanager, the webhook,
    /// the Kafka alerts topic and PostgreSQL when given. A URL a sink cannot use is an error here.
    fn start(
        args: &LiveConfig,
        set: &crate::rules::RuleSet,
        board: Arc<Mutex<Board>>,
    ) -> anyhow::Result<Delivery> {
        let mut sinks = FanOut::new();
        let queue = args.sink_queue;
        sinks.add(Box::new(StdoutSink::new(Format::Json)), queue);
        if let Some(url) = &args.alertmanager {
            sinks.add(
                Box::new(AlertmanagerSink::new(Alertmanager::new(url))),
                queue,
            );
        }
        if let Some(url) = &args.webhook {
            sinks.add(Box::new(Webhook::new(url, args.webhook_format)?), queue);
        }
        if let Some(topic) = &args.alerts_topic {
            let Some(brokers) = args.alerts_brokers.as_ref().or(args.kafka.as_ref()) else {
                anyhow::bail!(
                    "--alerts-topic {topic}: which brokers? give --alerts-brokers HOST:PORT (or --kafka)"
                );
            };
            #[cfg(feature = "kafka")]
            sinks.add(
                Box::new(crate::sinks::kafka::KafkaAlerts::new(brokers, topic)?),
                queue,
            );
            #[cfg(not(feature = "kafka"))]
            return Err(
                super::kafka_not_built().context(format!("--alerts-topic {topic} on {brokers}"))
            );
        }
        match &args.postgres {
            #[cfg(feature = "postgres")]
            Some(url) => {
                let defs = set.rules.iter().map(|r| &r.def);
                let sink = crate::sinks::postgres::BiStoreSink::start(url, defs)?;
                sinks.add(Box::new(sink), queue);
            }
            #[cfg(not(feature = "postgres"))]
            Some(_) => super::postgres::start(args.postgres.as_deref(), set).map(|_| ())?,
            None => {}
        }
        Ok(Delivery { board, sinks })
    }

    /// Hands outputs to the API and to every sink; never waits for a sink.
    fn deliver(&mut self, outputs: &[Output]) {
        if outputs.is_empty() {
            return;
        }
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(outputs);
        self.sinks.send(outputs);
    }
}

/// Declares every partition assigned to the consumer as a stream of its table.
fn expect_assigned(ev: &mut Evaluator, source: &kafka::Source, args: &LiveConfig) {
    for assigned in source.assignment() {
        let Some((topic, partition)) = assigned.rsplit_once('/') else {
            continue;
        };
        let Ok(partition) = partition.parse() else {
            continue;
        };
        let table = if topic == args.spans_topic {
            Table::Spans
        } else if topic == args.logs_topic {
            Table::Logs
        } else if topic == args.metrics_topic {
            Table::Metrics
        } else {
            continue;
        };
        ev.expect_stream(crate::window::Stream { table, partition });
    }
}

/// The newest event time in a batch.
fn newest_time(batch: &RecordBatch) -> Option<i64> {
    crate::window::times(batch).ok()?.iter().flatten().max()
}

/// Commits the Kafka offsets whose effects are durable: all their rows are in
/// evaluated windows, and every durable sink has delivered the outputs handed
/// to it up to then (a sink that dropped outputs never does: those offsets
/// wait for a restart to read them again).
fn commit(
    kafka: &Option<Arc<kafka::Source>>,
    uncommitted: &mut Uncommitted,
    ev: &Evaluator,
    delivery: &Delivery,
    resume: Resume,
    sync: bool,
) {
    let done = match resume {
        Resume::All => ev.evaluated_upto(),
        Resume::Alerts => ev.alerts_evaluated_upto(),
    };
    let (Some(source), Some(done)) = (kafka, done) else {
        return;
    };
    tracing::trace!(
        done,
        waiting = uncommitted
            .partitions
            .values()
            .map(|q| q.len())
            .sum::<usize>(),
        "commit check"
    );
    let evaluated = uncommitted.take_done(done);
    if !evaluated.is_empty() {
        // their outputs are in the batches handed to the sinks so far
        uncommitted.evaluated(delivery.sinks.last_seq(), evaluated);
    }
    let delivered = delivery.sinks.delivered_upto();
    let mut offsets = kafka::OffsetsUpTo::default();
    while let Some((seq, _)) = uncommitted.evaluated.front()
        && *seq <= delivered
        && let Some((_, done)) = uncommitted.evaluated.pop_front()
    {
        offsets.merge(&done);
    }
    if offsets.is_empty() {
        return;
    }
    tracing::debug!(offsets = ?offsets, "committing Kafka offsets");
    if let Err(e) = source.commit(&offsets, sync) {
        tracing::error!(error = %e, "cannot commit Kafka offsets; they will be read again after a restart");
    }
}

/// At the first message: the resume points committed with the group's
/// offsets of the assigned partitions (see [`Resume`]). Windows that start
/// before the latest were evaluated before the stop, or are KPI windows that
/// cannot be whole again: none is evaluated again.
fn resume_after_restart(ev: &mut Evaluator, source: &kafka::Source, mode: Resume) {
    let points = match source.resume_points(Duration::from_secs(10)) {
        Ok(points) => points,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the resume points committed before; every window read is evaluated");
            return;
        }
    };
    let Some(resume) = points.iter().filter_map(|(_, _, r)| *r).max() else {
        return;
    };
    ev.resume_from(resume);
    let at = crate::alerts::rfc3339(resume);
    let kpis = match mode {
        Resume::All => "",
        Resume::Alerts => {
            " (--resume alerts: KPI windows open at the stop started before it and are not written)"
        }
    };
    tracing::info!(resume = %at, "resuming after a restart: windows before it were evaluated before the stop");
    eprintln!("resuming from {at}: windows that start before it are not evaluated again{kpis}");
}

/// One evaluation pass, in a span of the engine's own telemetry.
async fn evaluate(ev: &mut Evaluator) -> Vec<Output> {
    let mut span = crate::telemetry::span("engine.evaluate");
    let out = ev.evaluate().await;
    span.int("outputs", out.len() as i64);
    if let Some(w) = ev.watermark() {
        span.text("watermark", &crate::alerts::rfc3339(w));
    }
    out
}

/// On SIGINT or SIGTERM: stop taking input. The receiver stops accepting and
/// lets the requests in flight finish, and the loop goes on until their rows
/// are read; Kafka stops reading at once. Whether to leave the loop now.
fn stop(
    receiver: &mut Option<ingest::source::otlp_receiver::ReceiverHandle>,
    source_task: &tokio::task::JoinHandle<anyhow::Result<()>>,
    signal: &str,
) -> bool {
    match receiver.take() {
        Some(handle) => {
            eprintln!(
                "stopping ({signal}): no new requests; evaluating every window that holds rows"
            );
            tokio::spawn(async move {
                if let Err(e) = handle.shutdown().await {
                    tracing::error!(error = %e, "the OTLP receiver did not stop cleanly");
                }
            });
            false
        }
        None => {
            eprintln!(
                "stopping ({signal}): evaluating the final windows and committing what they hold"
            );
            source_task.abort();
            true
        }
    }
}

/// Reads the rules folder again (SIGHUP, `POST /api/reload`) and hands the
/// pack to the evaluator, which takes it only if every rule passes its check
/// (parsed and planned); the resolutions of removed or changed rules'
/// incidents go to the sinks. Logged either way, and counted.
async fn reload_rules(
    ev: &mut Evaluator,
    args: &LiveConfig,
    board: &Mutex<Board>,
    delivery: &mut Delivery,
) -> api::ReloadAnswer {
    let dir = args.rules_dir.clone();
    let started = Instant::now();
    let result = match RuleSet::load(&dir, Which::All).await {
        Ok(set) => ev.reload(set).await,
        Err(e) => Err(vec![e]),
    };
    match &result {
        Ok(done) => {
            crate::rules::snapshot::decode_what_is_read(ev.rules());
            delivery.deliver(&done.outputs);
            eprintln!(
                "rules reloaded from {}: version {} ({} kept, {} added, {} changed, {} removed) in {} ms",
                dir.display(),
                done.version,
                done.kept.len(),
                done.added.len(),
                done.changed.len(),
                done.removed.len(),
                started.elapsed().as_millis()
            );
            let dashboards = super::dashboards(&dir, args.postgres.as_deref());
            let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
            b.reloads_ok += 1;
            b.rules_version = done.version.clone();
            b.rule_errors.clear();
            match dashboards {
                Ok(d) => b.dashboards = Arc::new(d),
                Err(e) => {
                    tracing::warn!(error = %e, "the dashboards of the reloaded pack: the previous ones stay")
                }
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
            b.reloads_refused += 1;
            eprintln!(
                "rules in {} refused ({} failing); the running pack, version {}, stays",
                dir.display(),
                errors.len(),
                b.rules_version
            );
        }
    }
    result
}

/// Copies the evaluator's health and counters, and the sinks', into what the API shows.
fn refresh(
    board: &Mutex<Board>,
    ev: &Evaluator,
    counts: &RejectCounts,
    sinks: &FanOut,
    uncommitted: &Uncommitted,
) {
    let sink_stats = sinks.stats();
    let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
    b.commit_folded = uncommitted.folded;
    b.sinks = sink_stats;
    b.rules = ev.health().to_vec();
    b.open_incidents = ev
        .rules()
        .rules
        .iter()
        .zip(ev.incidents())
        .filter(|(r, _)| !r.def.is_kpi())
        .map(|(_, (rule, alerts))| (rule, alerts.incidents.len() as u64))
        .collect();
    b.stats = ev.stats();
    b.rejected = counts
        .snapshot()
        .into_iter()
        .map(|(r, n)| (r.as_str().to_string(), n))
        .collect();
}

/// The first evaluation that ran a window: logged and shown in `/metrics`
/// (`otelguard_first_evaluation_seconds`), time since the start, to measure
/// how fast a restart is back at work.
fn note_first_evaluation(
    first: &mut Option<f64>,
    started: Instant,
    ev: &Evaluator,
    board: &Mutex<Board>,
) {
    if first.is_some() || ev.stats().evaluations == 0 {
        return;
    }
    let seconds = started.elapsed().as_secs_f64();
    *first = Some(seconds);
    eprintln!("first evaluation {seconds:.2} s after start");
    board
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first_evaluation_seconds = Some(seconds);
}

/// Runs the live loop until SIGINT or SIGTERM, or until the source fails
/// (an error then, after the drain).
pub async fn run(args: LiveConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut first_evaluation = None;
    let set = load_rules(&args.rules_dir, Which::All).await?;
    // the sinks first: a URL they cannot use is an error before any input is read
    let (reloader, mut reloads) = mpsc::channel(4);
    let board = Arc::new(Mutex::new(Board {
        rule_errors: set.errors.iter().map(|e| e.to_string()).collect(),
        rules_version: set.version(),
        reloader: Some(reloader),
        dashboards: Arc::new(super::dashboards(
            &args.rules_dir,
            args.postgres.as_deref(),
        )?),
        ..Board::default()
    }));
    let mut delivery = Delivery::start(&args, &set, board.clone())?;
    crate::telemetry::watch(board.clone());
    // bind the API first: a taken port is an error at once, before any input is read
    let (listener, access) = args.api.bind(false).await?;
    let idle = args.idle;
    let skew = args.clock_skew;
    let mut ev = Evaluator::new(set, args.lateness_ns)
        .with_idleness(crate::window::Idleness::WallClock(idle))
        .with_future_limit(skew)
        .with_buffer_cap(args.max_buffered_rows)
        .with_incident_cap(args.max_incidents);
    let early_every = args.early_every;
    if let Some(every) = early_every {
        ev = ev.with_early_firing(every);
    }
    // incidents open before a restart stay open, already notified
    #[cfg(feature = "postgres")]
    if let Some(url) = &args.postgres {
        super::postgres::restore_incidents(url, &mut ev, args.max_incidents).await;
        super::postgres::restore_rollups(url, &mut ev).await;
    }
    let mut early_tick = tokio::time::interval(early_every.unwrap_or(Duration::from_secs(3600)));
    early_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    board.lock().unwrap_or_else(|e| e.into_inner()).samples = ev.samples();
    crate::rules::snapshot::decode_what_is_read(ev.rules());
    let counts = Arc::new(RejectCounts::default());
    let rejections = Arc::new(super::dead_letters(
        args.dead_letter.as_deref(),
        counts.clone(),
    )?);
    let (tx, mut rx) = mpsc::channel::<Incoming>(64);
    #[allow(unused_mut)] // assigned only where Kafka is built in
    let mut kafka: Option<Arc<kafka::Source>> = None;
    let mut uncommitted = Uncommitted::default();
    // whether the resume points committed before a restart were read (once,
    // at the first message, before any window is evaluated)
    let mut resume_read = false;

    // the source, and the task that feeds its rows in: it ends with an error
    // when the source fails, and the process then exits non-zero
    let (mut receiver, source_task): (
        Option<ingest::source::otlp_receiver::ReceiverHandle>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) = match &args.kafka {
        #[cfg(not(feature = "kafka"))]
        Some(_) => return Err(super::kafka_not_built()),
        #[cfg(feature = "kafka")]
        Some(brokers) => {
            let source_name = match &args.group_instance_id {
                Some(id) => format!("Kafka {brokers}, group {} as {id}", args.group),
                None => format!("Kafka {brokers}, group {}", args.group),
            };
            let mut config =
                ingest::source::kafka::KafkaConfig::new(brokers.clone(), args.group.clone());
            config.topics = vec![
                (args.spans_topic.clone(), Table::Spans),
                (args.logs_topic.clone(), Table::Logs),
                (args.metrics_topic.clone(), Table::Metrics),
            ];
            config.start_at = args.start_at.into();
            config.group_instance_id = args.group_instance_id.clone();
            config.session_timeout = args.session_timeout;
            let source = kafka::Source::connect(config, rejections.clone())
                .await
                .with_context(|| format!("cannot consume from Kafka at {brokers}"))?;
            let source = Arc::new(source);
            eprintln!("{source_name}");
            board.lock().unwrap_or_else(|e| e.into_inner()).source = source_name;
            kafka = Some(source.clone());
            let tx = tx.clone();
            let task = tokio::spawn(async move {
                loop {
                    let item = source.recv().await.map_err(|e| {
                        tracing::error!(error = %e, "the Kafka source stopped");
                        anyhow::Error::new(e)
                    })?;
                    let origin = Some((item.topic.clone(), item.partition, item.offset));
                    let rows = item.decoded.as_ref().ok().map(|d| d.batch.num_rows());
                    let (began, ended) = item.decoding;
                    crate::telemetry::decoded(
                        &item.topic,
                        item.partition,
                        item.offset,
                        rows,
                        began,
                        ended,
                    );
                    let batch = item.decoded.ok().map(|d| d.batch);
                    let incoming = Incoming {
                        table: item.table,
                        batch,
                        kafka: origin,
                    };
                    if tx.send(incoming).await.is_err() {
                        return Ok(());
                    }
                }
            });
            (None, task)
        }
        None => {
            let config = args.receiver.clone();
            let (rtx, mut rrx) = mpsc::channel(64);
            let handle = ingest::source::otlp_receiver::start(config, rtx, rejections.clone())
                .await
                .context("cannot start the OTLP receiver")?;
            let source = format!(
                "OTLP receiver: gRPC {} HTTP {}",
                handle.grpc_addr().map_or("off".into(), |a| a.to_string()),
                handle.http_addr().map_or("off".into(), |a| a.to_string())
            );
            eprintln!("{source}");
            board.lock().unwrap_or_else(|e| e.into_inner()).source = source;
            let tx = tx.clone();
            let task = tokio::spawn(async move {
                while let Some(r) = rrx.recv().await {
                    let r: ingest::source::otlp_receiver::Received = r;
                    let incoming = Incoming {
                        table: r.decoded.table,
                        batch: Some(r.decoded.batch),
                        kafka: None,
                    };
                    if tx.send(incoming).await.is_err() {
                        break;
                    }
                }
                Ok(())
            });
            (Some(handle), task)
        }
    };
    drop(tx);

    let api_board = board.clone();
    tokio::spawn(async move {
        if let Err(e) = api::serve_on(listener, api_board, access).await {
            tracing::error!(error = %e, "the API stopped");
        }
    });

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_row = Instant::now();
    let mut behind_since: Option<Instant> = None;
    let mut stopping = false;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break };
                last_row = Instant::now();
                let newest = item.batch.as_ref().and_then(newest_time).unwrap_or(i64::MIN);
                if let (Some((topic, partition, _)), Some(source)) = (&item.kafka, &kafka)
                    && !uncommitted.partitions.contains_key(&(topic.clone(), *partition))
                {
                    // a partition heard from for the first time: before its rows
                    // count, every assigned partition holds the watermark until it speaks
                    expect_assigned(&mut ev, source, &args);
                    if !resume_read {
                        resume_read = true;
                        resume_after_restart(&mut ev, source, args.resume);
                    }
                }
                let stream = crate::window::Stream {
                    table: item.table,
                    partition: item.kafka.as_ref().map_or(0, |(_, p, _)| *p),
                };
                if let Some(batch) = item.batch
                    && let Err(e) = ev.push_from(stream, batch)
                {
                    tracing::error!(error = %e, "rows skipped");
                }
                if let Some((topic, partition, offset)) = item.kafka {
                    uncommitted.add(topic, partition, offset, newest);
                }
                if ev.has_news() {
                    let out = evaluate(&mut ev).await;
                    delivery.deliver(&out);
                    note_first_evaluation(&mut first_evaluation, started, &ev, &board);
                }
                if ev.early_due() {
                    let out = ev.evaluate_early().await;
                    delivery.deliver(&out);
                }
                commit(&kafka, &mut uncommitted, &ev, &delivery, args.resume, false);
                refresh(&board, &ev, &counts, &delivery.sinks, &uncommitted);
            }
            // rows that came within --early-every of the last early pass
            _ = early_tick.tick(), if ev.early_waiting() => {
                if ev.early_due() {
                    let out = ev.evaluate_early().await;
                    delivery.deliver(&out);
                    refresh(&board, &ev, &counts, &delivery.sinks, &uncommitted);
                }
            }
            _ = tick.tick() => {
                // a source cut off is absent, not idle: event time waits for it;
                // so is one with rows on the broker it has not read yet (after an
                // outage the consumer may reconnect well after the metadata probe)
                // (held at most three idle times: a transactional topic's last
                // commit marker counts as one unread message for ever)
                let mut behind = false;
                if let Some(source) = &kafka {
                    let lag = source.lag();
                    behind_since = lag
                        .iter()
                        .any(|p| p.unread.is_some_and(|n| n > 0))
                        .then(|| behind_since.unwrap_or_else(Instant::now));
                    behind = behind_since.is_some_and(|since| since.elapsed() < idle * 3);
                    board.lock().unwrap_or_else(|e| e.into_inner()).kafka_lag =
                        lag.into_iter().map(Into::into).collect();
                    if !source.is_live() {
                        ev.suspend_source();
                    } else if ev.is_source_suspended() {
                        ev.resume_source();
                        // quiet starts now, not when the last row came before the outage
                        last_row = Instant::now();
                    }
                }
                if last_row.elapsed() >= idle && !behind && ev.watermark().is_some() && !ev.is_source_suspended() {
                    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                    ev.advance(now);
                    if ev.has_news() {
                        let out = evaluate(&mut ev).await;
                        delivery.deliver(&out);
                        note_first_evaluation(&mut first_evaluation, started, &ev, &board);
                    }
                }
                commit(&kafka, &mut uncommitted, &ev, &delivery, args.resume, false);
                refresh(&board, &ev, &counts, &delivery.sinks, &uncommitted);
            }
            Some(answer) = reloads.recv() => {
                let result = reload_rules(&mut ev, &args, &board, &mut delivery).await;
                let _ = answer.send(result);
                refresh(&board, &ev, &counts, &delivery.sinks, &uncommitted);
            }
            _ = hangup.recv() => {
                let _ = reload_rules(&mut ev, &args, &board, &mut delivery).await;
                refresh(&board, &ev, &counts, &delivery.sinks, &uncommitted);
            }
            _ = tokio::signal::ctrl_c(), if !stopping => {
                stopping = true;
                if stop(&mut receiver, &source_task, "SIGINT") {
                    break;
                }
            }
            _ = terminate.recv(), if !stopping => {
                stopping = true;
                if stop(&mut receiver, &source_task, "SIGTERM") {
                    break;
                }
            }
        }
    }
    // From the receiver, every row acknowledged has been read: all its windows
    // are evaluated, since no one sends them again. From Kafka, only the final
    // windows: the open ones are read again from the committed offsets.
    let out = match &kafka {
        None => ev.finish().await,
        Some(_) => ev.evaluate().await,
    };
    delivery.deliver(&out);
    for s in delivery.sinks.close(SINKS_GRACE).await {
        if s.dropped > 0 || s.depth > 0 {
            eprintln!(
                "sink {}: {} delivered, {} dropped, {} undelivered",
                s.sink, s.delivered, s.dropped, s.depth
            );
        }
    }
    commit(&kafka, &mut uncommitted, &ev, &delivery, args.resume, true);
    let ended = if source_task.is_finished() || kafka.is_some() {
        // from Kafka the task was aborted: awaiting it drops its consumer
        Some(source_task.await)
    } else {
        None
    };
    if let Some(source) = kafka {
        // the last holder: closing the consumer leaves the group (it
        // rebalances at once), or with --group-instance-id keeps the
        // partitions for a restart within the session timeout
        let closing = tokio::task::spawn_blocking(move || drop(source));
        if tokio::time::timeout(SINKS_GRACE, closing).await.is_err() {
            tracing::warn!("the Kafka consumer did not close within {SINKS_GRACE:?}");
        }
    }
    source_outcome(ended)
}

/// How the run ends, by how its source task ended: a source that failed or
/// panicked makes the process exit non-zero (after the drain), so that a
/// service manager restarts it and says so; a task stopped by the drain
/// itself (aborted on SIGINT or SIGTERM), or still running, does not.
fn source_outcome(
    ended: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    let after = "the windows it had filled were evaluated and their alerts delivered";
    match ended {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e.context(format!("the source stopped ({after})"))),
        Some(Err(e)) if e.is_cancelled() => Ok(()),
        Some(Err(e)) => Err(anyhow::anyhow!("the source's task died: {e} ({after})")),
    }
}

#[cfg(test)]
mod commit_queue_tests {
    use super::Uncommitted;

    #[test]
    fn at_its_cap_the_commit_queue_folds_and_still_commits_everything() {
        let mut queue = Uncommitted::with_cap(3);
        let topic: std::sync::Arc<str> = "otlp_spans".into();
        // a long window: 10 messages wait on one partition
        for offset in 0..10 {
            queue.add(topic.clone(), 0, offset, 1_000 + offset);
        }
        let waiting: Vec<(i64, i64)> = queue.partitions.values().flatten().copied().collect();
        assert_eq!(waiting, vec![(0, 1_000), (1, 1_001), (9, 1_009)]);
        assert_eq!(queue.folded, 7);
        // the windows of the first two are evaluated: they go, room comes back
        let _ = queue.take_done(1_002);
        assert_eq!(queue.waiting, 1);
        queue.add(topic.clone(), 0, 10, 1_010);
        assert_eq!(queue.waiting, 2);
        assert_eq!(queue.folded, 7);
        // a durable sink down: evaluated sets fold too
        for seq in 0..5 {
            queue.evaluated(seq, Default::default());
        }
        assert_eq!(queue.evaluated.len(), 3);
        assert_eq!(queue.evaluated.back().map(|(seq, _)| *seq), Some(4));
        assert_eq!(queue.folded, 9);
        // every folded offset is still committed once its windows are done
        let _ = queue.take_done(i64::MAX);
        assert_eq!(queue.waiting, 0);
        assert!(queue.partitions.values().all(|q| q.is_empty()));
    }
}

#[cfg(test)]
mod source_tests {
    use super::source_outcome;

    async fn ended(task: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
        source_outcome(Some(task.await))
    }

    #[tokio::test]
    async fn a_source_that_fails_or_panics_ends_the_run_with_an_error() {
        let failed = tokio::spawn(async { Err(anyhow::anyhow!("all brokers down for good")) });
        let error = ended(failed).await.expect_err("an error exit");
        assert!(
            format!("{error:#}").contains("all brokers down"),
            "{error:#}"
        );
        let panicked = tokio::spawn(async { panic!("the reader task died") });
        let error = ended(panicked).await.expect_err("an error exit");
        assert!(error.to_string().contains("panicked"), "{error:#}");
    }

    #[tokio::test]
    async fn a_source_stopped_by_the_drain_ends_the_run_cleanly() {
        let stopped = tokio::spawn(std::future::pending::<anyhow::Result<()>>());
        stopped.abort();
        assert!(ended(stopped).await.is_ok());
        assert!(ended(tokio::spawn(async { Ok(()) })).await.is_ok());
        assert!(source_outcome(None).is_ok());
    }
}
