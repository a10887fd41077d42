/*
 * chain: path validation with one set of strict flags and one shape of
 * failure message, and PEM bundles in and out (see chain.h for why).
 */
#include "chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "util.h"

/* Buffer for a DN in a message. */
#define CHAIN_DN_MAX 256

static void
dn_string(const X509_NAME *name, char *buf, size_t len)
{
	BIO *bio;
	int n;

	snprintf(buf, len, "(no name)");
	if (name == NULL || (bio = BIO_new(BIO_s_mem())) == NULL)
		return;
	/* RFC 2253 order, UTF-8 kept as is rather than escaped. */
	if (X509_NAME_print_ex(bio, name, 0,
	                       XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
	    (n = BIO_read(bio, buf, (int)len - 1)) > 0)
		buf[n] = '\0';
	BIO_free(bio);
	ERR_clear_error();
}

static int
purpose_id(unsigned flags)
{
	switch (flags & CHAIN_PURPOSE_MASK) {
	case CHAIN_PURPOSE_TLS_SERVER:
		return X509_PURPOSE_SSL_SERVER;
	case CHAIN_PURPOSE_TLS_CLIENT:
		return X509_PURPOSE_SSL_CLIENT;
	case CHAIN_PURPOSE_ANY:
	case CHAIN_PURPOSE_OCSP_SIGN:
		/* OpenSSL's OCSP helper purpose checks nothing on the leaf. */
		return X509_PURPOSE_ANY;
	default:
		return -1;
	}
}

/*
 * RFC 6960 4.2.2.2: a delegated responder certificate carries
 * id-kp-OCSPSigning; if it has keyUsage, digitalSignature must be there.
 */
static int
check_ocsp_signer(X509 *leaf, const char *dn, struct error *err)
{
	uint32_t flags = X509_get_extension_flags(leaf);

	if ((flags & EXFLAG_XKUSAGE) == 0 ||
	    (X509_get_extended_key_usage(leaf) & XKU_OCSP_SIGN) == 0) {
		error_set(err,
		          "no id-kp-OCSPSigning in extendedKeyUsage at "
		          "depth 0 (%s)",
		          dn);
		return -1;
	}
	if ((flags & EXFLAG_KUSAGE) &&
	    (X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) == 0) {
		error_set(err,
		          "no digitalSignature in keyUsage at depth 0 "
		          "(%s)",
		          dn);
		return -1;
	}
	return 0;
}

int
chain_verify(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * anchors,
             unsigned flags, STACK_OF(X509) * *built, struct error *err)
{
	char leaf_dn[CHAIN_DN_MAX], dn[CHAIN_DN_MAX];
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	unsigned long vflags;
	X509 *cur;
	int i, purpose, ok, verr, depth, rc = -1;

	if (built != NULL)
		*built = NULL;
	if (leaf == NULL || anchors == NULL || sk_X509_num(anchors) == 0) {
		error_set(err, "no certificate or no trust anchor to verify "
		               "against");
		return -1;
	}
	dn_string(X509_get_subject_name(leaf), leaf_dn, sizeof(leaf_dn));
	if ((purpose = purpose_id(flags)) == -1) {
		error_set(err, "unknown purpose %#x", flags);
		return -1;
	}
	if ((store = X509_STORE_new()) == NULL) {
		log_crypto(LOG_MAIN, err, "X509_STORE_new", leaf_dn);
		goto out;
	}
	for (i = 0; i < sk_X509_num(anchors); i++) {
		if (X509_STORE_add_cert(store, sk_X509_value(anchors, i)) !=
		    1) {
			log_crypto(LOG_MAIN, err, "X509_STORE_add_cert",
			           leaf_dn);
			goto out;
		}
	}
	/* RFC 5280 profile checks OpenSSL otherwise lets pass. */
	vflags = X509_V_FLAG_X509_STRICT;
	if (flags & CHAIN_PARTIAL)
		vflags |= X509_V_FLAG_PARTIAL_CHAIN;
	if (X509_STORE_set_flags(store, vflags) != 1 ||
	    (ctx = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1 ||
	    X509_STORE_CTX_set_purpose(ctx, purpose) != 1) {
		log_crypto(LOG_MAIN, err, "X509_STORE_CTX_init", leaf_dn);
		goto out;
	}
	ok = X509_verify_cert(ctx);
	if (ok != 1) {
		verr = X509_STORE_CTX_get_error(ctx);
		if (verr == X509_V_OK) {
			/* No verdict: an internal error (memory, ...). */
			log_crypto(LOG_MAIN, err, "X509_verify_cert", leaf_dn);
			goto out;
		}
		depth = X509_STORE_CTX_get_error_depth(ctx);
		cur = X509_STORE_CTX_get_current_cert(ctx);
		if (cur != NULL)
			dn_string(X509_get_subject_name(cur), dn, sizeof(dn));
		else
			snprintf(dn, sizeof(dn), "%s", leaf_dn);
		error_set(err, "%s at depth %d (%s)",
		          X509_verify_cert_error_string(verr), depth, dn);
		ERR_clear_error();
		log_info(LOG_MAIN, "chain of %s does not verify: %s", leaf_dn,
		         err != NULL ? err->msg : "");
		goto out;
	}
	if ((flags & CHAIN_PURPOSE_MASK) == CHAIN_PURPOSE_OCSP_SIGN &&
	    check_ocsp_signer(leaf, leaf_dn, err) == -1) {
		log_info(LOG_MAIN, "chain of %s does not verify: %s", leaf_dn,
		         err != NULL ? err->msg : "");
		goto out;
	}
	if (built != NULL &&
	    (*built = X509_STORE_CTX_get1_chain(ctx)) == NULL) {
		log_crypto(LOG_MAIN, err, "X509_STORE_CTX_get1_chain", leaf_dn);
		goto out;
	}
	rc = 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

STACK_OF(X509) * chain_parse_pem(const void *buf, size_t len, struct error *err)
{
	STACK_OF(X509) *certs = NULL;
	BIO *bio = NULL;
	X509 *x;
	unsigned long e;

	if (len > CHAIN_FILE_MAX) {
		error_set(err,
		          "PEM bundle of %zu bytes is over the limit of "
		          "%d",
		          len, CHAIN_FILE_MAX);
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    (certs = sk_X509_new_null()) == NULL) {
		log_crypto(LOG_MAIN, err, "BIO_new_mem_buf", "PEM bundle");
		goto fail;
	}
	for (;;) {
		ERR_clear_error();
		if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
			e = ERR_peek_last_error();
			/* No further PEM block: the normal end. */
			if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
			    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_clear_error();
				break;
			}
			log_crypto(LOG_MAIN, err, "PEM_read_bio_X509",
			           "PEM bundle");
			goto fail;
		}
		if (sk_X509_num(certs) >= CHAIN_BUNDLE_MAX) {
			X509_free(x);
			error_set(err,
			          "more than %d certificates in a PEM "
			          "bundle",
			          CHAIN_BUNDLE_MAX);
			goto fail;
		}
		if (sk_X509_push(certs, x) <= 0) {
			X509_free(x);
			log_crypto(LOG_MAIN, err, "sk_X509_push", "PEM bundle");
			goto fail;
		}
	}
	if (sk_X509_num(certs) == 0) {
		error_set(err, "no certificate in PEM bundle");
		goto fail;
	}
	BIO_free(bio);
	return certs;
fail:
	BIO_free(bio);
	chain_free(certs);
	return NULL;
}

STACK_OF(X509) * chain_load_pem(const char *path, struct error *err)
{
	STACK_OF(X509) * certs;
	uint8_t *buf;
	size_t len;

	if ((buf = file_read(path, CHAIN_FILE_MAX, &len, err)) == NULL) {
		log_error(LOG_MAIN, "%s", err != NULL ? err->msg : path);
		return NULL;
	}
	if ((certs = chain_parse_pem(buf, len, err)) == NULL)
		error_prefix(err, "%s", path);
	free(buf);
	return certs;
}

int
chain_save_pem(STACK_OF(X509) * certs, const char *path, struct error *err)
{
	BIO *bio;
	char *data;
	long len;
	int i, rc = -1;

	if (sk_X509_num(certs) <= 0) {
		error_set(err, "%s: no certificate to write", path);
		return -1;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		log_crypto(LOG_MAIN, err, "BIO_new", path);
		return -1;
	}
	for (i = 0; i < sk_X509_num(certs); i++) {
		if (PEM_write_bio_X509(bio, sk_X509_value(certs, i)) != 1) {
			log_crypto(LOG_MAIN, err, "PEM_write_bio_X509", path);
			goto out;
		}
	}
	len = BIO_get_mem_data(bio, &data);
	if (file_write_atomic(path, data, (size_t)len, 0644, err) == -1) {
		log_error(LOG_MAIN, "%s", err != NULL ? err->msg : path);
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	return rc;
}

void
chain_free(STACK_OF(X509) * certs)
{
	sk_X509_pop_free(certs, X509_free);
}
