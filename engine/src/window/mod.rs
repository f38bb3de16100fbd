//! Event-time windows: the buffer of recent rows, the watermark, and the
//! assignment of rows to tumbling or hopping windows.
//!
//! A window of spec (size, slide) starts at every multiple of `slide` (counted
//! from the Unix epoch, so one-minute windows align to the minute) and covers
//! `[start, start + size)`. The watermark is the largest event time seen minus
//! the allowed lateness, taken over the streams (spans, logs, metrics) as the
//! smallest of theirs. A window is final once the watermark reaches its end. A
//! row is late when its time is below its own stream's watermark as it arrives,
//! or when every window it belongs to was already evaluated (a stream that was
//! idle and comes back): it is counted, and not added to any window.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use ingest::Table;
use ingest::schema::time_type;

pub use crate::rules::definition::WindowSpec;

/// The event-time column of `batch` (every table has `time` first).
pub fn times(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, ArrowError> {
    batch
        .column_by_name("time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| ArrowError::SchemaError("the batch has no `time` timestamp column".into()))
}

/// Tracks the watermark. Each table is a stream of its own (the Collector
/// exports spans, logs and metrics separately, each in its own batches), so the
/// watermark is the smallest of the streams' newest event times, less the
/// allowed lateness. A stream that has fallen more than `idle_ns` behind the
/// newest one (metrics exported once a minute, or a signal that stopped) does
/// not hold the others back.
#[derive(Debug, Clone)]
pub struct Watermark {
    lateness_ns: i64,
    idle_ns: i64,
    newest: BTreeMap<Table, i64>,
    finished: bool,
}

/// How far a stream may trail the newest one before it counts as idle.
pub const IDLE_AFTER_NS: i64 = 60 * 1_000_000_000;

impl Watermark {
    pub fn new(lateness_ns: i64) -> Self {
        Watermark {
            lateness_ns,
            idle_ns: IDLE_AFTER_NS,
            newest: BTreeMap::new(),
            finished: false,
        }
    }

    /// The current watermark, or `None` before the first row.
    pub fn get(&self) -> Option<i64> {
        if self.finished {
            return self.newest.values().max().map(|_| i64::MAX);
        }
        let newest = *self.newest.values().max()?;
        let slowest = self
            .newest
            .values()
            .copied()
            .filter(|t| *t >= newest.saturating_sub(self.idle_ns))
            .min()
            .unwrap_or(newest);
        Some(slowest.saturating_sub(self.lateness_ns))
    }

    /// The watermark of one stream alone: its newest time less the lateness.
    pub fn of(&self, table: Table) -> Option<i64> {
        self.newest
            .get(&table)
            .map(|t| t.saturating_sub(self.lateness_ns))
    }

    pub fn observe(&mut self, table: Table, time: i64) {
        let t = self.newest.entry(table).or_insert(time);
        *t = (*t).max(time);
    }

    /// Moves every stream seen so far to at least `time`.
    pub fn advance(&mut self, time: i64) {
        for t in self.newest.values_mut() {
            *t = (*t).max(time);
        }
    }

    /// Closes every window: used at the end of a replay.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

/// A batch kept in the buffer, with its time range.
#[derive(Debug, Clone)]
struct Held {
    batch: RecordBatch,
    min: i64,
    max: i64,
}

/// The rows not yet needed by every window, per table.
#[derive(Debug, Default)]
pub struct Buffer {
    tables: BTreeMap<Table, Vec<Held>>,
    rows: usize,
}

impl Buffer {
    /// Adds the on-time rows of `batch`, those at or after `keep_from`; returns
    /// how many rows were late.
    pub fn push(
        &mut self,
        table: Table,
        batch: RecordBatch,
        keep_from: Option<i64>,
    ) -> Result<usize, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let (batch, late) = match keep_from {
            Some(w) => {
                let t = times(&batch)?;
                let keep: BooleanArray = t.iter().map(|v| Some(v.is_some_and(|v| v >= w))).collect();
                let kept = keep.true_count();
                if kept == batch.num_rows() {
                    (batch, 0)
                } else {
                    (filter_record_batch(&batch, &keep)?, batch.num_rows() - kept)
                }
            }
            None => (batch, 0),
        };
        if batch.num_rows() > 0 {
            let t = times(&batch)?;
            let (min, max) = t
                .iter()
                .flatten()
                .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            self.rows += batch.num_rows();
            self.tables
                .entry(table)
                .or_default()
                .push(Held { batch, min, max });
        }
        Ok(late)
    }

    /// Forgets batches whose every row is before `keep_from`.
    pub fn prune(&mut self, keep_from: i64) {
        for held in self.tables.values_mut() {
            held.retain(|h| {
                let keep = h.max >= keep_from;
                if !keep {
                    self.rows -= h.batch.num_rows();
                }
                keep
            });
        }
    }

    /// Rows held, across tables.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The batches of `table` that may hold rows in `[from, to)`.
    fn overlapping(&self, table: Table, from: i64, to: i64) -> impl Iterator<Item = &RecordBatch> {
        self.tables
            .get(&table)
            .into_iter()
            .flatten()
            .filter(move |h| h.max >= from && h.min < to)
            .map(|h| &h.batch)
    }
}

/// The schema of a table as rules see it: `window_start` and `window_end` first.
pub fn windowed_schema(schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("window_start", time_type(), false),
        Field::new("window_end", time_type(), false),
    ];
    fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

/// The windows of `spec` whose starts lie in `[first_start, last_start]`, with
/// the rows of `table` that fall in each: every row once per window it is in.
pub fn assign(
    buffer: &Buffer,
    table: Table,
    spec: WindowSpec,
    first_start: i64,
    last_start: i64,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let schema = windowed_schema(&table.schema());
    let to = last_start.saturating_add(spec.size_ns);
    let mut out = Vec::new();
    for batch in buffer.overlapping(table, first_start, to) {
        let t = times(batch)?;
        for j in 0..spec.overlap() {
            let mut starts = Vec::with_capacity(t.len());
            let mut keep = Vec::with_capacity(t.len());
            for v in t.iter() {
                let start = v.map(|v| v.div_euclid(spec.slide_ns) * spec.slide_ns - j * spec.slide_ns);
                match start {
                    Some(s) if s >= first_start && s <= last_start => {
                        keep.push(true);
                        starts.push(s);
                    }
                    _ => keep.push(false),
                }
            }
            if starts.is_empty() {
                continue;
            }
            let mask = BooleanArray::from(keep);
            let rows = filter_record_batch(batch, &mask)?;
            let ends: Vec<i64> = starts.iter().map(|s| s + spec.size_ns).collect();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(TimestampNanosecondArray::from(starts).with_timezone("UTC")),
                Arc::new(TimestampNanosecondArray::from(ends).with_timezone("UTC")),
            ];
            columns.extend(rows.columns().iter().cloned());
            out.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
    }
    Ok(out)
}

/// Start of the last window of `spec` that is final at `watermark`, if any.
pub fn last_final_start(spec: WindowSpec, watermark: i64) -> i64 {
    // final: start + size <= watermark
    (watermark.saturating_sub(spec.size_ns)).div_euclid(spec.slide_ns) * spec.slide_ns
}

#[cfg(test)]
mod tests;
