//! How long `GET /metrics` takes to render with 100 endpoints × 20 flows, every series
//! populated: requests by status class, a latency histogram per endpoint (with the shipped
//! alert thresholds as extra edges), messages by outcome and flow, sends by outcome and code
//! class. Run with `cargo bench -p easymo-engine --bench metrics`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use easymo_engine::config::{load, EnvPolicy};
use easymo_engine::metrics::{
    status_class, EndpointLabels, MessageLabels, Metrics, RequestLabels, SendLabels, TemplateLabels,
};

const ENDPOINTS: usize = 100;
const FLOWS: usize = 20;
const OUTCOMES: &[&str] = &["answered", "failed", "duplicate", "stale", "ignored"];

fn populated() -> Metrics {
    let routes = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../routes.yaml"));
    let config = load(routes, &EnvPolicy::Unchecked)
        .ok()
        .and_then(|loaded| loaded.config)
        .unwrap_or_else(|| panic!("the shipped routes.yaml loads"));
    let metrics = Metrics::new(&config);
    for e in 0..ENDPOINTS {
        let endpoint = format!("endpoint-{e:03}");
        for status in [200, 403, 413, 429, 500] {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.clone(),
                    status_class: status_class(status),
                })
                .inc_by(1_000);
        }
        let latency = metrics.request_seconds.get_or_create(&EndpointLabels {
            endpoint: endpoint.clone(),
        });
        for ms in [1.0, 4.0, 20.0, 120.0, 900.0, 2_000.0] {
            latency.observe(ms / 1_000.0);
        }
    }
    for f in 0..FLOWS {
        for outcome in OUTCOMES {
            metrics
                .messages
                .get_or_create(&MessageLabels {
                    endpoint: format!("endpoint-{}", f % 5),
                    outcome: (*outcome).to_owned(),
                    flow: format!("flow_{f:02}"),
                })
                .inc_by(500);
        }
    }
    for (outcome, class) in [
        ("sent", "none"),
        ("retry", "throughput"),
        ("dead", "window"),
    ] {
        metrics
            .sends
            .get_or_create(&SendLabels {
                outcome: outcome.to_owned(),
                code_class: class.to_owned(),
            })
            .inc_by(100);
    }
    metrics
}

fn bench(c: &mut Criterion) {
    let metrics = populated();
    let bytes = metrics.render().len();
    c.bench_function(
        &format!("render /metrics, {ENDPOINTS} endpoints x {FLOWS} flows ({bytes} bytes)"),
        |b| b.iter(|| metrics.render()),
    );
    c.bench_function(
        &format!("render /metrics as text 0.0.4, {ENDPOINTS} endpoints x {FLOWS} flows"),
        |b| b.iter(|| metrics.render_text_format()),
    );
    // What one webhook request costs the hot path in counting: the request (with the alert
    // tally), its message, and its reply, as the gateway and the batcher count them.
    let took = std::time::Duration::from_micros(1800);
    c.bench_function("count one request, its message and its reply", |b| {
        b.iter(|| {
            metrics.count_request("endpoint-042", 200, took, false);
            metrics
                .messages
                .get_or_create(&MessageLabels {
                    endpoint: "endpoint-042".to_owned(),
                    outcome: "answered".to_owned(),
                    flow: "flow_07".to_owned(),
                })
                .inc();
            metrics
                .replies
                .get_or_create(&TemplateLabels {
                    template: "main_menu".to_owned(),
                })
                .inc();
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
