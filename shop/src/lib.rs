//! The instrumented shop: its six [`services`], and [`load`] (`shop-load`),
//! which plays the traffic model of [`sim`] (crate `shop-sim`: population,
//! shoppers, scenario catalog) against them as real HTTP. `shop-sim` renders
//! the same model's requests as telemetry, without the services.

pub mod load;
pub mod services;
/// The traffic model and the telemetry simulator (crate `shop-sim`).
pub use shop_sim as sim;
pub mod telemetry;
