#!/usr/bin/env bash
# Instructions the server executes per delivery, counted by valgrind's callgrind: a figure
# that does not move with the machine's load (other builds, other tests), so two builds can be
# compared on a busy box where CPU seconds cannot.
#
# Each scenario runs twice per build, for SHORT and LONG seconds at the same rate, under
# callgrind; the difference of the two totals divided by the difference of the deliveries is
# the cost per delivery, with start-up and logins cancelled out.
#   messages: N clients in pairs, MSG_RATE chat messages/s    → instructions per message
#   pubsub:   N subscribers of one node, PUBSUB_RATE items/s  → per notification
#   presence: N clients with rosters of 10, PRES_RATE updates/s → per presence delivery
# Under callgrind the server runs ~50× slower, so the counts and rates stay small.
#
# Usage: conformance/bench/instructions.sh OLD_DIR NEW_DIR [scenario …]
#        (each DIR holds a release `rookery`; the generator is NEW_DIR's `rookery-bench`)
# Settings: N_MSG=20 N_PUBSUB=200 N_PRES=200 MSG_RATE=100 PUBSUB_RATE=1 PRES_RATE=20
#           SHORT=10 LONG=30 PORT=28222 WORK=<mktemp -d>
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,19p "$0"; exit 2; }
# shellcheck source=conformance/bench/lib.sh
. "$(dirname "$0")/lib.sh"
OLD=$(cd "$1" && pwd)
NEW=$(cd "$2" && pwd)
shift 2
SCENARIOS=${*:-messages pubsub presence}
BENCH=${BENCH_BIN:-$NEW/rookery-bench}
SHORT=${SHORT:-10}
LONG=${LONG:-30}
PORT=${PORT:-28222}
WORK=${WORK:-$(mktemp -d /tmp/rookery-instructions.XXXXXX)}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
echo "== work directory: $WORK"

# run BIN LABEL SCENARIO SECONDS → "<instructions> <deliveries>"
run() {
  local bin=$1 dir=$WORK/$2.$3.$4 n args
  rm -rf "$dir" && mkdir -p "$dir"
  # Listeners a build has beyond c2s are turned off, if it knows them (older builds refuse
  # unknown keys).
  local omit=() key
  for key in admin http https; do
    printf 'domain = "localhost"\ndata_dir = "%s/probe"\n[listen]\n%s = ""\n' "$dir" "$key" > "$dir/probe.toml"
    "$bin/rookery" -c "$dir/probe.toml" user list >/dev/null 2>&1 || omit+=(--omit "$key")
  done
  rookery_config "${omit[@]}" "$dir" "$PORT" 'session_queue = 1024'
  case $3 in
    messages) n=${N_MSG:-20}; args="-n $n messages --rate ${MSG_RATE:-100}" ;;
    pubsub) n=$(( ${N_PUBSUB:-200} + 1 )); args="-n $n pubsub --rate ${PUBSUB_RATE:-1}" ;;
    presence) n=${N_PRES:-200}; args="-n $n presence --roster-size 10 --rate ${PRES_RATE:-20}" ;;
    *) echo "unknown scenario $3" >&2; exit 2 ;;
  esac
  "$bin/rookery" -c "$dir/rookery.toml" user add-bulk --count "$n" --password pw >/dev/null
  # Under callgrind the server takes far longer to start.
  PORT_WAIT=120 rookery_serve "$dir" "$PORT" \
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin/rookery"
  # shellcheck disable=SC2086
  "$BENCH" --port "$PORT" --tls none --mechanism scram-sha1 --password pw --quiet \
    --login-rate 50 --max-inflight 16 --duration "$4" --json "$dir/bench.json" $args \
    > "$dir/bench.log" 2>&1 || true
  kill -INT "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" || true
  python3 - "$dir" "$3" <<'PY'
import json, re, sys
d, scen = sys.argv[1], sys.argv[2]
total = next(int(m.group(1)) for l in open(f"{d}/callgrind.out") if (m := re.match(r"totals: (\d+)", l)))
r = json.load(open(f"{d}/bench.json"))["results"][scen]
print(total, r.get("deliveries") or r.get("received") or 0)
PY
}

echo "| scenario | build | instructions per delivery | deliveries (short, long) |"
echo "|---|---|---|---|"
for scen in $SCENARIOS; do
  for label in before after; do
    bin=$OLD; [ $label = after ] && bin=$NEW
    read -r i1 d1 < <(run "$bin" "$label" "$scen" "$SHORT")
    read -r i2 d2 < <(run "$bin" "$label" "$scen" "$LONG")
    per=$(( d2 > d1 ? (i2 - i1) / (d2 - d1) : 0 ))
    echo "| $scen | $label | $per | $d1, $d2 |"
  done
done
