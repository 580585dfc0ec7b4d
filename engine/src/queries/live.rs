//! Describing flow queries with a real Postgres: a throwaway database on the server given by
//! `--database-url`, migrated exactly as `easymo migrate` would, each query prepared with the
//! types the runtime will bind, then dropped.
//!
//! Owns: the throwaway database's life and turning Postgres's refusals into diagnostics at the
//! query's place in the flow file (its position mapped into the line, with a did-you-mean for
//! table, column and keyword names). Must not write files; `offline` does.

use std::collections::BTreeSet;
use std::path::Path;

use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::span::Span;
use easymo_dsl::{codes, Diagnostic, Sources};
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgErrorPosition, PgTypeInfo};
use sqlx::{Column as _, ConnectOptions, Connection, Either, Executor, PgConnection, Statement};
use sqlx::{PgPool, TypeInfo as _};

use super::{Checked, Column, Description, FlowQuery};
use crate::store;

/// Why the queries could not be described at all.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The URL, the server, or creating the throwaway database.
    #[error("cannot make a throwaway database on the server at --database-url: {0}")]
    Database(#[source] store::Error),
    /// The migrations themselves fail.
    #[error("the migrations fail on a fresh database: {0}")]
    Migrations(#[source] store::Error),
}

/// Describes every query against a fresh database migrated from the engine's migrations and
/// the product's in `product_dir`. `schema` is stamped on each description.
pub async fn describe(
    url: &str,
    product_dir: Option<&Path>,
    queries: &[FlowQuery],
    sources: &Sources,
    schema: &str,
) -> Result<Checked, LiveError> {
    let server = store::connect_options(url).map_err(LiveError::Database)?;
    let name = format!(
        "easymo_lint_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = server
        .connect()
        .await
        .map_err(|e| LiveError::Database(e.into()))?;
    admin
        .execute(format!("create database {name} template template0").as_str())
        .await
        .map_err(|e| LiveError::Database(e.into()))?;
    let described = describe_in(
        server.clone().database(&name),
        product_dir,
        queries,
        sources,
        schema,
    )
    .await;
    // Dropped whatever happened; `force` ends the pool's connections if one lingers.
    let dropped = admin
        .execute(format!("drop database if exists {name} with (force)").as_str())
        .await;
    if let Err(error) = dropped {
        tracing::warn!(%error, database = %name, "could not drop the throwaway database");
    }
    described
}

async fn describe_in(
    options: PgConnectOptions,
    product_dir: Option<&Path>,
    queries: &[FlowQuery],
    sources: &Sources,
    schema: &str,
) -> Result<Checked, LiveError> {
    let pool = PgPool::connect_with(options.clone())
        .await
        .map_err(|e| LiveError::Database(e.into()))?;
    store::schema::migrate(&pool, product_dir)
        .await
        .map_err(LiveError::Migrations)?;
    pool.close().await;
    let mut conn = options
        .connect()
        .await
        .map_err(|e| LiveError::Database(e.into()))?;
    let mut checked = Checked::default();
    let mut seen = BTreeSet::new();
    // Read once, on the first refusal: a clean run never needs them.
    let mut names: Option<Names> = None;
    for query in queries {
        let key = query.key();
        if !seen.insert(key.clone()) {
            continue;
        }
        match describe_one(&mut conn, query, schema).await {
            Ok(description) => {
                checked.descriptions.insert(key, description);
            }
            Err(error) => {
                if names.is_none() {
                    names = Some(Names::load(&mut conn).await);
                }
                let names = names.get_or_insert_with(Names::default);
                checked
                    .diagnostics
                    .push(rejected(query, &error, sources, names));
            }
        }
    }
    conn.close().await.ok();
    Ok(checked)
}

async fn describe_one(
    conn: &mut PgConnection,
    query: &FlowQuery,
    schema: &str,
) -> Result<Description, sqlx::Error> {
    let sql = query.sql.trim().trim_end_matches(';');
    let types: Vec<PgTypeInfo> = query
        .arguments
        .iter()
        .map(|t| t.map_or(PgTypeInfo::with_oid(Oid(0)), PgTypeInfo::with_name))
        .collect();
    let statement = (&mut *conn).prepare_with(sql, &types).await?;
    let parameters = match statement.parameters() {
        Some(Either::Left(types)) => types.iter().map(|t| t.name().to_lowercase()).collect(),
        _ => Vec::new(),
    };
    // sqlx's describe (what its `query!` macro uses) adds nullability: table constraints, and
    // the outer side of joins from the plan. It prepares without our types, so a query it
    // cannot describe that way keeps "cannot tell".
    let nullable = match (&mut *conn).describe(sql).await {
        Ok(described) => (0..statement.columns().len())
            .map(|i| described.nullable(i))
            .collect(),
        Err(_) => Vec::new(),
    };
    let columns = statement
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| Column {
            name: column.name().to_owned(),
            type_name: column.type_info().name().to_lowercase(),
            nullable: nullable.get(i).copied().flatten(),
        })
        .collect();
    Ok(Description {
        sql: query.sql.clone(),
        arguments: query
            .arguments
            .iter()
            .map(|t| t.unwrap_or("unknown").to_owned())
            .collect(),
        schema: schema.to_owned(),
        parameters,
        columns,
    })
}

/// The names a did-you-mean can offer: tables and columns of the migrated schema.
#[derive(Debug, Default)]
struct Names {
    tables: Vec<String>,
    columns: Vec<String>,
}

impl Names {
    async fn load(conn: &mut PgConnection) -> Names {
        let tables = sqlx::query_scalar(
            "select table_name::text from information_schema.tables where table_schema = 'public'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
        let columns = sqlx::query_scalar(
            "select distinct column_name::text from information_schema.columns where table_schema = 'public'",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
        Names { tables, columns }
    }
}

/// Words a misspelt SQL keyword is compared with.
const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "join",
    "left",
    "inner",
    "on",
    "and",
    "or",
    "not",
    "order",
    "group",
    "by",
    "having",
    "limit",
    "offset",
    "insert",
    "into",
    "values",
    "update",
    "set",
    "delete",
    "returning",
    "conflict",
    "distinct",
    "as",
    "with",
    "union",
    "case",
    "when",
    "then",
    "else",
    "end",
    "null",
    "exists",
    "between",
    "like",
    "ilike",
];

fn rejected(
    query: &FlowQuery,
    error: &sqlx::Error,
    sources: &Sources,
    names: &Names,
) -> Diagnostic {
    let Some(pg) = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
    else {
        return Diagnostic::error(
            codes::SQL_REJECTED,
            format!(
                "query in flow `{}` could not be described: {error}",
                query.flow
            ),
        )
        .at(query.file, query.span, "here");
    };
    let literal = &sources.text(query.file)[query.span.start..query.span.end];
    let at = match pg.position() {
        Some(PgErrorPosition::Original(position)) => {
            position_in_literal(literal, position).map(|(start, len)| Span {
                start: query.span.start + start,
                end: query.span.start + start + len,
            })
        }
        _ => None,
    };
    let quoted = quoted_name(pg.message());
    let suggestion = match (pg.code(), &quoted) {
        ("42P01", Some(name)) => did_you_mean(name, names.tables.iter().map(String::as_str)),
        ("42703", Some(name)) => pg.hint().map(str::to_owned).or_else(|| {
            let column = name.rsplit('.').next().unwrap_or(name);
            did_you_mean(column, names.columns.iter().map(String::as_str))
        }),
        ("42601", Some(word)) => did_you_mean(&word.to_ascii_lowercase(), KEYWORDS.iter().copied())
            .filter(|_| !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())),
        _ => pg.hint().map(str::to_owned),
    };
    let mut diagnostic = Diagnostic::error(
        codes::SQL_REJECTED,
        format!(
            "Postgres rejects the query in flow `{}`: {}",
            query.flow,
            pg.message()
        ),
    );
    let label = match pg.code() {
        "42P01" => "no such table",
        "42703" => "no such column",
        "42601" => "Postgres stopped here",
        "42883" | "42804" => "the types do not fit here",
        _ => "here",
    };
    diagnostic = diagnostic.at(query.file, at.unwrap_or(query.span), label);
    if pg.code() == "42883" || pg.code() == "42804" {
        let bound: Vec<String> = query
            .arguments
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "${} is bound as {}",
                    i + 1,
                    t.unwrap_or("whatever Postgres infers")
                )
            })
            .collect();
        return diagnostic
            .note(format!("in this flow {}", bound.join(", ")))
            .help("cast the placeholder to the column's type, e.g. `$1::bigint`");
    }
    diagnostic.maybe_help(suggestion)
}

/// The first `"name"` in a Postgres message (`relation "schols" does not exist`).
fn quoted_name(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(message[start..start + len].to_owned())
}

/// Maps Postgres's 1-based character position in the SQL to a byte offset and length (the word
/// there) inside the flow's string literal `literal`, quotes and escapes included.
fn position_in_literal(literal: &str, position: usize) -> Option<(usize, usize)> {
    let mut chars = literal.char_indices().skip(1).peekable();
    let mut seen = 0;
    while let Some((at, c)) = chars.next() {
        if c == '"' && chars.peek().is_none() {
            return None;
        }
        seen += 1;
        if seen == position {
            let word = literal[at..]
                .char_indices()
                .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
                .last()
                .map_or(c.len_utf8(), |(i, c)| i + c.len_utf8());
            return Some((at, word));
        }
        if c == '\\' {
            chars.next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_and_skip_escapes() {
        let literal = r#""select \"x\", 'é' form t""#;
        // Postgres counts `select "x", 'é' form t` from 1: `form` starts at character 17.
        let (at, len) = position_in_literal(literal, 17).expect("inside");
        assert_eq!(&literal[at..at + len], "form");
        assert_eq!(position_in_literal(literal, 1), Some((1, 6)));
        assert_eq!(position_in_literal(literal, 99), None);
    }

    #[test]
    fn the_name_in_a_message_is_the_first_quoted_one() {
        assert_eq!(
            quoted_name("relation \"schols\" does not exist").as_deref(),
            Some("schols")
        );
        assert_eq!(quoted_name("syntax error at end of input"), None);
    }
}
