/*
 * hierarchy: a complete test PKI in the shape of DESIGN.md section 2, built
 * through cert_issue() exactly as the nodes build theirs.  Shared by
 * tests/unit/test_cert.c, tests/unit/test_chain.c and tests/pki/mkhierarchy.c
 * so that the unit tests and the zlint/openssl checks look at the same
 * certificates.  Keys are made with OpenSSL directly (not keys.c), so a key
 * generation bug there cannot hide a profile bug here.
 *
 * Header-only (static inline) because meson builds each unit test from one
 * file.
 */
#ifndef ISELAB_TESTS_PKI_HIERARCHY_H
#define ISELAB_TESTS_PKI_HIERARCHY_H

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cert.h"
#include "util.h"

enum hier_slot {
	H_ROOT,        /* Certificate Services Root CA - <pan> */
	H_NODE,        /* Certificate Services Node CA - <pan> */
	H_SUB,         /* Certificate Services Endpoint Sub CA - <psn> */
	H_OCSP,        /* responder under the Sub CA ("rfc6960") */
	H_OCSP_LEGACY, /* responder under the Node CA ("legacy") */
	H_SERVER,      /* EST server TLS certificate of the PSN */
	H_CLIENT,      /* an endpoint (EST client) certificate */
	H_COUNT
};

struct hier_def {
	const char *file; /* base name mkhierarchy writes */
	enum cert_profile profile;
	int issuer;            /* slot of the issuer, -1: self-signed */
	int on_psn;            /* named after the PSN, not the PAN */
	const char *purpose;   /* openssl verify -purpose, or NULL */
	const char *hierarchy; /* which OCSP hierarchy shows it */
};

static const struct hier_def hier_defs[H_COUNT] = {
    [H_ROOT] = {"root", CERT_PROFILE_ROOT_CA, -1, 0, NULL, "both"},
    [H_NODE] = {"node-ca", CERT_PROFILE_NODE_CA, H_ROOT, 0, NULL, "both"},
    [H_SUB] = {"sub-ca", CERT_PROFILE_ENDPOINT_SUB_CA, H_NODE, 1, NULL, "both"},
    [H_OCSP] = {"ocsp", CERT_PROFILE_OCSP_RESPONDER, H_SUB, 1, NULL, "rfc6960"},
    [H_OCSP_LEGACY] = {"ocsp-legacy", CERT_PROFILE_OCSP_RESPONDER, H_NODE, 1,
                       NULL, "legacy"},
    [H_SERVER] = {"tls-server", CERT_PROFILE_TLS_SERVER, H_SUB, 1, "sslserver",
                  "both"},
    [H_CLIENT] = {"tls-client", CERT_PROFILE_TLS_CLIENT, H_SUB, 1, "sslclient",
                  "both"},
};

struct hier {
	EVP_PKEY *key[H_COUNT];
	X509 *cert[H_COUNT];
};

/* "ec-p256", "ec-p384", "ec-p521", "rsa-1024" ... "rsa-4096". */
static inline EVP_PKEY *
hier_keygen(const char *flavour)
{
	size_t bits;

	if (strcmp(flavour, "ec-p256") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (strcmp(flavour, "ec-p384") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (strcmp(flavour, "ec-p521") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	if (sscanf(flavour, "rsa-%zu", &bits) == 1)
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits);
	return NULL;
}

/*
 * Issue slot with key (a reference is taken) under its issuer from h, with
 * the SANs and AIA URL a PSN would set.  Extra request tweaks come from the
 * caller through validity/not_before (0: defaults).
 */
static inline int
hier_issue(struct hier *h, enum hier_slot slot, EVP_PKEY *key, const char *pan,
           const char *psn, time_t not_before, time_t validity,
           struct error *err)
{
	const struct hier_def *d = &hier_defs[slot];
	struct cert_request req;
	char url[CERT_URL_MAX], dns[256], email[256];
	X509 *issuer = d->issuer >= 0 ? h->cert[d->issuer] : NULL;
	EVP_PKEY *issuer_key = d->issuer >= 0 ? h->key[d->issuer] : key;
	int rc = -1;

	cert_request_init(&req, d->profile);
	req.not_before = not_before;
	req.validity = validity;
	snprintf(url, sizeof(url), "http://%s:2560/ocsp", psn);
	snprintf(dns, sizeof(dns), "%s.lab.example", psn);
	snprintf(email, sizeof(email), "alice@%s.lab.example", psn);
	if (cert_request_set_key(&req, key, err) == -1)
		goto out;
	switch (slot) {
	case H_SERVER:
		if (cert_request_set_cn(&req, dns, err) == -1 ||
		    cert_request_add_san(&req, CERT_SAN_DNS, dns, err) == -1 ||
		    cert_request_add_san(&req, CERT_SAN_IP, "192.0.2.10",
		                         err) == -1 ||
		    cert_request_add_san(&req, CERT_SAN_IP, "2001:db8::10",
		                         err) == -1 ||
		    cert_request_set_ocsp_url(&req, url, err) == -1)
			goto out;
		break;
	case H_CLIENT:
		if (cert_request_set_cn(&req, "alice", err) == -1 ||
		    cert_request_add_san(&req, CERT_SAN_EMAIL, email, err) ==
		        -1 ||
		    cert_request_add_san(
		        &req, CERT_SAN_URI,
		        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
		        err) == -1 ||
		    cert_request_set_ocsp_url(&req, url, err) == -1)
			goto out;
		break;
	default:
		if (cert_request_set_product_cn(&req, d->on_psn ? psn : pan,
		                                err) == -1)
			goto out;
		break;
	}
	X509_free(h->cert[slot]);
	h->cert[slot] = NULL;
	if (cert_issue(&req, issuer, issuer_key, &h->cert[slot], err) == -1)
		goto out;
	if (h->key[slot] != key) {
		EVP_PKEY_free(h->key[slot]);
		EVP_PKEY_up_ref(key);
		h->key[slot] = key;
	}
	rc = 0;
out:
	cert_request_free(&req);
	return rc;
}

/* All slots, slot i with a key of flavours[i], default validities. */
static inline int
hier_build(struct hier *h, const char *const flavours[H_COUNT], const char *pan,
           const char *psn, struct error *err)
{
	EVP_PKEY *key;
	int i;

	memset(h, 0, sizeof(*h));
	for (i = 0; i < H_COUNT; i++) {
		if ((key = hier_keygen(flavours[i])) == NULL) {
			error_set(err, "cannot make a %s key", flavours[i]);
			return -1;
		}
		if (hier_issue(h, (enum hier_slot)i, key, pan, psn, 0, 0,
		               err) == -1) {
			EVP_PKEY_free(key);
			error_prefix(err, "%s", hier_defs[i].file);
			return -1;
		}
		EVP_PKEY_free(key);
	}
	return 0;
}

static inline int
hier_build_uniform(struct hier *h, const char *flavour, const char *pan,
                   const char *psn, struct error *err)
{
	const char *f[H_COUNT];
	int i;

	for (i = 0; i < H_COUNT; i++)
		f[i] = flavour;
	return hier_build(h, f, pan, psn, err);
}

static inline void
hier_free(struct hier *h)
{
	int i;

	for (i = 0; i < H_COUNT; i++) {
		X509_free(h->cert[i]);
		EVP_PKEY_free(h->key[i]);
		h->cert[i] = NULL;
		h->key[i] = NULL;
	}
}

/* The CA certificates between slot and the root (not the root). */
static inline STACK_OF(X509) *
    hier_untrusted(const struct hier *h, enum hier_slot slot)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	int i;

	if (sk == NULL)
		return NULL;
	for (i = hier_defs[slot].issuer; i > 0 && i != H_ROOT;
	     i = hier_defs[i].issuer) {
		if (X509_up_ref(h->cert[i]) != 1 ||
		    sk_X509_push(sk, h->cert[i]) <= 0) {
			sk_X509_pop_free(sk, X509_free);
			return NULL;
		}
	}
	return sk;
}

/* A stack of one certificate (a reference is taken). */
static inline STACK_OF(X509) * hier_stack1(X509 *x)
{
	STACK_OF(X509) *sk = sk_X509_new_null();

	if (sk == NULL || X509_up_ref(x) != 1 || sk_X509_push(sk, x) <= 0) {
		sk_X509_pop_free(sk, X509_free);
		return NULL;
	}
	return sk;
}

#endif
