//! Finding the `{` a flow file forgot to close, so the error points at the cause and not at the
//! next `flow` keyword, where the parser notices.
//!
//! Owns: a scan of the braces outside strings and comments, and the indentation heuristic that
//! picks the opener. Must not parse: it runs only once the grammar has already failed.

use crate::span::Span;

/// A `{` never closed, and the `}` that most likely was meant for an outer block instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unclosed {
    /// The `{`.
    pub opener: Span,
    /// A `}` that closes it while lining up with an outer line, when there is one.
    pub misaligned_closer: Option<Span>,
}

/// The characters of `text` that are code: not inside a string or a comment.
pub(super) fn code_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    text.char_indices().filter(move |&(_, c)| {
        let code = match c {
            '\n' => {
                in_comment = false;
                in_string = false;
                true
            }
            _ if in_comment => false,
            '\\' if in_string => {
                escaped = !escaped;
                return false;
            }
            '"' if !escaped => {
                in_string = !in_string;
                false
            }
            '#' if !in_string => {
                in_comment = true;
                false
            }
            _ => !in_string,
        };
        escaped = false;
        code
    })
}

/// The `{` left open in `text`, if there are more `{` than `}`. Blocks are written closed at the
/// indentation of the line that opened them: the first `}` that closes a block opened on a line
/// indented differently most likely belongs to an outer block, so the block it closed is the one
/// missing its `}`. Without such a `}`, the innermost block still open at the end is.
pub(super) fn unclosed_brace(text: &str) -> Option<Unclosed> {
    let mut open: Vec<usize> = Vec::new();
    let mut misaligned: Vec<(usize, usize)> = Vec::new();
    for (i, c) in code_chars(text) {
        match c {
            '{' => open.push(i),
            '}' => {
                let opener = open.pop()?;
                if starts_its_line(text, i) && indentation(text, i) != indentation(text, opener) {
                    misaligned.push((opener, i));
                }
            }
            _ => {}
        }
    }
    let (outermost, innermost) = (*open.first()?, *open.last()?);
    // Only inside the block still open at the end: an odd `}` in an earlier, closed flow (a
    // condition wrapped over two lines) says nothing about this one.
    let misaligned = misaligned
        .into_iter()
        .find(|(opener, _)| *opener > outermost);
    Some(match misaligned {
        Some((opener, closer)) => Unclosed {
            opener: Span::new(opener, opener + 1),
            misaligned_closer: Some(Span::new(closer, closer + 1)),
        },
        None => Unclosed {
            opener: Span::new(innermost, innermost + 1),
            misaligned_closer: None,
        },
    })
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |n| n + 1)
}

/// The leading spaces and tabs of the line holding byte `at`.
fn indentation(text: &str, at: usize) -> &str {
    let line = &text[line_start(text, at)..];
    let width = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..width]
}

fn starts_its_line(text: &str, at: usize) -> bool {
    text[line_start(text, at)..at].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str, nth: usize) -> Span {
        let i = text.match_indices(needle).nth(nth).expect("needle").0;
        Span::new(i, i + 1)
    }

    #[test]
    fn balanced_text_has_nothing_open() {
        let text = "flow a {\n  if x { reply \"{\" }\n  # a } in a comment\n}\n";
        assert_eq!(unclosed_brace(text), None);
    }

    #[test]
    fn the_block_whose_closer_lines_up_with_an_outer_line_is_the_open_one() {
        let text = "flow a {\n  if x {\n    reply b\n  reply c\n}\n\nflow d {\n  end\n}\n";
        let found = unclosed_brace(text).expect("one is open");
        // The `if`'s `{`, closed by the flow's `}` at column 1.
        assert_eq!(found.opener, at(text, "{", 1));
        assert_eq!(found.misaligned_closer, Some(at(text, "}", 0)));
    }

    #[test]
    fn an_odd_closer_in_an_earlier_closed_flow_is_not_blamed() {
        let text = "flow a {\n  if x {\n    end\n    }\n}\nflow b {\n  if y {\n    end\n  }\n";
        let found = unclosed_brace(text).expect("one is open");
        // `flow b`'s own `{`: the misaligned `}` is in flow a, which closed.
        assert_eq!(found.opener, at(text, "{", 2));
        assert_eq!(found.misaligned_closer, None);
    }

    #[test]
    fn without_a_misaligned_closer_the_innermost_open_block_is_named() {
        let text = "flow a {\n  end\n}\nflow b {\n  if x {\n    end\n  }\n";
        let found = unclosed_brace(text).expect("one is open");
        assert_eq!(found.opener, at(text, "{", 1));
        assert_eq!(found.misaligned_closer, None);
    }
}
