//! The conversation script format (`tests/conversations/*.yaml`): who writes, what is in the
//! database first, what they send, and what the phone and the tables must show after.
//!
//! ```yaml
//! description: a new contact who writes "akazi" is answered in Kinyarwanda
//! contact: {wa_id: "250788000301", name: Mugisha}   # optional
//! seed:                                             # optional SQL, run first
//!   - insert into schools (name, term_fee) values ('Lycée de Kigali', 90000)
//! messages:
//!   - text: akazi
//!     expect:                       # optional: every reply, in order
//!       - template: job_categories  # the template, the phone's text, or both
//!         text: |
//!           Hitamo icyiciro cy'akazi.
//!           ...
//!   - choice: "1"                   # a row or button id ({id, title} for both)
//!   - location: [-1.9536, 30.0606]
//!   - again: true                   # the previous delivery once more
//!   - approve: true                 # MoMo's verdict on the payment asked for (or decline)
//! rows:                             # optional: queries run after the conversation
//!   - select language from contacts
//!   - query: select language from contacts
//!     expect: [{language: rw}]
//! ```
//!
//! Owns: the format and its reading. Must not run anything: [`super`] does.

use serde::Deserialize;

use crate::simulate::Input;

/// One conversation script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// What the conversation shows.
    pub description: String,
    /// Who writes (default: a number of the test's own).
    #[serde(default)]
    pub contact: Option<Contact>,
    /// SQL run before the first message.
    #[serde(default)]
    pub seed: Vec<String>,
    /// How old a message may be and still be answered (the HTTP suite replays dated corpus
    /// messages; `easymo test` sends messages dated now).
    #[serde(default)]
    pub stale_after: Option<String>,
    /// What the person sends, in order.
    pub messages: Vec<Step>,
    /// Queries run after the conversation, with the rows they must return when given.
    #[serde(default)]
    pub rows: Vec<RowCheck>,
}

/// The person writing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Their WhatsApp number.
    pub wa_id: String,
    /// Their profile name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One thing the person does, and optionally what the phone must show after it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A text message.
    #[serde(default)]
    pub text: Option<String>,
    /// A tap on a row or button.
    #[serde(default)]
    pub choice: Option<Choice>,
    /// A shared location, `[latitude, longitude]`.
    #[serde(default)]
    pub location: Option<[f64; 2]>,
    /// A corpus delivery's exact bytes (the HTTP suite only).
    #[serde(default)]
    pub corpus: Option<String>,
    /// The previous delivery once more.
    #[serde(default)]
    pub again: Option<bool>,
    /// A status update for the last reply (the HTTP suite only).
    #[serde(default)]
    pub status: Option<String>,
    /// MoMo approves the payment the conversation asked for.
    #[serde(default)]
    pub approve: Option<bool>,
    /// MoMo declines it.
    #[serde(default)]
    pub decline: Option<bool>,
    /// Every reply the phone must show after this step, in order.
    #[serde(default)]
    pub expect: Option<Vec<Expected>>,
}

/// A row or button: its id, or its id and title.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    /// By id.
    Id(String),
    /// By id, with the title the phone shows.
    Full {
        /// The id.
        id: String,
        /// The title.
        title: String,
    },
}

impl Choice {
    /// The id.
    pub fn id(&self) -> &str {
        match self {
            Choice::Id(id) | Choice::Full { id, .. } => id,
        }
    }
}

/// One reply as expected: its template, the phone's text, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expected {
    /// The phone's text alone.
    Text(String),
    /// Either or both.
    Reply {
        /// The template.
        #[serde(default)]
        template: Option<String>,
        /// The phone's text.
        #[serde(default)]
        text: Option<String>,
    },
}

/// A query run after the conversation.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RowCheck {
    /// Run, its rows shown but not compared.
    Query(String),
    /// Run, and its rows compared.
    Expect {
        /// The query.
        query: String,
        /// The rows, as JSON objects.
        expect: serde_json::Value,
    },
}

impl RowCheck {
    /// The query.
    pub fn query(&self) -> &str {
        match self {
            RowCheck::Query(query) | RowCheck::Expect { query, .. } => query,
        }
    }
}

impl Step {
    /// What the runtime is sent, or why this step cannot be played without HTTP.
    pub fn input(&self) -> Result<Input, String> {
        let actions = [
            self.text.is_some(),
            self.choice.is_some(),
            self.location.is_some(),
            self.corpus.is_some(),
            self.again.is_some(),
            self.status.is_some(),
            self.approve.is_some(),
            self.decline.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err("a step does exactly one thing: text, choice, location, corpus, again, status, approve or decline".to_owned());
        }
        if let Some(text) = &self.text {
            return Ok(Input::Text(text.clone()));
        }
        if let Some(choice) = &self.choice {
            return Ok(Input::Choice(choice.id().to_owned()));
        }
        if let Some([latitude, longitude]) = self.location {
            return Ok(Input::Location(latitude, longitude));
        }
        if self.again.is_some() {
            return Ok(Input::Again);
        }
        if self.approve.is_some() {
            return Ok(Input::Approve);
        }
        if self.decline.is_some() {
            return Ok(Input::Decline);
        }
        Err(
            "`corpus` and `status` steps need the HTTP path: they run in the engine's own suite"
                .to_owned(),
        )
    }
}

/// Reads a script.
pub fn parse(text: &str) -> Result<Script, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_do_one_thing_and_expectations_are_optional() {
        let script = parse(
            "description: d\nmessages:\n  - text: jobs\n    expect: [{template: job_categories}, \"Hi\"]\n  - choice: {id: \"2\", title: Construction}\n  - approve: true\nrows:\n  - select 1\n  - query: select 2\n    expect: []\n",
        )
        .expect("parses");
        assert_eq!(script.messages[0].input(), Ok(Input::Text("jobs".into())));
        assert_eq!(script.messages[1].input(), Ok(Input::Choice("2".into())));
        assert_eq!(script.messages[2].input(), Ok(Input::Approve));
        assert_eq!(script.messages[0].expect.as_ref().map(Vec::len), Some(2));
        assert_eq!(script.rows[1].query(), "select 2");
        let two = Step {
            text: Some("a".into()),
            again: Some(true),
            ..Step::default()
        };
        assert!(two.input().is_err());
        assert!(parse("description: d\nmessages: []\nunknown: 1\n").is_err());
    }
}
