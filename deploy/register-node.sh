#!/usr/bin/env bash
# deploy/register-node.sh: register a node with a running PAN, in one step.
#
#   deploy/register-node.sh --pan-data-dir DIR --role psn|san --hostname HOST
#                           --data-dir NODE_DIR [--passphrase-file FILE]
#                           [--session-services on|off] [--bin DIR] [--start]
#   deploy/register-node.sh --pan-data-dir DIR --remove HOST [--bin DIR]
#
# Creates a one-time token on the PAN (pan node add), joins the node with it
# (psn join / san join) so that the token never lands in a file or a
# process list, and with --start runs the node in the background (its pid
# in NODE_DIR/run.pid, its output in NODE_DIR/log/run.out).  --remove
# revokes a node's certificates and cuts it off (pan node remove).
#
# Works for the local lab, the compose lab and hand-made deployments: the
# PAN must be running and reachable at the address it advertises.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/lab"
pan_dir= role= host= dir= pass= ss=on start=0 remove=

die() { printf 'register-node: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--pan-data-dir) pan_dir=$2; shift ;;
	--role) role=$2; shift ;;
	--hostname) host=$2; shift ;;
	--data-dir) dir=$2; shift ;;
	--passphrase-file) pass=$2; shift ;;
	--session-services) ss=$2; shift ;;
	--bin) bin=$2; shift ;;
	--start) start=1 ;;
	--remove) remove=$2; shift ;;
	-h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

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

# The join string is a secret for its short life: keep it in a variable.
ssargs=()
[ "$role" = psn ] && ssargs=(--session-services "$ss")
ticket=$("$pan" node add "$host" --role "$role" "${ssargs[@]}" \
	--ttl 10m --data-dir "$pan_dir") || die "pan node add $host failed (is the PAN running? deploy/lab status)"
"$node" join --join "$ticket" --hostname "$host" --data-dir "$dir" "${passargs[@]}" \
	|| die "$role join of $host failed; see the message above"
unset ticket

if [ $start -eq 1 ]; then
	mkdir -p "$dir/log"
	setsid "$node" run --data-dir "$dir" "${passargs[@]}" \
		>"$dir/log/run.out" 2>&1 < /dev/null &
	echo "$host: started ($role run, pid $!)"
fi
