//! Checked flow SQL: the committed `.queries/` descriptions agree with what Postgres says today,
//! and `easymo lint --database-url … --write-offline` keeps them so.

use std::path::{Path, PathBuf};

use easymo_engine::config::{self, EnvPolicy};
use easymo_engine::queries::{self, Descriptions};

use crate::support::{easymo, repo_path, server_url, ConfigDir};

/// Every config in the repository that keeps descriptions.
fn described_configs() -> Vec<PathBuf> {
    let mut configs = vec![repo_path("routes.yaml")];
    let corpus = std::fs::read_dir(repo_path("tests/lint")).expect("corpus");
    for case in corpus.flatten() {
        if case.path().join(queries::OFFLINE_DIR).is_dir() {
            configs.push(case.path().join("routes.yaml"));
        }
    }
    configs.sort();
    configs
}

fn committed(dir: &Path) -> Descriptions {
    std::fs::read_dir(dir)
        .expect("descriptions")
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name
                .strip_prefix("query-")?
                .strip_suffix(".json")?
                .to_owned();
            let text = std::fs::read_to_string(entry.path()).expect("readable");
            Some((key, serde_json::from_str(&text).expect("a description")))
        })
        .collect()
}

#[test]
fn every_committed_description_matches_a_live_describe() {
    let configs = described_configs();
    assert!(configs.len() >= 3, "{configs:?}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for routes in configs {
        let loaded = config::load(&routes, &EnvPolicy::Unchecked).expect("readable");
        let config = loaded.config.as_ref().expect("loads");
        let live = runtime
            .block_on(queries::check_live(config, &loaded.sources, &server_url()))
            .expect("described");
        let dir = routes.parent().expect("dir").join(queries::OFFLINE_DIR);
        let committed = committed(&dir);
        assert_eq!(
            committed.keys().collect::<Vec<_>>(),
            live.descriptions.keys().collect::<Vec<_>>(),
            "{}: run easymo lint {} --database-url … --write-offline",
            dir.display(),
            routes.display()
        );
        for (key, description) in &live.descriptions {
            assert_eq!(&committed[key], description, "{} {key}", dir.display());
        }
    }
}

fn lint(dir: &Path, extra: &[&str]) -> (i32, String) {
    let routes = dir.join("routes.yaml");
    let mut args = vec!["lint", routes.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let out = easymo(&args, &[]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn write_offline_makes_a_clean_offline_lint_and_an_edit_makes_it_stale() {
    let config = ConfigDir::shipped(str::to_owned);
    let dir = config.dir.clone();
    let url = server_url();
    // No descriptions at all: every query is unchecked, and lint says how to fix it.
    let (code, text) = lint(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("error[E321]"), "{text}");
    assert!(text.contains("--write-offline"), "{text}");
    // A description nobody uses any more is removed on the next write.
    std::fs::create_dir_all(dir.join(".queries")).expect("dir");
    std::fs::write(dir.join(".queries/query-0000.json"), "{}").expect("stale");
    let (code, text) = lint(&dir, &["--database-url", &url, "--write-offline"]);
    assert_eq!(code, 0, "{text}");
    let shipped = committed(&repo_path(".queries"));
    assert_eq!(committed(&dir.join(".queries")), shipped);
    assert!(
        text.contains(&format!("{} descriptions", shipped.len())),
        "{text}"
    );
    assert!(text.contains("1 removed"), "{text}");
    let (code, text) = lint(&dir, &[]);
    assert_eq!(code, 0, "{text}");
    // A query edited after the descriptions were written fails an offline lint, at its place.
    let jobs = dir.join("flows/jobs.flow");
    let flow = std::fs::read_to_string(&jobs).expect("flow");
    let edited = flow.replace("order by c.name", "order by c.name desc");
    assert_ne!(flow, edited);
    std::fs::write(&jobs, edited).expect("edit");
    let (code, text) = lint(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("error[E321]"), "{text}");
    assert!(text.contains("jobs.flow:5:"), "{text}");
}

#[test]
fn postgres_refusals_point_into_the_flow_and_leave_no_database_behind() {
    let config = ConfigDir::shipped(str::to_owned);
    let dir = config.dir.clone();
    let jobs = dir.join("flows/jobs.flow");
    let flow = std::fs::read_to_string(&jobs).expect("flow");
    let broken = flow
        .replace("from job_categories c", "form job_categories c")
        .replace("where j.id = $1::bigint", "where j.id = $1");
    assert_ne!(flow, broken);
    std::fs::write(&jobs, broken).expect("edit");
    let (code, text) = lint(&dir, &["--database-url", &server_url()]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(text.matches("error[E320]").count(), 2, "{text}");
    assert!(text.contains("syntax error at or near \"form\""), "{text}");
    assert!(text.contains("did you mean `from`?"), "{text}");
    assert!(
        text.contains("operator does not exist: bigint = text"),
        "{text}"
    );
    assert!(text.contains("$1 is bound as text"), "{text}");
    // Throwaway databases are named after the lint process: none may outlive its process.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let names: Vec<String> = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&server_url()).await.expect("server");
        sqlx::query_scalar(
            "select datname::text from pg_database where datname like 'easymo_lint_%'",
        )
        .fetch_all(&pool)
        .await
        .expect("listed")
    });
    let leaked: Vec<&String> = names
        .iter()
        .filter(|name| {
            let pid = name.split('_').nth(2).unwrap_or_default();
            !Path::new("/proc").join(pid).exists()
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}
