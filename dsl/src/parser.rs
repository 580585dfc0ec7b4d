//! Source text → typed AST, with errors in plain words.
//!
//! Owns: the pest grammar (`grammar.pest`), lowering pest pairs into `ast` types with byte spans,
//! and turning pest's "expected rule" errors into sentences a product person can act on. Must not
//! check meaning (names, references, arity): that is `check`'s job.

use std::sync::LazyLock;
use std::time::Duration;

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;

use crate::ast::*;
use crate::codes;
use crate::diagnostic::{Diagnostic, FileId};
use crate::span::{Span, Spanned};

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct Grammar;

/// A syntax error with a span relative to the parsed text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub span: Span,
    /// `expected …, found …`
    pub message: String,
    /// What the writer most likely meant, when the mistake is a common one (`=` for `==`,
    /// `elif` for `else if`).
    pub hint: Option<String>,
    /// What the primary span is (empty: the message says it).
    pub label: String,
    /// More places that explain it (the opener of an unclosed block, where the parser gave
    /// up), each with its label.
    pub labels: Vec<(Span, String)>,
}

impl SyntaxError {
    /// Turns the error into a diagnostic in `file`, shifting its span by `offset` bytes.
    pub fn into_diagnostic(self, code: codes::Code, file: FileId, offset: usize) -> Diagnostic {
        let mut diagnostic = Diagnostic::error(code, self.message)
            .at(file, self.span.shift(offset), self.label)
            .maybe_help(self.hint);
        for (span, label) in self.labels {
            diagnostic = diagnostic.also(file, span.shift(offset), label);
        }
        diagnostic
    }
}

/// Parses a whole `.flow` file. On error, reports the first syntax error in `file`.
pub fn parse_flow_file(text: &str, file: FileId) -> Result<FlowFile, Diagnostic> {
    parse_flows(text).map_err(|e| {
        let hinted = e.hint.is_some();
        let diagnostic = e.into_diagnostic(codes::FLOW_SYNTAX, file, 0);
        if hinted {
            diagnostic
        } else {
            diagnostic
                .help("the flow language is described in README.md, section \"The flow language\"")
        }
    })
}

/// Parses a whole `.flow` text.
pub fn parse_flows(text: &str) -> Result<FlowFile, SyntaxError> {
    check_nesting(text)?;
    let mut pairs = Grammar::parse(Rule::file, text).map_err(|e| {
        let gave_up = match e.location {
            InputLocation::Pos(p) | InputLocation::Span((p, _)) => p,
        };
        unclosed_block(text, gave_up).unwrap_or_else(|| syntax_error(text, e))
    })?;
    let file = pairs.next().map(Pair::into_inner);
    let flows = file
        .into_iter()
        .flatten()
        .filter(|p| p.as_rule() == Rule::flow)
        .map(lower_flow)
        .collect();
    Ok(FlowFile { flows })
}

/// When a file has a `{` never closed, that is the error to report: the parser only notices it
/// later, at the next `flow` or at the end of the file.
fn unclosed_block(text: &str, gave_up: usize) -> Option<SyntaxError> {
    // An error before the opener is another mistake, and the one to report first.
    let found = unclosed::unclosed_brace(text).filter(|found| gave_up > found.opener.start)?;
    let mut labels = Vec::new();
    if let Some(closer) = found.misaligned_closer {
        labels.push((
            closer,
            "this `}` closes it, but lines up with an outer block".to_owned(),
        ));
    }
    let end = gave_up + found_len(text, gave_up);
    labels.push((
        Span::new(gave_up, end),
        "the parser gave up here".to_owned(),
    ));
    Some(SyntaxError {
        span: found.opener,
        message: "unclosed `{`".to_owned(),
        label: "this `{` is never closed".to_owned(),
        hint: Some(
            "add the missing `}` where this block ends, at the indentation of the line that opens it"
                .to_owned(),
        ),
        labels,
    })
}

mod unclosed;

/// Deepest `{`/`(` nesting accepted. The parser recurses once per level, and no real flow comes
/// near this; without a limit a hostile or broken file could overflow the stack.
pub const MAX_NESTING: usize = 64;

fn check_nesting(text: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    for (i, c) in unclosed::code_chars(text) {
        match c {
            '{' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(SyntaxError {
                        span: Span::new(i, i + 1),
                        message: format!(
                            "blocks and parentheses are nested more than {MAX_NESTING} levels deep"
                        ),
                        hint: None,
                        label: String::new(),
                        labels: Vec::new(),
                    });
                }
            }
            '}' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses an alert condition such as `error_rate > 5% for 15m`.
pub fn parse_condition(text: &str) -> Result<Condition, SyntaxError> {
    let pairs = Grammar::parse(Rule::condition, text).map_err(|e| syntax_error(text, e))?;
    let mut metric = None;
    let mut scope = None;
    let mut op = None;
    let mut threshold = None;
    let mut unit = None;
    let mut sustained = None;
    for pair in pairs.flatten() {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::metric => metric = Some(Spanned::new(pair.as_str().to_owned(), span)),
            Rule::scope => scope = Some(Spanned::new(pair.as_str().to_owned(), span)),
            Rule::cmp_op => {
                let parsed = match pair.as_str() {
                    ">=" => CompareOp::Ge,
                    "<=" => CompareOp::Le,
                    "==" => CompareOp::Eq,
                    "!=" => CompareOp::Ne,
                    "<" => CompareOp::Lt,
                    _ => CompareOp::Gt,
                };
                op = Some(Spanned::new(parsed, span));
            }
            Rule::number => {
                threshold = Some(Spanned::new(
                    pair.as_str().parse().unwrap_or(f64::NAN),
                    span,
                ))
            }
            Rule::unit => {
                let parsed = match pair.as_str() {
                    "%" => Unit::Percent,
                    "ms" => Unit::Millis,
                    "s" => Unit::Seconds,
                    "m" => Unit::Minutes,
                    _ => Unit::Hours,
                };
                unit = Some(Spanned::new(parsed, span));
            }
            Rule::duration => sustained = Some(Spanned::new(duration_value(pair.as_str()), span)),
            _ => {}
        }
    }
    match (metric, op, threshold) {
        (Some(metric), Some(op), Some(threshold)) => Ok(Condition {
            metric,
            scope,
            op,
            threshold,
            unit,
            sustained,
        }),
        _ => Err(SyntaxError {
            span: Span::new(0, text.len()),
            message: "expected `metric [on endpoint] op value[unit] [for duration]`".to_owned(),
            hint: None,
            label: String::new(),
            labels: Vec::new(),
        }),
    }
}

/// Parses a duration such as `60s`, `5m`, `1h30m` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, SyntaxError> {
    Grammar::parse(Rule::duration_only, text).map_err(|e| syntax_error(text, e))?;
    Ok(duration_value(text))
}

fn duration_value(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().unwrap_or(u64::MAX);
        digits.clear();
        let part = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(n)
            }
            's' => Duration::from_secs(n),
            'm' => Duration::from_secs(n.saturating_mul(60)),
            'h' => Duration::from_secs(n.saturating_mul(3600)),
            _ => Duration::from_secs(n.saturating_mul(86_400)),
        };
        total = total.saturating_add(part);
    }
    total
}

fn lower_flow(pair: Pair<'_, Rule>) -> Flow {
    let span = span_of(&pair);
    let mut name = None;
    let mut params = Vec::new();
    let mut body = Vec::new();
    for inner in pair.into_inner() {
        match inner.as_rule() {
            Rule::ident => name = Some(ident(&inner)),
            Rule::params => {
                params = inner
                    .into_inner()
                    .filter(|p| p.as_rule() == Rule::ident)
                    .map(|p| ident(&p))
                    .collect()
            }
            Rule::block => body = lower_block(inner),
            _ => {}
        }
    }
    Flow {
        name: name.unwrap_or_else(|| Spanned::new(String::new(), span)),
        params,
        body,
        span,
    }
}

fn lower_block(pair: Pair<'_, Rule>) -> Block {
    pair.into_inner()
        .filter(|p| !is_keyword(p.as_rule()))
        .map(lower_stmt)
        .collect()
}

fn lower_stmt(pair: Pair<'_, Rule>) -> Spanned<Stmt> {
    let span = span_of(&pair);
    let rule = pair.as_rule();
    if rule == Rule::if_stmt {
        return lower_if(pair);
    }
    let inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule()));
    // A statement with a missing part only comes from a grammar change; `End` keeps the tree
    // whole and the checker never sees it from a parsed file.
    let stmt = lower_simple_stmt(rule, inner).unwrap_or(Stmt::End);
    Spanned::new(stmt, span)
}

/// Every statement but `if`, from its parts with keywords removed.
fn lower_simple_stmt<'i>(
    rule: Rule,
    mut inner: impl Iterator<Item = Pair<'i, Rule>>,
) -> Option<Stmt> {
    Some(match rule {
        Rule::let_stmt => Stmt::Let {
            name: ident(&inner.next()?),
            query: lower_query(inner.next()?),
        },
        Rule::exec_stmt => {
            let sql = string(&inner.next()?);
            let args = inner.next().map(lower_args).unwrap_or_default();
            Stmt::Exec(Query {
                kind: QueryKind::Exec,
                sql,
                args,
                cache: None,
            })
        }
        Rule::reply_stmt => {
            let template = ident(&inner.next()?);
            let bindings = inner
                .next()
                .map(|b| {
                    b.into_inner()
                        .filter(|p| p.as_rule() == Rule::binding)
                        .map(lower_binding)
                        .collect()
                })
                .unwrap_or_default();
            Stmt::Reply { template, bindings }
        }
        Rule::await_stmt => {
            let p = inner.next()?;
            let kind = match p.as_str() {
                "text" => InputKind::Text,
                "choice" => InputKind::Choice,
                _ => InputKind::Location,
            };
            Stmt::Await {
                kind: Spanned::new(kind, span_of(&p)),
                next: ident(&inner.next()?),
            }
        }
        Rule::set_stmt => Stmt::Set {
            name: ident(&inner.next()?),
            value: lower_expr(inner.next()?),
        },
        Rule::clear_stmt => Stmt::Clear {
            name: ident(&inner.next()?),
        },
        Rule::choose_language_stmt => Stmt::ChooseLanguage(lower_expr(inner.next()?)),
        Rule::request_payment_stmt => {
            let parts: Vec<Pair<'_, Rule>> = inner.filter(|p| p.as_rule() != Rule::comma).collect();
            let next = parts
                .iter()
                .find(|p| p.as_rule() == Rule::ident)
                .map(ident)?;
            let mut exprs = parts
                .into_iter()
                .filter(|p| p.as_rule() == Rule::expr)
                .map(lower_expr);
            Stmt::RequestPayment {
                amount: exprs.next()?,
                phone: exprs.next()?,
                external_id: exprs.next(),
                next,
            }
        }
        Rule::call_stmt => {
            let flow = ident(&inner.next()?);
            let args = inner.next().map(lower_args).unwrap_or_default();
            Stmt::Call { flow, args }
        }
        _ => return None,
    })
}

fn lower_if(pair: Pair<'_, Rule>) -> Spanned<Stmt> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule()));
    let cond = inner.next().map(lower_expr);
    let then = inner.next().map(lower_block).unwrap_or_default();
    let otherwise = inner.next().and_then(|else_clause| {
        let branch = else_clause
            .into_inner()
            .find(|p| !is_keyword(p.as_rule()))?;
        Some(match branch.as_rule() {
            Rule::if_stmt => vec![lower_if(branch)],
            _ => lower_block(branch),
        })
    });
    let cond = cond.unwrap_or_else(|| Spanned::new(Expr::Literal(Literal::Bool(false)), span));
    Spanned::new(
        Stmt::If {
            cond,
            then,
            otherwise,
        },
        span,
    )
}

fn lower_query(pair: Pair<'_, Rule>) -> Query {
    let mut kind = QueryKind::Rows;
    let mut sql = Spanned::new(String::new(), span_of(&pair));
    let mut args = Vec::new();
    let mut cache = None;
    for inner in pair.into_inner() {
        match inner.as_rule() {
            Rule::query_kind if inner.as_str() == "query_one" => kind = QueryKind::One,
            Rule::string => sql = string(&inner),
            Rule::query_args => args = lower_args(inner),
            Rule::cache_clause => {
                let span = span_of(&inner);
                let duration = inner
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::duration)
                    .map(|p| duration_value(p.as_str()))
                    .unwrap_or_default();
                cache = Some(Spanned::new(duration, span));
            }
            _ => {}
        }
    }
    Query {
        kind,
        sql,
        args,
        cache,
    }
}

fn lower_args(pair: Pair<'_, Rule>) -> Vec<Spanned<Expr>> {
    pair.into_inner()
        .filter(|p| p.as_rule() == Rule::expr)
        .map(lower_expr)
        .collect()
}

fn lower_binding(pair: Pair<'_, Rule>) -> Binding {
    let span = span_of(&pair);
    let mut inner = pair.into_inner().filter(|p| !is_keyword(p.as_rule()));
    let name = inner
        .next()
        .map(|p| ident(&p))
        .unwrap_or_else(|| Spanned::new(String::new(), span));
    let value = inner
        .next()
        .map(lower_expr)
        .unwrap_or_else(|| Spanned::new(Expr::Literal(Literal::Null), span));
    Binding { name, value }
}

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::prefix(Rule::op_not))
        .op(Op::postfix(Rule::op_is_empty) | Op::postfix(Rule::op_is_not_empty))
});

fn lower_expr(pair: Pair<'_, Rule>) -> Spanned<Expr> {
    match pair.as_rule() {
        Rule::expr => pratt(pair.into_inner()),
        _ => lower_primary(pair),
    }
}

fn pratt(pairs: Pairs<'_, Rule>) -> Spanned<Expr> {
    PRATT
        .map_primary(lower_primary)
        .map_prefix(|op, rhs| {
            let span = span_of(&op).to(rhs.span);
            Spanned::new(Expr::Not(Box::new(rhs)), span)
        })
        .map_postfix(|lhs, op| {
            let span = lhs.span.to(span_of(&op));
            let negated = op.as_rule() == Rule::op_is_not_empty;
            Spanned::new(
                Expr::IsEmpty {
                    expr: Box::new(lhs),
                    negated,
                },
                span,
            )
        })
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::op_or => BinaryOp::Or,
                Rule::op_and => BinaryOp::And,
                Rule::op_eq => BinaryOp::Eq,
                Rule::op_ne => BinaryOp::Ne,
                Rule::op_lt => BinaryOp::Lt,
                Rule::op_le => BinaryOp::Le,
                Rule::op_gt => BinaryOp::Gt,
                _ => BinaryOp::Ge,
            };
            let span = lhs.span.to(rhs.span);
            Spanned::new(
                Expr::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            )
        })
        .parse(pairs)
}

fn lower_primary(pair: Pair<'_, Rule>) -> Spanned<Expr> {
    let span = span_of(&pair);
    let expr = match pair.as_rule() {
        Rule::expr => return pratt(pair.into_inner()),
        Rule::string => Expr::Literal(Literal::String(string(&pair).node)),
        Rule::number => Expr::Literal(Literal::Number(pair.as_str().parse().unwrap_or(f64::NAN))),
        Rule::boolean => Expr::Literal(Literal::Bool(pair.as_str() == "true")),
        Rule::null => Expr::Literal(Literal::Null),
        Rule::path => Expr::Path(pair.into_inner().map(|p| ident(&p)).collect()),
        _ => Expr::Literal(Literal::Null),
    };
    Spanned::new(expr, span)
}

/// The pair's span without the trailing whitespace pest's implicit skipping leaves inside
/// rules that end with an optional part (`reply t` followed by a newline).
fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    let text = pair.as_str();
    Span::new(span.start(), span.start() + text.trim_end().len())
}

fn ident(pair: &Pair<'_, Rule>) -> Ident {
    Spanned::new(pair.as_str().to_owned(), span_of(pair))
}

fn string(pair: &Pair<'_, Rule>) -> Spanned<String> {
    let raw = pair.as_str();
    let inner = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Spanned::new(out, span_of(pair))
}

/// Keywords and punctuation: tokens that carry no value of their own in the AST.
fn is_keyword(rule: Rule) -> bool {
    describe_keyword(rule).is_some()
        || matches!(
            rule,
            Rule::close_brace | Rule::close_paren | Rule::assign | Rule::arrow
        )
}

/// The words that can start a statement, reported together as "a statement".
const STATEMENT_STARTS: [Rule; 11] = [
    Rule::kw_let,
    Rule::kw_exec,
    Rule::kw_if,
    Rule::kw_reply,
    Rule::kw_await,
    Rule::kw_set,
    Rule::kw_clear,
    Rule::kw_call,
    Rule::kw_request_payment,
    Rule::kw_choose_language,
    Rule::kw_end,
];

fn describe_keyword(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::kw_flow => "`flow`",
        Rule::kw_let => "`let`",
        Rule::kw_query => "`query`",
        Rule::kw_query_one => "`query_one`",
        Rule::kw_cached => "`cached`",
        Rule::kw_exec => "`exec`",
        Rule::kw_with => "`with`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_reply => "`reply`",
        Rule::kw_await => "`await`",
        Rule::kw_text => "`text`",
        Rule::kw_choice => "`choice`",
        Rule::kw_location => "`location`",
        Rule::kw_set => "`set`",
        Rule::kw_clear => "`clear`",
        Rule::kw_call => "`call`",
        Rule::kw_end => "`end`",
        Rule::kw_request_payment => "`request_payment`",
        Rule::kw_choose_language => "`choose_language`",
        Rule::kw_and => "`and`",
        Rule::kw_or => "`or`",
        Rule::kw_not => "`not`",
        Rule::kw_is => "`is`",
        Rule::kw_empty => "`empty`",
        Rule::kw_true => "`true`",
        Rule::kw_false => "`false`",
        Rule::kw_null => "`null`",
        Rule::kw_for => "`for`",
        Rule::kw_on => "`on`",
        _ => return None,
    })
}

/// Plain words for what the parser expected at a point.
fn describe(rule: Rule) -> &'static str {
    // After a complete value, "and", "or" and "is" could follow: say "an operator" once.
    if matches!(rule, Rule::kw_and | Rule::kw_or | Rule::kw_is) {
        return "an operator";
    }
    if let Some(word) = describe_keyword(rule) {
        return word;
    }
    match rule {
        Rule::EOI => "end of input",
        Rule::flow | Rule::file => "`flow`",
        Rule::ident => "a name",
        Rule::field => "a field name",
        Rule::params => "`(`",
        Rule::close_brace => "`}`",
        Rule::close_paren => "`)`",
        Rule::assign => "`=`",
        Rule::arrow => "`->`",
        Rule::block => "`{`",
        Rule::let_stmt
        | Rule::exec_stmt
        | Rule::if_stmt
        | Rule::reply_stmt
        | Rule::await_stmt
        | Rule::set_stmt
        | Rule::clear_stmt
        | Rule::call_stmt
        | Rule::request_payment_stmt
        | Rule::choose_language_stmt
        | Rule::end_stmt => {
            "a statement (let, exec, if, reply, await, set, clear, call, request_payment, choose_language, end)"
        }
        Rule::query | Rule::query_kind => "`query` or `query_one`",
        Rule::query_args | Rule::bindings => "`with`",
        Rule::cache_clause => "`cached for <duration>`",
        Rule::comma => "`,`",
        Rule::binding => "`name = value`",
        Rule::input_kind => "`text`, `choice` or `location`",
        Rule::call_args => "`(`",
        Rule::else_clause => "`else`",
        Rule::expr | Rule::path | Rule::op_not => "a value",
        Rule::string | Rule::string_inner => "a string in double quotes",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::null => "`null`",
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt => "an operator",
        Rule::op_is_empty | Rule::op_is_not_empty => "`is empty`",
        Rule::metric => "a metric name",
        Rule::scope => "an endpoint name",
        Rule::cmp_op => "a comparison (>, >=, <, <=, ==, !=)",
        Rule::quantity => "a threshold such as `5%` or `1500ms`",
        Rule::unit => "a unit (%, ms, s, m, h)",
        Rule::duration | Rule::duration_only => "a duration such as `60s`, `5m` or `1h`",
        Rule::duration_unit => "a duration unit (ms, s, m, h, d)",
        _ => "something else",
    }
}

fn syntax_error(text: &str, error: pest::error::Error<Rule>) -> SyntaxError {
    let pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut positives: Vec<Rule> = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let mut expected: Vec<&str> = Vec::new();
    if STATEMENT_STARTS.iter().all(|r| positives.contains(r)) {
        positives.retain(|r| !STATEMENT_STARTS.contains(r));
        expected.push(
            "a statement (let, exec, if, reply, await, set, clear, call, request_payment, choose_language, end)",
        );
    }
    let mut others: Vec<&str> = positives.iter().map(|r| describe(*r)).collect();
    others.sort_unstable();
    others.dedup();
    expected.extend(others);
    let found = found_at(text, pos);
    let message = match expected.as_slice() {
        [] => format!("unexpected {found}"),
        [one] => format!("expected {one}, found {found}"),
        [init @ .., last] => format!("expected {} or {last}, found {found}", init.join(", ")),
    };
    let end = pos + found_len(text, pos);
    let hint = match found.as_str() {
        "`=`" if expected.contains(&"an operator") => Some(
            "to compare, write `==`; a single `=` only gives a value (`let`, `set`, `with`)"
                .to_owned(),
        ),
        "`elif`" | "`elsif`" | "`elseif`" => Some("write `else if`".to_owned()),
        // A misspelt statement word: the nearest one.
        word if expected
            .first()
            .is_some_and(|e| e.starts_with("a statement")) =>
        {
            let word = word.trim_matches('`');
            let statements = STATEMENT_STARTS
                .iter()
                .filter_map(|rule| describe_keyword(*rule))
                .map(|keyword| keyword.trim_matches('`'));
            crate::diagnostic::did_you_mean(word, statements)
        }
        _ => None,
    };
    SyntaxError {
        span: Span::new(pos, end),
        message,
        hint,
        label: String::new(),
        labels: Vec::new(),
    }
}

fn found_len(text: &str, pos: usize) -> usize {
    let rest = &text[pos.min(text.len())..];
    let word = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    if word > 0 {
        word
    } else {
        rest.chars().next().map(char::len_utf8).unwrap_or(0)
    }
}

fn found_at(text: &str, pos: usize) -> String {
    let len = found_len(text, pos);
    match &text[pos.min(text.len())..pos.min(text.len()) + len] {
        "" => "end of file".to_owned(),
        "\n" => "end of line".to_owned(),
        "\"" => "`\"` (a string)".to_owned(),
        token => format!("`{token}`"),
    }
}

#[cfg(test)]
mod tests;
