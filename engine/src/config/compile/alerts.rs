//! `alerts:`: channels and rules, with the metrics and units a rule may use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;

use easymo_dsl::ast::Condition;
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::parser::parse_condition;
use easymo_dsl::{codes, Diagnostic};
use serde_yaml::Value;

use super::context::Cx;
use super::items;
use crate::config::raw;
use crate::config::yaml::{deserialize_at, Path};
use crate::config::{alert_name, AlertRule, Alerting, Channel, FileSource};

/// Metrics alert rules can watch, with the units their thresholds take.
const METRICS: &[(&str, MetricUnit)] = &[
    ("error_rate", MetricUnit::Percent),
    ("p50_latency", MetricUnit::Time),
    ("p95_latency", MetricUnit::Time),
    ("p99_latency", MetricUnit::Time),
    ("dlq_size", MetricUnit::Count),
    ("outbox_pending", MetricUnit::Count),
    ("requests_per_minute", MetricUnit::Count),
    ("payment_success_rate", MetricUnit::Percent),
];

/// Metrics taken per endpoint (`on NAME`); the others are figures of the whole system.
pub const PER_ENDPOINT: &[&str] = &[
    "error_rate",
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "requests_per_minute",
];

/// Keys of `alerts:` beside `channels` and `rules`.
const SETTINGS: &[&str] = &[
    "evaluation_interval",
    "window",
    "repeat_interval",
    "runbook_base_url",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum MetricUnit {
    Percent,
    Time,
    Count,
}

pub(super) struct RawAlerts {
    settings: BTreeMap<String, Value>,
    channels: Vec<(String, raw::Channel)>,
    broken_channels: BTreeSet<String>,
    rules: Vec<(usize, raw::AlertRule)>,
}

pub(super) fn alerts_section(cx: &mut Cx<'_>, value: Option<Value>) -> RawAlerts {
    let path = Path::root().key("alerts");
    let mut alerts = RawAlerts {
        settings: BTreeMap::new(),
        channels: Vec::new(),
        broken_channels: BTreeSet::new(),
        rules: Vec::new(),
    };
    let mut map = match value {
        None | Some(Value::Null) => return alerts,
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            cx.error(
                codes::INVALID_VALUE,
                "`alerts` must have `channels` and `rules`",
                &path,
                "",
            );
            return alerts;
        }
    };
    let keys: Vec<String> = map
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for key in keys {
        if SETTINGS.contains(&key.as_str()) {
            if let Some(value) = map.remove(key.as_str()) {
                alerts.settings.insert(key, value);
            }
        } else if key != "channels" && key != "rules" {
            let span = cx.index.key(&path.key(&key));
            let known = ["channels", "rules"]
                .into_iter()
                .chain(SETTINGS.iter().copied());
            cx.out.push(
                Diagnostic::error(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field `{key}` in `alerts`"),
                )
                .at(cx.file, span, "")
                .maybe_help(did_you_mean(&key, known)),
            );
        }
    }
    if let Some(Value::Mapping(channels)) = map.remove("channels") {
        for (key, item) in channels {
            let Some(name) = key.as_str().map(str::to_owned) else {
                continue;
            };
            match deserialize_at::<raw::Channel>(
                item,
                &path.key("channels").key(&name),
                &cx.index,
                cx.file,
            ) {
                Ok(c) => alerts.channels.push((name, c)),
                Err(d) => {
                    cx.out.extend(d);
                    alerts.broken_channels.insert(name);
                }
            }
        }
    }
    alerts.rules = items(cx, map.remove("rules"), &path.key("rules"));
    alerts
}

/// The compiled `alerts:` section.
pub(super) struct Compiled {
    pub channels: BTreeMap<String, Channel>,
    pub rules: Vec<AlertRule>,
    pub alerting: Alerting,
}

pub(super) fn compile_alerts(
    cx: &mut Cx<'_>,
    raw: RawAlerts,
    (base_dir, files): (&FsPath, &dyn FileSource),
    endpoints: &[crate::config::Endpoint],
) -> Compiled {
    let path = Path::root().key("alerts");
    let endpoints: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    let alerting = compile_settings(cx, &raw.settings, &path);
    let channels = compile_channels(cx, &raw.channels, &path.key("channels"));
    let declared: Vec<&str> = raw
        .channels
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(raw.broken_channels.iter().map(String::as_str))
        .collect();
    let mut rules: Vec<AlertRule> = Vec::new();
    for (i, rule) in &raw.rules {
        let rp = path.key("rules").index(*i);
        check_name(cx, rule, &rp, &rules);
        check_notified(cx, rule, &rp, &declared);
        if let Some(runbook) = &rule.runbook {
            if files.read(&base_dir.join(runbook)).is_err() {
                cx.error(
                    codes::MISSING_RUNBOOK,
                    format!("runbook `{runbook}` does not exist"),
                    &rp.key("runbook"),
                    "relative to routes.yaml",
                )
                .help = Some(
                    "write the page on-call reads first: what the alert means, the first commands to run, how to resolve it"
                        .to_owned(),
                );
            }
        }
        let condition = compile_condition(cx, &rule.when, &rp.key("when"))
            .filter(|c| scope_fits(cx, c, (&rule.when, &rp.key("when")), &endpoints));
        if let Some(condition) = condition {
            rules.push(AlertRule {
                name: rule.name.clone(),
                condition,
                severity: rule.severity,
                channels: rule.notify.clone(),
                runbook: rule.runbook.clone(),
            });
        }
    }
    Compiled {
        channels,
        rules,
        alerting,
    }
}

/// `evaluation_interval`, `window`, `repeat_interval` and `runbook_base_url`, or their defaults.
fn compile_settings(cx: &mut Cx<'_>, settings: &BTreeMap<String, Value>, path: &Path) -> Alerting {
    let mut alerting = Alerting::default();
    for (key, value) in settings {
        let at = path.key(key);
        let Some(text) = value.as_str() else {
            cx.error(
                codes::INVALID_VALUE,
                format!("`{key}` must be a string"),
                &at,
                "",
            );
            continue;
        };
        if key == "runbook_base_url" {
            let url = cx.base_url(text, &at, "the address runbook paths are appended to");
            alerting.runbook_base_url = Some(url + "/");
            continue;
        }
        let Some(duration) = cx.duration(text, &at) else {
            continue;
        };
        match key.as_str() {
            "evaluation_interval" => alerting.evaluation_interval = duration,
            "window" => alerting.window = duration,
            _ => alerting.repeat_interval = duration,
        }
    }
    if alerting.window < alerting.evaluation_interval {
        cx.error(
            codes::INVALID_VALUE,
            "the window is shorter than the evaluation interval",
            &path.key("window"),
            "rates over it would skip requests",
        );
    }
    alerting
}

/// Two rules with one alert name would share state and notifications.
fn check_name(cx: &mut Cx<'_>, rule: &raw::AlertRule, rp: &Path, before: &[AlertRule]) {
    let name = alert_name(&rule.name);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        cx.error(
            codes::INVALID_VALUE,
            format!(
                "alert `{}` needs a name that starts with a letter",
                rule.name
            ),
            &rp.key("name"),
            "",
        );
    } else if let Some(other) = before.iter().find(|r| r.alert_name() == name) {
        cx.error(
            codes::INVALID_VALUE,
            format!(
                "alerts `{}` and `{}` are both `{name}`",
                other.name, rule.name
            ),
            &rp.key("name"),
            "names differing only in case or punctuation",
        )
        .help = Some("rename one: alert state and notifications are kept by name".to_owned());
    }
}

/// `on NAME` names an endpoint, and only for a metric taken per endpoint.
fn scope_fits(
    cx: &mut Cx<'_>,
    condition: &easymo_dsl::ast::Condition,
    (text, when): (&str, &Path),
    endpoints: &[&str],
) -> bool {
    let Some(scope) = &condition.scope else {
        return true;
    };
    let span = cx.index.inside(when, scope.span, text);
    let problem = if !PER_ENDPOINT.contains(&condition.metric.node.as_str()) {
        Diagnostic::error(
            codes::ALERT_SCOPE,
            format!(
                "`{}` is a figure of the whole system, not of one endpoint",
                condition.metric.node
            ),
        )
        .at(cx.file, span, "")
        .help(format!(
            "drop `on {}`; per endpoint: {}",
            scope.node,
            PER_ENDPOINT.join(", ")
        ))
    } else if !endpoints.contains(&scope.node.as_str()) {
        Diagnostic::error(
            codes::ALERT_SCOPE,
            format!("no endpoint is named `{}`", scope.node),
        )
        .at(cx.file, span, "")
        .maybe_help(did_you_mean(&scope.node, endpoints.iter().copied()))
    } else {
        return true;
    };
    cx.out.push(problem);
    false
}

/// Each channel with the one credential its kind takes, resolved.
fn compile_channels(
    cx: &mut Cx<'_>,
    raw: &[(String, raw::Channel)],
    path: &Path,
) -> BTreeMap<String, Channel> {
    let mut channels = BTreeMap::new();
    for (name, channel) in raw {
        let cp = path.key(name);
        let (field, value) = match channel.kind {
            raw::ChannelKind::Slack => ("webhook_url", &channel.webhook_url),
            raw::ChannelKind::Pagerduty => ("routing_key", &channel.routing_key),
            raw::ChannelKind::Webhook => ("url", &channel.url),
        };
        let fields = [
            ("webhook_url", &channel.webhook_url),
            ("routing_key", &channel.routing_key),
            ("url", &channel.url),
            ("events_url", &channel.events_url),
        ];
        for (other, set) in fields {
            let applies = other == field
                || (other == "events_url" && channel.kind == raw::ChannelKind::Pagerduty);
            if set.is_some() && !applies {
                cx.error(
                    codes::INVALID_VALUE,
                    format!("`{other}` does not apply to a {:?} channel", channel.kind)
                        .to_lowercase(),
                    &cp.key(other),
                    "",
                );
            }
        }
        if let Some(url) = &channel.events_url {
            cx.base_url(
                url,
                &cp.key("events_url"),
                "PagerDuty's Events API v2 address",
            );
        }
        match value {
            None => {
                cx.error(
                    codes::MISSING_FIELD,
                    format!("channel `{name}` needs `{field}`"),
                    &cp,
                    "",
                );
            }
            Some(v) => {
                if let Some(target) = cx.secret(v, &cp.key(field), "an alert channel credential") {
                    channels.insert(
                        name.clone(),
                        Channel {
                            kind: channel.kind,
                            target,
                            events_url: channel.events_url.clone(),
                        },
                    );
                }
            }
        }
    }
    channels
}

/// A rule notifies at least one channel, and only declared ones.
fn check_notified(cx: &mut Cx<'_>, rule: &raw::AlertRule, rp: &Path, declared: &[&str]) {
    for (c, channel) in rule.notify.iter().enumerate() {
        if !declared.contains(&channel.as_str()) {
            cx.error(
                codes::UNKNOWN_CHANNEL,
                format!("unknown alert channel `{channel}`"),
                &rp.key("notify").index(c),
                "not declared under `alerts.channels`",
            )
            .help = did_you_mean(channel, declared.iter().copied());
        }
    }
    if rule.notify.is_empty() {
        cx.error(
            codes::UNKNOWN_CHANNEL,
            format!("alert `{}` notifies nobody", rule.name),
            &rp.key("notify"),
            "",
        );
    }
}

/// A rule's `when:`, parsed, with a known metric and a threshold in that metric's unit.
fn compile_condition(cx: &mut Cx<'_>, text: &str, when: &Path) -> Option<Condition> {
    let condition = match parse_condition(text) {
        Ok(c) => c,
        Err(e) => {
            let span = cx.index.inside(when, e.span, text);
            cx.out.push(
                Diagnostic::error(
                    codes::ALERT_SYNTAX,
                    format!("alert condition does not parse: {e}"),
                )
                .at(cx.file, span, "")
                .help(
                    "write `metric op value[unit] [for duration]`, e.g. `error_rate > 5% for 15m`",
                ),
            );
            return None;
        }
    };
    let metric = &condition.metric;
    let Some((_, unit)) = METRICS.iter().find(|(m, _)| *m == metric.node) else {
        let span = cx.index.inside(when, metric.span, text);
        let known = METRICS.iter().map(|(m, _)| *m);
        cx.out.push(
            Diagnostic::error(
                codes::UNKNOWN_METRIC,
                format!("unknown metric `{}`", metric.node),
            )
            .at(cx.file, span, "")
            .maybe_help(did_you_mean(&metric.node, known.clone()).or_else(|| {
                Some(format!(
                    "known metrics: {}",
                    known.collect::<Vec<_>>().join(", ")
                ))
            })),
        );
        return None;
    };
    if let Some(problem) = threshold_problem(&condition) {
        let span = cx.index.inside(when, condition.threshold.span, text);
        cx.out
            .push(Diagnostic::error(codes::WRONG_UNIT, problem).at(cx.file, span, ""));
        return None;
    }
    let given = condition.unit.as_ref().map(|u| u.node);
    let fits = match (unit, given) {
        (MetricUnit::Percent, Some(u)) => !u.is_time(),
        (MetricUnit::Time, Some(u)) => u.is_time(),
        (MetricUnit::Count, None) => true,
        _ => false,
    };
    if fits {
        return Some(condition);
    }
    let expected = match unit {
        MetricUnit::Percent => "a percentage, e.g. `5%`",
        MetricUnit::Time => "a time, e.g. `1500ms` or `3s`",
        MetricUnit::Count => "a plain number, e.g. `100`",
    };
    let span = match &condition.unit {
        Some(u) => cx.index.inside(when, u.span, text),
        None => cx.index.inside(when, condition.threshold.span, text),
    };
    cx.out.push(
        Diagnostic::error(
            codes::WRONG_UNIT,
            format!("`{}` is compared with {}", metric.node, expected),
        )
        .at(
            cx.file,
            span,
            match given {
                Some(u) => format!("`{}` does not fit", u.as_str()),
                None => "unit missing".to_owned(),
            },
        ),
    );
    None
}

/// Thresholds and windows that can never mean what the author wanted.
fn threshold_problem(condition: &Condition) -> Option<String> {
    let value = condition.threshold.node;
    if !value.is_finite() || value < 0.0 {
        return Some(format!("threshold {value} is negative"));
    }
    if condition.unit.as_ref().map(|u| u.node) == Some(easymo_dsl::ast::Unit::Percent)
        && value > 100.0
    {
        return Some(format!("a rate of {value}% can never be reached"));
    }
    if condition
        .sustained
        .as_ref()
        .is_some_and(|d| d.node.is_zero())
    {
        return Some(
            "`for 0…` is no duration: drop `for`, or give a window such as `for 5m`".to_owned(),
        );
    }
    None
}
