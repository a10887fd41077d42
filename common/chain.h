/*
 * chain: certificate path validation and PEM bundles.
 *
 * Every place that trusts a certificate (EST client authentication, a node
 * checking the PAN's chain, the OCSP client checking a responder) goes
 * through chain_verify(), so that the same strict RFC 5280 checks
 * (OpenSSL's X509_V_FLAG_X509_STRICT) apply everywhere and a failure always
 * reads the same way: "certificate has expired at depth 1
 * (CN=Certificate Services Node CA - pan1)".
 */
#ifndef ISELAB_CHAIN_H
#define ISELAB_CHAIN_H

#include <openssl/x509.h>

struct error;

/* Purpose of the leaf, in the low bits of the flags of chain_verify(). */
#define CHAIN_PURPOSE_ANY        0x0 /* any purpose: path checks only */
#define CHAIN_PURPOSE_TLS_SERVER 0x1 /* EKU serverAuth, KU for TLS */
#define CHAIN_PURPOSE_TLS_CLIENT 0x2 /* EKU clientAuth, KU for TLS */
#define CHAIN_PURPOSE_OCSP_SIGN  0x3 /* EKU id-kp-OCSPSigning (RFC 6960) */
#define CHAIN_PURPOSE_MASK       0xf
/*
 * Accept a path that ends at any certificate in anchors, not only at a
 * self-signed one (X509_V_FLAG_PARTIAL_CHAIN): a PSN that trusts its own
 * Endpoint Sub CA.
 */
#define CHAIN_PARTIAL 0x10

/* Most certificates we take from one PEM bundle. */
#define CHAIN_BUNDLE_MAX 32
/* Largest PEM bundle file we read. */
#define CHAIN_FILE_MAX (256 * 1024)

/*
 * Build and verify a path from leaf through untrusted (may be NULL) to one of
 * anchors (at least one), at the current time, with X509_V_FLAG_X509_STRICT.
 * On success, and if built is not NULL, *built receives the path, leaf
 * first, anchor last (free with chain_free()).  On failure err says what,
 * at which depth and for which subject.
 */
int chain_verify(X509 *leaf, STACK_OF(X509) * untrusted,
                 STACK_OF(X509) * anchors, unsigned flags,
                 STACK_OF(X509) * *built, struct error *err);

/*
 * Every certificate of a PEM bundle, in file order.  An empty bundle, one
 * over CHAIN_BUNDLE_MAX, or a PEM block that does not parse is an error.
 */
STACK_OF(X509) *
    chain_parse_pem(const void *buf, size_t len, struct error *err);
STACK_OF(X509) * chain_load_pem(const char *path, struct error *err);
/* As one PEM bundle, mode 0644, atomically. */
int chain_save_pem(STACK_OF(X509) * certs, const char *path, struct error *err);
/* Free a stack and the certificates it holds (NULL is fine). */
void chain_free(STACK_OF(X509) * certs);

#endif
