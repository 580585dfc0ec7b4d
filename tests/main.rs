//! One integration test binary for the whole workspace (one link step on a 2-core machine).

// Shared helpers: paths, running the real binary.
mod support;

// `easymo lint` over the corpus of broken configs in tests/lint/, one mistake each.
mod lint_corpus;
// The committed routes.yaml and flows: clean, and declaring the real easyMO system.
mod shipped_config;
// The real `easymo` process: exit codes, output formats, explain, schema.
mod cli;
// `easymo serve`: signatures, handshake, bad input, health, logs, shutdown.
mod gateway;
// Rate limits and client addresses behind trusted proxies.
mod limits_and_ips;
// Hot reload under traffic.
mod reload;
// Scripted WhatsApp conversations against Postgres, pinned with insta.
mod conversations;
// Several engine processes sharing one database.
mod processes;
// Forwarded MoMo SMS: recorded, read, credited once and only from M-Money.
mod sms;
// MoMo callbacks confirmed against a fake of the MoMo API.
mod momo;
// docs/api.md, played against the real engine.
mod api_docs;
// The server embedded as a library: stopped by the future it is given.
mod embedded;
// Replies sent to a fake of the WhatsApp Cloud API: requests, error classes, order.
mod sending;
// Alert rules evaluated by engines and delivered to fakes of Slack, PagerDuty, Alertmanager.
mod alerts;
// The live dashboard: access, its event stream, and the page in headless Chromium.
mod dashboard;
// No phone number in any log line, in any encoding.
mod privacy;
// Connections opened for real: descriptor exhaustion, slow clients, body memory, the drain.
mod connections;
// Postgres taken away and given back under the engine: fast 503s, recovery on its own.
mod outage;
// Deliveries recorded but not processed, processed by the running engine; poison input kept.
mod poison;
// A product's own tables from a migration beside routes.yaml, without a rebuild.
mod product_tables;
// `easymo tap` against a running engine.
mod tap;
// `easymo test`: conversation scripts and alert tests through the binary, JUnit XML.
mod script_runner;
// docs/diagnostics.md and `easymo explain-code`: every code documented.
mod diagnostics_doc;
// Flow SQL described by Postgres: committed descriptions, --write-offline, refusals.
mod queries;
// The deployment recipes' moving parts: a socket handed over by systemd.
mod deploy;
// Three replicas behind a real nginx: shared limits, failover, rolling restarts.
mod scale_out;
