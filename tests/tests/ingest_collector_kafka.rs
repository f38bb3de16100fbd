//! What the real Collector's Kafka exporter writes, read back through ingest's
//! own Kafka source and decoders: the path the engine takes.
//!
//! Needs the local stack (`compose/local/stack up`): the Collector's OTLP/HTTP
//! receiver on 127.0.0.1:4318 and Kafka on 127.0.0.1:19092. The test posts one
//! `Export{Trace,Logs,Metrics}ServiceRequest` of its own (every value chosen,
//! so every column can be checked), the Collector batches, redacts and writes
//! them to `otlp_spans` / `otlp_logs` / `otlp_metrics`, and a
//! `ingest::source::kafka::KafkaSource` in a consumer group of this run (committed at
//! the topics' ends before sending, so it reads only what came after) decodes
//! them. Other tests write to the same topics at the same time: the rows of
//! this run are the ones whose resource carries its marker.
//!
//! No value looks like an e-mail address or a card number, which the
//! Collector's redaction processor would mask.
//!
//! Run: `cargo test -p e2e --test ingest_collector_kafka`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use e2e::otlp::KAFKA;
use ingest::source::kafka::{DEFAULT_TOPICS, KafkaConfig, KafkaSource};
use ingest::write::dead_letter::Rejections;
use ingest::{RejectCounts, Table};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// The Collector's OTLP/HTTP receiver.
const OTLP_HTTP: &str = "http://127.0.0.1:4318";
/// The resource attribute that carries this run's marker.
const MARKER_KEY: &str = "otelguard.e2e.marker";
/// How many one-second waits for the next Kafka message before giving up.
const IDLE_POLLS: u32 = 60;
/// An upper bound on the messages read (other tests write to the same topics).
const MAX_MESSAGES: u32 = 100_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn resource(marker: &str) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", "e2e-collector-kafka"),
            s("service.version", "9.8.7"),
            s("service.instance.id", "ck-instance-a"),
            s("deployment.environment.name", "e2e"),
            s(MARKER_KEY, marker),
            s("host.arch", "amd64"),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "otelguard.e2e.collector_kafka".into(),
        version: "1.2.3".into(),
        attributes: vec![s("e2e.scope.flavour", "mint")],
        ..Default::default()
    }
}

/// The times of the run: about now (a live engine on the same topics sees them
/// as current, not late), each a whole millisecond plus 137 µs, so that the
/// time columns always display six decimals.
struct Times {
    start: u64,
}

impl Times {
    fn now() -> Times {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Times {
            start: nanos / 1_000_000 * 1_000_000 + 137_000,
        }
    }

    fn at(&self, offset_ms: u64) -> u64 {
        self.start + offset_ms * 1_000_000
    }
}

const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const PARENT_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];

fn traces(marker: &str, t: &Times) -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        parent_span_id: PARENT_ID.to_vec(),
        name: "POST /e2e/kafka/{id}".into(),
        kind: 2,
        start_time_unix_nano: t.at(0),
        end_time_unix_nano: t.at(0) + 12_500_000,
        attributes: vec![
            s("http.request.method", "POST"),
            s("http.route", "/e2e/kafka/{id}"),
            s("url.path", "/e2e/kafka/17"),
            i("http.response.status_code", 503),
            s("client.address", "198.51.100.23"),
            s("user.id", "user-ck-one"),
            s("e2e.colour", "teal"),
            i("e2e.count", 7),
            kv("e2e.ratio", any_value::Value::DoubleValue(0.25)),
            kv("e2e.flag", any_value::Value::BoolValue(true)),
        ],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "upstream gave up".into(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(marker)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(marker: &str, t: &Times) -> ExportLogsServiceRequest {
    let event = LogRecord {
        time_unix_nano: t.at(1),
        observed_time_unix_nano: t.at(2),
        severity_number: 13,
        severity_text: "WARN".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("login refused".into())),
        }),
        event_name: "shop.auth.login".into(),
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        attributes: vec![
            s("client.address", "198.51.100.23"),
            s("shop.auth.outcome", "failure"),
            s("shop.auth.failure_reason", "bad_password"),
            i("shop.cart.quantity", 3),
            kv("shop.product.price", any_value::Value::DoubleValue(12.5)),
            s("e2e.colour", "amber"),
        ],
        ..Default::default()
    };
    // The older way to name an event: the `event.name` attribute.
    let legacy = LogRecord {
        time_unix_nano: t.at(3),
        severity_number: 9,
        body: Some(AnyValue {
            value: Some(any_value::Value::IntValue(42)),
        }),
        attributes: vec![s("event.name", "shop.e2e.legacy"), s("e2e.colour", "plum")],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(marker)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: vec![event, legacy],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name}, sent by the e2e test"),
        unit: "1".into(),
        data: Some(data),
        ..Default::default()
    }
}

fn metrics(marker: &str, t: &Times) -> ExportMetricsServiceRequest {
    let (start, time) = (t.at(0), t.at(10));
    let number = |value: number_data_point::Value, attrs: Vec<KeyValue>| NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(value),
        attributes: attrs,
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let delta = AggregationTemporality::Delta as i32;
    let metrics = vec![
        metric(
            "e2e.ck.gauge",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(
                    number_data_point::Value::AsDouble(21.5),
                    vec![s("http.route", "/e2e/gauge")],
                )],
            }),
        ),
        metric(
            "e2e.ck.sum",
            metric::Data::Sum(Sum {
                data_points: vec![number(
                    number_data_point::Value::AsInt(42),
                    vec![s("shop.auth.outcome", "success"), s("e2e.colour", "teal")],
                )],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "e2e.ck.histogram",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count: 6,
                    sum: Some(3.5),
                    bucket_counts: vec![2, 3, 1],
                    explicit_bounds: vec![0.5, 1.0],
                    min: Some(0.125),
                    max: Some(2.0),
                    attributes: vec![i("http.response.status_code", 200)],
                    ..Default::default()
                }],
                aggregation_temporality: delta,
            }),
        ),
        metric(
            "e2e.ck.exponential",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count: 8,
                    sum: Some(1.5),
                    scale: 2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: 3,
                        bucket_counts: vec![1, 2, 3],
                    }),
                    negative: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![1],
                    }),
                    min: Some(-0.5),
                    max: Some(4.0),
                    ..Default::default()
                }],
                aggregation_temporality: delta,
            }),
        ),
        metric(
            "e2e.ck.summary",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count: 10,
                    sum: 55.5,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 5.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 9.5,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(marker)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Commits, for consumer group `group`, the current end of every partition of
/// the Collector's topics: a source in that group reads only what comes after.
fn commit_topic_ends(group: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
    let mut ends = TopicPartitionList::new();
    for (topic, _) in DEFAULT_TOPICS {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| {
                format!("kafka at {KAFKA}: metadata of {topic}; is the stack up? `compose/local/stack up`")
            })?;
        for t in metadata.topics() {
            ensure!(
                !t.partitions().is_empty(),
                "kafka: topic {topic} has no partitions (has the Collector written to it yet?)"
            );
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .with_context(|| format!("kafka: end of {topic}/{}", p.id()))?;
                ends.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
            }
        }
    }
    consumer
        .commit(&ends, CommitMode::Sync)
        .with_context(|| format!("kafka: committing the topics' ends for group {group}"))?;
    Ok(())
}

async fn post(client: &reqwest::Client, path: &str, body: Vec<u8>) -> Result<()> {
    let url = format!("{OTLP_HTTP}{path}");
    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .with_context(|| {
            format!("POST {url}: is the Collector up? `compose/local/stack up otelcol`")
        })?;
    let status = response.status();
    ensure!(status.is_success(), "POST {url}: HTTP {status}");
    Ok(())
}

/// One row as text, column by column; a null column is left out.
type Row = BTreeMap<String, String>;

fn rows_of(batch: &RecordBatch) -> Result<Vec<Row>> {
    let options = FormatOptions::default();
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| {
            Ok((
                f.name().clone(),
                a,
                ArrayFormatter::try_new(a.as_ref(), &options)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|i| {
            columns
                .iter()
                .filter(|(_, a, _)| a.is_valid(i))
                .map(|(name, _, f)| (name.clone(), f.value(i).to_string()))
                .collect()
        })
        .collect())
}

/// The rows of this run found so far, by table.
#[derive(Default)]
struct Found {
    rows: BTreeMap<&'static str, Vec<Row>>,
}

impl Found {
    fn count(&self, table: Table) -> usize {
        self.rows.get(table.name()).map_or(0, Vec::len)
    }
}

/// Reads the source until it has given `wanted` rows of each table carrying `marker`.
async fn read_until(
    source: &KafkaSource,
    marker: &str,
    wanted: [(Table, usize); 3],
) -> Result<Found> {
    let mut found = Found::default();
    let (mut idle, mut messages) = (0, 0);
    let marked = format!("{MARKER_KEY}: {marker}");
    while wanted.iter().any(|(t, n)| found.count(*t) < *n) {
        ensure!(
            idle < IDLE_POLLS && messages < MAX_MESSAGES,
            "the Collector's messages for this run never all arrived through the Kafka source \
             (read {messages} messages, waited {idle} times for more; found {:?} of {wanted:?}). \
             Is the Collector exporting to Kafka? (`compose/local/stack logs otelcol`)",
            Table::ALL.map(|t| (t, found.count(t)))
        );
        let item = match tokio::time::timeout(Duration::from_secs(1), source.recv()).await {
            Err(_) => {
                idle += 1;
                continue;
            }
            Ok(item) => item?,
        };
        messages += 1;
        // Other tests put broken messages on these topics on purpose.
        let Ok(decoded) = &item.decoded else { continue };
        ensure!(
            decoded.table == item.table,
            "{}: rows of {:?}",
            item.origin(),
            decoded.table
        );
        for row in rows_of(&decoded.batch)? {
            if row
                .get("resource_attributes")
                .is_some_and(|r| r.contains(&marked))
            {
                found
                    .rows
                    .entry(decoded.table.name())
                    .or_default()
                    .push(row);
            }
        }
    }
    Ok(found)
}

fn row(pairs: &[(&str, String)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The columns every table shares, for this run's resource and scope.
fn context_columns(marker: &str) -> Vec<(&'static str, String)> {
    vec![
        ("service_name", "e2e-collector-kafka".into()),
        ("service_version", "9.8.7".into()),
        ("service_instance_id", "ck-instance-a".into()),
        ("deployment_environment_name", "e2e".into()),
        ("scope_name", "otelguard.e2e.collector_kafka".into()),
        (
            "resource_attributes",
            format!(
                "{{{MARKER_KEY}: {marker}, host.arch: amd64, otel.scope.version: 1.2.3, e2e.scope.flavour: mint}}"
            ),
        ),
    ]
}

/// An RFC 3339 text of Unix nanoseconds, as the time columns display.
fn time_text(nanos: u64) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let sub = (nanos % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

fn with_context(marker: &str, pairs: Vec<(&'static str, String)>) -> Row {
    let mut all = context_columns(marker);
    all.extend(pairs);
    row(&all)
}

#[tokio::test]
async fn collector_kafka_messages_decode_through_ingest() -> Result<()> {
    let marker = e2e::run_marker("ck");
    let group = format!("e2e-collector-kafka-{marker}");
    commit_topic_ends(&group)?;

    let t = Times::now();
    let client = reqwest::Client::new();
    post(&client, "/v1/traces", traces(&marker, &t).encode_to_vec()).await?;
    post(&client, "/v1/logs", logs(&marker, &t).encode_to_vec()).await?;
    post(&client, "/v1/metrics", metrics(&marker, &t).encode_to_vec()).await?;

    let rejections = Arc::new(Rejections::new(Arc::new(RejectCounts::default())));
    let source = KafkaSource::connect(KafkaConfig::new(KAFKA, group.clone()), rejections)
        .await
        .with_context(|| format!("connecting the Kafka source (group {group})"))?;
    let found = read_until(
        &source,
        &marker,
        [(Table::Spans, 1), (Table::Logs, 2), (Table::Metrics, 5)],
    )
    .await?;

    // Spans: every column.
    let spans = &found.rows["spans"];
    let expected_span = with_context(
        &marker,
        vec![
            ("time", time_text(t.at(0))),
            ("end_time", time_text(t.at(0) + 12_500_000)),
            ("duration_ms", "12.5".into()),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ("span_id", "00f067aa0ba902b7".into()),
            ("parent_span_id", "53995c3f42cd8ad8".into()),
            ("name", "POST /e2e/kafka/{id}".into()),
            ("kind", "SERVER".into()),
            ("status_code", "ERROR".into()),
            ("status_message", "upstream gave up".into()),
            ("http_request_method", "POST".into()),
            ("http_route", "/e2e/kafka/{id}".into()),
            ("url_path", "/e2e/kafka/17".into()),
            ("http_response_status_code", "503".into()),
            ("client_address", "198.51.100.23".into()),
            ("user_id", "user-ck-one".into()),
            (
                "attributes",
                "{e2e.colour: teal, e2e.count: 7, e2e.ratio: 0.25, e2e.flag: true}".into(),
            ),
        ],
    );
    assert_eq!(spans, &vec![expected_span]);

    // Logs: the event named by the field, the one named by the attribute.
    let mut logs = found.rows["logs"].clone();
    logs.sort_by(|a, b| a["time"].cmp(&b["time"]));
    let expected_logs = vec![
        with_context(
            &marker,
            vec![
                ("time", time_text(t.at(1))),
                ("observed_time", time_text(t.at(2))),
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
                ("span_id", "00f067aa0ba902b7".into()),
                ("severity_number", "13".into()),
                ("severity_text", "WARN".into()),
                ("body", "login refused".into()),
                ("event_name", "shop.auth.login".into()),
                ("client_address", "198.51.100.23".into()),
                ("shop_auth_outcome", "failure".into()),
                ("shop_auth_failure_reason", "bad_password".into()),
                ("shop_cart_quantity", "3".into()),
                ("shop_product_price", "12.5".into()),
                ("attributes", "{e2e.colour: amber}".into()),
            ],
        ),
        with_context(
            &marker,
            vec![
                ("time", time_text(t.at(3))),
                ("severity_number", "9".into()),
                ("body", "42".into()),
                ("event_name", "shop.e2e.legacy".into()),
                ("attributes", "{e2e.colour: plum}".into()),
            ],
        ),
    ];
    assert_eq!(logs, expected_logs);

    // Metrics: one row a point, of each type.
    let mut points = found.rows["metrics"].clone();
    points.sort_by(|a, b| a["metric_name"].cmp(&b["metric_name"]));
    let point = |name: &str, ty: &str, pairs: Vec<(&'static str, String)>| {
        let mut all = vec![
            ("time", time_text(t.at(10))),
            ("start_time", time_text(t.at(0))),
            ("metric_name", name.to_owned()),
            (
                "metric_description",
                format!("{name}, sent by the e2e test"),
            ),
            ("metric_unit", "1".into()),
            ("metric_type", ty.to_owned()),
            ("attributes", "{}".into()),
        ];
        all.extend(pairs);
        with_context(&marker, all)
    };
    let expected_points = vec![
        point(
            "e2e.ck.exponential",
            "exponential_histogram",
            vec![
                ("temporality", "delta".into()),
                ("count", "8".into()),
                ("sum", "1.5".into()),
                ("min", "-0.5".into()),
                ("max", "4.0".into()),
                ("exp_scale", "2".into()),
                ("exp_zero_count", "1".into()),
                ("exp_positive_offset", "3".into()),
                ("exp_positive_counts", "[1, 2, 3]".into()),
                ("exp_negative_offset", "-1".into()),
                ("exp_negative_counts", "[1]".into()),
            ],
        ),
        point(
            "e2e.ck.gauge",
            "gauge",
            vec![
                ("value", "21.5".into()),
                ("http_route", "/e2e/gauge".into()),
            ],
        ),
        point(
            "e2e.ck.histogram",
            "histogram",
            vec![
                ("temporality", "delta".into()),
                ("count", "6".into()),
                ("sum", "3.5".into()),
                ("min", "0.125".into()),
                ("max", "2.0".into()),
                ("bucket_bounds", "[0.5, 1.0]".into()),
                ("bucket_counts", "[2, 3, 1]".into()),
                ("http_response_status_code", "200".into()),
            ],
        ),
        point(
            "e2e.ck.sum",
            "sum",
            vec![
                ("temporality", "cumulative".into()),
                ("is_monotonic", "true".into()),
                ("value", "42.0".into()),
                ("shop_auth_outcome", "success".into()),
                ("attributes", "{e2e.colour: teal}".into()),
            ],
        ),
        point(
            "e2e.ck.summary",
            "summary",
            vec![
                ("count", "10".into()),
                ("sum", "55.5".into()),
                ("quantiles", "[0.5, 0.99]".into()),
                ("quantile_values", "[5.0, 9.5]".into()),
            ],
        ),
    ];
    if points.len() != expected_points.len() {
        bail!("metric rows of this run: {points:#?}");
    }
    for (got, want) in points.iter().zip(&expected_points) {
        assert_eq!(got, want, "metric {}", want["metric_name"]);
    }
    Ok(())
}
