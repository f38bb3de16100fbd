//! The shop's six services as child processes of the real `shop` binary, and
//! a shopper that talks to the gateway.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;
use shop::services::Service;

/// The hashing keys the tests' services run with (set explicitly: the shop
/// has no default outside `SHOP_DEV_KEYS=true`); `shop-load` needs the same
/// for its truth.
pub const KEYS_ENV: [(&str, &str); 2] = [
    ("SHOP_USER_HASH_KEY", "e2e user.hash key, not a secret"),
    (
        "SHOP_CARD_HASH_KEY",
        "e2e card fingerprint key, not a secret",
    ),
];

/// The `/admin/chaos` bearer token of the tests' services.
pub const ADMIN_TOKEN: &str = "e2e chaos admin token, not a secret";

/// The keys of [`KEYS_ENV`], to compute what the shop's events carry.
pub fn keys() -> Result<shop::services::security::Keys> {
    shop::services::security::Keys::from_vars(
        |var| {
            KEYS_ENV
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        },
        false,
    )
    .context("the e2e hashing keys")
}

/// The six services, started in dependency order; stopped (SIGTERM, then
/// waited for) when dropped.
pub struct Shop {
    children: Vec<(Service, Child, PathBuf)>,
    /// Base URL of each service by its short name (`gateway`, ...).
    pub urls: BTreeMap<&'static str, String>,
    /// Base URL of the gateway's admin listener (`/admin/chaos`, never on the
    /// gateway's public one).
    pub gateway_admin: Option<String>,
}

impl Shop {
    pub fn start(test: &str, extra_env: &[(&str, &str)]) -> Result<Shop> {
        require_up("postgres", 55432)?;
        require_up("redis", 56379)?;
        let exe = crate::workspace_binary("shop");
        let mut shop = Shop {
            children: Vec::new(),
            urls: BTreeMap::new(),
            gateway_admin: None,
        };
        for service in [
            Service::Payments,
            Service::Catalog,
            Service::Auth,
            Service::Cart,
            Service::Checkout,
            Service::Gateway,
        ] {
            let log = std::env::temp_dir().join(format!(
                "shop-e2e-{test}-{}-{}.log",
                service.name(),
                std::process::id()
            ));
            let mut cmd = Command::new(&exe);
            cmd.args(["serve", service.name()])
                .env(
                    format!("SHOP_{}_ADDR", service.name().to_uppercase()),
                    "127.0.0.1:0",
                )
                .env("OTEL_TRACES_SAMPLER_ARG", "1.0")
                .env("OTEL_BSP_SCHEDULE_DELAY", "200")
                .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
                .env("OTEL_METRIC_EXPORT_INTERVAL", "2000")
                .env("SHOP_ENVIRONMENT", "e2e")
                .env("SHOP_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("SHOP_GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
                .envs(KEYS_ENV)
                .env_remove("SHOP_DEV_KEYS")
                .env("RUST_LOG", "info")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log)?);
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            for (name, url) in &shop.urls {
                cmd.env(format!("SHOP_{}_URL", name.to_uppercase()), url);
            }
            let mut child = cmd.spawn().context("starting a service child process")?;
            let stdout = child.stdout.take().context("child stdout")?;
            shop.children.push((service, child, log.clone()));
            let needle = format!("{} listening on ", service.service_name());
            let admin_needle = format!("{} admin listening on ", service.service_name());
            let mut lines = BufReader::new(stdout).lines();
            let mut admin = None;
            let url = lines
                .by_ref()
                .take(50)
                .map_while(|l| l.ok())
                .find_map(|l| {
                    if let Some((_, url)) = l.split_once(&admin_needle) {
                        admin = Some(url.trim().to_owned());
                        return None;
                    }
                    l.split_once(&needle).map(|(_, url)| url.trim().to_owned())
                })
                .ok_or_else(|| {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                    anyhow!(
                        "{} did not start (log {}):\n{}",
                        service.service_name(),
                        log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })?;
            // Keep draining the child's stdout: a closed pipe would fail its next write.
            std::thread::spawn(move || lines.for_each(drop));
            shop.urls.insert(service.name(), url);
            if service == Service::Gateway {
                shop.gateway_admin = admin;
            }
        }
        Ok(shop)
    }

    pub fn gateway(&self) -> &str {
        &self.urls["gateway"]
    }

    /// Where `service` serves `/admin/chaos`: its own listener, or the
    /// gateway's admin listener.
    pub fn admin_url(&self, service: &str) -> Result<String> {
        let base = match service {
            "gateway" => self
                .gateway_admin
                .clone()
                .context("the gateway printed no admin listener")?,
            s => self
                .urls
                .get(s)
                .cloned()
                .with_context(|| format!("no service {s}"))?,
        };
        Ok(format!("{base}/admin/chaos"))
    }

    /// Stops every service gracefully (their telemetry is flushed on the way out).
    pub fn stop(&mut self) {
        for (_, child, _) in self.children.iter_mut().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for (_, child, _) in &mut self.children {
            let mut exited = false;
            for _ in 0..150 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.children.clear();
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn require_up(component: &str, port: u16) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(drop)
        .map_err(|e| {
            anyhow!(
                "{component} is not answering on {addr} ({e}): start the stack with `compose/local/stack up`"
            )
        })
}

// ---------------------------------------------------------------------------
// A shopper

/// A client of the gateway: keeps the session cookie, plays the client
/// `forwarded_for` (the gateway trusts loopback's `X-Forwarded-For`).
pub struct Shopper {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    forwarded_for: String,
}

/// A status and its JSON body (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Shopper {
    pub fn new(base: &str, forwarded_for: &str) -> Result<Shopper> {
        Ok(Shopper {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.to_owned(),
            cookie: None,
            forwarded_for: forwarded_for.to_owned(),
        })
    }

    pub async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        traceparent: Option<&str>,
    ) -> Result<Answer> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("user-agent", "shop-e2e/1.0")
            .header("x-forwarded-for", &self.forwarded_for);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        if let Some(set) = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
        {
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("{method} {path} answered {status} with non-JSON {text:?}")
            })?
        };
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer> {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    pub async fn expect(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Result<Value> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let a = self.send(method.clone(), path, body, None).await?;
        ensure!(
            a.status == status,
            "{method} {path}: expected {status}, got {} {}",
            a.status,
            a.body
        );
        Ok(a.body)
    }
}

/// A number unique to this run (time and process id), for names and secrets.
pub fn nonce() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

// ---------------------------------------------------------------------------
// Traces the gateway started

/// The traces the gateway started for requests whose `traceparent` carried
/// the trace ids `callers`: the gateway never continues an outside trace, it
/// starts its own and keeps the caller's context as a link on its SERVER
/// span. Reads `otlp_spans` from `since_ms` until every caller is found;
/// returns caller trace id → the gateway's trace id.
pub async fn gateway_traces(
    since_ms: i64,
    group: &str,
    callers: &[Vec<u8>],
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let read = crate::otlp::read_spans_and_logs(
        since_ms,
        group,
        &mut found,
        |found, signal| {
            if let crate::otlp::Signal::Span(service, span) = signal
                && service == "shop-gateway"
                && span.kind == SPAN_KIND_SERVER
            {
                for link in &span.links {
                    if callers.contains(&link.trace_id) {
                        found.insert(link.trace_id.clone(), span.trace_id.clone());
                    }
                }
            }
        },
        |found| found.len() == callers.len(),
    )
    .await?;
    ensure!(
        read.complete,
        "kafka: no gateway SERVER span links to {:?} (read {} records, idle {} s)",
        callers
            .iter()
            .filter(|c| !found.contains_key(*c))
            .map(|c| crate::otlp::hex(c))
            .collect::<Vec<_>>(),
        read.records,
        read.idle
    );
    Ok(found)
}

/// `SPAN_KIND_SERVER` of OTLP.
const SPAN_KIND_SERVER: i32 = 2;
