/*
 * revoke: `pan cert revoke|hold|release` (docs/events.md, docs/pan.md).
 *
 * The PAN decides: it finds the certificates (by serial, or by subject,
 * optionally of one node), checks each transition the way the store does
 * (RFC 5280 5.3.1: only certificateHold is reversible; the first
 * revocation stands), and commits one event per certificate.  The event's
 * effect sets the status in the PAN's own store in the same transaction,
 * and every node that holds the certificate sets it when the event
 * reaches it: a PSN that was down catches up from the log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events.h"
#include "log.h"
#include "pan.h"
#include "store.h"
#include "util.h"

#define REVOKE_USAGE                                                           \
	"usage: pan cert revoke SERIAL|--subject DN [--node HOST] "            \
	"[--reason REASON] --data-dir DIR\n"                                   \
	"       pan cert hold|release SERIAL|--subject DN [--node HOST] "      \
	"--data-dir DIR\n"                                                     \
	"REASON: unspecified, keyCompromise, cACompromise, affiliationChanged,\n" \
	"        superseded, cessationOfOperation (default), privilegeWithdrawn, " \
	"aACompromise\n"

/* The reasons `revoke` takes: the revocable CRLReason names. */
static int
reason_parse(const char *s)
{
	static const int revocable[] = {
	    STORE_REASON_UNSPECIFIED,
	    STORE_REASON_KEY_COMPROMISE,
	    STORE_REASON_CA_COMPROMISE,
	    STORE_REASON_AFFILIATION_CHANGED,
	    STORE_REASON_SUPERSEDED,
	    STORE_REASON_CESSATION_OF_OPERATION,
	    STORE_REASON_PRIVILEGE_WITHDRAWN,
	    STORE_REASON_AA_COMPROMISE,
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(revocable); i++)
		if (strcasecmp(s, store_reason_name(revocable[i])) == 0)
			return revocable[i];
	return -1;
}

/*
 * Whether c may go to `to`: 1 yes, 0 already there (nothing to do), -1
 * refused with why set.
 */
static int
transition_ok(const struct store_cert *c, enum store_cert_status to,
              char *why, size_t len)
{
	switch (to) {
	case STORE_STATUS_REVOKED:
		if (c->status == STORE_STATUS_REVOKED)
			return 0;
		return 1;
	case STORE_STATUS_HOLD:
		if (c->status == STORE_STATUS_HOLD)
			return 0;
		if (c->status == STORE_STATUS_REVOKED) {
			snprintf(why, len, "it is revoked; a revoked "
			                   "certificate cannot be put on hold");
			return -1;
		}
		return 1;
	case STORE_STATUS_GOOD:
		if (c->status == STORE_STATUS_GOOD)
			return 0;
		if (c->status != STORE_STATUS_HOLD) {
			snprintf(why, len, "it is revoked (%s); only a "
			                   "certificate on hold can be released",
			         store_reason_name(c->reason));
			return -1;
		}
		return 1;
	default:
		snprintf(why, len, "no such status");
		return -1;
	}
}

int
revoke_cert(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	const char *verb = argv[1], *serial_s = NULL, *subject = NULL;
	const char *node = NULL, *reason_s = NULL;
	struct store_cert_list l = {0};
	struct error err = {{0}};
	enum store_cert_status to;
	uint8_t serial[STORE_SERIAL_MAX];
	char hex[2 * STORE_SERIAL_MAX + 1], why[256];
	size_t slen = 0, i, matched = 0, changed = 0, failed = 0;
	int64_t now = time(NULL);
	int reason, a, rc = PAN_EXIT_FAIL;

	if (strcmp(verb, "revoke") == 0) {
		to = STORE_STATUS_REVOKED;
		reason = STORE_REASON_CESSATION_OF_OPERATION;
	} else if (strcmp(verb, "hold") == 0) {
		to = STORE_STATUS_HOLD;
		reason = STORE_REASON_CERTIFICATE_HOLD;
	} else {
		to = STORE_STATUS_GOOD;
		reason = STORE_REASON_UNSPECIFIED;
	}
	for (a = 2; a < argc; a++) {
		const char **dst = NULL;

		if (strcmp(argv[a], "--subject") == 0)
			dst = &subject;
		else if (strcmp(argv[a], "--node") == 0)
			dst = &node;
		else if (strcmp(argv[a], "--reason") == 0 &&
		         to == STORE_STATUS_REVOKED)
			dst = &reason_s;
		else if (argv[a][0] == '-') {
			fprintf(errf, "pan cert %s: unknown option '%s'\n%s",
			        verb, argv[a], REVOKE_USAGE);
			return PAN_EXIT_USAGE;
		} else if (serial_s == NULL) {
			serial_s = argv[a];
			continue;
		} else {
			fprintf(errf, "pan cert %s: unexpected argument '%s'\n%s",
			        verb, argv[a], REVOKE_USAGE);
			return PAN_EXIT_USAGE;
		}
		if (a + 1 >= argc) {
			fprintf(errf, "pan cert %s: %s needs a value\n%s", verb,
			        argv[a], REVOKE_USAGE);
			return PAN_EXIT_USAGE;
		}
		*dst = argv[++a];
	}
	if ((serial_s == NULL) == (subject == NULL)) {
		fprintf(errf, "pan cert %s: a serial or --subject DN (one of "
		              "them)\n%s",
		        verb, REVOKE_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (serial_s != NULL && ca_parse_serial(serial_s, serial, &slen) == -1) {
		fprintf(errf, "pan cert %s: '%s' is not a serial number (hex, "
		              "at most %d bytes)\n",
		        verb, serial_s, STORE_SERIAL_MAX);
		return PAN_EXIT_USAGE;
	}
	if (reason_s != NULL && (reason = reason_parse(reason_s)) == -1) {
		fprintf(errf, "pan cert revoke: unknown reason '%s'\n%s",
		        reason_s, REVOKE_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (node != NULL && registry_find(p, node) == NULL) {
		fprintf(errf, "pan cert %s: no node %s in the deployment\n",
		        verb, node);
		return PAN_EXIT_FAIL;
	}
	if ((serial_s != NULL
	         ? store_find_by_serial(p->st, serial, slen, &l, &err)
	         : store_find_by_subject(p->st, subject, &l, &err)) == -1) {
		fprintf(errf, "pan cert %s: %s\n", verb, err.msg);
		return PAN_EXIT_FAIL;
	}
	/* One serial, several issuers: the admin says which node's. */
	if (serial_s != NULL && node == NULL && l.count > 1) {
		fprintf(errf,
		        "pan cert %s: %zu certificates have serial %s; say "
		        "which node's with --node\n",
		        verb, l.count, serial_s);
		goto out;
	}
	for (i = 0; i < l.count; i++) {
		const struct store_cert *c = &l.certs[i];
		Iselab__Event ev = ISELAB__EVENT__INIT;
		Iselab__CertStatusChange cs = ISELAB__CERT_STATUS_CHANGE__INIT;
		int ok;

		if (node != NULL &&
		    (c->issued_by == NULL || strcmp(c->issued_by, node) != 0))
			continue;
		matched++;
		hex_encode(c->serial, c->serial_len, hex);
		if ((ok = transition_ok(c, to, why, sizeof(why))) == -1) {
			fprintf(errf, "pan cert %s: %s (%s): %s\n", verb, hex,
			        c->subject, why);
			failed++;
			continue;
		}
		if (ok == 0) {
			fprintf(out, "%s (%s) is already %s\n", hex, c->subject,
			        store_status_name(to));
			continue;
		}
		cs.issuer_key_id.data = (uint8_t *)c->issuer_key_id;
		cs.issuer_key_id.len = STORE_KEY_ID_LEN;
		cs.serial.data = (uint8_t *)c->serial;
		cs.serial.len = c->serial_len;
		cs.status = (uint32_t)to;
		/* A hold keeps its time when it becomes a revocation. */
		cs.when = to == STORE_STATUS_REVOKED &&
		                  c->status == STORE_STATUS_HOLD &&
		                  c->revoked_at != 0
		              ? c->revoked_at
		              : now;
		cs.reason = (uint32_t)reason;
		cs.issued_by = c->issued_by != NULL ? c->issued_by : "";
		cs.subject = c->subject != NULL ? c->subject : "";
		ev.change_case = ISELAB__EVENT__CHANGE_CERT_STATUS;
		ev.cert_status = &cs;
		if (eventlog_commit(p, &ev, NULL, &err) == -1) {
			fprintf(errf, "pan cert %s: %s: %s\n", verb, hex,
			        err.msg);
			failed++;
			continue;
		}
		changed++;
		fprintf(out, "%s (%s, issued by %s) %s%s%s (event %" PRIu64 ")\n",
		        hex, c->subject, cs.issued_by[0] != '\0' ? cs.issued_by : "-",
		        to == STORE_STATUS_REVOKED ? "revoked: "
		        : to == STORE_STATUS_HOLD  ? "on hold"
		                                   : "released",
		        to == STORE_STATUS_REVOKED ? store_reason_name(reason) : "",
		        "", ev.seq);
		log_info(LOG_MAIN, "certificate %s (%s) %s by the admin", hex,
		         c->subject, store_status_name(to));
	}
	if (matched == 0) {
		fprintf(errf, "pan cert %s: no certificate %s %s%s%s\n", verb,
		        serial_s != NULL ? "with serial" : "with subject",
		        serial_s != NULL ? serial_s : subject,
		        node != NULL ? " issued by " : "",
		        node != NULL ? node : "");
		goto out;
	}
	rc = failed == 0 ? PAN_EXIT_OK : PAN_EXIT_FAIL;
	(void)changed;
out:
	store_cert_list_free(&l);
	return rc;
}
