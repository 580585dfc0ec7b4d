//! `server:` and `momo:`: process-wide settings and the MoMo account.

use easymo_dsl::{codes, Diagnostic};

use super::context::Cx;
use crate::config::raw;
use crate::config::yaml::Path;
use crate::config::{Auth, Connections, Endpoint, Momo, Server};

pub(super) fn compile_server(
    cx: &mut Cx<'_>,
    server: &raw::Server,
    base_dir: &std::path::Path,
) -> Option<Server> {
    let path = Path::root().key("server");
    let listen = match server.listen.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            cx.error(
                codes::INVALID_VALUE,
                format!("`{}` is not a listen address", server.listen),
                &path.key("listen"),
                "",
            )
            .help = Some("write host and port, e.g. `0.0.0.0:8080` or `[::]:8080`".to_owned());
            None
        }
    };
    let trusted_proxies = cx.nets(
        &server.trusted_proxies,
        &path.key("trusted_proxies"),
        "anyone could forge X-Forwarded-For",
    );
    if server.max_body_bytes == 0 {
        cx.error(
            codes::INVALID_VALUE,
            "`max_body_bytes` must be greater than zero",
            &path.key("max_body_bytes"),
            "",
        );
    }
    let database_url = server
        .database_url
        .as_ref()
        .and_then(|v| cx.secret(v, &path.key("database_url"), "the database URL"));
    let admin_token = server
        .admin_token
        .as_ref()
        .and_then(|v| cx.secret(v, &path.key("admin_token"), "the admin token"));
    let connections = compile_connections(cx, server);
    Some(Server {
        listen: listen?,
        trusted_proxies,
        max_body_bytes: usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX),
        database_url,
        admin_token,
        connections: connections?,
        migrations: product_migrations(cx, server, base_dir),
        rate_limits: server.rate_limits,
    })
}

fn compile_connections(cx: &mut Cx<'_>, server: &raw::Server) -> Option<Connections> {
    let path = Path::root().key("server");
    let header_timeout = cx.duration(&server.header_timeout, &path.key("header_timeout"));
    let body_timeout = cx.duration(&server.body_timeout, &path.key("body_timeout"));
    let idle_timeout = cx.duration(&server.idle_timeout, &path.key("idle_timeout"));
    if server.max_connections == 0 {
        cx.error(
            codes::INVALID_VALUE,
            "`max_connections` must be greater than zero",
            &path.key("max_connections"),
            "",
        );
    }
    if server.max_body_memory_bytes < server.max_body_bytes {
        cx.error(
            codes::INVALID_VALUE,
            format!(
                "`max_body_memory_bytes` ({}) is smaller than `max_body_bytes` ({}): no request at the size limit could ever be read",
                server.max_body_memory_bytes, server.max_body_bytes
            ),
            &path.key("max_body_memory_bytes"),
            "",
        )
        .help = Some("hold room for a few bodies at the limit, e.g. 64 MiB for 3 MB bodies".to_owned());
    }
    Some(Connections {
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        max_body_memory: usize::try_from(server.max_body_memory_bytes).unwrap_or(usize::MAX),
    })
}

/// `server.migrations`, resolved against routes.yaml's directory; it must be a directory.
fn product_migrations(
    cx: &mut Cx<'_>,
    server: &raw::Server,
    base_dir: &std::path::Path,
) -> Option<std::path::PathBuf> {
    let relative = server.migrations.as_ref()?;
    let dir = base_dir.join(relative);
    if !dir.is_dir() {
        cx.error(
            codes::INVALID_VALUE,
            format!("`{relative}` is not a directory beside routes.yaml"),
            &Path::root().key("server").key("migrations"),
            "the product's migrations are read from here",
        )
        .help = Some(
            "create it and put dated migrations in it, e.g. `20261206090000_schools.sql`"
                .to_owned(),
        );
        return None;
    }
    Some(dir)
}

/// Trusted proxies name the client; beside an IP allowlist, a proxy network much wider than a
/// set of load balancers lets any of its hosts claim an allowed address.
pub(super) fn check_trusted_proxies(
    cx: &mut Cx<'_>,
    server: Option<&raw::Server>,
    endpoints: &[Endpoint],
) {
    let Some(server) = server else {
        return;
    };
    let Some(allowlisted) = endpoints
        .iter()
        .find(|e| e.deprecated.is_none() && matches!(e.auth, Auth::IpAllowlist(_)))
    else {
        return;
    };
    let path = Path::root().key("server").key("trusted_proxies");
    for (i, text) in server.trusted_proxies.iter().enumerate() {
        let Ok(net) = text.parse::<ipnet::IpNet>() else {
            continue;
        };
        let (bits, widest) = match net {
            ipnet::IpNet::V4(_) => (32, 24),
            ipnet::IpNet::V6(_) => (128, 120),
        };
        if net.prefix_len() == 0 || net.prefix_len() >= widest {
            continue;
        }
        let hosts = bits - u32::from(net.prefix_len());
        let count = if hosts < 63 {
            thousands(1_u64 << hosts)
        } else {
            format!("2^{hosts}")
        };
        let span = cx.index.value(&path.index(i));
        cx.out.push(
            Diagnostic::warning(
                codes::WIDE_TRUSTED_PROXIES,
                format!("`{text}` trusts {count} addresses to say who the client is"),
            )
            .at(
                cx.file,
                span,
                format!(
                    "any host here can claim an address on `{}`'s allowlist",
                    allowlisted.name
                ),
            )
            .help(format!(
                "list only the load balancers' addresses or their subnet (a /{widest} or narrower)"
            )),
        );
    }
}

/// `16777216` as `16,777,216`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    // Digits until the next comma: the first group holds what is left over from threes.
    let mut until_comma = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    for digit in digits.chars() {
        if until_comma == 0 {
            out.push(',');
            until_comma = 3;
        }
        out.push(digit);
        until_comma -= 1;
    }
    out
}

pub(super) fn compile_momo(cx: &mut Cx<'_>, momo: &raw::Momo) -> Option<Momo> {
    let path = Path::root().key("momo");
    let base_url = cx.base_url(
        &momo.base_url,
        &path.key("base_url"),
        "e.g. `https://proxy.momoapi.mtn.co.rw`",
    );
    let subscription_key = cx.secret(
        &momo.subscription_key,
        &path.key("subscription_key"),
        "the MoMo subscription key",
    );
    let api_user = cx.secret(&momo.api_user, &path.key("api_user"), "the MoMo API user");
    let api_key = cx.secret(&momo.api_key, &path.key("api_key"), "the MoMo API key");
    let timeout = cx.duration(&momo.timeout, &path.key("timeout"));
    let poll_after = cx.duration(&momo.poll_after, &path.key("poll_after"));
    Some(Momo {
        base_url,
        target_environment: momo.target_environment.clone(),
        subscription_key: subscription_key?,
        api_user: api_user?,
        api_key: api_key?,
        timeout: timeout?,
        poll_after: poll_after?,
        currency: momo.currency.clone(),
        callback_url: momo.callback_url.clone(),
    })
}
