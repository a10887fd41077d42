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
 * the PAN's events).  Every OCSP_HTTP_REFRESH_MS the responder walks the
 * store and pre-signs or re-signs what changed (ocsp_responder_refresh),
 * and at once on SIGHUP.
 *
 * HTTP (RFC 6960 appendix A, RFC 5019 section 5 and 6) is
 * common/ocsp_http.c, which the PAN's responder for the upper levels
 * shares: POST /ocsp and GET /ocsp/<base64>.  Bad input gets an OCSP
 * malformedRequest (HTTP 200, as RFC 6960 wants an OCSPResponse), never a
 * dead process.
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
#include "ocsp_http.h"
#include "proc.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* Longest path we build in the data directory. */
#define OCSP_SVC_PATH_MAX 4096

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
	/* Earlier chain generations, newest first (their own responders). */
	struct ocsp_generation gens[OCSP_GENERATIONS_MAX];
	size_t ngens;
	unsigned gen;             /* root CA chain generation of sub */
	struct ocsp_responder *r; /* the responder core (thread-safe) */
	struct ocsp_http_slot slot; /* r, as the HTTP workers find it */
	struct http_server *srv;  /* the listener and workers */
	bool alarm_synced;        /* the daemon took our key alarm state */
};

/* The alarm while the responder key is unusable (answers are tryLater). */
#define OCSP_SVC_KEY_ALARM "OCSP Responder Key Unavailable"

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
	s->gen = node_ca_generation(a->datadir);
	s->ngens = ocsp_generations_load(a->datadir, "endpoint-sub-ca.crt",
	                                 a->pass, a->passlen, s->gens);
	secure_zero(a->pass, a->passlen);
	return 0;
}

static void
ocsp_svc_config(const struct ocsp_svc *s, struct ocsp_config *oc)
{
	memset(oc, 0, sizeof(*oc));
	oc->nonce = config_get_bool(s->cfg, "ocsp.nonce");
	oc->validity = config_get_duration(s->cfg, "ocsp.validity");
}

static int
ocsp_svc_responder(struct ocsp_svc *s, struct error *err)
{
	struct ocsp_config oc;
	struct error e = {{0}};

	ocsp_svc_config(s, &oc);
	s->r = ocsp_responder_new(s->signer, s->key, s->sub, s->store, &oc,
	                          &e);
	if (s->r != NULL)
		goto older;
	if (s->signer == NULL)
		goto fail;
	/* A key that is not the certificate's: no key, as above. */
	log_error(LOG_OCSP,
	          "OCSP responder key unavailable: %s; every request will be "
	          "answered tryLater",
	          e.msg);
	if ((s->r = ocsp_responder_new(NULL, NULL, s->sub, s->store, &oc,
	                               &e)) == NULL)
		goto fail;
older:
	/* What the old chain issued is answered until it expires. */
	if (ocsp_generations_attach(s->r, s->gens, s->ngens, s->store, &oc,
	                            &e) == 0)
		return 0;
fail:
	error_set(err, "%s", e.msg);
	return -1;
}

/*
 * Tell the node's daemon whether our key is unusable, once it takes it:
 * at start it may not answer yet (it waits for us to be ready before it
 * binds its control socket), so this is retried with every refresh.  A
 * restarted responder whose key is fine clears what a predecessor raised.
 */
static void
ocsp_svc_key_alarm(struct ocsp_svc *s)
{
	struct error e = {{0}};
	char text[256];
	bool broken = !ocsp_responder_can_sign(s->r);

	if (s->alarm_synced)
		return;
	snprintf(text, sizeof(text),
	         "%s: the OCSP responder has no usable key "
	         "(D/ca/ocsp-responder.{crt,key}); every request is answered "
	         "tryLater",
	         s->hostname);
	if (psn_service_alarm(s->args->datadir, OCSP_SVC_KEY_ALARM,
	                      broken ? "critical" : NULL, text, &e) == 0)
		s->alarm_synced = true;
	else
		log_debug(LOG_OCSP, "key alarm not taken yet: %s", e.msg);
}

/*
 * SIGHUP: a newer root CA chain generation installed (member_rootchain.h)?
 * Then a responder for the new Sub CA, signing with the new responder
 * certificate and its key from our hand-over copy (services.h), takes
 * the old one (with its own older ones) as its older and replaces it for
 * the HTTP workers: the old generation is still answered by its own
 * responder certificate.  1 taken, 0 nothing newer, -1 (logged) it cannot
 * be: we end, and the supervisor starts us again on the new files.
 */
static int
ocsp_svc_take_generation(struct ocsp_svc *s)
{
	const char *d = s->args->datadir;
	unsigned gen = node_ca_generation(d);
	struct ocsp_responder *r = NULL;
	struct ocsp_config oc;
	char path[OCSP_SVC_PATH_MAX];
	struct error e = {{0}};
	X509 *sub = NULL, *signer = NULL;
	EVP_PKEY *key = NULL;

	if (gen <= s->gen)
		return 0;
	if (node_path(path, sizeof(path), d,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", &e) == -1 ||
	    (sub = cert_load_pem(path, &e)) == NULL ||
	    node_path(path, sizeof(path), d, NODE_CA_DIR "/ocsp-responder.crt",
	              &e) == -1 ||
	    (signer = cert_load_pem(path, &e)) == NULL ||
	    (key = member_handover_take(d, "ocsp-responder",
	                                OCSP_SERVICE_PROCESS, &s->args->own,
	                                signer, &e)) == NULL)
		goto fail;
	ocsp_svc_config(s, &oc);
	if ((r = ocsp_responder_new(signer, key, sub, s->store, &oc, &e)) ==
	    NULL)
		goto fail;
	ocsp_http_slot_replace(&s->slot, r); /* s->r is r's older now */
	s->r = r;
	X509_free(s->sub);
	X509_free(s->signer);
	EVP_PKEY_free(s->key);
	s->sub = sub;
	s->signer = signer;
	s->key = key;
	log_info(LOG_OCSP,
	         "root CA chain generation %u: the new responder certificate "
	         "answers for the new Sub CA, generation %u's for its own",
	         gen, s->gen);
	s->gen = gen;
	s->alarm_synced = false; /* the key alarm state is told again */
	return 1;
fail:
	log_error(LOG_OCSP,
	          "root CA chain generation %u: cannot switch in place: %s; "
	          "ending, to be started again on the new files",
	          gen, e.msg);
	X509_free(sub);
	X509_free(signer);
	EVP_PKEY_free(key);
	return -1;
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
			ocsp_http_refresh(s->r, "our Sub CA", first);
			ocsp_svc_key_alarm(s);
			first = false;
			next = time_mono_ms() + OCSP_HTTP_REFRESH_MS;
			continue;
		}
		switch (psn_service_wait(s->args, sigfd, next - now, LOG_OCSP)) {
		case PSN_SERVICE_STOP:
			return 0;
		case PSN_SERVICE_HUP:
			if (ocsp_svc_take_generation(s) == -1)
				return -1;
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
	struct config_address listen;
	struct http_config hc;
	struct ocsp_svc s;
	struct error e = {{0}};
	int sigfd = -1, ret = 1;

	memset(&s, 0, sizeof(s));
	s.args = a;
	snprintf(s.hostname, sizeof(s.hostname), "%s", a->id->hostname);
	if (psn_service_begin(a, &s.cfg, &s.own_cfg, &e) == -1)
		goto out;
	/* Unset, it follows est.listen: the node's own address. */
	if (config_listen_address(s.cfg, "ocsp.listen", "est.listen", &listen,
	                          &e) == -1)
		goto out;
	addr = &listen;
	/* Blocked here, before the workers start, so they inherit it. */
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (ocsp_svc_load(&s, &e) == -1 ||
	    psn_service_store_ro(a->datadir, &s.store, &e) == -1 ||
	    ocsp_svc_responder(&s, &e) == -1)
		goto out;
	memset(&hc, 0, sizeof(hc));
	hc.address = addr->host;
	hc.port = addr->port;
	hc.workers = (unsigned)config_get_int(s.cfg, "ocsp.workers");
	hc.timeout = (unsigned)config_get_duration(s.cfg, "ocsp.timeout");
	hc.tls = NULL; /* RFC 6960 A.1: OCSP over plain HTTP */
	hc.category = LOG_OCSP;
	ocsp_http_slot_init(&s.slot, s.r);
	if ((s.srv = http_server_start(&hc, ocsp_http_handle_slot, &s.slot,
	                               &e)) == NULL)
		goto out;
	log_info(LOG_OCSP,
	         "OCSP responder of %s listening on http://%s%s%s:%u%s, %u "
	         "workers, pid %ld; nonces %s, responses valid %lld s; %s",
	         s.hostname, addr->family == AF_INET6 ? "[" : "", addr->host,
	         addr->family == AF_INET6 ? "]" : "",
	         (unsigned)http_server_port(s.srv), OCSP_HTTP_PATH,
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
	ocsp_generations_free(s.gens, s.ngens);
	X509_free(s.signer);
	EVP_PKEY_free(s.key);
	secret_wipe(&a->own);
	config_free(s.own_cfg);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}
