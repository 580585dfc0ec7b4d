//! The background work of payments: sending the requests to pay flows recorded, and polling
//! MoMo for payments that waited too long for a callback. Each loop reads the live config on
//! every round, so a reload that adds, changes or removes `momo:` takes effect without a
//! restart.
//!
//! Owns: the two loops and how often they run. Must not decide anything about a payment:
//! [`super::requests`] and [`super::callbacks`] do.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::{momo, Connection, Wake};
use crate::reload::Reloader;

/// How often the sender looks for requests whose earlier attempt got no answer.
const RESEND_CHECK: Duration = Duration::from_secs(2);
/// How often the poller looks again while no `momo:` account is configured.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Starts both loops; they run until the process ends. Only the leader polls (see
/// `crate::leader`); every replica sends the requests its flows record.
pub fn start(
    pool: PgPool,
    reloader: Arc<Reloader>,
    connection: Connection,
    wake: Wake,
    leadership: Arc<crate::leader::Leadership>,
) {
    tokio::spawn(poll_overdue(
        pool.clone(),
        reloader.clone(),
        connection.clone(),
        leadership,
    ));
    tokio::spawn(send_requests(pool, reloader, connection, wake));
}

/// Polls MoMo for payments that waited too long for a callback, with whatever `momo:` account
/// the live config has.
async fn poll_overdue(
    pool: PgPool,
    reloader: Arc<Reloader>,
    connection: Connection,
    leadership: Arc<crate::leader::Leadership>,
) {
    loop {
        if !leadership.is_leader() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let snapshot = reloader.current();
        let Some(account) = snapshot.config.momo.clone() else {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        let every = account
            .poll_after
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let poll_after = account.poll_after;
        let client = connection.client(account);
        match super::poll_overdue(&pool, &snapshot.config, &client, poll_after).await {
            Ok(polled) => {
                for (reference_id, outcome) in polled {
                    tracing::info!(event = "momo.polled", reference_id = %reference_id, outcome = %outcome, "Polled a payment with no callback.");
                }
            }
            Err(error) => {
                tracing::warn!(event = "momo.poll_failed", error = %error, "Could not poll pending payments.");
            }
        }
        drop(snapshot);
        tokio::time::sleep(every).await;
    }
}

/// Sends the requests to pay flows record: woken after each commit that recorded one, and
/// every few seconds for those whose earlier attempt got no answer.
async fn send_requests(pool: PgPool, reloader: Arc<Reloader>, connection: Connection, wake: Wake) {
    loop {
        tokio::select! {
            () = wake.requests_recorded() => {}
            () = tokio::time::sleep(RESEND_CHECK) => {}
        }
        let snapshot = reloader.current();
        let Some(account) = snapshot.config.momo.clone() else {
            continue;
        };
        // An unanswered request waits twice the call timeout before it is re-sent.
        let resend_after = (account.timeout * 2).max(Duration::from_secs(1));
        let client: momo::Client = connection.client(account);
        if let Err(error) =
            super::send_requests(&pool, &snapshot.config, &client, resend_after).await
        {
            tracing::warn!(event = "momo.send_failed", error = %error, "Could not send requests to pay.");
        }
    }
}
