#!/usr/bin/env bash
# [server] send-slice on the socket backend: the basic replies' T3 error (load --interleaved, its
# "basic" columns) at a few rates, the server's CPU per reply at CPU_RATE, and the sustainable rate
# (a ramp from 100 k/s, x1.25, refined to 3 %), for S = 64 (the batch:
# one sendmmsg per batch, as before send-slice), 16, 8 and 4, alternated ROUNDS times (A B A B).
# Namespaces as interleaved-error-2core-20261205.md: server in ssls (10.78.0.1:123), generator in
# sslc (10.78.0.2), veth; 1 worker; server on core 1, generator on core 0. Removed at the end.
#   bench/results/socket-send-slice-2core-20261205.sh [ROUNDS] [RATES] [CPU_RATE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${1:-2}
RATES=${2:-"1000 17000 68000"}
CPU_RATE=${3:-150000}
# SLICES: the send-slice values (default 64 16 8 4); RAMP=0 skips the ramps (CPU only).
SLICES=${SLICES:-64 16 8 4}
RAMP=${RAMP:-1}
S=$ROOT/target/release/stratumd
B=$ROOT/target/release/stratum-bench
T=10.78.0.1:123
DIR=$(mktemp -d /tmp/sendslice.XXXX)
SPID=
cleanup() {
    [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    ip netns del ssls 2>/dev/null || true
    ip netns del sslc 2>/dev/null || true
}
trap cleanup EXIT
ip netns add ssls
ip netns add sslc
ip link add ssl0 netns ssls type veth peer name ssl1 netns sslc
ip -n ssls addr add 10.78.0.1/24 dev ssl0
ip -n sslc addr add 10.78.0.2/24 dev ssl1
for n in ssls sslc; do ip -n $n link set lo up; done
ip -n ssls link set ssl0 up
ip -n sslc link set ssl1 up

echo "| S | round | rate /s | loss % | basic samples | basic min | basic mean | basic p99 | xleave mean |"
echo "|---|---|---|---|---|---|---|---|---|"
RAMPS=$DIR/ramps.txt
: > "$RAMPS"
for round in $(seq 1 "$ROUNDS"); do
    for slice in $SLICES; do
        cat > "$DIR/s.toml" <<CONF
[server]
listen = ["$T"]
workers = 1
cores = [1]
batch = 64
send-slice = $slice

[clock]
source = "local"
stratum = 2
CONF
        ip netns exec ssls "$S" --config "$DIR/s.toml" > "$DIR/s-$slice-$round.log" 2>&1 &
        SPID=$!
        sleep 1
        for r in $RATES; do
            s=$((r / 2000)); [ $s -lt 1 ] && s=1; [ $s -gt 16 ] && s=16
            ip netns exec sslc taskset -c 0 "$B" load --target $T --i-own-this-target --interleaved --rate "$r" \
                --duration 2 --sockets $s --json 2>/dev/null |
                python3 -c "import json,sys; v=json.load(sys.stdin); i=v['interleaved']; x=i['interleaved_error']; b=i['basic_error']; print('|$slice|$round|%d|%.3f|%d|%d|%d|%d|%d|' % (v['offered_rate'], v['loss_pct'], b['samples'], b['min_ns'], b['mean_ns'], b['p99_ns'], x['mean_ns']))"
        done
        # The server's CPU per request at a fixed basic load (utime+stime ticks of its process).
        t0=$(awk '{print $14+$15}' /proc/$SPID/stat)
        ip netns exec sslc taskset -c 0 "$B" load --target $T --i-own-this-target --rate $CPU_RATE --duration 3 \
            --sockets 4 --json 2>/dev/null > "$DIR/cpu.json" || true
        t1=$(awk '{print $14+$15}' /proc/$SPID/stat)
        cpu=$(python3 -c "import json; v=json.load(open('$DIR/cpu.json')); print('%.0f %.3f' % (($t1-$t0)*1e9/$(getconf CLK_TCK)/v['received'], v['loss_pct']))")
        cap=-
        [[ $RAMP == 1 ]] && cap=$(ip netns exec sslc taskset -c 0 "$B" load --target $T --i-own-this-target --ramp 100000,1.25,1 --max-steps 12 \
            --tries 2 --refine 3 --sockets 4 --json 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["sustainable_rate"])')
        echo "$slice $round $cap $cpu" >> "$RAMPS"
        kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
    done
done
echo
echo "| S | round | sustainable /s | server CPU ns/reply at $CPU_RATE/s | loss % there |"
echo "|---|---|---|---|---|"
awk '{print "|" $1 "|" $2 "|" $3 "|" $4 "|" $5 "|"}' "$RAMPS"
