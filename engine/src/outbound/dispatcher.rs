//! The dispatcher: one task that decides what is sent next, and rounds that send it.
//!
//! Owns: per-recipient order (one row in flight per recipient, the next only after the
//! previous is accepted or dead), each number's throughput cap, `deliver_within`, backoff with
//! jitter, and pauses (a number, or every number of a token) with one probe at a time.
//! Rounds claim their rows and record results in one statement each
//! ([`crate::store::outbox`]). Must not read rows itself: the handoff and the sweeper bring
//! them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::graph::{self, Verdict};
use super::Queued;
use crate::config::{DeadReason, Sending};
use crate::logging::mask;
use crate::reload::Reloader;
use crate::store::outbox::{self as store, Mark, Next};

/// What the dispatcher and its rounds share.
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
}

/// The longest pause between two probes.
const LONGEST_PAUSE: Duration = Duration::from_secs(600);
/// Meta allows roughly one message every six seconds to one user before 131056.
const PAIR_WAIT: Duration = Duration::from_secs(6);
/// Rows claimed in one round at most.
const ROUND: usize = 256;
/// Rounds in flight at once: more would only add statements, not throughput.
const ROUNDS_IN_FLIGHT: usize = 8;

/// What is paused: a number, or every number a token sends from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PauseKey {
    Number(String),
    /// The sending section (by endpoint), whose token failed.
    Token(String),
}

#[derive(Debug)]
struct Pause {
    until: Instant,
    length: Duration,
    probing: bool,
    /// For a token pause: the token that failed; a reload with another one resumes at once.
    token: Option<String>,
}

/// A row in a recipient's queue.
#[derive(Debug)]
struct Held {
    row: Queued,
    not_before: Option<Instant>,
}

/// What a round tells the dispatcher when it ends.
#[derive(Debug)]
struct RoundDone {
    /// Each row with the endpoint whose `sending` it went out under.
    rows: Vec<(Queued, String, After)>,
}

#[derive(Debug)]
enum After {
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

struct Dispatcher {
    shared: Arc<Shared>,
    queues: HashMap<String, VecDeque<Held>>,
    busy: HashSet<String>,
    pauses: HashMap<PauseKey, Pause>,
    limiters: HashMap<String, (u32, Arc<DefaultKeyedRateLimiter<String>>)>,
    rounds_in_flight: usize,
    done_tx: mpsc::UnboundedSender<RoundDone>,
}

/// Runs until the handoff closes.
pub async fn run(shared: Arc<Shared>, mut rows: mpsc::UnboundedReceiver<Vec<Queued>>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut dispatcher = Dispatcher {
        shared,
        queues: HashMap::new(),
        busy: HashSet::new(),
        pauses: HashMap::new(),
        limiters: HashMap::new(),
        rounds_in_flight: 0,
        done_tx,
    };
    let mut renew = tokio::time::interval(dispatcher.shared.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wake_at: Option<Instant> = None;
    loop {
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = rows.recv() => match received {
                Some(batch) => dispatcher.add(batch),
                None => return,
            },
            Some(done) = done_rx.recv() => dispatcher.finish(done),
            () = sleep => {}
            _ = renew.tick() => dispatcher.renew(),
        }
        // Take whatever else arrived, so one round carries it all.
        while let Ok(batch) = rows.try_recv() {
            dispatcher.add(batch);
        }
        while let Ok(done) = done_rx.try_recv() {
            dispatcher.finish(done);
        }
        wake_at = dispatcher.dispatch();
    }
}

impl Dispatcher {
    fn add(&mut self, batch: Vec<Queued>) {
        for row in batch {
            let queue = self.queues.entry(row.recipient.clone()).or_default();
            // Rows arrive mostly in id order; a swept one may be older than those queued.
            let at = queue.partition_point(|held| held.row.id < row.id);
            if queue.get(at).is_some_and(|held| held.row.id == row.id) {
                // Already held (swept again after a slow renewal): keep one.
                self.shared.held.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            queue.insert(
                at,
                Held {
                    row,
                    not_before: None,
                },
            );
        }
    }

    fn finish(&mut self, done: RoundDone) {
        self.rounds_in_flight = self.rounds_in_flight.saturating_sub(1);
        for (row, endpoint, after) in done.rows {
            self.busy.remove(&row.recipient);
            let keys = [
                PauseKey::Number(row.phone_number_id.clone()),
                PauseKey::Token(endpoint),
            ];
            // Whatever the probe's answer, it is over: a failure pauses again below, a passing
            // failure lets the next probe go once the pause has run out.
            for key in &keys {
                if let Some(pause) = self.pauses.get_mut(key) {
                    pause.probing = false;
                }
            }
            match after {
                After::Retry(at) => {
                    let queue = self.queues.entry(row.recipient.clone()).or_default();
                    queue.push_front(Held {
                        row,
                        not_before: Some(at),
                    });
                    continue;
                }
                After::Resumed => {
                    for key in &keys {
                        if self.pauses.remove(key).is_some() {
                            tracing::info!(event = "sending.resumed", scope = %describe(key), "A probe succeeded: sending resumes.");
                            self.shared.redrive.notify_one();
                        }
                    }
                }
                After::Paused(key, token, first) => self.pause(key, token, first),
                After::Finished | After::Dropped => {}
            }
            self.shared.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn pause(&mut self, key: PauseKey, token: Option<String>, first: Duration) {
        let now = Instant::now();
        let pause = self.pauses.entry(key.clone()).or_insert(Pause {
            until: now,
            length: Duration::ZERO,
            probing: false,
            token: None,
        });
        pause.length = if pause.length.is_zero() {
            first
        } else {
            (pause.length * 2).min(LONGEST_PAUSE)
        };
        pause.until = now + pause.length;
        pause.probing = false;
        pause.token = token;
        tracing::error!(event = "sending.paused", scope = %describe(&key), retry_in_s = pause.length.as_secs(), "Sending paused: Meta refused the number or the token; a probe follows.");
    }

    fn renew(&self) {
        let ids: Vec<i64> = self
            .queues
            .values()
            .flatten()
            .map(|held| held.row.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(error) =
                store::renew(&shared.pool, &shared.process, shared.lease, &ids).await
            {
                tracing::warn!(event = "sending.renew_failed", error = %error, "Could not renew the leases of held replies.");
            }
        });
    }

    /// Starts rounds for every recipient whose next row may go; returns when to look again.
    fn dispatch(&mut self) -> Option<Instant> {
        if self.rounds_in_flight >= ROUNDS_IN_FLIGHT {
            return None;
        }
        let snapshot = self.shared.reloader.current();
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut later = |at: Instant| {
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        };
        let mut round: Vec<(Queued, Sending)> = Vec::new();
        let mut expired: Vec<Queued> = Vec::new();
        let mut unsendable: Vec<Queued> = Vec::new();
        self.resume_reloaded_tokens(&snapshot.config);
        let recipients: Vec<String> = self
            .queues
            .keys()
            .filter(|r| !self.busy.contains(*r))
            .cloned()
            .collect();
        for recipient in recipients {
            if round.len() >= ROUND {
                later(now);
                break;
            }
            let Some(queue) = self.queues.get_mut(&recipient) else {
                continue;
            };
            while let Some(head) = queue.front() {
                if let Some(at) = head.not_before.filter(|at| *at > now) {
                    later(at);
                    break;
                }
                let Some(sending) = snapshot.config.sending_for(&head.row.phone_number_id) else {
                    if let Some(held) = queue.pop_front() {
                        unsendable.push(held.row);
                    }
                    continue;
                };
                if head.row.queued_at + sending.deliver_within <= now {
                    if let Some(held) = queue.pop_front() {
                        expired.push(held.row);
                    }
                    continue;
                }
                // A paused number or token: wait, or send this row as the one probe.
                let keys = [
                    PauseKey::Number(head.row.phone_number_id.clone()),
                    PauseKey::Token(sending.endpoint.clone()),
                ];
                let mut blocked = false;
                for key in &keys {
                    if let Some(pause) = self.pauses.get_mut(key) {
                        if pause.probing || pause.until > now {
                            if !pause.probing {
                                later(pause.until);
                            }
                            blocked = true;
                        }
                    }
                }
                if blocked {
                    break;
                }
                let limiter = limiter(&mut self.limiters, &head.row.phone_number_id, sending);
                if let Err(not_until) = limiter.check_key(&head.row.phone_number_id) {
                    later(now + not_until.wait_time_from(DefaultClock::default().now()));
                    break;
                }
                for key in &keys {
                    if let Some(pause) = self.pauses.get_mut(key) {
                        pause.probing = true;
                    }
                }
                if let Some(held) = queue.pop_front() {
                    self.busy.insert(recipient.clone());
                    round.push((held.row, sending.clone()));
                }
                break;
            }
            if queue.is_empty() {
                self.queues.remove(&recipient);
            }
        }
        let finished = expired.len() + unsendable.len();
        if finished > 0 {
            self.shared.held.fetch_sub(finished, Ordering::Relaxed);
            let shared = self.shared.clone();
            tokio::spawn(settle_unsent(shared, expired, unsendable));
        }
        if !round.is_empty() {
            self.rounds_in_flight += 1;
            let shared = self.shared.clone();
            let done = self.done_tx.clone();
            tokio::spawn(async move {
                let rows = run_round(&shared, round).await;
                let _ = done.send(RoundDone { rows });
            });
        }
        wake
    }

    /// A token pause ends when a reload brings another token.
    fn resume_reloaded_tokens(&mut self, config: &crate::config::Config) {
        self.pauses.retain(|key, pause| {
            let PauseKey::Token(endpoint) = key else {
                return true;
            };
            let current = config
                .sendings()
                .find(|s| &s.endpoint == endpoint)
                .and_then(|s| s.access_token.value.clone());
            let same = current.is_some() && current == pause.token;
            if !same {
                tracing::info!(event = "sending.resumed", scope = %describe(key), "The access token changed: sending resumes.");
                self.shared.redrive.notify_one();
            }
            same
        });
    }
}

fn describe(key: &PauseKey) -> String {
    match key {
        PauseKey::Number(number) => format!("number {number}"),
        PauseKey::Token(endpoint) => format!("token of endpoint {endpoint}"),
    }
}

/// The number's limiter, made again when its throughput changes.
fn limiter(
    limiters: &mut HashMap<String, (u32, Arc<DefaultKeyedRateLimiter<String>>)>,
    number: &str,
    sending: &Sending,
) -> Arc<DefaultKeyedRateLimiter<String>> {
    let per_second = sending.throughput.max(1);
    if let Some((rate, limiter)) = limiters.get(number) {
        if *rate == per_second {
            return limiter.clone();
        }
    }
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    // A burst of a tenth of a second's worth: enough to fill a round, never a second's worth
    // at once (Meta counts over short windows too).
    let burst = NonZeroU32::new((per_second / 10).max(1)).unwrap_or(NonZeroU32::MIN);
    let limiter = Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ));
    limiters.insert(number.to_owned(), (per_second, limiter.clone()));
    limiter
}

/// Rows that expired before a call, and rows no `sending` section covers any more.
async fn settle_unsent(shared: Arc<Shared>, expired: Vec<Queued>, unsendable: Vec<Queued>) {
    let marks: Vec<Mark> = expired
        .iter()
        .map(|row| Mark {
            id: row.id,
            next: Next::Dead(DeadReason::Expired.as_str()),
            http_status: None,
            code: None,
            error: Some("not sent within deliver_within".to_owned()),
            latency_ms: None,
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

/// Claims the round's rows, sends them at once, and records every result in one statement.
async fn run_round(shared: &Shared, round: Vec<(Queued, Sending)>) -> Vec<(Queued, String, After)> {
    let ids: Vec<i64> = round.iter().map(|(row, _)| row.id).collect();
    let claimed = match store::claim(&shared.pool, &shared.process, shared.lease, &ids).await {
        Ok(claimed) => claimed.into_iter().collect::<HashMap<i64, i32>>(),
        Err(error) => {
            tracing::warn!(event = "sending.claim_failed", error = %error, "Could not claim replies; trying again shortly.");
            let again = Instant::now() + Duration::from_secs(1);
            return round
                .into_iter()
                .map(|(row, sending)| (row, sending.endpoint, After::Retry(again)))
                .collect();
        }
    };
    let calls = round.into_iter().map(|(mut row, sending)| {
        let attempt = claimed.get(&row.id).copied();
        async move {
            let Some(attempt) = attempt else {
                return (row, sending, None);
            };
            row.attempts = u32::try_from(attempt).unwrap_or(u32::MAX);
            let token = sending.access_token.value.clone().unwrap_or_default();
            let url = sending.messages_url(&row.phone_number_id);
            let answer = graph::send(&shared.http, &url, &token, &row.body, sending.timeout).await;
            (row, sending, Some(answer))
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let now = Instant::now();
    let mut marks = Vec::with_capacity(results.len());
    let mut rows = Vec::with_capacity(results.len());
    for (row, sending, answer) in results {
        let Some(answer) = answer else {
            rows.push((row, sending.endpoint, After::Dropped));
            continue;
        };
        let (next, after) = decide(&row, &sending, &answer, now);
        log_answer(&row, &answer, &next);
        marks.push(Mark {
            id: row.id,
            next,
            http_status: answer.http_status.map(i32::from),
            code: answer.code.and_then(|c| i32::try_from(c).ok()),
            error: answer.error.clone(),
            latency_ms: i32::try_from(answer.latency.as_millis()).ok(),
        });
        rows.push((row, sending.endpoint, after));
    }
    if let Err(error) = store::mark(&shared.pool, &shared.process, shared.lease, &marks).await {
        // The calls happened; only their record failed. The rows stay `sending` under this
        // lease, which runs out, and a sweeper sends them again: a duplicate, not a loss.
        tracing::error!(event = "sending.mark_failed", error = %error, rows = marks.len(), "Could not record sent replies.");
        return rows
            .into_iter()
            .map(|(row, endpoint, _)| (row, endpoint, After::Dropped))
            .collect();
    }
    rows
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
            tracing::debug!(event = "sending.sent", outbox_id = row.id, recipient = %recipient, wamid = %wamid, latency_ms, "Reply accepted by the Cloud API.");
        }
        Next::Retry(wait) => {
            tracing::warn!(event = "sending.retry", outbox_id = row.id, recipient = %recipient, attempt = row.attempts, http_status = answer.http_status, code = answer.code, error = answer.error.as_deref().unwrap_or_default(), unknown_outcome = answer.unknown_outcome, retry_in_ms = wait.as_millis() as u64, "Reply not accepted; trying again.");
        }
        Next::Dead(reason) => {
            tracing::warn!(event = "sending.dead", outbox_id = row.id, recipient = %recipient, reason = %reason, http_status = answer.http_status, code = answer.code, error = answer.error.as_deref().unwrap_or_default(), "Reply moved to the dead-letter queue.");
        }
    }
}
