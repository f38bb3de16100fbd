//! Decoding OTLP into Arrow, against plain prost decoding of the same bytes.
//!
//! Run: `cargo bench -p ingest --bench decode`
//!
//! Realistic input: requests of 1000 SERVER spans, each with the ten attributes
//! the telemetry contract's edge spans carry (~450 bytes a span in protobuf),
//! from one resource of the shop; and requests of 1000 domain-event log records.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ingest::Table;
use ingest::decode::{decode_json, decode_proto, decode_proto_prost};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};

const SPANS: usize = 1000;
const T0: u64 = 1_767_225_600_000_000_000;

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn i(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            s("service.name", "shop-gateway"),
            s("service.version", "1.4.0"),
            s("service.instance.id", "gw-7f9c4d"),
            s("deployment.environment.name", "bench"),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "shop-gateway".into(),
        version: "0.1.0".into(),
        ..Default::default()
    }
}

fn traces() -> ExportTraceServiceRequest {
    let routes = [
        "/api/products/{id}",
        "/api/cart",
        "/api/checkout",
        "/api/auth/login",
    ];
    let spans = (0..SPANS)
        .map(|n| {
            let route = routes[n % routes.len()];
            let start = T0 + n as u64 * 1_000_000;
            Span {
                trace_id: (0..16).map(|b| (b * 7 + n) as u8).collect(),
                span_id: (0..8).map(|b| (b * 13 + n) as u8).collect(),
                name: format!("GET {route}"),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 12_345_678,
                attributes: vec![
                    s("http.request.method", "GET"),
                    s("http.route", route),
                    s(
                        "url.path",
                        route.replace("{id}", &format!("{}", 1000 + n % 500)),
                    ),
                    i(
                        "http.response.status_code",
                        if n % 50 == 0 { 500 } else { 200 },
                    ),
                    s("client.address", format!("203.0.113.{}", n % 250)),
                    s(
                        "user_agent.original",
                        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                    ),
                    s("user.id", format!("user-{:06}", n % 900)),
                    s("session.id", format!("sess-{:016x}", n * 7919)),
                    s("network.protocol.version", "1.1"),
                    s("server.address", "shop.example.test"),
                ],
                status: Some(Status {
                    code: if n % 50 == 0 { 2 } else { 0 },
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let records = (0..SPANS)
        .map(|n| LogRecord {
            time_unix_nano: T0 + n as u64 * 1_000_000,
            observed_time_unix_nano: T0 + n as u64 * 1_000_000 + 5_000,
            severity_number: 9,
            trace_id: (0..16).map(|b| (b * 7 + n) as u8).collect(),
            span_id: (0..8).map(|b| (b * 13 + n) as u8).collect(),
            event_name: "shop.auth.login".into(),
            attributes: vec![
                s("client.address", format!("203.0.113.{}", n % 250)),
                s("session.id", format!("sess-{:016x}", n * 7919)),
                s("user.hash", format!("h:{:032x}", n * 104_729)),
                s(
                    "shop.auth.outcome",
                    if n % 3 == 0 { "failure" } else { "success" },
                ),
                s("shop.auth.failure_reason", "bad_password"),
                s(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                ),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn json_attrs(attrs: &[KeyValue]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => json!({ "stringValue": s }),
                    Some(any_value::Value::IntValue(i)) => json!({ "intValue": i.to_string() }),
                    _ => json!({}),
                };
                json!({ "key": kv.key, "value": v })
            })
            .collect(),
    )
}

/// The same request in OTLP/JSON, as the Collector's file exporter writes it.
fn traces_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let rs = &req.resource_spans[0];
    let spans: Vec<Value> = rs.scope_spans[0]
        .spans
        .iter()
        .map(|sp| {
            json!({
                "traceId": hex::encode(&sp.trace_id),
                "spanId": hex::encode(&sp.span_id),
                "name": sp.name,
                "kind": sp.kind,
                "startTimeUnixNano": sp.start_time_unix_nano.to_string(),
                "endTimeUnixNano": sp.end_time_unix_nano.to_string(),
                "attributes": json_attrs(&sp.attributes),
                "status": if sp.status.as_ref().is_some_and(|s| s.code == 2) { json!({"code": 2}) } else { json!({}) },
            })
        })
        .collect();
    let doc = json!({ "resourceSpans": [{
        "resource": { "attributes": json_attrs(&rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default()) },
        "scopeSpans": [{ "scope": { "name": "shop-gateway", "version": "0.1.0" }, "spans": spans }]
    }]});
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The logs request in OTLP/JSON, as the Collector's file exporter writes it.
fn logs_json(req: &ExportLogsServiceRequest) -> Vec<u8> {
    let rl = &req.resource_logs[0];
    let records: Vec<Value> = rl.scope_logs[0]
        .log_records
        .iter()
        .map(|r| {
            json!({
                "timeUnixNano": r.time_unix_nano.to_string(),
                "observedTimeUnixNano": r.observed_time_unix_nano.to_string(),
                "severityNumber": r.severity_number,
                "traceId": hex::encode(&r.trace_id),
                "spanId": hex::encode(&r.span_id),
                "eventName": r.event_name,
                "attributes": json_attrs(&r.attributes),
            })
        })
        .collect();
    let doc = json!({ "resourceLogs": [{
        "resource": { "attributes": json_attrs(&rl.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default()) },
        "scopeLogs": [{ "scope": { "name": "shop-gateway", "version": "0.1.0" }, "logRecords": records }]
    }]});
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let traces = traces();
    let proto = traces.encode_to_vec();
    let json = traces_json(&traces);
    let log_req = logs();
    let log_proto = log_req.encode_to_vec();
    let log_json = logs_json(&log_req);
    assert_eq!(
        decode_proto(Table::Spans, &proto)
            .map(|d| d.batch.num_rows())
            .ok(),
        Some(SPANS)
    );
    assert_eq!(
        decode_json(&json).map(|d| d.batch.num_rows()).ok(),
        Some(SPANS)
    );
    assert_eq!(
        decode_json(&log_json).map(|d| d.batch.num_rows()).ok(),
        Some(SPANS)
    );
    eprintln!(
        "spans request: {} bytes protobuf ({} a span), {} bytes JSON; logs request: {} bytes protobuf, {} bytes JSON",
        proto.len(),
        proto.len() / SPANS,
        json.len(),
        log_proto.len(),
        log_json.len()
    );

    let mut g = c.benchmark_group("spans");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_with_input(
        BenchmarkId::new("prost_structs_baseline", proto.len()),
        &proto,
        |b, p| {
            b.iter(|| {
                ExportTraceServiceRequest::decode(p.as_slice()).map(|r| r.resource_spans.len())
            })
        },
    );
    g.bench_with_input(
        BenchmarkId::new("prost_to_arrow", proto.len()),
        &proto,
        |b, p| b.iter(|| decode_proto_prost(Table::Spans, p).map(|d| d.batch.num_rows())),
    );
    g.bench_with_input(
        BenchmarkId::new("wire_to_arrow", proto.len()),
        &proto,
        |b, p| b.iter(|| decode_proto(Table::Spans, p).map(|d| d.batch.num_rows())),
    );
    g.bench_with_input(
        BenchmarkId::new("json_to_arrow", json.len()),
        &json,
        |b, j| b.iter(|| decode_json(j).map(|d| d.batch.num_rows())),
    );
    g.finish();

    let mut g = c.benchmark_group("logs");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_with_input(
        BenchmarkId::new("prost_structs_baseline", log_proto.len()),
        &log_proto,
        |b, p| {
            b.iter(|| ExportLogsServiceRequest::decode(p.as_slice()).map(|r| r.resource_logs.len()))
        },
    );
    g.bench_with_input(
        BenchmarkId::new("wire_to_arrow", log_proto.len()),
        &log_proto,
        |b, p| b.iter(|| decode_proto(Table::Logs, p).map(|d| d.batch.num_rows())),
    );
    g.bench_with_input(
        BenchmarkId::new("json_to_arrow", log_json.len()),
        &log_json,
        |b, j| b.iter(|| decode_json(j).map(|d| d.batch.num_rows())),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
