//! The Arrow schema of the three tables every other crate reads: `spans`, `logs`
//! and `metrics`. Written once, here; documented in `docs/schema.md`, which links to
//! the telemetry contract (`../shared/telemetry-contract.md` in the team's layout).
//!
//! Conventions, the same for all three tables:
//! - `time` is the event time (span start, log record time, data point time), a
//!   `Timestamp(Nanosecond, "UTC")`. Windows and watermarks use this column.
//! - An attribute of the contract is *promoted* to a typed column whose name is the
//!   attribute's with `.` replaced by `_` (`client.address` -> `client_address`).
//!   A promoted attribute is not repeated in the map column.
//! - Every other attribute is kept, value as text, in the `attributes` map column
//!   (`attributes['k']`); resource attributes in `resource_attributes`.
//! - Ids are lowercase hex text; an absent id is null.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The type of a promoted attribute's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promoted {
    Text,
    Int,
    Float,
}

impl Promoted {
    pub fn data_type(self) -> DataType {
        match self {
            Promoted::Text => DataType::Utf8,
            Promoted::Int => DataType::Int64,
            Promoted::Float => DataType::Float64,
        }
    }
}

/// The column name of an attribute: dots become underscores.
pub fn column_name(attribute: &str) -> String {
    attribute.replace('.', "_")
}

/// Resource attributes promoted in every table.
pub const RESOURCE_PROMOTED: &[(&str, Promoted)] = &[
    ("service.name", Promoted::Text),
    ("service.version", Promoted::Text),
    ("service.instance.id", Promoted::Text),
    ("deployment.environment.name", Promoted::Text),
];

/// Span attributes promoted to columns of `spans`.
pub const SPAN_PROMOTED: &[(&str, Promoted)] = &[
    ("http.request.method", Promoted::Text),
    ("http.route", Promoted::Text),
    ("url.path", Promoted::Text),
    ("http.response.status_code", Promoted::Int),
    ("client.address", Promoted::Text),
    ("user_agent.original", Promoted::Text),
    ("user.id", Promoted::Text),
    ("session.id", Promoted::Text),
    ("db.system.name", Promoted::Text),
    ("db.operation.name", Promoted::Text),
    ("db.collection.name", Promoted::Text),
];

/// Log-record attributes promoted to columns of `logs` (the domain events' attributes).
pub const LOG_PROMOTED: &[(&str, Promoted)] = &[
    ("client.address", Promoted::Text),
    ("session.id", Promoted::Text),
    ("user.id", Promoted::Text),
    ("user.hash", Promoted::Text),
    ("user_agent.original", Promoted::Text),
    ("shop.auth.outcome", Promoted::Text),
    ("shop.auth.failure_reason", Promoted::Text),
    ("shop.product.id", Promoted::Text),
    ("shop.product.category", Promoted::Text),
    ("shop.product.price", Promoted::Float),
    ("shop.cart.quantity", Promoted::Int),
    ("shop.search.results", Promoted::Int),
    ("shop.cart.value", Promoted::Float),
    ("shop.order.currency", Promoted::Text),
    ("shop.order.id", Promoted::Text),
    ("shop.order.amount", Promoted::Float),
    ("shop.order.items", Promoted::Int),
    ("shop.payment.outcome", Promoted::Text),
    ("shop.payment.amount", Promoted::Float),
    ("shop.payment.currency", Promoted::Text),
    ("shop.payment.card.fingerprint", Promoted::Text),
    ("shop.payment.decline_code", Promoted::Text),
];

/// Data-point attributes promoted to columns of `metrics`.
pub const METRIC_PROMOTED: &[(&str, Promoted)] = &[
    ("http.request.method", Promoted::Text),
    ("http.route", Promoted::Text),
    ("http.response.status_code", Promoted::Int),
    ("shop.auth.outcome", Promoted::Text),
    ("shop.payment.outcome", Promoted::Text),
    ("shop.order.currency", Promoted::Text),
];

/// The event-time column's type.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The type of `attributes` and `resource_attributes`: a map of text to text.
pub fn attribute_map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn promoted_fields<'a>(list: &'a [(&'a str, Promoted)]) -> impl Iterator<Item = Field> + 'a {
    list.iter()
        .map(|(name, ty)| Field::new(column_name(name), ty.data_type(), true))
}

fn common_tail(signal_promoted: &[(&str, Promoted)]) -> Vec<Field> {
    let mut fields: Vec<Field> = promoted_fields(RESOURCE_PROMOTED).collect();
    fields.push(Field::new("scope_name", DataType::Utf8, true));
    fields.extend(promoted_fields(signal_promoted));
    fields.push(Field::new("attributes", attribute_map_type(), true));
    fields.push(Field::new(
        "resource_attributes",
        attribute_map_type(),
        true,
    ));
    fields
}

/// `spans`: one row per span.
pub static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", time_type(), false),
        Field::new("end_time", time_type(), false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        // SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER or UNSPECIFIED
        Field::new("kind", DataType::Utf8, false),
        // UNSET, OK or ERROR
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, true),
    ];
    fields.extend(common_tail(SPAN_PROMOTED));
    Arc::new(Schema::new(fields))
});

/// `logs`: one row per log record. Domain events are the rows whose `event_name`
/// is set (from the LogRecord `event_name` field, or else the `event.name` attribute).
pub static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", time_type(), false),
        Field::new("observed_time", time_type(), true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("severity_number", DataType::Int32, true),
        Field::new("severity_text", DataType::Utf8, true),
        // a string body as is; any other body as text like an attribute value (kvlist: JSON object)
        Field::new("body", DataType::Utf8, true),
        Field::new("event_name", DataType::Utf8, true),
    ];
    fields.extend(common_tail(LOG_PROMOTED));
    Arc::new(Schema::new(fields))
});

/// `metrics`: one row per data point, of any metric type.
pub static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("time", time_type(), false),
        Field::new("start_time", time_type(), true),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("metric_description", DataType::Utf8, true),
        Field::new("metric_unit", DataType::Utf8, true),
        // gauge, sum, histogram, exponential_histogram or summary
        Field::new("metric_type", DataType::Utf8, false),
        // delta or cumulative (sums and histograms), else null
        Field::new("temporality", DataType::Utf8, true),
        Field::new("is_monotonic", DataType::Boolean, true),
        // gauge and sum points (integers widened to float)
        Field::new("value", DataType::Float64, true),
        // histogram, exponential histogram and summary points
        Field::new("count", DataType::Int64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        // histogram: explicit bounds and the counts of the len(bounds)+1 buckets
        Field::new("bucket_bounds", list_of(DataType::Float64), true),
        Field::new("bucket_counts", list_of(DataType::Int64), true),
        // exponential histogram
        Field::new("exp_scale", DataType::Int32, true),
        Field::new("exp_zero_count", DataType::Int64, true),
        Field::new("exp_positive_offset", DataType::Int32, true),
        Field::new("exp_positive_counts", list_of(DataType::Int64), true),
        Field::new("exp_negative_offset", DataType::Int32, true),
        Field::new("exp_negative_counts", list_of(DataType::Int64), true),
        // summary: quantile q (0..=1) and its value, pairwise
        Field::new("quantiles", list_of(DataType::Float64), true),
        Field::new("quantile_values", list_of(DataType::Float64), true),
    ];
    fields.extend(common_tail(METRIC_PROMOTED));
    Arc::new(Schema::new(fields))
});

/// The three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Spans,
    Logs,
    Metrics,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Spans, Table::Logs, Table::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Logs => "logs",
            Table::Metrics => "metrics",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS.clone(),
            Table::Logs => LOGS.clone(),
            Table::Metrics => METRICS.clone(),
        }
    }
}
