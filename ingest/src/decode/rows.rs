//! The Arrow columns the three signal decoders share: the columns every table
//! ends with (service, scope, promoted attributes, the two maps) and the
//! builders of ids and times.
//!
//! Every decoder (the protobuf wire reader, the prost-struct path, OTLP/JSON)
//! hands each attribute to [`Tail::attr`] as a key and a [`Val`], so the
//! promotion rule and the text rendering are written once.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::values::{
    Budget, Context, ENTRY_COST, MAX_ATTRIBUTE_BYTES, MAX_NAME_BYTES, RECORD_COST, Val, capped,
    capped_name,
};
use super::wire::{self, Msg, Simple};
use crate::schema::{Promoted, RESOURCE_PROMOTED};
use crate::{DecodeError, Reason, Rejected};

pub(crate) fn arrow_error(e: ArrowError) -> DecodeError {
    // Only reachable through a bug in a decoder (columns of unequal lengths).
    DecodeError::new(Reason::CorruptProtobuf, format!("building the batch: {e}"))
}

/// Lowercase hex of an id; `None` when the id is empty.
pub(crate) fn append_id(b: &mut StringBuilder, id: &[u8], nullable: bool) {
    if id.is_empty() && nullable {
        b.append_null();
        return;
    }
    let mut buf = [0u8; 64];
    if id.len() <= 32 {
        let out = &mut buf[..id.len() * 2];
        if hex::encode_to_slice(id, out).is_ok()
            && let Ok(s) = std::str::from_utf8(out)
        {
            b.append_value(s);
            return;
        }
    }
    b.append_value(hex::encode(id));
}

pub(crate) fn time_builder(rows: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC")
}

/// A builder of an attribute map column, room for `rows` rows of about
/// `entries` entries in all.
pub(crate) fn map_builder(rows: usize, entries: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(map_field_names()),
        text_builder(entries, 16),
        text_builder(entries, 16),
        rows,
    )
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

enum Col {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
}

impl Col {
    fn append_nulls(&mut self, n: usize) {
        match self {
            Col::Text(b) => b.append_nulls(n),
            Col::Int(b) => b.append_nulls(n),
            Col::Float(b) => b.append_nulls(n),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Text(b) => Arc::new(b.finish()),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Float(b) => Arc::new(b.finish()),
        }
    }
}

/// The columns every table ends with, in the schema's order: the resource's
/// promoted columns, `scope_name`, the signal's promoted attributes,
/// `attributes`, `resource_attributes`.
///
/// The columns of the context (service, scope name, resource attributes) are
/// the same for every row of one resource and scope: each context is kept once,
/// with its number of rows, and repeated when the batch is finished.
pub(crate) struct Tail {
    promoted: &'static [(&'static str, Promoted)],
    cols: Vec<Col>,
    /// the nulls each promoted column is owed, appended in one go before its
    /// next value (most of them are null in most rows)
    nulls: Vec<usize>,
    /// which promoted columns the current row has filled (bit i = cols[i])
    filled: u64,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    /// each context in row order, with its number of rows
    contexts: Vec<(Context, usize)>,
    /// room to write an integer's text in
    number: String,
    /// what the message may still cost
    pub budget: Budget,
    /// what a row of the current context costs ([`Context::row_cost`])
    row_cost: usize,
}

impl Tail {
    /// Builders for about `rows` rows, decoding within `budget`.
    pub fn new(promoted: &'static [(&'static str, Promoted)], rows: usize, budget: Budget) -> Tail {
        debug_assert!(promoted.len() <= 64);
        Tail {
            promoted,
            cols: promoted
                .iter()
                .map(|(_, ty)| match ty {
                    Promoted::Text => Col::Text(text_builder(rows, 16)),
                    Promoted::Int => Col::Int(Int64Builder::with_capacity(rows)),
                    Promoted::Float => Col::Float(Float64Builder::with_capacity(rows)),
                })
                .collect(),
            nulls: vec![0; promoted.len()],
            filled: 0,
            attributes: map_builder(rows, rows * 2),
            contexts: Vec::new(),
            number: String::new(),
            budget,
            row_cost: 0,
        }
    }

    /// `Err` once the message costs more than its budget: called once per record.
    #[inline]
    pub fn check(&self) -> Result<(), DecodeError> {
        self.budget.check()
    }

    /// Charges one row of the current context (its fixed columns, its copy
    /// of the context's columns) and `extra` bytes, then checks: for rows not
    /// charged ahead by [`Budget::charge_run`] (data points).
    pub fn charge_row(&mut self, extra: usize) -> Result<(), DecodeError> {
        self.budget
            .spend((RECORD_COST + self.row_cost).saturating_add(extra))
    }

    /// The resource and scope of the rows that follow.
    pub fn set_context(&mut self, ctx: Context) {
        self.row_cost = self.budget.row_cost(&ctx);
        self.contexts.push((ctx, 0));
    }

    /// The promoted column of `key` when the current row has not filled it
    /// yet, with the nulls of the rows before appended.
    #[inline]
    fn open_column(&mut self, key: &[u8]) -> Option<usize> {
        let i = self
            .promoted
            .iter()
            .position(|(k, _)| k.as_bytes() == key)?;
        if self.filled & (1 << i) != 0 {
            return None;
        }
        let nulls = std::mem::take(&mut self.nulls[i]);
        if nulls > 0 {
            self.cols[i].append_nulls(nulls);
        }
        Some(i)
    }

    /// One attribute of the current row. A promoted attribute fills its column
    /// (the first occurrence of a key does; a repeated key goes to the map); a
    /// value that does not fit the column's type is kept, as text, in the map and
    /// reported `WrongType`. Every other attribute goes to the map.
    pub fn attr(&mut self, key: &str, val: Val<'_>, rejected: &mut Vec<Rejected>) {
        self.budget.charge(key.len() + ENTRY_COST);
        if let Some(i) = self.open_column(key.as_bytes()) {
            let ok = match (&mut self.cols[i], &val) {
                (_, Val::Empty) => false,
                (Col::Text(b), v) => match v.text() {
                    Some(t) => {
                        let t = capped(t, key, rejected);
                        self.budget.charge(t.len());
                        b.append_value(t);
                        true
                    }
                    None => false,
                },
                (Col::Int(b), v) => match int_of(v) {
                    Some(n) => {
                        b.append_value(n);
                        true
                    }
                    None => false,
                },
                (Col::Float(b), v) => match float_of(v) {
                    Some(x) => {
                        b.append_value(x);
                        true
                    }
                    None => false,
                },
            };
            if ok {
                self.filled |= 1 << i;
                return;
            }
            if val != Val::Empty {
                rejected.push(Rejected {
                    reason: Reason::WrongType,
                    detail: format!(
                        "attribute {key}: a {} value {:?} does not fit its column; kept in the attributes map",
                        val.type_name(),
                        val.text().map(|t| t.chars().take(64).collect::<String>()).unwrap_or_default()
                    ),
                });
            }
        }
        let text = val.text().map(|t| capped(t, key, rejected));
        self.budget.charge(text.as_ref().map_or(0, |t| t.len()));
        self.attributes.keys().append_value(capped_name(
            Cow::Borrowed(key),
            "attribute key",
            rejected,
        ));
        self.attributes.values().append_option(text);
    }

    /// One attribute as the wire reader finds it: the key's bytes and the
    /// `AnyValue` message. A string or an integer (nearly every attribute) goes
    /// straight into its builder, the key compared as bytes; anything else
    /// through [`Tail::attr`], with the same result.
    #[inline]
    pub fn wire_attr(
        &mut self,
        key: &[u8],
        value: Option<Msg<'_>>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), DecodeError> {
        if let Some(v) = value.and_then(wire::simple_value)
            && self.simple_attr(key, v)
        {
            return Ok(());
        }
        let (key, val) = wire::key_value_of(key, value, rejected)?;
        self.attr(&key, val, rejected);
        Ok(())
    }

    /// The fast cases of [`Tail::wire_attr`]; false when `attr` must decide.
    #[inline]
    fn simple_attr(&mut self, key: &[u8], v: Simple<'_>) -> bool {
        if key.len() > MAX_NAME_BYTES {
            return false;
        }
        if let Some(i) = self.open_column(key) {
            match (&mut self.cols[i], v) {
                (Col::Text(b), Simple::Str(s)) if s.len() <= MAX_ATTRIBUTE_BYTES => {
                    self.budget.charge(key.len() + s.len() + ENTRY_COST);
                    b.append_value(s)
                }
                (Col::Int(b), Simple::Int(n)) => b.append_value(n),
                (Col::Float(b), Simple::Int(n)) => b.append_value(n as f64),
                _ => return false,
            }
            self.filled |= 1 << i;
            return true;
        }
        let Ok(key) = std::str::from_utf8(key) else {
            return false;
        };
        let value = match v {
            Simple::Str(s) => s,
            Simple::Int(n) => {
                self.number.clear();
                let _ = write!(self.number, "{n}");
                self.number.as_str()
            }
        };
        if value.len() > MAX_ATTRIBUTE_BYTES {
            return false;
        }
        self.budget.charge(key.len() + value.len() + ENTRY_COST);
        self.attributes.keys().append_value(key);
        self.attributes.values().append_value(value);
        true
    }

    /// Ends the current row: the promoted columns it did not fill get nulls.
    pub fn end_row(&mut self) {
        for (i, nulls) in self.nulls.iter_mut().enumerate() {
            if self.filled & (1 << i) == 0 {
                *nulls += 1;
            }
        }
        self.filled = 0;
        // Keys and values are appended in pairs, so this cannot fail.
        self.attributes
            .append(true)
            .expect("attribute keys and values are appended in pairs");
        match self.contexts.last_mut() {
            Some((_, rows)) => *rows += 1,
            None => self.contexts.push((Context::default(), 1)),
        }
    }

    fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        for i in 0..RESOURCE_PROMOTED.len() {
            out.push(self.repeated(|c| c.service[i].as_deref()));
        }
        out.push(self.repeated(|c| c.scope_name.as_deref()));
        for (c, nulls) in self.cols.iter_mut().zip(&mut self.nulls) {
            c.append_nulls(std::mem::take(nulls));
            out.push(c.finish());
        }
        out.push(Arc::new(self.attributes.finish()));
        out.push(self.resource_attributes());
    }

    /// The `resource_attributes` column: each row's copy of its context's
    /// attributes, or only empty maps when the decoders do not build it
    /// ([`resource_attributes`]). Presized to what it holds.
    fn resource_attributes(&self) -> ArrayRef {
        let copies = self.budget.per_row_resource;
        let (rows, entries, bytes) = self.contexts.iter().fold((0, 0, 0), |(r, e, b), (c, n)| {
            let (e1, b1) = if copies {
                let bytes: usize = c
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
                    .sum();
                (c.resource_attributes.len() * n, bytes * n)
            } else {
                (0, 0)
            };
            (r + n, e + e1, b + b1)
        });
        let mut resource = MapBuilder::with_capacity(
            Some(map_field_names()),
            StringBuilder::with_capacity(entries, bytes),
            StringBuilder::with_capacity(entries, bytes),
            rows,
        );
        for (ctx, rows) in &self.contexts {
            for _ in 0..*rows {
                if copies {
                    for (k, v) in &ctx.resource_attributes {
                        resource.keys().append_value(k);
                        resource.values().append_option(v.as_deref());
                    }
                }
                resource
                    .append(true)
                    .expect("resource keys and values are appended in pairs");
            }
        }
        Arc::new(resource.finish())
    }

    /// The batch of `schema` made of the signal's own columns `cols` and
    /// these: every column's buffers cut to what they hold (a builder that
    /// grew doubled its room, so a batch could take up to twice what it
    /// holds), then its memory checked against the budget.
    pub fn batch(
        &mut self,
        schema: SchemaRef,
        mut cols: Vec<ArrayRef>,
    ) -> Result<RecordBatch, DecodeError> {
        self.finish(&mut cols);
        for c in &mut cols {
            c.shrink_to_fit();
        }
        let batch = RecordBatch::try_new(schema, cols).map_err(arrow_error)?;
        self.budget.check_built(&batch)?;
        Ok(batch)
    }

    /// A column of one value per context, repeated for each of its rows.
    fn repeated(&self, value: impl Fn(&Context) -> Option<&str>) -> ArrayRef {
        let (rows, bytes) = self.contexts.iter().fold((0, 0), |(r, b), (c, n)| {
            (r + n, b + value(c).map_or(0, str::len) * n)
        });
        let mut b = StringBuilder::with_capacity(rows, bytes);
        for (c, n) in &self.contexts {
            let v = value(c);
            for _ in 0..*n {
                b.append_option(v);
            }
        }
        Arc::new(b.finish())
    }
}

/// A text builder for `rows` values of about `bytes` bytes each.
pub(crate) fn text_builder(rows: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * bytes)
}

/// An Int column's value: ints, strings that parse as one, and doubles with an
/// exact integer value.
fn int_of(v: &Val<'_>) -> Option<i64> {
    match v {
        Val::Int(i) => Some(*i),
        Val::Str(s) => s.trim().parse().ok(),
        Val::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        _ => None,
    }
}

/// A Float column's value: doubles, ints (widened) and strings that parse.
fn float_of(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Double(d) => Some(*d),
        Val::Int(i) => Some(*i as f64),
        Val::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The key/value pairs of prost attributes.
pub(crate) fn prost_attrs(kvs: &[KeyValue]) -> impl Iterator<Item = (&str, Val<'_>)> {
    kvs.iter()
        .map(|kv| (kv.key.as_str(), Val::of(kv.value.as_ref())))
}
