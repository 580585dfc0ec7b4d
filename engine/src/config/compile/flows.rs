//! `flows:`: reading and parsing the listed flow files, and which flows nothing can reach.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path as FsPath, PathBuf};

use easymo_dsl::check::{self, Context, SourceFlows};
use easymo_dsl::parser::parse_flow_file;
use easymo_dsl::{codes, Diagnostic, Sources};

use super::context::Cx;
use super::Input;
use crate::config::yaml::Path;
use crate::config::{Endpoint, Flows};

/// Reads and parses every listed flow file. Returns the parsed files and whether any failed.
pub(super) fn load_flows(
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

/// Checks the parsed flows against each other and the templates, and indexes them.
pub(super) fn check_flows(
    cx: &mut Cx<'_>,
    flows: Vec<SourceFlows>,
    context: &Context,
    sources: &Sources,
) -> Flows {
    let (flow_index, flow_diagnostics) = check::check(&flows, context);
    cx.out.extend(flow_diagnostics);
    Flows::new(
        flows
            .into_iter()
            .map(|s| (sources.name(s.file).to_owned(), s.ast))
            .collect(),
        flow_index,
    )
}

/// Resolves `.` and `..` lexically, so `cases/x/../base/a.flow` shows as `cases/base/a.flow`.
pub(super) fn normalize_path(path: &FsPath) -> PathBuf {
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

/// Warns about flows that no route, fallback, SMS pattern or other flow can reach.
pub(super) fn check_reachability(cx: &mut Cx<'_>, endpoints: &[Endpoint], flows: &Flows) {
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
