//! The instrumented shop.
//!
//! Until the real services exist, [`sim`] simulates the telemetry they emit,
//! exactly as `../shared/telemetry-contract.md` (the project's telemetry
//! contract) describes it, so the rule pack has realistic recorded traffic to
//! be tested against. The `shop-sim` binary writes those recordings.

pub mod load;
pub mod services;
pub mod sim;
pub mod telemetry;
