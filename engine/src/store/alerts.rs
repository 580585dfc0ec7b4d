//! Alert evaluation's tables: each process's per-interval figures, each rule's state, the
//! figures read from the system of record (leases: [`super::leases`]).
//!
//! Owns: SQL against `alert_rollups` and `alert_states`. Times cross this boundary as
//! Unix seconds (`f64`). Must not evaluate a rule: it stores and reads what the alerts module
//! decides.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::metrics::{Figures, SystemFigures};

/// Adds one process's figures for the interval starting at `bucket`.
pub async fn add_rollup(
    pool: &PgPool,
    bucket: f64,
    process: &str,
    figures: &HashMap<String, Figures>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (endpoint, f) in figures {
        let counts: Vec<i64> = f.counts.iter().map(|c| count(*c)).collect();
        // The same process rolls up once per bucket; should two roll-ups meet (a slow clock),
        // they add up, bucket by bucket.
        sqlx::query(
            "insert into alert_rollups
                 (bucket, process, endpoint, requests, errors, failed_flows, limited,
                  latency_edges, latency_counts)
             values (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9)
             on conflict (bucket, process, endpoint) do update set
                 requests = alert_rollups.requests + excluded.requests,
                 errors = alert_rollups.errors + excluded.errors,
                 failed_flows = alert_rollups.failed_flows + excluded.failed_flows,
                 limited = alert_rollups.limited + excluded.limited,
                 latency_counts = case
                     when alert_rollups.latency_edges = excluded.latency_edges then
                         array(select a + b from unnest(alert_rollups.latency_counts,
                                                        excluded.latency_counts) as t(a, b))
                     else alert_rollups.latency_counts end",
        )
        .bind(bucket)
        .bind(process)
        .bind(endpoint)
        .bind(count(f.requests))
        .bind(count(f.errors))
        .bind(count(f.failed_flows))
        .bind(count(f.limited))
        .bind(&f.edges)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A tally's count as stored: tallies count whole requests, so this is exact.
#[expect(
    clippy::cast_possible_truncation,
    reason = "whole, non-negative counts"
)]
fn count(n: f64) -> i64 {
    n.round() as i64
}

type RollupRow = (String, i64, i64, i64, i64, Vec<f64>, Vec<i64>);

/// Every process's figures per endpoint for buckets starting at or after `since`.
pub async fn window(pool: &PgPool, since: f64) -> Result<HashMap<String, Figures>, sqlx::Error> {
    let rows: Vec<RollupRow> = sqlx::query_as(
        "select endpoint, requests, errors, failed_flows, limited, latency_edges, latency_counts
         from alert_rollups where bucket >= to_timestamp($1)",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut by_endpoint: HashMap<String, Figures> = HashMap::new();
    for (endpoint, requests, errors, failed_flows, limited, edges, counts) in rows {
        let figures = Figures {
            requests: unsigned(requests),
            errors: unsigned(errors),
            failed_flows: unsigned(failed_flows),
            limited: unsigned(limited),
            edges,
            counts: counts.into_iter().map(unsigned).collect(),
        };
        by_endpoint.entry(endpoint).or_default().add(&figures);
    }
    Ok(by_endpoint)
}

#[expect(clippy::cast_precision_loss, reason = "counts stay far below 2^53")]
fn unsigned(n: i64) -> f64 {
    n.max(0) as f64
}

/// Drops figures older than any window can reach.
pub async fn prune_rollups(pool: &PgPool, before: f64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from alert_rollups where bucket < to_timestamp($1)")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Reads [`SystemFigures`] in one statement, payments settled since `since` (Unix seconds; `0`
/// for every one ever settled).
pub async fn system_figures(pool: &PgPool, since: f64) -> Result<SystemFigures, sqlx::Error> {
    let (dlq_size, outbox_pending, payments_successful, payments_failed): (i64, i64, i64, i64) =
        sqlx::query_as(
            "select
                 (select count(*) from outbox where status = 'dead'),
                 (select count(*) from outbox where status in ('pending', 'sending')),
                 (select count(*) from momo_payments
                  where status = 'SUCCESSFUL' and settled_at >= to_timestamp($1)),
                 (select count(*) from momo_payments
                  where status = 'FAILED' and settled_at >= to_timestamp($1))",
        )
        .bind(since)
        .fetch_one(pool)
        .await?;
    Ok(SystemFigures {
        dlq_size: unsigned(dlq_size),
        outbox_pending: unsigned(outbox_pending),
        payments_successful: unsigned(payments_successful),
        payments_failed: unsigned(payments_failed),
    })
}

/// A rule's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    /// The alert name.
    pub alert: String,
    /// `true` when firing, `false` when pending.
    pub firing: bool,
    /// When the condition started to hold.
    pub active_since: f64,
    /// When channels were last told it fires.
    pub notified_at: Option<f64>,
    /// The last evaluated value.
    pub value: Option<f64>,
}

type StateRow = (String, String, f64, Option<f64>, Option<f64>);

/// Every stored rule state.
pub async fn states(pool: &PgPool) -> Result<Vec<StoredState>, sqlx::Error> {
    let rows: Vec<StateRow> = sqlx::query_as(
        "select alert, state, extract(epoch from active_since)::float8,
                extract(epoch from notified_at)::float8, value
         from alert_states",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(alert, state, active_since, notified_at, value)| StoredState {
                alert,
                firing: state == "firing",
                active_since,
                notified_at,
                value,
            },
        )
        .collect())
}

/// Replaces the stored states with `states` in one transaction: rules that are inactive are
/// absent.
pub async fn save_states(pool: &PgPool, states: &[StoredState]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let alerts: Vec<&str> = states.iter().map(|s| s.alert.as_str()).collect();
    sqlx::query("delete from alert_states where not (alert = any($1))")
        .bind(&alerts)
        .execute(&mut *tx)
        .await?;
    for state in states {
        sqlx::query(
            "insert into alert_states (alert, state, active_since, fired_at, notified_at, value)
             values ($1, $2, to_timestamp($3),
                     case when $2 = 'firing' then now() end, to_timestamp($4), $5)
             on conflict (alert) do update set
                 state = excluded.state,
                 active_since = excluded.active_since,
                 fired_at = case when excluded.state = 'firing'
                     then coalesce(alert_states.fired_at, now()) end,
                 notified_at = excluded.notified_at,
                 value = excluded.value,
                 updated_at = now()",
        )
        .bind(&state.alert)
        .bind(if state.firing { "firing" } else { "pending" })
        .bind(state.active_since)
        .bind(state.notified_at)
        .bind(state.value)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
