/*
 * psn run: the PSN daemon in the foreground.
 *
 * Today it keeps the node's link to the PAN (heartbeats, acks, the link
 * state) and answers `psn status` on the control socket; the CA service,
 * the EST server and the OCSP responder join it as forked processes with
 * the EST and OCSP issues.  The pid file keeps a second daemon off the
 * data directory; SIGTERM and SIGINT stop it cleanly.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "proc.h"
#include "psn.h"
#include "util.h"

/* Most --set flags one command line takes. */
#define RUN_SETS_MAX 64
/* Longest path we build inside the data directory. */
#define RUN_PATH_MAX 4096

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
    NULL,
};

const struct join_role psn_role = {
    .role = NODE_ROLE_PSN,
    .name = "psn",
    .title = "Policy Service Node",
    .certs = psn_certs,
    .cert_labels = psn_cert_labels,
    .services = psn_services,
};

static void
run_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: psn run --data-dir DIR [--passphrase-file FILE] "
	        "[--set key=value]...\n"
	        "\n"
	        "  --set key=value      heartbeat.interval (5s), "
	        "heartbeat.timeout (15s),\n"
	        "                       log.level (info); also from "
	        "DIR/psn.conf and %s*\n"
	        "  --passphrase-file F  the node passphrase; without it, %s\n",
	        NODE_ENV_PREFIX, NODE_PASSPHRASE_ENV);
}

/* Bind the control socket: claim a dead daemon's file, bind, 0600. */
static void *
run_control(struct join_daemon *d, struct error *err)
{
	char endpoint[PROC_ENDPOINT_MAX];
	int zero = 0;
	void *s;

	if (proc_ipc_claim(d->datadir, PROC_CONTROL_NAME, err) == -1 ||
	    proc_ipc_endpoint(endpoint, sizeof(endpoint), d->datadir,
	                      PROC_CONTROL_NAME, err) == -1)
		return NULL;
	if ((s = zmq_socket(d->zctx, ZMQ_REP)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		return NULL;
	}
	(void)zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	if (zmq_bind(s, endpoint) == -1) {
		error_set(err, "cannot bind %s: %s", endpoint,
		          zmq_strerror(errno));
		zmq_close(s);
		return NULL;
	}
	if (proc_ipc_secure(d->datadir, PROC_CONTROL_NAME, err) == -1) {
		zmq_close(s);
		return NULL;
	}
	return s;
}

int
psn_run_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"set", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct join_daemon d;
	struct error err = {{0}};
	char *sets[RUN_SETS_MAX], *pass = NULL, logdir[RUN_PATH_MAX];
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	const char *passfile = NULL;
	size_t nsets = 0, passlen = 0;
	char sock[PROC_ENDPOINT_MAX];
	bool pidfile = false, bound;
	int c, rc = PSN_EXIT_FAIL;

	memset(&d, 0, sizeof(d));
	d.signal_fd = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 's':
			if (nsets == RUN_SETS_MAX) {
				fprintf(stderr, "psn run: more than %d --set\n",
				        RUN_SETS_MAX);
				return PSN_EXIT_USAGE;
			}
			sets[nsets++] = optarg;
			break;
		case 'H':
			run_usage(stdout);
			return PSN_EXIT_OK;
		default:
			run_usage(stderr);
			return PSN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind != argc) {
		run_usage(stderr);
		return PSN_EXIT_USAGE;
	}
	if (join_daemon_init(&d, &psn_role, datadir, sets, nsets, &err) == -1)
		goto out;
	if ((pass = node_passphrase(passfile, &passlen, &err)) == NULL)
		goto out;
	if (proc_pidfile_acquire(datadir, &err) == -1)
		goto out;
	pidfile = true;
	if (node_path(logdir, sizeof(logdir), datadir, NODE_LOG_DIR, &err) ==
	        -1 ||
	    dir_create(logdir, 0750, &err) == -1 ||
	    proc_log_open(d.id.hostname, "main", logdir, true, &err) == -1)
		goto out;
	if ((d.signal_fd = proc_signals_fd(&err)) == -1)
		goto out;
	if (join_daemon_start(&d, pass, passlen, &err) == -1)
		goto out;
	passphrase_free(pass, passlen);
	pass = NULL;
	if ((d.control = run_control(&d, &err)) == NULL)
		goto out;
	log_info(LOG_MAIN, "psn %s running, pid %ld, deployment %s",
	         d.id.hostname, (long)getpid(), d.id.deployment_id);
	if (join_daemon_loop(&d, &err) == -1)
		goto out;
	log_info(LOG_MAIN, "psn %s stopped", d.id.hostname);
	rc = PSN_EXIT_OK;
out:
	if (rc != PSN_EXIT_OK) {
		if (log_path() != NULL)
			log_error(LOG_MAIN, "run failed: %s", err.msg);
		fprintf(stderr, "psn run: %s\n", err.msg);
	}
	passphrase_free(pass, passlen);
	bound = d.control != NULL;
	join_daemon_close(&d);
	/* Leave no socket file for status to knock on. */
	if (bound && proc_ipc_path(sock, sizeof(sock), datadir,
	                           PROC_CONTROL_NAME, NULL) == 0)
		(void)unlink(sock);
	if (d.signal_fd != -1)
		close(d.signal_fd);
	if (pidfile)
		proc_pidfile_release(datadir);
	return rc;
}
