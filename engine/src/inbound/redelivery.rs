//! Redelivery: deliveries recorded but not processed (the database failed mid-batch, the
//! process stopped in between) are processed again by the running engine, one process at a
//! time, with backoff, until processed or declared poison. No restart is ever needed, and a
//! message is answered while it is still fresh.
//!
//! Owns: when a recorded delivery is tried again, by whom (the leader, see `crate::leader`),
//! and when it is given up as poison. Must not know HTTP, nor process a message itself:
//! [`super::process`] does.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::process;
use crate::outbound::Handoff;
use crate::payments::Wake;
use crate::reload::Reloader;
use crate::store::deliveries::{self as store, Unprocessed};
use crate::store::health::{self, Health};
use crate::whatsapp::Envelope;

/// How often the leaseholder looks for due deliveries.
const EVERY: Duration = Duration::from_secs(2);
/// How long after recording a delivery is left to the request that recorded it.
const GRACE_SECS: f64 = 5.0;
/// Deliveries taken per round.
const BATCH: i64 = 100;
/// Attempts (failures not caused by an unreachable database) before a delivery is poison.
const MAX_ATTEMPTS: i32 = 8;
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: f64 = 300.0;

/// What redelivery needs from the server.
#[derive(Debug, Clone)]
pub struct Redelivery {
    /// The database.
    pub pool: PgPool,
    /// The config that serves now (a delivery is processed with it, not the one it came in on).
    pub reloader: Arc<Reloader>,
    /// Told when requests to pay were committed.
    pub payments: Wake,
    /// Where replies go.
    pub handoff: Handoff,
    /// Whether the database is reachable; rounds are skipped while it is not.
    pub health: Arc<Health>,
    /// Only the leader redelivers (see `crate::leader`).
    pub leadership: Arc<crate::leader::Leadership>,
}

impl Redelivery {
    /// Runs rounds until the process ends; the first at once (what a previous run left).
    pub async fn run(self) {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.health.is_up() && self.leadership.is_leader() {
                self.round().await;
            }
        }
    }

    async fn round(&self) {
        let due = match store::due_deliveries(&self.pool, BATCH, GRACE_SECS).await {
            Ok(due) => due,
            Err(error) => {
                self.health.report(&error);
                tracing::error!(event = "delivery.redelivery_failed", error = %error, "Could not read the deliveries due for another attempt.");
                return;
            }
        };
        if !due.is_empty() {
            tracing::info!(
                event = "delivery.redelivering",
                count = due.len(),
                "Processing deliveries recorded but not processed."
            );
        }
        for pending in due {
            if !self.attempt(pending).await {
                // The database went away: the rest wait for the next round.
                return;
            }
        }
    }

    /// One attempt at one delivery; `false` when the database could not be reached.
    async fn attempt(&self, pending: Unprocessed) -> bool {
        let id = pending.id;
        let snapshot = self.reloader.current();
        let Some(endpoint) = snapshot
            .config
            .endpoints
            .iter()
            .find(|e| e.name == pending.endpoint)
        else {
            return self
                .poison(
                    id,
                    &format!("endpoint {} is no longer configured", pending.endpoint),
                )
                .await;
        };
        let envelope: Envelope = match serde_json::from_slice(&pending.body) {
            Ok(envelope) => envelope,
            Err(error) => {
                return self
                    .poison(id, &format!("the body does not parse: {error}"))
                    .await
            }
        };
        let request_id = format!("redelivery-{id}");
        let processed = process::delivery(
            &self.pool,
            (&snapshot.config, &snapshot.caches),
            endpoint,
            (id, &pending.body),
            &envelope,
            &request_id,
            &self.handoff,
        )
        .await;
        match processed {
            Ok(summary) => {
                if summary.payments_requested > 0 {
                    self.payments.requests_committed();
                }
                let closed = match summary.poison() {
                    Some(reason) => store::mark_poison(&self.pool, id, &reason).await,
                    None => store::finish_delivery(&self.pool, id, None).await,
                };
                tracing::info!(
                    event = "delivery.redelivered",
                    delivery_id = id,
                    attempts = pending.attempts + 1,
                    "A delivery recorded earlier was processed."
                );
                closed.is_ok()
            }
            Err(error) if health::is_unreachable(&error) => {
                self.health.report(&error);
                false
            }
            Err(error) if crate::store::is_data_error(&error) => {
                self.poison(id, &format!("Postgres refuses its data: {error}"))
                    .await
            }
            Err(error) => self.retry_later(&pending, &error.to_string()).await,
        }
    }

    async fn retry_later(&self, pending: &Unprocessed, error: &str) -> bool {
        let attempts = pending.attempts.saturating_add(1);
        if attempts >= MAX_ATTEMPTS {
            return self
                .poison(
                    pending.id,
                    &format!("gave up after {attempts} attempts: {error}"),
                )
                .await;
        }
        tracing::warn!(event = "delivery.redelivery_failed", delivery_id = pending.id, attempts, error = %error, "A recorded delivery failed again; it will be retried.");
        store::retry_later(&self.pool, pending.id, attempts, backoff(attempts), error)
            .await
            .is_ok()
    }

    async fn poison(&self, id: i64, reason: &str) -> bool {
        tracing::warn!(event = "delivery.poison", delivery_id = id, reason = %reason, "Delivery kept as poison: it can never be processed.");
        store::mark_poison(&self.pool, id, reason).await.is_ok()
    }
}

/// Seconds before attempt `attempts + 1`: doubling from 2 s, at most five minutes, with up to a
/// quarter more at random so that many failures do not come due together.
fn backoff(attempts: i32) -> f64 {
    let base = 2f64.powi(attempts.clamp(1, 16)).min(MAX_BACKOFF_SECS);
    // A fresh UUID's random bits: jitter needs no better randomness.
    let fraction = (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1_u64 << 53) as f64;
    base * (1.0 + fraction / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes_with_some_jitter() {
        for (attempts, base) in [(1, 2.0), (2, 4.0), (5, 32.0), (9, 300.0), (30, 300.0)] {
            let wait = backoff(attempts);
            assert!(
                (base..=base * 1.25).contains(&wait),
                "attempt {attempts}: {wait}"
            );
        }
    }
}
