//! The OpenAPI 3.1 description of the public API (`GET /openapi.json` on the gateway).

use serde_json::{Value, json};

fn op(summary: &str, body: Option<&str>, responses: &[(&str, &str)]) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": responses
            .iter()
            .map(|(code, what)| (code.to_string(), json!({ "description": what, "content": { "application/json": {} } })))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(schema), Some(obj)) = (body, o.as_object_mut()) {
        obj.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
        );
    }
    o
}

/// The document.
pub fn document() -> Value {
    let err = ("4XX", "error: {\"error\": {\"code\", \"message\"}}");
    let busy = ("503", "overloaded; see Retry-After");
    json!({
        "openapi": "3.1.0",
        "info": { "title": "otelguard shop", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/api/auth/register": { "post": op("Create an account (the same answer when the address has one)", Some("Credentials"), &[("202", "{\"status\", \"message\"}"), err, busy]) },
            "/api/auth/login": { "post": op("Sign in (sets the session cookie)", Some("Credentials"), &[("200", "{\"user_id\"}"), ("401", "wrong e-mail or password, or a locked account"), ("429", "rate limited"), busy]) },
            "/api/auth/logout": { "post": op("Sign out", None, &[("204", "signed out")]) },
            "/api/categories": { "get": op("List categories", None, &[("200", "{\"categories\"}"), busy]) },
            "/api/products": { "get": op("List products (?category=&page=&per_page=)", None, &[("200", "{\"products\"}"), err, busy]) },
            "/api/products/{id}": { "get": op("One product", None, &[("200", "a product"), ("404", "no such product"), err, busy]) },
            "/api/search": { "get": op("Search products (?q=)", None, &[("200", "{\"results\", \"products\"}"), err, busy]) },
            "/api/cart": {
                "get": op("The session's cart", None, &[("200", "a cart"), busy]),
                "delete": op("Empty the cart", None, &[("204", "emptied"), busy])
            },
            "/api/cart/items": { "post": op("Add a product to the cart", Some("AddItem"), &[("201", "the cart"), ("404", "no such product"), ("422", "bad quantity"), err, busy]) },
            "/api/checkout": { "post": op("Order and pay the cart (signed in)", Some("Checkout"), &[("201", "{\"order_id\", \"amount\", \"currency\", \"items\"}"), ("401", "not signed in"), ("402", "declined"), ("409", "empty cart"), ("502", "processor error"), err, busy]) },
            "/healthz": { "get": op("Liveness", None, &[("200", "ok")]) }
        },
        "components": { "schemas": {
            "Credentials": { "type": "object", "required": ["email", "password"], "properties": {
                "email": { "type": "string", "format": "email", "maxLength": 254 },
                "password": { "type": "string", "minLength": 8, "maxLength": 128 } } },
            "AddItem": { "type": "object", "required": ["product_id", "quantity"], "properties": {
                "product_id": { "type": "integer", "minimum": 1 },
                "quantity": { "type": "integer", "minimum": 1, "maximum": 99 } } },
            "Checkout": { "type": "object", "required": ["card"], "properties": {
                "card": { "type": "object", "required": ["number", "expiry", "cvv"], "properties": {
                    "number": { "type": "string" }, "expiry": { "type": "string", "pattern": "^\\d{2}/\\d{2}$" },
                    "cvv": { "type": "string", "pattern": "^\\d{3,4}$" } } } } }
        } }
    })
}
