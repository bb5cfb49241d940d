set -u
. "$(dirname "$0")/lib/netns.sh"
G=spg; S=sps; GI=spg0; SI=sps0; GA=10.98.0.1; SA=10.98.0.2
veth_pair $G $S $GI $SI $GA $SA 10.200.0.0/16
B=/work/main/target/release
for spin in 0 50 1000 0 50 1000; do
  cat > /tmp/spin.toml <<EOT
[server]
backend = "xdp"
interface = "$SI"
queues = [0]
cores = [1]
idle-spin-us = $spin
[clock]
source = "local"
stratum = 2
EOT
  ip netns exec $S taskset -c 1 $B/stratumd --config /tmp/spin.toml > /tmp/spin.log 2>&1 &
  sleep 1
  for rate in 50000 250000; do
    ip netns exec $G $B/stratum-bench load --engine xdp --interface $GI --target $SA:123 --i-own-this-target --cores 0 --json --rate $rate --duration 3 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin); print('spin $spin rate $rate', 'loss %.2f'%(100-100*d['received']/max(d['sent'],1)), 'ta p50 %.1f p99 %.1f us'%(d['turnaround_p50_ns']/1e3, d['turnaround_p99_ns']/1e3), 'rtt p50 %.1f'%(d['rtt_p50_ns']/1e3))"
  done
  pkill -f "stratumd --config /tmp/spin.toml"; sleep 0.5
done
veth_teardown $G $S
