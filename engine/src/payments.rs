//! Payment signals: forwarded MoMo SMS, recorded first, then read, then (only when everything
//! holds) recorded as one transaction per MoMo transaction id.
//!
//! Owns: the rules that decide whether a text credits: it must come from a configured sender
//! (`M-Money`: anyone can text the forwarding phone), read whole with a pattern, report money
//! in, and carry a transaction id nobody reported before. Must not know HTTP: the gateway maps
//! [`SmsIntake`] to statuses.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::config::{SmsKind, SmsRules};
use crate::logging::mask;
use crate::sms::{self, Forwarded, Reading, SmsError};
use crate::store::payments as store;

/// What became of a forwarded SMS.
#[derive(Debug, Clone, PartialEq)]
pub enum SmsIntake {
    /// Read; one outcome per part of the text.
    Read {
        /// The SMS's row.
        sms_id: i64,
        /// The outcome that matters most (credited before recorded before duplicate …).
        outcome: &'static str,
        /// Each reading with its own outcome.
        parts: Vec<(Reading, &'static str)>,
    },
    /// No pattern reads the text: kept for review.
    Unparsed {
        /// The SMS's row.
        sms_id: i64,
    },
    /// The body is not what a forwarder sends: kept, refused.
    Invalid {
        /// The SMS's row.
        sms_id: i64,
        /// Why.
        error: SmsError,
    },
}

/// Outcomes by importance, for an SMS with several parts.
const RANK: &[&str] = &[
    "credited",
    "recorded",
    "duplicate",
    "untrusted_sender",
    "no_transaction_id",
    "non_payment",
];

/// Records, reads and settles one forwarded SMS.
pub async fn intake_sms(
    pool: &PgPool,
    endpoint: &str,
    rules: &SmsRules,
    body: &[u8],
    request_id: &str,
) -> Result<SmsIntake, sqlx::Error> {
    let forwarded = serde_json::from_slice::<Value>(body)
        .map_err(|_| SmsError::NotAnObject)
        .and_then(|value| Forwarded::from_json(&value));
    let (sender, text) = match &forwarded {
        Ok(sms) => (Some(sms.sender.as_str()), Some(sms.text.as_str())),
        Err(_) => (None, None),
    };
    // Nothing is lost: the request is on record before anything reads it.
    let sms_id = store::record_sms(pool, endpoint, body, sender, text).await?;
    let sms = match forwarded {
        Ok(sms) => sms,
        Err(error) => {
            store::finish_sms(pool, sms_id, "invalid", None).await?;
            return Ok(SmsIntake::Invalid { sms_id, error });
        }
    };
    let readings = sms::read(rules, &sms.text);
    if readings.is_empty() {
        store::finish_sms(pool, sms_id, "unparsed", None).await?;
        tracing::warn!(service = %endpoint, event = "sms.unparsed", request_id = %request_id, sms_id, "No pattern reads this SMS; kept for review.");
        return Ok(SmsIntake::Unparsed { sms_id });
    }
    let trusted = rules.senders.contains(&sms.sender);
    let mut tx = pool.begin().await?;
    let mut parts = Vec::with_capacity(readings.len());
    for reading in readings {
        let outcome = match (&reading.transaction_id, reading.kind) {
            (_, SmsKind::NonPayment) => "non_payment",
            (None, _) => "no_transaction_id",
            (Some(_), _) if !trusted => {
                tracing::warn!(service = %endpoint, event = "sms.untrusted_sender", request_id = %request_id, sms_id, sender = %mask(&sms.sender), "A payment SMS from a sender that may not credit; recorded, not credited.");
                "untrusted_sender"
            }
            (Some(id), _) => {
                let credited = reading.is_credit();
                match store::insert_transaction(&mut tx, sms_id, &reading, id, credited).await? {
                    true if credited => "credited",
                    true => "recorded",
                    false => "duplicate",
                }
            }
        };
        parts.push((reading, outcome));
    }
    let outcome = RANK
        .iter()
        .copied()
        .find(|o| parts.iter().any(|(_, p)| p == o))
        .unwrap_or("recorded");
    let summary = Value::Array(parts.iter().map(|(r, o)| describe(r, o)).collect());
    store::finish_sms(&mut *tx, sms_id, outcome, Some(&summary)).await?;
    tx.commit().await?;
    Ok(SmsIntake::Read {
        sms_id,
        outcome,
        parts,
    })
}

/// A reading and its outcome, as stored and as answered.
pub fn describe(reading: &Reading, outcome: &str) -> Value {
    json!({
        "pattern": reading.pattern,
        "kind": reading.kind.as_str(),
        "outcome": outcome,
        "transaction_id": reading.transaction_id,
        "amount": reading.amount,
        "currency": reading.currency,
        "counterparty": reading.counterparty,
        "phone": reading.phone,
        "balance": reading.balance,
        "fee": reading.fee,
        "occurred_at": reading.occurred_at,
    })
}
