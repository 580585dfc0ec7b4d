//! Results of flow queries marked `cached for D`, kept per config snapshot: a reload starts
//! empty, so an edited flow never sees an old result.
//!
//! Owns: the map from (SQL, bound values) to a result and when it expires, and its bound on
//! memory. Must not decide what may be cached: the checker allows `cached for` only on plain
//! reads (E313), and the flow runtime asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The most results kept; past it, expired results go first and then everything.
const CAPACITY: usize = 10_000;

/// Cached query results of one config snapshot.
#[derive(Debug, Default)]
pub struct QueryCache {
    entries: Mutex<HashMap<(String, String), (Instant, Value)>>,
}

impl QueryCache {
    /// The result of `sql` with `args`, if one younger than its lifetime is kept.
    pub fn get(&self, sql: &str, args: &[Value]) -> Option<Value> {
        let key = (sql.to_owned(), key_of(args));
        let entries = self.entries.lock().ok()?;
        let (expires, value) = entries.get(&key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    /// Keeps the result of `sql` with `args` for `ttl`.
    pub fn put(&self, sql: &str, args: &[Value], value: &Value, ttl: Duration) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (expires, _)| *expires > now);
            // Dropping only a few expired entries would make every insert scan the whole map
            // under the lock: start over unless a good part came free.
            if entries.len() >= CAPACITY * 9 / 10 {
                entries.clear();
            }
        }
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        entries.insert((sql.to_owned(), key_of(args)), (expires, value.clone()));
    }

    /// How many results are kept (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(args: &[Value]) -> String {
    // Values keep their JSON types: `1` and `"1"` bind differently and are different keys.
    serde_json::to_string(args).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_are_kept_per_values_until_they_expire() {
        let cache = QueryCache::default();
        let sql = "select * from t where id = $1";
        cache.put(
            sql,
            &[json!(1)],
            &json!([{"id": 1}]),
            Duration::from_secs(60),
        );
        cache.put(sql, &[json!(2)], &json!([]), Duration::ZERO);
        assert_eq!(cache.get(sql, &[json!(1)]), Some(json!([{"id": 1}])));
        assert_eq!(cache.get(sql, &[json!("1")]), None, "text is not a number");
        assert_eq!(cache.get(sql, &[json!(2)]), None, "expired");
        assert_eq!(cache.get("select 1", &[json!(1)]), None);
        // A lifetime past the clock's range is not kept, and does not panic.
        cache.put(sql, &[json!(3)], &json!([]), Duration::MAX);
        assert_eq!(cache.get(sql, &[json!(3)]), None);
    }

    #[test]
    fn memory_is_bounded() {
        let cache = QueryCache::default();
        for i in 0..CAPACITY + 5 {
            cache.put("q", &[json!(i)], &json!(i), Duration::from_secs(60));
        }
        assert!(cache.len() <= CAPACITY);
        assert_eq!(
            cache.get("q", &[json!(CAPACITY + 4)]),
            Some(json!(CAPACITY + 4))
        );
    }
}
