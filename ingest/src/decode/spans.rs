//! Spans: OTLP `ExportTraceServiceRequest` (= `TracesData`) into the `spans`
//! table, one row per span.
//!
//! [`decode_wire`] reads the protobuf bytes directly into the Arrow builders;
//! [`from_request`] converts prost structs (the OTLP/JSON path, the benchmark
//! baseline and the property tests' oracle). Both go through [`SpanColumns`].

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringBuilder, TimestampNanosecondBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::rows::{Tail, append_id, prost_attrs, text_builder, time_builder};
use super::values::{Budget, Context, Val, absurd, capped, capped_name, nanos, short, time_ok};
use super::wire::{self, Msg, Records};
use crate::schema::{SPAN_PROMOTED, SPANS};
use crate::{DecodeError, Decoded, Rejected, Table};

/// `SpanKind` as the `kind` column writes it.
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

/// `Status.code` as the `status_code` column writes it.
pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
}

/// The fields of one span other than its attributes.
#[derive(Default)]
pub(crate) struct SpanFields<'a> {
    pub start: u64,
    pub end: u64,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: Cow<'a, str>,
    pub kind: i32,
    pub status_code: i32,
    pub status_message: Cow<'a, str>,
}

/// The builders of the `spans` table.
pub(crate) struct SpanColumns {
    time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ms: Float64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    pub tail: Tail,
    pub rejected: Vec<Rejected>,
}

impl SpanColumns {
    /// Builders for about `rows` rows, decoding within `budget`.
    pub fn new(rows: usize, budget: Budget) -> SpanColumns {
        SpanColumns {
            time: time_builder(rows),
            end_time: time_builder(rows),
            duration_ms: Float64Builder::with_capacity(rows),
            trace_id: text_builder(rows, 32),
            span_id: text_builder(rows, 16),
            parent_span_id: text_builder(rows, 16),
            name: text_builder(rows, 16),
            kind: text_builder(rows, 6),
            status_code: text_builder(rows, 5),
            status_message: text_builder(rows, 0),
            tail: Tail::new(SPAN_PROMOTED, rows, budget),
            rejected: Vec::new(),
        }
    }

    /// Whether a span with these fields becomes a row; if not, it is reported.
    pub fn admit(&mut self, s: &SpanFields<'_>) -> bool {
        if !time_ok(s.start) {
            self.rejected.push(absurd(
                &format!("span {}", short(&s.name)),
                "start_time_unix_nano",
                s.start,
            ));
            false
        } else if !time_ok(s.end) {
            self.rejected.push(absurd(
                &format!("span {}", short(&s.name)),
                "end_time_unix_nano",
                s.end,
            ));
            false
        } else {
            true
        }
    }

    pub fn attr(&mut self, key: &str, val: Val<'_>) {
        self.tail.attr(key, val, &mut self.rejected);
    }

    /// Ends a row admitted by [`SpanColumns::admit`] whose attributes were added.
    pub fn end_row(&mut self, s: &SpanFields<'_>) {
        let (start, end) = (nanos(s.start), nanos(s.end));
        self.time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ms.append_value((end - start) as f64 / 1e6);
        append_id(&mut self.trace_id, s.trace_id, false);
        append_id(&mut self.span_id, s.span_id, false);
        append_id(&mut self.parent_span_id, s.parent_span_id, true);
        let name = capped_name(Cow::Borrowed(&s.name), "span name", &mut self.rejected);
        self.tail.budget.charge(name.len() + s.status_message.len());
        self.name.append_value(name);
        self.kind.append_value(kind_name(s.kind));
        self.status_code.append_value(status_name(s.status_code));
        if s.status_message.is_empty() {
            self.status_message.append_null();
        } else {
            let message = Cow::Borrowed(s.status_message.as_ref());
            self.status_message
                .append_value(capped(message, "status message", &mut self.rejected));
        }
        self.tail.end_row();
    }

    pub fn finish(mut self) -> Result<Decoded, DecodeError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
        ];
        let batch = self.tail.batch(SPANS.clone(), cols)?;
        Ok(Decoded {
            table: Table::Spans,
            batch,
            rejected: self.rejected,
        })
    }
}

/// Rows of a prost request (the simple path).
pub fn from_request(req: &ExportTraceServiceRequest) -> Result<Decoded, DecodeError> {
    use prost::Message as _;
    let rows = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let mut cols = SpanColumns::new(rows, Budget::for_message(req.encoded_len()));
    for rs in &req.resource_spans {
        let resource = Context::of_resource(rs.resource.as_ref(), &mut cols.rejected);
        for ss in &rs.scope_spans {
            let ctx = resource.with_scope(ss.scope.as_ref(), &mut cols.rejected);
            cols.tail
                .budget
                .charge_run_and_records(&ctx, ss.spans.len())?;
            cols.tail.set_context(ctx);
            for span in &ss.spans {
                cols.tail.check()?;
                let status = span.status.as_ref();
                let fields = SpanFields {
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    trace_id: &span.trace_id,
                    span_id: &span.span_id,
                    parent_span_id: &span.parent_span_id,
                    name: Cow::Borrowed(&span.name),
                    kind: span.kind,
                    status_code: status.map_or(0, |s| s.code),
                    status_message: Cow::Borrowed(status.map_or("", |s| s.message.as_str())),
                };
                if !cols.admit(&fields) {
                    continue;
                }
                for (k, v) in prost_attrs(&span.attributes) {
                    cols.attr(k, v);
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
    let mut cols = SpanColumns::new(records.rows_hint(), budget);
    cols.rejected = rejected;
    let mut attrs = Vec::new();
    records.each_run(|ctx, spans| {
        cols.tail.set_context(ctx);
        for &span in spans {
            cols.tail.check()?;
            attrs.clear();
            let fields = span_fields(span, &mut attrs, &mut cols.rejected)?;
            if !cols.admit(&fields) {
                continue;
            }
            for &kv in &attrs {
                let (key, value) = wire::key_value_parts(kv)?;
                cols.tail.wire_attr(key, value, &mut cols.rejected)?;
            }
            cols.end_row(&fields);
        }
        Ok(())
    })?;
    cols.finish()
}

fn span_fields<'a>(
    span: Msg<'a>,
    attrs: &mut Vec<Msg<'a>>,
    rejected: &mut Vec<Rejected>,
) -> Result<SpanFields<'a>, DecodeError> {
    let mut s = SpanFields::default();
    for f in span.fields() {
        let f = f?;
        match f.num {
            1 => s.trace_id = f.bytes()?,
            2 => s.span_id = f.bytes()?,
            4 => s.parent_span_id = f.bytes()?,
            5 => s.name = wire::text(f.bytes()?, "span name", rejected),
            6 => s.kind = f.int32()?,
            7 => s.start = f.fixed64()?,
            8 => s.end = f.fixed64()?,
            9 => attrs.push(f.msg()?),
            15 => {
                for g in f.msg()?.fields() {
                    let g = g?;
                    match g.num {
                        2 => s.status_message = wire::text(g.bytes()?, "status message", rejected),
                        3 => s.status_code = g.int32()?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}
