//! Test-only crate. The tests are in `main.rs` (one integration binary); this library exists so
//! the package can also build the `easymo` binary under test.
