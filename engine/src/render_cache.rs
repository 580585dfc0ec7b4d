//! Replies rendered before, kept per config snapshot: a reload starts empty, so an edited
//! template is never answered from an old rendering.
//!
//! Why: most replies come out the same for everyone who gets them (a category list read by a
//! `cached for` query, a location request), and rendering a list through the template engine
//! was, in the load test, a third of the engine's own time per message.
//!
//! Owns: the map from (template, language, page, the values of the variables it reads) to the
//! rendered reply, with its bound on memory. Which variables a template reads is worked out
//! once, when the config is compiled ([`crate::config::reply`]). Must not decide
//! what a reply says: [`crate::render`] does, and a kept reply is exactly what it returned,
//! addressed to whoever asks next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::config::reply::{Reads, ReplyTemplate};
use crate::render::{self, RenderError, Rendered};

/// The most replies kept; past it, the map starts over.
const CAPACITY: usize = 1_000;
/// Replies whose inputs take more than this as a key (a long list bound per person, say) are
/// rendered every time: the map stays under about 1,000 × (this + a reply).
const MAX_KEY_BYTES: usize = 16 * 1024;

/// Rendered replies of one config snapshot.
#[derive(Debug, Default)]
pub struct RenderCache {
    /// By [`key_of`].
    replies: Mutex<HashMap<String, Arc<Rendered>>>,
}

impl RenderCache {
    /// [`render::render`] of `template`, which reads what `reads` names, answered from an
    /// earlier rendering when `vars` (which must hold every variable `reads` names, and only
    /// those) are the same as then.
    pub fn render(
        &self,
        template: &ReplyTemplate,
        reads: &Reads,
        language: &str,
        vars: &Map<String, Value>,
        to: &str,
        page_offset: usize,
    ) -> Result<Rendered, RenderError> {
        let name = &*template.name;
        let shape = &template.shape;
        if !reads.impersonal {
            return render::render(name, shape, language, vars, to, page_offset);
        }
        let key = key_of(name, language, page_offset, vars);
        if key.len() > MAX_KEY_BYTES {
            return render::render(name, shape, language, vars, to, page_offset);
        }
        let kept = self.replies.lock().ok().and_then(|r| r.get(&key).cloned());
        if let Some(kept) = kept {
            let mut reply = Rendered::clone(&kept);
            if let Some(body) = reply.body.as_object_mut() {
                body.insert("to".into(), Value::String(to.to_owned()));
            }
            return Ok(reply);
        }
        let reply = render::render(name, shape, language, vars, to, page_offset)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{template, vars};
    use serde_json::json;

    const CATEGORIES: &str = "list:\n  header: \"{{ title }}\"\n  body: {en: Choose one., rw: Hitamo.}\n  button: Categories\n  sections:\n    - rows_from: categories\n      row:\n        id: \"cat:{{ row.id }}\"\n        title: \"{{ row.name }}\"\n";

    #[test]
    fn a_kept_reply_is_the_same_rendering_addressed_to_the_next_person() {
        let cache = RenderCache::default();
        let t = ReplyTemplate::new("categories", template(CATEGORIES));
        let reads = t.reads.clone().expect("compiles");
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
        let fresh =
            render::render("categories", &t.shape, "en", &v, "250788000002", 0).expect("renders");
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
        let t = ReplyTemplate::new("categories", template(CATEGORIES));
        let reads = t.reads.clone().expect("compiles");
        let many: Vec<Value> = (0..2_000)
            .map(|i| json!({"id": i, "name": format!("Category {i}")}))
            .collect();
        let v = vars(json!({"title": "Shop", "categories": many}));
        let reply = cache
            .render(&t, &reads, "en", &v, "250788000001", 0)
            .expect("renders");
        assert_eq!(
            reply,
            render::render("categories", &t.shape, "en", &v, "250788000001", 0).expect("renders")
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn personal_replies_are_rendered_every_time() {
        let cache = RenderCache::default();
        let t = ReplyTemplate::new(
            "greeting",
            template("text:\n  body: \"Hi {{ contact.name }}\"\n"),
        );
        let reads = t.reads.clone().expect("compiles");
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
