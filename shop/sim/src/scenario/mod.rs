//! Scenarios: attack traffic, or benign traffic that looks like an attack,
//! injected into the baseline at an offset, with the ground truth that tells a
//! rule test what it should (and should not) find.
//!
//! [`SCENARIOS`] is the one catalog both drivers read: `shop-sim` renders a
//! scenario's requests as telemetry, `shop-load` sends the same requests to
//! the real shop (`shop::load::plan::Projection`). Its figures (default
//! offset, how long the scenario lasts, its own requests a second) are what
//! the builders use and what a test checks the built traffic against.
//!
//! Each scenario draws from its own random stream, so adding one to a capture
//! leaves the baseline and the other scenarios unchanged.

mod attacks;
mod lookalikes;

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Model, User};
use super::request::{Nanos, Request, SECOND, Value};
use super::rng::Rng;

/// Whether a scenario is an attack (a rule should fire) or a look-alike (rules
/// should stay quiet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Attack,
    Benign,
}

impl Class {
    /// `attack` or `benign`, as in the truth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Attack => "attack",
            Class::Benign => "benign",
        }
    }
}

/// What a scenario needs to build its traffic.
pub struct Ctx<'a> {
    pub rng: Rng,
    pub model: &'a Model,
    /// When the scenario starts.
    pub t0: Nanos,
    /// How long it lasts (its catalog entry's `seconds`).
    pub seconds: Nanos,
}

impl Ctx<'_> {
    /// When the scenario ends.
    pub fn end(&self) -> Nanos {
        self.t0 + self.seconds
    }

    /// How long it lasts, in seconds.
    pub fn span(&self) -> f64 {
        self.seconds as f64 / SECOND as f64
    }
}

/// The traffic a scenario adds.
#[derive(Debug, Default)]
pub struct Injected {
    /// The scenario's own requests: they make its truth window and indicators.
    pub requests: Vec<Request>,
    /// Genuine traffic the scenario needs around it (a victim's usual login
    /// before a takeover); outside the truth window and indicators.
    pub context: Vec<Request>,
    /// Indicators beyond those collected from the requests (e.g. `http.route`).
    pub extra: BTreeMap<&'static str, BTreeSet<String>>,
}

impl Injected {
    fn extra(&mut self, key: &'static str, value: &str) {
        self.extra.entry(key).or_default().insert(value.to_string());
    }

    /// The indicators: every client address, session, user hash and card
    /// fingerprint in the scenario's requests, plus the extras.
    pub fn indicators(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        for k in INDICATOR_KEYS {
            m.insert(k, BTreeSet::new());
        }
        for r in &self.requests {
            m.entry("client.address")
                .or_default()
                .insert(r.client.address.clone());
            if let Some(s) = &r.client.session {
                m.entry("session.id").or_default().insert(s.clone());
            }
            for e in &r.events {
                for (k, v) in &e.attrs {
                    if let ("user.hash" | "shop.payment.card.fingerprint", Value::Str(s)) = (*k, v)
                    {
                        m.entry(k).or_default().insert(s.clone());
                    }
                }
            }
        }
        for (k, v) in &self.extra {
            m.entry(k).or_default().extend(v.iter().cloned());
        }
        m.into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().collect()))
            .collect()
    }
}

/// Indicator kinds every truth entry lists (possibly empty).
pub const INDICATOR_KEYS: [&str; 4] = [
    "client.address",
    "user.hash",
    "session.id",
    "shop.payment.card.fingerprint",
];

/// A scenario the simulator can inject.
pub struct Scenario {
    pub name: &'static str,
    pub class: Class,
    /// One line: what it does, with its figures.
    pub about: &'static str,
    /// Default start, seconds after the capture's start.
    pub offset_s: i64,
    /// How long it lasts, seconds: its attack, or the arrivals of its
    /// visitors (whose visits may go on after).
    pub seconds: i64,
    /// Its own requests a second over `seconds`, about.
    pub rate: f64,
    pub build: fn(&mut Ctx<'_>) -> Injected,
}

/// Every scenario, attacks first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "http_flood",
        class: Class::Attack,
        about: "one address, ~220 req/s for 80 s on GET /api/products/{id}, no session; the gateway rate limiter answers 429 to ~85% after 20 s",
        offset_s: 180,
        seconds: 80,
        rate: 220.0,
        build: attacks::http_flood,
    },
    Scenario {
        name: "distributed_flood",
        class: Class::Attack,
        about: "200 botnet addresses each sending GET /api/products/{id} every ~2.2 s (27/min) for 120 s: ~90 req/s on one route",
        offset_s: 180,
        seconds: 120,
        rate: 88.0,
        build: attacks::distributed_flood,
    },
    Scenario {
        name: "search_abuse",
        class: Class::Attack,
        about: "2 addresses, ~1.4 searches/s each for 4 min with long queries: latency 1.2 s rising to 6 s, 5xx rising from 0 to 45%",
        offset_s: 180,
        seconds: 240,
        rate: 2.6,
        build: attacks::search_abuse,
    },
    Scenario {
        name: "scraping",
        class: Class::Attack,
        about: "one address and session walking /api/products/{id} sequentially, one every ~1.3 s for 6 min (~270 products), no cart",
        offset_s: 180,
        seconds: 360,
        rate: 0.8,
        build: attacks::scraping,
    },
    Scenario {
        name: "brute_force",
        class: Class::Attack,
        about: "one account, one address: a login every ~4 s for 4 min; 10 bad_password, then locked",
        offset_s: 180,
        seconds: 240,
        rate: 0.2,
        build: attacks::brute_force,
    },
    Scenario {
        name: "brute_force_distributed",
        class: Class::Attack,
        about: "one account from 45 rotating botnet addresses (1-2 attempts each), a login every ~5 s for 4 min; 10 bad_password, then locked",
        offset_s: 180,
        seconds: 240,
        rate: 0.2,
        build: attacks::brute_force_distributed,
    },
    Scenario {
        name: "password_spraying",
        class: Class::Attack,
        about: "3 addresses, 60 accounts (12 unknown), 1-2 common passwords each, one attempt every ~8 s over 12 min; 1 success",
        offset_s: 60,
        seconds: 720,
        rate: 0.125,
        build: attacks::password_spraying,
    },
    Scenario {
        name: "credential_stuffing",
        class: Class::Attack,
        about: "6 addresses replay 420 leaked pairs in 3 min (~2.3/s): 55% unknown_user, the rest bad_password but ~6% success",
        offset_s: 180,
        seconds: 180,
        rate: 2.4,
        build: attacks::credential_stuffing,
    },
    Scenario {
        name: "account_takeover",
        class: Class::Attack,
        about: "the victim shops from home; 2.5 min later a new address fails 4 times on the account in ~30 s (the shop locks at 5), succeeds, and orders with a new card",
        offset_s: 240,
        seconds: 70,
        rate: 0.15,
        build: attacks::account_takeover,
    },
    Scenario {
        name: "card_testing",
        class: Class::Attack,
        about: "one guest session and address: 1 cheap cart, then 45 payments of 1-3 EUR every ~6 s with ~38 distinct cards, 85% declined",
        offset_s: 180,
        seconds: 270,
        rate: 0.18,
        build: attacks::card_testing,
    },
    Scenario {
        name: "password_spraying_distributed",
        class: Class::Attack,
        about: "90 residential-looking botnet addresses, 3-4 accounts each (~315, a fifth unknown), 1-2 common passwords: ~470 attempts at random moments over 10 min; 1 success",
        offset_s: 60,
        seconds: 600,
        rate: 0.76,
        build: attacks::password_spraying_distributed,
    },
    Scenario {
        name: "credential_stuffing_low_slow",
        class: Class::Attack,
        about: "a pool of 400 botnet addresses, 1-2 tries each, ~600 leaked pairs over 15 min (~0.7/s): 55% unknown_user, the rest bad_password but ~6% success",
        offset_s: 60,
        seconds: 900,
        rate: 0.68,
        build: attacks::credential_stuffing_low_slow,
    },
    Scenario {
        name: "card_testing_distributed",
        class: Class::Attack,
        about: "60 botnet addresses starting over 7 min, each a cheap cart then 3-5 payments of 1-3 EUR with new cards (~240 payments, at most 5 cards an address), 85% declined",
        offset_s: 180,
        seconds: 420,
        rate: 1.0,
        build: attacks::card_testing_distributed,
    },
    Scenario {
        name: "flash_sale",
        class: Class::Benign,
        about: "a 5 min surge of ~750 extra genuine sessions (~2.5/s, ~20 req/s more) from many addresses, focused on one product, many real orders",
        offset_s: 180,
        seconds: 300,
        rate: 17.5,
        build: lookalikes::flash_sale,
    },
    Scenario {
        name: "nat_office",
        class: Class::Benign,
        about: "40 employees behind one address arrive over 5 min, each logs in to their own account (8% typo) and shops for up to 10 min",
        offset_s: 60,
        seconds: 300,
        rate: 1.1,
        build: lookalikes::nat_office,
    },
    Scenario {
        name: "password_typos",
        class: Class::Benign,
        about: "8 customers over 6 min, each from their own address, mistype their password 1-2 times, then log in and shop",
        offset_s: 120,
        seconds: 360,
        rate: 0.2,
        build: lookalikes::password_typos,
    },
    Scenario {
        name: "power_user",
        class: Class::Benign,
        about: "one logged-in customer browsing fast (median 0.5 s between requests, ~0.9 req/s) for 8 min, with 3 orders",
        offset_s: 120,
        seconds: 480,
        rate: 0.9,
        build: lookalikes::power_user,
    },
    Scenario {
        name: "campaign_logins",
        class: Class::Benign,
        about: "an e-mail campaign brings 600 registered customers back within 5 min (most in the first two), each from their own address, logging in on arrival (~6% typos), many ordering",
        offset_s: 180,
        seconds: 300,
        rate: 16.3,
        build: lookalikes::campaign_logins,
    },
];

/// The catalog as `shop-sim --list-scenarios` and `shop-load
/// --list-scenarios` print it: one line a scenario.
pub fn listing() -> String {
    let mut out = format!(
        "{:<30} {:<7} {:>7} {:>7} {:>8}  what\n",
        "scenario", "class", "offset", "lasts", "req/s"
    );
    for s in SCENARIOS {
        out.push_str(&format!(
            "{:<30} {:<7} {:>6}s {:>6}s {:>8}  {}\n",
            s.name,
            s.class.as_str(),
            s.offset_s,
            s.seconds,
            s.rate,
            s.about
        ));
    }
    out
}

/// A scenario by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// A scenario name the catalog does not have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown scenario {name:?}; known: {known}")]
pub struct UnknownScenario {
    pub name: String,
    /// The catalog's names, comma-separated.
    pub known: String,
}

/// A scenario by name, or an error that lists the known ones.
pub fn lookup(name: &str) -> Result<&'static Scenario, UnknownScenario> {
    find(name).ok_or_else(|| UnknownScenario {
        name: name.to_string(),
        known: SCENARIOS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Builds a scenario's traffic starting at `t0`, from the seed's stream for it
/// (`index` tells apart two runs of the same scenario in one capture).
pub fn build(s: &Scenario, seed: u64, index: usize, model: &Model, t0: Nanos) -> Injected {
    let mut ctx = Ctx {
        rng: Rng::stream(seed, &format!("scenario/{}/{index}", s.name)),
        model,
        t0,
        seconds: s.seconds * SECOND,
    };
    let mut inj = (s.build)(&mut ctx);
    inj.requests.sort_by_key(|r| (r.start, r.ids));
    inj
}

/// Distinct registered users.
fn users<'m>(ctx: &mut Ctx<'m>, n: usize) -> Vec<&'m User> {
    let model = ctx.model;
    let mut out: Vec<&User> = Vec::with_capacity(n);
    while out.len() < n.min(model.users.len()) {
        let u = ctx.rng.pick(&model.users);
        if !out.iter().any(|x| x.id == u.id) {
            out.push(u);
        }
    }
    out
}

/// Seconds to nanoseconds.
pub(crate) fn at(s: f64) -> Nanos {
    super::request::secs(s)
}

/// One second, for scenario arithmetic.
pub(crate) const S: Nanos = SECOND;

/// Passwords the attack scenarios try (never emitted), for leak tests.
pub fn attacks_passwords() -> &'static [&'static str] {
    &attacks::SPRAYED_PASSWORDS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row's figures hold for the traffic its builder makes (seed 1,
    /// at its default offset): it starts within its time, and makes its
    /// requests a second within a quarter of the row's.
    #[test]
    fn the_catalog_figures_hold() {
        let model = Model::new(1);
        let t0 = crate::DEFAULT_START;
        for s in SCENARIOS {
            let inj = build(s, 1, 0, &model, t0 + s.offset_s * SECOND);
            let first = inj.requests.iter().map(|r| r.start).min().unwrap_or(0);
            let start = t0 + s.offset_s * SECOND;
            assert!(
                (start..start + s.seconds * SECOND).contains(&first),
                "{} starts at {} s",
                s.name,
                (first - t0) / SECOND
            );
            let rate = inj.requests.len() as f64 / s.seconds as f64;
            assert!(
                (0.75..=1.34).contains(&(rate / s.rate)),
                "{}: {rate:.3} requests a second, the catalog says {}",
                s.name,
                s.rate
            );
        }
    }

    #[test]
    fn the_listing_has_every_scenario_once() {
        let text = listing();
        for s in SCENARIOS {
            let lines = text
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(s.name))
                .count();
            assert_eq!(lines, 1, "{}", s.name);
        }
    }
}
