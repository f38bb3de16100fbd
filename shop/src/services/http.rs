//! What every service's HTTP side shares: JSON errors, the JSON extractor,
//! the SERVER span and RED metrics middleware, per-route bounded concurrency
//! and timeouts, the caller context forwarded by the gateway, and the
//! instrumented client for calls between services.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::chaos::Chaos;

/// Largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Headers the gateway sets on calls to the services behind it (and strips from
/// the outside): who the end client is.
pub const H_CLIENT_ADDRESS: &str = "x-shop-client-address";
pub const H_USER_AGENT: &str = "x-shop-user-agent";
pub const H_SESSION_ID: &str = "x-shop-session-id";
pub const H_USER_ID: &str = "x-shop-user-id";

// ---------------------------------------------------------------------------
// Errors

/// An error answered as `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn too_many(retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests, retry later",
        )
        .retry_after(retry_after)
    }
    pub fn overloaded(code: &'static str, retry_after: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "the service is busy, retry later",
        )
        .retry_after(retry_after)
    }
    /// A server-side failure: the cause is logged, the client gets no detail.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let (Some(details), Some(obj)) = (self.details, error.as_object_mut()) {
            obj.insert("details".to_owned(), details);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::overloaded("database_busy", 1),
            e => Self::internal(format_args!("database: {e}")),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    /// Redis out of reach is an outage the client may retry (503); anything else is a 500.
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            tracing::warn!(error = %e, "redis unreachable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "a store this service needs is unreachable, retry later",
            )
            .retry_after(2);
        }
        Self::internal(format_args!("redis: {e}"))
    }
}

/// `axum::Json`, with every rejection answered as a JSON error.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match &rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "bad_body",
    };
    ApiError::new(status, code, rejection.body_text())
}

/// Answers every 4xx/5xx that has no JSON body (unknown route, wrong method,
/// path parameters that do not parse, ...) with a JSON error of the same status.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = match std::str::from_utf8(&text).map(str::trim) {
        Ok(t) if !t.is_empty() => t.to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let mut fresh = ApiError::new(status, code, message).into_response();
    for name in [header::RETRY_AFTER, header::ALLOW] {
        if let Some(v) = parts.headers.get(&name) {
            fresh.headers_mut().insert(name, v.clone());
        }
    }
    fresh
}

/// The handler of panics (tower-http `CatchPanicLayer`): a JSON 500, never a dropped connection.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

// ---------------------------------------------------------------------------
// The caller, as the gateway tells it

/// Who the end client is: set by the gateway on every call behind it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub client_address: String,
    pub user_agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

impl Caller {
    fn from_headers(headers: &HeaderMap, peer: Option<SocketAddr>) -> Caller {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Caller {
            client_address: get(H_CLIENT_ADDRESS)
                .or_else(|| peer.map(|p| p.ip().to_string()))
                .unwrap_or_default(),
            user_agent: get(H_USER_AGENT),
            session_id: get(H_SESSION_ID),
            user_id: get(H_USER_ID),
        }
    }

    /// The headers that forward this caller to the next service.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: Option<&str>| {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                h.insert(name, v);
            }
        };
        put(H_CLIENT_ADDRESS, Some(&self.client_address));
        put(H_USER_AGENT, self.user_agent.as_deref());
        put(H_SESSION_ID, self.session_id.as_deref());
        put(H_USER_ID, self.user_id.as_deref());
        h
    }

    /// The signed-in user, or 401.
    pub fn require_user(&self) -> Result<&str, ApiError> {
        self.user_id
            .as_deref()
            .ok_or_else(|| ApiError::unauthorized("sign in first"))
    }

    /// The session, or 400.
    pub fn require_session(&self) -> Result<&str, ApiError> {
        self.session_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("no_session", "this route needs a session"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Caller::from_headers(&parts.headers, peer))
    }
}

// ---------------------------------------------------------------------------
// SERVER spans and RED metrics

/// The instruments of the HTTP middleware.
#[derive(Clone)]
pub struct HttpMetrics {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    shed: Counter<u64>,
}

impl HttpMetrics {
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("shop.http");
        HttpMetrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of inbound HTTP requests")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ])
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Inbound HTTP requests in flight")
                .build(),
            shed: meter
                .u64_counter("shop.http.shed")
                .with_description("Requests refused by load shedding, rate limiting or timeouts")
                .build(),
        }
    }

    /// Counts one refused request (`reason`: `concurrency`, `timeout`, `rate_limit`).
    pub fn shed(&self, route: &str, reason: &'static str) {
        self.shed.add(
            1,
            &[
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("shop.shed.reason", reason),
            ],
        );
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The trace context an outside caller sent (`traceparent`), which the
/// gateway does not continue: its SERVER span starts a trace of its own and
/// links to this one (see [`super::gateway`]).
#[derive(Clone, Debug)]
pub struct CallerTrace(pub opentelemetry::trace::SpanContext);

/// The route template a request matched, recorded by [`record_route`] for [`observe`].
#[derive(Clone)]
struct RouteTemplate(String);

/// Outer middleware: one SERVER span per request named `{method} {route}`,
/// joined to the caller's W3C trace context (behind the gateway), or, at the
/// gateway, a new trace linked to the outside caller's ([`CallerTrace`]),
/// with the contract's HTTP attributes, ERROR status on 5xx, and the request
/// duration histogram.
pub async fn observe(State(metrics): State<HttpMetrics>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::from_headers(req.headers(), peer));
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = Empty,
        url.path = %req.uri().path(),
        url.scheme = "http",
        http.response.status_code = Empty,
        client.address = %caller.client_address,
        user_agent.original = caller.user_agent.as_deref(),
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        error.type = Empty,
    );
    let _ = span.set_parent(crate::telemetry::extract(req.headers()));
    if let Some(CallerTrace(linked)) = req.extensions().get::<CallerTrace>() {
        span.add_link(linked.clone());
    }
    req.extensions_mut().insert(caller);

    let attrs_method = KeyValue::new("http.request.method", method.to_string());
    metrics.active.add(1, std::slice::from_ref(&attrs_method));
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed().as_secs_f64();
    metrics.active.add(-1, std::slice::from_ref(&attrs_method));

    let status = response.status();
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone());
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    let mut attrs = vec![
        attrs_method,
        KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
    ];
    if let Some(route) = route {
        attrs.push(KeyValue::new("http.route", route));
    }
    metrics.duration.record(elapsed, &attrs);
    response
}

/// Inner middleware (a `route_layer`): names the SERVER span after the matched
/// route template and hands the template to [`observe`] for its metrics.
pub async fn record_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    if let Some(route) = &route {
        let span = tracing::Span::current();
        span.record("http.route", route.as_str());
        let name = format!("{} {route}", req.method());
        span.record("otel.name", name.as_str());
        // Once the span has started, tracing-opentelemetry no longer applies
        // `otel.name`: rename the OpenTelemetry span itself.
        {
            use opentelemetry::trace::TraceContextExt as _;
            span.context().span().update_name(name);
        }
    }
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// Records the signed-in user and session on the current SERVER span (the
/// gateway learns them after the span started).
pub fn record_identity(session_id: Option<&str>, user_id: Option<&str>) {
    let span = tracing::Span::current();
    if let Some(s) = session_id {
        span.record("session.id", s);
    }
    if let Some(u) = user_id {
        span.record("user.id", u);
    }
}

// ---------------------------------------------------------------------------
// Backpressure

/// Bounded concurrency and a deadline for one route: beyond `max_in_flight`
/// requests the route answers 503 with `Retry-After` at once (no queue), and a
/// request that outlives `timeout` is answered 503 as well.
#[derive(Clone)]
pub struct Limit {
    route: &'static str,
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: HttpMetrics,
}

impl Limit {
    pub fn new(
        route: &'static str,
        max_in_flight: usize,
        timeout: Duration,
        metrics: &HttpMetrics,
    ) -> Self {
        Limit {
            route,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            timeout,
            metrics: metrics.clone(),
        }
    }
}

/// The middleware of [`Limit`] (`from_fn_with_state` on one route).
pub async fn limit(State(limit): State<Limit>, req: Request, next: Next) -> Response {
    let Ok(_permit) = limit.permits.clone().try_acquire_owned() else {
        limit.metrics.shed(limit.route, "concurrency");
        return ApiError::overloaded("overloaded", 1).into_response();
    };
    match tokio::time::timeout(limit.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            limit.metrics.shed(limit.route, "timeout");
            ApiError::overloaded("timeout", 2).into_response()
        }
    }
}

/// Per-route limits from the environment: `SHOP_MAX_IN_FLIGHT` (default 64)
/// and `SHOP_ROUTE_TIMEOUT_MS` (default 10000) apply to every route.
pub fn route_limits() -> (usize, Duration) {
    let max = std::env::var("SHOP_MAX_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let ms = std::env::var("SHOP_ROUTE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    (max, Duration::from_millis(ms))
}

// ---------------------------------------------------------------------------
// Calls between services

/// One service behind this one: a base URL, and CLIENT spans around each call.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    base: String,
    client: reqwest::Client,
    chaos: Arc<Chaos>,
}

/// What an upstream answered.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(ApiError::internal)
    }

    /// Passes the answer on unchanged (the gateway's proxying).
    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        if let Some(ct) = self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Some(ra) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        response
    }
}

impl Upstream {
    pub fn new(
        name: &'static str,
        base: impl Into<String>,
        timeout: Duration,
        chaos: Arc<Chaos>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Upstream {
            name,
            base: base.into().trim_end_matches('/').to_owned(),
            client,
            chaos,
        })
    }

    /// Calls `method path` (`route` is its template, for the span name) with
    /// the caller forwarded and the trace context injected. Under the chaos
    /// flag `retry_storm` a failed attempt (refused, timed out, 5xx) is sent
    /// again at once, that many more times, without backoff: each attempt is
    /// a CLIENT span of its own, the retries marked `retry_storm`.
    pub async fn call(
        &self,
        method: Method,
        route: &str,
        path_and_query: &str,
        caller: &Caller,
        body: Option<Bytes>,
    ) -> Result<Answer, ApiError> {
        let retries = self.chaos.retries();
        let mut attempt = 0;
        loop {
            let answer = self
                .attempt(
                    method.clone(),
                    route,
                    path_and_query,
                    caller,
                    body.clone(),
                    attempt,
                )
                .await;
            let failed = answer.as_ref().map_or(true, |a| a.status.is_server_error());
            if !failed || attempt >= retries {
                return answer;
            }
            attempt += 1;
        }
    }

    /// One attempt of [`Upstream::call`]; `retry` counts the attempts before it.
    async fn attempt(
        &self,
        method: Method,
        route: &str,
        path_and_query: &str,
        caller: &Caller,
        body: Option<Bytes>,
        retry: u64,
    ) -> Result<Answer, ApiError> {
        let url = format!("{}{}", self.base, path_and_query);
        let (host, port) = host_port(&self.base);
        let span = tracing::info_span!(
            "HTTP call",
            otel.name = format!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = %method,
            http.route = route,
            server.address = host,
            server.port = port,
            peer.service = self.name,
            http.response.status_code = Empty,
            error.type = Empty,
        );
        async {
            let mut headers = caller.headers();
            crate::telemetry::inject_current(&mut headers);
            let mut request = self.client.request(method, &url).headers(headers);
            if let Some(body) = body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            let span = tracing::Span::current();
            if retry > 0 {
                super::chaos::mark(
                    &span,
                    super::chaos::Fault::RetryStorm,
                    format_args!("retry {retry} of a failed call to {}", self.name),
                );
            }
            let sent = if self.chaos.drop_call(self.name, &span) {
                Err("connect")
            } else {
                request.send().await.map_err(|e| {
                    tracing::warn!(upstream = self.name, error = %e, "upstream call failed");
                    if e.is_timeout() { "timeout" } else { "connect" }
                })
            };
            let response = match sent {
                Ok(r) => r,
                Err(kind) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", kind);
                    return Err(ApiError::overloaded("upstream_unavailable", 2));
                }
            };
            let status = response.status();
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", status.as_str());
            }
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let body = response.bytes().await.map_err(|e| {
                tracing::warn!(upstream = self.name, error = %e, "reading upstream answer");
                ApiError::overloaded("upstream_unavailable", 2)
            })?;
            Ok(Answer {
                status,
                content_type,
                retry_after,
                body,
            })
        }
        .instrument(span)
        .await
    }

    /// A JSON call whose non-2xx answers become errors with the same status and body.
    pub async fn call_json<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        route: &str,
        path: &str,
        caller: &Caller,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(ApiError::internal)?;
        let answer = self.call(method, route, path, caller, body).await?;
        if answer.status.is_success() {
            return answer.json();
        }
        Err(upstream_error(self.name, answer))
    }
}

/// An upstream's error answer, passed on with its status and code.
pub fn upstream_error(name: &str, answer: Answer) -> ApiError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|v| v.as_str())
        .unwrap_or("upstream error")
        .to_owned();
    if answer.status.is_server_error() {
        tracing::warn!(
            upstream = name,
            status = answer.status.as_u16(),
            "upstream failed"
        );
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            format!("{name}: {message}"),
        );
    }
    let mut error = ApiError::new(answer.status, "upstream_rejected", message);
    if let Some(code) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/code"))
        .and_then(|v| v.as_str())
    {
        error.details = Some(json!({ "upstream_code": code }));
    }
    error.retry_after = answer
        .retry_after
        .and_then(|v| v.to_str().ok().and_then(|s| s.parse().ok()));
    error
}

fn host_port(base: &str) -> (String, i64) {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(80)),
        None => (authority.to_owned(), 80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_is_json_with_code_and_retry_after() {
        let response = ApiError::too_many(3).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
    }

    #[test]
    fn caller_round_trips_through_headers() {
        let caller = Caller {
            client_address: "203.0.113.9".into(),
            user_agent: Some("curl/8".into()),
            session_id: Some("s1".into()),
            user_id: None,
        };
        let back = Caller::from_headers(&caller.headers(), None);
        assert_eq!(back.client_address, "203.0.113.9");
        assert_eq!(back.session_id.as_deref(), Some("s1"));
        assert!(back.user_id.is_none());
    }

    /// A route limited to one request in flight and a short deadline: the
    /// second concurrent request is refused at once, a slow one times out,
    /// both with 503 + Retry-After and a JSON body.
    #[tokio::test]
    async fn limit_sheds_without_queueing_and_times_out() {
        use axum::routing::get;
        use tower::ServiceExt as _;

        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let metrics = HttpMetrics::new();
        let app = axum::Router::new().route(
            "/slow",
            get(move || {
                let g = g.clone();
                async move {
                    g.notified().await;
                    "done"
                }
            })
            .layer(axum::middleware::from_fn_with_state(
                Limit::new("/slow", 1, Duration::from_millis(300), &metrics),
                limit,
            )),
        );
        let request = || Request::builder().uri("/slow").body(Body::empty()).unwrap();
        let first = tokio::spawn(app.clone().oneshot(request()));
        tokio::task::yield_now().await;
        // The first holds the only permit until the gate opens or its deadline passes.
        let mut second = None;
        for _ in 0..100 {
            let r = app.clone().oneshot(request()).await.unwrap();
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                second = Some(r);
                break;
            }
            tokio::task::yield_now().await;
        }
        let second = second.expect("a concurrent request was not shed");
        assert!(second.headers().contains_key(header::RETRY_AFTER));
        let first = first.await.unwrap().unwrap();
        assert_eq!(
            first.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "the slow request timed out"
        );
        let body = axum::body::to_bytes(first.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "timeout");
        gate.notify_waiters();
    }

    #[test]
    fn host_and_port_of_a_base_url() {
        assert_eq!(
            host_port("http://127.0.0.1:18081"),
            ("127.0.0.1".to_owned(), 18081)
        );
    }
}
