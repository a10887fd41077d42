/*
 * est_service: the PSN's EST server process (services.h): common/est.c on
 * common/http.c, on est.listen (0.0.0.0:8084 by default), with the PSN's
 * backend.
 *
 * It holds no CA key.  Its only private key is its own TLS key
 * (D/ca/est-server.key, decrypted with the node passphrase, which is then
 * wiped).  The backend:
 *   ca_certs / trust_anchors: the chain the CA service reads from disk,
 *     fetched at start and every est.cacerts-refresh (5 minutes, as the
 *     product), sooner (EST_RETRY_MS) while the last fetch failed, and at
 *     once on SIGHUP.  An incomplete chain is refused here, so cacerts
 *     and enrollment answer 503 with the CA service's reason.  The anchor
 *     is the root; est adds the chain itself for path building.
 *   is_revoked: the PSN's store, opened read-only (the CA service writes
 *     it): REVOKED or HOLD is revoked.
 *   check_basic: enrollment users in the store (services.c).
 *   lookup_label: the built-in EAP authentication template, and the
 *     templates in the store under "template/<label>".
 *   enroll / serverkeygen: an EnrollRequest to the CA service; the CA
 *     service down is 503 with the reason.  serverkeygen makes the key
 *     here, in the EST process, never in the CA service.
 * After every good refresh the TLS context is rebuilt with the new chain
 * and swapped in (Redis' tlsConfigure pattern).  After a root CA chain
 * replacement (SIGHUP with a newer D/ca/generation) the new TLS key comes
 * from its hand-over copy (services.h) and the same swap puts the new
 * certificate in place for new connections; open ones keep theirs.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <zmq.h>

#include "cert.h"
#include "chain.h"
#include "config.h"
#include "csr.h"
#include "enroll.h"
#include "events.h"
#include "est.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "proc.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* Longest path we build in the data directory. */
#define EST_SVC_PATH_MAX 4096
/* Retry interval for the CA chain while the last fetch failed. */
#define EST_RETRY_MS 10000
/* Most earlier root CA chain generations honoured. */
#define OLD_GENERATIONS_MAX 16
/* Longest requester text sent to the CA service. */
#define EST_REQUESTER_MAX 255

/*
 * Earlier root CA chain generations (D/ca/gen-K/, docs/certificates.md
 * "Replacing the root CA chain"): their roots stay trust anchors and
 * their CAs path builders, so that client certificates issued under them
 * are still accepted; the key ids of our old Sub CAs (same name as the
 * new one) for is_revoked.
 */
struct est_old {
	unsigned gen; /* the generation of D/ca/ */
	STACK_OF(X509) * roots;
	STACK_OF(X509) * cas;
	uint8_t kids[OLD_GENERATIONS_MAX][STORE_KEY_ID_LEN];
	size_t n_kids;
};

/* The EST service process's state. */
struct est_svc {
	const struct psn_service_args *args; /* how we were started */
	const struct config *cfg;            /* est.* and member keys */
	struct config *own_cfg;              /* cfg when we loaded it */
	char hostname[NODE_HOSTNAME_MAX + 1];
	void *zctx;           /* ZeroMQ context of this process */
	struct ca_client *ca; /* to the CA service (thread-safe) */
	struct store *store;  /* read-only; shared by the workers */
	/*
	 * What the workers' is_revoked reads, replaced whole (under
	 * gen_lock, written) when a new generation is taken.
	 */
	pthread_rwlock_t gen_lock;
	X509 *sub; /* our Endpoint Sub CA */
	uint8_t sub_kid[STORE_KEY_ID_LEN];
	struct est_old old;
	X509 *tls_cert;          /* D/ca/est-server.crt */
	EVP_PKEY *tls_key;       /* its key */
	STACK_OF(X509) * chain;  /* last fetched chain; main thread only */
	struct est *est;         /* the protocol */
	struct http_server *srv; /* the listener and workers */
	int alarm_state;    /* what the daemon took: -1 nothing yet, 0, 1 */
};

/* --- backend --- */

/* Up-referenced copies of from's certificates at the end of to. */
static int
chain_append(STACK_OF(X509) * to, STACK_OF(X509) * from)
{
	X509 *x;
	int i;

	for (i = 0; from != NULL && i < sk_X509_num(from); i++) {
		x = sk_X509_value(from, i);
		if (X509_up_ref(x) != 1)
			return -1;
		if (!sk_X509_push(to, x)) {
			X509_free(x);
			return -1;
		}
	}
	return 0;
}


static STACK_OF(X509) * be_ca_certs(void *ctx, struct error *err)
{
	struct est_svc *s = ctx;
	STACK_OF(X509) *certs = NULL, *copy;
	enum ca_client_failure why;
	char reason[ERROR_MAX];
	struct error e = {{0}};
	bool complete = false;

	if (ca_client_chain(s->ca, &certs, &complete, reason, sizeof(reason),
	                    &why, &e) == -1) {
		error_set(err, "the CA service %s: %s",
		          why == CA_CLIENT_UNAVAILABLE ? "is not available"
		                                       : "failed",
		          e.msg);
		return NULL;
	}
	if (!complete) {
		/* The product: cacerts fails when the chain is incomplete. */
		error_set(err, "chain incomplete (CA service): %s", reason);
		chain_free(certs);
		return NULL;
	}
	if ((copy = X509_chain_up_ref(certs)) == NULL) {
		error_set(err, "out of memory");
		chain_free(certs);
		return NULL;
	}
	chain_free(s->chain);
	s->chain = copy;
	return certs;
}

static STACK_OF(X509) * be_trust_anchors(void *ctx, struct error *err)
{
	struct est_svc *s = ctx;
	STACK_OF(X509) * sk;
	X509 *root;

	if (s->chain == NULL || sk_X509_num(s->chain) == 0) {
		error_set(err, "no CA chain fetched");
		return NULL;
	}
	/* RFC 7030 3.3.2: client certificates chain to the deployment. */
	root = sk_X509_value(s->chain, sk_X509_num(s->chain) - 1);
	if ((sk = sk_X509_new_null()) == NULL || X509_up_ref(root) != 1) {
		sk_X509_free(sk);
		error_set(err, "out of memory");
		return NULL;
	}
	if (!sk_X509_push(sk, root)) {
		X509_free(root);
		sk_X509_free(sk);
		error_set(err, "out of memory");
		return NULL;
	}
	/* The old roots stay trusted until what they issued expires. */
	if (chain_append(sk, s->old.roots) == -1) {
		chain_free(sk);
		error_set(err, "out of memory");
		return NULL;
	}
	return sk;
}

/* The root key update certificates of the installed generation. */
static int
links_of(struct est_svc *s, STACK_OF(X509) * *links, struct error *err)
{
	Iselab__CaChain *c = NULL;
	const ProtobufCBinaryData *der[2];
	X509 *x;
	size_t i;
	int rc;

	if ((rc = events_ca_chain(s->store, &c, err)) <= 0)
		return rc;
	rc = 0;
	if (c->generation != s->old.gen)
		goto out; /* not installed here yet */
	if ((*links = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		rc = -1;
		goto out;
	}
	der[0] = &c->old_with_new;
	der[1] = &c->new_with_old;
	for (i = 0; i < ARRAY_SIZE(der); i++) {
		if ((x = cert_parse_der(der[i]->data, der[i]->len, err)) ==
		    NULL) {
			rc = -1;
			goto out;
		}
		if (!sk_X509_push(*links, x)) {
			X509_free(x);
			error_set(err, "out of memory");
			rc = -1;
			goto out;
		}
	}
out:
	iselab__ca_chain__free_unpacked(c, NULL);
	return rc;
}

static int
be_previous(void *ctx, STACK_OF(X509) * *links, STACK_OF(X509) * *older,
            struct error *err)
{
	struct est_svc *s = ctx;

	*links = NULL;
	*older = NULL;
	if (s->old.cas == NULL)
		return 0;
	if (links_of(s, links, err) == -1)
		return -1;
	if ((*older = sk_X509_new_null()) == NULL ||
	    chain_append(*older, s->old.cas) == -1) {
		error_set(err, "out of memory");
		return -1;
	}
	return 0;
}

/* The serial's magnitude, big-endian; 0 or -1. */
static int
serial_bytes(const ASN1_INTEGER *serial, uint8_t *buf, size_t *len)
{
	BIGNUM *bn;
	int n;

	if ((bn = ASN1_INTEGER_to_BN(serial, NULL)) == NULL)
		return -1;
	n = BN_num_bytes(bn);
	if (n <= 0 || n > STORE_SERIAL_MAX) {
		BN_free(bn);
		return -1;
	}
	*len = (size_t)BN_bn2bin(bn, buf);
	BN_free(bn);
	return 0;
}

static int
status_revoked(enum store_cert_status st)
{
	return st == STORE_STATUS_REVOKED || st == STORE_STATUS_HOLD;
}

/*
 * Our own certificates: the record decides, and a certificate our sub CA
 * never recorded is unknown (refused).  Another issuer's (another PSN's
 * endpoints): a record here decides; without one it is not revoked as far
 * as this PSN knows, until revocations reach us with the PAN's events.
 */
static int
be_is_revoked(void *ctx, const ASN1_INTEGER *serial, const X509_NAME *issuer)
{
	struct est_svc *s = ctx;
	struct store_cert *rec = NULL;
	struct store_cert_list list = {0};
	uint8_t sn[STORE_SERIAL_MAX];
	size_t snlen = 0, i;
	struct error e = {{0}};
	const unsigned char *p;
	X509 *x;
	bool ours;
	int rc = STORE_NOT_FOUND, ret = 0;

	if (serial_bytes(serial, sn, &snlen) == -1)
		return -1;
	pthread_rwlock_rdlock(&s->gen_lock);
	ours = X509_NAME_cmp(issuer, X509_get_subject_name(s->sub)) == 0;
	if (ours) {
		/* Ours: the new Sub CA's, or an old one's (same name). */
		rc = store_get_cert(s->store, s->sub_kid, sn, snlen, &rec, &e);
		for (i = 0; rc == STORE_NOT_FOUND && i < s->old.n_kids; i++)
			rc = store_get_cert(s->store, s->old.kids[i], sn, snlen,
			                    &rec, &e);
	}
	pthread_rwlock_unlock(&s->gen_lock);
	if (ours) {
		if (rc == STORE_NOT_FOUND) {
			log_warn(LOG_EST,
			         "client certificate of our sub CA not in the "
			         "store: revocation status unknown");
			return -1;
		}
		if (rc != STORE_OK) {
			log_error(LOG_EST, "store: %s", e.msg);
			return -1;
		}
		ret = status_revoked(rec->status);
		store_cert_free(rec);
		return ret;
	}
	if (store_find_by_serial(s->store, sn, snlen, &list, &e) == -1) {
		log_error(LOG_EST, "store: %s", e.msg);
		return -1;
	}
	for (i = 0; i < list.count; i++) {
		p = list.certs[i].der;
		if ((x = d2i_X509(NULL, &p, (long)list.certs[i].der_len)) ==
		    NULL)
			continue;
		if (X509_NAME_cmp(X509_get_issuer_name(x), issuer) == 0 &&
		    status_revoked(list.certs[i].status))
			ret = 1;
		X509_free(x);
	}
	store_cert_list_free(&list);
	return ret;
}

static int
be_check_basic(void *ctx, const char *user, const char *password)
{
	struct est_svc *s = ctx;
	char key[STORE_KV_KEY_MAX + 1];
	struct error e = {{0}};
	uint8_t *val = NULL;
	size_t vlen;
	int rc, ok;

	if (strlen(user) + strlen(ENROLL_USER_PREFIX) > STORE_KV_KEY_MAX ||
	    user[0] == '\0') {
		enroll_user_verify_dummy(password);
		return 0;
	}
	snprintf(key, sizeof(key), "%s%s", ENROLL_USER_PREFIX, user);
	rc = store_kv_get(s->store, STORE_TABLE_CONFIG, key, strlen(key), &val,
	                  &vlen, &e);
	if (rc != STORE_OK) {
		if (rc == -1)
			log_error(LOG_EST, "store: %s", e.msg);
		/* The same work for an unknown user: time tells nothing. */
		enroll_user_verify_dummy(password);
		return 0;
	}
	ok = enroll_user_verify((const char *)val, password);
	free(val);
	return ok;
}

static int
be_lookup_label(void *ctx, const char *label, struct est_template *out)
{
	struct est_svc *s = ctx;
	char key[STORE_KV_KEY_MAX + 1];
	struct error e = {{0}};
	uint8_t *val = NULL;
	size_t vlen;
	int rc;

	if (label == NULL || strcmp(label, "default") == 0 ||
	    strcmp(label, ENROLL_TEMPLATE_DEFAULT) == 0) {
		enroll_template_default(out);
		return 1;
	}
	snprintf(key, sizeof(key), "%s%s", ENROLL_TEMPLATE_PREFIX, label);
	rc = store_kv_get(s->store, STORE_TABLE_CONFIG, key, strlen(key), &val,
	                  &vlen, &e);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK) {
		log_error(LOG_EST, "store: %s", e.msg);
		return -1;
	}
	if (vlen > ENROLL_TEMPLATE_MAX ||
	    enroll_template_parse(label, (char *)val, out, &e) == -1) {
		log_error(LOG_EST, "template %s in the store: %s", label,
		          vlen > ENROLL_TEMPLATE_MAX ? "too long" : e.msg);
		free(val);
		return -1;
	}
	free(val);
	return 1;
}

/* HTTP status for a CA service failure. */
static int
ca_status(enum ca_client_failure why)
{
	switch (why) {
	case CA_CLIENT_UNAVAILABLE:
		return 503; /* EST follows CA: retry later */
	case CA_CLIENT_REFUSED:
		return 400;
	case CA_CLIENT_INTERNAL:
		break;
	}
	return 500;
}

static X509 *
est_svc_enroll(struct est_svc *s, X509_REQ *csr, const struct est_template *t,
               const struct est_identity *id, int *status, struct error *err)
{
	struct ca_enroll req;
	enum ca_client_failure why;
	char who[EST_REQUESTER_MAX + 1];
	struct error e = {{0}};
	X509 *cert = NULL;

	snprintf(who, sizeof(who), "%s %s from %s",
	         id->auth == EST_AUTH_CERT ? "certificate" : "basic",
	         id->user != NULL ? id->user : "-",
	         id->peer != NULL ? id->peer : "-");
	memset(&req, 0, sizeof(req));
	req.csr = csr;
	req.profile = t->profile;
	req.validity = (int64_t)t->validity;
	req.requester = who;
	req.template_name = t->name;
	if (ca_client_enroll(s->ca, &req, &cert, &why, &e) == -1) {
		*status = ca_status(why);
		if (why == CA_CLIENT_UNAVAILABLE)
			error_set(err, "the CA service is not available: %s",
			          e.msg);
		else
			error_set(err, "%s", e.msg);
		log_warn(LOG_EST, "enrollment for %s: %s", who, err->msg);
		return NULL;
	}
	return cert;
}

static X509 *
be_enroll(void *ctx, X509_REQ *csr, const struct est_template *t,
          const struct est_identity *id, int *status, struct error *err)
{
	return est_svc_enroll(ctx, csr, t, id, status, err);
}

/*
 * RFC 7030 4.4: the key is made here, in the EST process (the CA service
 * only signs), and a CSR for it repeats the client's subject and
 * requested extensions.
 */
static int
be_serverkeygen(void *ctx, X509_REQ *csr, const struct est_template *t,
                enum key_type type, const struct est_identity *id,
                EVP_PKEY **key, X509 **cert, int *status, struct error *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_REQ *mine = NULL;
	int ret = -1;

	*key = NULL;
	*cert = NULL;
	if ((*key = key_generate(type, err)) == NULL)
		return -1;
	if ((mine = X509_REQ_new()) == NULL ||
	    X509_REQ_set_version(mine, 0) != 1 ||
	    X509_REQ_set_subject_name(mine, X509_REQ_get_subject_name(csr)) !=
	        1 ||
	    X509_REQ_set_pubkey(mine, *key) != 1) {
		log_crypto(LOG_EST, err, "X509_REQ_set_pubkey", NULL);
		goto out;
	}
	exts = X509_REQ_get_extensions(csr);
	if (exts != NULL && sk_X509_EXTENSION_num(exts) > 0 &&
	    X509_REQ_add_extensions(mine, exts) != 1) {
		log_crypto(LOG_EST, err, "X509_REQ_add_extensions", NULL);
		goto out;
	}
	if (csr_sign(mine, *key, err) == -1)
		goto out;
	if ((*cert = est_svc_enroll(ctx, mine, t, id, status, err)) == NULL)
		goto out;
	ret = 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(mine);
	if (ret == -1) {
		EVP_PKEY_free(*key);
		*key = NULL;
	}
	return ret;
}

/* --- the process --- */

/*
 * A TLS context with our certificate and the CA certificates a client
 * needs to build the path (everything of the chain but a self-signed
 * root); before any chain was fetched, the sub CA alone.
 */
static SSL_CTX *
est_svc_tls(struct est_svc *s, struct error *err)
{
	STACK_OF(X509) * send;
	SSL_CTX *ctx;
	X509 *x;
	int i;

	if ((send = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	if (s->chain != NULL) {
		for (i = 0; i < sk_X509_num(s->chain); i++) {
			x = sk_X509_value(s->chain, i);
			if (X509_check_issued(x, x) != X509_V_OK &&
			    !sk_X509_push(send, x))
				break;
		}
	} else
		(void)sk_X509_push(send, s->sub);
	ctx = http_tls_ctx_new(s->tls_cert, s->tls_key, send, err);
	sk_X509_free(send);
	return ctx;
}

/* Fetch the chain again; on success swap in a TLS context built on it. */
static int
est_svc_refresh(struct est_svc *s)
{
	struct error e = {{0}};
	SSL_CTX *ctx;

	if (est_refresh(s->est, &e) == -1)
		return -1; /* est logged it, with the 503 it causes */
	if (s->srv == NULL)
		return 0;
	if ((ctx = est_svc_tls(s, &e)) == NULL ||
	    http_server_set_tls(s->srv, ctx, &e) == -1)
		log_error(LOG_EST, "new TLS context: %s (keeping the old one)",
		          e.msg);
	SSL_CTX_free(ctx);
	return 0;
}

/* The alarm while the CA chain is incomplete (cacerts answers 503). */
#define EST_SVC_CHAIN_ALARM "Incomplete CA Chain"
/* How soon to try again when the daemon did not take the alarm state. */
#define EST_SVC_ALARM_RETRY_MS 2000

/*
 * Tell the node's daemon whether the chain is incomplete, once per change
 * (and once at start: a predecessor may have raised it).  0 when the
 * daemon took it; -1 when not (not up yet at the node's start): retry.
 */
static int
est_svc_chain_alarm(struct est_svc *s)
{
	struct error e = {{0}};
	char text[256];
	int want = est_chain_ok(s->est) ? 0 : 1;

	if (s->alarm_state == want)
		return 0;
	snprintf(text, sizeof(text),
	         "%s: the Endpoint Sub CA chain is incomplete or does not "
	         "verify to the root: EST cacerts and enrollment answer 503 "
	         "(see the est log)",
	         s->hostname);
	if (psn_service_alarm(s->args->datadir, EST_SVC_CHAIN_ALARM,
	                      want ? "major" : NULL, text, &e) == -1) {
		log_debug(LOG_EST, "chain alarm not taken yet: %s", e.msg);
		return -1;
	}
	s->alarm_state = want;
	return 0;
}

/*
 * The CA certificates of the earlier generations D/ca/gen-K/ keeps: a
 * generation that cannot be read is logged and skipped (its client
 * certificates are then refused), the service still starts.
 */
static void
est_old_load(const char *datadir, struct est_old *old)
{
	char path[EST_SVC_PATH_MAX];
	STACK_OF(X509) *chain = NULL;
	struct error e = {{0}};
	X509 *sub = NULL, *x;
	unsigned k;
	int i;

	memset(old, 0, sizeof(*old));
	old->gen = node_ca_generation(datadir);
	if (old->gen <= 1)
		return;
	if ((old->roots = sk_X509_new_null()) == NULL ||
	    (old->cas = sk_X509_new_null()) == NULL) {
		log_error(LOG_EST, "out of memory");
		return;
	}
	for (k = old->gen - 1; k >= 1 && old->n_kids < OLD_GENERATIONS_MAX;
	     k--) {
		if (node_ca_path(datadir, path, sizeof(path), &e,
		                 "%s/gen-%u/endpoint-sub-ca.crt", NODE_CA_DIR,
		                 k) == -1 ||
		    (sub = cert_load_pem(path, &e)) == NULL ||
		    store_issuer_key_id(sub, old->kids[old->n_kids], &e) ==
		        -1 ||
		    node_ca_path(datadir, path, sizeof(path), &e,
		                 "%s/gen-%u/chain.pem", NODE_CA_DIR, k) == -1 ||
		    (chain = chain_load_pem(path, &e)) == NULL) {
			log_error(LOG_EST,
			          "root CA chain generation %u: %s; its client "
			          "certificates are refused",
			          k, e.msg);
			X509_free(sub);
			sub = NULL;
			continue;
		}
		/* chain.pem: the Node CA first, the root last. */
		for (i = 0; i < sk_X509_num(chain); i++) {
			x = sk_X509_value(chain, i);
			if (X509_up_ref(x) != 1 ||
			    !sk_X509_push(X509_check_issued(x, x) == X509_V_OK
			                      ? old->roots
			                      : old->cas,
			                  x))
				X509_free(x);
		}
		if (!sk_X509_push(old->cas, sub))
			X509_free(sub);
		sub = NULL;
		chain_free(chain);
		chain = NULL;
		old->n_kids++;
		log_info(LOG_EST, "client certificates of root CA chain "
		                  "generation %u are still accepted",
		         k);
	}
}

static void
est_old_free(struct est_old *old)
{
	chain_free(old->roots);
	chain_free(old->cas);
	memset(old, 0, sizeof(*old));
}

/* Load what the process needs before it serves; the passphrase last. */
static int
est_svc_load(struct est_svc *s, struct error *err)
{
	const struct psn_service_args *a = s->args;
	char path[EST_SVC_PATH_MAX];

	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/est-server.crt", err) == -1 ||
	    (s->tls_cert = cert_load_pem(path, err)) == NULL)
		return -1;
	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/est-server.key", err) == -1 ||
	    (s->tls_key = key_load(path, a->pass, a->passlen, err)) == NULL)
		return -1;
	secure_zero(a->pass, a->passlen);
	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", err) == -1 ||
	    (s->sub = cert_load_pem(path, err)) == NULL ||
	    store_issuer_key_id(s->sub, s->sub_kid, err) == -1)
		return -1;
	est_old_load(a->datadir, &s->old);
	return 0;
}

/*
 * SIGHUP: a newer root CA chain generation installed (member_rootchain.h)?
 * Then take it in place: the new TLS certificate with its key from our
 * hand-over copy (services.h), the new Sub CA and the earlier
 * generations, swapped in whole; the chain fetched again from the CA
 * service and a TLS context built on it swapped in once complete
 * (http_server_set_tls: open connections keep theirs).  1 taken, 0
 * nothing newer, -1 (logged) it cannot be: we end, and the supervisor
 * starts us again on the new files.
 */
static int
est_svc_take_generation(struct est_svc *s)
{
	const char *d = s->args->datadir;
	unsigned gen = node_ca_generation(d);
	char path[EST_SVC_PATH_MAX];
	uint8_t kid[STORE_KEY_ID_LEN];
	struct est_old old;
	struct error e = {{0}};
	X509 *cert = NULL, *sub = NULL, *x;
	EVP_PKEY *key = NULL, *k;
	SSL_CTX *ctx = NULL;

	if (gen <= s->old.gen)
		return 0;
	if (node_path(path, sizeof(path), d, NODE_CA_DIR "/est-server.crt",
	              &e) == -1 ||
	    (cert = cert_load_pem(path, &e)) == NULL ||
	    (key = member_handover_take(d, "est-server", EST_SERVICE_PROCESS,
	                                &s->args->own, cert, &e)) == NULL)
		goto fail;
	if (node_path(path, sizeof(path), d,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", &e) == -1 ||
	    (sub = cert_load_pem(path, &e)) == NULL ||
	    store_issuer_key_id(sub, kid, &e) == -1)
		goto fail;
	est_old_load(d, &old);
	pthread_rwlock_wrlock(&s->gen_lock);
	x = s->sub;
	s->sub = sub;
	memcpy(s->sub_kid, kid, sizeof(kid));
	est_old_free(&s->old);
	s->old = old;
	pthread_rwlock_unlock(&s->gen_lock);
	X509_free(x);
	sub = NULL;
	x = s->tls_cert;
	k = s->tls_key;
	s->tls_cert = cert;
	s->tls_key = key;
	cert = x;
	key = k;
	/* The old chain must not go out with the new certificate. */
	chain_free(s->chain);
	s->chain = NULL;
	if (est_refresh(s->est, &e) == -1)
		log_error(LOG_EST, "root CA chain generation %u: the new chain "
		                   "is not available yet (503 until it is)",
		          gen);
	if ((ctx = est_svc_tls(s, &e)) == NULL ||
	    http_server_set_tls(s->srv, ctx, &e) == -1)
		goto fail;
	SSL_CTX_free(ctx);
	X509_free(cert);
	EVP_PKEY_free(key);
	log_info(LOG_EST,
	         "root CA chain generation %u: new EST server certificate for "
	         "new connections, open ones keep theirs",
	         gen);
	return 1;
fail:
	log_error(LOG_EST,
	          "root CA chain generation %u: cannot switch in place: %s; "
	          "ending, to be started again on the new files",
	          gen, e.msg);
	SSL_CTX_free(ctx);
	X509_free(cert);
	X509_free(sub);
	EVP_PKEY_free(key);
	return -1;
}

/* Serve until SIGTERM (SIGINT too in the foreground); refresh on time. */
static int
est_svc_loop(struct est_svc *s, int sigfd)
{
	int64_t every =
	    config_get_duration(s->cfg, "est.cacerts-refresh") * 1000;
	int64_t next, now;
	bool ok = est_chain_ok(s->est);

	next = time_mono_ms() + (ok ? every : EST_RETRY_MS);
	for (;;) {
		int64_t wake;

		now = time_mono_ms();
		if (now >= next) {
			ok = est_svc_refresh(s) == 0;
			next = now + (ok ? every : EST_RETRY_MS);
			continue;
		}
		wake = next;
		if (est_svc_chain_alarm(s) == -1 &&
		    now + EST_SVC_ALARM_RETRY_MS < wake)
			wake = now + EST_SVC_ALARM_RETRY_MS;
		switch (psn_service_wait(s->args, sigfd, wake - now, LOG_EST)) {
		case PSN_SERVICE_STOP:
			return 0;
		case PSN_SERVICE_HUP:
			switch (est_svc_take_generation(s)) {
			case -1:
				return -1;
			case 1:
				ok = est_chain_ok(s->est);
				next = time_mono_ms() +
				       (ok ? every : EST_RETRY_MS);
				break;
			default:
				log_info(LOG_EST,
				         "SIGHUP: fetching the CA chain now");
				next = 0;
			}
			break;
		case -1:
			return -1;
		default:
			break;
		}
	}
}

int
est_service_main(void *arg)
{
	struct psn_service_args *a = arg;
	const struct config_address *addr;
	struct http_config hc;
	struct est_backend be;
	struct est_svc s;
	struct error e = {{0}};
	char realm[EST_REALM_MAX];
	SSL_CTX *ctx = NULL;
	int sigfd = -1, ret = 1;

	memset(&s, 0, sizeof(s));
	s.args = a;
	s.alarm_state = -1;
	pthread_rwlock_init(&s.gen_lock, NULL);
	snprintf(s.hostname, sizeof(s.hostname), "%s", a->id->hostname);
	if (psn_service_begin(a, &s.cfg, &s.own_cfg, &e) == -1)
		goto out;
	addr = config_get_address(s.cfg, "est.listen");
	if (addr->family == AF_UNSPEC) {
		error_set(&e, "est.listen must be an IP address, not '%s'",
		          addr->host);
		goto out;
	}
	/* Blocked here, before the workers start, so they inherit it. */
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (est_svc_load(&s, &e) == -1 || psn_service_store_ro(a->datadir, &s.store, &e) == -1)
		goto out;
	if ((s.zctx = zmq_ctx_new()) == NULL) {
		error_set(&e, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((s.ca = ca_client_new(s.zctx, a->datadir, CA_CLIENT_TIMEOUT_MS,
	                          &e)) == NULL)
		goto out;
	memset(&be, 0, sizeof(be));
	be.ctx = &s;
	be.ca_certs = be_ca_certs;
	be.trust_anchors = be_trust_anchors;
	be.previous = be_previous;
	be.is_revoked = be_is_revoked;
	be.check_basic = be_check_basic;
	be.lookup_label = be_lookup_label;
	be.enroll = be_enroll;
	be.serverkeygen = be_serverkeygen;
	snprintf(realm, sizeof(realm), "ISE EST %s", s.hostname);
	if ((s.est = est_new(&be, realm, &e)) == NULL)
		goto out;
	est_set_base64_line(
	    s.est, (size_t)config_get_int(s.cfg, "est.base64-line-length"));
	/* When the CA starts on the EST server (product): fetch the chain. */
	(void)est_refresh(s.est, NULL);
	if ((ctx = est_svc_tls(&s, &e)) == NULL)
		goto out;
	memset(&hc, 0, sizeof(hc));
	hc.address = addr->host;
	hc.port = addr->port;
	hc.workers = (unsigned)config_get_int(s.cfg, "est.workers");
	hc.timeout = (unsigned)config_get_duration(s.cfg, "est.timeout");
	hc.tls = ctx;
	hc.category = LOG_EST;
	if ((s.srv = http_server_start(&hc, est_handle, s.est, &e)) == NULL)
		goto out;
	log_info(LOG_EST,
	         "EST server of %s listening on https://%s%s%s:%u%s, %u "
	         "workers, pid %ld; CA chain %s",
	         s.hostname, addr->family == AF_INET6 ? "[" : "", addr->host,
	         addr->family == AF_INET6 ? "]" : "",
	         (unsigned)http_server_port(s.srv), EST_PATH_PREFIX,
	         http_server_workers(s.srv), (long)getpid(),
	         est_chain_ok(s.est) ? "complete" : "NOT complete (503)");
	psn_service_ready(a, "ok");
	ret = est_svc_loop(&s, sigfd) == 0 ? 0 : 1;
	log_info(LOG_EST, "EST server of %s stopping", s.hostname);
out:
	if (ret != 0 && e.msg[0] != '\0')
		log_error(LOG_EST, "EST server cannot start: %s", e.msg);
	if (ret != 0)
		psn_service_ready(a, e.msg[0] != '\0' ? e.msg : "failed");
	secure_zero(a->pass, a->passlen);
	http_server_stop(s.srv);
	est_free(s.est);
	SSL_CTX_free(ctx);
	ca_client_free(s.ca);
	if (s.zctx != NULL)
		zmq_ctx_term(s.zctx);
	store_close(s.store);
	chain_free(s.chain);
	X509_free(s.sub);
	est_old_free(&s.old);
	pthread_rwlock_destroy(&s.gen_lock);
	secret_wipe(&a->own);
	X509_free(s.tls_cert);
	EVP_PKEY_free(s.tls_key);
	config_free(s.own_cfg);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}
