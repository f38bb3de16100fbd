//! The Services and Engine dashboards proven without Grafana (issue 14):
//! with the stack up (Kafka, the Collector, Prometheus), the shop's six
//! services, the live engine reading the Collector's topics (`engine run
//! --kafka`, listening where Prometheus scrapes it: 127.0.0.1:8080, job
//! `engine` of compose/prometheus/prometheus.yml) and some shop traffic,
//! every PromQL target of the committed services.json and engine.json,
//! expanded as Grafana expands it (`dashboards::expand`), is asked of
//! Prometheus's `/api/v1/query_range` over the test's span:
//!
//! - Prometheus refuses none, with every variable at All and with values
//!   taken from the variables' own queries (several services, a route with
//!   regex characters, the engine's instance);
//! - every target the generator marks `must_have_data` returns series once
//!   the traffic has reached Prometheus (polled, with a bound on the polls,
//!   never a fixed wait). Only "Rejected input per second" may stay empty:
//!   the engine rejects nothing of the shop's well-formed telemetry. The
//!   traffic includes one client over the gateway's rate limit, so "Shed and
//!   rate-limited requests" has its 429s;
//! - every `label_values(...)` variable query lists something (asked of the
//!   label values API, as Grafana asks it).
//!
//! Starts the stack components it needs (`compose/local/stack up ...`).
//! Needs the workspace's binaries: `cargo build --workspace --bins`.
//! Run: `cargo test -p e2e --test dashboards_prometheus`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use dashboards::expand::{ALL, TimeRange, expand_promql, label_values};
use dashboards::grafana::{Datasource, Query};
use e2e::engine::Engine;
use e2e::shop::{Shop, Shopper, nonce};
use serde_json::Value;

const PROMETHEUS: &str = "http://127.0.0.1:19090";
/// Where Prometheus scrapes the engine (job `engine`).
const ENGINE_LISTEN: &str = "127.0.0.1:8080";
const KAFKA: &str = "127.0.0.1:19092";
/// Prometheus's scrape interval (compose/prometheus/prometheus.yml), the
/// datasource's "scrape interval" Grafana computes `$__rate_interval` from.
const SCRAPE: Duration = Duration::from_secs(5);
/// Rounds of queries while waiting for the traffic's series, one every 2 s.
const POLLS: u32 = 120;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Prometheus's answer to a query: the series, or why it refused.
async fn query_range(
    http: &reqwest::Client,
    expr: &str,
    range: &TimeRange,
) -> Result<Result<Vec<Value>, String>> {
    let seconds = |ns: i64| format!("{:.3}", ns as f64 / 1e9);
    let resp = http
        .get(format!("{PROMETHEUS}/api/v1/query_range"))
        .query(&[
            ("query", expr.to_string()),
            ("start", seconds(range.from_ns)),
            ("end", seconds(range.to_ns)),
            ("step", format!("{}s", range.interval.as_secs().max(1))),
        ])
        .send()
        .await
        .with_context(|| format!("asking Prometheus at {PROMETHEUS}"))?;
    let body: Value = resp.json().await.context("Prometheus's answer")?;
    if body["status"] != "success" {
        return Ok(Err(format!("{}: {}", body["errorType"], body["error"])));
    }
    Ok(Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()))
}

/// A `label_values(...)` variable query as Grafana asks it.
async fn variable_values(
    http: &reqwest::Client,
    query: &str,
    range: &TimeRange,
) -> Result<Vec<String>> {
    let lv = label_values(query).ok_or_else(|| anyhow!("not a label_values query: {query}"))?;
    let mut params = vec![
        ("start", format!("{}", range.from_ns / 1_000_000_000)),
        ("end", format!("{}", range.to_ns / 1_000_000_000 + 1)),
    ];
    if let Some(selector) = lv.selector {
        params.push(("match[]", selector));
    }
    let body: Value = http
        .get(format!("{PROMETHEUS}/api/v1/label/{}/values", lv.label))
        .query(&params)
        .send()
        .await?
        .json()
        .await?;
    ensure!(body["status"] == "success", "{query}: {body}");
    Ok(body["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promql_panel_runs_on_prometheus() -> Result<()> {
    e2e::compose::stack(&["up", "postgres", "redis", "kafka", "otelcol", "prometheus"])?;
    std::net::TcpListener::bind(ENGINE_LISTEN)
        .map(drop)
        .map_err(|e| {
            anyhow!(
                "{ENGINE_LISTEN} is taken ({e}); Prometheus scrapes the engine there \
             (compose/prometheus/prometheus.yml, job engine): stop what listens on it"
            )
        })?;
    let started_ns = now_ns();
    let run = nonce();
    let rules = dashboards::repo_dir().join("rules");
    let log = std::env::temp_dir().join(format!("e2e-dashboards-engine-{run:x}.log"));
    let child = Command::new(e2e::workspace_binary("engine"))
        .arg("run")
        .arg("--rules")
        .arg(&rules)
        .args([
            "--kafka",
            KAFKA,
            "--group",
            &format!("e2e-dashboards-{run:x}"),
            "--start-at",
            "earliest",
        ])
        .args(["--otlp-grpc", "off", "--otlp-http", "off"])
        .args(["--listen", ENGINE_LISTEN])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting engine run --kafka")?;
    let _engine = Engine(child);

    // Traffic: genuine shoppers, and one client over the gateway's rate limit.
    let mut shop = Shop::start(
        "dashboards",
        &[("SHOP_RATE_LIMIT_RPS", "2"), ("SHOP_RATE_LIMIT_BURST", "5")],
    )?;
    let mut noisy = Shopper::new(shop.gateway(), "203.0.113.77")?;
    let mut refused = 0;
    for _ in 0..20 {
        if noisy.get("/api/categories").await?.status == 429 {
            refused += 1;
        }
    }
    ensure!(refused > 0, "the gateway's rate limit refused nothing");
    let load = Command::new(e2e::workspace_binary("shop-load"))
        .envs(e2e::shop::KEYS_ENV)
        .env_remove("SHOP_DEV_KEYS")
        .args([
            "--gateway",
            shop.gateway(),
            "--rate",
            "3",
            "--duration",
            "40s",
        ])
        .args(["--seed", &(run % 1_000_000).to_string()])
        .output()
        .context("running shop-load")?;
    ensure!(
        load.status.success(),
        "shop-load failed:\n{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let result = prove(started_ns).await;
    shop.stop();
    if result.is_err() {
        eprintln!("the engine's log: {}", log.display());
    } else {
        let _ = std::fs::remove_file(&log);
    }
    result
}

async fn prove(started_ns: i64) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (targets, variables) = e2e::dashboards::load()?;
    let prom: Vec<_> = targets
        .iter()
        .filter_map(|t| match &t.query {
            Query::Prom {
                expr,
                must_have_data,
                ..
            } => Some((t.name(), expr.as_str(), *must_have_data)),
            Query::Sql { .. } => None,
        })
        .collect();
    ensure!(!prom.is_empty(), "no PromQL panel");
    let all: BTreeMap<String, Vec<String>> = variables
        .iter()
        .map(|v| (v.name.clone(), vec![ALL.to_string()]))
        .collect();

    // Until every target that must have data has it: each round asks every
    // target over the span so far; a refusal fails at once.
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut range = TimeRange::new(started_ns, now_ns(), SCRAPE);
    for round in 1..=POLLS {
        missing.clear();
        for (name, expr, must) in &prom {
            let expanded = expand_promql(expr, &range, SCRAPE, &all)?;
            match query_range(&http, &expanded, &range).await? {
                Err(why) => bail!("{name}: Prometheus refuses\n  {expanded}\n  {why}"),
                Ok(series) if series.is_empty() && *must => {
                    missing.insert(format!("{name}: {expanded}"));
                }
                Ok(_) => {}
            }
        }
        if missing.is_empty() {
            eprintln!(
                "every PromQL target answered, those that must with series, in round {round}"
            );
            break;
        }
        if round < POLLS {
            tokio::time::sleep(Duration::from_secs(2)).await;
            range = TimeRange::new(started_ns, now_ns(), SCRAPE);
        }
    }
    ensure!(
        missing.is_empty(),
        "no series after {POLLS} rounds for:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
    let empty: Vec<&String> = prom
        .iter()
        .filter(|(_, _, must)| !must)
        .map(|(name, _, _)| name)
        .collect();
    eprintln!("allowed to be empty (the engine rejected nothing): {empty:?}");

    // The variables: each query lists values; the test then picks some.
    let mut chosen: BTreeMap<String, Vec<String>> = all.clone();
    for v in variables
        .iter()
        .filter(|v| v.datasource == Datasource::Prometheus)
    {
        let query = expand_promql(&v.query, &range, SCRAPE, &chosen)?;
        let values = variable_values(&http, &query, &range).await?;
        ensure!(
            !values.is_empty(),
            "{} variable {}: no values for {query}",
            v.board,
            v.name
        );
        let pick: Vec<String> = match v.name.as_str() {
            "service" => values
                .iter()
                .filter(|s| ["shop-gateway", "shop-catalog"].contains(&s.as_str()))
                .cloned()
                .collect(),
            // a route with braces: its regex escaping must hold
            "route" => values
                .iter()
                .find(|r| r.contains('{'))
                .or(values.first())
                .cloned()
                .into_iter()
                .collect(),
            "instance" => values
                .iter()
                .filter(|i| i.as_str() == ENGINE_LISTEN)
                .cloned()
                .collect(),
            other => bail!(
                "no choice for the variable {other} of {}; add one here",
                v.board
            ),
        };
        ensure!(
            !pick.is_empty(),
            "{} variable {}: none of the expected values in {values:?}",
            v.board,
            v.name
        );
        eprintln!(
            "variable {}: {} values; chosen {pick:?}",
            v.name,
            values.len()
        );
        chosen.insert(v.name.clone(), pick);
    }
    for (name, expr, _) in &prom {
        let expanded = expand_promql(expr, &range, SCRAPE, &chosen)?;
        if let Err(why) = query_range(&http, &expanded, &range).await? {
            bail!("{name} with {chosen:?}: Prometheus refuses\n  {expanded}\n  {why}");
        }
    }
    eprintln!(
        "{} PromQL targets asked of Prometheus, with All and with chosen values",
        prom.len()
    );
    Ok(())
}
