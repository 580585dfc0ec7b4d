//! Queries on the payment tables: forwarded SMS as received, and the MoMo transactions they
//! report. Each function is one statement.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::sms::Reading;

/// Records a forwarded SMS as received, before anything reads it; returns its id.
pub async fn record_sms(
    pool: &PgPool,
    endpoint: &str,
    body: &[u8],
    sender: Option<&str>,
    text: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into sms_messages (endpoint, body, sender, text) values ($1, $2, $3, $4) returning id",
    )
    .bind(endpoint)
    .bind(body)
    .bind(sender)
    .bind(text)
    .fetch_one(pool)
    .await
}

/// Sets what became of an SMS, with what its text said.
pub async fn finish_sms<'c, E>(
    executor: E,
    id: i64,
    outcome: &str,
    readings: Option<&Value>,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query("update sms_messages set outcome = $2, readings = $3 where id = $1")
        .bind(id)
        .bind(outcome)
        .bind(readings.map(sqlx::types::Json))
        .execute(executor)
        .await
        .map(drop)
}

/// Records the transaction an SMS reports; `false` when its id was recorded before.
pub async fn insert_transaction(
    tx: &mut Transaction<'_, Postgres>,
    sms_id: i64,
    reading: &Reading,
    transaction_id: &str,
    credited: bool,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into momo_sms_transactions (transaction_id, sms_id, pattern, kind, credited, amount,
             currency, counterparty, phone, balance, fee, occurred_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::timestamptz)
         on conflict (transaction_id) do nothing",
    )
    .bind(transaction_id)
    .bind(sms_id)
    .bind(&reading.pattern)
    .bind(reading.kind.as_str())
    .bind(credited)
    .bind(reading.amount)
    .bind(&reading.currency)
    .bind(&reading.counterparty)
    .bind(&reading.phone)
    .bind(reading.balance)
    .bind(reading.fee)
    .bind(&reading.occurred_at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
