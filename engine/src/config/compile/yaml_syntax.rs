//! routes.yaml that is not YAML: the diagnostic points at the cause, not only where the YAML
//! parser noticed. An unclosed `[`, `{` or quote is reported at its opener, with the place the
//! parser gave up as a second label; a key written twice at both places.
//!
//! Owns: turning a `serde_yaml` error into a diagnostic. Must not look at what the YAML means.

use easymo_dsl::{codes, Diagnostic, FileId, Sources, Span};

use crate::config::yaml::YamlIndex;

/// The diagnostic for a document `serde_yaml` could not read.
pub(super) fn diagnostic(error: &serde_yaml::Error, file: FileId, sources: &Sources) -> Diagnostic {
    let text = sources.text(file);
    let message = error.to_string();
    // serde_yaml points a duplicate key at its mapping; the index finds the key itself.
    if message.contains("duplicate entry") {
        if let Some(dup) = YamlIndex::build(text).duplicates().first() {
            return Diagnostic::error(
                codes::YAML_SYNTAX,
                format!(
                    "invalid YAML: key `{}` appears twice in one mapping",
                    dup.key
                ),
            )
            .at(file, dup.again, "written again here")
            .also(file, dup.first, "first written here")
            .help("YAML keeps only one of them; delete or merge the other");
        }
    }
    let (line, col) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let at = sources.offset_of(file, line, col);
    let gave_up = Span::new(at, next_char(text, at));
    let problem = message.split(" at line ").next().unwrap_or(&message);
    if let Some(opener) = context_mark(&message).map(|(l, c)| sources.offset_of(file, l, c)) {
        if let Some(diagnostic) = unclosed(text, file, opener, gave_up) {
            return diagnostic;
        }
    }
    if let Some(diagnostic) = quote_ended_badly(text, file, at, gave_up) {
        return diagnostic;
    }
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let help = if line_text.contains("${") && (line_text.contains('[') || line_text.contains('{')) {
        "inside `[ ]` or `{ }`, quote environment references: \"${NAME}\""
    } else {
        "check indentation and quoting; values containing `: ` or starting with `{`, `[` or `*` need quotes"
    };
    Diagnostic::error(codes::YAML_SYNTAX, format!("invalid YAML: {problem}"))
        .at(file, gave_up, "")
        .help(help)
}

/// Where libyaml says the construct it was reading began (`…, while parsing a flow sequence at
/// line 28 column 21`), 1-based.
fn context_mark(message: &str) -> Option<(usize, usize)> {
    let (_, context) = message.split_once(", while ")?;
    let (_, mark) = context.rsplit_once(" at line ")?;
    let (line, column) = mark.split_once(" column ")?;
    Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
}

/// An unclosed `[`, `{` or quote that libyaml names as the context of its error.
fn unclosed(text: &str, file: FileId, opener: usize, gave_up: Span) -> Option<Diagnostic> {
    let delimiter = text[opener..].chars().next()?;
    let help = match delimiter {
        '[' => "close the list with `]`, or write one `- item` per line below the key",
        '{' => "close it with `}`, or write one `key: value` per line below the key",
        '"' | '\'' => "close the quote where the text ends",
        _ => return None,
    };
    Some(
        Diagnostic::error(
            codes::YAML_SYNTAX,
            format!("invalid YAML: unclosed `{delimiter}`"),
        )
        .at(
            file,
            Span::new(opener, opener + delimiter.len_utf8()),
            format!("this `{delimiter}` is never closed"),
        )
        .also(file, gave_up, "the parser gave up here")
        .help(help),
    )
}

/// A quoted value that ended right before the place the parser gave up: either a quote left
/// open on an earlier line (it ran on to the next quote), or a quote inside the text that ended
/// it early (`'don't'`).
fn quote_ended_badly(text: &str, file: FileId, at: usize, gave_up: Span) -> Option<Diagnostic> {
    let before = text[..at].trim_end_matches([' ', '\t']);
    let quote = before
        .chars()
        .next_back()
        .filter(|c| *c == '"' || *c == '\'')?;
    let closer = before.len() - 1;
    let opener = opening_quote(&text[..closer], quote)?;
    let line_of = |i: usize| text[..i].matches('\n').count() + 1;
    if line_of(opener) < line_of(closer) {
        Some(
            Diagnostic::error(
                codes::YAML_SYNTAX,
                format!("invalid YAML: unclosed `{quote}`"),
            )
            .at(
                file,
                Span::new(opener, opener + 1),
                format!("this `{quote}` is never closed on its line"),
            )
            .also(
                file,
                Span::new(closer, closer + 1),
                format!("so the text runs on to this `{quote}`"),
            )
            .also(file, gave_up, "the parser gave up here")
            .help("close the quote at the end of its line"),
        )
    } else {
        let help = if quote == '\'' {
            "inside '…' write a `'` as `''`, or quote the text with \"…\" instead"
        } else {
            "inside \"…\" write a `\"` as `\\\"`, or quote the text with '…' instead"
        };
        Some(
            Diagnostic::error(
                codes::YAML_SYNTAX,
                format!("invalid YAML: a `{quote}` inside the quoted text ends it early"),
            )
            .at(
                file,
                Span::new(closer, closer + 1),
                format!("this `{quote}` ends the text"),
            )
            .also(
                file,
                Span::new(opener, opener + 1),
                "the quoted text starts here",
            )
            .also(file, gave_up, "the parser gave up here")
            .help(help),
        )
    }
}

/// The quote that the `quote` ending `text` closes: the previous one not escaped (`\"`) or
/// doubled (`''`).
fn opening_quote(text: &str, quote: char) -> Option<usize> {
    let mut end = text.len();
    loop {
        let i = text[..end].rfind(quote)?;
        let escaped = match quote {
            '"' => text[..i].ends_with('\\') && !text[..i].ends_with("\\\\"),
            _ => text[..i].ends_with('\''),
        };
        if !escaped {
            return Some(i);
        }
        // A doubled `''` is one quote character: skip both.
        end = if quote == '\'' { i - 1 } else { i };
    }
}

fn next_char(text: &str, at: usize) -> usize {
    text[at.min(text.len())..]
        .chars()
        .next()
        .map_or(at, |c| at + c.len_utf8())
        .min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_mark_is_read_from_libyaml_words() {
        let message = "did not find expected ',' or ']' at line 29 column 15, while parsing a flow sequence at line 28 column 21";
        assert_eq!(context_mark(message), Some((28, 21)));
        assert_eq!(
            context_mark("did not find expected key at line 3 column 1"),
            None
        );
    }

    #[test]
    fn the_opening_quote_skips_escaped_and_doubled_quotes() {
        assert_eq!(opening_quote(r#"a: "say \"hi\" now"#, '"'), Some(3));
        assert_eq!(opening_quote("a: 'it''s", '\''), Some(3));
        assert_eq!(opening_quote("no quote", '"'), None);
    }
}
