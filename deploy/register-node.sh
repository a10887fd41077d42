#!/usr/bin/env bash
# deploy/register-node.sh: register a node with a running PAN, in one step.
#
# Processes (the local lab, hand-made deployments):
#   deploy/register-node.sh --pan-data-dir DIR --role psn|san --hostname HOST
#                           --data-dir NODE_DIR [--passphrase-file FILE]
#                           [--session-services on|off] [--ca-key TYPE]
#                           [--bin DIR] [--start [--set KEY=VALUE]...]
#   deploy/register-node.sh --pan-data-dir DIR --remove HOST [--bin DIR]
#
# Creates a one-time token on the PAN (pan node add), joins the node with it
# (psn join / san join) so that the token never lands in a file, and with
# --start runs the node in the background (its pid in NODE_DIR/run.pid, its
# output in NODE_DIR/log/run.out; --set passes settings to `run`, e.g.
# --set est.listen=127.0.0.23:8084).  --remove revokes a node's
# certificates and cuts it off (pan node remove).
#
# The compose lab (deploy/docker-compose.yml; docs/lab.md):
#   deploy/register-node.sh --compose [--project NAME] --role psn|san --hostname HOST
#                           [--session-services on|off]
#   deploy/register-node.sh --compose [--project NAME] --remove HOST
#
# Creates the token inside pan1 and leaves the join string in the lab's
# join volume as HOST.join; the node's container joins with it when it
# starts (or at once, if it is already waiting).  The join string never
# leaves the containers.
#
# The PAN must be running and reachable at the address it advertises.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/lab"
pan_dir= role= host= dir= pass= ss=on start=0 remove= compose=0 project= ca_key=
sets=()

die() { printf 'register-node: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	[ "$1" = --start ] || [ "$1" = --compose ] || [ "$1" = -h ] || [ "$1" = --help ] ||
		[ $# -ge 2 ] || die "$1 needs a value"
	case "$1" in
	--pan-data-dir) pan_dir=$2; shift ;;
	--role) role=$2; shift ;;
	--hostname) host=$2; shift ;;
	--data-dir) dir=$2; shift ;;
	--passphrase-file) pass=$2; shift ;;
	--session-services) ss=$2; shift ;;
	--ca-key) ca_key=$2; shift ;;
	--bin) bin=$2; shift ;;
	--set) sets+=(--set "$2"); shift ;;
	--start) start=1 ;;
	--remove) remove=$2; shift ;;
	--compose) compose=1 ;;
	--project) project=$2; shift ;;
	-h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

case "$ss" in on|off) ;; *) die "--session-services on or off, not '$ss'" ;; esac
valid_host() {
	case "$1" in ''|*[!a-z0-9-]*|-*) return 1 ;; esac
}

if [ $compose -eq 1 ]; then
	if [ -n "${ISE_LAB_COMPOSE:-}" ]; then
		read -r -a dc <<< "$ISE_LAB_COMPOSE"
	elif command -v docker-compose >/dev/null; then
		dc=(docker-compose)
	else
		dc=(docker compose)
	fi
	dc+=(-f "$top/deploy/docker-compose.yml")
	[ -z "$project" ] || dc+=(-p "$project")
	if [ -n "$remove" ]; then
		valid_host "$remove" || die "'$remove' is not a host name (lower-case letters, digits, '-')"
		exec "${dc[@]}" exec -T pan1 pan node remove "$remove" --data-dir /var/lib/iselab/node
	fi
	case "$role" in psn|san) ;; *) die "--role psn or san is required" ;; esac
	[ -n "$host" ] || die "--hostname is required"
	valid_host "$host" || die "--hostname '$host' is not a host name (lower-case letters, digits and '-')"
	# Inside pan1: the join string goes from pan's stdout to the join
	# volume (0600, the containers' user), never through this shell.
	"${dc[@]}" exec -T pan1 sh -c '
		umask 077
		f=/var/lib/iselab-join/$1.join
		pan node add "$1" --role "$2" ${3:+--session-services "$3"} --ttl 10m \
			--data-dir /var/lib/iselab/node >"$f.tmp" && mv "$f.tmp" "$f" ||
			{ rm -f "$f.tmp"; exit 1; }' sh "$host" "$role" "$([ "$role" = psn ] && echo "$ss")" ||
		die "pan node add $host failed in pan1 (is the compose lab up? docker-compose -f deploy/docker-compose.yml ps)"
	echo "$host: join string in the join volume; the $host container joins with it when it starts"
	exit 0
fi

[ -n "$pan_dir" ] || die "--pan-data-dir is required"
pan="$bin/pan/pan"
[ -x "$pan" ] || die "no pan executable in $bin (build first: deploy/lab up, or --bin DIR)"

if [ -n "$remove" ]; then
	exec "$pan" node remove "$remove" --data-dir "$pan_dir"
fi

case "$role" in psn|san) ;; *) die "--role psn or san is required" ;; esac
[ -n "$host" ] || die "--hostname is required"
[ -n "$dir" ] || die "--data-dir is required"
node="$bin/$role/$role"
passargs=()
[ -n "$pass" ] && passargs=(--passphrase-file "$pass")
keyargs=()
[ -n "$ca_key" ] && keyargs=(--ca-key "$ca_key")

# The join string is a secret for its short life: keep it in a variable.
ssargs=()
[ "$role" = psn ] && ssargs=(--session-services "$ss")
ticket=$("$pan" node add "$host" --role "$role" "${ssargs[@]}" \
	--ttl 10m --data-dir "$pan_dir") || die "pan node add $host failed (is the PAN running? deploy/lab status)"
"$node" join --join "$ticket" --hostname "$host" --data-dir "$dir" "${passargs[@]}" "${keyargs[@]}" \
	|| die "$role join of $host failed; see the message above"
unset ticket

if [ $start -eq 1 ]; then
	mkdir -p "$dir/log"
	setsid "$node" run --data-dir "$dir" "${passargs[@]}" "${sets[@]}" \
		>"$dir/log/run.out" 2>&1 < /dev/null &
	echo "$host: started ($role run, pid $!)"
fi
