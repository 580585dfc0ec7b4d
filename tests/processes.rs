//! Several engine processes sharing one database, as in production behind a load balancer.

use std::sync::Arc;

use crate::support::{engine_env, fresh_database, ConfigDir, Engine};

fn two_engines(config: &ConfigDir) -> (Engine, Engine) {
    engines_on(config, config)
}

/// One engine on each config, both on one fresh database.
fn engines_on(first: &ConfigDir, second: &ConfigDir) -> (Engine, Engine) {
    let database = fresh_database();
    let mut env: Vec<(&str, &str)> = engine_env()
        .into_iter()
        .filter(|(k, _)| *k != "DATABASE_URL")
        .collect();
    env.push(("DATABASE_URL", &database));
    (
        Engine::start_on(first, "127.0.0.1:0", &env),
        Engine::start_on(second, "127.0.0.1:0", &env),
    )
}

#[test]
fn a_conversation_continues_on_another_process() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (a, b) = two_engines(&config);
    let asked = a.whatsapp(&crate::support::text_delivery(
        "250788777001",
        "wamid.P1",
        "book ride",
    ));
    assert_eq!(asked.json()["routed_to"], "book_ride");
    let location = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "106540352242922"},
            "contacts": [{"wa_id": "250788777001", "profile": {"name": "Eric"}}],
            "messages": [{"from": "250788777001", "id": "wamid.P2", "timestamp": crate::support::now_unix().to_string(),
                          "type": "location", "location": {"latitude": -1.95, "longitude": 30.06}}]
        }}]}]
    });
    let stored = b.whatsapp(location.to_string().as_bytes());
    assert_eq!(
        stored.json()["routed_to"],
        "ride_pickup",
        "process B continues what A started"
    );
    let rides = b.rows("select pickup_latitude, pickup_longitude from ride_requests");
    assert_eq!(
        rides,
        serde_json::json!([{"pickup_latitude": -1.95, "pickup_longitude": 30.06}])
    );
}

#[test]
fn concurrent_messages_from_one_sender_across_processes_are_each_handled_once() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (a, b) = two_engines(&config);
    let engines = Arc::new([a, b]);
    let threads: Vec<_> =
        (0..4)
            .map(|t| {
                let engines = engines.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let id = format!("wamid.C{t}-{i}");
                        let engine = &engines[(t + i) % 2];
                        let response = engine.whatsapp(&crate::support::text_delivery(
                            "250788777002",
                            &id,
                            "find jobs",
                        ));
                        assert_eq!(response.status, 200, "{}", response.text());
                        // Every message is also delivered twice, to the other process: Meta's retries.
                        let again = engines[(t + i + 1) % 2].whatsapp(
                            &crate::support::text_delivery("250788777002", &id, "find jobs"),
                        );
                        assert_eq!(again.status, 200);
                    }
                })
            })
            .collect();
    for thread in threads {
        thread.join().expect("client");
    }
    let [a, _b] = &*engines;
    let counts = a.rows(
        "select (select count(*) from inbound_messages) as messages,
                (select count(*) from inbound_messages where outcome = 'answered') as answered,
                (select count(*) from outbox) as replies,
                (select count(*) from contacts) as contacts,
                (select count(*) from deliveries)
                  + (select count(*) from inbound_messages where body is not null) as deliveries",
    );
    assert_eq!(
        counts,
        serde_json::json!([{"messages": 40, "answered": 40, "replies": 40, "contacts": 1, "deliveries": 80}]),
        "each of 40 messages handled once, every delivery (duplicates too) on record"
    );
}

/// Messages that arrive together share transactions (group commit), but not their fates: a
/// failing flow answers only its own message with the error reply, and every neighbour in its
/// batch is answered as if it had been alone.
#[test]
fn messages_batched_together_keep_their_own_outcomes() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // "shop" reads product categories: with the table gone its flow fails.
    crate::support::exec(
        &engine.database_url,
        "alter table product_categories rename to product_categories_moved",
    );
    let engine = Arc::new(engine);
    let words = ["shop", "book ride", "find jobs"];
    let barrier = Arc::new(std::sync::Barrier::new(48));
    let threads: Vec<_> = (0..48)
        .map(|i| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            std::thread::spawn(move || {
                let body = crate::support::text_delivery(
                    &format!("2507880{i:05}"),
                    &format!("wamid.B{i}"),
                    words[i % 3],
                );
                barrier.wait();
                let response = engine.whatsapp(&body);
                assert_eq!(response.status, 200, "{}", response.text());
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client");
    }
    let outcomes = engine.rows(
        "select m.flow, m.outcome, count(*) as messages, count(o.id) as replies,
                min(o.template) as template, max(o.template) as same_template
         from inbound_messages m left join outbox o on o.inbound_message_id = m.provider_message_id
         group by m.flow, m.outcome order by m.flow",
    );
    assert_eq!(
        outcomes,
        serde_json::json!([
            {"flow": "book_ride", "outcome": "answered", "messages": 16, "replies": 16,
             "template": "ask_pickup_location", "same_template": "ask_pickup_location"},
            {"flow": "jobs", "outcome": "answered", "messages": 16, "replies": 16,
             "template": "job_categories", "same_template": "job_categories"},
            {"flow": "shop", "outcome": "failed", "messages": 16, "replies": 16,
             "template": "something_went_wrong", "same_template": "something_went_wrong"},
        ])
    );
    // Each failure redid its batch; no message may lose its session or gain a second reply.
    let sessions = engine.rows(
        "select count(*) as sessions, count(*) filter (where awaiting_flow is not null) as awaiting
         from sessions",
    );
    assert_eq!(
        sessions,
        serde_json::json!([{"sessions": 48, "awaiting": 32}]),
        "book ride and find jobs await an answer; a failed shop awaits nothing"
    );
    // Rows written by one transaction share its xmin: some transaction held several messages.
    let largest = engine.rows(
        "select max(n) as largest from (select count(*) as n from inbound_messages group by xmin::text) t",
    );
    let largest = largest[0]["largest"].as_i64().unwrap_or(0);
    assert!(
        largest >= 2,
        "48 simultaneous messages were committed one by one"
    );
}

/// A young table that has doubled since its last analyze is analyzed at once (not a minute
/// later by autovacuum), so the engine's prepared plans stop treating it as tiny; so are the
/// tables only the sender's results statement reads (status webhooks may start late).
#[test]
fn hot_tables_are_analyzed_when_they_double() {
    let database = fresh_database();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = easymo_engine::store::connect(&database, 2)
            .await
            .expect("pool");
        let analyzed = |table: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "select last_analyze is not null from pg_stat_user_tables where relname = $1",
                )
                .bind(table)
                .fetch_one(&pool)
                .await
                .expect("stats")
            }
        };
        assert!(!analyzed("outbox").await);
        // 800 replies written in one statement; the session flushes its counters at once.
        let mut conn = pool.acquire().await.expect("connection");
        sqlx::raw_sql(
            "insert into outbox (recipient, phone_number_id, template, body)
             select '250788000000', '1', 't', '{}' from generate_series(1, 800);
             insert into message_statuses (provider_message_id, status, payload)
             select 'wamid.' || n, 'delivered', '{}' from generate_series(1, 600) n;
             select pg_stat_force_next_flush();",
        )
        .execute(&mut *conn)
        .await
        .expect("insert");
        drop(conn);
        // Counters reach the shared statistics when that session goes idle.
        let mut grown = Vec::new();
        for _ in 0..50 {
            grown = easymo_engine::store::stats::analyze_grown(&pool)
                .await
                .expect("analyze");
            if !grown.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            grown,
            vec!["message_statuses".to_owned(), "outbox".to_owned()]
        );
        assert!(analyzed("outbox").await);
        assert!(analyzed("message_statuses").await);
        assert!(
            !analyzed("contacts").await,
            "an untouched table is left alone"
        );
        assert!(
            easymo_engine::store::stats::analyze_grown(&pool)
                .await
                .expect("analyze")
                .is_empty(),
            "nothing changed since"
        );
    });
}

/// The shipped config with budgets counted in Postgres (its per-sender limit: 30 a minute,
/// then one slow-down reply and silence).
fn shared_limits(config: &str) -> String {
    assert!(config.contains("      requests: 30\n      per: 60s\n      key: sender\n"));
    config.replacen("server:\n", "server:\n  rate_limits: postgres\n", 1)
}

fn from_one_sender(engine: &Engine, n: usize) -> serde_json::Value {
    let delivery = crate::support::text_delivery("250788777050", &format!("wamid.L{n}"), "hello");
    let response = engine.whatsapp(&delivery);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[test]
fn a_senders_budget_holds_across_processes_when_limits_are_shared() {
    let config = ConfigDir::shipped(shared_limits);
    let (a, b) = two_engines(&config);
    for n in 0..30 {
        let engine = if n % 2 == 0 { &a } else { &b };
        let answer = from_one_sender(engine, n);
        assert_eq!(answer["status"], "success", "message {n}: {answer}");
    }
    // The 31st and 32nd, whichever process gets them, are over the one budget.
    assert_eq!(from_one_sender(&b, 30)["status"], "dropped");
    assert_eq!(from_one_sender(&a, 31)["status"], "dropped");
    // Told to slow down once, though both processes refused them.
    let told = a.rows("select count(*) as n from outbox where template = 'slow_down'");
    assert_eq!(told, serde_json::json!([{"n": 1}]));
    // Every decision was shared: none fell back to a process's own count (a slow run shows
    // up here, not as a puzzling 31st message let through).
    for engine in [&a, &b] {
        assert!(!engine
            .logs()
            .iter()
            .any(|l| l.contains("ratelimit.shared_unavailable")));
    }
}

#[test]
fn local_limits_give_each_process_its_own_budget() {
    let config = ConfigDir::shipped(|c| c.to_owned());
    let (a, b) = two_engines(&config);
    for n in 0..30 {
        let engine = if n % 2 == 0 { &a } else { &b };
        assert_eq!(from_one_sender(engine, n)["status"], "success");
    }
    // Each process has seen 15: the 31st still fits in b's own budget.
    assert_eq!(from_one_sender(&b, 30)["status"], "success");
}

#[test]
fn shared_limits_out_of_reach_fall_back_to_local_counts_with_a_warning() {
    let config = ConfigDir::shipped(shared_limits);
    let (a, _b) = two_engines(&config);
    assert_eq!(from_one_sender(&a, 0)["status"], "success");
    // The shared table is gone (a botched maintenance, a pooler that cannot reach it): the
    // process counts alone and says so, and traffic is not refused.
    crate::support::exec(&a.database_url, "drop table rate_limit_budgets");
    for n in 1..30 {
        assert_eq!(from_one_sender(&a, n)["status"], "success", "message {n}");
    }
    assert!(a.wait_for_log(
        "ratelimit.shared_unavailable",
        std::time::Duration::from_secs(2)
    ));
    // The local limiter still holds the sender to 30 a minute.
    assert_eq!(from_one_sender(&a, 30)["status"], "success");
    assert_eq!(from_one_sender(&a, 31)["status"], "dropped");
}

fn admin(engine: &Engine) -> serde_json::Value {
    engine.admin_config()
}

/// Waits until `engine`'s `/admin/config` satisfies `done`, and returns it.
fn admin_when(
    engine: &Engine,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = admin(engine);
        if done(&seen) {
            return seen;
        }
        assert!(std::time::Instant::now() < until, "{what}: {seen:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn leaders(seen: &serde_json::Value) -> Vec<String> {
    seen["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["leader"] == true)
        .filter_map(|r| r["process"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn one_replica_leads_and_a_dead_leader_is_replaced_within_a_minute() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (a, b) = two_engines(&config);
    let seen = admin_when(&a, "both replicas listed, one leading", |seen| {
        seen["replicas"].as_array().map(Vec::len) == Some(2) && leaders(seen).len() == 1
    });
    assert_eq!(seen["config_versions_differ"], false, "{seen:#}");
    let leader = leaders(&seen).remove(0);
    let (a_leads, b_leads) = (admin(&a)["leader"] == true, admin(&b)["leader"] == true);
    assert!(a_leads != b_leads, "exactly one says it leads");
    let (dead, survivor) = if a_leads { (a, b) } else { (b, a) };
    assert_eq!(admin(&dead)["process"], leader.as_str());
    dead.signal("KILL");
    drop(dead);
    // No chance to let go: the survivor waits out the lease, then leads.
    let seen = admin_when(&survivor, "the survivor leads", |seen| {
        seen["leader"] == true
    });
    assert_ne!(seen["process"], leader.as_str());
}

#[test]
fn a_replica_serving_other_files_is_visible() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let edited = ConfigDir::shipped(|c| {
        crate::support::unlimited(c).replace(
            "Sorry, something went wrong on our side.",
            "Sorry, something broke on our side.",
        )
    });
    let (a, _b) = engines_on(&config, &edited);
    let seen = admin_when(&a, "two replicas with different versions", |seen| {
        seen["config_versions_differ"] == true
    });
    let versions: std::collections::BTreeSet<&str> = seen["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["config_version"].as_str())
        .collect();
    assert_eq!(versions.len(), 2, "{seen:#}");
}

#[test]
fn a_new_senders_burst_across_processes_is_counted_exactly() {
    let config = ConfigDir::shipped(shared_limits);
    let (a, b) = two_engines(&config);
    let engines = Arc::new([a, b]);
    // Forty messages at once from a sender neither process has counted yet: each decision
    // races to create the budget, and every one must still count.
    let start = Arc::new(std::sync::Barrier::new(40));
    let threads: Vec<_> = (0..40)
        .map(|n| {
            let (engines, start) = (engines.clone(), start.clone());
            std::thread::spawn(move || {
                let delivery =
                    crate::support::text_delivery("250788777060", &format!("wamid.B{n}"), "hello");
                start.wait();
                let answer = engines[n % 2].whatsapp(&delivery).json();
                answer["status"].as_str().unwrap_or_default().to_owned()
            })
        })
        .collect();
    let statuses: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let allowed = statuses.iter().filter(|s| *s == "success").count();
    assert_eq!(allowed, 30, "{statuses:?}");
    for engine in engines.iter() {
        assert!(!engine
            .logs()
            .iter()
            .any(|l| l.contains("ratelimit.shared_unavailable")));
    }
}
