//! Sample traces: the spans and log events of the trace ids an alert names,
//! kept when the alert fires, so the viewer can show them as a waterfall
//! (incident tracing without Jaeger).
//!
//! Taken from the rows the engine still buffers for the windows it has just
//! evaluated, so a trace shows what the engine saw of it in those windows.
//! Everything here is bounded: at most [`KEEP_TRACES`] traces (the oldest go
//! first), [`KEEP_SPANS`] spans and [`KEEP_LOGS`] log events per trace, and
//! every text cut to [`KEEP_TEXT`] bytes: the rows are written by the people
//! the engine watches.

use std::collections::{BTreeMap, HashSet, VecDeque};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use serde::Serialize;

pub const KEEP_TRACES: usize = 500;
pub const KEEP_SPANS: usize = 300;
pub const KEEP_LOGS: usize = 300;
pub const KEEP_TEXT: usize = 512;

/// The span attributes a waterfall shows (their columns, by the contract's names).
const SPAN_ATTRIBUTES: [&str; 6] = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "client.address",
    "user_agent.original",
    "db.operation.name",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleSpan {
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    pub start_ns: i64,
    pub end_ns: i64,
    /// `OK`, `ERROR` or `UNSET`
    pub status: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleLog {
    pub span_id: String,
    pub time_ns: i64,
    pub severity: String,
    /// the event name, or the body
    pub body: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SampleTrace {
    pub trace_id: String,
    pub spans: Vec<SampleSpan>,
    pub logs: Vec<SampleLog>,
    /// whether spans or logs were left out by the bounds
    pub truncated: bool,
}

/// The kept traces, oldest first.
#[derive(Debug, Default)]
pub struct Samples {
    traces: VecDeque<SampleTrace>,
    /// ids kept by early firings, to keep again at the next close (at most
    /// [`KEEP_TRACES`])
    again: Vec<String>,
}

impl Samples {
    pub fn get(&self, trace_id: &str) -> Option<&SampleTrace> {
        self.traces.iter().find(|t| t.trace_id == trace_id)
    }

    pub fn len(&self) -> usize {
        self.traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Remembers `ids` to keep again later ([`Samples::take_again`]).
    pub fn again_later(&mut self, ids: &[&str]) {
        for id in ids {
            if self.again.len() < KEEP_TRACES && !self.again.iter().any(|a| a == id) {
                self.again.push(id.to_string());
            }
        }
    }

    /// The ids [`Samples::again_later`] remembered, forgotten.
    pub fn take_again(&mut self) -> Vec<String> {
        std::mem::take(&mut self.again)
    }

    /// Keeps the spans and logs of `ids` found in `spans` and `logs` (batches
    /// of those tables). A trace kept already is replaced when more of it is
    /// found: an early firing keeps its sample before all of the trace has
    /// come (logs are exported apart from spans), and the close, over the
    /// same buffered rows and those come since, completes it.
    pub fn keep<'a>(
        &mut self,
        ids: &[&str],
        spans: impl Iterator<Item = &'a RecordBatch>,
        logs: impl Iterator<Item = &'a RecordBatch>,
    ) {
        let wanted: HashSet<&str> = ids.iter().copied().filter(|id| !id.is_empty()).collect();
        if wanted.is_empty() {
            return;
        }
        let mut found: BTreeMap<&str, SampleTrace> = BTreeMap::new();
        for batch in spans {
            collect_spans(batch, &wanted, &mut found);
        }
        for batch in logs {
            collect_logs(batch, &wanted, &mut found);
        }
        for (id, mut t) in found {
            t.trace_id = id.to_string();
            t.spans.sort_by_key(|s| s.start_ns);
            t.logs.sort_by_key(|l| l.time_ns);
            if let Some(kept) = self.traces.iter_mut().find(|k| k.trace_id == id) {
                if t.spans.len() + t.logs.len() > kept.spans.len() + kept.logs.len() {
                    *kept = t;
                }
                continue;
            }
            if self.traces.len() == KEEP_TRACES {
                self.traces.pop_front();
            }
            self.traces.push_back(t);
        }
    }
}

fn cut(s: &str) -> String {
    if s.len() <= KEEP_TEXT {
        return s.to_string();
    }
    let mut end = KEEP_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A column's text at `row`, whatever its string type; empty when absent.
fn text(batch: &RecordBatch, column: &str, row: usize) -> String {
    let Some(c) = batch.column_by_name(column) else {
        return String::new();
    };
    if c.is_null(row) {
        return String::new();
    }
    match c.data_type() {
        DataType::Utf8 => cut(c.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => cut(c.as_string::<i64>().value(row)),
        DataType::Utf8View => cut(c.as_string_view().value(row)),
        DataType::Dictionary(_, _) => arrow::util::display::array_value_to_string(c, row)
            .map(|s| cut(&s))
            .unwrap_or_default(),
        _ => arrow::util::display::array_value_to_string(c, row)
            .map(|s| cut(&s))
            .unwrap_or_default(),
    }
}

fn nanos(batch: &RecordBatch, column: &str, row: usize) -> i64 {
    batch
        .column_by_name(column)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .filter(|c| !c.is_null(row))
        .map(|c| c.value(row))
        .unwrap_or(0)
}

/// The rows of `batch` whose `trace_id` is wanted, as (row, id).
fn rows_of<'w>(batch: &RecordBatch, wanted: &HashSet<&'w str>) -> Vec<(usize, &'w str)> {
    let Some(ids) = batch
        .column_by_name("trace_id")
        .and_then(|c| c.as_string_opt::<i32>())
    else {
        return vec![];
    };
    (0..batch.num_rows())
        .filter(|&i| !ids.is_null(i))
        .filter_map(|i| wanted.get(ids.value(i)).map(|id| (i, *id)))
        .collect()
}

fn collect_spans<'w>(
    batch: &RecordBatch,
    wanted: &HashSet<&'w str>,
    found: &mut BTreeMap<&'w str, SampleTrace>,
) {
    for (row, id) in rows_of(batch, wanted) {
        let t = found.entry(id).or_default();
        if t.spans.len() == KEEP_SPANS {
            t.truncated = true;
            continue;
        }
        let attributes = SPAN_ATTRIBUTES
            .iter()
            .filter_map(|a| {
                let v = text(batch, &ingest::schema::column_name(a), row);
                (!v.is_empty()).then(|| (a.to_string(), v))
            })
            .collect();
        t.spans.push(SampleSpan {
            span_id: text(batch, "span_id", row),
            parent_span_id: text(batch, "parent_span_id", row),
            name: text(batch, "name", row),
            service: text(batch, "service_name", row),
            start_ns: nanos(batch, "time", row),
            end_ns: nanos(batch, "end_time", row),
            status: text(batch, "status_code", row),
            attributes,
        });
    }
}

fn collect_logs<'w>(
    batch: &RecordBatch,
    wanted: &HashSet<&'w str>,
    found: &mut BTreeMap<&'w str, SampleTrace>,
) {
    for (row, id) in rows_of(batch, wanted) {
        let t = found.entry(id).or_default();
        if t.logs.len() == KEEP_LOGS {
            t.truncated = true;
            continue;
        }
        let event = text(batch, "event_name", row);
        t.logs.push(SampleLog {
            span_id: text(batch, "span_id", row),
            time_ns: nanos(batch, "time", row),
            severity: text(batch, "severity_text", row),
            body: if event.is_empty() {
                text(batch, "body", row)
            } else {
                event
            },
        });
    }
}

#[cfg(test)]
mod tests;
