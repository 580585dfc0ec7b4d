//! Alerting: the rules of routes.yaml evaluated on a fixed interval over sliding windows, and
//! their notices sent to Slack, PagerDuty and Alertmanager-style receivers.
//!
//! Owns: the alert lifecycle. Every process rolls its request figures (the metrics' tally) up
//! into Postgres once per evaluation interval; the one process holding the `alerts` lease reads
//! every process's roll-ups of the window, evaluates the rules ([`rules`]), keeps their state
//! in Postgres so that `for` progress survives a restart or a new leader, and queues notices
//! for the channels ([`channels`]). `easymo alerts test` and `export` ([`promtool`]) run the
//! same rules on promtool's test files and write them for Prometheus. Must not touch requests:
//! nothing here is on a request's path, and a channel that is down delays only itself.

pub mod channels;
pub mod export;
pub mod promtool;
pub mod rules;
pub mod series;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::store::alerts as store;
use channels::Notifier;
use rules::{Evaluator, Observation};

/// Roll-ups are kept this many windows back, at least an hour, for operators to query.
const KEPT_WINDOWS: f64 = 2.0;

/// The running evaluation loop.
#[derive(Debug)]
pub struct Alerts {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Alerts {
    /// Rolls up the last figures and stops (the server then lets go of the leader lease, so
    /// another process takes over at once).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the loop: every process rolls up; the leader (see `crate::leader`) evaluates and
/// notifies.
pub fn start(
    pool: PgPool,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    leadership: Arc<crate::leader::Leadership>,
) -> Result<Alerts, reqwest::Error> {
    let notifier = Notifier::new(metrics.clone())?;
    let (stop, stopped) = watch::channel(false);
    let round = Round {
        pool,
        reloader,
        metrics,
        notifier,
        process: leadership.process().to_owned(),
        leadership,
        evaluator: None,
        rounds: 0,
    };
    let task = tokio::spawn(run(round, stopped));
    Ok(Alerts { stop, task })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Round {
    pool: PgPool,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    process: String,
    leadership: Arc<crate::leader::Leadership>,
    /// `Some` while this process leads.
    evaluator: Option<Evaluator>,
    rounds: u64,
}

async fn run(mut round: Round, mut stopped: watch::Receiver<bool>) {
    loop {
        let interval = round
            .reloader
            .current()
            .config
            .alerting
            .evaluation_interval
            .as_secs_f64();
        // Rounds fall on multiples of the interval, the same instants on every process, so
        // that each roll-up covers one whole bucket.
        let now = unix_now();
        let next = ((now / interval).floor() + 1.0) * interval;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(next - now)) => {}
            _ = stopped.changed() => break,
        }
        round.once(next, interval).await;
    }
    round.roll_up(unix_now(), 0.0).await;
    round.step_down().await;
}

impl Round {
    async fn once(&mut self, now: f64, interval: f64) {
        self.rounds += 1;
        self.roll_up(now, interval).await;
        let snapshot = self.reloader.current();
        let config = &snapshot.config;
        if config.alerts.is_empty() {
            self.step_down().await;
            return;
        }
        if !self.leadership.is_leader() {
            if self.evaluator.take().is_some() {
                tracing::warn!(event = "alerts.leader_lost", process = %self.process, "Another process evaluates alert rules now.");
            }
            self.metrics.alerts_leader.set(0);
            self.metrics.alerts_firing.set(0);
            return;
        }
        let evaluator = match self.evaluator.take() {
            Some(evaluator) => evaluator,
            None => match store::states(&self.pool).await {
                Ok(states) => {
                    tracing::info!(event = "alerts.leader", process = %self.process, pending_or_firing = states.len(), "This process evaluates alert rules.");
                    self.metrics.alerts_leader.set(1);
                    Evaluator::restore(&states)
                }
                Err(error) => {
                    tracing::warn!(event = "alerts.state_unreadable", error = %error, "Could not read alert state; trying next round.");
                    return;
                }
            },
        };
        let evaluator = self.evaluator.insert(evaluator);
        let window = config.alerting.window.as_secs_f64();
        let since = now - window;
        let read = tokio::try_join!(
            store::window(&self.pool, since),
            store::system_figures(&self.pool, since)
        );
        let (endpoints, system) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(event = "alerts.figures_unreadable", error = %error, "Could not read the window's figures; not evaluating this round.");
                return;
            }
        };
        let observation = Observation {
            window_seconds: window,
            endpoints,
            system,
        };
        let repeat = config.alerting.repeat_interval.as_secs_f64();
        let notices = evaluator.evaluate(&config.alerts, &observation, now, repeat);
        self.metrics
            .alerts_firing
            .set(i64::try_from(evaluator.firing()).unwrap_or(i64::MAX));
        if let Err(error) = store::save_states(&self.pool, &evaluator.states()).await {
            tracing::warn!(event = "alerts.state_unsaved", error = %error, "Could not save alert state; a new leader may repeat a notice.");
        }
        for notice in &notices {
            self.notifier.notify(config, notice);
        }
        if self.rounds.is_multiple_of(20) {
            let before = now - (window * KEPT_WINDOWS).max(3600.0);
            if let Err(error) = store::prune_rollups(&self.pool, before).await {
                tracing::warn!(event = "alerts.prune_failed", error = %error, "Could not drop old roll-ups.");
            }
        }
    }

    /// Stores what this process counted since the last round, as the bucket that just ended.
    async fn roll_up(&self, now: f64, interval: f64) {
        let figures = self.metrics.tally.take();
        if figures.is_empty() {
            return;
        }
        let bucket = if interval > 0.0 { now - interval } else { now };
        if let Err(error) = store::add_rollup(&self.pool, bucket, &self.process, &figures).await {
            tracing::warn!(event = "alerts.rollup_failed", error = %error, "Could not store this interval's figures; they go with the next.");
            self.metrics.tally.restore(figures);
        }
    }

    async fn step_down(&mut self) {
        if self.evaluator.take().is_some() {
            self.metrics.alerts_leader.set(0);
        }
    }
}
