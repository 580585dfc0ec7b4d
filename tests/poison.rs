//! No 200 without processing: deliveries recorded but not processed are processed by the running
//! engine, and poison input is answered, kept whole, marked, and holds up nothing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    easymo, engine_env, exec, now_unix, rows, signed_whatsapp, text_delivery, ConfigDir, Engine,
};

/// A delivery of `messages`, each sent by `250788000222` unless it says otherwise.
fn delivery(profile_name: &str, messages: serde_json::Value) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": profile_name}, "wa_id": "250788000222"}],
            "messages": messages
        }}]}]
    })
    .to_string()
    .into_bytes()
}

fn text(id: Option<&str>, from: &str, body: &str) -> serde_json::Value {
    let mut message = json!({"from": from, "timestamp": now_unix().to_string(), "type": "text", "text": {"body": body}});
    if let Some(id) = id {
        message["id"] = json!(id);
    }
    message
}

fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn poison_input_is_answered_kept_whole_and_marked_without_holding_up_its_neighbours() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let mut i64_min = text(Some("wamid.poison-time"), "250788000222", "help");
    i64_min["timestamp"] = json!(i64::MIN.to_string());
    let poison: Vec<(&str, Vec<u8>)> = vec![
        (
            "NUL in the text",
            delivery(
                "Ann",
                json!([text(Some("wamid.poison-text"), "250788000222", "he\u{0}lp")]),
            ),
        ),
        (
            "NUL in the profile name",
            delivery(
                "A\u{0}nn",
                json!([text(Some("wamid.poison-name"), "250788000222", "help")]),
            ),
        ),
        (
            "NUL in from",
            delivery(
                "Ann",
                json!([text(Some("wamid.poison-from"), "2507880\u{0}0222", "help")]),
            ),
        ),
        (
            "NUL in the wamid",
            delivery(
                "Ann",
                json!([text(Some("wamid.poison\u{0}id"), "250788000222", "help")]),
            ),
        ),
        ("timestamp i64::MIN", delivery("Ann", json!([i64_min]))),
        (
            "no id",
            delivery("Ann", json!([text(None, "250788000222", "jobs")])),
        ),
        (
            "no id again",
            delivery("Ann", json!([text(None, "250788000333", "rent")])),
        ),
        (
            "a poison message beside a sound one",
            delivery(
                "Ann",
                json!([
                    text(Some("wamid.poison-beside"), "250788000222", "x\u{0}"),
                    text(Some("wamid.sound-neighbour"), "250788000222", "help")
                ]),
            ),
        ),
    ];
    for (what, body) in &poison {
        let response = signed_whatsapp(engine.addr, body);
        assert_eq!(response.status, 200, "{what}: {}", response.text());
        assert_eq!(
            response.json()["status"],
            "poison",
            "{what}: {}",
            response.text()
        );
        assert!(
            response.json()["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{what}"
        );
    }
    // A sound delivery after all of them is processed as usual.
    let sound = text_delivery("250788000444", "wamid.sound-after", "help");
    assert_eq!(
        signed_whatsapp(engine.addr, &sound).json()["status"],
        "success"
    );

    let kept = engine.rows(
        "select encode(body, 'hex') as body, poison from deliveries where poison is not null order by id",
    );
    let kept = kept.as_array().expect("rows");
    assert_eq!(kept.len(), poison.len(), "{kept:?}");
    for ((what, body), row) in poison.iter().zip(kept) {
        assert_eq!(
            row["body"],
            hex::encode(body),
            "{what}: the bytes as received"
        );
    }
    let processed = engine.rows(
        "select provider_message_id from inbound_messages
         where provider_message_id in ('wamid.sound-neighbour', 'wamid.sound-after', '')
         order by 1",
    );
    assert_eq!(
        processed,
        json!([{"provider_message_id": "wamid.sound-after"}, {"provider_message_id": "wamid.sound-neighbour"}])
    );

    // Operators see them.
    let listed = easymo(
        &[
            "dlq",
            "inbound",
            "--format",
            "json",
            "--database-url",
            &engine.database_url,
        ],
        &[],
    );
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(poison.len()));
    assert!(
        listed.to_string().contains("a message without an id"),
        "{listed}"
    );
    assert!(listed.to_string().contains("NUL byte"), "{listed}");

    // A restart on the same database tries none of them again.
    let database_url = engine.database_url.clone();
    drop(engine);
    let mut env = engine_env();
    env.retain(|(k, _)| *k != "DATABASE_URL");
    env.push(("DATABASE_URL", &database_url));
    let restarted = Engine::start_on(&config, "127.0.0.1:0", &env);
    std::thread::sleep(Duration::from_secs(3));
    let logs = restarted.logs().join("\n");
    assert!(!logs.contains("delivery.redeliver"), "{logs}");
    assert!(!logs.contains("processing_failed"), "{logs}");
}

#[test]
fn deliveries_recorded_but_not_processed_are_processed_without_a_restart() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // What a batch that failed after its delivery was recorded leaves behind.
    let body = text_delivery("250788000555", "wamid.left-behind", "help");
    let nul = delivery(
        "Ann",
        json!([text(Some("wamid.left-nul"), "250788000555", "a\u{0}")]),
    );
    exec(
        &engine.database_url,
        &format!(
            "insert into deliveries (endpoint, headers, body) values
             ('wa-webhook-core', '{{}}', decode('{}', 'hex')),
             ('wa-webhook-core', '{{}}', decode('{}', 'hex')),
             ('wa-webhook-core', '{{}}', 'not json at all')",
            hex::encode(&body),
            hex::encode(&nul)
        ),
    );
    wait_until(
        "the left-behind delivery is processed",
        Duration::from_secs(20),
        || {
            engine.rows(
            "select 1 from inbound_messages where provider_message_id = 'wamid.left-behind'",
        )
        .as_array()
        .is_some_and(|r| r.len() == 1)
        },
    );
    wait_until("all three are closed", Duration::from_secs(10), || {
        engine
            .rows("select 1 from deliveries where processed_at is null")
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    let poison = engine.rows("select poison from deliveries where poison is not null order by id");
    let poison = poison.to_string();
    assert!(poison.contains("NUL byte"), "{poison}");
    assert!(poison.contains("does not parse"), "{poison}");
    // The reply was queued: the message was answered, not merely recorded.
    let replies = engine
        .rows("select count(*) as n from outbox where inbound_message_id = 'wamid.left-behind'");
    assert!(replies[0]["n"].as_i64().unwrap_or(0) > 0, "{replies}");
}

#[test]
fn database_connections_killed_under_load_leave_no_acknowledged_message_unprocessed() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let url = engine.database_url.clone();
        std::thread::spawn(move || {
            let mut killed = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n = rows(
                    &url,
                    "select count(pg_terminate_backend(pid)) as n from pg_stat_activity
                     where datname = current_database() and pid <> pg_backend_pid()",
                );
                killed += n[0]["n"].as_i64().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(150));
            }
            killed
        })
    };
    let addr = engine.addr;
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..150 {
                    let id = format!("wamid.killed-{t}-{i}");
                    let body = text_delivery(&format!("25078810{t:04}"), &id, "help");
                    if signed_whatsapp(addr, &body).status == 200 {
                        acknowledged.push(id);
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let killed = killer.join().expect("killer");
    assert!(killed > 0, "no connection was killed");
    assert!(!acknowledged.is_empty(), "nothing was acknowledged");
    let list: Vec<String> = acknowledged.iter().map(|id| format!("'{id}'")).collect();
    let sql = format!(
        "select count(*) as n from inbound_messages where provider_message_id in ({})",
        list.join(",")
    );
    wait_until(
        "every acknowledged message processed, without a restart",
        Duration::from_secs(60),
        || engine.rows(&sql)[0]["n"].as_u64() == Some(acknowledged.len() as u64),
    );
    assert_eq!(
        engine.rows("select count(*) as n from deliveries where processed_at is null")[0]["n"],
        0
    );
    println!(
        "killed {killed} connections; {} acknowledged",
        acknowledged.len()
    );
}

#[test]
fn an_sms_with_a_nul_byte_is_recorded_not_a_500() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let body =
        json!({"sender": "M-Money", "text": "You have received 5000 RWF\u{0} from X"}).to_string();
    let response = engine
        .request("POST", "/webhooks/momo-sms")
        .header("content-type", "application/json")
        .body(body.as_bytes())
        .send();
    assert!(
        response.status < 500,
        "{} {}",
        response.status,
        response.text()
    );
    let kept = engine.rows("select encode(body, 'escape') as body, text from sms_messages");
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    assert!(
        kept[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains('\u{FFFD}')),
        "{kept}"
    );
}
