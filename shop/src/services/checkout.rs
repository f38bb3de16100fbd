//! `checkout`: turns the session's cart into an order (PostgreSQL) and pays it
//! through `payments`.
//!
//! Route: `POST /api/checkout` `{"card": {"number", "expiry", "cvv"}}`, signed in
//! only. Reads the cart from `cart`, emits `shop.checkout.started`, writes the
//! order `pending`, calls `payments`; approved: the order is `placed`
//! (`shop.order.placed`, `shop.orders`, `shop.revenue`), the cart emptied, 201
//! `{"order_id", "amount", "currency", "items"}`; declined: 402 with the decline
//! code; processor error: 502.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::post;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cart::CartView;
use super::http::{ApiError, ApiJson, Caller, HttpMetrics, Limit, Upstream, limit, route_limits};
use super::payments::{Card, PaymentAnswer, PaymentRequest};
use super::store::Db;
use super::{Config, Service, events};

#[derive(Deserialize, Debug)]
pub struct CheckoutRequest {
    pub card: Card,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Placed {
    pub order_id: String,
    pub amount: f64,
    pub currency: String,
    pub items: i64,
}

#[derive(Clone)]
struct Checkout {
    db: Db,
    cart: Upstream,
    payments: Upstream,
    orders: Counter<u64>,
    revenue: Counter<f64>,
}

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let meter = opentelemetry::global::meter("shop.checkout");
    let state = Checkout {
        db: Db::connect(&config.database_url, "checkout", config.chaos.clone()).await?,
        cart: config.upstream(Service::Cart)?,
        payments: config.upstream(Service::Payments)?,
        orders: meter
            .u64_counter("shop.orders")
            .with_description("Orders placed")
            .build(),
        revenue: meter
            .f64_counter("shop.revenue")
            .with_description("Revenue of placed orders, in the currency's major unit")
            .build(),
    };
    let (max, timeout) = route_limits();
    Ok(Router::new()
        .route(
            "/api/checkout",
            post(checkout).layer(from_fn_with_state(
                Limit::new("/api/checkout", max, timeout, metrics),
                limit,
            )),
        )
        .with_state(state))
}

const SQL_ORDER: &str = "INSERT INTO orders (user_id, status, amount_cents, currency, items) VALUES ($1, 'pending', $2, $3, $4) RETURNING id";
const SQL_ITEM: &str =
    "INSERT INTO order_items (order_id, product_id, quantity, price_cents) VALUES ($1, $2, $3, $4)";
const SQL_SETTLE: &str = "UPDATE orders SET status = $2, payment_id = $3 WHERE id = $1";

async fn checkout(
    State(state): State<Checkout>,
    caller: Caller,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> Result<(StatusCode, axum::Json<Placed>), ApiError> {
    let user_id: i64 = caller
        .require_user()?
        .parse()
        .map_err(|_| ApiError::unauthorized("sign in first"))?;
    caller.require_session()?;
    let cart: CartView = state
        .cart
        .call_json::<CartView, ()>(Method::GET, "/api/cart", "/api/cart", &caller, None)
        .await?;
    if cart.items.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cart_empty",
            "the cart is empty",
        ));
    }
    let items: i64 = cart.items.iter().map(|i| i.quantity).sum();
    events::checkout_started(&caller, cart.value, &cart.currency);

    let amount_cents = (cart.value * 100.0).round() as i64;
    let mut conn = state.db.conn().await?;
    let order_id: i64 = state
        .db
        .run(
            "INSERT",
            "orders",
            SQL_ORDER,
            sqlx::query_scalar(SQL_ORDER)
                .bind(user_id)
                .bind(amount_cents)
                .bind(&cart.currency)
                .bind(items as i32)
                .fetch_one(&mut *conn),
        )
        .await?;
    for item in &cart.items {
        state
            .db
            .run(
                "INSERT",
                "order_items",
                SQL_ITEM,
                sqlx::query(SQL_ITEM)
                    .bind(order_id)
                    .bind(item.product_id)
                    .bind(item.quantity as i32)
                    .bind((item.price * 100.0).round() as i64)
                    .execute(&mut *conn),
            )
            .await?;
    }
    drop(conn);

    let payment = PaymentRequest {
        amount: cart.value,
        currency: cart.currency.clone(),
        card: req.card,
    };
    let paid = state
        .payments
        .call_json::<PaymentAnswer, _>(
            Method::POST,
            "/api/payments",
            "/api/payments",
            &caller,
            Some(&payment),
        )
        .await;
    let (status, payment_id) = match &paid {
        Ok(p) if p.outcome == "approved" => ("placed", Some(p.payment_id.clone())),
        Ok(p) => ("declined", Some(p.payment_id.clone())),
        Err(_) => ("failed", None),
    };
    let mut conn = state.db.conn().await?;
    state
        .db
        .run(
            "UPDATE",
            "orders",
            SQL_SETTLE,
            sqlx::query(SQL_SETTLE)
                .bind(order_id)
                .bind(status)
                .bind(payment_id)
                .execute(&mut *conn),
        )
        .await?;
    drop(conn);
    let answer = paid?;
    if answer.outcome != "approved" {
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment_declined",
            "the payment was declined",
        )
        .with_details(json!({ "decline_code": answer.decline_code })));
    }

    let order = order_id.to_string();
    events::order_placed(&caller, &order, cart.value, &cart.currency, items);
    let currency = KeyValue::new("shop.order.currency", cart.currency.clone());
    state.orders.add(1, std::slice::from_ref(&currency));
    state.revenue.add(cart.value, &[currency]);
    let _ = state
        .cart
        .call(Method::DELETE, "/api/cart", "/api/cart", &caller, None)
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(Placed {
            order_id: order,
            amount: cart.value,
            currency: cart.currency,
            items,
        }),
    ))
}
