//! Structured logs: one JSON object per line with one schema for every event, or readable text
//! when stdout is a terminal.
//!
//! Owns: the subscriber, the JSON line format, and keeping phone numbers out of logs. Every
//! event is written with the same top-level keys (`timestamp`, `level`, `service`, `event`,
//! `request_id`, `correlation_id`, `user_id`, `duration_ms`, `message`), missing ones as null,
//! and any other field under `metadata`. Call sites pass `user_id` through [`mask`] and message
//! ids through [`message_ref`]: a WhatsApp message id is base64 of the sender's number
//! (`wamid.HBgMMjUwNzg4…` is `…250788…`). The JSON format also scrubs every text value, in case
//! a call site or an error message carries one anyway ([`scrub`]).

use std::fmt;
use std::io::{BufWriter, IsTerminal as _, Stdout, Write as _};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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

/// How long a log line may sit in the buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffer size: about 200 lines, written with one syscall.
const BUFFER_BYTES: usize = 64 * 1024;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`). `json` forces JSON
/// lines; otherwise JSON is used unless stdout is a terminal.
///
/// Lines go through a buffer that is written when full, every [`FLUSH_EVERY`], after every
/// error, and when the returned guard is dropped. Rust's stdout writes once per line, and that
/// syscall cost a third of the gateway's throughput. Keep the guard alive until exit.
pub fn init(json: Option<bool>) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = json.unwrap_or_else(|| !std::io::stdout().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Buffered);
    // Already installed (tests may initialise twice): keep the first.
    let _ = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            BUFFER.flush();
        })
        .map(drop)
        .unwrap_or_else(|e| {
            eprintln!("cannot start the log flusher ({e}); logs are written when the buffer fills")
        });
    LogGuard
}

/// Flushes buffered log lines when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard flushes the logs; keep it until exit"]
pub struct LogGuard;

impl Drop for LogGuard {
    fn drop(&mut self) {
        BUFFER.flush();
    }
}

static BUFFER: Buffer = Buffer(Mutex::new(None));

/// Stdout behind a large buffer, created on first use.
struct Buffer(Mutex<Option<BufWriter<Stdout>>>);

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, Option<BufWriter<Stdout>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn flush(&self) {
        if let Some(out) = self.lock().as_mut() {
            let _ = out.flush();
        }
    }
}

/// One event's write: holds the buffer for the event's single `write_all`.
pub struct BufferWriter<'a> {
    guard: MutexGuard<'a, Option<BufWriter<Stdout>>>,
    flush_after: bool,
}

impl std::io::Write for BufferWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.guard
            .get_or_insert_with(|| BufWriter::with_capacity(BUFFER_BYTES, std::io::stdout()))
            .write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.guard.as_mut().map_or(Ok(()), std::io::Write::flush)
    }
}

impl Drop for BufferWriter<'_> {
    fn drop(&mut self) {
        if self.flush_after {
            let _ = std::io::Write::flush(self);
        }
    }
}

/// The subscriber's handle on [`BUFFER`].
struct Buffered;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffered {
    type Writer = BufferWriter<'static>;

    fn make_writer(&'a self) -> Self::Writer {
        BufferWriter {
            guard: BUFFER.lock(),
            flush_after: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        // A warning or an error may be the last thing the process says: write it now.
        BufferWriter {
            guard: BUFFER.lock(),
            flush_after: *meta.level() <= tracing::Level::WARN,
        }
    }
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

/// A message id as logs show it: `wamid#` and 12 hex digits of its SHA-256. Stable, so one
/// message's lines can be found (hash the id you have: `printf %s "$ID" | sha256sum | cut -c1-12`),
/// and not reversible to the number inside it.
pub fn message_ref(id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("wamid#{}", &hex::encode(digest)[..12])
}

/// `text` with every WhatsApp message id replaced by its [`message_ref`] and every run of 11 to
/// 15 digits that can be a full international number (a Rwandan `250…`, or after a `+`)
/// masked.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = text.contains("wamid.") || has_phone_like_run(text);
    if !needs {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("wamid.") {
        out.push_str(&rest[..at]);
        let id_len = rest[at + 6..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
            .unwrap_or(rest.len() - at - 6);
        out.push_str(&message_ref(&rest[at..at + 6 + id_len]));
        rest = &rest[at + 6 + id_len..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(mask_phone_runs(&out))
}

/// Whether `text` has a digit run that [`scrub`] masks.
fn has_phone_like_run(text: &str) -> bool {
    phone_runs(text).next().is_some()
}

/// (start, end) of each run of 11–15 digits that starts with `250` or follows a `+`.
fn phone_runs(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if !bytes[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let len = i - start;
            let international = start > 0 && bytes[start - 1] == b'+';
            if (11..=15).contains(&len) && (international || text[start..].starts_with("250")) {
                return Some((start, i));
            }
        }
        None
    })
}

fn mask_phone_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in phone_runs(text) {
        out.push_str(&text[last..start]);
        out.push_str(&mask(&text[start..end]));
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// The JSON line format, written straight into the line buffer (no JSON tree per event: the
/// gateway logs every request).
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
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        line.push_str(&timestamp());
        line.push_str("\",\"level\":\"");
        line.push_str(&event.metadata().level().as_str().to_ascii_lowercase());
        line.push('"');
        for (key, value) in SCHEMA.iter().zip(&fields.known) {
            line.push_str(",\"");
            line.push_str(key);
            line.push_str("\":");
            line.push_str(value.as_deref().unwrap_or("null"));
        }
        line.push_str(",\"message\":");
        line.push_str(fields.message.as_deref().unwrap_or("null"));
        line.push_str(",\"metadata\":{");
        for (i, (key, value)) in fields.other.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&json_string(key));
            line.push(':');
            line.push_str(value);
        }
        line.push_str("}}");
        writeln!(writer, "{line}")
    }
}

/// An event's fields, each already encoded as JSON.
#[derive(Default)]
struct Fields {
    known: [Option<String>; SCHEMA.len()],
    other: Vec<(&'static str, String)>,
    message: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, json: String) {
        let name = field.name();
        if name == "message" {
            self.message = Some(json);
        } else if let Some(i) = SCHEMA.iter().position(|k| *k == name) {
            self.known[i] = Some(json);
        } else {
            self.other.push((name, json));
        }
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    // Serializing a `str` cannot fail; the fallback only keeps the line valid JSON.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, json_string(&scrub(&format!("{value:?}"))));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, json_string(&scrub(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            if value.is_finite() {
                value.to_string()
            } else {
                "null".to_owned()
            },
        );
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string());
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
    fn message_ids_and_numbers_never_reach_a_line() {
        let wamid = "wamid.HBgMMjUwNzg4MDAwMTAxFQIAERgSNEFENjIwODRGMkZBMTYzMkRFAA==";
        let text =
            format!("duplicate {wamid} from 250788000101, call +14155550123 or txid 76662021700");
        let scrubbed = scrub(&text);
        assert_eq!(
            scrubbed,
            format!(
                "duplicate {} from 2507****101, call +1415****123 or txid 76662021700",
                message_ref(wamid)
            )
        );
        assert!(message_ref(wamid).starts_with("wamid#") && message_ref(wamid).len() == 18);
        assert_eq!(message_ref(wamid), message_ref(wamid), "stable");
        assert!(matches!(
            scrub("nothing to hide 12345"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(mask("250788123456"), "2507****456");
        assert_eq!(mask("+250788123456"), "+250****456");
        assert_eq!(mask("US.13491208655302741918"), "****918");
        assert_eq!(mask("ab"), "****ab");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
        let parsed: String =
            serde_json::from_str(&json_string("tab\tquote\"")).expect("valid JSON");
        assert_eq!(parsed, "tab\tquote\"");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
