//! Alerts and KPI values as text: JSON lines (the contract's shape) or a table
//! for people.

use std::io::Write;

use crate::alerts::State;
use crate::evaluator::Output;

/// How outputs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// one line per alert or KPI value, aligned for reading
    Table,
    /// one JSON object per line, as the telemetry contract describes
    Json,
}

/// Writes outputs to a stream, one per line.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> Self {
        Printer {
            out,
            format,
            header_done: false,
        }
    }

    pub fn print(&mut self, outputs: &[Output]) -> std::io::Result<()> {
        for o in outputs {
            match self.format {
                Format::Json => {
                    let line = match o {
                        Output::Alert(a) => serde_json::to_string(a),
                        Output::Kpi(k) => serde_json::to_string(k),
                    }
                    .map_err(std::io::Error::other)?;
                    writeln!(self.out, "{line}")?;
                }
                Format::Table => {
                    if !self.header_done {
                        writeln!(
                            self.out,
                            "{:<9} {:<8} {:<20} {:<20} {:>10}  {:<40} WHO",
                            "STATE", "SEVERITY", "WINDOW END", "RULE / KPI", "VALUE", ""
                        )?;
                        self.header_done = true;
                    }
                    match o {
                        Output::Alert(a) => {
                            let who: Vec<String> =
                                a.entity.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            let state = match a.state {
                                State::Firing => "FIRING",
                                State::Resolved => "resolved",
                            };
                            writeln!(
                                self.out,
                                "{:<9} {:<8} {:<20} {:<20} {:>10}  {}",
                                state,
                                a.severity,
                                a.window_end,
                                a.rule_id,
                                a.value.to_string(),
                                who.join(" ")
                            )?;
                        }
                        Output::Kpi(k) => {
                            let dims: Vec<String> = k
                                .dimensions
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect();
                            writeln!(
                                self.out,
                                "{:<9} {:<8} {:<20} {:<20} {:>10}  {}",
                                "kpi",
                                "",
                                k.window_end,
                                k.kpi,
                                k.value.to_string(),
                                dims.join(" ")
                            )?;
                        }
                    }
                }
            }
        }
        self.out.flush()
    }
}

/// stdout as a [`Sink`]: alerts as JSON lines, written off the async
/// threads. Not durable: Kafka offsets do not wait for it.
pub struct StdoutSink {
    printer: std::sync::Arc<std::sync::Mutex<Printer<Box<dyn Write + Send>>>>,
}

impl StdoutSink {
    /// Alerts to the process's stdout in `format`.
    pub fn new(format: Format) -> Self {
        Self::to(Box::new(std::io::stdout()), format)
    }

    /// Alerts to `out` in `format`.
    pub fn to(out: Box<dyn Write + Send>, format: Format) -> Self {
        StdoutSink {
            printer: std::sync::Arc::new(std::sync::Mutex::new(Printer::new(out, format))),
        }
    }
}

#[async_trait::async_trait]
impl super::Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn address(&self) -> String {
        "stdout".into()
    }

    fn durable(&self) -> bool {
        false
    }

    fn takes(&self) -> super::Takes {
        super::Takes::Alerts
    }

    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), super::SinkError> {
        let printer = self.printer.clone();
        let outputs = outputs.to_vec();
        let written = tokio::task::spawn_blocking(move || {
            printer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .print(&outputs)
        })
        .await;
        let message = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Err(super::SinkError {
            sink: "stdout".into(),
            address: "stdout".into(),
            message,
            // a closed stdout does not come back
            permanent: true,
        })
    }
}
