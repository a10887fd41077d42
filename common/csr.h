/*
 * csr: PKCS#10 certificate requests (RFC 2986), made by our nodes when they
 * join or renew, and received from anyone over EST (RFC 7030 section 4.2).
 *
 * The parser is the part that meets the network: it takes the encodings EST
 * clients really send (PEM with either header, bare DER, base64 with or
 * without line breaks as RFC 8951 section 3.2 allows), refuses everything
 * else with a reason the EST server can put in its HTTP answer, and bounds
 * every input.  Checking the self-signature and the key strength is a
 * separate step (csr_verify) so the caller decides when to pay for it.
 */
#ifndef ISELAB_CSR_H
#define ISELAB_CSR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

struct error;

/* Largest encoded CSR we accept, in any encoding (a CSR is ~1-2 KiB). */
#define CSR_MAX_SIZE (64 * 1024)
/* Most SAN dNSNames we put into or take out of one CSR. */
#define CSR_DNS_NAMES_MAX 64
/* Longest DNS name (RFC 1035 section 2.3.4). */
#define CSR_DNS_NAME_MAX 253
/* Longest commonName (RFC 5280 appendix A, ub-common-name). */
#define CSR_CN_MAX 64
/* Longest challengePassword (RFC 2985 section 5.4.1, pkcs-9-ub-...). */
#define CSR_CHALLENGE_MAX 255

/*
 * A signed request for key: subject CN=cn (cn may be NULL only when there
 * are DNS names: RFC 5280 section 4.1.2.6), and a subjectAltName extension
 * request with the DNS names when ndns > 0.  Signed with
 * key_signature_md(key).  The key must pass key_check_strength().
 */
X509_REQ *csr_create(EVP_PKEY *key, const char *cn,
                     const char *const *dns_names, size_t ndns,
                     struct error *err);
/* The same with a full subject (a re-enrollment repeats the old one). */
X509_REQ *csr_create_name(EVP_PKEY *key, const X509_NAME *subject,
                          const char *const *dns_names, size_t ndns,
                          struct error *err);

/*
 * Add a challengePassword attribute (RFC 2985 section 5.4.1; EST puts the
 * TLS channel binding there, RFC 7030 section 3.5), replacing any present.
 * This invalidates the signature: call csr_sign() afterwards.
 */
int csr_set_challenge_password(X509_REQ *req, const char *password,
                               struct error *err);
/* (Re-)sign req with key, using key_signature_md(key). */
int csr_sign(X509_REQ *req, EVP_PKEY *key, struct error *err);

/*
 * Parse a CSR received from outside: PEM ("CERTIFICATE REQUEST" or "NEW
 * CERTIFICATE REQUEST"), DER, or base64 of DER (RFC 8951).  Refuses empty
 * or oversized input, truncated DER, bytes after the DER object, bad base64
 * and anything that is not a PKCS#10 v1 request.  Does not check the
 * signature: see csr_verify().
 */
X509_REQ *csr_parse(const uint8_t *buf, size_t len, struct error *err);

/*
 * The request is acceptable as a proof of possession: the key passes
 * key_check_strength(), the signature is not made with a broken hash
 * (MD5, SHA-1) and it verifies under the request's own key.  err says which
 * check failed.
 */
int csr_verify(X509_REQ *req, struct error *err);

/* DER or PEM encodings, malloc'd (free() them); PEM is NUL-terminated. */
int csr_to_der(X509_REQ *req, uint8_t **der, size_t *len);
char *csr_to_pem(X509_REQ *req);

/*
 * The challengePassword as a NUL-terminated UTF-8 string in buf.
 * Returns 1 when present, 0 when absent, -1 when malformed (not a single
 * PrintableString or UTF8String, an embedded NUL, repeated, or longer than
 * len - 1 bytes).
 */
int csr_challenge_password(X509_REQ *req, char *buf, size_t len,
                           struct error *err);

/*
 * The subject commonName as UTF-8 in buf.  Returns 1 when present, 0 when
 * the subject has none, -1 when there is more than one, it does not fit,
 * or it holds a NUL byte.
 */
int csr_subject_cn(X509_REQ *req, char *buf, size_t len, struct error *err);

/*
 * The dNSNames of the requested subjectAltName extension (other name types
 * are skipped).  *names is a malloc'd array of *count malloc'd strings, NULL
 * and 0 when the request has no SAN; free with csr_dns_names_free().
 * Returns -1 on a malformed or repeated extension, an embedded NUL, or more
 * than CSR_DNS_NAMES_MAX names.
 */
int csr_dns_names(X509_REQ *req, char ***names, size_t *count,
                  struct error *err);
void csr_dns_names_free(char **names, size_t count);

#endif
