//! Sending: every outbox row leaves for the WhatsApp Cloud API, or is parked as dead with a
//! reason an operator can act on. Nothing stays pending without anyone knowing.
//!
//! Owns the outbound lifecycle: the in-memory handoff from the batch that committed rows
//! ([`Handoff`]), the dispatcher (per-recipient order, the number's throughput cap, retries,
//! pauses and probes: [`dispatcher`]), the call and the reading of Meta's answer ([`graph`]),
//! the sweeper that takes over what is left (after a crash, retries, rows from other
//! processes: [`sweeper`]), and the dead-letter queue ([`dlq`]). Must not know HTTP requests
//! coming in or run flows: it only reads rows the flows wrote.
//!
//! "Delivery" is Meta's word for an inbound webhook call and is not used here; what leaves is
//! a send, and one call is an attempt.
//!
//! # Unknown outcomes
//!
//! The Cloud API has no idempotency key. When a call times out, or the connection drops after
//! the request left, Meta may or may not have taken the message. The engine sends it again
//! (counted as an attempt, within the retry policy and `deliver_within`): in a conversation a
//! lost reply stalls the user, while a rare duplicate costs a second bubble. The attempts
//! table shows which rows had an unknown outcome (an attempt with no HTTP status), and a
//! status webhook for the first copy's wamid is still recorded in `message_statuses`.

pub mod dispatcher;
pub mod dlq;
pub mod graph;
pub mod pipeline;
pub mod shared;
pub mod sweeper;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::reload::Reloader;

/// An outbox row the sender holds: leased to this process, in memory until it is sent or dead.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The outbox row.
    pub id: i64,
    /// The `to` of the message.
    pub recipient: String,
    /// The business number it goes out from.
    pub phone_number_id: String,
    /// The Graph API request body as JSON text, serialized once: every attempt sends these
    /// bytes.
    pub body: Bytes,
    /// When the row was queued, for `deliver_within`.
    pub queued_at: Instant,
    /// Attempts made so far.
    pub attempts: u32,
    /// Set when the batch that wrote the row also recorded its first attempt as started (no
    /// earlier reply to the recipient was outstanding): it is called without a claim.
    pub first_attempt_recorded: bool,
}

/// Hands rows a batch just committed to the dispatcher, in memory: the hot path pays no query
/// for sending. Rows handed over are leased to this process when written; without a running
/// sender ([`Handoff::none`]) they are written unleased and a sweeper takes them.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    inner: Option<Arc<HandoffInner>>,
}

#[derive(Debug)]
struct HandoffInner {
    process: String,
    lease: Duration,
    rows: mpsc::UnboundedSender<Vec<Queued>>,
    /// Rows handed over and not yet finished, for the sweeper's backpressure.
    held: Arc<AtomicUsize>,
}

impl Handoff {
    /// No sender in this process (`easymo simulate`, or no `sending` configured).
    pub fn none() -> Self {
        Self::default()
    }

    /// The lease rows are written with: this process's name and how long it holds them; none
    /// once the dispatcher has stopped (rows are then left for any sweeper).
    pub fn lease(&self) -> Option<(&str, Duration)> {
        self.inner
            .as_ref()
            .filter(|inner| !inner.rows.is_closed())
            .map(|inner| (inner.process.as_str(), inner.lease))
    }

    /// True when the dispatcher has stopped: rows handed over would never be sent here.
    pub fn is_closed(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.rows.is_closed())
    }

    /// Hands committed rows to the dispatcher.
    pub fn hand(&self, rows: Vec<Queued>) {
        let Some(inner) = &self.inner else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        inner.held.fetch_add(rows.len(), Ordering::Relaxed);
        // A closed channel means the dispatcher stopped (shutdown): the rows keep their lease
        // and a sweeper takes them once it runs out.
        let _ = inner.rows.send(rows);
    }
}

/// How long rows are held per lease: three times the longest call, so that a live process
/// renews well before anyone may take over, and a dead one's rows are taken over soon.
pub fn lease_for(timeout: Duration) -> Duration {
    (timeout * 3).max(Duration::from_secs(3))
}

/// The lease's basis when the config sends from no number yet.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the dispatcher and the sweeper; the handoff goes to the inbound batcher. They idle
/// while no endpoint has `sending`, and start sending when a reload adds one.
pub fn start(
    pool: PgPool,
    reloader: Arc<Reloader>,
    metrics: Arc<crate::metrics::Metrics>,
    leadership: Arc<crate::leader::Leadership>,
) -> Result<Handoff, reqwest::Error> {
    let snapshot = reloader.current();
    let timeout = snapshot
        .config
        .sendings()
        .map(|s| s.timeout)
        .max()
        .unwrap_or(DEFAULT_TIMEOUT);
    if snapshot.config.sendings().next().is_none() {
        tracing::warn!(
            event = "sending.off",
            "No endpoint has `sending`: replies stay in the outbox until one does."
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(shared::MAX_CALLS)
        .build()?;
    let (rows, receiver) = mpsc::unbounded_channel();
    let held = Arc::new(AtomicUsize::new(0));
    // This process's name in `outbox.leased_by` and the attempts table.
    let process = crate::store::process_name();
    let lease = lease_for(timeout);
    let handoff = Handoff {
        inner: Some(Arc::new(HandoffInner {
            process: process.clone(),
            lease,
            rows,
            held: held.clone(),
        })),
    };
    let shared = shared::Shared {
        pool,
        reloader,
        http,
        process,
        lease,
        held,
        redrive: tokio::sync::Notify::new(),
        calls: tokio::sync::Semaphore::new(shared::MAX_CALLS),
        metrics,
        leadership,
    };
    let shared = Arc::new(shared);
    tokio::spawn(sweeper::run(shared.clone(), handoff.clone()));
    tokio::spawn(dispatcher::run(shared, receiver));
    tracing::info!(
        event = "sending.started",
        lease_ms = lease.as_millis() as u64,
        "Sending replies."
    );
    Ok(handoff)
}
