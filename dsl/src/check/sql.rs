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

fn check_query(cx: &FlowCx<'_>, query: &Query, out: &mut Vec<Diagnostic>) {
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
    fn finds_placeholders_outside_quotes() {
        let sql = "select * from t where a = $1 and b = '$5' and c = $2 and d = $10 -- $7\n /* $8 */ + $3";
        assert_eq!(
            placeholders(sql).into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3, 10]
        );
    }
}
