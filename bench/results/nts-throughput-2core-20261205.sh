#!/bin/bash
# NTS throughput: stratumd (socket, 1 worker, [nts]) vs chronyd 4.3 (NTS server, -x), loopback.
# Servers pinned to core 1, the generator to core 0. Run from the repository root after
# `cargo build --workspace --all-features --release -p stratum-bench -p stratumd`:
#   REFINE=3 bench/results/nts-throughput-2core-20261205.sh
# Writes {stratumd,chronyd}-{nts,basic}.json (ramp reports) into a fresh directory under /tmp.
set -u
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
