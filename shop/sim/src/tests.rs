//! Properties of whole captures: determinism, the telemetry contract, no
//! secrets, truth windows inside the capture.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value as J;

use super::model::Model;
use super::request::SECOND;
use super::scenario::SCENARIOS;
use super::*;

const SERVICES: [&str; 6] = [
    "shop-gateway",
    "shop-auth",
    "shop-catalog",
    "shop-cart",
    "shop-checkout",
    "shop-payments",
];

fn small(seed: u64) -> Config {
    Config {
        seed,
        rate: 3.0,
        duration: 120 * SECOND,
        scenarios: vec![
            ("brute_force".into(), Some(10 * SECOND)),
            ("card_testing".into(), Some(20 * SECOND)),
        ],
        ..Config::default()
    }
}

fn bytes(cfg: &Config) -> (Vec<u8>, Run) {
    match generate(cfg, Vec::new()) {
        Ok(x) => x,
        Err(e) => panic!("generate: {e}"),
    }
}

/// Every scenario at once, at short offsets, over a low baseline.
fn everything() -> &'static (Vec<u8>, Run, Config) {
    static ALL: OnceLock<(Vec<u8>, Run, Config)> = OnceLock::new();
    ALL.get_or_init(|| {
        let cfg = Config {
            seed: 42,
            rate: 2.0,
            duration: 14 * 60 * SECOND,
            scenarios: SCENARIOS
                .iter()
                .map(|s| (s.name.to_string(), Some(30 * SECOND)))
                .collect(),
            ..Config::default()
        };
        let (b, r) = bytes(&cfg);
        (b, r, cfg)
    })
}

fn lines(b: &[u8]) -> Vec<J> {
    std::str::from_utf8(b)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:.200}")))
        .collect()
}

fn attrs(v: &J) -> BTreeMap<String, J> {
    v["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    let key = kv["key"].as_str().unwrap_or_default().to_string();
                    let val = kv["value"]
                        .as_object()
                        .and_then(|o| o.values().next().cloned())
                        .unwrap_or(J::Null);
                    (key, val)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &J) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn equal_seeds_give_identical_bytes() {
    let (a, ra) = bytes(&small(7));
    let (b, rb) = bytes(&small(7));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_eq!(ra.truth, rb.truth);
    let (c, _) = bytes(&small(8));
    assert_ne!(a, c);
}

#[test]
fn adding_a_scenario_leaves_the_baseline_alone() {
    let base = Config {
        scenarios: vec![],
        ..small(3)
    };
    let (a, _) = bytes(&base);
    let (b, _) = bytes(&small(3));
    let traces = |b: &[u8]| -> BTreeSet<String> {
        lines(b)
            .iter()
            .flat_map(|l| l["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|rs| {
                rs["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|sp| s(&sp["spanId"]).to_string())
            .collect()
    };
    let (ta, tb) = (traces(&a), traces(&b));
    assert!(
        ta.is_subset(&tb),
        "baseline spans changed when a scenario was added"
    );
}

#[test]
fn spans_follow_the_contract() {
    let (b, _, _) = everything();
    let mut edge = 0;
    let mut by_trace: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for line in lines(b) {
        for rs in line["resourceSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let res = attrs(&rs["resource"]);
            let service = s(&res["service.name"]).to_string();
            assert!(SERVICES.contains(&service.as_str()), "{service}");
            for k in [
                "service.version",
                "service.instance.id",
                "deployment.environment.name",
            ] {
                assert!(
                    res.get(k).is_some_and(|v| !s(v).is_empty()),
                    "resource without {k}"
                );
            }
            for sp in rs["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let trace = s(&sp["traceId"]);
                assert_eq!(trace.len(), 32);
                assert!(
                    trace
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                );
                assert_eq!(s(&sp["spanId"]).len(), 16);
                assert!(sp["startTimeUnixNano"].is_string() && sp["endTimeUnixNano"].is_string());
                let kind = sp["kind"].as_i64().unwrap_or_default();
                by_trace
                    .entry(trace.to_string())
                    .or_default()
                    .push((service.clone(), kind));
                let a = attrs(&sp);
                let code: i64 = s(&a["http.response.status_code"])
                    .parse()
                    .unwrap_or_default();
                if kind == 2 {
                    assert_eq!(
                        sp["status"].get("code").and_then(J::as_i64) == Some(2),
                        code >= 500,
                        "{sp}"
                    );
                }
                if service == "shop-gateway" && kind == 2 {
                    edge += 1;
                    for k in [
                        "http.request.method",
                        "http.route",
                        "url.path",
                        "client.address",
                        "user_agent.original",
                    ] {
                        assert!(
                            a.get(k).is_some_and(|v| !s(v).is_empty()),
                            "edge span without {k}: {sp}"
                        );
                    }
                    assert!((100..600).contains(&code));
                    assert_eq!(
                        s(&sp["name"]),
                        format!("{} {}", s(&a["http.request.method"]), s(&a["http.route"]))
                    );
                    assert!(!s(&a["url.path"]).contains('?'));
                    assert!(s(&a["http.route"]).starts_with("/api/"));
                }
            }
        }
    }
    assert!(edge > 1000, "{edge} edge spans");
    // Every trace: one edge SERVER span and a CLIENT/SERVER pair per hop (none
    // when the gateway rate-limits).
    for (trace, spans) in by_trace {
        let edge = spans
            .iter()
            .filter(|(s, k)| s == "shop-gateway" && *k == 2)
            .count();
        let clients = spans.iter().filter(|(_, k)| *k == 3).count();
        let servers = spans
            .iter()
            .filter(|(s, k)| s != "shop-gateway" && *k == 2)
            .count();
        assert_eq!(edge, 1, "trace {trace}");
        assert_eq!(clients, servers, "trace {trace}");
    }
}

#[test]
fn events_follow_the_contract() {
    let (b, _, _) = everything();
    let required: BTreeMap<&str, &[&str]> = [
        (
            "shop.auth.login",
            &["user.hash", "shop.auth.outcome", "user_agent.original"][..],
        ),
        ("shop.account.created", &["user.id"][..]),
        (
            "shop.product.viewed",
            &["shop.product.id", "shop.product.category"][..],
        ),
        ("shop.search.performed", &["shop.search.results"][..]),
        (
            "shop.cart.item_added",
            &[
                "shop.product.id",
                "shop.product.category",
                "shop.product.price",
                "shop.cart.quantity",
            ][..],
        ),
        (
            "shop.checkout.started",
            &["shop.cart.value", "shop.order.currency"][..],
        ),
        (
            "shop.payment.attempt",
            &[
                "shop.payment.outcome",
                "shop.payment.amount",
                "shop.payment.currency",
                "shop.payment.card.fingerprint",
            ][..],
        ),
        (
            "shop.order.placed",
            &[
                "shop.order.id",
                "shop.order.amount",
                "shop.order.currency",
                "shop.order.items",
            ][..],
        ),
    ]
    .into_iter()
    .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let (mut legacy, mut total) = (0, 0);
    for line in lines(b) {
        for rl in line["resourceLogs"].as_array().cloned().unwrap_or_default() {
            for rec in rl["scopeLogs"][0]["logRecords"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let a = attrs(&rec);
                let name = match rec.get("eventName") {
                    Some(n) => s(n).to_string(),
                    None => {
                        legacy += 1;
                        s(&a["event.name"]).to_string()
                    }
                };
                total += 1;
                let Some(keys) = required.get(name.as_str()) else {
                    panic!("unknown event {name}")
                };
                for k in *keys {
                    assert!(a.contains_key(*k), "{name} without {k}: {rec}");
                }
                assert!(
                    a.get("client.address").is_some_and(|v| !s(v).is_empty()),
                    "{name} without client.address"
                );
                assert_eq!(s(&rec["traceId"]).len(), 32);
                assert_eq!(s(&rec["spanId"]).len(), 16);
                match (
                    name.as_str(),
                    a.get("shop.auth.outcome").map(s),
                    a.get("shop.payment.outcome").map(s),
                ) {
                    ("shop.auth.login", Some("failure"), _) => {
                        let r = a.get("shop.auth.failure_reason").map(s).unwrap_or_default();
                        assert!(
                            ["bad_password", "unknown_user", "locked", "rate_limited"].contains(&r),
                            "{rec}"
                        );
                    }
                    ("shop.auth.login", Some("success"), _) => {
                        assert!(!a.contains_key("shop.auth.failure_reason"))
                    }
                    ("shop.payment.attempt", _, Some("declined")) => {
                        assert!(a.contains_key("shop.payment.decline_code"))
                    }
                    ("shop.payment.attempt", _, Some(o)) => {
                        assert!(["approved", "error"].contains(&o))
                    }
                    _ => {}
                }
                if [
                    "shop.product.price",
                    "shop.payment.amount",
                    "shop.order.amount",
                    "shop.cart.value",
                ]
                .iter()
                .any(|k| a.get(*k).is_some_and(|v| !v.is_number()))
                {
                    panic!("amounts must be doubles: {rec}");
                }
                *seen.entry(name).or_default() += 1;
            }
        }
    }
    for name in required.keys() {
        assert!(seen.contains_key(*name), "no {name} event in the capture");
    }
    let share = legacy as f64 / total as f64;
    assert!(
        (0.07..0.13).contains(&share),
        "legacy event.name form on {share:.3} of events"
    );
}

#[test]
fn metrics_are_delta_histograms_and_counters() {
    let (b, _, _) = everything();
    let mut names = BTreeSet::new();
    for line in lines(b) {
        for rm in line["resourceMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for m in rm["scopeMetrics"][0]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let name = s(&m["name"]).to_string();
                let body = m
                    .get("histogram")
                    .or_else(|| m.get("sum"))
                    .cloned()
                    .unwrap_or(J::Null);
                assert_eq!(
                    body["aggregationTemporality"].as_i64(),
                    Some(1),
                    "{name} is not delta"
                );
                for dp in body["dataPoints"].as_array().cloned().unwrap_or_default() {
                    let start: i64 = s(&dp["startTimeUnixNano"]).parse().unwrap_or_default();
                    let end: i64 = s(&dp["timeUnixNano"]).parse().unwrap_or_default();
                    assert_eq!(end - start, 10 * SECOND);
                    if name == "http.server.request.duration" {
                        let a = attrs(&dp);
                        assert!(
                            a.contains_key("http.route")
                                && a.contains_key("http.response.status_code")
                        );
                        let n: u64 = s(&dp["count"]).parse().unwrap_or_default();
                        let sum: u64 = dp["bucketCounts"]
                            .as_array()
                            .map(|b| {
                                b.iter()
                                    .map(|x| s(x).parse::<u64>().unwrap_or_default())
                                    .sum()
                            })
                            .unwrap_or_default();
                        assert_eq!(n, sum);
                    }
                }
                names.insert(name);
            }
        }
    }
    for n in [
        "http.server.request.duration",
        "shop.orders",
        "shop.revenue",
        "shop.auth.logins",
        "shop.payments",
    ] {
        assert!(names.contains(n), "no {n}");
    }
}

#[test]
fn no_secrets_leak() {
    let (b, _, cfg) = everything();
    let text = std::str::from_utf8(b).unwrap_or_default();
    assert!(
        !text.contains('@'),
        "an e-mail address or login name leaked"
    );
    // every login, card number and attack password, searched for in one pass
    let model = Model::new(cfg.seed);
    let mut secrets: Vec<String> = Vec::new();
    for u in &model.users {
        secrets.push(u.login.clone());
        secrets.extend(u.cards.iter().map(|c| c.to_string()));
    }
    secrets.extend(scenario::attacks_passwords().iter().map(|p| p.to_string()));
    let finder = aho_corasick::AhoCorasick::new(&secrets).expect("a searcher over the secrets");
    if let Some(m) = finder.find(text) {
        panic!("a secret leaked: {}", secrets[m.pattern().as_usize()]);
    }
    // No card-number-like numbers (13 to 18 digits that pass the Luhn check; 19
    // digits are nanosecond timestamps). Digits inside a longer token (a hex id, a decimal
    // fraction) and the values of the id fields and of the keyed hashes (hex
    // that may happen to be all digits) do not count.
    let bytes = text.as_bytes();
    let mut start = None;
    for (i, &c) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        if c.is_ascii_digit() {
            start.get_or_insert(i);
            continue;
        }
        let Some(from) = start.take() else { continue };
        let run = i - from;
        let before = if from == 0 { b' ' } else { bytes[from - 1] };
        let standalone =
            !before.is_ascii_alphanumeric() && before != b'.' && !c.is_ascii_alphanumeric();
        let id_value = text[..from].ends_with("Id\":\"")
            || ["user.hash", "shop.payment.card.fingerprint"]
                .iter()
                .any(|k| text[..from].ends_with(&format!("{k}\",\"value\":{{\"stringValue\":\"")));
        let card_like =
            (13..=19).contains(&run) && run != 19 && crate::model::luhn_valid(&text[from..i]);
        assert!(
            !standalone || id_value || !card_like,
            "a card-like number of {run} digits at byte {from}: {}",
            &text[from.saturating_sub(80)..(i + 20).min(text.len())]
        );
    }
    // an attribute key is followed by its value: `{"key":"...password","value":...}`
    assert!(
        !text.contains("password\",\"value\""),
        "no attribute may be named password"
    );
}

#[test]
fn truth_windows_lie_within_the_capture() {
    let (_, run, cfg) = everything();
    let t = &run.truth;
    assert_eq!(t.start, rfc3339(cfg.start));
    assert_eq!(t.end, rfc3339(cfg.start + cfg.duration));
    assert_eq!(t.scenarios.len(), SCENARIOS.len());
    for e in &t.scenarios {
        assert!(
            t.start <= e.start && e.start <= e.end && e.end <= t.end,
            "{} {}..{}",
            e.name,
            e.start,
            e.end
        );
        assert!(["attack", "benign"].contains(&e.class.as_str()));
        for k in scenario::INDICATOR_KEYS {
            assert!(e.indicators.contains_key(k), "{} lacks {k}", e.name);
        }
        assert!(!e.indicators["client.address"].is_empty(), "{}", e.name);
        assert!(e.requests > 0);
    }
}

#[test]
fn truth_serialises_in_the_documented_shape() {
    let (_, run, _) = everything();
    let v = serde_json::to_value(&run.truth).unwrap_or(J::Null);
    for k in ["capture", "seed", "start", "end", "scenarios"] {
        assert!(v.get(k).is_some(), "truth without {k}");
    }
    let sc = &v["scenarios"][0];
    for k in ["name", "class", "start", "end", "indicators"] {
        assert!(sc.get(k).is_some(), "scenario without {k}");
    }
}

#[test]
fn unknown_scenarios_and_late_offsets_are_refused() {
    let cfg = Config {
        scenarios: vec![("nope".into(), None)],
        ..small(1)
    };
    assert!(matches!(
        generate(&cfg, Vec::new()),
        Err(SimError::UnknownScenario(_))
    ));
    let cfg = Config {
        scenarios: vec![("brute_force".into(), Some(500 * SECOND))],
        ..small(1)
    };
    assert!(matches!(
        generate(&cfg, Vec::new()),
        Err(SimError::OutsideCapture { .. })
    ));
}

/// Spans leave when they end and log records when they are emitted, as from
/// an SDK: every item of one line comes no later than every item of the next
/// line of the same signal. A replay sees no row later than its own stream.
#[test]
fn spans_and_logs_are_exported_in_time_order() {
    let (b, _, _) = everything();
    let nanos = |v: &J| -> i64 {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_i64())
            .unwrap_or_else(|| panic!("not a time: {v}"))
    };
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut checked = 0;
    for line in lines(b) {
        // (signal, resource list, scope list, record list, the time it leaves by)
        let shapes = [
            (
                "spans",
                "resourceSpans",
                "scopeSpans",
                "spans",
                "endTimeUnixNano",
            ),
            (
                "logs",
                "resourceLogs",
                "scopeLogs",
                "logRecords",
                "timeUnixNano",
            ),
        ];
        let Some((signal, resources, scopes, records, time)) = shapes
            .into_iter()
            .find(|(_, resources, ..)| line[*resources].is_array())
        else {
            continue;
        };
        let times: Vec<i64> = line[resources]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r[scopes].as_array().into_iter().flatten())
            .flat_map(|s| s[records].as_array().into_iter().flatten())
            .map(|x| nanos(&x[time]))
            .collect();
        let (Some(lo), Some(hi)) = (times.iter().min(), times.iter().max()) else {
            continue;
        };
        if let Some(prev) = last.get(signal) {
            assert!(
                *lo >= *prev,
                "a {signal} line holds an item at {lo}, before the previous line's {prev}"
            );
        }
        last.insert(signal, *hi);
        checked += times.len();
    }
    assert!(checked > 1000, "only {checked} items checked");
}

#[test]
fn every_handler_starts_its_first_step_within_two_milliseconds() {
    // perf.runtime_starvation fires on first children that start 50 ms or
    // more after their SERVER span: simulated traffic has no starved runtime
    let (b, _, _) = everything();
    let mut servers: BTreeMap<String, i64> = BTreeMap::new();
    let mut first_child: BTreeMap<String, i64> = BTreeMap::new();
    let time = |v: &J| {
        s(v).parse::<i64>()
            .unwrap_or_else(|_| panic!("a time: {v}"))
    };
    for line in lines(b) {
        for rs in line["resourceSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for sp in rs["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let start = time(&sp["startTimeUnixNano"]);
                if sp["kind"].as_i64() == Some(2) {
                    servers.insert(s(&sp["spanId"]).to_string(), start);
                }
                if let Some(parent) = sp["parentSpanId"].as_str() {
                    let first = first_child.entry(parent.to_string()).or_insert(start);
                    *first = (*first).min(start);
                }
            }
        }
    }
    let mut checked = 0;
    for (parent, child) in &first_child {
        if let Some(start) = servers.get(parent) {
            let gap = child - start;
            assert!(
                (0..=2_000_000).contains(&gap),
                "a first step {gap} ns after its SERVER span"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} SERVER spans with children");
}
