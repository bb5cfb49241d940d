#!/usr/bin/env bash
# Issue 21's criterion figures, before and after in one session on one machine: the frame path
# (IPv4 and IPv6, checksums included) and the rate limiter (1 M distinct clients, unbatched and in
# prefetched batches of 64; one hot client on every core), the two builds alternated ROUNDS times
# (A B A B ...) so that a noisy neighbour hits both alike; prints per benchmark the median of the
# rounds' criterion estimates and the ratio after/before.
#
#   bench/results/hotpath-batch-2core.sh [BEFORE_COMMIT [ROUNDS]]
#
# BEFORE_COMMIT (default: the parent of the first #21 commit) is built in a worktree under /tmp
# with today's proto/benches/frame.rs (the IPv6 case is new; the library under it is the old one).
# The limiter benchmarks are compared by the names both builds have (hot_key_1thread is added to
# the old bench, as it is in today's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BEFORE=${1:-482ca90^}
ROUNDS=${2:-5}
WT=${HOTPATH_WORKTREE:-/tmp/hotpath-before}
BIN=/tmp/hotpath-bins
CARGO_TARGET_DIR_BEFORE=${HOTPATH_TARGET:-/tmp/hotpath-before-target}

bench_bin() { # DIR TARGET_DIR NAME -> path of the bench executable
    (cd "$1" && CARGO_TARGET_DIR=$2 cargo bench -p stratum-proto --bench "$3" --no-run 2>&1) |
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
git -C "$WT" show "HEAD:proto/benches/frame.rs" >/dev/null
cp "$ROOT/proto/benches/frame.rs" "$WT/proto/benches/frame.rs"
# The one-core hot-client case is new too: the same few lines, added to the old limiter bench.
python3 - "$WT/proto/benches/ratelimit.rs" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
anchor = '    let l = limiter();\n    group.bench_function(format!("hot_key_{threads}threads_per_core"), |b| {'
if "hot_key_1thread" not in s and anchor in s:
    s = s.replace(anchor, '''    let l = limiter();
    group.bench_function("hot_key_1thread", |b| {
        b.iter(|| {
            random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(l.check(address(7), NtpTimestamp::from_parts(3_900_000_000, 0), random))
        })
    });

''' + anchor)
    open(p, "w").write(s)
PY
for b in frame ratelimit; do
    cp "$(bench_bin "$WT" "$CARGO_TARGET_DIR_BEFORE" "$b")" "$BIN/before-$b"
    cp "$(bench_bin "$ROOT" "$ROOT/target" "$b")" "$BIN/after-$b"
done
git -C "$WT" checkout -q -- proto/benches/frame.rs proto/benches/ratelimit.rs

RAW=$BIN/raw.txt
: >"$RAW"
# Criterion writes target/criterion under the working directory: keep it out of the tree.
cd "$BIN"
FILTER='distinct_1thread$|distinct_1thread_batch64_prefetched$|hot_key'
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
echo "before: $(git -C "$WT" rev-parse --short HEAD); after: $(git -C "$ROOT" rev-parse --short HEAD); $ROUNDS rounds, A B alternated"
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
        for (k in names) if (n["before", k] && n["after", k]) {
            b = median("before", k); a = median("after", k)
            printf "| %s | %.1f | %.1f | %.2f | %.1f-%.1f | %.1f-%.1f |\n", k, b, a, a / b, lo["before"], hi["before"], lo["after"], hi["after"]
        }
    }' "$RAW" | sort
echo
echo "raw (side, round, benchmark, ns per iteration): $RAW"
