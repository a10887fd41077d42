/*
 * export: `pan ca export --out FILE`, the product's "Export Internal CA
 * Store" (common/castore.h, docs/san.md).
 *
 * A local command, like `pan init`: it reads the CA keys from the data
 * directory with the node passphrase and writes them, with their
 * certificates, into one PKCS#12 file under the export key the admin
 * gives in a file or the environment.  Nothing goes over the network; the
 * admin carries the file to the SAN (`san ca import`).  The running
 * daemon is not involved: its signer holds the keys, and the main
 * process, which parses network input, never sees them.
 */
#include <stdio.h>
#include <string.h>

#include "castore.h"
#include "cert.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "pan.h"
#include "util.h"

#define EXPORT_USAGE                                                           \
	"usage: pan ca export --out FILE [--key-file F] [--passphrase-file P] " \
	"--data-dir DIR\n"                                                     \
	"       the export key: --key-file F (mode 0600) or " CASTORE_KEY_ENV \
	", never the command line\n"

/* Load one entry (certificate and key) of the data directory. */
static int
export_entry(const char *datadir, const char *crt, const char *key,
             const char *pass, size_t passlen, struct castore_entry *e,
             struct error *err)
{
	char path[PAN_PATH_MAX];

	if (node_path(path, sizeof(path), datadir, crt, err) == -1 ||
	    (e->cert = cert_load_pem(path, err)) == NULL ||
	    node_path(path, sizeof(path), datadir, key, err) == -1 ||
	    (e->key = key_load(path, pass, passlen, err)) == NULL)
		return -1;
	return 0;
}

int
pan_ca_export(int argc, char **argv)
{
	struct castore_args a;
	struct castore cs = {0};
	struct node_identity id;
	struct error err = {{0}};
	char *pass = NULL, *xkey = NULL, path[PAN_PATH_MAX];
	unsigned char *der = NULL;
	size_t passlen = 0, xkeylen = 0, len = 0;
	int rc = PAN_EXIT_FAIL;

	if ((rc = castore_args_parse("pan ca export", "out", EXPORT_USAGE,
	                             PAN_DATA_DIR_ENV, argc, argv, &a)) != -1)
		return rc;
	rc = PAN_EXIT_FAIL;
	if (file_exists(a.file)) {
		error_set(&err, "%s exists; choose another name or remove it",
		          a.file);
		goto out;
	}
	if (node_identity_read(a.datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_PAN) {
		error_set(&err, "%s holds a %s node, not a pan", a.datadir,
		          node_role_name(id.role));
		goto out;
	}
	if ((xkey = castore_key_load(a.keyfile, &xkeylen, &err)) == NULL) {
		error_prefix(&err, "export key");
		goto out;
	}
	if ((pass = node_passphrase(a.passfile, &passlen, &err)) == NULL)
		goto out;
	if (export_entry(a.datadir, NODE_CA_DIR "/root-ca.crt",
	                 NODE_CA_DIR "/root-ca.key", pass, passlen, &cs.root,
	                 &err) == -1 ||
	    export_entry(a.datadir, NODE_CA_DIR "/node-ca.crt",
	                 NODE_CA_DIR "/node-ca.key", pass, passlen, &cs.node,
	                 &err) == -1)
		goto out;
	/* The PAN's OCSP responder (docs/ocsp.md), when it has one. */
	if (node_path(path, sizeof(path), a.datadir, PAN_OCSP_CERT, &err) == -1)
		goto out;
	if (file_exists(path) &&
	    export_entry(a.datadir, PAN_OCSP_CERT, PAN_OCSP_KEY, pass, passlen,
	                 &cs.ocsp, &err) == -1)
		goto out;
	if (castore_pack(&cs, xkey, xkeylen, &der, &len, &err) == -1 ||
	    file_write_atomic(a.file, der, len, 0600, &err) == -1)
		goto out;
	printf("CA store of %s written to %s: Root CA, Node CA%s; keys "
	       "encrypted (PKCS#12, AES-256-CBC, PBKDF2-HMAC-SHA256, "
	       "SHA-256 MAC)\n",
	       id.hostname, a.file,
	       cs.ocsp.cert != NULL ? ", OCSP responder" : "");
	log_info(LOG_MAIN, "CA store exported to %s", a.file);
	rc = PAN_EXIT_OK;
out:
	if (rc != PAN_EXIT_OK)
		fprintf(stderr, "pan ca export: %s\n", err.msg);
	if (der != NULL)
		secure_zero(der, len);
	OPENSSL_free(der);
	castore_free(&cs);
	passphrase_free(pass, passlen);
	passphrase_free(xkey, xkeylen);
	return rc;
}
