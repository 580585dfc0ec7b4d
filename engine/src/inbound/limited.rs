//! `on_limit: reply_once`: a sender over the limit is told once per window to slow down, then
//! hears nothing until the window has passed.
//!
//! Owns: the slow-down reply of a dropped delivery (rendered in the contact's language,
//! queued, handed to the sender). Must not record the delivery: it was dropped.

use serde_json::{json, Map};
use sqlx::PgPool;

use crate::config::Config;
use crate::outbound::{self, Handoff};
use crate::store::outbox;
use crate::whatsapp::Envelope;

/// Why the slow-down reply was not queued.
#[derive(Debug, thiserror::Error)]
pub enum ReplyOnceError {
    /// The delivery names no sender or business number to answer.
    #[error("the delivery has no sender to answer")]
    NoSender,
    /// The template does not render.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// The database refused the row.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Queues `template` for the sender of the first message in `envelope`, and hands it to this
/// process's sender.
pub async fn reply_once(
    pool: &PgPool,
    handoff: &Handoff,
    config: &Config,
    template: &str,
    envelope: &Envelope,
) -> Result<(), ReplyOnceError> {
    let (value, message) = envelope.messages().next().ok_or(ReplyOnceError::NoSender)?;
    let sender = message.sender().ok_or(ReplyOnceError::NoSender)?;
    let number = value.metadata.phone_number_id.as_str();
    if number.is_empty() {
        return Err(ReplyOnceError::NoSender);
    }
    let reply = config
        .templates
        .get(template)
        .ok_or_else(|| crate::render::RenderError::Unknown(template.to_owned()))?;
    let language = outbox::contact_language(pool, sender)
        .await?
        .unwrap_or_else(|| "en".to_owned());
    let profile = value
        .contacts
        .iter()
        .find(|c| c.wa_id.as_deref() == Some(sender) || c.user_id.as_deref() == Some(sender))
        .and_then(|c| c.profile.name.clone());
    let mut vars = Map::new();
    vars.insert(
        "contact".into(),
        json!({"wa_id": message.from, "user_id": message.from_user_id, "name": profile, "language": language}),
    );
    vars.insert("session".into(), json!({}));
    vars.insert(
        "message".into(),
        json!({"id": message.id, "kind": message.kind, "text": message.routing_text()}),
    );
    let rendered = crate::render::render(template, &reply.shape, &language, &vars, sender, 0)?;
    let lease = handoff
        .lease()
        .filter(|_| config.sending_for(number).is_some());
    let id = outbox::queue(pool, sender, number, template, &rendered.body, lease).await?;
    if lease.is_some() {
        handoff.hand(vec![outbound::Queued {
            id,
            recipient: sender.to_owned(),
            phone_number_id: number.to_owned(),
            body: serde_json::to_vec(&rendered.body)
                .unwrap_or_default()
                .into(),
            queued_at: std::time::Instant::now(),
            attempts: 0,
            first_attempt_recorded: false,
        }]);
    }
    Ok(())
}
