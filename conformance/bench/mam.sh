#!/usr/bin/env bash
# Message archive (XEP-0313) benchmarks of the MAM issue:
#   1. query: an archive of ACCOUNTS × PARTNERS × PER_PAIR messages (default 1,000 × 10 ×
#      100 = 1,000,000), filled straight into the database with the server stopped, then
#      QUERY_CLIENTS clients asking "the last PAGE messages with X" at QUERY_RATE/s for
#      DURATION s (rookery-bench mam) → latency p50/p99 and server CPU per query; on SQLite,
#      and on PostgreSQL when scripts/pg-start.sh can start one (BACKENDS).
#   2. archiving cost: the messages scenario (MSG_CLIENTS in pairs, MSG_RATE/s) with [mam]
#      on and off on fresh servers → server CPU ms per 1,000 messages, both ways (on
#      PostgreSQL also with the database's CPU).
#
# Usage: conformance/bench/mam.sh    (release builds of rookery and rookery-bench are made)
# Settings: ACCOUNTS=1000 PARTNERS=10 PER_PAIR=100 QUERY_CLIENTS=200 QUERY_RATE=200 PAGE=50
#           MSG_CLIENTS=200 MSG_RATE=2000 DURATION=15 BACKENDS="sqlite postgres"
#           BASE_PORT=28200 WORK=<mktemp -d> ROOKERY_BIN BENCH_BIN
#           PHASES="query archiving" (run only some), ARCHIVING="true false" ([mam] enabled
#           values of the archiving phase, in that order), ARCHIVING_BACKENDS="sqlite postgres"
#           (the stores of the archiving phase; default sqlite), PERF_OUT=<file> (records the
#           server of the archiving phase with `perf record --call-graph dwarf` into <file>.<enabled>)
# Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh
ACCOUNTS=${ACCOUNTS:-1000}
PARTNERS=${PARTNERS:-10}
PER_PAIR=${PER_PAIR:-100}
QUERY_CLIENTS=${QUERY_CLIENTS:-200}
QUERY_RATE=${QUERY_RATE:-200}
PAGE=${PAGE:-50}
MSG_CLIENTS=${MSG_CLIENTS:-200}
MSG_RATE=${MSG_RATE:-2000}
DURATION=${DURATION:-15}
BACKENDS=${BACKENDS:-"sqlite postgres"}
PHASES=${PHASES:-"query archiving"}
ARCHIVING=${ARCHIVING:-"true false"}
ARCHIVING_BACKENDS=${ARCHIVING_BACKENDS:-sqlite}
PERF_OUT=${PERF_OUT:-}
BASE_PORT=${BASE_PORT:-28200}
WORK=${WORK:-$(mktemp -d /tmp/rookery-mam.XXXXXX)}
PASSWORD=bench-pass
PORT=$((BASE_PORT + 22))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
echo "== work directory: $WORK"

config() { # config <dir> <store url or ""> <mam enabled>
  local store=()
  [ -z "$2" ] || store=('[store]' "url = \"$2\"")
  rookery_config "$1" "$PORT" '[mam]' "enabled = $3" 'max_page = 100' "${store[@]}"
}

bench() { # bench <json> <args...>
  local json=$1; shift
  "$BENCH" --port "$PORT" --tls none --password "$PASSWORD" --server-pid "$SERVER_PID" --quiet \
    --login-rate 1000 --json "$json" "$@" | sed 's/^/   /'
}

# The archive rows: for account a and partner k, PER_PAIR messages alternating in and out,
# interleaved over time like real conversations (ordered by n, then a, then k).
fill_sql() { # fill_sql <sqlite|postgres>: one INSERT … SELECT for the whole archive
  local seq
  if [ "$1" = sqlite ]; then
    seq="WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < %d) SELECT x FROM s"
  else
    seq="SELECT generate_series(1, %d) AS x"
  fi
  local sa sk sn
  sa=$(printf "$seq" "$ACCOUNTS"); sk=$(printf "$seq" "$PARTNERS"); sn=$(printf "$seq" "$PER_PAIR")
  cat <<SQL
INSERT INTO mam_messages (domain, username, stanza_id, with_jid, ts, stanza)
SELECT 'localhost', 'user' || a.x, 'fill-' || a.x || '-' || k.x || '-' || n.x,
       'user' || (((a.x - 1 + k.x) % $ACCOUNTS) + 1) || '@localhost',
       1700000000 + n.x * 60 + k.x,
       '<message xmlns=''jabber:client'' type=''chat'' id=''f' || n.x || ''' from=''' ||
       CASE WHEN n.x % 2 = 0 THEN 'user' || a.x ELSE 'user' || (((a.x - 1 + k.x) % $ACCOUNTS) + 1) END ||
       '@localhost/bench'' to=''' ||
       CASE WHEN n.x % 2 = 0 THEN 'user' || (((a.x - 1 + k.x) % $ACCOUNTS) + 1) ELSE 'user' || a.x END ||
       '@localhost''><body>message ' || n.x || ' of a conversation that goes on for a while, with some words in it</body></message>'
FROM ($sn) n, ($sa) a, ($sk) k
ORDER BY n.x, a.x, k.x;
SQL
}

phase() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }

phase query && for backend in $BACKENDS; do
  dir="$WORK/query-$backend"; rm -rf "$dir"; mkdir -p "$dir"
  url=""
  if [ "$backend" = postgres ]; then
    if ! bench_postgres; then
      echo "== postgres: not available, skipped"; continue
    fi
    db="rookery_mam_bench"
    psql -q "$ROOKERY_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    url="${ROOKERY_TEST_POSTGRES_URL%/*}/$db"
  fi
  config "$dir" "$url" true
  "$ROOKERY" -c "$dir/rookery.toml" user add-bulk --count "$ACCOUNTS" --password "$PASSWORD" >/dev/null
  total=$((ACCOUNTS * PARTNERS * PER_PAIR))
  echo "== $backend: filling $total archived messages"
  t0=$(date +%s)
  if [ "$backend" = sqlite ]; then
    fill_sql sqlite | python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.stdin.read()); c.commit()" "$dir/data/rookery.db"
  else
    fill_sql postgres | psql -q "$url"
    psql -q "$url" -c "ANALYZE mam_messages"
  fi
  echo "   filled in $(( $(date +%s) - t0 )) s"
  rookery_serve "$dir" "$PORT"
  echo "-- $backend: mam query"
  bench "$WORK/mam-query-$backend.json" -n "$QUERY_CLIENTS" --duration "$DURATION" \
    mam --rate "$QUERY_RATE" --page "$PAGE" --accounts "$ACCOUNTS" --partners "$PARTNERS"
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
done

# The CPU seconds PostgreSQL spent so far: its postmaster with its reaped children (backends
# that ended) and the backends alive now (only for a cluster of scripts/pg-start.sh, whose
# directory names the postmaster).
pg_cpu() {
  local pm; pm=$(head -1 "$ROOKERY_PG_DIR/data/postmaster.pid")
  { awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$c/stat" 2>/dev/null; done
  } | awk -v hz="$(getconf CLK_TCK)" '{ t += $1 } END { printf "%.2f", t / hz }'
}

phase archiving && for backend in $ARCHIVING_BACKENDS; do
  url=""; suffix=""
  if [ "$backend" = postgres ]; then
    if ! bench_postgres; then
      echo "== postgres: not available, archiving on it skipped"; continue
    fi
    suffix="-postgres"
  fi
  for mam in $ARCHIVING; do
    dir="$WORK/archiving$suffix-$mam"; rm -rf "$dir"; mkdir -p "$dir"
    if [ "$backend" = postgres ]; then
      db="rookery_mam_archiving"
      psql -q "$ROOKERY_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
      url="${ROOKERY_TEST_POSTGRES_URL%/*}/$db"
    fi
    config "$dir" "$url" "$mam"
    "$ROOKERY" -c "$dir/rookery.toml" user add-bulk --count "$MSG_CLIENTS" --password "$PASSWORD" >/dev/null
    rookery_serve "$dir" "$PORT"
    echo "-- $backend: messages with [mam] enabled = $mam (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
    perf_pid=""
    if [ -n "$PERF_OUT" ]; then
      perf record -q -F 499 --call-graph dwarf,16384 -p "$SERVER_PID" -o "$PERF_OUT$suffix.$mam" 2>/dev/null & perf_pid=$!
    fi
    pg=""; [ "$backend" = postgres ] && [ -f "${ROOKERY_PG_DIR:-}/data/postmaster.pid" ] && pg=1 && pg0=$(pg_cpu)
    bench "$WORK/mam-archiving$suffix-$mam.json" -n "$MSG_CLIENTS" --duration "$DURATION" \
      messages --rate "$MSG_RATE"
    [ -n "$pg" ] && echo "$pg0 $(pg_cpu)" > "$WORK/pg-cpu$suffix-$mam"
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  done
done

python3 - "$WORK" <<'EOF'
import json, os, sys
work = sys.argv[1]
def load(name):
    p = os.path.join(work, name)
    return json.load(open(p))["results"] if os.path.exists(p) else None
print()
for b in ("sqlite", "postgres"):
    r = load(f"mam-query-{b}.json")
    if r:
        m = r["mam"]
        print(f"{b}: {m['answered']} queries ({m['answered_rate_per_s']}/s), {m['messages_per_query']} messages each, "
              f"p50 {m['latency_ms']['p50']} ms, p99 {m['latency_ms']['p99']} ms, server CPU {m['server_cpu_ms_per_query']} ms/query")
def pg_ms(suffix, mam, r):
    """PostgreSQL's CPU ms per 1,000 messages during the run, if measured."""
    p = os.path.join(work, f"pg-cpu{suffix}-{mam}")
    if not os.path.exists(p):
        return None
    before, after = map(float, open(p).read().split())
    return round((after - before) * 1e6 / r["messages"]["received"], 2)
for name, suffix in (("sqlite", ""), ("postgres", "-postgres")):
    on, off = load(f"mam-archiving{suffix}-true.json"), load(f"mam-archiving{suffix}-false.json")
    if on and off:
        a = on["messages"]["server_cpu_ms_per_1000_messages"]
        b = off["messages"]["server_cpu_ms_per_1000_messages"]
        line = f"archiving ({name}): {a} ms server CPU per 1,000 messages with MAM, {b} without ({(a / b - 1) * 100:+.0f} %)"
        pa, pb = pg_ms(suffix, "true", on), pg_ms(suffix, "false", off)
        if pa is not None and pb is not None:
            line += f"; with PostgreSQL's CPU {a + pa:.1f} and {b + pb:.1f} ({((a + pa) / (b + pb) - 1) * 100:+.0f} %)"
        print(line)
EOF
