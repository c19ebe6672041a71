#!/usr/bin/env bash
# Federation interop: Rookery against Prosody and ejabberd from Debian's packages, in both
# directions, twice: with dialback over TLS (nobody trusts the others' certificates) and with
# SASL EXTERNAL (everyone trusts a private CA). See conformance/federation/servers.py.
#
# Installs prosody, lua-unbound and ejabberd with apt-get when they are missing and we are
# root (services are kept from starting during the install); otherwise the peers that are
# missing are skipped, with the reason. Needs target/debug/rookery (or $ROOKERY_BIN) and the
# test venv ($ROOKERY_TEST_VENV, made by scripts/test.sh).
#
#   conformance/federation/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv="${ROOKERY_TEST_VENV:-$HOME/.cache/rookery-test-venv}"
export ROOKERY_BIN="${ROOKERY_BIN:-$root/target/debug/rookery}"

need=()
command -v prosody >/dev/null || need+=(prosody)
[ -e /usr/lib/x86_64-linux-gnu/lua/5.4/lunbound.so ] || ls /usr/lib/*/lua/5.4/lunbound.so >/dev/null 2>&1 || need+=(lua-unbound)
command -v ejabberdctl >/dev/null || need+=(ejabberd)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null 2>&1 || echo "apt-get update failed; trying the install anyway"
    missing=()
    for p in "${need[@]}"; do
      if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        missing+=("$p")
      fi
    done
    [ ${#missing[@]} -eq 0 ] || echo "not installable here: ${missing[*]}"
    # Keep the packages' own services from starting (they would take 5222/5269).
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
      || echo "apt-get install ${need[*]} failed: the peers that are missing will be skipped"
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "not root (or no apt-get): ${need[*]} cannot be installed; those peers will be skipped"
  fi
fi

if ! "$venv/bin/python" -c 'import slixmpp, pytest, pytest_asyncio' 2>/dev/null; then
  echo "federation conformance skipped: no test venv at $venv (scripts/test.sh creates it)"
  exit 0
fi
[ -x "$ROOKERY_BIN" ] || { echo "$ROOKERY_BIN not found: cargo build -p rookery"; exit 1; }

status=0
for mode in dialback external; do
  echo "== federation ($mode)"
  FEDERATION_MODE=$mode "$venv/bin/python" -m pytest -q -rs conformance/federation "$@" || status=$?
done
exit $status
