//! Paths into the repository and a runner for the real `easymo` binary.

pub mod browser;
pub mod proxy;
pub mod receivers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A path relative to the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    repo().join(relative)
}

/// Runs `easymo` with `args` in the repository root, with no `${NAME}` secrets in its
/// environment unless `env` sets them.
pub fn easymo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_easymo-under-test"));
    command.args(args).current_dir(repo());
    for var in SECRET_VARS {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("easymo runs")
}

/// The shipped routes.yaml without its rate limits (the WhatsApp endpoint's 30 per sender, the
/// SMS gateway's 100 a minute per address), so a test can send freely.
pub fn unlimited(config: &str) -> String {
    config
        .replace(
            WHATSAPP_LIMIT,
            "      requests: 100000\n      per: 1s\n      key: endpoint",
        )
        .replace(
            "      requests: 100\n      per: 60s\n      key: client_ip",
            "      requests: 100000\n      per: 1s\n      key: client_ip",
        )
}

/// The shipped WhatsApp endpoint's rate limit, as written: tests replace it whole.
pub const WHATSAPP_LIMIT: &str = "      requests: 30\n      per: 60s\n      key: sender\n      on_limit: reply_once\n      reply_template: slow_down";

/// Every environment variable the shipped routes.yaml reads.
pub const SECRET_VARS: &[&str] = &[
    "DATABASE_URL",
    "EASYMO_ADMIN_TOKEN",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "MOMO_WEBHOOK_SECRET",
    "MOMO_CALLBACK_CIDRS",
    "MOMO_SUBSCRIPTION_KEY",
    "MOMO_API_USER",
    "MOMO_API_KEY",
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
];

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fixture from `tests/fixtures/`: real-format deliveries with their signatures, MoMo
/// callbacks and MTN SMS texts (see `tests/fixtures/README.md`).
pub fn corpus(relative: &str) -> PathBuf {
    repo().join("tests/fixtures").join(relative)
}

/// The app secret the corpus signatures were made with.
pub const CORPUS_APP_SECRET: &str = "easymo-test-app-secret";
/// The verify token the corpus handshake cases expect.
pub const CORPUS_VERIFY_TOKEN: &str = "easymo-verify-token";
/// The admin token the test engines get.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The Graph API access token test engines send with.
pub const GRAPH_TOKEN: &str = "test-graph-token";
/// Where a test engine sends replies unless the test points it at a [`FakeGraph`]: a port
/// nothing listens on, so that no test ever reaches Meta (replies fail to connect and are
/// retried, then die as expired or exhausted).
pub const NO_GRAPH_API: &str = "http://127.0.0.1:9";

/// The `X-Hub-Signature-256` value SIGNATURES.txt gives for a corpus file.
pub fn corpus_signature(file: &str) -> String {
    let listing =
        std::fs::read_to_string(corpus("whatsapp/SIGNATURES.txt")).expect("SIGNATURES.txt");
    listing
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (sig, path) = l.split_once("  ")?;
            (path.trim() == file).then(|| sig.to_owned())
        })
        .unwrap_or_else(|| panic!("no signature for {file}"))
}

/// A copy of the shipped routes.yaml and flows in a scratch directory, editable by a test.
pub struct ConfigDir {
    /// The directory.
    pub dir: PathBuf,
}

impl ConfigDir {
    /// Copies the shipped config, with `edit` applied to routes.yaml.
    pub fn shipped(edit: impl Fn(&str) -> String) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("easymo-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("flows")).expect("scratch dir");
        for entry in std::fs::read_dir(repo_path("flows"))
            .expect("flows")
            .flatten()
        {
            std::fs::copy(entry.path(), dir.join("flows").join(entry.file_name()))
                .expect("copy flow");
        }
        // The alert rules' runbooks, which lint checks routes.yaml's neighbours for.
        std::fs::create_dir_all(dir.join("docs/runbooks")).expect("scratch dir");
        for entry in std::fs::read_dir(repo_path("docs/runbooks"))
            .expect("runbooks")
            .flatten()
        {
            std::fs::copy(
                entry.path(),
                dir.join("docs/runbooks").join(entry.file_name()),
            )
            .expect("copy runbook");
        }
        let config = ConfigDir { dir };
        let shipped = std::fs::read_to_string(repo_path("routes.yaml")).expect("routes.yaml");
        config.write(&edit(&shipped.replace(
            "    sending:\n",
            &format!("    sending:\n      base_url: {NO_GRAPH_API}\n"),
        )));
        config
    }

    /// routes.yaml in the directory.
    pub fn routes(&self) -> PathBuf {
        self.dir.join("routes.yaml")
    }

    /// Current routes.yaml text.
    pub fn read(&self) -> String {
        std::fs::read_to_string(self.routes()).expect("routes.yaml")
    }

    /// Replaces routes.yaml atomically (write a temporary file, rename it over), as editors do.
    pub fn write(&self, text: &str) {
        let tmp = self.dir.join(".routes.yaml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.routes()).expect("rename");
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `easymo serve` on a free loopback port.
pub struct Engine {
    child: std::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its database.
    pub database_url: String,
}

/// The environment every test engine gets: the corpus secrets and harmless placeholders.
pub fn engine_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("EASYMO_ADMIN_TOKEN", ADMIN_TOKEN),
        ("WHATSAPP_VERIFY_TOKEN", CORPUS_VERIFY_TOKEN),
        ("WHATSAPP_APP_SECRET", CORPUS_APP_SECRET),
        ("WHATSAPP_ACCESS_TOKEN", GRAPH_TOKEN),
        ("MOMO_WEBHOOK_SECRET", "momo-test-secret"),
        // The tests post callbacks from loopback, standing in for MTN's hosts.
        ("MOMO_CALLBACK_CIDRS", "127.0.0.1/32, ::1/128"),
        ("MOMO_SUBSCRIPTION_KEY", "momo-test-subscription-key"),
        ("MOMO_API_USER", "momo-test-user"),
        ("MOMO_API_KEY", "momo-test-key"),
        ("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack"),
        ("PAGERDUTY_ROUTING_KEY", "pd-test-key"),
    ]
}

/// The Postgres server the tests create their databases on: `DATABASE_URL` (scripts/test sets
/// it, starting a throwaway cluster when needed), else the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A new database with the schema and the demo data, made by the real binary
/// (`easymo migrate --create`, `easymo seed --demo`).
pub fn fresh_database() -> String {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let server = server_url();
    let (base, query) = server
        .split_once('?')
        .map_or((server.as_str(), ""), |(b, q)| (b, q));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut url = format!("{base}/easymo_test_{}_{n}_{nanos}", std::process::id());
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    for args in [
        vec!["migrate", "--create", "--database-url", &url],
        vec!["seed", "--demo", "--database-url", &url],
    ] {
        let out = easymo(&args, &[]);
        assert!(
            out.status.success(),
            "easymo {args:?} failed (is Postgres at {server} reachable? set DATABASE_URL):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    url
}

/// Runs `work` on a fresh connection to `url`, blocking until it is done.
fn on_database<T>(url: &str, work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        work(&mut conn).await
    })
}

/// Runs `sql` on `url` and returns its rows as JSON (Postgres converts them).
pub fn rows(url: &str, sql: &str) -> serde_json::Value {
    on_database(url, async |conn| {
        let wrapped = format!("select coalesce(jsonb_agg(q), '[]'::jsonb) from ({sql}) q");
        sqlx::query_scalar::<_, serde_json::Value>(&wrapped)
            .fetch_one(conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

/// Runs statements on `url` (test fixtures).
pub fn exec(url: &str, sql: &str) {
    on_database(url, async |conn| {
        sqlx::raw_sql(sql)
            .execute(conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
}

impl Engine {
    /// Reads `sql` every 200 ms until `done` holds for its rows, and returns them; fails,
    /// saying `what` did not happen, with the last rows, after `timeout`.
    pub fn rows_when(
        &self,
        sql: &str,
        timeout: std::time::Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let rows = self.rows(sql);
            if done(&rows) {
                return rows;
            }
            assert!(
                started.elapsed() < timeout,
                "{what} within {timeout:?}: {rows}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Starts the engine on `config` with a fresh database, listening on `listen` (e.g.
    /// `127.0.0.1:0`), and waits until it says where it listens.
    pub fn start(config: &ConfigDir, listen: &str) -> Engine {
        Self::start_with(config, listen, &engine_env())
    }

    /// Like [`Engine::start`] with an explicit environment.
    pub fn start_with(config: &ConfigDir, listen: &str, env: &[(&str, &str)]) -> Engine {
        let database_url = fresh_database();
        let mut env: Vec<(&str, &str)> = env
            .iter()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .copied()
            .collect();
        env.push(("DATABASE_URL", &database_url));
        let mut engine = Self::start_on(config, listen, &env);
        engine.database_url = database_url.clone();
        engine
    }

    /// Starts the engine with exactly `env` (its DATABASE_URL included).
    pub fn start_on(config: &ConfigDir, listen: &str, env: &[(&str, &str)]) -> Engine {
        Self::start_through(&[], config, listen, env)
    }

    /// Like [`Engine::start`], run through `launcher` (e.g. `prlimit --nofile=256:1024`).
    pub fn start_under(launcher: &[&str], config: &ConfigDir) -> Engine {
        let database_url = fresh_database();
        let mut env: Vec<(&str, &str)> = engine_env()
            .into_iter()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        env.push(("DATABASE_URL", &database_url));
        let mut engine = Self::start_through(launcher, config, "127.0.0.1:0", &env);
        engine.database_url = database_url.clone();
        engine
    }

    fn start_through(
        launcher: &[&str],
        config: &ConfigDir,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Engine {
        use std::io::BufRead as _;
        let binary = env!("CARGO_BIN_EXE_easymo-under-test");
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["serve", "--config"])
            .arg(config.routes())
            .args(["--listen", listen, "--drain", "5s", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for var in SECRET_VARS {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("engine starts");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("\"server.listening\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("logs").push(format!("stderr: {line}"));
            }
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "engine did not start:\n{}",
                    logs.lock().expect("logs").join("\n")
                )
            });
        let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = event["metadata"]["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("socket address");
        let database_url = env
            .iter()
            .find(|(k, _)| *k == "DATABASE_URL")
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_default();
        Engine {
            child,
            addr,
            logs,
            database_url,
        }
    }

    /// Rows of `sql` in this engine's database.
    pub fn rows(&self, sql: &str) -> serde_json::Value {
        rows(&self.database_url, sql)
    }

    /// Every log line so far (stderr lines prefixed with `stderr: `).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// A WhatsApp delivery with a forged signature: refused with 403.
    pub fn forged_whatsapp(&self) -> HttpResponse {
        self.request("POST", "/webhooks/whatsapp")
            .header("X-Hub-Signature-256", "sha256=00")
            .body(b"{}")
            .send()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(std::time::Instant::now() < until, "engine did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `GET /admin/config` with the admin token.
    pub fn admin_config(&self) -> serde_json::Value {
        self.request("GET", "/admin/config")
            .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .send()
            .json()
    }

    /// A request to this engine.
    pub fn request(&self, method: &str, path: &str) -> HttpRequest {
        http(self.addr, method, path)
    }

    /// A signed WhatsApp POST of `body` to the shipped endpoint.
    pub fn whatsapp(&self, body: &[u8]) -> HttpResponse {
        signed_whatsapp(self.addr, body)
    }
}

/// Posts a WhatsApp delivery signed with the corpus app secret to the engine at `addr`.
pub fn signed_whatsapp(addr: std::net::SocketAddr, body: &[u8]) -> HttpResponse {
    let signature = format!(
        "sha256={}",
        easymo_engine::auth::signature::sign_hex(CORPUS_APP_SECRET.as_bytes(), body)
    );
    http(addr, "POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", &signature)
        .body(body)
        .send()
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to whatever listens at `addr`.
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> HttpRequest {
    HttpRequest {
        addr,
        method: method.to_owned(),
        path: path.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// A minimal HTTP/1.1 client over a plain TCP connection: tests see exactly the bytes sent.
pub struct HttpRequest {
    addr: std::net::SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HttpRequest {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// Sends the request on a new connection and reads the whole response.
    pub fn send(self) -> HttpResponse {
        let mut stream = self.connect();
        self.write_head(&mut stream, Some(self.body.len()));
        std::io::Write::write_all(&mut stream, &self.body).expect("write body");
        read_response(stream)
    }

    /// Sends the head and the first `split` body bytes, then calls `pause` before the rest: a
    /// request that is in flight while `pause` runs.
    pub fn send_slowly(self, split: usize, pause: impl FnOnce()) -> HttpResponse {
        let mut stream = self.connect();
        self.write_head(&mut stream, Some(self.body.len()));
        std::io::Write::write_all(&mut stream, &self.body[..split]).expect("write first part");
        pause();
        std::io::Write::write_all(&mut stream, &self.body[split..]).expect("write rest");
        read_response(stream)
    }

    /// Sends the body with chunked transfer encoding (no Content-Length).
    pub fn send_chunked(self) -> HttpResponse {
        let mut stream = self.connect();
        self.write_head(&mut stream, None);
        for chunk in self.body.chunks(1000) {
            let _ =
                std::io::Write::write_all(&mut stream, format!("{:x}\r\n", chunk.len()).as_bytes());
            let _ = std::io::Write::write_all(&mut stream, chunk);
            let _ = std::io::Write::write_all(&mut stream, b"\r\n");
        }
        let _ = std::io::Write::write_all(&mut stream, b"0\r\n\r\n");
        read_response(stream)
    }

    fn connect(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        stream
    }

    fn write_head(&self, stream: &mut std::net::TcpStream, length: Option<usize>) {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
            self.method, self.path, self.addr
        );
        match length {
            Some(n) => head.push_str(&format!("content-length: {n}\r\n")),
            None => head.push_str("transfer-encoding: chunked\r\n"),
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        std::io::Write::write_all(stream, head.as_bytes()).expect("write head");
    }
}

/// The status and headers (names lowercased) of a response head.
pub fn parse_response_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Reads a whole response from `stream` (to its end: the server closes it).
pub fn read_response(mut stream: std::net::TcpStream) -> HttpResponse {
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let (status, headers) = parse_response_head(&String::from_utf8_lossy(&raw[..split]));
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

/// Now, in Unix seconds, as WhatsApp's `timestamp` field carries it.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A one-message text delivery from `from`, sent now.
pub fn text_delivery(from: &str, id: &str, body: &str) -> Vec<u8> {
    delivery_of(
        from,
        serde_json::json!({"id": id, "type": "text", "text": {"body": body}}),
    )
}

/// A tap on list row `row` from `from`, sent now.
pub fn choice_delivery(from: &str, id: &str, row: &str) -> Vec<u8> {
    delivery_of(
        from,
        serde_json::json!({"id": id, "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": row, "title": row}}}),
    )
}

/// A one-message delivery from `from` to the test number, with `message`'s fields (`id`,
/// `type` and its body) plus `from` and the timestamp.
fn delivery_of(from: &str, mut message: serde_json::Value) -> Vec<u8> {
    message["from"] = serde_json::json!(from);
    message["timestamp"] = serde_json::json!(now_unix().to_string());
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "250788000000", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Test User"}, "wa_id": from}],
            "messages": [message]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

/// A real HTTP server on 127.0.0.1 standing in for the MTN MoMo Open API: tokens, and the
/// status of each reference id as the test scripts it (answer, status code, delay).
pub struct FakeMomo {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<FakeMomoState>>,
}

#[derive(Default)]
struct FakeMomoState {
    statuses: std::collections::HashMap<String, (u16, String, std::time::Duration)>,
    /// How requests to pay are answered, in turn (then 202).
    request_answers: std::collections::VecDeque<(u16, std::time::Duration)>,
    /// Bodies of requests to pay, by reference id.
    request_bodies: Vec<(String, String)>,
    requests: Vec<String>,
}

impl FakeMomo {
    /// Starts the server; it stops with the test process.
    pub fn start() -> FakeMomo {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = std::sync::Arc::new(std::sync::Mutex::new(FakeMomoState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || Self::serve(stream, &state));
            }
        });
        FakeMomo { addr, state }
    }

    /// The base URL to put in routes.yaml.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `GET …/{reference_id}` answers from now on.
    pub fn answer(&self, reference_id: &str, status: u16, body: &str, delay: std::time::Duration) {
        if let Ok(mut state) = self.state.lock() {
            state
                .statuses
                .insert(reference_id.to_owned(), (status, body.to_owned(), delay));
        }
    }

    /// How the next requests to pay are answered, in turn (afterwards: 202 at once).
    pub fn answer_requests(&self, answers: &[(u16, std::time::Duration)]) {
        if let Ok(mut state) = self.state.lock() {
            state.request_answers.extend(answers.iter().copied());
        }
    }

    /// Every request to pay received: (X-Reference-Id, body).
    pub fn requests_to_pay(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .map(|s| s.request_bodies.clone())
            .unwrap_or_default()
    }

    /// Every request so far, as `METHOD path bearer-token target-environment`.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    fn serve(mut stream: std::net::TcpStream, state: &std::sync::Mutex<FakeMomoState>) {
        use std::io::Write as _;
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let Some(request) = FakeRequest::read(&mut reader) else {
            return;
        };
        let header = |name: &str| request.header(name);
        let body = request.body.clone();
        let request_line = request.line.clone();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let bearer = header("authorization");
        let environment = header("x-target-environment");
        let (status, answer, delay) = {
            let Ok(mut state) = state.lock() else { return };
            state.requests.push(
                format!("{method} {path} {bearer} {environment}")
                    .trim()
                    .to_owned(),
            );
            if method == "POST" && path.ends_with("/token/") {
                let authorized = header("authorization").starts_with("Basic ")
                    && !header("ocp-apim-subscription-key").is_empty();
                if authorized {
                    (
                        200,
                        r#"{"access_token":"fake-token","token_type":"access_token","expires_in":3600}"#.to_owned(),
                        std::time::Duration::ZERO,
                    )
                } else {
                    (
                        401,
                        r#"{"error":"unauthorized"}"#.to_owned(),
                        std::time::Duration::ZERO,
                    )
                }
            } else if bearer == "Bearer fake-token"
                && method == "POST"
                && path.ends_with("/collection/v1_0/requesttopay")
            {
                state.request_bodies.push((
                    header("x-reference-id"),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let (status, delay) = state
                    .request_answers
                    .pop_front()
                    .unwrap_or((202, std::time::Duration::ZERO));
                let answer = if status == 409 {
                    r#"{"code":"RESOURCE_ALREADY_EXIST","message":"Duplicated reference id. Creation of resource failed."}"#
                } else {
                    ""
                };
                (status, answer.to_owned(), delay)
            } else if bearer != "Bearer fake-token" {
                (
                    401,
                    r#"{"code":"UNAUTHORIZED"}"#.to_owned(),
                    std::time::Duration::ZERO,
                )
            } else {
                let id = path.rsplit('/').next().unwrap_or_default();
                state.statuses.get(id).cloned().unwrap_or((
                    404,
                    r#"{"code":"RESOURCE_NOT_FOUND","message":"Requested resource was not found."}"#.to_owned(),
                    std::time::Duration::ZERO,
                ))
            }
        };
        std::thread::sleep(delay);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = stream.write_all(response.as_bytes());
    }
}

/// How the fake Graph API answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphAnswer {
    /// 200 with a fresh wamid.
    Accept,
    /// A Graph error body with this HTTP status and `error.code`.
    Error(u16, i64),
    /// This HTTP status and an empty body (a proxy's answer).
    Bare(u16),
    /// No answer for this long, then the connection closes.
    Hang(std::time::Duration),
    /// The connection closes as soon as the request is read.
    Drop,
    /// Accepted, after this long.
    Slow(std::time::Duration),
}

/// One request the fake Graph API received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    /// `POST /v25.0/123/messages`.
    pub line: String,
    /// The `Authorization` header.
    pub authorization: String,
    /// The body.
    pub body: serde_json::Value,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The answer it got.
    pub answer: GraphAnswer,
    /// The wamid it was given, when accepted.
    pub wamid: Option<String>,
}

/// A real HTTP server on 127.0.0.1 standing in for the WhatsApp Cloud API: records every
/// request and answers as scripted per recipient (`to`), else with 200 and a wamid.
pub struct FakeGraph {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<FakeGraphState>>,
}

#[derive(Default)]
struct FakeGraphState {
    scripts: std::collections::HashMap<String, std::collections::VecDeque<GraphAnswer>>,
    /// The answer for recipients without a script (default: accept).
    otherwise: Option<GraphAnswer>,
    /// Bearer tokens answered 401 with code 190 (expired), whatever the script says.
    expired_tokens: Vec<String>,
    requests: Vec<GraphRequest>,
    accepted: u64,
}

impl FakeGraph {
    /// Starts the server; it stops with the test process.
    pub fn start() -> FakeGraph {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts the server on `address`.
    pub fn start_on(address: &str) -> FakeGraph {
        let listener = std::net::TcpListener::bind(address).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = std::sync::Arc::new(std::sync::Mutex::new(FakeGraphState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || Self::serve(stream, &state));
            }
        });
        FakeGraph { addr, state }
    }

    /// The base URL to put in `sending.base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers for messages to `to`, in turn (then the default).
    pub fn script(&self, to: &str, answers: &[GraphAnswer]) {
        if let Ok(mut state) = self.state.lock() {
            state
                .scripts
                .entry(to.to_owned())
                .or_default()
                .extend(answers.iter().cloned());
        }
    }

    /// Answers every request with this bearer token 401, code 190 (an expired token).
    pub fn expire_token(&self, token: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.expired_tokens.push(format!("Bearer {token}"));
        }
    }

    /// The answer for every recipient without a script, from now on.
    pub fn otherwise(&self, answer: GraphAnswer) {
        if let Ok(mut state) = self.state.lock() {
            state.otherwise = Some(answer);
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Waits until `n` requests arrived (or `timeout` passed); returns them all.
    pub fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<GraphRequest> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || std::time::Instant::now() > deadline {
                return requests;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn serve(stream: std::net::TcpStream, state: &std::sync::Mutex<FakeGraphState>) {
        use std::io::Write as _;
        let mut writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(_) => return,
        };
        let mut reader = std::io::BufReader::new(stream);
        // Keep-alive: one request after another on the connection, as reqwest sends them.
        loop {
            let Some(request) = FakeRequest::read(&mut reader) else {
                return;
            };
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let to = body["to"].as_str().unwrap_or_default().to_owned();
            let (answer, wamid) = {
                let Ok(mut state) = state.lock() else { return };
                let expired = state
                    .expired_tokens
                    .contains(&request.header("authorization"));
                let answer = if expired {
                    GraphAnswer::Error(401, 190)
                } else {
                    state
                        .scripts
                        .get_mut(&to)
                        .and_then(|queue| queue.pop_front())
                        .or_else(|| state.otherwise.clone())
                        .unwrap_or(GraphAnswer::Accept)
                };
                let accepted = matches!(answer, GraphAnswer::Accept | GraphAnswer::Slow(_));
                let wamid = accepted.then(|| {
                    state.accepted += 1;
                    format!("wamid.fake{:06}", state.accepted)
                });
                state.requests.push(GraphRequest {
                    line: request.line.clone(),
                    authorization: request.header("authorization"),
                    body: body.clone(),
                    at: std::time::Instant::now(),
                    answer: answer.clone(),
                    wamid: wamid.clone(),
                });
                (answer, wamid)
            };
            if let GraphAnswer::Slow(wait) = answer {
                std::thread::sleep(wait);
            }
            let (status, text) = match &answer {
                GraphAnswer::Accept | GraphAnswer::Slow(_) => (
                    200,
                    serde_json::json!({
                        "messaging_product": "whatsapp",
                        "contacts": [{"input": to, "wa_id": to}],
                        "messages": [{"id": wamid.unwrap_or_default()}],
                    })
                    .to_string(),
                ),
                GraphAnswer::Error(status, code) => (
                    *status,
                    serde_json::json!({"error": {
                        "message": format!("(#{code}) scripted by the test"),
                        "type": "OAuthException",
                        "code": code,
                        "error_data": {"messaging_product": "whatsapp", "details": format!("scripted error {code}")},
                        "fbtrace_id": "AbCdEf"}})
                    .to_string(),
                ),
                GraphAnswer::Bare(status) => (*status, String::new()),
                GraphAnswer::Hang(wait) => {
                    std::thread::sleep(*wait);
                    return;
                }
                GraphAnswer::Drop => return,
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// One HTTP/1.1 request as the fakes read it: request line, headers, body.
struct FakeRequest {
    line: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl FakeRequest {
    /// The next request on the connection; `None` once it is closed.
    fn read(reader: &mut impl std::io::BufRead) -> Option<FakeRequest> {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let mut request = FakeRequest {
            line: head.first().cloned().unwrap_or_default(),
            headers: head.into_iter().skip(1).collect(),
            body: Vec::new(),
        };
        let length: usize = request.header("content-length").parse().unwrap_or(0);
        request.body = vec![0; length];
        reader.read_exact(&mut request.body).ok()?;
        Some(request)
    }

    /// A header's value, or empty.
    fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    }
}
