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
/// worth at once. The row is locked while it is decided, so replicas counting the same key at
/// once are counted one after the other.
pub async fn take(
    pool: &PgPool,
    key: &str,
    interval: Duration,
    window: Duration,
) -> Result<Taken, sqlx::Error> {
    let (allowed, ahead): (bool, f64) = sqlx::query_as(
        "with prev as (
             select tat from rate_limit_budgets where key = $1 for update
         ),
         next as (
             select greatest((select tat from prev), now()) + make_interval(secs => $2) as tat
         ),
         taken as (
             insert into rate_limit_budgets as b (key, tat)
             select $1, tat from next where tat <= now() + make_interval(secs => $3)
             on conflict (key) do update set tat = excluded.tat
             returning tat
         )
         select exists (select 1 from taken),
             extract(epoch from (select tat from next) - now())::float8",
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
