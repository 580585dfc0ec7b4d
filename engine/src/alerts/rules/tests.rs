use super::*;

fn rule(name: &str, when: &str) -> AlertRule {
    let Ok(condition) = easymo_dsl::parser::parse_condition(when) else {
        panic!("`{when}` parses");
    };
    AlertRule {
        name: name.to_owned(),
        condition,
        severity: AlertSeverity::Critical,
        channels: vec!["slack".to_owned()],
        runbook: None,
    }
}

/// A window on `wa` with these answers: (status, seconds, count).
fn window(answers: &[(u16, f64, usize)], failed_flows: usize) -> Observation {
    let tally = crate::metrics::Tally::new(&[0.5, 1.5, 3.0]);
    for (status, seconds, n) in answers {
        for _ in 0..*n {
            tally.request("wa", *status, *seconds, *status == 429);
        }
    }
    for _ in 0..failed_flows {
        tally.failed_flow("wa");
    }
    Observation {
        window_seconds: 300.0,
        endpoints: tally.take(),
        ..Observation::default()
    }
}

fn healthy() -> Observation {
    window(&[(200, 0.05, 100)], 0)
}

fn failing() -> Observation {
    window(&[(200, 0.05, 40), (500, 0.05, 60)], 0)
}

#[test]
fn pending_then_firing_after_for_then_resolved() {
    let rules = [rule("error rate critical", "error_rate > 50% for 5m")];
    let mut evaluator = Evaluator::default();
    assert!(evaluator
        .evaluate(&rules, &failing(), 0.0, 3600.0)
        .is_empty());
    assert_eq!(
        evaluator.phase("ErrorRateCritical"),
        Some(Phase::Pending { since: 0.0 })
    );
    assert!(evaluator
        .evaluate(&rules, &failing(), 240.0, 3600.0)
        .is_empty());
    let fired = evaluator.evaluate(&rules, &failing(), 300.0, 3600.0);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].status, Status::Firing);
    assert_eq!(fired[0].starts_at, 0.0);
    assert_eq!(fired[0].value, Some(60.0));
    // Still failing: no repeat before the repeat interval.
    assert!(evaluator
        .evaluate(&rules, &failing(), 600.0, 3600.0)
        .is_empty());
    let resolved = evaluator.evaluate(&rules, &healthy(), 615.0, 3600.0);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].status, Status::Resolved);
    assert_eq!(resolved[0].ends_at, Some(615.0));
    assert_eq!(resolved[0].value, Some(60.0), "the last value while firing");
    assert_eq!(evaluator.phase("ErrorRateCritical"), None);
}

#[test]
fn flapping_within_for_never_fires() {
    let rules = [rule("errors", "error_rate > 5% for 15m")];
    let mut evaluator = Evaluator::default();
    for minute in 0..60 {
        let observation = if minute % 10 < 9 {
            failing()
        } else {
            healthy()
        };
        let notices = evaluator.evaluate(&rules, &observation, f64::from(minute) * 60.0, 3600.0);
        assert!(notices.is_empty(), "minute {minute}: {notices:?}");
    }
}

#[test]
fn a_firing_alert_repeats_at_the_repeat_interval_only() {
    let rules = [rule("dead letters", "dlq_size > 100")];
    let mut observation = Observation::default();
    observation.system.dlq_size = 101.0;
    let mut evaluator = Evaluator::default();
    let mut sent = Vec::new();
    for step in 0..=16 {
        let now = f64::from(step) * 15.0 * 60.0;
        sent.extend(
            evaluator
                .evaluate(&rules, &observation, now, 3600.0)
                .into_iter()
                .map(|n| (now, n.status)),
        );
    }
    let hours: Vec<f64> = sent.iter().map(|(t, _)| t / 3600.0).collect();
    assert_eq!(
        hours,
        vec![0.0, 1.0, 2.0, 3.0, 4.0],
        "no `for`: fires at once"
    );
}

#[test]
fn a_rate_limit_storm_is_not_an_error() {
    let rules = [rule("errors", "error_rate > 5%")];
    let mut evaluator = Evaluator::default();
    let storm = window(&[(200, 0.05, 50), (429, 0.001, 5000)], 0);
    assert!(evaluator.evaluate(&rules, &storm, 0.0, 3600.0).is_empty());
    let failed_flows = window(&[(200, 0.05, 50)], 5);
    assert_eq!(
        evaluator
            .evaluate(&rules, &failed_flows, 15.0, 3600.0)
            .len(),
        1,
        "failed flows answered 200 count"
    );
}

#[test]
fn latency_thresholds_and_scopes() {
    let rules = [
        rule("slow", "p95_latency > 1500ms"),
        rule("slow elsewhere", "p95_latency on other > 1500ms"),
    ];
    let mut evaluator = Evaluator::default();
    let at_edge = window(&[(200, 0.1, 95), (200, 1.5, 5)], 0);
    assert!(evaluator.evaluate(&rules, &at_edge, 0.0, 3600.0).is_empty());
    let over = window(&[(200, 0.1, 94), (200, 1.6, 6)], 0);
    let fired = evaluator.evaluate(&rules, &over, 15.0, 3600.0);
    assert_eq!(
        fired.len(),
        1,
        "only the rule on the endpoint that served: {fired:?}"
    );
    assert_eq!(fired[0].alert, "Slow");
}

#[test]
fn no_data_never_fires() {
    let rules = [
        rule("errors", "error_rate > 5%"),
        rule("payments", "payment_success_rate < 90%"),
        rule("quiet", "requests_per_minute < 1"),
        rule("quiet elsewhere", "requests_per_minute on other > 1"),
    ];
    let mut evaluator = Evaluator::default();
    let notices = evaluator.evaluate(&rules, &Observation::default(), 0.0, 3600.0);
    assert!(notices.is_empty(), "{notices:?}");
    let mut observation = Observation {
        window_seconds: 300.0,
        ..Observation::default()
    };
    observation.system.payments_successful = 8.0;
    observation.system.payments_failed = 2.0;
    let notices = evaluator.evaluate(&rules, &observation, 15.0, 3600.0);
    let names: Vec<&str> = notices.iter().map(|n| n.alert.as_str()).collect();
    // 80% < 90%; and no request in a whole window is a value, not missing data: traffic stopped.
    assert_eq!(names, vec!["Payments", "Quiet"], "{notices:?}");
}

#[test]
fn for_progress_survives_a_restart() {
    let rules = [rule("errors", "error_rate > 5% for 5m")];
    let mut first = Evaluator::default();
    first.evaluate(&rules, &failing(), 0.0, 3600.0);
    first.evaluate(&rules, &failing(), 180.0, 3600.0);
    let mut second = Evaluator::restore(&first.states());
    assert!(second
        .evaluate(&rules, &failing(), 240.0, 3600.0)
        .is_empty());
    let fired = second.evaluate(&rules, &failing(), 300.0, 3600.0);
    assert_eq!(
        fired.len(),
        1,
        "five minutes after the first evaluation, not after the restart"
    );
    let mut third = Evaluator::restore(&second.states());
    assert!(
        third.evaluate(&rules, &failing(), 315.0, 3600.0).is_empty(),
        "a new leader does not fire again"
    );
}

#[test]
fn alert_names_are_prometheus_names() {
    assert_eq!(
        rule("error rate critical", "dlq_size > 1").alert_name(),
        "ErrorRateCritical"
    );
    assert_eq!(
        rule("p95 latency: slow!", "dlq_size > 1").alert_name(),
        "P95LatencySlow"
    );
}
