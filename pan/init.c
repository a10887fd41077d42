/*
 * pan init: create a deployment.
 *
 * Makes, in the data directory, the Root CA ("Certificate Services Root CA -
 * <host>", self-signed) and the PAN's Node CA (signed by the root), each key
 * encrypted under the node passphrase; the PAN's CURVE key pair for the
 * messaging layer; the store, with both CA certificates recorded as
 * issued; and the OCSP responder certificate of the upper levels (issued
 * by the Node CA, recorded too; ocsp.c).  node.conf is written last: a directory without it holds no
 * deployment, so an init cut short by a crash can simply be run again.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "cert.h"
#include "curve.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "pan.h"
#include "store.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define INIT_PATH_MAX 4096

struct init_opts {
	const char *hostname;
	const char *datadir;
	const char *passphrase_file;
	enum key_type ca_key;
	enum node_ocsp_hierarchy hierarchy;
	int force;
};

/* Files init makes, relative to the data directory; --force removes them. */
static const char *const init_files[] = {
	NODE_IDENTITY_FILE,
	NODE_CA_DIR "/root-ca.crt",
	NODE_CA_DIR "/root-ca.key",
	NODE_CA_DIR "/node-ca.crt",
	NODE_CA_DIR "/node-ca.key",
	PAN_OCSP_CERT,
	PAN_OCSP_KEY,
	NODE_CURVE_KEY,
	NODE_CURVE_PUB,
	NODE_STORE_DIR "/data.mdb",
	NODE_STORE_DIR "/lock.mdb",
};

static void
init_usage(FILE *fp)
{
	fprintf(fp,
	    "usage: pan init --hostname HOST --data-dir DIR [--ca-key TYPE]\n"
	    "                [--ocsp-hierarchy rfc6960|legacy] "
	    "[--passphrase-file FILE] [--force]\n"
	    "\n"
	    "  --ca-key TYPE        rsa:2048 rsa:3072 rsa:4096 ec:p256 "
	    "ec:p384 (default %s)\n"
	    "  --ocsp-hierarchy H   issuer of PSN OCSP responder certificates"
	    ":\n"
	    "                       rfc6960 = the PSN's Endpoint Sub CA "
	    "(default),\n"
	    "                       legacy = the PAN's Node CA (before ISE "
	    "3.1 patch 2)\n"
	    "  --passphrase-file F  the passphrase that encrypts the keys; "
	    "without it,\n"
	    "                       the environment variable %s\n"
	    "  --force              replace an existing deployment in DIR\n",
	    PAN_CA_KEY_DEFAULT, NODE_PASSPHRASE_ENV);
}

static int
init_parse(int argc, char **argv, struct init_opts *o)
{
	static const struct option longopts[] = {
		{ "hostname", required_argument, NULL, 'h' },
		{ "data-dir", required_argument, NULL, 'd' },
		{ "ca-key", required_argument, NULL, 'k' },
		{ "ocsp-hierarchy", required_argument, NULL, 'o' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	struct error err;
	int c;

	memset(o, 0, sizeof(*o));
	(void)key_type_from_name(PAN_CA_KEY_DEFAULT, &o->ca_key, NULL);
	o->hierarchy = NODE_OCSP_RFC6960;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			o->hostname = optarg;
			break;
		case 'd':
			o->datadir = optarg;
			break;
		case 'k':
			if (key_type_from_name(optarg, &o->ca_key, &err)) {
				fprintf(stderr, "pan init: --ca-key: %s\n",
				    err.msg);
				return -1;
			}
			break;
		case 'o':
			if (node_ocsp_hierarchy_from_name(optarg,
				&o->hierarchy, &err)) {
				fprintf(stderr, "pan init: --ocsp-hierarchy: "
				    "%s\n", err.msg);
				return -1;
			}
			break;
		case 'p':
			o->passphrase_file = optarg;
			break;
		case 'f':
			o->force = 1;
			break;
		case 'H':
			init_usage(stdout);
			exit(PAN_EXIT_OK);
		default:
			init_usage(stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "pan init: unexpected argument '%s'\n",
		    argv[optind]);
		return -1;
	}
	if (o->hostname == NULL || o->datadir == NULL) {
		fprintf(stderr, "pan init: --hostname and --data-dir are "
				"required\n");
		init_usage(stderr);
		return -1;
	}
	if (node_hostname_check(o->hostname, &err) == -1) {
		fprintf(stderr, "pan init: --hostname: %s\n", err.msg);
		return -1;
	}
	return 0;
}

/* Remove what an earlier init made (and nothing else). */
static int
init_remove_previous(const char *datadir, struct error *err)
{
	char path[INIT_PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(init_files); i++) {
		if (node_path(path, sizeof(path), datadir, init_files[i],
			err) == -1)
			return -1;
		if (unlink(path) == -1 && errno != ENOENT) {
			error_set(err, "cannot remove %s: %s", path,
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Make one CA: key, certificate, both saved; the caller frees. */
static int
init_make_ca(const struct init_opts *o, enum cert_profile profile,
    const char *name, X509 *issuer, EVP_PKEY *issuer_key, const char *pass,
    size_t passlen, EVP_PKEY **keyp, X509 **certp, struct error *err)
{
	struct cert_request req;
	char path[INIT_PATH_MAX], rel[64];
	EVP_PKEY *key;
	X509 *cert = NULL;
	int rc = -1;

	cert_request_init(&req, profile);
	if ((key = key_generate(o->ca_key, err)) == NULL)
		goto out;
	if (cert_request_set_product_cn(&req, o->hostname, err) == -1 ||
	    cert_request_set_key(&req, key, err) == -1 ||
	    cert_issue(&req, issuer, issuer != NULL ? issuer_key : key, &cert,
		err) == -1)
		goto out;
	snprintf(rel, sizeof(rel), "%s/%s.key", NODE_CA_DIR, name);
	if (node_path(path, sizeof(path), o->datadir, rel, err) == -1 ||
	    key_save(key, path, pass, passlen, err) == -1)
		goto out;
	snprintf(rel, sizeof(rel), "%s/%s.crt", NODE_CA_DIR, name);
	if (node_path(path, sizeof(path), o->datadir, rel, err) == -1 ||
	    cert_save_pem(cert, path, err) == -1)
		goto out;
	*keyp = key;
	*certp = cert;
	key = NULL;
	cert = NULL;
	rc = 0;
out:
	cert_request_free(&req);
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

static int
init_curve(const struct init_opts *o, const char *pass, size_t passlen,
    struct error *err)
{
	char path[INIT_PATH_MAX], pub[CURVE_Z85_LEN + 1];
	EVP_PKEY *key;
	int rc = -1;

	if ((key = curve_generate(err)) == NULL)
		return -1;
	if (curve_z85(key, pub, NULL, err) == -1)
		goto out;
	if (node_path(path, sizeof(path), o->datadir, NODE_CURVE_KEY, err) ||
	    key_save(key, path, pass, passlen, err) == -1)
		goto out;
	pub[CURVE_Z85_LEN - 1] = '\n';
	if (node_path(path, sizeof(path), o->datadir, NODE_CURVE_PUB, err) ||
	    file_write_atomic(path, pub, CURVE_Z85_LEN, 0644, err) == -1)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(key);
	return rc;
}

static int
init_store(const struct init_opts *o, X509 *root, X509 *node_ca,
    struct error *err)
{
	uint8_t root_kid[STORE_KEY_ID_LEN];
	char path[INIT_PATH_MAX];
	struct store *st = NULL;
	int64_t now = time(NULL);
	int rc = -1;

	if (node_path(path, sizeof(path), o->datadir, NODE_STORE_DIR, err) ||
	    store_open(path, NULL, &st, err) == -1)
		return -1;
	/* Both CA certificates are issued by the root's key. */
	if (store_issuer_key_id(root, root_kid, err) == -1 ||
	    store_put_x509(st, root, root_kid, o->hostname,
		cert_profile_name(CERT_PROFILE_ROOT_CA), now, err) == -1 ||
	    store_put_x509(st, node_ca, root_kid, o->hostname,
		cert_profile_name(CERT_PROFILE_NODE_CA), now, err) == -1)
		goto out;
	rc = 0;
out:
	store_close(st);
	return rc;
}

static int
init_run(const struct init_opts *o, struct error *err)
{
	struct node_identity id, old;
	EVP_PKEY *root_key = NULL, *node_key = NULL;
	X509 *root = NULL, *node_ca = NULL;
	char path[INIT_PATH_MAX];
	char *pass = NULL;
	size_t passlen = 0;
	int rc = -1;

	/* Refuse before any work, and before asking for the passphrase. */
	if (node_identity_read(o->datadir, &old, NULL) == 0 && !o->force) {
		error_set(err, "%s already holds a deployment (%s, %s, "
		    "deployment %s); use --force to replace it, which "
		    "destroys its CA", o->datadir, old.hostname,
		    node_role_name(old.role), old.deployment_id);
		return -1;
	}
	if ((pass = node_passphrase(o->passphrase_file, &passlen, err)) ==
	    NULL)
		return -1;
	if (dir_create(o->datadir, 0700, err) == -1)
		goto out;
	if (node_path(path, sizeof(path), o->datadir, NODE_CA_DIR, err) ||
	    dir_create(path, 0700, err) == -1)
		goto out;
	if (node_path(path, sizeof(path), o->datadir, NODE_LOG_DIR, err) ||
	    dir_create(path, 0750, err) == -1)
		goto out;
	if (log_open(o->hostname, "init", path, true, err) == -1)
		goto out;
	if (o->force && init_remove_previous(o->datadir, err) == -1)
		goto out;

	log_info(LOG_CA_SERVICE, "creating deployment for %s in %s "
	    "(CA keys %s, OCSP hierarchy %s)", o->hostname, o->datadir,
	    key_type_name(o->ca_key), node_ocsp_hierarchy_name(o->hierarchy));
	if (init_make_ca(o, CERT_PROFILE_ROOT_CA, "root-ca", NULL, NULL, pass,
		passlen, &root_key, &root, err) == -1)
		goto out;
	if (init_make_ca(o, CERT_PROFILE_NODE_CA, "node-ca", root, root_key,
		pass, passlen, &node_key, &node_ca, err) == -1)
		goto out;
	if (init_curve(o, pass, passlen, err) == -1 ||
	    init_store(o, root, node_ca, err) == -1 ||
	    pan_ocsp_create_local(o->datadir, o->hostname, node_ca, node_key,
	                          pass, passlen, err) == -1)
		goto out;

	memset(&id, 0, sizeof(id));
	snprintf(id.hostname, sizeof(id.hostname), "%s", o->hostname);
	id.role = NODE_ROLE_PAN;
	id.ocsp_hierarchy = o->hierarchy;
	id.created = time(NULL);
	if (node_new_deployment_id(id.deployment_id, err) == -1 ||
	    node_identity_write(o->datadir, &id, err) == -1)
		goto out;
	log_info(LOG_MAIN, "deployment %s created", id.deployment_id);
	rc = 0;
out:
	if (rc == -1)
		log_error(LOG_MAIN, "init failed: %s", err->msg);
	passphrase_free(pass, passlen);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(node_key);
	X509_free(root);
	X509_free(node_ca);
	return rc;
}

int
pan_init_main(int argc, char **argv)
{
	struct init_opts o;
	struct error err = { { 0 } };

	if (init_parse(argc, argv, &o) == -1)
		return PAN_EXIT_USAGE;
	if (init_run(&o, &err) == -1) {
		fprintf(stderr, "pan init: %s\n", err.msg);
		return PAN_EXIT_FAIL;
	}
	return PAN_EXIT_OK;
}
