set -u
G=spg; S=sps; GI=spg0; SI=sps0; GA=10.98.0.1; SA=10.98.0.2
ip netns del $G 2>/dev/null; ip netns del $S 2>/dev/null
ip netns add $G; ip netns add $S
ip link add $GI type veth peer name $SI
ip link set $GI netns $G; ip link set $SI netns $S
ip -n $G addr add $GA/24 dev $GI; ip -n $S addr add $SA/24 dev $SI
for ns in $G $S; do ip -n $ns link set lo up; done
ip -n $G link set $GI up; ip -n $S link set $SI up
ip -n $S route add 10.200.0.0/16 via $GA
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
ip netns del $G; ip netns del $S
