//! The tables rules read: a table of one window spec whose rows are the
//! buffered rows of the windows being evaluated.
//!
//! Rows are put into their windows inside the scan, after the query's own
//! filters and projection, not before: a rule that reads login events copies
//! the login events, and only the columns it names, once per window they are
//! in, instead of every span and log record with all its attributes. A hopping
//! window of size/slide = k places each row k times, so that copy is where a
//! rule's cost grows.
//!
//! The scan reads the rows when it is executed, not when it is planned, so a
//! rule's physical plan is made once and run again for every evaluation.
//!
//! What a scan keeps of a buffered batch (the rows its filters pass, the
//! columns it reads, and the event time) is made once per batch and kept while
//! the batch is buffered, shared by every scan with the same filters and
//! columns. A batch stays in the buffer for as many evaluations as a window
//! has slides (40 for ten minutes every 15 s), and rules of a pack often
//! filter alike, so the filters run once per batch rather than once per
//! evaluation and rule.
//!
//! The buffer keeps of each table only the columns some loaded rule or KPI
//! reads ([`columns_read`]); a scan that reads a column a buffered batch
//! lacks (a rule added by a reload, reading a column no rule read before)
//! sees it null in those rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{Array, ArrayRef, BooleanArray, new_null_array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use ingest::Table;

use crate::window::{self, Buffered, WindowSpec};

/// The columns of spans and logs the sample traces of firing alerts show
/// (`samples.rs` reads them by name): kept whatever the rules read.
const SAMPLE_COLUMNS: [(Table, &[&str]); 2] = [
    (
        Table::Spans,
        &[
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "service_name",
            "time",
            "end_time",
            "status_code",
            "http_request_method",
            "http_route",
            "http_response_status_code",
            "client_address",
            "user_agent_original",
            "db_operation_name",
        ],
    ),
    (
        Table::Logs,
        &[
            "trace_id",
            "span_id",
            "time",
            "severity_text",
            "event_name",
            "body",
        ],
    ),
];

/// Per table the plans scan, the columns they read: the columns each scan
/// gives (its projection, after optimization) and those its pushed filters
/// name, plus what sample traces show ([`SAMPLE_COLUMNS`]). `None`: every
/// column (a scan with no projection, as `SELECT *` may give). The `events`
/// view reads `logs`; scans inside subqueries count.
pub fn columns_read<'a>(
    plans: impl IntoIterator<Item = &'a LogicalPlan>,
) -> BTreeMap<Table, Option<BTreeSet<String>>> {
    let mut out: BTreeMap<Table, Option<BTreeSet<String>>> = BTreeMap::new();
    for plan in plans {
        let _ = plan.apply_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = node else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let name = scan.table_name.table();
            let Some(table) = Table::ALL
                .into_iter()
                .find(|t| t.name() == name || (name == "events" && *t == Table::Logs))
            else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let entry = out.entry(table).or_insert_with(|| Some(BTreeSet::new()));
            match (entry, &scan.projection) {
                (Some(columns), Some(_)) => {
                    columns.extend(
                        scan.projected_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().clone()),
                    );
                    for f in &scan.filters {
                        columns.extend(f.column_refs().into_iter().map(|c| c.name.clone()));
                    }
                }
                (entry, None) => *entry = None,
                (None, Some(_)) => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    for (table, columns) in SAMPLE_COLUMNS {
        if let Some(Some(read)) = out.get_mut(&table) {
            read.extend(columns.iter().map(|c| c.to_string()));
        }
    }
    out
}

/// Tells the decoders whether to build `resource_attributes`
/// ([`ingest::decode::set_resource_attributes`]): only when a plan reads it.
pub fn decode_what_is_read(rules: &super::RuleSet) {
    let plans = rules.rules.iter().map(|r| &r.plan);
    let read = columns_read(plans).values().any(|columns| {
        columns
            .as_ref()
            .is_none_or(|c| c.contains("resource_attributes"))
    });
    ingest::decode::set_resource_attributes(read);
}

/// The columns `indices` of the table `raw` out of `batch`, a buffered
/// batch of that table, by name: a column the batch lacks (the buffer did
/// not keep it, see [`window::Buffer::keep_columns`]) is all null. With
/// `plain`, text the buffer shares ([`window::share_repeated_text`]) is made
/// plain again, as the table's schema has it (what a filter reads); else it
/// stays shared until [`window::expand`] copies it into windows.
fn columns_of(
    batch: &RecordBatch,
    raw: &SchemaRef,
    indices: &[usize],
    plain: bool,
) -> DfResult<RecordBatch> {
    let mut fields = Vec::with_capacity(indices.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(indices.len());
    for &i in indices {
        let field = raw.field(i);
        let column = match batch.column_by_name(field.name()) {
            Some(c) if plain && c.data_type() != field.data_type() => {
                arrow::compute::cast(c, field.data_type())?
            }
            Some(c) => c.clone(),
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        fields.push(field.clone().with_data_type(column.data_type().clone()));
        columns.push(column);
    }
    let options =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// The rows of one evaluation: the buffered batches that may hold rows of the
/// windows starting in `[first, last]`.
#[derive(Debug, Clone, Default)]
struct Rows {
    batches: Vec<Buffered>,
    first: i64,
    last: i64,
}

/// What the scans made of the buffered batches: per scan key (its filter and
/// columns), per batch id, the kept rows (`None`: no row passed).
#[derive(Debug, Default)]
struct Kept(
    HashMap<Arc<str>, HashMap<u64, Option<RecordBatch>>>,
    /// per (batch id, column of the table), the plain text of a column the
    /// buffer shares, made for the filters of the current evaluation: the
    /// scans of a session's rules filter the same new batches, often on the
    /// same columns. Forgotten at the next evaluation.
    HashMap<(u64, usize), ArrayRef>,
);

impl Kept {
    /// Forgets the batches that are no longer buffered, and the plain text
    /// made for the last evaluation's filters.
    fn retain(&mut self, ids: &std::collections::HashSet<u64>) {
        for per_batch in self.0.values_mut() {
            per_batch.retain(|id, _| ids.contains(id));
        }
        self.1.clear();
    }
}

/// The filter's input of a buffered batch: the columns `indices` of the table
/// `raw`, as [`columns_of`] makes them plain, the plain text of a shared
/// column made once per evaluation for all the session's scans.
fn filter_input(
    b: &Buffered,
    raw: &SchemaRef,
    indices: &[usize],
    kept: &Mutex<Kept>,
) -> DfResult<RecordBatch> {
    let shared = columns_of(&b.batch, raw, indices, false)?;
    let mut fields = Vec::with_capacity(indices.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(indices.len());
    for (&i, column) in indices.iter().zip(shared.columns()) {
        let field = raw.field(i);
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            let made = kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .get(&(b.id, i))
                .cloned();
            match made {
                Some(c) => c,
                None => {
                    let c = arrow::compute::cast(column, field.data_type())?;
                    kept.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .1
                        .insert((b.id, i), c.clone());
                    c
                }
            }
        };
        fields.push(field.clone());
        columns.push(column);
    }
    let options =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(b.batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// A windowed table of one spec whose rows are swapped in before each evaluation.
pub struct SnapshotTable {
    spec: WindowSpec,
    /// the table's own columns
    raw: SchemaRef,
    /// `window_start`, `window_end`, then the table's columns
    windowed: SchemaRef,
    rows: Arc<RwLock<Arc<Rows>>>,
    kept: Arc<Mutex<Kept>>,
}

impl fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotTable")
            .field("spec", &self.spec)
            .field("columns", &self.raw.fields().len())
            .finish()
    }
}

impl SnapshotTable {
    pub fn new(raw: SchemaRef, spec: WindowSpec) -> Self {
        SnapshotTable {
            spec,
            windowed: window::windowed_schema(&raw),
            raw,
            rows: Arc::new(RwLock::new(Arc::new(Rows::default()))),
            kept: Arc::new(Mutex::new(Kept::default())),
        }
    }

    /// Makes the windows starting in `[first, last]` over `batches` (the
    /// table's own rows; rows outside those windows are ignored) the table's rows.
    pub fn set(&self, batches: Vec<Buffered>, first: i64, last: i64) {
        let ids = batches.iter().map(|b| b.id).collect();
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(&ids);
        *self.rows.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rows {
            batches,
            first,
            last,
        });
    }

    /// Empties the table.
    pub fn clear(&self) {
        *self.rows.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rows::default());
    }
}

/// Whether a filter can run on a row before it is put into windows: it must not
/// read the window columns, must give the same answer for the same row, and
/// must stand alone (no subquery).
fn before_windows(expr: &Expr) -> bool {
    let subquery = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
            ))
        })
        .unwrap_or(true);
    !subquery
        && !expr.is_volatile()
        && expr
            .column_refs()
            .iter()
            .all(|c| c.name != "window_start" && c.name != "window_end")
}

/// `expr` with its columns unqualified: a filter pushed through the `events`
/// view or an alias names them `logs.x` or `l.x`; the scan knows them as `x`.
fn unqualified(expr: Expr) -> DfResult<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        e => Ok(Transformed::no(e)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.windowed.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if before_windows(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.windowed.fields().len()).collect(),
        };
        let schema = Arc::new(self.windowed.project(&projection)?);
        // The filter sees only the columns it reads: DataFusion's AND may
        // narrow its input batch between terms, and a narrower batch is cheaper
        // to narrow (spans carry maps of attributes).
        let filter = match conjunction(filters.iter().cloned()) {
            Some(expr) => {
                let expr = unqualified(expr)?;
                let mut columns: Vec<usize> = expr
                    .column_refs()
                    .iter()
                    .map(|c| self.raw.index_of(&c.name))
                    .collect::<Result<_, _>>()?;
                columns.sort_unstable();
                columns.dedup();
                let df_schema = DFSchema::try_from(self.raw.project(&columns)?)?;
                Some(Filter {
                    columns,
                    expr: state.create_physical_expr(expr, &df_schema)?,
                })
            }
            None => None,
        };
        // what is kept of a batch: its event time, then the columns read
        let time = window::times_index(&self.raw)?;
        let mut kept_columns = vec![time];
        for &p in &projection {
            if p >= 2 && p - 2 != time && !kept_columns.contains(&(p - 2)) {
                kept_columns.push(p - 2);
            }
        }
        let kept_projection = projection
            .iter()
            .map(|&p| {
                if p < 2 {
                    p
                } else {
                    2 + kept_columns.iter().position(|&c| c == p - 2).unwrap_or(0)
                }
            })
            .collect();
        let key: Arc<str> = format!(
            "{} | {:?}",
            filter.as_ref().map_or("true".to_string(), |f| format!(
                "{:?} {}",
                f.columns, f.expr
            )),
            kept_columns
        )
        .into();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(SnapshotExec {
            spec: self.spec,
            panes: false,
            pane_range: PaneRange::default(),
            rows: self.rows.clone(),
            kept: self.kept.clone(),
            raw: self.raw.clone(),
            key,
            kept_columns,
            kept_projection,
            projection,
            schema,
            filter,
            limit,
            properties: Arc::new(properties),
        }))
    }
}

/// Where a plan finds the range of windows of the current evaluation.
#[derive(Debug, Clone)]
pub struct RangeSource(Arc<RwLock<Arc<Rows>>>);

impl RangeSource {
    /// The starts of the first and last window being evaluated.
    pub fn get(&self) -> (i64, i64) {
        let rows = self.0.read().unwrap_or_else(|e| e.into_inner());
        (rows.first, rows.last)
    }

    /// The largest id of the batches pushed that the current rows hold, and
    /// the earliest event time of those whose id is above `seen` (None:
    /// there are none). By the batches as pushed ([`Buffered::parts`]): the
    /// buffer joining small batches is not rows arriving.
    pub fn newer_than(&self, seen: Option<u64>) -> (Option<u64>, Option<i64>) {
        let rows = self.0.read().unwrap_or_else(|e| e.into_inner());
        let parts = || rows.batches.iter().flat_map(|b| b.parts.iter());
        let newest = parts().map(|(id, _)| *id).max();
        let earliest = parts()
            .filter(|(id, _)| seen.is_none_or(|s| *id > s))
            .map(|(_, min)| *min)
            .min();
        (newest, earliest)
    }
}

/// The panes a pane scan gives when set: the starts of its first and last
/// pane, instead of every pane of the windows being evaluated.
#[derive(Debug, Clone, Default)]
pub struct PaneRange(Arc<RwLock<Option<(i64, i64)>>>);

impl PaneRange {
    pub fn set(&self, range: Option<(i64, i64)>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = range;
    }

    fn get(&self) -> Option<(i64, i64)> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A filter pushed into the scan: its expression over the table's columns
/// `columns` (in that order).
#[derive(Debug, Clone)]
struct Filter {
    columns: Vec<usize>,
    expr: Arc<dyn PhysicalExpr>,
}

/// The scan of a [`SnapshotTable`]: filters the current rows, places them in
/// their windows and projects them, when executed.
#[derive(Debug)]
pub struct SnapshotExec {
    spec: WindowSpec,
    /// each row once, in the slide-long pane it falls in, instead of in every
    /// window (see [`super::panes`])
    panes: bool,
    /// in panes, the panes to give, when set (see [`super::panes`])
    pane_range: PaneRange,
    rows: Arc<RwLock<Arc<Rows>>>,
    kept: Arc<Mutex<Kept>>,
    /// the table's own columns
    raw: SchemaRef,
    /// names what this scan keeps of a batch: scans with the same key share it
    key: Arc<str>,
    /// the table columns kept of a batch: the event time first
    kept_columns: Vec<usize>,
    /// `projection` over the kept rows' columns instead of the table's
    kept_projection: Vec<usize>,
    projection: Vec<usize>,
    schema: SchemaRef,
    filter: Option<Filter>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl SnapshotExec {
    /// The same scan, giving each row once in its pane: the slide-long
    /// interval `[p, p + slide)` it falls in, as `window_start`/`window_end`,
    /// for every pane of the windows being evaluated.
    pub fn as_panes(&self) -> Option<SnapshotExec> {
        if self.panes || self.limit.is_some() {
            return None;
        }
        Some(SnapshotExec {
            spec: self.spec,
            panes: true,
            pane_range: PaneRange::default(),
            rows: self.rows.clone(),
            kept: self.kept.clone(),
            raw: self.raw.clone(),
            key: self.key.clone(),
            kept_columns: self.kept_columns.clone(),
            kept_projection: self.kept_projection.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            filter: self.filter.clone(),
            limit: None,
            properties: self.properties.clone(),
        })
    }

    /// The handle that narrows a pane scan to some of its panes.
    pub fn pane_range(&self) -> PaneRange {
        self.pane_range.clone()
    }

    /// A handle on the window range that follows every new set of rows.
    pub fn range_source(&self) -> RangeSource {
        RangeSource(self.rows.clone())
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The rows of `batch` the filter passes, with the kept columns; `None`
    /// if none passes. Rows a filter picks out are a copy, made of plain text
    /// (what every evaluation then copies into windows); when every row
    /// passes, the kept rows are the buffer's own columns, text shared.
    fn keep(&self, b: &Buffered) -> DfResult<Option<RecordBatch>> {
        let batch = &b.batch;
        let columns = columns_of(batch, &self.raw, &self.kept_columns, false)?;
        let Some(filter) = &self.filter else {
            return Ok(Some(columns));
        };
        let input = filter_input(b, &self.raw, &filter.columns, &self.kept)?;
        let mask = filter.expr.evaluate(&input)?.into_array(batch.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("a pushed filter is not boolean".into()))?;
        Ok(match mask.true_count() {
            0 => None,
            n if n == batch.num_rows() => Some(columns),
            _ => Some(columns_of(
                &filter_record_batch(&columns, mask)?,
                &self.raw,
                &self.kept_columns,
                true,
            )?),
        })
    }

    fn windowed_rows(&self) -> DfResult<Vec<RecordBatch>> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (spec, first, last) = if self.panes {
            let pane = WindowSpec {
                size_ns: self.spec.slide_ns,
                slide_ns: self.spec.slide_ns,
            };
            let last_pane = rows.last + self.spec.size_ns - self.spec.slide_ns;
            let (first, last) = self.pane_range.get().unwrap_or((rows.first, last_pane));
            (pane, first, last)
        } else {
            (self.spec, rows.first, rows.last)
        };
        let mut out = Vec::new();
        let mut left = self.limit.unwrap_or(usize::MAX);
        // what is kept of each batch; the lock is held only to look up and to
        // store, as other rules' scans may run at the same time (two scans
        // alike may then both make a batch's rows once: the same rows)
        let known: Vec<Option<Option<RecordBatch>>> = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let kept = kept.0.entry(self.key.clone()).or_default();
            rows.batches
                .iter()
                .map(|b| kept.get(&b.id).cloned())
                .collect()
        };
        let mut made = Vec::new();
        let mut per_batch = Vec::with_capacity(known.len());
        for (b, known) in rows.batches.iter().zip(known) {
            per_batch.push(match known {
                Some(rows) => rows,
                None => {
                    let rows = self.keep(b)?;
                    made.push((b.id, rows.clone()));
                    rows
                }
            });
        }
        if !made.is_empty() {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.0.entry(self.key.clone()).or_default().extend(made);
        }
        for rows in &per_batch {
            if left == 0 {
                break;
            }
            let Some(rows) = rows.as_ref() else {
                continue;
            };
            if let Some(w) =
                window::expand(rows, spec, first, last, &self.kept_projection, &self.schema)?
            {
                let w = if w.num_rows() > left {
                    w.slice(0, left)
                } else {
                    w
                };
                left -= w.num_rows();
                out.push(w);
            }
        }
        Ok(out)
    }
}

impl DisplayAs for SnapshotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SnapshotExec: {}projection={:?}, filter={}",
            if self.panes { "panes, " } else { "" },
            self.projection,
            self.filter
                .as_ref()
                .map_or("none".to_string(), |f| f.expr.to_string())
        )
    }
}

impl ExecutionPlan for SnapshotExec {
    fn name(&self) -> &str {
        "SnapshotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.filter {
            Some(filter) => f(&filter.expr),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "SnapshotExec has no children".into(),
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
                "SnapshotExec has one partition, not {}",
                partition + 1
            )));
        }
        let batches = self.windowed_rows()?;
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema.clone(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    use datafusion::physical_plan::displayable;
    use ingest::Table;

    use super::*;
    use crate::rules::WindowSession;
    use crate::testutil::{S, T0, spans};

    const HOPPING: WindowSpec = WindowSpec {
        size_ns: 60 * S,
        slide_ns: 30 * S,
    };

    /// (window start in s after T0, count) rows of a `SELECT window_start, count`.
    fn counts(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let starts = b
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let n = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push(((starts.value(i) - T0) / S, n.value(i)));
            }
        }
        out.sort();
        out
    }

    /// `counts` of `sql` run once over the session's rows.
    async fn counted(s: &WindowSession, sql: &str) -> Vec<(i64, i64)> {
        let plan = s.plan(sql).await.expect("plans");
        counts(
            &s.execute(&plan, &Mutex::new(None), false)
                .await
                .expect("runs"),
        )
    }

    async fn session_with(rows: RecordBatch, first: i64, last: i64) -> WindowSession {
        let s = WindowSession::new(HOPPING).await.expect("a session");
        s.tables[&Table::Spans].set(vec![Buffered::new(rows).unwrap()], first, last);
        s
    }

    #[tokio::test]
    async fn a_filter_runs_on_rows_before_they_are_put_in_windows() {
        let rows = spans(&[(10.0, "a"), (40.0, "b"), (45.0, "a"), (70.0, "a")]);
        let s = session_with(rows, T0 - 30 * S, T0 + 60 * S).await;
        let sql =
            "SELECT window_start, count(*) AS n FROM spans WHERE client_address = 'a' GROUP BY 1";
        let plan = s.plan(sql).await.expect("plans");
        let physical = Mutex::new(None);
        let got = counts(&s.execute(&plan, &physical, false).await.expect("runs"));
        // a at 10 s is in [-30, 30) and [0, 60); at 45 s in [0, 60) and [30, 90);
        // at 70 s in [30, 90) and [60, 120)
        assert_eq!(got, vec![(-30, 1), (0, 2), (30, 2), (60, 1)]);
        let kept = physical.lock().unwrap().clone().expect("the plan is kept");
        let shown = displayable(kept.as_ref()).indent(true).to_string();
        assert!(
            shown.contains("SnapshotExec") && shown.contains("client_address@"),
            "the filter is not in the scan:\n{shown}"
        );
        assert!(
            !shown.contains("FilterExec"),
            "a filter stayed above the scan:\n{shown}"
        );
    }

    #[tokio::test]
    async fn a_filter_on_the_window_stays_above_the_scan() {
        let rows = spans(&[(10.0, "a"), (45.0, "a")]);
        let s = session_with(rows, T0 - 30 * S, T0 + 30 * S).await;
        let sql = format!(
            "SELECT window_start, count(*) AS n FROM spans WHERE window_start >= to_timestamp_nanos({}) GROUP BY 1",
            T0
        );
        let plan = s.plan(&sql).await.expect("plans");
        let got = counts(
            &s.execute(&plan, &Mutex::new(None), false)
                .await
                .expect("runs"),
        );
        assert_eq!(got, vec![(0, 2), (30, 1)]);
    }

    #[tokio::test]
    async fn a_filter_with_a_subquery_gives_the_same_answer() {
        let rows = spans(&[(10.0, "a"), (20.0, "a"), (25.0, "b")]);
        let s = session_with(rows, T0, T0).await;
        let sql = "SELECT window_start, count(*) AS n FROM spans \
                   WHERE client_address IN (SELECT client_address FROM spans \
                   GROUP BY client_address HAVING count(*) > 1) GROUP BY 1";
        assert_eq!(counted(&s, sql).await, vec![(0, 2)]);
    }

    #[tokio::test]
    async fn a_kept_plan_reads_the_rows_of_each_run() {
        // a self-join: its hash table must be rebuilt from the new rows
        let s = session_with(spans(&[(10.0, "a"), (20.0, "a")]), T0, T0).await;
        let sql = "SELECT x.window_start, count(*) AS n FROM spans x JOIN spans y \
                   ON x.window_start = y.window_start AND x.client_address = y.client_address \
                   AND x.time < y.time GROUP BY 1";
        let plan = s.plan(sql).await.expect("plans");
        let physical = Mutex::new(None);
        let first = counts(&s.execute(&plan, &physical, false).await.expect("runs"));
        assert_eq!(first, vec![(0, 1)]);
        s.tables[&Table::Spans].set(
            vec![Buffered::new(spans(&[(1.0, "b"), (2.0, "b"), (3.0, "b")])).unwrap()],
            T0,
            T0,
        );
        let second = counts(
            &s.execute(&plan, &physical, false)
                .await
                .expect("runs again"),
        );
        assert_eq!(second, vec![(0, 3)]);
        s.tables[&Table::Spans].clear();
        let empty = s
            .execute(&plan, &physical, false)
            .await
            .expect("runs on nothing");
        assert_eq!(empty.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    #[tokio::test]
    async fn scans_alike_share_what_they_keep_and_forget_batches_gone_from_the_buffer() {
        let a = Buffered::new(spans(&[(10.0, "a"), (20.0, "b")])).unwrap();
        let s = WindowSession::new(HOPPING).await.expect("a session");
        let table = &s.tables[&Table::Spans];
        table.set(vec![a.clone()], T0, T0);
        // the same filter and columns in two queries: one kept entry
        let one =
            "SELECT window_start, count(*) AS n FROM spans WHERE client_address = 'a' GROUP BY 1";
        let two = "SELECT window_start, count(*) AS m FROM spans WHERE client_address = 'a' GROUP BY 1 HAVING count(*) > 0";
        for sql in [one, two] {
            let plan = s.plan(sql).await.expect("plans");
            let got = counts(
                &s.execute(&plan, &Mutex::new(None), false)
                    .await
                    .expect("runs"),
            );
            assert_eq!(got, vec![(0, 1)]);
        }
        let kept_ids = |t: &SnapshotTable| -> Vec<Vec<u64>> {
            let kept = t.kept.lock().unwrap();
            kept.0
                .values()
                .map(|m| m.keys().copied().collect())
                .collect()
        };
        assert_eq!(kept_ids(table), vec![vec![a.id]]);
        let b = Buffered::new(spans(&[(40.0, "a")])).unwrap();
        table.set(vec![b.clone()], T0, T0);
        assert_eq!(kept_ids(table), vec![Vec::<u64>::new()]);
        let plan = s.plan(one).await.expect("plans");
        let got = counts(
            &s.execute(&plan, &Mutex::new(None), false)
                .await
                .expect("runs"),
        );
        assert_eq!(got, vec![(0, 1)]);
        assert_eq!(kept_ids(table), vec![vec![b.id]]);
    }

    #[tokio::test]
    async fn the_columns_read_are_the_scans_projections_and_pushed_filters() {
        let s = WindowSession::new(HOPPING).await.expect("a session");
        let plan = s
            .plan(
                "SELECT window_start, client_address, count(*) AS n FROM spans \
                 WHERE user_agent_original = 'x' GROUP BY 1, 2",
            )
            .await
            .expect("plans");
        let events = s
            .plan("SELECT window_start, count(*) AS n FROM events WHERE shop_auth_outcome = 'failure' GROUP BY 1")
            .await
            .expect("plans");
        let read = columns_read([&plan, &events]);
        let spans = read[&Table::Spans].as_ref().expect("a projection");
        for c in [
            "client_address",
            "user_agent_original",
            "trace_id",
            "span_id",
        ] {
            assert!(spans.contains(c), "{c} in {spans:?}");
        }
        assert!(!spans.contains("resource_attributes"), "{spans:?}");
        assert!(!spans.contains("attributes"), "{spans:?}");
        let logs = read[&Table::Logs].as_ref().expect("a projection");
        for c in ["shop_auth_outcome", "event_name", "body"] {
            assert!(logs.contains(c), "{c} in {logs:?}");
        }
        assert!(!read.contains_key(&Table::Metrics));
    }

    #[tokio::test]
    async fn a_scan_reads_a_column_a_buffered_batch_lacks_as_nulls() {
        let rows = spans(&[(10.0, "a"), (20.0, "b")]);
        let kept: Vec<usize> = ["end_time", "time", "trace_id"]
            .iter()
            .map(|c| rows.schema().index_of(c).unwrap())
            .collect();
        let narrow = rows.project(&kept).unwrap();
        let s = WindowSession::new(HOPPING).await.expect("a session");
        s.tables[&Table::Spans].set(vec![Buffered::new(narrow).unwrap()], T0, T0);
        let sql =
            "SELECT window_start, count(*) AS n FROM spans WHERE client_address IS NULL GROUP BY 1";
        assert_eq!(counted(&s, sql).await, vec![(0, 2)]);
    }

    #[test]
    fn sample_traces_are_the_same_from_the_columns_kept() {
        let rows = spans(&[(10.0, "a"), (20.0, "b")]);
        let keep = &SAMPLE_COLUMNS[0].1;
        let kept: Vec<usize> = (0..rows.num_columns())
            .filter(|&i| {
                let f = rows.schema().field(i).clone();
                !f.is_nullable() || keep.contains(&f.name().as_str())
            })
            .collect();
        let narrow = rows.project(&kept).unwrap();
        let id = format!("{:032x}", 10_000 + 1);
        let mut full = crate::samples::Samples::default();
        full.keep(&[&id], [&rows].into_iter(), std::iter::empty());
        let mut from_kept = crate::samples::Samples::default();
        from_kept.keep(&[&id], [&narrow].into_iter(), std::iter::empty());
        assert!(full.get(&id).is_some());
        assert_eq!(full.get(&id), from_kept.get(&id));
    }

    #[test]
    fn expand_copies_only_the_projected_columns() {
        let rows = spans(&[(10.0, "a"), (45.0, "b")]);
        let windowed = window::windowed_schema(&rows.schema());
        let client = windowed.index_of("client_address").unwrap();
        let projection = vec![0, client];
        let schema = Arc::new(windowed.project(&projection).unwrap());
        let out = window::expand(
            &rows,
            HOPPING,
            T0 - 30 * S,
            T0 + 30 * S,
            &projection,
            &schema,
        )
        .unwrap()
        .expect("rows in the windows");
        assert_eq!(out.num_columns(), 2);
        // a: [-30, 30) and [0, 60); b: [0, 60) and [30, 90)
        assert_eq!(out.num_rows(), 4);
        let clients = out.column(1).as_string::<i32>();
        let mut pairs: Vec<(i64, String)> = (0..4)
            .map(|i| {
                let start = out
                    .column(0)
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .value(i);
                ((start - T0) / S, clients.value(i).to_string())
            })
            .collect();
        pairs.sort();
        let want: Vec<(i64, String)> = [(-30, "a"), (0, "a"), (0, "b"), (30, "b")]
            .iter()
            .map(|(s, c)| (*s, c.to_string()))
            .collect();
        assert_eq!(pairs, want);
        assert!(!out.column(1).is_empty());
    }

    /// Text the buffer shares (a dictionary per batch) reads, filters, groups
    /// and comes out as the plain text it was, in the plain and the pane plan.
    #[tokio::test]
    async fn shared_text_gives_the_answers_of_plain_text() {
        let clients = ["a", "b", "c", "10.0.0.1", "10.0.0.2"];
        let at: Vec<(f64, &str)> = (0..window::COMPACT_ROWS + 100)
            .map(|i| ((i % 1800) as f64 / 10.0, clients[i * 7 % 5]))
            .collect();
        let plain = spans(&at);
        let shared = window::share_repeated_text(plain.clone()).unwrap();
        let client = shared.column_by_name("client_address").unwrap();
        assert!(
            matches!(
                client.data_type(),
                arrow::datatypes::DataType::Dictionary(_, _)
            ),
            "{:?}",
            client.data_type()
        );
        assert!(shared.get_array_memory_size() < plain.get_array_memory_size());
        // ids are never tried
        assert_eq!(
            shared.column_by_name("trace_id").unwrap().data_type(),
            &arrow::datatypes::DataType::Utf8
        );
        let sql = "SELECT window_start, client_address, count(*) AS n, \
                   count(DISTINCT trace_id) AS traces, min(client_address) AS least \
                   FROM spans WHERE client_address <> 'c' AND client_address LIKE '%0%' \
                   GROUP BY 1, 2";
        let mut answers = Vec::new();
        for (rows, panes) in [(&plain, false), (&shared, false), (&shared, true)] {
            let s = session_with(rows.clone(), T0 - 30 * S, T0 + 120 * S).await;
            let plan = s.plan(sql).await.expect("plans");
            let out = s
                .execute(&plan, &Mutex::new(None), panes)
                .await
                .expect("runs");
            assert!(
                out.iter()
                    .all(|b| { b.column(1).data_type() == &arrow::datatypes::DataType::Utf8 })
            );
            let text = arrow::util::pretty::pretty_format_batches(&out)
                .unwrap()
                .to_string();
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            lines.sort();
            answers.push(lines);
        }
        assert!(answers[0].len() > 10, "{:?}", answers[0]);
        assert_eq!(answers[0], answers[1], "plain against shared");
        assert_eq!(answers[0], answers[2], "plain against shared, in panes");
    }
}
