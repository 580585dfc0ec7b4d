//! docs/api.md is played against a real engine: every request example is sent as written, and
//! the answer must have the documented status, headers and body, so the page cannot drift from
//! what the engine does.

use crate::support::{ConfigDir, Engine, ADMIN_TOKEN, CORPUS_APP_SECRET};

/// One example: the heading it sits under, the request and the response blocks as written.
struct Example {
    heading: String,
    request: String,
    response: String,
}

fn examples(doc: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut request: Option<String> = None;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            assert!(request.is_none(), "{heading}: a request without a response");
            heading = h.to_owned();
            continue;
        }
        let kind = match line.trim() {
            "```http request" => "request",
            "```http response" => "response",
            _ => continue,
        };
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let block = block.join("\n");
        match kind {
            "request" => request = Some(block),
            _ => out.push(Example {
                heading: heading.clone(),
                request: request
                    .take()
                    .unwrap_or_else(|| panic!("{heading}: a response without a request")),
                response: block,
            }),
        }
    }
    out
}

/// Head lines and body of a block.
fn split(block: &str) -> (Vec<&str>, &str) {
    match block.split_once("\n\n") {
        Some((head, body)) => (head.lines().collect(), body),
        None => (block.lines().collect(), ""),
    }
}

/// `expected` with `"<any>"` standing for any value.
fn matches(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (expected, actual) {
        (Value::String(s), _) if s == "<any>" => true,
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        _ => expected == actual,
    }
}

fn play(engine: &Engine, example: &Example) -> Result<(), String> {
    let (head, body) = split(&example.request);
    let mut request_line = head[0].split_whitespace();
    let (method, path) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let mut request = engine.request(method, path);
    for line in &head[1..] {
        let (name, value) = line.split_once(':').expect("header line");
        let value = value.trim();
        let value = if value == "<signature>" {
            let hex = easymo_engine::auth::signature::sign_hex(
                CORPUS_APP_SECRET.as_bytes(),
                body.as_bytes(),
            );
            format!("sha256={hex}")
        } else {
            value.replace("<admin-token>", ADMIN_TOKEN)
        };
        request = request.header(name.trim(), &value);
    }
    let response = request.body(body.as_bytes()).send();

    let (head, expected_body) = split(&example.response);
    let status: u16 = head[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut problems = Vec::new();
    if response.status != status {
        problems.push(format!("status {} (documented {status})", response.status));
    }
    for line in &head[1..] {
        let (name, value) = line.split_once(':').expect("header line");
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if response.header(&name) != Some(value) {
            problems.push(format!(
                "header {name}: {:?} (documented {value:?})",
                response.header(&name)
            ));
        }
    }
    match serde_json::from_str::<serde_json::Value>(expected_body) {
        Ok(expected) => {
            let actual: serde_json::Value =
                serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
            if !matches(&expected, &actual) {
                problems.push(format!("body {actual} (documented {expected})"));
            }
        }
        Err(_) if response.text() != expected_body => problems.push(format!(
            "body {:?} (documented {expected_body:?})",
            response.text()
        )),
        Err(_) => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("### {}: {}", example.heading, problems.join("; ")))
    }
}

#[test]
fn every_example_in_the_api_docs_is_what_the_engine_answers() {
    let doc = std::fs::read_to_string(crate::support::repo_path("docs/api.md")).expect("api.md");
    let examples = examples(&doc);
    for heading in [
        "GET /healthz",
        "GET /readyz",
        "GET /admin/config",
        "GET /webhooks/whatsapp",
        "POST /webhooks/whatsapp",
        "POST /webhooks/momo",
        "POST /webhooks/momo-sms",
    ] {
        assert!(
            examples.iter().any(|e| e.heading == heading),
            "docs/api.md has no example under `### {heading}`"
        );
    }
    let config = ConfigDir::shipped(|c| c.to_owned());
    let engine = Engine::start(&config, "127.0.0.1:0");
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|e| play(&engine, e).err())
        .collect();
    assert!(
        failures.is_empty(),
        "docs/api.md differs from the engine:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_changed_answer_is_caught() {
    let example = Example {
        heading: "GET /healthz".into(),
        request: "GET /healthz HTTP/1.1".into(),
        response: "HTTP/1.1 200 OK\ncontent-type: application/json\n\n{\"status\":\"down\"}".into(),
    };
    let config = ConfigDir::shipped(|c| c.to_owned());
    let engine = Engine::start(&config, "127.0.0.1:0");
    let error = play(&engine, &example).expect_err("the body differs");
    assert!(error.contains("documented"), "{error}");
}
