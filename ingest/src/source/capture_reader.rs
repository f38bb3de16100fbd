//! Capture files: the OpenTelemetry Collector `file` exporter's formats, read as a
//! stream in constant memory whatever the size of the capture.
//!
//! # Formats, told apart by their first bytes (the extension is never needed)
//!
//! - **JSON lines** (the exporter's default): one OTLP/JSON `TracesData`,
//!   `LogsData` or `MetricsData` object per line, the three mixed freely. Blank
//!   lines are skipped. Positions read `file:line`.
//! - **Length-prefixed records** (the exporter's `format: proto`, and any
//!   `compression`): each record is a 4-byte big-endian length then that many
//!   bytes. A record's bytes are sniffed: zstd magic (`28 b5 2f fd`) or gzip magic
//!   (`1f 8b`) is decompressed first; then `{` means OTLP/JSON, anything else
//!   OTLP protobuf. Positions read `file:record N (byte offset B)`, `N` counting
//!   from 1 and `B` the offset of the record's length header.
//! - **A whole file gzip- or zstd-compressed** (`.jsonl.gz`, `.jsonl.zst`, or
//!   any name): decompressed on the fly, then read as one of the two above.
//!   Line numbers and byte offsets are then those of the decompressed stream.
//!
//! # Which signal a protobuf record is
//!
//! A protobuf record does not say whether it holds traces, logs or metrics. The
//! reader tries the tables in this order and keeps the first that decodes:
//! 1. the table the file name hints at: a word of the name (split on anything
//!    not a letter or digit) starting with `trace` or `span`, `log`, or `metric`
//!    (so `catalog-metrics.pb` is metrics); failing that, the one signal whose
//!    word the name contains anywhere;
//! 2. then spans, logs, metrics.
//!
//! A decode that succeeds but yields no rows while rejecting records is only
//! kept if no other table yields rows. This works because the three messages
//! disagree on wire types early (a span's first field is bytes where a log
//! record's is a fixed64, a metric's `sum` is a message where a span has a
//! fixed64 start time), so the wrong table fails to parse. An empty message is
//! an empty batch of the first table tried.
//!
//! # Errors
//!
//! A message that does not decode is a [`CaptureItem::Bad`] with its position and
//! raw bytes, and reading goes on. A record longer than
//! [`ReadOptions::max_message_bytes`] is skipped without being read into memory
//! ([`Reason::Oversized`]). A truncated final record is a `Bad` item marked
//! [`BadMessage::truncated`] (`engine replay` logs it and names it in its
//! summary). A record a decoder panics on is a `Bad` item
//! ([`Reason::DecoderPanic`]) and reading goes on with the next. A file that
//! cannot be read any further (I/O error, corrupt compressed stream) is a
//! [`CaptureItem::Unreadable`] and reading goes on with the next file.
//!
//! ```no_run
//! use ingest::source::capture_reader::{self, CaptureItem};
//! # fn main() -> Result<(), ingest::source::capture_reader::FileError> {
//! let reader = capture_reader::open(&["captures/attack.jsonl".into()])?;
//! for item in reader {
//!     match item {
//!         CaptureItem::Message(m) => println!("{}: {} rows", m.position, m.decoded.batch.num_rows()),
//!         CaptureItem::Bad(b) => eprintln!("{}: {}", b.position, b.error),
//!         CaptureItem::Unreadable { position, error } => eprintln!("{position}: {error}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use crate::decode::{decode_json_as, decode_proto};
use crate::write::dead_letter::{DeadLetter, Rejections};
use crate::{DecodeError, Decoded, Reason, Table};

/// The first bytes of a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The first bytes of a gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The largest message read into memory by default: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An error opening or reading a capture, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path does not exist or cannot be listed.
    #[error("{path}: {source}")]
    Open {
        /// the file or folder
        path: PathBuf,
        /// what the operating system said
        source: io::Error,
    },
    /// A folder that holds no (non-hidden) file.
    #[error("{path}: no capture file in this folder (hidden files are skipped)")]
    EmptyFolder {
        /// the folder
        path: PathBuf,
    },
    /// No path was given.
    #[error("no capture file given")]
    NoInput,
    /// A read failed part way; the rest of that file is skipped.
    #[error("{position}: cannot read further: {source}")]
    Read {
        /// where the reader was
        position: Position,
        /// what failed (an I/O error, or a corrupt gzip/zstd stream)
        source: io::Error,
    },
}

/// Where a message sits in a capture: a line of a JSON-lines file, or a record of
/// a length-prefixed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// the file, as given or as found under a given folder
    pub file: Arc<Path>,
    /// the place inside it
    pub at: Location,
}

/// The place of a message inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line number of a JSON-lines file.
    Line(u64),
    /// 1-based record number of a length-prefixed file, and the byte offset of
    /// its 4-byte length header.
    Record {
        /// 1-based record number
        index: u64,
        /// offset of the record's header, in the (decompressed) stream
        offset: u64,
    },
    /// The start of the file (before any message).
    Start,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match self.at {
            Location::Line(line) => write!(f, "{file}:{line}"),
            Location::Record { index, offset } => {
                write!(f, "{file}:record {index} (byte offset {offset})")
            }
            Location::Start => write!(f, "{file}"),
        }
    }
}

/// A decoded message and where it came from.
#[derive(Debug, Clone)]
pub struct Message {
    /// where the message is in the capture
    pub position: Position,
    /// its rows, and the records inside it that were rejected
    pub decoded: Decoded,
    /// the Kafka partition it came from, when the capture kept it
    /// ([`crate::write::capture_writer`]): each partition of a table is a stream of its own
    pub partition: Option<i32>,
}

/// A message that could not be decoded, its position and raw bytes (empty for
/// an oversized record, which is skipped unread).
#[derive(Debug, Clone)]
pub struct BadMessage {
    /// where the message is in the capture
    pub position: Position,
    /// why it was rejected
    pub error: DecodeError,
    /// the bytes as found in the file (the record or the line without its end)
    pub raw: Vec<u8>,
    /// the file ends inside this record: the capture was cut short (a copy
    /// still being written, a disk that filled up)
    pub truncated: bool,
}

impl Message {
    /// Counts the records skipped inside this message and logs the first of each
    /// reason (source `file`), as [`Rejections::records`] does.
    pub fn report(&self, rejections: &Rejections) {
        rejections.records("file", &self.position, &self.decoded.rejected);
    }
}

impl BadMessage {
    /// Counts, logs once and dead-letters this message (source `file`, origin
    /// its position), as [`Rejections::message`] does.
    pub fn report(&self, rejections: &Rejections) {
        let origin = self.position.to_string();
        rejections.message(&DeadLetter::new("file", &origin, &self.error, &self.raw));
    }
}

/// One step of reading a capture.
#[derive(Debug)]
pub enum CaptureItem {
    /// A message that decoded (some records inside it may have been rejected).
    Message(Message),
    /// A message that did not decode; reading goes on.
    Bad(BadMessage),
    /// A file that cannot be read further; reading goes on with the next file.
    Unreadable {
        /// the last position reached in that file
        position: Position,
        /// what failed
        error: FileError,
    },
}

/// How to read captures.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Records and lines longer than this (after decompression) are skipped as
    /// [`Reason::Oversized`].
    pub max_message_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// A cheap, cloneable view of how far a [`CaptureReader`] has got, readable from
/// another thread (a progress bar on stderr).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug, Default)]
struct ProgressInner {
    total: AtomicU64,
    read: AtomicU64,
}

impl Progress {
    /// The size on disk of all the capture's files, as found when it was opened.
    pub fn bytes_total(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// The bytes read from disk so far (compressed bytes, for compressed files).
    pub fn bytes_read(&self) -> u64 {
        self.inner.read.load(Ordering::Relaxed)
    }

    /// `bytes_read / bytes_total`, between 0 and 1 (1 for an empty capture).
    pub fn fraction(&self) -> f64 {
        let total = self.bytes_total();
        if total == 0 {
            1.0
        } else {
            (self.bytes_read() as f64 / total as f64).min(1.0)
        }
    }
}

/// Opens captures with the default [`ReadOptions`]: files, or folders read
/// recursively in sorted name order, hidden files (`.name`) skipped.
pub fn open(paths: &[PathBuf]) -> Result<CaptureReader, FileError> {
    open_with(paths, ReadOptions::default())
}

/// Opens captures, as [`open`], with the given options.
pub fn open_with(paths: &[PathBuf], options: ReadOptions) -> Result<CaptureReader, FileError> {
    if paths.is_empty() {
        return Err(FileError::NoInput);
    }
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| FileError::Open {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let before = files.len();
            list_folder(path, &mut files)?;
            if files.len() == before {
                return Err(FileError::EmptyFolder { path: path.clone() });
            }
        } else {
            files.push((path.clone(), meta.len()));
        }
    }
    let progress = Progress::default();
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    progress.inner.total.store(total, Ordering::Relaxed);
    Ok(CaptureReader {
        files: files
            .into_iter()
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
            .into_iter(),
        current: None,
        progress,
        options,
    })
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn list_folder(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<(), FileError> {
    let open_err = |source| FileError::Open {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(open_err)? {
        let entry = entry.map_err(open_err)?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        entries.push(path);
    }
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(|source| FileError::Open {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            list_folder(&path, out)?;
        } else if meta.is_file() {
            out.push((path, meta.len()));
        }
    }
    Ok(())
}

/// The table a file's name hints at, if any (see the module documentation).
pub fn table_hint(path: &Path) -> Option<Table> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let by_word = |word: &str| -> Option<Table> {
        if word.starts_with("trace") || word.starts_with("span") {
            Some(Table::Spans)
        } else if word.starts_with("log") {
            Some(Table::Logs)
        } else if word.starts_with("metric") {
            Some(Table::Metrics)
        } else {
            None
        }
    };
    if let Some(table) = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(by_word)
    {
        return Some(table);
    }
    let found: Vec<Table> = [
        (
            Table::Spans,
            name.contains("trace") || name.contains("span"),
        ),
        (Table::Logs, name.contains("log")),
        (Table::Metrics, name.contains("metric")),
    ]
    .into_iter()
    .filter_map(|(t, hit)| hit.then_some(t))
    .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Reads the messages of one or more capture files, one [`CaptureItem`] at a time.
pub struct CaptureReader {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<FileReader>,
    progress: Progress,
    options: ReadOptions,
}

impl fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("bytes_total", &self.progress.bytes_total())
            .field("bytes_read", &self.progress.bytes_read())
            .finish_non_exhaustive()
    }
}

impl CaptureReader {
    /// How far reading has got; clone it to watch from another thread.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The next raw message, without decoding it: what [`Iterator::next`] decodes.
    /// `None` at the end of all files.
    pub fn next_raw(&mut self) -> Option<RawItem> {
        loop {
            if self.current.is_none() {
                let path = self.files.next()?;
                match FileReader::open(&path, &self.progress) {
                    Ok(reader) => self.current = Some(reader),
                    Err(error) => {
                        return Some(RawItem::Unreadable {
                            position: Position {
                                file: Arc::from(path.as_path()),
                                at: Location::Start,
                            },
                            error,
                        });
                    }
                }
            }
            let Some(reader) = self.current.as_mut() else {
                continue;
            };
            match reader.next_raw(self.options.max_message_bytes) {
                Some(item) => {
                    if matches!(item, RawItem::Unreadable { .. }) {
                        self.current = None;
                    }
                    return Some(item);
                }
                None => self.current = None,
            }
        }
    }
}

/// A message's bytes as framed in the file, before decoding.
#[derive(Debug)]
pub enum RawItem {
    /// The bytes of one line or record, and the table the file name hints at.
    Bytes {
        /// where it is
        position: Position,
        /// the line (without its end) or the record (without its header)
        bytes: Vec<u8>,
        /// the framing it came in
        framing: Framing,
        /// the table hinted at by the file's name
        hint: Option<Table>,
    },
    /// A record that could not be framed (truncated, oversized).
    Bad(BadMessage),
    /// A file that cannot be read further.
    Unreadable {
        /// where the reader was
        position: Position,
        /// what failed
        error: FileError,
    },
}

/// How a file's messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// one OTLP/JSON object per line
    JsonLines,
    /// 4-byte big-endian length, then the message
    LengthPrefixed,
}

impl Iterator for CaptureReader {
    type Item = CaptureItem;

    fn next(&mut self) -> Option<CaptureItem> {
        let max_bytes = self.options.max_message_bytes;
        self.next_raw().map(|raw| decode_raw(raw, max_bytes))
    }
}

/// Decodes one framed message (see the module documentation for the sniffing).
fn decode_record(
    position: Position,
    bytes: Vec<u8>,
    framing: Framing,
    hint: Option<Table>,
    max_bytes: usize,
) -> CaptureItem {
    let mut partition = None;
    let mut untagged = |payload: &[u8], decode: &dyn Fn(&[u8]) -> Result<Decoded, DecodeError>| {
        match crate::write::capture_writer::split_partition(payload) {
            Some((p, message)) => {
                partition = Some(p);
                decode(&message)
            }
            None => decode(payload),
        }
    };
    let result = match framing {
        Framing::JsonLines => untagged(&bytes, &|b| decode_json_as(hint, b)),
        Framing::LengthPrefixed => match decompress_record(&bytes, max_bytes) {
            Ok(Some(inner)) => untagged(&inner, &|b| decode_payload(b, hint)),
            Ok(None) => untagged(&bytes, &|b| decode_payload(b, hint)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(decoded) => CaptureItem::Message(Message {
            position,
            decoded,
            partition,
        }),
        Err(error) => CaptureItem::Bad(BadMessage {
            position,
            error,
            raw: bytes,
            truncated: false,
        }),
    }
}

/// The decompressed bytes of a zstd- or gzip-compressed record, `None` if it is
/// not compressed.
fn decompress_record(bytes: &[u8], max_bytes: usize) -> Result<Option<Vec<u8>>, DecodeError> {
    let limit = max_bytes as u64 + 1;
    let mut out = Vec::new();
    let read = if bytes.starts_with(&ZSTD_MAGIC) {
        zstd::stream::read::Decoder::new(bytes)
            .and_then(|d| d.take(limit).read_to_end(&mut out))
            .map_err(|e| {
                DecodeError::new(Reason::UnknownEncoding, format!("corrupt zstd record: {e}"))
            })?
    } else if bytes.starts_with(&GZIP_MAGIC) {
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| {
                DecodeError::new(Reason::UnknownEncoding, format!("corrupt gzip record: {e}"))
            })?
    } else {
        return Ok(None);
    };
    if read > max_bytes {
        return Err(DecodeError::new(
            Reason::Oversized,
            format!("record decompresses to more than {max_bytes} bytes"),
        ));
    }
    Ok(Some(out))
}

/// Decodes a record's (decompressed) payload: OTLP/JSON when it starts with `{`,
/// else OTLP protobuf of the table found as the module documentation says.
pub fn decode_payload(bytes: &[u8], hint: Option<Table>) -> Result<Decoded, DecodeError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return decode_json_as(hint, bytes);
    }
    let mut order: Vec<Table> = hint.into_iter().collect();
    order.extend(Table::ALL.iter().copied().filter(|t| Some(*t) != hint));
    let mut first_error = None;
    let mut fallback = None;
    for table in order {
        match decode_proto(table, bytes) {
            Ok(decoded) => {
                if decoded.batch.num_rows() > 0 || decoded.rejected.is_empty() {
                    return Ok(decoded);
                }
                fallback.get_or_insert(decoded);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (fallback, first_error) {
        (Some(decoded), _) => Ok(decoded),
        (None, Some(e)) => Err(e),
        (None, None) => Err(DecodeError::new(Reason::CorruptProtobuf, "no table to try")),
    }
}

/// One framed message as OTLP protobuf: its table, its bytes (OTLP/JSON
/// transcoded, protobuf as it is) and the partition the capture kept. What a
/// conversion of captures writes ([`crate::write::capture_writer::convert`]).
pub(crate) fn protobuf_of(
    bytes: &[u8],
    framing: Framing,
    hint: Option<Table>,
    max_bytes: usize,
) -> Result<(Table, Vec<u8>, Option<i32>), DecodeError> {
    let inner = match framing {
        Framing::JsonLines => None,
        Framing::LengthPrefixed => decompress_record(bytes, max_bytes)?,
    };
    let payload = inner.as_deref().unwrap_or(bytes);
    let (partition, message) = match crate::write::capture_writer::split_partition(payload) {
        Some((p, message)) => (Some(p), message),
        None => (None, std::borrow::Cow::Borrowed(payload)),
    };
    if crate::write::capture_writer::Encoding::sniff(&message)
        == crate::write::capture_writer::Encoding::Json
    {
        let (table, proto) = crate::decode::json_to_proto(&message)?;
        return Ok((table, proto, partition));
    }
    let table = decode_payload(&message, hint)?.table;
    Ok((table, message.into_owned(), partition))
}

/// The most messages a [`ParallelReader`] holds at once, read but not yet
/// handed on, per decoding thread.
pub const PARALLEL_WINDOW_PER_THREAD: usize = 16;

impl CaptureReader {
    /// Reads on a thread of its own and decodes on `threads` more (at least
    /// one), handing the items on in the order [`Iterator::next`] gives them:
    /// the same items in the same order, decoded in parallel across messages
    /// and files. At most `threads *` [`PARALLEL_WINDOW_PER_THREAD`] messages
    /// are held at once (read, being decoded, or decoded and waiting for one
    /// before them): the reader waits while the window is full.
    ///
    /// ```no_run
    /// use ingest::source::capture_reader;
    /// # fn main() -> Result<(), capture_reader::FileError> {
    /// let reader = capture_reader::open(&["captures/attack.jsonl".into()])?;
    /// let rows: usize = reader
    ///     .decode_in_parallel(2)
    ///     .filter_map(|item| match item {
    ///         capture_reader::CaptureItem::Message(m) => Some(m.decoded.batch.num_rows()),
    ///         _ => None,
    ///     })
    ///     .sum();
    /// # let _ = rows;
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode_in_parallel(self, threads: usize) -> ParallelReader {
        let threads = threads.max(1);
        let window = threads * PARALLEL_WINDOW_PER_THREAD;
        let max_bytes = self.options.max_message_bytes;
        let progress = self.progress.clone();
        // a ticket per message that may be held: the reader takes one before
        // reading a message, the consumer gives it back as it hands one on
        let (tickets_tx, tickets_rx) = mpsc::sync_channel::<()>(window);
        for _ in 0..window {
            let _ = tickets_tx.send(());
        }
        let (raw_tx, raw_rx) = mpsc::sync_channel::<(u64, RawItem)>(window);
        let (done_tx, done_rx) = mpsc::sync_channel::<(u64, CaptureItem)>(window);
        let mut reader = self;
        let reading = std::thread::Builder::new()
            .name("capture-read".into())
            .spawn(move || {
                let mut seq = 0u64;
                while tickets_rx.recv().is_ok() {
                    let Some(item) = reader.next_raw() else {
                        break;
                    };
                    if raw_tx.send((seq, item)).is_err() {
                        break;
                    }
                    seq += 1;
                }
            });
        let raw_rx = Arc::new(std::sync::Mutex::new(raw_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let raw_rx = Arc::clone(&raw_rx);
            let done_tx = done_tx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("capture-decode-{i}"))
                .spawn(move || {
                    loop {
                        let next = raw_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((seq, raw)) = next else { break };
                        if done_tx.send((seq, decode_guarded(raw, max_bytes))).is_err() {
                            break;
                        }
                    }
                });
            workers.extend(worker.ok());
        }
        ParallelReader {
            next: 0,
            waiting: std::collections::BTreeMap::new(),
            done: done_rx,
            tickets: tickets_tx,
            progress,
            started: reading.is_ok() && !workers.is_empty(),
        }
    }
}

/// A raw item decoded as [`Iterator::next`] of [`CaptureReader`] does.
fn decode_raw(raw: RawItem, max_bytes: usize) -> CaptureItem {
    match raw {
        RawItem::Bytes {
            position,
            bytes,
            framing,
            hint,
        } => decode_record(position, bytes, framing, hint, max_bytes),
        RawItem::Bad(bad) => CaptureItem::Bad(bad),
        RawItem::Unreadable { position, error } => CaptureItem::Unreadable { position, error },
    }
}

/// [`decode_raw`] on a decoding thread: a panic is a bad message at its
/// position ([`Reason::DecoderPanic`]), so no message goes missing.
fn decode_guarded(raw: RawItem, max_bytes: usize) -> CaptureItem {
    let position = match &raw {
        RawItem::Bytes { position, .. } => Some(position.clone()),
        _ => None,
    };
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_raw(raw, max_bytes)));
    match (decoded, position) {
        (Ok(item), _) => item,
        (Err(_), Some(position)) => CaptureItem::Bad(BadMessage {
            position,
            error: DecodeError::new(Reason::DecoderPanic, "the decoder panicked on this message"),
            raw: Vec::new(),
            truncated: false,
        }),
        (Err(panic), None) => std::panic::resume_unwind(panic),
    }
}

/// The items of a capture decoded on several threads, in the capture's order:
/// see [`CaptureReader::decode_in_parallel`].
pub struct ParallelReader {
    /// the sequence number of the item to hand on next
    next: u64,
    /// decoded items that came before `next`'s
    waiting: std::collections::BTreeMap<u64, CaptureItem>,
    done: mpsc::Receiver<(u64, CaptureItem)>,
    tickets: mpsc::SyncSender<()>,
    progress: Progress,
    started: bool,
}

impl fmt::Debug for ParallelReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelReader")
            .field("next", &self.next)
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl ParallelReader {
    /// How far reading has got; clone it to watch from another thread.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

impl Iterator for ParallelReader {
    type Item = CaptureItem;

    fn next(&mut self) -> Option<CaptureItem> {
        assert!(
            self.started,
            "the capture's reading threads could not be started"
        );
        loop {
            if let Some(item) = self.waiting.remove(&self.next) {
                self.next += 1;
                let _ = self.tickets.try_send(());
                return Some(item);
            }
            match self.done.recv() {
                Ok((seq, item)) => {
                    self.waiting.insert(seq, item);
                }
                // every thread is done: the end, unless one died holding an
                // item, which must not pass for the end of the capture
                Err(_) if self.waiting.is_empty() => return None,
                Err(_) => panic!(
                    "a decoding thread stopped part way: message {} of the capture was lost",
                    self.next + 1
                ),
            }
        }
    }
}

/// Counts the bytes read from disk into the shared progress.
struct Counting<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .inner
            .read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const BUFFER: usize = 256 << 10;

/// One open file.
struct FileReader {
    path: Arc<Path>,
    hint: Option<Table>,
    reader: Box<dyn BufRead + Send>,
    framing: Framing,
    /// lines or records read so far
    count: u64,
    /// bytes of the (decompressed) stream consumed so far
    offset: u64,
}

impl FileReader {
    fn open(path: &Path, progress: &Progress) -> Result<FileReader, FileError> {
        let file = File::open(path).map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let read_err = |source| FileError::Read {
            position: Position {
                file: Arc::from(path),
                at: Location::Start,
            },
            source,
        };
        let mut reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(
            BUFFER,
            Counting {
                inner: file,
                progress: progress.clone(),
            },
        ));
        // Whole-file compression, by magic bytes (at most one layer of each).
        for _ in 0..2 {
            let head = reader.fill_buf().map_err(read_err)?;
            if head.starts_with(&ZSTD_MAGIC) {
                let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(read_err)?;
                reader = Box::new(BufReader::with_capacity(BUFFER, decoder));
            } else if head.starts_with(&GZIP_MAGIC) {
                reader = Box::new(BufReader::with_capacity(
                    BUFFER,
                    flate2::bufread::MultiGzDecoder::new(reader),
                ));
            } else {
                break;
            }
        }
        let head = reader.fill_buf().map_err(read_err)?;
        // A UTF-8 byte-order mark (files saved by some editors) starts JSON lines.
        let bom = head.starts_with(UTF8_BOM);
        let framing = match head.iter().find(|b| !b.is_ascii_whitespace()) {
            _ if bom => Framing::JsonLines,
            Some(b'{') | None => Framing::JsonLines,
            Some(_) => Framing::LengthPrefixed,
        };
        let mut offset = 0;
        if bom {
            reader.consume(UTF8_BOM.len());
            offset = UTF8_BOM.len() as u64;
        }
        Ok(FileReader {
            path: Arc::from(path),
            hint: table_hint(path),
            reader,
            framing,
            count: 0,
            offset,
        })
    }

    fn position(&self, at: Location) -> Position {
        Position {
            file: self.path.clone(),
            at,
        }
    }

    fn unreadable(&self, at: Location, source: io::Error) -> RawItem {
        let position = self.position(at);
        RawItem::Unreadable {
            position: position.clone(),
            error: FileError::Read { position, source },
        }
    }

    fn next_raw(&mut self, max: usize) -> Option<RawItem> {
        match self.framing {
            Framing::JsonLines => self.next_line(max),
            Framing::LengthPrefixed => self.next_record(max),
        }
    }

    fn next_line(&mut self, max: usize) -> Option<RawItem> {
        loop {
            self.count += 1;
            let at = Location::Line(self.count);
            let mut line = Vec::new();
            let n = match (&mut self.reader)
                .take(max as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(n) => n,
                Err(e) => return Some(self.unreadable(at, e)),
            };
            if n == 0 {
                return None;
            }
            self.offset += n as u64;
            let ended = line.last() == Some(&b'\n');
            if !ended && line.len() > max {
                // Too long: skip to the end of the line without keeping it.
                match skip_line(&mut self.reader) {
                    Ok(skipped) => self.offset += skipped,
                    Err(e) => return Some(self.unreadable(at, e)),
                }
                return Some(RawItem::Bad(BadMessage {
                    position: self.position(at),
                    error: DecodeError::new(
                        Reason::Oversized,
                        format!("line longer than {max} bytes, skipped"),
                    ),
                    raw: Vec::new(),
                    truncated: false,
                }));
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(RawItem::Bytes {
                position: self.position(at),
                bytes: line,
                framing: Framing::JsonLines,
                hint: self.hint,
            });
        }
    }

    fn next_record(&mut self, max: usize) -> Option<RawItem> {
        let at = Location::Record {
            index: self.count + 1,
            offset: self.offset,
        };
        let mut header = [0u8; 4];
        let got = match read_full(&mut self.reader, &mut header) {
            Ok(n) => n,
            Err(e) => return Some(self.unreadable(at, e)),
        };
        if got == 0 {
            return None;
        }
        self.count += 1;
        self.offset += got as u64;
        if got < 4 {
            return Some(RawItem::Bad(BadMessage {
                position: self.position(at),
                error: DecodeError::new(
                    Reason::CorruptProtobuf,
                    format!("truncated record: the file ends {got} bytes into a 4-byte length"),
                ),
                raw: header[..got].to_vec(),
                truncated: true,
            }));
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > max {
            let skipped = match io::copy(&mut (&mut self.reader).take(len as u64), &mut io::sink())
            {
                Ok(n) => n,
                Err(e) => return Some(self.unreadable(at, e)),
            };
            self.offset += skipped;
            let detail = if (skipped as usize) < len {
                format!(
                    "record of {len} bytes is over the limit of {max} and truncated after {skipped}"
                )
            } else {
                format!("record of {len} bytes is over the limit of {max}, skipped")
            };
            return Some(RawItem::Bad(BadMessage {
                position: self.position(at),
                error: DecodeError::new(Reason::Oversized, detail),
                raw: Vec::new(),
                truncated: (skipped as usize) < len,
            }));
        }
        let mut bytes = vec![0u8; len];
        let got = match read_full(&mut self.reader, &mut bytes) {
            Ok(n) => n,
            Err(e) => return Some(self.unreadable(at, e)),
        };
        self.offset += got as u64;
        if got < len {
            bytes.truncate(got);
            return Some(RawItem::Bad(BadMessage {
                position: self.position(at),
                error: DecodeError::new(
                    Reason::CorruptProtobuf,
                    format!(
                        "truncated record: its length says {len} bytes but the file ends after {got}"
                    ),
                ),
                raw: bytes,
                truncated: true,
            }));
        }
        Some(RawItem::Bytes {
            position: self.position(at),
            bytes,
            framing: Framing::LengthPrefixed,
            hint: self.hint,
        })
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Consumes the rest of a line (through its `\n`) without keeping it.
fn skip_line(reader: &mut dyn BufRead) -> io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            reader.consume(i + 1);
            return Ok(skipped + i as u64 + 1);
        }
        let n = buf.len();
        reader.consume(n);
        skipped += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn raw_items(paths: &[PathBuf], max: usize) -> Vec<String> {
        let mut reader = open_with(
            paths,
            ReadOptions {
                max_message_bytes: max,
            },
        )
        .expect("open");
        let mut out = Vec::new();
        while let Some(item) = reader.next_raw() {
            out.push(match item {
                RawItem::Bytes {
                    position,
                    bytes,
                    framing,
                    hint,
                } => format!(
                    "{} {:?} {:?} {}",
                    position.at_string(),
                    framing,
                    hint,
                    String::from_utf8_lossy(&bytes)
                ),
                RawItem::Bad(b) => format!("{} bad {}", b.position.at_string(), b.error),
                RawItem::Unreadable { position, error } => {
                    format!("{} unreadable {}", position.at_string(), error.kind_name())
                }
            });
        }
        out
    }

    impl Position {
        fn at_string(&self) -> String {
            let name = self
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?");
            match self.at {
                Location::Line(l) => format!("{name}:{l}"),
                Location::Record { index, offset } => format!("{name}#{index}@{offset}"),
                Location::Start => name.to_string(),
            }
        }
    }

    impl FileError {
        fn kind_name(&self) -> &'static str {
            match self {
                FileError::Open { .. } => "open",
                FileError::EmptyFolder { .. } => "empty",
                FileError::NoInput => "none",
                FileError::Read { .. } => "read",
            }
        }
    }

    fn length_prefixed(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_be_bytes());
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn json_lines_skip_blank_lines_and_count_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("capture.json");
        std::fs::write(&path, b"{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}").expect("write");
        assert_eq!(
            raw_items(&[path], 100),
            vec![
                "capture.json:1 JsonLines None {\"a\":1}",
                "capture.json:4 JsonLines None {\"b\":2}",
                "capture.json:5 JsonLines None {\"c\":3}",
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_starts_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bom.json");
        std::fs::write(&path, b"\xef\xbb\xbf{\"a\":1}\n").expect("write");
        assert_eq!(
            raw_items(&[path], 100),
            vec!["bom.json:1 JsonLines None {\"a\":1}"]
        );
    }

    #[test]
    fn long_lines_are_skipped_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(50));
        std::fs::write(&path, format!("{{}}\n{long}\n{{\"b\":2}}\n")).expect("write");
        assert_eq!(
            raw_items(&[path], 20),
            vec![
                "x.jsonl:1 JsonLines None {}",
                "x.jsonl:2 bad oversized: line longer than 20 bytes, skipped",
                "x.jsonl:3 JsonLines None {\"b\":2}",
            ]
        );
    }

    #[test]
    fn length_prefixed_records_with_offsets_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs.pb");
        let mut bytes = length_prefixed(&[b"\x0a\x00", b"abc"]);
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(b"12345");
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(
            raw_items(&[path], 100),
            vec![
                "logs.pb#1@0 LengthPrefixed Some(Logs) \n\0",
                "logs.pb#2@6 LengthPrefixed Some(Logs) abc",
                "logs.pb#3@13 bad corrupt_protobuf: truncated record: its length says 10 bytes but the file ends after 5",
            ]
        );
    }

    #[test]
    fn truncated_header_and_oversized_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.bin");
        let mut bytes = length_prefixed(&[b"0123456789", b"ab"]);
        bytes.extend_from_slice(&[0, 0]);
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(
            raw_items(&[path], 5),
            vec![
                "metrics.bin#1@0 bad oversized: record of 10 bytes is over the limit of 5, skipped",
                "metrics.bin#2@14 LengthPrefixed Some(Metrics) ab",
                "metrics.bin#3@20 bad corrupt_protobuf: truncated record: the file ends 2 bytes into a 4-byte length",
            ]
        );
    }

    #[test]
    fn whole_file_gzip_and_zstd_by_magic_not_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir.path().join("a.data");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"x\":1}\n{\"y\":2}\n").expect("gzip");
        std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
        let zst = dir.path().join("b.data");
        let framed = length_prefixed(&[b"\x0a\x00"]);
        std::fs::write(&zst, zstd::encode_all(&framed[..], 1).expect("zstd")).expect("write");
        assert_eq!(
            raw_items(&[dir.path().to_path_buf()], 100),
            vec![
                "a.data:1 JsonLines None {\"x\":1}",
                "a.data:2 JsonLines None {\"y\":2}",
                "b.data#1@0 LengthPrefixed None \n\0",
            ]
        );
    }

    #[test]
    fn corrupt_gzip_is_unreadable_and_reading_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&b"{\"x\":1}\n".repeat(1000)).expect("gzip");
        let mut gz = enc.finish().expect("gzip");
        gz.truncate(gz.len() / 2);
        std::fs::write(dir.path().join("1.jsonl.gz"), gz).expect("write");
        std::fs::write(dir.path().join("2.jsonl"), b"{}\n").expect("write");
        let items = raw_items(&[dir.path().to_path_buf()], 100);
        assert!(
            items
                .iter()
                .any(|i| i.contains("1.jsonl.gz") && i.contains("unreadable read")),
            "{items:?}"
        );
        assert_eq!(
            items.last().map(String::as_str),
            Some("2.jsonl:1 JsonLines None {}")
        );
    }

    #[test]
    fn folders_are_read_recursively_in_name_order_without_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("b/inner")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join("c.json"), b"{\"c\":1}\n").expect("write");
        std::fs::write(dir.path().join("a.json"), b"{\"a\":1}\n").expect("write");
        std::fs::write(dir.path().join(".hidden.json"), b"{\"h\":1}\n").expect("write");
        std::fs::write(dir.path().join(".git/x.json"), b"{\"g\":1}\n").expect("write");
        std::fs::write(dir.path().join("b/inner/z.json"), b"{\"z\":1}\n").expect("write");
        std::fs::write(dir.path().join("b/y.json"), b"{\"y\":1}\n").expect("write");
        let lines: Vec<String> = raw_items(&[dir.path().to_path_buf()], 100)
            .into_iter()
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            lines,
            vec!["{\"a\":1}", "{\"z\":1}", "{\"y\":1}", "{\"c\":1}"]
        );
    }

    #[test]
    fn progress_reaches_the_total() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.jsonl");
        std::fs::write(&path, b"{}\n".repeat(10_000)).expect("write");
        let mut reader = open(&[path]).expect("open");
        let progress = reader.progress();
        assert_eq!(progress.bytes_total(), 30_000);
        while reader.next_raw().is_some() {}
        assert_eq!(progress.bytes_read(), 30_000);
        assert_eq!(progress.fraction(), 1.0);
    }

    #[test]
    fn empty_folder_missing_file_and_no_input_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            open(&[dir.path().to_path_buf()]),
            Err(FileError::EmptyFolder { .. })
        ));
        let missing = dir.path().join("missing.jsonl");
        let err = open(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(err.to_string().contains("missing.jsonl"), "{err}");
        assert!(matches!(open(&[]), Err(FileError::NoInput)));
    }

    #[test]
    fn file_name_hints() {
        let hint = |n: &str| table_hint(Path::new(n));
        assert_eq!(hint("traces.pb"), Some(Table::Spans));
        assert_eq!(hint("otel-spans-0001.bin"), Some(Table::Spans));
        assert_eq!(hint("catalog-metrics.pb"), Some(Table::Metrics));
        assert_eq!(hint("logs.proto"), Some(Table::Logs));
        assert_eq!(hint("mylogs.proto"), Some(Table::Logs));
        assert_eq!(hint("capture.pb"), None);
        assert_eq!(hint("catalog.pb"), Some(Table::Logs));
    }

    #[test]
    fn a_record_the_decoder_panics_on_is_bad_and_reading_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("traces.pb");
        let good = crate::decode::json_to_proto(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01","spanId":"02","name":"x","startTimeUnixNano":"1767225600000000000","endTimeUnixNano":"1767225600000000001"}]}]}]}"#,
        )
        .expect("fixture")
        .1;
        std::fs::write(
            &path,
            length_prefixed(&[&good, crate::decode::TEST_PANIC, &good]),
        )
        .expect("write");
        let items: Vec<String> = open(&[path])
            .expect("open")
            .map(|item| match item {
                CaptureItem::Message(m) => {
                    format!(
                        "{} rows {}",
                        m.position.at_string(),
                        m.decoded.batch.num_rows()
                    )
                }
                CaptureItem::Bad(b) => {
                    format!("{} bad {}", b.position.at_string(), b.error.reason.as_str())
                }
                CaptureItem::Unreadable { position, .. } => {
                    format!("{} unreadable", position.at_string())
                }
            })
            .collect();
        let second = 4 + good.len();
        assert_eq!(
            items,
            vec![
                "traces.pb#1@0 rows 1".to_string(),
                format!("traces.pb#2@{second} bad decoder_panic"),
                format!(
                    "traces.pb#3@{} rows 1",
                    second + 4 + crate::decode::TEST_PANIC.len()
                ),
            ]
        );
    }

    #[test]
    fn a_cut_tail_is_marked_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs.pb");
        let mut bytes = length_prefixed(&[b"\x0a\x00"]);
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(b"12345");
        std::fs::write(&path, bytes).expect("write");
        let bad: Vec<(String, bool)> = open(&[path])
            .expect("open")
            .filter_map(|item| match item {
                CaptureItem::Bad(b) => Some((b.position.to_string(), b.truncated)),
                _ => None,
            })
            .collect();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].0.ends_with("logs.pb:record 2 (byte offset 6)"),
            "{bad:?}"
        );
        assert!(bad[0].1);
    }

    #[test]
    fn compressed_records_are_decompressed_with_a_limit() {
        let z = zstd::encode_all(&b"{\"a\":1}"[..], 1).expect("zstd");
        assert_eq!(
            decompress_record(&z, 100).expect("ok"),
            Some(b"{\"a\":1}".to_vec())
        );
        let big = zstd::encode_all(&[b' '; 1000][..], 1).expect("zstd");
        let err = decompress_record(&big, 100).expect_err("too big");
        assert_eq!(err.reason, Reason::Oversized);
        assert_eq!(decompress_record(b"\x0a\x00", 100).expect("ok"), None);
        let err = decompress_record(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3], 100).expect_err("corrupt");
        assert_eq!(err.reason, Reason::UnknownEncoding);
    }
}
