/*
 * eventlog: the PAN's side of the deployment's event log (common/events.h,
 * docs/events.md), and the admin commands whose changes travel through it:
 * `pan user add|remove|list` and `pan template add|list|remove`.
 *
 * A change is numbered (the next sequence), written with its effect on
 * the PAN's own config table in one transaction, and only then published
 * on the PUB socket: an event a member receives is always in the log, so
 * the catch-up it asks for later finds it.  The daemon is the only writer
 * of the log (admin commands run in it), so the sequence is a counter in
 * memory, read back from the log at start.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <openssl/x509.h>

#include "cert.h"
#include "enroll.h"
#include "events.h"
#include "log.h"
#include "pan.h"
#include "util.h"

int
eventlog_open(struct pan *p, struct error *err)
{
	if (events_last_seq(p->st, &p->event_seq, err) == -1)
		return -1;
	log_info(LOG_MESSAGING, "event log: %" PRIu64 " event(s)",
	         p->event_seq);
	return 0;
}

/* Publish ev on the PUB socket; a member that misses it catches up. */
static void
eventlog_publish(struct pan *p, Iselab__Event *ev)
{
	Iselab__Envelope env;
	struct error err;
	uint8_t *buf;
	size_t len;

	if (p->pub == NULL)
		return;
	msg_init(&env, 0, p->id.hostname);
	env.body_case = ISELAB__ENVELOPE__BODY_EVENT;
	env.event = ev;
	if ((buf = msg_pack(&env, &len, &err)) == NULL) {
		log_error(LOG_MESSAGING, "event %" PRIu64 ": %s", ev->seq,
		          err.msg);
		return;
	}
	/* PUB never blocks: a slow subscriber loses it and catches up. */
	if (zmq_send(p->pub, buf, len, ZMQ_DONTWAIT) == -1)
		log_warn(LOG_MESSAGING, "event %" PRIu64 " not published: %s",
		         ev->seq, zmq_strerror(errno));
	free(buf);
}

int
eventlog_commit_n(struct pan *p, Iselab__Event *const *evs, size_t n,
                  struct store_batch *with, bool log_only, struct error *err)
{
	struct store_batch *b = with;
	char what[128];
	int64_t now = time_now_ms();
	size_t i;
	int rc = -1;

	if (n == 0)
		return 0;
	if (b == NULL && (b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		evs[i]->seq = p->event_seq + 1 + i;
		evs[i]->time_ms = now;
		if (events_check(evs[i], err) == -1 ||
		    events_batch_log(b, evs[i], err) == -1 ||
		    (!log_only &&
		     events_batch_effect(b, evs[i], EVENTS_REPLICA, err) == -1))
			goto out;
	}
	rc = store_apply(p->st, b, err);
	if (rc != STORE_OK) {
		if (rc == STORE_EXISTS)
			error_set(err, "event %" PRIu64 " is already in the log",
			          evs[0]->seq);
		rc = -1;
		goto out;
	}
	p->event_seq += n;
	for (i = 0; i < n; i++) {
		events_describe(evs[i], what, sizeof(what));
		log_info(LOG_MESSAGING, "event %" PRIu64 ": %s", evs[i]->seq,
		         what);
		eventlog_publish(p, evs[i]);
	}
	rc = 0;
out:
	if (with == NULL)
		store_batch_free(b);
	return rc;
}

int
eventlog_commit(struct pan *p, Iselab__Event *ev, struct store_batch *with,
                struct error *err)
{
	return eventlog_commit_n(p, &ev, 1, with, false, err);
}

/* ---- sets of events committed together ---------------------------------- */

void
eventlog_set_free(struct eventlog_set *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		iselab__event__free_unpacked(s->evs[i], NULL);
	free(s->evs);
	memset(s, 0, sizeof(*s));
}

/* A new, empty event appended to s; NULL when out of memory. */
static Iselab__Event *
set_new_event(struct eventlog_set *s, struct error *err)
{
	Iselab__Event **evs, *ev;

	if (s->n == s->cap) {
		size_t cap = s->cap == 0 ? 8 : 2 * s->cap;

		if ((evs = realloc(s->evs, cap * sizeof(*evs))) == NULL)
			goto oom;
		s->evs = evs;
		s->cap = cap;
	}
	if ((ev = malloc(sizeof(*ev))) == NULL)
		goto oom;
	iselab__event__init(ev);
	s->evs[s->n++] = ev;
	return ev;
oom:
	error_set(err, "out of memory");
	return NULL;
}

/* A malloc'd copy of len bytes into *out; -1 when out of memory. */
static int
set_bytes(ProtobufCBinaryData *out, const void *data, size_t len,
          struct error *err)
{
	if ((out->data = malloc(len > 0 ? len : 1)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	memcpy(out->data, data, len);
	out->len = len;
	return 0;
}

/* strdup that says so; NULL becomes "". */
static char *
set_str(const char *s, struct error *err)
{
	char *d = strdup(s != NULL ? s : "");

	if (d == NULL)
		error_set(err, "out of memory");
	return d;
}

int
eventlog_set_raw(struct eventlog_set *s, Iselab__Event__ChangeCase which,
                 const void *key, size_t klen, const void *rec, size_t rlen,
                 struct error *err)
{
	Iselab__TableRecord *r;
	Iselab__Event *ev;

	if ((ev = set_new_event(s, err)) == NULL)
		return -1;
	if ((r = malloc(sizeof(*r))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__table_record__init(r);
	ev->change_case = which;
	if (which == ISELAB__EVENT__CHANGE_NODE_RECORD)
		ev->node_record = r;
	else if (which == ISELAB__EVENT__CHANGE_TOKEN_RECORD)
		ev->token_record = r;
	else
		ev->alarm_record = r;
	if (set_bytes(&r->key, key, klen, err) == -1 ||
	    set_bytes(&r->record, rec, rlen, err) == -1)
		return -1;
	return 0;
}

int
eventlog_set_record(struct eventlog_set *s, Iselab__Event__ChangeCase which,
                    const void *key, size_t klen, const ProtobufCMessage *m,
                    struct error *err)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf;
	int rc;

	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	protobuf_c_message_pack(m, buf);
	rc = eventlog_set_raw(s, which, key, klen, buf, len, err);
	free(buf);
	return rc;
}

int
eventlog_set_cert(struct eventlog_set *s, const uint8_t *der, size_t der_len,
                  const uint8_t kid[STORE_KEY_ID_LEN], const char *issued_by,
                  const char *profile, int64_t issued_at, struct error *err)
{
	Iselab__CertIssued *c;
	Iselab__Event *ev;

	if ((ev = set_new_event(s, err)) == NULL)
		return -1;
	if ((c = malloc(sizeof(*c))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__cert_issued__init(c);
	ev->change_case = ISELAB__EVENT__CHANGE_CERT_ISSUED;
	ev->cert_issued = c;
	c->issued_at = issued_at;
	if (set_bytes(&c->cert, der, der_len, err) == -1 ||
	    set_bytes(&c->issuer_key_id, kid, STORE_KEY_ID_LEN, err) == -1 ||
	    (c->issued_by = set_str(issued_by, err)) == NULL ||
	    (c->profile = set_str(profile, err)) == NULL)
		return -1;
	return 0;
}

int
eventlog_set_x509(struct eventlog_set *s, X509 *x,
                  const uint8_t kid[STORE_KEY_ID_LEN], const char *issued_by,
                  const char *profile, int64_t issued_at, struct error *err)
{
	unsigned char *der = NULL;
	int len, rc;

	if ((len = i2d_X509(x, &der)) <= 0) {
		log_crypto(LOG_MAIN, err, "i2d_X509", "an issued certificate");
		return -1;
	}
	rc = eventlog_set_cert(s, der, (size_t)len, kid, issued_by, profile,
	                       issued_at, err);
	OPENSSL_free(der);
	return rc;
}

int
eventlog_set_status(struct eventlog_set *s, const struct store_cert *c,
                    enum store_cert_status to, int64_t when, int reason,
                    struct error *err)
{
	Iselab__CertStatusChange *cs;
	Iselab__Event *ev;

	if ((ev = set_new_event(s, err)) == NULL)
		return -1;
	if ((cs = malloc(sizeof(*cs))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__cert_status_change__init(cs);
	ev->change_case = ISELAB__EVENT__CHANGE_CERT_STATUS;
	ev->cert_status = cs;
	cs->status = (uint32_t)to;
	cs->when = when;
	cs->reason = (uint32_t)reason;
	if (set_bytes(&cs->issuer_key_id, c->issuer_key_id, STORE_KEY_ID_LEN,
	              err) == -1 ||
	    set_bytes(&cs->serial, c->serial, c->serial_len, err) == -1 ||
	    (cs->issued_by = set_str(c->issued_by, err)) == NULL ||
	    (cs->subject = set_str(c->subject, err)) == NULL)
		return -1;
	return 0;
}

int
eventlog_set_commit(struct pan *p, struct eventlog_set *s,
                    struct store_batch *with, bool log_only,
                    struct error *err)
{
	return eventlog_commit_n(p, s->evs, s->n, with, log_only, err);
}

/* ---- the backfill: what the store held before the log carried it ------- */

/* Records per backfill transaction. */
#define SEED_PAGE 100
/* Config key: the backfill has run (its value: the sequence it ended at). */
#define SEED_KEY "events/seeded"

/* Commit what s holds (log only) if it is full or final. */
static int
seed_flush(struct pan *p, struct eventlog_set *s, bool final, size_t *total,
           struct error *err)
{
	struct store_batch *b = NULL;
	uint8_t val[8];
	int rc;

	if (!final && s->n < SEED_PAGE)
		return 0;
	if (final) {
		/* The mark goes with the last events: all or nothing. */
		if ((b = store_batch_new()) == NULL) {
			error_set(err, "out of memory");
			return -1;
		}
		events_key(p->event_seq + s->n, val);
		if (store_batch_kv_put(b, STORE_TABLE_CONFIG, SEED_KEY,
		                       strlen(SEED_KEY), val,
		                       sizeof(val)) == -1) {
			store_batch_free(b);
			error_set(err, "cannot add the backfill mark");
			return -1;
		}
	}
	if (s->n > 0)
		rc = eventlog_set_commit(p, s, b, true, err);
	else
		rc = store_apply(p->st, b, err) == STORE_OK ? 0 : -1;
	store_batch_free(b);
	*total += s->n;
	eventlog_set_free(s);
	return rc;
}

struct seed_walk {
	struct pan *p;
	struct eventlog_set *s;
	Iselab__Event__ChangeCase which;
	struct error *err;
	int failed;
};

/* Buffered: the walk must not write (one transaction per thread). */
static int
seed_table_fn(void *arg, const void *key, size_t klen, const void *val,
              size_t vlen)
{
	struct seed_walk *w = arg;

	if (eventlog_set_raw(w->s, w->which, key, klen, val, vlen, w->err) ==
	    -1) {
		w->failed = 1;
		return 1;
	}
	return 0;
}

int
eventlog_seed(struct pan *p, struct error *err)
{
	static const struct {
		enum store_table t;
		Iselab__Event__ChangeCase which;
	} tables[] = {
	    {STORE_TABLE_NODES, ISELAB__EVENT__CHANGE_NODE_RECORD},
	    {STORE_TABLE_TOKENS, ISELAB__EVENT__CHANGE_TOKEN_RECORD},
	    {STORE_TABLE_ALARMS, ISELAB__EVENT__CHANGE_ALARM_RECORD},
	};
	struct eventlog_set s = {0};
	struct store_cursor cursor;
	struct store_cert_list l = {0};
	uint8_t *val;
	size_t vlen, i, total = 0;
	int rc;

	/* A promoted SAN's log is the replica of a whole one. */
	if (p->id.role == NODE_ROLE_SAN)
		return 0;
	rc = store_kv_get(p->st, STORE_TABLE_CONFIG, SEED_KEY,
	                  strlen(SEED_KEY), &val, &vlen, err);
	if (rc == STORE_OK) {
		free(val);
		return 0;
	}
	if (rc != STORE_NOT_FOUND)
		return -1;
	/* The certificates, then their status where it is not GOOD. */
	memset(&cursor, 0, sizeof(cursor));
	while (!cursor.done) {
		if (store_list_certs(p->st, NULL, SEED_PAGE, &cursor, &l,
		                     err) == -1)
			goto fail;
		for (i = 0; i < l.count; i++) {
			const struct store_cert *c = &l.certs[i];

			if (eventlog_set_cert(&s, c->der, c->der_len,
			                      c->issuer_key_id, c->issued_by,
			                      c->profile, c->issued_at,
			                      err) == -1 ||
			    (c->status != STORE_STATUS_GOOD &&
			     eventlog_set_status(&s, c, c->status,
			                         c->revoked_at, c->reason,
			                         err) == -1))
				goto fail;
		}
		store_cert_list_free(&l);
		if (seed_flush(p, &s, false, &total, err) == -1)
			goto fail;
	}
	for (i = 0; i < ARRAY_SIZE(tables); i++) {
		struct seed_walk w = {p, &s, tables[i].which, err, 0};

		if (store_kv_foreach(p->st, tables[i].t, seed_table_fn, &w,
		                     err) == -1 ||
		    w.failed)
			goto fail;
		if (seed_flush(p, &s, false, &total, err) == -1)
			goto fail;
	}
	if (seed_flush(p, &s, true, &total, err) == -1)
		goto fail;
	log_info(LOG_MESSAGING,
	         "event log: %zu event(s) added for the state the store "
	         "held before (certificates, nodes, tokens, alarms)",
	         total);
	return 1;
fail:
	store_cert_list_free(&l);
	eventlog_set_free(&s);
	error_prefix(err, "event log backfill");
	return -1;
}

/* Config key: serial (hex) of the PAN's OCSP responder certificate logged. */
#define OWN_OCSP_KEY "events/ocsp-responder"

int
eventlog_own_certs(struct pan *p, bool seeded, struct error *err)
{
	struct eventlog_set set = {0};
	struct store_batch *b = NULL;
	struct store_cert *sc = NULL;
	uint8_t serial[STORE_SERIAL_MAX], *val = NULL;
	char path[PAN_PATH_MAX], hex[2 * STORE_SERIAL_MAX + 1];
	size_t slen, vlen = 0;
	X509 *x = NULL;
	int rc = -1, got;

	if (node_path(path, sizeof(path), p->datadir, PAN_OCSP_CERT, err) ==
	        -1 ||
	    (x = cert_load_pem(path, err)) == NULL ||
	    store_x509_serial(x, serial, &slen, err) == -1)
		goto out;
	hex_encode(serial, slen, hex);
	if ((got = store_kv_get(p->st, STORE_TABLE_CONFIG, OWN_OCSP_KEY,
	                        strlen(OWN_OCSP_KEY), &val, &vlen, err)) == -1)
		goto out;
	if (got == STORE_OK && vlen == strlen(hex) &&
	    memcmp(val, hex, vlen) == 0) {
		rc = 0;
		goto out;
	}
	if ((b = store_batch_new()) == NULL ||
	    store_batch_kv_put(b, STORE_TABLE_CONFIG, OWN_OCSP_KEY,
	                       strlen(OWN_OCSP_KEY), hex, strlen(hex)) == -1) {
		error_set(err, "out of memory");
		goto out;
	}
	/* The backfill that just ran carried it: only the mark. */
	if (seeded) {
		rc = store_apply(p->st, b, err) == STORE_OK ? 0 : -1;
		goto out;
	}
	/* pan_ocsp_ensure() stored it: the event only, as stored. */
	if (store_get_cert(p->st, p->node_kid, serial, slen, &sc, err) !=
	    STORE_OK) {
		error_set(err, "the OCSP responder certificate %s is not in "
		               "the store",
		          hex);
		goto out;
	}
	if (eventlog_set_cert(&set, sc->der, sc->der_len, sc->issuer_key_id,
	                      sc->issued_by, sc->profile, sc->issued_at,
	                      err) == -1 ||
	    eventlog_set_commit(p, &set, b, true, err) == -1)
		goto out;
	rc = 0;
out:
	if (rc == -1)
		error_prefix(err, "event log: the OCSP responder certificate");
	X509_free(x);
	free(val);
	store_cert_free(sc);
	store_batch_free(b);
	eventlog_set_free(&set);
	return rc;
}

int
eventlog_request(struct pan *p, const struct pan_peer *peer,
                 const Iselab__Envelope *env)
{
	Iselab__Envelope reply;
	Iselab__EventBatch batch = ISELAB__EVENT_BATCH__INIT;
	Iselab__Event **evs = NULL;
	struct pan_node *n;
	struct error err = {{0}};
	size_t count = 0;

	/* Only registered nodes read the log (it holds user hashes). */
	if ((n = registry_find_key(p, peer->key)) == NULL ||
	    strcmp(env->sender, n->hostname) != 0) {
		messaging_drop(p, n == NULL ? PAN_DROP_UNKNOWN_KEY
		                            : PAN_DROP_FOREIGN,
		               "events request for '%s' from CURVE key %s",
		               env->sender, peer->key_z85);
		return 0;
	}
	if (events_read(p->st, env->events_request->after_seq,
	                EVENTS_BATCH_MAX, &evs, &count, &err) == -1) {
		log_error(LOG_MESSAGING, "events for %s: %s", n->hostname,
		          err.msg);
		return 0;
	}
	batch.events = evs;
	batch.n_events = count;
	batch.last_seq = p->event_seq;
	msg_init(&reply, env->request_id, p->id.hostname);
	reply.body_case = ISELAB__ENVELOPE__BODY_EVENT_BATCH;
	reply.event_batch = &batch;
	log_debug(LOG_MESSAGING,
	          "events %" PRIu64 "..%" PRIu64 " to %s (of %" PRIu64 ")",
	          env->events_request->after_seq + 1,
	          env->events_request->after_seq + count, n->hostname,
	          p->event_seq);
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
	events_free(evs, count);
	return 0;
}

/* ---- admin commands ----------------------------------------------------- */

#define USER_USAGE                                                            \
	"usage: pan user add NAME --data-dir DIR   (password: one line on "   \
	"stdin, or " ENROLL_PASSWORD_ENV ")\n"                                \
	"       pan user remove NAME --data-dir DIR\n"                        \
	"       pan user list --data-dir DIR\n"
#define TEMPLATE_USAGE                                                        \
	"usage: pan template add LABEL [--profile tls-client|tls-server] "    \
	"[--validity 730d]\n"                                                 \
	"                 [--key-types ec:p256,ec:p384,rsa:2048,...] "         \
	"[--keygen TYPE]\n"                                                   \
	"                 [--pop off|optional|required] [--require-cn "       \
	"yes|no] --data-dir DIR\n"                                            \
	"       pan template list --data-dir DIR\n"                           \
	"       pan template remove LABEL --data-dir DIR\n"

/* Walk the config records under prefix, in key order. */
struct prefix_walk {
	const char *prefix;
	void (*fn)(void *ctx, const char *name, const char *val, size_t vlen);
	void *ctx;
	size_t count;
};

static int
prefix_walk_fn(void *arg, const void *key, size_t klen, const void *val,
               size_t vlen)
{
	struct prefix_walk *w = arg;
	size_t plen = strlen(w->prefix);
	char name[STORE_KV_KEY_MAX + 1];

	if (klen < plen || memcmp(key, w->prefix, plen) != 0)
		return 1; /* past the prefix: done */
	memcpy(name, (const char *)key + plen, klen - plen);
	name[klen - plen] = '\0';
	w->fn(w->ctx, name, val, vlen);
	w->count++;
	return 0;
}

static int
prefix_walk(struct pan *p, struct prefix_walk *w, struct error *err)
{
	return store_kv_foreach_from(p->st, STORE_TABLE_CONFIG, w->prefix,
	                             strlen(w->prefix), prefix_walk_fn, w,
	                             err) == -1
	           ? -1
	           : 0;
}

/* STORE_OK, STORE_NOT_FOUND or -1: is prefix+name in the config table? */
static int
config_has(struct pan *p, const char *prefix, const char *name,
           struct error *err)
{
	char key[STORE_KV_KEY_MAX + 1];
	uint8_t *val;
	size_t vlen;
	int rc;

	snprintf(key, sizeof(key), "%s%s", prefix, name);
	rc = store_kv_get(p->st, STORE_TABLE_CONFIG, key, strlen(key), &val,
	                  &vlen, err);
	if (rc == STORE_OK)
		free(val);
	return rc;
}

static void
user_print(void *ctx, const char *name, const char *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	fprintf(ctx, "%s\n", name);
}

int
eventlog_user(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	Iselab__Event ev = ISELAB__EVENT__INIT;
	Iselab__UserSet us = ISELAB__USER_SET__INIT;
	struct error err = {{0}};
	const char *verb = argc >= 2 ? argv[1] : "";
	int had;

	if (argc < 2) {
		fputs(USER_USAGE, errf);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(verb, "list") == 0) {
		struct prefix_walk w = {ENROLL_USER_PREFIX, user_print, out, 0};

		if (argc != 2) {
			fprintf(errf, "pan user list: unexpected argument "
			              "'%s'\n" USER_USAGE,
			        argv[2]);
			return PAN_EXIT_USAGE;
		}
		if (prefix_walk(p, &w, &err) == -1) {
			fprintf(errf, "pan user list: %s\n", err.msg);
			return PAN_EXIT_FAIL;
		}
		if (w.count == 0)
			fprintf(out, "No enrollment users.\n");
		return PAN_EXIT_OK;
	}
	/* add NAME --record REC (the client hashed the password) */
	if (strcmp(verb, "add") == 0 &&
	    (argc != 5 || strcmp(argv[3], "--record") != 0)) {
		fprintf(errf, "pan user add: one user name\n" USER_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(verb, "remove") == 0 && argc != 3) {
		fprintf(errf, "pan user remove: one user name\n" USER_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(verb, "add") != 0 && strcmp(verb, "remove") != 0) {
		fprintf(errf, "pan user: unknown command '%s'\n" USER_USAGE,
		        verb);
		return PAN_EXIT_USAGE;
	}
	if (enroll_user_name_check(argv[2], &err) == -1) {
		fprintf(errf, "pan user %s: %s\n", verb, err.msg);
		return PAN_EXIT_USAGE;
	}
	if ((had = config_has(p, ENROLL_USER_PREFIX, argv[2], &err)) == -1) {
		fprintf(errf, "pan user %s: %s\n", verb, err.msg);
		return PAN_EXIT_FAIL;
	}
	if (strcmp(verb, "add") == 0) {
		us.name = argv[2];
		us.record = argv[4];
		ev.change_case = ISELAB__EVENT__CHANGE_USER_SET;
		ev.user_set = &us;
	} else {
		if (had == STORE_NOT_FOUND) {
			fprintf(errf, "pan user remove: no enrollment user "
			              "%s\n",
			        argv[2]);
			return PAN_EXIT_FAIL;
		}
		ev.change_case = ISELAB__EVENT__CHANGE_USER_DELETE;
		ev.user_delete = argv[2];
	}
	if (eventlog_commit(p, &ev, NULL, &err) == -1) {
		fprintf(errf, "pan user %s: %s\n", verb, err.msg);
		return PAN_EXIT_FAIL;
	}
	if (strcmp(verb, "add") == 0)
		fprintf(out, "enrollment user %s %s (event %" PRIu64 ")\n",
		        argv[2], had == STORE_OK ? "updated" : "added",
		        ev.seq);
	else
		fprintf(out, "enrollment user %s removed (event %" PRIu64 ")\n",
		        argv[2], ev.seq);
	return PAN_EXIT_OK;
}

/* Options of `template add`, as template record keys. */
static const struct {
	const char *opt, *key;
} template_opts[] = {
    {"--profile", "profile"}, {"--validity", "validity"},
    {"--key-types", "key-types"}, {"--keygen", "keygen"},
    {"--pop", "pop"},         {"--require-cn", "require-cn"},
};

static void
validity_text(time_t v, char *buf, size_t len)
{
	if (v % 86400 == 0)
		snprintf(buf, len, "%lldd", (long long)(v / 86400));
	else if (v % 3600 == 0)
		snprintf(buf, len, "%lldh", (long long)(v / 3600));
	else
		snprintf(buf, len, "%llds", (long long)v);
}

static void
template_row(FILE *out, const struct est_template *t)
{
	char validity[32], types[128] = "";
	size_t used = 0;
	int k;

	validity_text(t->validity, validity, sizeof(validity));
	for (k = 0; k < KEY_TYPE_COUNT; k++)
		if (t->key_types & EST_KEY_BIT(k))
			used += (size_t)snprintf(
			    types + used, sizeof(types) - used, "%s%s",
			    used > 0 ? "," : "",
			    key_type_name((enum key_type)k));
	fprintf(out, "%-40s %-10s %-9s %-9s %s  %s\n", t->name,
	        cert_profile_name(t->profile), validity,
	        t->pop == EST_POP_OFF        ? "off"
	        : t->pop == EST_POP_REQUIRED ? "required"
	                                     : "optional",
	        t->require_cn ? "yes" : "no ", types);
}

static void
template_print(void *ctx, const char *name, const char *val, size_t vlen)
{
	struct est_template t;
	struct error err;
	char *text;

	if ((text = strndup(val, vlen)) == NULL)
		return;
	if (enroll_template_parse(name, text, &t, &err) == 0)
		template_row(ctx, &t);
	else
		fprintf(ctx, "%-40s (unreadable: %s)\n", name, err.msg);
	free(text);
}

int
eventlog_template(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	Iselab__Event ev = ISELAB__EVENT__INIT;
	Iselab__TemplateSet ts = ISELAB__TEMPLATE_SET__INIT;
	struct est_template t;
	struct error err = {{0}};
	const char *verb = argc >= 2 ? argv[1] : "", *label = NULL;
	char text[ENROLL_TEMPLATE_MAX], norm[ENROLL_TEMPLATE_MAX];
	size_t used = 0, k;
	int i, had;

	if (argc < 2) {
		fputs(TEMPLATE_USAGE, errf);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(verb, "list") == 0) {
		struct prefix_walk w = {ENROLL_TEMPLATE_PREFIX, template_print,
		                        out, 0};

		if (argc != 2) {
			fprintf(errf, "pan template list: unexpected argument "
			              "'%s'\n" TEMPLATE_USAGE,
			        argv[2]);
			return PAN_EXIT_USAGE;
		}
		fprintf(out, "%-40s %-10s %-9s %-9s %s  %s\n", "LABEL",
		        "PROFILE", "VALIDITY", "POP", "CN", "KEY TYPES");
		enroll_template_default(&t);
		template_row(out, &t);
		if (prefix_walk(p, &w, &err) == -1) {
			fprintf(errf, "pan template list: %s\n", err.msg);
			return PAN_EXIT_FAIL;
		}
		return PAN_EXIT_OK;
	}
	if (strcmp(verb, "add") != 0 && strcmp(verb, "remove") != 0) {
		fprintf(errf, "pan template: unknown command '%s'\n" TEMPLATE_USAGE,
		        verb);
		return PAN_EXIT_USAGE;
	}
	text[0] = '\0';
	for (i = 2; i < argc; i++) {
		if (argv[i][0] != '-') {
			if (label != NULL) {
				fprintf(errf, "pan template %s: unexpected "
				              "argument '%s'\n" TEMPLATE_USAGE,
				        verb, argv[i]);
				return PAN_EXIT_USAGE;
			}
			label = argv[i];
			continue;
		}
		for (k = 0; k < ARRAY_SIZE(template_opts); k++)
			if (strcmp(argv[i], template_opts[k].opt) == 0)
				break;
		if (k == ARRAY_SIZE(template_opts) ||
		    strcmp(verb, "add") != 0 || i + 1 >= argc) {
			fprintf(errf, "pan template %s: %s '%s'\n" TEMPLATE_USAGE,
			        verb,
			        k == ARRAY_SIZE(template_opts)
			            ? "unknown option"
			            : "needs a value:",
			        argv[i]);
			return PAN_EXIT_USAGE;
		}
		i++;
		if (strchr(argv[i], '\n') != NULL) {
			fprintf(errf, "pan template add: a value is one line\n");
			return PAN_EXIT_USAGE;
		}
		used += (size_t)snprintf(text + used, sizeof(text) - used,
		                         "%s = %s\n", template_opts[k].key,
		                         argv[i]);
		if (used >= sizeof(text)) {
			fprintf(errf, "pan template add: too long\n");
			return PAN_EXIT_USAGE;
		}
	}
	if (label == NULL) {
		fprintf(errf, "pan template %s: which label?\n" TEMPLATE_USAGE,
		        verb);
		return PAN_EXIT_USAGE;
	}
	if (enroll_label_check(label, &err) == -1) {
		fprintf(errf, "pan template %s: %s\n", verb, err.msg);
		return PAN_EXIT_USAGE;
	}
	if ((had = config_has(p, ENROLL_TEMPLATE_PREFIX, label, &err)) == -1) {
		fprintf(errf, "pan template %s: %s\n", verb, err.msg);
		return PAN_EXIT_FAIL;
	}
	if (strcmp(verb, "add") == 0) {
		/* Check it whole, then keep it whole: every key spelled out. */
		if (enroll_template_parse(label, text, &t, &err) == -1 ||
		    enroll_template_format(&t, norm, sizeof(norm), &err) == -1) {
			fprintf(errf, "pan template add: %s\n", err.msg);
			return PAN_EXIT_USAGE;
		}
		ts.label = (char *)label;
		ts.text = norm;
		ev.change_case = ISELAB__EVENT__CHANGE_TEMPLATE_SET;
		ev.template_set = &ts;
	} else {
		if (had == STORE_NOT_FOUND) {
			fprintf(errf, "pan template remove: no template %s\n",
			        label);
			return PAN_EXIT_FAIL;
		}
		ev.change_case = ISELAB__EVENT__CHANGE_TEMPLATE_DELETE;
		ev.template_delete = (char *)label;
	}
	if (eventlog_commit(p, &ev, NULL, &err) == -1) {
		fprintf(errf, "pan template %s: %s\n", verb, err.msg);
		return PAN_EXIT_FAIL;
	}
	fprintf(out, "template %s %s (event %" PRIu64 ")\n", label,
	        strcmp(verb, "remove") == 0 ? "removed"
	        : had == STORE_OK           ? "updated"
	                                    : "added",
	        ev.seq);
	return PAN_EXIT_OK;
}
