#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what is missing
# (PostgreSQL, Python venv with slixmpp), starts a throwaway PostgreSQL on loopback, then
#   1. cargo fmt / clippy (lint gate),
#   2. the build, then supply chain and packaging: `cargo deny check bans licenses sources`
#      (deny.toml) and the Debian package built from the debug build, installed with dpkg,
#      run and purged (conformance/package/run.sh); the two tools are installed from crates.io
#      in the background from the start (conformance/package/tools.sh, reused by later runs),
#   2b. cargo test for the whole workspace (store suite on SQLite and PostgreSQL),
#   3. the end-to-end suite in tests/ (real server, slixmpp and raw-socket clients), and a
#      smoke run of the cluster benchmark (conformance/bench/cluster.sh, SMOKE=1),
#   3b. federation against Prosody and ejabberd (conformance/federation/run.sh installs them),
#      and a smoke run of the cluster benchmark's ejabberd side (SERVER=ejabberd SMOKE=1),
#   4. the independent acceptance runner in ../shared/acceptance against the zero-config server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# cargo-deb and cargo-deny from crates.io: minutes of compiling on a fresh machine, so they
# build in the background while apt, pip and npm wait on the network and while the lint and
# the build run; the script waits for them before the first test (tests are timing-sensitive,
# a compiler beside them makes them flaky). Its own session, so a failing run stops it too.
tools="${ROOKERY_TOOLS:-$HOME/.cache/rookery-tools}"
tools_log=$(mktemp)
ROOKERY_TOOLS="$tools" setsid conformance/package/tools.sh >"$tools_log" 2>&1 &
tools_pid=$!
trap 'kill -- -$tools_pid 2>/dev/null || true; rm -f "$tools_log"' EXIT

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Web clients (tests/test_web*.py): node runs xmpp.js, Strophe.js and Converse.js; Converse
# runs in Debian's Chromium (never a browser downloaded by npm).
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v chromium >/dev/null || need_apt+=(chromium)
# The cluster bus of the three-node suite (tests/test_cluster.py); Debian puts it in /usr/sbin.
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || need_apt+=(nats-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

venv="${ROOKERY_TEST_VENV:-$HOME/.cache/rookery-test-venv}"
if ! "$venv/bin/python" -c 'import slixmpp, pytest, prometheus_client, httpx' 2>/dev/null; then
  echo "== creating or completing Python venv $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r tests/requirements.txt
fi

echo "== web test clients (tests/web: npm ci)"
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error)

echo "== starting PostgreSQL"
eval "$(scripts/pg-start.sh)"
trap 'kill -- -$tools_pid 2>/dev/null || true; rm -f "$tools_log"; scripts/pg-stop.sh >/dev/null 2>&1 || true' EXIT

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --locked --bins

echo "== packaging tools (conformance/package/tools.sh, started with this script)"
tools_status=0
wait "$tools_pid" || tools_status=$?
cat "$tools_log"
[ "$tools_status" = 0 ] || { echo "installing cargo-deb/cargo-deny failed ($tools_status)"; exit 1; }

echo "== supply chain (cargo deny check bans licenses sources; advisories need GitHub: not here)"
# cargo-deny reads the metadata of every crate in Cargo.lock, also those of other platforms
# (Windows, macOS) that the build never downloaded: a fresh machine fetches them first.
cargo fetch --locked
PATH="$tools/bin:$PATH" cargo deny --locked --offline check bans licenses sources

echo "== Debian package (conformance/package/run.sh: cargo deb, dpkg -i, run, dpkg --purge)"
ROOKERY_BIN="$root/target/debug/rookery" ROOKERY_TOOLS="$tools" conformance/package/run.sh

echo "== cargo test"
cargo test --workspace --locked

echo "== end-to-end (tests/)"
ROOKERY_BIN="$root/target/debug/rookery" "$venv/bin/python" -m pytest -q tests

echo "== cluster benchmark, smoke run (conformance/bench/cluster.sh: 1 node vs 3 over NATS)"
SMOKE=1 ROOKERY_BIN="$root/target/debug/rookery" BENCH_BIN="$root/target/debug/rookery-bench" \
  conformance/bench/cluster.sh

echo "== federation interop (conformance/federation: Prosody and ejabberd, both directions)"
ROOKERY_BIN="$root/target/debug/rookery" ROOKERY_TEST_VENV="$venv" conformance/federation/run.sh

echo "== cluster benchmark, ejabberd side, smoke run (one node vs three in a Mnesia cluster)"
SERVER=ejabberd SMOKE=1 ROOKERY_BIN="$root/target/debug/rookery" \
  BENCH_BIN="$root/target/debug/rookery-bench" conformance/bench/cluster.sh

echo "== acceptance runner (../shared/acceptance)"
if [ -x ../shared/acceptance/run ]; then
  ROOKERY_BIN="$root/target/debug/rookery" "$venv/bin/python" tests/acceptance.py
else
  echo "acceptance runner not found beside the repo; skipped"
fi
