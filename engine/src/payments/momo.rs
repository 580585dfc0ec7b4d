//! The MTN MoMo Open API, as far as the engine calls it: an OAuth token per product (cached
//! until shortly before it expires) and the status of a request-to-pay or transfer.
//!
//! Owns: URLs, headers, the token cache and the shapes MoMo answers with. Must not decide what
//! a status means for a payment: `payments` compares it with its own record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::Momo;

/// A token is renewed this long before MoMo says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Which MoMo product a payment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    /// Request-to-pay: a customer pays us.
    Collection,
    /// Transfer: we pay someone.
    Disbursement,
}

impl Product {
    /// The name in MoMo's URLs and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Collection => "collection",
            Product::Disbursement => "disbursement",
        }
    }

    /// The product stored as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "collection" => Some(Product::Collection),
            "disbursement" => Some(Product::Disbursement),
            _ => None,
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Product::Collection => "requesttopay",
            Product::Disbursement => "transfer",
        }
    }
}

/// Why a call to MoMo did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum MomoError {
    /// The call did not finish in time, or the connection failed.
    #[error("MoMo did not answer: {0}")]
    Unreachable(String),
    /// MoMo answered with an error status.
    #[error("MoMo answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The body, cut.
        body: String,
    },
    /// MoMo's answer is not the documented shape.
    #[error("MoMo's answer is not understood: {0}")]
    Unreadable(String),
}

/// MoMo's answer to a request to pay.
#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    /// 202: accepted; the payer is asked to approve.
    Accepted,
    /// 409 `RESOURCE_ALREADY_EXIST`: an earlier attempt with this reference id got through
    /// (its answer was lost): the same as accepted, and no second debit.
    AlreadyAccepted,
    /// Refused for good (400, 404, 422): the request itself is wrong.
    Rejected {
        /// HTTP status.
        status: u16,
        /// MoMo's body, cut.
        body: String,
    },
}

/// What MoMo's status endpoint says about a payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// `PENDING`, `SUCCESSFUL` or `FAILED`.
    pub status: String,
    /// Amount in whole units, when it reads as one.
    pub amount: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
    /// Our external id, as MoMo has it.
    pub external_id: Option<String>,
    /// The payer's (or payee's) MSISDN.
    pub party: Option<String>,
    /// MoMo's transaction id (absent on failures).
    pub financial_transaction_id: Option<String>,
    /// Why it failed: a string or an object.
    pub reason: Option<Value>,
}

impl Status {
    /// Reads a status body (the same shape as a callback's).
    pub fn from_json(body: &Value) -> Result<Self, MomoError> {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let status = text("status").ok_or_else(|| MomoError::Unreadable("no `status`".into()))?;
        let amount = match body.get("amount") {
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        let party = ["payer", "payee"]
            .iter()
            .find_map(|k| body.get(*k)?.get("partyId")?.as_str())
            .map(str::to_owned);
        Ok(Status {
            status,
            amount,
            currency: text("currency"),
            external_id: text("externalId"),
            party,
            financial_transaction_id: text("financialTransactionId"),
            reason: body.get("reason").cloned(),
        })
    }
}

/// Whose token: base URL, API user (its variable's name), product.
type TokenKey = (String, String, Product);

/// Tokens with the instant they must be renewed, shared by every request of the process.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Mutex<HashMap<TokenKey, (String, Instant)>>>);

/// A client for one MoMo account.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    account: Momo,
    tokens: Tokens,
}

impl Client {
    /// A client for `account`, sharing `http`'s connections and `tokens`.
    pub fn new(http: reqwest::Client, account: Momo, tokens: Tokens) -> Self {
        Client {
            http,
            account,
            tokens,
        }
    }

    /// The status of the payment MoMo knows as `reference_id`.
    pub async fn status(&self, product: Product, reference_id: &str) -> Result<Status, MomoError> {
        let url = format!(
            "{}/{}/v1_0/{}/{}",
            self.account.base_url,
            product.as_str(),
            product.resource(),
            reference_id
        );
        let response = self.send(product, |http| http.get(&url)).await?;
        let body = read(response).await?;
        Status::from_json(&body)
    }

    /// Asks MoMo Collections for a request to pay with our `reference_id`. A timeout or a
    /// server error is an `Err`: the caller re-sends later with the same reference id.
    pub async fn request_to_pay(
        &self,
        reference_id: &str,
        body: &Value,
    ) -> Result<Requested, MomoError> {
        let url = format!("{}/collection/v1_0/requesttopay", self.account.base_url);
        let response = self
            .send(Product::Collection, |http| {
                let request = http
                    .post(&url)
                    .header("X-Reference-Id", reference_id)
                    .json(body);
                match &self.account.callback_url {
                    Some(callback) => request.header("X-Callback-Url", callback),
                    None => request,
                }
            })
            .await?;
        let status = response.status();
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        match status.as_u16() {
            200..=299 => Ok(Requested::Accepted),
            409 => Ok(Requested::AlreadyAccepted),
            // The request itself is wrong (its body, its payer): sending it again cannot help.
            // Credentials, rate limits and timeouts (401, 403, 408, 429) are worth a retry.
            code @ (400 | 404 | 422) => Ok(Requested::Rejected {
                status: code,
                body: text,
            }),
            code => Err(MomoError::Refused {
                status: code,
                body: text,
            }),
        }
    }

    /// Sends the request `build` makes, with the product's token and the account's headers. A
    /// token MoMo no longer accepts (401) is dropped and the request sent once more with a
    /// fresh one; a second 401 is returned like any other answer.
    async fn send(
        &self,
        product: Product,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MomoError> {
        let mut retried = false;
        loop {
            let token = self.token(product).await?;
            let response = build(&self.http)
                .bearer_auth(&token)
                .header("X-Target-Environment", &self.account.target_environment)
                .header("Ocp-Apim-Subscription-Key", self.subscription_key())
                .timeout(self.account.timeout)
                .send()
                .await
                .map_err(|e| MomoError::Unreachable(e.to_string()))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                self.forget_token(product).await;
                retried = true;
                continue;
            }
            return Ok(response);
        }
    }

    async fn token(&self, product: Product) -> Result<String, MomoError> {
        let key = self.key(product);
        let mut tokens = self.tokens.0.lock().await;
        if let Some((token, until)) = tokens.get(&key) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let response = self
            .http
            .post(format!(
                "{}/{}/token/",
                self.account.base_url,
                product.as_str()
            ))
            .basic_auth(
                self.account.api_user.value.as_deref().unwrap_or_default(),
                self.account.api_key.value.as_deref(),
            )
            .header("Ocp-Apim-Subscription-Key", self.subscription_key())
            .header("content-length", "0")
            .timeout(self.account.timeout)
            .send()
            .await
            .map_err(|e| MomoError::Unreachable(e.to_string()))?;
        let body = read(response).await?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| MomoError::Unreadable("no `access_token`".into()))?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(lifetime).saturating_sub(TOKEN_MARGIN);
        tokens.insert(key, (token.clone(), until));
        Ok(token)
    }

    async fn forget_token(&self, product: Product) {
        self.tokens.0.lock().await.remove(&self.key(product));
    }

    fn subscription_key(&self) -> &str {
        self.account
            .subscription_key
            .value
            .as_deref()
            .unwrap_or_default()
    }

    fn key(&self, product: Product) -> TokenKey {
        (
            self.account.base_url.clone(),
            self.account.api_user.var.clone(),
            product,
        )
    }
}

async fn read(response: reqwest::Response) -> Result<Value, MomoError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| MomoError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(MomoError::Refused {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| MomoError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_bodies_of_every_documented_shape() {
        let ok = Status::from_json(&json!({"financialTransactionId": "1530828708", "externalId": "EMO-1", "amount": "1500", "currency": "RWF", "payer": {"partyIdType": "MSISDN", "partyId": "250788000101"}, "status": "SUCCESSFUL"})).expect("reads");
        assert_eq!(
            (ok.amount, ok.party.as_deref(), ok.external_id.as_deref()),
            (Some(1500), Some("250788000101"), Some("EMO-1"))
        );
        let transfer = Status::from_json(&json!({"amount": 700, "payee": {"partyId": "250788000202"}, "status": "FAILED", "reason": {"code": "PAYEE_NOT_FOUND", "message": "x"}})).expect("reads");
        assert_eq!(transfer.party.as_deref(), Some("250788000202"));
        assert_eq!(transfer.amount, Some(700));
        assert_eq!(
            transfer.reason,
            Some(json!({"code": "PAYEE_NOT_FOUND", "message": "x"}))
        );
        assert!(Status::from_json(&json!({"amount": "1"})).is_err());
    }
}
