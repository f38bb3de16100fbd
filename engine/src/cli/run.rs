//! `run`: live evaluation.
//!
//! Rows come from the built-in OTLP receiver (the default: no Collector, no
//! Kafka) or from the Collector's Kafka topics. Every output goes to stdout as
//! a JSON line and to the API; alerts also to Alertmanager when one is given.
//! When no row arrives for a while, the wall clock moves event time on, so
//! that windows close and incidents resolve while the shop is quiet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use ingest::dead_letter::Rejections;
use ingest::{RejectCounts, Table};
use tokio::sync::mpsc;

use super::{LatenessArg, RulesArg, load_rules};
use crate::alerts::Alert;
use crate::api::{self, Board};
use crate::evaluator::{Evaluator, Output};
use crate::rules::Which;
use crate::sinks::alertmanager::Alertmanager;
use crate::sinks::stdout::{Format, Printer};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub rules: RulesArg,
    /// OTLP/gRPC address of the built-in receiver ("off" to turn it off)
    #[arg(long, default_value = ingest::otlp_receiver::DEFAULT_GRPC_ADDR)]
    pub otlp_grpc: String,
    /// OTLP/HTTP address of the built-in receiver ("off" to turn it off)
    #[arg(long, default_value = ingest::otlp_receiver::DEFAULT_HTTP_ADDR)]
    pub otlp_http: String,
    /// consume the Collector's Kafka topics from these brokers instead of receiving OTLP
    #[arg(long)]
    pub kafka: Option<String>,
    /// Kafka consumer group
    #[arg(long, default_value = "otelguard-engine")]
    pub group: String,
    /// send alerts to this Alertmanager, e.g. http://127.0.0.1:19093
    #[arg(long)]
    pub alertmanager: Option<String>,
    /// where the API, the viewer and /metrics listen
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub lateness: LatenessArg,
    /// after this long with no row, the wall clock moves event time on
    #[arg(long, default_value = "10s")]
    pub idle: String,
}

pub(crate) fn addr(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--{flag} {text}: not an address like 127.0.0.1:4317 ({e})"))
}

/// One batch of rows from a live source.
pub struct Incoming {
    pub table: Table,
    pub batch: RecordBatch,
}

/// Everything outputs go to.
struct Delivery {
    printer: Printer<std::io::Stdout>,
    alertmanager: Option<Alertmanager>,
    board: Arc<Mutex<Board>>,
}

impl Delivery {
    /// Delivers outputs; returns once every sink that must have them has them.
    async fn deliver(&mut self, outputs: &[Output]) {
        if outputs.is_empty() {
            return;
        }
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(outputs);
        let alerts: Vec<Output> = outputs
            .iter()
            .filter(|o| matches!(o, Output::Alert(_)))
            .cloned()
            .collect();
        if let Err(e) = self.printer.print(&alerts) {
            tracing::error!(error = %e, "cannot write alerts to stdout");
        }
        if let Some(am) = &self.alertmanager {
            let alerts: Vec<Alert> = outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Alert(a) => Some(a.clone()),
                    Output::Kpi(_) => None,
                })
                .collect();
            if let Err(e) = am.send(&alerts).await {
                tracing::error!(error = %e, "alerts not delivered to Alertmanager; they stay in the API");
            }
        }
    }
}

/// Copies the evaluator's health and counters into what the API shows.
fn refresh(board: &Mutex<Board>, ev: &Evaluator, counts: &RejectCounts) {
    let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
    b.rules = ev.health().to_vec();
    b.stats = ev.stats();
    b.rejected = counts
        .snapshot()
        .into_iter()
        .map(|(r, n)| (r.as_str().to_string(), n))
        .collect();
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let set = load_rules(&args.rules.dir(), Which::All).await?;
    // bind the API first: a taken port is an error at once, before any input is read
    let listener = api::bind(&args.listen).await?;
    let idle =
        crate::rules::definition::parse_duration(&args.idle).map_err(|e| anyhow::anyhow!("--idle: {e}"))?;
    let board = Arc::new(Mutex::new(Board {
        rule_errors: set.errors.iter().map(|e| e.to_string()).collect(),
        ..Board::default()
    }));
    let mut ev = Evaluator::new(set, args.lateness.nanos()?);
    let counts = Arc::new(RejectCounts::default());
    let (tx, mut rx) = mpsc::channel::<Incoming>(64);

    // the source
    let _receiver = match &args.kafka {
        Some(brokers) => {
            board.lock().unwrap_or_else(|e| e.into_inner()).source =
                format!("Kafka {brokers}, group {}", args.group);
            anyhow::bail!(
                "consuming Kafka from `run` is not wired yet; use the built-in OTLP receiver (the default)"
            );
        }
        None => {
            let config = ingest::otlp_receiver::ReceiverConfig {
                grpc: addr("otlp-grpc", &args.otlp_grpc)?,
                http: addr("otlp-http", &args.otlp_http)?,
                ..Default::default()
            };
            let (rtx, mut rrx) = mpsc::channel(64);
            let handle = ingest::otlp_receiver::start(config, rtx, Arc::new(Rejections::new(counts.clone())))
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
            tokio::spawn(async move {
                while let Some(r) = rrx.recv().await {
                    let r: ingest::otlp_receiver::Received = r;
                    if tx
                        .send(Incoming {
                            table: r.decoded.table,
                            batch: r.decoded.batch,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            handle
        }
    };
    drop(tx);

    let api_board = board.clone();
    tokio::spawn(async move {
        if let Err(e) = api::serve_on(listener, api_board).await {
            tracing::error!(error = %e, "the API stopped");
        }
    });

    let mut delivery = Delivery {
        printer: Printer::new(std::io::stdout(), Format::Json),
        alertmanager: args.alertmanager.as_deref().map(Alertmanager::new),
        board: board.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_row = Instant::now();
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else { break };
                last_row = Instant::now();
                if let Err(e) = ev.push(item.table, item.batch) {
                    tracing::error!(error = %e, "rows skipped");
                }
                if ev.has_final_windows() {
                    let out = ev.evaluate().await;
                    delivery.deliver(&out).await;
                }
                refresh(&board, &ev, &counts);
            }
            _ = tick.tick() => {
                if last_row.elapsed() >= idle && ev.watermark().is_some() {
                    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                    ev.advance(now);
                    if ev.has_final_windows() {
                        let out = ev.evaluate().await;
                        delivery.deliver(&out).await;
                    }
                }
                refresh(&board, &ev, &counts);
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopping: evaluating the windows that hold rows");
                break;
            }
        }
    }
    let out = ev.finish().await;
    delivery.deliver(&out).await;
    Ok(())
}
