//! `routing:` of a WhatsApp endpoint: keyword routes, global words, the fallback, and routes
//! that can never match because an earlier one takes their words.

use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::{codes, Diagnostic};

use super::context::Cx;
use crate::config::raw;
use crate::config::templates::LANGUAGES;
use crate::config::yaml::Path;
use crate::config::Flows;
use crate::router::{normalize, KeywordRoute, Router, Tier};

pub(super) fn check_route_target(
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

pub(super) fn compile_routing(
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
            check_route(cx, route, &rp);
            for (language, k, keyword) in route.keywords.each() {
                let kp = match language {
                    Some(lang) => rp.key("keywords").key(lang).index(k),
                    None => rp.key("keywords").index(k),
                };
                if let Some(lang) = language.filter(|l| !LANGUAGES.contains(l) && *l != ANY) {
                    unknown_language(cx, lang, &rp.key("keywords").key(lang), true);
                    continue;
                }
                let language = language.filter(|l| *l != ANY);
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
                    keyword: keyword.to_owned(),
                    normalized,
                    mode: route.mode,
                    flow: route.flow.clone(),
                    language: language.map(str::to_owned),
                    typos: route.typos,
                };
                check_shadowing(cx, &keywords, &candidate, &kp);
                keywords.push((candidate, kp));
            }
        }
    }
    check_typo_reach(cx, &keywords);
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
    let default_language = if LANGUAGES.contains(&raw.default_language.as_str()) {
        raw.default_language.clone()
    } else {
        unknown_language(
            cx,
            &raw.default_language,
            &at.key("default_language"),
            false,
        );
        "en".to_owned()
    };
    Router {
        keywords: keywords.into_iter().map(|(k, _)| k).collect(),
        fallback: raw.fallback.clone(),
        session_ttl,
        stale_after,
        default_language,
    }
}

/// What a route says of itself: some keyword, and `typos` only where it works.
fn check_route(cx: &mut Cx<'_>, route: &raw::Route, at: &Path) {
    if route.typos && route.mode == crate::router::MatchMode::Contains {
        cx.error(
            codes::INVALID_VALUE,
            "`typos` works with `exact` and `prefix` matching",
            &at.key("typos"),
            "this route matches with `contains`",
        )
        .help = Some("drop `typos`, or match with `exact` or `prefix`".to_owned());
    }
    if route.keywords.is_empty() {
        cx.error(
            codes::EMPTY_KEYWORD,
            "a route needs at least one keyword",
            &at.key("keywords"),
            "",
        );
    }
}

/// A typo-tolerant keyword that a typo away is another route's keyword: a slip on one would be
/// taken for the other.
fn check_typo_reach(cx: &mut Cx<'_>, keywords: &[(KeywordRoute, Path)]) {
    for (tolerant, at) in keywords.iter().filter(|(k, _)| k.typos) {
        let Some((other, _)) = keywords.iter().find(|(other, _)| {
            other.flow != tolerant.flow
                && other.normalized != tolerant.normalized
                && tolerant.with_typos(&other.normalized)
        }) else {
            continue;
        };
        let span = cx.index.value(at);
        cx.out.push(
            Diagnostic::warning(
                codes::TYPO_REACH,
                format!(
                    "with `typos`, keyword \"{}\" also matches \"{}\", a keyword of flow `{}`",
                    tolerant.keyword, other.keyword, other.flow
                ),
            )
            .at(cx.file, span, format!("routes to `{}`", tolerant.flow))
            .help("drop `typos` on this route, or make the keywords further apart"),
        );
    }
}

/// The key of keywords that belong to every language (`taxi`, `moto`).
const ANY: &str = "any";

/// `lang` at `at` (the key of a keyword list, or a value) is not a language easyMO serves.
fn unknown_language(cx: &mut Cx<'_>, lang: &str, at: &Path, is_key: bool) {
    let message = format!("unknown language `{lang}`");
    let label = "not a language easyMO serves";
    let diagnostic = if is_key {
        cx.error_at_key(codes::UNKNOWN_LANGUAGE, message, at, label)
    } else {
        cx.error(codes::UNKNOWN_LANGUAGE, message, at, label)
    };
    let any = if is_key {
        ", or `any` for words of every language"
    } else {
        ""
    };
    diagnostic.help = did_you_mean(lang, LANGUAGES.iter().copied())
        .or_else(|| Some(format!("use `en`, `rw` (Kinyarwanda) or `fr`{any}")));
}

pub(super) fn check_shadowing(
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
