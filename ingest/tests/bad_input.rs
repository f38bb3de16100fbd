//! Every class of bad input: what is refused whole (`DecodeError`) and what is
//! kept with a `Rejected` record.

use arrow::array::{Array, AsArray};
use ingest::decode::{
    MAX_ATTRIBUTE_BYTES, decode_any, decode_json, decode_proto, decode_proto_prost,
};
use ingest::{Reason, Table};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01

fn span(name: &str, start: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn string_attr(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn reasons(d: &ingest::Decoded) -> Vec<Reason> {
    d.rejected.iter().map(|r| r.reason).collect()
}

#[test]
fn truncated_protobuf_is_corrupt_with_an_offset() {
    let bytes = request(vec![span("GET /", T0, vec![])]);
    for cut in 1..bytes.len() {
        let err = decode_proto(Table::Spans, &bytes[..cut]).expect_err("truncated message");
        assert_eq!(err.reason, Reason::CorruptProtobuf);
        assert!(err.detail.contains("at byte"), "{err}");
    }
}

#[test]
fn corrupt_protobuf_names_the_byte() {
    // field 1, wire type 2, length 100, but only 2 bytes follow
    let err = decode_proto(Table::Logs, &[0x0a, 100, 1, 2]).expect_err("corrupt");
    assert_eq!(err.reason, Reason::CorruptProtobuf);
    assert!(err.detail.ends_with("at byte 0"), "{err}");
    // a group (wire type 3) inside a valid outer message
    let err = decode_proto(Table::Metrics, &[0x0a, 2, 0x0b, 0x00]).expect_err("corrupt");
    assert!(err.detail.ends_with("at byte 2"), "{err}");
    // a fixed64 where a message should be
    let err = decode_proto(Table::Spans, &[0x09, 0, 0, 0, 0, 0, 0, 0, 0]).expect_err("corrupt");
    assert_eq!(err.reason, Reason::CorruptProtobuf);
    // a wrongly typed timestamp is refused, as prost refuses it
    let mut s = request(vec![span("x", T0, vec![])]);
    let at = s
        .windows(1)
        .position(|w| w[0] == 0x39)
        .expect("start time tag"); // field 7, fixed64
    s[at] = 0x38; // field 7, varint
    assert!(decode_proto(Table::Spans, &s).is_err());
    assert!(decode_proto_prost(Table::Spans, &s).is_err());
}

#[test]
fn broken_json_has_line_and_column() {
    let err = decode_json(b"{\"resourceSpans\": [\n  {\"scopeSpans\": [}\n]}").expect_err("broken");
    assert_eq!(err.reason, Reason::BadJson);
    assert!(err.detail.starts_with("line 2 column"), "{err}");
    let err = decode_json(b"[1, 2]").expect_err("not an object");
    assert_eq!(err.reason, Reason::BadJson);
    let err = decode_json(br#"{"resourceSpans": {}}"#).expect_err("not a list");
    assert_eq!(err.reason, Reason::BadJson);
    let err = decode_json(b"{}").expect_err("no table");
    assert_eq!(err.reason, Reason::BadJson);
    // with a table given, an empty export is an empty batch
    let empty = decode_any(Table::Logs, b" {}").expect("empty export");
    assert_eq!((empty.table, empty.batch.num_rows()), (Table::Logs, 0));
}

#[test]
fn json_scalars_of_the_wrong_type_are_reported() {
    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0102","spanId":"zz","name":7,"kind":"SPAN_KIND_NOPE","startTimeUnixNano":"1767225600000000000","endTimeUnixNano":"1767225600000000001"},
        {"traceId":"0102","spanId":"03","name":"x","startTimeUnixNano":true,"endTimeUnixNano":"1767225600000000001"}
    ]}]}]}"#;
    let d = decode_json(json).expect("decodes");
    assert_eq!(d.batch.num_rows(), 1);
    assert_eq!(
        reasons(&d),
        [
            Reason::WrongType,
            Reason::WrongType,
            Reason::WrongType,
            Reason::WrongType,
            Reason::AbsurdTimestamp
        ]
    );
    let kind = d
        .batch
        .column_by_name("kind")
        .expect("kind")
        .as_string::<i32>();
    assert_eq!(kind.value(0), "UNSPECIFIED");
}

#[test]
fn promoted_attribute_of_the_wrong_type_stays_in_the_map() {
    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"01","spanId":"02","name":"GET /","startTimeUnixNano":"1767225600000000000","endTimeUnixNano":"1767225600000000001",
         "attributes":[{"key":"http.response.status_code","value":{"stringValue":"two hundred"}}]},
        {"traceId":"01","spanId":"03","name":"GET /","startTimeUnixNano":"1767225600000000000","endTimeUnixNano":"1767225600000000001",
         "attributes":[{"key":"http.response.status_code","value":{"stringValue":"404"}}]}
    ]}]}]}"#;
    let d = decode_json(json).expect("decodes");
    assert_eq!(reasons(&d), [Reason::WrongType]);
    let status = d
        .batch
        .column_by_name("http_response_status_code")
        .expect("column");
    let status = status.as_primitive::<arrow::datatypes::Int64Type>();
    assert!(status.is_null(0));
    assert_eq!(status.value(1), 404);
    let attrs = d.batch.column_by_name("attributes").expect("map").as_map();
    let first = attrs.value(0);
    assert_eq!(
        first.column(0).as_string::<i32>().value(0),
        "http.response.status_code"
    );
    assert_eq!(first.column(1).as_string::<i32>().value(0), "two hundred");
    assert_eq!(attrs.value(1).len(), 0);
}

#[test]
fn absurd_timestamps_skip_the_row() {
    let year_1999 = 915_148_800_000_000_000;
    let year_2101 = 4_133_980_800_000_000_000;
    let bytes = request(vec![
        span("zero", 0, vec![]),
        span("old", year_1999, vec![]),
        span("ok", T0, vec![]),
        span("future", year_2101, vec![]),
    ]);
    let d = decode_proto(Table::Spans, &bytes).expect("decodes");
    assert_eq!(d.batch.num_rows(), 1);
    assert_eq!(reasons(&d), [Reason::AbsurdTimestamp; 3]);
    assert!(
        d.rejected[0].detail.contains("\"zero\""),
        "{:?}",
        d.rejected[0]
    );
}

#[test]
fn invalid_utf8_is_replaced_and_the_row_kept() {
    let mut bytes = request(vec![span(
        "GET @@@@",
        T0,
        vec![string_attr("user.id", "u-@@".into())],
    )]);
    for b in bytes.iter_mut().filter(|b| **b == b'@') {
        *b = 0xff;
    }
    let d = decode_proto(Table::Spans, &bytes).expect("decodes");
    assert_eq!(d.batch.num_rows(), 1);
    assert_eq!(reasons(&d), [Reason::InvalidUtf8, Reason::InvalidUtf8]);
    let name = d
        .batch
        .column_by_name("name")
        .expect("name")
        .as_string::<i32>();
    assert_eq!(name.value(0), "GET \u{fffd}\u{fffd}\u{fffd}\u{fffd}");
    let user = d
        .batch
        .column_by_name("user_id")
        .expect("user_id")
        .as_string::<i32>();
    assert_eq!(user.value(0), "u-\u{fffd}\u{fffd}");
    // the prost path refuses such a message whole
    assert_eq!(
        decode_proto_prost(Table::Spans, &bytes)
            .expect_err("prost refuses")
            .reason,
        Reason::CorruptProtobuf
    );
}

#[test]
fn a_10_mb_attribute_is_truncated() {
    let big = "é".repeat(5 * 1024 * 1024); // 10 MiB of 2-byte chars
    let bytes = request(vec![span(
        "POST /upload",
        T0,
        vec![
            string_attr("http.request.header.x", big.clone()),
            string_attr("url.path", big),
        ],
    )]);
    for d in [
        decode_proto(Table::Spans, &bytes).expect("decodes"),
        decode_proto_prost(Table::Spans, &bytes).expect("decodes"),
    ] {
        assert_eq!(d.batch.num_rows(), 1);
        assert_eq!(reasons(&d), [Reason::Oversized, Reason::Oversized]);
        let path = d
            .batch
            .column_by_name("url_path")
            .expect("url_path")
            .as_string::<i32>();
        assert_eq!(path.value(0).len(), MAX_ATTRIBUTE_BYTES);
        let attrs = d.batch.column_by_name("attributes").expect("map").as_map();
        assert_eq!(
            attrs.value(0).column(1).as_string::<i32>().value(0).len(),
            MAX_ATTRIBUTE_BYTES
        );
    }
}

#[test]
fn a_message_over_64_mib_is_refused() {
    let bytes = vec![0u8; 64 * 1024 * 1024 + 1];
    assert_eq!(
        decode_proto(Table::Spans, &bytes)
            .expect_err("too big")
            .reason,
        Reason::Oversized
    );
    assert_eq!(
        decode_json(&bytes).expect_err("too big").reason,
        Reason::Oversized
    );
}

#[test]
fn ids_and_int64_in_every_json_form() {
    let json = br#"{"resource_spans":[{"scope_spans":[{"spans":[
        {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","name":"a","kind":"SERVER",
         "startTimeUnixNano":1767225600000000000,"endTimeUnixNano":"1767225600000000001",
         "attributes":[{"key":"n","value":{"intValue":9007199254740993}},{"key":"s","value":{"intValue":"-9223372036854775808"}}]},
        {"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"7uGbfsPBsXQ=","name":"b","kind":3,
         "start_time_unix_nano":"1767225600000000000","end_time_unix_nano":1.767225600000000001e18}
    ]}]}]}"#;
    let d = decode_json(json).expect("decodes");
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    let trace = d
        .batch
        .column_by_name("trace_id")
        .expect("trace_id")
        .as_string::<i32>();
    assert_eq!(trace.value(0), "5b8efff798038103d269b633813fc60c");
    assert_eq!(trace.value(1), "5b8efff798038103d269b633813fc60c");
    let kind = d
        .batch
        .column_by_name("kind")
        .expect("kind")
        .as_string::<i32>();
    assert_eq!((kind.value(0), kind.value(1)), ("SERVER", "CLIENT"));
    let attrs = d.batch.column_by_name("attributes").expect("map").as_map();
    let values = attrs.value(0);
    let values = values.column(1).as_string::<i32>();
    assert_eq!(
        (values.value(0), values.value(1)),
        ("9007199254740993", "-9223372036854775808")
    );
}
