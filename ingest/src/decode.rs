//! Entry points that turn one message's bytes into a [`Decoded`] batch.

use crate::{DecodeError, Decoded, Reason, Table};

/// Decodes an OTLP protobuf `Export{Trace,Logs,Metrics}ServiceRequest` (the same
/// bytes as `TracesData`, `LogsData`, `MetricsData`) into rows of `table`.
pub fn decode_proto(table: Table, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let _ = (table, bytes);
    Err(DecodeError::new(Reason::CorruptProtobuf, "protobuf decoding is not written yet"))
}

/// Decodes one OTLP/JSON object; its top-level key (`resourceSpans`,
/// `resourceLogs`, `resourceMetrics`) says which table it fills.
pub fn decode_json(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let _ = bytes;
    Err(DecodeError::new(Reason::BadJson, "JSON decoding is not written yet"))
}

/// Decodes a message whose encoding is not known in advance (a Kafka message):
/// OTLP/JSON when it starts with `{`, else OTLP protobuf of `table`.
pub fn decode_any(table: Table, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => decode_json(bytes),
        _ => decode_proto(table, bytes),
    }
}
