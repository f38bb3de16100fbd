//! Alerts to Prometheus Alertmanager's v2 API (`POST /api/v2/alerts`).
//!
//! Labels: `alertname` (the rule id), `severity`, `rule_id`, and the entity's
//! attributes with `.` as `_`. Annotations: `summary`, `window_start`,
//! `window_end`, `value`, `tags`, `trace_ids`. A resolved alert is sent with
//! `endsAt` set to its window end, which Alertmanager takes as resolved.

use std::time::Duration;

use serde_json::{Value, json};

use crate::alerts::{Alert, State};

/// The body Alertmanager expects for `alerts`.
pub fn payload(alerts: &[Alert]) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                let mut labels = serde_json::Map::new();
                labels.insert("alertname".into(), json!(a.rule_id));
                labels.insert("rule_id".into(), json!(a.rule_id));
                labels.insert("severity".into(), json!(a.severity));
                for (k, v) in &a.entity {
                    labels.insert(k.replace('.', "_"), json!(v));
                }
                let mut alert = json!({
                    "labels": labels,
                    "annotations": {
                        "summary": a.summary,
                        "window_start": a.window_start,
                        "window_end": a.window_end,
                        "value": a.value.to_string(),
                        "tags": a.tags.join(","),
                        "trace_ids": a.trace_ids.join(","),
                    },
                    "startsAt": a.window_start,
                });
                if a.state == State::Resolved {
                    alert["endsAt"] = json!(a.window_end);
                }
                alert
            })
            .collect(),
    )
}

/// Sends alerts to one Alertmanager, retrying with backoff.
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
        Alertmanager {
            url: format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            attempts: 5,
        }
    }

    /// Posts the alerts; returns once Alertmanager accepted them, or the last error.
    pub async fn send(&self, alerts: &[Alert]) -> Result<(), SendError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let body = payload(alerts);
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            match self.client.post(&self.url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last = format!("HTTP {status}: {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() {
                        break;
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(SendError {
            url: self.url.clone(),
            message: last,
            attempts: self.attempts,
        })
    }
}
