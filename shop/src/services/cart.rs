//! `cart`: one cart per session, in Redis (`cart:<session.id>`, a hash of
//! product id to item, 7 days to live).
//!
//! Routes: `GET /api/cart`, `POST /api/cart/items` `{"product_id", "quantity"}`
//! (`shop.cart.item_added`; the product is looked up in `catalog`),
//! `DELETE /api/cart`. Every Redis command runs in a `redis` CLIENT span.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::catalog::Product;
use super::http::{ApiError, ApiJson, Caller, HttpMetrics, Limit, Upstream, limit, route_limits};
use super::store::Kv;
use super::{Config, Service, events};

/// Header by which a service looking a product up tells `catalog` not to count a view.
pub const H_LOOKUP: &str = "x-shop-lookup";

const TTL_SECONDS: i64 = 7 * 24 * 3600;
pub const MAX_QUANTITY: i64 = 99;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub product_id: i64,
    pub name: String,
    pub category: String,
    pub price: f64,
    pub currency: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CartView {
    pub items: Vec<Item>,
    pub value: f64,
    pub currency: String,
}

#[derive(Debug, Deserialize)]
pub struct AddItem {
    pub product_id: i64,
    pub quantity: i64,
}

/// Checks an add-to-cart request: positive product id, quantity 1 to 99.
pub fn validate(add: &AddItem) -> Result<(), ApiError> {
    if add.product_id <= 0 {
        return Err(ApiError::invalid("product_id must be a positive integer"));
    }
    if !(1..=MAX_QUANTITY).contains(&add.quantity) {
        return Err(ApiError::invalid(format!(
            "quantity must be between 1 and {MAX_QUANTITY}"
        )));
    }
    Ok(())
}

#[derive(Clone)]
struct Cart {
    kv: Kv,
    catalog: Upstream,
}

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    let state = Cart {
        kv: Kv::connect(&config.redis_url, config.chaos.clone()).await?,
        catalog: config.upstream(Service::Catalog)?,
    };
    let (max, timeout) = route_limits();
    let lim = |route| from_fn_with_state(Limit::new(route, max, timeout, metrics), limit);
    Ok(Router::new()
        .route("/api/cart", get(view).delete(clear).layer(lim("/api/cart")))
        .route("/api/cart/items", post(add).layer(lim("/api/cart/items")))
        .with_state(state))
}

fn key(session: &str) -> String {
    format!("cart:{session}")
}

async fn load(kv: &Kv, session: &str) -> Result<CartView, ApiError> {
    let fields: Vec<String> = kv
        .run(
            "HVALS",
            "HVALS cart:?",
            redis::cmd("HVALS").arg(key(session)),
        )
        .await?;
    let mut items: Vec<Item> = fields
        .iter()
        .filter_map(|f| serde_json::from_str(f).ok())
        .collect();
    items.sort_by_key(|i| i.product_id);
    let value = items
        .iter()
        .map(|i| i.price * i.quantity as f64)
        .sum::<f64>();
    let currency = items
        .first()
        .map_or_else(|| "EUR".to_owned(), |i| i.currency.clone());
    Ok(CartView {
        items,
        value: (value * 100.0).round() / 100.0,
        currency,
    })
}

async fn view(State(cart): State<Cart>, caller: Caller) -> Result<axum::Json<CartView>, ApiError> {
    let session = caller.require_session()?;
    Ok(axum::Json(load(&cart.kv, session).await?))
}

async fn clear(State(cart): State<Cart>, caller: Caller) -> Result<StatusCode, ApiError> {
    let session = caller.require_session()?;
    let _: i64 = cart
        .kv
        .run("DEL", "DEL cart:?", redis::cmd("DEL").arg(key(session)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add(
    State(cart): State<Cart>,
    caller: Caller,
    ApiJson(req): ApiJson<AddItem>,
) -> Result<(StatusCode, axum::Json<CartView>), ApiError> {
    validate(&req)?;
    let session = caller.require_session()?.to_owned();
    let mut lookup = caller.clone();
    lookup.user_agent = None;
    let answer = cart
        .catalog
        .call(
            Method::GET,
            "/api/products/{id}",
            &format!("/api/products/{}?{H_LOOKUP}=1", req.product_id),
            &lookup,
            None,
        )
        .await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Err(ApiError::not_found(
            "product_not_found",
            format!("no product {}", req.product_id),
        ));
    }
    if !answer.status.is_success() {
        return Err(super::http::upstream_error(cart.catalog.name, answer));
    }
    let product: Product = answer.json()?;
    let existing: Option<String> = cart
        .kv
        .run(
            "HGET",
            "HGET cart:? ?",
            redis::cmd("HGET").arg(key(&session)).arg(req.product_id),
        )
        .await?;
    let already = existing
        .and_then(|e| serde_json::from_str::<Item>(&e).ok())
        .map_or(0, |i| i.quantity);
    let quantity = (already + req.quantity).min(MAX_QUANTITY);
    let item = Item {
        product_id: product.id,
        name: product.name.clone(),
        category: product.category.clone(),
        price: product.price,
        currency: product.currency.clone(),
        quantity,
    };
    let json = serde_json::to_string(&item).map_err(ApiError::internal)?;
    let _: i64 = cart
        .kv
        .run(
            "HSET",
            "HSET cart:? ? ?",
            redis::cmd("HSET")
                .arg(key(&session))
                .arg(req.product_id)
                .arg(json),
        )
        .await?;
    let _: i64 = cart
        .kv
        .run(
            "EXPIRE",
            "EXPIRE cart:? ?",
            redis::cmd("EXPIRE").arg(key(&session)).arg(TTL_SECONDS),
        )
        .await?;
    events::cart_item_added(
        &caller,
        product.id,
        &product.category,
        product.price,
        req.quantity,
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(load(&cart.kv, &session).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_must_be_between_1_and_99() {
        for (q, ok) in [(1, true), (99, true), (0, false), (-3, false), (100, false)] {
            let r = validate(&AddItem {
                product_id: 1,
                quantity: q,
            });
            assert_eq!(r.is_ok(), ok, "{q}");
        }
        assert!(
            validate(&AddItem {
                product_id: -1,
                quantity: 1
            })
            .is_err()
        );
    }
}
