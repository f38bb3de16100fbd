//! The traffic and attack generator: real HTTP against the shop's gateway on
//! 127.0.0.1, genuine shoppers plus attack or look-alike scenarios, and the
//! ground truth of what was sent (the `shop-load` binary).
//!
//! ```text
//! shop-sim's traffic model (seed): session::baseline ─┐
//!                                  scenario::build ───┴─▶ plan::Projection ─▶ plans (actors, steps in time)
//!                                                                                  │
//!   gateway (X-Forwarded-For) ◀─ client::Runner ◀──────────────────────────────────┘
//!                                                            │
//!                                                            ▼
//!                                       truth.json: class, window (wall clock, UTC), indicators
//! ```
//!
//! Plans are drawn from the seed before anything is sent, by the same traffic
//! model and scenario catalog `shop-sim` renders as telemetry (crate
//! `shop-sim`): for the same seed, rate and scenario, the same requests at the
//! same times from the same clients. What the shop answers does not change
//! them. The truth's window is when a scenario's
//! first request went out and its last answer came in, which is the event
//! time of the telemetry the shop emits for it. Every run is bounded: it stops
//! at its duration (a plan is cut there) or after `max_requests`.

pub mod client;
pub mod plan;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::services::security::Keys;
use crate::sim::model::Model;
use crate::sim::request::{Nanos, Request, secs};
use crate::sim::{DEFAULT_START, Truth, TruthEntry, scenario, session};
use plan::{Accounts, Plan, Projection};

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
    #[error(transparent)]
    UnknownScenario(#[from] scenario::UnknownScenario),
    #[error(
        "scenario {name:?} would start at {offset_s:.0} s, at or after the run's end ({seconds:.0} s); lower its offset or raise --duration"
    )]
    OutsideRun {
        name: String,
        offset_s: f64,
        seconds: f64,
    },
}

/// Where a run's second 0 sits in the traffic model's time.
const START: Nanos = DEFAULT_START;

/// The baseline's plan first, then one per scenario, in the order asked.
pub fn plans(cfg: &Config) -> Result<Vec<Plan>, LoadError> {
    let model = Model::new(cfg.seed);
    let (first, mut accounts) = baseline(&model, cfg);
    let mut out = vec![first];
    for (index, (name, offset)) in cfg.scenarios.iter().enumerate() {
        let s = scenario::lookup(name)?;
        let t0 = offset.unwrap_or(s.offset_s as f64);
        if !(0.0..cfg.seconds).contains(&t0) {
            return Err(LoadError::OutsideRun {
                name: name.clone(),
                offset_s: t0,
                seconds: cfg.seconds,
            });
        }
        let inj = scenario::build(s, cfg.seed, index, &model, START + secs(t0));
        let mut p = Plan::new(s.name, s.class, s.about);
        p.routes = inj
            .extra
            .get("http.route")
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let mut projection = Projection::new(&model, START, cfg.tag, p, accounts);
        projection.add(&sorted(inj.context), true);
        projection.add(&inj.requests, false);
        let (plan, given) = projection.finish(cfg.seconds);
        out.push(plan);
        accounts = given;
    }
    Ok(out)
}

/// Genuine shoppers at about `cfg.rate` requests a second: the traffic
/// model's baseline for the seed, and the accounts it gave the model's users.
fn baseline(model: &Model, cfg: &Config) -> (Plan, Accounts) {
    let p = Plan::new(
        "baseline",
        scenario::Class::Benign,
        "genuine shoppers: browse, search, add to cart, log in (6% mistype), check out and pay",
    );
    let requests = session::baseline(cfg.seed, model, START, START + secs(cfg.seconds), cfg.rate);
    let mut projection = Projection::new(model, START, cfg.tag, p, Accounts::default());
    projection.add(&sorted(requests), false);
    projection.finish(cfg.seconds)
}

/// Requests in the order the simulator renders them.
fn sorted(mut requests: Vec<Request>) -> Vec<Request> {
    requests.sort_by_key(|r| (r.start, r.ids));
    requests
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
