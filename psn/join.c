/*
 * psn join: make this host a PSN of a deployment.
 *
 * The shared join (common/join.c) makes the keys, sends the CSRs of the
 * Endpoint Sub CA and the OCSP responder, checks and saves what the PAN
 * sends.  The PSN's own steps are here: with its new Endpoint Sub CA it
 * issues, locally, its OCSP responder certificate (in the rfc6960
 * hierarchy; in legacy the PAN's Node CA issued it), its EST server TLS
 * certificate and its EST client certificate, each with the AIA OCSP URL
 * of its own responder (DESIGN.md section 2), and records them in its
 * store, from which the OCSP responder will answer for them, queuing each
 * in the same transaction in its outbox for the PAN (common/outbox.h):
 * `pan ca certs` and `pan cert list` show them once `psn run` delivered
 * them.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>

#include "cert.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "outbox.h"
#include "psn.h"
#include "store.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define PSN_PATH_MAX 4096
/* Certificates a PSN issues itself at join time. */
#define PSN_LOCAL_CERTS 3

/* Issue one certificate for key with the Endpoint Sub CA. */
static X509 *
psn_issue(struct join_state *js, enum cert_profile profile, EVP_PKEY *key,
          const char *ocsp_url, struct error *err)
{
	const char *host = js->opts->hostname;
	struct cert_request req;
	X509 *cert = NULL;

	cert_request_init(&req, profile);
	if (profile == CERT_PROFILE_OCSP_RESPONDER) {
		if (cert_request_set_product_cn(&req, host, err) == -1)
			goto out;
	} else if (cert_request_set_cn(&req, host, err) == -1)
		goto out;
	/* RFC 6125 section 6.4.4: clients match the dNSName, not the CN. */
	if (profile == CERT_PROFILE_TLS_SERVER &&
	    cert_request_add_san(&req, CERT_SAN_DNS, host, err) == -1)
		goto out;
	if (ocsp_url != NULL &&
	    cert_request_set_ocsp_url(&req, ocsp_url, err) == -1)
		goto out;
	if (cert_request_set_key(&req, key, err) == -1 ||
	    cert_issue(&req, js->material.ca_cert, js->ca_key, &cert, err) ==
	        -1)
		goto out;
	log_info(LOG_CA_SERVICE, "issued the %s certificate of %s",
	         cert_profile_name(profile), host);
out:
	cert_request_free(&req);
	return cert;
}

/* Make a key, issue its certificate and save both as ca/<name>.{key,crt}. */
static X509 *
psn_issue_save(struct join_state *js, enum cert_profile profile,
               const char *name, const char *ocsp_url, struct error *err)
{
	char rel[64];
	EVP_PKEY *key;
	X509 *cert = NULL;

	if ((key = key_generate(js->opts->key_type, err)) == NULL)
		return NULL;
	snprintf(rel, sizeof(rel), "%s/%s.key", NODE_CA_DIR, name);
	if (join_files_save_key(&js->files, js->opts->datadir, rel, key,
	                        js->pass, js->passlen, err) == -1)
		goto out;
	if ((cert = psn_issue(js, profile, key, ocsp_url, err)) == NULL)
		goto out;
	snprintf(rel, sizeof(rel), "%s/%s.crt", NODE_CA_DIR, name);
	if (join_files_save_cert(&js->files, js->opts->datadir, rel, cert,
	                         err) == -1) {
		X509_free(cert);
		cert = NULL;
	}
out:
	EVP_PKEY_free(key);
	return cert;
}

/*
 * Record what the Endpoint Sub CA issued, for its OCSP responder, and
 * queue it for the PAN: one transaction, so nothing is recorded but not
 * queued.
 */
static int
psn_store(struct join_state *js, X509 **certs, const char *const *profiles,
          size_t n, struct error *err)
{
	uint8_t kid[STORE_KEY_ID_LEN];
	char path[PSN_PATH_MAX];
	const char *d = js->opts->datadir;
	struct store *st = NULL;
	struct store_batch *b = NULL;
	int64_t now = time_now_ms();
	size_t i;
	int rc = -1;

	if (join_files_mkdir(&js->files, d, NODE_STORE_DIR, 0700, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR "/data.mdb", err) ==
	        -1 ||
	    join_files_add(&js->files, path, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR "/lock.mdb", err) ==
	        -1 ||
	    join_files_add(&js->files, path, err) == -1 ||
	    node_path(path, sizeof(path), d, NODE_STORE_DIR, err) == -1)
		return -1;
	if (store_open(path, NULL, &st, err) == -1)
		return -1;
	if (store_issuer_key_id(js->material.ca_cert, kid, err) == -1)
		goto out;
	if ((b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (outbox_batch_add(b, certs[i], kid, profiles[i],
		                     js->opts->hostname, now, err) == -1)
			goto out;
	if (store_apply(st, b, err) != STORE_OK)
		goto out;
	rc = 0;
out:
	store_batch_free(b);
	store_close(st);
	return rc;
}

static int
psn_finish(struct join_state *js, struct error *err)
{
	X509 *certs[PSN_LOCAL_CERTS] = {NULL, NULL, NULL};
	const char *profiles[PSN_LOCAL_CERTS];
	char url[CERT_URL_MAX];
	size_t n = 0, i;
	int rc = -1;

	/* DESIGN.md section 2: the issuing PSN's own responder. */
	snprintf(url, sizeof(url), "http://%s:%d/ocsp", js->opts->hostname,
	         JOIN_OCSP_PORT);
	if (js->material.deployment.hierarchy == NODE_OCSP_RFC6960) {
		/*
		 * RFC 6960 section 4.2.2.2: a delegated responder is
		 * certified directly by the CA whose certificates it
		 * answers for, our Endpoint Sub CA.  No AIA OCSP URL: it
		 * carries id-pkix-ocsp-nocheck.
		 */
		char rel[64];

		if ((certs[n] = psn_issue(js, CERT_PROFILE_OCSP_RESPONDER,
		                          js->ocsp_key, NULL, err)) == NULL)
			goto out;
		snprintf(rel, sizeof(rel), "%s/ocsp-responder.crt",
		         NODE_CA_DIR);
		if (join_files_save_cert(&js->files, js->opts->datadir, rel,
		                         certs[n], err) == -1)
			goto out;
		profiles[n++] = cert_profile_name(CERT_PROFILE_OCSP_RESPONDER);
	}
	if ((certs[n] = psn_issue_save(js, CERT_PROFILE_TLS_SERVER,
	                               "est-server", url, err)) == NULL)
		goto out;
	profiles[n++] = cert_profile_name(CERT_PROFILE_TLS_SERVER);
	if ((certs[n] = psn_issue_save(js, CERT_PROFILE_TLS_CLIENT,
	                               "est-client", url, err)) == NULL)
		goto out;
	profiles[n++] = cert_profile_name(CERT_PROFILE_TLS_CLIENT);
	if (psn_store(js, certs, profiles, n, err) == -1)
		goto out;
	rc = 0;
out:
	for (i = 0; i < PSN_LOCAL_CERTS; i++)
		X509_free(certs[i]);
	return rc;
}

int
psn_join_main(int argc, char **argv)
{
	return join_main(&psn_role, psn_finish, argc, argv);
}
