//! Every directory in tests/lint/ (except `_base`) is the clean `_base` config with one mistake.
//! Its name starts with the one diagnostic code the mistake must produce; the rendered
//! diagnostics are pinned with insta and reviewed like code.

use std::path::Path;

use easymo_dsl::diagnostic::render_human;
use easymo_engine::config::{load_text, Disk, EnvPolicy, FileSource};

/// Lints a case with paths shown relative to tests/ (the working directory of cargo test), so
/// snapshots do not depend on where the repository is checked out. Its queries are checked as
/// `easymo lint` does: from the offline descriptions (a case without its own `.queries/` shares
/// `_base`'s), or, for the E320 cases (Postgres's own refusals), on a throwaway database.
fn lint_case(routes: &Path) -> easymo_engine::config::Loaded {
    let text = std::fs::read_to_string(routes).expect("case readable");
    let shown = routes
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .expect("inside tests/");
    let dir = shown.parent().expect("case dir");
    let files = SharedDescriptions {
        base: crate::support::repo_path("tests/lint/_base/.queries"),
    };
    let mut loaded = load_text(
        &shown.display().to_string(),
        &text,
        dir,
        &EnvPolicy::Unchecked,
        &files,
    );
    let live = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("E320"));
    let url = live.then(crate::support::server_url);
    easymo_engine::lint::check_queries(&mut loaded, dir, &files, url.as_deref())
        .expect("queries checked");
    loaded
}

/// The disk, with `_base`'s query descriptions standing in for a case's own.
struct SharedDescriptions {
    base: std::path::PathBuf,
}

impl FileSource for SharedDescriptions {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        match Disk.read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let in_descriptions = path
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d == ".queries");
                match (in_descriptions, path.file_name()) {
                    (true, Some(name)) => Disk.read(&self.base.join(name)),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    fn flow_files_in(&self, dir: &Path) -> Vec<std::path::PathBuf> {
        Disk.flow_files_in(dir)
    }
}

#[test]
fn every_case_reports_exactly_its_mistake() {
    let mut cases = 0;
    insta::glob!("lint/[EW]*/routes.yaml", |path| {
        cases += 1;
        let case = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("name");
        let expected = case.split('_').next().expect("code prefix");
        let loaded = lint_case(path);
        let codes: Vec<&str> = loaded.diagnostics.iter().map(|d| d.code).collect();
        // Only its own code; more than once when the mistake is made more than once (the
        // snapshot pins how many).
        assert!(
            !codes.is_empty() && codes.iter().all(|code| *code == expected),
            "{case}: expected only {expected}, got {codes:?}"
        );
        if expected.starts_with('E') {
            assert!(
                loaded.config.is_none(),
                "{case}: a config with errors must not load"
            );
        } else {
            assert!(
                loaded.config.is_some(),
                "{case}: warnings alone must not block loading"
            );
        }
        let rendered = render_human(&loaded.sources, &loaded.diagnostics);
        assert!(rendered.contains(&format!("[{expected}]")), "{rendered}");
        assert!(
            rendered.contains("--> "),
            "{case}: no location in\n{rendered}"
        );
        insta::assert_snapshot!(rendered);
    });
    assert!(cases >= 30, "the corpus has only {cases} cases");
}

#[test]
fn the_base_of_the_corpus_is_clean() {
    let loaded = lint_case(&crate::support::repo_path("tests/lint/_base/routes.yaml"));
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    assert!(loaded.config.is_some());
}

#[test]
fn semantic_yaml_errors_point_at_the_offending_line_not_line_one() {
    // Each case below puts its mistake on a known line.
    for (case, line) in [
        ("E111_duplicate_endpoint_path", 32),
        ("E143_unknown_channel", 59),
        ("E309_shadowed_route", 31),
        ("E112_literal_secret", 19),
    ] {
        let path = crate::support::repo_path(&format!("tests/lint/{case}/routes.yaml"));
        let loaded = lint_case(&path);
        let label = loaded.diagnostics[0].primary().expect("located");
        let (got, _) = loaded.sources.line_col(label.file, label.span.start);
        assert_eq!(got, line, "{case}");
    }
}

/// Runs the `_base` config with `edit` applied to routes.yaml and, optionally, a replacement
/// for its flow file, from a scratch directory.
fn lint_edited(
    name: &str,
    edit: impl Fn(&str) -> String,
    flow: Option<&str>,
) -> easymo_engine::config::Loaded {
    let base = crate::support::repo_path("tests/lint/_base");
    let dir = std::env::temp_dir().join(format!("easymo-lint-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let flow_text = match flow {
        Some(text) => text.to_owned(),
        None => std::fs::read_to_string(base.join("main.flow")).expect("base flow"),
    };
    std::fs::write(dir.join("main.flow"), flow_text).expect("write flow");
    let routes = edit(&std::fs::read_to_string(base.join("routes.yaml")).expect("base routes"));
    let loaded = load_text("routes.yaml", &routes, &dir, &EnvPolicy::Unchecked, &Disk);
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

#[test]
fn a_tab_after_a_key_keeps_positions_and_unknown_sections_visible() {
    // libyaml accepts `key:<TAB>value`; the position index must not lose its place there.
    let loaded = lint_edited(
        "tab",
        |t| {
            t.replace("      requests: 30\n", "      requests:\t30\n")
                .replace("\nalerts:", "\nalertz:")
        },
        None,
    );
    let codes: Vec<&str> = loaded.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["E102"], "{:#?}", loaded.diagnostics);
    let label = loaded.diagnostics[0].primary().expect("located");
    assert_eq!(
        loaded.sources.line_col(label.file, label.span.start),
        (50, 1)
    );
}

#[test]
fn a_flow_file_with_a_byte_order_mark_loads() {
    let flow = format!(
        "\u{feff}{}",
        std::fs::read_to_string(crate::support::repo_path("tests/lint/_base/main.flow"))
            .expect("flow")
    );
    let loaded = lint_edited("bom", str::to_owned, Some(&flow));
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
}

#[test]
fn a_broken_flow_file_does_not_cause_false_errors_elsewhere() {
    // The file that fails to parse might set the session value the other flow reads.
    let flow = "flow menu {\n  if session.pending is empty { end }\n  end\n}\nflow jobs { awiat text -> menu }\n";
    let loaded = lint_edited("cascade", str::to_owned, Some(flow));
    let codes: Vec<&str> = loaded.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["E200"], "{:#?}", loaded.diagnostics);
}

#[test]
fn a_signed_callback_endpoint_that_names_its_signer_and_narrow_proxies_lint_clean() {
    let momo = |auth: &'static str| {
        move |t: &str| {
            t.replace(
                "      fallback: menu\ntemplates:",
                &format!("      fallback: menu\n  - name: momo\n    path: /momo\n    kind: momo_callback\n    auth:\n{auth}templates:"),
            )
        }
    };
    let signed = lint_edited(
        "signer",
        momo("      hmac:\n        header: X-Signature\n        signer: the payments proxy, which checks MTN's TLS client\n        secrets:\n          - ${MOMO_WEBHOOK_SECRET}\n"),
        None,
    );
    assert!(signed.diagnostics.is_empty(), "{:#?}", signed.diagnostics);
    // A /24 of load balancers, or proxies with no allowlist beside them, are fine.
    let narrow = lint_edited(
        "narrow",
        momo("      ip_allowlist:\n        cidrs: [196.12.0.0/24]\n"),
        None,
    );
    assert!(narrow.diagnostics.is_empty(), "{:#?}", narrow.diagnostics);
    let wide_alone = lint_edited(
        "wide-alone",
        |t| t.replace("[10.0.0.0/24]", "[10.0.0.0/8]"),
        None,
    );
    assert!(
        wide_alone.diagnostics.is_empty(),
        "{:#?}",
        wide_alone.diagnostics
    );
}
