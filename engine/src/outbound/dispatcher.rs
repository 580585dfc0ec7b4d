//! The dispatcher: one task that decides what is sent next, and rounds that send it.
//!
//! Owns: per-recipient order (one row in flight per recipient, the next only after the
//! previous is accepted or dead), each number's throughput cap, `deliver_within`, backoff with
//! jitter, and pauses (a number, or every number of a token) with one probe at a time.
//! Rounds claim their rows and record results in one statement each
//! ([`crate::store::outbox`]). Must not read rows itself: the handoff and the sweeper bring
//! them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;

use super::shared::{After, Ended, PauseKey, Shared, MAX_CALLS};
use super::Queued;
use crate::config::Sending;
use crate::store::outbox as store;

/// The longest pause between two probes.
const LONGEST_PAUSE: Duration = Duration::from_secs(600);
/// Rows given to the pipeline and not yet ended, at most: enough to keep every call busy
/// while the next claim and the last results are written. Twice the calls, so that a row
/// waits for at most one wave of calls before its own: both within the timeout, its lease
/// (three timeouts, not renewed while in the pipeline) cannot run out under it.
const MAX_IN_FLIGHT: usize = MAX_CALLS * 2;

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

struct Dispatcher {
    shared: Arc<Shared>,
    recipients: HashMap<String, Recipient>,
    /// Recipients whose next row should be looked at, in turn.
    ready: VecDeque<String>,
    /// Recipients waiting for a time (a backoff, the number's cap, a pause), soonest first.
    waiting: BinaryHeap<Reverse<(Instant, String)>>,
    /// Recipients held back by a pause or a probe in flight: looked at again when it ends.
    paused: Vec<String>,
    pauses: HashMap<PauseKey, Pause>,
    limiters: HashMap<String, (u32, Arc<DefaultKeyedRateLimiter<String>>)>,
    /// Rows given to the pipeline and not yet ended.
    in_flight: usize,
    claims: mpsc::UnboundedSender<Vec<(Queued, Sending)>>,
}

/// One recipient's rows, oldest first, and where the recipient is in the dispatcher's lists.
#[derive(Debug, Default)]
struct Recipient {
    rows: VecDeque<Held>,
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In `ready`.
    #[default]
    Ready,
    /// A row in a round.
    Busy,
    /// In `waiting` or `paused`.
    Waiting,
}

/// Runs until the handoff closes.
pub async fn run(shared: Arc<Shared>, mut rows: mpsc::UnboundedReceiver<Vec<Queued>>) {
    let (ended_tx, mut done_rx) = mpsc::unbounded_channel();
    let claims = super::pipeline::start(shared.clone(), ended_tx);
    let mut dispatcher = Dispatcher {
        shared,
        recipients: HashMap::new(),
        ready: VecDeque::new(),
        waiting: BinaryHeap::new(),
        paused: Vec::new(),
        pauses: HashMap::new(),
        limiters: HashMap::new(),
        in_flight: 0,
        claims,
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
            let recipient = match self.recipients.get_mut(&row.recipient) {
                Some(recipient) => recipient,
                None => {
                    self.ready.push_back(row.recipient.clone());
                    self.recipients.entry(row.recipient.clone()).or_default()
                }
            };
            let queue = &mut recipient.rows;
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

    /// Marks `name` ready (it is not in any list now) or forgets it when it has no rows left.
    fn release(&mut self, name: String) {
        match self.recipients.get_mut(&name) {
            Some(recipient) if !recipient.rows.is_empty() => {
                recipient.state = State::Ready;
                self.ready.push_back(name);
            }
            Some(_) => {
                self.recipients.remove(&name);
            }
            None => {}
        }
    }

    fn finish(&mut self, ended: Ended) {
        self.in_flight = self.in_flight.saturating_sub(ended.len());
        let mut pauses_changed = false;
        for (mut row, endpoint, after) in ended {
            let keys = [
                PauseKey::Number(row.phone_number_id.clone()),
                PauseKey::Token(endpoint),
            ];
            // Whatever the probe's answer, it is over: a failure pauses again below, a passing
            // failure lets the next probe go once the pause has run out.
            for key in &keys {
                if let Some(pause) = self.pauses.get_mut(key) {
                    pause.probing = false;
                    pauses_changed = true;
                }
            }
            let name = row.recipient.clone();
            match after {
                After::Retry(at) => {
                    // The next attempt is claimed like any retry.
                    row.first_attempt_recorded = false;
                    let recipient = self.recipients.entry(name.clone()).or_default();
                    recipient.rows.push_front(Held {
                        row,
                        not_before: Some(at),
                    });
                    self.release(name);
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
            self.release(name);
        }
        if pauses_changed {
            self.shared
                .metrics
                .sending_paused
                .set(self.pauses.len() as i64);
            self.wake_paused();
        }
    }

    /// Looks again at every recipient a pause held back.
    fn wake_paused(&mut self) {
        for name in std::mem::take(&mut self.paused) {
            if let Some(recipient) = self.recipients.get_mut(&name) {
                if recipient.state == State::Waiting {
                    recipient.state = State::Ready;
                    self.ready.push_back(name);
                }
            }
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
        self.shared
            .metrics
            .sending_paused
            .set(self.pauses.len() as i64);
    }

    fn renew(&self) {
        let ids: Vec<i64> = self
            .recipients
            .values()
            .flat_map(|recipient| &recipient.rows)
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

    /// Gives the pipeline the next row of every ready recipient that may send now; returns
    /// when to look again.
    fn dispatch(&mut self) -> Option<Instant> {
        let now = Instant::now();
        self.wake_due(now);
        if self.in_flight >= MAX_IN_FLIGHT {
            return self.next_wake(None);
        }
        let snapshot = self.shared.reloader.current();
        if self.resume_reloaded_tokens(&snapshot.config) {
            self.wake_paused();
        }
        let mut round: Vec<(Queued, Sending)> = Vec::new();
        let mut expired: Vec<Queued> = Vec::new();
        let mut unsendable: Vec<Queued> = Vec::new();
        while self.in_flight + round.len() < MAX_IN_FLIGHT {
            let Some(name) = self.ready.pop_front() else {
                break;
            };
            let Some(recipient) = self.recipients.get_mut(&name) else {
                continue;
            };
            if recipient.state != State::Ready {
                continue;
            }
            let mut park: Option<Option<Instant>> = None;
            while let Some(head) = recipient.rows.front() {
                if let Some(at) = head.not_before.filter(|at| *at > now) {
                    park = Some(Some(at));
                    break;
                }
                let Some(sending) = snapshot.config.sending_for(&head.row.phone_number_id) else {
                    unsendable.extend(recipient.rows.pop_front().map(|held| held.row));
                    continue;
                };
                if head.row.queued_at + sending.deliver_within <= now {
                    expired.extend(recipient.rows.pop_front().map(|held| held.row));
                    continue;
                }
                // A paused number or token: wait, or send this row as the one probe.
                let keys = [
                    PauseKey::Number(head.row.phone_number_id.clone()),
                    PauseKey::Token(sending.endpoint.clone()),
                ];
                let blocked = keys.iter().find_map(|key| {
                    let pause = self.pauses.get(key)?;
                    (pause.probing || pause.until > now).then_some(pause)
                });
                if let Some(pause) = blocked {
                    // Looked at again when the pause changes (a probe ends, a reload brings
                    // a new token), or when it runs out.
                    park = Some((!pause.probing).then_some(pause.until));
                    self.paused.push(name.clone());
                    break;
                }
                let limiter = limiter(&mut self.limiters, &head.row.phone_number_id, sending);
                if let Err(not_until) = limiter.check_key(&head.row.phone_number_id) {
                    park = Some(Some(
                        now + not_until.wait_time_from(DefaultClock::default().now()),
                    ));
                    break;
                }
                for key in &keys {
                    if let Some(pause) = self.pauses.get_mut(key) {
                        pause.probing = true;
                    }
                }
                if let Some(held) = recipient.rows.pop_front() {
                    recipient.state = State::Busy;
                    round.push((held.row, sending.clone()));
                }
                break;
            }
            match park {
                Some(at) => {
                    recipient.state = State::Waiting;
                    if let Some(at) = at {
                        self.waiting.push(Reverse((at, name)));
                    }
                }
                None if recipient.rows.is_empty() && recipient.state == State::Ready => {
                    self.recipients.remove(&name);
                }
                None => {}
            }
        }
        let finished = expired.len() + unsendable.len();
        if finished > 0 {
            self.shared.held.fetch_sub(finished, Ordering::Relaxed);
            let shared = self.shared.clone();
            tokio::spawn(super::pipeline::settle_unsent(shared, expired, unsendable));
        }
        if !round.is_empty() {
            self.in_flight += round.len();
            // The pipeline lives as long as the dispatcher: a send cannot fail.
            let _ = self.claims.send(round);
        }
        let more = (!self.ready.is_empty() && self.in_flight < MAX_IN_FLIGHT).then_some(now);
        self.next_wake(more)
    }

    /// Makes ready every waiting recipient whose time has come.
    fn wake_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.waiting.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, name))) = self.waiting.pop() {
                if let Some(recipient) = self.recipients.get_mut(&name) {
                    if recipient.state == State::Waiting {
                        recipient.state = State::Ready;
                        self.ready.push_back(name);
                    }
                }
            }
        }
    }

    /// The sooner of `now_if_more` and the first waiting recipient's time.
    fn next_wake(&self, now_if_more: Option<Instant>) -> Option<Instant> {
        let waiting = self.waiting.peek().map(|Reverse((at, _))| *at);
        match (now_if_more, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A token pause ends when a reload brings another token; says whether one did.
    fn resume_reloaded_tokens(&mut self, config: &crate::config::Config) -> bool {
        let mut resumed = false;
        let redrive = &self.shared.redrive;
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
                redrive.notify_one();
                resumed = true;
            }
            same
        });
        resumed
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
