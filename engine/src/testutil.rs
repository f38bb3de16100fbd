//! Building table rows by hand for the engine's tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampNanosecondArray, new_null_array};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use ingest::Table;

use crate::rules::{RuleSet, definition::parse_text};

pub const S: i64 = 1_000_000_000;
/// 2026-01-15T10:00:00Z
pub const T0: i64 = 1_768_471_200 * S;

/// A text column.
pub fn text(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

/// Rows of `table` at `times` (ns) with the given columns; every other column is
/// null where it may be, else a plain default.
pub fn rows(table: Table, times: &[i64], columns: &[(&str, ArrayRef)]) -> RecordBatch {
    let schema = table.schema();
    let given: BTreeMap<&str, &ArrayRef> = columns.iter().map(|(n, a)| (*n, a)).collect();
    let n = times.len();
    let arrays: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if let Some(a) = given.get(f.name().as_str()) {
                return (*a).clone();
            }
            match (f.name().as_str(), f.data_type()) {
                ("time" | "end_time", _) => {
                    Arc::new(TimestampNanosecondArray::from(times.to_vec()).with_timezone("UTC"))
                        as ArrayRef
                }
                (_, _) if f.is_nullable() => new_null_array(f.data_type(), n),
                (_, DataType::Utf8) => Arc::new(StringArray::from(vec![""; n])),
                (_, DataType::Float64) => Arc::new(Float64Array::from(vec![0.0; n])),
                (name, t) => panic!("no default for {name}: {t}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, arrays).expect("valid test rows")
}

/// Spans from `(seconds after T0, client address)`.
pub fn spans(at: &[(f64, &str)]) -> RecordBatch {
    let times: Vec<i64> = at.iter().map(|(s, _)| T0 + (s * 1e9) as i64).collect();
    let clients: Vec<&str> = at.iter().map(|(_, c)| *c).collect();
    // trace ids derive from the time, so that any grouping of rows gives the same ids
    let ids: Vec<String> = times
        .iter()
        .map(|t| format!("{:032x}", (t - T0) / 1_000_000 + 1))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    rows(
        Table::Spans,
        &times,
        &[("client_address", text(&clients)), ("trace_id", text(&ids))],
    )
}

/// A rule set from rule file texts.
pub async fn rule_set(files: &[&str]) -> RuleSet {
    rule_set_with(files, &[]).await
}

/// A rule set from rule file texts, with scalar functions of the test's own.
pub async fn rule_set_with(
    files: &[&str],
    functions: &[datafusion::logical_expr::ScalarUDF],
) -> RuleSet {
    let defs = files
        .iter()
        .enumerate()
        .map(|(i, t)| {
            parse_text(std::path::Path::new(&format!("rule{i}.sql")), t).expect("test rule parses")
        })
        .collect();
    RuleSet::from_definitions_with(defs, functions)
        .await
        .expect("rule set")
}

/// A KPI counting spans per client in windows of `window`/`slide`.
pub fn count_kpi(window: &str, slide: &str) -> String {
    format!(
        "/*\nkpi = \"requests\"\nwindow = \"{window}\"\nslide = \"{slide}\"\ndimensions = [\"client.address\"]\n*/\nSELECT window_start, window_end, client_address, count(*) AS value FROM spans GROUP BY 1, 2, 3"
    )
}

/// A rule firing when a client sends at least `min` spans in a window.
pub fn flood_rule(window: &str, slide: &str, min: u32, for_windows: u32, suppress: &str) -> String {
    format!(
        "/*\nid = \"test.flood\"\nseverity = \"high\"\ntags = [\"T1498\"]\nwindow = \"{window}\"\nslide = \"{slide}\"\nentity = [\"client.address\"]\nvalue = \"requests\"\nfor = {for_windows}\nsuppress = \"{suppress}\"\nsummary = \"{{value}} requests from {{client.address}}\"\n*/\nSELECT window_start, window_end, client_address, count(*) AS requests, trace_sample(trace_id) AS trace_ids\nFROM spans GROUP BY 1, 2, 3 HAVING count(*) >= {min}"
    )
}
