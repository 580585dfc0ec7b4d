//! The WhatsApp Cloud API webhook envelope, read leniently.
//!
//! Owns: the serde shapes of Meta's deliveries (`entry[].changes[].value` with `messages`,
//! `statuses`, `contacts`, `errors`) and small accessors the gateway and runtime need. Meta adds
//! fields and message types over time, so unknown fields are ignored and every part is
//! optional: a delivery is never refused for having a shape we did not expect.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A webhook delivery.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Envelope {
    /// `whatsapp_business_account`.
    pub object: String,
    /// One entry per business account.
    pub entry: Vec<Entry>,
}

/// One business account's changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Entry {
    /// WhatsApp Business Account id.
    pub id: String,
    /// The changes.
    pub changes: Vec<Change>,
}

/// One change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Change {
    /// `messages` for messages and statuses; other fields are acknowledged and ignored.
    pub field: String,
    /// The payload.
    pub value: Value,
}

/// A change's payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Value {
    /// The business number that received the delivery.
    pub metadata: Metadata,
    /// The senders' profiles.
    pub contacts: Vec<Contact>,
    /// Incoming messages.
    pub messages: Vec<Message>,
    /// Status updates of messages we sent.
    pub statuses: Vec<serde_json::Value>,
    /// System-level errors.
    pub errors: Vec<serde_json::Value>,
}

/// The receiving business number.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// As displayed.
    pub display_phone_number: String,
    /// The id to send replies from.
    pub phone_number_id: String,
}

/// A sender's profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Contact {
    /// Phone-number id (may be absent for username users from 2026).
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
    /// Profile.
    pub profile: Profile,
}

/// A profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// Display name.
    pub name: Option<String>,
}

/// An incoming message.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Message {
    /// Sender's phone-number id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Sender's business-scoped user id.
    pub from_user_id: Option<String>,
    /// Provider message id (`wamid.…`).
    pub id: String,
    /// Unix seconds, as a string.
    pub timestamp: String,
    /// `text`, `interactive`, `button`, `location`, `image`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// For `text`.
    pub text: Option<Text>,
    /// For `interactive`.
    pub interactive: Option<Interactive>,
    /// For `button` (template quick replies).
    pub button: Option<Button>,
    /// For `location`.
    pub location: Option<Location>,
    // Everything else Meta sends (media, reactions, context, errors, …) is not read here: the
    // raw body is kept, and [`message_json`] reads a message whole when it is kept apart. A
    // `#[serde(flatten)]` catch-all made every delivery's parse buffer each message twice.
}

/// Text content.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Text {
    /// The text.
    pub body: String,
}

/// A list or button reply.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Interactive {
    /// `button_reply` or `list_reply`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Set for `button_reply`.
    pub button_reply: Option<Reply>,
    /// Set for `list_reply`.
    pub list_reply: Option<Reply>,
}

/// The chosen row or button.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Reply {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its description (lists).
    pub description: Option<String>,
}

/// A template quick-reply tap.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Button {
    /// The payload set on the template.
    pub payload: String,
    /// The button text.
    pub text: String,
}

/// A shared location.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Location {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Place name, when shared.
    pub name: Option<String>,
    /// Address, when shared.
    pub address: Option<String>,
}

/// Every message of a delivery as Meta sent it (every field, read or not), by message id.
pub fn message_json(body: &[u8]) -> HashMap<String, serde_json::Value> {
    let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(body) else {
        return HashMap::new();
    };
    let changes = envelope["entry"].as_array().into_iter().flatten();
    let changes = changes.flat_map(|e| e["changes"].as_array().into_iter().flatten());
    changes
        .flat_map(|c| c["value"]["messages"].as_array().into_iter().flatten())
        .filter_map(|m| Some((m["id"].as_str()?.to_owned(), m.clone())))
        .collect()
}

impl Envelope {
    /// Every message in the delivery, with the change it came in.
    pub fn messages(&self) -> impl Iterator<Item = (&Value, &Message)> {
        self.entry
            .iter()
            .flat_map(|e| &e.changes)
            .flat_map(|c| c.value.messages.iter().map(move |m| (&c.value, m)))
    }
}

/// Latest Unix second Postgres and people agree on (the last second of year 9999).
const LAST_TIMESTAMP: i64 = 253_402_300_799;

/// Whether `body` holds an escaped NUL (`\u0000`) anywhere: JSON can carry one no other way,
/// and Postgres stores none in `text` or `jsonb`. Cheap enough for every delivery; only when it
/// says yes are the messages looked at field by field.
pub fn may_hold_nul(body: &[u8]) -> bool {
    body.windows(6).any(|w| w == b"\\u0000")
}

impl Message {
    /// Why this message can never be processed, if so: no id (it could not be told from any
    /// other), a NUL byte in anything stored (`may_hold_nul`: the delivery's body has one
    /// somewhere), a timestamp no calendar holds. Such a message is kept, its delivery's bytes
    /// intact, and marked poison, instead of failing its delivery at every attempt.
    pub fn poison(&self, value: &Value, may_hold_nul: bool) -> Option<String> {
        if self.id.is_empty() {
            return Some("a message without an id".to_owned());
        }
        if let Ok(seconds) = self.timestamp.parse::<i64>() {
            if !(0..=LAST_TIMESTAMP).contains(&seconds) {
                return Some(format!(
                    "message {}: timestamp {seconds} is out of range",
                    crate::logging::message_ref(&self.id)
                ));
            }
        }
        if !may_hold_nul {
            return None;
        }
        let profile_nul = value.contacts.iter().any(|c| {
            [
                c.wa_id.as_deref(),
                c.user_id.as_deref(),
                c.profile.name.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|s| s.contains('\0'))
        });
        let message_nul = serde_json::to_string(self).is_ok_and(|json| json.contains("\\u0000"));
        (profile_nul || message_nul).then(|| {
            let place = if message_nul {
                "the message"
            } else {
                "the sender's profile"
            };
            format!(
                "message {}: a NUL byte in {place}",
                crate::logging::message_ref(&self.id)
            )
        })
    }

    /// Who sent it: the phone-number id, else the business-scoped user id.
    pub fn sender(&self) -> Option<&str> {
        self.from.as_deref().or(self.from_user_id.as_deref())
    }

    /// The text keyword routing looks at: a text body, or the title of a tapped button or row.
    pub fn routing_text(&self) -> Option<&str> {
        if let Some(text) = &self.text {
            return Some(&text.body);
        }
        if let Some(interactive) = &self.interactive {
            let reply = interactive
                .button_reply
                .as_ref()
                .or(interactive.list_reply.as_ref());
            return reply.map(|r| r.title.as_str());
        }
        self.button.as_ref().map(|b| b.text.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A delivery from `tests/fixtures/whatsapp`, parsed.
    pub(crate) fn corpus(name: &str) -> Envelope {
        let path = format!(
            "{}/../tests/fixtures/whatsapp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn reads_every_corpus_delivery() {
        let dir = format!("{}/../tests/fixtures/whatsapp", env!("CARGO_MANIFEST_DIR"));
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                corpus(&name);
                read += 1;
            }
        }
        assert!(read >= 26, "{read}");
    }

    #[test]
    fn finds_sender_and_routing_text() {
        let text = corpus("01_text.json");
        let (_, m) = text.messages().next().expect("message");
        assert!(m.sender().is_some());
        assert!(m.routing_text().is_some());
        let two = corpus("18_two_messages_one_change.json");
        assert_eq!(two.messages().count(), 2);
        let list = corpus("03_interactive_list_reply.json");
        let (_, m) = list.messages().next().expect("message");
        assert_eq!(
            m.interactive.as_ref().map(|i| i.kind.as_str()),
            Some("list_reply")
        );
        let bsuid = corpus("23_text_bsuid_no_phone.json");
        let (_, m) = bsuid.messages().next().expect("message");
        assert!(m.from.is_none() && m.sender().is_some());
        let status = corpus("12_status_sent.json");
        assert_eq!(status.messages().count(), 0);
    }
}
