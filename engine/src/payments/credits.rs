//! What a forwarded MoMo SMS credits: recorded first, then read, then (only when everything
//! holds) recorded as one transaction per MoMo transaction id.
//!
//! Owns: the rules that decide whether a text credits: it must come from a configured sender
//! (`M-Money`: anyone can text the forwarding phone), read whole with a pattern, report money
//! in, and carry a transaction id nobody reported before. Must not know HTTP: the gateway maps
//! [`SmsIntake`] to statuses.

use serde_json::{json, Value};
use sqlx::PgPool;

use super::sms::{self, Forwarded, Reading, SmsError};
use crate::config::{SmsKind, SmsRules};
use crate::logging::mask;
use crate::store::payments as store;

/// What became of a forwarded SMS.
#[derive(Debug, Clone, PartialEq)]
pub enum SmsIntake {
    /// Read; one outcome per part of the text.
    Read {
        /// The SMS's row.
        sms_id: i64,
        /// The outcome that matters most (credited before recorded before duplicate …).
        outcome: SmsOutcome,
        /// Each reading with its own outcome.
        parts: Vec<(Reading, SmsOutcome)>,
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

/// What became of a forwarded SMS, or of one part of it. Declared by importance: for an SMS
/// with several parts, the first that any part has is the SMS's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmsOutcome {
    /// Money in, recorded once, credited.
    Credited,
    /// A transaction recorded that credits nothing (money out, a fee).
    Recorded,
    /// A transaction id recorded before: nothing changes.
    Duplicate,
    /// A payment text from a sender that may not credit (anyone can text the forwarder).
    UntrustedSender,
    /// Money in whose amount does not read: waits for a person.
    NoAmount,
    /// No transaction id: nothing to record it by.
    NoTransactionId,
    /// Not about money (an OTP, a bundle).
    NonPayment,
    /// No pattern reads the text.
    Unparsed,
    /// Not what a forwarder sends.
    Invalid,
    /// Dropped by the rate limit, unread.
    RateLimited,
}

impl SmsOutcome {
    /// The name stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsOutcome::Credited => "credited",
            SmsOutcome::Recorded => "recorded",
            SmsOutcome::Duplicate => "duplicate",
            SmsOutcome::UntrustedSender => "untrusted_sender",
            SmsOutcome::NoAmount => "no_amount",
            SmsOutcome::NoTransactionId => "no_transaction_id",
            SmsOutcome::NonPayment => "non_payment",
            SmsOutcome::Unparsed => "unparsed",
            SmsOutcome::Invalid => "invalid",
            SmsOutcome::RateLimited => "rate_limited",
        }
    }
}

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
            store::finish_sms(pool, sms_id, SmsOutcome::Invalid.as_str(), None).await?;
            return Ok(SmsIntake::Invalid { sms_id, error });
        }
    };
    let readings = sms::read(rules, &sms.text);
    if readings.is_empty() {
        store::finish_sms(pool, sms_id, SmsOutcome::Unparsed.as_str(), None).await?;
        tracing::warn!(service = %endpoint, event = "sms.unparsed", request_id = %request_id, sms_id, "No pattern reads this SMS; kept for review.");
        return Ok(SmsIntake::Unparsed { sms_id });
    }
    let trusted = rules.senders.contains(&sms.sender);
    let mut tx = pool.begin().await?;
    let mut parts = Vec::with_capacity(readings.len());
    for reading in readings {
        let outcome = match (&reading.transaction_id, reading.kind) {
            (_, SmsKind::NonPayment) => SmsOutcome::NonPayment,
            (None, _) => SmsOutcome::NoTransactionId,
            (Some(_), _) if !trusted => {
                tracing::warn!(service = %endpoint, event = "sms.untrusted_sender", request_id = %request_id, sms_id, sender = %mask(&sms.sender), "A payment SMS from a sender that may not credit; recorded, not credited.");
                SmsOutcome::UntrustedSender
            }
            // Money in with no amount that reads (`1.000`, a cut) waits for a person.
            (Some(_), _) if reading.is_credit() && reading.amount.is_none() => SmsOutcome::NoAmount,
            (Some(id), _) => {
                let credited = reading.is_credit();
                let recorded = store::SmsTransaction {
                    transaction_id: id,
                    sms_id,
                    pattern: &reading.pattern,
                    kind: reading.kind.as_str(),
                    credited,
                    amount: reading.amount,
                    currency: reading.currency.as_deref(),
                    counterparty: reading.counterparty.as_deref(),
                    phone: reading.phone.as_deref(),
                    balance: reading.balance,
                    fee: reading.fee,
                    occurred_at: reading.occurred_at.as_deref(),
                };
                match store::insert_transaction(&mut tx, &recorded).await? {
                    true if credited => SmsOutcome::Credited,
                    true => SmsOutcome::Recorded,
                    false => SmsOutcome::Duplicate,
                }
            }
        };
        parts.push((reading, outcome));
    }
    let outcome = parts
        .iter()
        .map(|(_, o)| *o)
        .min()
        .unwrap_or(SmsOutcome::Recorded);
    let summary = Value::Array(parts.iter().map(|(r, o)| describe(r, *o)).collect());
    store::finish_sms(&mut *tx, sms_id, outcome.as_str(), Some(&summary)).await?;
    tx.commit().await?;
    Ok(SmsIntake::Read {
        sms_id,
        outcome,
        parts,
    })
}

/// A reading and its outcome, as stored and as answered.
pub fn describe(reading: &Reading, outcome: SmsOutcome) -> Value {
    json!({
        "pattern": reading.pattern,
        "kind": reading.kind.as_str(),
        "outcome": outcome.as_str(),
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

/// Records an SMS the rate limit dropped, unread, for review: the forwarder was answered 200
/// and will not send it again.
pub async fn keep_dropped_sms(
    pool: &PgPool,
    endpoint: &str,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    let id = store::record_sms(pool, endpoint, body, None, None).await?;
    store::finish_sms(pool, id, SmsOutcome::RateLimited.as_str(), None).await
}
