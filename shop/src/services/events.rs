//! The contract's domain events (telemetry-contract.md, "Domain events").
//!
//! Each is a `tracing` event whose `name:` becomes the OTLP LogRecord
//! `event_name` (opentelemetry-appender-tracing), emitted inside the request's
//! span so the record carries its `trace_id` and `span_id`. Every event carries
//! `client.address` and, when known, `session.id` and `user.id`. Head sampling
//! does not apply to log records: events are exported for unsampled requests too.

use super::http::Caller;

/// Target of every domain event (filter on it with `RUST_LOG`).
pub const TARGET: &str = "shop.events";

/// `shop.auth.login`. `reason` only for failures.
pub fn login(
    caller: &Caller,
    user_hash: &str,
    success: bool,
    reason: Option<&str>,
    user_id: Option<&str>,
) {
    tracing::event!(
        name: "shop.auth.login",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = user_id.or(caller.user_id.as_deref()),
        user.hash = user_hash,
        shop.auth.outcome = if success { "success" } else { "failure" },
        shop.auth.failure_reason = reason,
        user_agent.original = caller.user_agent.as_deref(),
        "shop.auth.login"
    );
}

/// `shop.account.created`.
pub fn account_created(caller: &Caller, user_id: &str) {
    tracing::event!(
        name: "shop.account.created",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = user_id,
        "shop.account.created"
    );
}

/// `shop.product.viewed`.
pub fn product_viewed(caller: &Caller, product_id: i64, category: &str) {
    tracing::event!(
        name: "shop.product.viewed",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.product.id = product_id.to_string(),
        shop.product.category = category,
        "shop.product.viewed"
    );
}

/// `shop.search.performed`.
pub fn search_performed(caller: &Caller, results: i64) {
    tracing::event!(
        name: "shop.search.performed",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.search.results = results,
        "shop.search.performed"
    );
}

/// `shop.cart.item_added`.
pub fn cart_item_added(
    caller: &Caller,
    product_id: i64,
    category: &str,
    price: f64,
    quantity: i64,
) {
    tracing::event!(
        name: "shop.cart.item_added",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.product.id = product_id.to_string(),
        shop.product.category = category,
        shop.product.price = price,
        shop.cart.quantity = quantity,
        "shop.cart.item_added"
    );
}

/// `shop.checkout.started`.
pub fn checkout_started(caller: &Caller, cart_value: f64, currency: &str) {
    tracing::event!(
        name: "shop.checkout.started",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.cart.value = cart_value,
        shop.order.currency = currency,
        "shop.checkout.started"
    );
}

/// `shop.payment.attempt`. `decline_code` only for declines.
pub fn payment_attempt(
    caller: &Caller,
    outcome: &str,
    amount: f64,
    currency: &str,
    fingerprint: &str,
    decline_code: Option<&str>,
) {
    tracing::event!(
        name: "shop.payment.attempt",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.payment.outcome = outcome,
        shop.payment.amount = amount,
        shop.payment.currency = currency,
        shop.payment.card.fingerprint = fingerprint,
        shop.payment.decline_code = decline_code,
        "shop.payment.attempt"
    );
}

/// `shop.order.placed`.
pub fn order_placed(caller: &Caller, order_id: &str, amount: f64, currency: &str, items: i64) {
    tracing::event!(
        name: "shop.order.placed",
        target: TARGET,
        tracing::Level::INFO,
        client.address = %caller.client_address,
        session.id = caller.session_id.as_deref(),
        user.id = caller.user_id.as_deref(),
        shop.order.id = order_id,
        shop.order.amount = amount,
        shop.order.currency = currency,
        shop.order.items = items,
        "shop.order.placed"
    );
}
