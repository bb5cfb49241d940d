#!/usr/bin/env bash
# Instruction counts and simulated cache misses per request for the frame path and the rate
# limiter, from valgrind's callgrind: this VM exposes no performance counters (`perf stat -e
# instructions true` says "not supported"), so callgrind stands in for issue 21's perf stat.
# Each case runs twice, with N and 2N batches of 64, and the difference over 64 N is the cost per
# request without start-up and warm-up. Cache misses come from callgrind's simulator
# (--cache-sim=yes: D1 as the host reports it, and as the "last level" a 2 MiB 16-way cache, this
# VM's L2 per core, since the 480 MiB L3 it reports would hide every miss; no prefetcher,
# and prefetch instructions not modelled as fills): an estimate of where misses are, not a count.
#
#   bench/results/callgrind-hotpath-2core.sh [N]
#
# Cases: the frame path (proto/benches/callgrind_frame.rs: ipv4, ipv6, the same answer_batch as
# the criterion bench); the limiter (proto/benches/callgrind_limiter.rs): hot (one client over
# its limit), 1k and 1m distinct clients in prefetched batches of 64, 1m-coarse (stratumd's
# default: and the coarse network table) and 1m-coarse-client-table (the coarse bucket in the
# client-style table it had before).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-4096}
OUT=${CALLGRIND_OUT:-/tmp/callgrind-hotpath}
mkdir -p "$OUT"
bench_bin() {
    (cd "$ROOT" && cargo bench --all-features -p stratum-proto --bench "$1" --no-run 2>&1) |
        sed -n "s|.*Executable benches/$1.rs (\(.*\))|\1|p"
}
FRAME=$(bench_bin callgrind_frame)
LIMITER=$(bench_bin callgrind_limiter)
cp "$FRAME" "$OUT/callgrind_frame"
cp "$LIMITER" "$OUT/callgrind_limiter"

# totals BIN CASE BATCHES -> "Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw"
totals() {
    local file=$OUT/callgrind.$(basename "$1").$2.$3
    valgrind --tool=callgrind --cache-sim=yes --LL=2097152,16,64 --callgrind-out-file="$file" "$1" "$2" "$3" >/dev/null 2>&1
    sed -n 's/^summary: //p; s/^totals: //p' "$file" | head -1
}
echo "machine: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; commit $(git -C "$ROOT" rev-parse --short HEAD); valgrind $(valgrind --version); N = $N batches of 64"
echo
echo "| case | instructions per request | data reads | data writes | D1 misses (read + write) | last-level misses (read + write) |"
echo "|---|---:|---:|---:|---:|---:|"
for spec in frame:ipv4 frame:ipv6 limiter:hot limiter:1k limiter:1m limiter:1m-coarse limiter:1m-coarse-client-table; do
    bin=$OUT/callgrind_${spec%%:*}
    case=${spec#*:}
    one=$(totals "$bin" "$case" "$N")
    two=$(totals "$bin" "$case" $((2 * N)))
    awk -v one="$one" -v two="$two" -v n="$N" -v name="${spec%%:*} $case" 'BEGIN {
        split(one, a, " "); split(two, b, " "); r = 64 * n
        for (i = 1; i <= 9; i++) d[i] = (b[i] - a[i]) / r
        printf "| %s | %.0f | %.0f | %.0f | %.2f | %.2f |\n", name, d[1], d[2], d[3], d[5] + d[6], d[8] + d[9]
    }'
done
