//! `easymo test`: the project's own conversation scripts and alert tests through the binary,
//! as a product repository's CI runs them, with JUnit XML; a wrong expectation fails with what
//! the phone would have shown.

use crate::support::{easymo, rows, server_url, stdout};

fn run_test(args: &[&str]) -> std::process::Output {
    let server = server_url();
    let mut all = vec!["test", "--demo", "--database-url", &server];
    all.extend_from_slice(args);
    easymo(&all, &[])
}

fn throwaway_databases() -> i64 {
    rows(
        &server_url(),
        "select count(*) as n from pg_database where datname like 'easymo\\_scripts\\_%'",
    )[0]["n"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn the_projects_scripts_pass_and_the_junit_report_says_so() {
    let junit = std::env::temp_dir().join(format!("easymo-junit-{}.xml", std::process::id()));
    let before = throwaway_databases();
    let out = run_test(&[
        "tests/conversations",
        "tests/alerts",
        "--junit",
        junit.to_str().expect("utf-8"),
    ]);
    let shown = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains(" 0 failed, "), "{shown}");
    assert!(
        shown.contains("ok   conversations tests/conversations/19_language_menu.yaml"),
        "{shown}"
    );
    assert!(
        shown.contains("skip conversations tests/conversations/09_status_updates.yaml"),
        "{shown}"
    );
    assert_eq!(
        throwaway_databases(),
        before,
        "the throwaway database is dropped"
    );
    insta::assert_snapshot!("easymo_test_report", shown);

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let _ = std::fs::remove_file(&junit);
    let files = ["tests/conversations", "tests/alerts"]
        .iter()
        .flat_map(|d| std::fs::read_dir(crate::support::repo_path(d)).expect("dir"))
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml")
        })
        .count();
    check_junit(&xml, files);
}

/// The JUnit schema's requirements that CI systems rely on: one root `testsuites`, suites with
/// name, tests, failures, errors, skipped and time, cases with classname, name and time, and
/// as many cases as test files.
fn check_junit(xml: &str, cases: usize) {
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
    let suites = regex::Regex::new(
        r#"<testsuite name="[a-z]+" tests="\d+" failures="\d+" errors="\d+" skipped="\d+" time="[0-9.]+">"#,
    )
    .expect("regex");
    assert_eq!(suites.find_iter(xml).count(), 2, "{xml}");
    assert_eq!(xml.matches("</testsuite>").count(), 2);
    let testcases = regex::Regex::new(
        r#"<testcase classname="[a-z]+" name="tests/[a-z]+/[^"<>&]+\.ya?ml" time="[0-9.]+""#,
    )
    .expect("regex");
    assert_eq!(testcases.find_iter(xml).count(), cases, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), cases);
    let opened = xml.matches('<').count();
    let closed = xml.matches('>').count();
    assert_eq!(opened, closed, "every tag closes");
}

#[test]
fn a_wrong_expectation_fails_with_what_the_phone_would_have_shown() {
    let dir = std::env::temp_dir().join(format!("easymo-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let script = std::fs::read_to_string(crate::support::repo_path(
        "tests/conversations/19_language_menu.yaml",
    ))
    .expect("script")
    .replace("C'est fait, easyMO vous répondra en français.", "Byakozwe.");
    std::fs::write(dir.join("wrong.yaml"), script).expect("written");
    std::fs::write(
        dir.join("broken.yaml"),
        "description: x\nmessages:\n  - txt: hi\n",
    )
    .expect("written");
    let out = run_test(&[dir.to_str().expect("utf-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    let shown = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("FAIL conversations"), "{shown}");
    assert!(
        shown.contains("message 2 (you › (chose fr)): the phone shows"),
        "{shown}"
    );
    assert!(shown.contains("  - Byakozwe."), "{shown}");
    assert!(
        shown.contains("  + C'est fait, easyMO vous répondra en français."),
        "{shown}"
    );
    assert!(shown.contains("not a conversation script"), "{shown}");
    assert!(shown.contains("0 passed, 2 failed, 0 skipped"), "{shown}");
}
