//! What the dashboard shows, computed from two readings of the process's own `/metrics` text.
//!
//! Owns: the figures of one dashboard update: per endpoint the totals, the request rate, the
//! error share (5xx answers and failed flows, as `error_rate` counts them) and p50/p95/p99 over
//! the last seconds; messages per flow; the queues; and the firing alerts, config version and
//! last reload that the caller adds. Pure: the caller takes the readings.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::metrics::exposition::Sample;
use crate::metrics::Figures;

/// One endpoint's line.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EndpointFigures {
    /// The endpoint.
    pub name: String,
    /// Requests since the process started, by status class.
    pub requests_total: BTreeMap<String, f64>,
    /// Requests per second over the span.
    pub rate: f64,
    /// 5xx answers and failed flows over requests in the span, in percent.
    pub error_pct: Option<f64>,
    /// Latency percentiles over the span, in milliseconds.
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p95_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
}

/// One flow's line.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FlowFigures {
    /// The flow (`none`: messages no flow took).
    pub flow: String,
    /// Messages since the process started, by outcome.
    pub messages_total: BTreeMap<String, f64>,
}

/// One update of the page.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Update {
    /// Unix seconds.
    pub at: f64,
    /// The span the rates cover, in seconds.
    pub span: f64,
    /// Per endpoint, by name.
    pub endpoints: Vec<EndpointFigures>,
    /// Per flow, by name.
    pub flows: Vec<FlowFigures>,
    /// Dead outbox rows.
    pub dlq_size: f64,
    /// Outbox rows waiting to be sent.
    pub outbox_pending: f64,
    /// Numbers and tokens whose sending is paused.
    pub sending_paused: f64,
}

fn sum_where(samples: &[Sample], name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && keep(s))
        .map(|s| s.value)
        .sum()
}

fn gauge(samples: &[Sample], name: &str) -> f64 {
    sum_where(samples, name, |_| true)
}

/// The figures at `now` (samples `now_samples`) against an earlier reading `span` seconds
/// before; with no earlier reading, totals only.
pub fn update(now: (f64, &[Sample]), before: Option<(f64, &[Sample])>) -> Update {
    let (at, samples) = now;
    let mut endpoints: BTreeMap<String, EndpointFigures> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "easymo_http_requests_total")
    {
        let endpoint = endpoints
            .entry(s.label("endpoint").to_owned())
            .or_insert_with(|| EndpointFigures {
                name: s.label("endpoint").to_owned(),
                ..EndpointFigures::default()
            });
        *endpoint
            .requests_total
            .entry(s.label("status_class").to_owned())
            .or_default() += s.value;
    }
    let span = before.map_or(0.0, |(then, _)| at - then);
    if let Some((_, earlier)) = before.filter(|_| span > 0.0) {
        for endpoint in endpoints.values_mut() {
            let window = window(samples, earlier, &endpoint.name);
            endpoint.rate = window.requests / span;
            endpoint.error_pct = window.error_rate();
            let ms = |q| window.quantile(q).map(|s| s * 1000.0);
            endpoint.p50_ms = ms(0.5);
            endpoint.p95_ms = ms(0.95);
            endpoint.p99_ms = ms(0.99);
        }
    }
    let mut flows: BTreeMap<String, FlowFigures> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "easymo_messages_total") {
        let flow = flows
            .entry(s.label("flow").to_owned())
            .or_insert_with(|| FlowFigures {
                flow: s.label("flow").to_owned(),
                ..FlowFigures::default()
            });
        *flow
            .messages_total
            .entry(s.label("outcome").to_owned())
            .or_default() += s.value;
    }
    Update {
        at,
        span,
        endpoints: endpoints.into_values().collect(),
        flows: flows.into_values().collect(),
        dlq_size: gauge(samples, "easymo_dlq_size"),
        outbox_pending: gauge(samples, "easymo_outbox_pending"),
        sending_paused: gauge(samples, "easymo_sending_paused"),
    }
}

/// One endpoint's figures between two readings.
fn window(now: &[Sample], before: &[Sample], endpoint: &str) -> Figures {
    let delta = |name: &str, keep: &dyn Fn(&Sample) -> bool| {
        let on = |s: &Sample| s.label("endpoint") == endpoint && keep(s);
        (sum_where(now, name, on) - sum_where(before, name, on)).max(0.0)
    };
    let mut figures = Figures {
        requests: delta("easymo_http_requests_total", &|_| true),
        errors: delta("easymo_http_requests_total", &|s| {
            s.label("status_class") == "5xx"
        }),
        failed_flows: delta("easymo_messages_total", &|s| s.label("outcome") == "failed"),
        ..Figures::default()
    };
    let bucket = "easymo_http_request_duration_seconds_bucket";
    let mut edges: Vec<(f64, String)> = now
        .iter()
        .filter(|s| s.name == bucket && s.label("endpoint") == endpoint)
        .map(|s| {
            let le = s.label("le");
            let edge = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            (edge, le.to_owned())
        })
        .filter(|(edge, _)| !edge.is_nan())
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    let cumulative = edges
        .into_iter()
        .map(|(edge, le)| (edge, delta(bucket, &|s| s.label("le") == le)))
        .collect();
    figures.set_histogram(cumulative);
    figures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::samples;

    #[test]
    fn rates_errors_and_percentiles_between_two_readings() {
        let before = samples(
            "easymo_http_requests_total{endpoint=\"wa\",status_class=\"2xx\"} 10\n\
             easymo_http_request_duration_seconds_bucket{le=\"0.1\",endpoint=\"wa\"} 10\n\
             easymo_http_request_duration_seconds_bucket{le=\"1\",endpoint=\"wa\"} 10\n\
             easymo_http_request_duration_seconds_bucket{le=\"+Inf\",endpoint=\"wa\"} 10\n",
        );
        let now = samples(
            "easymo_http_requests_total{endpoint=\"wa\",status_class=\"2xx\"} 28\n\
             easymo_http_requests_total{endpoint=\"wa\",status_class=\"5xx\"} 2\n\
             easymo_messages_total{endpoint=\"wa\",outcome=\"failed\",flow=\"jobs\"} 1\n\
             easymo_messages_total{endpoint=\"wa\",outcome=\"answered\",flow=\"jobs\"} 17\n\
             easymo_http_request_duration_seconds_bucket{le=\"0.1\",endpoint=\"wa\"} 28\n\
             easymo_http_request_duration_seconds_bucket{le=\"1\",endpoint=\"wa\"} 30\n\
             easymo_http_request_duration_seconds_bucket{le=\"+Inf\",endpoint=\"wa\"} 30\n\
             easymo_dlq_size 3\n",
        );
        let update = update((110.0, &now), Some((100.0, &before)));
        let wa = &update.endpoints[0];
        assert_eq!(wa.requests_total.get("2xx"), Some(&28.0));
        assert_eq!(wa.rate, 2.0, "20 requests in 10 s");
        assert_eq!(wa.error_pct, Some(15.0), "2 answers and 1 flow of 20");
        // 18 of 20 within 0.1 s: p50 in the first bucket, p99 in the second.
        assert!(wa.p50_ms.is_some_and(|p| p <= 100.0), "{wa:?}");
        assert!(
            wa.p99_ms.is_some_and(|p| p > 100.0 && p <= 1000.0),
            "{wa:?}"
        );
        assert_eq!(update.flows[0].messages_total.get("answered"), Some(&17.0));
        assert_eq!(update.dlq_size, 3.0);
        let first = update_without_history(&now);
        assert_eq!(first.endpoints[0].error_pct, None);
    }

    fn update_without_history(now: &[Sample]) -> Update {
        update((0.0, now), None)
    }
}
