B=/work/main/target/release/stratum-bench
NAME=$1; T=$2; cap=$3
for pct in 1 10 25 50 80; do
  r=$((cap*pct/100)); [ $pct = 1 ] && r=1000
  ip netns exec ilc $B load --engine xdp --interface xc --target $T --i-own-this-target --interleaved --rate $r --duration 2 --json 2>/dev/null \
   | python3 -c "import json,sys; v=json.load(sys.stdin); i=v['interleaved']; x=i['interleaved_error']; b=i['basic_error']; print('|$NAME|%d|%.3f|%.1f|%d|%d|%d|%d|%d|%d|%d|%d|' % (v['offered_rate'], v['loss_pct'], i['interleaved_pct'], i['one_way_delay_ns'], x['min_ns'], x['mean_ns'], x['p99_ns'], x['samples'], b['min_ns'], b['mean_ns'], b['p99_ns']))"
done
