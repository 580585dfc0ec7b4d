//! `easymo alerts test`: rule unit tests in the file format of `promtool test rules`, run on
//! the engine's own evaluator.
//!
//! Owns: the test file model (`evaluation_interval`, `tests[]` with `interval`,
//! `input_series` and `alert_rule_test` with `eval_time`, `alertname` and `exp_alerts`), the
//! observation a set of series makes at a moment (the exported metrics read back the way the
//! exported PromQL reads them), and promtool's report. The same files run through promtool
//! against `easymo alerts export`, so both engines are held to one expectation. Must not
//! change how rules evaluate: that is [`super::rules`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Deserialize;

use super::rules::{alert_annotations, alert_labels, Evaluator, Observation, Phase};
use super::series::Series;
use crate::config::Config;
use crate::metrics::{Figures, SystemFigures};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The rule files promtool loads (the export); the engine uses routes.yaml instead.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// How often rules are evaluated (default `1m`, as promtool).
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    /// Accepted for promtool; the engine's rules are all in one group.
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    /// The tests.
    pub tests: Vec<TestGroup>,
}

/// One test: series and what must fire when.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Shown in the report.
    #[serde(default)]
    pub name: Option<String>,
    /// Time between two samples of the input series (default: the evaluation interval).
    #[serde(default)]
    pub interval: Option<String>,
    /// The series.
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    /// Expectations.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
}

/// One input series.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `name{label="value"}`.
    pub series: String,
    /// Values in the expanding notation.
    pub values: String,
}

/// What must be firing for one alert at one time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// When, from the start of the series.
    pub eval_time: String,
    /// The alert name (`ErrorRateCritical`).
    pub alertname: String,
    /// The alerts firing then; none when empty.
    #[serde(default)]
    pub exp_alerts: Vec<ExpectedAlert>,
}

/// One firing alert's labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    /// Labels besides `alertname`.
    #[serde(default)]
    pub exp_labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, String>,
}

/// Why a test file could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// Not YAML of the format.
    #[error("{0}")]
    Format(#[from] serde_yaml::Error),
    /// A duration or series that does not read.
    #[error("{0}")]
    Value(String),
}

/// The outcome of one file: the failures, in promtool's words.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One entry per failed expectation.
    pub failures: Vec<String>,
}

/// What `easymo alerts test` prints, and whether every file passed.
#[derive(Debug)]
pub struct Report {
    /// promtool's layout: each file, then `SUCCESS` or `FAILED:` with each failure.
    pub text: String,
    /// Every expectation held.
    pub passed: bool,
}

/// Runs each file; a file that cannot be read or parsed fails.
pub fn run_files(config: &Config, files: &[std::path::PathBuf]) -> Report {
    let mut text = String::new();
    let mut passed = true;
    for path in files {
        let _ = writeln!(text, "Unit Testing:  {}", path.display());
        let result = std::fs::read_to_string(path)
            .map_err(|e| TestError::Value(format!("cannot read it: {e}")))
            .and_then(|body| run(config, &body));
        match result {
            Ok(outcome) if outcome.failures.is_empty() => text.push_str("  SUCCESS\n"),
            Ok(outcome) => {
                passed = false;
                text.push_str("  FAILED:\n");
                for failure in outcome.failures {
                    let _ = writeln!(text, "    {failure}");
                }
            }
            Err(error) => {
                passed = false;
                let _ = writeln!(text, "  FAILED:\n    {error}");
            }
        }
    }
    Report { text, passed }
}

fn seconds(text: &str) -> Result<f64, TestError> {
    easymo_dsl::parser::parse_duration(text)
        .map(|d| d.as_secs_f64())
        .map_err(|e| TestError::Value(format!("`{text}` is not a duration: {e}")))
}

/// Runs every test of `file` against `config`'s rules.
pub fn run(config: &Config, file: &str) -> Result<Outcome, TestError> {
    let file: TestFile = serde_yaml::from_str(file)?;
    let eval_interval = seconds(file.evaluation_interval.as_deref().unwrap_or("1m"))?;
    let mut outcome = Outcome::default();
    for (index, group) in file.tests.iter().enumerate() {
        let name = group
            .name
            .clone()
            .unwrap_or_else(|| format!("test {}", index + 1));
        let failures = run_group(config, group, eval_interval)?;
        outcome
            .failures
            .extend(failures.into_iter().map(|f| format!("{name}: {f}")));
    }
    Ok(outcome)
}

fn run_group(
    config: &Config,
    group: &TestGroup,
    eval_interval: f64,
) -> Result<Vec<String>, TestError> {
    let interval = match &group.interval {
        Some(text) => seconds(text)?,
        None => eval_interval,
    };
    let series = group
        .input_series
        .iter()
        .map(|s| Series::parse(&s.series, &s.values, interval))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestError::Value(e.to_string()))?;
    let mut checks: Vec<(f64, &AlertTest)> = Vec::new();
    for test in &group.alert_rule_test {
        checks.push((seconds(&test.eval_time)?, test));
    }
    checks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let last = checks.last().map_or(0.0, |(t, _)| *t);
    let window = config.alerting.window.as_secs_f64();
    let mut evaluator = Evaluator::default();
    let mut failures = Vec::new();
    let mut pending = checks.into_iter().peekable();
    let mut step = 0_u32;
    loop {
        let now = f64::from(step) * eval_interval;
        if now > last + f64::EPSILON {
            break;
        }
        let observation = observe(&series, now, window);
        // promtool repeats nothing: what fires is what is compared.
        evaluator.evaluate(&config.alerts, &observation, now, f64::INFINITY);
        // promtool checks an eval_time against the last evaluation at or before it.
        while let Some((at, test)) = pending.next_if(|(at, _)| *at < now + eval_interval) {
            if let Some(failure) = compare(config, &evaluator, test, at) {
                failures.push(failure);
            }
        }
        step += 1;
    }
    Ok(failures)
}

fn compare(config: &Config, evaluator: &Evaluator, test: &AlertTest, at: f64) -> Option<String> {
    let firing = matches!(evaluator.phase(&test.alertname), Some(Phase::Firing { .. }));
    let mut got: Vec<ExpectedAlert> = config
        .alerts
        .iter()
        .filter(|rule| firing && rule.alert_name() == test.alertname)
        .map(|rule| ExpectedAlert {
            exp_labels: alert_labels(rule)
                .into_iter()
                .filter(|(k, _)| k != "alertname")
                .collect(),
            exp_annotations: alert_annotations(rule, &config.alerting),
        })
        .collect();
    let mut expected = test.exp_alerts.clone();
    got.sort();
    expected.sort();
    if got == expected {
        return None;
    }
    let show = |alerts: &[ExpectedAlert]| {
        let items: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "labels: {:?}, annotations: {:?}",
                    a.exp_labels, a.exp_annotations
                )
            })
            .collect();
        format!("[{}]", items.join("; "))
    };
    let mut text = String::new();
    let _ = write!(
        text,
        "alertname: {}, time: {},\n        exp: {},\n        got: {}",
        test.alertname,
        super::export::prometheus_duration(std::time::Duration::from_secs_f64(at)),
        show(&expected),
        show(&got)
    );
    Some(text)
}

/// What the exported PromQL sees at `now`: increases over the window per endpoint, instant
/// system figures (the highest of any replica), settled payments' increases (likewise).
pub fn observe(series: &[Series], now: f64, window: f64) -> Observation {
    let mut endpoints: HashMap<String, Figures> = HashMap::new();
    let mut buckets: HashMap<String, BTreeMap<u64, (f64, f64)>> = HashMap::new();
    for s in series {
        let endpoint = s.labels.get("endpoint").cloned().unwrap_or_default();
        let Some(increase) = s.increase(now, window) else {
            continue;
        };
        if s.matches("easymo_http_requests_total", &[]) {
            let figures = endpoints.entry(endpoint).or_default();
            figures.requests += increase;
            if s.labels.get("status_class").map(String::as_str) == Some("5xx") {
                figures.errors += increase;
            }
        } else if s.matches("easymo_messages_total", &[("outcome", "failed")]) {
            endpoints.entry(endpoint).or_default().failed_flows += increase;
        } else if s.matches("easymo_http_request_duration_seconds_bucket", &[]) {
            let le = s.labels.get("le").map_or(f64::NAN, |le| {
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                }
            });
            if le.is_nan() {
                continue;
            }
            // Keyed by the edge's bits so that edges sort and sum exactly.
            let entry = buckets
                .entry(endpoint)
                .or_default()
                .entry(le.to_bits())
                .or_insert((le, 0.0));
            entry.1 += increase;
        }
    }
    for (endpoint, by_edge) in buckets {
        let figures = endpoints.entry(endpoint).or_default();
        figures.set_histogram(by_edge.into_values().collect());
    }
    let highest = |name: &str, matchers: &[(&str, &str)], f: &dyn Fn(&Series) -> Option<f64>| {
        series
            .iter()
            .filter(|s| s.matches(name, matchers))
            .filter_map(f)
            .reduce(f64::max)
    };
    let instant = |s: &Series| s.instant(now);
    let increase = |s: &Series| s.increase(now, window);
    let system = SystemFigures {
        dlq_size: highest("easymo_dlq_size", &[], &instant).unwrap_or(f64::NAN),
        outbox_pending: highest("easymo_outbox_pending", &[], &instant).unwrap_or(f64::NAN),
        payments_successful: highest(
            "easymo_payments_settled_total",
            &[("outcome", "successful")],
            &increase,
        )
        .unwrap_or(0.0),
        payments_failed: highest(
            "easymo_payments_settled_total",
            &[("outcome", "failed")],
            &increase,
        )
        .unwrap_or(0.0),
    };
    Observation {
        window_seconds: window,
        endpoints,
        system,
    }
}
