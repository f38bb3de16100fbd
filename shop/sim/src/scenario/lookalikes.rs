//! Benign traffic that resembles an attack. Rules must stay quiet on these.

use super::{Ctx, Injected, S, at, users};
use crate::model::shopper_address;
use crate::session::{Shopper, log_in_after, visit};

/// A 5 min surge: ~2.5 extra genuine sessions a second (~750, about 20
/// requests a second more), from many addresses, most about one discounted
/// product, buying far more than usual.
pub fn flash_sale(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    let item = model.popular_product(&mut ctx.rng).id;
    let mut t = ctx.t0;
    while t < ctx.end() {
        let mut r = ctx.rng.fork();
        let mut s = Shopper::typical(&mut r, model);
        s.habits.flash_sale(item);
        inj.requests.extend(visit(&mut r, model, t, s));
        t += at(ctx.rng.exp(0.4));
    }
    inj
}

/// 40 employees behind one NAT address arrive over 5 min; each logs in to their
/// own account (8% mistype once) and shops for up to 10 min.
pub fn nat_office(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    let office = loop {
        let a = shopper_address(&mut ctx.rng);
        if !a.starts_with("10.") {
            break a;
        }
    };
    for _ in 0..40 {
        let user = ctx.rng.pick(&model.users);
        let mut r = ctx.rng.fork();
        let mut s = Shopper::customer(&mut r, user, &office);
        s.habits.office();
        let start = ctx.t0 + at(ctx.rng.between(0.0, ctx.span()));
        s.until = start + 600 * S;
        inj.requests.extend(visit(&mut r, model, start, s));
    }
    inj
}

/// 8 customers over 6 min, each from their own address, mistype their
/// password once or twice, then log in and shop.
pub fn password_typos(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    for i in 0..8 {
        let user = ctx.rng.pick(&model.users);
        let mut r = ctx.rng.fork();
        let mut s = Shopper::customer(&mut r, user, &user.home);
        let start = ctx.t0 + at(ctx.rng.between(0.0, ctx.span()));
        let failures = 1 + i % 2;
        let t = log_in_after(
            &mut r,
            start,
            &mut s.client,
            user,
            failures,
            &mut inj.requests,
        );
        s.habits.login_first = false;
        let pause = at(r.between(2.0, 6.0));
        inj.requests.extend(visit(&mut r, model, t + pause, s));
    }
    inj
}

/// One logged-in customer browsing fast (median 0.5 s between requests, about
/// 0.9 a second) for 8 min, with three orders.
pub fn power_user(ctx: &mut Ctx<'_>) -> Injected {
    let model = ctx.model;
    let user = ctx.rng.pick(&model.users);
    let mut r = ctx.rng.fork();
    let mut s = Shopper::customer(&mut r, user, &user.home);
    s.habits.power_user();
    s.until = ctx.end();
    Injected {
        requests: visit(&mut r, model, ctx.t0, s),
        ..Injected::default()
    }
}

/// An e-mail campaign brings 600 registered customers back within 5 min,
/// most in the first minutes (arrivals thin out as the mail gets old): each
/// from their own home address, logging in on arrival with the usual typos
/// (~6%, some in the name), three times as likely as usual to order.
pub fn campaign_logins(ctx: &mut Ctx<'_>) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    for user in users(ctx, 600) {
        let start = ctx.t0 + at(ctx.span() * ctx.rng.unit().powf(1.5));
        let mut r = ctx.rng.fork();
        let mut s = Shopper::customer(&mut r, user, &user.home);
        s.habits.campaign();
        inj.requests.extend(visit(&mut r, model, start, s));
    }
    inj
}
