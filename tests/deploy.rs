//! deploy/ run for real where this machine can: a listening socket handed over by systemd's
//! socket activation (deploy/systemd/easymo.socket) is taken as is, and the nginx balancer
//! config is accepted by nginx. (The replicas behind nginx are tests/scale_out.rs.)

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};

use serde::Deserialize as _;
use std::time::{Duration, Instant};

use crate::support::{engine_env, fresh_database, ConfigDir};

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn a_socket_passed_by_systemd_is_served_and_connections_made_before_start_wait_for_it() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        // scripts/test-packages.sh installs it (Debian's `systemd` package) where it can.
        panic!("systemd-socket-activate is missing: apt-get install -y systemd");
    }
    let config = ConfigDir::shipped(crate::support::unlimited);
    let database = fresh_database();
    let port = free_port();
    let mut command = Command::new("systemd-socket-activate");
    command.args(["--listen", &format!("127.0.0.1:{port}")]);
    for (name, value) in engine_env() {
        let value = if name == "DATABASE_URL" {
            database.as_str()
        } else {
            value
        };
        command.arg(format!("--setenv={name}={value}"));
    }
    command
        .arg("--setenv=RUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_easymo-under-test"))
        .args(["serve", "--config"])
        .arg(config.routes())
        // Told to listen elsewhere: the socket it is handed wins.
        .args(["--listen", "127.0.0.1:1", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("systemd-socket-activate starts");
    // systemd-socket-activate starts the engine on the first connection, as systemd does: the
    // connection waits in the socket until the engine takes it, then is answered.
    let started = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(error) => panic!("the socket is not listening: {error}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut logs = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut logs);
    }
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{logs}");
    let listening = logs
        .lines()
        .find(|l| l.contains("\"server.listening\""))
        .unwrap_or_default();
    assert!(listening.contains("\"socket\":\"inherited\""), "{logs}");
    assert!(
        listening.contains(&format!("127.0.0.1:{port}")),
        "{listening}"
    );
}

/// The whole balancer config, as a team would drop it into /etc/nginx/conf.d/, is accepted by
/// the nginx the tests run (Debian's), with a throwaway certificate where it names the real one.
#[test]
fn the_shipped_nginx_config_is_accepted_whole_by_nginx() {
    let dir = std::env::temp_dir().join(format!("easymo-nginx-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=webhooks.example.rw", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let shipped = std::fs::read_to_string(crate::support::repo_path("deploy/nginx/easymo.conf"))
        .expect("deploy/nginx/easymo.conf");
    let site = shipped
        .replace("/etc/ssl/easymo/fullchain.pem", &cert.display().to_string())
        .replace("/etc/ssl/easymo/privkey.pem", &key.display().to_string());
    assert_ne!(
        site, shipped,
        "the certificate paths moved; update this test"
    );
    std::fs::write(dir.join("easymo.conf"), site).expect("site");
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n    include {0}/easymo.conf;\n}}\n",
            dir.display()
        ),
    )
    .expect("nginx.conf");
    let checked = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .expect("nginx runs (scripts/test installs Debian's nginx)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The systemd units are what systemd itself accepts: no unknown key, no bad value, the
/// socket and the service that goes with it (with the binary at the path the tests built).
#[test]
fn the_shipped_systemd_units_pass_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("easymo-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for unit in ["easymo.socket", "easymo.service"] {
        let text =
            std::fs::read_to_string(crate::support::repo_path(&format!("deploy/systemd/{unit}")))
                .expect("unit");
        let text = text.replace(
            "/usr/local/bin/easymo",
            env!("CARGO_BIN_EXE_easymo-under-test"),
        );
        std::fs::write(dir.join(unit), text).expect("unit copy");
    }
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("easymo.socket"))
        .arg(dir.join("easymo.service"))
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    let _ = std::fs::remove_dir_all(&dir);
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

/// The files a ConfigMap volume lays out for the Deployment and the migration Job, as listed in
/// deploy/k8s/*.yaml.
fn configmap_paths(manifest: &str) -> Vec<std::collections::BTreeSet<String>> {
    let text = std::fs::read_to_string(crate::support::repo_path(manifest)).expect("manifest");
    let mut volumes = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let document = serde_yaml::Value::deserialize(document).expect("YAML");
        let spec = &document["spec"]["template"]["spec"];
        for volume in spec["volumes"].as_sequence().into_iter().flatten() {
            let items = volume["configMap"]["items"].as_sequence();
            volumes.push(
                items
                    .into_iter()
                    .flatten()
                    .filter_map(|item| item["path"].as_str().map(str::to_owned))
                    .collect(),
            );
        }
    }
    volumes
}

/// A flow or runbook added to the repository but not to the ConfigMap's items would leave the
/// pods with a routes.yaml naming a file they do not have: they would refuse to start.
#[test]
fn the_kubernetes_volumes_carry_every_file_routes_yaml_needs() {
    let mut needed: std::collections::BTreeSet<String> = ["routes.yaml".to_owned()].into();
    for dir in ["flows", "docs/runbooks"] {
        for entry in std::fs::read_dir(crate::support::repo_path(dir))
            .expect("dir")
            .flatten()
        {
            needed.insert(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    for manifest in ["deploy/k8s/deployment.yaml", "deploy/k8s/migrate-job.yaml"] {
        let volumes = configmap_paths(manifest);
        assert_eq!(volumes.len(), 1, "{manifest}: one config volume");
        let missing: Vec<&String> = needed.difference(&volumes[0]).collect();
        assert!(missing.is_empty(), "{manifest} lacks {missing:?}");
    }
}

/// What deploy/Dockerfile puts in its final image, read from the file: each `COPY` (the
/// binary from the build stage, the config from the repository) and the `CMD`.
struct Image {
    copies: Vec<(String, String)>,
    user: String,
    cmd: Vec<String>,
}

fn dockerfile() -> Image {
    let text = std::fs::read_to_string(crate::support::repo_path("deploy/Dockerfile"))
        .expect("deploy/Dockerfile");
    let last_stage = text.rfind("\nFROM ").expect("a final stage");
    let mut image = Image {
        copies: Vec::new(),
        user: String::new(),
        cmd: Vec::new(),
    };
    for line in text[last_stage..].lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["COPY", "--from=build", from, to] => {
                let built = from.trim_start_matches("/src/");
                image.copies.push((built.to_owned(), (*to).to_owned()));
            }
            ["COPY", from, to] => image.copies.push(((*from).to_owned(), (*to).to_owned())),
            ["USER", user] => image.user = (*user).to_owned(),
            ["CMD", ..] => {
                image.cmd = serde_json::from_str(line.trim_start_matches("CMD").trim())
                    .expect("CMD as a JSON array")
            }
            _ => {}
        }
    }
    image
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).expect("copy");
    }
}

/// The image cannot be built here (no registry for its base images), so its final stage is
/// laid out in a directory as the Dockerfile says and run the way it says: only what it copies,
/// its command, as a user that is not root. A config file the image forgets (a runbook, a flow)
/// or a command that does not start fails this.
#[test]
fn the_container_image_layout_starts_as_a_non_root_user() {
    let image = dockerfile();
    assert_eq!(image.user, "easymo", "the image runs as its own user");
    assert_eq!(
        &image.cmd[..3],
        ["serve", "--config", "/etc/easymo/routes.yaml"],
        "{:?}",
        image.cmd
    );
    let root = std::env::temp_dir().join(format!("easymo-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (from, to) in &image.copies {
        let source = if from == "target/release/easymo" {
            // The build stage's binary: the one these tests built.
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_easymo-under-test"))
        } else {
            crate::support::repo_path(from)
        };
        copy_tree(&source, &root.join(to.trim_start_matches('/')));
    }
    let database = fresh_database();
    // The image's command, with its paths under the layout and a free port.
    let args: Vec<String> = image
        .cmd
        .iter()
        .map(|arg| match arg.as_str() {
            "0.0.0.0:8080" => "127.0.0.1:0".to_owned(),
            path if path.starts_with('/') => root.join(&path[1..]).display().to_string(),
            other => other.to_owned(),
        })
        .chain(["--log-format".to_owned(), "json".to_owned()])
        .collect();
    let binary = root.join("usr/local/bin/easymo");
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut command = if as_root {
        // The image's user is a system account with uid 10001.
        let mut c = Command::new("setpriv");
        c.args(["--reuid=10001", "--regid=10001", "--clear-groups"])
            .arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    command.args(&args).env_clear().env("RUST_LOG", "info");
    for (name, value) in engine_env() {
        command.env(
            name,
            if name == "DATABASE_URL" {
                &database
            } else {
                value
            },
        );
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the image's command starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(20);
    let listening = loop {
        match seen.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("\"server.listening\"") => break Some(line),
            Ok(_) => {}
            Err(_) if Instant::now() > until => break None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(_) => {}
        }
    };
    // Ready: its config loaded and Postgres answering, as a readiness probe would ask.
    let ready = listening.as_deref().and_then(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let addr: std::net::SocketAddr = event["metadata"]["address"].as_str()?.parse().ok()?;
        Some(crate::support::http(addr, "GET", "/readyz").send().status)
    });
    let _ = child.kill();
    let output = child.wait_with_output().expect("exit");
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        ready,
        Some(200),
        "the image's command did not become ready:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
