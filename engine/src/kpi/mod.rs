//! KPI values: the findings of KPI definitions, one value per window and
//! dimension set, in the contract's shape.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alerts::{json_number, rfc3339};
use crate::rules::{Definition, Finding};

/// One KPI value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiValue {
    pub kpi: String,
    pub window_start: String,
    pub window_end: String,
    pub dimensions: BTreeMap<String, String>,
    pub value: serde_json::Value,
    #[serde(skip)]
    pub at_ns: i64,
}

/// The KPI values of one finding: one per value column. A definition with one
/// value is named by its `kpi`; with several, `kpi.column`.
pub fn values(def: &Definition, f: &Finding) -> Vec<KpiValue> {
    let end = f.window_start + def.window.size_ns;
    def.values
        .iter()
        .zip(&f.values)
        .map(|(column, v)| KpiValue {
            kpi: if def.values.len() == 1 {
                def.id.clone()
            } else {
                format!("{}.{}", def.id, column)
            },
            window_start: rfc3339(f.window_start),
            window_end: rfc3339(end),
            dimensions: f.keys.clone(),
            value: json_number(*v),
            at_ns: end,
        })
        .collect()
}
