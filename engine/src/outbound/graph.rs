//! One call to the WhatsApp Cloud API's `/{phone-number-id}/messages`, and what its answer
//! means for the row.
//!
//! Owns: the request (path, bearer token, body as stored), reading Meta's answer, and the
//! classification by `error.code` (Meta deprecated `error_subcode` for this), never by HTTP
//! status alone. Must not touch the database: [`super::dispatcher`] records what it decides.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::config::DeadReason;

/// What one call came back with.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status, when an answer arrived.
    pub http_status: Option<u16>,
    /// The wamid of an accepted message.
    pub wamid: Option<String>,
    /// Meta's `error.code`.
    pub code: Option<i64>,
    /// A short description of the failure, for `last_error` and the attempts table.
    pub error: Option<String>,
    /// How long the call took.
    pub latency: Duration,
    /// True when the request may have reached Meta without an answer coming back (a timeout
    /// or a connection lost after sending): the outcome is unknown.
    pub unknown_outcome: bool,
}

/// What to do with a row after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: the wamid is stored and status webhooks move the row on.
    Sent,
    /// A passing failure: try again after the backoff.
    Retry,
    /// 131056: too many messages to this one recipient; only it waits.
    RecipientLimited,
    /// The number is restricted: the row is dead as `paused` and its number waits.
    PauseNumber,
    /// The token is expired or lacks permission: the row is dead as `unauthorized` and every
    /// number of the sending section waits.
    PauseToken,
    /// Refused for good.
    Dead(DeadReason),
}

/// Error codes that mean "try again later", for everyone (Meta's throughput and temporary
/// errors, and the generic `1`/`2` API errors).
const TRANSIENT: &[i64] = &[130429, 131000, 1, 2];
/// Codes that stop a number: spam rate limit, temporarily blocked, not registered, account
/// locked, and the app- and account-level rate limits.
const PAUSE_NUMBER: &[i64] = &[131048, 368, 133010, 131031, 4, 80007];
/// Codes about the token: expired or invalid, or a permission it lacks.
const PAUSE_TOKEN: &[i64] = &[0, 190, 10, 3];

/// Meta's error code by class, for metrics (a bounded label, unlike the code itself).
pub fn code_class(code: Option<i64>) -> &'static str {
    match code {
        None => "none",
        Some(130429) => "throughput",
        Some(131056) => "pair_rate",
        Some(131047) => "window",
        Some(c) if TRANSIENT.contains(&c) => "temporary",
        Some(c) if PAUSE_NUMBER.contains(&c) => "account",
        Some(c) if PAUSE_TOKEN.contains(&c) || (200..300).contains(&c) => "auth",
        Some(_) => "request",
    }
}

/// Classifies an answer by Meta's error code first, then by what the transport said.
pub fn classify(answer: &Answer) -> Verdict {
    if answer.wamid.is_some() {
        return Verdict::Sent;
    }
    let Some(code) = answer.code else {
        return match answer.http_status {
            // No Graph error body: a proxy, a timeout, a dropped connection or a 5xx.
            None => Verdict::Retry,
            Some(status) if status >= 500 || status == 429 || status == 408 => Verdict::Retry,
            Some(401) => Verdict::PauseToken,
            // A 2xx without a message id, or a bare 4xx: Meta will not take it as it is.
            Some(_) => Verdict::Dead(DeadReason::Rejected),
        };
    };
    match code {
        131056 => Verdict::RecipientLimited,
        131047 => Verdict::Dead(DeadReason::WindowClosed),
        c if TRANSIENT.contains(&c) => Verdict::Retry,
        c if PAUSE_NUMBER.contains(&c) => Verdict::PauseNumber,
        c if PAUSE_TOKEN.contains(&c) || (200..300).contains(&c) => Verdict::PauseToken,
        // An error code on a 5xx Meta did not document as permanent: passing.
        _ if answer.http_status.is_some_and(|s| s >= 500) => Verdict::Retry,
        // 131026, 131049, 131051, 131008, 131009, 100, 132xxx and anything else Meta calls
        // an error in the request: sending it again cannot help.
        _ => Verdict::Dead(DeadReason::Rejected),
    }
}

/// Sends `body` to `url` with `token`; never fails: every failure is an [`Answer`].
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Bytes,
    timeout: Duration,
) -> Answer {
    let started = Instant::now();
    let result = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .timeout(timeout)
        .send()
        .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            // A request that failed before it was sent (refused, DNS) cannot have reached
            // Meta; a timeout or a reset after sending may have.
            let unknown_outcome = !error.is_connect() && !error.is_builder();
            return Answer {
                http_status: None,
                wamid: None,
                code: None,
                error: Some(describe_transport(&error)),
                latency: started.elapsed(),
                unknown_outcome,
            };
        }
    };
    let status = response.status().as_u16();
    let read =
        tokio::time::timeout(timeout.saturating_sub(started.elapsed()), response.bytes()).await;
    let latency = started.elapsed();
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            return Answer {
                http_status: Some(status),
                wamid: None,
                code: None,
                error: Some(describe_transport(&error)),
                latency,
                unknown_outcome: (200..300).contains(&status),
            }
        }
        Err(_) => {
            return Answer {
                http_status: Some(status),
                wamid: None,
                code: None,
                error: Some("timed out reading the answer".to_owned()),
                latency,
                unknown_outcome: (200..300).contains(&status),
            }
        }
    };
    read_answer(status, &bytes, latency)
}

/// Reads a Graph API answer body.
pub fn read_answer(status: u16, bytes: &[u8], latency: Duration) -> Answer {
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    let wamid = json
        .as_ref()
        .filter(|_| (200..300).contains(&status))
        .and_then(|j| j["messages"][0]["id"].as_str())
        .map(str::to_owned);
    let error = json.as_ref().map(|j| &j["error"]).filter(|e| e.is_object());
    let code = error.and_then(|e| e["code"].as_i64());
    let description = match (error, &wamid) {
        (_, Some(_)) => None,
        (Some(e), None) => Some(format!(
            "{} {}: {}",
            status,
            code.map(|c| c.to_string()).unwrap_or_default(),
            e["error_data"]["details"]
                .as_str()
                .or_else(|| e["message"].as_str())
                .unwrap_or("no message")
        )),
        (None, None) => Some(format!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )),
    };
    Answer {
        http_status: Some(status),
        wamid,
        code,
        error: description,
        latency,
        unknown_outcome: false,
    }
}

fn describe_transport(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        // reqwest's Display names the URL, never the token.
        format!("transport error: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        read_answer(status, body.as_bytes(), Duration::ZERO)
    }

    fn error(status: u16, code: i64) -> Verdict {
        classify(&answer(
            status,
            &format!(
                r#"{{"error":{{"message":"m","type":"OAuthException","code":{code},"fbtrace_id":"x"}}}}"#
            ),
        ))
    }

    #[test]
    fn an_accepted_message_gives_its_wamid() {
        let a = answer(
            200,
            r#"{"messaging_product":"whatsapp","contacts":[{"input":"250788","wa_id":"250788"}],"messages":[{"id":"wamid.ABC"}]}"#,
        );
        assert_eq!(a.wamid.as_deref(), Some("wamid.ABC"));
        assert_eq!(classify(&a), Verdict::Sent);
    }

    #[test]
    fn errors_are_classified_by_code_not_status() {
        assert_eq!(error(400, 130429), Verdict::Retry);
        assert_eq!(error(500, 131000), Verdict::Retry);
        assert_eq!(error(400, 1), Verdict::Retry);
        assert_eq!(error(400, 2), Verdict::Retry);
        assert_eq!(error(400, 131056), Verdict::RecipientLimited);
        assert_eq!(error(400, 131048), Verdict::PauseNumber);
        assert_eq!(error(400, 368), Verdict::PauseNumber);
        assert_eq!(error(400, 133010), Verdict::PauseNumber);
        assert_eq!(error(400, 4), Verdict::PauseNumber);
        assert_eq!(error(400, 80007), Verdict::PauseNumber);
        assert_eq!(error(401, 190), Verdict::PauseToken);
        assert_eq!(error(403, 200), Verdict::PauseToken);
        assert_eq!(error(400, 10), Verdict::PauseToken);
        for permanent in [131026, 131049, 131051, 131008, 131009, 100, 132000, 132012] {
            assert_eq!(
                error(400, permanent),
                Verdict::Dead(DeadReason::Rejected),
                "{permanent}"
            );
        }
        assert_eq!(error(400, 131047), Verdict::Dead(DeadReason::WindowClosed));
    }

    #[test]
    fn answers_without_a_graph_error_fall_back_to_the_status() {
        assert_eq!(
            classify(&answer(502, "<html>bad gateway</html>")),
            Verdict::Retry
        );
        assert_eq!(classify(&answer(429, "")), Verdict::Retry);
        assert_eq!(classify(&answer(401, "")), Verdict::PauseToken);
        assert_eq!(
            classify(&answer(200, "{}")),
            Verdict::Dead(DeadReason::Rejected)
        );
        let lost = Answer {
            http_status: None,
            wamid: None,
            code: None,
            error: Some("timed out".into()),
            latency: Duration::ZERO,
            unknown_outcome: true,
        };
        assert_eq!(classify(&lost), Verdict::Retry);
    }

    #[test]
    fn the_error_description_prefers_metas_details() {
        let a = answer(
            400,
            r#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"fbtrace_id":"x"}}"#,
        );
        assert_eq!(a.code, Some(131047));
        assert!(
            a.error
                .as_deref()
                .unwrap_or_default()
                .contains("more than 24 hours"),
            "{:?}",
            a.error
        );
    }
}
