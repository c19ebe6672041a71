#!/usr/bin/env bash
# Stops the throwaway PostgreSQL cluster started by pg-start.sh and deletes its files.
#
#     scripts/pg-stop.sh [DIR]      # DIR defaults to $ROOKERY_PG_DIR
set -euo pipefail

DIR="${1:-${ROOKERY_PG_DIR:-}}"
if [[ -z "$DIR" || ! -f "$DIR/cluster.env" ]]; then
    echo "pg-stop: no cluster directory given (argument or ROOKERY_PG_DIR)" >&2
    exit 1
fi
# shellcheck source=/dev/null
source "$DIR/cluster.env"
if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$PGUSER_OS" -- "$BINDIR/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
else
    "$BINDIR/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
fi
case "$DIR" in
    */rookery-pg.*) rm -rf -- "$DIR" ;;
    *) echo "pg-stop: not removing unexpected directory $DIR" >&2 ;;
esac
echo "pg-stop: stopped and removed $DIR" >&2
