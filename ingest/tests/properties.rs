//! Property tests: for random valid OTLP messages, the wire reader
//! (`decode_proto`) gives exactly the rows of the prost path
//! (`decode_proto_prost`, the oracle); and every decoder (protobuf and JSON,
//! spans, logs and metrics), fed valid, mutated, arbitrary and hostile
//! input, neither panics nor holds more than a bounded number of bytes per
//! input byte (issue 12).

mod hostile;

use std::cell::RefCell;

use hostile::{
    Counting, MB, T0, empty_spans, huge_metric_name, resource_heavy_traces, thread_peak,
};
use ingest::decode::{
    BUDGET_PER_INPUT_BYTE, budget_for, decode_json_as, decode_proto, decode_proto_prost,
    with_resource_attributes,
};
use ingest::{Reason, Table};
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
use proptest::test_runner::TestRunner;
use prost::Message;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
}

fn json(request: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

/// A valid message of each signal: its table, protobuf bytes and OTLP/JSON bytes.
fn valid() -> impl Strategy<Value = (Table, Vec<u8>, Vec<u8>)> {
    prop_oneof![
        traces().prop_map(|r| (Table::Spans, r.encode_to_vec(), json(&r))),
        logs().prop_map(|r| (Table::Logs, r.encode_to_vec(), json(&r))),
        metrics().prop_map(|r| (Table::Metrics, r.encode_to_vec(), json(&r))),
    ]
}

/// An input for a decoder: the table, the bytes, and whether they are read
/// as JSON (else as protobuf of that table). Valid messages, mutated or not,
/// in either encoding; arbitrary bytes; and the hostile shapes of
/// `hostile_input.rs` (resource attributes copied into every row, empty
/// records, huge names).
fn input() -> impl Strategy<Value = (Table, Vec<u8>, bool)> {
    let table = || proptest::sample::select(Table::ALL.to_vec());
    prop_oneof![
        4 => (valid(), any::<bool>(), proptest::option::of(edits())).prop_map(
            |((table, proto, json), as_json, edits)| {
                let bytes = if as_json { json } else { proto };
                let bytes = edits.map_or(bytes.clone(), |e| mutate(&bytes, &e));
                (table, bytes, as_json)
            }
        ),
        1 => (table(), vec(any::<u8>(), 0..4096), any::<bool>()),
        1 => (0usize..400, 0usize..300, 0u64..3000)
            .prop_map(|(a, v, s)| (Table::Spans, resource_heavy_traces(a, v, s), false)),
        1 => (0usize..200_000).prop_map(|n| (Table::Spans, empty_spans(n), false)),
        1 => (0usize..100_000, 0usize..3000, any::<bool>()).prop_map(|(n, p, ok)| {
            (Table::Metrics, huge_metric_name(n, p, if ok { T0 } else { 0 }), false)
        }),
    ]
}

/// The worst figures seen, for BENCHMARKS.md.
#[derive(Default)]
struct Worst {
    inputs: usize,
    decoded: usize,
    /// the most Arrow bytes per input byte of a decoded batch (inputs of 4 KiB or more)
    arrow_per_byte: f64,
    /// the most Arrow bytes of a decoded batch, against its budget
    arrow: (usize, usize),
    /// the most bytes held while decoding, per input byte (inputs of 4 KiB or more)
    peak_per_byte: f64,
    /// the most bytes held while decoding
    peak: usize,
}

/// Every decoder, on every kind of input: no panic (not even one the
/// decoders catch: `decoder_panic` is a bug too); a decoded batch takes no
/// more Arrow memory (`RecordBatch::get_array_memory_size`) than twice the
/// decode budget of its input (`budget_for`: 32 bytes per input byte, at
/// least 1 MiB): the budget charges the bytes written, and Arrow's builders
/// grow their buffers by doubling, so a batch may hold up to twice that (a
/// metric name of 1 KiB copied into 1025 rows: 1 MB charged, 2.1 MB held);
/// and what the decode holds at its peak stays within three budgets' worth
/// per input byte, plus 4 MiB for the builders' first capacity.
#[test]
fn no_decoder_panics_or_holds_more_than_its_budget_per_input_byte() {
    let worst = RefCell::new(Worst::default());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(512));
    let result = runner.run(&input(), |(table, bytes, as_json)| {
        let (result, peak) = thread_peak(|| {
            if as_json {
                decode_json_as(Some(table), &bytes)
            } else {
                decode_proto(table, &bytes)
            }
        });
        if let Err(e) = &result {
            prop_assert_ne!(e.reason, Reason::DecoderPanic, "{}", e);
        }
        let budget = budget_for(bytes.len());
        let bound = 3 * BUDGET_PER_INPUT_BYTE * bytes.len() + 4 * MB;
        prop_assert!(
            peak <= bound,
            "{} input bytes held {} (bound {})",
            bytes.len(),
            peak,
            bound
        );
        let mut w = worst.borrow_mut();
        w.inputs += 1;
        w.peak = w.peak.max(peak);
        if bytes.len() >= 4096 {
            w.peak_per_byte = w.peak_per_byte.max(peak as f64 / bytes.len() as f64);
        }
        if let Ok(decoded) = &result {
            // the builders' room is cut to what they hold, and a batch over
            // its budget as built is refused
            let arrow = decoded.batch.get_array_memory_size();
            prop_assert!(
                arrow <= budget,
                "{} input bytes ({} of {}) decoded to {} rows in {} Arrow bytes (budget {}); \
                 by column: {:?}",
                bytes.len(),
                if as_json { "JSON" } else { "protobuf" },
                table.name(),
                decoded.batch.num_rows(),
                arrow,
                budget,
                decoded
                    .batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(decoded.batch.columns())
                    .map(|(f, c)| (f.name().clone(), c.get_array_memory_size()))
                    .filter(|(_, n)| *n > 16_384)
                    .collect::<Vec<_>>()
            );
            w.decoded += 1;
            if bytes.len() >= 4096 {
                w.arrow_per_byte = w.arrow_per_byte.max(arrow as f64 / bytes.len() as f64);
            }
            if arrow > w.arrow.0 {
                w.arrow = (arrow, budget);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let w = worst.into_inner();
    eprintln!(
        "decode bounds: {} inputs ({} decoded): Arrow bytes per input byte at most {:.1} \
         (inputs of 4 KiB or more); \
         the largest batch {:.2} MB (budget {:.0} MB); peak held {:.1} MB, at most {:.1} bytes \
         per input byte (inputs of 4 KiB or more)",
        w.inputs,
        w.decoded,
        w.arrow_per_byte,
        w.arrow.0 as f64 / MB as f64,
        w.arrow.1 as f64 / MB as f64,
        w.peak as f64 / MB as f64,
        w.peak_per_byte,
    );
}

/// The rows of `bytes` decoded with and without `resource_attributes` built.
fn both_ways(table: Table, bytes: &[u8]) -> Result<(), TestCaseError> {
    use arrow::array::Array as _;
    let with = with_resource_attributes(true, || decode_proto(table, bytes));
    let without = with_resource_attributes(false, || decode_proto(table, bytes));
    let (with, without) = match (with, without) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            // off costs less, so it may decode what on refuses, never the reverse
            prop_assert!(a.is_err(), "built: {:?}, not built: {:?}", a.err(), b.err());
            return Ok(());
        }
    };
    prop_assert_eq!(with.batch.num_rows(), without.batch.num_rows());
    let resource = with.batch.schema().index_of("resource_attributes").unwrap();
    for i in 0..with.batch.num_columns() {
        if i != resource {
            prop_assert_eq!(with.batch.column(i), without.batch.column(i));
        }
    }
    let maps = without.batch.column(resource);
    prop_assert_eq!(maps.null_count(), 0, "empty maps, not nulls");
    let maps = arrow::array::AsArray::as_map(maps.as_ref());
    prop_assert_eq!(maps.keys().len(), 0, "no entry when not built");
    prop_assert!(without.batch.get_array_memory_size() <= with.batch.get_array_memory_size());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn without_resource_attributes_every_other_column_is_the_same(
        (table, bytes, _) in valid()
    ) {
        both_ways(table, &bytes)?;
    }
}

#[test]
fn a_resource_of_many_large_attributes_is_kept_once_when_no_rule_reads_it() {
    // 2000 resource attributes of 100 bytes, 8000 spans: built per row, 8000
    // copies of 210 KB (refused over budget); not built, one copy
    let body = resource_heavy_traces(2000, 100, 8000);
    let (result, peak) =
        thread_peak(|| with_resource_attributes(false, || decode_proto(Table::Spans, &body)));
    let decoded = result.expect("within budget when the column is not built");
    assert_eq!(decoded.batch.num_rows(), 8000);
    let arrow = decoded.batch.get_array_memory_size();
    // what 8000 spans of the fixture take, not 8000 x 210 KB
    assert!(arrow < 4 * MB, "{arrow} bytes of rows");
    assert!(peak < 16 * MB, "decoding held {peak} bytes");
    let with = with_resource_attributes(true, || decode_proto(Table::Spans, &body));
    assert_eq!(
        with.expect_err("built per row: over budget").reason,
        Reason::OverBudget
    );
}
