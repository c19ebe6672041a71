# Pieces every benchmark script here needs, sourced after `cd` to the repository root.
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

# wait_port <port> [log]: until something accepts on 127.0.0.1:<port> (60 s at most; the
# log named in the error is where to look when nothing does).
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on $1${2:+: $2}" >&2
  return 1
}
