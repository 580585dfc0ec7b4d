#!/usr/bin/env bash
# Where the CPU goes, per message, during the closed-loop run of benches/gateway.sh: perf
# samples every CPU for a few seconds in the middle of the run, and each sample is charged to
# its process (the server, Postgres, the load generator, the fake Graph API) or to idle.
# Prints, for each target in turn, each process's share of the machine and its CPU time per
# message (share x CPUs / messages per second), so the peer and the engine can be compared
# process by process, not only by throughput.
#
#   benches/cpu-split.sh                          # node, engine (sending on), engine (sending off)
#   ROUNDS=2 benches/cpu-split.sh
#   RUNS="node engine:on" benches/cpu-split.sh
#
# Needs perf (Debian: linux-perf) and what benches/gateway.sh needs. Runs as root, or with
# kernel.perf_event_paranoid <= 0 so that other processes' samples are readable.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-"node engine:on engine:off"}
ROUNDS=${ROUNDS:-1}
SAMPLE_SECS=${SAMPLE_SECS:-8}
command -v perf >/dev/null || { echo "cpu-split.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }

work=$(mktemp -d /tmp/easymo-cpu-split.XXXXXX)
trap 'rm -rf "$work"' EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# One closed-loop run of one target, sampled once the load has been on for a while.
measure() {
  local target=$1 sending=$2 out=$3 port
  if [[ $target == node ]]; then port=18080; else port=${ENGINE_PORT:-18082}; fi
  # The closed loop lasts long enough for the warm-up, the settling and the sample.
  TARGETS=$target SENDING=$sending RATE=0 REPEAT=1 DURATION=$((SAMPLE_SECS + 8)) \
    benches/gateway.sh >"$out.bench" 2>"$out.err" &
  local bench=$!
  for _ in $(seq 1 600); do port_open "$port" && break; sleep 0.5; done
  for _ in $(seq 1 100); do pgrep -f "release/loadgen" >/dev/null && break; sleep 0.3; done
  sleep 5
  # Threads of every process, to charge each sample (perf names threads) to its process.
  ps -eLo tid=,args= >"$out.threads"
  perf record -a -F 499 -o "$out.data" -- sleep "$SAMPLE_SECS" >/dev/null 2>&1
  wait "$bench"
  perf report -i "$out.data" --sort pid --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$out.pids"
}

report() {
  local label=$1 out=$2
  python3 - "$label" "$out" "$(nproc)" <<'PY'
import collections, re, sys
label, out, cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = {}
for line in open(out + ".threads"):
    parts = line.split(None, 1)
    if len(parts) == 2:
        owner[parts[0]] = parts[1]
def group(tid):
    if tid == "0":
        return "idle"
    args = owner.get(tid, "")
    for name, pattern in (("postgres", r"postgres"), ("load generator", r"loadgen"),
                          ("engine", r"release/easymo"), ("fake Graph API", r"fake_graph"),
                          ("node peer", r"(^|/)node ")):
        if re.search(pattern, args):
            return name
    return "other"
shares = collections.Counter()
for line in open(out + ".pids"):
    pct, who = line.split(None, 1)
    shares[group(who.split(":")[0])] += float(pct.rstrip("%"))
rate = None
for line in open(out + ".bench"):
    fields = line.split()
    if len(fields) > 3 and fields[1] == "closed":
        rate = float(fields[3])
print(f"{label}: {rate:.0f} msg/s closed loop" if rate else f"{label}: no closed-loop figure")
for name, share in shares.most_common():
    per = f"{share / 100 * cpus / rate * 1e6:7.0f} us/msg" if rate and name != "idle" else ""
    print(f"  {name:16s} {share:6.2f}% {per}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  for run in $RUNS; do
    target=${run%%:*}
    sending=on
    [[ $run == *:* ]] && sending=${run#*:}
    label=$target
    [[ $target == engine ]] && label="engine, sending $sending"
    measure "$target" "$sending" "$work/$round-$target-$sending"
    report "round $round, $label" "$work/$round-$target-$sending"
  done
done
