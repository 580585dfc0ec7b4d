//! The committed routes.yaml and flows: they lint clean, and they declare the system that the
//! engine replaces (the old functions' endpoints, auth, limits and keyword routes).

use std::time::Duration;

use easymo_engine::config::{self, Auth, Config, EndpointKind, EnvPolicy, LimitKey};

use crate::support::repo_path;

fn shipped() -> Config {
    let loaded = config::load(
        &crate::support::repo_path("routes.yaml"),
        &EnvPolicy::Unchecked,
    )
    .expect("routes.yaml readable");
    let rendered = easymo_dsl::diagnostic::render_human(&loaded.sources, &loaded.diagnostics);
    assert!(
        loaded.diagnostics.is_empty(),
        "routes.yaml must lint clean:\n{rendered}"
    );
    loaded.config.expect("loads")
}

fn endpoint<'a>(config: &'a Config, name: &str) -> &'a config::Endpoint {
    config
        .endpoints
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
}

#[test]
fn whatsapp_core_is_signed_limited_and_routes_every_service() {
    let config = shipped();
    let wa = endpoint(&config, "wa-webhook-core");
    assert_eq!(wa.kind, EndpointKind::Whatsapp);
    let Auth::Hmac {
        header,
        prefix,
        secrets,
        ..
    } = &wa.auth
    else {
        panic!("{:?}", wa.auth)
    };
    assert_eq!(
        (header.as_str(), prefix.as_str()),
        ("X-Hub-Signature-256", "sha256=")
    );
    assert_eq!(
        secrets.iter().map(|s| s.var.as_str()).collect::<Vec<_>>(),
        ["WHATSAPP_APP_SECRET"]
    );
    let limit = wa.rate_limit.as_ref().expect("limited");
    assert_eq!(
        (limit.requests.get(), limit.per, limit.key),
        (30, Duration::from_secs(60), LimitKey::Sender)
    );
    assert_eq!(limit.on_limit, config::OnLimit::ReplyOnce);

    let router = wa.router.as_ref().expect("routes");
    for (text, flow) in [
        ("jobs", "jobs"),
        ("Find jobs", "jobs"),
        ("rent property", "property"),
        ("Book ride", "book_ride"),
        ("shop", "shop"),
        ("insurance", "insurance"),
        ("ai agent", "ai_agents"),
        ("MENU", "main_menu"),
        ("cancel", "cancel"),
        ("help!", "help"),
        ("muraho", "main_menu"),
    ] {
        assert_eq!(router.route(text).flow(), flow, "{text}");
    }
    for flow in [
        "insurance",
        "ai_agents",
        "main_menu",
        "jobs",
        "property",
        "book_ride",
        "shop",
    ] {
        assert!(config.flows.index.contains_key(flow), "{flow} not declared");
    }
}

#[test]
fn payments_endpoints_and_the_deprecated_webhook() {
    let config = shipped();
    // MTN signs no callback: an allowlist of its hosts, from the environment (empty while
    // linting without it).
    let momo = endpoint(&config, "momo-webhook");
    assert!(
        matches!(&momo.auth, Auth::IpAllowlist(_)),
        "{:?}",
        momo.auth
    );
    let raw = std::fs::read_to_string(crate::support::repo_path("routes.yaml")).expect("routes");
    assert!(raw.contains("cidrs: [\"${MOMO_CALLBACK_CIDRS}\"]"));

    let sms = endpoint(&config, "momo-sms-webhook");
    assert!(matches!(&sms.auth, Auth::IpAllowlist(nets) if !nets.is_empty()));
    let limit = sms.rate_limit.as_ref().expect("limited");
    assert_eq!((limit.requests.get(), limit.key), (100, LimitKey::ClientIp));
    let rules = sms.sms.as_ref().expect("sms patterns");
    assert_eq!(rules.senders, ["M-Money"]);

    let old = endpoint(&config, "wa-webhook");
    let deprecation = old.deprecated.as_ref().expect("deprecated");
    assert!(deprecation.migration.contains("/webhooks/whatsapp"));
}

#[test]
fn the_whatsapp_limit_is_the_one_tests_replace() {
    // Tests lift or replace the shipped limit by its text: if it changed, they would silently
    // run with the shipped one.
    let text = std::fs::read_to_string(repo_path("routes.yaml")).expect("routes.yaml");
    assert!(text.contains(crate::support::WHATSAPP_LIMIT));
}

#[test]
fn alert_rules_and_channels() {
    let config = shipped();
    assert_eq!(
        config.channels.keys().collect::<Vec<_>>(),
        ["pagerduty", "slack"]
    );
    let critical: Vec<&str> = config
        .alerts
        .iter()
        .filter(|a| a.severity == config::AlertSeverity::Critical)
        .map(|a| a.condition.metric.node.as_str())
        .collect();
    assert_eq!(
        critical,
        [
            "error_rate",
            "p95_latency",
            "dlq_size",
            "payment_success_rate"
        ]
    );
    assert_eq!(config.alerts.len(), 7);
    // Every rule has unit tests in tests/alerts/, by its alert name.
    let tests: String = std::fs::read_dir(repo_path("tests/alerts"))
        .expect("tests/alerts")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    for rule in &config.alerts {
        let name = rule.alert_name();
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "no test in tests/alerts/ for `{name}`"
        );
    }
    // Every rule sends on-call to a page (lint checks that it exists).
    for rule in &config.alerts {
        let runbook = rule.runbook.as_deref().unwrap_or_default();
        assert!(
            runbook.starts_with("docs/runbooks/") && repo_path(runbook).is_file(),
            "rule `{}` has no runbook: {runbook:?}",
            rule.name
        );
    }
}

#[test]
fn templates_cover_every_whatsapp_message_kind_in_three_languages() {
    let config = shipped();
    let kinds: std::collections::BTreeSet<&str> =
        config.templates.values().map(|t| t.shape.kind()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["buttons", "list", "location_request", "text"]
    );
    let config::Shape::List(menu) = &config.templates["main_menu"].shape else {
        panic!("main_menu is a list")
    };
    let languages: Vec<&str> = menu.body.0.keys().map(String::as_str).collect();
    assert_eq!(languages, ["en", "fr", "rw"]);
}

#[test]
fn secrets_resolve_from_the_environment_when_serving() {
    let path = crate::support::repo_path("routes.yaml");
    let none = config::load(&path, &EnvPolicy::Resolve(config::Env::default())).expect("readable");
    let unset: Vec<&str> = none.diagnostics.iter().map(|d| d.code).collect();
    // MOMO_WEBHOOK_SECRET is for test configs that sign callbacks; the shipped one does not.
    let used: Vec<&str> = crate::support::SECRET_VARS
        .iter()
        .copied()
        .filter(|v| *v != "MOMO_WEBHOOK_SECRET")
        .collect();
    assert_eq!(unset.len(), used.len(), "{unset:?}");
    assert!(unset.iter().all(|c| *c == "E117"));
    let with_cidrs = |cidrs: &'static str| {
        let env = config::Env::from_pairs(used.iter().map(|v| {
            (
                *v,
                if *v == "MOMO_CALLBACK_CIDRS" {
                    cidrs
                } else {
                    "x"
                },
            )
        }));
        config::load(&path, &EnvPolicy::Resolve(env)).expect("readable")
    };
    let all = with_cidrs("196.12.0.0/24, 196.13.0.7\n2001:db8::/48");
    assert!(all.diagnostics.is_empty(), "{:?}", all.diagnostics);
    let config = all.config.expect("loads");
    let Auth::Hmac { secrets, .. } = &endpoint(&config, "wa-webhook-core").auth else {
        panic!()
    };
    assert_eq!(secrets[0].value.as_deref(), Some("x"));
    let Auth::IpAllowlist(mtn) = &endpoint(&config, "momo-webhook").auth else {
        panic!()
    };
    let mtn: Vec<String> = mtn.iter().map(ToString::to_string).collect();
    assert_eq!(mtn, ["196.12.0.0/24", "196.13.0.7/32", "2001:db8::/48"]);
    // A list that says nothing, or something that is not an address, does not serve.
    for (cidrs, code) in [
        (" , ", "E104"),
        ("mtn.example", "E114"),
        ("0.0.0.0/0", "E121"),
    ] {
        let codes: Vec<&str> = with_cidrs(cidrs)
            .diagnostics
            .iter()
            .map(|d| d.code)
            .collect();
        assert_eq!(codes, [code], "{cidrs:?}");
    }
}

#[test]
fn yaml_examples_in_the_readme_parse() {
    let readme = std::fs::read_to_string(crate::support::repo_path("README.md")).expect("README");
    let mut blocks = 0;
    for block in readme.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap_or_default();
        blocks += 1;
        if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(yaml) {
            panic!("README yaml block {blocks} does not parse: {e}\n{yaml}");
        }
    }
    assert!(blocks >= 5, "{blocks}");
}
