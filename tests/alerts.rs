//! Alert rules evaluated by real engines and delivered to real HTTP fakes of Slack, PagerDuty
//! and an Alertmanager receiver: what each receives, in order, when a rule fires and resolves;
//! a receiver that is down; a leader that dies.

use std::time::Duration;

use crate::support::receivers::{FakeReceivers, Received};
use crate::support::{exec, text_delivery, ConfigDir, Engine};

/// The shipped config with its alert rules replaced by fast ones (a 1 s interval) that tell
/// the fake receivers.
fn config(receivers: &FakeReceivers, rules: &str) -> ConfigDir {
    let pagerduty = receivers.url("pagerduty");
    let rules = rules.to_owned();
    ConfigDir::shipped(move |text| {
        let text = crate::support::unlimited(text);
        let Some(start) = text.find("\nalerts:\n") else {
            panic!("the shipped routes.yaml has alerts");
        };
        format!(
            "{}\nalerts:
  evaluation_interval: 1s
  window: 10s
  repeat_interval: 1h
  runbook_base_url: https://runbooks.easymo.test/engine/
  channels:
    slack:
      type: slack
      webhook_url: ${{SLACK_WEBHOOK_URL}}
    pagerduty:
      type: pagerduty
      routing_key: ${{PAGERDUTY_ROUTING_KEY}}
      events_url: {pagerduty}
    oncall:
      type: webhook
      url: ${{ALERT_WEBHOOK_URL}}
  rules:
{rules}",
            &text[..start]
        )
    })
}

fn env(receivers: &FakeReceivers) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = crate::support::engine_env()
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .filter(|(k, _)| *k != "SLACK_WEBHOOK_URL")
        .collect();
    env.push(("SLACK_WEBHOOK_URL", receivers.url("slack")));
    env.push(("ALERT_WEBHOOK_URL", receivers.url("alertmanager")));
    env
}

/// An engine on a fresh database with `rules`, telling `receivers`; the config stays alive
/// beside it.
fn engine_with(receivers: &FakeReceivers, rules: &str) -> (ConfigDir, Engine) {
    let config = config(receivers, rules);
    let env = env(receivers);
    let engine = Engine::start_with(&config, "127.0.0.1:0", &borrowed(&env));
    (config, engine)
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn message(engine: &Engine, from: &str, id: &str, text: &str) {
    let response = engine.whatsapp(&text_delivery(from, id, text));
    assert_eq!(response.status, 200, "{}", response.text());
}

/// A received body with its times replaced, so that a snapshot pins everything else.
fn pinned(received: &Received) -> serde_json::Value {
    let text = received.body.to_string();
    let times = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex");
    let text = times.replace_all(&text, |c: &regex::Captures<'_>| {
        if &c[0] == "0001-01-01T00:00:00Z" {
            c[0].to_owned()
        } else {
            "[time]".to_owned()
        }
    });
    serde_json::json!({ "path": received.path, "body": serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default() })
}

/// Parks one outbox row as dead, as a permanent Graph API error would.
fn dead_letter(database_url: &str, recipient: &str) {
    exec(
        database_url,
        &format!(
            "insert into outbox (recipient, phone_number_id, template, body, status, dead_reason)
             values ('{recipient}', '1234567890', 'menu', '{{}}', 'dead', 'permanent')"
        ),
    );
}

fn count(received: &[Received], path: &str, status: &str) -> usize {
    received
        .iter()
        .filter(|r| r.taken && r.path == path && r.body.to_string().to_lowercase().contains(status))
        .count()
}

#[test]
fn failing_flows_fire_on_every_channel_and_resolve() {
    let receivers = FakeReceivers::start();
    let (_config, engine) = engine_with(
        &receivers,
        "    - name: flows failing
      when: error_rate on wa-webhook-core > 50% for 2s
      severity: critical
      notify: [slack, pagerduty, oncall]
      runbook: docs/runbooks/error-rate.md
",
    );
    // The jobs flow's first query now fails: every "jobs" is a failed flow, answered 200.
    exec(&engine.database_url, "drop table job_categories cascade");
    for n in 0..4 {
        message(
            &engine,
            &format!("25078810000{n}"),
            &format!("wamid.fail.{n}"),
            "jobs",
        );
    }
    let fired = receivers.wait_until(Duration::from_secs(20), |r| {
        ["/slack", "/pagerduty", "/alertmanager"]
            .iter()
            .all(|p| count(r, p, "firing") + count(r, p, "trigger") > 0)
    });
    assert_eq!(fired.len(), 3, "one notice per channel: {fired:#?}");
    let states = engine.rows("select alert, state from alert_states");
    assert_eq!(
        states,
        serde_json::json!([{"alert": "FlowsFailing", "state": "firing"}])
    );
    // Healthy traffic brings the rate under 50%: resolved, once, on every channel.
    for n in 0..6 {
        message(
            &engine,
            &format!("25078820000{n}"),
            &format!("wamid.ok.{n}"),
            "menu",
        );
    }
    let all = receivers.wait_until(Duration::from_secs(20), |r| r.len() >= 6);
    assert_eq!(all.len(), 6, "{all:#?}");
    let mut by_channel: Vec<serde_json::Value> = all.iter().map(pinned).collect();
    by_channel.sort_by_key(|v| v["path"].as_str().unwrap_or_default().to_owned());
    let pretty = serde_json::to_string_pretty(&by_channel).unwrap_or_default();
    insta::assert_snapshot!("alert_notifications", pretty);
    assert_eq!(
        engine.rows("select count(*) as n from alert_states"),
        serde_json::json!([{"n": 0}])
    );
    // Nothing more: no repeat within the repeat interval, no second resolve.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receivers.received().len(), 6);
    let metrics = engine.request("GET", "/metrics").send().text();
    for channel in ["slack", "pagerduty", "oncall"] {
        let line =
            format!("easymo_alert_notifications_total{{channel=\"{channel}\",result=\"sent\"}} 2");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("easymo_alerts_leader 1"), "{metrics}");
}

#[test]
fn a_receiver_that_is_down_is_retried_and_holds_up_nobody() {
    let receivers = FakeReceivers::start();
    receivers.down("slack");
    let (_config, engine) = engine_with(
        &receivers,
        "    - name: dead letters
      when: dlq_size > 0
      severity: warning
      notify: [slack, oncall]
      runbook: docs/runbooks/dead-letters.md
",
    );
    dead_letter(&engine.database_url, "250788300000");
    // Slack refuses; the webhook receiver, behind its own queue, is told at once.
    let received = receivers.wait_until(Duration::from_secs(15), |r| {
        count(r, "/alertmanager", "firing") == 1
            && r.iter().filter(|x| x.path == "/slack").count() >= 2
    });
    assert_eq!(
        count(&received, "/alertmanager", "firing"),
        1,
        "{received:#?}"
    );
    assert!(
        received
            .iter()
            .filter(|r| r.path == "/slack" && !r.taken)
            .count()
            >= 2,
        "retried: {received:#?}"
    );
    // Requests are answered while Slack is down.
    message(&engine, "250788300001", "wamid.down.1", "menu");
    receivers.up("slack");
    let received = receivers.wait_until(Duration::from_secs(20), |r| {
        count(r, "/slack", "firing") == 1
    });
    assert_eq!(count(&received, "/slack", "firing"), 1, "{received:#?}");
    let metrics = engine.request("GET", "/metrics").send().text();
    assert!(
        metrics.contains(r#"easymo_alert_notifications_total{channel="slack",result="sent"} 1"#),
        "{metrics}"
    );
    let failed = regex::Regex::new(
        r#"easymo_alert_notifications_total\{channel="slack",result="failed"\} (\d+)"#,
    )
    .expect("regex");
    let failures: u64 = failed
        .captures(&metrics)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "{metrics}");
}

#[test]
fn a_dead_leader_is_replaced_and_its_alert_is_not_sent_twice() {
    let receivers = FakeReceivers::start();
    let config = config(
        &receivers,
        "    - name: dead letters
      when: dlq_size > 0
      severity: critical
      notify: [pagerduty]
      runbook: docs/runbooks/dead-letters.md
",
    );
    let env = env(&receivers);
    let first = Engine::start_with(&config, "127.0.0.1:0", &borrowed(&env));
    let mut shared = borrowed(&env);
    shared.retain(|(k, _)| *k != "DATABASE_URL");
    shared.push(("DATABASE_URL", &first.database_url));
    let second = Engine::start_on(&config, "127.0.0.1:0", &shared);
    dead_letter(&first.database_url, "250788400000");
    let fired = receivers.wait_until(Duration::from_secs(15), |r| {
        count(r, "/pagerduty", "trigger") == 1
    });
    assert_eq!(count(&fired, "/pagerduty", "trigger"), 1, "{fired:#?}");
    let holder = first.rows("select holder from leases where name = 'leader'");
    let holder = holder[0]["holder"].as_str().unwrap_or_default().to_owned();
    // Kill whichever evaluates, without a chance to let go of the lease.
    let held_by = |engine: &Engine| {
        let pid = engine.pid();
        holder.starts_with(&format!("pid{pid}-")) || holder.contains(&format!("-{pid}-"))
    };
    let (leader, survivor) = if held_by(&first) {
        (first, second)
    } else {
        (second, first)
    };
    leader.signal("KILL");
    drop(leader);
    // The survivor takes over within a minute (the leader lease lasts 30 s, renewed every
    // 10 s), keeps the firing state, and does not page again.
    survivor.rows_when(
        "select holder from leases where name = 'leader' and expires_at > now()",
        Duration::from_secs(60),
        "the survivor holds the lease",
        |rows| rows[0]["holder"].as_str().is_some_and(|h| h != holder),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&receivers.received(), "/pagerduty", "trigger"), 1);
    // The new leader resolves what the old one fired, with the same dedup key.
    exec(
        &survivor.database_url,
        "delete from outbox where status = 'dead'",
    );
    let all = receivers.wait_until(Duration::from_secs(15), |r| {
        count(r, "/pagerduty", "resolve") == 1
    });
    assert_eq!(count(&all, "/pagerduty", "resolve"), 1, "{all:#?}");
    assert_eq!(
        all[0].body["dedup_key"],
        all[all.len() - 1].body["dedup_key"]
    );
}

/// The shipped rule tests, the config they test, and a scratch directory holding the export
/// beside copies of the tests, as promtool reads them.
fn exported_beside_tests() -> (ConfigDir, String, Vec<String>) {
    let config = ConfigDir::shipped(|text| text.to_owned());
    let routes = config.routes().display().to_string();
    let exported = easymo(&[
        "alerts",
        "export",
        "--format",
        "prometheus",
        "--config",
        &routes,
    ]);
    assert_eq!(exported.status.code(), Some(0), "{exported:?}");
    std::fs::write(config.dir.join("easymo.rules.yml"), &exported.stdout).expect("write rules");
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(crate::support::repo_path("tests/alerts"))
        .expect("tests/alerts")
        .flatten()
    {
        std::fs::copy(entry.path(), config.dir.join(entry.file_name())).expect("copy test file");
        tests.push(entry.file_name().to_string_lossy().into_owned());
    }
    tests.sort();
    assert!(tests.len() >= 4, "{tests:?}");
    (config, routes, tests)
}

fn easymo(args: &[&str]) -> std::process::Output {
    crate::support::easymo(args, &[])
}

/// Runs `easymo alerts test` on `files` in the config's directory.
fn alerts_test(config: &ConfigDir, routes: &str, files: &[String]) -> (Option<i32>, String) {
    let paths: Vec<String> = files
        .iter()
        .map(|f| config.dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["alerts", "test", "--config", routes];
    args.extend(paths.iter().map(String::as_str));
    let output = easymo(&args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn promtool(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let output = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool does not run ({e}): apt-get install prometheus (scripts/test does)")
        });
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_rule_tests_pass_in_the_engine_and_in_promtool_alike() {
    let (config, routes, tests) = exported_beside_tests();
    let (code, text) = alerts_test(&config, &routes, &tests);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("SUCCESS").count(), tests.len(), "{text}");

    let (ok, text) = promtool(&["check", "rules", "easymo.rules.yml"], &config.dir);
    assert!(ok, "{text}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, text) = promtool(&args, &config.dir);
    assert!(ok, "{text}");
    assert_eq!(text.matches("SUCCESS").count(), tests.len(), "{text}");
}

#[test]
fn a_wrong_expectation_fails_in_both_engines() {
    let (config, routes, _) = exported_beside_tests();
    // The critical error-rate alert expected a minute before its `for` has passed.
    let shipped = std::fs::read_to_string(config.dir.join("error-rate.yml")).expect("read");
    assert!(shipped.contains("      - eval_time: 6m\n"));
    let broken = shipped.replace("      - eval_time: 6m\n", "      - eval_time: 5m\n");
    std::fs::write(config.dir.join("broken.yml"), broken).expect("write");
    let (code, text) = alerts_test(&config, &routes, &["broken.yml".to_owned()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("alertname: ErrorRateCritical, time: 5m"),
        "{text}"
    );
    let (ok, text) = promtool(&["test", "rules", "broken.yml"], &config.dir);
    assert!(!ok, "{text}");
    assert!(
        text.contains("alertname: ErrorRateCritical, time: 5m"),
        "{text}"
    );
}

#[test]
fn metrics_read_with_prometheus_own_parser() {
    let receivers = FakeReceivers::start();
    let (_config, engine) = engine_with(
        &receivers,
        "    - name: dead letters
      when: dlq_size > 0
      severity: warning
      notify: [slack]
",
    );
    message(&engine, "250788500000", "wamid.metrics.1", "menu");
    let forged = engine.forged_whatsapp();
    assert_eq!(forged.status, 403);
    let response = engine.request("GET", "/metrics").send();
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text();
    assert!(
        text.contains(
            r#"easymo_http_requests_total{endpoint="wa-webhook-core",status_class="4xx"} 1"#
        ),
        "{text}"
    );
    // promtool reads the exposition with Prometheus' own parser and lints names and help.
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool does not run ({e}): apt-get install prometheus"));
    {
        use std::io::Write as _;
        let mut stdin = check.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
    let checked = check.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "{}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_grafana_dashboard_queries_exported_metrics_in_valid_promql() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::support::repo_path("docs/grafana-dashboard.json"))
            .expect("docs/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| {
            t["expr"]
                .as_str()
                .map(|e| e.replace("$__rate_interval", "5m"))
        })
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Every metric a panel reads is one the engine exports.
    let receivers = FakeReceivers::start();
    let (config, engine) = engine_with(&receivers, "    - name: dead letters\n      when: dlq_size > 0\n      severity: warning\n      notify: [slack]\n");
    let exposition = engine.request("GET", "/metrics").send().text();
    let mut exported = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split(' ');
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_count", "_sum"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let names = regex::Regex::new(r"easymo_[a-z_]+").expect("regex");
    for expr in &exprs {
        for name in names.find_iter(expr) {
            assert!(
                exported.contains(name.as_str()),
                "`{}` in `{expr}` is not exported: {exported:?}",
                name.as_str()
            );
        }
    }
    // promtool parses each query, as recording rules.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| serde_json::json!({"record": format!("grafana:panel_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "grafana", "rules": rules}]});
    std::fs::write(
        config.dir.join("grafana.rules.yml"),
        serde_yaml::to_string(&file).expect("yaml"),
    )
    .expect("write");
    let (ok, text) = promtool(&["check", "rules", "grafana.rules.yml"], &config.dir);
    assert!(ok, "{text}");
}
