//! The built-in OTLP receiver answering real OTLP/HTTP (reqwest) and OTLP/gRPC
//! (opentelemetry-proto's tonic clients) requests.

mod source_fixtures;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ingest::source::otlp_receiver::{self, Protocol, Received, ReceiverConfig, ReceiverHandle};
use ingest::write::capture_writer::Encoding;
use ingest::write::dead_letter::Rejections;
use ingest::{Reason, RejectCounts, Table};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use source_fixtures::*;
use tokio::sync::mpsc;

struct Running {
    handle: ReceiverHandle,
    rx: mpsc::Receiver<Received>,
    counts: Arc<RejectCounts>,
    http: String,
    grpc: String,
}

async fn start(capacity: usize, max_body_bytes: usize) -> Running {
    let (tx, rx) = mpsc::channel(capacity);
    let counts = Arc::new(RejectCounts::default());
    let config = ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: Some("127.0.0.1:0".parse().expect("addr")),
        max_body_bytes,
        keep_grpc_raw: true,
        ..ReceiverConfig::default()
    };
    let handle = otlp_receiver::start(config, tx, Arc::new(Rejections::new(counts.clone())))
        .await
        .expect("start");
    let http = format!("http://{}", handle.http_addr().expect("http"));
    let grpc = format!("http://{}", handle.grpc_addr().expect("grpc"));
    Running {
        handle,
        rx,
        counts,
        http,
        grpc,
    }
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.expect("send")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// `google.rpc.Status` as OTLP/HTTP sends it in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test]
async fn http_protobuf_traces_are_decoded_and_handed_on() {
    let mut r = start(8, 1 << 20).await;
    let body = proto(Table::Spans);
    let response = post(
        &format!("{}/v1/traces", r.http),
        "application/x-protobuf",
        None,
        body.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.expect("body"))
        .expect("response");
    assert_eq!(answer.partial_success, None);
    let received = r.rx.recv().await.expect("a batch");
    assert_eq!(received.protocol, Protocol::Http);
    assert_eq!(received.encoding, Encoding::Proto);
    assert_eq!(received.decoded.table, Table::Spans);
    assert_eq!(received.decoded.batch.num_rows(), 2);
    assert_eq!(
        &received.raw[..],
        &body[..],
        "the raw body is kept for captures"
    );
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn http_gzip_json_logs_with_a_skipped_record_answer_partial_success() {
    let mut r = start(8, 1 << 20).await;
    let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"timeUnixNano":"0","body":{"stringValue":"no time"}},
        {"timeUnixNano":"1767225601000000000","body":{"stringValue":"kept"}}]}]}]}"#;
    let response = post(
        &format!("{}/v1/logs", r.http),
        "application/json",
        Some("gzip"),
        gzip(json),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        answer["partialSuccess"]["rejectedLogRecords"], "1",
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("absurd_timestamp")),
        "{answer}"
    );
    let received = r.rx.recv().await.expect("a batch");
    assert_eq!(received.encoding, Encoding::Json);
    assert_eq!(received.decoded.batch.num_rows(), 1);
    assert_eq!(r.counts.snapshot(), vec![(Reason::AbsurdTimestamp, 1)]);
}

#[tokio::test]
async fn http_bad_bodies_are_400_with_a_message() {
    let mut r = start(8, 1 << 20).await;
    let traces = format!("{}/v1/traces", r.http);

    let response = post(
        &traces,
        "application/x-protobuf",
        None,
        b"\x0a\xff\xff\xff".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let status =
        RpcStatus::decode(response.bytes().await.expect("body")).expect("google.rpc.Status");
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("corrupt_protobuf"),
        "{}",
        status.message
    );

    let response = post(
        &traces,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let status: serde_json::Value = response.json().await.expect("json");
    assert_eq!(status["code"], 3);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad_json")),
        "{status}"
    );

    let logs_json = serde_json::to_vec(&serde_json::json!({"resourceLogs": []})).expect("json");
    let response = post(&traces, "application/json", None, logs_json).await;
    assert_eq!(response.status(), 400, "logs posted to /v1/traces");

    let response = post(
        &traces,
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("text").contains("gzip"));

    let response = post(&traces, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(response.status(), 415);

    let response = post(&traces, "application/x-protobuf", Some("br"), b"x".to_vec()).await;
    assert_eq!(response.status(), 415);

    let counts = r.counts.snapshot();
    assert!(counts.contains(&(Reason::CorruptProtobuf, 1)), "{counts:?}");
    assert!(counts.contains(&(Reason::BadJson, 1)), "{counts:?}");
    assert!(r.rx.try_recv().is_err(), "nothing bad is handed on");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_compressed_or_not() {
    let r = start(8, 1000).await;
    let big = traces(40).encode_to_vec();
    assert!(big.len() > 1000);
    let url = format!("{}/v1/traces", r.http);
    let response = post(&url, "application/x-protobuf", None, big.clone()).await;
    assert_eq!(response.status(), 413);
    let zipped = gzip(&big);
    assert!(zipped.len() < 1000, "gzip makes it small: {}", zipped.len());
    let response = post(&url, "application/x-protobuf", Some("gzip"), zipped).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn a_full_channel_answers_429_with_retry_after_and_resource_exhausted() {
    let mut r = start(1, 1 << 20).await;
    let url = format!("{}/v1/metrics", r.http);
    let first = post(&url, "application/x-protobuf", None, proto(Table::Metrics)).await;
    assert_eq!(first.status(), 200);
    let second = post(&url, "application/x-protobuf", None, proto(Table::Metrics)).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");

    let mut client = MetricsServiceClient::connect(r.grpc.clone())
        .await
        .expect("connect");
    let status = client.export(metrics(2)).await.expect_err("busy");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(!status.details().is_empty(), "RetryInfo detail");

    // Once the consumer takes a batch, requests are accepted again.
    r.rx.recv().await.expect("the first batch");
    let third = post(&url, "application/x-protobuf", None, proto(Table::Metrics)).await;
    assert_eq!(third.status(), 200);

    // With the consumer gone: 503.
    drop(r.rx);
    let gone = post(&url, "application/x-protobuf", None, proto(Table::Metrics)).await;
    assert_eq!(gone.status(), 503);
    assert!(gone.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn grpc_exports_of_the_three_signals_with_gzip() {
    let mut r = start(8, 1 << 20).await;
    let channel = tonic::transport::Endpoint::from_shared(r.grpc.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut traces_client = TraceServiceClient::new(channel.clone())
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let answer = traces_client
        .export(traces(3))
        .await
        .expect("export")
        .into_inner();
    assert_eq!(answer.partial_success, None);
    let received = r.rx.recv().await.expect("spans");
    assert_eq!(received.protocol, Protocol::Grpc);
    assert_eq!(received.decoded.table, Table::Spans);
    assert_eq!(received.decoded.batch.num_rows(), 3);
    assert_eq!(&received.raw[..], &traces(3).encode_to_vec()[..]);

    let mut logs_request = logs(2);
    logs_request.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = 0;
    let answer: ExportLogsServiceResponse = LogsServiceClient::new(channel.clone())
        .export(logs_request)
        .await
        .expect("export")
        .into_inner();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("absurd_timestamp"),
        "{}",
        partial.error_message
    );
    assert_eq!(r.rx.recv().await.expect("logs").decoded.batch.num_rows(), 1);

    MetricsServiceClient::new(channel)
        .export(metrics(2))
        .await
        .expect("export");
    let received = r.rx.recv().await.expect("metrics");
    assert_eq!(received.decoded.table, Table::Metrics);
    assert_eq!(received.decoded.batch.num_rows(), 3);
}

#[tokio::test]
async fn shutdown_closes_both_ports() {
    let r = start(8, 1 << 20).await;
    let http = r.handle.http_addr().expect("http");
    let grpc = r.handle.grpc_addr().expect("grpc");
    tokio::time::timeout(Duration::from_secs(10), r.handle.shutdown())
        .await
        .expect("shuts down in time")
        .expect("cleanly");
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (tx, _rx) = mpsc::channel(1);
    let config = ReceiverConfig {
        grpc: None,
        http: Some(addr),
        ..ReceiverConfig::default()
    };
    let err = otlp_receiver::start(
        config,
        tx,
        Arc::new(Rejections::new(Arc::new(RejectCounts::default()))),
    )
    .await
    .expect_err("port taken");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("HTTP"),
        "{text}"
    );
}
