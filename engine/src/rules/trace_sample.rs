//! `trace_sample(trace_id)`: the aggregate a rule uses for its `trace_ids`
//! column. It keeps, per group, the five smallest distinct ids and nothing
//! else, which is exactly what an alert shows (its samples are the five
//! smallest distinct ids over the incident's windows). `array_agg(trace_id)`
//! gives the same alerts but keeps every id of the group: a flood of 20,000
//! requests holds 20,000 strings per window until the window is evaluated.
//!
//! ```sql
//! SELECT window_start, window_end, client_address, count(*) AS requests,
//!        trace_sample(trace_id) AS trace_ids
//! FROM spans GROUP BY 1, 2, 3 HAVING count(*) >= 600
//! ```

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

const NAME: &str = "trace_sample";

/// How many ids an alert carries.
pub const SAMPLES: usize = 5;

/// The function, to register on a session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(TraceSample {
        signature: Signature::uniform(1, vec![DataType::Utf8], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TraceSample {
    signature: Signature,
}

/// The item field of a list of texts: the output of `trace_sample` and the
/// state of both aggregates of this folder (with `distinct`).
pub(super) fn item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Utf8, true))
}

/// The one state field of an aggregate whose state is a list of texts.
pub(super) fn list_state(args: StateFieldsArgs, what: &str) -> DfResult<Vec<FieldRef>> {
    Ok(vec![Arc::new(Field::new(
        format_state_name(args.name, what),
        DataType::List(item()),
        true,
    ))])
}

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        datafusion::logical_expr::aggregate_doc_sections::DOC_SECTION_GENERAL,
        "The five smallest distinct values of the group, sorted: the sample trace ids of an alert.",
        "trace_sample(trace_id)",
    )
    .with_argument("expression", "the trace id column (text)")
    .build()
});

impl AggregateUDFImpl for TraceSample {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::List(item()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(One::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        list_state(args, "sample")
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

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// One group's sample: at most [`SAMPLES`] distinct ids, sorted.
#[derive(Debug, Default, Clone)]
struct Sample(Vec<String>);

impl Sample {
    /// Takes `id` if it is among the smallest; returns the bytes it took (an
    /// id it pushes out is not counted back: few are, as a sample fills with
    /// the smallest ids early).
    fn offer(&mut self, id: &str) -> usize {
        if self.0.len() == SAMPLES && self.0.last().is_some_and(|top| id >= top.as_str()) {
            return 0;
        }
        match self.0.binary_search_by(|x| x.as_str().cmp(id)) {
            Ok(_) => 0,
            Err(at) => {
                self.0.insert(at, id.to_string());
                self.0.truncate(SAMPLES);
                id.len()
            }
        }
    }

    fn bytes(&self) -> usize {
        self.0.iter().map(String::capacity).sum::<usize>()
            + self.0.capacity() * std::mem::size_of::<String>()
    }
}

/// `array` as text, or an error naming the aggregate `who` and the type.
pub(super) fn texts<'a>(array: &'a ArrayRef, who: &str) -> DfResult<&'a arrow::array::StringArray> {
    array.as_string_opt::<i32>().ok_or_else(|| {
        DataFusionError::Internal(format!("{who} reads text, not {}", array.data_type()))
    })
}

/// Whether row `row` is aggregated: its value is not null and the aggregate's
/// `FILTER` (if any) holds for it.
pub(super) fn counted(
    values: &arrow::array::StringArray,
    filter: Option<&BooleanArray>,
    row: usize,
) -> bool {
    values.is_valid(row) && filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// `array` as a list (a state), or an error naming the aggregate `who` and the type.
pub(super) fn lists<'a>(array: &'a ArrayRef, who: &str) -> DfResult<&'a ListArray> {
    array.as_list_opt::<i32>().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "{who}'s state is a list, not {}",
            array.data_type()
        ))
    })
}

/// A list array of the samples, an empty sample as null (as `array_agg` of no rows).
fn to_list(samples: impl IntoIterator<Item = Sample>) -> ArrayRef {
    let mut out = ListBuilder::new(StringBuilder::new()).with_field(item());
    for s in samples {
        if s.0.is_empty() {
            out.append_null();
        } else {
            for id in &s.0 {
                out.values().append_value(id);
            }
            out.append(true);
        }
    }
    Arc::new(out.finish())
}

/// The accumulator of one group (no GROUP BY, or a window function).
#[derive(Debug, Default)]
struct One(Sample);

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        for id in texts(&values[0], NAME)?.iter().flatten() {
            self.0.offer(id);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let states = lists(&states[0], NAME)?;
        for row in 0..states.len() {
            if states.is_valid(row) {
                let ids = states.value(row);
                for id in texts(&ids, NAME)?.iter().flatten() {
                    self.0.offer(id);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        ScalarValue::try_from_array(&to_list([self.0.clone()]), 0)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.bytes()
    }
}

/// The accumulator of many groups, by group index.
#[derive(Debug, Default)]
struct Groups {
    samples: Vec<Sample>,
    /// bytes of the ids held, kept as they are added so that `size` is O(1)
    held: usize,
}

impl Groups {
    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let taken = emit_to.take_needed(&mut self.samples);
        self.held = self.samples.iter().map(Sample::bytes).sum();
        to_list(taken)
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
        self.samples.resize_with(total_num_groups, Sample::default);
        let ids = texts(&values[0], NAME)?;
        for (row, &group) in group_indices.iter().enumerate() {
            if !counted(ids, opt_filter, row) {
                continue;
            }
            self.held += self.samples[group].offer(ids.value(row));
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> DfResult<()> {
        self.samples.resize_with(total_num_groups, Sample::default);
        let states = lists(&values[0], NAME)?;
        for (row, &group) in group_indices.iter().enumerate() {
            if states.is_null(row) {
                continue;
            }
            let ids = states.value(row);
            for id in texts(&ids, NAME)?.iter().flatten() {
                self.held += self.samples[group].offer(id);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> DfResult<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> DfResult<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> DfResult<Vec<ArrayRef>> {
        let ids = texts(&values[0], NAME)?;
        let rows = (0..ids.len()).map(|row| {
            let mut s = Sample::default();
            if counted(ids, opt_filter, row) {
                s.offer(ids.value(row));
            }
            s
        });
        Ok(vec![to_list(rows)])
    }

    fn size(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>() + self.held
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    fn ids(array: &ArrayRef, row: usize) -> Option<Vec<String>> {
        let list = array.as_list::<i32>();
        list.is_valid(row).then(|| {
            list.value(row)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect()
        })
    }

    #[test]
    fn keeps_the_five_smallest_distinct_ids_sorted() {
        let mut s = Sample::default();
        for id in ["g", "c", "a", "c", "f", "b", "h", "e", "d", "a"] {
            s.offer(id);
        }
        assert_eq!(s.0, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn groups_filters_nulls_and_merges_states() {
        let mut g = Groups::default();
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("b"),
            None,
            Some("a"),
            Some("z"),
            Some("c"),
        ]));
        let filter = BooleanArray::from(vec![true, true, true, false, true]);
        g.update_batch(
            std::slice::from_ref(&values),
            &[0, 0, 0, 1, 2],
            Some(&filter),
            4,
        )
        .unwrap();
        let state = g.state(EmitTo::All).unwrap();
        let out = g.evaluate(EmitTo::All).unwrap();
        // the state was taken: evaluate sees no groups
        assert_eq!(out.len(), 0);
        assert_eq!(ids(&state[0], 0), Some(vec!["a".into(), "b".into()]));
        // group 1 saw only a filtered-out row, group 3 nothing: both null
        assert_eq!(ids(&state[0], 1), None);
        assert_eq!(ids(&state[0], 3), None);

        let mut merged = Groups::default();
        merged.merge_batch(&state, &[0, 0, 0, 0], 1).unwrap();
        merged
            .merge_batch(&g.convert_to_state(&[values], None).unwrap(), &[0; 5], 1)
            .unwrap();
        let out = merged.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            ids(&out, 0),
            Some(vec!["a".into(), "b".into(), "c".into(), "z".into()])
        );
    }

    #[tokio::test]
    async fn gives_what_array_agg_gives_an_alert() {
        let ctx = SessionContext::new();
        ctx.register_udaf(udaf());
        let sql = "SELECT k, trace_sample(v) AS s, array_agg(DISTINCT v ORDER BY v) AS all_ids \
                   FROM (VALUES (1, 'f'), (1, 'a'), (1, 'c'), (1, 'a'), (1, 'e'), (1, 'b'), (1, 'd'), \
                   (2, 'x'), (2, NULL), (3, NULL)) AS t(k, v) GROUP BY k ORDER BY k";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = &batches[0];
        let sample = b.column(1);
        let all = b.column(2);
        for row in 0..b.num_rows() {
            let mut want = ids(all, row).unwrap_or_default();
            want.truncate(SAMPLES);
            assert_eq!(ids(sample, row).unwrap_or_default(), want, "row {row}");
        }
        assert_eq!(ids(sample, 0).unwrap(), ["a", "b", "c", "d", "e"]);
        // no GROUP BY: the one-group accumulator
        let one = ctx
            .sql("SELECT trace_sample(v) FROM (VALUES ('q'), ('p'), ('p')) AS t(v)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(ids(one[0].column(0), 0).unwrap(), ["p", "q"]);
    }
}
