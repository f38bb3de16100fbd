use std::collections::BTreeSet;

use chrono::TimeZone;

use super::plan::{Action, Card, Plan, real_route};
use super::*;
use crate::services::security::luhn_valid;
use crate::sim::scenario::{self, SCENARIOS};

/// Long enough for every scenario at its default offset (the longest,
/// credential_stuffing_low_slow, starts at 1 min and lasts 15).
const RUN: f64 = 1020.0;

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

fn baseline_plan(seed: u64, rate: f64, seconds: f64) -> Plan {
    let cfg = Config {
        seed,
        rate,
        seconds,
        scenarios: Vec::new(),
        tag: 1,
    };
    plans(&cfg).expect("plans").remove(0)
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
        assert!(n <= 20_000, "{} plans {n} requests", s.name);
        assert!(
            p.steps.iter().all(|st| (0.0..RUN).contains(&st.at)),
            "{} has steps outside the run",
            s.name
        );
        let first = p.own_steps().map(|st| st.at).fold(f64::MAX, f64::min);
        let offset = s.offset_s as f64;
        assert!(
            first >= offset - 1e-9,
            "{} starts at {first} before its offset {offset}",
            s.name,
        );
        assert!(
            offset + s.seconds as f64 <= RUN,
            "{} lasts past a {RUN} s run",
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
                s.class == scenario::Class::Attack,
                "{}: {a}",
                s.name
            );
        }
    }
    let base = baseline_plan(7, 6.0, 300.0);
    assert!(addresses(&base).iter().all(|a| !attacker_pool(a)));
}

#[test]
fn the_baseline_comes_near_its_rate_and_checks_out() {
    let base = baseline_plan(3, 6.0, 600.0);
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
        .filter(|s| matches!(&s.action, Action::Login { password, .. } if password.ends_with('!')))
        .count();
    assert_eq!(failures, 4);
}

#[test]
fn the_models_users_and_products_are_the_seed_catalogs() {
    // one account per user, in the order the run names them, shared only
    // after 950 users
    let first = *plan::ACCOUNTS.start();
    let mut accounts = plan::Accounts::default();
    assert_eq!(accounts.of_user(1999).n, first);
    assert_eq!(accounts.of_user(950).n, first + 1);
    assert_eq!(accounts.of_user(0).n, first + 2);
    assert_eq!(accounts.of_user(1999).n, first);
    for user in 3..950 {
        accounts.of_user(user + 1000);
    }
    assert_eq!(accounts.of_user(1949).n, *plan::ACCOUNTS.end());
    assert_eq!(accounts.of_user(5).n, first);
    let model = crate::sim::model::Model::new(7);
    let p = plan::Projection::new(
        &model,
        START,
        1,
        Plan::new("x", scenario::Class::Benign, ""),
        plan::Accounts::default(),
    );
    // in id order, wrapping round; a stale link stays missing
    assert_eq!(p.product(1001), 1);
    assert_eq!(p.product(1480), 480);
    assert_eq!(p.product(1481), 1);
    assert!(p.product(1001 + model.products.len() as u32) > plan::PRODUCTS);
    let card = Card::valid("4242424242424242");
    assert!(luhn_valid(&card.number));
    assert_eq!(card.expired().number, card.number);
}

/// Checks that `steps` are `want` as the real shop takes them: the same
/// times, clients (address, user agent, session) and routes (as the real shop
/// names them), with the real shop's account for each of the model's users;
/// the only steps added are those the real shop needs (a registration is
/// logged in; a guest registers and logs in before paying; an item goes back
/// in a cart an approved order emptied).
fn assert_same_plan<'a>(
    name: &str,
    want: &[crate::sim::request::Request],
    p: &'a Plan,
    mut steps: impl Iterator<Item = &'a plan::Step>,
    model: &crate::sim::model::Model,
) {
    let users: BTreeSet<&str> = model.users.iter().map(|u| u.hash.as_str()).collect();
    // the model's user of each account, and the account of each user
    let mut user_of: std::collections::BTreeMap<&str, &str> = Default::default();
    let mut account_of: std::collections::BTreeMap<&str, &str> = Default::default();
    for r in want {
        let at = (r.start - START) as f64 / 1e9;
        loop {
            let s = steps
                .next()
                .unwrap_or_else(|| panic!("{name}: no step for {} at {at}", r.route));
            let a = &p.actors[s.actor];
            assert_eq!(s.at, at, "{name}: {}", r.route);
            assert_eq!(
                (&a.address, &a.agent, &a.session),
                (&r.client.address, &r.client.user_agent, &r.client.session),
                "{name}: the client at {at}"
            );
            if s.action.route() == real_route(r.route) {
                if let Action::Login { email, .. } = &s.action {
                    let hash =
                        r.events
                            .iter()
                            .flat_map(|e| &e.attrs)
                            .find_map(|(k, v)| match (*k, v) {
                                ("user.hash", crate::sim::request::Value::Str(h)) => {
                                    Some(h.as_str())
                                }
                                _ => None,
                            });
                    if let Some(h) = hash.filter(|h| users.contains(h)) {
                        let account = *account_of.entry(h).or_insert(email);
                        assert_eq!(email, account, "{name}: the account at {at}");
                        let user = *user_of.entry(email).or_insert(h);
                        assert_eq!(h, user, "{name}: {email} shared at {at}");
                    }
                }
                if matches!(s.action, Action::Register { .. }) {
                    let login = steps.next().map(|s| s.action.route());
                    assert_eq!(login, Some("/api/auth/login"), "{name}");
                }
                break;
            }
            // A step the real shop needs before a payment: a guest's
            // sign-up, or the item an earlier order took out of the cart.
            assert_eq!(r.route, "/api/payments", "{name}: {:?} at {at}", s.action);
            match s.action {
                Action::Register { .. } => {
                    let login = steps.next().map(|s| s.action.route());
                    assert_eq!(login, Some("/api/auth/login"), "{name}");
                }
                Action::AddToCart { .. } => {}
                _ => panic!("{name}: {:?} at {at} before a payment", s.action),
            }
        }
    }
    assert!(
        steps.next().is_none(),
        "{name}: steps the model did not make"
    );
}

/// Same scenario, same seed: `shop-load`'s plan is the sequence of requests
/// `shop-sim` renders (see [`assert_same_plan`]), and `shop-sim`'s own run of
/// the scenario counts as many.
#[test]
fn the_two_drivers_draw_the_same_plan() {
    let model = crate::sim::model::Model::new(7);
    for name in [
        "brute_force",
        "credential_stuffing",
        "card_testing",
        "account_takeover",
        "search_abuse",
        "flash_sale",
        "campaign_logins",
    ] {
        let s = scenario::find(name).expect("a known scenario");
        let inj = scenario::build(s, 7, 0, &model, START + secs(s.offset_s as f64));
        let end = START + secs(RUN);
        let want: Vec<_> = inj.requests.into_iter().filter(|r| r.start < end).collect();
        let p = one(name);
        assert_same_plan(name, &want, &p, p.own_steps(), &model);

        let cfg = crate::sim::Config {
            seed: 7,
            rate: 0.0,
            start: START,
            duration: secs(RUN),
            scenarios: vec![(name.to_string(), None)],
        };
        let (_, run) = crate::sim::generate(&cfg, std::io::sink()).expect("a simulated run");
        assert_eq!(run.truth.scenarios[0].requests, want.len(), "{name}");
    }
}

#[test]
fn the_baseline_is_the_simulators() {
    let model = crate::sim::model::Model::new(3);
    let mut want = crate::sim::session::baseline(3, &model, START, START + secs(300.0), 6.0);
    want.sort_by_key(|r| (r.start, r.ids));
    let p = baseline_plan(3, 6.0, 300.0);
    assert!(want.len() > 1000, "{} requests", want.len());
    assert_same_plan("baseline", &want, &p, p.steps.iter(), &model);
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
        Err(LoadError::UnknownScenario(_))
    ));
}

/// The distributed card testers sign up (no guest checkout) and pay for the
/// seed catalog's cheapest product, so their payments are of 1-3 EUR.
#[test]
fn card_testers_sign_up_and_buy_the_cheapest_product() {
    let cheapest = (1..=plan::PRODUCTS)
        .min_by_key(|n| 199 + (n * 7919) % 20000)
        .expect("a catalog");
    assert_eq!(cheapest, plan::CHEAPEST);
    let p = one("card_testing_distributed");
    let mut testers = 0;
    for (a, actor) in p.actors.iter().enumerate() {
        if !attacker_pool(&actor.address) {
            continue;
        }
        let steps: Vec<&Action> = p
            .own_steps()
            .filter(|s| s.actor == a)
            .map(|s| &s.action)
            .collect();
        let Some(pay) = steps.iter().position(|s| matches!(s, Action::Checkout(_))) else {
            continue;
        };
        testers += 1;
        let before = &steps[..pay];
        assert!(
            before.iter().any(|s| matches!(s, Action::Register { .. })),
            "{}: no sign-up before paying",
            actor.address
        );
        assert!(
            before.iter().any(|s| matches!(s, Action::Login { .. })),
            "{}: no login before paying",
            actor.address
        );
        for s in &steps {
            if let Action::AddToCart { product, quantity } = s {
                assert_eq!(
                    (*product, *quantity),
                    (plan::CHEAPEST, 1),
                    "{}",
                    actor.address
                );
            }
        }
        assert!(
            before.iter().any(|s| matches!(s, Action::AddToCart { .. })),
            "{}: an empty cart",
            actor.address
        );
    }
    assert!(testers >= 50, "{testers} card testers");
}
