#!/bin/bash
# issue 14, bench/results/interleaved-quiet-2core-20261205.md: the ignored std_dev test of
# server/tests/interleaved.rs run back to back (release binaries copied to /tmp/i14s first).
cd /work/main
XDP='backend = "xdp"\ninterface = "xs"\nqueues = "all"\nport = 123\nxdp-mode = "auto"'
for r in 1 2 3 4 5; do
  for b in socket xdp; do
    echo "=== run $r $b $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $b = xdp ]; then export STD_DEV_SERVER="$XDP"; else unset STD_DEV_SERVER; fi
    STRATUMD_BIN=/work/main/target/release/stratumd cargo test -q --all-features -p stratumd --test interleaved std_dev -- --ignored --nocapture 2>&1 | grep -E "sourcestats Std Dev|panicked|test result|^10\.88"
  done
done
