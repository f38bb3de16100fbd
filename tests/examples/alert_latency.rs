//! End-to-end alert latency (issue 13, "Measure"): from the event time of
//! the span that crosses the flood rule's threshold to the alert's arrival
//! at Alertmanager, (a) with the engine as the OTLP receiver (PATH
//! `receiver`, the default) or (b) through the stack's Collector and Kafka
//! (PATH `kafka`).
//!
//! ```text
//! cargo build --workspace --bins
//! cargo run -p e2e --example alert_latency -- [ATTACKS] [EARLY_EVERY] [receiver|kafka]
//! ```
//!
//! Starts the workspace's `engine run` (target/debug) with only
//! `dos.http_flood.single_source` (3000 SERVER spans from one client in a
//! minute), its OTLP/HTTP receiver on a port of its own and the stack's
//! Alertmanager (127.0.0.1:19093, or `ALERTMANAGER=url`) as its sink, and
//! `--early-every EARLY_EVERY` (default 200ms; `off` for the close of the
//! window). A benign client sends 20 spans a second throughout, so that
//! event time moves on as in a live shop. Then ATTACKS times (default 20),
//! one new client address each: 3000 spans at 300 a second, each dated
//! when it is sent; the 3000th crosses the threshold. Alertmanager is
//! polled every 10 ms for an alert naming that client (as its lead or a
//! member of its incident); latency = when it is
//! first listed - the event time of the 3000th span. Prints each latency,
//! then p50, p99 and max.
//!
//! With `kafka`, the spans go to the stack's Collector (OTLP/HTTP
//! 127.0.0.1:4318, or `COLLECTOR=host:port`), which writes them to the
//! `otlp_spans` topic of 127.0.0.1:19092 (its Kafka exporter's queue flushes
//! every 200 ms, compose/otelcol/config.yaml); the engine reads the topic as
//! a new group at `--start-at latest`, beside whatever else the stack
//! carries. A consumer of its own (a group of its own, at latest) reads the
//! same topic, so each latency is split where timestamps allow: export (the
//! 3000th span's date to the Collector's answer to its request), Collector
//! (that answer to the Kafka record's CreateTime, set by the Collector's
//! producer, millisecond resolution), Kafka (CreateTime to the record's
//! receipt by that consumer) and engine + sink (that receipt to Alertmanager
//! listing the alert).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::engine::{address_after, spawn};
use e2e::kafka::BROKERS;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};

const RULE: &str = "dos.http_flood.single_source";

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// OTLP/JSON gateway SERVER spans from `client`, dated `times`.
fn spans_at(times: &[i64], client: &str, seq: &mut u64) -> Value {
    let spans: Vec<Value> = times
        .iter()
        .map(|t| {
            *seq += 1;
            json!({
                "traceId": format!("{:032x}", *seq), "spanId": format!("{:016x}", *seq),
                "name": "GET /api/products/{id}", "kind": 2,
                "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 2_000_000).to_string(),
                "attributes": [
                    {"key": "client.address", "value": {"stringValue": client}},
                    {"key": "http.route", "value": {"stringValue": "/api/products/{id}"}},
                    {"key": "http.response.status_code", "value": {"intValue": 200}},
                ],
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-gateway"}}]},
        "scopeSpans": [{"spans": spans}]}]})
}

async fn post(http: &reqwest::Client, otlp: &str, body: &Value) {
    // a 429 (the engine behind) is retried, as an OTLP exporter does
    for _ in 0..100 {
        let r = http
            .post(format!("http://{otlp}/v1/traces"))
            .json(body)
            .send()
            .await
            .expect("the receiver answers");
        if r.status().is_success() {
            return;
        }
        assert_eq!(r.status().as_u16(), 429, "refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the receiver refused the same request 100 times");
}

/// What Alertmanager lists of the flood rule's firing incidents: whether
/// one names `client` (as the incident's lead, its `client_address` label,
/// or among the members of its `members` annotation), and how many entities
/// each counts, by incident id (`entity_count`). Attacks one after another in the same
/// windows are one attack to the engine's correlator (docs/rules.md,
/// "Incidents"): a later client's alert joins the first's incident, which
/// Alertmanager gets again with one entity more; it lists 10 members at most.
async fn listed(
    http: &reqwest::Client,
    alertmanager: &str,
    client: &str,
) -> (bool, HashMap<String, u64>) {
    let url = format!("{alertmanager}/api/v2/alerts?active=true&filter=rule_id%3D%22{RULE}%22");
    let Ok(r) = http.get(&url).send().await else {
        return (false, HashMap::new());
    };
    let Ok(alerts) = r.json::<Vec<Value>>().await else {
        return (false, HashMap::new());
    };
    let member = format!("client.address={client} ");
    let named = alerts.iter().any(|a| {
        a["labels"]["client_address"] == client
            || a["annotations"]["members"]
                .as_str()
                .is_some_and(|m| m.lines().any(|l| l.contains(&member)))
    });
    let entities = alerts
        .iter()
        .map(|a| {
            let id = a["labels"]["incident_id"].as_str().unwrap_or_default();
            let count = a["annotations"]["entity_count"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            (id.to_string(), count)
        })
        .collect();
    (named, entities)
}

/// The Collector's topic of spans.
const TOPIC: &str = "otlp_spans";

/// Span ids at or above this are the benign client's; below, the attacks'.
const BENIGN_IDS: u64 = 1 << 40;

/// When each attack span was seen in Kafka: its record's CreateTime (ms)
/// and when the watching consumer received it (ns), by span id.
type Seen = Arc<Mutex<HashMap<u64, (i64, i64)>>>;

/// A consumer of its own on the Collector's topic, from its end: records
/// where every attack span was seen, and counts the records it read.
fn watch_topic() -> (Seen, Arc<std::sync::atomic::AtomicU64>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set(
            "group.id",
            format!("alert-latency-watch-{}", std::process::id()),
        )
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let seen: Seen = Arc::default();
    let records = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (into, counted) = (seen.clone(), records.clone());
    tokio::spawn(async move {
        loop {
            let Ok(m) = consumer.recv().await else {
                continue;
            };
            let received = now_ns();
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let created = m.timestamp().to_millis().unwrap_or(0);
            let Some(Ok(request)) = m.payload().map(ExportTraceServiceRequest::decode) else {
                continue;
            };
            let mut seen = into.lock().unwrap_or_else(|e| e.into_inner());
            for span in request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                let Ok(id) = <[u8; 8]>::try_from(span.span_id.as_slice()) else {
                    continue;
                };
                let id = u64::from_be_bytes(id);
                if id < BENIGN_IDS {
                    seen.entry(id).or_insert((created, received));
                }
            }
        }
    });
    (seen, records)
}

/// The engine's `otelguard_rows_total{table="spans"}`.
async fn spans_read(http: &reqwest::Client, api: &str) -> u64 {
    let Ok(r) = http.get(format!("http://{api}/metrics")).send().await else {
        return 0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("otelguard_rows_total{table=\"spans\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let attacks: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let early = args.get(2).cloned().unwrap_or_else(|| "200ms".into());
    let through_kafka = match args.get(3).map(String::as_str) {
        None | Some("receiver") => false,
        Some("kafka") => true,
        Some(other) => panic!("PATH is receiver or kafka, not {other}"),
    };
    let alertmanager =
        std::env::var("ALERTMANAGER").unwrap_or_else(|_| "http://127.0.0.1:19093".into());

    let rules = e2e::engine::flood_rule_folder("latency", &std::process::id().to_string());
    let rules = rules.to_str().expect("a UTF-8 path").to_string();
    let group = format!("alert-latency-{}", std::process::id());
    let mut argv = vec![
        "run",
        "--rules",
        &rules,
        "--otlp-grpc",
        "off",
        "--listen",
        "127.0.0.1:0",
        "--alertmanager",
        &alertmanager,
        "--early-every",
        &early,
    ];
    match through_kafka {
        false => argv.extend(["--otlp-http", "127.0.0.1:0"]),
        true => argv.extend([
            "--otlp-http",
            "off",
            "--kafka",
            BROKERS,
            "--group",
            &group,
            "--start-at",
            "latest",
        ]),
    }
    let watched = through_kafka.then(watch_topic);
    let (_engine, err, _out) = spawn(&argv);
    let api = address_after(&err, "viewer and API on http://");
    eprintln!("the engine: http://{api}/metrics");
    let otlp = match through_kafka {
        false => address_after(&err, "HTTP "),
        true => std::env::var("COLLECTOR").unwrap_or_else(|_| "127.0.0.1:4318".into()),
    };
    let http = reqwest::Client::new();

    // benign traffic throughout: 20 spans a second, dated now
    let background = {
        let (http, otlp) = (http.clone(), otlp.clone());
        tokio::spawn(async move {
            let mut seq = 1u64 << 40;
            loop {
                let body = spans_at(&[now_ns()], "192.0.2.10", &mut seq);
                post(&http, &otlp, &body).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some((_, records)) = &watched {
        // both consumers start at the end: wait until each reads the benign
        // client's spans, so that no attack span is behind their start
        let waiting = Instant::now();
        while spans_read(&http, &api).await == 0
            || records.load(std::sync::atomic::Ordering::Relaxed) == 0
        {
            assert!(
                waiting.elapsed() < Duration::from_secs(120),
                "the engine or the watching consumer read nothing from {TOPIC} within 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let run = now_ns();
    let mut latencies = Vec::new();
    // export, Collector, Kafka, engine + sink (s), per attack
    let mut parts: Vec<[f64; 4]> = Vec::new();
    let mut seq = 0u64;
    for attack in 0..attacks {
        let client = format!("198.51.{}.{}", (run / 1_000_000_000) % 200, attack + 1);
        // the entities the incidents count before this attack: its alert
        // adds one, listed or not among the members
        let (_, before) = listed(&http, &alertmanager, &client).await;
        // 3000 spans at 300 a second: 30 every 100 ms, dated when sent
        let mut crossed = 0;
        let mut acknowledged = 0;
        for _ in 0..100 {
            let at = now_ns();
            let times: Vec<i64> = (0..30).map(|i| at + i * 1_000_000).collect();
            crossed = times[29];
            post(&http, &otlp, &spans_at(&times, &client, &mut seq)).await;
            acknowledged = now_ns();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // the 3000th span's id
        let crossing = seq;
        let waiting = Instant::now();
        // an incident new since, or one that counts more entities (not a
        // sum: an incident of an earlier run may expire meanwhile)
        let grew = |now: &HashMap<String, u64>| {
            now.iter()
                .any(|(id, n)| before.get(id).is_none_or(|b| n > b))
        };
        while !matches!(listed(&http, &alertmanager, &client).await, (named, now) if named || grew(&now))
        {
            assert!(
                waiting.elapsed() < Duration::from_secs(120),
                "no alert for {client} at {alertmanager} within 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let listed_at = now_ns();
        let latency = (listed_at - crossed) as f64 / 1e9;
        let split = watched.as_ref().and_then(|(seen, _)| {
            let (created_ms, received) = *seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&crossing)?;
            let s = |ns: i64| ns as f64 / 1e9;
            Some([
                s(acknowledged - crossed),
                s(created_ms * 1_000_000 - acknowledged),
                s(received - created_ms * 1_000_000),
                s(listed_at - received),
            ])
        });
        match split {
            Some(p) => {
                println!(
                    "attack {:>2} {client}: {latency:.3} s (export {:.3}, Collector {:.3}, Kafka {:.3}, engine + sink {:.3})",
                    attack + 1,
                    p[0],
                    p[1],
                    p[2],
                    p[3]
                );
                parts.push(p);
            }
            None => println!("attack {:>2} {client}: {latency:.3} s", attack + 1),
        }
        latencies.push(latency);
    }
    background.abort();
    latencies.sort_by(f64::total_cmp);
    let passes = reqwest::get(format!("http://{api}/metrics"))
        .await
        .expect("the API answers")
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("otelguard_early_passes_total"))
        .map(String::from)
        .unwrap_or_default();
    println!("{passes}");
    println!(
        "{} early-every {early}: {} attacks, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        if through_kafka {
            "Collector + Kafka,"
        } else {
            "receiver,"
        },
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    if !parts.is_empty() {
        for (i, name) in ["export", "Collector", "Kafka", "engine + sink"]
            .iter()
            .enumerate()
        {
            let mut part: Vec<f64> = parts.iter().map(|p| p[i]).collect();
            part.sort_by(f64::total_cmp);
            println!(
                "  {name}: p50 {:.3} s, p99 {:.3} s ({} of {} attacks split)",
                percentile(&part, 0.5),
                percentile(&part, 0.99),
                parts.len(),
                latencies.len()
            );
        }
    }
}
