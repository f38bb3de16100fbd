//! Feeding a capture through the evaluator: the loop behind `replay`,
//! `rules test` and `demo`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::RejectCounts;
use ingest::source::capture_reader::{self, CaptureItem};
use ingest::write::dead_letter::Rejections;
use std::sync::Arc;

use crate::evaluator::{Evaluator, Output};

/// How fast to replay, in event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// as fast as the machine goes
    Max,
    /// `n` seconds of event time per second of wall time (`1x` is real time)
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let n: f64 = s
            .strip_suffix('x')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("`{s}` is not a speed: use max, 1x, 10x, 0.5x"))?;
        if n > 0.0 {
            Ok(Speed::Times(n))
        } else {
            Err("the speed must be above 0".into())
        }
    }
}

/// What a replay read and did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub messages: u64,
    pub rows: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub late_rows: u64,
    pub outputs: u64,
    pub elapsed: Duration,
    /// where a capture file was cut short (`file:record N`), each also logged
    pub truncated: Vec<String>,
}

impl Summary {
    /// One line for stderr.
    pub fn line(&self) -> String {
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        let truncated = if self.truncated.is_empty() {
            String::new()
        } else {
            format!("; CUT SHORT at {}", self.truncated.join(", "))
        };
        format!(
            "replayed {} messages, {} rows in {:.2} s ({:.0} rows/s); {} late rows; {} rejected{}; {} outputs{truncated}",
            self.messages,
            self.rows,
            self.elapsed.as_secs_f64(),
            self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.late_rows,
            self.rejected.values().sum::<u64>(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            },
            self.outputs
        )
    }
}

/// Event time between evaluations when replaying at full speed: windows are
/// evaluated in groups, which changes nothing in the output but saves planning.
const REPLAY_EVAL_EVERY_NS: i64 = 60 * 1_000_000_000;

/// Replays `paths` through `evaluator`, handing every output to `emit` as soon
/// as its window is final. Bad messages are counted, logged once per reason,
/// and skipped.
pub async fn replay(
    paths: &[PathBuf],
    evaluator: &mut Evaluator,
    speed: Speed,
    emit: impl FnMut(&[Output]) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let rejections = Rejections::new(Arc::new(RejectCounts::default()));
    replay_with(paths, evaluator, speed, &rejections, emit).await
}

/// [`replay`], with bad input reported to `rejections` (which may dead-letter it).
pub async fn replay_with(
    paths: &[PathBuf],
    evaluator: &mut Evaluator,
    speed: Speed,
    rejections: &Rejections,
    mut emit: impl FnMut(&[Output]) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    crate::rules::snapshot::decode_what_is_read(evaluator.rules());
    let reader = capture_reader::open(paths)
        .with_context(|| format!("cannot open the capture {}", show(paths)))?;
    let progress = reader.progress();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<CaptureItem>(64);
    // reading and decoding run on a thread of their own, beside evaluation
    let reading = std::thread::spawn(move || {
        for item in reader {
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut last_eval: Option<i64> = None;
    let mut first_event: Option<i64> = None;
    let mut last_progress = Instant::now();
    let show_progress = std::io::stderr().is_terminal() || progress.bytes_total() > 50 << 20;
    while let Some(item) = rx.recv().await {
        let message = match item {
            CaptureItem::Message(m) => m,
            CaptureItem::Bad(bad) => {
                // counted, logged once per reason, dead-lettered when asked
                bad.report(rejections);
                if bad.truncated {
                    tracing::error!(at = %bad.position, error = %bad.error, "the capture file is cut short");
                    summary.truncated.push(bad.position.to_string());
                }
                continue;
            }
            CaptureItem::Unreadable { position, error } => {
                tracing::error!(at = %position, %error, "cannot read further in this file; going on with the next");
                *summary.rejected.entry("unreadable").or_default() += 1;
                continue;
            }
        };
        summary.messages += 1;
        message.report(rejections);
        let batch = message.decoded.batch;
        summary.rows += batch.num_rows() as u64;
        if let Speed::Times(n) = speed
            && let Ok(t) = crate::window::times(&batch)
            && let Some(max) = t.iter().flatten().max()
        {
            let first = *first_event.get_or_insert(max);
            let due = started + Duration::from_secs_f64(((max - first).max(0) as f64 / 1e9) / n);
            tokio::time::sleep_until(due.into()).await;
        }
        // a capture of Kafka topics keeps each partition a stream of its own
        let stream = crate::window::Stream {
            table: message.decoded.table,
            partition: message.partition.unwrap_or(0),
        };
        evaluator
            .push_from(stream, batch)
            .with_context(|| format!("at {}", message.position))?;
        let due = match (speed, evaluator.watermark(), last_eval) {
            (Speed::Times(_), _, _) => true,
            (Speed::Max, Some(w), Some(last)) => w - last >= REPLAY_EVAL_EVERY_NS,
            (Speed::Max, Some(_), None) => true,
            (Speed::Max, None, _) => false,
        };
        if due && evaluator.has_final_windows() {
            last_eval = evaluator.watermark();
            let out = evaluator.evaluate().await;
            summary.outputs += out.len() as u64;
            emit(&out)?;
        }
        if show_progress && last_progress.elapsed() > Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "replay: {:.0}% of {:.1} MB, {} rows, {} outputs",
                progress.fraction() * 100.0,
                progress.bytes_total() as f64 / 1e6,
                summary.rows,
                summary.outputs
            );
        }
    }
    // A reader that died part way must not pass for the end of the capture.
    if let Err(panic) = reading.join() {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        anyhow::bail!(
            "reading {} stopped part way after {} messages (the reader panicked: {why}); the replay is incomplete",
            show(paths),
            summary.messages
        );
    }
    let out = evaluator.finish().await;
    summary.outputs += out.len() as u64;
    emit(&out)?;
    summary.late_rows = evaluator.stats().late_rows;
    for (reason, n) in rejections.counts().snapshot() {
        *summary.rejected.entry(reason.as_str()).or_default() += n;
    }
    if let Err(e) = rejections.flush() {
        tracing::error!(error = %e, "cannot flush the dead letters");
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
