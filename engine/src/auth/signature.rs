//! HMAC-SHA256 signatures over the raw request body: Meta's `X-Hub-Signature-256` style (one
//! header, optional prefix, hex or base64) and the Standard Webhooks scheme.
//!
//! The body is verified as received, byte for byte: re-serialized JSON differs (Meta escapes
//! `/`, non-ASCII and emoji), so nothing may be parsed before this passes. Comparison is the
//! hmac crate's constant-time `verify_slice`. Several secrets may be configured so a secret can
//! be rotated without downtime; a signature made with any of them is accepted.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Denied;
use crate::config::{Secret, SignatureEncoding};

type HmacSha256 = Hmac<Sha256>;

/// Length of a SHA-256 MAC in bytes.
const MAC_LEN: usize = 32;

fn secret_bytes(secret: &Secret) -> &[u8] {
    secret.value.as_deref().unwrap_or_default().as_bytes()
}

fn matches_any<'a>(
    keys: impl Iterator<Item = &'a [u8]>,
    message: &[&[u8]],
    signature: &[u8],
) -> bool {
    // Every key is tried even after a match, so timing does not reveal which secret matched.
    let mut ok = false;
    for key in keys {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            continue;
        };
        for part in message {
            mac.update(part);
        }
        ok |= mac.verify_slice(signature).is_ok();
    }
    ok
}

/// Verifies a single-header signature such as `sha256=<hex>`.
pub fn verify_hmac(
    header: &str,
    prefix: &str,
    encoding: SignatureEncoding,
    secrets: &[Secret],
    body: &[u8],
) -> Result<(), Denied> {
    let encoded = header
        .trim()
        .strip_prefix(prefix)
        .ok_or(Denied::MalformedSignature)?;
    let signature = match encoding {
        SignatureEncoding::Hex => hex::decode(encoded).map_err(|_| Denied::MalformedSignature)?,
        SignatureEncoding::Base64 => STANDARD
            .decode(encoded)
            .map_err(|_| Denied::MalformedSignature)?,
    };
    if signature.len() != MAC_LEN {
        return Err(Denied::MalformedSignature);
    }
    if matches_any(secrets.iter().map(secret_bytes), &[body], &signature) {
        Ok(())
    } else {
        Err(Denied::WrongSignature)
    }
}

/// The key bytes of a Standard Webhooks secret: base64 after an optional `whsec_` prefix.
fn standard_key(secret: &Secret) -> Option<Vec<u8>> {
    let raw = secret.value.as_deref()?;
    STANDARD
        .decode(raw.strip_prefix("whsec_").unwrap_or(raw))
        .ok()
}

/// Verifies `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated
/// `v1,<base64>` entries) over `id.timestamp.body`, rejecting timestamps outside `tolerance`.
pub fn verify_standard_webhooks(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), Denied> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return Err(Denied::MissingSignature);
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Denied::MalformedSignature)?;
    let skew = now_unix.abs_diff(sent);
    if skew > tolerance.as_secs() {
        return Err(Denied::StaleTimestamp);
    }
    let keys: Vec<Vec<u8>> = secrets.iter().filter_map(standard_key).collect();
    let message: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let mut any_well_formed = false;
    for entry in signatures.split_whitespace() {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(signature) = STANDARD.decode(encoded) else {
            continue;
        };
        if signature.len() != MAC_LEN {
            continue;
        }
        any_well_formed = true;
        if matches_any(keys.iter().map(Vec::as_slice), &message, &signature) {
            return Ok(());
        }
    }
    Err(if any_well_formed {
        Denied::WrongSignature
    } else {
        Denied::MalformedSignature
    })
}

/// Signs `body` the way Meta does (`sha256=` + hex), for tests and tools.
pub fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Signs a Standard Webhooks message (`v1,<base64>`), for tests and tools. `secret` is the
/// configured `whsec_…` value.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> Secret {
        Secret {
            var: "S".into(),
            value: Some(value.into()),
        }
    }

    #[test]
    fn accepts_meta_signature_and_rejects_tampering() {
        let body = br#"{"a":"caf\u00e9 \/ \ud83d\ude00"}"#;
        let good = format!("sha256={}", sign_hex(b"k1", body));
        let secrets = [secret("old"), secret("k1")];
        assert_eq!(
            verify_hmac(&good, "sha256=", SignatureEncoding::Hex, &secrets, body),
            Ok(())
        );
        assert_eq!(
            verify_hmac(
                &good.to_uppercase().replace("SHA256=", "sha256="),
                "sha256=",
                SignatureEncoding::Hex,
                &secrets,
                body
            ),
            Ok(()),
            "hex is case-insensitive"
        );
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            verify_hmac(&good, "sha256=", SignatureEncoding::Hex, &secrets, &changed),
            Err(Denied::WrongSignature)
        );
        assert_eq!(
            verify_hmac(
                &good[7..],
                "sha256=",
                SignatureEncoding::Hex,
                &secrets,
                body
            ),
            Err(Denied::MalformedSignature)
        );
        assert_eq!(
            verify_hmac(
                "sha256=abcd",
                "sha256=",
                SignatureEncoding::Hex,
                &secrets,
                body
            ),
            Err(Denied::MalformedSignature)
        );
        assert_eq!(
            verify_hmac(
                &good,
                "sha256=",
                SignatureEncoding::Hex,
                &[secret("other")],
                body
            ),
            Err(Denied::WrongSignature)
        );
    }

    #[test]
    fn standard_webhooks_checks_signature_and_replay_window() {
        let key = STANDARD.encode(b"standard-key");
        let secrets = [secret(&format!("whsec_{key}"))];
        let body = b"{\"type\":\"x\"}";
        let mut mac = HmacSha256::new_from_slice(b"standard-key").expect("key");
        mac.update(b"msg_1.1700000000.");
        mac.update(body);
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        // The tools' signer makes exactly this signature.
        assert_eq!(
            sign_standard(&format!("whsec_{key}"), "msg_1", 1_700_000_000, body),
            Some(format!("v1,{sig}"))
        );
        assert_eq!(sign_standard("whsec_not base64!", "msg_1", 1, body), None);
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().expect("header"));
        headers.insert("webhook-timestamp", "1700000000".parse().expect("header"));
        headers.insert(
            "webhook-signature",
            format!("v1,AAAA v1,{sig}").parse().expect("header"),
        );
        let tolerance = Duration::from_secs(300);
        assert_eq!(
            verify_standard_webhooks(&headers, body, &secrets, tolerance, 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            verify_standard_webhooks(&headers, body, &secrets, tolerance, 1_700_000_301),
            Err(Denied::StaleTimestamp)
        );
        // Exactly at the tolerance, either side, is still in; a second past it is not.
        for now in [1_700_000_300, 1_699_999_700] {
            assert_eq!(
                verify_standard_webhooks(&headers, body, &secrets, tolerance, now),
                Ok(()),
                "{now}"
            );
        }
        assert_eq!(
            verify_standard_webhooks(&headers, body, &secrets, tolerance, 1_699_999_699),
            Err(Denied::StaleTimestamp),
            "from the future too"
        );
        assert_eq!(
            verify_standard_webhooks(&headers, b"{}", &secrets, tolerance, 1_700_000_000),
            Err(Denied::WrongSignature)
        );
        headers.remove("webhook-id");
        assert_eq!(
            verify_standard_webhooks(&headers, body, &secrets, tolerance, 1_700_000_000),
            Err(Denied::MissingSignature)
        );
    }
}
