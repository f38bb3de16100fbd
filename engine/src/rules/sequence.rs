//! `sequence_steps(time, step1, step2, …)`: how many steps of an ordered
//! sequence a group's events went through, as EQL sequences and Sigma's
//! `temporal_ordered` correlations say "this, then that". Each step is a
//! condition; the events are taken in time order and each one completes at
//! most one step, the next one it matches. A result equal to the number of
//! steps means the whole sequence happened, in order, within the window.
//!
//! ```sql
//! -- three failed logins, then a success, on one account
//! SELECT window_start, window_end, user_hash,
//!        sequence_steps(time, shop_auth_outcome = 'failure', shop_auth_outcome = 'failure',
//!                       shop_auth_outcome = 'failure', shop_auth_outcome = 'success') AS steps
//! FROM events WHERE event_name = 'shop.auth.login'
//! GROUP BY 1, 2, 3 HAVING steps = 4
//! ```
//!
//! Memory is bounded whatever the events: only events that match a step are
//! kept; of a run of events that match the same steps, only as many as there
//! are steps can ever complete one, so a flood of one kind of event costs no
//! more than the sequence's length; events after the sequence completes are
//! dropped; and a group keeps at most [`MAX_EVENTS`] events (the earliest), a
//! limit the compaction makes unreachable except by events that alternate
//! between steps without completing the sequence.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, ListBuilder, UInt64Builder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, UInt64Type};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

const NAME: &str = "sequence_steps";

/// The most events one group keeps.
pub const MAX_EVENTS: usize = 4096;

/// The most steps a sequence may have (one bit each).
const MAX_STEPS: usize = 64;

/// The function, to register on a session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(SequenceSteps {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SequenceSteps {
    signature: Signature,
}

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        datafusion::logical_expr::aggregate_doc_sections::DOC_SECTION_GENERAL,
        "How many steps of an ordered sequence the group's events completed, each event \
         completing at most one step, in time order.",
        "sequence_steps(time, step1, step2[, ...])",
    )
    .with_argument("time", "the event time (a timestamp or an integer)")
    .with_argument(
        "step1, step2, ...",
        "conditions (booleans), in the order they must happen",
    )
    .build()
});

fn error(message: String) -> DataFusionError {
    DataFusionError::Plan(format!("{NAME}: {message}"))
}

impl AggregateUDFImpl for SequenceSteps {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let steps = args.len().saturating_sub(1);
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(error(format!(
                "takes the time and 1 to {MAX_STEPS} step conditions, got {} arguments",
                args.len()
            )));
        }
        if !matches!(args[0], DataType::Timestamp(..) | DataType::Int64) {
            return Err(error(format!(
                "the first argument is the event time, not {}",
                args[0]
            )));
        }
        if let Some((i, t)) = args[1..]
            .iter()
            .enumerate()
            .find(|(_, t)| **t != DataType::Boolean && **t != DataType::Null)
        {
            return Err(error(format!(
                "step {} is a condition (boolean), not {t}",
                i + 1
            )));
        }
        Ok(DataType::Int64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(Steps::new(args.exprs.len() - 1)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        let list = |what: &str, item: DataType| {
            Arc::new(Field::new(
                format_state_name(args.name, what),
                DataType::List(Arc::new(Field::new_list_field(item, true))),
                true,
            ))
        };
        Ok(vec![
            list("times", DataType::Int64),
            list("masks", DataType::UInt64),
        ])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// One group's events that match a step: (time, bit i set when step i holds).
#[derive(Debug)]
pub struct Steps {
    steps: usize,
    events: Vec<(i64, u64)>,
    /// whether events were sorted and compacted since the last push
    compact: bool,
}

impl Steps {
    pub fn new(steps: usize) -> Steps {
        Steps {
            steps,
            events: Vec::new(),
            compact: true,
        }
    }

    pub fn push(&mut self, time: i64, mask: u64) {
        if mask != 0 {
            self.events.push((time, mask));
            self.compact = false;
            if self.events.len() > 2 * MAX_EVENTS {
                self.compact();
            }
        }
    }

    /// Sorts the events, keeps at most `steps` of each run of equal masks, drops
    /// what follows a completed sequence, then keeps the earliest [`MAX_EVENTS`].
    /// None of this changes [`Steps::completed`], except the last cut.
    fn compact(&mut self) {
        if self.compact {
            return;
        }
        self.events.sort_unstable();
        let mut kept: Vec<(i64, u64)> = Vec::with_capacity(self.events.len().min(MAX_EVENTS));
        let mut run = 0;
        let mut step = 0;
        for &(t, m) in &self.events {
            run = match kept.last() {
                Some(&(_, last)) if last == m => run + 1,
                _ => 1,
            };
            if run > self.steps {
                continue;
            }
            kept.push((t, m));
            if step < self.steps && m & (1 << step) != 0 {
                step += 1;
                if step == self.steps {
                    break;
                }
            }
        }
        kept.truncate(MAX_EVENTS);
        self.events = kept;
        self.compact = true;
    }

    /// The steps completed, in time order.
    pub fn completed(&mut self) -> usize {
        self.compact();
        let mut step = 0;
        for &(_, m) in &self.events {
            if step < self.steps && m & (1 << step) != 0 {
                step += 1;
            }
        }
        step
    }
}

fn times(array: &ArrayRef) -> DfResult<Int64Array> {
    Ok(cast(array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

impl Accumulator for Steps {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let time = times(&values[0])?;
        let conditions: Vec<_> = values[1..]
            .iter()
            .map(|v| cast(v, &DataType::Boolean))
            .collect::<Result<_, _>>()?;
        let conditions: Vec<_> = conditions.iter().map(|c| c.as_boolean()).collect();
        for row in 0..time.len() {
            if time.is_null(row) {
                continue;
            }
            let mask = conditions
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_valid(row) && c.value(row))
                .fold(0u64, |m, (i, _)| m | 1 << i);
            self.push(time.value(row), mask);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let (t, m) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for row in 0..t.len() {
            if t.is_null(row) {
                continue;
            }
            let (times, masks) = (t.value(row), m.value(row));
            let times = times.as_primitive::<Int64Type>();
            let masks = masks.as_primitive::<UInt64Type>();
            for (time, mask) in times.iter().zip(masks.iter()) {
                if let (Some(time), Some(mask)) = (time, mask) {
                    self.push(time, mask);
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.compact();
        let mut t = ListBuilder::new(Int64Builder::new());
        let mut m = ListBuilder::new(UInt64Builder::new());
        t.values()
            .append_slice(&self.events.iter().map(|e| e.0).collect::<Vec<_>>());
        m.values()
            .append_slice(&self.events.iter().map(|e| e.1).collect::<Vec<_>>());
        t.append(true);
        m.append(true);
        Ok(vec![
            ScalarValue::List(Arc::new(t.finish())),
            ScalarValue::List(Arc::new(m.finish())),
        ])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.completed() as i64)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.events.capacity() * std::mem::size_of::<(i64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 0b0111; // a failure matches steps 1 to 3
    const S: u64 = 0b1000; // a success matches step 4

    fn steps(events: &[(i64, u64)]) -> usize {
        let mut s = Steps::new(4);
        for &(t, m) in events {
            s.push(t, m);
        }
        s.completed()
    }

    #[test]
    fn steps_count_in_time_order_whatever_the_arrival() {
        assert_eq!(steps(&[(1, F), (2, F), (3, F), (4, S)]), 4);
        assert_eq!(steps(&[(4, S), (3, F), (1, F), (2, F)]), 4);
        // the success came before the third failure
        assert_eq!(steps(&[(1, F), (2, F), (3, S), (4, F)]), 3);
        assert_eq!(steps(&[(1, S), (2, S)]), 0);
        assert_eq!(steps(&[]), 0);
    }

    #[test]
    fn a_flood_of_one_kind_costs_no_more_than_the_sequence() {
        let mut s = Steps::new(4);
        for t in 0..100_000 {
            s.push(t, F);
        }
        s.push(100_000, S);
        assert_eq!(s.completed(), 4);
        assert!(s.events.len() <= 5, "{} events kept", s.events.len());
    }

    #[test]
    fn alternating_events_stay_bounded_and_exact_until_the_cap() {
        // success, failure, success, ...: no run to fold, yet the sequence
        // completes early and what follows is dropped
        let mut s = Steps::new(4);
        for t in 0..20_000 {
            s.push(t, if t.rem_euclid(2) == 0 { S } else { F });
        }
        assert_eq!(s.completed(), 4);
        assert!(s.events.len() <= 2 * MAX_EVENTS);
        // Two steps that can never complete: the state is capped.
        let mut s = Steps::new(3);
        for t in 0..50_000 {
            s.push(t, if t.rem_euclid(2) == 0 { 0b010 } else { 0b100 });
        }
        assert_eq!(s.completed(), 0);
        assert!(s.events.len() <= 2 * MAX_EVENTS);
    }
}
