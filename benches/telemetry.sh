#!/usr/bin/env bash
# What metrics and alert evaluation cost on the full path: benches/gateway.sh's closed loop
# against the engine as shipped and against `serve --without-telemetry` (nothing counted, no
# alert rules evaluated), alternating round by round in one run so that the machine's drift
# hits both alike. Prints each round's throughput and the median ratio. With CHANNELS_DOWN=1,
# the "with" side also fires a rule every second into Slack and PagerDuty addresses that never
# answer: what a channel outage costs requests.
#
#   benches/telemetry.sh                 # 4 rounds of 10 s each way
#   ROUNDS=5 DURATION=20 benches/telemetry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-4}
bench=${BENCH:-$(cd ../shared/bench && pwd)}
out=${OUT:-$(mktemp -d /tmp/easymo-telemetry.XXXXXX)}
mkdir -p "$out"
echo "[telemetry.sh] logs and raw results in $out" >&2

run() { # label, engine args: prints the closed loop's throughput
  local down=
  [[ -z $2 ]] && down=${CHANNELS_DOWN:-}
  CHANNELS_DOWN=$down ENGINE_ARGS="$2" TARGETS=engine RATE=0 REPEAT=1 benches/gateway.sh >"$out/$1.log" 2>&1 || {
    cat "$out/$1.log" >&2
    exit 1
  }
  # run.sh says where it kept the raw lines: under its folder, or its writable copy in WORK.
  local raw file
  raw=$(grep -o 'raw: results/[^ ]*\.jsonl' "$out/$1.log" | tail -1 | cut -d' ' -f2)
  for file in "$bench/$raw" "${WORK:-/tmp/webhook-bench}/bench/$raw"; do
    [[ -f $file ]] && break
  done
  [[ -n $raw && -f $file ]] || { echo "no results in $out/$1.log" >&2; exit 1; }
  cp "$file" "$out/$1.jsonl"
  python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; print(max(x["ok_rps"] for x in r if x["mode"]=="closed"))' "$file"
}

with=() without=()
for round in $(seq "$ROUNDS"); do
  # Which goes first alternates: a run right after another is not quite like the first.
  if ((round % 2)); then
    a=$(run "with-$round" "")
    b=$(run "without-$round" "--without-telemetry")
  else
    b=$(run "without-$round" "--without-telemetry")
    a=$(run "with-$round" "")
  fi
  echo "round $round: with telemetry $a req/s, without $b req/s" >&2
  with+=("$a") without+=("$b")
done
python3 - "${with[*]}" "${without[*]}" <<'PY'
import statistics, sys
w = [float(x) for x in sys.argv[1].split()]
o = [float(x) for x in sys.argv[2].split()]
mw, mo = statistics.median(w), statistics.median(o)
print(f"telemetry: with {mw:.0f} req/s, without {mo:.0f} req/s (medians of {len(w)} rounds): "
      f"with/without = {mw / mo:.3f}, cost {100 * (1 - mw / mo):+.1f}%")
PY
