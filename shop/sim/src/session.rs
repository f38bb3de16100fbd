//! Genuine shoppers: a session browses the catalog, searches, adds to the cart,
//! and sometimes logs in, checks out and pays. Most carts are abandoned.

use super::model::{
    BROWSER_AGENTS, CURRENCIES, Model, Product, User, card_number, shopper_address,
};
use super::request::{self as shop, Client, Login, Nanos, Payment, Request, secs};
use super::rng::Rng;

/// How a genuine shopper behaves, whoever plays it: the simulator's shoppers
/// and `shop-load`'s visits share these habits and their presets.
#[derive(Debug, Clone, PartialEq)]
pub struct Habits {
    /// Logs in on arrival rather than at checkout.
    pub login_first: bool,
    /// Likelihood, relative to the usual shopper (1.0), of going to checkout.
    pub intent: f64,
    /// Median think time between two requests, seconds.
    pub think: f64,
    /// A product the visit is about (a flash sale item), viewed and bought more.
    pub focus: Option<u32>,
    /// Chance that a login attempt is a mistyped password.
    pub typo: f64,
    /// Keeps shopping after an order (a power user) instead of leaving.
    pub repeat: bool,
    /// Upper bound on the number of requests.
    pub max_requests: usize,
}

impl Default for Habits {
    /// The usual shopper, logging in at checkout.
    fn default() -> Self {
        Habits {
            login_first: false,
            intent: 1.0,
            think: 8.0,
            focus: None,
            typo: 0.06,
            repeat: false,
            max_requests: 60,
        }
    }
}

impl Habits {
    /// A flash sale shopper: about one discounted product, four times as
    /// likely to buy, a little quicker.
    pub fn flash_sale(&mut self, item: u32) {
        self.focus = Some(item);
        self.intent = 4.0;
        self.think = 5.0;
    }

    /// An office worker shopping on a break: slower, longer, a few more typos.
    pub fn office(&mut self) {
        self.typo = 0.08;
        self.think = 6.0;
        self.max_requests = 80;
        self.intent = 1.5;
    }

    /// A fast power user: no typos, half a second between requests, keeps
    /// shopping after an order.
    pub fn power_user(&mut self) {
        self.typo = 0.0;
        self.think = 0.5;
        self.repeat = true;
        self.intent = 0.5;
        self.max_requests = 2000;
    }

    /// A customer brought back by an e-mail campaign: logs in on arrival,
    /// three times as likely to buy, the usual typos.
    pub fn campaign(&mut self) {
        self.login_first = true;
        self.intent = 3.0;
    }

    /// A short visit without typos (a victim's own visit before a takeover).
    pub fn brief(&mut self) {
        self.typo = 0.0;
        self.max_requests = 8;
    }
}

/// How one shopper behaves.
#[derive(Debug, Clone)]
pub struct Shopper<'a> {
    pub client: Client,
    /// The account this person owns, if any (logged in or not).
    pub user: Option<&'a User>,
    pub habits: Habits,
    /// The visit ends at this time at the latest.
    pub until: Nanos,
}

impl<'a> Shopper<'a> {
    /// A typical visitor: a registered customer from home (45%) or an anonymous
    /// visitor.
    pub fn typical(rng: &mut Rng, model: &'a Model) -> Self {
        let user = if rng.chance(0.45) {
            Some(rng.pick(&model.users))
        } else {
            None
        };
        let address = match user {
            Some(u) if rng.chance(0.8) => u.home.clone(),
            _ => shopper_address(rng),
        };
        let agent = *rng.pick(&BROWSER_AGENTS);
        Shopper {
            client: Client::new(rng, address, agent),
            user,
            habits: Habits {
                login_first: user.is_some() && rng.chance(0.4),
                ..Habits::default()
            },
            until: Nanos::MAX,
        }
    }

    /// A registered customer, at a given address.
    pub fn customer(rng: &mut Rng, user: &'a User, address: &str) -> Self {
        let agent = *rng.pick(&BROWSER_AGENTS);
        Shopper {
            client: Client::new(rng, address, agent),
            user: Some(user),
            habits: Habits {
                login_first: true,
                ..Habits::default()
            },
            until: Nanos::MAX,
        }
    }
}

/// Average number of requests in a typical session; the baseline divides its
/// request rate by it to get the session arrival rate.
pub const MEAN_REQUESTS_PER_SESSION: f64 = 7.9;

/// Orders one visit places at most (a power user keeps browsing after).
const MAX_ORDERS: usize = 3;

/// The requests of one visit starting at `t`.
pub fn visit(rng: &mut Rng, model: &Model, start: Nanos, mut s: Shopper<'_>) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    let mut t = start;
    let mut cart: Vec<(&Product, i64)> = Vec::new();
    let mut last: Option<&Product> = None;
    let mut orders = 0;
    let think = |rng: &mut Rng, median: f64| secs(rng.lognormal(median, 0.8).clamp(0.4, 240.0));

    if let (true, Some(u)) = (s.habits.login_first, s.user) {
        t = log_in(rng, t, &mut s.client, u, s.habits.typo, &mut out);
        t += think(rng, s.habits.think * 0.5);
    }
    // Landing page.
    match rng.weighted(&[0.5, 0.3, 0.2]) {
        0 => out.push(shop::listing(rng, t, &s.client)),
        1 => {
            let n = rng.range(0, 120) as i64;
            out.push(shop::search(rng, t, &s.client, n, None, 200))
        }
        _ => {
            let p = pick_product(rng, model, s.habits.focus);
            out.push(shop::product_view(rng, t, &s.client, p.id, Some(p)));
            last = Some(p);
        }
    }

    while out.len() < s.habits.max_requests {
        t += think(rng, s.habits.think);
        if t >= s.until {
            break;
        }
        let has_cart = !cart.is_empty();
        let weights = [
            0.45, // view a product
            0.15, // search
            0.08, // listing
            if last.is_some() {
                0.12 + 0.3 * f64::from(s.habits.focus.is_some())
            } else {
                0.0
            }, // add to cart
            if has_cart { 0.04 } else { 0.0 }, // view the cart
            if has_cart && orders < MAX_ORDERS {
                0.07 * s.habits.intent
            } else {
                0.0
            }, // check out
            if s.habits.repeat { 0.0 } else { 0.1 }, // leave
        ];
        match rng.weighted(&weights) {
            0 => {
                if rng.chance(0.01) {
                    // A stale link: the product is gone.
                    let id = 1001 + model.products.len() as u32 + rng.range(0, 400) as u32;
                    out.push(shop::product_view(rng, t, &s.client, id, None));
                } else {
                    let p = pick_product(rng, model, s.habits.focus);
                    out.push(shop::product_view(rng, t, &s.client, p.id, Some(p)));
                    last = Some(p);
                }
            }
            1 => {
                let n = rng.range(0, 120) as i64;
                out.push(shop::search(rng, t, &s.client, n, None, 200))
            }
            2 => out.push(shop::listing(rng, t, &s.client)),
            3 => {
                if let Some(p) = last {
                    let q = if rng.chance(0.85) {
                        1
                    } else {
                        rng.range(2, 3) as i64
                    };
                    out.push(shop::add_to_cart(rng, t, &s.client, p, q));
                    cart.push((p, q));
                    last = None;
                }
            }
            4 => out.push(shop::view_cart(rng, t, &s.client)),
            5 => {
                let placed = check_out(rng, &mut t, &mut s, &cart, &mut out);
                if placed {
                    orders += 1;
                    cart.clear();
                }
                if !s.habits.repeat {
                    break;
                }
            }
            _ => break,
        }
    }
    for r in &mut out {
        if r.status < 400 && r.route != "/api/payments" && rng.chance(0.002) {
            *r = shop::server_error(rng, r.clone());
        }
    }
    out
}

fn pick_product<'m>(rng: &mut Rng, model: &'m Model, focus: Option<u32>) -> &'m Product {
    match focus.and_then(|id| model.product(id)) {
        Some(p) if rng.chance(0.5) => p,
        _ => model.popular_product(rng),
    }
}

/// Logs `user` in, mistyping the password with probability `typo` (once, or
/// rarely twice) first. Returns the time after the last attempt.
pub fn log_in(
    rng: &mut Rng,
    t: Nanos,
    client: &mut Client,
    user: &User,
    typo: f64,
    out: &mut Vec<Request>,
) -> Nanos {
    let failures = if rng.chance(typo) {
        if rng.chance(0.25) { 2 } else { 1 }
    } else {
        0
    };
    log_in_after(rng, t, client, user, failures, out)
}

/// Logs `user` in after `failures` mistyped attempts, a few seconds apart.
pub fn log_in_after(
    rng: &mut Rng,
    mut t: Nanos,
    client: &mut Client,
    user: &User,
    failures: usize,
    out: &mut Vec<Request>,
) -> Nanos {
    for _ in 0..failures {
        if rng.chance(0.15) {
            // A typo in the name instead: an account that does not exist.
            let typoed = format!("{}x", user.login);
            out.push(shop::login(
                rng,
                t,
                client,
                &typoed,
                Login::UnknownUser,
                None,
            ));
        } else {
            out.push(shop::login(
                rng,
                t,
                client,
                &user.login,
                Login::BadPassword,
                None,
            ));
        }
        t += secs(rng.between(4.0, 15.0));
    }
    out.push(shop::login(
        rng,
        t,
        client,
        &user.login,
        Login::Success,
        Some(&user.id),
    ));
    client.user = Some(user.id.clone());
    t
}

/// Checkout and payment. Returns whether an order was placed.
fn check_out(
    rng: &mut Rng,
    t: &mut Nanos,
    s: &mut Shopper<'_>,
    cart: &[(&Product, i64)],
    out: &mut Vec<Request>,
) -> bool {
    let currency = match s.user {
        Some(u) => u.currency,
        None => CURRENCIES[rng.weighted(&CURRENCIES.map(|c| c.1))].0,
    };
    if s.client.user.is_none() {
        match s.user {
            Some(u) => {
                *t = log_in(rng, *t, &mut s.client, u, s.habits.typo, out);
                *t += secs(rng.lognormal(3.0, 0.5));
            }
            None if rng.chance(0.35) => {
                let id = format!("u-{}", 600_000 + rng.range(0, 399_999));
                out.push(shop::register(rng, *t, &s.client, &id));
                s.client.user = Some(id);
                *t += secs(rng.lognormal(4.0, 0.5));
            }
            None => {} // guest checkout
        }
    }
    let value: f64 = cart.iter().map(|(p, q)| p.price * *q as f64).sum();
    let items: i64 = cart.iter().map(|(_, q)| *q).sum();
    out.push(shop::checkout(rng, *t, &s.client, value, currency));
    let cards: Vec<String> = match s.user {
        Some(u) => u.cards.clone(),
        None => vec![card_number(rng, 4)],
    };
    let mut card = 0;
    for attempt in 0..3 {
        // Entering card details.
        *t += secs(rng.lognormal(if attempt == 0 { 25.0 } else { 15.0 }, 0.5));
        let pan = &cards[card % cards.len()];
        let outcome = match rng.weighted(&[0.92, 0.06, 0.02]) {
            0 => Payment::Approved,
            1 => Payment::Declined(shop::decline_code(rng)),
            _ => Payment::Error,
        };
        out.push(shop::payment(
            rng, *t, &s.client, value, currency, pan, outcome, items,
        ));
        match outcome {
            Payment::Approved => return true,
            Payment::Declined(_) if rng.chance(0.5) => card += 1,
            Payment::Declined(_) => return false,
            Payment::Error => {}
        }
    }
    false
}

/// Benign traffic at about `rate` requests per second between `start` and
/// `end`. Sessions begin five minutes before `start` so the capture opens on a
/// shop already in use.
pub fn baseline(seed: u64, model: &Model, start: Nanos, end: Nanos, rate: f64) -> Vec<Request> {
    let mut rng = Rng::stream(seed, "baseline");
    let mut out = Vec::new();
    if rate <= 0.0 {
        return out;
    }
    let mean_gap = MEAN_REQUESTS_PER_SESSION / rate;
    let mut t = start - 300 * super::request::SECOND;
    loop {
        t += secs(rng.exp(mean_gap));
        if t >= end {
            break;
        }
        let mut r = rng.fork();
        let shopper = Shopper::typical(&mut r, model);
        out.extend(
            visit(&mut r, model, t, shopper)
                .into_iter()
                .filter(|q| q.start >= start && q.start < end),
        );
    }
    out
}
