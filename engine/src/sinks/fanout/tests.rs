//! The fan-out against a hung Alertmanager: a real HTTP server on 127.0.0.1
//! that accepts connections, reads the requests and does not answer until
//! told to. No wall-clock limits: the tests assert on counts and progress.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::alerts::State;
use crate::sinks::SinkStats;
use crate::sinks::alertmanager::{Alertmanager, AlertmanagerSink};
use crate::sinks::stdout::{Format, StdoutSink};
use crate::sinks::testing::{HeldServer, client_alert, sample_kpi};

fn alert(i: usize) -> Output {
    Output::Alert(client_alert(&format!("203.0.113.{i}"), State::Firing))
}

fn sink<'a>(stats: &'a [SinkStats], name: &str) -> &'a SinkStats {
    stats
        .iter()
        .find(|s| s.sink == name)
        .unwrap_or_else(|| panic!("no sink {name} in {stats:?}"))
}

/// Waits (without a time limit) until `done` holds for the fan-out's counters.
async fn until(fan: &FanOut, done: impl Fn(&FanOut) -> bool) {
    while !done(fan) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The client addresses of the alerts Alertmanager received, as they
/// arrive: the members its incidents list (alerts of one rule fold into one).
fn clients(body: &serde_json::Value) -> Vec<String> {
    body.as_array()
        .map(|incidents| {
            incidents
                .iter()
                .filter_map(|a| a["annotations"]["members"].as_str())
                .flat_map(|members| members.split_whitespace())
                .filter_map(|word| word.strip_prefix("client.address="))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// A stdout sink writing into memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_hung_alertmanager_never_blocks_the_hand_off_and_commits_wait_until_it_answers() {
    let mut server = HeldServer::start(1).await;
    let printed = Lines::default();
    let mut fan = FanOut::new();
    fan.add(
        Box::new(AlertmanagerSink::new(Alertmanager::new(&server.base()))),
        8,
    );
    fan.add(
        Box::new(StdoutSink::to(Box::new(printed.clone()), Format::Json)),
        8,
    );

    // five batches of one alert, and one of a KPI value (Alertmanager takes
    // none of it), handed in from a task of their own: it ends, however
    // Alertmanager is doing
    let (fan, seqs) = tokio::spawn(async move {
        let mut seqs: Vec<u64> = (0..5).map(|i| fan.send(&[alert(i)])).collect();
        seqs.push(fan.send(&[sample_kpi()]));
        (fan, seqs)
    })
    .await
    .expect("the hand-off ends");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);

    // Alertmanager has the first request and does not answer
    let first = server
        .requests
        .recv()
        .await
        .expect("a request reaches the server");
    assert!(!clients(&first).is_empty(), "{first}");
    // stdout, which does not wait on Alertmanager, prints all five
    until(&fan, |f| sink(&f.stats(), "stdout").delivered == 5).await;
    let s = fan.stats();
    let am = sink(&s, "alertmanager");
    assert_eq!(
        (am.queued, am.delivered, am.dropped, am.depth),
        (5, 0, 0, 5),
        "{am:?}"
    );
    assert_eq!(am.progress, 0);
    assert_eq!(sink(&s, "stdout").progress, 6);
    // commits wait: nothing is delivered to every durable sink yet
    assert_eq!(fan.delivered_upto(), 0);
    let lines = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
    assert_eq!(lines.lines().count(), 5, "{lines}");

    // it answers: 503 once (retried with backoff), then 200; progress catches up
    server.answer();
    until(&fan, |f| f.delivered_upto() == 6).await;
    let s = fan.stats();
    let am = sink(&s, "alertmanager");
    assert_eq!(
        (am.queued, am.delivered, am.dropped, am.depth),
        (5, 5, 0, 0),
        "{am:?}"
    );
    assert!(am.retried >= 1, "{am:?}");
    let mut got = BTreeSet::new();
    got.extend(clients(&first));
    while let Ok(body) = server.requests.try_recv() {
        got.extend(clients(&body));
    }
    let wanted: BTreeSet<String> = (0..5).map(|i| format!("203.0.113.{i}")).collect();
    assert_eq!(got, wanted, "nothing lost");
    let mut fan = fan;
    fan.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_progress_stops_before_the_first_drop() {
    let mut server = HeldServer::start(0).await;
    let mut fan = FanOut::new();
    fan.add(
        Box::new(AlertmanagerSink::new(Alertmanager::new(&server.base()))),
        3,
    );
    let fan = tokio::spawn(async move {
        for i in 0..8 {
            fan.send(&[alert(i)]);
        }
        fan
    })
    .await
    .expect("the hand-off ends");
    server
        .requests
        .recv()
        .await
        .expect("a request reaches the server");
    let s = fan.stats();
    let am = sink(&s, "alertmanager");
    // three fit (waiting or in flight), five are dropped
    assert_eq!(
        (am.queued, am.dropped, am.depth, am.progress),
        (3, 5, 3, 0),
        "{am:?}"
    );
    assert_eq!(fan.delivered_upto(), 0);

    server.answer();
    until(&fan, |f| sink(&f.stats(), "alertmanager").delivered == 3).await;
    let mut fan = fan;
    // progress stops before batch 4, the first it dropped from, and stays
    // there: those rows' offsets are never committed, a restart reads them again
    assert_eq!(fan.delivered_upto(), 3);
    fan.send(&[alert(9)]);
    until(&fan, |f| sink(&f.stats(), "alertmanager").delivered == 4).await;
    assert_eq!(fan.delivered_upto(), 3);
    let s = fan.close(Duration::from_secs(5)).await;
    let am = sink(&s, "alertmanager");
    assert_eq!(
        (am.queued, am.delivered, am.dropped, am.depth),
        (4, 4, 5, 0),
        "{am:?}"
    );
}

#[tokio::test]
async fn with_no_durable_sink_progress_follows_the_hand_off() {
    let mut fan = FanOut::new();
    fan.add(
        Box::new(StdoutSink::to(Box::new(Lines::default()), Format::Json)),
        1,
    );
    fan.send(&[alert(1)]);
    fan.send(&[alert(2)]);
    assert_eq!(fan.delivered_upto(), 2);
    let s = fan.close(Duration::from_secs(5)).await;
    let out = sink(&s, "stdout");
    assert_eq!(out.queued + out.dropped, 2, "{out:?}");
}
