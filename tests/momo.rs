//! MoMo callbacks through the real server, confirmed against a real HTTP fake of the MoMo API:
//! a callback's own `status` is never believed, nothing settles twice, and the payer is told
//! once.

use std::time::Duration;

use crate::support::{corpus, ConfigDir, Engine, FakeMomo, HttpResponse};

/// The shipped config pointed at the fake, with a short timeout (the callback endpoint's
/// allowlist comes from `MOMO_CALLBACK_CIDRS`, loopback in the tests).
fn config(momo: &FakeMomo) -> ConfigDir {
    let url = momo.url();
    ConfigDir::shipped(move |text| {
        text.replace(
            "  base_url: https://proxy.momoapi.mtn.co.rw\n  target_environment: mtnrwanda\n",
            &format!("  base_url: {url}\n  target_environment: sandbox\n"),
        )
        .replace("  timeout: 5s\n", "  timeout: 1s\n")
    })
}

fn callback(engine: &Engine, method: &str, body: &[u8]) -> HttpResponse {
    engine
        .request(method, "/webhooks/momo")
        .header("content-type", "application/json")
        .body(body)
        .send()
}

/// A payment the engine requested: reference id, product, external id, amount, currency, party.
fn seed_payment(
    engine: &Engine,
    reference: &str,
    product: &str,
    external: &str,
    amount: i64,
    currency: &str,
    party: &str,
) {
    crate::support::exec(
        &engine.database_url,
        &format!(
            "insert into contacts (wa_id, name, language) values ('{party}', 'Payer', 'rw') on conflict (wa_id) do nothing;
             insert into momo_payments (reference_id, product, external_id, amount, currency, party, contact_id, phone_number_id, requested_at)
             select '{reference}', '{product}', '{external}', {amount}, '{currency}', '{party}', id, '106540352242922', now()
             from contacts where wa_id = '{party}';"
        ),
    );
}

#[test]
fn every_corpus_callback_is_recorded_and_settled_only_as_momo_confirms() {
    let momo = FakeMomo::start();
    let config = config(&momo);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let mut files: Vec<_> = std::fs::read_dir(corpus("momo"))
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    // Each documented payment is one we requested; MoMo's status endpoint answers with the
    // same body (its GET and its callbacks share one format). The spoofed one is unknown.
    for (n, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("read");
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("edge_") {
            continue;
        }
        let reference = format!("00000000-0000-4000-8000-{n:012}");
        let product = if name.starts_with("disbursement") {
            "disbursement"
        } else {
            "collection"
        };
        let party = body["payer"]["partyId"]
            .as_str()
            .or(body["payee"]["partyId"].as_str())
            .unwrap_or_default();
        let amount: i64 = body["amount"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_default();
        seed_payment(
            &engine,
            &reference,
            product,
            body["externalId"].as_str().unwrap_or_default(),
            amount,
            body["currency"].as_str().unwrap_or_default(),
            party,
        );
        momo.answer(&reference, 200, &text, Duration::ZERO);
    }
    let mut report = String::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        let response = callback(&engine, "POST", &bytes);
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        report.push_str(&format!(
            "{name}: {} {}\n",
            response.status,
            response.json()
        ));
    }
    insta::assert_snapshot!(report);
    let payments = engine.rows(
        "select external_id, product, status, financial_transaction_id, reason from momo_payments order by external_id",
    );
    insta::assert_snapshot!(
        "payments",
        serde_json::to_string_pretty(&payments).unwrap_or_default()
    );
    let sent =
        engine.rows("select template, body -> 'text' ->> 'body' as text from outbox order by id");
    insta::assert_snapshot!(
        "notifications",
        serde_json::to_string_pretty(&sent).unwrap_or_default()
    );
    let recorded =
        engine.rows("select count(*) as n from momo_callbacks where outcome <> 'received'");
    assert_eq!(
        recorded[0]["n"].as_i64(),
        Some(files.len() as i64),
        "every callback on record"
    );
    assert!(
        momo.requests()
            .iter()
            .any(|r| r.starts_with("GET /disbursement/v1_0/transfer/")
                && r.ends_with("Bearer fake-token sandbox")),
        "transfers are confirmed with the disbursement product: {:?}",
        momo.requests()
    );
    let tokens = momo
        .requests()
        .iter()
        .filter(|r| r.contains("/token/"))
        .count();
    assert_eq!(
        tokens,
        2,
        "one token per product, cached: {:?}",
        momo.requests()
    );
}

#[test]
fn a_callback_is_believed_only_when_momo_agrees_and_only_once() {
    let momo = FakeMomo::start();
    let config = config(&momo);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let reference = "11111111-1111-4111-8111-111111111111";
    seed_payment(
        &engine,
        reference,
        "collection",
        "EMO-ORD-000123",
        1500,
        "RWF",
        "250788000101",
    );
    let success =
        std::fs::read(corpus("momo/collection_requesttopay_SUCCESSFUL.json")).expect("read");
    let pending = std::fs::read_to_string(corpus(
        "momo/collection_requesttopay_PENDING_status_get.json",
    ))
    .expect("read")
    .replace("EMO-ORD-000126", "EMO-ORD-000123");

    // A forged "SUCCESSFUL" while MoMo still says PENDING: nothing moves.
    momo.answer(reference, 200, &pending, Duration::ZERO);
    let forged = callback(&engine, "POST", &success);
    assert_eq!(forged.json()["status"], "pending", "{}", forged.text());

    // MoMo's answer is slower than the timeout: unconfirmed, still pending.
    let confirmed = String::from_utf8(success.clone()).expect("utf8");
    momo.answer(reference, 200, &confirmed, Duration::from_millis(1500));
    let slow = callback(&engine, "POST", &success);
    assert_eq!(slow.json()["status"], "unconfirmed", "{}", slow.text());

    // MoMo's record differs from ours (amount): not credited.
    momo.answer(
        reference,
        200,
        &confirmed.replace("\"1500\"", "\"15\""),
        Duration::ZERO,
    );
    assert_eq!(
        callback(&engine, "POST", &success).json()["status"],
        "contradicted"
    );

    // Then MoMo confirms: settled once; a PUT repeat and a late FAILED change nothing.
    momo.answer(reference, 200, &confirmed, Duration::ZERO);
    assert_eq!(
        callback(&engine, "POST", &success).json()["status"],
        "settled"
    );
    assert_eq!(
        callback(&engine, "PUT", &success).json()["status"],
        "already_settled"
    );
    let late = std::fs::read(corpus(
        "momo/collection_requesttopay_FAILED_reason_string.json",
    ))
    .expect("read");
    let late = String::from_utf8(late)
        .expect("utf8")
        .replace("04822b2a-0896-4612-9e9e-15ce749b7883", "EMO-ORD-000123");
    assert_eq!(
        callback(&engine, "POST", late.as_bytes()).json()["status"],
        "already_settled"
    );

    let state = engine.rows(
        "select p.status, p.financial_transaction_id,
                (select count(*) from outbox) as notifications,
                (select string_agg(outcome || '/' || method, ',' order by id) from momo_callbacks) as callbacks
         from momo_payments p",
    );
    assert_eq!(
        state,
        serde_json::json!([{"status": "SUCCESSFUL", "financial_transaction_id": "1530828708", "notifications": 1,
            "callbacks": "pending/POST,unconfirmed/POST,contradicted/POST,settled/POST,already_settled/PUT,already_settled/POST"}])
    );

    // A body without `externalId` is refused with the field named, and kept.
    let missing = callback(&engine, "POST", br#"{"status":"SUCCESSFUL"}"#);
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("externalId"),
        "{}",
        missing.text()
    );
}

#[test]
fn payments_without_a_callback_are_polled() {
    let momo = FakeMomo::start();
    let url = momo.url();
    let config = ConfigDir::shipped(move |text| {
        text.replace(
            "  base_url: https://proxy.momoapi.mtn.co.rw\n",
            &format!("  base_url: {url}\n"),
        )
        .replace("  timeout: 5s\n", "  timeout: 1s\n  poll_after: 1s\n")
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let (decided, undecided) = (
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    );
    seed_payment(
        &engine,
        decided,
        "collection",
        "EMO-ORD-000123",
        1500,
        "RWF",
        "250788000101",
    );
    seed_payment(
        &engine,
        undecided,
        "collection",
        "EMO-ORD-000126",
        1500,
        "RWF",
        "250788000101",
    );
    let success = std::fs::read_to_string(corpus("momo/collection_requesttopay_SUCCESSFUL.json"))
        .expect("read");
    let pending = std::fs::read_to_string(corpus(
        "momo/collection_requesttopay_PENDING_status_get.json",
    ))
    .expect("read");
    momo.answer(decided, 200, &success, Duration::ZERO);
    momo.answer(undecided, 200, &pending, Duration::ZERO);
    let rows = engine.rows_when(
        "select reference_id::text as id, status, polled_at is not null as polled,
                (select count(*) from outbox) as notifications
         from momo_payments order by reference_id",
        Duration::from_secs(10),
        "not polled",
        |rows| rows[0]["status"] == "SUCCESSFUL" && rows[1]["polled"] == true,
    );
    assert_eq!(rows[0]["notifications"], 1);
    assert_eq!(
        rows[1]["status"], "PENDING",
        "MoMo has not decided this one"
    );
    assert!(
        engine.rows("select count(*) as n from momo_callbacks")[0]["n"] == 0,
        "settled without any callback"
    );
}

/// A WhatsApp message from the buyer: text, or a tap on a list row or reply button.
fn from_buyer(n: usize, message: serde_json::Value) -> Vec<u8> {
    let mut message = message;
    message["from"] = "250788000101".into();
    message["id"] = format!("wamid.BUY{n}").into();
    message["timestamp"] = crate::support::now_unix().to_string().into();
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Aline"}, "wa_id": "250788000101"}],
        "messages": [message]}}]}]})
    .to_string()
    .into_bytes()
}

/// What the buyer sees of a reply: its text and the ids they can tap.
fn seen(body: &serde_json::Value) -> String {
    let text = body["text"]["body"]
        .as_str()
        .or(body["interactive"]["body"]["text"].as_str())
        .unwrap_or_default();
    let action = &body["interactive"]["action"];
    let mut choices: Vec<String> = action["sections"][0]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}={}",
                r["id"].as_str().unwrap_or_default(),
                r["title"].as_str().unwrap_or_default()
            )
        })
        .collect();
    choices.extend(action["buttons"].as_array().into_iter().flatten().map(|b| {
        format!(
            "{}={}",
            b["reply"]["id"].as_str().unwrap_or_default(),
            b["reply"]["title"].as_str().unwrap_or_default()
        )
    }));
    if choices.is_empty() {
        text.to_owned()
    } else {
        format!("{text} [{}]", choices.join(", "))
    }
}

#[test]
fn a_purchase_in_the_marketplace_end_to_end() {
    let momo = FakeMomo::start();
    let config = config(&momo);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // The first request to pay is answered after the engine stopped waiting (1 s); the retry,
    // with the same reference id, hears 409: the first got through.
    momo.answer_requests(&[(202, Duration::from_millis(1500)), (409, Duration::ZERO)]);

    let mut transcript = String::new();
    let mut last_reply = 0_i64;
    let mut say = |n: usize, label: &str, message: serde_json::Value| {
        let response = engine.whatsapp(&from_buyer(n, message));
        assert_eq!(response.status, 200, "{}", response.text());
        transcript.push_str(&format!("buyer › {label}\n"));
        let replies = engine.rows(&format!(
            "select id, template, body from outbox where id > {last_reply} order by id"
        ));
        for reply in replies.as_array().into_iter().flatten() {
            last_reply = reply["id"].as_i64().unwrap_or(last_reply);
            transcript.push_str(&format!(
                "easyMO › ({}) {}\n",
                reply["template"].as_str().unwrap_or_default(),
                seen(&reply["body"])
            ));
        }
    };
    let tap = |kind: &str, id: &str, title: &str| serde_json::json!({"type": "interactive", "interactive": {"type": kind, kind: {"id": id, "title": title}}});
    say(
        1,
        "shop",
        serde_json::json!({"type": "text", "text": {"body": "shop"}}),
    );
    let category =
        engine.rows("select id::text as id, name from product_categories order by name limit 1");
    let category_id = category[0]["id"].as_str().unwrap_or_default().to_owned();
    say(
        2,
        "a category",
        tap(
            "list_reply",
            &category_id,
            category[0]["name"].as_str().unwrap_or_default(),
        ),
    );
    let product = engine.rows(&format!(
        "select id::text as id, name, price from products where category_id = {category_id} and in_stock order by name limit 1"
    ));
    let product_id = product[0]["id"].as_str().unwrap_or_default().to_owned();
    say(
        3,
        "a product",
        tap(
            "list_reply",
            &product_id,
            product[0]["name"].as_str().unwrap_or_default(),
        ),
    );
    say(
        4,
        "Pay with MoMo",
        tap("button_reply", "pay", "Pay with MoMo"),
    );

    // The request to pay goes out after the commit; its first answer is lost, its retry hears 409.
    let payment = engine.rows_when(
        "select reference_id::text as reference_id, external_id, amount, currency, party, status,
                requested_at is not null as accepted, request_attempts
         from momo_payments",
        Duration::from_secs(15),
        "the request to pay was not accepted",
        |rows| rows[0]["accepted"] == true,
    )[0]
    .clone();
    let price = product[0]["price"].as_i64().unwrap_or_default();
    assert_eq!(payment["amount"].as_i64(), Some(price));
    assert_eq!(payment["party"], "250788000101");
    assert_eq!(payment["request_attempts"], 2);
    let reference = payment["reference_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sent = momo.requests_to_pay();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter().all(|(id, _)| *id == reference),
        "one reference id for both attempts: {sent:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&sent[0].1).expect("json");
    assert_eq!(
        body["amount"],
        price.to_string(),
        "MoMo takes amounts as strings"
    );
    assert_eq!(body["payer"]["partyId"], "250788000101");

    // The payer approves; MoMo calls back and its status endpoint agrees.
    let external = payment["external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let confirmed = serde_json::json!({"financialTransactionId": "1530828999", "externalId": external,
        "amount": price.to_string(), "currency": "RWF", "payer": {"partyIdType": "MSISDN", "partyId": "250788000101"},
        "payerMessage": "", "payeeNote": "", "status": "SUCCESSFUL"});
    momo.answer(&reference, 200, &confirmed.to_string(), Duration::ZERO);
    let settled = callback(&engine, "POST", confirmed.to_string().as_bytes());
    assert_eq!(settled.json()["status"], "settled", "{}", settled.text());
    for reply in engine
        .rows(&format!(
            "select template, body from outbox where id > {last_reply} order by id"
        ))
        .as_array()
        .into_iter()
        .flatten()
    {
        transcript.push_str(&format!(
            "easyMO › ({}) {}\n",
            reply["template"].as_str().unwrap_or_default(),
            seen(&reply["body"])
        ));
    }
    // Order references are generated; the snapshot shows their shape.
    let transcript = transcript.replace(&external, "EMO-XXXXXXXX");
    insta::assert_snapshot!(transcript);
}

/// A refused request to pay fails the payment only when MoMo's own status says it never got
/// it: a refusal can follow an earlier attempt that did get through.
#[test]
fn a_refused_request_to_pay_fails_only_when_momo_never_saw_it() {
    let momo = FakeMomo::start();
    let config = config(&momo);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let (unknown, known) = (
        "44444444-4444-4444-8444-444444444444",
        "55555555-5555-4555-8555-555555555555",
    );
    momo.answer_requests(&[(400, Duration::ZERO), (400, Duration::ZERO)]);
    let pending = std::fs::read_to_string(corpus(
        "momo/collection_requesttopay_PENDING_status_get.json",
    ))
    .expect("read");
    momo.answer(known, 200, &pending, Duration::ZERO);
    for (reference, external) in [(unknown, "EMO-ORD-000301"), (known, "EMO-ORD-000126")] {
        seed_payment(
            &engine,
            reference,
            "collection",
            external,
            1500,
            "RWF",
            "250788000101",
        );
    }
    // Seeded as not yet sent: the sender takes them within its two-second round.
    crate::support::exec(
        &engine.database_url,
        "update momo_payments set requested_at = null",
    );
    let rows = engine.rows_when(
        "select external_id, status, requested_at is not null as accepted,
                (select count(*) from outbox where template = 'payment_failed') as told
         from momo_payments order by external_id",
        Duration::from_secs(10),
        "not handled",
        |rows| rows[1]["status"] == "FAILED" && rows[0]["accepted"] == true,
    );
    assert_eq!(
        rows,
        serde_json::json!([
            {"external_id": "EMO-ORD-000126", "status": "PENDING", "accepted": true, "told": 1},
            {"external_id": "EMO-ORD-000301", "status": "FAILED", "accepted": false, "told": 1},
        ]),
        "MoMo knows one (it stays pending, for the callback or the poller); the other fails, and its payer is told"
    );
}

/// A request to pay MoMo never answered is not re-sent for ever: after an hour it fails (once
/// MoMo confirms it never got it), and the payer is told; no prompt arrives hours late.
#[test]
fn an_unanswered_request_to_pay_is_given_up_after_an_hour() {
    let momo = FakeMomo::start();
    let config = config(&momo);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let reference = "66666666-6666-4666-8666-666666666666";
    seed_payment(
        &engine,
        reference,
        "collection",
        "EMO-ORD-000401",
        1500,
        "RWF",
        "250788000101",
    );
    crate::support::exec(
        &engine.database_url,
        "update momo_payments set requested_at = null, created_at = now() - interval '2 hours'",
    );
    let rows = engine.rows_when(
        "select status, reason ->> 'code' as code, (select count(*) from outbox where template = 'payment_failed') as told
         from momo_payments",
        Duration::from_secs(10),
        "not given up",
        |rows| rows[0]["status"] == "FAILED",
    );
    assert_eq!(rows[0]["code"], "NOT_SENT");
    assert_eq!(rows[0]["told"], 1);
    assert!(momo.requests_to_pay().is_empty(), "nothing sent hours late");
}
