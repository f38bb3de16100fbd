//! Property tests: for random valid OTLP messages, the wire reader
//! (`decode_proto`) gives exactly the rows of the prost path
//! (`decode_proto_prost`, the oracle); and no mutation of valid bytes makes any
//! decoder panic.

use ingest::Table;
use ingest::decode::{decode_any, decode_json, decode_proto, decode_proto_prost};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    exponential_histogram_data_point, metric, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

const KEYS: &[&str] = &[
    "service.name",
    "service.version",
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "client.address",
    "user.id",
    "event.name",
    "shop.product.price",
    "shop.cart.quantity",
    "shop.auth.outcome",
    "other.key",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z._]{0,12}",
    ]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 946_684_800_000_000_000u64..4_102_444_800_000_000_000u64,
        1 => Just(0u64),
        1 => any::<u64>(),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![-1e12f64..1e12f64, Just(0.0), Just(200.0)]
}

fn scalar() -> impl Strategy<Value = any_value::Value> {
    use any_value::Value as V;
    prop_oneof![
        "\\PC{0,16}".prop_map(V::StringValue),
        "[0-9]{1,4}".prop_map(V::StringValue),
        any::<bool>().prop_map(V::BoolValue),
        any::<i64>().prop_map(V::IntValue),
        double().prop_map(V::DoubleValue),
        vec(any::<u8>(), 0..8).prop_map(V::BytesValue),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        8 => scalar().prop_map(|v| AnyValue { value: Some(v) }),
        1 => Just(AnyValue { value: None }),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values }))
            }),
            vec((key(), inner), 0..4).prop_map(|kvs| AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect()
                }))
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (key(), proptest::option::weighted(0.95, any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..8,
    )
}

fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), vec(any::<u8>(), 8), vec(any::<u8>(), 16)]
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of(attributes().prop_map(|attributes| Resource {
        attributes,
        ..Default::default()
    }))
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::of(("[a-z]{0,6}", "[0-9.]{0,4}", attributes()).prop_map(
        |(name, version, attributes)| InstrumentationScope {
            name,
            version,
            attributes,
            ..Default::default()
        },
    ))
}

fn span() -> impl Strategy<Value = Span> {
    (
        (id(), id(), id(), "\\PC{0,12}", -1i32..7),
        (time(), time(), attributes()),
        proptest::option::of(
            ("\\PC{0,8}", -1i32..4).prop_map(|(message, code)| Status { message, code }),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id, name, kind),
                (start, end, attributes),
                status,
            )| Span {
                trace_id,
                span_id,
                parent_span_id,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status,
                ..Default::default()
            },
        )
}

fn traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
    vec(
        (resource(), vec((scope(), vec(span(), 0..5)), 0..3)).prop_map(|(resource, scopes)| {
            ResourceSpans {
                resource,
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| ScopeSpans {
                        scope,
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }),
        0..3,
    )
    .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (time(), time(), -1i32..25, "[A-Z]{0,5}"),
        (proptest::option::of(any_value()), attributes(), id(), id()),
        prop_oneof![Just(String::new()), "[a-z.]{1,12}"],
    )
        .prop_map(
            |(
                (t, observed, severity_number, severity_text),
                (body, attributes, trace_id, span_id),
                event_name,
            )| {
                LogRecord {
                    time_unix_nano: t,
                    observed_time_unix_nano: observed,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    trace_id,
                    span_id,
                    event_name,
                    ..Default::default()
                }
            },
        )
}

fn logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
    vec(
        (resource(), vec((scope(), vec(log_record(), 0..5)), 0..3)).prop_map(
            |(resource, scopes)| ResourceLogs {
                resource,
                scope_logs: scopes
                    .into_iter()
                    .map(|(scope, log_records)| ScopeLogs {
                        scope,
                        log_records,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        ),
        0..3,
    )
    .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (
        time(),
        time(),
        attributes(),
        proptest::option::of(prop_oneof![
            double().prop_map(number_data_point::Value::AsDouble),
            any::<i64>().prop_map(number_data_point::Value::AsInt),
        ]),
    )
        .prop_map(|(t, start, attributes, value)| NumberDataPoint {
            time_unix_nano: t,
            start_time_unix_nano: start,
            attributes,
            value,
            ..Default::default()
        })
}

fn opt_double() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of(double())
}

fn histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
    (
        (time(), time(), attributes()),
        (any::<u64>(), opt_double(), opt_double(), opt_double()),
        vec(any::<u64>(), 0..5),
        vec(double(), 0..4),
    )
        .prop_map(
            |((t, start, attributes), (count, sum, min, max), bucket_counts, explicit_bounds)| {
                HistogramDataPoint {
                    time_unix_nano: t,
                    start_time_unix_nano: start,
                    attributes,
                    count,
                    sum,
                    min,
                    max,
                    bucket_counts,
                    explicit_bounds,
                    ..Default::default()
                }
            },
        )
}

fn buckets() -> impl Strategy<Value = Option<exponential_histogram_data_point::Buckets>> {
    proptest::option::of((any::<i32>(), vec(any::<u64>(), 0..5)).prop_map(
        |(offset, bucket_counts)| exponential_histogram_data_point::Buckets {
            offset,
            bucket_counts,
        },
    ))
}

fn exp_point() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    (
        (time(), time(), attributes()),
        (any::<u64>(), opt_double(), opt_double(), opt_double()),
        (any::<i32>(), any::<u64>(), buckets(), buckets()),
    )
        .prop_map(
            |(
                (t, start, attributes),
                (count, sum, min, max),
                (scale, zero_count, positive, negative),
            )| {
                ExponentialHistogramDataPoint {
                    time_unix_nano: t,
                    start_time_unix_nano: start,
                    attributes,
                    count,
                    sum,
                    min,
                    max,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    ..Default::default()
                }
            },
        )
}

fn summary_point() -> impl Strategy<Value = SummaryDataPoint> {
    (
        (time(), time(), attributes()),
        (any::<u64>(), double()),
        vec((double(), double()), 0..4),
    )
        .prop_map(
            |((t, start, attributes), (count, sum), qs)| SummaryDataPoint {
                time_unix_nano: t,
                start_time_unix_nano: start,
                attributes,
                count,
                sum,
                quantile_values: qs
                    .into_iter()
                    .map(|(quantile, value)| summary_data_point::ValueAtQuantile {
                        quantile,
                        value,
                    })
                    .collect(),
                ..Default::default()
            },
        )
}

fn metric() -> impl Strategy<Value = Metric> {
    use metric::Data;
    let data = prop_oneof![
        1 => Just(None),
        3 => vec(number_point(), 0..3).prop_map(|data_points| Some(Data::Gauge(Gauge { data_points }))),
        3 => (vec(number_point(), 0..3), 0i32..3, any::<bool>()).prop_map(|(data_points, t, m)| Some(Data::Sum(Sum {
            data_points,
            aggregation_temporality: t,
            is_monotonic: m,
        }))),
        3 => (vec(histogram_point(), 0..3), 0i32..3).prop_map(|(data_points, t)| Some(Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: t,
        }))),
        3 => (vec(exp_point(), 0..3), 0i32..3).prop_map(|(data_points, t)| Some(Data::ExponentialHistogram(
            ExponentialHistogram { data_points, aggregation_temporality: t }
        ))),
        3 => vec(summary_point(), 0..3).prop_map(|data_points| Some(Data::Summary(Summary { data_points }))),
    ];
    ("[a-z.]{0,12}", "\\PC{0,8}", "[a-zA-Z]{0,3}", data).prop_map(
        |(name, description, unit, data)| Metric {
            name,
            description,
            unit,
            data,
            ..Default::default()
        },
    )
}

fn metrics() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    vec(
        (resource(), vec((scope(), vec(metric(), 0..4)), 0..3)).prop_map(|(resource, scopes)| {
            ResourceMetrics {
                resource,
                scope_metrics: scopes
                    .into_iter()
                    .map(|(scope, metrics)| ScopeMetrics {
                        scope,
                        metrics,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }),
        0..3,
    )
    .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

fn same_as_oracle(table: Table, bytes: &[u8]) -> Result<(), TestCaseError> {
    let wire = decode_proto(table, bytes).map_err(|e| TestCaseError::fail(format!("wire: {e}")))?;
    let oracle =
        decode_proto_prost(table, bytes).map_err(|e| TestCaseError::fail(format!("prost: {e}")))?;
    prop_assert_eq!(&wire.batch, &oracle.batch);
    prop_assert_eq!(&wire.rejected, &oracle.rejected);
    Ok(())
}

/// Random edits of valid bytes: flips, truncations, insertions, deletions.
fn mutate(bytes: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, kind, byte) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let at = at % out.len();
        match kind % 4 {
            0 => out[at] ^= byte | 1,
            1 => out.truncate(at),
            2 => out.insert(at, byte),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn spans_wire_matches_prost(req in traces()) {
        same_as_oracle(Table::Spans, &req.encode_to_vec())?;
    }

    #[test]
    fn logs_wire_matches_prost(req in logs()) {
        same_as_oracle(Table::Logs, &req.encode_to_vec())?;
    }

    #[test]
    fn metrics_wire_matches_prost(req in metrics()) {
        same_as_oracle(Table::Metrics, &req.encode_to_vec())?;
    }

    #[test]
    fn mutated_protobuf_never_panics(req in traces(), logs in logs(), metrics in metrics(), edits in edits()) {
        for (table, bytes) in [
            (Table::Spans, req.encode_to_vec()),
            (Table::Logs, logs.encode_to_vec()),
            (Table::Metrics, metrics.encode_to_vec()),
        ] {
            let bytes = mutate(&bytes, &edits);
            for t in Table::ALL {
                let _ = decode_proto(t, &bytes);
                let _ = decode_any(t, &bytes);
            }
            let _ = table;
        }
    }

    #[test]
    fn mutated_json_never_panics(which in 0usize..3, edits in edits()) {
        let name = ["spans.json", "logs.json", "metrics.json"][which];
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name);
        let bytes = std::fs::read(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = decode_json(&mutate(&bytes, &edits));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        for t in Table::ALL {
            let _ = decode_proto(t, &bytes);
        }
        let _ = decode_json(&bytes);
    }
}
