//! Message text → flow: normalization and keyword matching. Pure, no IO.
//!
//! Owns: how a message is normalized, how each match mode works, the order in which routes are
//! tried (global words, then keyword routes in file order, then the fallback), the static
//! analysis of which routes can never win, and `explain`. Must not know about sessions or
//! awaited input; the flow runtime decides whether a message answers an `await` before asking
//! the router.

use schemars::JsonSchema;
use serde::Deserialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// How a keyword matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The whole message is the keyword.
    #[default]
    Exact,
    /// The message starts with the keyword (as whole words).
    Prefix,
    /// The keyword appears anywhere in the message (as whole words).
    Contains,
}

/// Lowercases, strips accents, turns punctuation into spaces and collapses whitespace, so that
/// "  Find JOBS!! " and "find jobs" route alike, as do "Émplois" and "emplois".
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfd().filter(|c| !is_combining_mark(*c)) {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// Whether `words` occurs in `text` on word boundaries (both already normalized, so words are
/// separated by single spaces). No allocation: routing runs on every message.
fn contains_words(text: &str, words: &str) -> bool {
    if words.is_empty() {
        return false;
    }
    text.match_indices(words).any(|(at, _)| {
        let before = at == 0 || text.as_bytes()[at - 1] == b' ';
        let end = at + words.len();
        let after = end == text.len() || text.as_bytes()[end] == b' ';
        before && after
    })
}

pub mod typos;

/// Where a route was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `routing.global`: always wins.
    Global,
    /// `routing.routes`: in order.
    Keyword,
}

/// One keyword of one route, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordRoute {
    /// Global or keyword route.
    pub tier: Tier,
    /// Index of the route in its list.
    pub route: usize,
    /// Index of the keyword in the route.
    pub keyword_index: usize,
    /// The keyword as written.
    pub keyword: String,
    /// The keyword normalized.
    pub normalized: String,
    /// Match mode.
    pub mode: MatchMode,
    /// Target flow.
    pub flow: String,
    /// The language the keyword is in, when routes.yaml says.
    pub language: Option<String>,
    /// Whether a word of it may be mistyped ([`typos`]).
    pub typos: bool,
}

impl KeywordRoute {
    /// Whether the (already normalized) message matches.
    pub fn matches(&self, text: &str) -> bool {
        self.matches_as_written(text) || self.with_typos(text)
    }

    /// Whether the (already normalized) message matches the keyword as written.
    pub fn matches_as_written(&self, text: &str) -> bool {
        let k = self.normalized.as_str();
        match self.mode {
            MatchMode::Exact => text == k,
            MatchMode::Prefix => {
                text == k || text.strip_prefix(k).is_some_and(|r| r.starts_with(' '))
            }
            MatchMode::Contains => contains_words(text, k),
        }
    }

    /// Whether the message matches only thanks to the typos this keyword forgives.
    pub fn with_typos(&self, text: &str) -> bool {
        self.typos
            && self.mode != MatchMode::Contains
            && typos::matches(text, &self.normalized, self.mode == MatchMode::Prefix)
    }

    /// Whether this route wins over every message that `later` would match, making `later`
    /// unreachable.
    pub fn covers(&self, later: &KeywordRoute) -> bool {
        match (self.mode, later.mode) {
            (MatchMode::Exact, MatchMode::Exact) => self.normalized == later.normalized,
            (MatchMode::Exact, _) => false,
            (MatchMode::Prefix, MatchMode::Contains) => false,
            (MatchMode::Prefix, _) | (MatchMode::Contains, _) => self.matches(&later.normalized),
        }
    }

    /// `route exact "find jobs"`, `global prefix "help"`.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            MatchMode::Exact => "exact",
            MatchMode::Prefix => "prefix",
            MatchMode::Contains => "contains",
        };
        let tier = match self.tier {
            Tier::Global => "global",
            Tier::Keyword => "route",
        };
        format!("{tier} {mode} \"{}\"", self.keyword)
    }
}

/// The compiled routing table of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    /// Global keywords first, then keyword routes, in the order they are tried.
    pub keywords: Vec<KeywordRoute>,
    /// Flow for everything else.
    pub fallback: String,
    /// How long a session waits for an answer.
    pub session_ttl: std::time::Duration,
    /// Messages older than this are recorded, not answered.
    pub stale_after: std::time::Duration,
    /// The language of a contact nothing has told the engine about yet.
    pub default_language: String,
}

/// The result of routing one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// A keyword matched.
    Keyword(&'a KeywordRoute),
    /// Nothing matched.
    Fallback(&'a str),
}

impl Decision<'_> {
    /// The flow to start.
    pub fn flow(&self) -> &str {
        match self {
            Decision::Keyword(route) => &route.flow,
            Decision::Fallback(flow) => flow,
        }
    }

    /// The language of the keyword that matched, when routes.yaml says.
    pub fn language(&self) -> Option<String> {
        match self {
            Decision::Keyword(route) => route.language.clone(),
            Decision::Fallback(_) => None,
        }
    }
}

/// One candidate in an explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The route, described (`route exact "find jobs"`).
    pub route: String,
    /// Its flow.
    pub flow: String,
    /// Whether it matched.
    pub matched: bool,
    /// Why or why not.
    pub reason: String,
}

/// Why a message took the route it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The normalized text.
    pub normalized: String,
    /// Every route in the order tried.
    pub candidates: Vec<Candidate>,
    /// Description of the winner.
    pub winner: String,
    /// The flow started.
    pub flow: String,
}

impl Router {
    /// The first global word (menu, cancel, help, …) the message matches.
    pub fn global(&self, text: &str) -> Option<&KeywordRoute> {
        let normalized = normalize(text);
        self.keywords
            .iter()
            .filter(|r| r.tier == Tier::Global)
            .find(|r| r.matches(&normalized))
    }

    /// Picks the flow for a message.
    pub fn route(&self, text: &str) -> Decision<'_> {
        let normalized = normalize(text);
        self.keywords
            .iter()
            .find(|r| r.matches(&normalized))
            .map(Decision::Keyword)
            .unwrap_or(Decision::Fallback(&self.fallback))
    }

    /// Keywords the message nearly is (a typo or two away), closest first: what `explain`
    /// suggests when nothing matched.
    pub fn near_misses(&self, text: &str) -> Vec<&KeywordRoute> {
        let normalized = normalize(text);
        let mut near: Vec<(usize, &KeywordRoute)> = self
            .keywords
            .iter()
            .filter_map(|k| Some((typos::near(&normalized, &k.normalized)?, k)))
            .collect();
        near.sort_by_key(|(edits, _)| *edits);
        let closest = near.first().map(|(edits, _)| *edits);
        near.into_iter()
            .filter(|(edits, _)| Some(*edits) == closest)
            .map(|(_, k)| k)
            .collect()
    }

    /// Routes a message and says why, candidate by candidate.
    pub fn explain(&self, text: &str) -> Explanation {
        let normalized = normalize(text);
        let mut winner: Option<&KeywordRoute> = None;
        let mut candidates = Vec::new();
        for route in &self.keywords {
            let matched = route.matches(&normalized);
            let reason = match (winner, matched) {
                (Some(w), true) => format!("would match, but {} already won", w.describe()),
                (Some(_), false) | (None, false) => match route.mode {
                    MatchMode::Exact => format!("text is not exactly \"{}\"", route.normalized),
                    MatchMode::Prefix => format!(
                        "text does not start with the words \"{}\"",
                        route.normalized
                    ),
                    MatchMode::Contains => {
                        format!("text does not contain the words \"{}\"", route.normalized)
                    }
                },
                (None, true) if !route.matches_as_written(&normalized) => {
                    "text is a typo away from the keyword (`typos`)".to_owned()
                }
                (None, true) => match route.mode {
                    MatchMode::Exact => "text is exactly the keyword".to_owned(),
                    MatchMode::Prefix => "text starts with the keyword".to_owned(),
                    MatchMode::Contains => "text contains the keyword".to_owned(),
                },
            };
            candidates.push(Candidate {
                route: route.describe(),
                flow: route.flow.clone(),
                matched: matched && winner.is_none(),
                reason,
            });
            if matched && winner.is_none() {
                winner = Some(route);
            }
        }
        let (winner, flow) = match winner {
            Some(route) => (route.describe(), route.flow.clone()),
            None => (
                "fallback (no keyword matched)".to_owned(),
                self.fallback.clone(),
            ),
        };
        Explanation {
            normalized,
            candidates,
            winner,
            flow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(keyword: &str, mode: MatchMode, flow: &str) -> KeywordRoute {
        KeywordRoute {
            tier: Tier::Keyword,
            route: 0,
            keyword_index: 0,
            keyword: keyword.into(),
            normalized: normalize(keyword),
            mode,
            flow: flow.into(),
            language: None,
            typos: false,
        }
    }

    #[test]
    fn normalizes_case_space_punctuation_and_accents() {
        assert_eq!(normalize("  Find   JOBS!! "), "find jobs");
        assert_eq!(
            normalize("Émplois, s'il vous plaît"),
            "emplois s il vous plait"
        );
        assert_eq!(normalize("book-ride"), "book ride");
        assert_eq!(normalize("👍"), "");
        assert_eq!(normalize("Muraho😀neza"), "muraho neza");
    }

    #[test]
    fn match_modes_work_on_whole_words() {
        let exact = route("jobs", MatchMode::Exact, "jobs");
        let prefix = route("rent", MatchMode::Prefix, "property");
        let contains = route("ride", MatchMode::Contains, "book_ride");
        assert!(exact.matches("jobs") && !exact.matches("jobs now"));
        assert!(
            prefix.matches("rent") && prefix.matches("rent property") && !prefix.matches("rental")
        );
        assert!(contains.matches("book a ride now") && !contains.matches("rides"));
    }

    #[test]
    fn a_route_with_typos_forgives_them_and_one_without_does_not() {
        let tolerant = KeywordRoute {
            typos: true,
            ..route("insurance", MatchMode::Exact, "insurance")
        };
        let strict = route("insurance", MatchMode::Exact, "insurance");
        assert!(tolerant.matches("insurnace") && !strict.matches("insurnace"));
        assert!(tolerant.matches_as_written("insurance"));
        assert!(!tolerant.matches_as_written("insurnace"));
        let prefix = KeywordRoute {
            typos: true,
            ..route("book ride", MatchMode::Prefix, "ride")
        };
        assert!(!prefix.matches("bok ride"), "four letters forgive nothing");
        let contains = KeywordRoute {
            typos: true,
            ..route("insurance", MatchMode::Contains, "insurance")
        };
        assert!(
            !contains.matches("my insurnace"),
            "contains matching forgives nothing"
        );
    }

    #[test]
    fn coverage_decides_shadowing() {
        let exact = route("find jobs", MatchMode::Exact, "a");
        let prefix = route("find", MatchMode::Prefix, "b");
        let contains = route("jobs", MatchMode::Contains, "c");
        assert!(contains.covers(&exact));
        assert!(prefix.covers(&exact));
        assert!(!exact.covers(&prefix));
        assert!(!prefix.covers(&contains));
        // Two exact routes sharing a keyword (after normalization): the first covers the
        // second, which can never win; different keywords do not.
        assert!(route("Jobs!", MatchMode::Exact, "a").covers(&route(
            "jobs",
            MatchMode::Exact,
            "b"
        )));
        assert!(!route("jobs", MatchMode::Exact, "a").covers(&route("job", MatchMode::Exact, "b")));
        assert!(!exact.covers(&route("find", MatchMode::Prefix, "f")));
        assert!(!route("find jobs", MatchMode::Prefix, "d").covers(&route(
            "find",
            MatchMode::Prefix,
            "e"
        )));
    }

    #[test]
    fn global_words_are_only_the_global_tier() {
        let router = Router {
            keywords: vec![
                KeywordRoute {
                    tier: Tier::Global,
                    ..route("menu", MatchMode::Exact, "main_menu")
                },
                route("jobs", MatchMode::Exact, "jobs"),
            ],
            fallback: "main_menu".into(),
            session_ttl: std::time::Duration::from_secs(3600),
            stale_after: std::time::Duration::from_secs(3600),
            default_language: "en".into(),
        };
        assert_eq!(
            router.global(" MENU! ").map(|r| r.flow.as_str()),
            Some("main_menu")
        );
        assert!(
            router.global("jobs").is_none(),
            "a keyword route is not a global word"
        );
        assert!(router.global("hello").is_none());
    }

    #[test]
    fn first_match_wins_then_fallback() {
        let router = Router {
            keywords: vec![
                route("menu", MatchMode::Exact, "main_menu"),
                route("jobs", MatchMode::Contains, "jobs"),
            ],
            fallback: "main_menu".into(),
            session_ttl: std::time::Duration::from_secs(3600),
            stale_after: std::time::Duration::from_secs(3600),
            default_language: "en".into(),
        };
        assert_eq!(router.route("Any JOBS?").flow(), "jobs");
        assert_eq!(router.route("hello").flow(), "main_menu");
        assert!(matches!(router.route("hello"), Decision::Fallback(_)));
        let explanation = router.explain("MENU jobs");
        assert_eq!(explanation.normalized, "menu jobs");
        assert_eq!(explanation.flow, "jobs");
        assert!(!explanation.candidates[0].matched);
        assert!(explanation.candidates[1].matched);
        // What `easymo explain` prints names each route by tier, mode and keyword.
        assert_eq!(explanation.candidates[0].route, "route exact \"menu\"");
        assert_eq!(explanation.winner, "route contains \"jobs\"");
        let global = KeywordRoute {
            tier: Tier::Global,
            ..route("help", MatchMode::Prefix, "help")
        };
        assert_eq!(global.describe(), "global prefix \"help\"");
    }
}
