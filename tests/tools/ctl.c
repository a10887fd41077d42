/*
 * ctl: send argv to a node's control socket and print the answer, as a
 * service of the node does (e.g. `ctl D alarm raise NAME major TEXT`).
 * Exit status: the daemon's, or 1 when nobody answered.
 *
 * `ctl --raw KIND D` sends bad input instead and prints what came back:
 *   dealer       one frame from a DEALER (no REQ envelope): no answer is
 *                expected, "no answer" is printed after 2 s
 *   garbage      bytes that are no envelope, from a REQ
 *   not-control  a well-formed envelope that is no control request (a
 *                heartbeat), from a REQ
 * Exit status 0 when it was sent (whatever came back), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "msg.h"
#include "proc.h"
#include "util.h"

/* How long --raw waits for an answer. */
#define CTL_RAW_WAIT_MS 2000

static int
ctl_raw(const char *kind, const char *datadir)
{
	struct error err = {{0}};
	char ep[4096];
	uint8_t ans[4096];
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	uint8_t *buf = NULL;
	size_t len = 0;
	void *ctx = zmq_ctx_new(), *s = NULL;
	int type, wait = CTL_RAW_WAIT_MS, linger = 0, rc = 1, n;
	Iselab__Envelope *back;

	if (strcmp(kind, "dealer") == 0 || strcmp(kind, "garbage") == 0) {
		buf = (uint8_t *)strdup("\xff\xfe not an envelope");
		len = strlen((char *)buf);
	} else if (strcmp(kind, "not-control") == 0) {
		msg_init(&env, 42, "ctl");
		env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
		env.heartbeat = &hb;
		if ((buf = msg_pack(&env, &len, &err)) == NULL) {
			fprintf(stderr, "ctl: %s\n", err.msg);
			goto out;
		}
	} else {
		fprintf(stderr, "ctl: --raw takes dealer, garbage or "
		                "not-control\n");
		rc = 2;
		goto out;
	}
	type = strcmp(kind, "dealer") == 0 ? ZMQ_DEALER : ZMQ_REQ;
	if (proc_ipc_endpoint(ep, sizeof(ep), datadir, "control", &err) ==
	        -1 ||
	    (s = zmq_socket(ctx, type)) == NULL ||
	    zmq_setsockopt(s, ZMQ_RCVTIMEO, &wait, sizeof(wait)) == -1 ||
	    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger)) == -1 ||
	    zmq_connect(s, ep) == -1 || zmq_send(s, buf, len, 0) == -1) {
		fprintf(stderr, "ctl: %s\n",
		        err.msg[0] ? err.msg : zmq_strerror(zmq_errno()));
		goto out;
	}
	rc = 0;
	if ((n = zmq_recv(s, ans, sizeof(ans), 0)) == -1) {
		printf("no answer\n");
		goto out;
	}
	if ((size_t)n > sizeof(ans))
		n = sizeof(ans);
	if ((back = msg_unpack(ans, (size_t)n, NULL, &err)) == NULL)
		printf("an answer that does not unpack: %s\n", err.msg);
	else {
		if (back->body_case == ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE)
			printf("status %d: %s", back->control_response->status,
			       back->control_response->err);
		else
			printf("a %s message\n",
			       msg_body_name(back->body_case));
		msg_free(back);
	}
out:
	if (s != NULL)
		zmq_close(s);
	zmq_ctx_term(ctx);
	free(buf);
	return rc;
}

int
main(int argc, char **argv)
{
	struct error err = {{0}};
	char *out = NULL, *errtext = NULL;
	int status = 1;

	if (argc == 4 && strcmp(argv[1], "--raw") == 0)
		return ctl_raw(argv[2], argv[3]);
	if (argc < 3) {
		fprintf(stderr, "usage: ctl DATADIR WORD...\n"
		                "       ctl --raw dealer|garbage|not-control "
		                "DATADIR\n");
		return 2;
	}
	if (control_call(argv[1], (const char *const *)argv + 2, argc - 2,
	                 5000, &out, &errtext, &status, &err) == -1) {
		fprintf(stderr, "ctl: %s\n", err.msg);
		return 1;
	}
	fputs(out, stdout);
	fputs(errtext, stderr);
	free(out);
	free(errtext);
	return status;
}
