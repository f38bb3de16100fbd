//! The simulated shop: its services, catalog, registered users, and the pools
//! of client addresses and user agents that traffic is drawn from.
//!
//! Everything here is generated from the seed. Login names, e-mail addresses and
//! card numbers exist only in this model, to be hashed; they never reach the
//! telemetry (a test checks that).

use super::hash::{card_fingerprint, user_hash};
use super::rng::Rng;

/// The shop's six services, by the names their telemetry carries: the
/// simulator's and the real shop's (`shop::services::Service` is this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Service {
    Gateway,
    Auth,
    Catalog,
    Cart,
    Checkout,
    Payments,
}

impl Service {
    /// Every service, the gateway first.
    pub const ALL: [Service; 6] = [
        Service::Gateway,
        Service::Auth,
        Service::Catalog,
        Service::Cart,
        Service::Checkout,
        Service::Payments,
    ];

    /// The short name: `gateway`, `auth`, ...
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::Catalog => "catalog",
            Service::Cart => "cart",
            Service::Checkout => "checkout",
            Service::Payments => "payments",
        }
    }

    /// The OpenTelemetry `service.name`: `shop-gateway`, ...
    pub fn service_name(self) -> &'static str {
        match self {
            Service::Gateway => "shop-gateway",
            Service::Auth => "shop-auth",
            Service::Catalog => "shop-catalog",
            Service::Cart => "shop-cart",
            Service::Checkout => "shop-checkout",
            Service::Payments => "shop-payments",
        }
    }
}

/// What the simulator invents about each real service: its version, its
/// replicas and the host name others call it by.
pub trait Simulated {
    /// `service.version`.
    fn version(self) -> &'static str;
    /// `service.instance.id` of each of the service's two replicas.
    fn instances(self) -> [&'static str; 2];
    /// Host name other services call it by.
    fn host(self) -> &'static str;
}

impl Simulated for Service {
    fn version(self) -> &'static str {
        match self {
            Service::Gateway => "1.8.2",
            Service::Auth => "2.3.0",
            Service::Catalog => "1.12.4",
            Service::Cart => "1.5.1",
            Service::Checkout => "1.9.0",
            Service::Payments => "3.1.7",
        }
    }

    fn instances(self) -> [&'static str; 2] {
        match self {
            Service::Gateway => [
                "shop-gateway-7d9f8c6b5-4xkqp",
                "shop-gateway-7d9f8c6b5-m2v7z",
            ],
            Service::Auth => ["shop-auth-5c7b9d8f4-h8wtn", "shop-auth-5c7b9d8f4-q3lrc"],
            Service::Catalog => [
                "shop-catalog-6f8d7c9b2-b7jxs",
                "shop-catalog-6f8d7c9b2-t9pkd",
            ],
            Service::Cart => ["shop-cart-84c6d9f7b-2nfgh", "shop-cart-84c6d9f7b-w6zqe"],
            Service::Checkout => [
                "shop-checkout-59b8f6d4c-k5rmb",
                "shop-checkout-59b8f6d4c-x1dvy",
            ],
            Service::Payments => [
                "shop-payments-7b5c8d9e6-c4hsn",
                "shop-payments-7b5c8d9e6-p8gzl",
            ],
        }
    }

    fn host(self) -> &'static str {
        self.service_name()
    }
}

/// `deployment.environment.name` of every resource.
pub const ENVIRONMENT: &str = "production";

/// Product categories.
pub const CATEGORIES: [&str; 8] = [
    "books",
    "electronics",
    "kitchen",
    "toys",
    "garden",
    "fashion",
    "sports",
    "beauty",
];

/// Currencies a shopper pays in, with their weights.
pub const CURRENCIES: [(&str, f64); 3] = [("EUR", 0.7), ("USD", 0.2), ("GBP", 0.1)];

/// One product of the catalog.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: u32,
    pub category: &'static str,
    pub price: f64,
}

/// A registered customer.
#[derive(Debug, Clone)]
pub struct User {
    /// `user.id`, e.g. `u-104233`.
    pub id: String,
    /// The login name (an e-mail address). Never emitted.
    pub login: String,
    /// `user.hash` of the login name.
    pub hash: String,
    /// The address the customer usually shops from.
    pub home: String,
    /// Card numbers on file. Never emitted.
    pub cards: Vec<String>,
    /// The currency the customer pays in.
    pub currency: &'static str,
}

/// Browser and app user agents of genuine shoppers.
pub const BROWSER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "ShopApp/3.2.1 (iPhone; iOS 17.6; Scale/3.00)",
    "ShopApp/3.2.0 (Android 14; Pixel 8)",
];

/// User agents of scripts and tools.
pub const TOOL_AGENTS: [&str; 5] = [
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
    "okhttp/4.12.0",
];

const FIRST: [&str; 16] = [
    "anna", "ben", "clara", "david", "elif", "farid", "greta", "hugo", "ines", "jonas", "kira",
    "lukas", "mara", "nils", "olga", "paul",
];
const LAST: [&str; 12] = [
    "berg", "costa", "dumont", "evans", "fischer", "garcia", "hansen", "ito", "jansen", "keller",
    "lopez", "novak",
];
const DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

/// The shop the simulated traffic visits.
#[derive(Debug, Clone)]
pub struct Model {
    pub products: Vec<Product>,
    pub users: Vec<User>,
}

/// A Luhn-valid 16-digit test card number starting with `prefix` (one digit).
pub fn card_number(rng: &mut Rng, prefix: u8) -> String {
    let mut digits: Vec<u8> = vec![prefix];
    while digits.len() < 15 {
        digits.push(rng.range(0, 9) as u8);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

/// Whether `digits` (digits only) passes the Luhn check.
///
/// ```
/// assert!(shop_sim::model::luhn_valid("4242424242424242"));
/// assert!(!shop_sim::model::luhn_valid("4242424242424241"));
/// ```
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(d) = c.to_digit(10) else {
            return false;
        };
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    !digits.is_empty() && sum % 10 == 0
}

/// An address of a genuine shopper: documentation ranges and private 10.x.
pub fn shopper_address(rng: &mut Rng) -> String {
    match rng.weighted(&[0.25, 0.25, 0.5]) {
        0 => format!("198.51.100.{}", rng.range(1, 254)),
        1 => format!("192.0.2.{}", rng.range(1, 254)),
        _ => format!(
            "10.{}.{}.{}",
            rng.range(20, 39),
            rng.range(0, 255),
            rng.range(1, 254)
        ),
    }
}

/// An address of attack infrastructure: 203.0.113.0/24, and 10.100-127.x.y for
/// the larger botnets. Genuine shoppers never get one.
pub fn attacker_address(rng: &mut Rng, botnet: bool) -> String {
    if botnet {
        format!(
            "10.{}.{}.{}",
            rng.range(100, 127),
            rng.range(0, 255),
            rng.range(1, 254)
        )
    } else {
        format!("203.0.113.{}", rng.range(1, 254))
    }
}

/// A login name (e-mail address) that may or may not be registered.
pub fn login_name(rng: &mut Rng) -> String {
    format!(
        "{}.{}{}@{}",
        rng.pick(&FIRST),
        rng.pick(&LAST),
        rng.range(1, 9999),
        rng.pick(&DOMAINS)
    )
}

impl Model {
    /// Builds the shop: 600 products, 2000 registered users.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::stream(seed, "model");
        let products = (0..600)
            .map(|i| {
                let category = *rng.pick(&CATEGORIES);
                let price = (rng.lognormal(24.0, 0.8).clamp(2.0, 900.0)).floor() + 0.99;
                Product {
                    id: 1001 + i,
                    category,
                    price,
                }
            })
            .collect();
        let mut users: Vec<User> = Vec::with_capacity(2000);
        let mut seen = std::collections::BTreeSet::new();
        while users.len() < 2000 {
            let login = login_name(&mut rng);
            if !seen.insert(login.clone()) {
                continue;
            }
            let cards = (0..rng.range(1, 2))
                .map(|_| {
                    let brand = if rng.chance(0.6) { 4 } else { 5 };
                    card_number(&mut rng, brand)
                })
                .collect();
            let currency = CURRENCIES[rng.weighted(&CURRENCIES.map(|c| c.1))].0;
            users.push(User {
                id: format!("u-{}", 100_000 + users.len() * 7 + rng.range(0, 6) as usize),
                hash: user_hash(&login),
                login,
                home: shopper_address(&mut rng),
                cards,
                currency,
            });
        }
        Model { products, users }
    }

    /// A product, popular ones more often (a Zipf-like skew).
    pub fn popular_product(&self, rng: &mut Rng) -> &Product {
        let i = (rng.unit().powf(2.2) * self.products.len() as f64) as usize;
        &self.products[i.min(self.products.len() - 1)]
    }

    /// A product by id, if it exists.
    pub fn product(&self, id: u32) -> Option<&Product> {
        self.products.get(id.checked_sub(1001)? as usize)
    }

    /// The cheapest product (the first of equal price), the one a card
    /// tester buys.
    pub fn cheapest(&self) -> Option<&Product> {
        self.products
            .iter()
            .min_by(|a, b| a.price.total_cmp(&b.price))
    }

    /// Every card fingerprint and user hash of the registered users.
    pub fn fingerprints(user: &User) -> Vec<String> {
        user.cards.iter().map(|c| card_fingerprint(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_pass_luhn() {
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            let n = card_number(&mut rng, 4);
            assert_eq!(n.len(), 16);
            assert!(luhn_valid(&n), "{n}");
        }
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("41x1"));
    }

    #[test]
    fn model_is_deterministic() {
        let a = Model::new(9);
        let b = Model::new(9);
        assert_eq!(a.users[17].hash, b.users[17].hash);
        assert_eq!(a.products[300].price, b.products[300].price);
    }
}
