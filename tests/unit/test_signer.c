/*
 * Unit tests for common/signer.c: the CA signer process and its client.
 * A temporary data directory gets a Root CA and a Node CA as pan init
 * makes them (EC P-256 for speed); the real signer is spawned on it and
 * asked for the certificates a join needs, which must chain to the root.
 * Then everything it must refuse (a wrong CN, an issuer asked for a
 * profile it may not sign, garbage and forged CSRs, weak keys, bad
 * framing on the socket), each followed by proof that it still serves;
 * the socket's mode; a signer that does not answer (the client recovers);
 * start failures; and SIGTERM ending it with status 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "cert.h"
#include "chain.h"
#include "csr.h"
#include "keys.h"
#include "log.h"
#include "msg.h"
#include "proc.h"
#include "signer.h"
#include "util.h"

#define PASS     "correct horse battery"
#define PAN_HOST "pan1"

static char tmpdir[64];
static X509 *root_cert, *node_cert;
static pid_t signer_pid = -1;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* One CA of the data directory, as pan init makes it. */
static X509 *
make_ca(const char *dir, enum cert_profile profile, const char *name,
        X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY **keyp)
{
	struct cert_request req;
	struct error err = {{0}};
	char path[256];
	EVP_PKEY *key;
	X509 *cert = NULL;

	cert_request_init(&req, profile);
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(cert_request_set_product_cn(&req, PAN_HOST, &err), 0);
	assert_int_equal(cert_request_set_key(&req, key, &err), 0);
	if (cert_issue(&req, issuer, issuer != NULL ? issuer_key : key, &cert,
	               &err) != 0)
		fail_msg("cert_issue: %s", err.msg);
	cert_request_free(&req);
	snprintf(path, sizeof(path), "%s/ca/%s.key", dir, name);
	assert_int_equal(key_save(key, path, PASS, strlen(PASS), &err), 0);
	snprintf(path, sizeof(path), "%s/ca/%s.crt", dir, name);
	assert_int_equal(cert_save_pem(cert, path, &err), 0);
	*keyp = key;
	return cert;
}

static int
setup(void **state)
{
	struct error err = {{0}};
	char path[128];
	EVP_PKEY *root_key, *node_key;

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_signer.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/ca", tmpdir);
	if (dir_create(path, 0700, &err) == -1)
		return -1;
	if (proc_log_open(PAN_HOST, "test", tmpdir, false, &err) == -1)
		return -1;
	root_cert = make_ca(tmpdir, CERT_PROFILE_ROOT_CA, "root-ca", NULL, NULL,
	                    &root_key);
	node_cert = make_ca(tmpdir, CERT_PROFILE_NODE_CA, "node-ca", root_cert,
	                    root_key, &node_key);
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(node_key);
	signer_pid = -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	if (signer_pid > 0)
		proc_stop(signer_pid, "ca-signer", 5000, NULL);
	signer_pid = -1;
	X509_free(root_cert);
	X509_free(node_cert);
	log_close();
	return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
spawn(void)
{
	struct error err = {{0}};

	if (signer_spawn(tmpdir, PAN_HOST, PASS, strlen(PASS), NULL, &signer_pid,
	                 &err) != 0)
		fail_msg("signer_spawn: %s", err.msg);
	assert_true(signer_pid > 0);
}

/* A DER CSR for a fresh key with subject CN=cn. */
static uint8_t *
make_csr(const char *cn, size_t *len)
{
	struct error err = {{0}};
	EVP_PKEY *key;
	X509_REQ *req;
	uint8_t *der = NULL;

	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_non_null(req = csr_create(key, cn, NULL, 0, &err));
	assert_int_equal(csr_to_der(req, &der, len), 0);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return der;
}

/* A CSR csr_create() would refuse to make: key, subject as given. */
static uint8_t *
make_raw_csr(EVP_PKEY *key, const char *cn, const char *org, size_t *len)
{
	X509_REQ *req;
	X509_NAME *name;
	unsigned char *der = NULL, *copy;
	int n;

	assert_non_null(req = X509_REQ_new());
	name = X509_REQ_get_subject_name(req);
	if (org != NULL)
		assert_true(X509_NAME_add_entry_by_txt(
		    name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1,
		    -1, 0));
	assert_true(X509_NAME_add_entry_by_txt(
	    name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0));
	assert_true(X509_REQ_set_pubkey(req, key));
	assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
	assert_true((n = i2d_X509_REQ(req, &der)) > 0);
	assert_non_null(copy = malloc((size_t)n));
	memcpy(copy, der, (size_t)n);
	OPENSSL_free(der);
	X509_REQ_free(req);
	*len = (size_t)n;
	return copy;
}

static void
verify_chain(X509 *leaf, X509 *intermediate, unsigned purpose)
{
	struct error err = {{0}};
	STACK_OF(X509) *untrusted = sk_X509_new_null(),
	               *anchors = sk_X509_new_null();

	assert_non_null(untrusted);
	assert_non_null(anchors);
	if (intermediate != NULL)
		sk_X509_push(untrusted, intermediate);
	sk_X509_push(anchors, root_cert);
	if (chain_verify(leaf, untrusted, anchors, purpose, NULL, &err) != 0)
		fail_msg("chain_verify: %s", err.msg);
	sk_X509_free(untrusted);
	sk_X509_free(anchors);
}

static void
expect_cn(X509 *x, const char *cn)
{
	char got[CERT_CN_BUF];

	assert_int_equal(cert_subject_cn(x, got, sizeof(got), NULL), 0);
	assert_string_equal(got, cn);
}

static char *
log_text(void)
{
	char path[128];
	size_t len;

	snprintf(path, sizeof(path), "%s/%s.log", tmpdir, PAN_HOST);
	return (char *)file_read(path, 1 << 22, &len, NULL);
}

/* Sign and expect success. */
static X509 *
sign_ok(struct signer *s, const char *profile, const char *issuer,
        const char *cn, const char *host, int64_t validity)
{
	struct error err = {{0}};
	uint8_t *der;
	size_t len;
	X509 *x = NULL;

	der = make_csr(cn, &len);
	if (signer_sign(s, profile, issuer, der, len, host, validity,
	                "http://psn1:2560/ocsp", &x, &err) != 0)
		fail_msg("signer_sign %s by %s: %s", profile, issuer, err.msg);
	free(der);
	assert_non_null(x);
	return x;
}

/* Sign and expect a refusal whose text holds want. */
static void
sign_refused(struct signer *s, const char *profile, const char *issuer,
             const uint8_t *der, size_t len, const char *host, int64_t validity,
             const char *want)
{
	struct error err = {{0}};
	X509 *x = NULL;

	assert_int_equal(signer_sign(s, profile, issuer, der, len, host,
	                             validity, NULL, &x, &err),
	                 -1);
	assert_null(x);
	if (strstr(err.msg, want) == NULL)
		fail_msg("refusal \"%s\" does not say \"%s\"", err.msg, want);
}

static void
test_sign(void **state)
{
	struct error err = {{0}};
	struct signer *s;
	struct stat sb;
	char path[128], *text;
	void *ctx;
	X509 *x;
	time_t nb, na;

	(void)state;
	spawn();
	/* The socket is the owner's alone. */
	snprintf(path, sizeof(path), "%s/signer.sock", tmpdir);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);

	assert_non_null(ctx = zmq_ctx_new());
	assert_non_null(s = signer_connect(ctx, tmpdir, &err));

	/* PSN: Endpoint Sub CA by the Node CA. */
	x = sign_ok(s, "endpoint-sub-ca", "node-ca",
	            "Certificate Services Endpoint Sub CA - psn1", "psn1", 0);
	expect_cn(x, "Certificate Services Endpoint Sub CA - psn1");
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x),
	                               X509_get_subject_name(node_cert)),
	                 0);
	verify_chain(x, node_cert, CHAIN_PURPOSE_ANY);
	X509_free(x);

	/* SAN: Node CA by the Root CA. */
	x = sign_ok(s, "node-ca", "root-ca",
	            "Certificate Services Node CA - san1", "san1", 0);
	expect_cn(x, "Certificate Services Node CA - san1");
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x),
	                               X509_get_subject_name(root_cert)),
	                 0);
	verify_chain(x, NULL, CHAIN_PURPOSE_ANY);
	X509_free(x);

	/* Legacy hierarchy: OCSP responder by the Node CA, with validity. */
	x = sign_ok(s, "ocsp-responder", "node-ca",
	            "Certificate Services OCSP Responder - psn1", "psn1",
	            86400);
	verify_chain(x, node_cert, CHAIN_PURPOSE_OCSP_SIGN);
	assert_int_equal(cert_not_before(x, &nb, &err), 0);
	assert_int_equal(cert_not_after(x, &na, &err), 0);
	assert_int_equal(na - nb, 86400);
	X509_free(x);

	/* Every issuance is logged in ca-service-cert, with its serial. */
	assert_non_null(text = log_text());
	assert_non_null(strstr(text, "ca-signer["));
	assert_non_null(strstr(text, "ca-service-cert INFO issued "
	                             "endpoint-sub-ca certificate serial "));
	assert_non_null(strstr(text, "subject CN=Certificate Services Node CA "
	                             "- san1 issuer CN=Certificate Services "
	                             "Root CA - pan1"));
	free(text);

	signer_close(s);
	zmq_ctx_term(ctx);
}

static void
test_refusals(void **state)
{
	struct error err = {{0}};
	struct signer *s;
	void *ctx;
	uint8_t *der, *bad;
	size_t len, blen;
	EVP_PKEY *weak, *key;
	X509 *x;
	char *text;

	(void)state;
	spawn();
	assert_non_null(ctx = zmq_ctx_new());
	assert_non_null(s = signer_connect(ctx, tmpdir, &err));

	/* The CN must be the profile's CN for the host. */
	der = make_csr("Certificate Services Endpoint Sub CA - psn2", &len);
	sign_refused(s, "endpoint-sub-ca", "node-ca", der, len, "psn1", 0,
	             "expected \"Certificate Services Endpoint Sub CA - "
	             "psn1\"");
	free(der);
	der = make_csr("Certificate Services Node CA - psn1", &len);
	sign_refused(s, "endpoint-sub-ca", "node-ca", der, len, "psn1", 0,
	             "CSR names CN");
	free(der);

	/* Each issuer signs only what the hierarchy gives it. */
	der = make_csr("Certificate Services Endpoint Sub CA - psn1", &len);
	sign_refused(s, "endpoint-sub-ca", "root-ca", der, len, "psn1", 0,
	             "root-ca may not sign a endpoint-sub-ca certificate");
	free(der);
	der = make_csr("Certificate Services Node CA - san1", &len);
	sign_refused(s, "node-ca", "node-ca", der, len, "san1", 0,
	             "node-ca may not sign a node-ca certificate");
	sign_refused(s, "root-ca", "root-ca", der, len, "san1", 0,
	             "may not sign");
	sign_refused(s, "tls-server", "node-ca", der, len, "san1", 0,
	             "may not sign");
	sign_refused(s, "node-ca", "evil-ca", der, len, "san1", 0,
	             "unknown issuer");
	sign_refused(s, "superuser", "root-ca", der, len, "san1", 0,
	             "unknown certificate profile");
	/* Host names and validity are checked too. */
	sign_refused(s, "node-ca", "root-ca", der, len, "san_1!", 0,
	             "host name");
	sign_refused(s, "node-ca", "root-ca", der, len, "san1", -1, "validity");
	sign_refused(s, "node-ca", "root-ca", der, len, "san1",
	             (int64_t)100 * 365 * 86400, "validity");

	/* Garbage, empty, and a CSR whose signature is broken. */
	sign_refused(s, "node-ca", "root-ca", (const uint8_t *)"garbage", 7,
	             "san1", 0, "CSR:");
	sign_refused(s, "node-ca", "root-ca", NULL, 0, "san1", 0, "no CSR");
	assert_non_null(bad = malloc(len));
	memcpy(bad, der, len);
	bad[len - 2] ^= 0x01; /* inside the signature value */
	sign_refused(s, "node-ca", "root-ca", bad, len, "san1", 0, "CSR:");
	free(bad);
	free(der);

	/* A weak key, however well the CSR is made. */
	assert_non_null(weak = EVP_RSA_gen(1024));
	der = make_raw_csr(weak, "Certificate Services Node CA - san1", NULL,
	                   &len);
	sign_refused(s, "node-ca", "root-ca", der, len, "san1", 0, "CSR:");
	free(der);
	EVP_PKEY_free(weak);

	/* Extra subject attributes are dropped: only the product CN. */
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	der = make_raw_csr(key, "Certificate Services Node CA - san1",
	                   "Evil Corp", &blen);
	assert_int_equal(signer_sign(s, "node-ca", "root-ca", der, blen, "san1",
	                             0, NULL, &x, &err),
	                 0);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
	expect_cn(x, "Certificate Services Node CA - san1");
	X509_free(x);
	free(der);
	EVP_PKEY_free(key);

	/* Still serving after all that. */
	x = sign_ok(s, "endpoint-sub-ca", "node-ca",
	            "Certificate Services Endpoint Sub CA - psn1", "psn1", 0);
	X509_free(x);
	assert_non_null(text = log_text());
	assert_non_null(strstr(text,
	                       "ca-service WARN refused a endpoint-sub-ca "
	                       "certificate by root-ca for psn1"));
	free(text);
	signer_close(s);
	zmq_ctx_term(ctx);
}

/* Send raw frames on a REQ socket and expect an Error back. */
static void
raw_expect_error(void *ctx, const char *endpoint, const void *a, size_t alen,
                 const void *b, size_t blen)
{
	struct error err = {{0}};
	Iselab__Envelope *env;
	void *req;
	int timeout = 5000, zero = 0;

	assert_non_null(req = zmq_socket(ctx, ZMQ_REQ));
	zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof(zero));
	assert_int_equal(zmq_connect(req, endpoint), 0);
	assert_int_equal(zmq_send(req, a, alen, b != NULL ? ZMQ_SNDMORE : 0),
	                 (int)alen);
	if (b != NULL)
		assert_int_equal(zmq_send(req, b, blen, 0), (int)blen);
	if ((env = proc_recv(req, NULL, NULL, &err)) == NULL)
		fail_msg("no answer to a bad message: %s", err.msg);
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_ERROR);
	assert_int_equal(env->error->code,
	                 ISELAB__ERROR__CODE__ERROR_BAD_REQUEST);
	msg_free(env);
	zmq_close(req);
}

static void
test_bad_framing(void **state)
{
	struct error err = {{0}};
	struct signer *s;
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	char endpoint[PROC_ENDPOINT_MAX + 64];
	uint8_t *buf;
	size_t len;
	void *ctx;
	X509 *x;

	(void)state;
	spawn();
	assert_non_null(ctx = zmq_ctx_new());
	assert_int_equal(proc_ipc_endpoint(endpoint, sizeof(endpoint), tmpdir,
	                                   SIGNER_SOCKET_NAME, &err),
	                 0);
	raw_expect_error(ctx, endpoint, "\xff\xff\xff\xff", 4, NULL, 0);
	raw_expect_error(ctx, endpoint, "a", 1, "b", 1);
	raw_expect_error(ctx, endpoint, "", 0, NULL, 0);
	/* A well-formed envelope that is not a sign request. */
	msg_init(&env, 5, "pan1");
	env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	assert_non_null(buf = msg_pack(&env, &len, &err));
	raw_expect_error(ctx, endpoint, buf, len, NULL, 0);
	free(buf);

	/* The signer is alive and well. */
	assert_int_equal(kill(signer_pid, 0), 0);
	assert_non_null(s = signer_connect(ctx, tmpdir, &err));
	x = sign_ok(s, "node-ca", "root-ca",
	            "Certificate Services Node CA - san1", "san1", 0);
	X509_free(x);
	signer_close(s);
	zmq_ctx_term(ctx);
}

static void
test_timeout_recovers(void **state)
{
	struct error err = {{0}};
	struct signer *s;
	void *ctx;
	uint8_t *der;
	size_t len;
	X509 *x = NULL;
	int64_t t0;

	(void)state;
	spawn();
	assert_non_null(ctx = zmq_ctx_new());
	assert_non_null(s = signer_connect(ctx, tmpdir, &err));
	signer_set_timeout(s, 300);
	/* A signer that cannot answer: bounded wait, clear error. */
	assert_int_equal(kill(signer_pid, SIGSTOP), 0);
	der = make_csr("Certificate Services Node CA - san1", &len);
	t0 = time_mono_ms();
	assert_int_equal(signer_sign(s, "node-ca", "root-ca", der, len, "san1",
	                             0, NULL, &x, &err),
	                 -1);
	assert_true(time_mono_ms() - t0 < 3000);
	assert_non_null(strstr(err.msg, "did not answer within 300 ms"));
	assert_int_equal(kill(signer_pid, SIGCONT), 0);
	/* The next call works on a fresh socket (no EFSM). */
	signer_set_timeout(s, 10000);
	assert_int_equal(signer_sign(s, "node-ca", "root-ca", der, len, "san1",
	                             0, NULL, &x, &err),
	                 0);
	X509_free(x);
	free(der);
	signer_close(s);
	zmq_ctx_term(ctx);
}

static void
test_sigterm(void **state)
{
	char path[128], *text;
	int status;

	(void)state;
	spawn();
	snprintf(path, sizeof(path), "%s/signer.sock", tmpdir);
	assert_true(file_exists(path));
	/* SIGINT from a terminal is the main process's business. */
	assert_int_equal(kill(signer_pid, SIGINT), 0);
	usleep(100000);
	assert_int_equal(kill(signer_pid, 0), 0);
	assert_int_equal(kill(signer_pid, SIGTERM), 0);
	assert_int_equal(waitpid(signer_pid, &status, 0), signer_pid);
	signer_pid = -1;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(file_exists(path));
	assert_non_null(text = log_text());
	assert_non_null(strstr(text, "CA signer stopping: 0 issued"));
	free(text);
}

static void
test_spawn_fails(void **state)
{
	struct error err = {{0}};
	struct signer *s;
	char path[128];
	pid_t pid = 0;
	void *ctx;
	uint8_t *der;
	size_t len;
	X509 *x = NULL;

	(void)state;
	/* Wrong passphrase: the reason comes back, nothing keeps running. */
	assert_int_equal(
	    signer_spawn(tmpdir, PAN_HOST, "wrong passphrase", 16, NULL, &pid, &err),
	    -1);
	assert_int_equal(pid, -1);
	assert_non_null(strstr(err.msg, "passphrase"));
	snprintf(path, sizeof(path), "%s/signer.sock", tmpdir);
	assert_false(file_exists(path));

	/* Two signers on one data directory: the second is refused. */
	spawn();
	assert_int_equal(
	    signer_spawn(tmpdir, PAN_HOST, PASS, strlen(PASS), NULL, &pid, &err), -1);
	assert_non_null(strstr(err.msg, "in use"));
	assert_int_equal(kill(signer_pid, 0), 0);
	assert_int_equal(proc_stop(signer_pid, "ca-signer", 5000, &err), 0);
	signer_pid = -1;

	/* A SAN holds only its Node CA: root-ca requests are refused. */
	snprintf(path, sizeof(path), "%s/ca/root-ca.key", tmpdir);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/ca/root-ca.crt", tmpdir);
	assert_int_equal(unlink(path), 0);
	spawn();
	assert_non_null(ctx = zmq_ctx_new());
	assert_non_null(s = signer_connect(ctx, tmpdir, &err));
	der = make_csr("Certificate Services Node CA - san2", &len);
	sign_refused(s, "node-ca", "root-ca", der, len, "san2", 0,
	             "holds no root-ca key");
	free(der);
	x = sign_ok(s, "endpoint-sub-ca", "node-ca",
	            "Certificate Services Endpoint Sub CA - psn1", "psn1", 0);
	X509_free(x);
	signer_close(s);
	zmq_ctx_term(ctx);
	assert_int_equal(proc_stop(signer_pid, "ca-signer", 5000, &err), 0);
	signer_pid = -1;

	/* A key without its certificate, then no CA at all. */
	snprintf(path, sizeof(path), "%s/ca/node-ca.crt", tmpdir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(
	    signer_spawn(tmpdir, PAN_HOST, PASS, strlen(PASS), NULL, &pid, &err), -1);
	assert_non_null(strstr(err.msg, "without"));
	snprintf(path, sizeof(path), "%s/ca/node-ca.key", tmpdir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(
	    signer_spawn(tmpdir, PAN_HOST, PASS, strlen(PASS), NULL, &pid, &err), -1);
	assert_non_null(strstr(err.msg, "no CA key"));

	/* Client arguments. */
	assert_null(signer_connect(NULL, tmpdir, &err));
	assert_int_equal(signer_sign(NULL, "node-ca", "root-ca", NULL, 0,
	                             "san1", 0, NULL, &x, &err),
	                 -1);
	signer_close(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_sign, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_framing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_recovers, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_sigterm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spawn_fails, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
