/*
 * est_harness: the EST server (common/est.c over common/http.c) with an
 * in-process test backend, for the conformance tests in this directory.
 * On a PSN the backend is the CA service process; here it signs with a
 * test Endpoint Sub CA held in memory, because this is a test.
 *
 *	est_harness --dir DIR --listen ADDR --port PORT [--timeout SECS]
 *	            [--workers N] [--incomplete-chain]
 *
 * It makes the lab hierarchy (EC P-256: Root CA -> Node CA -> Endpoint Sub
 * CA, backdated ten days so that expired leaves can exist), or loads it
 * from DIR when DIR/root.pem is there, then issues and writes to DIR (PEM,
 * keys unencrypted: test fixtures only):
 *
 *	root.pem node-ca.pem sub-ca.pem (+ .key)  the hierarchy
 *	chain.pem            sub CA, node CA, root (what cacerts publishes)
 *	server.pem/.key      the EST server's TLS certificate (SAN IP ADDR)
 *	client.pem/.key      a client certificate of the deployment
 *	client-expired.*     expired yesterday
 *	client-revoked.*     on the backend's revocation list
 *	client-foreign.*     from an unrelated CA
 *	foreign-root.pem     that CA
 *
 * Backend: Basic user estuser/estpass (salted SHA-256, compared in constant
 * time); labels "default" (also no label; PoP optional), "strict" (PoP
 * required), "p256only" (EC P-256 keys only, PoP off).  --incomplete-chain
 * publishes the chain without the Node CA, to test the 503.  Prints
 * "ready PORT" on stdout once serving; stops on SIGTERM or SIGINT.
 */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "../pki/hierarchy.h"
#include "chain.h"
#include "est.h"
#include "http.h"
#include "log.h"

/* Backdating of the test CAs, so expired leaves can be issued. */
#define HARNESS_BACKDATE (10 * 24 * 3600)
#define HARNESS_USER     "estuser"
#define HARNESS_PASSWORD "estpass"
#define HARNESS_SALT_LEN 16

struct harness {
	struct hier h;   /* root, node, sub in H_ROOT..H_SUB */
	bool incomplete; /* publish without the Node CA */
	X509 *revoked;   /* the one revoked client certificate */
	unsigned char salt[HARNESS_SALT_LEN];
	unsigned char pwhash[SHA256_DIGEST_LENGTH];
};

static void
die(const char *what, const struct error *err)
{
	fprintf(stderr, "est_harness: %s: %s\n", what,
	        err != NULL ? err->msg : "failed");
	exit(1);
}

static int
write_pem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key)
{
	char path[PATH_MAX];
	FILE *fp;
	int ok;

	snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
	if ((fp = fopen(path, "w")) == NULL)
		return -1;
	ok = PEM_write_X509(fp, cert);
	fclose(fp);
	if (!ok || key == NULL)
		return ok ? 0 : -1;
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	umask(077);
	if ((fp = fopen(path, "w")) == NULL)
		return -1;
	ok = PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
	fclose(fp);
	return ok ? 0 : -1;
}

static int
read_pem(const char *dir, const char *name, X509 **cert, EVP_PKEY **key)
{
	char path[PATH_MAX];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	*cert = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	if ((fp = fopen(path, "r")) == NULL)
		return -1;
	*key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	return *cert != NULL && *key != NULL ? 0 : -1;
}

/* A leaf under issuer; SANs by profile. */
static X509 *
issue_leaf(X509 *issuer, EVP_PKEY *issuer_key, enum cert_profile profile,
           const char *cn, const char *ip, EVP_PKEY *key, time_t not_before,
           time_t validity, struct error *err)
{
	struct cert_request req;
	X509 *out = NULL;

	cert_request_init(&req, profile);
	req.not_before = not_before;
	req.validity = validity;
	if (cert_request_set_key(&req, key, err) == -1 ||
	    cert_request_set_cn(&req, cn, err) == -1)
		goto out;
	if (profile == CERT_PROFILE_TLS_SERVER &&
	    (cert_request_add_san(&req, CERT_SAN_DNS, cn, err) == -1 ||
	     cert_request_add_san(&req, CERT_SAN_IP, ip, err) == -1))
		goto out;
	cert_issue(&req, issuer, issuer_key, &out, err);
out:
	cert_request_free(&req);
	return out;
}

static STACK_OF(X509) * stack_of(X509 *a, X509 *b, X509 *c)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	X509 *v[3] = {a, b, c};
	int i;

	for (i = 0; sk != NULL && i < 3; i++) {
		if (v[i] == NULL)
			continue;
		X509_up_ref(v[i]);
		sk_X509_push(sk, v[i]);
	}
	return sk;
}

/* Backend. */

static STACK_OF(X509) * be_ca_certs(void *ctx, struct error *err)
{
	struct harness *hs = ctx;

	(void)err;
	return stack_of(hs->h.cert[H_SUB],
	                hs->incomplete ? NULL : hs->h.cert[H_NODE],
	                hs->h.cert[H_ROOT]);
}

static STACK_OF(X509) * be_anchors(void *ctx, struct error *err)
{
	struct harness *hs = ctx;

	(void)err;
	return stack_of(hs->h.cert[H_ROOT], NULL, NULL);
}

static int
be_is_revoked(void *ctx, const ASN1_INTEGER *serial, const X509_NAME *issuer)
{
	struct harness *hs = ctx;

	return ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(hs->revoked)) ==
	           0 &&
	       X509_NAME_cmp(issuer, X509_get_issuer_name(hs->revoked)) == 0;
}

static void
pw_hash(const unsigned char *salt, const char *pw, unsigned char *out)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, salt, HARNESS_SALT_LEN);
	EVP_DigestUpdate(md, pw, strlen(pw));
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
}

static int
be_check_basic(void *ctx, const char *user, const char *password)
{
	struct harness *hs = ctx;
	unsigned char h[SHA256_DIGEST_LENGTH];
	int user_ok, pw_ok;

	/* Hash even for a wrong user: the time does not tell which. */
	pw_hash(hs->salt, password, h);
	user_ok = strlen(user) == strlen(HARNESS_USER) &&
	          CRYPTO_memcmp(user, HARNESS_USER, strlen(user)) == 0;
	pw_ok = CRYPTO_memcmp(h, hs->pwhash, sizeof(h)) == 0;
	return user_ok & pw_ok;
}

static int
be_lookup_label(void *ctx, const char *label, struct est_template *t)
{
	(void)ctx;
	memset(t, 0, sizeof(*t));
	t->profile = CERT_PROFILE_TLS_CLIENT;
	t->validity = 365 * 24 * 3600;
	t->key_types = EST_KEY_BIT(KEY_EC_P256) | EST_KEY_BIT(KEY_EC_P384) |
	               EST_KEY_BIT(KEY_RSA_2048) | EST_KEY_BIT(KEY_RSA_3072) |
	               EST_KEY_BIT(KEY_RSA_4096);
	t->keygen_type = KEY_EC_P256;
	t->require_cn = true;
	if (label == NULL || strcmp(label, "default") == 0) {
		snprintf(t->name, sizeof(t->name), "default");
		t->pop = EST_POP_OPTIONAL;
		return 1;
	}
	if (strcmp(label, "strict") == 0) {
		snprintf(t->name, sizeof(t->name), "strict");
		t->pop = EST_POP_REQUIRED;
		return 1;
	}
	if (strcmp(label, "p256only") == 0) {
		snprintf(t->name, sizeof(t->name), "p256only");
		t->pop = EST_POP_OFF;
		t->key_types = EST_KEY_BIT(KEY_EC_P256);
		return 1;
	}
	return 0;
}

static X509 *
issue_for(struct harness *hs, X509_REQ *csr, const struct est_template *t,
          EVP_PKEY *key, int *status, struct error *err)
{
	struct cert_request req;
	X509 *out = NULL;

	cert_request_init(&req, t->profile);
	req.validity = t->validity;
	if (cert_request_from_csr(&req, csr, err) == -1 ||
	    (key != NULL && cert_request_set_key(&req, key, err) == -1)) {
		*status = 400;
		goto out;
	}
	if (cert_issue(&req, hs->h.cert[H_SUB], hs->h.key[H_SUB], &out, err) ==
	    -1)
		*status = 400;
out:
	cert_request_free(&req);
	return out;
}

static X509 *
be_enroll(void *ctx, X509_REQ *csr, const struct est_template *t,
          const struct est_identity *id, int *status, struct error *err)
{
	(void)id;
	return issue_for(ctx, csr, t, NULL, status, err);
}

static int
be_serverkeygen(void *ctx, X509_REQ *csr, const struct est_template *t,
                enum key_type type, const struct est_identity *id,
                EVP_PKEY **key, X509 **cert, int *status, struct error *err)
{
	(void)id;
	if ((*key = key_generate(type, err)) == NULL)
		return -1;
	if ((*cert = issue_for(ctx, csr, t, *key, status, err)) == NULL) {
		EVP_PKEY_free(*key);
		*key = NULL;
		return -1;
	}
	return 0;
}

static void
make_hierarchy(struct harness *hs, const char *dir)
{
	static const enum hier_slot slots[] = {H_ROOT, H_NODE, H_SUB};
	static const char *names[] = {"root", "node-ca", "sub-ca"};
	char path[PATH_MAX];
	struct error err;
	EVP_PKEY *k;
	size_t i;

	snprintf(path, sizeof(path), "%s/root.pem", dir);
	if (file_exists(path)) {
		for (i = 0; i < ARRAY_SIZE(slots); i++)
			if (read_pem(dir, names[i], &hs->h.cert[slots[i]],
			             &hs->h.key[slots[i]]) == -1)
				die(names[i], NULL);
		return;
	}
	for (i = 0; i < ARRAY_SIZE(slots); i++) {
		if ((k = hier_keygen("ec-p256")) == NULL)
			die("keygen", NULL);
		if (hier_issue(&hs->h, slots[i], k, "pan1", "psn1",
		               time(NULL) - HARNESS_BACKDATE, 0, &err) == -1)
			die(names[i], &err);
		EVP_PKEY_free(k);
		if (write_pem(dir, names[i], hs->h.cert[slots[i]],
		              hs->h.key[slots[i]]) == -1)
			die("write", NULL);
	}
}

/* Issue a leaf, write it to DIR/name.{pem,key}; returns the cert. */
static X509 *
make_leaf(struct harness *hs, const char *dir, const char *name,
          enum cert_profile profile, const char *cn, const char *ip,
          time_t not_before, time_t validity, X509 *issuer,
          EVP_PKEY *issuer_key, EVP_PKEY **keyp)
{
	struct error err;
	EVP_PKEY *key = hier_keygen("ec-p256");
	X509 *x;

	(void)hs;
	if (key == NULL)
		die("keygen", NULL);
	x = issue_leaf(issuer, issuer_key, profile, cn, ip, key, not_before,
	               validity, &err);
	if (x == NULL)
		die(name, &err);
	if (write_pem(dir, name, x, key) == -1)
		die("write", NULL);
	if (keyp != NULL)
		*keyp = key;
	else
		EVP_PKEY_free(key);
	return x;
}

static void
usage(void)
{
	fprintf(stderr, "usage: est_harness --dir DIR --listen ADDR --port "
	                "PORT [--timeout SECS] [--workers N] "
	                "[--incomplete-chain]\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"listen", required_argument, NULL, 'l'},
	    {"port", required_argument, NULL, 'p'},
	    {"timeout", required_argument, NULL, 't'},
	    {"workers", required_argument, NULL, 'w'},
	    {"max-conns", required_argument, NULL, 'm'},
	    {"incomplete-chain", no_argument, NULL, 'i'},
	    {NULL, 0, NULL, 0},
	};
	struct harness hs;
	struct http_config cfg;
	struct est_backend be;
	struct error err;
	struct est *est;
	struct http_server *srv;
	const char *dir = NULL;
	char path[PATH_MAX];
	STACK_OF(X509) * chain, *sent;
	EVP_PKEY *server_key = NULL, *fkey = NULL;
	X509 *server, *client, *expired, *foreign;
	SSL_CTX *ctx;
	sigset_t set;
	time_t now = time(NULL);
	int c, sig;

	memset(&hs, 0, sizeof(hs));
	memset(&cfg, 0, sizeof(cfg));
	cfg.category = LOG_EST;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'l':
			cfg.address = optarg;
			break;
		case 'p':
			cfg.port = (uint16_t)atoi(optarg);
			break;
		case 't':
			cfg.timeout = (unsigned)atoi(optarg);
			break;
		case 'w':
			cfg.workers = (unsigned)atoi(optarg);
			break;
		case 'm':
			cfg.max_conns = (unsigned)atoi(optarg);
			break;
		case 'i':
			hs.incomplete = true;
			break;
		default:
			usage();
		}
	}
	if (dir == NULL || cfg.address == NULL)
		usage();
	if (log_open("est-harness", "est", NULL, true, &err) == -1)
		die("log", &err);
	log_set_level(LOG_EST, LOG_LEVEL_DEBUG);

	make_hierarchy(&hs, dir);
	chain =
	    stack_of(hs.h.cert[H_SUB], hs.h.cert[H_NODE], hs.h.cert[H_ROOT]);
	snprintf(path, sizeof(path), "%s/chain.pem", dir);
	if (chain_save_pem(chain, path, &err) == -1)
		die("chain", &err);
	server = make_leaf(&hs, dir, "server", CERT_PROFILE_TLS_SERVER,
	                   "est.lab.example", cfg.address, 0, 0,
	                   hs.h.cert[H_SUB], hs.h.key[H_SUB], &server_key);
	client =
	    make_leaf(&hs, dir, "client", CERT_PROFILE_TLS_CLIENT, "est-client",
	              NULL, 0, 0, hs.h.cert[H_SUB], hs.h.key[H_SUB], NULL);
	expired = make_leaf(&hs, dir, "client-expired", CERT_PROFILE_TLS_CLIENT,
	                    "est-expired", NULL, now - 5 * 24 * 3600, 24 * 3600,
	                    hs.h.cert[H_SUB], hs.h.key[H_SUB], NULL);
	hs.revoked = make_leaf(&hs, dir, "client-revoked",
	                       CERT_PROFILE_TLS_CLIENT, "est-revoked", NULL, 0,
	                       0, hs.h.cert[H_SUB], hs.h.key[H_SUB], NULL);
	/* An unrelated self-signed CA and a client certificate from it. */
	{
		struct hier fh;
		EVP_PKEY *k = hier_keygen("ec-p256");

		memset(&fh, 0, sizeof(fh));
		if (k == NULL || hier_issue(&fh, H_ROOT, k, "foreign",
		                            "foreign", 0, 0, &err) == -1)
			die("foreign root", &err);
		EVP_PKEY_free(k);
		if (write_pem(dir, "foreign-root", fh.cert[H_ROOT], NULL) == -1)
			die("write", NULL);
		foreign =
		    make_leaf(&hs, dir, "client-foreign",
		              CERT_PROFILE_TLS_CLIENT, "est-foreign", NULL, 0,
		              0, fh.cert[H_ROOT], fh.key[H_ROOT], &fkey);
		hier_free(&fh);
	}

	RAND_bytes(hs.salt, sizeof(hs.salt));
	pw_hash(hs.salt, HARNESS_PASSWORD, hs.pwhash);

	memset(&be, 0, sizeof(be));
	be.ctx = &hs;
	be.ca_certs = be_ca_certs;
	be.trust_anchors = be_anchors;
	be.is_revoked = be_is_revoked;
	be.check_basic = be_check_basic;
	be.lookup_label = be_lookup_label;
	be.enroll = be_enroll;
	be.serverkeygen = be_serverkeygen;
	if ((est = est_new(&be, "ISE EST", &err)) == NULL)
		die("est", &err);
	if (est_refresh(est, &err) == -1 && !hs.incomplete)
		die("est refresh", &err);

	sent = stack_of(hs.h.cert[H_SUB], hs.h.cert[H_NODE], NULL);
	if ((ctx = http_tls_ctx_new(server, server_key, sent, &err)) == NULL)
		die("tls", &err);
	cfg.tls = ctx;

	/* Signals are taken by sigwait() here; workers block them all. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if ((srv = http_server_start(&cfg, est_handle, est, &err)) == NULL)
		die("http", &err);
	printf("ready %u\n", (unsigned)http_server_port(srv));
	fflush(stdout);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			break;
		if (sig == SIGTERM || sig == SIGINT)
			break;
	}
	log_info(LOG_EST, "est_harness: stopping");
	http_server_stop(srv);
	est_free(est);
	SSL_CTX_free(ctx);
	chain_free(chain);
	chain_free(sent);
	X509_free(server);
	X509_free(client);
	X509_free(expired);
	X509_free(foreign);
	X509_free(hs.revoked);
	EVP_PKEY_free(server_key);
	EVP_PKEY_free(fkey);
	hier_free(&hs.h);
	log_close();
	return 0;
}
