//! Paths into the repository and a runner for the real `easymo` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A path relative to the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    repo().join(relative)
}

/// Runs `easymo` with `args` in the repository root, with no `${NAME}` secrets in its
/// environment unless `env` sets them.
pub fn easymo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_easymo-under-test"));
    command.args(args).current_dir(repo());
    for var in SECRET_VARS {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("easymo runs")
}

/// Every environment variable the shipped routes.yaml reads.
pub const SECRET_VARS: &[&str] = &[
    "DATABASE_URL",
    "EASYMO_ADMIN_TOKEN",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "MOMO_WEBHOOK_SECRET",
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
];

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
