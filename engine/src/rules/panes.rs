//! Per-slide partial aggregates ("panes") for hopping windows.
//!
//! A window of size `k × slide` is the union of `k` consecutive slide-long
//! panes. An aggregate grouped by window can therefore be computed in two
//! steps: aggregate each row once into its pane (DataFusion's `Partial`
//! aggregate, which keeps mergeable states: counts, sums, sets of distinct
//! values, lists), then copy each pane's states into the `k` windows it
//! belongs to and merge them there (the `Final` aggregate). Each row is
//! aggregated once instead of `k` times; only the pane states, far fewer than
//! the rows, are copied.
//!
//! [`rewrite`] applies this to a rule's physical plan wherever it is exact: an
//! aggregate grouped by `window_start` (and `window_end`) whose input is a
//! chain of projections and filters over one table scan, none of which reads
//! the window columns except to pass them through, with no ordered
//! aggregate. Anything else (a join, as in the account takeover's sequence,
//! grouping sets, a window column in a filter) keeps the plain plan.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::TryStreamExt;

use super::snapshot::{PaneRange, RangeSource, SnapshotExec};
use crate::window::WindowSpec;

const WINDOW_COLUMNS: [&str; 2] = ["window_start", "window_end"];

/// Whether `expr` reads a window column.
fn reads_window(expr: &Arc<dyn PhysicalExpr>) -> bool {
    collect_columns(expr)
        .iter()
        .any(|c| WINDOW_COLUMNS.contains(&c.name()))
}

/// `expr` is the column `name` itself.
fn is_column(expr: &Arc<dyn PhysicalExpr>, name: &str) -> bool {
    expr.downcast_ref::<Column>()
        .is_some_and(|c| c.name() == name)
}

/// Rewrites every aggregate of `plan` that panes compute exactly.
pub fn rewrite(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        match in_panes(agg)? {
            Some(new) => Ok(Transformed::new(new, true, TreeNodeRecursion::Jump)),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// The scan under a chain of projections and filters that leave the window
/// columns alone, if `input` is one.
fn scan_under(input: &Arc<dyn ExecutionPlan>) -> Option<&SnapshotExec> {
    if let Some(scan) = input.downcast_ref::<SnapshotExec>() {
        return Some(scan);
    }
    if let Some(f) = input.downcast_ref::<FilterExec>() {
        if reads_window(f.predicate()) || f.projection().is_some() {
            return None;
        }
        return scan_under(f.input());
    }
    if let Some(p) = input.downcast_ref::<ProjectionExec>() {
        for e in p.expr() {
            let passes = WINDOW_COLUMNS
                .iter()
                .any(|w| e.alias == *w && is_column(&e.expr, w));
            if !passes && (reads_window(&e.expr) || WINDOW_COLUMNS.contains(&e.alias.as_str())) {
                return None;
            }
        }
        return scan_under(p.input());
    }
    if let Some(c) = input.downcast_ref::<CooperativeExec>() {
        return scan_under(c.input());
    }
    None
}

/// The two-step form of `agg`, when it is exact.
fn in_panes(agg: &AggregateExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if !matches!(
        agg.mode(),
        AggregateMode::Single | AggregateMode::SinglePartitioned
    ) || agg.limit_options().is_some()
        || !agg.group_expr().is_single()
    {
        return Ok(None);
    }
    let Some(scan) = scan_under(agg.input()) else {
        return Ok(None);
    };
    if scan.spec().overlap() <= 1 {
        return Ok(None);
    }
    // group keys: window_start (and window_end) as themselves; nothing else
    // may read them
    let groups = agg.group_expr().expr();
    let position = |name: &str| {
        groups
            .iter()
            .position(|(e, alias)| alias == name && is_column(e, name))
    };
    let Some(start) = position("window_start") else {
        return Ok(None);
    };
    let end = position("window_end");
    let others_clean = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != start && Some(*i) != end)
        .all(|(_, (e, alias))| !reads_window(e) && !WINDOW_COLUMNS.contains(&alias.as_str()));
    let aggregates_clean = agg
        .aggr_expr()
        .iter()
        .all(|a| a.order_bys().is_empty() && a.expressions().iter().all(|e| !reads_window(e)))
        && agg.filter_expr().iter().flatten().all(|f| !reads_window(f));
    if !others_clean || !aggregates_clean {
        return Ok(None);
    }
    let Some(pane_scan) = scan.as_panes() else {
        return Ok(None);
    };
    let range = scan.range_source();
    let spec = scan.spec();
    let panes = pane_scan.pane_range();
    let pane_scan: Arc<dyn ExecutionPlan> = Arc::new(pane_scan);
    let input = agg
        .input()
        .clone()
        .transform_up(|node| {
            if node.is::<SnapshotExec>() {
                Ok(Transformed::yes(pane_scan.clone()))
            } else {
                Ok(Transformed::no(node))
            }
        })?
        .data;
    let partial = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        agg.group_expr().clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        input,
        agg.input_schema(),
    )?);
    let spread: Arc<dyn ExecutionPlan> = Arc::new(PaneSpreadExec {
        input: partial.clone(),
        spec,
        start,
        end,
        range,
        panes,
        states: Arc::default(),
    });
    let fin = AggregateExec::try_new(
        AggregateMode::Final,
        partial.group_expr().as_final(),
        partial.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        spread,
        agg.input_schema(),
    )?;
    // the same output, or no rewrite
    let same = fin.schema().fields().len() == agg.schema().fields().len()
        && fin
            .schema()
            .fields()
            .iter()
            .zip(agg.schema().fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    Ok(same.then(|| Arc::new(fin) as Arc<dyn ExecutionPlan>))
}

/// Copies each pane's partial states into every window being evaluated that
/// holds the pane, setting `window_start` and `window_end` to the window's.
///
/// The states of a pane are made once and kept while a window to evaluate
/// holds the pane: when a window is evaluated, its panes are behind the
/// watermark, and a row that comes later is late and dropped. Each
/// evaluation therefore aggregates only the rows of its new panes (one
/// slide's worth, for one new window) and merges kept states for the rest.
/// Should rows come for a pane already made (a stream that was idle and came
/// back behind the others), the kept states are dropped and made again.
#[derive(Debug)]
pub struct PaneSpreadExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WindowSpec,
    start: usize,
    end: Option<usize>,
    range: RangeSource,
    /// narrows the pane scan under `input` to the panes not yet made
    panes: PaneRange,
    states: Arc<Mutex<PaneStates>>,
}

/// The pane states made so far.
#[derive(Debug, Default)]
struct PaneStates {
    /// batches of states, with the starts of the first and last pane they cover
    chunks: Vec<(i64, i64, Vec<RecordBatch>)>,
    /// the largest batch id among the rows they were made from
    seen: Option<u64>,
}

impl PaneStates {
    /// The start of the last pane made, if any.
    fn made_to(&self) -> Option<i64> {
        self.chunks.iter().map(|c| c.1).max()
    }

    /// Drops what the windows starting at `first` and later no longer need,
    /// and everything if rows came after the states were made into panes they
    /// cover; returns the first pane still to make.
    fn prepare(&mut self, range: &RangeSource, first: i64, slide: i64) -> i64 {
        let (newest, earliest_new) = range.newer_than(self.seen);
        let stale = self
            .made_to()
            .zip(earliest_new)
            .is_some_and(|(to, t)| t < to + slide);
        self.chunks.retain(|c| c.1 >= first);
        let hole = self
            .chunks
            .iter()
            .map(|c| c.0)
            .min()
            .is_some_and(|f| f > first);
        if stale || hole {
            self.chunks.clear();
        }
        self.seen = newest;
        self.made_to().map_or(first, |to| to + slide)
    }
}

/// The rows of `batch` (pane states) once per window of `spec` starting in
/// `[first, last]` that holds their pane.
fn spread(
    batch: &RecordBatch,
    spec: WindowSpec,
    start: usize,
    end: Option<usize>,
    (first, last): (i64, i64),
) -> DfResult<RecordBatch> {
    let panes = batch
        .column(start)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| DataFusionError::Internal("a pane start is not a timestamp".into()))?;
    let mut rows: Vec<u32> = Vec::new();
    let mut starts: Vec<i64> = Vec::new();
    for (row, pane) in panes.iter().enumerate() {
        let Some(pane) = pane else { continue };
        for j in 0..spec.overlap() {
            let w = pane - j * spec.slide_ns;
            if w >= first && w <= last {
                rows.push(row as u32);
                starts.push(w);
            }
        }
    }
    let indices = UInt32Array::from(rows);
    let tz = panes.timezone().map(Arc::<str>::from);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (i, c) in batch.columns().iter().enumerate() {
        columns.push(if i == start {
            Arc::new(TimestampNanosecondArray::from(starts.clone()).with_timezone_opt(tz.clone()))
        } else if Some(i) == end {
            let ends: Vec<i64> = starts.iter().map(|s| s + spec.size_ns).collect();
            Arc::new(TimestampNanosecondArray::from(ends).with_timezone_opt(tz.clone()))
        } else {
            take(c.as_ref(), &indices, None)?
        });
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl DisplayAs for PaneSpreadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PaneSpreadExec: {} panes per window",
            self.spec.overlap()
        )
    }
}

impl ExecutionPlan for PaneSpreadExec {
    fn name(&self) -> &str {
        "PaneSpreadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(PaneSpreadExec {
                input,
                spec: self.spec,
                start: self.start,
                end: self.end,
                range: self.range.clone(),
                panes: self.panes.clone(),
                states: self.states.clone(),
            })),
            _ => Err(DataFusionError::Internal(
                "PaneSpreadExec has one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema: SchemaRef = self.input.schema();
        let (spec, start, end) = (self.spec, self.start, self.end);
        let (first, last) = self.range.get();
        let last_pane = last + spec.size_ns - spec.slide_ns;
        let (kept, todo) = {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            let from = states.prepare(&self.range, first, spec.slide_ns);
            let kept: Vec<RecordBatch> = states
                .chunks
                .iter()
                .flat_map(|c| c.2.iter().cloned())
                .collect();
            (kept, (from <= last_pane).then_some((from, last_pane)))
        };
        // the scan under the partial aggregate reads when it is executed, so
        // the narrowing holds for this run
        self.panes.set(todo);
        let made = match todo {
            Some(_) => Some(self.input.execute(partition, context)?),
            None => None,
        };
        let states = self.states.clone();
        let out = futures::stream::once(async move {
            let made: Vec<RecordBatch> = match made {
                Some(stream) => stream.try_collect().await?,
                None => vec![],
            };
            if let Some((lo, hi)) = todo {
                states
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .chunks
                    .push((lo, hi, made.clone()));
            }
            let spread: Vec<DfResult<RecordBatch>> = kept
                .iter()
                .chain(&made)
                .map(|b| spread(b, spec, start, end, (first, last)))
                .collect();
            Ok::<_, DataFusionError>(futures::stream::iter(spread))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::displayable;
    use ingest::Table;

    use crate::rules::WindowSession;
    use crate::testutil::{S, T0, spans};
    use crate::window::WindowSpec;

    /// Rows spread over four minutes from five clients, in no order.
    fn rows() -> arrow::record_batch::RecordBatch {
        let clients = ["a", "b", "c", "d", "e"];
        let at: Vec<(f64, &str)> = (0..400)
            .map(|i| {
                let t = ((i * 7919) % 2400) as f64 / 10.0;
                (t, clients[(i * 31 % 17) % 5])
            })
            .collect();
        spans(&at)
    }

    /// The query's result over the rows, sorted, as text; and its plan.
    async fn run(sql: &str, panes: bool) -> (String, String) {
        let s = WindowSession::new(WindowSpec {
            size_ns: 60 * S,
            slide_ns: 10 * S,
        })
        .await
        .expect("a session");
        s.tables[&Table::Spans].set(
            vec![crate::window::Buffered::new(rows()).unwrap()],
            T0 - 50 * S,
            T0 + 200 * S,
        );
        let plan = s.plan(sql).await.expect("plans");
        let physical = Mutex::new(None);
        let batches = s.execute(&plan, &physical, panes).await.expect("runs");
        let shown = physical
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| displayable(p.as_ref()).indent(true).to_string())
            .unwrap_or_default();
        let text = pretty_format_batches(&batches).expect("prints").to_string();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        (lines.join("\n"), shown)
    }

    #[tokio::test]
    async fn every_aggregate_shape_of_the_pack_is_the_same_in_panes() {
        let sql = "SELECT window_start, window_end, client_address, count(*) AS n, \
                   count(DISTINCT trace_id) AS traces, \
                   count(*) FILTER (WHERE trace_id > '00000000000000000000000000000100') AS late, \
                   min(time) AS first, max(time) AS last, \
                   sum(CAST(time AS BIGINT) % 1000) AS s, \
                   array_length(array_agg(trace_id)) AS listed \
                   FROM spans WHERE client_address <> 'e' GROUP BY 1, 2, 3";
        let (plain, plain_plan) = run(sql, false).await;
        let (panes, panes_plan) = run(sql, true).await;
        assert!(!plain_plan.contains("PaneSpreadExec"), "{plain_plan}");
        assert!(panes_plan.contains("PaneSpreadExec"), "{panes_plan}");
        assert!(plain.lines().count() > 40, "too few windows:\n{plain}");
        assert_eq!(plain, panes);
    }

    #[tokio::test]
    async fn a_query_that_reads_the_window_in_a_filter_keeps_the_plain_plan() {
        let sql = "SELECT window_start, count(*) AS n FROM spans \
                   WHERE time >= window_start + INTERVAL '30 seconds' GROUP BY 1";
        let (plain, _) = run(sql, false).await;
        let (panes, plan) = run(sql, true).await;
        assert!(!plan.contains("PaneSpreadExec"), "{plan}");
        assert_eq!(plain, panes);
    }

    #[tokio::test]
    async fn a_self_join_keeps_the_plain_plan_and_its_answer() {
        let sql = "SELECT x.window_start, count(*) AS n FROM spans x JOIN spans y \
                   ON x.window_start = y.window_start AND x.client_address = y.client_address \
                   AND x.time < y.time GROUP BY 1";
        let (plain, _) = run(sql, false).await;
        let (panes, plan) = run(sql, true).await;
        assert!(!plan.contains("PaneSpreadExec"), "{plan}");
        assert_eq!(plain, panes);
    }

    /// Evaluations one window at a time, as the evaluator runs them: the pane
    /// states kept from one evaluation serve the next, and a batch that comes
    /// late into panes already made (a stream that was idle) makes them again.
    #[tokio::test]
    async fn kept_pane_states_give_the_plain_answer_window_after_window() {
        use crate::window::Buffered;
        let spec = WindowSpec {
            size_ns: 60 * S,
            slide_ns: 10 * S,
        };
        let s = WindowSession::new(spec).await.expect("a session");
        let sql = "SELECT window_start, client_address, count(*) AS n, \
                   count(DISTINCT trace_id) AS traces FROM spans GROUP BY 1, 2";
        let plan = s.plan(sql).await.expect("plans");
        let (plain, panes) = (Mutex::new(None), Mutex::new(None));
        let first = Buffered::new(rows()).unwrap();
        // comes after the windows up to T0 + 60 s were evaluated, with rows in
        // panes those evaluations made
        let straggler = Buffered::new(spans(&[(55.0, "a"), (75.0, "a"), (95.0, "z")])).unwrap();
        let mut compared = 0;
        for w in 0..12 {
            let start = T0 - 50 * S + w * 10 * S;
            let mut batches = vec![first.clone()];
            if w >= 6 {
                batches.push(straggler.clone());
            }
            s.tables[&Table::Spans].set(batches, start, start);
            let text = |b: Vec<arrow::record_batch::RecordBatch>| {
                let t = pretty_format_batches(&b).expect("prints").to_string();
                let mut lines: Vec<String> = t.lines().map(String::from).collect();
                lines.sort();
                lines.join("\n")
            };
            let want = text(s.execute(&plan, &plain, false).await.expect("runs"));
            let got = text(s.execute(&plan, &panes, true).await.expect("runs in panes"));
            assert_eq!(got, want, "window {w}");
            compared += want.lines().count();
        }
        assert!(compared > 60, "too few rows compared: {compared}");
        let shown = displayable(panes.lock().unwrap().as_ref().unwrap().as_ref())
            .indent(true)
            .to_string();
        assert!(shown.contains("PaneSpreadExec"), "{shown}");
    }
}
