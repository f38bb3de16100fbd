//! The traffic and attack generator: real HTTP against the shop's gateway on
//! 127.0.0.1, genuine shoppers plus attack or look-alike scenarios, and the
//! ground truth of what was sent (the `shop-load` binary).
//!
//! ```text
//! plan::baseline ──┐
//! scenarios::plan ─┴─▶ plans (actors, steps in time) ─▶ client::Runner ─▶ gateway (X-Forwarded-For)
//!                                                            │
//!                                                            ▼
//!                                       truth.json: class, window (wall clock, UTC), indicators
//! ```
//!
//! Plans are drawn from the seed before anything is sent; what the shop
//! answers does not change them. The truth's window is when a scenario's
//! first request went out and its last answer came in, which is the event
//! time of the telemetry the shop emits for it. Every run is bounded: it stops
//! at its duration (a plan is cut there) or after `max_requests`.

pub mod client;
pub mod plan;
pub mod scenarios;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::services::security::Keys;
use crate::sim::{Truth, TruthEntry};
use plan::Plan;

/// What to send.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Genuine requests per second.
    pub rate: f64,
    /// Seconds the run lasts.
    pub seconds: f64,
    /// Scenarios, each with its start in seconds after the run's start (None: its default).
    pub scenarios: Vec<(String, Option<f64>)>,
    /// Makes e-mail addresses of new registrations unique to the run.
    pub tag: u64,
}

/// Errors in what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("unknown scenario {name:?}; known: {known}")]
    UnknownScenario { name: String, known: String },
    #[error(
        "scenario {name:?} would start at {offset_s:.0} s, at or after the run's end ({seconds:.0} s); lower its offset or raise --duration"
    )]
    OutsideRun {
        name: String,
        offset_s: f64,
        seconds: f64,
    },
}

/// The baseline's plan first, then one per scenario, in the order asked.
pub fn plans(cfg: &Config) -> Result<Vec<Plan>, LoadError> {
    let mut out = vec![plan::baseline(cfg.seed, cfg.tag, cfg.rate, cfg.seconds)];
    for (index, (name, offset)) in cfg.scenarios.iter().enumerate() {
        let s = scenarios::find(name).ok_or_else(|| LoadError::UnknownScenario {
            name: name.clone(),
            known: scenarios::SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let t0 = offset.unwrap_or(s.offset_s);
        if !(0.0..cfg.seconds).contains(&t0) {
            return Err(LoadError::OutsideRun {
                name: name.clone(),
                offset_s: t0,
                seconds: cfg.seconds,
            });
        }
        out.push(scenarios::plan(
            s,
            cfg.seed,
            index,
            cfg.tag,
            t0,
            cfg.seconds,
        ));
    }
    Ok(out)
}

/// RFC 3339 UTC, milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The truth of a finished run: one entry per scenario plan (not the
/// baseline), its indicators hashed with `keys` (the shop's).
pub fn truth(
    cfg: &Config,
    keys: &Keys,
    capture: &str,
    plans: &[Plan],
    tallies: &[client::Tally],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Truth {
    let scenarios = plans
        .iter()
        .zip(tallies)
        .skip(1)
        .map(|(p, t)| TruthEntry {
            name: p.name.clone(),
            class: p.class.as_str().to_string(),
            start: rfc3339(t.first.unwrap_or(start)),
            end: rfc3339(t.last.unwrap_or(end)),
            description: p.about.clone(),
            requests: t.own as usize,
            indicators: p.indicators(keys),
        })
        .collect();
    Truth {
        capture: capture.to_string(),
        seed: cfg.seed,
        start: rfc3339(start),
        end: rfc3339(end),
        rate: cfg.rate,
        scenarios,
    }
}

#[cfg(test)]
mod tests;
