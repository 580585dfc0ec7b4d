//! `endpoints:`: paths, kinds, authentication and rate limits of each endpoint.

use std::collections::HashMap;
use std::num::NonZeroU32;

use easymo_dsl::check::Context;
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::{codes, Diagnostic};

use super::context::Cx;
use super::routing::compile_routing;
use super::sending::compile_sending;
use super::sms::compile_sms;
use crate::config::env::Secret;
use crate::config::raw::{self, EndpointKind, LimitKey, OnLimit};
use crate::config::yaml::Path;
use crate::config::{Auth, Endpoint, Flows, RateLimit};

/// Paths the server answers itself (health, readiness, admin), which no endpoint may take.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/admin"];

pub(super) fn compile_endpoints(
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
    check_senders_distinct(cx, endpoints);
    out
}

/// Each outbox row is sent by the one `sending` section for its number: two sections for the
/// same number (or two for "whichever number the message came to") leave that unclear.
fn check_senders_distinct(cx: &mut Cx<'_>, endpoints: &[(usize, raw::Endpoint)]) {
    let list = Path::root().key("endpoints");
    let mut numbers: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, raw) in endpoints {
        let Some(sending) = &raw.sending else {
            continue;
        };
        let number = sending.phone_number_id.as_deref();
        if let Some(first) = numbers.insert(number, *i) {
            let first_span = cx.index.key(&list.index(first).key("sending"));
            let file = cx.file;
            let what = match number {
                Some(id) => format!("phone number id `{id}`"),
                None => "the number each message came to".to_owned(),
            };
            let d = cx.error_at_key(
                codes::INVALID_VALUE,
                format!("two endpoints send from {what}"),
                &list.index(*i).key("sending"),
                "sends again here",
            );
            *d = d
                .clone()
                .also(file, first_span, "first sends here")
                .help("give each `sending` its own `phone_number_id`");
        }
    }
}

pub(super) fn compile_endpoint(
    cx: &mut Cx<'_>,
    raw: &raw::Endpoint,
    at: &Path,
    flows: &Flows,
    incomplete_flows: bool,
    context: &Context,
) -> Option<Endpoint> {
    let kind = raw.kind;
    check_kind_fields(cx, raw, at);
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
    let sending = raw
        .sending
        .as_ref()
        .and_then(|s| compile_sending(cx, &raw.name, s, &at.key("sending")));
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
        sending,
    })
}

/// The fields an endpoint's kind needs are there, the ones it cannot use are not, and an active
/// endpoint checks who calls it.
fn check_kind_fields(cx: &mut Cx<'_>, raw: &raw::Endpoint, at: &Path) {
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
    only_for(cx, raw.sending.is_some(), "sending", EndpointKind::Whatsapp);
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
    if let (true, EndpointKind::MomoCallback, raw::Auth::Hmac(hmac)) = (active, kind, &raw.auth) {
        if hmac.signer.is_none() {
            let span = cx.index.key(&at.key("auth").key("hmac"));
            cx.out.push(
                Diagnostic::warning(codes::SIGNATURE_NOBODY_SENDS, format!("MoMo callback endpoint `{}` requires a signature MTN never sends", raw.name))
                    .at(cx.file, span, "every genuine callback would be refused with 403, and not even recorded")
                    .help("use an `ip_allowlist` of MTN's callback addresses (the engine confirms every callback with MoMo's status endpoint, and polls when none comes); if a proxy of yours signs callbacks, name it with `signer:`"),
            );
        }
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
}

pub(super) fn compile_auth(cx: &mut Cx<'_>, auth: &raw::Auth, at: &Path) -> Option<Auth> {
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

pub(super) fn compile_rate_limit(
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
