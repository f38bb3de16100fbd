//! Failure injection for chaos rehearsals.
//!
//! Every service holds one [`Chaos`]: a set of [`Flags`], read from
//! `SHOP_CHAOS_<FLAG>` variables at start and changed at run time through
//! `GET`/`PUT`/`DELETE /admin/chaos` (direct calls from this host holding the
//! `SHOP_ADMIN_TOKEN`, see [`admin`]). The faults are injected where they belong:
//!
//! | flag | where | what happens |
//! | --- | --- | --- |
//! | `payment_latency_ms` | payments handler | the processor answers that much later |
//! | `payment_error_ratio` | payments handler | that share of payments fails as a processor error (502) |
//! | `db_slow_ms` | [`super::store::Db::run`] | every query takes that much longer, holding its connection |
//! | `db_pool_hold` | [`spawn_pool_holder`] | that many pooled connections are held, so acquires time out (503) |
//! | `redis_down` | [`super::store::Kv::run`] | every Redis command fails at once, as if the server refused connections (503) |
//! | `catalog_cpu_ms` | [`burn_cpu`] on catalog's routes | each request spins a core for that long |
//! | `memory_growth_kb` (up to `memory_cap_mb`) | [`grow_memory`] on every route | each request retains that much memory |
//! | `drop_downstream_ratio` (`drop_downstream_targets`) | [`super::http::Upstream::call`] | that share of calls to other services fails as a refused connection |
//!
//! And the bottlenecks, for performance rehearsals (`rules/perf/`): each one
//! the real code path made worse, not a span that only says so.
//!
//! | flag | where | what happens |
//! | --- | --- | --- |
//! | `blocking_call_ms` | [`block_runtime`] on catalog's routes | each request sleeps that long on the async worker itself (no `spawn_blocking`) |
//! | `n_plus_one` | catalog's product listing | the page is read as ids, then one query per product |
//! | `missing_index` | catalog's product lookup | the lookup by id goes through an expression the primary key cannot serve: a sequential scan |
//! | `db_pool_size` | [`spawn_pool_holder`] | the service may use only that many pooled connections; acquires wait in `acquire connection` spans |
//! | `alloc_heavy_kb` | [`per_request`] on every route | each request fills and drops that many KiB of temporary buffers |
//! | `slow_downstream_ms` | [`per_request`] on every service but the gateway | each request is answered that much later (under the callers' timeout: they wait it out) |
//! | `retry_storm` | [`super::http::Upstream::call`] | a failed call to another service (refused, timed out, 5xx) is sent again at once, that many more times, no backoff |
//!
//! Each injected fault carries the attribute [`ATTRIBUTE`] (`shop.chaos.fault`)
//! = the fault's name ([`Fault`]), on one span and on a WARN log record inside
//! that span. A fault that fails or slows an operation marks the operation's
//! own span (the database or Redis span, the CLIENT span of a dropped call, the
//! SERVER span refused for want of a connection); a fault that adds work to a
//! request (a delay, an error decision, CPU, memory) gets an INTERNAL child span
//! of its own, `chaos <fault>`, so that no span carries two faults. The natural
//! signature (durations, ERROR status, 5xx answers, memory) follows from the
//! fault itself.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::Service;
use super::http::{ApiError, ApiJson};

/// The span and log attribute that names an injected fault.
pub const ATTRIBUTE: &str = "shop.chaos.fault";

/// Prefix of the variables read at start: `SHOP_CHAOS_DB_SLOW_MS=200`, ...
pub const ENV_PREFIX: &str = "SHOP_CHAOS_";

/// The faults, as named by [`ATTRIBUTE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    PaymentLatency,
    PaymentError,
    DbSlow,
    DbPoolHold,
    RedisDown,
    CatalogCpu,
    MemoryGrowth,
    DropDownstream,
    BlockingCall,
    NPlusOne,
    MissingIndex,
    PoolUndersized,
    AllocHeavy,
    SlowDownstream,
    RetryStorm,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::PaymentLatency => "payment_latency",
            Fault::PaymentError => "payment_error",
            Fault::DbSlow => "db_slow",
            Fault::DbPoolHold => "db_pool_hold",
            Fault::RedisDown => "redis_down",
            Fault::CatalogCpu => "catalog_cpu",
            Fault::MemoryGrowth => "memory_growth",
            Fault::DropDownstream => "drop_downstream",
            Fault::BlockingCall => "blocking_call",
            Fault::NPlusOne => "n_plus_one",
            Fault::MissingIndex => "missing_index",
            Fault::PoolUndersized => "pool_undersized",
            Fault::AllocHeavy => "alloc_heavy",
            Fault::SlowDownstream => "slow_downstream",
            Fault::RetryStorm => "retry_storm",
        }
    }
}

// ---------------------------------------------------------------------------
// Flags

/// The fault injection flags of one service; the default injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flags {
    pub payment_latency_ms: u64,
    pub payment_error_ratio: f64,
    pub db_slow_ms: u64,
    pub db_pool_hold: u64,
    pub redis_down: bool,
    pub catalog_cpu_ms: u64,
    pub memory_growth_kb: u64,
    pub memory_cap_mb: u64,
    pub drop_downstream_ratio: f64,
    /// Short service names (`payments`, ...); empty: every service called.
    pub drop_downstream_targets: Vec<String>,
    pub blocking_call_ms: u64,
    pub n_plus_one: bool,
    pub missing_index: bool,
    /// Connections the service may use; 0: the pool's own size.
    pub db_pool_size: u64,
    pub alloc_heavy_kb: u64,
    pub slow_downstream_ms: u64,
    /// Extra attempts of a failed call to another service.
    pub retry_storm: u64,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            payment_latency_ms: 0,
            payment_error_ratio: 0.0,
            db_slow_ms: 0,
            db_pool_hold: 0,
            redis_down: false,
            catalog_cpu_ms: 0,
            memory_growth_kb: 0,
            memory_cap_mb: DEFAULT_MEMORY_CAP_MB,
            drop_downstream_ratio: 0.0,
            drop_downstream_targets: Vec::new(),
            blocking_call_ms: 0,
            n_plus_one: false,
            missing_index: false,
            db_pool_size: 0,
            alloc_heavy_kb: 0,
            slow_downstream_ms: 0,
            retry_storm: 0,
        }
    }
}

const DEFAULT_MEMORY_CAP_MB: u64 = 256;

/// The type and bounds of a flag's value.
enum Kind {
    /// A whole number from 0 to `max`.
    Number { max: u64 },
    /// A share from 0 to 1.
    Ratio,
    /// `true`/`false` (or 1/0).
    Switch,
    /// Service names: an array, or one comma-separated string.
    Services,
}

/// One flag: its name (the JSON key; upper-cased after [`ENV_PREFIX`] for the
/// variable), the services it applies to, and its value's kind.
struct Spec {
    name: &'static str,
    applies: &'static [Service],
    kind: Kind,
}

const PAYMENTS: &[Service] = &[Service::Payments];
const DATABASE: &[Service] = &[Service::Auth, Service::Catalog, Service::Checkout];
const REDIS: &[Service] = &[Service::Gateway, Service::Cart];
const CATALOG: &[Service] = &[Service::Catalog];
const CALLERS: &[Service] = &[Service::Gateway, Service::Cart, Service::Checkout];
const CALLED: &[Service] = &[
    Service::Auth,
    Service::Catalog,
    Service::Cart,
    Service::Checkout,
    Service::Payments,
];

const SPECS: &[Spec] = &[
    Spec {
        name: "payment_latency_ms",
        applies: PAYMENTS,
        kind: Kind::Number { max: 60_000 },
    },
    Spec {
        name: "payment_error_ratio",
        applies: PAYMENTS,
        kind: Kind::Ratio,
    },
    Spec {
        name: "db_slow_ms",
        applies: DATABASE,
        kind: Kind::Number { max: 60_000 },
    },
    Spec {
        name: "db_pool_hold",
        applies: DATABASE,
        kind: Kind::Number { max: 1_000 },
    },
    Spec {
        name: "redis_down",
        applies: REDIS,
        kind: Kind::Switch,
    },
    Spec {
        name: "catalog_cpu_ms",
        applies: CATALOG,
        kind: Kind::Number { max: 10_000 },
    },
    Spec {
        name: "memory_growth_kb",
        applies: &Service::ALL,
        kind: Kind::Number { max: 65_536 },
    },
    Spec {
        name: "memory_cap_mb",
        applies: &Service::ALL,
        kind: Kind::Number { max: 4_096 },
    },
    Spec {
        name: "drop_downstream_ratio",
        applies: CALLERS,
        kind: Kind::Ratio,
    },
    Spec {
        name: "drop_downstream_targets",
        applies: CALLERS,
        kind: Kind::Services,
    },
    Spec {
        name: "blocking_call_ms",
        applies: CATALOG,
        kind: Kind::Number { max: 10_000 },
    },
    Spec {
        name: "n_plus_one",
        applies: CATALOG,
        kind: Kind::Switch,
    },
    Spec {
        name: "missing_index",
        applies: CATALOG,
        kind: Kind::Switch,
    },
    Spec {
        name: "db_pool_size",
        applies: DATABASE,
        kind: Kind::Number { max: 1_000 },
    },
    Spec {
        name: "alloc_heavy_kb",
        applies: &Service::ALL,
        kind: Kind::Number { max: 65_536 },
    },
    Spec {
        name: "slow_downstream_ms",
        applies: CALLED,
        kind: Kind::Number { max: 60_000 },
    },
    Spec {
        name: "retry_storm",
        applies: CALLERS,
        kind: Kind::Number { max: 10 },
    },
];

/// A flag that could not be set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagError {
    #[error("unknown chaos flag {name:?}; the flags are: {}", flag_names())]
    Unknown { name: String },
    #[error("chaos flag {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("chaos flag {name} does not apply to {service}; it applies to: {applies}")]
    NotApplicable {
        name: &'static str,
        service: &'static str,
        applies: String,
    },
    #[error("the body must be a JSON object of flags, e.g. {{\"db_slow_ms\": 200}}")]
    NotAnObject,
}

impl From<FlagError> for ApiError {
    fn from(e: FlagError) -> Self {
        let code = match e {
            FlagError::Unknown { .. } => "unknown_flag",
            FlagError::Invalid { .. } => "invalid_flag_value",
            FlagError::NotApplicable { .. } => "flag_not_applicable",
            FlagError::NotAnObject => "invalid_body",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

fn flag_names() -> String {
    SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

fn service_names(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A checked value, ready to be stored.
enum Parsed {
    Number(u64),
    Ratio(f64),
    Switch(bool),
    Services(Vec<String>),
}

impl Kind {
    fn parse(&self, value: &Value) -> Result<Parsed, String> {
        match self {
            Kind::Number { max } => match value.as_u64() {
                Some(n) if n <= *max => Ok(Parsed::Number(n)),
                _ => Err(format!(
                    "must be a whole number from 0 to {max}, not {value}"
                )),
            },
            Kind::Ratio => match value.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => Ok(Parsed::Ratio(r)),
                _ => Err(format!("must be a number from 0 to 1, not {value}")),
            },
            Kind::Switch => match value {
                Value::Bool(b) => Ok(Parsed::Switch(*b)),
                Value::Number(n) if n.as_u64() == Some(0) => Ok(Parsed::Switch(false)),
                Value::Number(n) if n.as_u64() == Some(1) => Ok(Parsed::Switch(true)),
                _ => Err(format!("must be true or false, not {value}")),
            },
            Kind::Services => {
                let names: Vec<&str> = match value {
                    Value::String(s) => s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect(),
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().ok_or(()))
                        .collect::<Result<_, ()>>()
                        .map_err(|()| format!("must be service names, not {value}"))?,
                    _ => return Err(format!("must be service names, not {value}")),
                };
                let mut services = Vec::new();
                for name in names {
                    let service = Service::ALL
                        .iter()
                        .find(|s| s.name() == name || s.service_name() == name)
                        .ok_or_else(|| {
                            format!(
                                "{name:?} is not a service; the services are: {}",
                                service_names(&Service::ALL)
                            )
                        })?;
                    if !services.iter().any(|s| s == service.name()) {
                        services.push(service.name().to_owned());
                    }
                }
                Ok(Parsed::Services(services))
            }
        }
    }
}

impl Flags {
    /// Sets flag `name` to `value`, checked against its kind and bounds and,
    /// when `service` is given, against the services it applies to.
    pub fn set(
        &mut self,
        service: Option<Service>,
        name: &str,
        value: &Value,
    ) -> Result<(), FlagError> {
        let spec = SPECS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| FlagError::Unknown {
                name: name.to_owned(),
            })?;
        if let Some(service) = service
            && !spec.applies.contains(&service)
        {
            return Err(FlagError::NotApplicable {
                name: spec.name,
                service: service.name(),
                applies: service_names(spec.applies),
            });
        }
        let parsed = spec
            .kind
            .parse(value)
            .map_err(|reason| FlagError::Invalid {
                name: spec.name,
                reason,
            })?;
        match (spec.name, parsed) {
            ("payment_latency_ms", Parsed::Number(n)) => self.payment_latency_ms = n,
            ("payment_error_ratio", Parsed::Ratio(r)) => self.payment_error_ratio = r,
            ("db_slow_ms", Parsed::Number(n)) => self.db_slow_ms = n,
            ("db_pool_hold", Parsed::Number(n)) => self.db_pool_hold = n,
            ("redis_down", Parsed::Switch(b)) => self.redis_down = b,
            ("catalog_cpu_ms", Parsed::Number(n)) => self.catalog_cpu_ms = n,
            ("memory_growth_kb", Parsed::Number(n)) => self.memory_growth_kb = n,
            ("memory_cap_mb", Parsed::Number(n)) => self.memory_cap_mb = n,
            ("drop_downstream_ratio", Parsed::Ratio(r)) => self.drop_downstream_ratio = r,
            ("drop_downstream_targets", Parsed::Services(s)) => self.drop_downstream_targets = s,
            ("blocking_call_ms", Parsed::Number(n)) => self.blocking_call_ms = n,
            ("n_plus_one", Parsed::Switch(b)) => self.n_plus_one = b,
            ("missing_index", Parsed::Switch(b)) => self.missing_index = b,
            ("db_pool_size", Parsed::Number(n)) => self.db_pool_size = n,
            ("alloc_heavy_kb", Parsed::Number(n)) => self.alloc_heavy_kb = n,
            ("slow_downstream_ms", Parsed::Number(n)) => self.slow_downstream_ms = n,
            ("retry_storm", Parsed::Number(n)) => self.retry_storm = n,
            _ => unreachable!("every flag of SPECS is stored above, with its kind"),
        }
        Ok(())
    }

    /// The flags that differ from the default, as `name=value`.
    pub fn active(&self) -> Vec<String> {
        let (Value::Object(now), Value::Object(off)) = (json!(self), json!(Flags::default()))
        else {
            return Vec::new();
        };
        let mut active: Vec<String> = now
            .iter()
            .filter(|(k, v)| off.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        active.sort();
        active
    }

    /// The flags set by `SHOP_CHAOS_*` in `vars`. A flag that does not apply
    /// to `service` is left out and named in the second list (one environment
    /// may serve all six services); an unknown flag or a bad value is an error.
    pub fn from_vars(
        service: Service,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Flags, Vec<String>), FlagError> {
        let mut flags = Flags::default();
        let mut ignored = Vec::new();
        for (key, raw) in vars {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            // Numbers and booleans as such; anything else (service lists) as a string.
            let value = serde_json::from_str::<Value>(raw.trim())
                .ok()
                .filter(|v| v.is_number() || v.is_boolean())
                .unwrap_or(Value::String(raw));
            match flags.set(Some(service), &name, &value) {
                Ok(()) => {}
                Err(FlagError::NotApplicable { .. }) => ignored.push(key),
                Err(FlagError::Unknown { .. }) => {
                    return Err(FlagError::Unknown { name: key });
                }
                Err(e) => return Err(e),
            }
        }
        Ok((flags, ignored))
    }
}

// ---------------------------------------------------------------------------
// The state of one service

/// A service's fault injection state: the flags (watched, so the pool holder
/// follows them) and what the faults hold (retained memory, held connections).
pub struct Chaos {
    /// `None` for a state that checks no applicability (tests, `shop migrate`).
    service: Option<Service>,
    flags: watch::Sender<Flags>,
    retained: Mutex<Vec<Box<[u8]>>>,
    retained_bytes: AtomicU64,
    pool_held: AtomicU64,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos::with_flags(None, Flags::default())
    }
}

impl fmt::Debug for Chaos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("service", &self.service)
            .field("active", &self.flags.borrow().active())
            .finish()
    }
}

impl Chaos {
    fn with_flags(service: Option<Service>, flags: Flags) -> Chaos {
        Chaos {
            service,
            flags: watch::Sender::new(flags),
            retained: Mutex::default(),
            retained_bytes: AtomicU64::new(0),
            pool_held: AtomicU64::new(0),
        }
    }

    /// `service`'s state from the `SHOP_CHAOS_*` variables.
    pub fn from_env(service: Service) -> Result<Chaos, FlagError> {
        let (flags, ignored) = Flags::from_vars(service, std::env::vars())?;
        for key in ignored {
            tracing::info!(
                variable = %key,
                "{key} does not apply to {}; ignored",
                service.name()
            );
        }
        let active = flags.active();
        if !active.is_empty() {
            tracing::warn!(
                shop.chaos.flags = %active.join(" "),
                "chaos flags set at start"
            );
        }
        Ok(Chaos::with_flags(Some(service), flags))
    }

    /// A copy of the current flags.
    pub fn flags(&self) -> Flags {
        self.flags.borrow().clone()
    }

    /// A receiver that sees every change of the flags.
    pub fn watch(&self) -> watch::Receiver<Flags> {
        self.flags.subscribe()
    }

    /// Applies a partial update (a JSON object of flags): all of it or, on
    /// the first bad flag, none of it.
    pub fn update(&self, body: &Value) -> Result<Flags, FlagError> {
        let changes = body.as_object().ok_or(FlagError::NotAnObject)?;
        let mut outcome = Ok(());
        // Under the channel's lock: concurrent updates do not undo each other.
        self.flags.send_if_modified(|flags| {
            let mut next = flags.clone();
            for (name, value) in changes {
                if let Err(e) = next.set(self.service, name, value) {
                    outcome = Err(e);
                    return false;
                }
            }
            *flags = next;
            true
        });
        outcome?;
        self.changed();
        Ok(self.flags())
    }

    /// Clears every flag (and frees the retained memory).
    pub fn clear(&self) {
        self.flags.send_replace(Flags::default());
        self.changed();
    }

    fn changed(&self) {
        self.trim_memory();
        tracing::warn!(
            shop.chaos.flags = %self.flags.borrow().active().join(" "),
            "chaos flags changed"
        );
    }

    /// What the faults hold now, for `GET /admin/chaos`.
    fn status(&self) -> Value {
        let service = self.service.map(Service::name);
        let applicable: Vec<&str> = SPECS
            .iter()
            .filter(|s| self.service.is_none_or(|svc| s.applies.contains(&svc)))
            .map(|s| s.name)
            .collect();
        let flags = self.flags();
        json!({
            "service": service,
            "active": flags.active(),
            "flags": flags,
            "applicable": applicable,
            "retained_memory_kb": self.retained_bytes.load(Ordering::Relaxed) / 1024,
            "pool_connections_held": self.pool_held.load(Ordering::Relaxed),
        })
    }

    // -----------------------------------------------------------------------
    // The hooks

    /// Payments: waits `payment_latency_ms`, in a fault span.
    pub async fn payment_latency(&self) {
        let ms = self.flags.borrow().payment_latency_ms;
        if ms > 0 {
            let span = fault_span(
                Fault::PaymentLatency,
                format_args!("payment delayed by {ms} ms"),
            );
            tokio::time::sleep(Duration::from_millis(ms))
                .instrument(span)
                .await;
        }
    }

    /// Payments: whether this payment fails (`payment_error_ratio`); a fault span says so.
    pub fn payment_error(&self) -> bool {
        let ratio = self.flags.borrow().payment_error_ratio;
        let fail = roll(ratio);
        if fail {
            fault_span(Fault::PaymentError, "payment failed as a processor error");
        }
        fail
    }

    /// Databases: the delay to add to the query of `span` (`db_slow_ms`), marking it.
    pub fn slow_query(&self, span: &tracing::Span) -> Option<Duration> {
        let ms = self.flags.borrow().db_slow_ms;
        (ms > 0).then(|| {
            mark(span, Fault::DbSlow, format_args!("query slowed by {ms} ms"));
            Duration::from_millis(ms)
        })
    }

    /// Databases: a pooled connection was not to be had; marks the current
    /// span when held connections (`db_pool_hold`) are the cause.
    pub fn pool_timed_out(&self) {
        let held = self.pool_held.load(Ordering::Relaxed);
        if held > 0 {
            let fault = if self.flags.borrow().db_pool_hold > 0 {
                Fault::DbPoolHold
            } else {
                Fault::PoolUndersized
            };
            mark(
                &tracing::Span::current(),
                fault,
                format_args!("no pooled connection: {held} held by chaos"),
            );
        }
    }

    /// Databases: marks the `acquire connection` span while `db_pool_size`
    /// shrinks the pool.
    pub fn pool_undersized(&self, span: &tracing::Span) {
        let size = self.flags.borrow().db_pool_size;
        if size > 0 {
            mark(
                span,
                Fault::PoolUndersized,
                format_args!("the pool is cut to {size} connections"),
            );
        }
    }

    /// Catalog: whether the product listing reads each product by its own
    /// query (`n_plus_one`), marking the request's span.
    pub fn n_plus_one(&self) -> bool {
        let on = self.flags.borrow().n_plus_one;
        if on {
            mark(
                &tracing::Span::current(),
                Fault::NPlusOne,
                "one query per listed product",
            );
        }
        on
    }

    /// Catalog: whether the product lookup bypasses the primary key
    /// (`missing_index`); the caller marks the query's span
    /// ([`super::store::Db::run_marked`]).
    pub fn missing_index(&self) -> bool {
        self.flags.borrow().missing_index
    }

    /// Calls between services: how many more times a failed call is sent
    /// (`retry_storm`).
    pub fn retries(&self) -> u64 {
        self.flags.borrow().retry_storm
    }

    /// Redis: whether the command of `span` fails as unreachable (`redis_down`), marking it.
    pub fn redis_down(&self, span: &tracing::Span) -> bool {
        let down = self.flags.borrow().redis_down;
        if down {
            mark(span, Fault::RedisDown, "redis treated as unreachable");
        }
        down
    }

    /// Calls between services: whether the call of `span` to `target` (a
    /// `service.name`) is dropped (`drop_downstream_ratio`), marking it.
    pub fn drop_call(&self, target: &str, span: &tracing::Span) -> bool {
        let (ratio, aimed) = {
            let f = self.flags.borrow();
            let aimed = f.drop_downstream_targets.is_empty()
                || f.drop_downstream_targets
                    .iter()
                    .any(|t| target.strip_prefix("shop-").unwrap_or(target) == t);
            (f.drop_downstream_ratio, aimed)
        };
        let drop = aimed && roll(ratio);
        if drop {
            mark(
                span,
                Fault::DropDownstream,
                format_args!("call to {target} dropped"),
            );
        }
        drop
    }

    /// Every request: retains `memory_growth_kb` more, up to `memory_cap_mb`.
    /// Returns the bytes added.
    pub fn grow_memory(&self) -> u64 {
        let (kb, cap_mb) = {
            let f = self.flags.borrow();
            (f.memory_growth_kb, f.memory_cap_mb)
        };
        let cap = cap_mb * 1024 * 1024;
        let Ok(mut retained) = self.retained.lock() else {
            return 0;
        };
        let now = self.retained_bytes.load(Ordering::Relaxed);
        let add = (kb * 1024).min(cap.saturating_sub(now));
        if add == 0 {
            return 0;
        }
        let _span = fault_span(
            Fault::MemoryGrowth,
            format_args!(
                "retaining {} KiB more, {} KiB in all",
                add / 1024,
                (now + add) / 1024
            ),
        )
        .entered();
        // Written, not just reserved, so that the pages are resident.
        retained.push(vec![0xA5u8; add as usize].into_boxed_slice());
        self.retained_bytes.store(now + add, Ordering::Relaxed);
        add
    }

    /// Frees retained memory beyond the cap, or all of it once growth is off.
    fn trim_memory(&self) {
        let (kb, cap_mb) = {
            let f = self.flags.borrow();
            (f.memory_growth_kb, f.memory_cap_mb)
        };
        let cap = if kb == 0 { 0 } else { cap_mb * 1024 * 1024 };
        let Ok(mut retained) = self.retained.lock() else {
            return;
        };
        let mut bytes = self.retained_bytes.load(Ordering::Relaxed);
        while bytes > cap {
            match retained.pop() {
                Some(b) => bytes -= b.len() as u64,
                None => bytes = 0,
            }
        }
        if retained.is_empty() {
            retained.shrink_to_fit();
        }
        self.retained_bytes.store(bytes, Ordering::Relaxed);
    }
}

/// The error a Redis command gets while `redis_down` is set: a refused
/// connection, as when the server is not there.
pub fn redis_unreachable() -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused (chaos: redis_down)",
    )
    .into()
}

/// True with probability `ratio`.
fn roll(ratio: f64) -> bool {
    ratio > 0.0 && (ratio >= 1.0 || rand::random::<f64>() < ratio)
}

/// Marks `span`, the operation `fault` hits, with [`ATTRIBUTE`] = `fault`
/// and logs a WARN record inside it.
pub fn mark(span: &tracing::Span, fault: Fault, detail: impl fmt::Display) {
    span.set_attribute(ATTRIBUTE, fault.as_str());
    span.in_scope(|| {
        tracing::warn!(shop.chaos.fault = fault.as_str(), "chaos: {detail}");
    });
}

/// A span of its own for a fault that adds work to the current request: an
/// INTERNAL child named `chaos <fault>` with [`ATTRIBUTE`], and a WARN record
/// inside it. It lasts as long as it is held (or instruments a future).
fn fault_span(fault: Fault, detail: impl fmt::Display) -> tracing::Span {
    let span = tracing::info_span!(
        "chaos",
        otel.name = format!("chaos {}", fault.as_str()),
        otel.kind = "internal",
        shop.chaos.fault = fault.as_str(),
    );
    span.in_scope(|| {
        tracing::warn!(shop.chaos.fault = fault.as_str(), "chaos: {detail}");
    });
    span
}

// ---------------------------------------------------------------------------
// Where the faults plug in

/// How many of a pool's `max` connections the holder takes: `db_pool_hold`,
/// or what `db_pool_size` leaves out, whichever is more.
fn connections_to_hold(flags: &Flags, max: u32) -> usize {
    let max = u64::from(max);
    let undersized = match flags.db_pool_size {
        0 => 0,
        size => max.saturating_sub(size),
    };
    flags.db_pool_hold.max(undersized).min(max) as usize
}

/// Holds `db_pool_hold` connections of `pool` (at most `max`) for as long as
/// the flag says so, so that the service's own acquires wait and time out.
pub fn spawn_pool_holder(chaos: Arc<Chaos>, pool: sqlx::PgPool, max: u32) {
    let mut flags = chaos.watch();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let want = connections_to_hold(&flags.borrow_and_update(), max);
            held.truncate(want);
            while held.len() < want {
                match pool.acquire().await {
                    Ok(conn) => held.push(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "chaos: could not take a pool connection");
                        break;
                    }
                }
            }
            chaos.pool_held.store(held.len() as u64, Ordering::Relaxed);
            if want > 0 {
                let fault = if flags.borrow().db_pool_hold > 0 {
                    Fault::DbPoolHold
                } else {
                    Fault::PoolUndersized
                };
                tracing::warn!(
                    shop.chaos.fault = fault.as_str(),
                    "chaos: holding {} of {max} pool connections",
                    held.len()
                );
            }
            if flags.changed().await.is_err() {
                break;
            }
        }
    });
}

/// Catalog's route layer: spins a core for `catalog_cpu_ms` (on the blocking
/// pool, so the runtime's workers keep serving) before the handler runs.
pub async fn burn_cpu(State(chaos): State<Arc<Chaos>>, req: Request, next: Next) -> Response {
    let ms = chaos.flags.borrow().catalog_cpu_ms;
    if ms > 0 {
        let span = fault_span(Fault::CatalogCpu, format_args!("burning {ms} ms of CPU"));
        let burn = Duration::from_millis(ms);
        let spun = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            while started.elapsed() < burn {
                for _ in 0..10_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                std::hint::black_box(x);
            }
        });
        if spun.instrument(span).await.is_err() {
            tracing::warn!("chaos: the CPU burn task failed");
        }
    }
    next.run(req).await
}

/// Catalog's route layer: sleeps `blocking_call_ms` on the async worker
/// itself, as a blocking client library or a `std::thread::sleep` would (the
/// mistake `spawn_blocking` exists for). The request's SERVER span is marked;
/// its first child starts that much late, and so do the requests that wait
/// for the stalled worker.
pub async fn block_runtime(State(chaos): State<Arc<Chaos>>, req: Request, next: Next) -> Response {
    let ms = chaos.flags.borrow().blocking_call_ms;
    if ms > 0 {
        mark(
            &tracing::Span::current(),
            Fault::BlockingCall,
            format_args!("blocking the runtime for {ms} ms"),
        );
        std::thread::sleep(Duration::from_millis(ms));
    }
    next.run(req).await
}

/// Every service's route layer: fills and drops `alloc_heavy_kb` of
/// temporary buffers, and (on the services others call) answers
/// `slow_downstream_ms` late; each in a fault span of its own.
pub async fn per_request(State(chaos): State<Arc<Chaos>>, req: Request, next: Next) -> Response {
    let (alloc_kb, slow_ms) = {
        let f = chaos.flags.borrow();
        let slow = match chaos.service {
            Some(s) if CALLED.contains(&s) => f.slow_downstream_ms,
            _ => 0,
        };
        (f.alloc_heavy_kb, slow)
    };
    if alloc_kb > 0 {
        let _span = fault_span(
            Fault::AllocHeavy,
            format_args!("{alloc_kb} KiB of temporary buffers"),
        )
        .entered();
        std::hint::black_box(churn(alloc_kb));
    }
    if slow_ms > 0 {
        let span = fault_span(
            Fault::SlowDownstream,
            format_args!("answering {slow_ms} ms late"),
        );
        tokio::time::sleep(Duration::from_millis(slow_ms))
            .instrument(span)
            .await;
    }
    next.run(req).await
}

/// Allocates `kb` KiB in 64 KiB buffers, writes every page, copies each once
/// (as a handler that clones its data would) and drops them all; returns a
/// checksum so that the work is not optimised away.
fn churn(kb: u64) -> u64 {
    const CHUNK: usize = 64 * 1024;
    let mut left = (kb * 1024) as usize;
    let mut buffers = Vec::new();
    let mut sum = 0u64;
    while left > 0 {
        let n = left.min(CHUNK);
        let buffer = vec![(left % 251) as u8; n];
        let copy = buffer.clone();
        sum = sum.wrapping_add(u64::from(copy[n - 1]));
        buffers.push(buffer);
        buffers.push(copy);
        left -= n;
    }
    sum.wrapping_add(buffers.len() as u64)
}

/// Every service's route layer: retains `memory_growth_kb` per request.
pub async fn grow_memory(State(chaos): State<Arc<Chaos>>, req: Request, next: Next) -> Response {
    chaos.grow_memory();
    next.run(req).await
}

// ---------------------------------------------------------------------------
// The admin endpoint

/// The variable holding the admin's bearer token.
pub const ADMIN_TOKEN_VAR: &str = "SHOP_ADMIN_TOKEN";
/// The shortest admin token accepted.
const MIN_TOKEN_BYTES: usize = 16;

/// The secret a caller of `/admin/chaos` must present as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl AdminToken {
    /// `SHOP_ADMIN_TOKEN`, or None when it is unset or empty (the admin then
    /// refuses every call); an error when it is too short to be a secret.
    pub fn from_env() -> anyhow::Result<Option<AdminToken>> {
        match std::env::var(ADMIN_TOKEN_VAR) {
            Ok(t) if t.len() >= MIN_TOKEN_BYTES => Ok(Some(AdminToken(t.into_bytes().into()))),
            Ok(t) if !t.is_empty() => anyhow::bail!(
                "{ADMIN_TOKEN_VAR} is shorter than {MIN_TOKEN_BYTES} bytes: use a longer secret"
            ),
            _ => Ok(None),
        }
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where they differ (both are hashed first, then compared whole).
    fn admits(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (Sha256::digest(&self.0), Sha256::digest(presented));
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// `GET /admin/chaos` (the flags and what they hold), `PUT /admin/chaos` (a
/// JSON object of flags to change), `DELETE /admin/chaos` (clear all), and
/// the CPU profiles of [`super::profiling`] (`/admin/pprof/*`). Only
/// for direct calls from this host (a peer that is not loopback, or a request
/// that came through a proxy, `Forwarded`, `X-Forwarded-For`, `X-Real-IP`, is
/// refused 403 `admin_forbidden`) with `Authorization: Bearer <token>` (else
/// 401 `admin_unauthorized`). Without a token configured every call is
/// refused 403 `admin_disabled`. The gateway never mounts this on its public
/// listener (see [`super::router`]).
pub fn admin(chaos: Arc<Chaos>, token: Option<AdminToken>) -> Router {
    let service = chaos.service;
    Router::new()
        .route("/admin/chaos", get(show).put(change).delete(clear_all))
        .with_state(chaos)
        // CPU profiles, behind the same checks (see super::profiling).
        .merge(super::profiling::routes(service))
        .route_layer(from_fn(move |req, next| {
            authorised(token.clone(), req, next)
        }))
}

async fn authorised(token: Option<AdminToken>, req: Request, next: Next) -> Response {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    if !loopback || proxied {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_forbidden",
            "the chaos admin answers direct calls from this host only",
        )
        .into_response();
    }
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            format!("the chaos admin is off: start the service with {ADMIN_TOKEN_VAR} set"),
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !presented.is_some_and(|p| token.admits(p.as_bytes())) {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "the chaos admin needs Authorization: Bearer <SHOP_ADMIN_TOKEN>",
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(req).await
}

async fn show(State(chaos): State<Arc<Chaos>>) -> axum::Json<Value> {
    axum::Json(chaos.status())
}

async fn change(
    State(chaos): State<Arc<Chaos>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    chaos.update(&body)?;
    Ok(axum::Json(chaos.status()))
}

async fn clear_all(State(chaos): State<Arc<Chaos>>) -> axum::Json<Value> {
    chaos.clear();
    axum::Json(chaos.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variables_set_the_flags_that_apply_and_skip_the_others() {
        let (flags, ignored) = Flags::from_vars(
            Service::Catalog,
            vars(&[
                ("SHOP_CHAOS_CATALOG_CPU_MS", "150"),
                ("SHOP_CHAOS_DB_SLOW_MS", " 120 "),
                ("SHOP_CHAOS_PAYMENT_LATENCY_MS", "300"),
                ("SHOP_CHAOS_MEMORY_GROWTH_KB", "64"),
                ("SHOP_OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(flags.catalog_cpu_ms, 150);
        assert_eq!(flags.db_slow_ms, 120);
        assert_eq!(flags.memory_growth_kb, 64);
        assert_eq!(flags.payment_latency_ms, 0);
        assert_eq!(ignored, vec!["SHOP_CHAOS_PAYMENT_LATENCY_MS".to_owned()]);

        let (flags, _) = Flags::from_vars(
            Service::Checkout,
            vars(&[
                ("SHOP_CHAOS_DROP_DOWNSTREAM_RATIO", "0.25"),
                ("SHOP_CHAOS_DROP_DOWNSTREAM_TARGETS", "payments, shop-cart"),
            ]),
        )
        .unwrap();
        assert_eq!(flags.drop_downstream_ratio, 0.25);
        assert_eq!(flags.drop_downstream_targets, vec!["payments", "cart"]);

        let (flags, _) =
            Flags::from_vars(Service::Cart, vars(&[("SHOP_CHAOS_REDIS_DOWN", "1")])).unwrap();
        assert!(flags.redis_down);
    }

    #[test]
    fn unknown_variables_and_bad_values_refuse_to_start() {
        let e = Flags::from_vars(Service::Catalog, vars(&[("SHOP_CHAOS_DB_SLOWMS", "10")]))
            .unwrap_err();
        assert!(e.to_string().contains("SHOP_CHAOS_DB_SLOWMS"), "{e}");
        for (key, value) in [
            ("SHOP_CHAOS_DB_SLOW_MS", "-5"),
            ("SHOP_CHAOS_DB_SLOW_MS", "fast"),
            ("SHOP_CHAOS_DB_SLOW_MS", "1e9"),
            ("SHOP_CHAOS_MEMORY_GROWTH_KB", "2.5"),
        ] {
            let e = Flags::from_vars(Service::Catalog, vars(&[(key, value)])).unwrap_err();
            assert!(matches!(e, FlagError::Invalid { .. }), "{key}={value}: {e}");
        }
    }

    #[test]
    fn updates_are_checked_whole_and_partial() {
        let chaos = Chaos::with_flags(Some(Service::Payments), Flags::default());
        chaos
            .update(&json!({"payment_latency_ms": 250, "payment_error_ratio": 0.5}))
            .unwrap();
        chaos.update(&json!({"payment_error_ratio": 1})).unwrap();
        let f = chaos.flags();
        assert_eq!((f.payment_latency_ms, f.payment_error_ratio), (250, 1.0));
        assert_eq!(
            f.active(),
            vec!["payment_error_ratio=1.0", "payment_latency_ms=250"]
        );

        let cases = [
            (json!({"payment_error_ratio": 1.5}), "invalid_flag_value"),
            (json!({"payment_error_ratio": -0.1}), "invalid_flag_value"),
            (
                json!({"payment_latency_ms": 3_600_000}),
                "invalid_flag_value",
            ),
            (json!({"payment_latency_ms": "fast"}), "invalid_flag_value"),
            (json!({"payment_latency": 10}), "unknown_flag"),
            (json!({"catalog_cpu_ms": 10}), "flag_not_applicable"),
            (json!([1, 2]), "invalid_body"),
        ];
        for (body, code) in cases {
            let e: ApiError = chaos.update(&body).unwrap_err().into();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNPROCESSABLE_ENTITY, code),
                "{body}"
            );
        }
        // A bad flag leaves the good ones of the same body unapplied.
        assert!(
            chaos
                .update(&json!({"payment_latency_ms": 1, "nope": 1}))
                .is_err()
        );
        assert_eq!(chaos.flags().payment_latency_ms, 250);
        chaos.clear();
        assert_eq!(chaos.flags(), Flags::default());
    }

    /// Every flag of the table can be set, and shows as active.
    #[test]
    fn every_flag_is_stored() {
        for spec in SPECS {
            let value = match spec.kind {
                Kind::Number { max } => json!(max),
                Kind::Ratio => json!(0.5),
                Kind::Switch => json!(true),
                Kind::Services => json!(["payments"]),
            };
            let mut flags = Flags::default();
            flags.set(None, spec.name, &value).unwrap();
            let active = flags.active();
            assert_eq!(active.len(), 1, "{}: {active:?}", spec.name);
            assert!(active[0].starts_with(spec.name), "{active:?}");
        }
    }

    #[test]
    fn targets_must_be_services() {
        let chaos = Chaos::with_flags(Some(Service::Gateway), Flags::default());
        let e = chaos
            .update(&json!({"drop_downstream_targets": ["catalog", "billing"]}))
            .unwrap_err();
        assert!(e.to_string().contains("billing"), "{e}");
        chaos
            .update(&json!({"drop_downstream_ratio": 1.0, "drop_downstream_targets": ["catalog"]}))
            .unwrap();
        let span = tracing::Span::none();
        assert!(chaos.drop_call("shop-catalog", &span));
        assert!(!chaos.drop_call("shop-auth", &span));
    }

    #[test]
    fn an_undersized_pool_holds_the_rest() {
        let mut flags = Flags::default();
        assert_eq!(connections_to_hold(&flags, 10), 0);
        flags.db_pool_size = 1;
        assert_eq!(connections_to_hold(&flags, 10), 9);
        flags.db_pool_size = 50;
        assert_eq!(connections_to_hold(&flags, 10), 0);
        flags.db_pool_size = 4;
        flags.db_pool_hold = 8;
        assert_eq!(connections_to_hold(&flags, 10), 8);
        flags.db_pool_hold = 1000;
        assert_eq!(connections_to_hold(&flags, 10), 10);
    }

    #[test]
    fn churn_touches_every_buffer_and_keeps_nothing() {
        // 100 KiB: a 64 KiB buffer and a 36 KiB one, each copied once.
        assert_eq!(
            churn(100),
            u64::from((100 * 1024 % 251) as u8) + u64::from((36 * 1024 % 251) as u8) + 4
        );
        assert_eq!(churn(0), 0);
    }

    #[test]
    fn redis_down_is_answered_503_not_500() {
        let e = ApiError::from(redis_unreachable());
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
        assert!(e.retry_after.is_some());
    }

    #[test]
    fn memory_grows_to_the_cap_and_is_freed_when_cleared() {
        let chaos = Chaos::default();
        chaos
            .update(&json!({"memory_growth_kb": 600, "memory_cap_mb": 1}))
            .unwrap();
        assert_eq!(chaos.grow_memory(), 600 * 1024);
        assert_eq!(chaos.grow_memory(), 424 * 1024);
        assert_eq!(chaos.grow_memory(), 0);
        assert_eq!(chaos.status()["retained_memory_kb"], 1024);
        chaos.clear();
        assert_eq!(chaos.status()["retained_memory_kb"], 0);
    }

    const TOKEN: &str = "a test admin token, long enough";

    async fn call(
        app: &Router,
        method: &str,
        peer: [u8; 4],
        xff: bool,
        body: &str,
    ) -> (u16, Value) {
        call_with(app, method, peer, xff, Some(TOKEN), body).await
    }

    async fn call_with(
        app: &Router,
        method: &str,
        peer: [u8; 4],
        xff: bool,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri("/admin/chaos")
            .header("content-type", "application/json");
        if xff {
            req = req.header("x-forwarded-for", "203.0.113.9");
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(body.to_owned())).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn admin_answers_local_callers_only() {
        let chaos = Arc::new(Chaos::with_flags(Some(Service::Cart), Flags::default()));
        let app = admin(chaos.clone(), Some(AdminToken(TOKEN.as_bytes().into())));
        let local = [127, 0, 0, 1];
        let (status, body) = call(&app, "PUT", local, false, r#"{"redis_down": true}"#).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["flags"]["redis_down"], true);
        assert_eq!(body["service"], "cart");
        let (_, body) = call(&app, "GET", local, false, "").await;
        assert_eq!(body["active"], json!(["redis_down=true"]));
        let (status, body) = call(&app, "PUT", local, false, r#"{"redis_down": "yes"}"#).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_flag_value"))
        );
        let (status, _) = call(&app, "PUT", local, false, "{not json").await;
        assert_eq!(status, 400);
        for (peer, xff) in [([203, 0, 113, 9], false), (local, true)] {
            let (status, body) = call(&app, "DELETE", peer, xff, "").await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("admin_forbidden"))
            );
        }
        assert!(chaos.flags().redis_down);
        let (status, body) = call(&app, "DELETE", local, false, "").await;
        assert_eq!(status, 200);
        assert_eq!(body["active"], json!([]));
        assert!(!chaos.flags().redis_down);
    }

    /// The CPU profiles sit behind the same checks as the flags; a bad
    /// parameter is refused before anything is sampled.
    #[tokio::test]
    async fn profiles_need_the_admin_token() {
        let chaos = Arc::new(Chaos::with_flags(Some(Service::Catalog), Flags::default()));
        let app = admin(chaos, Some(AdminToken(TOKEN.as_bytes().into())));
        let (local, outside) = ([127, 0, 0, 1], [203, 0, 113, 9]);
        for (token, peer, status) in [
            (None, local, 401),
            (Some("a wrong token, long enough too"), local, 401),
            (Some(TOKEN), outside, 403),
            (Some(TOKEN), local, 422),
        ] {
            let mut req = axum::http::Request::builder().uri("/admin/pprof/flamegraph?seconds=0");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let mut req = req.body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
            let response = app.clone().oneshot(req).await.unwrap();
            assert_eq!(
                response.status().as_u16(),
                status,
                "{token:?} from {peer:?}"
            );
        }
    }

    /// No token, a wrong one, or no token configured: refused, flags unchanged.
    #[tokio::test]
    async fn admin_needs_the_token() {
        let chaos = Arc::new(Chaos::with_flags(Some(Service::Cart), Flags::default()));
        let app = admin(chaos.clone(), Some(AdminToken(TOKEN.as_bytes().into())));
        let local = [127, 0, 0, 1];
        let put = r#"{"redis_down": true}"#;
        for token in [None, Some("a wrong token, long enough too"), Some("")] {
            let (status, body) = call_with(&app, "PUT", local, false, token, put).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("admin_unauthorized")),
                "{token:?}"
            );
        }
        let off = admin(chaos.clone(), None);
        for token in [None, Some(TOKEN)] {
            let (status, body) = call_with(&off, "PUT", local, false, token, put).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("admin_disabled"))
            );
        }
        assert!(!chaos.flags().redis_down);
        let (status, _) = call_with(&app, "PUT", local, false, Some(TOKEN), put).await;
        assert_eq!(status, 200);
        assert!(chaos.flags().redis_down);
    }
}
