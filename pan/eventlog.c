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
eventlog_commit(struct pan *p, Iselab__Event *ev, struct store_batch *with,
                struct error *err)
{
	struct store_batch *b = with;
	char what[128];
	int rc;

	ev->seq = p->event_seq + 1;
	ev->time_ms = time_now_ms();
	if (events_check(ev, err) == -1)
		return -1;
	if (b == NULL && (b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	if (events_batch_log(b, ev, err) == -1 ||
	    events_batch_effect(b, ev, err) == -1) {
		if (with == NULL)
			store_batch_free(b);
		return -1;
	}
	rc = store_apply(p->st, b, err);
	if (with == NULL)
		store_batch_free(b);
	if (rc != STORE_OK) {
		if (rc == STORE_EXISTS)
			error_set(err, "event %" PRIu64 " is already in the log",
			          ev->seq);
		return -1;
	}
	p->event_seq = ev->seq;
	events_describe(ev, what, sizeof(what));
	log_info(LOG_MESSAGING, "event %" PRIu64 ": %s", ev->seq, what);
	eventlog_publish(p, ev);
	return 0;
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
