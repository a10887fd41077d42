/*
 * san run: the SAN daemon in the foreground.
 *
 * The shared member daemon (join_run_main(), common/join.c) keeps the
 * node's link to the PAN, its store and the control socket.  For a SAN it
 * applies every event of the PAN's log as a replica (EVENTS_REPLICA,
 * common/events.h): users, templates, settings, and also every issued
 * certificate, node record, token and alarm, and the event itself, kept
 * in the SAN's own events table under the PAN's sequence number.  A SAN
 * that was away catches up through the member's EventsRequest.  What this
 * file adds: the replica's lag in `san status` and the views of the
 * replica (`san alarms`, `san node list`, `san cert list`), answered by
 * the daemon from its store; and, after `pan ca replace-root-chain`, the
 * renewal of the SAN's Node CA with a key made here (member_rootchain.h,
 * shared with the PSN).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.h>

#include "adminview.h"
#include "certwatch.h"
#include "events.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "member_rootchain.h"
#include "node.h"
#include "msg.h"
#include "pan.h"
#include "registry.pb-c.h"
#include "san.h"
#include "store.h"
#include "util.h"

static const char *const san_certs[] = {"node-ca.crt", "root-ca.crt", NULL};
static const char *const san_cert_labels[] = {"Node CA", "Root CA", NULL};
static const char *const san_services[] = {
    "Certificate Authority Service",
    NULL,
};

/* The PAN's Root CA is the PAN's to watch. */
static const struct certwatch_cert san_expiry[] = {
    {"Node CA", NODE_CA_DIR "/node-ca.crt"},
    {NULL, NULL},
};

const struct join_role san_role = {
    .role = NODE_ROLE_SAN,
    .name = "san",
    .title = "Secondary Administration Node",
    .certs = san_certs,
    .cert_labels = san_cert_labels,
    .services = san_services,
    .expiry = san_expiry,
};

/* How often the daemon looks whether the replica is in sync. */
#define SAN_SYNC_TICK_MS 1000

/* Least time between two log lines about nodes told "not primary". */
#define SAN_REFUSAL_LOG_MS 10000

/*
 * The SAN's own alarms: what this daemon sees of its link to the primary
 * ("Queue Link Error" while no heartbeat ack comes for heartbeat.timeout).
 * They live in memory, apart from the store, whose alarms table is the
 * primary's and written only by its events (the replica stays a copy);
 * `san alarms` shows both.  The newest SAN_LOCAL_ALARMS_MAX are kept, so
 * `san alarms --all` shows the cleared ones of this daemon's life.
 */
#define SAN_LOCAL_ALARMS_MAX 64
/* Longest host name or alarm text kept. */
#define SAN_ALARM_TEXT_MAX 256

struct san_alarm {
	Iselab__AlarmRecord rec; /* points into node and text */
	char node[SAN_ALARM_TEXT_MAX];
	char text[SAN_ALARM_TEXT_MAX];
};

/* The replica's state, in memory. */
struct san_replica {
	struct san_alarm alarms[SAN_LOCAL_ALARMS_MAX]; /* ring, raise order */
	size_t nalarms;                               /* ever raised */
	int64_t last_in_sync; /* realtime ms the replica was last in sync */
	/* Our CURVE secret (Z85) from start() until ready() binds with it. */
	char secret[CURVE_Z85_LEN];
	bool promoted;       /* `san promote` ran here: go on as the primary */
	uint64_t refused;    /* messages answered ERROR_NOT_PRIMARY */
	int64_t refused_log; /* mono ms of the last line about them */
	/*
	 * Renewal of our Node CA after a root CA chain replacement
	 * (member_rootchain.h): its worker makes the new key, so the
	 * daemon keeps the node passphrase, in a locked page of its own,
	 * wiped at stop (as the PSN's supervisor does).
	 */
	struct member_rootchain chain;
	bool chain_read; /* the store's ca-chain read once */
	struct secret pass;
};

/* The settings of either mode: pan run's keys, from D/san.conf. */
static struct config *
san_config(const char *datadir, char *const *sets, size_t nsets,
           struct error *err)
{
	return pan_run_config(datadir, SAN_CONFIG_FILE, sets, nsets, err);
}

/* The passphrase is here only now: take the CURVE secret for ready(). */

static int
san_start(struct join_daemon *d, void *arg, const char *pass, size_t passlen,
          struct error *err)
{
	struct san_replica *r = arg;
	char path[4096], pub[CURVE_Z85_LEN];
	EVP_PKEY *key;
	int rc;

	if (node_path(path, sizeof(path), d->datadir, NODE_CURVE_KEY, err) ==
	        -1 ||
	    (key = key_load(path, pass, passlen, err)) == NULL)
		return -1;
	rc = curve_z85(key, pub, r->secret, err);
	EVP_PKEY_free(key);
	if (rc == -1)
		return -1;
	member_rootchain_init(&r->chain, d->datadir, d->id.hostname,
	                      NODE_ROLE_SAN, false);
	return secret_keep(&r->pass, pass, passlen, err);
}

static void
san_stop(struct join_daemon *d, void *arg)
{
	struct san_replica *r = arg;

	(void)d;
	/* A worker still running finishes its step alone (crash-safe). */
	secret_wipe(&r->pass);
}

/* A ca-chain event: the generation our Node CA must reach. */
static void
san_applied(struct join_daemon *d, void *arg, const Iselab__Event *ev)
{
	struct san_replica *r = arg;

	if (ev->change_case == ISELAB__EVENT__CHANGE_CA_CHAIN)
		member_rootchain_target(&r->chain, d->st);
}

static int
san_message(struct join_daemon *d, void *arg, const Iselab__Envelope *env)
{
	struct san_replica *r = arg;

	(void)d;
	return member_rootchain_response(&r->chain, env);
}

static void
san_child_exited(struct join_daemon *d, void *arg, pid_t pid, int status)
{
	struct san_replica *r = arg;

	(void)d;
	if (member_rootchain_owns(&r->chain, pid))
		member_rootchain_exited(&r->chain, status);
}

/*
 * Every node that takes this secondary for the primary (a PSN whose
 * primary stopped answering, a former primary that probes) gets
 * ERROR_NOT_PRIMARY with our epoch and the primary we follow.
 */
static void
san_not_primary(struct join_daemon *d, void *arg)
{
	struct san_replica *r = arg;
	Iselab__Envelope *env, reply;
	Iselab__Error e = ISELAB__ERROR__INIT;
	struct error err = {{0}};
	zmq_msg_t rid, m;
	uint8_t *buf;
	size_t len;

	for (;;) {
		zmq_msg_init(&rid);
		if (zmq_msg_recv(&rid, d->extra, ZMQ_DONTWAIT) == -1) {
			zmq_msg_close(&rid);
			return;
		}
		env = NULL;
		zmq_msg_init(&m);
		if (zmq_msg_more(&rid) &&
		    zmq_msg_recv(&m, d->extra, ZMQ_DONTWAIT) != -1)
			env = msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m),
			                 NULL, &err);
		/* The rest of a longer message is not ours to read. */
		while (zmq_msg_more(&m) &&
		       zmq_msg_recv(&m, d->extra, ZMQ_DONTWAIT) != -1)
			;
		zmq_msg_close(&m);
		if (env != NULL) {
			msg_init(&reply, env->request_id, d->id.hostname);
			e.code = ISELAB__ERROR__CODE__ERROR_NOT_PRIMARY;
			e.message = "not primary: this is a secondary "
			            "admin node";
			e.epoch = join_link_epoch(d->link);
			e.primary = (char *)join_link_primary(d->link);
			reply.body_case = ISELAB__ENVELOPE__BODY_ERROR;
			reply.error = &e;
			if ((buf = msg_pack(&reply, &len, &err)) != NULL) {
				(void)zmq_send(d->extra, zmq_msg_data(&rid),
				               zmq_msg_size(&rid),
				               ZMQ_SNDMORE | ZMQ_DONTWAIT);
				(void)zmq_send(d->extra, buf, len,
				               ZMQ_DONTWAIT);
				free(buf);
			}
			r->refused++;
			if (time_mono_ms() - r->refused_log >=
			    SAN_REFUSAL_LOG_MS) {
				r->refused_log = time_mono_ms();
				log_info(LOG_MESSAGING,
				         "%s from '%s' answered: not primary "
				         "(%" PRIu64 " so far)",
				         msg_body_name(env->body_case),
				         env->sender, r->refused);
			}
			msg_free(env);
		}
		zmq_msg_close(&rid);
	}
}

/*
 * Bind messaging.listen with our CURVE key, to say "not primary", and
 * tell the PAN in every heartbeat where we serve once promoted.
 */
static int
san_ready(struct join_daemon *d, void *arg, struct error *err)
{
	struct san_replica *r = arg;
	const struct config_address *a =
	    config_get_address(d->cfg, "messaging.listen");
	char adv[PAN_ENDPOINT_MAX], msg[PAN_ENDPOINT_MAX], ev[PAN_ENDPOINT_MAX];
	char ep[PAN_ENDPOINT_MAX];
	int one = 1, zero = 0, v6 = a->family == AF_INET6, rc = -1;
	void *s;

	if (pan_advertise(d->cfg, d->id.hostname, adv, msg, ev, err) == -1)
		goto out;
	join_link_set_endpoints(d->link, msg, ev);
	snprintf(ep, sizeof(ep), v6 ? "tcp://[%s]:%u" : "tcp://%s:%u", a->host,
	         a->port);
	if ((s = zmq_socket(d->zctx, ZMQ_ROUTER)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		goto out;
	}
	if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof(one)) == -1 ||
	    zmq_setsockopt(s, ZMQ_IPV6, &v6, sizeof(v6)) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, r->secret,
	                   CURVE_Z85_LEN - 1) == -1 ||
	    zmq_bind(s, ep) == -1) {
		error_set(err, "cannot listen on %s (messaging.listen): %s",
		          ep + 6, zmq_strerror(errno));
		zmq_close(s);
		goto out;
	}
	d->extra = s;
	d->extra_fn = san_not_primary;
	log_info(LOG_MESSAGING,
	         "listening on %s as a secondary (nodes are told: not "
	         "primary); once promoted, nodes reach this node at %s",
	         ep, join_endpoint_address(msg));
	rc = 0;
out:
	secure_zero(r->secret, sizeof(r->secret));
	return rc;
}

/* In sync: the link answers and every event the PAN announced is here. */
static bool
san_in_sync(const struct join_daemon *d)
{
	return join_link_state(d->link) == JOIN_LINK_CONNECTED &&
	       join_link_applied(d->link) >= join_link_pan_seq(d->link);
}

/* The active local alarm of this name for node, or NULL. */
static struct san_alarm *
san_alarm_active(struct san_replica *r, const char *name, const char *node)
{
	size_t i, first = r->nalarms > SAN_LOCAL_ALARMS_MAX
	                      ? r->nalarms - SAN_LOCAL_ALARMS_MAX
	                      : 0;

	for (i = first; i < r->nalarms; i++) {
		struct san_alarm *a = &r->alarms[i % SAN_LOCAL_ALARMS_MAX];

		if (a->rec.cleared_at == 0 && strcmp(a->rec.name, name) == 0 &&
		    strcmp(a->rec.node, node) == 0)
			return a;
	}
	return NULL;
}

/*
 * The link to the primary as an alarm, like the PAN's for its nodes:
 * raised once when the link goes down (node: the primary we lost, text
 * as the PAN words it), cleared when an ack comes (from it or from a
 * primary we adopted).
 */
static void
san_link_alarm(struct join_daemon *d, struct san_replica *r)
{
	enum join_link_state st = join_link_state(d->link);
	const char *primary = join_link_primary(d->link);
	int64_t now = time_now_ms(), last = join_link_last_ack(d->link);
	char when[32];
	struct san_alarm *a;
	size_t i;

	if (st == JOIN_LINK_CONNECTED) {
		for (i = 0; i < r->nalarms && i < SAN_LOCAL_ALARMS_MAX; i++) {
			a = &r->alarms[i];
			if (a->rec.cleared_at != 0 ||
			    strcmp(a->rec.name, PAN_ALARM_QUEUE_LINK) != 0)
				continue;
			a->rec.cleared_at = now / 1000;
			log_info(LOG_MAIN, "alarm cleared: %s on %s (link to "
			                   "the primary %s answers)",
			         a->rec.name, a->rec.node, primary);
		}
		return;
	}
	if (st != JOIN_LINK_DISCONNECTED ||
	    san_alarm_active(r, PAN_ALARM_QUEUE_LINK, primary) != NULL)
		return;
	a = &r->alarms[r->nalarms++ % SAN_LOCAL_ALARMS_MAX];
	memset(a, 0, sizeof(*a));
	iselab__alarm_record__init(&a->rec);
	snprintf(a->node, sizeof(a->node), "%s", primary);
	if (last != 0)
		adminview_time(last / 1000, when, sizeof(when));
	else
		snprintf(when, sizeof(when), "never");
	snprintf(a->text, sizeof(a->text),
	         "no heartbeat ack from %s for %llds (last: %s)", primary,
	         (long long)((now - (last != 0 ? last : d->started)) / 1000),
	         when);
	a->rec.id = r->nalarms;
	a->rec.name = PAN_ALARM_QUEUE_LINK;
	a->rec.node = a->node;
	a->rec.text = a->text;
	a->rec.severity = ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_MAJOR;
	a->rec.raised_at = now / 1000;
	log_warn(LOG_MAIN, "alarm raised: %s (%s) on %s: %s",
	         PAN_ALARM_QUEUE_LINK,
	         adminview_severity_name(a->rec.severity), a->node, a->text);
}

static int64_t
san_tick(struct join_daemon *d, void *arg, int64_t now_mono)
{
	struct san_replica *r = arg;
	bool installed;
	int renew;

	if (d->link != NULL && san_in_sync(d))
		r->last_in_sync = time_now_ms();
	if (d->link != NULL)
		san_link_alarm(d, r);
	if (!r->chain_read) {
		member_rootchain_target(&r->chain, d->st);
		r->chain_read = true;
	}
	/* Nothing runs on the Node CA key here: the files are all. */
	renew = member_rootchain_tick(&r->chain, d->link, r->pass.buf,
	                              r->pass.len, NULL, 0, now_mono,
	                              &installed);
	return renew >= 0 && renew < SAN_SYNC_TICK_MS ? renew
	                                               : SAN_SYNC_TICK_MS;
}

/* `san alarms`: the replica's and ours, by raise time. */
static int
san_alarms(struct join_daemon *d, struct san_replica *r, int argc,
           char **argv, FILE *out, FILE *err)
{
	const Iselab__AlarmRecord *local[SAN_LOCAL_ALARMS_MAX];
	size_t i, n = 0, first = r->nalarms > SAN_LOCAL_ALARMS_MAX
	                             ? r->nalarms - SAN_LOCAL_ALARMS_MAX
	                             : 0;

	for (i = first; i < r->nalarms; i++)
		local[n++] = &r->alarms[i % SAN_LOCAL_ALARMS_MAX].rec;
	return adminview_alarms_local(d->st, "san", argc, argv, local, n, out,
	                              err);
}

/*
 * `san status`: the last applied sequence, the lag behind the PAN in
 * events, the age of the newest applied event and when the replica was
 * last in sync.  "Replica lag: N events" is the line tests wait on.
 */
static void
san_status(const struct join_daemon *d, void *arg, FILE *fp)
{
	struct san_replica *r = arg;
	struct error err = {{0}};
	uint64_t applied = join_link_applied(d->link);
	uint64_t pan = join_link_pan_seq(d->link);
	int64_t made = 0, now = time_now_ms();
	char when[32];

	fprintf(fp, "Replica:         last applied event %" PRIu64
	            ", newest on the PAN %" PRIu64 "%s\n",
	        applied, pan,
	        join_link_state(d->link) == JOIN_LINK_CONNECTED
	            ? ""
	            : " (as of the last heartbeat ack)");
	fprintf(fp, "Replica lag:     %" PRIu64 " events (%s)\n", pan - applied,
	        san_in_sync(d)      ? "Sync Completed"
	        : join_link_state(d->link) == JOIN_LINK_CONNECTED
	            ? "Sync In Progress"
	            : "Out of Sync");
	if (events_time(d->st, applied, &made, &err) == -1)
		fprintf(fp, "Newest applied:  ? (%s)\n", err.msg);
	else if (made != 0) {
		adminview_time(made / 1000, when, sizeof(when));
		fprintf(fp, "Newest applied:  event %" PRIu64 " of %s (%" PRId64
		            "s old)\n",
		        applied, when, (now - made) / 1000);
	}
	if (r->last_in_sync != 0) {
		adminview_time(r->last_in_sync / 1000, when, sizeof(when));
		fprintf(fp, "Last in sync:    %s (%" PRId64 "s ago)\n", when,
		        (now - r->last_in_sync) / 1000);
	} else
		fprintf(fp, "Last in sync:    not since this daemon started\n");
}

/* The views of the replica, as the PAN shows its own tables. */
static int
san_command(struct join_daemon *d, void *arg, int argc, char **argv,
            FILE *out, FILE *err)
{
	struct san_replica *r = arg;
	int rc;

	if (strcmp(argv[0], "promote") == 0 && argc == 1) {
		rc = san_promote(d->datadir, &d->id, d->cfg, out, err);
		if (rc == SAN_EXIT_OK) {
			fprintf(out, "the daemon (pid %ld) goes on as the "
			             "primary\n",
			        (long)getpid());
			r->promoted = true;
			d->stop = true;
		}
		return rc;
	}
	if (strcmp(argv[0], "alarms") == 0)
		return san_alarms(d, r, argc, argv, out, err);
	if (strcmp(argv[0], "node") == 0 &&
	    (argc < 2 || strcmp(argv[1], "list") == 0)) {
		if (argc != 2) {
			fprintf(err, "usage: san node list --data-dir DIR\n");
			return SAN_EXIT_USAGE;
		}
		return adminview_nodes(d->st, "san", out, err);
	}
	if (strcmp(argv[0], "cert") == 0 &&
	    (argc < 2 || strcmp(argv[1], "list") == 0)) {
		if (argc < 2) {
			fprintf(err, "usage: san cert list [--node HOST] "
			             "[--status S] [--limit N] [--after C] "
			             "--data-dir DIR\n");
			return SAN_EXIT_USAGE;
		}
		return adminview_cert_list(d->st, "san", argc, argv, out, err);
	}
	/* What changes the deployment is the primary's. */
	fprintf(err,
	        "san %s: not primary: this SAN is a secondary (epoch %" PRIu64
	        ", the primary is %s); run it on the primary, or promote "
	        "this node (san promote)\n",
	        argv[0], join_link_epoch(d->link), join_link_primary(d->link));
	return SAN_EXIT_FAIL;
}

/* --data-dir of a run command line, or ISELAB_DATA_DIR. */
static const char *
san_run_datadir(int argc, char **argv)
{
	const char *dir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
			dir = argv[i + 1];
		else if (strncmp(argv[i], "--data-dir=", 11) == 0)
			dir = argv[i] + 11;
	}
	return dir;
}

int
san_run_main(int argc, char **argv)
{
	struct san_replica r = {0};
	const struct join_daemon_hooks hooks = {
	    .arg = &r,
	    .config = san_config,
	    .start = san_start,
	    .stop = san_stop,
	    .applied = san_applied,
	    .message = san_message,
	    .child_exited = san_child_exited,
	    .tick = san_tick,
	    .status = san_status,
	    .command = san_command,
	    .ready = san_ready,
	};
	struct node_identity id;
	struct error err = {{0}};
	const char *dir = san_run_datadir(argc, argv);
	int rc;

	/* Promoted: the primary's daemon, over the replica. */
	if (dir != NULL && node_identity_read(dir, &id, &err) == 0 &&
	    id.role == NODE_ROLE_SAN && san_is_primary(dir, &id, &err) == 1)
		return pan_run_role(argc, argv, NODE_ROLE_SAN, SAN_CONFIG_FILE);
	rc = join_run_main(&san_role, &hooks, argc, argv);
	secure_zero(r.secret, sizeof(r.secret));
	if (rc == SAN_EXIT_OK && r.promoted) {
		log_info(LOG_MAIN, "promoted: starting as the primary");
		return pan_run_role(argc, argv, NODE_ROLE_SAN, SAN_CONFIG_FILE);
	}
	return rc;
}

int
san_view_main(int argc, char **argv)
{
	return join_command_main(&san_role, argc, argv);
}
