//! Raw routes.yaml → validated [`Config`]: runs every check and collects every diagnostic.
//!
//! Owns: the order of loading (YAML → shapes → values → flows → cross-references →
//! reachability) and every check that spans more than one template. Each check pushes onto one
//! list and carries on, so a user sees all mistakes in one run; items that failed to load are
//! remembered so their absence does not cause a cascade of follow-on errors.
//!
//! # Layout
//! One file per section of routes.yaml, each turning its raw shapes into typed values and
//! running the checks that belong to it; this file runs them in order and assembles [`Config`].

mod alerts;
mod context;
mod endpoints;
mod flows;
mod routing;
mod sending;
mod server;
mod sms;
mod templates;
mod yaml_syntax;

use std::collections::BTreeSet;
use std::path::Path as FsPath;

use easymo_dsl::check::Context;
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::{codes, Diagnostic, FileId, Sources, Span};
use serde_yaml::Value;

use super::env::EnvPolicy;
use super::raw::{self};
use super::yaml::{deserialize_at, Path, YamlIndex};
use super::ReplyTemplate;
use super::{Config, FileSource};
use alerts::{alerts_section, compile_alerts};
use context::Cx;
use endpoints::compile_endpoints;
use flows::{check_flows, check_reachability, load_flows};
use server::{check_trusted_proxies, compile_momo, compile_server};
use templates::{
    check_runtime_templates, check_templates, check_unused_templates, templates_section,
};

#[derive(Clone, Copy)]
pub(super) struct Input<'a> {
    pub file: FileId,
    pub text: &'a str,
    pub base_dir: &'a FsPath,
    pub policy: &'a EnvPolicy,
    pub files: &'a dyn FileSource,
}

pub(super) fn compile(
    input: Input<'_>,
    sources: &mut Sources,
) -> (Option<Config>, Vec<Diagnostic>) {
    let file = input.file;
    let value: Value = match serde_yaml::from_str(input.text) {
        Ok(v) => v,
        Err(e) => return (None, vec![yaml_syntax::diagnostic(&e, file, sources)]),
    };
    let mut cx = Cx {
        file,
        index: YamlIndex::build(input.text),
        policy: input.policy,
        out: Vec::new(),
    };
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
    let misspelt_sections = unknown_sections(&mut cx, &top);
    let mut take = |key: &str| top.remove(key);
    let version: Option<u32> = section(&mut cx, take("version"), "version", true);
    if let Some(v) = version.filter(|v| *v != 1) {
        cx.error(
            codes::INVALID_VALUE,
            format!("unsupported version {v}"),
            &Path::root().key("version"),
            "this engine reads version 1",
        );
    }
    let raw_server: Option<raw::Server> = section(&mut cx, take("server"), "server", true);
    let flow_paths: Option<Vec<String>> = section(&mut cx, take("flows"), "flows", true);
    let languages = declared_languages(&mut cx, take("languages"));
    let errors_before = cx.out.len();
    let endpoints: Vec<(usize, raw::Endpoint)> =
        items(&mut cx, take("endpoints"), &Path::root().key("endpoints"));
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
    let server = (raw_server.as_ref()).and_then(|s| compile_server(&mut cx, s, input.base_dir));
    let momo = momo.and_then(|m| compile_momo(&mut cx, &m));
    let template_infos = check_templates(&mut cx, &templates, &broken_templates, &languages);
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
    let flows = check_flows(&mut cx, flows, &context, sources);
    let endpoints = compile_endpoints(&mut cx, &endpoints, &flows, incomplete_flows, &context);
    check_runtime_templates(&mut cx, &endpoints, &context);
    check_trusted_proxies(&mut cx, raw_server.as_ref(), &endpoints);
    let alerts = compile_alerts(&mut cx, alerts, (input.base_dir, input.files), &endpoints);
    // A flow file or endpoint that failed to load hides references: do not guess.
    if !incomplete_flows && !incomplete_endpoints {
        check_reachability(&mut cx, &endpoints, &flows);
        check_unused_templates(&mut cx, &templates, &flows, &endpoints);
    }

    let config = match (server, version) {
        (Some(server), Some(_)) => Some(Config {
            server,
            endpoints,
            templates: templates
                .into_iter()
                .map(|(name, shape)| (name.clone(), ReplyTemplate::new(&name, shape)))
                .collect(),
            flows,
            template_facts: context.templates,
            channels: alerts.channels,
            alerts: alerts.rules,
            alerting: alerts.alerting,
            momo,
        }),
        _ => None,
    };
    (config, cx.out)
}

/// Reports every unknown top-level key; returns the known sections they look like misspellings
/// of, whose absence must then not be read as "none declared".
fn unknown_sections(cx: &mut Cx<'_>, top: &serde_yaml::Mapping) -> BTreeSet<&'static str> {
    let mut misspelt_sections = BTreeSet::new();
    // Keys come from serde's view of the document (complete even where the position index
    // gave up); the index only supplies where they are.
    let unknown = top
        .keys()
        .map(|k| match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
        .filter(|k| !raw::TOP_LEVEL_KEYS.contains(&k.as_str()));
    for key in unknown {
        misspelt_sections.extend(
            raw::TOP_LEVEL_KEYS
                .iter()
                .copied()
                .filter(|k| !top.contains_key(*k) && did_you_mean(&key, [*k]).is_some()),
        );
        let span = cx.index.key(&Path::root().key(&key));
        cx.out.push(
            Diagnostic::error(codes::UNKNOWN_FIELD, format!("unknown field `{key}`"))
                .at(cx.file, span, "not a known top-level section")
                .maybe_help(did_you_mean(&key, raw::TOP_LEVEL_KEYS.iter().copied())),
        );
    }
    misspelt_sections
}

/// Deserializes one top-level section; reports it missing when required.
/// `languages:`, each one easyMO serves (none declared: nothing to hold templates to).
fn declared_languages(cx: &mut Cx<'_>, value: Option<Value>) -> Vec<String> {
    let languages: Vec<String> = section(cx, value, "languages", false).unwrap_or_default();
    for (i, lang) in languages.iter().enumerate() {
        if !crate::config::templates::LANGUAGES.contains(&lang.as_str()) {
            cx.error(
                codes::UNKNOWN_LANGUAGE,
                format!("unknown language `{lang}`"),
                &Path::root().key("languages").index(i),
                "not a language easyMO serves",
            )
            .help = Some("use `en`, `rw` (Kinyarwanda) or `fr`".to_owned());
        }
    }
    languages
}

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
                cx.out.extend(d);
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
            Err(d) => cx.out.extend(d),
        }
    }
    out
}
