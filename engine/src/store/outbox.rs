//! The outbox as the sender's queue: leases, claims, results in batched statements, and the
//! dead-letter queue's reads and writes.
//!
//! Owns the SQL of `outbox` and `outbox_attempts` after a row is written. Must not decide what
//! an answer means ([`crate::outbound::graph`] does) or call anything.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;

/// A row taken from the table, with its age by the database's clock.
#[derive(Debug, sqlx::FromRow)]
pub struct Swept {
    /// Row id.
    pub id: i64,
    /// `to`.
    pub recipient: String,
    /// The number it goes out from.
    pub phone_number_id: String,
    /// The request body, as JSON text.
    pub body: String,
    /// Seconds since it was queued.
    pub age_secs: f64,
    /// Attempts so far.
    pub attempts: i32,
}

/// Which numbers this process sends from: those named by a `sending` section, or every number
/// when a section sends from whichever number a message came to.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    /// Numbers named explicitly.
    pub named: Vec<String>,
    /// Any number.
    pub any: bool,
}

/// Takes up to `limit` rows no live process holds: pending rows that are due, and rows whose
/// holder died (its lease ran out, even mid-call). Oldest first; `SKIP LOCKED` lets several
/// processes sweep at once without taking the same row.
pub async fn sweep(
    pool: &PgPool,
    process: &str,
    lease: Duration,
    numbers: &Numbers,
    limit: i64,
) -> Result<Vec<Swept>, sqlx::Error> {
    sqlx::query_as(
        "with taken as (
             select id from outbox
             where status in ('pending', 'sending')
               and (lease_until is null or lease_until < now())
               and (status = 'sending' or next_attempt_at is null or next_attempt_at <= now())
               and ($4 or phone_number_id = any($3))
             order by id
             limit $5
             for update skip locked
         ),
         abandoned as (
             update outbox_attempts a set finished_at = now(),
                 error = 'abandoned: its process stopped during the call'
             from taken where a.outbox_id = taken.id and a.finished_at is null
         )
         update outbox o set status = 'pending', leased_by = $1,
             lease_until = now() + make_interval(secs => $2), updated_at = now(),
             attempts = greatest(o.attempts, coalesce(
                 (select max(a.attempt) from outbox_attempts a where a.outbox_id = o.id), 0))
         from taken where o.id = taken.id
         returning o.id, o.recipient, o.phone_number_id, o.body::text as body,
             extract(epoch from now() - coalesce(o.requeued_at, o.created_at))::float8 as age_secs,
             o.attempts",
    )
    .bind(process)
    .bind(lease.as_secs_f64())
    .bind(&numbers.named)
    .bind(numbers.any)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Starts an attempt for each row, if it is still this process's to send and no earlier row
/// to the same recipient is outstanding (that one goes first, whoever holds it): records the
/// attempt before the call, and nothing else (the row itself changes once, after the call).
/// Rows refused are released for a sweeper. Returns the claimed ids with their attempt
/// numbers.
pub async fn claim(
    pool: &PgPool,
    process: &str,
    ids: &[i64],
) -> Result<Vec<(i64, i32)>, sqlx::Error> {
    sqlx::query_as(
        "with claimed as (
             select o.id, o.attempts + 1 as attempt from outbox o
             where o.id = any($1) and o.status = 'pending' and o.leased_by = $2
               and not exists (
                   select 1 from outbox e
                   where e.recipient = o.recipient and e.id < o.id
                     and e.status in ('pending', 'sending'))
         ),
         released as (
             update outbox o set leased_by = null, lease_until = null
             where o.id = any($1) and o.leased_by = $2 and o.status = 'pending'
               and o.id not in (select id from claimed)
         ),
         started as (
             insert into outbox_attempts (outbox_id, attempt, process)
             select id, attempt, $2 from claimed
         )
         select id, attempt from claimed",
    )
    .bind(ids)
    .bind(process)
    .fetch_all(pool)
    .await
}

/// What became of one row after its call (or without one, when it expired first).
#[derive(Debug, Clone)]
pub struct Mark {
    /// Row id.
    pub id: i64,
    /// The row's next state.
    pub next: Next,
    /// The attempt just made, when a call was made.
    pub attempt: Option<i32>,
    /// The attempt's HTTP status (none when no answer came, or no call was made).
    pub http_status: Option<i32>,
    /// Meta's `error.code`.
    pub code: Option<i32>,
    /// The failure, if any.
    pub error: Option<String>,
    /// The call's duration.
    pub latency_ms: Option<i32>,
    /// When the call started, in seconds since the Unix epoch (the attempt's record was
    /// written earlier, when it was claimed).
    pub called_at: Option<f64>,
}

/// A row's next state.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Accepted, with its wamid.
    Sent(String),
    /// Tried again after this wait; this process keeps holding it.
    Retry(Duration),
    /// Dead for this reason.
    Dead(&'static str),
}

/// Records the results of a round in one statement: each row's state, and the end of each
/// attempt. A status webhook that arrived before the row knew its wamid is applied here.
///
/// The sending pool plans every statement for its values (see
/// [`super::connect_watched`]), which for this one cost more than executing it: about 0.45
/// ms a round, 12 us a reply in the load test. Once the hot tables are past their youth (see
/// [`super::stats`], which also analyzes the other tables this statement reads as they grow,
/// so the cached plan is remade with them), it runs with a generic plan instead, at the price
/// of two more round trips (BEGIN and COMMIT) per round.
pub async fn mark(
    pool: &PgPool,
    process: &str,
    lease: Duration,
    marks: &[Mark],
) -> Result<(), sqlx::Error> {
    let generic = !super::stats::tables_are_young();
    mark_planned(pool, process, lease, marks, generic).await
}

/// [`mark`] with its plan chosen by the caller: a cached generic plan, or one made for these
/// values.
pub async fn mark_planned(
    pool: &PgPool,
    process: &str,
    lease: Duration,
    marks: &[Mark],
    generic: bool,
) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    let (mut ids, mut states, mut wamids, mut waits, mut reasons) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for mark in marks {
        ids.push(mark.id);
        let (state, wamid, wait, reason) = match &mark.next {
            Next::Sent(wamid) => ("sent", Some(wamid.as_str()), None, None),
            Next::Retry(wait) => ("retry", None, Some(wait.as_secs_f64()), None),
            Next::Dead(reason) => ("dead", None, None, Some(*reason)),
        };
        states.push(state);
        wamids.push(wamid);
        waits.push(wait);
        reasons.push(reason);
    }
    let statement = sqlx::query(
        "with r as (
             select * from unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], $5::text[],
                 $6::int[], $7::text[], $8::int[], $9::int[], $12::int[], $13::float8[])
                 as r(id, state, wamid, wait, reason, code, error, http, latency, attempt, called)
         ),
         finished as (
             update outbox_attempts a set finished_at = now(),
                 started_at = coalesce(to_timestamp(r.called), a.started_at), http_status = r.http,
                 error_code = r.code, latency_ms = r.latency, error = r.error
             from r where a.outbox_id = r.id and a.attempt = r.attempt and a.finished_at is null
         ),
         late as (
             select r.id,
                 bool_or(s.status = 'failed') as failed,
                 bool_or(s.status = 'read') as read,
                 bool_or(s.status = 'delivered') as delivered,
                 (array_agg(case when jsonb_typeof(s.payload #> '{errors,0,code}') = 'number'
                     and abs((s.payload #>> '{errors,0,code}')::numeric) < 2147483648
                     then (s.payload #>> '{errors,0,code}')::numeric::int end)
                     filter (where s.status = 'failed'))[1] as failed_code
             from r join message_statuses s on s.provider_message_id = r.wamid
             group by r.id
         )
         update outbox o set
             status = case
                 when r.state = 'sent' and l.failed then 'dead'
                 when r.state = 'sent' and l.read then 'read'
                 when r.state = 'sent' and l.delivered then 'delivered'
                 when r.state = 'sent' then 'sent'
                 when r.state = 'retry' then 'pending'
                 else 'dead' end,
             provider_message_id = coalesce(r.wamid, o.provider_message_id),
             attempts = coalesce(r.attempt, o.attempts),
             sent_at = case when r.state = 'sent' then now() else o.sent_at end,
             next_attempt_at = case when r.state = 'retry'
                 then now() + make_interval(secs => r.wait) end,
             dead_reason = case
                 when r.state = 'dead' then r.reason
                 when r.state = 'sent' and l.failed then 'failed' end,
             error_code = coalesce(l.failed_code, r.code, o.error_code),
             last_error = coalesce(r.error, o.last_error),
             lease_until = case when r.state = 'retry'
                 then now() + make_interval(secs => r.wait + $11) end,
             leased_by = case when r.state = 'retry' then $10 end,
             updated_at = now()
         from r left join late l on l.id = r.id
         where o.id = r.id",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&wamids)
    .bind(&waits)
    .bind(&reasons)
    .bind(marks.iter().map(|m| m.code).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.error.as_deref()).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.http_status).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.latency_ms).collect::<Vec<_>>())
    .bind(process)
    .bind(lease.as_secs_f64())
    .bind(marks.iter().map(|m| m.attempt).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.called_at).collect::<Vec<_>>());
    if !generic {
        return statement.execute(pool).await.map(drop);
    }
    let mut tx = pool
        .begin_with("begin; set local plan_cache_mode = force_generic_plan")
        .await?;
    statement.execute(&mut *tx).await?;
    tx.commit().await
}

/// Keeps holding the rows this process has in memory.
pub async fn renew(
    pool: &PgPool,
    process: &str,
    lease: Duration,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update outbox set lease_until = greatest(lease_until, now() + make_interval(secs => $3))
         where id = any($1) and leased_by = $2 and status in ('pending', 'sending')",
    )
    .bind(ids)
    .bind(process)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await
    .map(drop)
}

/// Lets go of rows this process holds but will not send (no `sending` for their number).
pub async fn release(pool: &PgPool, process: &str, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update outbox set leased_by = null, lease_until = null
         where id = any($1) and leased_by = $2 and status = 'pending'",
    )
    .bind(ids)
    .bind(process)
    .execute(pool)
    .await
    .map(drop)
}

/// Re-queues dead rows whose reason is in `reasons`, sent from `numbers`, still worth sending
/// (queued less than `within` ago) and re-driven fewer than `max_redrives` times. Returns how
/// many.
pub async fn redrive(
    pool: &PgPool,
    reasons: &[&str],
    numbers: &Numbers,
    within: Duration,
    max_redrives: i32,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "update outbox set status = 'pending', dead_reason = null, attempts = 0,
             next_attempt_at = null, leased_by = null, lease_until = null,
             redrives = redrives + 1, updated_at = now()
         where id in (
             select id from outbox
             where status = 'dead' and dead_reason = any($1)
               and ($3 or phone_number_id = any($2))
               and created_at > now() - make_interval(secs => $4)
               and redrives < $5
             order by id limit $6
             for update skip locked)",
    )
    .bind(reasons)
    .bind(&numbers.named)
    .bind(numbers.any)
    .bind(within.as_secs_f64())
    .bind(max_redrives)
    .bind(limit)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// Which dead rows an operator means: by id, or by a filter (all of it, not a page).
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// These rows only.
    pub ids: Vec<i64>,
    /// Reason class.
    pub reason: Option<String>,
    /// Meta's error code.
    pub code: Option<i32>,
    /// Dead at or after this, in seconds since the Unix epoch.
    pub since: Option<f64>,
    /// To this number.
    pub recipient: Option<String>,
}

/// A dead row as `easymo dlq list` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeadRow {
    /// Row id.
    pub id: i64,
    /// When it died (its last change).
    pub dead_at: String,
    /// Reason class.
    pub reason: Option<String>,
    /// Meta's code.
    pub code: Option<i32>,
    /// Attempts made.
    pub attempts: i32,
    /// `to`.
    pub recipient: String,
    /// The number it was to go out from.
    pub phone_number_id: String,
    /// The template.
    pub template: String,
    /// The last error.
    pub last_error: Option<String>,
}

/// `where` for dead rows matching `filter`, with its parameters from `$1` to `$5`.
const DEAD_MATCHING: &str = "status = 'dead'
    and (cardinality($1::bigint[]) = 0 or id = any($1))
    and ($2::text is null or dead_reason = $2)
    and ($3::int is null or error_code = $3)
    and ($4::float8 is null or updated_at >= to_timestamp($4))
    and ($5::text is null or recipient = $5)";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q DeadFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&filter.ids)
        .bind(filter.reason.as_deref())
        .bind(filter.code)
        .bind(filter.since)
        .bind(filter.recipient.as_deref())
}

/// Dead rows matching `filter`, oldest first, at most `limit`.
pub async fn dead(
    pool: &PgPool,
    filter: &DeadFilter,
    limit: i64,
) -> Result<Vec<DeadRow>, sqlx::Error> {
    let sql = format!(
        "select id, to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as dead_at,
             dead_reason as reason, error_code as code, attempts, recipient, phone_number_id,
             template, last_error
         from outbox where {DEAD_MATCHING} order by id limit $6"
    );
    bind_filter(sqlx::query_as(&sql), filter)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Re-queues the dead rows matching `filter` (or, with `dry_run`, only says which): pending
/// again, attempts from zero, `deliver_within` counted from now. The running engine's sweeper
/// takes them in outbox order and its dispatcher paces them at each number's cap. Returns the
/// ids.
pub async fn requeue(
    pool: &PgPool,
    filter: &DeadFilter,
    dry_run: bool,
) -> Result<Vec<i64>, sqlx::Error> {
    act_on_dead(
        pool,
        filter,
        dry_run,
        "status = 'pending', dead_reason = null, attempts = 0, next_attempt_at = null,
         leased_by = null, lease_until = null, redrives = redrives + 1, requeued_at = now()",
    )
    .await
}

/// Gives up on the dead rows matching `filter` (or, with `dry_run`, only says which): they
/// leave the dead-letter queue and are never sent. Returns the ids.
pub async fn discard(
    pool: &PgPool,
    filter: &DeadFilter,
    dry_run: bool,
) -> Result<Vec<i64>, sqlx::Error> {
    act_on_dead(pool, filter, dry_run, "status = 'discarded'").await
}

/// Sets `changes` on the dead rows matching `filter`, oldest first; returns their ids.
async fn act_on_dead(
    pool: &PgPool,
    filter: &DeadFilter,
    dry_run: bool,
    changes: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let sql = if dry_run {
        format!("select id from outbox where {DEAD_MATCHING} order by id")
    } else {
        format!(
            "with chosen as (select id from outbox where {DEAD_MATCHING} order by id for update)
             update outbox o set {changes}, updated_at = now()
             from chosen where o.id = chosen.id
             returning o.id"
        )
    };
    let mut ids: Vec<i64> = bind_filter(sqlx::query_as::<_, (i64,)>(&sql), filter)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// One reason's share of the dead-letter queue.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeadStat {
    /// Reason class.
    pub reason: String,
    /// Dead rows.
    pub rows: i64,
    /// The oldest's time of death.
    pub oldest: String,
    /// The newest's.
    pub newest: String,
}

/// Dead rows by reason, and how many were discarded.
pub async fn dead_stats(pool: &PgPool) -> Result<(Vec<DeadStat>, i64), sqlx::Error> {
    let stats = sqlx::query_as(
        "select coalesce(dead_reason, 'unknown') as reason, count(*) as rows,
             to_char(min(updated_at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as oldest,
             to_char(max(updated_at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as newest
         from outbox where status = 'dead' group by 1 order by 2 desc, 1",
    )
    .fetch_all(pool)
    .await?;
    let discarded: i64 =
        sqlx::query_scalar("select count(*) from outbox where status = 'discarded'")
            .fetch_one(pool)
            .await?;
    Ok((stats, discarded))
}

/// One row with everything the operator may need: the row and each attempt.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct RowDetail {
    /// Row id.
    pub id: i64,
    /// Status.
    pub status: String,
    /// Reason class, when dead.
    pub reason: Option<String>,
    /// Meta's code.
    pub code: Option<i32>,
    /// `to`.
    pub recipient: String,
    /// The number.
    pub phone_number_id: String,
    /// The template.
    pub template: String,
    /// The wamid.
    pub wamid: Option<String>,
    /// Queued.
    pub created_at: String,
    /// Re-drives.
    pub redrives: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// The request body.
    pub body: Json<Value>,
}

/// One call to the Graph API.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    /// 1, 2, ...
    pub attempt: i32,
    /// Who made it.
    pub process: String,
    /// Started.
    pub started_at: String,
    /// HTTP status, when an answer came.
    pub http_status: Option<i32>,
    /// Meta's code.
    pub error_code: Option<i32>,
    /// Duration.
    pub latency_ms: Option<i32>,
    /// The failure.
    pub error: Option<String>,
}

/// A row and its attempts, if it exists.
pub async fn detail(
    pool: &PgPool,
    id: i64,
) -> Result<Option<(RowDetail, Vec<AttemptRow>)>, sqlx::Error> {
    let row: Option<RowDetail> = sqlx::query_as(
        "select id, status, dead_reason as reason, error_code as code, recipient,
             phone_number_id, template, provider_message_id as wamid,
             to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as created_at,
             redrives, last_error, body
         from outbox where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempts = sqlx::query_as(
        "select attempt, process,
             to_char(started_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') as started_at,
             http_status, error_code, latency_ms, error
         from outbox_attempts where outbox_id = $1 order by id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((row, attempts)))
}

/// Seconds since the Unix epoch of a timestamp as Postgres reads it (`2026-12-01`,
/// `2026-12-01T10:00:00Z`, ...); an error names what is wrong with it.
pub async fn epoch_of(pool: &PgPool, timestamp: &str) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("select extract(epoch from $1::timestamptz)::float8")
        .bind(timestamp)
        .fetch_one(pool)
        .await
}

/// Queues one reply outside a flow's transaction (the slow-down reply of `on_limit:
/// reply_once`), leased to `lease` when this process will send it. Returns its id.
pub async fn queue(
    pool: &PgPool,
    recipient: &str,
    phone_number_id: &str,
    template: &str,
    body: &Value,
    lease: Option<(&str, Duration)>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into outbox (contact_id, recipient, phone_number_id, template, body, leased_by,
             lease_until)
         select (select id from contacts where wa_id = $1 or user_id = $1 limit 1), $1, $2, $3,
             $4, $5, case when $5 is not null then now() + make_interval(secs => $6) end
         returning id",
    )
    .bind(recipient)
    .bind(phone_number_id)
    .bind(template)
    .bind(Json(body))
    .bind(lease.map(|(process, _)| process))
    .bind(lease.map_or(0.0, |(_, lease)| lease.as_secs_f64()))
    .fetch_one(pool)
    .await
}

/// The language of the contact with this number or business-scoped id, if known.
pub async fn contact_language(pool: &PgPool, sender: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select language from contacts where wa_id = $1 or user_id = $1 limit 1")
        .bind(sender)
        .fetch_optional(pool)
        .await
}
