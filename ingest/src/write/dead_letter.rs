//! Rejected telemetry: counted, logged once, and kept aside.
//!
//! Every source hands what it rejects to one [`Rejections`]:
//! - **counted**, all of it, in the process's shared [`RejectCounts`] (a message
//!   rejected whole counts 1 for its reason; each record skipped inside an
//!   otherwise good message counts 1 for its own reason);
//! - **logged once**: the first occurrence per (source, reason) is logged at
//!   `warn` with where it came from (`file:line`, `topic/partition/offset`, the
//!   client's address); later ones are only counted, so a flood of bad input
//!   cannot flood the log;
//! - **dead-lettered**: a message rejected whole goes to the [`DeadLetterSink`],
//!   if one is set: a JSON-lines file ([`DeadLetterFile`]) or a Kafka topic
//!   (`DeadLetterTopic`, `otlp_dead_letter` by default, with the `kafka` feature). Records skipped inside a
//!   good message are not dead-lettered: the message's other rows were used, and
//!   the message itself is where it came from.
//!
//! ```
//! use std::sync::Arc;
//! use ingest::{RejectCounts, Reason, DecodeError};
//! use ingest::write::dead_letter::{DeadLetter, Rejections};
//!
//! let counts = Arc::new(RejectCounts::default());
//! let rejections = Rejections::new(counts.clone());
//! let error = DecodeError::new(Reason::BadJson, "expected value at line 1 column 1");
//! rejections.message(&DeadLetter::new("file", "capture.jsonl:3", &error, b"not json"));
//! assert_eq!(counts.snapshot(), vec![(Reason::BadJson, 1)]);
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::{DecodeError, Reason, RejectCounts, Rejected};

#[cfg(feature = "kafka")]
mod topic;
#[cfg(feature = "kafka")]
pub use topic::DeadLetterTopic;

/// The default dead-letter topic.
pub const DEFAULT_TOPIC: &str = "otlp_dead_letter";

/// Raw bytes kept in a dead letter by default: 64 KiB in a file, and Kafka's
/// default message size limit leaves room for 900 KiB in a topic.
pub const DEFAULT_FILE_RAW_LIMIT: usize = 64 << 10;
/// See [`DEFAULT_FILE_RAW_LIMIT`].
pub const DEFAULT_TOPIC_RAW_LIMIT: usize = 900 << 10;

/// A message rejected whole, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// the kind of source: `file`, `kafka`, `otlp_grpc`, `otlp_http`
    pub source: &'a str,
    /// where in the source: `capture.jsonl:12`, `otlp_spans/3/1042`, a client address
    pub origin: &'a str,
    /// why
    pub reason: Reason,
    /// the decoder's words
    pub detail: &'a str,
    /// the message's bytes as received
    pub raw: &'a [u8],
}

impl<'a> DeadLetter<'a> {
    /// A dead letter for a message that failed with `error`.
    pub fn new(source: &'a str, origin: &'a str, error: &'a DecodeError, raw: &'a [u8]) -> Self {
        DeadLetter {
            source,
            origin,
            reason: error.reason,
            detail: &error.detail,
            raw,
        }
    }
}

/// An error writing a dead letter.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The dead-letter file could not be opened or written.
    #[error("dead-letter file {path}: {source}")]
    File {
        /// the file
        path: PathBuf,
        /// what the operating system said
        source: io::Error,
    },
    /// The dead-letter topic's producer failed.
    #[cfg(feature = "kafka")]
    #[error("dead-letter topic {topic} on {brokers}: {source}")]
    Kafka {
        /// the topic
        topic: String,
        /// the brokers
        brokers: String,
        /// what librdkafka said
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// Where dead letters go.
pub trait DeadLetterSink: Send {
    /// Keeps one dead letter.
    fn send(&mut self, letter: &DeadLetter<'_>) -> Result<(), DeadLetterError>;
    /// Makes what was sent durable (flushes a file, waits for the producer).
    fn flush(&mut self) -> Result<(), DeadLetterError>;
}

/// Dead letters as JSON lines: `{"time_unix_ms", "source", "origin", "reason",
/// "detail", "raw_size", "raw_truncated", "raw_base64"}`, the raw bytes cut to a
/// limit. Appends to an existing file.
pub struct DeadLetterFile {
    path: PathBuf,
    out: BufWriter<File>,
    raw_limit: usize,
}

impl fmt::Debug for DeadLetterFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DeadLetterFile {
    /// Opens (creates or appends to) a dead-letter file, keeping up to
    /// [`DEFAULT_FILE_RAW_LIMIT`] raw bytes per letter.
    pub fn create(path: impl AsRef<Path>) -> Result<DeadLetterFile, DeadLetterError> {
        Self::with_limit(path, DEFAULT_FILE_RAW_LIMIT)
    }

    /// Like [`DeadLetterFile::create`], keeping up to `raw_limit` raw bytes per letter.
    pub fn with_limit(
        path: impl AsRef<Path>,
        raw_limit: usize,
    ) -> Result<DeadLetterFile, DeadLetterError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| DeadLetterError::File {
                path: path.clone(),
                source,
            })?;
        Ok(DeadLetterFile {
            path,
            out: BufWriter::new(file),
            raw_limit,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl DeadLetterSink for DeadLetterFile {
    fn send(&mut self, letter: &DeadLetter<'_>) -> Result<(), DeadLetterError> {
        let kept = &letter.raw[..letter.raw.len().min(self.raw_limit)];
        let line = serde_json::json!({
            "time_unix_ms": unix_ms(),
            "source": letter.source,
            "origin": letter.origin,
            "reason": letter.reason.as_str(),
            "detail": letter.detail,
            "raw_size": letter.raw.len(),
            "raw_truncated": kept.len() < letter.raw.len(),
            "raw_base64": base64::engine::general_purpose::STANDARD.encode(kept),
        });
        let mut write = || -> io::Result<()> {
            serde_json::to_writer(&mut self.out, &line)?;
            self.out.write_all(b"\n")
        };
        write().map_err(|source| DeadLetterError::File {
            path: self.path.clone(),
            source,
        })
    }

    fn flush(&mut self) -> Result<(), DeadLetterError> {
        self.out.flush().map_err(|source| DeadLetterError::File {
            path: self.path.clone(),
            source,
        })
    }
}

/// Counts, logs once per (source, reason), and dead-letters what sources reject.
/// Shared by the sources of a process (`Arc<Rejections>`).
pub struct Rejections {
    counts: Arc<RejectCounts>,
    seen: Mutex<Vec<(String, Reason)>>,
    sink: Option<Mutex<Box<dyn DeadLetterSink>>>,
    sink_failures: AtomicU64,
}

impl fmt::Debug for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejections")
            .field("counts", &self.counts.snapshot())
            .field("has_sink", &self.sink.is_some())
            .field("sink_failures", &self.sink_failures())
            .finish()
    }
}

impl Rejections {
    /// Counting into `counts`, logging once, with no dead-letter sink.
    pub fn new(counts: Arc<RejectCounts>) -> Rejections {
        Rejections {
            counts,
            seen: Mutex::new(Vec::new()),
            sink: None,
            sink_failures: AtomicU64::new(0),
        }
    }

    /// Also dead-letters messages rejected whole into `sink`.
    pub fn with_sink(mut self, sink: Box<dyn DeadLetterSink>) -> Rejections {
        self.sink = Some(Mutex::new(sink));
        self
    }

    /// The counts this writes to.
    pub fn counts(&self) -> &Arc<RejectCounts> {
        &self.counts
    }

    /// Dead letters that could not be written (each failure is logged at `error`,
    /// the first one and then every 1000th).
    pub fn sink_failures(&self) -> u64 {
        self.sink_failures.load(Ordering::Relaxed)
    }

    /// True the first time (source, reason) is seen.
    fn first(&self, source: &str, reason: Reason) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // A handful of entries at most: a scan, no allocation on the hot path.
        if seen.iter().any(|(s, r)| s == source && *r == reason) {
            return false;
        }
        seen.push((source.to_string(), reason));
        true
    }

    /// A message rejected whole: counted, logged if first of its (source,
    /// reason), and dead-lettered.
    pub fn message(&self, letter: &DeadLetter<'_>) {
        self.counts.add(letter.reason, 1);
        if self.first(letter.source, letter.reason) {
            tracing::warn!(
                source = letter.source,
                origin = letter.origin,
                reason = letter.reason.as_str(),
                detail = letter.detail,
                "rejected a message; further {} rejections from {} are counted, not logged",
                letter.reason.as_str(),
                letter.source,
            );
        }
        if let Some(sink) = &self.sink {
            let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = sink.send(letter) {
                let n = self.sink_failures.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::error!(origin = letter.origin, error = %e, failures = n + 1, "cannot write a dead letter");
                }
            }
        }
    }

    /// Records skipped inside a message whose other rows were kept: each counted,
    /// the first of each (source, reason) logged. Not dead-lettered.
    pub fn records(&self, source: &str, origin: &dyn fmt::Display, rejected: &[Rejected]) {
        for r in rejected {
            self.counts.add(r.reason, 1);
            if self.first(source, r.reason) {
                tracing::warn!(
                    source,
                    origin = %origin,
                    reason = r.reason.as_str(),
                    detail = %r.detail,
                    "skipped a record; further {} records from {} are counted, not logged",
                    r.reason.as_str(),
                    source,
                );
            }
        }
    }

    /// A request or connection a source turned away without reading it (busy,
    /// over a cap, idle too long): counted under `reason`, the first of each
    /// (source, reason) logged with `detail`. Not dead-lettered: there is no
    /// message to keep.
    pub fn refused(&self, source: &str, reason: Reason, detail: &str, what: &str) {
        self.counts.add(reason, 1);
        if self.first(source, reason) {
            tracing::warn!(
                source,
                reason = reason.as_str(),
                detail,
                "{what}; further {} refusals from {} are counted, not logged",
                reason.as_str(),
                source,
            );
        }
    }

    /// Flushes the dead-letter sink, if any.
    pub fn flush(&self) -> Result<(), DeadLetterError> {
        match &self.sink {
            Some(sink) => sink.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_letters_are_json_lines_with_truncated_base64() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.jsonl");
        let counts = Arc::new(RejectCounts::default());
        let sink = DeadLetterFile::with_limit(&path, 4).expect("create");
        let rejections = Rejections::new(counts.clone()).with_sink(Box::new(sink));
        let error = DecodeError::new(
            Reason::CorruptProtobuf,
            "field 1 is not a message at byte 0",
        );
        rejections.message(&DeadLetter::new(
            "kafka",
            "otlp_spans/0/7",
            &error,
            b"\x01\x02\x03\x04\x05\x06",
        ));
        rejections.message(&DeadLetter::new("kafka", "otlp_spans/0/8", &error, b"\x01"));
        rejections.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["origin"], "otlp_spans/0/7");
        assert_eq!(lines[0]["reason"], "corrupt_protobuf");
        assert_eq!(lines[0]["raw_size"], 6);
        assert_eq!(lines[0]["raw_truncated"], true);
        assert_eq!(lines[0]["raw_base64"], "AQIDBA==");
        assert_eq!(lines[1]["raw_truncated"], false);
        assert_eq!(counts.snapshot(), vec![(Reason::CorruptProtobuf, 2)]);
    }

    #[test]
    fn logged_once_per_source_and_reason() {
        let rejections = Rejections::new(Arc::new(RejectCounts::default()));
        assert!(rejections.first("file", Reason::BadJson));
        assert!(!rejections.first("file", Reason::BadJson));
        assert!(rejections.first("kafka", Reason::BadJson));
        assert!(rejections.first("file", Reason::WrongType));
        let rejected = vec![
            Rejected {
                reason: Reason::AbsurdTimestamp,
                detail: "t=0".into(),
            };
            3
        ];
        rejections.records("file", &"a.jsonl:1", &rejected);
        assert_eq!(
            rejections.counts().snapshot(),
            vec![(Reason::AbsurdTimestamp, 3)]
        );
    }
}
