//! `payments`: a simulated card processor.
//!
//! `POST /api/payments` `{"amount": 12.5, "currency": "EUR", "card": {"number", "expiry": "MM/YY", "cvv"}}`
//! answers `{"payment_id", "outcome": "approved"|"declined", "decline_code"?}`.
//! Test cards (the usual processor conventions): `4000 0000 0000 0002`
//! `card_declined`, `4000 0000 0000 9995` `insufficient_funds`, `4000 0000 0000 0069`
//! `expired_card`, `4000 0000 0000 0119` a processor error (502). Other valid
//! numbers are approved, except amounts above 5000 (`amount_limit_exceeded`),
//! a past expiry (`expired_card`), a number failing the Luhn check
//! (`incorrect_number`) and about 3 % `do_not_honor`, chosen by the card and amount.
//!
//! Telemetry: `shop.payment.attempt` (fingerprint = keyed hash of the number)
//! and the `shop.payments` counter by outcome. The card never leaves the handler.
//!
//! Failure injection ([`super::chaos`]): `payment_latency_ms` delays every
//! answer, `payment_error_ratio` turns that share of payments into processor errors.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::post;
use chrono::Datelike as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};

use super::chaos::Chaos;
use super::http::{ApiError, ApiJson, Caller, HttpMetrics, Limit, limit, route_limits};
use super::security::{Keys, card_digits, luhn_valid};
use super::{Config, events};

/// A card as the client gives it. Never logged, never recorded.
#[derive(Deserialize, Serialize, Clone)]
pub struct Card {
    pub number: String,
    pub expiry: String,
    pub cvv: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Card(redacted)")
    }
}

#[derive(Deserialize, Serialize, Debug)]
pub struct PaymentRequest {
    pub amount: f64,
    pub currency: String,
    pub card: Card,
}

#[derive(Deserialize, Serialize, Debug)]
pub struct PaymentAnswer {
    pub payment_id: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
}

#[derive(Clone)]
struct Payments {
    keys: Keys,
    counter: Counter<u64>,
    chaos: Arc<Chaos>,
}

pub fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let (max, timeout) = route_limits();
    let state = Payments {
        keys: Keys::from_env()?,
        counter: opentelemetry::global::meter("shop.payments")
            .u64_counter("shop.payments")
            .with_description("Payment attempts by outcome")
            .build(),
        chaos: config.chaos.clone(),
    };
    Ok(Router::new()
        .route(
            "/api/payments",
            post(pay).layer(from_fn_with_state(
                Limit::new("/api/payments", max, timeout, metrics),
                limit,
            )),
        )
        .with_state(state))
}

/// Validates the request shape; card problems are answered as declines, not errors.
pub fn validate(req: &PaymentRequest) -> Result<(), ApiError> {
    if !req.amount.is_finite() || req.amount <= 0.0 || req.amount > 1_000_000.0 {
        return Err(ApiError::invalid("amount must be positive"));
    }
    if !is_currency(&req.currency) {
        return Err(ApiError::invalid(
            "currency must be a three-letter ISO 4217 code",
        ));
    }
    let cvv_ok =
        (3..=4).contains(&req.card.cvv.len()) && req.card.cvv.chars().all(|c| c.is_ascii_digit());
    if !cvv_ok {
        return Err(ApiError::invalid("cvv must be 3 or 4 digits"));
    }
    if parse_expiry(&req.card.expiry).is_none() {
        return Err(ApiError::invalid("expiry must be MM/YY"));
    }
    if req.card.number.len() > 32 {
        return Err(ApiError::invalid("card number too long"));
    }
    Ok(())
}

/// Whether `c` looks like an ISO 4217 code.
pub fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase())
}

/// `MM/YY` as (year, month).
fn parse_expiry(expiry: &str) -> Option<(i32, u32)> {
    let (m, y) = expiry.trim().split_once('/')?;
    let month: u32 = m.parse().ok()?;
    let year: i32 = y.parse().ok()?;
    ((1..=12).contains(&month) && (0..100).contains(&year)).then_some((2000 + year, month))
}

/// What the simulated processor decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Declined(&'static str),
    ProcessorError,
}

/// The simulated processor's decision on `req`, `today` being (year, month).
pub fn decide(req: &PaymentRequest, today: (i32, u32)) -> Decision {
    let digits = card_digits(&req.card.number);
    if !luhn_valid(&req.card.number) {
        return Decision::Declined("incorrect_number");
    }
    match digits.as_str() {
        "4000000000000002" => return Decision::Declined("card_declined"),
        "4000000000009995" => return Decision::Declined("insufficient_funds"),
        "4000000000000069" => return Decision::Declined("expired_card"),
        "4000000000000119" => return Decision::ProcessorError,
        _ => {}
    }
    if parse_expiry(&req.card.expiry).is_some_and(|e| e < today) {
        return Decision::Declined("expired_card");
    }
    if req.amount > 5000.0 {
        return Decision::Declined("amount_limit_exceeded");
    }
    // A few percent of ordinary payments are refused by the "issuer",
    // deterministically by card and amount (so retries behave the same).
    let cents = (req.amount * 100.0).round() as u64;
    let h = digits
        .bytes()
        .fold(cents.wrapping_mul(0x9E37_79B9_7F4A_7C15), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    if digits.starts_with("4242") || h % 100 >= 3 {
        Decision::Approved
    } else {
        Decision::Declined("do_not_honor")
    }
}

async fn pay(
    State(state): State<Payments>,
    caller: Caller,
    ApiJson(req): ApiJson<PaymentRequest>,
) -> Result<(StatusCode, axum::Json<PaymentAnswer>), ApiError> {
    validate(&req)?;
    let fingerprint = state.keys.card_fingerprint(&req.card.number);
    state.chaos.payment_latency().await;
    let now = chrono::Utc::now();
    let decision = if state.chaos.payment_error() {
        Decision::ProcessorError
    } else {
        decide(&req, (now.year(), now.month()))
    };
    let payment_id = format!("pay_{:016x}", rand::random::<u64>());
    let (outcome, code) = match decision {
        Decision::Approved => ("approved", None),
        Decision::Declined(code) => ("declined", Some(code)),
        Decision::ProcessorError => ("error", None),
    };
    events::payment_attempt(
        &caller,
        outcome,
        req.amount,
        &req.currency,
        &fingerprint,
        code,
    );
    state.counter.add(
        1,
        &[
            KeyValue::new("shop.payment.outcome", outcome),
            KeyValue::new("shop.payment.currency", req.currency.clone()),
        ],
    );
    if outcome == "error" {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "processor_error",
            "the card processor failed, retry later",
        )
        .retry_after(5));
    }
    Ok((
        StatusCode::OK,
        axum::Json(PaymentAnswer {
            payment_id,
            outcome: outcome.to_owned(),
            decline_code: code.map(str::to_owned),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(number: &str, amount: f64) -> PaymentRequest {
        PaymentRequest {
            amount,
            currency: "EUR".into(),
            card: Card {
                number: number.into(),
                expiry: "12/40".into(),
                cvv: "123".into(),
            },
        }
    }

    #[test]
    fn test_cards_decide_as_documented() {
        let today = (2026, 1);
        assert_eq!(
            decide(&req("4242 4242 4242 4242", 10.0), today),
            Decision::Approved
        );
        assert_eq!(
            decide(&req("4000000000000002", 10.0), today),
            Decision::Declined("card_declined")
        );
        assert_eq!(
            decide(&req("4000000000009995", 10.0), today),
            Decision::Declined("insufficient_funds")
        );
        assert_eq!(
            decide(&req("4000000000000119", 10.0), today),
            Decision::ProcessorError
        );
        assert_eq!(
            decide(&req("4242424242424241", 10.0), today),
            Decision::Declined("incorrect_number")
        );
        assert_eq!(
            decide(&req("4242424242424242", 9000.0), today),
            Decision::Declined("amount_limit_exceeded")
        );
        let mut old = req("4242424242424242", 10.0);
        old.card.expiry = "01/20".into();
        assert_eq!(decide(&old, today), Decision::Declined("expired_card"));
    }

    #[test]
    fn validation_rejects_bad_shapes() {
        assert!(validate(&req("4242424242424242", -1.0)).is_err());
        assert!(validate(&req("4242424242424242", f64::NAN)).is_err());
        let mut r = req("4242424242424242", 1.0);
        r.card.cvv = "12a".into();
        assert!(validate(&r).is_err());
        let mut r = req("4242424242424242", 1.0);
        r.currency = "eur'--".into();
        assert!(validate(&r).is_err());
        assert!(validate(&req("4242424242424242", 1.0)).is_ok());
    }

    #[test]
    fn card_debug_is_redacted() {
        let r = req("4242424242424242", 1.0);
        assert!(!format!("{r:?}").contains("4242"));
    }
}
