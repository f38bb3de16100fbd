//! `count(DISTINCT text)` for many groups at once.
//!
//! Detection rules count distinct accounts per address, products per client,
//! cards per session, in every window: many small groups. DataFusion answers
//! `count(DISTINCT x)` on text with one accumulator per group, each with a
//! hash table of its own, made anew for every group of every evaluation.
//! Here one accumulator serves all groups: each distinct text is stored once
//! (whatever the number of groups that saw it) and a (group, text) pair is a
//! pair of integers in one set.
//!
//! [`DistinctText`], an optimizer rule, puts [`udaf`] in place of
//! `count(DISTINCT x)` where `x` is text and the call has no ORDER BY; the
//! output column keeps its name, so a rule's SQL does not change.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::Transformed;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator,
    LogicalPlan, Signature, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::trace_sample::{counted, item, list_state, lists, texts};
use datafusion::scalar::ScalarValue;

type Hasher = BuildHasherDefault<ahash::AHasher>;

const NAME: &str = "count_distinct_text";

/// The aggregate: the number of distinct non-null texts per group.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(CountDistinctText {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CountDistinctText {
    signature: Signature,
}

impl AggregateUDFImpl for CountDistinctText {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, _data_type: &DataType) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(One(Groups::default())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        list_state(args, "distinct")
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::default()))
    }
}

/// The distinct texts of every group.
#[derive(Debug, Default)]
struct Groups {
    /// each text seen, once, with its number
    numbers: HashMap<Box<str>, u32, Hasher>,
    texts: Vec<Box<str>>,
    /// (group, text number) pairs seen
    pairs: HashSet<(u32, u32), Hasher>,
    counts: Vec<i64>,
    text_bytes: usize,
}

impl Groups {
    fn add(&mut self, group: usize, text: &str) {
        let number = match self.numbers.get(text) {
            Some(&n) => n,
            None => {
                let n = self.texts.len() as u32;
                self.texts.push(text.into());
                self.numbers.insert(text.into(), n);
                self.text_bytes += 2 * text.len();
                n
            }
        };
        if self.pairs.insert((group as u32, number)) {
            self.counts[group] += 1;
        }
    }

    fn grow(&mut self, total_num_groups: usize) -> DfResult<()> {
        if total_num_groups > u32::MAX as usize || self.texts.len() >= u32::MAX as usize {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{NAME}: more than {} groups or distinct texts",
                u32::MAX
            )));
        }
        self.counts.resize(total_num_groups, 0);
        Ok(())
    }

    /// Takes the groups `emit_to` names out: their counts, and their texts
    /// if `with_texts`; later groups move down to fill the gap.
    fn take(&mut self, emit_to: EmitTo, with_texts: bool) -> (Vec<i64>, Vec<Vec<u32>>) {
        let counts = emit_to.take_needed(&mut self.counts);
        let n = counts.len() as u32;
        let mut per_group = if with_texts {
            vec![Vec::new(); counts.len()]
        } else {
            vec![]
        };
        if self.counts.is_empty() {
            if with_texts {
                for &(g, t) in &self.pairs {
                    per_group[g as usize].push(t);
                }
            }
            *self = Groups::default();
        } else {
            let pairs = std::mem::take(&mut self.pairs);
            for (g, t) in pairs {
                if g < n {
                    if with_texts {
                        per_group[g as usize].push(t);
                    }
                } else {
                    self.pairs.insert((g - n, t));
                }
            }
        }
        (counts, per_group)
    }

    /// The states of `emit_to`'s groups: the list of their distinct texts.
    fn states(&mut self, emit_to: EmitTo) -> ArrayRef {
        let texts = self.texts.clone();
        let (_, per_group) = self.take(emit_to, true);
        let mut out = ListBuilder::new(StringBuilder::new()).with_field(item());
        for numbers in per_group {
            for t in numbers {
                out.values().append_value(&texts[t as usize]);
            }
            out.append(true);
        }
        Arc::new(out.finish())
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups)?;
        let values = texts(&values[0], NAME)?;
        for (row, &group) in group_indices.iter().enumerate() {
            if !counted(values, opt_filter, row) {
                continue;
            }
            self.add(group, values.value(row));
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.grow(total_num_groups)?;
        let lists = lists(&values[0], NAME)?;
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let list = lists.value(row);
            for text in texts(&list, NAME)?.iter().flatten() {
                self.add(group, text);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        let (counts, _) = self.take(emit_to, false);
        Ok(Arc::new(Int64Array::from(counts)))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        Ok(vec![self.states(emit_to)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        let values = texts(&values[0], NAME)?;
        let mut out = ListBuilder::new(StringBuilder::new()).with_field(item());
        for row in 0..values.len() {
            if counted(values, opt_filter, row) {
                out.values().append_value(values.value(row));
            }
            out.append(true);
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn size(&self) -> usize {
        self.text_bytes
            + self.texts.capacity() * std::mem::size_of::<Box<str>>()
            + self.numbers.capacity() * (std::mem::size_of::<Box<str>>() + 4)
            + self.pairs.capacity() * 8
            + self.counts.capacity() * 8
    }
}

/// One group (no GROUP BY): the groups accumulator with one group.
#[derive(Debug)]
struct One(Groups);

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let groups = vec![0; values[0].len()];
        self.0.update_batch(values, &groups, None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let groups = vec![0; states[0].len()];
        self.0.merge_batch(states, &groups, 1)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            self.0.counts.first().copied().unwrap_or(0),
        )))
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.0.grow(1)?;
        let texts = self.0.texts.clone();
        let mut numbers: Vec<u32> = self.0.pairs.iter().map(|&(_, t)| t).collect();
        numbers.sort_unstable();
        let values: Vec<ScalarValue> = numbers
            .into_iter()
            .map(|t| ScalarValue::Utf8(Some(texts[t as usize].to_string())))
            .collect();
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &DataType::Utf8,
        ))])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }
}

/// Puts [`udaf`] in place of `count(DISTINCT x)` on text, keeping the column's name.
#[derive(Debug)]
pub struct DistinctText {
    udaf: Arc<AggregateUDF>,
}

impl Default for DistinctText {
    fn default() -> Self {
        DistinctText { udaf: udaf() }
    }
}

impl DistinctText {
    /// The replacement of `expr`, if it is a `count(DISTINCT text)` call.
    fn replace(&self, expr: &Expr, input: &DFSchema) -> DfResult<Option<Expr>> {
        let (inner, name) = match expr {
            Expr::Alias(a) => (a.expr.as_ref(), a.name.clone()),
            e => (e, e.schema_name().to_string()),
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            return Ok(None);
        };
        let AggregateFunctionParams {
            args,
            distinct,
            filter,
            order_by,
            null_treatment,
        } = params;
        if func.name() != "count"
            || !distinct
            || args.len() != 1
            || !order_by.is_empty()
            || null_treatment.is_some()
            || args[0].get_type(input).ok() != Some(DataType::Utf8)
        {
            return Ok(None);
        }
        let call = Expr::AggregateFunction(AggregateFunction::new_udf(
            self.udaf.clone(),
            args.clone(),
            false,
            filter.clone(),
            vec![],
            None,
        ));
        Ok(Some(call.alias(name)))
    }
}

impl OptimizerRule for DistinctText {
    fn name(&self) -> &str {
        "count_distinct_text"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = plan else {
            return Ok(Transformed::no(plan));
        };
        let mut changed = false;
        let mut exprs = Vec::with_capacity(agg.aggr_expr.len());
        for e in &agg.aggr_expr {
            match self.replace(e, agg.input.schema())? {
                Some(new) => {
                    changed = true;
                    exprs.push(new);
                }
                None => exprs.push(e.clone()),
            }
        }
        if !changed {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let new = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), exprs)?;
        // the same columns under the same names, or no change
        let same = new.schema.fields().len() == agg.schema.fields().len()
            && new
                .schema
                .iter()
                .zip(agg.schema.iter())
                .all(|((qa, a), (qb, b))| {
                    qa == qb && a.name() == b.name() && a.data_type() == b.data_type()
                });
        Ok(if same {
            Transformed::yes(LogicalPlan::Aggregate(new))
        } else {
            Transformed::no(LogicalPlan::Aggregate(agg))
        })
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, StringArray};
    use datafusion::prelude::SessionContext;

    use super::*;

    const ROWS: &str = "(VALUES (1, 'a', 1), (1, 'b', 1), (1, 'a', 2), (1, NULL, 1), \
                        (2, 'a', 1), (2, 'a', 1), (3, NULL, 1), (4, 'c', 0)) AS t(k, v, w)";

    async fn rows(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            df.clone().into_optimized_plan().unwrap().display_indent()
        );
        let batches = df.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (text, plan)
    }

    #[tokio::test]
    async fn counts_as_count_distinct_does_under_the_same_name() {
        let sql = format!(
            "SELECT k, count(DISTINCT v) AS n, count(DISTINCT v) FILTER (WHERE w = 1), count(*) \
             FROM {ROWS} GROUP BY k ORDER BY k"
        );
        let plain = SessionContext::new();
        let ours = SessionContext::new();
        ours.add_optimizer_rule(Arc::new(DistinctText::default()));
        let (want, _) = rows(&plain, &sql).await;
        let (got, plan) = rows(&ours, &sql).await;
        assert!(plan.contains(NAME), "not replaced:\n{plan}");
        assert_eq!(got, want);
        // no GROUP BY, and a number (not text) stays with DataFusion
        let sql = format!("SELECT count(DISTINCT v), count(DISTINCT k) FROM {ROWS}");
        let (want, _) = rows(&plain, &sql).await;
        let (got, plan) = rows(&ours, &sql).await;
        assert_eq!(got, want);
        assert!(plan.contains("count(DISTINCT t.k)"), "{plan}");
    }

    #[test]
    fn emitting_the_first_groups_keeps_the_others() {
        let mut g = Groups::default();
        let values: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "x", "z", "y"]));
        g.update_batch(&[values], &[0, 0, 1, 2, 2], None, 3)
            .unwrap();
        let first = g.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(
            first.as_primitive::<arrow::datatypes::Int64Type>().values(),
            &[2]
        );
        let states = g.state(EmitTo::All).unwrap();
        let mut merged = Groups::default();
        merged.merge_batch(&states, &[0, 0], 1).unwrap();
        // groups 1 {x} and 2 {z, y} merged into one: x, y, z
        let all = merged.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            all.as_primitive::<arrow::datatypes::Int64Type>().values(),
            &[3]
        );
    }
}
