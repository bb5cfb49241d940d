#!/bin/sh
# Gates the anycast route on stratumd's health: every second runs `stratumctl health`, and keeps
# BIRD's static protocol that originates the service route (`anycast` in bird.conf) enabled while
# it passes, disabled while it fails (stratumd unsynchronised, past [health] max-root-distance,
# stopped, or not answering within 3 s). The protocol state is re-asserted every second, so a
# restarted BIRD (which starts it disabled) is put right within a second; a change is logged.
#
# Environment (all optional):
#   STRATUMCTL       stratumctl binary              (default: stratumctl)
#   STRATUMD_SOCKET  stratumd's control socket      (default: stratumctl's own default)
#   BIRD_SOCKET      BIRD's control socket          (default: birdc's own, /run/bird/bird.ctl)
#   BIRD_PROTOCOL    the static protocol to gate    (default: anycast)
#   INTERVAL         seconds between checks         (default: 1)
# On SIGTERM/SIGINT it withdraws the route before exiting: no gate, no announcement.
set -u

ctl=${STRATUMCTL:-stratumctl}
proto=${BIRD_PROTOCOL:-anycast}
interval=${INTERVAL:-1}

health() {
	if [ -n "${STRATUMD_SOCKET:-}" ]; then
		timeout 3 "$ctl" --socket "$STRATUMD_SOCKET" health
	else
		timeout 3 "$ctl" health
	fi
}

birdc_() {
	if [ -n "${BIRD_SOCKET:-}" ]; then
		birdc -s "$BIRD_SOCKET" "$@"
	else
		birdc "$@"
	fi
}

log() {
	echo "health-gate: $*" >&2
}

withdraw() {
	birdc_ disable "$proto" >/dev/null 2>&1
	log "stopped: $proto disabled"
	exit 0
}
trap withdraw TERM INT

state=unknown
while :; do
	if reason=$(health 2>&1); then want=enable; else want=disable; fi
	if birdc_ "$want" "$proto" >/dev/null 2>&1; then
		if [ "$want" != "$state" ]; then
			log "$want $proto: ${reason:-no answer from stratumd}"
			state=$want
		fi
	elif [ "$state" != "no-bird" ]; then
		log "birdc $want $proto failed (is BIRD running?)"
		state=no-bird
	fi
	sleep "$interval" &
	wait $!
done
