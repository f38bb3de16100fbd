//! OpenTelemetry data (OTLP protobuf and OTLP/JSON) into Arrow record batches,
//! laid out by stage:
//!
//! - [`source`]: where messages come from: capture files
//!   ([`source::capture_reader`]), Kafka (`source::kafka`, with the `kafka`
//!   feature), the built-in OTLP receiver (`source::otlp_receiver`, with the
//!   `receiver` feature, on by default);
//! - [`decode`]: messages into rows, one module per signal
//!   ([`decode::spans`], [`decode::logs`], [`decode::metrics`]) over the
//!   protobuf wire reader and the OTLP/JSON parser;
//! - [`write`]: what ingest writes: captures ([`write::capture_writer`]) and
//!   the dead letters of what it refused ([`write::dead_letter`]).
//!
//! The schema of the tables is in [`schema`]. Ingest never evaluates a rule.

pub mod decode;
pub mod schema;
pub mod source;
pub mod write;

use arrow::record_batch::RecordBatch;
pub use schema::Table;

/// FNV-1a, 64 bits: a hash whose value every build and machine agrees on
/// (rule versions, the partition of a keyed row).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Why a message, or a record inside one, was rejected. Counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// protobuf that ends early or does not parse
    CorruptProtobuf,
    /// a JSON line that does not parse, or is not an OTLP object
    BadJson,
    /// a field or attribute of the wrong type (e.g. a status code that is not a number)
    WrongType,
    /// a timestamp of zero, before 2000 or after 2100
    AbsurdTimestamp,
    /// text that is not UTF-8
    InvalidUtf8,
    /// a message or attribute over the size limit
    Oversized,
    /// a message in neither otlp_proto nor otlp_json
    UnknownEncoding,
    /// a message that would decode to more bytes than its budget allows
    /// (`decode::budget_for`), refused before it is decoded in full
    OverBudget,
    /// a decoder panicked on the message (a bug the message triggers); treated
    /// as a message that does not decode
    DecoderPanic,
    /// a request the OTLP receiver turned away for now (429 /
    /// `RESOURCE_EXHAUSTED`): the queue or the bytes in flight are full
    Busy,
    /// a connection the OTLP receiver closed: over the connection cap, or
    /// idle or slow past its timeout
    Connection,
}

impl Reason {
    /// The reason as it appears in metrics and logs (`corrupt_protobuf`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CorruptProtobuf => "corrupt_protobuf",
            Reason::BadJson => "bad_json",
            Reason::WrongType => "wrong_type",
            Reason::AbsurdTimestamp => "absurd_timestamp",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::Oversized => "oversized",
            Reason::UnknownEncoding => "unknown_encoding",
            Reason::OverBudget => "over_budget",
            Reason::DecoderPanic => "decoder_panic",
            Reason::Busy => "busy",
            Reason::Connection => "connection",
        }
    }
}

/// A record inside an otherwise valid message that was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub reason: Reason,
    pub detail: String,
}

/// The rows one message carried (a capture line or record, a Kafka message, an
/// OTLP request): one table's batch, plus the records inside it that were skipped.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub table: Table,
    pub batch: RecordBatch,
    pub rejected: Vec<Rejected>,
}

/// A message that could not be decoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct DecodeError {
    pub reason: Reason,
    pub detail: String,
}

impl DecodeError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Counts of rejected messages and records, by reason, shared by every source of
/// one process and exposed by the engine as a metric.
#[derive(Debug, Default)]
pub struct RejectCounts {
    counts: std::sync::Mutex<std::collections::BTreeMap<Reason, u64>>,
}

impl RejectCounts {
    pub fn add(&self, reason: Reason, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(reason).or_default() += n;
    }

    /// A copy of the counts, in a stable order.
    pub fn snapshot(&self) -> Vec<(Reason, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(r, n)| (*r, *n)).collect()
    }
}
