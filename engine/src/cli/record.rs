//! `record`: write what arrives to a capture, so that a live attack can be
//! replayed later. The built-in OTLP receiver takes the data; each message is
//! written as it came (see `ingest::write::capture_writer`), in the format the
//! file name asks for (`.jsonl`, `.jsonl.zst`, else length-prefixed protobuf
//! records). From Kafka, each message keeps its partition (an extra field, see
//! `ingest::write::capture_writer`), so that a replay judges each partition's
//! rows by their own event time, as the live run does. With `--from`, the
//! messages of existing captures are written instead: a conversion, e.g.
//! `engine record --from attack.jsonl.zst attack.pb.zst` (replay reads
//! protobuf captures without parsing JSON).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::RejectCounts;
use ingest::write::capture_writer::{CaptureOptions, CaptureWriter, convert};
use ingest::write::dead_letter::Rejections;
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// the capture file to write
    pub out: PathBuf,
    #[command(flatten)]
    pub receiver: super::run::ReceiverArgs,
    /// record the Collector's Kafka topics from these brokers instead of receiving OTLP
    #[arg(long)]
    pub kafka: Option<String>,
    /// Kafka consumer group (a group of its own, so the engine's offsets are untouched)
    #[arg(long, default_value = "otelguard-record")]
    pub group: String,
    /// stop after this long (e.g. 10m); default: until Ctrl-C
    #[arg(long)]
    pub duration: Option<String>,
    /// stop after this many messages
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// write the messages of this capture (a file or folder, any format
    /// replay reads; repeat the flag for more) instead of receiving:
    /// OTLP/JSON captures become protobuf ones, or the other way, as OUT's
    /// name says
    #[arg(long, value_name = "CAPTURE")]
    pub from: Vec<PathBuf>,
}

pub async fn record(args: RecordArgs) -> anyhow::Result<()> {
    if !args.from.is_empty() {
        return convert_captures(args.from, args.out).await;
    }
    let limit = match &args.duration {
        Some(d) => Some(
            crate::rules::definition::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?,
        ),
        None => None,
    };
    let mut writer = CaptureWriter::create(&args.out, CaptureOptions::for_path(&args.out))
        .with_context(|| format!("cannot create the capture {}", args.out.display()))?;
    // each message, and its Kafka partition (kept in the capture: one stream each)
    let (tx, mut rx) = mpsc::channel::<(ingest::Table, Vec<u8>, Option<i32>)>(64);
    let counts = Arc::new(RejectCounts::default());
    let rejections = Arc::new(Rejections::new(counts.clone()));
    let receiver = match &args.kafka {
        #[cfg(not(feature = "kafka"))]
        Some(_) => return Err(super::kafka_not_built()),
        #[cfg(feature = "kafka")]
        Some(brokers) => {
            let mut config =
                ingest::source::kafka::KafkaConfig::new(brokers.clone(), args.group.clone());
            config.keep_raw = true;
            let source = ingest::source::kafka::KafkaSource::connect(config, rejections)
                .await
                .with_context(|| format!("cannot consume from Kafka at {brokers}"))?;
            eprintln!(
                "recording to {}: Kafka {brokers}, group {}",
                args.out.display(),
                args.group
            );
            tokio::spawn(async move {
                while let Ok(item) = source.recv().await {
                    // every message as it came, the undecodable ones too
                    let raw = item.raw.unwrap_or_default();
                    if tx
                        .send((item.table, raw, Some(item.partition)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            None
        }
        None => {
            let config = ingest::source::otlp_receiver::ReceiverConfig {
                keep_grpc_raw: true,
                ..args.receiver.config()?
            };
            let (rtx, mut rrx) = mpsc::channel(64);
            let handle = ingest::source::otlp_receiver::start(config, rtx, rejections)
                .await
                .context("cannot start the OTLP receiver")?;
            eprintln!(
                "recording to {}: OTLP receiver: gRPC {} HTTP {}",
                args.out.display(),
                handle.grpc_addr().map_or("off".into(), |a| a.to_string()),
                handle.http_addr().map_or("off".into(), |a| a.to_string())
            );
            tokio::spawn(async move {
                while let Some(r) = rrx.recv().await {
                    let r: ingest::source::otlp_receiver::Received = r;
                    if tx
                        .send((r.decoded.table, r.raw.to_vec(), None))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            Some(handle)
        }
    };
    let started = Instant::now();
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut messages = 0u64;
    let mut last_progress = Instant::now();
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, rx.recv()).await.unwrap_or(None),
                None => rx.recv().await,
            }
        };
        tokio::select! {
            item = next => {
                let Some((table, raw, partition)) = item else { break };
                writer.write_from(table, &raw, partition).with_context(|| format!("writing {}", args.out.display()))?;
                messages += 1;
                if args.max_messages.is_some_and(|m| messages >= m) {
                    break;
                }
                if last_progress.elapsed() > Duration::from_secs(5) {
                    last_progress = Instant::now();
                    writer.flush().ok();
                    eprintln!("recorded {messages} messages in {:.0} s", started.elapsed().as_secs_f64());
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(handle) = receiver {
        let _ = handle.shutdown().await;
    }
    let stats = writer
        .finish()
        .with_context(|| format!("finishing {}", args.out.display()))?;
    let rejected: u64 = counts.snapshot().iter().map(|(_, n)| n).sum();
    eprintln!(
        "recorded {messages} messages to {} ({stats:?}); {rejected} rejected",
        args.out.display()
    );
    Ok(())
}

/// `record --from`: the captures' messages written to `out`, in its format.
async fn convert_captures(from: Vec<PathBuf>, out: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let (done, out) = tokio::task::spawn_blocking(move || {
        let done = convert(&from, &out, CaptureOptions::for_path(&out));
        (done, out)
    })
    .await?;
    let done = done.with_context(|| format!("cannot convert into {}", out.display()))?;
    for skipped in &done.skipped {
        eprintln!("skipped {skipped}");
    }
    eprintln!(
        "wrote {} messages to {} in {:.1} s; {} skipped",
        done.stats.messages,
        out.display(),
        started.elapsed().as_secs_f64(),
        done.skipped.len()
    );
    Ok(())
}
