//! Attacks, and the benign look-alikes a rule must not flag, as plans against
//! the real shop. The names are `shop-sim`'s; the figures follow the simulator's
//! where the shop's own controls allow (rate limit 20 req/s per address, 30
//! logins a minute per address) and are shorter where a recording must stay
//! small. `shop-load --list-scenarios` prints them.
//!
//! Attackers come from 203.0.113.0/24 and, for botnets, 10.100-127.x.y;
//! genuine shoppers from 198.51.100.0/24, 192.0.2.0/24 and 10.20-39.x.y (the
//! simulator's pools): every address is only a string in `X-Forwarded-For`.

use crate::sim::model::{
    BROWSER_AGENTS, TOOL_AGENTS, attacker_address, login_name, shopper_address,
};
use crate::sim::rng::Rng;
use crate::sim::scenario::{Class, attacks_passwords};

use super::plan::{
    Account, Action, Card, Plan, Visit, accounts, browser, cheapest_product, dearest_product,
    log_in_after, popular_product, visit,
};

/// What a scenario's builder gets.
pub struct Ctx {
    pub rng: Rng,
    /// Makes e-mail addresses of new registrations unique to the run.
    pub tag: u64,
    /// Seconds after the run's start when the scenario begins.
    pub t0: f64,
    /// Seconds after the run's start when the run ends.
    pub end: f64,
}

/// A scenario shop-load can play.
pub struct Scenario {
    pub name: &'static str,
    pub class: Class,
    /// One line: what it does, with its figures.
    pub about: &'static str,
    /// Default start, seconds after the run's start.
    pub offset_s: f64,
    /// Seconds it needs after its start (a run should last at least offset + this).
    pub needs_s: f64,
    pub build: fn(&mut Ctx, &mut Plan),
}

/// Every scenario, attacks first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "http_flood",
        class: Class::Attack,
        about: "one address, ~120 req/s for 60 s on GET /api/products/{id}, no cookies; the gateway's rate limiter (20/s) answers 429 to most of it",
        offset_s: 60.0,
        needs_s: 60.0,
        build: http_flood,
    },
    Scenario {
        name: "distributed_flood",
        class: Class::Attack,
        about: "70 botnet addresses each sending GET /api/products/{id} (one product) every ~2.5 s (24/min) for 80 s: ~28 req/s on one route",
        offset_s: 60.0,
        needs_s: 90.0,
        build: distributed_flood,
    },
    Scenario {
        name: "search_abuse",
        class: Class::Attack,
        about: "2 addresses, ~6 searches/s each, several in flight, with long 100-character queries, for 150 s",
        offset_s: 60.0,
        needs_s: 150.0,
        build: search_abuse,
    },
    Scenario {
        name: "scraping",
        class: Class::Attack,
        about: "one address and session walking /api/products/{id} in id order, one every ~1 s for 4 min (~230 products), a listing every 24, no cart",
        offset_s: 30.0,
        needs_s: 240.0,
        build: scraping,
    },
    Scenario {
        name: "brute_force",
        class: Class::Attack,
        about: "one account, one address: a wrong password every ~4 s for 3 min (~45 attempts); locked once the shop's lockout trips",
        offset_s: 60.0,
        needs_s: 180.0,
        build: brute_force,
    },
    Scenario {
        name: "brute_force_distributed",
        class: Class::Attack,
        about: "one account from 45 rotating botnet addresses (1-2 attempts each), a wrong password every ~5 s for 3 min",
        offset_s: 60.0,
        needs_s: 180.0,
        build: brute_force_distributed,
    },
    Scenario {
        name: "password_spraying",
        class: Class::Attack,
        about: "3 addresses, 36 accounts (9 unknown), 1-2 common passwords each, one attempt every ~6.7 s over 6 min; 1 success",
        offset_s: 30.0,
        needs_s: 370.0,
        build: password_spraying,
    },
    Scenario {
        name: "credential_stuffing",
        class: Class::Attack,
        about: "6 addresses replay 360 leaked pairs in 150 s (2.4/s, 24 a minute per address): 55% unknown names, the rest wrong passwords but ~6% valid (the attacker then opens the cart)",
        offset_s: 60.0,
        needs_s: 155.0,
        build: credential_stuffing,
    },
    Scenario {
        name: "account_takeover",
        class: Class::Attack,
        about: "the victim shops from home; 2.5 min later a new address fails 4 times on the account in ~30 s (under the shop's lockout at 5), logs in, and orders the dearest item with a new card",
        offset_s: 160.0,
        needs_s: 150.0,
        build: account_takeover,
    },
    Scenario {
        name: "card_testing",
        class: Class::Attack,
        about: "one address and account: the cheapest item in the cart, then 30 checkouts every ~5 s with ~26 distinct cards, ~85% declined",
        offset_s: 60.0,
        needs_s: 170.0,
        build: card_testing,
    },
    Scenario {
        name: "flash_sale",
        class: Class::Benign,
        about: "a 3 min surge of ~1 extra genuine visit a second (~180, ~8 req/s more) from many addresses, focused on one product, many real orders",
        offset_s: 60.0,
        needs_s: 180.0,
        build: flash_sale,
    },
    Scenario {
        name: "nat_office",
        class: Class::Benign,
        about: "30 employees behind one address arrive over 3 min, each logs in to their own account (8% mistype) and shops until the run ends",
        offset_s: 30.0,
        needs_s: 180.0,
        build: nat_office,
    },
    Scenario {
        name: "password_typos",
        class: Class::Benign,
        about: "8 customers over 4 min, each from their own address, mistype their password 1-2 times, then log in and shop",
        offset_s: 30.0,
        needs_s: 240.0,
        build: password_typos,
    },
    Scenario {
        name: "power_user",
        class: Class::Benign,
        about: "one logged-in customer browsing fast (median 0.5 s between requests, ~1 req/s) for 4 min, with up to 3 orders",
        offset_s: 30.0,
        needs_s: 240.0,
        build: power_user,
    },
];

/// A scenario by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Builds `s`'s plan from `t0` to `end` (seconds after the run's start), from
/// the seed's own stream for it (`index` tells apart two runs of one scenario).
pub fn plan(s: &Scenario, seed: u64, index: usize, tag: u64, t0: f64, end: f64) -> Plan {
    let mut ctx = Ctx {
        rng: Rng::stream(seed, &format!("load/{}/{index}", s.name)),
        tag,
        t0,
        end,
    };
    let mut p = Plan::new(s.name, s.class, s.about);
    (s.build)(&mut ctx, &mut p);
    p.clip(end);
    p
}

/// Distinct attacker addresses (`botnet`: the 10.100-127.x.y pool).
fn addresses(rng: &mut Rng, n: usize, botnet: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let a = attacker_address(rng, botnet);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn http_flood(ctx: &mut Ctx, p: &mut Plan) {
    let addr = addresses(&mut ctx.rng, 1, false).remove(0);
    let bot = p.bot(addr, TOOL_AGENTS[0]);
    let hot: Vec<u32> = (0..5).map(|_| popular_product(&mut ctx.rng)).collect();
    let mut t = ctx.t0;
    while t < ctx.t0 + 60.0 {
        p.push(t, bot, Action::Product(*ctx.rng.pick(&hot)));
        t += ctx.rng.exp(1.0 / 120.0);
    }
    p.routes.push("/api/products/{id}");
}

fn distributed_flood(ctx: &mut Ctx, p: &mut Plan) {
    let target = popular_product(&mut ctx.rng);
    for addr in addresses(&mut ctx.rng, 70, true) {
        let bot = p.bot(addr, browser(&mut ctx.rng));
        let mut t = ctx.t0 + ctx.rng.between(0.0, 5.0);
        while t < ctx.t0 + 80.0 {
            p.push(t, bot, Action::Product(target));
            t += ctx.rng.between(2.2, 2.8);
        }
    }
    p.routes.push("/api/products/{id}");
}

/// A long query (100 characters) of words from the catalog and noise.
fn long_query(rng: &mut Rng) -> String {
    let mut q = String::new();
    while q.len() < 100 {
        q.push_str(match rng.range(0, 5) {
            0 => "deluxe ",
            1 => "portable ",
            2 => "e ",
            3 => "a ",
            _ => "o ",
        });
    }
    q.truncate(100);
    q.trim_end().to_string()
}

fn search_abuse(ctx: &mut Ctx, p: &mut Plan) {
    for (i, addr) in addresses(&mut ctx.rng, 2, false).into_iter().enumerate() {
        let agent = if i == 0 {
            TOOL_AGENTS[2]
        } else {
            BROWSER_AGENTS[5]
        };
        let bot = p.bot(addr, agent);
        let mut t = ctx.t0 + ctx.rng.between(0.0, 3.0);
        while t < ctx.t0 + 150.0 {
            p.push(t, bot, Action::Search(long_query(&mut ctx.rng)));
            t += ctx.rng.exp(1.0 / 6.0);
        }
    }
    p.routes.push("/api/search");
}

fn scraping(ctx: &mut Ctx, p: &mut Plan) {
    let addr = addresses(&mut ctx.rng, 1, false).remove(0);
    let a = p.actor(addr, "Mozilla/5.0 (compatible; ShopPriceBot/2.1)");
    let first = 1 + ctx.rng.range(0, 40) as u32;
    let mut t = ctx.t0;
    let mut id = first;
    while t < ctx.t0 + 240.0 && id <= super::plan::PRODUCTS {
        if (id - first).is_multiple_of(24) {
            let category = super::plan::CATEGORIES[((id - first) / 24) as usize % 8];
            p.push(t, a, Action::Listing { category, page: 1 });
            t += ctx.rng.lognormal(0.6, 0.2);
        }
        p.push(t, a, Action::Product(id));
        id += 1;
        t += ctx.rng.lognormal(0.95, 0.2);
    }
}

/// The `n`th wrong password a guesser tries on `victim`.
fn guess(victim: &Account, n: usize) -> Action {
    Action::Login {
        email: victim.email.clone(),
        password: format!("{}{n}", attacks_passwords()[n % 2]),
    }
}

/// Wrong passwords on `victim` from `t0` for `seconds`, one every ~`mean_gap`
/// seconds, each from the actor `who` picks for the attempt number.
fn against_one_account(
    ctx: &mut Ctx,
    p: &mut Plan,
    victim: &Account,
    who: &mut dyn FnMut(&mut Rng, usize) -> usize,
    mean_gap: f64,
    seconds: f64,
) {
    let mut t = ctx.t0;
    let mut n = 0;
    while t < ctx.t0 + seconds {
        let a = who(&mut ctx.rng, n);
        p.push(t, a, guess(victim, n));
        n += 1;
        t += ctx.rng.exp(mean_gap).max(0.8);
    }
}

fn brute_force(ctx: &mut Ctx, p: &mut Plan) {
    let victim = Account::any(&mut ctx.rng);
    let addr = addresses(&mut ctx.rng, 1, false).remove(0);
    let a = p.actor(addr, TOOL_AGENTS[0]);
    against_one_account(ctx, p, &victim, &mut |_, _| a, 4.0, 180.0);
}

fn brute_force_distributed(ctx: &mut Ctx, p: &mut Plan) {
    let victim = Account::any(&mut ctx.rng);
    let pool: Vec<usize> = addresses(&mut ctx.rng, 45, true)
        .into_iter()
        .map(|addr| {
            let agent = browser(&mut ctx.rng);
            p.actor(addr, agent)
        })
        .collect();
    let mut who = |rng: &mut Rng, n: usize| {
        // Mostly the next address in turn, sometimes one used before.
        if rng.chance(0.2) {
            *rng.pick(&pool)
        } else {
            pool[n % pool.len()]
        }
    };
    against_one_account(ctx, p, &victim, &mut who, 5.0, 180.0);
}

fn password_spraying(ctx: &mut Ctx, p: &mut Plan) {
    let clients: Vec<usize> = addresses(&mut ctx.rng, 3, false)
        .into_iter()
        .map(|addr| p.actor(addr, TOOL_AGENTS[1]))
        .collect();
    let mut targets: Vec<(String, Option<Account>)> = accounts(&mut ctx.rng, 27)
        .into_iter()
        .map(|a| (a.email.clone(), Some(a)))
        .collect();
    for _ in 0..9 {
        targets.push((login_name(&mut ctx.rng), None));
    }
    // Interleave the unknown names with the real ones.
    for i in (1..targets.len()).rev() {
        let j = ctx.rng.range(0, i as u64) as usize;
        targets.swap(i, j);
    }
    let weak = targets.iter().position(|(_, a)| a.is_some()).unwrap_or(0);
    let sprayed = attacks_passwords();
    let mut attempts: Vec<(usize, usize)> = (0..targets.len()).map(|i| (i, 0)).collect();
    attempts.extend(
        (0..targets.len())
            .filter(|i| i % 2 == 0 && *i != weak)
            .map(|i| (i, 1)),
    );
    let gap = 360.0 / attempts.len() as f64;
    let mut t = ctx.t0;
    for (n, (target, password)) in attempts.into_iter().enumerate() {
        let (email, account) = &targets[target];
        // One account really uses a common password: here, its own.
        let password = match account {
            Some(a) if target == weak => a.password.clone(),
            _ => sprayed[password].to_string(),
        };
        p.push(
            t,
            clients[n % clients.len()],
            Action::Login {
                email: email.clone(),
                password,
            },
        );
        t += ctx.rng.between(0.6 * gap, 1.4 * gap);
    }
}

fn credential_stuffing(ctx: &mut Ctx, p: &mut Plan) {
    let addrs = addresses(&mut ctx.rng, 6, false);
    let pairs = 360;
    let gap = 150.0 / f64::from(pairs);
    for n in 0..pairs {
        // A fresh cookie jar per attempt, the addresses in turn (keeps each
        // under the shop's 30 logins a minute per address).
        let agent = browser(&mut ctx.rng);
        let a = p.actor(addrs[n as usize % addrs.len()].clone(), agent);
        let t = ctx.t0 + f64::from(n) * gap + ctx.rng.between(0.0, 0.5 * gap);
        if ctx.rng.chance(0.55) {
            let email = login_name(&mut ctx.rng);
            p.push(
                t,
                a,
                Action::Login {
                    email,
                    password: format!("leaked-{}", ctx.rng.hex(4)),
                },
            );
        } else {
            let account = Account::any(&mut ctx.rng);
            if ctx.rng.chance(0.06) {
                p.push(
                    t,
                    a,
                    Action::Login {
                        email: account.email,
                        password: account.password,
                    },
                );
                p.push(t + 0.6, a, Action::ViewCart);
            } else {
                let password = format!("{}-leaked", account.password);
                p.push(
                    t,
                    a,
                    Action::Login {
                        email: account.email,
                        password,
                    },
                );
            }
        }
    }
}

fn account_takeover(ctx: &mut Ctx, p: &mut Plan) {
    let victim = Account::any(&mut ctx.rng);
    // Context: the victim's own short visit from home, before the attack.
    let home = p.actor(victim.home(), BROWSER_AGENTS[1]);
    let mut own = Visit::customer(victim.clone());
    own.habits.brief();
    own.until = ctx.t0 - 10.0;
    let mut r = ctx.rng.fork();
    let before = p.steps.len();
    visit(&mut r, p, home, (ctx.t0 - 150.0).max(0.0), own, ctx.tag);
    for s in &mut p.steps[before..] {
        s.context = true;
    }

    let addr = addresses(&mut ctx.rng, 1, false).remove(0);
    let a = p.actor(addr, BROWSER_AGENTS[0]);
    let mut t = ctx.t0;
    for n in 0..4 {
        p.push(t, a, guess(&victim, n));
        t += ctx.rng.between(5.0, 10.0);
    }
    p.push(
        t,
        a,
        Action::Login {
            email: victim.email.clone(),
            password: victim.password.clone(),
        },
    );
    t += ctx.rng.between(3.0, 6.0);
    p.push(t, a, Action::ViewCart);
    let item = dearest_product();
    for _ in 0..2 {
        t += ctx.rng.between(4.0, 9.0);
        p.push(t, a, Action::Product(item));
    }
    t += ctx.rng.between(3.0, 6.0);
    p.push(
        t,
        a,
        Action::AddToCart {
            product: item,
            quantity: 2,
        },
    );
    t += ctx.rng.between(8.0, 15.0);
    p.push(t, a, Action::Checkout(Card::random(&mut ctx.rng)));
}

fn card_testing(ctx: &mut Ctx, p: &mut Plan) {
    let addr = addresses(&mut ctx.rng, 1, false).remove(0);
    let a = p.actor(addr, TOOL_AGENTS[4]);
    let account = Account::any(&mut ctx.rng);
    let cheap = cheapest_product();
    let mut t = ctx.t0;
    p.push(
        t,
        a,
        Action::Login {
            email: account.email,
            password: account.password,
        },
    );
    t += 2.0;
    p.push(t, a, Action::Product(cheap));
    t += 2.0;
    p.push(
        t,
        a,
        Action::AddToCart {
            product: cheap,
            quantity: 1,
        },
    );
    let mut cards: Vec<Card> = Vec::new();
    for _ in 0..30 {
        t += ctx.rng.exp(5.0).max(1.5);
        let reuse = !cards.is_empty() && ctx.rng.chance(0.15);
        let card = if reuse {
            ctx.rng.pick(&cards).clone()
        } else {
            // Stolen numbers: most of them dead (mistyped, expired, refused).
            let fresh = Card::random(&mut ctx.rng);
            let card = match ctx.rng.weighted(&[0.15, 0.45, 0.4]) {
                0 => fresh,
                1 => fresh.mistyped(),
                _ => Card {
                    expiry: "03/24".into(),
                    ..fresh
                },
            };
            cards.push(card.clone());
            card
        };
        let approved = card.expiry != "03/24"
            && super::plan::with_check_digit(&card.number[..15]) == card.number;
        p.push(t, a, Action::Checkout(card));
        if approved {
            // The order went through and emptied the cart: put the item back.
            t += 1.5;
            p.push(
                t,
                a,
                Action::AddToCart {
                    product: cheap,
                    quantity: 1,
                },
            );
        }
    }
}

fn flash_sale(ctx: &mut Ctx, p: &mut Plan) {
    let item = popular_product(&mut ctx.rng);
    let mut t = ctx.t0;
    while t < ctx.t0 + 180.0 {
        let mut r = ctx.rng.fork();
        let mut v = Visit::typical(&mut r);
        v.habits.flash_sale(item);
        let address = v.address(&mut r);
        let a = p.actor(address, browser(&mut r));
        visit(&mut r, p, a, t, v, ctx.tag);
        t += ctx.rng.exp(1.0);
    }
}

fn nat_office(ctx: &mut Ctx, p: &mut Plan) {
    let office = loop {
        let a = shopper_address(&mut ctx.rng);
        if !a.starts_with("10.") {
            break a;
        }
    };
    for account in accounts(&mut ctx.rng, 30) {
        let mut r = ctx.rng.fork();
        let a = p.actor(office.clone(), browser(&mut r));
        let mut v = Visit::customer(account);
        v.habits.office();
        v.until = ctx.end;
        let start = ctx.t0 + ctx.rng.between(0.0, 180.0);
        visit(&mut r, p, a, start, v, ctx.tag);
    }
}

fn password_typos(ctx: &mut Ctx, p: &mut Plan) {
    for (i, account) in accounts(&mut ctx.rng, 8).into_iter().enumerate() {
        let mut r = ctx.rng.fork();
        let a = p.actor(account.home(), browser(&mut r));
        let mut t = ctx.t0 + ctx.rng.between(0.0, 240.0);
        log_in_after(&mut r, p, a, &mut t, &account, 1 + i % 2);
        let mut v = Visit::customer(account);
        v.habits.login_first = false;
        let start = t + r.between(2.0, 6.0);
        visit(&mut r, p, a, start, v, ctx.tag);
    }
}

fn power_user(ctx: &mut Ctx, p: &mut Plan) {
    let account = Account::any(&mut ctx.rng);
    let a = p.actor(account.home(), BROWSER_AGENTS[2]);
    let mut v = Visit::customer(account);
    v.habits.power_user();
    v.until = ctx.t0 + 240.0;
    let mut r = ctx.rng.fork();
    visit(&mut r, p, a, ctx.t0, v, ctx.tag);
}
