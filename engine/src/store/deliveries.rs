//! The `deliveries` table: every WhatsApp delivery as received (raw bytes, kept headers), and
//! where it is in its lifecycle: processed, waiting for another attempt, or poison.
//!
//! Owns: the SQL of that lifecycle. Must not decide when to retry or what is poison:
//! [`crate::inbound`] does.

use serde_json::Value;
use sqlx::PgPool;

/// Records a delivery as received; returns its id.
pub async fn insert_delivery(
    pool: &PgPool,
    endpoint: &str,
    headers: &Value,
    body: &[u8],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into deliveries (endpoint, headers, body) values ($1, $2, $3) returning id",
    )
    .bind(endpoint)
    .bind(sqlx::types::Json(headers))
    .bind(body)
    .fetch_one(pool)
    .await
}

/// Marks a delivery done, with the error that stopped it if any.
pub async fn finish_delivery(
    pool: &PgPool,
    id: i64,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("update deliveries set processed_at = now(), error = $2 where id = $1")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await
        .map(drop)
}

/// A delivery recorded but never processed.
#[derive(Debug, sqlx::FromRow)]
pub struct Unprocessed {
    /// Row id.
    pub id: i64,
    /// The endpoint it came to, by name.
    pub endpoint: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// Attempts that failed so far.
    pub attempts: i32,
}

/// Records a delivery that can never be processed, with why, as received and already closed.
pub async fn record_poison(
    pool: &PgPool,
    endpoint: &str,
    headers: &Value,
    body: &[u8],
    reason: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into deliveries (endpoint, headers, body, processed_at, poison)
         values ($1, $2, $3, now(), $4) returning id",
    )
    .bind(endpoint)
    .bind(sqlx::types::Json(headers))
    .bind(body)
    .bind(reason)
    .fetch_one(pool)
    .await
}

/// Closes a delivery as poison: it is kept, and never tried again.
pub async fn mark_poison(pool: &PgPool, id: i64, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update deliveries set processed_at = now(), poison = $2 where id = $1")
        .bind(id)
        .bind(reason)
        .execute(pool)
        .await
        .map(drop)
}

/// Deliveries recorded at least `grace` seconds ago, not processed, whose next attempt is due,
/// oldest first. The grace leaves a delivery to the request that is processing it right now.
pub async fn due_deliveries(
    pool: &PgPool,
    limit: i64,
    grace: f64,
) -> Result<Vec<Unprocessed>, sqlx::Error> {
    sqlx::query_as(
        "select id, endpoint, body, attempts from deliveries
         where processed_at is null
           and received_at < now() - make_interval(secs => $2)
           and coalesce(next_attempt_at, '-infinity') <= now()
         order by id limit $1",
    )
    .bind(limit)
    .bind(grace)
    .fetch_all(pool)
    .await
}

/// Schedules another attempt in `delay` seconds, counting this one and keeping its error.
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    delay: f64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update deliveries
         set attempts = $2, next_attempt_at = now() + make_interval(secs => $3), error = $4
         where id = $1 and processed_at is null",
    )
    .bind(id)
    .bind(attempts)
    .bind(delay)
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}

/// A poison delivery, for operators.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
pub struct Poison {
    /// Row id.
    pub id: i64,
    /// The endpoint it came to.
    pub endpoint: String,
    /// When it arrived, RFC 3339.
    pub received_at: String,
    /// Attempts made before it was declared poison.
    pub attempts: i32,
    /// Why it can never be processed.
    pub reason: String,
    /// Its size in bytes (the bytes themselves are in the row).
    pub bytes: i32,
}

/// The newest poison deliveries, newest first.
pub async fn poison(pool: &PgPool, limit: i64) -> Result<Vec<Poison>, sqlx::Error> {
    sqlx::query_as(
        "select id, endpoint,
                to_char(received_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as received_at,
                attempts, poison as reason, octet_length(body) as bytes
         from deliveries where poison is not null order by id desc limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
