//! What the dispatcher, its pipeline and the sweeper share: the handles they hold and the
//! words they use for what became of a row.
//!
//! Owns no behaviour. Must not depend on its siblings: they depend on it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::Queued;
use crate::reload::Reloader;

/// What the dispatcher and its pipeline share.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub pool: PgPool,
    /// The live config.
    pub reloader: Arc<Reloader>,
    /// Connections to the Graph API.
    pub http: reqwest::Client,
    /// This process's name in leases.
    pub process: String,
    /// How long a lease holds.
    pub lease: Duration,
    /// Rows held in memory, for the sweeper's backpressure.
    pub held: Arc<AtomicUsize>,
    /// Wakes the re-drive of dead rows when sending works again.
    pub redrive: tokio::sync::Notify,
    /// Calls in flight at once: each one holds a kept-alive connection.
    pub calls: tokio::sync::Semaphore,
    /// Sends, their durations and the paused numbers, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The periodic re-drive of dead rows is the leader's (see `crate::leader`).
    pub leadership: Arc<crate::leader::Leadership>,
}

/// Calls to the Graph API in flight at once. Enough to keep a number at Meta's highest pace
/// (1,000 a second at up to ~100 ms a call); more would only open connections.
pub const MAX_CALLS: usize = 128;

/// What is paused: a number, or every number a token sends from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PauseKey {
    /// A business number.
    Number(String),
    /// The sending section (by endpoint), whose token failed.
    Token(String),
}

/// Rows whose turn ended (sent, dead, to retry, or not claimed), each with the endpoint whose
/// `sending` it went out under.
pub type Ended = Vec<(Queued, String, After)>;

/// What became of a row the dispatcher gave to the pipeline.
#[derive(Debug)]
pub enum After {
    /// Sent or dead: the recipient's next row may go.
    Finished,
    /// To be sent again after this instant; still held.
    Retry(Instant),
    /// Not claimed (an earlier row of the recipient is outstanding elsewhere, or the row was
    /// taken over): forgotten here, a sweeper brings it back in order.
    Dropped,
    /// Accepted: a probe succeeded, so its pauses (if any) end.
    Resumed,
    /// The number or token must wait.
    Paused(PauseKey, Option<String>, Duration),
}
