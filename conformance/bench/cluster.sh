#!/usr/bin/env bash
# The cluster benchmark of issue 18: the same message load on one node and on three nodes of
# a cluster (docs/clustering.md), on one PostgreSQL database.
#   - one node: PostgreSQL, no [cluster];
#   - three nodes: the same database, nats-server (Debian's) on loopback, and the clients
#     spread over the nodes (rookery-bench --ports: client i on node i mod 3), so every
#     message crosses from one node to another.
# rookery-bench messages: CLIENTS clients in pairs, RATE messages/s in all, DURATION s →
# server CPU per 1,000 messages (summed over the nodes; nats-server's own CPU is reported
# apart) and the end-to-end latency p50/p99 (both ends in the generator, one clock).
#
# Usage: conformance/bench/cluster.sh   (release builds of rookery and rookery-bench are made)
# Settings: CLIENTS=200 RATE=2000 DURATION=15 BASE_PORT=28300 WORK=<mktemp -d>
#           MAM=true: [mam] enabled on every node (the zero-config default; on PostgreSQL each
#           message then waits for its archive rows' commit, which dominates the latency);
#           MAM=false measures the message path and the bus alone
#           BATCH_DELAY=<ms>: [cluster] batch_delay_ms on the three nodes (unset: the default)
#           ROOKERY_BIN BENCH_BIN NATS_BIN ROOKERY_TEST_POSTGRES_URL (else scripts/pg-start.sh)
#           SMOKE=1: 20 clients, 100 messages/s, 3 s (a check that it runs, no figures)
# Only loopback is used. Prints a summary line per run and writes the JSON reports to WORK.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh
if [ -n "${SMOKE:-}" ]; then
  CLIENTS=${CLIENTS:-20} RATE=${RATE:-100} DURATION=${DURATION:-3}
fi
CLIENTS=${CLIENTS:-200}
RATE=${RATE:-2000}
DURATION=${DURATION:-15}
MAM=${MAM:-true}
BASE_PORT=${BASE_PORT:-28300}
WORK=${WORK:-$(mktemp -d /tmp/rookery-cluster-bench.XXXXXX)}
PASSWORD=bench-pass
NATS_PORT=$((BASE_PORT + 99))
NATS=${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
[ -x "$NATS" ] || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
if [ -z "${ROOKERY_TEST_POSTGRES_URL:-}" ]; then
  eval "$(scripts/pg-start.sh)"
fi
db=rookery_cluster_bench
psql -q "$ROOKERY_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
  -c "CREATE DATABASE $db"
URL="${ROOKERY_TEST_POSTGRES_URL%/*}/$db"
echo "== work directory: $WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

config() { # config <dir> <c2s port> [TOML line…]: a node on the shared database
  rookery_config "$1" "$2" '[store]' "url = \"$URL\"" '[mam]' "enabled = $MAM" "${@:3}"
}

start() { # start <dir> <port>: sets SERVER_PID, appends it to PIDS
  rookery_serve "$1" "$2"
  PIDS+=("$SERVER_PID")
}

cpu_s() { # cpu_s <pid>: user + system CPU seconds
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

summary() { # summary <label> <json>
  python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))["results"]["messages"]
lat = r["latency_ms"] or {}
print(f"== {label}: received {r['received']} of {r['sent']} ({r['received_rate_per_s']}/s), "
      f"lost {r['lost']}; latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms; "
      f"server CPU {r['server_cpu_ms_per_1000_messages']} ms per 1,000 messages")
PY
}

bench() { # bench <json> <pids> <ports> : the messages scenario
  "$BENCH" --ports "$3" --tls none --password "$PASSWORD" --server-pid "$2" --quiet \
    -n "$CLIENTS" --login-rate 500 --duration "$DURATION" --json "$1" \
    messages --rate "$RATE" | sed 's/^/   /'
}

# The accounts, once, in the shared database.
config "$WORK/one" "$((BASE_PORT + 1))"
"$ROOKERY" -c "$WORK/one/rookery.toml" user add-bulk --count "$CLIENTS" \
  --password "$PASSWORD" >/dev/null

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== one node: $CLIENTS clients, $RATE messages/s, $DURATION s"
start "$WORK/one" "$((BASE_PORT + 1))"
bench "$WORK/one.json" "$SERVER_PID" "$((BASE_PORT + 1))"
summary "one node" "$WORK/one.json"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
PIDS=()

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== three nodes: the same load, every message from one node to another"
"$NATS" -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" "$WORK/nats.log"
ports=() node_pids=()
for k in 1 2 3; do
  port=$((BASE_PORT + 10 + k))
  config "$WORK/node$k" "$port" '[cluster]' "nats_url = \"nats://127.0.0.1:$NATS_PORT\"" \
    ${BATCH_DELAY:+"batch_delay_ms = $BATCH_DELAY"}
  start "$WORK/node$k" "$port"
  ports+=("$port") node_pids+=("$SERVER_PID")
done
nats0=$(cpu_s "$NATS_PID")
bench "$WORK/three.json" "$(IFS=,; echo "${node_pids[*]}")" "$(IFS=,; echo "${ports[*]}")"
nats1=$(cpu_s "$NATS_PID")
summary "three nodes" "$WORK/three.json"
echo "== nats-server CPU over the whole run (logins included): $(awk -v a="$nats0" -v b="$nats1" 'BEGIN { printf "%.2f", b - a }') s"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
