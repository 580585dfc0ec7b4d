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
use crate::config::{AlertRule, Channel, FileSource};

/// Metrics alert rules can watch, with the units their thresholds take.
const METRICS: &[(&str, MetricUnit)] = &[
    ("error_rate", MetricUnit::Percent),
    ("p50_latency", MetricUnit::Time),
    ("p95_latency", MetricUnit::Time),
    ("p99_latency", MetricUnit::Time),
    ("dlq_size", MetricUnit::Count),
    ("outbox_pending", MetricUnit::Count),
    ("requests_per_minute", MetricUnit::Count),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum MetricUnit {
    Percent,
    Time,
    Count,
}

pub(super) struct RawAlerts {
    channels: Vec<(String, raw::Channel)>,
    broken_channels: BTreeSet<String>,
    rules: Vec<(usize, raw::AlertRule)>,
}

pub(super) fn alerts_section(cx: &mut Cx<'_>, value: Option<Value>) -> RawAlerts {
    let path = Path::root().key("alerts");
    let mut alerts = RawAlerts {
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
        if key != "channels" && key != "rules" {
            let span = cx.index.key(&path.key(&key));
            cx.out.push(
                Diagnostic::error(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field `{key}` in `alerts`"),
                )
                .at(cx.file, span, "")
                .maybe_help(did_you_mean(&key, ["channels", "rules"])),
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
                    cx.out.push(d);
                    alerts.broken_channels.insert(name);
                }
            }
        }
    }
    alerts.rules = items(cx, map.remove("rules"), &path.key("rules"));
    alerts
}

pub(super) fn compile_alerts(
    cx: &mut Cx<'_>,
    raw: RawAlerts,
    (base_dir, files): (&FsPath, &dyn FileSource),
) -> (BTreeMap<String, Channel>, Vec<AlertRule>) {
    let path = Path::root().key("alerts");
    let channels = compile_channels(cx, &raw.channels, &path.key("channels"));
    let declared: Vec<&str> = raw
        .channels
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(raw.broken_channels.iter().map(String::as_str))
        .collect();
    let mut rules = Vec::new();
    for (i, rule) in &raw.rules {
        let rp = path.key("rules").index(*i);
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
        if let Some(condition) = compile_condition(cx, &rule.when, &rp.key("when")) {
            rules.push(AlertRule {
                name: rule.name.clone(),
                condition,
                severity: rule.severity,
                channels: rule.notify.clone(),
                runbook: rule.runbook.clone(),
            });
        }
    }
    (channels, rules)
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
        };
        let other = if field == "webhook_url" {
            ("routing_key", &channel.routing_key)
        } else {
            ("webhook_url", &channel.webhook_url)
        };
        if other.1.is_some() {
            cx.error(
                codes::INVALID_VALUE,
                format!(
                    "`{}` does not apply to a {:?} channel",
                    other.0, channel.kind
                )
                .to_lowercase(),
                &cp.key(other.0),
                "",
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
