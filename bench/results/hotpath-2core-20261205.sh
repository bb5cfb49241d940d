#!/usr/bin/env bash
# Issue 21, the last few ns: the frame path (IPv4 and IPv6, parse + respond + rewrite with
# checksums, batch of 64) and the limiter with 1 M distinct clients in prefetched batches of 64
# (coarse /24 /48 table on, stratumd's default, and off; the hot and the allowed client), before
# and after in one session on one machine. Both builds' criterion benches run alternately ROUNDS
# times (A B A B ...), so a noisy neighbour hits both alike; prints per benchmark the median of the
# rounds' estimates (ns per request or decision), the ratio after/before of the medians, the median
# of the per-round ratios (each round's after over the same round's before), and the ranges.
#
#   bench/results/hotpath-2core-20261205.sh [BEFORE_COMMIT [ROUNDS]]
#
# BEFORE_COMMIT (default: the parent of the frame commit 657c30b) is built in a worktree under /tmp
# with today's frame bench harness (proto/benches/frame.rs, common/frames.rs) and its own limiter
# bench; AFTER is this checkout's working tree. MEASURE (seconds, default 2) is criterion's
# --measurement-time per benchmark and round; NICE (default 0) runs the benches under nice -n NICE
# (as root, a negative value gives them the CPU before other engineers' compilers on a shared VM).
# BENCHES (default "frame ratelimit") picks proto's criterion benches to build and alternate, e.g.
# BENCHES="frame respond" for the frame path and respond() alone (the socket backend's work).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BEFORE=${1:-657c30b^}
ROUNDS=${2:-7}
MEASURE=${MEASURE:-2}
NICE=${NICE:-0}
BENCHES=${BENCHES:-frame ratelimit}
WT=${HOTPATH_WORKTREE:-/tmp/hotpath-20261205-before}
BIN=${HOTPATH_BINS:-/tmp/hotpath-20261205-bins}
TARGET_BEFORE=${HOTPATH_TARGET:-/tmp/hotpath-20261205-before-target}
TARGET_AFTER=${HOTPATH_AFTER_TARGET:-$ROOT/target}

bench_bin() { # DIR TARGET_DIR NAME -> path of the bench executable
    (cd "$1" && CARGO_TARGET_DIR=$2 cargo bench --all-features -p stratum-proto --bench "$3" --no-run 2>&1) |
        sed -n "s|.*Executable benches/$3.rs (\(.*\))|\1|p"
}
rm -rf "$BIN"
mkdir -p "$BIN"
if [[ ! -d $WT ]]; then
    git -C "$ROOT" worktree add -f --detach "$WT" "$BEFORE" >/dev/null
    # A worktree made here goes again at the end (HOTPATH_WORKTREE names one to keep and reuse).
    trap 'git -C "$ROOT" worktree remove --force "$WT"' EXIT
fi
git -C "$WT" checkout -q --detach "$BEFORE"
# The same harness around both libraries.
cp "$ROOT/proto/benches/frame.rs" "$WT/proto/benches/frame.rs"
cp "$ROOT/proto/benches/common/frames.rs" "$WT/proto/benches/common/frames.rs"
for b in $BENCHES; do
    cp "$(bench_bin "$WT" "$TARGET_BEFORE" "$b")" "$BIN/before-$b"
    cp "$(bench_bin "$ROOT" "$TARGET_AFTER" "$b")" "$BIN/after-$b"
done
git -C "$WT" checkout -q -- proto/benches/frame.rs proto/benches/common/frames.rs

RAW=$BIN/raw.txt
: >"$RAW"
# Criterion writes target/criterion under the working directory: keep it out of the tree.
cd "$BIN"
FILTER='ratelimit/(distinct_1thread_batch64_prefetched|hot_key_1thread|allowed_key_1thread)(_coarse)?$'
for round in $(seq 1 "$ROUNDS"); do
    for side in before after; do
        for b in $BENCHES; do
            filter=
            [[ $b == ratelimit ]] && filter=$FILTER
            nice -n "$NICE" "$BIN/$side-$b" --bench --warm-up-time 1 --measurement-time "$MEASURE" --noplot $filter 2>/dev/null |
                awk -v side="$side" -v round="$round" '
                    /^[a-z_]+\/[a-z0-9_]+/ { name = $1 }
                    /time:/ && name != "" {
                        line = $0; sub(/.*time: *\[/, "", line); split(line, f, " ")
                        ns = (f[4] == "µs" ? f[3] * 1000 : (f[4] == "ms" ? f[3] * 1e6 : f[3]))
                        print side, round, name, ns; name = "" }' >>"$RAW"
        done
    done
done
echo "machine: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "before: $(git -C "$WT" rev-parse --short HEAD); after: $(git -C "$ROOT" rev-parse --short HEAD) (+ its working tree's proto); $ROUNDS rounds, A B alternated, --measurement-time $MEASURE, nice $NICE"
echo
echo "| benchmark | before (median, ns) | after (median, ns) | after / before (medians) | median of per-round ratios | before range | after range |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk '
    # Per request: a batch64 iteration is 64 requests.
    { k = $3; x = $4 / (k ~ /batch64/ ? 64 : 1); v[$1, k, ++n[$1, k]] = x; r[$1, k, $2] = x; names[k] = 1 }
    function sort(a, m,   i, j, t) { for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
    function med(a, m) { sort(a, m); return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
    END {
        for (k in names) {
            if (!n["before", k] || !n["after", k]) continue
            split("", a); for (i = 1; i <= n["before", k]; i++) a[i] = v["before", k, i]
            b = med(a, n["before", k]); blo = a[1]; bhi = a[n["before", k]]
            split("", a); for (i = 1; i <= n["after", k]; i++) a[i] = v["after", k, i]
            f = med(a, n["after", k]); flo = a[1]; fhi = a[n["after", k]]
            split("", a); m = 0
            for (i = 1; i <= n["after", k]; i++) if (r["before", k, i] > 0 && r["after", k, i] > 0) a[++m] = r["after", k, i] / r["before", k, i]
            printf "| %s | %.1f | %.1f | %.2f | %.2f | %.1f-%.1f | %.1f-%.1f |\n", k, b, f, f / b, med(a, m), blo, bhi, flo, fhi
        }
    }' "$RAW" | sort
echo
echo "raw (side, round, benchmark, ns per iteration): $RAW"
