//! Whether Postgres can be reached, known without asking it on the request path: a circuit
//! breaker.
//!
//! Owns: the breaker's state (up or down, and when it last came back), the prober that moves it
//! (its own connection, never the pools': a pool busy with slow work is not a database that is
//! down), and which errors mean "unreachable". While it is down, webhook requests are refused at
//! once with 503 instead of each waiting out a connection timeout, and `/readyz` answers from it
//! without a query. Pool connections made before the database last came back are not reused:
//! after a restart of Postgres they are all dead, and each would fail one request. Must not
//! decide what a request gets: the gateway does, from [`Health::is_up`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use tokio::sync::Notify;

/// How often the prober asks while the database is down: the engine is back within this long
/// of Postgres.
const PROBE_WHILE_DOWN: Duration = Duration::from_millis(200);

/// How often it asks while the database is up, to notice an outage when no request is running.
const PROBE_WHILE_UP: Duration = Duration::from_secs(1);

/// How long one probe may take: a database that takes longer to say `select 1` is down for
/// a webhook that must answer within Meta's timeout.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The database's reachability, shared by the gateway, `/readyz` and the pools.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    /// Milliseconds since `started` when the database last came back (0: never went down).
    recovered_at_ms: AtomicU64,
    started: Instant,
    suspect: Notify,
}

impl Health {
    /// A breaker that believes the database is up (the server has just connected to it).
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            up: AtomicBool::new(true),
            recovered_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            suspect: Notify::new(),
        })
    }

    /// Whether the last probe reached the database.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Reports an error from a statement. One that could mean the database is gone makes the
    /// prober ask now; only its answer opens the breaker (a pool timeout under load is not an
    /// outage).
    pub fn report(&self, error: &sqlx::Error) {
        if is_unreachable(error) {
            self.suspect.notify_one();
        }
    }

    /// Whether a pool connection of this age predates the database's last return, and must not
    /// be used.
    pub fn predates_recovery(&self, age: Duration) -> bool {
        let recovered = self.recovered_at_ms.load(Ordering::Acquire);
        recovered != 0 && {
            let since_recovery = self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(recovered));
            age > since_recovery
        }
    }

    fn set(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::AcqRel);
        if up && !was {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.recovered_at_ms.store(now.max(1), Ordering::Release);
        }
        was != up
    }

    /// Probes the database at `options` until the process ends.
    pub fn watch(self: &Arc<Health>, options: PgConnectOptions) {
        let health = self.clone();
        tokio::spawn(async move {
            let mut connection: Option<PgConnection> = None;
            let mut down_since = None;
            loop {
                let pause = if health.is_up() {
                    PROBE_WHILE_UP
                } else {
                    PROBE_WHILE_DOWN
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = health.suspect.notified() => {}
                }
                let reached = tokio::time::timeout(PROBE_TIMEOUT, probe(&mut connection, &options))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".to_owned()));
                if reached.is_err() {
                    connection = None;
                }
                health.log_change(reached, &mut down_since);
            }
        });
    }

    fn log_change(&self, reached: Result<(), String>, down_since: &mut Option<Instant>) {
        match reached {
            Ok(()) => {
                if self.set(true) {
                    let outage = down_since.take().map(|t: Instant| t.elapsed());
                    tracing::info!(
                        event = "database.reachable",
                        outage_ms = outage.map(|d| d.as_millis() as u64),
                        "The database is reachable again; requests are served."
                    );
                }
            }
            Err(error) => {
                if self.set(false) {
                    *down_since = Some(Instant::now());
                    tracing::error!(event = "database.unreachable", error = %error, "The database is unreachable: webhook requests get 503 until it is back.");
                }
            }
        }
    }
}

async fn probe(
    connection: &mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<(), String> {
    if connection.is_none() {
        *connection = Some(options.connect().await.map_err(|e| e.to_string())?);
    }
    match connection.as_mut() {
        Some(connection) => connection.ping().await.map_err(|e| e.to_string()),
        None => Err("not connected".to_owned()),
    }
}

/// Whether `error` can mean the database is out of reach (rather than that a statement is
/// wrong): connection and pool failures, and Postgres's own "connection exception" and
/// "operator intervention" classes (a shutdown, a restart, too many connections).
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_made_before_the_database_came_back_are_not_reused() {
        let health = Health::new();
        assert!(!health.predates_recovery(Duration::from_secs(3600)));
        health.set(false);
        std::thread::sleep(Duration::from_millis(20));
        assert!(health.set(true), "a change");
        assert!(!health.set(true), "no change");
        assert!(health.predates_recovery(Duration::from_secs(1)));
        assert!(!health.predates_recovery(Duration::from_millis(0)));
    }

    #[test]
    fn only_connection_failures_mean_unreachable() {
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(is_unreachable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unreachable(&sqlx::Error::RowNotFound));
        assert!(!is_unreachable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
