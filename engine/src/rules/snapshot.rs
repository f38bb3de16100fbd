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

use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, BooleanArray};
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
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use crate::window::{self, WindowSpec};

/// The rows of one evaluation: the buffered batches that may hold rows of the
/// windows starting in `[first, last]`.
#[derive(Debug, Clone, Default)]
struct Rows {
    batches: Vec<RecordBatch>,
    first: i64,
    last: i64,
}

/// A windowed table of one spec whose rows are swapped in before each evaluation.
pub struct SnapshotTable {
    spec: WindowSpec,
    /// the table's own columns
    raw: SchemaRef,
    /// `window_start`, `window_end`, then the table's columns
    windowed: SchemaRef,
    rows: Arc<RwLock<Arc<Rows>>>,
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
        }
    }

    /// Makes the windows starting in `[first, last]` over `batches` (the
    /// table's own rows; rows outside those windows are ignored) the table's rows.
    pub fn set(&self, batches: Vec<RecordBatch>, first: i64, last: i64) {
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
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(SnapshotExec {
            spec: self.spec,
            panes: false,
            rows: self.rows.clone(),
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
    rows: Arc<RwLock<Arc<Rows>>>,
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
            rows: self.rows.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            filter: self.filter.clone(),
            limit: None,
            properties: self.properties.clone(),
        })
    }

    /// A handle on the window range that follows every new set of rows.
    pub fn range_source(&self) -> RangeSource {
        RangeSource(self.rows.clone())
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    fn windowed_rows(&self) -> DfResult<Vec<RecordBatch>> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (spec, first, last) = if self.panes {
            let pane = WindowSpec {
                size_ns: self.spec.slide_ns,
                slide_ns: self.spec.slide_ns,
            };
            let last_pane = rows.last + self.spec.size_ns - self.spec.slide_ns;
            (pane, rows.first, last_pane)
        } else {
            (self.spec, rows.first, rows.last)
        };
        let mut out = Vec::new();
        let mut left = self.limit.unwrap_or(usize::MAX);
        for batch in &rows.batches {
            if left == 0 {
                break;
            }
            let mask = match &self.filter {
                Some(filter) => {
                    let input = batch.project(&filter.columns)?;
                    let mask = filter.expr.evaluate(&input)?.into_array(batch.num_rows())?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| {
                            DataFusionError::Internal("a pushed filter is not boolean".into())
                        })?;
                    if mask.true_count() == 0 {
                        continue;
                    }
                    Some(mask)
                }
                None => None,
            };
            if let Some(w) = window::expand(
                batch,
                mask.as_ref(),
                spec,
                first,
                last,
                &self.projection,
                &self.schema,
            )? {
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
            let starts = b.column(0).as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            let n = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push(((starts.value(i) - T0) / S, n.value(i)));
            }
        }
        out.sort();
        out
    }

    async fn session_with(rows: RecordBatch, first: i64, last: i64) -> WindowSession {
        let s = WindowSession::new(HOPPING).await.expect("a session");
        s.tables[&Table::Spans].set(vec![rows], first, last);
        s
    }

    #[tokio::test]
    async fn a_filter_runs_on_rows_before_they_are_put_in_windows() {
        let rows = spans(&[(10.0, "a"), (40.0, "b"), (45.0, "a"), (70.0, "a")]);
        let s = session_with(rows, T0 - 30 * S, T0 + 60 * S).await;
        let sql = "SELECT window_start, count(*) AS n FROM spans WHERE client_address = 'a' GROUP BY 1";
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
        assert!(!shown.contains("FilterExec"), "a filter stayed above the scan:\n{shown}");
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
        let got = counts(&s.execute(&plan, &Mutex::new(None), false).await.expect("runs"));
        assert_eq!(got, vec![(0, 2), (30, 1)]);
    }

    #[tokio::test]
    async fn a_filter_with_a_subquery_gives_the_same_answer() {
        let rows = spans(&[(10.0, "a"), (20.0, "a"), (25.0, "b")]);
        let s = session_with(rows, T0, T0).await;
        let sql = "SELECT window_start, count(*) AS n FROM spans \
                   WHERE client_address IN (SELECT client_address FROM spans \
                   GROUP BY client_address HAVING count(*) > 1) GROUP BY 1";
        let plan = s.plan(sql).await.expect("plans");
        let got = counts(&s.execute(&plan, &Mutex::new(None), false).await.expect("runs"));
        assert_eq!(got, vec![(0, 2)]);
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
        s.tables[&Table::Spans].set(vec![spans(&[(1.0, "b"), (2.0, "b"), (3.0, "b")])], T0, T0);
        let second = counts(&s.execute(&plan, &physical, false).await.expect("runs again"));
        assert_eq!(second, vec![(0, 3)]);
        s.tables[&Table::Spans].clear();
        let empty = s.execute(&plan, &physical, false).await.expect("runs on nothing");
        assert_eq!(empty.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    #[test]
    fn expand_copies_only_the_projected_columns() {
        let rows = spans(&[(10.0, "a"), (45.0, "b")]);
        let windowed = window::windowed_schema(&rows.schema());
        let client = windowed.index_of("client_address").unwrap();
        let projection = vec![0, client];
        let schema = Arc::new(windowed.project(&projection).unwrap());
        let out = window::expand(&rows, None, HOPPING, T0 - 30 * S, T0 + 30 * S, &projection, &schema)
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
}
