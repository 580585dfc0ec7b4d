//! `easymo tap` against a running engine: each routed message as it happens, filtered, with
//! phone numbers masked.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{signed_whatsapp, text_delivery, ConfigDir, Engine, ADMIN_TOKEN};

/// A running `easymo tap` and the lines it prints.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tap {
    fn start(engine: &Engine, args: &[&str]) -> Tap {
        let url = format!("http://{}", engine.addr);
        let mut child = Command::new(env!("CARGO_BIN_EXE_easymo-under-test"))
            .args(["tap", "--url", &url, "--token", ADMIN_TOKEN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tap starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = ready_tx.send(line);
            }
        });
        let said = ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the tap says it is connected");
        assert!(said.contains("tap: connected"), "{said}");
        Tap { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from the tap")
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_tap_shows_each_routed_message_filtered_and_masked() {
    let config = ConfigDir::shipped(crate::support::unlimited);
    let engine = Engine::start(&config, "127.0.0.1:0");
    let jobs_only = Tap::start(&engine, &["--flow", "jobs"]);
    let everything = Tap::start(&engine, &["--json"]);

    let shop = text_delivery("250788123457", "wamid.tap-1", "Shop!");
    assert_eq!(signed_whatsapp(engine.addr, &shop).status, 200);
    let jobs = text_delivery("250788123456", "wamid.tap-2", "  Find JOBS ");
    assert_eq!(signed_whatsapp(engine.addr, &jobs).status, 200);

    let line = jobs_only.next();
    assert!(
        line.contains(
            " wa-webhook-core 2507****456 \"find jobs\" route exact \"find jobs\" -> jobs [job_categories] answered "
        ),
        "{line}"
    );
    assert!(!line.contains("250788123456"), "a full number: {line}");

    let first: serde_json::Value = serde_json::from_str(&everything.next()).expect("json");
    let second: serde_json::Value = serde_json::from_str(&everything.next()).expect("json");
    assert_eq!(
        (&first["flow"], &second["flow"]),
        (&serde_json::json!("shop"), &serde_json::json!("jobs"))
    );
    assert_eq!(first["sender"], "2507****457");
    assert_eq!(second["replies"], serde_json::json!(["job_categories"]));
    assert!(second["duration_ms"].as_f64().is_some_and(|d| d > 0.0));

    // Without the admin token there is no tap.
    let refused = Command::new(env!("CARGO_BIN_EXE_easymo-under-test"))
        .args([
            "tap",
            "--url",
            &format!("http://{}", engine.addr),
            "--token",
            "wrong",
        ])
        .output()
        .expect("tap runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
}
