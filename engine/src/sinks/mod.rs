//! Where alerts and KPI values go. One module per sink; a sink never blocks
//! evaluation: slow sinks get the outputs through a bounded queue and drop (and
//! count) what does not fit.

pub mod alertmanager;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod stdout;
