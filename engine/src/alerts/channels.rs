//! Telling people: Slack incoming webhooks, PagerDuty Events API v2, and any receiver of the
//! Alertmanager webhook JSON.
//!
//! Owns: each channel's payload and what counts as its success, and one queue per channel so
//! that a channel's notices arrive in order (a PagerDuty resolve never overtakes its trigger)
//! and a channel that is down is retried with backoff without holding up the others, the
//! evaluator or any request. Must not decide when to notify: the evaluator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::rules::{condition_text, runbook_link, severity, Notice, Status};
use crate::config::{AlertRule, Alerting, Channel, ChannelKind, Config};
use crate::metrics::Metrics;

/// PagerDuty's Events API v2.
const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";
/// Notices waiting per channel; past this, new ones are dropped and counted.
const QUEUE: usize = 256;
/// Tries per notice before it is given up on (about two minutes of backoff in all).
const ATTEMPTS: u32 = 7;
/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One notice, ready for one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The channel's name in routes.yaml.
    pub channel: String,
    /// Its kind, which says what success looks like.
    pub kind: ChannelKind,
    /// Where it goes.
    pub url: String,
    /// What is sent.
    pub body: Value,
}

/// Builds the payload of `notice` for `channel`; `None` when the channel's secret is not
/// resolved (only under `EnvPolicy::Unchecked`, never in `serve`).
pub fn prepare(
    (name, channel): (&str, &Channel),
    notice: &Notice,
    rule: &AlertRule,
    alerting: &Alerting,
) -> Option<Prepared> {
    let secret = channel.target.value.clone()?;
    let runbook = runbook_link(rule, alerting);
    let (url, body) = match channel.kind {
        ChannelKind::Slack => (secret, slack(notice, rule, runbook.as_deref())),
        ChannelKind::Pagerduty => {
            let url = channel
                .events_url
                .clone()
                .unwrap_or_else(|| PAGERDUTY_EVENTS.to_owned());
            (url, pagerduty(&secret, notice, rule, runbook.as_deref()))
        }
        ChannelKind::Webhook => (secret, alertmanager(name, notice, rule, runbook.as_deref())),
    };
    Some(Prepared {
        channel: name.to_owned(),
        kind: channel.kind,
        url,
        body,
    })
}

/// The value as the rule writes its threshold: `62.5%`, `3210ms`, `1043`.
pub fn shown_value(rule: &AlertRule, value: Option<f64>) -> String {
    let Some(value) = value else {
        return "no data".to_owned();
    };
    let metric = rule.condition.metric.node.as_str();
    if metric.ends_with("_latency") {
        format!("{:.0}ms", value * 1000.0)
    } else if metric.ends_with("_rate") && metric != "requests_per_minute" {
        format!("{}%", (value * 10.0).round() / 10.0)
    } else {
        format!("{}", (value * 10.0).round() / 10.0)
    }
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager writes times.
pub fn rfc3339(unix: f64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_millis(time).to_string()
}

fn summary(notice: &Notice, rule: &AlertRule) -> String {
    let when = match notice.status {
        Status::Firing => "now",
        Status::Resolved => "last",
    };
    format!(
        "{}: {} ({when} {})",
        rule.name,
        condition_text(rule),
        shown_value(rule, notice.value)
    )
}

fn slack(notice: &Notice, rule: &AlertRule, runbook: Option<&str>) -> Value {
    let head = match notice.status {
        Status::Firing => format!(":rotating_light: *[FIRING]* {}", summary(notice, rule)),
        Status::Resolved => format!(":white_check_mark: *[RESOLVED]* {}", rule.name),
    };
    let mut lines = vec![head, format!("severity: {}", severity(rule))];
    lines.push(format!("since: {}", rfc3339(notice.starts_at)));
    if let Some(ends) = notice.ends_at {
        lines.push(format!("resolved at: {}", rfc3339(ends)));
    }
    if let Some(runbook) = runbook {
        lines.push(format!("runbook: {runbook}"));
    }
    json!({ "text": lines.join("\n") })
}

/// PagerDuty's dedup key: stable per rule, at most 255 characters.
pub fn dedup_key(notice: &Notice) -> String {
    let mut key = format!("easymo/{}", notice.alert);
    key.truncate(255);
    key
}

fn pagerduty(routing_key: &str, notice: &Notice, rule: &AlertRule, runbook: Option<&str>) -> Value {
    if notice.status == Status::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(notice),
        });
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(notice),
        "payload": {
            "summary": summary(notice, rule),
            "source": "easymo-engine",
            "severity": severity(rule),
            "timestamp": rfc3339(notice.starts_at),
            "component": rule.condition.scope.as_ref().map_or("all endpoints", |s| s.node.as_str()),
            "class": rule.condition.metric.node,
            "custom_details": {
                "condition": condition_text(rule),
                "value": shown_value(rule, notice.value),
            },
        },
    });
    if let Some(runbook) = runbook {
        event["links"] = json!([{ "href": runbook, "text": "Runbook" }]);
    }
    event
}

fn alertmanager(receiver: &str, notice: &Notice, rule: &AlertRule, runbook: Option<&str>) -> Value {
    let mut labels = json!({ "alertname": notice.alert, "severity": severity(rule) });
    if let Some(scope) = &rule.condition.scope {
        labels["endpoint"] = json!(scope.node);
    }
    let mut annotations = json!({
        "summary": summary(notice, rule),
        "description": format!("{} when {}", rule.name, condition_text(rule)),
    });
    if let Some(runbook) = runbook {
        annotations["runbook_url"] = json!(runbook);
    }
    let fingerprint = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(notice.alert.as_bytes());
        hex::encode(digest.get(..8).unwrap_or_default())
    };
    let alert = json!({
        "status": notice.status.as_str(),
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(notice.starts_at),
        "endsAt": notice.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
        "generatorURL": "",
        "fingerprint": fingerprint,
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", notice.alert),
        "truncatedAlerts": 0,
        "status": notice.status.as_str(),
        "receiver": receiver,
        "groupLabels": { "alertname": notice.alert },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    })
}

/// Why a call did not count as delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer.
    #[error("no answer: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not the channel's success.
    #[error("answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// Sends one prepared notice once.
pub async fn send_once(http: &reqwest::Client, prepared: &Prepared) -> Result<(), SendError> {
    let answer = http
        .post(&prepared.url)
        .json(&prepared.body)
        .timeout(TIMEOUT)
        .send()
        .await?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    // Slack answers a plain `ok`; anything else (even with 200) did not post.
    let ok = match prepared.kind {
        ChannelKind::Slack => status.as_u16() == 200 && body.trim() == "ok",
        ChannelKind::Pagerduty | ChannelKind::Webhook => status.is_success(),
    };
    if ok {
        Ok(())
    } else {
        Err(SendError::Refused {
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        })
    }
}

/// One ordered queue per channel name.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Prepared>>>>,
}

impl Notifier {
    /// A notifier with its own HTTP client.
    pub fn new(metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        Ok(Notifier {
            http: reqwest::Client::builder().build()?,
            metrics,
            queues: Arc::default(),
        })
    }

    /// Queues `notice` for every channel its rule names; never waits.
    pub fn notify(&self, config: &Config, notice: &Notice) {
        let Some(rule) = config
            .alerts
            .iter()
            .find(|r| r.alert_name() == notice.alert)
        else {
            return;
        };
        for name in &rule.channels {
            let Some(channel) = config.channels.get(name) else {
                continue;
            };
            let Some(prepared) = prepare((name, channel), notice, rule, &config.alerting) else {
                continue;
            };
            tracing::warn!(event = "alert.notify", alert = %notice.alert, status = notice.status.as_str(), channel = %name, "Alert {}.", notice.status.as_str());
            let queue = self.queue(name);
            if queue.try_send(prepared).is_err() {
                self.metrics.count_notification(name, "dropped");
                tracing::error!(event = "alert.notification_dropped", channel = %name, alert = %notice.alert, "Channel queue full: notice dropped.");
            }
        }
    }

    fn queue(&self, channel: &str) -> mpsc::Sender<Prepared> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(channel).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(drain(self.http.clone(), self.metrics.clone(), receiver));
        queues.insert(channel.to_owned(), sender.clone());
        sender
    }
}

/// Sends a channel's notices in order, each retried with backoff until delivered or given up.
async fn drain(
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    mut receiver: mpsc::Receiver<Prepared>,
) {
    while let Some(prepared) = receiver.recv().await {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match send_once(&http, &prepared).await {
                Ok(()) => {
                    metrics.count_notification(&prepared.channel, "sent");
                    break;
                }
                Err(error) => {
                    metrics.count_notification(&prepared.channel, "failed");
                    let last = attempt == ATTEMPTS;
                    tracing::error!(event = "alert.channel_failed", channel = %prepared.channel, attempt, error = %error, gave_up = last, "Alert channel did not take the notice.");
                    if last {
                        metrics.count_notification(&prepared.channel, "dropped");
                        break;
                    }
                    tokio::time::sleep(delay + jitter(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// Up to a tenth of `delay`, so that engines retrying one receiver spread out.
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    delay / 10 * (nanos % 100) / 100
}
