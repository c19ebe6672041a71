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
# SERVER=ejabberd runs the same load on ejabberd (Debian's, installed if missing): one node,
# then three joined into one Mnesia cluster (`join_cluster`; stanzas cross over Erlang
# distribution), each on its own c2s port — for what another server's cluster pays.
#
# Usage: conformance/bench/cluster.sh   (release builds of rookery and rookery-bench are made)
# Settings: CLIENTS=200 RATE=2000 DURATION=15 BASE_PORT=28300 WORK=<mktemp -d> SERVER=rookery
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
SERVER=${SERVER:-rookery}
BASE_PORT=${BASE_PORT:-28300}
WORK=${WORK:-$(mktemp -d /tmp/rookery-cluster-bench.XXXXXX)}
PASSWORD=bench-pass
NATS_PORT=$((BASE_PORT + 99))
NATS=${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
echo "== work directory: $WORK"

PIDS=() STOPS=()
cleanup() {
  local s
  for s in "${STOPS[@]}"; do eval "$s" || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

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

ratio() { # ratio <one.json> <three.json>: the three nodes' CPU per message over the one's
  python3 - "$1" "$2" <<'PY'
import json, sys
one, three = (json.load(open(p))["results"]["messages"]["server_cpu_ms_per_1000_messages"]
              for p in sys.argv[1:])
print(f"== three nodes over one: {three / one:.2f}x server CPU per message")
PY
}

bench() { # bench <json> <pids> <ports> : the messages scenario
  "$BENCH" --ports "$3" --tls none --password "$PASSWORD" --server-pid "$2" --quiet \
    -n "$CLIENTS" --login-rate 500 --duration "$DURATION" --json "$1" \
    messages --rate "$RATE" | sed 's/^/   /'
}

# ---- Rookery: one PostgreSQL database, nats-server between the nodes -----------------------
rookery_config_node() { # rookery_config_node <dir> <c2s port> [TOML line…]: on the shared database
  rookery_config "$1" "$2" '[store]' "url = \"$URL\"" '[mam]' "enabled = $MAM" "${@:3}"
}

rookery_start() { # rookery_start <dir> <port>: sets SERVER_PID, appends it to PIDS
  rookery_serve "$1" "$2"
  PIDS+=("$SERVER_PID")
}

rookery_one() { # rookery_one <port>: one node (sets SERVER_PID)
  rookery_start "$WORK/one" "$1"
}

rookery_three() { # rookery_three <port…>: three nodes and the bus (sets node_pids)
  "$NATS" -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  wait_port "$NATS_PORT" "$WORK/nats.log"
  local k=0 port
  for port in "$@"; do
    k=$((k + 1))
    rookery_config_node "$WORK/node$k" "$port" '[cluster]' \
      "nats_url = \"nats://127.0.0.1:$NATS_PORT\"" ${BATCH_DELAY:+"batch_delay_ms = $BATCH_DELAY"}
    rookery_start "$WORK/node$k" "$port"
    node_pids+=("$SERVER_PID")
  done
}

# ---- ejabberd: Mnesia, Erlang distribution between the nodes -------------------------------
ejabberd_node() { echo "rookerycluster$1-$BASE_PORT@localhost"; }

ejabberd_instance() { # ejabberd_instance <dir> <node> <port>: plain c2s; written and started
  ejabberd_config "$1" "$2" "  -
    port: $3
    ip: \"127.0.0.1\"
    module: ejabberd_c2s
    starttls_required: false
    access: all" ""
  ejabberd_start "$1" "$2" "$3"
  STOPS+=("ejabberd_stop '$1' '$2' $SERVER_PID")
}

ejabberd_register() { # ejabberd_register <port>: the generator's accounts, in band
  "$BENCH" --port "$1" --tls none --password "$PASSWORD" -q -n "$CLIENTS" --login-rate 2000 \
    --max-inflight 64 register > /dev/null
}

ejabberd_one() { # ejabberd_one <port>
  ejabberd_instance "$WORK/one" "$(ejabberd_node 0)" "$1"
  ejabberd_register "$1"
}

ejabberd_three() { # ejabberd_three <port…>: node 1, then 2 and 3 joined to it
  local k=0 port first
  for port in "$@"; do
    k=$((k + 1))
    ejabberd_instance "$WORK/node$k" "$(ejabberd_node $k)" "$port"
    node_pids+=("$SERVER_PID")
    if [ "$k" -gt 1 ]; then
      # The node restarts ejabberd to join; `started` returns once it is up again.
      ejabberd_ctl "$WORK/node$k" "$(ejabberd_node $k)" join_cluster "$(ejabberd_node 1)" > /dev/null
      ejabberd_ctl "$WORK/node$k" "$(ejabberd_node $k)" started > /dev/null
      wait_port "$port" "$WORK/node$k/logs/ejabberd.log"
    fi
  done
  first=$1
  ejabberd_register "$first"
  echo "== ejabberd cluster: $(ejabberd_ctl "$WORK/node1" "$(ejabberd_node 1)" list_cluster | tr '\n' ' ')"
}

case $SERVER in
  rookery)
    cluster_store rookery_cluster_bench
    # The accounts, once, in the shared database.
    rookery_config_node "$WORK/one" "$((BASE_PORT + 1))"
    "$ROOKERY" -c "$WORK/one/rookery.toml" user add-bulk --count "$CLIENTS" \
      --password "$PASSWORD" >/dev/null
    ;;
  ejabberd)
    if ! command -v ejabberdctl >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ejabberd >/dev/null
    fi
    ;;
  *) echo "SERVER must be rookery or ejabberd, not $SERVER" >&2; exit 2 ;;
esac

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $SERVER, one node: $CLIENTS clients, $RATE messages/s, $DURATION s"
"${SERVER}_one" "$((BASE_PORT + 1))"
bench "$WORK/one.json" "$SERVER_PID" "$((BASE_PORT + 1))"
summary "one node" "$WORK/one.json"
cleanup
PIDS=() STOPS=()

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $SERVER, three nodes: the same load, every message from one node to another"
node_pids=() ports=("$((BASE_PORT + 11))" "$((BASE_PORT + 12))" "$((BASE_PORT + 13))")
"${SERVER}_three" "${ports[@]}"
[ -z "${NATS_PID:-}" ] || nats0=$(cpu_s "$NATS_PID")
bench "$WORK/three.json" "$(IFS=,; echo "${node_pids[*]}")" "$(IFS=,; echo "${ports[*]}")"
summary "three nodes" "$WORK/three.json"
ratio "$WORK/one.json" "$WORK/three.json"
if [ -n "${NATS_PID:-}" ]; then
  nats1=$(cpu_s "$NATS_PID")
  echo "== nats-server CPU over the whole run (logins included): $(awk -v a="$nats0" -v b="$nats1" 'BEGIN { printf "%.2f", b - a }') s"
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
