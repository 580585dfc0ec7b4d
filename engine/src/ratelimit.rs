//! Rate limits: governor's keyed GCRA limiters, one per endpoint limit, shared across reloads.
//!
//! Owns: turning a `RateLimit` into a limiter, the key a request is counted under, the
//! `X-RateLimit-*` figures, and the registry that hands the same limiter to a reloaded config
//! when the limit's definition did not change (so a reload never resets anyone's budget). With
//! `server.rate_limits: postgres`, the same GCRA decided on a budget every replica shares
//! (`crate::store::ratelimits`), falling back to the local limiter while Postgres is out of
//! reach. Must not decide what a refused request gets; the gateway reads `on_limit` for that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{OnLimit, RateLimit};

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The whole endpoint shares one budget.
    Endpoint,
    /// One budget per client address.
    Ip(IpAddr),
    /// One budget per WhatsApp sender.
    Sender(String),
}

type Inner =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `remaining` more requests fit now, the budget is full again after `reset`.
    Allowed {
        /// Requests left in the budget.
        remaining: u32,
        /// Until the whole budget is back.
        reset: Duration,
    },
    /// Over the limit; try again after `retry_after`.
    Refused {
        /// Until one more request fits.
        retry_after: Duration,
        /// Until the whole budget is back.
        reset: Duration,
    },
}

/// One endpoint's limit.
pub struct Limiter {
    /// The definition.
    pub definition: RateLimit,
    inner: Inner,
    clock: DefaultClock,
    /// With `on_limit: reply_once`: senders told to slow down in the current window.
    told: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("definition", &self.definition)
            .finish()
    }
}

impl Limiter {
    /// A limiter allowing `requests` per `per`, all of them at once if they come in a burst.
    pub fn new(definition: RateLimit) -> Self {
        let interval = definition.per / definition.requests.get();
        let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(definition.requests))
            .allow_burst(definition.requests);
        let clock = DefaultClock::default();
        let inner = RateLimiter::dashmap_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        let told = (definition.on_limit == OnLimit::ReplyOnce).then(|| {
            let once = Quota::with_period(definition.per.max(Duration::from_millis(1)))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
            RateLimiter::keyed(once)
        });
        Limiter {
            definition,
            inner,
            clock,
            told,
        }
    }

    /// With `on_limit: reply_once`: true the first time `sender` is refused in a window (it
    /// gets the slow-down reply), false after that (silence).
    pub fn first_refusal(&self, sender: &str) -> bool {
        self.told
            .as_ref()
            .is_some_and(|told| told.check_key(&sender.to_owned()).is_ok())
    }

    /// Counts one request under `key`.
    pub fn check(&self, key: &Key) -> Verdict {
        let limit = self.definition.requests.get();
        let interval = self.definition.per / limit;
        match self.inner.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict::Allowed {
                    remaining,
                    reset: interval * (limit - remaining),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                Verdict::Refused {
                    retry_after,
                    reset: retry_after + interval * (limit - 1),
                }
            }
        }
    }

    /// Forgets keys whose budget is full again, so a flood of senders does not grow memory.
    pub fn shrink(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        if let Some(told) = &self.told {
            told.retain_recent();
            told.shrink_to_fit();
        }
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.inner.len()
    }
}

/// Counts one request under `key` in the budget every replica shares (`server.rate_limits:
/// postgres`), with the same GCRA and the same figures as [`Limiter::check`]. The key names
/// the endpoint and the limit's definition, so an edited limit starts afresh, as locally.
pub async fn check_shared(
    pool: &sqlx::PgPool,
    endpoint: &str,
    limiter: &Limiter,
    key: &Key,
) -> Result<Verdict, sqlx::Error> {
    let definition = &limiter.definition;
    let limit = definition.requests.get();
    let interval = definition.per / limit;
    let taken = crate::store::ratelimits::take(
        pool,
        &shared_key("budget", endpoint, definition, key),
        interval,
        definition.per,
    )
    .await?;
    Ok(if taken.allowed {
        // Postgres keeps intervals to the microsecond: without the extra one, a budget of 7 a
        // minute would floor 5.99999 requests of room to 5.
        let room = definition.per.saturating_sub(taken.ahead) + Duration::from_micros(1);
        let remaining = u32::try_from(room.as_nanos() / interval.as_nanos().max(1))
            .unwrap_or(u32::MAX)
            .min(limit);
        Verdict::Allowed {
            remaining,
            reset: taken.ahead,
        }
    } else {
        let retry_after = taken.ahead.saturating_sub(definition.per);
        Verdict::Refused {
            retry_after,
            reset: retry_after + interval * (limit - 1),
        }
    })
}

/// [`Limiter::first_refusal`] across replicas: one slow-down reply per sender per window,
/// whichever replica refuses them.
pub async fn first_refusal_shared(
    pool: &sqlx::PgPool,
    endpoint: &str,
    limiter: &Limiter,
    sender: &str,
) -> Result<bool, sqlx::Error> {
    let definition = &limiter.definition;
    let key = shared_key(
        "told",
        endpoint,
        definition,
        &Key::Sender(sender.to_owned()),
    );
    crate::store::ratelimits::take(pool, &key, definition.per, definition.per)
        .await
        .map(|taken| taken.allowed)
}

/// Says, at most once a minute per process, that shared budgets are out of reach and this
/// process counts alone meanwhile: a warning, never a refusal of all traffic.
pub fn degraded(endpoint: &str, error: &str) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(service = %endpoint, event = "ratelimit.shared_unavailable", error = %error, "Shared rate limits are out of reach; this process counts its own budgets until they answer again.");
    }
}

fn shared_key(what: &str, endpoint: &str, definition: &RateLimit, key: &Key) -> String {
    let counted = match key {
        Key::Endpoint => "endpoint".to_owned(),
        Key::Ip(ip) => format!("ip:{ip}"),
        Key::Sender(sender) => format!("sender:{sender}"),
    };
    format!(
        "{what}|{endpoint}|{}/{}ms|{counted}",
        definition.requests,
        definition.per.as_millis()
    )
}

/// Limiters by endpoint name and definition, kept across reloads.
#[derive(Debug, Default)]
pub struct Registry {
    limiters: Mutex<HashMap<(String, RateLimit), Arc<Limiter>>>,
}

impl Registry {
    /// The limiter for `endpoint` with `definition`: the existing one if the definition did not
    /// change, else a fresh one.
    pub fn get(&self, endpoint: &str, definition: &RateLimit) -> Arc<Limiter> {
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry((endpoint.to_owned(), definition.clone()))
            .or_insert_with(|| Arc::new(Limiter::new(definition.clone())))
            .clone()
    }

    /// Drops limiters no live config uses and shrinks the rest.
    pub fn sweep(&self, live: &[(String, RateLimit)]) {
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|key, _| live.contains(key));
        for limiter in map.values() {
            limiter.shrink();
        }
    }
}

/// Whole seconds, rounded up, for `Retry-After` and `X-RateLimit-Reset`.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::config::{LimitKey, OnLimit};

    fn limit(requests: u32, per: Duration) -> RateLimit {
        RateLimit {
            requests: NonZeroU32::new(requests).expect("nonzero"),
            per,
            key: LimitKey::Endpoint,
            on_limit: OnLimit::Reject,
            reply_template: None,
        }
    }

    #[test]
    fn allows_the_budget_in_a_burst_then_refuses() {
        let limiter = Limiter::new(limit(300, Duration::from_secs(60)));
        for i in 0..300 {
            match limiter.check(&Key::Endpoint) {
                Verdict::Allowed { remaining, .. } => assert_eq!(remaining, 299 - i),
                refused => panic!("request {} refused: {refused:?}", i + 1),
            }
        }
        let Verdict::Refused { retry_after, reset } = limiter.check(&Key::Endpoint) else {
            panic!("301st allowed")
        };
        assert!(
            retry_after > Duration::ZERO && retry_after <= Duration::from_millis(200),
            "{retry_after:?}"
        );
        assert!(
            reset > Duration::from_secs(59) && reset <= Duration::from_secs(60),
            "{reset:?}"
        );
    }

    #[test]
    fn keys_are_independent() {
        let limiter = Limiter::new(limit(1, Duration::from_secs(60)));
        let a = Key::Sender("250788000001".into());
        let b = Key::Ip("10.0.0.1".parse().expect("ip"));
        assert!(matches!(limiter.check(&a), Verdict::Allowed { .. }));
        assert!(matches!(limiter.check(&a), Verdict::Refused { .. }));
        assert!(matches!(limiter.check(&b), Verdict::Allowed { .. }));
    }

    #[test]
    fn registry_keeps_state_for_unchanged_definitions() {
        let registry = Registry::default();
        let def = limit(1, Duration::from_secs(60));
        let first = registry.get("wa", &def);
        assert!(matches!(
            first.check(&Key::Endpoint),
            Verdict::Allowed { .. }
        ));
        let again = registry.get("wa", &def);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(matches!(
            again.check(&Key::Endpoint),
            Verdict::Refused { .. }
        ));
        let changed = registry.get("wa", &limit(2, Duration::from_secs(60)));
        assert!(matches!(
            changed.check(&Key::Endpoint),
            Verdict::Allowed { .. }
        ));
        registry.sweep(&[("wa".into(), limit(2, Duration::from_secs(60)))]);
        assert!(!Arc::ptr_eq(&registry.get("wa", &def), &first));
    }

    #[test]
    fn shrinking_forgets_only_keys_whose_budget_is_full_again() {
        let quick = Limiter::new(limit(1, Duration::from_millis(5)));
        let slow = Limiter::new(limit(1, Duration::from_secs(60)));
        for n in 0..50 {
            let key = Key::Sender(format!("2507880000{n:02}"));
            quick.check(&key);
            slow.check(&key);
        }
        assert_eq!((quick.tracked_keys(), slow.tracked_keys()), (50, 50));
        std::thread::sleep(Duration::from_millis(30));
        quick.shrink();
        slow.shrink();
        assert_eq!(quick.tracked_keys(), 0, "refilled keys are forgotten");
        assert_eq!(slow.tracked_keys(), 50, "a key still owed budget is kept");
    }
}
