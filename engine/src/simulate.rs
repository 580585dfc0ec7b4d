//! `easymo simulate`: messages through the real runtime and database, without HTTP or
//! signatures, printed as a person would see them on the phone.
//!
//! Owns: building the messages a phone would send (text, a list/button choice by id or by the
//! number shown, a location), MoMo's verdict on a requested payment (`--approve`/`--decline`),
//! and printing the replies, with why a flow failed. Every step runs in one transaction that
//! is rolled back unless `--commit` keeps it, so trying the ride flow books no ride; replies
//! never reach the outbox, so nothing reaches a real phone.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::config::{Config, EndpointKind};
use crate::inbound::process::{self, Replies};
use crate::store;
use crate::whatsapp;

/// One thing the simulated person does.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A text message.
    Text(String),
    /// A tap on a list row or reply button: its id, or the number it is shown with (1, 2, …).
    Choice(String),
    /// A shared location.
    Location(f64, f64),
    /// MoMo reports the last requested payment successful.
    Approve,
    /// MoMo reports it failed.
    Decline,
}

/// Who simulates what.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The sender's WhatsApp number.
    pub from: String,
    /// Their profile name.
    pub name: Option<String>,
    /// The language they chose (`en`, `rw`, `fr`), as if from the language menu.
    pub language: Option<String>,
    /// Keep what the steps wrote.
    pub commit: bool,
    /// routes.yaml's directory, to say where a failing flow is written.
    pub base_dir: PathBuf,
}

/// Why the simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No WhatsApp endpoint with routing.
    #[error("routes.yaml has no WhatsApp endpoint with routing")]
    NoEndpoint,
    /// `--approve`/`--decline` before any payment was requested.
    #[error("nothing to {0}: no step requested a payment yet")]
    NoPayment(&'static str),
    /// A database failure.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A query failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What the steps so far left to refer to.
#[derive(Default)]
struct Transcript {
    out: String,
    /// The ids of the last reply's rows or buttons, in the order shown.
    choices: Vec<(String, String)>,
    payment: Option<Value>,
}

/// Runs `steps` from `options.from` and returns what the phone would show.
pub async fn run(
    pool: &sqlx::PgPool,
    config: &Config,
    options: &Options,
    steps: &[Input],
) -> Result<String, Error> {
    let mut tx = pool.begin().await?;
    if let Some(language) = &options.language {
        choose_language(&mut tx, options, language).await?;
    }
    let mut transcript = Transcript::default();
    for step in steps {
        match step {
            Input::Approve | Input::Decline => {
                payment_verdict(&mut tx, config, options, step, &mut transcript).await?
            }
            _ => message(&mut tx, config, options, step, &mut transcript).await?,
        }
    }
    let session = store::conversation::session_of(&mut *tx, &options.from).await?;
    let out = &mut transcript.out;
    match (session.awaiting_flow, session.awaiting_kind) {
        (Some(flow), Some(kind)) => {
            let _ = writeln!(out, "(waiting for a {kind}, which goes to flow `{flow}`)");
        }
        _ => {
            let _ = writeln!(out, "(conversation idle)");
        }
    }
    if options.commit {
        tx.commit().await?;
        let _ = writeln!(out, "(kept: --commit)");
    } else {
        tx.rollback().await?;
        let _ = writeln!(
            out,
            "(nothing kept: rolled back; --commit keeps what the flows wrote)"
        );
    }
    Ok(transcript.out)
}

async fn choose_language(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    options: &Options,
    language: &str,
) -> Result<(), Error> {
    sqlx::query(
        "insert into contacts (wa_id, name, language, language_source) values ($1, $2, $3, 'chosen')
         on conflict (wa_id) do update set language = excluded.language, language_source = 'chosen'",
    )
    .bind(&options.from)
    .bind(&options.name)
    .bind(language)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn message(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    config: &Config,
    options: &Options,
    input: &Input,
    transcript: &mut Transcript,
) -> Result<(), Error> {
    let endpoint = config
        .endpoints
        .iter()
        .find(|e| e.kind == EndpointKind::Whatsapp && e.router.is_some() && e.deprecated.is_none())
        .ok_or(Error::NoEndpoint)?;
    let id = format!("sim.{}", uuid::Uuid::new_v4());
    let input = match input {
        Input::Choice(choice) => Input::Choice(chosen_id(choice, &transcript.choices)),
        other => other.clone(),
    };
    let (message, said) = phone_message(&options.from, &id, &input);
    let value = whatsapp::Value {
        contacts: vec![whatsapp::Contact {
            wa_id: Some(options.from.clone()),
            user_id: None,
            profile: whatsapp::Profile {
                name: options.name.clone(),
            },
        }],
        ..Default::default()
    };
    let body = serde_json::to_vec(&message).unwrap_or_default();
    let headers = json!({"simulated": true});
    let record = process::Delivery::Record(store::conversation::Raw {
        endpoint: &endpoint.name,
        headers: &headers,
        body: &body,
    });
    let caches = crate::reload::Caches::default();
    let item = process::Inbound {
        config,
        caches: &caches,
        endpoint,
        delivery: record,
        value: &value,
        message: &message,
        payload: None,
        request_id: &id,
        replies: Replies::ToCallerOnly,
    };
    let handled = process::message_within(tx, item).await?;

    let out = &mut transcript.out;
    let _ = writeln!(out, "you › {said}");
    if let (Some(failure), Some(flow)) = (&handled.failure, &handled.flow) {
        let _ = writeln!(
            out,
            "(flow failed: {failure}{})",
            place(config, options, flow)
                .map(|at| format!(", in flow `{flow}` at {at}"))
                .unwrap_or_default()
        );
    }
    if handled.replies.is_empty() {
        let _ = writeln!(out, "easyMO › (no reply: {})", handled.outcome.as_str());
    }
    transcript.choices.clear();
    for reply in &handled.replies {
        let _ = writeln!(
            out,
            "easyMO › {}",
            reply.preview.replace('\n', "\n         ")
        );
        let choices = choice_ids(&reply.body);
        if !choices.is_empty() {
            let shown: Vec<String> = choices
                .iter()
                .enumerate()
                .map(|(n, (id, title))| format!("{}={id} ({title})", n + 1))
                .collect();
            let _ = writeln!(
                out,
                "         choose with --choice N or ID: {}",
                shown.join(", ")
            );
            transcript.choices = choices;
        }
    }
    if handled.payment.is_some() {
        transcript.payment = handled.payment;
        let _ = writeln!(
            out,
            "         (a MoMo request to pay: --approve or --decline it)"
        );
    }
    Ok(())
}

/// `choice` as an id: a number picks what the last reply showed with that number (1-based),
/// as the person reads it; anything else, or a number past the end, is an id.
fn chosen_id(choice: &str, shown: &[(String, String)]) -> String {
    choice
        .parse::<usize>()
        .ok()
        .and_then(|n| shown.get(n.checked_sub(1)?))
        .map_or_else(|| choice.to_owned(), |(id, _)| id.clone())
}

/// Where `flow` is written, `file:line`.
fn place(config: &Config, options: &Options, flow: &str) -> Option<String> {
    let (file, start) = config.flows.files.iter().find_map(|(file, parsed)| {
        let found = parsed.flows.iter().find(|f| f.name.node == flow)?;
        Some((file, found.name.span.start))
    })?;
    let path = options.base_dir.join(file);
    let text = std::fs::read_to_string(&path).ok()?;
    let line = text.get(..start)?.matches('\n').count() + 1;
    let shown = path.strip_prefix(&options.base_dir).unwrap_or(&path);
    Some(format!("{}:{line}", shown.display()))
}

/// MoMo's verdict on the last requested payment: the payer's notice, in their language.
async fn payment_verdict(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    config: &Config,
    options: &Options,
    step: &Input,
    transcript: &mut Transcript,
) -> Result<(), Error> {
    let (verb, status, template) = match step {
        Input::Approve => (
            "approve",
            "SUCCESSFUL",
            crate::payments::callbacks::PAYMENT_SUCCESSFUL_TEMPLATE,
        ),
        _ => (
            "decline",
            "FAILED",
            crate::payments::callbacks::PAYMENT_FAILED_TEMPLATE,
        ),
    };
    let payment = transcript.payment.take().ok_or(Error::NoPayment(verb))?;
    let language: String = sqlx::query_scalar("select language from contacts where wa_id = $1")
        .bind(&options.from)
        .fetch_optional(&mut **tx)
        .await?
        .unwrap_or_else(|| "en".to_owned());
    let out = &mut transcript.out;
    let _ = writeln!(
        out,
        "momo › {status} ({} {})",
        payment["amount"],
        payment["currency"].as_str().unwrap_or("RWF")
    );
    let mut notice = payment.clone();
    notice["status"] = json!(status);
    let approved = status == "SUCCESSFUL";
    notice["transaction_id"] = if approved {
        json!("SIMULATED")
    } else {
        Value::Null
    };
    notice["reason"] = if approved {
        Value::Null
    } else {
        json!("APPROVAL_REJECTED")
    };
    let vars = json!({"payment": notice});
    let vars = vars.as_object().cloned().unwrap_or_default();
    match config.templates.get(template) {
        Some(reply) => {
            match crate::render::render(template, &reply.shape, &language, &vars, &options.from, 0)
            {
                Ok(rendered) => {
                    let _ = writeln!(
                        out,
                        "easyMO › {}",
                        rendered.preview.replace('\n', "\n         ")
                    );
                }
                Err(error) => {
                    let _ = writeln!(out, "(the `{template}` notice does not render: {error})");
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "(routes.yaml has no `{template}` template: the payer is told nothing)"
            );
        }
    }
    Ok(())
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
        Input::Approve | Input::Decline => String::new(),
    };
    (message, said)
}

/// `(id, title)` of every row or button of an interactive reply, in the order shown.
fn choice_ids(body: &Value) -> Vec<(String, String)> {
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
        .filter_map(|r| {
            Some((
                r["id"].as_str()?.to_owned(),
                r["title"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_picks_what_was_shown_and_an_id_is_an_id() {
        let shown = vec![
            ("5".to_owned(), "Agriculture".to_owned()),
            ("pay".to_owned(), "Pay".to_owned()),
        ];
        assert_eq!(chosen_id("1", &shown), "5");
        assert_eq!(chosen_id("2", &shown), "pay");
        assert_eq!(chosen_id("pay", &shown), "pay");
        // What is shown as 1 wins over a row whose id is 1; past the end, a number is an id.
        assert_eq!(chosen_id("9", &shown), "9");
        assert_eq!(chosen_id("", &shown), "");
    }
}
