//! `gateway`: the edge. Routes the public API to the services, owns sessions
//! (Redis), finds the end client's address, rate-limits per client and sheds
//! load; serves `GET /openapi.json` and `GET /healthz`.
//!
//! - Client address: the socket peer, or, when the peer is a trusted proxy
//!   (`SHOP_TRUSTED_PROXIES`, default `loopback`: 127.0.0.0/8 and ::1), the first
//!   untrusted hop of `X-Forwarded-For` read from the right.
//! - Sessions: cookie `shop_session` (a random secret); Redis keeps
//!   `session:<sha256 of the secret>` = `{"id", "user_id"}` for 30 minutes. The
//!   public `session.id` is a separate random id; the secret is never recorded.
//!   Login rotates the secret.
//! - Rate limit: a token bucket per client address, `SHOP_RATE_LIMIT_RPS`
//!   (default 20) refilled, `SHOP_RATE_LIMIT_BURST` (default 40) deep: 429 +
//!   `Retry-After`. Load shedding: more than `SHOP_GATEWAY_MAX_IN_FLIGHT` (default
//!   256) requests in flight: 503 + `Retry-After`. Both counted in `shop.http.shed`.
//! - Headers `x-shop-*` from outside are dropped; the gateway sets them for the
//!   services behind it (see [`super::http::Caller`]).
//! - Tracing: every request from outside starts a new trace, sampled by the
//!   gateway's own policy; a caller's `traceparent` is not continued (it
//!   would let the caller choose the trace id and switch the shop's spans
//!   off with flags `00`) but kept as a link on the SERVER span. Behind the
//!   gateway, the services continue the gateway's trace.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::trace::TraceContextExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::http::{self, ApiError, Caller, HttpMetrics, MAX_BODY_BYTES, Upstream};
use super::store::Kv;
use super::{Config, Service, env_num};

const COOKIE: &str = "shop_session";
const SESSION_TTL_SECONDS: u64 = 1800;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    id: String,
    user_id: Option<String>,
}

#[derive(Clone)]
struct Gateway {
    kv: Kv,
    upstreams: Arc<HashMap<&'static str, Upstream>>,
    buckets: Arc<Mutex<HashMap<IpAddr, (f64, Instant)>>>,
    rps: f64,
    burst: f64,
    in_flight: Arc<Semaphore>,
    metrics: HttpMetrics,
}

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let mut upstreams = HashMap::new();
    for s in [
        Service::Auth,
        Service::Catalog,
        Service::Cart,
        Service::Checkout,
    ] {
        upstreams.insert(s.name(), config.upstream(s)?);
    }
    let gw = Gateway {
        kv: Kv::connect(&config.redis_url, config.chaos.clone()).await?,
        upstreams: Arc::new(upstreams),
        buckets: Arc::default(),
        rps: env_num("SHOP_RATE_LIMIT_RPS", 20.0),
        burst: env_num("SHOP_RATE_LIMIT_BURST", 40.0),
        in_flight: Arc::new(Semaphore::new(env_num("SHOP_GATEWAY_MAX_IN_FLIGHT", 256))),
        metrics: metrics.clone(),
    };

    macro_rules! to {
        ($service:expr, $route:literal, $query:expr) => {
            |State(gw): State<Gateway>, req: Request| async move {
                forward(gw, req, $service, $route, $query).await
            }
        };
    }
    let api = Router::new()
        .route(
            "/api/auth/register",
            post(to!(Service::Auth, "/api/auth/register", false)),
        )
        .route(
            "/api/auth/login",
            post(to!(Service::Auth, "/api/auth/login", false)),
        )
        .route("/api/auth/logout", post(logout))
        .route(
            "/api/categories",
            get(to!(Service::Catalog, "/api/categories", false)),
        )
        .route(
            "/api/products",
            get(to!(Service::Catalog, "/api/products", true)),
        )
        .route(
            "/api/products/{id}",
            get(to!(Service::Catalog, "/api/products/{id}", false)),
        )
        .route(
            "/api/search",
            get(to!(Service::Catalog, "/api/search", true)),
        )
        .route(
            "/api/cart",
            get(to!(Service::Cart, "/api/cart", false)).delete(to!(
                Service::Cart,
                "/api/cart",
                false
            )),
        )
        .route(
            "/api/cart/items",
            post(to!(Service::Cart, "/api/cart/items", false)),
        )
        .route(
            "/api/checkout",
            post(to!(Service::Checkout, "/api/checkout", false)),
        )
        .layer(from_fn_with_state(gw.clone(), admission))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/openapi.json",
            get(|| async { axum::Json(super::openapi::document()) }),
        )
        .with_state(gw);
    Ok(api)
}

/// Wraps the finished gateway router (outside its SERVER span layer) with
/// [`edge`], so that the span starts knowing who the client is.
pub fn with_edge(app: Router) -> Router {
    let trusted = Arc::new(TrustedProxies::from_env());
    app.layer(from_fn(move |req, next| edge(trusted.clone(), req, next)))
}

// ---------------------------------------------------------------------------
// The end client

/// Which peers may tell the client's address in `X-Forwarded-For`.
pub struct TrustedProxies {
    loopback: bool,
    addresses: Vec<IpAddr>,
}

impl TrustedProxies {
    pub fn from_env() -> Self {
        Self::parse(
            &std::env::var("SHOP_TRUSTED_PROXIES").unwrap_or_else(|_| "loopback".to_owned()),
        )
    }

    /// `loopback` and/or IP addresses, comma-separated; `none` trusts nobody.
    pub fn parse(list: &str) -> Self {
        let mut t = TrustedProxies {
            loopback: false,
            addresses: Vec::new(),
        };
        for item in list.split(',').map(str::trim) {
            if item == "loopback" {
                t.loopback = true;
            } else if let Ok(ip) = item.parse() {
                t.addresses.push(ip);
            }
        }
        t
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        (self.loopback && ip.is_loopback()) || self.addresses.contains(&ip)
    }

    /// The end client: the peer, or the first untrusted hop of `X-Forwarded-For` from the right.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().rsplit(',').map(str::trim) {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// Outermost gateway middleware: who the client is, before the SERVER span starts.
async fn edge(trusted: Arc<TrustedProxies>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let headers = req.headers_mut();
    let internal: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-shop-"))
        .cloned()
        .collect();
    for k in internal {
        headers.remove(k);
    }
    // A trace of our own: the caller's context becomes a link, never the parent.
    let outside = crate::telemetry::extract(headers);
    for name in ["traceparent", "tracestate"] {
        headers.remove(name);
    }
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client = trusted.client(peer, xff);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    let session_id = None;
    let linked = outside.span().span_context().clone();
    if linked.is_valid() {
        req.extensions_mut().insert(http::CallerTrace(linked));
    }
    req.extensions_mut().insert(Caller {
        client_address: client.to_string(),
        user_agent,
        session_id,
        user_id: None,
    });
    next.run(req).await
}

// ---------------------------------------------------------------------------
// Admission: load shedding and rate limiting

async fn admission(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let Ok(_permit) = gw.in_flight.clone().try_acquire_owned() else {
        gw.metrics.shed(&route, "concurrency");
        return ApiError::overloaded("overloaded", 1).into_response();
    };
    let client = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.client_address.parse::<IpAddr>().ok());
    if let Some(ip) = client
        && let Some(wait) = gw.take_token(ip)
    {
        gw.metrics.shed(&route, "rate_limit");
        return ApiError::too_many(wait).into_response();
    }
    next.run(req).await
}

impl Gateway {
    /// Takes a token from `ip`'s bucket; Some(seconds to wait) when empty.
    fn take_token(&self, ip: IpAddr) -> Option<u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return None;
        };
        let now = Instant::now();
        if buckets.len() > 100_000 {
            buckets
                .retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() * self.rps < self.burst);
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rps).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(((1.0 - *tokens) / self.rps).ceil().max(1.0) as u64)
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
}

fn session_key(token: &str) -> String {
    format!("session:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

fn set_cookie(token: &str) -> HeaderValue {
    let value =
        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_TTL_SECONDS}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Gateway {
    /// The request's session; a new one (and its cookie) when it has none.
    async fn session(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Session, Option<HeaderValue>), ApiError> {
        if let Some(token) = cookie_token(headers) {
            let found: Option<String> = self
                .kv
                .run(
                    "GET",
                    "GET session:?",
                    redis::cmd("GET").arg(session_key(&token)),
                )
                .await?;
            if let Some(session) = found.and_then(|s| serde_json::from_str::<Session>(&s).ok()) {
                return Ok((session, None));
            }
        }
        let session = Session {
            id: format!("{:016x}", rand::random::<u64>()),
            user_id: None,
        };
        let token = self.store_session(&session).await?;
        Ok((session, Some(set_cookie(&token))))
    }

    /// Stores `session` under a new secret; returns the secret.
    async fn store_session(&self, session: &Session) -> Result<String, ApiError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let json = serde_json::to_string(session).map_err(ApiError::internal)?;
        let _: () = self
            .kv
            .run(
                "SET",
                "SET session:? ? EX ?",
                redis::cmd("SET")
                    .arg(session_key(&token))
                    .arg(json)
                    .arg("EX")
                    .arg(SESSION_TTL_SECONDS),
            )
            .await?;
        Ok(token)
    }

    async fn drop_session(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(token) = cookie_token(headers) {
            let _: i64 = self
                .kv
                .run(
                    "DEL",
                    "DEL session:?",
                    redis::cmd("DEL").arg(session_key(&token)),
                )
                .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Forwarding

async fn forward(
    gw: Gateway,
    req: Request,
    service: Service,
    route: &'static str,
    keep_query: bool,
) -> Response {
    match forward_inner(gw, req, service, route, keep_query).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward_inner(
    gw: Gateway,
    req: Request,
    service: Service,
    route: &'static str,
    keep_query: bool,
) -> Result<Response, ApiError> {
    let upstream = gw
        .upstreams
        .get(service.name())
        .ok_or_else(|| ApiError::internal(format_args!("no upstream {}", service.name())))?
        .clone();
    let (parts, body) = req.into_parts();
    let body: Option<Bytes> = if parts.method == Method::GET || parts.method == Method::DELETE {
        None
    } else {
        Some(
            axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
                    )
                })?,
        )
    };
    let (session, new_cookie) = gw.session(&parts.headers).await?;
    http::record_identity(Some(&session.id), session.user_id.as_deref());
    let mut caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    caller.session_id = Some(session.id.clone());
    caller.user_id = session.user_id.clone();

    let mut target = parts.uri.path().to_owned();
    if keep_query && let Some(q) = parts.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let answer = upstream
        .call(parts.method.clone(), route, &target, &caller, body)
        .await?;
    let mut cookie = new_cookie;

    if route == "/api/auth/login" && answer.status.is_success() {
        // Bind the user to the session under a fresh secret (no session fixation).
        let user: super::auth::Authenticated = answer.json()?;
        gw.drop_session(&parts.headers).await?;
        let bound = Session {
            id: session.id.clone(),
            user_id: Some(user.user_id.clone()),
        };
        let token = gw.store_session(&bound).await?;
        cookie = Some(set_cookie(&token));
        http::record_identity(None, Some(&user.user_id));
    }
    let mut response = answer.into_response();
    if let Some(c) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}

async fn logout(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, ApiError> {
    gw.drop_session(&headers).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("shop_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_is_first_untrusted_hop_from_the_right() {
        let t = TrustedProxies::parse("loopback,10.0.0.2");
        // Direct client: XFF is ignored.
        assert_eq!(
            t.client(ip("198.51.100.7"), Some("1.2.3.4")),
            ip("198.51.100.7")
        );
        // Through trusted proxies: the spoofed left-most entry is not believed.
        assert_eq!(
            t.client(ip("127.0.0.1"), Some("6.6.6.6, 203.0.113.9, 10.0.0.2")),
            ip("203.0.113.9")
        );
        assert_eq!(t.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(t.client(ip("127.0.0.1"), Some("garbage")), ip("127.0.0.1"));
        let none = TrustedProxies::parse("none");
        assert_eq!(
            none.client(ip("127.0.0.1"), Some("203.0.113.9")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn session_cookie_must_be_32_hex() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; shop_session=0123456789abcdef0123456789abcdef"),
        );
        assert_eq!(
            cookie_token(&h).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("shop_session=' OR 1=1 --"),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn session_key_does_not_contain_the_secret() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(!session_key(token).contains(token));
    }
}
