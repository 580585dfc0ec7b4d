#!/usr/bin/env bash
# The sender alone: ROWS replies already queued in the outbox (as a crash or a bulk
# `easymo dlq retry` leaves them), sent by `easymo serve` to the fake Graph API (engine/examples/fake_graph.rs), which
# answers at once. The per-number cap is lifted (throughput 10,000, lint warning W106), so the
# figure is the sender's own ceiling: sweep, claim, call, record. Prints sends per second and
# the CPU time per send of the engine and of Postgres (every `postgres` process on the machine).
#
#   benches/sending.sh                   # 50,000 rows; DATABASE_URL's server, else the local one
#   ROWS=100000 NUMBERS=4 benches/sending.sh
#
# Needs psql. Uses its own database, easymo_bench_sending.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-50000}
NUMBERS=${NUMBERS:-1}
SERVER=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="${SERVER%/*}/easymo_bench_sending"
GRAPH_PORT=${GRAPH_PORT:-18090}
ENGINE_PORT=${ENGINE_PORT:-18083}

echo "[sending.sh] building the engine (release)" >&2
cargo build --release --locked --quiet --bin easymo --example fake_graph
work=$(mktemp -d /tmp/easymo-bench-sending.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/flows" "$work/docs/runbooks"
cp flows/*.flow "$work/flows/"
cp docs/runbooks/*.md "$work/docs/runbooks/"
cp -r .queries "$work/"
python3 - "$work/routes.yaml" "$GRAPH_PORT" <<'PY'
import sys
text = open("routes.yaml").read()
old = "    sending:\n      access_token: ${WHATSAPP_ACCESS_TOKEN}\n      throughput: 80 "
assert old in text, "routes.yaml no longer has the shipped sending section; update benches/sending.sh"
new = f"    sending:\n      access_token: ${{WHATSAPP_ACCESS_TOKEN}}\n      base_url: http://127.0.0.1:{sys.argv[2]}\n      throughput: 10000 "
open(sys.argv[1], "w").write(text.replace(old, new))
PY

export WHATSAPP_VERIFY_TOKEN=bench-verify WHATSAPP_APP_SECRET=bench-secret EASYMO_ADMIN_TOKEN=bench-admin
export WHATSAPP_ACCESS_TOKEN=bench-graph-token MOMO_CALLBACK_CIDRS=127.0.0.1/32
export MOMO_SUBSCRIPTION_KEY=bench-key MOMO_API_USER=bench-user MOMO_API_KEY=bench-api-key
export SLACK_WEBHOOK_URL=http://127.0.0.1:9/slack PAGERDUTY_ROUTING_KEY=bench-pd
export DATABASE_URL=$DB RUST_LOG=${RUST_LOG:-warn}

./target/release/easymo migrate --create >&2
psql -X -q "$DB" -c "truncate outbox, outbox_attempts, message_statuses restart identity"
psql -X -q "$DB" -c "
  insert into outbox (recipient, phone_number_id, template, body)
  select r, 'bench-number-' || (n % $NUMBERS), 'bench',
      jsonb_build_object('messaging_product', 'whatsapp', 'recipient_type', 'individual',
          'to', r, 'type', 'text', 'text', jsonb_build_object('preview_url', false,
          'body', 'Your ride is on its way: a moto will pick you up in 4 minutes.'))
  from (select n, '2507' || lpad(n::text, 8, '0') as r from generate_series(1, $ROWS) n) s;
  analyze outbox;"

PORT=$GRAPH_PORT ./target/release/examples/fake_graph &
pids+=($!)
sleep 0.5

ticks=$(getconf CLK_TCK)
postgres_cpu() { # seconds of CPU used so far by every live postgres process
  local total=0 pid
  for pid in $(pgrep -x postgres); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total $ticks" | awk '{print $1 / $2}'
}
pg_before=$(postgres_cpu)
./target/release/easymo lint "$work/routes.yaml" >&2 || true
./target/release/easymo serve --config "$work/routes.yaml" --listen "127.0.0.1:$ENGINE_PORT" \
  --log-format json >"$work/engine.log" 2>&1 &
engine=$!
pids+=("$engine")

deadline=$((SECONDS + 300))
while :; do
  sent=$(psql -X -qtA "$DB" -c "select count(*) from outbox where status = 'sent'")
  ((sent >= ROWS)) && break
  if ((SECONDS > deadline)); then
    echo "[sending.sh] only $sent of $ROWS sent after 300 s; engine log: $work/engine.log" >&2
    tail -20 "$work/engine.log" >&2
    exit 1
  fi
  sleep 0.2
done
read -r utime stime < <(awk '{print $14, $15}' "/proc/$engine/stat")
pg_after=$(postgres_cpu)

psql -X -qtA "$DB" -F ' ' -c "
  select extract(epoch from max(o.sent_at) - min(a.started_at)),
         count(*) filter (where o.attempts > 1)
  from outbox o join outbox_attempts a on a.outbox_id = o.id and a.attempt = 1" |
  python3 -c "
import sys
seconds, retried = sys.stdin.read().split()
rows, ticks = $ROWS, $ticks
engine_cpu = ($utime + $stime) / ticks
pg_cpu = $pg_after - $pg_before
seconds = float(seconds)
print(f'rows {rows}  numbers $NUMBERS  first attempt to last sent {seconds:.2f} s  '
      f'{rows / seconds:,.0f} sends/s  retried {retried}')
print(f'engine CPU {engine_cpu:.2f} s ({engine_cpu / rows * 1e6:.0f} us/send, start-up included)  '
      f'postgres CPU {pg_cpu:.2f} s ({pg_cpu / rows * 1e6:.0f} us/send)')
"
