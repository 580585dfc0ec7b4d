//! A real HTTP fake of the alert receivers: Slack's incoming webhooks (`/slack`, answering a
//! plain `ok`), PagerDuty's Events API v2 (`/pagerduty`, 202 and `{"status":"success"}`) and an
//! Alertmanager webhook receiver (`/alertmanager`, 200). Every request is kept; a receiver can
//! be taken down (answers 500) and brought back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::FakeRequest;

/// One notification as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/slack`, `/pagerduty` or `/alertmanager`.
    pub path: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Whether the receiver took it (it was up).
    pub taken: bool,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    down: HashSet<String>,
}

/// The receivers, on one loopback port.
pub struct FakeReceivers {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeReceivers {
    /// Starts the receivers on a free port.
    pub fn start() -> FakeReceivers {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeReceivers { addr, state }
    }

    /// The URL of one receiver: `slack`, `pagerduty` or `alertmanager`.
    pub fn url(&self, receiver: &str) -> String {
        format!("http://{}/{receiver}", self.addr)
    }

    /// Makes `receiver` answer 500 until [`FakeReceivers::up`].
    pub fn down(&self, receiver: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.down.insert(format!("/{receiver}"));
        }
    }

    /// Makes `receiver` take notifications again.
    pub fn up(&self, receiver: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.down.remove(&format!("/{receiver}"));
        }
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for what was received, or `timeout` passes; returns it.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if done(&received) || Instant::now() > deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(stream: std::net::TcpStream, state: &Mutex<State>) {
    use std::io::Write as _;
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(stream);
    while let Some(request) = FakeRequest::read(&mut reader) {
        let path = request
            .line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::from_slice(&request.body).unwrap_or_default();
        let taken = {
            let Ok(mut state) = state.lock() else { return };
            let taken = !state.down.contains(&path);
            state.received.push(Received {
                path: path.clone(),
                body,
                taken,
            });
            taken
        };
        let (status, text) = match (taken, path.as_str()) {
            (false, _) => (500, "internal error".to_owned()),
            (true, "/slack") => (200, "ok".to_owned()),
            (true, "/pagerduty") => (
                202,
                r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#.to_owned(),
            ),
            (true, _) => (200, String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
