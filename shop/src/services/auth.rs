//! `auth`: accounts with argon2id password hashes, lockout, a login rate limit.
//!
//! Routes: `POST /api/auth/register` `{"email", "password"}` (202
//! `{"status": "accepted"}` whether the address was free or not;
//! `shop.account.created` when it was), `POST /api/auth/login`
//! `{"email", "password"}` (200 `{"user_id"}`; 401 for an unknown name, a
//! wrong password and a locked account alike; 429 when rate limited;
//! `shop.auth.login` with `user.hash`, never the e-mail, and the real reason).
//! Every login runs one argon2 verification, against a dummy hash when the
//! name is unknown ([`security::Passwords`]): neither the answer nor its time
//! tells which accounts exist.
//! Five attempts that did not succeed lock an account for 15 minutes
//! (`SHOP_LOCKOUT_FAILURES`, `SHOP_LOCKOUT_SECONDS`): each attempt is counted
//! and checked against the lock in one SQL statement before the password is
//! verified, so concurrent guesses cannot slip past it. One client address
//! gets `SHOP_LOGIN_RATE_PER_MIN` (default 30) login attempts a minute.
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
use tracing::Instrument as _;

use super::http::{ApiError, ApiJson, Caller, HttpMetrics, Limit, limit, route_limits};
use super::security::{self, Keys, Passwords, normalise_login};
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

/// The answer to every valid registration, new address or not: telling them
/// apart would tell which addresses have accounts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    pub status: String,
    pub message: String,
}

impl Registered {
    fn accepted() -> Self {
        Registered {
            status: "accepted".to_owned(),
            message: "if the address had no account, it has one now: sign in".to_owned(),
        }
    }
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
    passwords: Passwords,
}

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let keys = Keys::from_env()?;
    let db = Db::connect(&config.database_url, "auth", config.chaos.clone()).await?;
    let seeded = seed_accounts(&db).await?;
    if seeded > 0 {
        tracing::info!(seeded, "seeded test accounts");
    }
    let state = Auth {
        db,
        keys,
        logins: opentelemetry::global::meter("shop.auth")
            .u64_counter("shop.auth.logins")
            .with_description("Login attempts by outcome")
            .build(),
        attempts: Arc::default(),
        rate_per_min: env_num("SHOP_LOGIN_RATE_PER_MIN", 30),
        lockout_failures: env_num("SHOP_LOCKOUT_FAILURES", 5),
        lockout: Duration::from_secs(env_num("SHOP_LOCKOUT_SECONDS", 900)),
        passwords: Passwords::new()?,
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
/// One login attempt, checked and counted in one statement: an account that
/// is not locked has the attempt counted as a failure (locking it at the
/// `$2`th) before its password is verified, a locked one is left as it is.
/// The row comes back either way (`locked`: the attempt was refused); no row:
/// no such account. A success resets the count ([`SQL_SUCCEEDED`]).
const SQL_ATTEMPT: &str = "WITH attempt AS (UPDATE accounts SET failed_logins = failed_logins + 1, locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + make_interval(secs => $3) ELSE locked_until END WHERE email = $1 AND (locked_until IS NULL OR locked_until <= now()) RETURNING id) SELECT a.id, a.password_hash, NOT EXISTS (SELECT 1 FROM attempt) AS locked FROM accounts a WHERE a.email = $1";
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
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    validate_registration(&creds)?;
    let email = normalise_login(&creds.email);
    let password = creds.password;
    // Hashed whether the address is free or not: both answers take as long.
    let hashing = tracing::info_span!(
        "hash password",
        otel.name = "hash password",
        otel.kind = "internal"
    );
    let hash = tokio::task::spawn_blocking(move || security::hash_password(&password))
        .instrument(hashing)
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
    if let Some(id) = id {
        events::account_created(&caller, &id.to_string());
    }
    Ok((StatusCode::ACCEPTED, axum::Json(Registered::accepted())))
}

/// An account as a login attempt found it.
struct Attempt {
    id: i64,
    password_hash: String,
    /// Locked: the attempt was refused and not counted.
    locked: bool,
}

/// What a login attempt comes to, before it is answered.
#[derive(Debug, PartialEq)]
enum Verdict {
    Success(i64),
    /// `shop.auth.failure_reason`: `unknown_user`, `locked` or `bad_password`.
    Failure(&'static str),
}

/// Judges one attempt: exactly one argon2 verification whatever was found
/// (the account's hash, the dummy for an unknown name), then the verdict.
async fn judge(
    passwords: &Passwords,
    found: Option<Attempt>,
    password: String,
) -> Result<Verdict, ApiError> {
    let hash = found.as_ref().map(|a| a.password_hash.clone());
    let matches = passwords
        .verify(password, hash)
        .await
        .map_err(ApiError::internal)?;
    Ok(match found {
        None => Verdict::Failure("unknown_user"),
        Some(a) if a.locked => Verdict::Failure("locked"),
        Some(_) if !matches => Verdict::Failure("bad_password"),
        Some(a) => Verdict::Success(a.id),
    })
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
    let email = normalise_login(&creds.email);
    let found: Option<(i64, String, bool)> = {
        let mut conn = auth.db.conn().await?;
        auth.db
            .run(
                "UPDATE",
                "accounts",
                SQL_ATTEMPT,
                sqlx::query_as(SQL_ATTEMPT)
                    .bind(&email)
                    .bind(auth.lockout_failures)
                    .bind(auth.lockout.as_secs_f64())
                    .fetch_optional(&mut *conn),
            )
            .await?
    };
    let found = found.map(|(id, password_hash, locked)| Attempt {
        id,
        password_hash,
        locked,
    });
    let id = match judge(&auth.passwords, found, creds.password).await? {
        Verdict::Success(id) => id,
        Verdict::Failure(reason) => {
            // The events say what happened; the client learns only that it failed.
            auth.fail(&caller, &user_hash, reason);
            return Err(ApiError::unauthorized("wrong e-mail or password"));
        }
    };
    let mut conn = auth.db.conn().await?;
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

    /// An unknown name, a locked account and a known one each cost one
    /// argon2 verification with the parameters of every registration's hash,
    /// and all failures look alike to the client (the verdict's reason is
    /// for the events only).
    #[tokio::test]
    async fn every_login_runs_one_verification_of_the_same_cost() {
        let passwords = Passwords::new().unwrap();
        let registered = security::hash_password("the right one").unwrap();
        let cost = security::hash_cost(&registered);
        assert!(cost.is_some());
        assert_eq!(security::hash_cost(passwords.dummy()), cost);
        let account = |locked| Attempt {
            id: 7,
            password_hash: registered.clone(),
            locked,
        };
        let cases = [
            (None, "the right one", Verdict::Failure("unknown_user")),
            (
                Some(account(true)),
                "the right one",
                Verdict::Failure("locked"),
            ),
            (
                Some(account(false)),
                "a wrong one",
                Verdict::Failure("bad_password"),
            ),
            (Some(account(false)), "the right one", Verdict::Success(7)),
        ];
        for (n, (found, password, expected)) in cases.into_iter().enumerate() {
            let verdict = judge(&passwords, found, password.to_owned()).await.unwrap();
            assert_eq!(verdict, expected);
            assert_eq!(passwords.verified(), n as u64 + 1, "{expected:?}");
        }
    }

    #[test]
    fn credentials_debug_hides_both_fields() {
        let text = format!("{:?}", creds("alice@example.com", "hunter22"));
        assert!(!text.contains("alice") && !text.contains("hunter"));
    }
}
