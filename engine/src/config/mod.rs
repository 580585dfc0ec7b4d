//! routes.yaml and the flow files it lists → one validated, immutable [`Config`].
//!
//! Owns: finding and reading the files, and the single load-and-check path that `easymo lint`,
//! `easymo serve` and every reload share, so nothing lint passes can fail at load time. Raw
//! serde shapes (`raw`) never leave this module; the rest of the engine sees only the typed
//! values below. Must not start servers, open connections or log: callers decide what to do
//! with the diagnostics.
//!
//! # Layout
//! - `raw`: serde shapes and the JSON Schema (private: the rest of the engine sees typed values).
//! - `reply`: reply templates, compiled with the variables each reads.
//! - `yaml`: YAML positions and staged deserialization.
//! - `env`: `${NAME}` secrets.
//! - `templates`: reply-template checks.
//! - `compile`: raw → [`Config`], running every check.

mod compile;
pub mod env;
mod raw;
pub mod reply;
pub mod sending;
pub mod templates;
pub mod yaml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use easymo_dsl::ast::{Condition, Flow, FlowFile};
use easymo_dsl::check::FlowIndex;
use easymo_dsl::{Diagnostic, Sources};
use ipnet::IpNet;

pub use env::{Env, EnvPolicy, Secret};
pub use raw::{
    AlertSeverity, ChannelKind, Deprecation, EndpointKind, LimitKey, OnLimit, RateLimitStore,
    SignatureEncoding, SmsKind,
};
pub use reply::{ReplyTemplate, Shape};
pub use sending::{DeadReason, Sending};

use crate::router::Router;

/// A validated configuration: what the engine serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub server: Server,
    /// Endpoints in file order.
    pub endpoints: Vec<Endpoint>,
    /// Reply templates by name.
    pub templates: BTreeMap<String, ReplyTemplate>,
    /// Parsed and checked flows.
    pub flows: Flows,
    /// What the checks learnt about each template (what it reads, asks for, …), for the
    /// checks that run after loading (`queries::fields`).
    pub template_facts: BTreeMap<String, easymo_dsl::check::TemplateInfo>,
    /// Alert channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Alert rules.
    pub alerts: Vec<AlertRule>,
    /// How the rules are evaluated and repeated.
    pub alerting: Alerting,
    /// The MoMo API account, when payments are configured.
    pub momo: Option<Momo>,
}

impl Config {
    /// The sending section that sends from `phone_number_id`: the one naming that number, else
    /// the one that sends from whichever number a message came to. Retired endpoints send too:
    /// their conversations' replies are still owed.
    pub fn sending_for(&self, phone_number_id: &str) -> Option<&Sending> {
        let sections = || self.endpoints.iter().filter_map(|e| e.sending.as_ref());
        sections()
            .find(|s| s.phone_number_id.as_deref() == Some(phone_number_id))
            .or_else(|| sections().find(|s| s.phone_number_id.is_none()))
    }

    /// Every sending section.
    pub fn sendings(&self) -> impl Iterator<Item = &Sending> {
        self.endpoints.iter().filter_map(|e| e.sending.as_ref())
    }
}

/// The MTN MoMo Open API account.
#[derive(Debug, Clone)]
pub struct Momo {
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// `X-Target-Environment`.
    pub target_environment: String,
    /// `Ocp-Apim-Subscription-Key`.
    pub subscription_key: Secret,
    /// API user.
    pub api_user: Secret,
    /// API key.
    pub api_key: Secret,
    /// Per-call timeout.
    pub timeout: std::time::Duration,
    /// Payments pending this long are polled, and polled again at this interval.
    pub poll_after: std::time::Duration,
    /// Currency of requests to pay.
    pub currency: String,
    /// `X-Callback-Url` of requests to pay.
    pub callback_url: Option<String>,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Listen address.
    pub listen: SocketAddr,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Postgres URL.
    pub database_url: Option<Secret>,
    /// Admin bearer token.
    pub admin_token: Option<Secret>,
    /// Connection limits and timeouts.
    pub connections: Connections,
    /// The product's own migrations directory, resolved against routes.yaml's.
    pub migrations: Option<std::path::PathBuf>,
    /// Where rate-limit budgets are counted.
    pub rate_limits: RateLimitStore,
}

/// What one client may hold of the server: time, connections and body memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// For a new connection's first request headers.
    pub header_timeout: std::time::Duration,
    /// For a request's body, once its headers are in.
    pub body_timeout: std::time::Duration,
    /// For a keep-alive connection's next request headers.
    pub idle_timeout: std::time::Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Request body bytes held at once, across requests.
    pub max_body_memory: usize,
}

/// One endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Unique name.
    pub name: String,
    /// URL path.
    pub path: String,
    /// What it receives.
    pub kind: EndpointKind,
    /// How requests authenticate.
    pub auth: Auth,
    /// WhatsApp GET handshake token.
    pub verify_token: Option<Secret>,
    /// Rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Keyword routing (WhatsApp).
    pub router: Option<Router>,
    /// SMS parsing (SMS endpoints).
    pub sms: Option<SmsRules>,
    /// Set for retired endpoints.
    pub deprecated: Option<Deprecation>,
    /// How replies are sent (WhatsApp endpoints).
    pub sending: Option<Sending>,
}

/// Authentication of one endpoint.
#[derive(Debug, Clone)]
pub enum Auth {
    /// None.
    None,
    /// HMAC-SHA256 over the raw body.
    Hmac {
        /// Header name.
        header: String,
        /// Text before the signature.
        prefix: String,
        /// Signature encoding.
        encoding: SignatureEncoding,
        /// Accepted secrets.
        secrets: Vec<Secret>,
    },
    /// Standard Webhooks.
    StandardWebhooks {
        /// Accepted secrets.
        secrets: Vec<Secret>,
        /// Largest accepted clock skew.
        tolerance: Duration,
    },
    /// Client address allowlist.
    IpAllowlist(Vec<IpNet>),
}

/// A rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests per window.
    pub requests: NonZeroU32,
    /// Window.
    pub per: Duration,
    /// Who shares a budget.
    pub key: LimitKey,
    /// What a refused request gets.
    pub on_limit: OnLimit,
    /// Template for `reply_once`.
    pub reply_template: Option<String>,
}

/// SMS parsing rules.
#[derive(Debug, Clone)]
pub struct SmsRules {
    /// Senders allowed to credit.
    pub senders: Vec<String>,
    /// Patterns in order.
    pub patterns: Vec<SmsPattern>,
}

/// One SMS pattern.
#[derive(Debug, Clone)]
pub struct SmsPattern {
    /// Name.
    pub name: String,
    /// Meaning.
    pub kind: SmsKind,
    /// Compiled regex.
    pub regex: regex::Regex,
    /// Flow run with the parsed SMS.
    pub flow: Option<String>,
}

/// All flows.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    /// Parsed files, by path as listed in routes.yaml.
    pub files: Vec<(String, FlowFile)>,
    /// Every flow by name.
    pub index: FlowIndex,
    /// Where each flow is in `files` (file, flow), so the runtime finds one without a scan.
    positions: std::collections::HashMap<String, (usize, usize)>,
}

impl Flows {
    /// Assembles the parsed files and their index; the first definition of a name wins, as in
    /// the checker.
    pub fn new(files: Vec<(String, FlowFile)>, index: FlowIndex) -> Self {
        let mut positions = std::collections::HashMap::new();
        for (f, (_, file)) in files.iter().enumerate() {
            for (i, flow) in file.flows.iter().enumerate() {
                positions.entry(flow.name.node.clone()).or_insert((f, i));
            }
        }
        Flows {
            files,
            index,
            positions,
        }
    }

    /// The flow called `name`.
    pub fn get(&self, name: &str) -> Option<&Flow> {
        let (f, i) = *self.positions.get(name)?;
        self.files.get(f)?.1.flows.get(i)
    }

    /// The flow called `name`, if it can receive a person's answer (`await … -> name` hands
    /// it exactly one value). A session that awaits anything else was left by a config that
    /// had such a flow.
    pub fn awaitable(&self, name: &str) -> Option<&Flow> {
        self.get(name).filter(|flow| flow.params.len() == 1)
    }

    /// Every flow that can receive an answer, by name.
    pub fn awaitable_names(&self) -> Vec<String> {
        self.index
            .iter()
            .filter(|(_, entry)| entry.arity == 1)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// An alert channel.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Service.
    pub kind: ChannelKind,
    /// Webhook URL (Slack, webhook) or routing key (PagerDuty).
    pub target: Secret,
    /// PagerDuty's Events API URL, when not PagerDuty's own (a proxy, a test receiver).
    pub events_url: Option<String>,
}

/// How alert rules are evaluated: the `alerts:` settings beside channels and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerting {
    /// How often every rule is evaluated.
    pub evaluation_interval: Duration,
    /// The sliding window rates and percentiles are taken over.
    pub window: Duration,
    /// How often a firing alert is sent again.
    pub repeat_interval: Duration,
    /// Prefix that turns a runbook path into a link.
    pub runbook_base_url: Option<String>,
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            evaluation_interval: Duration::from_secs(15),
            window: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            runbook_base_url: None,
        }
    }
}

impl AlertRule {
    /// See [`alert_name`].
    pub fn alert_name(&self) -> String {
        alert_name(&self.name)
    }
}

/// A rule's name as an alert name Prometheus accepts, the same in both engines:
/// `error rate critical` is `ErrorRateCritical`.
pub fn alert_name(rule_name: &str) -> String {
    rule_name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// An alert rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// Name.
    pub name: String,
    /// Parsed condition.
    pub condition: Condition,
    /// Urgency.
    pub severity: AlertSeverity,
    /// Channel names.
    pub channels: Vec<String>,
    /// The runbook's path, relative to routes.yaml (checked to exist).
    pub runbook: Option<String>,
}

/// The outcome of loading: every diagnostic, the texts they point into, and the config when
/// there were no errors.
#[derive(Debug)]
pub struct Loaded {
    /// File texts for rendering diagnostics.
    pub sources: Sources,
    /// All problems, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The config, only when no diagnostic is an error.
    pub config: Option<Config>,
}

impl Loaded {
    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// routes.yaml itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Where flow files come from: the disk, or memory in tests and benchmarks.
pub trait FileSource {
    /// Reads a whole file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The `*.flow` files in a directory, for spotting files routes.yaml forgot to list.
    fn flow_files_in(&self, dir: &Path) -> Vec<PathBuf>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl FileSource for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn flow_files_in(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "flow"))
            .collect();
        files.sort();
        files
    }
}

/// The JSON Schema of routes.yaml, for editors (`easymo schema`).
pub fn schema() -> schemars::schema::RootSchema {
    schemars::schema_for!(raw::Routes)
}

/// Loads and checks routes.yaml and its flows from disk.
pub fn load(path: &Path, policy: &EnvPolicy) -> Result<Loaded, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    Ok(load_text(
        &path.display().to_string(),
        &text,
        &base,
        policy,
        &Disk,
    ))
}

/// Loads and checks a routes.yaml text; flow paths resolve against `base_dir` through `files`.
pub fn load_text(
    name: &str,
    text: &str,
    base_dir: &Path,
    policy: &EnvPolicy,
    files: &dyn FileSource,
) -> Loaded {
    let mut sources = Sources::new();
    let file = sources.add(name, text);
    let (config, mut diagnostics) = compile::compile(
        compile::Input {
            file,
            text,
            base_dir,
            policy,
            files,
        },
        &mut sources,
    );
    easymo_dsl::diagnostic::sort(&mut diagnostics);
    let config = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        config
    };
    Loaded {
        sources,
        diagnostics,
        config,
    }
}
