//! Kept KPIs read by later windows: `rollup(...)` and `baseline(...)`
//! through the evaluator, as a rule pack uses them.

use std::collections::BTreeMap;

use crate::alerts::{Alert, State};
use crate::evaluator::{Evaluator, Output};
use crate::rules::rollup::StoredValue;
use crate::testutil::*;

/// Spans per client in 10 s windows, kept for two minutes, at most `keys` clients.
fn kept_kpi(keys: usize) -> String {
    format!(
        "/*\nkpi = \"per_client\"\nwindow = \"10s\"\nkeep = \"2m\"\nmax_keys = {keys}\ndimensions = [\"client.address\"]\nvalue = \"requests\"\n*/\n\
         SELECT window_start, window_end, client_address, count(*) AS requests FROM spans GROUP BY 1, 2, 3"
    )
}

/// Fires when a client sends five times its mean of the last 6 windows
/// (warm-up: 3 of them), 10 requests at least.
const SURGE: &str = "/*\nid = \"test.surge\"\nseverity = \"low\"\nwindow = \"10s\"\nentity = [\"client.address\"]\nvalue = \"requests\"\n*/\n\
    SELECT s.window_start, s.window_end, s.client_address, count(*) AS requests, max(b.mean) AS mean\n\
    FROM spans s JOIN baseline('per_client', 'requests', 6, 3) b\n\
      ON b.window_start = s.window_start AND b.client_address = s.client_address\n\
    GROUP BY 1, 2, 3 HAVING count(*) >= 10 AND count(*) >= 5 * max(b.mean)";

/// The spans a client sent in the last 30 s, from the kept windows.
const LAST_30S: &str = "/*\nkpi = \"last_30s\"\nwindow = \"10s\"\ndimensions = [\"client.address\"]\n*/\n\
    SELECT window_start, window_end, client_address, sum(requests) AS value, count(*) AS buckets\n\
    FROM rollup('per_client', '30s') GROUP BY 1, 2, 3";

/// Client `a` sends 2 spans every 10 s for 60 s, then 20 in the next 10 s;
/// `b` sends 20 in its first 10 s (at 30 s) and nothing before.
fn traffic() -> Vec<(f64, &'static str)> {
    let mut at = Vec::new();
    for w in 0..6 {
        at.push((w as f64 * 10.0 + 1.0, "a"));
        at.push((w as f64 * 10.0 + 6.0, "a"));
    }
    for i in 0..20 {
        at.push((60.0 + i as f64 * 0.4, "a"));
        at.push((30.0 + i as f64 * 0.4, "b"));
    }
    at.push((95.0, "z"));
    at.sort_by(|x, y| x.0.total_cmp(&y.0));
    at
}

fn firing(out: &[Output]) -> Vec<&Alert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) if a.state == State::Firing => Some(a),
            _ => None,
        })
        .collect()
}

async fn replay(files: &[&str], at: &[(f64, &str)], pushes: usize) -> Vec<Output> {
    let mut ev = Evaluator::new(rule_set(files).await, 0);
    let mut out = Vec::new();
    for chunk in at.chunks(at.len().div_ceil(pushes)) {
        ev.push(ingest::Table::Spans, spans(chunk)).unwrap();
        out.extend(ev.evaluate().await);
    }
    out.extend(ev.finish().await);
    out
}

#[tokio::test]
async fn a_surge_over_its_own_baseline_fires_and_a_key_without_history_does_not() {
    let out = replay(&[&kept_kpi(100), SURGE], &traffic(), 1).await;
    let fired = firing(&out);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let a = fired[0];
    assert_eq!(a.entity["client.address"], "a");
    assert_eq!(a.value, serde_json::json!(20));
    // the window of the surge, [60 s, 70 s); b's 20 spans came with no history
    assert_eq!(a.window_start, crate::alerts::rfc3339(T0 + 60 * S));
}

#[tokio::test]
async fn how_rows_are_pushed_and_evaluated_does_not_change_what_a_window_reads() {
    let files = [kept_kpi(100), SURGE.to_string(), LAST_30S.to_string()];
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let whole = replay(&files, &traffic(), 1).await;
    for pushes in [3, 7, traffic().len()] {
        assert_eq!(
            replay(&files, &traffic(), pushes).await,
            whole,
            "{pushes} pushes"
        );
    }
    // a's last 30 s at the window [60 s, 70 s): 2 + 2 + 20 over three buckets
    let at_70: Vec<_> = whole
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k)
                if k.kpi.starts_with("last_30s")
                    && k.dimensions["client.address"] == "a"
                    && k.window_start == crate::alerts::rfc3339(T0 + 60 * S) =>
            {
                Some(k.value.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(at_70, vec![serde_json::json!(24)]);
}

#[tokio::test]
async fn keys_beyond_the_cap_evict_the_least_recently_seen() {
    let mut ev = Evaluator::new(rule_set(&[&kept_kpi(2)]).await, 0);
    ev.push(
        ingest::Table::Spans,
        spans(&[
            (1.0, "a"),
            (11.0, "b"),
            (21.0, "c"),
            (22.0, "b"),
            (45.0, "z"),
        ]),
    )
    .unwrap();
    ev.finish().await;
    let stats = ev.stats().rollups["per_client"].clone();
    // a (newest bucket at 0 s) went for c at 20 s, then b (newest at 20 s,
    // as c's, and the smaller) for z at 40 s
    assert_eq!(stats.keys, 2);
    assert_eq!(stats.evicted, 2);
}

#[tokio::test]
async fn buckets_older_than_keep_are_dropped() {
    let mut ev = Evaluator::new(rule_set(&[&kept_kpi(100)]).await, 0);
    let at: Vec<(f64, &str)> = (0..30).map(|i| (i as f64 * 10.0, "a")).collect();
    ev.push(ingest::Table::Spans, spans(&at)).unwrap();
    ev.finish().await;
    // two minutes of 10 s windows
    assert_eq!(ev.stats().rollups["per_client"].buckets, 12);
}

#[tokio::test]
async fn restored_buckets_count_as_history() {
    let mut ev = Evaluator::new(rule_set(&[&kept_kpi(100), SURGE]).await, 0);
    // the store kept a's 2 a window for the minute before the capture
    let stored: Vec<StoredValue> = (1..=6)
        .map(|w| StoredValue {
            kpi: "per_client".into(),
            window_start: T0 - w * 10 * S,
            dimensions: BTreeMap::from([("client.address".to_string(), "a".to_string())]),
            value: Some(2.0),
            hourly: false,
        })
        .collect();
    assert_eq!(ev.restore_rollups(&stored), 6);
    let burst: Vec<(f64, &str)> = (0..20)
        .map(|i| (i as f64 * 0.4, "a"))
        .chain([(25.0, "z")])
        .collect();
    ev.push(ingest::Table::Spans, spans(&burst)).unwrap();
    let out = ev.evaluate().await;
    let fired = firing(&out);
    assert_eq!(fired.len(), 1, "{out:?}");
    assert_eq!(fired[0].window_start, crate::alerts::rfc3339(T0));
}

#[tokio::test]
async fn a_wrong_call_is_an_error_that_says_what_to_write() {
    let unknown = SURGE.replace("baseline('per_client'", "baseline('nope'");
    let set = rule_set(&[&kept_kpi(100), &unknown]).await;
    let message = set.errors[0].to_string();
    assert!(
        message.contains("no KPI keeps its values as `nope`") && message.contains("per_client"),
        "{message}"
    );
    let too_far = LAST_30S.replace("'30s'", "'5m'");
    let set = rule_set(&[&kept_kpi(100), &too_far]).await;
    let message = set.errors[0].to_string();
    assert!(
        message.contains("keeps 2m of windows, less than 5m"),
        "{message}"
    );
    let sliding = kept_kpi(100).replace("window = \"10s\"", "window = \"20s\"\nslide = \"10s\"");
    let err =
        crate::rules::definition::parse_text(std::path::Path::new("k.sql"), &sliding).unwrap_err();
    assert!(err.to_string().contains("must be tumbling"), "{err}");
}

/// An hourly read at a window that ends on the hour: the hour just ended
/// comes from the hourly sums, and no window of a next hour is read (an
/// engine whose event time the wall clock moved on met this at xx:00).
#[tokio::test]
async fn an_hourly_read_at_a_window_that_ends_on_the_hour() {
    let kept = "/*\nkpi = \"per_client\"\nwindow = \"10s\"\nkeep = \"2h\"\nkeep_hourly = \"2h\"\ndimensions = [\"client.address\"]\nvalue = \"requests\"\n*/\n\
        SELECT window_start, window_end, client_address, count(*) AS requests FROM spans GROUP BY 1, 2, 3";
    let last_hours = "/*\nkpi = \"last_hours\"\nwindow = \"10s\"\ndimensions = [\"client.address\"]\n*/\n\
        SELECT window_start, window_end, client_address, sum(requests) AS value\n\
        FROM rollup('per_client', '2h', 'hourly') GROUP BY 1, 2, 3";
    // T0 is on the hour: two spans in the hour's last window, one after
    let at = [(3591.0, "a"), (3595.0, "a"), (3605.0, "a")];
    let out = replay(&[kept, last_hours], &at, 1).await;
    let on_the_hour: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k)
                if k.kpi == "last_hours"
                    && k.window_end == crate::alerts::rfc3339(T0 + 3600 * S) =>
            {
                Some(k.value.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(on_the_hour, vec![serde_json::json!(2)], "{out:#?}");
}

/// Event time that jumps far past the newest row (the wall clock moving it
/// on over a quiet input) evaluates the windows that hold rows and then the
/// newest window only, not one value per empty window in between.
#[tokio::test]
async fn a_jump_of_event_time_evaluates_the_newest_empty_window_only() {
    let kept = "/*\nkpi = \"per_client\"\nwindow = \"10s\"\nkeep = \"2h\"\ndimensions = [\"client.address\"]\nvalue = \"requests\"\n*/\n\
        SELECT window_start, window_end, client_address, count(*) AS requests FROM spans GROUP BY 1, 2, 3";
    let last_hour = "/*\nkpi = \"last_hour\"\nwindow = \"10s\"\ndimensions = [\"client.address\"]\n*/\n\
        SELECT window_start, window_end, client_address, sum(requests) AS value\n\
        FROM rollup('per_client', '1h') GROUP BY 1, 2, 3";
    let mut ev = Evaluator::new(rule_set(&[kept, last_hour]).await, 0);
    ev.push(
        ingest::Table::Spans,
        spans(&[(1.0, "a"), (15.0, "a"), (25.0, "a")]),
    )
    .unwrap();
    let mut out = ev.evaluate().await;
    // quiet: the wall clock moves event time 40 minutes on
    ev.advance(T0 + 2400 * S);
    out.extend(ev.evaluate().await);
    let windows: Vec<(String, serde_json::Value)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k) if k.kpi == "last_hour" => {
                Some((k.window_start.clone(), k.value.clone()))
            }
            _ => None,
        })
        .collect();
    let at = |s: i64| crate::alerts::rfc3339(T0 + s * S);
    assert_eq!(
        windows,
        vec![
            (at(0), serde_json::json!(1)),
            (at(10), serde_json::json!(2)),
            (at(20), serde_json::json!(3)),
            (at(2390), serde_json::json!(3)),
        ]
    );
}
