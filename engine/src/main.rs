//! The `easymo` binary: parse arguments, run, print errors with their causes, exit with the
//! command's code (0 ok, 1 problems found, 2 could not run).

use std::process::ExitCode;

// glibc's allocator spent a fifth of the server's CPU under load (many small, short-lived
// JSON values across threads); mimalloc does the same work in less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = easymo_engine::cli::parse();
    match easymo_engine::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
