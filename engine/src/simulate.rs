//! `easymo simulate`: one message through the real runtime and database, without HTTP or
//! signatures, printed as a person would see it on the phone.
//!
//! Owns: building the message a phone would send (text, a list/button choice, a location) and
//! printing the replies. Sessions are real, so the next call continues the conversation;
//! replies are not written to the outbox, so nothing reaches a real phone.

use std::fmt::Write as _;

use serde_json::Value;

use crate::config::{Config, EndpointKind};
use crate::inbound::process::{self, Replies};
use crate::store::{self, conversation};
use crate::whatsapp;

/// What the simulated user sends.
#[derive(Debug, Clone)]
pub enum Input {
    /// A text message.
    Text(String),
    /// A tap on a list row or reply button, by id.
    Choice(String),
    /// A shared location.
    Location(f64, f64),
}

/// Why the simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No WhatsApp endpoint with routing.
    #[error("routes.yaml has no WhatsApp endpoint with routing")]
    NoEndpoint,
    /// A database failure.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A query failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Runs one message from `from` and returns what the phone would show.
pub async fn run(
    pool: &sqlx::PgPool,
    config: &Config,
    from: &str,
    name: Option<&str>,
    input: &Input,
) -> Result<String, Error> {
    let endpoint = config
        .endpoints
        .iter()
        .find(|e| e.kind == EndpointKind::Whatsapp && e.router.is_some() && e.deprecated.is_none())
        .ok_or(Error::NoEndpoint)?;
    let id = format!("sim.{}", uuid::Uuid::new_v4());
    let (message, said) = phone_message(from, &id, input);
    let value = whatsapp::Value {
        contacts: vec![whatsapp::Contact {
            wa_id: Some(from.to_owned()),
            user_id: None,
            profile: whatsapp::Profile {
                name: name.map(str::to_owned),
            },
        }],
        ..Default::default()
    };
    let body = serde_json::to_vec(&message).unwrap_or_default();
    let headers = serde_json::json!({"simulated": true});
    let record = process::Delivery::Record(crate::store::conversation::Raw {
        endpoint: &endpoint.name,
        headers: &headers,
        body: &body,
    });
    let handled = process::message(
        pool,
        process::Inbound {
            config,
            caches: &crate::reload::Caches::default(),
            endpoint,
            delivery: record,
            value: &value,
            message: &message,
            payload: None,
            request_id: &id,
            replies: Replies::ToCallerOnly,
        },
    )
    .await?;

    let mut out = format!("you › {said}\n");
    if handled.replies.is_empty() {
        let _ = writeln!(out, "easyMO › (no reply: {})", handled.outcome.as_str());
    }
    for reply in &handled.replies {
        let _ = writeln!(
            out,
            "easyMO › {}",
            reply.preview.replace('\n', "\n         ")
        );
        let choices = choice_ids(&reply.body);
        if !choices.is_empty() {
            let _ = writeln!(out, "         choose with --choice: {}", choices.join(", "));
        }
    }
    let session = conversation::session_of(pool, from).await?;
    match (session.awaiting_flow, session.awaiting_kind) {
        (Some(flow), Some(kind)) => {
            let _ = writeln!(out, "(waiting for a {kind}, which goes to flow `{}`)", flow);
        }
        _ => {
            let _ = writeln!(
                out,
                "(conversation idle; flows run: {})",
                handled.flow.unwrap_or_else(|| "none".into())
            );
        }
    }
    Ok(out)
}

/// The message a phone would send for `input`, and how the transcript shows it.
fn phone_message(from: &str, id: &str, input: &Input) -> (whatsapp::Message, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut message = whatsapp::Message {
        from: Some(from.to_owned()),
        id: id.to_owned(),
        timestamp: now.to_string(),
        ..Default::default()
    };
    let said = match input {
        Input::Text(text) => {
            message.kind = "text".into();
            message.text = Some(whatsapp::Text { body: text.clone() });
            text.clone()
        }
        Input::Choice(choice) => {
            message.kind = "interactive".into();
            message.interactive = Some(whatsapp::Interactive {
                kind: "list_reply".into(),
                list_reply: Some(whatsapp::Reply {
                    id: choice.clone(),
                    title: choice.clone(),
                    description: None,
                }),
                button_reply: None,
            });
            format!("(chose {choice})")
        }
        Input::Location(latitude, longitude) => {
            message.kind = "location".into();
            message.location = Some(whatsapp::Location {
                latitude: *latitude,
                longitude: *longitude,
                name: None,
                address: None,
            });
            format!("(shared location {latitude}, {longitude})")
        }
    };
    (message, said)
}

/// `id=title` for every row or button of an interactive reply.
fn choice_ids(body: &Value) -> Vec<String> {
    let action = &body["interactive"]["action"];
    let rows = action["sections"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["rows"].as_array().into_iter().flatten());
    let buttons = action["buttons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| &b["reply"]);
    rows.chain(buttons)
        .filter_map(|r| Some(format!("{}={}", r["id"].as_str()?, r["title"].as_str()?)))
        .collect()
}
