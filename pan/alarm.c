/*
 * alarm: the PAN's alarms, as the product's Alarms dashlet shows them.
 *
 * An alarm is an AlarmRecord in the store's alarms table, keyed by an id
 * that grows with every raise (8 bytes big-endian, so key order is raise
 * order).  Raising an alarm that is already active for the same node does
 * nothing, so a flapping link gives one line, not one per timeout tick;
 * clearing stamps cleared_at and keeps the record for `pan alarms --all`.
 * The only alarm of issue 3 is "Queue Link Error" (registry.c).  Every
 * write is an event (eventlog.c), so a SAN's replica holds the same
 * alarms; `pan alarms` and `san alarms` print them with adminview.c.
 *
 * Lookups scan the table: alarms are few (one per link loss), and a scan of
 * a few thousand small records in one read transaction is well under a
 * millisecond.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adminview.h"
#include "certwatch.h"
#include "log.h"
#include "pan.h"
#include "registry.pb-c.h"
#include "store.h"
#include "util.h"

static void
alarm_key(uint64_t id, uint8_t key[8])
{
	int i;

	for (i = 7; i >= 0; i--) {
		key[i] = (uint8_t)(id & 0xff);
		id >>= 8;
	}
}

/* Write rec as an event (eventlog.c): the SAN's replica shows it too. */
static int
alarm_put(struct pan *p, const Iselab__AlarmRecord *rec, struct error *err)
{
	struct eventlog_set set = {0};
	uint8_t key[8];
	int rc;

	alarm_key(rec->id, key);
	rc = eventlog_set_record(&set, ISELAB__EVENT__CHANGE_ALARM_RECORD, key,
	                         sizeof(key), &rec->base, err) == -1 ||
	             eventlog_set_commit(p, &set, NULL, false, err) == -1
	         ? -1
	         : 0;
	eventlog_set_free(&set);
	return rc;
}

struct alarm_scan {
	uint64_t max_id;
	const char *name, *node; /* find the active one of these */
	Iselab__AlarmRecord *found;
	size_t active;
};

static int
alarm_scan_fn(void *ctx, const void *key, size_t klen, const void *val,
              size_t vlen)
{
	struct alarm_scan *s = ctx;
	Iselab__AlarmRecord *rec;

	(void)key;
	(void)klen;
	rec = iselab__alarm_record__unpack(NULL, vlen, val);
	if (rec == NULL) {
		log_warn(LOG_MAIN, "alarms table: a record does not unpack; "
		                   "skipped");
		return 0;
	}
	if (rec->id >= s->max_id)
		s->max_id = rec->id;
	if (rec->cleared_at == 0)
		s->active++;
	if (s->name != NULL && s->found == NULL && rec->cleared_at == 0 &&
	    strcmp(rec->name, s->name) == 0 &&
	    strcmp(rec->node, s->node) == 0) {
		s->found = rec;
		return 0;
	}
	iselab__alarm_record__free_unpacked(rec, NULL);
	return 0;
}

static int
alarm_load_reported(void *ctx, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
	struct pan *p = ctx;
	Iselab__AlarmRecord *rec;
	struct pan_node *n;

	(void)key;
	(void)klen;
	if ((rec = iselab__alarm_record__unpack(NULL, vlen, val)) == NULL)
		return 0;
	if (rec->reported && rec->cleared_at == 0 &&
	    (n = registry_find(p, rec->node)) != NULL &&
	    n->nreported < PAN_NODE_ALARMS_MAX)
		snprintf(n->reported[n->nreported++], PAN_ALARM_NAME_MAX, "%s",
		         rec->name);
	iselab__alarm_record__free_unpacked(rec, NULL);
	return 0;
}

int
alarm_load(struct pan *p, struct error *err)
{
	struct alarm_scan s;

	memset(&s, 0, sizeof(s));
	if (store_kv_foreach(p->st, STORE_TABLE_ALARMS, alarm_scan_fn, &s,
	                     err) == -1)
		return -1;
	p->next_alarm_id = s.max_id + 1;
	/* The nodes' reported alarms that are active, to compare reports. */
	if (store_kv_foreach(p->st, STORE_TABLE_ALARMS, alarm_load_reported, p,
	                     err) == -1)
		return -1;
	return 0;
}

size_t
alarm_active_count(struct pan *p)
{
	struct alarm_scan s;

	memset(&s, 0, sizeof(s));
	if (store_kv_foreach(p->st, STORE_TABLE_ALARMS, alarm_scan_fn, &s,
	                     NULL) == -1)
		return 0;
	return s.active;
}

/* The active alarm name for node, or NULL; -1 on a store error. */
static int
alarm_find_active(struct pan *p, const char *name, const char *node,
                  Iselab__AlarmRecord **out, struct error *err)
{
	struct alarm_scan s;

	memset(&s, 0, sizeof(s));
	s.name = name;
	s.node = node;
	if (store_kv_foreach(p->st, STORE_TABLE_ALARMS, alarm_scan_fn, &s,
	                     err) == -1)
		return -1;
	*out = s.found;
	return 0;
}

static int alarm_raise_as(struct pan *p, const char *name, const char *node,
                          int severity, const char *text, bool reported);

int
alarm_raise(struct pan *p, const char *name, const char *node, int severity,
            const char *text)
{
	return alarm_raise_as(p, name, node, severity, text, false);
}

static int
alarm_raise_as(struct pan *p, const char *name, const char *node,
               int severity, const char *text, bool reported)
{
	Iselab__AlarmRecord rec = ISELAB__ALARM_RECORD__INIT, *old = NULL;
	struct error err = {{0}};

	if (alarm_find_active(p, name, node, &old, &err) == -1)
		goto fail;
	if (old != NULL) {
		iselab__alarm_record__free_unpacked(old, NULL);
		return 0;
	}
	rec.id = p->next_alarm_id;
	rec.name = (char *)name;
	rec.node = (char *)node;
	rec.severity = severity;
	rec.text = (char *)text;
	rec.raised_at = time(NULL);
	rec.reported = reported;
	if (alarm_put(p, &rec, &err) == -1)
		goto fail;
	p->next_alarm_id++;
	log_warn(LOG_MAIN, "alarm raised: %s (%s) on %s: %s", name,
	         adminview_severity_name(severity), node, text);
	return 0;
fail:
	log_error(LOG_MAIN, "cannot record alarm %s for %s: %s", name, node,
	          err.msg);
	return -1;
}

int
alarm_clear(struct pan *p, const char *name, const char *node)
{
	Iselab__AlarmRecord *old = NULL;
	struct error err = {{0}};
	int rc = -1;

	if (alarm_find_active(p, name, node, &old, &err) == -1)
		goto out;
	if (old == NULL)
		return 0;
	old->cleared_at = time(NULL);
	if (alarm_put(p, old, &err) == -1)
		goto out;
	log_info(LOG_MAIN, "alarm cleared: %s on %s", name, node);
	rc = 0;
out:
	if (rc == -1)
		log_error(LOG_MAIN, "cannot clear alarm %s for %s: %s", name,
		          node, err.msg);
	if (old != NULL)
		iselab__alarm_record__free_unpacked(old, NULL);
	return rc;
}

int
alarm_list(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	return adminview_alarms(p->st, "pan", argc, argv, out, errf);
}

/* Printable text only: a node's words go into our log and our tables. */
static void
alarm_clean(const char *in, char *out, size_t len)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < len; i++)
		out[i] = (in[i] >= 0x20 && in[i] != 0x7f) || (in[i] & 0x80)
		             ? in[i]
		             : ' ';
	out[i] = '\0';
}

void
alarm_reported(struct pan *p, struct pan_node *n,
               Iselab__NodeAlarm *const *alarms, size_t count)
{
	char name[PAN_ALARM_NAME_MAX], text[PAN_ALARM_TEXT_MAX];
	size_t i, k;
	int sev;

	if (count > PAN_NODE_ALARMS_MAX)
		count = PAN_NODE_ALARMS_MAX;
	/* Cleared: reported before, not now. */
	for (k = 0; k < n->nreported;) {
		for (i = 0; i < count; i++)
			if (alarms[i]->name != NULL &&
			    strncmp(alarms[i]->name, n->reported[k],
			            PAN_ALARM_NAME_MAX - 1) == 0)
				break;
		if (i < count) {
			k++;
			continue;
		}
		(void)alarm_clear(p, n->reported[k], n->hostname);
		memcpy(n->reported[k], n->reported[--n->nreported],
		       PAN_ALARM_NAME_MAX);
	}
	/* Raised: reported now, not before. */
	for (i = 0; i < count; i++) {
		if (alarms[i]->name == NULL || alarms[i]->name[0] == '\0')
			continue;
		alarm_clean(alarms[i]->name, name, sizeof(name));
		for (k = 0; k < n->nreported; k++)
			if (strcmp(n->reported[k], name) == 0)
				break;
		if (k < n->nreported || n->nreported == PAN_NODE_ALARMS_MAX)
			continue;
		alarm_clean(alarms[i]->text != NULL ? alarms[i]->text : "",
		            text, sizeof(text));
		sev = (int)alarms[i]->severity;
		if (sev < ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_CRITICAL ||
		    sev > ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_INFO)
			sev = ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_MAJOR;
		if (alarm_raise_as(p, name, n->hostname, sev, text, true) == 0)
			memcpy(n->reported[n->nreported++], name, sizeof(name));
	}
}

void
alarm_reported_clear_node(struct pan *p, struct pan_node *n)
{
	alarm_reported(p, n, NULL, 0);
}

/* The PAN's own certificates whose end raises an alarm (certwatch.h). */
static const struct certwatch_cert alarm_expiry_certs[] = {
    {"Root CA", NODE_CA_DIR "/root-ca.crt"},
    {"Node CA", NODE_CA_DIR "/node-ca.crt"},
    {"OCSP Responder", PAN_OCSP_CERT},
    {NULL, NULL},
};

static void
alarm_certwatch(void *arg, const char *name, int severity, const char *text)
{
	struct pan *p = arg;

	if (text == NULL)
		(void)alarm_clear(p, name, p->id.hostname);
	else
		(void)alarm_raise(p, name, p->id.hostname, severity, text);
}

int
alarm_certwatch_open(struct pan *p, struct error *err)
{
	p->certwatch =
	    certwatch_new(p->datadir, p->id.hostname, alarm_expiry_certs, err);
	return p->certwatch != NULL ? 0 : -1;
}

int64_t
alarm_certwatch_tick(struct pan *p)
{
	return certwatch_tick(p->certwatch, time_mono_ms(), alarm_certwatch,
	                      p);
}

void
alarm_certwatch_close(struct pan *p)
{
	certwatch_free(p->certwatch);
	p->certwatch = NULL;
}
