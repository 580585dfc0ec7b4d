//! Reply templates: what routes.yaml says each reply is (its [`Shape`]), compiled once into a
//! [`ReplyTemplate`] that knows which variables it reads.
//!
//! Owns: the message shapes (text, list, buttons, location request) in every language, and
//! working out, at load time, which top-level variables a template's texts read, so the runtime
//! gathers only those and can tell a reply that comes out the same for everyone. Must not render:
//! `crate::render` fills a shape with values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Variables that differ for every person or message: a template reading one is rendered
/// every time, since keeping its replies would only churn a cache.
const PERSONAL: &[&str] = &["contact", "session", "message"];

/// A reply template, compiled.
#[derive(Debug, Clone)]
pub struct ReplyTemplate {
    /// Its name in routes.yaml.
    pub name: Arc<str>,
    /// What it says.
    pub shape: Shape,
    /// What it reads; `None` when that cannot be told of one of its texts (see
    /// [`variables_read`]): such a template is rendered with every variable.
    pub reads: Option<Reads>,
}

impl ReplyTemplate {
    /// Compiles `shape`, named `name`.
    pub fn new(name: &str, shape: Shape) -> Self {
        let reads = Reads::of(&shape);
        ReplyTemplate {
            name: name.into(),
            shape,
            reads,
        }
    }
}

/// The variables a template reads, as its `{{ }}` expressions and `rows_from` name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    /// Top-level names, sorted.
    pub names: Arc<[String]>,
    /// Whether it reads nothing personal, so its replies come out the same for everyone who
    /// gets them with the same values.
    pub impersonal: bool,
}

impl Reads {
    /// Every name the template's texts read (in any language), plus the lists rows come from.
    fn of(shape: &Shape) -> Option<Reads> {
        let mut sources: Vec<&str> = Vec::new();
        let mut lists: Vec<&str> = Vec::new();
        fn texts<'a>(t: &'a Text, out: &mut Vec<&'a str>) {
            out.extend(t.0.values().map(String::as_str));
        }
        fn row<'a>(r: &'a Row, out: &mut Vec<&'a str>) {
            out.push(&r.id);
            texts(&r.title, out);
            if let Some(d) = &r.description {
                texts(d, out);
            }
        }
        match shape {
            Shape::Text(t) => texts(&t.body, &mut sources),
            Shape::LocationRequest(t) => texts(&t.body, &mut sources),
            Shape::Buttons(t) => {
                for t in [&t.header, &t.footer].into_iter().flatten() {
                    texts(t, &mut sources);
                }
                texts(&t.body, &mut sources);
                for button in &t.buttons {
                    sources.push(&button.id);
                    texts(&button.title, &mut sources);
                }
            }
            Shape::List(t) => {
                for t in [&t.header, &t.footer].into_iter().flatten() {
                    texts(t, &mut sources);
                }
                texts(&t.body, &mut sources);
                texts(&t.button, &mut sources);
                for section in &t.sections {
                    if let Some(title) = &section.title {
                        texts(title, &mut sources);
                    }
                    for r in &section.rows {
                        row(r, &mut sources);
                    }
                    if let Some(r) = &section.row {
                        row(r, &mut sources);
                    }
                    if let Some(from) = &section.rows_from {
                        lists.push(from);
                    }
                }
            }
        }
        let mut names: BTreeSet<String> = lists.into_iter().map(str::to_owned).collect();
        for source in sources {
            names.extend(variables_read(source)?);
        }
        let impersonal = !names.iter().any(|n| PERSONAL.contains(&n.as_str()));
        Some(Reads {
            names: names.into_iter().collect(),
            impersonal,
        })
    }
}

/// The top-level variables `source` reads (`contact` for `{{ contact.name }}`), or `None` when
/// that cannot be told: the text does not compile, or it assigns names (`set`, `with`, macros,
/// calls). minijinja's analysis records an assigned name before it reads the value assigned, so
/// `{% set name = name | default("there") %}` would not list `name`.
pub fn variables_read(source: &str) -> Option<std::collections::HashSet<String>> {
    if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
        return Some(Default::default());
    }
    if assigns(source) {
        return None;
    }
    let env = minijinja::Environment::new();
    let template = env.template_from_str(source).ok()?;
    Some(template.undeclared_variables(false))
}

/// Whether a block tag of `source` assigns a name.
fn assigns(source: &str) -> bool {
    source.match_indices("{%").any(|(at, _)| {
        let tag = source[at + 2..].trim_start_matches(['-', '+']).trim_start();
        ["set", "with", "macro", "call"].iter().any(|keyword| {
            tag.strip_prefix(keyword)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|next| !next.is_alphanumeric() && next != '_')
        })
    })
}

/// A reply template: one of the WhatsApp message kinds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Template")]
pub enum Shape {
    /// A text message.
    Text(TextTemplate),
    /// An interactive list.
    List(ListTemplate),
    /// Up to three reply buttons.
    Buttons(ButtonsTemplate),
    /// A request for the user's location.
    LocationRequest(LocationRequestTemplate),
}

impl Shape {
    /// The kind as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Text(_) => "text",
            Shape::List(_) => "list",
            Shape::Buttons(_) => "buttons",
            Shape::LocationRequest(_) => "location_request",
        }
    }
}

/// A text message.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextTemplate {
    /// The text.
    pub body: Text,
    /// Show a link preview.
    #[serde(default)]
    pub preview_url: bool,
}

/// An interactive list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTemplate {
    /// Optional header text.
    #[serde(default)]
    pub header: Option<Text>,
    /// Body text.
    pub body: Text,
    /// Optional footer text.
    #[serde(default)]
    pub footer: Option<Text>,
    /// Label of the button that opens the list.
    pub button: Text,
    /// Sections of rows.
    pub sections: Vec<Section>,
}

/// A list section: fixed rows, or one row per item of a bound list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Section title.
    #[serde(default)]
    pub title: Option<Text>,
    /// Fixed rows.
    #[serde(default)]
    pub rows: Vec<Row>,
    /// Variable holding the list the rows come from.
    #[serde(default)]
    pub rows_from: Option<String>,
    /// The row for each item; the item is `row`.
    #[serde(default)]
    pub row: Option<Row>,
}

/// A list row.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Id sent back when chosen.
    pub id: String,
    /// Title.
    pub title: Text,
    /// Optional description.
    #[serde(default)]
    pub description: Option<Text>,
}

/// Reply buttons.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonsTemplate {
    /// Optional header text.
    #[serde(default)]
    pub header: Option<Text>,
    /// Body text.
    pub body: Text,
    /// Optional footer text.
    #[serde(default)]
    pub footer: Option<Text>,
    /// One to three buttons.
    pub buttons: Vec<Button>,
}

/// A reply button.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Id sent back when tapped.
    pub id: String,
    /// Label.
    pub title: Text,
}

/// A location request.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationRequestTemplate {
    /// Body text.
    pub body: Text,
}

/// Text in one or more languages: a plain string (English), or a map `{en, rw, fr}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a map of language code to string (en, rw, fr)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(BTreeMap::from([("en".to_owned(), v.to_owned())])))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(Text(out))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TextSchema {
    Plain(String),
    Localized(BTreeMap<String, String>),
}

impl JsonSchema for Text {
    fn schema_name() -> String {
        "Text".to_owned()
    }
    fn json_schema(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        TextSchema::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(name: &str, yaml: &str) -> ReplyTemplate {
        // As the config loader does: YAML → JSON value → typed (serde_yaml wants `!tags` for enums).
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
        let shape = serde_json::from_value(serde_json::to_value(value).expect("json"));
        ReplyTemplate::new(name, shape.expect("template"))
    }

    #[test]
    fn reads_every_text_and_the_lists_rows_come_from() {
        let categories = compiled("categories", "list:\n  header: \"{{ title }}\"\n  body: {en: Choose one., rw: Hitamo.}\n  button: Categories\n  sections:\n    - rows_from: categories\n      row:\n        id: \"cat:{{ row.id }}\"\n        title: \"{{ row.name }}\"\n");
        let reads = categories.reads.expect("compiles");
        assert_eq!(&*reads.names, ["categories", "row", "title"]);
        assert!(reads.impersonal);
        let personal = compiled("greeting", "text:\n  body: {en: \"Hi {{ contact.name }}\", fr: \"{% if session.x %}x{% endif %}\"}\n");
        let reads = personal.reads.expect("compiles");
        assert_eq!(&*reads.names, ["contact", "session"]);
        assert!(!reads.impersonal);
        assert!(compiled("broken", "text:\n  body: \"{{ unclosed\"\n")
            .reads
            .is_none());
        // The analysis would miss `name` here (it is assigned before it is read): every
        // variable, no keeping.
        let assigning = compiled(
            "assigning",
            "text:\n  body: \"{%- set name = name | default('there') %}Hi {{ name }}\"\n",
        );
        assert!(assigning.reads.is_none());
        let settings = compiled(
            "settings",
            "text:\n  body: \"{{ settings }} {{ setup }}\"\n",
        );
        assert_eq!(
            &*settings.reads.expect("no assignment").names,
            ["settings", "setup"]
        );
    }
}
