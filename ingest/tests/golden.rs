//! Golden tests: each OTLP/JSON fixture under `tests/corpus/` is decoded as JSON,
//! converted to protobuf and decoded by the wire reader and by the prost path;
//! all three must print exactly `tests/corpus/<name>.expected`.
//!
//! The printout is one block per row, one `column = value` line per non-null
//! column (a row of 40 columns does not fit a table), then the rejected records.
//! Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p ingest --test golden` and review the diff.

use std::path::PathBuf;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use ingest::Decoded;
use ingest::decode::{decode_json, decode_proto, decode_proto_prost, json_to_proto};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

/// The transposed printout of a decoded message.
pub fn render(d: &Decoded) -> String {
    let batch = &d.batch;
    let options = FormatOptions::default();
    let mut out = format!("table {} rows {}\n", d.table.name(), batch.num_rows());
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
        .collect();
    for row in 0..batch.num_rows() {
        out.push_str(&format!("-- row {row}\n"));
        for (i, field) in batch.schema().fields().iter().enumerate() {
            if batch.column(i).is_null(row) {
                continue;
            }
            out.push_str(&format!(
                "{} = {}\n",
                field.name(),
                formatters[i].value(row)
            ));
        }
    }
    for r in &d.rejected {
        out.push_str(&format!("rejected {}: {}\n", r.reason.as_str(), r.detail));
    }
    out
}

fn golden(name: &str) {
    let json = std::fs::read(corpus(&format!("{name}.json"))).expect("fixture");
    let from_json = render(&decode_json(&json).expect("decodes as JSON"));
    let expected_path = corpus(&format!("{name}.expected"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &from_json).expect("write golden");
    }
    let expected = std::fs::read_to_string(&expected_path).expect("golden file");
    assert_eq!(
        from_json, expected,
        "JSON decoding of {name} differs from {name}.expected"
    );

    // The same message as protobuf: the rows are the same; the rejected records
    // that only JSON can have (a wrong JSON type) are absent.
    let (table, proto) = json_to_proto(&json).expect("converts to protobuf");
    let wire = decode_proto(table, &proto).expect("wire decoding");
    let prost = decode_proto_prost(table, &proto).expect("prost decoding");
    assert_eq!(
        render(&wire),
        render(&prost),
        "wire and prost paths differ on {name}"
    );
    let rows_only = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        rows_only(&render(&wire)),
        rows_only(&expected),
        "protobuf rows of {name} differ"
    );
}

#[test]
fn spans_golden() {
    golden("spans");
}

#[test]
fn logs_golden() {
    golden("logs");
}

#[test]
fn metrics_golden() {
    golden("metrics");
}

/// The examples in `docs/schema.md`: each ```json block is followed by a plain
/// block of the row it becomes, printed as above.
#[test]
fn schema_doc_examples_are_true() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md"),
    )
    .expect("docs/schema.md");
    let blocks: Vec<(&str, String)> = doc
        .split("```")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, b)| {
            let (lang, body) = b.split_once('\n').unwrap_or((b, ""));
            (lang.trim(), body.to_owned())
        })
        .collect();
    let mut checked = 0;
    for pair in blocks.windows(2) {
        let [(lang, json), (next, rows)] = pair else {
            continue;
        };
        if *lang != "json" || !next.is_empty() {
            continue;
        }
        let d = decode_json(json.as_bytes()).expect("doc example decodes");
        let printed = render(&d);
        let printed: Vec<&str> = printed
            .lines()
            .filter(|l| !l.starts_with("table") && !l.starts_with("-- row"))
            .collect();
        assert_eq!(
            printed,
            rows.lines().collect::<Vec<_>>(),
            "doc example differs"
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}
