//! Postgres taken away under the engine (through a proxy a test can cut): webhooks fail fast
//! with 503, `/readyz` answers at once, the engine comes back by itself, nothing acknowledged
//! is lost.

use std::time::{Duration, Instant};

use crate::support::proxy::TcpProxy;
use crate::support::{
    engine_env, fresh_database, rows, signed_whatsapp, text_delivery, ConfigDir, Engine,
};

/// `url` with its `host:port` replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("user@host in the URL");
    let (_, path) = rest.split_once('/').expect("a database in the URL");
    format!("{scheme_user}@{addr}/{path}")
}

fn target(url: &str) -> std::net::SocketAddr {
    let (_, rest) = url.split_once('@').expect("user@host in the URL");
    let (host, _) = rest.split_once('/').expect("a database in the URL");
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .expect("host:port")
        .next()
        .expect("an address")
}

/// Sends one text delivery with message id `wamid.outage-{n}`; returns the response and how
/// long it took.
fn deliver(engine: &Engine, n: usize) -> (crate::support::HttpResponse, Duration) {
    let body = text_delivery("250788000111", &format!("wamid.outage-{n}"), "help");
    let started = Instant::now();
    let response = signed_whatsapp(engine.addr, &body);
    (response, started.elapsed())
}

#[test]
fn while_postgres_is_away_webhooks_fail_fast_and_the_engine_comes_back_by_itself() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let direct = fresh_database();
    let proxy = TcpProxy::start(target(&direct));
    let proxied = through(&direct, proxy.addr);
    let mut env: Vec<(&str, &str)> = engine_env()
        .into_iter()
        .filter(|(k, _)| *k != "DATABASE_URL")
        .collect();
    env.push(("DATABASE_URL", &proxied));
    let engine = Engine::start_on(&config, "127.0.0.1:0", &env);

    let mut acknowledged = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let (response, _) = deliver(&engine, n);
        assert_eq!(response.status, 200, "{}", response.text());
        acknowledged.push(n);
        n += 1;
    }

    proxy.cut();
    let cut = Instant::now();
    let mut refused = 0;
    let mut slowest_refusal_after_first_second = Duration::ZERO;
    let mut refusal_times: Vec<Duration> = Vec::new();
    // Four seconds by default; EASYMO_TEST_OUTAGE_SECS=60 for the figures of a long outage.
    let outage = std::env::var("EASYMO_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(4), Duration::from_secs);
    while cut.elapsed() < outage {
        let (response, took) = deliver(&engine, n);
        assert!(
            took < Duration::from_secs(3),
            "a request was held {took:?} while the database was away"
        );
        match response.status {
            200 => acknowledged.push(n),
            503 => {
                refused += 1;
                assert_eq!(response.json()["error"], "database_unavailable");
                assert!(response.header("retry-after").is_some());
                if cut.elapsed() > Duration::from_secs(1) {
                    slowest_refusal_after_first_second =
                        slowest_refusal_after_first_second.max(took);
                    refusal_times.push(took);
                }
            }
            other => panic!("{other} while the database was away: {}", response.text()),
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused > 20, "only {refused} requests were refused");
    assert!(
        slowest_refusal_after_first_second < Duration::from_millis(500),
        "once the breaker is open a refusal is immediate, took {slowest_refusal_after_first_second:?}"
    );
    let asked = Instant::now();
    let ready = engine.request("GET", "/readyz").send();
    let readyz_took = asked.elapsed();
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"], "database_unreachable");
    assert!(readyz_took < Duration::from_millis(500), "{readyz_took:?}");

    proxy.restore();
    let back = Instant::now();
    loop {
        let (response, _) = deliver(&engine, n);
        if response.status == 200 {
            acknowledged.push(n);
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(3),
            "not serving {:?} after the database came back: {}",
            back.elapsed(),
            response.text()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovered_in = back.elapsed();
    refusal_times.sort();
    println!(
        "outage {outage:?}: {refused} refused (median {:?}, slowest after the first second {slowest_refusal_after_first_second:?}); readyz while down: {readyz_took:?}; serving again {recovered_in:?} after the database returned",
        refusal_times.get(refusal_times.len() / 2).copied().unwrap_or_default()
    );
    assert_eq!(engine.request("GET", "/readyz").send().status, 200);

    // Every acknowledged message was recorded and processed, without a restart.
    let ids: Vec<String> = acknowledged
        .iter()
        .map(|n| format!("'wamid.outage-{n}'"))
        .collect();
    let sql = format!(
        "select count(*) as n from inbound_messages where provider_message_id in ({})",
        ids.join(",")
    );
    let started = Instant::now();
    loop {
        let found = rows(&direct, &sql)[0]["n"].as_u64().unwrap_or(0);
        if found == acknowledged.len() as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{found} of {} acknowledged messages processed",
            acknowledged.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let unprocessed = rows(
        &direct,
        "select count(*) as n from deliveries where processed_at is null",
    );
    assert_eq!(unprocessed[0]["n"], 0, "deliveries left unprocessed");
}
