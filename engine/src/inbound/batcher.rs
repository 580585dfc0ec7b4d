//! Group commit for webhook deliveries: one-message deliveries that arrive while others are
//! being processed wait in a queue, and the worker takes what has queued up as one batch
//! ([`process::batch`]): one transaction, two statements and one commit for all of them.
//!
//! Owns: the queues (one per worker; a sender's messages always go to the same one, in
//! arrival order), the workers and how big a batch gets. Must not know HTTP or decide anything
//! about a message: `process` does. Under light load a batch is one message, so nothing waits
//! for company; under heavy load batches grow and the database does less work per message.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::FutureExt as _;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::process::{self, Delivery, Handled, Inbound, Replies};
use super::Single;
use crate::outbound::Handoff;
use crate::payments::Wake;
use crate::reload::Snapshot;

/// The most messages one transaction takes.
const MAX_BATCH: usize = 64;
/// How often a worker whose queue ran dry lets the requests already read on its thread (signed,
/// parsed, a few microseconds from the queue) join the batch before it starts. Postgres spends
/// about a millisecond of CPU per batch whatever its size, so a larger batch is cheaper per
/// message: in the load test, 2 to 8 yields gave 8-10% more messages a second than none, with
/// less CPU per message in both the engine and Postgres. Alone, a message waits microseconds.
const GATHER_YIELDS: u32 = 4;
/// Deliveries waiting for a worker before submitters wait too.
const QUEUE: usize = 4096;

/// Why a delivery was not processed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The database refused or failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The delivery holds more than one message (use [`process::delivery`]).
    #[error("the delivery does not hold exactly one message")]
    NotSingle,
    /// The workers have stopped (the server is shutting down).
    #[error("the message workers have stopped")]
    Stopped,
    /// Processing panicked (a bug); the delivery is recorded for a retry.
    #[error("processing the message panicked")]
    Panicked,
}

/// A one-message delivery, owned, with everything needed to process it.
#[derive(Debug)]
pub struct Job {
    /// The config the request started with.
    pub snapshot: Arc<Snapshot>,
    /// Index of the endpoint in `snapshot.config.endpoints`.
    pub endpoint: usize,
    /// The parsed delivery, its one message found.
    pub single: Single,
    /// The headers kept with the record.
    pub headers: Value,
    /// The raw body.
    pub body: Bytes,
    /// For logs.
    pub request_id: String,
}

#[derive(Debug)]
struct Queued {
    job: Job,
    done: oneshot::Sender<Result<Handled, BatchError>>,
}

/// One queue per worker in front of the workers.
#[derive(Debug, Clone)]
pub struct Batcher {
    queues: Vec<mpsc::Sender<Queued>>,
    payments: Wake,
    handoff: Handoff,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Batcher {
    /// Starts `workers` workers on `pool`. Each holds one connection while it runs a batch,
    /// wakes `payments` after a commit that recorded requests to pay, and hands the replies it
    /// committed to the sender through `handoff`.
    pub fn start(
        pool: PgPool,
        workers: usize,
        (payments, handoff): (Wake, Handoff),
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let queues = (0..workers.max(1))
            .map(|_| {
                let (queue, receiver) = mpsc::channel(QUEUE);
                tokio::spawn(work(
                    pool.clone(),
                    receiver,
                    (payments.clone(), handoff.clone()),
                    metrics.clone(),
                ));
                queue
            })
            .collect();
        Batcher {
            queues,
            payments,
            handoff,
            metrics,
        }
    }

    /// What the workers wake when requests to pay are committed.
    pub fn payments(&self) -> &Wake {
        &self.payments
    }

    /// Where committed replies go to be sent.
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// Processes a one-message delivery with whatever else is queued, and returns what
    /// happened to its message once it is committed.
    ///
    /// A sender's messages always go to the same worker, which takes them in arrival order:
    /// two workers never race for one conversation inside this process (across processes the
    /// per-sender lock orders them).
    pub async fn process(&self, job: Job) -> Result<Handled, BatchError> {
        let sender = job.single.sender();
        let worker = sender.map_or(0, |s| {
            let hash = s.bytes().fold(0_usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(b))
            });
            hash % self.queues.len()
        });
        let queue = self.queues.get(worker).ok_or(BatchError::Stopped)?;
        let (done, result) = oneshot::channel();
        queue
            .send(Queued { job, done })
            .await
            .map_err(|_| BatchError::Stopped)?;
        let handled = result.await.map_err(|_| BatchError::Stopped)??;
        Ok(handled)
    }

    /// Counts the replies one message's flow wrote, by template.
    pub fn count_replies<'a>(&self, templates: impl Iterator<Item = &'a str>) {
        if !self.metrics.enabled {
            return;
        }
        for template in templates {
            self.metrics
                .replies
                .get_or_create(&crate::metrics::TemplateLabels {
                    template: template.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one message's outcome in the metrics; a failed flow also counts against its
    /// endpoint's error rate.
    pub fn count(&self, endpoint: &str, outcome: process::MessageOutcome, flow: Option<&str>) {
        if !self.metrics.enabled {
            return;
        }
        if outcome == process::MessageOutcome::Failed {
            self.metrics.tally.failed_flow(endpoint);
        }
        self.metrics
            .messages
            .get_or_create(&crate::metrics::MessageLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.as_str().to_owned(),
                flow: flow.unwrap_or("none").to_owned(),
            })
            .inc();
    }
}

async fn work(
    pool: PgPool,
    mut receiver: mpsc::Receiver<Queued>,
    (payments, handoff): (Wake, Handoff),
    metrics: Arc<crate::metrics::Metrics>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let mut yields = GATHER_YIELDS;
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) if yields > 0 => {
                    yields -= 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        let size = batch.len() as f64;
        let started = std::time::Instant::now();
        let requested = run(&pool, batch, &handoff).await;
        if metrics.enabled {
            metrics.batch_size.observe(size);
            metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if requested {
            payments.requests_committed();
        }
    }
}

/// Runs a batch and answers every submitter; says whether requests to pay were committed. A
/// failure or a panic of the batch is never its neighbours' problem: each message is then tried
/// on its own, a panic caught each time, so a worker survives any one message.
async fn run(pool: &PgPool, batch: Vec<Queued>, handoff: &Handoff) -> bool {
    let jobs: Vec<&Job> = batch.iter().map(|q| &q.job).collect();
    let mut payments = false;
    let error = match guarded(pool, &jobs, handoff).await {
        Ok(handled) => {
            for (queued, handled) in batch.into_iter().zip(handled) {
                payments |= handled.payments_requested > 0;
                let _ = queued.done.send(Ok(handled));
            }
            return payments;
        }
        Err(error) => error,
    };
    if batch.len() == 1 {
        if let Some(queued) = batch.into_iter().next() {
            let _ = queued.done.send(Err(error));
        }
        return false;
    }
    tracing::warn!(event = "batch.retried_alone", size = batch.len(), error = %error, "A batch failed; its messages are processed one by one.");
    for queued in batch {
        let result = guarded(pool, &[&queued.job], handoff)
            .await
            .map(|mut handled| handled.remove(0));
        payments |= result.as_ref().is_ok_and(|h| h.payments_requested > 0);
        let _ = queued.done.send(result);
    }
    payments
}

/// [`process_jobs`] with a panic turned into an error.
async fn guarded(
    pool: &PgPool,
    jobs: &[&Job],
    handoff: &Handoff,
) -> Result<Vec<Handled>, BatchError> {
    match std::panic::AssertUnwindSafe(process_jobs(pool, jobs, handoff))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(
                event = "batch.panicked",
                size = jobs.len(),
                "Processing panicked; the deliveries are recorded for a retry."
            );
            Err(BatchError::Panicked)
        }
    }
}

/// Processes jobs as one batch; one result per job, in order.
async fn process_jobs(
    pool: &PgPool,
    jobs: &[&Job],
    handoff: &Handoff,
) -> Result<Vec<Handled>, BatchError> {
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        let endpoint = job
            .snapshot
            .config
            .endpoints
            .get(job.endpoint)
            .ok_or(BatchError::NotSingle)?;
        let (value, message) = job.single.parts().ok_or(BatchError::NotSingle)?;
        items.push(Inbound {
            config: &job.snapshot.config,
            caches: &job.snapshot.caches,
            endpoint,
            delivery: Delivery::Record(crate::store::conversation::Raw {
                endpoint: &endpoint.name,
                headers: &job.headers,
                body: &job.body,
            }),
            value,
            message,
            // The delivery is the message: its raw body is kept.
            payload: None,
            request_id: &job.request_id,
            replies: Replies::ToOutbox(handoff),
        });
    }
    let handled = process::batch(pool, &items).await?;
    if handled.len() == jobs.len() {
        Ok(handled)
    } else {
        Err(BatchError::NotSingle)
    }
}
