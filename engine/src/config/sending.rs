//! The sending side of a WhatsApp endpoint, compiled: where replies go, how fast, how often
//! a failure is retried, and how long a reply stays worth sending.
//!
//! Owns: the settings and the dead-letter reason vocabulary routes.yaml names in `redrive`.
//! Must not send anything ([`crate::outbound`] does).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::env::Secret;

/// How replies leave through one WhatsApp Cloud API number (or every number the endpoint's
/// messages come to).
#[derive(Debug, Clone)]
pub struct Sending {
    /// The endpoint it belongs to.
    pub endpoint: String,
    /// Bearer token for the Graph API.
    pub access_token: Secret,
    /// The number replies go out from; `None`: the number each message came to.
    pub phone_number_id: Option<String>,
    /// `https://graph.facebook.com`, without a trailing slash.
    pub base_url: String,
    /// `v25.0`.
    pub api_version: String,
    /// Longest time one call may take.
    pub timeout: Duration,
    /// Messages per second, per number.
    pub throughput: u32,
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first backoff, doubled after each failure.
    pub backoff: Duration,
    /// The longest backoff.
    pub backoff_ceiling: Duration,
    /// How long after it was queued a reply may still be sent.
    pub deliver_within: Duration,
    /// The first wait of a paused number or token before a probe.
    pub probe_after: Duration,
    /// Dead-letter reasons re-driven by the engine once sending works again.
    pub redrive: Vec<DeadReason>,
}

impl Sending {
    /// `POST` target for a message from `phone_number_id`.
    pub fn messages_url(&self, phone_number_id: &str) -> String {
        format!(
            "{}/{}/{}/messages",
            self.base_url, self.api_version, phone_number_id
        )
    }
}

/// Why an outbox row is dead: a class an operator (and `redrive`) can act on. The Meta error
/// code, when there is one, is kept beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Not sent within `deliver_within`: a late reply is worse than none.
    Expired,
    /// 131047: the customer-service window closed; only a template message may be sent.
    WindowClosed,
    /// Meta refused the message for good (invalid recipient, bad parameters, 132xxx, ...).
    Rejected,
    /// Passing failures (throughput, 5xx, timeouts) outlasted the retry policy.
    RetriesExhausted,
    /// The number was restricted or blocked (131048, 368, 133010, 4, 80007): sending from it
    /// paused until a probe succeeded.
    Paused,
    /// The access token was expired or lacked permission (190, 10, 200-299).
    Unauthorized,
    /// Accepted by the Cloud API, then reported `failed` by a status webhook.
    Failed,
}

impl DeadReason {
    /// Every reason, in the order `easymo dlq stats` lists them.
    pub const ALL: [DeadReason; 7] = [
        Self::Expired,
        Self::WindowClosed,
        Self::Rejected,
        Self::RetriesExhausted,
        Self::Paused,
        Self::Unauthorized,
        Self::Failed,
    ];

    /// The name stored in `outbox.dead_reason` and written in routes.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::WindowClosed => "window_closed",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Paused => "paused",
            Self::Unauthorized => "unauthorized",
            Self::Failed => "failed",
        }
    }

    /// The reason named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}
