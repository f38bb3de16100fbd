//! End-to-end test of the services' CPU profiles (issue 17 item 3): a running
//! payments service (the real `shop` binary; it needs no database) serves
//! `/admin/pprof/profile` with the admin token and refuses it without; the
//! answer decodes as pprof's protobuf `Profile` (decoded here with a message
//! of our own, written from pprof's `profile.proto`, not the producer's
//! code) and holds samples of the bottleneck switched on meanwhile:
//! `alloc_heavy_kb` makes every payment fill and copy buffers in
//! `chaos::churn`, and samples pass through that function.
//!
//! Needs nothing of the stack. Run: `cargo build --workspace --bins && cargo
//! test -p e2e --test profiling`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::shop::{ADMIN_TOKEN, KEYS_ENV};
use prost::Message as _;
use serde_json::{Value, json};

/// pprof's `Profile` (github.com/google/pprof, proto/profile.proto), the
/// fields this test reads.
#[derive(Clone, PartialEq, prost::Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
}

/// One `shop serve payments`, stopped when dropped.
struct Payments {
    child: Child,
    url: String,
}

impl Payments {
    fn start() -> Result<Payments> {
        let log = std::env::temp_dir().join(format!(
            "shop-e2e-profiling-payments-{}.log",
            std::process::id()
        ));
        let mut child = Command::new(e2e::workspace_binary("shop"))
            .args(["serve", "payments"])
            .env("SHOP_PAYMENTS_ADDR", "127.0.0.1:0")
            .env("SHOP_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTEL_SDK_DISABLED", "true")
            .envs(KEYS_ENV)
            .env_remove("SHOP_DEV_KEYS")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting shop serve payments")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .by_ref()
            .take(20)
            .map_while(|l| l.ok())
            .find_map(|l| {
                l.split_once("shop-payments listening on ")
                    .map(|(_, u)| u.trim().to_owned())
            })
            .with_context(|| format!("payments did not start; see {}", log.display()))?;
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Payments { child, url })
    }
}

impl Drop for Payments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pays from four tasks until `stop` is set (at most 500 each): CPU for the
/// profile to sample. Returns the payments answered 200.
async fn pay_until(url: String, stop: Arc<AtomicBool>) -> Result<usize> {
    let client = reqwest::Client::new();
    let body = json!({"amount": 12.5, "currency": "EUR",
        "card": {"number": "4242424242424242", "expiry": "12/39", "cvv": "123"}});
    let mut payers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, body, stop) = (client.clone(), body.clone(), stop.clone());
        let url = format!("{url}/api/payments");
        payers.spawn(async move {
            let mut ok = 0usize;
            for _ in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let answer = client.post(&url).json(&body).send().await;
                if answer.is_ok_and(|a| a.status() == 200) {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(paid) = payers.join_next().await {
        ok += paid?;
    }
    Ok(ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_service_serves_its_cpu_profile_to_the_admin_only() -> Result<()> {
    let payments = Payments::start()?;
    let client = reqwest::Client::new();
    let profile_url = format!("{}/admin/pprof/profile", payments.url);

    // Without the token, or with another: refused, nothing sampled.
    for token in [None, Some("a wrong token, long enough too")] {
        let mut req = client.get(format!("{profile_url}?seconds=1"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let answer = req.send().await?;
        ensure!(answer.status() == 401, "{token:?}: {}", answer.status());
        let body: Value = answer.json().await?;
        ensure!(body["error"]["code"] == "admin_unauthorized", "{body}");
    }
    // A bound out of range is named.
    let answer = client
        .get(format!("{profile_url}?seconds=600"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(answer.status() == 422, "seconds=600: {}", answer.status());
    let body: Value = answer.json().await?;
    ensure!(
        body["error"]["code"] == "invalid_parameter"
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("seconds")),
        "{body}"
    );

    // The bottleneck: every payment fills and copies 16 MiB of buffers (32 MiB).
    let state: Value = client
        .put(format!("{}/admin/chaos", payments.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"alloc_heavy_kb": 16384}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        state["active"] == json!(["alloc_heavy_kb=16384"]),
        "the flag is not set: {state}"
    );

    // A 3-second profile at 250 Hz while payments are made; a second
    // profile asked for meanwhile is refused, not queued.
    let profile = {
        let client = client.clone();
        let url = format!("{profile_url}?seconds=3&frequency=250");
        tokio::spawn(async move { client.get(url).bearer_auth(ADMIN_TOKEN).send().await })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = client
        .get(format!("{}/admin/pprof/flamegraph?seconds=1", payments.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(
        second.status() == 409,
        "a second profile: {}",
        second.status()
    );
    ensure!(second.headers().contains_key("retry-after"));
    let stop = Arc::new(AtomicBool::new(false));
    let payers = tokio::spawn(pay_until(payments.url.clone(), stop.clone()));
    let answer = profile.await??;
    stop.store(true, Ordering::Relaxed);
    let paid = payers.await??;
    ensure!(paid > 0, "no payment succeeded");
    ensure!(answer.status() == 200, "profile: {}", answer.status());
    ensure!(
        answer.headers()["content-type"] == "application/octet-stream",
        "{:?}",
        answer.headers()
    );
    let bytes = answer.bytes().await?;
    let profile = Profile::decode(bytes.as_ref()).context("the answer is not a pprof Profile")?;

    let strings = &profile.string_table;
    ensure!(
        strings.first().is_some_and(String::is_empty),
        "string_table[0] must be \"\""
    );
    let named = |i: i64| strings.get(i as usize).map_or("?", String::as_str);
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| named(t.r#type))
        .collect();
    ensure!(types.contains(&"cpu"), "sample types {types:?}");
    ensure!(
        profile.duration_nanos >= 2_000_000_000,
        "{} ns",
        profile.duration_nanos
    );
    let samples: i64 = profile.sample.iter().filter_map(|s| s.value.first()).sum();
    ensure!(
        samples >= 10,
        "{samples} samples over {} samples and {paid} payments",
        profile.sample.len()
    );
    // Every sample's stack resolves, and one of them is the bottleneck.
    let churn = profile
        .function
        .iter()
        // Inlined frames carry their short name (`churn`), others the path.
        .find(|f| named(f.name).rsplit("::").next() == Some("churn"))
        .with_context(|| {
            let mut names: Vec<&str> = profile.function.iter().map(|f| named(f.name)).collect();
            names.truncate(40);
            format!("no churn among the functions: {names:?}")
        })?;
    let in_churn = profile
        .sample
        .iter()
        .filter(|s| {
            s.location_id.iter().any(|id| {
                profile
                    .location
                    .iter()
                    .find(|l| l.id == *id)
                    .is_some_and(|l| l.line.iter().any(|line| line.function_id == churn.id))
            })
        })
        .count();
    ensure!(in_churn > 0, "no sample stack passes through chaos::churn");
    eprintln!(
        "profile: {} bytes, {samples} samples in {} stacks, {in_churn} through chaos::churn; {paid} payments",
        bytes.len(),
        profile.sample.len()
    );

    // The same samples as a flamegraph.
    let answer = client
        .get(format!("{}/admin/pprof/flamegraph?seconds=1", payments.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    ensure!(answer.status() == 200, "flamegraph: {}", answer.status());
    ensure!(answer.headers()["content-type"] == "image/svg+xml");
    let svg = answer.text().await?;
    ensure!(
        svg.contains("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(200)]
    );
    Ok(())
}
