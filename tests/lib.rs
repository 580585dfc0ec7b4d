//! Test-only crate; see main.rs.
