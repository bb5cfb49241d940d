#!/usr/bin/env bash
# The runs behind bench/results/xdp-clients-1k-vs-1m-2core-20261205.md (root; the 2-core VM).
# stratumd's xdp backend (1 queue, worker on core 1, [ratelimit] on with limits nobody reaches in
# a run, coarse bucket on) against the AF_XDP generator (core 0), 1 k vs 1 M distinct simulated
# clients in 10.0.0.0/8, fixed-rate steps alternated A B A B, a fresh server for every step (so
# the limiter table starts empty each time and both arms do the same work apart from where the
# table's records are: 1 k of them stay in cache, 1 M distinct ones miss).
#
# Why the limits and the step length: the tightest per-client rate the config can express is
# interval -4 (16/s) with burst 255, so 1 k clients at hundreds of k/s stay unlimited only while
# each has sent fewer than 255 + 16 x D requests: a step of D = 0.5 s at R <= 500 k/s sends at most
# 250 per client. The coarse bucket stays on but per address (coarse-ipv4-prefix 32, burst 255):
# at its default /24 the generator's sequential addresses (1 k clients = 4 /24s) would be
# limited at once. first-contacts-per-second = 0 (no budget): with 1 M clients nearly every
# request is a first contact. After every step the server's worker counters (stratumctl workers
# --json, printed by summary.py in the folder beside this script) must show answered = received,
# no KoD and no drop.
#
# Part 3: --rate 0 (as fast as the generator can) for MAX_DUR s, 1 k vs 1 M (0.2 s at the
# generator's ~1 M/s here is about 200 requests per client; 0.4 s limited the 1 k arm).
#
# Per step it records core 1's /proc/stat line before and after (NAME.stat), the load JSON, the worker counters and the server process's CPU time over
# the step (sum of /proc/PID/task/*/schedstat run time, ns), and which other builds, tests or
# servers were running when it started (NAME.others).
# Traffic stays in the two namespaces this script makes and removes (xcg, xcs).
set -euo pipefail
BIN=${BIN:-target/release/stratum-bench}
STRATUMD=${STRATUMD:-target/release/stratumd}
CTL=${CTL:-target/release/stratumctl}
OUT=${OUT:-/tmp/xdp-clients-1k-vs-1m}
RATES=${RATES-300000 400000 500000}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-0.5}
# Part 2, long steps: in a 0.5 s step the 1 M arm reaches only its first R x 0.5 clients (all new);
# steps of LONG_DUR s let the rotation wrap (1 M clients come back), against LONG_SMALL clients
# (8192: 256 KiB of records, as cache-resident as 1 k; at 400 k/s x 4 s, 195 requests each < 255).
LONG_RATES=${LONG_RATES-300000 400000}
MAX_DUR=${MAX_DUR:-0.2}
LONG_DUR=${LONG_DUR:-4}
LONG_SMALL=${LONG_SMALL:-8192}
BIN=$(realpath "$BIN") STRATUMD=$(realpath "$STRATUMD") CTL=$(realpath "$CTL")
mkdir -p "$OUT"
. "$(dirname "$0")/lib/netns.sh"
G=xcg S=xcs GI=xcg0 SI=xcs0 GA=10.99.0.1 SA=10.99.0.2

pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; veth_teardown $G $S' EXIT
veth_pair $G $S $GI $SI $GA $SA 10.0.0.0/8

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

[ratelimit]
interval = -4
burst = 255
leak = 1
kod = 0
clients = 1048576
first-contacts-per-second = 0
kods-per-second = 0
coarse = true
coarse-interval = -4
coarse-burst = 255
coarse-ipv4-prefix = 32

[control]
socket = "$OUT/control.sock"
EOF

cputime() { { cat /proc/$1/task/*/schedstat 2>/dev/null || true; } | awk '{s += $1} END {printf "%d\n", s}'; }

# run NAME CLIENTS RATE DURATION: one step against a fresh server.
run() {
  local name=$1 clients=$2 rate=$3 dur=$4
  # The previous server's AF_XDP socket can hold queue 0 a moment after it exits (EBUSY): retry.
  for attempt in 1 2 3 4 5; do
    rm -f "$OUT/control.sock"
    ip netns exec $S taskset -c 1 "$STRATUMD" -c "$OUT/xdp.toml" >"$OUT/$name.server.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do [ -S "$OUT/control.sock" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    sleep 0.5
    kill -0 $pid 2>/dev/null && break
    wait $pid 2>/dev/null || true; pid=
    echo "$name: server did not start (attempt $attempt), again" >&2; sleep 1
  done
  # Other benchmarks, builds or tests running on the machine (recorded, not waited for).
  pgrep -af 'stratum-bench|stratumd|chronyd|ntpd|cargo|rustc' | grep -v -e "$OUT" -e "$BIN" >"$OUT/$name.others" || true
  local c0; c0=$(cputime $pid)
  grep '^cpu1 ' /proc/stat >"$OUT/$name.stat"
  ip netns exec $G "$BIN" load --engine xdp --interface $GI --target $SA:123 --i-own-this-target \
      --cores 0 --json --clients "$clients" --client-net 10.0.0.0/8 --rate "$rate" --duration "$dur" \
      >"$OUT/$name.json" 2>"$OUT/$name.log" || true
  local c1; c1=$(cputime $pid)
  grep '^cpu1 ' /proc/stat >>"$OUT/$name.stat"
  echo "$((c1 - c0))" >"$OUT/$name.cpu_ns"
  "$CTL" --socket "$OUT/control.sock" workers --json >"$OUT/$name.workers.json" 2>&1 || true
  kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; pid=
  echo "$name: done" >&2
}

date -u +%FT%TZ >"$OUT/date"
uname -r >"$OUT/kernel"
for rate in $RATES; do
  for i in $(seq "$ROUNDS"); do
    run r$rate-1k-$i 1000 $rate "$DUR"
    run r$rate-1m-$i 1000000 $rate "$DUR"
  done
done
for i in $(seq "$ROUNDS"); do
  run max-1k-$i 1000 0 "$MAX_DUR"
  run max-1m-$i 1000000 0 "$MAX_DUR"
done
for rate in $LONG_RATES; do
  for i in $(seq "$ROUNDS"); do
    run long-r$rate-small-$i "$LONG_SMALL" $rate "$LONG_DUR"
    run long-r$rate-1m-$i 1000000 $rate "$LONG_DUR"
  done
done
echo "results in $OUT" >&2
