//! Attack traffic. Each function documents its figures; the one-line summary
//! with the same figures is in the registry (`SCENARIOS`).

use super::{Ctx, Injected, S, at, users};
use crate::model::{BROWSER_AGENTS, TOOL_AGENTS, User, attacker_address, card_number, login_name};
use crate::request::{self as shop, Client, Login, Nanos, Payment, Request, session_id};
use crate::session::{Shopper, visit};

/// Distinct attacker addresses.
fn addresses(ctx: &mut Ctx<'_>, n: usize, botnet: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let a = attacker_address(&mut ctx.rng, botnet);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn no_session(mut c: Client) -> Client {
    c.session = None;
    c
}

/// One address, ~220 req/s for 80 s on a cheap route, no cookies. After 20 s
/// the gateway's rate limiter answers 429 to about 85% of it.
pub fn http_flood(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let addr = addresses(ctx, 1, false).remove(0);
    let client = no_session(Client::new(&mut ctx.rng, addr, TOOL_AGENTS[0]));
    let hot: Vec<u32> = (0..5)
        .map(|_| ctx.model.popular_product(&mut ctx.rng).id)
        .collect();
    let end = ctx.end();
    let mut t = ctx.t0;
    while t < end {
        let id = *ctx.rng.pick(&hot);
        let r = shop::product_view(&mut ctx.rng, t, &client, id, ctx.model.product(id));
        let limited = t - ctx.t0 >= 20 * S && ctx.rng.chance(0.85);
        inj.requests
            .push(if limited { shop::rate_limited(r) } else { r });
        t += at(ctx.rng.exp(1.0 / 220.0));
    }
    inj.extra("http.route", "/api/products/{id}");
    inj
}

/// 200 botnet addresses, each requesting one product page every ~2.2 s
/// (27 a minute, a little jitter) for 120 s; starts staggered over 10 s.
pub fn distributed_flood(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let target = ctx.model.popular_product(&mut ctx.rng).clone();
    for addr in addresses(ctx, 200, true) {
        let agent = *ctx.rng.pick(&BROWSER_AGENTS);
        let client = no_session(Client::new(&mut ctx.rng, addr, agent));
        let mut t = ctx.t0 + at(ctx.rng.between(0.0, 10.0));
        let end = ctx.end();
        while t < end {
            inj.requests.push(shop::product_view(
                &mut ctx.rng,
                t,
                &client,
                target.id,
                Some(&target),
            ));
            t += at(ctx.rng.between(1.9, 2.5));
        }
    }
    inj.extra("http.route", "/api/products/{id}");
    inj
}

/// Two addresses search with long, wildcard-heavy queries, ~1.4/s each, for
/// 4 min. The search backend degrades: latency 1.2 s → 6 s, and 5xx (504
/// timeouts, 503 shed) rising from 0 to 45%.
pub fn search_abuse(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let span = ctx.span();
    for (i, addr) in addresses(ctx, 2, false).into_iter().enumerate() {
        let agent = if i == 0 {
            TOOL_AGENTS[2]
        } else {
            BROWSER_AGENTS[5]
        };
        let client = Client::new(&mut ctx.rng, addr, agent);
        let mut t = ctx.t0 + at(ctx.rng.between(0.0, 5.0));
        while t < ctx.t0 + at(span) {
            let progress = ((t - ctx.t0) as f64 / 1e9 / span).clamp(0.0, 1.0);
            let latency = ctx.rng.lognormal(1.2 + 4.8 * progress, 0.25);
            let r = if ctx.rng.chance(0.45 * progress) {
                if ctx.rng.chance(0.7) {
                    shop::search(&mut ctx.rng, t, &client, 0, Some(10.0), 504)
                } else {
                    shop::search(&mut ctx.rng, t, &client, 0, Some(0.05), 503)
                }
            } else {
                let results = ctx.rng.range(500, 5000) as i64;
                shop::search(&mut ctx.rng, t, &client, results, Some(latency), 200)
            };
            inj.requests.push(shop::Request {
                typed: Some(shop::Typed::LongQuery),
                ..r
            });
            t += at(ctx.rng.exp(1.0 / 1.4));
        }
    }
    inj.extra("http.route", "/api/search");
    inj
}

/// One address and session walks the catalog in id order, one product every
/// ~1.3 s for 6 min, with a listing page every 24 products; never a cart.
pub fn scraping(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let addr = addresses(ctx, 1, false).remove(0);
    let client = Client::new(
        &mut ctx.rng,
        addr,
        "Mozilla/5.0 (compatible; ShopPriceBot/2.1)",
    );
    let first = ctx.model.products[0].id + ctx.rng.range(0, 40) as u32;
    let mut t = ctx.t0;
    let mut id = first;
    while t < ctx.end() {
        if (id - first).is_multiple_of(24) {
            inj.requests.push(shop::listing(&mut ctx.rng, t, &client));
            t += at(ctx.rng.lognormal(0.8, 0.2));
        }
        inj.requests.push(shop::product_view(
            &mut ctx.rng,
            t,
            &client,
            id,
            ctx.model.product(id),
        ));
        id += 1;
        t += at(ctx.rng.lognormal(1.25, 0.2));
    }
    inj
}

/// Login attempts on one account: the first 10 wrong passwords count, then the
/// account is locked and every attempt answers `locked`.
fn against_one_account(
    ctx: &mut Ctx<'_>,
    victim: &User,
    clients: &mut dyn FnMut(&mut Ctx<'_>, usize) -> Client,
    mean_gap: f64,
    seconds: f64,
) -> Vec<Request> {
    let mut out = Vec::new();
    let mut t = ctx.t0;
    let mut n = 0;
    while t < ctx.t0 + at(seconds) {
        let c = clients(ctx, n);
        let outcome = if n < 10 {
            Login::BadPassword
        } else {
            Login::Locked
        };
        out.push(shop::login(
            &mut ctx.rng,
            t,
            &c,
            &victim.login,
            outcome,
            None,
        ));
        n += 1;
        t += at(ctx.rng.exp(mean_gap).max(0.8));
    }
    out
}

/// One account, one address, one script: a login every ~4 s for 4 min.
pub fn brute_force(ctx: &mut Ctx<'_>) -> Injected {
    let victim = users(ctx, 1)[0];
    let addr = addresses(ctx, 1, false).remove(0);
    let client = no_session(Client::new(&mut ctx.rng, addr, TOOL_AGENTS[0]));
    let seconds = ctx.span();
    let requests = against_one_account(ctx, victim, &mut |_, _| client.clone(), 4.0, seconds);
    Injected {
        requests,
        ..Injected::default()
    }
}

/// One account from 45 rotating botnet addresses (each used once or twice, a
/// browser user agent each): a login every ~5 s for 4 min.
pub fn brute_force_distributed(ctx: &mut Ctx<'_>) -> Injected {
    let victim = users(ctx, 1)[0];
    let pool: Vec<Client> = addresses(ctx, 45, true)
        .into_iter()
        .map(|a| {
            let agent = *ctx.rng.pick(&BROWSER_AGENTS);
            Client::new(&mut ctx.rng, a, agent)
        })
        .collect();
    let mut pick = |ctx: &mut Ctx<'_>, n: usize| {
        // Mostly the next address in turn, sometimes one used before.
        let i = if ctx.rng.chance(0.2) {
            ctx.rng.range(0, 44) as usize
        } else {
            n % pool.len()
        };
        let mut c = pool[i].clone();
        c.session = Some(session_id(&mut ctx.rng));
        c
    };
    let seconds = ctx.span();
    let requests = against_one_account(ctx, victim, &mut pick, 5.0, seconds);
    Injected {
        requests,
        ..Injected::default()
    }
}

/// Common passwords sprayed across accounts. Never emitted; listed so tests
/// can check they do not leak.
pub const SPRAYED_PASSWORDS: [&str; 2] = ["Winter2025!", "Spring2026!"];

/// An account a sprayer tries: its login name, and the registered user if it exists.
type Target<'m> = (String, Option<&'m User>);

/// `registered` distinct registered accounts and `unknown` names the shop never
/// had, shuffled together.
fn spray_targets<'m>(ctx: &mut Ctx<'m>, registered: usize, unknown: usize) -> Vec<Target<'m>> {
    let mut targets: Vec<Target<'m>> = users(ctx, registered)
        .iter()
        .map(|u| (u.login.clone(), Some(*u)))
        .collect();
    for _ in 0..unknown {
        targets.push((login_name(&mut ctx.rng), None));
    }
    // Interleave the unknown accounts with the known ones.
    for i in (1..targets.len()).rev() {
        let j = ctx.rng.range(0, i as u64) as usize;
        targets.swap(i, j);
    }
    targets
}

/// One sprayed password on `target`: unknown user, wrong password, or (on the
/// weak account) a success.
fn spray_attempt(
    ctx: &mut Ctx<'_>,
    t: Nanos,
    c: &Client,
    target: &Target<'_>,
    weak: bool,
) -> Request {
    let (name, user) = target;
    match user {
        None => shop::login(&mut ctx.rng, t, c, name, Login::UnknownUser, None),
        Some(u) if weak => shop::login(&mut ctx.rng, t, c, name, Login::Success, Some(&u.id)),
        Some(_) => shop::login(&mut ctx.rng, t, c, name, Login::BadPassword, None),
    }
}

/// 3 addresses, 60 accounts (48 registered, 12 that do not exist), the first
/// password on every account, the second on half of them: ~90 attempts, one
/// every ~8 s over 12 min. One account uses the first password: a success.
pub fn password_spraying(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let addrs = addresses(ctx, 3, false);
    let clients: Vec<Client> = addrs
        .into_iter()
        .map(|a| no_session(Client::new(&mut ctx.rng, a, TOOL_AGENTS[1])))
        .collect();
    let targets = spray_targets(ctx, 48, 12);
    let weak = ctx.rng.range(0, targets.len() as u64 - 1) as usize;
    let mut attempts: Vec<(usize, usize)> = (0..targets.len()).map(|i| (i, 0)).collect();
    attempts.extend(
        (0..targets.len())
            .filter(|i| i % 2 == 0 && *i != weak)
            .map(|i| (i, 1)),
    );
    let gap = ctx.span() / attempts.len() as f64;
    let mut t = ctx.t0;
    for (n, (target, _password)) in attempts.into_iter().enumerate() {
        let c = &clients[n % clients.len()];
        let r = spray_attempt(ctx, t, c, &targets[target], target == weak);
        inj.requests.push(r);
        t += at(ctx.rng.between(0.6 * gap, 1.4 * gap));
    }
    inj
}

/// One leaked name/password pair tried from `c` at `t`: 55% of the names were
/// never registered; ~6% of the registered ones still use the leaked password,
/// and the attacker then opens the account's cart.
fn replay_pair(ctx: &mut Ctx<'_>, inj: &mut Injected, t: Nanos, mut c: Client) {
    if ctx.rng.chance(0.55) {
        let name = login_name(&mut ctx.rng);
        inj.requests.push(shop::login(
            &mut ctx.rng,
            t,
            &c,
            &name,
            Login::UnknownUser,
            None,
        ));
    } else {
        let u = ctx.rng.pick(&ctx.model.users);
        if ctx.rng.chance(0.06) {
            inj.requests.push(shop::login(
                &mut ctx.rng,
                t,
                &c,
                &u.login,
                Login::Success,
                Some(&u.id),
            ));
            c.user = Some(u.id.clone());
            inj.requests
                .push(shop::view_cart(&mut ctx.rng, t + at(0.6), &c));
        } else {
            inj.requests.push(shop::login(
                &mut ctx.rng,
                t,
                &c,
                &u.login,
                Login::BadPassword,
                None,
            ));
        }
    }
}

/// 6 addresses replay 420 leaked name/password pairs in 3 min (~2.3 a second
/// overall), a fresh cookie jar per attempt. 55% of the names were never
/// registered; of the registered ones ~6% still use the leaked password: the
/// attacker then opens the account's cart.
pub fn credential_stuffing(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let addrs = addresses(ctx, 6, false);
    let mut t = ctx.t0;
    let mut n = 0usize;
    while n < 420 {
        let agent = *ctx.rng.pick(&BROWSER_AGENTS);
        let c = Client::new(&mut ctx.rng, addrs[n % addrs.len()].clone(), agent);
        replay_pair(ctx, &mut inj, t, c);
        n += 1;
        t += at(ctx.rng.exp(ctx.span() / 420.0));
    }
    inj
}

/// The victim shops from home as usual. 2.5 min later an address never seen
/// for the account fails 4 times in ~30 s (one short of the shop's lockout
/// at 5 failures in a row), gets in, and orders an expensive item with a card
/// the victim never used.
pub fn account_takeover(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    let victim = users(ctx, 1)[0];
    // Context: the victim's own visit, before the attack.
    let mut home = Shopper::customer(&mut ctx.rng, victim, &victim.home);
    home.habits.brief();
    let mut r = ctx.rng.fork();
    inj.context = visit(&mut r, model, ctx.t0 - 150 * S, home);

    let addr = addresses(ctx, 1, false).remove(0);
    let mut c = Client::new(&mut ctx.rng, addr, BROWSER_AGENTS[0]);
    let mut t = ctx.t0;
    for _ in 0..4 {
        inj.requests.push(shop::login(
            &mut ctx.rng,
            t,
            &c,
            &victim.login,
            Login::BadPassword,
            None,
        ));
        t += at(ctx.rng.between(5.0, 10.0));
    }
    inj.requests.push(shop::login(
        &mut ctx.rng,
        t,
        &c,
        &victim.login,
        Login::Success,
        Some(&victim.id),
    ));
    c.user = Some(victim.id.clone());
    t += at(ctx.rng.between(3.0, 6.0));
    inj.requests.push(shop::view_cart(&mut ctx.rng, t, &c));
    let item = model
        .products
        .iter()
        .max_by(|a, b| a.price.total_cmp(&b.price))
        .unwrap_or(&model.products[0]);
    for _ in 0..2 {
        t += at(ctx.rng.between(4.0, 9.0));
        inj.requests
            .push(shop::product_view(&mut ctx.rng, t, &c, item.id, Some(item)));
    }
    t += at(ctx.rng.between(3.0, 6.0));
    inj.requests
        .push(shop::add_to_cart(&mut ctx.rng, t, &c, item, 2));
    t += at(ctx.rng.between(3.0, 6.0));
    inj.requests.push(shop::checkout(
        &mut ctx.rng,
        t,
        &c,
        item.price * 2.0,
        victim.currency,
    ));
    t += at(ctx.rng.between(8.0, 15.0));
    let card = card_number(&mut ctx.rng, 5);
    inj.requests.push(shop::payment(
        &mut ctx.rng,
        t,
        &c,
        item.price * 2.0,
        victim.currency,
        &card,
        Payment::Approved,
        2,
    ));
    inj
}

/// A cheap item viewed, put in the cart and checked out by `c` from `t`; the
/// time of the checkout.
fn cheap_checkout(ctx: &mut Ctx<'_>, inj: &mut Injected, c: &Client, mut t: Nanos) -> Nanos {
    let model = ctx.model;
    let cheap = model.cheapest().unwrap_or(&model.products[0]);
    inj.requests.push(shop::product_view(
        &mut ctx.rng,
        t,
        c,
        cheap.id,
        Some(cheap),
    ));
    t += at(2.0);
    inj.requests
        .push(shop::add_to_cart(&mut ctx.rng, t, c, cheap, 1));
    t += at(2.0);
    inj.requests
        .push(shop::checkout(&mut ctx.rng, t, c, cheap.price, "EUR"));
    t
}

/// One payment of 1-3 EUR with a stolen card: a new one, or (15%) one of
/// `cards` again; about 85% declined.
fn tested_card(ctx: &mut Ctx<'_>, t: Nanos, c: &Client, cards: &mut Vec<String>) -> Request {
    let pan = if !cards.is_empty() && ctx.rng.chance(0.15) {
        ctx.rng.pick(cards).clone()
    } else {
        let brand = if ctx.rng.chance(0.7) { 4 } else { 5 };
        let p = card_number(&mut ctx.rng, brand);
        cards.push(p.clone());
        p
    };
    let outcome = if ctx.rng.chance(0.15) {
        Payment::Approved
    } else {
        let codes = [
            "do_not_honor",
            "incorrect_cvc",
            "stolen_card",
            "expired_card",
            "insufficient_funds",
        ];
        Payment::Declined(codes[ctx.rng.weighted(&[0.35, 0.25, 0.1, 0.15, 0.15])])
    };
    let amount = ctx.rng.between(1.0, 3.0);
    shop::payment(&mut ctx.rng, t, c, amount, "EUR", &pan, outcome, 1)
}

/// One guest session and address: a cheap item in the cart, checkout, then 45
/// payment attempts of 1-3 EUR every ~6 s with ~38 distinct stolen cards,
/// about 85% declined.
pub fn card_testing(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let addr = addresses(ctx, 1, false).remove(0);
    let c = Client::new(&mut ctx.rng, addr, TOOL_AGENTS[4]);
    let mut t = cheap_checkout(ctx, &mut inj, &c, ctx.t0);
    let mut cards: Vec<String> = Vec::new();
    for _ in 0..45 {
        t += at(ctx.rng.exp(6.0).max(1.5));
        inj.requests.push(tested_card(ctx, t, &c, &mut cards));
    }
    inj
}

/// Password spraying that keeps every address and account under the
/// per-entity rules: 90 residential-looking botnet addresses (browser user
/// agents, no cookies), 3-4 accounts each (~315, a fifth of them names the
/// shop never had), the first common password on every account and the
/// second on about half: ~470 attempts at random moments over 10 min. One
/// account uses the first password: a success.
pub fn password_spraying_distributed(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let clients: Vec<Client> = addresses(ctx, 90, true)
        .into_iter()
        .map(|a| {
            let agent = *ctx.rng.pick(&BROWSER_AGENTS);
            no_session(Client::new(&mut ctx.rng, a, agent))
        })
        .collect();
    let per_address: Vec<usize> = clients
        .iter()
        .map(|_| ctx.rng.range(3, 4) as usize)
        .collect();
    let total: usize = per_address.iter().sum();
    let targets = spray_targets(ctx, total - total / 5, total / 5);
    let weak = ctx.rng.range(0, total as u64 - 1) as usize;
    let mut next = 0;
    for (c, n) in clients.iter().zip(per_address) {
        for (target, victim) in targets.iter().enumerate().skip(next).take(n) {
            let passwords = if target != weak && ctx.rng.chance(0.5) {
                2
            } else {
                1
            };
            for _ in 0..passwords {
                let t = ctx.t0 + at(ctx.rng.between(0.0, ctx.span()));
                let r = spray_attempt(ctx, t, c, victim, target == weak);
                inj.requests.push(r);
            }
        }
        next += n;
    }
    inj
}

/// Credential stuffing from a pool of 400 botnet addresses, each used for one
/// or two tries at random moments over 15 min (~600 tries, ~0.7 a second
/// overall), a fresh cookie jar per try; the pairs as in `credential_stuffing`
/// (55% unknown names, ~6% of the rest valid).
pub fn credential_stuffing_low_slow(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    for addr in addresses(ctx, 400, true) {
        for _ in 0..ctx.rng.range(1, 2) {
            let t = ctx.t0 + at(ctx.rng.between(0.0, ctx.span()));
            let agent = *ctx.rng.pick(&BROWSER_AGENTS);
            let c = Client::new(&mut ctx.rng, addr.clone(), agent);
            replay_pair(ctx, &mut inj, t, c);
        }
    }
    inj
}

/// Card testing spread over 60 botnet addresses (browser user agents), one
/// starting every ~7 s over 7 min: each puts a cheap item in the cart, checks
/// out, then pays 3-5 times, 1-3 EUR, 5-20 s apart, with a new stolen card
/// almost every time (~240 payments, ~85% declined; never more than 5 cards
/// an address).
pub fn card_testing_distributed(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    for addr in addresses(ctx, 60, true) {
        let agent = *ctx.rng.pick(&BROWSER_AGENTS);
        let c = Client::new(&mut ctx.rng, addr, agent);
        let start = ctx.t0 + at(ctx.rng.between(0.0, ctx.span()));
        let mut t = cheap_checkout(ctx, &mut inj, &c, start);
        let mut cards: Vec<String> = Vec::new();
        for _ in 0..ctx.rng.range(3, 5) {
            t += at(ctx.rng.between(5.0, 20.0));
            inj.requests.push(tested_card(ctx, t, &c, &mut cards));
        }
    }
    inj
}
