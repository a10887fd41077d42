/*
 * ca_service: the PSN's CA service process and its client (services.h).
 *
 * The process holds the Endpoint Sub CA key and nothing that faces the
 * network, in acme-client's keyproc order: give up what was inherited,
 * load the key, wipe the passphrase, then serve one REP socket at
 * ipc://D/ca-service.sock (0600).  It answers two requests:
 *
 *   CaChainRequest -> CaChainResponse: the chain as it is on disk now
 *     (D/ca/endpoint-sub-ca.crt, then D/ca/chain.pem: Node CA, Root CA)
 *     and whether it is complete: every certificate there, each issued by
 *     the next, ending at the root saved at join (D/ca/root-ca.crt), and
 *     the path verifying now.  Read on every request, so that a repaired
 *     (or broken) chain shows at the EST server's next refresh.
 *   EnrollRequest -> EnrollResponse or Error: the CSR is checked again
 *     here (signature, key strength), the profile is one of the endpoint
 *     profiles, and the certificate is issued by the sub CA with the AIA
 *     OCSP URL of this PSN's responder.  It is recorded in the store and
 *     queued for the PAN in one transaction (outbox_batch_add +
 *     store_apply) before the answer leaves: nothing acknowledged is
 *     lost (DESIGN.md section 3).
 *
 * Each request is answered exactly once, so the REP alternation never
 * breaks; bad framing from our own EST server is logged and answered with
 * an Error, and the CA service keeps serving.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <zmq.h>

#include "cert.h"
#include "chain.h"
#include "csr.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "msg.h"
#include "node.h"
#include "outbox.h"
#include "proc.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* Longest path we build in the data directory. */
#define CA_PATH_MAX 4096
/* Longest subject or issuer as we log it. */
#define CA_DN_MAX 512
/* Longest reason we send for an incomplete chain. */
#define CA_REASON_MAX ERROR_MAX

/* The CA service process's state. */
struct ca_proc {
	const struct psn_service_args *args;  /* how we were started */
	char hostname[NODE_HOSTNAME_MAX + 1]; /* this PSN */
	X509 *sub;                            /* Endpoint Sub CA certificate */
	EVP_PKEY *key;                        /* its key: only here */
	uint8_t kid[STORE_KEY_ID_LEN];        /* its key id (store records) */
	unsigned gen;                         /* root CA chain generation */
	struct store *store;                  /* read-write */
	char ocsp_url[CERT_URL_MAX];          /* AIA of what we issue */
	struct msg_stats stats;               /* requests and drops */
	uint64_t issued;                      /* certificates issued */
	uint64_t refused;                     /* requests refused */
};

/* A refusal: which Error code, and why. */
struct ca_refusal {
	int code;         /* Iselab__Error__Code */
	struct error err; /* the reason */
};

/* The client's handle. */
struct ca_client {
	pthread_mutex_t lock;                  /* one request at a time */
	void *ctx;                             /* the caller's context */
	void *sock;                            /* REQ, remade on failure */
	char endpoint[PROC_ENDPOINT_MAX + 64]; /* ipc://D/ca-service.sock */
	char path[PROC_ENDPOINT_MAX + 64];     /* D/ca-service.sock */
	int timeout_ms;                        /* answer timeout */
};

static void ca_refuse(struct ca_refusal *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
ca_refuse(struct ca_refusal *r, int code, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	va_start(ap, fmt);
	vsnprintf(r->err.msg, sizeof(r->err.msg), fmt, ap);
	va_end(ap);
}

/* A copy of s fit for one log line: control bytes become '?'. */
static void
ca_printable(const char *s, char *buf, size_t len)
{
	size_t i;

	snprintf(buf, len, "%s", s != NULL && *s != '\0' ? s : "-");
	for (i = 0; buf[i] != '\0'; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
}

/* --- the chain --- */

/*
 * The chain on disk now: sub CA first, then D/ca/chain.pem.  *certs gets
 * what was found (the sub CA at least); complete says whether it is a
 * whole, valid chain to D/ca/root-ca.crt, reason why not.
 */
static int
ca_chain_read(struct ca_proc *cp, STACK_OF(X509) * *certs, bool *complete,
              char *reason, size_t rlen)
{
	const char *d = cp->args->datadir;
	char path[CA_PATH_MAX], dn[CA_DN_MAX];
	STACK_OF(X509) *sk = NULL, *file = NULL, *mid = NULL, *top = NULL;
	struct error e = {{0}};
	X509 *root = NULL, *x, *last;
	int i, n;

	*complete = false;
	*certs = NULL;
	reason[0] = '\0';
	if ((sk = sk_X509_new_null()) == NULL || X509_up_ref(cp->sub) != 1 ||
	    !sk_X509_push(sk, cp->sub)) {
		chain_free(sk);
		return -1;
	}
	*certs = sk;
	if (node_path(path, sizeof(path), d, NODE_CA_DIR "/chain.pem", &e) ==
	        -1 ||
	    (file = chain_load_pem(path, &e)) == NULL) {
		snprintf(reason, rlen, "%s", e.msg);
		goto out;
	}
	while (sk_X509_num(file) > 0) {
		x = sk_X509_shift(file);
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			snprintf(reason, rlen, "out of memory");
			goto out;
		}
	}
	n = sk_X509_num(sk);
	for (i = 0; i + 1 < n; i++) {
		x = sk_X509_value(sk, i);
		if (X509_check_issued(sk_X509_value(sk, i + 1), x) !=
		    X509_V_OK) {
			cert_name_string(X509_get_issuer_name(x), dn,
			                 sizeof(dn));
			snprintf(reason, rlen,
			         "the issuer of certificate %d (%s) is missing "
			         "from %s",
			         i, dn, path);
			goto out;
		}
	}
	last = sk_X509_value(sk, n - 1);
	if (X509_check_issued(last, last) != X509_V_OK) {
		cert_name_string(X509_get_issuer_name(last), dn, sizeof(dn));
		snprintf(reason, rlen, "no root CA: the issuer %s is missing",
		         dn);
		goto out;
	}
	if (node_path(path, sizeof(path), d, NODE_CA_DIR "/root-ca.crt", &e) ==
	        -1 ||
	    (root = cert_load_pem(path, &e)) == NULL) {
		snprintf(reason, rlen, "%s", e.msg);
		goto out;
	}
	/* The root learned over the PAN's CURVE channel at join time. */
	if (X509_cmp(root, last) != 0) {
		cert_name_string(X509_get_subject_name(last), dn, sizeof(dn));
		snprintf(reason, rlen,
		         "the chain ends at %s, not at the root saved at join "
		         "(%s)",
		         dn, path);
		goto out;
	}
	if ((mid = sk_X509_new_null()) == NULL ||
	    (top = sk_X509_new_null()) == NULL || !sk_X509_push(top, root)) {
		snprintf(reason, rlen, "out of memory");
		goto out;
	}
	for (i = 1; i + 1 < n; i++)
		if (!sk_X509_push(mid, sk_X509_value(sk, i))) {
			snprintf(reason, rlen, "out of memory");
			goto out;
		}
	if (chain_verify(cp->sub, mid, top, CHAIN_PURPOSE_ANY, NULL, &e) ==
	    -1) {
		snprintf(reason, rlen, "%s", e.msg);
		goto out;
	}
	*complete = true;
out:
	sk_X509_free(mid);
	sk_X509_free(top);
	X509_free(root);
	chain_free(file);
	return 0;
}

static void
ca_answer_chain(struct ca_proc *cp, void *rep, const Iselab__Envelope *req)
{
	Iselab__Envelope out;
	Iselab__CaChainResponse resp = ISELAB__CA_CHAIN_RESPONSE__INIT;
	ProtobufCBinaryData *bins = NULL;
	STACK_OF(X509) *certs = NULL;
	char reason[CA_REASON_MAX];
	struct error e = {{0}};
	bool complete = false;
	int i, n = 0, len;

	if (ca_chain_read(cp, &certs, &complete, reason, sizeof(reason)) ==
	    -1) {
		(void)proc_send_error(rep, req->request_id,
		                      ISELAB__ERROR__CODE__ERROR_INTERNAL,
		                      "out of memory", &e);
		return;
	}
	n = sk_X509_num(certs);
	if ((bins = calloc((size_t)n, sizeof(*bins))) == NULL) {
		(void)proc_send_error(rep, req->request_id,
		                      ISELAB__ERROR__CODE__ERROR_INTERNAL,
		                      "out of memory", &e);
		goto out;
	}
	for (i = 0; i < n; i++) {
		unsigned char *der = NULL;

		if ((len = i2d_X509(sk_X509_value(certs, i), &der)) <= 0) {
			log_crypto(LOG_CA_SERVICE, &e, "i2d_X509", "CA chain");
			(void)proc_send_error(
			    rep, req->request_id,
			    ISELAB__ERROR__CODE__ERROR_INTERNAL, e.msg, &e);
			goto out;
		}
		bins[i].data = der;
		bins[i].len = (size_t)len;
	}
	if (!complete)
		log_error(LOG_CA_SERVICE, "CA certificate chain incomplete: %s",
		          reason);
	else
		log_debug(LOG_CA_SERVICE, "CA chain of %d certificates sent",
		          n);
	msg_init(&out, req->request_id, cp->hostname);
	resp.n_certs = (size_t)n;
	resp.certs = bins;
	resp.complete = complete;
	resp.reason = reason;
	out.body_case = ISELAB__ENVELOPE__BODY_CA_CHAIN_RESPONSE;
	out.ca_chain_response = &resp;
	if (proc_send(rep, &out, &e) == -1)
		log_error(LOG_CA_SERVICE, "sending the CA chain: %s", e.msg);
out:
	for (i = 0; bins != NULL && i < n; i++)
		OPENSSL_free(bins[i].data);
	free(bins);
	chain_free(certs);
}

/* --- enrollment --- */

/* Drop the SANs taken from the CSR: the request imposes its own. */
static void
ca_clear_sans(struct cert_request *creq)
{
	size_t i;

	for (i = 0; i < creq->nsan; i++) {
		free(creq->san[i].value);
		creq->san[i].value = NULL;
	}
	creq->nsan = 0;
}

static int
ca_san_type(const char *name, enum cert_san_type *t)
{
	static const struct {
		const char *name;
		enum cert_san_type type;
	} types[] = {
	    {"dns", CERT_SAN_DNS},
	    {"ip", CERT_SAN_IP},
	    {"email", CERT_SAN_EMAIL},
	    {"uri", CERT_SAN_URI},
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(types); i++)
		if (strcmp(name, types[i].name) == 0) {
			*t = types[i].type;
			return 0;
		}
	return -1;
}

/*
 * Check an EnrollRequest, issue, record and queue it.  *x is the
 * certificate on success; r says why not.
 */
static int
ca_issue(struct ca_proc *cp, const Iselab__EnrollRequest *req, X509 **x,
         struct ca_refusal *r)
{
	struct cert_request creq;
	struct store_batch *b = NULL;
	enum cert_profile profile;
	enum cert_san_type st;
	X509_REQ *csr = NULL;
	struct error e = {{0}};
	const char *recorded;
	size_t i;
	int ret = -1, rc;

	*x = NULL;
	cert_request_init(&creq, CERT_PROFILE_TLS_CLIENT);
	if (cert_profile_from_name(req->profile, &profile, &e) == -1 ||
	    (profile != CERT_PROFILE_TLS_CLIENT &&
	     profile != CERT_PROFILE_TLS_SERVER)) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		          "profile '%.64s' is not an endpoint profile "
		          "(tls-client, tls-server)",
		          req->profile);
		goto out;
	}
	if (req->validity < 0 || req->validity > CA_SERVICE_VALIDITY_MAX) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		          "validity of %lld s is outside 0..%lld",
		          (long long)req->validity,
		          (long long)CA_SERVICE_VALIDITY_MAX);
		goto out;
	}
	if (req->n_san > CA_SERVICE_SAN_MAX ||
	    strlen(req->requester) > CA_SERVICE_TEXT_MAX ||
	    strlen(req->template_) > CA_SERVICE_TEXT_MAX) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		          "too many SANs or too long a requester or template");
		goto out;
	}
	/* The EST server judged the CSR; a key holder checks again. */
	if (req->csr.len == 0 ||
	    (csr = csr_parse(req->csr.data, req->csr.len, &e)) == NULL ||
	    csr_verify(csr, &e) == -1) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "CSR: %s",
		          req->csr.len == 0 ? "none" : e.msg);
		goto out;
	}
	cert_request_free(&creq);
	cert_request_init(&creq, profile);
	creq.validity = (time_t)req->validity;
	/* The profile decides every extension; the CSR gives the key. */
	if (cert_request_from_csr(&creq, csr, &e) == -1 ||
	    (req->subject_cn[0] != '\0' &&
	     cert_request_set_cn(&creq, req->subject_cn, &e) == -1) ||
	    cert_request_set_ocsp_url(&creq, cp->ocsp_url, &e) == -1) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "%s",
		          e.msg);
		goto out;
	}
	if (req->n_san > 0) {
		ca_clear_sans(&creq);
		for (i = 0; i < req->n_san; i++) {
			if (ca_san_type(req->san[i]->type, &st) == -1) {
				ca_refuse(
				    r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
				    "unknown SAN type '%.16s'",
				    req->san[i]->type);
				goto out;
			}
			if (cert_request_add_san(&creq, st, req->san[i]->value,
			                         &e) == -1) {
				ca_refuse(
				    r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
				    "%s", e.msg);
				goto out;
			}
		}
	}
	if (cert_issue(&creq, cp->sub, cp->key, x, &e) == -1) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "%s",
		          e.msg);
		goto out;
	}
	/* Recorded and queued for the PAN before anyone hears of it. */
	recorded = req->template_[0] != '\0' ? req->template_ : req->profile;
	if ((b = store_batch_new()) == NULL) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_INTERNAL,
		          "out of memory");
		goto fail;
	}
	if (outbox_batch_add(b, *x, cp->kid, recorded, cp->hostname,
	                     time_now_ms(), &e) == -1) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_INTERNAL,
		          "queueing the certificate: %s", e.msg);
		goto fail;
	}
	if ((rc = store_apply(cp->store, b, &e)) != STORE_OK) {
		ca_refuse(r, ISELAB__ERROR__CODE__ERROR_INTERNAL,
		          "recording the certificate: %s",
		          rc == STORE_EXISTS ? "serial already stored" : e.msg);
		goto fail;
	}
	ret = 0;
	goto out;
fail:
	X509_free(*x);
	*x = NULL;
out:
	store_batch_free(b);
	cert_request_free(&creq);
	X509_REQ_free(csr);
	return ret;
}

static void
ca_answer_enroll(struct ca_proc *cp, void *rep, const Iselab__Envelope *env)
{
	const Iselab__EnrollRequest *req = env->enroll_request;
	Iselab__Envelope out;
	Iselab__EnrollResponse resp = ISELAB__ENROLL_RESPONSE__INIT;
	struct ca_refusal r = {0};
	struct error e = {{0}};
	unsigned char *der = NULL;
	char serial[CERT_SERIAL_HEX_MAX], subject[CA_DN_MAX], who[256],
	    tmpl[256];
	X509 *x = NULL;
	int len;

	ca_printable(req->requester, who, sizeof(who));
	ca_printable(req->template_, tmpl, sizeof(tmpl));
	if (ca_issue(cp, req, &x, &r) == -1) {
		cp->refused++;
		log_warn(LOG_CA_SERVICE,
		         "refused a %.64s certificate (template %s) for %s: %s",
		         req->profile, tmpl, who, r.err.msg);
		if (proc_send_error(rep, env->request_id, r.code, r.err.msg,
		                    &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		return;
	}
	cp->issued++;
	(void)cert_serial_hex(x, serial, sizeof(serial), NULL);
	cert_name_string(X509_get_subject_name(x), subject, sizeof(subject));
	log_info(LOG_CA_SERVICE_CERT,
	         "issued %s certificate serial %s subject %s template %s for "
	         "%s; stored and queued for the PAN",
	         req->profile, serial, subject, tmpl, who);
	if ((len = i2d_X509(x, &der)) <= 0) {
		log_crypto(LOG_CA_SERVICE, &e, "i2d_X509", serial);
		(void)proc_send_error(rep, env->request_id,
		                      ISELAB__ERROR__CODE__ERROR_INTERNAL,
		                      e.msg, &e);
		X509_free(x);
		return;
	}
	msg_init(&out, env->request_id, cp->hostname);
	resp.cert.data = der;
	resp.cert.len = (size_t)len;
	out.body_case = ISELAB__ENVELOPE__BODY_ENROLL_RESPONSE;
	out.enroll_response = &resp;
	if (proc_send(rep, &out, &e) == -1)
		log_error(LOG_CA_SERVICE, "sending serial %s: %s", serial,
		          e.msg);
	OPENSSL_free(der);
	X509_free(x);
}

/* Answer one request; never fails the loop. */
static void
ca_handle(struct ca_proc *cp, void *rep)
{
	Iselab__Envelope *env;
	struct error e = {{0}};

	if ((env = proc_recv(rep, &cp->stats, NULL, &e)) == NULL) {
		log_error(LOG_CA_SERVICE, "bad message on %s: %s",
		          CA_SERVICE_SOCKET, e.msg);
		if (proc_send_error(rep, 0,
		                    ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		                    e.msg, &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		return;
	}
	switch (env->body_case) {
	case ISELAB__ENVELOPE__BODY_CA_CHAIN_REQUEST:
		ca_answer_chain(cp, rep, env);
		break;
	case ISELAB__ENVELOPE__BODY_ENROLL_REQUEST:
		ca_answer_enroll(cp, rep, env);
		break;
	default:
		log_error(LOG_CA_SERVICE,
		          "a %s message; the CA service takes chain and "
		          "enroll requests",
		          msg_body_name(env->body_case));
		cp->stats.dropped[MSG_DROP_UNHANDLED]++;
		if (proc_send_error(rep, env->request_id,
		                    ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		                    "the CA service takes only chain and "
		                    "enroll requests",
		                    &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		break;
	}
	msg_free(env);
}

/* proc_serve() wants a void * context. */
static void
ca_handle_cb(void *ctx, void *rep)
{
	ca_handle((struct ca_proc *)ctx, rep);
}

/* Load the sub CA certificate and key, and everything derived. */
static int
ca_load(struct ca_proc *cp, struct error *err)
{
	const struct psn_service_args *a = cp->args;
	char kpath[CA_PATH_MAX], cpath[CA_PATH_MAX];

	if (node_path(kpath, sizeof(kpath), a->datadir,
	              NODE_CA_DIR "/endpoint-sub-ca.key", err) == -1 ||
	    node_path(cpath, sizeof(cpath), a->datadir,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", err) == -1)
		return -1;
	if ((cp->sub = cert_load_pem(cpath, err)) == NULL ||
	    (cp->key = key_load(kpath, a->pass, a->passlen, err)) == NULL)
		return -1;
	if (X509_check_private_key(cp->sub, cp->key) != 1) {
		log_crypto(LOG_CA_SERVICE, err, "X509_check_private_key",
		           kpath);
		error_set(err, "%s does not match %s", kpath, cpath);
		return -1;
	}
	if (store_issuer_key_id(cp->sub, cp->kid, err) == -1)
		return -1;
	cp->gen = node_ca_generation(a->datadir);
	/* DESIGN.md section 2: the issuing PSN's own responder. */
	snprintf(cp->ocsp_url, sizeof(cp->ocsp_url), "http://%s:%d/ocsp",
	         cp->hostname, JOIN_OCSP_PORT);
	log_info(LOG_CA_SERVICE, "holding the Endpoint Sub CA key (%s)", kpath);
	return 0;
}

/*
 * SIGHUP: a newer root CA chain generation installed (member_rootchain.h)?
 * Then the new Sub CA certificate, with its key from our hand-over copy
 * (services.h), replaces the old one between two requests: what is
 * issued from now on chains to the new root.  -1 (logged) when it cannot
 * be taken: we end, and the supervisor starts us again on the new files.
 */
static int
ca_take_generation(void *arg)
{
	struct ca_proc *cp = arg;
	const char *d = cp->args->datadir;
	unsigned gen = node_ca_generation(d);
	char path[CA_PATH_MAX];
	uint8_t kid[STORE_KEY_ID_LEN];
	struct error e = {{0}};
	X509 *sub = NULL;
	EVP_PKEY *key = NULL;

	if (gen <= cp->gen) {
		log_debug(LOG_CA_SERVICE, "SIGHUP: no newer root CA chain");
		return 0;
	}
	if (node_path(path, sizeof(path), d,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", &e) == -1 ||
	    (sub = cert_load_pem(path, &e)) == NULL ||
	    (key = member_handover_take(d, "endpoint-sub-ca",
	                                CA_SERVICE_PROCESS, &cp->args->own, sub,
	                                &e)) == NULL)
		goto fail;
	if (store_issuer_key_id(sub, kid, &e) == -1)
		goto fail;
	X509_free(cp->sub);
	EVP_PKEY_free(cp->key);
	cp->sub = sub;
	cp->key = key;
	memcpy(cp->kid, kid, sizeof(kid));
	log_info(LOG_CA_SERVICE,
	         "root CA chain generation %u: signing with the new Endpoint "
	         "Sub CA (was generation %u)",
	         gen, cp->gen);
	cp->gen = gen;
	return 0;
fail:
	log_error(LOG_CA_SERVICE,
	          "root CA chain generation %u: cannot switch in place: %s; "
	          "ending, to be started again on the new files",
	          gen, e.msg);
	X509_free(sub);
	EVP_PKEY_free(key);
	return -1;
}

int
ca_service_main(void *arg)
{
	struct psn_service_args *a = arg;
	struct ca_proc cp;
	struct error e = {{0}};
	char path[CA_PATH_MAX];
	void *ctx = NULL, *rep = NULL;
	int sigfd = -1, ret = 1;

	memset(&cp, 0, sizeof(cp));
	cp.args = a;
	snprintf(cp.hostname, sizeof(cp.hostname), "%s", a->id->hostname);
	/* Nothing inherited stays: sockets, store, pid file, ZeroMQ. */
	if (proc_close_fds(&a->ready_fd, a->ready_fd == -1 ? 0 : 1, &e) == -1 ||
	    psn_service_secrets(a, &e) == -1)
		goto out;
	/* No setuid gains, no core dumps or ptrace of the key pages. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		error_set(&e, "prctl: %s", strerror(errno));
		goto out;
	}
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (ca_load(&cp, &e) == -1)
		goto out;
	/* The passphrase has done its work here. */
	secure_zero(a->pass, a->passlen);
	if (node_path(path, sizeof(path), a->datadir, NODE_STORE_DIR, &e) ==
	        -1 ||
	    store_open(path, NULL, &cp.store, &e) == -1)
		goto out;
	if ((ctx = zmq_ctx_new()) == NULL) {
		error_set(&e, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((rep = proc_rep_bind(ctx, a->datadir, CA_SERVICE_SOCKET, &e)) ==
	    NULL)
		goto out;
	log_info(LOG_CA_SERVICE, "CA service of %s serving ipc://%s/%s.sock, "
	                         "pid %ld",
	         cp.hostname, a->datadir, CA_SERVICE_SOCKET, (long)getpid());
	psn_service_ready(a, "ok");
	ret =
	    proc_serve(rep, sigfd, cp.args->foreground, ca_take_generation,
	               ca_handle_cb, &cp) == 0
	        ? 0
	        : 1;
	log_info(LOG_CA_SERVICE,
	         "CA service stopping: %llu issued, %llu refused, %llu bad "
	         "messages",
	         (unsigned long long)cp.issued, (unsigned long long)cp.refused,
	         (unsigned long long)(cp.stats.dropped[MSG_DROP_MALFORMED] +
	                              cp.stats.dropped[MSG_DROP_OVERSIZED] +
	                              cp.stats.dropped[MSG_DROP_VERSION] +
	                              cp.stats.dropped[MSG_DROP_NO_BODY] +
	                              cp.stats.dropped[MSG_DROP_UNHANDLED]));
out:
	if (ret != 0) {
		log_error(LOG_CA_SERVICE, "CA service cannot start: %s", e.msg);
		psn_service_ready(a, e.msg[0] != '\0' ? e.msg : "failed");
	}
	secure_zero(a->pass, a->passlen);
	if (rep != NULL) {
		zmq_close(rep);
		proc_ipc_unlink(a->datadir, CA_SERVICE_SOCKET);
	}
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	store_close(cp.store);
	EVP_PKEY_free(cp.key);
	X509_free(cp.sub);
	secret_wipe(&a->own);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}

/* --- the client --- */

static int
ca_client_socket(struct ca_client *c, struct error *err)
{
	if (c->sock != NULL)
		zmq_close(c->sock);
	c->sock = proc_req_socket(c->ctx, c->endpoint, c->timeout_ms, err);
	return c->sock != NULL ? 0 : -1;
}

struct ca_client *
ca_client_new(void *zmq_ctx, const char *datadir, int timeout_ms,
              struct error *err)
{
	struct ca_client *c;

	if (zmq_ctx == NULL) {
		error_set(err, "no ZeroMQ context");
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	c->ctx = zmq_ctx;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : CA_CLIENT_TIMEOUT_MS;
	if (pthread_mutex_init(&c->lock, NULL) != 0) {
		error_set(err, "pthread_mutex_init failed");
		free(c);
		return NULL;
	}
	if (proc_ipc_endpoint(c->endpoint, sizeof(c->endpoint), datadir,
	                      CA_SERVICE_SOCKET, err) == -1 ||
	    proc_ipc_path(c->path, sizeof(c->path), datadir, CA_SERVICE_SOCKET,
	                  err) == -1 ||
	    ca_client_socket(c, err) == -1) {
		pthread_mutex_destroy(&c->lock);
		free(c);
		return NULL;
	}
	return c;
}

void
ca_client_free(struct ca_client *c)
{
	if (c == NULL)
		return;
	if (c->sock != NULL)
		zmq_close(c->sock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/*
 * Whether a process accepts connections on the socket file now.  A REQ
 * socket would queue the request for a peer that may never come and we
 * would wait the whole timeout: a CA service that is down is told at once.
 */
static bool
ca_client_listening(const struct ca_client *c)
{
	struct sockaddr_un sun;
	int fd, ok;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(c->path) >= sizeof(sun.sun_path))
		return false;
	memcpy(sun.sun_path, c->path, strlen(c->path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return true; /* cannot tell: let the request try */
	ok = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(fd);
	return ok;
}

/*
 * One request, one answer, under the lock.  Returns the answer envelope
 * (msg_free() it): the expected body or an Error; NULL with *why set.
 */
static Iselab__Envelope *
ca_client_call(struct ca_client *c, Iselab__Envelope *env,
               enum ca_client_failure *why, struct error *err)
{
	Iselab__Envelope *resp = NULL;
	struct error e = {{0}};
	bool timed_out = false;
	uint64_t id = 0;

	*why = CA_CLIENT_UNAVAILABLE;
	(void)getrandom(&id, sizeof(id), 0);
	env->request_id = id;
	pthread_mutex_lock(&c->lock);
	if (!ca_client_listening(c)) {
		error_set(err,
		          "the CA service is not running (no answer on %s)",
		          c->path);
		goto out;
	}
	if (c->sock == NULL && ca_client_socket(c, err) == -1)
		goto out;
	if (proc_send(c->sock, env, &e) == -1) {
		error_set(err, "the CA service at %s: %s", c->path, e.msg);
		goto reset;
	}
	if ((resp = proc_recv(c->sock, NULL, &timed_out, &e)) == NULL) {
		if (timed_out)
			error_set(err,
			          "the CA service did not answer within %d ms "
			          "(%s)",
			          c->timeout_ms, c->path);
		else
			error_set(err, "the CA service's answer: %s", e.msg);
		goto reset;
	}
	if (resp->request_id != id) {
		error_set(err, "the CA service answered another request");
		msg_free(resp);
		resp = NULL;
		goto reset;
	}
	goto out;
reset:
	/*
	 * A REQ socket whose answer is lost refuses to send again (EFSM):
	 * make a new one, so that the next call starts clean.
	 */
	if (ca_client_socket(c, &e) == -1)
		log_error(LOG_EST, "%s", e.msg);
out:
	pthread_mutex_unlock(&c->lock);
	return resp;
}

/* An Error answer: its message, and whether it was a refusal. */
static void
ca_client_error(const Iselab__Envelope *resp, enum ca_client_failure *why,
                struct error *err)
{
	if (resp->body_case != ISELAB__ENVELOPE__BODY_ERROR) {
		*why = CA_CLIENT_INTERNAL;
		error_set(err, "the CA service sent a %s message",
		          msg_body_name(resp->body_case));
		return;
	}
	*why = resp->error->code == ISELAB__ERROR__CODE__ERROR_INTERNAL
	           ? CA_CLIENT_INTERNAL
	           : CA_CLIENT_REFUSED;
	error_set(err, "%s", resp->error->message);
}

int
ca_client_chain(struct ca_client *c, STACK_OF(X509) * *certs, bool *complete,
                char *reason, size_t rlen, enum ca_client_failure *why,
                struct error *err)
{
	Iselab__Envelope env, *resp;
	Iselab__CaChainRequest req = ISELAB__CA_CHAIN_REQUEST__INIT;
	const Iselab__CaChainResponse *cr;
	STACK_OF(X509) *sk = NULL;
	struct error e = {{0}};
	X509 *x;
	size_t i;
	int ret = -1;

	*certs = NULL;
	*complete = false;
	msg_init(&env, 0, NULL);
	env.body_case = ISELAB__ENVELOPE__BODY_CA_CHAIN_REQUEST;
	env.ca_chain_request = &req;
	if ((resp = ca_client_call(c, &env, why, err)) == NULL)
		return -1;
	if (resp->body_case != ISELAB__ENVELOPE__BODY_CA_CHAIN_RESPONSE) {
		ca_client_error(resp, why, err);
		goto out;
	}
	cr = resp->ca_chain_response;
	*why = CA_CLIENT_INTERNAL;
	if (cr->n_certs == 0 || cr->n_certs > CHAIN_BUNDLE_MAX) {
		error_set(err, "the CA service sent %zu CA certificates",
		          cr->n_certs);
		goto out;
	}
	if ((sk = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < cr->n_certs; i++) {
		if ((x = cert_parse_der(cr->certs[i].data, cr->certs[i].len,
		                        &e)) == NULL) {
			error_set(err, "CA certificate %zu: %s", i, e.msg);
			goto out;
		}
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			error_set(err, "out of memory");
			goto out;
		}
	}
	*complete = cr->complete;
	snprintf(reason, rlen, "%s", cr->reason);
	*certs = sk;
	sk = NULL;
	ret = 0;
out:
	chain_free(sk);
	msg_free(resp);
	return ret;
}

int
ca_client_enroll(struct ca_client *c, const struct ca_enroll *r, X509 **out,
                 enum ca_client_failure *why, struct error *err)
{
	Iselab__Envelope env, *resp = NULL;
	Iselab__EnrollRequest req = ISELAB__ENROLL_REQUEST__INIT;
	Iselab__EnrollSan sans[CA_SERVICE_SAN_MAX], *psans[CA_SERVICE_SAN_MAX];
	struct error e = {{0}};
	uint8_t *der = NULL;
	size_t derlen = 0, i;
	int ret = -1;

	*out = NULL;
	*why = CA_CLIENT_REFUSED;
	if (r->nsan > CA_SERVICE_SAN_MAX) {
		error_set(err, "more than %d subjectAltNames",
		          CA_SERVICE_SAN_MAX);
		return -1;
	}
	if (csr_to_der(r->csr, &der, &derlen) == -1) {
		*why = CA_CLIENT_INTERNAL;
		error_set(err, "cannot encode the CSR");
		return -1;
	}
	for (i = 0; i < r->nsan; i++) {
		static const char *const names[CERT_SAN_TYPE_COUNT] = {
		    [CERT_SAN_DNS] = "dns",
		    [CERT_SAN_IP] = "ip",
		    [CERT_SAN_EMAIL] = "email",
		    [CERT_SAN_URI] = "uri",
		};

		iselab__enroll_san__init(&sans[i]);
		sans[i].type = (char *)names[r->san[i].type];
		sans[i].value = r->san[i].value;
		psans[i] = &sans[i];
	}
	msg_init(&env, 0, NULL);
	req.csr.data = der;
	req.csr.len = derlen;
	req.profile = (char *)cert_profile_name(r->profile);
	req.validity = r->validity;
	req.subject_cn = (char *)(r->subject_cn != NULL ? r->subject_cn : "");
	req.n_san = r->nsan;
	req.san = r->nsan > 0 ? psans : NULL;
	req.requester = (char *)(r->requester != NULL ? r->requester : "");
	req.template_ =
	    (char *)(r->template_name != NULL ? r->template_name : "");
	env.body_case = ISELAB__ENVELOPE__BODY_ENROLL_REQUEST;
	env.enroll_request = &req;
	if ((resp = ca_client_call(c, &env, why, err)) == NULL)
		goto out;
	if (resp->body_case != ISELAB__ENVELOPE__BODY_ENROLL_RESPONSE) {
		ca_client_error(resp, why, err);
		goto out;
	}
	if ((*out = cert_parse_der(resp->enroll_response->cert.data,
	                           resp->enroll_response->cert.len, &e)) ==
	    NULL) {
		*why = CA_CLIENT_INTERNAL;
		error_set(err, "the CA service's certificate: %s", e.msg);
		goto out;
	}
	ret = 0;
out:
	msg_free(resp);
	free(der);
	return ret;
}
