//! The ingest file source reads what the real OpenTelemetry Collector's `file`
//! exporter writes (the local stack's `file/captures`, OTLP/JSON lines).
//!
//! Needs the Collector of the local stack (`compose/local/stack up otelcol`). The
//! test exports one span, one log record and one metric, each named with a
//! marker unique to the run, to the Collector over OTLP/gRPC, then reads the
//! Collector's capture file with `ingest::source::capture_reader` until all three rows appear.
//!
//! Run: `cargo test -p e2e --test ingest_capture`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use ingest::Table;
use ingest::source::capture_reader::{self, CaptureItem};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const COLLECTOR: &str = "http://127.0.0.1:4317";

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("e2e-ingest-capture".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

async fn export(marker: &str, now: u64) -> Result<()> {
    let span = Span {
        trace_id: vec![0x5e; 16],
        span_id: vec![0x7a; 8],
        name: marker.into(),
        kind: 1,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        // an error, so the Collector's tail sampling keeps it
        status: Some(Status {
            message: "e2e".into(),
            code: 2,
        }),
        ..Default::default()
    };
    TraceServiceClient::connect(COLLECTOR)
        .await
        .with_context(|| {
            format!("connecting to the Collector at {COLLECTOR}: `compose/local/stack up otelcol`")
        })?
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await?;
    let record = LogRecord {
        time_unix_nano: now,
        event_name: marker.into(),
        ..Default::default()
    };
    LogsServiceClient::connect(COLLECTOR)
        .await?
        .export(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await?;
    let gauge = Metric {
        name: marker.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(1.0)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    MetricsServiceClient::connect(COLLECTOR)
        .await?
        .export(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await?;
    Ok(())
}

/// The tables in which a row named `marker` was read, and the bad items seen.
fn scan(path: &PathBuf, marker: &str) -> Result<(Vec<Table>, Vec<String>)> {
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for item in capture_reader::open(std::slice::from_ref(path))? {
        match item {
            CaptureItem::Message(m) => {
                let column = match m.decoded.table {
                    Table::Spans => "name",
                    Table::Logs => "event_name",
                    Table::Metrics => "metric_name",
                };
                let Some(names) = m.decoded.batch.column_by_name(column) else {
                    continue;
                };
                let names = names.as_string::<i32>();
                if (0..names.len()).any(|i| !names.is_null(i) && names.value(i) == marker) {
                    found.push(m.decoded.table);
                }
            }
            CaptureItem::Bad(b) => bad.push(format!("{}: {}", b.position, b.error)),
            CaptureItem::Unreadable { position, error } => bail!("{position}: {error}"),
        }
    }
    Ok((found, bad))
}

#[tokio::test]
async fn the_collector_file_exporter_capture_reads_back() -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    // Letters, not digits: the Collector masks long digit runs (card numbers) in values.
    let letters: String = now
        .to_string()
        .bytes()
        .map(|d| (b'a' + (d - b'0')) as char)
        .collect();
    let marker = format!("e2e-ingest-capture-{letters}");
    export(&marker, now).await?;
    let path = e2e::collector_capture_file();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (found, bad) = if path.exists() {
            scan(&path, &marker)?
        } else {
            (Vec::new(), Vec::new())
        };
        // The Collector flushes whole lines; at most the one being written may be cut.
        if bad.len() > 1 {
            bail!(
                "{} lines of the Collector's capture do not decode: {bad:?}",
                bad.len()
            );
        }
        if [Table::Spans, Table::Logs, Table::Metrics]
            .iter()
            .all(|t| found.contains(t))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: after 30 s only {found:?} of the marked span, log and metric were read back",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
