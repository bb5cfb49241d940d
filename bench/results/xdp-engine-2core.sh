#!/usr/bin/env bash
# The runs behind bench/results/xdp-engine-2core.md (root; the 2-core VM). Two network namespaces
# joined by one veth pair: the generator's (xeg, xeg0 10.99.0.1) and the server's (xes, xes0
# 10.99.0.2, with 10.200.0.0/16 routed back to 10.99.0.1 for the socket backend's replies).
# The generator is pinned to core 0, the server or the reflector to core 1.
#
#   (a) stratum-bench load --engine xdp against stratum-bench reflect: --rate 0 (as fast as it
#       can) three times, then two ramps;
#   (b) stratumd's xdp backend (queue 0, worker on core 1, UDP 123) against its socket backend
#       (1 worker on core 1, 10.99.0.2:11123), the same load, alternating A B A B: ramps, then
#       fixed rates with per-core CPU use.
#
# BIN and STRATUMD: release builds with the xdp feature; OUT: where the JSON and logs go. Before
# each run it waits until no other benchmark (stratum-bench, stratumd, chronyd, ntpd, cargo) runs,
# and a run during which one appeared is done again.
set -euo pipefail
BIN=${BIN:-target/release/stratum-bench}
STRATUMD=${STRATUMD:-target/release/stratumd}
OUT=${OUT:-/tmp/xdp-engine-2core}
RAMP_A=${RAMP_A:-100000,1.1,2}
RAMP_B=${RAMP_B:-50000,1.1,2}
RATES_B=${RATES_B:-100000 150000 200000}
RAMPS=${RAMPS:-3}
BIN=$(realpath "$BIN") STRATUMD=$(realpath "$STRATUMD")
mkdir -p "$OUT"
. "$(dirname "$0")/lib/netns.sh"
G=xeg S=xes GI=xeg0 SI=xes0 GA=10.99.0.1 SA=10.99.0.2

pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; veth_teardown $G $S' EXIT
veth_pair $G $S $GI $SI $GA $SA 10.200.0.0/16

cat > "$OUT/xdp.toml" <<EOF
[server]
backend = "xdp"
interface = "$SI"
queues = "all"
cores = [1]
port = 123
xdp-mode = "auto"

[clock]
source = "local"
stratum = 2
EOF
cat > "$OUT/socket.toml" <<EOF
[server]
backend = "socket"
listen = ["$SA:11123"]
workers = 1
cores = [1]

[clock]
source = "local"
stratum = 2
EOF

foreign() {
  pgrep -af 'stratum-bench|stratumd|chronyd|ntpd|cargo|rustc' | grep -v -e binary_backend -e "$OUT" -e "$BIN" -e "$STRATUMD" || true
}
quiet() {
  local n=0
  while [ -n "$(foreign)" ]; do
    ((n++ % 12 == 0)) && echo "waiting for: $(foreign | cut -c1-100 | head -3)" >&2
    sleep 5
  done
}
load() { ip netns exec $G "$BIN" load --engine xdp --interface $GI --i-own-this-target --cores 0 --json "$@"; }

# run NAME SERVER(reflect|xdp|socket) LOAD-ARGS...: one measured run, repeated if disturbed.
run() {
  local name=$1 server=$2; shift 2
  local target
  for attempt in 1 2 3; do
    quiet
    case $server in
      reflect)
        ip netns exec $S "$BIN" reflect --interface $SI --cores 1 --json >"$OUT/$name.server.json" 2>"$OUT/$name.server.log" &
        pid=$!; target=$SA:123 ;;
      xdp|socket)
        ip netns exec $S taskset -c 1 "$STRATUMD" -c "$OUT/$server.toml" >"$OUT/$name.server.log" 2>&1 &
        pid=$!; [ $server = xdp ] && target=$SA:123 || target=$SA:11123 ;;
    esac
    for _ in $(seq 50); do
      ip netns exec $G "$BIN" query $target --timeout 0.2 >/dev/null 2>&1 && break
      sleep 0.1
    done
    local before; before=$(foreign)
    load --target $target "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" &
    local lpid=$!
    if [ -n "${CPU_AFTER:-}" ]; then
      sleep "$CPU_AFTER"; python3 - "$CPU_FOR" >"$OUT/$name.cpu" <<'PY'
import sys, time
def snap():
    return {l.split()[0]: list(map(int, l.split()[1:9])) for l in open('/proc/stat') if l[:3] == 'cpu' and l[3].isdigit()}
a = snap(); time.sleep(float(sys.argv[1])); b = snap()
for c in sorted(a):
    x = [q - p for p, q in zip(a[c], b[c])]; t = sum(x) or 1
    print(f"{c}: user {100*(x[0]+x[1])/t:.0f}%, system {100*x[2]/t:.0f}%, softirq {100*(x[5]+x[6])/t:.0f}%, idle {100*(x[3]+x[4])/t:.0f}%")
PY
    fi
    wait $lpid || true
    kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; pid=
    local after; after=$(foreign)
    if [ -z "$before$after" ]; then
      echo "$name: done" >&2; return 0
    fi
    echo "$name: disturbed ($(echo "$after" | head -1 | cut -c1-80)), again" >&2
  done
  echo "$name: disturbed three times; kept the last" >&2
}

date -u +%FT%TZ >"$OUT/date"
uname -r >"$OUT/kernel"
# (a) the generator's ceiling against the reflector.
for i in 1 2 3; do CPU_AFTER=1 CPU_FOR=1.5 run a-max-$i reflect --rate 0 --duration 3; done
for i in 1 2; do run a-ramp-$i reflect --ramp "$RAMP_A" --max-loss 5; done
# (b) stratumd xdp vs socket: ramps A B A B ..., then fixed rates A B A B with CPU use.
for i in $(seq "$RAMPS"); do
  run b-ramp-xdp-$i xdp --ramp "$RAMP_B" --max-loss 5
  run b-ramp-socket-$i socket --ramp "$RAMP_B" --max-loss 5
done
for rate in $RATES_B; do
  for i in 1 2; do
    CPU_AFTER=1 CPU_FOR=1.5 run b-$rate-xdp-$i xdp --rate $rate --duration 3
    CPU_AFTER=1 CPU_FOR=1.5 run b-$rate-socket-$i socket --rate $rate --duration 3
  done
done
echo "results in $OUT" >&2
