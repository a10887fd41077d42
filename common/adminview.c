/*
 * adminview: the admin node's tables as its admin commands show them,
 * from a store: `pan cert list` / `san cert list`, `pan alarms` / `san
 * alarms`, `san node list`.  The PAN shows its own store; a SAN the
 * replica it keeps of the PAN's (docs/san.md), with the same code, so
 * that the two views can be compared line for line.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adminview.h"
#include "log.h"
#include "registry.pb-c.h"
#include "store.h"
#include "util.h"

#define CERT_LIST_USAGE                                                        \
	"usage: %s cert list [--node HOST] [--status good|revoked|hold] "      \
	"[--limit N] [--after CURSOR] --data-dir DIR\n"
/* Widest subject the table shows; longer ones are cut with "...". */
#define CERT_LIST_SUBJECT_MAX 48
/* Most alarms the alarms view prints; older ones are counted, not shown. */
#define ALARM_LIST_MAX 1000
/* Largest local alarm copied into the view (name, node, text: < 1 KiB). */
#define ALARM_LOCAL_PACKED_MAX 4096

void
adminview_time(int64_t secs, char *buf, size_t len)
{
	time_t t = (time_t)secs;
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "?");
}

/* "-" for 0 (never), else the time. */
static void
opt_time(int64_t secs, char *buf, size_t len)
{
	if (secs == 0)
		snprintf(buf, len, "-");
	else
		adminview_time(secs, buf, len);
}

const char *
adminview_severity_name(int severity)
{
	switch (severity) {
	case ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_CRITICAL:
		return "critical";
	case ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_MAJOR:
		return "major";
	case ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_MINOR:
		return "minor";
	case ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_WARNING:
		return "warning";
	case ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_INFO:
		return "info";
	default:
		return "?";
	}
}

/* "--name value" or "--name=value" at argv[*i]: 1 matched, 0 not, -1 no value.
 */
static int
opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (strcmp(argv[*i], name) == 0) {
		if (*i + 1 >= argc)
			return -1;
		*val = argv[++*i];
		return 1;
	}
	if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	return 0;
}

int
adminview_cert_list(struct store *st, const char *prog, int argc,
                    char **argv, FILE *out, FILE *errf)
{
	static const char *const opts[] = {"--node", "--status", "--limit",
	                                   "--after"};
	const char *vals[4] = {NULL, NULL, NULL, NULL};
	struct store_filter filter = {STORE_STATUS_ANY, NULL};
	struct store_cursor cursor;
	struct store_cert_list l = {0};
	struct error err = {{0}};
	char serial[2 * STORE_SERIAL_MAX + 1], when[32];
	char subject[CERT_LIST_SUBJECT_MAX + 1], next[STORE_CURSOR_STR_MAX];
	unsigned long limit = 0;
	char *end;
	size_t i;
	int a, k, r;

	/* argv: cert list [options] */
	for (a = 2; a < argc; a++) {
		for (k = 0; k < 4; k++)
			if ((r = opt_value(argc, argv, &a, opts[k], &vals[k])) !=
			    0)
				break;
		if (k == 4 || r == -1) {
			fprintf(errf, "%s cert list: %s '%s'\n" CERT_LIST_USAGE,
			        prog,
			        k == 4 ? "unexpected argument"
			               : "a value is missing after",
			        argv[a], prog);
			return ADMINVIEW_EXIT_USAGE;
		}
	}
	filter.issued_by = vals[0];
	if (vals[1] != NULL) {
		if (strcmp(vals[1], "good") == 0)
			filter.status = STORE_STATUS_GOOD;
		else if (strcmp(vals[1], "revoked") == 0)
			filter.status = STORE_STATUS_REVOKED;
		else if (strcmp(vals[1], "hold") == 0)
			filter.status = STORE_STATUS_HOLD;
		else {
			fprintf(errf,
			        "%s cert list: --status '%s': want good, "
			        "revoked or hold\n",
			        prog, vals[1]);
			return ADMINVIEW_EXIT_USAGE;
		}
	}
	if (vals[2] != NULL) {
		errno = 0;
		limit = strtoul(vals[2], &end, 10);
		if (errno != 0 || *end != '\0' || vals[2][0] == '-' ||
		    limit == 0 || limit > STORE_PAGE_MAX) {
			fprintf(errf,
			        "%s cert list: --limit '%s': want 1 to %d\n",
			        prog, vals[2], STORE_PAGE_MAX);
			return ADMINVIEW_EXIT_USAGE;
		}
	}
	memset(&cursor, 0, sizeof(cursor));
	if (vals[3] != NULL &&
	    store_cursor_parse(vals[3], &cursor, &err) == -1) {
		fprintf(errf, "%s cert list: --after: %s\n", prog, err.msg);
		return ADMINVIEW_EXIT_USAGE;
	}
	if (store_list_certs(st, &filter, limit, &cursor, &l, &err) == -1) {
		fprintf(errf, "%s cert list: %s\n", prog, err.msg);
		return ADMINVIEW_EXIT_FAIL;
	}
	fprintf(out, "%-40s %-*s %-12s %-16s %-23s %s\n", "SERIAL",
	        CERT_LIST_SUBJECT_MAX, "SUBJECT", "ISSUER NODE", "PROFILE",
	        "NOT AFTER", "STATUS");
	for (i = 0; i < l.count; i++) {
		const struct store_cert *c = &l.certs[i];

		hex_encode(c->serial, c->serial_len, serial);
		if (strlen(c->subject) > CERT_LIST_SUBJECT_MAX)
			snprintf(subject, sizeof(subject), "%.*s...",
			         CERT_LIST_SUBJECT_MAX - 3, c->subject);
		else
			snprintf(subject, sizeof(subject), "%s", c->subject);
		opt_time(c->not_after, when, sizeof(when));
		fprintf(out, "%-40s %-*s %-12s %-16s %-23s %s\n", serial,
		        CERT_LIST_SUBJECT_MAX, subject,
		        c->issued_by != NULL && c->issued_by[0] != '\0'
		            ? c->issued_by
		            : "-",
		        c->profile != NULL && c->profile[0] != '\0' ? c->profile
		                                                    : "-",
		        when, store_status_name(c->status));
	}
	if (!cursor.done) {
		store_cursor_format(&cursor, next);
		fprintf(out, "more: %s cert list ... --after %s\n", prog,
		        next);
	}
	store_cert_list_free(&l);
	return ADMINVIEW_EXIT_OK;
}

struct alarm_list {
	bool all;                   /* cleared ones too */
	Iselab__AlarmRecord **list; /* ring of the newest ALARM_LIST_MAX */
	size_t ntotal;
	/* The node's own alarms, in raise order, merged in by raise time. */
	const Iselab__AlarmRecord *const *local;
	size_t nlocal, nextlocal;
};

/* rec (owned) into the ring, unless it is cleared and only active show. */
static void
alarm_list_add(struct alarm_list *s, Iselab__AlarmRecord *rec)
{
	Iselab__AlarmRecord **slot;

	if (!s->all && rec->cleared_at != 0) {
		iselab__alarm_record__free_unpacked(rec, NULL);
		return;
	}
	slot = &s->list[s->ntotal++ % ALARM_LIST_MAX];
	if (*slot != NULL)
		iselab__alarm_record__free_unpacked(*slot, NULL);
	*slot = rec;
}

/* The local alarms raised up to `until` (seconds; INT64_MAX: all left). */
static void
alarm_list_local(struct alarm_list *s, int64_t until)
{
	uint8_t buf[ALARM_LOCAL_PACKED_MAX];
	Iselab__AlarmRecord *copy;
	size_t len;

	while (s->nextlocal < s->nlocal &&
	       s->local[s->nextlocal]->raised_at <= until) {
		const Iselab__AlarmRecord *l = s->local[s->nextlocal++];

		/* A copy the ring owns, freed like the store's records. */
		if (iselab__alarm_record__get_packed_size(l) > sizeof(buf))
			continue;
		len = iselab__alarm_record__pack(l, buf);
		if ((copy = iselab__alarm_record__unpack(NULL, len, buf)) !=
		    NULL)
			alarm_list_add(s, copy);
	}
}

static int
alarm_list_fn(void *ctx, const void *key, size_t klen, const void *val,
              size_t vlen)
{
	struct alarm_list *s = ctx;
	Iselab__AlarmRecord *rec;

	(void)key;
	(void)klen;
	if ((rec = iselab__alarm_record__unpack(NULL, vlen, val)) == NULL) {
		log_warn(LOG_MAIN, "alarms table: a record does not unpack; "
		                   "skipped");
		return 0;
	}
	alarm_list_local(s, rec->raised_at);
	alarm_list_add(s, rec);
	return 0;
}

int
adminview_alarms(struct store *st, const char *prog, int argc, char **argv,
                 FILE *out, FILE *errf)
{
	return adminview_alarms_local(st, prog, argc, argv, NULL, 0, out,
	                              errf);
}

int
adminview_alarms_local(struct store *st, const char *prog, int argc,
                       char **argv, const Iselab__AlarmRecord *const *local,
                       size_t nlocal, FILE *out, FILE *errf)
{
	struct alarm_list s;
	struct error err = {{0}};
	char raised[32], cleared[32];
	size_t i, n;
	int a, rc = ADMINVIEW_EXIT_FAIL;

	memset(&s, 0, sizeof(s));
	s.local = local;
	s.nlocal = nlocal;
	for (a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--all") == 0)
			s.all = true;
		else {
			fprintf(errf,
			        "%s alarms: unexpected argument '%s'\n"
			        "usage: %s alarms [--all] --data-dir DIR\n",
			        prog, argv[a], prog);
			return ADMINVIEW_EXIT_USAGE;
		}
	}
	if ((s.list = calloc(ALARM_LIST_MAX, sizeof(*s.list))) == NULL) {
		fprintf(errf, "%s alarms: out of memory\n", prog);
		return ADMINVIEW_EXIT_FAIL;
	}
	if (store_kv_foreach(st, STORE_TABLE_ALARMS, alarm_list_fn, &s, &err) ==
	    -1) {
		fprintf(errf, "%s alarms: %s\n", prog, err.msg);
		goto out;
	}
	alarm_list_local(&s, INT64_MAX);
	n = s.ntotal < ALARM_LIST_MAX ? s.ntotal : ALARM_LIST_MAX;
	if (n == 0) {
		fprintf(out, s.all ? "No alarms.\n" : "No active alarms.\n");
		rc = ADMINVIEW_EXIT_OK;
		goto out;
	}
	if (s.all)
		fprintf(out, "%-20s  %-8s  %-16s  %-18s  %-20s  %s\n", "TIME",
		        "SEVERITY", "NODE", "ALARM", "CLEARED", "TEXT");
	else
		fprintf(out, "%-20s  %-8s  %-16s  %-18s  %s\n", "TIME",
		        "SEVERITY", "NODE", "ALARM", "TEXT");
	/* Newest first, as the dashlet shows them. */
	for (i = 0; i < n; i++) {
		Iselab__AlarmRecord *r;

		r = s.list[(s.ntotal - 1 - i) % ALARM_LIST_MAX];
		adminview_time(r->raised_at, raised, sizeof(raised));
		if (r->cleared_at != 0)
			adminview_time(r->cleared_at, cleared,
			                sizeof(cleared));
		else
			snprintf(cleared, sizeof(cleared), "-");
		if (s.all)
			fprintf(out, "%-20s  %-8s  %-16s  %-18s  %-20s  %s\n",
			        raised, adminview_severity_name(r->severity),
			        r->node, r->name, cleared, r->text);
		else
			fprintf(out, "%-20s  %-8s  %-16s  %-18s  %s\n", raised,
			        adminview_severity_name(r->severity), r->node,
			        r->name, r->text);
	}
	if (s.ntotal > n)
		fprintf(out, "(%zu older alarms not shown)\n", s.ntotal - n);
	rc = ADMINVIEW_EXIT_OK;
out:
	for (i = 0; i < ALARM_LIST_MAX; i++)
		if (s.list[i] != NULL)
			iselab__alarm_record__free_unpacked(s.list[i], NULL);
	free(s.list);
	return rc;
}


struct node_view {
	FILE *out;
	size_t n;
};

static const char *
role_word(Iselab__Role r)
{
	switch (r) {
	case ISELAB__ROLE__ROLE_PAN:
		return "pan";
	case ISELAB__ROLE__ROLE_SAN:
		return "san";
	case ISELAB__ROLE__ROLE_PSN:
		return "psn";
	default:
		return "?";
	}
}

static int
node_view_fn(void *ctx, const void *key, size_t klen, const void *val,
             size_t vlen)
{
	struct node_view *v = ctx;
	Iselab__NodeRecord *r;
	char joined[32];

	if ((r = iselab__node_record__unpack(NULL, vlen, val)) == NULL) {
		fprintf(v->out, "%-24.*s (record does not unpack)\n",
		        (int)(klen < 64 ? klen : 64), (const char *)key);
		return 0;
	}
	opt_time(r->joined_at, joined, sizeof(joined));
	fprintf(v->out, "%-24s %-5s %-16s %-10s %-20s %s\n", r->hostname,
	        role_word(r->role),
	        r->role == ISELAB__ROLE__ROLE_PSN
	            ? (r->session_services ? "on" : "off")
	            : "-",
	        r->status == ISELAB__NODE_STATUS__NODE_STATUS_REMOVED
	            ? "removed"
	            : "registered",
	        joined,
	        r->role != ISELAB__ROLE__ROLE_PSN ? "-"
	        : r->ca_disabled                 ? "disabled"
	                                         : "enabled");
	iselab__node_record__free_unpacked(r, NULL);
	v->n++;
	return 0;
}

int
adminview_nodes(struct store *st, const char *prog, FILE *out, FILE *errf)
{
	struct node_view v = {out, 0};
	struct error err = {{0}};

	fprintf(out, "%-24s %-5s %-16s %-10s %-20s %s\n", "HOSTNAME", "ROLE",
	        "SESSION-SERVICES", "STATUS", "JOINED", "CA-SERVICE");
	if (store_kv_foreach(st, STORE_TABLE_NODES, node_view_fn, &v, &err) ==
	    -1) {
		fprintf(errf, "%s node list: %s\n", prog, err.msg);
		return ADMINVIEW_EXIT_FAIL;
	}
	return ADMINVIEW_EXIT_OK;
}
