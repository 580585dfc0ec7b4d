//! The WhatsApp Cloud API as the load tests need it: every POST is answered at once with 200
//! and a fresh wamid, as Meta answers an accepted message. On one thread, so that it takes as
//! little as it can of the cores it shares with the engine under test. On SIGTERM or Ctrl-C it
//! prints how many requests it answered and the CPU time it used, and exits.
//!
//!   cargo run --release --example fake_graph            # 127.0.0.1:18090, or PORT

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18090);
    let answered = Arc::new(AtomicU64::new(0));
    let app = Router::new().fallback(accept).with_state(answered.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("[fake-graph] listening on 127.0.0.1:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(easymo_engine::server::shutdown_signal())
        .await?;
    eprintln!(
        "[fake-graph] {} requests, {:.2} s CPU",
        answered.load(Ordering::Relaxed),
        cpu_seconds()
    );
    Ok(())
}

async fn accept(
    State(answered): State<Arc<AtomicU64>>,
    _body: axum::body::Bytes,
) -> impl IntoResponse {
    let n = answered.fetch_add(1, Ordering::Relaxed) + 1;
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"messaging_product":"whatsapp","contacts":[],"messages":[{{"id":"wamid.bench{n}"}}]}}"#
        ),
    )
}

/// User and system CPU time of this process so far, from /proc (0 where there is none).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
