//! The BI store keeps a KPI value's first write, on the stack's PostgreSQL
//! (`compose/local/stack up postgres`).
//!
//! After a crash, a window the engine had evaluated and written may be
//! evaluated again from the part of its rows a restart reads again (see
//! ARCHITECTURE.md, Failures): the same key with a partial value. The store
//! upserted KPI values by key, so that partial value replaced the whole
//! window's. Now the first value written for a key stays, whether the two
//! come in separate batches (a restart) or in one.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use engine::evaluator::Output;
use engine::kpi::KpiValue;
use engine::sinks::postgres::PostgresSink;
use engine::sinks::postgres::sqlx::postgres::PgConnection;
use engine::sinks::postgres::sqlx::{self, Connection as _, Row as _};

fn orders(window_start: &str, window_end: &str, value: f64) -> Output {
    Output::Kpi(KpiValue {
        kpi: "orders".into(),
        window_start: window_start.into(),
        window_end: window_end.into(),
        dimensions: BTreeMap::from([("shop.order.currency".into(), "EUR".into())]),
        value: serde_json::json!(value),
        at_ns: 0,
    })
}

/// The stored `orders` values, by window start.
async fn stored(url: &str) -> Result<Vec<(String, f64)>> {
    let mut conn = PgConnection::connect(url).await?;
    let rows = sqlx::query(
        "SELECT to_char(window_start AT TIME ZONE 'UTC', 'HH24:MI'), value
         FROM kpi_values WHERE kpi = 'orders' ORDER BY window_start",
    )
    .fetch_all(&mut conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_value_written_again_does_not_replace_the_whole_one() -> Result<()> {
    let schema = e2e::faults::Schema::create("e2e_bi_kpi_first").await;
    let url = schema.url();
    let result = async {
        let (sink, task) = PostgresSink::start(&url, 100)?;
        // the first run: two whole windows
        sink.send(&[
            orders("2026-01-15T10:00:00Z", "2026-01-15T10:15:00Z", 120.0),
            orders("2026-01-15T10:15:00Z", "2026-01-15T10:30:00Z", 80.0),
        ]);
        sink.flush().await;
        // the restart: the second window again, from part of its rows, and a
        // third window, new; then, in one batch, a fourth window whole and
        // again partial
        sink.send(&[
            orders("2026-01-15T10:15:00Z", "2026-01-15T10:30:00Z", 30.0),
            orders("2026-01-15T10:30:00Z", "2026-01-15T10:45:00Z", 95.0),
        ]);
        sink.flush().await;
        sink.send(&[
            orders("2026-01-15T10:45:00Z", "2026-01-15T11:00:00Z", 70.0),
            orders("2026-01-15T10:45:00Z", "2026-01-15T11:00:00Z", 10.0),
        ]);
        sink.flush().await;
        let stats = sink.stats();
        drop(sink);
        let _ = task.await;
        ensure!(
            stats.dropped == 0 && stats.refused.is_none(),
            "the store took every batch: {stats:?}"
        );
        let values = stored(&url).await?;
        ensure!(
            values
                == vec![
                    ("10:00".to_string(), 120.0),
                    ("10:15".to_string(), 80.0),
                    ("10:30".to_string(), 95.0),
                    ("10:45".to_string(), 70.0),
                ],
            "each window keeps its first value: {values:?}"
        );
        Ok(())
    }
    .await;
    schema.drop_all().await;
    result
}
