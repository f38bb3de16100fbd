use std::collections::BTreeSet;

use chrono::TimeZone;

use super::plan::{Action, Card, Plan, with_check_digit};
use super::scenarios::SCENARIOS;
use super::*;
use crate::services::security::luhn_valid;

const RUN: f64 = 420.0;

fn config(names: &[&str]) -> Config {
    Config {
        seed: 7,
        rate: 4.0,
        seconds: RUN,
        scenarios: names.iter().map(|n| (n.to_string(), None)).collect(),
        tag: 1,
    }
}

fn one(name: &str) -> Plan {
    plans(&config(&[name])).expect("a known scenario").remove(1)
}

fn attacker_pool(address: &str) -> bool {
    address.starts_with("203.0.113.")
        || address
            .strip_prefix("10.")
            .and_then(|r| r.split('.').next())
            .and_then(|o| o.parse::<u32>().ok())
            .is_some_and(|o| (100..=127).contains(&o))
}

fn addresses(p: &Plan) -> BTreeSet<&str> {
    p.own_steps()
        .map(|s| p.actors[s.actor].address.as_str())
        .collect()
}

#[test]
fn every_scenario_is_bounded_and_inside_the_run() {
    for s in SCENARIOS {
        let p = one(s.name);
        let n = p.own_steps().count();
        assert!(n > 0, "{} plans nothing", s.name);
        assert!(n <= 10_000, "{} plans {n} requests", s.name);
        assert!(
            p.steps.iter().all(|st| (0.0..RUN).contains(&st.at)),
            "{} has steps outside the run",
            s.name
        );
        let first = p.own_steps().map(|st| st.at).fold(f64::MAX, f64::min);
        assert!(
            first >= s.offset_s - 1e-9,
            "{} starts at {first} before its offset {}",
            s.name,
            s.offset_s
        );
        assert!(
            s.offset_s + s.needs_s <= RUN,
            "{} needs more than a 7 min run",
            s.name
        );
        assert!(p.steps.windows(2).all(|w| w[0].at <= w[1].at));
    }
}

#[test]
fn attackers_and_genuine_shoppers_use_separate_address_pools() {
    for s in SCENARIOS {
        let p = one(s.name);
        for a in addresses(&p) {
            assert_eq!(
                attacker_pool(a),
                s.class == crate::sim::scenario::Class::Attack,
                "{}: {a}",
                s.name
            );
        }
    }
    let base = plan::baseline(7, 1, 6.0, 300.0);
    assert!(addresses(&base).iter().all(|a| !attacker_pool(a)));
}

#[test]
fn the_baseline_comes_near_its_rate_and_checks_out() {
    let base = plan::baseline(3, 1, 6.0, 600.0);
    let per_second = base.steps.len() as f64 / 600.0;
    assert!((3.0..9.0).contains(&per_second), "{per_second} req/s");
    let checkouts = base
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Checkout(_)))
        .count();
    assert!(checkouts >= 5, "{checkouts} checkouts in 10 min");
    // The first fifty accounts are left to the end-to-end tests.
    for s in &base.steps {
        if let Action::Login { email, .. } = &s.action
            && let Some(n) = email
                .strip_prefix("shopper")
                .and_then(|r| r.get(..4))
                .and_then(|d| d.parse::<u32>().ok())
        {
            assert!(n > 50, "{email}");
        }
    }
}

#[test]
fn plans_depend_on_the_seed_only() {
    let a = plans(&config(&["credential_stuffing"])).expect("plans");
    let b = plans(&config(&["credential_stuffing"])).expect("plans");
    assert_eq!(a[1].steps, b[1].steps);
    assert_eq!(a[0].steps, b[0].steps);
    let mut other = config(&["credential_stuffing"]);
    other.seed = 8;
    assert_ne!(plans(&other).expect("plans")[1].steps, a[1].steps);
}

/// Login attempts per client address, by time.
fn logins_by_address(p: &Plan) -> std::collections::BTreeMap<&str, Vec<f64>> {
    let mut per: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for s in p.own_steps() {
        if matches!(s.action, Action::Login { .. }) {
            per.entry(p.actors[s.actor].address.as_str())
                .or_default()
                .push(s.at);
        }
    }
    per
}

/// The most logins of one address in any minute: the shop allows 30.
fn busiest_minute(times: &[f64]) -> usize {
    times
        .iter()
        .map(|&t| times.iter().filter(|&&u| u >= t && u < t + 60.0).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn brute_force_hits_one_account_from_one_address_within_the_login_limit() {
    let p = one("brute_force");
    let ind = p.indicators(&Keys::development());
    assert_eq!(ind["client.address"].len(), 1);
    assert_eq!(ind["user.hash"].len(), 1);
    let per = logins_by_address(&p);
    let logins = per.values().next().cloned().unwrap_or_default();
    assert!(logins.len() >= 20, "{} attempts", logins.len());
    assert!(busiest_minute(&logins) <= 30);
}

#[test]
fn credential_stuffing_stays_under_the_login_limit_per_address() {
    let p = one("credential_stuffing");
    let per = logins_by_address(&p);
    assert_eq!(per.len(), 6);
    for (a, times) in per {
        let n = busiest_minute(&times);
        assert!(n <= 30, "{a}: {n} logins in a minute");
    }
}

#[test]
fn card_testing_uses_many_cards_mostly_dead() {
    let p = one("card_testing");
    let cards: Vec<&Card> = p
        .own_steps()
        .filter_map(|s| match &s.action {
            Action::Checkout(c) => Some(c),
            _ => None,
        })
        .collect();
    let distinct: BTreeSet<&str> = cards.iter().map(|c| c.number.as_str()).collect();
    assert!(distinct.len() >= 15, "{} cards", distinct.len());
    let dead = cards
        .iter()
        .filter(|c| !luhn_valid(&c.number) || c.expiry == "03/24")
        .count();
    assert!(
        dead * 10 >= cards.len() * 7,
        "{dead} of {} dead",
        cards.len()
    );
    let fps = &p.indicators(&Keys::development())["shop.payment.card.fingerprint"];
    assert_eq!(fps.len(), distinct.len());
}

#[test]
fn floods_name_their_route_and_bots_keep_no_session() {
    for name in ["http_flood", "distributed_flood"] {
        let p = one(name);
        let ind = p.indicators(&Keys::development());
        assert_eq!(ind["http.route"], vec!["/api/products/{id}".to_string()]);
        assert!(p.actors.iter().all(|a| a.parallel));
    }
    let d = one("distributed_flood");
    assert!(addresses(&d).len() >= 50);
}

#[test]
fn account_takeover_keeps_the_victims_own_visit_out_of_the_truth() {
    let p = one("account_takeover");
    assert!(p.steps.iter().any(|s| s.context));
    let ind = p.indicators(&Keys::development());
    assert_eq!(ind["client.address"].len(), 1);
    assert_eq!(ind["user.hash"].len(), 1);
    assert_eq!(ind["shop.payment.card.fingerprint"].len(), 1);
    let failures = p
        .own_steps()
        .filter(|s| matches!(&s.action, Action::Login { password, .. } if !password.starts_with("shopper-")))
        .count();
    assert_eq!(failures, 4);
}

#[test]
fn customer_cards_pass_luhn_and_mistyped_ones_do_not() {
    let c = plan::Account::seeded(77).card();
    assert!(luhn_valid(&c.number) && c.number.starts_with("4242"));
    assert!(!luhn_valid(&c.mistyped().number));
    assert_eq!(with_check_digit("424242424242424"), "4242424242424242");
}

#[test]
fn the_truth_has_the_shape_rules_test_reads() {
    let cfg = config(&["brute_force", "power_user"]);
    let ps = plans(&cfg).expect("plans");
    let start = Utc
        .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .expect("a time");
    let mut tallies = vec![client::Tally::default(); ps.len()];
    tallies[1].first = Some(start + chrono::Duration::seconds(60));
    tallies[1].last = Some(start + chrono::Duration::seconds(240));
    tallies[1].own = 45;
    let t = truth(
        &cfg,
        &Keys::development(),
        "x.jsonl.zst",
        &ps,
        &tallies,
        start,
        start + chrono::Duration::seconds(420),
    );
    let v = serde_json::to_value(&t).expect("json");
    assert_eq!(v["capture"], "x.jsonl.zst");
    let s = &v["scenarios"];
    assert_eq!(s.as_array().map(Vec::len), Some(2));
    assert_eq!(s[0]["name"], "brute_force");
    assert_eq!(s[0]["class"], "attack");
    assert_eq!(s[0]["start"], "2026-11-25T12:01:00.000Z");
    assert_eq!(s[0]["end"], "2026-11-25T12:04:00.000Z");
    assert_eq!(s[1]["class"], "benign");
    assert!(
        s[0]["indicators"]["user.hash"][0]
            .as_str()
            .is_some_and(|h| h.len() == 16)
    );
    assert!(s[0]["indicators"].get("session.id").is_none());
}

#[test]
fn offsets_outside_the_run_are_refused() {
    let mut cfg = config(&["brute_force"]);
    cfg.scenarios[0].1 = Some(RUN);
    assert!(matches!(plans(&cfg), Err(LoadError::OutsideRun { .. })));
    assert!(matches!(
        plans(&config(&["nonesuch"])),
        Err(LoadError::UnknownScenario { .. })
    ));
}
