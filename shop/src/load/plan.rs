//! What a run will send, decided before anything is sent: actors (a client
//! address, a user agent, a cookie jar) and their steps in time, all drawn from
//! the seed. A plan is data, so its figures (counts, address pools, the
//! indicators the truth will list) are unit-tested without a network.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::services::security::{Keys, luhn_valid, seed_account};
use crate::sim::model::{BROWSER_AGENTS, shopper_address};
use crate::sim::rng::Rng;
use crate::sim::scenario::{Class, INDICATOR_KEYS};
use crate::sim::session::Habits;

// ---------------------------------------------------------------------------
// The shop as seeded (shop/migrations/0002_seed_catalog.sql, services/auth.rs)

/// Products of the seed catalog: ids 1 to 480.
pub const PRODUCTS: u32 = 480;

/// The seed catalog's categories.
pub const CATEGORIES: [&str; 8] = [
    "books",
    "clothing",
    "electronics",
    "garden",
    "kitchen",
    "music",
    "outdoor",
    "toys",
];

/// Price of product `id` in euro cents, by the seed catalog's own formula.
pub fn price_cents(id: u32) -> u32 {
    199 + (id * 7919) % 20000
}

/// The cheapest product (card testers buy it).
pub fn cheapest_product() -> u32 {
    (1..=PRODUCTS)
        .min_by_key(|&id| price_cents(id))
        .unwrap_or(1)
}

/// The dearest product (an account thief buys it).
pub fn dearest_product() -> u32 {
    (1..=PRODUCTS)
        .max_by_key(|&id| price_cents(id))
        .unwrap_or(1)
}

/// A genuine browser's or app's user agent.
pub fn browser(rng: &mut Rng) -> &'static str {
    BROWSER_AGENTS[rng.range(0, BROWSER_AGENTS.len() as u64 - 1) as usize]
}

/// A product page, popular ones far more often (a Zipf-like skew).
pub fn popular_product(rng: &mut Rng) -> u32 {
    1 + ((rng.unit().powf(2.2) * f64::from(PRODUCTS)) as u32).min(PRODUCTS - 1)
}

/// Seeded accounts the generator plays: 51 to 1000. The first fifty are left
/// alone for the end-to-end tests (they log in as `shopper0042`), so a locked
/// or sprayed account never breaks them.
pub const ACCOUNTS: std::ops::RangeInclusive<u32> = 51..=1000;

/// A seeded customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub n: u32,
    pub email: String,
    pub password: String,
}

impl Account {
    /// Seeded account `n` (`shopperNNNN@example.com`).
    pub fn seeded(n: u32) -> Account {
        let (email, password) = seed_account(n);
        Account { n, email, password }
    }

    /// A random account of [`ACCOUNTS`].
    pub fn any(rng: &mut Rng) -> Account {
        Account::seeded(rng.range(u64::from(*ACCOUNTS.start()), u64::from(*ACCOUNTS.end())) as u32)
    }

    /// The address this customer usually shops from: the same for every run.
    pub fn home(&self) -> String {
        shopper_address(&mut Rng::stream(u64::from(self.n), "load/home"))
    }

    /// The customer's own card: `4242…`, which the simulated processor approves.
    pub fn card(&self) -> Card {
        Card::valid(&format!("4242{:011}", 31_000_000 + u64::from(self.n) * 7))
    }
}

/// Distinct random accounts of [`ACCOUNTS`].
pub fn accounts(rng: &mut Rng, n: usize) -> Vec<Account> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n.min(ACCOUNTS.count()) {
        let a = Account::any(rng);
        if seen.insert(a.n) {
            out.push(a);
        }
    }
    out
}

/// A payment card as a client types it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub number: String,
    pub expiry: String,
    pub cvv: String,
}

/// `digits` with the Luhn check digit appended.
pub fn with_check_digit(digits: &str) -> String {
    (0..10)
        .map(|d| format!("{digits}{d}"))
        .find(|n| luhn_valid(n))
        .unwrap_or_else(|| format!("{digits}0"))
}

impl Card {
    /// A Luhn-valid card from its first 15 digits, valid until 12/30.
    pub fn valid(first15: &str) -> Card {
        Card {
            number: with_check_digit(first15),
            expiry: "12/30".into(),
            cvv: "123".into(),
        }
    }

    /// A random Luhn-valid Visa or Mastercard number (never `4242…`).
    pub fn random(rng: &mut Rng) -> Card {
        let brand = if rng.chance(0.7) { "4" } else { "5" };
        let mut digits = brand.to_string();
        while digits.len() < 15 {
            digits.push(char::from(b'0' + rng.range(0, 9) as u8));
        }
        if digits.starts_with("4242") {
            digits.replace_range(1..2, "1");
        }
        Card::valid(&digits)
    }

    /// The same card with its last digit mistyped: fails the Luhn check.
    pub fn mistyped(&self) -> Card {
        let mut c = self.clone();
        if let Some(last) = c.number.pop() {
            let d = last.to_digit(10).unwrap_or(0);
            c.number.push(char::from(b'0' + ((d + 1) % 10) as u8));
        }
        c
    }

    fn json(&self) -> Value {
        json!({"number": self.number, "expiry": self.expiry, "cvv": self.cvv})
    }
}

// ---------------------------------------------------------------------------
// Actors and steps

/// One thing a client does: one HTTP request to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Listing { category: &'static str, page: u32 },
    Product(u32),
    Search(String),
    AddToCart { product: u32, quantity: u32 },
    ViewCart,
    Login { email: String, password: String },
    Register { email: String, password: String },
    Checkout(Card),
}

impl Action {
    /// `http.route` of the request.
    pub fn route(&self) -> &'static str {
        match self {
            Action::Listing { .. } => "/api/products",
            Action::Product(_) => "/api/products/{id}",
            Action::Search(_) => "/api/search",
            Action::AddToCart { .. } => "/api/cart/items",
            Action::ViewCart => "/api/cart",
            Action::Login { .. } => "/api/auth/login",
            Action::Register { .. } => "/api/auth/register",
            Action::Checkout(_) => "/api/checkout",
        }
    }

    /// Whether the request is a POST (else a GET).
    pub fn is_post(&self) -> bool {
        matches!(
            self,
            Action::AddToCart { .. }
                | Action::Login { .. }
                | Action::Register { .. }
                | Action::Checkout(_)
        )
    }

    /// Path and query string.
    pub fn target(&self) -> String {
        match self {
            Action::Listing { category, page } => {
                format!("/api/products?category={category}&page={page}&per_page=24")
            }
            Action::Product(id) => format!("/api/products/{id}"),
            Action::Search(q) => format!("/api/search?q={}", query_escape(q)),
            _ => self.route().to_string(),
        }
    }

    /// The JSON body of a POST.
    pub fn body(&self) -> Option<Value> {
        match self {
            Action::AddToCart { product, quantity } => {
                Some(json!({"product_id": product, "quantity": quantity}))
            }
            Action::Login { email, password } | Action::Register { email, password } => {
                Some(json!({"email": email, "password": password}))
            }
            Action::Checkout(card) => Some(json!({"card": card.json()})),
            _ => None,
        }
    }
}

/// Percent-encodes a query value (letters, digits and `-._~` stay).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A client: an address (sent as `X-Forwarded-For`), a user agent and, unless
/// `parallel`, one cookie jar through which its steps run one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    pub address: String,
    pub agent: &'static str,
    /// Steps are sent at their time regardless of the previous one's answer,
    /// without cookies (a flood, a bot that never keeps a session).
    pub parallel: bool,
}

/// One request at `at` seconds after the run's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: f64,
    pub actor: usize,
    pub action: Action,
    /// Genuine traffic a scenario needs around it (the victim's own visit
    /// before a takeover): outside the truth's window and indicators.
    pub context: bool,
}

/// The traffic of one scenario (or of the benign baseline).
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub class: Class,
    pub about: String,
    pub actors: Vec<Actor>,
    pub steps: Vec<Step>,
    /// `http.route` indicators of a route-level attack.
    pub routes: Vec<&'static str>,
}

impl Plan {
    pub fn new(name: &str, class: Class, about: &str) -> Plan {
        Plan {
            name: name.to_string(),
            class,
            about: about.to_string(),
            actors: Vec::new(),
            steps: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Adds an actor; returns its index.
    pub fn actor(&mut self, address: impl Into<String>, agent: &'static str) -> usize {
        self.actors.push(Actor {
            address: address.into(),
            agent,
            parallel: false,
        });
        self.actors.len() - 1
    }

    /// Adds an actor whose steps go out in parallel, cookieless.
    pub fn bot(&mut self, address: impl Into<String>, agent: &'static str) -> usize {
        let a = self.actor(address, agent);
        self.actors[a].parallel = true;
        a
    }

    pub fn push(&mut self, at: f64, actor: usize, action: Action) {
        self.steps.push(Step {
            at,
            actor,
            action,
            context: false,
        });
    }

    /// Drops the steps at or after `end` seconds (and before 0), sorts the rest by time.
    pub fn clip(&mut self, end: f64) {
        self.steps.retain(|s| s.at >= 0.0 && s.at < end);
        self.steps.sort_by(|a, b| a.at.total_cmp(&b.at));
    }

    /// The scenario's own steps (not its context).
    pub fn own_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| !s.context)
    }

    /// The truth's indicators: every client address, user hash and card
    /// fingerprint of the scenario's own steps, and its routes. `session.id`
    /// is not listed: the gateway draws it and never tells the client.
    pub fn indicators(&self, keys: &Keys) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = INDICATOR_KEYS
            .iter()
            .filter(|k| **k != "session.id")
            .map(|k| (k.to_string(), BTreeSet::new()))
            .collect();
        let mut add = |k: &str, v: String| {
            m.entry(k.to_string()).or_default().insert(v);
        };
        for s in self.own_steps() {
            add("client.address", self.actors[s.actor].address.clone());
            match &s.action {
                Action::Login { email, .. } => add("user.hash", keys.user_hash(email)),
                Action::Checkout(card) => add(
                    "shop.payment.card.fingerprint",
                    keys.card_fingerprint(&card.number),
                ),
                _ => {}
            }
        }
        for r in &self.routes {
            add("http.route", r.to_string());
        }
        m.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Genuine shoppers

/// How one genuine visit goes.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The customer's account, if they have one (logged in or not).
    pub account: Option<Account>,
    pub habits: Habits,
    /// Seconds after the run's start when the visit ends at the latest.
    pub until: f64,
}

impl Visit {
    /// A typical visitor: a registered customer (45%) or an anonymous one.
    pub fn typical(rng: &mut Rng) -> Visit {
        let account = rng.chance(0.45).then(|| Account::any(rng));
        Visit {
            habits: Habits {
                login_first: account.is_some() && rng.chance(0.4),
                ..Habits::default()
            },
            account,
            until: f64::MAX,
        }
    }

    /// A registered customer who logs in on arrival.
    pub fn customer(account: Account) -> Visit {
        Visit {
            account: Some(account),
            habits: Habits {
                login_first: true,
                ..Habits::default()
            },
            until: f64::MAX,
        }
    }

    /// The address this visitor comes from: home (80% of the time) for a
    /// customer, else any genuine shopper's address.
    pub fn address(&self, rng: &mut Rng) -> String {
        match &self.account {
            Some(a) if rng.chance(0.8) => a.home(),
            _ => shopper_address(rng),
        }
    }
}

/// Average requests of a typical visit; the baseline divides its rate by it.
pub const MEAN_REQUESTS_PER_VISIT: f64 = 7.4;

const MAX_ORDERS: usize = 3;

/// Search words of genuine shoppers (the seed catalog's adjectives and nouns).
const WORDS: [&str; 12] = [
    "lamp",
    "kit",
    "set",
    "box",
    "smart",
    "eco",
    "compact",
    "deluxe",
    "vintage",
    "bundle",
    "portable",
    "collection",
];

/// Plans one genuine visit of `actor` from `start`; `tag` makes the e-mail
/// addresses of new registrations unique to the run.
pub fn visit(rng: &mut Rng, plan: &mut Plan, actor: usize, start: f64, v: Visit, tag: u64) {
    let mut t = start;
    let mut steps = 0usize;
    let mut cart: Vec<u32> = Vec::new();
    let mut last: Option<u32> = None;
    let mut orders = 0;
    let mut signed_in = false;
    let push = |plan: &mut Plan, t: f64, a: Action| {
        plan.push(t, actor, a);
    };
    let think = |rng: &mut Rng, median: f64| rng.lognormal(median, 0.8).clamp(0.4, 240.0);
    let product = |rng: &mut Rng, focus: Option<u32>| match focus {
        Some(id) if rng.chance(0.5) => id,
        _ => popular_product(rng),
    };

    if let (true, Some(a)) = (v.habits.login_first, v.account.clone()) {
        steps += log_in(rng, plan, actor, &mut t, &a, v.habits.typo);
        signed_in = true;
        t += think(rng, v.habits.think * 0.5);
    }
    let p = product(rng, v.habits.focus);
    push(plan, t, Action::Product(p));
    last = last.or(Some(p));
    steps += 1;

    while steps < v.habits.max_requests {
        t += think(rng, v.habits.think);
        if t >= v.until {
            break;
        }
        let weights = [
            0.45, // product
            0.15, // search
            0.08, // listing
            if last.is_some() {
                0.12 + 0.3 * f64::from(u8::from(v.habits.focus.is_some()))
            } else {
                0.0
            }, // add to cart
            if cart.is_empty() { 0.0 } else { 0.04 }, // view the cart
            if !cart.is_empty() && orders < MAX_ORDERS {
                0.07 * v.habits.intent
            } else {
                0.0
            }, // check out
            if v.habits.repeat { 0.0 } else { 0.1 }, // leave
        ];
        match rng.weighted(&weights) {
            0 => {
                let p = product(rng, v.habits.focus);
                push(plan, t, Action::Product(p));
                last = Some(p);
            }
            1 => {
                let q = format!("{} {}", rng.pick(&WORDS), rng.pick(&WORDS));
                let q = if rng.chance(0.5) {
                    rng.pick(&WORDS).to_string()
                } else {
                    q
                };
                push(plan, t, Action::Search(q));
            }
            2 => {
                let category = *rng.pick(&CATEGORIES);
                let page = rng.range(1, 3) as u32;
                push(plan, t, Action::Listing { category, page });
            }
            3 => {
                if let Some(p) = last.take() {
                    let quantity = if rng.chance(0.85) {
                        1
                    } else {
                        rng.range(2, 3) as u32
                    };
                    push(
                        plan,
                        t,
                        Action::AddToCart {
                            product: p,
                            quantity,
                        },
                    );
                    cart.push(p);
                }
            }
            4 => push(plan, t, Action::ViewCart),
            5 => {
                if !signed_in {
                    match v.account.clone() {
                        Some(a) => {
                            steps += log_in(rng, plan, actor, &mut t, &a, v.habits.typo);
                            t += rng.lognormal(3.0, 0.5);
                        }
                        None if rng.chance(0.35) => {
                            let email = format!("visitor-{tag:x}-{}@example.net", rng.hex(4));
                            let password = format!("pw-{}", rng.hex(6));
                            push(
                                plan,
                                t,
                                Action::Register {
                                    email: email.clone(),
                                    password: password.clone(),
                                },
                            );
                            t += rng.lognormal(4.0, 0.5);
                            push(plan, t, Action::Login { email, password });
                            steps += 2;
                            t += rng.lognormal(2.0, 0.5);
                        }
                        None => break, // no guest checkout: the visitor leaves
                    }
                    signed_in = true;
                }
                // Entering card details, sometimes mistyping the number first.
                t += rng.lognormal(25.0, 0.5);
                let card = v
                    .account
                    .as_ref()
                    .map_or_else(|| Card::random(rng), Account::card);
                if rng.chance(0.05) {
                    push(plan, t, Action::Checkout(card.mistyped()));
                    steps += 1;
                    t += rng.lognormal(15.0, 0.5);
                }
                push(plan, t, Action::Checkout(card));
                orders += 1;
                cart.clear();
                if !v.habits.repeat {
                    break;
                }
            }
            _ => break,
        }
        steps += 1;
    }
}

/// Plans a login of `account` at `*t`, mistyping with probability `typo`
/// first (once, or rarely twice); moves `*t` past it. Returns the requests.
pub fn log_in(
    rng: &mut Rng,
    plan: &mut Plan,
    actor: usize,
    t: &mut f64,
    account: &Account,
    typo: f64,
) -> usize {
    let failures = if rng.chance(typo) {
        if rng.chance(0.25) { 2 } else { 1 }
    } else {
        0
    };
    log_in_after(rng, plan, actor, t, account, failures)
}

/// Plans `failures` mistyped logins a few seconds apart, then the right one.
pub fn log_in_after(
    rng: &mut Rng,
    plan: &mut Plan,
    actor: usize,
    t: &mut f64,
    account: &Account,
    failures: usize,
) -> usize {
    for _ in 0..failures {
        let (email, password) = if rng.chance(0.15) {
            // A typo in the name instead: an account that does not exist.
            (
                account.email.replacen('@', "x@", 1),
                account.password.clone(),
            )
        } else {
            (account.email.clone(), format!("{}!", account.password))
        };
        plan.push(*t, actor, Action::Login { email, password });
        *t += rng.between(4.0, 15.0);
    }
    plan.push(
        *t,
        actor,
        Action::Login {
            email: account.email.clone(),
            password: account.password.clone(),
        },
    );
    failures + 1
}

/// Genuine shoppers at about `rate` requests a second for `seconds`.
pub fn baseline(seed: u64, tag: u64, rate: f64, seconds: f64) -> Plan {
    let mut plan = Plan::new(
        "baseline",
        Class::Benign,
        "genuine shoppers: browse, search, add to cart, log in (6% mistype), check out and pay",
    );
    if rate <= 0.0 {
        return plan;
    }
    let mut rng = Rng::stream(seed, "load/baseline");
    let mean_gap = MEAN_REQUESTS_PER_VISIT / rate;
    let mut t = 0.0;
    loop {
        t += rng.exp(mean_gap);
        if t >= seconds {
            break;
        }
        let mut r = rng.fork();
        let v = Visit::typical(&mut r);
        let address = v.address(&mut r);
        let a = plan.actor(address, browser(&mut r));
        visit(&mut r, &mut plan, a, t, v, tag);
    }
    plan.clip(seconds);
    plan
}
