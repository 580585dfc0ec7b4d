//! `server::run` embedded in another program: it serves until the future it was given
//! resolves, then drains and returns, with no signal involved.

use std::time::{Duration, Instant};

use easymo_engine::config::Env;
use easymo_engine::server::{run, Options};

use crate::support::{engine_env, fresh_database, http, ConfigDir};

#[test]
fn the_server_stops_when_its_shutdown_future_resolves() {
    let config = ConfigDir::shipped(|c| c.to_owned());
    let database_url = fresh_database();
    let mut pairs = engine_env();
    pairs.retain(|(k, _)| *k != "DATABASE_URL");
    pairs.push(("DATABASE_URL", &database_url));
    let env = Env::from_pairs(pairs);
    // A port free a moment ago; the engine binds it itself.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let options = Options {
        config: config.routes(),
        listen: Some(addr),
        drain: Duration::from_secs(5),
        telemetry: true,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(run(options, env, async {
        let _ = stopped.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening = std::net::TcpStream::connect(addr).is_ok();
        if listening && http(addr, "GET", "/healthz").send().status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.is_finished(), "the server stopped on its own");

    stop.send(()).expect("the server is waiting");
    let result = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .expect("stopped within the drain")
        .expect("did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after it returned"
    );
}
