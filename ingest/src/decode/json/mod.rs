//! OTLP/JSON into the prost request structs, leniently, as the Collector's
//! `otlpjsonfile` receiver reads it:
//! - keys in lowerCamelCase (`timeUnixNano`) or the proto field name
//!   (`time_unix_nano`);
//! - trace and span ids as hex (any case); base64 (protobuf's canonical JSON
//!   for bytes) is accepted when the text is not hex;
//! - 64-bit integers as JSON strings or numbers;
//! - enums as numbers (`"kind": 2`) or names (`"SPAN_KIND_SERVER"`, or
//!   `"SERVER"`);
//! - `bytesValue` in base64.
//!
//! Structural errors (a list that is not a list, a record that is not an
//! object) refuse the message (`BadJson`); a scalar of the wrong type is
//! reported `WrongType` and read as its default (a bad timestamp therefore also
//! skips its row as an absurd timestamp).

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point, metric, number_data_point,
    summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use serde_json::{Map, Value};

use crate::{DecodeError, Reason, Rejected, Table};

pub(crate) mod typed;

/// A parsed OTLP/JSON message.
pub enum Request {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

type Obj = Map<String, Value>;

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(Reason::BadJson, detail)
}

/// Parses one OTLP/JSON object. `hint` is the table to assume when the object
/// has none of the top-level keys (an empty export, `{}`).
pub fn parse(bytes: &[u8], hint: Option<Table>) -> Result<(Request, Vec<Rejected>), DecodeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("line {} column {}: {e}", e.line(), e.column())))?;
    let Value::Object(top) = value else {
        return Err(bad("an OTLP/JSON message is an object"));
    };
    let mut p = Parser::default();
    let table = if get(&top, "resourceSpans", "resource_spans").is_some() {
        Table::Spans
    } else if get(&top, "resourceLogs", "resource_logs").is_some() {
        Table::Logs
    } else if get(&top, "resourceMetrics", "resource_metrics").is_some() {
        Table::Metrics
    } else {
        hint.ok_or_else(|| bad("no resourceSpans, resourceLogs or resourceMetrics key"))?
    };
    let req = match table {
        Table::Spans => Request::Traces(ExportTraceServiceRequest {
            resource_spans: p.list(
                &top,
                "resourceSpans",
                "resource_spans",
                Parser::resource_spans,
            )?,
        }),
        Table::Logs => Request::Logs(ExportLogsServiceRequest {
            resource_logs: p.list(&top, "resourceLogs", "resource_logs", Parser::resource_logs)?,
        }),
        Table::Metrics => Request::Metrics(ExportMetricsServiceRequest {
            resource_metrics: p.list(
                &top,
                "resourceMetrics",
                "resource_metrics",
                Parser::resource_metrics,
            )?,
        }),
    };
    Ok((req, p.rejected))
}

fn get<'v>(o: &'v Obj, camel: &str, snake: &str) -> Option<&'v Value> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

#[derive(Default)]
struct Parser {
    rejected: Vec<Rejected>,
}

impl Parser {
    fn wrong(&mut self, field: &str, v: &Value) {
        let mut text = v.to_string();
        if text.len() > 64 {
            let mut end = 64;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        self.rejected.push(Rejected {
            reason: Reason::WrongType,
            detail: format!("{field}: unexpected value {text}"),
        });
    }

    fn list<T>(
        &mut self,
        o: &Obj,
        camel: &str,
        snake: &str,
        mut item: impl FnMut(&mut Self, &Obj) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        match get(o, camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Object(o) => item(self, o),
                    _ => Err(bad(format!("an item of {camel} is not an object"))),
                })
                .collect(),
            Some(_) => Err(bad(format!("{camel} is not an array"))),
        }
    }

    fn object<'v>(
        &mut self,
        o: &'v Obj,
        camel: &str,
        snake: &str,
    ) -> Result<Option<&'v Obj>, DecodeError> {
        match get(o, camel, snake) {
            None => Ok(None),
            Some(Value::Object(inner)) => Ok(Some(inner)),
            Some(_) => Err(bad(format!("{camel} is not an object"))),
        }
    }

    fn string(&mut self, o: &Obj, camel: &str, snake: &str) -> String {
        match get(o, camel, snake) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                self.wrong(camel, v);
                String::new()
            }
        }
    }

    fn u64(&mut self, o: &Obj, camel: &str, snake: &str) -> u64 {
        match get(o, camel, snake) {
            None => 0,
            Some(v) => self.u64_of(camel, v),
        }
    }

    fn u64_of(&mut self, field: &str, v: &Value) -> u64 {
        self.or_wrong(field, v, u64_value(v))
    }

    fn i64_of(&mut self, field: &str, v: &Value) -> i64 {
        self.or_wrong(field, v, i64_value(v))
    }

    fn f64_of(&mut self, field: &str, v: &Value) -> f64 {
        self.or_wrong(field, v, f64_value(v))
    }

    /// `value`, or else the type's default with `v` reported `WrongType`.
    fn or_wrong<T: Default>(&mut self, field: &str, v: &Value, value: Option<T>) -> T {
        value.unwrap_or_else(|| {
            self.wrong(field, v);
            T::default()
        })
    }

    fn f64(&mut self, o: &Obj, camel: &str, snake: &str) -> Option<f64> {
        get(o, camel, snake).map(|v| self.f64_of(camel, v))
    }

    fn i32(&mut self, o: &Obj, camel: &str, snake: &str) -> i32 {
        match get(o, camel, snake) {
            None => 0,
            Some(v) => self.or_wrong(camel, v, i32_value(v)),
        }
    }

    fn bool(&mut self, o: &Obj, camel: &str, snake: &str) -> bool {
        match get(o, camel, snake) {
            None => false,
            Some(v) => self.or_wrong(camel, v, bool_value(v)),
        }
    }

    /// An enum given as a number, its proto name (`prefix` + name) or its short name.
    fn enumeration(
        &mut self,
        o: &Obj,
        camel: &str,
        snake: &str,
        prefix: &str,
        by_name: impl Fn(&str) -> Option<i32>,
    ) -> i32 {
        match get(o, camel, snake) {
            None => 0,
            Some(v) => self.or_wrong(camel, v, enum_value(v, prefix, by_name)),
        }
    }

    /// A trace or span id: hex, else base64; empty when absent.
    fn id(&mut self, o: &Obj, camel: &str, snake: &str) -> Vec<u8> {
        match get(o, camel, snake) {
            None => Vec::new(),
            Some(v) => {
                let id = v.as_str().and_then(id_bytes);
                self.or_wrong(camel, v, id)
            }
        }
    }

    fn attributes(&mut self, o: &Obj) -> Result<Vec<KeyValue>, DecodeError> {
        self.list(o, "attributes", "attributes", Parser::key_value)
    }

    fn key_value(&mut self, o: &Obj) -> Result<KeyValue, DecodeError> {
        Ok(KeyValue {
            key: self.string(o, "key", "key"),
            value: match get(o, "value", "value") {
                None => None,
                Some(v) => Some(self.any_value(v, 0)?),
            },
            ..Default::default()
        })
    }

    fn any_value(&mut self, v: &Value, depth: usize) -> Result<AnyValue, DecodeError> {
        use any_value::Value as V;
        if depth > 64 {
            return Err(bad("values nested too deep"));
        }
        let Value::Object(o) = v else {
            return Err(bad("an AnyValue is not an object"));
        };
        let value = if let Some(s) = get(o, "stringValue", "string_value") {
            match s {
                Value::String(s) => Some(V::StringValue(s.clone())),
                other => {
                    self.wrong("stringValue", other);
                    Some(V::StringValue(other.to_string()))
                }
            }
        } else if get(o, "boolValue", "bool_value").is_some() {
            Some(V::BoolValue(self.bool(o, "boolValue", "bool_value")))
        } else if let Some(i) = get(o, "intValue", "int_value") {
            Some(V::IntValue(self.i64_of("intValue", i)))
        } else if let Some(d) = get(o, "doubleValue", "double_value") {
            Some(V::DoubleValue(self.f64_of("doubleValue", d)))
        } else if let Some(a) = self.object(o, "arrayValue", "array_value")? {
            let values = match get(a, "values", "values") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| self.any_value(item, depth + 1))
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad("arrayValue.values is not an array")),
            };
            Some(V::ArrayValue(ArrayValue { values }))
        } else if let Some(kvs) = self.object(o, "kvlistValue", "kvlist_value")? {
            let values = match get(kvs, "values", "values") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::Object(kv) => Ok(KeyValue {
                            key: self.string(kv, "key", "key"),
                            value: match get(kv, "value", "value") {
                                None => None,
                                Some(v) => Some(self.any_value(v, depth + 1)?),
                            },
                            ..Default::default()
                        }),
                        _ => Err(bad("a kvlistValue item is not an object")),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad("kvlistValue.values is not an array")),
            };
            Some(V::KvlistValue(KeyValueList { values }))
        } else if let Some(b) = get(o, "bytesValue", "bytes_value") {
            let bytes = b.as_str().and_then(base64_bytes);
            match bytes {
                Some(bytes) => Some(V::BytesValue(bytes)),
                None => {
                    self.wrong("bytesValue", b);
                    Some(V::StringValue(b.as_str().unwrap_or_default().to_owned()))
                }
            }
        } else {
            None
        };
        Ok(AnyValue { value })
    }

    fn resource(&mut self, o: &Obj) -> Result<Option<Resource>, DecodeError> {
        match self.object(o, "resource", "resource")? {
            None => Ok(None),
            Some(r) => Ok(Some(Resource {
                attributes: self.attributes(r)?,
                ..Default::default()
            })),
        }
    }

    fn scope(&mut self, o: &Obj) -> Result<Option<InstrumentationScope>, DecodeError> {
        match self.object(o, "scope", "scope")? {
            None => Ok(None),
            Some(s) => Ok(Some(InstrumentationScope {
                name: self.string(s, "name", "name"),
                version: self.string(s, "version", "version"),
                attributes: self.attributes(s)?,
                ..Default::default()
            })),
        }
    }

    // --- traces

    fn resource_spans(&mut self, o: &Obj) -> Result<ResourceSpans, DecodeError> {
        Ok(ResourceSpans {
            resource: self.resource(o)?,
            scope_spans: self.list(o, "scopeSpans", "scope_spans", |p, o| {
                Ok(ScopeSpans {
                    scope: p.scope(o)?,
                    spans: p.list(o, "spans", "spans", Parser::span)?,
                    ..Default::default()
                })
            })?,
            ..Default::default()
        })
    }

    fn span(&mut self, o: &Obj) -> Result<Span, DecodeError> {
        let status = self.object(o, "status", "status")?.map(|s| Status {
            message: self.string(s, "message", "message"),
            code: self.enumeration(s, "code", "code", "STATUS_CODE_", |n| {
                status::StatusCode::from_str_name(n).map(|c| c as i32)
            }),
        });
        Ok(Span {
            trace_id: self.id(o, "traceId", "trace_id"),
            span_id: self.id(o, "spanId", "span_id"),
            parent_span_id: self.id(o, "parentSpanId", "parent_span_id"),
            name: self.string(o, "name", "name"),
            kind: self.enumeration(o, "kind", "kind", "SPAN_KIND_", |n| {
                span::SpanKind::from_str_name(n).map(|k| k as i32)
            }),
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano"),
            end_time_unix_nano: self.u64(o, "endTimeUnixNano", "end_time_unix_nano"),
            attributes: self.attributes(o)?,
            status,
            ..Default::default()
        })
    }

    // --- logs

    fn resource_logs(&mut self, o: &Obj) -> Result<ResourceLogs, DecodeError> {
        Ok(ResourceLogs {
            resource: self.resource(o)?,
            scope_logs: self.list(o, "scopeLogs", "scope_logs", |p, o| {
                Ok(ScopeLogs {
                    scope: p.scope(o)?,
                    log_records: p.list(o, "logRecords", "log_records", Parser::log_record)?,
                    ..Default::default()
                })
            })?,
            ..Default::default()
        })
    }

    fn log_record(&mut self, o: &Obj) -> Result<LogRecord, DecodeError> {
        Ok(LogRecord {
            time_unix_nano: self.u64(o, "timeUnixNano", "time_unix_nano"),
            observed_time_unix_nano: self.u64(o, "observedTimeUnixNano", "observed_time_unix_nano"),
            severity_number: self.enumeration(
                o,
                "severityNumber",
                "severity_number",
                "SEVERITY_NUMBER_",
                |n| SeverityNumber::from_str_name(n).map(|s| s as i32),
            ),
            severity_text: self.string(o, "severityText", "severity_text"),
            body: match get(o, "body", "body") {
                None => None,
                Some(v) => Some(self.any_value(v, 0)?),
            },
            attributes: self.attributes(o)?,
            trace_id: self.id(o, "traceId", "trace_id"),
            span_id: self.id(o, "spanId", "span_id"),
            event_name: self.string(o, "eventName", "event_name"),
            ..Default::default()
        })
    }

    // --- metrics

    fn resource_metrics(&mut self, o: &Obj) -> Result<ResourceMetrics, DecodeError> {
        Ok(ResourceMetrics {
            resource: self.resource(o)?,
            scope_metrics: self.list(o, "scopeMetrics", "scope_metrics", |p, o| {
                Ok(ScopeMetrics {
                    scope: p.scope(o)?,
                    metrics: p.list(o, "metrics", "metrics", Parser::metric)?,
                    ..Default::default()
                })
            })?,
            ..Default::default()
        })
    }

    fn temporality(&mut self, o: &Obj) -> i32 {
        self.enumeration(
            o,
            "aggregationTemporality",
            "aggregation_temporality",
            "AGGREGATION_TEMPORALITY_",
            |n| AggregationTemporality::from_str_name(n).map(|t| t as i32),
        )
    }

    fn metric(&mut self, o: &Obj) -> Result<Metric, DecodeError> {
        use metric::Data;
        let data = if let Some(g) = self.object(o, "gauge", "gauge")? {
            Some(Data::Gauge(Gauge {
                data_points: self.list(g, "dataPoints", "data_points", Parser::number_point)?,
            }))
        } else if let Some(s) = self.object(o, "sum", "sum")? {
            Some(Data::Sum(Sum {
                data_points: self.list(s, "dataPoints", "data_points", Parser::number_point)?,
                aggregation_temporality: self.temporality(s),
                is_monotonic: self.bool(s, "isMonotonic", "is_monotonic"),
            }))
        } else if let Some(h) = self.object(o, "histogram", "histogram")? {
            Some(Data::Histogram(Histogram {
                data_points: self.list(h, "dataPoints", "data_points", Parser::histogram_point)?,
                aggregation_temporality: self.temporality(h),
            }))
        } else if let Some(h) = self.object(o, "exponentialHistogram", "exponential_histogram")? {
            Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: self.list(h, "dataPoints", "data_points", Parser::exp_point)?,
                aggregation_temporality: self.temporality(h),
            }))
        } else if let Some(s) = self.object(o, "summary", "summary")? {
            Some(Data::Summary(Summary {
                data_points: self.list(s, "dataPoints", "data_points", Parser::summary_point)?,
            }))
        } else {
            None
        };
        Ok(Metric {
            name: self.string(o, "name", "name"),
            description: self.string(o, "description", "description"),
            unit: self.string(o, "unit", "unit"),
            data,
            ..Default::default()
        })
    }

    fn number_point(&mut self, o: &Obj) -> Result<NumberDataPoint, DecodeError> {
        let value = if let Some(d) = get(o, "asDouble", "as_double") {
            Some(number_data_point::Value::AsDouble(
                self.f64_of("asDouble", d),
            ))
        } else {
            get(o, "asInt", "as_int")
                .map(|i| number_data_point::Value::AsInt(self.i64_of("asInt", i)))
        };
        Ok(NumberDataPoint {
            attributes: self.attributes(o)?,
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano"),
            time_unix_nano: self.u64(o, "timeUnixNano", "time_unix_nano"),
            value,
            ..Default::default()
        })
    }

    fn u64_list(&mut self, o: &Obj, camel: &str, snake: &str) -> Result<Vec<u64>, DecodeError> {
        match get(o, camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().map(|v| self.u64_of(camel, v)).collect()),
            Some(_) => Err(bad(format!("{camel} is not an array"))),
        }
    }

    fn f64_list(&mut self, o: &Obj, camel: &str, snake: &str) -> Result<Vec<f64>, DecodeError> {
        match get(o, camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().map(|v| self.f64_of(camel, v)).collect()),
            Some(_) => Err(bad(format!("{camel} is not an array"))),
        }
    }

    fn histogram_point(&mut self, o: &Obj) -> Result<HistogramDataPoint, DecodeError> {
        Ok(HistogramDataPoint {
            attributes: self.attributes(o)?,
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano"),
            time_unix_nano: self.u64(o, "timeUnixNano", "time_unix_nano"),
            count: self.u64(o, "count", "count"),
            sum: self.f64(o, "sum", "sum"),
            bucket_counts: self.u64_list(o, "bucketCounts", "bucket_counts")?,
            explicit_bounds: self.f64_list(o, "explicitBounds", "explicit_bounds")?,
            min: self.f64(o, "min", "min"),
            max: self.f64(o, "max", "max"),
            ..Default::default()
        })
    }

    fn buckets(
        &mut self,
        o: &Obj,
        camel: &str,
    ) -> Result<Option<exponential_histogram_data_point::Buckets>, DecodeError> {
        match self.object(o, camel, camel)? {
            None => Ok(None),
            Some(b) => Ok(Some(exponential_histogram_data_point::Buckets {
                offset: self.i32(b, "offset", "offset"),
                bucket_counts: self.u64_list(b, "bucketCounts", "bucket_counts")?,
            })),
        }
    }

    fn exp_point(&mut self, o: &Obj) -> Result<ExponentialHistogramDataPoint, DecodeError> {
        Ok(ExponentialHistogramDataPoint {
            attributes: self.attributes(o)?,
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano"),
            time_unix_nano: self.u64(o, "timeUnixNano", "time_unix_nano"),
            count: self.u64(o, "count", "count"),
            sum: self.f64(o, "sum", "sum"),
            scale: self.i32(o, "scale", "scale"),
            zero_count: self.u64(o, "zeroCount", "zero_count"),
            positive: self.buckets(o, "positive")?,
            negative: self.buckets(o, "negative")?,
            min: self.f64(o, "min", "min"),
            max: self.f64(o, "max", "max"),
            zero_threshold: self
                .f64(o, "zeroThreshold", "zero_threshold")
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    fn summary_point(&mut self, o: &Obj) -> Result<SummaryDataPoint, DecodeError> {
        Ok(SummaryDataPoint {
            attributes: self.attributes(o)?,
            start_time_unix_nano: self.u64(o, "startTimeUnixNano", "start_time_unix_nano"),
            time_unix_nano: self.u64(o, "timeUnixNano", "time_unix_nano"),
            count: self.u64(o, "count", "count"),
            sum: self.f64(o, "sum", "sum").unwrap_or_default(),
            quantile_values: self.list(o, "quantileValues", "quantile_values", |p, q| {
                Ok(summary_data_point::ValueAtQuantile {
                    quantile: p.f64(q, "quantile", "quantile").unwrap_or_default(),
                    value: p.f64(q, "value", "value").unwrap_or_default(),
                })
            })?,
            ..Default::default()
        })
    }
}

/// A `uint64`: a JSON number that is a whole non-negative number, or a string
/// of one.
pub(crate) fn u64_value(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An `int64`: a whole JSON number, or a string of one.
pub(crate) fn i64_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An `int32`, written like an `int64`.
pub(crate) fn i32_value(v: &Value) -> Option<i32> {
    i64_value(v).and_then(|n| i32::try_from(n).ok())
}

/// A `double`: a JSON number, or a string of one, `NaN`, `Infinity` or `-Infinity`.
pub(crate) fn f64_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            t => t.parse().ok(),
        },
        _ => None,
    }
}

/// A `bool`: `true`, `false`, or those as strings.
pub(crate) fn bool_value(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
        _ => None,
    }
}

/// An enum: a number (or a string of one), its proto name (`prefix` + name)
/// or its short name.
pub(crate) fn enum_value(
    v: &Value,
    prefix: &str,
    by_name: impl Fn(&str) -> Option<i32>,
) -> Option<i32> {
    match v {
        Value::String(s) if s.parse::<i64>().is_err() => {
            by_name(s).or_else(|| by_name(&format!("{prefix}{s}")))
        }
        _ => i32_value(v),
    }
}

/// A trace or span id: hex (any case), else base64.
pub(crate) fn id_bytes(s: &str) -> Option<Vec<u8>> {
    hex::decode(s)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(s).ok())
}

/// `bytesValue`: base64, standard or URL-safe.
pub(crate) fn base64_bytes(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .ok()
}
