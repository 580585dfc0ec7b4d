//! Sending through the real engine to a real HTTP fake of the WhatsApp Cloud API: the exact
//! requests Meta would receive, and what each class of answer does to an outbox row.

use std::time::Duration;

use crate::support::{
    text_delivery, ConfigDir, Engine, FakeGraph, GraphAnswer, GRAPH_TOKEN, NO_GRAPH_API,
};

/// The shipped config sending to `graph`, with the shipped endpoint limit lifted and the
/// sending settings edited by `edit`.
fn config(graph: &FakeGraph, edit: impl Fn(String) -> String + 'static) -> ConfigDir {
    let url = graph.url();
    ConfigDir::shipped(move |text| {
        edit(crate::support::unlimited(text).replace(NO_GRAPH_API, &url))
    })
}

fn message(engine: &Engine, from: &str, id: &str, text: &str) {
    let response = engine.whatsapp(&text_delivery(from, id, text));
    assert_eq!(response.status, 200, "{}", response.text());
}

/// The test environment with `database` as DATABASE_URL, for engines that share it.
fn env_on(database: &str) -> Vec<(&'static str, &str)> {
    let mut env: Vec<(&str, &str)> = crate::support::engine_env()
        .into_iter()
        .filter(|(k, _)| *k != "DATABASE_URL")
        .collect();
    env.push(("DATABASE_URL", database));
    env
}

/// How many requests each recipient got.
fn per_recipient(
    requests: &[crate::support::GraphRequest],
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for request in requests {
        *counts
            .entry(request.body["to"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

fn settled(rows: &serde_json::Value) -> bool {
    rows.as_array().is_some_and(|rows| {
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| !matches!(r["status"].as_str(), Some("pending" | "sending")))
    })
}

#[test]
fn replies_reach_the_graph_api_exactly_as_stored() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // A list, texts and a location request, one person each; then a job's reply buttons.
    for (n, text) in ["menu", "help", "book ride", "cancel"].iter().enumerate() {
        message(
            &engine,
            &format!("25078800010{n}"),
            &format!("wamid.in.exact.{n}"),
            text,
        );
    }
    message(&engine, "250788000104", "wamid.in.exact.4", "find jobs");
    for (n, id) in ["1", "1"].iter().enumerate() {
        let tap =
            crate::support::choice_delivery("250788000104", &format!("wamid.in.exact.tap.{n}"), id);
        assert_eq!(engine.whatsapp(&tap).status, 200);
    }
    let rows = engine.rows_when(
        "select id, recipient, status, provider_message_id, body from outbox order by id",
        Duration::from_secs(20),
        "every reply sent",
        settled,
    );
    let requests = graph.requests();
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(requests.len(), rows.len(), "one request per reply");
    let mut report = String::new();
    for row in &rows {
        let request = requests
            .iter()
            .find(|r| r.wamid.as_deref() == row["provider_message_id"].as_str())
            .unwrap_or_else(|| panic!("no request was answered with the wamid of {row}"));
        assert_eq!(row["status"], "sent", "{row}");
        assert_eq!(request.body, row["body"], "the body exactly as stored");
        assert_eq!(request.authorization, format!("Bearer {GRAPH_TOKEN}"));
        report.push_str(&format!(
            "{}\n{}\n\n",
            request.line,
            serde_json::to_string_pretty(&request.body).unwrap_or_default()
        ));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn each_class_of_graph_error_does_what_it_says() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace(
            "        attempts: 8\n        backoff: 1s\n",
            "        attempts: 3\n        backoff: 100ms\n",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let cases: &[(&str, &[GraphAnswer])] = &[
        // Passing failures, then accepted.
        (
            "250788000201",
            &[GraphAnswer::Error(400, 130429), GraphAnswer::Bare(503)],
        ),
        (
            "250788000202",
            &[GraphAnswer::Error(500, 131000), GraphAnswer::Drop],
        ),
        // Passing failures beyond the policy's three attempts.
        (
            "250788000203",
            &[
                GraphAnswer::Bare(500),
                GraphAnswer::Bare(502),
                GraphAnswer::Error(400, 2),
            ],
        ),
        // Refused for good, at the first answer.
        ("250788000204", &[GraphAnswer::Error(400, 131026)]),
        ("250788000205", &[GraphAnswer::Error(400, 100)]),
        ("250788000206", &[GraphAnswer::Error(400, 132001)]),
        // The customer-service window closed.
        ("250788000207", &[GraphAnswer::Error(400, 131047)]),
    ];
    for (n, (to, answers)) in cases.iter().enumerate() {
        graph.script(to, answers);
        message(&engine, to, &format!("wamid.in.class.{n}"), "cancel");
    }
    let rows = engine.rows_when(
        "select recipient, status, dead_reason, error_code, attempts from outbox order by recipient",
        Duration::from_secs(30),
        "every reply sent or dead",
        settled,
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(&rows).unwrap_or_default());
    let attempts = engine.rows(
        "select o.recipient, a.attempt, a.http_status, a.error_code, a.finished_at is not null as finished
         from outbox_attempts a join outbox o on o.id = a.outbox_id order by o.recipient, a.attempt",
    );
    insta::assert_snapshot!(
        "attempts",
        serde_json::to_string_pretty(&attempts).unwrap_or_default()
    );
}

#[test]
fn a_pair_rate_limit_delays_only_its_recipient() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let engine = Engine::start(&config, "127.0.0.1:0");
    graph.script("250788000301", &[GraphAnswer::Error(400, 131056)]);
    message(&engine, "250788000301", "wamid.in.pair.1", "cancel");
    message(&engine, "250788000302", "wamid.in.pair.2", "cancel");
    let requests = graph.wait_for(3, Duration::from_secs(20));
    let to =
        |r: &crate::support::GraphRequest| r.body["to"].as_str().unwrap_or_default().to_owned();
    let limited: Vec<_> = requests
        .iter()
        .filter(|r| to(r) == "250788000301")
        .collect();
    let other: Vec<_> = requests
        .iter()
        .filter(|r| to(r) == "250788000302")
        .collect();
    assert_eq!(limited.len(), 2, "{requests:?}");
    assert_eq!(other.len(), 1, "{requests:?}");
    let waited = limited[1].at.duration_since(limited[0].at);
    assert!(
        waited >= Duration::from_secs(5),
        "the limited recipient waits about six seconds, waited {waited:?}"
    );
    assert!(
        other[0].at < limited[1].at,
        "the other recipient is not held back"
    );
    engine.rows_when(
        "select status from outbox order by id",
        Duration::from_secs(10),
        "both sent",
        |rows| {
            rows.as_array()
                .is_some_and(|r| r.iter().all(|r| r["status"] == "sent"))
        },
    );
}

#[test]
fn a_reply_that_cannot_go_out_in_time_expires_unsent() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace("      deliver_within: 15m\n", "      deliver_within: 2s\n")
            .replace("      timeout: 10s\n", "      timeout: 1s\n")
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    graph.otherwise(GraphAnswer::Hang(Duration::from_secs(3)));
    message(&engine, "250788000401", "wamid.in.expire.1", "cancel");
    let rows = engine.rows_when(
        "select status, dead_reason from outbox",
        Duration::from_secs(15),
        "the reply dead as expired",
        settled,
    );
    assert_eq!(rows[0]["status"], "dead", "{rows}");
    assert_eq!(rows[0]["dead_reason"], "expired", "{rows}");
    let requests = graph.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| matches!(r.answer, GraphAnswer::Hang(_))),
        "{requests:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        graph.requests().len(),
        requests.len(),
        "nothing is sent after it expired"
    );
}

#[test]
fn replies_to_one_recipient_keep_their_order_under_fifty_conversations() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace("        backoff: 1s\n", "        backoff: 50ms\n")
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    // Every recipient's first send fails once: a retry must not let a later reply overtake.
    for n in 0..50 {
        graph.script(&format!("2507881{n:05}"), &[GraphAnswer::Bare(500)]);
    }
    let senders: Vec<_> = (0..50)
        .map(|n| {
            let url = engine.addr;
            std::thread::spawn(move || {
                let from = format!("2507881{n:05}");
                for (k, text) in ["menu", "help", "cancel"].iter().enumerate() {
                    let body = text_delivery(&from, &format!("wamid.in.order.{n}.{k}"), text);
                    let response = crate::support::signed_whatsapp(url, &body);
                    assert_eq!(response.status, 200);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender thread");
    }
    engine.rows_when(
        "select status from outbox",
        Duration::from_secs(60),
        "every reply sent",
        |rows| {
            settled(rows)
                && rows
                    .as_array()
                    .is_some_and(|r| r.iter().all(|r| r["status"] == "sent"))
        },
    );
    let sent =
        engine.rows("select recipient, provider_message_id from outbox order by recipient, id");
    let requests = graph.requests();
    let mut checked = 0;
    for pair in sent.as_array().cloned().unwrap_or_default().windows(2) {
        if pair[0]["recipient"] != pair[1]["recipient"] {
            continue;
        }
        let at = |row: &serde_json::Value| {
            requests
                .iter()
                .find(|r| r.wamid.as_deref() == row["provider_message_id"].as_str())
                .map(|r| r.at)
                .unwrap_or_else(|| panic!("no accepted request for {row}"))
        };
        assert!(
            at(&pair[0]) < at(&pair[1]),
            "{} got a later reply first",
            pair[0]["recipient"]
        );
        checked += 1;
    }
    assert!(checked >= 100, "pairs checked: {checked}");
}

#[test]
fn status_webhooks_move_sent_rows_and_a_failed_one_makes_it_dead() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let engine = Engine::start(&config, "127.0.0.1:0");
    message(&engine, "250788000501", "wamid.in.status.1", "cancel");
    message(&engine, "250788000502", "wamid.in.status.2", "cancel");
    message(&engine, "250788000503", "wamid.in.status.3", "cancel");
    let rows = engine.rows_when(
        "select recipient, provider_message_id from outbox order by recipient",
        Duration::from_secs(20),
        "all three sent",
        |rows| {
            rows.as_array().is_some_and(|r| {
                r.len() == 3 && r.iter().all(|r| r["provider_message_id"].is_string())
            })
        },
    );
    let status = |wamid: &serde_json::Value, to: &str, state: &str, errors: serde_json::Value| {
        let mut status = serde_json::json!({
            "id": wamid, "status": state, "timestamp": crate::support::now_unix().to_string(),
            "recipient_id": to,
        });
        if !errors.is_null() {
            status["errors"] = errors;
        }
        serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
            "statuses": [status]}}]}]})
        .to_string()
        .into_bytes()
    };
    let delivered = status(
        &rows[0]["provider_message_id"],
        "250788000501",
        "delivered",
        serde_json::Value::Null,
    );
    assert_eq!(engine.whatsapp(&delivered).status, 200);
    let failed = status(
        &rows[1]["provider_message_id"],
        "250788000502",
        "failed",
        serde_json::json!([{"code": 131047, "title": "Re-engagement message"}]),
    );
    assert_eq!(engine.whatsapp(&failed).status, 200);
    // A failed status whose code is not a number still makes the row dead, without a code.
    let odd = status(
        &rows[2]["provider_message_id"],
        "250788000503",
        "failed",
        serde_json::json!([{"code": "x-not-a-number", "title": "?"}]),
    );
    assert_eq!(engine.whatsapp(&odd).status, 200);
    let rows = engine.rows_when(
        "select recipient, status, dead_reason, error_code from outbox order by recipient",
        Duration::from_secs(10),
        "the statuses applied",
        |rows| {
            rows[0]["status"] == "delivered"
                && rows[1]["status"] == "dead"
                && rows[2]["status"] == "dead"
        },
    );
    assert_eq!(rows[1]["dead_reason"], "failed", "{rows}");
    assert_eq!(rows[1]["error_code"], 131047, "{rows}");
    assert_eq!(rows[2]["dead_reason"], "failed", "{rows}");
    assert!(rows[2]["error_code"].is_null(), "{rows}");
}

/// `easymo dlq …` against the engine's database, with times, processes and latencies masked
/// so the output can be pinned.
fn dlq(engine: &Engine, args: &[&str]) -> String {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    let output = crate::support::easymo(&all, &[("DATABASE_URL", &engine.database_url)]);
    let text = format!(
        "$ easymo dlq {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let times = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex");
    let processes = regex::Regex::new(r"\b(pid\d+|[\w.-]+-\d+)-[0-9a-f]{8}\b").expect("regex");
    let text = times.replace_all(&text, "[time]");
    let text = processes.replace_all(&text, "[process]");
    // The latency column of `show`, and `latency_ms` in JSON.
    let latency = regex::Regex::new(r"(?m)^(  \d+ +\[time\] +\S+ +\S+ +)\d+ ").expect("regex");
    let text = latency.replace_all(&text, "${1}[ms] ");
    let latency_json = regex::Regex::new(r#""latency_ms": \d+"#).expect("regex");
    let text = latency_json.replace_all(&text, r#""latency_ms": "[ms]""#);
    // Masked cells change column widths: pin the cells, not the padding (the alignment has
    // its own unit test).
    let padding = regex::Regex::new(r"(\S)   +").expect("regex");
    padding.replace_all(&text, "$1  ").into_owned()
}

#[test]
fn the_dead_letter_queue_lists_shows_retries_and_discards() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let people: &[(&str, &[GraphAnswer])] = &[
        ("250788000601", &[GraphAnswer::Error(400, 131047)]),
        ("250788000602", &[GraphAnswer::Error(400, 131026)]),
        ("250788000603", &[]),
        ("250788000604", &[GraphAnswer::Error(400, 131047)]),
    ];
    // One at a time, so that row ids follow this order.
    for (n, (to, answers)) in people.iter().enumerate() {
        graph.script(to, answers);
        message(&engine, to, &format!("wamid.in.dlq.{n}"), "cancel");
        engine.rows_when(
            "select status from outbox order by id",
            Duration::from_secs(15),
            "the reply settled",
            |rows| settled(rows) && rows.as_array().is_some_and(|r| r.len() == n + 1),
        );
    }
    let mut transcript = String::new();
    for args in [
        &["list"][..],
        &["list", "--reason", "window_closed", "--since", "1h"],
        &["list", "--code", "131026", "--format", "json"],
        &["show", "2"],
        &["stats"],
        &["retry"],
        &["retry", "--reason", "nonsense"],
        &["retry", "--reason", "window_closed", "--dry-run"],
    ] {
        transcript.push_str(&dlq(&engine, args));
        transcript.push('\n');
    }
    // The number's owner fixed the recipient: a retry sends it, once.
    transcript.push_str(&dlq(&engine, &["retry", "2"]));
    let rows = engine.rows_when(
        "select id, status from outbox where id = 2",
        Duration::from_secs(15),
        "the re-queued row sent",
        |rows| rows[0]["status"] == "sent",
    );
    assert_eq!(rows[0]["status"], "sent");
    let to_602 = graph
        .requests()
        .iter()
        .filter(|r| r.body["to"] == "250788000602")
        .count();
    assert_eq!(to_602, 2, "the first refusal, then the retry");
    transcript.push('\n');
    transcript.push_str(&dlq(&engine, &["discard", "--reason", "window_closed"]));
    transcript.push('\n');
    transcript.push_str(&dlq(&engine, &["stats", "--format", "json"]));
    insta::assert_snapshot!(transcript);
}

#[test]
fn a_restricted_number_pauses_its_sends_and_a_probe_resumes_them() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace(
            "      timeout: 10s\n",
            "      timeout: 10s\n      probe_after: 1s\n",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    // The first send finds the number blocked (368); while it is paused nothing is sent;
    // the probe after a second succeeds, the rest follow, and the dead row is re-driven.
    graph.script("250788000701", &[GraphAnswer::Error(400, 368)]);
    message(&engine, "250788000701", "wamid.in.pause.1", "cancel");
    engine.rows_when(
        "select status, dead_reason from outbox",
        Duration::from_secs(10),
        "the first reply dead as paused",
        |rows| rows[0]["dead_reason"] == "paused",
    );
    let paused_at = std::time::Instant::now();
    for n in 2..5 {
        message(
            &engine,
            &format!("25078800070{n}"),
            &format!("wamid.in.pause.{n}"),
            "cancel",
        );
    }
    let rows = engine.rows_when(
        "select recipient, status, redrives from outbox order by id",
        Duration::from_secs(40),
        "every reply sent, the paused one re-driven",
        |rows| {
            rows.as_array()
                .is_some_and(|r| r.len() == 4 && r.iter().all(|r| r["status"] == "sent"))
        },
    );
    assert_eq!(rows[0]["redrives"], 1, "{rows}");
    let requests = graph.requests();
    let after_pause: Vec<_> = requests.iter().skip(1).collect();
    assert!(
        after_pause
            .iter()
            .all(|r| r.at.duration_since(paused_at) >= Duration::from_millis(500)),
        "nothing was sent while the number was paused: {requests:?}"
    );
    assert!(
        engine.wait_for_log("sending.paused", Duration::from_secs(5)),
        "the pause is an error event the alert rules can see"
    );
    assert!(engine.wait_for_log("sending.resumed", Duration::from_secs(5)));
    assert!(engine.wait_for_log("dlq.redriven", Duration::from_secs(5)));
}

#[test]
fn the_throughput_cap_holds() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace("      throughput: 80 ", "      throughput: 20 ")
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let url = engine.addr;
            std::thread::spawn(move || {
                for n in 0..40 {
                    let from = format!("25078820{t}{n:03}");
                    let body = text_delivery(&from, &format!("wamid.in.cap.{t}.{n}"), "cancel");
                    assert_eq!(crate::support::signed_whatsapp(url, &body).status, 200);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender thread");
    }
    let requests = graph.wait_for(160, Duration::from_secs(30));
    assert_eq!(requests.len(), 160);
    // No window of five seconds holds more than the cap allows, plus 10%.
    let times: Vec<_> = requests.iter().map(|r| r.at).collect();
    let most = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(5))
                .count()
        })
        .max()
        .unwrap_or_default();
    assert!(most <= 110, "{most} sends in five seconds at a cap of 20/s");
}

#[test]
fn a_sender_over_the_limit_is_told_once_per_window_then_silence() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace(
            "      requests: 100000\n      per: 1s\n      key: endpoint\n",
            "      requests: 2\n      per: 3s\n      key: sender\n      on_limit: reply_once\n      reply_template: slow_down_named\n",
        )
        .replace(
            "templates:\n",
            "templates:\n  slow_down_named:\n    text:\n      body:\n        en: \"Slow down, {{ contact.name }}: try again in a minute.\"\n        rw: \"Buhoro, {{ contact.name }}: ongera mu munota.\"\n        fr: \"Doucement, {{ contact.name }} : réessayez dans une minute.\"\n",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    // Two messages fit; the next four are dropped, and only the first of those is answered.
    for n in 0..6 {
        message(
            &engine,
            "250788000801",
            &format!("wamid.in.limit.{n}"),
            "cancel",
        );
    }
    // Another sender has a budget of their own.
    message(&engine, "250788000802", "wamid.in.limit.other", "cancel");
    let rows = engine.rows_when(
        "select recipient, template, status, body -> 'text' ->> 'body' as text from outbox order by id",
        Duration::from_secs(15),
        "four replies sent",
        |rows| {
            rows.as_array()
                .is_some_and(|r| r.len() == 4 && r.iter().all(|r| r["status"] == "sent"))
        },
    );
    let templates: Vec<_> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}",
                r["recipient"].as_str().unwrap_or_default(),
                r["template"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        templates,
        [
            "250788000801 cancelled",
            "250788000801 cancelled",
            "250788000801 slow_down_named",
            "250788000802 cancelled"
        ]
    );
    assert_eq!(
        rows[2]["text"], "Slow down, Test User: try again in a minute.",
        "{rows}"
    );
    // A new window: one more message gets through, and a new refusal is told again.
    std::thread::sleep(Duration::from_secs(3));
    for n in 6..9 {
        message(
            &engine,
            "250788000801",
            &format!("wamid.in.limit.{n}"),
            "cancel",
        );
    }
    let rows = engine.rows_when(
        "select template from outbox where recipient = '250788000801' order by id",
        Duration::from_secs(15),
        "the next window's replies",
        |rows| rows.as_array().is_some_and(|r| r.len() == 6),
    );
    let last: Vec<_> = rows
        .as_array()
        .into_iter()
        .flatten()
        .skip(3)
        .map(|r| r["template"].clone())
        .collect();
    assert_eq!(
        last,
        ["cancelled", "cancelled", "slow_down_named"],
        "{rows}"
    );
}

#[test]
fn a_killed_engine_loses_no_reply_and_duplicates_only_what_was_in_flight() {
    let graph = FakeGraph::start();
    graph.otherwise(GraphAnswer::Slow(Duration::from_millis(1500)));
    let config = config(&graph, |text| {
        text.replace("      timeout: 10s\n", "      timeout: 3s\n")
    });
    let database = crate::support::fresh_database();
    let env = env_on(&database);
    let first = Engine::start_on(&config, "127.0.0.1:0", &env);
    for n in 0..30 {
        message(
            &first,
            &format!("2507889{n:05}"),
            &format!("wamid.in.kill.{n}"),
            "cancel",
        );
    }
    let before = graph.wait_for(5, Duration::from_secs(10)).len();
    assert!(before >= 5, "sends in flight before the kill");
    first.signal("KILL");
    drop(first);
    // Requests the killed process wrote may still be on their way through the fake's
    // sockets: count once the fake has taken in everything the dead process sent.
    let sent_by_killed = settled_count(&graph);
    // The replacement sends everything left, the rows the dead process held once their lease
    // (three times the timeout) runs out.
    graph.otherwise(GraphAnswer::Accept);
    let second = Engine::start_on(&config, "127.0.0.1:0", &env);
    let rows = second.rows_when(
        "select status from outbox",
        Duration::from_secs(60),
        "every reply sent or dead after the restart",
        |rows| rows.as_array().is_some_and(|r| r.len() == 30) && settled(rows),
    );
    assert!(
        rows.as_array()
            .into_iter()
            .flatten()
            .all(|r| r["status"] == "sent"),
        "{rows}"
    );
    let requests = graph.requests();
    let per_recipient = per_recipient(&requests);
    assert_eq!(per_recipient.len(), 30, "every recipient reached");
    let abandoned =
        second.rows("select count(*) as n from outbox_attempts where error like 'abandoned:%'");
    assert!(
        abandoned[0]["n"].as_i64().unwrap_or_default() > 0,
        "the calls cut by the kill are on record as abandoned"
    );
    // A reply is sent twice only when the kill cut its call (or the record of its answer):
    // each duplicate is a call on record as abandoned, none is a row already settled.
    let abandoned = usize::try_from(abandoned[0]["n"].as_i64().unwrap_or_default()).unwrap_or(0);
    let duplicates: usize = per_recipient.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= abandoned,
        "{duplicates} duplicates, {abandoned} calls cut by the kill"
    );
    assert!(
        duplicates <= sent_by_killed,
        "{duplicates} duplicates, {sent_by_killed} requests from the killed process"
    );
}

/// The fake's request count once it has stopped changing for half a second (at most 10 s).
fn settled_count(graph: &FakeGraph) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = graph.requests().len();
    let mut stable_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = graph.requests().len();
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    last
}

#[test]
fn replies_are_recorded_once_the_tables_have_grown() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let database = crate::support::fresh_database();
    // A database that has served for a while: every hot table past its youth, so the sender
    // records results with cached generic plans, in transactions of their own.
    crate::support::exec(
        &database,
        "insert into contacts (wa_id)
             select '2507870' || lpad(n::text, 5, '0') from generate_series(1, 2500) n;
         insert into sessions (contact_id, expires_at)
             select id, now() + interval '1 hour' from contacts;
         insert into inbound_messages (provider_message_id, kind, outcome, body)
             select 'wamid.in.old.' || n, 'text', 'answered', '\\x7b7d'::bytea
             from generate_series(1, 2500) n;
         insert into outbox (recipient, phone_number_id, template, body, status,
                 provider_message_id, sent_at)
             select '2507870' || lpad(n::text, 5, '0'), '106540352242922', 'cancelled',
                 '{}'::jsonb, 'sent', 'wamid.out.old.' || n, now()
             from generate_series(1, 2500) n;
         analyze contacts; analyze sessions; analyze inbound_messages; analyze outbox;",
    );
    let engine = Engine::start_on(&config, "127.0.0.1:0", &env_on(&database));
    assert!(
        engine.wait_for_log("store.tables_grown", Duration::from_secs(20)),
        "the engine saw the grown tables: {:?}",
        engine.logs().iter().rev().take(5).collect::<Vec<_>>()
    );
    for n in 0..20 {
        message(
            &engine,
            &format!("2507871{n:05}"),
            &format!("wamid.in.grown.{n}"),
            "cancel",
        );
    }
    let rows = engine.rows_when(
        "select o.status, o.provider_message_id, a.http_status, a.finished_at is not null as done
         from outbox o left join outbox_attempts a on a.outbox_id = o.id
         where o.body <> '{}'::jsonb order by o.id",
        Duration::from_secs(30),
        "every new reply sent and its attempt completed",
        |rows| {
            rows.as_array().is_some_and(|r| {
                r.len() == 20 && r.iter().all(|r| r["status"] == "sent" && r["done"] == true)
            })
        },
    );
    let requests = graph.requests();
    assert_eq!(requests.len(), 20, "each reply sent once");
    for row in rows.as_array().into_iter().flatten() {
        assert_eq!(row["http_status"], 200, "{row}");
        assert!(
            requests
                .iter()
                .any(|r| r.wamid.as_deref() == row["provider_message_id"].as_str()),
            "the row keeps the wamid the Graph API gave: {row}"
        );
    }
}

#[test]
fn the_results_statement_runs_with_the_plan_it_is_given() {
    use easymo_engine::store::outbox::{mark_planned, Mark, Next};
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr as _;

    let database = crate::support::fresh_database();
    crate::support::exec(
        &database,
        "insert into outbox (recipient, phone_number_id, template, body, attempts, leased_by)
             select '2507879' || lpad(n::text, 5, '0'), '106540352242922', 'cancelled',
                 '{}'::jsonb, 1, 'plans'
             from generate_series(1, 4) n;
         insert into outbox_attempts (outbox_id, attempt, process)
             select id, 1, 'plans' from outbox;",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // One connection planning per value, as the sending pool does: the prepared statement
        // whose plan counts are read back is the one `mark_planned` ran.
        let options = PgConnectOptions::from_str(&database)
            .expect("url")
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("connect");
        let ids: Vec<i64> = sqlx::query_scalar("select id from outbox order by id")
            .fetch_all(&pool)
            .await
            .expect("ids");
        let mut counts = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let mark = Mark {
                id: *id,
                next: Next::Sent(format!("wamid.plans.{n}")),
                attempt: Some(1),
                http_status: Some(200),
                code: None,
                error: None,
                latency_ms: Some(3),
                called_at: None,
            };
            let generic = n >= 2;
            mark_planned(&pool, "plans", Duration::from_secs(30), &[mark], generic)
                .await
                .expect("mark");
            let plans: (i64, i64) = sqlx::query_as(
                "select generic_plans, custom_plans from pg_prepared_statements
                 where statement like 'with r as (%'",
            )
            .fetch_one(&pool)
            .await
            .expect("the results statement is prepared on the connection");
            counts.push(plans);
        }
        assert_eq!(
            counts,
            [(0, 1), (0, 2), (1, 2), (2, 2)],
            "(generic, per-value) plans after each round: two per value, then two generic"
        );
        let rows: Vec<(String, Option<String>, bool)> = sqlx::query_as(
            "select o.status, o.provider_message_id, a.finished_at is not null
             from outbox o join outbox_attempts a on a.outbox_id = o.id order by o.id",
        )
        .fetch_all(&pool)
        .await
        .expect("rows");
        for (n, (status, wamid, finished)) in rows.iter().enumerate() {
            assert_eq!(status, "sent", "row {n}");
            assert_eq!(wamid.as_deref(), Some(format!("wamid.plans.{n}").as_str()));
            assert!(finished, "row {n}'s attempt completed");
        }
    });
}

#[test]
fn two_engines_on_one_database_never_send_a_row_twice() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let database = crate::support::fresh_database();
    let env = env_on(&database);
    let a = Engine::start_on(&config, "127.0.0.1:0", &env);
    let b = Engine::start_on(&config, "127.0.0.1:0", &env);
    // Rows another process wrote without a sender: both sweepers race for them.
    crate::support::exec(
        &database,
        "insert into outbox (recipient, phone_number_id, template, body)
         select r, '106540352242922', 'cancelled',
             jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
                 'to', r, 'type', 'text', 'text', jsonb_build_object('body', 'queued elsewhere'))
         from (select '2507887' || lpad(n::text, 5, '0') as r from generate_series(1, 300) n) s",
    );
    // And conversations through both.
    for n in 0..40 {
        let engine = if n % 2 == 0 { &a } else { &b };
        message(
            engine,
            &format!("2507886{n:05}"),
            &format!("wamid.in.two.{n}"),
            "cancel",
        );
    }
    a.rows_when(
        "select status from outbox",
        Duration::from_secs(60),
        "every row sent",
        |rows| {
            rows.as_array()
                .is_some_and(|r| r.len() == 340 && r.iter().all(|r| r["status"] == "sent"))
        },
    );
    let requests = graph.requests();
    let per_recipient = per_recipient(&requests);
    let twice: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(requests.len(), 340);
    let senders = a.rows("select count(distinct process) as n from outbox_attempts");
    assert_eq!(senders[0]["n"], 2, "both processes sent");
}

#[test]
fn an_expired_token_pauses_sending_until_a_reload_brings_a_new_one() {
    let graph = FakeGraph::start();
    graph.expire_token(GRAPH_TOKEN);
    let config = config(&graph, |text| text);
    let mut env = crate::support::engine_env();
    env.push(("WHATSAPP_ACCESS_TOKEN_NEXT", "test-graph-token-next"));
    let engine = Engine::start_with(&config, "127.0.0.1:0", &env);
    message(&engine, "250788000901", "wamid.in.token.1", "cancel");
    engine.rows_when(
        "select status, dead_reason from outbox",
        Duration::from_secs(10),
        "the reply dead as unauthorized",
        |rows| rows[0]["dead_reason"] == "unauthorized",
    );
    assert!(engine.wait_for_log("sending.paused", Duration::from_secs(5)));
    // While the token is refused, nothing else is tried with it.
    message(&engine, "250788000902", "wamid.in.token.2", "cancel");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(graph.requests().len(), 1, "{:?}", graph.requests());
    // The operator rotates the token: the reload resumes sending and re-drives the dead row.
    config.write(&config.read().replace(
        "access_token: ${WHATSAPP_ACCESS_TOKEN}",
        "access_token: ${WHATSAPP_ACCESS_TOKEN_NEXT}",
    ));
    let rows = engine.rows_when(
        "select recipient, status, redrives from outbox order by id",
        Duration::from_secs(20),
        "both replies sent with the new token",
        |rows| {
            rows.as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["status"] == "sent"))
        },
    );
    assert_eq!(rows[0]["redrives"], 1, "{rows}");
    let requests = graph.requests();
    assert!(requests
        .iter()
        .skip(1)
        .all(|r| r.authorization == "Bearer test-graph-token-next"));
}

#[test]
fn retries_back_off_exponentially_with_jitter() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| {
        text.replace("        backoff: 1s\n", "        backoff: 400ms\n")
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    graph.script(
        "250788001001",
        &[
            GraphAnswer::Bare(500),
            GraphAnswer::Bare(500),
            GraphAnswer::Bare(500),
        ],
    );
    message(&engine, "250788001001", "wamid.in.backoff.1", "cancel");
    let requests = graph.wait_for(4, Duration::from_secs(20));
    assert_eq!(requests.len(), 4, "{requests:?}");
    // Attempt n waits a random time between half and all of 400 ms x 2^(n-1); the upper
    // bounds allow 300 ms for the round trips around each wait.
    let slack = Duration::from_millis(300);
    for (n, pair) in requests.windows(2).enumerate() {
        let ceiling = Duration::from_millis(400) * (1 << n);
        let waited = pair[1].at.duration_since(pair[0].at);
        assert!(
            waited >= ceiling / 2 && waited <= ceiling + slack,
            "wait {} was {waited:?}, expected {:?} to {ceiling:?}",
            n + 1,
            ceiling / 2
        );
    }
}

#[test]
fn metrics_count_requests_messages_and_sends_without_phone_numbers() {
    let graph = FakeGraph::start();
    let config = config(&graph, |text| text);
    let engine = Engine::start(&config, "127.0.0.1:0");
    graph.script("250788001102", &[GraphAnswer::Error(400, 131047)]);
    for n in 0..3 {
        message(
            &engine,
            &format!("25078800110{n}"),
            &format!("wamid.in.metrics.{n}"),
            "cancel",
        );
    }
    let forged = engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", "sha256=00")
        .body(&text_delivery(
            "250788001109",
            "wamid.in.metrics.forged",
            "cancel",
        ))
        .send();
    assert_eq!(forged.status, 403);
    // One delivery holding two messages: both are counted too.
    let now = crate::support::now_unix().to_string();
    let two = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
    "field": "messages", "value": {"messaging_product": "whatsapp",
    "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
    "contacts": [{"profile": {"name": "A"}, "wa_id": "250788001103"}, {"profile": {"name": "B"}, "wa_id": "250788001104"}],
    "messages": [
        {"from": "250788001103", "id": "wamid.in.metrics.two.1", "timestamp": now, "type": "text", "text": {"body": "cancel"}},
        {"from": "250788001104", "id": "wamid.in.metrics.two.2", "timestamp": now, "type": "text", "text": {"body": "cancel"}}
    ]}}]}]});
    assert_eq!(engine.whatsapp(two.to_string().as_bytes()).status, 200);
    engine.rows_when(
        "select status from outbox",
        Duration::from_secs(15),
        "the replies settled",
        |rows| rows.as_array().is_some_and(|r| r.len() == 5) && settled(rows),
    );
    let response = engine
        .request("GET", "/metrics")
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send();
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        response.header("content-type")
    );
    let text = response.text();
    for line in [
        r#"easymo_http_requests_total{endpoint="wa-webhook-core",status_class="2xx"} 4"#,
        r#"easymo_http_requests_total{endpoint="wa-webhook-core",status_class="4xx"} 1"#,
        r#"easymo_messages_total{endpoint="wa-webhook-core",outcome="answered",flow="cancel"} 5"#,
        r#"easymo_sends_total{outcome="sent",code_class="none"} 4"#,
        r#"easymo_sends_total{outcome="dead",code_class="window"} 1"#,
        "easymo_dlq_size 1",
        "easymo_sending_paused 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    for prefix in [
        "easymo_config{version=\"",
        "easymo_config_loaded_timestamp_seconds ",
        "easymo_database_connections{state=\"idle\"} ",
        "easymo_database_connections{state=\"in_use\"} ",
        "easymo_send_duration_seconds_count 5",
        // Three one-message deliveries, one after the other: three batches of one.
        "easymo_batch_size_messages_count 3",
        "easymo_batch_size_messages_sum 3",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "no `{prefix}…` in\n{text}"
        );
    }
    assert!(
        !text.contains("easymo_http_rate_limited_total{"),
        "rate limits are counted only when they refuse"
    );
    assert!(text
        .lines()
        .any(|l| l == "# TYPE easymo_config_reloads counter"));
    let bucket = text.lines().find(|l| {
        l.starts_with(
            r#"easymo_http_request_duration_seconds_bucket{le="1.5",endpoint="wa-webhook-core"}"#,
        )
    });
    assert!(
        bucket.is_some(),
        "1.5 s (an alert threshold) is a bucket edge:\n{text}"
    );
    assert!(
        !text.contains("25078800110"),
        "no phone number in the metrics"
    );
    assert!(text.ends_with("# EOF\n"));
}
