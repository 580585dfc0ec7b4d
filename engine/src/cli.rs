//! The command line: `easymo lint | serve | migrate | seed | simulate | explain | schema | dlq`.
//!
//! - `lint`: check routes.yaml and its flows, print every diagnostic, exit 1 on problems.
//! - `serve`: run the webhooks ([`crate::server`]) until SIGTERM or SIGINT.
//! - `migrate`: apply the embedded migrations (optionally creating the database).
//! - `seed`: load the demo data.
//! - `simulate`: play one message through a flow against a database.
//! - `explain`: say which route a text takes, and why.
//! - `schema`: print the JSON Schema of routes.yaml.
//! - `dlq list | show | retry | discard | stats | inbound`: the dead-letter queue of replies
//!   that could not be sent ([`crate::outbound::dlq`]), and deliveries kept as poison.
//!
//! Owns: argument parsing (clap) and dispatch to the commands. Together with `main.rs`, the only
//! place that uses anyhow: everything below returns typed errors.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{self, Env, EnvPolicy};
use crate::lint;

/// easyMO's webhook routing engine.
#[derive(Debug, Parser)]
#[command(name = "easymo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check routes.yaml and every flow it lists; report all problems.
    Lint {
        /// The config to check.
        #[arg(default_value = "routes.yaml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: lint::Format,
        /// Fail on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Also check that every `${NAME}` is set in the environment.
        #[arg(long)]
        env: bool,
        /// Check the flows' SQL on a throwaway database made on this Postgres server (created,
        /// migrated, dropped) instead of the committed `.queries/` descriptions.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// With --database-url: rewrite `.queries/` beside routes.yaml from what Postgres said.
        #[arg(long, requires = "database_url")]
        write_offline: bool,
    },
    /// Serve the webhooks in routes.yaml; reloads on file changes and SIGHUP.
    Serve {
        /// The config.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Listen here instead of `server.listen` (e.g. `127.0.0.1:0` for a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// How long requests in flight may take to finish after SIGTERM, e.g. `10s`.
        #[arg(long, default_value = "10s")]
        drain: String,
        /// Log format: JSON lines (default when stdout is not a terminal) or text.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Count no metrics and evaluate no alert rules: only for measuring what they cost.
        #[arg(long, hide = true)]
        without_telemetry: bool,
    },
    /// Apply the database migrations embedded in this binary.
    Migrate {
        /// Postgres URL (default: $DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// Create the database first if it does not exist.
        #[arg(long)]
        create: bool,
        /// The config whose `server.migrations` (the product's own tables) are applied after
        /// the engine's; without it, routes.yaml when there is one here.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load data into the database.
    Seed {
        /// The demo data: job categories and jobs, property, products.
        #[arg(long, required = true)]
        demo: bool,
        /// Postgres URL (default: $DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Send one message through the runtime and print the reply as the phone shows it.
    Simulate {
        /// Text messages; with --choice, --location, --approve and --decline, the steps, run in
        /// the order given.
        text: Vec<String>,
        /// The sender's WhatsApp number.
        #[arg(long)]
        from: String,
        /// A list row or button to choose: its id, or the number it is shown with.
        #[arg(long)]
        choice: Vec<String>,
        /// A location to share, `LAT,LON`.
        #[arg(long, allow_hyphen_values = true)]
        location: Vec<String>,
        /// MoMo approves the payment the last step requested: the payer's notice.
        #[arg(long, action = clap::ArgAction::Count)]
        approve: u8,
        /// MoMo declines it.
        #[arg(long, action = clap::ArgAction::Count)]
        decline: u8,
        /// The sender's language, as if chosen from the language menu.
        #[arg(long, value_parser = ["en", "rw", "fr"])]
        language: Option<String>,
        /// Keep what the steps wrote (by default everything is rolled back).
        #[arg(long)]
        commit: bool,
        /// The sender's profile name.
        #[arg(long)]
        name: Option<String>,
        /// The config.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Postgres URL (default: $DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// The steps in the order given (filled from the command line by [`parse`]).
        #[arg(skip)]
        steps: Vec<(&'static str, String)>,
    },
    /// Show which route a message takes and why.
    Explain {
        /// The message text.
        text: String,
        /// The config.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Endpoint whose routing to use (default: the first WhatsApp endpoint).
        #[arg(long)]
        endpoint: Option<String>,
        /// Every route tried, in order, with why it matched or not.
        #[arg(long, short)]
        verbose: bool,
    },
    /// What a diagnostic code means (`easymo explain-code E302`), or every code.
    ExplainCode {
        /// The code, e.g. `E302` (all of them when absent).
        code: Option<String>,
    },
    /// Print the JSON Schema of routes.yaml (for editor autocompletion).
    Schema,
    /// Alert rules: unit tests in promtool's format, and their export for Prometheus.
    Alerts {
        /// What to do.
        #[command(subcommand)]
        command: AlertsCommand,
        /// The config.
        #[arg(long, global = true, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Play conversation scripts through the runtime against a throwaway database and compare
    /// every reply and row with what they expect; run alert-rule tests; exit 1 on a failure.
    Test {
        /// Scripts and alert tests, or directories of them (default: tests/conversations and
        /// tests/alerts beside routes.yaml).
        paths: Vec<PathBuf>,
        /// Write JUnit XML here too.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// The Postgres server to make the throwaway database on (default: $DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// Load the engine's demo data (job categories, jobs, property, products) first.
        #[arg(long)]
        demo: bool,
        /// The config.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Watch a running engine route messages, live: one line per message (time, endpoint,
    /// masked sender, the text as read, route, flow, replies, outcome, duration).
    Tap {
        /// The engine's address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Only this endpoint's messages.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only messages that ran this flow.
        #[arg(long)]
        flow: Option<String>,
        /// The admin token (default: $EASYMO_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// One JSON object per message instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue: replies that could not be sent, and why.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
        /// Postgres URL (default: $DATABASE_URL).
        #[arg(long, global = true)]
        database_url: Option<String>,
        /// Output: aligned text, or JSON for scripts.
        #[arg(long, global = true, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

/// `easymo alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Run rule unit tests written in the `promtool test rules` format against routes.yaml's
    /// rules; exit 1 when an expectation fails.
    Test {
        /// Test files (`tests/alerts/*.yml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the rules as a Prometheus rule file over the exported metrics.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ExportFormat,
    },
}

/// Rule file formats.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum ExportFormat {
    /// A Prometheus rule file (`promtool check rules` reads it).
    #[default]
    Prometheus,
}

/// `easymo dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead rows, oldest first.
    List {
        /// Which rows.
        #[command(flatten)]
        filter: DeadArgs,
    },
    /// One row: its body and every attempt.
    Show {
        /// The outbox row id.
        id: i64,
    },
    /// Re-queue dead rows: the running engine sends them in outbox order, at each number's
    /// throughput cap, with `deliver_within` counted from now.
    Retry {
        /// Which rows.
        #[command(flatten)]
        rows: ChosenRows,
    },
    /// Give up on dead rows: they leave the queue and are never sent.
    Discard {
        /// Which rows.
        #[command(flatten)]
        rows: ChosenRows,
    },
    /// Dead rows by reason.
    Stats,
    /// The inbound counterpart: WhatsApp deliveries kept as poison (a NUL byte, a message
    /// without an id, a timestamp out of range, attempts used up), newest first.
    Inbound,
}

/// The dead rows a retry or discard acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct ChosenRows {
    /// Row ids (or use a filter).
    ids: Vec<i64>,
    /// Which rows, when no ids are given.
    #[command(flatten)]
    filter: DeadArgs,
    /// Every dead row, when neither ids nor a filter are given.
    #[arg(long)]
    all: bool,
    /// Say which rows, change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Which dead rows.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadArgs {
    /// Reason class: expired, window_closed, rejected, retries_exhausted, paused,
    /// unauthorized, failed.
    #[arg(long)]
    reason: Option<String>,
    /// Meta's error code, e.g. 131047.
    #[arg(long)]
    code: Option<i32>,
    /// Dead within this long (`2h`) or since this time (`2026-12-01T08:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// To this WhatsApp number.
    #[arg(long)]
    recipient: Option<String>,
}

impl DeadArgs {
    fn is_empty(&self) -> bool {
        self.reason.is_none()
            && self.code.is_none()
            && self.since.is_none()
            && self.recipient.is_none()
    }
}

/// Text for people, JSON for scripts.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Lint {
            config,
            format,
            deny_warnings,
            env,
            database_url,
            write_offline,
        } => Ok(lint_command(
            &config,
            lint::Options {
                format,
                deny_warnings,
                policy: env.then(|| EnvPolicy::Resolve(Env::from_process())),
                database_url,
                write_offline,
            },
        )),
        Command::Serve {
            config,
            listen,
            drain,
            log_format,
            without_telemetry,
        } => serve(config, listen, &drain, (log_format, !without_telemetry)),
        Command::Explain {
            text,
            config,
            endpoint,
            verbose,
        } => explain(&config, endpoint.as_deref(), &text, verbose),
        Command::Migrate {
            database_url,
            create,
            config,
        } => migrate(database_url, create, config),
        Command::Seed {
            demo: _,
            database_url,
        } => seed(database_url),
        Command::Simulate {
            from,
            language,
            commit,
            name,
            config,
            database_url,
            steps,
            ..
        } => {
            let steps = simulated_steps(&steps)?;
            let options = crate::simulate::Options {
                from,
                name,
                language,
                commit,
                base_dir: config.parent().map(Path::to_path_buf).unwrap_or_default(),
                numbers_pick_shown: true,
            };
            simulate(&config, database_url, &options, &steps)
        }
        Command::ExplainCode { code } => Ok(explain_code(code.as_deref())),
        Command::Test {
            paths,
            junit,
            database_url,
            demo,
            config,
        } => test(&config, paths, junit, database_url, demo),
        Command::Tap {
            url,
            endpoint,
            flow,
            token,
            json,
        } => crate::tap::client::run(&crate::tap::client::Options {
            url,
            endpoint,
            flow,
            token: match token.or_else(|| std::env::var("EASYMO_ADMIN_TOKEN").ok()) {
                Some(token) => token,
                None => anyhow::bail!("give --token or set EASYMO_ADMIN_TOKEN"),
            },
            json,
        }),
        Command::Dlq {
            command,
            database_url,
            format,
        } => dlq(command, database_url, format),
        Command::Alerts { command, config } => alerts(&config, command),
        Command::Schema => {
            let schema = config::schema();
            let text = serde_json::to_string_pretty(&schema).context("serializing the schema")?;
            write_out(&format!("{text}\n"));
            Ok(0)
        }
    }
}

fn lint_command(config: &Path, options: lint::Options) -> u8 {
    let outcome = lint::run(config, &options);
    write_out(&outcome.output);
    eprint!("{}", outcome.error);
    outcome.exit_code
}

fn serve(
    config: PathBuf,
    listen: Option<std::net::SocketAddr>,
    drain: &str,
    (log_format, telemetry): (Option<LogFormat>, bool),
) -> anyhow::Result<u8> {
    let _flush_logs_on_exit: crate::logging::LogGuard =
        crate::logging::init(log_format.map(|f| matches!(f, LogFormat::Json)));
    let drain = easymo_dsl::parser::parse_duration(drain)
        .map_err(|e| anyhow::anyhow!("--drain {drain:?}: {e}"))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let options = crate::server::Options {
        config,
        listen,
        drain,
        telemetry,
    };
    // Signal handlers register with the runtime: the shutdown future is made inside it.
    let served = runtime.block_on(async {
        crate::server::run(
            options,
            Env::from_process(),
            crate::server::shutdown_signal(),
        )
        .await
    });
    match served {
        Ok(()) => Ok(0),
        Err(crate::server::ServeError::Load(error)) => {
            eprintln!("error: the engine did not start: {error}");
            Ok(1)
        }
        Err(error) => Err(error).context("serving"),
    }
}

fn explain(path: &Path, endpoint: Option<&str>, text: &str, verbose: bool) -> anyhow::Result<u8> {
    let Some(config) = load_or_report(path)? else {
        return Ok(1);
    };
    write_out(&crate::explain::explain(&config, endpoint, text, verbose)?);
    Ok(0)
}

fn migrate(
    database_url: Option<String>,
    create: bool,
    config: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let config = config.or_else(|| {
        let here = PathBuf::from("routes.yaml");
        here.is_file().then_some(here)
    });
    let product = match &config {
        Some(path) => match load_or_report(path)? {
            Some(config) => config.server.migrations,
            None => return Ok(1),
        },
        None => None,
    };
    let url = database_url_or_env(database_url)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        if create {
            crate::store::create_database(&url)
                .await
                .context("creating the database")?;
        }
        let pool = crate::store::connect(&url, 2)
            .await
            .context("connecting to Postgres")?;
        let applied = crate::store::migrate(&pool, product.as_deref())
            .await
            .context("migrating")?;
        let whose = match &product {
            Some(dir) => format!("the engine's and {}'s", dir.display()),
            None => "the engine's".to_owned(),
        };
        eprintln!("migrate: {applied} migration(s) applied; the schema is current ({whose})");
        anyhow::Ok(0)
    })
}

fn seed(database_url: Option<String>) -> anyhow::Result<u8> {
    on_current_database(database_url, async |pool| {
        let loaded = crate::store::seed_demo(pool)
            .await
            .context("loading the demo data")?;
        eprintln!(
            "seed: {}",
            if loaded {
                "demo data loaded"
            } else {
                "demo data already present; nothing changed"
            }
        );
        anyhow::Ok(0)
    })
}

/// Exactly one of the message text, `--choice` or `--location`.
/// `easymo explain-code`: 0 when the code exists (or all are listed), 1 when it does not.
fn explain_code(code: Option<&str>) -> u8 {
    use easymo_dsl::codes::ALL;
    let Some(code) = code else {
        let listed: String = ALL
            .iter()
            .map(|(code, meaning)| format!("{code}  {}\n", meaning.trim()))
            .collect();
        write_out(&listed);
        return 0;
    };
    let wanted = code.trim().to_ascii_uppercase();
    match ALL.iter().find(|(known, _)| *known == wanted) {
        Some((known, meaning)) => {
            write_out(&format!(
                "{known}: {}\n\nExamples and what to do: docs/diagnostics.md#{}\n",
                meaning.trim(),
                known.to_ascii_lowercase()
            ));
            0
        }
        None => {
            let near = easymo_dsl::diagnostic::did_you_mean(&wanted, ALL.iter().map(|(c, _)| *c));
            eprintln!(
                "error: no diagnostic code {wanted}{}",
                near.map(|n| format!("; {n}")).unwrap_or_default()
            );
            1
        }
    }
}

fn test(
    config_path: &Path,
    paths: Vec<PathBuf>,
    junit: Option<PathBuf>,
    database_url: Option<String>,
    demo: bool,
) -> anyhow::Result<u8> {
    let Some(config) = load_or_report(config_path)? else {
        return Ok(1);
    };
    let base_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let paths = if paths.is_empty() {
        ["tests/conversations", "tests/alerts"]
            .iter()
            .map(|p| base_dir.join(p))
            .filter(|p| p.exists())
            .collect()
    } else {
        paths
    };
    let options = crate::testing::Options {
        paths,
        database_url: database_url_or_env(database_url)?,
        demo,
        base_dir,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let cases = runtime.block_on(crate::testing::run(&config, &options))?;
    write_out(&crate::testing::report(&cases));
    if let Some(junit) = junit {
        std::fs::write(&junit, crate::testing::junit::render(&cases))
            .with_context(|| format!("writing {}", junit.display()))?;
    }
    let failed = cases
        .iter()
        .any(|c| matches!(c.outcome, crate::testing::Outcome::Failed(_)));
    Ok(u8::from(failed))
}

/// The command line as parsed, with `simulate`'s steps in the order they were given (clap
/// hands each option's values apart; their indices say the order).
pub fn parse() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Command::Simulate { steps, .. }, Some(("simulate", given))) =
        (&mut cli.command, matches.subcommand())
    {
        let mut ordered: Vec<(usize, &'static str, String)> = Vec::new();
        // Defaults (no --approve is a count of 0) have indices too: only what was typed counts.
        let typed =
            |id: &str| given.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        for id in ["text", "choice", "location"]
            .into_iter()
            .filter(|id| typed(id))
        {
            if let (Some(indices), Some(values)) =
                (given.indices_of(id), given.get_many::<String>(id))
            {
                ordered.extend(indices.zip(values).map(|(i, v)| (i, id, v.clone())));
            }
        }
        for id in ["approve", "decline"].into_iter().filter(|id| typed(id)) {
            if let Some(indices) = given.indices_of(id) {
                ordered.extend(indices.map(|i| (i, id, String::new())));
            }
        }
        ordered.sort_by_key(|(i, _, _)| *i);
        *steps = ordered.into_iter().map(|(_, id, v)| (id, v)).collect();
    }
    cli
}

fn simulated_steps(given: &[(&str, String)]) -> anyhow::Result<Vec<crate::simulate::Input>> {
    use crate::simulate::Input;
    if given.is_empty() {
        anyhow::bail!(
            "give the message text, or --choice N|ID, --location LAT,LON, --approve or --decline"
        );
    }
    given
        .iter()
        .map(|(kind, value)| {
            Ok(match *kind {
                "choice" => Input::Choice(value.clone()),
                "location" => {
                    let (lat, lon) = value
                        .split_once(',')
                        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                        .ok_or_else(|| {
                            anyhow::anyhow!("--location takes LAT,LON, e.g. -1.9536,30.0606")
                        })?;
                    Input::Location(lat, lon)
                }
                "approve" => Input::Approve,
                "decline" => Input::Decline,
                _ => Input::Text(value.clone()),
            })
        })
        .collect()
}

fn simulate(
    path: &Path,
    database_url: Option<String>,
    options: &crate::simulate::Options,
    steps: &[crate::simulate::Input],
) -> anyhow::Result<u8> {
    let Some(config) = load_or_report(path)? else {
        return Ok(1);
    };
    let printed = on_current_database(database_url, async |pool| {
        anyhow::Ok(crate::simulate::run(pool, &config, options, steps).await?)
    })?;
    write_out(&printed);
    Ok(0)
}

fn alerts(config: &Path, command: AlertsCommand) -> anyhow::Result<u8> {
    let Some(config) = load_or_report(config)? else {
        return Ok(1);
    };
    match command {
        AlertsCommand::Export {
            format: ExportFormat::Prometheus,
        } => {
            write_out(&crate::alerts::export::prometheus_rules(&config));
            Ok(0)
        }
        AlertsCommand::Test { files } => {
            let report = crate::alerts::promtool::run_files(&config, &files);
            write_out(&report.text);
            Ok(u8::from(!report.passed))
        }
    }
}

/// The compiled config, or `None` after printing why it does not compile.
fn load_or_report(path: &Path) -> anyhow::Result<Option<config::Config>> {
    let loaded = config::load(path, &EnvPolicy::Unchecked)
        .with_context(|| format!("loading {}", path.display()))?;
    if loaded.config.is_none() {
        eprint!(
            "{}",
            lint::report(&loaded, &lint::Options::default()).output
        );
    }
    Ok(loaded.config)
}

fn dlq(
    command: DlqCommand,
    database_url: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<u8> {
    use crate::outbound::dlq::{self, Output};
    let output = match format {
        OutputFormat::Text => Output::Text,
        OutputFormat::Json => Output::Json,
    };
    on_current_database(database_url, async |pool| {
        let printed = match command {
            DlqCommand::List { filter } => {
                let filter = dead_filter(pool, Vec::new(), &filter).await?;
                dlq::list(pool, &filter, output).await?
            }
            DlqCommand::Show { id } => match dlq::show(pool, id, output).await? {
                Some(text) => text,
                None => {
                    eprintln!("error: no outbox row {id}");
                    return anyhow::Ok(1);
                }
            },
            DlqCommand::Retry { rows } => {
                let filter = chosen_rows(pool, &rows, "retry").await?;
                let ids = crate::store::outbox::requeue(pool, &filter, rows.dry_run).await?;
                dlq::acted("re-queued", &ids, rows.dry_run, output)
            }
            DlqCommand::Discard { rows } => {
                let filter = chosen_rows(pool, &rows, "discard").await?;
                let ids = crate::store::outbox::discard(pool, &filter, rows.dry_run).await?;
                dlq::acted("discarded", &ids, rows.dry_run, output)
            }
            DlqCommand::Stats => dlq::stats(pool, output).await?,
            DlqCommand::Inbound => dlq::inbound(pool, output).await?,
        };
        write_out(&printed);
        anyhow::Ok(0)
    })
}

/// The rows a retry or discard acts on: ids, a filter, or `--all`, never by accident.
async fn chosen_rows(
    pool: &sqlx::PgPool,
    rows: &ChosenRows,
    verb: &str,
) -> anyhow::Result<crate::store::outbox::DeadFilter> {
    if rows.ids.is_empty() && rows.filter.is_empty() && !rows.all {
        anyhow::bail!(
            "`dlq {verb}` needs row ids, a filter (--reason, --code, --since, --recipient) or --all"
        );
    }
    dead_filter(pool, rows.ids.clone(), &rows.filter).await
}

async fn dead_filter(
    pool: &sqlx::PgPool,
    ids: Vec<i64>,
    args: &DeadArgs,
) -> anyhow::Result<crate::store::outbox::DeadFilter> {
    if let Some(reason) = &args.reason {
        if crate::config::DeadReason::parse(reason).is_none() {
            let known: Vec<&str> = crate::config::DeadReason::ALL
                .iter()
                .map(|r| r.as_str())
                .collect();
            anyhow::bail!(
                "--reason {reason:?} is not a dead-letter reason; use one of {}",
                known.join(", ")
            );
        }
    }
    let since = match &args.since {
        None => None,
        Some(text) => Some(match easymo_dsl::parser::parse_duration(text) {
            Ok(ago) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.saturating_sub(ago).as_secs_f64()
            }
            Err(_) => crate::store::outbox::epoch_of(pool, text)
                .await
                .map_err(|e| anyhow::anyhow!("--since {text:?} is neither a duration (`2h`) nor a time (`2026-12-01T08:00:00Z`): {e}"))?,
        }),
    };
    Ok(crate::store::outbox::DeadFilter {
        ids,
        reason: args.reason.clone(),
        code: args.code,
        since,
        recipient: args.recipient.clone(),
    })
}

/// Runs `work` on the database of `--database-url` (or `$DATABASE_URL`), once its schema is
/// known to be current.
fn on_current_database<T>(
    database_url: Option<String>,
    work: impl AsyncFnOnce(&sqlx::PgPool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let url = database_url_or_env(database_url)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let pool = crate::store::connect(&url, 2)
            .await
            .context("connecting to Postgres")?;
        crate::store::check_schema(&pool, None).await?;
        work(&pool).await
    })
}

/// Writes to stdout; a closed pipe (`easymo schema | head`) is not an error worth a panic.
fn write_out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn database_url_or_env(flag: Option<String>) -> anyhow::Result<String> {
    flag.or_else(|| std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()))
        .ok_or_else(|| anyhow::anyhow!("no database: pass --database-url or set DATABASE_URL"))
}
