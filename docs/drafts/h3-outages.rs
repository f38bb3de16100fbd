//! Failures of the shop itself: no attacker, but what availability SLOs are
//! for. Genuine shoppers view products (a dozen home addresses, browsers) and
//! the catalog answers a share of their views with a server error (500 or
//! 503), as a failing database or a restart would.

use super::{Ctx, Injected, at};
use crate::model::{BROWSER_AGENTS, shopper_address};
use crate::request::{self as shop, Client};

/// Product views at `rate` a second for the scenario's span, a share
/// `failing` of them answered 5xx.
fn failing_views(ctx: &mut Ctx<'_>, rate: f64, failing: f64) -> Injected {
    let mut inj = Injected::default();
    let model = ctx.model;
    let clients: Vec<Client> = (0..12)
        .map(|_| {
            let address = shopper_address(&mut ctx.rng);
            let agent = *ctx.rng.pick(&BROWSER_AGENTS);
            Client::new(&mut ctx.rng, address, agent)
        })
        .collect();
    let mut t = ctx.t0;
    while t < ctx.end() {
        let client = ctx.rng.pick(&clients).clone();
        let product = model.popular_product(&mut ctx.rng);
        let r = shop::product_view(&mut ctx.rng, t, &client, product.id, Some(product));
        inj.requests.push(if ctx.rng.chance(failing) {
            shop::server_error(&mut ctx.rng, r)
        } else {
            r
        });
        t += at(ctx.rng.exp(1.0 / rate));
    }
    inj.extra("http.route", "/api/products/{id}");
    inj
}

/// The catalog fails: ~1 product view a second, 40% answered 5xx, for
/// 15 min. An availability SLO of 99.5% burns ~80x: a fast burn.
pub fn catalog_outage(ctx: &mut Ctx<'_>) -> Injected {
    failing_views(ctx, 1.0, 0.4)
}

/// The catalog degrades: ~0.3 product views a second, 6% answered 5xx, for
/// about three hours. With the shoppers' own views, ~4.5% of the route
/// fails: a 99.5% SLO burns ~9x, a slow burn that never reaches the fast
/// burn's 14.4x.
pub fn catalog_degraded(ctx: &mut Ctx<'_>) -> Injected {
    failing_views(ctx, 0.3, 0.06)
}

/// A deploy restarts the catalog: ~1 product view a second, 30% answered
/// 5xx, for one minute. A 5xx surge on the route, but an hour's budget
/// burns ~6x: no SLO alert.
pub fn catalog_restart(ctx: &mut Ctx<'_>) -> Injected {
    failing_views(ctx, 1.0, 0.3)
}
