//! SQL: the `$1..$n` placeholders of every query match the values bound with `with`, one to one.
//! Values only ever reach SQL as bound parameters; the language has no way to splice text.

use std::collections::BTreeSet;

use super::FlowCx;
use crate::ast::{Query, Stmt};
use crate::codes;
use crate::diagnostic::Diagnostic;

pub(super) fn check_flow(cx: &FlowCx<'_>, out: &mut Vec<Diagnostic>) {
    super::walk(&cx.flow.body, &mut |stmt| match stmt {
        Stmt::Let { query, .. } | Stmt::Exec(query) => check_query(cx, query, out),
        _ => {}
    });
}

/// The placeholder numbers used in `sql`, ignoring quoted literals and comments.
pub fn placeholders(sql: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut in_quote = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_quote = !in_quote,
            b'-' if !in_quote && bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if !in_quote && bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 1);
            }
            b'$' if !in_quote => {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    found.insert(n);
                }
                i += digits.len();
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The longest `cached for`.
const MAX_CACHE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Words that make a statement change data (or lock rows), outside quotes and comments.
const WRITING_WORDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "merge",
    "truncate",
    "nextval",
    "setval",
    "for update",
    "for share",
    "into",
];

/// Why `sql` may not be cached, if it may not: it must be a plain read.
pub fn not_read_only(sql: &str) -> Option<String> {
    let code = strip_quotes_and_comments(sql).to_ascii_lowercase();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    match words.first() {
        Some(&("select" | "with" | "values" | "table")) => {}
        Some(first) => return Some(format!("it starts with `{first}`, not `select`")),
        None => return Some("it is empty".to_owned()),
    }
    let joined = format!(" {} ", words.join(" "));
    WRITING_WORDS
        .iter()
        .find(|w| joined.contains(&format!(" {w} ")))
        .map(|w| format!("it uses `{w}`"))
}

/// `sql` with quoted literals and comments blanked out.
fn strip_quotes_and_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push(' ');
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for d in chars.by_ref() {
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out
}

fn check_query(cx: &FlowCx<'_>, query: &Query, out: &mut Vec<Diagnostic>) {
    if let Some(cache) = &query.cache {
        if let Some(why) = not_read_only(&query.sql.node) {
            out.push(
                Diagnostic::error(codes::CACHED_WRITE, "a cached query must only read")
                    .at(
                        cx.file,
                        query.sql.span,
                        format!("{why}: its effect would be skipped while cached"),
                    )
                    .also(cx.file, cache.span, "cached here")
                    .help("remove `cached for ...`, or split the write into an `exec` of its own"),
            );
        } else if cache.node > MAX_CACHE {
            out.push(
                Diagnostic::error(codes::CACHED_WRITE, "a query cached for more than a day")
                    .at(cx.file, cache.span, "too long")
                    .help("a result older than a day is stale; a reload clears the cache anyway"),
            );
        } else if cache.node.is_zero() {
            out.push(
                Diagnostic::error(codes::CACHED_WRITE, "a query cached for no time")
                    .at(cx.file, cache.span, "zero")
                    .help("give a duration such as `cached for 5m`, or remove the clause"),
            );
        }
    }
    let used = placeholders(&query.sql.node);
    let bound = query.args.len();
    let highest = used.iter().next_back().copied().unwrap_or(0);
    if highest > bound {
        out.push(
            Diagnostic::error(
                codes::SQL_PLACEHOLDERS,
                format!(
                    "query uses ${highest} but binds {bound} value{}",
                    if bound == 1 { "" } else { "s" }
                ),
            )
            .at(cx.file, query.sql.span, format!("needs {highest} values"))
            .help("bind values in order with `with a, b, ...`; never build SQL from text"),
        );
        return;
    }
    if let Some(missing) = (1..=bound).find(|n| !used.contains(n)) {
        let arg = &query.args[missing - 1];
        out.push(
            Diagnostic::error(
                codes::SQL_PLACEHOLDERS,
                format!("value {missing} is bound but the query never uses ${missing}"),
            )
            .at(cx.file, arg.span, format!("bound to ${missing}"))
            .also(cx.file, query.sql.span, format!("no ${missing} here")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn only_plain_reads_may_be_cached() {
        use super::not_read_only;
        assert_eq!(not_read_only("select id from t where a = 'insert'"), None);
        assert_eq!(
            not_read_only(" -- update\n with x as (select 1) select * from x"),
            None
        );
        assert_eq!(not_read_only("select updated_at from t"), None);
        assert!(not_read_only("insert into t values (1)").is_some());
        assert!(not_read_only("with x as (delete from t returning *) select * from x").is_some());
        assert!(not_read_only("select * from t for update").is_some());
        assert!(not_read_only("select nextval('s')").is_some());
        assert!(not_read_only("select * into t2 from t").is_some());
        assert!(not_read_only("").is_some());
    }

    #[test]
    fn finds_placeholders_outside_quotes() {
        let sql = "select * from t where a = $1 and b = '$5' and c = $2 and d = $10 -- $7\n /* $8 */ + $3";
        assert_eq!(
            placeholders(sql).into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3, 10]
        );
    }
}
