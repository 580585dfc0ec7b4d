//! Forwarded MoMo SMS through the real server: every corpus text, spoofed senders, repeats,
//! glued and cut texts, bad bodies. Nothing may credit twice or on a forged text, and nothing
//! sent is lost.

use crate::support::{corpus, ConfigDir, Engine, HttpResponse};

fn post(engine: &Engine, body: &serde_json::Value) -> HttpResponse {
    engine
        .request("POST", "/webhooks/momo-sms")
        .header("content-type", "application/json")
        .body(body.to_string().as_bytes())
        .send()
}

fn forwarded(sender: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"sender": sender, "text": text, "received_at": "2026-06-01T10:00:00+02:00", "device": "gateway-1"})
}

#[test]
fn every_corpus_sms_is_recorded_and_read_or_kept_for_review() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let mut files: Vec<_> = std::fs::read_dir(corpus("sms"))
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 26, "the SMS corpus");
    let mut report = String::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("sms");
        let response = post(&engine, &forwarded("M-Money", &text));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut json = response.json();
        if let Some(map) = json.as_object_mut() {
            map.remove("smsId");
        }
        report.push_str(&format!("{name}: {} {json}\n", response.status));
    }
    insta::assert_snapshot!(report);

    let rows = engine.rows(
        "select (select count(*) from sms_messages) as recorded,
                (select count(*) from sms_messages where outcome = 'received') as unread,
                (select count(*) from momo_sms_transactions where credited) as credits,
                (select coalesce(sum(amount), 0) from momo_sms_transactions where credited) as credited_rwf",
    );
    assert_eq!(
        rows[0]["recorded"].as_i64(),
        Some(files.len() as i64),
        "every SMS is on record"
    );
    assert_eq!(rows[0]["unread"], 0);
    insta::assert_snapshot!(
        "credits",
        serde_json::to_string_pretty(&rows[0]).unwrap_or_default()
    );
    let raw = engine.rows("select convert_from(body, 'UTF8')::jsonb ->> 'text' as text from sms_messages order by id limit 1");
    assert_eq!(
        raw[0]["text"].as_str(),
        std::fs::read_to_string(&files[0]).ok().as_deref(),
        "the raw body is kept as sent"
    );
}

#[test]
fn nothing_credits_twice_or_on_a_forged_or_broken_text() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let received = std::fs::read_to_string(corpus("sms/01_mtn_received_p2p.txt")).expect("sms");

    // Anyone can text the gateway phone: only M-Money's texts may credit.
    let spoofed = post(&engine, &forwarded("+250788123456", &received));
    assert_eq!(spoofed.status, 200, "{}", spoofed.text());
    assert_eq!(spoofed.json()["status"], "untrusted_sender");

    let first = post(&engine, &forwarded("M-Money", &received));
    assert_eq!(first.json()["status"], "credited", "{}", first.text());
    let again = post(&engine, &forwarded("M-Money", &received));
    assert_eq!(again.json()["status"], "duplicate");

    // Cut at 160 characters: the transaction id is gone, so no pattern reads it whole.
    let cut: String = received.chars().take(160).collect();
    let truncated = post(&engine, &forwarded("M-Money", &cut));
    assert_eq!(truncated.status, 422);
    assert_eq!(truncated.json()["error"], "unparsed_sms");

    // The forwarder's aliases are understood; a body without a text is refused, and kept.
    let aliased = post(
        &engine,
        &serde_json::json!({"from": "M-Money", "message": "<#> Dear Customer, your MTN MoMo application one-time password is :1234."}),
    );
    assert_eq!(
        aliased.json()["status"],
        "non_payment",
        "{}",
        aliased.text()
    );
    let missing = post(&engine, &serde_json::json!({"sender": "M-Money"}));
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`text`"),
        "{}",
        missing.text()
    );
    let broken = engine
        .request("POST", "/webhooks/momo-sms")
        .header("content-type", "application/json")
        .body(b"{\"sender\": \"M-Mo")
        .send();
    assert_eq!(broken.status, 400);

    let rows = engine
        .rows("select outcome, count(*) as n from sms_messages group by outcome order by outcome");
    assert_eq!(
        rows,
        serde_json::json!([
            {"outcome": "credited", "n": 1},
            {"outcome": "duplicate", "n": 1},
            {"outcome": "invalid", "n": 2},
            {"outcome": "non_payment", "n": 1},
            {"outcome": "unparsed", "n": 1},
            {"outcome": "untrusted_sender", "n": 1},
        ])
    );
    let credits = engine.rows(
        "select transaction_id, amount, counterparty, phone,
                to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as utc
         from momo_sms_transactions",
    );
    assert_eq!(
        credits,
        serde_json::json!([{"transaction_id": "76662021700", "amount": 2000, "counterparty": "Jane Smith",
                            "phone": "*********013", "utc": "2024-05-10 14:30:51"}]),
        "one credit, in UTC (the text's Kigali time is UTC+2)"
    );
    // The same outcomes on /metrics, where "SMS credited" and "unparsed" are business counts.
    let metrics = engine.request("GET", "/metrics").send().text();
    for line in [
        r#"easymo_sms_total{outcome="credited"} 1"#,
        r#"easymo_sms_total{outcome="duplicate"} 1"#,
        r#"easymo_sms_total{outcome="unparsed"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}

#[test]
fn an_sms_the_rate_limit_drops_is_kept_for_review() {
    let config = ConfigDir::shipped(|text| {
        text.replace(
            "      requests: 100\n      per: 60s\n      key: client_ip",
            "      requests: 1\n      per: 60s\n      key: client_ip\n      on_limit: drop",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let received = std::fs::read_to_string(corpus("sms/01_mtn_received_p2p.txt")).expect("sms");
    assert_eq!(
        post(&engine, &forwarded("M-Money", &received)).json()["status"],
        "credited"
    );
    let text = std::fs::read_to_string(corpus("sms/17_mtn_received_2026_short.txt")).expect("sms");
    let dropped = post(&engine, &forwarded("M-Money", &text));
    assert_eq!(dropped.json()["status"], "dropped", "{}", dropped.text());
    let kept = engine.rows(
        "select outcome, convert_from(body, 'UTF8')::jsonb ->> 'text' as text from sms_messages order by id",
    );
    assert_eq!(kept[1]["outcome"], "rate_limited");
    assert_eq!(
        kept[1]["text"].as_str(),
        Some(text.as_str()),
        "nothing is lost"
    );
}
