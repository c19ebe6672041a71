#!/usr/bin/env bash
# Presence benchmark of the "under pressure" issue (§1): CLIENTS clients each subscribe to
# their ROSTER ring neighbours and approve every request (CLIENTS × ROSTER approvals, about
# five store writes each), then broadcast presence at RATE updates/s for DURATION s
# (rookery-bench presence) → set-up time, deliveries, latency p50/p99, server CPU per
# delivery; one fresh server per backend, SQLite and PostgreSQL (when scripts/pg-start.sh can
# start one).
#
# Usage: conformance/bench/presence.sh   (release builds of rookery and rookery-bench are made)
# Settings: CLIENTS=2000 ROSTER=50 RATE=200 DURATION=15 BACKENDS="sqlite postgres"
#           BASE_PORT=28500 WORK=<mktemp -d> ROOKERY_BIN BENCH_BIN
#           ROOKERY_TEST_POSTGRES_URL (else a throwaway cluster of scripts/pg-start.sh)
# Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh
CLIENTS=${CLIENTS:-2000}
ROSTER=${ROSTER:-50}
RATE=${RATE:-200}
DURATION=${DURATION:-15}
BACKENDS=${BACKENDS:-"sqlite postgres"}
BASE_PORT=${BASE_PORT:-28500}
WORK=${WORK:-$(mktemp -d /tmp/rookery-presence.XXXXXX)}
PASSWORD=bench-pass
PORT=$((BASE_PORT + 22))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
echo "== work directory: $WORK"

for backend in $BACKENDS; do
  dir="$WORK/$backend"; rm -rf "$dir"; mkdir -p "$dir"
  store=()
  if [ "$backend" = postgres ]; then
    if ! bench_postgres; then
      echo "== postgres: not available, skipped"; continue
    fi
    db="rookery_presence_bench"
    psql -q "$ROOKERY_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    store=('[store]' "url = \"${ROOKERY_TEST_POSTGRES_URL%/*}/$db\"")
  fi
  rookery_config "$dir" "$PORT" '[mam]' 'enabled = false' "${store[@]}"
  "$ROOKERY" -c "$dir/rookery.toml" user add-bulk --count "$CLIENTS" --password "$PASSWORD" >/dev/null
  rookery_serve "$dir" "$PORT"
  echo "-- $backend: $CLIENTS clients × roster $ROSTER (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$BENCH" --port "$PORT" --tls none --password "$PASSWORD" --server-pid "$SERVER_PID" --quiet \
    --login-rate 1000 --duration "$DURATION" -n "$CLIENTS" --json "$WORK/presence-$backend.json" \
    presence --roster-size "$ROSTER" --rate "$RATE" | sed 's/^/   /'
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
done

python3 - "$WORK" <<'EOF'
import json, os, sys
work = sys.argv[1]
print()
for b in ("sqlite", "postgres"):
    p = os.path.join(work, f"presence-{b}.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))["results"]
    s, q = r["setup"], r["presence"]
    cpu = q["server_cpu_s"]
    per = f"{cpu / q['deliveries'] * 1e6:.1f} µs" if cpu and q["deliveries"] else "—"
    print(f"{b}: set-up {s['approvals']} of {s['expected']} approvals in {s['seconds']} s; "
          f"{q['deliveries']} of {q['expected_deliveries']} deliveries, p50 {q['latency_ms']['p50']} ms, "
          f"p99 {q['latency_ms']['p99']} ms, server CPU {per} per delivery")
EOF
