//! Reading the exposition format back: `name{label="value"} 1.5` lines into samples.
//!
//! Owns: the series selector syntax (shared with promtool's test files) and sample lines of
//! what [`super::Metrics::render`] writes. The dashboard reads the process's figures this way,
//! so what it shows is by construction what `/metrics` says. Must not be a general parser:
//! comments, timestamps and exemplars are skipped, not interpreted.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`easymo_http_requests_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The label's value, or empty.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A selector that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// Every sample line of `text`; lines that do not read are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            // The value follows the selector: after the closing brace, or the name.
            let split = match line.rfind('}') {
                Some(close) => close + 1,
                None => line.find(' ')?,
            };
            let (selector, rest) = line.split_at(split);
            let value = rest.split_whitespace().next()?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            let (name, labels) = parse_selector(selector).ok()?;
            Some(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

/// `name` or `name{a="b",c="d"}`.
pub fn parse_selector(text: &str) -> Result<(String, BTreeMap<String, String>), SelectorError> {
    let text = text.trim();
    let (name, rest) = match text.find('{') {
        Some(open) => (&text[..open], &text[open..]),
        None => (text, ""),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    if !valid(name) {
        return Err(SelectorError(format!(
            "`{text}` does not start with a metric name"
        )));
    }
    let mut labels = BTreeMap::new();
    if rest.is_empty() {
        return Ok((name.to_owned(), labels));
    }
    let inner = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| SelectorError(format!("`{text}`: labels must be inside {{ }}")))?;
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_owned();
        if !valid(&key) || chars.next() != Some('"') {
            return Err(SelectorError(format!(
                "`{text}`: write labels as name=\"value\""
            )));
        }
        let mut value = String::new();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                '"' => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(SelectorError(format!("`{text}`: unclosed label value")));
        }
        labels.insert(key, value);
    }
    Ok((name.to_owned(), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_render_writes() {
        let text = "# HELP x X.\n# TYPE x counter\n\
                    easymo_http_requests_total{endpoint=\"wa\",status_class=\"2xx\"} 3\n\
                    easymo_dlq_size 1\n\
                    easymo_http_request_duration_seconds_bucket{le=\"+Inf\",endpoint=\"a\\\"b\"} 4\n# EOF\n";
        let samples = samples(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].label("status_class"), "2xx");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].name, "easymo_dlq_size");
        assert_eq!(samples[2].label("endpoint"), "a\"b");
        assert_eq!(samples[2].label("le"), "+Inf");
    }

    #[test]
    fn selectors() {
        assert!(parse_selector("1abc").is_err());
        assert!(parse_selector("m{a=b}").is_err());
        assert!(parse_selector("m{a=\"b}").is_err());
        let (name, labels) = parse_selector("m{ a=\"1\", b=\"2\" }").unwrap_or_default();
        assert_eq!((name.as_str(), labels.len()), ("m", 2));
    }
}
