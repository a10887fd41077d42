#!/bin/sh
# lab-endpoint: what the compose lab's endpoint container does, one step at
# a time (docs/lab.md).  Run it there:
#
#   docker-compose exec endpoint lab-endpoint onboard PSN [--mac MAC] [--user NAME]
#       BYOD onboarding through https://PSN:8443 (deploy/byod-onboard.sh);
#       prints "dir=DIR" and "serial=HEX"; DIR is also written to
#       /var/lib/iselab-endpoint/last
#   docker-compose exec endpoint lab-endpoint ocsp PSN DIR
#       the certificate in DIR checked with `openssl ocsp` at
#       http://PSN:2560/ocsp; prints "status=good|revoked|unknown"
#   docker-compose exec endpoint lab-endpoint reenroll PSN DIR
#       EST simplereenroll at https://PSN:8084 with the certificate in DIR
#       as TLS client certificate; prints "http=CODE"
#
# The trust anchor is the root CA pan1 publishes in the trust volume; the
# demo user's password is the file pan1 made in the endpoint volume.
set -eu

prog=lab-endpoint
dir=/var/lib/iselab-endpoint
root=/var/lib/iselab-trust/root-ca.crt
user=${LAB_DEMO_USER:-alice}

die() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

usage() {
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

check_psn() {
	case $1 in
	'' | *[!a-z0-9-]*) die "'$1' is not a node name" ;;
	esac
}

check_dir() {
	[ -f "$1/device.crt" ] && [ -f "$1/chain.pem" ] ||
		die "'$1' holds no device.crt and chain.pem (lab-endpoint onboard makes them)"
}

cmd_onboard() {
	psn=${1:-}
	check_psn "$psn"
	shift
	mac=
	while [ $# -gt 0 ]; do
		case $1 in
		--mac) [ $# -ge 2 ] || die "--mac needs a value"; mac=$2; shift 2 ;;
		--user) [ $# -ge 2 ] || die "--user needs a value"; user=$2; shift 2 ;;
		*) die "unknown argument '$1'" ;;
		esac
	done
	[ -r "$root" ] || die "no root CA in $root yet (pan1 publishes it when it starts)"
	pw=$dir/$user.password
	[ -r "$pw" ] || die "no password for $user in $pw (pan1 makes it for LAB_DEMO_USER)"
	# A locally administered unicast MAC (02:...) unless one is given.
	[ -n "$mac" ] || mac=02$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n')
	hex=$(printf '%s' "$mac" | tr -d ':.-' | tr 'A-F' 'a-f')
	out=$dir/certs/$psn-$hex-$(date +%s)
	mkdir -p "$dir/certs"
	byod-onboard.sh --portal "https://$psn:8443" --cacert "$root" --user "$user" \
		--mac "$mac" --password-file "$pw" --out "$out" >&2 ||
		{ rm -rf "$out"; die "onboarding through $psn failed"; }
	serial=$(openssl x509 -in "$out/device.crt" -noout -serial | sed 's/^serial=//')
	printf '%s\n' "$out" >"$dir/last"
	echo "dir=$out"
	echo "serial=$serial"
}

cmd_ocsp() {
	psn=${1:-}
	check_psn "$psn"
	d=${2:-}
	check_dir "$d"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# The issuer is the chain's first certificate (the PSN's Endpoint Sub CA).
	sed -n '1,/-----END CERTIFICATE-----/p' "$d/chain.pem" >"$tmp/issuer.pem"
	if ! openssl ocsp -issuer "$tmp/issuer.pem" -cert "$d/device.crt" \
		-url "http://$psn:2560/ocsp" -CAfile "$root" -verify_other "$d/chain.pem" \
		-timeout 10 >"$tmp/out" 2>"$tmp/err"; then
		cat "$tmp/out" "$tmp/err" >&2
		die "no valid OCSP answer from $psn"
	fi
	cat "$tmp/out" >&2
	grep -q 'Response verify OK' "$tmp/err" "$tmp/out" || {
		cat "$tmp/err" >&2
		die "the OCSP response from $psn does not verify"
	}
	status=$(sed -n 's/^[^:]*device\.crt: *//p' "$tmp/out" | head -n 1)
	[ -n "$status" ] || die "no status for the certificate in the answer"
	echo "status=$status"
}

cmd_reenroll() {
	psn=${1:-}
	check_psn "$psn"
	d=${2:-}
	check_dir "$d"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	subj=$(openssl x509 -in "$d/device.crt" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
	# RFC 7030 4.2.2: the same subject and subjectAltName as the certificate.
	san=$(openssl x509 -in "$d/device.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')
	set -- -new -key "$d/device.key" -subj "/$subj" -outform DER -out "$tmp/csr.der"
	[ -z "$san" ] || set -- "$@" -addext "subjectAltName=$san"
	openssl req "$@" 2>"$tmp/err" ||
		die "openssl req: $(cat "$tmp/err")"
	openssl base64 -in "$tmp/csr.der" -out "$tmp/csr.b64"
	code=$(curl --silent --show-error --max-time 30 --proto '=https' --cacert "$root" \
		--cert "$d/device.crt" --key "$d/device.key" \
		-H 'Content-Type: application/pkcs10' --data-binary "@$tmp/csr.b64" \
		-o "$tmp/body" -w '%{http_code}' \
		"https://$psn:8084/.well-known/est/simplereenroll") || die "cannot reach EST on $psn"
	head -c 300 "$tmp/body" >&2 || true
	echo >&2
	echo "http=$code"
}

cmd=${1:-help}
[ $# -eq 0 ] || shift
case $cmd in
onboard) cmd_onboard "$@" ;;
ocsp) cmd_ocsp "$@" ;;
reenroll) cmd_reenroll "$@" ;;
help | -h | --help) usage ;;
*) usage >&2; exit 2 ;;
esac
