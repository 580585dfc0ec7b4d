//! `easymo lint`: load routes.yaml and its flows through the same path serving uses, check the
//! flows' SQL against the schema (`queries`), print every diagnostic, and choose the exit code.
//!
//! Owns: the order of those steps, output formats and the exit-code contract (0 clean,
//! 1 problems, 2 could not run). Must not check anything itself; `config` and `queries` do.

use std::path::Path;

use easymo_dsl::diagnostic::{render_github, render_human, render_json};

use crate::config::{self, Disk, EnvPolicy, FileSource, Loaded};
use crate::queries;

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
    /// Describe the flows' queries on a fresh database on this Postgres server instead of
    /// reading `.queries/`.
    pub database_url: Option<String>,
    /// With `database_url`: rewrite `.queries/` from what Postgres said.
    pub write_offline: bool,
}

/// What lint prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    /// Text for stdout.
    pub output: String,
    /// Text for stderr: why lint could not run, or what it wrote.
    pub error: String,
    /// 0 clean, 1 problems, 2 could not run.
    pub exit_code: u8,
}

/// Lints the routes.yaml at `path`.
pub fn run(path: &Path, options: &Options) -> Outcome {
    let policy = options.policy.clone().unwrap_or(EnvPolicy::Unchecked);
    let mut loaded = match config::load(path, &policy) {
        Ok(loaded) => loaded,
        Err(error) => return could_not_run(&error.to_string()),
    };
    let routes_dir = path.parent().unwrap_or(Path::new(""));
    let url = options.database_url.as_deref();
    let descriptions = match check_queries(&mut loaded, routes_dir, &Disk, url) {
        Ok(descriptions) => descriptions,
        Err(error) => return could_not_run(&error),
    };
    let mut notice = String::new();
    if let (Some(descriptions), true) = (descriptions, options.write_offline) {
        let dir = routes_dir.join(queries::OFFLINE_DIR);
        match queries::offline::write(&dir, &descriptions) {
            Ok(w) => {
                notice = format!(
                    "wrote {}: {} descriptions, {} changed, {} removed\n",
                    dir.display(),
                    descriptions.len(),
                    w.written,
                    w.removed
                );
            }
            Err(error) => {
                return could_not_run(&format!("cannot write {}: {error}", dir.display()))
            }
        }
    }
    let mut outcome = report(&loaded, options);
    outcome.error.insert_str(0, &notice);
    outcome
}

/// Checks the flows' SQL of a loaded config (offline from `.queries/` beside routes.yaml, or on
/// a throwaway database on the server at `database_url`) and what templates read from it, adding
/// the findings to `loaded`. Returns the descriptions, or `None` when the config did not load:
/// a broken config has no reliable list of flows and migrations to check them against.
pub fn check_queries(
    loaded: &mut Loaded,
    routes_dir: &Path,
    files: &dyn FileSource,
    database_url: Option<&str>,
) -> Result<Option<queries::Descriptions>, String> {
    let Some(config) = &loaded.config else {
        return Ok(None);
    };
    let checked = match database_url {
        None => queries::check_offline(config, &loaded.sources, routes_dir, files),
        Some(url) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(queries::check_live(config, &loaded.sources, url))
            .map_err(|e| e.to_string())?,
    };
    let fields = queries::fields::check(config, &loaded.sources, &checked.descriptions);
    add_diagnostics(
        loaded,
        checked.diagnostics.into_iter().chain(fields).collect(),
    );
    Ok(Some(checked.descriptions))
}

/// Adds the query checks' findings; a config with errors in them does not pass.
fn add_diagnostics(loaded: &mut Loaded, found: Vec<easymo_dsl::Diagnostic>) {
    if found.is_empty() {
        return;
    }
    if found.iter().any(easymo_dsl::Diagnostic::is_error) {
        loaded.config = None;
    }
    loaded.diagnostics.extend(found);
    easymo_dsl::diagnostic::sort(&mut loaded.diagnostics);
}

fn could_not_run(error: &str) -> Outcome {
    Outcome {
        output: String::new(),
        error: format!("error: {error}\n"),
        exit_code: 2,
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
