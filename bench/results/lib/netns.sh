# Sourced by the scripts in bench/results: two network namespaces joined by one veth pair.
#
# veth_pair G S GI SI GA SA [ROUTE]: namespace G (the generator's: interface GI, address GA/24)
# and namespace S (the server's: SI, SA/24), loopback up in both. With ROUTE (a CIDR), S routes
# it back via GA: the simulated clients of `load --engine xdp` live there. A pair left over from
# an earlier run is removed first. veth_teardown G S removes the namespaces (and so the pair).

veth_teardown() {
  ip netns del "$1" 2>/dev/null || true
  ip netns del "$2" 2>/dev/null || true
}

veth_pair() {
  local g=$1 s=$2 gi=$3 si=$4 ga=$5 sa=$6 route=${7:-} ns
  veth_teardown "$g" "$s"
  ip netns add "$g"; ip netns add "$s"
  ip link add "$gi" type veth peer name "$si"
  ip link set "$gi" netns "$g"; ip link set "$si" netns "$s"
  ip -n "$g" addr add "$ga/24" dev "$gi"; ip -n "$s" addr add "$sa/24" dev "$si"
  for ns in "$g" "$s"; do ip -n "$ns" link set lo up; done
  ip -n "$g" link set "$gi" up; ip -n "$s" link set "$si" up
  if [ -n "$route" ]; then ip -n "$s" route add "$route" via "$ga"; fi
}
