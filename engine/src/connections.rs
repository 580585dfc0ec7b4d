//! Connections: accepting them, bounding them, reading what a client sends in time, serving
//! them over HTTP/1.1, and closing them cleanly when the server stops.
//!
//! Owns: the file-descriptor limit (raised to the hard limit at start), the connection cap and
//! what happens to connections over it (probes answered, the rest told 503, the newest shed
//! first), the deadline for a new connection's first request headers and for an idle
//! keep-alive connection's next ones, the JSON refusals of requests too broken or too slow to
//! reach a handler (and of later requests on a keep-alive connection that hyper itself refuses,
//! rewritten in `stream`), and the drain (`Connection: close` on the last responses, idle connections
//! closed after a moment). Must not know what a request means: it serves the `Router` the
//! server hands it, and its refusals are [`ApiError`]s like everyone else's.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue};
use axum::Router;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::config::Connections;
use crate::http_error::ApiError;

mod stream;

use stream::{Answers, Stream};

/// Descriptors kept for everything that is not a client connection: the database pools, the
/// config files and their watcher, outbound HTTP to Meta, MoMo and alert channels, logs.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Connections taken beyond the cap only to answer a probe or say 503: without them, a full
/// server could not even say it is full, and `/healthz` would time out in the accept queue.
const SHED_SLOTS: usize = 64;

/// How long a connection over the cap may take to send its headers.
const SHED_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest request line plus headers (nginx's default large header buffers are 4 × 8 KiB;
/// Meta's deliveries carry well under 2 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header lines in one request.
const MAX_HEADERS: usize = 100;

/// During the drain, how long an idle keep-alive connection stays open for one last request
/// (answered with `Connection: close`) before it is closed. Closing at once races with a client
/// that is sending on it right then, which the client sees as a failed request.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Paths still served on connections over the cap.
const PROBES: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// How often the "connections shed" warning may be logged.
const SHED_WARNING_EVERY_SECS: u64 = 10;

/// Raises the soft limit on open files to the hard limit and returns the limit now in force.
/// A few thousand idle sockets are cheap; running out of descriptors stops all service.
pub fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            let current = rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024);
            tracing::warn!(event = "server.fd_limit_unchanged", error = %error, limit = current, "Could not raise the open-file limit.");
            current
        }
    }
}

/// The connections served at once: as configured, but always leaving room below `fd_limit` for
/// the shed slots and everything that is not a client.
pub fn connection_cap(configured: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(RESERVED_DESCRIPTORS + SHED_SLOTS as u64);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Live settings: read for every new connection, so a reload applies to the next one.
pub type Settings = Arc<dyn Fn() -> Connections + Send + Sync>;

/// What every connection task shares.
struct Shared {
    app: Router,
    settings: Settings,
    cap: usize,
    served: AtomicUsize,
    shed: AtomicUsize,
    draining: AtomicBool,
    last_shed_warning: AtomicU64,
}

/// Serves `listener` with `app` until `shutdown`, then stops accepting and gives connections
/// `drain` to finish: requests in flight complete, idle keep-alive connections are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    cap: usize,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let shared = Arc::new(Shared {
        app,
        settings,
        cap,
        served: AtomicUsize::new(0),
        shed: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        last_shed_warning: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => admit(&shared, stream, peer, stop_rx.clone()),
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                // Out of descriptors, most likely: wait for some to close instead of spinning.
                tracing::error!(event = "server.accept_failed", error = %error, "Could not accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    drop(stop_rx);
    tracing::info!(
        event = "server.shutting_down",
        drain_ms = drain.as_millis() as u64,
        connections = shared.served.load(Ordering::Relaxed),
        "Shutting down: no new connections, finishing requests in flight."
    );
    shared.draining.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(drain, stop_tx.closed()).await {
        Ok(()) => tracing::info!(event = "server.stopped", "All requests finished; stopped."),
        Err(_) => tracing::warn!(
            event = "server.stopped",
            "Drain deadline passed with requests still in flight; stopped."
        ),
    }
}

/// Errors of one connection that arrived and died before it was accepted.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Whether a connection is served in full or only to answer a probe or say 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Served,
    Shed,
}

/// Counts a connection out when its task ends.
struct Slot {
    shared: Arc<Shared>,
    admission: Admission,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let count = match self.admission {
            Admission::Served => &self.shared.served,
            Admission::Shed => &self.shared.shed,
        };
        count.fetch_sub(1, Ordering::SeqCst);
    }
}

fn admit(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>) {
    let admission = if take(&shared.served, shared.cap) {
        Admission::Served
    } else if take(&shared.shed, SHED_SLOTS) {
        warn_shedding(shared);
        Admission::Shed
    } else {
        // Not even room to say no: closing at once keeps the descriptor free.
        warn_shedding(shared);
        drop(stream);
        return;
    };
    let slot = Slot {
        shared: shared.clone(),
        admission,
    };
    tokio::spawn(connection(slot, stream, peer, stop));
}

/// Takes one of `limit` places in `count`, if one is free.
fn take(count: &AtomicUsize, limit: usize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

fn warn_shedding(shared: &Shared) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = shared.last_shed_warning.load(Ordering::Relaxed);
    if now >= last + SHED_WARNING_EVERY_SECS
        && shared
            .last_shed_warning
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            event = "server.connections_shed",
            max_connections = shared.cap,
            "At the connection cap: new connections get 503 (probes still answered)."
        );
    }
}

async fn connection(
    slot: Slot,
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let settings = (slot.shared.settings)();
    let shed = slot.admission == Admission::Shed;
    let header_timeout = if shed {
        SHED_HEADER_TIMEOUT
    } else {
        settings.header_timeout
    };
    let head = match read_head(&mut stream, header_timeout).await {
        Head::Complete(head) => head,
        Head::Nothing => return,
        Head::Refused(error) => return refuse(stream, error).await,
    };
    if shed && !PROBES.contains(&head.path.as_str()) {
        return refuse(stream, ApiError::Overloaded { retry_after: 1 }).await;
    }
    let shared = slot.shared.clone();
    let answers = Answers::default();
    let owed = answers.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let shared = shared.clone();
        let owed = owed.clone();
        async move {
            let Ok(mut response) = shared.app.clone().oneshot(request).await;
            if shed || shared.draining.load(Ordering::SeqCst) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            owed.owe();
            Ok::<_, Infallible>(response)
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(!shed);
    let io = TokioIo::new(Stream::new(head.bytes, stream, answers));
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    if tokio::time::timeout(DRAIN_LINGER, conn.as_mut())
        .await
        .is_ok()
    {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A first request's head, read whole, with whatever followed it.
struct FirstHead {
    bytes: BytesMut,
    path: String,
}

enum Head {
    Complete(FirstHead),
    /// Closed, or silent until the deadline: there is nobody to answer.
    Nothing,
    Refused(ApiError),
}

/// Reads until the first request's line and headers are complete, within `timeout` in all (a
/// client sending one byte a second gets no more time than one sending nothing).
async fn read_head(stream: &mut TcpStream, timeout: Duration) -> Head {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bytes = BytesMut::with_capacity(2048);
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut bytes)).await {
            Err(_) if bytes.is_empty() => return Head::Nothing,
            Err(_) => return Head::Refused(ApiError::Timeout { what: "headers" }),
            Ok(Ok(0) | Err(_)) => return Head::Nothing,
            Ok(Ok(_)) => {}
        }
        match parse_head(&bytes) {
            Ok(Some(path)) => return Head::Complete(FirstHead { bytes, path }),
            Ok(None) => {}
            Err(error) => return Head::Refused(error),
        }
    }
}

/// The path of a complete head, `None` while incomplete, or why it is refused.
fn parse_head(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_BYTES => {
            Err(ApiError::HeadersTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        Ok(httparse::Status::Complete(_)) => {
            let target = request.path.unwrap_or("/");
            let path = target.split('?').next().unwrap_or(target);
            Ok(Some(path.to_owned()))
        }
        Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD_BYTES => {
            Err(ApiError::HeadersTooLarge {
                limit: MAX_HEAD_BYTES,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ApiError::HeadersTooLarge {
            limit: MAX_HEAD_BYTES,
        }),
        Err(error) => Err(ApiError::MalformedRequest(format!(
            "the request line or headers cannot be read: {error}"
        ))),
    }
}

/// Answers a refusal the router never saw, in the same JSON as every other, and closes.
async fn refuse(mut stream: TcpStream, error: ApiError) {
    let answer = error.to_http1_close();
    let written = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(SHED_HEADER_TIMEOUT, written)
        .await
        .is_ok_and(|written| written.is_ok())
    {
        // Read what the client is still sending for a moment: closing with unread bytes resets
        // the connection, and a reset can destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(SHED_HEADER_TIMEOUT, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_below_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, 1024), 1024 - 128 - 64);
        assert_eq!(connection_cap(500, 1024), 500);
        assert_eq!(connection_cap(10_000, 100), 1);
        assert_eq!(connection_cap(10_000, 1_048_576), 10_000);
    }

    #[test]
    fn heads_are_complete_partial_too_large_or_malformed() {
        assert_eq!(
            parse_head(b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
                .ok()
                .flatten()
                .as_deref(),
            Some("/healthz")
        );
        assert!(matches!(
            parse_head(b"GET /healthz HTTP/1.1\r\nHo"),
            Ok(None)
        ));
        let long = format!(
            "GET / HTTP/1.1\r\nX-Filler: {}\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(
            parse_head(long.as_bytes()),
            Err(ApiError::HeadersTooLarge { .. })
        ));
        let complete_but_long = format!("{long}\r\n");
        assert!(matches!(
            parse_head(complete_but_long.as_bytes()),
            Err(ApiError::HeadersTooLarge { .. })
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(ApiError::MalformedRequest(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(ApiError::HeadersTooLarge { .. })
        ));
    }

    #[test]
    fn places_are_taken_up_to_the_limit_only() {
        let count = AtomicUsize::new(0);
        assert!(take(&count, 2));
        assert!(take(&count, 2));
        assert!(!take(&count, 2));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
