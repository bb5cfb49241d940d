#!/bin/bash
# issue 14, bench/results/interleaved-quiet-2core-20261205.md. Series 1 ran the list
# "main xdp default" "main xdp 0.0" "ps xdp 0.0" "main socket 0.0" "main socket default" "ps xdp default";
# series 2 the list below. Needs server/tests/interleaved.rs with STD_DEV_CLIENT_OPTS.
# Std dev with chronyd's asymmetry correction on (default) and off (asymmetry 0.0), xdp main / packet socket / socket.
cd /work/main
XDP='backend = "xdp"\ninterface = "xs"\nqueues = "all"\nport = 123\nxdp-mode = "auto"'
for v in "main xdp 0.0" "ps xdp 0.0" "main xdp 0.0" "ps xdp 0.0" "main xdp 0.0"; do
  set -- $v; bin=$1 be=$2 asym=$3
  d=/tmp/i14s/asym-$bin-$be-$asym; rm -rf $d; mkdir -p $d
  if [ $be = xdp ]; then export STD_DEV_SERVER="$XDP"; else unset STD_DEV_SERVER; fi
  if [ $asym = default ]; then unset STD_DEV_CLIENT_OPTS; else export STD_DEV_CLIENT_OPTS="asymmetry $asym"; fi
  echo "=== $bin $be asymmetry=$asym $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  STD_DEV_LOGDIR=$d STRATUMD_BIN=/tmp/i14s/stratumd-$bin cargo test -q --all-features -p stratumd --test interleaved std_dev -- --ignored --nocapture 2>&1 | grep -E "sourcestats Std Dev"
  # statistics.log: std dev and asymmetry (last column) of the last regression per source
  for ip in $(awk '$1 ~ /^20/ {print $3}' $d/statistics.log | sort -u); do echo "$ip last asym/sd: $(grep " $ip " $d/statistics.log | tail -20 | awk '{a+=$NF; s+=$4} END {printf "asym %.2f sd %.0f ns", a/NR, s/NR*1e9}')"; done
done
