#!/bin/bash
# NTS throughput: stratumd (socket, 1 worker, [nts]) vs chronyd 4.3 (NTS server, -x), loopback.
# Servers pinned to core 1, the generator to core 0. Run from the repository root after
# `cargo build --workspace --all-features --release -p stratum-bench -p stratumd`:
#   REFINE=3 bench/results/nts-throughput-2core-20261205.sh
# Writes {stratumd,chronyd}-{nts,basic}.json (ramp reports) into a fresh directory under /tmp.
#
# Series 2, the AF_XDP generator (section "AF_XDP generator, over veth" of the .md): stratumd's
# socket and xdp backends and chronyd, each NTS with 1 worker / 1 queue / its one thread on core 1,
# the generator (`load --engine xdp --nts-ke`, tx xsk) on core 0, through bench/compare --nts
# (namespaces, veth, alternation A B C x RUNS), then the same without --nts (basic), from a clean
# export of the commit (no uncommitted changes of others in the binaries):
#   SERIES=xdp RUNS=3 bench/results/nts-throughput-2core-20261205.sh
# Writes compare-2core-{nts,basic}-*.md and their JSON folders into a fresh directory under /tmp.
# Again with the same binaries, NTS only: SERIES=xdp C=/tmp/nts-xdp.XXXX MODES=nts RUNS=3 ...
set -u
if [[ ${SERIES:-loopback} == xdp ]]; then
    if [[ -z ${C:-} ]]; then
        C=$(mktemp -d /tmp/nts-xdp.XXXX)
        git archive HEAD | tar -x -C "$C"
        mkdir -p "$C/target" && cp -a target/release "$C/target/" # a head start for cargo, nothing more
        (cd "$C" && cargo build --release -p stratumd -p stratum-bench --features stratumd/xdp --features stratum-bench/xdp)
    fi
    for mode in ${MODES:-nts basic}; do
        flag=()
        [[ $mode == nts ]] && flag=(--nts)
        "$C/bench/compare" --no-build --engine xdp "${flag[@]}" --only stratumd,chronyd,xdp --runs "${RUNS:-3}" \
            --ramp "${RAMP:-20000,1.3,1}" --tries 3 --refine 3 --server-core 1 --client-core 0 \
            --tag "2core-$mode" --out "$C/results"
    done
    echo "dir $C/results"
    exit 0
fi
# Series 3, chronyd's NTS rate from 1 vs 1000 simulated clients (AF_XDP generator), alternated
# ROUNDS times, with the binaries series 2 built (C=/tmp/nts-xdp.XXXX of that run):
#   SERIES=clients C=/tmp/nts-xdp.XXXX ROUNDS=2 bench/results/nts-throughput-2core-20261205.sh
if [[ ${SERIES:-loopback} == clients ]]; then
    for round in $(seq 1 "${ROUNDS:-2}"); do
        for clients in 1 1000; do
            "$C/bench/compare" --no-build --engine xdp --nts --only chronyd --clients "$clients" --runs 1 \
                --ramp "${RAMP:-20000,1.3,1}" --tries 3 --refine 3 --server-core 1 --client-core 0 \
                --tag "2core-chronyd-nts-clients$clients-r$round" --out "$C/results-clients"
        done
    done
    echo "dir $C/results-clients"
    exit 0
fi
# Series 4, server CPU per request at a rate both carry (30 k/s NTS and basic, 3 s, AF_XDP
# generator, 1000 clients): chronyd and stratumd (socket, 1 worker) on core 1 in a namespace of
# their own, utime+stime from /proc over the step, 2 rounds; with series 2's binaries:
#   SERIES=cpu C=/tmp/nts-xdp.XXXX bench/results/nts-throughput-2core-20261205.sh
if [[ ${SERIES:-loopback} == cpu ]]; then
B=$C/target/release/stratum-bench; D=$(mktemp -d /tmp/nts-cpu.XXXX); cd $D
S=ntcs; G=ntcg; CP=
ip netns add $S; ip netns add $G
trap 'kill $CP 2>/dev/null; ip netns del $S; ip netns del $G' EXIT
ip link add vs netns $S type veth peer name vg netns $G
ip -n $S addr add 10.232.0.1/24 dev vs; ip -n $G addr add 10.232.0.2/24 dev vg
for n in $S $G; do ip -n $n link set lo up; done
ip -n $S link set vs up; ip -n $G link set vg up
ip -n $S route add 10.200.0.0/16 via 10.232.0.2
ip netns exec $S ethtool -K vs tx off >/dev/null
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=x CA" 2>/dev/null
openssl req $ec -keyout server.key -out server.csr -subj "/CN=s" 2>/dev/null
echo "subjectAltName=IP:10.232.0.1" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
cat > chrony.conf <<EOT
local stratum 10
allow 10.232.0.0/24
allow 10.200.0.0/16
bindaddress 10.232.0.1
port 123
cmdport 0
bindcmdaddress /
pidfile $D/chronyd.pid
noclientlog
ntsserverkey $D/server.key
ntsservercert $D/server.pem
ntsport 4460
EOT
cat > stratumd.toml <<EOT
[server]
backend = "socket"
listen = ["10.232.0.1:123"]
workers = 1
cores = [1]

[clock]
source = "local"
stratum = 10

[nts]
master-keys = "$D/nts.keys"
listen = "10.232.0.1:4460"
certificate = "$D/server.pem"
private-key = "$D/server.key"
EOT
ticks() { awk '{print $14 + $15}' /proc/$CP/stat; }
for round in 1 2; do
for server in chronyd stratumd; do
  if [[ $server == chronyd ]]; then
    ip netns exec $S taskset -c 1 chronyd -x -u root -d -f chrony.conf > chronyd.log 2>&1 &
  else
    ip netns exec $S taskset -c 1 $C/target/release/stratumd --config stratumd.toml > stratumd.log 2>&1 &
  fi
  CP=$!; sleep 2
  for mode in nts basic; do
    a=(); [[ $mode == nts ]] && a=(--nts-ke 10.232.0.1:4460 --nts-ca ca.pem)
    t0=$(ticks)
    r=$(ip netns exec $G $B load --target 10.232.0.1:123 --i-own-this-target --engine xdp --interface vg --cores 0 --clients 1000 --rate 30000 --duration 3 "${a[@]}" --json 2>/dev/null | jq -c '{sent, valid, loss_pct}')
    t1=$(ticks)
    echo "round $round $server $mode 30k/s 3 s: $r server cpu (utime+stime) $(( (t1 - t0) * 10 )) ms"
  done
  kill $CP; wait $CP 2>/dev/null; sleep 0.5
done
done
exit 0
fi
B=$PWD/target/release/stratum-bench
S=$PWD/target/release/stratumd
D=$(mktemp -d /tmp/nts-throughput.XXXX)
cd $D
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req $ec -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
cat > stratumd.toml <<EOT
[server]
listen = ["127.0.0.1:11123"]
workers = 1

[clock]
source = "local"
stratum = 2

[nts]
master-keys = "$D/nts.keys"
listen = "127.0.0.1:14460"
certificate = "$D/server.pem"
private-key = "$D/server.key"
EOT
cat > chrony.conf <<EOT
port 11124
ntsport 14461
ntsserverkey $D/server.key
ntsservercert $D/server.pem
allow 127.0.0.1
local stratum 2
pidfile $D/chronyd.pid
cmdport 0
EOT
chmod 644 server.key
RAMP=${RAMP:-10000,1.5,2}
ramp() { # name target [nts args]
  local name=$1; shift
  timeout 120 $B load --target "$@" --ramp $RAMP --tries 2 --refine ${REFINE:-0} --core 0 --sockets 16 --json > $D/$name.json 2> $D/$name.err
  echo "== $name rc=$?"; cat $D/$name.err | grep -v "^$" | tail -20
}
taskset -c 1 $S --config stratumd.toml > stratumd.log 2>&1 &
SP=$!
sleep 1.5
$B query 127.0.0.1:11123 --nts-ke 127.0.0.1:14460 --nts-ca ca.pem | head -3
ramp stratumd-nts 127.0.0.1:11123 --nts-ke 127.0.0.1:14460 --nts-ca ca.pem
sleep 1
ramp stratumd-basic 127.0.0.1:11123
kill $SP; wait $SP
taskset -c 1 chronyd -x -d -u root -f chrony.conf > chronyd.log 2>&1 &
CP=$!
sleep 2
$B query 127.0.0.1:11124 --nts-ke 127.0.0.1:14461 --nts-ca ca.pem | head -3
ramp chronyd-nts 127.0.0.1:11124 --nts-ke 127.0.0.1:14461 --nts-ca ca.pem
sleep 1
ramp chronyd-basic 127.0.0.1:11124
kill $CP; wait $CP
echo "dir $D"
