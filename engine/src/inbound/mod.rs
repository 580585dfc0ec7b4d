//! The lifecycle of an inbound WhatsApp delivery (what Meta calls one webhook POST): recorded,
//! processed, answered, and never lost on the way.
//!
//! Comes in: a signed, rate-limited, parsed [`Envelope`] with its raw body, from the gateway;
//! in [`redelivery`], the deliveries recorded but not processed. Goes out: the flow its first
//! message was routed to (or none) and whether any of it is poison, after everything it decided
//! is committed, or an error when it could not even be recorded (the gateway answers 503 or 500
//! and Meta retries).
//!
//! Tables: `deliveries` (recorded, processed, the error that stopped one), and through
//! [`process`] the messages, contacts, sessions and outbox rows each message writes.
//!
//! Owns: the choice between the usual path (a delivery holding exactly one message joins a
//! group commit, [`batcher`], and is recorded in the transaction that processes it) and the
//! other (several messages or statuses: recorded first, then processed message by message);
//! the fallback when a batch fails (recorded on its own, answered 200 so Meta does not retry,
//! processed again by [`redelivery`]); and poison (a message that can never be processed is
//! kept, marked, and does not hold up its neighbours). Must not know HTTP: the gateway maps
//! what [`accept`] returns to a response.

pub mod batcher;
pub mod limited;
pub mod process;
pub mod redelivery;

use std::sync::Arc;

use axum::body::Bytes;
use serde_json::Value;
use sqlx::PgPool;

use crate::reload::Snapshot;
use crate::store::deliveries as store;
use crate::whatsapp::{self, Envelope};

/// A delivery that holds exactly one message and nothing else (the usual case), checked once:
/// such a delivery is recorded in the transaction that processes its message.
#[derive(Debug)]
pub struct Single {
    envelope: Envelope,
    /// Where the message is: entry, change.
    at: (usize, usize),
}

impl Single {
    /// The delivery as a single message, or the envelope back when it holds anything else.
    pub fn new(envelope: Envelope) -> Result<Self, Envelope> {
        let mut places = envelope.entry.iter().enumerate().flat_map(|(e, entry)| {
            entry
                .changes
                .iter()
                .enumerate()
                .map(move |(c, change)| ((e, c), &change.value))
        });
        let only = match (places.next(), places.next()) {
            (Some((at, value)), None)
                if value.messages.len() == 1
                    && value.statuses.is_empty()
                    && value.errors.is_empty() =>
            {
                Some(at)
            }
            _ => None,
        };
        match only {
            Some(at) => Ok(Single { envelope, at }),
            None => Err(envelope),
        }
    }

    /// The change's `value` (metadata, profiles) and its one message.
    pub fn parts(&self) -> Option<(&whatsapp::Value, &whatsapp::Message)> {
        let (e, c) = self.at;
        let value = &self.envelope.entry.get(e)?.changes.get(c)?.value;
        Some((value, value.messages.first()?))
    }

    /// Who sent the message, when known.
    pub fn sender(&self) -> Option<&str> {
        self.parts().and_then(|(_, m)| m.sender())
    }
}

/// One delivery as the gateway hands it over: verified, within its limits, parsed.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The config the request started with.
    pub snapshot: &'a Arc<Snapshot>,
    /// Index of the endpoint in `snapshot.config.endpoints`.
    pub endpoint: usize,
    /// The parsed body.
    pub envelope: Envelope,
    /// The request headers kept with the record.
    pub headers: Value,
    /// The raw body, as signed.
    pub body: Bytes,
    /// For logs.
    pub request_id: &'a str,
}

/// Why a delivery was not accepted: it could not be recorded, so it is not safe to answer 200.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The endpoint index does not exist in the snapshot (a bug in the caller).
    #[error("endpoint {0} is not in the configuration")]
    UnknownEndpoint(usize),
    /// The database refused the record.
    #[error("the delivery could not be recorded: {0}")]
    NotRecorded(#[from] sqlx::Error),
}

/// What became of an accepted delivery: it is recorded either way, so Meta must not send it
/// again.
#[derive(Debug, Default)]
pub struct Accepted {
    /// The flow its first message was routed to, if one ran.
    pub routed_to: Option<String>,
    /// Why it (or one of its messages) can never be processed; kept for operators.
    pub poison: Option<String>,
}

/// Makes a delivery durable and processes it. When processing fails after the delivery was
/// recorded, it is still accepted ([`redelivery`] processes it again, in this process or
/// another). An error means nothing was recorded.
pub async fn accept(
    pool: &PgPool,
    batcher: &batcher::Batcher,
    delivery: Delivery<'_>,
) -> Result<Accepted, AcceptError> {
    let Delivery {
        snapshot,
        endpoint: index,
        envelope,
        headers,
        body,
        request_id,
    } = delivery;
    let endpoint = snapshot
        .config
        .endpoints
        .get(index)
        .ok_or(AcceptError::UnknownEndpoint(index))?;
    let may_hold_nul = whatsapp::may_hold_nul(&body);
    let envelope = match Single::new(envelope) {
        Ok(single) => {
            if let Some(reason) = single
                .parts()
                .and_then(|(value, message)| message.poison(value, may_hold_nul))
            {
                store::record_poison(pool, &endpoint.name, &headers, &body, &reason).await?;
                tracing::warn!(service = %endpoint.name, event = "delivery.poison", request_id = %request_id, reason = %reason, "Delivery kept as poison: it can never be processed.");
                return Ok(Accepted {
                    routed_to: None,
                    poison: Some(reason),
                });
            }
            let job = batcher::Job {
                snapshot: Arc::clone(snapshot),
                endpoint: index,
                single,
                headers,
                body,
                request_id: request_id.to_owned(),
            };
            return single_message(pool, batcher, endpoint, job).await;
        }
        Err(envelope) => envelope,
    };
    // Several messages or statuses: durable before anything else, then processed.
    let delivery_id = store::insert_delivery(pool, &endpoint.name, &headers, &body).await?;
    let caches = (&snapshot.config, &snapshot.caches);
    let processed = process::delivery(
        pool,
        caches,
        endpoint,
        (delivery_id, &body),
        &envelope,
        request_id,
        batcher.handoff(),
    )
    .await;
    let summary = match processed {
        Ok(summary) => summary,
        Err(error) => {
            batcher.count(&endpoint.name, process::MessageOutcome::Failed, None);
            // Recorded, so not lost: answered 200 so Meta does not retry; redelivery processes
            // it again shortly.
            tracing::error!(service = %endpoint.name, event = "delivery.processing_failed", request_id = %request_id, error = %error, delivery_id, "Delivery recorded but not processed; it will be retried.");
            return Ok(Accepted::default());
        }
    };
    for (outcome, flow, templates) in &summary.outcomes {
        batcher.count(&endpoint.name, *outcome, flow.as_deref());
        batcher.count_replies(templates.iter().map(String::as_str));
    }
    if summary.payments_requested > 0 {
        batcher.payments().requests_committed();
    }
    let poison = summary.poison();
    let closed = match &poison {
        Some(reason) => {
            tracing::warn!(service = %endpoint.name, event = "delivery.poison", request_id = %request_id, reason = %reason, delivery_id, "Part of the delivery is kept as poison; the rest was processed.");
            store::mark_poison(pool, delivery_id, reason).await
        }
        None => store::finish_delivery(pool, delivery_id, None).await,
    };
    if let Err(error) = closed {
        tracing::warn!(service = %endpoint.name, event = "delivery.unfinished", request_id = %request_id, error = %error, "Could not mark the delivery processed; it may be processed again, and duplicates are ignored.");
    }
    Ok(Accepted {
        routed_to: summary.routed_to,
        poison,
    })
}

/// The usual path: a one-message delivery joins a batch, and is recorded in its transaction.
async fn single_message(
    pool: &PgPool,
    batcher: &batcher::Batcher,
    endpoint: &crate::config::Endpoint,
    job: batcher::Job,
) -> Result<Accepted, AcceptError> {
    let (headers, body, request_id) = (
        job.headers.clone(),
        job.body.clone(),
        job.request_id.clone(),
    );
    match batcher.process(job).await {
        Ok(handled) => {
            batcher.count(&endpoint.name, handled.outcome, handled.flow.as_deref());
            batcher.count_replies(handled.replies.iter().map(|r| r.template.as_str()));
            Ok(Accepted {
                routed_to: handled.flow,
                poison: None,
            })
        }
        Err(error) => {
            batcher.count(&endpoint.name, process::MessageOutcome::Failed, None);
            // The transaction (and its record) rolled back: record the delivery on its own so
            // nothing is lost, answer 200 so Meta does not retry; redelivery processes it again
            // shortly.
            tracing::error!(service = %endpoint.name, event = "delivery.processing_failed", request_id = %request_id, error = %error, "Delivery not processed; recorded for another attempt.");
            store::insert_delivery(pool, &endpoint.name, &headers, &body).await?;
            Ok(Accepted::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::tests::corpus as fixture;

    #[test]
    fn only_a_delivery_of_one_message_and_nothing_else_is_single() {
        let single = Single::new(fixture("01_text.json")).expect("one message");
        let (_, message) = single.parts().expect("parts");
        assert_eq!(single.sender(), message.sender());
        assert!(single.sender().is_some());
        for other in [
            "18_two_messages_one_change.json",
            "19_two_entries.json",
            "12_status_sent.json",
            "24_value_errors_130429.json",
        ] {
            assert!(Single::new(fixture(other)).is_err(), "{other}");
        }
    }
}
