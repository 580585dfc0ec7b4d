//! No log line holds a phone number, in any encoding: a WhatsApp message id is base64 of the
//! sender's number, so every id-like value of a real engine's logs under traffic is decoded and
//! searched.

use base64::Engine as _;

use crate::support::{exec, text_delivery, ConfigDir, Engine};

/// A message id shaped as Meta's: base64 of a protobuf-like record holding the sender's number.
fn wamid(from: &str, n: usize) -> String {
    let mut raw = vec![0x18, 0x0c];
    raw.extend_from_slice(from.as_bytes());
    raw.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, 0x12]);
    raw.extend_from_slice(format!("{n:018X}").as_bytes());
    raw.push(0);
    format!(
        "wamid.{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Every way a token of a log line may decode.
fn decodings(token: &str) -> Vec<Vec<u8>> {
    let bare = token.trim_start_matches("wamid.").trim_end_matches('=');
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().filter_map(|e| e.decode(bare).ok()).collect()
}

#[test]
fn no_log_line_holds_a_phone_number_in_any_encoding() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let mut env = crate::support::engine_env();
    env.push(("RUST_LOG", "debug"));
    let engine = Engine::start_with(&config, "127.0.0.1:0", &env);
    let senders: Vec<String> = (0..30).map(|n| format!("2507887{n:05}")).collect();
    for (n, from) in senders.iter().enumerate() {
        let id = wamid(from, n);
        let body = text_delivery(from, &id, "menu");
        assert_eq!(engine.whatsapp(&body).status, 200);
        if n % 5 == 0 {
            // The same delivery again: logged as a duplicate, with its id.
            assert_eq!(engine.whatsapp(&body).status, 200);
        }
    }
    // A failing flow logs its message id too.
    exec(&engine.database_url, "drop table job_categories cascade");
    for (n, from) in senders.iter().enumerate().take(5) {
        let body = text_delivery(from, &wamid(from, 100 + n), "jobs");
        assert_eq!(engine.whatsapp(&body).status, 200);
    }
    assert!(engine.wait_for_log("flow.failed", std::time::Duration::from_secs(10)));
    let logs = engine.logs();
    let tokens = regex::Regex::new(r"[A-Za-z0-9+/_.=-]{12,}").expect("regex");
    let mut decoded_tokens = 0;
    let mut correlated = 0;
    for line in &logs {
        for from in &senders {
            assert!(!line.contains(from.as_str()), "a full number in: {line}");
        }
        for token in tokens.find_iter(line) {
            for bytes in decodings(token.as_str()) {
                decoded_tokens += 1;
                for from in &senders {
                    assert!(
                        !bytes.windows(from.len()).any(|w| w == from.as_bytes()),
                        "`{}` decodes to a number in: {line}",
                        token.as_str()
                    );
                }
            }
        }
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if let Some(id) = event["correlation_id"].as_str() {
            assert!(id.starts_with("wamid#") && id.len() == 18, "{line}");
            correlated += 1;
        }
    }
    // The check looked at something: ids were logged (as references) and tokens decoded.
    assert!(correlated >= 30, "{correlated} lines with a correlation id");
    assert!(decoded_tokens > 0);
    assert!(logs.iter().any(|l| l.contains("message.duplicate")));
}
