#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the store tests and prints the environment to
# use it:
#
#     eval "$(scripts/pg-start.sh)"
#     cargo test -p rookery-store
#     scripts/pg-stop.sh
#
# - Installs PostgreSQL from Debian (apt-get) if no initdb/pg_ctl is found.
# - Creates the cluster in a fresh temp dir owned by a non-root user (PostgreSQL refuses to
#   run as root): the 'postgres' system user when run as root, the caller otherwise.
# - Listens on 127.0.0.1 only, on a free port, with its unix socket inside the temp dir; host
#   connections need a random password (SCRAM-SHA-256).
# - Durability is off (fsync, synchronous_commit, full_page_writes): the data is thrown away.
#
# Prints to stdout only the export lines; progress goes to stderr.
set -euo pipefail

log() { echo "pg-start: $*" >&2; }

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

if ! BINDIR="$(find_bindir)"; then
    if [[ "$(id -u)" != 0 ]]; then
        log "PostgreSQL is not installed and this is not root: install 'postgresql' first"
        exit 1
    fi
    log "installing PostgreSQL from Debian packages"
    # Do not let the package create and start its own 'main' cluster on port 5432.
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    BINDIR="$(find_bindir)"
fi
log "using $BINDIR"

# Run PostgreSQL tools as a non-root user.
if [[ "$(id -u)" == 0 ]]; then
    PGUSER_OS=postgres
    if ! id "$PGUSER_OS" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PGUSER_OS"
    fi
    as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }
else
    PGUSER_OS="$(id -un)"
    as_pg() { "$@"; }
fi

DIR="$(mktemp -d "${TMPDIR:-/tmp}/rookery-pg.XXXXXX")"
chmod 700 "$DIR"
mkdir -p "$DIR/sock"
PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
printf '%s\n' "$PASSWORD" > "$DIR/pwfile"
[[ "$(id -u)" == 0 ]] && chown -R "$PGUSER_OS" "$DIR"

log "initdb in $DIR/data"
as_pg "$BINDIR/initdb" -D "$DIR/data" -U rookery --pwfile="$DIR/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
rm -f "$DIR/pwfile"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=0
for _ in $(seq 1 20); do
    PORT=$((20000 + RANDOM % 40000))
    port_free "$PORT" || continue
    if as_pg "$BINDIR/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2; then
        started=1
        break
    fi
    log "start on port $PORT failed, trying another"
done
if [[ "$started" != 1 ]]; then
    log "could not start PostgreSQL; log follows"
    cat "$DIR/server.log" >&2 || true
    exit 1
fi

as_pg "$BINDIR/createdb" -h "$DIR/sock" -p "$PORT" -U rookery rookery_test
printf 'BINDIR=%q\nPGUSER_OS=%q\nPORT=%q\n' "$BINDIR" "$PGUSER_OS" "$PORT" > "$DIR/cluster.env"
log "PostgreSQL is running on 127.0.0.1:$PORT (data in $DIR)"

echo "export ROOKERY_TEST_POSTGRES_URL=postgres://rookery:${PASSWORD}@127.0.0.1:${PORT}/rookery_test"
echo "export ROOKERY_PG_DIR=$DIR"
