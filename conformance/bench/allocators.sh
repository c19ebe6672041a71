#!/usr/bin/env bash
# Figures to choose the server's global allocator by (issue 19 part 2), for release builds that
# differ only in it, run alternately on this machine:
#   idle:     IDLE_N plain sessions log in and stay idle → server KiB per idle session
#   messages: MSG_CLIENTS plain clients in pairs, MSG_RATE chat messages/s for DURATION s
#             → server CPU ms per 1,000 messages delivered
#   hostile:  conformance/bench/hostile-memory.py $HOSTILE_ARGS → server RSS at the start,
#             at the peak and after the rounds
# Each run gets a fresh process and a copy of one data directory (the accounts are made once,
# with the first build). ROUNDS alternates the builds (A B C A B C …) so that drift of the
# machine hits each; the table gives every round.
#
# Usage: conformance/bench/allocators.sh LABEL=DIR …
#        (each DIR holds a release `rookery`; the generator is the first DIR's `rookery-bench`)
# Settings: IDLE_N=10000 MSG_CLIENTS=200 MSG_RATE=2000 DURATION=10 ROUNDS=2
#           HOSTILE_ARGS="--rounds 5" PORT=27322 WORK=<mktemp -d>
# Only loopback is used.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,17p "$0"; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=conformance/bench/lib.sh
. "$here/lib.sh"
IDLE_N=${IDLE_N:-10000}
MSG_CLIENTS=${MSG_CLIENTS:-200}
MSG_RATE=${MSG_RATE:-2000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
HOSTILE_ARGS=${HOSTILE_ARGS:---rounds 5}
PORT=${PORT:-27322}
WORK=${WORK:-$(mktemp -d /tmp/rookery-allocators.XXXXXX)}
PYTHON=${PYTHON:-$HOME/.cache/rookery-test-venv/bin/python}
first=${1#*=}
BENCH=${BENCH_BIN:-$(cd "$first" && pwd)/rookery-bench}
ACCOUNTS=$(( IDLE_N > MSG_CLIENTS ? IDLE_N : MSG_CLIENTS ))
mkdir -p "$WORK"
echo "== work directory: $WORK"
ulimit -n $(( IDLE_N * 2 + 1000 )) 2>/dev/null || ulimit -n 20000 || true

config() { rookery_config "$1" "$PORT" 'session_queue = 1024'; }

mkdir -p "$WORK/accounts"
config "$WORK/accounts"
"$(cd "$first" && pwd)/rookery" -c "$WORK/accounts/rookery.toml" user add-bulk \
  --count "$ACCOUNTS" --password pw >/dev/null

SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

start() {   # start BIN DIR: a fresh process on a copy of the accounts
  local bin=$1 dir=$2
  rm -rf "$dir" && mkdir -p "$dir"
  config "$dir"
  cp -r "$WORK/accounts/data" "$dir/data"
  rookery_serve "$dir" "$PORT" "$bin/rookery"
  sleep 1
}

bench() {
  "$BENCH" --port "$PORT" --tls none --mechanism scram-sha1 --password pw --quiet \
    --login-rate 1000 --max-inflight 128 --server-pid "$SERVER_PID" "$@"
}

for round in $(seq "$ROUNDS"); do
  for build in "$@"; do
    label=${build%%=*} bin=$(cd "${build#*=}" && pwd) out="$WORK/$label.$round"
    echo "== round $round: $label ($bin)"
    start "$bin" "$WORK/run"
    bench -n "$IDLE_N" --duration 4 --json "$out.idle.json" connect
    stop_server
    start "$bin" "$WORK/run"
    bench -n "$MSG_CLIENTS" --duration "$DURATION" --json "$out.messages.json" messages \
      --rate "$MSG_RATE"
    stop_server
    # shellcheck disable=SC2086
    ROOKERY_BIN="$bin/rookery" "$PYTHON" "$here/hostile-memory.py" $HOSTILE_ARGS \
      --json "$out.hostile.json" > "$out.hostile.txt"
    tail -n 1 "$out.hostile.txt"
  done
done

"$PYTHON" - "$WORK" "$ROUNDS" "$@" <<'PY'
import json, sys
work, rounds, builds = sys.argv[1], int(sys.argv[2]), [b.split("=")[0] for b in sys.argv[3:]]
def load(label, r, what):
    with open(f"{work}/{label}.{r}.{what}.json") as f:
        return json.load(f)
mib = lambda b: f"{b / 1048576:.1f}"
print("| allocator | round | KiB per idle session (RSS before → idle) | CPU ms / 1,000 msgs (delivered) | hostile rounds: RSS start → peak → after (MiB) |")
print("|---|---|---|---|---|")
for label in builds:
    for r in range(1, rounds + 1):
        idle = load(label, r, "idle")["results"]["idle_memory"]
        msg = load(label, r, "messages")["results"]["messages"]
        h = load(label, r, "hostile")
        peak = max(row["peak"] for row in h["rounds"])
        print(f"| {label} | {r} | {idle['bytes_per_session'] / 1024:.1f} "
              f"({idle['server_rss_kb_before'] / 1024:.1f} → {idle['server_rss_kb_idle'] / 1024:.1f} MiB) | "
              f"{msg['server_cpu_ms_per_1000_messages']} ({msg['received']}) | "
              f"{mib(h['start'])} → {mib(peak)} → {mib(h['end'])} |")
PY
