//! Who may call an endpoint: signatures over the raw body and client-IP allowlists.
//!
//! Owns: the checks themselves, in constant time where secrets are compared. Must not parse
//! bodies, touch rate limits or build HTTP responses; the gateway maps a [`Denied`] to a 403.

pub mod client_ip;
pub mod signature;

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::Auth;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No signature header where one is required.
    #[error("the signature header is missing")]
    MissingSignature,
    /// The header does not have the configured shape (prefix, encoding, length).
    #[error("the signature header is malformed")]
    MalformedSignature,
    /// No configured secret produces this signature.
    #[error("the signature does not match the body")]
    WrongSignature,
    /// Standard Webhooks timestamp outside the tolerance: a replay or a skewed clock.
    #[error("the webhook timestamp is outside the accepted window")]
    StaleTimestamp,
    /// The client address is not allowed.
    #[error("the client address is not allowed")]
    IpNotAllowed,
}

impl Denied {
    /// The `error` field of the 403 body.
    pub fn code(self) -> &'static str {
        match self {
            Denied::IpNotAllowed => "ip_not_allowed",
            _ => "invalid_signature",
        }
    }
}

/// Checks one request against an endpoint's auth. `now_unix` is the current time in seconds
/// (injected so replay windows can be tested).
pub fn check(
    auth: &Auth,
    headers: &HeaderMap,
    body: &[u8],
    client: IpAddr,
    now_unix: i64,
) -> Result<(), Denied> {
    match auth {
        Auth::None => Ok(()),
        Auth::Hmac {
            header,
            prefix,
            encoding,
            secrets,
        } => {
            let value = headers
                .get(header.as_str())
                .ok_or(Denied::MissingSignature)?;
            let value = value.to_str().map_err(|_| Denied::MalformedSignature)?;
            signature::verify_hmac(value, prefix, *encoding, secrets, body)
        }
        Auth::StandardWebhooks { secrets, tolerance } => {
            signature::verify_standard_webhooks(headers, body, secrets, *tolerance, now_unix)
        }
        Auth::IpAllowlist(nets) => {
            if nets.iter().any(|n| n.contains(&client)) {
                Ok(())
            } else {
                Err(Denied::IpNotAllowed)
            }
        }
    }
}
