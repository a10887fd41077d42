/*
 * ca: `san ca import --in FILE`, the product's "Import Internal CA
 * Store" (common/castore.h, docs/san.md): the PAN's Root CA, Node CA and
 * OCSP responder keys and certificates, as `pan ca export` wrote them,
 * for the SAN to act as the CA once promoted.
 *
 * Everything is checked before anything is written: the file's MAC under
 * the export key, each key against its certificate, the Root CA being the
 * one this SAN already trusts (its deployment's, from the join), the Node
 * CA being the PAN's (its name, from deployment.conf) and both verifying
 * strictly up to that root.  The keys are then saved encrypted under the
 * SAN's own passphrase (keys.h), all into a staging directory that is
 * renamed into place in one step: an import is whole or absent.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include <openssl/x509.h>

#include "castore.h"
#include "cert.h"
#include "chain.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "san.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define CA_PATH_MAX 4096
/* Where an imported CA store lives, under the data directory. */

#define CA_IMPORT_STAGING NODE_CA_DIR "/.imported.tmp"

#define IMPORT_USAGE                                                           \
	"usage: san ca import --in FILE [--key-file F] [--passphrase-file P] " \
	"--data-dir DIR\n"                                                     \
	"       the export key: --key-file F (mode 0600) or " CASTORE_KEY_ENV \
	", never the command line\n"

/* The Root CA is this SAN's, the Node CA the PAN's, both verify. */
static int
import_check(const char *datadir, const struct castore *cs, struct error *err)
{
	struct join_deployment dep;
	const struct join_admin *pan;
	STACK_OF(X509) *anchors = NULL, *untrusted = NULL;
	char path[CA_PATH_MAX], cn[CERT_CN_BUF], want[CERT_CN_BUF];
	X509 *root = NULL;
	int rc = -1;

	if (node_path(path, sizeof(path), datadir, NODE_CA_DIR "/root-ca.crt",
	              err) == -1 ||
	    (root = cert_load_pem(path, err)) == NULL ||
	    join_deployment_read(datadir, &dep, err) == -1)
		goto out;
	if (X509_cmp(root, cs->root.cert) != 0) {
		error_set(err, "the file holds the CA store of another "
		               "deployment: its Root CA is not the one this SAN "
		               "joined under");
		goto out;
	}
	if ((pan = join_deployment_pan(&dep)) == NULL ||
	    cert_profile_cn(CERT_PROFILE_NODE_CA, pan->hostname, want,
	                    sizeof(want), err) == -1)
		goto out;
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(cs->node.cert),
	                              NID_commonName, cn, sizeof(cn)) <= 0 ||
	    strcmp(cn, want) != 0) {
		error_set(err, "the Node CA in the file is not the PAN's (%s)",
		          want);
		goto out;
	}
	if ((anchors = sk_X509_new_null()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL ||
	    !sk_X509_push(anchors, root) ||
	    !sk_X509_push(untrusted, cs->node.cert)) {
		error_set(err, "out of memory");
		goto out;
	}
	root = NULL; /* anchors holds it */
	if (chain_verify(cs->node.cert, NULL, anchors, 0, NULL, err) == -1) {
		error_prefix(err, "Node CA");
		goto out;
	}
	if (cs->ocsp.cert != NULL &&
	    chain_verify(cs->ocsp.cert, untrusted, anchors, 0, NULL, err) ==
	        -1) {
		error_prefix(err, "OCSP responder");
		goto out;
	}
	rc = 0;
out:
	X509_free(root);
	sk_X509_pop_free(anchors, X509_free);
	sk_X509_free(untrusted); /* does not own cs's certificate */
	return rc;
}

/* Remove the staging directory and what it holds (a failed import). */
static void
import_unstage(const char *staging)
{
	static const char *const names[] = {
	    "root-ca.crt",    "root-ca.key",       "node-ca.crt",
	    "node-ca.key",    "ocsp-responder.crt", "ocsp-responder.key",
	    "root-ca.key.tmp", "node-ca.key.tmp",  "ocsp-responder.key.tmp",
	};
	char path[CA_PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", staging, names[i]);
		(void)unlink(path);
	}
	(void)rmdir(staging);
}

/* Save one entry into dir: the certificate, the key under pass. */
static int
import_save(const char *dir, const char *name, const struct castore_entry *e,
            const char *pass, size_t passlen, struct error *err)
{
	char path[CA_PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	if (key_save(e->key, path, pass, passlen, err) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
	return cert_save_pem(e->cert, path, err);
}

static int
san_ca_import(int argc, char **argv)
{
	struct castore_args a;
	struct castore cs = {0};
	struct node_identity id;
	struct error err = {{0}};
	char *pass = NULL, *xkey = NULL;
	char dest[CA_PATH_MAX], staging[CA_PATH_MAX], path[CA_PATH_MAX];
	uint8_t *der = NULL;
	size_t passlen = 0, xkeylen = 0, len = 0;
	EVP_PKEY *own = NULL;
	bool staged = false;
	int rc;

	if ((rc = castore_args_parse("san ca import", "in", IMPORT_USAGE,
	                             NODE_ENV_PREFIX "DATA_DIR", argc, argv,
	                             &a)) != -1)
		return rc;
	rc = SAN_EXIT_FAIL;
	if (node_identity_read(a.datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_SAN) {
		error_set(&err, "%s holds a %s node, not a san", a.datadir,
		          node_role_name(id.role));
		goto out;
	}
	if (node_path(dest, sizeof(dest), a.datadir, CA_IMPORT_DIR, &err) ==
	        -1 ||
	    node_path(staging, sizeof(staging), a.datadir, CA_IMPORT_STAGING,
	              &err) == -1)
		goto out;
	if (file_exists(dest)) {
		error_set(&err, "a CA store is already imported (%s)", dest);
		goto out;
	}
	if ((xkey = castore_key_load(a.keyfile, &xkeylen, &err)) == NULL) {
		error_prefix(&err, "export key");
		goto out;
	}
	/* The SAN's own passphrase: proven by its own Node CA key. */
	if ((pass = node_passphrase(a.passfile, &passlen, &err)) == NULL ||
	    node_path(path, sizeof(path), a.datadir, NODE_CA_DIR "/node-ca.key",
	              &err) == -1 ||
	    (own = key_load(path, pass, passlen, &err)) == NULL)
		goto out;
	if ((der = file_read(a.file, CASTORE_FILE_MAX, &len, &err)) == NULL ||
	    castore_unpack(der, len, xkey, xkeylen, &cs, &err) == -1 ||
	    import_check(a.datadir, &cs, &err) == -1)
		goto out;
	/* A staging directory left by a crash is ours to remove. */
	import_unstage(staging);
	if (mkdir(staging, 0700) == -1) {
		error_set(&err, "mkdir %s: %s", staging, strerror(errno));
		goto out;
	}
	staged = true;
	if (import_save(staging, CASTORE_ROOT_CA, &cs.root, pass, passlen,
	                &err) == -1 ||
	    import_save(staging, CASTORE_NODE_CA, &cs.node, pass, passlen,
	                &err) == -1 ||
	    (cs.ocsp.cert != NULL &&
	     import_save(staging, CASTORE_OCSP, &cs.ocsp, pass, passlen,
	                 &err) == -1))
		goto out;
	if (rename(staging, dest) == -1) {
		error_set(&err, "rename %s to %s: %s", staging, dest,
		          strerror(errno));
		goto out;
	}
	staged = false;
	printf("CA store imported into %s: the Root CA and the Node CA of "
	       "the PAN%s, keys encrypted under this node's passphrase\n",
	       dest, cs.ocsp.cert != NULL ? ", its OCSP responder" : "");
	rc = SAN_EXIT_OK;
out:
	if (staged)
		import_unstage(staging);
	if (rc != SAN_EXIT_OK)
		fprintf(stderr, "san ca import: %s\n", err.msg);
	if (der != NULL)
		secure_zero(der, len);
	free(der);
	EVP_PKEY_free(own);
	castore_free(&cs);
	passphrase_free(pass, passlen);
	passphrase_free(xkey, xkeylen);
	return rc;
}

int
san_ca_main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "import") == 0)
		return san_ca_import(argc - 1, argv + 1);
	fputs(IMPORT_USAGE, argc >= 2 && strcmp(argv[1], "--help") == 0
	                        ? stdout
	                        : stderr);
	return argc >= 2 && strcmp(argv[1], "--help") == 0 ? SAN_EXIT_OK
	                                                   : SAN_EXIT_USAGE;
}
