//! The Collector between the senders and Kafka (compose/otelcol/config.yaml):
//! its size limits agree with Kafka's, and what it acknowledged reaches Kafka
//! even when it is killed or Kafka is away.
//!
//! - `size_limits_agree` needs nothing running: it reads config.yaml and
//!   kafka/server.properties and checks the chain of limits explained at the
//!   top of config.yaml (receiver R, exporter batch B, producer P, broker M),
//!   that no pipeline ending in Kafka has a batch processor, that the Kafka
//!   exporter's queue is on a file_storage extension, and that the capture
//!   rotates or appends. `compose_keeps_the_queue_on_a_volume` (nothing
//!   running either) checks that compose keeps that queue on a named volume.
//! - `a_request_at_the_size_limit_arrives_in_kafka` sends one OTLP/HTTP
//!   request just under R (many spans) and one holding a single span just
//!   under R, and finds every span in Kafka; a request just over R is refused.
//! - `acknowledged_spans_survive_a_collector_kill` sends spans without pause,
//!   kills the Collector with SIGKILL (`compose/local/stack kill otelcol`),
//!   starts it again, and finds in Kafka every span whose request the
//!   Collector answered with success, and in the capture every span it held
//!   before the kill.
//! - `accepted_spans_survive_a_kafka_outage` stops Kafka, sends spans, kills
//!   and restarts the Collector while Kafka is away, starts Kafka, and finds
//!   every acknowledged span in Kafka.
//!
//! The last three need the local stack (`compose/local/stack up`) and run one
//! at a time; the last two stop components of the shared stack briefly and
//! start them again when they end, passed or failed. Spans carry a marker
//! unique to the run; they are counted by span id, never timed.
//!
//! Run: `cargo test -p e2e --test collector`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::compose::{compose_dir, read, read_yaml};
use e2e::otlp::{attr_str, consumer_since, hex, string_kv};
use e2e::shop::require_up;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message as _;
use rdkafka::Message as _;
use serde_yaml::Value;

const MIB: u64 = 1 << 20;
/// The attribute that carries the run's marker on every span.
const MARKER_KEY: &str = "otelguard.e2e.marker";
const OTLP_HTTP: &str = "http://127.0.0.1:4318/v1/traces";
const OTLP_GRPC_PORT: u16 = 4317;
const KAFKA_PORT: u16 = 19092;

/// The disruptive tests and the size test share the stack: one at a time.
static STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// The limits, as the config files state them

/// The size limits along the way, in bytes (config.yaml explains them).
#[derive(Debug)]
struct Limits {
    /// R: the largest request the OTLP receiver takes (gRPC and HTTP alike).
    request: u64,
    /// B: the largest batch the Kafka exporter's queue makes.
    batch: u64,
    /// P: the largest record the Kafka producer sends.
    record: u64,
    /// M: the largest record batch the broker takes.
    broker: u64,
}

fn collector_config() -> Result<Value> {
    read_yaml(&compose_dir().join("otelcol/config.yaml"))
}

fn yaml_u64(value: &Value, path: &[&str]) -> Result<u64> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("otelcol/config.yaml: no number at {}", path.join(".")))
}

fn limits() -> Result<Limits> {
    let config = collector_config()?;
    let protocols = &config["receivers"]["otlp"]["protocols"];
    let grpc = yaml_u64(protocols, &["grpc", "max_recv_msg_size_mib"])? * MIB;
    let http = yaml_u64(protocols, &["http", "max_request_body_size"])?;
    ensure!(
        grpc == http,
        "otelcol/config.yaml: the gRPC receiver takes requests of up to {grpc} bytes, HTTP {http}: \
         one limit R for both"
    );
    let kafka = &config["exporters"]["kafka"];
    let queue = &kafka["sending_queue"];
    let batch_sizer = queue["batch"]["sizer"]
        .as_str()
        .or_else(|| queue["sizer"].as_str());
    ensure!(
        batch_sizer == Some("bytes"),
        "otelcol/config.yaml: the Kafka exporter's batches are measured in {batch_sizer:?}, \
         not bytes: no byte bound then holds for a record"
    );
    let properties = read(&compose_dir().join("kafka/server.properties"))?;
    // A later line wins, as in Kafka.
    let broker = properties
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("message.max.bytes="))
        .ok_or_else(|| anyhow!("kafka/server.properties sets no message.max.bytes"))?
        .trim()
        .parse()
        .context("kafka/server.properties: message.max.bytes")?;
    Ok(Limits {
        request: grpc,
        batch: yaml_u64(kafka, &["sending_queue", "batch", "max_size"])?,
        record: yaml_u64(kafka, &["producer", "max_message_bytes"])?,
        broker,
    })
}

/// The names of a pipeline's components in `section` (receivers, processors, exporters).
fn names<'a>(pipeline: &'a Value, section: &str) -> Vec<&'a str> {
    pipeline[section]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn size_limits_agree() -> Result<()> {
    let l = limits()?;
    // What the processors can add to one span (config.yaml: "B >= R * 3/2").
    ensure!(
        l.batch >= l.request + l.request / 2,
        "the Kafka exporter's batch.max_size {} is under 3/2 of the receiver's limit {}: \
         a span the receiver took may be too big to batch, and would be dropped",
        l.batch,
        l.request
    );
    // A record and its record batch add under 100 bytes; config.yaml keeps 1 MiB.
    ensure!(
        l.record >= l.batch + MIB,
        "producer.max_message_bytes {} is not batch.max_size {} plus 1 MiB of framing",
        l.record,
        l.batch
    );
    ensure!(
        l.broker >= l.record + MIB,
        "kafka/server.properties: message.max.bytes {} is not producer.max_message_bytes {} plus 1 MiB",
        l.broker,
        l.record
    );

    let config = collector_config()?;
    let pipelines = config["service"]["pipelines"]
        .as_mapping()
        .ok_or_else(|| anyhow!("otelcol/config.yaml: no service.pipelines"))?;
    let mut to_kafka = 0;
    for (name, pipeline) in pipelines {
        let name = name.as_str().unwrap_or_default();
        let exporters = names(pipeline, "exporters");
        let kafka: Vec<_> = exporters
            .iter()
            .filter(|e| **e == "kafka" || e.starts_with("kafka/"))
            .collect();
        if kafka.is_empty() {
            continue;
        }
        to_kafka += 1;
        let batching: Vec<_> = names(pipeline, "processors")
            .into_iter()
            .filter(|p| *p == "batch" || p.starts_with("batch/"))
            .collect();
        ensure!(
            batching.is_empty(),
            "otelcol/config.yaml: pipeline {name} ends in {kafka:?} but has {batching:?}, which \
             acknowledges what a kill -9 then loses"
        );
        for exporter in kafka {
            let storage = config["exporters"][*exporter]["sending_queue"]["storage"]
                .as_str()
                .ok_or_else(|| {
                    anyhow!("otelcol/config.yaml: {exporter}'s sending_queue has no storage: its queue is in memory")
                })?;
            ensure!(
                storage.starts_with("file_storage")
                    && config["extensions"].get(storage).is_some()
                    && names(&config["service"], "extensions").contains(&storage),
                "otelcol/config.yaml: {exporter} queues on {storage}, which is not a file_storage \
                 extension that the service starts"
            );
            ensure!(
                yaml_u64(
                    &config["exporters"][*exporter],
                    &["retry_on_failure", "max_elapsed_time"]
                )? == 0,
                "otelcol/config.yaml: {exporter} gives up retrying after a while: what it gave up is lost"
            );
        }
    }
    ensure!(
        to_kafka >= 3,
        "otelcol/config.yaml: only {to_kafka} pipelines end in Kafka"
    );

    let capture = &config["exporters"]["file/captures"];
    ensure!(
        capture["append"].as_bool() == Some(true) || capture["rotation"].is_mapping(),
        "otelcol/config.yaml: file/captures neither appends nor rotates: it truncates the capture at every start"
    );

    let manifest = read(&compose_dir().join("otelcol/builder-config.yaml"))?;
    ensure!(
        manifest.contains("extension/storage/filestorage v0.155.0"),
        "otelcol/builder-config.yaml does not build the file_storage extension (v0.155.0)"
    );
    Ok(())
}

/// Compose keeps the queue where the local stack does: outside the container,
/// on a named volume, at the path the config reads from the environment.
#[test]
fn compose_keeps_the_queue_on_a_volume() -> Result<()> {
    let compose = read_yaml(&compose_dir().join("docker-compose.yml"))?;
    let otelcol = &compose["services"]["otelcol"];
    let dir = otelcol["environment"]["OTELGUARD_COLLECTOR_QUEUE_DIR"]
        .as_str()
        .ok_or_else(|| {
            anyhow!("docker-compose.yml: otelcol sets no OTELGUARD_COLLECTOR_QUEUE_DIR")
        })?;
    let volume = otelcol["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|v| v.strip_suffix(&format!(":{dir}")))
        .ok_or_else(|| anyhow!("docker-compose.yml: no volume of otelcol is mounted on {dir}"))?;
    ensure!(
        compose["volumes"].get(volume).is_some(),
        "docker-compose.yml: otelcol's queue is on {volume}, which is not a named volume"
    );
    let config = read(&compose_dir().join("otelcol/config.yaml"))?;
    ensure!(
        config.contains("directory: ${env:OTELGUARD_COLLECTOR_QUEUE_DIR"),
        "otelcol/config.yaml: the queue's directory does not come from OTELGUARD_COLLECTOR_QUEUE_DIR"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Sending spans over OTLP/HTTP (protobuf)

/// Spans of one run: trace and span ids derived from a nonce and a sequence
/// number, each span carrying the run's marker.
struct Run {
    marker: String,
    nonce: u64,
    started: SystemTime,
}

impl Run {
    fn new(prefix: &str) -> Self {
        Run {
            marker: e2e::run_marker(prefix),
            nonce: e2e::shop::nonce(),
            started: SystemTime::now(),
        }
    }

    fn span_id(&self, seq: u64) -> Vec<u8> {
        (self.nonce.rotate_left(32) ^ seq).to_be_bytes().to_vec()
    }

    /// A span with `padding` bytes of letters in one attribute.
    fn span(&self, seq: u64, padding: usize) -> Span {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mut trace_id = self.nonce.to_be_bytes().to_vec();
        trace_id.extend_from_slice(&seq.to_be_bytes());
        let mut attributes = vec![string_kv(MARKER_KEY, &self.marker)];
        if padding > 0 {
            attributes.push(string_kv("otelguard.e2e.padding", &"x".repeat(padding)));
        }
        Span {
            trace_id,
            span_id: self.span_id(seq),
            name: "GET /e2e/collector".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes,
            ..Default::default()
        }
    }

    fn request(&self, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_kv("service.name", "otelguard-e2e-collector")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// A request of spans `first..first + count`, without padding.
    fn batch(&self, first: u64, count: u64) -> ExportTraceServiceRequest {
        self.request(
            (first..first + count)
                .map(|seq| self.span(seq, 0))
                .collect(),
        )
    }
}

/// How the Collector answered a request.
#[derive(Debug, PartialEq)]
enum Answer {
    /// 200, nothing rejected: the Collector has every span.
    Acknowledged,
    /// Any other answer, or none (connection refused while it is down).
    Refused(String),
}

async fn export(client: &reqwest::Client, request: &ExportTraceServiceRequest) -> Answer {
    let response = client
        .post(OTLP_HTTP)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => return Answer::Refused(format!("no answer: {e}")),
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Answer::Refused(format!("HTTP {status}"));
    }
    match ExportTraceServiceResponse::decode(body.as_ref()) {
        Ok(r)
            if r.partial_success
                .as_ref()
                .is_some_and(|p| p.rejected_spans > 0) =>
        {
            Answer::Refused(format!("partial success: {:?}", r.partial_success))
        }
        Ok(_) => Answer::Acknowledged,
        Err(e) => Answer::Refused(format!("HTTP {status}, undecodable answer: {e}")),
    }
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// What a sender that runs without pause has done so far.
#[derive(Default)]
struct Sent {
    requests: u64,
    acknowledged: Vec<u64>,
    refused: u64,
    last_refusal: Option<String>,
}

/// Sends requests of `per_request` spans one after the other until `stop`,
/// recording which spans the Collector acknowledged.
fn spawn_sender(
    run: Arc<Run>,
    per_request: u64,
    sent: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let client = client()?;
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let answer = export(&client, &run.batch(next, per_request)).await;
            let refused = {
                let mut sent = sent.lock().map_err(|_| anyhow!("sender state poisoned"))?;
                sent.requests += 1;
                match answer {
                    Answer::Acknowledged => {
                        sent.acknowledged.extend(next..next + per_request);
                        false
                    }
                    Answer::Refused(why) => {
                        sent.refused += 1;
                        sent.last_refusal = Some(why);
                        true
                    }
                }
            };
            next += per_request;
            if refused {
                // The Collector is down: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    })
}

/// Polls (10 times a second, at most `polls` times) until `ready(sent)`.
async fn wait_sent(
    sent: &Mutex<Sent>,
    polls: u32,
    what: &str,
    ready: impl Fn(&Sent) -> bool,
) -> Result<()> {
    for _ in 0..polls {
        {
            let sent = sent.lock().map_err(|_| anyhow!("sender state poisoned"))?;
            if ready(&sent) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sent.lock().map_err(|_| anyhow!("sender state poisoned"))?;
    bail!(
        "the sender never got to {what}: {} requests, {} spans acknowledged, {} refused (last: {:?})",
        sent.requests,
        sent.acknowledged.len(),
        sent.refused,
        sent.last_refusal
    )
}

// ---------------------------------------------------------------------------
// Reading back

/// The run's spans found on `otlp_spans`.
#[derive(Default, Debug)]
struct Arrived {
    /// Span id -> how many times it arrived (more than once: sent again after a crash).
    spans: HashMap<Vec<u8>, u32>,
    /// Records holding the run's spans, and the largest of them in bytes.
    records: u32,
    largest_record: usize,
    /// Records read in all, and one-second waits for more.
    read: u64,
    idle: u32,
}

/// Quiet seconds after which the read gives up: the exporter retries every
/// 5 s at most once Kafka is back.
const KAFKA_IDLE_POLLS: u32 = 120;
/// Records after which the read gives up (others share the topic).
const KAFKA_MAX_RECORDS: u64 = 2_000_000;
/// Once every wanted span is in, records read on (until a quiet second) to
/// count copies sent twice.
const KAFKA_SETTLE_RECORDS: u64 = 20_000;

/// Reads `otlp_spans` from `since_ms` on until every span of `wanted` arrived
/// (or the topic stayed quiet too long), counting the run's spans, then a
/// little further for copies.
async fn read_back(run: &Run, since_ms: i64, wanted: &HashSet<Vec<u8>>) -> Result<Arrived> {
    let consumer = consumer_since(
        &["otlp_spans"],
        since_ms,
        &format!("otelguard-e2e-{}", run.marker),
    )?;
    let mut arrived = Arrived::default();
    let mut missing = wanted.len();
    let mut complete_at = None;
    while arrived.idle < KAFKA_IDLE_POLLS && arrived.read < KAFKA_MAX_RECORDS {
        if missing == 0 {
            let at = *complete_at.get_or_insert(arrived.read);
            if arrived.read >= at + KAFKA_SETTLE_RECORDS {
                break;
            }
        }
        let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) if missing == 0 => break,
            Err(_) => {
                arrived.idle += 1;
                continue;
            }
            Ok(m) => m.context("kafka: reading otlp_spans")?,
        };
        arrived.read += 1;
        let payload = message.payload().unwrap_or_default();
        let Ok(request) = ExportTraceServiceRequest::decode(payload) else {
            continue; // other tests' dead letters
        };
        let mut ours = false;
        for span in request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .filter(|s| attr_str(&s.attributes, MARKER_KEY) == Some(run.marker.as_str()))
        {
            ours = true;
            let count = arrived.spans.entry(span.span_id.clone()).or_default();
            *count += 1;
            if *count == 1 && wanted.contains(&span.span_id) {
                missing -= 1;
            }
        }
        if ours {
            arrived.records += 1;
            arrived.largest_record = arrived.largest_record.max(payload.len());
        }
    }
    Ok(arrived)
}

/// Every file the Collector's capture is made of that was written since
/// `since`: captures.jsonl and its rotated predecessors (captures-<time>-size.jsonl).
fn capture_files(since: SystemTime) -> Result<Vec<PathBuf>> {
    let current = e2e::collector_capture_file();
    let dir = current
        .parent()
        .ok_or_else(|| anyhow!("{} has no folder", current.display()))?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let written = entry.metadata().and_then(|m| m.modified()).ok();
        if name.starts_with("captures")
            && name.ends_with(".jsonl")
            && written.is_none_or(|t| t >= since)
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// The run's span ids (hex) in the capture, and the lines naming the run that
/// are not whole JSON (at most the one being written).
fn captured(run: &Run) -> Result<(HashSet<String>, Vec<String>)> {
    let (mut ids, mut broken) = (HashSet::new(), Vec::new());
    for path in capture_files(run.started)? {
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            // Rotated away between the listing and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&run.marker))
        {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
                broken.push(format!("{}:{}", path.display(), n + 1));
                continue;
            };
            captured_spans(&json, &run.marker, &mut ids);
        }
    }
    Ok((ids, broken))
}

/// Adds the span ids of an OTLP/JSON TracesData line whose spans carry `marker`.
fn captured_spans(json: &serde_json::Value, marker: &str, ids: &mut HashSet<String>) {
    let list = |v: &serde_json::Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    for rs in list(json, "resourceSpans") {
        for ss in list(&rs, "scopeSpans") {
            for span in list(&ss, "spans") {
                let marked = list(&span, "attributes")
                    .iter()
                    .any(|kv| kv["key"] == MARKER_KEY && kv["value"]["stringValue"] == marker);
                if let (true, Some(id)) = (marked, span["spanId"].as_str()) {
                    ids.insert(id.to_owned());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stopping and starting components of the local stack

fn stack_script() -> PathBuf {
    compose_dir().join("local/stack")
}

/// Runs `compose/local/stack ARGS...` and returns what it printed.
async fn stack(args: &[&str]) -> Result<String> {
    let script = stack_script();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = args.join(" ");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&script).args(&args).output()
    })
    .await?
    .with_context(|| format!("running compose/local/stack {shown}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "`compose/local/stack {shown}` failed ({}):\n{text}",
        output.status
    );
    Ok(text)
}

/// Starts Kafka and the Collector again when a test that stopped them ends,
/// however it ends.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let status = std::process::Command::new(stack_script())
            .args(["up", "kafka", "otelcol"])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not start kafka and otelcol again: run `compose/local/stack up`");
        }
    }
}

fn require_collector_and_kafka() -> Result<()> {
    require_up("otelcol", OTLP_GRPC_PORT)?;
    require_up("kafka", KAFKA_PORT)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The span ids (bytes) of sequence numbers.
fn span_ids(run: &Run, seqs: &[u64]) -> HashSet<Vec<u8>> {
    seqs.iter().map(|s| run.span_id(*s)).collect()
}

/// Fails naming the acknowledged spans that never reached Kafka.
fn ensure_all_arrived(wanted: &HashSet<Vec<u8>>, arrived: &Arrived, what: &str) -> Result<()> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|id| !arrived.spans.contains_key(*id))
        .map(|id| hex(id))
        .collect();
    ensure!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged spans never reached otlp_spans (read {} records, {} of them \
         the run's, waited {} quiet seconds); first missing: {:?}",
        missing.len(),
        wanted.len(),
        arrived.read,
        arrived.records,
        arrived.idle,
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_the_size_limit_arrives_in_kafka() -> Result<()> {
    let _one_at_a_time = STACK.lock().await;
    require_collector_and_kafka()?;
    let limits = limits()?;
    let request_limit = usize::try_from(limits.request)?;
    let run = Run::new("collector-size");
    let since = now_ms() - 1000;
    let client = client()?;

    // Many spans of 4 KiB padding, within 64 KiB under R.
    let padded = |seq| run.span(seq, 4 << 10);
    let per_span = padded(0).encoded_len() + 4; // its tag and length
    let many_count = ((request_limit - (32 << 10)) / per_span) as u64;
    let many = run.request((0..many_count).map(padded).collect());
    ensure!(
        (request_limit - (64 << 10)..request_limit).contains(&many.encoded_len()),
        "the many-span request is {} bytes, not within 64 KiB under R {request_limit}",
        many.encoded_len()
    );
    // One span that is nearly all of R.
    let one_padding = request_limit - 1024;
    let one = run.request(vec![run.span(many_count, one_padding)]);
    ensure!(
        one.encoded_len() < request_limit,
        "the one-span request is {} bytes, over R {request_limit}",
        one.encoded_len()
    );
    // Just over R: refused by the receiver, so never acknowledged and then lost.
    let over = run.request(vec![run.span(many_count + 1, request_limit)]);

    let mut sizes = BTreeMap::new();
    for (what, request) in [("many spans", &many), ("one span", &one)] {
        sizes.insert(what, request.encoded_len());
        let answer = export(&client, request).await;
        ensure!(
            answer == Answer::Acknowledged,
            "the Collector did not take a {}-byte request ({what}) under its limit of {request_limit}: {answer:?}",
            request.encoded_len()
        );
    }
    let answer = export(&client, &over).await;
    ensure!(
        matches!(answer, Answer::Refused(_)),
        "the Collector acknowledged a {}-byte request, over its limit of {request_limit}",
        over.encoded_len()
    );

    let wanted = span_ids(&run, &(0..=many_count).collect::<Vec<_>>());
    let arrived = read_back(&run, since, &wanted).await?;
    eprintln!(
        "requests {sizes:?} (limit R {request_limit}): {} of {} spans in Kafka in {} records, \
         the largest {} bytes (producer limit {}, broker {}); the {}-byte request was refused: {answer:?}",
        arrived.spans.len(),
        wanted.len(),
        arrived.records,
        arrived.largest_record,
        limits.record,
        limits.broker,
        over.encoded_len()
    );
    ensure_all_arrived(&wanted, &arrived, "requests at the size limit")?;
    ensure!(
        !arrived.spans.contains_key(&run.span_id(many_count + 1)),
        "the span of the refused request reached Kafka"
    );
    ensure!(
        arrived.largest_record as u64 >= limits.request - (64 << 10)
            && arrived.largest_record as u64 <= limits.record,
        "the largest record was {} bytes: the one-span request should make one record near R {} \
         and under P {}",
        arrived.largest_record,
        limits.request,
        limits.record
    );
    Ok(())
}

/// Spans per request in the tests that send without pause.
const SPANS_PER_REQUEST: u64 = 50;
/// Acknowledged requests before the kill, and after the restart.
const REQUESTS_EACH_SIDE: u64 = 200;
/// Polls (tenths of a second) for the sender to get there.
const SENDER_POLLS: u32 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_a_collector_kill() -> Result<()> {
    let _one_at_a_time = STACK.lock().await;
    require_collector_and_kafka()?;
    let _restart = Restart;
    let run = Arc::new(Run::new("collector-kill"));
    let since = now_ms() - 1000;

    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = spawn_sender(run.clone(), SPANS_PER_REQUEST, sent.clone(), stop.clone());
    let before = REQUESTS_EACH_SIDE * SPANS_PER_REQUEST;
    wait_sent(
        &sent,
        SENDER_POLLS,
        "acknowledgements before the kill",
        |s| s.acknowledged.len() as u64 >= before,
    )
    .await?;

    // What the capture holds now must still be there after the restart.
    let (in_capture_before, _) = captured(&run)?;
    stack(&["kill", "otelcol"]).await?;
    let (acknowledged_at_kill, refused_at_kill) = {
        let s = sent.lock().map_err(|_| anyhow!("sender state poisoned"))?;
        (s.acknowledged.len() as u64, s.refused)
    };
    // The sender goes on against the dead Collector: its requests are refused.
    wait_sent(
        &sent,
        SENDER_POLLS,
        "a refusal while the Collector is down",
        |s| s.refused > refused_at_kill,
    )
    .await?;
    stack(&["up", "otelcol"]).await?;
    wait_sent(
        &sent,
        SENDER_POLLS,
        "acknowledgements after the restart",
        |s| s.acknowledged.len() as u64 >= acknowledged_at_kill + before,
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    sender.await??;

    let (requests, acknowledged, refused) = {
        let s = sent.lock().map_err(|_| anyhow!("sender state poisoned"))?;
        (s.requests, s.acknowledged.clone(), s.refused)
    };
    let wanted = span_ids(&run, &acknowledged);
    let arrived = read_back(&run, since, &wanted).await?;
    let duplicates: u32 = arrived.spans.values().map(|n| n - 1).sum();
    let unacknowledged = arrived
        .spans
        .keys()
        .filter(|id| !wanted.contains(*id))
        .count();
    let (in_capture_after, broken) = captured(&run)?;
    eprintln!(
        "collector kill -9: sent {} spans in {requests} requests; acknowledged {} ({acknowledged_at_kill} \
         before the kill), refused {refused} requests; in Kafka {} distinct spans in {} records \
         ({duplicates} sent twice, {unacknowledged} never acknowledged); capture: {} before the kill, \
         {} after, broken lines {broken:?}",
        requests * SPANS_PER_REQUEST,
        acknowledged.len(),
        arrived.spans.len(),
        arrived.records,
        in_capture_before.len(),
        in_capture_after.len(),
    );
    ensure_all_arrived(&wanted, &arrived, "across a kill -9 of the Collector")?;

    let lost_from_capture = in_capture_before.difference(&in_capture_after).count();
    ensure!(
        lost_from_capture == 0,
        "{lost_from_capture} of the {} spans the capture held before the kill are gone from it: \
         the restart truncated it",
        in_capture_before.len()
    );
    // The file exporter writes each line straight to the file before the
    // answer, so the capture has every acknowledged span too.
    let not_captured = wanted
        .iter()
        .filter(|id| !in_capture_after.contains(&hex(id)))
        .count();
    ensure!(
        not_captured == 0,
        "{not_captured} of {} acknowledged spans are not in the capture",
        wanted.len()
    );
    ensure!(
        broken.len() <= 1,
        "{} lines of the capture holding the run's spans are not whole JSON: {broken:?}",
        broken.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_spans_survive_a_kafka_outage() -> Result<()> {
    let _one_at_a_time = STACK.lock().await;
    require_collector_and_kafka()?;
    let _restart = Restart;
    let run = Run::new("collector-outage");
    let since = now_ms() - 1000;
    let client = client()?;

    stack(&["down", "kafka"]).await?;
    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    let mut next = 0;
    // Before and after a kill -9 of the Collector, with Kafka away all along.
    for phase in 0..2 {
        for _ in 0..REQUESTS_EACH_SIDE / 2 {
            match export(&client, &run.batch(next, SPANS_PER_REQUEST)).await {
                Answer::Acknowledged => acknowledged.extend(next..next + SPANS_PER_REQUEST),
                Answer::Refused(why) => refusals.push(why),
            }
            next += SPANS_PER_REQUEST;
        }
        if phase == 0 {
            stack(&["kill", "otelcol"]).await?;
            stack(&["up", "otelcol"]).await?;
        }
    }
    stack(&["up", "kafka"]).await?;

    let wanted = span_ids(&run, &acknowledged);
    let arrived = read_back(&run, since, &wanted).await?;
    eprintln!(
        "kafka outage with a collector kill -9 in it: sent {next} spans, acknowledged {} \
         (refused requests: {refusals:?}); in Kafka {} distinct spans in {} records",
        acknowledged.len(),
        arrived.spans.len(),
        arrived.records
    );
    ensure!(
        refusals.is_empty(),
        "the Collector refused {} requests while Kafka was away, with room in its queue: {refusals:?}",
        refusals.len()
    );
    ensure_all_arrived(&wanted, &arrived, "across a Kafka outage")?;
    Ok(())
}
