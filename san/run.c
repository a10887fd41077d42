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
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "adminview.h"
#include "certwatch.h"
#include "events.h"
#include "join.h"
#include "log.h"
#include "member_rootchain.h"
#include "node.h"
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

/* The replica's state, in memory. */
struct san_replica {
	int64_t last_in_sync; /* realtime ms the replica was last in sync */
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

static int
san_start(struct join_daemon *d, void *arg, const char *pass, size_t passlen,
          struct error *err)
{
	struct san_replica *r = arg;

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

/* In sync: the link answers and every event the PAN announced is here. */
static bool
san_in_sync(const struct join_daemon *d)
{
	return join_link_state(d->link) == JOIN_LINK_CONNECTED &&
	       join_link_applied(d->link) >= join_link_pan_seq(d->link);
}

static int64_t
san_tick(struct join_daemon *d, void *arg, int64_t now_mono)
{
	struct san_replica *r = arg;
	bool installed;
	int renew;

	if (d->link != NULL && san_in_sync(d))
		r->last_in_sync = time_now_ms();
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
	(void)arg;
	if (strcmp(argv[0], "alarms") == 0)
		return adminview_alarms(d->st, "san", argc, argv, out, err);
	if (strcmp(argv[0], "node") == 0) {
		if (argc != 2 || strcmp(argv[1], "list") != 0) {
			fprintf(err, "usage: san node list --data-dir DIR\n");
			return SAN_EXIT_USAGE;
		}
		return adminview_nodes(d->st, "san", out, err);
	}
	if (strcmp(argv[0], "cert") == 0) {
		if (argc < 2 || strcmp(argv[1], "list") != 0) {
			fprintf(err, "usage: san cert list [--node HOST] "
			             "[--status S] [--limit N] [--after C] "
			             "--data-dir DIR\n");
			return SAN_EXIT_USAGE;
		}
		return adminview_cert_list(d->st, "san", argc, argv, out, err);
	}
	return -1;
}

int
san_run_main(int argc, char **argv)
{
	struct san_replica r = {0};
	const struct join_daemon_hooks hooks = {
	    .arg = &r,
	    .start = san_start,
	    .stop = san_stop,
	    .applied = san_applied,
	    .message = san_message,
	    .child_exited = san_child_exited,
	    .tick = san_tick,
	    .status = san_status,
	    .command = san_command,
	};

	return join_run_main(&san_role, &hooks, argc, argv);
}

int
san_view_main(int argc, char **argv)
{
	return join_command_main(&san_role, argc, argv);
}
