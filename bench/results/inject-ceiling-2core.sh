#!/usr/bin/env bash
# The runs behind bench/results/inject-ceiling-2core.md (root; the 2-core VM): the AF_XDP load
# generator's own ceiling, --tx inject (requests made in the kernel) against --tx xsk (requests
# pushed on the AF_XDP TX ring), both against `stratum-bench reflect` (a do-nothing AF_XDP
# responder), and three ramps with --tx inject against the reflector.
#
# Two namespaces joined by one veth pair: the generator's (ijg, ijg0 10.98.0.1, core 0) and the
# reflector's (ijs, ijs0 10.98.0.2, core 1). GRO is on at both ends and their NAPI runs threaded,
# pinned to its own side's core at SCHED_FIFO 50 (it preempts the process there, as a NIC's
# softirq would), so each side pays for its own receive path (by default a veth's receive work
# runs on the sender's core). BIN: a release stratum-bench built with --features xdp;
# OUT: where the JSON lines go.
set -euo pipefail
BIN=$(realpath "${BIN:-target/release/stratum-bench}")
OUT=${OUT:-/tmp/inject-ceiling-2core}
RUNS=${RUNS:-3}
RAMP=${RAMP:-200000,1.1,2}
mkdir -p "$OUT"
. "$(dirname "$0")/lib/netns.sh"
G=ijg S=ijs GI=ijg0 SI=ijs0 GA=10.98.0.1 SA=10.98.0.2
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; veth_teardown $G $S' EXIT
veth_pair $G $S $GI $SI $GA $SA
ip netns exec $G ethtool -K $GI gro on >/dev/null
ip netns exec $S ethtool -K $SI gro on >/dev/null
ip netns exec $G sh -c "echo 1 > /sys/class/net/$GI/threaded"
ip netns exec $S sh -c "echo 1 > /sys/class/net/$SI/threaded"
ip netns exec $S taskset -c 1 "$BIN" reflect --interface $SI --port 123 --cores 1 --duration 3600 >"$OUT/reflect.out" 2>"$OUT/reflect.err" &
pid=$!
sleep 1
pin() {
  local p
  # pgrep -f sees a kernel thread's name in brackets ("[napi/ijs0-1652]"): no "^" anchor.
  for p in $(pgrep -f "napi/$SI-[0-9]+"); do taskset -pc 1 "$p" >/dev/null; chrt -f -p 50 "$p"; done
  for p in $(pgrep -f "napi/$GI-[0-9]+"); do taskset -pc 0 "$p" >/dev/null; chrt -f -p 50 "$p"; done
  [ -n "$(pgrep -f "napi/$SI-[0-9]+")" ] && [ -n "$(pgrep -f "napi/$GI-[0-9]+")" ] || { echo "no NAPI threads to pin" >&2; exit 1; }
}
load() { ip netns exec $G "$BIN" load --engine xdp --interface $GI --i-own-this-target --cores 0 --target $SA:123 --json "$@"; }
load --rate 1000 --duration 1 >/dev/null 2>&1
pin
: >"$OUT/ceiling.jsonl"
for run in $(seq 1 "$RUNS"); do
  for tx in inject xsk; do
    pin
    load --tx $tx --rate 0 --duration 3 2>"$OUT/notes-$tx-$run.txt" |
      jq -c --arg tx $tx --argjson run "$run" '{tx: $tx, run: $run, sent, send_rate, received, achieved_reply_rate, loss_pct, rtt_p50_us, rtt_p99_us}' |
      tee -a "$OUT/ceiling.jsonl"
  done
done
: >"$OUT/ramps.jsonl"
for run in $(seq 1 "$RUNS"); do
  pin
  load --tx inject --ramp "$RAMP" >"$OUT/ramp-$run.json" 2>/dev/null
  jq -c --argjson run "$run" '{run: $run, sustainable_rate, stopped_because, steps: (.steps | length)}' "$OUT/ramp-$run.json" | tee -a "$OUT/ramps.jsonl"
done
