//! WhatsApp messages in batches: dedupe, route, run the flow, write replies to the outbox and
//! update the session, with each message's writes all-or-nothing.
//!
//! Owns: the order of decisions for one inbound message (duplicate? stale? media we cannot
//! read? global word? awaited answer? keyword? fallback?), the per-sender locks that keep one
//! conversation in order across engine processes, the error boundary around a flow (its work
//! rolls back; the user gets the friendly reply), and status updates. Must not know HTTP.
//!
//! Messages that arrive together share one transaction (a group commit): one statement reads
//! and locks what they need, their flows run in turn, one statement writes every delivery,
//! message, reply and session, one commit makes them durable. A message never commits apart
//! from its dedupe record, session and replies. A flow takes a savepoint before its first
//! database statement (a flow that only reads cached menus takes none); when it fails, the
//! runtime rolls back to it, so the flow's own writes are undone, its neighbours' stay, every
//! sender's lock stays held, and the message is answered with the error reply.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::{Config, Endpoint};
use crate::flow::{FlowError, Savepoint, Turn};
use crate::logging::mask;
use crate::outbound::{self, Handoff};
use crate::reload::Caches;
use crate::render::{Rendered, MORE_ROW_PREFIX};
use crate::router::Router;
use crate::store::conversation::{
    self as store, Arrival, Contact, MessageRow, Session, Started, Writes,
};
use crate::whatsapp::{self, Envelope};

pub use crate::config::templates::{
    CONVERSATION_CHANGED_TEMPLATE, ERROR_TEMPLATE, UNSUPPORTED_TEMPLATE,
};
/// Session key holding the list being paged.
const PAGER_KEY: &str = "__pager";

pub use crate::store::conversation::Delivery;

/// Where a message's replies go.
#[derive(Debug, Clone, Copy)]
pub enum Replies<'a> {
    /// To the outbox, to be sent to WhatsApp; once committed, rows this process sends are
    /// handed to its sender in memory.
    ToOutbox(&'a Handoff),
    /// Only back to the caller (`easymo simulate`): nothing reaches a real phone.
    ToCallerOnly,
}

impl Replies<'_> {
    fn to_outbox(self) -> bool {
        matches!(self, Replies::ToOutbox(_))
    }
}

/// What processing a delivery did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// The flow the first message started, if any.
    pub routed_to: Option<String>,
    /// Messages processed for the first time.
    pub messages: usize,
    /// Messages seen before.
    pub duplicates: usize,
    /// Status updates recorded.
    pub statuses: usize,
    /// Requests to pay its flows recorded, to be sent now that they are committed.
    pub payments_requested: usize,
    /// Each message's outcome and flow, in order, for the metrics.
    pub outcomes: Vec<(MessageOutcome, Option<String>, Vec<String>)>,
    /// Why parts of it were left unprocessed for good (poison messages, unstorable statuses).
    pub poisoned: Vec<String>,
}

impl Summary {
    /// The poison reasons together, if any part was poison.
    pub fn poison(&self) -> Option<String> {
        (!self.poisoned.is_empty()).then(|| self.poisoned.join("; "))
    }
}

/// What became of one inbound message, as `inbound_messages.outcome` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Its flow ran and replied (or chose not to).
    Answered,
    /// Older than the router's `stale_after`: recorded, not answered.
    Stale,
    /// Media the engine cannot read yet: answered politely.
    Unsupported,
    /// Nothing to route (a reaction, an unknown type, no sender): recorded, not answered.
    Ignored,
    /// Its flow failed: its writes rolled back, the error reply sent.
    Failed,
    /// Seen before: no second effect.
    Duplicate,
}

impl MessageOutcome {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Answered => "answered",
            MessageOutcome::Stale => "stale",
            MessageOutcome::Unsupported => "unsupported",
            MessageOutcome::Ignored => "ignored",
            MessageOutcome::Failed => "failed",
            MessageOutcome::Duplicate => "duplicate",
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// What it got.
    pub outcome: MessageOutcome,
    /// The flow that ran.
    pub flow: Option<String>,
    /// Replies written, with their previews.
    pub replies: Vec<Rendered>,
    /// Requests to pay its flow recorded, to be sent now that they are committed.
    pub payments_requested: usize,
    /// Why its flow failed, when it did (the person got the apology; tools show this).
    pub failure: Option<String>,
    /// The last payment its flows requested (or, in `easymo simulate`, described).
    pub payment: Option<Value>,
    /// How it reached its flow: the route that matched, an awaited answer, the fallback.
    pub route: Option<String>,
}

impl Handled {
    /// Nothing happened (no sender, nothing to route).
    fn ignored() -> Handled {
        Handled {
            outcome: MessageOutcome::Ignored,
            flow: None,
            replies: Vec::new(),
            payments_requested: 0,
            failure: None,
            payment: None,
            route: None,
        }
    }
}

/// One inbound message to process, with the delivery it came in.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The config it is processed with.
    pub config: &'a Config,
    /// The caches kept with that config.
    pub caches: &'a Caches,
    /// The endpoint it came to.
    pub endpoint: &'a Endpoint,
    /// Its delivery.
    pub delivery: Delivery<'a>,
    /// The `value` of the change it is in (metadata and sender profiles).
    pub value: &'a whatsapp::Value,
    /// The message.
    pub message: &'a whatsapp::Message,
    /// The message's JSON as sent, to keep when its delivery holds more than this message.
    pub payload: Option<&'a Value>,
    /// For logs.
    pub request_id: &'a str,
    /// Where replies go.
    pub replies: Replies<'a>,
}

/// Who sent a message, and what is kept of it.
struct Identity {
    wa_id: Option<String>,
    user_id: Option<String>,
    name: Option<String>,
    /// Kept only when the delivery holds more than this message.
    payload: Option<Value>,
    sent_at: Option<i64>,
}

impl Identity {
    fn of(item: &Inbound<'_>) -> Self {
        let (value, message) = (item.value, item.message);
        let profile = value
            .contacts
            .iter()
            .find(|c| c.wa_id.is_some() && c.wa_id == message.from)
            .or_else(|| value.contacts.first());
        Identity {
            wa_id: message
                .from
                .clone()
                .or_else(|| profile.and_then(|c| c.wa_id.clone())),
            user_id: message
                .from_user_id
                .clone()
                .or_else(|| profile.and_then(|c| c.user_id.clone())),
            name: profile.and_then(|c| c.profile.name.clone()),
            payload: item.payload.cloned(),
            sent_at: message.timestamp.parse().ok(),
        }
    }

    /// The locks the message takes: its phone number and its business-scoped id, when known.
    /// Both, because one person may write once with only one of them and once with both.
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.wa_id
            .as_deref()
            .into_iter()
            .chain(self.user_id.as_deref())
    }
}

/// Processes one message (a batch of one).
pub async fn message(pool: &PgPool, item: Inbound<'_>) -> Result<Handled, sqlx::Error> {
    let mut handled = batch_on(&mut Db::Pool(pool), &[item]).await?;
    Ok(handled.pop().unwrap_or_else(Handled::ignored))
}

/// Processes one message inside a transaction the caller holds (a savepoint of it), so the
/// caller decides whether anything it wrote is kept: `easymo simulate` rolls back.
pub async fn message_within(
    conn: &mut sqlx::PgConnection,
    item: Inbound<'_>,
) -> Result<Handled, sqlx::Error> {
    let mut handled = batch_on(&mut Db::Within(conn), &[item]).await?;
    Ok(handled.pop().unwrap_or_else(Handled::ignored))
}

/// Processes messages together, returning what happened to each, in order. Messages of one
/// sender are taken in order, one per transaction, so each sees the session the one before it
/// left; different senders share transactions.
pub async fn batch(pool: &PgPool, items: &[Inbound<'_>]) -> Result<Vec<Handled>, sqlx::Error> {
    batch_on(&mut Db::Pool(pool), items).await
}

/// Where a round's transaction comes from.
enum Db<'a> {
    /// A transaction of its own from the pool, committed at the end of the round.
    Pool(&'a PgPool),
    /// A savepoint of a transaction the caller holds, released at the end of the round.
    Within(&'a mut sqlx::PgConnection),
}

async fn batch_on(db: &mut Db<'_>, items: &[Inbound<'_>]) -> Result<Vec<Handled>, sqlx::Error> {
    let identities: Vec<Identity> = items.iter().map(Identity::of).collect();
    let mut results: Vec<Option<Handled>> = vec![None; items.len()];
    let mut remaining: Vec<usize> = (0..items.len()).collect();
    while !remaining.is_empty() {
        let mut taken = HashSet::new();
        let (mut round, mut later) = (Vec::new(), Vec::new());
        for i in remaining {
            let keys: Vec<&str> = identities[i].keys().collect();
            if keys.iter().any(|k| taken.contains(k)) {
                later.push(i);
            } else {
                taken.extend(keys);
                round.push(i);
            }
        }
        let handled = run_round(db, items, &identities, &round).await?;
        for (i, handled) in round.into_iter().zip(handled) {
            results[i] = Some(handled);
        }
        remaining = std::mem::take(&mut later);
    }
    Ok(results.into_iter().flatten().collect())
}

/// What one message's turn decided, before it is written.
struct Done {
    handled: Handled,
    contact: Option<Contact>,
    /// The session to store (none when the message did not reach routing).
    session: Option<Session>,
    session_ttl: i64,
    /// The deliveries row it came in, when there is one.
    delivery_id: Option<i64>,
    seen: bool,
}

/// One transaction for messages of distinct senders.
async fn run_round(
    db: &mut Db<'_>,
    items: &[Inbound<'_>],
    identities: &[Identity],
    round: &[usize],
) -> Result<Vec<Handled>, sqlx::Error> {
    // Set for a message whose flow failed: the next attempt only sends it the error reply.
    let mut failed: Vec<Option<String>> = vec![None; round.len()];
    'attempt: loop {
        let senders: Vec<&str> = round.iter().flat_map(|&i| identities[i].keys()).collect();
        let mut tx = match db {
            Db::Pool(pool) => store::begin_for_senders(pool, &senders).await?,
            Db::Within(conn) => store::begin_within(conn, &senders).await?,
        };
        let arrivals: Vec<Arrival<'_>> = round
            .iter()
            .map(|&i| Arrival {
                wa_id: identities[i].wa_id.as_deref(),
                user_id: identities[i].user_id.as_deref(),
                name: identities[i].name.as_deref(),
                provider_message_id: &items[i].message.id,
                first_language: first_language(&items[i]),
            })
            .collect();
        let started = store::begin_batch(&mut tx, &arrivals).await?;
        let mut done = Vec::with_capacity(round.len());
        let mut took = Vec::with_capacity(round.len());
        for (k, (&i, started)) in round.iter().zip(started).enumerate() {
            let mut retries = 0;
            let began = std::time::Instant::now();
            let d = loop {
                let mut savepoint = Savepoint::numbered(k);
                let error = match turn(
                    &mut tx,
                    &items[i],
                    identities[i].sent_at,
                    started.clone(),
                    failed[k].as_deref(),
                    &mut savepoint,
                )
                .await
                {
                    Ok(d) => break d,
                    Err(error) => error,
                };
                // Undo this message's writes only: its neighbours keep theirs, and every
                // sender's lock stays held.
                let undone = match (&savepoint.name, savepoint.taken) {
                    (Some(name), true) => crate::store::rollback_to_savepoint(&mut tx, name)
                        .await
                        .is_ok(),
                    // Nothing reached the database, so nothing is to undo.
                    _ => !matches!(error, FlowError::Query { .. }),
                };
                if !undone {
                    // The transaction cannot be saved: redo the batch with this message failed.
                    tx.rollback().await?;
                    failed[k] = Some(error.to_string());
                    continue 'attempt;
                }
                // A deadlock or a cancelled statement is bad luck, not the flow's fault: the
                // message is tried again, a few times.
                if is_transient(&error) && retries < MAX_TRANSIENT_RETRIES {
                    retries += 1;
                    continue;
                }
                failed[k] = Some(error.to_string());
            };
            done.push(d);
            took.push(began.elapsed());
        }

        let writes = writes_of(items, identities, round, &done);
        let handoff = round.first().and_then(|&i| match items[i].replies {
            Replies::ToOutbox(handoff) => Some(handoff),
            Replies::ToCallerOnly => None,
        });
        let lease = handoff.and_then(Handoff::lease);
        let ids = store::finish_batch(&mut tx, &writes, lease).await?;
        tx.commit().await?;
        if let Some(handoff) = handoff {
            hand_over(handoff, &writes, &ids);
        }
        if crate::tap::listening() {
            for ((&i, d), took) in round.iter().zip(&done).zip(&took) {
                crate::tap::publish(tapped(&items[i], d, *took));
            }
        }
        return Ok(done.into_iter().map(|d| d.handled).collect());
    }
}

/// The rows one round writes: messages with their outcomes, replies, sessions, and the
/// deliveries that arrived again.
fn writes_of<'a>(
    items: &'a [Inbound<'_>],
    identities: &'a [Identity],
    round: &[usize],
    done: &'a [Done],
) -> Writes<'a> {
    let mut writes = Writes::default();
    for (&i, d) in round.iter().zip(done) {
        let item = &items[i];
        let raw = match item.delivery {
            Delivery::Record(raw) => Some(raw),
            Delivery::Recorded(_) => None,
        };
        if d.seen {
            // The repeated delivery stays on record; the message has no second effect.
            if let Some(raw) = raw {
                writes.delivery(raw);
            }
            continue;
        }
        writes.message(MessageRow {
            id: &item.message.id,
            delivery_id: d.delivery_id,
            delivery: raw,
            contact_id: d.contact.as_ref().map(|c| c.id),
            kind: &item.message.kind,
            payload: identities[i].payload.as_ref(),
            sent_at: identities[i].sent_at,
            outcome: d.handled.outcome.as_str(),
            flow: d.handled.flow.as_deref(),
        });
        let Some(contact) = &d.contact else {
            continue;
        };
        if let Replies::ToOutbox(handoff) = item.replies {
            let number = &item.value.metadata.phone_number_id;
            // Leased to this process only when its sender will send them: otherwise any
            // process's sweeper may take them at once.
            let leased = handoff.lease().is_some() && item.config.sending_for(number).is_some();
            for reply in &d.handled.replies {
                writes.reply(
                    contact,
                    number,
                    &item.message.id,
                    &reply.template,
                    &reply.body,
                    leased,
                );
            }
        }
        if let Some(session) = &d.session {
            writes.session(contact.id, session, d.session_ttl);
        }
    }
    writes
}

/// Hands the replies a committed round leased to this process to its sender.
fn hand_over(handoff: &Handoff, writes: &Writes<'_>, ids: &[(i64, bool)]) {
    let now = std::time::Instant::now();
    let rows = writes
        .leased_replies(ids)
        .map(
            |(id, recorded, recipient, phone_number_id, body)| outbound::Queued {
                id,
                recipient: recipient.to_owned(),
                phone_number_id: phone_number_id.to_owned(),
                body: serde_json::to_vec(body).unwrap_or_default().into(),
                queued_at: now,
                attempts: 0,
                first_attempt_recorded: recorded,
            },
        )
        .collect();
    handoff.hand(rows);
}

/// Processes every message and status of a recorded delivery (`body`, parsed as `envelope`).
pub async fn delivery(
    pool: &PgPool,
    (config, caches): (&Config, &Caches),
    endpoint: &Endpoint,
    (delivery_id, body): (i64, &[u8]),
    envelope: &Envelope,
    request_id: &str,
    handoff: &Handoff,
) -> Result<Summary, sqlx::Error> {
    let mut summary = Summary::default();
    let payloads = whatsapp::message_json(body);
    let may_hold_nul = whatsapp::may_hold_nul(body);
    let mut items = Vec::new();
    for entry in &envelope.entry {
        for change in &entry.changes {
            let value = &change.value;
            if !value.errors.is_empty() {
                tracing::warn!(service = %endpoint.name, event = "whatsapp.delivery_errors", request_id = %request_id, errors = %serde_json::Value::Array(value.errors.clone()), "Meta reported errors in a delivery.");
            }
            if !value.statuses.is_empty() {
                match statuses(pool, value).await {
                    Ok(n) => summary.statuses += n,
                    // A status Postgres cannot store must not cost the messages beside it.
                    Err(error) if crate::store::is_data_error(&error) => {
                        summary.poisoned.push(format!("statuses: {error}"));
                    }
                    Err(error) => return Err(error),
                }
            }
            let (poisoned, sound): (Vec<_>, Vec<_>) = value
                .messages
                .iter()
                .map(|message| (message, message.poison(value, may_hold_nul)))
                .partition(|(_, poison)| poison.is_some());
            summary
                .poisoned
                .extend(poisoned.into_iter().filter_map(|(_, poison)| poison));
            items.extend(sound.into_iter().map(|(message, _)| Inbound {
                config,
                caches,
                endpoint,
                delivery: Delivery::Recorded(delivery_id),
                value,
                message,
                payload: payloads.get(&message.id),
                request_id,
                replies: Replies::ToOutbox(handoff),
            }));
        }
    }
    for handled in batch(pool, &items).await? {
        summary.payments_requested += handled.payments_requested;
        if handled.outcome == MessageOutcome::Duplicate {
            summary.duplicates += 1;
        } else {
            summary.messages += 1;
        }
        if summary.routed_to.is_none() {
            summary.routed_to = handled.flow.clone();
        }
        let templates = handled.replies.iter().map(|r| r.template.clone()).collect();
        summary
            .outcomes
            .push((handled.outcome, handled.flow, templates));
    }
    Ok(summary)
}

/// Records a change's statuses in one transaction; returns how many.
async fn statuses(pool: &PgPool, value: &whatsapp::Value) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for status in &value.statuses {
        let id = status.get("id").and_then(Value::as_str).unwrap_or_default();
        let state = status
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let recipient = status
            .get("recipient_id")
            .or_else(|| status.get("recipient_user_id"))
            .and_then(Value::as_str);
        let at = status
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok());
        store::record_status(&mut tx, id, state, recipient, at, status).await?;
    }
    tx.commit().await?;
    Ok(value.statuses.len())
}

/// The input an awaiting flow receives, and the text keyword routing reads.
fn input(message: &whatsapp::Message) -> Option<(&'static str, Value, String)> {
    if let Some(text) = &message.text {
        return Some(("text", json!({"text": text.body}), text.body.clone()));
    }
    if let Some(interactive) = &message.interactive {
        let reply = interactive
            .button_reply
            .as_ref()
            .or(interactive.list_reply.as_ref())?;
        return Some((
            "choice",
            json!({"id": reply.id, "title": reply.title, "description": reply.description}),
            reply.title.clone(),
        ));
    }
    if let Some(button) = &message.button {
        return Some((
            "choice",
            json!({"id": button.payload, "title": button.text}),
            button.text.clone(),
        ));
    }
    if let Some(location) = &message.location {
        return Some((
            "location",
            json!({"latitude": location.latitude, "longitude": location.longitude, "name": location.name, "address": location.address}),
            String::new(),
        ));
    }
    None
}

/// Media types the engine records and answers politely, but cannot read yet.
const MEDIA: &[&str] = &["image", "audio", "voice", "video", "document", "sticker"];

/// Decides what one message gets, running its flow in the batch's transaction. An error means
/// the flow failed; the caller rolls back and redoes the batch with `failed` set for it.
async fn turn(
    tx: &mut Transaction<'_, Postgres>,
    item: &Inbound<'_>,
    sent_at: Option<i64>,
    started: Started,
    failed: Option<&str>,
    savepoint: &mut Savepoint,
) -> Result<Done, FlowError> {
    let (config, endpoint, message) = (item.config, item.endpoint, item.message);
    let delivery_id = match item.delivery {
        Delivery::Recorded(id) => Some(id),
        Delivery::Record(_) => None,
    };
    let mut done = Done {
        handled: Handled::ignored(),
        contact: started.contact,
        session: None,
        session_ttl: 0,
        delivery_id,
        seen: started.seen,
    };
    if started.seen {
        // The repeated delivery itself stays on record; the message has no second effect.
        done.handled.outcome = MessageOutcome::Duplicate;
        let sender = done
            .contact
            .as_ref()
            .and_then(Contact::recipient)
            .unwrap_or_default();
        tracing::info!(service = %endpoint.name, event = "message.duplicate", request_id = %item.request_id, correlation_id = %crate::logging::message_ref(&message.id), user_id = %mask(sender), "Duplicate delivery ignored.");
        return Ok(done);
    }
    // No way to know who sent it, or nowhere to route it: kept, not answered.
    let (Some(contact), Some(router)) = (&done.contact, &endpoint.router) else {
        return Ok(done);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if sent_at.is_some_and(|t| now - t > router.stale_after.as_secs() as i64) {
        done.handled.outcome = MessageOutcome::Stale;
        return Ok(done);
    }

    let mut turn = Turn {
        config,
        caches: item.caches,
        contact: contact.to_json(),
        language: contact.language.clone(),
        standing: Some(standing_of(contact)),
        recipient: contact.recipient().unwrap_or_default().to_owned(),
        message: json!({"id": message.id, "kind": message.kind, "text": message.routing_text()}),
        session: started.session,
        replies: Vec::new(),
        trace: Vec::new(),
        pager_vars: None,
        business_number: item.value.metadata.phone_number_id.clone(),
        effects: item.replies.to_outbox(),
        payments_requested: 0,
        last_payment: None,
        savepoint: std::mem::take(savepoint),
    };
    let (outcome, flow, route) = match input(message) {
        None if MEDIA.contains(&message.kind.as_str()) => {
            if config.templates.contains_key(UNSUPPORTED_TEMPLATE) {
                if let Ok(reply) = turn.render("", UNSUPPORTED_TEMPLATE, &Map::new(), 0) {
                    turn.replies.push(reply);
                }
            }
            (MessageOutcome::Unsupported, None, None)
        }
        // Reactions, system notices, `unsupported`, unknown types: recorded, not answered.
        None => (MessageOutcome::Ignored, None, None),
        Some((kind, input, text)) => {
            let asked = Asked { kind, input, text };
            answer(&mut turn, tx, item, router, asked, failed, savepoint).await?
        }
    };
    remember_paged_list(&mut turn);
    done.handled = Handled {
        outcome,
        flow,
        replies: turn.replies,
        payments_requested: turn.payments_requested,
        failure: failed.map(str::to_owned),
        payment: turn.last_payment,
        route,
    };
    done.session = Some(turn.session);
    done.session_ttl = router.session_ttl.as_secs() as i64;
    Ok(done)
}

/// What the live tap shows of a processed message (see [`crate::tap`]).
fn tapped(item: &Inbound<'_>, done: &Done, took: std::time::Duration) -> crate::tap::Event {
    let text = item
        .message
        .routing_text()
        .map(crate::router::normalize)
        .unwrap_or_default();
    crate::tap::Event {
        at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        endpoint: item.endpoint.name.clone(),
        sender: item.message.sender().map(mask).unwrap_or_default(),
        text: crate::logging::scrub(&text).into_owned(),
        route: done.handled.route.clone(),
        flow: done.handled.flow.clone(),
        replies: done
            .handled
            .replies
            .iter()
            .map(|r| r.template.clone())
            .collect(),
        outcome: done.handled.outcome.as_str().to_owned(),
        duration_ms: took.as_secs_f64() * 1000.0,
    }
}

/// The contact's row and how their language stands.
fn standing_of(contact: &Contact) -> (i64, crate::language::Standing) {
    let standing = crate::language::Standing {
        language: contact.language.clone(),
        source: crate::language::Source::parse(&contact.language_source),
        hint: contact.language_hint.clone(),
    };
    (contact.id, standing)
}

/// The language a contact whose first message this is starts with: the language of the keyword
/// it starts a conversation with, else the endpoint's default (see `crate::language`).
fn first_language<'a>(item: &Inbound<'a>) -> (&'a str, &'static str) {
    let Some(router) = &item.endpoint.router else {
        return ("en", "default");
    };
    let keyword = input(item.message).and_then(|(_, _, text)| {
        router
            .global(&text)
            .or_else(|| match router.route(&text) {
                crate::router::Decision::Keyword(route) => Some(route),
                crate::router::Decision::Fallback(_) => None,
            })
            .and_then(|route| route.language.as_deref())
    });
    match keyword {
        Some(language) => (language, "inferred"),
        None => (router.default_language.as_str(), "default"),
    }
}

/// What a message asks of its flows: its kind, the input a waiting flow receives, the text
/// routing reads.
struct Asked {
    kind: &'static str,
    input: Value,
    text: String,
}

/// Routes a message that carries input (a global keyword, the flow waiting for it, or the
/// router's match) and runs that flow; after a failed attempt, only reports the failure.
async fn answer(
    turn: &mut Turn<'_>,
    tx: &mut Transaction<'_, Postgres>,
    item: &Inbound<'_>,
    router: &Router,
    asked: Asked,
    failed: Option<&str>,
    savepoint: &mut Savepoint,
) -> Result<(MessageOutcome, Option<String>, Option<String>), FlowError> {
    let mut awaiting = turn
        .session
        .awaiting_flow
        .clone()
        .filter(|_| turn.session.awaiting_kind.as_deref() == Some(asked.kind));
    // A reload removed or renamed the flow this conversation waits in: the answer goes to the
    // fallback flow, with a word of explanation, never to "something went wrong".
    let stranded = awaiting
        .take_if(|flow| turn.config.flows.awaitable(flow).is_none())
        .filter(|_| router.global(&asked.text).is_none());
    let more = asked
        .input
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.strip_prefix(MORE_ROW_PREFIX))
        .and_then(|n| n.parse::<usize>().ok());
    if let (Some(offset), Some(_), None) = (more, &awaiting, failed) {
        // "More" on a paged list: show the next page, keep waiting for a choice.
        page(turn, offset);
        Ok((
            MessageOutcome::Answered,
            awaiting,
            Some("\"More\" on a paged list".to_owned()),
        ))
    } else {
        let Chosen {
            flow,
            args,
            language,
            route,
        } = choose(router, asked, awaiting, stranded.is_some());
        // The words that start a conversation say which language to answer in, unless the
        // contact chose one (see `crate::language`).
        let next = turn.standing.as_ref().and_then(|(_, now)| {
            crate::language::decide(now, language.as_deref(), &router.default_language)
        });
        if let (Some(next), None) = (next, failed) {
            turn.settle_language(tx, next)
                .await
                .map_err(|source| FlowError::Query {
                    flow: flow.clone(),
                    source,
                })?;
        }
        turn.session.context.remove(PAGER_KEY);
        if let Some(error) = failed {
            report_failure(
                turn,
                error,
                &flow,
                item.endpoint,
                item.request_id,
                &item.message.id,
            );
            Ok((MessageOutcome::Failed, Some(flow), Some(route)))
        } else {
            if let Some(gone) = &stranded {
                explain_stranded(turn, item, gone, &flow);
            }
            let ran = turn.run(tx, &flow, args).await;
            *savepoint = std::mem::take(&mut turn.savepoint);
            ran?;
            Ok((MessageOutcome::Answered, Some(flow), Some(route)))
        }
    }
}

/// The flow a message goes to, what it is given, the language its words speak, and how it was
/// chosen (for the tap and the log).
struct Chosen {
    flow: String,
    args: Vec<Value>,
    language: Option<String>,
    route: String,
}

/// A global word first, then the flow awaiting this kind of answer, then (when the awaited flow
/// is gone) the fallback, then keyword routing.
fn choose(router: &Router, asked: Asked, awaiting: Option<String>, stranded: bool) -> Chosen {
    let (flow, args, language, route) = match (router.global(&asked.text), awaiting) {
        (Some(global), _) => (
            global.flow.clone(),
            Vec::new(),
            global.language.clone(),
            global.describe(),
        ),
        (None, Some(flow)) => (
            flow,
            vec![asked.input],
            None,
            format!("awaited {}", asked.kind),
        ),
        (None, None) if stranded => (
            router.fallback.clone(),
            Vec::new(),
            None,
            "fallback (the awaited flow is gone)".to_owned(),
        ),
        (None, None) => {
            let decision = router.route(&asked.text);
            let route = match &decision {
                crate::router::Decision::Keyword(keyword) => keyword.describe(),
                crate::router::Decision::Fallback(_) => "fallback".to_owned(),
            };
            (
                decision.flow().to_owned(),
                Vec::new(),
                decision.language(),
                route,
            )
        }
    };
    Chosen {
        flow,
        args,
        language,
        route,
    }
}

/// Says, in the log and to the person, that the flow their answer was awaited by is gone.
fn explain_stranded(turn: &mut Turn<'_>, item: &Inbound<'_>, gone: &str, fallback: &str) {
    tracing::warn!(service = %item.endpoint.name, event = "session.awaited_flow_gone", request_id = %item.request_id, correlation_id = %crate::logging::message_ref(&item.message.id), awaited_flow = %gone, flow = %fallback, "The flow this conversation awaited is not in the config (a reload removed or renamed it); the fallback flow answers.");
    if turn
        .config
        .templates
        .contains_key(CONVERSATION_CHANGED_TEMPLATE)
    {
        if let Ok(reply) = turn.render(fallback, CONVERSATION_CHANGED_TEMPLATE, &Map::new(), 0) {
            turn.replies.push(reply);
        }
    }
}

/// Times a message is redone after a deadlock, a serialization failure or a cancelled statement.
const MAX_TRANSIENT_RETRIES: usize = 3;

/// Deadlock, serialization failure, lock not available, query cancelled: worth a second try.
fn is_transient(error: &FlowError) -> bool {
    let FlowError::Query {
        source: sqlx::Error::Database(database),
        ..
    } = error
    else {
        return false;
    };
    matches!(
        database.code().as_deref(),
        Some("40P01" | "40001" | "55P03" | "57014")
    )
}

fn report_failure(
    turn: &mut Turn<'_>,
    error: &str,
    flow: &str,
    endpoint: &Endpoint,
    request_id: &str,
    message_id: &str,
) {
    tracing::error!(service = %endpoint.name, event = "flow.failed", request_id = %request_id, correlation_id = %crate::logging::message_ref(message_id), flow = %flow, error = %error, "Flow failed; its changes were rolled back.");
    turn.replies.clear();
    turn.session.awaiting_flow = None;
    turn.session.awaiting_kind = None;
    if let Ok(reply) = turn.render(flow, ERROR_TEMPLATE, &Map::new(), 0) {
        turn.replies.push(reply);
    }
}

/// When the last reply is a list with a "More" row, keeps what is needed to render its next
/// page in the session.
fn remember_paged_list(turn: &mut Turn<'_>) {
    let Some(last) = turn.replies.last() else {
        return;
    };
    let paged = last.body["interactive"]["action"]["sections"]
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["rows"].as_array())
        .and_then(|rows| rows.last())
        .and_then(|row| row["id"].as_str())
        .is_some_and(|id| id.starts_with(MORE_ROW_PREFIX));
    if paged {
        let pager =
            json!({"template": last.template, "vars": turn.pager_vars.clone().unwrap_or_default()});
        turn.session.context.insert(PAGER_KEY.into(), pager);
    }
}

fn page(turn: &mut Turn<'_>, offset: usize) {
    let Some(pager) = turn.session.context.get(PAGER_KEY).cloned() else {
        return;
    };
    let template = pager["template"].as_str().unwrap_or_default().to_owned();
    let vars: Map<String, Value> = pager["vars"].as_object().cloned().unwrap_or_default();
    if let Ok(reply) = turn.render("", &template, &vars, offset) {
        turn.pager_vars = pager["vars"].as_object().cloned();
        turn.replies.push(reply);
    }
}
