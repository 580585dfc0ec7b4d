//! The live tap: each routed message as it happens, for `easymo tap` (through the admin route
//! `/admin/tap`), the way `vector tap` shows events flowing.
//!
//! Owns: the event (time, endpoint, masked sender, the text as routing read it with anything
//! phone-like masked, route, flow, the replies' templates, outcome, duration), the one channel
//! every process-wide publisher sends on, and the filters. Costs nothing while nobody listens:
//! an event is only built when a tap is open. Must not change what happens to a message.

pub mod client;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events a slow tap may fall behind by before it misses some (it is told how many).
const BACKLOG: usize = 1024;

/// One routed message, as the tap shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub at: String,
    /// The endpoint it came to.
    pub endpoint: String,
    /// The sender, masked.
    pub sender: String,
    /// The text as routing read it (normalized), with phone-like numbers and message ids
    /// masked.
    pub text: String,
    /// How it reached its flow.
    pub route: Option<String>,
    /// The flow that ran.
    pub flow: Option<String>,
    /// The templates of its replies, in order.
    pub replies: Vec<String>,
    /// What became of it.
    pub outcome: String,
    /// How long its processing took, in milliseconds.
    pub duration_ms: f64,
}

impl Event {
    /// Whether the tap asked for this event.
    pub fn wanted(&self, endpoint: Option<&str>, flow: Option<&str>) -> bool {
        endpoint.is_none_or(|e| e == self.endpoint)
            && flow.is_none_or(|f| self.flow.as_deref() == Some(f))
    }

    /// One line for a terminal.
    pub fn line(&self) -> String {
        let replies = if self.replies.is_empty() {
            "no reply".to_owned()
        } else {
            self.replies.join(", ")
        };
        format!(
            "{} {} {} {:?} {} -> {} [{replies}] {} {:.1}ms",
            self.at,
            self.endpoint,
            self.sender,
            self.text,
            self.route.as_deref().unwrap_or("-"),
            self.flow.as_deref().unwrap_or("-"),
            self.outcome,
            self.duration_ms
        )
    }
}

fn channel() -> &'static broadcast::Sender<Event> {
    static CHANNEL: OnceLock<broadcast::Sender<Event>> = OnceLock::new();
    CHANNEL.get_or_init(|| broadcast::channel(BACKLOG).0)
}

/// Whether a tap is open: publishers build events only then.
pub fn listening() -> bool {
    channel().receiver_count() > 0
}

/// Sends `event` to every open tap.
pub fn publish(event: Event) {
    let _ = channel().send(event);
}

/// A new tap.
pub fn subscribe() -> broadcast::Receiver<Event> {
    channel().subscribe()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(flow: &str) -> Event {
        Event {
            at: "2026-12-06T01:00:00Z".into(),
            endpoint: "wa".into(),
            sender: "2507****456".into(),
            text: "find jobs".into(),
            route: Some("route exact \"find jobs\"".into()),
            flow: Some(flow.into()),
            replies: vec!["job_categories".into()],
            outcome: "answered".into(),
            duration_ms: 3.25,
        }
    }

    #[test]
    fn filters_and_the_line() {
        let e = event("jobs");
        assert!(e.wanted(None, None) && e.wanted(Some("wa"), Some("jobs")));
        assert!(!e.wanted(Some("other"), None) && !e.wanted(None, Some("shop")));
        assert_eq!(
            e.line(),
            "2026-12-06T01:00:00Z wa 2507****456 \"find jobs\" route exact \"find jobs\" -> jobs [job_categories] answered 3.2ms"
        );
    }

    #[tokio::test]
    async fn events_reach_every_open_tap_and_none_are_built_without_one() {
        let mut tap = subscribe();
        assert!(listening());
        publish(event("jobs"));
        assert_eq!(
            tap.recv().await.expect("event").flow.as_deref(),
            Some("jobs")
        );
    }
}
