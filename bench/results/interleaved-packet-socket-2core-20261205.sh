#!/bin/sh
# Issue 14: a chronyd xleave client's sourcestats std dev against the xdp backend (copy mode on
# veth), alternating the build before the packet socket (/tmp/bin-old: T3 = the AF_XDP TX
# metadata stamp, ecc1b4c) and after it (/tmp/bin-new: T3 = the driver's stamp through a packet
# socket: 200da80 plus interleaved-packet-socket-2core-20261205.patch).
# Each run also measures chronyd's own server beside it (the test's yardstick).
# Usage: ROUNDS=3 bench/results/interleaved-packet-socket-2core-20261205.sh OUTDIR
set -eu
out=${1:?out dir}
mkdir -p "$out"
for r in $(seq 1 "${ROUNDS:-3}"); do
  for v in old new; do
    mkdir -p "$out/$r-$v"
    STD_DEV_LOGDIR="$out/$r-$v" STRATUMD_BIN=/tmp/bin-$v \
    STD_DEV_SERVER='backend = "xdp"\ninterface = "xs"\nqueues = "all"\nport = 123\nxdp-mode = "auto"' \
      cargo test --all-features -p stratumd --test interleaved std_dev -- --ignored --nocapture \
      > "$out/$r-$v/test.log" 2>&1 || true
    echo "$r $v $(date -u +%H:%M) $(grep -E 'sourcestats Std Dev' "$out/$r-$v/test.log" | tr '\n' ' ')"
  done
done
