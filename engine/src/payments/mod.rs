//! Payments: money that moves through MTN MoMo, and what the engine believes about it.
//!
//! Comes in: forwarded MoMo SMS and MoMo callbacks (from the gateway), and requests to pay
//! (from flows, in the message's transaction). Goes out: requests to pay and status checks to
//! the MoMo Open API, and notification replies to the outbox when a payment settles.
//!
//! Tables: `sms_messages`, `momo_sms_transactions`, `momo_callbacks`, `momo_payments` (through
//! [`crate::store::payments`]).
//!
//! # Layout
//! - [`sms`]: reading a forwarded text (no database).
//! - [`credits`]: whether a forwarded SMS credits, recorded once per transaction id.
//! - [`callbacks`]: MoMo callbacks, confirmed with MoMo before anything settles; polling.
//! - [`requests`]: requests to pay, recorded by flows and sent after commit.
//! - [`workers`]: the send and poll loops, woken by a [`Wake`].
//! - [`momo`]: the MoMo Open API client.
//!
//! Must not know HTTP (the gateway maps outcomes to statuses) or run flows.

pub mod callbacks;
pub mod credits;
pub mod momo;
pub mod requests;
pub mod sms;
pub mod workers;

use std::sync::Arc;

use tokio::sync::Notify;

pub use callbacks::{intake_callback, poll_overdue, Callback, CallbackOutcome};
pub use credits::{describe, intake_sms, keep_dropped_sms, SmsIntake, SmsOutcome};
pub use requests::{request, send_requests, Ask, RequestError, RequestOutcome};

/// Wakes the request sender when a transaction that recorded requests to pay has committed,
/// so they go out at once instead of at the next check.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Says that requests to pay were committed.
    pub fn requests_committed(&self) {
        self.0.notify_one();
    }

    /// Resolves once requests to pay were committed (or at once, if that was said meanwhile).
    async fn requests_recorded(&self) {
        self.0.notified().await;
    }
}

/// Connections to the MoMo API and its access tokens, shared by every request and worker; a
/// client for the live account is made from them when needed.
#[derive(Debug, Clone)]
pub struct Connection {
    http: reqwest::Client,
    tokens: momo::Tokens,
}

impl Connection {
    /// A connection pool with no tokens yet.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Connection {
            http: reqwest::Client::builder().build()?,
            tokens: momo::Tokens::default(),
        })
    }

    /// A client for `account`.
    pub fn client(&self, account: crate::config::Momo) -> momo::Client {
        momo::Client::new(self.http.clone(), account, self.tokens.clone())
    }
}
