//! A protobuf wire-format reader over `&[u8]`: varints, fixed 32/64-bit values
//! and length-delimited fields, with nothing allocated. The signal decoders walk
//! OTLP messages with it and append straight into Arrow builders, skipping the
//! fields no table needs. Errors carry the byte offset in the whole message.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};

use super::values::{Budget, Context, RECORD_COST, Val};
use crate::{DecodeError, Reason, Rejected};

/// Nesting deeper than this (arrays in arrays...) is refused, as prost does.
const MAX_DEPTH: usize = 64;

/// A length-delimited field's bytes and where they start in the whole message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub bytes: &'a [u8],
    pub base: usize,
}

impl<'a> Msg<'a> {
    pub fn new(bytes: &'a [u8]) -> Msg<'a> {
        Msg { bytes, base: 0 }
    }

    pub fn fields(self) -> Fields<'a> {
        Fields { msg: self, pos: 0 }
    }
}

/// One field's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    I64(u64),
    Len(Msg<'a>),
    I32,
}

/// One field: its number, value and offset (of the tag) in the whole message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub num: u32,
    pub value: Value<'a>,
    pub at: usize,
}

#[cold]
fn corrupt(at: usize, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::new(Reason::CorruptProtobuf, format!("{what} at byte {at}"))
}

impl<'a> Field<'a> {
    #[cold]
    fn wrong(&self, want: &str) -> DecodeError {
        corrupt(self.at, format_args!("field {} is not {want}", self.num))
    }

    #[inline]
    pub fn msg(&self) -> Result<Msg<'a>, DecodeError> {
        match self.value {
            Value::Len(m) => Ok(m),
            _ => Err(self.wrong("length-delimited")),
        }
    }

    #[inline]
    pub fn bytes(&self) -> Result<&'a [u8], DecodeError> {
        self.msg().map(|m| m.bytes)
    }

    #[inline]
    pub fn varint(&self) -> Result<u64, DecodeError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong("a varint")),
        }
    }

    /// An `int32` or enum: the varint truncated, as protobuf does.
    #[inline]
    pub fn int32(&self) -> Result<i32, DecodeError> {
        self.varint().map(|v| v as i32)
    }

    pub fn sint32(&self) -> Result<i32, DecodeError> {
        let n = self.varint()? as u32;
        Ok(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    pub fn bool(&self) -> Result<bool, DecodeError> {
        self.varint().map(|v| v != 0)
    }

    #[inline]
    pub fn fixed64(&self) -> Result<u64, DecodeError> {
        match self.value {
            Value::I64(v) => Ok(v),
            _ => Err(self.wrong("64-bit")),
        }
    }

    #[inline]
    pub fn double(&self) -> Result<f64, DecodeError> {
        self.fixed64().map(f64::from_bits)
    }

    /// A repeated `fixed64`/`double`, packed or not: appended to `out`.
    pub fn repeated_fixed64(&self, out: &mut Vec<u64>) -> Result<(), DecodeError> {
        match self.value {
            Value::I64(v) => out.push(v),
            Value::Len(m) => {
                if !m.bytes.len().is_multiple_of(8) {
                    return Err(corrupt(
                        m.base,
                        "packed 64-bit values of a length not a multiple of 8",
                    ));
                }
                out.extend(
                    m.bytes.chunks_exact(8).map(|c| {
                        u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                    }),
                );
            }
            _ => return Err(self.wrong("64-bit")),
        }
        Ok(())
    }

    /// A repeated `uint64`, packed or not: appended to `out`.
    pub fn repeated_varint(&self, out: &mut Vec<u64>) -> Result<(), DecodeError> {
        match self.value {
            Value::Varint(v) => out.push(v),
            Value::Len(m) => {
                let mut pos = 0;
                while pos < m.bytes.len() {
                    out.push(read_varint(m.bytes, &mut pos, m.base)?);
                }
            }
            _ => return Err(self.wrong("a varint")),
        }
        Ok(())
    }
}

#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, DecodeError> {
    // Tags and lengths of OTLP are nearly always one byte.
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    read_varint_slow(buf, pos, base)
}

#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, DecodeError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(corrupt(base + start, "truncated varint"));
        };
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(corrupt(base + start, "varint over 64 bits"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(corrupt(base + start, "varint over 10 bytes"))
}

/// The fields of one message, in wire order.
pub(crate) struct Fields<'a> {
    msg: Msg<'a>,
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.msg.bytes.len() {
            return None;
        }
        let r = self.read();
        if r.is_err() {
            // stop after the first error
            self.pos = self.msg.bytes.len();
        }
        Some(r)
    }
}

impl<'a> Fields<'a> {
    #[inline(always)]
    fn read(&mut self) -> Result<Field<'a>, DecodeError> {
        let buf = self.msg.bytes;
        let base = self.msg.base;
        let at = base + self.pos;
        let tag = read_varint(buf, &mut self.pos, base)?;
        let num = u32::try_from(tag >> 3).map_err(|_| corrupt(at, "field number over 32 bits"))?;
        if num == 0 {
            return Err(corrupt(at, "field number 0"));
        }
        let value = match tag & 7 {
            0 => Value::Varint(read_varint(buf, &mut self.pos, base)?),
            1 => {
                let b = buf
                    .get(self.pos..self.pos + 8)
                    .ok_or_else(|| corrupt(at, "truncated 64-bit field"))?;
                self.pos += 8;
                Value::I64(u64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            2 => {
                let len = read_varint(buf, &mut self.pos, base)?;
                let start = self.pos;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| start.checked_add(l))
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(|| {
                        corrupt(
                            at,
                            format_args!(
                                "field {num} of {len} bytes runs past the end of its message"
                            ),
                        )
                    })?;
                self.pos = end;
                Value::Len(Msg {
                    bytes: &buf[start..end],
                    base: base + start,
                })
            }
            5 => {
                if buf.len() < self.pos + 4 {
                    return Err(corrupt(at, "truncated 32-bit field"));
                }
                self.pos += 4;
                Value::I32
            }
            w => {
                return Err(corrupt(
                    at,
                    format_args!("wire type {w} (groups are not OTLP)"),
                ));
            }
        };
        Ok(Field { num, value, at })
    }
}

/// Text of a string field: borrowed when it is UTF-8; else replaced lossily and
/// reported `InvalidUtf8` (the row is kept).
#[inline]
pub(crate) fn text<'a>(bytes: &'a [u8], what: &str, rejected: &mut Vec<Rejected>) -> Cow<'a, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            rejected.push(Rejected {
                reason: Reason::InvalidUtf8,
                detail: format!("{what}: not UTF-8, replaced with U+FFFD"),
            });
            String::from_utf8_lossy(bytes)
        }
    }
}

/// A `KeyValue` message: its key and value.
#[inline]
pub(crate) fn key_value<'a>(
    msg: Msg<'a>,
    rejected: &mut Vec<Rejected>,
) -> Result<(Cow<'a, str>, Val<'a>), DecodeError> {
    let (key, value) = key_value_parts(msg)?;
    key_value_of(key, value, rejected)
}

/// The key (as text) and value of a `KeyValue` split by [`key_value_parts`].
pub(crate) fn key_value_of<'a>(
    key: &'a [u8],
    value: Option<Msg<'a>>,
    rejected: &mut Vec<Rejected>,
) -> Result<(Cow<'a, str>, Val<'a>), DecodeError> {
    let key = text(key, "attribute key", rejected);
    let val = match value {
        Some(m) => any_value(m, &key, rejected)?,
        None => Val::Empty,
    };
    Ok((key, val))
}

/// A `KeyValue` message's key bytes and `AnyValue` message (the last of each).
/// The usual encoding, the key then the value, is read without a loop.
#[inline(always)]
pub(crate) fn key_value_parts(msg: Msg<'_>) -> Result<(&[u8], Option<Msg<'_>>), DecodeError> {
    if let [0x0a, key_len, rest @ ..] = msg.bytes
        && *key_len < 0x80
        && let Some((key, [0x12, value_len, value @ ..])) =
            rest.split_at_checked(usize::from(*key_len))
        && *value_len < 0x80
        && usize::from(*value_len) == value.len()
    {
        let value = Msg {
            bytes: value,
            base: msg.base + 4 + key.len(),
        };
        return Ok((key, Some(value)));
    }
    let mut key: &[u8] = &[];
    let mut value = None;
    for f in msg.fields() {
        let f = f?;
        match f.num {
            1 => key = f.bytes()?,
            2 => value = Some(f.msg()?),
            _ => {}
        }
    }
    Ok((key, value))
}

/// An attribute value of the two common kinds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Simple<'a> {
    /// a string that is UTF-8
    Str(&'a str),
    Int(i64),
}

/// An `AnyValue` message that holds just a UTF-8 string or just an integer;
/// `None` for anything else (left to [`any_value`]).
#[inline(always)]
pub(crate) fn simple_value(msg: Msg<'_>) -> Option<Simple<'_>> {
    let (&tag, rest) = msg.bytes.split_first()?;
    let mut pos = 0;
    let n = read_varint(rest, &mut pos, 0).ok()?;
    match tag {
        0x0a => {
            let s = rest.get(pos..).filter(|s| s.len() as u64 == n)?;
            std::str::from_utf8(s).ok().map(Simple::Str)
        }
        0x18 if pos == rest.len() => Some(Simple::Int(n as i64)),
        _ => None,
    }
}

/// An `AnyValue` message. Arrays and kvlists are rendered as compact JSON.
#[inline]
pub(crate) fn any_value<'a>(
    msg: Msg<'a>,
    key: &str,
    rejected: &mut Vec<Rejected>,
) -> Result<Val<'a>, DecodeError> {
    let mut val = Val::Empty;
    for f in msg.fields() {
        let f = f?;
        val = match f.num {
            1 => Val::Str(text(f.bytes()?, key, rejected)),
            2 => Val::Bool(f.bool()?),
            3 => Val::Int(f.varint()? as i64),
            4 => Val::Double(f.double()?),
            5 | 6 => {
                let nested = nested_any(&f, key, rejected, 0)?;
                let mut out = String::new();
                super::values::render_json_value(nested.value.as_ref(), &mut out);
                Val::Json(out)
            }
            7 => Val::Bytes(Cow::Borrowed(f.bytes()?)),
            8 => {
                f.int32()?;
                Val::Empty
            }
            _ => continue,
        };
    }
    Ok(val)
}

/// An `AnyValue` field (array or kvlist, numbers 5 and 6, or a scalar) as a
/// prost value, strings replaced lossily.
fn nested_any(
    f: &Field<'_>,
    key: &str,
    rejected: &mut Vec<Rejected>,
    depth: usize,
) -> Result<AnyValue, DecodeError> {
    use any_value::Value as V;
    if depth > MAX_DEPTH {
        return Err(corrupt(f.at, "values nested too deep"));
    }
    let value = match f.num {
        1 => V::StringValue(text(f.bytes()?, key, rejected).into_owned()),
        2 => V::BoolValue(f.bool()?),
        3 => V::IntValue(f.varint()? as i64),
        4 => V::DoubleValue(f.double()?),
        5 => {
            let mut values = Vec::new();
            for item in f.msg()?.fields() {
                let item = item?;
                if item.num == 1 {
                    values.push(any_message(item.msg()?, key, rejected, depth + 1)?);
                }
            }
            V::ArrayValue(ArrayValue { values })
        }
        6 => {
            let mut values = Vec::new();
            for item in f.msg()?.fields() {
                let item = item?;
                if item.num == 1 {
                    let mut kv = KeyValue::default();
                    for g in item.msg()?.fields() {
                        let g = g?;
                        match g.num {
                            1 => kv.key = text(g.bytes()?, key, rejected).into_owned(),
                            2 => kv.value = Some(any_message(g.msg()?, key, rejected, depth + 1)?),
                            _ => {}
                        }
                    }
                    values.push(kv);
                }
            }
            V::KvlistValue(KeyValueList { values })
        }
        7 => V::BytesValue(f.bytes()?.to_vec()),
        _ => return Ok(AnyValue { value: None }),
    };
    Ok(AnyValue { value: Some(value) })
}

fn any_message(
    msg: Msg<'_>,
    key: &str,
    rejected: &mut Vec<Rejected>,
    depth: usize,
) -> Result<AnyValue, DecodeError> {
    let mut out = AnyValue { value: None };
    for f in msg.fields() {
        let f = f?;
        if (1..=7).contains(&f.num) {
            out = nested_any(&f, key, rejected, depth)?;
        } else if f.num == 8 {
            f.int32()?;
            out = AnyValue { value: None };
        }
    }
    Ok(out)
}

/// The records of one `Export{Trace,Logs,Metrics}ServiceRequest` (spans, log
/// records or metrics), in message order, in runs that share a resource and
/// scope: the walk the three signal decoders share. Each resource is read once,
/// however many scopes it has.
pub(crate) struct Records<'a> {
    /// each run's context and its number of records
    runs: Vec<(Context, usize)>,
    items: Vec<Msg<'a>>,
    /// the length of the whole message
    message_len: usize,
}

/// The fewest bytes a record is assumed to take when builders are presized
/// (a message of many tiny records gets builders that grow as rows come,
/// not room for rows it may never fill).
const PRESIZE_BYTES_PER_RECORD: usize = 64;

impl<'a> Records<'a> {
    /// Splits a request down to its records; what the resources and scopes
    /// carry is read into their contexts. Each run is charged to `budget`
    /// ([`Budget::charge_run`]) as it is found, so a request whose records
    /// alone are over budget is refused before any row is made.
    pub fn read(
        bytes: &'a [u8],
        rejected: &mut Vec<Rejected>,
        budget: &mut Budget,
    ) -> Result<Records<'a>, DecodeError> {
        let mut runs = Vec::new();
        let mut items = Vec::new();
        let mut scopes = Vec::new();
        for f in Msg::new(bytes).fields() {
            let f = f?;
            if f.num != 1 {
                continue;
            }
            scopes.clear();
            let mut resource_ctx = Context::default();
            if let Some(r) = split(f.msg()?, &mut scopes, budget)? {
                resource(r, &mut resource_ctx, rejected)?;
            }
            for &s in &scopes {
                let before = items.len();
                let scope_msg = split(s, &mut items, budget)?;
                let mut ctx = resource_ctx.clone();
                if let Some(m) = scope_msg {
                    scope(m, &mut ctx, rejected)?;
                }
                budget.charge_run(&ctx, items.len() - before)?;
                runs.push((ctx, items.len() - before));
            }
        }
        Ok(Records {
            runs,
            items,
            message_len: bytes.len(),
        })
    }

    /// How many rows to presize the builders for: the number of records, as
    /// long as the message is long enough to hold that many real ones.
    pub fn rows_hint(&self) -> usize {
        self.items
            .len()
            .min(self.message_len / PRESIZE_BYTES_PER_RECORD)
    }

    /// Calls `f` with each run's context and records, in message order.
    pub fn each_run(
        self,
        mut f: impl FnMut(Context, &[Msg<'a>]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut rest = self.items.as_slice();
        for (ctx, n) in self.runs {
            let (run, after) = rest.split_at(n);
            f(ctx, run)?;
            rest = after;
        }
        Ok(())
    }
}

/// The resource's attributes (field 1 of `Resource`) into a context.
fn resource(
    msg: Msg<'_>,
    ctx: &mut Context,
    rejected: &mut Vec<Rejected>,
) -> Result<(), DecodeError> {
    for f in msg.fields() {
        let f = f?;
        if f.num == 1 {
            let (k, v) = key_value(f.msg()?, rejected)?;
            ctx.resource_attr(&k, &v, rejected);
        }
    }
    Ok(())
}

/// An `InstrumentationScope` (name 1, version 2, attributes 3) into a context.
fn scope(msg: Msg<'_>, ctx: &mut Context, rejected: &mut Vec<Rejected>) -> Result<(), DecodeError> {
    let mut name = Cow::Borrowed("");
    let mut version = Cow::Borrowed("");
    let mut attrs = Vec::new();
    for f in msg.fields() {
        let f = f?;
        match f.num {
            1 => name = text(f.bytes()?, "scope name", rejected),
            2 => version = text(f.bytes()?, "scope version", rejected),
            3 => attrs.push(f.msg()?),
            _ => {}
        }
    }
    ctx.scope(&name, &version, rejected);
    for m in attrs {
        let (k, v) = key_value(m, rejected)?;
        ctx.scope_attr(&k, &v, rejected);
    }
    Ok(())
}

/// The children of a `Resource{Spans,Logs,Metrics}` or `Scope*` message: the
/// context message (field 1, last one wins) and the list items (field 2),
/// each item charged [`RECORD_COST`] as it is found.
fn split<'a>(
    msg: Msg<'a>,
    items: &mut Vec<Msg<'a>>,
    budget: &mut Budget,
) -> Result<Option<Msg<'a>>, DecodeError> {
    let mut head = None;
    for f in msg.fields() {
        let f = f?;
        match f.num {
            1 => head = Some(f.msg()?),
            2 => {
                budget.spend(RECORD_COST)?;
                items.push(f.msg()?)
            }
            _ => {}
        }
    }
    Ok(head)
}
