/*
 * primary: what makes an admin node the primary of its deployment, and
 * what makes it stop being one (docs/san.md "Promotion").
 *
 * - The deployment epoch.  A PAN starts at 1; every promotion of a SAN
 *   raises it (`san promote` writes it into the SAN's deployment.conf).
 *   Every heartbeat ack and every refusal of an admin node carries it, and
 *   a node never follows an admin node whose epoch is lower than the one
 *   it knows: a lower epoch never wins.
 * - The other admin nodes (the secondaries): a SAN reports in its
 *   heartbeats where it would serve once promoted; the deployment config
 *   with every admin node, their endpoints and CURVE keys travels as a
 *   deployment event, so every PSN learns them and keeps them in its
 *   deployment.conf, ready to look for a new primary when this one stops
 *   answering.
 * - Superseded: an admin node that hears of a higher epoch than its own
 *   (a heartbeat that says so, or the answer of another admin node it
 *   probes every heartbeat interval) is no longer the primary.  It keeps
 *   that in its store, refuses admin writes ("not primary: epoch N < M,
 *   rejoin as secondary") and answers every node ERROR_NOT_PRIMARY, so
 *   that two primaries never accept writes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "events.h"
#include "join.h"
#include "log.h"
#include "pan.h"
#include "util.h"

/* Config key: "EPOCH HOST", the higher epoch this node heard of. */
#define PRIMARY_SUPERSEDED_KEY "deployment/superseded"
/* Reconnect interval of a probe, and its most (ZeroMQ backoff). */
#define PROBE_RECONNECT_MS     500
#define PROBE_RECONNECT_MAX_MS 5000

/* An admin node that is not us, from a deployment config. */
static void
admin_take(struct pan *p, const char *host, const char *msg, const char *ev,
           const uint8_t *curve)
{
	struct pan_admin *a = NULL;
	struct pan_node *n;
	size_t i;

	if (strcmp(host, p->id.hostname) == 0 || msg == NULL || msg[0] == '\0')
		return;
	/* Removed (pan node remove): never an admin node again. */
	if ((n = registry_find(p, host)) != NULL && n->link == PAN_LINK_REMOVED)
		return;
	for (i = 0; i < p->nadmins; i++)
		if (strcmp(p->admins[i].hostname, host) == 0)
			a = &p->admins[i];
	if (a == NULL) {
		if (p->nadmins == PAN_ADMINS_MAX)
			return;
		a = &p->admins[p->nadmins++];
		memset(a, 0, sizeof(*a));
	} else if (strcmp(a->messaging, msg) != 0 ||
	           memcmp(a->curve, curve, CURVE_KEY_LEN) != 0) {
		/* Moved: the probe goes to the new place. */
		if (a->probe != NULL)
			zmq_close(a->probe);
		a->probe = NULL;
	}
	snprintf(a->hostname, sizeof(a->hostname), "%s", host);
	snprintf(a->messaging, sizeof(a->messaging), "%s", msg);
	snprintf(a->events, sizeof(a->events), "%s", ev != NULL ? ev : "");
	memcpy(a->curve, curve, CURVE_KEY_LEN);
}

int
primary_load(struct pan *p, struct error *err)
{
	Iselab__DeploymentConfig *c = NULL;
	uint8_t *val = NULL;
	size_t vlen, i;
	int rc;

	p->epoch = 1;
	if (events_deployment(p->st, &c, err) == -1)
		return -1;
	if (c != NULL) {
		p->epoch = c->epoch;
		for (i = 0; i < c->n_admin_nodes; i++) {
			const Iselab__AdminNode *a = c->admin_nodes[i];

			admin_take(p, a->hostname, a->messaging_endpoint,
			           a->events_endpoint, a->curve_public_key.data);
		}
		iselab__deployment_config__free_unpacked(c, NULL);
	}
	/*
	 * A promoted SAN: the epoch and the old primary `san promote` wrote,
	 * until its first deployment event of that epoch is in the log; from
	 * then on the log is what counts (an admin node removed since stays
	 * removed).
	 */
	if (p->id.role == NODE_ROLE_SAN) {
		struct join_deployment d;

		if (join_deployment_read(p->datadir, &d, err) == -1)
			return -1;
		if (d.epoch > p->epoch) {
			p->epoch = d.epoch;
			for (i = 0; i < d.nadmin; i++)
				admin_take(p, d.admin[i].hostname,
				           d.admin[i].messaging, d.admin[i].events,
				           d.admin[i].curve_public);
		}
	}
	rc = store_kv_get(p->st, STORE_TABLE_CONFIG, PRIMARY_SUPERSEDED_KEY,
	                  strlen(PRIMARY_SUPERSEDED_KEY), &val, &vlen, err);
	if (rc == STORE_OK) {
		char text[NODE_HOSTNAME_MAX + 32];
		unsigned long long e = 0;

		snprintf(text, sizeof(text), "%.*s", (int)vlen, (char *)val);
		free(val);
		if (sscanf(text, "%llu %64s", &e, p->superseded_by) == 2 &&
		    e > p->epoch)
			p->superseded = e;
	} else if (rc != STORE_NOT_FOUND)
		return -1;
	log_info(LOG_MAIN, "deployment epoch %" PRIu64 "; %zu other admin "
	                   "node(s)%s",
	         p->epoch, p->nadmins,
	         p->superseded != 0 ? "; NOT the primary (superseded)" : "");
	return 0;
}

/* The deployment config as this primary states it: us, then the others. */
void
primary_config(struct pan *p, Iselab__DeploymentConfig *cfg,
               Iselab__AdminNode nodes[PAN_ADMINS_MAX + 1],
               Iselab__AdminNode *ptrs[PAN_ADMINS_MAX + 1])
{
	size_t i;

	iselab__deployment_config__init(cfg);
	iselab__admin_node__init(&nodes[0]);
	nodes[0].hostname = p->id.hostname;
	nodes[0].role = ISELAB__ROLE__ROLE_PAN;
	nodes[0].messaging_endpoint = p->messaging_endpoint;
	nodes[0].events_endpoint = p->events_endpoint;
	nodes[0].curve_public_key.data = p->curve_public;
	nodes[0].curve_public_key.len = CURVE_KEY_LEN;
	ptrs[0] = &nodes[0];
	for (i = 0; i < p->nadmins; i++) {
		iselab__admin_node__init(&nodes[i + 1]);
		nodes[i + 1].hostname = p->admins[i].hostname;
		nodes[i + 1].role = ISELAB__ROLE__ROLE_SAN;
		nodes[i + 1].messaging_endpoint = p->admins[i].messaging;
		nodes[i + 1].events_endpoint = p->admins[i].events;
		nodes[i + 1].curve_public_key.data = p->admins[i].curve;
		nodes[i + 1].curve_public_key.len = CURVE_KEY_LEN;
		ptrs[i + 1] = &nodes[i + 1];
	}
	cfg->deployment_id = p->id.deployment_id;
	cfg->epoch = p->epoch;
	cfg->n_admin_nodes = p->nadmins + 1;
	cfg->admin_nodes = ptrs;
	cfg->ocsp_hierarchy = p->id.ocsp_hierarchy == NODE_OCSP_LEGACY
	                          ? ISELAB__OCSP_HIERARCHY__OCSP_HIERARCHY_LEGACY
	                          : ISELAB__OCSP_HIERARCHY__OCSP_HIERARCHY_RFC6960;
}

static bool
str_eq(const char *a, const char *b)
{
	return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* The two configs name the same admin nodes, roles and epoch. */
static bool
config_same(const Iselab__DeploymentConfig *a,
            const Iselab__DeploymentConfig *b)
{
	size_t i;

	if (a->epoch != b->epoch || a->n_admin_nodes != b->n_admin_nodes)
		return false;
	for (i = 0; i < a->n_admin_nodes; i++) {
		const Iselab__AdminNode *x = a->admin_nodes[i];
		const Iselab__AdminNode *y = b->admin_nodes[i];

		if (!str_eq(x->hostname, y->hostname) || x->role != y->role ||
		    !str_eq(x->messaging_endpoint, y->messaging_endpoint) ||
		    !str_eq(x->events_endpoint, y->events_endpoint) ||
		    x->curve_public_key.len != y->curve_public_key.len ||
		    memcmp(x->curve_public_key.data, y->curve_public_key.data,
		           x->curve_public_key.len) != 0)
			return false;
	}
	return true;
}

int
primary_sync(struct pan *p, struct error *err)
{
	Iselab__DeploymentConfig cfg, *stored = NULL;
	Iselab__AdminNode nodes[PAN_ADMINS_MAX + 1];
	Iselab__AdminNode *ptrs[PAN_ADMINS_MAX + 1];
	Iselab__Event ev = ISELAB__EVENT__INIT;
	int rc = -1, got;

	/* A superseded node states nothing: it is not the primary. */
	if (p->superseded != 0)
		return 0;
	if ((got = events_deployment(p->st, &stored, err)) == -1)
		return -1;
	primary_config(p, &cfg, nodes, ptrs);
	/* A lone PAN of epoch 1 has nothing to tell that the join did not. */
	if (got == 0 && p->nadmins == 0 && p->epoch == 1)
		return 0;
	if (stored != NULL && config_same(stored, &cfg)) {
		rc = 0;
		goto out;
	}
	ev.change_case = ISELAB__EVENT__CHANGE_DEPLOYMENT;
	ev.deployment = &cfg;
	if (eventlog_commit(p, &ev, NULL, err) == -1)
		goto out;
	rc = 0;
out:
	if (stored != NULL)
		iselab__deployment_config__free_unpacked(stored, NULL);
	return rc;
}

/* A promoted SAN's deployment.conf without the admin node host. */
static int
conf_drop_admin(struct pan *p, const char *host, struct error *err)
{
	struct join_deployment d;
	size_t i, k = 0;

	if (join_deployment_read(p->datadir, &d, err) == -1)
		return -1;
	for (i = 0; i < d.nadmin; i++)
		if (strcmp(d.admin[i].hostname, host) != 0)
			d.admin[k++] = d.admin[i];
	if (k == d.nadmin)
		return 0;
	d.nadmin = k;
	return join_deployment_write(p->datadir, &d, err);
}

int
primary_admin_remove(struct pan *p, const char *host, struct error *err)
{
	struct pan_admin gone;
	size_t i;

	for (i = 0; i < p->nadmins; i++)
		if (strcmp(p->admins[i].hostname, host) == 0)
			break;
	if (i == p->nadmins)
		return 0;
	if (p->admins[i].probe != NULL)
		zmq_close(p->admins[i].probe);
	p->admins[i].probe = NULL;
	gone = p->admins[i];
	memmove(&p->admins[i], &p->admins[i + 1],
	        (p->nadmins - i - 1) * sizeof(p->admins[0]));
	p->nadmins--;
	/*
	 * The log first: once the event is in, the removal stands.  No event,
	 * no removal: it stays an admin node, and the command can be retried.
	 */
	if (primary_sync(p, err) == -1) {
		p->admins[p->nadmins++] = gone;
		return -1;
	}
	if (p->id.role == NODE_ROLE_SAN && conf_drop_admin(p, host, err) == -1)
		return -1;
	log_info(LOG_MAIN, "%s is no admin node of the deployment any more "
	                   "(event %" PRIu64 ")",
	         host, p->event_seq);
	return 1;
}

void
primary_superseded(struct pan *p, uint64_t epoch, const char *primary)
{
	struct error err = {{0}};
	struct store_batch *b;
	char text[NODE_HOSTNAME_MAX + 32];

	if (epoch <= p->epoch || epoch <= p->superseded)
		return;
	p->superseded = epoch;
	snprintf(p->superseded_by, sizeof(p->superseded_by), "%s",
	         primary != NULL && primary[0] != '\0' ? primary : "?");
	log_warn(LOG_MAIN,
	         "not primary: epoch %" PRIu64 " < %" PRIu64
	         " (primary %s); admin writes refused, nodes told so; rejoin "
	         "this node as secondary",
	         p->epoch, epoch, p->superseded_by);
	snprintf(text, sizeof(text), "%" PRIu64 " %s", epoch,
	         p->superseded_by);
	if ((b = store_batch_new()) == NULL ||
	    store_batch_kv_put(b, STORE_TABLE_CONFIG, PRIMARY_SUPERSEDED_KEY,
	                       strlen(PRIMARY_SUPERSEDED_KEY), text,
	                       strlen(text)) == -1 ||
	    store_apply(p->st, b, &err) != STORE_OK)
		log_error(LOG_MAIN, "cannot record the higher epoch: %s",
		          err.msg[0] != '\0' ? err.msg : "out of memory");
	store_batch_free(b);
}

bool
primary_admin_key(const struct pan *p, const unsigned char key[CURVE_KEY_LEN])
{
	size_t i;

	for (i = 0; i < p->nadmins; i++)
		if (memcmp(p->admins[i].curve, key, CURVE_KEY_LEN) == 0)
			return true;
	return false;
}

bool
primary_refuse(struct pan *p, const char *cmd, FILE *errf)
{
	if (p->superseded == 0)
		return false;
	fprintf(errf,
	        "pan %s: not primary: epoch %" PRIu64 " < %" PRIu64
	        ", rejoin as secondary (the primary is %s)\n",
	        cmd, p->epoch, p->superseded, p->superseded_by);
	return true;
}

void
primary_error(const struct pan *p, Iselab__Error *e)
{
	e->epoch = p->superseded != 0 ? p->superseded : p->epoch;
	e->primary = (char *)(p->superseded != 0 ? p->superseded_by
	                                         : p->id.hostname);
}

void
primary_san_report(struct pan *p, const struct pan_node *n,
                   const Iselab__Heartbeat *hb)
{
	struct error err = {{0}};
	size_t before = p->nadmins;
	char old[PAN_ENDPOINT_MAX] = "", oldev[PAN_ENDPOINT_MAX] = "";
	size_t i;

	if (n->role != NODE_ROLE_SAN || hb->messaging_endpoint == NULL ||
	    hb->messaging_endpoint[0] == '\0' ||
	    strlen(hb->messaging_endpoint) >= PAN_ENDPOINT_MAX ||
	    (hb->events_endpoint != NULL &&
	     strlen(hb->events_endpoint) >= PAN_ENDPOINT_MAX))
		return;
	for (i = 0; i < p->nadmins; i++)
		if (strcmp(p->admins[i].hostname, n->hostname) == 0) {
			snprintf(old, sizeof(old), "%s", p->admins[i].messaging);
			snprintf(oldev, sizeof(oldev), "%s",
			         p->admins[i].events);
		}
	admin_take(p, n->hostname, hb->messaging_endpoint, hb->events_endpoint,
	           n->curve);
	if (p->nadmins == before && strcmp(old, hb->messaging_endpoint) == 0 &&
	    str_eq(oldev, hb->events_endpoint))
		return;
	log_info(LOG_MESSAGING, "admin node %s serves at %s once promoted",
	         n->hostname, hb->messaging_endpoint);
	if (primary_sync(p, &err) == -1)
		log_error(LOG_MESSAGING, "deployment event for %s: %s",
		          n->hostname, err.msg);
}

/* A DEALER to a, with our own CURVE key (the router's). */
static void *
probe_open(struct pan *p, const struct pan_admin *a)
{
	char secret[CURVE_Z85_LEN];
	size_t len = sizeof(secret);
	int zero = 0, one = 1, ivl = PROBE_RECONNECT_MS,
	    ivl_max = PROBE_RECONNECT_MAX_MS;
	void *s;

	if (zmq_getsockopt(p->router, ZMQ_CURVE_SECRETKEY, secret, &len) == -1)
		return NULL;
	if ((s = zmq_socket(p->zctx, ZMQ_DEALER)) == NULL)
		goto out;
	if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, a->curve, CURVE_KEY_LEN) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, p->curve_public_z85,
	                   CURVE_Z85_LEN - 1) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl)) == -1 ||
	    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max,
	                   sizeof(ivl_max)) == -1 ||
	    zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof(one)) == -1 ||
	    (strchr(a->messaging, '[') != NULL &&
	     zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof(one)) == -1) ||
	    zmq_connect(s, a->messaging) == -1) {
		log_warn(LOG_MESSAGING, "probe of %s at %s: %s", a->hostname,
		         a->messaging, zmq_strerror(errno));
		zmq_close(s);
		s = NULL;
	}
out:
	secure_zero(secret, sizeof(secret));
	return s;
}

/* What an admin node answered: its epoch (and primary) is all we read. */
static void
probe_read(struct pan *p, struct pan_admin *a)
{
	struct error err = {{0}};
	Iselab__Envelope *env;
	zmq_msg_t m;

	for (;;) {
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, a->probe, ZMQ_DONTWAIT) == -1) {
			zmq_msg_close(&m);
			return;
		}
		env = msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), NULL,
		                 &err);
		zmq_msg_close(&m);
		if (env == NULL)
			continue;
		if (env->body_case == ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK)
			primary_superseded(p, env->heartbeat_ack->epoch,
			                   env->heartbeat_ack->primary);
		else if (env->body_case == ISELAB__ENVELOPE__BODY_ERROR)
			primary_superseded(p, env->error->epoch,
			                   env->error->primary);
		msg_free(env);
	}
}

void
primary_tick(struct pan *p)
{
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	struct error err = {{0}};
	int64_t now = time_mono_ms();
	uint8_t *buf;
	size_t i, len;

	for (i = 0; i < p->nadmins; i++) {
		struct pan_admin *a = &p->admins[i];

		if (a->probe == NULL && (a->probe = probe_open(p, a)) == NULL)
			continue;
		probe_read(p, a);
	}
	if (now < p->next_probe)
		return;
	p->next_probe = now + p->hb_interval_ms;
	/* A heartbeat that says our epoch: the other side learns it too. */
	msg_init(&env, 0, p->id.hostname);
	hb.sent_ms = time_now_ms();
	hb.last_event_seq = p->event_seq;
	hb.epoch = p->superseded != 0 ? p->superseded : p->epoch;
	env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	if ((buf = msg_pack(&env, &len, &err)) == NULL)
		return;
	for (i = 0; i < p->nadmins; i++)
		if (p->admins[i].probe != NULL)
			(void)zmq_send(p->admins[i].probe, buf, len,
			               ZMQ_DONTWAIT);
	free(buf);
}

void
primary_close(struct pan *p)
{
	size_t i;

	for (i = 0; i < p->nadmins; i++) {
		if (p->admins[i].probe != NULL)
			zmq_close(p->admins[i].probe);
		p->admins[i].probe = NULL;
	}
}

void
primary_status(const struct pan *p, FILE *fp)
{
	size_t i;

	if (p->superseded != 0)
		fprintf(fp,
		        "Primary:         no - not primary: epoch %" PRIu64
		        " < %" PRIu64 ", rejoin as secondary (the primary is "
		        "%s)\n",
		        p->epoch, p->superseded, p->superseded_by);
	else
		fprintf(fp, "Primary:         yes, epoch %" PRIu64 "\n",
		        p->epoch);
	for (i = 0; i < p->nadmins; i++)
		fprintf(fp, "Admin node:      %s (secondary) at %s\n",
		        p->admins[i].hostname,
		        join_endpoint_address(p->admins[i].messaging));
}
