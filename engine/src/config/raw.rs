//! The serde shapes of routes.yaml, exactly as written by product people.
//!
//! Owns: field names, defaults and the JSON Schema (`easymo schema`). Every struct rejects
//! unknown fields so a typo is an error, not a silently ignored key. Must not validate meaning:
//! values stay strings where a check needs to point at them (durations, CIDRs, regexes,
//! conditions); `compile` turns them into typed values. Raw types never leave `config`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::reply::Shape;
pub use crate::router::MatchMode;

/// The whole routes.yaml file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "only the JSON Schema reads it whole: compile deserializes each section on its own"
)]
pub struct Routes {
    /// Format version of this file; currently 1.
    pub version: u32,
    /// Process-wide settings.
    pub server: Server,
    /// Flow files, relative to this file.
    pub flows: Vec<String>,
    /// The languages the service speaks (`en`, `rw`, `fr`): every template text written per
    /// language must have all of them (a plain string is the same text in every language).
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// HTTP endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Reply templates by name.
    #[serde(default)]
    pub templates: BTreeMap<String, Shape>,
    /// Alert channels and rules.
    #[serde(default)]
    pub alerts: Option<Alerts>,
    /// The MTN MoMo Open API: where payments are confirmed.
    #[serde(default)]
    pub momo: Option<Momo>,
}

/// The MTN MoMo Open API account.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Momo {
    /// API base URL, e.g. `https://proxy.momoapi.mtn.co.rw` (`http://` only for tests).
    pub base_url: String,
    /// `X-Target-Environment`: `mtnrwanda` in production, `sandbox` for tests.
    pub target_environment: String,
    /// `Ocp-Apim-Subscription-Key`; an environment reference.
    pub subscription_key: String,
    /// API user (a UUID); an environment reference.
    pub api_user: String,
    /// API key; an environment reference.
    pub api_key: String,
    /// How long one call to the API may take, e.g. `5s`.
    #[serde(default = "default_momo_timeout")]
    pub timeout: String,
    /// A payment with no callback this long after it was requested is polled (MTN may send
    /// a callback only once, or never), e.g. `2m`.
    #[serde(default = "default_momo_poll_after")]
    pub poll_after: String,
    /// Currency of requests to pay: `RWF` in production (the sandbox takes `EUR`).
    #[serde(default = "default_momo_currency")]
    pub currency: String,
    /// `X-Callback-Url` sent with each request to pay (the momo-webhook endpoint's public URL).
    #[serde(default)]
    pub callback_url: Option<String>,
}

fn default_momo_currency() -> String {
    "RWF".to_owned()
}

fn default_momo_poll_after() -> String {
    "2m".to_owned()
}

fn default_momo_timeout() -> String {
    "5s".to_owned()
}

/// The top-level keys, for reporting unknown ones all at once.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "server",
    "flows",
    "languages",
    "endpoints",
    "templates",
    "alerts",
    "momo",
];

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub listen: String,
    /// Proxies (CIDRs or addresses) whose X-Forwarded-For / X-Real-IP headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest accepted request body in bytes (Meta sends up to 3 MB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Postgres URL; must be an environment reference such as `${DATABASE_URL}`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Bearer token for the admin routes; an environment reference.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// How long a new connection may take to send its first request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// How long a request may take to send its body once its headers are in.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// How long a keep-alive connection may wait, idle, for its next request's headers.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Open connections served at once; newer ones are shed (probes still answered). Capped
    /// below the process's file-descriptor limit at start.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Bytes of request bodies held in memory at once, across all requests; a request whose
    /// body does not fit is answered 503 before it is read.
    #[serde(default = "default_max_body_memory_bytes")]
    pub max_body_memory_bytes: u64,
    /// The product's own migrations (new tables for a new service), a directory relative to
    /// routes.yaml: applied by `easymo migrate` after the engine's, required by `easymo serve`.
    #[serde(default)]
    pub migrations: Option<String>,
    /// Where rate-limit budgets are counted: `local` (each process its own; the default, and
    /// the fastest) or `postgres` (one budget across every replica on the database).
    #[serde(default)]
    pub rate_limits: RateLimitStore,
}

/// Where rate-limit budgets are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    /// In each process: N replicas give each key N times the budget.
    #[default]
    Local,
    /// In Postgres (an unlogged table, one statement per decision), shared by all replicas;
    /// while Postgres does not answer, each process counts locally.
    Postgres,
}

fn default_max_body_bytes() -> u64 {
    3 * 1024 * 1024
}

fn default_header_timeout() -> String {
    "10s".to_owned()
}

fn default_body_timeout() -> String {
    "30s".to_owned()
}

fn default_idle_timeout() -> String {
    "60s".to_owned()
}

fn default_max_connections() -> u32 {
    10_000
}

fn default_max_body_memory_bytes() -> u64 {
    64 * 1024 * 1024
}

/// One HTTP endpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// URL path, e.g. `/webhooks/whatsapp`.
    pub path: String,
    /// What the endpoint receives.
    pub kind: EndpointKind,
    /// How requests prove where they come from.
    pub auth: Auth,
    /// Token Meta echoes in the GET `hub.verify_token` handshake (WhatsApp only).
    #[serde(default)]
    pub verify_token: Option<String>,
    /// Requests allowed per window.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Keyword routing of WhatsApp messages to flows.
    #[serde(default)]
    pub routing: Option<Routing>,
    /// Parsing of forwarded SMS (SMS endpoints only).
    #[serde(default)]
    pub sms: Option<Sms>,
    /// Marks a retired endpoint: it answers 410 Gone with this message.
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
    /// How replies to this endpoint's messages are sent (WhatsApp only). Without it, replies
    /// stay in the outbox.
    #[serde(default)]
    pub sending: Option<Sending>,
}

/// The sending side of a WhatsApp endpoint: the Cloud API number replies go out from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sending {
    /// A system-user access token with `whatsapp_business_messaging`; an environment reference.
    pub access_token: String,
    /// The business phone number id replies are sent from. Default: the number each message
    /// came to (Meta names it in every delivery).
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// Graph API base URL (`http://` only for tests).
    #[serde(default = "default_graph_base_url")]
    pub base_url: String,
    /// Graph API version, e.g. `v25.0`.
    #[serde(default = "default_graph_api_version")]
    pub api_version: String,
    /// How long one call to the Graph API may take, e.g. `10s`.
    #[serde(default = "default_sending_timeout")]
    pub timeout: String,
    /// The number's throughput: messages per second (Meta's default is 80, up to 1,000).
    #[serde(default = "default_throughput")]
    pub throughput: u32,
    /// Retries of a send that failed for a passing reason.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// How long a reply stays worth sending; after this it is dead as `expired`, never sent
    /// late. Well inside WhatsApp's 24-hour customer-service window, e.g. `15m`.
    #[serde(default = "default_deliver_within")]
    pub deliver_within: String,
    /// How long a paused number (or token) waits before one message is sent as a probe;
    /// doubled after each failed probe, up to ten minutes.
    #[serde(default = "default_probe_after")]
    pub probe_after: String,
    /// Dead-letter reasons the engine re-drives by itself once sending works again, e.g.
    /// `[paused, unauthorized]`.
    #[serde(default)]
    pub redrive: Vec<DeadReason>,
}

/// Retry policy: exponential backoff with jitter, up to a ceiling.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The first wait, doubled after each failure, e.g. `1s`.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// The longest wait between two attempts, e.g. `5m`.
    #[serde(default = "default_backoff_ceiling")]
    pub backoff_ceiling: String,
}

pub use super::sending::DeadReason;

fn default_graph_base_url() -> String {
    "https://graph.facebook.com".to_owned()
}

fn default_graph_api_version() -> String {
    "v25.0".to_owned()
}

fn default_sending_timeout() -> String {
    "10s".to_owned()
}

fn default_throughput() -> u32 {
    80
}

fn default_probe_after() -> String {
    "30s".to_owned()
}

fn default_deliver_within() -> String {
    "15m".to_owned()
}

pub(crate) fn default_attempts() -> u32 {
    8
}

pub(crate) fn default_backoff() -> String {
    "1s".to_owned()
}

pub(crate) fn default_backoff_ceiling() -> String {
    "5m".to_owned()
}

/// What an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// WhatsApp Cloud API webhook.
    Whatsapp,
    /// MTN MoMo payment callback.
    MomoCallback,
    /// Forwarded SMS from an SMS gateway.
    Sms,
}

impl EndpointKind {
    /// The name as written in routes.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Whatsapp => "whatsapp",
            EndpointKind::MomoCallback => "momo_callback",
            EndpointKind::Sms => "sms",
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// No authentication (only for deprecated endpoints or callbacks confirmed out of band).
    None,
    /// HMAC-SHA256 of the raw body in a header.
    Hmac(Hmac),
    /// The Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks(StandardWebhooks),
    /// Only these client addresses.
    IpAllowlist(IpAllowlist),
}

/// HMAC-SHA256 signature settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hmac {
    /// Header carrying the signature, e.g. `X-Hub-Signature-256`.
    pub header: String,
    /// Text before the signature, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    /// How the signature bytes are written.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Accepted secrets (several during a rotation); environment references.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Who signs, where the sender itself is known to sign nothing (MTN signs no MoMo
    /// callback): the proxy of yours that does.
    #[serde(default)]
    pub signer: Option<String>,
}

/// Encoding of signature bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lowercase or uppercase hex.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// Standard Webhooks settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooks {
    /// Accepted secrets (`whsec_…`); environment references.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Largest accepted clock difference, e.g. `5m`; older messages are replays.
    #[serde(default = "default_tolerance")]
    pub tolerance: String,
}

fn default_tolerance() -> String {
    "5m".to_owned()
}

/// IP allowlist settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpAllowlist {
    /// Allowed networks, e.g. `196.12.0.0/16`, or single addresses.
    pub cidrs: Vec<String>,
}

/// A rate limit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window, e.g. `60s`.
    pub per: String,
    /// Who shares one budget.
    #[serde(default)]
    pub key: LimitKey,
    /// What a refused request gets.
    #[serde(default)]
    pub on_limit: OnLimit,
    /// Template sent once when `on_limit: reply_once`.
    #[serde(default)]
    pub reply_template: Option<String>,
}

/// Who shares one rate-limit budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// All requests to the endpoint.
    #[default]
    Endpoint,
    /// Each client IP address.
    ClientIp,
    /// Each WhatsApp sender (`from`).
    Sender,
}

/// What a request over the limit gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// 429 with Retry-After.
    #[default]
    Reject,
    /// 200 and the message is dropped (Meta disables webhooks that keep failing).
    Drop,
    /// 200, dropped, and the sender gets `reply_template` once per window.
    ReplyOnce,
}

/// Keyword routing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Words that always win, wherever the conversation is (menu, cancel, help).
    #[serde(default)]
    pub global: Vec<Route>,
    /// Keyword routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Flow for messages nothing else matches.
    pub fallback: String,
    /// How long a conversation waits for an answer before starting over, e.g. `24h`.
    #[serde(default = "default_session_ttl")]
    pub session_ttl: String,
    /// Messages older than this (replayed after an outage) are recorded but not answered.
    #[serde(default = "default_stale_after")]
    pub stale_after: String,
    /// The language of a contact nothing has told the engine about yet (`en`, `rw`, `fr`).
    #[serde(default = "default_language")]
    pub default_language: String,
}

fn default_language() -> String {
    "en".to_owned()
}

fn default_session_ttl() -> String {
    "24h".to_owned()
}

fn default_stale_after() -> String {
    "1h".to_owned()
}

/// Keywords that start a flow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Keywords; matched on normalized text (case, spacing, punctuation and accents ignored).
    /// A list, or lists by language (`{en: [jobs], rw: [akazi], fr: [emplois], any: [taxi]}`;
    /// `any` for words of every language): a conversation started with a keyword of a
    /// language is answered in it.
    pub keywords: Keywords,
    /// How a keyword matches the message.
    #[serde(default, rename = "match")]
    pub mode: MatchMode,
    /// Forgive typos: one edit in a keyword word of 5 to 8 letters, two from 9 (`exact` and
    /// `prefix` matching only).
    #[serde(default)]
    pub typos: bool,
    /// The flow started.
    pub flow: String,
}

/// A route's keywords: in no particular language, or by language.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Keywords {
    /// `[jobs, akazi]`: words that say nothing of the contact's language.
    Plain(Vec<String>),
    /// `{en: [jobs], rw: [akazi]}`.
    ByLanguage(std::collections::BTreeMap<String, Vec<String>>),
}

impl Keywords {
    /// Every keyword with the key it is listed under (a language, `any`, or none for a plain
    /// list) and its index there.
    pub fn each(&self) -> Vec<(Option<&str>, usize, &str)> {
        match self {
            Keywords::Plain(list) => list
                .iter()
                .enumerate()
                .map(|(i, k)| (None, i, k.as_str()))
                .collect(),
            Keywords::ByLanguage(map) => map
                .iter()
                .flat_map(|(lang, list)| {
                    list.iter()
                        .enumerate()
                        .map(move |(i, k)| (Some(lang.as_str()), i, k.as_str()))
                })
                .collect(),
        }
    }

    /// Whether there is none at all.
    pub fn is_empty(&self) -> bool {
        self.each().is_empty()
    }
}

/// SMS parsing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sms {
    /// Sender ids whose messages may credit (e.g. `M-Money`).
    pub senders: Vec<String>,
    /// Patterns, tried in order.
    pub patterns: Vec<SmsPattern>,
}

/// One SMS template.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsPattern {
    /// Name used in records and logs.
    pub name: String,
    /// What the SMS means.
    pub kind: SmsKind,
    /// Regex with named captures: amount, currency, counterparty, phone, txid, balance, fee, date.
    pub regex: String,
    /// Flow run with the parsed SMS as its single parameter.
    #[serde(default)]
    pub flow: Option<String>,
}

/// What an SMS means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsKind {
    /// Money received.
    Credit,
    /// Money sent or paid.
    Debit,
    /// A failed transaction.
    Failed,
    /// A reversal.
    Reversal,
    /// A refund received.
    Refund,
    /// OTPs, bundles, statements: recorded, never credited.
    NonPayment,
}

impl SmsKind {
    /// The name used in routes.yaml and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SmsKind::Credit => "credit",
            SmsKind::Debit => "debit",
            SmsKind::Failed => "failed",
            SmsKind::Reversal => "reversal",
            SmsKind::Refund => "refund",
            SmsKind::NonPayment => "non_payment",
        }
    }
}

/// A retired endpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// What callers are told.
    pub message: String,
    /// Where to go instead.
    pub migration: String,
}

/// Alerting.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "only the JSON Schema reads it whole: compile deserializes each section on its own"
)]
pub struct Alerts {
    /// Where alerts go, by name.
    #[serde(default)]
    pub channels: BTreeMap<String, Channel>,
    /// When alerts fire.
    #[serde(default)]
    pub rules: Vec<AlertRule>,
    /// How often the rules are evaluated (default `15s`).
    #[serde(default)]
    pub evaluation_interval: Option<String>,
    /// The sliding window rates and percentiles are taken over (default `5m`).
    #[serde(default)]
    pub window: Option<String>,
    /// How often a firing alert is sent again (default `4h`, as Alertmanager's).
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// Prefix that turns a rule's runbook path into a link, e.g.
    /// `https://github.com/easymo/engine/blob/main/`; without it the path is sent.
    #[serde(default)]
    pub runbook_base_url: Option<String>,
}

/// An alert destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The service.
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// Slack incoming-webhook URL; an environment reference.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// PagerDuty Events v2 routing key; an environment reference.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Alertmanager-style webhook receiver URL; an environment reference.
    #[serde(default)]
    pub url: Option<String>,
    /// PagerDuty Events API URL (default `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    pub events_url: Option<String>,
}

/// Alert services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// A webhook that receives the Alertmanager webhook JSON (version 4).
    Webhook,
}

/// An alert rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Name shown in the alert.
    pub name: String,
    /// Condition, e.g. `error_rate > 5% for 15m`.
    pub when: String,
    /// How urgent.
    pub severity: AlertSeverity,
    /// Channel names.
    pub notify: Vec<String>,
    /// The page on-call reads first, relative to routes.yaml, e.g.
    /// `docs/runbooks/error-rate-critical.md`; its link goes out with every notification.
    #[serde(default)]
    pub runbook: Option<String>,
}

/// Alert urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// Page someone.
    Critical,
    /// Look soon.
    Warning,
}
