//! YAML with positions: where every key and value of routes.yaml was written, and
//! deserialization that reports every shape error at the offending key or value.
//!
//! Owns: the path → span index (built from saphyr's event stream, which keeps markers) and the
//! staged serde_yaml deserialization (one item at a time, so one bad endpoint does not hide the
//! mistakes in the next). Must not know what any key means; `compile` does.

use std::collections::HashMap;
use std::fmt;

use easymo_dsl::codes;
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::{Diagnostic, FileId, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::DeserializeOwned;

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into the document, e.g. `endpoints[0].auth.hmac`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// The document root.
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// This path plus a key.
    pub fn key(&self, key: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    /// This path plus an index.
    pub fn index(&self, index: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }

    fn parent(&self) -> Option<Path> {
        let mut p = self.clone();
        p.0.pop()?;
        Some(p)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<Span>,
    value: Span,
    /// Byte offset where a quoted scalar's content starts (after the quote), for mapping
    /// positions inside the string (e.g. an alert condition) back to the file.
    content_start: usize,
    quoted: bool,
}

/// Identifies a node of the document; 0 is the root.
type NodeId = u32;

/// Where each key and value of a YAML document is.
///
/// Stored as a tree (`(parent, segment) → child`) rather than a map of whole paths, so that
/// indexing a large file allocates one string per key instead of one path per value.
#[derive(Debug, Default)]
pub struct YamlIndex {
    nodes: Vec<Entry>,
    children: HashMap<(NodeId, Seg), NodeId>,
    newlines: Vec<usize>,
    duplicates: Vec<DuplicateKey>,
}

/// A key written twice in one mapping (serde_yaml rejects it but points at the mapping).
#[derive(Debug, Clone)]
pub struct DuplicateKey {
    /// The key.
    pub key: String,
    /// The second occurrence.
    pub again: Span,
    /// The first occurrence.
    pub first: Span,
}

enum Frame {
    Map {
        node: NodeId,
        key: Option<(String, Span)>,
    },
    Seq {
        node: NodeId,
        next: usize,
    },
}

impl YamlIndex {
    /// Indexes `text`. Syntax errors are left to serde_yaml, which reports them; the index then
    /// holds what was read before the error.
    pub fn build(text: &str) -> Self {
        // libyaml (serde_yaml) accepts a tab after `key:`; saphyr stops there. A tab and a space
        // are both one byte, so indexing a copy with spaces keeps every offset.
        let spaced;
        let text = if text.contains('\t') {
            spaced = text.replace('\t', " ");
            spaced.as_str()
        } else {
            text
        };
        let chars = CharOffsets::new(text);
        let root = Entry {
            key: None,
            value: Span::new(0, text.len()),
            content_start: 0,
            quoted: false,
        };
        let mut index = YamlIndex {
            nodes: vec![root],
            children: HashMap::new(),
            newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
            duplicates: Vec::new(),
        };
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let start = chars.byte(span.start.index());
            let end = chars.byte(span.end.index());
            match event {
                Event::Scalar(value, style, ..) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((value.into_owned(), Span::new(start, end)));
                        continue;
                    }
                    let quoted =
                        matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
                    let value = scalar_span(text, start, end, quoted);
                    let content_start = if quoted { value.start + 1 } else { value.start };
                    index.add(
                        &mut stack,
                        Entry {
                            key: None,
                            value,
                            content_start,
                            quoted,
                        },
                    );
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let entry = Entry {
                        key: None,
                        value: Span::new(start, start),
                        content_start: start,
                        quoted: false,
                    };
                    let node = if stack.is_empty() {
                        Some(0)
                    } else {
                        index.add(&mut stack, entry)
                    };
                    // A duplicate key's container is indexed under a throwaway node.
                    let node = node.unwrap_or(NodeId::MAX);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { node, key: None }
                    } else {
                        Frame::Seq { node, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    let node = match stack.pop() {
                        Some(Frame::Map { node, .. } | Frame::Seq { node, .. }) => node,
                        None => continue,
                    };
                    if let Some(entry) = index.nodes.get_mut(node as usize).filter(|_| node != 0) {
                        entry.value.end = end.max(entry.value.start);
                    }
                }
                Event::Alias(_) => {
                    let entry = Entry {
                        key: None,
                        value: Span::new(start, end),
                        content_start: start,
                        quoted: false,
                    };
                    index.add(&mut stack, entry);
                }
                _ => {}
            }
        }
        index
    }

    /// Adds the next value of the innermost container; returns its node, or `None` for a key
    /// already present in its mapping (recorded as a duplicate).
    fn add(&mut self, stack: &mut [Frame], mut entry: Entry) -> Option<NodeId> {
        let (parent, seg) = match stack.last_mut()? {
            Frame::Map { node, key } => {
                let (k, span) = key.take()?;
                entry.key = Some(span);
                (*node, Seg::Key(k))
            }
            Frame::Seq { node, next } => {
                *next += 1;
                (*node, Seg::Index(*next - 1))
            }
        };
        let id = NodeId::try_from(self.nodes.len()).ok()?;
        match self.children.entry((parent, seg)) {
            std::collections::hash_map::Entry::Occupied(first) => {
                if let (Seg::Key(key), Some(again)) = (&first.key().1, entry.key) {
                    let first = self.nodes[*first.get() as usize].key.unwrap_or(again);
                    self.duplicates.push(DuplicateKey {
                        key: key.clone(),
                        again,
                        first,
                    });
                }
                None
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
                self.nodes.push(entry);
                Some(id)
            }
        }
    }

    /// The deepest node along `path` that exists, and whether it is `path` itself.
    fn find(&self, path: &Path) -> (&Entry, bool) {
        let mut node: NodeId = 0;
        for seg in &path.0 {
            // Cloning one segment is the price of a tuple key; lookups only happen when
            // reporting a diagnostic.
            match self.children.get(&(node, seg.clone())) {
                Some(child) => node = *child,
                None => return (&self.nodes[node as usize], false),
            }
        }
        (&self.nodes[node as usize], true)
    }

    /// The span of the value at `path`, or of its nearest ancestor that exists.
    pub fn value(&self, path: &Path) -> Span {
        self.first_line(self.find(path).0.value)
    }

    /// The span of the key of `path` (the value's span for sequence items).
    pub fn key(&self, path: &Path) -> Span {
        match self.find(path) {
            (Entry { key: Some(key), .. }, true) => *key,
            _ => self.value(path),
        }
    }

    /// The file span of bytes `inner` inside the scalar at `path` (for positions inside an
    /// embedded language such as an alert condition). Falls back to the whole value when the
    /// scalar is quoted with escapes or folded, where offsets do not map one to one.
    pub fn inside(&self, path: &Path, inner: Span, raw: &str) -> Span {
        match self.find(path) {
            (entry, true) => {
                let content = entry
                    .value
                    .end
                    .saturating_sub(entry.content_start + usize::from(entry.quoted));
                if content == raw.len() {
                    inner.shift(entry.content_start)
                } else {
                    entry.value
                }
            }
            _ => self.value(path),
        }
    }

    /// Keys written twice in one mapping.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// True when `path` was written in the file.
    pub fn contains(&self, path: &Path) -> bool {
        self.find(path).1
    }

    /// Block containers span many lines; point at their first line only so carets stay readable.
    fn first_line(&self, span: Span) -> Span {
        let next = self.newlines.partition_point(|&n| n < span.start);
        match self.newlines.get(next) {
            Some(&newline) if newline < span.end => Span::new(span.start, newline),
            _ => span,
        }
    }
}

/// The span of a scalar token: saphyr's span covers the token; trim trailing spaces/newlines
/// that plain multi-line scalars can include.
fn scalar_span(text: &str, start: usize, end: usize, quoted: bool) -> Span {
    let end = end.min(text.len()).max(start);
    let token = &text[start..end];
    let trimmed = if quoted { token } else { token.trim_end() };
    Span::new(start, start + trimmed.len())
}

/// Maps saphyr's character indices to byte offsets.
struct CharOffsets {
    bytes: Option<Vec<usize>>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let bytes = (!text.is_ascii()).then(|| text.char_indices().map(|(i, _)| i).collect());
        CharOffsets {
            bytes,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.bytes {
            None => char_index.min(self.len),
            Some(table) => table.get(char_index).copied().unwrap_or(self.len),
        }
    }
}

/// Most shape errors reported in one item: enough for any real mistake, and a bound on the
/// retries below.
const MAX_SHAPE_ERRORS: usize = 16;

/// Deserializes a `serde_yaml::Value` found at `path`, reporting each shape error at the exact
/// key or value it concerns. serde stops at the first error; to report every one in the item,
/// the offending key is taken out and the item read again, until it reads or the error is one
/// taking a key out cannot get past.
pub fn deserialize_at<T: DeserializeOwned>(
    value: serde_yaml::Value,
    path: &Path,
    index: &YamlIndex,
    file: FileId,
) -> Result<T, Vec<Diagnostic>> {
    // serde_yaml's own `Value` only accepts `!tagged` enums; routes.yaml writes them as
    // single-key maps (`auth: {hmac: ...}`), which serde_json's `Value` reads as serde expects.
    let json = |value: &serde_yaml::Value| {
        serde_json::to_value(value).map_err(|e| {
            vec![Diagnostic::error(
                codes::INVALID_VALUE,
                format!("unsupported YAML at `{path}`: {e}"),
            )
            .at(file, index.value(path), "")
            .help("keys must be strings; YAML tags are not supported")]
        })
    };
    // The common case, a clean item, reads the converted value without copying it again.
    if let Ok(typed) = serde_json::from_value::<T>(json(&value)?) {
        return Ok(typed);
    }
    let mut value = json(&value)?;
    let mut found = Vec::new();
    let mut taken_out: Vec<Path> = Vec::new();
    while found.len() < MAX_SHAPE_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(typed) if found.is_empty() => return Ok(typed),
            Ok(_) => break,
            Err(error) => error,
        };
        let mut at = path.clone();
        let mut relative = Vec::new();
        for seg in error.path().iter() {
            let seg = match seg {
                serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Seg::Key(variant.clone()),
                serde_path_to_error::Segment::Unknown => break,
            };
            at.0.push(seg.clone());
            relative.push(seg);
        }
        let message = error.into_inner().to_string();
        if let Some(rest) = message.strip_prefix("missing field `") {
            // Nothing to take out: the last error in this item. A key taken out to read on is
            // missing now, and a misspelt key already reported is missing under its real name:
            // neither is another mistake.
            let field = rest.split('`').next().unwrap_or(rest);
            let explained = taken_out.iter().any(|gone| {
                gone.parent().as_ref() == Some(&at)
                    && gone.0.last().is_some_and(|seg| match seg {
                        Seg::Key(key) => key == field || did_you_mean(key, [field]).is_some(),
                        Seg::Index(_) => false,
                    })
            });
            if !explained {
                found.push(shape_error(&message, &at, index, file));
            }
            break;
        }
        found.push(shape_error(&message, &at, index, file));
        if relative.is_empty() || !take_out(&mut value, &relative) {
            break;
        }
        taken_out.push(at);
    }
    Err(found)
}

/// Removes the key at `path` inside `value`; whether there was one.
fn take_out(value: &mut serde_json::Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        let next = match (seg, at) {
            (Seg::Key(key), serde_json::Value::Object(map)) => map.get_mut(key),
            (Seg::Index(i), serde_json::Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    match (last, at) {
        (Seg::Key(key), serde_json::Value::Object(map)) => map.remove(key).is_some(),
        // Removing an item would renumber the rest, and misplace their errors.
        _ => false,
    }
}

fn shape_error(message: &str, at: &Path, index: &YamlIndex, file: FileId) -> Diagnostic {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned();
    let place = if at.0.is_empty() {
        "the top level".to_owned()
    } else {
        format!("`{at}`")
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = split_expected(rest);
        // serde_path_to_error's path already ends with the unknown key.
        let key_span = index.key(at);
        let owner = at.parent().map(|p| p.to_string()).filter(|p| !p.is_empty());
        let msg = match owner {
            Some(owner) => format!("unknown field `{field}` in `{owner}`"),
            None => format!("unknown field `{field}`"),
        };
        return Diagnostic::error(codes::UNKNOWN_FIELD, msg)
            .at(file, key_span, "not a known field here")
            .maybe_help(
                did_you_mean(&field, expected.iter().map(String::as_str)).or_else(|| {
                    (!expected.is_empty())
                        .then(|| format!("expected one of {}", quote_list(&expected)))
                }),
            );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return Diagnostic::error(
            codes::MISSING_FIELD,
            format!("missing field `{field}` in {place}"),
        )
        .at(file, index.key(at), format!("`{field}` is required here"));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (variant, expected) = split_expected(rest);
        return Diagnostic::error(
            codes::INVALID_VALUE,
            format!("unknown value `{variant}` for {place}"),
        )
        .at(file, index.value(at), "not one of the allowed values")
        .maybe_help(
            did_you_mean(&variant, expected.iter().map(String::as_str)).or_else(|| {
                (!expected.is_empty()).then(|| format!("expected one of {}", quote_list(&expected)))
            }),
        );
    }
    let help = if message.contains("expected a string") {
        Some("quote it to make it text, e.g. \"1\"".to_owned())
    } else if message.contains("invalid type") && at.0.last() == Some(&Seg::Key("per".to_owned())) {
        Some("a window needs a unit, e.g. `60s`".to_owned())
    } else {
        None
    };
    Diagnostic::error(
        codes::INVALID_VALUE,
        format!("invalid value for {place}: {message}"),
    )
    .at(file, index.value(at), "")
    .maybe_help(help)
}

/// Splits "name`, expected one of `a`, `b`" into the name and the expected names.
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let mut parts = rest.splitn(2, '`');
    let name = parts.next().unwrap_or_default().to_owned();
    let tail = parts.next().unwrap_or_default();
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    (name, expected)
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> Path {
        Path(
            segs.iter()
                .map(|s| match s.parse::<usize>() {
                    Ok(n) => Seg::Index(n),
                    Err(_) => Seg::Key((*s).to_owned()),
                })
                .collect(),
        )
    }

    #[test]
    fn indexes_keys_and_values_with_byte_spans() {
        let text = "a: 1\nlist:\n  - name: \"é x\"\n    path: /p\n  - {name: b}\n";
        let index = YamlIndex::build(text);
        let span = index.value(&p(&["list", "0", "name"]));
        assert_eq!(&text[span.start..span.end], "\"é x\"");
        let span = index.key(&p(&["list", "0", "path"]));
        assert_eq!(&text[span.start..span.end], "path");
        let span = index.value(&p(&["list", "1", "name"]));
        assert_eq!(&text[span.start..span.end], "b");
        // Missing paths fall back to the nearest ancestor.
        let span = index.value(&p(&["list", "0", "nope"]));
        assert_eq!(&text[span.start..span.start + 4], "name");
    }

    #[test]
    fn maps_positions_inside_plain_and_quoted_scalars() {
        let text = "when: error_rate > 5%\nq: \"x > 1\"\n";
        let index = YamlIndex::build(text);
        let at = index.inside(&p(&["when"]), Span::new(11, 12), "error_rate > 5%");
        assert_eq!(&text[at.start..at.end], ">");
        let at = index.inside(&p(&["q"]), Span::new(2, 3), "x > 1");
        assert_eq!(&text[at.start..at.end], ">");
    }
}
