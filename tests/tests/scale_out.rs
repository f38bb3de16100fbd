//! The scaled-out form on the real Kafka of the local stack (issue 18):
//! two repartitioning instances (`engine shuffle`) and three evaluating
//! engines (`engine evaluate`) on a recorded attack capture produced into
//! OTLP topics find the same alerts and KPI values as one engine's replay of
//! the same capture; and they still do when one evaluating engine is killed
//! in the middle (`kill -9`) and the others take its partitions over; and a
//! second shuffle started under the same `--id` fences the first off.
//!
//! The capture is the real shop's brute force (`rules/captures/recorded/
//! brute_force.jsonl.zst`), its messages produced round-robin into three
//! partitions of each OTLP topic of the run's own, before the stages start
//! (`--start-at earliest`). The rule pack is the whole of `rules/`, so
//! every keyed topic of the plan and the global one are in use. Each stage's
//! keyed topics carry a prefix of the run's own.
//!
//! What is compared: alerts as a set of (rule, entity, window, state,
//! value), and KPI values by (KPI, window, dimensions). An evaluating engine
//! killed before it commits leaves windows it had evaluated to the engine
//! that takes its partitions over, which evaluates them again: the same
//! outputs, printed twice (ARCHITECTURE.md, "Scale-out"); the sets hold them
//! once. Nothing may be missing and nothing may differ, with two
//! exceptions that are the live forms' and not the scale-out's: approximate
//! percentiles (a t-digest depends on the order of its rows), and KPIs that
//! read a rollup, which the live forms also give at the newest window once
//! the wall clock moves event time past the capture (it must equal the
//! replay's last value).
//!
//! Run: `cargo test -p e2e --test scale_out` (stack up: kafka).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::engine::Engine;
use e2e::faults::{AlertLine, KpiKey, outputs};
use e2e::scale::{Setup, repo, rules};

/// Partitions of each keyed topic.
const KEYED_PARTITIONS: u32 = 4;

fn capture() -> PathBuf {
    repo("rules/captures/recorded/brute_force.jsonl.zst")
}

/// An evaluating engine of the run's group; quiet for 20 s, event time
/// moves to the wall clock and every window closes.
fn evaluate(setup: &Setup) -> (Engine, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    setup.evaluate("evaluate", &["--idle", "20s"])
}

/// What one engine's replay of the capture gives: alerts, and KPI values.
fn replay() -> (BTreeSet<AlertLine>, BTreeMap<KpiKey, Option<f64>>) {
    let run = |kpis: bool| {
        let mut cmd = std::process::Command::new(e2e::workspace_binary("engine"));
        cmd.arg("replay")
            .arg(capture())
            .args(["--rules", &rules(), "--format", "json"]);
        if kpis {
            cmd.arg("--kpis");
        }
        let out = cmd.output().expect("run engine replay");
        assert!(
            out.status.success(),
            "engine replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (alerts, _) = outputs(&run(false));
    let (_, kpis) = outputs(&run(true));
    (alerts.into_iter().collect(), kpis.into_iter().collect())
}

/// Outputs gathered from several engines' stdout.
#[derive(Default)]
struct Gathered {
    lines: Vec<String>,
    alerts: BTreeSet<AlertLine>,
    kpis: BTreeMap<KpiKey, Vec<Option<f64>>>,
}

impl Gathered {
    fn take(&mut self, outs: &[&mpsc::Receiver<String>]) -> bool {
        let mut any = false;
        for out in outs {
            while let Ok(line) = out.try_recv() {
                self.add(line);
                any = true;
            }
        }
        any
    }

    fn add(&mut self, line: String) {
        let (alerts, kpis) = outputs(std::slice::from_ref(&line));
        self.alerts.extend(alerts);
        for (k, v) in kpis {
            self.kpis.entry(k).or_default().push(v);
        }
        self.lines.push(line);
    }

    fn covers(&self, alerts: &BTreeSet<AlertLine>) -> bool {
        alerts.is_subset(&self.alerts)
    }
}

/// Adds to `got` what the engines print until, with it, every alert and
/// every KPI key the replay gave is there (or `limit`), then for 25 s more:
/// outputs that come later are extra.
fn gather(
    mut got: Gathered,
    outs: &[&mpsc::Receiver<String>],
    alerts: &BTreeSet<AlertLine>,
    kpis: &BTreeMap<KpiKey, Option<f64>>,
    limit: Duration,
) -> Gathered {
    let started = Instant::now();
    while started.elapsed() < limit
        && !(got.covers(alerts) && kpis.keys().all(|k| got.kpis.contains_key(k)))
    {
        got.take(outs);
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(25) {
        if got.take(outs) {
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    got
}

/// Waits until each evaluating engine holds partitions, every one of the
/// `partitions` keyed partitions is held, and nothing has changed hands
/// for 10 s, so that no partition changes hands once rows flow; their
/// stderr lines so far. The assignment is incremental (cooperative): an
/// "assigned" line adds partitions, a "revoked" line takes some away.
fn wait_until_assigned(errs: &[&mpsc::Receiver<String>], partitions: usize) -> Vec<String> {
    let mut logs: Vec<Vec<String>> = vec![Vec::new(); errs.len()];
    let mut held: Vec<BTreeSet<String>> = vec![BTreeSet::new(); errs.len()];
    let mut changed = Instant::now();
    let started = Instant::now();
    loop {
        for ((log, err), held) in logs.iter_mut().zip(errs).zip(held.iter_mut()) {
            for line in err.try_iter() {
                let listed = |prefix: &str| {
                    line.strip_prefix(prefix)
                        .map(|rest| {
                            rest.split_whitespace()
                                .filter(|p| *p != "nothing")
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                };
                for p in listed("evaluate: assigned ") {
                    held.insert(p);
                    changed = Instant::now();
                }
                for p in listed("evaluate: revoked ") {
                    held.remove(&p);
                    changed = Instant::now();
                }
                log.push(line);
            }
        }
        let all: BTreeSet<&String> = held.iter().flatten().collect();
        if held.iter().all(|h| !h.is_empty())
            && all.len() == partitions
            && changed.elapsed() > Duration::from_secs(10)
        {
            return logs.concat();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the evaluating engines did not settle on their partitions in 3 minutes: {held:#?}\n{logs:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The comparison, with what is missing and what is extra in the message.
fn compare(
    got: &Gathered,
    alerts: &BTreeSet<AlertLine>,
    kpis: &BTreeMap<KpiKey, Option<f64>>,
    stderr: &[String],
    handed_over: bool,
) {
    let missing: Vec<&AlertLine> = alerts.difference(&got.alerts).collect();
    let extra: Vec<&AlertLine> = got.alerts.difference(alerts).collect();
    // KPI values: every value both give must be equal, except the
    // approximate percentiles (a t-digest's result depends on the order its
    // rows come in, which differs between one engine and several).
    let approximate =
        |k: &KpiKey| k.0.contains("p50") || k.0.contains("p95") || k.0.contains("p99");
    // A task's kept KPIs (rollup, baseline) live in its evaluator: a
    // partition handed over starts them again from the rows read again
    // (ARCHITECTURE.md, "Scale-out"), so after a handover the values that
    // read them (the SLO budgets) are not the replay's.
    let state_lost = |name: &str| handed_over && name.starts_with("slo.budget_remaining");
    // A KPI that reads a rollup (the SLO budgets: 30 days of hourly sums)
    // has a value in every window, rows or not. The replay ends at the
    // capture's last row; the live forms move event time on to the wall
    // clock once the input is quiet, and give such a KPI at the newest
    // window only. So a value dated after the capture stands for the
    // replay's last value of the same KPI and dimensions, which it must equal.
    let capture_end = kpis.keys().map(|k| k.2).max().unwrap_or(i64::MAX);
    let series = |k: &KpiKey| (k.0.clone(), k.3.clone());
    let mut carried: BTreeMap<(String, String), Vec<Option<f64>>> = BTreeMap::new();
    let mut kpi_diff = Vec::new();
    for (k, values) in &got.kpis {
        if k.1 >= capture_end {
            carried.entry(series(k)).or_default().extend(values);
        } else if !kpis.contains_key(k) {
            kpi_diff.push(format!("extra {k:?} = {values:?}"));
        }
    }
    let last_of_series: BTreeMap<(String, String), &KpiKey> =
        kpis.keys().map(|k| (series(k), k)).collect();
    for (s, values) in &carried {
        if state_lost(&s.0) {
            continue;
        }
        match last_of_series.get(s) {
            Some(k) if values.iter().all(|v| v == &kpis[*k]) => {}
            Some(k) => kpi_diff.push(format!(
                "{s:?} after the capture: {values:?}, the replay's last ({k:?}) {:?}",
                kpis[*k]
            )),
            None => kpi_diff.push(format!("{s:?} after the capture only: {values:?}")),
        }
    }
    for (k, v) in kpis {
        match got.kpis.get(k) {
            None if last_of_series.get(&series(k)) == Some(&k)
                && carried.contains_key(&series(k)) => {}
            None => kpi_diff.push(format!("missing {k:?} = {v:?}")),
            Some(values)
                if !approximate(k) && !state_lost(&k.0) && values.iter().any(|x| x != v) =>
            {
                kpi_diff.push(format!("{k:?}: replay {v:?}, scaled out {values:?}"))
            }
            Some(_) => {}
        }
    }
    if !(missing.is_empty() && extra.is_empty() && kpi_diff.is_empty()) {
        let stderr: Vec<&String> = stderr
            .iter()
            .filter(|l| l.contains("evaluate") || l.contains("shuffle"))
            .collect();
        panic!(
            "the scaled-out form differs from the replay: {} alerts missing {missing:#?}\n{} extra {extra:#?}\nKPI differences ({}): {:#?}\nstages' progress: {stderr:#?}",
            missing.len(),
            extra.len(),
            kpi_diff.len(),
            &kpi_diff[..kpi_diff.len().min(30)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shufflers_and_three_engines_find_what_one_replay_finds() {
    let (alerts, kpis) = replay();
    assert!(
        alerts
            .iter()
            .any(|a| a.rule_id == "auth.brute_force.single_account"),
        "the replay finds the brute force: {alerts:#?}"
    );
    assert!(!kpis.is_empty(), "the replay gives KPI values");
    let setup = Setup::new("scale", KEYED_PARTITIONS).await;
    let produced = setup.produce(&capture(), 1).await;
    assert!(produced > 100, "{produced} messages produced");

    // the evaluating engines first, each with its partitions, so that no
    // partition changes hands once rows flow (that is the other test)
    setup.create_keyed_topics().await;
    let engines = [evaluate(&setup), evaluate(&setup), evaluate(&setup)];
    let errs: Vec<&mpsc::Receiver<String>> = engines.iter().map(|(_, err, _)| err).collect();
    let keyed = 5 * KEYED_PARTITIONS as usize + 1; // five keyed topics and the global one
    let mut assigned = wait_until_assigned(&errs, keyed);
    let shufflers = [setup.shuffle("a"), setup.shuffle("b")];
    let outs: Vec<&mpsc::Receiver<String>> = engines.iter().map(|(_, _, out)| out).collect();
    let got = gather(
        Gathered::default(),
        &outs,
        &alerts,
        &kpis,
        Duration::from_secs(300),
    );
    let errs: Vec<&mpsc::Receiver<String>> = engines
        .iter()
        .map(|(_, err, _)| err)
        .chain(shufflers.iter().map(|(_, err)| err))
        .collect();
    assigned.extend(errs.iter().flat_map(|e| e.try_iter().collect::<Vec<_>>()));
    compare(&got, &alerts, &kpis, &assigned, false);
    no_abort_stalled(&assigned);
    let resumed = assigned
        .iter()
        .filter(|l| l.contains("resumes from"))
        .count();
    assert_eq!(resumed, 0, "a partition changed hands: {assigned:#?}");
    eprintln!(
        "scaled out: {} output lines, {} alerts as in the replay, {} KPI keys",
        got.lines.len(),
        alerts.len(),
        kpis.len()
    );
    drop(engines);
    drop(shufflers);
    setup.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_run_hands_its_partitions_over_and_nothing_is_lost() {
    let (alerts, kpis) = replay();
    let setup = Setup::new("scale_kill", KEYED_PARTITIONS).await;
    setup.produce(&capture(), 1).await;
    // the evaluating engines settle on their partitions first: the handover
    // under test is the kill's, not the group's first rounds
    setup.create_keyed_topics().await;
    let mut engines = vec![evaluate(&setup), evaluate(&setup), evaluate(&setup)];
    let errs: Vec<&mpsc::Receiver<String>> = engines.iter().map(|(_, err, _)| err).collect();
    wait_until_assigned(&errs, 5 * KEYED_PARTITIONS as usize + 1);
    let shufflers = [setup.shuffle("a"), setup.shuffle("b")];
    // each engine holds partitions: the first to print an alert or a KPI
    // value is killed (-9) there, in the middle of its work
    let mut first = Gathered::default();
    let started = Instant::now();
    let victim = 'found: loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no evaluating engine printed an output in 5 minutes"
        );
        for (i, (_, _, out)) in engines.iter().enumerate() {
            if let Ok(line) = out.try_recv() {
                let (a, k) = outputs(std::slice::from_ref(&line));
                let printed = !(a.is_empty() && k.is_empty());
                first.add(line);
                if printed {
                    break 'found i;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut killed, killed_err, killed_out) = engines.remove(victim);
    let _ = killed.0.kill();
    let _ = killed.0.wait();
    // everything it printed before it died (its reader ends at the pipe's
    // end): what it evaluated and committed is not evaluated again
    for line in killed_out.iter() {
        first.add(line);
    }
    let outs: Vec<&mpsc::Receiver<String>> = engines.iter().map(|(_, _, out)| out).collect();
    let got = gather(first, &outs, &alerts, &kpis, Duration::from_secs(300));
    let stderr: Vec<String> = [&killed_err]
        .into_iter()
        .chain(engines.iter().map(|(_, err, _)| err))
        .chain(shufflers.iter().map(|(_, err)| err))
        .flat_map(|e| e.try_iter().collect::<Vec<_>>())
        .collect();
    let handed_over = stderr.iter().filter(|l| l.contains("resumes from")).count();
    compare(&got, &alerts, &kpis, &stderr, true);
    no_abort_stalled(&stderr);
    eprintln!(
        "after the kill: {} output lines, {} alerts as in the replay; {handed_over} partitions resumed from a committed point",
        got.lines.len(),
        alerts.len()
    );
    drop(engines);
    drop(shufflers);
    setup.delete().await;
}

/// A shuffle's abort (a rebalance of the shufflers' group cuts a
/// transaction short) serves its purged records' reports first: an abort
/// that waits out its timeout instead holds every record back for 30 s,
/// longer than the evaluating engines' `--idle`, which then take the
/// sources for idle and judge what follows late.
fn no_abort_stalled(stderr: &[String]) {
    let stalled: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("the abort failed"))
        .collect();
    assert!(
        stalled.is_empty(),
        "a shuffle's abort failed and held its records back: {stalled:#?}"
    );
}

/// Waits for a line of `err` that contains `text`; the lines read.
fn wait_for_line(err: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if let Ok(line) = err.recv_timeout(Duration::from_millis(200)) {
            let found = line.contains(text);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
    panic!("no line with {text:?} in 2 minutes: {seen:#?}");
}

/// Two repartitioning instances started under one `--id` in one group: the
/// second fences the first off (Kafka transactions), and the first, at its
/// next transaction, exits non-zero and says why rather than going on with
/// a producer the broker no longer accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shuffle_under_the_same_id_fences_the_first_off() {
    let setup = Setup::new("scale_fence", KEYED_PARTITIONS).await;
    let (mut first, first_err) = setup.shuffle("a");
    wait_for_line(&first_err, "shuffle: assigned");
    setup.produce(&capture(), 1).await;
    let (second, second_err) = setup.shuffle("a");
    wait_for_line(&second_err, "shuffle: assigned");
    // more input: whichever of the two reads it, the first begins a
    // transaction on some partition sooner or later and learns it is fenced
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.0.try_wait().expect("wait for the first shuffle") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the fenced shuffle still runs after 3 minutes: {:#?}",
            first_err.try_iter().collect::<Vec<_>>()
        );
        setup.produce(&capture(), 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let said: Vec<String> = first_err.try_iter().collect();
    assert!(
        !status.success(),
        "the fenced shuffle exits non-zero: {said:#?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("fenced off") && l.contains("give every instance")),
        "the fenced shuffle says why: {said:#?}"
    );
    drop(second);
    setup.delete().await;
}
