//! Rollups and baselines: KPI values the engine keeps after their window
//! closed, for later windows to read from SQL.
//!
//! A KPI with `keep = "6h"` in its header is a *rollup*: every value it
//! gives (per window and dimension set) is kept for six hours, and rules read
//! them through two table functions, registered in every session:
//!
//! - `rollup('kpi', '1h')`: for each window being evaluated, the kept
//!   buckets (the KPI's windows) that end within the hour before the window's
//!   end, one row per bucket and dimension set: `window_start`, `window_end`
//!   (the reader's window), `bucket_start`, `bucket_end`, the dimension
//!   columns and the value columns. `rollup('kpi', '30d', 'hourly')` reads
//!   hourly sums instead (`keep_hourly`), the hour in progress included as
//!   far as the window's end.
//! - `baseline('kpi', 'value', 30, 10)`: for each window being evaluated and
//!   dimension set, the mean and standard deviation of `value` over the last
//!   30 buckets that ended at or before the window's start (so the window
//!   itself is never its own baseline), and `n`, how many of those buckets
//!   hold a value; a dimension set with fewer than 10 (the warm-up) has no row.
//!
//! Buckets are recorded when the KPI's window closes, never from an early
//! pass, and the evaluator runs kept KPIs before the rules that read them
//! (their session first, and first within it), so a window reads exactly
//! the buckets that ended before its end: replay gives the same rows however
//! pushes and evaluations are grouped.
//!
//! Memory is bounded per rollup: `keep / window` buckets per dimension set
//! (and `keep_hourly / 1h` sums), more only while the evaluation lags (a
//! bucket goes once no window still to evaluate can read it), and
//! `max_keys` dimension sets (default 1000); a new dimension set at the cap
//! evicts the one whose newest bucket is oldest (then the smallest), counted
//! in `otelguard_rollup_keys_evicted_total{kpi}`. Below the cap, what a
//! window reads does not depend on how evaluations are grouped; at the cap,
//! a window evaluated together with later ones may miss a key they evicted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use ingest::schema::{column_name, time_type};

use super::Finding;
use super::definition::{Definition, RollupSpec, WindowSpec, parse_duration};

const HOUR: i64 = 3_600_000_000_000;

/// One dimension set's kept values.
#[derive(Debug, Default, Clone)]
struct Kept {
    /// bucket start -> the KPI's values (NaN: no figure)
    buckets: BTreeMap<i64, Vec<f64>>,
    /// hour start -> the sums of the values of its buckets (`keep_hourly`)
    hourly: BTreeMap<i64, Vec<f64>>,
    /// the start of its newest bucket: the eviction order
    newest: i64,
}

/// One kept KPI.
#[derive(Debug, Clone)]
struct Series {
    spec: RollupSpec,
    size_ns: i64,
    /// dimension names (the contract's) and value columns, as defined
    dims: Vec<String>,
    values: Vec<String>,
    /// by dimension values, in the order of `dims`
    keys: BTreeMap<Vec<String>, Kept>,
    evicted: u64,
}

impl Series {
    fn of(def: &Definition, spec: RollupSpec) -> Series {
        Series {
            spec,
            size_ns: def.window.size_ns,
            dims: def.keys.clone(),
            values: def.values.clone(),
            keys: BTreeMap::new(),
            evicted: 0,
        }
    }

    fn same_shape(&self, def: &Definition, spec: RollupSpec) -> bool {
        self.size_ns == def.window.size_ns
            && self.dims == def.keys
            && self.values == def.values
            && self.spec == spec
    }

    /// Records one bucket (again, if it was recorded: a window evaluated
    /// twice keeps its last values).
    fn record(&mut self, start: i64, key: Vec<String>, values: Vec<f64>) {
        if !self.keys.contains_key(&key) && self.keys.len() >= self.spec.max_keys {
            let oldest = self
                .keys
                .iter()
                .min_by_key(|(k, kept)| (kept.newest, (*k).clone()))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.keys.remove(&oldest);
                self.evicted += 1;
            }
        }
        let hourly = self.spec.hourly_ns.is_some();
        let kept = self.keys.entry(key).or_default();
        let before = kept.buckets.insert(start, values.clone());
        if hourly {
            let hour = kept
                .hourly
                .entry(start.div_euclid(HOUR) * HOUR)
                .or_insert_with(|| vec![0.0; values.len()]);
            for (i, v) in values.iter().enumerate() {
                let old = before.as_ref().and_then(|b| b.get(i)).copied();
                hour[i] += finite(*v) - old.map(finite).unwrap_or(0.0);
            }
        }
        kept.newest = kept.newest.max(start);
    }

    /// Drops the buckets no window from `next` on reads: those that ended
    /// `keep` (hourly sums: `keep_hourly`) or more before it.
    fn prune(&mut self, next: i64) {
        let from = next.saturating_sub(self.spec.keep_ns);
        let hours_from = self.spec.hourly_ns.map(|h| next.saturating_sub(h));
        let size = self.size_ns;
        self.keys.retain(|_, kept| {
            // a bucket is kept while its end is after `from`
            kept.buckets = kept.buckets.split_off(&(from - size + 1));
            if let Some(h) = hours_from {
                kept.hourly = kept.hourly.split_off(&(h - HOUR + 1));
            }
            !kept.buckets.is_empty() || !kept.hourly.is_empty()
        });
    }

    fn bucket_count(&self) -> usize {
        self.keys
            .values()
            .map(|k| k.buckets.len() + k.hourly.len())
            .sum()
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

#[derive(Debug, Default)]
struct Store {
    series: BTreeMap<String, Series>,
}

/// The kept KPIs of a rule set. A handle: clones share one store, and
/// [`Rollups::join`] points a handle (a session's) at another's store, so a
/// reloaded pack reads and writes the running store.
#[derive(Clone, Default)]
pub struct Rollups {
    cell: Arc<RwLock<Arc<Mutex<Store>>>>,
}

impl fmt::Debug for Rollups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollups").finish_non_exhaustive()
    }
}

/// One kept KPI's figures, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RollupStats {
    /// dimension sets kept
    pub keys: usize,
    /// buckets kept, hourly sums included
    pub buckets: usize,
    /// dimension sets dropped at `max_keys`
    pub evicted: u64,
}

/// One kept bucket, as the BI store holds it: a KPI value ([`Rollups::restore`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValue {
    /// the KPI value's name: the KPI, or `kpi.column` for one of several values
    pub kpi: String,
    pub window_start: i64,
    pub dimensions: BTreeMap<String, String>,
    pub value: Option<f64>,
    /// a sum over the hour starting at `window_start`, for the hourly sums
    /// of what is older than `keep`
    pub hourly: bool,
}

/// What the BI store is asked for to restore one kept KPI.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptKpi {
    /// the names its values are stored under (`kpi`, or `kpi.column` each)
    pub names: Vec<String>,
    pub keep_ns: i64,
    pub hourly_ns: Option<i64>,
}

impl Rollups {
    fn store(&self) -> Arc<Mutex<Store>> {
        self.cell.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let store = self.store();
        let mut guard = store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Makes this handle (and its clones) use `other`'s store.
    pub fn join(&self, other: &Rollups) {
        let store = other.store();
        *self.cell.write().unwrap_or_else(|e| e.into_inner()) = store;
    }

    /// Declares a kept KPI (`def.rollup`); one already kept with the same
    /// window, dimensions, values and limits keeps its buckets, a changed one
    /// starts empty. Other definitions are ignored.
    pub fn define(&self, def: &Definition) {
        let Some(spec) = def.rollup else { return };
        self.with(|s| {
            let same = s
                .series
                .get(&def.id)
                .is_some_and(|old| old.same_shape(def, spec));
            if !same {
                s.series.insert(def.id.clone(), Series::of(def, spec));
            }
        });
    }

    /// Forgets kept KPIs that are no longer defined.
    pub fn retain<'a>(&self, defs: impl IntoIterator<Item = &'a Definition>) {
        let ids: Vec<&str> = defs
            .into_iter()
            .filter(|d| d.rollup.is_some())
            .map(|d| d.id.as_str())
            .collect();
        self.with(|s| s.series.retain(|id, _| ids.contains(&id.as_str())));
    }

    /// Records the findings of a kept KPI's closed windows, in the order of
    /// their windows and dimensions (what a cap on keys evicts depends on it).
    pub fn record(&self, def: &Definition, findings: &[Finding]) {
        if def.rollup.is_none() {
            return;
        }
        self.with(|s| {
            let Some(series) = s.series.get_mut(&def.id) else {
                return;
            };
            let mut rows: Vec<(i64, Vec<String>, &Vec<f64>)> = findings
                .iter()
                .map(|f| {
                    let key = series
                        .dims
                        .iter()
                        .map(|d| f.keys.get(d).cloned().unwrap_or_default())
                        .collect();
                    (f.window_start, key, &f.values)
                })
                .collect();
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            for (start, key, values) in rows {
                series.record(start, key, values.clone());
            }
        });
    }

    /// Drops the buckets no window starting at `next` or later reads (the
    /// evaluator calls it with the first window it has not evaluated).
    pub fn prune(&self, next: i64) {
        self.with(|s| {
            for series in s.series.values_mut() {
                series.prune(next);
            }
        });
    }

    /// Puts back buckets the BI store kept (`engine run --postgres`), before
    /// the first evaluation: KPI values of kept KPIs, named as the store names
    /// them. Returns how many were taken.
    pub fn restore(&self, stored: &[StoredValue]) -> usize {
        self.with(|s| {
            // (kpi, hourly, start, dimensions) -> values, in window order
            let mut rows: BTreeMap<(String, bool, i64, Vec<String>), Vec<f64>> = BTreeMap::new();
            for v in stored {
                for (id, series) in &s.series {
                    let column = if series.values.len() == 1 && v.kpi == *id {
                        Some(0)
                    } else {
                        v.kpi
                            .strip_prefix(id.as_str())
                            .and_then(|rest| rest.strip_prefix('.'))
                            .and_then(|c| series.values.iter().position(|x| x == c))
                    };
                    let Some(i) = column else { continue };
                    let key: Vec<String> = series
                        .dims
                        .iter()
                        .map(|d| v.dimensions.get(d).cloned().unwrap_or_default())
                        .collect();
                    let values = rows
                        .entry((id.clone(), v.hourly, v.window_start, key))
                        .or_insert_with(|| vec![f64::NAN; series.values.len()]);
                    values[i] = v.value.unwrap_or(f64::NAN);
                }
            }
            let taken = rows.len();
            for ((id, hourly, start, key), values) in rows {
                let Some(series) = s.series.get_mut(&id) else {
                    continue;
                };
                if hourly {
                    let kept = series.keys.entry(key).or_default();
                    let sums = kept
                        .hourly
                        .entry(start)
                        .or_insert_with(|| vec![0.0; values.len()]);
                    for (a, x) in sums.iter_mut().zip(&values) {
                        *a += finite(*x);
                    }
                    kept.newest = kept.newest.max(start);
                } else {
                    series.record(start, key, values);
                }
            }
            taken
        })
    }

    /// The kept KPIs, as the BI store names their values.
    pub fn kept(&self) -> Vec<KeptKpi> {
        self.with(|s| {
            s.series
                .iter()
                .map(|(id, series)| KeptKpi {
                    names: if series.values.len() == 1 {
                        vec![id.clone()]
                    } else {
                        series.values.iter().map(|v| format!("{id}.{v}")).collect()
                    },
                    keep_ns: series.spec.keep_ns,
                    hourly_ns: series.spec.hourly_ns,
                })
                .collect()
        })
    }

    /// Per kept KPI: dimension sets, buckets and evictions.
    pub fn stats(&self) -> BTreeMap<String, RollupStats> {
        self.with(|s| {
            s.series
                .iter()
                .map(|(id, series)| {
                    (
                        id.clone(),
                        RollupStats {
                            keys: series.keys.len(),
                            buckets: series.bucket_count(),
                            evicted: series.evicted,
                        },
                    )
                })
                .collect()
        })
    }

    /// The names and shapes of the kept KPIs, for planning.
    fn shape(&self, kpi: &str) -> Option<(Vec<String>, Vec<String>, RollupSpec, i64)> {
        self.with(|s| {
            s.series
                .get(kpi)
                .map(|x| (x.dims.clone(), x.values.clone(), x.spec, x.size_ns))
        })
    }

    fn names(&self) -> Vec<String> {
        self.with(|s| s.series.keys().cloned().collect())
    }
}

/// The windows a session is evaluating: the starts of the first and last.
/// The evaluator sets it before it runs the session's rules.
#[derive(Debug, Clone, Default)]
pub struct Frame(Arc<RwLock<Option<(i64, i64)>>>);

impl Frame {
    pub fn set(&self, first: i64, last: i64) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some((first, last));
    }

    fn windows(&self, spec: WindowSpec) -> Vec<(i64, i64)> {
        let Some((first, last)) = *self.0.read().unwrap_or_else(|e| e.into_inner()) else {
            return vec![];
        };
        let mut out = Vec::new();
        let mut start = first;
        while start <= last {
            out.push((start, start.saturating_add(spec.size_ns)));
            start = start.saturating_add(spec.slide_ns);
        }
        out
    }
}

/// What a call of a table function reads.
#[derive(Debug, Clone)]
enum Read {
    /// buckets that end within `lookback` before the window's end
    Buckets { lookback_ns: i64, hourly: bool },
    /// the mean and deviation of one value over the last `windows` buckets
    /// before the window's start, for dimension sets with `warmup` of them
    Baseline {
        value: usize,
        windows: i64,
        warmup: i64,
    },
}

/// `rollup(...)` or `baseline(...)`, registered in a session.
#[derive(Debug, Clone)]
pub struct RollupFunction {
    baseline: bool,
    rollups: Rollups,
    frame: Frame,
    spec: WindowSpec,
}

impl RollupFunction {
    /// The two table functions of a session of `spec`.
    pub fn pair(rollups: &Rollups, frame: &Frame, spec: WindowSpec) -> [(&'static str, Self); 2] {
        let make = |baseline| RollupFunction {
            baseline,
            rollups: rollups.clone(),
            frame: frame.clone(),
            spec,
        };
        [("rollup", make(false)), ("baseline", make(true))]
    }

    fn name(&self) -> &'static str {
        if self.baseline { "baseline" } else { "rollup" }
    }

    fn usage(&self) -> &'static str {
        if self.baseline {
            "baseline('kpi', 'value column', windows, warm-up windows), e.g. baseline('dos.route_traffic', 'requests', 30, 12)"
        } else {
            "rollup('kpi', 'lookback'[, 'hourly']), e.g. rollup('slo.route_minutes', '1h')"
        }
    }

    fn error(&self, message: String) -> DataFusionError {
        DataFusionError::Plan(format!(
            "{}: {message}; write {}",
            self.name(),
            self.usage()
        ))
    }
}

fn text_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

fn whole_arg(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) if n >= 0 => Some(n),
            _ => None,
        },
        _ => None,
    }
}

impl TableFunctionImpl for RollupFunction {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        let kpi = args.first().and_then(text_arg).ok_or_else(|| {
            self.error("the first argument is the kept KPI's name, as text".into())
        })?;
        let Some((dims, values, spec, size_ns)) = self.rollups.shape(&kpi) else {
            let names = self.rollups.names();
            return Err(self.error(format!(
                "no KPI keeps its values as `{kpi}` (kept: {}); a KPI is kept with `keep = \"6h\"` in its header",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        let read = if self.baseline {
            if args.len() != 4 {
                return Err(self.error(format!("{} arguments given, not 4", args.len())));
            }
            let column = text_arg(&args[1]).ok_or_else(|| {
                self.error("the second argument is a value column, as text".into())
            })?;
            let value = values.iter().position(|v| *v == column).ok_or_else(|| {
                self.error(format!(
                    "`{kpi}` has no value `{column}` (it has {})",
                    values.join(", ")
                ))
            })?;
            let windows = whole_arg(&args[2]).filter(|n| *n >= 2).ok_or_else(|| {
                self.error(
                    "the third argument is how many windows, a whole number of 2 or more".into(),
                )
            })?;
            let warmup = whole_arg(&args[3]).filter(|n| *n <= windows).ok_or_else(|| {
                self.error("the fourth argument is the warm-up, a whole number of windows at most the third".into())
            })?;
            if windows * size_ns > spec.keep_ns {
                return Err(self.error(format!(
                    "{windows} windows of `{kpi}` reach back further than it keeps (its `keep`)"
                )));
            }
            Read::Baseline {
                value,
                windows,
                warmup,
            }
        } else {
            if !(2..=3).contains(&args.len()) {
                return Err(self.error(format!("{} arguments given, not 2 or 3", args.len())));
            }
            let lookback = text_arg(&args[1])
                .ok_or_else(|| self.error("the second argument is a duration, as text".into()))?;
            let lookback_ns = parse_duration(&lookback)
                .map_err(|e| self.error(e))
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))?;
            let hourly = match args.get(2).map(text_arg) {
                None => false,
                Some(Some(h)) if h == "hourly" => true,
                Some(_) => return Err(self.error("the third argument can only be 'hourly'".into())),
            };
            let kept = if hourly {
                spec.hourly_ns.ok_or_else(|| {
                    self.error(format!(
                        "`{kpi}` keeps no hourly sums (add `keep_hourly` to its header)"
                    ))
                })?
            } else {
                spec.keep_ns
            };
            if lookback_ns > kept {
                return Err(self.error(format!(
                    "`{kpi}` keeps {} of {}, less than {lookback}",
                    human(kept),
                    if hourly { "hourly sums" } else { "windows" }
                )));
            }
            Read::Buckets {
                lookback_ns,
                hourly,
            }
        };
        let mut fields = vec![
            Field::new("window_start", time_type(), false),
            Field::new("window_end", time_type(), false),
        ];
        if matches!(read, Read::Buckets { .. }) {
            fields.push(Field::new("bucket_start", time_type(), false));
            fields.push(Field::new("bucket_end", time_type(), false));
        }
        fields.extend(
            dims.iter()
                .map(|d| Field::new(column_name(d), DataType::Utf8, false)),
        );
        match &read {
            Read::Buckets { .. } => fields.extend(
                values
                    .iter()
                    .map(|v| Field::new(v, DataType::Float64, true)),
            ),
            Read::Baseline { .. } => {
                fields.push(Field::new("mean", DataType::Float64, false));
                fields.push(Field::new("stddev", DataType::Float64, true));
                fields.push(Field::new("n", DataType::Int64, false));
            }
        }
        Ok(Arc::new(RollupTable {
            kpi,
            read,
            size_ns,
            schema: Arc::new(Schema::new(fields)),
            rollups: self.rollups.clone(),
            frame: self.frame.clone(),
            spec: self.spec,
        }))
    }
}

fn human(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A call of `rollup(...)` or `baseline(...)`: its rows are made from the
/// store when the plan runs.
#[derive(Debug, Clone)]
struct RollupTable {
    kpi: String,
    read: Read,
    /// the kept KPI's window
    size_ns: i64,
    schema: SchemaRef,
    rollups: Rollups,
    frame: Frame,
    /// the reading session's windows
    spec: WindowSpec,
}

impl RollupTable {
    /// The rows for the windows of the current frame.
    fn rows(&self) -> DfResult<RecordBatch> {
        let windows = self.frame.windows(self.spec);
        let store = self.rollups.store();
        let store = store.lock().unwrap_or_else(|e| e.into_inner());
        let Some(series) = store.series.get(&self.kpi) else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        let utc = || TimestampNanosecondBuilder::new().with_timezone("UTC");
        let (mut w_start, mut w_end) = (utc(), utc());
        let (mut b_start, mut b_end) = (utc(), utc());
        let mut dims: Vec<StringBuilder> =
            series.dims.iter().map(|_| StringBuilder::new()).collect();
        let mut values: Vec<Float64Builder> = series
            .values
            .iter()
            .map(|_| Float64Builder::new())
            .collect();
        let (mut mean, mut stddev, mut count) = (
            Float64Builder::new(),
            Float64Builder::new(),
            Int64Builder::new(),
        );
        let push_key = |dims: &mut Vec<StringBuilder>, key: &[String]| {
            for (b, v) in dims.iter_mut().zip(key) {
                b.append_value(v);
            }
        };
        for (start, end) in windows {
            for (key, kept) in &series.keys {
                match &self.read {
                    Read::Buckets {
                        lookback_ns,
                        hourly,
                    } => {
                        // buckets within (end - lookback, end]
                        let from = end.saturating_sub(*lookback_ns);
                        let mut rows: Vec<(i64, i64, Vec<f64>)> = Vec::new();
                        if *hourly {
                            // whole hours from the sums; the hour in progress
                            // from its windows so far (the sums may already
                            // hold later windows of a batch evaluated at once)
                            let hour = end.div_euclid(HOUR) * HOUR;
                            if hour - HOUR >= from {
                                rows.extend(
                                    kept.hourly
                                        .range(from..=hour - HOUR)
                                        .map(|(b, v)| (*b, b + HOUR, v.clone())),
                                );
                            }
                            let mut sums: Option<Vec<f64>> = None;
                            // (none when the window ends on the hour)
                            let (first, last) = (hour.max(from), end - self.size_ns);
                            let partial = (first <= last).then(|| kept.buckets.range(first..=last));
                            for (_, v) in partial.into_iter().flatten() {
                                let acc = sums.get_or_insert_with(|| vec![0.0; v.len()]);
                                for (a, x) in acc.iter_mut().zip(v) {
                                    *a += finite(*x);
                                }
                            }
                            if let Some(v) = sums {
                                rows.push((hour.max(from), end, v));
                            }
                        } else if end - self.size_ns >= from {
                            rows.extend(
                                kept.buckets
                                    .range(from..=end - self.size_ns)
                                    .map(|(b, v)| (*b, b + self.size_ns, v.clone())),
                            );
                        }
                        for (b, e, v) in rows {
                            w_start.append_value(start);
                            w_end.append_value(end);
                            b_start.append_value(b);
                            b_end.append_value(e);
                            push_key(&mut dims, key);
                            for (builder, x) in values.iter_mut().zip(&v) {
                                builder.append_option(x.is_finite().then_some(*x));
                            }
                        }
                    }
                    Read::Baseline {
                        value,
                        windows,
                        warmup,
                    } => {
                        let from = start.saturating_sub(windows * self.size_ns);
                        let to = start - self.size_ns;
                        if to < from {
                            continue;
                        }
                        let xs: Vec<f64> = kept
                            .buckets
                            .range(from..=to)
                            .filter_map(|(_, v)| v.get(*value).copied())
                            .filter(|x| x.is_finite())
                            .collect();
                        let n = xs.len() as i64;
                        if n < *warmup || n == 0 {
                            continue;
                        }
                        let m = xs.iter().sum::<f64>() / n as f64;
                        let sd = (n >= 2).then(|| {
                            (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64)
                                .sqrt()
                        });
                        w_start.append_value(start);
                        w_end.append_value(end);
                        push_key(&mut dims, key);
                        mean.append_value(m);
                        stddev.append_option(sd);
                        count.append_value(n);
                    }
                }
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(w_start.finish()), Arc::new(w_end.finish())];
        match self.read {
            Read::Buckets { .. } => {
                columns.push(Arc::new(b_start.finish()));
                columns.push(Arc::new(b_end.finish()));
                columns.extend(dims.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
                columns.extend(values.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
            }
            Read::Baseline { .. } => {
                columns.extend(dims.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
                columns.push(Arc::new(mean.finish()));
                columns.push(Arc::new(stddev.finish()));
                columns.push(Arc::new(count.finish()));
            }
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for RollupTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&projection)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(RollupExec {
            table: self.clone(),
            projection,
            schema,
            properties: Arc::new(properties),
        }))
    }
}

/// The scan of a [`RollupTable`]: reads the store when executed, so a plan
/// made once reads the buckets of every later evaluation.
#[derive(Debug)]
struct RollupExec {
    table: RollupTable,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for RollupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = match self.table.read {
            Read::Buckets { .. } => "rollup",
            Read::Baseline { .. } => "baseline",
        };
        write!(f, "RollupExec: {kind}({})", self.table.kpi)
    }
}

impl ExecutionPlan for RollupExec {
    fn name(&self) -> &str {
        "RollupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "RollupExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RollupExec has one partition, not {}",
                partition + 1
            )));
        }
        let batch = self.table.rows()?.project(&self.projection)?;
        Ok(Box::pin(MemoryStream::try_new(
            vec![batch],
            self.schema.clone(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests;
