//! The pipeline under faults, end to end: a sender posts spans to the local
//! stack's Collector (OTLP/HTTP) without pause, the Collector writes them to
//! Kafka, and `engine run --kafka` reads the Collector's topics. In the
//! middle of the run the Collector is killed with SIGKILL and started again,
//! then the Kafka broker is stopped for 30 s and started again. After both
//! return the engine resumes, and every span the Collector acknowledged is
//! counted by the engine: nothing accepted is lost on the way (the
//! Collector's persistent sending queue, compose/README.md "What survives
//! what"; the engine's suspended source, ARCHITECTURE.md "Idle is not absent").
//!
//! The engine counts with a KPI of the test's own: distinct span ids per
//! 10-second window from the run's own client address (a marker of letters,
//! which the Collector's redaction leaves alone), so that a span the
//! Collector sends twice after its kill counts once. Spans in requests that
//! got no clear answer (a timeout) may or may not be in; refused ones
//! (connection refused while the Collector is down) are not.
//!
//! It stops the shared stack's Collector and broker: its own test binary,
//! and a guard starts them again however it ends.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::engine::address_after;
use e2e::faults::{Restart, Schema, drain, metric, terminate, wait_metric};
use e2e::kafka::BROKERS;
use serde_json::{Value, json};

const COLLECTOR: &str = "http://127.0.0.1:4318/v1/traces";
/// Spans in each request, and requests a second.
const SPANS_PER_REQUEST: u64 = 20;
const REQUESTS_PER_S: u64 = 10;
/// How long the broker stays away.
const BROKER_AWAY: Duration = Duration::from_secs(30);

/// The test's KPI: distinct spans from the run's address per 10 s.
fn kpi(marker: &str) -> String {
    format!(
        "/*\nkpi = \"e2e_pipeline_spans\"\ntitle = \"The pipeline test's spans\"\nwindow = \"10s\"\n\
         dimensions = [\"client.address\"]\nvalue = \"spans\"\n*/\n\
         SELECT window_start, window_end, client_address, count(DISTINCT span_id) AS spans\n\
         FROM spans WHERE client_address = '{marker}'\n\
         GROUP BY window_start, window_end, client_address\n"
    )
}

/// What the sender has done: the span numbers of each answer.
#[derive(Default)]
struct Sent {
    acknowledged: Vec<u64>,
    /// the end time (ns) of every span sent, by its number
    ends: std::collections::BTreeMap<u64, i64>,
    /// refused for sure: no connection, or an HTTP error status
    refused: Vec<u64>,
    /// no clear answer (a timeout, a cut connection, a partial success)
    unclear: Vec<u64>,
    /// event time of the newest span sent (ns)
    newest: i64,
}

/// How the Collector answered a request.
enum Answer {
    Acknowledged,
    Refused,
    Unclear,
}

/// The start (ns) of span `n` of a request sent at `now`: a millisecond
/// apart, the last ending at `now`.
fn span_start(now: i64, n: u64) -> i64 {
    now - (SPANS_PER_REQUEST - n % SPANS_PER_REQUEST) as i64 * 1_000_000
}

fn spawn_sender(
    marker: String,
    run: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / REQUESTS_PER_S));
        let mut next = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let seqs: Vec<u64> = (next..next + SPANS_PER_REQUEST).collect();
            next += SPANS_PER_REQUEST;
            let spans: Vec<Value> = seqs
                .iter()
                .map(|n| {
                    let t = span_start(now, *n);
                    json!({
                        "traceId": format!("{run:016x}{n:016x}"), "spanId": format!("{n:016x}"),
                        "name": "GET /e2e/pipeline", "kind": 2,
                        "startTimeUnixNano": t.to_string(),
                        "endTimeUnixNano": (t + 1_000_000).to_string(),
                        "attributes": [{"key": "client.address", "value": {"stringValue": marker}}],
                    })
                })
                .collect();
            let body = json!({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otelguard-e2e-pipeline"}}]},
                "scopeSpans": [{"spans": spans}]}]});
            let answer = match client.post(COLLECTOR).json(&body).send().await {
                Err(e) if e.is_connect() => Answer::Refused,
                Err(_) => Answer::Unclear,
                Ok(r) if !r.status().is_success() => Answer::Refused,
                Ok(r) => {
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let rejected = &body["partialSuccess"]["rejectedSpans"];
                    let rejected = rejected
                        .as_str()
                        .and_then(|n| n.parse::<u64>().ok())
                        .or_else(|| rejected.as_u64())
                        .unwrap_or(0);
                    if rejected == 0 {
                        Answer::Acknowledged
                    } else {
                        Answer::Unclear
                    }
                }
            };
            let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
            s.newest = now;
            for n in &seqs {
                s.ends.insert(*n, span_start(now, *n) + 1_000_000);
            }
            match answer {
                Answer::Acknowledged => s.acknowledged.extend(seqs),
                Answer::Refused => s.refused.extend(seqs),
                Answer::Unclear => s.unclear.extend(seqs),
            }
        }
    })
}

fn counts(sent: &Mutex<Sent>) -> (usize, usize, usize) {
    let s = sent.lock().unwrap_or_else(|e| e.into_inner());
    (s.acknowledged.len(), s.refused.len(), s.unclear.len())
}

/// Waits until the sender's acknowledged count passes `at_least`.
async fn wait_acknowledged(sent: &Mutex<Sent>, at_least: usize) {
    for _ in 0..1200 {
        if counts(sent).0 >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Collector stopped acknowledging: {:?}", counts(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_kill_and_broker_outage_lose_nothing_the_collector_accepted() {
    e2e::compose::stack(&["status", "otelcol", "kafka"])
        .expect("the Collector and Kafka up: `compose/local/stack up otelcol kafka`");
    let _restart = Restart(&["kafka", "otelcol"]);
    let run = e2e::shop::nonce();
    let marker = e2e::run_marker("pipeline");
    let rules = std::env::temp_dir().join(format!("otelguard-e2e-pipeline-rules-{run:x}"));
    std::fs::create_dir_all(&rules).expect("a rules folder");
    std::fs::write(rules.join("pipeline_spans.sql"), kpi(&marker)).expect("the test's KPI");

    // the engine on the Collector's own topics, from now on
    let start_at = (chrono::Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let group = format!("e2e-pipeline-{run:x}");
    // KPI values go to the BI store (stdout prints alerts)
    let store = Schema::create("e2e_pipeline").await;
    let store_url = store.url();
    // the Kafka source's assignments and where each partition starts, and
    // librdkafka's own notes (an offset reset is one), in the log a failure
    // prints (the engine's default is warnings only)
    let log = [(
        "RUST_LOG",
        "warn,ingest::source::kafka=info,librdkafka=info",
    )];
    let (mut engine, err, out) = e2e::engine::spawn_with_env(
        &[
            "run",
            "--rules",
            rules.to_str().expect("a UTF-8 path"),
            "--kafka",
            BROKERS,
            "--group",
            &group,
            "--start-at",
            &start_at,
            // longer than the broker's absence (its stop, 30 s, its start):
            // a member whose session expires while the broker is away is
            // revoked and, in this test's runs, got no partitions back for
            // minutes (see ARCHITECTURE.md, Failures)
            "--session-timeout",
            "120s",
            "--otlp-grpc",
            "off",
            "--otlp-http",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--postgres",
            &store_url,
        ],
        &log,
    );
    let api = address_after(&err, "viewer and API on http://");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let sender = spawn_sender(marker.clone(), run, stop.clone(), sent.clone());
    let per_10s = (10 * SPANS_PER_REQUEST * REQUESTS_PER_S) as usize;
    wait_acknowledged(&sent, per_10s).await;

    // the Collector killed, as a crash would, and started again
    let rows_before = metric(&api, "otelguard_rows_total{table=\"spans\"}")
        .await
        .unwrap_or(0.0);
    e2e::compose::stack(&["kill", "otelcol"]).expect("kill the Collector");
    let (acknowledged_at_kill, refused_at_kill, _) = counts(&sent);
    for _ in 0..600 {
        if counts(&sent).1 > refused_at_kill {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e2e::compose::stack(&["up", "otelcol"]).expect("start the Collector again");
    wait_acknowledged(&sent, acknowledged_at_kill + per_10s / 2).await;

    // the broker stopped for 30 s: the Collector keeps what it accepts
    e2e::compose::stack(&["down", "kafka"]).expect("stop Kafka");
    let (acknowledged_at_stop, _, _) = counts(&sent);
    let rows_at_stop = metric(&api, "otelguard_rows_total{table=\"spans\"}")
        .await
        .unwrap_or(0.0);
    tokio::time::sleep(BROKER_AWAY).await;
    let rows_in_outage = metric(&api, "otelguard_rows_total{table=\"spans\"}")
        .await
        .unwrap_or(0.0);
    let (acknowledged_in_outage, _, _) = counts(&sent);
    e2e::compose::stack(&["up", "kafka"]).expect("start Kafka again");
    wait_acknowledged(&sent, acknowledged_in_outage + per_10s).await;
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("the sender");

    // the engine resumes: every window of the run closes (the wall clock
    // moves event time on once the topics go quiet)
    let newest_s = sent.lock().unwrap_or_else(|e| e.into_inner()).newest as f64 / 1e9;
    let watermark = wait_metric(&api, "otelguard_watermark_seconds", newest_s + 20.0, 600).await;
    if watermark < newest_s + 20.0 {
        let rows = metric(&api, "otelguard_rows_total{table=\"spans\"}").await;
        let log = drain(&err, Duration::from_secs(1));
        panic!(
            "the engine's watermark stayed at {watermark} (the last span sent at {newest_s}; \
             {rows:?} rows read); its log:\n{}",
            log[log.len().saturating_sub(60)..].join("\n")
        );
    }
    let rows_after = metric(&api, "otelguard_rows_total{table=\"spans\"}")
        .await
        .unwrap_or(0.0);
    let late = metric(&api, "otelguard_late_rows_total").await;
    let log = drain(&err, Duration::from_secs(1));
    // the Kafka source's own lines (assignments, starts, errors) and the
    // last lines of all
    let kafka_lines: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("Kafka") || l.contains("OFFSET") || l.contains("resum"))
        .collect();
    let log_tail = format!(
        "{}\n...\n{}",
        kafka_lines[kafka_lines.len().saturating_sub(40)..]
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        log[log.len().saturating_sub(20)..].join("\n")
    );
    assert!(
        terminate(&mut engine, Duration::from_secs(60)),
        "the engine did not exit on SIGTERM"
    );
    drop(out);
    let kpis = store.kpis().await;

    let counted: u64 = kpis
        .iter()
        .filter(|(key, _)| key.0 == "e2e_pipeline_spans" && key.3.contains(&marker))
        .map(|(_, v)| v.unwrap_or(0.0) as u64)
        .sum();
    let windows = kpis.len();
    let s = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    let acknowledged: BTreeSet<u64> = s.acknowledged.iter().copied().collect();
    eprintln!(
        "sent {} spans: {} acknowledged ({acknowledged_at_kill} before the Collector's kill, \
         {} more before the broker stopped, {} while it was away), {} refused, {} unclear; \
         the engine counted {counted} distinct spans in {windows} windows; rows read: \
         {rows_before} at the kill, {rows_at_stop} when the broker stopped, {rows_in_outage} \
         after 30 s without it, {rows_after} at the end; late rows (the topics are shared) {late:?}",
        s.acknowledged.len() + s.refused.len() + s.unclear.len(),
        acknowledged.len(),
        acknowledged_at_stop - acknowledged_at_kill,
        acknowledged_in_outage - acknowledged_at_stop,
        s.refused.len(),
        s.unclear.len(),
    );
    assert!(
        !s.refused.is_empty(),
        "no request was refused: the Collector was not down"
    );
    assert!(
        acknowledged_in_outage > acknowledged_at_stop,
        "the Collector acknowledged nothing while the broker was away"
    );
    assert!(
        rows_after > rows_in_outage,
        "the engine read nothing after the broker came back"
    );
    // per 10 s window: the spans acknowledged in it against the engine's count
    let mut expected: std::collections::BTreeMap<i64, Vec<u64>> = Default::default();
    for n in &acknowledged {
        if let Some(end) = s.ends.get(n) {
            expected
                .entry(end.div_euclid(10_000_000_000) * 10_000)
                .or_default()
                .push(*n);
        }
    }
    let short: Vec<String> = expected
        .iter()
        .filter_map(|(start_ms, spans)| {
            let got: u64 = kpis
                .iter()
                .filter(|(key, _)| {
                    key.0 == "e2e_pipeline_spans" && key.1 == *start_ms && key.3.contains(&marker)
                })
                .map(|(_, v)| v.unwrap_or(0.0) as u64)
                .sum();
            (got < spans.len() as u64).then(|| {
                format!(
                    "window at {start_ms} ms: {got} counted of {} acknowledged (spans {}..={})",
                    spans.len(),
                    spans.first().copied().unwrap_or(0),
                    spans.last().copied().unwrap_or(0)
                )
            })
        })
        .collect();
    assert!(
        counted as usize >= acknowledged.len(),
        "the engine counted {counted} distinct spans of the {} the Collector acknowledged; \
         windows short: {short:#?}\nthe engine's log:\n{log_tail}",
        acknowledged.len()
    );
    assert!(
        counted as usize <= acknowledged.len() + s.unclear.len(),
        "the engine counted {counted} distinct spans, more than the {} acknowledged and {} unclear",
        acknowledged.len(),
        s.unclear.len()
    );
    let _ = std::fs::remove_dir_all(&rules);
    store.drop_all().await;
}
