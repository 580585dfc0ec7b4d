//! `endpoints[].sending`: the Cloud API number, token, pace and retry policy of replies.

use easymo_dsl::{codes, Diagnostic};

use std::time::Duration;

use super::context::Cx;
use crate::config::raw;
use crate::config::sending::Sending;
use crate::config::yaml::Path;

/// Meta's ceiling for one number's throughput, in messages per second.
const MAX_THROUGHPUT: u32 = 1_000;

/// WhatsApp's customer-service window: a free-form reply later than this is refused (131047).
const SERVICE_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(super) fn compile_sending(
    cx: &mut Cx<'_>,
    endpoint: &str,
    raw: &raw::Sending,
    at: &Path,
) -> Option<Sending> {
    let access_token = cx.secret(
        &raw.access_token,
        &at.key("access_token"),
        "the Graph API access token",
    );
    let base_url = check_address(cx, raw, at);
    if raw.throughput == 0 {
        cx.error(
            codes::INVALID_VALUE,
            "a throughput of 0 sends nothing",
            &at.key("throughput"),
            "",
        )
        .help = Some("a new number sends 80 messages a second; Meta raises it to 1,000".to_owned());
    } else if raw.throughput > MAX_THROUGHPUT {
        let span = cx.index.value(&at.key("throughput"));
        cx.out.push(
            Diagnostic::warning(
                codes::THROUGHPUT_ABOVE_META,
                format!(
                    "throughput {} is above the {MAX_THROUGHPUT} messages a second Meta grants a number",
                    raw.throughput
                ),
            )
            .at(cx.file, span, "Meta answers the excess with 130429 and the engine retries it")
            .help("use Meta's figure for the number; more only makes sense against a test server"),
        );
    }
    let (attempts, backoff, backoff_ceiling) = check_retry(cx, raw, at);
    let timeout = cx.duration(&raw.timeout, &at.key("timeout"));
    let probe_after = cx.duration(&raw.probe_after, &at.key("probe_after"));
    let deliver_within = cx.duration(&raw.deliver_within, &at.key("deliver_within"));
    if deliver_within.is_some_and(|d| d > SERVICE_WINDOW) {
        cx.error(
            codes::INVALID_VALUE,
            format!(
                "deliver_within `{}` is longer than WhatsApp's 24-hour service window",
                raw.deliver_within
            ),
            &at.key("deliver_within"),
            "Meta refuses a free-form reply after 24 hours (131047)",
        )
        .help =
            Some("a reply hours late is rarely wanted: `15m` to `1h` suits most flows".to_owned());
    }
    Some(Sending {
        endpoint: endpoint.to_owned(),
        access_token: access_token?,
        phone_number_id: raw.phone_number_id.clone(),
        base_url,
        api_version: raw.api_version.clone(),
        timeout: timeout?,
        throughput: raw.throughput,
        attempts,
        backoff: backoff?,
        backoff_ceiling: backoff_ceiling?,
        deliver_within: deliver_within?,
        probe_after: probe_after?,
        redrive: raw.redrive.clone(),
    })
}

/// The base URL, the API version and the number: where the requests go. Returns the base URL
/// without a trailing slash.
fn check_address(cx: &mut Cx<'_>, raw: &raw::Sending, at: &Path) -> String {
    let base_url = cx.base_url(
        &raw.base_url,
        &at.key("base_url"),
        "leave it out for Meta's `https://graph.facebook.com`",
    );
    let version_ok = raw
        .api_version
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major
                    .bytes()
                    .chain(minor.bytes())
                    .all(|b| b.is_ascii_digit())
        });
    if !version_ok {
        cx.error(
            codes::INVALID_VALUE,
            format!("`{}` is not a Graph API version", raw.api_version),
            &at.key("api_version"),
            "",
        )
        .help = Some("write it as Meta does, e.g. `v25.0`".to_owned());
    }
    if let Some(id) = &raw.phone_number_id {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            cx.error(
                codes::INVALID_VALUE,
                format!("`{id}` is not a phone number id"),
                &at.key("phone_number_id"),
                "",
            )
            .help = Some(
                "the numeric id from the WhatsApp Manager (not the phone number itself); leave it out to reply from the number each message came to"
                    .to_owned(),
            );
        }
    }
    base_url
}

/// The retry policy: attempts, the first backoff and its ceiling.
fn check_retry(
    cx: &mut Cx<'_>,
    raw: &raw::Sending,
    at: &Path,
) -> (u32, Option<Duration>, Option<Duration>) {
    let retry = raw.retry.clone().unwrap_or(raw::Retry {
        attempts: raw::default_attempts(),
        backoff: raw::default_backoff(),
        backoff_ceiling: raw::default_backoff_ceiling(),
    });
    let retry_at = at.key("retry");
    if retry.attempts == 0 {
        cx.error(
            codes::INVALID_VALUE,
            "attempts counts the first one: at least 1",
            &retry_at.key("attempts"),
            "",
        );
    }
    let backoff = cx.duration(&retry.backoff, &retry_at.key("backoff"));
    let backoff_ceiling = cx.duration(&retry.backoff_ceiling, &retry_at.key("backoff_ceiling"));
    if let (Some(backoff), Some(ceiling)) = (backoff, backoff_ceiling) {
        if ceiling < backoff {
            cx.error(
                codes::INVALID_VALUE,
                "the backoff ceiling is shorter than the first backoff",
                &retry_at.key("backoff_ceiling"),
                "",
            );
        }
    }
    (retry.attempts.max(1), backoff, backoff_ceiling)
}
