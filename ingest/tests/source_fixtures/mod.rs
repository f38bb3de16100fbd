//! Small OTLP messages for the source tests (file, capture, receiver), built with
//! `opentelemetry-proto`'s prost structs so they are valid by construction.
#![allow(dead_code)]

use std::path::Path;

use arrow::array::{Array, AsArray};
use ingest::Table;
use ingest::source::capture_reader::{CaptureItem, CaptureReader};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// 2026-01-01T00:00:00Z in Unix nanoseconds.
pub const T0: u64 = 1_767_225_600_000_000_000;

pub fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", service)],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        ..Default::default()
    })
}

/// `n` SERVER spans `GET /api/products/{id}` of shop-gateway, one a millisecond.
pub fn traces(n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![0x11; 16],
            span_id: vec![0x20 + i as u8; 8],
            name: "GET /api/products/{id}".into(),
            kind: 2,
            start_time_unix_nano: T0 + i as u64 * 1_000_000,
            end_time_unix_nano: T0 + i as u64 * 1_000_000 + 500_000,
            attributes: vec![
                text("http.request.method", "GET"),
                text("http.route", "/api/products/{id}"),
                int("http.response.status_code", 200),
                text("client.address", "198.51.100.7"),
            ],
            status: Some(Status::default()),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("shop-gateway"),
            scope_spans: vec![ScopeSpans {
                scope: scope("gateway"),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `n` failed `shop.auth.login` events of shop-auth.
pub fn logs(n: usize) -> ExportLogsServiceRequest {
    let records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: T0 + i as u64 * 1_000_000,
            event_name: "shop.auth.login".into(),
            attributes: vec![
                text("client.address", "203.0.113.9"),
                text("shop.auth.outcome", "failure"),
                text("shop.auth.failure_reason", "bad_password"),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("shop-auth"),
            scope_logs: vec![ScopeLogs {
                scope: scope("auth"),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A gauge `process.cpu.utilization` (one point) and a sum `shop.orders`
/// (`n` points) of shop-checkout.
pub fn metrics(n: usize) -> ExportMetricsServiceRequest {
    let point = |t: u64, v: number_data_point::Value| NumberDataPoint {
        time_unix_nano: t,
        value: Some(v),
        ..Default::default()
    };
    let gauge = Metric {
        name: "process.cpu.utilization".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(T0, number_data_point::Value::AsDouble(0.25))],
        })),
        ..Default::default()
    };
    let sum = Metric {
        name: "shop.orders".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: (0..n)
                .map(|i| {
                    point(
                        T0 + i as u64 * 60_000_000_000,
                        number_data_point::Value::AsInt(i as i64),
                    )
                })
                .collect(),
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("shop-checkout"),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("checkout"),
                metrics: vec![gauge, sum],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A metrics message of a gauge only: its fields are all length-delimited, as a
/// span's first fields are, so only the decoders' checks tell it from spans.
pub fn gauge_only() -> ExportMetricsServiceRequest {
    let mut m = metrics(0);
    m.resource_metrics[0].scope_metrics[0].metrics.truncate(1);
    m
}

pub fn proto(table: Table) -> Vec<u8> {
    match table {
        Table::Spans => traces(2).encode_to_vec(),
        Table::Logs => logs(2).encode_to_vec(),
        Table::Metrics => metrics(2).encode_to_vec(),
    }
}

/// 4-byte big-endian length, then the record, for each record.
pub fn length_prefixed<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The first column that names what a row is, per table.
fn label_column(table: Table) -> &'static str {
    match table {
        Table::Spans => "name",
        Table::Logs => "event_name",
        Table::Metrics => "metric_name",
    }
}

/// One line per item, with the file's name only (not its folder): position,
/// table, rows (by their name, event name or metric name), rejections.
pub fn describe(reader: CaptureReader) -> String {
    let mut out = String::new();
    for item in reader {
        let line = match item {
            CaptureItem::Message(m) => {
                let batch = &m.decoded.batch;
                let labels: Vec<String> = batch
                    .column_by_name(label_column(m.decoded.table))
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        (0..c.len())
                            .map(|i| {
                                if c.is_null(i) {
                                    "-".to_string()
                                } else {
                                    c.value(i).to_string()
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let rejected: Vec<String> = m
                    .decoded
                    .rejected
                    .iter()
                    .map(|r| r.reason.as_str().to_string())
                    .collect();
                format!(
                    "{} {} rows={} [{}] rejected=[{}]",
                    short(&m.position.to_string()),
                    m.decoded.table.name(),
                    batch.num_rows(),
                    labels.join(", "),
                    rejected.join(", ")
                )
            }
            CaptureItem::Bad(b) => format!(
                "{} BAD {} ({} raw bytes)",
                short(&b.position.to_string()),
                b.error.reason.as_str(),
                b.raw.len()
            ),
            CaptureItem::Unreadable { position, error } => {
                format!(
                    "{} UNREADABLE {}",
                    short(&position.to_string()),
                    short(&error.to_string())
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Drops the folder part of paths in a description (temporary folders differ).
fn short(text: &str) -> String {
    text.split(' ')
        .map(|w| match w.rfind('/') {
            Some(i) => &w[i + 1..],
            None => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares `actual` with the golden file `name` under `tests/captures/`;
/// `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}
