//! easyMO's webhook routing engine.
//!
//! One declarative config (`routes.yaml`) and a set of flows (`flows/*.flow`) replace the
//! hand-written webhook functions behind easyMO's WhatsApp services.
//!
//! # Layout
//! Data flows one way: request → auth → limit → route → flow → store/outbox → response. A
//! module uses only modules listed after it here (`scripts/layout-report` checks that no two
//! top-level modules import each other, directly or round a cycle).
//! - [`cli`]: argument parsing and dispatch; with `main.rs`, the only user of anyhow.
//! - [`lint`], [`explain`], [`simulate`]: the `easymo lint`, `explain` and `simulate` commands.
//! - [`server`]: `easymo serve`: router, error boundary, reload loop, graceful shutdown;
//!   [`watch`] says when to reload.
//! - [`gateway`]: one webhook request: endpoint → auth → limit → hand over → HTTP answer.
//! - [`http_error`]: the JSON error bodies; [`auth`]: signatures over the raw body, client IPs
//!   behind trusted proxies.
//! - [`inbound`]: a WhatsApp delivery's lifecycle: recorded, batched, processed, recovered.
//! - [`flow`]: the flow interpreter.
//! - [`payments`]: MoMo SMS, callbacks, requests to pay, their workers and the MoMo client.
//! - [`outbound`]: sending: outbox rows to the WhatsApp Cloud API, retries, pauses, the
//!   dead-letter queue and its re-drive.
//! - [`reload`]: the live [`reload::Snapshot`] (config, limiters, caches) behind an `ArcSwap`.
//! - [`ratelimit`]: governor limiters kept across reloads; [`query_cache`] and
//!   [`render_cache`]: what flows keep per config.
//! - [`render`]: templates → Graph API message bodies.
//! - [`config`]: routes.yaml + flows → a validated, immutable [`config::Config`], or every
//!   diagnostic. The one load path shared by lint, serve and reload.
//! - [`router`]: message text → flow (pure); [`limits`]: WhatsApp's message limits.
//! - [`store`]: Postgres: pool, migrations, and every query on the engine's tables.
//! - [`whatsapp`]: the Cloud API delivery envelope; [`logging`]: JSON log lines, masked phone
//!   numbers.

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod explain;
pub mod flow;
pub mod gateway;
pub mod http_error;
pub mod inbound;
pub mod language;
pub mod leader;
pub mod limits;
pub mod lint;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod payments;
pub mod queries;
pub mod query_cache;
pub mod ratelimit;
pub mod reload;
pub mod render;
pub mod render_cache;
pub mod router;
pub mod server;
pub mod simulate;
pub mod store;
pub mod tap;
pub mod testing;
pub mod watch;
pub mod whatsapp;
