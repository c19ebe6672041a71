#!/usr/bin/env bash
# The Debian package, built and installed for real (CI: scripts/test.sh after the debug build).
#   1. cargo-deb (conformance/package/tools.sh; reused from ROOKERY_TOOLS) packages the binary
#      CI built, with the release metadata of crates/server/Cargo.toml,
#   2. dpkg-deb: the files, the conffile, the maintainer scripts and the dependencies,
#   3. dpkg -i on this machine (root, systemd need not run): the `rookery` user, the modes of
#      /var/lib/rookery and /etc/rookery/rookery.toml, the unit (systemd-analyze verify, where
#      systemd is installed),
#   4. the installed /usr/bin/rookery: `check` on the shipped configuration (its only problem:
#      the certificate it names does not exist yet), then `serve` as the `rookery` user with the
#      shipped configuration moved to loopback on free ports and without a certificate (the
#      generated one), its data in /var/lib/rookery, until /health answers 200 on the admin
#      listener; SIGTERM, exit 0,
#   5. dpkg -i over itself (the upgrade path) keeps data and modes; dpkg -r keeps configuration
#      and data; dpkg --purge leaves nothing (binary, configuration, data; the user too if we
#      made it).
# ROOKERY_BIN: the binary to package (default target/debug/rookery). Needs root and dpkg.
# Refuses to run where a `rookery` package or /usr/bin/rookery already is.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin="${ROOKERY_BIN:-$root/target/debug/rookery}"
tools="${ROOKERY_TOOLS:-$HOME/.cache/rookery-tools}"

[ "$(id -u)" = 0 ] || { echo "package check: needs root (dpkg -i)" >&2; exit 1; }
# Installed, or removed with its configuration kept: either way not ours to purge.
state=$(dpkg-query -W -f='${db:Status-Status}' rookery 2>/dev/null || true)
if [ -n "$state" ] && [ "$state" != not-installed ]; then
  echo "package check: a rookery package is here ($state); not touching it" >&2; exit 1
fi
[ ! -e /usr/bin/rookery ] || { echo "package check: /usr/bin/rookery exists; not touching it" >&2; exit 1; }

timings=()
step_start=0
step() { step_start=$(date +%s%N); echo "-- $1"; step_name=$1; }
step_end() {
  local ms=$(( ($(date +%s%N) - step_start) / 1000000 ))
  timings+=("$(printf '%4d.%d s  %s' $((ms / 1000)) $((ms % 1000 / 100)) "$step_name")")
}
fail() { echo "package check FAILED: $*" >&2; exit 1; }

work=$(mktemp -d)
chmod 0755 "$work"   # the `rookery` user reads the test configuration in it
stage="$root/target/package-stage"
server_pid=
user_existed=$(getent passwd rookery >/dev/null && echo yes || echo no)
cleanup() {
  set +e   # every step, whatever failed before
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
  if [ -n "$(dpkg-query -W -f='${db:Status-Status}' rookery 2>/dev/null | grep -v not-installed)" ]; then
    dpkg --purge rookery >/dev/null 2>&1 || true
  fi
  if [ "$user_existed" = no ] && getent passwd rookery >/dev/null; then userdel rookery; fi
  rm -rf "$work" "$stage"
}
trap cleanup EXIT

step "tools (cargo-deb, cargo-deny)"
conformance/package/tools.sh
step_end

# cargo-deb packages `target/release/rookery`; a staging target dir whose release/rookery is
# the binary under test (a hard link: no copy of 400 MB) lets it take CI's debug build with
# the release metadata unchanged (cargo-deb refuses assets from target/debug and deprecates
# `--profile dev`). Debug info: the release metadata splits it into a -dbgsym package; a debug
# build's 400 MB of DWARF would cost minutes of xz, so here it is stripped instead (--fast:
# lighter compression, same contents).
step "cargo deb (debug build, stripped)"
[ -x "$bin" ] || fail "no $bin (cargo build -p rookery first)"
mkdir -p "$stage/release"
ln -f "$bin" "$stage/release/rookery" 2>/dev/null || cp -f "$bin" "$stage/release/rookery"
CARGO_TARGET_DIR="$stage" "$tools/bin/cargo-deb" -p rookery --no-build --locked --offline \
  --no-dbgsym --no-separate-debug-symbols --strip --fast --output "$work/" >"$work/cargo-deb.log" 2>&1 \
  || { cat "$work/cargo-deb.log"; fail "cargo deb"; }
deb=$(ls "$work"/rookery_*.deb)
echo "$(basename "$deb"): $(du -h "$deb" | cut -f1)"
step_end

step "dpkg-deb: contents and control"
dpkg-deb -c "$deb" >"$work/contents"
dpkg-deb -I "$deb" >"$work/info"
for f in ./usr/bin/rookery ./etc/rookery/rookery.toml ./lib/systemd/system/rookery.service \
         ./usr/share/doc/rookery/operations.md ./usr/share/doc/rookery/configuration.md \
         ./usr/share/doc/rookery/copyright; do
  grep -q " $f\$" "$work/contents" || { cat "$work/contents"; fail "$f not in the package"; }
done
grep -q '^-rwxr-xr-x 0/0 .* ./usr/bin/rookery$' "$work/contents" || fail "/usr/bin/rookery not root 0755"
grep -q '^-rw-r----- 0/0 .* ./etc/rookery/rookery.toml$' "$work/contents" || fail "rookery.toml not 0640"
dpkg-deb --ctrl-tarfile "$deb" | tar -t >"$work/control-files"
for f in conffiles postinst prerm postrm; do
  grep -qx "./$f" "$work/control-files" || fail "no $f in the control archive"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/rookery/rookery.toml || fail "rookery.toml is not a conffile"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
[[ "$depends" == *adduser* && "$depends" == *libc6* ]] || fail "Depends lacks adduser or libc6"
step_end

step "dpkg -i"
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log"; fail "dpkg -i"; }
[ "$(getent passwd rookery | cut -d: -f6,7)" = /var/lib/rookery:/usr/sbin/nologin ] \
  || fail "rookery user: $(getent passwd rookery)"
[ "$(stat -c '%U:%G %a' /var/lib/rookery)" = "rookery:rookery 750" ] \
  || fail "/var/lib/rookery: $(stat -c '%U:%G %a' /var/lib/rookery)"
[ "$(stat -c '%U:%G %a' /etc/rookery/rookery.toml)" = "root:rookery 640" ] \
  || fail "/etc/rookery/rookery.toml: $(stat -c '%U:%G %a' /etc/rookery/rookery.toml)"
# The installed unit, as this machine's systemd parses it (needs no running systemd).
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/rookery.service || fail "systemd-analyze verify"
else
  echo "systemd-analyze not installed: unit not verified"
fi
step_end

step "rookery check (shipped configuration)"
set +e
/usr/bin/rookery check --config /etc/rookery/rookery.toml >"$work/check.out" 2>&1
status=$?
set -e
cat "$work/check.out"
[ "$status" = 1 ] || fail "check on the shipped configuration exited $status, expected 1 (no certificate)"
if grep '^problem:' "$work/check.out" | grep -v '/etc/rookery/\(fullchain\|privkey\)\.pem'; then
  fail "the shipped configuration has a problem besides the missing certificate"
fi
step_end

step "rookery serve as user rookery, /health"
# The shipped configuration with every listener on a free loopback port and no [tls] files.
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
awk -v ports="${ports[*]}" '
  BEGIN { n = split(ports, p, " "); i = 0 }
  /^\[/ { section = $0 }
  section == "[listen]" && /^[a-z_0-9]+ *= *"[^"]+:[0-9]+"/ {
    sub(/"[^"]+:[0-9]+"/, "\"127.0.0.1:" p[++i] "\"")
    if ($1 == "admin") admin = p[i]
  }
  section == "[tls]" && /^(cert|key) *=/ { next }
  { print }
  END { if (i != n || !admin) exit 1; print admin > "/dev/stderr" }
' /etc/rookery/rookery.toml >"$work/rookery.toml" 2>"$work/admin-port" \
  || fail "could not rewrite the [listen] section ($(cat "$work/admin-port"))"
admin_port=$(cat "$work/admin-port")
chmod 0644 "$work/rookery.toml"
as_rookery=(setpriv --reuid rookery --regid rookery --init-groups)
(cd /var/lib/rookery && "${as_rookery[@]}" /usr/bin/rookery check --config "$work/rookery.toml") \
  || fail "check on the loopback configuration"
(cd /var/lib/rookery && exec "${as_rookery[@]}" /usr/bin/rookery serve --config "$work/rookery.toml") \
  >"$work/serve.log" 2>&1 &
server_pid=$!
health=
for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log"; fail "rookery serve exited at start"; }
  health=$(python3 -c '
import sys, urllib.request
try:
    r = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
    print(r.status)
except Exception:
    pass' "$admin_port")
  [ "$health" = 200 ] && break
  sleep 0.1
done
[ "$health" = 200 ] || { cat "$work/serve.log"; fail "/health did not answer 200 within 30 s"; }
echo "/health on 127.0.0.1:$admin_port: 200"
[ "$(ps -o user= -p "$server_pid")" = rookery ] || fail "the server does not run as rookery"
for f in rookery.db cert.pem key.pem admin.token; do
  [ "$(stat -c %U "/var/lib/rookery/$f" 2>/dev/null)" = rookery ] \
    || fail "/var/lib/rookery/$f missing or not the server's"
done
kill -TERM "$server_pid"
set +e
wait "$server_pid"
status=$?
set -e
server_pid=
[ "$status" = 0 ] || { cat "$work/serve.log"; fail "rookery serve exited $status after SIGTERM"; }
step_end

step "dpkg -i again (upgrade path), dpkg -r"
dpkg -i "$deb" >"$work/dpkg-i2.log" 2>&1 || { cat "$work/dpkg-i2.log"; fail "dpkg -i over itself"; }
[ "$(stat -c '%U:%G %a' /etc/rookery/rookery.toml)" = "root:rookery 640" ] \
  || fail "after reinstall /etc/rookery/rookery.toml: $(stat -c '%U:%G %a' /etc/rookery/rookery.toml)"
[ -f /var/lib/rookery/rookery.db ] || fail "reinstall lost /var/lib/rookery/rookery.db"
dpkg -r rookery >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log"; fail "dpkg -r"; }
[ ! -e /usr/bin/rookery ] || fail "/usr/bin/rookery left after dpkg -r"
[ -f /etc/rookery/rookery.toml ] && [ -f /var/lib/rookery/rookery.db ] \
  || fail "dpkg -r removed the configuration or the data"
step_end

step "dpkg --purge"
dpkg --purge rookery >"$work/dpkg-purge.log" 2>&1 || { cat "$work/dpkg-purge.log"; fail "dpkg --purge"; }
for p in /usr/bin/rookery /etc/rookery /var/lib/rookery /lib/systemd/system/rookery.service; do
  [ ! -e "$p" ] || fail "$p left after purge"
done
if [ "$user_existed" = no ]; then userdel rookery; fi
step_end

echo "package check ok:"
printf '  %s\n' "${timings[@]}"
