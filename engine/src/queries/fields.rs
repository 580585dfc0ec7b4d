//! What templates read, checked against what the flows hand them: the columns a query returns
//! (from its description), the known fields of `contact`, `message`, `choice`, `location` and
//! `payment`, and the session values some flow sets.
//!
//! Owns: E323 (a field the value does not have), E324 (rows where one row is read, or one row
//! where a list's rows come from) and E325 (a value that can be absent, printed without a
//! default). Must not describe queries; it takes their descriptions.

use std::collections::{BTreeMap, BTreeSet};

use easymo_dsl::ast::{Expr, QueryKind, Stmt};
use easymo_dsl::check::{walk, FieldRead, TemplateInfo};
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::span::Span;
use easymo_dsl::{codes, Diagnostic, FileId, Sources};

use super::{flow_queries, Column, Descriptions, FlowQuery};
use crate::config::Config;

/// The fields of the values every flow can hand a template, with whether each can be absent.
const CONTACT: &[(&str, bool)] = &[
    ("id", false),
    ("wa_id", true),
    ("user_id", true),
    ("name", true),
    ("language", true),
];
const CHOICE: &[(&str, bool)] = &[("id", false), ("title", false), ("description", true)];
const LOCATION: &[(&str, bool)] = &[
    ("latitude", false),
    ("longitude", false),
    ("name", true),
    ("address", true),
];

/// Every message: `message.text` is what routing read (empty for a tap or a location).
const MESSAGE: &[(&str, bool)] = &[("id", false), ("kind", false), ("text", false)];
/// The payment a `request_payment … -> next` flow receives.
const PAYMENT_REQUESTED: &[(&str, bool)] = &[
    ("reference_id", false),
    ("external_id", false),
    ("amount", false),
    ("currency", false),
    ("phone", false),
    ("status", false),
];
/// The payment the runtime's notices (`payment_successful`, `payment_failed`) are sent with:
/// MoMo's transaction id and failure reason come only with some outcomes.
const PAYMENT_SETTLED: &[(&str, bool)] = &[
    ("amount", false),
    ("currency", false),
    ("external_id", false),
    ("transaction_id", true),
    ("reason", true),
];

/// What a template variable holds, as far as lint can tell.
enum Value<'a> {
    /// A query's rows (`query`) or first row (`query_one`).
    Query {
        query: &'a FlowQuery,
        columns: &'a [Column],
    },
    /// A value with fixed fields.
    Known {
        what: &'static str,
        fields: &'static [(&'static str, bool)],
    },
    /// `session`: the values flows `set`. Any can be cleared, but a template that reads one is
    /// sent after it is set far more often than not; only the names are checked.
    Session(&'a BTreeSet<String>),
}

impl Value<'_> {
    /// The field's name and whether it can be absent, or the names it does have.
    fn field(&self, name: &str) -> Result<bool, Vec<String>> {
        let fields: Vec<(String, bool)> = match self {
            Value::Query { columns, .. } => columns
                .iter()
                .map(|c| (c.name.clone(), c.nullable == Some(true)))
                .collect(),
            Value::Known { fields, .. } => {
                fields.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect()
            }
            Value::Session(keys) => keys.iter().map(|k| (k.clone(), false)).collect(),
        };
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, absent)| *absent)
            .ok_or_else(|| fields.into_iter().map(|(n, _)| n).collect())
    }

    fn describe(&self) -> String {
        match self {
            Value::Query { query, .. } => format!(
                "the {} of the query in flow `{}`",
                if query.kind == QueryKind::One {
                    "row"
                } else {
                    "rows"
                },
                query.flow
            ),
            Value::Known { what, .. } => format!("a {what}"),
            Value::Session(_) => "the session".to_owned(),
        }
    }

    fn is_rows(&self) -> bool {
        matches!(self, Value::Query { query, .. } if query.kind == QueryKind::Rows)
    }
}

/// One reply statement: the template and what each variable is bound to.
struct Reply<'a> {
    template: &'a str,
    facts: &'a TemplateInfo,
    file: FileId,
    bound: BTreeMap<String, (Value<'a>, Span)>,
    sources: &'a Sources,
    /// Every key some flow `set`s.
    session_keys: &'a BTreeSet<String>,
}

impl Reply<'_> {
    /// Where the template text reads `shown`: the words themselves when they are written out in
    /// the YAML as in the template, else the whole text.
    fn place(&self, read: &FieldRead, shown: &str) -> Span {
        let text = self.sources.text(read.file);
        text.get(read.span.start..read.span.end)
            .and_then(|t| t.find(shown))
            .map_or(read.span, |at| Span {
                start: read.span.start + at,
                end: read.span.start + at + shown.len(),
            })
    }
}

/// Checks every reply's template reads against the values bound to it.
pub fn check(config: &Config, sources: &Sources, descriptions: &Descriptions) -> Vec<Diagnostic> {
    let queries = flow_queries(config, sources);
    let mut found = Found::default();
    let session_keys: BTreeSet<String> =
        easymo_dsl::check::set_keys(config.flows.files.iter().flat_map(|(_, ast)| &ast.flows))
            .into_keys()
            .collect();
    runtime_payment_notices(config, sources, &session_keys, &mut found);
    for (name, ast) in &config.flows.files {
        let Some(file) = sources.find(name) else {
            continue;
        };
        for flow in &ast.flows {
            let results: BTreeMap<&str, Value<'_>> = queries
                .iter()
                .filter(|q| q.file == file && q.flow == flow.name.node)
                .filter_map(|q| {
                    let columns = &descriptions.get(&q.key())?.columns;
                    Some((q.binding.as_deref()?, Value::Query { query: q, columns }))
                })
                .collect();
            let params: BTreeSet<&str> = flow.params.iter().map(|p| p.node.as_str()).collect();
            walk(&flow.body, &mut |stmt| {
                let Stmt::Reply { template, bindings } = stmt else {
                    return;
                };
                let Some(facts) = config.template_facts.get(&template.node) else {
                    return;
                };
                if facts.opaque {
                    return;
                }
                let bound = bindings
                    .iter()
                    .filter_map(|b| {
                        let value = value_of(&b.value.node, &results, &params)?;
                        Some((b.name.node.clone(), (value, b.value.span)))
                    })
                    .collect();
                let reply = Reply {
                    template: &template.node,
                    facts,
                    file,
                    bound,
                    sources,
                    session_keys: &session_keys,
                };
                check_reply(&reply, &mut found);
            });
        }
    }
    found.diagnostics
}

/// The payment notices the runtime sends once MoMo settles a payment, read against the payment
/// it binds them with.
fn runtime_payment_notices(
    config: &Config,
    sources: &Sources,
    session_keys: &BTreeSet<String>,
    found: &mut Found,
) {
    use crate::config::templates::{PAYMENT_FAILED_TEMPLATE, PAYMENT_SUCCESSFUL_TEMPLATE};
    for name in [PAYMENT_SUCCESSFUL_TEMPLATE, PAYMENT_FAILED_TEMPLATE] {
        let Some(facts) = config.template_facts.get(name).filter(|f| !f.opaque) else {
            continue;
        };
        let Some(file) = facts.reads.first().map(|read| read.file) else {
            continue;
        };
        let payment = Value::Known {
            what: "settled payment",
            fields: PAYMENT_SETTLED,
        };
        let reply = Reply {
            template: name,
            facts,
            file,
            bound: BTreeMap::from([("payment".to_owned(), (payment, Span::new(0, 0)))]),
            sources,
            session_keys,
        };
        check_reply(&reply, found);
    }
}

/// What `expr` holds, when it is a whole query result or a value with known fields.
fn value_of<'a>(
    expr: &Expr,
    results: &BTreeMap<&str, Value<'a>>,
    params: &BTreeSet<&str>,
) -> Option<Value<'a>> {
    let Expr::Path(path) = expr else {
        return None;
    };
    let [name] = path.as_slice() else {
        return None;
    };
    let name = name.node.as_str();
    if let Some(Value::Query { query, columns }) = results.get(name) {
        return Some(Value::Query { query, columns });
    }
    known(name, params)
}

/// The values with fixed fields: `contact` and `message` always; `choice`, `location` and
/// `payment` as flow parameters.
fn known(name: &str, params: &BTreeSet<&str>) -> Option<Value<'static>> {
    let (what, fields) = match name {
        "contact" => ("contact", CONTACT),
        "message" => ("message", MESSAGE),
        "choice" if params.contains(name) => ("choice", CHOICE),
        "location" if params.contains(name) => ("shared location", LOCATION),
        "payment" if params.contains(name) => ("requested payment", PAYMENT_REQUESTED),
        _ => return None,
    };
    Some(Value::Known { what, fields })
}

#[derive(Default)]
struct Found {
    diagnostics: Vec<Diagnostic>,
    /// A template sent from several places with the same values is reported once.
    seen: BTreeSet<(String, Vec<String>, &'static str)>,
}

impl Found {
    /// Keeps `d` unless the same `code` was already reported for `what` in this template.
    fn push(&mut self, reply: &Reply<'_>, what: &[String], code: &'static str, d: Diagnostic) {
        if self
            .seen
            .insert((reply.template.to_owned(), what.to_vec(), code))
        {
            self.diagnostics.push(d);
        }
    }
}

fn check_reply(reply: &Reply<'_>, found: &mut Found) {
    for from in &reply.facts.rows_from {
        if let Some((value @ Value::Query { .. }, span)) = reply.bound.get(from) {
            if !value.is_rows() {
                let diagnostic = Diagnostic::error(
                    codes::ROWS_MISMATCH,
                    format!(
                        "template `{}` lists the rows of `{from}`, but it is one row",
                        reply.template
                    ),
                )
                .at(reply.file, *span, "`query_one` gives a single row")
                .help("use `query` for the rows of a list");
                found.push(
                    reply,
                    std::slice::from_ref(from),
                    codes::ROWS_MISMATCH,
                    diagnostic,
                );
            }
        }
    }
    let implicit = BTreeSet::new();
    for read in &reply.facts.reads {
        let [root, field, ..] = read.path.as_slice() else {
            continue;
        };
        let targets: Vec<(&str, &Value<'_>, Option<Span>)> = if read.per_row && root == "row" {
            reply
                .facts
                .rows_from
                .iter()
                .filter_map(|f| reply.bound.get(f).map(|(v, s)| (f.as_str(), v, Some(*s))))
                .filter(|(_, v, _)| v.is_rows())
                .collect()
        } else if let Some((value, span)) = reply.bound.get(root) {
            // The runtime's own bindings have no place in a flow to point at.
            let span = Some(*span).filter(|s| s.end > 0);
            vec![(root.as_str(), value, span)]
        } else if root == "session" {
            let value = Value::Session(reply.session_keys);
            check_read(reply, read, (root, field), &value, None, found);
            continue;
        } else if let Some(value) = known(root, &implicit) {
            // `contact` needs no binding: every template can read it.
            check_read(reply, read, (root, field), &value, None, found);
            continue;
        } else {
            continue;
        };
        for (name, value, span) in targets {
            check_read(reply, read, (name, field), value, span, found);
        }
    }
}

fn check_read(
    reply: &Reply<'_>,
    read: &FieldRead,
    (name, field): (&str, &str),
    value: &Value<'_>,
    bound_at: Option<Span>,
    found: &mut Found,
) {
    let shown = read.path.join(".");
    let place = reply.place(read, &shown);
    let also = |d: Diagnostic| match bound_at {
        Some(span) => d.also(
            reply.file,
            span,
            format!("`{name}` is {}", value.describe()),
        ),
        None => d,
    };
    if value.is_rows() && !read.per_row {
        let diagnostic = Diagnostic::error(
            codes::ROWS_MISMATCH,
            format!(
                "template `{}` reads `{name}` as one row, but it is a list of rows",
                reply.template
            ),
        )
        .at(read.file, place, format!("`{shown}` read here"))
        .help("use `query_one` for a single row, or list the rows with `rows_from`");
        found.push(
            reply,
            &[name.to_owned()],
            codes::ROWS_MISMATCH,
            also(diagnostic),
        );
        return;
    }
    match value.field(field) {
        Ok(true) if !read.guarded => {
            let why = match value {
                Value::Query { .. } => format!("column `{field}` can be null"),
                Value::Known { what, .. } => format!("a {what}'s `{field}` can be absent"),
                Value::Session(_) => format!("session value `{field}` can be absent"),
            };
            let diagnostic = Diagnostic::error(
                codes::ABSENT_WITHOUT_DEFAULT,
                format!(
                    "template `{}` prints `{shown}`, which can be absent",
                    reply.template
                ),
            )
            .at(read.file, place, format!("{why}: this would print `none`"))
            .help(format!(
                "give it a default: `{{{{ {shown} | default(\"…\") }}}}`, or print it under `{{% if {shown} %}}`"
            ));
            found.push(
                reply,
                &read.path,
                codes::ABSENT_WITHOUT_DEFAULT,
                also(diagnostic),
            );
        }
        Ok(_) => {}
        Err(names) => {
            let (missing, label, has) = match value {
                Value::Session(_) => (
                    format!("no flow sets `{field}`"),
                    "never set".to_owned(),
                    format!("flows set: {}", names.join(", ")),
                ),
                _ => (
                    format!("`{name}` has no field `{field}`"),
                    format!("`{field}` is not there"),
                    format!("`{name}` has: {}", names.join(", ")),
                ),
            };
            let diagnostic = Diagnostic::error(
                codes::UNKNOWN_FIELD_READ,
                format!(
                    "template `{}` reads `{shown}`, but {missing}",
                    reply.template
                ),
            )
            .at(read.file, place, label)
            .note(has)
            .maybe_help(did_you_mean(field, names.iter().map(String::as_str)));
            found.push(
                reply,
                &read.path,
                codes::UNKNOWN_FIELD_READ,
                also(diagnostic),
            );
        }
    }
}
