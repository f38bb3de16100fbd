//! OTLP/JSON traces and logs read into typed structs, without building a
//! `serde_json::Value` tree of the whole message: strings are borrowed from
//! the input where they have no escapes, and fields no table needs are skipped.
//!
//! Only the well-formed case is read here. Whatever the lenient reader of the
//! parent module would report or refuse (a value of the wrong type, a key in
//! both spellings, a list that is not a list, nesting over the limit) makes
//! [`parse`] return `None`, and the caller reads the message again with the
//! lenient reader, which says what was wrong. Scalars are converted by the same
//! functions as there, so a message both accept gives the same request.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Request, base64_bytes, bool_value, enum_value, f64_value, i64_value, id_bytes, u64_value,
};

/// How deep arrays and kvlists may nest, as in the lenient reader.
const MAX_DEPTH: usize = 64;

#[derive(Deserialize)]
struct Traces<'a> {
    #[serde(borrow, rename = "resourceSpans", alias = "resource_spans")]
    resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Deserialize)]
struct ResourceSpans<'a> {
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(borrow, default, rename = "scopeSpans", alias = "scope_spans")]
    scope_spans: Vec<ScopeSpans<'a>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
struct ScopeSpans<'a> {
    #[serde(borrow)]
    scope: Option<Scope<'a>>,
    #[serde(borrow, default)]
    spans: Vec<Span<'a>>,
}

#[derive(Deserialize)]
struct Scope<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
struct Span<'a> {
    #[serde(borrow, rename = "traceId", alias = "trace_id")]
    trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "spanId", alias = "span_id")]
    span_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "parentSpanId", alias = "parent_span_id")]
    parent_span_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    kind: Option<Value>,
    #[serde(rename = "startTimeUnixNano", alias = "start_time_unix_nano")]
    start: Option<Value>,
    #[serde(rename = "endTimeUnixNano", alias = "end_time_unix_nano")]
    end: Option<Value>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
    #[serde(borrow)]
    status: Option<Status<'a>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(borrow, default)]
    message: Cow<'a, str>,
    code: Option<Value>,
}

#[derive(Deserialize)]
struct Logs<'a> {
    #[serde(borrow, rename = "resourceLogs", alias = "resource_logs")]
    resource_logs: Vec<ResourceLogs<'a>>,
}

#[derive(Deserialize)]
struct ResourceLogs<'a> {
    #[serde(borrow)]
    resource: Option<Resource<'a>>,
    #[serde(borrow, default, rename = "scopeLogs", alias = "scope_logs")]
    scope_logs: Vec<ScopeLogs<'a>>,
}

#[derive(Deserialize)]
struct ScopeLogs<'a> {
    #[serde(borrow)]
    scope: Option<Scope<'a>>,
    #[serde(borrow, default, rename = "logRecords", alias = "log_records")]
    log_records: Vec<LogRecord<'a>>,
}

#[derive(Deserialize)]
struct LogRecord<'a> {
    #[serde(rename = "timeUnixNano", alias = "time_unix_nano")]
    time: Option<Value>,
    #[serde(rename = "observedTimeUnixNano", alias = "observed_time_unix_nano")]
    observed_time: Option<Value>,
    #[serde(rename = "severityNumber", alias = "severity_number")]
    severity_number: Option<Value>,
    #[serde(borrow, default, rename = "severityText", alias = "severity_text")]
    severity_text: Cow<'a, str>,
    #[serde(borrow)]
    body: Option<AnyValue<'a>>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
    #[serde(borrow, rename = "traceId", alias = "trace_id")]
    trace_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "spanId", alias = "span_id")]
    span_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "eventName", alias = "event_name")]
    event_name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow, default)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Option<AnyValue<'a>>,
}

#[derive(Deserialize)]
struct AnyValue<'a> {
    #[serde(borrow, rename = "stringValue", alias = "string_value")]
    string: Option<Cow<'a, str>>,
    #[serde(rename = "boolValue", alias = "bool_value")]
    boolean: Option<Value>,
    #[serde(rename = "intValue", alias = "int_value")]
    int: Option<Value>,
    #[serde(rename = "doubleValue", alias = "double_value")]
    double: Option<Value>,
    #[serde(borrow, rename = "arrayValue", alias = "array_value")]
    array: Option<Values<AnyValue<'a>>>,
    #[serde(borrow, rename = "kvlistValue", alias = "kvlist_value")]
    kvlist: Option<Values<KeyValue<'a>>>,
    #[serde(borrow, rename = "bytesValue", alias = "bytes_value")]
    bytes: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Values<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
}

/// The request, when `bytes` is a well-formed OTLP/JSON traces or logs
/// message whose first key is `resourceSpans` or `resourceLogs`; else `None`
/// (read it leniently).
pub(crate) fn parse(bytes: &[u8]) -> Option<Request> {
    match first_key(bytes)? {
        b"resourceSpans" | b"resource_spans" => traces(bytes).map(Request::Traces),
        b"resourceLogs" | b"resource_logs" => logs(bytes).map(Request::Logs),
        _ => None,
    }
}

/// The object's first key, as the Collector writes it (no escapes); other
/// messages go straight to the lenient reader.
fn first_key(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.trim_ascii_start().strip_prefix(b"{")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    Some(&rest[..end])
}

fn traces(bytes: &[u8]) -> Option<ExportTraceServiceRequest> {
    let traces: Traces<'_> = serde_json::from_slice(bytes).ok()?;
    let resource_spans = traces
        .resource_spans
        .into_iter()
        .map(|rs| {
            Some(trace::ResourceSpans {
                resource: resource(rs.resource)?,
                scope_spans: rs
                    .scope_spans
                    .into_iter()
                    .map(scope_spans)
                    .collect::<Option<_>>()?,
                ..Default::default()
            })
        })
        .collect::<Option<_>>()?;
    Some(ExportTraceServiceRequest { resource_spans })
}

fn logs(bytes: &[u8]) -> Option<ExportLogsServiceRequest> {
    let logs: Logs<'_> = serde_json::from_slice(bytes).ok()?;
    let resource_logs = logs
        .resource_logs
        .into_iter()
        .map(|rl| {
            Some(logs::ResourceLogs {
                resource: resource(rl.resource)?,
                scope_logs: rl
                    .scope_logs
                    .into_iter()
                    .map(|sl| {
                        Some(logs::ScopeLogs {
                            scope: scope(sl.scope)?,
                            log_records: sl
                                .log_records
                                .into_iter()
                                .map(log_record)
                                .collect::<Option<_>>()?,
                            ..Default::default()
                        })
                    })
                    .collect::<Option<_>>()?,
                ..Default::default()
            })
        })
        .collect::<Option<_>>()?;
    Some(ExportLogsServiceRequest { resource_logs })
}

/// `Some(None)` for no resource; `None` when its attributes are irregular.
fn resource(r: Option<Resource<'_>>) -> Option<Option<resource::Resource>> {
    match r {
        Some(r) => Some(Some(resource::Resource {
            attributes: attributes(r.attributes, 0)?,
            ..Default::default()
        })),
        None => Some(None),
    }
}

/// `Some(None)` for no scope; `None` when its attributes are irregular.
fn scope(s: Option<Scope<'_>>) -> Option<Option<common::InstrumentationScope>> {
    match s {
        Some(s) => Some(Some(common::InstrumentationScope {
            name: s.name.into_owned(),
            version: s.version.into_owned(),
            attributes: attributes(s.attributes, 0)?,
            ..Default::default()
        })),
        None => Some(None),
    }
}

/// A trace or span id; empty when absent.
fn id(v: Option<Cow<'_, str>>) -> Option<Vec<u8>> {
    v.map_or(Some(Vec::new()), |s| id_bytes(&s))
}

/// A `uint64` time; 0 when absent.
fn time(v: Option<Value>) -> Option<u64> {
    v.map_or(Some(0), |v| u64_value(&v))
}

fn log_record(r: LogRecord<'_>) -> Option<logs::LogRecord> {
    Some(logs::LogRecord {
        time_unix_nano: time(r.time)?,
        observed_time_unix_nano: time(r.observed_time)?,
        severity_number: r.severity_number.map_or(Some(0), |v| {
            enum_value(&v, "SEVERITY_NUMBER_", |n| {
                logs::SeverityNumber::from_str_name(n).map(|s| s as i32)
            })
        })?,
        severity_text: r.severity_text.into_owned(),
        body: match r.body {
            Some(v) => Some(any_value(v, 0)?),
            None => None,
        },
        attributes: attributes(r.attributes, 0)?,
        trace_id: id(r.trace_id)?,
        span_id: id(r.span_id)?,
        event_name: r.event_name.into_owned(),
        ..Default::default()
    })
}

fn scope_spans(ss: ScopeSpans<'_>) -> Option<trace::ScopeSpans> {
    Some(trace::ScopeSpans {
        scope: scope(ss.scope)?,
        spans: ss.spans.into_iter().map(span).collect::<Option<_>>()?,
        ..Default::default()
    })
}

fn span(s: Span<'_>) -> Option<trace::Span> {
    let status = match s.status {
        Some(st) => Some(trace::Status {
            message: st.message.into_owned(),
            code: st.code.map_or(Some(0), |v| {
                enum_value(&v, "STATUS_CODE_", |n| {
                    trace::status::StatusCode::from_str_name(n).map(|c| c as i32)
                })
            })?,
        }),
        None => None,
    };
    Some(trace::Span {
        trace_id: id(s.trace_id)?,
        span_id: id(s.span_id)?,
        parent_span_id: id(s.parent_span_id)?,
        name: s.name.into_owned(),
        kind: s.kind.map_or(Some(0), |v| {
            enum_value(&v, "SPAN_KIND_", |n| {
                trace::span::SpanKind::from_str_name(n).map(|k| k as i32)
            })
        })?,
        start_time_unix_nano: time(s.start)?,
        end_time_unix_nano: time(s.end)?,
        attributes: attributes(s.attributes, 0)?,
        status,
        ..Default::default()
    })
}

fn attributes(kvs: Vec<KeyValue<'_>>, depth: usize) -> Option<Vec<common::KeyValue>> {
    kvs.into_iter().map(|kv| key_value(kv, depth)).collect()
}

fn key_value(kv: KeyValue<'_>, depth: usize) -> Option<common::KeyValue> {
    Some(common::KeyValue {
        key: kv.key.into_owned(),
        value: match kv.value {
            Some(v) => Some(any_value(v, depth)?),
            None => None,
        },
        ..Default::default()
    })
}

/// The first of the value's fields that is set, in the lenient reader's order.
fn any_value(v: AnyValue<'_>, depth: usize) -> Option<common::AnyValue> {
    use common::any_value::Value as V;
    if depth > MAX_DEPTH {
        return None;
    }
    let value = if let Some(s) = v.string {
        Some(V::StringValue(s.into_owned()))
    } else if let Some(b) = v.boolean {
        Some(V::BoolValue(bool_value(&b)?))
    } else if let Some(i) = v.int {
        Some(V::IntValue(i64_value(&i)?))
    } else if let Some(d) = v.double {
        Some(V::DoubleValue(f64_value(&d)?))
    } else if let Some(a) = v.array {
        let values = a
            .values
            .into_iter()
            .map(|item| any_value(item, depth + 1))
            .collect::<Option<_>>()?;
        Some(V::ArrayValue(common::ArrayValue { values }))
    } else if let Some(kvs) = v.kvlist {
        let values = attributes(kvs.values, depth + 1)?;
        Some(V::KvlistValue(common::KeyValueList { values }))
    } else if let Some(b) = v.bytes {
        Some(V::BytesValue(base64_bytes(&b)?))
    } else {
        None
    };
    Some(common::AnyValue { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as text (NaN is not equal to itself, its text is).
    fn text(r: Request) -> String {
        match r {
            Request::Traces(t) => format!("{t:?}"),
            Request::Logs(l) => format!("{l:?}"),
            Request::Metrics(m) => format!("{m:?}"),
        }
    }

    fn typed(bytes: &[u8]) -> Option<String> {
        parse(bytes).map(text)
    }

    /// What the lenient reader reads, when it has nothing to report.
    fn lenient(bytes: &[u8]) -> Option<String> {
        match super::super::parse(bytes, None) {
            Ok((r, rejected)) if rejected.is_empty() => Some(text(r)),
            _ => None,
        }
    }

    #[test]
    fn the_corpus_reads_as_the_lenient_reader_reads_it() {
        for name in ["spans.json", "logs.json"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/corpus")
                .join(name);
            let bytes = std::fs::read(path).expect("corpus");
            let typed = typed(&bytes).expect("well-formed");
            assert_eq!(Some(typed), lenient(&bytes), "{name}");
        }
    }

    #[test]
    fn anything_irregular_is_left_to_the_lenient_reader() {
        for doc in [
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":7}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not an id!"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NONE_SUCH"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","name":"b"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"00","span_id":"01"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":null}]}"#,
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"intValue":true}}]}}]}"#,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"LOUD"}]}]}]}"#,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":"not an AnyValue"}]}]}]}"#,
            r#"{"resourceMetrics":[]}"#,
            r#"{"resourceSpans":[]} trailing"#,
        ] {
            assert!(parse(doc.as_bytes()).is_none(), "{doc}");
        }
    }

    #[test]
    fn spellings_and_forms_the_lenient_reader_accepts() {
        let doc = r#"{"resource_spans":[{"resource":{"attributes":[
            {"key":"i","value":{"intValue":"7"}},{"key":"j","value":{"int_value":8}},
            {"key":"d","value":{"doubleValue":"NaN"}},{"key":"b","value":{"boolValue":"true"}},
            {"key":"x","value":{"bytesValue":"AQI="}},{"key":"n","value":null},
            {"key":"a","value":{"arrayValue":{"values":[{"stringValue":"s"},{"kvlistValue":{"values":[{"key":"q","value":{"doubleValue":1}}]}}]}}}]},
          "scope_spans":[{"scope":{"name":"s","version":"1"},"spans":[
            {"trace_id":"5B8EFFF798038103D269B633813FC60C","span_id":"7uGbfsPBsXQ=","name":"x\u00e9",
             "kind":"SERVER","start_time_unix_nano":1767225600000000000,"endTimeUnixNano":"1767225600000000001",
             "status":{"code":"STATUS_CODE_ERROR","message":"m"}}]}]}]}"#;
        let logs = r#"{"resourceLogs":[{"scope_logs":[{"log_records":[
            {"time_unix_nano":"1767225600000000000","severityNumber":"SEVERITY_NUMBER_WARN",
             "severity_text":"WARN","body":{"kvlistValue":{"values":[]}},"event_name":"e",
             "traceId":"5b8efff798038103d269b633813fc60c"},
            {"severityNumber":"INFO","body":{"stringValue":"b"},"attributes":[{"key":"event.name","value":{"stringValue":"old"}}]}]}]}]}"#;
        for doc in [doc, logs] {
            let typed = typed(doc.as_bytes()).expect("well-formed");
            assert_eq!(Some(typed), lenient(doc.as_bytes()), "{doc}");
        }
    }

    /// JSON pieces for every field, of every type: right, wrong, odd.
    const PIECES: &[&str] = &[
        r#""5B8EFFF798038103D269B633813FC60C""#,
        r#""7uGbfsPBsXQ=""#,
        r#""zz""#,
        r#""""#,
        "7",
        "-3",
        "1.5",
        "2.0",
        "1e30",
        "1767225600000000000",
        r#""12""#,
        r#"" 12 ""#,
        r#""SERVER""#,
        r#""SPAN_KIND_CLIENT""#,
        r#""STATUS_CODE_ERROR""#,
        r#""SEVERITY_NUMBER_ERROR""#,
        r#""WARN""#,
        "true",
        r#""true""#,
        "null",
        "{}",
        "[]",
        r#"{"code":2,"message":"m"}"#,
        r#"{"code":"OK"}"#,
        r#"{"stringValue":"s","intValue":"x"}"#,
        r#"{"intValue":"-12"}"#,
        r#"[{"key":"k","value":{"intValue":"5"}}]"#,
        r#"[{"key":"k","value":{"doubleValue":"Infinity","stringValue":"s"}}]"#,
        r#"[{"key":"k","value":{"boolValue":"yes"}},{"key":7}]"#,
        r#"[{"key":"k","value":{"bytesValue":"AQI="}},{"key":"n","value":{"kvlistValue":{"values":[{"key":"a","value":{"arrayValue":{}}}]}}}]"#,
    ];

    /// Each signal: the message around one record, and the record's fields.
    const SIGNALS: &[(&str, &[&str])] = &[
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{RECORD}]}]}]}"#,
            &[
                "traceId",
                "trace_id",
                "spanId",
                "parentSpanId",
                "name",
                "kind",
                "startTimeUnixNano",
                "end_time_unix_nano",
                "status",
                "attributes",
            ],
        ),
        (
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{RECORD}]}]}]}"#,
            &[
                "timeUnixNano",
                "observed_time_unix_nano",
                "severityNumber",
                "severityText",
                "body",
                "attributes",
                "traceId",
                "span_id",
                "eventName",
                "event_name",
            ],
        ),
    ];

    proptest::proptest! {
        /// Whatever the typed reader accepts, the lenient reader reads the same
        /// way, with nothing to report.
        #[test]
        fn what_the_typed_reader_accepts_the_lenient_one_reads_alike(
            signal in 0..SIGNALS.len(),
            picks in proptest::collection::vec((0..10usize, 0..PIECES.len()), 0..8)
        ) {
            let (template, fields) = SIGNALS[signal];
            let record: Vec<String> = picks
                .iter()
                .map(|&(f, p)| format!("\"{}\":{}", fields[f % fields.len()], PIECES[p]))
                .collect();
            let doc = template.replace("RECORD", &record.join(","));
            if let Some(typed) = typed(doc.as_bytes()) {
                proptest::prop_assert_eq!(Some(typed), lenient(doc.as_bytes()), "{}", doc);
            }
        }
    }
}
