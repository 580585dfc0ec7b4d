//! Leases: one process at a time does a job (`alerts`: evaluate and notify; `redelivery`:
//! process deliveries recorded but not processed). A holder renews well before expiry; one that
//! dies is replaced once its lease has run out.
//!
//! Owns: the `leases` table. Must not know what the jobs are.

use sqlx::PgPool;

/// Takes or renews the lease `name` for `holder` until `ttl` seconds from now; `true` when
/// `holder` has it. A lease held by someone else is taken only once it has expired.
pub async fn hold_lease(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl: f64,
) -> Result<bool, sqlx::Error> {
    let held: Option<String> = sqlx::query_scalar(
        "insert into leases (name, holder, expires_at)
         values ($1, $2, now() + make_interval(secs => $3))
         on conflict (name) do update set
             holder = excluded.holder, expires_at = excluded.expires_at
         where leases.holder = excluded.holder or leases.expires_at < now()
         returning holder",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl)
    .fetch_optional(pool)
    .await?;
    Ok(held.as_deref() == Some(holder))
}

/// Lets go of the lease `name` if `holder` has it, so another process need not wait it out.
pub async fn release_lease(pool: &PgPool, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from leases where name = $1 and holder = $2")
        .bind(name)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

/// Who holds the lease `name` now, if anyone.
pub async fn lease_holder(pool: &PgPool, name: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select holder from leases where name = $1 and expires_at >= now()")
        .bind(name)
        .fetch_optional(pool)
        .await
}
