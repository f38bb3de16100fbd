//! The viewer's SQL panels read from the BI store when the engine writes one
//! (`--postgres URL`): the panel's own `rawSql`, with Grafana's macros and
//! variables expanded by `dashboards::expand`, run on PostgreSQL. So the
//! viewer shows what Grafana would, including history from before a restart
//! and beyond what the engine holds in memory.
//!
//! Queries go through the simple query protocol, so every value arrives as
//! text and is read by its column's type: no type needs a decoder of its own
//! (`sum` of integers is `numeric`, which sqlx would not read as a float).

use std::collections::BTreeMap;
use std::time::Duration;

use dashboards::expand::{ALL, TimeRange, expand_sql};
use dashboards::frames::{Column, Frame};
use dashboards::grafana::Board as Dashboard;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

/// A pool of at most four connections to the BI store, opened on first use.
pub fn connect(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url)
        .map_err(|e| anyhow::anyhow!("--postgres: {e}"))
}

/// The variables as `expand_sql` takes them: every variable of the dashboard,
/// All (`*`, or nothing chosen) as Grafana's All.
fn variables(
    d: &Dashboard,
    chosen: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    d.variables
        .iter()
        .map(|v| {
            let values = match chosen.get(v.name()) {
                Some(c) if !c.is_empty() && !c.iter().any(|x| x == "*") => c.clone(),
                _ => vec![ALL.to_string()],
            };
            (v.name().to_string(), values)
        })
        .collect()
}

/// Runs a panel's SQL over `[from_ns, to_ns]` on the store.
pub async fn frame(
    pool: &PgPool,
    d: &Dashboard,
    sql: &str,
    from_ns: i64,
    to_ns: i64,
    chosen: &BTreeMap<String, Vec<String>>,
) -> Result<Frame, String> {
    let range = TimeRange::new(from_ns, to_ns, Duration::from_secs(60));
    let sql = expand_sql(sql, &range, &variables(d, chosen)).map_err(|e| e.to_string())?;
    let rows = sqlx::raw_sql(&sql)
        .fetch_all(pool)
        .await
        .map_err(|e| format!("the BI store: {e}"))?;
    Ok(to_frame(&rows))
}

/// A column's kind by its PostgreSQL type (a numeric column named `time` is
/// epoch seconds, as `$__timeGroupAlias` makes it, and a time like Grafana's).
fn kind(name: &str, type_name: &str) -> &'static str {
    match type_name {
        "TIMESTAMPTZ" | "TIMESTAMP" | "DATE" => "time",
        "INT2" | "INT4" | "INT8" | "FLOAT4" | "FLOAT8" | "NUMERIC" if name == "time" => "time",
        "INT2" | "INT4" | "INT8" | "FLOAT4" | "FLOAT8" | "NUMERIC" => "number",
        _ => "string",
    }
}

fn to_frame(rows: &[PgRow]) -> Frame {
    let Some(first) = rows.first() else {
        return Frame {
            columns: vec![],
            rows: vec![],
        };
    };
    let columns: Vec<(String, &'static str)> = first
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), kind(c.name(), c.type_info().name())))
        .collect();
    let values = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| {
                    let Ok(raw) = row.try_get_raw(i) else {
                        return Value::Null;
                    };
                    if raw.is_null() {
                        return Value::Null;
                    }
                    let text: String = row.try_get_unchecked(i).unwrap_or_default();
                    match *kind {
                        "time" => time_ms(&text).map(Value::from).unwrap_or(Value::Null),
                        "number" => text
                            .parse::<f64>()
                            .ok()
                            .and_then(|v| serde_json::Number::from_f64(v).map(Value::Number))
                            .unwrap_or(Value::Null),
                        _ => Value::from(text),
                    }
                })
                .collect()
        })
        .collect();
    Frame {
        columns: columns
            .into_iter()
            .map(|(name, kind)| Column { name, kind })
            .collect(),
        rows: values,
    }
}

/// A PostgreSQL time as text (`2026-01-15 10:01:00+00`, or epoch seconds) in
/// milliseconds.
fn time_ms(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Some((seconds * 1000.0).round() as i64);
    }
    let parsed = chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|t| t.timestamp_millis());
    parsed.or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_times_read_as_milliseconds() {
        assert_eq!(time_ms("2026-01-15 10:01:00+00"), Some(1_768_471_260_000));
        assert_eq!(time_ms("2026-01-15 10:01:00.5+00"), Some(1_768_471_260_500));
        assert_eq!(time_ms("1768471260"), Some(1_768_471_260_000));
        assert_eq!(time_ms("2026-01-15"), Some(1_768_435_200_000));
        assert_eq!(time_ms("soon"), None);
        assert_eq!(kind("time", "NUMERIC"), "time");
        assert_eq!(kind("alerts", "INT8"), "number");
        assert_eq!(kind("who", "TEXT"), "string");
    }
}
