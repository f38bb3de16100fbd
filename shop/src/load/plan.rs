//! What a run will send, decided before anything is sent: actors (a client
//! address, a user agent, a cookie jar) and their steps in time. The traffic
//! is the shared traffic model's (crate `shop-sim`: its population, its
//! shoppers, its scenario catalog), the same requests `shop-sim` renders as
//! telemetry for the same seed; [`project`] turns each into the request the
//! real shop takes. A plan is data, so its figures (counts, address pools, the
//! indicators the truth will list) are unit-tested without a network.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::services::security::{Keys, luhn_valid, seed_account};
use crate::sim::model::Model;
use crate::sim::request::{Nanos, Request, SECOND, Typed};
use crate::sim::scenario::{Class, INDICATOR_KEYS};

// ---------------------------------------------------------------------------
// The shop as seeded (shop/migrations/0002_seed_catalog.sql, services/auth.rs)

/// Products of the seed catalog: ids 1 to 480.
pub const PRODUCTS: u32 = 480;

/// The seed catalog's cheapest product (`price_cents` = 199 + n * 7919 mod
/// 20000: 2.42 EUR for n = 197), the one a card tester puts in its cart.
pub const CHEAPEST: u32 = 197;

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

/// Seeded accounts the generator plays: 51 to 1000, in the place of the
/// traffic model's registered users (see [`Accounts`]). The
/// first fifty are left alone for the end-to-end tests (they log in as
/// `shopper0042`), so a locked or sprayed account never breaks them.
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
}

/// The seeded accounts a run gives the traffic model's registered users: a
/// user's own, in the order the run's plans first name them. The model has
/// 2000 users and the shop 950 accounts to play them, so a fixed mapping
/// would let two people of one run share an account, and their typos add up
/// to a takeover's failures; this one shares an account only once a run has
/// named more than 950 users.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    of_user: BTreeMap<usize, u32>,
}

impl Accounts {
    /// The account that plays the model's user `index` in this run.
    pub fn of_user(&mut self, index: usize) -> Account {
        let next = self.of_user.len() as u32 % ACCOUNTS.count() as u32;
        let n = *self
            .of_user
            .entry(index)
            .or_insert(*ACCOUNTS.start() + next);
        Account::seeded(n)
    }
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
    /// A card number as typed, valid until 12/30.
    pub fn valid(number: &str) -> Card {
        Card {
            number: number.to_string(),
            expiry: "12/30".into(),
            cvv: "123".into(),
        }
    }

    /// The same card, expired in 03/24: the processor declines it.
    pub fn expired(&self) -> Card {
        Card {
            expiry: "03/24".into(),
            ..self.clone()
        }
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
    pub agent: String,
    /// The traffic model's `session.id` this actor's cookie jar stands for
    /// (the shop draws its own); None for a client that keeps no cookies.
    pub session: Option<String>,
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
    pub routes: Vec<String>,
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
    pub fn actor(&mut self, address: impl Into<String>, agent: impl Into<String>) -> usize {
        self.actors.push(Actor {
            address: address.into(),
            agent: agent.into(),
            session: None,
            parallel: false,
        });
        self.actors.len() - 1
    }

    /// Adds an actor whose steps go out in parallel, cookieless.
    pub fn bot(&mut self, address: impl Into<String>, agent: impl Into<String>) -> usize {
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
            add("http.route", r.clone());
        }
        m.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The shared traffic, as the real shop takes it

/// The route the real shop takes a traffic-model request on. The model's shop
/// checks out in two requests (`POST /api/checkout`, then `POST /api/payments`
/// with the card); the real one in one (`POST /api/checkout` with the card):
/// the first becomes a look at the cart before paying.
pub fn real_route(model_route: &str) -> &str {
    match model_route {
        "/api/checkout" => "/api/cart",
        "/api/payments" => "/api/checkout",
        other => other,
    }
}

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

/// A genuine query (one or two words), or a long one of 100 characters,
/// from a request's id seed (the model does not say what was typed).
fn query(ids: u64, long: bool) -> String {
    let word = |i: u64| WORDS[((ids >> (i * 4)) % WORDS.len() as u64) as usize];
    if !long {
        return match ids % 2 {
            0 => word(1).to_string(),
            _ => format!("{} {}", word(1), word(2)),
        };
    }
    let mut q = String::new();
    let mut i = 0;
    while q.len() < 100 {
        q.push_str(["deluxe ", "portable ", "e ", "a ", "o "][((ids >> (i % 60)) % 5) as usize]);
        i += 3;
    }
    q.truncate(100);
    q.trim_end().to_string()
}

/// Turns the traffic model's requests into a plan of steps against the real
/// shop: the same times, clients and routes, the model's users played by the
/// seeded accounts, its products by the seed catalog's (in id order). Three
/// kinds of step are added where the real shop needs them: a registration is
/// followed by its login; a guest registers and logs in before paying (no
/// guest checkout); a client paying again after an approved payment puts its
/// last item back in the cart first (the real order empties the cart).
pub struct Projection<'m> {
    model: &'m Model,
    /// The model's registered users by login name.
    users: BTreeMap<&'m str, usize>,
    /// The model's cheapest product.
    cheapest: Option<u32>,
    /// The run's start in the model's time.
    start: Nanos,
    tag: u64,
    plan: Plan,
    accounts: Accounts,
    actors: BTreeMap<(String, String, Option<String>), usize>,
    signed_in: BTreeSet<usize>,
    /// What each actor last put in its cart.
    last_added: BTreeMap<usize, Action>,
    /// Actors whose cart an approved payment emptied.
    emptied: BTreeSet<usize>,
}

impl<'m> Projection<'m> {
    /// A projection into `plan`; `tag` makes the e-mail addresses of new
    /// registrations unique to the run; `accounts` are those the run's
    /// earlier plans gave the model's users.
    pub fn new(model: &'m Model, start: Nanos, tag: u64, plan: Plan, accounts: Accounts) -> Self {
        let users = model
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.login.as_str(), i))
            .collect();
        let cheapest = model.cheapest().map(|p| p.id);
        Projection {
            model,
            users,
            cheapest,
            start,
            tag,
            plan,
            accounts,
            actors: BTreeMap::new(),
            signed_in: BTreeSet::new(),
            last_added: BTreeMap::new(),
            emptied: BTreeSet::new(),
        }
    }

    /// Seconds after the run's start.
    pub fn at(&self, t: Nanos) -> f64 {
        (t - self.start) as f64 / SECOND as f64
    }

    /// The seed catalog's product for the model's product `id`: the model's
    /// cheapest is the catalog's cheapest ([`CHEAPEST`], so that a card
    /// tester's payments are of 1-3 EUR as in the model), the others the
    /// first 480 in order, the rest wrapping round; an id not in the model's
    /// catalog (a stale link) stays missing.
    pub fn product(&self, id: u32) -> u32 {
        let first = self.model.products.first().map_or(1001, |p| p.id);
        match self.model.product(id) {
            Some(_) if Some(id) == self.cheapest => CHEAPEST,
            Some(_) => 1 + (id - first) % PRODUCTS,
            None => PRODUCTS + 1 + id.saturating_sub(first + self.model.products.len() as u32),
        }
    }

    /// A login as the real shop takes it: a registered user's account with
    /// its password (`right`) or a wrong one; an unknown name as it is.
    fn login(&mut self, name: &str, right: bool) -> Action {
        match self.users.get(name) {
            Some(&i) => {
                let a = self.accounts.of_user(i);
                let password = if right {
                    a.password
                } else {
                    format!("{}!", a.password)
                };
                Action::Login {
                    email: a.email,
                    password,
                }
            }
            None => Action::Login {
                email: name.to_string(),
                password: "not-the-password".into(),
            },
        }
    }

    /// A new visitor's account for request `ids`: registered, then logged in
    /// (the real shop does not sign a registration in).
    fn sign_up(&mut self, at: f64, actor: usize, ids: u64) {
        let email = format!("visitor-{:x}-{ids:016x}@example.net", self.tag);
        let password = format!("pw-{ids:x}");
        self.plan.push(
            at,
            actor,
            Action::Register {
                email: email.clone(),
                password: password.clone(),
            },
        );
        self.plan.push(at, actor, Action::Login { email, password });
        self.signed_in.insert(actor);
    }

    /// The actor for a request's client: one per address, user agent and
    /// session; a client without a session is a bot (steps in parallel).
    fn actor(&mut self, r: &Request) -> usize {
        let key = (
            r.client.address.clone(),
            r.client.user_agent.clone(),
            r.client.session.clone(),
        );
        if let Some(&a) = self.actors.get(&key) {
            return a;
        }
        let a = match &r.client.session {
            Some(_) => self.plan.actor(key.0.clone(), key.1.clone()),
            None => self.plan.bot(key.0.clone(), key.1.clone()),
        };
        self.plan.actors[a].session = key.2.clone();
        self.actors.insert(key, a);
        a
    }

    /// Adds `requests` (in time order) as steps; `context` marks genuine
    /// traffic a scenario needs around it.
    pub fn add(&mut self, requests: &[Request], context: bool) {
        for r in requests {
            let at = self.at(r.start);
            let actor = self.actor(r);
            let before = self.plan.steps.len();
            let typed = r.typed.as_ref();
            let action = match r.route {
                "/api/products/{id}" => {
                    let id = r
                        .path
                        .rsplit('/')
                        .next()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    Action::Product(self.product(id))
                }
                "/api/products" => Action::Listing {
                    category: CATEGORIES[(r.ids % CATEGORIES.len() as u64) as usize],
                    page: 1 + ((r.ids >> 8) % 3) as u32,
                },
                "/api/search" => {
                    Action::Search(query(r.ids, matches!(typed, Some(Typed::LongQuery))))
                }
                "/api/cart/items" => {
                    let attr = |key: &str| {
                        r.events.iter().flat_map(|e| &e.attrs).find_map(|(k, v)| {
                            match (*k == key, v) {
                                (true, crate::sim::request::Value::Str(s)) => s.parse().ok(),
                                (true, crate::sim::request::Value::Int(i)) => {
                                    u32::try_from(*i).ok()
                                }
                                _ => None,
                            }
                        })
                    };
                    // A failed request lost its event: any product will do.
                    let product = attr("shop.product.id")
                        .map_or(1 + (r.ids % u64::from(PRODUCTS)) as u32, |id| {
                            self.product(id)
                        });
                    let add = Action::AddToCart {
                        product,
                        quantity: attr("shop.cart.quantity").unwrap_or(1),
                    };
                    self.last_added.insert(actor, add.clone());
                    self.emptied.remove(&actor);
                    add
                }
                "/api/auth/login" => {
                    let name = match typed {
                        Some(Typed::Login(name)) => name.as_str(),
                        _ => "",
                    };
                    if r.status == 200 {
                        self.signed_in.insert(actor);
                    }
                    self.login(name, r.status == 200)
                }
                "/api/auth/register" => {
                    self.sign_up(at, actor, r.ids);
                    self.mark(before, context);
                    continue;
                }
                "/api/payments" => {
                    if !self.signed_in.contains(&actor) {
                        // The real shop has no guest checkout.
                        self.sign_up(at, actor, r.ids);
                    }
                    if self.emptied.contains(&actor)
                        && let Some(add) = self.last_added.get(&actor).cloned()
                    {
                        // The real shop's order emptied the cart (the
                        // model's does not): the item goes back in first.
                        self.plan.push(at, actor, add);
                    }
                    if r.status == 201 {
                        self.emptied.insert(actor);
                    }
                    let number = match typed {
                        Some(Typed::Card(n)) => n.as_str(),
                        _ => "",
                    };
                    let card = Card::valid(number);
                    Action::Checkout(if r.status == 402 {
                        card.expired()
                    } else {
                        card
                    })
                }
                // "/api/checkout" and "/api/cart" (see real_route)
                _ => Action::ViewCart,
            };
            self.plan.push(at, actor, action);
            self.mark(before, context);
        }
    }

    fn mark(&mut self, from: usize, context: bool) {
        for s in &mut self.plan.steps[from..] {
            s.context = context;
        }
    }

    /// The plan, its steps at or after `end` seconds dropped, and the
    /// accounts given so far (for the run's next plan).
    pub fn finish(mut self, end: f64) -> (Plan, Accounts) {
        self.plan.clip(end);
        (self.plan, self.accounts)
    }
}
