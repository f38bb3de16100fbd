//! The detection and analytics engine: SQL rules and KPIs over event-time
//! windows of OpenTelemetry data, on DataFusion.
//!
//! - [`rules`]: rule and KPI files, planned once onto DataFusion.
//! - [`window`]: the buffer, the watermark, rows into windows.
//! - [`evaluator`]: rows in, alerts and KPI values out.
//! - [`alerts`]: the alert lifecycle. [`incidents`]: alerts folded into incidents.
//!   [`kpi`]: KPI values.
//! - [`sigma`]: Sigma rules converted into rule files.
//! - [`drive`]: the replay loop, the live loop and the fixture judge.
//! - [`sinks`]: where alerts go. [`api`]: the HTTP API and viewer. [`cli`]: commands
//!   (argument parsing only).
//! - [`telemetry`]: the engine's own spans and metrics by OTLP.
//!
//! The engine never parses OTLP itself: rows arrive as Arrow batches from `ingest`.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod drive;
pub mod evaluator;
pub mod incidents;
pub mod kpi;
pub mod rules;
pub mod samples;
pub mod sigma;
pub mod sinks;
pub mod telemetry;
pub mod window;

#[cfg(test)]
mod testutil;
