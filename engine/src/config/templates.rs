//! Reply templates, statically: `{{ }}` syntax, the variables each template reads, languages,
//! and WhatsApp's limits on literal text.
//!
//! Owns: walking a raw template into its text fields (with their YAML path, role and limit) and
//! every check on them. Must not render anything; rendering with real values is the flow
//! runtime's job, with the same limits from `crate::limits`.

use std::collections::{BTreeMap, BTreeSet};

use easymo_dsl::check::{FieldRead, TemplateInfo, IMPLICIT_VARIABLES};
use easymo_dsl::{codes, Diagnostic, FileId};

use super::reply::{ButtonsTemplate, ListTemplate, Row, Shape, Text};
use super::yaml::{Path, YamlIndex};
use crate::limits;

/// Template the runtime sends when a flow fails.
pub const ERROR_TEMPLATE: &str = "something_went_wrong";
/// Template the runtime sends for media it cannot read yet.
pub const UNSUPPORTED_TEMPLATE: &str = "unsupported_message";
/// Template sent, when the config has it, to someone whose answer was awaited by a flow a reload
/// removed or renamed, before the fallback flow answers them.
pub const CONVERSATION_CHANGED_TEMPLATE: &str = "conversation_changed";
/// Templates the payer is notified with once a payment settles, when the config has them.
pub const PAYMENT_SUCCESSFUL_TEMPLATE: &str = "payment_successful";
/// See [`PAYMENT_SUCCESSFUL_TEMPLATE`].
pub const PAYMENT_FAILED_TEMPLATE: &str = "payment_failed";

/// Languages replies can be written in.
pub const LANGUAGES: &[&str] = &["en", "rw", "fr"];

/// One text field of a template.
struct Field<'a> {
    path: Path,
    role: &'static str,
    limit: usize,
    value: FieldValue<'a>,
    /// Row templates see the current item as `row`.
    per_row: bool,
}

enum FieldValue<'a> {
    Text(&'a Text),
    Plain(&'a str),
}

fn fields<'a>(template: &'a Shape, base: &Path) -> Vec<Field<'a>> {
    let mut out = Fields(Vec::new());
    match template {
        Shape::Text(t) => {
            let path = base.key("text").key("body");
            out.text(path, "text body", limits::TEXT_BODY, &t.body);
        }
        Shape::LocationRequest(t) => {
            let path = base.key("location_request").key("body");
            out.text(
                path,
                "location request body",
                limits::LOCATION_BODY,
                &t.body,
            );
        }
        Shape::List(t) => {
            let base = base.key("list");
            let body = (&t.body, "list body", limits::LIST_BODY);
            out.frame(&base, t.header.as_ref(), body, t.footer.as_ref());
            out.text(
                base.key("button"),
                "list button",
                limits::LIST_BUTTON,
                &t.button,
            );
            for (i, section) in t.sections.iter().enumerate() {
                let sp = base.key("sections").index(i);
                if let Some(title) = &section.title {
                    out.text(
                        sp.key("title"),
                        "section title",
                        limits::SECTION_TITLE,
                        title,
                    );
                }
                for (j, row) in section.rows.iter().enumerate() {
                    out.row(&sp.key("rows").index(j), row, false);
                }
                if let Some(row) = &section.row {
                    out.row(&sp.key("row"), row, true);
                }
            }
        }
        Shape::Buttons(t) => {
            let base = base.key("buttons");
            let body = (&t.body, "reply-buttons body", limits::BUTTONS_BODY);
            out.frame(&base, t.header.as_ref(), body, t.footer.as_ref());
            for (i, button) in t.buttons.iter().enumerate() {
                let bp = base.key("buttons").index(i);
                out.push(
                    bp.key("id"),
                    "button id",
                    limits::BUTTON_ID,
                    FieldValue::Plain(&button.id),
                    false,
                );
                out.text(
                    bp.key("title"),
                    "button title",
                    limits::BUTTON_TITLE,
                    &button.title,
                );
            }
        }
    }
    out.0
}

/// Collects the fields of one template.
struct Fields<'a>(Vec<Field<'a>>);

impl<'a> Fields<'a> {
    fn push(
        &mut self,
        path: Path,
        role: &'static str,
        limit: usize,
        value: FieldValue<'a>,
        per_row: bool,
    ) {
        self.0.push(Field {
            path,
            role,
            limit,
            value,
            per_row,
        });
    }

    fn text(&mut self, path: Path, role: &'static str, limit: usize, text: &'a Text) {
        self.push(path, role, limit, FieldValue::Text(text), false);
    }

    /// Header, body and footer of an interactive message.
    fn frame(
        &mut self,
        base: &Path,
        header: Option<&'a Text>,
        (body, body_role, body_limit): (&'a Text, &'static str, usize),
        footer: Option<&'a Text>,
    ) {
        if let Some(header) = header {
            self.text(base.key("header"), "header", limits::HEADER, header);
        }
        self.text(base.key("body"), body_role, body_limit, body);
        if let Some(footer) = footer {
            self.text(base.key("footer"), "footer", limits::FOOTER, footer);
        }
    }

    /// A list row; `per_row` rows are templates for each item of a bound list.
    fn row(&mut self, path: &Path, row: &'a Row, per_row: bool) {
        self.push(
            path.key("id"),
            "row id",
            limits::ROW_ID,
            FieldValue::Plain(&row.id),
            per_row,
        );
        self.push(
            path.key("title"),
            "row title",
            limits::ROW_TITLE,
            FieldValue::Text(&row.title),
            per_row,
        );
        if let Some(description) = &row.description {
            let value = FieldValue::Text(description);
            self.push(
                path.key("description"),
                "row description",
                limits::ROW_DESCRIPTION,
                value,
                per_row,
            );
        }
    }
}

/// Each variant of a field: its language (None for a plain id) and its YAML path.
fn variants<'a>(field: &'a Field<'_>, index: &YamlIndex) -> Vec<(Option<&'a str>, Path, &'a str)> {
    match field.value {
        FieldValue::Plain(s) => vec![(None, field.path.clone(), s)],
        FieldValue::Text(text) => text
            .0
            .iter()
            .map(|(lang, s)| {
                let localized = field.path.key(lang);
                let path = if index.contains(&localized) {
                    localized
                } else {
                    field.path.clone()
                };
                (Some(lang.as_str()), path, s.as_str())
            })
            .collect(),
    }
}

/// The length of a template's literal text as WhatsApp's limits count it
/// ([`crate::limits::length`]), with `{{ }}`, `{% %}` and `{# #}` removed.
pub fn literal_len(source: &str) -> usize {
    let mut count = 0;
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        count += crate::limits::length(&rest[..open]);
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                count += 1;
                rest = after;
                continue;
            }
        };
        match after[1..].find(close) {
            Some(end) => rest = &after[1 + end + close.len()..],
            None => {
                rest = "";
            }
        }
    }
    count + crate::limits::length(rest)
}

/// Whether `source` has a tag that loads another template.
fn loads_templates(source: &str) -> bool {
    source.match_indices("{%").any(|(at, _)| {
        let tag = source[at + 2..].trim_start_matches(['-', '+']).trim_start();
        ["include", "import", "from", "extends"].iter().any(|word| {
            tag.strip_prefix(word)
                .is_some_and(|rest| rest.starts_with(|c: char| !c.is_alphanumeric() && c != '_'))
        })
    })
}

/// Checks one template and returns what flows need to know about it.
pub fn check(
    name: &str,
    template: &Shape,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) -> TemplateInfo {
    let base = Path::root().key("templates").key(name);
    let env = minijinja::Environment::new();
    let mut variables = BTreeSet::new();
    let mut reads = Vec::new();
    for field in fields(template, &base) {
        if let FieldValue::Text(text) = field.value {
            check_languages(text, &field, index, file, out);
        }
        for (lang, path, source) in variants(&field, index) {
            if loads_templates(source) {
                out.push(loads_another(name, file, index.value(&path)));
                continue;
            }
            match env.template_from_str(source) {
                Ok(compiled) => {
                    reads.extend(field_reads(&compiled, source, &field, file, |inner| {
                        index.inside(&path, inner, source)
                    }));
                    for var in compiled.undeclared_variables(false) {
                        let builtin = env.globals().any(|(name, _)| name == var);
                        let item = field.per_row && var == "row";
                        if !builtin && !item {
                            variables.insert(var);
                        }
                    }
                }
                Err(error) => out.push(
                    Diagnostic::error(
                        codes::TEMPLATE_SYNTAX,
                        format!("template `{name}` has a broken {}", field.role),
                    )
                    .at(
                        file,
                        index.value(&path),
                        error.detail().unwrap_or("syntax error").to_owned(),
                    )
                    .help("variables are written `{{ name }}`; see the minijinja syntax"),
                ),
            }
            let len = literal_len(source);
            if len > field.limit {
                let language = lang.map(|l| format!(" ({l})")).unwrap_or_default();
                out.push(
                    Diagnostic::error(
                        codes::TEXT_TOO_LONG,
                        format!("{} of template `{name}`{language} is {len} characters; WhatsApp allows {}", field.role, field.limit),
                    )
                    .at(file, index.value(&path), format!("{} characters too long", len - field.limit))
                    .help("shorten the text; WhatsApp rejects the whole message otherwise"),
                );
            }
        }
    }
    check_counts(name, template, &base, index, file, out);
    let mut rows_from = Vec::new();
    if let Shape::List(list) = template {
        for section in &list.sections {
            if let Some(from) = &section.rows_from {
                variables.insert(from.clone());
                rows_from.push(from.clone());
            }
        }
    }
    // The same read in three languages is one read for the checks that use them.
    let mut seen = BTreeSet::new();
    reads.retain(|r: &FieldRead| seen.insert((r.path.clone(), r.per_row, r.guarded)));
    for implicit in IMPLICIT_VARIABLES {
        variables.remove(*implicit);
    }
    let asks = match template {
        Shape::List(_) | Shape::Buttons(_) => easymo_dsl::check::Asks::Choice,
        Shape::LocationRequest(_) => easymo_dsl::check::Asks::Location,
        Shape::Text(_) => easymo_dsl::check::Asks::Nothing,
    };
    TemplateInfo {
        variables,
        asks,
        choice_ids: choice_ids(template),
        opaque: false,
        reads,
        rows_from,
    }
}

/// The runtime compiles each text once under its own source as name: a text that includes
/// another by a runtime value would compile user data.
fn loads_another(name: &str, file: FileId, span: easymo_dsl::Span) -> Diagnostic {
    Diagnostic::error(
        codes::TEMPLATE_SYNTAX,
        format!("template `{name}` loads another template"),
    )
    .at(
        file,
        span,
        "include, import, from and extends are not allowed",
    )
    .help("write the text out; templates are single texts with `{{ variables }}`")
}

/// Every value `compiled` reads, each at its first mention in the text (`in_file` maps a span
/// of `source` into routes.yaml; where escapes make that unsure, it gives the whole text).
fn field_reads(
    compiled: &minijinja::Template<'_, '_>,
    source: &str,
    field: &Field<'_>,
    file: FileId,
    in_file: impl Fn(easymo_dsl::Span) -> easymo_dsl::Span,
) -> Vec<FieldRead> {
    compiled
        .undeclared_variables(true)
        .into_iter()
        .map(|read| FieldRead {
            guarded: handles_absence(source, &read),
            span: in_file(first_mention(source, &read)),
            path: read.split('.').map(str::to_owned).collect(),
            file,
            per_row: field.per_row,
        })
        .collect()
}

/// Where `read` (`job.title`) first appears in `source` as a whole name; the whole source when
/// it is not written out (a read minijinja infers).
fn first_mention(source: &str, read: &str) -> easymo_dsl::Span {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    source
        .match_indices(read)
        .find(|(at, _)| {
            !source[..*at].ends_with(word) && !source[at + read.len()..].starts_with(word)
        })
        .map_or(easymo_dsl::Span::new(0, source.len()), |(at, _)| {
            easymo_dsl::Span::new(at, at + read.len())
        })
}

/// Whether `source` handles `read` (`job.salary`) being absent: `{{ job.salary | default("…") }}`,
/// `{{ job.salary or "…" }}`, or printing it only under `{% if job.salary %}`.
fn handles_absence(source: &str, read: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    source.match_indices(read).any(|(at, _)| {
        let before = &source[..at];
        let after = &source[at + read.len()..];
        if before.ends_with(word) || after.starts_with(word) {
            return false;
        }
        let next = after.trim_start();
        let filtered = next.strip_prefix('|').is_some_and(|f| {
            let f = f.trim_start();
            ["default", "d"]
                .iter()
                .any(|n| f.strip_prefix(n).is_some_and(|r| !r.starts_with(word)))
        });
        let or = next
            .strip_prefix("or")
            .is_some_and(|r| !r.starts_with(word));
        let tested = before
            .trim_end()
            .strip_suffix("if")
            .is_some_and(|b| b.trim_end_matches("el").trim_end().ends_with(['%', '-']));
        filtered || or || tested
    })
}

/// The ids a template's rows or buttons send back, when all are written out.
fn choice_ids(template: &Shape) -> Option<BTreeSet<String>> {
    let ids: Vec<&str> = match template {
        Shape::Buttons(buttons) => buttons.buttons.iter().map(|b| b.id.as_str()).collect(),
        Shape::List(list) => {
            if list.sections.iter().any(|s| s.rows_from.is_some()) {
                return None;
            }
            list.sections
                .iter()
                .flat_map(|s| s.rows.iter().map(|r| r.id.as_str()))
                .collect()
        }
        Shape::Text(_) | Shape::LocationRequest(_) => return None,
    };
    if ids.iter().any(|id| id.contains("{{") || id.contains("{%")) {
        return None;
    }
    Some(ids.into_iter().map(str::to_owned).collect())
}

/// Every text of `template` written per language has each of `declared` (a plain string is the
/// same text in every language and is not judged).
pub fn check_declared_languages(
    name: &str,
    template: &Shape,
    declared: &[String],
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    let base = Path::root().key("templates").key(name);
    for field in fields(template, &base) {
        let FieldValue::Text(text) = field.value else {
            continue;
        };
        let per_language = text
            .0
            .keys()
            .any(|lang| index.contains(&field.path.key(lang)));
        if !per_language {
            continue;
        }
        for lang in declared.iter().filter(|l| !text.0.contains_key(*l)) {
            out.push(
                Diagnostic::error(
                    codes::MISSING_LANGUAGE,
                    format!("template `{name}`: {} has no `{lang}` text", field.role),
                )
                .at(file, index.key(&field.path), format!("no `{lang}` here"))
                .help(format!(
                    "add `{lang}: ...`: the service speaks {} (routes.yaml `languages`), and a contact in `{lang}` would get English",
                    declared.join(", ")
                )),
            );
        }
    }
}

fn check_languages(
    text: &Text,
    field: &Field<'_>,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    for lang in text.0.keys() {
        if !LANGUAGES.contains(&lang.as_str()) {
            out.push(
                Diagnostic::error(
                    codes::UNKNOWN_LANGUAGE,
                    format!("unknown language `{lang}`"),
                )
                .at(
                    file,
                    index.key(&field.path.key(lang)),
                    "not a language easyMO serves",
                )
                .maybe_help(
                    easymo_dsl::diagnostic::did_you_mean(lang, LANGUAGES.iter().copied())
                        .or_else(|| Some("use `en`, `rw` (Kinyarwanda) or `fr`".to_owned())),
                ),
            );
        }
    }
    if !text.0.contains_key("en") {
        out.push(
            Diagnostic::error(
                codes::MISSING_ENGLISH,
                format!("{} has no English (`en`) text", field.role),
            )
            .at(file, index.key(&field.path), "add an `en` variant")
            .help("English is the fallback for contacts whose language has no variant"),
        );
    }
}

/// Counts WhatsApp limits: sections, rows and buttons, and ids that must be unique.
fn check_counts(
    name: &str,
    template: &Shape,
    base: &Path,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    match template {
        Shape::List(list) => list_counts(name, list, &base.key("list"), index, file, out),
        Shape::Buttons(buttons) => {
            button_counts(name, buttons, &base.key("buttons"), index, file, out)
        }
        Shape::Text(_) | Shape::LocationRequest(_) => {}
    }
}

fn list_counts(
    name: &str,
    list: &ListTemplate,
    lp: &Path,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    if list.sections.is_empty() || list.sections.len() > limits::MAX_SECTIONS {
        out.push(
            Diagnostic::error(
                codes::TOO_MANY_ITEMS,
                format!(
                    "list `{name}` has {} sections; WhatsApp allows 1 to {}",
                    list.sections.len(),
                    limits::MAX_SECTIONS
                ),
            )
            .at(file, index.key(&lp.key("sections")), ""),
        );
    }
    let fixed_rows: usize = list.sections.iter().map(|s| s.rows.len()).sum();
    if fixed_rows > limits::MAX_ROWS {
        out.push(
            Diagnostic::error(
                codes::TOO_MANY_ITEMS,
                format!(
                    "list `{name}` has {fixed_rows} rows; WhatsApp allows {} in total",
                    limits::MAX_ROWS
                ),
            )
            .at(
                file,
                index.key(&lp.key("sections")),
                "rows are counted across all sections",
            )
            .help("split the list, or move rarely used rows behind a \"More\" row"),
        );
    }
    for (i, section) in list.sections.iter().enumerate() {
        let sp = lp.key("sections").index(i);
        let dynamic = section.rows_from.is_some() || section.row.is_some();
        let problem = match (
            section.rows.is_empty(),
            dynamic,
            section.rows_from.is_some() && section.row.is_some(),
        ) {
            (true, false, _) => Some("a section needs `rows`, or `rows_from` with `row`"),
            (false, true, _) => {
                Some("a section has either fixed `rows` or `rows_from` with `row`, not both")
            }
            (true, true, false) => Some("`rows_from` and `row` go together"),
            _ => None,
        };
        if let Some(problem) = problem {
            out.push(Diagnostic::error(codes::INVALID_VALUE, problem).at(
                file,
                index.value(&sp),
                "",
            ));
        }
        if list.sections.len() > 1 && section.title.is_none() {
            out.push(
                Diagnostic::error(
                    codes::MISSING_FIELD,
                    "missing field `title`: a list with several sections needs a title on each",
                )
                .at(file, index.value(&sp), ""),
            );
        }
    }
    duplicates(
        list.sections.iter().enumerate().flat_map(|(i, s)| {
            let sp = lp.key("sections").index(i);
            s.rows
                .iter()
                .enumerate()
                .map(move |(j, r)| (sp.key("rows").index(j).key("id"), r.id.as_str()))
        }),
        "row id",
        name,
        index,
        file,
        out,
    );
}

fn button_counts(
    name: &str,
    buttons: &ButtonsTemplate,
    bp: &Path,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    if buttons.buttons.is_empty() || buttons.buttons.len() > limits::MAX_BUTTONS {
        out.push(
            Diagnostic::error(
                codes::TOO_MANY_ITEMS,
                format!(
                    "template `{name}` has {} reply buttons; WhatsApp allows 1 to {}",
                    buttons.buttons.len(),
                    limits::MAX_BUTTONS
                ),
            )
            .at(file, index.key(&bp.key("buttons")), "")
            .help("use a list template for more choices"),
        );
    }
    let items = || {
        buttons
            .buttons
            .iter()
            .enumerate()
            .map(|(i, b)| (bp.key("buttons").index(i), b))
    };
    duplicates(
        items().map(|(p, b)| (p.key("id"), b.id.as_str())),
        "button id",
        name,
        index,
        file,
        out,
    );
    for lang in LANGUAGES {
        duplicates(
            items().filter_map(|(p, b)| {
                let title = b.title.0.get(*lang)?;
                let localized = p.key("title").key(lang);
                let path = if index.contains(&localized) {
                    localized
                } else {
                    p.key("title")
                };
                Some((path, title.as_str()))
            }),
            "button title",
            name,
            index,
            file,
            out,
        );
    }
}

fn duplicates<'a>(
    items: impl Iterator<Item = (Path, &'a str)>,
    what: &str,
    name: &str,
    index: &YamlIndex,
    file: FileId,
    out: &mut Vec<Diagnostic>,
) {
    let mut seen: BTreeMap<&str, Path> = BTreeMap::new();
    for (path, value) in items {
        if let Some(first) = seen.get(value) {
            out.push(
                Diagnostic::error(
                    codes::DUPLICATE_BUTTON,
                    format!("template `{name}` has two of {what} \"{value}\""),
                )
                .at(file, index.value(&path), "repeated here")
                .also(file, index.value(first), "first used here")
                .help(format!(
                    "each {what} must be unique so the user's choice is unambiguous"
                )),
            );
        } else {
            seen.insert(value, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{literal_len, loads_templates};

    #[test]
    fn templates_may_not_load_others() {
        assert!(loads_templates("{% include row.name %}"));
        assert!(loads_templates("a {%- import 'x' as y %}"));
        assert!(!loads_templates("{% if fromage %}x{% endif %}"));
        assert!(!loads_templates(
            "{{ include }} {% for x in xs %}{% endfor %}"
        ));
    }

    #[test]
    fn literal_length_ignores_template_tags() {
        assert_eq!(literal_len("Hello {{ contact.name }}!"), 7);
        assert_eq!(literal_len("{% if x %}ab{% endif %}{# c #}"), 2);
        assert_eq!(literal_len("a { b } é"), 9);
        assert_eq!(literal_len("unclosed {{ x"), 9);
    }
}
