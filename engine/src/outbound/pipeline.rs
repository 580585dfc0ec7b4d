//! The pipeline a row goes through once the dispatcher lets it go: claim, call, record.
//!
//! Owns: batching the database work the way a group commit does (one claim statement and one
//! result statement in flight at a time, each carrying whatever arrived while the previous one
//! ran, so statements per second stay flat as the load grows), the call itself under the
//! semaphore of calls in flight, and what an answer means for the row (backoff, expiry,
//! pauses). Must not choose what is sent next: the dispatcher does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::graph::{self, Verdict};
use super::shared::{After, Ended, PauseKey, Shared};
use super::Queued;
use crate::config::{DeadReason, Sending};
use crate::logging::mask;
use crate::store::outbox::{self as store, Mark, Next};

/// Meta allows roughly one message every six seconds to one user before 131056.
const PAIR_WAIT: Duration = Duration::from_secs(6);
/// How long the first result of a batch waits for others before they are recorded together.
const RECORD_LINGER: Duration = Duration::from_millis(5);

/// A row whose call came back.
struct Called {
    row: Queued,
    sending: Sending,
    answer: graph::Answer,
    /// Seconds since the Unix epoch when the call started.
    at: f64,
}

/// Starts the claimer and the recorder; returns where the dispatcher sends rows to claim.
/// Every row given ends up in `ended`, whatever happens to it.
pub(super) fn start(
    shared: Arc<Shared>,
    ended: mpsc::UnboundedSender<Ended>,
) -> mpsc::UnboundedSender<Vec<(Queued, Sending)>> {
    let (claims, claim_rx) = mpsc::unbounded_channel();
    let (called, called_rx) = mpsc::unbounded_channel();
    tokio::spawn(claimer(shared.clone(), claim_rx, called, ended.clone()));
    tokio::spawn(recorder(shared, called_rx, ended));
    claims
}

/// Claims rows in batches and starts a call for each claimed one.
async fn claimer(
    shared: Arc<Shared>,
    mut rows: mpsc::UnboundedReceiver<Vec<(Queued, Sending)>>,
    called: mpsc::UnboundedSender<Called>,
    ended: mpsc::UnboundedSender<Ended>,
) {
    while let Some(mut batch) = rows.recv().await {
        while let Ok(more) = rows.try_recv() {
            batch.extend(more);
        }
        // Rows whose first attempt the inbound batch recorded go straight to their call.
        let (recorded, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(row, _)| row.first_attempt_recorded);
        for (mut row, sending) in recorded {
            row.attempts = 1;
            tokio::spawn(call(shared.clone(), row, sending, called.clone()));
        }
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<i64> = batch.iter().map(|(row, _)| row.id).collect();
        let claimed = match store::claim(&shared.pool, &shared.process, &ids).await {
            Ok(claimed) => claimed.into_iter().collect::<HashMap<i64, i32>>(),
            Err(error) => {
                tracing::warn!(event = "sending.claim_failed", error = %error, "Could not claim replies; trying again shortly.");
                let again = Instant::now() + Duration::from_secs(1);
                let _ = ended.send(
                    batch
                        .into_iter()
                        .map(|(row, sending)| (row, sending.endpoint, After::Retry(again)))
                        .collect(),
                );
                continue;
            }
        };
        let mut dropped = Vec::new();
        for (mut row, sending) in batch {
            let Some(attempt) = claimed.get(&row.id) else {
                dropped.push((row, sending.endpoint, After::Dropped));
                continue;
            };
            row.attempts = u32::try_from(*attempt).unwrap_or(u32::MAX);
            tokio::spawn(call(shared.clone(), row, sending, called.clone()));
        }
        if !dropped.is_empty() {
            let _ = ended.send(dropped);
        }
    }
}

async fn call(
    shared: Arc<Shared>,
    row: Queued,
    sending: Sending,
    called: mpsc::UnboundedSender<Called>,
) {
    let token = sending.access_token.value.clone().unwrap_or_default();
    let url = sending.messages_url(&row.phone_number_id);
    // A closed semaphore cannot happen (it lives as long as `shared`); sending without a
    // permit would still be correct.
    let permit = shared.calls.acquire().await.ok();
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let answer = graph::send(&shared.http, &url, &token, &row.body, sending.timeout).await;
    drop(permit);
    let _ = called.send(Called {
        row,
        sending,
        answer,
        at,
    });
}

/// Records answers in batches, then tells the dispatcher.
async fn recorder(
    shared: Arc<Shared>,
    mut called: mpsc::UnboundedReceiver<Called>,
    ended: mpsc::UnboundedSender<Ended>,
) {
    while let Some(first) = called.recv().await {
        // Results wait a moment for company: a send is not delayed by this, only its record,
        // and each statement then carries many rows.
        tokio::time::sleep(RECORD_LINGER).await;
        let mut batch = vec![first];
        while let Ok(more) = called.try_recv() {
            batch.push(more);
        }
        let now = Instant::now();
        let mut marks = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for Called {
            row,
            sending,
            answer,
            at,
        } in batch
        {
            let (next, after) = decide(&row, &sending, &answer, now);
            log_answer(&row, &answer, &next);
            count_send(&shared.metrics, &answer, &next);
            marks.push(Mark {
                id: row.id,
                next,
                attempt: i32::try_from(row.attempts).ok(),
                http_status: answer.http_status.map(i32::from),
                code: answer.code.and_then(|c| i32::try_from(c).ok()),
                error: answer.error.clone(),
                latency_ms: i32::try_from(answer.latency.as_millis()).ok(),
                called_at: Some(at),
            });
            rows.push((row, sending.endpoint, after));
        }
        if let Err(error) = store::mark(&shared.pool, &shared.process, shared.lease, &marks).await {
            // The calls happened; only their record failed. The rows stay pending under this
            // lease, which runs out, and a sweeper sends them again: a duplicate, not a loss.
            tracing::error!(event = "sending.mark_failed", error = %error, rows = marks.len(), "Could not record sent replies.");
            rows = rows
                .into_iter()
                .map(|(row, endpoint, _)| (row, endpoint, After::Dropped))
                .collect();
        }
        let _ = ended.send(rows);
    }
}

fn count_send(metrics: &crate::metrics::Metrics, answer: &graph::Answer, next: &Next) {
    if !metrics.enabled {
        return;
    }
    let outcome = match next {
        Next::Sent(_) => "sent",
        Next::Retry(_) => "retry",
        Next::Dead(_) => "dead",
    };
    metrics
        .sends
        .get_or_create(&crate::metrics::SendLabels {
            outcome: outcome.to_owned(),
            code_class: graph::code_class(answer.code).to_owned(),
        })
        .inc();
    metrics.send_seconds.observe(answer.latency.as_secs_f64());
}

/// Rows that expired before a call, and rows no `sending` section covers any more.
pub(super) async fn settle_unsent(
    shared: Arc<Shared>,
    expired: Vec<Queued>,
    unsendable: Vec<Queued>,
) {
    let marks: Vec<Mark> = expired
        .iter()
        .map(|row| Mark {
            id: row.id,
            next: Next::Dead(DeadReason::Expired.as_str()),
            // A first attempt recorded at commit ends here, never made.
            attempt: row.first_attempt_recorded.then_some(1),
            http_status: None,
            code: None,
            error: Some("not sent within deliver_within".to_owned()),
            latency_ms: None,
            called_at: None,
        })
        .collect();
    for row in &expired {
        tracing::warn!(event = "sending.expired", outbox_id = row.id, recipient = %mask(&row.recipient), "A reply expired before it could be sent.");
    }
    if let Err(error) = store::mark(&shared.pool, &shared.process, shared.lease, &marks).await {
        tracing::warn!(event = "sending.mark_failed", error = %error, "Could not record expired replies; their leases run out and a sweeper retries.");
    }
    let ids: Vec<i64> = unsendable.iter().map(|row| row.id).collect();
    if !ids.is_empty() {
        if let Err(error) = store::release(&shared.pool, &shared.process, &ids).await {
            tracing::warn!(event = "sending.release_failed", error = %error, "Could not release replies no sending section covers.");
        }
    }
}

/// What an answer means for the row and for the dispatcher.
fn decide(row: &Queued, sending: &Sending, answer: &graph::Answer, now: Instant) -> (Next, After) {
    let deadline = row.queued_at + sending.deliver_within;
    let retry_after = |wait: Duration| {
        if now + wait >= deadline {
            (Next::Dead(DeadReason::Expired.as_str()), After::Finished)
        } else {
            (Next::Retry(wait), After::Retry(now + wait))
        }
    };
    let number = PauseKey::Number(row.phone_number_id.clone());
    match graph::classify(answer) {
        Verdict::Sent => (
            Next::Sent(answer.wamid.clone().unwrap_or_default()),
            After::Resumed,
        ),
        Verdict::Retry if row.attempts >= sending.attempts => (
            Next::Dead(DeadReason::RetriesExhausted.as_str()),
            After::Finished,
        ),
        Verdict::Retry => retry_after(backoff(sending, row.attempts)),
        Verdict::RecipientLimited => retry_after(backoff(sending, row.attempts).max(PAIR_WAIT)),
        Verdict::PauseNumber => (
            Next::Dead(DeadReason::Paused.as_str()),
            After::Paused(number, None, sending.probe_after),
        ),
        Verdict::PauseToken => (
            Next::Dead(DeadReason::Unauthorized.as_str()),
            After::Paused(
                PauseKey::Token(sending.endpoint.clone()),
                sending.access_token.value.clone(),
                sending.probe_after,
            ),
        ),
        Verdict::Dead(reason) => (Next::Dead(reason.as_str()), After::Finished),
    }
}

/// Exponential backoff with full jitter: a random wait up to `backoff × 2^(attempt-1)`, capped,
/// and never under half of it, so retries neither stampede nor come at once.
pub fn backoff(sending: &Sending, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = sending
        .backoff
        .saturating_mul(1_u32 << exponent)
        .min(sending.backoff_ceiling);
    let jitter = rand_fraction();
    ceiling.mul_f64(0.5 + jitter / 2.0)
}

/// A fraction in [0, 1) from a fresh UUID's random bits: jitter needs no better randomness.
fn rand_fraction() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1_u64 << 53) as f64
}

fn log_answer(row: &Queued, answer: &graph::Answer, next: &Next) {
    let recipient = mask(&row.recipient);
    let latency_ms = answer.latency.as_millis() as u64;
    match next {
        Next::Sent(wamid) => {
            tracing::debug!(event = "sending.sent", outbox_id = row.id, recipient = %recipient, wamid = %crate::logging::message_ref(wamid), latency_ms, "Reply accepted by the Cloud API.");
        }
        Next::Retry(wait) => {
            tracing::warn!(event = "sending.retry", outbox_id = row.id, recipient = %recipient, attempt = row.attempts, http_status = answer.http_status, code = answer.code, error = answer.error.as_deref().unwrap_or_default(), unknown_outcome = answer.unknown_outcome, retry_in_ms = wait.as_millis() as u64, "Reply not accepted; trying again.");
        }
        Next::Dead(reason) => {
            tracing::warn!(event = "sending.dead", outbox_id = row.id, recipient = %recipient, reason = %reason, http_status = answer.http_status, code = answer.code, error = answer.error.as_deref().unwrap_or_default(), "Reply moved to the dead-letter queue.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::Secret;

    fn sending(backoff_ms: u64, ceiling_ms: u64) -> Sending {
        Sending {
            endpoint: "wa".into(),
            access_token: Secret {
                var: "T".into(),
                value: Some("t".into()),
            },
            phone_number_id: None,
            base_url: "http://127.0.0.1:9".into(),
            api_version: "v25.0".into(),
            timeout: Duration::from_secs(1),
            throughput: 80,
            attempts: 8,
            backoff: Duration::from_millis(backoff_ms),
            backoff_ceiling: Duration::from_millis(ceiling_ms),
            deliver_within: Duration::from_secs(900),
            probe_after: Duration::from_secs(30),
            redrive: Vec::new(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_with_jitter_in_the_upper_half() {
        let policy = sending(1_000, 60_000);
        for attempt in 1..=12_u32 {
            let full =
                Duration::from_millis(1_000 * (1 << (attempt - 1))).min(policy.backoff_ceiling);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(&policy, attempt)).collect();
            assert!(
                waits.iter().all(|w| *w >= full / 2 && *w <= full),
                "attempt {attempt}: {:?}",
                (waits.iter().min(), waits.iter().max())
            );
            let distinct: std::collections::HashSet<_> = waits.iter().collect();
            assert!(
                distinct.len() > 100,
                "attempt {attempt}: jitter varies the waits"
            );
        }
    }
}
