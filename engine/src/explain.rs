//! `easymo explain "<text>"`: which route a message takes and why, the answer first.
//!
//! Owns: the human report for product people debugging keyword conflicts: a few lines (the
//! normalized text, the winning route and why, what its flow sends and waits for, a
//! suggestion when the text nearly matched a keyword), and with `--verbose` every candidate in
//! the order tried. Must not route differently from the runtime: it calls the same
//! [`crate::router::Router::explain`].

use std::fmt::Write as _;

use crate::config::{Config, EndpointKind};

/// Why `explain` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint of that name with routing.
    #[error("no WhatsApp endpoint with routing is named `{0}`")]
    UnknownEndpoint(String),
    /// The config has no routing at all.
    #[error("routes.yaml has no WhatsApp endpoint with routing")]
    NoRouting,
}

/// Explains how `text` is routed by `endpoint` (default: the first WhatsApp endpoint with
/// routing); `verbose` adds every candidate.
pub fn explain(
    config: &Config,
    endpoint: Option<&str>,
    text: &str,
    verbose: bool,
) -> Result<String, Error> {
    let routed = config
        .endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Whatsapp && e.router.is_some());
    let endpoint = match endpoint {
        Some(name) => routed
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::UnknownEndpoint(name.to_owned()))?,
        None => routed.into_iter().next().ok_or(Error::NoRouting)?,
    };
    let router = endpoint.router.as_ref().ok_or(Error::NoRouting)?;
    let explanation = router.explain(text);
    let mut out = String::new();
    let _ = writeln!(out, "{text:?} -> flow `{}`", explanation.flow);
    let why = explanation
        .candidates
        .iter()
        .find(|c| c.matched)
        .map_or_else(
            || "no keyword matched: the fallback".to_owned(),
            |c| format!("{}: {}", c.route, c.reason),
        );
    let _ = writeln!(out, "  read as {:?}; {why}", explanation.normalized);
    if let Some(language) = router.route(text).language() {
        let _ = writeln!(
            out,
            "  a `{language}` keyword: it says the contact writes `{language}` (see the README's Languages)"
        );
    }
    if explanation.candidates.iter().all(|c| !c.matched) {
        let near: Vec<String> = router
            .near_misses(text)
            .iter()
            .map(|k| format!("\"{}\" (-> `{}`)", k.keyword, k.flow))
            .collect();
        if !near.is_empty() {
            let _ = writeln!(out, "  did you mean {}?", near.join(" or "));
        }
    }
    describe_flow(config, &explanation.flow, &mut out);
    if !verbose {
        let _ = writeln!(out, "(--verbose: every route tried, in order)");
        return Ok(out);
    }
    let _ = writeln!(out, "\nendpoint {} ({})", endpoint.name, endpoint.path);
    let _ = writeln!(out, "candidates, in the order they are tried:");
    let width = explanation
        .candidates
        .iter()
        .map(|c| c.route.chars().count())
        .max()
        .unwrap_or(0);
    let flow_width = explanation
        .candidates
        .iter()
        .map(|c| c.flow.len())
        .max()
        .unwrap_or(0);
    for (i, c) in explanation.candidates.iter().enumerate() {
        let verdict = if c.matched { "MATCH" } else { "no" };
        let _ = writeln!(
            out,
            "  {:>2}. {:<width$}  -> {:<flow_width$}  {verdict}: {}",
            i + 1,
            c.route,
            c.flow,
            c.reason
        );
    }
    let _ = writeln!(
        out,
        "\nwinner: {} -> flow `{}`",
        explanation.winner, explanation.flow
    );
    let _ = writeln!(
        out,
        "\nnote: when the sender's session is waiting for an answer, the message goes to the waiting flow first; global words still win."
    );
    Ok(out)
}

fn describe_flow(config: &Config, flow: &str, out: &mut String) {
    let Some(entry) = config.flows.index.get(flow) else {
        return;
    };
    // Templates sent this turn: this flow and the flows it calls, transitively.
    let mut this_turn = vec![flow.to_owned()];
    let mut i = 0;
    while i < this_turn.len() {
        if let Some(e) = config.flows.index.get(&this_turn[i]) {
            for callee in &e.calls {
                if !this_turn.contains(callee) {
                    this_turn.push(callee.clone());
                }
            }
        }
        i += 1;
    }
    let mut templates: Vec<&str> = Vec::new();
    for name in &this_turn {
        if let Some(e) = config.flows.index.get(name) {
            for t in &e.templates {
                if !templates.contains(&t.as_str()) {
                    templates.push(t);
                }
            }
        }
    }
    let _ = writeln!(out, "  flow `{flow}` can send: {}", list(&templates));
    if this_turn.len() > 1 {
        let _ = writeln!(
            out,
            "    (including the flows it calls: {})",
            list(
                &this_turn[1..]
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            )
        );
    }
    if !entry.awaits.is_empty() {
        let next: Vec<String> = entry
            .awaits
            .iter()
            .map(|(k, f)| format!("{f} (awaits {})", k.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "  then waits for the user's answer in: {}",
            next.join(", ")
        );
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}
