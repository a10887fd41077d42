/*
 * ocsp_http: the HTTP face of an OCSP responder (ocsp_http.h), moved here
 * from psn/ocsp_service.c so that the PSN's and the PAN's responders share
 * it; what it does on the wire is unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/ocsp.h>

#include "cert.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "ocsp.h"
#include "ocsp_http.h"
#include "util.h"

/* RFC 9110 5.6.7 IMF-fixdate, spelled out: no locale may change it. */
void
ocsp_http_date(int64_t t, char buf[OCSP_HTTP_DATE_MAX])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
	                                   "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
	                                     "May", "Jun", "Jul", "Aug",
	                                     "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		snprintf(buf, OCSP_HTTP_DATE_MAX, "Thu, 01 Jan 1970 00:00:00 GMT");
		return;
	}
	snprintf(buf, OCSP_HTTP_DATE_MAX, "%s, %02d %s %04d %02d:%02d:%02d GMT",
	         days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
	         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* A request path fit for one log line: printable ASCII, cut short. */
static void
log_safe(const char *in, char *out, size_t len)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 4 < len; i++)
		out[i] = in[i] > 0x20 && in[i] < 0x7f ? in[i] : '?';
	if (in[i] != '\0') {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

/* Whether a Content-Type value is media (parameters after ';' allowed). */
bool
ocsp_http_media_is(const char *v, const char *media)
{
	size_t n = strlen(media);

	if (v == NULL)
		return false;
	while (*v == ' ' || *v == '\t')
		v++;
	if (strncasecmp(v, media, n) != 0)
		return false;
	v += n;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ';';
}

/* Send ans (any OCSP status) with the caching headers RFC 5019 6 wants. */
static void
http_ocsp_reply(struct http_request *req, struct ocsp_answer *ans, bool get)
{
	char buf[128], date[OCSP_HTTP_DATE_MAX];
	int64_t now = (int64_t)time(NULL), age;
	enum log_level lvl;

	if (get && ans->cacheable) {
		/* RFC 5019 6.2: never cached past nextUpdate. */
		age = ans->next_update - now;
		if (age < 0)
			age = 0;
		snprintf(buf, sizeof(buf),
		         "max-age=%lld, public, no-transform, must-revalidate",
		         (long long)age);
		http_reply_header(req, "Cache-Control", buf);
		http_reply_header(req, "ETag", ans->etag);
		ocsp_http_date(ans->this_update, date);
		http_reply_header(req, "Last-Modified", date);
		ocsp_http_date(ans->next_update, date);
		http_reply_header(req, "Expires", date);
	} else
		http_reply_header(req, "Cache-Control", "no-cache, no-store");
	http_reply(req, 200, OCSP_HTTP_MEDIA_RESPONSE, ans->der, ans->len);
	switch (ans->status) {
	case OCSP_RESPONSE_STATUS_SUCCESSFUL:
		lvl = LOG_LEVEL_DEBUG;
		break;
	case OCSP_RESPONSE_STATUS_INTERNALERROR:
	case OCSP_RESPONSE_STATUS_TRYLATER:
		lvl = LOG_LEVEL_WARN;
		break;
	default:
		lvl = LOG_LEVEL_INFO; /* the client's mistake, not ours */
		break;
	}
	if (log_enabled(LOG_OCSP, lvl))
		log_write(LOG_OCSP, lvl, "%s %s from %s: %s (%zu bytes)",
		          http_request_method(req), get ? "/ocsp/..." : "/ocsp",
		          http_request_peer(req), ans->summary, ans->len);
}

static void
http_ocsp_answer(struct ocsp_responder *r, struct http_request *req,
                const uint8_t *der, size_t len, bool get)
{
	struct ocsp_answer ans;

	if (ocsp_respond(r, der, len, &ans) == -1) {
		log_error(LOG_OCSP, "%s from %s: no answer could be encoded "
		                    "(out of memory)",
		          http_request_method(req), http_request_peer(req));
		http_reply_text(req, 500, "out of memory");
		return;
	}
	http_ocsp_reply(req, &ans, get);
	ocsp_answer_free(&ans);
}

/* The path after "/ocsp/": base64 of the DER request (RFC 6960 A.1). */
static void
http_ocsp_get(struct ocsp_responder *r, struct http_request *req, const char *b64)
{
	struct ocsp_answer ans;
	struct error e = {{0}};
	uint8_t *der;
	size_t len = 0;

	if ((der = ocsp_get_decode(b64, strlen(b64), &len, &e)) != NULL) {
		http_ocsp_answer(r, req, der, len, true);
		free(der);
		return;
	}
	if (ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, e.msg,
	                      &ans) == -1) {
		http_reply_text(req, 500, "out of memory");
		return;
	}
	http_ocsp_reply(req, &ans, true);
	ocsp_answer_free(&ans);
}

static void
http_ocsp_post(struct ocsp_responder *r, struct http_request *req)
{
	const char *ct = http_request_header(req, "Content-Type");
	const uint8_t *body;
	size_t len = 0;

	/* RFC 6960 A.1.1 / RFC 5019 5: the request's media type. */
	if (!ocsp_http_media_is(ct, OCSP_HTTP_MEDIA_REQUEST)) {
		log_info(LOG_OCSP, "POST /ocsp from %s: Content-Type %s "
		                   "refused (415)",
		         http_request_peer(req), ct != NULL ? ct : "missing");
		http_reply_text(req, 415, "Content-Type must be %s",
		                OCSP_HTTP_MEDIA_REQUEST);
		return;
	}
	body = http_request_body(req, &len);
	http_ocsp_answer(r, req, body, len, false);
}

void
ocsp_http_slot_init(struct ocsp_http_slot *slot, struct ocsp_responder *r)
{
	atomic_init(&slot->r, r);
}

void
ocsp_http_slot_replace(struct ocsp_http_slot *slot, struct ocsp_responder *r)
{
	ocsp_responder_set_older(r, atomic_load(&slot->r));
	atomic_store(&slot->r, r);
}

void
ocsp_http_handle_slot(struct http_request *req, void *arg)
{
	struct ocsp_http_slot *slot = arg;

	ocsp_http_handle(req, atomic_load(&slot->r));
}

void
ocsp_http_handle(struct http_request *req, void *arg)
{
	struct ocsp_responder *r = arg;
	const char *path = http_request_path(req);
	const char *method = http_request_method(req);
	bool get = strcmp(method, "GET") == 0;
	bool post = strcmp(method, "POST") == 0;
	size_t plen = strlen(OCSP_HTTP_PATH);
	char shown[80];

	log_safe(path, shown, sizeof(shown));
	if (strncmp(path, OCSP_HTTP_PATH, plen) != 0 ||
	    (path[plen] != '\0' && path[plen] != '/')) {
		log_info(LOG_OCSP, "%s %s from %s: no such path (404)", method,
		         shown, http_request_peer(req));
		http_reply_text(req, 404, "no such path: the OCSP responder "
		                          "is at " OCSP_HTTP_PATH);
		return;
	}
	/* "/ocsp" and "/ocsp/": POST; "/ocsp/<base64>": GET. */
	if (post && (path[plen] == '\0' || path[plen + 1] == '\0')) {
		http_ocsp_post(r, req);
		return;
	}
	if (get) {
		http_ocsp_get(r, req, path[plen] == '\0' ? "" : path + plen + 1);
		return;
	}
	log_info(LOG_OCSP, "%s %s from %s: method not allowed (405)", method,
	         shown, http_request_peer(req));
	http_reply_header(req, "Allow", path[plen] == '\0' ||
	                                        path[plen + 1] == '\0'
	                                    ? "GET, POST"
	                                    : "GET");
	http_reply_text(req, 405, "method %s not allowed here", method);
}

void
ocsp_http_refresh(struct ocsp_responder *r, const char *what, bool verbose)
{
	struct ocsp_refresh_report rep;
	struct error e = {{0}};
	int64_t t0 = time_mono_ms();

	if (ocsp_responder_refresh(r, &rep, &e) == -1) {
		log_error(LOG_OCSP, "refresh: %s", e.msg);
		return;
	}
	if (verbose || rep.signed_ > 0 || rep.failed > 0)
		log_write(LOG_OCSP,
		          verbose || rep.failed > 0 ? LOG_LEVEL_INFO
		                                    : LOG_LEVEL_DEBUG,
		          "refresh: %zu certificates of %s, %zu "
		          "responses signed, %zu still fresh, %zu failed, %zu "
		          "cached (%lld ms)",
		          rep.ours, what, rep.signed_, rep.fresh, rep.failed,
		          rep.cached, (long long)(time_mono_ms() - t0));
}

/* --- earlier root CA chain generations --- */

/* Longest path of a generation's file. */
#define OCSP_GEN_PATH_MAX 4096

/*
 * An issuer's files in dir (under the data directory): issuer_file, and
 * the OCSP responder certificate and key it issued; 0, or -1 with err
 * set and nothing held.
 */
static int
issuer_load(const char *datadir, const char *dir, const char *issuer_file,
            const char *pass, size_t passlen, struct ocsp_generation *g,
            struct error *err)
{
	char path[OCSP_GEN_PATH_MAX];

	if (node_ca_path(datadir, path, sizeof(path), err, "%s/%s", dir,
	                 issuer_file) == -1 ||
	    (g->issuer = cert_load_pem(path, err)) == NULL ||
	    node_ca_path(datadir, path, sizeof(path), err,
	                 "%s/ocsp-responder.crt", dir) == -1 ||
	    (g->signer = cert_load_pem(path, err)) == NULL ||
	    node_ca_path(datadir, path, sizeof(path), err,
	                 "%s/ocsp-responder.key", dir) == -1 ||
	    (g->key = key_load(path, pass, passlen, err)) == NULL) {
		ocsp_generations_free(g, 1);
		return -1;
	}
	return 0;
}

/* One generation's files; 0, or -1 with err set and nothing held. */
static int
generation_load(const char *datadir, unsigned k, const char *issuer_file,
                const char *pass, size_t passlen, struct ocsp_generation *g,
                struct error *err)
{
	char dir[OCSP_GEN_PATH_MAX];

	memset(g, 0, sizeof(*g));
	g->gen = k;
	snprintf(dir, sizeof(dir), "%s/gen-%u", NODE_CA_DIR, k);
	return issuer_load(datadir, dir, issuer_file, pass, passlen, g, err);
}

int
ocsp_imported_load(const char *datadir, const char *dir, const char *pass,
                   size_t passlen, struct ocsp_generation *g,
                   struct error *err)
{
	char path[OCSP_GEN_PATH_MAX];

	memset(g, 0, sizeof(*g));
	g->gen = OCSP_GEN_IMPORTED;
	if (node_ca_path(datadir, path, sizeof(path), err, "%s/node-ca.crt",
	                 dir) == -1)
		return -1;
	if (!file_exists(path))
		return 0;
	return issuer_load(datadir, dir, "node-ca.crt", pass, passlen, g,
	                   err) == -1
	           ? -1
	           : 1;
}

size_t
ocsp_generations_load(const char *datadir, const char *issuer_file,
                      const char *pass, size_t passlen,
                      struct ocsp_generation *gens)
{
	unsigned k = node_ca_generation(datadir);
	struct error e = {{0}};
	size_t n = 0;

	while (k > 1 && n < OCSP_GENERATIONS_MAX) {
		k--;
		if (generation_load(datadir, k, issuer_file, pass, passlen,
		                    &gens[n], &e) == -1) {
			log_error(LOG_OCSP,
			          "root CA chain generation %u: %s; its "
			          "certificates are answered unauthorized",
			          k, e.msg);
			continue;
		}
		n++;
	}
	return n;
}

void
ocsp_generations_free(struct ocsp_generation *gens, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		X509_free(gens[i].issuer);
		X509_free(gens[i].signer);
		EVP_PKEY_free(gens[i].key);
		memset(&gens[i], 0, sizeof(gens[i]));
	}
}

int
ocsp_generations_attach(struct ocsp_responder *r,
                        const struct ocsp_generation *gens, size_t n,
                        struct store *st, const struct ocsp_config *cfg,
                        struct error *err)
{
	struct ocsp_responder *older;
	size_t i;

	for (i = 0; i < n; i++) {
		if ((older = ocsp_responder_new(gens[i].signer, gens[i].key,
		                                gens[i].issuer, st, cfg,
		                                err)) == NULL) {
			if (gens[i].gen == OCSP_GEN_IMPORTED)
				error_prefix(err, "the imported Node CA");
			else
				error_prefix(err, "root CA chain generation %u",
				             gens[i].gen);
			return -1;
		}
		ocsp_responder_set_older(r, older);
		if (gens[i].gen == OCSP_GEN_IMPORTED)
			log_info(LOG_OCSP, "answering for the certificates of "
			                   "the imported Node CA of the former "
			                   "primary too");
		else
			log_info(LOG_OCSP, "answering for the certificates of "
			                   "root CA chain generation %u too",
			         gens[i].gen);
	}
	return 0;
}
