use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{Field, Schema};

use super::*;

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn times(v: &[i64]) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(v.to_vec()).with_timezone("UTC"))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn spans(trace: &str, n: usize, address: &str) -> RecordBatch {
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let parents: Vec<&str> = (0..n).map(|i| if i == 0 { "" } else { "s0" }).collect();
    batch(vec![
        ("trace_id", strings(&vec![trace; n])),
        ("span_id", strings(&id_refs)),
        ("parent_span_id", strings(&parents)),
        ("name", strings(&vec!["POST /api/login"; n])),
        ("service_name", strings(&vec!["gateway"; n])),
        ("time", times(&(0..n as i64).rev().collect::<Vec<_>>())),
        ("end_time", times(&vec![1_000; n])),
        ("status_code", strings(&vec!["ERROR"; n])),
        ("client_address", strings(&vec![address; n])),
    ])
}

#[test]
fn the_spans_and_logs_of_a_named_trace_are_kept_in_time_order() {
    let mut samples = Samples::default();
    let other = spans("bbbb", 2, "192.0.2.1");
    let mine = spans("aaaa", 3, "<img src=x onerror=alert(1)>");
    let logs = batch(vec![
        ("trace_id", strings(&["aaaa", "cccc"])),
        ("span_id", strings(&["s1", "s0"])),
        ("time", times(&[5, 6])),
        ("severity_text", strings(&["WARN", "INFO"])),
        ("body", strings(&["body text", "x"])),
        ("event_name", strings(&["shop.auth.login_failed", ""])),
    ]);
    samples.keep(
        &["aaaa", "dddd"],
        [&other, &mine].into_iter(),
        [&logs].into_iter(),
    );
    assert_eq!(samples.len(), 1, "a trace with no rows is not kept");
    let t = samples.get("aaaa").unwrap();
    assert_eq!(t.spans.len(), 3);
    assert!(t.spans.windows(2).all(|w| w[0].start_ns <= w[1].start_ns));
    assert_eq!(t.spans[0].service, "gateway");
    assert_eq!(t.spans[0].status, "ERROR");
    assert_eq!(
        t.spans[0].attributes["client.address"],
        "<img src=x onerror=alert(1)>"
    );
    assert_eq!(t.logs.len(), 1);
    assert_eq!(t.logs[0].body, "shop.auth.login_failed");
    assert!(!t.truncated);
    assert!(samples.get("bbbb").is_none());
}

#[test]
fn a_trace_kept_early_is_completed_by_rows_that_come_later() {
    let mut samples = Samples::default();
    let mine = spans("aaaa", 3, "192.0.2.1");
    samples.keep(&["aaaa"], [&mine].into_iter(), std::iter::empty());
    assert!(samples.get("aaaa").unwrap().logs.is_empty());
    let warn = batch(vec![
        ("trace_id", strings(&["aaaa"])),
        ("span_id", strings(&["s0"])),
        ("time", times(&[5])),
        ("severity_text", strings(&["WARN"])),
        ("body", strings(&["fault"])),
        ("event_name", strings(&[""])),
    ]);
    samples.keep(&["aaaa"], [&mine].into_iter(), [&warn].into_iter());
    assert_eq!(samples.len(), 1);
    let t = samples.get("aaaa").unwrap();
    assert_eq!((t.spans.len(), t.logs.len()), (3, 1));
    assert_eq!(t.logs[0].severity, "WARN");
    // an early firing's ids are kept again at the next close, once
    samples.again_later(&["aaaa", "aaaa", "bbbb"]);
    assert_eq!(samples.take_again(), ["aaaa", "bbbb"]);
    assert!(samples.take_again().is_empty());
    // fewer rows (the buffer pruned since) do not replace what was kept
    samples.keep(&["aaaa"], std::iter::empty(), [&warn].into_iter());
    assert_eq!(samples.get("aaaa").unwrap().spans.len(), 3);
}

#[test]
fn hostile_traces_cost_a_bounded_amount() {
    let mut samples = Samples::default();
    let huge = "x".repeat(100_000);
    let big = spans("aaaa", KEEP_SPANS + 50, &huge);
    samples.keep(&["aaaa"], [&big].into_iter(), std::iter::empty());
    let t = samples.get("aaaa").unwrap();
    assert_eq!(t.spans.len(), KEEP_SPANS);
    assert!(t.truncated);
    assert!(t.spans[0].attributes["client.address"].len() <= KEEP_TEXT + '…'.len_utf8());
    // the oldest traces give way
    for i in 0..KEEP_TRACES + 10 {
        let id = format!("t{i}");
        let b = spans(&id, 1, "192.0.2.1");
        samples.keep(&[id.as_str()], [&b].into_iter(), std::iter::empty());
    }
    assert_eq!(samples.len(), KEEP_TRACES);
    assert!(samples.get("aaaa").is_none());
    assert!(samples.get(&format!("t{}", KEEP_TRACES + 9)).is_some());
}
