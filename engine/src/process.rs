//! A WhatsApp delivery, message by message: dedupe, route, run the flow, write replies to the
//! outbox, update the session, all in one transaction per message.
//!
//! Owns: the order of decisions for one inbound message (duplicate? stale? media we cannot
//! read? global word? awaited answer? keyword? fallback?), the per-sender lock that keeps one
//! conversation in order across engine processes, the error boundary around a flow (its work
//! rolls back; the user gets the friendly reply), and status updates. Must not know HTTP.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::config::{Config, Endpoint};
use crate::flow::Turn;
use crate::logging::mask;
use crate::render::MORE_ROW_PREFIX;
use crate::store::conversation::{self as store, Outgoing};
use crate::whatsapp::{self, Envelope};

pub use crate::config::templates::{ERROR_TEMPLATE, UNSUPPORTED_TEMPLATE};
/// Session key holding the list being paged.
const PAGER_KEY: &str = "__pager";

pub use crate::store::conversation::Delivery;

/// Processes a delivery that holds exactly one message (the usual case) in a single
/// transaction that also records it. `Ok(None)` when the delivery has more in it; the caller
/// then records it first and uses [`delivery`].
pub async fn single(
    pool: &PgPool,
    config: &Config,
    endpoint: &Endpoint,
    envelope: &Envelope,
    headers: &Value,
    body: &[u8],
    request_id: &str,
) -> Result<Option<Summary>, sqlx::Error> {
    let values: Vec<&whatsapp::Value> = envelope
        .entry
        .iter()
        .flat_map(|e| &e.changes)
        .map(|c| &c.value)
        .collect();
    let [value] = values.as_slice() else {
        return Ok(None);
    };
    let ([message], true, true) = (
        value.messages.as_slice(),
        value.statuses.is_empty(),
        value.errors.is_empty(),
    ) else {
        return Ok(None);
    };
    let record = Delivery::Record {
        endpoint: &endpoint.name,
        headers,
        body,
    };
    let handled = self::message(
        pool,
        config,
        endpoint,
        record,
        value,
        message,
        request_id,
        Replies::ToOutbox,
    )
    .await?;
    let duplicate = handled.outcome == "duplicate";
    Ok(Some(Summary {
        routed_to: handled.flow,
        messages: usize::from(!duplicate),
        duplicates: usize::from(duplicate),
        statuses: 0,
    }))
}

/// Where a message's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// To the outbox, to be sent to WhatsApp.
    ToOutbox,
    /// Only back to the caller (`easymo simulate`): nothing reaches a real phone.
    ToCallerOnly,
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
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// `answered`, `stale`, `unsupported`, `ignored`, `failed` or `duplicate`.
    pub outcome: &'static str,
    /// The flow that ran.
    pub flow: Option<String>,
    /// Replies written, with their previews.
    pub replies: Vec<crate::render::Rendered>,
}

/// Processes every message and status of a recorded delivery.
pub async fn delivery(
    pool: &PgPool,
    config: &Config,
    endpoint: &Endpoint,
    delivery_id: i64,
    envelope: &Envelope,
    request_id: &str,
) -> Result<Summary, sqlx::Error> {
    let mut summary = Summary::default();
    for entry in &envelope.entry {
        for change in &entry.changes {
            let value = &change.value;
            if !value.errors.is_empty() {
                tracing::warn!(service = %endpoint.name, event = "whatsapp.delivery_errors", request_id = %request_id, errors = %serde_json::Value::Array(value.errors.clone()), "Meta reported errors in a delivery.");
            }
            if !value.statuses.is_empty() {
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
                    summary.statuses += 1;
                }
                tx.commit().await?;
            }
            for message in &value.messages {
                let handled = self::message(
                    pool,
                    config,
                    endpoint,
                    Delivery::Recorded(delivery_id),
                    value,
                    message,
                    request_id,
                    Replies::ToOutbox,
                )
                .await?;
                if handled.outcome == "duplicate" {
                    summary.duplicates += 1;
                } else {
                    summary.messages += 1;
                }
                if summary.routed_to.is_none() {
                    summary.routed_to = handled.flow;
                }
            }
        }
    }
    Ok(summary)
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

/// Processes one message in its own transaction.
///
/// The flow runs directly in the message's transaction (no savepoint on the usual path). If it
/// fails, the transaction is rolled back whole and the message is processed once more with the
/// friendly error reply instead of the flow, so a failure leaves only that reply behind.
#[allow(clippy::too_many_arguments)]
pub async fn message(
    pool: &PgPool,
    config: &Config,
    endpoint: &Endpoint,
    delivery: Delivery<'_>,
    value: &whatsapp::Value,
    message: &whatsapp::Message,
    request_id: &str,
    replies: Replies,
) -> Result<Handled, sqlx::Error> {
    let profile = value
        .contacts
        .iter()
        .find(|c| c.wa_id.is_some() && c.wa_id == message.from)
        .or_else(|| value.contacts.first());
    let wa_id = message
        .from
        .clone()
        .or_else(|| profile.and_then(|c| c.wa_id.clone()));
    let user_id = message
        .from_user_id
        .clone()
        .or_else(|| profile.and_then(|c| c.user_id.clone()));
    let name = profile.and_then(|c| c.profile.name.clone());
    let payload = serde_json::to_value(message).unwrap_or(Value::Null);
    let sent_at: Option<i64> = message.timestamp.parse().ok();

    let Some(sender) = wa_id.clone().or_else(|| user_id.clone()) else {
        // No way to know who sent it: keep it, answer nothing.
        let mut tx = pool.begin().await?;
        let delivery_id = match delivery {
            Delivery::Recorded(id) => id,
            Delivery::Record {
                endpoint,
                headers,
                body,
            } => store::insert_processed_delivery(&mut tx, endpoint, headers, body).await?,
        };
        let fresh = store::insert_inbound(
            &mut tx,
            &message.id,
            delivery_id,
            None,
            &message.kind,
            &payload,
            sent_at,
            "ignored",
        )
        .await?;
        tx.commit().await?;
        return Ok(Handled {
            outcome: if fresh { "ignored" } else { "duplicate" },
            flow: None,
            replies: Vec::new(),
        });
    };

    // Set when the first attempt's flow failed: the second attempt only sends the error reply.
    let mut failed: Option<String> = None;
    loop {
        let mut tx = store::begin_for_sender(pool, &sender).await?;
        let started = store::begin_message(
            &mut tx,
            wa_id.as_deref(),
            user_id.as_deref(),
            name.as_deref(),
            &message.id,
            delivery,
            &message.kind,
            &payload,
            sent_at,
        )
        .await?;
        let Some((contact, session)) = started else {
            // Commit, not roll back: the repeated delivery itself stays on record.
            tx.commit().await?;
            tracing::info!(service = %endpoint.name, event = "message.duplicate", request_id = %request_id, correlation_id = %message.id, user_id = %mask(&sender), "Duplicate delivery ignored.");
            return Ok(Handled {
                outcome: "duplicate",
                flow: None,
                replies: Vec::new(),
            });
        };
        let Some(router) = &endpoint.router else {
            tx.commit().await?;
            return Ok(Handled {
                outcome: "ignored",
                flow: None,
                replies: Vec::new(),
            });
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if sent_at.is_some_and(|t| now - t > router.stale_after.as_secs() as i64) {
            store::set_inbound_outcome(&mut tx, &message.id, "stale", None).await?;
            tx.commit().await?;
            return Ok(Handled {
                outcome: "stale",
                flow: None,
                replies: Vec::new(),
            });
        }

        let mut turn = Turn {
            config,
            contact: contact.to_json(),
            language: contact.language.clone(),
            recipient: contact.recipient().unwrap_or_default().to_owned(),
            message: json!({"id": message.id, "kind": message.kind, "text": message.routing_text()}),
            session,
            replies: Vec::new(),
            trace: Vec::new(),
            pager_vars: None,
        };

        let (outcome, flow) = match input(message) {
            None if MEDIA.contains(&message.kind.as_str()) => {
                if config.templates.contains_key(UNSUPPORTED_TEMPLATE) {
                    if let Ok(reply) = turn.render("", UNSUPPORTED_TEMPLATE, &turn.implicit(), 0) {
                        turn.replies.push(reply);
                    }
                }
                ("unsupported", None)
            }
            // Reactions, system notices, `unsupported`, unknown types: recorded, not answered.
            None => ("ignored", None),
            Some((kind, input, text)) => {
                let awaiting = turn
                    .session
                    .awaiting_flow
                    .clone()
                    .filter(|_| turn.session.awaiting_kind.as_deref() == Some(kind));
                let more = input
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.strip_prefix(MORE_ROW_PREFIX))
                    .and_then(|n| n.parse::<usize>().ok());
                if let (Some(offset), Some(_), None) = (more, &awaiting, &failed) {
                    // "More" on a paged list: show the next page, keep waiting for a choice.
                    page(&mut turn, offset);
                    ("answered", awaiting)
                } else {
                    let (flow, args) = match (router.global(&text), awaiting) {
                        (Some(global), _) => (global.flow.clone(), Vec::new()),
                        (None, Some(flow)) => (flow, vec![input]),
                        (None, None) => (router.route(&text).flow().to_owned(), Vec::new()),
                    };
                    turn.session.context.remove(PAGER_KEY);
                    if let Some(error) = &failed {
                        report_failure(&mut turn, error, &flow, endpoint, request_id, &message.id);
                        ("failed", Some(flow))
                    } else {
                        match turn.run(&mut tx, &flow, args).await {
                            Ok(()) => ("answered", Some(flow)),
                            Err(error) => {
                                // Undo everything, including writes the flow made before failing.
                                tx.rollback().await?;
                                failed = Some(error.to_string());
                                continue;
                            }
                        }
                    }
                }
            }
        };
        remember_paged_list(&mut turn);
        let outgoing: Vec<Outgoing> = turn
            .replies
            .iter()
            .map(|r| Outgoing {
                template: r.template.clone(),
                body: r.body.clone(),
            })
            .collect();
        store::finish_message(
            &mut tx,
            &contact,
            &value.metadata.phone_number_id,
            &message.id,
            (replies == Replies::ToOutbox).then_some(outgoing.as_slice()),
            &turn.session,
            router.session_ttl.as_secs() as i64,
            outcome,
            flow.as_deref(),
        )
        .await?;
        tx.commit().await?;
        return Ok(Handled {
            outcome,
            flow,
            replies: turn.replies,
        });
    }
}

fn report_failure(
    turn: &mut Turn<'_>,
    error: &str,
    flow: &str,
    endpoint: &Endpoint,
    request_id: &str,
    message_id: &str,
) {
    tracing::error!(service = %endpoint.name, event = "flow.failed", request_id = %request_id, correlation_id = %message_id, flow = %flow, error = %error, "Flow failed; its changes were rolled back.");
    turn.replies.clear();
    turn.session.awaiting_flow = None;
    turn.session.awaiting_kind = None;
    if let Ok(reply) = turn.render(flow, ERROR_TEMPLATE, &turn.implicit(), 0) {
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
    let mut vars: Map<String, Value> = pager["vars"].as_object().cloned().unwrap_or_default();
    vars.extend(turn.implicit());
    if let Ok(reply) = turn.render("", &template, &vars, offset) {
        turn.pager_vars = pager["vars"].as_object().cloned();
        turn.replies.push(reply);
    }
}
