#!/bin/sh
# byod-onboard.sh: play a BYOD endpoint against a PSN's portal (docs/byod.md).
#
# What the product's Native Supplicant Provisioning wizard does on a device,
# with openssl and curl: make an EC P-256 key and a CSR from the template
# (CN = the user name, subjectAltName = the MAC address as the URI
# urn:dev:mac:<12 hex digits>, RFC 9039), post it with the user's
# credentials to https://<psn>:8443/byod/enroll, save the certificate and
# the CA chain, and check the certificate with `openssl verify`.
set -eu

prog=byod-onboard.sh

usage() {
	cat <<EOF
usage: $prog --portal URL --cacert ROOT --user NAME --mac MAC [options]

Enroll this "endpoint" at a PSN's BYOD portal and verify what comes back.

  --portal URL          the portal, e.g. https://psn1:8443 (env BYOD_PORTAL)
  --cacert FILE         the deployment's root CA, to trust the portal and
                        to verify the certificate (env BYOD_CACERT)
  --user NAME           the enrollment user; the certificate's CN (env BYOD_USER)
  --mac MAC             the endpoint's MAC address: aa:bb:cc:dd:ee:ff,
                        aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff
                        (env BYOD_MAC)
  --password-file FILE  the user's password, first line of FILE; else
                        \$BYOD_PASSWORD; else one line on stdin
  --password PW         the password on the command line (other users can
                        see it in ps: prefer the file or the variable)
  --out DIR             where to write device.key (0600, unencrypted: a
                        supplicant needs it), device.csr, device.crt and
                        chain.pem (default: ./byod-NAME-MAC)
  --resolve HOST:PORT:ADDR
                        pass to curl: reach the portal's name at ADDR
  --help                this text

Exit status: 0 enrolled and verified; 1 refused or failed (the portal's
reason is printed); 2 bad command line.
EOF
}

die() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

bad_usage() {
	printf '%s: %s\n' "$prog" "$*" >&2
	printf 'try: %s --help\n' "$prog" >&2
	exit 2
}

portal=${BYOD_PORTAL:-}
cacert=${BYOD_CACERT:-}
user=${BYOD_USER:-}
mac=${BYOD_MAC:-}
password=${BYOD_PASSWORD:-}
have_password=${BYOD_PASSWORD+yes}
password_file=
out=
resolve=

need_arg() {
	[ "$2" -ge 2 ] || bad_usage "$1 needs a value"
}

while [ $# -gt 0 ]; do
	case $1 in
	--portal) need_arg "$1" $#; portal=$2; shift 2 ;;
	--cacert) need_arg "$1" $#; cacert=$2; shift 2 ;;
	--user) need_arg "$1" $#; user=$2; shift 2 ;;
	--mac) need_arg "$1" $#; mac=$2; shift 2 ;;
	--password) need_arg "$1" $#; password=$2; have_password=yes; shift 2 ;;
	--password-file) need_arg "$1" $#; password_file=$2; shift 2 ;;
	--out) need_arg "$1" $#; out=$2; shift 2 ;;
	--resolve) need_arg "$1" $#; resolve=$2; shift 2 ;;
	--help | -h) usage; exit 0 ;;
	*) bad_usage "unknown argument '$1'" ;;
	esac
done

[ -n "$portal" ] || bad_usage "--portal is missing (or BYOD_PORTAL)"
[ -n "$cacert" ] || bad_usage "--cacert is missing (or BYOD_CACERT)"
[ -n "$user" ] || bad_usage "--user is missing (or BYOD_USER)"
[ -n "$mac" ] || bad_usage "--mac is missing (or BYOD_MAC)"
case $portal in
https://*) ;;
*) bad_usage "--portal must be an https:// URL, not '$portal'" ;;
esac
portal=${portal%/}
[ -r "$cacert" ] || die "cannot read the root CA '$cacert'"
for tool in openssl curl; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

# The user name as the PAN accepts it: it goes into a DN and JSON as is.
case $user in
*[!A-Za-z0-9._@-]*) die "user name '$user': letters, digits, '.', '_', '-' and '@' only" ;;
esac

# MAC: the forms the portal takes, to 12 lower-case hex digits.
hex=$(printf '%s' "$mac" | tr 'A-F' 'a-f')
case $hex in
[0-9a-f][0-9a-f][:-][0-9a-f][0-9a-f][:-][0-9a-f][0-9a-f][:-][0-9a-f][0-9a-f][:-][0-9a-f][0-9a-f][:-][0-9a-f][0-9a-f])
	sep=$(printf '%s' "$hex" | cut -c3)
	[ "$(printf '%s' "$hex" | tr -cd "$sep" | wc -c)" -eq 5 ] ||
		die "MAC '$mac' mixes separators"
	hex=$(printf '%s' "$hex" | tr -d ':-') ;;
[0-9a-f][0-9a-f][0-9a-f][0-9a-f].[0-9a-f][0-9a-f][0-9a-f][0-9a-f].[0-9a-f][0-9a-f][0-9a-f][0-9a-f])
	hex=$(printf '%s' "$hex" | tr -d '.') ;;
[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
*) die "'$mac' is not a MAC address (aa:bb:cc:dd:ee:ff)" ;;
esac
colons=$(printf '%s' "$hex" | sed 's/\(..\)/\1:/g; s/:$//')

# The password: file, variable, option, else stdin.
if [ -n "$password_file" ]; then
	[ -r "$password_file" ] || die "cannot read the password file '$password_file'"
	IFS= read -r password <"$password_file" || [ -n "$password" ] ||
		die "the password file '$password_file' is empty"
elif [ "$have_password" != yes ]; then
	if [ -t 0 ]; then
		printf 'password for %s: ' "$user" >&2
		stty -echo 2>/dev/null || true
		IFS= read -r password || true
		stty echo 2>/dev/null || true
		printf '\n' >&2
	else
		IFS= read -r password || [ -n "$password" ] ||
			die "no password (--password-file, BYOD_PASSWORD or stdin)"
	fi
fi
password=$(printf '%s' "$password" | tr -d '\r')
[ -n "$password" ] || die "the password is empty"
# JSON string escaping for what a password may hold; control characters
# have no business in one.
case $password in
*[[:cntrl:]]*) die "the password holds a control character" ;;
esac
json_password=$(printf '%s' "$password" | sed 's/\\/\\\\/g; s/"/\\"/g')

out=${out:-./byod-$user-$hex}
mkdir -p "$out" || die "cannot create '$out'"
umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/byod-onboard.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT INT TERM

key=$out/device.key
csr=$out/device.csr
crt=$out/device.crt
chain=$out/chain.pem

# 1. The key and the CSR, as the supplicant wizard makes them.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$key" -subj "/CN=$user" \
	-addext "subjectAltName=URI:urn:dev:mac:$hex" \
	-out "$csr" 2>"$tmp/openssl.err" ||
	die "openssl could not make the key and CSR: $(cat "$tmp/openssl.err")"
chmod 600 "$key"
csr_b64=$(openssl req -in "$csr" -outform DER | openssl base64 -A) ||
	die "openssl could not encode the CSR"

# 2. Post it.  The body (with the password) is a 0600 file, never argv.
printf '{"username":"%s","password":"%s","mac":"%s","csr":"%s"}' \
	"$user" "$json_password" "$colons" "$csr_b64" >"$tmp/body.json"
set -- --silent --show-error --max-time 60 --proto '=https' --tlsv1.2 \
	--cacert "$cacert" -H 'Content-Type: application/json' \
	--data-binary "@$tmp/body.json" -o "$tmp/answer.json" -w '%{http_code}'
[ -z "$resolve" ] || set -- "$@" --resolve "$resolve"
status=$(curl "$@" "$portal/byod/enroll" 2>"$tmp/curl.err") ||
	die "cannot reach the portal at $portal: $(cat "$tmp/curl.err")"

# A string field of the portal's JSON (json-c escapes only \n, \" and \\
# in what it sends us: PEM and plain-text reasons).
json_field() {
	sed -n "s/.*\"$1\":\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p" "$tmp/answer.json" |
		sed 's/\\n/\n/g; s/\\\//\//g; s/\\"/"/g; s/\\\\/\\/g'
}

if [ "$status" != 200 ]; then
	reason=$(json_field error)
	[ -n "$reason" ] || reason=$(head -c 500 "$tmp/answer.json")
	die "the portal refused the enrollment ($status): $reason"
fi
json_field certificate >"$crt"
json_field chain >"$chain"
grep -q 'BEGIN CERTIFICATE' "$crt" || die "the portal's answer holds no certificate"
grep -q 'BEGIN CERTIFICATE' "$chain" || die "the portal's answer holds no CA chain"

# 3. Check it as a RADIUS server would: our root, clientAuth, strict.
if ! openssl verify -x509_strict -purpose sslclient -CAfile "$cacert" \
	-untrusted "$chain" "$crt" >"$tmp/verify.out" 2>&1; then
	die "the certificate does not verify: $(cat "$tmp/verify.out")"
fi
subject=$(openssl x509 -in "$crt" -noout -subject -nameopt RFC2253)
san=$(openssl x509 -in "$crt" -noout -ext subjectAltName | tail -n +2 | tr -d ' ')
[ "$subject" = "subject=CN=$user" ] || die "unexpected subject: $subject"
[ "$san" = "URI:urn:dev:mac:$hex" ] || die "unexpected subjectAltName: $san"

printf 'enrolled %s (%s): %s\n' "$user" "$colons" "$crt"
printf '  key %s, chain %s\n' "$key" "$chain"
printf '  %s\n' "$(openssl x509 -in "$crt" -noout -serial)"
