//! `GET /dashboard`: the system's health at a glance, live over server-sent events.
//!
//! Owns: the page and its assets (compiled into the binary: no CDN, no build step; uPlot is
//! vendored under `assets/vendor/`), who may see it (the admin token, as a bearer token or
//! once in `?token=`, exchanged for an HttpOnly cookie that holds a digest of it, never the
//! token), and the event stream: every second, what `/metrics` says now against what it said
//! up to ten seconds ago ([`figures`]), with the firing alerts from Postgres, the config version
//! and the last reload. Must not count anything itself: every figure is one `/metrics` has.

pub mod figures;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::{admin_bearer, admin_token, refresh_metrics, tokens_match, AppState};
use crate::metrics::exposition::{samples, Sample};

const HTML: &str = include_str!("assets/dashboard.html");
const LOGIN: &str = include_str!("assets/login.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/vendor/uPlot.min.css"),
    ),
];
/// The cookie that lets a browser in after it gave the token once.
const COOKIE: &str = "easymo_dashboard";
/// Readings kept per viewer: rates are taken over the last ten seconds.
const READINGS: usize = 11;
/// Only our own files: the page loads nothing from anywhere else.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";

/// The cookie value for `token`: a digest, so the cookie never holds the token itself.
fn cookie_value(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(format!("easymo-dashboard\0{token}")))
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let snapshot = state.reloader.current();
    if admin_bearer(&snapshot, headers) {
        return true;
    }
    let Some(expected) = admin_token(&snapshot).map(cookie_value) else {
        return false;
    };
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && tokens_match(value, &expected))
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `?token=`, given once.
#[derive(Debug, serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /dashboard`: the page; with a right `?token=`, a cookie and a redirect to the bare
/// address, so the token leaves the address bar and the history.
pub async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Some(given) = query.token {
        let snapshot = state.reloader.current();
        return match admin_token(&snapshot) {
            Some(expected) if tokens_match(&given, expected) => (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/dashboard".to_owned()),
                    (
                        header::SET_COOKIE,
                        format!(
                            "{COOKIE}={}; Path=/dashboard; HttpOnly; SameSite=Strict",
                            cookie_value(expected)
                        ),
                    ),
                ],
            )
                .into_response(),
            _ => html(StatusCode::UNAUTHORIZED, LOGIN),
        };
    }
    if authorized(&state, &headers) {
        html(StatusCode::OK, HTML)
    } else {
        html(StatusCode::UNAUTHORIZED, LOGIN)
    }
}

/// `GET /dashboard/assets/{name}`: the page's scripts and styles (no data in them).
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => crate::http_error::ApiError::NotFound(format!("/dashboard/assets/{name}"))
            .into_response(),
    }
}

/// `GET /dashboard/events`: one `update` event a second, for as long as the page is open.
pub async fn events(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthorized", "message": "open /dashboard with the admin token first"})),
        )
            .into_response();
    }
    let viewer = Viewer {
        state,
        readings: VecDeque::new(),
        first: true,
    };
    let stream = futures_util::stream::unfold(viewer, |mut viewer| async move {
        if !std::mem::take(&mut viewer.first) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let event = viewer.next().await;
        Some((Ok::<_, Infallible>(Bytes::from(event)), viewer))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One open page: its recent readings of `/metrics`.
struct Viewer {
    state: Arc<AppState>,
    readings: VecDeque<(f64, Vec<Sample>)>,
    first: bool,
}

impl Viewer {
    async fn next(&mut self) -> String {
        refresh_metrics(&self.state).await;
        let now = crate::alerts::unix_now();
        let reading = samples(&self.state.metrics.render());
        let oldest = self
            .readings
            .front()
            .map(|(at, samples)| (*at, samples.as_slice()));
        let update = figures::update((now, &reading), oldest);
        let leader = reading
            .iter()
            .any(|s| s.name == "easymo_alerts_leader" && s.value > 0.0);
        self.readings.push_back((now, reading));
        while self.readings.len() > READINGS {
            self.readings.pop_front();
        }
        let snapshot = self.state.reloader.current();
        let alerts = match crate::store::alerts::states(&self.state.pool).await {
            Ok(states) => json!(states
                .iter()
                .map(|s| json!({
                    "alert": s.alert,
                    "state": if s.firing { "firing" } else { "pending" },
                    "since": s.active_since,
                }))
                .collect::<Vec<_>>()),
            Err(_) => serde_json::Value::Null,
        };
        let body = json!({
            "figures": update,
            "alerts": alerts,
            "alerts_leader": leader,
            "config": {
                "version": snapshot.version,
                "loaded_at": snapshot.loaded_at,
                "reloads": self.state.reloader.stats.to_json(),
            },
        });
        format!("event: update\ndata: {body}\n\n")
    }
}
