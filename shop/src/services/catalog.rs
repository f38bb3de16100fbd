//! `catalog`: products, categories, search (PostgreSQL through SQLx).
//!
//! Routes: `GET /api/categories`, `GET /api/products?category=&page=&per_page=`,
//! `GET /api/products/{id}` (`shop.product.viewed`),
//! `GET /api/search?q=` (`shop.search.performed`, the query text is bound as a
//! parameter and never recorded). Every query runs in a `db` CLIENT span.
//! Failure injection: `catalog_cpu_ms` burns CPU before every request,
//! `blocking_call_ms` blocks the runtime before every request, `n_plus_one`
//! reads a listing one product at a time, `missing_index` looks products up
//! by a sequential scan ([`super::chaos`]).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::chaos::{self, Fault};
use super::http::{ApiError, Caller, HttpMetrics, Limit, limit, route_limits};
use super::store::Db;
use super::{Config, events};

/// A product as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    #[serde(skip)]
    pub price_cents: i64,
    #[sqlx(skip)]
    #[serde(default)]
    pub price: f64,
    pub currency: String,
    pub stock: i32,
}

impl Product {
    fn priced(mut self) -> Self {
        self.price = self.price_cents as f64 / 100.0;
        self
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Category {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct ListParams {
    category: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
}

const COLUMNS: &str =
    "id, sku, name, description, category_id AS category, price_cents, currency, stock";
const SQL_CATEGORIES: &str = "SELECT id, name FROM categories ORDER BY id";
const SQL_PRODUCT: &str = "SELECT id, sku, name, description, category_id AS category, price_cents, currency, stock FROM products WHERE id = $1";
/// The lookup under `missing_index`: `id + 0` is an expression the primary
/// key's index cannot serve, so PostgreSQL scans the whole table (the plan a
/// lookup on an unindexed column gets; its cost grows with the table).
const SQL_PRODUCT_SCAN: &str = "SELECT id, sku, name, description, category_id AS category, price_cents, currency, stock FROM products WHERE id + 0 = $1";
/// The page's ids, for the listing under `n_plus_one` (each product is then read by [`SQL_PRODUCT`]).
const SQL_LIST_IDS: &str = "SELECT id FROM products WHERE ($1::text IS NULL OR category_id = $1) ORDER BY id LIMIT $2 OFFSET $3";
const SQL_LIST: &str = "SELECT id, sku, name, description, category_id AS category, price_cents, currency, stock FROM products WHERE ($1::text IS NULL OR category_id = $1) ORDER BY id LIMIT $2 OFFSET $3";
const SQL_SEARCH: &str = "SELECT id, sku, name, description, category_id AS category, price_cents, currency, stock FROM products WHERE name ILIKE $1 OR description ILIKE $1 ORDER BY id LIMIT 50";

pub async fn router(config: &Config, metrics: &HttpMetrics) -> anyhow::Result<Router> {
    debug_assert!(SQL_PRODUCT.contains(COLUMNS));
    let db = Db::connect(&config.database_url, "catalog", config.chaos.clone()).await?;
    let (max, timeout) = route_limits();
    let lim = |route| from_fn_with_state(Limit::new(route, max, timeout, metrics), limit);
    Ok(Router::new()
        .route(
            "/api/categories",
            get(categories).layer(lim("/api/categories")),
        )
        .route("/api/products", get(list).layer(lim("/api/products")))
        .route(
            "/api/products/{id}",
            get(product).layer(lim("/api/products/{id}")),
        )
        .route("/api/search", get(search).layer(lim("/api/search")))
        .route_layer(from_fn_with_state(config.chaos.clone(), chaos::burn_cpu))
        .route_layer(from_fn_with_state(
            config.chaos.clone(),
            chaos::block_runtime,
        ))
        .with_state(db))
}

async fn categories(State(db): State<Db>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut conn = db.conn().await?;
    let rows: Vec<Category> = db
        .run(
            "SELECT",
            "categories",
            SQL_CATEGORIES,
            sqlx::query_as(SQL_CATEGORIES).fetch_all(&mut *conn),
        )
        .await?;
    Ok(axum::Json(serde_json::json!({ "categories": rows })))
}

/// Parses a product id from the path: a positive integer, else 400 (not 500, not 404).
pub fn parse_product_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_product_id",
            "product id must be a positive integer",
        )
    })
}

#[derive(Debug, Deserialize)]
struct ProductParams {
    #[serde(rename = "x-shop-lookup")]
    lookup: Option<u8>,
}

async fn product(
    State(db): State<Db>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(params): Query<ProductParams>,
) -> Result<axum::Json<Product>, ApiError> {
    let id = parse_product_id(&raw)?;
    let mut conn = db.conn().await?;
    let (sql, fault) = if db.chaos().missing_index() {
        let detail = "product lookup without its index: sequential scan";
        (SQL_PRODUCT_SCAN, Some((Fault::MissingIndex, detail)))
    } else {
        (SQL_PRODUCT, None)
    };
    let found: Option<Product> = db
        .run_marked(
            fault,
            "SELECT",
            "products",
            sql,
            sqlx::query_as(sql).bind(id).fetch_optional(&mut *conn),
        )
        .await?;
    let product = found
        .ok_or_else(|| ApiError::not_found("product_not_found", format!("no product {id}")))?
        .priced();
    // A lookup by another service (the cart pricing an item) is not a view.
    if params.lookup.is_none() {
        events::product_viewed(&caller, product.id, &product.category);
    }
    Ok(axum::Json(product))
}

async fn list(
    State(db): State<Db>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let page = params.page.unwrap_or(1);
    let per_page = params.per_page.unwrap_or(20);
    if page < 1 || !(1..=100).contains(&per_page) {
        return Err(ApiError::invalid(
            "page must be >= 1 and per_page between 1 and 100",
        ));
    }
    if let Some(c) = &params.category
        && (c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-'))
    {
        return Err(ApiError::invalid("unknown category"));
    }
    let mut conn = db.conn().await?;
    let offset = (page - 1).saturating_mul(per_page);
    let rows: Vec<Product> = if db.chaos().n_plus_one() {
        // The page's ids first, then each product by its own query.
        let ids: Vec<(i64,)> = db
            .run(
                "SELECT",
                "products",
                SQL_LIST_IDS,
                sqlx::query_as(SQL_LIST_IDS)
                    .bind(params.category.as_deref())
                    .bind(per_page)
                    .bind(offset)
                    .fetch_all(&mut *conn),
            )
            .await?;
        let mut rows = Vec::with_capacity(ids.len());
        for (id,) in ids {
            let found: Option<Product> = db
                .run(
                    "SELECT",
                    "products",
                    SQL_PRODUCT,
                    sqlx::query_as(SQL_PRODUCT)
                        .bind(id)
                        .fetch_optional(&mut *conn),
                )
                .await?;
            rows.extend(found);
        }
        rows
    } else {
        db.run(
            "SELECT",
            "products",
            SQL_LIST,
            sqlx::query_as(SQL_LIST)
                .bind(params.category.as_deref())
                .bind(per_page)
                .bind(offset)
                .fetch_all(&mut *conn),
        )
        .await?
    };
    let products: Vec<Product> = rows.into_iter().map(Product::priced).collect();
    Ok(axum::Json(
        serde_json::json!({ "page": page, "per_page": per_page, "products": products }),
    ))
}

async fn search(
    State(db): State<Db>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let q = params.q.unwrap_or_default();
    let q = q.trim();
    if q.is_empty() || q.chars().count() > 100 {
        return Err(ApiError::invalid("q must be 1 to 100 characters"));
    }
    // LIKE wildcards in the user's text are matched literally.
    let escaped: String = q
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let pattern = format!("%{escaped}%");
    let mut conn = db.conn().await?;
    let rows: Vec<Product> = db
        .run(
            "SELECT",
            "products",
            SQL_SEARCH,
            sqlx::query_as(SQL_SEARCH)
                .bind(pattern)
                .fetch_all(&mut *conn),
        )
        .await?;
    events::search_performed(&caller, rows.len() as i64);
    let products: Vec<Product> = rows.into_iter().map(Product::priced).collect();
    Ok(axum::Json(
        serde_json::json!({ "results": products.len(), "products": products }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_must_be_positive_integers() {
        assert_eq!(parse_product_id("42").ok(), Some(42));
        for bad in ["0", "-1", "1' OR '1'='1", "", "99999999999999999999", "1.5"] {
            let e = parse_product_id(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
