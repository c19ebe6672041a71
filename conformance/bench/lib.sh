# shellcheck shell=bash
# Pieces the benchmark scripts here share. Most source it after `cd` to the repository root
# (bench_binaries builds there); the scripts that take build directories relative to the
# caller's directory (allocators.sh, before-after.sh, instructions.sh) source it without moving.
#
# The scripts' default ports are below 32768, out of Linux's ephemeral range (32768–60999):
# a generator that opens thousands of connections takes local ports from that range, and a
# server started next could find its port still held by one of them ("address already in
# use" — ejabberd failed to start that way after a login sweep).

# bench_binaries: sets ROOKERY and BENCH — ROOKERY_BIN and BENCH_BIN when both are given,
# else release builds of this checkout (made here).
bench_binaries() {
  if [ -n "${ROOKERY_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
    ROOKERY=$ROOKERY_BIN BENCH=$BENCH_BIN
  else
    echo "== building (release)"
    cargo build --release -q -p rookery -p rookery-bench
    ROOKERY="$PWD/target/release/rookery" BENCH="$PWD/target/release/rookery-bench"
  fi
}

# wait_port <port> [log]: until something accepts on 127.0.0.1:<port>, PORT_WAIT seconds at
# most (60 unless the caller sets it: `PORT_WAIT=120 rookery_serve …` for a server that starts
# slowly, under valgrind); the log named in the error is where to look when nothing does.
wait_port() {
  for _ in $(seq 1 $(( ${PORT_WAIT:-60} * 5 ))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on $1${2:+: $2}" >&2
  return 1
}

# rookery_config [--listen NAME=ADDR | --omit NAME]... <dir> <c2s-port> [TOML line]...
# writes <dir>/rookery.toml (making <dir>) for a benchmark server: domain localhost (the
# generator's default), data in <dir>/data, plain c2s on 127.0.0.1:<c2s-port> with
# authentication allowed without TLS (the generators run --tls none), warnings only in the log,
# and every other listener (c2s_direct_tls, admin, http, https) off, so that servers started
# one after another, or side by side as cluster nodes, never contend for a default port.
# --listen NAME=ADDR turns listener NAME on at ADDR instead; --omit NAME leaves its key out
# (the server's default, or a build too old to know the key). The TOML lines are the script's
# own settings, written right after data_dir: top-level keys first, then its sections.
# One function for every script, so that what their servers share is written once and what
# sets one benchmark apart is what its call passes.
rookery_config() {
  local -A listen=([c2s_direct_tls]="" [admin]="" [http]="" [https]="")
  local omit=" " name
  while :; do
    case ${1:-} in
      --listen|--omit)
        name=${2%%=*}
        [[ -v listen[$name] ]] || { echo "rookery_config: no listener $name" >&2; return 2; }
        if [ "$1" = --omit ]; then omit+="$name "; else listen[$name]=${2#*=}; fi
        shift 2 ;;
      *) break ;;
    esac
  done
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  {
    printf 'domain = "localhost"\ndata_dir = "%s/data"\n' "$dir"
    [ $# -eq 0 ] || printf '%s\n' "$@"
    printf '[listen]\nc2s = "127.0.0.1:%s"\n' "$port"
    for name in c2s_direct_tls admin http https; do
      [[ $omit == *" $name "* ]] || printf '%s = "%s"\n' "$name" "${listen[$name]}"
    done
    printf '[c2s]\nrequire_encryption = false\n[log]\nlevel = "warn"\n'
  } > "$dir/rookery.toml"
}

# rookery_serve <dir> <port> [command...]: starts `<command> -c <dir>/rookery.toml serve` in the
# background (command: "$ROOKERY" unless given, e.g. another build's binary, or it behind
# taskset or valgrind), output appended to <dir>/server.log; sets SERVER_PID and returns once
# <port> accepts, so the generator that follows finds the server listening.
rookery_serve() {
  local dir=$1 port=$2
  shift 2
  [ $# -gt 0 ] || set -- "$ROOKERY"
  "$@" -c "$dir/rookery.toml" serve >> "$dir/server.log" 2>&1 &
  # shellcheck disable=SC2034 # the caller's: its generator's --server-pid, its kill
  SERVER_PID=$!
  wait_port "$port" "$dir/server.log"
}

# bench_postgres: makes ROOKERY_TEST_POSTGRES_URL name a PostgreSQL server — the one already
# named, else a throwaway cluster of scripts/pg-start.sh, stopped when the script exits (an
# EXIT trap: for scripts without one of their own); fails if neither is possible.
bench_postgres() {
  [ -n "${ROOKERY_TEST_POSTGRES_URL:-}" ] && return 0
  eval "$(scripts/pg-start.sh 2>/dev/null)" || return 1
  [ -n "${ROOKERY_TEST_POSTGRES_URL:-}" ] || return 1
  BENCH_PG_DIR=$ROOKERY_PG_DIR
  trap 'scripts/pg-stop.sh "$BENCH_PG_DIR" >/dev/null 2>&1 || true' EXIT
}

# cluster_store <database>: what a Rookery cluster of these benchmarks stands on — nats-server
# ($NATS) at hand, and a fresh PostgreSQL database <database> on the server of
# ROOKERY_TEST_POSTGRES_URL (else of scripts/pg-start.sh, left running); sets URL to it.
cluster_store() {
  [ -x "$NATS" ] || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
  if [ -z "${ROOKERY_TEST_POSTGRES_URL:-}" ]; then
    eval "$(scripts/pg-start.sh)"
  fi
  psql -q "$ROOKERY_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" \
    -c "CREATE DATABASE $1"
  URL="${ROOKERY_TEST_POSTGRES_URL%/*}/$1"
}

# A private ejabberd instance lives in a directory of its own: ejabberd.yml, ejabberdctl.cfg,
# spool/ (Mnesia) and logs/, owned by the ejabberd user; its Erlang node is <node>.
# ejabberd_ctl <dir> <node> <args…>: that instance's ejabberdctl.
ejabberd_ctl() {
  local dir=$1 node=$2
  shift 2
  ejabberdctl --config "$dir/ejabberd.yml" --ctl-config "$dir/ejabberdctl.cfg" \
    --node "$node" --spool "$dir/spool" --logs "$dir/logs" "$@"
}

# ejabberd_config <dir> <node> <listeners> <modules> [top-level YAML]: writes the instance's
# ejabberd.yml — domain localhost, warnings only, no s2s and no shapers, authentication with
# SCRAM-SHA-1 keys stored, in-band registration open (the generator makes its accounts so),
# disco, ping, roster; <listeners> and <modules> are more YAML items under `listen:` and
# `modules:` — and ejabberdctl.cfg (Erlang node <node>, distribution on loopback only).
ejabberd_config() {
  local dir=$1 node=$2 listeners=$3 modules=$4 top=${5:-}
  mkdir -p "$dir/spool" "$dir/logs"
  cat > "$dir/ejabberd.yml" <<EOF
# A private ejabberd for rookery-bench (conformance/bench/lib.sh, ejabberd_config).
hosts:
  - localhost
loglevel: warning
$top
listen:
$listeners
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  register:
    allow: all
  pubsub_createnode:
    allow: local
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
registration_timeout: infinity
s2s_access: none
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_register:
    access: register
    ip_access: all
$modules
EOF
  printf 'POLL=true\nERL_MAX_PORTS=65536\nERL_PROCESSES=2000000\nINET_DIST_INTERFACE=127.0.0.1\nERLANG_NODE=%s\n' \
    "$node" > "$dir/ejabberdctl.cfg"
  chown -R ejabberd:ejabberd "$dir"
}

# ejabberd_start <dir> <node> <port> [prefix…]: starts the instance (behind the prefix, e.g.
# taskset) and sets SERVER_PID to its VM once <port> accepts.
ejabberd_start() {
  local dir=$1 node=$2 port=$3 nofile
  shift 3
  # ejabberdctl run by root starts the VM as the ejabberd user through su, whose PAM session
  # resets the soft file-descriptor limit to 1024; started as that user with the limit raised
  # first, the VM gets the limit the other servers have.
  nofile=$(ulimit -Hn)
  # The VM runs as the ejabberd user: it must get through the work directory (mktemp -d
  # makes it the owner's only).
  chmod a+x "$(dirname "$dir")"
  "$@" su -s /bin/sh ejabberd -c "ulimit -n $nofile; cd '$dir/spool' && exec ejabberdctl \
    --config '$dir/ejabberd.yml' --ctl-config '$dir/ejabberdctl.cfg' --node '$node' \
    --spool '$dir/spool' --logs '$dir/logs' start"
  ejabberd_ctl "$dir" "$node" started >/dev/null 2>&1 || true
  wait_port "$port" "$dir/logs/ejabberd.log"
  SERVER_PID=$(pgrep -f -- "beam.*$node" | head -1)
}

# ejabberd_stop <dir> <node> <pid>: stops the instance and waits for its VM to exit.
ejabberd_stop() {
  ejabberd_ctl "$1" "$2" stop >/dev/null 2>&1 || kill "$3" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$3" 2>/dev/null || break; sleep 0.2; done
}
