//! Reloading the rule pack while rows flow: what carries on, what starts
//! anew; firing monotone rules before their window closes.

use crate::alerts::{Alert, State};
use crate::evaluator::{Evaluator, Output};
use crate::testutil::*;

fn alerts(out: &[Output]) -> Vec<&Alert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a),
            Output::Kpi(_) => None,
        })
        .collect()
}

/// `test.flood` (5 spans a minute from one address, sliding by 10 s) under another id.
fn flood(id: &str) -> String {
    flood_rule("1m", "10s", 5, 1, "15m").replace("test.flood", id)
}

/// Ten spans from `a` at 0..10 s, then one from `z` at 62 s: the window
/// [0 s, 60 s) is final and `a` has an open, firing incident in every rule.
async fn open_incident(ev: &mut Evaluator) -> Vec<Output> {
    let early: Vec<(f64, &str)> = (0..10).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&early)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(62.0, "z")]))
        .unwrap();
    ev.evaluate().await
}

#[tokio::test]
async fn an_unchanged_rule_keeps_its_incident_across_a_reload() {
    let (kept, removed) = (flood("test.flood"), flood("test.gone"));
    let mut ev = Evaluator::new(rule_set(&[&kept, &removed]).await, 0);
    let before = open_incident(&mut ev).await;
    let fired: Vec<(&str, State)> = alerts(&before)
        .iter()
        .map(|a| (a.rule_id.as_str(), a.state))
        .collect();
    assert_eq!(
        fired,
        vec![("test.flood", State::Firing), ("test.gone", State::Firing)]
    );
    let version = ev.rules().version();

    // the same flood rule, a new one in its session, a KPI of a spec no
    // running rule has; test.gone removed
    let added = flood("test.new");
    let kpi = count_kpi("30s", "30s");
    let report = ev
        .reload(rule_set(&[&kept, &added, &kpi]).await)
        .await
        .expect("a pack without errors is taken");
    assert_eq!(report.kept, vec!["test.flood"]);
    assert_eq!(report.added, vec!["requests", "test.new"]);
    assert_eq!(report.removed, vec!["test.gone"]);
    assert!(report.changed.is_empty());
    assert_ne!(report.version, version);
    assert_eq!(ev.rules().version(), report.version);
    // the removed rule's open incident is resolved, under its identity
    let gone = alerts(&report.outputs);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(
        (gone[0].rule_id.as_str(), gone[0].state),
        ("test.gone", State::Resolved)
    );
    assert_eq!(gone[0].identity(), alerts(&before)[1].identity());

    // `a` goes on flooding after the reload, then everything closes
    let later: Vec<(f64, &str)> = (0..10).map(|i| (63.0 + i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&later)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let after = ev.evaluate().await;
    let flood_alerts: Vec<State> = alerts(&after)
        .iter()
        .filter(|a| a.rule_id == "test.flood")
        .map(|a| a.state)
        .collect();
    // the open incident went on: no second firing, one resolution
    assert_eq!(flood_alerts, vec![State::Resolved]);
    let resolved = alerts(&after)
        .into_iter()
        .find(|a| a.rule_id == "test.flood")
        .unwrap();
    assert_eq!(resolved.identity(), alerts(&before)[0].identity());
    // the new rule starts empty at the first window not yet evaluated (10 s):
    // it fires once, on the rows after the reload
    let new: Vec<&Alert> = alerts(&after)
        .into_iter()
        .filter(|a| a.rule_id == "test.new")
        .collect();
    assert_eq!(new[0].state, State::Firing, "{new:?}");
    assert_eq!(new[0].window_start, "2026-01-15T10:00:10Z");
    // the KPI of a new spec starts at the first 30 s window not evaluated
    // ([30 s, 60 s), empty): its first value is [60 s, 90 s)
    let first_kpi = after.iter().find_map(|o| match o {
        Output::Kpi(k) => Some(k.window_start.clone()),
        Output::Alert(_) => None,
    });
    assert_eq!(first_kpi.as_deref(), Some("2026-01-15T10:01:00Z"));
}

#[tokio::test]
async fn a_pack_with_a_broken_rule_is_refused_and_the_running_one_stays() {
    let kept = flood("test.flood");
    let mut ev = Evaluator::new(rule_set(&[&kept]).await, 0);
    let before = open_incident(&mut ev).await;
    assert_eq!(alerts(&before).len(), 1);
    let version = ev.rules().version();

    let broken = flood("test.broken").replace("count(*) AS requests", "count(*) AS requests,,");
    let errors = ev
        .reload(rule_set(&[&kept, &broken]).await)
        .await
        .expect_err("a broken rule refuses the pack");
    assert_eq!(errors.len(), 1);
    let at = errors[0].location.to_string();
    assert!(at.starts_with("rule1.sql:"), "{at}");
    assert_eq!(ev.rules().version(), version);
    assert_eq!(ev.rules().rules.len(), 1);

    // the running pack goes on: the incident is still open
    let later: Vec<(f64, &str)> = (0..10).map(|i| (63.0 + i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&later)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let states: Vec<State> = alerts(&ev.evaluate().await)
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, vec![State::Resolved]);
}

#[tokio::test]
async fn a_changed_rule_starts_anew_and_its_old_incident_is_resolved() {
    let mut ev = Evaluator::new(rule_set(&[&flood("test.flood")]).await, 0);
    let before = open_incident(&mut ev).await;
    let stricter = flood_rule("1m", "10s", 8, 1, "15m");
    let report = ev.reload(rule_set(&[&stricter]).await).await.unwrap();
    assert_eq!(report.changed, vec!["test.flood"]);
    let resolved = alerts(&report.outputs);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, State::Resolved);
    assert_eq!(resolved[0].identity(), alerts(&before)[0].identity());
    assert_eq!(ev.health()[0].evaluations, 0);
}

/// `test.flood` with another condition in its HAVING.
fn flood_having(having: &str) -> String {
    flood_rule("1m", "10s", 5, 1, "15m")
        .replace("HAVING count(*) >= 5", &format!("HAVING {having}"))
}

async fn growth_of(sql: &str) -> crate::rules::Growth {
    let set = rule_set(&[sql]).await;
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    set.rules[0].growth.clone()
}

#[tokio::test]
async fn the_packs_monotone_rules_are_the_counts_and_distinct_counts_against_a_constant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let set = crate::rules::RuleSet::load(&dir, crate::rules::Which::Alerts)
        .await
        .expect("the pack loads");
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    // kept KPIs load with the alerts that read them; they have no condition
    let monotone: Vec<&str> = set
        .rules
        .iter()
        .filter(|r| !r.def.is_kpi() && r.growth.is_monotone())
        .map(|r| r.def.id.as_str())
        .collect();
    // count(*) >= 8; count(*) >= 3000; a count over an inner join; counts of
    // groups whose own count passed a bar (two levels); a count of matching
    // statements >= 20 (missing_index)
    assert_eq!(
        monotone,
        vec![
            "auth.account_takeover",
            "auth.brute_force.single_account",
            "dos.http_flood.single_source",
            "perf.missing_index",
            "perf.n_plus_one",
            "perf.retry_storm",
        ]
    );
    // every other one says why it waits for the close
    let why = |id: &str| match &set.rules.iter().find(|r| r.def.id == id).unwrap().growth {
        crate::rules::Growth::AtClose(why) => why.clone(),
        crate::rules::Growth::Monotone => panic!("{id} is monotone"),
    };
    // ratios
    assert!(
        why("auth.credential_stuffing").contains(" / count(Int64(1))"),
        "{}",
        why("auth.credential_stuffing")
    );
    assert!(why("dos.route_error_surge").contains(" / count(Int64(1))"));
    assert!(why("fraud.card_testing").contains(" / count(Int64(1))"));
    // a bar that grows with the rows
    assert!(why("fraud.card_testing.population").contains(">= Float64(0.5) * sum("));
    // durations may be negative (a span whose end is before its start)
    assert!(why("dos.expensive_endpoint_abuse").contains("sum(spans.duration_ms)"));
    // a cart request removes a walker from the LEFT JOIN's answer
    assert!(why("dos.scraping.catalog_walk").contains("LEFT join"));
    // a second route makes a client no longer a single-route one
    assert!(why("dos.http_flood.distributed").contains("r.routes = Int64(1)"));
    for r in set
        .rules
        .iter()
        .filter(|r| !r.def.is_kpi() && !r.growth.is_monotone())
    {
        assert!(!why(&r.def.id).is_empty(), "{} says why it waits", r.def.id);
    }
}

#[tokio::test]
async fn a_condition_is_monotone_only_when_every_part_of_it_can_only_grow() {
    let monotone = [
        "count(*) >= 5",
        "count(*) > 4 AND count(DISTINCT trace_id) >= 2",
        "count(*) >= 50 OR count(DISTINCT trace_id) >= 5",
        "5 <= count(*)",
        "count(trace_id) >= 5",
        "count(*) FILTER (WHERE http_route = '/login') >= 5",
        "max(duration_ms) >= 5000",
        "min(duration_ms) <= 1",
        "CAST(count(*) AS DOUBLE) / 2 >= 2.5",
        "count(*) + count(DISTINCT trace_id) >= 6",
        "2 * count(*) >= 10",
    ];
    for having in monotone {
        let g = growth_of(&flood_having(having)).await;
        assert!(g.is_monotone(), "{having}: {g}");
    }
    let at_close = [
        // falls as rows come
        ("count(*) < 5", "may stop holding"),
        ("NOT (count(*) < 5)", "may stop holding"),
        (
            "count(*) <= 2 * count(DISTINCT trace_id)",
            "may stop holding",
        ),
        // a ratio, an average, a subtraction
        (
            "CAST(count(*) AS DOUBLE) / count(DISTINCT trace_id) >= 2",
            "may stop holding",
        ),
        ("avg(duration_ms) > 100", "may stop holding"),
        (
            "count(*) - count(DISTINCT trace_id) >= 5",
            "may stop holding",
        ),
        // a sum of values that may be negative
        ("sum(duration_ms) >= 100", "may stop holding"),
        ("count(*) = 5", "may stop holding"),
        ("max(duration_ms) <= 10", "may stop holding"),
    ];
    for (having, why) in at_close {
        let g = growth_of(&flood_having(having)).await;
        assert!(
            !g.is_monotone() && g.to_string().contains(why),
            "{having}: {g}"
        );
    }
    // the shapes around the condition count too
    let rule = flood_having("count(*) >= 5");
    let limited = rule.replace(
        "HAVING count(*) >= 5",
        "HAVING count(*) >= 5 ORDER BY 4 DESC LIMIT 3",
    );
    assert!(growth_of(&limited).await.to_string().contains("LIMIT"));
    let ranked = rule.replace(
        "count(*) AS requests,",
        "count(*) AS requests, rank() OVER (ORDER BY count(*)) AS r,",
    );
    assert!(
        growth_of(&ranked)
            .await
            .to_string()
            .contains("window function")
    );
}

fn early_rule() -> String {
    flood("test.flood")
}

/// The firing alerts of `out`.
fn firing(out: &[Output]) -> Vec<&Alert> {
    alerts(out)
        .into_iter()
        .filter(|a| a.state == State::Firing)
        .collect()
}

#[tokio::test]
async fn a_monotone_rule_fires_before_its_window_closes_and_the_close_confirms_it() {
    let mut ev = Evaluator::new(rule_set(&[&early_rule()]).await, 5 * S)
        .with_early_firing(std::time::Duration::ZERO);
    // five spans from `a` in the first seconds: 5 >= 5 in the window [-50 s, 10 s)
    // and every later one holding them
    let five: Vec<(f64, &str)> = (0..5).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&five[..4])).unwrap();
    assert!(ev.early_due());
    assert!(firing(&ev.evaluate_early().await).is_empty(), "4 is not 5");
    assert!(!ev.early_due(), "no new rows, no pass");
    ev.push(ingest::Table::Spans, spans(&five[4..])).unwrap();
    let early = ev.evaluate_early().await;
    let sent = firing(&early);
    assert_eq!(sent.len(), 1, "{early:?}");
    let sent = sent[0].clone();
    assert_eq!(sent.entity["client.address"], "a");
    assert_eq!(sent.value, serde_json::json!(5));
    // the first window not final at the watermark holds them
    let watermark = ev.watermark().expect("rows came");
    assert!(
        watermark < sent.at_ns,
        "fired at {watermark}, window ends {}",
        sent.at_ns
    );
    assert!(
        sent.detected_at_ns.is_some_and(|t| t < sent.at_ns),
        "detected at {:?}",
        sent.detected_at_ns
    );
    assert!(
        alerts(&ev.evaluate().await).is_empty(),
        "no window has closed yet"
    );
    assert_eq!(ev.stats().early_alerts, 1);
    assert_eq!(ev.health()[0].fired_early, 1);
    assert_eq!(ev.early_open()["test.flood"], 1);

    // more rows: no second early firing for `a`
    ev.push(ingest::Table::Spans, spans(&[(6.0, "a"), (7.0, "a")]))
        .unwrap();
    assert!(firing(&ev.evaluate_early().await).is_empty());

    // the windows close: the close fires under the same identity, with the
    // value at close, and nothing is withdrawn
    ev.push(ingest::Table::Spans, spans(&[(20.0, "z")]))
        .unwrap();
    let closed = ev.evaluate().await;
    let confirmed = firing(&closed);
    assert_eq!(confirmed.len(), 1, "{closed:?}");
    assert_eq!(confirmed[0].identity(), sent.identity());
    assert_eq!(confirmed[0].window_start, sent.window_start);
    assert_eq!(confirmed[0].value, serde_json::json!(7));
    assert!(alerts(&closed).iter().all(|a| a.state == State::Firing));
    assert!(ev.early_open().is_empty());
    assert_eq!(ev.stats().early_withdrawn, 0);
}

#[tokio::test]
async fn the_close_of_an_early_firing_says_nothing_more_when_the_value_is_the_same() {
    let mut ev = Evaluator::new(rule_set(&[&early_rule()]).await, 5 * S)
        .with_early_firing(std::time::Duration::ZERO);
    let five: Vec<(f64, &str)> = (0..5).map(|i| (i as f64, "b")).collect();
    ev.push(ingest::Table::Spans, spans(&five)).unwrap();
    let sent = firing(&ev.evaluate_early().await)[0].clone();
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let closed = ev.evaluate().await;
    // no second firing: the one sent holds the value at close; the resolution
    let states: Vec<State> = alerts(&closed).iter().map(|a| a.state).collect();
    assert_eq!(states, vec![State::Resolved], "{closed:?}");
    assert_eq!(alerts(&closed)[0].identity(), sent.identity());
    assert_eq!(ev.health()[0].fired, 1, "the close counts it as fired");
}

#[tokio::test]
async fn a_rule_that_is_not_monotone_waits_for_the_close() {
    // a ratio: the share of spans from one client
    let ratio = flood_having("CAST(count(*) AS DOUBLE) / count(DISTINCT trace_id) >= 1");
    let mut ev = Evaluator::new(rule_set(&[&ratio]).await, 5 * S)
        .with_early_firing(std::time::Duration::ZERO);
    let five: Vec<(f64, &str)> = (0..5).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&five)).unwrap();
    assert!(ev.evaluate_early().await.is_empty());
    assert_eq!(ev.stats().early_passes, 1);
    ev.push(ingest::Table::Spans, spans(&[(20.0, "z")]))
        .unwrap();
    assert_eq!(firing(&ev.evaluate().await).len(), 1, "the close fires");
    assert_eq!(ev.stats().early_alerts, 0);
}

#[tokio::test]
async fn rows_that_come_late_into_an_earlier_window_withdraw_an_early_firing() {
    // 30 s of lateness: the window [10 s, 70 s) stays open while rows at 75 s come
    let mut ev = Evaluator::new(rule_set(&[&early_rule()]).await, 30 * S)
        .with_early_firing(std::time::Duration::ZERO);
    ev.push(ingest::Table::Spans, spans(&[(15.0, "z")]))
        .unwrap();
    let five: Vec<(f64, &str)> = (71..76).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&five)).unwrap();
    let early = ev.evaluate_early().await;
    let sent = firing(&early)[0].clone();
    assert_eq!(sent.window_start, "2026-01-15T10:00:20Z", "{early:?}");
    // five rows of `a` come late (but within the lateness) into [10 s, 70 s):
    // the incident starts in that window, under another identity
    let late: Vec<(f64, &str)> = (60..65).map(|i| (i as f64, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&late)).unwrap();
    assert!(ev.evaluate_early().await.is_empty(), "`a` was sent already");
    ev.push(ingest::Table::Spans, spans(&[(300.0, "z")]))
        .unwrap();
    let closed = ev.evaluate().await;
    let states: Vec<(State, &str)> = alerts(&closed)
        .iter()
        .filter(|a| a.entity["client.address"] == "a")
        .map(|a| (a.state, a.window_start.as_str()))
        .collect();
    // the early one is resolved first, then the close's incident fires and resolves
    assert_eq!(
        states[0],
        (State::Resolved, "2026-01-15T10:00:20Z"),
        "{states:?}"
    );
    assert_eq!(
        states[1],
        (State::Firing, "2026-01-15T10:00:10Z"),
        "{states:?}"
    );
    assert_eq!(alerts(&closed)[0].identity(), sent.identity());
    assert_eq!(ev.stats().early_withdrawn, 1);
}

/// Replays a capture of the pack with an early pass after every
/// `early_every` messages (none if 0): the outputs of closed windows, and
/// those of the early passes.
async fn replay_capture(name: &str, early_every: usize) -> (Vec<Output>, Vec<Output>, Evaluator) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let set = crate::rules::RuleSet::load(&root.join("rules"), crate::rules::Which::Alerts)
        .await
        .expect("the pack loads");
    let mut ev = Evaluator::new(set, 5 * S);
    if early_every > 0 {
        ev = ev.with_early_firing(std::time::Duration::ZERO);
    }
    let reader = ingest::source::capture_reader::open(&[root.join("rules/captures").join(name)])
        .expect("capture");
    let (mut closed, mut early) = (Vec::new(), Vec::new());
    for (i, item) in reader.enumerate() {
        let ingest::source::capture_reader::CaptureItem::Message(m) = item else {
            continue;
        };
        let stream = crate::window::Stream {
            table: m.decoded.table,
            partition: m.partition.unwrap_or(0),
        };
        ev.push_from(stream, m.decoded.batch).expect("rows");
        if early_every > 0 && i % early_every == 0 && ev.early_waiting() {
            early.extend(ev.evaluate_early().await);
        }
        if ev.has_final_windows() {
            closed.extend(ev.evaluate().await);
        }
    }
    closed.extend(ev.finish().await);
    (closed, early, ev)
}

#[tokio::test]
async fn early_firing_changes_nothing_the_closed_windows_report() {
    for capture in ["brute_force.jsonl.zst", "account_takeover.jsonl.zst"] {
        let (plain, none, _) = replay_capture(capture, 0).await;
        assert!(none.is_empty());
        let (closed, early, ev) = replay_capture(capture, 1).await;
        let sent = firing(&early);
        assert!(!sent.is_empty(), "{capture}: nothing fired early");
        // every early firing is an incident the close opened: same identity
        let opened: std::collections::BTreeSet<String> =
            firing(&plain).iter().map(|a| a.identity()).collect();
        for a in &sent {
            assert!(
                opened.contains(&a.identity()),
                "{capture}: {a:?} not opened by the close"
            );
        }
        // the same alerts at close, values included, but for a firing
        // whose value was sent early already
        let said_early = |a: &Alert| {
            sent.iter()
                .any(|e| e.identity() == a.identity() && e.value == a.value)
        };
        let expected: Vec<Output> = plain
            .iter()
            .filter(|o| match o {
                Output::Alert(a) => a.state != State::Firing || !said_early(a),
                Output::Kpi(_) => true,
            })
            .cloned()
            .collect();
        assert_eq!(closed, expected, "{capture}");
        assert!(alerts(&early).iter().all(|a| a.state == State::Firing));
        assert_eq!(ev.stats().early_withdrawn, 0, "{capture}");
        assert_eq!(ev.stats().early_alerts, sent.len() as u64);
    }
}

#[tokio::test]
async fn a_restart_evaluates_no_window_that_starts_before_its_resume_point() {
    let rules = [flood("test.flood"), count_kpi("15m", "15m")];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut ev = Evaluator::new(rule_set(&rules).await, 0);
    open_incident(&mut ev).await;
    // the flood's windows up to [0 s, 60 s) are final; the KPI's quarter hour is open
    assert_eq!(ev.evaluated_upto(), Some(T0));
    assert_eq!(ev.alerts_evaluated_upto(), Some(T0 + 10 * S));

    // started again from a commit made at the alerts' frontier
    let mut ev = Evaluator::new(rule_set(&rules).await, 0);
    ev.resume_from(T0 + 10 * S);
    let again: Vec<(f64, &str)> = std::iter::once((5.0, "a"))
        .chain((20..30).map(|i| (i as f64, "a")))
        .collect();
    ev.push(ingest::Table::Spans, spans(&again)).unwrap();
    ev.push(ingest::Table::Spans, spans(&[(75.0, "z")]))
        .unwrap();
    let out = ev.evaluate().await;
    assert_eq!(
        ev.stats().resumed_rows,
        1,
        "the row at 5 s only fed windows evaluated before"
    );
    assert_eq!(ev.stats().late_rows, 0, "rows read again are not late");
    assert!(
        alerts(&out).iter().any(|a| a.rule_id == "test.flood"),
        "windows from the resume point on are evaluated"
    );
    // the quarter hour began before the resume point: its first rows were
    // not read again, so it is not written
    ev.push(ingest::Table::Spans, spans(&[(961.0, "z")]))
        .unwrap();
    let out = ev.evaluate().await;
    assert!(
        out.iter().all(|o| !matches!(o, Output::Kpi(_))),
        "a KPI window open at the stop is not written from part of its rows"
    );
}

/// A keyed task of the scaled-out form (drive/keyed.rs): source streams
/// move on by watermark records, and the task's first row is newer than a
/// row that comes later from a stream behind the others. That older row is
/// on time (its stream had not passed it), and its window is evaluated in
/// every KPI, kept for rollups or not (found on the real Kafka: a route's
/// first request of a minute was missing from the scaled-out form); the
/// resume point committed meanwhile does not skip it either.
#[tokio::test]
async fn a_row_older_than_the_first_from_a_stream_behind_still_opens_its_window() {
    use crate::window::{Idleness, Stream};
    let kept = "/*\nkpi = \"kept_count\"\nwindow = \"1m\"\nkeep = \"1h\"\ndimensions = [\"client.address\"]\nvalue = \"n\"\n*/\n\
        SELECT window_start, window_end, client_address, count(*) AS n FROM spans GROUP BY 1, 2, 3";
    let plain = "/*\nkpi = \"plain_count\"\nwindow = \"1m\"\ndimensions = [\"client.address\"]\nvalue = \"n\"\n*/\n\
        SELECT window_start, window_end, client_address, count(*) AS n FROM spans GROUP BY 1, 2, 3";
    let p = |partition| Stream {
        table: ingest::Table::Spans,
        partition,
    };
    let mut ev = Evaluator::new(rule_set(&[kept, plain]).await, 5 * S)
        .with_idleness(Idleness::WallClock(std::time::Duration::from_secs(60)));
    for i in 0..3 {
        ev.expect_stream(p(i));
    }
    let mut out = Vec::new();
    // stream 0: watermarks, then the task's first row (window [60 s, 120 s))
    ev.observe_source(p(0), T0 + 90 * S);
    ev.push_from(p(0), spans(&[(100.0, "a")])).unwrap();
    ev.observe_source(p(0), T0 + 110 * S);
    ev.observe_source(p(1), T0 + 109 * S);
    out.extend(ev.evaluate().await);
    // stream 2 has not spoken: no resume point (nothing may be committed)
    assert_eq!(ev.evaluated_upto(), None);
    // stream 2 speaks at 36 s: nothing is final yet
    ev.observe_source(p(2), T0 + 36 * S);
    out.extend(ev.evaluate().await);
    // the resume point a commit would carry is not past [0 s, 60 s): stream
    // 2 may still bring rows of it, which a new owner must evaluate (found on
    // the real Kafka: an engine killed after a commit at the first row's
    // window lost a currency's first minute of orders)
    assert_eq!(ev.evaluated_upto(), Some(T0));
    // its row of [0 s, 60 s), then it moves past that window
    ev.push_from(p(2), spans(&[(51.7, "a")])).unwrap();
    ev.observe_source(p(2), T0 + 89 * S);
    out.extend(ev.evaluate().await);
    assert_eq!(ev.stats().late_rows, 0);
    let got: Vec<(String, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k) => Some((k.kpi.clone(), k.window_start.clone())),
            _ => None,
        })
        .collect();
    let at = crate::alerts::rfc3339(T0);
    assert_eq!(
        got,
        vec![
            ("kept_count".to_string(), at.clone()),
            ("plain_count".to_string(), at)
        ]
    );
}
