/*
 * san run: the SAN daemon in the foreground.
 *
 * Today it keeps the node's link to the PAN (heartbeats, acks, the link
 * state) and answers `san status` on the control socket; its CA signer
 * (the SAN's Node CA key) and the replica of the PAN's database come with
 * later issues.  The pid file keeps a second daemon off the data
 * directory; SIGTERM and SIGINT stop it cleanly.
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
#include "san.h"
#include "util.h"

/* Most --set flags one command line takes. */
#define RUN_SETS_MAX 64
/* Longest path we build inside the data directory. */
#define RUN_PATH_MAX 4096

static const char *const san_certs[] = {"node-ca.crt", "root-ca.crt", NULL};
static const char *const san_cert_labels[] = {"Node CA", "Root CA", NULL};
static const char *const san_services[] = {
    "Certificate Authority Service",
    NULL,
};

const struct join_role san_role = {
    .role = NODE_ROLE_SAN,
    .name = "san",
    .title = "Secondary Administration Node",
    .certs = san_certs,
    .cert_labels = san_cert_labels,
    .services = san_services,
};

static void
run_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: san run --data-dir DIR [--passphrase-file FILE] "
	        "[--set key=value]...\n"
	        "\n"
	        "  --set key=value      heartbeat.interval (5s), "
	        "heartbeat.timeout (15s),\n"
	        "                       log.level (info); also from "
	        "DIR/san.conf and %s*\n"
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
san_run_main(int argc, char **argv)
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
	int c, rc = SAN_EXIT_FAIL;

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
				fprintf(stderr, "san run: more than %d --set\n",
				        RUN_SETS_MAX);
				return SAN_EXIT_USAGE;
			}
			sets[nsets++] = optarg;
			break;
		case 'H':
			run_usage(stdout);
			return SAN_EXIT_OK;
		default:
			run_usage(stderr);
			return SAN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind != argc) {
		run_usage(stderr);
		return SAN_EXIT_USAGE;
	}
	if (join_daemon_init(&d, &san_role, datadir, sets, nsets, &err) == -1)
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
	log_info(LOG_MAIN, "san %s running, pid %ld, deployment %s",
	         d.id.hostname, (long)getpid(), d.id.deployment_id);
	if (join_daemon_loop(&d, &err) == -1)
		goto out;
	log_info(LOG_MAIN, "san %s stopped", d.id.hostname);
	rc = SAN_EXIT_OK;
out:
	if (rc != SAN_EXIT_OK) {
		if (log_path() != NULL)
			log_error(LOG_MAIN, "run failed: %s", err.msg);
		fprintf(stderr, "san run: %s\n", err.msg);
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
