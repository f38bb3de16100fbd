//! What the traffic model produces: edge requests, resolved to their outcome,
//! with the downstream calls they make and the domain events they emit. The
//! renderer turns each into spans, log records and metric points.
//!
//! The builders here are the shop's behaviour ("a login with a wrong password
//! answers 401 and emits `shop.auth.login` with outcome `failure`"), shared by
//! genuine shoppers and attackers alike, so an attack looks like what the real
//! shop would record for it.

use super::hash::{card_fingerprint, user_hash};
use super::model::{Product, Service};
use super::rng::Rng;

/// Nanoseconds since the Unix epoch.
pub type Nanos = i64;

/// One second in nanoseconds.
pub const SECOND: Nanos = 1_000_000_000;

/// Seconds (fractional) to nanoseconds, rounded to the microsecond as the SDKs
/// of most languages record them.
pub fn secs(s: f64) -> Nanos {
    ((s * 1e6).round() as i64) * 1000
}

/// Who sends a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// `client.address`.
    pub address: String,
    /// `user_agent.original`.
    pub user_agent: String,
    /// `session.id`: an opaque identifier of the session, not its secret.
    pub session: Option<String>,
    /// `user.id` once logged in.
    pub user: Option<String>,
}

impl Client {
    /// A client with a fresh session.
    pub fn new(rng: &mut Rng, address: impl Into<String>, user_agent: impl Into<String>) -> Self {
        Client {
            address: address.into(),
            user_agent: user_agent.into(),
            session: Some(session_id(rng)),
            user: None,
        }
    }
}

/// A new `session.id`.
pub fn session_id(rng: &mut Rng) -> String {
    format!("s-{}", rng.hex(10))
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    F64(f64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}

/// A domain event, emitted inside the SERVER span of one hop.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    /// Index into [`Request::hops`] of the service that emits it.
    pub hop: usize,
    pub attrs: Vec<(&'static str, Value)>,
}

/// A call from the gateway (or the previous hop) to a downstream service.
#[derive(Debug, Clone)]
pub struct Hop {
    pub service: Service,
    pub method: &'static str,
    /// The downstream service's own route template.
    pub route: &'static str,
    pub path: String,
    pub status: u16,
}

/// What the client typed that the telemetry never shows. The renderer ignores
/// it; `shop-load`, which plays the same traffic against the real shop, needs
/// it to send the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// The login name (an e-mail address) of a login attempt.
    Login(String),
    /// The card number of a payment.
    Card(String),
    /// A long, wildcard-heavy search query (search abuse).
    LongQuery,
}

/// One inbound HTTP request at the edge, resolved to its outcome.
#[derive(Debug, Clone)]
pub struct Request {
    pub start: Nanos,
    pub duration: Nanos,
    pub client: Client,
    pub method: &'static str,
    /// `http.route` template.
    pub route: &'static str,
    /// `url.path`, without the query string.
    pub path: String,
    pub status: u16,
    /// Downstream chain: gateway → hops[0] → hops[1] ...; empty when the
    /// gateway answers by itself (rate limited).
    pub hops: Vec<Hop>,
    pub events: Vec<Event>,
    /// Seed for the trace and span ids, so a request's ids do not depend on
    /// what else is in the capture.
    pub ids: u64,
    /// What the client typed (never rendered).
    pub typed: Option<Typed>,
}

/// Outcome of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Success,
    BadPassword,
    UnknownUser,
    Locked,
    RateLimited,
}

impl Login {
    fn reason(self) -> Option<&'static str> {
        match self {
            Login::Success => None,
            Login::BadPassword => Some("bad_password"),
            Login::UnknownUser => Some("unknown_user"),
            Login::Locked => Some("locked"),
            Login::RateLimited => Some("rate_limited"),
        }
    }
}

/// Outcome of a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Approved,
    /// Declined, with the processor's decline code.
    Declined(&'static str),
    /// The processor failed (502).
    Error,
}

/// Decline codes and how often genuine declines carry them.
pub const DECLINE_CODES: [(&str, f64); 5] = [
    ("insufficient_funds", 0.4),
    ("do_not_honor", 0.25),
    ("expired_card", 0.15),
    ("incorrect_cvc", 0.15),
    ("stolen_card", 0.05),
];

/// A decline code drawn with the genuine mix.
pub fn decline_code(rng: &mut Rng) -> &'static str {
    DECLINE_CODES[rng.weighted(&DECLINE_CODES.map(|d| d.1))].0
}

fn hop(
    service: Service,
    method: &'static str,
    route: &'static str,
    path: String,
    status: u16,
) -> Hop {
    Hop {
        service,
        method,
        route,
        path,
        status,
    }
}

#[allow(clippy::too_many_arguments)]
fn request(
    rng: &mut Rng,
    start: Nanos,
    duration_s: impl FnOnce(&mut Rng) -> f64,
    client: &Client,
    method: &'static str,
    route: &'static str,
    path: String,
    status: u16,
) -> Request {
    let duration_s = duration_s(rng);
    Request {
        start,
        duration: secs(duration_s.max(0.0008)),
        client: client.clone(),
        method,
        route,
        path,
        status,
        hops: Vec::new(),
        events: Vec::new(),
        ids: rng.next_u64(),
        typed: None,
    }
}

/// `GET /api/products/{id}`: 200 and `shop.product.viewed`, or 404 for an id
/// that is not in the catalog.
pub fn product_view(
    rng: &mut Rng,
    t: Nanos,
    c: &Client,
    id: u32,
    product: Option<&Product>,
) -> Request {
    let status = if product.is_some() { 200 } else { 404 };
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.024, 0.4),
        c,
        "GET",
        "/api/products/{id}",
        format!("/api/products/{id}"),
        status,
    );
    r.hops.push(hop(
        Service::Catalog,
        "GET",
        "/products/{id}",
        format!("/products/{id}"),
        status,
    ));
    if let Some(p) = product {
        r.events.push(Event {
            name: "shop.product.viewed",
            hop: 0,
            attrs: vec![
                ("shop.product.id", p.id.to_string().into()),
                ("shop.product.category", p.category.into()),
            ],
        });
    }
    r
}

/// `GET /api/products`: a category listing.
pub fn listing(rng: &mut Rng, t: Nanos, c: &Client) -> Request {
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.035, 0.4),
        c,
        "GET",
        "/api/products",
        "/api/products".into(),
        200,
    );
    r.hops.push(hop(
        Service::Catalog,
        "GET",
        "/products",
        "/products".into(),
        200,
    ));
    r
}

/// `GET /api/search`: `shop.search.performed`. `duration_s` and `status`
/// override the usual fast 200 (for abuse and overload).
pub fn search(
    rng: &mut Rng,
    t: Nanos,
    c: &Client,
    results: i64,
    duration_s: Option<f64>,
    status: u16,
) -> Request {
    let d = duration_s.unwrap_or_else(|| rng.lognormal(0.06, 0.5));
    let mut r = request(
        rng,
        t,
        |_: &mut Rng| d,
        c,
        "GET",
        "/api/search",
        "/api/search".into(),
        status,
    );
    r.hops.push(hop(
        Service::Catalog,
        "GET",
        "/search",
        "/search".into(),
        status,
    ));
    if status < 500 {
        r.events.push(Event {
            name: "shop.search.performed",
            hop: 0,
            attrs: vec![("shop.search.results", results.into())],
        });
    }
    r
}

/// `POST /api/cart/items`: `shop.cart.item_added`.
pub fn add_to_cart(rng: &mut Rng, t: Nanos, c: &Client, p: &Product, quantity: i64) -> Request {
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.04, 0.4),
        c,
        "POST",
        "/api/cart/items",
        "/api/cart/items".into(),
        201,
    );
    r.hops.push(hop(
        Service::Cart,
        "POST",
        "/cart/items",
        "/cart/items".into(),
        201,
    ));
    r.events.push(Event {
        name: "shop.cart.item_added",
        hop: 0,
        attrs: vec![
            ("shop.product.id", p.id.to_string().into()),
            ("shop.product.category", p.category.into()),
            ("shop.product.price", p.price.into()),
            ("shop.cart.quantity", quantity.into()),
        ],
    });
    r
}

/// `GET /api/cart`.
pub fn view_cart(rng: &mut Rng, t: Nanos, c: &Client) -> Request {
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.02, 0.4),
        c,
        "GET",
        "/api/cart",
        "/api/cart".into(),
        200,
    );
    r.hops
        .push(hop(Service::Cart, "GET", "/cart", "/cart".into(), 200));
    r
}

/// `POST /api/auth/login` of `login_name`: `shop.auth.login` with the keyed
/// hash of the name. On success `user_id` is the account that logged in.
pub fn login(
    rng: &mut Rng,
    t: Nanos,
    c: &Client,
    login_name: &str,
    outcome: Login,
    user_id: Option<&str>,
) -> Request {
    let status = match outcome {
        Login::Success => 200,
        Login::BadPassword | Login::UnknownUser => 401,
        Login::Locked => 423,
        Login::RateLimited => 429,
    };
    // Password hashing makes a login slow on purpose; a locked or rate-limited
    // account is refused before it.
    let d = match outcome {
        Login::Locked | Login::RateLimited => rng.lognormal(0.012, 0.3),
        _ => rng.lognormal(0.16, 0.2),
    };
    let mut r = request(
        rng,
        t,
        |_: &mut Rng| d,
        c,
        "POST",
        "/api/auth/login",
        "/api/auth/login".into(),
        status,
    );
    r.hops.push(hop(
        Service::Auth,
        "POST",
        "/login",
        "/login".into(),
        status,
    ));
    r.typed = Some(Typed::Login(login_name.to_string()));
    let mut attrs: Vec<(&'static str, Value)> = vec![
        ("user.hash", user_hash(login_name).into()),
        (
            "shop.auth.outcome",
            if outcome == Login::Success {
                "success"
            } else {
                "failure"
            }
            .into(),
        ),
    ];
    if let Some(reason) = outcome.reason() {
        attrs.push(("shop.auth.failure_reason", reason.into()));
    }
    attrs.push(("user_agent.original", c.user_agent.clone().into()));
    if let (Login::Success, Some(id)) = (outcome, user_id) {
        attrs.push(("user.id", id.into()));
    }
    r.events.push(Event {
        name: "shop.auth.login",
        hop: 0,
        attrs,
    });
    r
}

/// `POST /api/auth/register`: `shop.account.created`.
pub fn register(rng: &mut Rng, t: Nanos, c: &Client, user_id: &str) -> Request {
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.19, 0.2),
        c,
        "POST",
        "/api/auth/register",
        "/api/auth/register".into(),
        201,
    );
    r.hops.push(hop(
        Service::Auth,
        "POST",
        "/accounts",
        "/accounts".into(),
        201,
    ));
    r.events.push(Event {
        name: "shop.account.created",
        hop: 0,
        attrs: vec![("user.id", user_id.into())],
    });
    r
}

/// `POST /api/checkout`: `shop.checkout.started`.
pub fn checkout(rng: &mut Rng, t: Nanos, c: &Client, cart_value: f64, currency: &str) -> Request {
    let mut r = request(
        rng,
        t,
        |r: &mut Rng| r.lognormal(0.09, 0.3),
        c,
        "POST",
        "/api/checkout",
        "/api/checkout".into(),
        200,
    );
    r.hops.push(hop(
        Service::Checkout,
        "POST",
        "/checkout",
        "/checkout".into(),
        200,
    ));
    r.events.push(Event {
        name: "shop.checkout.started",
        hop: 0,
        attrs: vec![
            ("shop.cart.value", round2(cart_value).into()),
            ("shop.order.currency", currency.into()),
        ],
    });
    r
}

/// `POST /api/payments` with `card`: `shop.payment.attempt` with the card's
/// fingerprint; an approved payment places the order (`shop.order.placed`,
/// emitted by shop-checkout in the same trace).
#[allow(clippy::too_many_arguments)]
pub fn payment(
    rng: &mut Rng,
    t: Nanos,
    c: &Client,
    amount: f64,
    currency: &str,
    card: &str,
    outcome: Payment,
    items: i64,
) -> Request {
    let status = match outcome {
        Payment::Approved => 201,
        Payment::Declined(_) => 402,
        Payment::Error => 502,
    };
    let d = match outcome {
        Payment::Error => rng.between(2.0, 5.0),
        _ => rng.lognormal(0.45, 0.35),
    };
    let mut r = request(
        rng,
        t,
        |_: &mut Rng| d,
        c,
        "POST",
        "/api/payments",
        "/api/payments".into(),
        status,
    );
    r.hops.push(hop(
        Service::Payments,
        "POST",
        "/payments",
        "/payments".into(),
        status,
    ));
    r.typed = Some(Typed::Card(card.to_string()));
    let amount = round2(amount);
    let mut attrs: Vec<(&'static str, Value)> = vec![
        (
            "shop.payment.outcome",
            match outcome {
                Payment::Approved => "approved",
                Payment::Declined(_) => "declined",
                Payment::Error => "error",
            }
            .into(),
        ),
        ("shop.payment.amount", amount.into()),
        ("shop.payment.currency", currency.into()),
        (
            "shop.payment.card.fingerprint",
            card_fingerprint(card).into(),
        ),
    ];
    if let Payment::Declined(code) = outcome {
        attrs.push(("shop.payment.decline_code", code.into()));
    }
    r.events.push(Event {
        name: "shop.payment.attempt",
        hop: 0,
        attrs,
    });
    if outcome == Payment::Approved {
        r.hops.push(hop(
            Service::Checkout,
            "POST",
            "/orders",
            "/orders".into(),
            201,
        ));
        r.events.push(Event {
            name: "shop.order.placed",
            hop: 1,
            attrs: vec![
                ("shop.order.id", format!("o-{}", rng.hex(6)).into()),
                ("shop.order.amount", amount.into()),
                ("shop.order.currency", currency.into()),
                ("shop.order.items", items.into()),
            ],
        });
    }
    r
}

/// The gateway's rate limiter answers 429 without calling downstream.
pub fn rate_limited(mut r: Request) -> Request {
    r.status = 429;
    r.hops.clear();
    r.events.clear();
    r.duration = secs(0.0004 + (r.ids % 400) as f64 * 1e-6);
    r
}

/// A server error in the downstream service (500 or 503): the request's
/// events are lost with it.
pub fn server_error(rng: &mut Rng, mut r: Request) -> Request {
    let status = if rng.chance(0.6) { 500 } else { 503 };
    r.status = status;
    if let Some(h) = r.hops.first_mut() {
        h.status = status;
    }
    r.hops.truncate(1);
    r.events.clear();
    r
}

/// Rounds to cents.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
