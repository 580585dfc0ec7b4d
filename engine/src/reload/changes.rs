//! What a reload changed, in the words of the people who edit routes.yaml: which keywords,
//! templates and flows were added, removed or changed.
//!
//! Owns: comparing two compiled configs item by item. Must not load or swap anything:
//! [`super::Reloader`] does, and shows the result on `/admin/config`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;

/// Names added, removed and changed in one kind of item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// New names.
    pub added: Vec<String>,
    /// Names gone.
    pub removed: Vec<String>,
    /// Names whose content differs.
    pub changed: Vec<String>,
}

impl Diff {
    /// Compares two maps of name → fingerprint.
    fn of(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Diff {
        let mut diff = Diff::default();
        for (name, fingerprint) in new {
            match old.get(name) {
                None => diff.added.push(name.clone()),
                Some(before) if before != fingerprint => diff.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        diff.removed = old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect();
        diff
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What changed between two configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Keywords, as `endpoint "keyword"`; a keyword changed when its flow, match mode, tier or
    /// language did.
    pub routes: Diff,
    /// Templates by name.
    pub templates: Diff,
    /// Flows by name.
    pub flows: Diff,
}

impl Changes {
    /// What `new` changes of `old`.
    pub fn between(old: &Config, new: &Config) -> Changes {
        Changes {
            routes: Diff::of(&keywords(old), &keywords(new)),
            templates: Diff::of(&templates(old), &templates(new)),
            flows: Diff::of(&flows(old), &flows(new)),
        }
    }

    /// Whether nothing a product person edits changed (server settings or comments may have).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.templates.is_empty() && self.flows.is_empty()
    }
}

fn keywords(config: &Config) -> BTreeMap<String, String> {
    config
        .endpoints
        .iter()
        .filter_map(|e| Some((e, e.router.as_ref()?)))
        .flat_map(|(endpoint, router)| {
            router.keywords.iter().map(move |k| {
                (
                    format!("{} \"{}\"", endpoint.name, k.keyword),
                    format!("{:?} {:?} {} {:?}", k.tier, k.mode, k.flow, k.language),
                )
            })
        })
        .collect()
}

fn templates(config: &Config) -> BTreeMap<String, String> {
    config
        .templates
        .iter()
        .map(|(name, template)| (name.clone(), format!("{:?}", template.shape)))
        .collect()
}

/// Flows by what they do, not where they are written: moving a flow down a file is no change.
fn flows(config: &Config) -> BTreeMap<String, String> {
    config
        .flows
        .files
        .iter()
        .flat_map(|(_, file)| &file.flows)
        .map(|flow| (flow.name.node.clone(), without_spans(&format!("{flow:?}"))))
        .collect()
}

/// A `Debug` rendering with every `span: Span { start: .., end: .. }` taken out.
fn without_spans(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(at) = rest.find("span: Span {") {
        out.push_str(&rest[..at]);
        rest = rest[at..].find('}').map_or("", |end| &rest[at + end + 1..]);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_not_content() {
        assert_eq!(
            without_spans(
                "Flow { name: Spanned { node: \"a\", span: Span { start: 1, end: 2 } } }"
            ),
            "Flow { name: Spanned { node: \"a\",  } }"
        );
    }

    #[test]
    fn names_are_added_removed_or_changed() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let diff = Diff::of(
            &map(&[("a", "1"), ("b", "1"), ("c", "1")]),
            &map(&[("a", "1"), ("b", "2"), ("d", "1")]),
        );
        assert_eq!(diff.added, ["d"]);
        assert_eq!(diff.removed, ["c"]);
        assert_eq!(diff.changed, ["b"]);
    }
}
