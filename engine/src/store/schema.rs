//! The schema: the engine's own migrations (embedded in the binary) and a product's
//! (`server.migrations`, a directory beside routes.yaml: new tables for a new service without a
//! rebuild), applied together by `easymo migrate`, and the check that none is pending before
//! anything else runs.
//!
//! Both sets share sqlx's `_sqlx_migrations` table, each ignoring the other's rows; a product
//! migration's version must lie above the engine's range, so the two never collide. Owns: that
//! rule and the pending count. Must not know what any table is for.

use std::collections::BTreeSet;
use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::PgPool;

use super::Error;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The lowest version a product migration may have: the engine numbers its own from 1, and a
/// product's are dated (`20261206090000_schools.sql`, as `sqlx migrate add` names them).
pub const PRODUCT_FLOOR: i64 = 10_000;

/// The product's migrations in `dir`, checked to lie above the engine's range.
pub async fn product(dir: &Path) -> Result<Migrator, Error> {
    let mut migrator = Migrator::new(dir).await?;
    if let Some(low) = migrator.iter().find(|m| m.version < PRODUCT_FLOOR) {
        return Err(Error::ProductVersion {
            file: format!("{}_{}.sql", low.version, low.description.replace(' ', "_")),
            version: low.version,
            floor: PRODUCT_FLOOR,
        });
    }
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

/// Applies the engine's migrations, then the product's in `product_dir`; returns how many were
/// applied.
pub async fn migrate(pool: &PgPool, product_dir: Option<&Path>) -> Result<usize, Error> {
    let before = applied(pool).await?.len();
    let mut engine = Migrator {
        migrations: MIGRATOR.migrations.clone(),
        ..Migrator::DEFAULT
    };
    engine.set_ignore_missing(true);
    engine.run(pool).await?;
    if let Some(dir) = product_dir {
        product(dir).await?.run(pool).await?;
    }
    Ok(applied(pool).await?.len().saturating_sub(before))
}

/// The versions applied successfully.
async fn applied(pool: &PgPool) -> Result<BTreeSet<i64>, Error> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(BTreeSet::new());
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await?;
    Ok(versions.into_iter().collect())
}

/// Fails unless every engine migration, and every product migration in `product_dir`, has
/// been applied.
pub async fn check_schema(pool: &PgPool, product_dir: Option<&Path>) -> Result<(), Error> {
    let applied = applied(pool).await?;
    pending("engine", &MIGRATOR, &applied)?;
    if let Some(dir) = product_dir {
        pending("product", &product(dir).await?, &applied)?;
    }
    Ok(())
}

fn pending(whose: &'static str, set: &Migrator, applied: &BTreeSet<i64>) -> Result<(), Error> {
    let missing: Vec<i64> = set
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    match missing.last() {
        Some(&latest) => Err(Error::SchemaBehind {
            whose,
            pending: missing.len(),
            latest,
        }),
        None => Ok(()),
    }
}
