//! What a rule's condition comes to over a window, and the Prometheus state machine.
//!
//! Owns: each metric's value from window figures ([`Observation`]), the threshold in the same
//! unit, and the pending → firing → resolved steps with `for` and the repeat interval
//! ([`Evaluator`]). Pure: no clock, no database, no network. The engine feeds it roll-ups from
//! Postgres; `easymo alerts test` feeds it series written in promtool's format, so both run the
//! very same rules.

use std::collections::{BTreeMap, HashMap};

use easymo_dsl::ast::Unit;

use crate::config::{AlertRule, AlertSeverity, Alerting};
use crate::metrics::{Figures, SystemFigures};
use crate::store::alerts::StoredState;

/// The figures of one window, for every rule evaluated at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The window's length in seconds.
    pub window_seconds: f64,
    /// Figures per endpoint over the window.
    pub endpoints: HashMap<String, Figures>,
    /// Figures read from the system of record.
    pub system: SystemFigures,
}

impl Observation {
    /// The figures of one endpoint, or of all together; an endpoint that served nothing in
    /// the window has zero requests (which `requests_per_minute < 1` must see).
    fn figures(&self, scope: Option<&str>) -> Figures {
        let mut all = Figures::default();
        for (endpoint, figures) in &self.endpoints {
            if scope.is_none_or(|s| s == endpoint) {
                all.add(figures);
            }
        }
        all
    }

    /// The rule's metric over this window, in the unit of [`threshold`]; `None` when there is
    /// nothing to measure (no requests, no settled payments, no such series), which never
    /// fires.
    pub fn value(&self, rule: &AlertRule) -> Option<f64> {
        self.measure(rule).filter(|v| !v.is_nan())
    }

    fn measure(&self, rule: &AlertRule) -> Option<f64> {
        let condition = &rule.condition;
        let scope = condition.scope.as_ref().map(|s| s.node.as_str());
        let system = &self.system;
        match condition.metric.node.as_str() {
            "dlq_size" => Some(system.dlq_size),
            "outbox_pending" => Some(system.outbox_pending),
            "payment_success_rate" => {
                let settled = system.payments_successful + system.payments_failed;
                (settled > 0.0).then(|| system.payments_successful * 100.0 / settled)
            }
            "error_rate" => self.figures(scope).error_rate(),
            "requests_per_minute" => (self.window_seconds > 0.0)
                .then(|| self.figures(scope).requests * 60.0 / self.window_seconds),
            metric => {
                let q = percentile(metric)?;
                self.figures(scope).quantile(q)
            }
        }
    }
}

/// `p95_latency` is the 0.95 quantile.
pub fn percentile(metric: &str) -> Option<f64> {
    let digits = metric.strip_prefix('p')?.strip_suffix("_latency")?;
    let p: f64 = digits.parse().ok()?;
    Some(p / 100.0)
}

/// The rule's threshold in the unit values come in: percent for rates, seconds for latency,
/// a count otherwise.
pub fn threshold(rule: &AlertRule) -> f64 {
    let condition = &rule.condition;
    let value = condition.threshold.node;
    match condition.unit.as_ref().map(|u| u.node) {
        Some(Unit::Millis) => value / 1000.0,
        Some(Unit::Minutes) => value * 60.0,
        Some(Unit::Hours) => value * 3600.0,
        _ => value,
    }
}

/// The runbook as a link when a base URL is configured, else as its path.
pub fn runbook_link(rule: &AlertRule, alerting: &Alerting) -> Option<String> {
    let path = rule.runbook.as_deref()?;
    Some(match &alerting.runbook_base_url {
        Some(base) => format!("{base}{}", path.trim_start_matches("./")),
        None => path.to_owned(),
    })
}

/// The condition as written in routes.yaml.
pub fn condition_text(rule: &AlertRule) -> String {
    let c = &rule.condition;
    let scope = c
        .scope
        .as_ref()
        .map(|s| format!(" on {}", s.node))
        .unwrap_or_default();
    let op = c.op.node.as_str();
    let unit = c.unit.as_ref().map_or("", |u| u.node.as_str());
    let hold = c
        .sustained
        .as_ref()
        .map(|d| format!(" for {}", humantime::format_duration(d.node)))
        .unwrap_or_default();
    format!(
        "{}{scope} {op} {}{unit}{hold}",
        c.metric.node, c.threshold.node
    )
}

/// The labels of a rule's alert, the same in both engines: `alertname`, `severity`, and
/// `endpoint` for a rule taken on one.
pub fn alert_labels(rule: &AlertRule) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("alertname".to_owned(), rule.alert_name()),
        ("severity".to_owned(), severity(rule).to_owned()),
    ]);
    if let Some(scope) = &rule.condition.scope {
        labels.insert("endpoint".to_owned(), scope.node.clone());
    }
    labels
}

/// The annotations of a rule's alert, the same in both engines: `summary` (the rule and its
/// condition as written) and `runbook_url`.
pub fn alert_annotations(rule: &AlertRule, alerting: &Alerting) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(
        "summary".to_owned(),
        format!("{}: {}", rule.name, condition_text(rule)),
    )]);
    if let Some(runbook) = runbook_link(rule, alerting) {
        annotations.insert("runbook_url".to_owned(), runbook);
    }
    annotations
}

/// `critical` or `warning`.
pub fn severity(rule: &AlertRule) -> &'static str {
    match rule.severity {
        AlertSeverity::Critical => "critical",
        AlertSeverity::Warning => "warning",
    }
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// The condition holds, not yet for `for`.
    Pending {
        /// When it started to hold.
        since: f64,
    },
    /// Held for `for`; channels have been told.
    Firing {
        /// When it started to hold.
        since: f64,
        /// When channels were last told.
        notified_at: f64,
    },
}

/// What channels must hear of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The rule's name as written.
    pub rule: String,
    /// The alert name (`ErrorRateCritical`).
    pub alert: String,
    /// Firing (first time or repeated) or resolved.
    pub status: Status,
    /// When the condition started to hold.
    pub starts_at: f64,
    /// When it stopped holding, for resolved notices.
    pub ends_at: Option<f64>,
    /// The value at this evaluation (for resolved: the last value while firing).
    pub value: Option<f64>,
    /// The rule's severity.
    pub severity: AlertSeverity,
}

/// Firing or resolved, as Alertmanager says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fires.
    Firing,
    /// Stopped firing.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Every rule's phase, stepped once per evaluation.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    phases: BTreeMap<String, (Phase, Option<f64>)>,
}

impl Evaluator {
    /// Starts from stored states (a restart, a new leader): `for` progress goes on.
    pub fn restore(states: &[StoredState]) -> Self {
        let phases = states
            .iter()
            .map(|s| {
                let phase = match (s.firing, s.notified_at) {
                    (true, Some(notified_at)) => Phase::Firing {
                        since: s.active_since,
                        notified_at,
                    },
                    // Firing but never told (a leader died between the two): tell now.
                    (true, None) => Phase::Firing {
                        since: s.active_since,
                        notified_at: f64::NEG_INFINITY,
                    },
                    (false, _) => Phase::Pending {
                        since: s.active_since,
                    },
                };
                (s.alert.clone(), (phase, s.value))
            })
            .collect();
        Evaluator { phases }
    }

    /// What to store: every rule that is pending or firing.
    pub fn states(&self) -> Vec<StoredState> {
        self.phases
            .iter()
            .map(|(alert, (phase, value))| {
                let (firing, since, notified_at) = match *phase {
                    Phase::Pending { since } => (false, since, None),
                    Phase::Firing { since, notified_at } => {
                        (true, since, notified_at.is_finite().then_some(notified_at))
                    }
                };
                StoredState {
                    alert: alert.clone(),
                    firing,
                    active_since: since,
                    notified_at,
                    value: *value,
                }
            })
            .collect()
    }

    /// The phase of `alert`, if pending or firing.
    pub fn phase(&self, alert: &str) -> Option<Phase> {
        self.phases.get(alert).map(|(phase, _)| *phase)
    }

    /// Rules firing now.
    pub fn firing(&self) -> usize {
        self.phases
            .values()
            .filter(|(p, _)| matches!(p, Phase::Firing { .. }))
            .count()
    }

    /// Evaluates every rule at `now` (Unix seconds) over `observation`; returns what channels
    /// must hear. A rule that left the config is forgotten without a word: it is no longer
    /// anyone's to resolve.
    pub fn evaluate(
        &mut self,
        rules: &[AlertRule],
        observation: &Observation,
        now: f64,
        repeat_interval: f64,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut phases = BTreeMap::new();
        for rule in rules {
            let alert = rule.alert_name();
            let value = observation.value(rule);
            let holds = value.is_some_and(|v| rule.condition.op.node.holds(v, threshold(rule)));
            let hold_for = rule
                .condition
                .sustained
                .as_ref()
                .map_or(0.0, |d| d.node.as_secs_f64());
            let previous = self.phases.get(&alert).copied();
            let notice = |status, since, ends_at, value| Notice {
                rule: rule.name.clone(),
                alert: alert.clone(),
                status,
                starts_at: since,
                ends_at,
                value,
                severity: rule.severity,
            };
            let next = match (previous.map(|(p, _)| p), holds) {
                (None, false) => None,
                (Some(Phase::Pending { .. }), false) => None,
                (Some(Phase::Firing { since, .. }), false) => {
                    let last = previous.and_then(|(_, v)| v);
                    notices.push(notice(Status::Resolved, since, Some(now), last));
                    None
                }
                (None, true) | (Some(Phase::Pending { .. }), true) => {
                    let since = match previous {
                        Some((Phase::Pending { since }, _)) => since,
                        _ => now,
                    };
                    if now - since >= hold_for {
                        notices.push(notice(Status::Firing, since, None, value));
                        Some(Phase::Firing {
                            since,
                            notified_at: now,
                        })
                    } else {
                        Some(Phase::Pending { since })
                    }
                }
                (Some(Phase::Firing { since, notified_at }), true) => {
                    if now - notified_at >= repeat_interval {
                        notices.push(notice(Status::Firing, since, None, value));
                        Some(Phase::Firing {
                            since,
                            notified_at: now,
                        })
                    } else {
                        Some(Phase::Firing { since, notified_at })
                    }
                }
            };
            if let Some(phase) = next {
                // A resolved rule keeps no value; a firing one keeps its last for the resolve.
                phases.insert(alert, (phase, value));
            }
        }
        self.phases = phases;
        notices
    }
}

#[cfg(test)]
mod tests;
