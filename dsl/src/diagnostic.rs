//! Diagnostics: what went wrong, where, and how to fix it; and their three renderings.
//!
//! Owns: the `Diagnostic` type shared by the DSL checker and the engine's config compiler, the
//! `Sources` registry of file texts that spans point into, and rendering as rustc-style text,
//! JSON, or GitHub Actions annotations. Must not decide *what* is wrong; checks do that.

use std::fmt::Write as _;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::{Files, SimpleFiles};
use codespan_reporting::term;
use serde::Serialize;

use crate::codes::Code;
use crate::span::Span;

/// Identifies one file in [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(usize);

/// The texts that diagnostics point into, by file.
#[derive(Default)]
pub struct Sources {
    files: SimpleFiles<String, String>,
    count: usize,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("count", &self.count)
            .finish()
    }
}

impl Sources {
    /// An empty registry.
    pub fn new() -> Self {
        Sources::default()
    }

    /// Registers a file's name (as shown to users) and text.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.count += 1;
        FileId(self.files.add(name.into(), text.into()))
    }

    /// The file's text.
    pub fn text(&self, file: FileId) -> &str {
        self.files
            .get(file.0)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    /// The file's display name.
    pub fn name(&self, file: FileId) -> &str {
        self.files
            .get(file.0)
            .map(|f| f.name().as_str())
            .unwrap_or("")
    }

    /// The file registered under `name`, if any.
    pub fn find(&self, name: &str) -> Option<FileId> {
        (0..self.count)
            .find(|&i| self.files.get(i).is_ok_and(|f| f.name() == name))
            .map(FileId)
    }

    /// Every file's name and text, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.count)
            .filter_map(|i| self.files.get(i).ok())
            .map(|f| (f.name().as_str(), f.source().as_str()))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let offset = clamp_to_char_boundary(self.text(file), offset);
        match self.files.location(file.0, offset) {
            Ok(loc) => (loc.line_number, loc.column_number),
            Err(_) => (1, 1),
        }
    }

    /// The byte offset of a 1-based line and column (in characters).
    pub fn offset_of(&self, file: FileId, line: usize, column: usize) -> usize {
        let text = self.text(file);
        let line_start = text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>();
        let rest = &text[line_start.min(text.len())..];
        let in_line = rest
            .char_indices()
            .take_while(|(_, c)| *c != '\n')
            .nth(column.saturating_sub(1))
            .map(|(i, _)| i)
            .unwrap_or_else(|| rest.find('\n').unwrap_or(rest.len()));
        line_start + in_line
    }
}

fn clamp_to_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fails lint, refuses to load.
    Error,
    /// Reported; fails lint only with `--deny-warnings`.
    Warning,
}

/// A span in a file with a short message.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The file.
    pub file: FileId,
    /// Where.
    pub span: Span,
    /// What about it; may be empty.
    pub message: String,
    /// The primary label is where the diagnostic is reported.
    pub primary: bool,
}

/// One problem, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Stable code from [`crate::codes`].
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// Lowercase, no final period, like rustc.
    pub message: String,
    /// The first primary label decides the reported location.
    pub labels: Vec<Label>,
    /// Extra facts.
    pub notes: Vec<String>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A new error.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, code, message)
    }

    /// A new warning.
    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, code, message)
    }

    fn new(severity: Severity, code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Adds the primary label.
    pub fn at(mut self, file: FileId, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary label.
    pub fn also(mut self, file: FileId, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            file,
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help line when there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The primary label (or the first label).
    pub fn primary(&self) -> Option<&Label> {
        self.labels
            .iter()
            .find(|l| l.primary)
            .or_else(|| self.labels.first())
    }
}

/// Suggests the known name closest to `unknown`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|(d, k)| *d <= (k.chars().count().max(unknown.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// Sorts diagnostics by file and position, errors before warnings at the same place.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| {
        let at = d
            .primary()
            .map(|l| (l.file, l.span.start))
            .unwrap_or((FileId(0), 0));
        (at, d.severity)
    });
}

/// Renders diagnostics as rustc-style text: code, message, `--> file:line:col`, the source line
/// with carets, notes and help.
pub fn render_human(sources: &Sources, diagnostics: &[Diagnostic]) -> String {
    let config = term::Config {
        chars: term::Chars::ascii(),
        ..term::Config::default()
    };
    let mut out = String::new();
    for diagnostic in diagnostics {
        let severity = match diagnostic.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let labels = diagnostic
            .labels
            .iter()
            .map(|l| {
                let style = if l.primary {
                    cs::LabelStyle::Primary
                } else {
                    cs::LabelStyle::Secondary
                };
                let text = sources.text(l.file);
                let start = clamp_to_char_boundary(text, l.span.start);
                let end = clamp_to_char_boundary(text, l.span.end.max(start));
                cs::Label::new(style, l.file.0, start..end).with_message(&l.message)
            })
            .collect();
        let mut notes: Vec<String> = diagnostic
            .notes
            .iter()
            .map(|n| format!("note: {n}"))
            .collect();
        if let Some(help) = &diagnostic.help {
            notes.push(format!("help: {help}"));
        }
        let rendered = cs::Diagnostic::new(severity)
            .with_code(diagnostic.code)
            .with_message(&diagnostic.message)
            .with_labels(labels)
            .with_notes(notes);
        match term::emit_into_string(&config, &sources.files, &rendered) {
            Ok(text) => out.push_str(&text),
            Err(error) => {
                let _ = writeln!(
                    out,
                    "{}[{}]: {} ({error})",
                    severity_word(diagnostic),
                    diagnostic.code,
                    diagnostic.message
                );
            }
        }
    }
    out
}

fn severity_word(d: &Diagnostic) -> &'static str {
    match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'a str,
    severity: Severity,
    message: &'a str,
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    end_line: Option<usize>,
    end_column: Option<usize>,
    label: Option<&'a str>,
    notes: &'a [String],
    help: Option<&'a str>,
}

/// Renders diagnostics as a JSON array, one object per diagnostic with 1-based positions.
pub fn render_json(sources: &Sources, diagnostics: &[Diagnostic]) -> String {
    let items: Vec<JsonDiagnostic<'_>> = diagnostics
        .iter()
        .map(|d| {
            let primary = d.primary();
            let start = primary.map(|l| sources.line_col(l.file, l.span.start));
            let end = primary.map(|l| sources.line_col(l.file, l.span.end));
            JsonDiagnostic {
                code: d.code,
                severity: d.severity,
                message: &d.message,
                file: primary.map(|l| sources.name(l.file)),
                line: start.map(|p| p.0),
                column: start.map(|p| p.1),
                end_line: end.map(|p| p.0),
                end_column: end.map(|p| p.1),
                label: primary
                    .map(|l| l.message.as_str())
                    .filter(|m| !m.is_empty()),
                notes: &d.notes,
                help: d.help.as_deref(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_owned())
}

/// Renders diagnostics as GitHub Actions workflow commands (`::error file=…,line=…::…`).
pub fn render_github(sources: &Sources, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let level = severity_word(d);
        let mut props = Vec::new();
        if let Some(l) = d.primary() {
            let (line, col) = sources.line_col(l.file, l.span.start);
            let (end_line, end_col) = sources.line_col(l.file, l.span.end);
            props.push(format!("file={}", escape_property(sources.name(l.file))));
            props.push(format!("line={line}"));
            props.push(format!("col={col}"));
            props.push(format!("endLine={end_line}"));
            if end_line == line {
                props.push(format!("endColumn={end_col}"));
            }
        }
        props.push(format!("title={}", escape_property(d.code)));
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let _ = writeln!(
            out,
            "::{level} {}::{}",
            props.join(","),
            escape_data(&message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rustc_style_with_caret_and_help() {
        let mut sources = Sources::new();
        let file = sources.add("flows/x.flow", "flow a {\n  reply nope\n}\n");
        let d = Diagnostic::error("E302", "unknown template `nope`")
            .at(file, Span::new(17, 21), "not declared in routes.yaml")
            .help("did you mean `note`?");
        let text = render_human(&sources, &[d]);
        assert!(
            text.contains("error[E302]: unknown template `nope`"),
            "{text}"
        );
        assert!(text.contains("--> flows/x.flow:2:9"), "{text}");
        assert!(text.contains("^^^^ not declared"), "{text}");
        assert!(text.contains("= help: did you mean `note`?"), "{text}");
    }

    #[test]
    fn line_col_and_offset_round_trip_with_multibyte_text() {
        let mut sources = Sources::new();
        let file = sources.add("a", "é\nab😀c\n");
        let offset = sources.offset_of(file, 2, 4);
        assert_eq!(&sources.text(file)[offset..], "c\n");
        assert_eq!(sources.line_col(file, offset), (2, 4));
    }

    #[test]
    fn github_annotations_escape_separators() {
        let mut sources = Sources::new();
        let file = sources.add("a,b.yaml", "x: 1\n");
        let d = Diagnostic::warning("W100", "50% done\nnext").at(file, Span::new(0, 1), "");
        let text = render_github(&sources, &[d]);
        assert_eq!(
            text,
            "::warning file=a%2Cb.yaml,line=1,col=1,endLine=1,endColumn=2,title=W100::50%25 done%0Anext\n"
        );
    }

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(
            did_you_mean("job_lst", ["job_list", "menu"]).as_deref(),
            Some("did you mean `job_list`?")
        );
        assert_eq!(did_you_mean("zzz", ["job_list", "menu"]), None);
    }
}
