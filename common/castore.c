/*
 * castore: the internal CA store in a PKCS#12 file (castore.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include "castore.h"
#include "cli.h"
#include "keys.h"
#include "log.h"
#include "util.h"

/* The words of every refusal that may be a wrong key. */
#define WRONG_KEY "wrong export key or damaged file"

void
castore_free(struct castore *cs)
{
	struct castore_entry *e[] = {&cs->root, &cs->node, &cs->ocsp};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(e); i++) {
		X509_free(e[i]->cert);
		EVP_PKEY_free(e[i]->key);
	}
	memset(cs, 0, sizeof(*cs));
}

/* The entries of cs with their names, in file order. */
struct named {
	const char *name;
	const struct castore_entry *e;
};

/* Add one entry's certificate and key bags, named and tied together. */
static int
pack_entry(STACK_OF(PKCS12_SAFEBAG) **certs, STACK_OF(PKCS12_SAFEBAG) **keys,
           const char *name, const struct castore_entry *e, const char *pass,
           struct error *err)
{
	unsigned char kid[EVP_MAX_MD_SIZE];
	unsigned int kidlen = 0;
	PKCS12_SAFEBAG *bag;

	/* localKeyId: the certificate's SHA-1, as openssl pkcs12 does. */
	if (!X509_digest(e->cert, EVP_sha1(), kid, &kidlen)) {
		log_crypto(LOG_MAIN, err, "X509_digest", name);
		return -1;
	}
	if ((bag = PKCS12_add_cert(certs, e->cert)) == NULL ||
	    !PKCS12_add_friendlyname_asc(bag, name, -1) ||
	    !PKCS12_add_localkeyid(bag, kid, (int)kidlen)) {
		log_crypto(LOG_MAIN, err, "PKCS12_add_cert", name);
		return -1;
	}
	/* PBES2: PBKDF2 (HMAC-SHA-256) and AES-256-CBC (RFC 8018). */
	if ((bag = PKCS12_add_key_ex(keys, e->key, 0, CASTORE_ITER,
	                             NID_aes_256_cbc, pass, NULL, NULL)) ==
	        NULL ||
	    !PKCS12_add_friendlyname_asc(bag, name, -1) ||
	    !PKCS12_add_localkeyid(bag, kid, (int)kidlen)) {
		log_crypto(LOG_MAIN, err, "PKCS12_add_key_ex", name);
		return -1;
	}
	return 0;
}

int
castore_pack(const struct castore *cs, const char *pass, size_t passlen,
             unsigned char **der, size_t *len, struct error *err)
{
	const struct named entries[] = {
	    {CASTORE_ROOT_CA, &cs->root},
	    {CASTORE_NODE_CA, &cs->node},
	    {CASTORE_OCSP, &cs->ocsp},
	};
	STACK_OF(PKCS12_SAFEBAG) *certs = NULL, *keys = NULL;
	STACK_OF(PKCS7) *safes = NULL;
	PKCS12 *p12 = NULL;
	unsigned char *out = NULL;
	size_t i;
	int n, rc = -1;

	*der = NULL;
	*len = 0;
	for (i = 0; i < ARRAY_SIZE(entries); i++) {
		if (entries[i].e->cert == NULL)
			continue;
		if (pack_entry(&certs, &keys, entries[i].name, entries[i].e,
		               pass, err) == -1)
			goto out;
	}
	/* Certificates in an encrypted safe, keys (shrouded) in a plain one. */
	if (PKCS12_add_safe_ex(&safes, certs, NID_aes_256_cbc, CASTORE_ITER,
	                       pass, NULL, NULL) != 1 ||
	    PKCS12_add_safe_ex(&safes, keys, -1, 0, NULL, NULL, NULL) != 1) {
		log_crypto(LOG_MAIN, err, "PKCS12_add_safe_ex", "CA store");
		goto out;
	}
	if ((p12 = PKCS12_add_safes_ex(safes, 0, NULL, NULL)) == NULL) {
		log_crypto(LOG_MAIN, err, "PKCS12_add_safes_ex", "CA store");
		goto out;
	}
	/* RFC 7292 section 5: the MAC, HMAC-SHA-256. */
	if (!PKCS12_set_mac(p12, pass, (int)passlen, NULL, 0, CASTORE_ITER,
	                    EVP_sha256())) {
		log_crypto(LOG_MAIN, err, "PKCS12_set_mac", "CA store");
		goto out;
	}
	if ((n = i2d_PKCS12(p12, &out)) <= 0) {
		log_crypto(LOG_MAIN, err, "i2d_PKCS12", "CA store");
		goto out;
	}
	*der = out;
	*len = (size_t)n;
	rc = 0;
out:
	sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
	sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
	sk_PKCS7_pop_free(safes, PKCS7_free);
	PKCS12_free(p12);
	return rc;
}

/* The entry a friendlyName names; NULL for an unknown name. */
static struct castore_entry *
entry_named(struct castore *cs, const char *name)
{
	if (name == NULL)
		return NULL;
	if (strcmp(name, CASTORE_ROOT_CA) == 0)
		return &cs->root;
	if (strcmp(name, CASTORE_NODE_CA) == 0)
		return &cs->node;
	if (strcmp(name, CASTORE_OCSP) == 0)
		return &cs->ocsp;
	return NULL;
}

/* Take one bag into cs. */
static int
unpack_bag(const PKCS12_SAFEBAG *bag, const char *pass, size_t passlen,
           struct castore *cs, struct error *err)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	struct castore_entry *e;
	char *name = PKCS12_get_friendlyname((PKCS12_SAFEBAG *)bag);
	int rc = -1;

	if ((e = entry_named(cs, name)) == NULL) {
		error_set(err, "an entry named '%s', which a CA store does not "
		               "hold",
		          name != NULL ? name : "(none)");
		goto out;
	}
	switch (PKCS12_SAFEBAG_get_nid(bag)) {
	case NID_certBag:
		if (PKCS12_SAFEBAG_get_bag_nid(bag) != NID_x509Certificate ||
		    e->cert != NULL ||
		    (e->cert = PKCS12_SAFEBAG_get1_cert(bag)) == NULL) {
			error_set(err, "%s: a second or unreadable certificate",
			          name);
			goto out;
		}
		break;
	case NID_pkcs8ShroudedKeyBag:
		if (e->key != NULL) {
			error_set(err, "%s: a second key", name);
			goto out;
		}
		if ((p8 = PKCS12_decrypt_skey(bag, pass, (int)passlen)) ==
		        NULL ||
		    (e->key = EVP_PKCS82PKEY(p8)) == NULL) {
			ERR_clear_error();
			error_set(err, "%s: the key does not decrypt: " WRONG_KEY,
			          name);
			goto out;
		}
		break;
	default:
		/* A plain keyBag would be a key unprotected: never ours. */
		error_set(err, "%s: a bag of type %d, not a certificate or an "
		               "encrypted key",
		          name, PKCS12_SAFEBAG_get_nid(bag));
		goto out;
	}
	rc = 0;
out:
	PKCS8_PRIV_KEY_INFO_free(p8);
	OPENSSL_free(name);
	return rc;
}

/* cert was signed by issuer's key and names it as its issuer. */
static bool
signed_by(X509 *cert, X509 *issuer)
{
	bool ok = X509_check_issued(issuer, cert) == X509_V_OK &&
	          X509_verify(cert, X509_get0_pubkey(issuer)) == 1;

	ERR_clear_error();
	return ok;
}

/* The whole: every entry complete, each key its certificate's, the chain. */
static int
unpack_check(struct castore *cs, struct error *err)
{
	const struct named entries[] = {
	    {CASTORE_ROOT_CA, &cs->root},
	    {CASTORE_NODE_CA, &cs->node},
	    {CASTORE_OCSP, &cs->ocsp},
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(entries); i++) {
		const struct castore_entry *e = entries[i].e;

		/* The OCSP responder is optional; the CAs are not. */
		if (e->cert == NULL && e->key == NULL && e == &cs->ocsp)
			continue;
		if (e->cert == NULL || e->key == NULL) {
			error_set(err, "%s: %s missing", entries[i].name,
			          e->cert == NULL ? "the certificate"
			                          : "the key");
			return -1;
		}
		if (X509_check_private_key(e->cert, e->key) != 1) {
			ERR_clear_error();
			error_set(err, "%s: the key is not the certificate's",
			          entries[i].name);
			return -1;
		}
	}
	if (!signed_by(cs->root.cert, cs->root.cert) ||
	    X509_check_ca(cs->root.cert) == 0) {
		error_set(err, "%s: not a self-signed CA certificate",
		          CASTORE_ROOT_CA);
		return -1;
	}
	if (!signed_by(cs->node.cert, cs->root.cert) ||
	    X509_check_ca(cs->node.cert) == 0) {
		error_set(err, "%s: not a CA certificate issued by the Root CA",
		          CASTORE_NODE_CA);
		return -1;
	}
	if (cs->ocsp.cert != NULL && !signed_by(cs->ocsp.cert, cs->node.cert)) {
		error_set(err, "%s: not issued by the Node CA", CASTORE_OCSP);
		return -1;
	}
	return 0;
}

int
castore_unpack(const unsigned char *der, size_t len, const char *pass,
               size_t passlen, struct castore *cs, struct error *err)
{
	STACK_OF(PKCS7) *safes = NULL;
	STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
	const unsigned char *p = der;
	PKCS12 *p12 = NULL;
	int i, j, rc = -1;

	memset(cs, 0, sizeof(*cs));
	if (len == 0 || len > CASTORE_FILE_MAX ||
	    (p12 = d2i_PKCS12(NULL, &p, (long)len)) == NULL ||
	    p != der + len) {
		ERR_clear_error();
		error_set(err, WRONG_KEY " (not a PKCS#12 file)");
		goto out;
	}
	/* RFC 7292 section 5: nothing is used before the MAC verifies. */
	if (!PKCS12_mac_present(p12)) {
		error_set(err, "a PKCS#12 file without a MAC: refused");
		goto out;
	}
	if (!PKCS12_verify_mac(p12, pass, (int)passlen)) {
		ERR_clear_error();
		error_set(err, WRONG_KEY " (the MAC does not verify)");
		goto out;
	}
	if ((safes = PKCS12_unpack_authsafes(p12)) == NULL) {
		ERR_clear_error();
		error_set(err, WRONG_KEY " (no readable contents)");
		goto out;
	}
	for (i = 0; i < sk_PKCS7_num(safes); i++) {
		PKCS7 *p7 = sk_PKCS7_value(safes, i);

		if (PKCS7_type_is_data(p7))
			bags = PKCS12_unpack_p7data(p7);
		else if (PKCS7_type_is_encrypted(p7))
			bags = PKCS12_unpack_p7encdata(p7, pass, (int)passlen);
		else
			bags = NULL;
		if (bags == NULL) {
			ERR_clear_error();
			error_set(err, WRONG_KEY " (a safe does not decrypt)");
			goto out;
		}
		for (j = 0; j < sk_PKCS12_SAFEBAG_num(bags); j++)
			if (unpack_bag(sk_PKCS12_SAFEBAG_value(bags, j), pass,
			               passlen, cs, err) == -1)
				goto out;
		sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
		bags = NULL;
	}
	if (unpack_check(cs, err) == -1)
		goto out;
	rc = 0;
out:
	if (rc == -1)
		castore_free(cs);
	sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
	sk_PKCS7_pop_free(safes, PKCS7_free);
	PKCS12_free(p12);
	return rc;
}

char *
castore_key_load(const char *file, size_t *len, struct error *err)
{
	return passphrase_load(file, CASTORE_KEY_ENV, len, err);
}

bool
castore_argv_key(const char *arg)
{
	static const char *const opts[] = {"--key", "--export-key",
	                                   "--password", "--pass",
	                                   "--passin", "--passout"};
	size_t i, n;

	for (i = 0; i < ARRAY_SIZE(opts); i++) {
		n = strlen(opts[i]);
		if (strncmp(arg, opts[i], n) == 0 &&
		    (arg[n] == '\0' || arg[n] == '='))
			return true;
	}
	return false;
}

int
castore_args_parse(const char *cmd, const char *file_opt, const char *usage,
                   const char *datadir_env, int argc, char **argv,
                   struct castore_args *a)
{
	const struct option longopts[] = {
	    {file_opt, required_argument, NULL, 'f'},
	    {"key-file", required_argument, NULL, 'k'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"data-dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c, i;

	memset(a, 0, sizeof(*a));
	a->datadir = getenv(datadir_env);
	/* Before anything else: a key on the command line is refused. */
	for (i = 1; i < argc; i++)
		if (castore_argv_key(argv[i])) {
			fprintf(stderr, "%s: %s\n", cmd, CASTORE_ARGV_REFUSED);
			return CLI_EXIT_USAGE;
		}
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			a->file = optarg;
			break;
		case 'k':
			a->keyfile = optarg;
			break;
		case 'p':
			a->passfile = optarg;
			break;
		case 'd':
			a->datadir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return CLI_EXIT_OK;
		default:
			fputs(usage, stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc || a->file == NULL || a->datadir == NULL ||
	    a->datadir[0] == '\0') {
		fputs(usage, stderr);
		return CLI_EXIT_USAGE;
	}
	return -1;
}
