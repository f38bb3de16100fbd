//! Where messages come from. Each source hands on decoded rows (or raw
//! messages, for `engine record`) and counts what it refused.

pub mod capture_reader;
pub mod connections;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "receiver")]
pub mod otlp_receiver;
