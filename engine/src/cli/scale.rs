//! `shuffle` and `evaluate`: the scaled-out form on Kafka (issue 18). The
//! stages themselves are [`crate::drive::shuffle`] and [`crate::drive::keyed`].

use std::time::Duration;

use ingest::Table;

use super::{LatenessArg, RulesArg};
use crate::rules::Which;
use crate::rules::definition::parse_duration;
use crate::rules::topology::{self, DEFAULT_PARTITIONS, Route};
use crate::sinks::stdout::Format;

/// What both stages share: the brokers, the pack and its plan, the OTLP topics.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// the Kafka brokers, e.g. 127.0.0.1:19092
    #[arg(long)]
    pub kafka: String,
    #[command(flatten)]
    pub rules: RulesArg,
    /// partitions of each keyed topic (as `engine plan --partitions`); the
    /// shuffle creates missing topics with it. Give every stage the same.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: u32,
    /// the Collector's topics of spans, logs and metrics
    #[arg(long, default_value = "otlp_spans")]
    pub spans_topic: String,
    #[arg(long, default_value = "otlp_logs")]
    pub logs_topic: String,
    #[arg(long, default_value = "otlp_metrics")]
    pub metrics_topic: String,
    /// the keyed topics' names start with this instead of `otelguard`
    /// (`PREFIX_by_client_address`, `PREFIX_global`): several scaled-out
    /// pipelines on one cluster
    #[arg(long, default_value = "otelguard")]
    pub keyed_prefix: String,
    /// where a group with no committed offset starts: earliest or latest
    #[arg(long, default_value = "latest", value_parser = ["earliest", "latest"])]
    pub start_at: String,
    /// how long the broker waits for a silent member before it hands its
    /// partitions to the others (default: librdkafka's, 45 s)
    #[arg(long)]
    pub session_timeout: Option<String>,
}

// (a build without the `kafka` feature only says how to get one)
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
impl ScaleArgs {
    fn source_topics(&self) -> Vec<(String, Table)> {
        vec![
            (self.spans_topic.clone(), Table::Spans),
            (self.logs_topic.clone(), Table::Logs),
            (self.metrics_topic.clone(), Table::Metrics),
        ]
    }

    fn session_timeout(&self) -> anyhow::Result<Option<Duration>> {
        self.session_timeout
            .as_deref()
            .map(|t| duration("session-timeout", t))
            .transpose()
    }

    /// The pack's plan: every topic the shuffle writes, with its rules.
    async fn routes(&self) -> anyhow::Result<Vec<Route>> {
        let set = super::load_rules(&self.rules.dir(), Which::All).await?;
        crate::rules::snapshot::decode_what_is_read(&set);
        let mut routes = topology::plan(&set, self.partitions).routes(self.partitions);
        for r in &mut routes {
            if let Some(rest) = r.topic.strip_prefix("otelguard") {
                r.topic = format!("{}{rest}", self.keyed_prefix);
            }
        }
        Ok(routes)
    }
}

#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

#[derive(Debug, clap::Args)]
pub struct ShuffleArgs {
    #[command(flatten)]
    pub scale: ScaleArgs,
    /// this instance's name, unique among the running instances of its
    /// group (its transactional id is otelguard-shuffle-GROUP-NAME; a
    /// restart with the same name fences off the one it replaces, and the
    /// replaced one exits with an error saying so)
    #[arg(long, default_value_t = default_name())]
    pub id: String,
    /// the consumer group of the repartitioning instances
    #[arg(long, default_value = "otelguard-shuffle")]
    pub group: String,
    /// how long a transaction reads before it commits: rows reach the
    /// evaluating engines at most this late
    #[arg(long, default_value = "100ms")]
    pub commit_every: String,
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub scale: ScaleArgs,
    /// the consumer group of the evaluating engines
    #[arg(long, default_value = "otelguard-evaluate")]
    pub group: String,
    /// static membership (Kafka's group.instance.id): restarted within
    /// --session-timeout, the engine gets its partitions back with no rebalance
    #[arg(long, value_name = "ID")]
    pub group_instance_id: Option<String>,
    /// read only these keyed topics (default: every topic of the plan)
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub lateness: LatenessArg,
    /// a source partition (or a writer) quiet this long stops holding event
    /// time back; with nothing read at all this long, the wall clock moves
    /// event time on
    #[arg(long, default_value = "10s")]
    pub idle: String,
    /// rows dated more than this ahead of the wall clock are dropped
    #[arg(long, default_value = "30s")]
    pub clock_skew: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

/// `engine shuffle`.
pub async fn shuffle(args: ShuffleArgs) -> anyhow::Result<()> {
    #[cfg(not(feature = "kafka"))]
    {
        let _ = args;
        Err(super::kafka_not_built())
    }
    #[cfg(feature = "kafka")]
    {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use crate::drive::shuffle::{self, ShuffleConfig, ShuffleStats};
        let routes = args.scale.routes().await?;
        shuffle::create_topics(&args.scale.kafka, &routes).await?;
        let config = ShuffleConfig {
            brokers: args.scale.kafka.clone(),
            group: args.group.clone(),
            writer: args.id.clone(),
            topics: args.scale.source_topics(),
            routes,
            earliest: args.scale.start_at == "earliest",
            commit_every: duration("commit-every", &args.commit_every)?,
            session_timeout: args.scale.session_timeout()?,
        };
        let stats = Arc::new(ShuffleStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let work = {
            let (stats, stop) = (stats.clone(), stop.clone());
            tokio::task::spawn_blocking(move || shuffle::run(&config, &stats, &stop))
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            _ = tokio::signal::ctrl_c() => { stop.store(true, Ordering::Relaxed); work.await }
            _ = terminate.recv() => { stop.store(true, Ordering::Relaxed); work.await }
        };
        eprintln!("shuffle {}: {}", args.id, stats.line());
        result?
    }
}

/// `engine evaluate`.
pub async fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    #[cfg(not(feature = "kafka"))]
    {
        let _ = args;
        Err(super::kafka_not_built())
    }
    #[cfg(feature = "kafka")]
    {
        use crate::drive::keyed::{self, EvaluateConfig};
        let mut routes = args.scale.routes().await?;
        if !args.topics.is_empty() {
            for t in &args.topics {
                if !routes.iter().any(|r| &r.topic == t) {
                    let known: Vec<&str> = routes.iter().map(|r| r.topic.as_str()).collect();
                    anyhow::bail!(
                        "--topic {t}: not a topic of the plan ({})",
                        known.join(", ")
                    );
                }
            }
            routes.retain(|r| args.topics.contains(&r.topic));
        }
        keyed::run(EvaluateConfig {
            brokers: args.scale.kafka.clone(),
            group: args.group.clone(),
            group_instance_id: args.group_instance_id.clone(),
            session_timeout: args.scale.session_timeout()?,
            rules_dir: args.scale.rules.dir(),
            routes,
            source_topics: args.scale.source_topics(),
            earliest: args.scale.start_at == "earliest",
            lateness_ns: args.lateness.nanos()?,
            idle: duration("idle", &args.idle)?,
            clock_skew: duration("clock-skew", &args.clock_skew)?,
            format: args.format,
        })
        .await
    }
}
