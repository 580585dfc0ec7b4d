//! One leader among the replicas on a database, for the background work that must run once:
//! payment polling, the dead-letter queue's re-drives, the alert evaluator, and recovering
//! deliveries recorded but never processed. Work that can be shared (sending, sweeping the
//! outbox, sending requests to pay) runs everywhere with `SKIP LOCKED`.
//!
//! Owns: the `leader` lease (through `store::leases`) and this replica's heartbeat (through
//! `store::replicas`). The lease lasts [`LEASE_SECS`] and is renewed every [`RENEW_EVERY`], so
//! a leader that dies is replaced within 40 seconds; a replica counts itself leader only for
//! [`TRUSTED_FOR`] after its last renewal, less than the lease, so two never both act as
//! leader. Must not know what the jobs do: they ask [`Leadership::is_leader`] each round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::reload::Reloader;
use crate::store::health::Health;

/// The lease's name in `leases`.
pub const LEASE: &str = "leader";
/// How long the lease lasts after a renewal.
pub const LEASE_SECS: f64 = 30.0;
/// How often the leader renews it, and every replica says it is alive.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long after a renewal a replica acts as leader: well inside the lease, so the next
/// leader (who waits for it to expire) never overlaps with this one.
const TRUSTED_FOR: Duration = Duration::from_secs(20);
/// Replicas silent for this long are no longer listed.
pub const LIVE_WITHIN_SECS: f64 = 30.0;
/// Heartbeats older than this are deleted.
const FORGET_AFTER_SECS: f64 = 600.0;

/// Whether this replica leads, as of its last renewal.
#[derive(Debug)]
pub struct Leadership {
    process: String,
    /// Until when this replica may act as leader.
    until: Mutex<Option<Instant>>,
    /// Stops the renewal loop, so a round in flight cannot take the lease back after
    /// [`Leadership::step_down`] let go of it.
    stop: tokio::sync::watch::Sender<bool>,
    rounds: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Leadership {
    /// A replica that does not lead (yet), with no renewal loop.
    pub fn new(process: String) -> Arc<Leadership> {
        Arc::new(Leadership {
            process,
            until: Mutex::new(None),
            stop: tokio::sync::watch::channel(false).0,
            rounds: Mutex::new(None),
        })
    }

    /// This replica's name, as leases and heartbeats know it.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// Whether to do the work only the leader does, now.
    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .map(|until| until.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }

    fn set(&self, until: Option<Instant>) {
        *self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// Takes or renews the lease, and says this replica is alive; logs a change of leader.
    async fn round(&self, pool: &PgPool, version: &str) {
        let was = self.is_leader();
        let asked = Instant::now();
        match crate::store::leases::hold_lease(pool, LEASE, &self.process, LEASE_SECS).await {
            Ok(true) => self.set(Some(asked + TRUSTED_FOR)),
            Ok(false) => self.set(None),
            Err(error) => {
                // Without an answer this replica may have lost the lease: it stops acting as
                // leader once its last renewal is too old (is_leader says so by itself).
                tracing::warn!(event = "leader.renew_failed", error = %error, "Could not renew the leader lease.");
            }
        }
        match (was, self.is_leader()) {
            (false, true) => {
                tracing::info!(event = "leader.elected", process = %self.process, "This replica leads the background work.")
            }
            (true, false) => {
                tracing::warn!(event = "leader.lost", process = %self.process, "This replica no longer leads the background work.")
            }
            _ => {}
        }
        if let Err(error) =
            crate::store::replicas::beat(pool, &self.process, version, FORGET_AFTER_SECS).await
        {
            tracing::debug!(event = "replica.heartbeat_failed", error = %error, "Could not record this replica's heartbeat.");
        }
    }

    /// Stops renewing, then lets go of the lease (if this replica holds it, trusted or not) and
    /// the heartbeat at shutdown, so another replica leads at once.
    pub async fn step_down(&self, pool: &PgPool) {
        let _ = self.stop.send(true);
        let rounds = self
            .rounds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rounds) = rounds {
            let _ = rounds.await;
        }
        self.set(None);
        if let Err(error) = crate::store::leases::release_lease(pool, LEASE, &self.process).await {
            tracing::warn!(event = "leader.release_failed", error = %error, "Could not let go of the leader lease; it expires by itself.");
        }
        let _ = crate::store::replicas::leave(pool, &self.process).await;
    }
}

/// Runs the lease and heartbeat rounds until the process ends; the first at once.
pub fn start(
    pool: PgPool,
    reloader: Arc<Reloader>,
    health: Arc<Health>,
    process: String,
) -> Arc<Leadership> {
    let leadership = Leadership::new(process);
    let running = leadership.clone();
    let mut stopped = leadership.stop.subscribe();
    let rounds = tokio::spawn(async move {
        let mut every = tokio::time::interval(RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stopped.changed() => return,
            }
            if !health.is_up() {
                continue;
            }
            let version = reloader.current().version.clone();
            running.round(&pool, &version).await;
        }
    });
    *leadership
        .rounds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rounds);
    leadership
}
