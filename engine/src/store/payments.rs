//! Queries on the payment tables: forwarded SMS as received, and the MoMo transactions they
//! report. Each function is one statement.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

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

/// A transaction as a forwarded SMS reports it.
#[derive(Debug, Clone, Copy)]
pub struct SmsTransaction<'a> {
    /// MoMo's transaction id.
    pub transaction_id: &'a str,
    /// The SMS it was read from.
    pub sms_id: i64,
    /// The pattern that read it.
    pub pattern: &'a str,
    /// What it means (`credit`, `debit`, …).
    pub kind: &'a str,
    /// Whether it credits.
    pub credited: bool,
    /// Amount in whole units.
    pub amount: Option<i64>,
    /// Currency.
    pub currency: Option<&'a str>,
    /// Who paid or was paid.
    pub counterparty: Option<&'a str>,
    /// Their number, masked or full.
    pub phone: Option<&'a str>,
    /// Balance after it.
    pub balance: Option<i64>,
    /// Fee.
    pub fee: Option<i64>,
    /// When it happened, RFC 3339.
    pub occurred_at: Option<&'a str>,
}

/// Records the transaction an SMS reports; `false` when its id was recorded before.
pub async fn insert_transaction(
    tx: &mut Transaction<'_, Postgres>,
    t: &SmsTransaction<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into momo_sms_transactions (transaction_id, sms_id, pattern, kind, credited, amount,
             currency, counterparty, phone, balance, fee, occurred_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::timestamptz)
         on conflict (transaction_id) do nothing",
    )
    .bind(t.transaction_id)
    .bind(t.sms_id)
    .bind(t.pattern)
    .bind(t.kind)
    .bind(t.credited)
    .bind(t.amount)
    .bind(t.currency)
    .bind(t.counterparty)
    .bind(t.phone)
    .bind(t.balance)
    .bind(t.fee)
    .bind(t.occurred_at)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records a MoMo callback as received, before anything reads it; returns its id.
pub async fn record_callback(
    pool: &PgPool,
    endpoint: &str,
    method: &str,
    headers: &Value,
    body: &[u8],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into momo_callbacks (endpoint, method, headers, body) values ($1, $2, $3, $4) returning id",
    )
    .bind(endpoint)
    .bind(method)
    .bind(sqlx::types::Json(headers))
    .bind(body)
    .fetch_one(pool)
    .await
}

/// Sets what became of a callback.
pub async fn finish_callback(
    pool: &PgPool,
    id: i64,
    outcome: &str,
    reference_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update momo_callbacks set outcome = $2, reference_id = $3::uuid, detail = $4 where id = $1",
    )
    .bind(id)
    .bind(outcome)
    .bind(reference_id)
    .bind(detail)
    .execute(pool)
    .await
    .map(drop)
}

/// A payment the engine asked MoMo for.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Payment {
    /// The X-Reference-Id.
    pub reference_id: String,
    /// `collection` or `disbursement`.
    pub product: String,
    /// Our external id.
    pub external_id: String,
    /// Amount in whole units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// Payer (or payee) MSISDN.
    pub party: String,
    /// Who is told the outcome.
    pub contact_id: Option<i64>,
    /// The WhatsApp number the notification is sent from.
    pub phone_number_id: Option<String>,
    /// `PENDING`, `SUCCESSFUL` or `FAILED`.
    pub status: String,
    /// Seconds since it was recorded.
    pub age_secs: f64,
}

const PAYMENT_COLUMNS: &str = "reference_id::text as reference_id, product, external_id, amount, currency, party, contact_id, phone_number_id, status, extract(epoch from now() - created_at)::float8 as age_secs";

/// The payment a callback is about: by our external id (not unique at MoMo), a pending one
/// first, then the newest.
pub async fn payment_by_external_id(
    pool: &PgPool,
    external_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {PAYMENT_COLUMNS} from momo_payments where external_id = $1
         order by status = 'PENDING' desc, created_at desc limit 1"
    ))
    .bind(external_id)
    .fetch_optional(pool)
    .await
}

/// Pending payments requested more than `older_than_secs` ago and not polled for as long,
/// oldest first; each is marked polled now.
pub async fn take_overdue(
    pool: &PgPool,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    take_due(
        pool,
        "status = 'PENDING' and requested_at is not null
         and created_at < now() - make_interval(secs => $1)
         and (polled_at is null or polled_at < now() - make_interval(secs => $1))",
        "polled_at = now()",
        older_than_secs,
        limit,
    )
    .await
}

/// Payments matching `due` (which may use `$1`, `secs`), oldest first, at most `limit`, each
/// updated with `set` as it is taken; rows another process holds are skipped, so one process
/// takes each. Both fragments are constants of this module, never input.
async fn take_due(
    pool: &PgPool,
    due: &str,
    set: &str,
    secs: f64,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "with due as (
             select reference_id from momo_payments where {due}
             order by created_at limit $2
             for update skip locked
         )
         update momo_payments p set {set}
         from due where p.reference_id = due.reference_id
         returning {}",
        PAYMENT_COLUMNS.replace("reference_id::text", "p.reference_id::text")
    ))
    .bind(secs)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Moves a pending payment to its final state; `false` when it was no longer pending (a
/// duplicate or late signal), in which case nothing changed.
pub async fn settle(
    tx: &mut Transaction<'_, Postgres>,
    reference_id: &str,
    status: &str,
    financial_transaction_id: Option<&str>,
    reason: Option<&Value>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "update momo_payments set status = $2, financial_transaction_id = $3, reason = $4,
             settled_at = now(), updated_at = now()
         where reference_id = $1::uuid and status = 'PENDING' and $2 in ('SUCCESSFUL', 'FAILED')",
    )
    .bind(reference_id)
    .bind(status)
    .bind(financial_transaction_id)
    .bind(reason.map(sqlx::types::Json))
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Where a contact's notification goes and in which language: (recipient, language).
pub async fn contact_address(
    tx: &mut Transaction<'_, Postgres>,
    contact_id: i64,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("select coalesce(wa_id, user_id), language from contacts where id = $1")
        .bind(contact_id)
        .fetch_optional(&mut **tx)
        .await
}

/// Queues one reply in the outbox.
pub async fn queue_reply(
    tx: &mut Transaction<'_, Postgres>,
    contact_id: i64,
    recipient: &str,
    phone_number_id: &str,
    template: &str,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into outbox (contact_id, recipient, phone_number_id, template, body) values ($1, $2, $3, $4, $5)",
    )
    .bind(contact_id)
    .bind(recipient)
    .bind(phone_number_id)
    .bind(template)
    .bind(sqlx::types::Json(body))
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// A request to pay a flow asked for: recorded (in the message's transaction) before it is
/// sent, so the reference id exists before MoMo ever sees it.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    /// The fresh X-Reference-Id (UUID v4).
    pub reference_id: &'a str,
    /// Our reference.
    pub external_id: &'a str,
    /// Whole units.
    pub amount: i64,
    /// Currency.
    pub currency: &'a str,
    /// Payer MSISDN.
    pub party: &'a str,
    /// The payer.
    pub contact_id: Option<i64>,
    /// The WhatsApp number the conversation runs on.
    pub phone_number_id: Option<&'a str>,
}

/// Records a request to pay, not yet sent.
pub async fn insert_request(
    tx: &mut Transaction<'_, Postgres>,
    payment: &NewPayment<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into momo_payments (reference_id, product, external_id, amount, currency, party, contact_id, phone_number_id)
         values ($1::uuid, 'collection', $2, $3, $4, $5, $6, $7)",
    )
    .bind(payment.reference_id)
    .bind(payment.external_id)
    .bind(payment.amount)
    .bind(payment.currency)
    .bind(payment.party)
    .bind(payment.contact_id)
    .bind(payment.phone_number_id)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Requests to pay not yet accepted by MoMo and not tried in the last `backoff_secs`, oldest
/// first; each is marked tried now. One process takes each.
pub async fn take_unsent(
    pool: &PgPool,
    backoff_secs: f64,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    take_due(
        pool,
        "requested_at is null and status = 'PENDING'
         and (last_request_at is null or last_request_at < now() - make_interval(secs => $1))",
        "last_request_at = now(), request_attempts = request_attempts + 1",
        backoff_secs,
        limit,
    )
    .await
}

/// Notes MoMo's answer to a request to pay: accepted (`error` is `None`), or why not.
pub async fn note_request(
    pool: &PgPool,
    reference_id: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update momo_payments set requested_at = case when $2::text is null then now() else requested_at end,
             request_error = $2, updated_at = now()
         where reference_id = $1::uuid",
    )
    .bind(reference_id)
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}
