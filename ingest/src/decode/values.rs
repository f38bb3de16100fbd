//! What the decoders share below the Arrow columns: attribute values
//! ([`Val`]) and how they become text, what every row of one resource and
//! scope repeats ([`Context`]), the limits and what a message may cost
//! ([`Budget`]), and the timestamp check. The protobuf wire reader and the row
//! builders (`rows`) both build on it; it uses neither.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

use crate::schema::RESOURCE_PROMOTED;
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
pub(super) const ENTRY_COST: usize = 16;

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
    pub(super) per_row_resource: bool,
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
    pub(super) fn row_cost(&self, ctx: &Context) -> usize {
        if self.per_row_resource {
            ctx.row_cost()
        } else {
            ctx.repeated_cost()
        }
    }

    /// `Err` when `batch`, as built, takes more memory than the budget allows:
    /// the last check, on what was really allocated.
    pub(super) fn check_built(&self, batch: &RecordBatch) -> Result<(), DecodeError> {
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

    pub(super) fn type_name(&self) -> &'static str {
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

/// What every row of one resource and scope repeats: the promoted `service.*`
/// columns, `scope_name`, and `resource_attributes`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Context {
    pub(super) service: [Option<String>; 4],
    pub(super) scope_name: Option<String>,
    pub(super) resource_attributes: Vec<(String, Option<String>)>,
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
