/*
 * ocsp_service: the PSN's OCSP responder process (services.h, process
 * "ocsp"): common/ocsp.c on common/http.c, plain HTTP on ocsp.listen
 * (0.0.0.0:2560 by default), path /ocsp, the URL that the AIA extension of
 * every endpoint certificate of this PSN names (docs/ocsp.md).
 *
 * It holds no CA key.  Its only private key is the OCSP responder's
 * (D/ca/ocsp-responder.key, decrypted with the node passphrase, which is
 * then wiped).  If that key or its certificate cannot be loaded, the
 * process still serves, and every request is answered tryLater (RFC 6960
 * 4.2.1) until it is restarted with a usable key: a client then knows to
 * ask again, rather than finding nobody listening.
 *
 * Status comes from the PSN's store, opened read-only (the CA service and
 * the member daemon write it: issued certificates, and revocations from
 * the PAN's events).  Every OCSP_SVC_REFRESH_MS the responder walks the
 * store and pre-signs or re-signs what changed (ocsp_responder_refresh),
 * and at once on SIGHUP.
 *
 * HTTP (RFC 6960 appendix A, RFC 5019 section 5 and 6):
 *   POST /ocsp           Content-Type application/ocsp-request, else 415;
 *                        a body over HTTP_MAX_BODY is 413 (libevent, before
 *                        reading it); answered with no-cache.
 *   GET  /ocsp/<base64>  the URL-decoded path is base64 (or base64url) of
 *                        the DER request; a cacheable answer carries
 *                        Cache-Control max-age (until nextUpdate), ETag,
 *                        Last-Modified (thisUpdate) and Expires
 *                        (nextUpdate).
 *   other methods on /ocsp: 405; any other path: 404 (text/plain).
 * Bad input gets an OCSP malformedRequest (HTTP 200, as RFC 6960 wants an
 * OCSPResponse), never a dead process.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include "cert.h"
#include "config.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "ocsp.h"
#include "proc.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* Longest path we build in the data directory. */
#define OCSP_SVC_PATH_MAX 4096
/* The responder's URL path (AIA of every endpoint certificate). */
#define OCSP_SVC_PATH "/ocsp"
/* How often the store is walked to pre-sign and re-sign responses. */
#define OCSP_SVC_REFRESH_MS 10000
/* An HTTP date: "Sun, 06 Nov 1994 08:49:37 GMT" and a NUL. */
#define OCSP_SVC_DATE_MAX 32

#define OCSP_MEDIA_REQUEST  "application/ocsp-request"
#define OCSP_MEDIA_RESPONSE "application/ocsp-response"

/* The OCSP service process's state. */
struct ocsp_svc {
	const struct psn_service_args *args; /* how we were started */
	const struct config *cfg;            /* ocsp.* keys */
	struct config *own_cfg;              /* cfg when we loaded it */
	char hostname[NODE_HOSTNAME_MAX + 1];
	struct store *store;     /* read-only; shared by the workers */
	X509 *sub;               /* our Endpoint Sub CA: whom we answer for */
	X509 *signer;            /* D/ca/ocsp-responder.crt, NULL: tryLater */
	EVP_PKEY *key;           /* its key */
	struct ocsp_responder *r; /* the responder core (thread-safe) */
	struct http_server *srv;  /* the listener and workers */
};

/* --- HTTP --- */

/* RFC 9110 5.6.7 IMF-fixdate, spelled out: no locale may change it. */
static void
http_date(int64_t t, char buf[OCSP_SVC_DATE_MAX])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
	                                   "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
	                                     "May", "Jun", "Jul", "Aug",
	                                     "Sep", "Oct", "Nov", "Dec"};
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		snprintf(buf, OCSP_SVC_DATE_MAX, "Thu, 01 Jan 1970 00:00:00 GMT");
		return;
	}
	snprintf(buf, OCSP_SVC_DATE_MAX, "%s, %02d %s %04d %02d:%02d:%02d GMT",
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
static bool
media_is(const char *v, const char *media)
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
ocsp_svc_reply(struct http_request *req, struct ocsp_answer *ans, bool get)
{
	char buf[128], date[OCSP_SVC_DATE_MAX];
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
		http_date(ans->this_update, date);
		http_reply_header(req, "Last-Modified", date);
		http_date(ans->next_update, date);
		http_reply_header(req, "Expires", date);
	} else
		http_reply_header(req, "Cache-Control", "no-cache, no-store");
	http_reply(req, 200, OCSP_MEDIA_RESPONSE, ans->der, ans->len);
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
ocsp_svc_answer(struct ocsp_svc *s, struct http_request *req,
                const uint8_t *der, size_t len, bool get)
{
	struct ocsp_answer ans;

	if (ocsp_respond(s->r, der, len, &ans) == -1) {
		log_error(LOG_OCSP, "%s from %s: no answer could be encoded "
		                    "(out of memory)",
		          http_request_method(req), http_request_peer(req));
		http_reply_text(req, 500, "out of memory");
		return;
	}
	ocsp_svc_reply(req, &ans, get);
	ocsp_answer_free(&ans);
}

/* The path after "/ocsp/": base64 of the DER request (RFC 6960 A.1). */
static void
ocsp_svc_get(struct ocsp_svc *s, struct http_request *req, const char *b64)
{
	struct ocsp_answer ans;
	struct error e = {{0}};
	uint8_t *der;
	size_t len = 0;

	if ((der = ocsp_get_decode(b64, strlen(b64), &len, &e)) != NULL) {
		ocsp_svc_answer(s, req, der, len, true);
		free(der);
		return;
	}
	if (ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, e.msg,
	                      &ans) == -1) {
		http_reply_text(req, 500, "out of memory");
		return;
	}
	ocsp_svc_reply(req, &ans, true);
	ocsp_answer_free(&ans);
}

static void
ocsp_svc_post(struct ocsp_svc *s, struct http_request *req)
{
	const char *ct = http_request_header(req, "Content-Type");
	const uint8_t *body;
	size_t len = 0;

	/* RFC 6960 A.1.1 / RFC 5019 5: the request's media type. */
	if (!media_is(ct, OCSP_MEDIA_REQUEST)) {
		log_info(LOG_OCSP, "POST /ocsp from %s: Content-Type %s "
		                   "refused (415)",
		         http_request_peer(req), ct != NULL ? ct : "missing");
		http_reply_text(req, 415, "Content-Type must be %s",
		                OCSP_MEDIA_REQUEST);
		return;
	}
	body = http_request_body(req, &len);
	ocsp_svc_answer(s, req, body, len, false);
}

static void
ocsp_svc_handle(struct http_request *req, void *arg)
{
	struct ocsp_svc *s = arg;
	const char *path = http_request_path(req);
	const char *method = http_request_method(req);
	bool get = strcmp(method, "GET") == 0;
	bool post = strcmp(method, "POST") == 0;
	size_t plen = strlen(OCSP_SVC_PATH);
	char shown[80];

	log_safe(path, shown, sizeof(shown));
	if (strncmp(path, OCSP_SVC_PATH, plen) != 0 ||
	    (path[plen] != '\0' && path[plen] != '/')) {
		log_info(LOG_OCSP, "%s %s from %s: no such path (404)", method,
		         shown, http_request_peer(req));
		http_reply_text(req, 404, "no such path: the OCSP responder "
		                          "is at " OCSP_SVC_PATH);
		return;
	}
	/* "/ocsp" and "/ocsp/": POST; "/ocsp/<base64>": GET. */
	if (post && (path[plen] == '\0' || path[plen + 1] == '\0')) {
		ocsp_svc_post(s, req);
		return;
	}
	if (get) {
		ocsp_svc_get(s, req, path[plen] == '\0' ? "" : path + plen + 1);
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

/* --- the process --- */

/*
 * The responder certificate and key.  A failure is logged and leaves
 * both NULL: the service then answers tryLater.
 */
static void
ocsp_svc_load_signer(struct ocsp_svc *s)
{
	const struct psn_service_args *a = s->args;
	char path[OCSP_SVC_PATH_MAX], name[256];
	struct error e = {{0}};

	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/ocsp-responder.crt", &e) == -1 ||
	    (s->signer = cert_load_pem(path, &e)) == NULL ||
	    node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/ocsp-responder.key", &e) == -1 ||
	    (s->key = key_load(path, a->pass, a->passlen, &e)) == NULL) {
		log_error(LOG_OCSP,
		          "OCSP responder key unavailable: %s; every request "
		          "will be answered tryLater",
		          e.msg);
		X509_free(s->signer);
		s->signer = NULL;
		return;
	}
	/*
	 * RFC 6960 4.2.2.2: a delegate must be issued by the CA it answers
	 * for.  In the legacy hierarchy it is not (the PAN's Node CA issued
	 * it); we sign anyway, as the product did, and say so.
	 */
	if (X509_check_issued(s->sub, s->signer) == X509_V_OK)
		log_info(LOG_OCSP, "responder certificate issued by our "
		                   "Endpoint Sub CA (rfc6960 hierarchy)");
	else {
		cert_name_string(X509_get_issuer_name(s->signer), name,
		                 sizeof(name));
		log_warn(LOG_OCSP,
		         "responder certificate issued by %s, not by our "
		         "Endpoint Sub CA (legacy hierarchy): clients that "
		         "check RFC 6960 4.2.2.2 refuse its responses",
		         name);
	}
	if (!(X509_get_extended_key_usage(s->signer) & XKU_OCSP_SIGN))
		log_warn(LOG_OCSP, "responder certificate lacks "
		                   "id-kp-OCSPSigning: clients will refuse it");
	if (X509_cmp_current_time(X509_get0_notAfter(s->signer)) <= 0 ||
	    X509_cmp_current_time(X509_get0_notBefore(s->signer)) >= 0)
		log_error(LOG_OCSP, "the responder certificate is outside its "
		                    "validity: every request will be answered "
		                    "tryLater");
}

/* Load what the process needs before it serves; the passphrase last. */
static int
ocsp_svc_load(struct ocsp_svc *s, struct error *err)
{
	const struct psn_service_args *a = s->args;
	char path[OCSP_SVC_PATH_MAX];

	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", err) == -1 ||
	    (s->sub = cert_load_pem(path, err)) == NULL)
		return -1;
	ocsp_svc_load_signer(s);
	secure_zero(a->pass, a->passlen);
	return 0;
}

static int
ocsp_svc_responder(struct ocsp_svc *s, struct error *err)
{
	struct ocsp_config oc;
	struct error e = {{0}};

	memset(&oc, 0, sizeof(oc));
	oc.nonce = config_get_bool(s->cfg, "ocsp.nonce");
	oc.validity = config_get_duration(s->cfg, "ocsp.validity");
	s->r = ocsp_responder_new(s->signer, s->key, s->sub, s->store, &oc,
	                          &e);
	if (s->r != NULL)
		return 0;
	if (s->signer == NULL)
		goto fail;
	/* A key that is not the certificate's: no key, as above. */
	log_error(LOG_OCSP,
	          "OCSP responder key unavailable: %s; every request will be "
	          "answered tryLater",
	          e.msg);
	if ((s->r = ocsp_responder_new(NULL, NULL, s->sub, s->store, &oc,
	                               &e)) != NULL)
		return 0;
fail:
	error_set(err, "%s", e.msg);
	return -1;
}

static void
ocsp_svc_refresh(struct ocsp_svc *s, bool verbose)
{
	struct ocsp_refresh_report rep;
	struct error e = {{0}};
	int64_t t0 = time_mono_ms();

	if (ocsp_responder_refresh(s->r, &rep, &e) == -1) {
		log_error(LOG_OCSP, "refresh: %s", e.msg);
		return;
	}
	if (verbose || rep.signed_ > 0 || rep.failed > 0)
		log_write(LOG_OCSP,
		          verbose || rep.failed > 0 ? LOG_LEVEL_INFO
		                                    : LOG_LEVEL_DEBUG,
		          "refresh: %zu certificates of our Sub CA, %zu "
		          "responses signed, %zu still fresh, %zu failed, %zu "
		          "cached (%lld ms)",
		          rep.ours, rep.signed_, rep.fresh, rep.failed,
		          rep.cached, (long long)(time_mono_ms() - t0));
}

/* Serve until SIGTERM (SIGINT too in the foreground); refresh on time. */
static int
ocsp_svc_loop(struct ocsp_svc *s, int sigfd)
{
	int64_t next = 0, now;
	bool first = true;

	for (;;) {
		now = time_mono_ms();
		if (now >= next) {
			ocsp_svc_refresh(s, first);
			first = false;
			next = time_mono_ms() + OCSP_SVC_REFRESH_MS;
			continue;
		}
		switch (psn_service_wait(s->args, sigfd, next - now, LOG_OCSP)) {
		case PSN_SERVICE_STOP:
			return 0;
		case PSN_SERVICE_HUP:
			log_info(LOG_OCSP, "SIGHUP: refreshing the pre-signed "
			                   "responses now");
			next = 0;
			first = true;
			break;
		case -1:
			return -1;
		default:
			break;
		}
	}
}

int
ocsp_service_main(void *arg)
{
	struct psn_service_args *a = arg;
	const struct config_address *addr;
	struct http_config hc;
	struct ocsp_svc s;
	struct error e = {{0}};
	int sigfd = -1, ret = 1;

	memset(&s, 0, sizeof(s));
	s.args = a;
	snprintf(s.hostname, sizeof(s.hostname), "%s", a->id->hostname);
	if (psn_service_begin(a, &s.cfg, &s.own_cfg, &e) == -1)
		goto out;
	addr = config_get_address(s.cfg, "ocsp.listen");
	if (addr->family == AF_UNSPEC) {
		error_set(&e, "ocsp.listen must be an IP address, not '%s'",
		          addr->host);
		goto out;
	}
	/* Blocked here, before the workers start, so they inherit it. */
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (ocsp_svc_load(&s, &e) == -1 || psn_service_store_ro(a->datadir, &s.store, &e) == -1 ||
	    ocsp_svc_responder(&s, &e) == -1)
		goto out;
	memset(&hc, 0, sizeof(hc));
	hc.address = addr->host;
	hc.port = addr->port;
	hc.workers = (unsigned)config_get_int(s.cfg, "ocsp.workers");
	hc.timeout = (unsigned)config_get_duration(s.cfg, "ocsp.timeout");
	hc.tls = NULL; /* RFC 6960 A.1: OCSP over plain HTTP */
	hc.category = LOG_OCSP;
	if ((s.srv = http_server_start(&hc, ocsp_svc_handle, &s, &e)) == NULL)
		goto out;
	log_info(LOG_OCSP,
	         "OCSP responder of %s listening on http://%s%s%s:%u%s, %u "
	         "workers, pid %ld; nonces %s, responses valid %lld s; %s",
	         s.hostname, addr->family == AF_INET6 ? "[" : "", addr->host,
	         addr->family == AF_INET6 ? "]" : "",
	         (unsigned)http_server_port(s.srv), OCSP_SVC_PATH,
	         http_server_workers(s.srv), (long)getpid(),
	         config_get_bool(s.cfg, "ocsp.nonce") ? "on" : "off (RFC 5019)",
	         (long long)config_get_duration(s.cfg, "ocsp.validity"),
	         ocsp_responder_can_sign(s.r)
	             ? "signing with the OCSP responder key"
	             : "NO responder key: answering tryLater");
	psn_service_ready(a, "ok");
	ret = ocsp_svc_loop(&s, sigfd) == 0 ? 0 : 1;
	log_info(LOG_OCSP, "OCSP responder of %s stopping", s.hostname);
out:
	if (ret != 0 && e.msg[0] != '\0')
		log_error(LOG_OCSP, "OCSP responder cannot start: %s", e.msg);
	if (ret != 0)
		psn_service_ready(a, e.msg[0] != '\0' ? e.msg : "failed");
	secure_zero(a->pass, a->passlen);
	http_server_stop(s.srv);
	ocsp_responder_free(s.r);
	store_close(s.store);
	X509_free(s.sub);
	X509_free(s.signer);
	EVP_PKEY_free(s.key);
	config_free(s.own_cfg);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}
