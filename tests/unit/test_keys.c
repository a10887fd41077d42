/*
 * Unit tests for common/keys.c: generation of every key type, encrypted
 * PKCS#8 at rest (round trip, wrong passphrase, truncated, unencrypted and
 * legacy-encrypted files refused), passphrase sources, the strength policy
 * and the key identifier against what the openssl CLI computes.
 *
 * Fixtures in $UNIT_DATA_DIR were made with the openssl CLI (see
 * tests/unit/data/README).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keys.h"
#include "util.h"
#include "tmpdir.h"

#define PASS    "correct-horse"
#define PASSLEN (sizeof(PASS) - 1)


static void
tmp_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void
fixture_path(char *buf, size_t len, const char *name)
{
	const char *dir = getenv("UNIT_DATA_DIR");

	if (dir == NULL)
		fail_msg("UNIT_DATA_DIR is not set (run through meson test)");
	snprintf(buf, len, "%s/%s", dir, name);
}

static void
write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
	FILE *f;

	(void)unlink(path);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* Error message contains want. */
static void
assert_err(const struct error *err, const char *want)
{
	if (strstr(err->msg, want) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err->msg,
		         want);
}

static void
test_type_names(void **state)
{
	enum key_type t, back;
	struct error err;

	(void)state;
	for (t = 0; t < KEY_TYPE_COUNT; t++) {
		assert_int_equal(
		    key_type_from_name(key_type_name(t), &back, &err), 0);
		assert_int_equal(back, t);
	}
	assert_int_equal(key_type_from_name("EC:P384", &back, &err), 0);
	assert_int_equal(back, KEY_EC_P384);
	assert_int_equal(key_type_from_name("rsa:1024", &back, &err), -1);
	assert_err(&err, "rsa:1024");
	assert_int_equal(key_type_from_name("", &back, &err), -1);
	assert_int_equal(key_type_from_name(NULL, &back, NULL), -1);
	assert_string_equal(key_type_name(KEY_TYPE_COUNT), "unknown");
}

/* Named-curve OID in the SPKI, not explicit parameters. */
static void
assert_named_curve(EVP_PKEY *key)
{
	X509_PUBKEY *xpk = NULL;
	X509_ALGOR *alg;
	const void *pval;
	int ptype;

	assert_int_equal(X509_PUBKEY_set(&xpk, key), 1);
	assert_int_equal(X509_PUBKEY_get0_param(NULL, NULL, NULL, &alg, xpk),
	                 1);
	X509_ALGOR_get0(NULL, &ptype, &pval, alg);
	assert_int_equal(ptype, V_ASN1_OBJECT);
	X509_PUBKEY_free(xpk);
}

static void
test_generate(void **state)
{
	static const struct {
		enum key_type type;
		int base_id;
		int bits;
		const char *desc;
		int md;
	} cases[] = {
	    {KEY_RSA_2048, EVP_PKEY_RSA, 2048, "RSA 2048", NID_sha256},
	    {KEY_RSA_3072, EVP_PKEY_RSA, 3072, "RSA 3072", NID_sha256},
	    {KEY_RSA_4096, EVP_PKEY_RSA, 4096, "RSA 4096", NID_sha256},
	    {KEY_EC_P256, EVP_PKEY_EC, 256, "EC P-256", NID_sha256},
	    {KEY_EC_P384, EVP_PKEY_EC, 384, "EC P-384", NID_sha384},
	};
	unsigned char pub[256];
	char desc[64];
	struct error err;
	EVP_PKEY *key;
	BIGNUM *e;
	size_t i, len;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		key = key_generate(cases[i].type, &err);
		assert_non_null(key);
		assert_int_equal(EVP_PKEY_get_base_id(key), cases[i].base_id);
		assert_int_equal(EVP_PKEY_get_bits(key), cases[i].bits);
		assert_int_equal(key_check_strength(key, &err), 0);
		key_describe(key, desc, sizeof(desc));
		assert_string_equal(desc, cases[i].desc);
		assert_int_equal(EVP_MD_get_type(key_signature_md(key)),
		                 cases[i].md);
		if (cases[i].base_id == EVP_PKEY_RSA) {
			e = NULL;
			assert_int_equal(EVP_PKEY_get_bn_param(
			                     key, OSSL_PKEY_PARAM_RSA_E, &e),
			                 1);
			assert_true(BN_is_word(e, 65537));
			BN_free(e);
		} else {
			/* Uncompressed point: 0x04 || X || Y. */
			assert_int_equal(EVP_PKEY_get_octet_string_param(
			                     key, OSSL_PKEY_PARAM_PUB_KEY, pub,
			                     sizeof(pub), &len),
			                 1);
			assert_int_equal(pub[0], 0x04);
			assert_int_equal(len,
			                 1 + 2 * ((cases[i].bits + 7) / 8));
			assert_named_curve(key);
		}
		EVP_PKEY_free(key);
	}
	assert_null(key_generate(KEY_TYPE_COUNT, &err));
	assert_null(key_generate((enum key_type) - 1, NULL));
}

/*
 * The saved file uses exactly the PBES2 parameters keys.h promises, with
 * iter PBKDF2 iterations.
 */
static void
assert_pbes2_params(const char *path, long iter)
{
	const X509_ALGOR *alg;
	const ASN1_OBJECT *oid;
	const void *pval;
	PBE2PARAM *pbe2;
	PBKDF2PARAM *kdf;
	X509_SIG *p8;
	FILE *f;
	int ptype;

	assert_non_null(f = fopen(path, "r"));
	assert_non_null(p8 = PEM_read_PKCS8(f, NULL, NULL, NULL));
	fclose(f);
	X509_SIG_get0(p8, &alg, NULL);
	X509_ALGOR_get0(&oid, &ptype, &pval, alg);
	assert_int_equal(OBJ_obj2nid(oid), NID_pbes2);
	assert_non_null(pbe2 =
	                    ASN1_item_unpack(pval, ASN1_ITEM_rptr(PBE2PARAM)));
	X509_ALGOR_get0(&oid, &ptype, &pval, pbe2->encryption);
	assert_int_equal(OBJ_obj2nid(oid), NID_aes_256_cbc);
	X509_ALGOR_get0(&oid, &ptype, &pval, pbe2->keyfunc);
	assert_int_equal(OBJ_obj2nid(oid), NID_id_pbkdf2);
	assert_non_null(
	    kdf = ASN1_item_unpack(pval, ASN1_ITEM_rptr(PBKDF2PARAM)));
	assert_non_null(kdf->prf);
	X509_ALGOR_get0(&oid, NULL, NULL, kdf->prf);
	assert_int_equal(OBJ_obj2nid(oid), NID_hmacWithSHA256);
	assert_int_equal(ASN1_INTEGER_get(kdf->iter), iter);
	PBKDF2PARAM_free(kdf);
	PBE2PARAM_free(pbe2);
	X509_SIG_free(p8);
}

static void
test_save_load(void **state)
{
	const enum key_type types[] = {KEY_EC_P256, KEY_RSA_2048};
	char path[PATH_MAX];
	struct error err;
	struct stat st;
	EVP_PKEY *key, *back;
	uint8_t *buf;
	size_t i, len;

	(void)state;
	assert_int_equal(unsetenv(KEY_KDF_ITER_ENV), 0);
	for (i = 0; i < ARRAY_SIZE(types); i++) {
		tmp_path(path, sizeof(path), "roundtrip.key");
		assert_non_null(key = key_generate(types[i], &err));
		assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), 0);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		assert_non_null(buf = file_read(path, 65536, &len, &err));
		assert_non_null(strstr(
		    (char *)buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
		free(buf);
		assert_pbes2_params(path, 600000);
		back = key_load(path, PASS, PASSLEN, &err);
		if (back == NULL)
			fail_msg("key_load: %s", err.msg);
		assert_int_equal(EVP_PKEY_eq(key, back), 1);
		EVP_PKEY_free(back);
		EVP_PKEY_free(key);
	}
}

/*
 * KEY_KDF_ITER_ENV sets the count of the keys saved (a test lab's fast
 * starts); a count outside 1000..10000000 or not a number is an error that
 * writes nothing; empty means the default.
 */
static void
test_kdf_iterations_env(void **state)
{
	const char *bad[] = {"999", "0", "-1000", "10000001", "abc", "1000x",
	                     " 1000", "+1000", "99999999999999999999"};
	char path[PATH_MAX], other[PATH_MAX];
	struct error err;
	struct stat st;
	EVP_PKEY *key, *back;
	size_t i;

	(void)state;
	tmp_path(path, sizeof(path), "kdf.key");
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(setenv(KEY_KDF_ITER_ENV, "1000", 1), 0);
	assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), 0);
	assert_pbes2_params(path, 1000);
	assert_non_null(back = key_load(path, PASS, PASSLEN, &err));
	assert_int_equal(EVP_PKEY_eq(key, back), 1);
	EVP_PKEY_free(back);
	assert_int_equal(setenv(KEY_KDF_ITER_ENV, "", 1), 0);
	assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), 0);
	assert_pbes2_params(path, 600000);
	tmp_path(other, sizeof(other), "kdf-bad.key");
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(setenv(KEY_KDF_ITER_ENV, bad[i], 1), 0);
		assert_int_equal(key_save(key, other, PASS, PASSLEN, &err), -1);
		assert_err(&err, KEY_KDF_ITER_ENV);
		assert_err(&err, "key not saved");
		assert_int_equal(stat(other, &st), -1);
		/* A file already there stays as it was. */
		assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), -1);
		assert_pbes2_params(path, 600000);
	}
	assert_int_equal(unsetenv(KEY_KDF_ITER_ENV), 0);
	EVP_PKEY_free(key);
}

/*
 * A hand-over copy: readable under its secret only, once (the file goes),
 * and nothing without a secret or a copy.
 */
static void
test_handover(void **state)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct secret mine = {NULL, 0, 0}, other = {NULL, 0, 0};
	struct error err;
	EVP_PKEY *key, *back;

	(void)state;
	tmp_path(from, sizeof(from), "handover-src.key");
	tmp_path(to, sizeof(to), "handover-dst.handover");
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(key_save(key, from, PASS, PASSLEN, &err), 0);
	assert_int_equal(secret_random(&mine, KEY_HANDOVER_BYTES, &err), 0);
	assert_int_equal(secret_random(&other, KEY_HANDOVER_BYTES, &err), 0);
	/* No secret, or a wrong passphrase for the source: refused. */
	assert_int_equal(key_handover_copy(from, PASS, PASSLEN, to, NULL, &err),
	                 -1);
	assert_err(&err, "no hand-over secret");
	assert_int_equal(
	    key_handover_copy(from, "wrong", 5, to, &mine, &err), -1);
	assert_int_equal(access(to, F_OK), -1);
	assert_int_equal(
	    key_handover_copy(from, PASS, PASSLEN, to, &mine, &err), 0);
	/* Another service's secret cannot read it, and leaves it there. */
	assert_null(key_handover_take(to, &other, &err));
	assert_err(&err, "wrong passphrase");
	assert_int_equal(access(to, F_OK), 0);
	assert_null(key_handover_take(to, NULL, &err));
	assert_non_null(back = key_handover_take(to, &mine, &err));
	assert_int_equal(EVP_PKEY_eq(key, back), 1);
	/* Read once. */
	assert_int_equal(access(to, F_OK), -1);
	assert_null(key_handover_take(to, &mine, &err));
	assert_err(&err, "no hand-over copy");
	EVP_PKEY_free(back);
	EVP_PKEY_free(key);
	secret_wipe(&mine);
	secret_wipe(&other);
}

static void
test_wrong_passphrase(void **state)
{
	const char *wrong[] = {"correct-horsf", "Correct-horse", "x",
	                       "correct-horse-battery"};
	char path[PATH_MAX];
	struct error err;
	EVP_PKEY *key;
	size_t i;

	(void)state;
	tmp_path(path, sizeof(path), "wrongpass.key");
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), 0);
	for (i = 0; i < ARRAY_SIZE(wrong); i++) {
		error_clear(&err);
		assert_null(key_load(path, wrong[i], strlen(wrong[i]), &err));
		assert_err(&err, "wrong passphrase or corrupt key file");
		assert_err(&err, path);
		assert_int_equal(ERR_peek_error(), 0);
	}
	/* The same passphrase minus its last byte (passlen is honoured). */
	assert_null(key_load(path, PASS, PASSLEN - 1, &err));
	assert_err(&err, "wrong passphrase");
	assert_null(key_load(path, NULL, 0, &err));
	EVP_PKEY_free(key);
}

static void
test_corrupt_files(void **state)
{
	char path[PATH_MAX], bad[PATH_MAX];
	struct error err;
	EVP_PKEY *key;
	uint8_t *buf;
	size_t len;
	char *mid;

	(void)state;
	tmp_path(path, sizeof(path), "good.key");
	tmp_path(bad, sizeof(bad), "bad.key");
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(key_save(key, path, PASS, PASSLEN, &err), 0);
	assert_non_null(buf = file_read(path, 65536, &len, &err));

	/* Truncated in the middle of the base64. */
	write_file(bad, buf, len / 2, 0600);
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, "corrupt key file");
	assert_err(&err, bad);

	/* Truncated just before the END line's last dashes. */
	write_file(bad, buf, len - 6, 0600);
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, "corrupt key file");

	/* Empty. */
	write_file(bad, "", 0, 0600);
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, "corrupt key file");

	/* Garbage. */
	write_file(bad, "\x01\x02garbage\xff\n", 11, 0600);
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, "corrupt key file");

	/* One base64 character of the ciphertext changed. */
	mid = (char *)buf + len - 60;
	*mid = *mid == 'A' ? 'B' : 'A';
	write_file(bad, buf, len, 0600);
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, "wrong passphrase or corrupt key file");

	/* Missing file. */
	tmp_path(bad, sizeof(bad), "missing.key");
	assert_null(key_load(bad, PASS, PASSLEN, &err));
	assert_err(&err, bad);
	free(buf);
	EVP_PKEY_free(key);
}

static void
test_unencrypted_refused(void **state)
{
	char path[PATH_MAX];
	struct error err;
	EVP_PKEY *key;
	FILE *f;

	(void)state;
	fixture_path(path, sizeof(path), "key-unencrypted.pem");
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "unencrypted");
	assert_err(&err, "encrypted at rest");
	fixture_path(path, sizeof(path), "key-legacy-ec.pem");
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "unencrypted");

	/* One written here by PEM_write_PrivateKey() without a cipher. */
	tmp_path(path, sizeof(path), "plain.key");
	assert_non_null(key = key_generate(KEY_RSA_2048, &err));
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(
	    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "unencrypted");
	EVP_PKEY_free(key);

	/* A certificate is not a key. */
	fixture_path(path, sizeof(path), "ca-ec.crt");
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "CERTIFICATE");
}

static void
test_legacy_and_cli_keys(void **state)
{
	char path[PATH_MAX];
	struct error err;
	EVP_PKEY *key, *plain;
	FILE *f;

	(void)state;
	/* PBE-SHA1-3DES: encrypted, but not the way we accept. */
	fixture_path(path, sizeof(path), "key-pbes1.pem");
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "not PBES2");

	/* 20 million iterations: refused before any is run. */
	fixture_path(path, sizeof(path), "key-hugeiter.pem");
	assert_null(key_load(path, PASS, PASSLEN, &err));
	assert_err(&err, "iteration count 20000000");

	/* What `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes loads. */
	fixture_path(path, sizeof(path), "key-openssl-cli.pem");
	key = key_load(path, PASS, PASSLEN, &err);
	if (key == NULL)
		fail_msg("key_load: %s", err.msg);
	fixture_path(path, sizeof(path), "key-unencrypted.pem");
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(plain = PEM_read_PrivateKey(f, NULL, NULL, NULL));
	fclose(f);
	assert_int_equal(EVP_PKEY_eq(key, plain), 1);
	EVP_PKEY_free(plain);
	EVP_PKEY_free(key);
}

static void
test_save_refuses_weak_passphrase(void **state)
{
	char path[PATH_MAX];
	struct error err;
	EVP_PKEY *key;

	(void)state;
	tmp_path(path, sizeof(path), "weakpass.key");
	assert_non_null(key = key_generate(KEY_EC_P256, &err));
	assert_int_equal(key_save(key, path, "short", 5, &err), -1);
	assert_err(&err, "passphrase");
	assert_int_equal(key_save(key, path, NULL, 0, &err), -1);
	assert_false(file_exists(path));
	EVP_PKEY_free(key);
}

static void
test_passphrase_file(void **state)
{
	char path[PATH_MAX], big[PASSPHRASE_MAX + 2];
	struct error err;
	char *pass;
	size_t len;

	(void)state;
	tmp_path(path, sizeof(path), "pass");

	write_file(path, "secret-passphrase\n", 18, 0600);
	assert_non_null(pass = passphrase_load(path, NULL, &len, &err));
	assert_string_equal(pass, "secret-passphrase");
	assert_int_equal(len, 17);
	passphrase_free(pass, len);

	write_file(path, "secret-passphrase\r\n", 19, 0400);
	assert_non_null(pass = passphrase_load(path, NULL, &len, &err));
	assert_string_equal(pass, "secret-passphrase");
	passphrase_free(pass, len);

	/* Only one newline is removed. */
	write_file(path, "secret-passphrase\n\n", 19, 0600);
	assert_non_null(pass = passphrase_load(path, NULL, &len, &err));
	assert_string_equal(pass, "secret-passphrase\n");
	passphrase_free(pass, len);

	/* No newline at all. */
	write_file(path, "secret-passphrase", 17, 0600);
	assert_non_null(pass = passphrase_load(path, "UNSET_VAR", &len, &err));
	assert_int_equal(len, 17);
	passphrase_free(pass, len);

	/* Readable by group or others. */
	write_file(path, "secret-passphrase\n", 18, 0644);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, path);
	assert_err(&err, "0644");
	write_file(path, "secret-passphrase\n", 18, 0640);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, "group or others");

	/* Too short, the newline not counted. */
	write_file(path, "1234567\n", 8, 0600);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, "shorter than the minimum");
	assert_err(&err, path);
	write_file(path, "", 0, 0600);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, "shorter");

	/* Exactly the maximum, then one more. */
	memset(big, 'p', sizeof(big));
	write_file(path, big, PASSPHRASE_MAX, 0600);
	assert_non_null(pass = passphrase_load(path, NULL, &len, &err));
	assert_int_equal(len, PASSPHRASE_MAX);
	passphrase_free(pass, len);
	write_file(path, big, PASSPHRASE_MAX + 1, 0600);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, "longer than the maximum");

	/* A NUL byte. */
	write_file(path, "secret\0passphrase", 17, 0600);
	assert_null(passphrase_load(path, NULL, &len, &err));
	assert_err(&err, "NUL");

	/* Missing file: an error even when the environment has one. */
	assert_int_equal(setenv("TEST_KEYS_PASS", "env-passphrase", 1), 0);
	tmp_path(path, sizeof(path), "missing");
	assert_null(passphrase_load(path, "TEST_KEYS_PASS", &len, &err));
	assert_err(&err, path);

	/* A directory. */
	assert_null(passphrase_load(tmpdir, NULL, &len, &err));
	assert_null(passphrase_load(NULL, NULL, &len, &err));
	unsetenv("TEST_KEYS_PASS");
}

static void
test_passphrase_env(void **state)
{
	struct error err;
	char *pass;
	size_t len;

	(void)state;
	assert_int_equal(setenv("TEST_KEYS_PASS", "env-passphrase", 1), 0);
	assert_non_null(
	    pass = passphrase_load(NULL, "TEST_KEYS_PASS", &len, &err));
	assert_string_equal(pass, "env-passphrase");
	assert_int_equal(len, 14);
	passphrase_free(pass, len);

	assert_int_equal(setenv("TEST_KEYS_PASS", "short", 1), 0);
	assert_null(passphrase_load(NULL, "TEST_KEYS_PASS", &len, &err));
	assert_err(&err, "TEST_KEYS_PASS");
	assert_err(&err, "shorter than the minimum");

	assert_int_equal(setenv("TEST_KEYS_PASS", "", 1), 0);
	assert_null(passphrase_load(NULL, "TEST_KEYS_PASS", &len, &err));
	assert_err(&err, "TEST_KEYS_PASS");

	unsetenv("TEST_KEYS_PASS");
	assert_null(passphrase_load(NULL, "TEST_KEYS_PASS", &len, &err));
	assert_err(&err, "TEST_KEYS_PASS is not set");
	passphrase_free(NULL, 0);
}

static EVP_PKEY *
gen_rsa(unsigned int bits, unsigned long e)
{
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *key = NULL;
	BIGNUM *bn;

	assert_non_null(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL));
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits), 1);
	assert_non_null(bn = BN_new());
	assert_int_equal(BN_set_word(bn, e), 1);
	assert_int_equal(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, bn), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &key), 1);
	BN_free(bn);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static EVP_PKEY *
gen_ec_explicit(void)
{
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *key = NULL;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
	                                             (char *)"P-256", 0);
	params[1] = OSSL_PARAM_construct_utf8_string(
	    OSSL_PKEY_PARAM_EC_ENCODING, (char *)OSSL_PKEY_EC_ENCODING_EXPLICIT,
	    0);
	params[2] = OSSL_PARAM_construct_end();
	assert_non_null(ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL));
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_params(ctx, params), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &key), 1);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static void
test_strength(void **state)
{
	struct error err;
	EVP_PKEY *key;
	char desc[64];

	(void)state;
	key = gen_rsa(1024, 65537);
	assert_int_equal(key_check_strength(key, &err), -1);
	assert_string_equal(
	    err.msg, "RSA key of 1024 bits is below the minimum of 2048");
	key_describe(key, desc, sizeof(desc));
	assert_string_equal(desc, "RSA 1024");
	EVP_PKEY_free(key);

	key = gen_rsa(2048, 3);
	assert_int_equal(key_check_strength(key, &err), -1);
	assert_err(&err, "public exponent 3 is below the minimum");
	EVP_PKEY_free(key);

	assert_non_null(key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"));
	assert_int_equal(key_check_strength(key, &err), -1);
	assert_err(&err, "secp256k1");
	key_describe(key, desc, sizeof(desc));
	assert_string_equal(desc, "EC secp256k1");
	EVP_PKEY_free(key);

	assert_non_null(key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"));
	assert_int_equal(key_check_strength(key, &err), -1);
	assert_err(&err, "ED25519 keys are not accepted");
	EVP_PKEY_free(key);

	assert_non_null(key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521"));
	assert_int_equal(key_check_strength(key, &err), 0);
	key_describe(key, desc, sizeof(desc));
	assert_string_equal(desc, "EC P-521");
	assert_int_equal(EVP_MD_get_type(key_signature_md(key)), NID_sha512);
	EVP_PKEY_free(key);

	/* P-256, but written out as explicit parameters. */
	key = gen_ec_explicit();
	assert_int_equal(key_check_strength(key, &err), -1);
	assert_err(&err, "explicit curve parameters");
	EVP_PKEY_free(key);

	assert_int_equal(key_check_strength(NULL, &err), -1);
	key_describe(NULL, desc, sizeof(desc));
	assert_string_equal(desc, "none");
}

/* "35:2C:..." or "352C..." after the first ':' or at the line start. */
static void
parse_hex_id(const char *text, unsigned char out[KEY_ID_LEN])
{
	char hex[2 * KEY_ID_LEN + 1];
	size_t n = 0;
	const char *p;

	/* Skip the label ("Issuer Key Hash:", "Subject Key Identifier:"). */
	if ((p = strchr(text, '\n')) != NULL && p[1] != '\0' &&
	    strstr(text, "Subject Key Identifier") != NULL)
		text = p + 1;
	else if ((p = strstr(text, "Hash:")) != NULL)
		text = p + 5;
	for (p = text; *p != '\0' && n < sizeof(hex) - 1; p++) {
		if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
		    (*p >= 'A' && *p <= 'F'))
			hex[n++] = *p;
	}
	hex[n] = '\0';
	assert_int_equal(n, 2 * KEY_ID_LEN);
	assert_int_equal(hex_decode(hex, out, KEY_ID_LEN), KEY_ID_LEN);
}

static void
check_key_id_fixture(const char *crt, const char *ski, const char *ocsp)
{
	unsigned char id[KEY_ID_LEN], want[KEY_ID_LEN];
	char path[PATH_MAX];
	const ASN1_OCTET_STRING *skid;
	struct error err;
	uint8_t *text;
	size_t len;
	X509 *x;
	FILE *f;

	fixture_path(path, sizeof(path), crt);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_int_equal(key_id(X509_get0_pubkey(x), id, &err), 0);

	/* `openssl x509 -noout -ext subjectKeyIdentifier` */
	fixture_path(path, sizeof(path), ski);
	assert_non_null(text = file_read(path, 4096, &len, &err));
	parse_hex_id((char *)text, want);
	free(text);
	assert_memory_equal(id, want, KEY_ID_LEN);

	/* Issuer Key Hash of `openssl ocsp -req_text` */
	fixture_path(path, sizeof(path), ocsp);
	assert_non_null(text = file_read(path, 4096, &len, &err));
	parse_hex_id((char *)text, want);
	free(text);
	assert_memory_equal(id, want, KEY_ID_LEN);

	/* And the extension as libcrypto reads it. */
	assert_non_null(skid = X509_get0_subject_key_id(x));
	assert_int_equal(ASN1_STRING_length(skid), KEY_ID_LEN);
	assert_memory_equal(ASN1_STRING_get0_data(skid), id, KEY_ID_LEN);
	X509_free(x);
}

static void
test_key_id_fixtures(void **state)
{
	(void)state;
	check_key_id_fixture("ca-ec.crt", "ca-ec.ski.txt", "ca-ec.ocsp.txt");
	check_key_id_fixture("ca-rsa.crt", "ca-rsa.ski.txt", "ca-rsa.ocsp.txt");
}

/* Output of a shell command, or NULL when it fails. */
static int
run(const char *cmd, char *out, size_t len)
{
	size_t n;
	FILE *p;

	if ((p = popen(cmd, "r")) == NULL)
		return -1;
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	return pclose(p) == 0 ? 0 : -1;
}

/* A key made here, a certificate made for it by the openssl CLI. */
static void
test_key_id_cli(void **state)
{
	const enum key_type types[] = {KEY_EC_P384, KEY_RSA_2048};
	unsigned char id[KEY_ID_LEN], want[KEY_ID_LEN];
	char keyp[PATH_MAX], crtp[PATH_MAX], cmd[3 * PATH_MAX], out[1024];
	struct error err;
	EVP_PKEY *key;
	size_t i;
	FILE *f;

	(void)state;
	if (run("openssl version", out, sizeof(out)) == -1)
		skip();
	for (i = 0; i < ARRAY_SIZE(types); i++) {
		tmp_path(keyp, sizeof(keyp), "cli.key");
		tmp_path(crtp, sizeof(crtp), "cli.crt");
		assert_non_null(key = key_generate(types[i], &err));
		assert_non_null(f = fopen(keyp, "w"));
		assert_int_equal(
		    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
		fclose(f);
		snprintf(cmd, sizeof(cmd),
		         "openssl req -x509 -new -key %s -subj /CN=cli -days 1 "
		         "-out %s 2>&1 && openssl x509 -in %s -noout -ext "
		         "subjectKeyIdentifier",
		         keyp, crtp, crtp);
		if (run(cmd, out, sizeof(out)) == -1)
			fail_msg("%s: %s", cmd, out);
		parse_hex_id(out, want);
		assert_int_equal(key_id(key, id, &err), 0);
		assert_memory_equal(id, want, KEY_ID_LEN);
		EVP_PKEY_free(key);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_type_names),
	    cmocka_unit_test(test_generate),
	    cmocka_unit_test(test_save_load),
	    cmocka_unit_test(test_kdf_iterations_env),
	    cmocka_unit_test(test_wrong_passphrase),
	    cmocka_unit_test(test_corrupt_files),
	    cmocka_unit_test(test_unencrypted_refused),
	    cmocka_unit_test(test_legacy_and_cli_keys),
	    cmocka_unit_test(test_save_refuses_weak_passphrase),
	    cmocka_unit_test(test_passphrase_file),
	    cmocka_unit_test(test_passphrase_env),
	    cmocka_unit_test(test_handover),
	    cmocka_unit_test(test_strength),
	    cmocka_unit_test(test_key_id_fixtures),
	    cmocka_unit_test(test_key_id_cli),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
