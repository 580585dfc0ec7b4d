//! `easymo serve` as Meta, MTN and an SMS gateway see it: the real binary on 127.0.0.1, real
//! HTTP, the corpus's exact wire bytes and signatures.

use crate::support::{corpus, corpus_signature, ConfigDir, Engine, ADMIN_TOKEN, CORPUS_APP_SECRET};
use easymo_engine::auth::signature::sign_hex;

fn shipped() -> (ConfigDir, Engine) {
    let config = ConfigDir::shipped(str::to_owned);
    let engine = Engine::start(&config, "127.0.0.1:0");
    (config, engine)
}

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(corpus(&format!("whatsapp/{name}"))).expect("corpus file")
}

fn post_signed(engine: &Engine, body: &[u8], signature: &str) -> crate::support::HttpResponse {
    engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
}

#[test]
fn every_corpus_delivery_with_its_signature_is_accepted_and_routed() {
    let (_config, engine) = shipped();
    let listing = std::fs::read_to_string(corpus("whatsapp/SIGNATURES.txt")).expect("listing");
    let mut sent = 0;
    for line in listing.lines().filter(|l| !l.starts_with('#')) {
        let Some((signature, file)) = line.split_once("  ") else {
            continue;
        };
        if file.trim().starts_with('(') {
            continue; // the negative example: see signatures_are_checked_over_the_raw_bytes
        }
        let file = file.trim();
        let response = post_signed(&engine, &wire(file), signature);
        assert_eq!(response.status, 200, "{file}: {}", response.text());
        assert_eq!(response.json()["status"], "success", "{file}");
        sent += 1;
    }
    assert!(sent >= 33, "{sent}");
    // A text delivery names the flow its keyword routes to.
    let routed = engine.whatsapp(&crate::support::text_delivery(
        "250788000001",
        "wamid.X",
        "Find jobs!",
    ));
    assert_eq!(
        routed.json(),
        serde_json::json!({"status": "success", "routed_to": "jobs"})
    );
    let status_only = post_signed(
        &engine,
        &wire("12_status_sent.json"),
        &corpus_signature("12_status_sent.json"),
    );
    assert_eq!(status_only.json()["routed_to"], serde_json::Value::Null);
}

#[test]
fn signatures_are_checked_over_the_raw_bytes() {
    let (_config, engine) = shipped();
    let body = wire("wire/21_text_unicode_emoji.json");
    let good = corpus_signature("wire/21_text_unicode_emoji.json");
    assert_eq!(
        post_signed(&engine, &body, &good).status,
        200,
        "unicode body, exact bytes"
    );

    let refused = |response: crate::support::HttpResponse, case: &str| {
        assert_eq!(response.status, 403, "{case}: {}", response.text());
        assert_eq!(response.json()["error"], "invalid_signature", "{case}");
    };
    let missing = engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .body(&body)
        .send();
    refused(missing, "missing header");
    refused(
        post_signed(&engine, &body, &good.replace("sha256=", "sha1=")),
        "wrong prefix",
    );
    refused(
        post_signed(&engine, &body, &good.replace("sha256=", "")),
        "no prefix",
    );
    let other_secret = format!("sha256={}", sign_hex(b"not-the-app-secret", &body));
    refused(post_signed(&engine, &body, &other_secret), "wrong secret");
    let mut changed = body.clone();
    let at = changed.iter().position(|b| *b == b'"').expect("a quote");
    changed[at + 1] ^= 0x01;
    refused(
        post_signed(&engine, &changed, &good),
        "one body byte changed",
    );
    // Meta signs the escaped wire bytes; a signature over the re-serialized JSON must not pass.
    let reserialized = "sha256=665dad74807809b9b0794b3c1104b84072c3cb3eeec72fb1ed677f80279f57c1";
    refused(
        post_signed(&engine, &body, reserialized),
        "signature of the re-serialized body",
    );
    refused(post_signed(&engine, &body, "sha256=zz"), "malformed hex");
    // Nothing of a refused body is processed: only the accepted delivery was read far enough
    // to have a message id in the logs.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let completed = || {
        engine
            .logs()
            .iter()
            .filter(|l| l.contains("\"request.completed\""))
            .count()
    };
    while completed() < 8 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let with_message: Vec<String> = engine
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"correlation_id\":\"wamid#"))
        .collect();
    assert_eq!(with_message.len(), 1, "{with_message:#?}");
}

#[test]
fn meta_verification_handshake() {
    let (_config, engine) = shipped();
    let spec = std::fs::read_to_string(corpus("whatsapp/verify_get_requests.txt")).expect("cases");
    let mut cases = 0;
    for line in spec.lines().filter(|l| l.starts_with("GET ")) {
        let (request, expected) = line.split_once("->").expect("case");
        let path = request.trim().trim_start_matches("GET ").trim();
        let response = engine.request("GET", path).send();
        let expected = expected.trim();
        if let Some(body) = expected.strip_prefix("200 ") {
            assert_eq!(response.status, 200, "{path}");
            assert_eq!(
                response.text(),
                body.trim_matches('"'),
                "{path}: the challenge, verbatim"
            );
            assert!(response
                .header("content-type")
                .unwrap_or_default()
                .starts_with("text/plain"));
        } else {
            assert_eq!(response.status, 403, "{path}: {}", response.text());
        }
        cases += 1;
    }
    assert_eq!(cases, 5);
}

#[test]
fn bad_input_gets_exact_json_errors() {
    let config =
        ConfigDir::shipped(|t| t.replace("max_body_bytes: 3145728", "max_body_bytes: 4096"));
    let engine = Engine::start(&config, "127.0.0.1:0");
    let big = vec![b' '; 5000];
    let sig = format!("sha256={}", sign_hex(CORPUS_APP_SECRET.as_bytes(), &big));
    let too_big = post_signed(&engine, &big, &sig);
    assert_eq!(
        (too_big.status, too_big.json()["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let chunked = engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", &sig)
        .body(&big)
        .send_chunked();
    assert_eq!(
        chunked.status, 413,
        "a chunked body without Content-Length is limited too"
    );

    let not_json = b"{\"object\": \"whatsapp_business_account\",";
    let sig = format!(
        "sha256={}",
        sign_hex(CORPUS_APP_SECRET.as_bytes(), not_json)
    );
    let malformed = post_signed(&engine, not_json, &sig);
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "malformed_json");
    assert!(
        malformed.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("line 1"),
        "{}",
        malformed.text()
    );

    let body = wire("01_text.json");
    let form = engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-hub-signature-256", &corpus_signature("01_text.json"))
        .body(&body)
        .send();
    assert_eq!(form.status, 400);
    assert_eq!(form.json()["error"], "unsupported_content_type");

    let unknown = engine.request("POST", "/webhooks/nope").body(b"{}").send();
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json(),
        serde_json::json!({"error": "not_found", "message": "no endpoint at /webhooks/nope"})
    );

    let wrong_method = engine.request("DELETE", "/webhooks/whatsapp").send();
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, POST"));
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");
    let health_post = engine.request("POST", "/healthz").send();
    assert_eq!(health_post.status, 405);
    assert_eq!(health_post.json()["error"], "method_not_allowed");

    let gone = engine
        .request("POST", "/webhooks/wa-webhook")
        .header("content-type", "application/json")
        .body(b"{}")
        .send();
    assert_eq!(gone.status, 410);
    let json = gone.json();
    assert_eq!(json["error"], "service_deprecated");
    assert!(json["migration"]
        .as_str()
        .unwrap_or_default()
        .contains("/webhooks/whatsapp"));
    assert!(engine.wait_for_log(
        "\"deprecated_service.access_attempt\"",
        std::time::Duration::from_secs(2)
    ));
}

#[test]
fn health_readiness_admin_and_request_ids() {
    let (_config, engine) = shipped();
    let health = engine
        .request("GET", "/healthz")
        .header("x-request-id", "trace-123")
        .send();
    assert_eq!(health.status, 200);
    assert_eq!(health.header("x-request-id"), Some("trace-123"));
    let ready = engine.request("GET", "/readyz").send();
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(
        ready.header("x-request-id").map(str::len),
        Some(36),
        "generated when absent"
    );

    assert_eq!(engine.request("GET", "/admin/config").send().status, 401);
    assert_eq!(
        engine
            .request("GET", "/admin/config")
            .header("authorization", "Bearer nope")
            .send()
            .status,
        401
    );
    let admin = engine
        .request("GET", "/admin/config")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send();
    assert_eq!(admin.status, 200);
    let json = admin.json();
    assert_eq!(json["version"].as_str().map(str::len), Some(64));
    assert_eq!(json["reloads"]["rejected"], 0);
    assert_eq!(json["endpoints"].as_array().map(Vec::len), Some(4));
}

#[test]
fn logs_are_json_lines_with_one_schema_and_masked_numbers() {
    let (_config, engine) = shipped();
    let body = crate::support::text_delivery("250788123456", "wamid.LOG", "shop");
    assert_eq!(engine.whatsapp(&body).status, 200);
    // The message id is logged as a reference: the id itself is base64 of the sender's number.
    let reference = easymo_engine::logging::message_ref("wamid.LOG");
    assert!(engine.wait_for_log(&reference, std::time::Duration::from_secs(2)));
    let logs = engine.logs();
    let mut saw_user = false;
    for line in logs.iter().filter(|l| !l.starts_with("stderr: ")) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in [
            "timestamp",
            "level",
            "service",
            "event",
            "request_id",
            "correlation_id",
            "user_id",
            "duration_ms",
            "message",
            "metadata",
        ] {
            assert!(event.get(key).is_some(), "{key} missing in {line}");
        }
        saw_user |= event["user_id"] == "2507****456";
    }
    assert!(saw_user, "the sender appears masked");
    assert!(
        !logs.iter().any(|l| l.contains("250788123456")),
        "a full phone number reached the logs"
    );
}

#[test]
fn graceful_shutdown_finishes_requests_in_flight() {
    let (_config, engine) = shipped();
    let body = wire("01_text.json");
    let signature = corpus_signature("01_text.json");
    let pid_engine = &engine;
    let response = engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", &signature)
        .body(&body)
        .send_slowly(10, || {
            pid_engine.signal("TERM");
            assert!(pid_engine.wait_for_log(
                "\"server.shutting_down\"",
                std::time::Duration::from_secs(5)
            ));
        });
    assert_eq!(
        response.status,
        200,
        "the in-flight request completes: {}",
        response.text()
    );
    assert_eq!(engine.wait(), Some(0));
}

#[test]
fn a_rotated_secret_and_its_successor_are_both_accepted() {
    let config = ConfigDir::shipped(|t| {
        t.replace(
            "          - ${WHATSAPP_APP_SECRET}\n",
            "          - ${WHATSAPP_APP_SECRET}\n          - ${WHATSAPP_APP_SECRET_NEXT}\n",
        )
    });
    let mut env = crate::support::engine_env();
    env.push(("WHATSAPP_APP_SECRET_NEXT", "the-next-app-secret"));
    let engine = Engine::start_with(&config, "127.0.0.1:0", &env);
    let body = wire("01_text.json");
    assert_eq!(
        post_signed(&engine, &body, &corpus_signature("01_text.json")).status,
        200,
        "current secret"
    );
    let next = format!("sha256={}", sign_hex(b"the-next-app-secret", &body));
    assert_eq!(
        post_signed(&engine, &body, &next).status,
        200,
        "next secret"
    );
    let neither = format!("sha256={}", sign_hex(b"an-old-leaked-secret", &body));
    assert_eq!(post_signed(&engine, &body, &neither).status, 403);
}

#[test]
fn standard_webhooks_signatures_and_replay_window() {
    let config = ConfigDir::shipped(|t| {
        t.replace(
            "    auth:\n      ip_allowlist:\n        cidrs: [\"${MOMO_CALLBACK_CIDRS}\"]\n",
            "    auth:\n      standard_webhooks:\n        secrets:\n          - ${MOMO_WEBHOOK_SECRET}\n        tolerance: 5m\n",
        )
    });
    let secret = "whsec_c3RhbmRhcmQtd2ViaG9va3Mta2V5";
    let mut env = crate::support::engine_env();
    env.retain(|(k, _)| *k != "MOMO_WEBHOOK_SECRET");
    env.push(("MOMO_WEBHOOK_SECRET", secret));
    let engine = Engine::start_with(&config, "127.0.0.1:0", &env);
    let body =
        std::fs::read(corpus("momo/collection_requesttopay_SUCCESSFUL.json")).expect("corpus");
    let send = |timestamp: i64, signature: &str| {
        engine
            .request("POST", "/webhooks/momo")
            .header("content-type", "application/json")
            .header("webhook-id", "msg_2a7bX")
            .header("webhook-timestamp", &timestamp.to_string())
            .header("webhook-signature", signature)
            .body(&body)
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let fresh = easymo_engine::auth::signature::sign_standard(secret, "msg_2a7bX", now, &body)
        .expect("sign");
    assert_eq!(send(now, &fresh).status, 200);
    let old = now - 600;
    let replayed = easymo_engine::auth::signature::sign_standard(secret, "msg_2a7bX", old, &body)
        .expect("sign");
    let refused = send(old, &replayed);
    assert_eq!(refused.status, 403, "a ten-minute-old delivery is a replay");
    assert_eq!(refused.json()["error"], "invalid_signature");
    assert_eq!(send(now, "v1,AAAA").status, 403);
}

#[test]
fn deliveries_are_kept_byte_for_byte_with_their_signature() {
    let (_config, engine) = shipped();
    let wait = std::time::Duration::from_secs(10);

    // One message: kept on the message's row.
    let single = wire("wire/21_text_unicode_emoji.json");
    let signature = corpus_signature("wire/21_text_unicode_emoji.json");
    assert_eq!(post_signed(&engine, &single, &signature).status, 200);
    let kept = engine.rows_when(
        "select encode(body, 'hex') as body, headers ->> 'x-hub-signature-256' as signature,
                endpoint, delivery_id, payload from inbound_messages",
        wait,
        "the message recorded",
        |rows| rows.as_array().is_some_and(|r| r.len() == 1),
    );
    assert_eq!(kept[0]["body"], hex::encode(&single));
    assert_eq!(kept[0]["signature"], signature.as_str());
    assert_eq!(kept[0]["endpoint"], "wa-webhook-core");
    assert_eq!(kept[0]["delivery_id"], serde_json::Value::Null);
    assert_eq!(
        kept[0]["payload"],
        serde_json::Value::Null,
        "not stored twice"
    );

    // Meta's retry of it: on record as a delivery, with no second message.
    assert_eq!(post_signed(&engine, &single, &signature).status, 200);
    let repeats = engine.rows_when(
        "select encode(body, 'hex') as body, processed_at is not null as processed from deliveries",
        wait,
        "the repeat recorded",
        |rows| rows.as_array().is_some_and(|r| r.len() == 1),
    );
    assert_eq!(repeats[0]["body"], hex::encode(&single));
    assert_eq!(repeats[0]["processed"], true);

    // Two messages: one deliveries row, which both messages name.
    let double = wire("wire/18_two_messages_one_change.json");
    let response = post_signed(
        &engine,
        &double,
        &corpus_signature("wire/18_two_messages_one_change.json"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let messages = engine.rows_when(
        "select m.body is null as only_on_delivery, m.payload, encode(d.body, 'hex') as delivery_body
         from inbound_messages m join deliveries d on d.id = m.delivery_id
         order by m.provider_message_id",
        wait,
        "both messages recorded",
        |rows| rows.as_array().is_some_and(|r| r.len() == 2),
    );
    // Each message's JSON is kept whole, with the fields the engine does not read.
    let sent: serde_json::Value = serde_json::from_slice(&double).expect("json");
    let mut sent = sent["entry"][0]["changes"][0]["value"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    sent.sort_by_key(|m| m["id"].as_str().map(str::to_owned));
    assert_eq!(sent.len(), 2);
    for (message, sent) in messages.as_array().into_iter().flatten().zip(&sent) {
        assert_eq!(message["only_on_delivery"], true);
        assert_eq!(&message["payload"], sent);
        assert_eq!(message["delivery_body"], hex::encode(&double));
    }
}
