/*
 * outbox_send: send one OutboxBatch to a PAN as a registered PSN would,
 * for the integration tests of the PAN's outbox checks
 * (tests/psn/test_psn.py).
 *
 * It loads the PSN's CURVE key (D/curve.key, under the node passphrase)
 * and the PAN's endpoint and key (D/deployment.conf), so the PAN sees the
 * node's own authenticated key: what it accepts or refuses then depends
 * only on the certificates.  Each CERT argument (PEM) becomes one item,
 * keyed as the outbox keys it (issued_at_ms || serial).  The ack's keys
 * are matched back to the items and printed, one line per item:
 *   item 0 acked
 *   item 1 refused: not issued by a CA certificate of psn1 (...)
 *   item 2 not-acked
 * Exit status 0 when an ack came, 1 otherwise, 2 for a bad command line.
 *
 * --queue ISSUER instead queues the certificates in the PSN's own outbox
 * (and store), as its CA service would have with ISSUER's key id, for a
 * PSN that is stopped: a test then sees what `psn run` does with them.
 *
 * usage: outbox_send --data-dir D --passphrase-file F [--profile P]
 *                    [--issued-at-ms N] [--queue ISSUER] CERT...
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <zmq.h>

#include "cert.h"
#include "curve.h"
#include "join.h"
#include "keys.h"
#include "msg.h"
#include "node.h"
#include "outbox.h"
#include "util.h"

/* How long we wait for the PAN's ack. */
#define SEND_TIMEOUT_MS 10000
/* Most certificates one run sends. */
#define SEND_ITEMS_MAX OUTBOX_BATCH_MAX
/* Longest path we build. */
#define SEND_PATH_MAX 4096

static void
usage(void)
{
	fprintf(stderr, "usage: outbox_send --data-dir D --passphrase-file F "
	                "[--profile P] [--issued-at-ms N] [--queue ISSUER] "
	                "CERT...\n");
}

/* --queue: the certificates into the node's store and outbox, one batch. */
static int
queue_certs(const char *datadir, const char *issuer_pem, char **certs,
            size_t n, const char *profile, const char *hostname,
            int64_t issued, struct error *err)
{
	char path[SEND_PATH_MAX];
	uint8_t kid[STORE_KEY_ID_LEN];
	struct store *st = NULL;
	struct store_batch *b = NULL;
	X509 *issuer = NULL, *x;
	size_t i;
	int rc = -1;

	if ((issuer = cert_load_pem(issuer_pem, err)) == NULL ||
	    store_issuer_key_id(issuer, kid, err) == -1 ||
	    node_path(path, sizeof(path), datadir, NODE_STORE_DIR, err) == -1 ||
	    store_open(path, NULL, &st, err) == -1)
		goto out;
	if ((b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		int added;

		if ((x = cert_load_pem(certs[i], err)) == NULL)
			goto out;
		added = outbox_batch_add(b, x, kid, profile, hostname,
		                         issued + (int64_t)i, err);
		X509_free(x);
		if (added == -1)
			goto out;
	}
	if (store_apply(st, b, err) != STORE_OK)
		goto out;
	printf("queued %zu\n", n);
	rc = 0;
out:
	store_batch_free(b);
	if (st != NULL)
		store_close(st);
	X509_free(issuer);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"profile", required_argument, NULL, 'P'},
	    {"issued-at-ms", required_argument, NULL, 't'},
	    {"queue", required_argument, NULL, 'q'},
	    {NULL, 0, NULL, 0},
	};
	Iselab__OutboxItem items[SEND_ITEMS_MAX], *itemp[SEND_ITEMS_MAX];
	uint8_t keys[SEND_ITEMS_MAX][OUTBOX_KEY_MAX];
	uint8_t *ders[SEND_ITEMS_MAX];
	Iselab__OutboxBatch batch = ISELAB__OUTBOX_BATCH__INIT;
	Iselab__Envelope env, *reply = NULL;
	struct join_deployment dep;
	const struct join_admin *pan;
	struct node_identity id;
	struct error err = {{0}};
	const char *datadir = NULL, *passfile = NULL, *profile = "tls-client";
	const char *queue = NULL;
	char path[SEND_PATH_MAX], pub[CURVE_Z85_LEN], sec[CURVE_Z85_LEN];
	char *pass = NULL;
	size_t passlen = 0, n = 0, i, j, len;
	int64_t issued = time_now_ms(), timeout = SEND_TIMEOUT_MS;
	EVP_PKEY *curve = NULL;
	void *ctx = NULL, *s = NULL;
	uint8_t *buf = NULL;
	int c, rc = 1, zero = 0, r;

	memset(ders, 0, sizeof(ders));
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 'P':
			profile = optarg;
			break;
		case 't':
			issued = strtoll(optarg, NULL, 10);
			break;
		case 'q':
			queue = optarg;
			break;
		default:
			usage();
			return 2;
		}
	}
	/* One batch is sent; any number may be queued. */
	if (datadir == NULL || optind == argc ||
	    (queue == NULL && argc - optind > SEND_ITEMS_MAX)) {
		usage();
		return 2;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto out;
	if (queue != NULL) {
		rc = queue_certs(datadir, queue, argv + optind,
		                 (size_t)(argc - optind), profile, id.hostname,
		                 issued, &err) == 0
		         ? 0
		         : 1;
		goto out;
	}
	if (join_deployment_read(datadir, &dep, &err) == -1)
		goto out;
	if ((pan = join_deployment_pan(&dep)) == NULL) {
		error_set(&err, "no PAN in %s", JOIN_DEPLOYMENT_FILE);
		goto out;
	}
	if ((pass = node_passphrase(passfile, &passlen, &err)) == NULL ||
	    node_path(path, sizeof(path), datadir, NODE_CURVE_KEY, &err) ==
	        -1 ||
	    (curve = key_load(path, pass, passlen, &err)) == NULL ||
	    curve_z85(curve, pub, sec, &err) == -1)
		goto out;

	for (i = optind; i < (size_t)argc; i++, n++) {
		X509 *x;
		int dlen;

		if ((x = cert_load_pem(argv[i], &err)) == NULL)
			goto out;
		iselab__outbox_item__init(&items[n]);
		if (outbox_key(issued, x, keys[n], &len, &err) == -1 ||
		    (dlen = i2d_X509(x, &ders[n])) <= 0) {
			X509_free(x);
			error_prefix(&err, "%s", argv[i]);
			goto out;
		}
		X509_free(x);
		items[n].key.data = keys[n];
		items[n].key.len = len;
		items[n].cert.data = ders[n];
		items[n].cert.len = (size_t)dlen;
		items[n].profile = (char *)profile;
		items[n].issued_by = id.hostname;
		items[n].issued_at_ms = issued;
		itemp[n] = &items[n];
	}
	batch.n_items = n;
	batch.items = itemp;
	msg_init(&env, 4242, id.hostname);
	env.body_case = ISELAB__ENVELOPE__BODY_OUTBOX_BATCH;
	env.outbox_batch = &batch;

	if ((ctx = zmq_ctx_new()) == NULL ||
	    (s = zmq_socket(ctx, ZMQ_DEALER)) == NULL) {
		error_set(&err, "zmq: %s", zmq_strerror(errno));
		goto out;
	}
	if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, pan->curve_public,
	                   CURVE_KEY_LEN) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_RCVTIMEO, &(int){SEND_TIMEOUT_MS},
	                   sizeof(int)) == -1 ||
	    zmq_connect(s, pan->messaging) == -1) {
		error_set(&err, "zmq: %s", zmq_strerror(errno));
		goto out;
	}
	if ((buf = msg_pack(&env, &len, &err)) == NULL)
		goto out;
	if (zmq_send(s, buf, len, 0) == -1) {
		error_set(&err, "zmq_send: %s", zmq_strerror(errno));
		goto out;
	}
	/* Heartbeat acks do not come: we send none.  Wait for ours. */
	while (timeout > 0) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if ((r = zmq_msg_recv(&m, s, 0)) == -1) {
			zmq_msg_close(&m);
			error_set(&err, "no ack from the PAN: %s",
			          zmq_strerror(errno));
			goto out;
		}
		reply =
		    msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), NULL, &err);
		zmq_msg_close(&m);
		if (reply != NULL &&
		    reply->body_case == ISELAB__ENVELOPE__BODY_OUTBOX_ACK &&
		    reply->request_id == 4242)
			break;
		msg_free(reply);
		reply = NULL;
		timeout -= 100;
	}
	if (reply == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		const Iselab__OutboxAck *a = reply->outbox_ack;
		const char *why = NULL;
		bool acked = false;

		for (j = 0; j < a->n_keys; j++)
			if (a->keys[j].len == items[i].key.len &&
			    memcmp(a->keys[j].data, items[i].key.data,
			           items[i].key.len) == 0)
				acked = true;
		for (j = 0; j < a->n_refused; j++)
			if (a->refused[j]->key.len == items[i].key.len &&
			    memcmp(a->refused[j]->key.data, items[i].key.data,
			           items[i].key.len) == 0)
				why = a->refused[j]->reason;
		if (why != NULL)
			printf("item %zu refused: %s\n", i, why);
		else
			printf("item %zu %s\n", i,
			       acked ? "acked" : "not-acked");
	}
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "outbox_send: %s\n", err.msg);
	secure_zero(sec, sizeof(sec));
	passphrase_free(pass, passlen);
	for (i = 0; i < SEND_ITEMS_MAX; i++)
		OPENSSL_free(ders[i]);
	msg_free(reply);
	free(buf);
	EVP_PKEY_free(curve);
	if (s != NULL)
		zmq_close(s);
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	return rc;
}
