//! The `engine` command line.

pub mod demo;
pub mod plan;
pub mod query;
pub mod record;
pub mod rules;
pub mod run;
pub mod scale;
pub mod sigma;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::api;
use crate::drive::replay::{self, Speed};
use crate::drive::{self, postgres};
use crate::evaluator::{Evaluator, Output};
use crate::rules::Which;
use crate::rules::definition::parse_duration;
use crate::sinks::stdout::{Format, Printer};

#[cfg(not(feature = "kafka"))]
pub use crate::drive::kafka_not_built;
pub use crate::drive::{dead_letters, load_rules};

/// Detection rules and KPIs in SQL over OpenTelemetry data, live or replayed.
#[derive(Debug, Parser)]
#[command(name = "engine", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay captures through the rules and print alerts (or, with --kpis, KPI values).
    Replay {
        /// capture files or folders (Collector file-exporter formats)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        rules: RulesArg,
        /// max, or a multiple of real time such as 1x or 10x
        #[arg(long, default_value = "max")]
        speed: Speed,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// print KPI values instead of alerts
        #[arg(long)]
        kpis: bool,
        #[command(flatten)]
        lateness: LatenessArg,
        /// write messages that do not decode here (JSON lines with the raw bytes)
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// also write every KPI value and alert to PostgreSQL, the BI store the
        /// dashboards read (postgres://USER:PASSWORD@HOST:PORT/DATABASE; needs the
        /// `postgres` cargo feature)
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// after the replay, print on stderr what each rule's evaluations took
        /// (the most expensive first), to find the rules a pack's speed hangs on
        #[arg(long)]
        timings: bool,
    },
    /// Check or test the rule pack.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run SQL over a capture (tables spans, logs, events, metrics).
    Query {
        /// capture files or folders
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// the SQL to run (the last argument)
        #[arg(long, short)]
        sql: String,
        #[arg(long, value_enum, default_value = "table")]
        format: query::QueryFormat,
    },
    /// Evaluate live: as an OTLP receiver (the default) or from Kafka.
    Run(run::RunArgs),
    /// Record what the built-in OTLP receiver takes to a capture file.
    Record(record::RecordArgs),
    /// Replay the bundled demo recording through the rule pack and serve the viewer.
    Demo(demo::DemoArgs),
    /// Print the scale-out topology the rule pack needs: the keyed topics
    /// several engines share, which rules read each, and the rules that stay
    /// on one engine.
    Plan(plan::PlanArgs),
    /// The repartition stage of the scaled-out form: read the Collector's
    /// OTLP topics in a consumer group and write their rows, keyed by the
    /// entities the pack groups by, to the plan's keyed topics (Kafka
    /// transactions; needs the `kafka` feature).
    Shuffle(scale::ShuffleArgs),
    /// An evaluating engine of the scaled-out form: one of a consumer group
    /// on the keyed topics, running each topic's rules on the partitions it
    /// owns; alerts and KPI values on stdout (needs the `kafka` feature).
    Evaluate(scale::EvaluateArgs),
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Parse and plan every rule against the schema; errors name file:line:col.
    Check {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Run every rule's fixture cases (NAME.test.toml beside NAME.sql).
    Test {
        #[command(flatten)]
        rules: RulesArg,
        /// print detection, delay and false incidents per case
        #[arg(long)]
        report: bool,
        #[command(flatten)]
        lateness: LatenessArg,
    },
    /// Convert Sigma rules (detection and correlation, .yml files or folders)
    /// into rule files of this pack; lists what cannot be converted and why.
    ImportSigma {
        /// Sigma rule files, or folders searched for .yml and .yaml files
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// the folder to write the rule files into (e.g. rules/sigma)
        #[arg(long)]
        out: PathBuf,
        /// overwrite rule files that exist and differ
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RulesArg {
    /// folder of rule and KPI files (default: ./rules, else the repository's rules/)
    #[arg(long = "rules")]
    pub dir: Option<PathBuf>,
}

impl RulesArg {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| bundled("rules"))
    }
}

/// Where the API, the viewer and /metrics listen, and who may read them
/// (see `api::Access`).
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// where the API, the viewer and /metrics listen
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// the bearer token the API requires (required when --listen is not loopback)
    #[arg(long, env = "OTELGUARD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// a host name the API answers to besides loopback and its own address
    /// (the Host header is checked against DNS rebinding); repeatable
    #[arg(long = "api-host")]
    pub api_hosts: Vec<String>,
}

impl ApiArgs {
    /// Binds the address and checks who may read it; `quiet` leaves the
    /// address unsaid (the caller says it later).
    pub async fn bind(
        &self,
        quiet: bool,
    ) -> anyhow::Result<(tokio::net::TcpListener, api::Access)> {
        self.config().bind(quiet).await
    }

    /// The library's form of these arguments.
    pub fn config(&self) -> drive::ApiConfig {
        drive::ApiConfig {
            listen: self.listen.clone(),
            token: self.api_token.clone(),
            hosts: self.api_hosts.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LatenessArg {
    /// how late a row may arrive (event time behind the newest row) and still count
    #[arg(long, default_value = "5s")]
    pub lateness: String,
}

impl LatenessArg {
    pub fn nanos(&self) -> anyhow::Result<i64> {
        let d = parse_duration(&self.lateness).map_err(|e| anyhow::anyhow!("--lateness: {e}"))?;
        Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A path of the repository: `./NAME` if it exists, else beside the engine's sources.
pub fn bundled(name: &str) -> PathBuf {
    let here = PathBuf::from(name);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// Each rule's evaluations, the most expensive first: count, total and mean
/// time, share of all rules' time. Rules run in parallel tasks, so a time is
/// the task's wall time, waits for a core included.
fn timings_table(health: &[crate::evaluator::RuleHealth]) -> String {
    let mut rows: Vec<_> = health.iter().collect();
    rows.sort_by(|a, b| b.eval_seconds.sum.total_cmp(&a.eval_seconds.sum));
    let total: f64 = rows.iter().map(|h| h.eval_seconds.sum).sum();
    let width = rows.iter().map(|h| h.id.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$}  {:>5}  {:>11}  {:>8}  {:>9}  {:>5}\n",
        "rule", "kind", "evaluations", "total s", "mean ms", "share"
    );
    for h in rows {
        let d = &h.eval_seconds;
        out.push_str(&format!(
            "{:<width$}  {:>5}  {:>11}  {:>8.3}  {:>9.3}  {:>4.1}%\n",
            h.id,
            h.kind,
            d.count,
            d.sum,
            1e3 * d.sum / d.count.max(1) as f64,
            100.0 * d.sum / total.max(1e-12),
        ));
    }
    out.push_str(&format!(
        "{:<width$}  {:>5}  {:>11}  {total:>8.3}\n",
        "all", "", ""
    ));
    out
}

pub async fn main(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Replay {
            paths,
            rules,
            speed,
            format,
            kpis,
            lateness,
            dead_letter,
            postgres,
            timings,
        } => {
            // the BI store takes both kinds; the printer shows the one asked for
            let which = match (postgres.is_some(), kpis) {
                (true, _) => Which::All,
                (false, true) => Which::Kpis,
                (false, false) => Which::Alerts,
            };
            let set = load_rules(&rules.dir(), which).await?;
            let bi = postgres::start(postgres.as_deref(), &set)?;
            let mut ev = Evaluator::new(set, lateness.nanos()?);
            let mut printer = Printer::new(std::io::stdout().lock(), format);
            let rejections = dead_letters(
                dead_letter.as_deref(),
                Arc::new(ingest::RejectCounts::default()),
            )?;
            let summary = replay::replay_with(&paths, &mut ev, speed, &rejections, |o| {
                if let Some(bi) = &bi {
                    bi.send(o);
                }
                let shown: Vec<Output> = o
                    .iter()
                    .filter(|x| matches!(x, Output::Kpi(_)) == kpis)
                    .cloned()
                    .collect();
                Ok(printer.print(&shown)?)
            })
            .await?;
            eprintln!("{}", summary.line());
            if timings {
                eprint!("{}", timings_table(ev.health()));
            }
            if let Some(bi) = bi {
                eprintln!("{}", bi.finish().await?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command: RulesCommand::Check { rules },
        } => {
            let problems = rules::check(&rules.dir()).await?;
            Ok(if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rules {
            command:
                RulesCommand::Test {
                    rules,
                    report,
                    lateness,
                },
        } => {
            let failed = drive::judge::test(&rules.dir(), report, lateness.nanos()?).await?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Rules {
            command: RulesCommand::ImportSigma { files, out, force },
        } => {
            let problems = sigma::import(&files, &out, force).await?;
            Ok(if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Query { paths, sql, format } => {
            query::run(&paths, &sql, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Record(args) => record::record(args).await.map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => demo::demo(args).await.map(|_| ExitCode::SUCCESS),
        Command::Plan(args) => plan::plan(args).await.map(|_| ExitCode::SUCCESS),
        Command::Shuffle(args) => scale::shuffle(args).await.map(|_| ExitCode::SUCCESS),
        Command::Evaluate(args) => scale::evaluate(args).await.map(|_| ExitCode::SUCCESS),
    }
}
