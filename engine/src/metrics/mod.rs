//! The figures `GET /metrics` exposes, in the Prometheus text format (prometheus-client).
//!
//! Owns: metric names (`easymo_*`, base units, counters ending `_total`), their labels (bounded
//! sets only: endpoint, status class, flow, outcome, reason, Meta code class; never a phone
//! number or a message id), and the latency buckets, whose edges include every latency
//! threshold the alert rules use so that those are exact. Must not decide anything: the
//! modules that know what happened count it here.

pub mod exposition;
mod tally;

pub use tally::{Figures, Tally};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use easymo_dsl::ast::Unit;

use crate::config::Config;

/// Figures of the whole system, read from its tables (the store reads them): queue sizes and
/// payments settled since some time. The same on every process. `f64`, as the alert evaluator
/// takes them, also from promtool's series, where increases are extrapolated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SystemFigures {
    /// Dead outbox rows not discarded or re-driven.
    pub dlq_size: f64,
    /// Outbox rows not yet accepted by the Graph API.
    pub outbox_pending: f64,
    /// Payments settled `SUCCESSFUL` since the time asked for.
    pub payments_successful: f64,
    /// Payments settled `FAILED` since the time asked for.
    pub payments_failed: f64,
}

/// Latency bucket edges, in seconds, before the alert rules' own thresholds are added.
const LATENCY_EDGES: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A request's endpoint and the class of its answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Endpoint name, or `none` for a path no endpoint serves.
    pub endpoint: String,
    /// `2xx`, `4xx`, `5xx`, ...
    pub status_class: &'static str,
}

/// The class of an HTTP status: `2xx`, `4xx`, `5xx`, ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Endpoint name.
    pub endpoint: String,
}

/// A message's endpoint, outcome and the flow it reached.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The endpoint it came to.
    pub endpoint: String,
    /// `answered`, `failed`, `duplicate`, ...
    pub outcome: String,
    /// The flow it was routed to, or `none`.
    pub flow: String,
}

/// What one call to the Graph API came to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendLabels {
    /// `sent`, `retry`, `dead`.
    pub outcome: String,
    /// Meta's error code by class: `none`, `throughput`, `pair_rate`, `window`, `auth`,
    /// `account`, `request`, `other`.
    pub code_class: String,
}

/// A reload's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `rejected`.
    pub result: String,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Whether the request path counts anything (off only to measure what counting costs).
    pub enabled: bool,
    /// Requests by endpoint and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by endpoint.
    pub request_seconds: Family<EndpointLabels, Histogram, Buckets>,
    /// Requests refused or dropped by a rate limit, by endpoint (also counted in `requests`).
    pub rate_limited: Family<EndpointLabels, Counter>,
    /// WhatsApp messages by outcome and flow (`outcome="failed"`: the flow failed).
    pub messages: Family<MessageLabels, Counter>,
    /// Messages per batch transaction (one-message deliveries joined by the batcher).
    pub batch_size: Histogram,
    /// Time in the database per batch: every statement of its transaction, commit included.
    pub batch_seconds: Histogram,
    /// Calls to the Graph API by outcome and code class.
    pub sends: Family<SendLabels, Counter>,
    /// Duration of calls to the Graph API.
    pub send_seconds: Histogram,
    /// Dead outbox rows not discarded or re-driven.
    pub dlq_size: Gauge,
    /// Outbox rows not yet accepted by the Graph API.
    pub outbox_pending: Gauge,
    /// Numbers and tokens whose sending is paused.
    pub sending_paused: Gauge,
    /// Config reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// The serving config's version (a label whose only value is the current one).
    pub config: Family<ConfigLabels, Gauge>,
    /// When the serving config was loaded, in Unix seconds.
    pub config_loaded: Gauge,
    /// Database connections of the webhook pool, in use and idle.
    pub pool: Family<PoolLabels, Gauge>,
    /// The same requests and failures per endpoint since the last alert roll-up.
    pub tally: Tally,
    /// Requests refused by endpoint and reason (the error code of the body).
    pub refused: Family<RefusalLabels, Counter>,
    /// Replies written by template: what the services did (a job application received, a
    /// ride requested, a product shown).
    pub replies: Family<TemplateLabels, Counter>,
    /// Forwarded MoMo SMS by outcome (`credited`, `unparsed`, ...).
    pub sms: Family<OutcomeLabels, Counter>,
    /// MoMo callbacks by outcome (`settled`, `contradicted`, ...).
    pub callbacks: Family<OutcomeLabels, Counter>,
    /// Alert notifications by channel and result (`sent`, `failed` attempt, `dropped`).
    pub notifications: Family<NotificationLabels, Counter>,
    /// Alert rules firing now (on the evaluating process; 0 elsewhere).
    pub alerts_firing: Gauge,
    /// 1 on the process that evaluates alert rules.
    pub alerts_leader: Gauge,
    /// Payments settled, by final status, read from the database at each scrape.
    pub payments: Family<PaymentLabels, Counter>,
}

/// A refused request's endpoint and reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Endpoint name.
    pub endpoint: String,
    /// The body's error code: `invalid_signature`, `payload_too_large`, `malformed_json`, ...
    pub reason: &'static str,
}

/// A reply template.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabels {
    /// The template's name in routes.yaml.
    pub template: String,
}

/// An outcome from a bounded set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: &'static str,
}

/// One alert channel and what became of a notice.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The channel's name in routes.yaml.
    pub channel: String,
    /// `sent`, `failed` (one attempt) or `dropped` (given up or queue full).
    pub result: &'static str,
}

/// A payment's final status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PaymentLabels {
    /// `successful` or `failed`.
    pub outcome: &'static str,
}

/// The serving config.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// SHA-256 of routes.yaml and the flow files, as on `/admin/config`.
    pub version: String,
}

/// A connection state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `in_use` or `idle`.
    pub state: &'static str,
}

impl Metrics {
    /// The metrics, with latency buckets that include every latency threshold of `config`'s
    /// alert rules.
    pub fn new(config: &Config) -> Self {
        let edges = latency_edges(config);
        let mut metrics = Metrics {
            registry: Registry::with_prefix("easymo"),
            enabled: true,
            requests: Family::default(),
            tally: Tally::new(&edges),
            request_seconds: Family::new_with_constructor(Buckets(edges.into())),
            rate_limited: Family::default(),
            messages: Family::default(),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            batch_seconds: Histogram::new(LATENCY_EDGES.iter().copied()),
            sends: Family::default(),
            send_seconds: Histogram::new(LATENCY_EDGES.iter().copied()),
            dlq_size: Gauge::default(),
            outbox_pending: Gauge::default(),
            sending_paused: Gauge::default(),
            reloads: Family::default(),
            config: Family::default(),
            config_loaded: Gauge::default(),
            pool: Family::default(),
            notifications: Family::default(),
            refused: Family::default(),
            replies: Family::default(),
            sms: Family::default(),
            callbacks: Family::default(),
            alerts_firing: Gauge::default(),
            alerts_leader: Gauge::default(),
            payments: Family::default(),
        };
        metrics.register_traffic();
        metrics.register_state();
        metrics
    }

    /// Requests, messages and sends.
    fn register_traffic(&mut self) {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP requests by endpoint and status class",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by endpoint",
            self.request_seconds.clone(),
        );
        r.register(
            "http_rate_limited",
            "Requests over a rate limit (refused or dropped), by endpoint; not errors",
            self.rate_limited.clone(),
        );
        r.register(
            "messages",
            "WhatsApp messages by outcome and flow",
            self.messages.clone(),
        );
        r.register(
            "batch_size_messages",
            "Messages per batch transaction",
            self.batch_size.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Time in the database per batch transaction, statements and commit",
            self.batch_seconds.clone(),
        );
        r.register(
            "sends",
            "Calls to the WhatsApp Cloud API by outcome and Meta error code class",
            self.sends.clone(),
        );
        r.register(
            "send_duration_seconds",
            "Duration of calls to the WhatsApp Cloud API",
            self.send_seconds.clone(),
        );
        r.register(
            "http_refused",
            "Requests refused, by endpoint and reason (the error code of the answer)",
            self.refused.clone(),
        );
        r.register(
            "replies",
            "Replies written by flows, by template",
            self.replies.clone(),
        );
        r.register("sms", "Forwarded MoMo SMS by outcome", self.sms.clone());
        r.register(
            "momo_callbacks",
            "MoMo callbacks by outcome",
            self.callbacks.clone(),
        );
        r.register(
            "payments_settled",
            "MoMo payments settled since the database began, by final status (the same on every process: take max)",
            self.payments.clone(),
        );
    }

    /// Queues, config, connections and alerting.
    fn register_state(&mut self) {
        let r = &mut self.registry;
        r.register(
            "dlq_size",
            "Dead outbox rows not discarded or re-driven",
            self.dlq_size.clone(),
        );
        r.register(
            "outbox_pending",
            "Outbox rows not yet accepted by the WhatsApp Cloud API",
            self.outbox_pending.clone(),
        );
        r.register(
            "sending_paused",
            "Numbers and tokens whose sending is paused",
            self.sending_paused.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads by result",
            self.reloads.clone(),
        );
        r.register(
            "config",
            "The serving config, by version (1 for the current one)",
            self.config.clone(),
        );
        r.register(
            "config_loaded_timestamp_seconds",
            "When the serving config was loaded",
            self.config_loaded.clone(),
        );
        r.register(
            "database_connections",
            "Connections of the webhook pool by state",
            self.pool.clone(),
        );
        r.register(
            "alert_notifications",
            "Alert notifications by channel and result",
            self.notifications.clone(),
        );
        r.register(
            "alerts_firing",
            "Alert rules firing now, on the process that evaluates them",
            self.alerts_firing.clone(),
        );
        r.register(
            "alerts_leader",
            "1 on the process that evaluates alert rules",
            self.alerts_leader.clone(),
        );
    }

    /// Sets the figures read at each scrape: the serving config and the pool.
    pub fn observe_state(&self, version: &str, loaded_at: u64, pool: &sqlx::PgPool) {
        self.config.clear();
        self.config
            .get_or_create(&ConfigLabels {
                version: version.to_owned(),
            })
            .set(1);
        self.config_loaded
            .set(i64::try_from(loaded_at).unwrap_or(i64::MAX));
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(0);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set((size - idle).max(0));
    }

    /// Counts one answered request on `endpoint`: its status class, its latency, whether a
    /// rate limit refused it, and the same in the alert tally.
    pub fn count_request(
        &self,
        endpoint: &str,
        status: u16,
        took: std::time::Duration,
        limited: bool,
    ) {
        if !self.enabled {
            return;
        }
        let seconds = took.as_secs_f64();
        self.tally.request(endpoint, status, seconds, limited);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                status_class: status_class(status),
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
        if limited {
            self.rate_limited
                .get_or_create(&EndpointLabels {
                    endpoint: endpoint.to_owned(),
                })
                .inc();
        }
    }

    /// Counts what became of one alert notice on `channel`.
    pub fn count_notification(&self, channel: &str, result: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel.to_owned(),
                result,
            })
            .inc();
    }

    /// Sets what the database says at a scrape (payments settled since the epoch): queue sizes,
    /// and the settled-payment counters moved up to the totals (which only grow: settled
    /// payments are never deleted).
    pub fn observe_database(&self, figures: &SystemFigures) {
        self.dlq_size.set(whole(figures.dlq_size));
        self.outbox_pending.set(whole(figures.outbox_pending));
        let totals = [
            ("successful", figures.payments_successful),
            ("failed", figures.payments_failed),
        ];
        for (outcome, total) in totals {
            let counter = self.payments.get_or_create(&PaymentLabels { outcome });
            let total = u64::try_from(whole(total)).unwrap_or(0);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The same figures in the Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics (see [`text_format`]).
    pub fn render_text_format(&self) -> String {
        text_format(&self.render())
    }

    /// The text `/metrics` answers to OpenMetrics scrapers.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A count read from the database as the integer it was.
#[expect(
    clippy::cast_possible_truncation,
    reason = "whole counts far below 2^53"
)]
fn whole(count: f64) -> i64 {
    count.round() as i64
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's family is named with its
/// `_total` (OpenMetrics names it without), and `# UNIT` and `# EOF` lines go. prometheus-client
/// writes only OpenMetrics; the two formats otherwise agree on everything it writes.
pub fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// Histogram bucket edges shared by every endpoint's latency histogram.
#[derive(Debug, Clone)]
pub struct Buckets(std::sync::Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The default edges plus every latency threshold of the alert rules, in seconds, sorted.
pub fn latency_edges(config: &Config) -> Vec<f64> {
    let mut edges: Vec<f64> = LATENCY_EDGES.to_vec();
    for rule in &config.alerts {
        let condition = &rule.condition;
        if !condition.metric.node.ends_with("_latency") {
            continue;
        }
        let value = condition.threshold.node;
        let seconds = match condition.unit.as_ref().map(|u| u.node) {
            Some(Unit::Seconds) => value,
            Some(Unit::Minutes) => value * 60.0,
            Some(Unit::Hours) => value * 3600.0,
            // Milliseconds, written or implied.
            _ => value / 1000.0,
        };
        if seconds.is_finite() && seconds > 0.0 && !edges.iter().any(|e| (e - seconds).abs() < 1e-9)
        {
            edges.push(seconds);
        }
    }
    edges.sort_by(f64::total_cmp);
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_latency_thresholds_are_bucket_edges() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.yaml"))
            .unwrap_or_default();
        assert!(text.contains("p95_latency > 1500ms") && text.contains("p95_latency > 3000ms"));
        let loaded = crate::config::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.yaml")),
            &crate::config::EnvPolicy::Unchecked,
        )
        .ok()
        .and_then(|loaded| loaded.config);
        let Some(config) = loaded else {
            panic!("the shipped routes.yaml loads");
        };
        let edges = latency_edges(&config);
        assert!(edges.contains(&1.5) && edges.contains(&3.0), "{edges:?}");
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
    }

    #[test]
    fn metrics_render_in_the_text_format_with_bounded_labels() {
        let config_path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.yaml"));
        let Some(config) = crate::config::load(config_path, &crate::config::EnvPolicy::Unchecked)
            .ok()
            .and_then(|loaded| loaded.config)
        else {
            panic!("the shipped routes.yaml loads");
        };
        let metrics = Metrics::new(&config);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: "wa-webhook-core".into(),
                status_class: status_class(200),
            })
            .inc();
        metrics
            .request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: "wa-webhook-core".into(),
            })
            .observe(1.2);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"easymo_http_requests_total{endpoint="wa-webhook-core",status_class="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"easymo_http_request_duration_seconds_bucket{le="1.5",endpoint="wa-webhook-core"} 1"#),
            "{text}"
        );
        assert!(text.contains("# TYPE easymo_dlq_size gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let plain = metrics.render_text_format();
        assert!(
            plain.contains("# TYPE easymo_http_requests_total counter\n"),
            "{plain}"
        );
        assert!(
            plain.contains("# HELP easymo_http_requests_total HTTP requests"),
            "{plain}"
        );
        assert!(plain.contains("# TYPE easymo_dlq_size gauge\n"), "{plain}");
        assert!(!plain.contains("# EOF"), "{plain}");
    }
}
