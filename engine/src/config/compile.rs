//! Raw routes.yaml → validated [`Config`]: runs every check and collects every diagnostic.
//!
//! Owns: the order of loading (YAML → shapes → values → flows → cross-references →
//! reachability) and every check that spans more than one template. Each check pushes onto one
//! list and carries on, so a user sees all mistakes in one run; items that failed to load are
//! remembered so their absence does not cause a cascade of follow-on errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use easymo_dsl::check::{self, Context, SourceFlows, TemplateInfo};
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::parser::{parse_condition, parse_duration, parse_flow_file};
use easymo_dsl::{codes, Diagnostic, FileId, Sources, Span};
use ipnet::IpNet;
use serde_yaml::Value;

use super::env::{reference, EnvPolicy, Secret};
use super::raw::{self, EndpointKind, LimitKey, OnLimit, SmsKind};
use super::yaml::{deserialize_at, Path, YamlIndex};
use super::{
    templates, AlertRule, Auth, Channel, Config, Endpoint, FileSource, Flows, Momo, RateLimit,
    Server, SmsPattern, SmsRules,
};
use crate::router::{normalize, KeywordRoute, Router, Tier};

/// Captures an SMS pattern may name.
pub const SMS_CAPTURES: &[&str] = &[
    "amount",
    "currency",
    "counterparty",
    "phone",
    "txid",
    "balance",
    "fee",
    "date",
];

/// Paths the server answers itself (health, readiness, admin), which no endpoint may take.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/admin"];

/// Metrics alert rules can watch, with the units their thresholds take.
const METRICS: &[(&str, MetricUnit)] = &[
    ("error_rate", MetricUnit::Percent),
    ("p50_latency", MetricUnit::Time),
    ("p95_latency", MetricUnit::Time),
    ("p99_latency", MetricUnit::Time),
    ("dlq_size", MetricUnit::Count),
    ("outbox_pending", MetricUnit::Count),
    ("requests_per_minute", MetricUnit::Count),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum MetricUnit {
    Percent,
    Time,
    Count,
}

pub(super) struct Input<'a> {
    pub file: FileId,
    pub text: &'a str,
    pub base_dir: &'a FsPath,
    pub policy: &'a EnvPolicy,
    pub files: &'a dyn FileSource,
}

/// What the checks share.
struct Cx<'a> {
    file: FileId,
    index: YamlIndex,
    policy: &'a EnvPolicy,
    out: Vec<Diagnostic>,
}

impl Cx<'_> {
    /// An error on the key at `path` (for "this section is wrong here" problems).
    fn error_at_key(
        &mut self,
        code: codes::Code,
        message: impl Into<String>,
        path: &Path,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = self.index.key(path);
        self.push(Diagnostic::error(code, message).at(self.file, span, label))
    }

    /// An error on the value at `path`.
    fn error(
        &mut self,
        code: codes::Code,
        message: impl Into<String>,
        path: &Path,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = self.index.value(path);
        self.push(Diagnostic::error(code, message).at(self.file, span, label))
    }

    fn push(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.out.push(diagnostic);
        self.out.last_mut().expect("just pushed")
    }

    /// A `${NAME}` secret at `path`, resolved per the policy.
    fn secret(&mut self, value: &str, path: &Path, what: &str) -> Option<Secret> {
        let Some(var) = reference(value) else {
            if value.trim_start().starts_with("${") {
                self.error(
                    codes::LITERAL_SECRET,
                    format!("`{value}` is not a valid environment reference"),
                    path,
                    "",
                )
                .help = Some("write `${NAME}` with NAME in capitals, digits and `_`".to_owned());
                return None;
            }
            self.error(
                codes::LITERAL_SECRET,
                format!("{what} is written literally in routes.yaml"),
                path,
                "secret in plain text",
            )
            .help = Some(
                "put it in an environment variable and write `${NAME}`; rotate the exposed value"
                    .to_owned(),
            );
            return None;
        };
        let value = match self.policy {
            EnvPolicy::Unchecked => None,
            EnvPolicy::Resolve(env) => match env.get(var) {
                Some(v) => Some(v.to_owned()),
                None => {
                    self.error(
                        codes::UNSET_ENV,
                        format!("environment variable `{var}` is not set"),
                        path,
                        format!("{what} comes from here"),
                    )
                    .help = Some(format!("export {var}=... before starting the engine"));
                    return None;
                }
            },
        };
        Some(Secret {
            var: var.to_owned(),
            value,
        })
    }

    fn duration(&mut self, text: &str, path: &Path) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(
                    codes::INVALID_DURATION,
                    "duration must be longer than zero",
                    path,
                    "",
                );
                None
            }
            Err(e) => {
                let span = self.index.inside(path, e.span, text);
                self.out.push(
                    Diagnostic::error(
                        codes::INVALID_DURATION,
                        format!("invalid duration `{text}`: {e}"),
                    )
                    .at(self.file, span, "")
                    .help("write a number and a unit: `500ms`, `60s`, `5m`, `1h`, `1d`"),
                );
                None
            }
        }
    }

    fn net(&mut self, text: &str, path: &Path) -> Option<IpNet> {
        let Some(net) = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        else {
            self.error(
                codes::INVALID_CIDR,
                format!("`{text}` is not a CIDR or IP address"),
                path,
                "",
            )
            .help = Some(
                "write an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`, `2001:db8::/32`)"
                    .to_owned(),
            );
            return None;
        };
        if net.trunc() != net {
            self.error(
                codes::INVALID_CIDR,
                format!("`{text}` has host bits set"),
                path,
                "not a network address",
            )
            .help = Some(format!("did you mean `{}`?", net.trunc()));
            return None;
        }
        Some(net)
    }

    /// A list of networks; one covering every address defeats its purpose.
    fn nets(&mut self, list: &[String], path: &Path, why: &str) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let Some(net) = self.net(text, &path.index(i)) else {
                continue;
            };
            if net.prefix_len() == 0 {
                self.error(
                    codes::ALLOWS_EVERYONE,
                    format!("`{text}` covers every address"),
                    &path.index(i),
                    why.to_owned(),
                )
                .help = Some("list the real addresses or networks".to_owned());
                continue;
            }
            nets.push(net);
        }
        nets
    }
}

pub(super) fn compile(
    input: Input<'_>,
    sources: &mut Sources,
) -> (Option<Config>, Vec<Diagnostic>) {
    let file = input.file;
    let value: Value = match serde_yaml::from_str(input.text) {
        Ok(v) => v,
        Err(e) => return (None, vec![yaml_syntax_error(&e, file, input.text, sources)]),
    };
    let mut cx = Cx {
        file,
        index: YamlIndex::build(input.text),
        policy: input.policy,
        out: Vec::new(),
    };
    let root = Path::root();
    let Value::Mapping(mut top) = value else {
        cx.out.push(
            Diagnostic::error(
                codes::INVALID_VALUE,
                "routes.yaml must be a mapping with `version`, `server`, `flows`, ...",
            )
            .at(file, Span::new(0, input.text.len().min(1)), ""),
        );
        return (None, cx.out);
    };

    // Top level: every unknown key at once, then each section on its own.
    let mut misspelt_sections: BTreeSet<&str> = BTreeSet::new();
    // Keys come from serde's view of the document (complete even where the position index
    // gave up); the index only supplies where they are.
    let unknown: Vec<String> = top
        .keys()
        .map(|k| match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
        .filter(|k| !raw::TOP_LEVEL_KEYS.contains(&k.as_str()))
        .collect();
    for key in unknown {
        misspelt_sections.extend(
            raw::TOP_LEVEL_KEYS
                .iter()
                .copied()
                .filter(|k| !top.contains_key(*k) && did_you_mean(&key, [*k]).is_some()),
        );
        let span = cx.index.key(&root.key(&key));
        cx.out.push(
            Diagnostic::error(codes::UNKNOWN_FIELD, format!("unknown field `{key}`"))
                .at(file, span, "not a known top-level section")
                .maybe_help(did_you_mean(&key, raw::TOP_LEVEL_KEYS.iter().copied())),
        );
    }
    let mut take = |key: &str| top.remove(key);
    let version: Option<u32> = section(&mut cx, take("version"), "version", true);
    if let Some(v) = version.filter(|v| *v != 1) {
        cx.error(
            codes::INVALID_VALUE,
            format!("unsupported version {v}"),
            &root.key("version"),
            "this engine reads version 1",
        );
    }
    let server: Option<raw::Server> = section(&mut cx, take("server"), "server", true);
    let flow_paths: Option<Vec<String>> = section(&mut cx, take("flows"), "flows", true);
    let errors_before = cx.out.len();
    let endpoints: Vec<(usize, raw::Endpoint)> =
        items(&mut cx, take("endpoints"), &root.key("endpoints"));
    let incomplete_endpoints = cx.out.len() > errors_before;
    let errors_before = cx.out.len();
    let templates_value = take("templates");
    let templates_missing = templates_value.is_none();
    let (templates, broken_templates) = templates_section(&mut cx, templates_value);
    let incomplete_templates = (templates_missing && misspelt_sections.contains("templates"))
        || (templates.is_empty() && broken_templates.is_empty() && cx.out.len() > errors_before);
    let alerts = alerts_section(&mut cx, take("alerts"));
    let momo: Option<raw::Momo> = section(&mut cx, take("momo"), "momo", false);

    // Values.
    let server = server.and_then(|s| compile_server(&mut cx, &s));
    let momo = momo.and_then(|m| compile_momo(&mut cx, &m));
    let template_infos = check_templates(&mut cx, &templates, &broken_templates);
    let (flows, incomplete_flows) = load_flows(
        &mut cx,
        input,
        flow_paths.as_deref().unwrap_or_default(),
        sources,
    );
    let incomplete_flows = incomplete_flows || flow_paths.is_none();
    let context = Context {
        templates: template_infos,
        incomplete_templates,
        incomplete_flows,
    };
    let (flow_index, flow_diagnostics) = check::check(&flows, &context);
    cx.out.extend(flow_diagnostics);
    let flows = Flows::new(
        flows
            .into_iter()
            .map(|s| (sources.name(s.file).to_owned(), s.ast))
            .collect(),
        flow_index,
    );
    let endpoints = compile_endpoints(&mut cx, &endpoints, &flows, incomplete_flows, &context);
    check_runtime_templates(&mut cx, &endpoints, &context);
    let (channels, alerts) = compile_alerts(&mut cx, alerts);
    // A flow file or endpoint that failed to load hides references: do not guess.
    if !incomplete_flows && !incomplete_endpoints {
        check_reachability(&mut cx, &endpoints, &flows);
    }

    let config = match (server, version) {
        (Some(server), Some(_)) => Some(Config {
            server,
            endpoints,
            templates,
            flows,
            channels,
            alerts,
            momo,
            query_cache: Default::default(),
            render_cache: Default::default(),
        }),
        _ => None,
    };
    (config, cx.out)
}

fn yaml_syntax_error(
    error: &serde_yaml::Error,
    file: FileId,
    text: &str,
    sources: &Sources,
) -> Diagnostic {
    // serde_yaml points a duplicate key at its mapping; the index finds the key itself.
    if error.to_string().contains("duplicate entry") {
        if let Some(dup) = YamlIndex::build(text).duplicates().first() {
            return Diagnostic::error(
                codes::YAML_SYNTAX,
                format!(
                    "invalid YAML: key `{}` appears twice in one mapping",
                    dup.key
                ),
            )
            .at(file, dup.again, "written again here")
            .also(file, dup.first, "first written here")
            .help("YAML keeps only one of them; delete or merge the other");
        }
    }
    let (line, col) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let help = if line_text.contains("${") && (line_text.contains('[') || line_text.contains('{')) {
        "inside `[ ]` or `{ }`, quote environment references: \"${NAME}\""
    } else {
        "check indentation and quoting; values containing `: ` or starting with `{`, `[` or `*` need quotes"
    };
    let at = sources.offset_of(file, line, col);
    let message = error.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    Diagnostic::error(codes::YAML_SYNTAX, format!("invalid YAML: {message}"))
        .at(file, Span::new(at, (at + 1).min(text.len())), "")
        .help(help)
}

/// Deserializes one top-level section; reports it missing when required.
fn section<T: serde::de::DeserializeOwned>(
    cx: &mut Cx<'_>,
    value: Option<Value>,
    key: &str,
    required: bool,
) -> Option<T> {
    let path = Path::root().key(key);
    match value {
        None => {
            if required {
                cx.out.push(
                    Diagnostic::error(
                        codes::MISSING_FIELD,
                        format!("missing top-level field `{key}`"),
                    )
                    .at(cx.file, Span::new(0, 0), "")
                    .help(format!(
                        "add `{key}:`; see README.md for the routes.yaml reference"
                    )),
                );
            }
            None
        }
        Some(value) => match deserialize_at(value, &path, &cx.index, cx.file) {
            Ok(v) => Some(v),
            Err(d) => {
                cx.out.push(d);
                None
            }
        },
    }
}

/// Deserializes each item of a sequence on its own, keeping the good ones with their index.
fn items<T: serde::de::DeserializeOwned>(
    cx: &mut Cx<'_>,
    value: Option<Value>,
    path: &Path,
) -> Vec<(usize, T)> {
    let seq = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Sequence(seq)) => seq,
        Some(_) => {
            cx.error(
                codes::INVALID_VALUE,
                format!("`{path}` must be a list"),
                path,
                "expected a list of items starting with `- `",
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in seq.into_iter().enumerate() {
        match deserialize_at(item, &path.index(i), &cx.index, cx.file) {
            Ok(v) => out.push((i, v)),
            Err(d) => cx.out.push(d),
        }
    }
    out
}

fn templates_section(
    cx: &mut Cx<'_>,
    value: Option<Value>,
) -> (BTreeMap<String, raw::Template>, BTreeSet<String>) {
    let path = Path::root().key("templates");
    let mut good = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let map = match value {
        None | Some(Value::Null) => return (good, broken),
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            cx.error(
                codes::INVALID_VALUE,
                "`templates` must map template names to templates",
                &path,
                "",
            );
            return (good, broken);
        }
    };
    for (key, item) in map {
        let Some(name) = key.as_str().map(str::to_owned) else {
            continue;
        };
        let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            cx.out.push(
                Diagnostic::error(codes::INVALID_VALUE, format!("template name `{name}` cannot be used in a flow"))
                    .at(cx.file, cx.index.key(&path.key(&name)), "")
                    .help("template names are letters, digits and `_`, starting with a letter, e.g. `job_list`"),
            );
        }
        match deserialize_at::<raw::Template>(item, &path.key(&name), &cx.index, cx.file) {
            Ok(t) => {
                good.insert(name, t);
            }
            Err(d) => {
                cx.out.push(d);
                broken.insert(name);
            }
        }
    }
    (good, broken)
}

struct RawAlerts {
    channels: Vec<(String, raw::Channel)>,
    broken_channels: BTreeSet<String>,
    rules: Vec<(usize, raw::AlertRule)>,
}

fn alerts_section(cx: &mut Cx<'_>, value: Option<Value>) -> RawAlerts {
    let path = Path::root().key("alerts");
    let mut alerts = RawAlerts {
        channels: Vec::new(),
        broken_channels: BTreeSet::new(),
        rules: Vec::new(),
    };
    let mut map = match value {
        None | Some(Value::Null) => return alerts,
        Some(Value::Mapping(map)) => map,
        Some(_) => {
            cx.error(
                codes::INVALID_VALUE,
                "`alerts` must have `channels` and `rules`",
                &path,
                "",
            );
            return alerts;
        }
    };
    let keys: Vec<String> = map
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for key in keys {
        if key != "channels" && key != "rules" {
            let span = cx.index.key(&path.key(&key));
            cx.out.push(
                Diagnostic::error(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field `{key}` in `alerts`"),
                )
                .at(cx.file, span, "")
                .maybe_help(did_you_mean(&key, ["channels", "rules"])),
            );
        }
    }
    if let Some(Value::Mapping(channels)) = map.remove("channels") {
        for (key, item) in channels {
            let Some(name) = key.as_str().map(str::to_owned) else {
                continue;
            };
            match deserialize_at::<raw::Channel>(
                item,
                &path.key("channels").key(&name),
                &cx.index,
                cx.file,
            ) {
                Ok(c) => alerts.channels.push((name, c)),
                Err(d) => {
                    cx.out.push(d);
                    alerts.broken_channels.insert(name);
                }
            }
        }
    }
    alerts.rules = items(cx, map.remove("rules"), &path.key("rules"));
    alerts
}

fn compile_server(cx: &mut Cx<'_>, server: &raw::Server) -> Option<Server> {
    let path = Path::root().key("server");
    let listen = match server.listen.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            cx.error(
                codes::INVALID_VALUE,
                format!("`{}` is not a listen address", server.listen),
                &path.key("listen"),
                "",
            )
            .help = Some("write host and port, e.g. `0.0.0.0:8080` or `[::]:8080`".to_owned());
            None
        }
    };
    let trusted_proxies = cx.nets(
        &server.trusted_proxies,
        &path.key("trusted_proxies"),
        "anyone could forge X-Forwarded-For",
    );
    if server.max_body_bytes == 0 {
        cx.error(
            codes::INVALID_VALUE,
            "`max_body_bytes` must be greater than zero",
            &path.key("max_body_bytes"),
            "",
        );
    }
    let database_url = server
        .database_url
        .as_ref()
        .and_then(|v| cx.secret(v, &path.key("database_url"), "the database URL"));
    let admin_token = server
        .admin_token
        .as_ref()
        .and_then(|v| cx.secret(v, &path.key("admin_token"), "the admin token"));
    Some(Server {
        listen: listen?,
        trusted_proxies,
        max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
        database_url,
        admin_token,
    })
}

fn compile_momo(cx: &mut Cx<'_>, momo: &raw::Momo) -> Option<Momo> {
    let path = Path::root().key("momo");
    let base_url = momo.base_url.trim_end_matches('/').to_owned();
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        cx.error(
            codes::INVALID_VALUE,
            format!("`{}` is not an http(s) URL", momo.base_url),
            &path.key("base_url"),
            "",
        )
        .help = Some("e.g. `https://proxy.momoapi.mtn.co.rw`".to_owned());
    }
    let subscription_key = cx.secret(
        &momo.subscription_key,
        &path.key("subscription_key"),
        "the MoMo subscription key",
    );
    let api_user = cx.secret(&momo.api_user, &path.key("api_user"), "the MoMo API user");
    let api_key = cx.secret(&momo.api_key, &path.key("api_key"), "the MoMo API key");
    let timeout = cx.duration(&momo.timeout, &path.key("timeout"));
    let poll_after = cx.duration(&momo.poll_after, &path.key("poll_after"));
    Some(Momo {
        base_url,
        target_environment: momo.target_environment.clone(),
        subscription_key: subscription_key?,
        api_user: api_user?,
        api_key: api_key?,
        timeout: timeout?,
        poll_after: poll_after?,
        currency: momo.currency.clone(),
        callback_url: momo.callback_url.clone(),
    })
}

fn check_templates(
    cx: &mut Cx<'_>,
    templates: &BTreeMap<String, raw::Template>,
    broken: &BTreeSet<String>,
) -> BTreeMap<String, TemplateInfo> {
    let mut infos = BTreeMap::new();
    for (name, template) in templates {
        infos.insert(
            name.clone(),
            templates::check(name, template, &cx.index, cx.file, &mut cx.out),
        );
    }
    for name in broken {
        infos.insert(
            name.clone(),
            TemplateInfo {
                variables: BTreeSet::new(),
                opaque: true,
            },
        );
    }
    infos
}

/// Reads and parses every listed flow file. Returns the parsed files and whether any failed.
fn load_flows(
    cx: &mut Cx<'_>,
    input: Input<'_>,
    paths: &[String],
    sources: &mut Sources,
) -> (Vec<SourceFlows>, bool) {
    let list = Path::root().key("flows");
    let mut parsed = Vec::new();
    let mut failed = false;
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, relative) in paths.iter().enumerate() {
        let full = input.base_dir.join(relative);
        if !listed.insert(normalize_path(&full)) {
            cx.error(
                codes::INVALID_VALUE,
                format!("flow file `{relative}` is listed twice"),
                &list.index(i),
                "listed again here",
            );
            continue;
        }
        match input.files.read(&full) {
            Err(e) => {
                failed = true;
                cx.error(
                    codes::IO,
                    format!("cannot read flow file `{relative}`: {e}"),
                    &list.index(i),
                    "listed here",
                )
                .help = Some("paths are relative to routes.yaml".to_owned());
            }
            Ok(text) => {
                // Windows editors may start the file with a byte-order mark.
                let text = text
                    .strip_prefix('\u{feff}')
                    .map(str::to_owned)
                    .unwrap_or(text);
                // Shown as the path from where the engine runs, so editors and CI annotations
                // can open it.
                let shown = normalize_path(&full).display().to_string();
                let file = sources.add(shown, text.clone());
                match parse_flow_file(&text, file) {
                    Ok(ast) => parsed.push(SourceFlows { file, ast }),
                    Err(d) => {
                        failed = true;
                        cx.out.push(d);
                    }
                }
            }
        }
    }
    let dirs: BTreeSet<PathBuf> = listed
        .iter()
        .filter_map(|p| p.parent().map(FsPath::to_owned))
        .collect();
    for dir in dirs {
        for candidate in input.files.flow_files_in(&dir) {
            if !listed.contains(&normalize_path(&candidate)) {
                let shown = candidate
                    .strip_prefix(input.base_dir)
                    .unwrap_or(&candidate)
                    .display()
                    .to_string();
                cx.out.push(
                    Diagnostic::warning(
                        codes::UNLISTED_FLOW_FILE,
                        format!("flow file `{shown}` is not listed in `flows`"),
                    )
                    .at(cx.file, cx.index.key(&list), "only listed files are loaded")
                    .help(format!("add `- {shown}` to `flows`, or delete the file")),
                );
            }
        }
    }
    (parsed, failed)
}

/// Resolves `.` and `..` lexically, so `cases/x/../base/a.flow` shows as `cases/base/a.flow`.
fn normalize_path(path: &FsPath) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.iter().collect()
}

fn compile_endpoints(
    cx: &mut Cx<'_>,
    endpoints: &[(usize, raw::Endpoint)],
    flows: &Flows,
    incomplete_flows: bool,
    context: &Context,
) -> Vec<Endpoint> {
    let list = Path::root().key("endpoints");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut paths: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in endpoints {
        let at = list.index(*i);
        if let Some(first) = names.insert(&raw.name, *i) {
            let first_span = cx.index.value(&list.index(first).key("name"));
            let file = cx.file;
            let d = cx.error(
                codes::DUPLICATE_ENDPOINT_NAME,
                format!("endpoint name `{}` is used twice", raw.name),
                &at.key("name"),
                "used again here",
            );
            *d = d.clone().also(file, first_span, "first used here");
        }
        if !raw.path.starts_with('/')
            || raw.path.contains(char::is_whitespace)
            || raw.path.contains(['?', '#'])
        {
            cx.error(codes::INVALID_PATH, format!("`{}` is not a URL path", raw.path), &at.key("path"), "")
                .help = Some("paths start with `/` and have no spaces, query or fragment, e.g. `/webhooks/whatsapp`".to_owned());
        } else if RESERVED_PATHS
            .iter()
            .any(|r| raw.path == *r || raw.path.starts_with(&format!("{r}/")))
        {
            cx.error(
                codes::INVALID_PATH,
                format!("`{}` is one of the engine's own routes", raw.path),
                &at.key("path"),
                "",
            )
            .help = Some(format!(
                "choose another path; reserved: {}",
                RESERVED_PATHS.join(", ")
            ));
        } else if let Some(first) = paths.insert(&raw.path, *i) {
            let first_span = cx.index.value(&list.index(first).key("path"));
            let file = cx.file;
            let d = cx.error(
                codes::DUPLICATE_ENDPOINT_PATH,
                format!("path `{}` is used by two endpoints", raw.path),
                &at.key("path"),
                "used again here",
            );
            *d = d.clone().also(file, first_span, "first used here");
        }
        if let Some(endpoint) = compile_endpoint(cx, raw, &at, flows, incomplete_flows, context) {
            out.push(endpoint);
        }
    }
    out
}

fn compile_endpoint(
    cx: &mut Cx<'_>,
    raw: &raw::Endpoint,
    at: &Path,
    flows: &Flows,
    incomplete_flows: bool,
    context: &Context,
) -> Option<Endpoint> {
    let kind = raw.kind;
    let only_for = |cx: &mut Cx<'_>, present: bool, field: &str, allowed: EndpointKind| {
        if present && kind != allowed {
            cx.error_at_key(
                codes::KIND_MISMATCH,
                format!("`{field}` only applies to {} endpoints", allowed.as_str()),
                &at.key(field),
                format!("this endpoint is `{}`", kind.as_str()),
            );
        }
    };
    only_for(
        cx,
        raw.verify_token.is_some(),
        "verify_token",
        EndpointKind::Whatsapp,
    );
    only_for(cx, raw.routing.is_some(), "routing", EndpointKind::Whatsapp);
    only_for(cx, raw.sms.is_some(), "sms", EndpointKind::Sms);
    let active = raw.deprecated.is_none();
    if active && kind == EndpointKind::Whatsapp {
        if raw.verify_token.is_none() {
            cx.out.push(
                Diagnostic::error(
                    codes::MISSING_FIELD,
                    format!("WhatsApp endpoint `{}` has no `verify_token`", raw.name),
                )
                .at(cx.file, cx.index.key(at), "")
                .help(
                    "Meta's GET handshake needs it: add `verify_token: ${WHATSAPP_VERIFY_TOKEN}`",
                ),
            );
        }
        if raw.routing.is_none() {
            cx.out.push(
                Diagnostic::error(
                    codes::MISSING_FIELD,
                    format!("WhatsApp endpoint `{}` has no `routing`", raw.name),
                )
                .at(cx.file, cx.index.key(at), "")
                .help("add `routing:` with at least a `fallback` flow"),
            );
        }
    }
    if active && kind == EndpointKind::Sms && raw.sms.is_none() {
        cx.error(
            codes::MISSING_FIELD,
            format!("SMS endpoint `{}` has no `sms` patterns", raw.name),
            at,
            "",
        );
    }
    if active && matches!(raw.auth, raw::Auth::None) {
        let span = cx.index.value(&at.key("auth"));
        let d = if kind == EndpointKind::Whatsapp {
            Diagnostic::error(codes::UNAUTHENTICATED, format!("WhatsApp endpoint `{}` checks no signature", raw.name))
                .at(cx.file, span, "anyone could post forged messages")
                .help("Meta signs every delivery: use `auth: {hmac: {header: X-Hub-Signature-256, prefix: \"sha256=\", secrets: [...]}}`")
        } else if kind == EndpointKind::Sms {
            // The trusted-sender check reads a field of the posted body: without auth, anyone
            // could post `"sender": "M-Money"` and be credited.
            Diagnostic::error(codes::UNAUTHENTICATED, format!("SMS endpoint `{}` accepts texts from anyone", raw.name))
                .at(cx.file, span, "anyone could post a forged M-Money text and be credited")
                .help("add an `ip_allowlist` of the SMS gateway's addresses, or a signature if it can sign")
        } else {
            Diagnostic::warning(codes::OPEN_ENDPOINT, format!("endpoint `{}` accepts requests from anyone", raw.name))
                .at(cx.file, span, "no signature or address check")
                .help("add an `ip_allowlist` of the sender's addresses, or a signature if the sender can sign")
        };
        cx.out.push(d);
    }
    let verify_token = raw
        .verify_token
        .as_ref()
        .and_then(|v| cx.secret(v, &at.key("verify_token"), "the verify token"));
    let auth = compile_auth(cx, &raw.auth, &at.key("auth"));
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .and_then(|r| compile_rate_limit(cx, r, &at.key("rate_limit"), kind, context));
    let router = raw
        .routing
        .as_ref()
        .map(|r| compile_routing(cx, r, &at.key("routing"), flows, incomplete_flows));
    let sms = raw
        .sms
        .as_ref()
        .map(|s| compile_sms(cx, s, &at.key("sms"), flows, incomplete_flows));
    Some(Endpoint {
        name: raw.name.clone(),
        path: raw.path.clone(),
        kind,
        auth: auth?,
        verify_token,
        rate_limit,
        router,
        sms,
        deprecated: raw.deprecated.clone(),
    })
}

fn compile_auth(cx: &mut Cx<'_>, auth: &raw::Auth, at: &Path) -> Option<Auth> {
    let secrets = |cx: &mut Cx<'_>, list: &[String], path: &Path| -> Vec<Secret> {
        if list.is_empty() {
            cx.error_at_key(
                codes::MISSING_SECRET,
                "a signed endpoint needs at least one secret",
                path,
                "no secret configured",
            )
            .help =
                Some("add `secrets:` with one `- ${NAME}` entry per accepted secret".to_owned());
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| cx.secret(s, &path.key("secrets").index(i), "a signing secret"))
            .collect()
    };
    Some(match auth {
        raw::Auth::None => Auth::None,
        raw::Auth::Hmac(h) => {
            let path = at.key("hmac");
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if h.header.is_empty() || !h.header.chars().all(token) {
                cx.error(
                    codes::INVALID_VALUE,
                    format!("`{}` is not an HTTP header name", h.header),
                    &path.key("header"),
                    "",
                )
                .help = Some(
                    "header names are letters, digits and `-`, e.g. `X-Hub-Signature-256`"
                        .to_owned(),
                );
            }
            let secrets = secrets(cx, &h.secrets, &path);
            Auth::Hmac {
                header: h.header.clone(),
                prefix: h.prefix.clone(),
                encoding: h.encoding,
                secrets,
            }
        }
        raw::Auth::StandardWebhooks(s) => {
            let path = at.key("standard_webhooks");
            let secrets = secrets(cx, &s.secrets, &path);
            let tolerance = cx.duration(&s.tolerance, &path.key("tolerance"))?;
            Auth::StandardWebhooks { secrets, tolerance }
        }
        raw::Auth::IpAllowlist(list) => {
            let path = at.key("ip_allowlist").key("cidrs");
            if list.cidrs.is_empty() {
                cx.error(
                    codes::INVALID_VALUE,
                    "an IP allowlist with no entries refuses every request",
                    &path,
                    "",
                );
            }
            Auth::IpAllowlist(cx.nets(
                &list.cidrs,
                &path,
                "an allowlist that allows everyone checks nothing",
            ))
        }
    })
}

fn compile_rate_limit(
    cx: &mut Cx<'_>,
    raw: &raw::RateLimit,
    at: &Path,
    kind: EndpointKind,
    context: &Context,
) -> Option<RateLimit> {
    let requests = NonZeroU32::new(raw.requests);
    if requests.is_none() {
        cx.error(
            codes::INVALID_RATE_LIMIT,
            "a rate limit of 0 requests refuses everything",
            &at.key("requests"),
            "",
        )
        .help =
            Some("remove `rate_limit` to disable limiting, or allow at least 1 request".to_owned());
    }
    let per = cx.duration(&raw.per, &at.key("per"));
    if raw.key == LimitKey::Sender && kind != EndpointKind::Whatsapp {
        cx.error(
            codes::KIND_MISMATCH,
            "`key: sender` only applies to WhatsApp endpoints",
            &at.key("key"),
            "",
        );
    }
    match (raw.on_limit, &raw.reply_template) {
        (OnLimit::ReplyOnce, None) => {
            cx.error(
                codes::MISSING_FIELD,
                "`on_limit: reply_once` needs a `reply_template`",
                &at.key("on_limit"),
                "",
            );
        }
        (OnLimit::ReplyOnce, Some(t))
            if !context.templates.contains_key(t) && !context.incomplete_templates =>
        {
            cx.error(
                codes::UNKNOWN_TEMPLATE,
                format!("unknown template `{t}`"),
                &at.key("reply_template"),
                "",
            )
            .help = did_you_mean(t, context.templates.keys().map(String::as_str));
        }
        (OnLimit::ReplyOnce, Some(_)) if kind != EndpointKind::Whatsapp => {
            cx.error(
                codes::KIND_MISMATCH,
                "`on_limit: reply_once` only applies to WhatsApp endpoints",
                &at.key("on_limit"),
                "",
            );
        }
        (OnLimit::ReplyOnce, Some(t)) => {
            // Nothing binds variables for a rate-limit reply: only implicit ones may be used.
            if let Some(variable) = context
                .templates
                .get(t)
                .and_then(|i| i.variables.iter().next())
            {
                cx.error(
                    codes::UNBOUND_TEMPLATE_VAR,
                    format!("template `{t}` reads `{variable}`, which nothing binds for a rate-limit reply"),
                    &at.key("reply_template"),
                    "",
                )
                .help = Some("use a template that reads only `contact`, `session` or `message`".to_owned());
            }
        }
        (OnLimit::Reject | OnLimit::Drop, Some(_)) => {
            cx.error(
                codes::INVALID_VALUE,
                "`reply_template` is only used with `on_limit: reply_once`",
                &at.key("reply_template"),
                "",
            );
        }
        _ => {}
    }
    Some(RateLimit {
        requests: requests?,
        per: per?,
        key: raw.key,
        on_limit: raw.on_limit,
        reply_template: raw.reply_template.clone(),
    })
}

fn check_route_target(
    cx: &mut Cx<'_>,
    flow: &str,
    path: &Path,
    flows: &Flows,
    incomplete_flows: bool,
) {
    match flows.index.get(flow) {
        None if !incomplete_flows => {
            cx.error(
                codes::UNKNOWN_FLOW,
                format!("unknown flow `{flow}`"),
                path,
                "no flow file defines it",
            )
            .help = did_you_mean(flow, flows.index.keys().map(String::as_str));
        }
        Some(entry) if entry.arity > 0 => {
            let span = cx.index.value(path);
            cx.out.push(
                Diagnostic::error(
                    codes::ROUTE_TARGET_PARAMS,
                    format!("flow `{flow}` takes parameters, so a route cannot start it"),
                )
                .at(cx.file, span, "routes start flows with no values")
                .also(entry.file, entry.name_span, "declared with parameters here")
                .help("route to a flow without parameters that then calls this one"),
            );
        }
        _ => {}
    }
}

fn compile_routing(
    cx: &mut Cx<'_>,
    raw: &raw::Routing,
    at: &Path,
    flows: &Flows,
    incomplete_flows: bool,
) -> Router {
    let mut keywords: Vec<(KeywordRoute, Path)> = Vec::new();
    for (tier, list, key) in [
        (Tier::Global, &raw.global, "global"),
        (Tier::Keyword, &raw.routes, "routes"),
    ] {
        for (r, route) in list.iter().enumerate() {
            let rp = at.key(key).index(r);
            check_route_target(cx, &route.flow, &rp.key("flow"), flows, incomplete_flows);
            if route.keywords.is_empty() {
                cx.error(
                    codes::EMPTY_KEYWORD,
                    "a route needs at least one keyword",
                    &rp.key("keywords"),
                    "",
                );
            }
            for (k, keyword) in route.keywords.iter().enumerate() {
                let kp = rp.key("keywords").index(k);
                let normalized = normalize(keyword);
                if normalized.is_empty() {
                    cx.error(
                        codes::EMPTY_KEYWORD,
                        format!(
                            "keyword \"{keyword}\" has no letters or digits, so it matches nothing"
                        ),
                        &kp,
                        "",
                    )
                    .help =
                        Some("matching ignores case, punctuation, emoji and accents".to_owned());
                    continue;
                }
                let candidate = KeywordRoute {
                    tier,
                    route: r,
                    keyword_index: k,
                    keyword: keyword.clone(),
                    normalized,
                    mode: route.mode,
                    flow: route.flow.clone(),
                };
                check_shadowing(cx, &keywords, &candidate, &kp);
                keywords.push((candidate, kp));
            }
        }
    }
    check_route_target(
        cx,
        &raw.fallback,
        &at.key("fallback"),
        flows,
        incomplete_flows,
    );
    let session_ttl = cx
        .duration(&raw.session_ttl, &at.key("session_ttl"))
        .unwrap_or(std::time::Duration::from_secs(86_400));
    let stale_after = cx
        .duration(&raw.stale_after, &at.key("stale_after"))
        .unwrap_or(std::time::Duration::from_secs(3600));
    Router {
        keywords: keywords.into_iter().map(|(k, _)| k).collect(),
        fallback: raw.fallback.clone(),
        session_ttl,
        stale_after,
    }
}

fn check_shadowing(
    cx: &mut Cx<'_>,
    earlier: &[(KeywordRoute, Path)],
    candidate: &KeywordRoute,
    at: &Path,
) {
    if let Some((first, first_path)) = earlier
        .iter()
        .find(|(e, _)| e.normalized == candidate.normalized)
    {
        let span = cx.index.value(at);
        let first_span = cx.index.value(first_path);
        let help = if first.flow == candidate.flow {
            "remove the repeated keyword".to_owned()
        } else {
            format!(
                "it already goes to `{}`; keep one route per keyword",
                first.flow
            )
        };
        cx.out.push(
            Diagnostic::error(
                codes::DUPLICATE_KEYWORD,
                format!("keyword \"{}\" is routed twice", candidate.keyword),
            )
            .at(cx.file, span, "routed again here")
            .also(cx.file, first_span, "first routed here")
            .note(format!(
                "keywords are compared after normalization: \"{}\"",
                candidate.normalized
            ))
            .help(help),
        );
        return;
    }
    if let Some((winner, winner_path)) = earlier.iter().find(|(e, _)| e.covers(candidate)) {
        let span = cx.index.value(at);
        let winner_span = cx.index.value(winner_path);
        if winner.tier == candidate.tier && winner.route == candidate.route {
            let span = cx.index.value(at);
            let winner_span = cx.index.value(winner_path);
            cx.out.push(
                Diagnostic::error(
                    codes::SHADOWED_ROUTE,
                    format!("keyword \"{}\" is redundant", candidate.keyword),
                )
                .at(
                    cx.file,
                    span,
                    format!(
                        "\"{}\" already matches everything this does",
                        winner.keyword
                    ),
                )
                .also(cx.file, winner_span, "")
                .help("remove it"),
            );
            return;
        }
        let why = match winner.tier {
            Tier::Global => "global words always win".to_owned(),
            Tier::Keyword => format!(
                "an earlier `{:?}` route matches every message this one would",
                winner.mode
            )
            .to_lowercase(),
        };
        cx.out.push(
            Diagnostic::error(codes::SHADOWED_ROUTE, format!("route for \"{}\" can never match", candidate.keyword))
                .at(cx.file, span, format!("unreachable: \"{}\" wins first", winner.keyword))
                .also(cx.file, winner_span, format!("this route to `{}` matches first", winner.flow))
                .note(why)
                .help("move the more specific route above the broader one, or narrow the broader route's match mode"),
        );
    }
}

fn compile_sms(
    cx: &mut Cx<'_>,
    raw: &raw::Sms,
    at: &Path,
    flows: &Flows,
    incomplete_flows: bool,
) -> SmsRules {
    if raw.senders.is_empty() {
        cx.error(
            codes::INVALID_VALUE,
            "no SMS sender may credit: list the sender ids, e.g. `M-Money`",
            &at.key("senders"),
            "",
        );
    }
    let mut patterns = Vec::new();
    for (i, pattern) in raw.patterns.iter().enumerate() {
        let pp = at.key("patterns").index(i);
        let regex = match regex::Regex::new(&pattern.regex) {
            Ok(r) => r,
            Err(e) => {
                let detail = e.to_string();
                let last = detail
                    .lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .to_owned();
                cx.error(codes::SMS_REGEX, format!("SMS pattern `{}` does not compile", pattern.name), &pp.key("regex"), last)
                    .help = Some("named captures are written `(?P<amount>...)`; in YAML single quotes, backslashes need no escaping".to_owned());
                continue;
            }
        };
        let captures: BTreeSet<&str> = regex.capture_names().flatten().collect();
        for name in &captures {
            if !SMS_CAPTURES.contains(name) {
                cx.error(
                    codes::SMS_UNKNOWN_CAPTURE,
                    format!(
                        "SMS pattern `{}` captures `{name}`, which the engine does not know",
                        pattern.name
                    ),
                    &pp.key("regex"),
                    "",
                )
                .help = did_you_mean(name, SMS_CAPTURES.iter().copied())
                    .or_else(|| Some(format!("known captures: {}", SMS_CAPTURES.join(", "))));
            }
        }
        let required: &[&str] = match pattern.kind {
            // Only credits move money into our books, and only a transaction id makes a credit
            // idempotent. MTN's debit, refund and reversal texts often carry no id at all.
            SmsKind::Credit => &["amount", "txid"],
            SmsKind::Debit | SmsKind::Refund | SmsKind::Reversal | SmsKind::Failed => &["amount"],
            SmsKind::NonPayment => &[],
        };
        for need in required {
            if !captures.contains(need) {
                cx.error(
                    codes::SMS_MISSING_CAPTURE,
                    format!(
                        "SMS pattern `{}` of kind `{:?}` must capture `{need}`",
                        pattern.name, pattern.kind
                    )
                    .to_lowercase(),
                    &pp.key("regex"),
                    format!("no `(?P<{need}>...)` group"),
                )
                .help = Some(format!(
                    "a payment SMS without a parsed {need} can never be recorded safely"
                ));
            }
        }
        if let Some(flow_name) = &pattern.flow {
            check_sms_flow(
                cx,
                flow_name,
                &pp.key("flow"),
                &captures,
                flows,
                incomplete_flows,
            );
        }
        patterns.push(SmsPattern {
            name: pattern.name.clone(),
            kind: pattern.kind,
            regex,
            flow: pattern.flow.clone(),
        });
    }
    SmsRules {
        senders: raw.senders.clone(),
        patterns,
    }
}

fn check_sms_flow(
    cx: &mut Cx<'_>,
    flow_name: &str,
    at: &Path,
    captures: &BTreeSet<&str>,
    flows: &Flows,
    incomplete_flows: bool,
) {
    let (Some(entry), Some(flow)) = (flows.index.get(flow_name), flows.get(flow_name)) else {
        if !incomplete_flows {
            cx.error(
                codes::UNKNOWN_FLOW,
                format!("unknown flow `{flow_name}`"),
                at,
                "",
            )
            .help = did_you_mean(flow_name, flows.index.keys().map(String::as_str));
        }
        return;
    };
    let [param] = flow.params.as_slice() else {
        let span = cx.index.value(at);
        cx.out.push(
            Diagnostic::error(
                codes::AWAIT_TARGET,
                format!("flow `{flow_name}` must take exactly one parameter: the parsed SMS"),
            )
            .at(cx.file, span, "")
            .also(entry.file, entry.name_span, "defined here"),
        );
        return;
    };
    for field in check::param_fields(flow, &param.node) {
        if !captures.contains(field.node.as_str()) {
            let span = cx.index.value(at);
            cx.out.push(
                Diagnostic::error(
                    codes::SMS_MISSING_CAPTURE,
                    format!(
                        "flow `{flow_name}` reads `{}.{}`, which this SMS pattern never captures",
                        param.node, field.node
                    ),
                )
                .at(entry.file, field.span, "not captured")
                .also(cx.file, span, "the pattern that starts this flow")
                .help(format!(
                    "add `(?P<{}>...)` to the regex, or stop reading it",
                    field.node
                )),
            );
        }
    }
}

fn compile_alerts(cx: &mut Cx<'_>, raw: RawAlerts) -> (BTreeMap<String, Channel>, Vec<AlertRule>) {
    let path = Path::root().key("alerts");
    let mut channels = BTreeMap::new();
    for (name, channel) in &raw.channels {
        let cp = path.key("channels").key(name);
        let (field, value) = match channel.kind {
            raw::ChannelKind::Slack => ("webhook_url", &channel.webhook_url),
            raw::ChannelKind::Pagerduty => ("routing_key", &channel.routing_key),
        };
        let other = if field == "webhook_url" {
            ("routing_key", &channel.routing_key)
        } else {
            ("webhook_url", &channel.webhook_url)
        };
        if other.1.is_some() {
            cx.error(
                codes::INVALID_VALUE,
                format!(
                    "`{}` does not apply to a {:?} channel",
                    other.0, channel.kind
                )
                .to_lowercase(),
                &cp.key(other.0),
                "",
            );
        }
        match value {
            None => {
                cx.error(
                    codes::MISSING_FIELD,
                    format!("channel `{name}` needs `{field}`"),
                    &cp,
                    "",
                );
            }
            Some(v) => {
                if let Some(target) = cx.secret(v, &cp.key(field), "an alert channel credential") {
                    channels.insert(
                        name.clone(),
                        Channel {
                            kind: channel.kind,
                            target,
                        },
                    );
                }
            }
        }
    }
    let declared: Vec<&str> = raw
        .channels
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(raw.broken_channels.iter().map(String::as_str))
        .collect();
    let mut rules = Vec::new();
    for (i, rule) in &raw.rules {
        let rp = path.key("rules").index(*i);
        for (c, channel) in rule.notify.iter().enumerate() {
            if !declared.contains(&channel.as_str()) {
                cx.error(
                    codes::UNKNOWN_CHANNEL,
                    format!("unknown alert channel `{channel}`"),
                    &rp.key("notify").index(c),
                    "not declared under `alerts.channels`",
                )
                .help = did_you_mean(channel, declared.iter().copied());
            }
        }
        if rule.notify.is_empty() {
            cx.error(
                codes::UNKNOWN_CHANNEL,
                format!("alert `{}` notifies nobody", rule.name),
                &rp.key("notify"),
                "",
            );
        }
        let when = rp.key("when");
        let condition = match parse_condition(&rule.when) {
            Ok(c) => c,
            Err(e) => {
                let span = cx.index.inside(&when, e.span, &rule.when);
                cx.out.push(
                    Diagnostic::error(codes::ALERT_SYNTAX, format!("alert condition does not parse: {e}"))
                        .at(cx.file, span, "")
                        .help("write `metric op value[unit] [for duration]`, e.g. `error_rate > 5% for 15m`"),
                );
                continue;
            }
        };
        let metric = &condition.metric;
        let Some((_, unit)) = METRICS.iter().find(|(m, _)| *m == metric.node) else {
            let span = cx.index.inside(&when, metric.span, &rule.when);
            cx.out.push(
                Diagnostic::error(
                    codes::UNKNOWN_METRIC,
                    format!("unknown metric `{}`", metric.node),
                )
                .at(cx.file, span, "")
                .maybe_help(
                    did_you_mean(&metric.node, METRICS.iter().map(|(m, _)| *m)).or_else(|| {
                        Some(format!(
                            "known metrics: {}",
                            METRICS
                                .iter()
                                .map(|(m, _)| *m)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }),
                ),
            );
            continue;
        };
        if let Some(problem) = threshold_problem(&condition) {
            let span = cx.index.inside(&when, condition.threshold.span, &rule.when);
            cx.out
                .push(Diagnostic::error(codes::WRONG_UNIT, problem).at(cx.file, span, ""));
            continue;
        }
        let given = condition.unit.as_ref().map(|u| u.node);
        let fits = match (unit, given) {
            (MetricUnit::Percent, Some(u)) => !u.is_time(),
            (MetricUnit::Time, Some(u)) => u.is_time(),
            (MetricUnit::Count, None) => true,
            _ => false,
        };
        if !fits {
            let expected = match unit {
                MetricUnit::Percent => "a percentage, e.g. `5%`",
                MetricUnit::Time => "a time, e.g. `1500ms` or `3s`",
                MetricUnit::Count => "a plain number, e.g. `100`",
            };
            let span = match &condition.unit {
                Some(u) => cx.index.inside(&when, u.span, &rule.when),
                None => cx.index.inside(&when, condition.threshold.span, &rule.when),
            };
            cx.out.push(
                Diagnostic::error(
                    codes::WRONG_UNIT,
                    format!("`{}` is compared with {}", metric.node, expected),
                )
                .at(
                    cx.file,
                    span,
                    match given {
                        Some(u) => format!("`{}` does not fit", u.as_str()),
                        None => "unit missing".to_owned(),
                    },
                ),
            );
            continue;
        }
        rules.push(AlertRule {
            name: rule.name.clone(),
            condition,
            severity: rule.severity,
            channels: rule.notify.clone(),
        });
    }
    (channels, rules)
}

/// Templates the runtime sends on its own (a failed flow, unreadable media): they must exist when
/// a WhatsApp endpoint routes messages, and read only what the runtime can bind.
fn check_runtime_templates(cx: &mut Cx<'_>, endpoints: &[Endpoint], context: &Context) {
    let routes_messages = endpoints
        .iter()
        .any(|e| e.router.is_some() && e.deprecated.is_none());
    if !routes_messages || context.incomplete_templates {
        return;
    }
    for (name, when) in [
        (templates::ERROR_TEMPLATE, "a flow fails"),
        (
            templates::UNSUPPORTED_TEMPLATE,
            "someone sends media the engine cannot read",
        ),
    ] {
        match context.templates.get(name) {
            None => {
                let span = cx.index.key(&Path::root().key("templates"));
                cx.out.push(
                    Diagnostic::warning(
                        codes::MISSING_RUNTIME_TEMPLATE,
                        format!("no `{name}` template: nothing is sent when {when}"),
                    )
                    .at(cx.file, span, "")
                    .help(format!(
                        "declare `{name}` under `templates:` (a text in en, rw and fr)"
                    )),
                );
            }
            Some(info) => {
                if let Some(variable) = info.variables.iter().next() {
                    cx.error(
                        codes::UNBOUND_TEMPLATE_VAR,
                        format!(
                            "template `{name}` reads `{variable}`, which the runtime does not bind"
                        ),
                        &Path::root().key("templates").key(name),
                        "",
                    )
                    .help = Some("use only `contact`, `session` or `message` here".to_owned());
                }
            }
        }
    }
}

/// Thresholds and windows that can never mean what the author wanted.
fn threshold_problem(condition: &easymo_dsl::ast::Condition) -> Option<String> {
    let value = condition.threshold.node;
    if !value.is_finite() || value < 0.0 {
        return Some(format!("threshold {value} is negative"));
    }
    if condition.unit.as_ref().map(|u| u.node) == Some(easymo_dsl::ast::Unit::Percent)
        && value > 100.0
    {
        return Some(format!("a rate of {value}% can never be reached"));
    }
    if condition
        .sustained
        .as_ref()
        .is_some_and(|d| d.node.is_zero())
    {
        return Some(
            "`for 0…` is no duration: drop `for`, or give a window such as `for 5m`".to_owned(),
        );
    }
    None
}

/// Warns about flows that no route, fallback, SMS pattern or other flow can reach.
fn check_reachability(cx: &mut Cx<'_>, endpoints: &[Endpoint], flows: &Flows) {
    let mut queue: VecDeque<&str> = VecDeque::new();
    for endpoint in endpoints {
        if let Some(router) = &endpoint.router {
            queue.extend(router.keywords.iter().map(|k| k.flow.as_str()));
            queue.push_back(&router.fallback);
        }
        if let Some(sms) = &endpoint.sms {
            queue.extend(sms.patterns.iter().filter_map(|p| p.flow.as_deref()));
        }
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(entry) = flows.index.get(name) {
            queue.extend(entry.continues_in());
        }
    }
    for (name, entry) in &flows.index {
        if !seen.contains(name.as_str()) {
            cx.out.push(
                Diagnostic::warning(
                    codes::UNREACHABLE_FLOW,
                    format!("flow `{name}` is never used"),
                )
                .at(
                    entry.file,
                    entry.name_span,
                    "no route, fallback, SMS pattern or flow leads here",
                )
                .help("route a keyword to it, `call` it from another flow, or delete it"),
            );
        }
    }
}
