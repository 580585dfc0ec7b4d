//! Scripted conversations (tests/conversations/*.yaml) played through the real server into a
//! fresh database each, with every outbound message and the rows that changed pinned by insta.
//!
//! A script names a contact, optional seed SQL, and messages: `text`, `choice` (a list row or
//! button id), `location`, `corpus` (a corpus delivery's exact bytes, sent with its signature),
//! `again` (the previous delivery once more, as Meta's retries do), `status` (a status update
//! for the last reply). The snapshot shows, per message, the HTTP answer, what the engine
//! decided, and each reply's exact Graph API body; then the session and the changed rows.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::{corpus, now_unix, ConfigDir, Engine, CORPUS_APP_SECRET};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    contact: Option<ScriptContact>,
    #[serde(default)]
    seed: Vec<String>,
    /// Overrides `routing.stale_after` (scripts replay corpus messages dated 2026-06).
    #[serde(default = "default_stale_after")]
    stale_after: String,
    messages: Vec<Step>,
    /// Queries whose rows are pinned after the conversation.
    #[serde(default)]
    rows: Vec<String>,
}

fn default_stale_after() -> String {
    "3650d".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptContact {
    wa_id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    Text(String),
    Choice(ChoiceStep),
    Location([f64; 2]),
    Corpus(String),
    /// `again: true`: the previous delivery once more.
    Again(#[allow(dead_code, reason = "the value only marks the step")] bool),
    Status(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChoiceStep {
    Id(String),
    Full { id: String, title: String },
}

struct Player<'a> {
    engine: &'a Engine,
    wa_id: String,
    name: String,
    n: usize,
    last: Option<(Vec<u8>, String)>,
}

impl Player<'_> {
    /// The ids of every message recorded so far.
    fn recorded_ids(&self) -> Vec<Value> {
        let rows = self
            .engine
            .rows("select provider_message_id from inbound_messages");
        rows.as_array()
            .into_iter()
            .flatten()
            .map(|row| row["provider_message_id"].clone())
            .collect()
    }

    fn envelope(&mut self, message: Value) -> Vec<u8> {
        self.n += 1;
        let mut message = message;
        message["from"] = json!(self.wa_id);
        message["id"] = json!(format!("wamid.CONV{:03}", self.n));
        message["timestamp"] = json!(now_unix().to_string());
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": self.name}, "wa_id": self.wa_id}],
                "messages": [message]
            }}]}]
        })
        .to_string()
        .into_bytes()
    }

    fn step(&mut self, step: &Step) -> Value {
        let (body, signature, label) = match step {
            Step::Text(text) => {
                let body = self.envelope(json!({"type": "text", "text": {"body": text}}));
                (body, None, json!({"text": text}))
            }
            Step::Choice(choice) => {
                let (id, title) = match choice {
                    ChoiceStep::Id(id) => (id.clone(), id.clone()),
                    ChoiceStep::Full { id, title } => (id.clone(), title.clone()),
                };
                let body = self.envelope(json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": id, "title": title}}}));
                (body, None, json!({"choice": id}))
            }
            Step::Location([lat, lon]) => {
                let body = self.envelope(json!({"type": "location", "location": {"latitude": lat, "longitude": lon, "name": "Kigali Convention Centre"}}));
                (body, None, json!({"location": [lat, lon]}))
            }
            Step::Corpus(file) => {
                let body = std::fs::read(corpus(&format!("whatsapp/{file}"))).expect("corpus file");
                (
                    body,
                    Some(crate::support::corpus_signature(file)),
                    json!({"corpus": file}),
                )
            }
            Step::Again(_) => {
                let (body, label) = self.last.clone().expect("a previous delivery");
                (body, None, json!({"again": label}))
            }
            Step::Status(status) => {
                let outbox = self
                    .engine
                    .rows("select id from outbox order by id desc limit 1");
                let id = outbox[0]["id"].as_i64().unwrap_or(0);
                let wamid = format!("wamid.OUT{id}");
                crate::support::exec(&self.engine.database_url, &format!("update outbox set provider_message_id = '{wamid}', status = 'sent' where id = {id} and provider_message_id is null"));
                let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
                    "statuses": [{"id": wamid, "status": status, "timestamp": now_unix().to_string(), "recipient_id": self.wa_id}]
                }}]}]})
                .to_string()
                .into_bytes();
                (body, None, json!({"status": status}))
            }
        };
        let signature = signature.unwrap_or_else(|| {
            format!(
                "sha256={}",
                easymo_engine::auth::signature::sign_hex(CORPUS_APP_SECRET.as_bytes(), &body)
            )
        });
        let before: i64 = self
            .engine
            .rows("select coalesce(max(id), 0) as m from outbox")[0]["m"]
            .as_i64()
            .unwrap_or(0);
        let known = self.recorded_ids();
        let response = self
            .engine
            .request("POST", "/webhooks/whatsapp")
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &signature)
            .body(&body)
            .send();
        if !matches!(step, Step::Again(_) | Step::Status(_)) {
            self.last = Some((body, label.to_string()));
        }
        // The messages this delivery recorded (none for a duplicate or a status update).
        let recorded: Vec<Value> = self
            .engine
            .rows(
                "select provider_message_id, kind, outcome, flow from inbound_messages \
                 order by provider_message_id",
            )
            .as_array()
            .into_iter()
            .flatten()
            .filter(|row| !known.contains(&row["provider_message_id"]))
            .cloned()
            .collect();
        let replies = self.engine.rows(&format!(
            "select template, body from outbox where id > {before} order by id"
        ));
        json!({
            "send": label,
            "http": {"status": response.status, "body": response.json()},
            "recorded": recorded,
            "replies": replies,
        })
    }
}

fn play(path: &Path) -> String {
    // YAML → JSON value → typed: serde_yaml reads enums only as `!tags`; scripts use maps.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("script"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let script: Script = serde_json::from_value(serde_json::to_value(yaml).expect("json"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stale_after = script.stale_after.clone();
    let config = ConfigDir::shipped(move |t| {
        t.replace(
            "      fallback: main_menu\n",
            &format!("      fallback: main_menu\n      stale_after: {stale_after}\n"),
        )
        .replace(
            crate::support::WHATSAPP_LIMIT,
            "      requests: 1000\n      per: 1s\n      key: endpoint",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    for sql in &script.seed {
        crate::support::exec(&engine.database_url, sql);
    }
    let contact = script.contact.as_ref();
    let mut player = Player {
        engine: &engine,
        wa_id: contact.map_or("250788000101".to_owned(), |c| c.wa_id.clone()),
        name: contact
            .and_then(|c| c.name.clone())
            .unwrap_or_else(|| "Aline".to_owned()),
        n: 0,
        last: None,
    };
    let steps: Vec<Value> = script.messages.iter().map(|s| player.step(s)).collect();
    let session = engine.rows("select c.wa_id, c.user_id, c.language, s.awaiting_flow, s.awaiting_kind, s.context from sessions s join contacts c on c.id = s.contact_id order by c.id");
    let mut rows = serde_json::Map::new();
    for query in &script.rows {
        rows.insert(query.clone(), engine.rows(query));
    }
    let failures: Vec<String> = engine
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"error\""))
        .collect();
    // The snapshot pins how many; the lines say why, for whoever reviews a change.
    for failure in &failures {
        eprintln!("{}: {failure}", path.display());
    }
    let report =
        json!({"steps": steps, "sessions": session, "rows": rows, "errors_logged": failures.len()});
    serde_json::to_string_pretty(&report).expect("json")
}

#[test]
fn scripted_conversations() {
    let mut played = 0;
    insta::glob!("conversations/*.yaml", |path| {
        played += 1;
        insta::assert_snapshot!(play(path));
    });
    assert!(played >= 10, "{played}");
}
