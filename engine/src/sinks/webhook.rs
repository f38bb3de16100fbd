//! Alerts to an HTTP endpoint (`--webhook URL`), one `POST` per batch.
//!
//! The JSON body (`--webhook-format json`, the default):
//!
//! ```json
//! {"alerts": [{"id": "9f2c41d07a3be815", "rule_version": "4be1c2e09a7d3f60",
//!              "incident_start": "2026-01-15T10:00:00Z",
//!              "rule_id": "dos.http_flood", "severity": "high", "state": "firing",
//!              "entity": {"client.address": "203.0.113.9"},
//!              "window_start": "2026-01-15T10:00:00Z", "window_end": "2026-01-15T10:01:00Z",
//!              "value": 4000, "tags": ["T1498"], "summary": "...", "trace_ids": ["..."]}]}
//! ```
//!
//! Each alert is the telemetry contract's object plus the engine's extension
//! fields (as stdout prints them): its identity `id` ([`Alert::identity`], the
//! same for the firing and the resolved alert of one incident, and again when
//! a restart re-reads it: receivers de-duplicate on it), `rule_version`,
//! `incident_start`, and `first_seen` and `detected_at` when known. With `--webhook-format slack` the
//! body is Slack's incoming-webhook shape, `{"text": "..."}`, one line per
//! alert, with `&`, `<` and `>` escaped so that attacker-chosen values (user
//! agents, addresses) cannot make links or mentions.
//!
//! A 2xx answer delivers the batch; 4xx (but 408 and 429) drops it; anything
//! else is tried again by the fan-out.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Sink, SinkError, Takes, http_outcome};
use crate::alerts::{Alert, State};
use crate::evaluator::Output;

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WebhookFormat {
    /// `{"alerts": [...]}`: the contract's alert objects with their identity
    #[default]
    Json,
    /// `{"text": "..."}`, as Slack's (and Mattermost's) incoming webhooks take it
    Slack,
}

/// A URL the webhook sink cannot use.
#[derive(Debug, thiserror::Error)]
#[error("--webhook {url}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

/// The webhook sink; see the module documentation.
pub struct Webhook {
    url: String,
    format: WebhookFormat,
    client: reqwest::Client,
}

impl Webhook {
    /// Checks the URL (http only: this engine is built without TLS).
    pub fn new(url: &str, format: WebhookFormat) -> Result<Self, UrlError> {
        let bad = |reason: &str| UrlError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("not a URL ({e})")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(bad(
                    "https is not supported: this engine is built without TLS; \
                     post to an http relay on this machine or network instead",
                ));
            }
            other => {
                return Err(bad(&format!(
                    "scheme {other}: expected http://HOST:PORT/PATH"
                )));
            }
        }
        if parsed.host_str().is_none() {
            return Err(bad("no host: expected http://HOST:PORT/PATH"));
        }
        Ok(Webhook {
            url: url.to_string(),
            format,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        })
    }
}

/// An alert as the JSON body holds it: the contract's fields and the
/// extension fields, its identity among them (as every JSON sink writes it).
pub fn alert_json(a: &Alert) -> Value {
    serde_json::to_value(a).unwrap_or_else(|_| json!({}))
}

/// The body for `alerts` in `format`.
pub fn body(alerts: &[&Alert], format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Json => {
            json!({ "alerts": alerts.iter().map(|a| alert_json(a)).collect::<Vec<_>>() })
        }
        WebhookFormat::Slack => {
            let lines: Vec<String> = alerts.iter().map(|a| slack_line(a)).collect();
            json!({ "text": lines.join("\n") })
        }
    }
}

/// One line of Slack text for an alert.
fn slack_line(a: &Alert) -> String {
    let state = match a.state {
        State::Firing => "FIRING",
        State::Resolved => "resolved",
    };
    let who: Vec<String> = a.entity.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!(
        "[{state}] {} {}: {} ({}; window {} to {}; id {})",
        a.severity,
        a.rule_id,
        a.summary,
        who.join(" "),
        a.window_start,
        a.window_end,
        a.identity()
    );
    slack_escape(&line)
}

/// Slack's control characters in text: `&`, `<` and `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[async_trait]
impl Sink for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn address(&self) -> String {
        self.url.clone()
    }

    fn durable(&self) -> bool {
        true
    }

    fn takes(&self) -> Takes {
        Takes::Alerts
    }

    async fn deliver(&mut self, outputs: &[Output]) -> Result<(), SinkError> {
        let alerts: Vec<&Alert> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                Output::Kpi(_) => None,
            })
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .post(&self.url)
            .json(&body(&alerts, self.format))
            .send()
            .await;
        http_outcome("webhook", &self.url, sent).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::State as Extract;

    use super::*;
    use crate::sinks::testing::{sample_alert, sample_kpi};

    /// A real HTTP server on 127.0.0.1 that keeps every body posted to `/hook`.
    async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |Extract(got): Extract<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                        got.lock().unwrap().push(body);
                        "ok"
                    },
                ),
            )
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, got)
    }

    #[tokio::test]
    async fn posts_the_documented_json() {
        let (url, got) = receiver().await;
        let mut hook = Webhook::new(&url, WebhookFormat::Json).unwrap();
        let firing = sample_alert(State::Firing);
        let resolved = sample_alert(State::Resolved);
        hook.deliver(&[
            Output::Alert(firing.clone()),
            sample_kpi(),
            Output::Alert(resolved),
        ])
        .await
        .unwrap();
        let bodies = got.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1);
        let alerts = bodies[0]["alerts"]
            .as_array()
            .expect("an array of alerts")
            .clone();
        assert_eq!(alerts.len(), 2, "KPI values are not posted: {alerts:?}");
        let mut expected = serde_json::to_value(&firing).unwrap();
        expected["id"] = json!(firing.identity());
        expected["rule_version"] = json!("0123456789abcdef");
        expected["incident_start"] = json!("2026-01-15T10:00:00Z");
        assert_eq!(alerts[0], expected);
        assert_eq!(alerts[0]["entity"]["client.address"], "203.0.113.9");
        // the detection delay's two ends
        assert_eq!(alerts[0]["first_seen"], "2026-01-15T10:00:05Z");
        assert_eq!(alerts[0]["detected_at"], "2026-01-15T10:01:05Z");
        assert_eq!(alerts[1]["state"], "resolved");
        // one incident, one id
        assert_eq!(alerts[0]["id"], alerts[1]["id"]);
        assert_eq!(alerts[0]["id"].as_str().map(str::len), Some(16));
    }

    #[tokio::test]
    async fn posts_slack_text_with_attacker_values_escaped() {
        let (url, got) = receiver().await;
        let mut hook = Webhook::new(&url, WebhookFormat::Slack).unwrap();
        let mut a = sample_alert(State::Firing);
        a.entity.insert(
            "user_agent.original".into(),
            "<!channel> <http://x|y> & co".into(),
        );
        hook.deliver(&[Output::Alert(a)]).await.unwrap();
        let bodies = got.lock().unwrap().clone();
        let text = bodies[0]["text"].as_str().expect("a text field");
        assert!(
            text.starts_with("[FIRING] high test.flood: 4000 requests"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt; &lt;http://x|y&gt; &amp; co"),
            "{text}"
        );
        assert!(!text.contains('<'), "{text}");
    }

    #[test]
    fn urls_it_cannot_use_are_refused_with_the_reason() {
        let e = Webhook::new("https://hooks.slack.com/services/x", WebhookFormat::Slack)
            .err()
            .unwrap();
        assert!(e.to_string().contains("without TLS"), "{e}");
        let e = Webhook::new("hooks.example", WebhookFormat::Json)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("--webhook hooks.example: not a URL"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_refusal_names_the_sink_and_its_address() {
        let (url, _) = receiver().await;
        let wrong = url.replace("/hook", "/nothing-here");
        let mut hook = Webhook::new(&wrong, WebhookFormat::Json).unwrap();
        let e = hook
            .deliver(&[Output::Alert(sample_alert(State::Firing))])
            .await
            .unwrap_err();
        assert!(e.permanent, "404 is not retried: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("webhook at {wrong}: HTTP 404")),
            "{e}"
        );
    }
}
