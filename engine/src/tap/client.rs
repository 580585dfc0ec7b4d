//! `easymo tap`: reads a running engine's `/admin/tap` stream and prints each event.

use std::io::Write as _;

use anyhow::Context as _;

use super::Event;

/// What to tap.
#[derive(Debug, Clone)]
pub struct Options {
    /// The engine's address.
    pub url: String,
    /// Only this endpoint's messages.
    pub endpoint: Option<String>,
    /// Only this flow's.
    pub flow: Option<String>,
    /// The admin token.
    pub token: String,
    /// JSON lines instead of text.
    pub json: bool,
}

/// Prints events until the engine closes the stream (exit 0) or cannot be reached (an error).
pub fn run(options: &Options) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(stream(options))
}

async fn stream(options: &Options) -> anyhow::Result<u8> {
    let mut url = reqwest::Url::parse(&options.url)
        .with_context(|| format!("{} is not a URL", options.url))?
        .join("/admin/tap")?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(endpoint) = &options.endpoint {
            query.append_pair("endpoint", endpoint);
        }
        if let Some(flow) = &options.flow {
            query.append_pair("flow", flow);
        }
    }
    let mut response = reqwest::Client::new()
        .get(url.clone())
        .bearer_auth(&options.token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!(
            "{url} answered {}: is the admin token right?",
            response.status()
        );
    }
    eprintln!(
        "tap: connected to {}; waiting for messages (Ctrl-C stops)",
        options.url
    );
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await.context("reading the tap")? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            print_block(&block, options.json);
        }
    }
    eprintln!("tap: the engine closed the stream");
    Ok(0)
}

fn print_block(block: &str, json: bool) {
    let mut event_name = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            event_name = Some(name);
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = Some(value);
        }
    }
    let mut out = std::io::stdout().lock();
    match (event_name, data) {
        (Some("lagged"), Some(missed)) => {
            eprintln!("tap: fell behind and missed {missed} message(s)");
        }
        (None, Some(data)) if json => {
            let _ = writeln!(out, "{data}");
        }
        (None, Some(data)) => match serde_json::from_str::<Event>(data) {
            Ok(event) => {
                let _ = writeln!(out, "{}", event.line());
            }
            Err(_) => {
                let _ = writeln!(out, "{data}");
            }
        },
        _ => {}
    }
    let _ = out.flush();
}
