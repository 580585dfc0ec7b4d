//! The live dashboard against a running engine under scripted traffic: who may open it, what
//! its event stream says, and the page as headless Chromium renders it, figure by figure
//! against `/metrics`.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use crate::support::browser::Browser;
use crate::support::{exec, text_delivery, ConfigDir, Engine, ADMIN_TOKEN};

fn engine_with_traffic() -> (ConfigDir, Engine) {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    for n in 0..3 {
        let response = engine.whatsapp(&text_delivery(
            &format!("25078860000{n}"),
            &format!("wamid.dash.{n}"),
            "menu",
        ));
        assert_eq!(response.status, 200);
    }
    let forged = engine.forged_whatsapp();
    assert_eq!(forged.status, 403);
    exec(
        &engine.database_url,
        "insert into outbox (recipient, phone_number_id, template, body, status, dead_reason)
         values ('250788600009', '1234567890', 'menu', '{}', 'dead', 'permanent')",
    );
    (config, engine)
}

/// The cookie `/dashboard?token=` hands out.
fn sign_in(engine: &Engine) -> String {
    let response = engine
        .request("GET", &format!("/dashboard?token={ADMIN_TOKEN}"))
        .send();
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/dashboard"));
    let cookie = response.header("set-cookie").unwrap_or_default().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie holds a digest, not the token"
    );
    cookie.split(';').next().unwrap_or_default().to_owned()
}

/// The first `update` event of the stream, read off a raw connection.
fn first_event(engine: &Engine, cookie: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(engine.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /dashboard/events HTTP/1.1\r\nhost: x\r\ncookie: {cookie}\r\n\r\n"
    )
    .expect("write");
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(data) = line.strip_prefix("data: ") {
            assert!(head.contains("text/event-stream"), "{head}");
            return serde_json::from_str(data.trim()).expect("an event is JSON");
        }
        head.push_str(&line);
        line.clear();
    }
    panic!("no event: {head}");
}

fn metric(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{metrics}"))
}

#[test]
fn only_the_admin_token_opens_it() {
    let (_config, engine) = engine_with_traffic();
    let anonymous = engine.request("GET", "/dashboard").send();
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.text().contains("admin token"));
    let wrong = engine.request("GET", "/dashboard?token=guess").send();
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let events = engine.request("GET", "/dashboard/events").send();
    assert_eq!(events.status, 401);
    let forged = engine
        .request("GET", "/dashboard")
        .header("cookie", "easymo_dashboard=00")
        .send();
    assert_eq!(forged.status, 401);

    let cookie = sign_in(&engine);
    let page = engine
        .request("GET", "/dashboard")
        .header("cookie", &cookie)
        .send();
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "no CDN"
    );
    let bearer = engine
        .request("GET", "/dashboard")
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send();
    assert_eq!(bearer.status, 200);
    let script = engine
        .request("GET", "/dashboard/assets/uPlot.iife.min.js")
        .send();
    assert_eq!(script.status, 200);
    assert!(script.text().contains("uPlot"));
    assert_eq!(
        engine
            .request("GET", "/dashboard/assets/nope.js")
            .send()
            .status,
        404
    );
}

#[test]
fn the_event_stream_says_what_metrics_says() {
    let (_config, engine) = engine_with_traffic();
    let cookie = sign_in(&engine);
    let event = first_event(&engine, &cookie);
    let metrics = engine.request("GET", "/metrics").send().text();
    let endpoint = &event["figures"]["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "wa-webhook-core").cloned())
        .unwrap_or_default();
    for class in ["2xx", "4xx"] {
        let line = format!(
            "easymo_http_requests_total{{endpoint=\"wa-webhook-core\",status_class=\"{class}\"}}"
        );
        assert_eq!(
            endpoint["requests_total"][class].as_f64(),
            Some(metric(&metrics, &line))
        );
    }
    assert_eq!(event["figures"]["dlq_size"].as_f64(), Some(1.0));
    assert_eq!(event["config"]["version"].as_str().map(str::len), Some(64));
    assert!(event["alerts"].is_array(), "{event}");
}

#[test]
fn chromium_renders_the_figures_of_metrics() {
    let (_config, engine) = engine_with_traffic();
    let url = format!("http://{}/dashboard?token={ADMIN_TOKEN}", engine.addr);
    let mut browser = Browser::open(&url);
    browser.wait_until(
        "Number(document.body.dataset.updates) >= 1",
        Duration::from_secs(30),
        "the page draws live updates",
    );
    // Scripted traffic while the page is open: the charts move.
    let addr = engine.addr;
    let traffic = std::thread::spawn(move || {
        for n in 0..40 {
            let body = text_delivery(
                &format!("2507886100{n:02}"),
                &format!("wamid.live.{n}"),
                "menu",
            );
            let response = crate::support::signed_whatsapp(addr, &body);
            assert_eq!(response.status, 200);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    traffic.join().expect("traffic");
    // Two more updates after the last request, so the page has caught up with it.
    let seen = browser.evaluate("Number(document.body.dataset.updates)");
    let seen = seen.as_u64().unwrap_or(0);
    browser.wait_until(
        &format!("Number(document.body.dataset.updates) >= {}", seen + 2),
        Duration::from_secs(30),
        "the page keeps updating",
    );
    let metrics = engine.request("GET", "/metrics").send().text();
    // Every figure on the page, as (figure, endpoint or flow, text).
    let shown = browser.evaluate(
        "JSON.stringify([...document.querySelectorAll('[data-figure]')].map(e => \
         [e.dataset.figure, e.dataset.endpoint || e.dataset.flow || '', e.textContent]))",
    );
    let shown: Vec<(String, String, String)> =
        serde_json::from_str(shown.as_str().unwrap_or("[]")).expect("figures");
    let figure = |name: &str, of: &str| -> f64 {
        shown
            .iter()
            .find(|(f, o, _)| f == name && o == of)
            .and_then(|(_, _, text)| text.parse().ok())
            .unwrap_or_else(|| panic!("no {name} of `{of}` on the page: {shown:?}"))
    };
    for class in ["2xx", "4xx"] {
        let line = format!(
            "easymo_http_requests_total{{endpoint=\"wa-webhook-core\",status_class=\"{class}\"}}"
        );
        assert_eq!(
            figure(&format!("requests_{class}"), "wa-webhook-core"),
            metric(&metrics, &line),
            "{class}"
        );
    }
    assert_eq!(figure("dlq_size", ""), metric(&metrics, "easymo_dlq_size"));
    assert_eq!(
        figure("messages_answered", "main_menu"),
        metric(
            &metrics,
            r#"easymo_messages_total{endpoint="wa-webhook-core",outcome="answered",flow="main_menu"}"#
        )
    );
    let version = browser.evaluate("document.getElementById('config-version').title");
    assert_eq!(version.as_str().map(str::len), Some(64), "{version}");
    assert_eq!(
        browser.evaluate("document.querySelectorAll('.uplot').length"),
        serde_json::json!(3),
        "three charts drawn"
    );
    // The screenshot kept as docs/dashboard.png, refreshed by copying it after a run.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
}
