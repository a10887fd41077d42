/*
 * rootchain: `pan ca replace-root-chain`, the product's "replace the root
 * CA certificate chain" (ISE-CA-EST.md, troubleshooting step 3), and the
 * renewal of every member's CA that follows it (docs/certificates.md,
 * "Replacing the root CA chain").
 *
 * Generations.  The chain `pan init` made is generation 1; each
 * replacement makes the next.  D/ca/generation holds the generation
 * whose files are in D/ca/ (absent: 1); the files of generation N-1 are
 * kept in D/ca/gen-<N-1>/, so that what they issued still verifies and
 * is still answered for.
 *
 * A replacement, in the order that makes it crash-safe:
 *   1. the CA signer makes the new keys and certificates in D/ca/next/
 *      (signer.h; it holds the keys and the passphrase that encrypts
 *      them), "generation" last;
 *   2. one transaction: the ca-chain event (new root, new Node CA, the
 *      old root and the RFC 4210 4.4 link certificates) and the new
 *      certificates in the store; the event is published after it;
 *   3. the files of next/ take their place (rootchain_install(): per
 *      file a hard link of the old one into gen-<N-1>/ then a rename, so
 *      each step can be done again), D/ca/generation last;
 *   4. the signer loads its keys again, the daemon its certificates.
 * `pan run` finishes step 3 and 4 at start when the store holds a
 * ca-chain event newer than D/ca/generation; a crash before step 2 left
 * only next/, which the next replacement takes as it is.
 *
 * Members learn the new chain from the event (the event log carries it to
 * a node that was down) and send a RenewRequest with CSRs for keys they
 * made themselves; rootchain_renew() checks and signs them as a join does.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "cert.h"
#include "csr.h"
#include "events.h"
#include "log.h"
#include "node.h"
#include "pan.h"
#include "signer.h"
#include "store.h"
#include "util.h"

/* Files of a generation that move at install, next/ to ca/. */
static const char *const rootchain_files[] = {
    "root-ca.key",        "root-ca.crt",        "node-ca.key",
    "node-ca.crt",        "ocsp-responder.key", "ocsp-responder.crt",
    "old-with-new.crt",   "new-with-old.crt",   SIGNER_OCSP_HANDOVER,
};

/* Longest generation file ("4294967295\n"). */
#define ROOTCHAIN_GEN_TEXT_MAX 16

unsigned
rootchain_generation(const char *datadir)
{
	return node_ca_generation(datadir);
}

int
rootchain_install(const char *datadir, unsigned gen, struct error *err)
{
	return node_ca_install(datadir, rootchain_files,
	                       ARRAY_SIZE(rootchain_files), gen, err);
}

/* The daemon's copies of the CA certificates, from D/ca/ again. */
static int
rootchain_reload(struct pan *p, struct error *err)
{
	char path[PAN_PATH_MAX];
	X509 *root = NULL, *node = NULL;
	uint8_t rk[STORE_KEY_ID_LEN], nk[STORE_KEY_ID_LEN];

	if (node_ca_path(p->datadir, path, sizeof(path), err, "%s/root-ca.crt",
	            NODE_CA_DIR) == -1 ||
	    (root = cert_load_pem(path, err)) == NULL ||
	    node_ca_path(p->datadir, path, sizeof(path), err, "%s/node-ca.crt",
	            NODE_CA_DIR) == -1 ||
	    (node = cert_load_pem(path, err)) == NULL ||
	    store_issuer_key_id(root, rk, err) == -1 ||
	    store_issuer_key_id(node, nk, err) == -1) {
		X509_free(root);
		X509_free(node);
		return -1;
	}
	X509_free(p->root_ca);
	X509_free(p->node_ca);
	p->root_ca = root;
	p->node_ca = node;
	memcpy(p->root_kid, rk, sizeof(rk));
	memcpy(p->node_kid, nk, sizeof(nk));
	return 0;
}

/* Install gen, have the signer take its keys, take the certificates. */
static int
rootchain_activate(struct pan *p, unsigned gen, struct error *err)
{
	if (rootchain_install(p->datadir, gen, err) == -1)
		return -1;
	if (p->signer == NULL || signer_reload(p->signer, err) == -1) {
		if (p->signer == NULL)
			error_set(err, "the CA signer is not running");
		error_prefix(err, "the CA signer did not take generation %u",
		             gen);
		return -1;
	}
	/* The OCSP responder takes its new certificate (pan/ocsp.c). */
	if (p->ocsp_pid > 0)
		(void)kill(p->ocsp_pid, SIGHUP);
	return rootchain_reload(p, err);
}

int
rootchain_recover(struct pan *p, struct error *err)
{
	Iselab__CaChain *c = NULL;
	unsigned have = rootchain_generation(p->datadir);
	int rc;

	if ((rc = events_ca_chain(p->st, &c, err)) <= 0)
		return rc;
	rc = 0;
	if (c->generation > have) {
		log_warn(LOG_CA_SERVICE,
		         "finishing the replacement of the root CA chain: "
		         "generation %u (installed: %u)",
		         c->generation, have);
		rc = rootchain_activate(p, c->generation, err);
	}
	iselab__ca_chain__free_unpacked(c, NULL);
	return rc;
}

/* The DER of D/ca/next/name into *out (OPENSSL_free); the X509 too. */
static X509 *
next_cert(struct pan *p, const char *name, ProtobufCBinaryData *out,
          struct error *err)
{
	char path[PAN_PATH_MAX];
	X509 *x;

	if (node_ca_path(p->datadir, path, sizeof(path), err, "%s/%s/%s",
	            NODE_CA_DIR, SIGNER_NEXT_DIR, name) == -1 ||
	    (x = cert_load_pem(path, err)) == NULL)
		return NULL;
	if (registry_der(x, out) == -1) {
		log_crypto(LOG_CA_SERVICE, err, "i2d_X509", path);
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Step 2: the event and the new certificates in one transaction. */
static int
rootchain_commit(struct pan *p, unsigned gen, struct error *err)
{
	Iselab__Event ev = ISELAB__EVENT__INIT;
	Iselab__CaChain cc = ISELAB__CA_CHAIN__INIT;
	ProtobufCBinaryData ocsp_der = {0, NULL};
	X509 *root = NULL, *node = NULL, *ocsp = NULL, *own = NULL,
	     *nwo = NULL;
	uint8_t rk[STORE_KEY_ID_LEN], nk[STORE_KEY_ID_LEN];
	struct eventlog_set set = {0};
	Iselab__Event **evs = NULL;
	int64_t now = time(NULL);
	int rc = -1;

	if ((root = next_cert(p, "root-ca.crt", &cc.root, err)) == NULL ||
	    (node = next_cert(p, "node-ca.crt", &cc.node_ca, err)) == NULL ||
	    (ocsp = next_cert(p, "ocsp-responder.crt", &ocsp_der, err)) ==
	        NULL ||
	    (own = next_cert(p, "old-with-new.crt", &cc.old_with_new, err)) ==
	        NULL ||
	    (nwo = next_cert(p, "new-with-old.crt", &cc.new_with_old, err)) ==
	        NULL)
		goto out;
	if (registry_der(p->root_ca, &cc.old_root) == -1) {
		log_crypto(LOG_CA_SERVICE, err, "i2d_X509", "old root");
		goto out;
	}
	cc.generation = gen;
	ev.change_case = ISELAB__EVENT__CHANGE_CA_CHAIN;
	ev.ca_chain = &cc;
	if (store_issuer_key_id(root, rk, err) == -1 ||
	    store_issuer_key_id(node, nk, err) == -1)
		goto out;
	/*
	 * Each under the key that signed it (store.h), as cert-issued events
	 * so that a SAN's replica holds them, committed with the ca-chain
	 * event in one transaction.
	 */
	if (eventlog_set_x509(&set, root, rk, p->id.hostname,
	                      cert_profile_name(CERT_PROFILE_ROOT_CA), now,
	                      err) == -1 ||
	    eventlog_set_x509(&set, node, rk, p->id.hostname,
	                      cert_profile_name(CERT_PROFILE_NODE_CA), now,
	                      err) == -1 ||
	    eventlog_set_x509(&set, ocsp, nk, p->id.hostname,
	                      cert_profile_name(CERT_PROFILE_OCSP_RESPONDER), now,
	                      err) == -1 ||
	    eventlog_set_x509(&set, own, rk, p->id.hostname,
	                      cert_profile_name(CERT_PROFILE_ROOT_CA), now,
	                      err) == -1 ||
	    eventlog_set_x509(&set, nwo, p->root_kid, p->id.hostname,
	                      cert_profile_name(CERT_PROFILE_ROOT_CA), now,
	                      err) == -1)
		goto out;
	if ((evs = calloc(set.n + 1, sizeof(*evs))) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	memcpy(evs, set.evs, set.n * sizeof(*evs));
	evs[set.n] = &ev;
	rc = eventlog_commit_n(p, evs, set.n + 1, NULL, false, err);
out:
	free(evs);
	eventlog_set_free(&set);
	OPENSSL_free(cc.root.data);
	OPENSSL_free(cc.node_ca.data);
	OPENSSL_free(cc.old_root.data);
	OPENSSL_free(cc.old_with_new.data);
	OPENSSL_free(cc.new_with_old.data);
	OPENSSL_free(ocsp_der.data);
	X509_free(root);
	X509_free(node);
	X509_free(ocsp);
	X509_free(own);
	X509_free(nwo);
	return rc;
}

/*
 * `pan ca replace-root-chain`: the signer is asked to make the new keys
 * and certificates (seconds with RSA 4096), and the daemon loop goes on
 * serving meanwhile (heartbeats, events, messages; requests that need the
 * signer are refused as busy, and asked again by their senders); the
 * answer goes when rootchain_poll() sees the signer done.
 */
int
rootchain_replace(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct error err = {{0}};
	unsigned gen;

	(void)argv;
	(void)out;
	if (argc != 2) {
		fprintf(errf, "usage: pan ca replace-root-chain\n");
		return PAN_EXIT_USAGE;
	}
	/* One at a time: the control socket owes one deferred answer. */
	if (p->rollover || p->control_deferred) {
		fprintf(errf,
		        "pan ca replace-root-chain: the replacement of the "
		        "root CA chain with generation %u is under way; try "
		        "again when it is done\n",
		        p->rollover_gen);
		return PAN_EXIT_FAIL;
	}
	gen = rootchain_generation(p->datadir) + 1;
	log_info(LOG_CA_SERVICE, "replacing the root CA chain: generation %u",
	         gen);
	if (p->signer == NULL) {
		error_set(&err, "the CA signer is not running");
		goto fail;
	}
	if (signer_rollover_start(p->signer, gen, &err) == -1)
		goto fail;
	p->rollover = true;
	p->rollover_gen = gen;
	p->rollover_t0 = time_mono_ms();
	return PAN_CONTROL_DEFERRED;
fail:
	log_error(LOG_CA_SERVICE, "replacing the root CA chain: %s", err.msg);
	fprintf(errf, "pan ca replace-root-chain: %s\n", err.msg);
	return PAN_EXIT_FAIL;
}

/* The rest once the signer made the keys: commit, install, answer. */
static int
rootchain_finish(struct pan *p, unsigned gen, FILE *out, struct error *err)
{
	char line[512];

	if (rootchain_commit(p, gen, err) == -1)
		return -1;
	/* The event is out: what is left is finished at start if need be. */
	if (rootchain_activate(p, gen, err) == -1)
		return -1;
	cert_describe(p->root_ca, line, sizeof(line));
	fprintf(out,
	        "Root CA chain replaced: generation %u\n"
	        "Root CA:  %s\n",
	        gen, line);
	cert_describe(p->node_ca, line, sizeof(line));
	fprintf(out,
	        "Node CA:  %s\n"
	        "Every registered node renews its CA certificates for it "
	        "(event %llu); the certificates of generation %u stay "
	        "trusted until they expire.\n",
	        line, (unsigned long long)p->event_seq, gen - 1);
	return 0;
}

void
rootchain_poll(struct pan *p)
{
	struct error err = {{0}};
	char *obuf = NULL;
	size_t olen = 0;
	FILE *out = NULL;
	int64_t waited;
	bool done;
	int rc;

	if (!p->rollover)
		return;
	rc = signer_rollover_poll(p->signer, &done, &err);
	if (!done)
		return;
	p->rollover = false;
	waited = time_mono_ms() - p->rollover_t0;
	log_info(LOG_CA_SERVICE,
	         "the CA signer %s generation %u's keys in %lld ms; the "
	         "daemon served meanwhile",
	         rc == 0 ? "made" : "failed to make", p->rollover_gen,
	         (long long)waited);
	if (rc == 0) {
		if ((out = open_memstream(&obuf, &olen)) == NULL) {
			error_set(&err, "out of memory");
			rc = -1;
		} else
			rc = rootchain_finish(p, p->rollover_gen, out, &err);
		if (out != NULL)
			fclose(out);
	}
	if (rc == 0)
		control_deferred_reply(p, PAN_EXIT_OK, obuf, NULL);
	else {
		char text[ERROR_MAX + 64];

		log_error(LOG_CA_SERVICE, "replacing the root CA chain: %s",
		          err.msg);
		snprintf(text, sizeof(text),
		         "pan ca replace-root-chain: %s\n", err.msg);
		control_deferred_reply(p, PAN_EXIT_FAIL, NULL, text);
	}
	free(obuf);
}

/* ---- a member's renewal ------------------------------------------------ */

static void
renew_refuse(struct pan *p, const struct pan_peer *peer,
             const Iselab__Envelope *env, Iselab__Error__Code code,
             const char *who, const char *why)
{
	Iselab__Envelope reply;
	Iselab__Error e = ISELAB__ERROR__INIT;

	log_warn(LOG_MESSAGING, "renewal of %s (CURVE key %s) refused: %s",
	         who, peer->key_z85, why);
	msg_init(&reply, env->request_id, p->id.hostname);
	e.code = code;
	e.message = (char *)why;
	reply.body_case = ISELAB__ENVELOPE__BODY_ERROR;
	reply.error = &e;
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
}

/*
 * A certificate the node holds already for the CSR's key, issued by
 * issuer_kid (a renewal asked again after a crash): NULL if none.
 */
static X509 *
renew_replay(struct pan *p, const char *host, const ProtobufCBinaryData *csr,
             const uint8_t issuer_kid[STORE_KEY_ID_LEN])
{
	Iselab__NodeRecord *r = NULL;
	struct store_cert *sc;
	X509_REQ *req;
	EVP_PKEY *key;
	X509 *found = NULL, *x;
	size_t i;

	if ((req = csr_parse(csr->data, csr->len, NULL)) == NULL)
		return NULL;
	key = X509_REQ_get0_pubkey(req);
	if (key == NULL || registry_record(p, host, &r, NULL) == -1)
		goto out;
	for (i = 0; i < r->n_certs && found == NULL; i++) {
		Iselab__IssuedCertRef *ref = r->certs[i];

		if (ref->issuer_key_id.len != STORE_KEY_ID_LEN ||
		    memcmp(ref->issuer_key_id.data, issuer_kid,
		           STORE_KEY_ID_LEN) != 0)
			continue;
		sc = NULL;
		if (store_get_cert(p->st, ref->issuer_key_id.data,
		                   ref->serial.data, ref->serial.len, &sc,
		                   NULL) != STORE_OK)
			continue;
		if ((x = cert_parse_der(sc->der, sc->der_len, NULL)) != NULL &&
		    EVP_PKEY_eq(X509_get0_pubkey(x), key) == 1)
			found = x;
		else
			X509_free(x);
		store_cert_free(sc);
	}
out:
	ERR_clear_error();
	if (r != NULL)
		iselab__node_record__free_unpacked(r, NULL);
	X509_REQ_free(req);
	return found;
}

/*
 * Record what was issued: the certificates and the node's references, as
 * events in one transaction, so that a SAN's replica holds them too.
 */
static int
renew_record(struct pan *p, const char *host, X509 **certs,
             const char *const *profiles, size_t n,
             const uint8_t kid[STORE_KEY_ID_LEN], struct error *err)
{
	Iselab__NodeRecord *r = NULL;
	Iselab__IssuedCertRef refs[2], **all = NULL, **old = NULL;
	uint8_t serials[2][STORE_SERIAL_MAX];
	struct eventlog_set set = {0};
	int64_t now = time(NULL);
	size_t i, nold = 0;
	int rc = -1;

	if (registry_record(p, host, &r, err) == -1)
		return -1;
	if ((all = calloc(r->n_certs + n, sizeof(*all))) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < r->n_certs; i++)
		all[i] = r->certs[i];
	for (i = 0; i < n; i++) {
		if (registry_cert_ref(certs[i], kid, profiles[i], serials[i],
		                      &refs[i], err) == -1)
			goto out;
		all[r->n_certs + i] = &refs[i];
		if (eventlog_set_x509(&set, certs[i], kid, p->id.hostname,
		                      profiles[i], now, err) == -1)
			goto out;
	}
	old = r->certs;
	nold = r->n_certs;
	r->certs = all;
	r->n_certs = nold + n;
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_NODE_RECORD, host,
	                        strlen(host), &r->base, err) == -1 ||
	    eventlog_set_commit(p, &set, NULL, false, err) == -1)
		goto out;
	rc = 0;
out:
	if (old != NULL) {
		r->certs = old;
		r->n_certs = nold;
	}
	free(all);
	eventlog_set_free(&set);
	iselab__node_record__free_unpacked(r, NULL);
	return rc;
}

int
rootchain_renew(struct pan *p, const struct pan_peer *peer,
                const Iselab__Envelope *env)
{
	const Iselab__RenewRequest *rq = env->renew_request;
	Iselab__Envelope reply;
	Iselab__RenewResponse rr = ISELAB__RENEW_RESPONSE__INIT;
	ProtobufCBinaryData chain[2];
	struct pan_node *n = registry_find_key(p, peer->key);
	struct error err = {{0}};
	enum cert_profile prof;
	const char *issuer, *profiles[2];
	X509 *certs[2] = {NULL, NULL};
	const uint8_t *kid;
	char why[ERROR_MAX];
	size_t i, ncerts = 0;
	time_t na;
	bool legacy;

	memset(chain, 0, sizeof(chain));
	if (n == NULL || n->link == PAN_LINK_REMOVED) {
		renew_refuse(p, peer, env,
		             ISELAB__ERROR__CODE__ERROR_UNAUTHORIZED,
		             env->sender, "not a registered node");
		return 0;
	}
	if (n->role == NODE_ROLE_SAN) {
		prof = CERT_PROFILE_NODE_CA;
		issuer = "root-ca";
		kid = p->root_kid;
	} else {
		prof = CERT_PROFILE_ENDPOINT_SUB_CA;
		issuer = "node-ca";
		kid = p->node_kid;
	}
	legacy = n->role == NODE_ROLE_PSN &&
	         p->id.ocsp_hierarchy == NODE_OCSP_LEGACY;
	if (registry_check_csr(&rq->ca_csr, prof, n->hostname, "CA", why,
	                       sizeof(why)) == -1 ||
	    (legacy && registry_check_csr(&rq->ocsp_csr,
	                                  CERT_PROFILE_OCSP_RESPONDER,
	                                  n->hostname, "OCSP responder", why,
	                                  sizeof(why)) == -1)) {
		renew_refuse(p, peer, env, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR,
		             n->hostname, why);
		return 0;
	}
	profiles[0] = cert_profile_name(prof);
	profiles[1] = cert_profile_name(CERT_PROFILE_OCSP_RESPONDER);
	/* Asked again (the node restarted midway): the same answer. */
	if ((certs[0] = renew_replay(p, n->hostname, &rq->ca_csr, kid)) !=
	        NULL &&
	    (!legacy || (certs[1] = renew_replay(p, n->hostname, &rq->ocsp_csr,
	                                         kid)) != NULL)) {
		log_info(LOG_MESSAGING, "renewal of %s asked again: the "
		                        "certificates issued before",
		         n->hostname);
	} else {
		X509_free(certs[0]);
		certs[0] = NULL;
		if ((certs[ncerts++] = registry_sign(p, prof, issuer,
		                                     &rq->ca_csr, n->hostname,
		                                     &err)) == NULL ||
		    (legacy && (certs[ncerts++] = registry_sign(
		                    p, CERT_PROFILE_OCSP_RESPONDER, "node-ca",
		                    &rq->ocsp_csr, n->hostname, &err)) ==
		                   NULL) ||
		    renew_record(p, n->hostname, certs, profiles, ncerts, kid,
		                 &err) == -1) {
			renew_refuse(p, peer, env,
			             ISELAB__ERROR__CODE__ERROR_INTERNAL,
			             n->hostname, err.msg);
			goto out;
		}
		log_info(LOG_CA_SERVICE,
		         "renewed the %s of %s for root CA chain generation %u",
		         profiles[0], n->hostname,
		         rootchain_generation(p->datadir));
		/* pan node list's CERT-EXPIRY: the new CA certificate's. */
		if (cert_not_after(certs[0], &na, NULL) == 0)
			n->cert_expiry = na;
	}
	rr.generation = rootchain_generation(p->datadir);
	if (registry_der(certs[0], &rr.ca_cert) == -1 ||
	    (certs[1] != NULL && registry_der(certs[1], &rr.ocsp_cert) == -1) ||
	    (n->role == NODE_ROLE_PSN &&
	     registry_der(p->node_ca, &chain[rr.n_chain++]) == -1) ||
	    registry_der(p->root_ca, &chain[rr.n_chain++]) == -1) {
		log_crypto(LOG_MESSAGING, &err, "i2d_X509", "renewal");
		renew_refuse(p, peer, env, ISELAB__ERROR__CODE__ERROR_INTERNAL,
		             n->hostname, err.msg);
		goto out;
	}
	rr.chain = chain;
	msg_init(&reply, env->request_id, p->id.hostname);
	reply.body_case = ISELAB__ENVELOPE__BODY_RENEW_RESPONSE;
	reply.renew_response = &rr;
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
out:
	OPENSSL_free(rr.ca_cert.data);
	OPENSSL_free(rr.ocsp_cert.data);
	for (i = 0; i < ARRAY_SIZE(chain); i++)
		OPENSSL_free(chain[i].data);
	X509_free(certs[0]);
	X509_free(certs[1]);
	return 0;
}
