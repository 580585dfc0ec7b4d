//! MoMo callbacks and what settles a payment: a callback is recorded, then nothing in it is
//! believed; the payment is found by our own external id and its status read from MoMo itself,
//! and a payment no callback settled is polled. The payer is told once, in the transaction that
//! settles the payment.
//!
//! Owns: the callback outcomes, the comparison of MoMo's record with ours, settling, and the
//! notification replies. Must not know HTTP: the gateway maps [`CallbackOutcome`] to statuses.

use serde_json::{json, Value};
use sqlx::PgPool;

use super::momo;
use crate::config::Config;
use crate::store::payments as store;

use crate::config::templates::{PAYMENT_FAILED_TEMPLATE, PAYMENT_SUCCESSFUL_TEMPLATE};

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
    config: &Config,
    client: Option<&momo::Client>,
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
    config: &Config,
    client: &momo::Client,
    payment: &store::Payment,
    endpoint: &str,
    request_id: &str,
) -> Result<CallbackOutcome, sqlx::Error> {
    let product = momo::Product::from_name(&payment.product).unwrap_or(momo::Product::Collection);
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
pub(super) async fn settle_and_notify(
    pool: &PgPool,
    config: &Config,
    payment: &store::Payment,
    status: &momo::Status,
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

async fn notify(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    config: &Config,
    payment: &store::Payment,
    status: &momo::Status,
) -> Result<(), sqlx::Error> {
    // The templates speak to a payer; a payout's payee is not told yet.
    if payment.product != momo::Product::Collection.as_str() {
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
    config: &Config,
    client: &momo::Client,
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
