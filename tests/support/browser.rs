//! A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol: open a
//! page, evaluate JavaScript in it, take a screenshot. A page that keeps a connection open
//! (server-sent events) never "finishes loading", so `--dump-dom` cannot be used: the test
//! asks the live page instead.

use std::io::BufRead as _;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// One browser with one page.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts Chromium and opens `url` in a 1280×1100 page.
    pub fn open(url: &str) -> Browser {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("easymo-chromium-{}-{n}", std::process::id()));
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromium does not run ({e}): apt-get install chromium (scripts/test does)")
            });
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let address = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("chromium ended before it listened");
            };
            if let Some(address) = line.strip_prefix("DevTools listening on ") {
                break address.trim().to_owned();
            }
        };
        // Keep reading, so a chatty Chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let host = address
            .strip_prefix("ws://")
            .and_then(|a| a.split('/').next())
            .expect("ws address");
        let stream = TcpStream::connect(host).expect("connect to chromium");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let (socket, _) = tungstenite::client(address.as_str(), stream).expect("websocket");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().expect("target").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().expect("session").to_owned();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1100, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser.call("Page.navigate", json!({"url": url}));
        browser
    }

    /// Sends one command (to the page once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to chromium");
        loop {
            let reply = self.socket.read().expect("read from chromium");
            let Message::Text(text) = reply else { continue };
            let reply: Value = serde_json::from_str(&text).expect("json");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The value of `expression` in the page.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; panics with `what` after `timeout`.
    pub fn wait_until(&mut self, expression: &str, timeout: Duration, what: &str) {
        let started = Instant::now();
        while self.evaluate(expression) != json!(true) {
            assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes a PNG of the page to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
