//! The shop's services, one module each, each its own process (`shop <service>`).
//!
//! | service | default address | owns |
//! | --- | --- | --- |
//! | [`gateway`] | 127.0.0.1:18080 | edge routing, sessions, rate limiting, load shedding, OpenAPI |
//! | [`auth`] | 127.0.0.1:18081 | accounts, argon2 hashes, lockout, login rate limit |
//! | [`catalog`] | 127.0.0.1:18082 | products, categories, search (PostgreSQL) |
//! | [`cart`] | 127.0.0.1:18083 | carts (Redis) |
//! | [`checkout`] | 127.0.0.1:18084 | orders (PostgreSQL), calls cart and payments |
//! | [`payments`] | 127.0.0.1:18085 | a simulated card processor |
//!
//! Every service shares [`http`] (JSON errors, SERVER spans, RED metrics,
//! backpressure, the instrumented client), [`store`] (instrumented SQLx and
//! Redis), [`events`] (the contract's domain events), [`security`] and
//! [`chaos`] (failure injection, `/admin/chaos`), [`profiling`] (CPU
//! profiles on the admin side, the counting allocator and its metrics).

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod chaos;
pub mod checkout;
pub mod events;
pub mod gateway;
pub mod http;
pub mod openapi;
pub mod payments;
pub mod profiling;
pub mod security;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use tower_http::catch_panic::CatchPanicLayer;

use self::chaos::Chaos;
use self::http::HttpMetrics;

/// One of the shop's services: the traffic model's type, so that the
/// simulator and the shop cannot name them differently.
pub use shop_sim::model::Service;

/// Where a service listens and how its callers find it.
pub trait Listening {
    /// Its port on 127.0.0.1 when `SHOP_<SERVICE>_ADDR` is not set.
    fn default_port(self) -> u16;
    /// The variable holding this service's listen address (`SHOP_GATEWAY_ADDR`, ...).
    fn addr_var(self) -> String;
    /// The variable holding this service's base URL for its callers (`SHOP_CATALOG_URL`, ...).
    fn url_var(self) -> String;
}

impl Listening for Service {
    fn default_port(self) -> u16 {
        match self {
            Service::Gateway => 18080,
            Service::Auth => 18081,
            Service::Catalog => 18082,
            Service::Cart => 18083,
            Service::Checkout => 18084,
            Service::Payments => 18085,
        }
    }

    fn addr_var(self) -> String {
        format!("SHOP_{}_ADDR", self.name().to_uppercase())
    }

    fn url_var(self) -> String {
        format!("SHOP_{}_URL", self.name().to_uppercase())
    }
}

/// Where things are, from the environment (see shop/README.md).
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    /// Base URL of each service, for its callers.
    pub urls: Vec<(Service, String)>,
    /// Timeout of calls between services.
    pub upstream_timeout: Duration,
    /// The service's failure injection: none here; [`router`] reads the
    /// service's `SHOP_CHAOS_*` variables into it.
    pub chaos: Arc<Chaos>,
}

impl Config {
    pub fn from_env() -> Config {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Config {
            database_url: var(
                "DATABASE_URL",
                "postgres://otelguard:otelguard@127.0.0.1:55432/otelguard",
            ),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:56379"),
            urls: Service::ALL
                .iter()
                .map(|s| {
                    let default = format!("http://127.0.0.1:{}", s.default_port());
                    (*s, var(&s.url_var(), &default))
                })
                .collect(),
            upstream_timeout: Duration::from_millis(
                var("SHOP_UPSTREAM_TIMEOUT_MS", "5000")
                    .parse()
                    .unwrap_or(5000),
            ),
            chaos: Arc::default(),
        }
    }

    pub fn url(&self, service: Service) -> String {
        self.urls
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", service.default_port()))
    }

    pub fn upstream(&self, service: Service) -> anyhow::Result<http::Upstream> {
        http::Upstream::new(
            service.service_name(),
            self.url(service),
            self.upstream_timeout,
            self.chaos.clone(),
        )
    }

    /// The listen address of `service`: `SHOP_<SERVICE>_ADDR` or 127.0.0.1 and its default port.
    pub fn listen_addr(service: Service) -> anyhow::Result<SocketAddr> {
        match std::env::var(service.addr_var()) {
            Ok(v) => v
                .parse()
                .with_context(|| format!("{}={v:?} is not an address", service.addr_var())),
            Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], service.default_port()))),
        }
    }
}

/// A number from the environment variable `name`, or `default` when it is
/// unset or not a number.
pub(crate) fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wraps a service's routes with what every service has: route naming, JSON
/// errors, the body limit, SERVER spans and metrics, panic catching.
pub fn finish(routes: Router, metrics: &HttpMetrics) -> Router {
    routes
        .route_layer(from_fn(http::record_route))
        .fallback(|| async { http::ApiError::not_found("not_found", "no such route") })
        .layer(DefaultBodyLimit::max(http::MAX_BODY_BYTES))
        .layer(from_fn(http::json_errors))
        .layer(from_fn_with_state(metrics.clone(), http::observe))
        .layer(CatchPanicLayer::custom(http::panic_response))
}

/// A service's routers: `api` for its listener, and, for the gateway when
/// `SHOP_ADMIN_TOKEN` is set, `admin`: `/admin/chaos` for a listener of its
/// own (`SHOP_GATEWAY_ADMIN_ADDR`), since the public edge never serves it.
/// Every other service has `/admin/chaos` on its own (internal) listener.
pub struct Routers {
    pub api: Router,
    pub admin: Option<Router>,
}

/// Builds the routers of `service` (connecting to what it needs; database
/// services run the migrations first), with its failure injection from the
/// `SHOP_CHAOS_*` variables and `/admin/chaos`.
pub async fn router(service: Service, config: &Config) -> anyhow::Result<Routers> {
    let chaos = Arc::new(Chaos::from_env(service)?);
    let token = chaos::AdminToken::from_env()?;
    let config = &Config {
        chaos: chaos.clone(),
        ..config.clone()
    };
    let metrics = HttpMetrics::new();
    let routes = match service {
        Service::Gateway => gateway::router(config, &metrics).await?,
        Service::Auth => auth::router(config, &metrics).await?,
        Service::Catalog => catalog::router(config, &metrics).await?,
        Service::Cart => cart::router(config, &metrics).await?,
        Service::Checkout => checkout::router(config, &metrics).await?,
        Service::Payments => payments::router(config, &metrics)?,
    };
    let routes = routes
        .route_layer(from_fn_with_state(chaos.clone(), chaos::grow_memory))
        .route_layer(from_fn_with_state(chaos.clone(), chaos::per_request));
    Ok(match service {
        Service::Gateway => Routers {
            api: gateway::with_edge(finish(routes, &metrics)),
            admin: token.map(|t| finish(chaos::admin(chaos, Some(t)), &metrics)),
        },
        _ => Routers {
            api: finish(routes.merge(chaos::admin(chaos, token)), &metrics),
            admin: None,
        },
    })
}

/// Runs `service` on `listener` until `shutdown` completes, then drains
/// in-flight requests and flushes telemetry. Prints `shop-<service> listening
/// on http://ADDR` on stdout once it accepts connections (after `shop-gateway
/// admin listening on http://ADDR` when the gateway has an admin listener).
pub async fn run(
    service: Service,
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let telemetry = crate::telemetry::init(service.service_name())?;
    profiling::register_allocator_metrics(&opentelemetry::global::meter("shop.allocator"));
    let result = serve(service, &config, listener, shutdown).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "service failed");
    }
    // The exporters need the runtime to send their last batches: flush from a
    // blocking thread, never from a runtime worker (that would deadlock).
    if let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        eprintln!("telemetry: shutdown task failed: {e}");
    }
    result
}

/// The gateway's admin listener: `SHOP_GATEWAY_ADMIN_ADDR`, or 127.0.0.1:18089.
pub fn gateway_admin_addr() -> anyhow::Result<SocketAddr> {
    const VAR: &str = "SHOP_GATEWAY_ADMIN_ADDR";
    match std::env::var(VAR) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{VAR}={v:?} is not an address")),
        Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], 18089))),
    }
}

async fn serve(
    service: Service,
    config: &Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures::FutureExt as _;

    let routers = router(service, config).await?;
    let shutdown = shutdown.shared();
    let admin = match routers.admin {
        Some(app) => {
            let addr = gateway_admin_addr()?;
            let admin_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for the gateway's admin"))?;
            let addr = admin_listener.local_addr()?;
            println!(
                "{} admin listening on http://{addr}",
                service.service_name()
            );
            tracing::info!(%addr, "{} admin listening", service.service_name());
            Some(
                axum::serve(
                    admin_listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown.clone()),
            )
        }
        None => None,
    };
    let addr = listener.local_addr()?;
    println!("{} listening on http://{addr}", service.service_name());
    tracing::info!(%addr, "{} listening", service.service_name());
    let api = axum::serve(
        listener,
        routers
            .api
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown);
    match admin {
        Some(admin) => {
            tokio::try_join!(api.into_future(), admin.into_future())?;
        }
        None => api.await?,
    }
    tracing::info!("{} stopped", service.service_name());
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the migrations (and seeds the accounts) without starting a service.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = store::Db::connect(&config.database_url, "migrate", config.chaos.clone()).await?;
    let seeded = auth::seed_accounts(&db).await?;
    println!("migrations applied; {seeded} accounts seeded");
    Ok(())
}
