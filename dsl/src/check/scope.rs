//! Variables: every name a flow reads must be a parameter, an earlier `let`, or implicit; every
//! `session.key` must be `set` somewhere; statements after `end`/`await`/`call` are unreachable.

use std::collections::HashMap;

use super::{names_of, FlowCx, IMPLICIT_VARIABLES};
use crate::ast::{Block, Expr, Ident, Stmt};
use crate::codes;
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::span::Span;

pub(super) fn check_flow(cx: &FlowCx<'_>, out: &mut Vec<Diagnostic>) {
    let mut scope: HashMap<String, Span> = HashMap::new();
    for param in &cx.flow.params {
        if let Some(first) = scope.insert(param.node.clone(), param.span) {
            out.push(
                Diagnostic::error(
                    codes::DUPLICATE_PARAM,
                    format!("parameter `{}` is declared twice", param.node),
                )
                .at(cx.file, param.span, "declared again here")
                .also(cx.file, first, "first declared here"),
            );
        }
    }
    check_block(cx, &cx.flow.body, &mut scope, out);
}

fn check_block(
    cx: &FlowCx<'_>,
    block: &Block,
    scope: &mut HashMap<String, Span>,
    out: &mut Vec<Diagnostic>,
) {
    let outer = scope.clone();
    let mut finished_by: Option<(&str, Span)> = None;
    for stmt in block {
        if let Some((word, at)) = finished_by.take() {
            out.push(
                Diagnostic::warning(codes::UNREACHABLE_STMT, "unreachable statement")
                    .at(cx.file, stmt.span, "this never runs")
                    .also(cx.file, at, format!("the flow stops at this `{word}`"))
                    .help("remove it, or move it before the statement that ends the flow"),
            );
            break;
        }
        for expr in super::stmt_exprs(&stmt.node) {
            check_expr(cx, expr, scope, out);
        }
        match &stmt.node {
            Stmt::Let { name, .. } => {
                scope.insert(name.node.clone(), name.span);
            }
            Stmt::If {
                then, otherwise, ..
            } => {
                check_block(cx, then, scope, out);
                if let Some(otherwise) = otherwise {
                    check_block(cx, otherwise, scope, out);
                }
            }
            Stmt::End => finished_by = Some(("end", stmt.span)),
            Stmt::Await { .. } => finished_by = Some(("await", stmt.span)),
            Stmt::Call { .. } => finished_by = Some(("call", stmt.span)),
            Stmt::RequestPayment { .. } => finished_by = Some(("request_payment", stmt.span)),
            _ => {}
        }
    }
    *scope = outer;
}

fn check_expr(
    cx: &FlowCx<'_>,
    expr: &Expr,
    scope: &HashMap<String, Span>,
    out: &mut Vec<Diagnostic>,
) {
    expr.visit_paths(&mut |path: &[Ident]| {
        let Some(head) = path.first() else { return };
        if head.node == "session" {
            if let Some(key) = path.get(1) {
                // A file that did not parse may set it: do not guess.
                if !cx.session_keys.contains_key(&key.node) && !cx.context.incomplete_flows {
                    out.push(
                        Diagnostic::error(codes::UNKNOWN_VARIABLE, format!("no flow ever sets session value `{}`", key.node))
                            .at(cx.file, key.span, "never set")
                            .maybe_help(
                                did_you_mean(&key.node, cx.session_keys.keys().map(String::as_str))
                                    .or_else(|| Some(format!("add `set {} = ...` to the flow that collects it", key.node))),
                            ),
                    );
                }
            }
            return;
        }
        if scope.contains_key(&head.node) || IMPLICIT_VARIABLES.contains(&head.node.as_str()) {
            return;
        }
        let candidates = names_of(scope).chain(IMPLICIT_VARIABLES.iter().copied());
        out.push(
            Diagnostic::error(codes::UNKNOWN_VARIABLE, format!("unknown variable `{}`", head.node))
                .at(cx.file, head.span, "not defined at this point of the flow")
                .maybe_help(did_you_mean(&head.node, candidates).or_else(|| {
                    Some("bind it with `let`, pass it as a flow parameter, or use `contact`, `session` or `message`".to_owned())
                })),
        );
    });
}
