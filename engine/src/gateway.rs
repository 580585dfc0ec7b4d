//! The webhook pipeline: request → endpoint → auth → limit → route → response.
//!
//! Owns: what happens to one request on a configured endpoint, in that order, and the logs that
//! say so. Every refusal is an [`ApiError`]; nothing here panics on input. Must not reach back
//! into config loading or the server: it reads the snapshot it is handed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use crate::auth::{self, client_ip};
use crate::config::{Auth, Endpoint, EndpointKind, LimitKey, OnLimit};
use crate::http_error::ApiError;
use crate::inbound;
use crate::logging::mask;
use crate::payments::{CallbackOutcome, SmsIntake};
use crate::ratelimit::{self, ceil_secs, Key, Limiter, Verdict};
use crate::reload::{Reloader, Snapshot};
use crate::whatsapp::Envelope;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The live config.
    pub reloader: Arc<Reloader>,
    /// The database.
    pub pool: sqlx::PgPool,
    /// Where one-message deliveries are processed, together with their neighbours.
    pub batcher: crate::inbound::batcher::Batcher,
    /// Connections to the MoMo API and its tokens, shared by every request.
    pub momo: crate::payments::Connection,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Room for request bodies, shared by all requests.
    pub body_memory: BodyMemory,
    /// Whether Postgres is reachable: while it is not, webhooks are refused at once.
    pub database: Arc<crate::store::health::Health>,
    /// Whether this replica leads the background work, and its name.
    pub leadership: Arc<crate::leader::Leadership>,
}

/// Seconds a caller is asked to wait while the database is unreachable (Meta and the SMS
/// gateway retry on their own schedules; this is for everyone else).
const DATABASE_RETRY_AFTER: u64 = 5;

/// Longest a request waits for a shared rate-limit decision before its process decides alone:
/// a slow database must not make every request slow.
const SHARED_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Memory for request bodies, shared by all requests, in KiB. A body is counted at its
/// declared length (or the limit, when chunked) before a byte of it is read, and until the
/// request is answered: 200 slow 3 MB uploads cannot pin 600 MB.
#[derive(Debug, Clone)]
pub struct BodyMemory(Arc<tokio::sync::Semaphore>);

impl BodyMemory {
    /// Room for `bytes` of bodies at once.
    pub fn new(bytes: usize) -> Self {
        let permits = kib(bytes).min(tokio::sync::Semaphore::MAX_PERMITS);
        BodyMemory(Arc::new(tokio::sync::Semaphore::new(permits)))
    }

    /// Room for one body of `bytes`, if there is some now.
    fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = u32::try_from(kib(bytes)).ok()?;
        self.0.clone().try_acquire_many_owned(permits).ok()
    }
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// The id of one request: from `x-request-id` when the caller sent a sane one, else generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Handles a request to any path that is not a built-in route.
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // The whole request runs on the snapshot it started with, even if a reload lands meanwhile.
    let snapshot = state.reloader.current();
    let Some((index, endpoint)) = snapshot.endpoint(uri.path()) else {
        return ApiError::NotFound(uri.path().to_owned()).into_response();
    };
    let client = client_ip::resolve(peer.ip(), &headers, &snapshot.config.server.trusted_proxies);
    let mut request = Request {
        endpoint,
        index,
        limiter: snapshot.limiters.get(index).and_then(Option::as_ref),
        shared_limits: snapshot.config.server.rate_limits
            == crate::config::RateLimitStore::Postgres,
        request_id: &request_id,
        client,
        sender: None,
        limit: None,
        correlation_id: None,
        flow: None,
    };
    let result = request
        .handle(&state, &snapshot, &method, &uri, &headers, body)
        .await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            if let ApiError::Internal { message, .. } = &error {
                tracing::error!(service = %endpoint.name, event = "request.failed", request_id = %request_id, error = %message, "Request failed.");
            }
            if state.metrics.enabled {
                state
                    .metrics
                    .refused
                    .get_or_create(&crate::metrics::RefusalLabels {
                        endpoint: endpoint.name.clone(),
                        reason: error.code(),
                    })
                    .inc();
            }
            error.into_response()
        }
    };
    request.add_limit_headers(&mut response);
    let status = response.status().as_u16();
    let limited = request
        .limit
        .is_some_and(|verdict| matches!(verdict, Verdict::Refused { .. }));
    state
        .metrics
        .count_request(&endpoint.name, status, started.elapsed(), limited);
    let user_id = request.sender.as_deref().map(mask);
    tracing::info!(
        service = %endpoint.name,
        event = "request.completed",
        request_id = %request_id,
        correlation_id = request.correlation_id.as_deref().map(crate::logging::message_ref),
        user_id = user_id,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        method = %method,
        status,
        client_ip = %client,
        flow = request.flow.as_deref(),
        "Request completed."
    );
    response
}

/// Reads what `/metrics` takes from the database and the serving snapshot at each scrape.
pub async fn refresh_metrics(state: &AppState) {
    if let Ok(figures) = crate::store::alerts::system_figures(&state.pool, 0.0).await {
        state.metrics.observe_database(&figures);
    }
    let snapshot = state.reloader.current();
    state
        .metrics
        .observe_state(&snapshot.version, snapshot.loaded_at, &state.pool);
}

/// Whether `headers` carry the admin token as a bearer token.
pub fn admin_bearer(snapshot: &crate::reload::Snapshot, headers: &HeaderMap) -> bool {
    let expected = admin_token(snapshot);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    matches!((given, expected), (Some(g), Some(e)) if tokens_match(g, e))
}

/// The configured admin token, if any.
pub fn admin_token(snapshot: &crate::reload::Snapshot) -> Option<&str> {
    snapshot
        .config
        .server
        .admin_token
        .as_ref()
        .and_then(|s| s.value.as_deref())
}

/// `GET /metrics`: the Prometheus text format. The queues' sizes and settled payments are
/// read at each scrape (one statement of counts over partial indexes); when the database does
/// not answer, the last figures stay.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    refresh_metrics(&state).await;
    // Prometheus asks for OpenMetrics first; anything else gets the classic text format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render_text_format(),
        )
            .into_response()
    }
}

/// One request in flight on one endpoint.
struct Request<'a> {
    endpoint: &'a Endpoint,
    /// Its index in the snapshot's endpoints.
    index: usize,
    limiter: Option<&'a Arc<Limiter>>,
    /// Budgets are counted in Postgres, shared by every replica.
    shared_limits: bool,
    request_id: &'a str,
    client: IpAddr,
    sender: Option<String>,
    limit: Option<Verdict>,
    /// The provider message id of the first message, for the log.
    correlation_id: Option<String>,
    /// The flow the message was routed to, for the log.
    flow: Option<String>,
}

impl Request<'_> {
    async fn handle(
        &mut self,
        state: &AppState,
        snapshot: &Arc<Snapshot>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, ApiError> {
        let endpoint = self.endpoint;
        if let Some(deprecation) = &endpoint.deprecated {
            tracing::warn!(service = %endpoint.name, event = "deprecated_service.access_attempt", request_id = %self.request_id, client_ip = %self.client, "Deprecated endpoint called.");
            return Err(ApiError::Deprecated {
                message: deprecation.message.clone(),
                migration: deprecation.migration.clone(),
            });
        }
        let allow = match endpoint.kind {
            EndpointKind::Whatsapp => "GET, POST",
            EndpointKind::MomoCallback => "POST, PUT",
            EndpointKind::Sms => "POST",
        };
        let allowed = *method == Method::POST
            || (*method == Method::GET && endpoint.kind == EndpointKind::Whatsapp)
            || (*method == Method::PUT && endpoint.kind == EndpointKind::MomoCallback);
        if !allowed {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        if *method == Method::GET {
            return self.handshake(uri);
        }
        // Nothing can be recorded, so nothing may be acknowledged; saying so now spares the
        // caller a wait for a connection that will not come.
        if !state.database.is_up() {
            return Err(ApiError::DatabaseUnavailable {
                retry_after: DATABASE_RETRY_AFTER,
            });
        }
        // An allowlist needs no body: refuse before reading one.
        if let Auth::IpAllowlist(_) = endpoint.auth {
            self.authenticate(headers, &[])?;
        }
        let server = &snapshot.config.server;
        let (body, _room) = read_body(
            headers,
            body,
            server.max_body_bytes,
            server.connections.body_timeout,
            &state.body_memory,
        )
        .await?;
        if !matches!(endpoint.auth, Auth::IpAllowlist(_)) {
            self.authenticate(headers, &body)?;
        }
        require_json(headers)?;
        match endpoint.kind {
            EndpointKind::Whatsapp => self.whatsapp(state, snapshot, headers, body).await,
            EndpointKind::Sms => self.sms(state, &body).await,
            EndpointKind::MomoCallback => {
                self.momo_callback(state, snapshot, method, headers, &body)
                    .await
            }
        }
    }

    fn handshake(&self, uri: &Uri) -> Result<Response, ApiError> {
        let query = Query::of(uri);
        let get = |name: &str| query.get(name);
        let expected = self
            .endpoint
            .verify_token
            .as_ref()
            .and_then(|s| s.value.as_deref());
        let token_ok = match (get("hub.verify_token"), expected) {
            (Some(given), Some(expected)) => tokens_match(given, expected),
            _ => false,
        };
        match (get("hub.mode"), get("hub.challenge")) {
            (Some("subscribe"), Some(challenge)) if token_ok => {
                tracing::info!(service = %self.endpoint.name, event = "webhook.verified", request_id = %self.request_id, "Webhook verification succeeded.");
                Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    challenge.to_owned(),
                )
                    .into_response())
            }
            _ => {
                tracing::warn!(service = %self.endpoint.name, event = "webhook.verification_failed", request_id = %self.request_id, client_ip = %self.client, "Webhook verification failed.");
                Err(ApiError::VerificationFailed)
            }
        }
    }

    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        auth::check(&self.endpoint.auth, headers, body, self.client, i64::try_from(now).unwrap_or(i64::MAX)).map_err(|denied| {
            let event = match denied {
                auth::Denied::IpNotAllowed => format!("{}.unauthorized_ip", self.endpoint.name),
                _ => format!("{}.invalid_signature", self.endpoint.name),
            };
            tracing::warn!(service = %self.endpoint.name, event = %event, request_id = %self.request_id, client_ip = %self.client, reason = %denied, "Request refused.");
            ApiError::Forbidden(denied)
        })
    }

    async fn whatsapp(
        &mut self,
        state: &AppState,
        snapshot: &Arc<Snapshot>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let envelope: Envelope = parse_json(&body)?;
        if envelope.object != "whatsapp_business_account" {
            return Err(ApiError::InvalidPayload(format!(
                "expected object \"whatsapp_business_account\", got {:?}",
                envelope.object
            )));
        }
        let first = envelope.messages().next().map(|(_, m)| m);
        self.sender = first.and_then(|m| m.sender()).map(str::to_owned);
        if let Some(dropped) = self.limit(state, self.sender.clone()).await? {
            self.reply_once(state, snapshot, &envelope).await;
            return Ok(dropped);
        }
        self.correlation_id = envelope.messages().next().map(|(_, m)| m.id.clone());
        let delivery = inbound::Delivery {
            snapshot,
            endpoint: self.index,
            envelope,
            headers: kept_headers(headers),
            body,
            request_id: self.request_id,
        };
        // Durable before the answer: once this returns, a crash loses nothing.
        let accepted = inbound::accept(&state.pool, &state.batcher, delivery)
            .await
            .map_err(|e| match &e {
                inbound::AcceptError::NotRecorded(error) => self.database_failed(state, error),
                inbound::AcceptError::UnknownEndpoint(_) => self.internal(&e),
            })?;
        self.flow = accepted.routed_to.clone();
        let body = match accepted.poison {
            // Kept, but it can never be processed: 200 all the same, or Meta would send it
            // again for days.
            Some(reason) => json!({"status": "poison", "reason": reason, "routed_to": null}),
            None => json!({"status": "success", "routed_to": accepted.routed_to}),
        };
        Ok((StatusCode::OK, Json(body)).into_response())
    }

    /// A MoMo callback: recorded, then confirmed with MoMo itself (see [`crate::payments`]).
    async fn momo_callback(
        &mut self,
        state: &AppState,
        snapshot: &Snapshot,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        if let Some(dropped) = self.limit(state, None).await? {
            return Ok(dropped);
        }
        let kept = kept_headers(headers);
        let client = snapshot
            .config
            .momo
            .as_ref()
            .map(|account| state.momo.client(account.clone()));
        let outcome = crate::payments::intake_callback(
            &state.pool,
            &snapshot.config,
            client.as_ref(),
            crate::payments::Callback {
                endpoint: &self.endpoint.name,
                method: method.as_str(),
                headers: &kept,
                body,
                request_id: self.request_id,
            },
        )
        .await
        .map_err(|e| self.database_failed(state, &e))?;
        if state.metrics.enabled {
            state
                .metrics
                .callbacks
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .inc();
        }
        match outcome {
            CallbackOutcome::Invalid(detail) => Err(ApiError::InvalidPayload(detail)),
            CallbackOutcome::Settled { status } => Ok((
                StatusCode::OK,
                Json(json!({"status": "settled", "payment": status})),
            )
                .into_response()),
            outcome => {
                Ok((StatusCode::OK, Json(json!({"status": outcome.as_str()}))).into_response())
            }
        }
    }

    /// A forwarded MoMo SMS: recorded, read, settled (see [`crate::payments`]).
    async fn sms(&mut self, state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
        if let Some(dropped) = self.limit(state, None).await? {
            // Dropped with a 200, the forwarder will not send it again: keep it for review.
            crate::payments::keep_dropped_sms(&state.pool, &self.endpoint.name, body)
                .await
                .map_err(|e| self.database_failed(state, &e))?;
            return Ok(dropped);
        }
        let Some(rules) = &self.endpoint.sms else {
            return Err(ApiError::InvalidPayload(
                "this endpoint declares no SMS patterns".into(),
            ));
        };
        let intake = crate::payments::intake_sms(
            &state.pool,
            &self.endpoint.name,
            rules,
            body,
            self.request_id,
        )
        .await
        .map_err(|e| self.database_failed(state, &e))?;
        let outcome = match &intake {
            SmsIntake::Read { outcome, .. } => outcome.as_str(),
            SmsIntake::Unparsed { .. } => "unparsed",
            SmsIntake::Invalid { .. } => "invalid",
        };
        if state.metrics.enabled {
            state
                .metrics
                .sms
                .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                .inc();
        }
        match intake {
            SmsIntake::Read {
                sms_id,
                outcome,
                parts,
            } => {
                let transactions: Vec<serde_json::Value> = parts
                    .iter()
                    .map(|(reading, outcome)| crate::payments::describe(reading, *outcome))
                    .collect();
                Ok((
                    StatusCode::OK,
                    Json(json!({"status": outcome.as_str(), "smsId": sms_id, "transactions": transactions})),
                )
                    .into_response())
            }
            SmsIntake::Unparsed { sms_id } => Err(ApiError::UnparsedSms { sms_id }),
            SmsIntake::Invalid { error, .. } => Err(ApiError::InvalidPayload(error.to_string())),
        }
    }

    /// Counts the request. `Ok(Some(response))` means the request is dropped with a 200.
    async fn limit(
        &mut self,
        state: &AppState,
        sender: Option<String>,
    ) -> Result<Option<Response>, ApiError> {
        let Some(limiter) = self.limiter else {
            return Ok(None);
        };
        let key = match limiter.definition.key {
            LimitKey::Endpoint => Key::Endpoint,
            LimitKey::ClientIp => Key::Ip(self.client),
            LimitKey::Sender => match sender {
                Some(sender) => Key::Sender(sender),
                // Status updates and errors have no sender: they are not the sender's traffic.
                None => return Ok(None),
            },
        };
        let verdict = if self.shared_limits && state.database.is_up() {
            let shared = tokio::time::timeout(
                SHARED_LIMIT_WAIT,
                ratelimit::check_shared(&state.pool, &self.endpoint.name, limiter, &key),
            )
            .await;
            match shared {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(error)) => {
                    state.database.report(&error);
                    ratelimit::degraded(&self.endpoint.name, &error.to_string());
                    limiter.check(&key)
                }
                Err(_) => {
                    ratelimit::degraded(&self.endpoint.name, "no answer in time");
                    limiter.check(&key)
                }
            }
        } else {
            limiter.check(&key)
        };
        self.limit = Some(verdict);
        let Verdict::Refused { retry_after, .. } = verdict else {
            return Ok(None);
        };
        tracing::warn!(service = %self.endpoint.name, event = "request.rate_limited", request_id = %self.request_id, client_ip = %self.client, user_id = self.sender.as_deref().map(mask), "Rate limit exceeded.");
        match limiter.definition.on_limit {
            OnLimit::Reject => Err(ApiError::RateLimited {
                retry_after: ceil_secs(retry_after),
            }),
            // Meta retries failed deliveries and disables webhooks that keep failing: answer 200.
            OnLimit::Drop | OnLimit::ReplyOnce => Ok(Some(
                (
                    StatusCode::OK,
                    Json(json!({"status": "dropped", "reason": "rate_limited"})),
                )
                    .into_response(),
            )),
        }
    }

    /// With `on_limit: reply_once`, the first refusal of a sender in a window queues the
    /// slow-down reply; a failure to queue it is logged, and the delivery is still dropped.
    async fn reply_once(&self, state: &AppState, snapshot: &Snapshot, envelope: &Envelope) {
        let Some(limiter) = self.limiter else { return };
        let (Some(template), Some(sender)) =
            (&limiter.definition.reply_template, self.sender.as_deref())
        else {
            return;
        };
        if limiter.definition.on_limit != OnLimit::ReplyOnce {
            return;
        }
        let first = if self.shared_limits && state.database.is_up() {
            let shared =
                ratelimit::first_refusal_shared(&state.pool, &self.endpoint.name, limiter, sender);
            match tokio::time::timeout(SHARED_LIMIT_WAIT, shared).await {
                Ok(Ok(first)) => first,
                Ok(Err(error)) => {
                    state.database.report(&error);
                    ratelimit::degraded(&self.endpoint.name, &error.to_string());
                    limiter.first_refusal(sender)
                }
                Err(_) => {
                    ratelimit::degraded(&self.endpoint.name, "no answer in time");
                    limiter.first_refusal(sender)
                }
            }
        } else {
            limiter.first_refusal(sender)
        };
        if !first {
            return;
        }
        let queued = inbound::limited::reply_once(
            &state.pool,
            state.batcher.handoff(),
            &snapshot.config,
            template,
            envelope,
        )
        .await;
        if let Err(error) = queued {
            tracing::warn!(service = %self.endpoint.name, event = "request.slow_down_not_sent", request_id = %self.request_id, error = %error, "Could not queue the slow-down reply.");
        }
    }

    /// A statement failed: 503 if the database may be out of reach (nothing was recorded, the
    /// caller should retry), else a 500. Either way the breaker hears of it.
    fn database_failed(&self, state: &AppState, error: &sqlx::Error) -> ApiError {
        state.database.report(error);
        if crate::store::health::is_unreachable(error) {
            tracing::warn!(service = %self.endpoint.name, event = "request.database_unreachable", request_id = %self.request_id, error = %error, "Nothing recorded: the database is out of reach.");
            return ApiError::DatabaseUnavailable {
                retry_after: DATABASE_RETRY_AFTER,
            };
        }
        self.internal(error)
    }

    fn internal(&self, error: &dyn std::fmt::Display) -> ApiError {
        ApiError::Internal {
            message: error.to_string(),
            request_id: self.request_id.to_owned(),
        }
    }

    fn add_limit_headers(&self, response: &mut Response) {
        let Some(limiter) = self.limiter else { return };
        let headers = response.headers_mut();
        headers.insert(
            "x-ratelimit-limit",
            HeaderValue::from(limiter.definition.requests.get()),
        );
        let (remaining, reset) = match self.limit {
            Some(Verdict::Allowed { remaining, reset }) => (remaining, reset),
            Some(Verdict::Refused { reset, .. }) => (0, reset),
            None => return,
        };
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(ceil_secs(reset)));
    }
}

/// Reads a body of at most `limit` bytes within `timeout`, holding room for it in `memory`
/// (returned: the room is held until the request is answered).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
    memory: &BodyMemory,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let expected = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit));
    let room = memory
        .reserve(expected)
        .ok_or(ApiError::Overloaded { retry_after: 1 })?;
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::Timeout { what: "body" }),
        Ok(Ok(collected)) => Ok((collected.to_bytes(), room)),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(error)) => Err(ApiError::InvalidPayload(format!(
            "could not read the body: {error}"
        ))),
    }
}

/// Request headers kept with a recorded delivery.
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-hub-signature-256",
    "x-signature",
    "x-request-id",
    "x-forwarded-for",
];

/// The headers kept with a recorded request, as a JSON object.
fn kept_headers(headers: &HeaderMap) -> serde_json::Value {
    headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), json!(value.to_str().ok()?))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Parses a body straight into `T` (no intermediate JSON tree): broken JSON is 400
/// `malformed_json`, JSON of the wrong shape 400 `invalid_payload`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::InvalidPayload(format!("unexpected shape: {e}"))
        }
        _ => ApiError::MalformedJson(format!("the body is not valid JSON: {e}")),
    })
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedContentType(
            if content_type.is_empty() {
                "nothing".to_owned()
            } else {
                content_type.to_owned()
            },
        ))
    }
}

/// Whether a token given by a caller is the expected one, in time that does not depend on
/// where they differ. Length is not secret (tokens are fixed by the operator); the content is.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// `GET /readyz`: a config is loaded and serving.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.reloader.current();
    // From the breaker, not a query: a probe must answer at once, and above all while the
    // database does not.
    if !state.database.is_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": "database_unreachable", "message": "the database did not answer the last probe"})),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        Json(json!({"status": "ready", "config_version": snapshot.version})),
    )
        .into_response()
}

/// `GET /admin/config`: the loaded config's version and reload history, for operators with the
/// admin token.
pub async fn admin_config(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let snapshot = state.reloader.current();
    if !admin_bearer(&snapshot, &headers) {
        return admin_token_required();
    }
    // Every replica on this database, as their heartbeats say: which one leads, and whether
    // they all serve the same files.
    // Not asked while the database is known to be out of reach: the answer would wait for
    // the pool's timeout to say nothing.
    let replicas = if state.database.is_up() {
        crate::store::replicas::live(
            &state.pool,
            crate::leader::LEASE,
            crate::leader::LIVE_WITHIN_SECS,
        )
        .await
        .map_err(|error| tracing::warn!(event = "admin.replicas_unread", error = %error, "Could not read the replicas' heartbeats."))
        .ok()
    } else {
        None
    };
    // This replica's own heartbeat may predate its last reload by a few seconds: it is
    // compared as it serves now.
    let me = state.leadership.process();
    let versions_differ = replicas.as_ref().is_some_and(|replicas| {
        replicas
            .iter()
            .any(|r| r.process != me && r.config_version != snapshot.version)
    });
    Json(json!({
        "version": snapshot.version,
        "loaded_at": snapshot.loaded_at,
        "process": state.leadership.process(),
        "leader": state.leadership.is_leader(),
        "replicas": replicas,
        "config_versions_differ": versions_differ,
        "reloads": state.reloader.stats.to_json(),
        "endpoints": snapshot.config.endpoints.iter().map(|e| json!({"name": e.name, "path": e.path, "kind": e.kind.as_str(), "deprecated": e.deprecated.is_some()})).collect::<Vec<_>>(),
        "flows": snapshot.config.flows.index.len(),
        "templates": snapshot.config.templates.len(),
    }))
    .into_response()
}

/// A request's query string, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(uri: &Uri) -> Query {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// 401 for an admin route without the admin bearer token.
fn admin_token_required() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized", "message": "a valid admin bearer token is required"})),
    )
        .into_response()
}

/// `GET /admin/tap[?endpoint=E][&flow=F]`: each routed message as it happens, as server-sent
/// events (`data: <event JSON>`; `event: lagged` says how many a slow reader missed), for
/// `easymo tap`. Needs the admin bearer token.
pub async fn admin_tap(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let snapshot = state.reloader.current();
    if !admin_bearer(&snapshot, &headers) {
        return admin_token_required();
    }
    let query = Query::of(&uri);
    let wanted = |name: &str| query.get(name).map(str::to_owned);
    let (endpoint, flow) = (wanted("endpoint"), wanted("flow"));
    let events = crate::tap::subscribe();
    // The first bytes say the tap is open, before any message arrives.
    let opened = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from_static(b": tap open\n\n"))
    });
    let stream = futures_util::stream::unfold(events, move |mut events| {
        let (endpoint, flow) = (endpoint.clone(), flow.clone());
        async move {
            loop {
                let chunk = match events.recv().await {
                    Ok(event) if event.wanted(endpoint.as_deref(), flow.as_deref()) => {
                        format!(
                            "data: {}\n\n",
                            serde_json::to_string(&event).unwrap_or_default()
                        )
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        format!("event: lagged\ndata: {missed}\n\n")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(Bytes::from(chunk)), events));
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(opened.chain(stream)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("easymo-verify-token", "easymo-verify-token"));
        assert!(!tokens_match("easymo-verify-tokem", "easymo-verify-token"));
        assert!(!tokens_match("easymo", "easymo-verify-token"));
        assert!(!tokens_match("", "x"));
    }
}
