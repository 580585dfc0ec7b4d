//! The committed descriptions: `.queries/query-<key>.json` beside routes.yaml, one file per
//! query (as sqlx keeps `.sqlx/`), so two people adding queries never touch the same file.
//!
//! Owns: reading them back for a lint without a database, saying which are missing or were made
//! against another schema, and rewriting the directory after a live describe. Must not talk to
//! Postgres.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use easymo_dsl::{codes, Diagnostic};

use super::{Checked, Description, Descriptions, FlowQuery};
use crate::config::FileSource;

/// The file holding the description of the query with `key`.
pub fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("query-{key}.json"))
}

/// Reads the description of every query from `dir`; `schema` is today's fingerprint.
pub fn check(queries: &[FlowQuery], dir: &Path, schema: &str, files: &dyn FileSource) -> Checked {
    let mut checked = Checked::default();
    let mut stale: Vec<&FlowQuery> = Vec::new();
    let mut seen = BTreeSet::new();
    for query in queries {
        let key = query.key();
        if !seen.insert(key.clone()) {
            continue;
        }
        let file = path(dir, &key);
        let text = match files.read(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                checked.diagnostics.push(not_described(query, dir));
                continue;
            }
            Err(error) => {
                checked
                    .diagnostics
                    .push(unreadable(query, &file, &error.to_string()));
                continue;
            }
        };
        match serde_json::from_str::<Description>(&text) {
            Ok(description) if description.sql != query.sql => {
                // Only a hash collision or a hand edit gets here; either way it is not this query's.
                checked
                    .diagnostics
                    .push(unreadable(query, &file, "it describes other SQL"));
            }
            Ok(description) => {
                if description.schema != schema {
                    stale.push(query);
                }
                checked.descriptions.insert(key, description);
            }
            Err(error) => checked
                .diagnostics
                .push(unreadable(query, &file, &error.to_string())),
        }
    }
    if let Some(first) = stale.first() {
        let others = stale.len() - 1;
        let mut diagnostic = Diagnostic::error(
            codes::SQL_SCHEMA_CHANGED,
            format!(
                "{} described against another schema",
                if others == 0 {
                    "this query was".to_owned()
                } else {
                    format!("{} queries were", stale.len())
                }
            ),
        )
        .at(first.file, first.span, "described before the migrations last changed")
        .note("a migration was added or edited since `.queries/` was written, so a table or column these queries use may have changed")
        .help(refresh_help(dir));
        for query in stale.iter().skip(1).take(3) {
            diagnostic = diagnostic.also(query.file, query.span, "and this one");
        }
        checked.diagnostics.push(diagnostic);
    }
    checked
}

fn refresh_help(dir: &Path) -> String {
    format!(
        "run `easymo lint --database-url postgres://… --write-offline` and commit `{}`",
        dir.file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
    )
}

fn not_described(query: &FlowQuery, dir: &Path) -> Diagnostic {
    Diagnostic::error(
        codes::SQL_NOT_DESCRIBED,
        format!("query in flow `{}` has no description", query.flow),
    )
    .at(query.file, query.span, "not checked against the schema")
    .note("it is new, or its SQL or the types of its `with` values changed since the descriptions were written")
    .help(refresh_help(dir))
}

fn unreadable(query: &FlowQuery, file: &Path, why: &str) -> Diagnostic {
    Diagnostic::error(
        codes::SQL_NOT_DESCRIBED,
        format!("the description of this query cannot be used: {why}"),
    )
    .at(query.file, query.span, "not checked against the schema")
    .note(format!("in `{}`", file.display()))
    .help(refresh_help(file.parent().unwrap_or(file)))
}

/// What [`write`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Files written (new or changed).
    pub written: usize,
    /// Files removed: descriptions of queries that no longer exist.
    pub removed: usize,
}

/// Makes `dir` hold exactly `descriptions`: writes new or changed files, removes the rest.
pub fn write(dir: &Path, descriptions: &Descriptions) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let mut outcome = Written::default();
    for (key, description) in descriptions {
        let file = path(dir, key);
        let text = serde_json::to_string_pretty(description).map_err(std::io::Error::other)? + "\n";
        if std::fs::read_to_string(&file).ok().as_deref() != Some(&text) {
            std::fs::write(&file, text)?;
            outcome.written += 1;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = name
            .strip_prefix("query-")
            .and_then(|n| n.strip_suffix(".json"));
        if key.is_some_and(|k| !descriptions.contains_key(k)) {
            std::fs::remove_file(entry.path())?;
            outcome.removed += 1;
        }
    }
    Ok(outcome)
}
