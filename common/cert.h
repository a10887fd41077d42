/*
 * cert: issuing X.509 certificates by profile.
 *
 * Every certificate of the lab (DESIGN.md section 2) comes from cert_issue():
 * the Root CA, Node CAs, Endpoint Sub CAs, OCSP responders, and the TLS
 * server and client (endpoint, EST client) certificates.  The profile alone
 * decides the extensions (basicConstraints, keyUsage, extendedKeyUsage,
 * nocheck) so that no caller, and no CSR, can ever turn an endpoint
 * certificate into a CA.  The caller decides only the subject, the subject
 * key, the subjectAltNames the profile allows, the validity and the AIA OCSP
 * URL.  docs/certificates.md shows each profile as a table.
 */
#ifndef ISELAB_CERT_H
#define ISELAB_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keys.h"

struct error;

enum cert_profile {
	CERT_PROFILE_ROOT_CA,         /* self-signed, pathLen 2 */
	CERT_PROFILE_NODE_CA,         /* PAN/SAN node CA, pathLen 1 */
	CERT_PROFILE_ENDPOINT_SUB_CA, /* PSN CA, pathLen 0 */
	CERT_PROFILE_OCSP_RESPONDER,  /* delegated responder (RFC 6960 4.2.2.2)
	                               */
	CERT_PROFILE_TLS_SERVER,      /* EST / portal server */
	CERT_PROFILE_TLS_CLIENT,      /* endpoint and EST client certificates */
	CERT_PROFILE_COUNT
};

enum cert_san_type {
	CERT_SAN_DNS,   /* dNSName, LDH labels, "*." only for TLS server */
	CERT_SAN_IP,    /* iPAddress, IPv4 or IPv6 in text form */
	CERT_SAN_EMAIL, /* rfc822Name, ASCII only */
	CERT_SAN_URI,   /* uniformResourceIdentifier, absolute */
	CERT_SAN_TYPE_COUNT
};

/* Most subjectAltNames one certificate carries. */
#define CERT_SAN_MAX 32
/* Longest SAN value we accept (URIs; DNS names are held to 253). */
#define CERT_SAN_LEN_MAX 1024
/* Longest AIA OCSP URL. */
#define CERT_URL_MAX 1024
/* Clock skew allowance: default notBefore is this long before now. */
#define CERT_BACKDATE_SECS (5 * 60)
/* Serial number length in octets: 126 random bits (RFC 5280 4.1.2.2). */
#define CERT_SERIAL_LEN 16
/* Hex serial as cert_serial_hex() writes it: 20 octets max, plus NUL. */
#define CERT_SERIAL_HEX_MAX (20 * 2 + 1)
/* Longest certificate file we read (PEM of a large RSA certificate). */
#define CERT_FILE_MAX (64 * 1024)
/* Longest CN we accept: ub-common-name (RFC 5280 appendix A.1). */
#define CERT_CN_MAX 64
/* Buffer for a CN as text (UTF-8, up to 4 bytes a character). */
#define CERT_CN_BUF (CERT_CN_MAX * 4 + 1)

struct cert_san {
	enum cert_san_type type;
	char *value; /* text as given, owned by the request */
};

/*
 * What a caller asks for.  Initialise with cert_request_init(), fill with the
 * setters (which copy what they are given), free with cert_request_free().
 * validity and not_before may be written directly.
 */
struct cert_request {
	enum cert_profile profile;
	X509_NAME *subject; /* owned; must not be empty at issue time */
	EVP_PKEY *key;      /* subject public key; owned reference */
	struct cert_san san[CERT_SAN_MAX];
	size_t nsan;
	/* Seconds from notBefore; 0 takes cert_profile_default_validity(). */
	time_t validity;
	/*
	 * notBefore; 0 means now - CERT_BACKDATE_SECS.  Either way it is
	 * never before the issuer's notBefore.
	 */
	time_t not_before;
	/* AIA id-ad-ocsp URI (http:// only), or NULL for none. */
	char *ocsp_url;
};

/* "root-ca", "node-ca", "endpoint-sub-ca", "ocsp-responder", ... */
const char *cert_profile_name(enum cert_profile profile);
int cert_profile_from_name(const char *name, enum cert_profile *profile,
                           struct error *err);
bool cert_profile_is_ca(enum cert_profile profile);
/* Default validity in seconds (docs/certificates.md). */
time_t cert_profile_default_validity(enum cert_profile profile);

/*
 * The product's CN for a profile and host: "Certificate Services Root CA -
 * pan1", "... Node CA - <host>", "... Endpoint Sub CA - <host>",
 * "... OCSP Responder - <host>".  The TLS profiles use the host name itself.
 * Returns -1 with err set if host is empty or the CN would be longer than
 * CERT_CN_MAX.
 */
int cert_profile_cn(enum cert_profile profile, const char *host, char *buf,
                    size_t len, struct error *err);

void cert_request_init(struct cert_request *req, enum cert_profile profile);
/* Free what the request owns and leave it as cert_request_init() left it. */
void cert_request_free(struct cert_request *req);
/* Subject of one CN attribute (UTF-8, 1..CERT_CN_MAX characters). */
int cert_request_set_cn(struct cert_request *req, const char *cn,
                        struct error *err);
/* Subject as profile CN for host (cert_profile_cn). */
int cert_request_set_product_cn(struct cert_request *req, const char *host,
                                struct error *err);
int cert_request_set_subject(struct cert_request *req, const X509_NAME *name,
                             struct error *err);
/* Takes its own reference to key. */
int cert_request_set_key(struct cert_request *req, EVP_PKEY *key,
                         struct error *err);
/*
 * Add a SAN after checking its syntax, and that the profile allows the type:
 * no SAN on CA and OCSP responder profiles, DNS and IP on TLS server, all four
 * types on TLS client.
 */
int cert_request_add_san(struct cert_request *req, enum cert_san_type type,
                         const char *value, struct error *err);
int cert_request_set_ocsp_url(struct cert_request *req, const char *url,
                              struct error *err);

/*
 * Fill req (already initialised with its profile) from a CSR: the CSR
 * signature is verified (proof of possession), its public key is taken, and
 * from its subject only CN, O, OU, C, ST, L and emailAddress are kept, in
 * their order; other attributes are dropped.  From its extensionRequest only
 * the subjectAltNames the profile allows are kept (see cert_request_add_san);
 * a malformed one refuses the CSR.  Every other requested extension
 * (basicConstraints CA:TRUE, keyUsage, extendedKeyUsage, anything else) is
 * ignored: the profile decides the extensions.  Any subject, key or SAN
 * already in req is replaced.  The caller may override the subject after.
 */
int cert_request_from_csr(struct cert_request *req, X509_REQ *csr,
                          struct error *err);

/*
 * Issue a certificate for req, signed by issuer_key.  issuer_cert is NULL
 * for a self-signed Root CA (then issuer_key must be req->key).  Refused:
 * an empty subject, a subject key that key_check_strength() refuses, an
 * issuer that is not a CA or lacks keyCertSign, whose pathLenConstraint does
 * not allow the profile, or whose certificate does not match issuer_key, a TLS
 * server request without a dNSName or iPAddress, and a validity that would
 * lie wholly outside the issuer's.  notAfter is clamped to the issuer's
 * notAfter.  Signed with SHA-256 (RSA, P-256), SHA-384 (P-384) or SHA-512
 * (P-521) by the issuer key type.
 */
int cert_issue(const struct cert_request *req, X509 *issuer_cert,
               EVP_PKEY *issuer_key, X509 **out, struct error *err);

/*
 * A root key update certificate (RFC 4210 section 4.4, which RFC 7030
 * section 4.1.3 refers to): the self-signed root `subject` (its name,
 * key and extensions) certified by another root, `issuer` with its key.
 * OldWithNew is cert_link(old, new, new_key); NewWithOld is
 * cert_link(new, old, old_key).  Fresh serial; AKI is the issuer's SKI;
 * the validity is the subject's, clamped to the issuer's.  Refused: a
 * subject or issuer that is not a self-signed CA, a key that does not
 * match the issuer.
 */
int cert_link(X509 *subject, X509 *issuer, EVP_PKEY *issuer_key, X509 **out,
              struct error *err);

/* The first certificate of a PEM file. */
X509 *cert_load_pem(const char *path, struct error *err);
/* A DER file; trailing bytes after the certificate are an error. */
X509 *cert_load_der(const char *path, struct error *err);
X509 *cert_parse_der(const uint8_t *der, size_t len, struct error *err);
/* PEM, mode 0644, atomically (util.h file_write_atomic). */
int cert_save_pem(X509 *cert, const char *path, struct error *err);

/* Lower-case hex of the serial, no separators (buf of CERT_SERIAL_HEX_MAX). */
int cert_serial_hex(const X509 *cert, char *buf, size_t len, struct error *err);
/*
 * SHA-1 key identifier of the certificate's public key (key_id(), RFC 5280
 * 4.2.1.2 method 1): our SKI, and the OCSP issuerKeyHash.  Computed from the
 * key, not copied from the extension, so that it also matches OCSP CertIDs
 * for certificates whose SKI was made some other way.
 */
int cert_key_id(const X509 *cert, unsigned char out[KEY_ID_LEN],
                struct error *err);
int cert_not_before(const X509 *cert, time_t *out, struct error *err);
int cert_not_after(const X509 *cert, time_t *out, struct error *err);
/* The (last) CN of the subject, UTF-8; buf of CERT_CN_BUF is enough. */
int cert_subject_cn(const X509 *cert, char *buf, size_t len, struct error *err);
/* Subject or issuer as one line, RFC 2253 order ("CN=x,O=y"). */
void cert_name_string(const X509_NAME *name, char *buf, size_t len);
/*
 * One line for logs and `pan ca certs`: "CN=..., serial ..., issuer CN=...,
 * 2025-01-01T00:00:00Z..2035-01-01T00:00:00Z, EC P-256".
 */
void cert_describe(const X509 *cert, char *buf, size_t len);

#endif
