//! Logs and domain events: OTLP `ExportLogsServiceRequest` (= `LogsData`) into
//! the `logs` table, one row per log record.
//!
//! The row's `time` is the record's `time_unix_nano`, or its
//! `observed_time_unix_nano` when the former is 0 (as the OTLP spec says).
//! `event_name` is the LogRecord `event_name` field; when that is empty, the
//! older `event.name` attribute fills it (and is then not repeated in the map).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, StringBuilder, TimestampNanosecondBuilder};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::rows::{Tail, append_id, prost_attrs, text_builder, time_builder};
use super::values::{
    Budget, Context, Val, absurd, capped, capped_name, nanos, opt_nanos, short, time_ok,
};
use super::wire::{self, Msg, Records};
use crate::schema::{LOG_PROMOTED, LOGS};
use crate::{DecodeError, Decoded, Rejected, Table};

/// The attribute that named events before the LogRecord `event_name` field.
pub const EVENT_NAME_ATTRIBUTE: &str = "event.name";

/// The fields of one log record other than its attributes.
#[derive(Default)]
pub(crate) struct LogFields<'a> {
    pub time: u64,
    pub observed_time: u64,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub severity_number: i32,
    pub severity_text: Cow<'a, str>,
    pub body: Option<Val<'a>>,
    pub event_name: Cow<'a, str>,
}

impl LogFields<'_> {
    fn event_time(&self) -> u64 {
        if self.time != 0 {
            self.time
        } else {
            self.observed_time
        }
    }
}

/// The builders of the `logs` table.
pub(crate) struct LogColumns {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    event_name: StringBuilder,
    /// `event_name` taken from the `event.name` attribute of the current row
    event_attr: Option<String>,
    pub tail: Tail,
    pub rejected: Vec<Rejected>,
}

impl LogColumns {
    /// Builders for about `rows` rows, decoding within `budget`.
    pub fn new(rows: usize, budget: Budget) -> LogColumns {
        LogColumns {
            time: time_builder(rows),
            observed_time: time_builder(rows),
            trace_id: text_builder(rows, 32),
            span_id: text_builder(rows, 16),
            severity_number: Int32Builder::with_capacity(rows),
            severity_text: text_builder(rows, 4),
            body: text_builder(rows, 16),
            event_name: text_builder(rows, 16),
            event_attr: None,
            tail: Tail::new(LOG_PROMOTED, rows, budget),
            rejected: Vec::new(),
        }
    }

    pub fn admit(&mut self, r: &LogFields<'_>) -> bool {
        let t = r.event_time();
        if time_ok(t) {
            return true;
        }
        let what = if r.event_name.is_empty() {
            "log record".to_owned()
        } else {
            format!("log record {}", short(&r.event_name))
        };
        self.rejected.push(absurd(&what, "time_unix_nano", t));
        false
    }

    pub fn attr(&mut self, r: &LogFields<'_>, key: &str, val: Val<'_>) {
        if key == EVENT_NAME_ATTRIBUTE
            && r.event_name.is_empty()
            && self.event_attr.is_none()
            && let Some(t) = val.text()
        {
            let t = capped_name(t, "event name", &mut self.rejected);
            self.tail.budget.charge(t.len());
            self.event_attr = Some(t.into_owned());
            return;
        }
        self.tail.attr(key, val, &mut self.rejected);
    }

    /// One attribute of the current row, a `KeyValue` message.
    fn wire_attr(&mut self, r: &LogFields<'_>, kv: Msg<'_>) -> Result<(), DecodeError> {
        let (key, value) = wire::key_value_parts(kv)?;
        if key == EVENT_NAME_ATTRIBUTE.as_bytes() {
            let (key, val) = wire::key_value_of(key, value, &mut self.rejected)?;
            self.attr(r, &key, val);
            Ok(())
        } else {
            self.tail.wire_attr(key, value, &mut self.rejected)
        }
    }

    pub fn end_row(&mut self, r: &LogFields<'_>) {
        self.time.append_value(nanos(r.event_time()));
        self.observed_time.append_option(opt_nanos(r.observed_time));
        append_id(&mut self.trace_id, r.trace_id, true);
        append_id(&mut self.span_id, r.span_id, true);
        self.severity_number
            .append_option((r.severity_number != 0).then_some(r.severity_number));
        if r.severity_text.is_empty() {
            self.severity_text.append_null();
        } else {
            let text = Cow::Borrowed(r.severity_text.as_ref());
            let text = capped_name(text, "severity text", &mut self.rejected);
            self.tail.budget.charge(text.len());
            self.severity_text.append_value(text);
        }
        match r.body.as_ref().and_then(|b| b.text()) {
            Some(t) => {
                let t = capped(t, "log body", &mut self.rejected);
                self.tail.budget.charge(t.len());
                self.body.append_value(t)
            }
            None => self.body.append_null(),
        }
        if !r.event_name.is_empty() {
            let name = Cow::Borrowed(r.event_name.as_ref());
            let name = capped_name(name, "event name", &mut self.rejected);
            self.tail.budget.charge(name.len());
            self.event_name.append_value(name);
        } else {
            self.event_name.append_option(self.event_attr.take());
        }
        self.event_attr = None;
        self.tail.end_row();
    }

    pub fn finish(mut self) -> Result<Decoded, DecodeError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.observed_time.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.event_name.finish()),
        ];
        let batch = self.tail.batch(LOGS.clone(), cols)?;
        Ok(Decoded {
            table: Table::Logs,
            batch,
            rejected: self.rejected,
        })
    }
}

/// Rows of a prost request (the simple path).
pub fn from_request(req: &ExportLogsServiceRequest) -> Result<Decoded, DecodeError> {
    use prost::Message as _;
    let rows = req
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum();
    let mut cols = LogColumns::new(rows, Budget::for_message(req.encoded_len()));
    for rl in &req.resource_logs {
        let resource = Context::of_resource(rl.resource.as_ref(), &mut cols.rejected);
        for sl in &rl.scope_logs {
            let ctx = resource.with_scope(sl.scope.as_ref(), &mut cols.rejected);
            cols.tail
                .budget
                .charge_run_and_records(&ctx, sl.log_records.len())?;
            cols.tail.set_context(ctx);
            for rec in &sl.log_records {
                cols.tail.check()?;
                let fields = LogFields {
                    time: rec.time_unix_nano,
                    observed_time: rec.observed_time_unix_nano,
                    trace_id: &rec.trace_id,
                    span_id: &rec.span_id,
                    severity_number: rec.severity_number,
                    severity_text: Cow::Borrowed(&rec.severity_text),
                    body: rec.body.as_ref().map(|b| Val::of(Some(b))),
                    event_name: Cow::Borrowed(&rec.event_name),
                };
                if !cols.admit(&fields) {
                    continue;
                }
                for (k, v) in prost_attrs(&rec.attributes) {
                    cols.attr(&fields, k, v);
                }
                cols.end_row(&fields);
            }
        }
    }
    cols.finish()
}

/// Rows of protobuf bytes, read without materialising prost structs.
pub fn decode_wire(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut rejected = Vec::new();
    let mut budget = Budget::for_message(bytes.len());
    let records = Records::read(bytes, &mut rejected, &mut budget)?;
    let mut cols = LogColumns::new(records.rows_hint(), budget);
    cols.rejected = rejected;
    let mut attrs = Vec::new();
    records.each_run(|ctx, log_records| {
        cols.tail.set_context(ctx);
        for &rec in log_records {
            cols.tail.check()?;
            attrs.clear();
            let fields = log_fields(rec, &mut attrs, &mut cols.rejected)?;
            if !cols.admit(&fields) {
                continue;
            }
            for &kv in &attrs {
                cols.wire_attr(&fields, kv)?;
            }
            cols.end_row(&fields);
        }
        Ok(())
    })?;
    cols.finish()
}

fn log_fields<'a>(
    rec: Msg<'a>,
    attrs: &mut Vec<Msg<'a>>,
    rejected: &mut Vec<Rejected>,
) -> Result<LogFields<'a>, DecodeError> {
    let mut r = LogFields::default();
    for f in rec.fields() {
        let f = f?;
        match f.num {
            1 => r.time = f.fixed64()?,
            2 => r.severity_number = f.int32()?,
            3 => r.severity_text = wire::text(f.bytes()?, "severity text", rejected),
            5 => r.body = Some(wire::any_value(f.msg()?, "log body", rejected)?),
            6 => attrs.push(f.msg()?),
            9 => r.trace_id = f.bytes()?,
            10 => r.span_id = f.bytes()?,
            11 => r.observed_time = f.fixed64()?,
            12 => r.event_name = wire::text(f.bytes()?, "event name", rejected),
            _ => {}
        }
    }
    Ok(r)
}
