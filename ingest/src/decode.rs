//! Entry points that turn one message's bytes into a [`Decoded`] batch.
//!
//! Protobuf is read by a hand-written wire-format reader straight into the Arrow
//! builders ([`decode_proto`]); [`decode_proto_prost`] is the simple path through
//! the prost structs of `opentelemetry-proto`, kept as the benchmark baseline and
//! the property tests' oracle: both give the same rows for any valid message.

use crate::json::{self, Request};
use crate::rows::MAX_MESSAGE_BYTES;
use crate::{DecodeError, Decoded, Reason, Table, logs, metrics, spans};

pub use crate::rows::{MAX_ATTRIBUTE_BYTES, time_ok};

fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::new(
            Reason::Oversized,
            format!(
                "message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// Decodes an OTLP protobuf `Export{Trace,Logs,Metrics}ServiceRequest` (the same
/// bytes as `TracesData`, `LogsData`, `MetricsData`) into rows of `table`.
///
/// ```
/// use ingest::{Table, decode::decode_proto};
/// let empty = decode_proto(Table::Spans, &[]).unwrap();
/// assert_eq!(empty.batch.num_rows(), 0);
/// ```
pub fn decode_proto(table: Table, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    check_size(bytes)?;
    match table {
        Table::Spans => spans::decode_wire(bytes),
        Table::Logs => logs::decode_wire(bytes),
        Table::Metrics => metrics::decode_wire(bytes),
    }
}

/// The same as [`decode_proto`] through prost structs: slower, simpler. Strings
/// that are not UTF-8 make prost refuse the whole message (`CorruptProtobuf`),
/// where [`decode_proto`] replaces them and keeps the row.
pub fn decode_proto_prost(table: Table, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    use prost::Message;
    check_size(bytes)?;
    let corrupt = |e: prost::DecodeError| DecodeError::new(Reason::CorruptProtobuf, e.to_string());
    match table {
        Table::Spans => spans::from_request(
            &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(bytes)
                .map_err(corrupt)?,
        ),
        Table::Logs => logs::from_request(
            &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(bytes)
                .map_err(corrupt)?,
        ),
        Table::Metrics => metrics::from_request(
            &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(bytes)
                .map_err(corrupt)?,
        ),
    }
}

/// Decodes one OTLP/JSON object; its top-level key (`resourceSpans`,
/// `resourceLogs`, `resourceMetrics`) says which table it fills.
pub fn decode_json(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    decode_json_as(None, bytes)
}

/// Like [`decode_json`]; an object with none of the top-level keys (an empty
/// export, `{}`) gives an empty batch of `hint` instead of an error.
pub fn decode_json_as(hint: Option<Table>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    check_size(bytes)?;
    // Well-formed traces and logs, the bulk of a capture, without a `Value` tree.
    let (req, mut rejected) = match json::typed::parse(bytes) {
        Some(req) => (req, Vec::new()),
        None => json::parse(bytes, hint)?,
    };
    let mut decoded = match req {
        Request::Traces(r) => spans::from_request(&r)?,
        Request::Logs(r) => logs::from_request(&r)?,
        Request::Metrics(r) => metrics::from_request(&r)?,
    };
    rejected.append(&mut decoded.rejected);
    decoded.rejected = rejected;
    Ok(decoded)
}

/// Converts one OTLP/JSON object to OTLP protobuf bytes (for fixtures and
/// tests): the table it fills and the encoded request. What [`decode_json`]
/// would report as rejected is dropped.
pub fn json_to_proto(bytes: &[u8]) -> Result<(Table, Vec<u8>), DecodeError> {
    use prost::Message;
    check_size(bytes)?;
    let (req, _) = json::parse(bytes, None)?;
    Ok(match req {
        Request::Traces(r) => (Table::Spans, r.encode_to_vec()),
        Request::Logs(r) => (Table::Logs, r.encode_to_vec()),
        Request::Metrics(r) => (Table::Metrics, r.encode_to_vec()),
    })
}

/// Decodes a message whose encoding is not known in advance (a Kafka message):
/// OTLP/JSON when it starts with `{`, else OTLP protobuf of `table`.
pub fn decode_any(table: Table, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => decode_json_as(Some(table), bytes),
        _ => decode_proto(table, bytes),
    }
}
