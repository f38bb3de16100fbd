//! Helpers for the sinks' tests: sample outputs, and a real HTTP server on
//! 127.0.0.1 that takes requests and holds its answers until told to answer
//! (a hung peer, as a faulty network or a stuck Alertmanager is).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, watch};

use crate::alerts::{Alert, State, rfc3339};
use crate::evaluator::Output;
use crate::kpi::KpiValue;

/// 2026-01-15T10:00:00Z
pub const T0: i64 = 1_768_471_200_000_000_000;

/// An alert of `test.flood` for 203.0.113.9, window [T0, T0 + 60 s).
pub fn sample_alert(state: State) -> Alert {
    client_alert("203.0.113.9", state)
}

/// The same for another client address.
pub fn client_alert(client: &str, state: State) -> Alert {
    let end = T0 + 60_000_000_000;
    Alert {
        rule_id: "test.flood".into(),
        severity: "high".into(),
        state,
        entity: BTreeMap::from([("client.address".to_string(), client.to_string())]),
        window_start: rfc3339(T0),
        window_end: rfc3339(end),
        value: serde_json::json!(4000),
        tags: vec!["T1498".into()],
        summary: format!("4000 requests in one minute from {client}"),
        trace_ids: vec!["0af7651916cd43dd8448eb211c80319c".into()],
        at_ns: end,
        rule_version: "0123456789abcdef".into(),
        incident_start_ns: Some(T0),
        first_seen_ns: Some(T0 + 5_000_000_000),
        detected_at_ns: Some(end + 5_000_000_000),
        notes: None,
    }
}

pub fn sample_kpi() -> Output {
    Output::Kpi(KpiValue {
        kpi: "orders".into(),
        window_start: rfc3339(T0),
        window_end: rfc3339(T0 + 60_000_000_000),
        dimensions: BTreeMap::new(),
        value: serde_json::json!(3),
        at_ns: T0 + 60_000_000_000,
    })
}

/// A real HTTP/1.1 server on 127.0.0.1 that reads every request and holds
/// its answer until [`HeldServer::answer`]; then it answers the held requests
/// and the later ones at once: `503` for the first `fail_first`, `200` after.
pub struct HeldServer {
    pub addr: SocketAddr,
    /// the body of every request, as it arrives (before it is answered)
    pub requests: mpsc::UnboundedReceiver<Value>,
    answering: watch::Sender<bool>,
}

impl HeldServer {
    pub async fn start(fail_first: u32) -> HeldServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (answering, answer_rx) = watch::channel(false);
        let failures = Arc::new(AtomicU32::new(fail_first));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let requests = requests_tx.clone();
                let mut answer = answer_rx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let Some(body) = read_request(&mut read).await else {
                            return;
                        };
                        let _ = requests.send(body);
                        if answer.wait_for(|a| *a).await.is_err() {
                            return;
                        }
                        let failed = failures
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failed {
                            "503 Service Unavailable"
                        } else {
                            "200 OK"
                        };
                        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if write.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HeldServer {
            addr,
            requests,
            answering,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answers: the held requests and every later one.
    pub fn answer(&self) {
        self.answering.send_replace(true);
    }
}

/// Reads one request's head and body; the body as JSON (null if it is not).
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Option<Value> {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(serde_json::from_slice(&body).unwrap_or(Value::Null))
}
