//! Incidents to Prometheus Alertmanager's v2 API (`POST /api/v2/alerts`): one
//! Alertmanager alert per incident ([`crate::incidents`]), not per member, so
//! a flood from 300 addresses pages once.
//!
//! Labels, from the incident's lead alert (they never change while the
//! incident lasts): `alertname` (the rule id), `severity`, `rule_id`,
//! `incident_id` (the incident's identity, [`Incident::id`]: the firing and the
//! resolved incident have the same labels, and a re-read after a restart
//! updates the same Alertmanager alert), `maturity` (the rule's), and the
//! lead's entity attributes with `.` as `_`. Annotations: `summary` (starting
//! `[experimental]` for an experimental rule), `window_start`, `window_end`,
//! `value`, `tags`, `trace_ids`, `rule_version`, `incident_start`,
//! `incident_end`, `first_seen` and `detected_at` when known, the incident's
//! `member_count`, `entity_count`, `open_members`, `rules`,
//! `highest_severity` and `members` (the listed ones, one per line, and how
//! many more), and the rule's `maturity`, `runbook` and `false_positives`
//! when its header has them.
//!
//! A firing incident is sent with `endsAt` [`EXPIRY_RESENDS`] re-sends ahead, and
//! [`AlertmanagerSink`] sends every open incident again every
//! [`RESEND_EVERY`], as Prometheus does: Alertmanager keeps it active while the
//! incident is open however its `resolve_timeout` is set, and lets it expire a
//! few minutes after the engine stopped sending. A resolved incident is sent
//! with `endsAt` at its last window end, or now if that is earlier (at shutdown
//! the last windows end in the future, and Alertmanager would keep such an
//! alert active until then).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Sink, SinkError, Takes, http_outcome};
use crate::alerts::{State, rfc3339};
use crate::evaluator::Output;
use crate::incidents::{Correlator, Incident};

/// How often the firing alert of an open incident is sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(60);
/// A firing alert's `endsAt` is this many re-sends ahead of the time it is sent.
pub const EXPIRY_RESENDS: u32 = 4;
/// One try's timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The body Alertmanager expects for `incidents`, as sent at `now_ns`;
/// firing incidents expire `expiry` later unless sent again.
pub fn payload_at(incidents: &[Incident], now_ns: i64, expiry: Duration) -> Value {
    let expiry_ns = i64::try_from(expiry.as_nanos()).unwrap_or(i64::MAX);
    Value::Array(
        incidents
            .iter()
            .map(|inc| {
                let a = &inc.lead;
                let mut labels = serde_json::Map::new();
                labels.insert("alertname".into(), json!(a.rule_id));
                labels.insert("rule_id".into(), json!(a.rule_id));
                labels.insert("severity".into(), json!(a.severity));
                labels.insert("incident_id".into(), json!(inc.id));
                if let Some(notes) = &a.notes {
                    labels.insert("maturity".into(), json!(notes.maturity));
                }
                for (k, v) in &a.entity {
                    labels.insert(k.replace('.', "_"), json!(v));
                }
                let ends_at = match inc.state {
                    State::Firing => rfc3339(now_ns.saturating_add(expiry_ns)),
                    State::Resolved => rfc3339(inc.end_ns.min(now_ns)),
                };
                let mut annotations = json!({
                    "summary": inc.summary(),
                    "window_start": a.window_start,
                    "window_end": a.window_end,
                    "value": a.value.to_string(),
                    "tags": a.tags.join(","),
                    "trace_ids": a.trace_ids.join(","),
                    "rule_version": a.rule_version,
                    "incident_start": rfc3339(inc.start_ns),
                    "incident_end": rfc3339(inc.end_ns),
                    "member_count": inc.member_count.to_string(),
                    "entity_count": inc.entity_count.to_string(),
                    "open_members": inc.open_members.to_string(),
                    "rules": inc.rules.join(","),
                    "highest_severity": inc.highest_severity,
                    "members": inc.member_lines(),
                });
                if let Some(notes) = &a.notes {
                    annotations["maturity"] = json!(notes.maturity);
                    for (name, text) in [
                        ("runbook", &notes.runbook),
                        ("false_positives", &notes.false_positives),
                    ] {
                        if let Some(text) = text {
                            annotations[name] = json!(text.trim());
                        }
                    }
                }
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
                    "startsAt": rfc3339(inc.start_ns),
                    "endsAt": ends_at,
                })
            })
            .collect(),
    )
}

/// The body for `incidents` sent now.
pub fn payload(incidents: &[Incident]) -> Value {
    payload_at(incidents, now_ns(), RESEND_EVERY * EXPIRY_RESENDS)
}

/// One Alertmanager's alerts endpoint.
#[derive(Clone)]
pub struct Alertmanager {
    url: String,
    client: reqwest::Client,
    attempts: u32,
}

/// Alertmanager did not take the incidents.
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

    /// Posts the incidents once.
    pub async fn post(&self, incidents: &[Incident]) -> Result<(), SinkError> {
        if incidents.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .post(&self.url)
            .json(&payload(incidents))
            .send()
            .await;
        http_outcome("alertmanager", &self.url, sent).await
    }

    /// Posts the incidents, retrying with backoff; returns once Alertmanager
    /// accepted them, or the last error. The live engine does not use this:
    /// its [`AlertmanagerSink`] retries in its own task.
    pub async fn send(&self, incidents: &[Incident]) -> Result<(), SendError> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            match self.post(incidents).await {
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

/// Alertmanager as a [`Sink`]: the alerts folded into incidents by its own
/// [`Correlator`] (the same alerts in the same order fold the same way in
/// every sink), one try per delivery (the fan-out retries), and open
/// incidents sent again every [`RESEND_EVERY`].
pub struct AlertmanagerSink {
    am: Alertmanager,
    correlator: Correlator,
    /// the incidents of a batch not yet delivered: a retry of the batch
    /// sends these (its alerts are already folded in)
    pending: Vec<Incident>,
    /// the last firing state delivered of each open incident, by identity
    open: BTreeMap<String, Incident>,
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
            correlator: Correlator::default(),
            pending: Vec::new(),
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
        if self.pending.is_empty() {
            let alerts = outputs.iter().filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                Output::Kpi(_) => None,
            });
            self.pending = self.correlator.correlate(alerts);
        }
        if let Err(e) = self.am.post(&self.pending).await {
            if e.permanent {
                // the fan-out drops this batch: the next one is new
                self.pending.clear();
            }
            return Err(e);
        }
        for inc in std::mem::take(&mut self.pending) {
            match inc.state {
                // a notice that belongs to no incident is not kept alive
                State::Firing if inc.lead.incident_start_ns.is_some() => {
                    self.open.insert(inc.id.clone(), inc);
                }
                State::Firing => {}
                State::Resolved => {
                    self.open.remove(&inc.id);
                }
            }
        }
        Ok(())
    }

    async fn tick(&mut self) {
        if self.open.is_empty() || self.last_resend.elapsed() < self.resend_every {
            return;
        }
        let open: Vec<Incident> = self.open.values().cloned().collect();
        match self.am.post(&open).await {
            Ok(()) => self.last_resend = Instant::now(),
            // tried again at the next tick
            Err(e) => {
                tracing::warn!(error = %e, open = open.len(), "cannot re-send the open incidents")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::alerts::{Alert, Notes};
    use crate::rules::definition::Maturity;
    use crate::sinks::testing::{T0, client_alert, sample_alert};

    #[test]
    fn resolved_alerts_never_end_in_the_future_and_firing_ones_expire() {
        let mut a = sample_alert(State::Resolved);
        let now = a.at_ns - 30_000_000_000;
        let body = payload_at(&[Incident::single(&a)], now, Duration::from_secs(240));
        assert_eq!(body[0]["endsAt"], json!(rfc3339(now)), "{body}");
        a.state = State::Firing;
        let body = payload_at(&[Incident::single(&a)], now, Duration::from_secs(240));
        assert_eq!(body[0]["endsAt"], json!(rfc3339(now + 240_000_000_000)));
        assert_eq!(body[0]["labels"]["incident_id"], json!(a.identity()));
        assert_eq!(body[0]["labels"]["client_address"], json!("203.0.113.9"));
    }

    #[test]
    fn one_alertmanager_alert_per_incident_with_its_members_and_the_rules_notes() {
        let notes = Arc::new(Notes {
            runbook: Some("1. Block the addresses at the edge.\n".into()),
            false_positives: Some("A load test from the office.".into()),
            maturity: Maturity::Experimental,
        });
        let alerts: Vec<Alert> = (0..30)
            .map(|i| {
                let mut a = client_alert(&format!("198.51.100.{i}"), State::Firing);
                a.value = json!(100 + i);
                a.notes = Some(notes.clone());
                a
            })
            .collect();
        let incidents = Correlator::default().correlate(&alerts);
        assert_eq!(incidents.len(), 1, "one rule on 30 addresses: one incident");
        let body = payload_at(&incidents, T0, Duration::from_secs(240));
        assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
        let (labels, notes) = (&body[0]["labels"], &body[0]["annotations"]);
        assert_eq!(labels["incident_id"], json!(alerts[0].identity()));
        assert_eq!(
            labels["client_address"], "198.51.100.0",
            "the lead's entity"
        );
        assert_eq!(labels["maturity"], "experimental");
        assert_eq!(notes["member_count"], "30");
        assert_eq!(notes["entity_count"], "30");
        assert_eq!(notes["rules"], "test.flood");
        let members: Vec<&str> = notes["members"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .collect();
        assert_eq!(
            members.len(),
            11,
            "ten listed and how many more: {members:?}"
        );
        assert_eq!(
            members[1],
            "test.flood [experimental] client.address=198.51.100.29 = 129"
        );
        assert_eq!(members[10], "... and 20 more");
        assert!(
            notes["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("[experimental] 4000 requests in one minute from 198.51.100.0 (one incident of 30 alerts")),
            "{notes}"
        );
        assert_eq!(notes["runbook"], "1. Block the addresses at the edge.");
        assert_eq!(notes["false_positives"], "A load test from the office.");
        assert_eq!(notes["maturity"], "experimental");
        // a rule without notes (an engine notice) has none
        let mut notice = sample_alert(State::Firing);
        notice.notes = None;
        let body = payload_at(&[Incident::single(&notice)], T0, Duration::from_secs(240));
        assert!(body[0]["annotations"].get("runbook").is_none(), "{body}");
        assert!(body[0]["labels"].get("maturity").is_none(), "{body}");
    }
}
