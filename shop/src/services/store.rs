//! PostgreSQL (SQLx) and Redis, instrumented: a CLIENT span per operation with
//! the database conventions (`db.system.name`, `db.operation.name`,
//! `db.collection.name`, `db.query.text` parameterised, never with values),
//! `db.client.operation.duration`, and the pool's USE metrics
//! (`db.client.connection.count` by state, `db.client.connection.max`,
//! `db.client.connection.wait_time`).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::chaos::{self, Chaos};

/// The schema that holds the shop's tables (the database is shared with the engine).
pub const SCHEMA: &str = "shop";

fn operation_duration() -> Histogram<f64> {
    opentelemetry::global::meter("shop.db")
        .f64_histogram("db.client.operation.duration")
        .with_unit("s")
        .with_description("Duration of database and Redis operations")
        .with_boundaries(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
        .build()
}

/// A PostgreSQL pool.
#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    wait: Histogram<f64>,
    duration: Histogram<f64>,
    address: String,
    port: u16,
    pool_name: &'static str,
    chaos: Arc<Chaos>,
}

impl Db {
    /// Connects (`DATABASE_URL`), creates the `shop` schema and runs the
    /// migrations; `chaos` may slow its queries and hold its connections.
    pub async fn connect(
        url: &str,
        pool_name: &'static str,
        chaos: Arc<Chaos>,
    ) -> anyhow::Result<Db> {
        let max: u32 = std::env::var("SHOP_DB_POOL_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let options = PgConnectOptions::from_str(url)?.options([("search_path", SCHEMA)]);
        let address = options.get_host().to_owned();
        let port = options.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL at {address}:{port}: {e}"))?;
        sqlx::query("CREATE SCHEMA IF NOT EXISTS shop")
            .execute(&pool)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("running the shop migrations: {e}"))?;

        let meter = opentelemetry::global::meter("shop.db");
        let p = pool.clone();
        meter
            .i64_observable_up_down_counter("db.client.connection.count")
            .with_description("Connections of the pool, by state")
            .with_callback(move |o| {
                let idle = p.num_idle() as i64;
                let size = i64::from(p.size());
                let name = KeyValue::new("db.client.connection.pool.name", pool_name);
                o.observe(
                    size - idle,
                    &[
                        name.clone(),
                        KeyValue::new("db.client.connection.state", "used"),
                    ],
                );
                o.observe(
                    idle,
                    &[name, KeyValue::new("db.client.connection.state", "idle")],
                );
            })
            .build();
        meter
            .i64_observable_up_down_counter("db.client.connection.max")
            .with_description("Most connections the pool opens")
            .with_callback(move |o| {
                o.observe(
                    i64::from(max),
                    &[KeyValue::new("db.client.connection.pool.name", pool_name)],
                )
            })
            .build();
        let wait = meter
            .f64_histogram("db.client.connection.wait_time")
            .with_unit("s")
            .with_description("Time waited for a pooled connection")
            .with_boundaries(vec![0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0])
            .build();
        chaos::spawn_pool_holder(chaos.clone(), pool.clone(), max);
        Ok(Db {
            pool,
            wait,
            duration: operation_duration(),
            address,
            port,
            pool_name,
            chaos,
        })
    }

    /// The fault injection state this pool answers to.
    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }

    /// A connection from the pool; the wait is recorded, in
    /// `db.client.connection.wait_time` and as an INTERNAL span `acquire
    /// connection` (attribute `db.client.connection.pool.name`), so that a
    /// trace shows time waiting for a connection beside time in queries.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let span = tracing::info_span!(
            "acquire",
            otel.name = "acquire connection",
            otel.kind = "internal",
            otel.status_code = Empty,
            db.client.connection.pool.name = self.pool_name,
            error.type = Empty,
        );
        self.chaos.pool_undersized(&span);
        let started = Instant::now();
        let conn = self.pool.acquire().instrument(span.clone()).await;
        self.wait.record(started.elapsed().as_secs_f64(), &[]);
        if let Err(e) = &conn {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error_kind(e));
        }
        drop(span);
        if let Err(e @ sqlx::Error::PoolTimedOut) = &conn {
            tracing::warn!(error.type = error_kind(e), "no pooled connection in time");
            self.chaos.pool_timed_out();
        }
        conn
    }

    /// Runs `query` (built from `text` with bound parameters) inside a CLIENT span.
    pub async fn run<T>(
        &self,
        operation: &'static str,
        collection: &'static str,
        text: &'static str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        self.run_marked(None, operation, collection, text, query)
            .await
    }

    /// [`Db::run`], its span marked with an injected `fault` (and its detail).
    pub async fn run_marked<T>(
        &self,
        fault: Option<(chaos::Fault, &'static str)>,
        operation: &'static str,
        collection: &'static str,
        text: &'static str,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let span = tracing::info_span!(
            "db",
            otel.name = format!("{operation} {collection}"),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "postgresql",
            db.namespace = SCHEMA,
            db.operation.name = operation,
            db.collection.name = collection,
            db.query.text = text,
            server.address = self.address.as_str(),
            server.port = i64::from(self.port),
            error.type = Empty,
        );
        if let Some((fault, detail)) = fault {
            chaos::mark(&span, fault, detail);
        }
        let started = Instant::now();
        let slow = self.chaos.slow_query(&span);
        let query = async {
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            query.await
        };
        let result = query.instrument(span.clone()).await;
        let mut attrs = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.collection.name", collection),
        ];
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            let kind = error_kind(e);
            span.record("error.type", kind);
            attrs.push(KeyValue::new("error.type", kind));
        }
        self.duration
            .record(started.elapsed().as_secs_f64(), &attrs);
        result
    }
}

fn error_kind(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::RowNotFound => "row_not_found",
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Io(_) => "io",
        _ => "other",
    }
}

/// A Redis connection (multiplexed, reconnecting).
#[derive(Clone)]
pub struct Kv {
    conn: redis::aio::ConnectionManager,
    duration: Histogram<f64>,
    address: String,
    chaos: Arc<Chaos>,
}

impl Kv {
    /// Connects to `REDIS_URL`; `chaos` may take Redis out of reach.
    pub async fn connect(url: &str, chaos: Arc<Chaos>) -> anyhow::Result<Kv> {
        let client = redis::Client::open(url)?;
        let address = client.get_connection_info().addr.to_string();
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis at {address}: {e}"))?;
        Ok(Kv {
            conn,
            duration: operation_duration(),
            address,
            chaos,
        })
    }

    /// Runs `cmd` inside a CLIENT span; `text` is its parameterised form, e.g. `HGETALL cart:?`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        text: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, redis::RedisError> {
        let span = tracing::info_span!(
            "redis",
            otel.name = operation,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "redis",
            db.operation.name = operation,
            db.query.text = text,
            server.address = self.address.as_str(),
            error.type = Empty,
        );
        let started = Instant::now();
        let mut conn = self.conn.clone();
        let result: Result<T, _> = if self.chaos.redis_down(&span) {
            Err(chaos::redis_unreachable())
        } else {
            cmd.query_async(&mut conn).instrument(span.clone()).await
        };
        let mut attrs = vec![
            KeyValue::new("db.system.name", "redis"),
            KeyValue::new("db.operation.name", operation),
        ];
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", "redis");
            attrs.push(KeyValue::new("error.type", "redis"));
        }
        self.duration
            .record(started.elapsed().as_secs_f64(), &attrs);
        result
    }
}
