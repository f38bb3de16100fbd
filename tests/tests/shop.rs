//! End-to-end tests of the shop's services against the local stack
//! (`compose/local/stack up`: PostgreSQL, Redis, Kafka, the Collector).
//!
//! Each test starts the six services as child processes of the real `shop`
//! binary (`shop serve <service>`, built by `bash tests/run`), so every service
//! is its own process with its own `service.name` and telemetry pipeline, on an
//! ephemeral port (`SHOP_<SERVICE>_ADDR=127.0.0.1:0`). A child stops
//! gracefully, flushing its telemetry, on the SIGTERM the test sends when done.
//!
//! - `checkout_is_one_connected_trace_with_the_contract_events`: register, log
//!   in (once with a wrong password), browse, search, add to cart, check out and
//!   pay through the gateway; then reads `otlp_spans` and `otlp_logs` from Kafka
//!   and checks that the checkout is one trace across gateway, checkout, cart
//!   and payments, with the contract's events on it; then scans the Collector's
//!   file-exporter capture for the raw e-mail, passwords and card number used.
//!   The checkout request carries a `traceparent` with flags `00` (not
//!   sampled): the gateway neither continues it nor lets it switch the shop's
//!   spans off; it starts a trace of its own, sampled by its own policy, and
//!   links it to the caller's context. The test finds the trace by that link.
//! - `bad_input_is_answered_with_4xx_json`: malformed JSON, unknown products,
//!   negative quantities, oversized bodies, SQL-injection strings.
//! - `overload_is_answered_with_429_and_retry_after`: the gateway's rate limit,
//!   and the refusals counted in `shop.http.shed` on the Collector's Prometheus exporter.
//! - `unsampled_requests_still_emit_their_events`: head sampling at 0: the
//!   domain event still reaches Kafka, no span of its trace does.
//! - `answers_do_not_tell_which_accounts_exist_and_lockout_holds_under_concurrency`:
//!   registration answers alike for a new and a taken address; an unknown
//!   name, a wrong password and a locked account are answered alike (401);
//!   concurrent wrong guesses get no more than `SHOP_LOCKOUT_FAILURES`
//!   password checks; the `shop.auth.login` events still say what happened.
//! - `services_refuse_to_start_without_hashing_keys`: auth and payments stop
//!   at start when a hashing key is missing and `SHOP_DEV_KEYS` is not set.
//!
//! Run: `cargo test -p e2e --test shop`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use e2e::otlp::{Signal, attr, attr_str, hex, read_spans_and_logs};
use e2e::shop::{Shop, Shopper, gateway_traces, nonce, require_up};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use serde_json::json;

/// One-second polls of the capture file (the file exporter flushes every second).
const CAPTURE_POLLS: u32 = 60;
/// One-second polls of the Collector's Prometheus exporter.
const PROMETHEUS_POLLS: u32 = 30;

// ---------------------------------------------------------------------------
// Unique secrets for this run

/// A Luhn-valid card number starting 4242 (the simulated processor approves those), unique to the run.
fn unique_card(seed: u64) -> String {
    let mut digits: Vec<u32> = "4242".chars().filter_map(|c| c.to_digit(10)).collect();
    let mut s = seed;
    while digits.len() < 15 {
        digits.push((s % 10) as u32);
        s = s / 10 + 7;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                *d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
        .collect()
}

/// A trace id of the test's own, for a caller's `traceparent`.
fn caller_trace_id(seed: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seed.to_be_bytes());
    id[8..].copy_from_slice(
        &seed
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_be_bytes(),
    );
    id
}

// ---------------------------------------------------------------------------
// Reading back from Kafka

#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    name: String,
    kind: i32,
    span_id: String,
    parent: String,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
    attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone)]
struct EventSeen {
    service: String,
    name: String,
    span_id: String,
    attributes: Vec<KeyValue>,
}

#[derive(Default)]
struct TraceSeen {
    spans: Vec<SpanSeen>,
    events: Vec<EventSeen>,
}

impl TraceSeen {
    fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }
    fn event_names(&self) -> BTreeSet<&str> {
        self.events.iter().map(|e| e.name.as_str()).collect()
    }
    fn complete(&self) -> bool {
        let services = self.services();
        let events = self.event_names();
        [
            "shop-gateway",
            "shop-checkout",
            "shop-cart",
            "shop-payments",
        ]
        .iter()
        .all(|s| services.contains(s))
            && [
                "shop.checkout.started",
                "shop.payment.attempt",
                "shop.order.placed",
            ]
            .iter()
            .all(|e| events.contains(e))
    }
}

/// Reads `otlp_spans` and `otlp_logs` from `since_ms` on until `done` holds
/// for what was seen of the trace (then a few quiet seconds for stragglers).
async fn read_trace(
    trace_id: &[u8; 16],
    since_ms: i64,
    done: impl Fn(&TraceSeen) -> bool,
) -> Result<TraceSeen> {
    let mut seen = TraceSeen::default();
    let read = read_spans_and_logs(
        since_ms,
        &format!("shop-e2e-{}", hex(trace_id)),
        &mut seen,
        |seen, signal| match signal {
            Signal::Span(service, s) if s.trace_id == trace_id => seen.spans.push(SpanSeen {
                service,
                name: s.name,
                kind: s.kind,
                span_id: hex(&s.span_id),
                parent: hex(&s.parent_span_id),
                links: s
                    .links
                    .iter()
                    .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                    .collect(),
                attributes: s.attributes,
            }),
            Signal::Log(service, r) if r.trace_id == trace_id && !r.event_name.is_empty() => {
                seen.events.push(EventSeen {
                    service,
                    name: r.event_name,
                    span_id: hex(&r.span_id),
                    attributes: r.attributes,
                })
            }
            _ => {}
        },
        done,
    )
    .await?;
    ensure!(
        read.complete,
        "kafka: the trace {} never arrived complete (read {} records, idle {} s): \
         services {:?}, events {:?}",
        hex(trace_id),
        read.records,
        read.idle,
        seen.services(),
        seen.event_names()
    );
    Ok(seen)
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_is_one_connected_trace_with_the_contract_events() -> Result<()> {
    require_up("kafka", 19092)?;
    require_up("otelcol", 4317)?;
    let since_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 10_000;
    let mut shop = Shop::start("journey", &[])?;
    let n = nonce();
    let email = format!("e2e.shopper.{n:x}@example.org");
    let password = format!("pw-{n:x}-Secret!");
    let wrong_password = format!("wrong-{n:x}-Guess!");
    let card = unique_card(n);
    let client = "203.0.113.77";
    let mut shopper = Shopper::new(shop.gateway(), client)?;

    // Register; a failed login; the real login.
    shopper
        .expect(
            reqwest::Method::POST,
            "/api/auth/register",
            Some(json!({"email": email, "password": password})),
            202,
        )
        .await?;
    shopper
        .expect(
            reqwest::Method::POST,
            "/api/auth/login",
            Some(json!({"email": email, "password": wrong_password})),
            401,
        )
        .await?;
    let logged = shopper
        .expect(
            reqwest::Method::POST,
            "/api/auth/login",
            Some(json!({"email": email, "password": password})),
            200,
        )
        .await?;
    let user_id = logged["user_id"]
        .as_str()
        .with_context(|| format!("login answered {logged}"))?
        .to_owned();
    // A seeded account with its known password works too.
    let mut other = Shopper::new(shop.gateway(), "198.51.100.23")?;
    other
        .expect(
            reqwest::Method::POST,
            "/api/auth/login",
            Some(json!({"email": "shopper0042@example.com", "password": "shopper-0042-pass"})),
            200,
        )
        .await?;

    // Browse, search, add to the cart.
    let categories = shopper
        .expect(reqwest::Method::GET, "/api/categories", None, 200)
        .await?;
    ensure!(
        categories["categories"]
            .as_array()
            .is_some_and(|c| c.len() >= 8),
        "{categories}"
    );
    let listed = shopper
        .expect(
            reqwest::Method::GET,
            "/api/products?category=books&per_page=5",
            None,
            200,
        )
        .await?;
    ensure!(
        listed["products"].as_array().is_some_and(|p| p.len() == 5),
        "{listed}"
    );
    let product = shopper
        .expect(reqwest::Method::GET, "/api/products/123", None, 200)
        .await?;
    ensure!(product["id"] == 123, "{product}");
    let found = shopper
        .expect(reqwest::Method::GET, "/api/search?q=lamp", None, 200)
        .await?;
    ensure!(found["results"].as_i64().is_some_and(|r| r > 0), "{found}");
    let cart = shopper
        .expect(
            reqwest::Method::POST,
            "/api/cart/items",
            Some(json!({"product_id": 123, "quantity": 2})),
            201,
        )
        .await?;
    shopper
        .expect(
            reqwest::Method::POST,
            "/api/cart/items",
            Some(json!({"product_id": 7, "quantity": 1})),
            201,
        )
        .await?;
    ensure!(cart["items"][0]["quantity"] == 2, "{cart}");

    // Check out and pay, sent as a caller that did not sample its trace
    // (flags 00): the gateway starts a trace of its own all the same.
    let caller_trace = caller_trace_id(n);
    let caller_span = format!("{:016x}", n | 1);
    let traceparent = format!("00-{}-{caller_span}-00", hex(&caller_trace));
    let body = json!({"card": {"number": card, "expiry": "12/39", "cvv": "737"}});
    let placed = shopper
        .send(
            reqwest::Method::POST,
            "/api/checkout",
            Some(serde_json::to_vec(&body)?),
            Some(&traceparent),
        )
        .await?;
    ensure!(
        placed.status == 201,
        "checkout answered {} {}",
        placed.status,
        placed.body
    );
    ensure!(placed.body["items"] == 3, "{}", placed.body);
    let empty = shopper
        .expect(reqwest::Method::GET, "/api/cart", None, 200)
        .await?;
    ensure!(
        empty["items"].as_array().is_some_and(|i| i.is_empty()),
        "the cart was not emptied: {empty}"
    );
    // A declined card: a 402 with the decline code.
    shopper
        .expect(
            reqwest::Method::POST,
            "/api/cart/items",
            Some(json!({"product_id": 5, "quantity": 1})),
            201,
        )
        .await?;
    let declined = shopper
        .expect(
            reqwest::Method::POST,
            "/api/checkout",
            Some(
                json!({"card": {"number": "4000 0000 0000 9995", "expiry": "12/39", "cvv": "737"}}),
            ),
            402,
        )
        .await?;
    ensure!(
        declined["error"]["details"]["decline_code"] == "insufficient_funds",
        "{declined}"
    );

    // Graceful shutdown flushes every service's telemetry.
    shop.stop();

    // The gateway's trace, found by its link to ours: not ours, and exported
    // although our flags said "not sampled".
    let group = format!("shop-e2e-{}", hex(&caller_trace));
    let started = gateway_traces(since_ms, &group, &[caller_trace.to_vec()]).await?;
    let trace_id: [u8; 16] = started
        .get(caller_trace.as_slice())
        .and_then(|t| t.as_slice().try_into().ok())
        .context("no gateway trace for the checkout")?;
    ensure!(
        trace_id != caller_trace,
        "the gateway continued the caller's trace {}",
        hex(&caller_trace)
    );
    let seen = read_trace(&trace_id, since_ms, TraceSeen::complete).await?;
    // One connected trace: every span's parent is in the trace, except the
    // gateway's SERVER span, which has none (a new trace).
    let ids: BTreeSet<&str> = seen.spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&SpanSeen> = seen
        .spans
        .iter()
        .filter(|s| !ids.contains(s.parent.as_str()))
        .collect();
    ensure!(
        roots.len() == 1,
        "the trace has {} roots: {roots:#?}",
        roots.len()
    );
    let root = roots[0];
    ensure!(
        root.service == "shop-gateway"
            && root.name == "POST /api/checkout"
            && root.kind == 2
            && root.parent.is_empty(),
        "the root is not the gateway's SERVER span starting the trace: {root:#?}"
    );
    ensure!(
        root.links == vec![(hex(&caller_trace), caller_span.clone())],
        "the gateway's SERVER span does not link to the caller's context: {root:#?}"
    );
    ensure!(
        attr_str(&root.attributes, "client.address") == Some(client),
        "client.address: {root:#?}"
    );
    ensure!(
        attr_str(&root.attributes, "user.id") == Some(user_id.as_str()),
        "user.id: {root:#?}"
    );
    ensure!(
        attr_str(&root.attributes, "http.route") == Some("/api/checkout"),
        "http.route: {root:#?}"
    );
    ensure!(
        attr_str(&root.attributes, "session.id").is_some(),
        "session.id: {root:#?}"
    );
    // CLIENT/SERVER pairs across every hop.
    for (client_service, server_service) in [
        ("shop-gateway", "shop-checkout"),
        ("shop-checkout", "shop-cart"),
        ("shop-checkout", "shop-payments"),
    ] {
        let paired = seen.spans.iter().any(|server| {
            server.service == server_service
                && server.kind == 2
                && seen.spans.iter().any(|c| {
                    c.service == client_service && c.kind == 3 && c.span_id == server.parent
                })
        });
        ensure!(
            paired,
            "no CLIENT span of {client_service} parents a SERVER span of {server_service}"
        );
    }
    // Database spans, parameterised.
    let inserts: Vec<&SpanSeen> = seen
        .spans
        .iter()
        .filter(|s| attr_str(&s.attributes, "db.system.name") == Some("postgresql"))
        .collect();
    ensure!(
        !inserts.is_empty(),
        "no PostgreSQL span in the checkout trace"
    );
    for s in &inserts {
        let text = attr_str(&s.attributes, "db.query.text").unwrap_or_default();
        ensure!(
            text.contains("$1") && !text.contains(&user_id),
            "db.query.text not parameterised: {text}"
        );
    }
    ensure!(
        seen.spans
            .iter()
            .any(|s| attr_str(&s.attributes, "db.system.name") == Some("redis")),
        "no Redis span in the checkout trace"
    );
    // The contract's events, each inside a span of the trace, with the caller.
    for e in &seen.events {
        ensure!(
            ids.contains(e.span_id.as_str()),
            "event {} is outside the trace's spans",
            e.name
        );
        ensure!(
            attr_str(&e.attributes, "client.address") == Some(client),
            "{}: client.address",
            e.name
        );
        ensure!(
            attr_str(&e.attributes, "user.id") == Some(user_id.as_str()),
            "{}: user.id",
            e.name
        );
        ensure!(
            attr_str(&e.attributes, "session.id").is_some(),
            "{}: session.id",
            e.name
        );
    }
    let payment = seen
        .events
        .iter()
        .find(|e| e.name == "shop.payment.attempt")
        .context("no payment event")?;
    ensure!(payment.service == "shop-payments", "{payment:?}");
    ensure!(
        attr_str(&payment.attributes, "shop.payment.outcome") == Some("approved"),
        "{payment:?}"
    );
    let fingerprint =
        attr_str(&payment.attributes, "shop.payment.card.fingerprint").unwrap_or_default();
    ensure!(
        fingerprint.len() == 16 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()),
        "fingerprint {fingerprint:?}"
    );
    let order = seen
        .events
        .iter()
        .find(|e| e.name == "shop.order.placed")
        .context("no order event")?;
    ensure!(
        attr_str(&order.attributes, "shop.order.id") == placed.body["order_id"].as_str(),
        "{order:?} vs {}",
        placed.body
    );
    match attr(&order.attributes, "shop.order.items") {
        Some(any_value::Value::IntValue(3)) => {}
        other => bail!("shop.order.items = {other:?}"),
    }
    match attr(&order.attributes, "shop.order.amount") {
        Some(any_value::Value::DoubleValue(v)) if Some(*v) == placed.body["amount"].as_f64() => {}
        other => bail!("shop.order.amount = {other:?}"),
    }
    // The service redacted by itself: the Collector found nothing to mask in this trace.
    for s in &seen.spans {
        ensure!(
            !s.attributes
                .iter()
                .any(|kv| kv.key.starts_with("redaction.masked")),
            "the Collector had to mask something in span {s:?}"
        );
    }

    // The redaction scan over everything the Collector wrote to its capture.
    let path = e2e::collector_capture_file();
    let trace_hex = hex(&trace_id);
    let mut captured = String::new();
    for _ in 0..CAPTURE_POLLS {
        captured = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the capture {}", path.display()))?;
        if captured.contains(&trace_hex) && captured.contains("shop.order.placed") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ensure!(
        captured.contains(&trace_hex),
        "the capture {} never held the checkout trace",
        path.display()
    );
    let card_grouped: String = card
        .chars()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    for (what, secret) in [
        ("e-mail address", email.as_str()),
        (
            "e-mail local part",
            email.split('@').next().unwrap_or_default(),
        ),
        ("password", password.as_str()),
        ("wrong password", wrong_password.as_str()),
        ("card number", card.as_str()),
        ("grouped card number", card_grouped.as_str()),
        ("seeded account's e-mail", "shopper0042@example.com"),
        ("seeded account's password", "shopper-0042-pass"),
    ] {
        ensure!(
            !captured.contains(secret),
            "the capture {} contains the raw {what}",
            path.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_with_4xx_json() -> Result<()> {
    let shop = Shop::start("badinput", &[])?;
    let mut s = Shopper::new(shop.gateway(), "192.0.2.44")?;
    let raw = |b: &str| Some(b.as_bytes().to_vec());
    let big = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<(reqwest::Method, String, Option<Vec<u8>>, u16)> = vec![
        (
            reqwest::Method::POST,
            "/api/auth/login".into(),
            raw("{\"email\": \"a@b.c\", "),
            400,
        ),
        (
            reqwest::Method::POST,
            "/api/auth/login".into(),
            raw("[1, 2, 3]"),
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/auth/register".into(),
            raw("{\"email\": \"x\", \"password\": \"longenough\"}"),
            422,
        ),
        (
            reqwest::Method::GET,
            "/api/products/999999".into(),
            None,
            404,
        ),
        (reqwest::Method::GET, "/api/products/-4".into(), None, 400),
        (
            reqwest::Method::GET,
            "/api/products/1%27%20OR%20%271%27=%271".into(),
            None,
            400,
        ),
        (
            reqwest::Method::GET,
            "/api/search?q=%27%3B%20DROP%20TABLE%20products%3B--".into(),
            None,
            200,
        ),
        (
            reqwest::Method::GET,
            "/api/products?category=%27%20OR%201=1--".into(),
            None,
            422,
        ),
        (
            reqwest::Method::GET,
            "/api/products?page=-1".into(),
            None,
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/cart/items".into(),
            raw("{\"product_id\": 12, \"quantity\": -3}"),
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/cart/items".into(),
            raw("{\"product_id\": 999999, \"quantity\": 1}"),
            404,
        ),
        (
            reqwest::Method::POST,
            "/api/cart/items".into(),
            raw("{\"product_id\": \"12; DROP TABLE\", \"quantity\": 1}"),
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/cart/items".into(),
            raw("{\"product_id\": 12, \"quantity\": 1e99}"),
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/checkout".into(),
            raw("{\"card\": {}}"),
            422,
        ),
        (
            reqwest::Method::POST,
            "/api/checkout".into(),
            raw(
                "{\"card\": {\"number\": \"4242424242424242\", \"expiry\": \"12/39\", \"cvv\": \"123\"}}",
            ),
            401,
        ),
        (
            reqwest::Method::POST,
            "/api/auth/login".into(),
            raw("{\"email\": \"' OR 1=1 --\", \"password\": \"' OR '1'='1\"}"),
            401,
        ),
        (reqwest::Method::DELETE, "/api/checkout".into(), None, 405),
        (reqwest::Method::GET, "/api/nothing/here".into(), None, 404),
    ];
    for (method, path, body, expected) in cases {
        let a = s.send(method.clone(), &path, body, None).await?;
        ensure!(
            a.status == expected,
            "{method} {path}: expected {expected}, got {} {}",
            a.status,
            a.body
        );
        if expected >= 400 {
            ensure!(
                a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(),
                "{method} {path}: no JSON error body: {}",
                a.body
            );
        }
    }
    // An oversized body, on a connection of its own: the gateway answers 413
    // before reading it all and closes that connection.
    let mut oversized = Shopper::new(shop.gateway(), "192.0.2.45")?;
    let a = oversized
        .send(
            reqwest::Method::POST,
            "/api/auth/register",
            Some(big.into_bytes()),
            None,
        )
        .await?;
    ensure!(
        a.status == 413 && a.body["error"]["code"] == "body_too_large",
        "oversized body: {} {}",
        a.status,
        a.body
    );
    // Still serving after all that.
    s.expect(reqwest::Method::GET, "/api/products/1", None, 200)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_with_429_and_retry_after() -> Result<()> {
    let shop = Shop::start(
        "overload",
        &[
            ("SHOP_RATE_LIMIT_RPS", "0.5"),
            ("SHOP_RATE_LIMIT_BURST", "3"),
        ],
    )?;
    let mut noisy = Shopper::new(shop.gateway(), "203.0.113.200")?;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..10 {
        let a = noisy.get("/api/categories").await?;
        if a.status == 429 {
            ensure!(a.body["error"]["code"] == "rate_limited", "{}", a.body);
            retry_after = a.retry_after.clone();
        }
        statuses.push(a.status);
    }
    ensure!(
        statuses.iter().filter(|s| **s == 200).count() >= 1,
        "{statuses:?}"
    );
    ensure!(statuses.contains(&429), "no 429 among {statuses:?}");
    let seconds: u64 = retry_after.context("429 without Retry-After")?.parse()?;
    ensure!(seconds >= 1, "Retry-After {seconds}");
    // Another client is not affected.
    let mut quiet = Shopper::new(shop.gateway(), "203.0.113.201")?;
    quiet
        .expect(reqwest::Method::GET, "/api/categories", None, 200)
        .await?;
    // Visible in metrics: the refusals reach the Collector's Prometheus exporter.
    let instance = shop.urls["gateway"].clone();
    drop(shop);
    require_up("otelcol", 8889)?;
    let http = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..PROMETHEUS_POLLS {
        last = http
            .get("http://127.0.0.1:8889/metrics")
            .send()
            .await?
            .text()
            .await?;
        if last.lines().any(|l| {
            l.starts_with("shop_http_shed")
                && l.contains("rate_limit")
                && l.contains("shop-gateway")
                && l.contains("environment_name=\"e2e\"")
        }) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "no shop_http_shed rate_limit series of the gateway ({instance}) on the Collector's \
         Prometheus exporter; shop lines: {:?}",
        last.lines()
            .filter(|l| l.starts_with("shop_"))
            .take(10)
            .collect::<Vec<_>>()
    )
}

/// The `shop.auth.login` events of one account (by `user.hash`), and the
/// trace ids of every span, read from Kafka until `wanted` events came.
#[derive(Default)]
struct Logins {
    /// (trace id, `shop.auth.failure_reason` or `success`) per event.
    events: Vec<(Vec<u8>, String)>,
    span_traces: BTreeSet<Vec<u8>>,
}

async fn read_logins(since_ms: i64, user_hash: &str, wanted: usize) -> Result<Logins> {
    let mut seen = Logins::default();
    let read = read_spans_and_logs(
        since_ms,
        &format!("shop-e2e-logins-{user_hash}"),
        &mut seen,
        |seen, signal| match signal {
            Signal::Span(_, s) => {
                seen.span_traces.insert(s.trace_id);
            }
            Signal::Log(_, r)
                if r.event_name == "shop.auth.login"
                    && attr_str(&r.attributes, "user.hash") == Some(user_hash) =>
            {
                let what = attr_str(&r.attributes, "shop.auth.failure_reason")
                    .or_else(|| attr_str(&r.attributes, "shop.auth.outcome"))
                    .unwrap_or_default()
                    .to_owned();
                seen.events.push((r.trace_id, what));
            }
            Signal::Log(..) => {}
        },
        |seen| seen.events.len() >= wanted,
    )
    .await?;
    ensure!(
        read.complete,
        "kafka: {} of {wanted} shop.auth.login events of {user_hash} (read {} records, idle {} s)",
        seen.events.len(),
        read.records,
        read.idle
    );
    Ok(seen)
}

/// The gateway samples by its own policy, whatever the caller says: with
/// head sampling at 0, a request whose caller claims a sampled trace (flags
/// 01) exports no span; its domain event still reaches Kafka, in the
/// gateway's trace, not the caller's. Head sampling drops spans, never events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_still_emit_their_events() -> Result<()> {
    require_up("kafka", 19092)?;
    require_up("otelcol", 4317)?;
    let since_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 10_000;
    let mut shop = Shop::start("unsampled", &[("OTEL_TRACES_SAMPLER_ARG", "0")])?;
    let n = nonce() ^ 0x5a5a;
    let caller_trace = caller_trace_id(n);
    let traceparent = format!("00-{}-{:016x}-01", hex(&caller_trace), n | 1);
    let mut s = Shopper::new(shop.gateway(), "198.51.100.99")?;
    let email = format!("unsampled.{n:x}@example.org");
    let body = json!({"email": email, "password": format!("pw-{n:x}-unsampled")});
    let answer = s
        .send(
            reqwest::Method::POST,
            "/api/auth/login",
            Some(serde_json::to_vec(&body)?),
            Some(&traceparent),
        )
        .await?;
    ensure!(
        answer.status == 401,
        "login: {} {}",
        answer.status,
        answer.body
    );
    shop.stop();

    let user_hash = e2e::shop::keys()?.user_hash(&email);
    let seen = read_logins(since_ms, &user_hash, 1).await?;
    let (trace, reason) = &seen.events[0];
    ensure!(reason == "unknown_user", "the event says {reason}");
    ensure!(
        trace.as_slice() != caller_trace.as_slice(),
        "the event is in the caller's trace"
    );
    ensure!(
        !seen.span_traces.contains(trace) && !seen.span_traces.contains(caller_trace.as_slice()),
        "spans of a trace the gateway did not sample were exported"
    );
    Ok(())
}

/// What a client can learn of accounts: nothing. Registration answers a new
/// and a taken address alike; an unknown name, a wrong password and a locked
/// account (even with the right password) are all 401 with the same body.
/// The lockout's check and count are one step: 8 wrong guesses sent at once
/// after one wrong login get exactly `SHOP_LOCKOUT_FAILURES` - 1 password
/// checks between them, the rest are refused as locked. The events tell the
/// truth the rules need (`unknown_user`, `bad_password`, `locked`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_do_not_tell_which_accounts_exist_and_lockout_holds_under_concurrency() -> Result<()>
{
    const FAILURES: usize = 5;
    const CONCURRENT: usize = 8;
    require_up("kafka", 19092)?;
    require_up("otelcol", 4317)?;
    let since_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 - 10_000;
    // Argon2 in a debug build takes a second or more per check: room for
    // the concurrent ones, so that none is cut short by a timeout.
    let mut shop = Shop::start(
        "accounts",
        &[
            ("SHOP_LOCKOUT_FAILURES", "5"),
            ("SHOP_UPSTREAM_TIMEOUT_MS", "120000"),
            ("SHOP_ROUTE_TIMEOUT_MS", "120000"),
        ],
    )?;
    let n = nonce();
    let client = format!(
        "10.{}.{}.{}",
        40 + n % 50,
        (n >> 8) % 250,
        1 + (n >> 16) % 250
    );
    let mut s = Shopper::new(shop.gateway(), &client)?;
    let email = format!("e2e.accounts.{n:x}@example.org");
    let unknown = format!("e2e.nobody.{n:x}@example.org");
    let password = format!("pw-{n:x}-Right!");
    let register = "/api/auth/register";
    let login = "/api/auth/login";

    let new = send_credentials(&mut s, register, &email, &password, 202).await?;
    let taken = send_credentials(&mut s, register, &email, "another-password", 202).await?;
    ensure!(
        new == taken,
        "registration tells a taken address: {new} vs {taken}"
    );
    let nobody = send_credentials(&mut s, login, &unknown, &password, 401).await?;
    let wrong = send_credentials(&mut s, login, &email, "wrong-guess-0", 401).await?;
    ensure!(
        nobody == wrong,
        "unknown name {nobody} vs wrong password {wrong}"
    );

    let base = shop.gateway().to_owned();
    let guesses: Vec<_> = (1..=CONCURRENT)
        .map(|i| {
            let (base, client, email) = (base.clone(), client.clone(), email.clone());
            tokio::spawn(async move {
                let mut guesser = Shopper::new(&base, &client)?;
                let guess = format!("wrong-guess-{i}");
                send_credentials(&mut guesser, login, &email, &guess, 401).await
            })
        })
        .collect();
    for g in guesses {
        let body = g.await??;
        ensure!(body == wrong, "a concurrent guess was answered {body}");
    }
    let locked = send_credentials(&mut s, login, &email, &password, 401).await?;
    ensure!(
        locked == wrong,
        "a locked account answers {locked}, a wrong password {wrong}"
    );
    shop.stop();

    let keys = e2e::shop::keys()?;
    let seen = read_logins(since_ms, &keys.user_hash(&email), CONCURRENT + 2).await?;
    let count = |what: &str| seen.events.iter().filter(|(_, w)| w == what).count();
    ensure!(
        count("bad_password") == FAILURES && count("locked") == CONCURRENT + 2 - FAILURES,
        "expected {FAILURES} bad_password and the rest locked: {:?}",
        seen.events.iter().map(|(_, w)| w).collect::<Vec<_>>()
    );
    let nobody = read_logins(since_ms, &keys.user_hash(&unknown), 1).await?;
    ensure!(
        nobody.events.iter().all(|(_, w)| w == "unknown_user"),
        "{:?}",
        nobody.events
    );
    Ok(())
}

/// `POST path` `{"email", "password"}` as `s`, expecting `status`; the answer's body.
async fn send_credentials(
    s: &mut Shopper,
    path: &str,
    email: &str,
    password: &str,
    status: u16,
) -> Result<serde_json::Value> {
    let body = json!({"email": email, "password": password});
    s.expect(reqwest::Method::POST, path, Some(body), status)
        .await
}

/// A missing hashing key stops the services that hash, with a message that
/// says what to set; `SHOP_DEV_KEYS=true` is the only way to the public keys.
#[test]
fn services_refuse_to_start_without_hashing_keys() -> Result<()> {
    require_up("postgres", 55432)?;
    for service in ["payments", "auth"] {
        let out = std::process::Command::new(e2e::workspace_binary("shop"))
            .args(["serve", service])
            .env(
                format!("SHOP_{}_ADDR", service.to_uppercase()),
                "127.0.0.1:0",
            )
            .env("OTEL_SDK_DISABLED", "true")
            .env_remove("SHOP_USER_HASH_KEY")
            .env_remove("SHOP_CARD_HASH_KEY")
            .env_remove("SHOP_DEV_KEYS")
            .stdin(std::process::Stdio::null())
            .output()
            .context("running shop serve")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("HASH_KEY is not set")
                && stderr.contains("SHOP_DEV_KEYS"),
            "{service} without keys: {:?}\n{stderr}",
            out.status
        );
    }
    Ok(())
}
