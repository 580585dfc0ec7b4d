//! What every check shares: the file, the YAML position index, the env policy and the list
//! diagnostics are pushed onto, with helpers for the values many sections use (secrets,
//! durations, networks).

use std::time::Duration;

use easymo_dsl::parser::parse_duration;
use easymo_dsl::{codes, Diagnostic, FileId};
use ipnet::IpNet;

use crate::config::env::{reference, EnvPolicy, Secret};
use crate::config::yaml::{Path, YamlIndex};

/// What the checks share.
pub(super) struct Cx<'a> {
    pub(super) file: FileId,
    pub(super) index: YamlIndex,
    pub(super) policy: &'a EnvPolicy,
    pub(super) out: Vec<Diagnostic>,
}

impl Cx<'_> {
    /// An error on the key at `path` (for "this section is wrong here" problems).
    pub(super) fn error_at_key(
        &mut self,
        code: codes::Code,
        message: impl Into<String>,
        path: &Path,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = self.index.key(path);
        self.error_at(span, code, message, label)
    }

    /// An error on the value at `path`.
    pub(super) fn error(
        &mut self,
        code: codes::Code,
        message: impl Into<String>,
        path: &Path,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        let span = self.index.value(path);
        self.error_at(span, code, message, label)
    }

    fn error_at(
        &mut self,
        span: easymo_dsl::Span,
        code: codes::Code,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.push(Diagnostic::error(code, message).at(self.file, span, label))
    }

    /// An API base URL at `path`: http(s), returned without a trailing slash.
    pub(super) fn base_url(&mut self, text: &str, path: &Path, help: &str) -> String {
        let base_url = text.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            self.error(
                codes::INVALID_VALUE,
                format!("`{text}` is not an http(s) URL"),
                path,
                "",
            )
            .help = Some(help.to_owned());
        }
        base_url
    }

    pub(super) fn push(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.out.push(diagnostic);
        self.out.last_mut().expect("just pushed")
    }

    /// A `${NAME}` secret at `path`, resolved per the policy.
    pub(super) fn secret(&mut self, value: &str, path: &Path, what: &str) -> Option<Secret> {
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

    pub(super) fn duration(&mut self, text: &str, path: &Path) -> Option<Duration> {
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

    pub(super) fn net(&mut self, text: &str, path: &Path) -> Option<IpNet> {
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

    /// A list of networks; one covering every address defeats its purpose. An entry `${NAME}`
    /// stands for the networks listed in that variable, separated by commas or spaces: the
    /// addresses of a partner (MTN's callback hosts) differ between deployments and change
    /// without a release.
    pub(super) fn nets(&mut self, list: &[String], path: &Path, why: &str) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let entries = match reference(text) {
                Some(var) => self.listed_in(var, &path.index(i)),
                None => vec![text.clone()],
            };
            for text in &entries {
                nets.extend(self.specific_net(text, &path.index(i), why));
            }
        }
        nets
    }

    /// The entries of the variable `var`: none while linting without the environment.
    fn listed_in(&mut self, var: &str, path: &Path) -> Vec<String> {
        let EnvPolicy::Resolve(env) = self.policy else {
            return Vec::new();
        };
        let Some(value) = env.get(var).map(str::to_owned) else {
            self.error(
                codes::UNSET_ENV,
                format!("environment variable `{var}` is not set"),
                path,
                "the addresses come from here",
            )
            .help = Some(format!(
                "export {var}=\"203.0.113.7/32, 198.51.100.0/24\" before starting the engine"
            ));
            return Vec::new();
        };
        let entries: Vec<String> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(str::to_owned)
            .collect();
        if entries.is_empty() {
            self.error(
                codes::INVALID_VALUE,
                format!("environment variable `{var}` lists no address"),
                path,
                "",
            );
        }
        entries
    }

    /// The network `text`, unless it is not one or covers every address.
    fn specific_net(&mut self, text: &str, path: &Path, why: &str) -> Option<IpNet> {
        let net = self.net(text, path)?;
        if net.prefix_len() == 0 {
            self.error(
                codes::ALLOWS_EVERYONE,
                format!("`{text}` covers every address"),
                path,
                why.to_owned(),
            )
            .help = Some("list the real addresses or networks".to_owned());
            return None;
        }
        Some(net)
    }
}
