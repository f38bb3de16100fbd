//! What the three signal decoders share: attribute values and how they become
//! text, the columns every table ends with (service, scope, promoted attributes,
//! the two maps), the limits, and the timestamp check.
//!
//! Every decoder (the protobuf wire reader, the prost-struct path, OTLP/JSON)
//! hands each attribute to [`Tail::attr`] as a key and a [`Val`], so the
//! promotion rule and the text rendering are written once.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{
    Array, ArrayRef, Float64Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::schema::{Promoted, RESOURCE_PROMOTED};
use crate::wire::{self, Msg, Simple};
use crate::{DecodeError, Reason, Rejected};

/// An attribute value (or a log body, a status message) over this many bytes
/// is truncated.
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// A name (span, metric, event, scope), a metric's unit or description, a
/// severity text or an attribute key over this many bytes is truncated.
pub const MAX_NAME_BYTES: usize = 1024;
/// A message over this many bytes is refused whole.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The decoded bytes a message may cost per byte of its protobuf encoding.
pub const BUDGET_PER_INPUT_BYTE: usize = 32;
/// The budget of any message, however small.
pub const BUDGET_MIN_BYTES: usize = 1 << 20;
/// The budget of the largest messages.
pub const BUDGET_MAX_BYTES: usize = 256 << 20;
/// What one record (span, log record, data point) costs at least, skipped or
/// not: its fixed columns, its place in the lists of the decoder, its report.
pub const RECORD_COST: usize = 128;
/// What an attribute costs besides its key and value: two offsets, a map entry.
const ENTRY_COST: usize = 16;

/// Whether the decoders fill `resource_attributes` with each row's copy of
/// its resource's attributes: see [`set_resource_attributes`].
static RESOURCE_ATTRIBUTES: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// this thread's choice, over the process's ([`with_resource_attributes`])
    static RESOURCE_ATTRIBUTES_HERE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the decoders build the `resource_attributes` column, for the whole
/// process (on by default). Off, every row's `resource_attributes` is an empty
/// map (the column's offsets, no entries): a resource's attributes are then
/// kept once per resource and scope while decoding and charged to the budget
/// once, not once per row. The engine turns it off when no loaded rule or KPI
/// reads the column, and on again when a reloaded pack does.
///
/// ```
/// use ingest::decode::{decode_proto, resource_attributes, set_resource_attributes};
/// set_resource_attributes(false);
/// assert!(!resource_attributes());
/// set_resource_attributes(true);
/// # let _ = decode_proto;
/// ```
pub fn set_resource_attributes(on: bool) {
    RESOURCE_ATTRIBUTES.store(on, Ordering::Relaxed);
}

/// Whether decoders on this thread build `resource_attributes` now: this
/// thread's [`with_resource_attributes`], else [`set_resource_attributes`].
pub fn resource_attributes() -> bool {
    RESOURCE_ATTRIBUTES_HERE
        .with(Cell::get)
        .unwrap_or_else(|| RESOURCE_ATTRIBUTES.load(Ordering::Relaxed))
}

/// Runs `f` with the decoders on this thread building `resource_attributes`
/// or not, whatever the process's setting: for tests and benchmarks that
/// compare both in one process.
pub fn with_resource_attributes<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let before = RESOURCE_ATTRIBUTES_HERE.with(|c| c.replace(Some(on)));
    let out = f();
    RESOURCE_ATTRIBUTES_HERE.with(|c| c.set(before));
    out
}

/// The decoded bytes a message of `len` bytes (its protobuf encoding) may
/// cost: [`BUDGET_PER_INPUT_BYTE`] times its size, at least
/// [`BUDGET_MIN_BYTES`] and at most [`BUDGET_MAX_BYTES`].
///
/// ```
/// use ingest::decode::budget_for;
/// assert_eq!(budget_for(0), 1 << 20);
/// assert_eq!(budget_for(1 << 20), 32 << 20);
/// assert_eq!(budget_for(64 << 20), 256 << 20);
/// ```
pub fn budget_for(len: usize) -> usize {
    len.saturating_mul(BUDGET_PER_INPUT_BYTE)
        .clamp(BUDGET_MIN_BYTES, BUDGET_MAX_BYTES)
}

/// What one message may still cost while it is decoded. Charged as rows,
/// attributes and copies of a resource's attributes are made; the decoders
/// check it once per record, so a message over its budget is refused
/// ([`Reason::OverBudget`]) before it is decoded in full.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    input: usize,
    limit: usize,
    used: usize,
    /// whether each row gets a copy of its resource's attributes
    /// ([`resource_attributes`] when the message's decoding began)
    per_row_resource: bool,
}

impl Budget {
    /// The budget of a message of `input` bytes ([`budget_for`]).
    pub fn for_message(input: usize) -> Budget {
        Budget {
            input,
            limit: budget_for(input),
            used: 0,
            per_row_resource: resource_attributes(),
        }
    }

    #[inline]
    pub fn charge(&mut self, bytes: usize) {
        self.used = self.used.saturating_add(bytes);
    }

    /// `Err` once more was charged than the budget allows.
    #[inline]
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.used > self.limit {
            return Err(self.exceeded());
        }
        Ok(())
    }

    /// Charges the copies of the context `ctx` that a run of `records`
    /// records makes (one per row, and the run's own), then checks: once per
    /// run, before any of its records is decoded. Each record's own
    /// [`RECORD_COST`] is charged apart, as the record is found. The
    /// resource's attributes are charged per row only when each row gets a
    /// copy ([`resource_attributes`]); else once, for the run's own.
    pub fn charge_run(&mut self, ctx: &Context, records: usize) -> Result<(), DecodeError> {
        let copies = records.saturating_add(1);
        let cost =
            copies
                .saturating_mul(self.row_cost(ctx))
                .saturating_add(if self.per_row_resource {
                    0
                } else {
                    ctx.attributes_cost()
                });
        self.spend(cost)
    }

    /// What each row of `ctx` costs for the context columns it repeats.
    fn row_cost(&self, ctx: &Context) -> usize {
        if self.per_row_resource {
            ctx.row_cost()
        } else {
            ctx.repeated_cost()
        }
    }

    /// `Err` when `batch`, as built, takes more memory than the budget allows:
    /// the last check, on what was really allocated.
    fn check_built(&self, batch: &RecordBatch) -> Result<(), DecodeError> {
        let built = batch.get_array_memory_size();
        if built > self.limit {
            return Err(DecodeError::new(
                Reason::OverBudget,
                format!(
                    "a message of {} bytes decoded to {built} bytes of rows, more than its budget of {} bytes: refused",
                    self.input, self.limit
                ),
            ));
        }
        Ok(())
    }

    /// [`Budget::charge_run`] and each record's [`RECORD_COST`]: for records
    /// that were not charged as they were found (prost structs).
    pub fn charge_run_and_records(
        &mut self,
        ctx: &Context,
        records: usize,
    ) -> Result<(), DecodeError> {
        self.spend(records.saturating_mul(RECORD_COST))?;
        self.charge_run(ctx, records)
    }

    /// Charges `bytes`, then checks.
    #[inline]
    pub fn spend(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.charge(bytes);
        self.check()
    }

    #[cold]
    fn exceeded(&self) -> DecodeError {
        DecodeError::new(
            Reason::OverBudget,
            format!(
                "a message of {} bytes would decode to more than {} bytes ({BUDGET_PER_INPUT_BYTE} per byte of protobuf, at most {BUDGET_MAX_BYTES}): refused",
                self.input, self.limit
            ),
        )
    }
}

/// At most the first 64 characters of `s`, quoted, for a message about it.
pub(crate) fn short(s: &str) -> String {
    const KEEP: usize = 64;
    match s.char_indices().nth(KEEP) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &s[..end], s.len()),
    }
}

/// `s` cut to at most `max` characters on a character boundary, with `...`
/// when cut: for messages sent back to clients.
pub fn cut_text(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}...", &s[..end])),
    }
}

/// 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in nanoseconds.
const MIN_TIME: u64 = 946_684_800_000_000_000;
const MAX_TIME: u64 = 4_102_444_800_000_000_000;

/// Whether `t` (Unix nanoseconds) is a plausible event time: from 2000 to 2100.
pub fn time_ok(t: u64) -> bool {
    (MIN_TIME..MAX_TIME).contains(&t)
}

/// A checked time as the column's `i64`; only call with `time_ok(t)`.
pub(crate) fn nanos(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// An optional time column's value: 0 or implausible -> null.
pub(crate) fn opt_nanos(t: u64) -> Option<i64> {
    time_ok(t).then(|| nanos(t))
}

pub(crate) fn absurd(what: &str, field: &str, t: u64) -> Rejected {
    Rejected {
        reason: Reason::AbsurdTimestamp,
        detail: format!("{what} skipped: {field} {t} ns is not between 2000 and 2100"),
    }
}

pub(crate) fn arrow_error(e: ArrowError) -> DecodeError {
    // Only reachable through a bug in a decoder (columns of unequal lengths).
    DecodeError::new(Reason::CorruptProtobuf, format!("building the batch: {e}"))
}

/// One attribute value, borrowed from the input where it can be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Cow<'a, [u8]>),
    /// An array or a kvlist, already rendered as compact JSON.
    Json(String),
    /// An `AnyValue` with no value set.
    Empty,
}

impl<'a> Val<'a> {
    /// The value of a prost `AnyValue`.
    pub fn of(v: Option<&'a AnyValue>) -> Val<'a> {
        use any_value::Value as V;
        match v.and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
            Some(V::BoolValue(b)) => Val::Bool(*b),
            Some(V::IntValue(i)) => Val::Int(*i),
            Some(V::DoubleValue(d)) => Val::Double(*d),
            Some(V::BytesValue(b)) => Val::Bytes(Cow::Borrowed(b)),
            Some(other @ (V::ArrayValue(_) | V::KvlistValue(_))) => {
                let mut out = String::new();
                render_json_value(Some(other), &mut out);
                Val::Json(out)
            }
            Some(V::StringValueStrindex(_)) | None => Val::Empty,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::Int(_) => "int",
            Val::Double(_) => "double",
            Val::Bool(_) => "bool",
            Val::Bytes(_) => "bytes",
            Val::Json(_) => "array/kvlist",
            Val::Empty => "empty",
        }
    }

    /// The value as text: strings as is, ints in decimal, doubles in their
    /// shortest round-trip form (`12.5`, `1.0`, `1e300`, `NaN`, `Infinity`),
    /// bools `true`/`false`, bytes in standard padded base64 (as OTLP/JSON writes
    /// them), arrays and kvlists as compact JSON. `None` for an empty value.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::Double(d) => Cow::Owned(double_text(*d)),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Bytes(b) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
            Val::Json(s) => Cow::Borrowed(s.as_str()),
            Val::Empty => return None,
        })
    }
}

pub(crate) fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        serde_json::Number::from_f64(d)
            .map(|n| n.to_string())
            .unwrap_or_else(|| d.to_string())
    }
}

/// Compact JSON of an `AnyValue`: strings, numbers, bools, null; bytes as a
/// base64 string; arrays as arrays; kvlists as objects. Non-finite doubles
/// become the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn render_json_value(v: Option<&any_value::Value>, out: &mut String) {
    use any_value::Value as V;
    match v {
        None | Some(V::StringValueStrindex(_)) => out.push_str("null"),
        Some(V::StringValue(s)) => push_json_string(s, out),
        Some(V::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(V::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(V::DoubleValue(d)) => {
            if d.is_finite() {
                out.push_str(&double_text(*d));
            } else {
                push_json_string(&double_text(*d), out);
            }
        }
        Some(V::BytesValue(b)) => {
            push_json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
        }
        Some(V::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_json_value(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(V::KvlistValue(kvs)) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(&kv.key, out);
                out.push(':');
                render_json_value(kv.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

fn push_json_string(s: &str, out: &mut String) {
    // serde_json's escaping; writing a &str to a String cannot fail.
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Truncates `s` to at most [`MAX_ATTRIBUTE_BYTES`] on a char boundary,
/// reporting it as `Oversized`.
pub(crate) fn capped<'s>(
    s: Cow<'s, str>,
    what: &str,
    rejected: &mut Vec<Rejected>,
) -> Cow<'s, str> {
    capped_to(s, MAX_ATTRIBUTE_BYTES, what, rejected)
}

/// Truncates a name or key to at most [`MAX_NAME_BYTES`], as [`capped`] does.
pub(crate) fn capped_name<'s>(
    s: Cow<'s, str>,
    what: &str,
    rejected: &mut Vec<Rejected>,
) -> Cow<'s, str> {
    capped_to(s, MAX_NAME_BYTES, what, rejected)
}

fn capped_to<'s>(
    s: Cow<'s, str>,
    max: usize,
    what: &str,
    rejected: &mut Vec<Rejected>,
) -> Cow<'s, str> {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    rejected.push(Rejected {
        reason: Reason::Oversized,
        detail: format!(
            "{}: {} bytes truncated to {end}",
            cut_text(what, 64),
            s.len()
        ),
    });
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
        Cow::Owned(mut o) => {
            o.truncate(end);
            Cow::Owned(o)
        }
    }
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

/// What every row of one resource and scope repeats: the promoted `service.*`
/// columns, `scope_name`, and `resource_attributes`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Context {
    service: [Option<String>; 4],
    scope_name: Option<String>,
    resource_attributes: Vec<(String, Option<String>)>,
}

impl Context {
    /// Adds one resource attribute: a `service.*`/`deployment.*` one of the
    /// contract fills its column, every other one goes to `resource_attributes`.
    pub fn resource_attr(&mut self, key: &str, val: &Val<'_>, rejected: &mut Vec<Rejected>) {
        let key = capped_name(Cow::Borrowed(key), "resource attribute key", rejected);
        let key = key.as_ref();
        let text = val.text().map(|t| capped(t, key, rejected).into_owned());
        if let Some(i) = RESOURCE_PROMOTED.iter().position(|(k, _)| *k == key)
            && self.service[i].is_none()
            && text.is_some()
        {
            self.service[i] = text;
            return;
        }
        self.resource_attributes.push((key.to_owned(), text));
    }

    /// The instrumentation scope: its name fills `scope_name`; its version and
    /// attributes are added to `resource_attributes` (version as
    /// `otel.scope.version`; an attribute whose key the resource already has is
    /// dropped: the resource's wins).
    pub fn scope(&mut self, name: &str, version: &str, rejected: &mut Vec<Rejected>) {
        let name = capped_name(Cow::Borrowed(name), "scope name", rejected);
        self.scope_name = (!name.is_empty()).then(|| name.into_owned());
        if !version.is_empty() {
            let version = capped_name(Cow::Borrowed(version), "scope version", rejected);
            self.scope_attr("otel.scope.version", &Val::Str(version), rejected);
        }
    }

    pub fn scope_attr(&mut self, key: &str, val: &Val<'_>, rejected: &mut Vec<Rejected>) {
        let key = capped_name(Cow::Borrowed(key), "scope attribute key", rejected);
        let key = key.as_ref();
        let taken = RESOURCE_PROMOTED
            .iter()
            .position(|(k, _)| *k == key)
            .is_some_and(|i| self.service[i].is_some())
            || self.resource_attributes.iter().any(|(k, _)| k == key);
        if !taken {
            let text = val.text().map(|t| capped(t, key, rejected).into_owned());
            self.resource_attributes.push((key.to_owned(), text));
        }
    }

    /// What each row of this context costs for the columns it repeats: the
    /// service columns, the scope name and a copy of `resource_attributes`.
    pub fn row_cost(&self) -> usize {
        self.repeated_cost() + self.attributes_cost()
    }

    /// The service columns and the scope name, which every row repeats.
    fn repeated_cost(&self) -> usize {
        let service: usize = self.service.iter().flatten().map(String::len).sum();
        service + self.scope_name.as_ref().map_or(0, String::len)
    }

    /// One copy of `resource_attributes`.
    fn attributes_cost(&self) -> usize {
        self.resource_attributes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len) + ENTRY_COST)
            .sum()
    }

    /// The context of a prost resource (its attributes; no scope yet).
    pub fn of_resource(
        resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
        rejected: &mut Vec<Rejected>,
    ) -> Context {
        let mut ctx = Context::default();
        for kv in resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default()
        {
            ctx.resource_attr(&kv.key, &Val::of(kv.value.as_ref()), rejected);
        }
        ctx
    }

    /// This resource's context with a prost scope added.
    pub fn with_scope(
        &self,
        scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
        rejected: &mut Vec<Rejected>,
    ) -> Context {
        let mut ctx = self.clone();
        if let Some(s) = scope {
            ctx.scope(&s.name, &s.version, rejected);
            for kv in &s.attributes {
                ctx.scope_attr(&kv.key, &Val::of(kv.value.as_ref()), rejected);
            }
        }
        ctx
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
