//! `easymo serve`: the HTTP server, its error boundary, reloads and graceful shutdown.
//!
//! Owns: the axum router (built-in routes plus the webhook fallback), the middleware that gives
//! every request an id and turns any panic into a JSON 500, the start of every long-running part
//! in order, the reload loop (file watcher and SIGHUP, one at a time, off the request path), and
//! shutdown. Must not know what a webhook means (`gateway` does) nor how connections are
//! accepted, bounded and drained (`connections` does).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::{Env, EnvPolicy};
use crate::gateway::{self, AppState, RequestId};
use crate::http_error::ApiError;
use crate::reload::{LoadError, Outcome, Reloader};
use crate::watch;

/// Postgres connections per engine process. Few on purpose: on 2 cores shared with Postgres,
/// 16 busy backends ran 20% slower than 6 (more context switches, same work); requests queue
/// for a connection instead, which they do for a few milliseconds at most.
const DATABASE_CONNECTIONS: u32 = 6;

/// Connections of the sender: one claim and one result statement run at a time, plus the
/// sweeper, lease renewals and expiries.
const SENDING_CONNECTIONS: u32 = 4;

/// Workers processing batches of messages, each holding one connection while it runs a batch.
/// The other connections serve multi-message deliveries, statuses and recovery.
const MESSAGE_WORKERS: usize = 2;

/// How often rate-limit keys with a full budget are forgotten.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// `easymo serve` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// routes.yaml.
    pub config: PathBuf,
    /// Overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain: Duration,
    /// Count metrics and evaluate alert rules (on unless a benchmark measures their cost).
    pub telemetry: bool,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `server.database_url` is missing.
    #[error(
        "server.database_url is not set in routes.yaml; the engine keeps conversations in Postgres"
    )]
    NoDatabase,
    /// The database is unreachable or behind.
    #[error(transparent)]
    Database(#[from] crate::store::Error),
    /// A runtime failure.
    #[error("{0}")]
    Runtime(String),
}

/// The router: built-in routes, the webhook fallback, and the error boundary around all of it.
pub fn app(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(gateway::healthz))
        .route("/metrics", get(gateway::metrics))
        .route("/readyz", get(gateway::readyz))
        .route("/admin/config", get(gateway::admin_config))
        .route("/admin/tap", get(gateway::admin_tap))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/events", get(crate::dashboard::events))
        .route("/dashboard/assets/{name}", get(crate::dashboard::asset))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } })
        .fallback(gateway::webhook)
        .with_state(state);
    with_boundary(routes)
}

/// Wraps `router` so every response carries `x-request-id` and a panic becomes a JSON 500.
pub fn with_boundary(router: Router) -> Router {
    router.layer(middleware::from_fn(boundary))
}

async fn boundary(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let path = request.uri().path().to_owned();
    let mut response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            tracing::error!(event = "request.panicked", request_id = %id, path = %path, error = %message, "Handler panicked.");
            ApiError::Internal {
                message,
                request_id: id.clone(),
            }
            .into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Runs the server until `shutdown` resolves (for `easymo serve`, [`shutdown_signal`]), then
/// stops accepting connections and lets requests in flight finish within `options.drain`.
pub async fn run(
    options: Options,
    env: Env,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let config_path = options.config.clone();
    let reloader =
        tokio::task::spawn_blocking(move || Reloader::start(&config_path, EnvPolicy::Resolve(env)))
            .await
            .map_err(|e| ServeError::Runtime(e.to_string()))??;
    let reloader = Arc::new(reloader);
    let snapshot = reloader.current();
    let (pool, sending_pool, database) = connect(&snapshot.config).await?;
    // This process, as leases and roll-ups name it.
    let process = crate::store::process_name();
    let mut metrics = crate::metrics::Metrics::new(&snapshot.config);
    metrics.enabled = options.telemetry;
    let metrics = Arc::new(metrics);
    let payments = crate::payments::Wake::default();
    let leadership = crate::leader::start(
        pool.clone(),
        reloader.clone(),
        database.clone(),
        process.clone(),
    );
    let handoff = start_sending(
        (&pool, sending_pool),
        &reloader,
        &metrics,
        &database,
        (&leadership, &payments),
    )?;
    let address = options.listen.unwrap_or(snapshot.config.server.listen);
    let (listener, socket) = listen(address).await?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    let connections = snapshot.config.server.connections;
    let fd_limit = crate::connections::raise_descriptor_limit();
    let cap = crate::connections::connection_cap(connections.max_connections, fd_limit);
    // Take over SIGHUP before saying we listen: its default action ends the process, and a
    // reload requested right after start must not.
    let hangup = hangup_signal();
    tracing::info!(
        event = "server.listening",
        address = %local,
        socket = socket,
        config_version = %snapshot.version,
        endpoints = snapshot.config.endpoints.len(),
        fd_limit,
        max_connections = cap,
        "Listening."
    );

    spawn_reloading(&reloader, &snapshot.files, hangup, &metrics, &pool);

    let batcher = crate::inbound::batcher::Batcher::start(
        pool.clone(),
        MESSAGE_WORKERS,
        (payments.clone(), handoff),
        metrics.clone(),
    );
    let momo = crate::payments::Connection::new()
        .map_err(|e| ServeError::Runtime(format!("cannot set up the HTTP client: {e}")))?;
    crate::payments::workers::start(
        pool.clone(),
        reloader.clone(),
        momo.clone(),
        payments,
        leadership.clone(),
    );
    let alerts = start_alerts(options.telemetry, &pool, &reloader, &metrics, &leadership)?;
    let stepping_down = (leadership.clone(), pool.clone());
    let state = Arc::new(AppState {
        reloader,
        pool,
        batcher,
        momo,
        metrics,
        body_memory: crate::gateway::BodyMemory::new(connections.max_body_memory),
        database,
        leadership,
    });
    let live = state.reloader.clone();
    let settings: crate::connections::Settings =
        Arc::new(move || live.current().config.server.connections);
    crate::connections::serve(listener, app(state), settings, cap, shutdown, options.drain).await;
    if let Some(alerts) = alerts {
        alerts.stop().await;
    }
    let (leadership, pool) = stepping_down;
    leadership.step_down(&pool).await;
    Ok(())
}

/// The pools (the webhooks' and the sender's) on a current schema, and the breaker watching the
/// database.
async fn connect(
    config: &crate::config::Config,
) -> Result<
    (
        sqlx::PgPool,
        sqlx::PgPool,
        Arc<crate::store::health::Health>,
    ),
    ServeError,
> {
    let url = config
        .server
        .database_url
        .as_ref()
        .and_then(|s| s.value.clone())
        .ok_or(ServeError::NoDatabase)?;
    let database = crate::store::health::Health::new();
    let pool = crate::store::connect_watched(&url, DATABASE_CONNECTIONS, false, &database).await?;
    crate::store::check_schema(&pool, config.server.migrations.as_deref()).await?;
    // The sender's statements have a pool of their own: they never wait behind webhooks for a
    // connection, nor webhooks behind them.
    let sending = crate::store::connect_watched(&url, SENDING_CONNECTIONS, true, &database).await?;
    database.watch(crate::store::connect_options(&url)?);
    Ok((pool, sending, database))
}

/// The socket to serve on: the one systemd (or `systemd-socket-activate`) passed, so a restart
/// refuses no connection while the socket stays with it, or else a new one bound to `address`.
/// Says which.
async fn listen(address: std::net::SocketAddr) -> Result<(TcpListener, &'static str), ServeError> {
    let bind_error = |source| ServeError::Bind { address, source };
    let inherited_error = |e: std::io::Error| {
        ServeError::Runtime(format!(
            "cannot take the socket systemd passed (LISTEN_FDS): {e}"
        ))
    };
    let inherited = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .map_err(inherited_error)?;
    match inherited {
        Some(listener) => {
            listener.set_nonblocking(true).map_err(inherited_error)?;
            let listener = TcpListener::from_std(listener).map_err(inherited_error)?;
            Ok((listener, "inherited"))
        }
        None => {
            let listener = TcpListener::bind(address).await.map_err(bind_error)?;
            Ok((listener, "bound"))
        }
    }
}

/// The sender, and the background work around replies: redelivering recorded deliveries (the
/// leader's) and keeping planner statistics current.
fn start_sending(
    (pool, sending_pool): (&sqlx::PgPool, sqlx::PgPool),
    reloader: &Arc<Reloader>,
    metrics: &Arc<crate::metrics::Metrics>,
    database: &Arc<crate::store::health::Health>,
    (leadership, payments): (&Arc<crate::leader::Leadership>, &crate::payments::Wake),
) -> Result<crate::outbound::Handoff, ServeError> {
    let handoff = crate::outbound::start(
        sending_pool,
        reloader.clone(),
        metrics.clone(),
        leadership.clone(),
    )
    .map_err(|e| ServeError::Runtime(format!("cannot set up the HTTP client: {e}")))?;
    tokio::spawn(
        crate::inbound::redelivery::Redelivery {
            pool: pool.clone(),
            reloader: reloader.clone(),
            payments: payments.clone(),
            handoff: handoff.clone(),
            health: database.clone(),
            leadership: leadership.clone(),
        }
        .run(),
    );
    tokio::spawn(crate::store::stats::keep_current(pool.clone()));
    Ok(handoff)
}

/// The alert evaluator, unless telemetry is off.
fn start_alerts(
    telemetry: bool,
    pool: &sqlx::PgPool,
    reloader: &Arc<Reloader>,
    metrics: &Arc<crate::metrics::Metrics>,
    leadership: &Arc<crate::leader::Leadership>,
) -> Result<Option<crate::alerts::Alerts>, ServeError> {
    if !telemetry {
        tracing::warn!(
            event = "telemetry.off",
            "Metrics are not counted and alert rules are not evaluated (--without-telemetry)."
        );
        return Ok(None);
    }
    crate::alerts::start(
        pool.clone(),
        reloader.clone(),
        metrics.clone(),
        leadership.clone(),
    )
    .map(Some)
    .map_err(|e| ServeError::Runtime(format!("cannot set up the HTTP client: {e}")))
}

/// SIGHUP, taken over so that it reloads instead of ending the process.
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(event = "config.sighup_unavailable", error = %error, "SIGHUP reloads are unavailable.");
            None
        }
    }
}

/// Reloads on file changes and SIGHUP, and sweeps idle limiter keys.
fn spawn_reloading(
    reloader: &Arc<Reloader>,
    files: &[PathBuf],
    hangup: Option<tokio::signal::unix::Signal>,
    metrics: &Arc<crate::metrics::Metrics>,
    pool: &sqlx::PgPool,
) {
    // Sessions left waiting in a flow this config lacks (edited while the engine was down).
    tokio::spawn(count_stranded(reloader.clone(), pool.clone()));
    let (reload_tx, reload_rx) = mpsc::channel(4);
    // Without a watcher, SIGHUP still reloads: a watch failure is worth a warning, not an outage.
    let watcher = watch::spawn(files, reload_tx.clone())
        .map_err(|error| tracing::warn!(event = "config.watch_failed", error = %error, "Not watching the config files; SIGHUP still reloads."))
        .ok();
    tokio::spawn(reload_loop(
        reloader.clone(),
        reload_rx,
        reload_tx,
        watcher,
        hangup,
        metrics.clone(),
        pool.clone(),
    ));
    let sweeper = reloader.clone();
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LIMITER_SWEEP);
        loop {
            every.tick().await;
            sweeper.sweep_limiters();
            let shared = sweeper.current().config.server.rate_limits
                == crate::config::RateLimitStore::Postgres;
            if shared {
                // Budgets whole again are as good as none; any replica may forget them.
                if let Err(error) = crate::store::ratelimits::forget_whole(&pool).await {
                    tracing::debug!(event = "ratelimit.sweep_failed", error = %error, "Could not forget whole shared budgets.");
                }
            }
        }
    });
}

/// Reloads on every file-change signal and on SIGHUP, one at a time.
async fn reload_loop(
    reloader: Arc<Reloader>,
    mut changes: mpsc::Receiver<()>,
    resend: mpsc::Sender<()>,
    mut watcher: Option<watch::Watcher>,
    mut hangup: Option<tokio::signal::unix::Signal>,
    metrics: Arc<crate::metrics::Metrics>,
    pool: sqlx::PgPool,
) {
    // Held for as long as the loop runs; replaced when the set of flow files changes.
    loop {
        let cause = tokio::select! {
            change = changes.recv() => match change { Some(()) => "file_change", None => return },
            Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "sighup",
        };
        let before = reloader.current().files.clone();
        let worker = reloader.clone();
        let outcome = match tokio::task::spawn_blocking(move || worker.reload()).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(event = "config.reload_failed", error = %error, "Reload task failed.");
                continue;
            }
        };
        match outcome {
            Outcome::Reloaded { version, changes } => {
                count_reload(&metrics, "ok");
                let changed = serde_json::to_string(&changes).unwrap_or_default();
                tracing::info!(event = "config.reloaded", cause = cause, config_version = %version, changes = %changed, "Configuration reloaded.");
                // Off the loop: a slow database must not hold up the next reload.
                tokio::spawn(count_stranded(reloader.clone(), pool.clone()));
                let files = reloader.current().files.clone();
                if files != before {
                    match watch::spawn(&files, resend.clone()) {
                        Ok(new) => drop(watcher.replace(new)),
                        Err(error) => {
                            tracing::warn!(event = "config.watch_failed", error = %error, "Could not watch the new flow files; SIGHUP still reloads.")
                        }
                    }
                }
            }
            Outcome::Unchanged => tracing::info!(
                event = "config.unchanged",
                cause = cause,
                "Reloaded: the files are as they serve, nothing changed."
            ),
            Outcome::Rejected(error) => {
                count_reload(&metrics, "rejected");
                tracing::error!(event = "config.reload_rejected", cause = cause, error = %error, "Reload rejected; the previous configuration keeps serving.");
                // The same diagnostics `easymo lint` prints, for whoever is watching the logs.
                eprintln!("{error}");
            }
        }
    }
}

/// Counts the live sessions that wait in a flow the serving config does not have, and says so
/// in the log and on `/admin/config`: a reload that removes or renames an awaited flow is taken,
/// but never silently.
async fn count_stranded(reloader: Arc<Reloader>, pool: sqlx::PgPool) {
    let awaitable = reloader.current().config.flows.awaitable_names();
    match crate::store::conversation::stranded_sessions(&pool, &awaitable).await {
        Ok(stranded) => {
            for (flow, sessions) in &stranded {
                tracing::warn!(event = "config.sessions_stranded", awaited_flow = %flow, sessions = sessions, "Live sessions await a flow this configuration does not have; their next answer goes to the fallback flow.");
            }
            reloader.stats.note_stranded(&stranded);
        }
        Err(error) => {
            tracing::warn!(event = "config.sessions_uncounted", error = %error, "Could not count the sessions awaiting removed flows.")
        }
    }
}

fn count_reload(metrics: &crate::metrics::Metrics, result: &str) {
    metrics
        .reloads
        .get_or_create(&crate::metrics::ReloadLabels {
            result: result.to_owned(),
        })
        .inc();
}

/// Resolves on SIGTERM or SIGINT, saying which in the log. Both are taken over when this is
/// called (not when it is first polled), so call it before the server announces that it listens.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let signal = tokio::select! {
            () = wait(interrupt) => "SIGINT",
            () = wait(terminate) => "SIGTERM",
        };
        tracing::info!(event = "server.signal", signal = signal, "Signal received.");
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use axum::http::StatusCode;
    use axum::Json;
    use serde_json::json;

    use super::*;

    async fn ok_json() -> Response {
        (StatusCode::OK, Json(json!({"ok": true}))).into_response()
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_json_500_with_the_request_id() {
        let router = with_boundary(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("database exploded");
                }
                ok_json().await
            }),
        ));
        let request = Request::get("/boom")
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "req-42");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "internal_error");
        assert_eq!(json["requestId"], "req-42");
        assert!(
            !json["message"]
                .as_str()
                .unwrap_or_default()
                .contains("database"),
            "internals must not leak: {json}"
        );
    }

    #[tokio::test]
    async fn request_ids_are_generated_when_missing_or_unsafe() {
        let router = with_boundary(Router::new().route("/ok", get(ok_json)));
        let request = Request::get("/ok")
            .header("x-request-id", "bad id\twith spaces")
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(id.len(), 36, "{id}");
    }
}
