//! References: `call`/`await` targets exist and take the right number of values; replies name
//! declared templates and bind every variable those templates read.

use super::FlowCx;
use crate::ast::{Binding, Ident, InputKind, Stmt};
use crate::codes;
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::span::Spanned;

pub(super) fn check_flow(cx: &FlowCx<'_>, out: &mut Vec<Diagnostic>) {
    super::walk(&cx.flow.body, &mut |stmt| match stmt {
        Stmt::Call { flow, args } => check_call(cx, flow, args.len(), out),
        // The next flow receives the payment.
        Stmt::RequestPayment { next, .. } => check_call(cx, next, 1, out),
        Stmt::Await { kind, next } => check_await(cx, kind, next, out),
        Stmt::Reply { template, bindings } => check_reply(cx, template, bindings, out),
        _ => {}
    });
}

fn unknown_flow(cx: &FlowCx<'_>, name: &Ident) -> Diagnostic {
    Diagnostic::error(codes::UNKNOWN_FLOW, format!("unknown flow `{}`", name.node))
        .at(cx.file, name.span, "no flow has this name")
        .maybe_help(did_you_mean(
            &name.node,
            cx.index.keys().map(String::as_str),
        ))
}

fn check_call(cx: &FlowCx<'_>, flow: &Ident, given: usize, out: &mut Vec<Diagnostic>) {
    let Some(target) = cx.index.get(&flow.node) else {
        if !cx.context.incomplete_flows {
            out.push(unknown_flow(cx, flow));
        }
        return;
    };
    if target.arity != given {
        out.push(
            Diagnostic::error(
                codes::ARITY,
                format!(
                    "flow `{}` takes {} but {} given",
                    flow.node,
                    plural(target.arity, "value"),
                    given
                ),
            )
            .at(cx.file, flow.span, "wrong number of values")
            .also(target.file, target.name_span, "defined here"),
        );
    }
}

fn check_await(
    cx: &FlowCx<'_>,
    kind: &Spanned<InputKind>,
    next: &Ident,
    out: &mut Vec<Diagnostic>,
) {
    let Some(target) = cx.index.get(&next.node) else {
        if !cx.context.incomplete_flows {
            out.push(unknown_flow(cx, next));
        }
        return;
    };
    if target.arity != 1 {
        out.push(
            Diagnostic::error(
                codes::AWAIT_TARGET,
                format!(
                    "flow `{}` must take exactly one parameter to receive the awaited {}",
                    next.node,
                    kind.node.as_str()
                ),
            )
            .at(
                cx.file,
                next.span,
                format!("receives the user's {}", kind.node.as_str()),
            )
            .also(
                target.file,
                target.name_span,
                format!("takes {}", plural(target.arity, "parameter")),
            )
            .help(format!(
                "declare it as `flow {}(input) {{ ... }}`",
                next.node
            )),
        );
    }
}

fn check_reply(cx: &FlowCx<'_>, template: &Ident, bindings: &[Binding], out: &mut Vec<Diagnostic>) {
    let Some(info) = cx.context.templates.get(&template.node) else {
        if cx.context.incomplete_templates {
            return;
        }
        out.push(
            Diagnostic::error(
                codes::UNKNOWN_TEMPLATE,
                format!("unknown template `{}`", template.node),
            )
            .at(
                cx.file,
                template.span,
                "not declared under `templates:` in routes.yaml",
            )
            .maybe_help(did_you_mean(
                &template.node,
                cx.context.templates.keys().map(String::as_str),
            )),
        );
        return;
    };
    if info.opaque {
        return;
    }
    for variable in &info.variables {
        if !bindings.iter().any(|b| &b.name.node == variable) {
            if let Some(diagnostic) = misspelt_read(cx, template, info, bindings, variable) {
                // A template sent from several replies has its typo once.
                let primary = diagnostic.primary().map(|l| (l.file, l.span));
                if !out.iter().any(|d| {
                    d.code == diagnostic.code && d.primary().map(|l| (l.file, l.span)) == primary
                }) {
                    out.push(diagnostic);
                }
                continue;
            }
            out.push(
                Diagnostic::error(
                    codes::UNBOUND_TEMPLATE_VAR,
                    format!(
                        "template `{}` reads `{variable}` but this reply never binds it",
                        template.node
                    ),
                )
                .at(cx.file, template.span, format!("`{variable}` is not bound"))
                .help(format!("add `with {variable} = ...` to the reply")),
            );
        }
    }
    for binding in bindings {
        if !info.variables.contains(&binding.name.node) {
            out.push(
                Diagnostic::warning(
                    codes::UNUSED_BINDING,
                    format!(
                        "template `{}` never uses `{}`",
                        template.node, binding.name.node
                    ),
                )
                .at(cx.file, binding.name.span, "bound but unused")
                .maybe_help(did_you_mean(
                    &binding.name.node,
                    info.variables.iter().map(String::as_str),
                )),
            );
        }
    }
}

/// A variable the template reads that is one letter or two from a name it could have meant
/// (a bound value, `row` in a list's row, `contact`, `session`, `message`): the typo is in the
/// template, so that is where it is reported.
fn misspelt_read(
    cx: &FlowCx<'_>,
    template: &Ident,
    info: &super::TemplateInfo,
    bindings: &[Binding],
    variable: &str,
) -> Option<Diagnostic> {
    let read = info
        .reads
        .iter()
        .find(|r| r.path.first().is_some_and(|root| root == variable))?;
    let mut names: Vec<&str> = bindings.iter().map(|b| b.name.node.as_str()).collect();
    names.extend(super::IMPLICIT_VARIABLES);
    if read.per_row {
        names.push("row");
    }
    let meant = did_you_mean(variable, names.iter().copied())?;
    let exact = read.span.end - read.span.start == read.path.join(".").len();
    let at = if exact {
        crate::span::Span::new(read.span.start, read.span.start + variable.len())
    } else {
        read.span
    };
    Some(
        Diagnostic::error(
            codes::UNBOUND_TEMPLATE_VAR,
            format!(
                "template `{}` reads `{variable}`, which nothing binds",
                template.node
            ),
        )
        .at(read.file, at, format!("`{variable}` is not bound"))
        .also(cx.file, template.span, "sent here")
        .help(meant),
    )
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
