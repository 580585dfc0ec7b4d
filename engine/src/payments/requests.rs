//! Requests to pay: what a flow's `request_payment` records (checked, in the flow's own
//! transaction), and sending them to MoMo once that transaction has committed.
//!
//! Owns: the rules a request must meet (a whole positive amount, an MSISDN payer, an order
//! reference), the reference id MoMo deduplicates on, re-sending unanswered requests with the
//! same id, and giving up after an hour. Must not settle a payment on its own word: a refusal
//! is checked with MoMo first ([`super::callbacks`] settles).

use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};

use super::callbacks::settle_and_notify;
use super::momo;

use crate::config::{Config, Momo};
use crate::store::payments as store;

/// Sends the requests to pay flows recorded and MoMo has not accepted yet; returns each with
/// what became of it. A timeout or server error leaves a request to be re-sent after
/// `resend_after`, with the same reference id so MoMo cannot debit twice; 409 means an earlier
/// attempt got through; any other refusal fails the payment (and tells the payer).
pub async fn send_requests(
    pool: &PgPool,
    config: &Config,
    client: &momo::Client,
    resend_after: std::time::Duration,
) -> Result<Vec<(String, RequestOutcome)>, sqlx::Error> {
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
            Ok(momo::Requested::Accepted) => {
                store::note_request(pool, &payment.reference_id, None).await?;
                RequestOutcome::Accepted
            }
            Ok(momo::Requested::AlreadyAccepted) => {
                store::note_request(pool, &payment.reference_id, None).await?;
                RequestOutcome::AlreadyAccepted
            }
            Ok(momo::Requested::Rejected { status, body }) => {
                let why = format!("{status}: {body}");
                fail_unless_known(pool, config, client, payment, "REQUEST_REJECTED", &why).await?
            }
            Err(error) => {
                store::note_request(pool, &payment.reference_id, Some(&error.to_string())).await?;
                RequestOutcome::Unanswered
            }
        };
        tracing::info!(event = "momo.request_to_pay", reference_id = %payment.reference_id, outcome = outcome.as_str(), code = outcome.code(), "Request to pay sent.");
        sent.push((payment.reference_id.clone(), outcome));
    }
    Ok(sent)
}

/// What became of one attempt to send a request to pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// MoMo took it; the callback or the poller settles it.
    Accepted,
    /// MoMo had it from an earlier attempt (409).
    AlreadyAccepted,
    /// No answer (timeout, 5xx): sent again later with the same reference id.
    Unanswered,
    /// Refused or given up on, but MoMo knows the reference: it settles from there.
    KnownToMomo,
    /// Failed, and the payer told; `code` is the reason recorded on the payment.
    Failed {
        /// `REQUEST_REJECTED` or `NOT_SENT`.
        code: &'static str,
    },
}

impl RequestOutcome {
    /// The outcome's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AlreadyAccepted => "already_accepted",
            Self::Unanswered => "unanswered",
            Self::KnownToMomo => "known_to_momo",
            Self::Failed { .. } => "failed",
        }
    }

    /// The failure code, for a failed request.
    pub fn code(self) -> Option<&'static str> {
        match self {
            Self::Failed { code } => Some(code),
            _ => None,
        }
    }
}

/// How long an unanswered request to pay is re-sent.
const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Fails a request to pay (and tells the payer) unless MoMo knows it: a refusal or a silence
/// may follow an earlier attempt that did get through, and only MoMo's own "not found" proves
/// the payer will not be debited. Returns what became of it.
async fn fail_unless_known(
    pool: &PgPool,
    config: &Config,
    client: &momo::Client,
    payment: &store::Payment,
    code: &'static str,
    why: &str,
) -> Result<RequestOutcome, sqlx::Error> {
    match client
        .status(momo::Product::Collection, &payment.reference_id)
        .await
    {
        Err(momo::MomoError::Refused { status: 404, .. }) => {}
        Ok(_) => {
            // MoMo has it: from here the callback or the poller settles it.
            store::note_request(pool, &payment.reference_id, None).await?;
            return Ok(RequestOutcome::KnownToMomo);
        }
        Err(error) => {
            store::note_request(pool, &payment.reference_id, Some(&error.to_string())).await?;
            return Ok(RequestOutcome::Unanswered);
        }
    }
    let failed = momo::Status {
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
    Ok(RequestOutcome::Failed { code })
}

/// What a flow asks for with `request_payment`, as its expressions gave it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The amount: a whole positive number, or text holding one.
    pub amount: &'a Value,
    /// The payer's number, international or Rwandan local (07…).
    pub phone: &'a Value,
    /// The order reference; one is made up when absent.
    pub external_id: Option<&'a Value>,
    /// The contact the payer is told through.
    pub contact_id: Option<i64>,
    /// The WhatsApp number the conversation runs on.
    pub phone_number_id: &'a str,
}

/// Why a request to pay was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The flow asked for something MoMo cannot be asked (no account, a bad amount or payer).
    #[error("{0}")]
    Refused(String),
    /// The database refused the record.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Records a request to pay in the flow's transaction, to be sent once it commits, and returns
/// the payment as the next flow sees it. Without a transaction (`easymo simulate`) the payment is
/// checked and described, not recorded.
pub async fn request(
    tx: Option<&mut Transaction<'_, Postgres>>,
    account: Option<&Momo>,
    ask: Ask<'_>,
) -> Result<Value, RequestError> {
    let refuse = RequestError::Refused;
    let account = account.ok_or_else(|| refuse("routes.yaml has no `momo:` account".into()))?;
    let amount = match ask.amount {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|a| *a > 0)
    .ok_or_else(|| {
        refuse(format!(
            "the amount must be a whole positive number, got {}",
            ask.amount
        ))
    })?;
    let mut party: String = ask
        .phone
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-'))
        .collect();
    // A Rwandan number written locally (07…): MoMo reports payers as 2507…, and the
    // confirmation compares the two.
    if party.len() == 10 && party.starts_with('0') {
        party = format!("250{}", &party[1..]);
    }
    if !(9..=15).contains(&party.len()) || !party.chars().all(|c| c.is_ascii_digit()) {
        let shown = crate::logging::mask(&ask.phone.to_string());
        return Err(refuse(format!(
            "the payer's number must be an MSISDN, got {shown}"
        )));
    }
    let reference_id = uuid::Uuid::new_v4().to_string();
    let external_id = match ask.external_id {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(refuse(format!(
                "the order reference must be text or a number, got {other}"
            )))
        }
        None => format!("EMO-{}", reference_id[..8].to_uppercase()),
    };
    let status = match tx {
        Some(tx) => {
            let new = store::NewPayment {
                reference_id: &reference_id,
                external_id: &external_id,
                amount,
                currency: &account.currency,
                party: &party,
                contact_id: ask.contact_id,
                phone_number_id: Some(ask.phone_number_id),
            };
            store::insert_request(tx, &new).await?;
            "PENDING"
        }
        None => "SIMULATED",
    };
    Ok(json!({
        "reference_id": reference_id,
        "external_id": external_id,
        "amount": amount,
        "currency": account.currency,
        "phone": party,
        "status": status,
    }))
}
