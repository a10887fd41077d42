/*
 * psn run: the PSN daemon in the foreground.
 *
 * The shared member daemon (join_run_main(), common/join.c) keeps the
 * node's link to the PAN, its store, the control socket and the loop.
 * What is the PSN's own comes in through its hooks: the outbox that
 * delivers the certificates this node issued to the PAN (common/outbox.h),
 * and the place where the CA service, the EST server and the OCSP
 * responder are started and supervised as forked processes (start,
 * child_exited, stop, service).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "certwatch.h"
#include "events.h"
#include "join.h"
#include "log.h"
#include "node.h"
#include "outbox.h"
#include "psn.h"
#include "member_rootchain.h"
#include "registry.pb-c.h"
#include "services.h"
#include "store.h"
#include "util.h"

static const char *const psn_certs[] = {
    "endpoint-sub-ca.crt", "ocsp-responder.crt", "est-server.crt",
    "est-client.crt",      "root-ca.crt",        NULL,
};
static const char *const psn_cert_labels[] = {
    "Endpoint Sub CA", "OCSP Responder", "EST server",
    "EST client",      "Root CA",        NULL,
};
static const char *const psn_services[] = {
    "Certificate Authority Service",
    "EST Service",
    "OCSP Responder",
    "Provisioning Service",
    NULL,
};

/*
 * The certificates whose end the PAN hears of (issue 8 item 3): the PAN's
 * Root CA and Node CA are the PAN's to watch.  The EST server and client
 * certificates are end-entity certificates, outside the product's alarm.
 */
static const struct certwatch_cert psn_expiry[] = {
    {"Endpoint Sub CA", NODE_CA_DIR "/endpoint-sub-ca.crt"},
    {"OCSP Responder", NODE_CA_DIR "/ocsp-responder.crt"},
    {NULL, NULL},
};

const struct join_role psn_role = {
    .role = NODE_ROLE_PSN,
    .name = "psn",
    .title = "Policy Service Node",
    .certs = psn_certs,
    .cert_labels = psn_cert_labels,
    .services = psn_services,
    .expiry = psn_expiry,
};

/* What the PSN's hooks keep between calls. */
/*
 * Alarms the PSN raises on the PAN when a service stays down (ISE-CA-EST.md,
 * "Service status": the dashboard shows the CA and EST services down).  A
 * restart within the grace time (the supervisor's first backoffs) raises
 * nothing.
 */
#define SERVICE_ALARM_GRACE_MS 3000
static const struct {
	const char *title; /* psn_services_state() title */
	const char *alarm;
} service_alarms[] = {
    {"Certificate Authority Service", "CA Service Down"},
    {"EST Service", "EST Service Down"},
    {"OCSP Responder", "OCSP Responder Down"},
};

struct psn_run {
	struct outbox_sender outbox; /* set up on the first tick */
	bool outbox_ready;           /* the store is open: outbox set up */
	struct psn_services *svcs;   /* CA service + EST server; NULL: off */
	int64_t down_since[3];       /* mono ms a service left "running" */
	bool session;                /* session services on (the settings) */
	bool ca;                     /* CA service enabled (the settings) */
	struct member_rootchain chain; /* renewal after a root CA change */
	bool chain_read;             /* chain.target read from the store */
};

/*
 * Before the ZeroMQ context and the store exist, so the forked services
 * inherit neither.  CA and EST services run only where session services
 * are on (ISE-CA-EST.md, "Service status").
 */
/*
 * The node's settings: those the PAN's events set last (in the store),
 * else the join's.  Read with the store opened and closed again here,
 * before any fork (store.h).
 */
static void
psn_settings(struct join_daemon *d, struct psn_run *r)
{
	struct events_settings es;
	struct store_opts opts = {.read_only = true};
	struct store *st = NULL;
	struct error e = {{0}};
	char path[4096];

	r->session = d->deployment.session_services;
	r->ca = true;
	if (node_path(path, sizeof(path), d->datadir, NODE_STORE_DIR, &e) ==
	        -1 ||
	    store_open(path, &opts, &st, &e) == -1) {
		log_warn(LOG_MAIN, "node settings: %s; the join's hold",
		         e.msg);
		return;
	}
	if (events_settings(st, d->id.hostname, &es, &e) == 1) {
		r->session = es.session_services;
		r->ca = !es.ca_disabled;
	}
	store_close(st);
}

static void
psn_log_settings(const struct join_daemon *d, const struct psn_run *r)
{
	if (!r->session)
		log_info(LOG_MAIN,
		         "session services are off on %s: the CA, EST and "
		         "provisioning services do not run, the OCSP responder "
		         "does",
		         d->id.hostname);
	else if (!r->ca)
		log_info(LOG_MAIN,
		         "the CA service is disabled on %s: neither it nor the "
		         "EST server runs",
		         d->id.hostname);
}

static int
psn_start(struct join_daemon *d, void *arg, const char *pass, size_t passlen,
          struct error *err)
{
	struct psn_run *r = arg;

	psn_settings(d, r);
	psn_log_settings(d, r);
	member_rootchain_init(&r->chain, d->datadir, d->id.hostname,
	                      NODE_ROLE_PSN,
	                      d->deployment.hierarchy == NODE_OCSP_LEGACY);
	return psn_services_start_as(&r->svcs, d->datadir, &d->id, d->cfg, pass,
	                             passlen, r->session, r->ca, err);
}

/* A NodeSettings event for this node: apply it to the services now. */
static void
psn_applied(struct join_daemon *d, void *arg, const Iselab__Event *ev)
{
	struct psn_run *r = arg;
	const Iselab__NodeSettings *ns;

	if (ev->change_case == ISELAB__EVENT__CHANGE_CA_CHAIN) {
		member_rootchain_target(&r->chain, d->st);
		return;
	}
	if (ev->change_case != ISELAB__EVENT__CHANGE_NODE_SETTINGS ||
	    strcmp(ev->node_settings->hostname, d->id.hostname) != 0)
		return;
	ns = ev->node_settings;
	if (r->session == ns->session_services && r->ca == !ns->ca_disabled)
		return;
	r->session = ns->session_services;
	r->ca = !ns->ca_disabled;
	psn_log_settings(d, r);
	psn_services_set(r->svcs, r->session, r->ca);
}

static void
psn_child_exited(struct join_daemon *d, void *arg, pid_t pid, int status)
{
	struct psn_run *r = arg;

	(void)d;
	if (member_rootchain_owns(&r->chain, pid))
		member_rootchain_exited(&r->chain, status);
	else if (r->svcs != NULL)
		(void)psn_services_child_exited(r->svcs, pid, status);
}

static const char *
psn_service(const struct join_daemon *d, void *arg, size_t i, pid_t *pid)
{
	struct psn_run *r = arg;

	if (r->svcs == NULL)
		return NULL;
	return psn_services_state(r->svcs, d->role->services[i], pid);
}

static void
psn_stop(struct join_daemon *d, void *arg)
{
	struct psn_run *r = arg;

	(void)d;
	psn_services_stop(r->svcs);
	r->svcs = NULL;
}

static int
psn_outbox_send(void *ctx, const Iselab__Envelope *env, struct error *err)
{
	struct join_daemon *d = ctx;

	return join_link_send(d->link, env, err);
}

/* The store opens after start(): the outbox begins on the first tick. */
/* Raise or clear the service alarms; ms until a grace time ends, or -1. */
static int64_t
psn_service_alarms(struct join_daemon *d, struct psn_run *r, int64_t now)
{
	char text[256];
	const char *state;
	int64_t next = -1, left;
	pid_t pid;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(service_alarms); i++) {
		state = psn_services_state(r->svcs, service_alarms[i].title,
		                           &pid);
		/* Disabled (session services off) is not down. */
		if (state == NULL || strcmp(state, "running") == 0 ||
		    strcmp(state, "disabled") == 0) {
			r->down_since[i] = 0;
			if (join_link_alarm_clear(d->link,
			                          service_alarms[i].alarm) == 1)
				log_info(LOG_MAIN, "%s is running again: alarm "
				                   "cleared",
				         service_alarms[i].title);
			continue;
		}
		if (r->down_since[i] == 0)
			r->down_since[i] = now;
		left = r->down_since[i] + SERVICE_ALARM_GRACE_MS - now;
		if (left > 0) {
			if (next < 0 || left < next)
				next = left;
			continue;
		}
		snprintf(text, sizeof(text), "%s on %s is %s", service_alarms[i].title,
		         d->id.hostname, state);
		if (join_link_alarm_set(d->link, service_alarms[i].alarm,
		                        ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_CRITICAL,
		                        text) == 1)
			log_warn(LOG_MAIN, "%s", text);
	}
	return next;
}

static int64_t
psn_tick(struct join_daemon *d, void *arg, int64_t now)
{
	struct psn_run *r = arg;

	int64_t next, svc;
	struct member_handover ho[MEMBER_HANDOVERS_MAX];
	const char *pass;
	size_t passlen, nho;
	bool installed;

	if (!r->chain_read) {
		member_rootchain_target(&r->chain, d->st);
		r->chain_read = true;
	}
	pass = psn_services_pass(r->svcs, &passlen);
	nho = psn_services_handovers(r->svcs, ho);
	svc = member_rootchain_tick(&r->chain, d->link, pass, passlen, ho, nho,
	                            now, &installed);
	if (installed)
		psn_services_renewed(r->svcs);
	if (!r->outbox_ready) {
		outbox_sender_init(&r->outbox, d->st, d->id.hostname, 0);
		r->outbox_ready = true;
	}
	next = outbox_sender_tick(
	    &r->outbox, join_link_state(d->link) == JOIN_LINK_CONNECTED, now,
	    psn_outbox_send, d);
	if (svc >= 0 && (next < 0 || svc < next))
		next = svc;
	if (r->svcs != NULL) {
		psn_services_tick(r->svcs);
		svc = psn_services_next_ms(r->svcs);
		if (svc >= 0 && (next < 0 || svc < next))
			next = svc;
		svc = psn_service_alarms(d, r, now);
		if (svc >= 0 && (next < 0 || svc < next))
			next = svc;
	}
	return next;
}

static int
psn_message(struct join_daemon *d, void *arg, const Iselab__Envelope *env)
{
	struct psn_run *r = arg;
	struct error err = {{0}};

	(void)d;
	if (member_rootchain_response(&r->chain, env) == 1)
		return 1;
	if (env->body_case != ISELAB__ENVELOPE__BODY_OUTBOX_ACK ||
	    !r->outbox_ready)
		return 0;
	if (outbox_sender_ack(&r->outbox, env, time_mono_ms(), &err) == -1)
		log_error(LOG_MESSAGING, "outbox ack from the PAN: %s",
		          err.msg);
	return 1;
}

static void
psn_status(const struct join_daemon *d, void *arg, FILE *fp)
{
	struct psn_run *r = arg;
	struct error err = {{0}};
	size_t n, refused;

	if (d->st == NULL || outbox_count(d->st, &n, &err) == -1 ||
	    outbox_refused_count(d->st, &refused, &err) == -1) {
		fprintf(fp, "Outbox:          ? (%s)\n", err.msg);
		return;
	}
	fprintf(fp, "Outbox:          %zu certificate%s waiting for the PAN", n,
	        n == 1 ? "" : "s");
	if (r->outbox_ready && r->outbox.inflight_id != 0)
		fprintf(fp, ", batch %" PRIu64 " (%zu) awaiting its ack",
		        r->outbox.inflight_id, r->outbox.inflight_count);
	fprintf(fp, "\n");
	/* Only when there are any: the PAN refused them for good (the log
	 * says why); they are in the store, not on the PAN. */
	if (refused > 0)
		fprintf(fp,
		        "Outbox refused:  %zu certificate%s the PAN refused "
		        "(see the log)\n",
		        refused, refused == 1 ? "" : "s");
}

int
psn_run_main(int argc, char **argv)
{
	static struct psn_run run;
	/*
	 * The CA service and the EST server are started in .start and
	 * supervised in .tick and .child_exited (join.h, services.h).
	 */
	static const struct join_daemon_hooks hooks = {
	    .arg = &run,
	    .config = psn_services_config,
	    .start = psn_start,
	    .tick = psn_tick,
	    .message = psn_message,
	    .child_exited = psn_child_exited,
	    .applied = psn_applied,
	    .status = psn_status,
	    .service = psn_service,
	    .stop = psn_stop,
	};

	return join_run_main(&psn_role, &hooks, argc, argv);
}
