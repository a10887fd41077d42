/*
 * pan status: this node, its CA certificates, its store and its services.
 *
 * When `pan run` is up, the daemon answers over the control socket with
 * what only it knows: the real state and pid of each process, the nodes'
 * links, the message counters.  Otherwise the offline view reads what
 * anyone may read (certificates, node.conf, the store in read-only mode),
 * needs no passphrase and changes nothing; every service is "not running".
 * The application status table has the product's columns (PROCESS NAME,
 * STATE, PROCESS ID).
 */
#include <getopt.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "cert.h"
#include "config.h"
#include "keys.h"
#include "node.h"
#include "pan.h"
#include "store.h"
#include "util.h"

#define STATUS_USAGE "usage: pan status --data-dir DIR\n"

static int
status_ca(FILE *fp, const char *datadir, const char *label, const char *file,
          struct error *err)
{
	char path[PAN_PATH_MAX], rel[64], cn[CERT_CN_BUF];
	char serial[CERT_SERIAL_HEX_MAX], keydesc[64], when[64];
	time_t na;
	X509 *cert;

	snprintf(rel, sizeof(rel), "%s/%s", NODE_CA_DIR, file);
	if (node_path(path, sizeof(path), datadir, rel, err) == -1 ||
	    (cert = cert_load_pem(path, err)) == NULL)
		return -1;
	if (cert_subject_cn(cert, cn, sizeof(cn), err) == -1 ||
	    cert_serial_hex(cert, serial, sizeof(serial), err) == -1 ||
	    cert_not_after(cert, &na, err) == -1) {
		X509_free(cert);
		return -1;
	}
	key_describe(X509_get0_pubkey(cert), keydesc, sizeof(keydesc));
	pan_format_time(na, when, sizeof(when));
	fprintf(fp, "  %-8s %s\n           serial %s, %s, expires %s\n", label,
	        cn, serial, keydesc, when);
	X509_free(cert);
	return 0;
}

int
status_print_node(FILE *fp, const char *datadir, const struct node_identity *id,
                  struct error *err)
{
	char when[64], path[PAN_PATH_MAX];

	pan_format_time(id->created, when, sizeof(when));
	fprintf(fp, "Node:            %s (Primary Administration Node)\n",
	        id->hostname);
	fprintf(fp, "Deployment:      %s, created %s\n", id->deployment_id,
	        when);
	fprintf(fp, "OCSP hierarchy:  %s\n",
	        node_ocsp_hierarchy_name(id->ocsp_hierarchy));
	fprintf(fp, "Data directory:  %s\n", datadir);
	fprintf(fp, "\nCA certificates:\n");
	if (status_ca(fp, datadir, "Root CA", "root-ca.crt", err) == -1 ||
	    status_ca(fp, datadir, "Node CA", "node-ca.crt", err) == -1)
		return -1;
	/* A deployment made before the PAN had one gets it at `pan run`. */
	if (node_path(path, sizeof(path), datadir, PAN_OCSP_CERT, err) == -1)
		return -1;
	if (file_exists(path))
		return status_ca(fp, datadir, "OCSP", "ocsp-responder.crt", err);
	fprintf(fp, "  %-8s none yet (made at the next pan run)\n", "OCSP");
	return 0;
}

static void
status_app_header(FILE *fp)
{
	fprintf(fp, "\nApplication status:\n%-32s %-14s %s\n", "PROCESS NAME",
	        "STATE", "PROCESS ID");
}

int
status_daemon(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct store_filter all = {.status = STORE_STATUS_ANY};
	struct error err = {{0}};
	size_t count = 0, i, nlink[PAN_LINK_REMOVED + 1] = {0};
	char since[64];
	uint64_t total;

	(void)argv;
	if (argc > 1) {
		fprintf(errf, "pan status: unexpected argument\n%s",
		        STATUS_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (status_print_node(out, p->datadir, &p->id, &err) == -1 ||
	    store_count_certs(p->st, &all, &count, &err) == -1) {
		fprintf(errf, "pan status: %s\n", err.msg);
		return PAN_EXIT_FAIL;
	}
	for (i = 0; i < p->nnodes; i++)
		nlink[p->nodes[i].link]++;
	pan_format_time(p->started_real / 1000, since, sizeof(since));
	fprintf(out, "\nStore:           %zu certificates issued\n", count);
	fprintf(out,
	        "Nodes:           %zu registered, %zu connected, "
	        "%zu disconnected, %zu removed\n",
	        nlink[PAN_LINK_REGISTERED] + nlink[PAN_LINK_CONNECTED] +
	            nlink[PAN_LINK_DISCONNECTED],
	        nlink[PAN_LINK_CONNECTED], nlink[PAN_LINK_DISCONNECTED],
	        nlink[PAN_LINK_REMOVED]);
	fprintf(out, "Active alarms:   %zu\n", alarm_active_count(p));
	fprintf(out, "Event log:       %llu events\n",
	        (unsigned long long)p->event_seq);
	primary_status(p, out);
	fprintf(out, "Messaging:       %s (listening on %s), events %s\n",
	        p->messaging_endpoint,
	        config_get_string(p->cfg, "messaging.listen"),
	        p->events_endpoint);
	fprintf(out, "CURVE key:       %s\n", p->curve_public_z85);
	fprintf(out, "Heartbeats:      every %llds, timeout %llds\n",
	        (long long)(p->hb_interval_ms / 1000),
	        (long long)(p->hb_timeout_ms / 1000));
	fprintf(out, "OCSP responder:  %s (listening on %s%s%s:%u), for the "
	             "Node CA's certificates\n",
	        p->ocsp_url, p->ocsp.family == AF_INET6 ? "[" : "",
	        p->ocsp.host, p->ocsp.family == AF_INET6 ? "]" : "",
	        (unsigned)p->ocsp.port);
	fprintf(out, "Running since:   %s\n", since);

	fprintf(out, "\nMessages on %s:\n",
	        config_get_string(p->cfg, "messaging.listen"));
	fprintf(out,
	        "  received %llu, heartbeats %llu, joins accepted %llu, "
	        "refused %llu, repeated %llu\n",
	        (unsigned long long)p->router_stats.received,
	        (unsigned long long)p->heartbeats,
	        (unsigned long long)p->joins_accepted,
	        (unsigned long long)p->joins_refused,
	        (unsigned long long)p->joins_replayed);
	total = 0;
	for (i = 0; i < MSG_DROP_COUNT; i++)
		total += p->router_stats.dropped[i];
	for (i = 0; i < PAN_DROP_COUNT; i++)
		total += p->drops[i];
	fprintf(out, "  dropped %llu:", (unsigned long long)total);
	for (i = 0; i < MSG_DROP_COUNT; i++)
		fprintf(out, " %s %llu,", msg_drop_name((enum msg_drop)i),
		        (unsigned long long)p->router_stats.dropped[i]);
	for (i = 0; i < PAN_DROP_COUNT; i++)
		fprintf(out, " %s %llu%s",
		        messaging_drop_name((enum pan_drop)i),
		        (unsigned long long)p->drops[i],
		        i + 1 < PAN_DROP_COUNT ? "," : "\n");
	fprintf(out,
	        "  CURVE handshakes: accepted %llu, refused %llu "
	        "(removed nodes)\n",
	        (unsigned long long)p->zap_accepted,
	        (unsigned long long)p->zap_refused);

	status_app_header(out);
	fprintf(out, "%-32s %-14s %ld\n", "Messaging Service", "running",
	        (long)getpid());
	if (p->signer_pid > 0)
		fprintf(out, "%-32s %-14s %ld\n",
		        "Certificate Authority Service", "running",
		        (long)p->signer_pid);
	else
		fprintf(out, "%-32s %-14s %s\n",
		        "Certificate Authority Service", "not running", "-");
	if (p->ocsp_pid > 0)
		fprintf(out, "%-32s %-14s %ld\n", PAN_OCSP_TITLE, "running",
		        (long)p->ocsp_pid);
	else
		fprintf(out, "%-32s %-14s %s\n", PAN_OCSP_TITLE, "not running",
		        "-");
	return PAN_EXIT_OK;
}

int
pan_status_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	static const char *const services[] = {
	    "Messaging Service",
	    "Certificate Authority Service",
	    PAN_OCSP_TITLE,
	};
	static char status_word[] = "status";
	struct store_filter all = {.status = STORE_STATUS_ANY};
	struct store_opts ro = {.read_only = true};
	struct node_identity id;
	struct error err = {{0}};
	struct store *st = NULL;
	const char *datadir = NULL;
	char path[PAN_PATH_MAX], *fwd[1] = {status_word};
	size_t count = 0, i;
	bool answered;
	int c, rc = PAN_EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'H':
			printf(STATUS_USAGE);
			return PAN_EXIT_OK;
		default:
			fprintf(stderr, STATUS_USAGE);
			return PAN_EXIT_USAGE;
		}
	}
	if (datadir == NULL)
		datadir = getenv(PAN_DATA_DIR_ENV);
	if (datadir == NULL || optind != argc) {
		fprintf(stderr, STATUS_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_PAN) {
		error_set(&err, "%s holds a %s node, not a pan", datadir,
		          node_role_name(id.role));
		goto out;
	}
	/* The daemon knows best; ask it first. */
	rc = admin_call("status", datadir, fwd, 1, PAN_STATUS_TIMEOUT_MS, true,
	                &answered);
	if (answered)
		return rc;
	rc = PAN_EXIT_FAIL;

	if (status_print_node(stdout, datadir, &id, &err) == -1)
		goto out;
	if (node_path(path, sizeof(path), datadir, NODE_STORE_DIR, &err) ||
	    store_open(path, &ro, &st, &err) == -1 ||
	    store_count_certs(st, &all, &count, &err) == -1)
		goto out;
	printf("\nStore:           %zu certificates issued\n", count);
	status_app_header(stdout);
	for (i = 0; i < ARRAY_SIZE(services); i++)
		printf("%-32s %-14s %s\n", services[i], "not running", "-");
	rc = PAN_EXIT_OK;
out:
	store_close(st);
	if (rc != PAN_EXIT_OK)
		fprintf(stderr, "pan status: %s\n", err.msg);
	return rc;
}
