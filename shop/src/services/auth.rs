//! `auth`: accounts with argon2id password hashes, lockout, a login rate limit.
//!
//! Routes: `POST /api/auth/register` `{"email", "password"}` (201
//! `{"user_id"}`, `shop.account.created`), `POST /api/auth/login`
//! `{"email", "password"}` (200 `{"user_id"}`, 401, 403 when locked, 429 when
//! rate limited; `shop.auth.login` with `user.hash`, never the e-mail).
//! Five failed logins in a row lock an account for 15 minutes
//! (`SHOP_LOCKOUT_FAILURES`, `SHOP_LOCKOUT_SECONDS`); one client address gets
//! `SHOP_LOGIN_RATE_PER_MIN` (default 30) login attempts a minute.
//! At start the service seeds 1000 accounts when there are none:
//! `shopper0001@example.com` / `shopper-0001-pass` ... `shopper1000@example.com`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::post;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};

use super::http::{ApiError, ApiJson, Caller, HttpMetrics, Limit, limit, route_limits};
use super::security::{self, Keys, normalise_login};
use super::store::Db;
use super::{Config, env_num, events};

/// How many accounts are seeded.
pub const SEED_ACCOUNTS: u32 = 1000;

#[derive(Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Authenticated {
    pub user_id: String,
}

/// Checks the shape of credentials for registration.
pub fn validate_registration(c: &Credentials) -> Result<(), ApiError> {
    let email = normalise_login(&c.email);
    let valid_email = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control());
    if !valid_email {
        return Err(ApiError::invalid("email must be an e-mail address"));
    }
    let len = c.password.chars().count();
    if !(8..=128).contains(&len) {
        return Err(ApiError::invalid("password must be 8 to 128 characters"));
    }
    Ok(())
}

#[derive(Clone)]
struct Auth {
    db: Db,
    keys: Keys,
    logins: Counter<u64>,
    attempts: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
    rate_per_min: u32,
    lockout_failures: i32,
    lockout: Duration,
    /// A hash verified when the account does not exist, so both cases cost the same.
    dummy_hash: Arc<String>,
}

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let db = Db::connect(&config.database_url, "auth", config.chaos.clone()).await?;
    let seeded = seed_accounts(&db).await?;
    if seeded > 0 {
        tracing::info!(seeded, "seeded test accounts");
    }
    let state = Auth {
        db,
        keys: Keys::from_env(),
        logins: opentelemetry::global::meter("shop.auth")
            .u64_counter("shop.auth.logins")
            .with_description("Login attempts by outcome")
            .build(),
        attempts: Arc::default(),
        rate_per_min: env_num("SHOP_LOGIN_RATE_PER_MIN", 30),
        lockout_failures: env_num("SHOP_LOCKOUT_FAILURES", 5),
        lockout: Duration::from_secs(env_num("SHOP_LOCKOUT_SECONDS", 900)),
        dummy_hash: Arc::new(security::hash_password_light("not a real password")?),
    };
    let (max, timeout) = route_limits();
    let lim = |route| from_fn_with_state(Limit::new(route, max, timeout, metrics), limit);
    Ok(Router::new()
        .route(
            "/api/auth/register",
            post(register).layer(lim("/api/auth/register")),
        )
        .route("/api/auth/login", post(login).layer(lim("/api/auth/login")))
        .with_state(state))
}

const SQL_COUNT: &str = "SELECT count(*) FROM accounts";
const SQL_SEED: &str = "INSERT INTO accounts (email, password_hash) SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (email) DO NOTHING";
const SQL_INSERT: &str = "INSERT INTO accounts (email, password_hash) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING RETURNING id";
const SQL_FIND: &str = "SELECT id, password_hash, failed_logins, locked_until > now() AS locked FROM accounts WHERE email = $1";
const SQL_FAILED: &str = "UPDATE accounts SET failed_logins = failed_logins + 1, locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3) ELSE locked_until END WHERE id = $1";
const SQL_SUCCEEDED: &str =
    "UPDATE accounts SET failed_logins = 0, locked_until = NULL WHERE id = $1";

/// Seeds [`SEED_ACCOUNTS`] accounts when the table is empty; returns how many were added.
pub async fn seed_accounts(db: &Db) -> anyhow::Result<u64> {
    let count: i64 = sqlx::query_scalar(SQL_COUNT).fetch_one(&db.pool).await?;
    if count > 0 {
        return Ok(0);
    }
    let mut emails = Vec::new();
    let mut hashes = Vec::new();
    for n in 1..=SEED_ACCOUNTS {
        let (email, password) = security::seed_account(n);
        hashes.push(security::hash_password_light(&password)?);
        emails.push(email);
    }
    let done = sqlx::query(SQL_SEED)
        .bind(&emails)
        .bind(&hashes)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}

impl Auth {
    /// Counts one login attempt of `client`; false when over the minute's budget.
    fn admit(&self, client: &str) -> bool {
        let Ok(mut attempts) = self.attempts.lock() else {
            return true;
        };
        let now = Instant::now();
        if attempts.len() > 100_000 {
            attempts.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = attempts.entry(client.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.rate_per_min
    }

    fn count(&self, outcome: &'static str, reason: Option<&'static str>) {
        let mut attrs = vec![KeyValue::new("shop.auth.outcome", outcome)];
        if let Some(r) = reason {
            attrs.push(KeyValue::new("shop.auth.failure_reason", r));
        }
        self.logins.add(1, &attrs);
    }

    fn fail(&self, caller: &Caller, user_hash: &str, reason: &'static str) {
        events::login(caller, user_hash, false, Some(reason), None);
        self.count("failure", Some(reason));
    }
}

async fn register(
    State(auth): State<Auth>,
    caller: Caller,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<(StatusCode, axum::Json<Authenticated>), ApiError> {
    validate_registration(&creds)?;
    let email = normalise_login(&creds.email);
    let password = creds.password;
    let hash = tokio::task::spawn_blocking(move || security::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut conn = auth.db.conn().await?;
    let id: Option<i64> = auth
        .db
        .run(
            "INSERT",
            "accounts",
            SQL_INSERT,
            sqlx::query_scalar(SQL_INSERT)
                .bind(&email)
                .bind(&hash)
                .fetch_optional(&mut *conn),
        )
        .await?;
    let id = id.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "account_exists",
            "an account with this e-mail exists",
        )
    })?;
    let user_id = id.to_string();
    events::account_created(&caller, &user_id);
    Ok((StatusCode::CREATED, axum::Json(Authenticated { user_id })))
}

async fn login(
    State(auth): State<Auth>,
    caller: Caller,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<axum::Json<Authenticated>, ApiError> {
    let user_hash = auth.keys.user_hash(&creds.email);
    if !auth.admit(&caller.client_address) {
        auth.fail(&caller, &user_hash, "rate_limited");
        return Err(ApiError::too_many(60));
    }
    if creds.email.len() > 254 || creds.password.chars().count() > 128 {
        auth.fail(&caller, &user_hash, "unknown_user");
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    }
    let email = normalise_login(&creds.email);
    let mut conn = auth.db.conn().await?;
    let row: Option<(i64, String, i32, Option<bool>)> = auth
        .db
        .run(
            "SELECT",
            "accounts",
            SQL_FIND,
            sqlx::query_as(SQL_FIND)
                .bind(&email)
                .fetch_optional(&mut *conn),
        )
        .await?;
    let (hash, known) = match &row {
        Some((_, hash, _, _)) => (hash.clone(), true),
        None => (auth.dummy_hash.as_str().to_owned(), false),
    };
    let password = creds.password;
    let matches = tokio::task::spawn_blocking(move || security::verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    let Some((id, _, _, locked)) = row.filter(|_| known) else {
        auth.fail(&caller, &user_hash, "unknown_user");
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    };
    if locked == Some(true) {
        auth.fail(&caller, &user_hash, "locked");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_locked",
            "too many failed logins; the account is locked for a while",
        ));
    }
    if !matches {
        auth.db
            .run(
                "UPDATE",
                "accounts",
                SQL_FAILED,
                sqlx::query(SQL_FAILED)
                    .bind(id)
                    .bind(auth.lockout_failures)
                    .bind(auth.lockout.as_secs_f64())
                    .execute(&mut *conn),
            )
            .await?;
        auth.fail(&caller, &user_hash, "bad_password");
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    }
    auth.db
        .run(
            "UPDATE",
            "accounts",
            SQL_SUCCEEDED,
            sqlx::query(SQL_SUCCEEDED).bind(id).execute(&mut *conn),
        )
        .await?;
    let user_id = id.to_string();
    super::http::record_identity(None, Some(&user_id));
    events::login(&caller, &user_hash, true, None, Some(&user_id));
    auth.count("success", None);
    Ok(axum::Json(Authenticated { user_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(email: &str, password: &str) -> Credentials {
        Credentials {
            email: email.into(),
            password: password.into(),
        }
    }

    #[test]
    fn registration_checks_email_and_password_length() {
        assert!(validate_registration(&creds("a@example.com", "longenough")).is_ok());
        assert!(validate_registration(&creds("not-an-email", "longenough")).is_err());
        assert!(validate_registration(&creds("a@example.com", "short")).is_err());
        assert!(validate_registration(&creds("a@example.com", &"x".repeat(129))).is_err());
        assert!(
            validate_registration(&creds("'; DROP TABLE accounts;--@x.io", "longenough")).is_err()
        );
    }

    #[test]
    fn credentials_debug_hides_both_fields() {
        let text = format!("{:?}", creds("alice@example.com", "hunter22"));
        assert!(!text.contains("alice") && !text.contains("hunter"));
    }
}
