/*
 * ocsp_http: an OCSP responder (ocsp.h) on HTTP (http.h), shared by the
 * PSN's responder process (psn/ocsp_service.c) and the PAN's
 * (pan/ocsp.c), so that both speak exactly the same HTTP:
 *
 *   POST /ocsp           Content-Type application/ocsp-request, else 415;
 *                        a body over HTTP_MAX_BODY is 413 (libevent, before
 *                        reading it); answered with no-cache.
 *   GET  /ocsp/<base64>  the URL-decoded path is base64 (or base64url) of
 *                        the DER request (RFC 6960 A.1); a cacheable answer
 *                        carries Cache-Control max-age (until nextUpdate),
 *                        ETag, Last-Modified (thisUpdate) and Expires
 *                        (nextUpdate) (RFC 5019 section 6).
 *   other methods on /ocsp: 405; any other path: 404 (text/plain).
 *
 * Bad input gets an OCSP malformedRequest (HTTP 200, as RFC 6960 wants an
 * OCSPResponse), never a dead process.  Log lines go to LOG_OCSP.
 */
#ifndef ISELAB_OCSP_HTTP_H
#define ISELAB_OCSP_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/*
 * The responder's settings every role takes besides its ocsp.listen
 * (struct config_key entries, config.h and http.h needed where used).
 */
#define OCSP_HTTP_CONFIG_KEYS                                                 \
	{"ocsp.nonce", CONFIG_BOOL, "on",                                      \
	 "echo OCSP nonces (RFC 8954); off: RFC 5019 profile, nonces ignored", \
	 0, 0, NULL, 0},                                                       \
	{"ocsp.validity", CONFIG_DURATION, "1h",                               \
	 "OCSP response validity, thisUpdate to nextUpdate", 10, 7 * 86400,    \
	 NULL, 0},                                                             \
	{"ocsp.workers", CONFIG_INT, "0",                                      \
	 "OCSP worker threads; 0: one per online CPU", 0, HTTP_WORKERS_MAX,    \
	 NULL, 0},                                                             \
	{"ocsp.timeout", CONFIG_DURATION, "10s",                               \
	 "OCSP idle timeout of a connection", 1, 300, NULL, 0}

struct error;
struct http_request;
struct ocsp_config;
struct ocsp_responder;
struct store;

/* The responder's URL path (the AIA OCSP URLs name it). */
#define OCSP_HTTP_PATH "/ocsp"
/* How often a responder process re-walks the store (refresh). */
#define OCSP_HTTP_REFRESH_MS 10000
/* An HTTP date: "Sun, 06 Nov 1994 08:49:37 GMT" and a NUL. */
#define OCSP_HTTP_DATE_MAX 32

#define OCSP_HTTP_MEDIA_REQUEST  "application/ocsp-request"
#define OCSP_HTTP_MEDIA_RESPONSE "application/ocsp-response"

/*
 * The http_handler of a responder: arg is the struct ocsp_responder
 * (thread-safe, so the HTTP workers share it).
 */
void ocsp_http_handle(struct http_request *req, void *arg);

/*
 * A responder that is replaced while the HTTP workers serve (a new root
 * CA chain generation taken in place): ocsp_http_handle_slot is the
 * http_handler, arg the slot.  ocsp_http_slot_init() puts the first one
 * in; ocsp_http_slot_replace() makes the one in the slot r's older
 * (ocsp_responder_set_older: it answers for the old generation, and stays
 * alive, since a worker may still be answering with it; freed with r)
 * before r goes in.
 */
struct ocsp_http_slot {
	_Atomic(struct ocsp_responder *) r;
};
void ocsp_http_slot_init(struct ocsp_http_slot *slot, struct ocsp_responder *r);
void ocsp_http_slot_replace(struct ocsp_http_slot *slot,
                            struct ocsp_responder *r);
void ocsp_http_handle_slot(struct http_request *req, void *arg);

/*
 * One ocsp_responder_refresh(), logged: always when verbose, else only
 * when something was signed or failed.  what names the issuer in the
 * line ("our Sub CA").
 */
void ocsp_http_refresh(struct ocsp_responder *r, const char *what,
                       bool verbose);

/* RFC 9110 5.6.7 IMF-fixdate of t (seconds since the epoch, UTC). */
void ocsp_http_date(int64_t t, char buf[OCSP_HTTP_DATE_MAX]);

/* Whether a Content-Type value is media (parameters after ';' allowed). */
bool ocsp_http_media_is(const char *value, const char *media);

/*
 * The responders of earlier root CA chain generations (docs/certificates.md
 * "Replacing the root CA chain"): for each D/ca/gen-K/ (K from the
 * installed generation - 1 down to 1), the issuer gen-K/<issuer_file>
 * (endpoint-sub-ca.crt on a PSN, node-ca.crt on the PAN) and the responder
 * certificate and key gen-K/ocsp-responder.{crt,key} (decrypted with
 * pass).  A generation that cannot be loaded is logged and skipped: its
 * certificates are then answered unauthorized, the others still are.
 */
struct ocsp_generation {
	unsigned gen;
	X509 *issuer;
	X509 *signer;
	EVP_PKEY *key;
};
/* Most earlier generations kept (a replacement is a rare admin act). */
#define OCSP_GENERATIONS_MAX 16
/* Into gens (newest first); returns how many (0 to OCSP_GENERATIONS_MAX). */
size_t ocsp_generations_load(const char *datadir, const char *issuer_file,
                             const char *pass, size_t passlen,
                             struct ocsp_generation *gens);
void ocsp_generations_free(struct ocsp_generation *gens, size_t n);
/*
 * A promoted SAN answers for what the former primary's Node CA issued (the
 * PSNs' Endpoint Sub CAs, the legacy hierarchy's responder certificates)
 * with the imported CA store in dir (ca/imported/: node-ca.crt,
 * ocsp-responder.{crt,key}), as one more entry of gens, its gen
 * OCSP_GEN_IMPORTED.  1 loaded into *g, 0 none imported, -1 with err.
 */
#define OCSP_GEN_IMPORTED 0
int ocsp_imported_load(const char *datadir, const char *dir, const char *pass,
                       size_t passlen, struct ocsp_generation *g,
                       struct error *err);
/* A responder per generation, chained behind r (ocsp_responder_set_older). */
int ocsp_generations_attach(struct ocsp_responder *r,
                            const struct ocsp_generation *gens, size_t n,
                            struct store *st, const struct ocsp_config *cfg,
                            struct error *err);

#endif
