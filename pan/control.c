/*
 * control: the daemon's side of the admin commands (docs/registration.md
 * "Admin commands").
 *
 * A ROUTER socket on ipc://D/control.sock, made 0600 before anyone can
 * connect (the umask covers the moment between bind and chmod), so only
 * the daemon's own user can talk to it.  A client is a REQ socket: a
 * request is [routing id][empty][envelope with control_request (the
 * command's argv)]; the daemon runs it against its own state and answers
 * control_response with the exit status and the text for stdout and
 * stderr, which the client prints as they are.  A malformed request still
 * gets an answer, so that no client waits for nothing.  A ROUTER rather
 * than a REP: a command that answers later (PAN_CONTROL_DEFERRED, the
 * minutes of `ca replace-root-chain`) keeps its client's routing id, and
 * the other commands are served meanwhile.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "log.h"
#include "msg.h"
#include "pan.h"
#include "proc.h"
#include "util.h"

/* `san promote` on a promoted SAN (a PAN's data dir is refused before). */
static int
control_promote(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	(void)argc;
	(void)argv;
	(void)out;
	if (primary_refuse(p, "promote", errf))
		return PAN_EXIT_FAIL;
	fprintf(errf, "san promote: %s is the primary already (epoch %llu)\n",
	        p->id.hostname, (unsigned long long)p->epoch);
	return PAN_EXIT_FAIL;
}

/* One admin command: argv[0] (and argv[1] when given) pick it. */
struct control_cmd {
	const char *word1, *word2;
	int (*fn)(struct pan *, int, char **, FILE *, FILE *);
	bool write; /* changes the deployment: the primary's alone */
};

static const struct control_cmd control_cmds[] = {
    {"node", "add", registry_node_add, true},
    {"node", "list", registry_node_list},
    {"node", "remove", registry_node_remove, true},
    {"node", "edit", registry_node_edit, true},
    {"ca", "disable", registry_ca_service, true},
    {"ca", "enable", registry_ca_service, true},
    {"ca", "certs", ca_certs},
    {"ca", "replace-root-chain", rootchain_replace},
    {"cert", "list", ca_cert_list},
    {"cert", "show", ca_cert_show},
    {"cert", "revoke", revoke_cert, true},
    {"cert", "hold", revoke_cert, true},
    {"cert", "release", revoke_cert, true},
    {"alarms", NULL, alarm_list},
    {"user", NULL, eventlog_user, true},
    {"template", NULL, eventlog_template, true},
    {"status", NULL, status_daemon},
    {"log-level", NULL, loglevel_cmd},
    {"promote", NULL, control_promote},
};

int
control_open(struct pan *p, struct error *err)
{
	char ep[PAN_PATH_MAX];
	int64_t maxmsg = MSG_MAX_SIZE;
	int linger = 0;
	mode_t old;
	int rc;

	if (proc_ipc_claim(p->datadir, PAN_CONTROL_NAME, err) == -1 ||
	    proc_ipc_endpoint(ep, sizeof(ep), p->datadir, PAN_CONTROL_NAME,
	                      err) == -1)
		return -1;
	if ((p->control = zmq_socket(p->zctx, ZMQ_ROUTER)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		return -1;
	}
	(void)zmq_setsockopt(p->control, ZMQ_LINGER, &linger, sizeof(linger));
	(void)zmq_setsockopt(p->control, ZMQ_MAXMSGSIZE, &maxmsg,
	                     sizeof(maxmsg));
	/* No moment when the socket file is open to group or others. */
	old = umask(077);
	rc = zmq_bind(p->control, ep);
	umask(old);
	if (rc == -1) {
		error_set(err, "cannot bind the control socket %s: %s", ep,
		          zmq_strerror(errno));
		return -1;
	}
	if (proc_ipc_secure(p->datadir, PAN_CONTROL_NAME, err) == -1)
		return -1;
	log_info(LOG_MAIN, "control socket %s", ep);
	return 0;
}

void
control_close(struct pan *p)
{
	char path[PAN_PATH_MAX];

	if (p->control == NULL)
		return;
	zmq_close(p->control);
	p->control = NULL;
	/* Ours (we bound it): gone with us, so no client waits on it. */
	if (proc_ipc_path(path, sizeof(path), p->datadir, PAN_CONTROL_NAME,
	                  NULL) == 0)
		(void)unlink(path);
}

/* [peer][empty][buf]; a client that is gone is dropped by ZeroMQ. */
static void
control_send_to(struct pan *p, const uint8_t *peer, size_t peer_len,
                const void *buf, size_t len)
{
	if (zmq_send(p->control, peer, peer_len, ZMQ_SNDMORE) == -1 ||
	    zmq_send(p->control, "", 0, ZMQ_SNDMORE) == -1 ||
	    zmq_send(p->control, buf, len, 0) == -1)
		log_warn(LOG_MAIN, "control answer not sent: %s",
		         zmq_strerror(errno));
}

static void
control_send(struct pan *p, const uint8_t *peer, size_t peer_len,
             uint64_t request_id, int status, const char *out,
             const char *errtext)
{
	Iselab__Envelope env;
	Iselab__ControlResponse cr = ISELAB__CONTROL_RESPONSE__INIT;
	struct error err = {{0}};
	uint8_t *buf;
	size_t len;

	msg_init(&env, request_id, p->id.hostname);
	cr.status = status;
	cr.out = (char *)(out != NULL ? out : "");
	cr.err = (char *)(errtext != NULL ? errtext : "");
	env.body_case = ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE;
	env.control_response = &cr;
	if ((buf = msg_pack(&env, &len, &err)) == NULL) {
		/* Too long for one message: say so rather than hang. */
		log_error(LOG_MAIN, "control answer: %s", err.msg);
		cr.out = "";
		cr.err = "pan: the answer is too long for one message\n";
		cr.status = PAN_EXIT_FAIL;
		if ((buf = msg_pack(&env, &len, &err)) == NULL) {
			control_send_to(p, peer, peer_len, "", 0);
			return;
		}
	}
	control_send_to(p, peer, peer_len, buf, len);
	free(buf);
}

void
control_deferred_reply(struct pan *p, int status, const char *out,
                       const char *errtext)
{
	if (!p->control_deferred)
		return;
	p->control_deferred = false;
	control_send(p, p->control_deferred_peer, p->control_deferred_peer_len,
	             p->control_deferred_id, status, out, errtext);
}

static int
control_run(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	size_t i;

	if (argc < 1) {
		fprintf(errf, "pan: empty command\n");
		return PAN_EXIT_USAGE;
	}
	for (i = 0; i < ARRAY_SIZE(control_cmds); i++) {
		const struct control_cmd *c = &control_cmds[i];

		if (strcmp(argv[0], c->word1) != 0)
			continue;
		if (c->word2 != NULL &&
		    (argc < 2 || strcmp(argv[1], c->word2) != 0))
			continue;
		/* user and template list only read. */
		if (c->write &&
		    !(argc >= 2 && c->word2 == NULL &&
		      strcmp(argv[1], "list") == 0) &&
		    primary_refuse(p, argv[0], errf))
			return PAN_EXIT_FAIL;
		return c->fn(p, argc, argv, out, errf);
	}
	fprintf(errf, "pan: unknown command '%s%s%s'\n", argv[0],
	        argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
	return PAN_EXIT_USAGE;
}

/*
 * One frame of a request into buf (at most cap bytes; *len its size, -1
 * when longer); *more whether frames follow.  -1 when none came.
 */
static int
control_frame(struct pan *p, void *buf, size_t cap, long *len, int *more,
              int flags)
{
	zmq_msg_t m;

	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, p->control, flags) == -1) {
		zmq_msg_close(&m);
		return -1;
	}
	*more = zmq_msg_more(&m);
	if (zmq_msg_size(&m) > cap)
		*len = -1;
	else {
		*len = (long)zmq_msg_size(&m);
		if (*len > 0)
			memcpy(buf, zmq_msg_data(&m), (size_t)*len);
	}
	zmq_msg_close(&m);
	return 0;
}

void
control_serve(struct pan *p)
{
	struct error err = {{0}};
	Iselab__Envelope *env = NULL;
	char *obuf = NULL, *ebuf = NULL;
	size_t olen = 0, elen = 0, peer_len;
	uint8_t peer[PAN_CONTROL_PEER_MAX], delim[1];
	FILE *out = NULL, *errf = NULL;
	zmq_msg_t m;
	long len;
	int status, more;

	/* The routing id ZeroMQ puts first, then a REQ's empty delimiter. */
	if (control_frame(p, peer, sizeof(peer), &len, &more, ZMQ_DONTWAIT) ==
	    -1)
		return;
	if (len <= 0 || !more) {
		log_warn(LOG_MAIN, "control socket: dropped a message without "
		                   "a routing id");
		goto drain;
	}
	peer_len = (size_t)len;
	if (control_frame(p, delim, sizeof(delim), &len, &more, 0) == -1)
		return;
	if (len != 0 || !more) {
		/* Not a REQ client: it could not read an answer either. */
		log_warn(LOG_MAIN, "control socket: dropped a request without "
		                   "the REQ envelope");
		goto drain;
	}
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, p->control, 0) == -1) {
		zmq_msg_close(&m);
		return;
	}
	more = zmq_msg_more(&m);
	env = msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), &p->control_stats,
	                 &err);
	zmq_msg_close(&m);
	/* Extra frames are not ours. */
	while (more &&
	       control_frame(p, delim, sizeof(delim), &len, &more, 0) == 0)
		;
	if (env == NULL) {
		log_warn(LOG_MAIN, "control socket: dropped: %s", err.msg);
		control_send(p, peer, peer_len, 0, PAN_EXIT_FAIL, NULL,
		             "pan: malformed control request\n");
		return;
	}
	if (env->body_case != ISELAB__ENVELOPE__BODY_CONTROL_REQUEST) {
		p->control_stats.dropped[MSG_DROP_UNHANDLED]++;
		control_send(p, peer, peer_len, env->request_id, PAN_EXIT_FAIL,
		             NULL, "pan: not a control request\n");
		goto out;
	}
	if ((out = open_memstream(&obuf, &olen)) == NULL ||
	    (errf = open_memstream(&ebuf, &elen)) == NULL) {
		control_send(p, peer, peer_len, env->request_id, PAN_EXIT_FAIL,
		             NULL, "pan: out of memory\n");
		goto out;
	}
	log_debug(
	    LOG_MAIN, "control: %s %s",
	    env->control_request->n_argv > 0 ? env->control_request->argv[0]
	                                     : "",
	    env->control_request->n_argv > 1 ? env->control_request->argv[1]
	                                     : "");
	status = control_run(p, (int)env->control_request->n_argv,
	                     env->control_request->argv, out, errf);
	fclose(out);
	fclose(errf);
	out = errf = NULL;
	if (status == PAN_CONTROL_DEFERRED) {
		/* Answered by control_deferred_reply(); one at a time. */
		p->control_deferred = true;
		p->control_deferred_id = env->request_id;
		memcpy(p->control_deferred_peer, peer, peer_len);
		p->control_deferred_peer_len = peer_len;
		goto out;
	}
	control_send(p, peer, peer_len, env->request_id, status, obuf, ebuf);
out:
	if (out != NULL)
		fclose(out);
	if (errf != NULL)
		fclose(errf);
	free(obuf);
	free(ebuf);
	msg_free(env);
	return;
drain:
	while (more &&
	       control_frame(p, delim, sizeof(delim), &len, &more, 0) == 0)
		;
}
