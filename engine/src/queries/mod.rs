//! Checked flow SQL: every `query`, `query_one` and `exec` in the flows, described by Postgres
//! itself (parameters, result columns, their types and whether they can be null), the way sqlx
//! checks `query!`.
//!
//! Descriptions come from a throwaway database migrated from the engine's and the product's
//! migrations (`live`), or from the committed `.queries/` directory beside routes.yaml
//! (`offline`), so CI needs no database. Owns: which queries a config has, the types their bound
//! values have, the description format and the schema fingerprint that makes a description
//! stale. Must not run flows or decide what a template may read; `fields` does that with the
//! descriptions this module returns.

pub mod fields;
pub mod live;
pub mod offline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use easymo_dsl::ast::{Expr, Literal, QueryKind, Stmt};
use easymo_dsl::check::walk;
use easymo_dsl::span::Span;
use easymo_dsl::{Diagnostic, FileId, Sources};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::store::schema::MIGRATOR;

/// The directory of offline descriptions, beside routes.yaml.
pub const OFFLINE_DIR: &str = ".queries";

/// The Postgres type the runtime binds a value with, as far as the flow text tells: strings are
/// bound as `text`, whole numbers as `int8` (see `store::run_flow_query`). `None` when only the
/// running conversation knows (a session value, a column of another query), which Postgres then
/// infers from the SQL.
pub type ArgumentType = Option<&'static str>;

/// One SQL statement in a flow file.
#[derive(Debug, Clone)]
pub struct FlowQuery {
    /// The flow file.
    pub file: FileId,
    /// The flow it is in.
    pub flow: String,
    /// The name its result is bound to (`let jobs = query …`), if any.
    pub binding: Option<String>,
    /// Rows, one row or nothing.
    pub kind: QueryKind,
    /// The SQL, unescaped.
    pub sql: String,
    /// The string literal, quotes included.
    pub span: Span,
    /// The type each `with` value is bound with.
    pub arguments: Vec<ArgumentType>,
}

impl FlowQuery {
    /// What identifies a description: the SQL and the types its values are bound with.
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.sql.as_bytes());
        for argument in &self.arguments {
            hash.update([0]);
            hash.update(argument.unwrap_or("unknown").as_bytes());
        }
        hex::encode(hash.finalize())
    }
}

/// What Postgres says about a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The SQL described, to make the file readable in review.
    pub sql: String,
    /// The types the values were bound with (`unknown`: inferred by Postgres).
    pub arguments: Vec<String>,
    /// The schema the description was made against; see [`schema_fingerprint`].
    pub schema: String,
    /// The parameter types Postgres settled on.
    pub parameters: Vec<String>,
    /// The result columns, in order.
    pub columns: Vec<Column>,
}

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name (the alias when there is one).
    pub name: String,
    /// Its Postgres type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `true`: may be null (a nullable column, or one on the outer side of a join); `false`:
    /// never; absent: Postgres cannot tell (an expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
}

/// Every query in the config's flows, in file order.
pub fn flow_queries(config: &Config, sources: &Sources) -> Vec<FlowQuery> {
    let mut out = Vec::new();
    for (name, ast) in &config.flows.files {
        let Some(file) = sources.find(name) else {
            continue;
        };
        for flow in &ast.flows {
            walk(&flow.body, &mut |stmt| {
                let (binding, query) = match stmt {
                    Stmt::Let { name, query } => (Some(name.node.clone()), query),
                    Stmt::Exec(query) => (None, query),
                    _ => return,
                };
                out.push(FlowQuery {
                    file,
                    flow: flow.name.node.clone(),
                    binding,
                    kind: query.kind,
                    sql: query.sql.node.clone(),
                    span: query.sql.span,
                    arguments: query.args.iter().map(|a| argument_type(&a.node)).collect(),
                });
            });
        }
    }
    out
}

/// The type the runtime binds `expr` with, when the flow text decides it.
fn argument_type(expr: &Expr) -> ArgumentType {
    match expr {
        Expr::Literal(Literal::String(_)) => Some("text"),
        Expr::Literal(Literal::Number(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some("int8"),
        Expr::Literal(Literal::Number(_)) => Some("float8"),
        Expr::Literal(Literal::Bool(_)) => Some("bool"),
        Expr::Path(path) => {
            let names: Vec<&str> = path.iter().map(|i| i.node.as_str()).collect();
            match names.as_slice() {
                ["contact", "id"] => Some("int8"),
                ["contact", "wa_id" | "user_id" | "name" | "language"]
                | ["choice", "id" | "title" | "description"]
                | ["location", "name" | "address"]
                | ["text", "text"] => Some("text"),
                ["location", "latitude" | "longitude"] => Some("float8"),
                _ => None,
            }
        }
        // Comparisons and `is empty` are booleans.
        Expr::Not(_) | Expr::IsEmpty { .. } | Expr::Binary { .. } => Some("bool"),
        Expr::Literal(Literal::Null) => None,
    }
}

/// Identifies the schema the migrations build: the engine's embedded migrations and the
/// product's files in `product_dir`. A description made against another schema is stale.
pub fn schema_fingerprint(product_dir: Option<&Path>) -> String {
    let mut hash = Sha256::new();
    for migration in MIGRATOR.iter() {
        hash.update(migration.version.to_be_bytes());
        hash.update(&*migration.checksum);
    }
    for file in product_migrations(product_dir) {
        hash.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hash.update([0]);
        hash.update(std::fs::read(&file).unwrap_or_default());
    }
    hex::encode(&hash.finalize()[..16])
}

fn product_migrations(dir: Option<&Path>) -> Vec<PathBuf> {
    let Some(Ok(entries)) = dir.map(std::fs::read_dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// Descriptions by [`FlowQuery::key`].
pub type Descriptions = BTreeMap<String, Description>;

/// What checking the queries found.
#[derive(Debug, Default)]
pub struct Checked {
    /// What Postgres said about each query it accepted.
    pub descriptions: Descriptions,
    /// Problems.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the description of every flow query of `config` (loaded from `routes_dir`) from the
/// committed `.queries/`, and reports what is missing or stale.
pub fn check_offline(
    config: &Config,
    sources: &Sources,
    routes_dir: &Path,
    files: &dyn crate::config::FileSource,
) -> Checked {
    let schema = schema_fingerprint(config.server.migrations.as_deref());
    offline::check(
        &flow_queries(config, sources),
        &routes_dir.join(OFFLINE_DIR),
        &schema,
        files,
    )
}

/// Describes every flow query of `config` against a fresh database on the server at `url`, and
/// reports what Postgres rejects.
pub async fn check_live(
    config: &Config,
    sources: &Sources,
    url: &str,
) -> Result<Checked, live::LiveError> {
    let product = config.server.migrations.as_deref();
    let schema = schema_fingerprint(product);
    live::describe(
        url,
        product,
        &flow_queries(config, sources),
        sources,
        &schema,
    )
    .await
}
