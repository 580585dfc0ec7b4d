//! Scripted conversations (tests/conversations/*.yaml) played through the real server into a
//! fresh database each, with every outbound message and the rows that changed pinned by insta.
//!
//! A script names a contact, optional seed SQL, and messages: `text`, `choice` (a list row or
//! button id), `location`, `corpus` (a corpus delivery's exact bytes, sent with its signature),
//! `again` (the previous delivery once more, as Meta's retries do), `status` (a status update
//! for the last reply). The snapshot shows, per message, the HTTP answer, what the engine
//! decided, and each reply's exact Graph API body; then the session and the changed rows.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::{corpus, now_unix, ConfigDir, Engine, CORPUS_APP_SECRET};

// The format `easymo test` reads: one format for both, so the scripts cannot drift apart.
use easymo_engine::testing::script::{self, RowCheck, Script, Step};

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
        let (body, signature, label) = if let Some(text) = &step.text {
            let body = self.envelope(json!({"type": "text", "text": {"body": text}}));
            (body, None, json!({"text": text}))
        } else if let Some(choice) = &step.choice {
            let (id, title) = match choice {
                script::Choice::Id(id) => (id.clone(), id.clone()),
                script::Choice::Full { id, title } => (id.clone(), title.clone()),
            };
            let body = self.envelope(json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": id, "title": title}}}));
            (body, None, json!({"choice": id}))
        } else if let Some([lat, lon]) = step.location {
            let body = self.envelope(json!({"type": "location", "location": {"latitude": lat, "longitude": lon, "name": "Kigali Convention Centre"}}));
            (body, None, json!({"location": [lat, lon]}))
        } else if let Some(file) = &step.corpus {
            let body = std::fs::read(corpus(&format!("whatsapp/{file}"))).expect("corpus file");
            (
                body,
                Some(crate::support::corpus_signature(file)),
                json!({"corpus": file}),
            )
        } else if step.again.is_some() {
            let (body, label) = self.last.clone().expect("a previous delivery");
            (body, None, json!({"again": label}))
        } else if let Some(status) = &step.status {
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
        } else {
            panic!("{step:?}: approve and decline are played by `easymo test`, not over HTTP")
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
        if step.again.is_none() && step.status.is_none() {
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
    let script: Script = script::parse(&std::fs::read_to_string(path).expect("script"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Scripts replay corpus messages dated 2026-06.
    let stale_after = script
        .stale_after
        .clone()
        .unwrap_or_else(|| "3650d".to_owned());
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
    for check in &script.rows {
        let query = check.query();
        let got = engine.rows(query);
        if let RowCheck::Expect { expect, .. } = check {
            assert_eq!(&got, expect, "{}: rows of `{query}`", path.display());
        }
        rows.insert(query.to_owned(), got);
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
