//! End-to-end test of the shop's failure injection (`shop/src/services/chaos.rs`)
//! against the local stack: one set of the six services (child processes of
//! the real `shop` binary), every flag set in turn, requests through the
//! gateway, then each fault's signature read back from what the Collector
//! wrote to Kafka (`otlp_spans`, `otlp_logs`) and from its Prometheus exporter.
//!
//! - Set by environment variables at start: `payment_latency_ms`,
//!   `db_slow_ms`, `catalog_cpu_ms`, `memory_growth_kb` (with `memory_cap_mb`).
//! - Set at run time through `PUT /admin/chaos`: `payment_error_ratio`,
//!   `db_pool_hold`, `redis_down` (cart, then the gateway),
//!   `drop_downstream_ratio` (with `drop_downstream_targets`).
//!
//! Every flag is checked to show in `GET /admin/chaos` and to be gone after
//! `DELETE /admin/chaos` (the gateway's on its admin listener; every call
//! with the `SHOP_ADMIN_TOKEN` the harness sets, and refused without it).
//! Each request that should show a fault carries a `traceparent` of the
//! test's own; the gateway starts a trace of its own and links it to ours,
//! so its spans and log records are found by that link, then by trace id. Durations are checked only from below (at least the injected delay).
//!
//! Run: `cargo test -p e2e --test chaos`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use e2e::otlp::{Signal, attr, attr_str, read_spans_and_logs};
use e2e::shop::{ADMIN_TOKEN, Shop, Shopper, gateway_traces, nonce, require_up};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use reqwest::Method;
use serde_json::{Value, json};

const FAULT: &str = "shop.chaos.fault";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
/// One-second polls of the Collector's Prometheus exporter.
const PROMETHEUS_POLLS: u32 = 40;
/// 100 ms polls of `GET /admin/chaos` for the pool holder to follow its flag.
const HOLDER_POLLS: u32 = 100;

const PAYMENT_LATENCY_MS: u64 = 300;
const DB_SLOW_MS: u64 = 120;
const CATALOG_CPU_MS: u64 = 150;
const MEMORY_GROWTH_KB: u64 = 4096;
const MEMORY_CAP_MB: u64 = 40;
/// `SHOP_DB_POOL_MAX` of the test's services: how many connections the holder can take.
const POOL_MAX: u64 = 4;

// ---------------------------------------------------------------------------
// Traced requests

/// The trace id of each request the test will look for, by the fault it shows.
struct Traced {
    seed: u64,
    ids: BTreeMap<&'static str, String>,
}

impl Traced {
    /// A fresh sampled `traceparent` for the request showing `fault`.
    fn traceparent(&mut self, fault: &'static str) -> String {
        self.seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
        let id = format!("{:016x}{:016x}", self.seed, self.seed.rotate_left(29) | 1);
        self.ids.insert(fault, id.clone());
        format!("00-{id}-{:016x}-01", self.seed | 1)
    }
}

/// Sends `method path` (JSON `body`) as `shopper` in a trace of its own for
/// `fault`; checks the status and returns the body.
async fn traced(
    shopper: &mut Shopper,
    traced: &mut Traced,
    fault: &'static str,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Result<Value> {
    let traceparent = traced.traceparent(fault);
    let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
    let a = shopper
        .send(method.clone(), path, body, Some(&traceparent))
        .await?;
    ensure!(
        a.status == status,
        "{fault}: {method} {path}: expected {status}, got {} {}",
        a.status,
        a.body
    );
    Ok(a.body)
}

// ---------------------------------------------------------------------------
// The admin endpoint

/// `method /admin/chaos` on `service`, directly (not through the gateway).
async fn admin(shop: &Shop, service: &str, method: Method, body: Option<Value>) -> Result<Value> {
    let (status, body) = admin_call(shop, service, method.clone(), body, false).await?;
    ensure!(
        status == 200,
        "{method} /admin/chaos on {service}: {status} {body}"
    );
    Ok(body)
}

async fn admin_call(
    shop: &Shop,
    service: &str,
    method: Method,
    body: Option<Value>,
    forwarded: bool,
) -> Result<(u16, Value)> {
    admin_call_at(
        &shop.admin_url(service)?,
        method,
        body,
        forwarded,
        Some(ADMIN_TOKEN),
    )
    .await
}

/// `method url` with the bearer `token`, through a proxy when `forwarded`.
async fn admin_call_at(
    url: &str,
    method: Method,
    body: Option<Value>,
    forwarded: bool,
    token: Option<&str>,
) -> Result<(u16, Value)> {
    let mut req = reqwest::Client::new().request(method.clone(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    if forwarded {
        req = req.header("x-forwarded-for", "203.0.113.5");
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("{method} {url}: not JSON"))?;
    Ok((status, body))
}

/// Sets `flags` on `service` and checks that `GET` shows them.
async fn set(shop: &Shop, service: &str, flags: Value) -> Result<()> {
    admin(shop, service, Method::PUT, Some(flags.clone())).await?;
    let now = admin(shop, service, Method::GET, None).await?;
    for (name, value) in flags.as_object().context("flags")? {
        ensure!(
            same(&now["flags"][name], value),
            "GET /admin/chaos on {service} shows {name} = {}, not {value}",
            now["flags"][name]
        );
    }
    Ok(())
}

/// Clears every flag of `service` and checks that `GET` shows none.
async fn clear(shop: &Shop, service: &str) -> Result<()> {
    admin(shop, service, Method::DELETE, None).await?;
    let now = admin(shop, service, Method::GET, None).await?;
    ensure!(
        now["active"] == json!([]),
        "{service} still has flags after DELETE: {now}"
    );
    Ok(())
}

/// JSON equality with numbers compared as numbers (1 == 1.0) and a
/// comma-separated string equal to the list it names.
fn same(shown: &Value, set: &Value) -> bool {
    match (shown, set) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::String(b)) => {
            a.iter().filter_map(Value::as_str).collect::<Vec<_>>()
                == b.split(',').map(str::trim).collect::<Vec<_>>()
        }
        _ => shown == set,
    }
}

/// Polls `GET /admin/chaos` on `service` until `pool_connections_held` is `held`.
async fn await_held(shop: &Shop, service: &str, held: u64) -> Result<()> {
    let mut now = Value::Null;
    for _ in 0..HOLDER_POLLS {
        now = admin(shop, service, Method::GET, None).await?;
        if now["pool_connections_held"] == held {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{service} never held {held} pool connections: {now}")
}

// ---------------------------------------------------------------------------
// The Collector's Prometheus exporter

/// The value of `metric` for the one process of `service` in `environment`.
async fn scrape(metric: &str, service: &str, environment: &str) -> Result<Option<f64>> {
    let text = reqwest::get("http://127.0.0.1:8889/metrics")
        .await?
        .text()
        .await?;
    let service = format!("service_name=\"{service}\"");
    let environment = format!("environment_name=\"{environment}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(&service) && l.contains(&environment))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok())))
}

/// Polls until `metric` of `service` satisfies `ok`; returns the value.
async fn await_metric(
    metric: &str,
    service: &str,
    environment: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64> {
    let mut last = None;
    for _ in 0..PROMETHEUS_POLLS {
        last = scrape(metric, service, environment).await?;
        if let Some(v) = last.filter(|v| ok(*v)) {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "{metric} of {service} ({environment}) on the Collector's Prometheus exporter: last {last:?}"
    )
}

// ---------------------------------------------------------------------------
// Reading the traces back

#[derive(Debug)]
struct SpanSeen {
    service: String,
    name: String,
    kind: i32,
    millis: f64,
    error: bool,
    attributes: Vec<KeyValue>,
}

impl SpanSeen {
    fn fault(&self) -> Option<&str> {
        attr_str(&self.attributes, FAULT)
    }
    /// `http.response.status_code` (an int, or a string of digits).
    fn status_code(&self) -> Option<i64> {
        match attr(&self.attributes, "http.response.status_code") {
            Some(any_value::Value::IntValue(c)) => Some(*c),
            Some(any_value::Value::StringValue(c)) => c.parse().ok(),
            _ => None,
        }
    }
}

/// One line per span: who, what, how long, how it ended.
impl std::fmt::Display for SpanSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} (kind {}) {:.1} ms, error {}, status {:?}, fault {:?}",
            self.service,
            self.name,
            self.kind,
            self.millis,
            self.error,
            self.status_code(),
            self.fault()
        )
    }
}

#[derive(Debug)]
struct LogSeen {
    service: String,
    event_name: String,
    attributes: Vec<KeyValue>,
}

/// What was seen of one traced request.
#[derive(Debug, Default)]
struct TraceSeen {
    spans: Vec<SpanSeen>,
    logs: Vec<LogSeen>,
}

impl TraceSeen {
    fn span(&self, what: &str, pick: impl Fn(&SpanSeen) -> bool) -> Result<&SpanSeen> {
        self.spans.iter().find(|s| pick(s)).with_context(|| {
            let spans: Vec<String> = self.spans.iter().map(|s| format!("  {s}")).collect();
            format!("no {what} among:\n{}", spans.join("\n"))
        })
    }

    /// A log record marked `fault` from `service`.
    fn logged(&self, service: &str, fault: &str) -> Result<()> {
        ensure!(
            self.logs
                .iter()
                .any(|l| l.service == service && attr_str(&l.attributes, FAULT) == Some(fault)),
            "no log record of {service} marked {fault}"
        );
        Ok(())
    }

    /// The gateway's SERVER span answered `status` with ERROR status.
    fn edge_failed(&self, status: i64) -> Result<()> {
        let edge = self.span("gateway SERVER span", |s| {
            s.service == "shop-gateway" && s.kind == SERVER
        })?;
        ensure!(
            edge.error && edge.status_code() == Some(status),
            "the edge span is not an ERROR {status}: {edge}"
        );
        Ok(())
    }
}

/// Each fault's signature in its trace.
fn signature(fault: &str, t: &TraceSeen) -> Result<()> {
    let at_least = |s: &SpanSeen, ms: u64| -> Result<()> {
        ensure!(
            s.millis >= ms as f64,
            "{} of {} lasted {} ms, less than {ms}",
            s.name,
            s.service,
            s.millis
        );
        Ok(())
    };
    match fault {
        "payment_latency" => {
            let delay = t.span("payment_latency fault span", |s| {
                s.service == "shop-payments" && s.fault() == Some(fault)
            })?;
            at_least(delay, PAYMENT_LATENCY_MS)?;
            let server = t.span("payments SERVER span", |s| {
                s.service == "shop-payments" && s.kind == SERVER
            })?;
            at_least(server, PAYMENT_LATENCY_MS)?;
            let call = t.span("checkout's CLIENT span to payments", |s| {
                s.service == "shop-checkout" && s.kind == CLIENT && s.name == "POST /api/payments"
            })?;
            at_least(call, PAYMENT_LATENCY_MS)?;
            t.logged("shop-payments", fault)
        }
        "payment_error" => {
            t.span("payment_error fault span", |s| {
                s.service == "shop-payments" && s.fault() == Some(fault)
            })?;
            let server = t.span("payments SERVER span", |s| {
                s.service == "shop-payments" && s.kind == SERVER
            })?;
            ensure!(
                server.error && server.status_code() == Some(502),
                "{server}"
            );
            let attempt = t
                .logs
                .iter()
                .find(|l| l.event_name == "shop.payment.attempt")
                .context("no shop.payment.attempt event")?;
            ensure!(
                attr_str(&attempt.attributes, "shop.payment.outcome") == Some("error"),
                "{attempt:?}"
            );
            t.logged("shop-payments", fault)?;
            t.edge_failed(502)
        }
        "db_slow" => {
            let query = t.span("slowed PostgreSQL span of auth", |s| {
                s.service == "shop-auth"
                    && attr_str(&s.attributes, "db.system.name") == Some("postgresql")
                    && s.fault() == Some(fault)
            })?;
            at_least(query, DB_SLOW_MS)?;
            t.logged("shop-auth", fault)
        }
        "db_pool_hold" => {
            let server = t.span("catalog SERVER span marked db_pool_hold", |s| {
                s.service == "shop-catalog" && s.kind == SERVER && s.fault() == Some(fault)
            })?;
            ensure!(
                server.error && server.status_code() == Some(503),
                "{server}"
            );
            ensure!(
                t.logs.iter().any(|l| l.service == "shop-catalog"
                    && attr_str(&l.attributes, "error.type") == Some("pool_timeout")),
                "no pool_timeout log record of catalog"
            );
            t.logged("shop-catalog", fault)?;
            t.edge_failed(503)
        }
        "redis_down" | "redis_down_gateway" => {
            let service = if fault == "redis_down" {
                "shop-cart"
            } else {
                "shop-gateway"
            };
            let command = t.span("failed Redis span", |s| {
                s.service == service
                    && attr_str(&s.attributes, "db.system.name") == Some("redis")
                    && s.fault() == Some("redis_down")
            })?;
            ensure!(command.error, "{command}");
            t.logged(service, "redis_down")?;
            t.edge_failed(503)
        }
        "catalog_cpu" => {
            let burn = t.span("catalog_cpu fault span", |s| {
                s.service == "shop-catalog" && s.fault() == Some(fault)
            })?;
            at_least(burn, CATALOG_CPU_MS)?;
            let server = t.span("catalog SERVER span", |s| {
                s.service == "shop-catalog" && s.kind == SERVER
            })?;
            at_least(server, CATALOG_CPU_MS)?;
            t.logged("shop-catalog", fault)
        }
        "drop_downstream" => {
            let call = t.span("dropped CLIENT span of the gateway", |s| {
                s.service == "shop-gateway" && s.kind == CLIENT && s.fault() == Some(fault)
            })?;
            ensure!(
                call.error && attr_str(&call.attributes, "error.type") == Some("connect"),
                "{call}"
            );
            ensure!(
                !t.spans.iter().any(|s| s.service == "shop-catalog"),
                "a dropped call reached catalog"
            );
            t.logged("shop-gateway", fault)?;
            t.edge_failed(503)
        }
        other => bail!("no signature for {other}"),
    }
}

/// Reads `otlp_spans` and `otlp_logs` from `since_ms` until every traced
/// request shows its fault's signature (then a few quiet seconds more).
async fn read_signatures(traced: &Traced, since_ms: i64) -> Result<u32> {
    let callers: BTreeMap<Vec<u8>, &'static str> = traced
        .ids
        .iter()
        .map(|(fault, id)| {
            let bytes = (0..16)
                .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or_default())
                .collect();
            (bytes, *fault)
        })
        .collect();
    // The gateway started a trace of its own for each request, linked to ours.
    let group = format!("shop-e2e-chaos-{}", traced.seed);
    let ids: Vec<Vec<u8>> = callers.keys().cloned().collect();
    let by_id: BTreeMap<Vec<u8>, &'static str> = gateway_traces(since_ms, &group, &ids)
        .await?
        .into_iter()
        .filter_map(|(caller, trace)| callers.get(&caller).map(|fault| (trace, *fault)))
        .collect();
    let nothing = TraceSeen::default();
    let pending = |seen: &BTreeMap<&'static str, TraceSeen>| -> Vec<String> {
        traced
            .ids
            .keys()
            .filter_map(|fault| {
                signature(fault, seen.get(fault).unwrap_or(&nothing))
                    .err()
                    .map(|e| format!("{fault}: {e:#}"))
            })
            .collect()
    };
    let mut seen: BTreeMap<&'static str, TraceSeen> = BTreeMap::new();
    let read = read_spans_and_logs(
        since_ms,
        &group,
        &mut seen,
        |seen, signal| match signal {
            Signal::Span(service, s) => {
                if let Some(fault) = by_id.get(&s.trace_id) {
                    let nanos = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                    seen.entry(fault).or_default().spans.push(SpanSeen {
                        service,
                        name: s.name,
                        kind: s.kind,
                        millis: nanos as f64 / 1e6,
                        error: s.status.is_some_and(|st| st.code == STATUS_ERROR),
                        attributes: s.attributes,
                    });
                }
            }
            Signal::Log(service, r) => {
                if let Some(fault) = by_id.get(&r.trace_id) {
                    seen.entry(fault).or_default().logs.push(LogSeen {
                        service,
                        event_name: r.event_name,
                        attributes: r.attributes,
                    });
                }
            }
        },
        |seen| pending(seen).is_empty(),
    )
    .await?;
    ensure!(
        read.complete,
        "kafka: read {} records (idle {} s); signatures not seen:\n{}",
        read.records,
        read.idle,
        pending(&seen).join("\n\n")
    );
    Ok(read.records)
}

// ---------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_shows_its_signature_in_the_telemetry() -> Result<()> {
    require_up("kafka", 19092)?;
    require_up("otelcol", 4317)?;
    require_up("otelcol prometheus exporter", 8889)?;
    let since_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 2_000;
    let n = nonce();
    // A deployment environment of this run's own tells its processes' metrics apart.
    let environment = format!("e2e-chaos-{n:x}");
    let (pool_max, latency, slow, cpu, growth, cap) = (
        POOL_MAX.to_string(),
        PAYMENT_LATENCY_MS.to_string(),
        DB_SLOW_MS.to_string(),
        CATALOG_CPU_MS.to_string(),
        MEMORY_GROWTH_KB.to_string(),
        MEMORY_CAP_MB.to_string(),
    );
    let mut shop = Shop::start(
        "chaos",
        &[
            ("SHOP_ENVIRONMENT", environment.as_str()),
            ("SHOP_RATE_LIMIT_BURST", "1000"),
            ("SHOP_DB_POOL_MAX", pool_max.as_str()),
            ("SHOP_CHAOS_PAYMENT_LATENCY_MS", latency.as_str()),
            ("SHOP_CHAOS_DB_SLOW_MS", slow.as_str()),
            ("SHOP_CHAOS_CATALOG_CPU_MS", cpu.as_str()),
            ("SHOP_CHAOS_MEMORY_GROWTH_KB", growth.as_str()),
            ("SHOP_CHAOS_MEMORY_CAP_MB", cap.as_str()),
        ],
    )?;
    let mut traces = Traced {
        seed: n,
        ids: BTreeMap::new(),
    };
    let mut shopper = Shopper::new(shop.gateway(), "198.51.100.61")?;

    // --- Flags from the environment: each service took the ones that apply to it.
    let payments = admin(&shop, "payments", Method::GET, None).await?;
    ensure!(
        payments["flags"]["payment_latency_ms"] == PAYMENT_LATENCY_MS,
        "{payments}"
    );
    let catalog = admin(&shop, "catalog", Method::GET, None).await?;
    for (flag, value) in [
        ("catalog_cpu_ms", CATALOG_CPU_MS),
        ("db_slow_ms", DB_SLOW_MS),
        ("memory_growth_kb", MEMORY_GROWTH_KB),
        ("memory_cap_mb", MEMORY_CAP_MB),
    ] {
        ensure!(catalog["flags"][flag] == value, "{flag}: {catalog}");
    }
    let gateway = admin(&shop, "gateway", Method::GET, None).await?;
    ensure!(
        gateway["flags"]["db_slow_ms"] == 0 && gateway["flags"]["catalog_cpu_ms"] == 0,
        "the gateway took flags that do not apply to it: {gateway}"
    );
    let baseline = await_metric("process_memory_usage", "shop-catalog", &environment, |_| {
        true
    })
    .await?;

    // db_slow: registering writes the account through a slowed query.
    let email = format!("chaos.{n:x}@example.org");
    let password = format!("pw-{n:x}-chaos");
    let credentials = json!({"email": email, "password": password});
    traced(
        &mut shopper,
        &mut traces,
        "db_slow",
        Method::POST,
        "/api/auth/register",
        Some(credentials.clone()),
        // 202 whether or not the address had an account (it tells nothing)
        202,
    )
    .await?;
    shopper
        .expect(Method::POST, "/api/auth/login", Some(credentials), 200)
        .await?;
    // catalog_cpu: every product view burns CPU; memory_growth: each retains
    // 4 MiB in catalog, up to the 40 MiB cap.
    traced(
        &mut shopper,
        &mut traces,
        "catalog_cpu",
        Method::GET,
        "/api/products/1",
        None,
        200,
    )
    .await?;
    for id in 2..=12 {
        shopper
            .expect(Method::GET, &format!("/api/products/{id}"), None, 200)
            .await?;
    }
    let catalog = admin(&shop, "catalog", Method::GET, None).await?;
    ensure!(
        catalog["retained_memory_kb"] == MEMORY_CAP_MB * 1024,
        "catalog did not retain up to its cap: {catalog}"
    );
    let grown = await_metric("process_memory_usage", "shop-catalog", &environment, |v| {
        v >= baseline + 0.75 * (MEMORY_CAP_MB * 1024 * 1024) as f64
    })
    .await?;
    println!("catalog resident memory: {baseline} bytes at start, {grown} after growth");
    // payment_latency: the checkout waits for the slowed processor.
    let card = json!({"card": {"number": "4242 4242 4242 4242", "expiry": "12/39", "cvv": "737"}});
    shopper
        .expect(
            Method::POST,
            "/api/cart/items",
            Some(json!({"product_id": 5, "quantity": 1})),
            201,
        )
        .await?;
    traced(
        &mut shopper,
        &mut traces,
        "payment_latency",
        Method::POST,
        "/api/checkout",
        Some(card.clone()),
        201,
    )
    .await?;
    for service in ["gateway", "auth", "catalog", "cart", "checkout", "payments"] {
        clear(&shop, service).await?;
    }
    let catalog = admin(&shop, "catalog", Method::GET, None).await?;
    ensure!(
        catalog["retained_memory_kb"] == 0,
        "DELETE did not free the retained memory: {catalog}"
    );

    // --- Flags set at run time.
    // payment_error: every payment fails; the checkout answers 502.
    set(&shop, "payments", json!({"payment_error_ratio": 1.0})).await?;
    shopper
        .expect(
            Method::POST,
            "/api/cart/items",
            Some(json!({"product_id": 6, "quantity": 1})),
            201,
        )
        .await?;
    traced(
        &mut shopper,
        &mut traces,
        "payment_error",
        Method::POST,
        "/api/checkout",
        Some(card.clone()),
        502,
    )
    .await?;
    clear(&shop, "payments").await?;

    // db_pool_hold: every connection of catalog's pool held; views get 503.
    set(&shop, "catalog", json!({"db_pool_hold": 1000})).await?;
    await_held(&shop, "catalog", POOL_MAX).await?;
    let busy = traced(
        &mut shopper,
        &mut traces,
        "db_pool_hold",
        Method::GET,
        "/api/products/2",
        None,
        503,
    )
    .await?;
    ensure!(busy["error"]["code"] == "database_busy", "{busy}");
    clear(&shop, "catalog").await?;
    await_held(&shop, "catalog", 0).await?;
    shopper
        .expect(Method::GET, "/api/products/2", None, 200)
        .await?;

    // redis_down in cart: the cart answers 503, nothing panics.
    set(&shop, "cart", json!({"redis_down": true})).await?;
    let down = traced(
        &mut shopper,
        &mut traces,
        "redis_down",
        Method::POST,
        "/api/cart/items",
        Some(json!({"product_id": 7, "quantity": 1})),
        503,
    )
    .await?;
    ensure!(down["error"]["code"] == "store_unavailable", "{down}");
    clear(&shop, "cart").await?;
    shopper.expect(Method::GET, "/api/cart", None, 200).await?;

    // redis_down in the gateway: no session, so 503 for the API; admin still answers.
    set(&shop, "gateway", json!({"redis_down": true})).await?;
    traced(
        &mut shopper,
        &mut traces,
        "redis_down_gateway",
        Method::GET,
        "/api/categories",
        None,
        503,
    )
    .await?;
    clear(&shop, "gateway").await?;
    shopper
        .expect(Method::GET, "/api/categories", None, 200)
        .await?;

    // drop_downstream: the gateway's calls to catalog fail as refused, others pass.
    set(
        &shop,
        "gateway",
        json!({"drop_downstream_ratio": 1, "drop_downstream_targets": "catalog"}),
    )
    .await?;
    let dropped = traced(
        &mut shopper,
        &mut traces,
        "drop_downstream",
        Method::GET,
        "/api/categories",
        None,
        503,
    )
    .await?;
    ensure!(
        dropped["error"]["code"] == "upstream_unavailable",
        "{dropped}"
    );
    shopper.expect(Method::GET, "/api/cart", None, 200).await?;
    clear(&shop, "gateway").await?;
    shopper
        .expect(Method::GET, "/api/categories", None, 200)
        .await?;

    // --- The admin refuses bad flags, and anything that came through a proxy.
    for (service, body, code) in [
        (
            "catalog",
            json!({"payment_latency_ms": 5}),
            "flag_not_applicable",
        ),
        (
            "payments",
            json!({"payment_error_ratio": 1.5}),
            "invalid_flag_value",
        ),
        ("checkout", json!({"db_slow_ms": -1}), "invalid_flag_value"),
        ("cart", json!({"redis_is_down": true}), "unknown_flag"),
    ] {
        let (status, answer) = admin_call(&shop, service, Method::PUT, Some(body), false).await?;
        ensure!(
            status == 422 && answer["error"]["code"] == code,
            "{service}: {status} {answer}"
        );
    }
    let (status, answer) = admin_call(&shop, "catalog", Method::DELETE, None, true).await?;
    ensure!(
        status == 403 && answer["error"]["code"] == "admin_forbidden",
        "{status} {answer}"
    );
    // Without the token, or with another: refused, on every service and on
    // the gateway's admin listener.
    for service in ["gateway", "auth", "catalog", "cart", "checkout", "payments"] {
        let url = shop.admin_url(service)?;
        for token in [None, Some("not the admin token at all")] {
            let (status, answer) = admin_call_at(
                &url,
                Method::PUT,
                Some(json!({"redis_down": true})),
                false,
                token,
            )
            .await?;
            ensure!(
                status == 401 && answer["error"]["code"] == "admin_unauthorized",
                "{service} {token:?}: {status} {answer}"
            );
        }
    }
    // The gateway's public listener has no admin at all, token or not, from
    // this host or as a client.
    let public = format!("{}/admin/chaos", shop.gateway());
    let (status, answer) =
        admin_call_at(&public, Method::GET, None, false, Some(ADMIN_TOKEN)).await?;
    ensure!(
        status == 404,
        "the gateway's public listener: {status} {answer}"
    );
    let a = shopper.get("/admin/chaos").await?;
    ensure!(a.status == 404, "{} {}", a.status, a.body);

    // Graceful shutdown flushes every service's telemetry.
    shop.stop();
    let records = read_signatures(&traces, since_ms).await?;
    println!(
        "signatures seen in {records} Kafka records: {:?}",
        traces.ids.keys().collect::<Vec<_>>()
    );
    Ok(())
}
