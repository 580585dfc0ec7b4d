//! `easymo lint`: load routes.yaml and its flows through the same path serving uses, print every
//! diagnostic, and choose the exit code.
//!
//! Owns: output formats and the exit-code contract (0 clean, 1 problems, 2 could not run). Must
//! not check anything itself; `config` does.

use std::path::Path;

use easymo_dsl::diagnostic::{render_github, render_human, render_json};

use crate::config::{self, EnvPolicy, Loaded};

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// rustc-style text with source lines and carets.
    #[default]
    Human,
    /// A JSON array.
    Json,
    /// GitHub Actions workflow commands (annotations on the PR diff).
    Github,
}

/// Lint options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Output format.
    pub format: Format,
    /// Warnings fail the run.
    pub deny_warnings: bool,
    /// Check `${NAME}` references against the environment.
    pub policy: Option<EnvPolicy>,
}

/// What lint prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    /// Text for stdout.
    pub output: String,
    /// Text for stderr: why lint could not run.
    pub error: String,
    /// 0 clean, 1 problems, 2 could not run.
    pub exit_code: u8,
}

/// Lints the routes.yaml at `path`.
pub fn run(path: &Path, options: &Options) -> Outcome {
    let policy = options.policy.clone().unwrap_or(EnvPolicy::Unchecked);
    match config::load(path, &policy) {
        Ok(loaded) => report(&loaded, options),
        Err(error) => Outcome {
            output: String::new(),
            error: format!("error: {error}\n"),
            exit_code: 2,
        },
    }
}

/// Renders a load result.
pub fn report(loaded: &Loaded, options: &Options) -> Outcome {
    let errors = loaded.error_count();
    let warnings = loaded.warning_count();
    let failed = errors > 0 || (options.deny_warnings && warnings > 0);
    let output = match options.format {
        Format::Json => render_json(&loaded.sources, &loaded.diagnostics) + "\n",
        Format::Github => render_github(&loaded.sources, &loaded.diagnostics),
        Format::Human => {
            let mut text = render_human(&loaded.sources, &loaded.diagnostics);
            text.push_str(&summary(loaded, errors, warnings, options.deny_warnings));
            text
        }
    };
    Outcome {
        output,
        error: String::new(),
        exit_code: u8::from(failed),
    }
}

fn summary(loaded: &Loaded, errors: usize, warnings: usize, deny_warnings: bool) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (&loaded.config, errors, warnings) {
        (Some(config), 0, 0) => format!(
            "ok: {}, {}, {}\n",
            plural(config.endpoints.len(), "endpoint"),
            plural(config.flows.index.len(), "flow"),
            plural(config.templates.len(), "template"),
        ),
        (_, 0, w) if !deny_warnings => format!("ok with {}\n", plural(w, "warning")),
        (_, 0, w) => format!(
            "error: {} denied by --deny-warnings\n",
            plural(w, "warning")
        ),
        (_, e, 0) => format!("error: {} found\n", plural(e, "error")),
        (_, e, w) => format!(
            "error: {} and {} found\n",
            plural(e, "error"),
            plural(w, "warning")
        ),
    }
}
