//! Alertmanager down for two minutes while an attack runs: the live engine
//! (its own OTLP receiver) goes on taking rows and evaluating windows, prints
//! the attack's alert on stdout meanwhile, and the alert reaches
//! Alertmanager once it is back.
//!
//! The Alertmanager is the test's own (the stack's Debian binary, as
//! `compose/local/stack` starts it, with the stack's config), on a free port
//! with a data dir of its own, so that stopping it disturbs no other test.
//! A sender posts gateway spans, dated now, at a steady pace all along: three
//! browsing addresses, and from a fourth a flood of 60 requests a second that
//! begins as the outage does. The rates of rows taken in before and during
//! the outage are printed, from the engine's `otelguard_rows_total`; what is
//! asserted are counts: the rows the receiver acknowledged during the outage
//! were taken in, evaluations went on, nothing was refused or dropped.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::faults::{gateway_span, metric};
use serde_json::{Value, json};

/// How long Alertmanager stays away.
const OUTAGE: Duration = Duration::from_secs(120);
/// Traffic before the outage, to measure the rate of rows taken in.
const BEFORE: Duration = Duration::from_secs(30);
/// Requests the sender posts a second (every 100 ms), and the browsers' spans in each.
const POSTS_PER_S: u64 = 10;
const BROWSER_SPANS: u64 = 20;
/// The attacker's spans in each post while the flood is on (60 a second:
/// 3600 a minute, over the flood rule's 3000).
const FLOOD_SPANS: u64 = 6;

/// The test's own Alertmanager, stopped with SIGKILL when dropped.
struct Alertmanager {
    child: Option<Child>,
    port: u16,
    data: std::path::PathBuf,
}

impl Alertmanager {
    fn start(port: u16, data: &std::path::Path) -> Alertmanager {
        let config = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../compose/alertmanager/alertmanager.yml"
        );
        std::fs::create_dir_all(data).expect("Alertmanager's data dir");
        let log = std::fs::File::create(data.join("alertmanager.log")).expect("a log file");
        let child = Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "start /usr/bin/prometheus-alertmanager (installed by `compose/local/stack up alertmanager`)",
            );
        Alertmanager {
            child: Some(child),
            port,
            data: data.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/-/ready` until it answers 200.
    async fn ready(&self) {
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url())).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.data.join("alertmanager.log")).unwrap_or_default();
        panic!(
            "the test's Alertmanager never got ready on {}:\n{log}",
            self.url()
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The active alerts whose incident holds `client`'s address: as its
    /// lead (the `client_address` label) or as a member (the `members`
    /// annotation). Alerts of one rule fold into one incident, so the flood
    /// may be a member of an incident a browser's alert leads.
    async fn active_for(&self, client: &str) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts?active=true", self.url());
        let all: Vec<Value> = match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        // a member line is "rule key=value ... = value": the address is one
        // whole word, so 198.51.100.1 does not match 198.51.100.12
        let member = format!("client.address={client}");
        all.into_iter()
            .filter(|a| {
                a["labels"]["client_address"] == client
                    || a["annotations"]["members"]
                        .as_str()
                        .is_some_and(|m| m.split_whitespace().any(|w| w == member))
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What the sender has done.
#[derive(Default)]
struct Sent {
    /// rows in acknowledged requests
    acknowledged: AtomicU64,
    /// requests answered with anything but success
    refused: AtomicU64,
}

/// Posts a request of spans dated now every 100 ms until `stop`; the
/// attacker's spans are in it while `flood` is set.
fn spawn_sender(
    otlp: String,
    run: u64,
    attacker: String,
    flood: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<Sent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / POSTS_PER_S));
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let mut spans = Vec::new();
            for k in 0..BROWSER_SPANS {
                let browser = format!("192.0.2.{}", 20 + k % 3);
                spans.push(gateway_span(
                    now - k as i64 * 1_000_000,
                    id,
                    run,
                    &browser,
                    200,
                ));
                id += 1;
            }
            if flood.load(Ordering::Relaxed) {
                for k in 0..FLOOD_SPANS {
                    spans.push(gateway_span(
                        now - k as i64 * 1_000_000,
                        id,
                        run,
                        &attacker,
                        200,
                    ));
                    id += 1;
                }
            }
            let rows = spans.len() as u64;
            let body = json!({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-gateway"}}]},
                "scopeSpans": [{"spans": spans}]}]});
            let answer = client
                .post(format!("http://{otlp}/v1/traces"))
                .json(&body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    sent.acknowledged.fetch_add(rows, Ordering::Relaxed);
                }
                _ => {
                    sent.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// Rows the engine has taken in, and its flood rule's evaluations.
async fn progress(api: &str) -> (f64, f64) {
    let rows = metric(api, "otelguard_rows_total{table=\"spans\"}")
        .await
        .unwrap_or(0.0);
    let evaluations = metric(
        api,
        "otelguard_rule_eval_seconds_count{rule=\"dos.http_flood.single_source\"}",
    )
    .await
    .unwrap_or(0.0);
    (rows, evaluations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_down_for_two_minutes_stalls_nothing_and_gets_the_alert_after() {
    let run = e2e::shop::nonce();
    let attacker = format!("198.51.100.{}", run % 200 + 1);
    let data = std::env::temp_dir().join(format!("otelguard-e2e-alertmanager-{run:x}"));
    let mut alertmanager = Alertmanager::start(free_port(), &data);
    alertmanager.ready().await;
    let rules = e2e::engine::flood_rule_folder("am-outage", &format!("{run:x}"));
    let engine = e2e::engine::run_receiving_rules(
        rules.to_str().expect("a UTF-8 path"),
        &["--alertmanager", &alertmanager.url()],
    );

    let (flood, stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Sent::default()),
    );
    let sender = spawn_sender(
        engine.otlp.clone(),
        run,
        attacker.clone(),
        flood.clone(),
        stop.clone(),
        sent.clone(),
    );

    // before: the rate of rows taken in with Alertmanager up
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rows_0, _) = progress(&engine.api).await;
    let started = Instant::now();
    tokio::time::sleep(BEFORE).await;
    let (rows_1, evaluations_1) = progress(&engine.api).await;
    let rate_before = (rows_1 - rows_0) / started.elapsed().as_secs_f64();

    // the outage, and the attack in it
    alertmanager.kill();
    let acknowledged_at_stop = sent.acknowledged.load(Ordering::Relaxed);
    let refused_at_stop = sent.refused.load(Ordering::Relaxed);
    flood.store(true, Ordering::Relaxed);
    let outage_started = Instant::now();
    let mut fired_during_outage = None;
    let mut samples = Vec::new();
    while outage_started.elapsed() < OUTAGE {
        if fired_during_outage.is_none() {
            while let Ok(line) = engine.out.try_recv() {
                if line.contains(&format!("\"{attacker}\"")) && line.contains("\"firing\"") {
                    fired_during_outage = Some(outage_started.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push(progress(&engine.api).await);
    }
    let outage_lasted = outage_started.elapsed();
    let acknowledged_in_outage = sent.acknowledged.load(Ordering::Relaxed) - acknowledged_at_stop;
    let refused_in_outage = sent.refused.load(Ordering::Relaxed) - refused_at_stop;
    let (rows_2, evaluations_2) = progress(&engine.api).await;
    let rate_during = (rows_2 - rows_1) / outage_lasted.as_secs_f64();
    let retried = metric(
        &engine.api,
        "otelguard_sink_retried_total{sink=\"alertmanager\"}",
    )
    .await;

    // Alertmanager back, on the same port with the same data
    let port = alertmanager.port;
    alertmanager = Alertmanager::start(port, &data);
    alertmanager.ready().await;
    let mut listed = Vec::new();
    for _ in 0..180 {
        listed = alertmanager.active_for(&attacker).await;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("the sender");
    let delivered = metric(
        &engine.api,
        "otelguard_sink_delivered_total{sink=\"alertmanager\"}",
    )
    .await;
    let dropped = metric(
        &engine.api,
        "otelguard_sink_dropped_total{sink=\"alertmanager\"}",
    )
    .await;
    let late = metric(&engine.api, "otelguard_late_rows_total").await;

    let grew: Vec<f64> = samples.windows(2).map(|w| w[1].0 - w[0].0).collect();
    eprintln!(
        "rows taken in: {rate_before:.0}/s before the outage, {rate_during:.0}/s during its \
         {:.0} s; every 10 s of it: {grew:?}; flood rule evaluations {evaluations_1} before, \
         {evaluations_2} at its end; the flood alert printed {fired_during_outage:?} into it; \
         the sink retried {retried:?} times, delivered {delivered:?}, dropped {dropped:?}; \
         requests refused by the receiver during it: {refused_in_outage}; late rows {late:?}",
        outage_lasted.as_secs_f64()
    );
    assert!(
        grew.iter().all(|n| *n > 0.0),
        "the engine stopped taking rows during the outage: every 10 s {grew:?}"
    );
    // what the receiver acknowledged is taken in; at most the receiver's
    // channel (64 requests) may still be on its way
    let taken = rows_2 - rows_1;
    let in_flight = (64 * (BROWSER_SPANS + FLOOD_SPANS)) as f64;
    assert!(
        taken + in_flight >= acknowledged_in_outage as f64,
        "rows taken in during the outage ({taken}) against those acknowledged ({acknowledged_in_outage})"
    );
    assert_eq!(
        refused_in_outage, 0,
        "requests the receiver refused during the outage"
    );
    assert!(
        evaluations_2 > evaluations_1,
        "no evaluation during the outage ({evaluations_1} before, {evaluations_2} after)"
    );
    assert!(
        fired_during_outage.is_some(),
        "the flood's alert was not printed while Alertmanager was down"
    );
    assert!(
        retried.unwrap_or(0.0) > 0.0,
        "the Alertmanager sink never failed a delivery: the outage did not happen"
    );
    assert_eq!(dropped, Some(0.0), "alerts the Alertmanager sink dropped");
    assert_eq!(
        listed.len(),
        1,
        "the flood alert at Alertmanager once it is back: {listed:?}"
    );
    assert_eq!(
        listed[0]["labels"]["alertname"],
        "dos.http_flood.single_source"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&rules);
    let _ = std::fs::remove_dir_all(&data);
}
