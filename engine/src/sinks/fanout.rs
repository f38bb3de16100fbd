//! The fan-out: one bounded queue and one tokio task per sink, between
//! evaluation and the sinks.
//!
//! [`FanOut::send`] never waits. It gives the outputs of one evaluation a
//! sequence number and puts, on each sink's queue, the outputs that sink takes.
//! A queue holds at most its capacity of outputs not yet delivered (those
//! waiting and those being delivered); what does not fit is dropped, counted,
//! and logged once per overflow.
//!
//! Each sink's task takes up to [`MAX_BATCH`] outputs at a time and delivers
//! them; a delivery that fails is tried again with backoff (from
//! [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`]) until it succeeds, unless
//! the sink calls the failure permanent (then the outputs are dropped).
//!
//! # Progress
//!
//! A sink's progress is the highest sequence number whose outputs it has all
//! delivered. [`FanOut::delivered_upto`] is the lowest progress of the durable
//! sinks, and it is what Kafka offset commits wait on: an offset is committed
//! once the outputs its rows produced are in every durable sink.
//!
//! **A sink that dropped outputs stops advancing its progress** just before
//! the first batch it dropped from, for the rest of the run: the offsets of
//! rows evaluated since then are never committed, so after a restart they are
//! read again and the dropped outputs are made and delivered again
//! (at-least-once; sinks update by the alert's identity instead of
//! duplicating). The task keeps delivering what it did queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Sink, SinkStats, Takes};
use crate::evaluator::Output;

/// Outputs delivered in one call to [`Sink::deliver`] at most.
pub const MAX_BATCH: usize = 500;
/// The wait before the first retry of a failed delivery.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two tries of one delivery.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle sink's [`Sink::tick`] runs.
pub const TICK: Duration = Duration::from_secs(1);
/// The queue's capacity in outputs when none is given.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Hands outputs to every sink's task; see the module documentation.
pub struct FanOut {
    slots: Vec<Slot>,
    last_seq: u64,
}

struct Slot {
    name: String,
    durable: bool,
    takes: Takes,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What a sink's task and the fan-out share.
struct Shared {
    name: String,
    address: String,
    capacity: usize,
    queue: Mutex<Queue>,
    wake: Notify,
    queued: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

struct Queue {
    /// outputs waiting, each with the sequence number of its batch
    waiting: VecDeque<(u64, Output)>,
    /// outputs the task is delivering now
    in_flight: usize,
    /// the highest sequence number handed to this sink
    handed: u64,
    /// the highest sequence number whose outputs are all delivered
    progress: u64,
    /// progress never passes this: the last sequence before the first drop
    limit: u64,
    /// whether the current overflow was logged
    overflow_logged: bool,
    /// no more outputs will come: the task ends once the queue is empty
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queue {
    /// Everything handed before the first waiting output is delivered.
    fn settle(&mut self) {
        let done = match self.waiting.front() {
            Some((seq, _)) => seq.saturating_sub(1),
            None if self.in_flight == 0 => self.handed,
            None => return,
        };
        self.progress = self.progress.max(done.min(self.limit));
    }
}

impl Default for FanOut {
    fn default() -> Self {
        Self::new()
    }
}

impl FanOut {
    pub fn new() -> Self {
        FanOut {
            slots: Vec::new(),
            last_seq: 0,
        }
    }

    /// Starts `sink`'s task on the current tokio runtime, behind a queue of
    /// `capacity` outputs.
    pub fn add(&mut self, sink: Box<dyn Sink>, capacity: usize) {
        let shared = Arc::new(Shared {
            name: sink.name().to_string(),
            address: sink.address(),
            capacity: capacity.max(1),
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                in_flight: 0,
                handed: self.last_seq,
                progress: self.last_seq,
                limit: u64::MAX,
                overflow_logged: false,
                closed: false,
            }),
            wake: Notify::new(),
            queued: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let slot = Slot {
            name: shared.name.clone(),
            durable: sink.durable(),
            takes: sink.takes(),
            task: tokio::spawn(work(sink, shared.clone())),
            shared,
        };
        self.slots.push(slot);
    }

    /// The sinks' names, in the order they were added.
    pub fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Hands the outputs of one evaluation to every sink without waiting, and
    /// returns their sequence number. A sink whose queue is full drops what
    /// does not fit (counted; logged once per overflow) and stops advancing
    /// its progress.
    pub fn send(&mut self, outputs: &[Output]) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        for slot in &self.slots {
            let shared = &slot.shared;
            let mut q = shared.lock();
            let room = shared
                .capacity
                .saturating_sub(q.waiting.len() + q.in_flight);
            let mut taken = 0usize;
            let mut dropped = 0u64;
            for o in outputs.iter().filter(|o| slot.takes.takes(o)) {
                if taken < room {
                    q.waiting.push_back((seq, o.clone()));
                    taken += 1;
                } else {
                    dropped += 1;
                }
            }
            q.handed = seq;
            shared.queued.fetch_add(taken as u64, Ordering::Relaxed);
            if dropped > 0 {
                shared.dropped.fetch_add(dropped, Ordering::Relaxed);
                q.limit = q.limit.min(seq - 1);
                if !q.overflow_logged {
                    q.overflow_logged = true;
                    tracing::error!(
                        sink = %shared.name,
                        address = %shared.address,
                        capacity = shared.capacity,
                        dropped,
                        "the sink's queue is full: outputs dropped (counted in otelguard_sink_dropped_total); \
                         its delivery progress stops here, so Kafka offsets are not committed past this point \
                         and a restart reads these rows again"
                    );
                }
            }
            q.settle();
            drop(q);
            shared.wake.notify_one();
        }
        seq
    }

    /// The sequence number of the last batch handed in (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The highest sequence number whose outputs every durable sink has
    /// delivered: Kafka offsets wait on it. With no durable sink, the last
    /// sequence handed in.
    pub fn delivered_upto(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.durable)
            .map(|s| s.shared.lock().progress)
            .min()
            .unwrap_or(self.last_seq)
    }

    /// Each sink's counters, in the order the sinks were added.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.slots.iter().map(stats).collect()
    }

    /// No more outputs: waits until every sink has delivered its queue, or
    /// until `grace` has passed (then the sinks still busy are stopped, and
    /// what they held is not delivered: its offsets were not committed).
    /// Returns the final counters.
    /// [`FanOut::delivered_upto`] then tells what the sinks took in the end.
    pub async fn close(&mut self, grace: Duration) -> Vec<SinkStats> {
        for slot in &self.slots {
            slot.shared.lock().closed = true;
            slot.shared.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in &mut self.slots {
            if tokio::time::timeout_at(deadline, &mut slot.task)
                .await
                .is_err()
            {
                slot.task.abort();
                let s = stats(slot);
                tracing::error!(
                    sink = %slot.name,
                    address = %slot.shared.address,
                    undelivered = s.depth,
                    "the sink did not deliver its queue before the end; those outputs are lost to it \
                     (Kafka offsets were not committed past them)"
                );
            }
            out.push(stats(slot));
        }
        out
    }
}

fn stats(slot: &Slot) -> SinkStats {
    let s = &slot.shared;
    let q = s.lock();
    SinkStats {
        sink: slot.name.clone(),
        durable: slot.durable,
        queued: s.queued.load(Ordering::Relaxed),
        delivered: s.delivered.load(Ordering::Relaxed),
        retried: s.retried.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
        depth: (q.waiting.len() + q.in_flight) as u64,
        progress: q.progress,
    }
}

/// A sink's task: takes what is queued, delivers it, retries with backoff.
async fn work(mut sink: Box<dyn Sink>, shared: Arc<Shared>) {
    let mut last_tick = Instant::now();
    loop {
        if last_tick.elapsed() >= TICK {
            sink.tick().await;
            last_tick = Instant::now();
        }
        let taken: Option<Vec<Output>> = {
            let mut q = shared.lock();
            if q.waiting.is_empty() {
                // handed batches with nothing for this sink are done at once
                q.settle();
                q.overflow_logged = false;
                if q.closed {
                    return;
                }
                None
            } else {
                let n = q.waiting.len().min(MAX_BATCH);
                q.in_flight = n;
                Some(q.waiting.drain(..n).map(|(_, o)| o).collect())
            }
        };
        let Some(batch) = taken else {
            let next_tick = TICK.saturating_sub(last_tick.elapsed());
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(next_tick) => {}
            }
            continue;
        };
        let n = batch.len() as u64;
        let mut wait = FIRST_BACKOFF;
        let mut failures = 0u64;
        let delivered = loop {
            let mut span = crate::telemetry::span("engine.sink.deliver");
            span.text("sink", &shared.name);
            span.int("outputs", n as i64);
            span.int("attempt", failures as i64 + 1);
            let result = sink.deliver(&batch).await;
            if let Err(e) = &result {
                span.fail(&e.to_string());
            }
            drop(span);
            match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::warn!(sink = %shared.name, address = %shared.address, failures, "the sink takes outputs again");
                    }
                    break true;
                }
                Err(e) if e.permanent => {
                    tracing::error!(error = %e, outputs = n, "the sink refused outputs; they are dropped and its progress stops");
                    break false;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(error = %e, outputs = n, "cannot deliver; retrying with backoff (evaluation goes on; Kafka offsets wait)");
                    }
                    failures += 1;
                    shared.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut q = shared.lock();
        q.in_flight = 0;
        if delivered {
            shared.delivered.fetch_add(n, Ordering::Relaxed);
        } else {
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            // the outputs dropped came from batches after the progress so far
            q.limit = q.limit.min(q.progress);
        }
        q.settle();
    }
}

#[cfg(test)]
mod tests;
