//! The capture-file source against golden listings (`tests/captures/*.expected`;
//! `UPDATE_GOLDEN=1 cargo test -p ingest --test file_source` rewrites them).

mod source_fixtures;

use std::io::Write;
use std::path::{Path, PathBuf};

use ingest::Table;
use ingest::source::capture_reader::{self, CaptureItem};
use prost::Message;
use source_fixtures::*;

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[test]
fn json_lines_mixed_signals_bad_line_and_rejected_record() {
    let reader = capture_reader::open(&[captures().join("mixed.jsonl")]).expect("open");
    golden("mixed.jsonl.expected", &describe(reader));
}

#[test]
fn whole_file_gzip_and_zstd_read_as_the_plain_file() {
    let plain = std::fs::read(captures().join("mixed.jsonl")).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    // Named to show that the magic bytes decide, not the extension.
    std::fs::write(dir.path().join("mixed.jsonl.gz"), gzip(&plain)).expect("write");
    std::fs::write(
        dir.path().join("mixed.bin"),
        zstd::encode_all(&plain[..], 3).expect("zstd"),
    )
    .expect("write");
    let expected = describe(capture_reader::open(&[captures().join("mixed.jsonl")]).expect("open"));
    for name in ["mixed.jsonl.gz", "mixed.bin"] {
        let actual = describe(capture_reader::open(&[dir.path().join(name)]).expect("open"));
        assert_eq!(
            actual,
            expected.replace("mixed.jsonl:", &format!("{name}:")),
            "{name}"
        );
    }
}

#[test]
fn proto_records_find_their_signal_without_a_name_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = [
        proto(Table::Spans),
        proto(Table::Logs),
        proto(Table::Metrics),
        gauge_only().encode_to_vec(),
        Vec::new(),
    ];
    let path = dir.path().join("capture.pb");
    std::fs::write(&path, length_prefixed(records.iter().map(Vec::as_slice))).expect("write");
    golden(
        "proto-no-hint.expected",
        &describe(capture_reader::open(&[path]).expect("open")),
    );
}

#[test]
fn proto_records_under_a_misleading_name_still_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = [
        gauge_only().encode_to_vec(),
        proto(Table::Logs),
        proto(Table::Metrics),
    ];
    let path = dir.path().join("spans.pb");
    std::fs::write(&path, length_prefixed(records.iter().map(Vec::as_slice))).expect("write");
    let text = describe(capture_reader::open(&[path]).expect("open"));
    let tables: Vec<&str> = text.lines().filter_map(|l| l.split(' ').nth(5)).collect();
    assert_eq!(tables, vec!["metrics", "logs", "metrics"], "{text}");
}

#[test]
fn collector_zstd_records_json_and_proto_and_a_truncated_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = std::fs::read_to_string(captures().join("mixed.jsonl")).expect("read");
    let first_line = json.lines().next().expect("a line").as_bytes().to_vec();
    let records = [
        zstd::encode_all(&first_line[..], 3).expect("zstd"),
        zstd::encode_all(&proto(Table::Logs)[..], 3).expect("zstd"),
        first_line.clone(),
        b"\x28\xb5\x2f\xfd not really zstd".to_vec(),
        b"\x0a\x05\x0a\x03".to_vec(),
    ];
    let mut bytes = length_prefixed(records.iter().map(Vec::as_slice));
    let cut = proto(Table::Metrics);
    bytes.extend_from_slice(&(cut.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&cut[..cut.len() / 2]);
    let path = dir.path().join("logs-zstd.pb");
    std::fs::write(&path, bytes).expect("write");
    golden(
        "zstd-records.expected",
        &describe(capture_reader::open(&[path]).expect("open")),
    );
}

#[test]
fn a_folder_is_read_in_name_order_recursively() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("2026-01-01")).expect("mkdir");
    std::fs::write(
        dir.path().join("b-traces.pb"),
        length_prefixed([&proto(Table::Spans)[..]]),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("2026-01-01/a-logs.pb"),
        length_prefixed([&proto(Table::Logs)[..]]),
    )
    .expect("write");
    std::fs::write(dir.path().join(".partial.pb"), b"junk").expect("write");
    std::fs::copy(captures().join("mixed.jsonl"), dir.path().join("c.jsonl")).expect("copy");
    let text = describe(capture_reader::open(&[dir.path().to_path_buf()]).expect("open"));
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split([':', ' ']).next())
        .collect();
    assert_eq!(
        files[..3],
        ["a-logs.pb", "b-traces.pb", "c.jsonl"],
        "{text}"
    );
}

#[test]
fn a_large_capture_streams_with_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.pb");
    let record = proto(Table::Spans);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for _ in 0..5000 {
        out.write_all(&(record.len() as u32).to_be_bytes())
            .expect("write");
        out.write_all(&record).expect("write");
    }
    drop(out);
    let reader = capture_reader::open(std::slice::from_ref(&path)).expect("open");
    let progress = reader.progress();
    let total = std::fs::metadata(&path).expect("stat").len();
    assert_eq!(progress.bytes_total(), total);
    let mut rows = 0;
    let mut last = 0;
    for item in reader {
        let CaptureItem::Message(m) = item else {
            panic!("unexpected {item:?}");
        };
        rows += m.decoded.batch.num_rows();
        assert!(progress.bytes_read() >= last);
        last = progress.bytes_read();
    }
    assert_eq!(rows, 10_000);
    assert_eq!(progress.bytes_read(), total);
}

#[test]
fn bad_lines_are_counted_and_dead_lettered_with_their_position() {
    use std::sync::Arc;

    use ingest::write::dead_letter::{DeadLetterFile, Rejections};
    use ingest::{Reason, RejectCounts};

    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.jsonl");
    let counts = Arc::new(RejectCounts::default());
    let rejections = Rejections::new(counts.clone())
        .with_sink(Box::new(DeadLetterFile::create(&dead).expect("create")));
    for item in capture_reader::open(&[captures().join("mixed.jsonl")]).expect("open") {
        match item {
            CaptureItem::Message(m) => m.report(&rejections),
            CaptureItem::Bad(b) => b.report(&rejections),
            CaptureItem::Unreadable { position, error } => panic!("{position}: {error}"),
        }
    }
    rejections.flush().expect("flush");
    assert_eq!(
        counts.snapshot(),
        vec![(Reason::BadJson, 1), (Reason::AbsurdTimestamp, 1)]
    );
    let letters = std::fs::read_to_string(&dead).expect("read");
    let letter: serde_json::Value = serde_json::from_str(letters.trim()).expect("one JSON line");
    assert!(
        letter["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("mixed.jsonl:5")),
        "{letter}"
    );
    assert_eq!(letter["source"], "file");
    assert_eq!(letter["reason"], "bad_json");
}
