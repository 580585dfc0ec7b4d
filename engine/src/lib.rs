//! easyMO's webhook routing engine.
//!
//! One declarative config (`routes.yaml`) and a set of flows (`flows/*.flow`) replace the
//! hand-written webhook functions behind easyMO's WhatsApp services.
//!
//! # Layout
//! Data flows one way: request → auth → limit → route → flow → store/outbox → response. No
//! module reaches back up.
//! - [`config`]: routes.yaml + flows → a validated [`config::Config`], or every diagnostic. The
//!   one load path shared by lint, serve and reload.
//! - [`reload`]: the live [`reload::Snapshot`] behind an `ArcSwap`; [`watch`] says when to reload.
//! - [`server`]: `easymo serve`: router, error boundary, reload loop, graceful shutdown.
//! - [`gateway`]: one webhook request: endpoint → auth → limit → route → response.
//! - [`auth`]: signatures over the raw body, client IPs behind trusted proxies.
//! - [`ratelimit`]: governor limiters kept across reloads.
//! - [`whatsapp`]: the Cloud API delivery envelope.
//! - [`batcher`]: group commit: messages arriving together share a transaction.
//! - [`process`]: a batch of messages: dedupe, route, flow, outbox, session.
//! - [`flow`]: the flow interpreter; [`query_cache`]: results of `cached for` queries;
//!   [`render_cache`]: replies rendered before.
//! - [`sms`]: reading forwarded MoMo SMS; [`payments`]: what SMS and MoMo callbacks settle;
//!   [`momo`]: the MoMo Open API client.
//! - [`http_error`]: the JSON error bodies; [`logging`]: JSON log lines, masked phone numbers.
//! - [`router`]: message text → flow (pure).
//! - [`limits`]: WhatsApp's message limits.
//! - [`lint`]: the `easymo lint` command: load, render diagnostics, pick the exit code.
//! - [`explain`]: the `easymo explain` command.
//! - [`cli`]: argument parsing and dispatch; the only place besides `main.rs` that uses anyhow.

pub mod auth;
pub mod cli;
pub mod config;
pub mod explain;
pub mod flow;
pub mod gateway;
pub mod http_error;
pub mod inbound;
pub mod limits;
pub mod lint;
pub mod logging;
pub mod payments;
pub mod query_cache;
pub mod ratelimit;
pub mod reload;
pub mod render;
pub mod render_cache;
pub mod router;
pub mod server;
pub mod simulate;
pub mod store;
pub mod watch;
pub mod whatsapp;
