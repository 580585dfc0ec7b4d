//! Templates → the exact JSON bodies the Graph API `/{phone-number-id}/messages` accepts, and a
//! phone-like preview of the same message for `easymo simulate`.
//!
//! Owns: picking the contact's language (English as fallback), filling `{{ }}` variables,
//! cutting dynamic text to WhatsApp's limits on a character boundary with an ellipsis, and
//! paging lists longer than ten rows behind a "More" row. Must not touch the database.

use serde_json::{json, Map, Value};

use crate::config::reply::{ButtonsTemplate, ListTemplate, Row, Shape, Text};
use crate::limits;

/// The id of the "More" row; the offset of the next page follows the colon.
pub const MORE_ROW_PREFIX: &str = "__more__:";

/// A reply ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The template's name.
    pub template: String,
    /// The Graph API request body.
    pub body: Value,
    /// The message as a person would read it on the phone.
    pub preview: String,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template has no such name.
    #[error("unknown template `{0}`")]
    Unknown(String),
    /// A `{{ }}` expression failed.
    #[error("template `{template}`: {source}")]
    Template {
        /// Template name.
        template: String,
        /// The minijinja error.
        source: minijinja::Error,
    },
    /// A list with no rows: WhatsApp rejects it.
    #[error("template `{0}` has no rows to show")]
    EmptyList(String),
}

/// Renders `template` for `to` in `language`. `vars` holds the reply's bindings plus `contact`,
/// `session` and `message`; `page_offset` is the first row of a paged list.
pub fn render(
    name: &str,
    template: &Shape,
    language: &str,
    vars: &Map<String, Value>,
    to: &str,
    page_offset: usize,
) -> Result<Rendered, RenderError> {
    let filler = Filler {
        template: name,
        language,
        // Converted once: every string of the reply (a list has dozens) reads the same context.
        context: Context::from_serialize(vars),
    };
    let (message, preview) = match template {
        Shape::Text(t) => {
            let body = filler.text(&t.body, limits::TEXT_BODY)?;
            (
                json!({"type": "text", "text": {"preview_url": t.preview_url, "body": body}}),
                body,
            )
        }
        Shape::LocationRequest(t) => {
            let body = filler.text(&t.body, limits::LOCATION_BODY)?;
            let preview = format!("{body}\n[ 📍 Send location ]");
            (
                json!({"type": "interactive", "interactive": {"type": "location_request_message", "body": {"text": body}, "action": {"name": "send_location"}}}),
                preview,
            )
        }
        Shape::Buttons(t) => buttons(&filler, t)?,
        Shape::List(t) => list(&filler, t, vars, page_offset)?,
    };
    let mut body =
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to});
    if let (Some(body), Value::Object(message)) = (body.as_object_mut(), message) {
        body.extend(message);
    }
    Ok(Rendered {
        template: name.to_owned(),
        body,
        preview,
    })
}

/// What templates read: the reply's bindings, `contact`, `session` and `message`.
type Context = minijinja::Value;

/// Fills the strings of one reply: one template name for errors, one language, one context.
struct Filler<'a> {
    template: &'a str,
    language: &'a str,
    context: Context,
}

impl Filler<'_> {
    /// Fills `{{ }}` in a plain string (ids) and cuts the result to `limit`. Most strings have
    /// no placeholder and skip the template engine.
    fn plain(&self, source: &str, limit: usize) -> Result<String, RenderError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(cut(source.trim(), limit));
        }
        let filled = compiled()
            .get_template(source)
            .and_then(|template| template.render(&self.context))
            .map_err(|source| RenderError::Template {
                template: self.template.to_owned(),
                source,
            })?;
        Ok(cut(filled.trim(), limit))
    }

    /// The same for localized text, in the contact's language.
    fn text(&self, text: &Text, limit: usize) -> Result<String, RenderError> {
        self.plain(pick(text, self.language), limit)
    }

    /// A filler for one row of a dynamic list: the same context plus `row`.
    fn with_row(&self, item: &Value) -> Self {
        Filler {
            template: self.template,
            language: self.language,
            context: minijinja::context! { row => Context::from_serialize(item), ..self.context.clone() },
        }
    }
}

/// Reply buttons under a header, body and footer.
fn buttons(filler: &Filler<'_>, t: &ButtonsTemplate) -> Result<(Value, String), RenderError> {
    let mut interactive = Map::new();
    interactive.insert("type".into(), json!("button"));
    let mut preview = frame(
        &mut interactive,
        filler,
        t.header.as_ref(),
        (&t.body, limits::BUTTONS_BODY),
        t.footer.as_ref(),
    )?;
    let mut buttons = Vec::new();
    for button in &t.buttons {
        let title = filler.text(&button.title, limits::BUTTON_TITLE)?;
        let id = filler.plain(&button.id, limits::BUTTON_ID)?;
        preview.push_str(&format!("\n[ {title} ]"));
        buttons.push(json!({"type": "reply", "reply": {"id": id, "title": title}}));
    }
    interactive.insert("action".into(), json!({"buttons": buttons}));
    Ok((
        json!({"type": "interactive", "interactive": interactive}),
        preview,
    ))
}

/// A list message: every row of every section (fixed rows, then rows from a variable), one
/// page of at most ten, with a "More" row when more follow.
fn list(
    filler: &Filler<'_>,
    t: &ListTemplate,
    vars: &Map<String, Value>,
    page_offset: usize,
) -> Result<(Value, String), RenderError> {
    let mut interactive = Map::new();
    interactive.insert("type".into(), json!("list"));
    let mut preview = frame(
        &mut interactive,
        filler,
        t.header.as_ref(),
        (&t.body, limits::LIST_BODY),
        t.footer.as_ref(),
    )?;
    let all = list_rows(filler, t, vars)?;
    let total = all.len();
    let start = page_offset.min(total);
    let more = total - start > limits::MAX_ROWS;
    let take = if more {
        limits::MAX_ROWS - 1
    } else {
        limits::MAX_ROWS
    };
    let page: Vec<(usize, Value)> = all.into_iter().skip(start).take(take).collect();
    if page.is_empty() {
        return Err(RenderError::EmptyList(filler.template.to_owned()));
    }
    let button = filler.text(&t.button, limits::LIST_BUTTON)?;
    let mut sections: Vec<Value> = Vec::new();
    let mut last_section = None;
    for (number, (s, row)) in page.iter().enumerate() {
        let title = row["title"].as_str().unwrap_or_default();
        let line = match row.get("description").and_then(Value::as_str) {
            Some(d) => format!("\n{}. {title} — {d}", number + 1),
            None => format!("\n{}. {title}", number + 1),
        };
        preview.push_str(&line);
        if last_section != Some(*s) {
            let mut section = Map::new();
            if let Some(title) = &t.sections[*s].title {
                section.insert(
                    "title".into(),
                    json!(filler.text(title, limits::SECTION_TITLE)?),
                );
            }
            section.insert("rows".into(), json!([]));
            sections.push(Value::Object(section));
            last_section = Some(*s);
        }
        push_row(&mut sections, row.clone());
    }
    if more {
        let more_title = match filler.language {
            "rw" => "Ibindi…",
            "fr" => "Plus…",
            _ => "More…",
        };
        let row = json!({"id": format!("{MORE_ROW_PREFIX}{}", start + take), "title": more_title});
        preview.push_str(&format!("\n{}. {more_title}", page.len() + 1));
        push_row(&mut sections, row);
    }
    // WhatsApp wants a title on every section once there are several.
    if sections.len() > 1 {
        for (i, section) in sections.iter_mut().enumerate() {
            if let Some(map) = section.as_object_mut() {
                map.entry("title")
                    .or_insert_with(|| json!(format!("{}", i + 1)));
            }
        }
    }
    preview.push_str(&format!("\n[ ☰ {button} ]"));
    interactive.insert(
        "action".into(),
        json!({"button": button, "sections": sections}),
    );
    Ok((
        json!({"type": "interactive", "interactive": interactive}),
        preview,
    ))
}

/// Every row of the list with its section's index, in order.
fn list_rows(
    filler: &Filler<'_>,
    t: &ListTemplate,
    vars: &Map<String, Value>,
) -> Result<Vec<(usize, Value)>, RenderError> {
    let mut all = Vec::new();
    for (s, section) in t.sections.iter().enumerate() {
        for row in &section.rows {
            all.push((s, render_row(row, filler)?));
        }
        if let (Some(from), Some(row)) = (&section.rows_from, &section.row) {
            let items = vars.get(from).and_then(Value::as_array);
            for item in items.into_iter().flatten() {
                all.push((s, render_row(row, &filler.with_row(item))?));
            }
        }
    }
    Ok(all)
}

/// Appends `row` to the last section.
fn push_row(sections: &mut [Value], row: Value) {
    if let Some(rows) = sections
        .last_mut()
        .and_then(|s| s.get_mut("rows"))
        .and_then(Value::as_array_mut)
    {
        rows.push(row);
    }
}

/// Every template string rendered so far, compiled once. A template's name is its source, so
/// an entry can never go stale: a reload that edits a text simply uses a new name. Sources come
/// only from loaded configs (never from messages; lint refuses texts that include others), so
/// the map stays as small as the configs.
fn compiled() -> &'static minijinja::Environment<'static> {
    static ENVIRONMENT: std::sync::OnceLock<minijinja::Environment<'static>> =
        std::sync::OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_loader(|source| Ok(Some(source.to_owned())));
        // Names are sources: one ending in `.html` must not switch on HTML escaping.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("default", default_filter);
        env.add_filter("d", default_filter);
        env
    })
}

/// `default` as lint's E325 promises it: a null column or an absent profile name takes the
/// default too, where minijinja's own `default` only replaces undefined values (and a null
/// would print as `none`).
fn default_filter(
    value: minijinja::Value,
    other: Option<minijinja::Value>,
    falsy_too: Option<bool>,
) -> minijinja::Value {
    let absent =
        value.is_undefined() || value.is_none() || (falsy_too == Some(true) && !value.is_true());
    if absent {
        other.unwrap_or_else(|| minijinja::Value::from(""))
    } else {
        value
    }
}

/// Header, body and footer of an interactive message; returns the preview so far.
fn frame(
    interactive: &mut Map<String, Value>,
    filler: &Filler<'_>,
    header: Option<&Text>,
    (body, body_limit): (&Text, usize),
    footer: Option<&Text>,
) -> Result<String, RenderError> {
    let mut preview = String::new();
    if let Some(header) = header {
        let text = filler.text(header, limits::HEADER)?;
        preview.push_str(&format!("*{text}*\n"));
        interactive.insert("header".into(), json!({"type": "text", "text": text}));
    }
    let text = filler.text(body, body_limit)?;
    preview.push_str(&text);
    interactive.insert("body".into(), json!({"text": text}));
    if let Some(footer) = footer {
        let text = filler.text(footer, limits::FOOTER)?;
        preview.push_str(&format!("\n_{text}_"));
        interactive.insert("footer".into(), json!({"text": text}));
    }
    Ok(preview)
}

fn render_row(row: &Row, filler: &Filler<'_>) -> Result<Value, RenderError> {
    let id = filler.plain(&row.id, limits::ROW_ID)?;
    let mut out = json!({"id": id, "title": filler.text(&row.title, limits::ROW_TITLE)?});
    if let Some(description) = &row.description {
        let text = filler.text(description, limits::ROW_DESCRIPTION)?;
        if !text.is_empty() {
            out["description"] = json!(text);
        }
    }
    Ok(out)
}

/// The variant for `language`, else English.
fn pick<'a>(text: &'a Text, language: &str) -> &'a str {
    text.0
        .get(language)
        .or_else(|| text.0.get("en"))
        .map(String::as_str)
        .unwrap_or_default()
}

/// Cuts `text` to `limit` as WhatsApp's limits count, between graphemes, ending with `…` when it
/// had to cut ([`crate::limits::cut`]).
pub fn cut(text: &str, limit: usize) -> String {
    crate::limits::cut(text, limit).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A template as the config loader reads it.
    pub(crate) fn template(yaml: &str) -> Shape {
        // As the config loader does: YAML → JSON value → typed (serde_yaml wants `!tags` for enums).
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
        serde_json::from_value(serde_json::to_value(value).expect("json")).expect("template")
    }

    /// The variables in a JSON object.
    pub(crate) fn vars(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn text_follows_the_language_with_english_fallback() {
        let t = template(
            "text:\n  body: {en: \"Hi {{ contact.name }}\", rw: \"Muraho {{ contact.name }}\"}\n",
        );
        let v = vars(json!({"contact": {"name": "Aline"}}));
        let rw = render("t", &t, "rw", &v, "250788000001", 0).expect("renders");
        assert_eq!(
            rw.body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "250788000001", "type": "text", "text": {"preview_url": false, "body": "Muraho Aline"}})
        );
        let fr = render("t", &t, "fr", &v, "250788000001", 0).expect("renders");
        assert_eq!(fr.body["text"]["body"], "Hi Aline");
    }

    #[test]
    fn a_default_stands_in_for_a_null_as_well_as_a_missing_value() {
        let t = template(
            "text:\n  body: \"Hi {{ contact.name | default('there') }}, {{ job.salary | d('n/a') }} {{ job.title | default('x', true) }}\"\n",
        );
        let v = vars(json!({"contact": {"name": null}, "job": {"title": ""}}));
        let out = render("t", &t, "en", &v, "250788000001", 0).expect("renders");
        assert_eq!(out.body["text"]["body"], "Hi there, n/a x");
        let v = vars(json!({"contact": {"name": "Aline"}, "job": {"salary": 0, "title": "Cook"}}));
        let out = render("t", &t, "en", &v, "250788000001", 0).expect("renders");
        assert_eq!(out.body["text"]["body"], "Hi Aline, 0 Cook");
    }

    #[test]
    fn dynamic_lists_are_cut_to_limits_and_paged() {
        let t = template(
            "list:\n  body: Jobs\n  button: See all the open jobs now\n  sections:\n    - rows_from: jobs\n      row:\n        id: \"{{ row.id }}\"\n        title: \"{{ row.title }}\"\n        description: \"{{ row.d }}\"\n",
        );
        let jobs: Vec<Value> = (1..=23).map(|i| json!({"id": i, "title": format!("A very long job title number {i}"), "d": "x".repeat(100)})).collect();
        let v = vars(json!({"jobs": jobs}));
        let first = render("jobs", &t, "en", &v, "250788000001", 0).expect("renders");
        let action = &first.body["interactive"]["action"];
        assert_eq!(
            action["button"].as_str().map(crate::limits::length),
            Some(20)
        );
        let rows = action["sections"][0]["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 10, "nine rows and More");
        for row in rows {
            assert!(
                crate::limits::length(row["title"].as_str().expect("title")) <= 24,
                "{row}"
            );
            assert!(
                row["description"].as_str().map_or(0, crate::limits::length) <= 72,
                "{row}"
            );
        }
        assert_eq!(rows[9]["id"], "__more__:9");
        let last = render("jobs", &t, "en", &v, "250788000001", 18).expect("renders");
        let rows = last.body["interactive"]["action"]["sections"][0]["rows"]
            .as_array()
            .expect("rows");
        assert_eq!(rows.len(), 5, "the last page has no More row");
        assert_eq!(rows[0]["id"], "19");
        assert!(matches!(
            render("jobs", &t, "en", &vars(json!({"jobs": []})), "x", 0),
            Err(RenderError::EmptyList(_))
        ));
    }

    #[test]
    fn buttons_and_location_requests_have_the_graph_api_shape() {
        let b = template("buttons:\n  body: Apply?\n  buttons:\n    - {id: apply, title: Apply for this job right now}\n    - {id: back, title: Back}\n");
        let rendered = render("b", &b, "en", &Map::new(), "x", 0).expect("renders");
        assert_eq!(rendered.body["interactive"]["type"], "button");
        assert_eq!(
            rendered.body["interactive"]["action"]["buttons"][0],
            json!({"type": "reply", "reply": {"id": "apply", "title": "Apply for this job…"}})
        );
        let l = template("location_request:\n  body: Where are you?\n");
        let rendered = render("l", &l, "en", &Map::new(), "x", 0).expect("renders");
        assert_eq!(
            rendered.body["interactive"],
            json!({"type": "location_request_message", "body": {"text": "Where are you?"}, "action": {"name": "send_location"}})
        );
    }
}
