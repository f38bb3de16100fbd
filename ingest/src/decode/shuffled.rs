//! The records of a keyed topic: rows re-keyed by the repartition stage
//! (`engine shuffle`), and the watermarks its writers send beside them.
//!
//! A keyed topic (`otelguard_by_client_address`, issue 18) carries every
//! table's rows of one key value in one partition, so that one consumer sees
//! them together. Each record is:
//!
//! ```text
//! "OGS1"  kind  table  source partition  writer length  writer  body
//!  4 B    1 B   1 B    4 B (i32, LE)         1 B            n B     the rest
//! ```
//!
//! - kind `R`: rows, the body an Arrow IPC stream of one batch of the table,
//!   with only the columns the pack reads (a subset of the table's schema,
//!   same names and types); [`decode`] gives them back with the table's whole
//!   schema, the columns left out all null;
//! - kind `W`: a watermark, the body the newest event time (ns, little-endian
//!   i64) read so far from the source partition.
//!
//! `table` is 0 for spans, 1 for logs, 2 for metrics; the source partition
//! is the partition of the table's OTLP topic the rows were read from. Rows
//! of one source partition keep their order in every keyed partition, so a
//! reader tracks event time per (table, source partition), as an engine
//! reading the OTLP topics does, and a source partition moved from one
//! writer to another (a rebalance) goes on as the same stream. `writer`
//! names the repartitioning instance (UTF-8, at most 255 bytes), for logs. Records are written
//! by Kafka transactions: a reader in `read_committed` sees rows and the
//! watermark that covers them together or not at all.

use std::io::Cursor;

use arrow::array::{ArrayRef, new_null_array};
use arrow::record_batch::RecordBatch;

use super::{check_size, guarded};
use crate::{DecodeError, Decoded, Reason, Table};

const MAGIC: &[u8; 4] = b"OGS1";

/// One record of a keyed topic, decoded.
#[derive(Debug, Clone)]
pub enum Shuffled {
    /// rows of `decoded.table`, with the table's whole schema
    Rows {
        writer: String,
        partition: i32,
        decoded: Decoded,
    },
    /// the newest event time read from partition `partition` of `table`'s topic
    Watermark {
        writer: String,
        table: Table,
        partition: i32,
        newest_ns: i64,
    },
}

impl Shuffled {
    /// The repartitioning instance that wrote the record.
    pub fn writer(&self) -> &str {
        match self {
            Shuffled::Rows { writer, .. } | Shuffled::Watermark { writer, .. } => writer,
        }
    }

    /// The table the record is about.
    pub fn table(&self) -> Table {
        match self {
            Shuffled::Rows { decoded, .. } => decoded.table,
            Shuffled::Watermark { table, .. } => *table,
        }
    }

    /// The partition of the table's OTLP topic its rows come from.
    pub fn partition(&self) -> i32 {
        match self {
            Shuffled::Rows { partition, .. } | Shuffled::Watermark { partition, .. } => *partition,
        }
    }
}

fn table_code(table: Table) -> u8 {
    match table {
        Table::Spans => 0,
        Table::Logs => 1,
        Table::Metrics => 2,
    }
}

/// Where a keyed record's rows come from: the writer, and the table and
/// partition of the OTLP topic it read them from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub writer: &'a str,
    pub table: Table,
    pub partition: i32,
}

fn header(kind: u8, origin: Origin<'_>, body: usize) -> Vec<u8> {
    let name = origin.writer.as_bytes();
    let name = &name[..name.len().min(255)];
    let mut out = Vec::with_capacity(11 + name.len() + body);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, table_code(origin.table)]);
    out.extend_from_slice(&origin.partition.to_le_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// The record of `batch`, rows of the origin's table (any subset of its columns).
pub fn encode_rows(
    origin: Origin<'_>,
    batch: &RecordBatch,
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = header(b'R', origin, batch.get_array_memory_size());
    let mut ipc = arrow_ipc::writer::StreamWriter::try_new(&mut out, batch.schema_ref())?;
    ipc.write(batch)?;
    ipc.finish()?;
    drop(ipc);
    Ok(out)
}

/// The watermark record of a source partition: the newest event time read from it.
pub fn encode_watermark(origin: Origin<'_>, newest_ns: i64) -> Vec<u8> {
    let mut out = header(b'W', origin, 8);
    out.extend_from_slice(&newest_ns.to_le_bytes());
    out
}

fn bad(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(Reason::UnknownEncoding, detail)
}

/// Decodes one record of a keyed topic. A record that is not one, an Arrow
/// stream that does not parse, or a column the table does not have (or has
/// with another type) is an error; the reader goes on with the next record.
pub fn decode(bytes: &[u8]) -> Result<Shuffled, DecodeError> {
    check_size(bytes)?;
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a keyed-topic record (no OGS1 mark)"))?;
    let [kind, table, p0, p1, p2, p3, len, rest @ ..] = rest else {
        return Err(bad("a keyed-topic record cut short in its header"));
    };
    let partition = i32::from_le_bytes([*p0, *p1, *p2, *p3]);
    let table = match table {
        0 => Table::Spans,
        1 => Table::Logs,
        2 => Table::Metrics,
        t => return Err(bad(format!("a keyed-topic record of table {t}: none is"))),
    };
    let len = usize::from(*len);
    if rest.len() < len {
        return Err(bad("a keyed-topic record cut short in its writer's name"));
    }
    let (name, body) = rest.split_at(len);
    let writer = String::from_utf8_lossy(name).into_owned();
    match kind {
        b'W' => {
            let newest: [u8; 8] = body
                .try_into()
                .map_err(|_| bad(format!("a watermark record of {} bytes, not 8", body.len())))?;
            Ok(Shuffled::Watermark {
                writer,
                table,
                partition,
                newest_ns: i64::from_le_bytes(newest),
            })
        }
        b'R' => {
            let batch = guarded("Arrow IPC", bytes, || rows(table, body))?;
            Ok(Shuffled::Rows {
                writer,
                partition,
                decoded: batch,
            })
        }
        k => Err(bad(format!(
            "a keyed-topic record of kind {k}: neither rows nor a watermark"
        ))),
    }
}

/// The rows of an Arrow IPC stream, widened to `table`'s schema.
fn rows(table: Table, body: &[u8]) -> Result<Decoded, DecodeError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(body), None)
        .map_err(|e| DecodeError::new(Reason::CorruptProtobuf, format!("Arrow IPC: {e}")))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(
            batch.map_err(|e| {
                DecodeError::new(Reason::CorruptProtobuf, format!("Arrow IPC: {e}"))
            })?,
        );
    }
    let schema = table.schema();
    let mut whole = Vec::with_capacity(batches.len());
    for batch in &batches {
        for field in batch.schema().fields() {
            match schema.field_with_name(field.name()) {
                Ok(f) if f.data_type() == field.data_type() => {}
                Ok(f) => {
                    return Err(DecodeError::new(
                        Reason::WrongType,
                        format!(
                            "column {} of {} is {}, not {}",
                            field.name(),
                            table.name(),
                            field.data_type(),
                            f.data_type()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(DecodeError::new(
                        Reason::WrongType,
                        format!("{} has no column {}", table.name(), field.name()),
                    ));
                }
            }
        }
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                Some(c) => c.clone(),
                None => new_null_array(f.data_type(), batch.num_rows()),
            })
            .collect();
        let widened = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| DecodeError::new(Reason::WrongType, format!("{}: {e}", table.name())))?;
        whole.push(widened);
    }
    let batch = match whole.len() {
        0 => RecordBatch::new_empty(schema),
        1 => whole.pop().expect("one batch"),
        _ => arrow::compute::concat_batches(&schema, &whole)
            .map_err(|e| DecodeError::new(Reason::WrongType, e.to_string()))?,
    };
    Ok(Decoded {
        table,
        batch,
        rejected: Vec::new(),
    })
}

/// The partition of a key value among `partitions`: FNV-1a of its bytes, so
/// that every writer, whatever its build, sends a value to the same
/// partition. `None` (a row without the key) has a partition of its own
/// choosing too: rows without the key are grouped together by the rules.
pub fn partition_of(key: Option<&[u8]>, partitions: u32) -> i32 {
    let h = key.map_or(0, crate::fnv1a64);
    (h % u64::from(partitions.max(1))) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn origin(writer: &str, table: Table, partition: i32) -> Origin<'_> {
        Origin {
            writer,
            table,
            partition,
        }
    }

    fn some_logs() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", crate::schema::time_type(), false),
            Field::new("client_address", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![1_000, 2_000]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![Some("192.0.2.1"), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_come_back_with_the_whole_schema_and_the_rest_null() {
        let logs = Table::Logs.schema();
        let record = encode_rows(origin("shuffle-a", Table::Logs, 2), &some_logs()).unwrap();
        let Shuffled::Rows {
            writer,
            partition,
            decoded,
        } = decode(&record).unwrap()
        else {
            panic!("rows expected");
        };
        assert_eq!((writer.as_str(), partition), ("shuffle-a", 2));
        assert_eq!(decoded.table, Table::Logs);
        assert_eq!(decoded.batch.schema(), logs);
        assert_eq!(decoded.batch.num_rows(), 2);
        let address = decoded.batch.column_by_name("client_address").unwrap();
        assert_eq!(address.null_count(), 1);
        let body = decoded.batch.column_by_name("body").unwrap();
        assert_eq!(body.null_count(), 2, "a column left out is all null");
    }

    #[test]
    fn a_watermark_round_trips() {
        let record = encode_watermark(origin("w", Table::Metrics, 70_000), -5);
        let Shuffled::Watermark {
            writer,
            table,
            partition,
            newest_ns,
        } = decode(&record).unwrap()
        else {
            panic!("a watermark expected");
        };
        assert_eq!(
            (writer.as_str(), table, partition, newest_ns),
            ("w", Table::Metrics, 70_000, -5)
        );
    }

    #[test]
    fn broken_records_are_errors_not_panics() {
        let good = encode_rows(origin("w", Table::Logs, 0), &some_logs()).unwrap();
        for cut in [0, 3, 6, 8, 11, 20, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        for i in (10..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
        }
        let _ = decode(&flipped); // an error or rows, never a panic
        assert!(decode(b"OGS1X\x00\x00\x00\x00\x00\x00").is_err());
        assert!(decode(b"OGS1W\x09\x00\x00\x00\x00\x00").is_err());
        assert!(decode(b"OGS1W\x00\x00\x00\x00\x00\x00123").is_err());
        assert!(decode(b"OGS1W\x00\x00\x00\x00\x00\x09ab").is_err());
    }

    #[test]
    fn a_column_of_another_type_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("body", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        let record = encode_rows(origin("w", Table::Logs, 0), &batch).unwrap();
        let e = decode(&record).unwrap_err();
        assert_eq!(e.reason, Reason::WrongType);
        assert!(e.detail.contains("column body of logs"), "{e}");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(
            partition_of(Some(b"192.0.2.1"), 6),
            partition_of(Some(b"192.0.2.1"), 6)
        );
        assert_eq!(partition_of(None, 6), 0);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            seen.insert(partition_of(Some(format!("10.0.0.{i}").as_bytes()), 6));
        }
        assert_eq!(seen.len(), 6, "200 addresses reach every partition");
        // the value is part of the format: every writer must agree on it
        assert_eq!(
            partition_of(Some(b"a"), 1000),
            (0xaf63_dc4c_8601_ec8cu64 % 1000) as i32
        );
    }
}
