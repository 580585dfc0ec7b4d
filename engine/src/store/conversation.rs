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
    /// How it was decided: `default`, `inferred` or `chosen`.
    pub language_source: String,
    /// The language of the last conversation-starting keyword, when it differed.
    pub language_hint: Option<String>,
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

/// The live session of the contact with phone number `wa_id`, read without locking or writing.
pub async fn session_of(
    db: impl sqlx::PgExecutor<'_>,
    wa_id: &str,
) -> Result<Session, sqlx::Error> {
    let row = sqlx::query(
        "select s.awaiting_flow, s.awaiting_kind, s.context from sessions s join contacts c on c.id = s.contact_id
         where c.wa_id = $1 and s.expires_at > now()",
    )
    .bind(wa_id)
    .fetch_optional(db)
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

/// Live sessions waiting in a flow not in `awaitable` (a reload removed or renamed it), counted
/// by the flow they wait in: what an operator needs to know before those people answer.
pub async fn stranded_sessions(
    db: impl sqlx::PgExecutor<'_>,
    awaitable: &[String],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select awaiting_flow, count(*) from sessions
         where awaiting_flow is not null and expires_at > now() and awaiting_flow <> all($1)
         group by awaiting_flow order by awaiting_flow",
    )
    .bind(awaitable)
    .fetch_all(db)
    .await
}

/// Records a status webhook and moves the matching outbox row forward (never back: statuses
/// arrive out of order, and `read` may come without `delivered`). A `failed` status makes the
/// row dead with reason `failed` and Meta's code. A status that arrives before the sender has
/// stored the wamid is applied when it does ([`super::outbox::mark`]).
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
         update outbox set updated_at = now(),
             status = case when $2 = 'failed' then 'dead' else $2 end,
             dead_reason = case when $2 = 'failed' then 'failed' else dead_reason end,
             error_code = case when $2 = 'failed'
                 then (case when jsonb_typeof($5::jsonb #> '{errors,0,code}') = 'number'
                     and abs(($5::jsonb #>> '{errors,0,code}')::numeric) < 2147483648
                     then ($5::jsonb #>> '{errors,0,code}')::numeric::int end)
                 else error_code end,
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
    /// It holds only this message, and is kept on the message's row.
    Record(Raw<'a>),
}

/// The advisory-lock key of a sender: a stable hash (FNV-1a), so every process agrees on it.
fn sender_key(sender: &str) -> i64 {
    sender.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) as i64
}

/// Opens a transaction holding the lock of every sender given. A lock serializes everything
/// done for one sender across engine processes until the transaction ends. Keys are taken in
/// ascending order, so two transactions locking overlapping senders wait for each other
/// instead of deadlocking. Two round trips: the locks are a prepared statement (sent with
/// BEGIN as one simple query, Postgres parsed and planned it for every batch).
pub async fn begin_for_senders(
    pool: &PgPool,
    senders: &[&str],
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    // While the tables are young, plan each statement for its values (see `stats`).
    let plan = if super::stats::tables_are_young() {
        "set local plan_cache_mode = force_custom_plan; "
    } else {
        ""
    };
    let mut tx = pool.begin_with(format!("begin; {plan}")).await?;
    lock_senders(&mut tx, senders).await?;
    Ok(tx)
}

/// Takes each sender's lock until the transaction ends, in one order, so two transactions
/// never wait on each other.
async fn lock_senders(
    tx: &mut Transaction<'_, Postgres>,
    senders: &[&str],
) -> Result<(), sqlx::Error> {
    let mut keys: Vec<i64> = senders.iter().map(|s| sender_key(s)).collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query("select pg_advisory_xact_lock(k) from unnest($1::bigint[]) as k")
        .bind(&keys)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Like [`begin_for_senders`], as a savepoint of the transaction `conn` is in: released, not
/// committed, at the end, so the caller's transaction decides.
pub async fn begin_within<'c>(
    conn: &'c mut sqlx::PgConnection,
    senders: &[&str],
) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    lock_senders(&mut tx, senders).await?;
    Ok(tx)
}

/// A message as the first statement of its transaction needs it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Phone-number id of the sender.
    pub wa_id: Option<&'a str>,
    /// Business-scoped id of the sender.
    pub user_id: Option<&'a str>,
    /// Profile name.
    pub name: Option<&'a str>,
    /// The wamid.
    pub provider_message_id: &'a str,
    /// The language and its source (`default` or `inferred`) a new contact starts with: known
    /// before the batch, so that a first message costs no second write to the contact.
    pub first_language: (&'a str, &'static str),
}

/// What the first statement found for one message.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its provider id was recorded before: a repeated delivery.
    pub seen: bool,
    /// The sender, created or refreshed (none when the message names no sender).
    pub contact: Option<Contact>,
    /// The sender's live session (empty when none).
    pub session: Session,
}

/// The first statement of a batch's transaction: upserts the senders (writing a contact only
/// when something about it changed), tells which messages were seen before, reads the live
/// sessions, in one round trip. Messages must have distinct senders.
pub async fn begin_batch(
    tx: &mut Transaction<'_, Postgres>,
    arrivals: &[Arrival<'_>],
) -> Result<Vec<Started>, sqlx::Error> {
    let wa_ids: Vec<Option<&str>> = arrivals.iter().map(|a| a.wa_id).collect();
    let user_ids: Vec<Option<&str>> = arrivals.iter().map(|a| a.user_id).collect();
    let names: Vec<Option<&str>> = arrivals.iter().map(|a| a.name).collect();
    let ids: Vec<&str> = arrivals.iter().map(|a| a.provider_message_id).collect();
    let languages: Vec<&str> = arrivals.iter().map(|a| a.first_language.0).collect();
    let sources: Vec<&str> = arrivals.iter().map(|a| a.first_language.1).collect();
    // The phone number is the conflict target when there is one; username users (no phone
    // number) are found by their business-scoped id. An unchanged contact is not rewritten:
    // its row comes from the statement's snapshot instead of RETURNING.
    //
    // Every lookup is a lateral probe by key. The plan is prepared once per connection, often
    // while the tables are still small; an `exists (...)` in the select list let Postgres pick
    // a hashed scan of the whole message table then, and keep it as the table grew.
    let rows = sqlx::query(
        "with i as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[])
                 with ordinality as i(wa_id, user_id, name, mid, language, source, n)
         ),
         by_phone as (
             insert into contacts (wa_id, user_id, name, language, language_source)
             select wa_id, user_id, name, language, source from i where wa_id is not null
             on conflict (wa_id) do update set name = coalesce(excluded.name, contacts.name),
                 user_id = coalesce(contacts.user_id, excluded.user_id), updated_at = now()
             where contacts.name is distinct from coalesce(excluded.name, contacts.name)
                or (contacts.user_id is null and excluded.user_id is not null)
             returning id, wa_id, user_id, name, language, language_source, language_hint
         ),
         by_user as (
             insert into contacts (user_id, name, language, language_source)
             select user_id, name, language, source from i
             where wa_id is null and user_id is not null
             on conflict (user_id) where user_id is not null
             do update set name = coalesce(excluded.name, contacts.name), updated_at = now()
             where contacts.name is distinct from coalesce(excluded.name, contacts.name)
             returning id, wa_id, user_id, name, language, language_source, language_hint
         )
         select c.id, c.wa_id, c.user_id, c.name, c.language, c.language_source, c.language_hint,
                m.seen is not null as seen,
                s.awaiting_flow, s.awaiting_kind, s.context
         from i
         left join lateral (
             select * from by_phone p where p.wa_id = i.wa_id
             union all
             select k.id, k.wa_id, k.user_id, k.name, k.language, k.language_source, k.language_hint from contacts k
                 where k.wa_id = i.wa_id
             union all
             select * from by_user u where i.wa_id is null and u.user_id = i.user_id
             union all
             select k.id, k.wa_id, k.user_id, k.name, k.language, k.language_source, k.language_hint from contacts k
                 where i.wa_id is null and k.user_id = i.user_id
             limit 1
         ) c on true
         left join sessions s on s.contact_id = c.id and s.expires_at > now()
         left join lateral (
             select true as seen from inbound_messages m where m.provider_message_id = i.mid limit 1
         ) m on true
         order by i.n",
    )
    .bind(&wa_ids)
    .bind(&user_ids)
    .bind(&names)
    .bind(&ids)
    .bind(&languages)
    .bind(&sources)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let id: Option<i64> = row.try_get(0)?;
            let contact = match id {
                Some(id) => Some(Contact {
                    id,
                    wa_id: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    name: row.try_get(3)?,
                    language: row.try_get(4)?,
                    language_source: row.try_get(5)?,
                    language_hint: row.try_get(6)?,
                }),
                None => None,
            };
            let context: Option<sqlx::types::Json<serde_json::Map<String, Value>>> =
                row.try_get(10)?;
            Ok(Started {
                seen: row.try_get(7)?,
                contact,
                session: Session {
                    awaiting_flow: row.try_get(8)?,
                    awaiting_kind: row.try_get(9)?,
                    context: context.map(|c| c.0).unwrap_or_default(),
                },
            })
        })
        .collect()
}

/// Records how a contact's language now stands (rare: only when something changed).
pub async fn set_language(
    tx: &mut Transaction<'_, Postgres>,
    contact_id: i64,
    language: &str,
    source: &str,
    hint: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update contacts set language = $2, language_source = $3, language_hint = $4,
             updated_at = now()
         where id = $1",
    )
    .bind(contact_id)
    .bind(language)
    .bind(source)
    .bind(hint)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Everything a batch writes, gathered so that one statement writes it.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    deliveries: Vec<Raw<'a>>,
    messages: Vec<MessageRow<'a>>,
    outbox: Vec<OutboxRow<'a>>,
    sessions: Vec<(i64, &'a Session, i64)>,
}

/// A delivery as received, recorded in the transaction that processes it.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// Endpoint name.
    pub endpoint: &'a str,
    /// The headers kept.
    pub headers: &'a Value,
    /// The raw body.
    pub body: &'a [u8],
}

/// An inbound message as recorded, with what happened to it.
#[derive(Debug)]
pub struct MessageRow<'a> {
    /// The wamid.
    pub id: &'a str,
    /// The delivery it came in, when that is a deliveries row.
    pub delivery_id: Option<i64>,
    /// The delivery it came in, when that held only this message: kept on the message's row.
    pub delivery: Option<Raw<'a>>,
    /// Its sender, when known.
    pub contact_id: Option<i64>,
    /// Its type (`text`, `interactive`, …).
    pub kind: &'a str,
    /// The message JSON; `None` when [`MessageRow::delivery`] holds it.
    pub payload: Option<&'a Value>,
    /// Meta's timestamp, Unix seconds.
    pub sent_at: Option<i64>,
    /// `answered`, `stale`, `unsupported`, `ignored` or `failed`.
    pub outcome: &'a str,
    /// The flow that handled it.
    pub flow: Option<&'a str>,
}

#[derive(Debug)]
struct OutboxRow<'a> {
    contact_id: i64,
    recipient: &'a str,
    phone_number_id: &'a str,
    template: &'a str,
    body: &'a Value,
    inbound_id: &'a str,
    /// Written leased to this process, whose sender takes it from memory.
    leased: bool,
}

impl<'a> Writes<'a> {
    /// Records a delivery, as processed, in the deliveries table.
    pub fn delivery(&mut self, raw: Raw<'a>) {
        self.deliveries.push(raw);
    }

    /// Records a message with what happened to it.
    pub fn message(&mut self, row: MessageRow<'a>) {
        self.messages.push(row);
    }

    /// Queues a reply to a contact: the template it came from and the Graph API request body.
    /// Replies are written in the order they are queued.
    pub fn reply(
        &mut self,
        contact: &'a Contact,
        phone_number_id: &'a str,
        inbound_id: &'a str,
        template: &'a str,
        body: &'a Value,
        leased: bool,
    ) {
        self.outbox.push(OutboxRow {
            contact_id: contact.id,
            recipient: contact.recipient().unwrap_or_default(),
            phone_number_id,
            template,
            body,
            inbound_id,
            leased,
        });
    }

    /// The leased replies with what [`finish_batch`] returned: (id, first attempt recorded,
    /// recipient, number, body).
    pub fn leased_replies<'s>(
        &'s self,
        ids: &'s [(i64, bool)],
    ) -> impl Iterator<Item = (i64, bool, &'a str, &'a str, &'a Value)> + 's {
        self.outbox
            .iter()
            .zip(ids)
            .filter(|(row, _)| row.leased)
            .map(|(row, (id, recorded))| {
                (*id, *recorded, row.recipient, row.phone_number_id, row.body)
            })
    }

    /// Stores a contact's session, live for `ttl_secs` more.
    pub fn session(&mut self, contact_id: i64, session: &'a Session, ttl_secs: i64) {
        self.sessions.push((contact_id, session, ttl_secs));
    }
}

/// The batch's write: see [`finish_batch`].
const FINISH_BATCH_SQL: &str = "with m as (
             insert into inbound_messages (provider_message_id, delivery_id, endpoint, headers,
                 body, contact_id, kind, payload, sent_at, outcome, flow)
             select id, d, e, h, b, c, k, p, to_timestamp(t), o, f
             from unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[], $5::bytea[],
                 $6::bigint[], $7::text[], $8::jsonb[], $9::float8[], $10::text[], $11::text[])
                 as m(id, d, e, h, b, c, k, p, t, o, f)
             on conflict (provider_message_id) do nothing
         ),
         o as (
             insert into outbox (contact_id, recipient, phone_number_id, template, body,
                 inbound_message_id, leased_by, lease_until)
             select c, r, p, t, b, m, case when l then $23 end,
                 case when l then now() + make_interval(secs => $24) end
             from unnest($12::bigint[], $13::text[], $14::text[], $15::text[], $16::jsonb[],
                 $17::text[], $25::bool[])
                 with ordinality as o(c, r, p, t, b, m, l, n)
             order by n
             returning id, recipient, leased_by
         ),
         -- The first attempt of a leased reply, recorded here, before its call, when no
         -- earlier reply to the recipient is outstanding (the sender then calls at once,
         -- without a claim statement of its own). The snapshot does not see `o`'s rows.
         a as (
             insert into outbox_attempts (outbox_id, attempt, process)
             select o.id, 1, o.leased_by from o
             where o.leased_by is not null
               and not exists (
                   select 1 from outbox e
                   where e.recipient = o.recipient and e.status in ('pending', 'sending'))
             returning outbox_id
         ),
         s as (
             insert into sessions (contact_id, awaiting_flow, awaiting_kind, context, expires_at)
             select c, f, k, x, now() + make_interval(secs => t)
             from unnest($18::bigint[], $19::text[], $20::text[], $21::jsonb[], $22::float8[]) as s(c, f, k, x, t)
             on conflict (contact_id) do update set awaiting_flow = excluded.awaiting_flow,
                 awaiting_kind = excluded.awaiting_kind, context = excluded.context,
                 expires_at = excluded.expires_at, updated_at = now()
         )
         select id, id in (select outbox_id from a) from o order by id";

/// The last statement of a batch's transaction: messages with their outcomes (a one-message
/// delivery on its message's row), replies into the outbox and sessions, in one round trip;
/// other deliveries (repeats, mostly) in one more.
pub async fn finish_batch(
    tx: &mut Transaction<'_, Postgres>,
    writes: &Writes<'_>,
    lease: Option<(&str, std::time::Duration)>,
) -> Result<Vec<(i64, bool)>, sqlx::Error> {
    use sqlx::types::Json;
    let d = &writes.deliveries;
    let m = &writes.messages;
    let o = &writes.outbox;
    let s = &writes.sessions;
    if !d.is_empty() {
        // Repeats of recorded messages, mostly: rare enough for a statement of their own,
        // which keeps the one below (run for every batch) from opening a table it rarely
        // writes.
        sqlx::query(
            "insert into deliveries (endpoint, headers, body, processed_at)
             select e, h, b, now() from unnest($1::text[], $2::jsonb[], $3::bytea[]) as d(e, h, b)",
        )
        .bind(d.iter().map(|r| r.endpoint).collect::<Vec<_>>())
        .bind(d.iter().map(|r| Json(r.headers)).collect::<Vec<_>>())
        .bind(d.iter().map(|r| r.body).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(FINISH_BATCH_SQL)
        .bind(m.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.delivery_id).collect::<Vec<_>>())
        .bind(
            m.iter()
                .map(|r| r.delivery.map(|d| d.endpoint))
                .collect::<Vec<_>>(),
        )
        .bind(
            m.iter()
                .map(|r| r.delivery.map(|d| Json(d.headers)))
                .collect::<Vec<_>>(),
        )
        .bind(
            m.iter()
                .map(|r| r.delivery.map(|d| d.body))
                .collect::<Vec<_>>(),
        )
        .bind(m.iter().map(|r| r.contact_id).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.payload.map(Json)).collect::<Vec<_>>())
        .bind(
            m.iter()
                .map(|r| r.sent_at.map(|t| t as f64))
                .collect::<Vec<_>>(),
        )
        .bind(m.iter().map(|r| r.outcome).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.flow).collect::<Vec<_>>())
        .bind(o.iter().map(|r| r.contact_id).collect::<Vec<_>>())
        .bind(o.iter().map(|r| r.recipient).collect::<Vec<_>>())
        .bind(o.iter().map(|r| r.phone_number_id).collect::<Vec<_>>())
        .bind(o.iter().map(|r| r.template).collect::<Vec<_>>())
        .bind(o.iter().map(|r| Json(r.body)).collect::<Vec<_>>())
        .bind(o.iter().map(|r| r.inbound_id).collect::<Vec<_>>())
        .bind(s.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(
            s.iter()
                .map(|r| r.1.awaiting_flow.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            s.iter()
                .map(|r| r.1.awaiting_kind.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(s.iter().map(|r| Json(&r.1.context)).collect::<Vec<_>>())
        .bind(s.iter().map(|r| r.2 as f64).collect::<Vec<_>>())
        .bind(lease.map(|(process, _)| process))
        .bind(lease.map_or(0.0, |(_, lease)| lease.as_secs_f64()))
        .bind(
            o.iter()
                .map(|r| r.leased && lease.is_some())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<bool, _>(1)?)))
        .collect()
}
