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
    "no_amount",
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
            // Money in with no amount that reads (`1.000`, a cut) waits for a person.
            (Some(_), _) if reading.is_credit() && reading.amount.is_none() => "no_amount",
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

/// Templates the payer is notified with, when the config has them.
pub const PAYMENT_SUCCESSFUL_TEMPLATE: &str = "payment_successful";
/// See [`PAYMENT_SUCCESSFUL_TEMPLATE`].
pub const PAYMENT_FAILED_TEMPLATE: &str = "payment_failed";

/// What became of a MoMo callback. Every outcome but `Invalid` is answered 200: MoMo may send
/// a callback only once, and a refusal tells a forger nothing useful either.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackOutcome {
    /// Settled: MoMo's status endpoint confirmed a final state that matches our record.
    Settled {
        /// `SUCCESSFUL` or `FAILED`.
        status: String,
    },
    /// The payment was already final; nothing changed.
    AlreadySettled,
    /// MoMo says the payment is still pending; nothing changed.
    Pending,
    /// No payment of ours has this external id: suspicious, nothing credited.
    UnknownPayment,
    /// MoMo's record differs from ours (amount, currency, payer, external id): suspicious.
    Contradicted(String),
    /// MoMo's status endpoint did not answer; the payment stays pending for the poller.
    Unconfirmed(String),
    /// Not the documented shape: kept, refused with the field named.
    Invalid(String),
}

impl CallbackOutcome {
    /// The name stored and answered.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallbackOutcome::Settled { .. } => "settled",
            CallbackOutcome::AlreadySettled => "already_settled",
            CallbackOutcome::Pending => "pending",
            CallbackOutcome::UnknownPayment => "unknown_payment",
            CallbackOutcome::Contradicted(_) => "contradicted",
            CallbackOutcome::Unconfirmed(_) => "unconfirmed",
            CallbackOutcome::Invalid(_) => "invalid",
        }
    }
}

/// A MoMo callback as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Callback<'a> {
    /// The endpoint's name.
    pub endpoint: &'a str,
    /// `POST` or `PUT` (MoMo uses both).
    pub method: &'a str,
    /// The headers kept with the record.
    pub headers: &'a Value,
    /// The raw body.
    pub body: &'a [u8],
    /// For logs.
    pub request_id: &'a str,
}

/// Records a MoMo callback (POST or PUT alike), then believes nothing in it: the payment is
/// found by our external id and its status read from MoMo itself.
pub async fn intake_callback(
    pool: &PgPool,
    config: &crate::config::Config,
    client: Option<&crate::momo::Client>,
    callback: Callback<'_>,
) -> Result<CallbackOutcome, sqlx::Error> {
    let Callback {
        endpoint,
        method,
        headers,
        body,
        request_id,
    } = callback;
    let id = store::record_callback(pool, endpoint, method, headers, body).await?;
    let (outcome, reference_id) = match read_callback(body) {
        Err(field) => (CallbackOutcome::Invalid(field), None),
        Ok((external_id, claimed)) => {
            match store::payment_by_external_id(pool, &external_id).await? {
                None => {
                    tracing::warn!(service = %endpoint, event = "momo.unknown_payment", request_id = %request_id, callback_id = id, claimed_status = %claimed, "A callback for a payment we never requested; nothing credited.");
                    (CallbackOutcome::UnknownPayment, None)
                }
                Some(payment) if payment.status != "PENDING" => {
                    (CallbackOutcome::AlreadySettled, Some(payment.reference_id))
                }
                Some(payment) => {
                    let outcome = match client {
                        None => {
                            CallbackOutcome::Unconfirmed("no `momo:` account configured".into())
                        }
                        Some(client) => {
                            confirm(pool, config, client, &payment, endpoint, request_id).await?
                        }
                    };
                    if !matches!(outcome, CallbackOutcome::Settled { .. }) && claimed != "PENDING" {
                        tracing::info!(service = %endpoint, event = "momo.callback_not_believed", request_id = %request_id, callback_id = id, claimed_status = %claimed, outcome = outcome.as_str(), "A callback's status was not confirmed by MoMo.");
                    }
                    (outcome, Some(payment.reference_id))
                }
            }
        }
    };
    let detail = match &outcome {
        CallbackOutcome::Contradicted(d)
        | CallbackOutcome::Unconfirmed(d)
        | CallbackOutcome::Invalid(d) => Some(d.as_str()),
        _ => None,
    };
    store::finish_callback(pool, id, outcome.as_str(), reference_id.as_deref(), detail).await?;
    Ok(outcome)
}

/// `externalId` and the status the body claims, or the first field that is missing.
fn read_callback(body: &[u8]) -> Result<(String, String), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let external_id = text("externalId").ok_or("`externalId` is missing or not a string")?;
    let status = text("status").ok_or("`status` is missing or not a string")?;
    Ok((external_id, status))
}

/// Reads the payment's status from MoMo and settles it when MoMo's record matches ours.
pub async fn confirm(
    pool: &PgPool,
    config: &crate::config::Config,
    client: &crate::momo::Client,
    payment: &store::Payment,
    endpoint: &str,
    request_id: &str,
) -> Result<CallbackOutcome, sqlx::Error> {
    let product = crate::momo::Product::from_name(&payment.product)
        .unwrap_or(crate::momo::Product::Collection);
    let status = match client.status(product, &payment.reference_id).await {
        Ok(status) => status,
        Err(error) => return Ok(CallbackOutcome::Unconfirmed(error.to_string())),
    };
    let mismatches: Vec<String> = [
        (
            "externalId",
            status.external_id.as_deref() == Some(payment.external_id.as_str()),
        ),
        ("amount", status.amount == Some(payment.amount)),
        (
            "currency",
            status.currency.as_deref() == Some(payment.currency.as_str()),
        ),
        (
            "party",
            status.party.as_deref() == Some(payment.party.as_str()),
        ),
    ]
    .iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| (*field).to_owned())
    .collect();
    if !mismatches.is_empty() {
        let detail = format!("MoMo's record differs in {}", mismatches.join(", "));
        tracing::warn!(service = %endpoint, event = "momo.contradicted", request_id = %request_id, reference_id = %payment.reference_id, detail = %detail, "MoMo's record of a payment differs from ours; nothing credited.");
        return Ok(CallbackOutcome::Contradicted(detail));
    }
    if status.status == "PENDING" {
        return Ok(CallbackOutcome::Pending);
    }
    if status.status != "SUCCESSFUL" && status.status != "FAILED" {
        return Ok(CallbackOutcome::Unconfirmed(format!(
            "MoMo reports status `{}`",
            status.status
        )));
    }
    if !settle_and_notify(pool, config, payment, &status).await? {
        return Ok(CallbackOutcome::AlreadySettled);
    }
    tracing::info!(service = %endpoint, event = "momo.settled", request_id = %request_id, reference_id = %payment.reference_id, status = %status.status, "Payment settled, confirmed by MoMo.");
    Ok(CallbackOutcome::Settled {
        status: status.status,
    })
}

/// Moves a pending payment to `status`'s final state and queues the payer's notification, in
/// one transaction; `false` when it was no longer pending (nothing changed).
async fn settle_and_notify(
    pool: &PgPool,
    config: &crate::config::Config,
    payment: &store::Payment,
    status: &crate::momo::Status,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let moved = store::settle(
        &mut tx,
        &payment.reference_id,
        &status.status,
        status.financial_transaction_id.as_deref(),
        status.reason.as_ref(),
    )
    .await?;
    if !moved {
        tx.rollback().await?;
        return Ok(false);
    }
    // The notification commits with the state change: sent once, whatever signals follow.
    notify(&mut tx, config, payment, status).await?;
    tx.commit().await?;
    Ok(true)
}

/// Wakes the request sender when a flow has recorded a request to pay.
pub static REQUESTS_WAITING: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Sends the requests to pay flows recorded and MoMo has not accepted yet; returns each with
/// what became of it. A timeout or server error leaves a request to be re-sent after
/// `resend_after`, with the same reference id so MoMo cannot debit twice; 409 means an earlier
/// attempt got through; any other refusal fails the payment (and tells the payer).
pub async fn send_requests(
    pool: &PgPool,
    config: &crate::config::Config,
    client: &crate::momo::Client,
    resend_after: std::time::Duration,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let unsent = store::take_unsent(pool, resend_after.as_secs_f64(), 20).await?;
    let mut sent = Vec::with_capacity(unsent.len());
    for payment in &unsent {
        if payment.age_secs > GIVE_UP_AFTER.as_secs_f64() {
            // An approval prompt hours after the purchase helps nobody: stop sending.
            let why = "MoMo did not answer the request to pay within an hour";
            let outcome = fail_unless_known(pool, config, client, payment, "NOT_SENT", why).await?;
            sent.push((payment.reference_id.clone(), outcome));
            continue;
        }
        // MoMo refuses messages over 160 characters or with an apostrophe.
        let note: String = format!("easyMO order {}", payment.external_id)
            .replace('\'', "")
            .chars()
            .take(160)
            .collect();
        let body = json!({
            "amount": payment.amount.to_string(),
            "currency": payment.currency,
            "externalId": payment.external_id,
            "payer": {"partyIdType": "MSISDN", "partyId": payment.party},
            "payerMessage": note,
            "payeeNote": note,
        });
        let outcome = match client.request_to_pay(&payment.reference_id, &body).await {
            Ok(crate::momo::Requested::Accepted) => {
                store::note_request(pool, &payment.reference_id, None).await?;
                "accepted".to_owned()
            }
            Ok(crate::momo::Requested::AlreadyAccepted) => {
                store::note_request(pool, &payment.reference_id, None).await?;
                "already_accepted".to_owned()
            }
            Ok(crate::momo::Requested::Rejected { status, body }) => {
                let why = format!("{status}: {body}");
                fail_unless_known(pool, config, client, payment, "REQUEST_REJECTED", &why).await?
            }
            Err(error) => {
                store::note_request(pool, &payment.reference_id, Some(&error.to_string())).await?;
                "unanswered".to_owned()
            }
        };
        tracing::info!(event = "momo.request_to_pay", reference_id = %payment.reference_id, outcome = %outcome, "Request to pay sent.");
        sent.push((payment.reference_id.clone(), outcome));
    }
    Ok(sent)
}

/// How long an unanswered request to pay is re-sent.
const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Fails a request to pay (and tells the payer) unless MoMo knows it: a refusal or a silence
/// may follow an earlier attempt that did get through, and only MoMo's own "not found" proves
/// the payer will not be debited. Returns what became of it.
async fn fail_unless_known(
    pool: &PgPool,
    config: &crate::config::Config,
    client: &crate::momo::Client,
    payment: &store::Payment,
    code: &str,
    why: &str,
) -> Result<String, sqlx::Error> {
    match client
        .status(crate::momo::Product::Collection, &payment.reference_id)
        .await
    {
        Err(crate::momo::MomoError::Refused { status: 404, .. }) => {}
        Ok(_) => {
            // MoMo has it: from here the callback or the poller settles it.
            store::note_request(pool, &payment.reference_id, None).await?;
            return Ok("known_to_momo".to_owned());
        }
        Err(error) => {
            store::note_request(pool, &payment.reference_id, Some(&error.to_string())).await?;
            return Ok("unanswered".to_owned());
        }
    }
    let failed = crate::momo::Status {
        status: "FAILED".into(),
        amount: Some(payment.amount),
        currency: Some(payment.currency.clone()),
        external_id: Some(payment.external_id.clone()),
        party: Some(payment.party.clone()),
        financial_transaction_id: None,
        reason: Some(json!({"code": code, "message": why})),
    };
    store::note_request(pool, &payment.reference_id, Some(why)).await?;
    settle_and_notify(pool, config, payment, &failed).await?;
    Ok(format!("failed: {code}"))
}

async fn notify(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    config: &crate::config::Config,
    payment: &store::Payment,
    status: &crate::momo::Status,
) -> Result<(), sqlx::Error> {
    // The templates speak to a payer; a payout's payee is not told yet.
    if payment.product != crate::momo::Product::Collection.as_str() {
        return Ok(());
    }
    let name = if status.status == "SUCCESSFUL" {
        PAYMENT_SUCCESSFUL_TEMPLATE
    } else {
        PAYMENT_FAILED_TEMPLATE
    };
    let (Some(contact_id), Some(phone_number_id), Some(template)) = (
        payment.contact_id,
        payment.phone_number_id.as_deref(),
        config.templates.get(name),
    ) else {
        return Ok(());
    };
    let Some((recipient, language)) = store::contact_address(tx, contact_id).await? else {
        return Ok(());
    };
    let reason = match &status.reason {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => other.get("code").and_then(Value::as_str).map(str::to_owned),
        None => None,
    };
    let vars = json!({"payment": {
        "amount": payment.amount,
        "currency": payment.currency,
        "external_id": payment.external_id,
        "transaction_id": status.financial_transaction_id,
        "reason": reason,
    }});
    let vars = vars.as_object().cloned().unwrap_or_default();
    match crate::render::render(name, &template.shape, &language, &vars, &recipient, 0) {
        Ok(rendered) => {
            store::queue_reply(
                tx,
                contact_id,
                &recipient,
                phone_number_id,
                name,
                &rendered.body,
            )
            .await
        }
        Err(error) => {
            tracing::error!(event = "momo.notification_failed", reference_id = %payment.reference_id, error = %error, "The payment notification could not be rendered; the payment is settled.");
            Ok(())
        }
    }
}

/// Asks MoMo about payments pending for longer than `poll_after` (MTN may send a callback
/// once or never) and settles those it has decided; returns each payment polled with its
/// outcome. Several engine processes may poll at once: each payment is taken by one.
pub async fn poll_overdue(
    pool: &PgPool,
    config: &crate::config::Config,
    client: &crate::momo::Client,
    poll_after: std::time::Duration,
) -> Result<Vec<(String, &'static str)>, sqlx::Error> {
    let overdue = store::take_overdue(pool, poll_after.as_secs_f64(), 50).await?;
    let mut polled = Vec::with_capacity(overdue.len());
    for payment in &overdue {
        let outcome = confirm(pool, config, client, payment, "momo-poller", "").await?;
        polled.push((payment.reference_id.clone(), outcome.as_str()));
    }
    Ok(polled)
}

/// Records an SMS the rate limit dropped, unread, for review: the forwarder was answered 200
/// and will not send it again.
pub async fn keep_dropped_sms(
    pool: &PgPool,
    endpoint: &str,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    let id = store::record_sms(pool, endpoint, body, None, None).await?;
    store::finish_sms(pool, id, "rate_limited", None).await
}
