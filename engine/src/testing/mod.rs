//! `easymo test`: a product repository's conversation scripts played through the real runtime
//! against a throwaway database, compared with the replies and rows they expect, and its
//! alert-rule tests, with JUnit XML for CI: `easymo lint && easymo test` with the binary alone.
//!
//! Each script runs in its own transaction, rolled back after, on one database this command
//! creates (migrated with the engine's and the product's migrations, optionally with the demo
//! data) and drops. Nothing leaves the process: replies never reach the outbox, payments are
//! described and approved or declined by the script. Owns: finding the tests, running them,
//! the report. Must not route or render: the runtime ([`crate::simulate::Player`]) does.

pub mod junit;
pub mod script;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::config::Config;
use crate::simulate::{self, Player};
use script::{Expected, RowCheck, Script};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Script and alert-test files, or directories of them.
    pub paths: Vec<PathBuf>,
    /// The Postgres server to make the throwaway database on (any database URL of it).
    pub database_url: String,
    /// Load the engine's demo data first.
    pub demo: bool,
    /// routes.yaml's directory (where failing flows are written).
    pub base_dir: PathBuf,
}

/// One test file's result.
#[derive(Debug, Clone)]
pub struct Case {
    /// `conversations` or `alerts`.
    pub suite: &'static str,
    /// The file's stem.
    pub name: String,
    /// The file.
    pub file: PathBuf,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub seconds: f64,
}

/// A test's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All as expected.
    Passed,
    /// What differed, as the phone would have shown it.
    Failed(String),
    /// Why it was not run.
    Skipped(String),
}

/// Why the tests could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No test file under the paths given.
    #[error("no conversation script or alert test (*.yaml, *.yml) under {0}")]
    NoTests(String),
    /// A path could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A statement.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Runs every test under `options.paths`.
pub async fn run(config: &Config, options: &Options) -> Result<Vec<Case>, Error> {
    let files = discover(&options.paths)?;
    if files.is_empty() {
        let paths: Vec<String> = options
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::NoTests(paths.join(", ")));
    }
    let mut cases = Vec::new();
    let mut scripts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        let kind: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
        if kind.get("messages").is_some() {
            match script::parse(&text) {
                Ok(script) => scripts.push((file, script)),
                Err(error) => cases.push(case(
                    "conversations",
                    &file,
                    Outcome::Failed(format!("not a conversation script: {error}")),
                    0.0,
                )),
            }
        } else if kind.get("tests").is_some() {
            let started = Instant::now();
            let report = crate::alerts::promtool::run_files(config, std::slice::from_ref(&file));
            let outcome = if report.passed {
                Outcome::Passed
            } else {
                Outcome::Failed(report.text)
            };
            cases.push(case(
                "alerts",
                &file,
                outcome,
                started.elapsed().as_secs_f64(),
            ));
        } else {
            cases.push(case(
                "conversations",
                &file,
                Outcome::Failed(
                    "neither a conversation script (`messages:`) nor an alert-rule test (`tests:`)"
                        .to_owned(),
                ),
                0.0,
            ));
        }
    }
    if !scripts.is_empty() {
        let database = Throwaway::create(&options.database_url).await?;
        let played = play_all(&database, config, options, &scripts).await;
        database.drop().await?;
        cases.extend(played?);
    }
    cases.sort_by(|a, b| (a.suite, &a.file).cmp(&(b.suite, &b.file)));
    Ok(cases)
}

fn case(suite: &'static str, file: &Path, outcome: Outcome, seconds: f64) -> Case {
    Case {
        suite,
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file: file.to_owned(),
        outcome,
        seconds,
    }
}

/// Test files under `paths`: files as given, directories' `*.yaml`/`*.yml`, in name order.
fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// A database made for this run and dropped after it.
struct Throwaway {
    server: PgConnectOptions,
    name: String,
    pool: sqlx::PgPool,
}

impl Throwaway {
    async fn create(url: &str) -> Result<Throwaway, Error> {
        let server = crate::store::connect_options(url)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("easymo_scripts_{}_{nanos}", std::process::id());
        let mut admin = server.clone().database("postgres").connect().await?;
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(server.clone().database(&name))
            .await?;
        Ok(Throwaway { server, name, pool })
    }

    async fn drop(self) -> Result<(), Error> {
        self.pool.close().await;
        let mut admin: PgConnection = self.server.database("postgres").connect().await?;
        sqlx::query(&format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

async fn play_all(
    database: &Throwaway,
    config: &Config,
    options: &Options,
    scripts: &[(PathBuf, Script)],
) -> Result<Vec<Case>, Error> {
    crate::store::migrate(&database.pool, config.server.migrations.as_deref()).await?;
    if options.demo {
        crate::store::seed_demo(&database.pool).await?;
    }
    let mut cases = Vec::new();
    for (n, (file, script)) in scripts.iter().enumerate() {
        let started = Instant::now();
        let outcome = match play(&database.pool, config, options, script, n).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(format!("could not run: {error}")),
        };
        cases.push(case(
            "conversations",
            file,
            outcome,
            started.elapsed().as_secs_f64(),
        ));
    }
    Ok(cases)
}

/// Plays one script in a transaction rolled back after.
async fn play(
    pool: &sqlx::PgPool,
    config: &Config,
    options: &Options,
    script: &Script,
    n: usize,
) -> Result<Outcome, simulate::Error> {
    let inputs: Vec<simulate::Input> =
        match script.messages.iter().map(script::Step::input).collect() {
            Ok(inputs) => inputs,
            Err(why) => return Ok(Outcome::Skipped(why)),
        };
    let contact = script.contact.as_ref();
    let player_options = simulate::Options {
        from: contact.map_or_else(|| format!("25078899{n:04}"), |c| c.wa_id.clone()),
        name: contact.and_then(|c| c.name.clone()),
        language: None,
        commit: false,
        base_dir: options.base_dir.clone(),
        numbers_pick_shown: false,
    };
    let mut tx = pool.begin().await?;
    for sql in &script.seed {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
    }
    let mut player = Player::new(config, &player_options);
    let mut differences = String::new();
    for (i, (step, input)) in script.messages.iter().zip(&inputs).enumerate() {
        let played = player.play(&mut tx, input).await?;
        if let Some(expected) = &step.expect {
            compare(i + 1, &played, expected, &mut differences);
        }
    }
    for check in &script.rows {
        if let RowCheck::Expect { query, expect } = check {
            let wrapped = format!("select coalesce(jsonb_agg(q), '[]'::jsonb) from ({query}) q");
            let got: serde_json::Value = sqlx::query_scalar(&wrapped).fetch_one(&mut *tx).await?;
            if got != *expect {
                let _ = writeln!(differences, "rows of `{query}`:\n  - {expect}\n  + {got}");
            }
        }
    }
    tx.rollback().await?;
    Ok(if differences.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(differences)
    })
}

/// Says, line by line, where what the phone showed after step `n` differs from `expected`.
fn compare(n: usize, played: &simulate::Played, expected: &[Expected], out: &mut String) {
    let shown: Vec<String> = played
        .replies
        .iter()
        .map(|r| format!("[{}]\n{}", r.template, r.preview.trim_end()))
        .collect();
    let wanted: Vec<String> = expected
        .iter()
        .zip(
            played
                .replies
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .map(|(e, actual)| match e {
            Expected::Text(text) => format!(
                "[{}]\n{}",
                actual.map_or("?", |a| a.template.as_str()),
                text.trim_end()
            ),
            Expected::Reply { template, text } => format!(
                "[{}]\n{}",
                template
                    .as_deref()
                    .or(actual.map(|a| a.template.as_str()))
                    .unwrap_or("?"),
                text.as_deref()
                    .map(str::trim_end)
                    .or(actual.map(|a| a.preview.trim_end()))
                    .unwrap_or("")
            ),
        })
        .collect();
    if shown == wanted {
        return;
    }
    let _ = writeln!(
        out,
        "message {n} ({} › {}): the phone shows",
        played.speaker, played.said
    );
    if let Some(failure) = &played.failure {
        let _ = writeln!(out, "  (flow failed: {failure})");
    }
    let wanted: Vec<&str> = wanted.iter().flat_map(|r| r.lines()).collect();
    let shown: Vec<&str> = shown.iter().flat_map(|r| r.lines()).collect();
    for i in 0..wanted.len().max(shown.len()) {
        match (wanted.get(i), shown.get(i)) {
            (Some(w), Some(s)) if w == s => {
                let _ = writeln!(out, "    {w}");
            }
            (w, s) => {
                if let Some(w) = w {
                    let _ = writeln!(out, "  - {w}");
                }
                if let Some(s) = s {
                    let _ = writeln!(out, "  + {s}");
                }
            }
        }
    }
}

/// The report for a terminal.
pub fn report(cases: &[Case]) -> String {
    let mut out = String::new();
    for case in cases {
        let (mark, note) = match &case.outcome {
            Outcome::Passed => ("ok  ", String::new()),
            Outcome::Failed(why) => ("FAIL", format!("\n{}", indent(why))),
            Outcome::Skipped(why) => ("skip", format!(" ({why})")),
        };
        let _ = writeln!(out, "{mark} {} {}{note}", case.suite, case.file.display());
    }
    let failed = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count();
    let _ = writeln!(
        out,
        "\n{} passed, {failed} failed, {skipped} skipped",
        cases.len() - failed - skipped
    );
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn played(template: &str, preview: &str) -> simulate::Played {
        simulate::Played {
            speaker: "you",
            said: "akazi".into(),
            replies: vec![simulate::Shown {
                template: template.into(),
                preview: preview.into(),
            }],
            ..simulate::Played::default()
        }
    }

    #[test]
    fn a_difference_reads_as_the_phone_would_show_it() {
        let mut out = String::new();
        let got = played("job_categories", "Choose a job category.\n1. Agriculture");
        compare(
            1,
            &got,
            &[Expected::Reply {
                template: Some("job_categories".into()),
                text: Some("Hitamo icyiciro cy'akazi.\n1. Agriculture".into()),
            }],
            &mut out,
        );
        assert_eq!(
            out,
            "message 1 (you › akazi): the phone shows\n    [job_categories]\n  - Hitamo icyiciro cy'akazi.\n  + Choose a job category.\n    1. Agriculture\n"
        );
        let mut same = String::new();
        compare(
            1,
            &got,
            &[Expected::Reply {
                template: Some("job_categories".into()),
                text: None,
            }],
            &mut same,
        );
        assert!(same.is_empty(), "{same}");
        let mut missing = String::new();
        compare(1, &got, &[], &mut missing);
        assert!(missing.contains("  + [job_categories]"), "{missing}");
    }
}
