//! Structured logs: one JSON object per line with one schema for every event, or readable text
//! when stdout is a terminal.
//!
//! Owns: the subscriber, the JSON line format, and phone-number masking. Every event is written
//! with the same top-level keys (`timestamp`, `level`, `service`, `event`, `request_id`,
//! `correlation_id`, `user_id`, `duration_ms`, `message`), missing ones as null, and any other
//! field under `metadata`. Call sites pass `user_id` through [`mask`] so no full phone number
//! reaches a log.

use std::fmt;
use std::io::IsTerminal as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The keys every JSON line has.
const SCHEMA: [&str; 6] = [
    "service",
    "event",
    "request_id",
    "correlation_id",
    "user_id",
    "duration_ms",
];

/// Installs the global subscriber. `RUST_LOG` filters (default `info`). `json` forces JSON
/// lines; otherwise JSON is used unless stdout is a terminal.
pub fn init(json: Option<bool>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = json.unwrap_or_else(|| !std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // Ignore "already set": tests may initialise twice.
    let _ = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// Masks a phone number for logs: `250788123456` → `2507****456`. Short or non-numeric ids keep
/// only their last three characters visible.
pub fn mask(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() >= 10 && chars.iter().all(|c| c.is_ascii_digit() || *c == '+') {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 3..].iter().collect();
        return format!("{head}****{tail}");
    }
    let keep = chars.len().min(3);
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("****{tail}")
}

/// The JSON line format.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_lowercase()),
        );
        for key in SCHEMA {
            line.insert(key.into(), fields.known.remove(key).unwrap_or(Value::Null));
        }
        line.insert(
            "message".into(),
            fields.message.map(Value::String).unwrap_or(Value::Null),
        );
        line.insert("metadata".into(), Value::Object(fields.other));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[derive(Default)]
struct Fields {
    known: Map<String, Value>,
    other: Map<String, Value>,
    message: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if SCHEMA.contains(&name) {
            self.known.insert(name.to_owned(), value);
        } else {
            self.other.insert(name.to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

/// RFC 3339 UTC with milliseconds, without a date-time crate.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(mask("250788123456"), "2507****456");
        assert_eq!(mask("+250788123456"), "+250****456");
        assert_eq!(mask("US.13491208655302741918"), "****918");
        assert_eq!(mask("ab"), "****ab");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
