#!/bin/sh
# iselab-entrypoint: start one node of the compose lab (deploy/docker-compose.yml).
#
#   iselab-entrypoint pan | psn | san | endpoint
#
# pan       first start: `pan init` (the deployment, in the pan1 volume);
#           every start: publish the root CA into the trust volume, start a
#           registrar in the background, then exec `pan run`.  The
#           registrar makes a one-time join string (`pan node add`) for each
#           node of LAB_NODES ("name:role ...") that is not registered yet
#           and writes it to the join volume as NAME.join (mode 0600), and
#           creates the demo enrollment user LAB_DEMO_USER.
# psn, san  first start: wait for NAME.join, `psn join` / `san join` with it
#           (retrying with backoff, the reason logged), delete it; every
#           start: exec `psn run` / `san run`.  A node with data never joins
#           again: restarts and `down`/`up` keep the deployment.
# endpoint  onboard through the BYOD portal of LAB_PORTAL (lab-endpoint
#           onboard), check the certificate over OCSP, then stay up for
#           `docker-compose exec endpoint lab-endpoint ...`.
#
# Nothing secret is in the compose file or the environment: the node
# passphrase comes from the secret file /run/secrets/iselab-passphrase when
# one is mounted, else it is made once into the node's volume (outside the
# data directory), and join strings live only in the join volume, which only
# the lab's own containers mount (docs/lab.md, "Trust").
#
# Settings (environment): LAB_NODES, LAB_DEMO_USER, LAB_PORTAL, LAB_CA_KEY
# (key type of every key, default rsa:4096), LAB_HEARTBEAT_INTERVAL (5s),
# LAB_HEARTBEAT_TIMEOUT (15s).  Not ISELAB_*: those are the daemons' own
# settings, and they refuse names they do not know.
set -eu

role=${1:-}
host=$(hostname)
vol=/var/lib/iselab
data=$vol/node
join_dir=/var/lib/iselab-join
trust_dir=/var/lib/iselab-trust
endpoint_dir=/var/lib/iselab-endpoint
ca_key=${LAB_CA_KEY:-rsa:4096}
hb_interval=${LAB_HEARTBEAT_INTERVAL:-5s}
hb_timeout=${LAB_HEARTBEAT_TIMEOUT:-15s}
# A join string lives 10 minutes on the PAN; the registrar replaces one
# that waited this long unused (seconds).
join_ttl=10m
join_stale=480
# Longest pause between two join attempts (seconds).
backoff_max=60

log() {
	printf '%s %s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$host" "$*" >&2
}

die() {
	log "$*"
	exit 1
}

# The node passphrase file: a mounted secret, else one made once in the
# volume (the lab's trade-off: whoever can read the volume has both the
# encrypted keys and the passphrase; mount a secret to keep them apart).
passphrase_file() {
	if [ -r /run/secrets/iselab-passphrase ]; then
		echo /run/secrets/iselab-passphrase
		return
	fi
	f=$vol/passphrase
	if [ ! -s "$f" ]; then
		(umask 077 && head -c 24 /dev/urandom | base64 >"$f.tmp" && mv "$f.tmp" "$f") ||
			die "cannot write the passphrase file $f (is the volume writable by uid $(id -u)?)"
		log "made a passphrase for this node in $f (mount /run/secrets/iselab-passphrase to choose one)"
	fi
	echo "$f"
}

# Seconds since FILE was last written.
age() {
	echo $(($(date +%s) - $(stat -c %Y "$1")))
}

# Is NAME in `pan node list` (any state: registered, connected,
# disconnected, or removed by an administrator, who then decides)?
registered() {
	printf '%s\n' "$2" | awk -v n="$1" 'NR > 1 && $1 == n { f = 1 } END { exit !f }'
}

valid_name() {
	case $1 in
	'' | *[!a-z0-9-]* | -*) return 1 ;;
	esac
	return 0
}

demo_user() {
	user=${LAB_DEMO_USER:-}
	[ -n "$user" ] || return 0
	case $user in
	*[!A-Za-z0-9._@-]*) log "LAB_DEMO_USER '$user': letters, digits, '.', '_', '-' and '@' only; not created"; return 0 ;;
	esac
	if pan user list --data-dir "$data" 2>/dev/null | awk -v u="$user" '$1 == u { f = 1 } END { exit !f }'; then
		return 0
	fi
	pw=$endpoint_dir/$user.password
	if [ ! -s "$pw" ]; then
		(umask 077 && head -c 18 /dev/urandom | base64 >"$pw.tmp" && mv "$pw.tmp" "$pw") ||
			{ log "cannot write $pw; demo user not created"; return 0; }
	fi
	if pan user add "$user" --data-dir "$data" <"$pw" >/dev/null; then
		log "enrollment user $user created; its password is in the endpoint volume ($pw)"
	else
		log "pan user add $user failed; see above"
	fi
}

# Make join strings until every node of LAB_NODES is registered, then
# leave.  Runs beside `pan run`, reparented to the container's init.
registrar() {
	n=0
	until pan node list --data-dir "$data" >/dev/null 2>&1; do
		n=$((n + 1))
		[ $n -lt 300 ] || { log "registrar: pan run does not answer after 5 minutes; giving up"; return 1; }
		sleep 1
	done
	demo_user
	while :; do
		if ! list=$(pan node list --data-dir "$data" 2>&1); then
			log "registrar: pan node list failed: $list"
			sleep 5
			continue
		fi
		pending=0
		for entry in ${LAB_NODES:-}; do
			name=${entry%%:*}
			nrole=${entry#*:}
			if ! valid_name "$name" || { [ "$nrole" != psn ] && [ "$nrole" != san ]; }; then
				log "registrar: LAB_NODES entry '$entry' is not NAME:psn or NAME:san; skipped"
				continue
			fi
			f=$join_dir/$name.join
			if registered "$name" "$list"; then
				rm -f "$f"
				continue
			fi
			pending=1
			if [ -s "$f" ] && [ "$(age "$f")" -lt $join_stale ]; then
				continue
			fi
			# The join string goes from pan's stdout to the file, never
			# through argv or the log.
			if (umask 077 && pan node add "$name" --role "$nrole" --ttl $join_ttl \
				--data-dir "$data" >"$f.tmp" 2>/dev/null) && mv "$f.tmp" "$f"; then
				log "registrar: join string for $name ($nrole) is in the join volume"
			else
				rm -f "$f.tmp"
				log "registrar: pan node add $name failed; retrying"
			fi
		done
		[ $pending -eq 1 ] || break
		sleep 2
	done
	log "registrar: every node of LAB_NODES is registered"
}

run_args="--set heartbeat.interval=$hb_interval --set heartbeat.timeout=$hb_timeout"

start_pan() {
	pass=$(passphrase_file)
	if [ ! -f "$data/node.conf" ]; then
		force=
		# A directory without node.conf is an init that did not finish.
		[ ! -e "$data" ] || force=--force
		log "first start: creating the deployment (pan init, $ca_key keys)"
		pan init --hostname "$host" --data-dir "$data" --passphrase-file "$pass" \
			--ca-key "$ca_key" $force || die "pan init failed; see above"
	fi
	# The trust anchor for endpoints (public).
	cp "$data/ca/root-ca.crt" "$trust_dir/root-ca.crt.tmp" &&
		mv "$trust_dir/root-ca.crt.tmp" "$trust_dir/root-ca.crt" ||
		die "cannot publish the root CA into $trust_dir"
	# In a subshell that exits at once: the registrar is reparented to the
	# container's init (compose: init: true), not to pan run.
	(registrar </dev/null &)
	# messaging.advertise: the name the other containers reach us by.
	# shellcheck disable=SC2086
	exec pan run --data-dir "$data" --passphrase-file "$pass" \
		--listen 0.0.0.0:8671 --events-listen 0.0.0.0:8672 \
		--set "messaging.advertise=$host:8671" $run_args
}

start_member() { # psn | san
	pass=$(passphrase_file)
	if [ ! -f "$data/node.conf" ]; then
		f=$join_dir/$host.join
		delay=2
		waited=0
		while :; do
			if [ ! -s "$f" ]; then
				[ $((waited % 30)) -ne 0 ] || log "waiting for a join string from pan1 ($f)"
				waited=$((waited + 1))
				sleep 1
				continue
			fi
			log "joining the deployment as $host ($role)"
			# The join string is in argv for the moment of the join: the
			# daemons take it no other way.  It works once.
			if out=$($role join --join "$(cat "$f")" --hostname "$host" --data-dir "$data" \
				--passphrase-file "$pass" --ca-key "$ca_key" --timeout 30s 2>&1); then
				printf '%s\n' "$out" >&2
				rm -f "$f"
				break
			fi
			printf '%s\n' "$out" >&2
			log "join failed ($(printf '%s\n' "$out" | tail -n 1)); next try in ${delay}s"
			case $out in
			# The PAN said no (token used, expired, unknown): this join
			# string is spent; the registrar makes a new one.
			*refused*) rm -f "$f" ;;
			esac
			sleep $delay
			delay=$((delay * 2))
			[ $delay -le $backoff_max ] || delay=$backoff_max
		done
	else
		log "$host is registered (data in $data): starting"
	fi
	# shellcheck disable=SC2086
	exec $role run --data-dir "$data" --passphrase-file "$pass" $run_args
}

start_endpoint() {
	portal=${LAB_PORTAL:-psn1}
	trap 'exit 0' TERM INT
	log "onboarding through $portal's BYOD portal (lab-endpoint onboard $portal)"
	delay=2
	until lab-endpoint onboard "$portal"; do
		log "onboarding failed; next try in ${delay}s"
		sleep $delay &
		wait $! || true
		delay=$((delay * 2))
		[ $delay -le $backoff_max ] || delay=$backoff_max
	done
	lab-endpoint ocsp "$portal" "$(cat "$endpoint_dir/last")" ||
		log "the OCSP check at $portal failed"
	log "idle; try: docker-compose exec endpoint lab-endpoint help"
	while :; do
		sleep 3600 &
		wait $! || true
	done
}

case $role in
pan) start_pan ;;
psn | san) start_member ;;
endpoint) start_endpoint ;;
*)
	# Anything else runs as a command (docker-compose run pan1 pan status).
	[ $# -gt 0 ] || die "usage: iselab-entrypoint pan|psn|san|endpoint, or a command"
	exec "$@"
	;;
esac
