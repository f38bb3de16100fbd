//! Issue 12: hostile requests cost a bounded amount of memory, are refused
//! with the right answer, and do not blind the receiver. Memory is measured
//! with a counting global allocator (bytes allocated and not yet freed), never
//! with a clock.

mod hostile;

use std::sync::Arc;
use std::time::Duration;

use hostile::*;
use ingest::decode::{MAX_NAME_BYTES, budget_for, decode_proto};
use ingest::source::otlp_receiver::{
    self, MAX_ANSWER_CHARS, RawCodec, Received, ReceiverConfig, ReceiverHandle,
};
use ingest::write::dead_letter::Rejections;
use ingest::{Reason, RejectCounts, Table};
use tokio::sync::mpsc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn count(counts: &RejectCounts, reason: Reason) -> u64 {
    counts
        .snapshot()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

#[test]
fn a_625_kb_request_with_many_resource_attributes_is_refused_over_budget() {
    // 2000 resource attributes of 100 bytes, 8000 spans: 8000 copies of 210 KB
    let body = resource_heavy_traces(2000, 100, 8000);
    assert!((600_000..700_000).contains(&body.len()), "{}", body.len());
    let (result, peak) = thread_peak(|| decode_proto(Table::Spans, &body));
    let error = result.expect_err("over budget");
    assert_eq!(error.reason, Reason::OverBudget, "{error}");
    assert!(peak < 8 * MB, "decoding held {peak} bytes");
    shown(
        "625 KB, 2000 resource attributes x 8000 spans (decode)",
        peak,
    );
}

#[test]
fn resource_attributes_within_the_budget_are_kept_and_charged() {
    // 20 resource attributes of 20 bytes and 100 spans: a normal export
    let body = resource_heavy_traces(20, 20, 100);
    let (result, peak) = thread_peak(|| decode_proto(Table::Spans, &body));
    let decoded = result.expect("within budget");
    assert_eq!(decoded.batch.num_rows(), 100);
    assert!(peak <= budget_for(body.len()), "{peak} bytes");
}

#[test]
fn empty_spans_cost_a_record_each_and_are_refused() {
    let body = empty_spans(4 << 20);
    let (result, peak) = thread_peak(|| decode_proto(Table::Spans, &body));
    let error = result.expect_err("over budget");
    assert_eq!(error.reason, Reason::OverBudget, "{error}");
    // the budget (256 MiB) pays for 2 M records; what is held is their list
    assert!(peak < 96 * MB, "decoding held {peak} bytes");
    shown("8 MiB of empty spans (decode)", peak);
}

#[test]
fn a_huge_metric_name_is_cut_and_its_messages_stay_short() {
    // 500 KB name, 2000 points, every point's time absurd (each reported)
    let body = huge_metric_name(500_000, 2000, 0);
    let (result, peak) = thread_peak(|| decode_proto(Table::Metrics, &body));
    let decoded = result.expect("decodes");
    assert_eq!(decoded.batch.num_rows(), 0);
    assert!(decoded.rejected.iter().all(|r| r.detail.len() < 300));
    assert!(peak < 8 * MB, "decoding held {peak} bytes");
    shown("526 KB metric, 500 KB name, absurd times (decode)", peak);
    // with plausible times the rows keep the name cut to MAX_NAME_BYTES
    let body = huge_metric_name(500_000, 2000, T0);
    let (result, peak) = thread_peak(|| decode_proto(Table::Metrics, &body));
    let decoded = result.expect("decodes");
    assert_eq!(decoded.batch.num_rows(), 2000);
    let names = decoded.batch.column_by_name("metric_name").expect("column");
    let names = arrow::array::AsArray::as_string::<i32>(names);
    assert_eq!(names.value(0).len(), MAX_NAME_BYTES);
    assert!(
        decoded
            .rejected
            .iter()
            .any(|r| r.reason == Reason::Oversized)
    );
    assert!(peak < 16 * MB, "decoding held {peak} bytes");
    shown("526 KB metric, 500 KB name, 2000 rows (decode)", peak);
}

// ------------------------------------------------------------ the receiver

struct Running {
    handle: ReceiverHandle,
    rx: mpsc::Receiver<Received>,
    counts: Arc<RejectCounts>,
}

async fn receiver(config: ReceiverConfig) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let counts = Arc::new(RejectCounts::default());
    let config = ReceiverConfig {
        grpc: Some("127.0.0.1:0".parse().expect("addr")),
        http: Some("127.0.0.1:0".parse().expect("addr")),
        ..config
    };
    let handle = otlp_receiver::start(config, tx, Arc::new(Rejections::new(counts.clone())))
        .await
        .expect("start");
    Running { handle, rx, counts }
}

async fn post(url: String, body: Vec<u8>, gzip: bool) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1_27_mb_request_is_413_and_the_process_stays_small() {
    let _one = PROCESS.lock().await;
    let r = receiver(ReceiverConfig::default()).await;
    let url = format!("http://{}/v1/traces", r.handle.http_addr().expect("http"));
    let body = resource_heavy_traces(4000, 100, 17_000);
    assert!(
        (1_200_000..1_400_000).contains(&body.len()),
        "{}",
        body.len()
    );
    let ((status, answer), peak) = process_peak(post(url, body, false)).await;
    assert_eq!(status, 413);
    assert!(
        answer.len() < MAX_ANSWER_CHARS + 64,
        "{} bytes",
        answer.len()
    );
    assert!(peak < 32 * MB, "the process grew by {peak} bytes");
    shown("1.27 MB request over HTTP (process)", peak);
    assert_eq!(count(&r.counts, Reason::OverBudget), 1);
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_of_empty_spans_is_refused_over_http_and_grpc_within_bounds() {
    let _one = PROCESS.lock().await;
    let r = receiver(ReceiverConfig::default()).await;
    let bytes = empty_spans(((16 << 20) - 64) / 2);
    let body = gzip(&bytes);
    assert!(body.len() < 64 << 10, "{} bytes of gzip", body.len());
    let url = format!("http://{}/v1/traces", r.handle.http_addr().expect("http"));
    let ((status, _), peak) = process_peak(post(url, body, true)).await;
    assert_eq!(status, 413);
    assert!(peak < 160 * MB, "HTTP: the process grew by {peak} bytes");
    shown("16 KB gzip of empty spans over HTTP (process)", peak);

    let grpc = format!("http://{}", r.handle.grpc_addr().expect("grpc"));
    let export = async {
        let channel = tonic::transport::Endpoint::from_shared(grpc)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = tonic::client::Grpc::new(channel)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        client.ready().await.expect("ready");
        let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            .parse()
            .expect("path");
        client
            .unary::<Vec<u8>, bytes::Bytes, _>(tonic::Request::new(bytes), path, RawCodec)
            .await
    };
    let (result, peak) = process_peak(export).await;
    let status = result.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().len() <= MAX_ANSWER_CHARS + 3);
    // the client's own 16 MiB message and its gzip are part of this figure
    assert!(peak < 200 * MB, "gRPC: the process grew by {peak} bytes");
    shown(
        "16 KB gzip of empty spans over gRPC (process, client included)",
        peak,
    );
    assert_eq!(count(&r.counts, Reason::OverBudget), 2);
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_metric_name_gets_a_short_answer() {
    let r = receiver(ReceiverConfig::default()).await;
    let url = format!("http://{}/v1/metrics", r.handle.http_addr().expect("http"));
    let body = huge_metric_name(500_000, 2000, 0);
    let (status, answer) = post(url, body, false).await;
    assert_eq!(status, 200);
    assert!(
        answer.len() < 6 * MAX_ANSWER_CHARS + 64,
        "{} bytes",
        answer.len()
    );
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_do_not_lock_out_a_new_client() {
    let mut r = receiver(ReceiverConfig {
        max_connections: 32,
        ..ReceiverConfig::default()
    })
    .await;
    let http = r.handle.http_addr().expect("http");
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(http).await.expect("connect"));
    }
    let url = format!("http://{http}/v1/traces");
    let (status, _) = post(url, resource_heavy_traces(2, 10, 3), false).await;
    assert_eq!(status, 200);
    let received = r.rx.recv().await.expect("a batch");
    assert_eq!(received.decoded.batch.num_rows(), 3);
    // every connection over the cap shed an idle one
    assert!(count(&r.counts, Reason::Connection) >= 300 + 1 - 32);
    drop(idle);
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_counted() {
    use tokio::io::AsyncReadExt;
    let r = receiver(ReceiverConfig {
        idle_timeout: Duration::from_millis(50),
        ..ReceiverConfig::default()
    })
    .await;
    for addr in [r.handle.http_addr(), r.handle.grpc_addr()] {
        let mut socket = tokio::net::TcpStream::connect(addr.expect("addr"))
            .await
            .expect("connect");
        let mut buf = [0u8; 256];
        // the server closes it (gRPC first sends its settings): reading ends
        // with 0 bytes, or a reset
        while let Ok(n @ 1..) = socket.read(&mut buf).await {
            assert!(n <= buf.len());
        }
    }
    assert!(count(&r.counts, Reason::Connection) >= 2);
    r.handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_flight_refuse_a_request_with_429_until_the_consumer_takes_its_batches() {
    let mut r = receiver(ReceiverConfig {
        // one request's budget (at least 1 MiB) fills it
        max_bytes_in_flight: 1 << 20,
        ..ReceiverConfig::default()
    })
    .await;
    let url = format!("http://{}/v1/traces", r.handle.http_addr().expect("http"));
    let body = resource_heavy_traces(2, 10, 3000);
    let (status, _) = post(url.clone(), body.clone(), false).await;
    assert_eq!(status, 200);
    // its batch, not yet taken, holds bytes: the next request does not fit
    let (status, _) = post(url.clone(), body.clone(), false).await;
    assert_eq!(status, 429);
    assert_eq!(count(&r.counts, Reason::Busy), 1);
    let held = r.rx.recv().await.expect("a batch");
    assert!(held.bytes_in_flight() > 0);
    drop(held);
    let (status, _) = post(url, body, false).await;
    assert_eq!(status, 200);
    r.handle.shutdown().await.expect("shutdown");
}
