#!/usr/bin/env bash
# Idle sessions past one process (issue 18): this box allows 20,000 open files per process,
# so one node holds at most ~19,900 sessions; four nodes of a cluster (one PostgreSQL, one
# nats-server) must hold SESSIONS idle sessions together.
#   - GENERATORS rookery-bench processes (each under the same 20,000-file limit) log in
#     SESSIONS / GENERATORS clients each, spread over the four nodes (--ports: client i on
#     node i mod 4) and over SOURCES loopback source addresses (127.0.0.1 …), then stay idle;
#   - once every session is established on the nodes (counted as the nodes' open files beyond those they had idle; /proc/net/tcp
#     and ss are far too slow, or absent, at this size) and the registry has
#     settled, each node's VmRSS is read: memory per session = the nodes' RSS growth / SESSIONS
#     (a session costs its own node a local session and every other node a remote handle).
#
# Usage: conformance/bench/cluster-idle.sh   (release builds of rookery and rookery-bench are made)
# Settings: SESSIONS=75000 GENERATORS=4 SOURCES=4 LOGIN_RATE=400 (per generator) HOLD=30
#           BASE_PORT=28400 WORK=<mktemp -d> ROOKERY_BIN BENCH_BIN NATS_BIN
#           ROOKERY_TEST_POSTGRES_URL (else scripts/pg-start.sh)
# Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh
SESSIONS=${SESSIONS:-75000}
GENERATORS=${GENERATORS:-4}
SOURCES=${SOURCES:-4}
LOGIN_RATE=${LOGIN_RATE:-400}
HOLD=${HOLD:-30}
BASE_PORT=${BASE_PORT:-28400}
WORK=${WORK:-$(mktemp -d /tmp/rookery-cluster-idle.XXXXXX)}
PASSWORD=bench-pass
NODES=4
NATS_PORT=$((BASE_PORT + 99))
NATS=${NATS_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
cluster_store rookery_cluster_idle
echo "== work directory: $WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

config() { # config <dir> <c2s port>: a node of the cluster, on the shared database
  rookery_config "$1" "$2" '[store]' "url = \"$URL\"" \
    '[cluster]' "nats_url = \"nats://127.0.0.1:$NATS_PORT\""
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

fds() { ls "/proc/$1/fd" | wc -l; }

"$NATS" -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" "$WORK/nats.log"
ports=() node_pids=() gen_pids=()
for k in $(seq 1 $NODES); do
  port=$((BASE_PORT + k))
  config "$WORK/node$k" "$port"
  ports+=("$port")
done
t0=$(date +%s)
"$ROOKERY" -c "$WORK/node1/rookery.toml" user add-bulk --count "$SESSIONS" \
  --password "$PASSWORD" >/dev/null
echo "== $SESSIONS accounts in $(( $(date +%s) - t0 )) s"
for k in $(seq 1 $NODES); do
  rookery_serve "$WORK/node$k" "${ports[$((k - 1))]}"
  node_pids+=("$SERVER_PID")
  PIDS+=("$SERVER_PID")
done
sleep 2
before=() fds0=()
for p in "${node_pids[@]}"; do before+=("$(rss_kb "$p")") fds0+=("$(fds "$p")"); done
established() { # established <k>: the client connections node k (0-based) holds
  echo $(( $(fds "${node_pids[$1]}") - fds0[$1] ))
}
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== nodes' RSS before (KiB): ${before[*]}; nats-server $(rss_kb "$NATS_PID")"

per=$((SESSIONS / GENERATORS))
all_ports=$(IFS=,; echo "${ports[*]}")
# Long enough for every generator's ramp and the sampling below; the generators stop by
# themselves after it.
duration=$(( per / LOGIN_RATE + HOLD ))
t0=$(date +%s)
for g in $(seq 0 $((GENERATORS - 1))); do
  "$BENCH" --ports "$all_ports" --tls none --password "$PASSWORD" --quiet \
    --first $((g * per + 1)) --resource-prefix "g$g-" -n "$per" --source-addrs "$SOURCES" \
    --login-rate "$LOGIN_RATE" --max-time $((duration + 600)) --duration "$duration" \
    --no-presence --json "$WORK/gen$g.json" connect > "$WORK/gen$g.log" 2>&1 &
  PIDS+=("$!")
  gen_pids+=("$!")
done

running() { for p in "${gen_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
total=0 last=-1 stable=0
while running; do
  sleep 5
  total=0
  for k in $(seq 0 $((NODES - 1))); do total=$((total + $(established "$k"))); done
  echo "   $(( $(date +%s) - t0 )) s: $total sessions established"
  if [ "$total" -ge $((per * GENERATORS)) ] && [ "$total" = "$last" ]; then
    stable=$((stable + 1))
    [ "$stable" -ge 2 ] && break
  else
    stable=0
  fi
  last=$total
done
echo "== $total sessions established after $(( $(date +%s) - t0 )) s"
after=() grown=0
for k in $(seq 0 $((NODES - 1))); do
  p=${node_pids[$k]}
  r=$(rss_kb "$p")
  after+=("$r")
  grown=$((grown + r - before[k]))
  echo "   node $((k + 1)): $(established "$k") sessions, RSS ${before[$k]} → $r KiB"
done
echo "== nats-server RSS $(rss_kb "$NATS_PID") KiB"
awk -v g="$grown" -v n="$total" -v nodes="$NODES" 'BEGIN {
  printf "== memory per session (all nodes, local session + %d remote handles): %.1f KiB\n",
    nodes - 1, g / n }'
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in "${gen_pids[@]}"; do wait "$p" 2>/dev/null || true; done
grep -h "logins:\|errors\|max-time" "$WORK"/gen*.log | sed 's/^/   /'
