//! Queries on the engine's own tables: deliveries, contacts, sessions, inbound messages, the
//! outbox and statuses. Each function is one statement.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Row as _, Transaction};

/// A contact as the runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// Row id.
    pub id: i64,
    /// Phone-number id.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
    /// Profile name.
    pub name: Option<String>,
    /// `en`, `rw` or `fr`.
    pub language: String,
}

impl Contact {
    /// Where replies go: the phone number, else the business-scoped id.
    pub fn recipient(&self) -> Option<&str> {
        self.wa_id.as_deref().or(self.user_id.as_deref())
    }

    /// The contact as flows and templates see it (`contact.name`, …).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "wa_id": self.wa_id,
            "user_id": self.user_id,
            "name": self.name,
            "language": self.language,
        })
    }
}

/// Where a conversation is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    /// The flow that receives the next message.
    pub awaiting_flow: Option<String>,
    /// What it waits for.
    pub awaiting_kind: Option<String>,
    /// Values kept with `set`.
    pub context: serde_json::Map<String, Value>,
}

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

/// Records a delivery inside the transaction that processes it, as processed: one commit makes
/// both durable, and a failure before it leaves neither (Meta, unanswered, delivers again).
pub async fn insert_processed_delivery(
    tx: &mut Transaction<'_, Postgres>,
    endpoint: &str,
    headers: &Value,
    body: &[u8],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("insert into deliveries (endpoint, headers, body, processed_at) values ($1, $2, $3, now()) returning id")
        .bind(endpoint)
        .bind(sqlx::types::Json(headers))
        .bind(body)
        .fetch_one(&mut **tx)
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

/// Deliveries recorded but never processed (the process stopped in between), oldest first.
pub async fn unprocessed_deliveries(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(i64, String, Vec<u8>)>, sqlx::Error> {
    let rows = sqlx::query(
        "select id, endpoint, body from deliveries where processed_at is null order by id limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The live session of the contact with phone number `wa_id`, read without locking or writing.
pub async fn session_of(pool: &PgPool, wa_id: &str) -> Result<Session, sqlx::Error> {
    let row = sqlx::query(
        "select s.awaiting_flow, s.awaiting_kind, s.context from sessions s join contacts c on c.id = s.contact_id
         where c.wa_id = $1 and s.expires_at > now()",
    )
    .bind(wa_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Session::default());
    };
    let context: sqlx::types::Json<serde_json::Map<String, Value>> = row.try_get(2)?;
    Ok(Session {
        awaiting_flow: row.try_get(0)?,
        awaiting_kind: row.try_get(1)?,
        context: context.0,
    })
}

/// Records an inbound message; `false` when its provider id was seen before (a duplicate).
#[allow(clippy::too_many_arguments)]
pub async fn insert_inbound(
    tx: &mut Transaction<'_, Postgres>,
    provider_message_id: &str,
    delivery_id: i64,
    contact_id: Option<i64>,
    kind: &str,
    payload: &Value,
    sent_at_unix: Option<i64>,
    outcome: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into inbound_messages (provider_message_id, delivery_id, contact_id, kind, payload, sent_at, outcome)
         values ($1, $2, $3, $4, $5, to_timestamp($6), $7) on conflict (provider_message_id) do nothing",
    )
    .bind(provider_message_id)
    .bind(delivery_id)
    .bind(contact_id)
    .bind(kind)
    .bind(sqlx::types::Json(payload))
    .bind(sent_at_unix.map(|t| t as f64))
    .bind(outcome)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Sets what happened to an inbound message and the flow that handled it.
pub async fn set_inbound_outcome(
    tx: &mut Transaction<'_, Postgres>,
    provider_message_id: &str,
    outcome: &str,
    flow: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update inbound_messages set outcome = $2, flow = $3 where provider_message_id = $1",
    )
    .bind(provider_message_id)
    .bind(outcome)
    .bind(flow)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// One reply to write to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Template name.
    pub template: String,
    /// The Graph API request body.
    pub body: Value,
}

/// Records a status webhook and moves the matching outbox row forward (never back: statuses
/// arrive out of order, and `read` may come without `delivered`).
pub async fn record_status(
    tx: &mut Transaction<'_, Postgres>,
    provider_message_id: &str,
    status: &str,
    recipient: Option<&str>,
    at_unix: Option<i64>,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with recorded as (
             insert into message_statuses (provider_message_id, status, recipient, at, payload)
             values ($1, $2, $3, to_timestamp($4), $5)
         )
         update outbox set status = $2, updated_at = now(),
             last_error = case when $2 = 'failed' then $5::jsonb ->> 'errors' else last_error end
         where provider_message_id = $1
           and array_position(array['pending','sending','sent','delivered','read'], status)
               < coalesce(array_position(array['pending','sending','sent','delivered','read'], $2), 99)
           and status not in ('failed', 'dead')",
    )
    .bind(provider_message_id)
    .bind(status)
    .bind(recipient)
    .bind(at_unix.map(|t| t as f64))
    .bind(sqlx::types::Json(payload))
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Where the delivery a message came in is recorded.
#[derive(Debug, Clone, Copy)]
pub enum Delivery<'a> {
    /// Already recorded, with this id.
    Recorded(i64),
    /// To be recorded, as processed, in the message's own transaction: one commit makes both
    /// durable, and a failure before it leaves neither (Meta, unanswered, delivers again).
    Record {
        /// Endpoint name.
        endpoint: &'a str,
        /// The headers kept.
        headers: &'a Value,
        /// The raw body.
        body: &'a [u8],
    },
}

/// Opens a message's transaction holding the sender's lock, in one round trip. The lock
/// serializes everything done for one sender across engine processes until the transaction
/// ends. The key is a stable hash of the sender (FNV-1a), so every process agrees on it.
pub async fn begin_for_sender(
    pool: &PgPool,
    sender: &str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let key = sender.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Only an integer is spliced into the statement; it is computed here, never taken from input.
    pool.begin_with(format!(
        "begin; select pg_advisory_xact_lock({})",
        key as i64
    ))
    .await
}

/// The first statement of a message's transaction: records the delivery (when it is new),
/// upserts the contact, records the message (deduplicated on its provider id) and reads the
/// live session, in one round trip. `None` when the message was seen before.
#[allow(clippy::too_many_arguments)]
pub async fn begin_message(
    tx: &mut Transaction<'_, Postgres>,
    wa_id: Option<&str>,
    user_id: Option<&str>,
    name: Option<&str>,
    provider_message_id: &str,
    delivery: Delivery<'_>,
    kind: &str,
    payload: &Value,
    sent_at_unix: Option<i64>,
) -> Result<Option<(Contact, Session)>, sqlx::Error> {
    // As in `upsert_contact`: the phone number is the conflict target when there is one.
    let upsert = if wa_id.is_some() {
        "insert into contacts (wa_id, user_id, name) values ($1, $2, $3)
         on conflict (wa_id) do update set name = coalesce(excluded.name, contacts.name),
             user_id = coalesce(contacts.user_id, excluded.user_id), updated_at = now()
         returning id, wa_id, user_id, name, language"
    } else {
        "insert into contacts (wa_id, user_id, name) values ($1, $2, $3)
         on conflict (user_id) do update set name = coalesce(excluded.name, contacts.name), updated_at = now()
         returning id, wa_id, user_id, name, language"
    };
    let sql = format!(
        "with d as (
             insert into deliveries (endpoint, headers, body, processed_at)
             select $9, $10, $11, now() where $5::bigint is null
             returning id
         ),
         c as ({upsert}),
         m as (
             insert into inbound_messages (provider_message_id, delivery_id, contact_id, kind, payload, sent_at, outcome)
             select $4, coalesce($5, (select id from d)), c.id, $6, $7, to_timestamp($8), 'received' from c
             on conflict (provider_message_id) do nothing
             returning provider_message_id
         )
         select c.id, c.wa_id, c.user_id, c.name, c.language, exists (select 1 from m) as fresh,
                s.awaiting_flow, s.awaiting_kind, s.context
         from c left join sessions s on s.contact_id = c.id and s.expires_at > now()"
    );
    let row = sqlx::query(&sql)
        .bind(wa_id)
        .bind(user_id)
        .bind(name)
        .bind(provider_message_id)
        .bind(match delivery {
            Delivery::Recorded(id) => Some(id),
            Delivery::Record { .. } => None,
        })
        .bind(kind)
        .bind(sqlx::types::Json(payload))
        .bind(sent_at_unix.map(|t| t as f64))
        .bind(match delivery {
            Delivery::Record { endpoint, .. } => Some(endpoint),
            Delivery::Recorded(_) => None,
        })
        .bind(match delivery {
            Delivery::Record { headers, .. } => Some(sqlx::types::Json(headers)),
            Delivery::Recorded(_) => None,
        })
        .bind(match delivery {
            Delivery::Record { body, .. } => Some(body),
            Delivery::Recorded(_) => None,
        })
        .fetch_one(&mut **tx)
        .await?;
    let fresh: bool = row.try_get(5)?;
    if !fresh {
        return Ok(None);
    }
    let contact = Contact {
        id: row.try_get(0)?,
        wa_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        name: row.try_get(3)?,
        language: row.try_get(4)?,
    };
    let context: Option<sqlx::types::Json<serde_json::Map<String, Value>>> = row.try_get(8)?;
    let session = Session {
        awaiting_flow: row.try_get(6)?,
        awaiting_kind: row.try_get(7)?,
        context: context.map(|c| c.0).unwrap_or_default(),
    };
    Ok(Some((contact, session)))
}

/// The last statement of a message's transaction: its replies into the outbox (when given),
/// the session, and the message's outcome, in one round trip.
#[allow(clippy::too_many_arguments)]
pub async fn finish_message(
    tx: &mut Transaction<'_, Postgres>,
    contact: &Contact,
    phone_number_id: &str,
    provider_message_id: &str,
    replies: Option<&[Outgoing]>,
    session: &Session,
    ttl_secs: i64,
    outcome: &str,
    flow: Option<&str>,
) -> Result<(), sqlx::Error> {
    let replies = replies.unwrap_or_default();
    let templates: Vec<&str> = replies.iter().map(|r| r.template.as_str()).collect();
    let bodies: Vec<sqlx::types::Json<&Value>> =
        replies.iter().map(|r| sqlx::types::Json(&r.body)).collect();
    sqlx::query(
        "with o as (
             insert into outbox (contact_id, recipient, phone_number_id, template, body, inbound_message_id)
             select $1, $2, $3, t, b, $4 from unnest($5::text[], $6::jsonb[]) with ordinality as r(t, b, n) order by n
         ),
         s as (
             insert into sessions (contact_id, awaiting_flow, awaiting_kind, context, expires_at)
             values ($1, $7, $8, $9, now() + make_interval(secs => $10))
             on conflict (contact_id) do update set awaiting_flow = excluded.awaiting_flow,
                 awaiting_kind = excluded.awaiting_kind, context = excluded.context,
                 expires_at = excluded.expires_at, updated_at = now()
         )
         update inbound_messages set outcome = $11, flow = $12 where provider_message_id = $4",
    )
    .bind(contact.id)
    .bind(contact.recipient().unwrap_or_default())
    .bind(phone_number_id)
    .bind(provider_message_id)
    .bind(&templates)
    .bind(&bodies)
    .bind(&session.awaiting_flow)
    .bind(&session.awaiting_kind)
    .bind(sqlx::types::Json(&session.context))
    .bind(ttl_secs as f64)
    .bind(outcome)
    .bind(flow)
    .execute(&mut **tx)
    .await
    .map(drop)
}
