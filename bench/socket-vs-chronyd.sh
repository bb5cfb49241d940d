#!/usr/bin/env bash
# Side-by-side rate ramp on loopback: stratumd's socket backend vs chronyd, same generator, same cores.
#
#   bench/socket-vs-chronyd.sh
#
# Phase 1: stratumd (1 worker pinned to core 1) and chronyd (taskset -c 1) both run for the whole
#          phase; the generator (`stratum-bench load`, bench/) is pinned to core 0. For each rate of
#          the ramp, the runs alternate A B A B A B (REPS repetitions). A server's ramp stops after
#          the first step whose median loss is over 5 %.
# Phase 2: stratumd with 2 workers (cores 0,1), generator unpinned (it shares both cores with the
#          server, so this mostly shows where the generator runs out).
# Phase 3: generator ceilings at --rate 0 (as fast as possible).
#
# A step passes when its median loss over the repetitions is < 1 %, every reply of every repetition
# was valid (no invalid ones, T2/T3 outside the send/receive window included, no KoD or
# unsynchronised ones) and the generator's median send rate was >= 98 % of the offered rate. The
# sustainable rate is the highest passing step. (With an even REPS the "median" is the worse middle
# value.)
#
# Traffic goes to 127.0.0.1 only; every run is bounded (STEP_S seconds + 200 ms drain). chronyd runs
# with -x (never touches the clock) on a private port with a private config. Everything this script
# starts is stopped on exit.
#
# Environment: STEP_S (default 3), REPS (default 3), RATES (space-separated), PORT_BASE (default 23120),
# RESULTS_DIR (default bench/results; point it elsewhere for a run that must not replace the results).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEP_S=${STEP_S:-3}
REPS=${REPS:-3}
RATES=${RATES:-"50000 100000 150000 175000 200000 225000 250000 275000 300000 350000 400000 500000"}
PORT_BASE=${PORT_BASE:-23120}
P_STRATUMD=$((PORT_BASE + 1))
P_CHRONYD=$((PORT_BASE + 2))
P_STRATUMD2=$((PORT_BASE + 3))
P_SINK=$((PORT_BASE + 4))
RESULTS=${RESULTS_DIR:-$ROOT/bench/results}
MD=$RESULTS/socket-vs-chronyd-2core.md
JSON=$RESULTS/socket-vs-chronyd-2core.json
GEN=$ROOT/target/release/stratum-bench
STRATUMD=$ROOT/target/release/stratumd
CHRONYD=${CHRONYD:-$(command -v chronyd || echo /usr/sbin/chronyd)}

WORK=$(mktemp -d /tmp/socket-vs-chronyd.XXXXXX)
PIDS=()
# stop PID: SIGTERM, up to 3 s to exit, then SIGKILL; only ever the processes this script started.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 30); do
        [[ $(ps -o stat= -p "$pid" 2>/dev/null | tr -d " ") == [^Z]* ]] || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop "$pid"
    done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%T)] $*" >&2; }

for tool in jq taskset "$CHRONYD"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
for port in $P_STRATUMD $P_CHRONYD $P_STRATUMD2 $P_SINK; do
    if ss -Hlun "sport = :$port" | grep -q .; then
        echo "port $port is in use; set PORT_BASE" >&2
        exit 1
    fi
done

log "building"
mkdir -p "$RESULTS"
(cd "$ROOT" && cargo build --release -p stratumd -p stratum-bench --bin stratumd --bin stratum-bench)
# What was built: the commit, and whether proto/, server/ or bench/ differed from it at build time.
BUILT="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- Cargo.toml Cargo.lock proto server bench/src bench/Cargo.toml ||
    echo ' (+ uncommitted changes)')"

# ---- servers ----
stratumd_config() { # PORT WORKERS CORES
    cat >"$WORK/stratumd-$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$1"]
workers = $2
cores = [$3]

[clock]
source = "local"
stratum = 3
TOML
    echo "$WORK/stratumd-$1.toml"
}

cat >"$WORK/chrony.conf" <<CONF
# Serve the (undisciplined) host clock at stratum 3 on a private loopback port; no command socket.
local stratum 3
allow 127.0.0.1
bindaddress 127.0.0.1
port $P_CHRONYD
cmdport 0
bindcmdaddress /
pidfile $WORK/chronyd.pid
# chronyd's best case: no client log (hence no rate limiting, which also needs a ratelimit
# directive, absent here, and no interleaved mode).
noclientlog
CONF

wait_ready() { # NAME PORT
    local i
    for i in $(seq 1 50); do
        if "$GEN" load --target "127.0.0.1:$2" --rate 2000 --duration 0.1 --sockets 1 --json 2>/dev/null |
            jq -e '.valid > 0' >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$1 did not answer on port $2" >&2
    exit 1
}

CMD_STRATUMD1="$STRATUMD --config \$WORK/stratumd-$P_STRATUMD.toml   # workers = 1, cores = [1]"
CMD_CHRONYD="taskset -c 1 $CHRONYD -x -u root -d -f \$WORK/chrony.conf"
CMD_STRATUMD2="$STRATUMD --config \$WORK/stratumd-$P_STRATUMD2.toml   # workers = 2, cores = [0, 1]"
CMD_GEN="$GEN load --target 127.0.0.1:PORT --rate RATE --duration $STEP_S --sockets 16 --core 0 --json"

: >"$JSON"
# run NAME PORT RATE REP PHASE [generator args...]: one generator run; its JSON line, tagged, goes
# to $JSON and to stdout.
run() {
    local name=$1 port=$2 rate=$3 rep=$4 phase=$5
    shift 5
    local line
    line=$("$GEN" load --target "127.0.0.1:$port" --rate "$rate" --duration "$STEP_S" --sockets 16 --json "$@")
    line=$(jq -c --arg s "$name" --argjson r "$rep" --arg p "$phase" '{server: $s, phase: $p, rep: $r} + .' <<<"$line")
    echo "$line" >>"$JSON"
    echo "$line"
}

# jq definitions: the (upper) median of an array; a step's verdict over its repetitions.
JQ_DEFS='
def median: sort | .[length / 2 | floor];
def step_ok: (map(.loss_pct) | median) < 1
    and all(.invalid == 0 and .kod == 0 and .unsynced == 0)
    and (map(.send_rate) | median) >= 0.98 * .[0].offered_rate;
'

summarize() { # NAME -> one line "rate rep loss valid/s" for the log
    jq -r '"\(.server) rate \(.offered_rate) rep \(.rep): sent \(.send_rate)/s valid \(.achieved_reply_rate)/s loss \(.loss_pct)% invalid \(.invalid) kod \(.kod)"'
}

# ---- phase 1: 1 worker / chronyd, both on core 1, generator on core 0 ----
log "phase 1: stratumd (1 worker, core 1) vs chronyd (core 1), generator on core 0"
"$STRATUMD" --config "$(stratumd_config "$P_STRATUMD" 1 1)" 2>"$WORK/stratumd1.log" &
PIDS+=($!)
taskset -c 1 "$CHRONYD" -x -u root -d -f "$WORK/chrony.conf" 2>"$WORK/chronyd.log" &
PIDS+=($!)
wait_ready stratumd "$P_STRATUMD"
wait_ready chronyd "$P_CHRONYD"

declare -A PORT=([stratumd-1w]=$P_STRATUMD [chronyd]=$P_CHRONYD)
declare -A STOPPED=()
for rate in $RATES; do
    for rep in $(seq 1 "$REPS"); do
        for server in stratumd-1w chronyd; do
            [[ -n ${STOPPED[$server]:-} ]] && continue
            run "$server" "${PORT[$server]}" "$rate" "$rep" ramp --core 0 | summarize >&2
        done
    done
    for server in stratumd-1w chronyd; do
        [[ -n ${STOPPED[$server]:-} ]] && continue
        if jq -se --arg s "$server" --argjson r "$rate" "$JQ_DEFS"'
            map(select(.server == $s and .offered_rate == $r and .phase == "ramp")) | (map(.loss_pct) | median) > 5' \
            "$JSON" >/dev/null; then
            STOPPED[$server]=1
            log "$server: median loss > 5 % at $rate/s, ramp stopped"
        fi
    done
    [[ ${#STOPPED[@]} -eq 2 ]] && break
done

log "phase 3a: generator ceilings (rate 0) on core 0"
run stratumd-1w "$P_STRATUMD" 0 1 ceiling --core 0 | summarize >&2
run chronyd "$P_CHRONYD" 0 1 ceiling --core 0 | summarize >&2
# A sink that never reads: the generator's send-only ceiling (the kernel drops at the full buffer).
timeout 10 python3 -c "import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',$P_SINK)); time.sleep(8)" &
PIDS+=($!)
sleep 0.3
run sink "$P_SINK" 0 1 ceiling --core 0 | summarize >&2

stop_all

# ---- phase 2: stratumd with 2 workers on cores 0,1, generator unpinned ----
log "phase 2: stratumd (2 workers, cores 0,1), generator unpinned"
"$STRATUMD" --config "$(stratumd_config "$P_STRATUMD2" 2 "0, 1")" 2>"$WORK/stratumd2.log" &
PIDS+=($!)
wait_ready stratumd-2w "$P_STRATUMD2"
for rate in $RATES; do
    line=$(run stratumd-2w "$P_STRATUMD2" "$rate" 1 ramp)
    summarize <<<"$line" >&2
    if jq -e '.loss_pct > 5 or .send_rate < 0.98 * .offered_rate' <<<"$line" >/dev/null; then
        log "stratumd-2w: loss > 5 % or generator behind at $rate/s, ramp stopped"
        break
    fi
done
run stratumd-2w "$P_STRATUMD2" 0 1 ceiling | summarize >&2

# ---- report ----
log "writing $MD"
sustainable() { # NAME -> highest passing ramp step, 0 if none
    jq -s --arg s "$1" "$JQ_DEFS"'
        map(select(.server == $s and .phase == "ramp")) | group_by(.offered_rate)
        | map(select(step_ok) | .[0].offered_rate) | max // 0' "$JSON"
}
peak() { # NAME -> highest valid replies/s seen in any run
    jq -s --arg s "$1" 'map(select(.server == $s)) | map(.achieved_reply_rate) | max // 0' "$JSON"
}
S1=$(sustainable stratumd-1w)
SC=$(sustainable chronyd)
S2=$(sustainable stratumd-2w)
P1=$(peak stratumd-1w)
PC=$(peak chronyd)
P2=$(peak stratumd-2w)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

{
    echo "# Socket backend vs chronyd: sustainable reply rate on a 2-core VM"
    echo
    echo "- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- Machine: nproc $(nproc); $(lscpu | grep 'Model name' | sed 's/  */ /g'); kernel $(uname -r)"
    echo "- stratumd: $BUILT at build time, $(rustc --version)"
    echo "- chronyd: $("$CHRONYD" --version | head -1)"
    echo "- Method: open-loop ramp, $STEP_S s per step + 200 ms drain, 16 client sockets, batches of 64;"
    echo "  phase 1 alternates stratumd and chronyd run by run (A B A B ..., $REPS repetitions per step;"
    echo "  phase 2 runs once per step). A step passes when its median loss is < 1 %, every reply was valid"
    echo "  (no invalid, T2/T3 outside the send/receive window included; no KoD or unsynchronised) and the"
    echo "  generator's median send rate was >= 98 % of the offered rate. Sustainable rate = highest passing step."
    echo
    echo "## Commands"
    echo
    echo '```'
    echo "bench/socket-vs-chronyd.sh   # STEP_S=$STEP_S REPS=$REPS RATES=\"$RATES\""
    echo "# servers"
    echo "$CMD_STRATUMD1"
    echo "$CMD_CHRONYD"
    echo "$CMD_STRATUMD2"
    echo "# generator, per step (phase 2 without --core; ceilings with --rate 0)"
    echo "$CMD_GEN"
    echo '```'
    echo
    echo "stratumd config (phase 1; phase 2 has workers = 2, cores = [0, 1]):"
    echo
    echo '```toml'
    sed '/^$/d' "$WORK/stratumd-$P_STRATUMD.toml"
    echo '```'
    echo
    echo "chrony.conf:"
    echo
    echo '```'
    grep -v '^#' "$WORK/chrony.conf" | sed "s|$WORK|\$WORK|"
    echo '```'
    echo
    echo "## Result"
    echo
    echo "| server | cores (server / generator) | sustainable rate (/s) | peak valid replies (/s) |"
    echo "|---|---|---:|---:|"
    echo "| stratumd, 1 worker | 1 / 0 | $S1 | $P1 |"
    echo "| chronyd | 1 / 0 | $SC | $PC |"
    echo "| stratumd, 2 workers | 0,1 / unpinned (shared) | $S2 | $P2 |"
    echo
    echo "- Ratio stratumd (1 worker) / chronyd, sustainable rate: **$(ratio "$S1" "$SC")**"
    echo "- Ratio stratumd (1 worker) / chronyd, peak valid reply rate: $(ratio "$P1" "$PC")"
    echo
    echo "## Steps (medians over repetitions)"
    echo
    echo "| phase | server | offered (/s) | reps | sent (/s) | valid (/s) | loss % (median / max) | invalid + KoD + unsync | server socket drops | RTT p50 / p99 (µs) | pass |"
    echo "|---|---|---:|---:|---:|---:|---|---:|---:|---|---|"
    jq -rs "$JQ_DEFS"'
        map(select(.phase == "ramp")) | group_by([.phase, .server, .offered_rate]) | sort_by(.[0].server | startswith("stratumd-2w"))
        | .[] | . as $g
        | "| \(.[0].phase) | \(.[0].server) | \(.[0].offered_rate) | \(length) | \(map(.send_rate) | median)"
          + " | \(map(.achieved_reply_rate) | median) | \(map(.loss_pct) | median) / \(map(.loss_pct) | max)"
          + " | \(map(.invalid + .kod + .unsynced) | add) | \(map(.server_socket_drops) | median)"
          + " | \(map(.rtt_p50_us) | median) / \(map(.rtt_p99_us) | median)"
          + " | \(if $g | step_ok then "yes" elif (map(.send_rate) | median) < 0.98 * .[0].offered_rate then "no (generator behind)" else "no" end) |"' "$JSON"
    echo
    echo "## All runs (in the order run)"
    echo
    echo "| phase | server | rep | offered (/s) | sent (/s) | valid (/s) | loss % | invalid | KoD | unsync | server socket drops | RTT p50 / p99 (µs) | run ok |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    jq -r '
        (if .phase == "ceiling" then "-"
         elif .loss_pct < 1 and .invalid == 0 and .kod == 0 and .unsynced == 0 and .send_rate >= 0.98 * .offered_rate then "yes"
         elif .send_rate < 0.98 * .offered_rate then "no (generator behind)"
         else "no" end) as $pass
        | "| \(.phase) | \(.server) | \(.rep) | \(if .phase == "ceiling" then "max" else .offered_rate end) | \(.send_rate) | \(.achieved_reply_rate) | \(.loss_pct) | \(.invalid) | \(.kod) | \(.unsynced) | \(.server_socket_drops) | \(.rtt_p50_us) / \(.rtt_p99_us) | \($pass) |"' "$JSON"
    echo
    echo "Raw JSON lines: \`$(basename "$JSON")\` beside this file. \"ceiling\" rows are --rate 0 runs;"
    echo "the \"sink\" is a loopback socket that is never read, so its row is the generator's send-only ceiling."
} >"$MD"

log "sustainable: stratumd-1w $S1/s, chronyd $SC/s, ratio $(ratio "$S1" "$SC"); stratumd-2w $S2/s"
