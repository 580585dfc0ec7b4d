//! The replicas serving on this database: each one's heartbeat and the config it serves.
//!
//! Owns: the `replicas` table. Must not decide who leads (`crate::leader` does, through
//! `leases`).

use sqlx::PgPool;

/// A replica as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Replica {
    /// Its process name (host, pid, a random suffix).
    pub process: String,
    /// SHA-256 of the routes.yaml and flows it serves.
    pub config_version: String,
    /// Seconds since its last heartbeat.
    pub seen_secs_ago: f64,
    /// It holds the `leader` lease.
    pub leader: bool,
}

/// Says `process` is alive and serves `config_version`; forgets replicas silent for longer
/// than `forget_after_secs`.
pub async fn beat(
    pool: &PgPool,
    process: &str,
    config_version: &str,
    forget_after_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with gone as (
             delete from replicas where seen_at < now() - make_interval(secs => $3)
         )
         insert into replicas (process, config_version) values ($1, $2)
         on conflict (process) do update set
             config_version = excluded.config_version, seen_at = now()",
    )
    .bind(process)
    .bind(config_version)
    .bind(forget_after_secs)
    .execute(pool)
    .await
    .map(drop)
}

/// Every replica heard from within `within_secs`, with who leads.
pub async fn live(
    pool: &PgPool,
    lease: &str,
    within_secs: f64,
) -> Result<Vec<Replica>, sqlx::Error> {
    sqlx::query_as(
        "select r.process, r.config_version,
             extract(epoch from now() - r.seen_at)::float8 as seen_secs_ago,
             coalesce(l.holder = r.process and l.expires_at > now(), false) as leader
         from replicas r left join leases l on l.name = $1
         where r.seen_at > now() - make_interval(secs => $2)
         order by r.started_at, r.process",
    )
    .bind(lease)
    .bind(within_secs)
    .fetch_all(pool)
    .await
}

/// Says `process` is gone, so the others stop listing it at once.
pub async fn leave(pool: &PgPool, process: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from replicas where process = $1")
        .bind(process)
        .execute(pool)
        .await
        .map(drop)
}
