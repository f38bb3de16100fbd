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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, TimestampNanosecondArray, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use ingest::Table;
use ingest::schema::time_type;

pub use crate::rules::definition::WindowSpec;

/// The column windows and watermarks use: `end_time` for spans, `time` for
/// logs and metrics. A span is exported when it ends, so its end is what keeps
/// the order of arrival; windowed by its start, every request slower than the
/// allowed lateness would arrive late, and latency rules would lose exactly
/// the slow requests they look for.
pub const SPAN_EVENT_TIME: &str = "end_time";

/// The event-time column of `batch`: [`SPAN_EVENT_TIME`] where the table has
/// it (spans), else `time`.
pub fn times(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, ArrowError> {
    batch
        .column_by_name(SPAN_EVENT_TIME)
        .or_else(|| batch.column_by_name("time"))
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| ArrowError::SchemaError("the batch has no `time` timestamp column".into()))
}

/// The index of the event-time column (see [`times`]) in a table's schema.
pub fn times_index(schema: &Schema) -> Result<usize, ArrowError> {
    schema
        .index_of(SPAN_EVENT_TIME)
        .or_else(|_| schema.index_of("time"))
}

/// One input stream: a table, from one partition of its source (a Kafka
/// partition; 0 for a capture file or the OTLP receiver). Each stream arrives
/// in order of its own; streams interleave arbitrarily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stream {
    pub table: Table,
    pub partition: i32,
}

impl From<Table> for Stream {
    fn from(table: Table) -> Self {
        Stream {
            table,
            partition: 0,
        }
    }
}

/// When a stream stops holding the watermark back.
#[derive(Debug, Clone, Copy)]
pub enum Idleness {
    /// when it trails the newest stream by more than this much event time
    /// (replay: deterministic, whatever the machine's speed)
    EventTime(i64),
    /// when nothing arrived on it for this long (live: a caught-up Kafka
    /// partition or a quiet signal must not stop the others)
    WallClock(std::time::Duration),
}

#[derive(Debug, Clone)]
struct StreamState {
    /// `None` for a stream expected but not heard from yet (an assigned partition)
    newest: Option<i64>,
    arrived: std::time::Instant,
}

/// Tracks the watermark: the smallest of the active streams' newest event
/// times, less the allowed lateness. Spans, logs and metrics are exported
/// separately, and Kafka partitions are read in no set order, so each is a
/// stream of its own; an idle stream does not hold the others back.
#[derive(Debug, Clone)]
pub struct Watermark {
    lateness_ns: i64,
    idleness: Idleness,
    streams: BTreeMap<Stream, StreamState>,
    /// the watermark never goes back
    floor: Option<i64>,
    finished: bool,
    /// since when the source is cut off (a broker unreachable, a rebalance):
    /// quiet streams are then absent, not idle, and hold the watermark
    suspended: Option<std::time::Instant>,
}

/// Replay's idleness: a stream a minute of event time behind the newest.
pub const IDLE_AFTER_NS: i64 = 60 * 1_000_000_000;

impl Watermark {
    pub fn new(lateness_ns: i64) -> Self {
        Watermark {
            lateness_ns,
            idleness: Idleness::EventTime(IDLE_AFTER_NS),
            streams: BTreeMap::new(),
            floor: None,
            finished: false,
            suspended: None,
        }
    }

    pub fn with_idleness(mut self, idleness: Idleness) -> Self {
        self.idleness = idleness;
        self
    }

    /// The current watermark, or `None` before the first row.
    pub fn get(&self) -> Option<i64> {
        if self.finished {
            return self
                .streams
                .values()
                .find(|s| s.newest.is_some())
                .map(|_| i64::MAX);
        }
        let newest = self.streams.values().filter_map(|s| s.newest).max()?;
        let active = |s: &&StreamState| match (self.idleness, s.newest) {
            (Idleness::WallClock(quiet), _) => {
                self.suspended.is_some() || s.arrived.elapsed() < quiet
            }
            (Idleness::EventTime(gap), Some(t)) => t >= newest.saturating_sub(gap),
            (Idleness::EventTime(_), None) => false,
        };
        let active: Vec<Option<i64>> = self
            .streams
            .values()
            .filter(active)
            .map(|s| s.newest)
            .collect();
        if active.contains(&None) {
            // an expected stream has not spoken yet: hold where we are
            return self.floor;
        }
        let slowest = active.into_iter().flatten().min().unwrap_or(newest);
        let w = slowest.saturating_sub(self.lateness_ns);
        Some(self.floor.map_or(w, |f| f.max(w)))
    }

    /// The watermark of one stream alone: its newest time less the lateness.
    pub fn of(&self, stream: Stream) -> Option<i64> {
        self.streams
            .get(&stream)
            .and_then(|s| s.newest)
            .map(|t| t.saturating_sub(self.lateness_ns))
    }

    /// Declares a stream that will come (a Kafka partition just assigned): it
    /// holds the watermark back until it delivers rows or goes idle.
    pub fn expect(&mut self, stream: Stream) {
        self.streams.entry(stream).or_insert(StreamState {
            newest: None,
            arrived: std::time::Instant::now(),
        });
    }

    pub fn observe(&mut self, stream: Stream, time: i64) {
        let now = std::time::Instant::now();
        let s = self.streams.entry(stream).or_insert(StreamState {
            newest: None,
            arrived: now,
        });
        s.newest = Some(s.newest.map_or(time, |t| t.max(time)));
        s.arrived = now;
        self.floor = self.get();
    }

    /// Moves every stream seen so far to at least `time`.
    pub fn advance(&mut self, time: i64) {
        for s in self.streams.values_mut() {
            s.newest = Some(s.newest.map_or(time, |t| t.max(time)));
        }
        self.floor = self.get();
    }

    /// The source is cut off (its brokers do not answer, its partitions are
    /// being reassigned): until [`Watermark::resume`], a quiet stream is
    /// absent, not idle, so it holds the watermark where it is.
    pub fn suspend(&mut self) {
        self.suspended.get_or_insert_with(std::time::Instant::now);
    }

    /// The source is back: the time it was cut off does not count as quiet.
    pub fn resume(&mut self) {
        if let Some(since) = self.suspended.take() {
            let now = std::time::Instant::now();
            let away = now - since;
            for s in self.streams.values_mut() {
                // quiet before the cut-off counts, quiet during it does not
                s.arrived = if s.arrived <= since {
                    s.arrived + away
                } else {
                    now
                };
            }
        }
    }

    /// Whether the source is cut off.
    pub fn is_suspended(&self) -> bool {
        self.suspended.is_some()
    }

    /// Closes every window: used at the end of a replay.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

/// A batch kept in the buffer: its rows, its time range, and an id no other
/// batch of the process has (the key under which the rules' scans keep what
/// they made of it, see `rules::snapshot`).
#[derive(Debug, Clone)]
pub struct Buffered {
    pub id: u64,
    pub batch: RecordBatch,
    pub min: i64,
    pub max: i64,
    /// the memory its columns take ([`RecordBatch::get_array_memory_size`])
    pub bytes: usize,
    /// the batches pushed that it holds, as (id, earliest event time) each:
    /// itself, or the small batches it joins ([`COMPACT_ROWS`]), so that
    /// joining them does not pass for rows arriving (`RangeSource::newer_than`)
    pub parts: Arc<[(u64, i64)]>,
}

impl Buffered {
    /// A batch of a table's rows, with a new id; an error if it has no
    /// event-time column.
    pub fn new(batch: RecordBatch) -> Result<Self, ArrowError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (min, max) = times(&batch)?
            .iter()
            .flatten()
            .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Buffered {
            id,
            bytes: batch.get_array_memory_size(),
            batch,
            min,
            max,
            parts: Arc::new([(id, min)]),
        })
    }
}

/// The default of [`Buffer::with_cap`] in live evaluation (`engine run
/// --max-buffered-rows`): about 3 GB at the 270-odd bytes a row the pack's
/// columns take (`engine/examples/buffer_memory.rs`).
pub const DEFAULT_MAX_BUFFERED_ROWS: usize = 10_000_000;

/// The rows not yet needed by every window, per table, up to a cap.
#[derive(Debug)]
pub struct Buffer {
    tables: BTreeMap<Table, Vec<Buffered>>,
    rows: usize,
    /// the memory of the batches held
    bytes: usize,
    /// rows held at most: see [`Buffer::with_cap`]
    cap: usize,
    /// the columns kept of each table's rows; a table not named keeps all:
    /// see [`Buffer::keep_columns`]
    columns: BTreeMap<Table, BTreeSet<String>>,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            tables: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            cap: usize::MAX,
            columns: BTreeMap::new(),
        }
    }
}

/// What became of a batch's rows: those not buffered, and why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// older than the stream's watermark or in windows already evaluated
    pub late: usize,
    /// on time, but beyond the buffer's cap
    pub refused: usize,
}

impl Buffer {
    /// A buffer that holds at most `rows` rows. Rows that would go beyond are
    /// not buffered: they are refused and counted ([`Pushed::refused`]), the
    /// first rows of a batch kept up to the cap. Their times still move the
    /// watermark, so windows keep closing and the buffer frees room; the
    /// rules see fewer rows while it is full.
    pub fn with_cap(rows: usize) -> Self {
        Buffer {
            cap: rows,
            ..Buffer::default()
        }
    }

    /// Changes the cap of [`Buffer::with_cap`]; rows held are kept.
    pub fn set_cap(&mut self, rows: usize) {
        self.cap = rows;
    }

    /// Keeps of the rows of each table pushed from now on only the columns
    /// `columns` names for it (a table absent or `None`: every column), and
    /// always the event time and the columns that are never null (a scan
    /// fills a column a batch lacks with nulls, which those could not hold).
    /// Rows already held keep the columns they have.
    pub fn keep_columns(&mut self, columns: BTreeMap<Table, Option<BTreeSet<String>>>) {
        self.columns = columns
            .into_iter()
            .filter_map(|(table, c)| Some((table, c?)))
            .collect();
    }

    /// `batch` with the columns kept of `table` ([`Buffer::keep_columns`]).
    fn project(&self, table: Table, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let Some(keep) = self.columns.get(&table) else {
            return Ok(batch);
        };
        let schema = batch.schema();
        let time = times_index(&schema)?;
        let indices: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, f)| *i == time || !f.is_nullable() || keep.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        if indices.len() == schema.fields().len() {
            return Ok(batch);
        }
        batch.project(&indices)
    }

    /// Adds the on-time rows of `batch`, those at or after `keep_from`, up to
    /// the cap; says how many were late and how many refused.
    pub fn push(
        &mut self,
        table: Table,
        batch: RecordBatch,
        keep_from: Option<i64>,
    ) -> Result<Pushed, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(Pushed::default());
        }
        let batch = self.project(table, batch)?;
        let (batch, late) = match keep_from {
            Some(w) => {
                let t = times(&batch)?;
                let keep: BooleanArray =
                    t.iter().map(|v| Some(v.is_some_and(|v| v >= w))).collect();
                let kept = keep.true_count();
                if kept == batch.num_rows() {
                    (batch, 0)
                } else {
                    (filter_record_batch(&batch, &keep)?, batch.num_rows() - kept)
                }
            }
            None => (batch, 0),
        };
        let room = self.cap.saturating_sub(self.rows);
        let refused = batch.num_rows().saturating_sub(room);
        let batch = if refused > 0 {
            batch.slice(0, room)
        } else {
            batch
        };
        if batch.num_rows() > 0 {
            let batch = if batch.num_rows() >= COMPACT_ROWS {
                share_repeated_text(batch)?
            } else {
                batch
            };
            let held = Buffered::new(batch)?;
            self.rows += held.batch.num_rows();
            self.bytes += held.bytes;
            let batches = self.tables.entry(table).or_default();
            batches.push(held);
            if let Some((before, after)) = compact(batches)? {
                self.bytes = self.bytes - before + after;
            }
        }
        Ok(Pushed { late, refused })
    }

    /// Forgets batches whose every row is before `keep_from`.
    pub fn prune(&mut self, keep_from: i64) {
        for held in self.tables.values_mut() {
            held.retain(|h| {
                let keep = h.max >= keep_from;
                if !keep {
                    self.rows -= h.batch.num_rows();
                    self.bytes -= h.bytes;
                }
                keep
            });
        }
    }

    /// Rows held, across tables.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The memory of the rows held, across tables: what their batches' columns
    /// take, whole buffers counted for each batch (a batch cut at the cap
    /// counts the buffers it shares with the rows refused).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Per table, the rows held and each column's bytes (its Arrow buffers),
    /// largest first: where the buffer's memory goes.
    pub fn column_bytes(&self) -> BTreeMap<Table, (usize, Vec<(String, usize)>)> {
        let mut out = BTreeMap::new();
        for (table, batches) in &self.tables {
            let mut columns: BTreeMap<String, usize> = BTreeMap::new();
            let mut rows = 0;
            for b in batches {
                rows += b.batch.num_rows();
                for (f, c) in b.batch.schema().fields().iter().zip(b.batch.columns()) {
                    *columns.entry(f.name().clone()).or_default() += c.get_array_memory_size();
                }
            }
            let mut columns: Vec<(String, usize)> = columns.into_iter().collect();
            columns.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            out.insert(*table, (rows, columns));
        }
        out
    }

    /// The batches of `table` that may hold rows in `[from, to)`.
    pub fn overlapping(&self, table: Table, from: i64, to: i64) -> impl Iterator<Item = &Buffered> {
        self.tables
            .get(&table)
            .into_iter()
            .flatten()
            .filter(move |h| h.max >= from && h.min < to)
    }
}

/// Batches of fewer rows than this are joined into one once the small
/// batches at the end of a table's list hold this many rows together.
pub const COMPACT_ROWS: usize = 8192;

/// Joins the small batches at the end of `batches` (fewer than
/// [`COMPACT_ROWS`] rows each, of one schema) into one batch once they hold
/// [`COMPACT_ROWS`] rows together; gives the bytes they took and the bytes
/// the joined batch takes, if it did. Each column of a batch has buffers of
/// its own, each rounded up to 64 bytes and with room to spare: an export of
/// a few dozen records costs several times its rows in those. Joined, the
/// rows take what they hold, and each is copied once more, at most.
fn compact(batches: &mut Vec<Buffered>) -> Result<Option<(usize, usize)>, ArrowError> {
    let Some(last) = batches.last() else {
        return Ok(None);
    };
    let schema = last.batch.schema();
    let small = batches
        .iter()
        .rev()
        .take_while(|b| b.batch.num_rows() < COMPACT_ROWS && b.batch.schema() == schema)
        .count();
    let from = batches.len() - small;
    let rows: usize = batches[from..].iter().map(|b| b.batch.num_rows()).sum();
    if small < 2 || rows < COMPACT_ROWS {
        return Ok(None);
    }
    let before = batches[from..].iter().map(|b| b.bytes).sum();
    let joined = share_repeated_text(concat_batches(
        &schema,
        batches[from..].iter().map(|b| &b.batch),
    )?)?;
    let parts: Vec<(u64, i64)> = batches[from..]
        .iter()
        .flat_map(|b| b.parts.iter().copied())
        .collect();
    batches.truncate(from);
    let mut joined = Buffered::new(joined)?;
    joined.parts = parts.into();
    let after = joined.bytes;
    batches.push(joined);
    Ok(Some((before, after)))
}

/// Text columns whose values are unique or nearly (ids): never worth a
/// dictionary, so not tried.
const UNIQUE_TEXT: [&str; 3] = ["trace_id", "span_id", "parent_span_id"];

/// `batch` with each text column whose values repeat (service, span and event
/// names, routes, kinds, user agents, ...) stored once per distinct value: a
/// dictionary of the values and a one- or two-byte key per row, where that
/// takes at most three quarters of the plain column. The scans give them back
/// as plain text (`rules::snapshot`), so rules never see the difference; a
/// batch of the buffer is encoded once, when it is at least [`COMPACT_ROWS`]
/// rows (as pushed, or joined), so that its dictionaries serve many rows.
pub fn share_repeated_text(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    use arrow::datatypes::DataType;
    let schema = batch.schema();
    let mut changed = false;
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let shared = if field.data_type() == &DataType::Utf8
            && !UNIQUE_TEXT.contains(&field.name().as_str())
        {
            encoded(column)
        } else {
            None
        };
        match shared {
            Some(c) => {
                changed = true;
                fields.push(field.as_ref().clone().with_data_type(c.data_type().clone()));
                columns.push(c);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    if !changed {
        return Ok(batch);
    }
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(schema), columns, &options)
}

/// `column` (text) as a dictionary with the smallest key that holds its
/// distinct values (u8, else u16), if that takes at most 3/4 of its memory.
fn encoded(column: &ArrayRef) -> Option<ArrayRef> {
    use arrow::datatypes::DataType;
    let plain = column.get_array_memory_size();
    [DataType::UInt8, DataType::UInt16]
        .into_iter()
        .find_map(|key| {
            let to = DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8));
            arrow::compute::cast(column, &to).ok()
        })
        .filter(|c| c.get_array_memory_size() * 4 <= plain * 3)
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

/// The rows of `batch` (a table's own columns) placed in every window of
/// `spec` starting in `[first_start, last_start]` that holds them, as rows of
/// the windowed table projected to `projection` (indices into
/// [`windowed_schema`]: 0 is `window_start`, 1 `window_end`, then the
/// batch's columns); `schema` is that projected schema. One `take` per
/// projected column: a column no query reads is never copied.
pub fn expand(
    batch: &RecordBatch,
    spec: WindowSpec,
    first_start: i64,
    last_start: i64,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>, ArrowError> {
    let t = times(batch)?;
    let mut rows: Vec<u32> = Vec::new();
    let mut starts: Vec<i64> = Vec::new();
    for (row, v) in t.iter().enumerate() {
        let Some(v) = v else { continue };
        let newest = v.div_euclid(spec.slide_ns) * spec.slide_ns;
        for j in 0..spec.overlap() {
            let start = newest - j * spec.slide_ns;
            if start >= first_start && start <= last_start {
                rows.push(row as u32);
                starts.push(start);
            }
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let indices = UInt32Array::from(rows);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &i in projection {
        columns.push(match i {
            0 => Arc::new(TimestampNanosecondArray::from(starts.clone()).with_timezone("UTC")),
            1 => Arc::new(
                TimestampNanosecondArray::from(
                    starts.iter().map(|s| s + spec.size_ns).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            i => {
                // shared text (`share_repeated_text`) goes back to what rules read
                let taken = take(batch.column(i - 2).as_ref(), &indices, None)?;
                let want = schema.field(columns.len()).data_type();
                if taken.data_type() == want {
                    taken
                } else {
                    arrow::compute::cast(&taken, want)?
                }
            }
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map(Some)
}

/// Start of the last window of `spec` that is final at `watermark`, if any.
pub fn last_final_start(spec: WindowSpec, watermark: i64) -> i64 {
    // final: start + size <= watermark
    (watermark.saturating_sub(spec.size_ns)).div_euclid(spec.slide_ns) * spec.slide_ns
}

#[cfg(test)]
mod tests;
