#!/usr/bin/env bash
# Load test of the whole webhook path (signature, rate limit, durable record, routing, the flow's
# queries, outbox and session commit) beside the Node.js peer and the nginx static-200 ceiling,
# in one run of shared/bench/run.sh.
#
#   benches/gateway.sh                      # defaults: 10 s closed loop at c=32, 10 s at 2000/s
#   REPEAT=3 benches/gateway.sh             # three interleaved rounds; compare medians
#   TARGETS=engine DURATION=30 benches/gateway.sh
#
# Any run.sh setting (DURATION, CONNECTIONS, RATE, REPEAT, TARGETS, ...) passes through.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-$(cd ../shared/bench && pwd)}
PORT=${ENGINE_PORT:-18082}

echo "[gateway.sh] building the engine (release)" >&2
cargo build --release --locked --quiet --bin easymo

# The shipped config with one change: the shipped endpoint-wide limit (300 requests a minute,
# the old system's setting) would refuse all but the first 300 requests of a load test. The
# bench uses a per-sender limit like the Node peer's (30 a minute), so the limiter still runs
# on every request.
work=$(mktemp -d /tmp/easymo-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/flows"
cp flows/*.flow "$work/flows/"
python3 - "$work/routes.yaml" <<'PY'
import sys
text = open("routes.yaml").read()
old = "      requests: 300\n      per: 60s\n      key: endpoint\n"
assert old in text, "routes.yaml no longer has the shipped limit; update benches/gateway.sh"
open(sys.argv[1], "w").write(text.replace(old, "      requests: 30\n      per: 60s\n      key: sender\n      on_limit: drop\n"))
PY
./target/release/easymo lint "$work/routes.yaml" >&2

# Placeholders for the secrets the config names; run.sh sets WHATSAPP_APP_SECRET and
# DATABASE_URL itself.
export WHATSAPP_VERIFY_TOKEN=bench-verify EASYMO_ADMIN_TOKEN=bench-admin MOMO_WEBHOOK_SECRET=bench-momo
export MOMO_SUBSCRIPTION_KEY=bench-key MOMO_API_USER=bench-user MOMO_API_KEY=bench-api-key
export SLACK_WEBHOOK_URL=http://127.0.0.1:9/slack PAGERDUTY_ROUTING_KEY=bench-pd
export RUST_LOG=${RUST_LOG:-info}

# run.sh gives the engine the bench database, whose tables are the Node peer's; the engine keeps
# its own database beside it on the same server, emptied of conversations before each start.
cat >"$work/engine.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
url="\${DATABASE_URL%/*}/easymo_bench"
"$PWD/target/release/easymo" migrate --create --database-url "\$url" >&2
"$PWD/target/release/easymo" seed --demo --database-url "\$url" >&2
psql -X -q "\$url" -c "truncate deliveries, inbound_messages, outbox, sessions, message_statuses, contacts, ride_requests, job_applications, handoffs cascade"
export DATABASE_URL="\$url"
exec "$PWD/target/release/easymo" serve --config "$work/routes.yaml" --listen 127.0.0.1:$PORT --log-format json
SH
chmod +x "$work/engine.sh"

export ENGINE_URL="http://127.0.0.1:$PORT/webhooks/whatsapp"
export ENGINE_CMD="$work/engine.sh"
"$BENCH/run.sh" "$@"
