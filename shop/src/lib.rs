//! shop
pub mod services;
pub mod telemetry;
