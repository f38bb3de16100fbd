//! `run`'s arguments; the live loop itself is [`crate::drive::live`].

use std::net::SocketAddr;

use super::{LatenessArg, RulesArg};
use crate::drive::live::{LiveConfig, Resume, StartAt};
use crate::rules::definition::parse_duration;
use crate::sinks::webhook::WebhookFormat;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub rules: RulesArg,
    #[command(flatten)]
    pub receiver: ReceiverArgs,
    /// consume the Collector's Kafka topics from these brokers instead of receiving OTLP
    #[arg(long)]
    pub kafka: Option<String>,
    /// Kafka consumer group
    #[arg(long, default_value = "otelguard-engine")]
    pub group: String,
    /// where a group with no committed offset starts reading a partition:
    /// latest (only what is written from now on: a new engine does not
    /// notify again the incidents the topics still hold), earliest (what the
    /// topics hold), or a time such as 2026-01-15T10:00:00Z (the first
    /// message at or after it). A committed offset always wins.
    #[arg(long, default_value = "latest", value_parser = parse_start_at)]
    pub start_at: StartAt,
    /// what Kafka offset commits wait for, and so what a restart reads
    /// again: `all` (every window: a restart reads again as far back as the
    /// longest open window, 15 minutes for the pack, and every KPI window is
    /// whole) or `alerts` (the windows of alerting rules and kept KPIs: a
    /// restart reads again about a minute; KPI windows open at the stop are
    /// not written). Either way no window evaluated before the stop is
    /// evaluated again.
    #[arg(long, default_value = "all", value_parser = parse_resume)]
    pub resume: Resume,
    /// static group membership (Kafka's group.instance.id), one id per
    /// engine: restarted with the same id within --session-timeout, it gets
    /// its partitions back at once, with no rebalance
    #[arg(long, value_name = "ID")]
    pub group_instance_id: Option<String>,
    /// how long the broker waits for a member that went silent (killed,
    /// cut off) before it gives its partitions to the others; with
    /// --group-instance-id, how long a restart may take without a rebalance
    /// (default: librdkafka's, 45 s)
    #[arg(long)]
    pub session_timeout: Option<String>,
    /// the topics of spans, logs and metrics (the Collector's defaults)
    #[arg(long, default_value = "otlp_spans")]
    pub spans_topic: String,
    #[arg(long, default_value = "otlp_logs")]
    pub logs_topic: String,
    #[arg(long, default_value = "otlp_metrics")]
    pub metrics_topic: String,
    /// send alerts to this Alertmanager, e.g. http://127.0.0.1:19093
    #[arg(long)]
    pub alertmanager: Option<String>,
    /// post alerts to this URL as JSON (http only), e.g. http://127.0.0.1:8099/alerts
    #[arg(long)]
    pub webhook: Option<String>,
    /// the webhook's body: json ({"alerts": [...]}) or slack ({"text": ...})
    #[arg(long, value_enum, default_value = "json")]
    pub webhook_format: WebhookFormat,
    /// also write KPI values and alerts to this PostgreSQL (the BI store the
    /// Grafana dashboards read), and draw the viewer's dashboards from it
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE; needs the `postgres`
    /// cargo feature). Kafka commits wait until the store has the outputs.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// write each alert state change (firing, resolved) to this Kafka topic,
    /// keyed by the alert's identity, with an idempotent producer (needs the
    /// `kafka` cargo feature); Kafka commits wait until the broker has them
    #[arg(long, value_name = "TOPIC")]
    pub alerts_topic: Option<String>,
    /// the brokers of --alerts-topic (default: those of --kafka)
    #[arg(long, value_name = "BROKERS", requires = "alerts_topic")]
    pub alerts_brokers: Option<String>,
    /// each sink's queue, in outputs: what does not fit while a sink is slow
    /// or down is dropped and counted (otelguard_sink_dropped_total)
    #[arg(long, default_value_t = crate::sinks::fanout::DEFAULT_CAPACITY)]
    pub sink_queue: usize,
    #[command(flatten)]
    pub api: super::ApiArgs,
    #[command(flatten)]
    pub lateness: LatenessArg,
    /// write messages that do not decode here (JSON lines with the raw bytes)
    #[arg(long)]
    pub dead_letter: Option<std::path::PathBuf>,
    /// after this long with no row, the wall clock moves event time on (never
    /// while the source is cut off: a broker away, a rebalance under way)
    #[arg(long, default_value = "10s")]
    pub idle: String,
    /// rows dated more than this ahead of the wall clock are dropped and
    /// counted, and no stream's event time passes the wall clock
    #[arg(long, default_value = "30s")]
    pub clock_skew: String,
    /// rows held for open windows at most; beyond, rows are dropped and
    /// counted (otelguard_buffer_refused_rows_total) while windows close and
    /// free room
    #[arg(long, default_value_t = crate::window::DEFAULT_MAX_BUFFERED_ROWS)]
    pub max_buffered_rows: usize,
    /// open incidents per rule at most (and entities remembered for
    /// suppression); beyond, findings for new entities are refused and
    /// counted (otelguard_incidents_refused_total)
    #[arg(long, default_value_t = crate::alerts::DEFAULT_MAX_INCIDENTS)]
    pub max_incidents: usize,
    /// rules whose condition only grows within a window (`rules check`
    /// says which) also run over the open windows, at most this often
    /// while rows come, and fire as soon as the condition holds; "off"
    /// waits for every window to close
    #[arg(long, default_value = "200ms")]
    pub early_every: String,
}

/// Where the built-in OTLP receiver listens.
#[derive(Debug, clap::Args)]
pub struct ReceiverArgs {
    /// OTLP/gRPC address of the built-in receiver ("off" to turn it off)
    #[arg(long, default_value = ingest::source::otlp_receiver::DEFAULT_GRPC_ADDR)]
    pub otlp_grpc: String,
    /// OTLP/HTTP address of the built-in receiver ("off" to turn it off)
    #[arg(long, default_value = ingest::source::otlp_receiver::DEFAULT_HTTP_ADDR)]
    pub otlp_http: String,
}

impl ReceiverArgs {
    /// The receiver's configuration, with both addresses checked.
    pub fn config(&self) -> anyhow::Result<ingest::source::otlp_receiver::ReceiverConfig> {
        Ok(ingest::source::otlp_receiver::ReceiverConfig {
            grpc: addr("otlp-grpc", &self.otlp_grpc)?,
            http: addr("otlp-http", &self.otlp_http)?,
            ..Default::default()
        })
    }
}

/// `latest`, `earliest`, or an RFC 3339 time.
fn parse_resume(text: &str) -> Result<Resume, String> {
    match text {
        "all" => Ok(Resume::All),
        "alerts" => Ok(Resume::Alerts),
        _ => Err(format!("`{text}`: expected `all` or `alerts`")),
    }
}

fn parse_start_at(text: &str) -> Result<StartAt, String> {
    match text {
        "latest" => Ok(StartAt::Latest),
        "earliest" => Ok(StartAt::Earliest),
        _ => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|e| {
                format!(
                    "`{text}` is not latest, earliest or a time like 2026-01-15T10:00:00Z ({e})"
                )
            }),
    }
}

fn addr(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--{flag} {text}: not an address like 127.0.0.1:4317 ({e})"))
}

impl RunArgs {
    /// The live loop's configuration: every duration and address parsed,
    /// an error naming the flag otherwise.
    pub fn config(&self) -> anyhow::Result<LiveConfig> {
        let duration = |flag: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        };
        Ok(LiveConfig {
            rules_dir: self.rules.dir(),
            receiver: self.receiver.config()?,
            kafka: self.kafka.clone(),
            group: self.group.clone(),
            start_at: self.start_at,
            resume: self.resume,
            group_instance_id: self.group_instance_id.clone(),
            session_timeout: self
                .session_timeout
                .as_deref()
                .map(|t| duration("session-timeout", t))
                .transpose()?,
            spans_topic: self.spans_topic.clone(),
            logs_topic: self.logs_topic.clone(),
            metrics_topic: self.metrics_topic.clone(),
            alertmanager: self.alertmanager.clone(),
            webhook: self.webhook.clone(),
            webhook_format: self.webhook_format,
            postgres: self.postgres.clone(),
            alerts_topic: self.alerts_topic.clone(),
            alerts_brokers: self.alerts_brokers.clone(),
            sink_queue: self.sink_queue,
            api: self.api.config(),
            lateness_ns: self.lateness.nanos()?,
            dead_letter: self.dead_letter.clone(),
            idle: duration("idle", &self.idle)?,
            clock_skew: duration("clock-skew", &self.clock_skew)?,
            max_buffered_rows: self.max_buffered_rows,
            max_incidents: self.max_incidents,
            early_every: match self.early_every.as_str() {
                "off" => None,
                every => Some(duration("early-every", every)?),
            },
        })
    }
}

/// `engine run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::drive::live::run(args.config()?).await
}
