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
//! - [`router`]: message text → flow (pure).
//! - [`limits`]: WhatsApp's message limits.
//! - [`lint`]: the `easymo lint` command: load, render diagnostics, pick the exit code.
//! - [`explain`]: the `easymo explain` command.
//! - [`cli`]: argument parsing and dispatch; the only place besides `main.rs` that uses anyhow.

pub mod cli;
pub mod config;
pub mod explain;
pub mod limits;
pub mod lint;
pub mod router;
