//! The easyMO flow language.
//!
//! A flow file holds named flows; each flow is a list of steps that query Postgres, branch, reply
//! with a template, wait for the user's next message, keep values in the session, or continue in
//! another flow. The same crate parses the alert conditions and durations of routes.yaml.
//!
//! # Pipeline
//! `grammar.pest` → [`parser`] (pest pairs → [`ast`] with byte [`span`]s, plain-word syntax errors)
//! → [`check`] (every meaning check, all diagnostics at once) → [`diagnostic`] (rustc-style text,
//! JSON, GitHub annotations). This crate does no IO: callers hand it text and get back values and
//! diagnostics.

pub mod ast;
pub mod check;
pub mod codes;
pub mod diagnostic;
pub mod parser;
pub mod span;

pub use diagnostic::{Diagnostic, FileId, Severity, Sources};
pub use span::{Span, Spanned};
