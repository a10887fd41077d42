#!/bin/sh
# check-profiles.sh: judge every certificate profile of cert_issue() with
# tools that are not our code.
#
#	check-profiles.sh MKHIERARCHY [DIR]
#
# Runs MKHIERARCHY into a temporary directory (or, with DIR, checks a
# hierarchy already there: DIR/index.txt as mkhierarchy writes it), then for
# each certificate:
#  - openssl verify -x509_strict against the flavour's root, with its
#    intermediates as -untrusted and the TLS purpose where there is one;
#  - zlint with the RFC sources in FAIL_SOURCES: any warn/error/fatal finding
#    not in ACCEPTED fails the test;
#  - zlint with every source: CA/B Forum and other findings are printed, not
#    judged (our CAs are private, not publicly trusted).
# zlint comes from PATH, else $GOBIN, else $(go env GOPATH)/bin.  Without it
# the openssl checks still run and the test then exits 77 (skipped), unless
# CI is set: then a missing zlint fails.
#
# Exit: 0 all good, 1 a check failed, 77 zlint missing outside CI.

set -u

# Lint sources whose warn/error findings fail the test: RFC 5280 and the
# RFCs that profile its key usages and names (RFC6960's one lint is about
# OCSP responses, not certificates; zlint refuses it here).
FAIL_SOURCES="RFC5280,RFC3279,RFC5480,RFC8813,RFC5891"

# Accepted findings from FAIL_SOURCES: one "lint_name reason" per line.
# Keep docs/certificates.md ("Accepted lints") in step with this list.
ACCEPTED='
'

fail=0
failures=""

note_failure() {
	fail=1
	failures="$failures
  $1"
	echo "FAIL: $1"
}

if [ $# -lt 1 ]; then
	echo "usage: $0 MKHIERARCHY [DIR]" >&2
	exit 1
fi
mk=$1

find_zlint() {
	if command -v zlint >/dev/null 2>&1; then
		command -v zlint
		return 0
	fi
	if [ -n "${GOBIN:-}" ] && [ -x "$GOBIN/zlint" ]; then
		echo "$GOBIN/zlint"
		return 0
	fi
	if command -v go >/dev/null 2>&1; then
		gopath=$(go env GOPATH 2>/dev/null)
		if [ -n "$gopath" ] && [ -x "$gopath/bin/zlint" ]; then
			echo "$gopath/bin/zlint"
			return 0
		fi
	fi
	return 1
}

if [ $# -ge 2 ]; then
	dir=$2
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/check-profiles.XXXXXX") || exit 1
	trap 'rm -rf "$dir"' EXIT INT TERM
	if ! "$mk" "$dir"; then
		echo "FAIL: $mk $dir failed"
		exit 1
	fi
fi
if [ ! -s "$dir/index.txt" ]; then
	echo "FAIL: no $dir/index.txt"
	exit 1
fi

zlint=$(find_zlint) || zlint=""
if [ -z "$zlint" ]; then
	echo "zlint not found in PATH, \$GOBIN or \$(go env GOPATH)/bin;" \
	    "running the openssl checks only"
fi

# Names of warn/error/fatal findings in one zlint JSON report.  zlint writes
# {"lint":{"result":"warn","details":...},...}; "result" comes first.
findings() {
	grep -o '"[a-z0-9_]*":{"result":"\(warn\|error\|fatal\)"' |
	    sed 's/^"\([a-z0-9_]*\)":{"result":"\([a-z]*\)"$/\1:\2/'
}

accepted() {
	echo "$ACCEPTED" | grep -q "^$1 "
}

ncert=0
while read -r cert untrusted purpose hierarchy; do
	[ -n "$cert" ] || continue
	ncert=$((ncert + 1))
	flavour=${cert%%/*}
	root="$dir/$flavour/root.pem"
	status="ok"

	# 1. Path validation by OpenSSL's own verifier, strict RFC 5280.
	set -- -x509_strict -CAfile "$root"
	[ "$untrusted" = "-" ] || set -- "$@" -untrusted "$dir/$untrusted"
	[ "$purpose" = "-" ] || set -- "$@" -purpose "$purpose"
	if ! out=$(openssl verify "$@" "$dir/$cert" 2>&1) ||
	    [ "$out" != "$dir/$cert: OK" ]; then
		note_failure "$cert: openssl verify: $(echo "$out" | tr '\n' ' ')"
		status="FAIL"
	fi

	rfc="-"
	other="-"
	if [ -n "$zlint" ]; then
		# 2. RFC lints: anything not accepted fails.
		if ! report=$("$zlint" -includeSources "$FAIL_SOURCES" \
		    "$dir/$cert" 2>&1); then
			# A zlint that cannot run fails once, not per file.
			note_failure "$cert: $zlint failed: $report"
			echo "check-profiles: zlint does not run; stopping"
			exit 1
		fi
		rfc=""
		for f in $(echo "$report" | findings); do
			name=${f%%:*}
			if accepted "$name"; then
				rfc="$rfc $f(accepted)"
			else
				rfc="$rfc $f"
				note_failure "$cert: zlint $f"
				status="FAIL"
			fi
		done
		rfc=${rfc# }
		[ -n "$rfc" ] || rfc="none"

		# 3. Every source, for information only.
		report=$("$zlint" -excludeSources "$FAIL_SOURCES" \
		    "$dir/$cert" 2>&1)
		other=$(echo "$report" | findings | tr '\n' ' ')
		other=${other% }
		[ -n "$other" ] || other="none"
	fi
	printf '%-4s %-32s %-8s rfc: %s\n' "$status" "$cert" "$hierarchy" \
	    "$rfc"
	[ "$other" = "-" ] || printf '     %-32s %-8s info (CA/B etc.): %s\n' \
	    "" "" "$other"
done <"$dir/index.txt"

if [ "$ncert" -eq 0 ]; then
	echo "FAIL: no certificate listed in $dir/index.txt"
	exit 1
fi
if [ "$fail" -ne 0 ]; then
	echo "check-profiles: $ncert certificates, failures:$failures"
	exit 1
fi
if [ -z "$zlint" ]; then
	if [ -n "${CI:-}" ]; then
		echo "FAIL: zlint is required when CI is set; install it with" \
		    "'go install github.com/zmap/zlint/v3/cmd/zlint@latest'"
		exit 1
	fi
	echo "check-profiles: $ncert certificates pass openssl verify;" \
	    "zlint missing: skipped"
	exit 77
fi
echo "check-profiles: $ncert certificates pass openssl verify and the" \
    "$FAIL_SOURCES lints"
exit 0
