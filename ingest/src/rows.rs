//! What the three signal decoders share: attribute values and how they become
//! text, the columns every table ends with (service, scope, promoted attributes,
//! the two maps), the limits, and the timestamp check.
//!
//! Every decoder (the protobuf wire reader, the prost-struct path, OTLP/JSON)
//! hands each attribute to [`Tail::attr`] as a key and a [`Val`], so the
//! promotion rule and the text rendering are written once.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::error::ArrowError;
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::schema::{Promoted, RESOURCE_PROMOTED};
use crate::wire::{self, Msg, Simple};
use crate::{DecodeError, Reason, Rejected};

/// An attribute value (or a log body) over this many bytes is truncated.
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// A message over this many bytes is refused whole.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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
    if s.len() <= MAX_ATTRIBUTE_BYTES {
        return s;
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    rejected.push(Rejected {
        reason: Reason::Oversized,
        detail: format!("{what}: {} bytes truncated to {end}", s.len()),
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
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        }),
        text_builder(entries, 16),
        text_builder(entries, 16),
        rows,
    )
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
    pub fn scope(&mut self, name: &str, version: &str) {
        self.scope_name = (!name.is_empty()).then(|| name.to_owned());
        if !version.is_empty() {
            self.scope_attr(
                "otel.scope.version",
                &Val::Str(Cow::Borrowed(version)),
                &mut Vec::new(),
            );
        }
    }

    pub fn scope_attr(&mut self, key: &str, val: &Val<'_>, rejected: &mut Vec<Rejected>) {
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
            ctx.scope(&s.name, &s.version);
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
}

impl Tail {
    /// Builders for about `rows` rows.
    pub fn new(promoted: &'static [(&'static str, Promoted)], rows: usize) -> Tail {
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
        }
    }

    /// The resource and scope of the rows that follow.
    pub fn set_context(&mut self, ctx: Context) {
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
        if let Some(i) = self.open_column(key.as_bytes()) {
            let ok = match (&mut self.cols[i], &val) {
                (_, Val::Empty) => false,
                (Col::Text(b), v) => match v.text() {
                    Some(t) => {
                        b.append_value(capped(t, key, rejected));
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
        self.attributes
            .keys()
            .append_value(capped(Cow::Borrowed(key), "attribute key", rejected));
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
        if let Some(i) = self.open_column(key) {
            match (&mut self.cols[i], v) {
                (Col::Text(b), Simple::Str(s)) if s.len() <= MAX_ATTRIBUTE_BYTES => {
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
        if key.len() > MAX_ATTRIBUTE_BYTES || value.len() > MAX_ATTRIBUTE_BYTES {
            return false;
        }
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

    pub fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        for i in 0..RESOURCE_PROMOTED.len() {
            out.push(self.repeated(|c| c.service[i].as_deref()));
        }
        out.push(self.repeated(|c| c.scope_name.as_deref()));
        for (c, nulls) in self.cols.iter_mut().zip(&mut self.nulls) {
            c.append_nulls(std::mem::take(nulls));
            out.push(c.finish());
        }
        out.push(Arc::new(self.attributes.finish()));
        let (rows, entries) = self.contexts.iter().fold((0, 0), |(r, e), (c, n)| {
            (r + n, e + c.resource_attributes.len() * n)
        });
        let mut resource = map_builder(rows, entries);
        for (ctx, rows) in &self.contexts {
            for _ in 0..*rows {
                for (k, v) in &ctx.resource_attributes {
                    resource.keys().append_value(k);
                    resource.values().append_option(v.as_deref());
                }
                resource
                    .append(true)
                    .expect("resource keys and values are appended in pairs");
            }
        }
        out.push(Arc::new(resource.finish()));
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
