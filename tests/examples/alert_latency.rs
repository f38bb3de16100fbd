//! End-to-end alert latency with the engine as the OTLP receiver (issue 13,
//! "Measure", case a): from the event time of the span that crosses the
//! flood rule's threshold to the alert's arrival at Alertmanager.
//!
//! ```text
//! cargo build --workspace --bins
//! cargo run -p e2e --example alert_latency -- [ATTACKS] [EARLY_EVERY]
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
//! polled every 10 ms for an alert of that client; latency = when it is
//! first listed - the event time of the 3000th span. Prints each latency,
//! then p50, p99 and max.

use std::time::{Duration, Instant};

use e2e::engine::{address_after, spawn};
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

/// Whether Alertmanager lists a firing alert of the flood rule for `client`.
async fn listed(http: &reqwest::Client, alertmanager: &str, client: &str) -> bool {
    let url = format!(
        "{alertmanager}/api/v2/alerts?active=true&filter=rule_id%3D%22{RULE}%22&filter=client_address%3D%22{client}%22"
    );
    match http.get(&url).send().await {
        Ok(r) => r
            .json::<Vec<Value>>()
            .await
            .is_ok_and(|alerts| !alerts.is_empty()),
        Err(_) => false,
    }
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
    let alertmanager =
        std::env::var("ALERTMANAGER").unwrap_or_else(|_| "http://127.0.0.1:19093".into());

    let rules = e2e::engine::flood_rule_folder("latency", &std::process::id().to_string());
    let rules = rules.to_str().expect("a UTF-8 path").to_string();
    let argv = [
        "run",
        "--rules",
        &rules,
        "--otlp-grpc",
        "off",
        "--otlp-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--alertmanager",
        &alertmanager,
        "--early-every",
        &early,
    ];
    let (_engine, err, _out) = spawn(&argv);
    let api = address_after(&err, "viewer and API on http://");
    let otlp = address_after(&err, "HTTP ");
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

    let run = now_ns();
    let mut latencies = Vec::new();
    let mut seq = 0u64;
    for attack in 0..attacks {
        let client = format!("198.51.{}.{}", (run / 1_000_000_000) % 200, attack + 1);
        // 3000 spans at 300 a second: 30 every 100 ms, dated when sent
        let mut crossed = 0;
        for _ in 0..100 {
            let at = now_ns();
            let times: Vec<i64> = (0..30).map(|i| at + i * 1_000_000).collect();
            crossed = times[29];
            post(&http, &otlp, &spans_at(&times, &client, &mut seq)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waiting = Instant::now();
        while !listed(&http, &alertmanager, &client).await {
            assert!(
                waiting.elapsed() < Duration::from_secs(120),
                "no alert for {client} at {alertmanager} within 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let latency = (now_ns() - crossed) as f64 / 1e9;
        println!("attack {:>2} {client}: {latency:.3} s", attack + 1);
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
        "early-every {early}: {} attacks, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}
