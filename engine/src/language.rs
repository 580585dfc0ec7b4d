//! Which language a contact is answered in, and what may change it.
//!
//! Evidence, strongest first: the contact's own choice (the language menu; only another choice
//! changes it), then the language of the words that start their conversations (routes.yaml
//! says which keywords are which language), then the endpoint's default. An inferred language
//! changes only when two conversations in a row start in another one: "menu" typed by someone
//! who writes Kinyarwanda does not flip them to English and back.
//!
//! Owns: that decision, as a pure function of the contact's record and the message's keyword.
//! Must not read or write the database: the caller stores what [`decide`] returns.

/// How a contact's language stands, as `contacts` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// `en`, `rw` or `fr`.
    pub language: String,
    /// `default`, `inferred` or `chosen`.
    pub source: Source,
    /// The language of the last conversation-starting keyword, when it differed.
    pub hint: Option<String>,
}

/// How the language was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The endpoint's default: nothing said yet.
    Default,
    /// From the words that started a conversation.
    Inferred,
    /// Picked by the contact.
    Chosen,
}

impl Source {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Inferred => "inferred",
            Source::Chosen => "chosen",
        }
    }

    /// From what is stored (anything unknown is the weakest).
    pub fn parse(text: &str) -> Source {
        match text {
            "chosen" => Source::Chosen,
            "inferred" => Source::Inferred,
            _ => Source::Default,
        }
    }
}

/// The standing after a message that started a flow through a keyword in `keyword_language`
/// (`None`: a keyword in no particular language, an answer, the fallback), on an endpoint whose
/// default is `default`; `None` when nothing changes.
pub fn decide(now: &Standing, keyword_language: Option<&str>, default: &str) -> Option<Standing> {
    let next = match (now.source, keyword_language) {
        (Source::Chosen, _) => return None,
        (Source::Default, Some(language)) => Standing {
            language: language.to_owned(),
            source: Source::Inferred,
            hint: None,
        },
        (Source::Default, None) => Standing {
            language: default.to_owned(),
            source: Source::Default,
            hint: None,
        },
        (Source::Inferred, None) => return None,
        (Source::Inferred, Some(language)) if language == now.language => Standing {
            hint: None,
            ..now.clone()
        },
        (Source::Inferred, Some(language)) if now.hint.as_deref() == Some(language) => Standing {
            language: language.to_owned(),
            source: Source::Inferred,
            hint: None,
        },
        (Source::Inferred, Some(language)) => Standing {
            hint: Some(language.to_owned()),
            ..now.clone()
        },
    };
    (next != *now).then_some(next)
}

/// The contact's own choice.
pub fn chosen(language: &str) -> Standing {
    Standing {
        language: language.to_owned(),
        source: Source::Chosen,
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(language: &str, source: Source, hint: Option<&str>) -> Standing {
        Standing {
            language: language.to_owned(),
            source,
            hint: hint.map(str::to_owned),
        }
    }

    /// Plays keyword languages through `decide` from a new contact; the languages answered in.
    fn play(default: &str, words: &[Option<&str>], choose_at: Option<(usize, &str)>) -> String {
        let mut now = standing("en", Source::Default, None);
        let mut answered = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if let Some((_, language)) = choose_at.filter(|(at, _)| *at == i) {
                now = chosen(language);
            }
            if let Some(next) = decide(&now, *word, default) {
                now = next;
            }
            answered.push(now.language.clone());
        }
        answered.join(" ")
    }

    #[test]
    fn the_words_that_start_a_conversation_set_the_language_and_one_word_does_not_flip_it() {
        // "akazi", then "menu" once, then Kinyarwanda again: stays rw.
        assert_eq!(
            play("en", &[Some("rw"), Some("en"), Some("rw"), None], None),
            "rw rw rw rw"
        );
        // Two conversations in a row in French switch it.
        assert_eq!(
            play("en", &[Some("rw"), Some("fr"), Some("fr")], None),
            "rw rw fr"
        );
        // An interruption in between resets the count.
        assert_eq!(
            play(
                "en",
                &[Some("rw"), Some("fr"), Some("rw"), Some("fr")],
                None
            ),
            "rw rw rw rw"
        );
    }

    #[test]
    fn the_default_applies_until_something_is_said_and_a_choice_is_final() {
        assert_eq!(play("rw", &[None, None], None), "rw rw");
        assert_eq!(play("rw", &[None, Some("fr")], None), "rw fr");
        assert_eq!(
            play("en", &[Some("rw"), Some("en"), Some("en")], Some((1, "fr"))),
            "rw fr fr"
        );
        assert_eq!(decide(&chosen("fr"), Some("rw"), "en"), None);
    }

    #[test]
    fn nothing_changes_is_none() {
        let now = standing("rw", Source::Inferred, None);
        assert_eq!(decide(&now, Some("rw"), "en"), None);
        assert_eq!(decide(&now, None, "en"), None);
        let default = standing("en", Source::Default, None);
        assert_eq!(decide(&default, None, "en"), None);
    }
}
