//! `query`: SQL over a whole capture, to explore it while writing a rule.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ingest::Table;
use ingest::source::capture_reader::{self, CaptureItem};

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    Table,
    Json,
    Csv,
}

/// Loads every row of a capture into `spans`, `logs`, `metrics` and the
/// `events` view.
pub async fn load(paths: &[PathBuf]) -> anyhow::Result<SessionContext> {
    let reader = capture_reader::open(paths).context("cannot open the capture")?;
    let mut tables: std::collections::BTreeMap<Table, Vec<RecordBatch>> = Default::default();
    let mut bad = 0u64;
    for item in reader {
        match item {
            CaptureItem::Message(m) => tables
                .entry(m.decoded.table)
                .or_default()
                .push(m.decoded.batch),
            CaptureItem::Bad(b) => {
                bad += 1;
                if bad == 1 {
                    tracing::warn!(at = %b.position, error = %b.error, "skipped a message that does not decode");
                }
            }
            CaptureItem::Unreadable { position, error } => {
                tracing::error!(at = %position, %error, "cannot read further in this file")
            }
        }
    }
    if bad > 0 {
        eprintln!("skipped {bad} messages that do not decode");
    }
    let ctx = SessionContext::new();
    ctx.register_udaf(crate::rules::trace_sample::udaf());
    ctx.register_udaf(crate::rules::sequence::udaf());
    for table in Table::ALL {
        let batches = tables.remove(&table).unwrap_or_default();
        ctx.register_table(
            table.name(),
            Arc::new(MemTable::try_new(table.schema(), vec![batches])?),
        )?;
    }
    ctx.sql("CREATE VIEW events AS SELECT * FROM logs WHERE event_name IS NOT NULL")
        .await?;
    Ok(ctx)
}

/// Runs `sql` over the capture and prints the result.
pub async fn run(paths: &[PathBuf], sql: &str, format: QueryFormat) -> anyhow::Result<()> {
    let ctx = load(paths).await?;
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or_default()))
        .context(
            "the query does not plan (tables: spans, logs, events, metrics; see docs/schema.md)",
        )?
        .collect()
        .await?;
    let stdout = std::io::stdout();
    match format {
        QueryFormat::Table => println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?),
        QueryFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(stdout.lock());
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        QueryFormat::Csv => {
            let mut w = arrow::csv::Writer::new(stdout.lock());
            for b in &batches {
                w.write(b)?;
            }
        }
    }
    Ok(())
}
