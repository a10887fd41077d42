/*
 * member_rootchain: a member's side of `pan ca replace-root-chain`
 * (docs/certificates.md, "Replacing the root CA chain"): a PSN renews its
 * Endpoint Sub CA and its own certificates, a SAN its Node CA.
 *
 * The ca-chain event (applied to the store like every event, so a node
 * that was down applies it when it returns) names the generation to
 * reach; D/ca/generation the one installed.  While they differ, the
 * daemon walks these steps, each marked by the files it leaves in
 * D/ca/next/, so that a node killed midway resumes where it was:
 *
 *   keys    a "ca-renew" process (it gets the node passphrase; the main
 *           process, which talks to the network, never holds a CA key)
 *           makes the new keys: the CA's (Endpoint Sub CA, or a SAN's
 *           Node CA) and, on a PSN, the OCSP responder's, the EST
 *           server's and the EST client's, saved encrypted, and the CSR
 *           of the CA (and of the responder in the legacy hierarchy);
 *           ca.csr last.
 *   renew   the main process sends the CSRs in a RenewRequest on the
 *           CURVE link (again every RENEW_RETRY_MS until answered) and
 *           saves what the PAN signed: the CA certificate, chain.pem,
 *           root-ca.crt, "renewed" last.
 *   issue   (PSN) "ca-renew" again: the new Sub CA issues the OCSP
 *           responder (rfc6960), EST server and EST client certificates,
 *           recorded in the store and queued for the PAN in one
 *           transaction, "issued" last.
 *   handover (PSN) "ca-renew" again, once per daemon run: each running
 *           service's new key saved again under that service's hand-over
 *           secret (psn/services.h), the only way a new key reaches a
 *           process that wiped the passphrase.
 *   install node_ca_install(): the old files go to D/ca/gen-<N-1>/, the
 *           new ones take their place; then (PSN) every service is told
 *           (SIGHUP) to switch to them in place.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cert.h"
#include "csr.h"
#include "events.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "outbox.h"
#include "proc.h"
#include "member_rootchain.h"
#include "store.h"
#include "util.h"

/* How often an unanswered RenewRequest is sent again. */
#define RENEW_RETRY_MS 3000
/* Longest path below the data directory. */
#define RENEW_PATH_MAX 4096
/* Largest CSR we read back from next/. */
#define RENEW_CSR_MAX (16 * 1024)
/* Process name of the worker. */
#define RENEW_PROCESS "ca-renew"

/* What moves into D/ca/ at install. */
static const char *const psn_files[] = {
    "endpoint-sub-ca.key", "endpoint-sub-ca.crt", "ocsp-responder.key",
    "ocsp-responder.crt",  "est-server.key",      "est-server.crt",
    "est-client.key",      "est-client.crt",      "chain.pem",
    "root-ca.crt",
};
static const char *const san_files[] = {
    "node-ca.key",
    "node-ca.crt",
    "chain.pem",
    "root-ca.crt",
};
/* Keys made besides the CA's (the PSN's own certificates'). */
static const char *const psn_keys[] = {"ocsp-responder", "est-server",
                                       "est-client"};

/* What a role renews. */
struct member_renewal {
	const char *ca;                /* "endpoint-sub-ca": D/ca/<ca>.key */
	enum cert_profile profile;     /* of the CA certificate asked for */
	const char *const *keys;       /* made besides, with their names */
	size_t nkeys;
	const char *const *files;      /* what moves into D/ca/ */
	size_t nfiles;
	bool issues;   /* step "issue": our own certificates, by the new CA */
	int min_chain; /* certificates the PAN sends above ours, at least */
};

static const struct member_renewal renew_psn = {
    "endpoint-sub-ca", CERT_PROFILE_ENDPOINT_SUB_CA, psn_keys,
    ARRAY_SIZE(psn_keys), psn_files, ARRAY_SIZE(psn_files), true, 2,
};
static const struct member_renewal renew_san = {
    "node-ca", CERT_PROFILE_NODE_CA, NULL, 0, san_files,
    ARRAY_SIZE(san_files), false, 1,
};

/* The worker's arguments (a copy the fork keeps). */
struct renew_args {
	const struct member_renewal *kind;
	const char *datadir;
	const char *hostname;
	const char *pass;
	size_t passlen;
	bool legacy;
	/* Step "handover": the copies the running services take. */
	bool handover;
	const struct member_handover *ho;
	size_t nho;
};

static int
next_path(const char *datadir, const char *name, char *buf, size_t len,
          struct error *err)
{
	char rel[128];

	snprintf(rel, sizeof(rel), "%s/%s/%s", NODE_CA_DIR, NODE_CA_NEXT, name);
	return node_path(buf, len, datadir, rel, err);
}

static bool
next_has(const char *datadir, const char *name)
{
	char path[RENEW_PATH_MAX];

	return next_path(datadir, name, path, sizeof(path), NULL) == 0 &&
	       file_exists(path);
}

/* Make a key and save it in next/ (kept if there: the same key again). */
static EVP_PKEY *
renew_key(const struct renew_args *a, const char *name, enum key_type type,
          struct error *err)
{
	char path[RENEW_PATH_MAX];
	EVP_PKEY *key;

	if (next_path(a->datadir, name, path, sizeof(path), err) == -1)
		return NULL;
	if (file_exists(path))
		return key_load(path, a->pass, a->passlen, err);
	if ((key = key_generate(type, err)) == NULL)
		return NULL;
	if (key_save(key, path, a->pass, a->passlen, err) == -1) {
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

/* The CSR of key with the product CN of profile, into next/name. */
static int
renew_csr(const struct renew_args *a, EVP_PKEY *key, enum cert_profile prof,
          const char *name, struct error *err)
{
	char cn[CERT_CN_BUF], path[RENEW_PATH_MAX];
	X509_REQ *csr = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	int rc = -1;

	if (cert_profile_cn(prof, a->hostname, cn, sizeof(cn), err) == -1 ||
	    (csr = csr_create(key, cn, NULL, 0, err)) == NULL)
		goto out;
	if (csr_to_der(csr, &der, &len) == -1) {
		error_set(err, "cannot encode the CSR for '%s'", cn);
		goto out;
	}
	if (next_path(a->datadir, name, path, sizeof(path), err) == -1 ||
	    file_write_atomic(path, der, len, 0600, err) == -1)
		goto out;
	rc = 0;
out:
	OPENSSL_free(der);
	X509_REQ_free(csr);
	return rc;
}

/* Step "keys": every new key, then the CSRs, ca.csr last. */
static int
renew_keys(const struct renew_args *a, struct error *err)
{
	char path[RENEW_PATH_MAX], rel[64];
	EVP_PKEY *ca = NULL, *ocsp = NULL, *k;
	X509 *old = NULL;
	enum key_type type;
	size_t i;
	int rc = -1;

	/* Keys like the CA's of today. */
	if (node_ca_path(a->datadir, path, sizeof(path), err, "%s/%s.crt",
	                 NODE_CA_DIR, a->kind->ca) == -1 ||
	    (old = cert_load_pem(path, err)) == NULL ||
	    key_type_of(X509_get0_pubkey(old), &type, err) == -1)
		goto out;
	snprintf(rel, sizeof(rel), "%s/%s", NODE_CA_DIR, NODE_CA_NEXT);
	if (node_path(path, sizeof(path), a->datadir, rel, err) == -1 ||
	    dir_create(path, 0700, err) == -1)
		goto out;
	snprintf(rel, sizeof(rel), "%s.key", a->kind->ca);
	if ((ca = renew_key(a, rel, type, err)) == NULL)
		goto out;
	for (i = 0; i < a->kind->nkeys; i++) {
		snprintf(rel, sizeof(rel), "%s.key", a->kind->keys[i]);
		if ((k = renew_key(a, rel, type, err)) == NULL)
			goto out;
		if (strcmp(a->kind->keys[i], "ocsp-responder") == 0)
			ocsp = k;
		else
			EVP_PKEY_free(k);
	}
	if ((a->legacy && ocsp != NULL &&
	     renew_csr(a, ocsp, CERT_PROFILE_OCSP_RESPONDER, "ocsp.csr",
	               err) == -1) ||
	    renew_csr(a, ca, a->kind->profile, "ca.csr", err) == -1)
		goto out;
	rc = 0;
out:
	X509_free(old);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(ocsp);
	return rc;
}

/* Issue one certificate with the new Sub CA and save it in next/. */
static X509 *
renew_issue(const struct renew_args *a, X509 *sub, EVP_PKEY *sub_key,
            enum cert_profile prof, const char *name, const char *url,
            struct error *err)
{
	char path[RENEW_PATH_MAX], keyname[64];
	struct cert_request req;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;

	snprintf(keyname, sizeof(keyname), "%s.key", name);
	cert_request_init(&req, prof);
	if (next_path(a->datadir, keyname, path, sizeof(path), err) == -1 ||
	    (key = key_load(path, a->pass, a->passlen, err)) == NULL)
		goto out;
	if ((prof == CERT_PROFILE_OCSP_RESPONDER
	         ? cert_request_set_product_cn(&req, a->hostname, err)
	         : cert_request_set_cn(&req, a->hostname, err)) == -1 ||
	    (prof == CERT_PROFILE_TLS_SERVER &&
	     cert_request_add_san(&req, CERT_SAN_DNS, a->hostname, err) ==
	         -1) ||
	    (url != NULL && cert_request_set_ocsp_url(&req, url, err) == -1) ||
	    cert_request_set_key(&req, key, err) == -1 ||
	    cert_issue(&req, sub, sub_key, &x, err) == -1)
		goto out;
	snprintf(keyname, sizeof(keyname), "%s.crt", name);
	if (next_path(a->datadir, keyname, path, sizeof(path), err) == -1 ||
	    cert_save_pem(x, path, err) == -1) {
		X509_free(x);
		x = NULL;
	}
out:
	cert_request_free(&req);
	EVP_PKEY_free(key);
	return x;
}

/* Step "issue": the node's own certificates, recorded and queued. */
static int
renew_issue_all(const struct renew_args *a, struct error *err)
{
	char path[RENEW_PATH_MAX], url[CERT_URL_MAX];
	X509 *sub = NULL, *certs[3] = {NULL, NULL, NULL};
	const char *profiles[3];
	EVP_PKEY *sub_key = NULL;
	uint8_t kid[STORE_KEY_ID_LEN];
	struct store *st = NULL;
	struct store_batch *b = NULL;
	int64_t now = time_now_ms();
	size_t n = 0, i;
	int rc = -1;

	snprintf(url, sizeof(url), "http://%s:%d/ocsp", a->hostname,
	         JOIN_OCSP_PORT);
	if (next_path(a->datadir, "endpoint-sub-ca.crt", path, sizeof(path),
	              err) == -1 ||
	    (sub = cert_load_pem(path, err)) == NULL ||
	    next_path(a->datadir, "endpoint-sub-ca.key", path, sizeof(path),
	              err) == -1 ||
	    (sub_key = key_load(path, a->pass, a->passlen, err)) == NULL ||
	    store_issuer_key_id(sub, kid, err) == -1)
		goto out;
	/* RFC 6960 4.2.2.2: the responder is certified by our Sub CA. */
	if (!a->legacy) {
		if ((certs[n] = renew_issue(a, sub, sub_key,
		                            CERT_PROFILE_OCSP_RESPONDER,
		                            "ocsp-responder", NULL, err)) == NULL)
			goto out;
		profiles[n++] = cert_profile_name(CERT_PROFILE_OCSP_RESPONDER);
	}
	if ((certs[n] = renew_issue(a, sub, sub_key, CERT_PROFILE_TLS_SERVER,
	                            "est-server", url, err)) == NULL)
		goto out;
	profiles[n++] = cert_profile_name(CERT_PROFILE_TLS_SERVER);
	if ((certs[n] = renew_issue(a, sub, sub_key, CERT_PROFILE_TLS_CLIENT,
	                            "est-client", url, err)) == NULL)
		goto out;
	profiles[n++] = cert_profile_name(CERT_PROFILE_TLS_CLIENT);

	if (node_path(path, sizeof(path), a->datadir, NODE_STORE_DIR, err) ==
	        -1 ||
	    store_open(path, NULL, &st, err) == -1)
		goto out;
	if ((b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (outbox_batch_add(b, certs[i], kid, profiles[i], a->hostname,
		                     now, err) == -1)
			goto out;
	/* Done before (a crash after the commit): already recorded. */
	rc = store_apply(st, b, err);
	if (rc == STORE_EXISTS)
		rc = STORE_OK;
	if (rc != STORE_OK) {
		rc = -1;
		goto out;
	}
	if (next_path(a->datadir, "issued", path, sizeof(path), err) == -1 ||
	    file_write_atomic(path, "issued\n", 7, 0600, err) == -1)
		rc = -1;
out:
	store_batch_free(b);
	store_close(st);
	for (i = 0; i < ARRAY_SIZE(certs); i++)
		X509_free(certs[i]);
	X509_free(sub);
	EVP_PKEY_free(sub_key);
	return rc;
}

/*
 * Step "handover": each running service's new keys again under its
 * hand-over secret (services.h), for it to switch in place once the
 * files are installed.  Done by every daemon run before it installs: the
 * secrets are those of the services running now.
 */
static int
renew_handover(const struct renew_args *a, struct error *err)
{
	char from[RENEW_PATH_MAX], to[RENEW_PATH_MAX], name[64];
	size_t i;

	for (i = 0; i < a->nho; i++) {
		snprintf(name, sizeof(name), "%s.key", a->ho[i].key);
		if (next_path(a->datadir, name, from, sizeof(from), err) ==
		        -1 ||
		    member_handover_path(a->datadir, a->ho[i].key,
		                         a->ho[i].process, to, sizeof(to),
		                         err) == -1 ||
		    key_handover_copy(from, a->pass, a->passlen, to,
		                      a->ho[i].secret, err) == -1) {
			error_prefix(err, "hand-over copy for %s",
			             a->ho[i].process);
			return -1;
		}
	}
	return 0;
}

/* The worker: whichever step is due. */
static int
renew_main(void *arg)
{
	const struct renew_args *a = arg;
	struct error e = {{0}};
	int rc;

	if (proc_close_fds(NULL, 0, &e) == -1) {
		log_error(LOG_CA_SERVICE, "%s", e.msg);
		return 1;
	}
	if (a->handover)
		rc = renew_handover(a, &e);
	else if (!next_has(a->datadir, "ca.csr"))
		rc = renew_keys(a, &e);
	else
		rc = renew_issue_all(a, &e);
	if (rc == -1)
		log_error(LOG_CA_SERVICE, "renewing the CA certificates: %s",
		          e.msg);
	else
		log_info(LOG_CA_SERVICE, "renewal step done");
	return rc == 0 ? 0 : 1;
}

int
member_handover_path(const char *datadir, const char *key,
                     const char *process, char *buf, size_t len,
                     struct error *err)
{
	return node_ca_path(datadir, buf, len, err, "%s/%s.%s.handover",
	                    NODE_CA_DIR, key, process);
}

EVP_PKEY *
member_handover_take(const char *datadir, const char *key,
                     const char *process, const struct secret *own,
                     X509 *cert, struct error *err)
{
	char path[RENEW_PATH_MAX];
	EVP_PKEY *k;

	if (member_handover_path(datadir, key, process, path, sizeof(path),
	                         err) == -1 ||
	    (k = key_handover_take(path, own, err)) == NULL)
		return NULL;
	if (cert != NULL && X509_check_private_key(cert, k) != 1) {
		ERR_clear_error();
		error_set(err, "the hand-over key %s is not the key of the new "
		               "%s certificate",
		          path, key);
		EVP_PKEY_free(k);
		return NULL;
	}
	return k;
}

void
member_rootchain_init(struct member_rootchain *rc, const char *datadir,
                      const char *hostname, enum node_role role, bool legacy)
{
	memset(rc, 0, sizeof(*rc));
	rc->datadir = datadir;
	rc->hostname = hostname;
	rc->kind = role == NODE_ROLE_SAN ? &renew_san : &renew_psn;
	rc->legacy = legacy && role == NODE_ROLE_PSN;
	rc->installed = node_ca_generation(datadir);
}

void
member_rootchain_target(struct member_rootchain *rc, struct store *st)
{
	Iselab__CaChain *c = NULL;
	struct error e = {{0}};

	if (st == NULL || events_ca_chain(st, &c, &e) == -1) {
		if (e.msg[0] != '\0')
			log_error(LOG_CA_SERVICE, "ca-chain: %s", e.msg);
		return;
	}
	if (c != NULL && c->generation > rc->target) {
		rc->target = c->generation;
		if (rc->target > rc->installed)
			log_info(LOG_CA_SERVICE,
			         "root CA chain generation %u to reach "
			         "(installed: %u)",
			         rc->target, rc->installed);
	}
	if (c != NULL)
		iselab__ca_chain__free_unpacked(c, NULL);
}

bool
member_rootchain_owns(const struct member_rootchain *rc, pid_t pid)
{
	return rc->worker > 0 && rc->worker == pid;
}

void
member_rootchain_exited(struct member_rootchain *rc, int status)
{
	bool handover = rc->worker_handover;

	rc->worker = 0;
	rc->worker_handover = false;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* Logged by the worker; tried again after a pause. */
		rc->not_before = time_mono_ms() + RENEW_RETRY_MS;
		return;
	}
	if (handover)
		rc->handed_over = true;
}

/* Send the CSRs to the PAN. */
static int
renew_send(struct member_rootchain *rc, struct join_link *link,
           struct error *err)
{
	Iselab__Envelope env;
	Iselab__RenewRequest rq = ISELAB__RENEW_REQUEST__INIT;
	char path[RENEW_PATH_MAX];
	uint8_t *ca = NULL, *ocsp = NULL;
	size_t calen = 0, ocsplen = 0;
	int ret = -1;

	if (next_path(rc->datadir, "ca.csr", path, sizeof(path), err) == -1 ||
	    (ca = file_read(path, RENEW_CSR_MAX, &calen, err)) == NULL)
		goto out;
	if (rc->legacy &&
	    (next_path(rc->datadir, "ocsp.csr", path, sizeof(path), err) ==
	         -1 ||
	     (ocsp = file_read(path, RENEW_CSR_MAX, &ocsplen, err)) == NULL))
		goto out;
	msg_init(&env, ++rc->request_id, rc->hostname);
	rq.generation = rc->target;
	rq.ca_csr.data = ca;
	rq.ca_csr.len = calen;
	rq.ocsp_csr.data = ocsp;
	rq.ocsp_csr.len = ocsplen;
	env.body_case = ISELAB__ENVELOPE__BODY_RENEW_REQUEST;
	env.renew_request = &rq;
	ret = join_link_send(link, &env, err);
out:
	free(ca);
	free(ocsp);
	return ret;
}

static int
renew_save(const char *datadir, const char *name, X509 *x, struct error *err)
{
	char path[RENEW_PATH_MAX];

	return next_path(datadir, name, path, sizeof(path), err) == -1
	           ? -1
	           : cert_save_pem(x, path, err);
}

int
member_rootchain_response(struct member_rootchain *rc,
                          const Iselab__Envelope *env)
{
	const Iselab__RenewResponse *rr;
	STACK_OF(X509) *chain = NULL;
	X509 *sub = NULL, *ocsp = NULL, *x;
	EVP_PKEY *key = NULL;
	struct error e = {{0}};
	char path[RENEW_PATH_MAX], text[64];
	FILE *fp = NULL;
	size_t i;

	if (env->body_case == ISELAB__ENVELOPE__BODY_ERROR &&
	    rc->request_id != 0 && env->request_id == rc->request_id) {
		log_error(LOG_CA_SERVICE, "the PAN refused the renewal: %s",
		          env->error->message);
		return 1;
	}
	if (env->body_case != ISELAB__ENVELOPE__BODY_RENEW_RESPONSE)
		return 0;
	rr = env->renew_response;
	if (rc->target <= rc->installed || next_has(rc->datadir, "renewed"))
		return 1; /* a late duplicate */
	if ((sub = cert_parse_der(rr->ca_cert.data, rr->ca_cert.len, &e)) ==
	        NULL ||
	    (rc->legacy && (ocsp = cert_parse_der(rr->ocsp_cert.data,
	                                          rr->ocsp_cert.len, &e)) ==
	                       NULL))
		goto fail;
	if ((chain = sk_X509_new_null()) == NULL) {
		error_set(&e, "out of memory");
		goto fail;
	}
	for (i = 0; i < rr->n_chain; i++) {
		if ((x = cert_parse_der(rr->chain[i].data, rr->chain[i].len,
		                        &e)) == NULL)
			goto fail;
		if (!sk_X509_push(chain, x)) {
			X509_free(x);
			error_set(&e, "out of memory");
			goto fail;
		}
	}
	/* It must be for the key we made, and chain up to the new root. */
	if (next_path(rc->datadir, "ca.csr", path, sizeof(path), &e) == -1)
		goto fail;
	{
		uint8_t *der;
		size_t len;
		X509_REQ *req;

		if ((der = file_read(path, RENEW_CSR_MAX, &len, &e)) == NULL)
			goto fail;
		req = csr_parse(der, len, &e);
		free(der);
		if (req == NULL)
			goto fail;
		key = X509_REQ_get_pubkey(req);
		X509_REQ_free(req);
	}
	if (key == NULL || EVP_PKEY_eq(key, X509_get0_pubkey(sub)) != 1 ||
	    sk_X509_num(chain) < rc->kind->min_chain ||
	    X509_verify(sub, X509_get0_pubkey(sk_X509_value(chain, 0))) != 1) {
		error_set(&e, "the PAN's certificate is not for our new key or "
		              "not issued by the CA it sent");
		goto fail;
	}
	snprintf(text, sizeof(text), "%s.crt", rc->kind->ca);
	if (renew_save(rc->datadir, text, sub, &e) == -1 ||
	    (ocsp != NULL &&
	     renew_save(rc->datadir, "ocsp-responder.crt", ocsp, &e) == -1) ||
	    renew_save(rc->datadir, "root-ca.crt",
	               sk_X509_value(chain, sk_X509_num(chain) - 1), &e) == -1)
		goto fail;
	/* chain.pem as join writes it: the issuer first, the root last. */
	if (next_path(rc->datadir, "chain.pem", path, sizeof(path), &e) == -1 ||
	    (fp = fopen(path, "w")) == NULL) {
		if (fp == NULL && e.msg[0] == '\0')
			error_set(&e, "%s: %s", path, strerror(errno));
		goto fail;
	}
	for (i = 0; i < (size_t)sk_X509_num(chain); i++)
		if (PEM_write_X509(fp, sk_X509_value(chain, (int)i)) != 1) {
			error_set(&e, "%s: cannot write", path);
			goto fail;
		}
	if (fflush(fp) != 0 || fsync(fileno(fp)) == -1) {
		error_set(&e, "%s: %s", path, strerror(errno));
		goto fail;
	}
	fclose(fp);
	fp = NULL;
	snprintf(text, sizeof(text), "%u\n", rr->generation);
	if (next_path(rc->datadir, "renewed", path, sizeof(path), &e) == -1 ||
	    file_write_atomic(path, text, strlen(text), 0600, &e) == -1)
		goto fail;
	if (rr->generation > rc->target)
		rc->target = rr->generation;
	rc->reached = rr->generation;
	log_info(LOG_CA_SERVICE, "the PAN renewed our %s for root CA chain "
	                         "generation %u",
	         cert_profile_name(rc->kind->profile), rr->generation);
	goto out;
fail:
	log_error(LOG_CA_SERVICE, "renewal answer refused: %s", e.msg);
out:
	if (fp != NULL)
		fclose(fp);
	EVP_PKEY_free(key);
	X509_free(sub);
	X509_free(ocsp);
	sk_X509_pop_free(chain, X509_free);
	return 1;
}

/* The generation next/ was renewed for ("renewed"), 0 if none. */
static unsigned
renewed_generation(const char *datadir)
{
	char path[RENEW_PATH_MAX], *text;
	unsigned long gen;
	size_t len;

	if (next_path(datadir, "renewed", path, sizeof(path), NULL) == -1 ||
	    (text = (char *)file_read(path, 32, &len, NULL)) == NULL)
		return 0;
	gen = strtoul(text, NULL, 10);
	free(text);
	return gen < UINT32_MAX ? (unsigned)gen : 0;
}

int
member_rootchain_tick(struct member_rootchain *rc, struct join_link *link,
                      const char *pass, size_t passlen,
                      const struct member_handover *ho, size_t nho,
                      int64_t now, bool *installed)
{
	struct renew_args a;
	struct error e = {{0}};
	unsigned gen;
	char path[RENEW_PATH_MAX];

	*installed = false;
	if (rc->target <= rc->installed || rc->worker > 0 ||
	    now < rc->not_before)
		return rc->worker > 0 || rc->target <= rc->installed
		           ? -1
		           : (int)(rc->not_before - now);
	a.kind = rc->kind;
	a.datadir = rc->datadir;
	a.hostname = rc->hostname;
	a.pass = pass;
	a.passlen = passlen;
	a.legacy = rc->legacy;
	a.handover = next_has(rc->datadir, "issued") && !rc->handed_over &&
	             nho > 0;
	a.ho = ho;
	a.nho = nho;
	if (!next_has(rc->datadir, "ca.csr") ||
	    (rc->kind->issues && next_has(rc->datadir, "renewed") &&
	     !next_has(rc->datadir, "issued")) ||
	    a.handover) {
		if (pass == NULL) {
			log_error(LOG_CA_SERVICE, "no passphrase held: the "
			                          "renewal waits for a restart");
			rc->not_before = now + 60000;
			return 60000;
		}
		if (proc_fork(RENEW_PROCESS, renew_main, &a, &rc->worker, &e) ==
		    -1) {
			log_error(LOG_CA_SERVICE, "%s", e.msg);
			rc->worker = 0;
			rc->not_before = now + RENEW_RETRY_MS;
		} else
			rc->worker_handover = a.handover;
		return -1;
	}
	if (!next_has(rc->datadir, "renewed")) {
		if (join_link_state(link) != JOIN_LINK_CONNECTED)
			return RENEW_RETRY_MS;
		if (renew_send(rc, link, &e) == -1)
			log_warn(LOG_CA_SERVICE, "renewal request: %s", e.msg);
		else
			log_info(LOG_CA_SERVICE, "renewal request sent for "
			                         "generation %u",
			         rc->target);
		rc->not_before = now + RENEW_RETRY_MS;
		return RENEW_RETRY_MS;
	}
	gen = renewed_generation(rc->datadir);
	if (gen < rc->target)
		gen = rc->target;
	if (node_ca_install(rc->datadir, rc->kind->files, rc->kind->nfiles,
	                    gen, &e) == -1) {
		log_error(LOG_CA_SERVICE, "installing generation %u: %s", gen,
		          e.msg);
		rc->not_before = now + RENEW_RETRY_MS;
		return RENEW_RETRY_MS;
	}
	/* Markers of the steps: next/ is done. */
	if (next_path(rc->datadir, "ca.csr", path, sizeof(path), &e) == 0)
		(void)unlink(path);
	if (next_path(rc->datadir, "ocsp.csr", path, sizeof(path), &e) == 0)
		(void)unlink(path);
	if (next_path(rc->datadir, "renewed", path, sizeof(path), &e) == 0)
		(void)unlink(path);
	if (next_path(rc->datadir, "issued", path, sizeof(path), &e) == 0)
		(void)unlink(path);
	if (next_path(rc->datadir, "", path, sizeof(path), &e) == 0)
		(void)rmdir(path);
	rc->installed = gen;
	rc->handed_over = false;
	*installed = true;
	if (rc->kind->issues)
		log_info(LOG_CA_SERVICE,
		         "root CA chain generation %u installed: new Endpoint "
		         "Sub CA, OCSP responder, EST server and EST client "
		         "certificates",
		         gen);
	else
		log_info(LOG_CA_SERVICE,
		         "root CA chain generation %u installed: new %s", gen,
		         cert_profile_name(rc->kind->profile));
	return 0;
}
