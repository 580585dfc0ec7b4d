//! Connections opened for real against `easymo serve`: idle sockets at the descriptor limit,
//! slow headers and bodies, many partial bodies at once, broken requests, and the drain.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{
    corpus, corpus_signature, parse_response_head, read_response, ConfigDir, Engine,
};

/// The shipped config with `server:` settings added.
fn with_server_settings(settings: &str) -> ConfigDir {
    ConfigDir::shipped(|t| {
        crate::support::unlimited(t).replace(
            "  max_body_bytes: 3145728\n",
            &format!("  max_body_bytes: 3145728\n{settings}"),
        )
    })
}

fn connect(engine: &Engine) -> TcpStream {
    let stream = TcpStream::connect(engine.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Whether the server closed `stream` (end of stream or reset) within `within`, reading and
/// discarding whatever it sent first.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn healthz_status(engine: &Engine) -> Option<u16> {
    let mut stream = TcpStream::connect(engine.addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: engine\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1)?.parse().ok()
}

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(corpus(&format!("whatsapp/{name}"))).expect("corpus file")
}

fn signed_delivery(engine: &Engine) -> u16 {
    engine
        .request("POST", "/webhooks/whatsapp")
        .header("content-type", "application/json")
        .header("x-hub-signature-256", &corpus_signature("01_text.json"))
        .body(&wire("01_text.json"))
        .send()
        .status
}

#[test]
fn idle_connections_past_the_descriptor_limit_leave_the_engine_answering() {
    let config = with_server_settings("  header_timeout: 3s\n");
    // A soft limit of 256 under a hard limit of 1024: the engine raises its own to 1024.
    let engine = Engine::start_under(&["prlimit", "--nofile=256:1024"], &config);
    assert!(
        engine.wait_for_log("\"max_connections\":832", Duration::from_secs(2)),
        "{:?}",
        engine.logs()
    );
    assert!(engine.wait_for_log("\"fd_limit\":1024", Duration::from_secs(1)));

    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(engine.addr).ok())
        .collect();
    assert!(idle.len() > 1000, "opened {}", idle.len());

    // Over the cap, the newest connections are shed, but a probe still gets through.
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < Duration::from_secs(3) && status != Some(200) {
        status = healthz_status(&engine);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status,
        Some(200),
        "/healthz with 1,100 idle connections open"
    );

    // Connections that never send a request are closed at the header timeout.
    let mut first = idle.into_iter().next().expect("an idle connection");
    assert!(
        closed_by_server(&mut first, Duration::from_secs(6)),
        "an idle connection outlived the header timeout"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(signed_delivery(&engine), 200, "service resumes");
}

#[test]
fn slow_headers_and_slow_bodies_are_cut_off_with_a_json_408() {
    let config = with_server_settings("  header_timeout: 1s\n  body_timeout: 1s\n");
    let engine = Engine::start(&config, "127.0.0.1:0");
    let mut slow_heads: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = connect(&engine);
            stream
                .write_all(b"POST /webhooks/whatsapp HTTP/1.1\r\nhost: engine\r\nx-a: ")
                .expect("partial head");
            stream
        })
        .collect();
    let body = wire("01_text.json");
    let slow_bodies: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = connect(&engine);
            let head = format!(
                "POST /webhooks/whatsapp HTTP/1.1\r\nhost: engine\r\ncontent-type: application/json\r\nx-hub-signature-256: {}\r\ncontent-length: {}\r\n\r\n",
                corpus_signature("01_text.json"),
                body.len()
            );
            stream.write_all(head.as_bytes()).expect("head");
            stream.write_all(&body[..10]).expect("part of the body");
            stream
        })
        .collect();
    // One byte a second is no way around the deadline: it counts for the whole head.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        let _ = slow_heads[0].write_all(b"a");
    }
    for (what, streams) in [("headers", slow_heads), ("body", slow_bodies)] {
        for stream in streams {
            let response = read_response(stream);
            assert_eq!(response.status, 408, "slow {what}: {}", response.text());
            assert_eq!(response.json()["error"], "request_timeout", "slow {what}");
        }
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let config = with_server_settings("  idle_timeout: 1s\n");
    let engine = Engine::start(&config, "127.0.0.1:0");
    let mut stream = connect(&engine);
    let (status, _) = keep_alive_get(&mut stream, "/healthz");
    assert_eq!(status, 200);
    assert!(
        !closed_by_server(&mut stream, Duration::from_millis(300)),
        "closed before the idle timeout"
    );
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(3)),
        "still open well after the idle timeout"
    );
}

#[test]
fn many_partial_bodies_at_once_hold_bounded_memory() {
    let config = with_server_settings("  body_timeout: 8s\n  max_body_memory_bytes: 16777216\n");
    let engine = Engine::start(&config, "127.0.0.1:0");
    let baseline = resident_kib(engine.pid());
    let addr = engine.addr;
    let uploads: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .expect("write timeout");
                let head = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: engine\r\ncontent-type: application/json\r\nx-hub-signature-256: sha256=00\r\ncontent-length: 3000000\r\n\r\n";
                stream.write_all(head.as_bytes()).expect("head");
                stream.write_all(&[b' '; 64 * 1024]).expect("first part");
                stream
                    .set_read_timeout(Some(Duration::from_millis(1500)))
                    .expect("read timeout");
                let mut answer = [0u8; 512];
                match stream.read(&mut answer) {
                    Ok(n) if n > 0 => Some(String::from_utf8_lossy(&answer[..n]).into_owned()),
                    _ => {
                        // Taken in: keep it busy holding two megabytes.
                        let _ = stream.write_all(&vec![b' '; 2 * 1024 * 1024]);
                        std::thread::sleep(Duration::from_secs(3));
                        None
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(3000));
    let during = resident_kib(engine.pid());
    let answers: Vec<Option<String>> = uploads
        .into_iter()
        .map(|t| t.join().expect("upload thread"))
        .collect();
    let refused = answers
        .iter()
        .flatten()
        .filter(|a| a.starts_with("HTTP/1.1 503") && a.contains("\"overloaded\""))
        .count();
    let grown_mib = during.saturating_sub(baseline) / 1024;
    println!("200 partial bodies: the engine grew {grown_mib} MiB; {refused} refused at once");
    assert!(
        grown_mib < 64,
        "200 partial bodies grew the engine by {grown_mib} MiB (budget 16 MiB)"
    );
    assert!(
        refused >= 180,
        "only {refused} of 200 were refused at once for memory"
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(signed_delivery(&engine), 200, "the memory is given back");
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn broken_requests_are_refused_in_json() {
    let engine = Engine::start(&with_server_settings(""), "127.0.0.1:0");
    let mut stream = connect(&engine);
    stream.write_all(b"NOT A REQUEST\r\n\r\n").expect("garbage");
    let response = read_response(stream);
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "malformed_request");

    let mut stream = connect(&engine);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: engine\r\nx-filler: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    stream.write_all(huge.as_bytes()).expect("huge head");
    let response = read_response(stream);
    assert_eq!(response.status, 431);
    assert_eq!(response.json()["error"], "headers_too_large");
    assert!(response.header("x-request-id").is_some());

    // The same, as a later request on a keep-alive connection (parsed by hyper, not by the
    // accept side).
    for (second, status, error) in [
        (huge.as_str(), 431, "headers_too_large"),
        ("NOT A REQUEST\r\n\r\n", 400, "malformed_request"),
    ] {
        let mut stream = connect(&engine);
        assert_eq!(keep_alive_get(&mut stream, "/healthz").0, 200);
        stream.write_all(second.as_bytes()).expect("second request");
        let response = read_response(stream);
        assert_eq!(response.status, status, "{}", response.text());
        assert_eq!(response.json()["error"], error);
    }
}

/// Sends a keep-alive GET on `stream` and reads its response by its length.
fn keep_alive_get(stream: &mut TcpStream, path: &str) -> (u16, Vec<(String, String)>) {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: engine\r\n\r\n").as_bytes())
        .expect("request");
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("response head");
        raw.push(byte[0]);
    }
    let (status, headers) = parse_response_head(&String::from_utf8_lossy(&raw));
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("response body");
    (status, headers)
}

#[test]
fn the_drain_answers_keep_alive_connections_once_more_then_closes_them() {
    let engine = Engine::start(&with_server_settings(""), "127.0.0.1:0");
    let mut busy = connect(&engine);
    let mut idle = connect(&engine);
    assert_eq!(keep_alive_get(&mut busy, "/healthz").0, 200);
    assert_eq!(keep_alive_get(&mut idle, "/healthz").0, 200);
    engine.signal("TERM");
    assert!(engine.wait_for_log("\"server.shutting_down\"", Duration::from_secs(5)));
    // A client that sends on its pooled connection right now is answered, told to close, and
    // the connection is closed after that answer, cleanly.
    let (status, headers) = keep_alive_get(&mut busy, "/healthz");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"),
        "{headers:?}"
    );
    assert!(closed_by_server(&mut busy, Duration::from_secs(2)));
    // An idle one is closed without a word once the moment has passed.
    assert!(closed_by_server(&mut idle, Duration::from_secs(3)));
    assert_eq!(engine.wait(), Some(0));
}
