/*
 * pan status: this node, its CA certificates, its store and its services.
 *
 * Reads only what anyone may read (certificates, node.conf, the store in
 * read-only mode): it needs no passphrase and changes nothing.  The
 * application status table has the product's columns (PROCESS NAME, STATE,
 * PROCESS ID); until the daemon exists (pan run) every service is "not
 * running".
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "cert.h"
#include "keys.h"
#include "node.h"
#include "pan.h"
#include "store.h"
#include "util.h"

#define STATUS_PATH_MAX 4096

static void
format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static int
status_ca(const char *datadir, const char *label, const char *file,
    struct error *err)
{
	char path[STATUS_PATH_MAX], rel[64], cn[CERT_CN_BUF];
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
	format_time(na, when, sizeof(when));
	printf("  %-8s %s\n           serial %s, %s, expires %s\n", label,
	    cn, serial, keydesc, when);
	X509_free(cert);
	return 0;
}

int
pan_status_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const services[] = {
		"Messaging Service",
		"Certificate Authority Service",
	};
	struct store_filter all = { .status = STORE_STATUS_ANY };
	struct store_opts ro = { .read_only = true };
	struct node_identity id;
	struct error err = { { 0 } };
	struct store *st = NULL;
	const char *datadir = NULL;
	char path[STATUS_PATH_MAX], when[64];
	size_t count = 0, i;
	int c, rc = PAN_EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'H':
			printf("usage: pan status --data-dir DIR\n");
			return PAN_EXIT_OK;
		default:
			fprintf(stderr, "usage: pan status --data-dir DIR\n");
			return PAN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || optind != argc) {
		fprintf(stderr, "usage: pan status --data-dir DIR\n");
		return PAN_EXIT_USAGE;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_PAN) {
		error_set(&err, "%s holds a %s node, not a pan", datadir,
		    node_role_name(id.role));
		goto out;
	}
	format_time((time_t)id.created, when, sizeof(when));
	printf("Node:            %s (Primary Administration Node)\n",
	    id.hostname);
	printf("Deployment:      %s, created %s\n", id.deployment_id, when);
	printf("OCSP hierarchy:  %s\n",
	    node_ocsp_hierarchy_name(id.ocsp_hierarchy));
	printf("Data directory:  %s\n", datadir);
	printf("\nCA certificates:\n");
	if (status_ca(datadir, "Root CA", "root-ca.crt", &err) == -1 ||
	    status_ca(datadir, "Node CA", "node-ca.crt", &err) == -1)
		goto out;
	if (node_path(path, sizeof(path), datadir, NODE_STORE_DIR, &err) ||
	    store_open(path, &ro, &st, &err) == -1 ||
	    store_count_certs(st, &all, &count, &err) == -1)
		goto out;
	printf("\nStore:           %zu certificates issued\n", count);
	printf("\nApplication status:\n%-32s %-14s %s\n", "PROCESS NAME",
	    "STATE", "PROCESS ID");
	for (i = 0; i < ARRAY_SIZE(services); i++)
		printf("%-32s %-14s %s\n", services[i], "not running", "-");
	rc = PAN_EXIT_OK;
out:
	store_close(st);
	if (rc != PAN_EXIT_OK)
		fprintf(stderr, "pan status: %s\n", err.msg);
	return rc;
}
