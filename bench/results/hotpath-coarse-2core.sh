#!/usr/bin/env bash
# Issue 21 (item 2) against issue 13 (item 5): the coarse per-network bucket's cost and the frame
# path's last percent, before and after in one session on one machine. Both builds' criterion
# benches run alternately ROUNDS times (A B A B ...), so that a noisy neighbour hits both alike;
# prints per benchmark the median of the rounds' estimates (ns per request or decision) and the
# ratio after/before.
#
#   bench/results/hotpath-coarse-2core.sh [BEFORE_COMMIT [ROUNDS]]
#
# BEFORE_COMMIT (default: the parent of the network-table commit, 3a43447) is built in a worktree
# under /tmp with its own limiter bench and today's frame bench. The limiter cases are compared by name: `_coarse` is the coarse
# bucket in the layout of each build (before: a client-style table, 256-byte sets; after: the
# records-only network table); the after build's `_coarse_client_table` is the old layout again,
# in the same binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BEFORE=${1:-3a43447^}
ROUNDS=${2:-5}
WT=${HOTPATH_WORKTREE:-/tmp/hotpath-coarse-before}
BIN=${HOTPATH_BINS:-/tmp/hotpath-coarse-bins}
CARGO_TARGET_DIR_BEFORE=${HOTPATH_TARGET:-/tmp/hotpath-coarse-before-target}

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
# The frame path's bench as today's (its batch in common/frames.rs, not inlined): the same harness
# around both libraries.
cp "$ROOT/proto/benches/frame.rs" "$WT/proto/benches/frame.rs"
cp "$ROOT/proto/benches/common/frames.rs" "$WT/proto/benches/common/frames.rs"
for b in frame ratelimit; do
    cp "$(bench_bin "$WT" "$CARGO_TARGET_DIR_BEFORE" "$b")" "$BIN/before-$b"
    cp "$(bench_bin "$ROOT" "$ROOT/target" "$b")" "$BIN/after-$b"
done
git -C "$WT" checkout -q -- proto/benches/frame.rs
rm -f "$WT/proto/benches/common/frames.rs"

RAW=$BIN/raw.txt
: >"$RAW"
# Criterion writes target/criterion under the working directory: keep it out of the tree.
cd "$BIN"
FILTER='ratelimit/(distinct_1thread_batch64_prefetched|hot_key_1thread|allowed_key_1thread)(_coarse|_coarse_client_table)?$'
for round in $(seq 1 "$ROUNDS"); do
    for side in before after; do
        for b in frame ratelimit; do
            filter=
            [[ $b == ratelimit ]] && filter=$FILTER
            "$BIN/$side-$b" --bench --warm-up-time 1 --measurement-time 3 --noplot $filter 2>/dev/null |
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
echo "before: $(git -C "$WT" rev-parse --short HEAD); after: $(git -C "$ROOT" rev-parse --short HEAD) (+ its working tree's proto); $ROUNDS rounds, A B alternated"
echo
echo "| benchmark | before (median, ns per request) | after | after / before | rounds' range before | after |"
echo "|---|---:|---:|---:|---:|---:|"
awk '
    # Per request: a batch64 iteration is 64 requests.
    { k = $3; v[$1, k, ++n[$1, k]] = $4 / (k ~ /batch64/ ? 64 : 1); names[k] = 1 }
    function median(side, k,   m, i, j, t, a) {
        m = n[side, k]; for (i = 1; i <= m; i++) a[i] = v[side, k, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo[side] = a[1]; hi[side] = a[m]
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
        for (k in names) {
            a = n["after", k] ? sprintf("%.1f", median("after", k)) : "-"
            b = n["before", k] ? sprintf("%.1f", median("before", k)) : "-"
            r = (n["after", k] && n["before", k]) ? sprintf("%.2f", a / b) : "-"
            rb = n["before", k] ? sprintf("%.1f-%.1f", lo["before"], hi["before"]) : "-"
            ra = n["after", k] ? sprintf("%.1f-%.1f", lo["after"], hi["after"]) : "-"
            printf "| %s | %s | %s | %s | %s | %s |\n", k, b, a, r, rb, ra
        }
    }' "$RAW" | sort
echo
echo "raw (side, round, benchmark, ns per iteration): $RAW"
