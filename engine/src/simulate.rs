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
    /// The last message delivered once more, as Meta's retries do.
    Again,
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
    /// A numeric choice picks what the last reply showed with that number (a person at the
    /// command line reads numbers); off, every choice is an id (scripts name ids).
    pub numbers_pick_shown: bool,
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
    /// `again` before any message.
    #[error("nothing to send again: no message was sent yet")]
    NothingToRepeat,
    /// A database failure.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A query failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// One reply as the phone shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The template it came from.
    pub template: String,
    /// What the phone shows.
    pub preview: String,
}

/// What one step did.
#[derive(Debug, Clone, Default)]
pub struct Played {
    /// Who acted: `you`, or `momo` for a payment's verdict.
    pub speaker: &'static str,
    /// What they did, as the transcript says it.
    pub said: String,
    /// Replies, in order (for `--approve`/`--decline`, the payer's notice).
    pub replies: Vec<Shown>,
    /// Why the flow failed, and where it is written, when it did.
    pub failure: Option<String>,
    /// What became of the message (`answered`, `ignored`, …; `settled` for a verdict).
    pub outcome: String,
    /// The last reply's rows or buttons, `(id, title)`, in the order shown.
    pub choices: Vec<(String, String)>,
    /// A payment was requested: `--approve` or `--decline` may follow.
    pub payment_requested: bool,
}

/// One person's conversation through the runtime, inside a transaction the caller holds:
/// what the steps so far left to refer to (what was shown, the payment requested, the last
/// message for `again`).
pub struct Player<'a> {
    config: &'a Config,
    options: &'a Options,
    shown: Vec<(String, String)>,
    payment: Option<Value>,
    last: Option<whatsapp::Message>,
}

impl<'a> Player<'a> {
    /// A new conversation of `options.from`.
    pub fn new(config: &'a Config, options: &'a Options) -> Self {
        Player {
            config,
            options,
            shown: Vec::new(),
            payment: None,
            last: None,
        }
    }

    /// Plays one step in `tx`.
    pub async fn play(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        step: &Input,
    ) -> Result<Played, Error> {
        match step {
            Input::Approve | Input::Decline => self.payment_verdict(tx, step).await,
            _ => self.message(tx, step).await,
        }
    }
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
    let mut player = Player::new(config, options);
    let mut out = String::new();
    for step in steps {
        let played = player.play(&mut tx, step).await?;
        transcribe(&played, &mut out);
    }
    let session = store::conversation::session_of(&mut *tx, &options.from).await?;
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
    Ok(out)
}

/// Writes one step as the phone shows it.
fn transcribe(played: &Played, out: &mut String) {
    let _ = writeln!(out, "{} › {}", played.speaker, played.said);
    if let Some(failure) = &played.failure {
        let _ = writeln!(out, "(flow failed: {failure})");
    }
    if played.replies.is_empty() {
        let _ = writeln!(out, "easyMO › (no reply: {})", played.outcome);
    }
    for reply in &played.replies {
        let _ = writeln!(
            out,
            "easyMO › {}",
            reply.preview.replace('\n', "\n         ")
        );
    }
    if !played.choices.is_empty() {
        let shown: Vec<String> = played
            .choices
            .iter()
            .enumerate()
            .map(|(n, (id, title))| format!("{}={id} ({title})", n + 1))
            .collect();
        let _ = writeln!(
            out,
            "         choose with --choice N or ID: {}",
            shown.join(", ")
        );
    }
    if played.payment_requested {
        let _ = writeln!(
            out,
            "         (a MoMo request to pay: --approve or --decline it)"
        );
    }
}

/// The contact, created if need be, with `language` as their own choice.
pub async fn choose_language(
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

impl Player<'_> {
    async fn message(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        input: &Input,
    ) -> Result<Played, Error> {
        let (config, options) = (self.config, self.options);
        let endpoint = config
            .endpoints
            .iter()
            .find(|e| {
                e.kind == EndpointKind::Whatsapp && e.router.is_some() && e.deprecated.is_none()
            })
            .ok_or(Error::NoEndpoint)?;
        let (message, said) = match (input, &self.last) {
            (Input::Again, Some(last)) => (last.clone(), "(the same delivery again)".to_owned()),
            (Input::Again, None) => return Err(Error::NothingToRepeat),
            _ => {
                let id = format!("sim.{}", uuid::Uuid::new_v4());
                let input = match input {
                    Input::Choice(choice) if options.numbers_pick_shown => {
                        Input::Choice(chosen_id(choice, &self.shown))
                    }
                    other => other.clone(),
                };
                phone_message(&options.from, &id, &input)
            }
        };
        self.last = Some(message.clone());
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
            request_id: &message.id,
            replies: Replies::ToCallerOnly,
        };
        let handled = process::message_within(tx, item).await?;
        let failure = match (&handled.failure, &handled.flow) {
            (Some(failure), Some(flow)) => Some(format!(
                "{failure}{}",
                place(config, options, flow)
                    .map(|at| format!(", in flow `{flow}` at {at}"))
                    .unwrap_or_default()
            )),
            (failure, _) => failure.clone(),
        };
        let choices = handled
            .replies
            .iter()
            .map(|r| choice_ids(&r.body))
            .rfind(|c| !c.is_empty())
            .unwrap_or_default();
        self.shown.clone_from(&choices);
        let payment_requested = handled.payment.is_some();
        if handled.payment.is_some() {
            self.payment = handled.payment;
        }
        Ok(Played {
            speaker: "you",
            said,
            replies: handled
                .replies
                .iter()
                .map(|r| Shown {
                    template: r.template.clone(),
                    preview: r.preview.clone(),
                })
                .collect(),
            failure,
            outcome: handled.outcome.as_str().to_owned(),
            choices,
            payment_requested,
        })
    }

    /// MoMo's verdict on the last requested payment: the payer's notice, in their language.
    async fn payment_verdict(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        step: &Input,
    ) -> Result<Played, Error> {
        let (verb, status, template) = match step {
            Input::Approve => (
                "approve",
                "SUCCESSFUL",
                crate::config::templates::PAYMENT_SUCCESSFUL_TEMPLATE,
            ),
            _ => (
                "decline",
                "FAILED",
                crate::config::templates::PAYMENT_FAILED_TEMPLATE,
            ),
        };
        let payment = self.payment.take().ok_or(Error::NoPayment(verb))?;
        let language: String = sqlx::query_scalar("select language from contacts where wa_id = $1")
            .bind(&self.options.from)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or_else(|| "en".to_owned());
        let said = format!(
            "{status} ({} {})",
            payment["amount"],
            payment["currency"].as_str().unwrap_or("RWF")
        );
        let mut notice = payment.clone();
        let approved = status == "SUCCESSFUL";
        notice["status"] = json!(status);
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
        let mut played = Played {
            speaker: "momo",
            said,
            outcome: "settled".to_owned(),
            ..Played::default()
        };
        match self.config.templates.get(template) {
            Some(reply) => match crate::render::render(
                template,
                &reply.shape,
                &language,
                &vars,
                &self.options.from,
                0,
            ) {
                Ok(rendered) => played.replies.push(Shown {
                    template: template.to_owned(),
                    preview: rendered.preview,
                }),
                Err(error) => {
                    played.failure =
                        Some(format!("the `{template}` notice does not render: {error}"));
                }
            },
            None => {
                played.failure = Some(format!(
                    "routes.yaml has no `{template}` template: the payer is told nothing"
                ));
            }
        }
        Ok(played)
    }
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
        Input::Approve | Input::Decline | Input::Again => String::new(),
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
