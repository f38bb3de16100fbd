//! End-to-end tests of the local stack of real components (`compose/local/stack`).
//!
//! `telemetry_flows_through_the_stack` needs the stack up
//! (`compose/local/stack up`); when a component does not answer it fails
//! naming that component. It sends one span, one log record and one metric
//! to the Collector with the real OTLP exporter, each carrying a marker
//! unique to the run, reads them back from Kafka and decodes them as OTLP
//! protobuf, finds them in the Collector's capture file, checks that the
//! Collector redacted what looks like a secret,
//! that Prometheus scrapes the Collector, and that Alertmanager accepts and
//! lists an alert.
//!
//! `compose_and_local_stack_agree` needs nothing running: it checks that
//! docker-compose.yml mounts files that exist and that every config uses the
//! ports the stack script declares.
//!
//! Run: `cargo test -p e2e --test stack`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::compose::{compose_dir, port_in, port_of, read, read_yaml, stack_ports, yaml_str};
use opentelemetry::KeyValue;
use opentelemetry::logs::{
    AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};

/// The attribute that carries this run's marker on every signal.
const MARKER_KEY: &str = "otelguard.e2e.marker";
/// What the Collector's redaction processor must mask (telemetry-contract.md, "Never emitted").
const SECRET_EMAIL: &str = "alice@example.com";
const SECRET_PASSWORD: &str = "hunter2-correct-horse";

/// How many one-second waits for the next Kafka record before giving up.
/// The span waits for the tail sampler's decision (5 s by default) first.
const KAFKA_IDLE_POLLS: u32 = 60;
/// An upper bound on the records read, old runs' included.
const KAFKA_MAX_RECORDS: u32 = 200_000;
/// How many one-second polls Prometheus, the Collector's exporter and
/// Alertmanager get (Prometheus scrapes every 5 s).
const HTTP_POLLS: u32 = 40;

/// Fails, naming the component, unless something listens on its main port.
fn require_up(component: &str, port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| {
        anyhow!(
            "{component} is not answering on {addr} ({e}): start the stack with \
             `compose/local/stack up` (see `compose/local/stack status` and `compose/local/stack logs {component}`)"
        )
    })
}

// ---------------------------------------------------------------------------
// Sending through the real OTLP exporter

/// Sends one span, one log record and one metric point to the Collector over
/// OTLP/gRPC, and flushes them.
async fn send_telemetry(endpoint: &str, marker: &str) -> Result<()> {
    let resource = Resource::builder()
        .with_service_name("otelguard-e2e")
        .with_attribute(KeyValue::new(MARKER_KEY, marker.to_owned()))
        .build();

    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?,
        )
        .build();
    let tracer = tracer_provider.tracer("otelguard-e2e");
    let mut span = tracer
        .span_builder("GET /e2e/probe")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new(MARKER_KEY, marker.to_owned()),
            KeyValue::new("user.email", SECRET_EMAIL),
            KeyValue::new("password", SECRET_PASSWORD),
        ])
        .start(&tracer);
    // ERROR, so that the tail sampler's error policy keeps the trace.
    span.set_status(Status::error("e2e probe"));
    span.end();

    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?,
        )
        .build();
    let logger = logger_provider.logger("otelguard-e2e");
    let mut record = logger.create_log_record();
    record.set_event_name("otelguard.e2e.probe");
    record.set_severity_number(Severity::Info);
    record.set_body(LogValue::from("e2e probe"));
    record.add_attribute(MARKER_KEY, marker.to_owned());
    record.add_attribute("user.email", SECRET_EMAIL);
    logger.emit(record);

    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?,
        )
        .build();
    let counter = meter_provider
        .meter("otelguard-e2e")
        .u64_counter("otelguard.e2e.probes")
        .build();
    counter.add(1, &[KeyValue::new(MARKER_KEY, marker.to_owned())]);

    // Flushing blocks on the SDK's export threads: keep it off the runtime's workers.
    tokio::task::spawn_blocking(move || -> Result<()> {
        tracer_provider
            .force_flush()
            .context("exporting the span to the Collector")?;
        logger_provider
            .force_flush()
            .context("exporting the log record to the Collector")?;
        meter_provider
            .force_flush()
            .context("exporting the metric to the Collector")?;
        tracer_provider
            .shutdown()
            .context("shutting the tracer provider down")?;
        logger_provider
            .shutdown()
            .context("shutting the logger provider down")?;
        meter_provider
            .shutdown()
            .context("shutting the meter provider down")?;
        Ok(())
    })
    .await?
}

// ---------------------------------------------------------------------------
// Reading back from Kafka

fn string_attr<'a>(attributes: &'a [ProtoKeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The attributes of the record carrying `marker` in one Kafka message, if any.
fn find_marked(topic: &str, payload: &[u8], marker: &str) -> Result<Option<Vec<ProtoKeyValue>>> {
    let marked = |attrs: &[ProtoKeyValue]| string_attr(attrs, MARKER_KEY) == Some(marker);
    let found = match topic {
        "otlp_spans" => ExportTraceServiceRequest::decode(payload)?
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|span| span.attributes)
            .find(|attrs| marked(attrs)),
        "otlp_logs" => ExportLogsServiceRequest::decode(payload)?
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .map(|record| record.attributes)
            .find(|attrs| marked(attrs)),
        "otlp_metrics" => ExportMetricsServiceRequest::decode(payload)?
            .resource_metrics
            .into_iter()
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics)
            .filter(|m| m.name == "otelguard.e2e.probes")
            .filter_map(|m| match m.data? {
                metric::Data::Sum(sum) => Some(sum.data_points),
                _ => None,
            })
            .flatten()
            .map(|point| point.attributes)
            .find(|attrs| marked(attrs)),
        other => bail!("unexpected topic {other}"),
    };
    Ok(found)
}

/// Reads the three OTLP topics from the beginning with a fresh consumer group
/// until each yielded the record carrying `marker`; returns its attributes by topic.
async fn read_back_from_kafka(
    brokers: &str,
    marker: &str,
) -> Result<BTreeMap<String, Vec<ProtoKeyValue>>> {
    const TOPICS: [&str; 3] = ["otlp_spans", "otlp_logs", "otlp_metrics"];
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("otelguard-e2e-{marker}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&TOPICS)
        .context("subscribing to the OTLP topics")?;

    let mut found = BTreeMap::new();
    let (mut idle, mut records, mut undecodable) = (0, 0, 0);
    while found.len() < TOPICS.len() {
        ensure!(
            idle < KAFKA_IDLE_POLLS && records < KAFKA_MAX_RECORDS,
            "kafka: the marked record never arrived on {:?} at {brokers} (read {records} records, \
             {undecodable} of them not OTLP protobuf, waited {idle} times for more); found it on {:?}. \
             Is the Collector exporting? (`compose/local/stack logs otelcol`)",
            TOPICS
                .iter()
                .filter(|t| !found.contains_key(**t))
                .collect::<Vec<_>>(),
            found.keys().collect::<Vec<_>>(),
        );
        let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => {
                idle += 1;
                continue;
            }
            Ok(message) => message.with_context(|| format!("kafka: reading from {brokers}"))?,
        };
        records += 1;
        let topic = message.topic().to_owned();
        let payload = message.payload().unwrap_or_default();
        // Other tests put deliberately broken records on these topics (dead
        // letters); only this run's marked record matters here.
        match find_marked(&topic, payload, marker) {
            Ok(Some(attrs)) => {
                found.insert(topic, attrs);
            }
            Ok(None) => {}
            Err(_) => undecodable += 1,
        }
    }
    Ok(found)
}

// ---------------------------------------------------------------------------
// The capture file

/// Polls the end of the capture file until a line carries `marker` (in every signal).
async fn wait_captured(path: &Path, marker: &str) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 << 20;
    let mut last_seen = BTreeSet::new();
    for _ in 0..HTTP_POLLS {
        if let Ok(mut file) = std::fs::File::open(path) {
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail)?;
            last_seen = String::from_utf8_lossy(&tail)
                .lines()
                .filter(|line| line.contains(marker))
                .filter_map(|line| {
                    ["resourceSpans", "resourceLogs", "resourceMetrics"]
                        .into_iter()
                        .find(|k| line.contains(k))
                })
                .collect();
            if last_seen.len() == 3 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "otelcol: the file exporter's capture {} never held the marked span, log and metric (found {last_seen:?})",
        path.display()
    )
}

// ---------------------------------------------------------------------------
// HTTP APIs

async fn get_json(client: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> Result<Value> {
    let response = client
        .get(url)
        .query(query)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    ensure!(status.is_success(), "GET {url}: HTTP {status}");
    response
        .json()
        .await
        .with_context(|| format!("GET {url}: the body is not JSON"))
}

/// Polls Prometheus until `up{job="JOB"}` is 1.
async fn wait_scraped(client: &reqwest::Client, prometheus: &str, job: &str) -> Result<()> {
    let url = format!("{prometheus}/api/v1/query");
    let query = format!("up{{job=\"{job}\"}}");
    let mut last = Value::Null;
    for _ in 0..HTTP_POLLS {
        last = get_json(client, &url, &[("query", &query)]).await?;
        if last["data"]["result"][0]["value"][1] == "1" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("prometheus: {query} never became 1 (last answer: {last}); see {prometheus}/targets")
}

/// Polls the Collector's Prometheus exporter until the marked metric shows.
async fn wait_exported_to_prometheus(
    client: &reqwest::Client,
    url: &str,
    marker: &str,
) -> Result<()> {
    for _ in 0..HTTP_POLLS {
        let body = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .text()
            .await?;
        if body
            .lines()
            .any(|l| l.starts_with("otelguard_e2e_probes") && l.contains(marker))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "otelcol: the prometheus exporter at {url} never showed otelguard_e2e_probes with the marker {marker}"
    )
}

/// Posts an alert to Alertmanager's v2 API and finds it in the list.
async fn alert_round_trip(
    client: &reqwest::Client,
    alertmanager: &str,
    marker: &str,
) -> Result<()> {
    let url = format!("{alertmanager}/api/v2/alerts");
    let alert = json!([{
        "labels": {"alertname": "OtelguardE2E", "severity": "info", "marker": marker},
        "annotations": {"summary": "end-to-end test alert"},
        "generatorURL": "http://127.0.0.1/otelguard-e2e",
    }]);
    let response = client
        .post(&url)
        .json(&alert)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    ensure!(
        status.is_success(),
        "alertmanager: POST {url}: HTTP {status}: {}",
        response.text().await?
    );

    let filter = format!("marker=\"{marker}\"");
    for _ in 0..HTTP_POLLS {
        let alerts = get_json(client, &url, &[("filter", &filter)]).await?;
        let listed = alerts
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["marker"] == marker);
        if listed {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("alertmanager: the posted alert with marker {marker} was never listed by GET {url}")
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_flows_through_the_stack() -> Result<()> {
    let ports = stack_ports()?;
    for component in ["otelcol", "kafka", "prometheus", "alertmanager"] {
        require_up(component, port_of(&ports, component)?)?;
    }
    let otlp = format!("http://127.0.0.1:{}", port_of(&ports, "otelcol")?);
    let brokers = format!("127.0.0.1:{}", port_of(&ports, "kafka")?);
    let prometheus = format!("http://127.0.0.1:{}", port_of(&ports, "prometheus")?);
    let alertmanager = format!("http://127.0.0.1:{}", port_of(&ports, "alertmanager")?);
    let marker = e2e::run_marker("run");

    send_telemetry(&otlp, &marker)
        .await
        .context("otelcol: sending OTLP to the Collector")?;

    let found = read_back_from_kafka(&brokers, &marker).await?;
    for (topic, attrs) in &found {
        for key in ["user.email", "password"] {
            if let Some(value) = string_attr(attrs, key) {
                ensure!(
                    !value.contains(SECRET_EMAIL) && !value.contains(SECRET_PASSWORD),
                    "otelcol: the redaction processor let {key}={value:?} through to {topic}"
                );
            }
        }
    }
    ensure!(
        string_attr(&found["otlp_spans"], "user.email").is_some(),
        "otelcol: the span's user.email attribute was dropped, not masked (allow_all_keys should keep it)"
    );

    wait_captured(&e2e::collector_capture_file(), &marker).await?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let collector_metrics = format!(
        "http://127.0.0.1:{}/metrics",
        ports["otelcol"].get(3).copied().unwrap_or(8889)
    );
    wait_exported_to_prometheus(&client, &collector_metrics, &marker).await?;
    for job in ["otelcol", "otelcol-internal"] {
        wait_scraped(&client, &prometheus, job).await?;
    }
    alert_round_trip(&client, &alertmanager, &marker).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Compose and the local stack: the same files, the same ports.

#[test]
fn compose_and_local_stack_agree() -> Result<()> {
    let ports = stack_ports()?;
    let dir = compose_dir();
    let components: BTreeSet<&str> = [
        "postgres",
        "redis",
        "kafka",
        "otelcol",
        "prometheus",
        "alertmanager",
    ]
    .into_iter()
    .collect();
    ensure!(
        ports.keys().map(String::as_str).collect::<BTreeSet<_>>() == components,
        "compose/local/stack declares ports for {:?}",
        ports.keys()
    );

    // Every repository path docker-compose.yml mounts exists, and the
    // configs both use are among them.
    let compose_path = dir.join("docker-compose.yml");
    let compose = read_yaml(&compose_path)?;
    let services = compose["services"]
        .as_mapping()
        .ok_or_else(|| anyhow!("docker-compose.yml: no services"))?;
    let mut mounted = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        ensure!(
            service["network_mode"] == "host",
            "docker-compose.yml: {name} is not on network_mode: host"
        );
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let volume = volume
                .as_str()
                .ok_or_else(|| anyhow!("docker-compose.yml: {name}: a volume is not a string"))?;
            let source = volume.split(':').next().unwrap_or_default();
            if !source.starts_with('.') {
                continue; // a named volume
            }
            mounted.insert(source.to_owned());
            ensure!(
                dir.join(source).exists(),
                "docker-compose.yml: {name} mounts {source}, which does not exist"
            );
        }
    }
    for shared in [
        "./otelcol/config.yaml",
        "./prometheus/prometheus.yml",
        "./alertmanager/alertmanager.yml",
        "./kafka/server.properties",
    ] {
        ensure!(
            mounted.contains(shared),
            "docker-compose.yml does not mount {shared}, which the local stack reads"
        );
    }
    for dockerfile in ["engine.Dockerfile", "shop.Dockerfile"] {
        ensure!(
            dir.join(dockerfile).exists(),
            "compose/{dockerfile} is missing"
        );
    }

    // The ports compose passes on its command lines and environment are the stack's.
    for (component, service) in [
        ("postgres", "postgres"),
        ("redis", "redis"),
        ("prometheus", "prometheus"),
        ("alertmanager", "alertmanager"),
    ] {
        let text = serde_yaml::to_string(&compose["services"][service])?;
        let port = port_of(&ports, component)?;
        ensure!(
            text.contains(&port.to_string()),
            "docker-compose.yml: {service} does not use port {port}"
        );
    }
    let kafka_port = port_of(&ports, "kafka")?;
    let brokers = yaml_str(
        &compose,
        &[
            "services",
            "otelcol",
            "environment",
            "OTELGUARD_KAFKA_BROKERS",
        ],
    )?;
    ensure!(
        port_in(brokers)? == kafka_port,
        "docker-compose.yml: otelcol's brokers {brokers} are not on {kafka_port}"
    );

    // Kafka: the listeners of server.properties.
    let properties = read(&dir.join("kafka/server.properties"))?;
    let listeners = properties
        .lines()
        .find_map(|l| l.strip_prefix("listeners="))
        .ok_or_else(|| anyhow!("kafka/server.properties: no listeners"))?;
    let listener_ports = listeners
        .split(',')
        .map(port_in)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        listener_ports == ports["kafka"],
        "kafka/server.properties listens on {listener_ports:?}, the stack on {:?}",
        ports["kafka"]
    );

    // The Collector: every endpoint in config.yaml is one the stack declares, and all of them are used.
    let collector = read_yaml(&dir.join("otelcol/config.yaml"))?;
    let telemetry = &collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
        ["prometheus"];
    let collector_ports = [
        port_in(yaml_str(
            &collector,
            &["receivers", "otlp", "protocols", "grpc", "endpoint"],
        )?)?,
        port_in(yaml_str(
            &collector,
            &["receivers", "otlp", "protocols", "http", "endpoint"],
        )?)?,
        u16::try_from(telemetry["port"].as_u64().unwrap_or_default())?,
        port_in(yaml_str(
            &collector,
            &["exporters", "prometheus", "endpoint"],
        )?)?,
        port_in(yaml_str(
            &collector,
            &["extensions", "health_check", "endpoint"],
        )?)?,
    ];
    ensure!(
        collector_ports.as_slice() == ports["otelcol"],
        "otelcol/config.yaml uses ports {collector_ports:?}, the stack declares {:?}",
        ports["otelcol"]
    );
    let collector_brokers = collector["exporters"]["kafka"]["brokers"][0]
        .as_str()
        .unwrap_or_default();
    ensure!(
        port_in(collector_brokers)? == kafka_port,
        "otelcol/config.yaml: brokers {collector_brokers} are not on {kafka_port}"
    );

    // Prometheus scrapes the Collector's two metric ports and alerts to the stack's Alertmanager.
    let prometheus = read_yaml(&dir.join("prometheus/prometheus.yml"))?;
    let targets = |section: &str| -> BTreeSet<u16> {
        prometheus[section]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|job| {
                job["static_configs"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|sc| sc["targets"].as_sequence().cloned().unwrap_or_default())
            .filter_map(|t| port_in(t.as_str()?).ok())
            .collect()
    };
    let scraped = targets("scrape_configs");
    for port in [
        collector_ports[2],
        collector_ports[3],
        port_of(&ports, "prometheus")?,
    ] {
        ensure!(
            scraped.contains(&port),
            "prometheus.yml does not scrape 127.0.0.1:{port} (scrapes {scraped:?})"
        );
    }
    let alerting = prometheus["alerting"].clone();
    let alertmanagers: BTreeSet<u16> = alerting["alertmanagers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|am| {
            am["static_configs"][0]["targets"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| port_in(t.as_str()?).ok())
        .collect();
    let alertmanager_port = port_of(&ports, "alertmanager")?;
    ensure!(
        alertmanagers.contains(&alertmanager_port),
        "prometheus.yml alerts to {alertmanagers:?}, not to the stack's Alertmanager on {alertmanager_port}"
    );
    Ok(())
}
