//! Sockets of an HTTP or gRPC listener: a cap on open connections, idle and
//! header timeouts, a request timeout, and `TCP_NODELAY` on every accepted
//! socket. The OTLP receiver's listeners use them, and so does the engine's
//! API (`engine::api`): one implementation for every listener.
//!
//! - **Cap**: at most [`Limits::max_connections`] are open. A connection
//!   accepted at the cap sheds the one on which bytes moved least recently
//!   (an idle keep-alive, or an attacker's idle socket), so a new client is
//!   served and a connection moving bytes is not touched; when none lets go
//!   within a second, the new one is closed instead. Both reported to the
//!   listener's [`Refused`], logged once.
//! - **Idle timeout**: a connection on which no byte moves, in either
//!   direction, for [`Limits::idle_timeout`] is closed: an idle keep-alive
//!   connection, a client that stops sending half way through its headers or
//!   body, or one that does not read its answer. Reported.
//! - **Header timeout** (HTTP/1 listeners): a request's headers must have
//!   arrived [`Limits::header_timeout`] after its first byte, or the
//!   connection is closed; a client that drips its headers a byte at a time
//!   (which the idle timeout alone lets through) holds its place no longer.
//!   (hyper has such a timeout, but `axum::serve` gives it no timer.)
//! - **Request timeout**: [`answer_within`], a middleware: a request not read
//!   and answered within its time is `408`. Reported.
//! - **No delay**: small answers (an OTLP export's) are sent at once, not held
//!   back by Nagle's algorithm waiting for the client's delayed ACK.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// open connections; one more sheds the longest idle
    pub max_connections: usize,
    /// a connection on which no byte moves for this long is closed
    pub idle_timeout: Duration,
    /// HTTP/1 only: a request's headers must have arrived this long after
    /// its first byte (`None` for HTTP/2 listeners: gRPC)
    pub header_timeout: Option<Duration>,
}

/// Told of every connection a listener closes, and of every request
/// [`answer_within`] gives up on: `(detail, what)`, the detail naming the
/// peer, the what a short sentence to log once.
pub type Refused = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Accepts connections within the cap.
pub struct Guarded {
    listener: TcpListener,
    open: Arc<Semaphore>,
    /// the open connections, to shed the longest idle at the cap
    slots: Mutex<Vec<Weak<Slot>>>,
    started: Instant,
    limits: Limits,
    refused: Refused,
}

/// What the listener knows of an open connection.
struct Slot {
    /// when a byte last moved, in milliseconds since the listener started
    moved: AtomicU64,
    /// set to make the connection fail at its next poll
    shed: AtomicBool,
    waker: AtomicWaker,
}

impl Guarded {
    /// Guards `listener` within `limits`, telling `refused` of every
    /// connection it closes.
    pub fn new(listener: TcpListener, limits: Limits, refused: Refused) -> Guarded {
        Guarded {
            listener,
            open: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            slots: Mutex::new(Vec::new()),
            started: Instant::now(),
            limits,
            refused,
        }
    }

    /// The next connection within the cap. Connections over the cap are
    /// closed; accept errors (out of file descriptors) are logged once and
    /// waited out.
    pub async fn next(&self) -> (Connection, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.refused(
                        &format!("accepting: {e}"),
                        "cannot accept a connection; waiting a moment",
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = match self.open.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.shed_one(peer);
                    let wait = tokio::time::timeout(
                        Duration::from_secs(1),
                        self.open.clone().acquire_owned(),
                    );
                    match wait.await {
                        Ok(Ok(permit)) => permit,
                        _ => {
                            drop(stream);
                            self.refused(
                                &format!("{peer}: over the cap of open connections"),
                                "closed a new connection: too many open",
                            );
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let slot = Arc::new(Slot {
                moved: AtomicU64::new(self.now_ms()),
                shed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            });
            {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                slots.retain(|s| s.strong_count() > 0);
                slots.push(Arc::downgrade(&slot));
            }
            let now = Instant::now();
            let connection = Connection {
                stream,
                peer,
                slot,
                started: self.started,
                limits: self.limits,
                last_moved: now,
                request: Request::Between,
                deadline: Box::pin(tokio::time::sleep_until(now + self.limits.idle_timeout)),
                _permit: permit,
                refused: self.refused.clone(),
            };
            return (connection, peer);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Makes the connection idle longest fail, to make room for `peer`'s.
    fn shed_one(&self, peer: SocketAddr) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = slots
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.shed.load(Ordering::Relaxed))
            .min_by_key(|s| s.moved.load(Ordering::Relaxed));
        if let Some(slot) = oldest {
            slot.shed.store(true, Ordering::Relaxed);
            slot.waker.wake();
            self.refused(
                &format!("shed the longest idle connection to make room for {peer}"),
                "closed the longest idle connection: the cap of open connections was reached",
            );
        }
    }

    fn refused(&self, detail: &str, what: &str) {
        (self.refused)(detail, what);
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Guarded::local_addr(self)
    }
}

/// Where an HTTP/1 connection is in its request, for the header timeout.
#[derive(Debug, Clone, Copy)]
enum Request {
    /// no request begun since the last answer
    Between,
    /// reading headers since this instant; `matched` bytes of the blank
    /// line (`\r\n\r\n`) that ends them seen so far
    Headers { since: Instant, matched: u8 },
    /// headers read: the body and the answer are the request timeout's
    Body,
}

const END_OF_HEADERS: &[u8; 4] = b"\r\n\r\n";

/// An accepted socket: it holds its place under the cap until dropped, and
/// fails with `TimedOut` once no byte has moved for the idle timeout, or a
/// request's headers took longer than the header timeout.
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    started: Instant,
    limits: Limits,
    last_moved: Instant,
    request: Request,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    refused: Refused,
}

impl Connection {
    /// Bytes moved; `read` holds those read (empty for a write).
    fn moved(&mut self, read: &[u8], wrote: bool) {
        let now = Instant::now();
        self.last_moved = now;
        let ms = u64::try_from((now - self.started).as_millis()).unwrap_or(u64::MAX);
        self.slot.moved.store(ms, Ordering::Relaxed);
        if self.limits.header_timeout.is_some() {
            if wrote {
                self.request = Request::Between;
            } else if !read.is_empty() {
                if let Request::Between = self.request {
                    self.request = Request::Headers {
                        since: now,
                        matched: 0,
                    };
                }
                if let Request::Headers { matched, .. } = &mut self.request {
                    for &b in read {
                        *matched = if b == END_OF_HEADERS[usize::from(*matched)] {
                            *matched + 1
                        } else {
                            u8::from(b == b'\r')
                        };
                        if usize::from(*matched) == END_OF_HEADERS.len() {
                            self.request = Request::Body;
                            break;
                        }
                    }
                }
            }
        }
        let deadline = self
            .headers_due()
            .map_or(now + self.limits.idle_timeout, |due| {
                due.min(now + self.limits.idle_timeout)
            });
        self.deadline.as_mut().reset(deadline);
    }

    /// When the headers being read are due, if some are.
    fn headers_due(&self) -> Option<Instant> {
        match (self.request, self.limits.header_timeout) {
            (Request::Headers { since, .. }, Some(limit)) => Some(since + limit),
            _ => None,
        }
    }

    /// `Ready(Err)` when shed, or once the idle timeout has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.slot.waker.register(cx.waker());
        if self.slot.shed.load(Ordering::Relaxed) {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "shed to make room for a new connection",
            ));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let idle = self.limits.idle_timeout;
                let (detail, what, error) = match self.headers_due() {
                    Some(due) if due <= self.last_moved + idle => (
                        format!(
                            "{}: headers not complete within {:?}",
                            self.peer,
                            self.limits.header_timeout.unwrap_or_default()
                        ),
                        "closed a connection that sent its headers too slowly",
                        "the request's headers took too long",
                    ),
                    _ => (
                        format!("{}: idle for {idle:?}", self.peer),
                        "closed an idle connection",
                        "no byte moved for the idle timeout",
                    ),
                };
                (self.refused)(&detail, what);
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, error))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved(&buf.filled()[before..], false);
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                let wrote = matches!(r, Ok(n) if n > 0);
                this.moved(&[], wrote);
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(feature = "receiver")]
impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Runs a request's handler; a request not read and answered within
/// `timeout` is `408`, and told to `refused`. A middleware for every HTTP
/// listener:
///
/// ```text
/// router.layer(axum::middleware::from_fn(move |ConnectInfo(peer), request, next| {
///     answer_within(timeout, refused.clone(), peer, request, next)
/// }))
/// ```
pub async fn answer_within(
    timeout: Duration,
    refused: Refused,
    peer: SocketAddr,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            refused(
                &format!("{peer} {path}: not done within {timeout:?}"),
                "gave up on a slow request",
            );
            (
                StatusCode::REQUEST_TIMEOUT,
                format!("the request was not read and answered within {timeout:?}"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn limits() -> Limits {
        Limits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(30),
            header_timeout: Some(Duration::from_millis(300)),
        }
    }

    fn counting() -> (Refused, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let counted = n.clone();
        let refused: Refused = Arc::new(move |_: &str, _: &str| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        (refused, n)
    }

    #[tokio::test]
    async fn accepted_sockets_have_no_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let guarded = Guarded::new(listener, limits(), counting().0);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (connection, _) = guarded.next().await;
        assert!(connection.stream.nodelay().expect("nodelay"));
    }

    /// Reads from the server's side of a connection until it fails.
    async fn serve_until_closed(mut connection: Connection) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = connection.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\r\n\r\n") {
                connection.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await?;
            }
        }
    }

    /// A client's socket, the server's side served by [`serve_until_closed`],
    /// and the count of what the listener closed.
    async fn one_connection() -> (
        TcpStream,
        tokio::task::JoinHandle<io::Result<Vec<u8>>>,
        Arc<AtomicUsize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (refused, count) = counting();
        let guarded = Guarded::new(listener, limits(), refused);
        let client = TcpStream::connect(addr).await.expect("connect");
        let (connection, _) = guarded.next().await;
        (client, tokio::spawn(serve_until_closed(connection)), count)
    }

    #[tokio::test]
    async fn headers_dripped_a_byte_at_a_time_are_cut_off() {
        let (mut client, server, count) = one_connection().await;
        // bytes keep moving (well within the idle timeout), the headers never end
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if client.write_all(&[*b]).await.is_err() || server.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let error = server.await.expect("task").expect_err("closed");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn requests_whose_headers_arrive_in_time_are_served_however_long_the_connection_lives() {
        let (mut client, server, count) = one_connection().await;
        let mut answer = [0u8; 19];
        // five requests over a second: more than the header timeout in all
        for _ in 0..5 {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            client.read_exact(&mut answer).await.expect("answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(client);
        server.await.expect("task").expect("no timeout");
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_request_not_answered_in_time_is_408_and_told() {
        use axum::extract::ConnectInfo;
        use axum::serve::ListenerExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (refused, count) = counting();
        let timeout_refused = refused.clone();
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|| tokio::time::sleep(Duration::from_secs(5))),
            )
            .layer(axum::middleware::from_fn(
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>, request, next| {
                    let timeout = Duration::from_millis(100);
                    answer_within(timeout, timeout_refused.clone(), peer, request, next)
                },
            ))
            .into_make_service_with_connect_info::<SocketAddr>();
        let guarded = Guarded::new(listener, limits(), refused);
        tokio::spawn(async move { axum::serve(guarded.tap_io(|_| {}), app).await });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
