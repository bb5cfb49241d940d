#!/bin/bash
# Issue 14 follow-up: the xdp backend's T3 error (interleaved and basic) against the offered rate,
# before and after per-frame TX metadata stamps in copy mode and [server] send-slice on xdp, A B
# alternated in one session; then the server's CPU per reply at a fixed basic-mode rate.
#
# usage: interleaved-error-xdp-ab-2core-20261205.sh ROUNDS "VARIANTS" CAPACITY CPU_RATE
#   VARIANTS: words NAME:BINARY:SLICE (SLICE "-" = no send-slice key, for the old binary;
#   BINARY "chronyd": chronyd 4.3 as the server, -x -d -u root, bindaddress, allow all, local
#   stratum 2, clientloglimit 100000000, no CPU step)
#   env BIN: the generator (stratum-bench), OUT: where logs go, CPU_ONLY=1: only the CPU steps,
#   TABLE_ONLY=1: only the error table, PCTS: the table's rates in % of CAPACITY (default "1 10
#   25 50 80"; 1 means 1000/s), DUR: seconds per step (default 2), CPU_ARGS: more load options for the CPU step (e.g.
#   --interleaved).
# Server in namespace ils (10.77.0.1, xs, taskset -c 1, workers pinned to core 1), generator in
# ilc (10.77.0.2, xc, taskset -c 0); 10.200.0.0/16 (the AF_XDP generator's clients) routed back.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/netns.sh"
ROUNDS=${1:-2}; VARIANTS=$2; CAP=${3:-170859}; CPU_RATE=${4:-200000}
BIN=${BIN:-/work/main/target/release/stratum-bench}
OUT=${OUT:-$(mktemp -d /tmp/ilxdp.XXXX)}
G=ilc; S=ils
veth_pair $G $S xc xs 10.77.0.2 10.77.0.1 10.200.0.0/16
trap 'kill $pid 2>/dev/null; veth_teardown $G $S' EXIT
pid=
echo "logs in $OUT" >&2

start() { # BINARY SLICE [EXTRA]: EXTRA another [server] line
  local bin=$1 slice=$2 extra=${3:-}
  if [ "$bin" = chronyd ]; then
    printf 'bindaddress 10.77.0.1\nallow all\nlocal stratum 2\nclientloglimit 100000000\ncmdport 0\npidfile %s/chronyd.pid\n' "$OUT" >"$OUT/chrony.conf"
    ip netns exec $S taskset -c 1 chronyd -x -d -u root -f "$OUT/chrony.conf" >>"$OUT/server.log" 2>&1 &
    pid=$!; sleep 1; kill -0 $pid 2>/dev/null; return
  fi
  [ "$slice" != "-" ] && extra="$extra
send-slice = $slice"
  cat >"$OUT/s.toml" <<EOC
[server]
backend = "xdp"
interface = "xs"
queues = "all"
xdp-mode = "auto"
port = 123
batch = 64
cores = [1]
$extra

[clock]
source = "local"
stratum = 2

[control]
socket = "$OUT/control.sock"
EOC
  for attempt in 1 2 3 4 5; do
    rm -f "$OUT/control.sock"
    ip netns exec $S taskset -c 1 "$bin" -c "$OUT/s.toml" >>"$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do [ -S "$OUT/control.sock" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    sleep 0.5
    kill -0 $pid 2>/dev/null && return 0
    wait $pid 2>/dev/null; pid=; sleep 1
  done
  echo "server did not start" >&2; return 1
}
stop() { kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; pid=; }
cputime() { { cat /proc/$1/task/*/schedstat 2>/dev/null || true; } | awk '{s += $1} END {printf "%d\n", s}'; }

echo "| round | server | rate /s | loss % | interleaved % | one-way | xleave min | xleave mean | xleave p99 | samples | basic min | basic mean | basic p99 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq $ROUNDS); do
  for v in $VARIANTS; do
    IFS=: read -r name bin slice <<<"$v"
    if [ -z "${CPU_ONLY:-}" ]; then
      start "$bin" "$slice" || continue
      for pct in ${PCTS:-1 10 25 50 80}; do
        r=$((CAP*pct/100)); [ $pct = 1 ] && r=1000
        ip netns exec $G taskset -c 0 $BIN load --engine xdp --interface xc --target 10.77.0.1:123 --i-own-this-target \
          --interleaved --rate $r --duration ${DUR:-2} --json 2>>"$OUT/gen.log" \
        | python3 -c "import json,sys; v=json.load(sys.stdin); i=v['interleaved']; x=i['interleaved_error']; b=i['basic_error']; print('|$round|$name|%d|%.3f|%.1f|%d|%d|%d|%d|%d|%d|%d|%d|' % (v['offered_rate'], v['loss_pct'], i['interleaved_pct'], i['one_way_delay_ns'], x['min_ns'], x['mean_ns'], x['p99_ns'], x['samples'], b['min_ns'], b['mean_ns'], b['p99_ns']))"
      done
      stop
    fi
    [ -n "${TABLE_ONLY:-}" ] || [ "$bin" = chronyd ] && continue
    # CPU per reply: basic mode at CPU_RATE for 3 s, the server's threads' schedstat run time, with
    # idle-spin-us = 0 (else the worker spins 50 us after each burst, CPU that is not per reply).
    start "$bin" "$slice" "idle-spin-us = 0" || continue
    c0=$(cputime $pid)
    ip netns exec $G taskset -c 0 $BIN load --engine xdp --interface xc --target 10.77.0.1:123 --i-own-this-target \
      --rate $CPU_RATE --duration 3 ${CPU_ARGS:-} --json >"$OUT/cpu-$name-$round.json" 2>>"$OUT/gen.log"
    c1=$(cputime $pid)
    python3 -c "import json; v=json.load(open('$OUT/cpu-$name-$round.json')); n=v.get('received') or v.get('valid') or 0; print('cpu|$round|$name|rate $CPU_RATE ${CPU_ARGS:-}|replies %d|loss %.3f %%|ns/reply %.0f' % (n, v['loss_pct'], ($c1-$c0)/max(n,1)))" >>"$OUT/cpu.txt"
    stop
  done
done
cat "$OUT/cpu.txt" 2>/dev/null
