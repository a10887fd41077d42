/*
 * ocsp: the PSN's OCSP responder core (RFC 6960, with the RFC 5019
 * lightweight profile and RFC 8954 nonces), without HTTP: a DER
 * OCSPRequest in, a DER OCSPResponse out, plus what the HTTP layer needs
 * for RFC 5019 caching headers.  psn/ocsp_service.c puts it on port 2560.
 *
 * It answers for one issuer, the PSN's Endpoint Sub CA: a CertID whose
 * issuerNameHash and issuerKeyHash match it (SHA-1, SHA-256, SHA-384 or
 * SHA-512, hashed with the CertID's own algorithm) is looked up in the
 * node's store by issuer key id and serial: GOOD is good, REVOKED is
 * revoked with time and reason, HOLD is revoked with certificateHold, and
 * a serial the store does not hold is unknown.  A request none of whose
 * CertIDs is ours is `unauthorized`; in a request that mixes ours with
 * others, the others are answered unknown.
 *
 * Responses are signed with the node's delegated responder certificate
 * (id-kp-OCSPSigning, id-pkix-ocsp-nocheck; in the "legacy" hierarchy it
 * is issued by the PAN's Node CA, and strict clients refuse it, RFC 6960
 * 4.2.2.2), which is included; the responderID is its key hash.
 *
 * Cost: a request for one certificate without a nonce (every GET of an
 * RFC 5019 client) is answered from a cache of pre-signed responses, so it
 * costs one store read and no signature.  An entry is used only while the
 * store record it was signed for is unchanged (status, time, reason) and
 * its nextUpdate is more than the refresh margin away; otherwise the
 * response is signed again.  ocsp_responder_refresh() re-signs what
 * changed, so that even the first GET after a revocation finds a fresh
 * response, and pre-signs the SHA-1 CertID of our certificates while the
 * cache has room.  Nonce
 * requests and multi-certificate requests are signed on the fly.
 *
 * Thread-safe: the HTTP workers call ocsp_respond() concurrently; the
 * cache is behind a mutex that is never held while signing.
 */
#ifndef ISELAB_OCSP_H
#define ISELAB_OCSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

struct error;
struct store;

/* RFC 8954 section 2.1: a nonce is 1 to 32 octets. */
#define OCSP_NONCE_MAX 32
/* Most CertIDs one request may hold; more is malformedRequest. */
#define OCSP_REQUEST_CERTS_MAX 256
/* Default response validity (thisUpdate to nextUpdate), seconds. */
#define OCSP_VALIDITY_DEFAULT 3600
/* Shortest validity we sign with, seconds. */
#define OCSP_VALIDITY_MIN 2
/* Most pre-signed responses kept; at the limit the oldest slot goes. */
#define OCSP_CACHE_MAX 65536
/* Largest CertID we cache a response for (SHA-512 hashes, long serial). */
#define OCSP_CERTID_DER_MAX 256
/* ETag buffer: a quoted hex SHA-1 of the response and a NUL. */
#define OCSP_ETAG_MAX (2 + 2 * 20 + 1)
/* Buffer of the one-line summary of an answer, for the log. */
#define OCSP_SUMMARY_MAX 256

struct ocsp_config {
	bool nonce;       /* echo nonces; false: RFC 5019 profile, ignored */
	int64_t validity; /* seconds from thisUpdate to nextUpdate; 0: 1h */
	/*
	 * Re-sign a cached response this many seconds before its
	 * nextUpdate, so that what a client gets is always good for at
	 * least this long; 0: a quarter of the validity.
	 */
	int64_t margin;
};

struct ocsp_responder;

/*
 * A responder for certificates of issuer (our Endpoint Sub CA), signing
 * with signer and key (references are taken), reading status from st
 * (which must outlive the responder; read-only is enough).  signer and key
 * NULL: the responder key is unavailable and every well-formed request is
 * answered tryLater.  Refused: a key that does not match signer, an
 * issuer without a subject public key.  cfg NULL: nonces on, defaults.
 */
struct ocsp_responder *ocsp_responder_new(X509 *signer, EVP_PKEY *key,
                                          X509 *issuer, struct store *st,
                                          const struct ocsp_config *cfg,
                                          struct error *err);
void ocsp_responder_free(struct ocsp_responder *r);

/*
 * Root CA chain replacement (docs/certificates.md): older answers for
 * the previous generation's issuer with that generation's responder
 * certificate.  A request none of whose CertIDs is r's issuer's goes to
 * older (and on down its own older ones) instead of being unauthorized;
 * a request that mixes generations is answered by the newest generation
 * that has one of them, the others unknown.  r takes older (freed with it); call
 * before r serves.  Refresh walks every generation.
 */
void ocsp_responder_set_older(struct ocsp_responder *r,
                              struct ocsp_responder *older);

/* One answer.  Free with ocsp_answer_free(). */
struct ocsp_answer {
	uint8_t *der; /* the OCSPResponse, DER, malloc'd */
	size_t len;
	int status; /* OCSP_RESPONSE_STATUS_SUCCESSFUL, ..._MALFORMEDREQUEST... */
	/*
	 * Successful, one certificate, no nonce: the same request gets the
	 * same bytes until nextUpdate (RFC 5019 section 6: GET may be
	 * cached by HTTP caches until then).
	 */
	bool cacheable;
	bool cache_hit; /* served from the pre-signed cache */
	int64_t this_update; /* successful answers only; 0 otherwise */
	int64_t next_update;
	int64_t produced_at;
	size_t ncerts;               /* single responses in it */
	char etag[OCSP_ETAG_MAX];    /* "\"<hex SHA-1 of der>\"" */
	char summary[OCSP_SUMMARY_MAX]; /* "serial 1a2b good", or why not */
};

/*
 * Answer a DER OCSPRequest.  Returns 0 with ans filled (whatever the OCSP
 * status: malformedRequest, unauthorized, tryLater and internalError are
 * answers too), or -1 when no answer could even be encoded (out of
 * memory), with ans empty.
 */
int ocsp_respond(struct ocsp_responder *r, const uint8_t *req, size_t len,
                 struct ocsp_answer *ans);

/*
 * An unsigned error answer (malformedRequest ... unauthorized) for input
 * that never became a DER request (bad base64 in a GET); why goes to the
 * summary.  0 or -1 as ocsp_respond().
 */
int ocsp_error_answer(int status, const char *why, struct ocsp_answer *ans);

void ocsp_answer_free(struct ocsp_answer *ans);

/* What one refresh did. */
struct ocsp_refresh_report {
	size_t ours;    /* records of our issuer the store walk saw */
	bool partial;   /* the walk stopped (or was skipped): cache full */
	size_t signed_; /* responses signed (new, changed or near expiry) */
	size_t fresh;   /* entries that were still good */
	size_t failed;  /* could not be signed (logged) */
	size_t cached;  /* entries in the cache afterwards */
};

/*
 * Re-sign every cached response whose record changed or whose nextUpdate
 * is within the margin (a walk of the cache, reading each entry's record
 * by key), then, while the cache has room (new entries stop at three
 * quarters of OCSP_CACHE_MAX), walk the store and pre-sign the SHA-1
 * CertID response of each of our certificates that has none.  When the
 * cache is full the store is not walked (partial is set, ours counts what
 * was walked): the cost of a refresh is bounded by the cache, not by the
 * store.  0, or -1 on a store error.  Nothing to do (and 0) when the
 * responder key is unavailable.
 */
int ocsp_responder_refresh(struct ocsp_responder *r,
                           struct ocsp_refresh_report *rep, struct error *err);

/* Entries in the cache. */
size_t ocsp_responder_cached(struct ocsp_responder *r);

/* Whether the responder signs (false: key unavailable, tryLater). */
bool ocsp_responder_can_sign(const struct ocsp_responder *r);

/*
 * Decode the base64 of a GET request path (RFC 6960 appendix A.1, after
 * the URL decoding): the standard and the URL-safe alphabet are both
 * accepted, padding optional.  malloc'd bytes, or NULL with err set.
 */
uint8_t *ocsp_get_decode(const char *b64, size_t len, size_t *outlen,
                         struct error *err);

/* "successful", "malformedRequest", ... (RFC 6960 section 4.2.1). */
const char *ocsp_status_name(int status);

#endif
