//! The shop's traffic model and its telemetry simulator: benign shoppers plus
//! injected scenarios, rendered as OpenTelemetry Collector file-exporter
//! captures with their ground truth.
//!
//! The traffic model (the population in [`model`], the shoppers in
//! [`session`], the scenario catalog in [`scenario`]) is the one both drivers
//! play: `shop-sim` (this crate's binary) renders its requests as telemetry
//! ([`otlp`]); `shop-load` (crate `shop`) sends the same requests to the real
//! shop. This crate needs no database, HTTP or OpenTelemetry SDK to build.
//!
//! ```text
//! Model (catalog, users) ─┐
//! session::baseline ──────┼─▶ requests, sorted by time ─▶ otlp::Renderer ─▶ JSON lines (zstd)
//! scenario::build ... ────┘                                                 truth.json
//! ```
//!
//! Everything is drawn from streams of one seed: the same seed and arguments
//! give byte-identical output. Nothing reads the clock.

pub mod hash;
pub mod model;
pub mod otlp;
pub mod request;
pub mod rng;
pub mod scenario;
pub mod session;

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use model::Model;
use request::{Nanos, Request, SECOND};
use scenario::Scenario;

/// Default start of event time: 2026-01-15T10:00:00Z.
pub const DEFAULT_START: Nanos = 1_768_471_200 * SECOND;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Benign requests per second.
    pub rate: f64,
    pub start: Nanos,
    pub duration: Nanos,
    /// Scenarios, each with its start offset from `start` (None: its default).
    pub scenarios: Vec<(String, Option<Nanos>)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            rate: 20.0,
            start: DEFAULT_START,
            duration: 600 * SECOND,
            scenarios: Vec::new(),
        }
    }
}

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    UnknownScenario(#[from] scenario::UnknownScenario),
    #[error(
        "scenario {name:?} would start at {offset_s} s, at or after the capture's end ({duration_s} s); lower its offset or raise --duration"
    )]
    OutsideCapture {
        name: String,
        offset_s: i64,
        duration_s: i64,
    },
    #[error("writing the capture: {0}")]
    Io(#[from] std::io::Error),
}

/// Ground truth of a capture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Truth {
    /// The capture's file name.
    pub capture: String,
    pub seed: u64,
    pub start: String,
    pub end: String,
    /// Benign requests per second of the baseline.
    pub rate: f64,
    pub scenarios: Vec<TruthEntry>,
}

/// One injected scenario in the truth file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TruthEntry {
    pub name: String,
    pub class: String,
    pub start: String,
    pub end: String,
    pub description: String,
    pub requests: usize,
    pub indicators: BTreeMap<String, Vec<String>>,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct Run {
    pub truth: Truth,
    pub counts: otlp::Counts,
}

/// A duration that is not one.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a duration: use e.g. 90s, 10m, 1h30m")]
pub struct BadDuration(pub String);

/// `90s`, `10m`, `1h`, `1h30m`, `2.5m`, or plain seconds, as nanoseconds:
/// the one duration syntax of `shop-sim` and `shop-load`.
///
/// ```
/// use shop_sim::{parse_duration, request::SECOND};
/// assert_eq!(parse_duration("1h30m"), Ok(5400 * SECOND));
/// assert!(parse_duration("ten").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Nanos, BadDuration> {
    let bad = || BadDuration(text.to_string());
    let mut total: f64 = 0.0;
    let mut num = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(bad()),
        };
        total += num.parse::<f64>().map_err(|_| bad())? * unit;
        num.clear();
    }
    if !num.is_empty() {
        total += num.parse::<f64>().map_err(|_| bad())?;
    }
    if text.trim().is_empty() || !total.is_finite() {
        return Err(bad());
    }
    Ok((total * 1e9).round() as Nanos)
}

/// RFC 3339 UTC, milliseconds.
pub fn rfc3339(t: Nanos) -> String {
    DateTime::<Utc>::from_timestamp_nanos(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Simulates and writes the capture (uncompressed OTLP/JSON lines) to `out`.
/// The truth's `capture` field is left empty for the caller to fill.
pub fn generate<W: Write>(cfg: &Config, out: W) -> Result<(W, Run), SimError> {
    let end = cfg.start + cfg.duration;
    let model = Model::new(cfg.seed);
    let mut requests: Vec<Request> = session::baseline(cfg.seed, &model, cfg.start, end, cfg.rate);
    let mut entries = Vec::new();
    for (index, (name, offset)) in cfg.scenarios.iter().enumerate() {
        let s: &Scenario = scenario::lookup(name)?;
        let offset = offset.unwrap_or(s.offset_s * SECOND);
        if offset >= cfg.duration || offset < 0 {
            return Err(SimError::OutsideCapture {
                name: name.clone(),
                offset_s: offset / SECOND,
                duration_s: cfg.duration / SECOND,
            });
        }
        let inj = scenario::build(s, cfg.seed, index, &model, cfg.start + offset);
        let inside = |r: &Request| r.start >= cfg.start && r.start < end;
        let own: Vec<Request> = inj.requests.iter().filter(|r| inside(r)).cloned().collect();
        let first = own
            .iter()
            .map(|r| r.start)
            .min()
            .unwrap_or(cfg.start + offset);
        let last = own
            .iter()
            .map(|r| r.start + r.duration)
            .max()
            .unwrap_or(first)
            .min(end);
        let mut kept = inj;
        kept.requests = own;
        entries.push(TruthEntry {
            name: s.name.to_string(),
            class: s.class.as_str().to_string(),
            start: rfc3339(first),
            end: rfc3339(last),
            description: s.about.to_string(),
            requests: kept.requests.len(),
            indicators: kept.indicators(),
        });
        requests.extend(kept.context.into_iter().filter(|r| inside(r)));
        requests.extend(kept.requests);
    }
    requests.sort_by_key(|r| (r.start, r.ids));
    let mut renderer = otlp::Renderer::new(out, cfg.start);
    for r in &requests {
        renderer.push(r)?;
    }
    let (out, counts) = renderer.finish()?;
    let truth = Truth {
        capture: String::new(),
        seed: cfg.seed,
        start: rfc3339(cfg.start),
        end: rfc3339(end),
        rate: cfg.rate,
        scenarios: entries,
    };
    Ok((out, Run { truth, counts }))
}

#[cfg(test)]
mod tests;
