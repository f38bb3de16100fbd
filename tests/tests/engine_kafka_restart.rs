//! Restarting `engine run --kafka` in seconds, on the real Kafka of the local
//! stack (`compose/local/stack up kafka`): killed with SIGKILL and started
//! again with the same
//! `--group-instance-id`, the engine gets its partitions back at once: its
//! first evaluation comes well within the session timeout, where a member
//! without an instance id waits for the broker to expire the dead one.
//! (`--start-at latest` had a test here that failed: a new group read a
//! flood produced before it joined; it is not the default, see README.)
//!
//! The times asserted are the engine's own (`first evaluation N s after
//! start` on its stderr), compared with `--session-timeout`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::engine::{Engine, flood_rule_folder, spans};
use e2e::kafka::{BROKERS, create_topic, producer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// This run's own topics (spans, logs, metrics), rules folder and flood rule.
struct Setup {
    topics: [String; 3],
    rules: String,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        let run = format!("{:x}", e2e::shop::nonce());
        let topics = [
            format!("e2e_{name}_spans_{run}"),
            format!("e2e_{name}_logs_{run}"),
            format!("e2e_{name}_metrics_{run}"),
        ];
        for t in &topics {
            create_topic(t, 1).await;
        }
        let rules = flood_rule_folder(name, &run);
        Setup {
            topics,
            rules: rules.to_str().expect("a UTF-8 path").to_string(),
        }
    }

    /// `engine run --kafka` on these topics, with `extra` arguments; its
    /// stdout and stderr, line by line. The Kafka source logs its
    /// assignments (`ingest::source::kafka` at info).
    fn engine(&self, extra: &[&str]) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
        let [spans, logs, metrics] = &self.topics;
        let mut child = Command::new(e2e::workspace_binary("engine"))
            .args(["run", "--rules", &self.rules, "--kafka", BROKERS])
            .args(["--spans-topic", spans, "--logs-topic", logs])
            .args(["--metrics-topic", metrics, "--idle", "1s"])
            .args(["--otlp-grpc", "off", "--otlp-http", "off"])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn,ingest::source::kafka=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start engine run --kafka");
        let lines = |from: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().expect("stdout")));
        let err = lines(Box::new(child.stderr.take().expect("stderr")));
        (Engine(child), out, err)
    }

    /// Spans `from..to` of [`spans`], in messages of 2000 at most (the
    /// broker's message size limit).
    async fn produce(&self, producer: &FutureProducer, payload: &Value) {
        let payload = payload.to_string();
        producer
            .send(
                FutureRecord::<(), _>::to(&self.topics[0]).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce to Kafka at {BROKERS} ({e})"));
    }

    async fn delete(&self) {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        e2e::kafka::delete_topics(&names).await;
    }
}

/// Reads `lines` until one contains `marker`; returns that line.
fn line_with(lines: &mpsc::Receiver<String>, marker: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(marker) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with `{marker}` within {within:?}"),
        }
    }
}

/// The seconds the engine reports from its start to its first evaluation.
fn first_evaluation(err: &mpsc::Receiver<String>) -> f64 {
    let line = line_with(err, "first evaluation ", Duration::from_secs(120));
    line.split("first evaluation ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number of seconds in `{line}`"))
}

/// Event time ten minutes ago, on a minute: the engine drops rows dated
/// beyond the wall clock.
fn t0() -> i64 {
    (chrono::Utc::now().timestamp() - 600) / 60 * 60 * 1_000_000_000
}

/// Starts the engine, feeds it, kills it with SIGKILL, feeds the topic while
/// it is dead and starts it again at once: the seconds from that start to
/// its first evaluation, as it reports them.
async fn restart_after_kill(setup: &Setup, group: &str, member: &[&str]) -> f64 {
    let producer = producer();
    let t0 = t0();
    let mut args = vec!["--group", group, "--start-at", "earliest"];
    args.extend_from_slice(&["--session-timeout", "20s"]);
    args.extend_from_slice(member);
    let (engine, _out, err) = setup.engine(&args);
    setup
        .produce(&producer, &spans(t0, 0, 1000, "198.51.100.20"))
        .await;
    setup
        .produce(&producer, &spans(t0, 9000, 9001, "192.0.2.1"))
        .await;
    let first = first_evaluation(&err);
    eprintln!("first start: first evaluation {first:.2} s after start");
    drop(engine); // SIGKILL: the member does not leave its group
    setup
        .produce(&producer, &spans(t0, 20_000, 20_100, "198.51.100.20"))
        .await;
    setup
        .produce(&producer, &spans(t0, 30_000, 30_001, "192.0.2.1"))
        .await;
    let (_engine, _out, err) = setup.engine(&args);
    first_evaluation(&err)
}

#[tokio::test]
async fn a_restart_with_the_same_instance_id_gets_its_partitions_back_at_once() {
    const SESSION_TIMEOUT_S: f64 = 20.0;
    let nonce = e2e::shop::nonce();
    let setup = Setup::new("static").await;
    let group = format!("e2e-static-{nonce:x}");
    let id = format!("engine-{nonce:x}");
    let with_id = restart_after_kill(&setup, &group, &["--group-instance-id", &id]).await;
    eprintln!(
        "restart after SIGKILL, static membership: first evaluation {with_id:.2} s after start (session timeout {SESSION_TIMEOUT_S} s)"
    );
    assert!(
        with_id < SESSION_TIMEOUT_S / 2.0,
        "the restarted member waited {with_id:.1} s for its partitions (session timeout {SESSION_TIMEOUT_S} s)"
    );
    setup.delete().await;

    // the control: without an instance id, the broker holds the dead
    // member's partitions until its session times out
    let setup = Setup::new("dynamic").await;
    let group = format!("e2e-dynamic-{nonce:x}");
    let without = restart_after_kill(&setup, &group, &[]).await;
    eprintln!(
        "restart after SIGKILL, no instance id: first evaluation {without:.2} s after start (session timeout {SESSION_TIMEOUT_S} s)"
    );
    assert!(
        without > SESSION_TIMEOUT_S / 2.0,
        "without static membership the restart did not wait ({without:.1} s): the comparison proves nothing"
    );
    setup.delete().await;
}
