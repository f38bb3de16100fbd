//! Where alerts and KPI values go. One module per sink, each implementing
//! [`Sink`]; the [`fanout`] puts them behind one boundary: a bounded queue and
//! a tokio task per sink, so a slow, failing or absent sink never blocks
//! evaluation or ingestion. A full queue drops (and counts) what does not fit.
//!
//! - [`stdout`]: JSON lines or a table (not durable: Kafka offsets do not wait for it)
//! - [`alertmanager`]: Prometheus Alertmanager's v2 API (durable)
//! - [`webhook`]: a JSON body, or Slack's `{"text": ...}` (durable)
//! - `postgres` (cargo feature `postgres`): the BI store (durable)
//! - `kafka` (cargo feature `kafka`): a Kafka topic of alerts, keyed by identity (durable)
//!
//! Every alert carries its identity ([`crate::alerts::Alert::identity`]: rule,
//! rule version, entity, incident start), so a sink that receives an alert
//! again after a restart updates instead of duplicating.

use async_trait::async_trait;

use crate::evaluator::Output;

pub mod alertmanager;
pub mod fanout;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod stdout;
#[cfg(test)]
pub(crate) mod testing;
pub mod webhook;

pub use fanout::FanOut;

/// Which outputs a sink takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// alerts only
    Alerts,
    /// alerts and KPI values
    Everything,
}

impl Takes {
    pub fn takes(self, output: &Output) -> bool {
        match self {
            Takes::Alerts => matches!(output, Output::Alert(_)),
            Takes::Everything => true,
        }
    }
}

/// One place outputs are delivered to, driven by its task in the [`FanOut`].
#[async_trait]
pub trait Sink: Send + 'static {
    /// Short name, the `sink` label of the metrics: `alertmanager`, `webhook`...
    fn name(&self) -> &str;
    /// Where it delivers, for messages (no secrets).
    fn address(&self) -> String;
    /// Whether Kafka offset commits wait until this sink has the outputs.
    fn durable(&self) -> bool;
    /// Which outputs it takes; the fan-out queues only those.
    fn takes(&self) -> Takes;
    /// Delivers one batch, one try. On an error the fan-out tries the same
    /// batch again with backoff, unless the error is permanent.
    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), SinkError>;
    /// Runs about once a second, between deliveries (e.g. to re-send what
    /// must be sent periodically).
    async fn tick(&mut self) {}
}

/// A delivery that failed, naming the sink and where it delivers.
#[derive(Debug, thiserror::Error)]
#[error("{sink} at {address}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub address: String,
    pub message: String,
    /// trying the same outputs again cannot succeed (e.g. HTTP 400): they are dropped
    pub permanent: bool,
}

/// What one sink did so far; shown in `/metrics` as `otelguard_sink_*{sink}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub sink: String,
    /// whether Kafka offsets wait for it
    pub durable: bool,
    /// outputs taken onto its queue
    pub queued: u64,
    /// outputs it delivered
    pub delivered: u64,
    /// deliveries tried again after a failure
    pub retried: u64,
    /// outputs dropped: its queue was full, or it refused them for good
    pub dropped: u64,
    /// outputs queued and not yet delivered
    pub depth: u64,
    /// the highest batch sequence number it has fully delivered
    pub progress: u64,
}

/// How an HTTP sink's answer or failure reads as a [`SinkError`]: 4xx but
/// 408 and 429 are permanent, everything else is tried again.
pub(crate) async fn http_outcome(
    sink: &str,
    address: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), SinkError> {
    let error = |message: String, permanent: bool| SinkError {
        sink: sink.to_string(),
        address: address.to_string(),
        message,
        permanent,
    };
    match sent {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            let text: String = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            let permanent = status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS;
            Err(error(format!("HTTP {status}: {}", text.trim()), permanent))
        }
        Err(e) => Err(error(error_chain(&e), false)),
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
