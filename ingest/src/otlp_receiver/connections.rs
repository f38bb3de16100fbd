//! The receiver's sockets: a cap on open connections, an idle timeout, and
//! `TCP_NODELAY` on every accepted socket, for both listeners.
//!
//! - **Cap**: at most [`ReceiverConfig::max_connections`] are open. A
//!   connection accepted at the cap sheds the one on which bytes moved least
//!   recently (an idle keep-alive, or an attacker's idle socket), so a new
//!   client is served and a connection moving bytes is not touched; when none
//!   lets go within a second, the new one is closed instead. Both counted as
//!   [`Reason::Connection`], logged once.
//! - **Idle timeout**: a connection on which no byte moves, in either
//!   direction, for [`ReceiverConfig::idle_timeout`] is closed: an idle
//!   keep-alive connection, a client that stops sending half way through its
//!   headers or body, or one that does not read its answer. Counted as
//!   [`Reason::Connection`].
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

use super::{Protocol, ReceiverConfig};
use crate::Reason;
use crate::dead_letter::Rejections;

/// Accepts connections within the cap.
pub(crate) struct Guarded {
    listener: TcpListener,
    open: Arc<Semaphore>,
    /// the open connections, to shed the longest idle at the cap
    slots: Mutex<Vec<Weak<Slot>>>,
    started: Instant,
    idle: Duration,
    protocol: Protocol,
    rejections: Arc<Rejections>,
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
    pub fn new(
        listener: TcpListener,
        config: &ReceiverConfig,
        protocol: Protocol,
        rejections: Arc<Rejections>,
    ) -> Guarded {
        Guarded {
            listener,
            open: Arc::new(Semaphore::new(config.max_connections.max(1))),
            slots: Mutex::new(Vec::new()),
            started: Instant::now(),
            idle: config.idle_timeout,
            protocol,
            rejections,
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
            let connection = Connection {
                stream,
                peer,
                slot,
                started: self.started,
                idle: self.idle,
                deadline: Box::pin(tokio::time::sleep(self.idle)),
                _permit: permit,
                protocol: self.protocol,
                rejections: self.rejections.clone(),
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
        self.rejections
            .refused(self.protocol.source(), Reason::Connection, detail, what);
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

/// An accepted socket: it holds its place under the cap until dropped, and
/// fails with `TimedOut` once no byte has moved for the idle timeout.
pub(crate) struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    started: Instant,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    protocol: Protocol,
    rejections: Arc<Rejections>,
}

impl Connection {
    fn moved(&mut self) {
        let now = Instant::now();
        self.deadline.as_mut().reset(now + self.idle);
        let ms = u64::try_from((now - self.started).as_millis()).unwrap_or(u64::MAX);
        self.slot.moved.store(ms, Ordering::Relaxed);
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
                self.rejections.refused(
                    self.protocol.source(),
                    Reason::Connection,
                    &format!("{}: idle for {:?}", self.peer, self.idle),
                    "closed an idle connection",
                );
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no byte moved for {:?}", self.idle),
                ))
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
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
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
                this.moved();
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

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RejectCounts;

    #[tokio::test]
    async fn accepted_sockets_have_no_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rejections = Arc::new(Rejections::new(Arc::new(RejectCounts::default())));
        let guarded = Guarded::new(
            listener,
            &ReceiverConfig::default(),
            Protocol::Http,
            rejections,
        );
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (connection, _) = guarded.next().await;
        assert!(connection.stream.nodelay().expect("nodelay"));
    }
}
