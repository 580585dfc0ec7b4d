//! Forwarded MoMo SMS: what the forwarder sends, and what a text says.
//!
//! Owns: reading the forwarder's JSON (sender, text, gateway metadata), matching a text against
//! the patterns of routes.yaml, splitting two texts a forwarder glued together, and turning the
//! captures into typed values (amounts without separators, Kigali times, masked numbers).
//! Must not touch the database or decide what credits: `payments` does, with what this returns.
//!
//! Texts are hostile input: templates drift, promos ride along, forwarders cut at 160
//! characters or concatenate. A text no pattern matches whole is not guessed at: it is
//! reported as unparsed (a truncated text then never credits on a partial match).

use serde_json::{Map, Value};

use crate::config::{SmsKind, SmsPattern, SmsRules};

/// Keys a forwarder may use for the sender, the text and the time, in order of preference.
const SENDER_KEYS: &[&str] = &["sender", "from", "address"];
const TEXT_KEYS: &[&str] = &["text", "body", "message"];

/// Why a forwarded SMS could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// The body is not a JSON object.
    #[error("the body must be a JSON object with `sender` and `text`")]
    NotAnObject,
    /// A required field is missing or not a string.
    #[error("`{field}` is missing or not a string (also accepted: {aliases})")]
    MissingField {
        /// The field.
        field: &'static str,
        /// Other names accepted for it.
        aliases: &'static str,
    },
}

/// A forwarded SMS as the forwarder sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    /// Who sent the SMS (`M-Money` for real MoMo texts).
    pub sender: String,
    /// The text.
    pub text: String,
    /// Every other field the forwarder sent (times, device, service centre), kept as is.
    pub metadata: Map<String, Value>,
}

impl Forwarded {
    /// Reads the forwarder's JSON body.
    pub fn from_json(body: &Value) -> Result<Self, SmsError> {
        let Value::Object(fields) = body else {
            return Err(SmsError::NotAnObject);
        };
        // Postgres stores no NUL in text: one becomes U+FFFD in the columns read from, and
        // the body keeps the bytes as sent. No pattern matches across it either way.
        let pick = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| fields.get(*k).and_then(Value::as_str))
                .map(|s| s.replace('\0', "\u{FFFD}"))
        };
        let sender = pick(SENDER_KEYS).ok_or(SmsError::MissingField {
            field: "sender",
            aliases: "`from`, `address`",
        })?;
        let text = pick(TEXT_KEYS).ok_or(SmsError::MissingField {
            field: "text",
            aliases: "`body`, `message`",
        })?;
        let mut metadata = fields.clone();
        for key in SENDER_KEYS.iter().chain(TEXT_KEYS) {
            metadata.remove(*key);
        }
        Ok(Forwarded {
            sender,
            text,
            metadata,
        })
    }
}

/// What one SMS text says, read with one pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The pattern that matched.
    pub pattern: String,
    /// What it means.
    pub kind: SmsKind,
    /// The text it read (a part of the forwarded text when two were glued together).
    pub text: String,
    /// Amount in whole units (RWF has no subunit).
    pub amount: Option<i64>,
    /// `RWF`.
    pub currency: Option<String>,
    /// Who paid or was paid.
    pub counterparty: Option<String>,
    /// Their number, masked (`*********013`) or full.
    pub phone: Option<String>,
    /// MoMo's transaction id.
    pub transaction_id: Option<String>,
    /// Balance after the transaction.
    pub balance: Option<i64>,
    /// Fee.
    pub fee: Option<i64>,
    /// When it happened, RFC 3339 (Kigali time is UTC+2 and texts carry no zone).
    pub occurred_at: Option<String>,
}

impl Reading {
    /// Money coming in: what may credit.
    pub fn is_credit(&self) -> bool {
        matches!(self.kind, SmsKind::Credit | SmsKind::Refund)
    }
}

/// The longest text read: a few SMS parts glued together. Longer ones are kept for review.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// Reads `text`: one reading when a pattern matches it, several when it is texts glued
/// together that patterns match part by part, none when it cannot be read (then it is kept
/// for review).
///
/// A payment pattern's wildcards can run from one text into the next: a cut-off text glued
/// before a whole one would read as one payment with the first's amount and the second's
/// transaction id. So a payment reading is believed only when no later part of the text reads
/// as a payment on its own; when one does, the text is split, or not read at all.
pub fn read(rules: &SmsRules, text: &str) -> Vec<Reading> {
    let text = text.trim();
    if text.chars().count() > MAX_TEXT_CHARS {
        return Vec::new();
    }
    let Some(reading) = read_one(&rules.patterns, text) else {
        return split(&rules.patterns, text).unwrap_or_default();
    };
    if reading.kind == SmsKind::NonPayment || !has_later_payment(&rules.patterns, text) {
        return vec![reading];
    }
    split(&rules.patterns, text).unwrap_or_default()
}

/// Whether a payment text starts somewhere after the beginning of `text`. Not inside a
/// number: `10631 RWF has been used…` also reads from its second digit.
fn has_later_payment(patterns: &[SmsPattern], text: &str) -> bool {
    let mut previous = None;
    text.char_indices().any(|(at, c)| {
        let inside_number =
            previous.is_some_and(|p: char| p.is_ascii_digit()) && c.is_ascii_digit();
        let later = previous.is_some() && !inside_number;
        previous = Some(c);
        later && read_one(patterns, &text[at..]).is_some_and(|r| r.kind != SmsKind::NonPayment)
    })
}

fn read_one(patterns: &[SmsPattern], text: &str) -> Option<Reading> {
    patterns.iter().find_map(|pattern| {
        let captures = pattern.regex.captures(text)?;
        let get = |name: &str| {
            captures
                .name(name)
                .map(|m| m.as_str().trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        Some(Reading {
            pattern: pattern.name.clone(),
            kind: pattern.kind,
            text: text.to_owned(),
            amount: get("amount").as_deref().and_then(whole_units),
            currency: get("currency"),
            counterparty: get("counterparty").map(|c| squeeze_spaces(&c)),
            phone: get("phone"),
            transaction_id: get("txid"),
            balance: get("balance").as_deref().and_then(whole_units),
            fee: get("fee").as_deref().and_then(whole_units),
            occurred_at: get("date").as_deref().and_then(timestamp),
        })
    })
}

/// Two texts glued together: the first place where both the part before and the part after
/// read whole. Only tried when the whole text does not read, so a real text is never split.
fn split(patterns: &[SmsPattern], text: &str) -> Option<Vec<Reading>> {
    text.char_indices().skip(1).find_map(|(at, _)| {
        let (head, tail) = text.split_at(at);
        let first = read_one(patterns, head.trim())?;
        let second = read_one(patterns, tail.trim())?;
        Some(vec![first, second])
    })
}

/// `1,000` → 1000; `2000` → 2000. Anything else (a cut-off `10.`) reads as nothing.
fn whole_units(text: &str) -> Option<i64> {
    let digits: String = text.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `2024-05-10 16:30:51` (Kigali, no zone) → `2024-05-10T16:30:51+02:00`; an RFC 3339 time
/// with an offset is kept. Anything else reads as nothing.
fn timestamp(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
    let date_ok = (0..4).all(digit)
        && bytes.get(4) == Some(&b'-')
        && (5..7).all(digit)
        && bytes.get(7) == Some(&b'-')
        && (8..10).all(digit)
        && (11..13).all(digit)
        && bytes.get(13) == Some(&b':')
        && (14..16).all(digit)
        && bytes.get(16) == Some(&b':')
        && (17..19).all(digit);
    if !date_ok {
        return None;
    }
    match (bytes.get(10), text.len()) {
        (Some(b' '), 19) => Some(format!("{}T{}+02:00", &text[..10], &text[11..])),
        // A `T` time must carry its offset: without one, the check below finds none.
        (Some(b'T'), _) => {
            let zone = &text[19..];
            let fraction_then_offset = zone
                .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit())
                .to_owned();
            let offset = fraction_then_offset.as_bytes();
            let valid = offset.len() == 6
                && matches!(offset[0], b'+' | b'-')
                && offset[3] == b':'
                && [1, 2, 4, 5].iter().all(|&i| offset[i].is_ascii_digit());
            valid.then(|| text.to_owned())
        }
        _ => None,
    }
}

/// Merchant names come with doubled spaces (`MTN RWANDACELL  LIMITED`).
fn squeeze_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(patterns: &[(&str, SmsKind, &str)]) -> SmsRules {
        SmsRules {
            senders: vec!["M-Money".into()],
            patterns: patterns
                .iter()
                .map(|(name, kind, regex)| SmsPattern {
                    name: (*name).into(),
                    kind: *kind,
                    regex: regex::Regex::new(regex).expect("regex"),
                    flow: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_forwarders_fields_and_their_aliases() {
        let sms = Forwarded::from_json(
            &json!({"from": "M-Money", "body": "hi", "received_at": "2026-06-01T10:00:00Z"}),
        )
        .expect("reads");
        assert_eq!((sms.sender.as_str(), sms.text.as_str()), ("M-Money", "hi"));
        assert_eq!(sms.metadata.keys().collect::<Vec<_>>(), ["received_at"]);
        let nul = Forwarded::from_json(&json!({"sender": "M-Money\u{0}", "text": "a\u{0}b"}))
            .expect("reads");
        assert_eq!(
            (nul.sender.as_str(), nul.text.as_str()),
            ("M-Money\u{FFFD}", "a\u{FFFD}b")
        );
        assert_eq!(
            Forwarded::from_json(&json!({"sender": "M-Money"})),
            Err(SmsError::MissingField {
                field: "text",
                aliases: "`body`, `message`"
            })
        );
        assert_eq!(
            Forwarded::from_json(&json!({"text": 3, "sender": "x"})).map(|_| ()),
            Err(SmsError::MissingField {
                field: "text",
                aliases: "`body`, `message`"
            })
        );
        assert_eq!(
            Forwarded::from_json(&json!(["M-Money"])),
            Err(SmsError::NotAnObject)
        );
    }

    #[test]
    fn amounts_and_times() {
        assert_eq!(whole_units("1,000"), Some(1000));
        assert_eq!(whole_units("2000"), Some(2000));
        assert_eq!(whole_units("10."), None);
        assert_eq!(whole_units(""), None);
        // A sign is not part of an amount: `-5` is not a refund of 5, `+5` not a credit.
        assert_eq!(whole_units("-5"), None);
        assert_eq!(whole_units("+5"), None);
        assert_eq!(whole_units(","), None);
        assert_eq!(
            timestamp("2024-05-10 16:30:51").as_deref(),
            Some("2024-05-10T16:30:51+02:00")
        );
        assert_eq!(
            timestamp("2026-09-04T08:45:12.498+02:00").as_deref(),
            Some("2026-09-04T08:45:12.498+02:00")
        );
        assert_eq!(timestamp("2024-05-10 16:30"), None);
        // Nineteen characters, each one wrong in one place.
        for malformed in [
            "2024-05-10X16:30:51",
            "2024/05/10 16:30:51",
            "2024-05-10 16-30-51",
            "20a4-05-10 16:30:51",
            "2024-05-1a 16:30:51",
            "2024-05-10 16:30:5a",
        ] {
            assert_eq!(malformed.len(), 19);
            assert_eq!(timestamp(malformed), None, "{malformed}");
        }
        assert_eq!(timestamp("2026-09-04T08:45:12.498"), None);
        assert_eq!(
            squeeze_spaces("MTN RWANDACELL  LIMITED"),
            "MTN RWANDACELL LIMITED"
        );
    }

    #[test]
    fn glued_texts_are_read_apart_and_cut_texts_not_at_all() {
        let rules = rules(&[
            (
                "in",
                SmsKind::Credit,
                r"^In (?P<amount>[\d,]+) RWF\. Id: (?P<txid>\d+)\.$",
            ),
            (
                "out",
                SmsKind::Debit,
                r"^Out (?P<amount>[\d,]+) RWF\. Id: (?P<txid>\d+)\.$",
            ),
        ]);
        let whole = read(&rules, "In 1,500 RWF. Id: 42.");
        assert_eq!(whole.len(), 1);
        assert_eq!(
            (whole[0].amount, whole[0].transaction_id.as_deref()),
            (Some(1500), Some("42"))
        );
        assert!(whole[0].is_credit());
        let glued = read(&rules, "In 2000 RWF. Id: 7.Out 1,000 RWF. Id: 8.");
        assert_eq!(
            glued
                .iter()
                .map(|r| (r.pattern.as_str(), r.transaction_id.as_deref()))
                .collect::<Vec<_>>(),
            [("in", Some("7")), ("out", Some("8"))]
        );
        assert!(read(&rules, "In 2000 RWF. Id: ").is_empty(), "cut off");
        assert!(read(&rules, "hello").is_empty());
        assert!(read(&rules, &"x".repeat(MAX_TEXT_CHARS + 1)).is_empty());
    }

    #[test]
    fn the_length_cap_is_exactly_two_thousand_characters() {
        let rules = rules(&[(
            "in",
            SmsKind::Credit,
            r"^In (?P<amount>\d+) RWF\. Id: (?P<txid>\d+)\.x*$",
        )]);
        let head = "In 5 RWF. Id: 9.";
        // Characters, not bytes: the padding is two bytes a character.
        let at_cap = format!("{head}{}", "x".repeat(MAX_TEXT_CHARS - head.len()));
        assert_eq!(at_cap.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(read(&rules, &at_cap).len(), 1, "2,000 is read");
        assert!(
            read(&rules, &format!("{at_cap}x")).is_empty(),
            "2,001 is not"
        );
    }

    #[test]
    fn a_debit_never_credits() {
        let reading = |kind| Reading {
            pattern: "p".into(),
            kind,
            text: String::new(),
            amount: Some(5),
            currency: None,
            counterparty: None,
            phone: None,
            transaction_id: Some("1".into()),
            balance: None,
            fee: None,
            occurred_at: None,
        };
        assert!(reading(SmsKind::Credit).is_credit());
        assert!(reading(SmsKind::Refund).is_credit());
        assert!(!reading(SmsKind::Debit).is_credit());
        assert!(!reading(SmsKind::NonPayment).is_credit());
    }

    #[test]
    fn a_cut_credit_glued_before_a_text_that_starts_with_digits_credits_nothing() {
        // The credit's wildcard runs into the loan text, whose transaction id would then be
        // credited with the cut text's 50,000 RWF. The loan text starts with digits, so the
        // check for a later payment must look at digits that do not continue a number.
        let rules = rules(&[
            (
                "received",
                SmsKind::Credit,
                r"^You have received (?P<amount>[\d,]+) RWF from (?P<counterparty>[^.]+)\..*Id: (?P<txid>\d+)\.$",
            ),
            (
                "loan",
                SmsKind::Debit,
                r"^(?P<amount>[\d,]+) RWF paid to your loan\. Id: (?P<txid>\d+)\.$",
            ),
        ]);
        let glued = "You have received 50000 RWF from Jane. Message: rent for10631 RWF paid to your loan. Id: 555.";
        let readings = read(&rules, glued);
        assert!(
            !readings
                .iter()
                .any(|r| r.is_credit() && r.transaction_id.as_deref() == Some("555")),
            "{readings:?}"
        );
        // Glued after a space, the same: nothing credits under the loan's id.
        let spaced = glued.replace("for10631", "for 10631");
        assert!(
            !read(&rules, &spaced).iter().any(Reading::is_credit),
            "{:?}",
            read(&rules, &spaced)
        );
    }

    fn rules_numbers() -> SmsRules {
        rules(&[(
            "loan",
            SmsKind::Debit,
            r"^(?P<amount>[\d,]+) RWF paid\. Id: (?P<txid>\d+)\.$",
        )])
    }

    #[test]
    fn a_cut_text_glued_before_a_whole_one_does_not_lend_its_amount() {
        // Wildcards let the first pattern run over the cut into the next text.
        let rules = rules(&[(
            "in",
            SmsKind::Credit,
            r"^In (?P<amount>[\d,]+) RWF from .*?Id: (?P<txid>\d+)\.$",
        )]);
        let whole = read(&rules, "In 1,000 RWF from Ann. Id: 999.");
        assert_eq!(whole[0].amount, Some(1000));
        // An amount's digits are not message starts.
        let numbers = rules_numbers();
        let loan = read(&numbers, "10631 RWF paid. Id: 3.");
        assert_eq!(loan.len(), 1, "{loan:?}");
        assert_eq!(loan[0].amount, Some(10631));
        let glued = read(
            &rules,
            "In 500,000 RWF from BobIn 1,000 RWF from Ann. Id: 999.",
        );
        assert!(glued.is_empty(), "{glued:?}");
    }
}
