//! Incidents to an HTTP endpoint (`--webhook URL`), one `POST` per batch: the
//! alerts are folded into incidents ([`crate::incidents`]) and each change of
//! an incident (opened, a member joined, resolved) is posted, not each alert.
//!
//! The JSON body (`--webhook-format json`, the default):
//!
//! ```json
//! {"incidents": [{"id": "9f2c41d07a3be815", "rule_version": "4be1c2e09a7d3f60",
//!                 "rule_id": "dos.expensive_endpoint_abuse", "severity": "high", "state": "firing",
//!                 "entity": {"client.address": "203.0.113.9"},
//!                 "window_start": "2026-01-15T10:00:00Z", "window_end": "2026-01-15T10:01:00Z",
//!                 "value": 40, "tags": ["T1499.003"], "summary": "... (one incident of 152 alerts ...)",
//!                 "trace_ids": ["..."], "maturity": "test", "runbook": "1. ...",
//!                 "incident_start": "2026-01-15T10:00:00Z", "incident_end": "2026-01-15T10:04:00Z",
//!                 "member_count": 152, "open_members": 150, "entity_count": 152,
//!                 "rules": ["dos.expensive_endpoint_abuse"], "highest_severity": "high",
//!                 "members": [{"id": "...", "rule_id": "...", "entity": {...}, "value": 40,
//!                              "state": "firing", "window_end": "..."}],
//!                 "members_not_listed": 142}]}
//! ```
//!
//! Each incident is its lead alert (the telemetry contract's object plus the
//! engine's extension fields, as stdout prints them, with the rule's
//! `maturity`, `runbook` and `false_positives`) and the incident's fields
//! ([`Incident::to_json`]). Its identity `id` is the same for every update and
//! the resolution of one incident, and again when a restart re-reads it:
//! receivers update on it. With `--webhook-format slack` the body is Slack's
//! incoming-webhook shape, `{"text": "..."}`, one line per incident, with `&`,
//! `<` and `>` escaped so that attacker-chosen values (user agents,
//! addresses) cannot make links or mentions.
//!
//! A 2xx answer delivers the batch; 4xx (but 408 and 429) drops it; anything
//! else is tried again by the fan-out.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Sink, SinkError, Takes, http_outcome};
use crate::alerts::State;
use crate::evaluator::Output;
use crate::incidents::{Correlator, Incident};

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WebhookFormat {
    /// `{"incidents": [...]}`: each incident's lead alert with its members
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
    correlator: Correlator,
    /// the incidents of a batch not yet delivered: a retry of the batch
    /// posts these (its alerts are already folded in)
    pending: Vec<Incident>,
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
            correlator: Correlator::default(),
            pending: Vec::new(),
        })
    }
}

/// The body for `incidents` in `format`.
pub fn body(incidents: &[Incident], format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Json => {
            json!({ "incidents": incidents.iter().map(Incident::to_json).collect::<Vec<_>>() })
        }
        WebhookFormat::Slack => {
            let lines: Vec<String> = incidents.iter().map(slack_line).collect();
            json!({ "text": lines.join("\n") })
        }
    }
}

/// One line of Slack text for an incident.
fn slack_line(inc: &Incident) -> String {
    let state = match inc.state {
        State::Firing => "FIRING",
        State::Resolved => "resolved",
    };
    let a = &inc.lead;
    let who: Vec<String> = a.entity.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!(
        "[{state}] {} {}: {} ({}; window {} to {}; id {})",
        a.severity,
        a.rule_id,
        inc.summary(),
        who.join(" "),
        a.window_start,
        a.window_end,
        inc.id
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
        if self.pending.is_empty() {
            let alerts = outputs.iter().filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                Output::Kpi(_) => None,
            });
            self.pending = self.correlator.correlate(alerts);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .post(&self.url)
            .json(&body(&self.pending, self.format))
            .send()
            .await;
        let outcome = http_outcome("webhook", &self.url, sent).await;
        // delivered, or dropped for good by the fan-out: the next batch is new
        if outcome.as_ref().is_ok() || outcome.as_ref().is_err_and(|e| e.permanent) {
            self.pending.clear();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::State as Extract;

    use super::*;
    use crate::sinks::testing::{client_alert, sample_alert, sample_kpi};

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
        let other = client_alert("198.51.100.7", State::Firing);
        let resolved = sample_alert(State::Resolved);
        hook.deliver(&[
            Output::Alert(firing.clone()),
            sample_kpi(),
            Output::Alert(other),
        ])
        .await
        .unwrap();
        hook.deliver(&[
            Output::Alert(client_alert("198.51.100.7", State::Resolved)),
            Output::Alert(resolved),
        ])
        .await
        .unwrap();
        let bodies = got.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2);
        let incidents: Vec<Value> = bodies
            .iter()
            .flat_map(|b| {
                b["incidents"]
                    .as_array()
                    .expect("an array of incidents")
                    .clone()
            })
            .collect();
        assert_eq!(
            incidents.len(),
            2,
            "one incident, firing then resolved: {incidents:?}"
        );
        let (opened, closed) = (&incidents[0], &incidents[1]);
        // the lead alert's fields, as stdout prints them
        let lead = serde_json::to_value(&firing).unwrap();
        for (k, v) in lead.as_object().unwrap() {
            if k != "summary" {
                assert_eq!(&opened[k], v, "{k}");
            }
        }
        assert_eq!(opened["id"], json!(firing.identity()));
        assert_eq!(opened["entity"]["client.address"], "203.0.113.9");
        // the detection delay's two ends
        assert_eq!(opened["first_seen"], "2026-01-15T10:00:05Z");
        assert_eq!(opened["detected_at"], "2026-01-15T10:01:05Z");
        // and the incident's
        assert_eq!(opened["member_count"], 2);
        assert_eq!(opened["entity_count"], 2);
        assert_eq!(
            opened["members"][1]["entity"]["client.address"],
            "198.51.100.7"
        );
        assert_eq!(closed["state"], "resolved");
        assert_eq!(closed["open_members"], 0);
        // one incident, one id
        assert_eq!(opened["id"], closed["id"]);
        assert_eq!(opened["id"].as_str().map(str::len), Some(16));
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
