//! Replies rendered before, kept per config snapshot: a reload starts empty, so an edited
//! template is never answered from an old rendering.
//!
//! Why: most replies come out the same for everyone who gets them (a category list read by a
//! `cached for` query, a location request), and rendering a list through the template engine
//! was, in the load test, a third of the engine's own time per message.
//!
//! Owns: which variables a template reads, and the map from (template, language, page, the
//! values of those variables) to the rendered reply, with its bound on memory. Must not decide
//! what a reply says: [`crate::render`] does, and a kept reply is exactly what it returned,
//! addressed to whoever asks next.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::config::raw::{Row, Template, Text};
use crate::render::{self, RenderError, Rendered};

/// The most replies kept; past it, the map starts over.
const CAPACITY: usize = 1_000;
/// Replies whose inputs take more than this as a key (a long list bound per person, say) are
/// rendered every time: the map stays under about 1,000 × (this + a reply).
const MAX_KEY_BYTES: usize = 16 * 1024;

/// Variables that differ for every person or message: a template reading one is rendered
/// every time, since keeping its replies would only churn the map.
const PERSONAL: &[&str] = &["contact", "session", "message"];

/// The variables a template reads, as its `{{ }}` expressions and `rows_from` name them.
#[derive(Debug, Clone)]
pub struct Reads {
    /// The template's name.
    pub template: Arc<str>,
    /// Top-level names, sorted.
    pub names: Arc<[String]>,
    /// Whether its replies are worth keeping (it reads nothing personal).
    keep: bool,
}

/// Rendered replies of one config snapshot.
#[derive(Debug, Default)]
pub struct RenderCache {
    /// By template name; `None` when a text does not compile (rendering reports it).
    reads: Mutex<HashMap<String, Option<Reads>>>,
    /// By [`key_of`].
    replies: Mutex<HashMap<String, Arc<Rendered>>>,
}

impl RenderCache {
    /// What `template` (named `name`) reads; `None` when that cannot be told of one of its texts
    /// (see [`render::variables_read`]): such a template is rendered with every variable.
    pub fn reads(&self, name: &str, template: &Template) -> Option<Reads> {
        if let Some(known) = self.reads.lock().ok().and_then(|r| r.get(name).cloned()) {
            return known;
        }
        let reads = reads_of(name, template);
        if let Ok(mut all) = self.reads.lock() {
            all.insert(name.to_owned(), reads.clone());
        }
        reads
    }

    /// [`render::render`] of the template `reads` is about, answered from an earlier rendering
    /// when `vars` (which must hold every variable `reads` names, and only those) are the same
    /// as then.
    pub fn render(
        &self,
        template: &Template,
        reads: &Reads,
        language: &str,
        vars: &Map<String, Value>,
        to: &str,
        page_offset: usize,
    ) -> Result<Rendered, RenderError> {
        let name = &*reads.template;
        if !reads.keep {
            return render::render(name, template, language, vars, to, page_offset);
        }
        let key = key_of(name, language, page_offset, vars);
        if key.len() > MAX_KEY_BYTES {
            return render::render(name, template, language, vars, to, page_offset);
        }
        let kept = self.replies.lock().ok().and_then(|r| r.get(&key).cloned());
        if let Some(kept) = kept {
            let mut reply = Rendered::clone(&kept);
            if let Some(body) = reply.body.as_object_mut() {
                body.insert("to".into(), Value::String(to.to_owned()));
            }
            return Ok(reply);
        }
        let reply = render::render(name, template, language, vars, to, page_offset)?;
        if let Ok(mut replies) = self.replies.lock() {
            if replies.len() >= CAPACITY {
                replies.clear();
            }
            replies.insert(key, Arc::new(reply.clone()));
        }
        Ok(reply)
    }

    /// How many replies are kept (for tests).
    pub fn len(&self) -> usize {
        self.replies.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of(name: &str, language: &str, page_offset: usize, vars: &Map<String, Value>) -> String {
    // Values keep their JSON types (`1` and `"1"` may render alike, but need not).
    let values = serde_json::to_string(vars).unwrap_or_default();
    format!("{name}\u{0}{language}\u{0}{page_offset}\u{0}{values}")
}

/// Every name the template's texts read (in any language), plus the lists rows come from.
fn reads_of(name: &str, template: &Template) -> Option<Reads> {
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
    match template {
        Template::Text(t) => texts(&t.body, &mut sources),
        Template::LocationRequest(t) => texts(&t.body, &mut sources),
        Template::Buttons(t) => {
            for t in [&t.header, &t.footer].into_iter().flatten() {
                texts(t, &mut sources);
            }
            texts(&t.body, &mut sources);
            for button in &t.buttons {
                sources.push(&button.id);
                texts(&button.title, &mut sources);
            }
        }
        Template::List(t) => {
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
        names.extend(render::variables_read(source)?);
    }
    let keep = !names.iter().any(|n| PERSONAL.contains(&n.as_str()));
    Some(Reads {
        template: name.into(),
        names: names.into_iter().collect(),
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{template, vars};
    use serde_json::json;

    const CATEGORIES: &str = "list:\n  header: \"{{ title }}\"\n  body: {en: Choose one., rw: Hitamo.}\n  button: Categories\n  sections:\n    - rows_from: categories\n      row:\n        id: \"cat:{{ row.id }}\"\n        title: \"{{ row.name }}\"\n";

    #[test]
    fn reads_every_text_and_the_lists_rows_come_from() {
        let cache = RenderCache::default();
        let reads = cache
            .reads("categories", &template(CATEGORIES))
            .expect("compiles");
        assert_eq!(&*reads.names, ["categories", "row", "title"]);
        assert!(reads.keep);
        let personal = template("text:\n  body: {en: \"Hi {{ contact.name }}\", fr: \"{% if session.x %}x{% endif %}\"}\n");
        let reads = cache.reads("greeting", &personal).expect("compiles");
        assert_eq!(&*reads.names, ["contact", "session"]);
        assert!(!reads.keep);
        let broken = template("text:\n  body: \"{{ unclosed\"\n");
        assert!(cache.reads("broken", &broken).is_none());
        // The analysis would miss `name` here (it is assigned before it is read): every
        // variable, no keeping.
        let assigning =
            template("text:\n  body: \"{%- set name = name | default('there') %}Hi {{ name }}\"\n");
        assert!(cache.reads("assigning", &assigning).is_none());
        let settings = template("text:\n  body: \"{{ settings }} {{ setup }}\"\n");
        let reads = cache.reads("settings", &settings).expect("no assignment");
        assert_eq!(&*reads.names, ["settings", "setup"]);
    }

    #[test]
    fn a_kept_reply_is_the_same_rendering_addressed_to_the_next_person() {
        let cache = RenderCache::default();
        let t = template(CATEGORIES);
        let reads = cache.reads("categories", &t).expect("compiles");
        let v = vars(
            json!({"title": "Shop", "categories": [{"id": 1, "name": "Groceries"}, {"id": 2, "name": "Phones"}]}),
        );
        let first = cache
            .render(&t, &reads, "en", &v, "250788000001", 0)
            .expect("renders");
        let second = cache
            .render(&t, &reads, "en", &v, "250788000002", 0)
            .expect("renders");
        assert_eq!(cache.len(), 1, "the second came from the first");
        let fresh = render::render("categories", &t, "en", &v, "250788000002", 0).expect("renders");
        assert_eq!(second, fresh);
        assert_eq!(first.body["to"], "250788000001");

        // Any difference in what the template reads, or in language or page, is another reply.
        let mut changed = v.clone();
        changed.insert(
            "categories".into(),
            json!([{"id": 1, "name": "Fresh food"}]),
        );
        let other = cache
            .render(&t, &reads, "en", &changed, "250788000002", 0)
            .expect("renders");
        assert_eq!(
            other.body["interactive"]["action"]["sections"][0]["rows"],
            json!([{"id": "cat:1", "title": "Fresh food"}])
        );
        let rw = cache
            .render(&t, &reads, "rw", &v, "250788000002", 0)
            .expect("renders");
        assert_eq!(rw.body["interactive"]["body"]["text"], "Hitamo.");
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn replies_with_large_inputs_are_not_kept() {
        let cache = RenderCache::default();
        let t = template(CATEGORIES);
        let reads = cache.reads("categories", &t).expect("compiles");
        let many: Vec<Value> = (0..2_000)
            .map(|i| json!({"id": i, "name": format!("Category {i}")}))
            .collect();
        let v = vars(json!({"title": "Shop", "categories": many}));
        let reply = cache
            .render(&t, &reads, "en", &v, "250788000001", 0)
            .expect("renders");
        assert_eq!(
            reply,
            render::render("categories", &t, "en", &v, "250788000001", 0).expect("renders")
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn personal_replies_are_rendered_every_time() {
        let cache = RenderCache::default();
        let t = template("text:\n  body: \"Hi {{ contact.name }}\"\n");
        let reads = cache.reads("greeting", &t).expect("compiles");
        for name in ["Aline", "Jean"] {
            let v = vars(json!({"contact": {"name": name}}));
            let reply = cache
                .render(&t, &reads, "en", &v, "250788000001", 0)
                .expect("renders");
            assert_eq!(reply.body["text"]["body"], format!("Hi {name}"));
        }
        assert!(cache.is_empty());
    }
}
