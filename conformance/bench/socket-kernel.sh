#!/usr/bin/env bash
# The kernel's memory per idle client session over real TCP (issue 19, a million sessions):
# what `rookery-harness` (in-process pipes) cannot see. SESSIONS rookery-bench clients log in
# to one server on loopback (no TLS, no presence) and stay idle; the kernel's slab caches
# (/proc/slabinfo, by cache), socket buffer pages (/proc/net/sockstat `mem`) and /proc/meminfo
# are read before the logins and once every session is established. Both ends of each TCP
# connection live on this box, so the figures are per socket *pair*; the per-cache table
# says which objects a socket costs (TCP sock, socket inode, dentry, file, epoll item, bind
# bucket) so the server's half can be told from the generator's.
#
# The caches are system-wide: other work on the box moves them too (mostly dentry and
# kmalloc while building). The socket caches (TCP, sock_inode_cache, filp, eventpoll_*) are
# the robust part; the total is printed for comparison.
#
# Usage: conformance/bench/socket-kernel.sh   (release builds are made unless the binaries
# are given) Settings: SESSIONS=19000 LOGIN_RATE=2000 HOLD=20 PORT=28600 WORK=<mktemp -d>
#                      ROOKERY_BIN BENCH_BIN
# Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
. conformance/bench/lib.sh
SESSIONS=${SESSIONS:-19000}
LOGIN_RATE=${LOGIN_RATE:-2000}
HOLD=${HOLD:-20}
PORT=${PORT:-28600}
WORK=${WORK:-$(mktemp -d /tmp/rookery-socket-kernel.XXXXXX)}
PASSWORD=bench-pass
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_binaries
[ -r /proc/slabinfo ] || { echo "/proc/slabinfo is not readable (needs root)" >&2; exit 1; }
mkdir -p "$WORK"
echo "== work directory: $WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

rookery_config "$WORK" "$PORT"

# snapshot <file>: every slab cache's bytes (num_objs × objsize), then meminfo and sockstat.
snapshot() {
  awk 'NR > 2 { printf "slab %s %d %d\n", $1, $3, $3 * $4 }' /proc/slabinfo > "$1"
  awk '/^(MemAvailable|Slab|SReclaimable|SUnreclaim|KernelStack|PageTables):/ {
    sub(":", "", $1); printf "meminfo %s %d\n", $1, $2 * 1024 }' /proc/meminfo >> "$1"
  awk '$1 == "TCP:" { printf "sockstat tcp_inuse %d\nsockstat tcp_mem_bytes %d\n", $3, $11 * 4096 }
       $1 == "sockets:" { printf "sockstat sockets %d\n", $3 }' /proc/net/sockstat >> "$1"
}

"$ROOKERY" -c "$WORK/rookery.toml" user add-bulk --count "$SESSIONS" --password "$PASSWORD" \
  > /dev/null
rookery_serve "$WORK" "$PORT"
PIDS+=("$SERVER_PID")
sleep 2
# Sessions are counted from /proc/net/sockstat (TCP sockets in use, two per session), not by
# listing /proc/PID/fd, which would itself allocate a proc inode and a dentry per descriptor.
tcp_inuse() { awk '$1 == "TCP:" { print $3 }' /proc/net/sockstat; }
tcp0=$(tcp_inuse)
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
snapshot "$WORK/before"

duration=$(( SESSIONS / LOGIN_RATE + HOLD + 30 ))
"$BENCH" --port "$PORT" --tls none --password "$PASSWORD" --quiet -n "$SESSIONS" \
  --login-rate "$LOGIN_RATE" --no-presence --duration "$duration" \
  --max-time $((duration + 600)) --json "$WORK/bench.json" connect > "$WORK/bench.log" 2>&1 &
BENCH_PID=$!
PIDS+=("$BENCH_PID")
last=-1
while kill -0 "$BENCH_PID" 2>/dev/null; do
  sleep 3
  n=$(( ($(tcp_inuse) - tcp0) / 2 ))
  echo "   $n sessions established"
  [ "$n" -ge "$SESSIONS" ] && [ "$n" = "$last" ] && break
  last=$n
done
sleep 3
snapshot "$WORK/after"
n=$(( ($(tcp_inuse) - tcp0) / 2 ))
echo "== $n sessions established and idle; load average $(cut -d' ' -f1-3 /proc/loadavg)"

awk -v n="$n" '
  FNR == NR { before[$1 " " $2] = ($1 == "slab") ? $4 : $3; objs0[$2] = $3; next }
  {
    key = $1 " " $2; now = ($1 == "slab") ? $4 : $3
    d = now - before[key]
    if ($1 == "slab") {
      total += d
      if (d > 0) printf "slab   %-24s %+10d objects %+12d bytes  %8.0f bytes/session\n",
        $2, $3 - objs0[$2], d, d / n
      if ($2 ~ /^(TCP|sock_inode_cache|dentry|filp|eventpoll_epi|eventpoll_pwq|ep_head|lsm_inode_cache|lsm_file_cache|tcp_bind_bucket|tcp_bind2_bucket)$/) sock += d
    } else {
      printf "%-8s %-22s %+14d  %10.0f per session\n", $1, $2, d, d / n
    }
  }
  END {
    printf "== socket caches (TCP sock, socket inode and dentry, file, epoll item, LSM blobs, bind buckets): %.0f bytes = %.2f KiB per socket pair\n", sock / n, sock / n / 1024
    printf "== all slab caches: %.0f bytes = %.2f KiB per socket pair\n", total / n, total / n / 1024
  }' "$WORK/before" "$WORK/after" | sort -k1,1 -s | tee "$WORK/result"
kill "$BENCH_PID" 2>/dev/null || true
