#!/usr/bin/env bash
# Server CPU of two Rookery builds on the same work, run alternately on this machine: the
# figures the architecture issue asks for before/after a change to the core.
#   messages: MSG_CLIENTS plain clients in pairs, MSG_RATE chat messages/s for DURATION s
#             → server CPU ms per 1,000 messages delivered
#   pubsub:   one node, PUBSUB_SUBS subscribers, PUBSUB_RATE items/s for DURATION s
#             → server CPU µs per notification delivered
#   presence: PRES_CLIENTS clients with rosters of PRES_ROSTER, PRES_RATE updates/s
#             → server CPU µs per presence delivery (subscription set-up not counted)
# Each build gets a fresh data directory and a fresh process per scenario; the generator
# is the same binary for both (BENCH_BIN, default the second build's). ROUNDS alternates the
# builds (A B A B …) so that drift of the machine hits both; the table gives every round.
#
# Usage: conformance/bench/before-after.sh OLD_DIR NEW_DIR
#        (each DIR holds a release `rookery`; e.g. a copy of target/release of each commit)
# Settings: MSG_CLIENTS=200 MSG_RATE=2000 PUBSUB_SUBS=10000 PUBSUB_RATE=2 PRES_CLIENTS=500
#           PRES_ROSTER=10 PRES_RATE=200 DURATION=10 ROUNDS=2 BASE_PORT=27200 WORK=<mktemp -d>
#           MAM=false ([mam] enabled: off by default, as in the rows made before the archive
#           existed — archiving costs several times the rest of the message path and would
#           hide a change to it; MAM=true measures with it)
# Only loopback is used.
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,18p "$0"; exit 2; }
# shellcheck source=conformance/bench/lib.sh
. "$(dirname "$0")/lib.sh"
OLD=$(cd "$1" && pwd)
NEW=$(cd "$2" && pwd)
BENCH=${BENCH_BIN:-$NEW/rookery-bench}
MSG_CLIENTS=${MSG_CLIENTS:-200}
MSG_RATE=${MSG_RATE:-2000}
PUBSUB_SUBS=${PUBSUB_SUBS:-10000}
PUBSUB_RATE=${PUBSUB_RATE:-2}
PRES_CLIENTS=${PRES_CLIENTS:-500}
PRES_ROSTER=${PRES_ROSTER:-10}
PRES_RATE=${PRES_RATE:-200}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
MAM=${MAM:-false}
BASE_PORT=${BASE_PORT:-27200}
WORK=${WORK:-$(mktemp -d /tmp/rookery-before-after.XXXXXX)}
ACCOUNTS=$(( PUBSUB_SUBS + 1 > MSG_CLIENTS ? PUBSUB_SUBS + 1 : MSG_CLIENTS ))
ACCOUNTS=$(( ACCOUNTS > PRES_CLIENTS ? ACCOUNTS : PRES_CLIENTS ))
PORT=$((BASE_PORT + 22))
mkdir -p "$WORK"
echo "== work directory: $WORK"
ulimit -n 20000 2>/dev/null || true

SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT

# A fresh instance of build $1 in $2 with the accounts; $3 = scenario name (its own data).
start() {
  local bin=$1 dir=$2
  rm -rf "$dir" && mkdir -p "$dir"
  rookery_config "$dir" "$PORT" 'session_queue = 1024' '[mam]' "enabled = $MAM"
  "$bin/rookery" -c "$dir/rookery.toml" user add-bulk --count "$ACCOUNTS" --password pw >/dev/null
  rookery_serve "$dir" "$PORT" "$bin/rookery"
}

bench() {
  "$BENCH" --port "$PORT" --tls none --mechanism scram-sha1 --password pw --quiet \
    --login-rate 1000 --max-inflight 128 --duration "$DURATION" --server-pid "$SERVER_PID" "$@"
}

run_build() {
  local label=$1 bin=$2 round=$3
  local out="$WORK/$label.$round"
  start "$bin" "$WORK/$label/messages"
  bench -n "$MSG_CLIENTS" --json "$out.messages.json" messages --rate "$MSG_RATE"
  stop_server
  start "$bin" "$WORK/$label/pubsub"
  bench -n $((PUBSUB_SUBS + 1)) --json "$out.pubsub.json" pubsub --rate "$PUBSUB_RATE"
  stop_server
  start "$bin" "$WORK/$label/presence"
  bench -n "$PRES_CLIENTS" --json "$out.presence.json" presence --roster-size "$PRES_ROSTER" --rate "$PRES_RATE"
  stop_server
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round: before ($OLD)"
  run_build before "$OLD" "$round"
  echo "== round $round: after ($NEW)"
  run_build after "$NEW" "$round"
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def get(label, r, scen):
    with open(f"{work}/{label}.{r}.{scen}.json") as f:
        return json.load(f)["results"][scen]
print("| build | round | CPU ms / 1,000 msgs | msg p99 ms | CPU µs / pubsub notification | notifications | CPU µs / presence delivery | presence deliveries |")
print("|---|---|---|---|---|---|---|---|")
for label in ("before", "after"):
    for r in range(1, rounds + 1):
        m, p, q = get(label, r, "messages"), get(label, r, "pubsub"), get(label, r, "presence")
        per = lambda s: round(s["server_cpu_s"] * 1e6 / s["deliveries"], 2) if s.get("deliveries") else None
        print(f"| {label} | {r} | {m.get('server_cpu_ms_per_1000_messages')} | {m['latency_ms'].get('p99')} | "
              f"{per(p)} | {p['deliveries']} of {p['expected_deliveries']} | {per(q)} | {q['deliveries']} of {q['expected_deliveries']} |")
PY
