//! Sends plans to the gateway: one task per actor (its cookie jar, its steps
//! in order, each at its time or as soon as the previous answer is in), or one
//! task per step for a parallel actor. Every request carries the actor's
//! address in `X-Forwarded-For`, which the gateway believes from loopback.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::plan::{Plan, Step};

/// Requests in flight at most, over all actors.
const MAX_IN_FLIGHT: usize = 128;

/// What one plan's requests got.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Requests answered, by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, timeout).
    pub failed: u64,
    /// Requests skipped: the run's request budget was spent, or its time was up.
    pub skipped: u64,
    /// When the first own (not context) request went out, and the last own answer came.
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    /// Own requests sent.
    pub own: u64,
}

impl Tally {
    pub fn sent(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failed
    }

    /// `200×12 401×3`, for progress lines.
    pub fn statuses_line(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if self.failed > 0 {
            parts.push(format!("no answer×{}", self.failed));
        }
        parts.join(" ")
    }
}

/// A run in progress: its HTTP client, budget and tallies.
pub struct Runner {
    http: reqwest::Client,
    gateway: String,
    start: Instant,
    deadline: Instant,
    budget: AtomicU64,
    in_flight: Semaphore,
    tallies: Mutex<Vec<Tally>>,
}

/// The gateway did not answer its health check.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the shop's gateway at {url} ({cause}); start the services first: \
     `compose/local/stack up`, then `shop serve <service>` for payments, catalog, auth, cart, \
     checkout and gateway (see shop/README.md), or pass --gateway"
)]
pub struct Unreachable {
    pub url: String,
    pub cause: String,
}

/// Checks that the gateway answers `GET /healthz`.
pub async fn check_gateway(http: &reqwest::Client, gateway: &str) -> Result<(), Unreachable> {
    let url = format!("{gateway}/healthz");
    let unreachable = |cause: String| Unreachable {
        url: gateway.to_string(),
        cause,
    };
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!(
            "GET /healthz answered {}",
            resp.status()
        )));
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The HTTP client every actor shares (cookies are kept per actor, by hand).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
}

impl Runner {
    /// A runner that stops sending after `seconds` or `max_requests`.
    pub fn new(
        http: reqwest::Client,
        gateway: &str,
        plans: usize,
        seconds: f64,
        max_requests: u64,
    ) -> Arc<Runner> {
        let start = Instant::now();
        Arc::new(Runner {
            http,
            gateway: gateway.trim_end_matches('/').to_string(),
            start,
            deadline: start + Duration::from_secs_f64(seconds.max(0.0)),
            budget: AtomicU64::new(max_requests),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            tallies: Mutex::new(vec![Tally::default(); plans]),
        })
    }

    /// The tallies so far, one per plan.
    pub fn tallies(&self) -> Vec<Tally> {
        self.tallies.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn tally(&self, plan: usize, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut t) = self.tallies.lock()
            && let Some(t) = t.get_mut(plan)
        {
            f(t);
        }
    }

    /// Sends every plan; returns when every step is answered or skipped.
    pub async fn run(self: &Arc<Self>, plans: Vec<Plan>) {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, plan) in plans.into_iter().enumerate() {
            let plan = Arc::new(plan);
            for (actor, a) in plan.actors.iter().enumerate() {
                let steps: Vec<Step> = plan
                    .steps
                    .iter()
                    .filter(|s| s.actor == actor)
                    .cloned()
                    .collect();
                if steps.is_empty() {
                    continue;
                }
                let runner = self.clone();
                let plan = plan.clone();
                if a.parallel {
                    tasks.spawn(async move { runner.bot(index, &plan, steps).await });
                } else {
                    tasks.spawn(async move { runner.visitor(index, &plan, steps).await });
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// A cookie-keeping client: one step after another.
    async fn visitor(&self, index: usize, plan: &Plan, steps: Vec<Step>) {
        let mut cookie: Option<String> = None;
        for step in steps {
            if !self.wait_for(step.at).await {
                self.tally(index, |t| t.skipped += 1);
                continue;
            }
            let set = self.send(index, plan, &step, cookie.as_deref()).await;
            if set.is_some() {
                cookie = set;
            }
        }
    }

    /// A parallel client: every step on its own, at its time, without cookies.
    async fn bot(self: Arc<Self>, index: usize, plan: &Arc<Plan>, steps: Vec<Step>) {
        let mut sent = tokio::task::JoinSet::new();
        for step in steps {
            if !self.wait_for(step.at).await {
                self.tally(index, |t| t.skipped += 1);
                continue;
            }
            let runner = self.clone();
            let plan = plan.clone();
            sent.spawn(async move {
                runner.send(index, &plan, &step, None).await;
            });
        }
        while sent.join_next().await.is_some() {}
    }

    /// Sleeps until `at` seconds into the run; false when the run's time is up.
    async fn wait_for(&self, at: f64) -> bool {
        let when = self.start + Duration::from_secs_f64(at.max(0.0));
        if when >= self.deadline {
            return false;
        }
        tokio::time::sleep_until(when).await;
        true
    }

    /// Sends one step; returns the session cookie the gateway set, if any.
    async fn send(
        &self,
        index: usize,
        plan: &Plan,
        step: &Step,
        cookie: Option<&str>,
    ) -> Option<String> {
        let spent = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
        if spent.is_err() || Instant::now() >= self.deadline {
            self.tally(index, |t| t.skipped += 1);
            return None;
        }
        let Ok(_permit) = self.in_flight.acquire().await else {
            return None;
        };
        let actor = &plan.actors[step.actor];
        let url = format!("{}{}", self.gateway, step.action.target());
        let mut req = if step.action.is_post() {
            self.http.post(&url)
        } else {
            self.http.get(&url)
        };
        req = req
            .header("x-forwarded-for", &actor.address)
            .header(USER_AGENT, &actor.agent);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        if let Some(body) = step.action.body() {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let sent_at = Utc::now();
        let answer = req.send().await;
        let done_at = Utc::now();
        let own = !step.context;
        let mut set_cookie = None;
        match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                set_cookie = resp
                    .headers()
                    .get(SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(str::to_owned);
                // Read the body so the connection goes back to the pool.
                let _ = resp.bytes().await;
                self.tally(index, |t| {
                    *t.statuses.entry(status).or_default() += 1;
                });
            }
            Err(_) => self.tally(index, |t| t.failed += 1),
        }
        if own {
            self.tally(index, |t| {
                t.own += 1;
                t.first = Some(t.first.map_or(sent_at, |f| f.min(sent_at)));
                t.last = Some(t.last.map_or(done_at, |l| l.max(done_at)));
            });
        }
        set_cookie
    }
}
