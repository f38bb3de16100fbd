use crate::evaluator::{Evaluator, Output};
use crate::testutil::*;

fn kpis(out: &[Output]) -> Vec<(String, String, i64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Kpi(k) => Some((
                k.window_start.clone(),
                k.dimensions
                    .get("client.address")
                    .cloned()
                    .unwrap_or_default(),
                k.value.as_i64().unwrap_or(-1),
            )),
            Output::Alert(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn tumbling_windows_split_at_the_boundary() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 0);
    ev.push(
        ingest::Table::Spans,
        spans(&[(0.0, "a"), (59.999, "a"), (60.0, "a")]),
    )
    .unwrap();
    let out = ev.finish().await;
    assert_eq!(
        kpis(&out),
        vec![
            ("2026-01-15T10:00:00Z".into(), "a".into(), 2),
            ("2026-01-15T10:01:00Z".into(), "a".into(), 1),
        ]
    );
}

#[tokio::test]
async fn hopping_windows_count_a_row_in_each_window_it_is_in() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "30s")]).await, 0);
    ev.push(ingest::Table::Spans, spans(&[(45.0, "a")]))
        .unwrap();
    let out = ev.finish().await;
    assert_eq!(
        kpis(&out),
        vec![
            ("2026-01-15T10:00:00Z".into(), "a".into(), 1),
            ("2026-01-15T10:00:30Z".into(), "a".into(), 1),
        ]
    );
}

#[tokio::test]
async fn a_window_is_final_only_when_the_watermark_passes_its_end() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S);
    ev.push(ingest::Table::Spans, spans(&[(10.0, "a"), (64.0, "a")]))
        .unwrap();
    // watermark 59 s: the first window [0, 60) is still open
    assert!(kpis(&ev.evaluate().await).is_empty());
    ev.push(ingest::Table::Spans, spans(&[(59.5, "a"), (65.0, "a")]))
        .unwrap();
    // watermark 60 s: the first window is final, with the row that came at 59.5 s
    assert_eq!(
        kpis(&ev.evaluate().await),
        vec![("2026-01-15T10:00:00Z".into(), "a".into(), 2)]
    );
}

#[tokio::test]
async fn rows_later_than_the_watermark_are_counted_not_windowed() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S);
    ev.push(ingest::Table::Spans, spans(&[(100.0, "a")]))
        .unwrap();
    // watermark is 95 s: 94 s is late, 96 s is not
    ev.push(ingest::Table::Spans, spans(&[(94.0, "late"), (96.0, "b")]))
        .unwrap();
    assert_eq!(ev.stats().late_rows, 1);
    let out = kpis(&ev.finish().await);
    assert!(out.iter().all(|(_, c, _)| c != "late"), "{out:?}");
    assert!(out.iter().any(|(_, c, _)| c == "b"), "{out:?}");
}

#[tokio::test]
async fn grouping_of_pushes_and_evaluations_does_not_change_the_output() {
    let rows: Vec<(f64, &str)> = (0..600)
        .map(|i| (i as f64 * 0.7, if i % 3 == 0 { "a" } else { "b" }))
        .collect();
    let rules = [count_kpi("1m", "20s"), flood_rule("1m", "20s", 50, 1, "0s")];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut outputs = Vec::new();
    for chunk in [1usize, 7, 600] {
        let mut ev = Evaluator::new(rule_set(&rules).await, 2 * S);
        let mut out = Vec::new();
        for (i, part) in rows.chunks(chunk).enumerate() {
            ev.push(ingest::Table::Spans, spans(part)).unwrap();
            if i % 3 == 0 {
                out.extend(ev.evaluate().await);
            }
        }
        out.extend(ev.finish().await);
        // When the engine emitted an alert (`detected_at`, the newest event
        // time it had seen) depends on how rows arrived; what it emitted must not.
        for o in &mut out {
            if let Output::Alert(a) = o {
                a.detected_at_ns = None;
            }
        }
        outputs.push(out);
    }
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[tokio::test]
async fn one_stream_running_ahead_does_not_make_another_late() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S);
    ev.push(ingest::Table::Spans, spans(&[(0.0, "a"), (20.0, "a")]))
        .unwrap();
    // logs from before the spans' newest time are on time: the logs stream is behind
    let logs = rows(ingest::Table::Logs, &[T0 + 2 * S, T0 + 3 * S], &[]);
    ev.push(ingest::Table::Logs, logs).unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    // a stream more than a minute behind the newest is idle and holds nothing back
    ev.push(ingest::Table::Spans, spans(&[(100.0, "a")]))
        .unwrap();
    assert_eq!(ev.watermark(), Some(T0 + 95 * S));
}

#[tokio::test]
async fn an_assigned_partition_holds_the_watermark_until_it_speaks() {
    use crate::window::{Idleness, Stream};
    let spans_p = |partition| Stream {
        table: ingest::Table::Spans,
        partition,
    };
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S)
        .with_idleness(Idleness::WallClock(std::time::Duration::from_secs(3600)));
    ev.expect_stream(spans_p(0));
    ev.expect_stream(spans_p(1));
    // partition 1 is read first, far ahead of partition 0
    ev.push_from(spans_p(1), spans(&[(300.0, "b")])).unwrap();
    assert!(
        ev.evaluate().await.is_empty(),
        "nothing is final while partition 0 is silent"
    );
    ev.push_from(spans_p(0), spans(&[(10.0, "a"), (20.0, "a")]))
        .unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    let out = kpis(&ev.finish().await);
    assert!(
        out.contains(&("2026-01-15T10:00:00Z".into(), "a".into(), 2)),
        "{out:?}"
    );
}

#[tokio::test]
async fn spans_are_windowed_by_their_end_so_slow_requests_are_not_late() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S);
    ev.push(ingest::Table::Spans, spans(&[(30.0, "fast")]))
        .unwrap();
    // a request that started at 20 s and took 12 s is exported after the one above
    let slow = rows(
        ingest::Table::Spans,
        &[T0 + 20 * S],
        &[
            (
                "end_time",
                std::sync::Arc::new(
                    arrow::array::TimestampNanosecondArray::from(vec![T0 + 32 * S])
                        .with_timezone("UTC"),
                ),
            ),
            ("client_address", text(&["slow"])),
        ],
    );
    ev.push(ingest::Table::Spans, slow).unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    let out = kpis(&ev.finish().await);
    assert!(
        out.contains(&("2026-01-15T10:00:00Z".into(), "slow".into(), 1)),
        "{out:?}"
    );
}

#[tokio::test]
async fn rows_of_a_table_no_rule_reads_are_not_held() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S);
    ev.push(
        ingest::Table::Logs,
        rows(ingest::Table::Logs, &[T0, T0 + S], &[]),
    )
    .unwrap();
    ev.push(ingest::Table::Spans, spans(&[(1.0, "a")])).unwrap();
    assert_eq!(ev.stats().buffered_rows, 1, "only the span is held");
    assert_eq!(
        ev.stats().rows.get("logs"),
        Some(&2),
        "the logs are still counted"
    );
}

/// Now on the wall clock, in nanoseconds.
fn wall_clock() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("a clock within i64 nanoseconds")
}

#[tokio::test]
async fn live_rows_dated_ahead_of_the_clock_neither_count_nor_move_event_time() {
    use crate::evaluator::FUTURE_ROWS_RULE;
    use crate::window::Idleness;
    let at = |times: &[i64]| {
        let clients = vec!["a"; times.len()];
        rows(
            ingest::Table::Spans,
            times,
            &[("client_address", text(&clients))],
        )
    };
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S)
        .with_idleness(Idleness::WallClock(std::time::Duration::from_secs(3600)))
        .with_future_limit(std::time::Duration::from_secs(30));
    // one span from 2099 first, as an attacker would send it
    let forged = 4_070_908_800 * S;
    ev.push(ingest::Table::Spans, at(&[forged])).unwrap();
    assert_eq!(ev.stats().future_rows.get("spans"), Some(&1));
    assert_eq!(ev.watermark(), None, "the forged row moved event time");
    // honest rows are on time
    let now = wall_clock();
    ev.push(ingest::Table::Spans, at(&[now - 2 * S, now - S]))
        .unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    // a row within the skew is kept, but event time stays behind the clock
    ev.push(ingest::Table::Spans, at(&[now + 20 * S])).unwrap();
    assert!(ev.watermark().is_some_and(|w| w <= wall_clock() - 5 * S));
    ev.push(ingest::Table::Spans, at(&[now - S])).unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    assert_eq!(ev.stats().future_rows.get("spans"), Some(&1));
    // the next evaluation says so, once
    let said: Vec<_> = ev
        .evaluate()
        .await
        .into_iter()
        .filter_map(|o| match o {
            Output::Alert(a) if a.rule_id == FUTURE_ROWS_RULE => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].value, serde_json::json!(1));
    assert!(said[0].summary.contains("2099"), "{}", said[0].summary);
    assert!(
        !ev.evaluate()
            .await
            .iter()
            .any(|o| matches!(o, Output::Alert(a) if a.rule_id == FUTURE_ROWS_RULE))
    );
}

#[tokio::test]
async fn a_cut_off_source_holds_the_watermark_however_long_it_is_quiet() {
    use crate::window::{Idleness, Stream};
    let spans_p = |partition| Stream {
        table: ingest::Table::Spans,
        partition,
    };
    let quiet = std::time::Duration::from_millis(200);
    let longer = || std::thread::sleep(quiet * 2);
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 5 * S)
        .with_idleness(Idleness::WallClock(quiet));
    ev.push_from(spans_p(0), spans(&[(10.0, "a")])).unwrap();
    ev.push_from(spans_p(1), spans(&[(300.0, "b")])).unwrap();
    assert_eq!(ev.watermark(), Some(T0 + 5 * S));
    // the broker goes away for longer than the idle time: partition 0 is
    // absent, not idle, and still holds the watermark
    ev.suspend_source();
    longer();
    assert_eq!(ev.watermark(), Some(T0 + 5 * S));
    assert!(kpis(&ev.evaluate().await).is_empty());
    // it comes back with the rest of its rows, which are on time
    ev.push_from(spans_p(0), spans(&[(20.0, "a")])).unwrap();
    assert_eq!(ev.stats().late_rows, 0);
    // the time away does not count as quiet: partition 1 still holds nothing back
    ev.resume_source();
    assert_eq!(ev.watermark(), Some(T0 + 15 * S));
    // connected and quiet for longer than the idle time: idle, the newest leads
    longer();
    assert_eq!(ev.watermark(), Some(T0 + 295 * S));
    assert!(kpis(&ev.evaluate().await).contains(&("2026-01-15T10:00:00Z".into(), "a".into(), 2)));
}

#[tokio::test]
async fn at_its_cap_the_buffer_refuses_and_counts_rows_and_evaluation_goes_on() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("10s", "10s")]).await, 0).with_buffer_cap(3);
    let a = |times: &[f64]| spans(&times.iter().map(|&t| (t, "a")).collect::<Vec<_>>());
    // window 10:00:00: five rows, room for three
    ev.push(ingest::Table::Spans, a(&[0.0, 1.0, 2.0, 3.0, 4.0]))
        .unwrap();
    assert_eq!(ev.stats().buffer_refused_rows.get("spans"), Some(&2));
    assert_eq!(ev.stats().buffered_rows, 3);
    // full: the next row is refused too, but its time closes the window,
    // which frees the buffer
    ev.push(ingest::Table::Spans, a(&[15.0])).unwrap();
    let first = ev.evaluate().await;
    assert_eq!(ev.stats().buffered_rows, 0);
    ev.push(ingest::Table::Spans, a(&[16.0, 17.0])).unwrap();
    let mut out = first;
    out.extend(ev.finish().await);
    assert_eq!(
        kpis(&out),
        vec![
            ("2026-01-15T10:00:00Z".into(), "a".into(), 3),
            ("2026-01-15T10:00:10Z".into(), "a".into(), 2),
        ]
    );
    assert_eq!(ev.stats().buffer_refused_rows.get("spans"), Some(&3));
}

/// Spans at `times` (seconds after T0) from client "a", of user "u".
fn spans_of_user(times: &[f64]) -> arrow::record_batch::RecordBatch {
    let ns: Vec<i64> = times.iter().map(|s| T0 + (s * 1e9) as i64).collect();
    rows(
        ingest::Table::Spans,
        &ns,
        &[
            ("client_address", text(&vec!["a"; times.len()])),
            ("user_id", text(&vec!["u"; times.len()])),
        ],
    )
}

#[test]
fn the_buffer_keeps_the_columns_asked_for_the_event_time_and_those_never_null() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut buffer = super::Buffer::default();
    let read: BTreeSet<String> = ["client_address".to_string()].into();
    buffer.keep_columns(BTreeMap::from([(ingest::Table::Spans, Some(read))]));
    let batch = spans_of_user(&[1.0, 2.0]);
    let full = batch.get_array_memory_size();
    buffer
        .push(ingest::Table::Spans, batch, None)
        .expect("pushed");
    let held: Vec<_> = buffer
        .overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
        .collect();
    let schema = held[0].batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert!(names.contains(&"client_address"), "{names:?}");
    assert!(names.contains(&"end_time"), "the event time: {names:?}");
    assert!(names.contains(&"trace_id"), "never null: {names:?}");
    assert!(!names.contains(&"user_id"), "{names:?}");
    assert!(!names.contains(&"resource_attributes"), "{names:?}");
    assert_eq!(buffer.bytes(), held[0].batch.get_array_memory_size());
    assert!(buffer.bytes() < full, "{} of {full}", buffer.bytes());
    buffer.prune(i64::MAX);
    assert_eq!((buffer.rows(), buffer.bytes()), (0, 0));
}

#[test]
fn small_batches_are_joined_once_they_hold_enough_rows() {
    let mut buffer = super::Buffer::default();
    let half = super::COMPACT_ROWS / 2;
    let times: Vec<f64> = (0..half).map(|i| i as f64 / 1000.0).collect();
    buffer
        .push(ingest::Table::Spans, spans_of_user(&times), None)
        .expect("pushed");
    let held = |b: &super::Buffer| {
        b.overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
            .map(|h| (h.batch.num_rows(), h.bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(held(&buffer).len(), 1);
    buffer
        .push(ingest::Table::Spans, spans_of_user(&times), None)
        .expect("pushed");
    let joined = held(&buffer);
    assert_eq!(joined.len(), 1, "joined: {joined:?}");
    assert_eq!(joined[0].0, super::COMPACT_ROWS);
    assert_eq!(buffer.bytes(), joined[0].1);
    assert_eq!(buffer.rows(), super::COMPACT_ROWS);
    // the batches as pushed stay known: joining them is not rows arriving
    let parts: Vec<(u64, i64)> = buffer
        .overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
        .flat_map(|h| h.parts.iter().copied())
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].0 < parts[1].0);
    assert_eq!(parts[0].1, T0);
    let joined_id = buffer
        .overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
        .map(|h| h.id)
        .next();
    assert!(joined_id > Some(parts[1].0), "a new id for the kept rows");
}

#[test]
fn joined_batches_share_their_repeated_text_and_pushed_large_ones_too() {
    use arrow::datatypes::DataType;
    let is_shared = |b: &super::Buffer| {
        b.overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
            .map(|h| {
                matches!(
                    h.batch.column_by_name("user_id").unwrap().data_type(),
                    DataType::Dictionary(_, _)
                )
            })
            .collect::<Vec<_>>()
    };
    let half = super::COMPACT_ROWS / 2;
    let times: Vec<f64> = (0..half).map(|i| i as f64 / 1000.0).collect();
    let small = spans_of_user(&times);
    let plain_bytes = 2 * small.get_array_memory_size();
    let mut buffer = super::Buffer::default();
    buffer
        .push(ingest::Table::Spans, small.clone(), None)
        .unwrap();
    assert_eq!(
        is_shared(&buffer),
        [false],
        "a small batch waits to be joined"
    );
    buffer.push(ingest::Table::Spans, small, None).unwrap();
    assert_eq!(is_shared(&buffer), [true]);
    assert!(
        buffer.bytes() < plain_bytes,
        "{} of {plain_bytes}",
        buffer.bytes()
    );
    let times: Vec<f64> = (0..super::COMPACT_ROWS)
        .map(|i| i as f64 / 1000.0)
        .collect();
    buffer
        .push(ingest::Table::Spans, spans_of_user(&times), None)
        .unwrap();
    assert_eq!(is_shared(&buffer), [true, true]);
    let counted: usize = buffer
        .overlapping(ingest::Table::Spans, i64::MIN, i64::MAX)
        .map(|h| h.batch.get_array_memory_size())
        .sum();
    assert_eq!(buffer.bytes(), counted);
}

/// A KPI counting, per window, the spans whose user is known.
const USERS_KPI: &str = "/*\nkpi = \"users\"\nwindow = \"1m\"\nslide = \"1m\"\n*/\nSELECT window_start, window_end, count(user_id) AS value FROM spans GROUP BY 1, 2";

#[tokio::test]
async fn a_column_a_reload_adds_is_null_in_the_rows_buffered_before_it() {
    let mut ev = Evaluator::new(rule_set(&[&count_kpi("1m", "1m")]).await, 0);
    ev.push(ingest::Table::Spans, spans_of_user(&[1.0, 2.0]))
        .unwrap();
    // the pack now also reads the user, which the buffer did not keep
    let widened = rule_set(&[&count_kpi("1m", "1m"), USERS_KPI]).await;
    ev.reload(widened).await.expect("reloaded");
    ev.push(ingest::Table::Spans, spans_of_user(&[3.0]))
        .unwrap();
    let out = ev.finish().await;
    let users: Vec<i64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k) if k.kpi == "users" => k.value.as_i64(),
            _ => None,
        })
        .collect();
    // the two spans buffered before the reload have no user any more
    assert_eq!(users, vec![1]);
    let requests: Vec<i64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(k) if k.kpi == "requests" => k.value.as_i64(),
            _ => None,
        })
        .collect();
    assert_eq!(requests, vec![3]);
}
