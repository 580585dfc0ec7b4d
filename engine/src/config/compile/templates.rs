//! `templates:`: each template read on its own, checked by [`super::super::templates`], and the
//! templates the runtime itself sends.

use std::collections::{BTreeMap, BTreeSet};

use easymo_dsl::check::{Context, TemplateInfo};
use easymo_dsl::{codes, Diagnostic};
use serde_yaml::Value;

use super::context::Cx;

use crate::config::yaml::{deserialize_at, Path};
use crate::config::{templates, Endpoint, Shape};

pub(super) fn templates_section(
    cx: &mut Cx<'_>,
    value: Option<Value>,
) -> (BTreeMap<String, Shape>, BTreeSet<String>) {
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
        match deserialize_at::<Shape>(item, &path.key(&name), &cx.index, cx.file) {
            Ok(t) => {
                good.insert(name, t);
            }
            Err(d) => {
                cx.out.extend(d);
                broken.insert(name);
            }
        }
    }
    (good, broken)
}

pub(super) fn check_templates(
    cx: &mut Cx<'_>,
    templates: &BTreeMap<String, Shape>,
    broken: &BTreeSet<String>,
    languages: &[String],
) -> BTreeMap<String, TemplateInfo> {
    let mut infos = BTreeMap::new();
    for (name, template) in templates {
        let info = templates::check(name, template, &cx.index, cx.file, &mut cx.out);
        templates::check_declared_languages(
            name,
            template,
            languages,
            &cx.index,
            cx.file,
            &mut cx.out,
        );
        infos.insert(name.clone(), info);
    }
    for name in broken {
        infos.insert(
            name.clone(),
            TemplateInfo {
                variables: BTreeSet::new(),
                asks: easymo_dsl::check::Asks::Nothing,
                choice_ids: None,
                opaque: true,
                ..TemplateInfo::default()
            },
        );
    }
    infos
}

/// Templates the runtime sends on its own (a failed flow, unreadable media): they must exist when
/// a WhatsApp endpoint routes messages, and read only what the runtime can bind.
pub(super) fn check_runtime_templates(cx: &mut Cx<'_>, endpoints: &[Endpoint], context: &Context) {
    let routes_messages = endpoints
        .iter()
        .any(|e| e.router.is_some() && e.deprecated.is_none());
    if !routes_messages || context.incomplete_templates {
        return;
    }
    for (name, when) in [
        (templates::ERROR_TEMPLATE, Some("a flow fails")),
        (
            templates::UNSUPPORTED_TEMPLATE,
            Some("someone sends media the engine cannot read"),
        ),
        // Optional: without it, the fallback flow answers alone.
        (templates::CONVERSATION_CHANGED_TEMPLATE, None),
    ] {
        match context.templates.get(name) {
            None => {
                let Some(when) = when else { continue };
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

/// Templates nobody sends: no flow replies with them, and the runtime sends them on its own
/// only as the error, unsupported-media and conversation-changed replies, payment notices and
/// rate-limit replies.
pub(super) fn check_unused_templates(
    cx: &mut Cx<'_>,
    templates: &BTreeMap<String, Shape>,
    flows: &crate::config::Flows,
    endpoints: &[Endpoint],
) {
    // While the config has errors, a template may be unused only because of them.
    if cx
        .out
        .iter()
        .any(|d| d.severity == easymo_dsl::diagnostic::Severity::Error)
    {
        return;
    }
    let mut used: BTreeSet<&str> = [
        templates::ERROR_TEMPLATE,
        templates::UNSUPPORTED_TEMPLATE,
        templates::CONVERSATION_CHANGED_TEMPLATE,
        templates::PAYMENT_SUCCESSFUL_TEMPLATE,
        templates::PAYMENT_FAILED_TEMPLATE,
    ]
    .into_iter()
    .collect();
    used.extend(
        flows
            .index
            .values()
            .flat_map(|entry| entry.templates.iter().map(String::as_str)),
    );
    used.extend(
        endpoints
            .iter()
            .filter_map(|e| e.rate_limit.as_ref()?.reply_template.as_deref()),
    );
    for name in templates
        .keys()
        .filter(|name| !used.contains(name.as_str()))
    {
        let span = cx.index.key(&Path::root().key("templates").key(name));
        cx.out.push(
            Diagnostic::warning(
                codes::UNUSED_TEMPLATE,
                format!("template `{name}` is never sent"),
            )
            .at(cx.file, span, "no flow replies with it")
            .help("reply with it in a flow, or delete it"),
        );
    }
}
