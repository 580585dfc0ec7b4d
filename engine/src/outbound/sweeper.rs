//! The sweeper: takes over what no live process holds, and re-drives dead rows routes.yaml
//! marks as re-drivable.
//!
//! Owns: the periodic claim with `FOR UPDATE SKIP LOCKED` (rows left after a crash, rows whose
//! holder died mid-call, rows other processes wrote without a sender), backpressure against
//! the dispatcher's backlog, and the dead-letter processor. Must not send: it hands rows to
//! the dispatcher like a committed batch does.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use super::{Handoff, Queued};
use crate::config::Config;
use crate::store::outbox::{self as store, Numbers};

/// How often the table is swept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often dead rows are considered for a re-drive (and at once after a resume).
const REDRIVE_EVERY: Duration = Duration::from_secs(30);
/// Rows held in memory before the sweeper stops taking more (a paused number's backlog stays
/// in the table instead).
const MAX_HELD: usize = 20_000;
/// Rows taken per sweep.
const SWEEP_LIMIT: usize = 1_000;
/// Re-drives of one row at most: a reason that keeps coming back needs a person.
const MAX_REDRIVES: i32 = 3;
/// Rows re-driven per pass, so that a large queue drains at the pace of the sends.
const REDRIVE_LIMIT: i64 = 500;

/// Runs for the life of the process.
pub async fn run(shared: Arc<Shared>, handoff: Handoff) {
    let mut last_redrive = Instant::now();
    let mut full = false;
    loop {
        let mut sending_resumed = false;
        // A full sweep means more is waiting (a backlog after a crash, a bulk retry): take
        // the next batch at once.
        if !full {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = shared.redrive.notified() => {
                    last_redrive = Instant::now() - REDRIVE_EVERY;
                    sending_resumed = true;
                }
            }
        }
        full = false;
        if handoff.is_closed() {
            // Taking rows for a dispatcher that is gone would hold them here for ever; left
            // alone, their leases run out and another process sends them.
            tracing::error!(
                event = "sending.stopped",
                "The dispatcher stopped: this process no longer sends or sweeps."
            );
            return;
        }
        let snapshot = shared.reloader.current();
        let Some(numbers) = numbers(&snapshot.config) else {
            continue;
        };
        // The periodic re-drive is the leader's; the one that follows a pause lifted here runs
        // here at once (re-driving a row twice is harmless: the second finds it pending).
        if last_redrive.elapsed() >= REDRIVE_EVERY {
            last_redrive = Instant::now();
            if sending_resumed || shared.leadership.is_leader() {
                redrive(&shared, &snapshot.config).await;
            }
        }
        let held = shared.held.load(Ordering::Relaxed);
        let room = MAX_HELD.saturating_sub(held).min(SWEEP_LIMIT);
        if room == 0 {
            continue;
        }
        match store::sweep(
            &shared.pool,
            &shared.process,
            shared.lease,
            &numbers,
            room as i64,
        )
        .await
        {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => {
                full = rows.len() == room;
                let now = Instant::now();
                tracing::info!(
                    event = "sending.swept",
                    rows = rows.len(),
                    "Took over replies no live process held."
                );
                handoff.hand(
                    rows.into_iter()
                        .map(|row| Queued {
                            id: row.id,
                            recipient: row.recipient,
                            phone_number_id: row.phone_number_id,
                            body: row.body.into(),
                            queued_at: now
                                .checked_sub(Duration::from_secs_f64(row.age_secs.max(0.0)))
                                .unwrap_or(now),
                            attempts: u32::try_from(row.attempts).unwrap_or(0),
                            first_attempt_recorded: false,
                        })
                        .collect(),
                );
            }
            Err(error) => {
                tracing::warn!(event = "sending.sweep_failed", error = %error, "Could not sweep the outbox.");
            }
        }
    }
}

/// The numbers the live config sends from, or `None` when it sends from none.
pub fn numbers(config: &Config) -> Option<Numbers> {
    let mut numbers = Numbers::default();
    let mut any_section = false;
    for sending in config.sendings() {
        any_section = true;
        match &sending.phone_number_id {
            Some(number) => numbers.named.push(number.clone()),
            None => numbers.any = true,
        }
    }
    any_section.then_some(numbers)
}

/// Re-queues dead rows each sending section marks as re-drivable, within its
/// `deliver_within`. A row re-driven while its number is still paused waits in the
/// dispatcher like any other, so this never sends into a known failure.
async fn redrive(shared: &Shared, config: &Config) {
    let mut any_named: BTreeSet<String> = BTreeSet::new();
    for sending in config.sendings() {
        if let Some(number) = &sending.phone_number_id {
            any_named.insert(number.clone());
        }
    }
    for sending in config.sendings() {
        if sending.redrive.is_empty() {
            continue;
        }
        let reasons: Vec<&str> = sending.redrive.iter().map(|r| r.as_str()).collect();
        let numbers = match &sending.phone_number_id {
            Some(number) => Numbers {
                named: vec![number.clone()],
                any: false,
            },
            // The catch-all section re-drives every number but those a section names: theirs
            // follow their own section's rules. Rows of named numbers are excluded by listing
            // none and flagging any, so they are filtered here instead.
            None if any_named.is_empty() => Numbers {
                named: Vec::new(),
                any: true,
            },
            None => continue,
        };
        match store::redrive(
            &shared.pool,
            &reasons,
            &numbers,
            sending.deliver_within,
            MAX_REDRIVES,
            REDRIVE_LIMIT,
        )
        .await
        {
            Ok(0) => {}
            Ok(count) => {
                tracing::info!(event = "dlq.redriven", endpoint = %sending.endpoint, rows = count, "Re-drove dead replies.");
            }
            Err(error) => {
                tracing::warn!(event = "dlq.redrive_failed", error = %error, "Could not re-drive dead replies.");
            }
        }
    }
}
