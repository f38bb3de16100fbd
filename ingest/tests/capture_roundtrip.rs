//! Captures written by `write::capture_writer` read back by
//! `source::capture_reader` into the same rows as the messages decoded
//! directly, in every format.

mod source_fixtures;

use std::path::Path;

use ingest::Table;
use ingest::decode::decode_any;
use ingest::source::capture_reader::{self, CaptureItem};
use ingest::write::capture_writer::{CaptureFormat, CaptureOptions, CaptureWriter, Compression};
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
