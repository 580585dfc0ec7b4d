//! Rate-limit budgets shared by replicas: GCRA in one statement per decision.
//!
//! Owns: the `rate_limit_budgets` table. Must not know what a key means or what a refusal
//! gets; `crate::ratelimit` does.

use std::time::Duration;

use sqlx::PgPool;

/// One decision on a shared budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    /// The request fits.
    pub allowed: bool,
    /// How far the key's theoretical arrival time is ahead of now, counting this request:
    /// the budget is whole again after this long (allowed), or one more request fits after
    /// this much minus the window (refused).
    pub ahead: Duration,
}

/// Counts one request against `key`'s budget: one more every `interval`, up to `window`
/// worth at once. The decision is made by the upsert itself, on the row's latest version under
/// its lock, so replicas counting the same key at once (a new key included) are counted one
/// after the other.
pub async fn take(
    pool: &PgPool,
    key: &str,
    interval: Duration,
    window: Duration,
) -> Result<Taken, sqlx::Error> {
    let (allowed, ahead): (bool, f64) = sqlx::query_as(
        "with taken as (
             insert into rate_limit_budgets as b (key, tat)
             values ($1, now() + make_interval(secs => $2))
             on conflict (key) do update
                 set tat = greatest(b.tat, now()) + make_interval(secs => $2)
                 where greatest(b.tat, now()) + make_interval(secs => $2)
                     <= now() + make_interval(secs => $3)
             returning tat
         )
         select exists (select 1 from taken), coalesce(
             extract(epoch from coalesce(
                 (select tat from taken),
                 -- Refused: where the budget would have stood with this request in it.
                 (select greatest(tat, now()) + make_interval(secs => $2)
                  from rate_limit_budgets where key = $1)
             ) - now())::float8, 0)",
    )
    .bind(key)
    .bind(interval.as_secs_f64())
    .bind(window.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(Taken {
        allowed,
        ahead: Duration::try_from_secs_f64(ahead.max(0.0)).unwrap_or_default(),
    })
}

/// Forgets budgets that are whole again: a row whose arrival time has passed counts as none.
pub async fn forget_whole(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query("delete from rate_limit_budgets where tat < now()")
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}
