//! `sms:` of an SMS endpoint: the forwarder's senders and the patterns that read its texts.

use std::collections::BTreeSet;

use easymo_dsl::check::{self};
use easymo_dsl::diagnostic::did_you_mean;
use easymo_dsl::{codes, Diagnostic};

use super::context::Cx;
use crate::config::raw::{self, SmsKind};
use crate::config::yaml::Path;
use crate::config::{Flows, SmsPattern, SmsRules};

/// Captures an SMS pattern may name.
pub const SMS_CAPTURES: &[&str] = &[
    "amount",
    "currency",
    "counterparty",
    "phone",
    "txid",
    "balance",
    "fee",
    "date",
];

pub(super) fn compile_sms(
    cx: &mut Cx<'_>,
    raw: &raw::Sms,
    at: &Path,
    flows: &Flows,
    incomplete_flows: bool,
) -> SmsRules {
    if raw.senders.is_empty() {
        cx.error(
            codes::INVALID_VALUE,
            "no SMS sender may credit: list the sender ids, e.g. `M-Money`",
            &at.key("senders"),
            "",
        );
    }
    let mut patterns = Vec::new();
    for (i, pattern) in raw.patterns.iter().enumerate() {
        let pp = at.key("patterns").index(i);
        let regex = match regex::Regex::new(&pattern.regex) {
            Ok(r) => r,
            Err(e) => {
                let detail = e.to_string();
                let last = detail
                    .lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .to_owned();
                cx.error(codes::SMS_REGEX, format!("SMS pattern `{}` does not compile", pattern.name), &pp.key("regex"), last)
                    .help = Some("named captures are written `(?P<amount>...)`; in YAML single quotes, backslashes need no escaping".to_owned());
                continue;
            }
        };
        let captures: BTreeSet<&str> = regex.capture_names().flatten().collect();
        for name in &captures {
            if !SMS_CAPTURES.contains(name) {
                cx.error(
                    codes::SMS_UNKNOWN_CAPTURE,
                    format!(
                        "SMS pattern `{}` captures `{name}`, which the engine does not know",
                        pattern.name
                    ),
                    &pp.key("regex"),
                    "",
                )
                .help = did_you_mean(name, SMS_CAPTURES.iter().copied())
                    .or_else(|| Some(format!("known captures: {}", SMS_CAPTURES.join(", "))));
            }
        }
        let required: &[&str] = match pattern.kind {
            // Only credits move money into our books, and only a transaction id makes a credit
            // idempotent. MTN's debit, refund and reversal texts often carry no id at all.
            SmsKind::Credit => &["amount", "txid"],
            SmsKind::Debit | SmsKind::Refund | SmsKind::Reversal | SmsKind::Failed => &["amount"],
            SmsKind::NonPayment => &[],
        };
        for need in required {
            if !captures.contains(need) {
                cx.error(
                    codes::SMS_MISSING_CAPTURE,
                    format!(
                        "SMS pattern `{}` of kind `{:?}` must capture `{need}`",
                        pattern.name, pattern.kind
                    )
                    .to_lowercase(),
                    &pp.key("regex"),
                    format!("no `(?P<{need}>...)` group"),
                )
                .help = Some(format!(
                    "a payment SMS without a parsed {need} can never be recorded safely"
                ));
            }
        }
        if let Some(flow_name) = &pattern.flow {
            check_sms_flow(
                cx,
                flow_name,
                &pp.key("flow"),
                &captures,
                flows,
                incomplete_flows,
            );
        }
        patterns.push(SmsPattern {
            name: pattern.name.clone(),
            kind: pattern.kind,
            regex,
            flow: pattern.flow.clone(),
        });
    }
    SmsRules {
        senders: raw.senders.clone(),
        patterns,
    }
}

pub(super) fn check_sms_flow(
    cx: &mut Cx<'_>,
    flow_name: &str,
    at: &Path,
    captures: &BTreeSet<&str>,
    flows: &Flows,
    incomplete_flows: bool,
) {
    let (Some(entry), Some(flow)) = (flows.index.get(flow_name), flows.get(flow_name)) else {
        if !incomplete_flows {
            cx.error(
                codes::UNKNOWN_FLOW,
                format!("unknown flow `{flow_name}`"),
                at,
                "",
            )
            .help = did_you_mean(flow_name, flows.index.keys().map(String::as_str));
        }
        return;
    };
    let [param] = flow.params.as_slice() else {
        let span = cx.index.value(at);
        cx.out.push(
            Diagnostic::error(
                codes::AWAIT_TARGET,
                format!("flow `{flow_name}` must take exactly one parameter: the parsed SMS"),
            )
            .at(cx.file, span, "")
            .also(entry.file, entry.name_span, "defined here"),
        );
        return;
    };
    for field in check::param_fields(flow, &param.node) {
        if !captures.contains(field.node.as_str()) {
            let span = cx.index.value(at);
            cx.out.push(
                Diagnostic::error(
                    codes::SMS_MISSING_CAPTURE,
                    format!(
                        "flow `{flow_name}` reads `{}.{}`, which this SMS pattern never captures",
                        param.node, field.node
                    ),
                )
                .at(entry.file, field.span, "not captured")
                .also(cx.file, span, "the pattern that starts this flow")
                .help(format!(
                    "add `(?P<{}>...)` to the regex, or stop reading it",
                    field.node
                )),
            );
        }
    }
}
