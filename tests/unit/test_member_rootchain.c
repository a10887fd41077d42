/*
 * member_rootchain: a service's side of a root CA chain renewal, taking
 * the hand-over copy of its new key (member_handover_take).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "keys.h"
#include "member_rootchain.h"
#include "node.h"
#include "util.h"
#include "tmpdir.h"

#define PASS    "correct horse battery staple"
#define PASSLEN (sizeof(PASS) - 1)

/* A certificate of key's public key: all X509_check_private_key() reads. */
static X509 *
cert_of(EVP_PKEY *key)
{
	X509 *x = X509_new();

	assert_non_null(x);
	assert_int_equal(X509_set_pubkey(x, key), 1);
	return x;
}

/* D/ca/NAME.key saved, then copied for process under secret. */
static void
hand_over(const char *name, const char *process, EVP_PKEY *key,
          const struct secret *s)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct error err;

	snprintf(from, sizeof(from), "%s/%s/%s.key", tmpdir, NODE_CA_DIR, name);
	assert_int_equal(key_save(key, from, PASS, PASSLEN, &err), 0);
	assert_int_equal(member_handover_path(tmpdir, name, process, to,
	                                      sizeof(to), &err),
	                 0);
	assert_int_equal(key_handover_copy(from, PASS, PASSLEN, to, s, &err),
	                 0);
}

static void
test_handover_take(void **state)
{
	struct secret own = {NULL, 0, 0}, other = {NULL, 0, 0};
	char dir[PATH_MAX], path[PATH_MAX];
	struct error err;
	EVP_PKEY *key, *wrong, *got;
	X509 *cert, *wrong_cert;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/%s", tmpdir, NODE_CA_DIR);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(secret_random(&own, KEY_HANDOVER_BYTES, &err), 0);
	assert_int_equal(secret_random(&other, KEY_HANDOVER_BYTES, &err), 0);
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_non_null(wrong = key_generate(KEY_EC_P256, &err));
	cert = cert_of(key);
	wrong_cert = cert_of(wrong);

	/* The key of its certificate: taken, and the copy is gone. */
	hand_over("est-server", "est", key, &own);
	got = member_handover_take(tmpdir, "est-server", "est", &own, cert,
	                           &err);
	if (got == NULL)
		fail_msg("member_handover_take: %s", err.msg);
	assert_int_equal(EVP_PKEY_eq(got, key), 1);
	EVP_PKEY_free(got);
	assert_int_equal(member_handover_path(tmpdir, "est-server", "est",
	                                      path, sizeof(path), &err),
	                 0);
	assert_int_equal(access(path, F_OK), -1);

	/* Not the key of the new certificate: refused, nothing returned. */
	hand_over("est-server", "est", key, &own);
	assert_null(member_handover_take(tmpdir, "est-server", "est", &own,
	                                 wrong_cert, &err));
	assert_non_null(strstr(err.msg, "is not the key of the new "
	                                "est-server certificate"));

	/* Another process's secret, or no copy at all. */
	hand_over("est-server", "est", key, &own);
	assert_null(member_handover_take(tmpdir, "est-server", "est", &other,
	                                 NULL, &err));
	assert_null(member_handover_take(tmpdir, "ocsp-responder", "ocsp",
	                                 &own, NULL, &err));
	assert_non_null(strstr(err.msg, "no hand-over copy"));

	/* Without a certificate: the key as it is. */
	got = member_handover_take(tmpdir, "est-server", "est", &own, NULL,
	                           &err);
	assert_non_null(got);
	EVP_PKEY_free(got);

	X509_free(cert);
	X509_free(wrong_cert);
	EVP_PKEY_free(key);
	EVP_PKEY_free(wrong);
	secret_wipe(&own);
	secret_wipe(&other);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_handover_take),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
