//! The live configuration: loaded once at start, swapped atomically on reload, never replaced
//! by a broken one.
//!
//! Owns: the [`Snapshot`] requests read (config plus what serving derives from it: the path
//! table, the rate limiters and the flow runtime's caches), the `ArcSwap` that publishes it, reload outcomes and counters.
//! A reload runs the same load path as `easymo lint`; only a config without errors is swapped
//! in, and a request that already holds a snapshot finishes on it. Must not watch files or
//! handle signals: `watch` and `server` decide *when* to reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use easymo_dsl::diagnostic::render_human;
use sha2::{Digest, Sha256};

use crate::config::{self, Config, EnvPolicy};
use crate::ratelimit::{Limiter, Registry};

/// What the runtime keeps for as long as one config serves: a reload starts with empty ones, so
/// an edited query or template is never answered from what the old one gave.
#[derive(Debug, Default)]
pub struct Caches {
    /// Results of `cached for` flow queries.
    pub queries: crate::query_cache::QueryCache,
    /// Replies rendered before.
    pub replies: crate::render_cache::RenderCache,
}

/// One loaded configuration and what serving derives from it.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Endpoint index by URL path.
    pub by_path: HashMap<String, usize>,
    /// Each endpoint's limiter, by endpoint index.
    pub limiters: Vec<Option<Arc<Limiter>>>,
    /// The flow runtime's caches, which start empty with each config.
    pub caches: Caches,
    /// SHA-256 of routes.yaml and every flow file, hex.
    pub version: String,
    /// When it was loaded, Unix seconds.
    pub loaded_at: u64,
    /// The files it was loaded from, for the watcher.
    pub files: Vec<PathBuf>,
}

impl Snapshot {
    /// Every endpoint's rate limit, as the limiter registry keys them.
    fn limits(&self) -> Vec<(String, crate::config::RateLimit)> {
        self.config
            .endpoints
            .iter()
            .filter_map(|e| e.rate_limit.clone().map(|r| (e.name.clone(), r)))
            .collect()
    }

    /// The endpoint serving `path`, with its index.
    pub fn endpoint(&self, path: &str) -> Option<(usize, &config::Endpoint)> {
        let i = *self.by_path.get(path)?;
        Some((i, self.config.endpoints.get(i)?))
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// routes.yaml could not be read.
    #[error(transparent)]
    Read(#[from] config::ReadError),
    /// It has errors; `rendered` is what `easymo lint` prints.
    #[error("{errors} error(s) in the configuration:\n{rendered}")]
    Invalid {
        /// Number of errors.
        errors: usize,
        /// The rendered diagnostics.
        rendered: String,
    },
    /// It changes a setting that only a restart can apply.
    #[error("{0} cannot change while the engine runs; restart to apply it")]
    NeedsRestart(&'static str),
}

pub mod changes;

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// A new config serves.
    Reloaded {
        /// Its version.
        version: String,
        /// What changed.
        changes: changes::Changes,
    },
    /// Same files as before: nothing to do.
    Unchanged,
    /// The old config keeps serving.
    Rejected(LoadError),
}

/// Counters shown on the admin route.
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful reloads.
    pub reloaded: AtomicU64,
    /// Rejected reloads.
    pub rejected: AtomicU64,
    /// The rejection that stands: cleared once the files load cleanly again (fixed, or put
    /// back as they were).
    pub last_error: Mutex<Option<String>>,
    /// The last reload attempt: when, its outcome, what changed.
    pub last_attempt: Mutex<Option<serde_json::Value>>,
    /// Live sessions awaiting a flow the serving config does not have, by flow, as last
    /// counted (at start and after each reload).
    pub stranded: Mutex<Vec<(String, i64)>>,
}

impl Stats {
    /// The figures as JSON: `succeeded`, `rejected`, `last_error`.
    pub fn to_json(&self) -> serde_json::Value {
        let last_error = self
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let last_attempt = self
            .last_attempt
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let stranded = self
            .stranded
            .lock()
            .map(|s| stranded_json(&s))
            .unwrap_or_default();
        serde_json::json!({
            "succeeded": self.reloaded.load(std::sync::atomic::Ordering::Relaxed),
            "rejected": self.rejected.load(std::sync::atomic::Ordering::Relaxed),
            "last_error": last_error,
            "last_attempt": last_attempt,
            "stranded_sessions": stranded,
        })
    }

    /// Keeps the latest count of stranded sessions; when a reload left some, its attempt says
    /// so too, as a warning that names each flow.
    pub fn note_stranded(&self, stranded: &[(String, i64)]) {
        if !stranded.is_empty() {
            let mut attempt = self
                .last_attempt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(serde_json::Value::Object(attempt)) = attempt.as_mut() {
                let warnings = stranded
                    .iter()
                    .map(|(flow, n)| {
                        serde_json::Value::from(format!("{n} live session(s) await flow `{flow}`, which this configuration does not have; their next answer goes to the fallback flow"))
                    })
                    .collect();
                attempt.insert("warnings".to_owned(), serde_json::Value::Array(warnings));
            }
        }
        *self
            .stranded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stranded.to_vec();
    }

    fn record(&self, attempt: serde_json::Value, error: Option<String>) {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(attempt);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }
}

fn stranded_json(stranded: &[(String, i64)]) -> serde_json::Value {
    stranded
        .iter()
        .map(|(flow, sessions)| serde_json::json!({"flow": flow, "sessions": sessions}))
        .collect()
}

/// Now, RFC 3339 in UTC, for the admin route.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Owns the live snapshot.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    policy: EnvPolicy,
    current: ArcSwap<Snapshot>,
    limiters: Registry,
    /// Reload counters.
    pub stats: Stats,
    reload_lock: Mutex<()>,
}

impl Reloader {
    /// Loads the config at `path`; fails with the rendered diagnostics if it has errors.
    pub fn start(path: &Path, policy: EnvPolicy) -> Result<Self, LoadError> {
        let limiters = Registry::default();
        let snapshot = build(path, &policy, &limiters)?;
        Ok(Reloader {
            path: path.to_owned(),
            policy,
            current: ArcSwap::from_pointee(snapshot),
            limiters,
            stats: Stats::default(),
            reload_lock: Mutex::new(()),
        })
    }

    /// The snapshot to serve a request with. Holding it keeps it alive across a reload.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Loads the files again and swaps the result in if it is clean. Blocking: call it off the
    /// request path.
    pub fn reload(&self) -> Outcome {
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current();
        let outcome = build(&self.path, &self.policy, &self.limiters).and_then(|new| {
            if new.config.server.listen != old.config.server.listen {
                return Err(LoadError::NeedsRestart("server.listen"));
            }
            if new.config.server.database_url != old.config.server.database_url {
                return Err(LoadError::NeedsRestart("server.database_url"));
            }
            Ok(new)
        });
        let at = now_rfc3339();
        match outcome {
            Ok(new) if new.version == old.version => {
                // The files are as they serve: whatever was wrong with them is fixed.
                self.stats.record(
                    serde_json::json!({"at": at, "outcome": "unchanged", "version": old.version}),
                    None,
                );
                Outcome::Unchanged
            }
            Ok(new) => {
                let version = new.version.clone();
                let changes = changes::Changes::between(&old.config, &new.config);
                let live = new.limits();
                self.current.store(Arc::new(new));
                self.limiters.sweep(&live);
                self.stats.reloaded.fetch_add(1, Ordering::Relaxed);
                self.stats.record(
                    serde_json::json!({"at": at, "outcome": "reloaded", "version": version, "changes": changes}),
                    None,
                );
                Outcome::Reloaded { version, changes }
            }
            Err(error) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let rendered = error.to_string();
                self.stats.record(
                    serde_json::json!({"at": at, "outcome": "rejected", "version": old.version, "error": rendered}),
                    Some(rendered),
                );
                Outcome::Rejected(error)
            }
        }
    }

    /// Forgets rate-limit keys whose budget is full again.
    pub fn sweep_limiters(&self) {
        self.limiters.sweep(&self.current().limits());
    }
}

fn build(path: &Path, policy: &EnvPolicy, limiters: &Registry) -> Result<Snapshot, LoadError> {
    let loaded = config::load(path, policy)?;
    let Some(config) = loaded.config else {
        return Err(LoadError::Invalid {
            errors: loaded.error_count(),
            rendered: render_human(&loaded.sources, &loaded.diagnostics),
        });
    };
    let mut hasher = Sha256::new();
    let mut files = vec![path.to_owned()];
    for (i, (name, text)) in loaded.sources.iter().enumerate() {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        // Flow files are named by the path the process opened them with.
        if i > 0 {
            files.push(PathBuf::from(name));
        }
    }
    let by_path = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let limiters = config
        .endpoints
        .iter()
        .map(|e| e.rate_limit.as_ref().map(|r| limiters.get(&e.name, r)))
        .collect();
    Ok(Snapshot {
        config,
        by_path,
        limiters,
        caches: Caches::default(),
        version: hex::encode(hasher.finalize()),
        loaded_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files,
    })
}
