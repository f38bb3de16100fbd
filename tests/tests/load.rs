//! End-to-end test of `shop-load`, the traffic and attack generator, against
//! the six real services and the local stack (`compose/local/stack up`).
//!
//! - `a_short_brute_force_reaches_kafka_with_its_indicators`: genuine shoppers
//!   at a low rate plus a short brute force; the truth file is written and
//!   well formed, the gateway answered both, and the attack's client address
//!   (from `X-Forwarded-For`) and user hash, as the truth lists them, are on
//!   the shop's `shop.auth.login` events and gateway spans in Kafka.
//! - `an_unreachable_gateway_is_a_clear_error`: nothing listens; shop-load
//!   says so and what to start, and fails.
//!
//! Run: `cargo test -p e2e --test load` (builds: `cargo build -p shop --bins`).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use e2e::otlp::{attr_str, consumer_since, service_of};
use e2e::shop::{Shop, nonce, require_up};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::Message as _;
use serde_json::Value;

/// One-second waits for the next Kafka record before giving up.
const KAFKA_IDLE_POLLS: u32 = 60;
const KAFKA_MAX_RECORDS: u32 = 200_000;

/// What the attack left in Kafka: login events and gateway spans of its address.
#[derive(Debug, Default)]
struct Seen {
    /// (user.hash, outcome) of `shop.auth.login` events from the attacker's address.
    logins: Vec<(String, String)>,
    /// Gateway SERVER spans whose `client.address` is the attacker's.
    edge_spans: usize,
    /// `service.name`s of this run's environment.
    services: BTreeSet<String>,
}

async fn read_attack(
    since_ms: i64,
    environment: &str,
    address: &str,
    want_logins: usize,
) -> Result<Seen> {
    let consumer = consumer_since(
        &["otlp_spans", "otlp_logs"],
        since_ms,
        &format!("e2e-load-{}", nonce()),
    )?;
    let mut seen = Seen::default();
    let (mut idle, mut records) = (0u32, 0u32);
    let whole = |s: &Seen| {
        s.logins.len() >= want_logins
            && s.edge_spans >= want_logins
            && ["shop-gateway", "shop-auth", "shop-catalog"]
                .iter()
                .all(|name| s.services.contains(*name))
    };
    while !whole(&seen) {
        ensure!(
            idle < KAFKA_IDLE_POLLS && records < KAFKA_MAX_RECORDS,
            "kafka: the attack from {address} never arrived whole (read {records} records, idle {idle} s): {seen:?}"
        );
        let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => {
                idle += 1;
                continue;
            }
            Ok(m) => m.context("kafka: reading")?,
        };
        records += 1;
        let payload = message.payload().unwrap_or_default();
        let ours = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            attr_str(attrs, "deployment.environment.name") == Some(environment)
        };
        if message.topic() == "otlp_spans" {
            let Ok(req) = ExportTraceServiceRequest::decode(payload) else {
                continue;
            };
            for rs in req.resource_spans {
                let Some(resource) = rs.resource.as_ref().filter(|r| ours(&r.attributes)) else {
                    continue;
                };
                let service = service_of(Some(resource));
                seen.services.insert(service.clone());
                for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                    if service == "shop-gateway"
                        && s.kind == 2
                        && attr_str(&s.attributes, "client.address") == Some(address)
                    {
                        seen.edge_spans += 1;
                    }
                }
            }
        } else {
            let Ok(req) = ExportLogsServiceRequest::decode(payload) else {
                continue;
            };
            for rl in req.resource_logs {
                let Some(resource) = rl.resource.as_ref().filter(|r| ours(&r.attributes)) else {
                    continue;
                };
                seen.services.insert(service_of(Some(resource)));
                for r in rl.scope_logs.into_iter().flat_map(|sl| sl.log_records) {
                    if r.event_name == "shop.auth.login"
                        && attr_str(&r.attributes, "client.address") == Some(address)
                    {
                        seen.logins.push((
                            attr_str(&r.attributes, "user.hash")
                                .unwrap_or_default()
                                .to_owned(),
                            attr_str(&r.attributes, "shop.auth.outcome")
                                .unwrap_or_default()
                                .to_owned(),
                        ));
                    }
                }
            }
        }
    }
    Ok(seen)
}

/// The count after `status×` on the progress line of `plan` (`  brute_force  8 sent: 401×8`).
fn status_count(stderr: &str, plan: &str, status: u16) -> u64 {
    stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(&format!("{plan} ")))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{status}×")))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_brute_force_reaches_kafka_with_its_indicators() -> Result<()> {
    require_up("kafka", 19092)?;
    require_up("otelcol", 4317)?;
    let since_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 10_000;
    let run = nonce();
    let environment = format!("e2e-load-{run:x}");
    let mut shop = Shop::start("load", &[("SHOP_ENVIRONMENT", environment.as_str())])?;
    let dir = std::env::temp_dir().join(format!("e2e-load-{run:x}"));
    std::fs::create_dir_all(&dir)?;
    let truth_path = dir.join("brute_force.truth.json");
    // A seed of its own per run: another victim account each time.
    let out = Command::new(e2e::workspace_binary("shop-load"))
        .envs(e2e::shop::KEYS_ENV)
        .env_remove("SHOP_DEV_KEYS")
        .args(["--gateway", shop.gateway()])
        // Genuine shoppers arrive as a Poisson process of visits (7.4 requests
        // each on average): at 1 request a second, 30 s held no visit at all
        // for about one seed in 60 (e^-30/7.4); at 3, one in 180,000.
        .args([
            "--rate",
            "3",
            "--duration",
            "30s",
            "--scenario",
            "brute_force@3s",
        ])
        .args(["--seed", &(run % 1_000_000).to_string()])
        .arg("--truth")
        .arg(&truth_path)
        .output()
        .context("running shop-load")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "shop-load failed:\n{stderr}");
    shop.stop(); // flushes the services' telemetry

    // The truth: written, in the shape `engine rules test` reads.
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(&truth_path).context("the truth file was not written")?,
    )?;
    ensure!(truth["capture"] == "brute_force.jsonl.zst", "{truth}");
    let s = &truth["scenarios"][0];
    ensure!(
        s["name"] == "brute_force" && s["class"] == "attack",
        "{truth}"
    );
    let start = chrono::DateTime::parse_from_rfc3339(s["start"].as_str().unwrap_or_default())?;
    let end = chrono::DateTime::parse_from_rfc3339(s["end"].as_str().unwrap_or_default())?;
    ensure!(start < end, "window {start} .. {end}");
    let addresses = s["indicators"]["client.address"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hashes = s["indicators"]["user.hash"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(addresses.len() == 1 && hashes.len() == 1, "{s}");
    let address = addresses[0].as_str().unwrap_or_default().to_owned();
    let hash = hashes[0].as_str().unwrap_or_default().to_owned();
    ensure!(
        address.starts_with("203.0.113."),
        "attacker address {address}"
    );
    let requests = s["requests"].as_u64().unwrap_or(0);
    ensure!(requests >= 3, "{requests} attack requests in the truth");

    // The gateway answered: the attack's wrong passwords 401, the shoppers 200.
    let refused = status_count(&stderr, "brute_force", 401);
    ensure!(refused >= 3, "brute_force got {refused} 401s:\n{stderr}");
    ensure!(
        status_count(&stderr, "baseline", 200) >= 1,
        "no genuine request answered 200:\n{stderr}"
    );

    // The shop saw the client's address from X-Forwarded-For and hashed the
    // account as the truth says: both on its events and spans in Kafka.
    let seen = read_attack(since_ms, &environment, &address, refused as usize).await?;
    let wrong: Vec<_> = seen.logins.iter().filter(|(h, _)| *h != hash).collect();
    if !wrong.is_empty() {
        bail!("logins from {address} on accounts other than the truth's {hash}: {wrong:?}");
    }
    ensure!(
        seen.logins.iter().all(|(_, outcome)| outcome == "failure"),
        "a brute-force login succeeded: {:?}",
        seen.logins
    );
    for service in ["shop-gateway", "shop-auth", "shop-catalog"] {
        ensure!(
            seen.services.contains(service),
            "nothing from {service}: {seen:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn an_unreachable_gateway_is_a_clear_error() -> Result<()> {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = Command::new(e2e::workspace_binary("shop-load"))
        .args(["--gateway", &format!("http://127.0.0.1:{port}")])
        .args(["--duration", "5s", "--scenario", "brute_force@1s"])
        .output()
        .context("running shop-load")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "shop-load succeeded without a gateway:\n{stderr}"
    );
    ensure!(
        stderr.contains("cannot reach the shop's gateway") && stderr.contains("shop serve"),
        "unhelpful error:\n{stderr}"
    );
    // Nor does it send anywhere but loopback.
    let out = Command::new(e2e::workspace_binary("shop-load"))
        .args(["--gateway", "http://192.0.2.1:18080", "--duration", "5s"])
        .output()
        .context("running shop-load")?;
    ensure!(
        !out.status.success(),
        "shop-load accepted a gateway off loopback"
    );
    Ok(())
}
