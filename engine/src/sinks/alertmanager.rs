//! Alerts to Prometheus Alertmanager's v2 API (`POST /api/v2/alerts`).
//!
//! Labels: `alertname` (the rule id), `severity`, `rule_id`, `incident_id`
//! (the alert's identity, [`Alert::identity`]: the firing and the resolved
//! alert of one incident have the same labels, and a re-read after a restart
//! updates the same Alertmanager alert), and the entity's attributes with `.`
//! as `_`. Annotations: `summary`, `window_start`, `window_end`, `value`,
//! `tags`, `trace_ids`, `rule_version`, `incident_start`, and `first_seen` and
//! `detected_at` when known.
//!
//! A firing alert is sent with `endsAt` [`EXPIRY_RESENDS`] re-sends ahead, and
//! [`AlertmanagerSink`] sends every open incident's firing alert again every
//! [`RESEND_EVERY`], as Prometheus does: Alertmanager keeps it active while the
//! incident is open however its `resolve_timeout` is set, and lets it expire a
//! few minutes after the engine stopped sending. A resolved alert is sent with
//! `endsAt` at its window end, or now if that is later than now (at shutdown the
//! last windows end in the future, and Alertmanager would keep such an alert
//! active until then).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Sink, SinkError, Takes, http_outcome};
use crate::alerts::{Alert, State, rfc3339};
use crate::evaluator::Output;

/// How often the firing alert of an open incident is sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(60);
/// A firing alert's `endsAt` is this many re-sends ahead of the time it is sent.
pub const EXPIRY_RESENDS: u32 = 4;
/// One try's timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The body Alertmanager expects for `alerts`, as sent at `now_ns`; firing
/// alerts expire `expiry` later unless sent again.
pub fn payload_at(alerts: &[Alert], now_ns: i64, expiry: Duration) -> Value {
    let expiry_ns = i64::try_from(expiry.as_nanos()).unwrap_or(i64::MAX);
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let mut labels = serde_json::Map::new();
                labels.insert("alertname".into(), json!(a.rule_id));
                labels.insert("rule_id".into(), json!(a.rule_id));
                labels.insert("severity".into(), json!(a.severity));
                labels.insert("incident_id".into(), json!(a.identity()));
                for (k, v) in &a.entity {
                    labels.insert(k.replace('.', "_"), json!(v));
                }
                let ends_at = match a.state {
                    State::Firing => rfc3339(now_ns.saturating_add(expiry_ns)),
                    State::Resolved => rfc3339(a.at_ns.min(now_ns)),
                };
                let mut annotations = json!({
                    "summary": a.summary,
                    "window_start": a.window_start,
                    "window_end": a.window_end,
                    "value": a.value.to_string(),
                    "tags": a.tags.join(","),
                    "trace_ids": a.trace_ids.join(","),
                    "rule_version": a.rule_version,
                    "incident_start": a.incident_start(),
                });
                // the detection delay's two ends, when known
                for (name, ns) in [
                    ("first_seen", a.first_seen_ns),
                    ("detected_at", a.detected_at_ns),
                ] {
                    if let Some(ns) = ns {
                        annotations[name] = json!(rfc3339(ns));
                    }
                }
                json!({
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": a.window_start,
                    "endsAt": ends_at,
                })
            })
            .collect(),
    )
}

/// The body for `alerts` sent now.
pub fn payload(alerts: &[Alert]) -> Value {
    payload_at(alerts, now_ns(), RESEND_EVERY * EXPIRY_RESENDS)
}

/// One Alertmanager's alerts endpoint.
#[derive(Clone)]
pub struct Alertmanager {
    url: String,
    client: reqwest::Client,
    attempts: u32,
}

/// Alertmanager did not take the alerts.
#[derive(Debug, thiserror::Error)]
#[error("alertmanager at {url}: {message} (after {attempts} attempts)")]
pub struct SendError {
    pub url: String,
    pub message: String,
    pub attempts: u32,
}

impl Alertmanager {
    /// `base` is Alertmanager's address, e.g. `http://127.0.0.1:19093`.
    pub fn new(base: &str) -> Self {
        Self::with_timeout(base, TIMEOUT)
    }

    /// The same, with one try's timeout.
    pub fn with_timeout(base: &str, timeout: Duration) -> Self {
        Alertmanager {
            url: format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            attempts: 5,
        }
    }

    /// The URL alerts are posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts the alerts once.
    pub async fn post(&self, alerts: &[Alert]) -> Result<(), SinkError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .post(&self.url)
            .json(&payload(alerts))
            .send()
            .await;
        http_outcome("alertmanager", &self.url, sent).await
    }

    /// Posts the alerts, retrying with backoff; returns once Alertmanager
    /// accepted them, or the last error. The live engine does not use this:
    /// its [`AlertmanagerSink`] retries in its own task.
    pub async fn send(&self, alerts: &[Alert]) -> Result<(), SendError> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            match self.post(alerts).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = e.message;
                    if e.permanent {
                        break;
                    }
                }
            }
        }
        Err(SendError {
            url: self.url.clone(),
            message: last,
            attempts: self.attempts,
        })
    }
}

/// Alertmanager as a [`Sink`]: one try per delivery (the fan-out retries),
/// and the firing alerts of open incidents sent again every
/// [`RESEND_EVERY`].
pub struct AlertmanagerSink {
    am: Alertmanager,
    /// the last firing alert delivered of each open incident, by (rule, entity)
    open: BTreeMap<(String, BTreeMap<String, String>), Alert>,
    resend_every: Duration,
    last_resend: Instant,
}

impl AlertmanagerSink {
    pub fn new(am: Alertmanager) -> Self {
        Self::with_resend(am, RESEND_EVERY)
    }

    /// The same, re-sending open incidents every `every`.
    pub fn with_resend(am: Alertmanager, every: Duration) -> Self {
        AlertmanagerSink {
            am,
            open: BTreeMap::new(),
            resend_every: every,
            last_resend: Instant::now(),
        }
    }

    /// The open incidents whose firing alert is re-sent.
    pub fn open_incidents(&self) -> usize {
        self.open.len()
    }
}

#[async_trait]
impl Sink for AlertmanagerSink {
    fn name(&self) -> &str {
        "alertmanager"
    }

    fn address(&self) -> String {
        self.am.url.clone()
    }

    fn durable(&self) -> bool {
        true
    }

    fn takes(&self) -> Takes {
        Takes::Alerts
    }

    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        let alerts: Vec<Alert> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a.clone()),
                Output::Kpi(_) => None,
            })
            .collect();
        self.am.post(&alerts).await?;
        for a in alerts {
            let key = (a.rule_id.clone(), a.entity.clone());
            match a.state {
                // a notice that belongs to no incident is not kept alive
                State::Firing if a.incident_start_ns.is_some() => {
                    self.open.insert(key, a);
                }
                State::Firing => {}
                State::Resolved => {
                    self.open.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn tick(&mut self) {
        if self.open.is_empty() || self.last_resend.elapsed() < self.resend_every {
            return;
        }
        let alerts: Vec<Alert> = self.open.values().cloned().collect();
        match self.am.post(&alerts).await {
            Ok(()) => self.last_resend = Instant::now(),
            // tried again at the next tick
            Err(e) => {
                tracing::warn!(error = %e, open = alerts.len(), "cannot re-send the open incidents' firing alerts")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_alerts_never_end_in_the_future_and_firing_ones_expire() {
        let mut a = crate::sinks::testing::sample_alert(State::Resolved);
        let now = a.at_ns - 30_000_000_000;
        let body = payload_at(&[a.clone()], now, Duration::from_secs(240));
        assert_eq!(body[0]["endsAt"], json!(rfc3339(now)), "{body}");
        a.state = State::Firing;
        let body = payload_at(&[a.clone()], now, Duration::from_secs(240));
        assert_eq!(body[0]["endsAt"], json!(rfc3339(now + 240_000_000_000)));
        assert_eq!(body[0]["labels"]["incident_id"], json!(a.identity()));
        assert_eq!(body[0]["labels"]["client_address"], json!("203.0.113.9"));
    }
}
