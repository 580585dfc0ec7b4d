//! Three engine replicas behind a real nginx (deploy/nginx/easymo.conf's `location /`), one
//! Postgres: shared limits, conversations hopping replicas, a replica killed under load, a
//! rolling restart under load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{engine_env, fresh_database, signed_whatsapp, ConfigDir, Engine};

/// A running nginx, stopped when dropped.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // What nginx made of the replicas, for the failure's reader.
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            let first: Vec<&str> = log.lines().take(12).collect();
            eprintln!("nginx error.log, first lines:\n{}", first.join("\n"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first few of `failed`, for a message that stays readable.
fn some(failed: &[&(String, u16)]) -> String {
    format!(
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    )
}

/// The shipped balancer's `location / { … }` block, as deploy/nginx/easymo.conf has it.
fn shipped_location() -> String {
    let conf = std::fs::read_to_string(crate::support::repo_path("deploy/nginx/easymo.conf"))
        .expect("deploy/nginx/easymo.conf");
    let start = conf.find("    location / {").expect("a `location /` block");
    let end = conf[start..].find("\n    }\n").expect("its end") + start;
    conf[start..end + 6].to_owned()
}

/// nginx on a free loopback port in front of `replicas`, with the shipped upstream settings
/// and `location /`.
fn nginx(replicas: &[SocketAddr]) -> Nginx {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "easymo-nginx-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("temp")).expect("nginx dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let servers: String = replicas
        .iter()
        .map(|addr| format!("        server {addr} max_fails=2 fail_timeout=5s;\n"))
        .collect();
    let temp = dir.join("temp");
    let temp = temp.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n\
             client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n\
             fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n\
             upstream easymo {{\n{servers}        keepalive 64;\n    }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 3m;\n{location}\n    }}\n}}\n",
        dir = dir.display(),
        location = shipped_location(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("nginx runs (scripts/test installs Debian's nginx)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { child, addr, dir }
}

/// Three replicas of `config` on one fresh database, and the environment they share.
fn three_replicas(config: &ConfigDir) -> (Vec<Engine>, String) {
    let database = fresh_database();
    let env = replica_env(&database);
    let replicas = (0..3)
        .map(|_| Engine::start_on(config, "127.0.0.1:0", &borrowed(&env)))
        .collect();
    (replicas, database)
}

fn replica_env(database: &str) -> Vec<(&'static str, String)> {
    engine_env()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "DATABASE_URL" { database } else { v };
            (k, v.to_owned())
        })
        .collect()
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn text(from: &str, id: &str, body: &str) -> Vec<u8> {
    crate::support::text_delivery(from, id, body)
}

#[test]
fn a_senders_limit_holds_whichever_replica_nginx_picks() {
    let config =
        ConfigDir::shipped(|c| c.replacen("server:\n", "server:\n  rate_limits: postgres\n", 1));
    let (replicas, _) = three_replicas(&config);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = nginx(&addrs);
    for n in 0..30 {
        let answer = signed_whatsapp(
            balancer.addr,
            &text("250788555001", &format!("wamid.N{n}"), "hello"),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["status"], "success", "message {n}");
    }
    let answer = signed_whatsapp(balancer.addr, &text("250788555001", "wamid.N30", "hello"));
    assert_eq!(answer.json()["status"], "dropped", "the 31st in a minute");
    for replica in &replicas {
        assert!(
            !replica
                .logs()
                .iter()
                .any(|l| l.contains("ratelimit.shared_unavailable")),
            "a replica counted alone: its decisions were not shared"
        );
    }
    // nginx spread them: every replica answered some.
    for replica in &replicas {
        let served = replica
            .logs()
            .iter()
            .filter(|l| l.contains("\"request.completed\"") && l.contains("wa-webhook-core"))
            .count();
        assert!(served >= 5, "a replica served only {served} of 31");
    }
}

#[test]
fn a_conversation_hops_replicas_in_order_and_a_delivery_given_to_two_is_processed_once() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (replicas, _) = three_replicas(&config);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = nginx(&addrs);
    // Round robin: the steps of the conversation land on different replicas.
    let asked = signed_whatsapp(balancer.addr, &text("250788555002", "wamid.H1", "jobs"));
    assert_eq!(asked.json()["routed_to"], "jobs");
    let tap = crate::support::choice_delivery("250788555002", "wamid.H2", "1");
    let chosen = signed_whatsapp(balancer.addr, &tap);
    assert_eq!(
        chosen.json()["routed_to"],
        "job_category",
        "{}",
        chosen.text()
    );
    assert_ne!(
        served_by(&replicas, "wamid.H1"),
        served_by(&replicas, "wamid.H2"),
        "nginx sent both steps to one replica: the hop was not tested"
    );
    // Meta delivers one message to two replicas at once (a retry racing the first attempt).
    let twice = text("250788555002", "wamid.H3", "menu");
    let threads: Vec<_> = addrs[..2]
        .iter()
        .map(|addr| {
            let (addr, body) = (*addr, twice.clone());
            std::thread::spawn(move || signed_whatsapp(addr, &body).status)
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("client"), 200);
    }
    let handled = replicas[0]
        .rows("select provider_message_id as id, flow from inbound_messages order by received_at");
    assert_eq!(
        handled,
        serde_json::json!([
            {"id": "wamid.H1", "flow": "jobs"},
            {"id": "wamid.H2", "flow": "job_category"},
            {"id": "wamid.H3", "flow": "main_menu"},
        ])
    );
}

/// Which replica answered the delivery of message `id` (its log names the message by its
/// reference, never its id).
fn served_by(replicas: &[Engine], id: &str) -> Option<usize> {
    let reference = easymo_engine::logging::message_ref(id);
    replicas.iter().position(|replica| {
        replica
            .logs()
            .iter()
            .any(|l| l.contains("\"request.completed\"") && l.contains(&reference))
    })
}

/// Clients posting distinct messages through `balancer` until `running` is cleared; each
/// message's id and the status it got.
fn load(
    balancer: SocketAddr,
    clients: usize,
    running: &Arc<AtomicBool>,
    prefix: &'static str,
) -> Vec<std::thread::JoinHandle<Vec<(String, u16)>>> {
    (0..clients)
        .map(|c| {
            let running = running.clone();
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                let mut i = 0;
                while running.load(Ordering::Relaxed) {
                    let id = format!("wamid.{prefix}{c}-{i}");
                    let from = format!("25078{c:02}{i:05}");
                    let answer = signed_whatsapp(balancer, &text(&from, &id, "menu"));
                    sent.push((id, answer.status));
                    i += 1;
                }
                sent
            })
        })
        .collect()
}

fn results(threads: Vec<std::thread::JoinHandle<Vec<(String, u16)>>>) -> Vec<(String, u16)> {
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect()
}

/// Waits until every acknowledged message is on record as handled (a killed replica's are
/// picked up by the leader's redelivery).
fn all_handled(replica: &Engine, acknowledged: &[&str]) {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = replica.rows("select provider_message_id as id from inbound_messages");
        let handled: std::collections::BTreeSet<String> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&&str> = acknowledged
            .iter()
            .filter(|id| !handled.contains(**id))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{} acknowledged messages never handled, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn leads(engine: &Engine) -> bool {
    engine.admin_config()["leader"] == true
}

#[test]
fn killing_the_leading_replica_under_load_loses_no_acknowledged_message() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (mut replicas, _) = three_replicas(&config);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = nginx(&addrs);
    let until = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some(i) = replicas.iter().position(leads) {
            break i;
        }
        assert!(Instant::now() < until, "no replica leads");
        std::thread::sleep(Duration::from_millis(200));
    };
    let running = Arc::new(AtomicBool::new(true));
    const CLIENTS: usize = 6;
    let clients = load(balancer.addr, CLIENTS, &running, "K");
    std::thread::sleep(Duration::from_secs(2));
    let dead = replicas.remove(leader);
    dead.signal("KILL");
    drop(dead);
    std::thread::sleep(Duration::from_secs(3));
    running.store(false, Ordering::Relaxed);
    let sent = results(clients);
    let failed: Vec<&(String, u16)> = sent.iter().filter(|(_, s)| *s != 200).collect();
    assert!(
        sent.len() > 100,
        "the load was light: {} messages",
        sent.len()
    );
    // nginx tries another replica for what the dead one refused or dropped: at most the
    // requests in flight at the kill could fail.
    assert!(
        failed.len() <= CLIENTS,
        "{} failed: {failed:?}",
        failed.len()
    );
    let acknowledged: Vec<&str> = sent
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id.as_str())
        .collect();
    all_handled(&replicas[0], &acknowledged);
    // The leader's duties move within a minute.
    let until = Instant::now() + Duration::from_secs(60);
    while !replicas.iter().any(leads) {
        assert!(Instant::now() < until, "no replica took over the lead");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let (mut replicas, database) = three_replicas(&config);
    let env = replica_env(&database);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = nginx(&addrs);
    let running = Arc::new(AtomicBool::new(true));
    let clients = load(balancer.addr, 4, &running, "R");
    for (i, addr) in addrs.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(500));
        let old = replicas.remove(i);
        old.signal("TERM");
        assert_eq!(old.wait(), Some(0), "a drained replica exits cleanly");
        // The new process of the same replica, on the same address.
        let new = Engine::start_on(&config, &addr.to_string(), &borrowed(&env));
        replicas.insert(i, new);
        // nginx skips a replica that refused connections for its `fail_timeout` (5 s): the
        // next one goes down only once this one takes traffic again, as a rollout waits for
        // readiness.
        std::thread::sleep(Duration::from_secs(6));
    }
    std::thread::sleep(Duration::from_millis(500));
    running.store(false, Ordering::Relaxed);
    let sent = results(clients);
    assert!(
        sent.len() > 50,
        "the load was light: {} messages",
        sent.len()
    );
    let failed: Vec<&(String, u16)> = sent.iter().filter(|(_, s)| *s != 200).collect();
    assert!(failed.is_empty(), "of {}: {}", sent.len(), some(&failed));
    let acknowledged: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    all_handled(&replicas[0], &acknowledged);
}
