//! A built-in OTLP receiver, so the engine runs with no Collector and no Kafka:
//! OTLP/gRPC (default `127.0.0.1:4317`) and OTLP/HTTP (default `127.0.0.1:4318`,
//! `POST /v1/traces`, `/v1/logs`, `/v1/metrics`).
//!
//! - **Bodies**: `Content-Type` `application/x-protobuf` or `application/json`;
//!   `Content-Encoding` `gzip`, `zstd` or none; over
//!   [`ReceiverConfig::max_body_bytes`] (compressed, and again decompressed) is
//!   `413`. gRPC accepts gzip-compressed messages.
//! - **Answers** follow the OTLP specification: success with a partial-success
//!   part when records were skipped (`rejected_spans` / `rejected_log_records` /
//!   `rejected_data_points` count the records dropped for an absurd timestamp;
//!   `error_message` lists the first rejections of any kind); a body that does
//!   not decode is `400` / `INVALID_ARGUMENT` with a `google.rpc.Status` saying
//!   why, in the request's content type.
//! - **Backpressure**: decoded batches go into a bounded `tokio::sync::mpsc`
//!   channel. A slot is reserved *before* decoding; when the channel is full the
//!   answer is `429 Too Many Requests` with `Retry-After`, or gRPC
//!   `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` detail, both retryable by
//!   OTLP exporters. Nothing is ever queued beyond the channel. When the consumer
//!   is gone the answer is `503` / `UNAVAILABLE`.
//! - **Rejections** are counted, logged once and dead-lettered through
//!   [`Rejections`] (source `otlp_http` or `otlp_grpc`, origin the client's
//!   address and the path).
//! - A protobuf gRPC message that does not parse is refused by tonic before it
//!   reaches this code, so it is not counted.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ingest::RejectCounts;
//! use ingest::dead_letter::Rejections;
//! use ingest::otlp_receiver::{self, ReceiverConfig};
//!
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! let rejections = Arc::new(Rejections::new(Arc::new(RejectCounts::default())));
//! let receiver = otlp_receiver::start(ReceiverConfig::default(), tx, rejections).await?;
//! while let Some(received) = rx.recv().await {
//!     println!("{} rows of {}", received.decoded.batch.num_rows(), received.decoded.table.name());
//! }
//! receiver.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::capture::Encoding;
use crate::dead_letter::{DeadLetter, Rejections};
use crate::decode::{decode_json_as, decode_proto};
use crate::{DecodeError, Decoded, Reason, Rejected, Table};

/// The default OTLP/gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";
/// The default OTLP/HTTP address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";

/// How the receiver listens and how much it takes.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// OTLP/gRPC address; `None` turns gRPC off.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP address; `None` turns HTTP off.
    pub http: Option<SocketAddr>,
    /// The largest request body, compressed or not (default 16 MiB).
    pub max_body_bytes: usize,
    /// Seconds a client is told to wait when the channel is full (default 1).
    pub retry_after_secs: u32,
    /// Keep each gRPC request's protobuf bytes in [`Received::raw`] (re-encoded,
    /// for captures). HTTP bodies are always kept, as received.
    pub keep_grpc_raw: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc: DEFAULT_GRPC_ADDR.parse().ok(),
            http: DEFAULT_HTTP_ADDR.parse().ok(),
            max_body_bytes: 16 << 20,
            retry_after_secs: 1,
            keep_grpc_raw: false,
        }
    }
}

/// The protocol a request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC
    Grpc,
    /// OTLP/HTTP
    Http,
}

impl Protocol {
    /// `otlp_grpc` or `otlp_http`: the source name in logs and dead letters.
    pub fn source(self) -> &'static str {
        match self {
            Protocol::Grpc => "otlp_grpc",
            Protocol::Http => "otlp_http",
        }
    }
}

/// One accepted export request, decoded.
#[derive(Debug, Clone)]
pub struct Received {
    /// gRPC or HTTP
    pub protocol: Protocol,
    /// the client's address, when known
    pub peer: Option<SocketAddr>,
    /// how the body was encoded
    pub encoding: Encoding,
    /// its rows and skipped records
    pub decoded: Decoded,
    /// the request body, decompressed (for gRPC: re-encoded protobuf if
    /// [`ReceiverConfig::keep_grpc_raw`], else empty)
    pub raw: Bytes,
}

/// An error starting or running the receiver.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The address could not be bound (in use, not local...).
    #[error("OTLP/{protocol} receiver: cannot listen on {addr}: {source}")]
    Bind {
        /// `gRPC` or `HTTP`
        protocol: &'static str,
        /// the address
        addr: SocketAddr,
        /// what the operating system said
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("OTLP/{protocol} receiver on {addr} failed: {detail}")]
    Serve {
        /// `gRPC` or `HTTP`
        protocol: &'static str,
        /// the address
        addr: SocketAddr,
        /// what failed
        detail: String,
    },
}

/// A running receiver; [`ReceiverHandle::shutdown`] stops it (dropping it does too,
/// without waiting).
pub struct ReceiverHandle {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), ReceiverError>>>,
}

impl fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverHandle")
            .field("grpc", &self.grpc)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl ReceiverHandle {
    /// The address gRPC listens on (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc
    }

    /// The address HTTP listens on (the real port when 0 was asked for).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Stops accepting, lets requests in flight finish, and waits for both servers.
    pub async fn shutdown(mut self) -> Result<(), ReceiverError> {
        let _ = self.stop.send(true);
        let mut first_error = Ok(());
        for task in self.tasks.drain(..) {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => Err(ReceiverError::Serve {
                    protocol: "?",
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    detail: format!("server task ended abnormally: {e}"),
                }),
            };
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }
}

impl Drop for ReceiverHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What the handlers share.
struct Shared {
    tx: mpsc::Sender<Received>,
    rejections: Arc<Rejections>,
    config: ReceiverConfig,
}

/// Binds the configured addresses and serves until the handle is shut down.
/// Accepted requests are sent to `tx`.
pub async fn start(
    config: ReceiverConfig,
    tx: mpsc::Sender<Received>,
    rejections: Arc<Rejections>,
) -> Result<ReceiverHandle, ReceiverError> {
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        tx,
        rejections,
        config: config.clone(),
    });
    let mut handle = ReceiverHandle {
        grpc: None,
        http: None,
        stop,
        tasks: Vec::new(),
    };
    if let Some(addr) = config.grpc {
        let listener = bind("gRPC", addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        handle.grpc = Some(local);
        handle.tasks.push(tokio::spawn(serve_grpc(
            listener,
            local,
            shared.clone(),
            stopped.clone(),
        )));
        tracing::info!(addr = %local, "OTLP/gRPC receiver listening");
    }
    if let Some(addr) = config.http {
        let listener = bind("HTTP", addr).await?;
        let local = listener.local_addr().unwrap_or(addr);
        handle.http = Some(local);
        handle.tasks.push(tokio::spawn(serve_http(
            listener,
            local,
            shared.clone(),
            stopped.clone(),
        )));
        tracing::info!(addr = %local, "OTLP/HTTP receiver listening");
    }
    Ok(handle)
}

async fn bind(
    protocol: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, ReceiverError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ReceiverError::Bind {
            protocol,
            addr,
            source,
        })
}

async fn wait_stop(mut stopped: watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// Why a request was not accepted, turned into an answer in one place per protocol.
#[derive(Debug)]
enum Refusal {
    /// the channel is full: retry later
    Busy,
    /// the consumer is gone
    Closed,
    /// the body does not decode
    Invalid(String),
    /// the body is too large
    TooLarge(String),
    /// the content type or encoding is not supported
    Unsupported(String),
}

/// Counts what was skipped and builds the partial-success part: the number of
/// records dropped and a message listing the first rejections.
fn partial(decoded: &Decoded) -> Option<(i64, String)> {
    if decoded.rejected.is_empty() {
        return None;
    }
    let dropped = decoded
        .rejected
        .iter()
        .filter(|r| r.reason == Reason::AbsurdTimestamp)
        .count() as i64;
    let mut message: Vec<String> = decoded
        .rejected
        .iter()
        .take(5)
        .map(|r: &Rejected| format!("{}: {}", r.reason.as_str(), r.detail))
        .collect();
    if decoded.rejected.len() > 5 {
        message.push(format!("and {} more", decoded.rejected.len() - 5));
    }
    Some((dropped, message.join("; ")))
}

/// Where a request came from and how it is encoded.
struct Origin<'a> {
    protocol: Protocol,
    peer: Option<SocketAddr>,
    path: &'a str,
    encoding: Encoding,
}

impl Shared {
    /// Reserves a slot, decodes, hands the batch on. The decode runs with the
    /// slot held, so a full channel refuses work before any is done. `dead_raw`
    /// gives the bytes for a dead letter when `raw` was not kept.
    fn accept(
        &self,
        from: Origin<'_>,
        raw: Bytes,
        decode: impl FnOnce(&[u8]) -> Result<Decoded, DecodeError>,
        dead_raw: impl FnOnce() -> Bytes,
    ) -> Result<Decoded, Refusal> {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => return Err(Refusal::Busy),
            Err(TrySendError::Closed(())) => return Err(Refusal::Closed),
        };
        let Origin {
            protocol,
            peer,
            path,
            encoding,
        } = from;
        let origin = match peer {
            Some(peer) => format!("{peer} {path}"),
            None => path.to_string(),
        };
        let decoded = match decode(&raw) {
            Ok(decoded) => decoded,
            Err(error) => {
                let raw = if raw.is_empty() { dead_raw() } else { raw };
                self.rejections
                    .message(&DeadLetter::new(protocol.source(), &origin, &error, &raw));
                return Err(Refusal::Invalid(error.to_string()));
            }
        };
        self.rejections
            .records(protocol.source(), &origin, &decoded.rejected);
        permit.send(Received {
            protocol,
            peer,
            encoding,
            decoded: decoded.clone(),
            raw,
        });
        Ok(decoded)
    }
}

// ---------------------------------------------------------------- gRPC

/// The three OTLP gRPC services over the shared state.
#[derive(Clone)]
struct Grpc(Arc<Shared>);

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo`,
/// `google.protobuf.Duration`: what an OTLP client reads in an error.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

impl Grpc {
    fn status(&self, refusal: Refusal) -> tonic::Status {
        match refusal {
            Refusal::Busy => {
                let secs = self.0.config.retry_after_secs;
                let message = format!("the engine is busy: retry in {secs} s");
                let retry = rpc::RetryInfo {
                    retry_delay: Some(rpc::Duration {
                        seconds: i64::from(secs),
                        nanos: 0,
                    }),
                };
                let details = rpc::Status {
                    code: tonic::Code::ResourceExhausted as i32,
                    message: message.clone(),
                    details: vec![rpc::Any {
                        type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                        value: retry.encode_to_vec(),
                    }],
                };
                tonic::Status::with_details(
                    tonic::Code::ResourceExhausted,
                    message,
                    details.encode_to_vec().into(),
                )
            }
            Refusal::Closed => {
                tonic::Status::unavailable("the engine is not taking telemetry (shutting down)")
            }
            Refusal::Invalid(m) | Refusal::Unsupported(m) => tonic::Status::invalid_argument(m),
            Refusal::TooLarge(m) => tonic::Status::resource_exhausted(m),
        }
    }

    /// Decodes a request on a blocking thread (decoding is CPU work) and hands it on.
    async fn export<R: prost::Message + 'static>(
        &self,
        request: tonic::Request<R>,
        path: &'static str,
        from_request: fn(&R) -> Result<Decoded, DecodeError>,
    ) -> Result<Decoded, tonic::Status> {
        let peer = request.remote_addr();
        let message = request.into_inner();
        let shared = self.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            let raw = if shared.config.keep_grpc_raw {
                Bytes::from(message.encode_to_vec())
            } else {
                Bytes::new()
            };
            let from = Origin {
                protocol: Protocol::Grpc,
                peer,
                path,
                encoding: Encoding::Proto,
            };
            shared.accept(
                from,
                raw,
                |_| from_request(&message),
                || Bytes::from(message.encode_to_vec()),
            )
        });
        match task.await {
            Ok(result) => result.map_err(|r| self.status(r)),
            Err(e) => Err(tonic::Status::internal(format!("decoding failed: {e}"))),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let decoded = Grpc::export(self, request, "/v1/traces", crate::spans::from_request).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: partial(&decoded).map(|(n, m)| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: m,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let decoded = Grpc::export(self, request, "/v1/logs", crate::logs::from_request).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: partial(&decoded).map(|(n, m)| ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: m,
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let decoded =
            Grpc::export(self, request, "/v1/metrics", crate::metrics::from_request).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&decoded).map(|(n, m)| ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: m,
            }),
        }))
    }
}

async fn serve_grpc(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<(), ReceiverError> {
    use tonic::codec::CompressionEncoding::Gzip;
    let limit = shared.config.max_body_bytes;
    let svc = Grpc(shared);
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            LogsServiceServer::new(svc.clone())
                .accept_compressed(Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            MetricsServiceServer::new(svc)
                .accept_compressed(Gzip)
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            wait_stop(stopped),
        )
        .await
        .map_err(|e| ReceiverError::Serve {
            protocol: "gRPC",
            addr,
            detail: e.to_string(),
        })
}

// ---------------------------------------------------------------- HTTP

/// Whether answers go back as protobuf or JSON (the request's content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Proto,
    Json,
}

fn http_refusal(refusal: Refusal, wire: Wire, retry_after: u32) -> Response {
    let (status, code, message) = match refusal {
        Refusal::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            format!("the engine is busy: retry in {retry_after} s"),
        ),
        Refusal::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "the engine is not taking telemetry (shutting down)".to_string(),
        ),
        Refusal::Invalid(m) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, m),
        Refusal::TooLarge(m) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::InvalidArgument,
            m,
        ),
        Refusal::Unsupported(m) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
            m,
        ),
    };
    let mut response = match wire {
        Wire::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "code": code as i32, "message": message }).to_string(),
        )
            .into_response(),
        Wire::Proto => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            rpc::Status {
                code: code as i32,
                message,
                details: Vec::new(),
            }
            .encode_to_vec(),
        )
            .into_response(),
    };
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The body, decompressed per `Content-Encoding`, within the size limit.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut out = Vec::new();
    let read = match encoding.as_str() {
        "" | "identity" => return Ok(body),
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Refusal::Invalid(format!("the gzip body does not decompress: {e}")))?,
        "zstd" => zstd::stream::read::Decoder::new(&body[..])
            .and_then(|d| d.take(limit as u64 + 1).read_to_end(&mut out))
            .map_err(|e| Refusal::Invalid(format!("the zstd body does not decompress: {e}")))?,
        other => {
            return Err(Refusal::Unsupported(format!(
                "Content-Encoding {other:?} is not supported: use gzip, zstd or none"
            )));
        }
    };
    if read > limit {
        return Err(Refusal::TooLarge(format!(
            "the body decompresses to more than {limit} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

fn content_wire(headers: &HeaderMap) -> Result<Wire, Refusal> {
    let ty = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ty
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Wire::Proto),
        "application/json" => Ok(Wire::Json),
        _ => Err(Refusal::Unsupported(format!(
            "Content-Type {ty:?} is not supported: use application/x-protobuf or application/json"
        ))),
    }
}

/// The OTLP/HTTP success answer, with a partial-success part when records were skipped.
fn http_success(table: Table, decoded: &Decoded, wire: Wire) -> Response {
    let partial = partial(decoded);
    match wire {
        Wire::Json => {
            let body = match &partial {
                None => serde_json::json!({}),
                Some((n, m)) => {
                    let key = match table {
                        Table::Spans => "rejectedSpans",
                        Table::Logs => "rejectedLogRecords",
                        Table::Metrics => "rejectedDataPoints",
                    };
                    serde_json::json!({ "partialSuccess": { key: n.to_string(), "errorMessage": m } })
                }
            };
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Wire::Proto => {
            let bytes = match (table, partial) {
                (Table::Spans, p) => ExportTraceServiceResponse {
                    partial_success: p.map(|(n, m)| ExportTracePartialSuccess {
                        rejected_spans: n,
                        error_message: m,
                    }),
                }
                .encode_to_vec(),
                (Table::Logs, p) => ExportLogsServiceResponse {
                    partial_success: p.map(|(n, m)| ExportLogsPartialSuccess {
                        rejected_log_records: n,
                        error_message: m,
                    }),
                }
                .encode_to_vec(),
                (Table::Metrics, p) => ExportMetricsServiceResponse {
                    partial_success: p.map(|(n, m)| ExportMetricsPartialSuccess {
                        rejected_data_points: n,
                        error_message: m,
                    }),
                }
                .encode_to_vec(),
            };
            ([(header::CONTENT_TYPE, "application/x-protobuf")], bytes).into_response()
        }
    }
}

async fn http_export(
    table: Table,
    shared: Arc<Shared>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let retry_after = shared.config.retry_after_secs;
    let wire = match content_wire(&headers) {
        Ok(wire) => wire,
        Err(refusal) => return http_refusal(refusal, Wire::Json, retry_after),
    };
    let path = format!(
        "/v1/{}",
        match table {
            Table::Spans => "traces",
            Table::Logs => "logs",
            Table::Metrics => "metrics",
        }
    );
    let body = match decompress(&headers, body, shared.config.max_body_bytes) {
        Ok(body) => body,
        Err(refusal) => return http_refusal(refusal, wire, retry_after),
    };
    let encoding = match wire {
        Wire::Proto => Encoding::Proto,
        Wire::Json => Encoding::Json,
    };
    // Decoding is CPU work: keep it off the I/O threads.
    let task = tokio::task::spawn_blocking(move || {
        let from = Origin {
            protocol: Protocol::Http,
            peer: Some(peer),
            path: &path,
            encoding,
        };
        shared.accept(
            from,
            body,
            |raw| {
                let decoded = match wire {
                    Wire::Proto => decode_proto(table, raw)?,
                    Wire::Json => decode_json_as(Some(table), raw)?,
                };
                if decoded.table != table {
                    return Err(DecodeError::new(
                        Reason::WrongType,
                        format!(
                            "a {path} request holds {}, not {}",
                            decoded.table.name(),
                            table.name()
                        ),
                    ));
                }
                Ok(decoded)
            },
            Bytes::new,
        )
    });
    match task.await {
        Ok(Ok(decoded)) => http_success(table, &decoded, wire),
        Ok(Err(refusal)) => http_refusal(refusal, wire, retry_after),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("decoding failed: {e}"),
        )
            .into_response(),
    }
}

fn http_router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body_bytes;
    let route = |table: Table| {
        post(
            move |State(shared): State<Arc<Shared>>,
                  ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  headers: HeaderMap,
                  body: Bytes| http_export(table, shared, peer, headers, body),
        )
    };
    Router::new()
        .route("/v1/traces", route(Table::Spans))
        .route("/v1/logs", route(Table::Logs))
        .route("/v1/metrics", route(Table::Metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<(), ReceiverError> {
    let app = http_router(shared).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(wait_stop(stopped))
        .await
        .map_err(|e| ReceiverError::Serve {
            protocol: "HTTP",
            addr,
            detail: e.to_string(),
        })
}
