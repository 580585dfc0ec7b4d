//! Conversation shape: what a reply asks for is what the flow awaits next. A list or buttons
//! reply must be followed by `await choice`, a location request by `await location`; one never
//! awaited means the person's tap falls through to routing (and opens the main menu), and an
//! `await` of the wrong kind means their answer does.
//!
//! Followed along each path through the flow's `if`s, from its start to an `await`, `end`,
//! `call`, `request_payment` or its last statement. A `call` hands the conversation on (the
//! called flow may await), so a path that calls is not judged; an `await` on a path with no
//! reply of its own is left alone too (the caller may have replied).

use super::{Asks, FlowCx};
use crate::ast::{BinaryOp, Block, Expr, InputKind, Literal, Stmt};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// The last reply on a path that asks for something, since the flow started.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Asked<'a> {
    asks: Asks,
    /// The reply statement.
    at: Span,
    /// Its template.
    template: &'a str,
}

/// The state along a path: whether any reply was sent, the last one that asks, and whether
/// a reply's template is unknown (then nothing is judged: another error says why).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Path<'a> {
    replied: bool,
    /// The last reply statement.
    last: Option<Span>,
    asked: Option<Asked<'a>>,
    unknown: bool,
}

pub(super) fn check_flow(cx: &FlowCx<'_>, out: &mut Vec<Diagnostic>) {
    unread_answer(cx, out);
    if cx.context.incomplete_templates {
        return;
    }
    if let Some(path) = walk(cx, &cx.flow.body, Path::default(), out) {
        // The flow ends by running out of statements: like `end`.
        unanswered(cx, path, cx.flow.name.span, "the flow ends here", out);
    }
}

/// Follows `block` from `path`; the path after it, or `None` when every way through it ended.
fn walk<'a>(
    cx: &FlowCx<'a>,
    block: &'a Block,
    mut path: Path<'a>,
    out: &mut Vec<Diagnostic>,
) -> Option<Path<'a>> {
    for stmt in block {
        match &stmt.node {
            Stmt::Reply { template, .. } => {
                path.replied = true;
                path.last = Some(stmt.span);
                let Some(info) = cx
                    .context
                    .templates
                    .get(&template.node)
                    .filter(|t| !t.opaque)
                else {
                    path.unknown = true;
                    continue;
                };
                let asks = info.asks;
                if asks != Asks::Nothing {
                    path.asked = Some(Asked {
                        asks,
                        at: stmt.span,
                        template: &template.node,
                    });
                }
            }
            Stmt::Await { kind, next } => {
                if awaited(cx, path, kind.node, kind.span, out) {
                    if let Some(asked) = path.asked {
                        choice_ids(cx, asked.template, &next.node, out);
                    }
                }
                return None;
            }
            Stmt::End => {
                unanswered(cx, path, stmt.span, "the conversation ends here", out);
                return None;
            }
            Stmt::Call { .. } | Stmt::RequestPayment { .. } => return None,
            Stmt::If {
                then, otherwise, ..
            } => {
                let after_then = walk(cx, then, path, out);
                let after_else = match otherwise {
                    Some(block) => walk(cx, block, path, out),
                    None => Some(path),
                };
                path = match (after_then, after_else) {
                    (None, None) => return None,
                    (Some(p), None) | (None, Some(p)) => p,
                    // Either way on: the one still asking is the one that can go wrong.
                    (Some(a), Some(b)) => {
                        if a.asked.is_some() {
                            a
                        } else {
                            b
                        }
                    }
                };
            }
            _ => {}
        }
    }
    Some(path)
}

/// A path reaching `end` (or the flow's last statement) with a question nobody awaits.
fn unanswered(cx: &FlowCx<'_>, path: Path, at: Span, label: &str, out: &mut Vec<Diagnostic>) {
    let Some(asked) = path.asked.filter(|_| !path.unknown) else {
        return;
    };
    let (what, wanted) = match asked.asks {
        Asks::Choice => ("a list or buttons reply", "await choice -> flow"),
        Asks::Location => ("a location request", "await location -> flow"),
        Asks::Nothing => return,
    };
    out.push(
        Diagnostic::error(
            codes::REPLY_NOT_AWAITED,
            format!("{what} is never awaited: the person's answer goes to routing instead"),
        )
        .at(cx.file, asked.at, "asks the person for an answer")
        .also(cx.file, at, label)
        .help(format!("follow the reply with `{wanted}`")),
    );
}

/// An `await` of `kind` after what the path asked for; whether it fits a choice that was
/// asked for (so the handler's comparisons can be checked).
fn awaited(
    cx: &FlowCx<'_>,
    path: Path<'_>,
    kind: InputKind,
    at: Span,
    out: &mut Vec<Diagnostic>,
) -> bool {
    if path.unknown {
        return false;
    }
    let expected = match path.asked {
        Some(asked) => asked.asks,
        // Nothing asked, but something said: text was the question.
        None if path.replied => Asks::Nothing,
        // Nothing said in this flow: the caller may have asked.
        None => return false,
    };
    let fits = matches!(
        (expected, kind),
        (Asks::Choice, InputKind::Choice)
            | (Asks::Location, InputKind::Location)
            | (Asks::Nothing, InputKind::Text)
    );
    if fits {
        return expected == Asks::Choice;
    }
    let (asked, instead) = match expected {
        Asks::Choice => ("a list or buttons reply, answered by a tap", "await choice"),
        Asks::Location => (
            "a location request, answered with a location",
            "await location",
        ),
        Asks::Nothing => ("text, answered with text", "await text"),
    };
    let mut diagnostic = Diagnostic::error(
        codes::AWAIT_MISMATCH,
        format!("awaits {} after {asked}", kind.as_str()),
    )
    .at(cx.file, at, "the person's answer will not be this")
    .help(match kind {
        InputKind::Choice => {
            format!("reply with a list or buttons before `await choice`, or use `{instead}`")
        }
        InputKind::Location => {
            format!("reply with a location request before `await location`, or use `{instead}`")
        }
        InputKind::Text => format!("use `{instead}`: a tap or a location is not text"),
    });
    match (path.asked, path.last) {
        (Some(asked), _) => diagnostic = diagnostic.also(cx.file, asked.at, "this reply asks"),
        (None, Some(last)) => diagnostic = diagnostic.also(cx.file, last, "a text reply"),
        (None, None) => {}
    }
    out.push(diagnostic);
    false
}

/// In the flow `handler` that receives the tap on `template`, every `choice.id == "..."` (or
/// `!=`) must name an id the template's rows or buttons send.
fn choice_ids(cx: &FlowCx<'_>, template: &str, handler: &str, out: &mut Vec<Diagnostic>) {
    let Some(ids) = cx
        .context
        .templates
        .get(template)
        .and_then(|t| t.choice_ids.as_ref())
    else {
        return;
    };
    let Some(&(file, flow)) = cx.flows.get(handler) else {
        return;
    };
    let Some(param) = flow.params.first() else {
        return;
    };
    let mut compared = Vec::new();
    super::walk(&flow.body, &mut |stmt| {
        for expr in super::stmt_exprs(stmt) {
            literal_ids(expr, &param.node, &mut compared);
        }
    });
    for (id, span) in compared {
        let already = out.iter().any(|d| {
            d.code == codes::CHOICE_ID_UNKNOWN
                && d.primary()
                    .is_some_and(|l| l.span == span && l.file == file)
        });
        if ids.contains(id) || already {
            continue;
        }
        let sent: Vec<&str> = ids.iter().map(String::as_str).collect();
        let near = ids
            .iter()
            .find(|known| known.eq_ignore_ascii_case(id))
            .map(|known| format!("did you mean `{known}`? ids are compared exactly"))
            .or_else(|| crate::diagnostic::did_you_mean(id, sent.iter().copied()));
        out.push(
            Diagnostic::error(
                codes::CHOICE_ID_UNKNOWN,
                format!(
                    "`{}.id` is never \"{id}\": `{template}` sends {}",
                    param.node,
                    sent.join(", ")
                ),
            )
            .at(file, span, "no row or button has this id")
            .maybe_help(near),
        );
    }
}

/// The string literals `param.id` is compared with (`==` or `!=`) in `expr`.
fn literal_ids<'a>(expr: &'a Expr, param: &str, out: &mut Vec<(&'a str, Span)>) {
    if let Expr::Binary { op, lhs, rhs } = expr {
        if matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
            for (a, b) in [(lhs, rhs), (rhs, lhs)] {
                if let (Expr::Path(path), Expr::Literal(Literal::String(id))) = (&a.node, &b.node) {
                    if matches!(path.as_slice(), [head, field] if head.node == param && field.node == "id")
                    {
                        out.push((id, b.span));
                    }
                }
            }
        }
        literal_ids(&lhs.node, param, out);
        literal_ids(&rhs.node, param, out);
    } else if let Expr::Not(inner) | Expr::IsEmpty { expr: inner, .. } = expr {
        literal_ids(&inner.node, param, out);
    }
}

/// A flow that some `await` hands the person's answer to, and that never reads its parameter:
/// whatever they tap or write, the same thing happens, which is rarely what the question meant.
fn unread_answer(cx: &FlowCx<'_>, out: &mut Vec<Diagnostic>) {
    let [param] = cx.flow.params.as_slice() else {
        return;
    };
    let Some(&(await_file, kind, at)) = cx.awaited.get(cx.flow.name.node.as_str()) else {
        return;
    };
    let mut read = false;
    super::walk(&cx.flow.body, &mut |stmt| {
        for expr in super::stmt_exprs(stmt) {
            expr.visit_paths(&mut |path| {
                read |= path.first().is_some_and(|h| h.node == param.node)
            });
        }
    });
    if read {
        return;
    }
    let (answer, help) = match kind {
        InputKind::Choice => (
            "tap",
            format!(
                "compare `{}.id` with the ids of the rows or buttons, or pass it on",
                param.node
            ),
        ),
        InputKind::Text => ("text", format!("read `{}.text`, or pass it on", param.node)),
        InputKind::Location => (
            "location",
            format!(
                "read `{0}.latitude` and `{0}.longitude`, or pass it on",
                param.node
            ),
        ),
    };
    out.push(
        Diagnostic::warning(
            codes::UNREAD_ANSWER,
            format!(
                "flow `{}` never reads the {answer} it awaited: every answer leads to the same place",
                cx.flow.name.node
            ),
        )
        .at(cx.file, param.span, "never read")
        .also(await_file, at, "the answer is awaited here")
        .help(help),
    );
}
