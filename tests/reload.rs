//! Hot reload through the real process: file edits and SIGHUP, good and bad configs, under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{ConfigDir, Engine};

fn text(body: &str) -> Vec<u8> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::support::text_delivery(
        "250788000001",
        &format!("wamid.R{n}.{}", std::process::id()),
        body,
    )
}

fn routed(engine: &Engine, message: &str) -> String {
    let response = engine.whatsapp(&text(message));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["routed_to"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Sends "duka" every 20 ms until it routes to `shop`, failing with `what` after `within`.
fn wait_for_duka_to_route_to_shop(engine: &Engine, within: Duration, what: &str) {
    let started = Instant::now();
    while routed(engine, "duka") != "shop" {
        assert!(started.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin(engine: &Engine) -> serde_json::Value {
    engine.admin_config()
}

fn with_keyword(config: &str, keyword: &str) -> String {
    let shop = "        - keywords: {en: [shop, marketplace], rw: [guhaha], fr: [boutique]}";
    assert!(config.contains(shop), "the shipped shop route changed");
    config.replace(
        shop,
        &format!("        - keywords: {{en: [shop, marketplace], rw: [guhaha, {keyword}], fr: [boutique]}}"),
    )
}

#[test]
fn a_valid_edit_is_served_within_a_second() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    assert_eq!(routed(&engine, "duka"), "main_menu");
    config.write(&with_keyword(&config.read(), "duka"));
    wait_for_duka_to_route_to_shop(&engine, Duration::from_secs(1), "not reloaded within 1 s");
    let reloads = &admin(&engine)["reloads"];
    assert_eq!(reloads["succeeded"], 1);
    // What changed, in routes.yaml's words.
    let last = &reloads["last_attempt"];
    assert_eq!(last["outcome"], "reloaded");
    assert!(
        last["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{last}"
    );
    assert_eq!(
        last["changes"],
        serde_json::json!({
            "routes": {"added": ["wa-webhook-core \"duka\""], "removed": [], "changed": []},
            "templates": {"added": [], "removed": [], "changed": []},
            "flows": {"added": [], "removed": [], "changed": []},
        })
    );
    // A template and a flow edited at once.
    let edited = config.read().replace(
        "Done, easyMO will answer you in English.",
        "Done, easyMO answers you in English from now on.",
    );
    assert!(edited.contains("from now on"));
    std::fs::write(
        config.dir.join("flows/language.flow"),
        std::fs::read_to_string(config.dir.join("flows/language.flow"))
            .expect("flow")
            .replace(
                "  reply language_set\n",
                "  reply language_set\n  clear pending\n",
            ),
    )
    .expect("flow written");
    config.write(&edited);
    let reloaded = Instant::now();
    let changes = loop {
        let last = admin(&engine)["reloads"]["last_attempt"].clone();
        if last["changes"]["templates"]["changed"] == serde_json::json!(["language_set"])
            && last["changes"]["flows"]["changed"] == serde_json::json!(["language_chosen"])
        {
            break last["changes"].clone();
        }
        assert!(reloaded.elapsed() < Duration::from_secs(3), "{last}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(changes["routes"]["added"], serde_json::json!([]));
}

#[test]
fn an_invalid_edit_keeps_the_old_config_until_it_is_fixed() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let good = config.read();
    let version = admin(&engine)["version"].clone();
    // A keyword route to a flow that does not exist, and a new keyword with it.
    config.write(
        &with_keyword(&good, "duka")
            .replace("      fallback: main_menu", "      fallback: main_mneu"),
    );
    assert!(
        engine.wait_for_log("\"config.reload_rejected\"", Duration::from_secs(3)),
        "{:#?}",
        engine.logs()
    );
    assert!(
        engine.wait_for_log(
            "error[E301]: unknown flow `main_mneu`",
            Duration::from_secs(1)
        ),
        "the lint diagnostics are logged"
    );
    assert_eq!(
        routed(&engine, "duka"),
        "main_menu",
        "the old config still serves"
    );
    let state = admin(&engine);
    assert_eq!(state["version"], version);
    assert_eq!(state["reloads"]["rejected"], 1);
    assert!(state["reloads"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("E301"));
    assert_eq!(state["reloads"]["last_attempt"]["outcome"], "rejected");
    // Putting the file back as it serves clears the error: nothing is wrong any more.
    config.write(&good);
    assert!(
        engine.wait_for_log("\"config.unchanged\"", Duration::from_secs(3)),
        "a no-op reload is logged as such"
    );
    let state = admin(&engine);
    assert_eq!(state["reloads"]["last_error"], serde_json::Value::Null);
    assert_eq!(state["reloads"]["last_attempt"]["outcome"], "unchanged");
    // Fixing the file later is picked up.
    config.write(&with_keyword(&good, "duka"));
    wait_for_duka_to_route_to_shop(&engine, Duration::from_secs(2), "the fix was not picked up");
}

#[test]
fn rate_limit_state_survives_reloads_that_keep_the_limit() {
    let config = ConfigDir::shipped(|t| {
        t.replace(
            crate::support::WHATSAPP_LIMIT,
            "      requests: 3\n      per: 60s\n      key: endpoint",
        )
    });
    let engine = Engine::start(&config, "127.0.0.1:0");
    for _ in 0..3 {
        assert_eq!(engine.whatsapp(&text("hi")).status, 200);
    }
    assert_eq!(engine.whatsapp(&text("hi")).status, 429);
    config.write(&with_keyword(&config.read(), "duka"));
    engine.signal("HUP");
    let until = Instant::now() + Duration::from_secs(3);
    while admin(&engine)["reloads"]["succeeded"] == 0 {
        assert!(Instant::now() < until, "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        engine.whatsapp(&text("hi")).status,
        429,
        "the unchanged limit kept its count"
    );
    // Changing the limit starts a fresh budget.
    config.write(
        &config
            .read()
            .replace("      requests: 3\n", "      requests: 4\n"),
    );
    engine.signal("HUP");
    let until = Instant::now() + Duration::from_secs(3);
    while admin(&engine)["reloads"]["succeeded"] == 1 {
        assert!(Instant::now() < until, "no second reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine.whatsapp(&text("hi")).status, 200);
}

#[test]
fn a_hundred_reloads_under_continuous_traffic_drop_nothing() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Arc::new(Engine::start(&config, "127.0.0.1:0"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (engine, stop, sent, failures) =
                (engine.clone(), stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let response = engine.whatsapp(&text("shop"));
                    sent.fetch_add(1, Ordering::Relaxed);
                    let flow = response.json()["routed_to"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if response.status != 200 || flow != "shop" {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{} {flow}", response.status));
                    }
                }
            })
        })
        .collect();
    let base = config.read();
    for i in 0..100 {
        config.write(&with_keyword(&base, &format!("duka{i}")));
        engine.signal("HUP");
        let until = Instant::now() + Duration::from_secs(5);
        while admin(&engine)["reloads"]["succeeded"].as_u64().unwrap_or(0) < i + 1 {
            assert!(Instant::now() < until, "reload {i} did not land");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the client kept sending"
    );
    assert_eq!(routed(&engine, "duka99"), "shop");
}

/// `cached for` results are reused until they expire or the config is reloaded: a reload
/// starts from an empty cache, so a changed catalogue shows after the next edit at the latest.
#[test]
fn cached_flow_queries_are_reused_until_a_reload() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let menu = |engine: &Engine| {
        assert_eq!(routed(engine, "rent property"), "property");
        let sent = engine.rows("select body from outbox order by id desc limit 1");
        sent[0]["body"]["interactive"]["action"]["sections"][0]["rows"]
            .as_array()
            .map(|rows| rows.iter().map(|r| r["title"].clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let before = menu(&engine);
    assert!(!before.is_empty(), "the demo data has property types");
    crate::support::exec(
        &engine.database_url,
        "insert into property_types (name, description, sort_order) values ('Aaa new type', 'just added', -1)",
    );
    assert_eq!(
        menu(&engine),
        before,
        "the shipped flow caches property types for five minutes"
    );
    config.write(&format!("{}\n# edited\n", config.read()));
    let edited = Instant::now();
    loop {
        let after = menu(&engine);
        if after.first() == Some(&serde_json::json!("Aaa new type")) {
            break;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(5),
            "after a reload the new type is listed first: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reload_that_renames_an_awaited_flow_warns_and_its_sessions_get_the_fallback() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    // Two people are looking at the job categories: the next tap goes to `job_category`.
    for from in ["250788000011", "250788000012"] {
        let delivery = crate::support::text_delivery(from, &format!("wamid.S{from}"), "jobs");
        let response = engine.whatsapp(&delivery);
        assert_eq!(response.json()["routed_to"], "jobs", "{}", response.text());
    }
    let jobs_flow = config.dir.join("flows/jobs.flow");
    let renamed = std::fs::read_to_string(&jobs_flow)
        .expect("jobs.flow")
        .replace("job_category", "jobs_in_category");
    assert!(
        renamed.contains("flow jobs_in_category(choice)"),
        "the shipped flow changed"
    );
    std::fs::write(&jobs_flow, renamed).expect("write jobs.flow");

    let edited = Instant::now();
    while admin(&engine)["reloads"]["stranded_sessions"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            edited.elapsed() < Duration::from_secs(5),
            "no warning about the awaited flow: {}",
            admin(&engine)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Taken, with a warning that names the flow and how many wait in it.
    let reloads = &admin(&engine)["reloads"];
    assert_eq!(reloads["succeeded"], 1);
    assert_eq!(
        reloads["stranded_sessions"],
        serde_json::json!([{"flow": "job_category", "sessions": 2}])
    );
    let warnings = reloads["last_attempt"]["warnings"].to_string();
    assert!(
        warnings.contains("2 live session(s) await flow `job_category`"),
        "{warnings}"
    );
    assert!(engine.wait_for_log("config.sessions_stranded", Duration::from_secs(2)));
    assert!(engine
        .logs()
        .iter()
        .any(|l| l.contains("config.sessions_stranded") && l.contains("job_category")));

    // Their tap is answered by the fallback flow, after a word on what happened.
    let tap = crate::support::choice_delivery("250788000011", "wamid.Stap", "1");
    let response = engine.whatsapp(&tap);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["routed_to"],
        "main_menu",
        "{}",
        response.text()
    );
    let sent = engine.rows(
        "select o.body from outbox o join contacts c on c.wa_id = o.recipient
         where c.wa_id = '250788000011' order by o.id",
    );
    let bodies: Vec<String> = sent
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["body"].to_string())
        .collect();
    let tail = &bodies[bodies.len() - 2..];
    assert!(tail[0].contains("that menu has changed"), "{bodies:#?}");
    assert!(
        tail[1].contains("interactive"),
        "the main menu: {bodies:#?}"
    );
    assert!(
        !bodies.iter().any(|b| b.contains("something went wrong")),
        "{bodies:#?}"
    );
    assert!(engine.wait_for_log("session.awaited_flow_gone", Duration::from_secs(2)));
    // The conversation goes on from the menu: it now awaits the menu's choice.
    let waiting = engine.rows(
        "select s.awaiting_flow from sessions s join contacts c on c.id = s.contact_id
         where c.wa_id = '250788000011'",
    );
    assert_eq!(
        waiting,
        serde_json::json!([{"awaiting_flow": "main_menu_choice"}])
    );
}

/// Copies the directory `from` into `to`, following nothing (the shipped config has no links).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_configmap_volume_updated_by_kubernetes_is_reloaded() {
    use std::os::unix::fs::symlink;
    let shipped = ConfigDir::shipped(crate::support::unlimited);
    // The layout the kubelet's atomic writer makes: a versioned directory, `..data` linking to
    // it, and every file a link through `..data`.
    let volume = ConfigDir {
        dir: shipped.dir.with_extension("volume"),
    };
    let _ = std::fs::remove_dir_all(&volume.dir);
    copy_dir(&shipped.dir, &volume.dir.join("..2026_12_06_v1"));
    symlink("..2026_12_06_v1", volume.dir.join("..data")).expect("link");
    for name in ["routes.yaml", "flows", "docs"] {
        symlink(format!("..data/{name}"), volume.dir.join(name)).expect("link");
    }
    let engine = Engine::start(&volume, "127.0.0.1:0");
    assert_eq!(routed(&engine, "duka"), "main_menu");

    // A new version of the ConfigMap: written beside, then `..data` swapped in one rename.
    let v2 = volume.dir.join("..2026_12_06_v2");
    copy_dir(&volume.dir.join("..2026_12_06_v1"), &v2);
    let edited = with_keyword(&volume.read(), "duka");
    std::fs::write(v2.join("routes.yaml"), edited).expect("write v2");
    symlink("..2026_12_06_v2", volume.dir.join("..data_tmp")).expect("link");
    std::fs::rename(volume.dir.join("..data_tmp"), volume.dir.join("..data")).expect("swap");
    wait_for_duka_to_route_to_shop(
        &engine,
        Duration::from_secs(5),
        "the swapped volume was not reloaded",
    );
    assert_eq!(admin(&engine)["reloads"]["succeeded"], 1);
}
