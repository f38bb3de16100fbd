//! Entry points that turn one message's bytes into a [`Decoded`] batch.
//!
//! Protobuf is read by a hand-written wire-format reader straight into the Arrow
//! builders ([`decode_proto`]); [`decode_proto_prost`] is the simple path through
//! the prost structs of `opentelemetry-proto`, kept as the benchmark baseline and
//! the property tests' oracle: both give the same rows for any valid message.
//!
//! # Limits every entry point keeps
//!
//! - **Size**: a message over [`MAX_MESSAGE_BYTES`] is refused (`oversized`).
//! - **Budget**: a message may cost at most [`budget_for`] its size in decoded
//!   bytes ([`BUDGET_PER_INPUT_BYTE`] per byte of protobuf, between
//!   [`BUDGET_MIN_BYTES`] and [`BUDGET_MAX_BYTES`]); every record costs at least
//!   [`RECORD_COST`], skipped or not, and every row pays for its copy of its
//!   resource's attributes. The cost is counted while decoding and checked once
//!   per record, so a message over budget is refused (`over_budget`) before it
//!   is decoded in full. OTLP/JSON is charged the same for its rows (by the
//!   size of the same message in protobuf), and refused before it is parsed
//!   when it holds more objects than its budget could pay for.
//! - **Names**: names and attribute keys are cut to [`MAX_NAME_BYTES`],
//!   attribute values and log bodies to [`MAX_ATTRIBUTE_BYTES`] (`oversized`,
//!   the row kept).
//! - **Panics**: a decoder that panics on a message (a bug the message
//!   triggers) gives a [`DecodeError`] with [`Reason::DecoderPanic`], never an
//!   unwinding thread: the source goes on with its next message.

pub mod logs;
pub mod metrics;
pub mod shuffled;
pub mod spans;

mod json;
mod rows;
mod values;
mod wire;

use crate::{DecodeError, Decoded, Reason, Table};
use json::Request;

pub use values::{
    BUDGET_MAX_BYTES, BUDGET_MIN_BYTES, BUDGET_PER_INPUT_BYTE, MAX_ATTRIBUTE_BYTES,
    MAX_MESSAGE_BYTES, MAX_NAME_BYTES, RECORD_COST, budget_for, cut_text, resource_attributes,
    set_resource_attributes, time_ok, with_resource_attributes,
};

/// What one JSON object (`{`) is assumed to cost at least once parsed: about
/// the size of the largest OTLP struct it may become (a span).
const JSON_OBJECT_COST: usize = 256;

/// Runs one message's decode, turning a panic into a [`Reason::DecoderPanic`]
/// error: the one place every source's decoding goes through.
fn guarded(
    what: &str,
    bytes: &[u8],
    decode: impl FnOnce() -> Result<Decoded, DecodeError>,
) -> Result<Decoded, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into());
            Err(DecodeError::new(
                Reason::DecoderPanic,
                format!(
                    "the {what} decoder panicked on this message of {} bytes: {}",
                    bytes.len(),
                    cut_text(&message, 200)
                ),
            ))
        }
    }
}

/// In this crate's unit tests, a message starting with these bytes makes the
/// decoders panic, standing for a decoder bug some input triggers.
#[cfg(test)]
pub(crate) const TEST_PANIC: &[u8] = b"\x7fpanic!";

#[cfg(test)]
fn test_panic(bytes: &[u8]) {
    if bytes.starts_with(TEST_PANIC) {
        panic!("the test's poison message");
    }
}

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
    guarded("protobuf", bytes, || {
        #[cfg(test)]
        test_panic(bytes);
        match table {
            Table::Spans => spans::decode_wire(bytes),
            Table::Logs => logs::decode_wire(bytes),
            Table::Metrics => metrics::decode_wire(bytes),
        }
    })
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
    let objects = bytes.iter().filter(|&&b| b == b'{').count();
    if objects.saturating_mul(JSON_OBJECT_COST) > budget_for(bytes.len()) {
        return Err(DecodeError::new(
            Reason::OverBudget,
            format!(
                "a JSON message of {} bytes holds {objects} objects: more than its budget of {} bytes pays for",
                bytes.len(),
                budget_for(bytes.len())
            ),
        ));
    }
    guarded("JSON", bytes, || json_rows(hint, bytes))
}

fn json_rows(hint: Option<Table>, bytes: &[u8]) -> Result<Decoded, DecodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_is_a_decode_error() {
        let mut poison = TEST_PANIC.to_vec();
        poison.extend_from_slice(b"rest");
        for table in Table::ALL {
            let error = decode_proto(table, &poison).expect_err("panicked");
            assert_eq!(error.reason, Reason::DecoderPanic);
            assert!(
                error.detail.contains("the test's poison message"),
                "{error}"
            );
            let size = format!("{} bytes", poison.len());
            assert!(error.detail.contains(&size), "{error}");
        }
        // and the decoder goes on with the next message
        assert!(decode_any(Table::Spans, &[]).is_ok());
    }

    #[test]
    fn json_with_more_objects_than_its_budget_pays_for_is_refused_unparsed() {
        let mut json = b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[".to_vec();
        json.extend(b"{},".repeat(400_000));
        json.extend(b"{}]}]}]}");
        let error = decode_json(&json).expect_err("over budget");
        assert_eq!(error.reason, Reason::OverBudget, "{error}");
    }

    #[test]
    fn the_budget_has_a_floor_a_factor_and_a_cap() {
        assert_eq!(budget_for(10), BUDGET_MIN_BYTES);
        assert_eq!(budget_for(1 << 20), BUDGET_PER_INPUT_BYTE << 20);
        assert_eq!(budget_for(usize::MAX), BUDGET_MAX_BYTES);
    }
}
