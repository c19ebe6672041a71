#!/usr/bin/env bash
# Side-by-side load test of Rookery, Prosody and ejabberd on this machine with rookery-bench.
#
# Installs Prosody and ejabberd from Debian if missing (apt-get; needs root), builds Rookery
# and rookery-bench in release mode, then for each server in turn: writes a private instance
# on loopback (own config, data dir, self-signed certificate, ports of its own), creates the
# same accounts (Rookery: `rookery user add-bulk`; Prosody and ejabberd: in-band registration
# with `rookery-bench register`), then runs the same scenarios:
#   1. connect-plain: SESSIONS idle sessions without TLS (fresh server process),
#   2. connect:       SESSIONS idle sessions over STARTTLS (fresh server process again: a
#                     process that has served sessions before reuses their freed pages, so
#                     memory per session must come from a fresh one),
#   3. messages, 4. pubsub, 5. muc: one room's fan-out (same process as 2),
#   6. web (WEB_SESSIONS > 0): for WebSocket (RFC 7395) and BOSH (XEP-0206), each on a fresh
#      process: WEB_SESSIONS idle sessions (a BOSH session holds one request), then messages
#      over that transport; plus the same messages over plain TCP as the baseline.
#   7. archive (PHASES=archive, not run by default): the messages scenario (plain TCP) on a
#      fresh process with the server's message archive (XEP-0313) off, then on, for what
#      archiving costs each server per message. Each archives into its embedded store:
#      Rookery SQLite, Prosody mod_mam on SQLite (`storage = { archive = "sql" }`, LuaDBI's
#      SQLite3 driver, installed from Debian), ejabberd mod_mam on Mnesia, every message
#      archived (`default: always`).
# Prints the tables and writes every JSON summary to $WORK.
#
# For the plain run every server accepts authentication without TLS (Rookery:
# `[c2s] require_encryption = false`; Prosody: `c2s_require_encryption = false`; ejabberd:
# `starttls_required: false`); STARTTLS stays offered and the other runs use it.
#
# Usage: conformance/bench/compare.sh            (modest defaults: a few minutes on 2 cores)
#        SESSIONS=10000 LOGIN_RATE=500 conformance/bench/compare.sh
#
# Settings (environment):
#   SESSIONS=2000       idle sessions for the memory and login figures (connect scenario)
#   LOGIN_RATE=1000     logins offered per second (the achieved rate is what is reported)
#   INFLIGHT=128        logins in flight at once
#   MSG_CLIENTS=1000    clients in the messages scenario (pairs)
#   MSG_RATE=2000       messages per second offered in total
#   DURATION=15         seconds of each measured phase
#   PUBSUB_SUBS=500     subscribers of the pubsub scenario (0 skips it)
#   PUBSUB_RATE=5       items published per second
#   MUC_OCCUPANTS=500   occupants of the muc scenario's room (0 skips it)
#   MUC_RATE=20         groupchat messages per second in that room
#   WEB_SESSIONS=2000   idle WebSocket and BOSH sessions of the web runs (0 skips them)
#   SERVERS="rookery prosody ejabberd"
#   ROOKERY_MAM=false   Rookery's message archive ([mam] enabled): off by default here, since
#                       neither peer's instance loads mod_mam, so the message path compares
#                       like with like (Rookery's zero-config default is on)
#   BASE_PORT=25200     Rookery uses +22/+23 (HTTP +80), Prosody +32 (HTTP +81), ejabberd +42
#                       (HTTP +82)
#   WORK=<mktemp -d>    where configs, data, logs and JSON go
#   ROOKERY_BIN, BENCH_BIN  use these binaries instead of building target/release ones
#   SCRAM_CACHE=0       1 lets the generator reuse the client's PBKDF2 result across logins
#                       (see below)
#   TABLE_ONLY=1        only print the table from the JSON already in $WORK
#   PIN=1               one core each: the server (and what it starts) on CPU 0, the generator
#                       on CPU 1 (taskset), so the figures show the server's limit on one
#                       core, not the generator's
#   SWEEP_RATES="1000 2000 4000 8000"  the rate sweep (after the other runs, a fresh process
#                       per transport): the messages scenario at each offered rate, plain and
#                       over STARTTLS, up to the first rate not sustained; sustained means
#                       nothing lost, at least 98 % of the offered rate delivered and p99
#                       under 50 ms. Empty (default): no sweep
#   SWEEP_LOGIN_RATES="250 500 1000 2000"  the login sweep: SESSIONS sessions log in over
#                       STARTTLS, then for SWEEP_DURATION seconds sessions log out and in again
#                       (churn scenario) at each rate; achieved rate, p99 and the server's CPU
#                       per logout + login. The generator keeps every account's SCRAM result
#                       (as clients that store their SCRAM keys do), so after an account's
#                       first login its PBKDF2 is not redone — for every server alike — and
#                       the generator's core is not what limits the rate
#   SWEEP_DURATION=10   seconds per sweep step
#   CERT_KEY=rsa2048    the key of the certificate all three servers present: rsa2048, or p256
#                       (ECDSA, what Rookery's own self-signed certificate and most ACME
#                       clients' defaults use). The server's TLS handshake signs with it once
#                       per login: an RSA-2048 signature is about 1 ms of CPU, a P-256 one a
#                       small fraction of that, so the login figures depend on it
#   PHASES="main web sweep"  which runs to make (web needs WEB_SESSIONS > 0, sweep a rate list;
#                       archive only when named)
#   ARCHIVE_RATE=$MSG_RATE  messages per second offered in the archive runs
#
# Every server gets the same work: STARTTLS (except the plain run), SCRAM-SHA-1 with 4096
# PBKDF2 iterations (the one mechanism all three store by default), roster fetch off, initial
# presence on. The generator's work per login is the same too: by default it runs the
# client's PBKDF2 for every login (--no-scram-cache). Rookery's bulk-created accounts share
# one salt, Prosody's and ejabberd's each have their own, so with SCRAM_CACHE=1 only the
# Rookery runs would skip that work and leave more of the CPU to the server; use it only to
# shorten the ramps when the login rate is not what you are comparing.
# Only loopback is used; nothing listens on other interfaces.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh

SESSIONS=${SESSIONS:-2000}
LOGIN_RATE=${LOGIN_RATE:-1000}
INFLIGHT=${INFLIGHT:-128}
MSG_CLIENTS=${MSG_CLIENTS:-1000}
MSG_RATE=${MSG_RATE:-2000}
DURATION=${DURATION:-15}
PUBSUB_SUBS=${PUBSUB_SUBS:-500}
PUBSUB_RATE=${PUBSUB_RATE:-5}
MUC_OCCUPANTS=${MUC_OCCUPANTS:-500}
MUC_RATE=${MUC_RATE:-20}
ROOKERY_MAM=${ROOKERY_MAM:-false}
WEB_SESSIONS=${WEB_SESSIONS:-2000}
SERVERS=${SERVERS:-"rookery prosody ejabberd"}
BASE_PORT=${BASE_PORT:-25200}
SCRAM_CACHE=${SCRAM_CACHE:-0}
PIN=${PIN:-0}
SWEEP_RATES=${SWEEP_RATES:-}
SWEEP_LOGIN_RATES=${SWEEP_LOGIN_RATES:-}
SWEEP_DURATION=${SWEEP_DURATION:-10}
PHASES=${PHASES:-"main web sweep"}
ARCHIVE_RATE=${ARCHIVE_RATE:-$MSG_RATE}
CERT_KEY=${CERT_KEY:-rsa2048}
WORK=${WORK:-$(mktemp -d /tmp/rookery-compare.XXXXXX)}
PASSWORD=bench-pass
DOMAIN=localhost
ACCOUNTS=$(( SESSIONS > MSG_CLIENTS ? SESSIONS : MSG_CLIENTS ))
ACCOUNTS=$(( ACCOUNTS > PUBSUB_SUBS + 1 ? ACCOUNTS : PUBSUB_SUBS + 1 ))
ACCOUNTS=$(( ACCOUNTS > MUC_OCCUPANTS ? ACCOUNTS : MUC_OCCUPANTS ))
ACCOUNTS=$(( ACCOUNTS > WEB_SESSIONS ? ACCOUNTS : WEB_SESSIONS ))
mkdir -p "$WORK"
echo "== work directory: $WORK"

# ---- prerequisites -------------------------------------------------------------------------
need=()
[[ " $SERVERS " == *" prosody "* ]] && ! command -v prosody >/dev/null && need+=(prosody)
[[ " $SERVERS " == *" ejabberd "* ]] && ! command -v ejabberdctl >/dev/null && need+=(ejabberd)
# Prosody's SQL storage reaches SQLite through LuaDBI (the archive phase).
[[ " $SERVERS " == *" prosody "* && " $PHASES " == *" archive "* ]] \
  && ! dpkg-query -W -f='${Status}' lua-dbi-sqlite3 2>/dev/null | grep -qx 'install ok installed' \
  && need+=(lua-dbi-sqlite3)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  # The packages start system instances on the default ports where an init system runs;
  # ours are private and use other ports, so both can coexist.
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_binaries

certs="$WORK/certs"
mkdir -p "$certs"
case $CERT_KEY in
  rsa2048) key_args=(-newkey rsa:2048) ;;
  p256) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  *) echo "CERT_KEY must be rsa2048 or p256, not $CERT_KEY" >&2; exit 2 ;;
esac
if [ ! -f "$certs/$DOMAIN.key" ] || [ "$(cat "$certs/key-kind" 2>/dev/null)" != "$CERT_KEY" ]; then
  openssl req -x509 "${key_args[@]}" -nodes -days 30 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN,DNS:*.$DOMAIN" \
    -keyout "$certs/$DOMAIN.key" -out "$certs/$DOMAIN.crt" 2>/dev/null
  cat "$certs/$DOMAIN.crt" "$certs/$DOMAIN.key" > "$certs/$DOMAIN.pem"
  echo "$CERT_KEY" > "$certs/key-kind"
  chmod 644 "$certs"/*
fi

cache_flag=()
[ "$SCRAM_CACHE" = 1 ] || cache_flag=(--no-scram-cache)
# PIN=1: prefixes of the server's and the generator's commands (empty otherwise).
on_server_cpu=() on_bench_cpu=()
if [ "$PIN" = 1 ]; then
  on_server_cpu=(taskset -c 0) on_bench_cpu=(taskset -c 1)
fi
phase() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }

bench() { # bench <server> <scenario-name> <port> <pid> <args...>
  local server=$1 name=$2 port=$3 pid=$4
  shift 4
  echo "-- $server: $name"
  "${on_bench_cpu[@]}" "$BENCH" --port "$port" --domain "$DOMAIN" --insecure --mechanism scram-sha1 \
    --password "$PASSWORD" --max-inflight "$INFLIGHT" --server-pid "$pid" --label "$server" \
    "${cache_flag[@]}" --quiet --json "$WORK/$server-$name.json" "$@" | sed 's/^/   /'
}

# Each server has start_<server> (sets SERVER_PID, returns once the port accepts);
# stop_server stops it (through stop_<server> where a server needs more than a signal);
# run_<server> writes its config and accounts, then calls run_scenarios.
stop_server() { # stop_server <server>
  if declare -F "stop_$1" >/dev/null; then "stop_$1"; return; fi
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
}

SERVER_PID=

run_scenarios() { # run_scenarios <server> <port>
  local server=$1 port=$2
  if phase main; then run_main "$server" "$port"; fi
  if phase web && [ "$WEB_SESSIONS" -gt 0 ]; then run_web "$server" "$port"; fi
  if phase sweep; then run_sweep "$server" "$port"; fi
  # Last: it rewrites the server's configuration.
  if phase archive; then run_archive "$server" "$port"; fi
  return 0
}

# Whether the configuration being written archives messages: the archive phase sets it.
ARCHIVE=""

run_archive() { # run_archive <server> <port>: messages without, then with the message archive
  local server=$1 port=$2 on
  for on in false true; do
    ARCHIVE=$on "config_$server"
    "start_$server"
    sleep 2
    bench "$server" "archive-$on" "$port" "$SERVER_PID" --tls none -n "$MSG_CLIENTS" \
      --login-rate "$LOGIN_RATE" --duration "$DURATION" messages --rate "$ARCHIVE_RATE" || true
    stop_server "$server"
  done
}

run_main() { # run_main <server> <port>: memory, logins, messages, pubsub and room fan-out
  local server=$1 port=$2
  "start_$server"
  sleep 5 # let the server settle (GC, caches) before the memory baseline
  bench "$server" connect-plain "$port" "$SERVER_PID" --tls none -n "$SESSIONS" \
    --login-rate "$LOGIN_RATE" --duration 5 connect
  stop_server "$server"
  "start_$server"
  sleep 5
  bench "$server" connect "$port" "$SERVER_PID" -n "$SESSIONS" --login-rate "$LOGIN_RATE" \
    --duration 5 connect
  sleep 2
  bench "$server" messages "$port" "$SERVER_PID" -n "$MSG_CLIENTS" --login-rate "$LOGIN_RATE" \
    --duration "$DURATION" messages --rate "$MSG_RATE"
  if [ "$PUBSUB_SUBS" -gt 0 ]; then
    sleep 2
    bench "$server" pubsub "$port" "$SERVER_PID" -n $((PUBSUB_SUBS + 1)) \
      --login-rate "$LOGIN_RATE" --duration "$DURATION" pubsub --rate "$PUBSUB_RATE" || true
  fi
  if [ "$MUC_OCCUPANTS" -gt 0 ]; then
    sleep 2
    bench "$server" muc "$port" "$SERVER_PID" -n "$MUC_OCCUPANTS" \
      --login-rate "$LOGIN_RATE" --duration "$DURATION" muc --rate "$MUC_RATE" || true
  fi
  stop_server "$server"
}

sustained() { # sustained <json>: the run delivered what was offered, p99 under 50 ms
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["results"]["messages"]
ok = (m["lost"] == 0 and m["received_rate_per_s"] >= 0.98 * m["offered_rate_per_s"]
      and m["latency_ms"]["p99"] < 50)
sys.exit(0 if ok else 1)
PY
}

run_sweep() { # run_sweep <server> <port>: the highest message and login rates sustained
  local server=$1 port=$2 tls rate tls_flag
  for tls in plain tls; do
    [ -n "$SWEEP_RATES" ] || break
    tls_flag=(); [ "$tls" = plain ] && tls_flag=(--tls none)
    rm -f "$WORK/$server-sweep-$tls.sustained"
    "start_$server"
    sleep 2
    for rate in $SWEEP_RATES; do
      bench "$server" "sweep-$tls-$rate" "$port" "$SERVER_PID" "${tls_flag[@]}" \
        -n "$MSG_CLIENTS" --login-rate "$LOGIN_RATE" --duration "$SWEEP_DURATION" \
        messages --rate "$rate" || break
      sustained "$WORK/$server-sweep-$tls-$rate.json" || break
      # What the table reports as this server's sustained rate (the criterion lives here).
      echo "$rate" > "$WORK/$server-sweep-$tls.sustained"
    done
    stop_server "$server"
  done
  if [ -n "$SWEEP_LOGIN_RATES" ]; then
    "start_$server"
    sleep 2
    local cache_flag=(--scram-cache-size "$SESSIONS")
    for rate in $SWEEP_LOGIN_RATES; do
      bench "$server" "sweep-login-$rate" "$port" "$SERVER_PID" -n "$SESSIONS" \
        --login-rate "$LOGIN_RATE" --duration "$SWEEP_DURATION" churn --rate "$rate" || break
    done
    stop_server "$server"
  fi
}

run_web() { # run_web <server> <c2s port>: the web transports on the server's HTTP port
  local server=$1 port=$2 http t
  case $server in
    rookery) http=$((BASE_PORT + 80)) ;;
    prosody) http=$((BASE_PORT + 81)) ;;
    ejabberd) http=$((BASE_PORT + 82)) ;;
  esac
  "start_$server"
  sleep 2
  bench "$server" messages-tcp-plain "$port" "$SERVER_PID" --tls none -n "$MSG_CLIENTS" \
    --login-rate "$LOGIN_RATE" --duration "$DURATION" messages --rate "$MSG_RATE" || true
  stop_server "$server"
  for t in websocket bosh; do
    "start_$server"
    sleep 5
    bench "$server" "connect-$t" "$http" "$SERVER_PID" --transport "$t" --tls none \
      -n "$WEB_SESSIONS" --login-rate "$LOGIN_RATE" --duration 5 connect || true
    sleep 2
    bench "$server" "messages-$t" "$http" "$SERVER_PID" --transport "$t" --tls none \
      -n "$MSG_CLIENTS" --login-rate "$LOGIN_RATE" --duration "$DURATION" \
      messages --rate "$MSG_RATE" || true
    stop_server "$server"
  done
}

register() { # register <server> <port>: creates the accounts in band (XEP-0077)
  echo "-- $1: registering $ACCOUNTS accounts in band"
  "${on_bench_cpu[@]}" "$BENCH" --port "$2" --domain "$DOMAIN" --insecure --password "$PASSWORD" -q \
    -n "$ACCOUNTS" --login-rate 2000 --max-inflight 64 --json "$WORK/$1-register.json" \
    register | sed 's/^/   /'
}

# ---- Rookery -------------------------------------------------------------------------------
start_rookery() {
  rookery_serve "$WORK/rookery" $((BASE_PORT + 22)) "${on_server_cpu[@]}" "$ROOKERY"
}

config_rookery() { # writes the configuration ([mam] from ARCHIVE, else ROOKERY_MAM)
  local dir="$WORK/rookery" port=$((BASE_PORT + 22))
  rookery_config --listen c2s_direct_tls="127.0.0.1:$((BASE_PORT + 23))" \
    --listen http="127.0.0.1:$((BASE_PORT + 80))" "$dir" "$port" \
    'session_queue = 1024' \
    '[http]' 'bosh_max_sessions_per_ip = 100000' \
    '[tls]' "cert = \"$certs/$DOMAIN.crt\"" "key = \"$certs/$DOMAIN.key\"" \
    '[muc]' 'default_max_occupants = 1000' \
    '[mam]' "enabled = ${ARCHIVE:-$ROOKERY_MAM}"
}

run_rookery() {
  local dir="$WORK/rookery" port=$((BASE_PORT + 22))
  rm -rf "$dir"; mkdir -p "$dir"
  config_rookery
  "$ROOKERY" -c "$dir/rookery.toml" user add-bulk --count "$ACCOUNTS" --password "$PASSWORD" >/dev/null
  echo "$("$ROOKERY" --version)" > "$WORK/rookery.version"
  run_scenarios rookery "$port"
}

# ---- Prosody -------------------------------------------------------------------------------
start_prosody() {
  local dir="$WORK/prosody"
  "${on_server_cpu[@]}" prosody --config "$dir/prosody.cfg.lua" -F >> "$dir/stdout.log" 2>&1 &
  SERVER_PID=$!
  wait_port $((BASE_PORT + 32))
}

config_prosody() { # writes the configuration (mod_mam on SQLite when ARCHIVE=true)
  local dir="$WORK/prosody" port=$((BASE_PORT + 32)) mam="" storage='storage = "internal"'
  if [ "$ARCHIVE" = true ]; then
    mam='; "mam"'
    storage='default_storage = "internal"
storage = { archive = "sql" }
sql = { driver = "SQLite3"; database = "archive.sqlite" }
default_archive_policy = true
archive_expires_after = "never"'
  fi
  cat > "$dir/prosody.cfg.lua" <<EOF
-- Private Prosody for rookery-bench: loopback only, no s2s, no rate limits; HTTP for the
-- web transports (mod_websocket, mod_bosh) only.
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { warn = "$dir/prosody.log" }
network_backend = "epoll"
interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_direct_tls_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "smacks"; "pep";
                    "websocket"; "bosh"$mam }
http_interfaces = { "127.0.0.1" }
http_ports = { $((BASE_PORT + 81)) }
https_ports = { }
consider_websocket_secure = true
consider_bosh_secure = true
modules_disabled = { "s2s"; "offline" }
c2s_require_encryption = false
allow_registration = true
authentication = "internal_hashed"
default_iteration_count = 4096
$storage
certificates = "$certs"
ssl = { certificate = "$certs/$DOMAIN.crt"; key = "$certs/$DOMAIN.key" }
admins = { "user1@$DOMAIN" }
VirtualHost "$DOMAIN"
Component "pubsub.$DOMAIN" "pubsub"
Component "conference.$DOMAIN" "muc"
EOF
}

run_prosody() {
  local dir="$WORK/prosody" port=$((BASE_PORT + 32))
  rm -rf "$dir"; mkdir -p "$dir/data"
  config_prosody
  dpkg-query -W -f='Prosody ${Version}\n' prosody > "$WORK/prosody.version"
  start_prosody
  register prosody "$port"
  stop_server prosody
  run_scenarios prosody "$port"
}

# ---- ejabberd ------------------------------------------------------------------------------
EJABBERD_NODE="rookerybench@localhost"

start_ejabberd() {
  ejabberd_start "$WORK/ejabberd" "$EJABBERD_NODE" $((BASE_PORT + 42)) "${on_server_cpu[@]}"
}

stop_ejabberd() {
  ejabberd_stop "$WORK/ejabberd" "$EJABBERD_NODE" "$SERVER_PID"
}

config_ejabberd() { # writes the configuration (mod_mam on Mnesia when ARCHIVE=true)
  local mam=""
  [ "$ARCHIVE" = true ] && mam='  mod_mam:
    default: always'
  # c2s with STARTTLS offered, and HTTP for the web transports (ejabberd_http_ws, mod_bosh).
  ejabberd_config "$WORK/ejabberd" "$EJABBERD_NODE" "  -
    port: $((BASE_PORT + 42))
    ip: \"127.0.0.1\"
    module: ejabberd_c2s
    max_stanza_size: 262144
    starttls: true
    starttls_required: false
    backlog: 128
    access: all
  -
    port: $((BASE_PORT + 82))
    ip: \"127.0.0.1\"
    module: ejabberd_http
    request_handlers:
      /xmpp-websocket: ejabberd_http_ws
      /http-bind: mod_bosh" "  mod_caps: {}
  mod_stream_mgmt: {}
  mod_bosh: {}
  mod_muc:
    access_create: local
    max_users: 1000
    default_room_options:
      max_users: 1000
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
$mam" "certfiles:
  - $certs/$DOMAIN.pem"
}

run_ejabberd() {
  local dir="$WORK/ejabberd" port=$((BASE_PORT + 42))
  rm -rf "$dir"
  config_ejabberd
  dpkg-query -W -f='ejabberd ${Version}\n' ejabberd > "$WORK/ejabberd.version"
  start_ejabberd
  register ejabberd "$port"
  stop_server ejabberd
  run_scenarios ejabberd "$port"
}

if [ -z "${TABLE_ONLY:-}" ]; then
  for s in $SERVERS; do
    echo "== $s"
    "run_$s"
  done
fi

# ---- the table -----------------------------------------------------------------------------
python3 - "$WORK" $SERVERS <<'EOF'
import json, os, sys
work, servers = sys.argv[1], sys.argv[2:]
def load(s, name):
    p = os.path.join(work, f"{s}-{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def g(d, *path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d
def f(x, fmt="{:.0f}"):
    return "n/a" if x is None else fmt.format(x)
rows = []
for s in servers:
    c, m, p = load(s, "connect"), load(s, "messages"), load(s, "pubsub")
    mu = load(s, "muc")
    cp = load(s, "connect-plain")
    if not any((c, m, p, mu, cp)):
        continue  # PHASES without main
    ver = open(os.path.join(work, f"{s}.version")).read().strip() if os.path.exists(os.path.join(work, f"{s}.version")) else s
    def kib(run):
        per = g(run, "results", "idle_memory", "bytes_per_session")
        return f(per / 1024 if per is not None else None, "{:.1f}")
    row = [ver,
           f(g(c, "results", "idle_memory", "sessions")),
           kib(cp),
           kib(c),
           f(g(c, "results", "login", "rate_per_s")),
           f(g(c, "results", "login", "latency_ms", "p99"), "{:.0f}"),
           f(g(m, "results", "messages", "offered_rate_per_s")),
           f(g(m, "results", "messages", "received_rate_per_s")),
           f(g(m, "results", "messages", "latency_ms", "p50"), "{:.2f}"),
           f(g(m, "results", "messages", "latency_ms", "p99"), "{:.2f}"),
           f(g(m, "results", "messages", "lost")),
           f(g(m, "results", "messages", "server_cpu_ms_per_1000_messages"), "{:.0f}"),
           str(sum(sum((g(x, "errors") or {}).values()) for x in (cp, c, m) if x))]
    row.append(f"{f(g(p, 'results', 'pubsub', 'delivery_rate_per_s'))}/s p99 {f(g(p, 'results', 'pubsub', 'latency_ms', 'p99'), '{:.1f}')} ms" if p else "")
    row.append(f"{f(g(mu, 'results', 'muc', 'occupants'))} occupants, {f(g(mu, 'results', 'muc', 'delivery_rate_per_s'))}/s p99 {f(g(mu, 'results', 'muc', 'latency_ms', 'p99'), '{:.1f}')} ms, {f(g(mu, 'results', 'muc', 'server_cpu_us_per_delivery'), '{:.1f}')} µs CPU/delivery" if mu else "")
    rows.append(row)
head = ["server", "idle sessions", "KiB/session plain", "KiB/session TLS", "logins/s (TLS)",
        "login p99 ms",
        "msgs offered/s", "msgs delivered/s", "msg p50 ms", "msg p99 ms", "lost",
        "server CPU ms/1000 msgs", "errors"]
head += ["pubsub fan-out", "muc fan-out"]
if rows:
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
for r in rows:
    r += [""] * (len(head) - len(r))
    print("| " + " | ".join(r) + " |")

# The web transports (WEB_SESSIONS > 0): idle memory, then messages against plain TCP.
head = ["server", "idle sessions", "KiB/session WebSocket", "KiB/session BOSH (1 held request)"]
for t in ("TCP", "WebSocket", "BOSH"):
    head += [f"msg p50 / p99 ms {t}", f"server CPU ms/1000 msgs {t}"]
head += ["lost", "errors"]
rows = []
for s in servers:
    runs = {n: load(s, n) for n in ("connect-websocket", "connect-bosh", "messages-tcp-plain",
                                    "messages-websocket", "messages-bosh")}
    if not any(runs.values()):
        continue
    ver = open(os.path.join(work, f"{s}.version")).read().strip() if os.path.exists(os.path.join(work, f"{s}.version")) else s
    def kib(run):
        per = g(run, "results", "idle_memory", "bytes_per_session")
        return f(per / 1024 if per is not None else None, "{:.1f}")
    row = [ver, f(g(runs["connect-websocket"], "results", "idle_memory", "sessions")),
           kib(runs["connect-websocket"]), kib(runs["connect-bosh"])]
    for n in ("messages-tcp-plain", "messages-websocket", "messages-bosh"):
        m = runs[n]
        row += [f"{f(g(m, 'results', 'messages', 'latency_ms', 'p50'), '{:.2f}')} / {f(g(m, 'results', 'messages', 'latency_ms', 'p99'), '{:.2f}')}",
                f(g(m, "results", "messages", "server_cpu_ms_per_1000_messages"), "{:.0f}")]
    row.append(str(sum(g(runs[n], "results", "messages", "lost") or 0 for n in runs if n.startswith("messages"))))
    row.append(str(sum(sum((g(x, "errors") or {}).values()) for x in runs.values() if x)))
    rows.append(row)
if rows:
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

# The archive phase: the same messages without and with the server's message archive.
rows = []
for s in servers:
    off, on = load(s, "archive-false"), load(s, "archive-true")
    if not (off and on):
        continue
    ver = open(os.path.join(work, f"{s}.version")).read().strip() if os.path.exists(os.path.join(work, f"{s}.version")) else s
    a = g(off, "results", "messages", "server_cpu_ms_per_1000_messages")
    b = g(on, "results", "messages", "server_cpu_ms_per_1000_messages")
    row = [ver]
    for m in (off, on):
        row += [f"{f(g(m, 'results', 'messages', 'received_rate_per_s'))}/{f(g(m, 'results', 'messages', 'offered_rate_per_s'))}",
                f"{f(g(m, 'results', 'messages', 'latency_ms', 'p50'), '{:.2f}')} / {f(g(m, 'results', 'messages', 'latency_ms', 'p99'), '{:.2f}')}",
                f(g(m, "results", "messages", "server_cpu_ms_per_1000_messages"), "{:.1f}")]
    row.append("n/a" if a is None or b is None else f"{(b / a - 1) * 100:+.0f} % ({b - a:.1f} ms)")
    rows.append(row)
if rows:
    head = ["server"]
    for k in ("off", "on"):
        head += [f"delivered/offered per s, archive {k}", f"msg p50 / p99 ms, {k}", f"server CPU ms/1000 msgs, {k}"]
    head.append("archiving costs (per 1,000 messages)")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

# The sweep (SWEEP_RATES / SWEEP_LOGIN_RATES): per server, the highest offered rate sustained
# (as run_sweep judged it with `sustained`) and its server CPU per 1,000 messages; the best
# achieved login rate.
import glob, re
def sweep(s, kind):
    out = []
    for p in glob.glob(os.path.join(work, f"{s}-sweep-{kind}-*.json")):
        rate = int(re.search(r"-(\d+)\.json$", p).group(1))
        out.append((rate, json.load(open(p))))
    return sorted(out, key=lambda x: x[0])
rows = []
for s in servers:
    ver = open(os.path.join(work, f"{s}.version")).read().strip() if os.path.exists(os.path.join(work, f"{s}.version")) else s
    row = [ver]
    for kind in ("plain", "tls"):
        runs = sweep(s, kind)
        mark = os.path.join(work, f"{s}-sweep-{kind}.sustained")
        top = int(open(mark).read()) if os.path.exists(mark) else None
        best = next(((r, g(d, "results", "messages")) for r, d in runs if r == top), None)
        row.append("n/a" if best is None else
                   f"{best[0]}/s (p99 {best[1]['latency_ms']['p99']:.1f} ms, {f(best[1].get('server_cpu_ms_per_1000_messages'))} ms CPU/1000)")
        row.append(", ".join(str(r) for r, _ in runs))
    logins = [(r, g(d, "results", "churn")) for r, d in sweep(s, "login")]
    logins = [(r, l) for r, l in logins if l and l.get("rate_per_s")]
    top = max(logins, key=lambda x: x[1]["rate_per_s"], default=None)
    row.append("n/a" if top is None else
               f"{top[1]['rate_per_s']:.0f}/s at {top[0]}/s offered (p99 {top[1]['reconnect_latency_ms']['p99']:.0f} ms,"
               f" {f(top[1].get('server_cpu_ms_per_reconnect'), '{:.2f}')} ms server CPU per logout + login)")
    if any(x not in ("n/a", "") for x in row[1:]):
        rows.append(row)
if rows:
    head = ["server", "messages sustained, plain", "rates tried", "messages sustained, STARTTLS",
            "rates tried", "logins/s achieved (STARTTLS, churn)"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
EOF
echo
echo "JSON summaries: $WORK/*.json"
