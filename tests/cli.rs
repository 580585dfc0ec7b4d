//! The real `easymo` process: what CI and product people run.

use crate::support::{easymo, repo_path, stdout, SECRET_VARS};

#[test]
fn lint_of_the_shipped_config_exits_zero() {
    let out = easymo(&["lint", "routes.yaml", "--deny-warnings"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("ok: 4 endpoints"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lint_exits_one_on_errors_and_prints_rustc_style_diagnostics() {
    let out = easymo(
        &["lint", "tests/lint/E302_unknown_template/routes.yaml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error[E302]: unknown template `job_lst`"),
        "{text}"
    );
    assert!(
        text.contains("--> tests/lint/E302_unknown_template/main.flow:8:9"),
        "{text}"
    );
    assert!(text.contains("= help: did you mean `job_list`?"), "{text}");
    assert!(text.ends_with("error: 1 error found\n"), "{text}");
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let case = "tests/lint/W100_unreachable_flow/routes.yaml";
    assert_eq!(easymo(&["lint", case], &[]).status.code(), Some(0));
    assert_eq!(
        easymo(&["lint", case, "--deny-warnings"], &[])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn lint_exits_two_when_it_cannot_run() {
    let out = easymo(&["lint", "no/such/routes.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read no/such/routes.yaml"),
        "{stderr}"
    );
    assert!(
        stdout(&out).is_empty(),
        "machine-readable stdout stays clean"
    );
}

#[test]
fn json_format_is_machine_readable_with_positions() {
    let out = easymo(
        &[
            "lint",
            "--format",
            "json",
            "tests/lint/E143_unknown_channel/routes.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let first = &items[0];
    assert_eq!(first["code"], "E143");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 59);
    assert_eq!(first["column"], 16);
    assert_eq!(first["help"], "did you mean `slack`?");
}

#[test]
fn github_format_prints_workflow_annotations() {
    let out = easymo(
        &[
            "lint",
            "--format",
            "github",
            "tests/lint/W102_unused_binding/routes.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("::warning file=tests/lint/W102_unused_binding/main.flow,line=8,col=36,"),
        "{text}"
    );
    assert!(
        text.contains("title=W102::template `job_list` never uses `title`"),
        "{text}"
    );
}

#[test]
fn lint_with_env_checks_that_secrets_are_set() {
    let out = easymo(&["lint", "--env", "routes.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("error[E117]: environment variable `WHATSAPP_APP_SECRET` is not set")
    );
    let all: Vec<(&str, &str)> = SECRET_VARS
        .iter()
        .map(|v| {
            (
                *v,
                if *v == "MOMO_CALLBACK_CIDRS" {
                    "196.12.0.0/24"
                } else {
                    "set"
                },
            )
        })
        .collect();
    assert_eq!(
        easymo(&["lint", "--env", "routes.yaml"], &all)
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn explain_answers_first_and_shows_every_candidate_with_verbose() {
    let short = stdout(&easymo(&["explain", "  Find JOBS!! "], &[]));
    let mut lines = short.lines();
    assert_eq!(
        lines.next(),
        Some("\"  Find JOBS!! \" -> flow `jobs`"),
        "{short}"
    );
    assert_eq!(
        lines.next(),
        Some("  read as \"find jobs\"; route exact \"find jobs\": text is exactly the keyword"),
        "{short}"
    );
    assert!(short.contains("a `en` keyword"), "{short}");
    assert!(!short.contains("candidates"), "{short}");
    let out = easymo(&["explain", "--verbose", "  Find JOBS!! "], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("route exact \"find jobs\""), "{text}");
    assert!(
        text.contains("MATCH: text is exactly the keyword"),
        "{text}"
    );
    assert!(
        text.contains("winner: route exact \"find jobs\" -> flow `jobs`"),
        "{text}"
    );
    assert!(
        text.contains("flow `jobs` can send: no_job_categories, job_categories"),
        "{text}"
    );
    let fallback = stdout(&easymo(&["explain", "--verbose", "muraho"], &[]));
    assert!(
        fallback.contains("winner: fallback (no keyword matched) -> flow `main_menu`"),
        "{fallback}"
    );
    // A near miss gets a suggestion.
    let typo = stdout(&easymo(&["explain", "jbos"], &[]));
    assert!(
        typo.contains("no keyword matched: the fallback")
            && typo.contains("did you mean \"jobs\" (-> `jobs`)?"),
        "{typo}"
    );
    let none = stdout(&easymo(&["explain", "muraho"], &[]));
    assert!(!none.contains("did you mean"), "{none}");
    insta::assert_snapshot!("explain_near_miss", typo);
    insta::assert_snapshot!(
        "explain_kinyarwanda",
        stdout(&easymo(&["explain", "Shaka akazi!"], &[]))
    );
}

#[test]
fn schema_is_current_and_describes_routes_yaml() {
    let out = easymo(&["schema"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(schema["title"], "Routes");
    assert!(schema["properties"]["endpoints"].is_object());
    assert!(schema["definitions"]["Endpoint"]["additionalProperties"] == false);
    let committed =
        std::fs::read_to_string(repo_path("docs/routes.schema.json")).expect("committed schema");
    assert!(
        committed == stdout(&out),
        "docs/routes.schema.json is stale: run `cargo run -q --bin easymo -- schema > docs/routes.schema.json`"
    );
}

/// `easymo simulate --from FROM ARGS` on `database`; its output, after checking it ran.
fn simulate(database: &str, from: &str, args: &[&str]) -> String {
    let mut all = vec!["simulate", "--database-url", database, "--from", from];
    all.extend_from_slice(args);
    let out = easymo(&all, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn simulate_with_commit_continues_the_conversation_and_sends_nothing() {
    let database = crate::support::fresh_database();
    let run = |args: &[&str]| {
        let mut all = vec!["--commit"];
        all.extend_from_slice(args);
        simulate(&database, "250788555001", &all)
    };
    let first = run(&["find jobs"]);
    assert!(first.contains("you › find jobs"), "{first}");
    assert!(first.contains("easyMO › Choose a job category."), "{first}");
    assert!(first.contains("2. Construction — 3 open jobs"), "{first}");
    assert!(
        first.contains("(waiting for a choice, which goes to flow `job_category`)"),
        "{first}"
    );
    let second = run(&["--choice", "1"]);
    assert!(second.contains("1. Mason — Kigali Build Ltd"), "{second}");
    let ride = run(&["book ride"]);
    assert!(ride.contains("[ 📍 Send location ]"), "{ride}");
    let stored = run(&["--location", "-1.9536,30.0606"]);
    assert!(stored.contains("Your ride request #1 is in."), "{stored}");
    // A purchase: the payment is described, never recorded or sent to MoMo.
    run(&["shop"]);
    run(&["--choice", "3"]);
    let product = run(&["--choice", "8"]);
    assert!(product.contains("Kitenge dress: 25000 RWF"), "{product}");
    let paid = run(&["--choice", "pay"]);
    assert!(
        paid.contains("Please approve the payment of 25000 RWF"),
        "{paid}"
    );
    let outbox = crate::support::rows(
        &database,
        "select (select count(*) from outbox) as n, (select count(*) from momo_payments) as payments",
    );
    assert_eq!(
        (&outbox[0]["n"], &outbox[0]["payments"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "simulated replies never reach the outbox, simulated payments never MoMo"
    );
}

#[test]
fn simulate_runs_its_steps_in_one_transaction_and_keeps_nothing() {
    let database = crate::support::fresh_database();
    let run = |args: &[&str]| simulate(&database, "250788555002", args);
    // The number shown picks the row: 2 is Construction.
    let jobs = run(&["find jobs", "--choice", "2"]);
    assert!(jobs.contains("1. Mason — Kigali Build Ltd"), "{jobs}");
    assert!(jobs.contains("(nothing kept: rolled back"), "{jobs}");
    // A whole purchase by the numbers shown (Clothing, then Kitenge dress), approved, then
    // declined.
    let purchase = |verdict: &str| {
        let steps = [
            "shop", "--choice", "1", "--choice", "1", "--choice", "pay", verdict,
        ];
        run(&steps)
    };
    let bought = purchase("--approve");
    assert!(
        bought.contains("Please approve the payment of 25000 RWF"),
        "{bought}"
    );
    assert!(bought.contains("momo › SUCCESSFUL (25000 RWF)"), "{bought}");
    assert!(bought.contains("Payment received: 25000 RWF"), "{bought}");
    let declined = purchase("--decline");
    assert!(declined.contains("did not go through"), "{declined}");
    // In the contact's language.
    let rw = run(&["--language", "rw", "find jobs"]);
    assert!(rw.contains("Hitamo icyiciro cy'akazi."), "{rw}");
    let kept = crate::support::rows(
        &database,
        "select (select count(*) from contacts where wa_id = '250788555002') as contacts,
                (select count(*) from inbound_messages) as messages,
                (select count(*) from sessions) as sessions,
                (select count(*) from outbox) as outbox",
    );
    assert_eq!(
        kept[0],
        serde_json::json!({"contacts": 0, "messages": 0, "sessions": 0, "outbox": 0}),
        "simulate keeps nothing without --commit"
    );
    let approve_first = easymo(
        &[
            "simulate",
            "--database-url",
            &database,
            "--from",
            "250788555002",
            "--approve",
        ],
        &[],
    );
    assert_eq!(approve_first.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&approve_first.stderr).contains("no step requested a payment"));
}

#[test]
fn simulate_says_why_a_flow_failed_and_where_it_is_written() {
    let config = crate::support::ConfigDir::shipped(|t| t.to_owned());
    let main = config.dir.join("flows/main.flow");
    let text = std::fs::read_to_string(&main).expect("main.flow");
    let broken = text.replace(
        "flow help {\n  reply help",
        "flow help {\n  let tips = query \"select tip from no_such_table\"\n  reply help",
    );
    assert_ne!(broken, text);
    std::fs::write(&main, broken).expect("written");
    let database = crate::support::fresh_database();
    let routes = config.routes();
    let out = easymo(
        &[
            "simulate",
            "--config",
            routes.to_str().expect("utf-8"),
            "--database-url",
            &database,
            "--from",
            "250788555003",
            "help",
        ],
        &[],
    );
    let shown = stdout(&out);
    assert!(shown.contains("(flow failed:"), "{shown}");
    assert!(shown.contains("no_such_table"), "{shown}");
    assert!(
        shown.contains("in flow `help` at flows/main.flow:"),
        "{shown}"
    );
    assert!(shown.contains("easyMO › Sorry"), "{shown}");
}
