//! The scaled-out form's stages on the local stack's Kafka, for the
//! equality tests (tests/scale_out.rs) and the benchmark
//! (examples/scale_out_bench.rs): OTLP topics of a run's own, a recorded
//! capture produced into them, `engine shuffle` and `engine evaluate`
//! processes with the run's keyed topics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ingest::source::capture_reader::{self, RawItem};
use rdkafka::producer::FutureRecord;

use crate::engine::{Engine, spawn};
use crate::kafka::{BROKERS, create_topic, delete_topics, producer};

/// Partitions of each OTLP topic of a run.
pub const SOURCE_PARTITIONS: i32 = 3;

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    crate::compose::repo_root().join(path)
}

/// The whole rule pack, `rules/`.
pub fn rules() -> String {
    repo("rules").to_str().expect("a UTF-8 path").to_string()
}

/// One run's topics and groups.
pub struct Setup {
    pub run: String,
    pub spans: String,
    pub logs: String,
    pub metrics: String,
    /// partitions of each keyed topic
    pub keyed_partitions: u32,
}

impl Setup {
    /// Creates the run's OTLP topics (`SOURCE_PARTITIONS` partitions each).
    pub async fn new(name: &str, keyed_partitions: u32) -> Setup {
        let run = format!("{name}_{:x}", crate::shop::nonce());
        let setup = Setup {
            spans: format!("e2e_{run}_spans"),
            logs: format!("e2e_{run}_logs"),
            metrics: format!("e2e_{run}_metrics"),
            run,
            keyed_partitions,
        };
        for t in [&setup.spans, &setup.logs, &setup.metrics] {
            create_topic(t, SOURCE_PARTITIONS).await;
        }
        setup
    }

    /// The prefix of the run's keyed topics.
    pub fn prefix(&self) -> String {
        format!("e2e_{}", self.run)
    }

    /// The arguments both stages share.
    fn common(&self) -> Vec<String> {
        [
            "--kafka",
            BROKERS,
            "--rules",
            &rules(),
            "--partitions",
            &self.keyed_partitions.to_string(),
            "--spans-topic",
            &self.spans,
            "--logs-topic",
            &self.logs,
            "--metrics-topic",
            &self.metrics,
            "--keyed-prefix",
            &self.prefix(),
            "--start-at",
            "earliest",
            "--session-timeout",
            "6s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// An `engine shuffle` named `id`, in the run's shuffle group; its stderr.
    pub fn shuffle(&self, id: &str) -> (Engine, mpsc::Receiver<String>) {
        let mut args = vec!["shuffle".to_string()];
        args.extend(self.common());
        args.extend(["--id", id, "--group"].map(String::from));
        args.push(format!("e2e-{}-shuffle", self.run));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (engine, err, _) = spawn(&args);
        (engine, err)
    }

    /// An `engine evaluate` in the run's group `group` (a suffix), with
    /// `extra` arguments; its stderr and stdout.
    pub fn evaluate(
        &self,
        group: &str,
        extra: &[&str],
    ) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
        let mut args = vec!["evaluate".to_string()];
        args.extend(self.common());
        args.push("--group".into());
        args.push(format!("e2e-{}-{group}", self.run));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn(&args)
    }

    /// Produces every message of `capture`, `copies` times over, to its
    /// table's topic, the messages of each table round-robin over the
    /// partitions; how many messages.
    pub async fn produce(&self, capture: &Path, copies: usize) -> usize {
        let producer = producer();
        let mut next = BTreeMap::new();
        let mut sent = 0;
        for _ in 0..copies {
            let mut reader =
                capture_reader::open(&[capture.to_path_buf()]).expect("open the capture");
            while let Some(item) = reader.next_raw() {
                let RawItem::Bytes { bytes, .. } = item else {
                    panic!("the capture has a record that does not read");
                };
                let table = ingest::decode::decode_json(&bytes)
                    .expect("an OTLP/JSON message")
                    .table;
                let topic = match table {
                    ingest::Table::Spans => &self.spans,
                    ingest::Table::Logs => &self.logs,
                    ingest::Table::Metrics => &self.metrics,
                };
                let n = next.entry(table).or_insert(0);
                let partition = *n % SOURCE_PARTITIONS;
                *n += 1;
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload(&bytes),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap_or_else(|(e, _)| panic!("cannot produce to Kafka at {BROKERS} ({e})"));
                sent += 1;
            }
        }
        sent
    }

    /// The run's keyed topics, as `engine plan` names them for the pack
    /// (which keys no rule by trace id).
    pub fn keyed_topics(&self) -> Vec<String> {
        [
            "by_client_address",
            "by_http_route",
            "by_service_name",
            "by_shop_order_currency",
            "by_user_hash",
            "global",
        ]
        .iter()
        .map(|t| format!("{}_{t}", self.prefix()))
        .collect()
    }

    /// Creates the run's keyed topics as `engine shuffle` would (the plan's
    /// partitions; the global topic has one), so that evaluating engines
    /// started before the shufflers are given partitions at once.
    pub async fn create_keyed_topics(&self) {
        for topic in self.keyed_topics() {
            let partitions = if topic.ends_with("_global") {
                1
            } else {
                self.keyed_partitions as i32
            };
            create_topic(&topic, partitions).await;
        }
    }
    /// Deletes the run's topics, keyed and OTLP.
    pub async fn delete(&self) {
        let keyed = self.keyed_topics();
        let mut names: Vec<&str> = keyed.iter().map(String::as_str).collect();
        names.extend([
            self.spans.as_str(),
            self.logs.as_str(),
            self.metrics.as_str(),
        ]);
        delete_topics(&names).await;
    }
}

/// CPU seconds a process has used (user and system), from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // clock ticks: 100 a second on Linux
    Some(ticks / 100.0)
}
