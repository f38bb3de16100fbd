//! Captures written by `write::capture_writer` read back by
//! `source::capture_reader` into the same rows as the messages decoded
//! directly, in every format.

mod source_fixtures;

use std::path::Path;

use ingest::Table;
use ingest::decode::decode_any;
use ingest::source::capture_reader::{self, CaptureItem};
use ingest::write::capture_writer::{
    CaptureFormat, CaptureOptions, CaptureWriter, Compression, convert,
};
use source_fixtures::*;

fn messages() -> Vec<(Table, Vec<u8>)> {
    let json = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures/mixed.jsonl"),
    )
    .expect("read");
    let lines: Vec<&str> = json.lines().collect();
    // pretty-printed JSON, as a Kafka producer may send it
    let pretty_logs = serde_json::to_vec_pretty(
        &serde_json::from_str::<serde_json::Value>(lines[2]).expect("json"),
    )
    .expect("json");
    vec![
        (Table::Spans, proto(Table::Spans)),
        (Table::Logs, proto(Table::Logs)),
        (Table::Spans, lines[0].as_bytes().to_vec()),
        (Table::Metrics, proto(Table::Metrics)),
        (Table::Logs, pretty_logs),
        (Table::Metrics, lines[3].as_bytes().to_vec()),
        (Table::Spans, Vec::new()),
    ]
}

fn round_trip(name: &str, options: CaptureOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    let mut writer = CaptureWriter::create(&path, options).expect("create");
    let messages = messages();
    for (table, raw) in &messages {
        writer.write(*table, raw).expect("write");
    }
    let stats = writer.finish().expect("finish");
    assert_eq!(stats.messages, messages.len() as u64);

    let items: Vec<CaptureItem> = capture_reader::open(&[path]).expect("open").collect();
    assert_eq!(items.len(), messages.len(), "{name}");
    for (i, (item, (table, raw))) in items.iter().zip(&messages).enumerate() {
        let expected = decode_any(*table, raw).expect("fixtures decode");
        let CaptureItem::Message(m) = item else {
            panic!("{name} message {i}: {item:?}");
        };
        // An empty JSON export has no top-level key to tell its table: compare rows only.
        if expected.batch.num_rows() > 0 {
            assert_eq!(m.decoded.table, expected.table, "{name} message {i}");
        }
        assert_eq!(
            m.decoded.batch.num_rows(),
            expected.batch.num_rows(),
            "{name} message {i}"
        );
        if expected.batch.num_rows() > 0 {
            assert_eq!(m.decoded.batch, expected.batch, "{name} message {i}");
        }
        assert_eq!(m.decoded.rejected, expected.rejected, "{name} message {i}");
    }
}

#[test]
fn length_prefixed_round_trip() {
    round_trip("capture.pb", CaptureOptions::default());
}

#[test]
fn length_prefixed_zstd_records_round_trip() {
    round_trip(
        "capture.pb.zst",
        CaptureOptions {
            format: CaptureFormat::LengthPrefixed,
            compression: Compression::Zstd,
            zstd_level: 0,
        },
    );
}

#[test]
fn json_lines_round_trip_transcodes_protobuf() {
    round_trip(
        "capture.jsonl",
        CaptureOptions::for_path(Path::new("capture.jsonl")),
    );
}

#[test]
fn zstd_json_lines_round_trip() {
    round_trip(
        "capture.jsonl.zst",
        CaptureOptions::for_path(Path::new("capture.jsonl.zst")),
    );
}

#[test]
fn length_prefixed_keeps_the_bytes_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exact.pb");
    let mut writer = CaptureWriter::create(&path, CaptureOptions::default()).expect("create");
    let garbage = b"\x0a\xff\xff not protobuf".to_vec();
    writer.write(Table::Spans, &garbage).expect("write");
    writer
        .write(Table::Logs, &proto(Table::Logs))
        .expect("write");
    writer.finish().expect("finish");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        bytes,
        length_prefixed([&garbage[..], &proto(Table::Logs)[..]])
    );
}

/// A JSON lines capture of [`messages`], every other message with a Kafka
/// partition kept.
fn json_capture(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mixed.jsonl");
    let mut writer = CaptureWriter::create(&path, CaptureOptions::for_path(&path)).expect("create");
    for (i, (table, raw)) in messages().iter().enumerate() {
        let partition = (i % 2 == 1).then_some(i as i32);
        writer.write_from(*table, raw, partition).expect("write");
    }
    writer.finish().expect("finish");
    path
}

/// Table, partition and rows of each message of a capture, or the error.
fn read_all(
    path: &Path,
) -> Vec<Result<(Table, Option<i32>, arrow::record_batch::RecordBatch), String>> {
    capture_reader::open(&[path.to_path_buf()])
        .expect("open")
        .map(|item| match item {
            CaptureItem::Message(m) => Ok((m.decoded.table, m.partition, m.decoded.batch)),
            CaptureItem::Bad(b) => Err(format!("{}: {}", b.position, b.error)),
            CaptureItem::Unreadable { position, error } => Err(format!("{position}: {error}")),
        })
        .collect()
}

#[test]
fn a_json_capture_converted_to_protobuf_reads_back_as_the_same_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = json_capture(dir.path());
    let pb = dir.path().join("mixed.pb.zst");
    let done = convert(&[json.clone()], &pb, CaptureOptions::for_path(&pb)).expect("convert");
    assert_eq!(done.stats.messages, messages().len() as u64);
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    // protobuf records, each zstd-compressed: no JSON left to parse
    let bytes = std::fs::read(&pb).expect("read");
    assert_eq!(&bytes[4..8], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let (from_json, from_pb) = (read_all(&json), read_all(&pb));
    assert_eq!(from_json.len(), from_pb.len());
    for (i, (a, b)) in from_json.iter().zip(&from_pb).enumerate() {
        let (a, b) = (
            a.as_ref().expect("json decodes"),
            b.as_ref().expect("pb decodes"),
        );
        assert_eq!(a.1, b.1, "message {i}: partition");
        assert_eq!(a.2, b.2, "message {i}: rows");
        if a.2.num_rows() > 0 {
            assert_eq!(a.0, b.0, "message {i}: table");
        }
    }
    assert!(from_pb.iter().flatten().any(|m| m.1 == Some(1)));
    // and back to JSON lines: the same rows again
    let back = dir.path().join("back.jsonl");
    convert(&[pb], &back, CaptureOptions::for_path(&back)).expect("convert back");
    let again = read_all(&back);
    for (i, (a, b)) in from_json.iter().zip(&again).enumerate() {
        let (a, b) = (a.as_ref().expect("json"), b.as_ref().expect("json again"));
        assert_eq!((a.1, &a.2), (b.1, &b.2), "message {i}");
    }
}

/// The byte offset of each record of an uncompressed length-prefixed capture.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 4 <= bytes.len() {
        out.push(at);
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4 + len;
    }
    out
}

#[test]
fn a_corrupt_or_cut_protobuf_capture_names_the_file_and_offset_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = json_capture(dir.path());
    let pb = dir.path().join("good.pb");
    convert(&[json], &pb, CaptureOptions::for_path(&pb)).expect("convert");
    let bytes = std::fs::read(&pb).expect("read");
    let offsets = record_offsets(&bytes);
    let good = read_all(&pb);
    assert!(good.iter().all(Result::is_ok));

    // the second record's body overwritten: that record is an error naming
    // the file, the record and its offset; the others decode as before
    let mut corrupt = bytes.clone();
    let body = offsets[1] + 4..offsets[2];
    assert!(!body.is_empty(), "the second record has a body");
    corrupt[body].fill(0xff);
    let path = dir.path().join("corrupt.pb");
    std::fs::write(&path, &corrupt).expect("write");
    let read = read_all(&path);
    assert_eq!(read.len(), good.len());
    let err = read[1].as_ref().expect_err("the corrupt record");
    assert!(
        err.contains("corrupt.pb")
            && err.contains(&format!("record 2 (byte offset {})", offsets[1])),
        "{err}"
    );
    for i in (0..read.len()).filter(|&i| i != 1) {
        assert_eq!(
            read[i].as_ref().ok(),
            good[i].as_ref().ok(),
            "record {}",
            i + 1
        );
    }

    // cut in the middle of the last record: the ones before are kept
    // the last record with a body (the last message is an empty export)
    let n = (0..offsets.len())
        .rev()
        .find(|&i| offsets.get(i + 1).unwrap_or(&bytes.len()) - offsets[i] > 8)
        .expect("a record with a body");
    let last = offsets[n];
    let cut = &bytes[..last + 6];
    let path = dir.path().join("cut.pb");
    std::fs::write(&path, cut).expect("write");
    let items: Vec<CaptureItem> = capture_reader::open(&[path]).expect("open").collect();
    assert_eq!(items.len(), n + 1);
    let CaptureItem::Bad(bad) = &items[n] else {
        panic!("the cut record: {:?}", items.last());
    };
    assert!(bad.truncated);
    let at = bad.position.to_string();
    assert!(
        at.contains("cut.pb") && at.contains(&format!("(byte offset {last})")),
        "{at}"
    );
    let kept = read_all(&dir.path().join("good.pb"));
    for (i, item) in items[..n].iter().enumerate() {
        let CaptureItem::Message(m) = item else {
            panic!("record {}: {item:?}", i + 1);
        };
        assert_eq!(Some(&m.decoded.batch), kept[i].as_ref().ok().map(|k| &k.2));
    }
}

#[test]
fn decoding_in_parallel_gives_the_same_items_in_the_same_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.pb.zst");
    let mut writer = CaptureWriter::create(&path, CaptureOptions::for_path(&path)).expect("create");
    for round in 0..40 {
        for (i, (table, raw)) in messages().iter().enumerate() {
            writer
                .write_from(*table, raw, Some((round + i) as i32 % 3))
                .expect("write");
        }
        if round % 7 == 0 {
            writer
                .write(Table::Spans, b"\x0a\xff\xff not protobuf")
                .expect("write");
        }
    }
    writer.finish().expect("finish");
    let describe = |item: CaptureItem| match item {
        CaptureItem::Message(m) => {
            format!("{} {:?} {:?}", m.position, m.partition, m.decoded.batch)
        }
        CaptureItem::Bad(b) => format!("{} bad {}", b.position, b.error),
        CaptureItem::Unreadable { position, error } => format!("{position} unreadable {error}"),
    };
    let serial: Vec<String> = capture_reader::open(std::slice::from_ref(&path))
        .expect("open")
        .map(describe)
        .collect();
    assert_eq!(serial.len(), 40 * messages().len() + 6);
    for threads in [1, 3] {
        let parallel: Vec<String> = capture_reader::open(std::slice::from_ref(&path))
            .expect("open")
            .decode_in_parallel(threads)
            .map(describe)
            .collect();
        assert_eq!(parallel, serial, "{threads} threads");
    }
}
