#!/usr/bin/env bash
# Soak and flood (issue #13; not run by CI): a server under DURATION seconds of load from a sweep
# of spoofed sources over a /8 (the AF_XDP generator, RATE requests/s, most sources new: the
# first-contact path), while one victim address is flooded with spoofed requests and the real
# victim asks once a second from it. Every second: the server's RSS, open descriptors and
# counters. Pass: no RSS or descriptor growth after the warm-up, the victim still answered at
# 1/2^leak of its requests (less three standard deviations), and (stratumd) every request
# counted once.
#
#   sudo bench/soak.sh [--server stratumd|chronyd] [--duration 600] [--rate 50000] [--flood 2000]
#
# Root; builds nothing: BIN (stratum-bench with the xdp feature) and STRATUMD (release builds)
# must exist. Traffic stays inside two network namespaces this script makes and removes.
set -euo pipefail
SERVER=stratumd DURATION=600 RATE=50000 FLOOD=2000 WARMUP=60
while [ $# -gt 0 ]; do
  case $1 in
    --server) SERVER=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --flood) FLOOD=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
done
BIN=$(realpath "${BIN:-target/release/stratum-bench}")
STRATUMD=$(realpath "${STRATUMD:-target/release/stratumd}")
OUT=${OUT:-/tmp/soak-$SERVER}
mkdir -p "$OUT"
. "$(dirname "$0")/results/lib/netns.sh"
G=soakg S=soaks GI=soakg0 SI=soaks0 GA=10.97.0.1 SA=10.97.0.2 VICTIM=10.97.0.3
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  veth_teardown $G $S
}
trap cleanup EXIT
veth_pair $G $S $GI $SI $GA $SA 10.0.0.0/8
ip -n $G addr add $VICTIM/24 dev $GI
ip -n $S route add $VICTIM/32 dev $SI 2>/dev/null || true

case $SERVER in
  stratumd)
    cat > "$OUT/server.toml" <<EOF
[server]
listen = ["$SA:123"]
workers = 1
cores = [1]

[clock]
source = "local"
stratum = 2

[ratelimit]
interval = 3
burst = 8
leak = 2

[control]
socket = "$OUT/control.sock"
EOF
    ip netns exec $S "$STRATUMD" --config "$OUT/server.toml" 2>"$OUT/server.log" &
    ;;
  chronyd)
    # chronyd wants its command socket's directory private.
    mkdir -p "$OUT/cmd" && chmod 700 "$OUT/cmd"
    cat > "$OUT/chrony.conf" <<EOF
port 123
bindaddress $SA
local stratum 2
allow all
ratelimit interval 3 burst 8 leak 2
clientloglimit 1048576
cmdport 0
bindcmdaddress $OUT/cmd/chronyd.sock
pidfile $OUT/chronyd.pid
driftfile $OUT/chrony.drift
EOF
    ip netns exec $S chronyd -d -x -u root -f "$OUT/chrony.conf" 2>"$OUT/server.log" &
    ;;
  *) echo "--server stratumd or chronyd" >&2; exit 1 ;;
esac
pids+=($!)
sleep 2
server_pid=$(pgrep -n -f "$( [ "$SERVER" = stratumd ] && echo "$OUT/server.toml" || echo "$OUT/chrony.conf")")

# The real victim: one request a second from $VICTIM, counting answers.
cat > "$OUT/victim.py" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0)); s.settimeout(0.5)
end = time.time() + float(sys.argv[3]); sent = answered = 0
while time.time() < end:
    s.sendto(bytes([0x23] + [0] * 39) + time.time_ns().to_bytes(8, "big"), (sys.argv[2], 123)); sent += 1
    try:
        while True:
            s.recvfrom(512); answered += 1; break
    except socket.timeout:
        pass
    time.sleep(0.5)
print(f"{sent} {answered}")
EOF
# The flood spoofing the victim's address (raw IP, another source port than the victim's).
cat > "$OUT/flood.py" <<'EOF'
import socket, struct, sys, time
src, dst, rate, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = bytes([0x23] + [0] * 47)
udp = struct.pack("!HHHH", 40999, 123, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
end = time.time() + secs; step = 1.0 / max(rate, 1); n = 0
while time.time() < end:
    s.sendto(ip + udp, (dst, 0)); n += 1
    time.sleep(step)
print(n)
EOF
ip netns exec $G python3 "$OUT/victim.py" $VICTIM $SA "$DURATION" > "$OUT/victim.txt" &
pids+=($!)
ip netns exec $G python3 "$OUT/flood.py" $VICTIM $SA "$FLOOD" "$DURATION" > "$OUT/flood.txt" &
pids+=($!)
# The spoofed-source sweep, in 60 s loads back to back.
(
  left=$DURATION
  while [ "$left" -gt 0 ]; do
    d=$(( left < 60 ? left : 60 ))
    ip netns exec $G "$BIN" load --engine xdp --interface $GI --target $SA:123 --i-own-this-target \
      --rate "$RATE" --duration "$d" --clients 16777214 --client-net 10.0.0.0/8 --cores 0 \
      --accept-ratelimit --accept-kod --json >> "$OUT/load.jsonl" 2>>"$OUT/load.log" || true
    left=$(( left - d ))
  done
) &
pids+=($!)

# Every second: t, RSS (kB), descriptors, and the server's own counters.
echo "t,rss_kb,fds,counters" > "$OUT/samples.csv"
for t in $(seq 1 "$DURATION"); do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$server_pid/status 2>/dev/null || echo 0)
  fds=$(ls /proc/$server_pid/fd 2>/dev/null | wc -l)
  if [ "$SERVER" = stratumd ]; then
    c=$(target/release/stratumctl --socket "$OUT/control.sock" status --json 2>/dev/null \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(r["received"], r["answered"], sum(r["kod"].values()), sum(r["dropped"].values()))' || echo "- - - -")
  else
    c=$(chronyc -h "$OUT/cmd/chronyd.sock" -c serverstats 2>/dev/null | cut -d, -f1-3 | tr , ' ' || echo "- - -")
  fi
  echo "$t,$rss,$fds,$c" >> "$OUT/samples.csv"
  sleep 1
done
wait "${pids[1]}" "${pids[2]}" "${pids[3]}" 2>/dev/null || true
sleep 2
# The counters once everything has stopped: every request in exactly one outcome.
if [ "$SERVER" = stratumd ]; then
  final=$(target/release/stratumctl --socket "$OUT/control.sock" status --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(r["received"], r["answered"], sum(r["kod"].values()), sum(r["dropped"].values()))')
  echo "final,0,0,$final" >> "$OUT/samples.csv"
fi

python3 - "$OUT" "$SERVER" "$WARMUP" <<'EOF'
import sys
out, server, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l.strip().split(",") for l in open(f"{out}/samples.csv")][1:]
final = [r for r in lines if r[0] == "final"]
rows = [r for r in lines if r[0] != "final" and r[1] not in ("", "0")]
after = [r for r in rows if int(r[0]) >= warmup] or rows
rss0, rss1 = int(after[0][1]), int(after[-1][1])
fd0, fd1 = int(after[0][2]), int(after[-1][2])
sent, answered = map(int, open(f"{out}/victim.txt").read().split())
frac = answered / max(sent, 1)
print(f"server {server}: RSS {rss0} -> {rss1} kB after the warm-up, descriptors {fd0} -> {fd1}")
# The leak answers each limited request with probability 1/2^leak: allow three standard
# deviations of a binomial below it.
p = 0.25
floor = p - 3 * (p * (1 - p) / max(sent, 1)) ** 0.5
print(f"victim: {answered} of {sent} answered ({100*frac:.1f} %; 1/2^leak = 25 %, at least {100*floor:.1f} % wanted)")
ok = rss1 <= rss0 * 1.05 + 1024 and fd1 <= fd0 and frac >= floor
last = (final[-1] if final else after[-1])[3].split()
if server == "stratumd" and "-" not in last:
    received, answered_all, kod, dropped = map(int, last)
    counted = answered_all + kod + dropped
    print(f"counters: received {received} = answered {answered_all} + kod {kod} + dropped {dropped} ({counted})")
    ok = ok and received == counted
print("PASS" if ok else "FAIL")
EOF
