//! Writing captures in the OpenTelemetry Collector `file` exporter's formats, from
//! raw messages as they arrive (the engine's `record` command). What is written
//! reads back with [`crate::source::capture_reader`].
//!
//! # Design: which format keeps what came in
//!
//! - [`CaptureFormat::Protobuf`] (the default: the exporter's `format: proto`):
//!   every message as OTLP protobuf behind its 4-byte big-endian length.
//!   Protobuf input is written **byte for byte as it came in** (nothing is
//!   parsed, so even a message that would not decode is kept as evidence);
//!   OTLP/JSON input is transcoded to protobuf (`decode::json_to_proto`), and
//!   JSON that does not parse cannot be written ([`CaptureError::Transcode`]).
//!   With [`Compression::Zstd`] each record is zstd-compressed on its own, as
//!   the exporter's `compression: zstd` does. Read back at the protobuf
//!   decoder's speed: no JSON is parsed.
//! - [`CaptureFormat::LengthPrefixed`]: the same framing with every message as
//!   it came in, OTLP/JSON included. A protobuf record does not say which
//!   signal it is; the reader finds out (see [`crate::source::capture_reader`]), and a capture of
//!   one signal can be named for it (`spans.pb`) to make that certain.
//! - [`CaptureFormat::JsonLines`] (the exporter's default `format: json`): one
//!   OTLP/JSON object per line, readable by people and by the Collector's
//!   `otlpjsonfile` receiver. OTLP/JSON input is written as it came in, except
//!   that its line breaks (whitespace between tokens in valid JSON) become spaces.
//!   Protobuf input is transcoded: parsed into `opentelemetry-proto`'s prost
//!   structs and written with their serde support (hex ids, 64-bit integers as
//!   strings, enums as numbers, as OTLP/JSON says); a protobuf message that does
//!   not parse cannot be written ([`CaptureError::Transcode`]) and is left to the
//!   dead-letter path. With [`Compression::Zstd`] the whole file is one zstd
//!   stream (`.jsonl.zst`).
//!
//! # The partition a message came from
//!
//! A capture of Kafka topics (`engine record --kafka`) keeps each message's
//! partition, so that a replay judges rows by their own partition's event
//! time, as the live run does (one stream per partition; merged, the
//! partitions' interleaving makes rows look late). The formats have no place
//! for it, so it is an extra field that the Collector's readers, like any
//! protobuf or OTLP/JSON reader, skip as unknown, and that [`crate::source::capture_reader`]
//! takes out before decoding ([`split_partition`]):
//! - an OTLP/JSON message gets a first key, `{"otelguardPartition":3,...`;
//! - a protobuf message is prefixed with field 1000 as a varint (bytes
//!   `c0 3e`, then the partition), a field no OTLP message has.
//!
//! A message without it (any other capture) is one stream per table.
//!
//! ```
//! use ingest::Table;
//! use ingest::write::capture_writer::{CaptureOptions, CaptureWriter};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("capture.pb");
//! let mut writer = CaptureWriter::create(&path, CaptureOptions::default())?;
//! writer.write(Table::Spans, b"")?; // an empty ExportTraceServiceRequest
//! let stats = writer.finish()?;
//! assert_eq!(stats.messages, 1);
//! assert_eq!(std::fs::read(&path)?, vec![0, 0, 0, 0]);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::Table;

/// How messages are framed in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureFormat {
    /// 4-byte big-endian length, then the message as OTLP protobuf (OTLP/JSON
    /// input transcoded): the Collector file exporter's `format: proto`.
    #[default]
    Protobuf,
    /// 4-byte big-endian length, then the message as received (protobuf or
    /// OTLP/JSON).
    LengthPrefixed,
    /// One OTLP/JSON object per line.
    JsonLines,
}

/// Compression of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// none
    #[default]
    None,
    /// zstd: each record for [`CaptureFormat::Protobuf`] and
    /// [`CaptureFormat::LengthPrefixed`], the whole file for
    /// [`CaptureFormat::JsonLines`]
    Zstd,
}

/// The encoding of a raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// OTLP protobuf (`otlp_proto`)
    Proto,
    /// OTLP/JSON (`otlp_json`)
    Json,
}

impl Encoding {
    /// OTLP/JSON when the first non-whitespace byte is `{`, else protobuf: the
    /// same rule as [`crate::decode::decode_any`].
    pub fn sniff(bytes: &[u8]) -> Encoding {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Proto,
        }
    }
}

/// How to write a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureOptions {
    /// the framing
    pub format: CaptureFormat,
    /// the compression
    pub compression: Compression,
    /// zstd level (0 means zstd's default, 3)
    pub zstd_level: i32,
}

impl CaptureOptions {
    /// The options a file name suggests: `.jsonl`/`.json` → JSON lines,
    /// `.jsonl.zst`/`.json.zst` → zstd JSON lines; `.pb`/`.binpb` → protobuf
    /// records, uncompressed; any other name (`.pb.zst`, none) → protobuf
    /// records, each zstd-compressed: the Collector file exporter's
    /// `format: proto` with `compression: zstd`.
    ///
    /// ```
    /// use std::path::Path;
    /// use ingest::write::capture_writer::{CaptureFormat, CaptureOptions, Compression};
    /// let o = CaptureOptions::for_path(Path::new("attack.pb.zst"));
    /// assert_eq!((o.format, o.compression), (CaptureFormat::Protobuf, Compression::Zstd));
    /// let o = CaptureOptions::for_path(Path::new("attack.jsonl"));
    /// assert_eq!((o.format, o.compression), (CaptureFormat::JsonLines, Compression::None));
    /// ```
    pub fn for_path(path: &Path) -> CaptureOptions {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let zstd = name.ends_with(".zst") || name.ends_with(".zstd");
        let stem = name.trim_end_matches(".zstd").trim_end_matches(".zst");
        let json = stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson");
        let plain_protobuf = !zstd && (name.ends_with(".pb") || name.ends_with(".binpb"));
        CaptureOptions {
            format: if json {
                CaptureFormat::JsonLines
            } else {
                CaptureFormat::Protobuf
            },
            compression: if zstd || !(json || plain_protobuf) {
                Compression::Zstd
            } else {
                Compression::None
            },
            zstd_level: 0,
        }
    }
}

/// An error writing a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The capture file could not be created or written.
    #[error("capture {path}: {source}")]
    Io {
        /// the file (or `<writer>`)
        path: PathBuf,
        /// what the operating system said
        source: io::Error,
    },
    /// A protobuf message that does not parse cannot be written as JSON lines,
    /// nor OTLP/JSON that does not parse as protobuf.
    #[error("capture {path}: cannot transcode a {table} message: {detail}", table = table.name())]
    Transcode {
        /// the file
        path: PathBuf,
        /// the message's table
        table: Table,
        /// what the parser said
        detail: String,
    },
    /// A message over 4 GiB cannot be length-prefixed.
    #[error("capture {path}: a message of {len} bytes does not fit a 4-byte length")]
    TooLarge {
        /// the file
        path: PathBuf,
        /// the message's size
        len: usize,
    },
}

/// What a finished capture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// messages written
    pub messages: u64,
    /// bytes of messages given to [`CaptureWriter::write`] (before framing and compression)
    pub raw_bytes: u64,
}

enum Out {
    Plain(BufWriter<Box<dyn Write + Send>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<Box<dyn Write + Send>>>),
}

impl Out {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Plain(w) => w,
            Out::Zstd(w) => w,
        }
    }
}

/// The key of the partition field in an OTLP/JSON message.
pub const PARTITION_KEY: &str = "otelguardPartition";

/// The tag of the partition field before a protobuf message: field 1000, varint.
const PARTITION_TAG: [u8; 2] = [0xc0, 0x3e];

/// Writes `raw` with its partition into `out` (see the module documentation).
fn tag_partition(raw: &[u8], partition: i32, out: &mut Vec<u8>) {
    let partition = partition.max(0) as u32;
    match Encoding::sniff(raw) {
        Encoding::Json => {
            let text = raw.trim_ascii();
            let rest = text.strip_prefix(b"{").unwrap_or(text);
            out.extend_from_slice(format!("{{\"{PARTITION_KEY}\":{partition}").as_bytes());
            if !rest.trim_ascii_start().starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        Encoding::Proto => {
            out.extend_from_slice(&PARTITION_TAG);
            let mut v = u64::from(partition);
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
            out.extend_from_slice(raw);
        }
    }
}

/// The partition field of a message and the message without it, or `None`
/// for a message that has none (see the module documentation).
pub fn split_partition(bytes: &[u8]) -> Option<(i32, std::borrow::Cow<'_, [u8]>)> {
    use std::borrow::Cow;
    if let Some(rest) = bytes.strip_prefix(&PARTITION_TAG) {
        let mut value: u64 = 0;
        for (i, b) in rest.iter().take(5).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                let partition = i32::try_from(value).ok()?;
                return Some((partition, Cow::Borrowed(&rest[i + 1..])));
            }
        }
        return None;
    }
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let key = format!("{{\"{PARTITION_KEY}\":");
    let rest = bytes[start..].strip_prefix(key.as_bytes())?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let partition: i32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = &rest[digits..];
    let rest = rest.strip_prefix(b",").unwrap_or(rest);
    let mut message = Vec::with_capacity(rest.len() + 1);
    message.push(b'{');
    message.extend_from_slice(rest);
    Some((partition, Cow::Owned(message)))
}

/// Writes raw messages as a capture. Call [`CaptureWriter::finish`] at the end
/// (dropping it finishes too, logging any error).
pub struct CaptureWriter {
    path: PathBuf,
    out: Option<Out>,
    options: CaptureOptions,
    stats: CaptureStats,
    scratch: Vec<u8>,
}

impl fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CaptureWriter {
    /// Creates (truncates) the capture file at `path`.
    pub fn create(
        path: impl AsRef<Path>,
        options: CaptureOptions,
    ) -> Result<CaptureWriter, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| CaptureError::Io {
            path: path.clone(),
            source,
        })?;
        Self::to_writer(Box::new(file), path, options)
    }

    /// Writes the capture to any writer; `name` is used in errors.
    pub fn to_writer(
        writer: Box<dyn Write + Send>,
        name: impl Into<PathBuf>,
        options: CaptureOptions,
    ) -> Result<CaptureWriter, CaptureError> {
        let path = name.into();
        let buffered = BufWriter::with_capacity(256 << 10, writer);
        let out = match (options.format, options.compression) {
            (CaptureFormat::JsonLines, Compression::Zstd) => Out::Zstd(
                zstd::stream::write::Encoder::new(buffered, options.zstd_level).map_err(
                    |source| CaptureError::Io {
                        path: path.clone(),
                        source,
                    },
                )?,
            ),
            _ => Out::Plain(buffered),
        };
        Ok(CaptureWriter {
            path,
            out: Some(out),
            options,
            stats: CaptureStats::default(),
            scratch: Vec::new(),
        })
    }

    fn io(&self, source: io::Error) -> CaptureError {
        CaptureError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one message of `table` (`otlp_proto` or `otlp_json`, told apart as
    /// [`Encoding::sniff`] does) as it came in.
    pub fn write(&mut self, table: Table, raw: &[u8]) -> Result<(), CaptureError> {
        self.write_from(table, raw, None)
    }

    /// [`CaptureWriter::write`], with the Kafka partition the message came
    /// from, kept as the module documentation says.
    pub fn write_from(
        &mut self,
        table: Table,
        raw: &[u8],
        partition: Option<i32>,
    ) -> Result<(), CaptureError> {
        let given = raw.len() as u64;
        let transcoded;
        let raw = match (self.options.format, Encoding::sniff(raw)) {
            (CaptureFormat::Protobuf, Encoding::Json) => {
                transcoded =
                    crate::decode::json_to_proto(raw).map_err(|e| CaptureError::Transcode {
                        path: self.path.clone(),
                        table,
                        detail: format!("OTLP/JSON to protobuf: {e}"),
                    })?;
                transcoded.1.as_slice()
            }
            _ => raw,
        };
        match self.options.format {
            CaptureFormat::Protobuf | CaptureFormat::LengthPrefixed => match partition {
                Some(p) => {
                    let mut tagged = Vec::with_capacity(raw.len() + 32);
                    tag_partition(raw, p, &mut tagged);
                    self.write_record(&tagged)?
                }
                None => self.write_record(raw)?,
            },
            CaptureFormat::JsonLines => self.write_line(table, raw, partition)?,
        }
        self.stats.messages += 1;
        self.stats.raw_bytes += given;
        Ok(())
    }

    fn write_record(&mut self, raw: &[u8]) -> Result<(), CaptureError> {
        let body: &[u8] = match self.options.compression {
            Compression::None => raw,
            Compression::Zstd => {
                self.scratch.clear();
                zstd::stream::copy_encode(raw, &mut self.scratch, self.options.zstd_level)
                    .map_err(|e| self.io(e))?;
                &self.scratch
            }
        };
        let len = u32::try_from(body.len()).map_err(|_| CaptureError::TooLarge {
            path: self.path.clone(),
            len: body.len(),
        })?;
        let Some(out) = self.out.as_mut() else {
            return Err(self.io(io::Error::other("capture already finished")));
        };
        let w = out.writer();
        let result = w
            .write_all(&len.to_be_bytes())
            .and_then(|()| w.write_all(body));
        result.map_err(|e| self.io(e))
    }

    fn write_line(
        &mut self,
        table: Table,
        raw: &[u8],
        partition: Option<i32>,
    ) -> Result<(), CaptureError> {
        self.scratch.clear();
        match Encoding::sniff(raw) {
            Encoding::Json => {
                let text = raw.trim_ascii();
                self.scratch.extend(
                    text.iter()
                        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                );
            }
            Encoding::Proto => {
                let transcode = |e: String| CaptureError::Transcode {
                    path: self.path.clone(),
                    table,
                    detail: e,
                };
                let written = match table {
                    Table::Spans => ExportTraceServiceRequest::decode(raw)
                        .map_err(|e| transcode(e.to_string()))
                        .map(|m| serde_json::to_writer(&mut self.scratch, &m)),
                    Table::Logs => ExportLogsServiceRequest::decode(raw)
                        .map_err(|e| transcode(e.to_string()))
                        .map(|m| serde_json::to_writer(&mut self.scratch, &m)),
                    Table::Metrics => ExportMetricsServiceRequest::decode(raw)
                        .map_err(|e| transcode(e.to_string()))
                        .map(|m| serde_json::to_writer(&mut self.scratch, &m)),
                }?;
                written.map_err(|e| CaptureError::Transcode {
                    path: self.path.clone(),
                    table,
                    detail: e.to_string(),
                })?;
            }
        }
        if let Some(p) = partition {
            let mut tagged = Vec::with_capacity(self.scratch.len() + 32);
            tag_partition(&self.scratch, p, &mut tagged);
            self.scratch = tagged;
        }
        self.scratch.push(b'\n');
        let Some(out) = self.out.as_mut() else {
            return Err(self.io(io::Error::other("capture already finished")));
        };
        let result = out.writer().write_all(&self.scratch);
        result.map_err(|e| self.io(e))
    }

    /// What was written so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pushes what was written to the file (a complete zstd block for a
    /// compressed file), so a reader sees every message written before.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        let result = match self.out.as_mut() {
            Some(out) => out.writer().flush(),
            None => Ok(()),
        };
        result.map_err(|e| self.io(e))
    }

    /// Ends the capture (closes a zstd stream) and flushes it.
    pub fn finish(mut self) -> Result<CaptureStats, CaptureError> {
        self.close()?;
        Ok(self.stats)
    }

    fn close(&mut self) -> Result<(), CaptureError> {
        let result = match self.out.take() {
            Some(Out::Plain(mut w)) => w.flush(),
            Some(Out::Zstd(encoder)) => encoder.finish().and_then(|mut w| w.flush()),
            None => Ok(()),
        };
        result.map_err(|e| self.io(e))
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "capture not finished cleanly");
        }
    }
}

/// What [`convert`] wrote and what it left out.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// what the new capture holds
    pub stats: CaptureStats,
    /// the messages that could not be converted (they do not decode, or a
    /// file could not be read further), each as `position: why`
    pub skipped: Vec<String>,
}

/// An error converting captures: an input that cannot be opened, or an output
/// that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// the input captures
    #[error(transparent)]
    Read(#[from] crate::source::capture_reader::FileError),
    /// the new capture
    #[error(transparent)]
    Write(#[from] CaptureError),
}

/// Writes the messages of the captures `inputs` (files or folders, in any
/// format [`crate::source::capture_reader`] reads) to a new capture at `out`,
/// in their order, each with its partition, in the format `options` says:
/// OTLP/JSON captures become protobuf ones (read at the protobuf decoder's
/// speed), or the other way. A message that does not decode is left out and
/// listed in [`Converted::skipped`]; the rest are converted.
///
/// ```
/// use std::path::PathBuf;
/// use ingest::write::capture_writer::{CaptureOptions, convert};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let json = dir.path().join("attack.jsonl");
/// std::fs::write(&json, br#"{"resourceSpans":[]}"#)?;
/// let out = dir.path().join("attack.pb.zst");
/// let done = convert(&[json], &out, CaptureOptions::for_path(&out))?;
/// assert_eq!((done.stats.messages, done.skipped.len()), (1, 0));
/// # Ok(())
/// # }
/// ```
pub fn convert(
    inputs: &[PathBuf],
    out: &Path,
    options: CaptureOptions,
) -> Result<Converted, ConvertError> {
    use crate::source::capture_reader::{self, RawItem};
    let read = capture_reader::ReadOptions::default();
    let mut reader = capture_reader::open_with(inputs, read.clone())?;
    let mut writer = CaptureWriter::create(out, options)?;
    let mut skipped = Vec::new();
    while let Some(item) = reader.next_raw() {
        match item {
            RawItem::Bytes {
                position,
                bytes,
                framing,
                hint,
            } => match capture_reader::protobuf_of(&bytes, framing, hint, read.max_message_bytes) {
                Ok((table, proto, partition)) => writer.write_from(table, &proto, partition)?,
                Err(e) => skipped.push(format!("{position}: {e}")),
            },
            RawItem::Bad(bad) => skipped.push(format!("{}: {}", bad.position, bad.error)),
            RawItem::Unreadable { position, error } => skipped.push(format!("{position}: {error}")),
        }
    }
    Ok(Converted {
        stats: writer.finish()?,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_file_names() {
        let o = |n: &str| CaptureOptions::for_path(Path::new(n));
        assert_eq!(o("a.jsonl").format, CaptureFormat::JsonLines);
        assert_eq!(o("a.jsonl").compression, Compression::None);
        assert_eq!(o("a.jsonl.zst").compression, Compression::Zstd);
        assert_eq!(o("a.jsonl.zst").format, CaptureFormat::JsonLines);
        assert_eq!(o("a.pb").format, CaptureFormat::Protobuf);
        assert_eq!(o("a.pb").compression, Compression::None);
        assert_eq!(o("a.pb.zst").compression, Compression::Zstd);
        assert_eq!(o("a.pb.zst").format, CaptureFormat::Protobuf);
        assert_eq!(o("a").format, CaptureFormat::Protobuf);
        assert_eq!(o("a").compression, Compression::Zstd);
    }

    #[test]
    fn a_kept_partition_reads_back_and_the_message_decodes_as_written() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "GET /".into(),
                        start_time_unix_nano: 1_768_471_200_000_000_000,
                        end_time_unix_nano: 1_768_471_200_002_000_000,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let proto = request.encode_to_vec();
        let json = serde_json::to_vec(&request).expect("json");
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["c.pb", "c.pb.zst", "c.jsonl", "c.jsonl.zst"] {
            let path = dir.path().join(name);
            let mut w =
                CaptureWriter::create(&path, CaptureOptions::for_path(&path)).expect("create");
            w.write_from(Table::Spans, &proto, Some(3)).expect("write");
            w.write_from(Table::Spans, &json, Some(130)).expect("write");
            w.write(Table::Spans, &proto).expect("write");
            w.finish().expect("finish");
            let read: Vec<(Option<i32>, usize)> = crate::source::capture_reader::open(&[path])
                .expect("open")
                .map(|item| match item {
                    crate::source::capture_reader::CaptureItem::Message(m) => {
                        (m.partition, m.decoded.batch.num_rows())
                    }
                    other => panic!("{name}: {other:?}"),
                })
                .collect();
            assert_eq!(
                read,
                vec![(Some(3), 1), (Some(130), 1), (None, 1)],
                "{name}"
            );
        }
        // other readers see an unknown field: protobuf skips it
        let mut tagged = Vec::new();
        tag_partition(&proto, 7, &mut tagged);
        assert_eq!(
            ExportTraceServiceRequest::decode(tagged.as_slice()).expect("decodes"),
            request
        );
        let mut tagged = Vec::new();
        tag_partition(&json, 7, &mut tagged);
        let value: serde_json::Value = serde_json::from_slice(&tagged).expect("JSON");
        assert_eq!(value["otelguardPartition"], 7);
        let mut tagged = Vec::new();
        tag_partition(b" {} ", 2, &mut tagged);
        assert_eq!(tagged, b"{\"otelguardPartition\":2}");
    }

    #[test]
    fn json_line_breaks_become_spaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.jsonl");
        let options = CaptureOptions::for_path(&path);
        let mut w = CaptureWriter::create(&path, options).expect("create");
        w.write(Table::Logs, b"\n{\"resourceLogs\":\r\n[]}\n")
            .expect("write");
        w.finish().expect("finish");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"resourceLogs\":  []}\n"
        );
    }

    #[test]
    fn garbage_protobuf_cannot_be_transcoded_but_is_kept_length_prefixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = CaptureWriter::create(
            dir.path().join("c.jsonl"),
            CaptureOptions::for_path(Path::new("c.jsonl")),
        )
        .expect("create");
        let err = w.write(Table::Spans, b"\x0a\xff\xff").expect_err("garbage");
        assert!(matches!(err, CaptureError::Transcode { .. }), "{err}");
        assert_eq!(w.stats().messages, 0);
        let path = dir.path().join("c.pb");
        let mut w = CaptureWriter::create(&path, CaptureOptions::default()).expect("create");
        w.write(Table::Spans, b"\x0a\xff\xff").expect("kept");
        w.finish().expect("finish");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"\0\0\0\x03\x0a\xff\xff"
        );
    }
}
