//! Meaning checks over parsed flows: names, scopes, references, SQL placeholders.
//!
//! Owns: every check that needs more than one statement to decide. Each submodule walks the AST
//! and returns all the diagnostics it finds; `check` runs them all, so a user sees every mistake
//! in one run. Must not read files or know about YAML: what it needs from routes.yaml (template
//! names and their variables) arrives in a [`Context`].

mod refs;
mod scope;
mod shape;
mod sql;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ast::{Block, Flow, FlowFile, Ident, InputKind, Stmt};
use crate::codes;
use crate::diagnostic::{Diagnostic, FileId};
use crate::span::Span;

/// Names every flow can read without declaring them.
pub const IMPLICIT_VARIABLES: &[&str] = &["contact", "session", "message"];

/// What the checker needs to know about a reply template.
#[derive(Debug, Clone, Default)]
pub struct TemplateInfo {
    /// Variables the template reads (excluding implicit ones), which a reply must bind.
    pub variables: BTreeSet<String>,
    /// What a reply with it asks the person for.
    pub asks: Asks,
    /// The ids its rows or buttons send back, when they are all written out (not when rows
    /// come from a query or an id is a `{{ }}` expression).
    pub choice_ids: Option<BTreeSet<String>>,
    /// The template itself failed to load: accept any bindings rather than report a cascade.
    pub opaque: bool,
    /// Every `{{ a.b }}` it reads, where, and whether an absent value is handled.
    pub reads: Vec<FieldRead>,
    /// The variables a list's sections take their rows from (`rows_from`).
    pub rows_from: Vec<String>,
}

/// One value a template text reads: `{{ job.title }}` is `["job", "title"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRead {
    /// The dotted path.
    pub path: Vec<String>,
    /// The file of the template text (routes.yaml).
    pub file: FileId,
    /// The text it is read in.
    pub span: Span,
    /// Read in a list's row, where `row` is each item of the section's `rows_from`.
    pub per_row: bool,
    /// Written with `| default(…)`, `or`, or under an `if` on it: an absent value is handled.
    pub guarded: bool,
}

/// What a reply asks the person for, and so what the flow must await next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Asks {
    /// Nothing in particular (text): an answer, if any, is text.
    #[default]
    Nothing,
    /// A tap on a row or button (a list or buttons reply).
    Choice,
    /// A shared location (a location request).
    Location,
}

/// Facts from outside the flow files.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Declared templates by name.
    pub templates: BTreeMap<String, TemplateInfo>,
    /// The templates section failed to load: replies to unknown templates may be fine.
    pub incomplete_templates: bool,
    /// Some flow file failed to parse: unknown flow names may be defined there, so do not
    /// report them.
    pub incomplete_flows: bool,
}

/// One parsed flow file and where it came from.
#[derive(Debug, Clone)]
pub struct SourceFlows {
    /// The file the flows were parsed from.
    pub file: FileId,
    /// The parsed flows.
    pub ast: FlowFile,
}

/// Where a flow is defined and what it takes.
#[derive(Debug, Clone)]
pub struct FlowEntry {
    /// File of the definition.
    pub file: FileId,
    /// The flow's name span.
    pub name_span: Span,
    /// Number of parameters.
    pub arity: usize,
    /// Flows this flow continues in during the same turn (`call`).
    pub calls: Vec<String>,
    /// Flows that receive the user's next message (`await`), with what they wait for.
    pub awaits: Vec<(InputKind, String)>,
    /// Templates this flow can send.
    pub templates: Vec<String>,
}

impl FlowEntry {
    /// Every flow this one can lead to, by `call` or `await`.
    pub fn continues_in(&self) -> impl Iterator<Item = &str> {
        self.calls
            .iter()
            .map(String::as_str)
            .chain(self.awaits.iter().map(|(_, f)| f.as_str()))
    }
}

/// All flows by name, built by [`check`].
pub type FlowIndex = BTreeMap<String, FlowEntry>;

/// Runs every flow check. Returns the flow index (first definition wins for duplicates) and all
/// diagnostics.
pub fn check(files: &[SourceFlows], context: &Context) -> (FlowIndex, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let index = build_index(files, &mut diagnostics);
    let session_keys = session_keys(files);
    let mut flows: BTreeMap<&str, (FileId, &Flow)> = BTreeMap::new();
    for source in files {
        for flow in &source.ast.flows {
            flows
                .entry(flow.name.node.as_str())
                .or_insert((source.file, flow));
        }
    }
    // The first `await … -> flow` of each flow, in file order: what W111 points back at.
    let mut awaited: BTreeMap<&str, (FileId, InputKind, Span)> = BTreeMap::new();
    for source in files {
        for flow in &source.ast.flows {
            walk(&flow.body, &mut |stmt| {
                if let Stmt::Await { kind, next } = stmt {
                    awaited.entry(next.node.as_str()).or_insert((
                        source.file,
                        kind.node,
                        kind.span,
                    ));
                }
            });
        }
    }
    for source in files {
        for flow in &source.ast.flows {
            let cx = FlowCx {
                file: source.file,
                flow,
                index: &index,
                context,
                session_keys: &session_keys,
                flows: &flows,
                awaited: &awaited,
            };
            scope::check_flow(&cx, &mut diagnostics);
            refs::check_flow(&cx, &mut diagnostics);
            shape::check_flow(&cx, &mut diagnostics);
            sql::check_flow(&cx, &mut diagnostics);
        }
    }
    (index, diagnostics)
}

/// What each per-flow check sees.
struct FlowCx<'a> {
    file: FileId,
    flow: &'a Flow,
    index: &'a FlowIndex,
    context: &'a Context,
    session_keys: &'a BTreeMap<String, Span>,
    /// Every flow by name, with its file (the first definition of a name).
    flows: &'a BTreeMap<&'a str, (FileId, &'a Flow)>,
    /// Where each flow is first awaited, and for what.
    awaited: &'a BTreeMap<&'a str, (FileId, InputKind, Span)>,
}

fn build_index(files: &[SourceFlows], diagnostics: &mut Vec<Diagnostic>) -> FlowIndex {
    let mut index = FlowIndex::new();
    for source in files {
        for flow in &source.ast.flows {
            if let Some(first) = index.get(&flow.name.node) {
                diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_FLOW,
                        format!("flow `{}` is defined twice", flow.name.node),
                    )
                    .at(source.file, flow.name.span, "defined again here")
                    .also(first.file, first.name_span, "first defined here")
                    .help("rename one of them; flow names are global across all flow files"),
                );
                continue;
            }
            let mut entry = FlowEntry {
                file: source.file,
                name_span: flow.name.span,
                arity: flow.params.len(),
                calls: Vec::new(),
                awaits: Vec::new(),
                templates: Vec::new(),
            };
            walk(&flow.body, &mut |stmt| match stmt {
                Stmt::Call { flow, .. } | Stmt::RequestPayment { next: flow, .. } => {
                    entry.calls.push(flow.node.clone())
                }
                Stmt::Await { next, kind } => entry.awaits.push((kind.node, next.node.clone())),
                Stmt::Reply { template, .. } => entry.templates.push(template.node.clone()),
                _ => {}
            });
            index.insert(flow.name.node.clone(), entry);
        }
    }
    index
}

/// Every `set` key in any flow, with its first span.
fn session_keys(files: &[SourceFlows]) -> BTreeMap<String, Span> {
    set_keys(files.iter().flat_map(|source| &source.ast.flows))
}

/// Every key the `flows` `set` in the session, with the span of its first `set`.
pub fn set_keys<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> BTreeMap<String, Span> {
    let mut keys = BTreeMap::new();
    for flow in flows {
        walk(&flow.body, &mut |stmt| {
            if let Stmt::Set { name, .. } = stmt {
                keys.entry(name.node.clone()).or_insert(name.span);
            }
        });
    }
    keys
}

/// Calls `f` on every statement, depth first, in source order.
pub fn walk<'a>(block: &'a Block, f: &mut dyn FnMut(&'a Stmt)) {
    for stmt in block {
        f(&stmt.node);
        if let Stmt::If {
            then, otherwise, ..
        } = &stmt.node
        {
            walk(then, f);
            if let Some(otherwise) = otherwise {
                walk(otherwise, f);
            }
        }
    }
}

/// The fields read from parameter `param` of `flow` (`param.field`), e.g. the captures an SMS
/// flow needs.
pub fn param_fields<'a>(flow: &'a Flow, param: &str) -> Vec<&'a Ident> {
    let mut fields = Vec::new();
    let mut visit = |path: &'a [Ident]| {
        if let [head, field, ..] = path {
            if head.node == param {
                fields.push(field);
            }
        }
    };
    walk(&flow.body, &mut |stmt| {
        for expr in stmt_exprs(stmt) {
            expr.visit_paths(&mut visit);
        }
    });
    fields
}

/// The expressions directly inside a statement (not in nested blocks).
pub(crate) fn stmt_exprs(stmt: &Stmt) -> Vec<&crate::ast::Expr> {
    match stmt {
        Stmt::Let { query, .. } | Stmt::Exec(query) => query.args.iter().map(|a| &a.node).collect(),
        Stmt::If { cond, .. } => vec![&cond.node],
        Stmt::Reply { bindings, .. } => bindings.iter().map(|b| &b.value.node).collect(),
        Stmt::Set { value, .. } | Stmt::ChooseLanguage(value) => vec![&value.node],
        Stmt::Call { args, .. } => args.iter().map(|a| &a.node).collect(),
        Stmt::RequestPayment {
            amount,
            phone,
            external_id,
            ..
        } => [Some(amount), Some(phone), external_id.as_ref()]
            .into_iter()
            .flatten()
            .map(|e| &e.node)
            .collect(),
        Stmt::Await { .. } | Stmt::Clear { .. } | Stmt::End => Vec::new(),
    }
}

/// Names in scope at flow level for did-you-mean suggestions.
fn names_of(map: &HashMap<String, Span>) -> impl Iterator<Item = &str> {
    map.keys().map(String::as_str)
}

#[cfg(test)]
mod tests;
