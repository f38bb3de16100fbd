//! Alerts and KPI values as text: JSON lines (the contract's shape) or a table
//! for people. Each alert is printed, not folded into incidents: this is the
//! lifecycle of every rule and entity as it happens. An alert of an
//! experimental rule says so: `"maturity":"experimental"` in JSON, and
//! `[experimental]` at the end of its table line.

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
                            let mark = if a.is_experimental() {
                                "  [experimental]"
                            } else {
                                ""
                            };
                            writeln!(
                                self.out,
                                "{:<9} {:<8} {:<20} {:<20} {:>10}  {}{mark}",
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::Notes;
    use crate::rules::definition::Maturity;
    use crate::sinks::testing::sample_alert;

    fn printed(format: Format, output: Output) -> String {
        let mut buf = Vec::new();
        Printer::new(&mut buf, format)
            .print(&[output])
            .expect("printed");
        String::from_utf8(buf).expect("UTF-8")
    }

    #[test]
    fn an_experimental_rule_s_alert_says_so_in_both_formats() {
        let mut a = sample_alert(State::Firing);
        a.notes = Some(Arc::new(Notes {
            runbook: Some("1. Look.".into()),
            false_positives: None,
            maturity: Maturity::Experimental,
        }));
        let table = printed(Format::Table, Output::Alert(a.clone()));
        let line = table.lines().nth(1).expect("a header and a line");
        assert!(
            line.ends_with("client.address=203.0.113.9  [experimental]"),
            "{line}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&printed(Format::Json, Output::Alert(a.clone()))).expect("JSON");
        assert_eq!(json["maturity"], "experimental");
        assert_eq!(json["runbook"], "1. Look.");
        assert!(json.get("false_positives").is_none(), "{json}");
        // a stable rule's line has no mark
        a.notes = Some(Arc::new(Notes::default()));
        let table = printed(Format::Table, Output::Alert(a));
        assert!(!table.contains("experimental"), "{table}");
    }
}
