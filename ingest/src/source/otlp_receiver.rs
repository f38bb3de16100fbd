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
//! - **Budget**: both protocols decode the request's protobuf bytes with the
//!   wire reader ([`decode_proto`]; gRPC messages are taken as bytes, never as
//!   prost structs), within the decode budget of [`crate::decode`]: a request
//!   that would decode to more than [`crate::decode::budget_for`] its size is
//!   refused part way with `413` / `RESOURCE_EXHAUSTED` (`over_budget`).
//! - **Backpressure**, by items and by bytes: decoded batches go into a bounded
//!   `tokio::sync::mpsc` channel, and every request holds its share of
//!   [`ReceiverConfig::max_bytes_in_flight`] (its budget while it is decoded,
//!   then what its batch really takes, until the consumer drops the
//!   [`Received`]). A slot, the bytes and one of
//!   [`ReceiverConfig::max_concurrent_requests`] decoders are reserved *before*
//!   decoding; when one is short the answer is `429 Too Many Requests` with
//!   `Retry-After`, or gRPC `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo`
//!   detail, both retryable by OTLP exporters (counted as `busy`). Nothing is
//!   ever queued beyond the channel. When the consumer is gone the answer is
//!   `503` / `UNAVAILABLE`.
//! - **Connections**: at most [`ReceiverConfig::max_connections`] open per
//!   listener (more are closed at once), each closed after
//!   [`ReceiverConfig::idle_timeout`] without a byte moving or (HTTP) after
//!   [`ReceiverConfig::header_timeout`] without a request's headers complete,
//!   a request not answered within [`ReceiverConfig::request_timeout`] is `408` /
//!   `DEADLINE_EXCEEDED`, and every socket has `TCP_NODELAY` (see
//!   `connections.rs`). Counted as `connection`.
//! - **Rejections and refusals** are counted (`otelguard_rejected_total` in the
//!   engine's `/metrics`), logged once per reason, and (messages that do not
//!   decode) dead-lettered through [`Rejections`] (source `otlp_http` or
//!   `otlp_grpc`, origin the client's address and the path). Messages sent
//!   back are cut to [`MAX_ANSWER_CHARS`] characters.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ingest::RejectCounts;
//! use ingest::write::dead_letter::Rejections;
//! use ingest::source::otlp_receiver::{self, ReceiverConfig};
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

use super::connections;

use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::decode::{budget_for, cut_text, decode_json_as, decode_proto};
use crate::write::capture_writer::Encoding;
use crate::write::dead_letter::{DeadLetter, Rejections};
use crate::{DecodeError, Decoded, Reason, Rejected, Table};
use connections::{Guarded, Limits, Refused};

/// Messages sent back to clients (errors, partial success) are cut to this
/// many characters: a hostile request must not be echoed back whole.
pub const MAX_ANSWER_CHARS: usize = 200;

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
    /// Keep each gRPC request's protobuf bytes in [`Received::raw`] (for
    /// captures). HTTP bodies are always kept, as received.
    pub keep_grpc_raw: bool,
    /// Open connections per listener; more are closed at once (default 128).
    pub max_connections: usize,
    /// A connection on which no byte moves for this long is closed (default 30 s).
    pub idle_timeout: Duration,
    /// A request must be read, decoded and answered within this (default 60 s).
    pub request_timeout: Duration,
    /// HTTP: a request's headers must have arrived this long after its
    /// first byte (default 10 s).
    pub header_timeout: Duration,
    /// Requests decoded at once, both protocols together (default 8).
    pub max_concurrent_requests: usize,
    /// Bytes held by requests being decoded (their budget) and by decoded
    /// batches not yet taken by the consumer (default 512 MiB).
    pub max_bytes_in_flight: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            grpc: DEFAULT_GRPC_ADDR.parse().ok(),
            http: DEFAULT_HTTP_ADDR.parse().ok(),
            max_body_bytes: 16 << 20,
            retry_after_secs: 1,
            keep_grpc_raw: false,
            max_connections: 128,
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_concurrent_requests: 8,
            max_bytes_in_flight: 512 << 20,
        }
    }
}

impl ReceiverConfig {
    /// The connection limits of a listener.
    fn limits(&self, header_timeout: Option<Duration>) -> Limits {
        Limits {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            header_timeout,
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
    /// the request body, decompressed (for gRPC: the protobuf message if
    /// [`ReceiverConfig::keep_grpc_raw`], else empty)
    pub raw: Bytes,
    /// its share of [`ReceiverConfig::max_bytes_in_flight`], given back when
    /// the last clone is dropped
    in_flight: Option<Arc<OwnedSemaphorePermit>>,
}

impl Received {
    /// The bytes this request holds of [`ReceiverConfig::max_bytes_in_flight`].
    pub fn bytes_in_flight(&self) -> usize {
        self.in_flight
            .as_ref()
            .map_or(0, |p| p.num_permits() * IN_FLIGHT_UNIT)
    }
}

/// Bytes in flight are counted in KiB (a semaphore's permits).
const IN_FLIGHT_UNIT: usize = 1024;

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
    /// [`ReceiverConfig::max_bytes_in_flight`], in KiB
    in_flight: Arc<Semaphore>,
    /// [`ReceiverConfig::max_concurrent_requests`]
    decoding: Arc<Semaphore>,
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
        rejections: rejections.clone(),
        config: config.clone(),
        in_flight: Arc::new(Semaphore::new(in_flight_units(&config))),
        decoding: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
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
        let listener = Guarded::new(
            listener,
            config.limits(None),
            refused(&rejections, Protocol::Grpc),
        );
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
        let header_timeout = Some(config.header_timeout);
        let listener = Guarded::new(
            listener,
            config.limits(header_timeout),
            refused(&rejections, Protocol::Http),
        );
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

/// Connections closed and requests given up on count as `connection`.
fn refused(rejections: &Arc<Rejections>, protocol: Protocol) -> Refused {
    let rejections = rejections.clone();
    Arc::new(move |detail: &str, what: &str| {
        rejections.refused(protocol.source(), Reason::Connection, detail, what);
    })
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
/// records dropped and a message listing the first rejections, cut to
/// [`MAX_ANSWER_CHARS`] each.
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
        .map(|r: &Rejected| {
            cut_text(
                &format!("{}: {}", r.reason.as_str(), r.detail),
                MAX_ANSWER_CHARS,
            )
            .into_owned()
        })
        .collect();
    if decoded.rejected.len() > 5 {
        message.push(format!("and {} more", decoded.rejected.len() - 5));
    }
    Some((dropped, message.join("; ")))
}

/// The protobuf `Export*ServiceResponse` of `table`, with its partial success.
fn proto_answer(table: Table, decoded: &Decoded) -> Vec<u8> {
    match (table, partial(decoded)) {
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
    }
}

/// Where a request came from and how it is encoded.
struct Origin<'a> {
    protocol: Protocol,
    peer: Option<SocketAddr>,
    path: &'a str,
    encoding: Encoding,
}

impl Shared {
    /// Reserves a slot in the channel, a decoder and the request's budget of
    /// bytes in flight, decodes, hands the batch on. The decode runs with all
    /// three held, so a busy receiver refuses work before any is done. `raw`
    /// goes into [`Received::raw`] when `keep_raw`.
    fn accept(
        &self,
        from: Origin<'_>,
        raw: Bytes,
        keep_raw: bool,
        decode: impl FnOnce(&[u8]) -> Result<Decoded, DecodeError>,
    ) -> Result<Decoded, Refusal> {
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
        let busy = |why: &str| {
            self.rejections.refused(
                protocol.source(),
                Reason::Busy,
                &format!("{origin}: {why}"),
                "turned a request away for now (retryable)",
            );
            Refusal::Busy
        };
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => return Err(busy("the queue is full")),
            Err(TrySendError::Closed(())) => return Err(Refusal::Closed),
        };
        let Ok(_decoder) = self.decoding.try_acquire() else {
            return Err(busy("as many requests as allowed are being decoded"));
        };
        let budget = budget_for(raw.len())
            .div_ceil(IN_FLIGHT_UNIT)
            .min(in_flight_units(&self.config));
        let Ok(mut bytes) = self
            .in_flight
            .clone()
            .try_acquire_many_owned(u32::try_from(budget).unwrap_or(u32::MAX))
        else {
            return Err(busy("too many bytes in flight"));
        };
        let decoded = match decode(&raw) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.rejections
                    .message(&DeadLetter::new(protocol.source(), &origin, &error, &raw));
                let message = cut_text(&error.to_string(), MAX_ANSWER_CHARS).into_owned();
                return Err(match error.reason {
                    Reason::OverBudget => Refusal::TooLarge(message),
                    _ => Refusal::Invalid(message),
                });
            }
        };
        self.rejections
            .records(protocol.source(), &origin, &decoded.rejected);
        let raw = if keep_raw { raw } else { Bytes::new() };
        // hold what the batch really takes, no longer its whole budget
        let held = (decoded.batch.get_array_memory_size() + raw.len())
            .div_ceil(IN_FLIGHT_UNIT)
            .max(1);
        if held < bytes.num_permits() {
            drop(bytes.split(bytes.num_permits() - held));
        }
        permit.send(Received {
            protocol,
            peer,
            encoding,
            decoded: decoded.clone(),
            raw,
            in_flight: Some(Arc::new(bytes)),
        });
        Ok(decoded)
    }
}

/// [`ReceiverConfig::max_bytes_in_flight`] in units of the semaphore.
fn in_flight_units(config: &ReceiverConfig) -> usize {
    (config.max_bytes_in_flight / IN_FLIGHT_UNIT).clamp(1, Semaphore::MAX_PERMITS)
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

    /// Decodes a request's bytes on a blocking thread (decoding is CPU work)
    /// and hands it on; the answer's bytes.
    async fn export(
        &self,
        table: Table,
        request: tonic::Request<Bytes>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let peer = request.remote_addr();
        let raw = request.into_inner();
        let shared = self.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            let from = Origin {
                protocol: Protocol::Grpc,
                peer,
                path: table_path(table),
                encoding: Encoding::Proto,
            };
            let keep = shared.config.keep_grpc_raw;
            shared
                .accept(from, raw, keep, |bytes| decode_proto(table, bytes))
                .map(|decoded| proto_answer(table, &decoded))
        });
        match task.await {
            Ok(result) => result.map_err(|r| self.status(r)),
            Err(e) => Err(tonic::Status::internal(format!("decoding failed: {e}"))),
        }
    }
}

/// The OTLP path of a table's export (`/v1/traces`...), as OTLP/HTTP names it.
fn table_path(table: Table) -> &'static str {
    match table {
        Table::Spans => "/v1/traces",
        Table::Logs => "/v1/logs",
        Table::Metrics => "/v1/metrics",
    }
}

/// A gRPC message as its bytes, undecoded: the receiver decodes OTLP with the
/// wire reader, within its budget, not into prost structs first. Answers
/// are protobuf already encoded. Also a client's codec, to send bytes as
/// they are (tests of hostile input).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One of the three OTLP gRPC services.
trait Signal: Send + Sync + 'static {
    const NAME: &'static str;
    const TABLE: Table;
}

struct Traces;
struct Logs;
struct Metrics;

impl Signal for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const TABLE: Table = Table::Spans;
}

impl Signal for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const TABLE: Table = Table::Logs;
}

impl Signal for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const TABLE: Table = Table::Metrics;
}

/// The gRPC service of one signal: `Export` of its `NAME`, as bytes.
struct Service<S> {
    grpc: Grpc,
    signal: PhantomData<S>,
}

impl<S> Service<S> {
    fn new(grpc: &Grpc) -> Self {
        Service {
            grpc: grpc.clone(),
            signal: PhantomData,
        }
    }
}

impl<S> Clone for Service<S> {
    fn clone(&self) -> Self {
        Service {
            grpc: self.grpc.clone(),
            signal: PhantomData,
        }
    }
}

impl<S: Signal> tonic::server::NamedService for Service<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: Signal> tonic::server::UnaryService<Bytes> for Service<S> {
    type Response = Vec<u8>;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Vec<u8>>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let grpc = self.grpc.clone();
        Box::pin(async move {
            grpc.export(S::TABLE, request)
                .await
                .map(tonic::Response::new)
        })
    }
}

impl<S: Signal, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Service<S>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let service = self.clone();
        let export = request.uri().path() == format!("/{}/Export", S::NAME);
        let limit = service.grpc.0.config.max_body_bytes;
        Box::pin(async move {
            if !export {
                return Ok(tonic::Status::unimplemented("only Export is served").into_http());
            }
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(tonic::codec::CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(service, request).await)
        })
    }
}

async fn serve_grpc(
    listener: Guarded,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<(), ReceiverError> {
    let config = shared.config.clone();
    let grpc = Grpc(shared);
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let (connection, _) = listener.next().await;
        Some((Ok::<_, std::io::Error>(connection), listener))
    });
    let streams = u32::try_from(config.max_concurrent_requests.max(1)).unwrap_or(u32::MAX);
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .max_concurrent_streams(streams)
        .add_service(Service::<Traces>::new(&grpc))
        .add_service(Service::<Logs>::new(&grpc))
        .add_service(Service::<Metrics>::new(&grpc))
        .serve_with_incoming_shutdown(incoming, wait_stop(stopped))
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
    match wire {
        Wire::Json => {
            let body = match partial(decoded) {
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
        Wire::Proto => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            proto_answer(table, decoded),
        )
            .into_response(),
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
    let path = table_path(table);
    let body = match decompress(&headers, body, shared.config.max_body_bytes) {
        Ok(body) => body,
        Err(refusal) => {
            if let Refusal::TooLarge(why) = &refusal {
                shared.rejections.refused(
                    Protocol::Http.source(),
                    Reason::Oversized,
                    &format!("{peer} {path}: {why}"),
                    "refused a body too large",
                );
            }
            return http_refusal(refusal, wire, retry_after);
        }
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
            path,
            encoding,
        };
        shared.accept(from, body, true, |raw| {
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
        })
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
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            within_timeout,
        ))
        .with_state(shared)
}

/// A request (its body read, decoded and answered) not done within
/// [`ReceiverConfig::request_timeout`] is `408`.
async fn within_timeout(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refused = refused(&shared.rejections, Protocol::Http);
    connections::answer_within(shared.config.request_timeout, refused, peer, request, next).await
}

async fn serve_http(
    listener: Guarded,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<(), ReceiverError> {
    use axum::serve::ListenerExt as _;
    let app = http_router(shared).into_make_service_with_connect_info::<SocketAddr>();
    // (`tap_io` does nothing here: it lets axum give handlers the peer's SocketAddr)
    axum::serve(listener.tap_io(|_| {}), app)
        .with_graceful_shutdown(wait_stop(stopped))
        .await
        .map_err(|e| ReceiverError::Serve {
            protocol: "HTTP",
            addr,
            detail: e.to_string(),
        })
}
