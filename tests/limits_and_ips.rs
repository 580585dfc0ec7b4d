//! Rate limits and client addresses through the real server.

use std::time::Duration;

use crate::support::{ConfigDir, Engine};

fn message_from(sender: &str) -> Vec<u8> {
    crate::support::text_delivery(
        sender,
        &format!("wamid.{sender}.{}", crate::support::now_unix()),
        "menu",
    )
}

#[test]
fn the_shipped_limit_is_per_person_a_burst_of_people_is_served() {
    let config = ConfigDir::shipped(str::to_owned);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // A thousand different people at once: every one is answered.
    for n in 0..1000 {
        let response = engine.whatsapp(&message_from(&format!("2507881{n:05}")));
        assert_eq!(response.status, 200, "person {n}: {}", response.text());
        assert_eq!(response.json()["status"], "success", "person {n}");
    }
    // One person: 30 in a minute, then one slow-down reply, then silence; all answered 200.
    let one = "250788299999";
    for n in 0..30 {
        let body = crate::support::text_delivery(one, &format!("wamid.burst.{n}"), "menu");
        assert_eq!(
            engine.whatsapp(&body).json()["status"],
            "success",
            "message {n}"
        );
    }
    for n in 30..33 {
        let body = crate::support::text_delivery(one, &format!("wamid.burst.{n}"), "menu");
        let response = engine.whatsapp(&body);
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["status"], "dropped", "message {n}");
    }
    let replies = engine.rows(&format!(
        "select template, count(*) as n from outbox where recipient = '{one}' group by 1 order by 1"
    ));
    assert_eq!(
        replies,
        serde_json::json!([{"template": "main_menu", "n": 30}, {"template": "slow_down", "n": 1}])
    );
}

#[test]
fn the_301st_request_in_a_minute_is_refused_with_headers() {
    // The limit is a GCRA bucket (governor): 300 at once, then one more every 200 ms. Requests
    // here take a few milliseconds each (every one is recorded in Postgres), so a few tokens come
    // back during the run; the budget allows exactly that many more, and not one beyond.
    let config = ConfigDir::shipped(|t| {
        t.replace(
            crate::support::WHATSAPP_LIMIT,
            "      requests: 300\n      per: 60s\n      key: endpoint",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let started = std::time::Instant::now();
    let mut allowed = 0u32;
    let refused = loop {
        let response = engine.whatsapp(&message_from(&format!("2507880{allowed:05}")));
        assert_eq!(response.header("x-ratelimit-limit"), Some("300"));
        if response.status == 429 {
            break response;
        }
        assert_eq!(
            response.status,
            200,
            "request {}: {}",
            allowed + 1,
            response.text()
        );
        let remaining: u32 = response
            .header("x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .expect("remaining");
        assert!(remaining < 300, "{remaining}");
        assert!(response.header("x-ratelimit-reset").is_some());
        allowed += 1;
        assert!(allowed <= 400, "never refused");
    };
    let refilled = (started.elapsed().as_millis() / 200) as u32 + 1;
    assert!(
        (300..=300 + refilled).contains(&allowed),
        "{allowed} allowed in {:?}",
        started.elapsed()
    );
    assert_eq!(refused.json()["error"], "rate_limited");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let reset: u64 = refused
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("reset");
    assert!((59..=60).contains(&reset), "{reset}");
}

#[test]
fn sender_keys_are_independent_and_budgets_come_back() {
    let config = ConfigDir::shipped(|t| {
        t.replace(
            crate::support::WHATSAPP_LIMIT,
            "      requests: 2\n      per: 2s\n      key: sender",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let a = message_from("250788000001");
    let b = message_from("250788000002");
    assert_eq!(engine.whatsapp(&a).status, 200);
    assert_eq!(engine.whatsapp(&a).status, 200);
    assert_eq!(
        engine.whatsapp(&a).status,
        429,
        "third from the same sender"
    );
    assert_eq!(
        engine.whatsapp(&b).status,
        200,
        "another sender has its own budget"
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        engine.whatsapp(&a).status,
        200,
        "the budget is back after the window"
    );
}

#[test]
fn a_sender_limit_can_drop_with_200_so_meta_does_not_retry() {
    let config = ConfigDir::shipped(|t| {
        t.replace(
            crate::support::WHATSAPP_LIMIT,
            "      requests: 1\n      per: 60s\n      key: sender\n      on_limit: drop",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    let a = message_from("250788000001");
    assert_eq!(engine.whatsapp(&a).json()["status"], "success");
    let dropped = engine.whatsapp(&a);
    assert_eq!(dropped.status, 200);
    assert_eq!(
        dropped.json(),
        serde_json::json!({"status": "dropped", "reason": "rate_limited"})
    );
}

fn sms_config(trusted: &str, allowed: &str, limit: &str) -> ConfigDir {
    ConfigDir::shipped(move |t| {
        let shipped_proxies = "trusted_proxies: [127.0.0.1/32, \"::1/128\", 10.0.0.0/24]";
        assert!(t.contains(shipped_proxies), "the shipped proxies changed");
        t.replace(shipped_proxies, &format!("trusted_proxies: [{trusted}]"))
            .replace(
                "cidrs: [127.0.0.1/32, \"::1/128\", 10.20.0.0/16]",
                &format!("cidrs: [{allowed}]"),
            )
            .replace(
                "      requests: 100\n      per: 60s",
                &format!("      requests: {limit}\n      per: 60s"),
            )
    })
}

fn sms(engine: &Engine, forwarded_for: Option<&str>) -> crate::support::HttpResponse {
    let mut request = engine
        .request("POST", "/webhooks/momo-sms")
        .header("content-type", "application/json");
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    // An OTP: read and recorded as a non-payment, so an admitted request answers 200.
    request
        .body(br#"{"from":"M-Money","text":"<#> Dear Customer, your MTN MoMo application one-time password is :1234."}"#)
        .send()
}

#[test]
fn ip_allowlist_believes_forwarding_headers_only_from_trusted_proxies() {
    // The gateway sits behind a proxy on loopback; the SMS gateway host is 10.20.0.5.
    let engine_config = sms_config("127.0.0.1/32", "10.20.0.0/16", "100");
    let engine = Engine::start(&engine_config, "127.0.0.1:0");
    let denied = sms(&engine, None);
    assert_eq!(
        denied.status, 403,
        "the proxy itself is not the SMS gateway"
    );
    assert_eq!(denied.json()["error"], "ip_not_allowed");
    assert!(engine.wait_for_log(
        "\"momo-sms-webhook.unauthorized_ip\"",
        Duration::from_secs(2)
    ));
    assert_eq!(
        sms(&engine, Some("10.20.0.5")).status,
        200,
        "through the trusted proxy"
    );
    assert_eq!(
        sms(&engine, Some("6.6.6.6, 10.20.0.5")).status,
        200,
        "rightmost untrusted hop is the client"
    );
    assert_eq!(
        sms(&engine, Some("10.20.0.5, 6.6.6.6")).status,
        403,
        "a client cannot prepend an allowed address"
    );

    // Without the proxy trusted, the same header changes nothing.
    let untrusted_config = sms_config("10.99.0.0/16", "10.20.0.0/16", "100");
    let untrusted = Engine::start(&untrusted_config, "127.0.0.1:0");
    assert_eq!(
        sms(&untrusted, Some("10.20.0.5")).status,
        403,
        "spoofed X-Forwarded-For from an untrusted peer"
    );
    let real_ip = untrusted
        .request("POST", "/webhooks/momo-sms")
        .header("content-type", "application/json")
        .header("x-real-ip", "10.20.0.5")
        .body(b"{}")
        .send();
    assert_eq!(real_ip.status, 403);
}

#[test]
fn ipv6_clients_and_per_ip_budgets() {
    let engine_config = sms_config("\"::1/128\"", "\"::1/128\", \"2001:db8::/32\"", "2");
    let engine = Engine::start(&engine_config, "[::1]:0");
    assert!(engine.addr.is_ipv6());
    assert_eq!(sms(&engine, None).status, 200, "::1 is allowed");
    assert_eq!(sms(&engine, Some("2001:db8::7")).status, 200);
    assert_eq!(sms(&engine, Some("2001:db8::7")).status, 200);
    let refused = sms(&engine, Some("2001:db8::7"));
    assert_eq!(refused.status, 429, "third from one client");
    assert_eq!(
        sms(&engine, Some("2001:db8::8")).status,
        200,
        "another client has its own budget"
    );
    assert_eq!(
        sms(&engine, Some("2001:db9::1")).status,
        403,
        "outside the allowlist"
    );
}
