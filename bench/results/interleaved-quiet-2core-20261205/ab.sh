#!/bin/bash
# issue 14, bench/results/interleaved-quiet-2core-20261205.md: the ignored std_dev test of
# server/tests/interleaved.rs run back to back (release binaries copied to /tmp/i14s first).
# A/B: xdp backend, main (TX metadata stamp) vs packet-socket patch, alternated; each run split.
cd /work/main
XDP='backend = "xdp"\ninterface = "xs"\nqueues = "all"\nport = 123\nxdp-mode = "auto"'
for r in 1 2 3; do
  for b in ps main; do
    d=/tmp/i14s/ab-$b-$r; mkdir -p $d
    echo "=== run $r $b $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    STD_DEV_LOGDIR=$d STD_DEV_SERVER="$XDP" STRATUMD_BIN=/tmp/i14s/stratumd-$b cargo test -q --all-features -p stratumd --test interleaved std_dev -- --ignored --nocapture 2>&1 | grep -E "sourcestats Std Dev|tx_stamp|packet|\"interleaved"
    python3 bench/results/interleaved-xdp-split-2core-20261205.py $d/measurements.log | grep -E "low-delay rep|low-delay off|reply"
  done
done
