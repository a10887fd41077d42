/*
 * est: the EST protocol (RFC 7030, with the RFC 8951 clarifications) on top
 * of the http server: /.well-known/est/[<label>/]cacerts, simpleenroll,
 * simplereenroll, csrattrs and serverkeygen.
 *
 * This module parses and judges what the network sends (paths, media
 * types, base64, PKCS#10, credentials, proof of possession) and formats
 * the answers (certs-only CMC Simple PKI Responses, CsrAttrs, multipart
 * server-generated keys).  It holds no CA key: issuing is the backend's
 * job.  On a PSN the backend asks the CA service process to sign; the test
 * harness (tests/est/est_harness.c) signs in-process.  docs/est.md gives
 * every status code and why.
 *
 * Backend functions are called from the http worker threads, concurrently:
 * they must be thread-safe.
 */
#ifndef ISELAB_EST_H
#define ISELAB_EST_H

#include <stdbool.h>
#include <time.h>

#include <openssl/x509.h>

#include "cert.h"
#include "http.h"
#include "keys.h"

struct error;

/* Every EST path starts with this (RFC 7030 section 3.2.2). */
#define EST_PATH_PREFIX "/.well-known/est/"
/* Longest label (the optional path segment that selects a template). */
#define EST_LABEL_MAX 64
/* Longest Basic user name and password we accept. */
#define EST_USER_MAX     128
#define EST_PASSWORD_MAX 256
/* Longest Basic realm. */
#define EST_REALM_MAX 128
/* Base64 line length of our answers (RFC 7030 4.1.3: with line breaks). */
#define EST_B64_LINE 64

/* Proof of possession by TLS channel binding (RFC 7030 section 3.5). */
enum est_pop {
	EST_POP_OFF,      /* challengePassword not looked at */
	EST_POP_OPTIONAL, /* checked when present */
	EST_POP_REQUIRED, /* must be present and right */
};

/* What a label selects: the certificate template defined on the PAN. */
struct est_template {
	char name[EST_LABEL_MAX + 1]; /* for logs */
	enum cert_profile profile;    /* TLS_CLIENT: the EAP template's EKU */
	time_t validity;              /* seconds; 0: the profile's default */
	unsigned key_types;           /* allowed: bits (1u << enum key_type) */
	enum key_type keygen_type;    /* serverkeygen when the CSR key is not
	                                 an allowed type */
	enum est_pop pop;             /* proof of possession */
	bool require_cn;              /* subject rule: a commonName */
};

#define EST_KEY_BIT(t) (1u << (unsigned)(t))

enum est_auth {
	EST_AUTH_NONE,
	EST_AUTH_CERT,  /* TLS client certificate, verified and not revoked */
	EST_AUTH_BASIC, /* HTTP Basic over TLS (RFC 7030 section 3.2.3) */
};

/* Who asked, as handed to the backend. */
struct est_identity {
	enum est_auth auth;
	const char *user;  /* Basic user, or the client certificate's subject */
	X509 *cert;        /* the verified client certificate, or NULL */
	const char *peer;  /* address:port */
	const char *label; /* "" when none */
};

struct est_backend {
	void *ctx;
	/*
	 * The CA certificates to publish: the issuing CA (Endpoint Sub CA)
	 * first, the root last.  A new stack; est frees it (chain_free).
	 */
	STACK_OF(X509) * (*ca_certs)(void *ctx, struct error *err);
	/* Anchors for client-certificate authentication; est frees them. */
	STACK_OF(X509) * (*trust_anchors)(void *ctx, struct error *err);
	/*
	 * Optional (NULL: none).  After a replacement of the root CA chain
	 * (docs/certificates.md): *links, the RFC 7030 4.1.3 root key update
	 * certificates (OldWithNew, NewWithOld), published in cacerts after
	 * the chain; *older, the CA certificates of earlier generations (the
	 * old issuing CAs, for building the path of a client certificate
	 * issued under the old chain; its root comes with trust_anchors).
	 * New stacks (either may be NULL); est frees them.  0 or -1.
	 */
	int (*previous)(void *ctx, STACK_OF(X509) **links,
	                STACK_OF(X509) **older, struct error *err);
	/* 1 revoked, 0 not revoked, -1 cannot tell (refused as revoked). */
	int (*is_revoked)(void *ctx, const ASN1_INTEGER *serial,
	                  const X509_NAME *issuer);
	/* 1 when user/password is an enrollment user, 0 when not. */
	int (*check_basic)(void *ctx, const char *user, const char *password);
	/*
	 * The template of label (NULL: the default one).  1 found, 0 no such
	 * label, -1 error.
	 */
	int (*lookup_label)(void *ctx, const char *label,
	                    struct est_template *out);
	/*
	 * Issue a certificate for a CSR that est has already checked
	 * (signature, key strength and type, proof of possession, identity).
	 * On failure return NULL, set err, and set *status to the HTTP status
	 * (it is 500 on entry; 400 for a request the CA refuses).
	 */
	X509 *(*enroll)(void *ctx, X509_REQ *csr, const struct est_template *t,
	                const struct est_identity *id, int *status,
	                struct error *err);
	/*
	 * Server-side key generation (RFC 7030 section 4.4): a new key of
	 * type, and a certificate for it with the CSR's subject and
	 * subjectAltName.  Same failure convention as enroll.
	 */
	int (*serverkeygen)(void *ctx, X509_REQ *csr,
	                    const struct est_template *t, enum key_type type,
	                    const struct est_identity *id, EVP_PKEY **key,
	                    X509 **cert, int *status, struct error *err);
};

struct est;

/*
 * A server for backend (copied).  realm names the Basic realm in 401
 * answers.  Call est_refresh() before serving; until it succeeds every
 * operation but csrattrs answers 503.
 */
struct est *est_new(const struct est_backend *backend, const char *realm,
                    struct error *err);
/*
 * Base64 line length of the answers: EST_B64_LINE by default (RFC 7030
 * 4.1.3 shows line breaks, and the product's server sends them); 0 sends
 * one line, for clients that cannot skip line breaks (strongSwan's pki
 * 5.9 decodes base64 without skipping them).  Call before est_refresh().
 */
void est_set_base64_line(struct est *est, size_t line_len);
void est_free(struct est *est);

/*
 * Fetch the CA certificates and trust anchors from the backend (at start
 * and every refresh interval: 5 minutes in the product).  An incomplete
 * chain (one that does not lead, certificate by certificate, from the
 * issuing CA to a self-signed root valid now) is kept as the reason
 * cacerts and enrollment answer 503; the function then returns -1 with
 * err set.  Thread-safe: requests in flight keep the previous set.
 */
int est_refresh(struct est *est, struct error *err);
/* True when the last refresh found a complete chain. */
bool est_chain_ok(struct est *est);

/* The http_handler: pass est as its argument. */
void est_handle(struct http_request *req, void *arg);

/*
 * Encoders, public for the tests and for the PSN's own EST client.
 * est_certs_only: a certs-only CMC Simple PKI Response (RFC 5272 section
 * 4.1: a degenerate SignedData with no signer and no content), DER,
 * malloc'd.
 */
int est_certs_only(STACK_OF(X509) * certs, uint8_t **der, size_t *len,
                   struct error *err);
/* The CsrAttrs (RFC 7030 section 4.5.2) a template asks for, DER. */
int est_csrattrs(const struct est_template *t, uint8_t **der, size_t *len,
                 struct error *err);
/*
 * The key type of a public key in enum key_type terms; -1 with err set
 * for a key we have no type for (P-521, RSA 2560, ...).
 */
int est_key_type(const EVP_PKEY *key, enum key_type *type, struct error *err);
/*
 * Check the proof of possession of csr against the binding of the
 * connection (RFC 7030 section 3.5): 0 accepted, -1 refused with err set.
 */
int est_check_pop(X509_REQ *csr, enum est_pop pop, const uint8_t *binding,
                  size_t blen, const char *btype, struct error *err);
/* Reenrollment: subject and subjectAltName equal (RFC 7030 4.2.2). */
int est_same_identity(X509_REQ *csr, X509 *cert, struct error *err);

#endif
