//! Postgres: the pool, the embedded migrations, the schema check, demo data, and every query
//! the engine's own tables need.
//!
//! Owns: SQL against the engine's tables (`conversation`), their planner statistics while they
//! are young (`stats`), and the migration set. Flows' own
//! SQL is run by the flow runtime through [`run_flow_query`], which wraps it so that a step is
//! one round trip whose rows come back as JSON. Must not decide what a message means.

pub mod alerts;
pub mod conversation;
pub mod deliveries;
pub mod health;
pub mod leases;
pub mod outbox;
pub mod payments;
pub mod ratelimits;
pub mod replicas;
pub mod schema;
pub mod stats;

pub use schema::{check_schema, migrate};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr as _;

/// This process's name where rows say who holds or counted them (outbox leases, alert
/// roll-ups, leases): host, pid and a random part, so a restarted process is a new one.
pub fn process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let short = unique.get(..8).unwrap_or_default();
    if host.is_empty() {
        format!("pid{}-{short}", std::process::id())
    } else {
        format!("{host}-{}-{short}", std::process::id())
    }
}

/// Demo data for `easymo seed --demo`.
const DEMO_SQL: &str = include_str!("demo.sql");

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// A query or connection failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema is behind the binary or the product's own migrations.
    #[error("the database schema is behind: {pending} {whose} migration(s) not applied (latest {latest}); run `easymo migrate`")]
    SchemaBehind {
        /// Whose: `engine` or `product`.
        whose: &'static str,
        /// How many are missing.
        pending: usize,
        /// The newest migration's version.
        latest: i64,
    },
    /// A product migration numbered where the engine's own live.
    #[error("product migration {file}: version {version} is in the engine's range (below {floor}); name it by date and time, e.g. 20261206090000_schools.sql")]
    ProductVersion {
        /// The file.
        file: String,
        /// Its version.
        version: i64,
        /// The lowest version a product migration may have.
        floor: i64,
    },
}

/// Whether `error` is Postgres refusing the data itself (SQLSTATE class 22: a NUL byte, a
/// number or date out of range): the same statement with the same values fails every time.
pub fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")))
}

/// Opens a pool of `max` connections.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, Error> {
    let options = PgConnectOptions::from_str(url).map_err(|e| Error::Url(e.to_string()))?;
    open_pool(options, max).await
}

/// Like [`connect`], for the server: a short acquire timeout, and no connection reused that was
/// made before the database last came back. With `planning_each_time`, statements are planned
/// for their values each time: for statements run a few hundred times a second over arrays of
/// ids (the sender's claims and sweeps), the planning costs little, and a generic plan made
/// while a table was small would scan it whole once it has grown. The sender's results are the
/// exception: their statement costs more to plan than to run, so it switches to a generic plan
/// once the tables have grown ([`outbox::mark`]).
pub async fn connect_watched(
    url: &str,
    max: u32,
    planning_each_time: bool,
    health: &std::sync::Arc<health::Health>,
) -> Result<PgPool, Error> {
    let mut options = PgConnectOptions::from_str(url).map_err(|e| Error::Url(e.to_string()))?;
    if planning_each_time {
        options = options.options([("plan_cache_mode", "force_custom_plan")]);
    }
    let health = health.clone();
    Ok(pool_options(max)
        // While the database is down, a request must not wait out connection retries: the
        // breaker refuses it at once, and this bounds the ones caught as it goes down.
        .acquire_timeout(std::time::Duration::from_secs(1))
        .before_acquire(move |_, meta| {
            let fresh = !health.predates_recovery(meta.age);
            Box::pin(async move { Ok(fresh) })
        })
        .connect_with(options)
        .await?)
}

fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(5))
        // A ping before every use was a round trip per transaction; a broken connection fails
        // its statement instead, and the pool replaces it.
        .test_before_acquire(false)
}

async fn open_pool(options: PgConnectOptions, max: u32) -> Result<PgPool, Error> {
    Ok(pool_options(max).connect_with(options).await?)
}

/// The connection options of `url`, for connections of one's own (the breaker's prober).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, Error> {
    PgConnectOptions::from_str(url).map_err(|e| Error::Url(e.to_string()))
}

/// Creates the database named in `url` if it does not exist (connecting to the server's
/// `postgres` database to do so).
pub async fn create_database(url: &str) -> Result<bool, Error> {
    let options = PgConnectOptions::from_str(url).map_err(|e| Error::Url(e.to_string()))?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.database("postgres"))
        .await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query(&format!(
            "create database \"{}\"",
            name.replace('"', "\"\"")
        ))
        .execute(&admin)
        .await?;
    }
    Ok(!exists)
}

/// Loads the demo data (idempotent: skipped when job categories already exist).
pub async fn seed_demo(pool: &PgPool) -> Result<bool, Error> {
    let seeded: bool = sqlx::query_scalar("select exists (select 1 from job_categories)")
        .fetch_one(pool)
        .await?;
    if seeded {
        return Ok(false);
    }
    sqlx::raw_sql(DEMO_SQL).execute(pool).await?;
    Ok(true)
}

/// How many rows a flow query yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// All rows, as a JSON array.
    Rows,
    /// The first row as a JSON object, or null.
    One,
    /// Nothing.
    Nothing,
}

/// Runs one flow step's SQL with its bound values, in one round trip. Rows come back as JSON,
/// converted by Postgres, whatever their column types.
pub async fn run_flow_query(
    tx: &mut Transaction<'_, Postgres>,
    sql: &str,
    args: &[serde_json::Value],
    shape: Shape,
) -> Result<serde_json::Value, sqlx::Error> {
    let sql = sql.trim().trim_end_matches(';');
    let arguments = arguments(args).map_err(sqlx::Error::Encode)?;
    // A statement is prepared once per connection, for the types of the values it was first
    // run with; the same SQL run later with a number where it had a string would send a
    // bigint's bytes as text. Naming the types in the text gives each combination its own.
    let types = argument_types(args);
    let wrapped = match shape {
        Shape::Nothing => {
            let sql = format!("{sql}\n-- easymo arguments: {types}");
            sqlx::query_with(&sql, arguments).execute(&mut **tx).await?;
            return Ok(serde_json::Value::Null);
        }
        // A data-modifying statement with RETURNING may stand in a WITH clause, so one wrapper
        // serves selects and writes alike. Rows keep the inner query's order in practice (a
        // plain CTE scan feeding the aggregate).
        Shape::Rows => format!(
            "with q as ({sql}\n) select coalesce(jsonb_agg(q), '[]'::jsonb) from q -- easymo arguments: {types}"
        ),
        Shape::One => format!(
            "with q as ({sql}\n) select to_jsonb(q) from q limit 1 -- easymo arguments: {types}"
        ),
    };
    let value: Option<Option<serde_json::Value>> = sqlx::query_scalar_with(&wrapped, arguments)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(value.flatten().unwrap_or(match shape {
        Shape::Rows => serde_json::Value::Array(Vec::new()),
        _ => serde_json::Value::Null,
    }))
}

/// One letter per argument for the type it is bound with (`n`ull, `b`oolean, `i`nteger,
/// `f`loat, `s`tring, `j`son), e.g. `is`.
fn argument_types(args: &[serde_json::Value]) -> String {
    use serde_json::Value;
    args.iter()
        .map(|value| match value {
            Value::Null => 'n',
            Value::Bool(_) => 'b',
            Value::Number(n) if n.as_i64().is_some() => 'i',
            Value::Number(_) => 'f',
            Value::String(_) => 's',
            _ => 'j',
        })
        .collect()
}

/// Binds runtime values with the Postgres types that fit them: text, bigint, double, boolean,
/// jsonb, or an untyped null.
fn arguments(
    args: &[serde_json::Value],
) -> Result<sqlx::postgres::PgArguments, sqlx::error::BoxDynError> {
    use serde_json::Value;
    use sqlx::Arguments as _;
    let mut out = sqlx::postgres::PgArguments::default();
    for value in args {
        match value {
            Value::Null => out.add(None::<String>)?,
            Value::Bool(b) => out.add(*b)?,
            Value::Number(n) => match n.as_i64() {
                Some(i) => out.add(i)?,
                None => out.add(n.as_f64().unwrap_or(f64::NAN))?,
            },
            Value::String(s) => out.add(s.clone())?,
            other => out.add(sqlx::types::Json(other.clone()))?,
        }
    }
    Ok(out)
}

/// Takes the savepoint `name` in `tx`. Names are made by the runtime (`m0`, `m1`, …), never
/// from input: a savepoint name cannot be a bind parameter.
pub async fn savepoint(tx: &mut Transaction<'_, Postgres>, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("savepoint {name}"))
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Undoes everything `tx` did since the savepoint `name`; the transaction and its locks stay.
pub async fn rollback_to_savepoint(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("rollback to savepoint {name}"))
        .execute(&mut **tx)
        .await
        .map(drop)
}
