#!/usr/bin/env bash
# Load test of the whole webhook path (signature, rate limit, durable record, routing, the flow's
# queries, outbox and session commit) and of sending the replies to a fake Graph API
# (engine/examples/fake_graph.rs, answering at once on one thread), beside the Node.js peer and the nginx static-200
# ceiling, in one run of shared/bench/run.sh. The peer sends nothing.
#
#   benches/gateway.sh                      # defaults: 10 s closed loop at c=32, 10 s at 2000/s
#   REPEAT=3 benches/gateway.sh             # three interleaved rounds; compare medians
#   TARGETS=engine DURATION=30 benches/gateway.sh
#   SENDING=off benches/gateway.sh          # replies stay in the outbox, as before sending existed
#   ENGINE_ARGS=--without-telemetry benches/gateway.sh   # no metrics, no alert evaluation
#   CHANNELS_DOWN=1 benches/gateway.sh      # a rule firing every second into channels that hang
#   RATE_LIMITS=postgres benches/gateway.sh  # per-sender budgets shared in Postgres (default local)
#
# With sending on, it also prints, for each second of the engine's run, how many messages were
# queued and the p99 from a reply's commit to its Graph API request (from the outbox and the
# attempts table; the commit time is the transaction's start, so the figure is an upper bound),
# and the worst of those p99s over the seconds that ran at the open loop's rate.
#
# Any run.sh setting (DURATION, CONNECTIONS, RATE, REPEAT, TARGETS, ...) passes through.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-$(cd ../shared/bench && pwd)}
PORT=${ENGINE_PORT:-18082}
GRAPH_PORT=${GRAPH_PORT:-18090}
SENDING=${SENDING:-on}
ENGINE_ARGS=${ENGINE_ARGS:-}
CHANNELS_DOWN=${CHANNELS_DOWN:-}
SINK_PORT=${SINK_PORT:-18091}
RATE_LIMITS=${RATE_LIMITS:-local}

echo "[gateway.sh] building the engine (release)" >&2
cargo build --release --locked --quiet --bin easymo --example fake_graph

# The shipped config with one change: the shipped per-sender limit (30 a minute, like the Node
# peer's) drops instead of answering once with a slow-down reply, as the peer does; the limiter
# still runs on every request.
work=$(mktemp -d /tmp/easymo-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/flows" "$work/docs/runbooks"
cp flows/*.flow "$work/flows/"
cp docs/runbooks/*.md "$work/docs/runbooks/"
# The flows' query descriptions, which lint checks the queries against.
cp -r .queries "$work/"
python3 - "$work/routes.yaml" "$SENDING" "$GRAPH_PORT" "$CHANNELS_DOWN" "$SINK_PORT" "$RATE_LIMITS" <<'PY'
import sys
text = open("routes.yaml").read()
if sys.argv[6] != "local":
    text = text.replace("server:\n", f"server:\n  rate_limits: {sys.argv[6]}\n", 1)
if sys.argv[4]:
    # Alerting under stress: evaluated every second, a rule that always holds, sent again every
    # second, to Slack and PagerDuty addresses that accept connections and never answer.
    text = text.replace("alerts:\n  channels:\n", "alerts:\n  evaluation_interval: 1s\n  window: 10s\n  repeat_interval: 1s\n  channels:\n")
    text = text.replace("      routing_key: ${PAGERDUTY_ROUTING_KEY}\n", f"      routing_key: ${{PAGERDUTY_ROUTING_KEY}}\n      events_url: http://127.0.0.1:{sys.argv[5]}/pagerduty\n")
    text = text.replace("  rules:\n", "  rules:\n    - name: always\n      when: requests_per_minute >= 0\n      severity: critical\n      notify: [pagerduty, slack]\n      runbook: docs/runbooks/error-rate.md\n", 1)
old = "      requests: 30\n      per: 60s\n      key: sender\n      on_limit: reply_once\n      reply_template: slow_down\n"
assert old in text, "routes.yaml no longer has the shipped limit; update benches/gateway.sh"
text = text.replace(old, "      requests: 30\n      per: 60s\n      key: sender\n      on_limit: drop\n")
# Sending goes to the fake Graph API; one number carries the whole load, so its cap is lifted
# (lint warning W106): Meta's 1,000 a second would make the queue, not the engine, the figure.
sending = "    sending:\n      access_token: ${WHATSAPP_ACCESS_TOKEN}\n      throughput: 80 "
assert sending in text, "routes.yaml no longer has the shipped sending section; update benches/gateway.sh"
if sys.argv[2] == "on":
    text = text.replace(sending, f"    sending:\n      access_token: ${{WHATSAPP_ACCESS_TOKEN}}\n      base_url: http://127.0.0.1:{sys.argv[3]}\n      throughput: 10000 ")
else:
    start = text.index("    sending:\n")
    end = text.index("\n\n", start)
    text = text[:start] + text[end + 1:]
open(sys.argv[1], "w").write(text)
PY
./target/release/easymo lint "$work/routes.yaml" >&2

# Placeholders for the secrets the config names; run.sh sets WHATSAPP_APP_SECRET and
# DATABASE_URL itself.
export WHATSAPP_VERIFY_TOKEN=bench-verify EASYMO_ADMIN_TOKEN=bench-admin MOMO_CALLBACK_CIDRS=127.0.0.1/32
export MOMO_SUBSCRIPTION_KEY=bench-key MOMO_API_USER=bench-user MOMO_API_KEY=bench-api-key
export WHATSAPP_ACCESS_TOKEN=bench-graph-token
export SLACK_WEBHOOK_URL=http://127.0.0.1:9/slack PAGERDUTY_ROUTING_KEY=bench-pd
if [[ -n $CHANNELS_DOWN ]]; then
  export SLACK_WEBHOOK_URL=http://127.0.0.1:$SINK_PORT/slack
  # Accepts every connection and never answers: each notice waits out its timeout.
  python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])
' "$SINK_PORT" &
  sink=$!
fi
export RUST_LOG=${RUST_LOG:-info}

# run.sh gives the engine the bench database, whose tables are the Node peer's; the engine keeps
# its own database beside it on the same server, emptied of conversations before each start.
cat >"$work/engine.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
url="\${DATABASE_URL%/*}/easymo_bench"
"$PWD/target/release/easymo" migrate --create --database-url "\$url" >&2
"$PWD/target/release/easymo" seed --demo --database-url "\$url" >&2
psql -X -q "\$url" -c "truncate deliveries, inbound_messages, outbox, outbox_attempts, sessions, message_statuses, contacts, ride_requests, job_applications, handoffs cascade"
export DATABASE_URL="\$url"
"$PWD/target/release/easymo" serve --config "$work/routes.yaml" --listen 127.0.0.1:$PORT --log-format json $ENGINE_ARGS &
engine=\$!
# On TERM (run.sh stopping it): stop the engine, then read the send latencies per second.
finish() {
  awk -v t="\$(getconf CLK_TCK)" '{print (\$14 + \$15) / t}' "/proc/\$engine/stat" >"$work/engine-cpu.txt" 2>/dev/null || true
  kill -TERM "\$engine" 2>/dev/null || true
  wait "\$engine" 2>/dev/null || true
  psql -X -qtA -F ' ' "\$url" -c "
    select extract(epoch from date_trunc('second', o.created_at))::bigint,
           count(distinct o.inbound_message_id), count(*),
           round((percentile_cont(0.99) within group (order by extract(epoch from a.started_at - o.created_at)) * 1000)::numeric, 2)
    from outbox o join outbox_attempts a on a.outbox_id = o.id and a.attempt = 1
    group by 1 order by 1" >"$work/send-latency.txt" 2>&1 || true
  psql -X -qtA "\$url" -c "select count(*) from outbox where status not in ('sent', 'delivered', 'read')" >"$work/unsent.txt" 2>&1 || true
  exit 0
}
trap finish TERM INT
wait "\$engine"
SH
chmod +x "$work/engine.sh"

if [[ $SENDING == on ]]; then
  PORT=$GRAPH_PORT ./target/release/examples/fake_graph 2>"$work/fake-graph.log" &
  graph=$!
fi
trap 'kill ${graph:-} ${sink:-} 2>/dev/null || true; rm -rf "$work"' EXIT

export ENGINE_URL="http://127.0.0.1:$PORT/webhooks/whatsapp"
export ENGINE_CMD="$work/engine.sh"
"$BENCH/run.sh" "$@"

if [[ $SENDING == on && -s $work/send-latency.txt ]]; then
  kill "$graph" 2>/dev/null && wait "$graph" 2>/dev/null || true
  python3 - "$work/send-latency.txt" "${RATE:-2000}" "$(cat "$work/unsent.txt" 2>/dev/null)" \
    "$(cat "$work/engine-cpu.txt" 2>/dev/null)" "$(cat "$work/fake-graph.log" 2>/dev/null)" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
rate, unsent = float(sys.argv[2]), sys.argv[3].strip()
print()
print("sending, per second of the engine's run: messages, replies, p99 commit -> Graph request (ms)")
for second, messages, replies, p99 in rows:
    print(f"  {second}  {int(messages):6d}  {int(replies):6d}  {float(p99):8.2f}")
steady = [r for r in rows if abs(int(r[1]) - rate) <= rate * 0.1]
if steady:
    worst = max(float(r[3]) for r in steady)
    print(f"sending: {len(steady)} seconds at {rate:.0f}/s (+-10%): worst per-second p99 {worst:.2f} ms")
print(f"sending: replies not sent at the end: {unsent}")
replies = sum(int(r[2]) for r in rows)
engine_cpu, graph_log = sys.argv[4].strip(), sys.argv[5].strip()
if engine_cpu and replies:
    print(f"sending: engine CPU {float(engine_cpu):.1f} s over the whole run, "
          f"{float(engine_cpu) / replies * 1e6:.0f} us per message (receiving and sending)")
if graph_log:
    print(f"sending: {graph_log.splitlines()[-1]}")
PY
fi
