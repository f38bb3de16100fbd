//! The scaled-out form's throughput and the shuffle's added latency
//! (issue 18, "A benchmark"), on the local stack's Kafka.
//!
//! ```text
//! compose/local/stack up kafka
//! cargo build -p engine --features kafka,postgres,otel
//! cargo run -p e2e --example scale_out_bench -- [COPIES]
//! ```
//!
//! The real shop's brute force capture (rules/captures/recorded/
//! brute_force.jsonl.zst, 554 messages, 8746 rows) is produced COPIES times
//! (default 20) into three partitions of each OTLP topic of the run's own.
//! The copies repeat the same event times, so the evaluating engines run
//! with `--lateness 1h` (no copy is late) and the whole rule pack (`rules/`).
//!
//! 1. Two `engine shuffle` instances read every message; their CPU seconds
//!    give the repartition stage's rows per CPU-second.
//! 2. Then 1, 2 and 3 `engine evaluate` processes, each time a new group
//!    from the start of the keyed topics, until every keyed record is read
//!    and the windows are evaluated (`--idle 10s`: quiet for 10 s, the wall
//!    clock closes every window). The machine has 2 cores, which the
//!    processes share, so the figure is rows per CPU-second (user + system,
//!    from /proc), beside the wall time.
//! 3. The shuffle's added latency: with the shufflers still running, one
//!    message at a time is produced and a read_committed consumer of the
//!    keyed topics waits for its first keyed record; 30 samples, p50 and max.
//!    It is at least the transaction interval (`--commit-every`, 100 ms).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::engine::Engine;
use e2e::kafka::{BROKERS, producer};
use e2e::scale::{Setup, cpu_seconds, repo};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;

const CAPTURE_ROWS: u64 = 8746;

/// The number after `label` in the newest line of `lines` that has it.
fn newest_count(lines: &[String], label: &str) -> Option<u64> {
    lines.iter().rev().find_map(|l| {
        let at = l.find(label)?;
        l[..at].split_whitespace().last()?.parse().ok()
    })
}

/// Collects a process's stderr lines.
fn drain(rx: &mpsc::Receiver<String>, into: &mut Vec<String>) {
    into.extend(rx.try_iter());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let copies: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("COPIES: a number"))
        .unwrap_or(20);
    let capture = repo("rules/captures/recorded/brute_force.jsonl.zst");
    let setup = Setup::new("bench", 4).await;
    let produced = setup.produce(&capture, copies).await;
    let rows = CAPTURE_ROWS * copies as u64;
    println!("produced {produced} messages ({rows} rows) into 3 partitions of each OTLP topic");

    // 1. the repartition stage
    let started = Instant::now();
    let shufflers = [setup.shuffle("a"), setup.shuffle("b")];
    let mut logs: Vec<Vec<String>> = vec![Vec::new(); 2];
    let written = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, (_, err)) in shufflers.iter().enumerate() {
            drain(err, &mut logs[i]);
        }
        let messages: u64 = logs
            .iter()
            .filter_map(|l| newest_count(l, "messages,"))
            .sum();
        if messages >= produced as u64 {
            break logs
                .iter()
                .filter_map(|l| newest_count(l, "keyed records written"))
                .sum::<u64>();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the shufflers read {messages} of {produced} messages in 30 minutes"
        );
    };
    let shuffle_wall = started.elapsed().as_secs_f64();
    let shuffle_cpu: f64 = shufflers
        .iter()
        .filter_map(|(e, _)| cpu_seconds(e.0.id()))
        .sum();
    println!(
        "shuffle, 2 instances: {rows} rows in {shuffle_wall:.1} s (progress lines every 10 s), \
         {shuffle_cpu:.1} CPU-s: {:.0} rows per CPU-second; {written} keyed records written",
        rows as f64 / shuffle_cpu
    );

    // 2. 1, 2 and 3 evaluating engines
    for n in 1..=3 {
        let started = Instant::now();
        let group = format!("bench{n}");
        let engines: Vec<(Engine, mpsc::Receiver<String>, mpsc::Receiver<String>)> = (0..n)
            .map(|_| setup.evaluate(&group, &["--lateness", "1h", "--idle", "10s"]))
            .collect();
        let mut logs: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut outputs = 0u64;
        let mut read_at = None;
        let mut last_change = Instant::now();
        let mut last_outputs = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (i, (_, err, out)) in engines.iter().enumerate() {
                drain(err, &mut logs[i]);
                outputs += out.try_iter().count() as u64;
            }
            let records: u64 = logs
                .iter()
                .filter_map(|l| newest_count(l, "records read"))
                .sum();
            if read_at.is_none() && records >= written {
                read_at = Some(started.elapsed().as_secs_f64());
            }
            if outputs != last_outputs {
                last_outputs = outputs;
                last_change = Instant::now();
            }
            // read, and 25 s without a new output: the windows are evaluated
            if read_at.is_some() && outputs > 0 && last_change.elapsed() > Duration::from_secs(25) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "{n} engines read {records} of {written} keyed records in 30 minutes"
            );
        }
        let cpu: f64 = engines
            .iter()
            .filter_map(|(e, _, _)| cpu_seconds(e.0.id()))
            .sum();
        println!(
            "evaluate, {n} engine{}: every keyed record read in {:.1} s; {outputs} outputs; \
             {cpu:.1} CPU-s: {:.0} rows per CPU-second",
            if n == 1 { "" } else { "s" },
            read_at.unwrap_or_default(),
            rows as f64 / cpu
        );
    }

    // 3. the shuffle's added latency
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", format!("e2e-{}-latency", setup.run))
        .set("auto.offset.reset", "latest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("a Kafka consumer");
    let keyed = setup.keyed_topics();
    let keyed: Vec<&str> = keyed.iter().map(String::as_str).collect();
    consumer
        .subscribe(&keyed)
        .expect("subscribe to the keyed topics");
    // the assignment: wait until a poll returns nothing for a while
    while tokio::time::timeout(Duration::from_secs(8), consumer.recv())
        .await
        .is_ok()
    {}
    let one = {
        let mut reader =
            ingest::source::capture_reader::open(&[capture.clone()]).expect("the capture");
        loop {
            match reader.next_raw() {
                Some(ingest::source::capture_reader::RawItem::Bytes { bytes, .. })
                    if bytes.starts_with(b"{\"resourceSpans") =>
                {
                    break bytes;
                }
                Some(_) => continue,
                None => panic!("no spans in the capture"),
            }
        }
    };
    let producer = producer();
    let mut samples = Vec::new();
    for i in 0..30 {
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::<(), _>::to(&setup.spans)
                    .partition(i % 3)
                    .payload(&one),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
        match tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await {
            Ok(Ok(_)) => samples.push(sent.elapsed().as_secs_f64()),
            _ => println!("sample {i}: no keyed record in 20 s"),
        }
        // the rest of this message's keyed records
        while tokio::time::timeout(Duration::from_millis(600), consumer.recv())
            .await
            .is_ok()
        {}
    }
    samples.sort_by(f64::total_cmp);
    if !samples.is_empty() {
        println!(
            "shuffle latency (produce to the first keyed record visible, read_committed), {} samples: p50 {:.3} s, max {:.3} s",
            samples.len(),
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
    drop(shufflers);
    setup.delete().await;
}
