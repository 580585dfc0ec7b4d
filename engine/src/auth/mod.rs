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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, SignatureEncoding};
    use hmac::{Hmac, Mac as _};

    fn hmac_auth() -> Auth {
        Auth::Hmac {
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            encoding: SignatureEncoding::Hex,
            secrets: vec![Secret {
                var: "S".into(),
                value: Some("app-secret".into()),
            }],
        }
    }

    fn signed(body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"app-secret").expect("key");
        mac.update(body);
        let mut headers = HeaderMap::new();
        let value = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert("X-Hub-Signature-256", value.parse().expect("header"));
        headers
    }

    #[test]
    fn each_kind_of_auth_lets_in_only_what_it_should() {
        let local: IpAddr = [127, 0, 0, 1].into();
        let body = b"{\"entry\":[]}";
        let auth = hmac_auth();
        assert_eq!(check(&auth, &signed(body), body, local, 0), Ok(()));
        assert_eq!(
            check(&auth, &signed(b"{}"), body, local, 0),
            Err(Denied::WrongSignature),
            "a signature over another body"
        );
        assert_eq!(
            check(&auth, &HeaderMap::new(), body, local, 0),
            Err(Denied::MissingSignature)
        );
        let mut not_text = HeaderMap::new();
        not_text.insert(
            "X-Hub-Signature-256",
            axum::http::HeaderValue::from_bytes(b"sha256=\xff").expect("header"),
        );
        assert_eq!(
            check(&auth, &not_text, body, local, 0),
            Err(Denied::MalformedSignature)
        );
        let allowlist = Auth::IpAllowlist(vec!["10.20.0.0/16".parse().expect("net")]);
        assert_eq!(
            check(
                &allowlist,
                &HeaderMap::new(),
                body,
                [10, 20, 3, 4].into(),
                0
            ),
            Ok(())
        );
        assert_eq!(
            check(&allowlist, &HeaderMap::new(), body, local, 0),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            check(&Auth::None, &HeaderMap::new(), body, local, 0),
            Ok(())
        );
    }

    #[test]
    fn refusals_name_their_reason_in_the_body() {
        assert_eq!(Denied::IpNotAllowed.code(), "ip_not_allowed");
        for signature in [
            Denied::MissingSignature,
            Denied::MalformedSignature,
            Denied::WrongSignature,
            Denied::StaleTimestamp,
        ] {
            assert_eq!(signature.code(), "invalid_signature", "{signature:?}");
        }
    }
}
