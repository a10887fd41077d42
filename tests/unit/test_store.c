/*
 * Unit tests for common/store.c: the LMDB store of issued certificates.
 * Besides the API (put/get, indexes, status transitions, paging, schema
 * versions, bad input) this checks the two properties the rest of the lab
 * leans on: readers see consistent snapshots while a writer writes, and a
 * process killed at any moment leaves every acknowledged record intact and
 * the indexes in agreement with the records (the crash test).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "store.h"
#include "util.h"

/* Records in the paging test. */
#define PAGING_RECORDS 1000
/* Records the writer adds while readers read. */
#define CONCURRENT_RECORDS 300
/* Kill-and-reopen rounds in the crash test. */
#define CRASH_ROUNDS 8
/* Most records a crash-test child writes before giving up on being killed. */
#define CRASH_CHILD_MAX 20000
/* Most acknowledgements the parent waits for before killing the child. */
#define CRASH_ACKS_MAX 150
/* Longest random delay before the kill, microseconds. */
#define CRASH_DELAY_MAX_US 100000
/* Largest fake DER in the crash test: some records use overflow pages. */
#define CRASH_DER_MAX 3200

static char tmpdir[64];
static char storedir[128];
static const uint8_t ikid_a[STORE_KEY_ID_LEN] = {
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0x01};
static const uint8_t ikid_b[STORE_KEY_ID_LEN] = {
    0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb,
    0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0x02};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_store.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(storedir, sizeof(storedir), "%s/store", tmpdir);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static struct store *
open_store(void)
{
	struct store *st = NULL;
	struct error err = {{0}};

	if (store_open(storedir, NULL, &st, &err) != 0)
		fail_msg("store_open: %s", err.msg);
	return st;
}

static void
serial_from(uint64_t v, uint8_t serial[8])
{
	int i;

	for (i = 7; i >= 0; i--) {
		serial[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* A record without a real certificate: the store does not parse DER. */
static void
fake_cert(struct store_cert *c, const uint8_t *ikid, uint64_t serial,
          char *subject, uint8_t *der, size_t der_len)
{
	size_t i;

	memset(c, 0, sizeof(*c));
	memcpy(c->issuer_key_id, ikid, STORE_KEY_ID_LEN);
	serial_from(serial, c->serial);
	c->serial_len = 8;
	for (i = 0; i < der_len; i++)
		der[i] = (uint8_t)(serial + i);
	c->der = der;
	c->der_len = der_len;
	c->subject = subject;
	c->not_before = 1700000000;
	c->not_after = 1700000000 + 86400 * 365;
	c->issued_at = 1700000100;
	c->issued_by = (char *)"psn1";
	c->profile = (char *)"EST";
	c->status = STORE_STATUS_GOOD;
}

static void
put_ok(struct store *st, const struct store_cert *c)
{
	struct error err = {{0}};
	int rc;

	if ((rc = store_put_cert(st, c, &err)) != STORE_OK)
		fail_msg("store_put_cert: %d %s", rc, err.msg);
}

/* --- raw LMDB, to play an older or newer build or a corrupt store --- */

static MDB_env *
raw_open(MDB_txn **txn, MDB_dbi *dbi, const char *table)
{
	MDB_env *env;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
	assert_int_equal(mdb_env_open(env, storedir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, txn), 0);
	assert_int_equal(mdb_dbi_open(*txn, table, 0, dbi), 0);
	return env;
}

static void
raw_close(MDB_env *env, MDB_txn *txn)
{
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void
raw_meta_put(const void *val, size_t len)
{
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_env *env = raw_open(&txn, &dbi, "meta");
	MDB_val k = {14, (void *)"schema_version"}, v = {len, (void *)val};

	if (val == NULL)
		assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
	else
		assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_close(env, txn);
}

static void
test_open_close_reopen(void **state)
{
	struct store *st;
	struct store_cert c, *got = NULL;
	struct error err = {{0}};
	struct stat sb;
	char path[256];
	uint8_t der[64];
	size_t n;

	(void)state;
	st = open_store();
	assert_string_equal(store_path(st), storedir);
	assert_int_equal(stat(storedir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/data.mdb", storedir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	fake_cert(&c, ikid_a, 0x1234, "CN=one", der, sizeof(der));
	put_ok(st, &c);
	store_close(st);
	store_close(NULL);

	st = open_store();
	assert_int_equal(store_get_cert(st, ikid_a, c.serial, 8, &got, &err),
	                 STORE_OK);
	assert_string_equal(got->subject, "CN=one");
	store_cert_free(got);
	assert_int_equal(store_count_certs(st, NULL, &n, &err), 0);
	assert_int_equal(n, 1);
	store_close(st);

	/* Read-only: reads work, writes are refused. */
	{
		struct store_opts o = {.read_only = true};

		assert_int_equal(store_open(storedir, &o, &st, &err), 0);
		assert_int_equal(
		    store_get_cert(st, ikid_a, c.serial, 8, &got, &err),
		    STORE_OK);
		store_cert_free(got);
		c.serial[7] ^= 1;
		assert_int_equal(store_put_cert(st, &c, &err), -1);
		assert_non_null(strstr(err.msg, "read-only"));
		store_close(st);
	}
}

static void
test_open_bad(void **state)
{
	struct store *st = (struct store *)1;
	struct store_opts o = {0};
	struct error err = {{0}};
	char path[256];
	FILE *f;

	(void)state;
	o.map_size = 4096;
	assert_int_equal(store_open(storedir, &o, &st, &err), -1);
	assert_null(st);
	assert_non_null(strstr(err.msg, "map size"));

	snprintf(path, sizeof(path), "%s/file", tmpdir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);
	assert_int_equal(store_open(path, NULL, &st, &err), -1);
	assert_non_null(strstr(err.msg, path));

	/* Read-only never creates. */
	memset(&o, 0, sizeof(o));
	o.read_only = true;
	assert_int_equal(store_open(storedir, &o, &st, &err), -1);
	assert_int_equal(access(storedir, F_OK), -1);

	/* A small map fills up with a clear message, not a crash. */
	{
		struct store_cert c;
		static uint8_t der[16 * 1024];
		uint64_t i;
		int rc = STORE_OK;

		memset(&o, 0, sizeof(o));
		o.map_size = STORE_MAP_SIZE_MIN;
		assert_int_equal(store_open(storedir, &o, &st, &err), 0);
		for (i = 1; i < 1000 && rc == STORE_OK; i++) {
			fake_cert(&c, ikid_a, i, "CN=fill", der, sizeof(der));
			rc = store_put_cert(st, &c, &err);
		}
		assert_int_equal(rc, -1);
		assert_non_null(strstr(err.msg, "is full"));
		assert_int_equal(store_verify(st, NULL, &err), 0);
		store_close(st);
	}
}

static void
test_schema_version(void **state)
{
	struct store *st;
	struct store_cert c;
	struct error err = {{0}};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {14, (void *)"schema_version"}, v;
	uint8_t der[32];
	const uint8_t v1[4] = {0, 0, 0, 1}, v3[4] = {0, 0, 0, 3},
	              v0[4] = {0, 0, 0, 0};
	char want[512];

	(void)state;
	st = open_store();
	fake_cert(&c, ikid_a, 7, "CN=v", der, sizeof(der));
	put_ok(st, &c);
	store_close(st);

	env = raw_open(&txn, &dbi, "meta");
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	assert_int_equal(v.mv_size, 4);
	assert_memory_equal(v.mv_data, v1, 4);
	raw_close(env, txn);

	/* A newer store is refused, and left as it is. */
	raw_meta_put(v3, 4);
	st = (struct store *)1;
	assert_int_equal(store_open(storedir, NULL, &st, &err), -1);
	assert_null(st);
	snprintf(want, sizeof(want),
	         "store at %s has schema version 3; this build knows up to 1",
	         storedir);
	assert_string_equal(err.msg, want);
	env = raw_open(&txn, &dbi, "meta");
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	assert_memory_equal(v.mv_data, v3, 4);
	raw_close(env, txn);

	/* An older version with no migration path is refused. */
	raw_meta_put(v0, 4);
	assert_int_equal(store_open(storedir, NULL, &st, &err), -1);
	assert_non_null(strstr(err.msg, "cannot migrate"));

	/* Data without any version is not silently adopted. */
	raw_meta_put(NULL, 0);
	assert_int_equal(store_open(storedir, NULL, &st, &err), -1);
	assert_non_null(strstr(err.msg, "no schema version"));

	/* A version of the wrong size is corruption. */
	raw_meta_put("x", 1);
	assert_int_equal(store_open(storedir, NULL, &st, &err), -1);
	assert_non_null(strstr(err.msg, "corrupt"));

	raw_meta_put(v1, 4);
	st = open_store();
	store_close(st);
}

static void
test_put_get(void **state)
{
	struct store *st;
	struct store_cert c, c2, bad, *got = NULL;
	struct error err = {{0}};
	uint8_t der[300], der2[10], padded[10], big[STORE_SERIAL_MAX + 1];
	static uint8_t huge[STORE_DER_MAX + 1];
	char longname[STORE_NAME_MAX + 2];
	char *longsubject;

	(void)state;
	st = open_store();
	fake_cert(&c, ikid_a, 0x00ff01, "CN=alice,O=lab", der, sizeof(der));
	c.profile = NULL;
	put_ok(st, &c);

	assert_int_equal(store_get_cert(st, ikid_a, c.serial, 8, &got, &err),
	                 STORE_OK);
	assert_memory_equal(got->issuer_key_id, ikid_a, STORE_KEY_ID_LEN);
	/* Leading zero bytes are not part of the key. */
	assert_int_equal(got->serial_len, 2);
	assert_memory_equal(got->serial, "\xff\x01", 2);
	assert_int_equal(got->der_len, sizeof(der));
	assert_memory_equal(got->der, der, sizeof(der));
	assert_string_equal(got->subject, "CN=alice,O=lab");
	assert_string_equal(got->issued_by, "psn1");
	assert_null(got->profile);
	assert_int_equal(got->not_before, c.not_before);
	assert_int_equal(got->not_after, c.not_after);
	assert_int_equal(got->issued_at, c.issued_at);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	assert_int_equal(got->revoked_at, 0);
	store_cert_free(got);
	got = NULL;

	/* Same serial with or without leading zeros, any length. */
	memset(padded, 0, sizeof(padded));
	memcpy(padded + 7, "\xff\x01", 2);
	padded[6] = 0;
	assert_int_equal(store_get_cert(st, ikid_a, padded + 6, 3, &got, &err),
	                 STORE_OK);
	store_cert_free(got);
	assert_int_equal(store_get_cert(st, ikid_a, padded, 9, &got, &err),
	                 STORE_OK);
	store_cert_free(got);
	got = NULL;

	/* Not found: another issuer, another serial. */
	assert_int_equal(store_get_cert(st, ikid_b, c.serial, 8, &got, &err),
	                 STORE_NOT_FOUND);
	assert_null(got);
	assert_int_equal(
	    store_get_cert(st, ikid_a, (const uint8_t *)"\x01", 1, &got, &err),
	    STORE_NOT_FOUND);

	/* A duplicate is refused distinctly and changes nothing. */
	fake_cert(&c2, ikid_a, 0x00ff01, "CN=mallory", der2, sizeof(der2));
	assert_int_equal(store_put_cert(st, &c2, &err), STORE_EXISTS);
	assert_int_equal(store_get_cert(st, ikid_a, c.serial, 8, &got, &err),
	                 STORE_OK);
	assert_string_equal(got->subject, "CN=alice,O=lab");
	store_cert_free(got);
	got = NULL;

	/* Bad input: each refused with a reason, nothing stored. */
	assert_int_equal(store_get_cert(st, ikid_a, padded, 0, &got, &err), -1);
	assert_int_equal(store_get_cert(st, ikid_a, padded, 1, &got, &err), -1);
	memset(big, 1, sizeof(big));
	assert_int_equal(
	    store_get_cert(st, ikid_a, big, sizeof(big), &got, &err), -1);
	assert_non_null(strstr(err.msg, "limit"));

#define REFUSED(mutate)                                                        \
	do {                                                                   \
		fake_cert(&bad, ikid_b, 99, "CN=bad", der2, sizeof(der2));     \
		mutate;                                                        \
		err.msg[0] = '\0';                                             \
		assert_int_equal(store_put_cert(st, &bad, &err), -1);          \
		assert_true(err.msg[0] != '\0');                               \
	} while (0)
	REFUSED(memset(bad.serial, 0, 8));
	REFUSED(bad.serial_len = 0);
	REFUSED((memcpy(bad.serial, big, sizeof(big)),
	         bad.serial_len = sizeof(big)));
	REFUSED(bad.der = NULL);
	REFUSED(bad.der_len = 0);
	REFUSED((bad.der = huge, bad.der_len = sizeof(huge)));
	REFUSED(bad.subject = NULL);
	REFUSED(bad.not_after = bad.not_before - 1);
	REFUSED(bad.reason = STORE_REASON_SUPERSEDED);
	REFUSED(bad.revoked_at = 5);
	REFUSED(bad.status = STORE_STATUS_REVOKED);
	REFUSED((bad.status = STORE_STATUS_REVOKED, bad.revoked_at = 5,
	         bad.reason = STORE_REASON_CERTIFICATE_HOLD));
	REFUSED((bad.status = STORE_STATUS_REVOKED, bad.revoked_at = 5,
	         bad.reason = 7));
	REFUSED((bad.status = STORE_STATUS_HOLD, bad.revoked_at = 5,
	         bad.reason = STORE_REASON_KEY_COMPROMISE));
	REFUSED(bad.status = (enum store_cert_status)9);
	REFUSED(bad.status = STORE_STATUS_ANY);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	REFUSED(bad.issued_by = longname);
	REFUSED(bad.profile = longname);
	longsubject = malloc(STORE_SUBJECT_MAX + 2);
	assert_non_null(longsubject);
	memset(longsubject, 'c', STORE_SUBJECT_MAX + 1);
	longsubject[STORE_SUBJECT_MAX + 1] = '\0';
	REFUSED(bad.subject = longsubject);
	free(longsubject);
#undef REFUSED
	/* A record stored with its revocation comes back with it. */
	fake_cert(&bad, ikid_b, 99, "CN=revoked", der2, sizeof(der2));
	bad.status = STORE_STATUS_REVOKED;
	bad.revoked_at = 1700000500;
	bad.reason = STORE_REASON_KEY_COMPROMISE;
	put_ok(st, &bad);
	assert_int_equal(store_get_cert(st, ikid_b, bad.serial, 8, &got, &err),
	                 STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	assert_int_equal(got->revoked_at, 1700000500);
	assert_int_equal(got->reason, STORE_REASON_KEY_COMPROMISE);
	store_cert_free(got);

	{
		size_t n;

		assert_int_equal(store_count_certs(st, NULL, &n, &err), 0);
		assert_int_equal(n, 2);
	}
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
}

/* --- real certificates --- */

static X509 *
make_x509(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
          const uint8_t *serial, size_t slen, bool negative)
{
	X509 *x;
	X509_NAME *n;
	X509_EXTENSION *ext;
	X509V3_CTX ctx;
	BIGNUM *bn;

	assert_non_null(x = X509_new());
	assert_true(X509_set_version(x, X509_VERSION_3));
	assert_non_null(bn = BN_bin2bn(serial, (int)slen, NULL));
	BN_set_negative(bn, negative);
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
	BN_free(bn);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	n = X509_get_subject_name(x);
	assert_true(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8,
	                                       (const unsigned char *)"ise-lab",
	                                       -1, -1, 0));
	assert_true(X509_NAME_add_entry_by_txt(
	    n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0));
	assert_true(X509_set_issuer_name(
	    x, issuer != NULL ? X509_get_subject_name(issuer) : n));
	assert_true(X509_set_pubkey(x, key));
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	assert_non_null(ext = X509V3_EXT_conf_nid(
	                    NULL, &ctx, NID_subject_key_identifier, "hash"));
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	assert_non_null(ext = X509V3_EXT_conf_nid(NULL, &ctx,
	                                          NID_authority_key_identifier,
	                                          "keyid:always"));
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
	return x;
}

static void
test_put_x509(void **state)
{
	struct store *st;
	struct store_cert *got = NULL;
	struct error err = {{0}};
	EVP_PKEY *cakey, *key;
	X509 *ca, *leaf, *neg, *utf;
	const ASN1_OCTET_STRING *ski;
	uint8_t ikid[STORE_KEY_ID_LEN], wrong[STORE_KEY_ID_LEN];
	const uint8_t sn[] = {0x00, 0x81, 0x02, 0x03, 0x04,
	                      0x05, 0x06, 0x07, 0x08};
	unsigned char *der = NULL;
	char *s;
	int len;

	(void)state;
	assert_non_null(cakey = EVP_EC_gen("P-256"));
	assert_non_null(key = EVP_EC_gen("P-256"));
	ca = make_x509(cakey, NULL, cakey, "Certificate Services Root CA",
	               (const uint8_t *)"\x01", 1, false);
	leaf = make_x509(key, ca, cakey, "leaf 1", sn, sizeof(sn), false);

	/* The issuer key id is the CA's SKI (method 1) and the OCSP hash. */
	assert_int_equal(store_issuer_key_id(ca, ikid, &err), 0);
	assert_non_null(ski = X509_get0_subject_key_id(ca));
	assert_int_equal(ASN1_STRING_length(ski), STORE_KEY_ID_LEN);
	assert_memory_equal(ASN1_STRING_get0_data(ski), ikid, STORE_KEY_ID_LEN);

	st = open_store();
	assert_int_equal(
	    store_put_x509(st, leaf, ikid, "psn1", "BYOD", 1700000000, &err),
	    STORE_OK);
	assert_int_equal(
	    store_put_x509(st, leaf, ikid, "psn1", "BYOD", 1700000000, &err),
	    STORE_EXISTS);
	assert_int_equal(
	    store_get_cert(st, ikid, sn + 1, sizeof(sn) - 1, &got, &err),
	    STORE_OK);
	assert_string_equal(got->subject, "CN=leaf 1,O=ise-lab");
	assert_string_equal(got->profile, "BYOD");
	assert_int_equal(got->serial_len, sizeof(sn) - 1);
	assert_int_equal(got->not_after - got->not_before, 86400);
	assert_true(got->not_before > 1700000000);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	len = i2d_X509(leaf, &der);
	assert_int_equal(got->der_len, (size_t)len);
	assert_memory_equal(got->der, der, (size_t)len);
	OPENSSL_free(der);
	store_cert_free(got);

	/* The wrong issuer is caught by the authority key identifier. */
	memcpy(wrong, ikid, sizeof(wrong));
	wrong[0] ^= 0xff;
	assert_int_equal(store_put_x509(st, leaf, wrong, "psn1", NULL, 1, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "authority key identifier"));

	/* Negative serials never come from us. */
	neg = make_x509(key, ca, cakey, "neg", sn + 1, 4, true);
	assert_int_equal(store_put_x509(st, neg, ikid, "psn1", NULL, 1, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "negative"));

	/* UTF-8 stays readable in the subject string. */
	utf = make_x509(key, ca, cakey, "J\xc3\xb6rg", (const uint8_t *)"\x05",
	                1, false);
	s = store_subject_string(X509_get_subject_name(utf), &err);
	assert_non_null(s);
	assert_string_equal(s, "CN=J\xc3\xb6rg,O=ise-lab");
	free(s);
	assert_null(store_subject_string(NULL, &err));

	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
	X509_free(utf);
	X509_free(neg);
	X509_free(leaf);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(cakey);
}

static void
test_find_by_serial(void **state)
{
	struct store *st;
	struct store_cert c;
	struct store_cert_list l;
	struct error err = {{0}};
	uint8_t der[40], sn[8];
	bool seen_a = false, seen_b = false;
	size_t i;

	(void)state;
	st = open_store();
	fake_cert(&c, ikid_a, 42, "CN=a", der, sizeof(der));
	put_ok(st, &c);
	fake_cert(&c, ikid_b, 42, "CN=b", der, sizeof(der));
	put_ok(st, &c);
	fake_cert(&c, ikid_a, 43, "CN=other", der, sizeof(der));
	put_ok(st, &c);

	serial_from(42, sn);
	assert_int_equal(store_find_by_serial(st, sn, 8, &l, &err), 0);
	assert_int_equal(l.count, 2);
	assert_false(l.truncated);
	for (i = 0; i < l.count; i++) {
		assert_int_equal(l.certs[i].serial_len, 1);
		assert_int_equal(l.certs[i].serial[0], 42);
		if (memcmp(l.certs[i].issuer_key_id, ikid_a, 20) == 0) {
			seen_a = true;
			assert_string_equal(l.certs[i].subject, "CN=a");
		} else if (memcmp(l.certs[i].issuer_key_id, ikid_b, 20) == 0) {
			seen_b = true;
			assert_string_equal(l.certs[i].subject, "CN=b");
		}
	}
	assert_true(seen_a && seen_b);
	store_cert_list_free(&l);
	assert_null(l.certs);
	store_cert_list_free(&l);

	/* Shortest form finds the same. */
	assert_int_equal(
	    store_find_by_serial(st, (const uint8_t *)"\x2a", 1, &l, &err), 0);
	assert_int_equal(l.count, 2);
	store_cert_list_free(&l);

	serial_from(44, sn);
	assert_int_equal(store_find_by_serial(st, sn, 8, &l, &err), 0);
	assert_int_equal(l.count, 0);
	store_cert_list_free(&l);
	memset(sn, 0, sizeof(sn));
	assert_int_equal(store_find_by_serial(st, sn, 8, &l, &err), -1);
	assert_int_equal(l.count, 0);
	store_close(st);
}

static void
test_find_by_subject(void **state)
{
	struct store *st;
	struct store_cert c;
	struct store_cert_list l;
	struct error err = {{0}};
	uint8_t der[40];
	uint64_t i;

	(void)state;
	st = open_store();
	for (i = 1; i <= 5; i++) {
		fake_cert(&c, i % 2 ? ikid_a : ikid_b, i, "CN=alice,O=lab", der,
		          sizeof(der));
		put_ok(st, &c);
	}
	for (i = 6; i <= 7; i++) {
		fake_cert(&c, ikid_a, i, "CN=bob,O=lab", der, sizeof(der));
		put_ok(st, &c);
	}
	assert_int_equal(store_find_by_subject(st, "CN=alice,O=lab", &l, &err),
	                 0);
	assert_int_equal(l.count, 5);
	for (i = 0; i < l.count; i++)
		assert_string_equal(l.certs[i].subject, "CN=alice,O=lab");
	store_cert_list_free(&l);
	/* ASCII case does not matter. */
	assert_int_equal(store_find_by_subject(st, "cn=ALICE,o=lab", &l, &err),
	                 0);
	assert_int_equal(l.count, 5);
	store_cert_list_free(&l);
	assert_int_equal(store_find_by_subject(st, "CN=bob,O=lab", &l, &err),
	                 0);
	assert_int_equal(l.count, 2);
	store_cert_list_free(&l);
	assert_int_equal(store_find_by_subject(st, "CN=carol", &l, &err), 0);
	assert_int_equal(l.count, 0);
	store_cert_list_free(&l);
	assert_int_equal(store_find_by_subject(st, "CN=alice,O=la", &l, &err),
	                 0);
	assert_int_equal(l.count, 0);
	assert_int_equal(store_find_by_subject(st, NULL, &l, &err), -1);
	store_close(st);
}

static struct store_cert *
get_ok(struct store *st, const uint8_t *ikid, uint64_t serial)
{
	struct store_cert *c = NULL;
	struct error err = {{0}};
	uint8_t sn[8];
	int rc;

	serial_from(serial, sn);
	if ((rc = store_get_cert(st, ikid, sn, 8, &c, &err)) != STORE_OK)
		fail_msg("store_get_cert: %d %s", rc, err.msg);
	return c;
}

static void
test_status(void **state)
{
	struct store *st;
	struct store_cert c, *got;
	struct error err = {{0}};
	uint8_t der[40], sn[8];

	(void)state;
	st = open_store();
	fake_cert(&c, ikid_a, 1, "CN=s", der, sizeof(der));
	put_ok(st, &c);
	serial_from(1, sn);

	/* GOOD -> release: refused. */
	assert_int_equal(store_release(st, ikid_a, sn, 8, 100, &err), -1);
	assert_non_null(strstr(err.msg, "not on hold"));
	/* GOOD -> HOLD -> HOLD (unchanged) -> GOOD. */
	assert_int_equal(store_hold(st, ikid_a, sn, 8, 100, &err), STORE_OK);
	got = get_ok(st, ikid_a, 1);
	assert_int_equal(got->status, STORE_STATUS_HOLD);
	assert_int_equal(got->revoked_at, 100);
	assert_int_equal(got->reason, STORE_REASON_CERTIFICATE_HOLD);
	store_cert_free(got);
	assert_int_equal(store_hold(st, ikid_a, sn, 8, 150, &err),
	                 STORE_UNCHANGED);
	got = get_ok(st, ikid_a, 1);
	assert_int_equal(got->revoked_at, 100);
	store_cert_free(got);
	assert_int_equal(store_release(st, ikid_a, sn, 8, 200, &err), STORE_OK);
	got = get_ok(st, ikid_a, 1);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	assert_int_equal(got->revoked_at, 0);
	assert_int_equal(got->reason, 0);
	assert_int_equal(got->updated_at, 200);
	store_cert_free(got);

	/* GOOD -> REVOKED -> REVOKED (unchanged, first time/reason kept). */
	assert_int_equal(
	    store_revoke(st, ikid_a, sn, 8, 300, STORE_REASON_SUPERSEDED, &err),
	    STORE_OK);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 400,
	                              STORE_REASON_KEY_COMPROMISE, &err),
	                 STORE_UNCHANGED);
	got = get_ok(st, ikid_a, 1);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	assert_int_equal(got->revoked_at, 300);
	assert_int_equal(got->reason, STORE_REASON_SUPERSEDED);
	store_cert_free(got);
	/* Revocation is permanent. */
	assert_int_equal(store_hold(st, ikid_a, sn, 8, 500, &err), -1);
	assert_non_null(strstr(err.msg, "revoked"));
	assert_int_equal(store_release(st, ikid_a, sn, 8, 500, &err), -1);
	got = get_ok(st, ikid_a, 1);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	store_cert_free(got);

	/* HOLD -> REVOKED. */
	fake_cert(&c, ikid_a, 2, "CN=s", der, sizeof(der));
	put_ok(st, &c);
	serial_from(2, sn);
	assert_int_equal(store_hold(st, ikid_a, sn, 8, 100, &err), STORE_OK);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 600,
	                              STORE_REASON_KEY_COMPROMISE, &err),
	                 STORE_OK);
	got = get_ok(st, ikid_a, 2);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	assert_int_equal(got->revoked_at, 600);
	assert_int_equal(got->reason, STORE_REASON_KEY_COMPROMISE);
	store_cert_free(got);

	/* Bad reasons, bad time, unknown record. */
	fake_cert(&c, ikid_a, 3, "CN=s", der, sizeof(der));
	put_ok(st, &c);
	serial_from(3, sn);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100,
	                              STORE_REASON_CERTIFICATE_HOLD, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "use hold"));
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100, 7, &err), -1);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100,
	                              STORE_REASON_REMOVE_FROM_CRL, &err),
	                 -1);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100, -1, &err), -1);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100, 11, &err), -1);
	assert_int_equal(
	    store_revoke(st, ikid_a, sn, 8, 0, STORE_REASON_UNSPECIFIED, &err),
	    -1);
	got = get_ok(st, ikid_a, 3);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	store_cert_free(got);
	serial_from(4, sn);
	assert_int_equal(store_revoke(st, ikid_a, sn, 8, 100,
	                              STORE_REASON_UNSPECIFIED, &err),
	                 STORE_NOT_FOUND);
	assert_int_equal(store_hold(st, ikid_b, sn, 8, 100, &err),
	                 STORE_NOT_FOUND);
	assert_int_equal(store_release(st, ikid_a, sn, 0, 100, &err), -1);

	assert_string_equal(store_status_name(STORE_STATUS_HOLD), "hold");
	assert_string_equal(store_reason_name(1), "keyCompromise");
	assert_string_equal(store_reason_name(7), "unknown");
	assert_string_equal(store_reason_name(99), "unknown");
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
}

static int
key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STORE_PKEY_MAX);
}

/* Record i of the paging set: status and node follow from i. */
static void
paging_cert(struct store_cert *c, uint64_t i, uint8_t *der, size_t len)
{
	/* Spread serials so that key order is not insertion order. */
	uint64_t serial = (i * 0x9e3779b97f4a7c15ULL) | 1;

	fake_cert(c, i % 3 ? ikid_a : ikid_b, serial, "CN=page", der, len);
	c->issued_by = (char *)(i % 2 ? "psn2" : "psn1");
	if (i % 5 == 0) {
		c->status = STORE_STATUS_REVOKED;
		c->revoked_at = 1700000200;
		c->reason = STORE_REASON_SUPERSEDED;
	} else if (i % 7 == 0) {
		c->status = STORE_STATUS_HOLD;
		c->revoked_at = 1700000200;
		c->reason = STORE_REASON_CERTIFICATE_HOLD;
	}
}

/* Walk all pages; keys come back in strictly increasing order. */
static size_t
walk(struct store *st, const struct store_filter *f, size_t page,
     uint8_t (*keys)[STORE_PKEY_MAX])
{
	struct store_cursor cur;
	struct store_cert_list l;
	struct error err = {{0}};
	uint8_t prev[STORE_PKEY_MAX] = {0}, k[STORE_PKEY_MAX];
	size_t n = 0, i, pages = 0;
	char text[STORE_CURSOR_STR_MAX];

	memset(&cur, 0, sizeof(cur));
	while (!cur.done) {
		if (store_list_certs(st, f, page, &cur, &l, &err) != 0)
			fail_msg("store_list_certs: %s", err.msg);
		assert_true(l.count <= page);
		for (i = 0; i < l.count; i++) {
			memset(k, 0, sizeof(k));
			memcpy(k, l.certs[i].issuer_key_id, STORE_KEY_ID_LEN);
			memcpy(k + STORE_KEY_ID_LEN, l.certs[i].serial,
			       l.certs[i].serial_len);
			assert_true(n == 0 || memcmp(prev, k, sizeof(k)) < 0);
			memcpy(prev, k, sizeof(k));
			if (f != NULL && f->status != STORE_STATUS_ANY)
				assert_int_equal(l.certs[i].status, f->status);
			if (f != NULL && f->issued_by != NULL)
				assert_string_equal(l.certs[i].issued_by,
				                    f->issued_by);
			if (keys != NULL)
				memcpy(keys[n], k, sizeof(k));
			n++;
		}
		store_cert_list_free(&l);
		/* Every other page, pass the cursor through its text form. */
		if (++pages % 2 == 0 && !cur.done) {
			store_cursor_format(&cur, text);
			assert_int_equal(store_cursor_parse(text, &cur, &err),
			                 0);
		}
		assert_true(pages <= PAGING_RECORDS + 1);
	}
	/* After the end, more calls return nothing. */
	assert_int_equal(store_list_certs(st, f, page, &cur, &l, &err), 0);
	assert_int_equal(l.count, 0);
	return n;
}

static void
test_paging(void **state)
{
	static uint8_t want[PAGING_RECORDS][STORE_PKEY_MAX];
	static uint8_t got[PAGING_RECORDS][STORE_PKEY_MAX];
	const size_t pages[] = {1, 7, 100, 999, 1000};
	struct store *st;
	struct store_cert c;
	struct store_cert_list l;
	struct store_cursor cur;
	struct store_filter f;
	struct error err = {{0}};
	uint8_t der[64];
	size_t i, n, expect, count;
	uint64_t r;

	(void)state;
	st = open_store();
	memset(want, 0, sizeof(want));
	for (r = 0; r < PAGING_RECORDS; r++) {
		paging_cert(&c, r, der, sizeof(der));
		put_ok(st, &c);
		memcpy(want[r], c.issuer_key_id, STORE_KEY_ID_LEN);
		/* The store keys the serial without leading zeros. */
		for (i = 0; i < 7 && c.serial[i] == 0; i++)
			;
		memcpy(want[r] + STORE_KEY_ID_LEN, c.serial + i, 8 - i);
	}
	qsort(want, PAGING_RECORDS, STORE_PKEY_MAX, key_cmp);

	for (i = 0; i < ARRAY_SIZE(pages); i++) {
		memset(got, 0, sizeof(got));
		n = walk(st, NULL, pages[i], got);
		assert_int_equal(n, PAGING_RECORDS);
		assert_memory_equal(got, want, sizeof(want));
	}

	/* Filters, by status and by node, alone and together. */
	for (i = 0; i < 8; i++) {
		memset(&f, 0, sizeof(f));
		f.status = (enum store_cert_status)(i % 4);
		f.issued_by = i < 4 ? NULL : "psn2";
		for (expect = 0, r = 0; r < PAGING_RECORDS; r++) {
			paging_cert(&c, r, der, sizeof(der));
			if ((f.status == STORE_STATUS_ANY ||
			     c.status == f.status) &&
			    (f.issued_by == NULL ||
			     strcmp(c.issued_by, f.issued_by) == 0))
				expect++;
		}
		assert_int_equal(walk(st, &f, 13, NULL), expect);
		assert_int_equal(store_count_certs(st, &f, &count, &err), 0);
		assert_int_equal(count, expect);
	}
	memset(&f, 0, sizeof(f));
	f.issued_by = "psn9";
	assert_int_equal(walk(st, &f, 50, NULL), 0);

	/* Defaults and limits. */
	memset(&cur, 0, sizeof(cur));
	assert_int_equal(store_list_certs(st, NULL, 0, &cur, &l, &err), 0);
	assert_int_equal(l.count, STORE_PAGE_DEFAULT);
	assert_false(cur.done);
	store_cert_list_free(&l);
	assert_int_equal(
	    store_list_certs(st, NULL, STORE_PAGE_MAX + 1, &cur, &l, &err), -1);
	assert_non_null(strstr(err.msg, "limit"));
	f.status = (enum store_cert_status)17;
	assert_int_equal(store_list_certs(st, &f, 10, &cur, &l, &err), -1);
	assert_int_equal(store_count_certs(st, &f, &count, &err), -1);

	/* A record added behind the cursor is not seen, one ahead is. */
	memset(&cur, 0, sizeof(cur));
	assert_int_equal(store_list_certs(st, NULL, 500, &cur, &l, &err), 0);
	store_cert_list_free(&l);
	fake_cert(&c, ikid_a, 0, "CN=late", der, sizeof(der));
	c.serial[7] = 1; /* smallest serial of issuer a: behind the cursor */
	put_ok(st, &c);
	fake_cert(&c, ikid_b, 0xffffffffffffffffULL, "CN=late", der,
	          sizeof(der));
	put_ok(st, &c);
	for (n = 500; !cur.done;) {
		assert_int_equal(
		    store_list_certs(st, NULL, 100, &cur, &l, &err), 0);
		n += l.count;
		store_cert_list_free(&l);
	}
	assert_int_equal(n, PAGING_RECORDS + 1);
	assert_int_equal(store_count_certs(st, NULL, &count, &err), 0);
	assert_int_equal(count, PAGING_RECORDS + 2);

	/* Cursor text: bad forms refused. */
	assert_int_equal(store_cursor_parse("", &cur, &err), 0);
	assert_int_equal(cur.len, 0);
	assert_int_equal(store_cursor_parse("zz", &cur, &err), -1);
	assert_int_equal(store_cursor_parse("abc", &cur, &err), -1);
	assert_int_equal(store_cursor_parse("aabb", &cur, &err), -1);
	{
		char longer[2 * STORE_PKEY_MAX + 3];

		memset(longer, 'a', sizeof(longer) - 1);
		longer[sizeof(longer) - 1] = '\0';
		assert_int_equal(store_cursor_parse(longer, &cur, &err), -1);
	}
	cur.len = STORE_PKEY_MAX + 1;
	assert_int_equal(store_list_certs(st, NULL, 10, &cur, &l, &err), -1);
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
}

static void
test_verify_detects(void **state)
{
	struct store *st;
	struct store_cert c;
	struct store_verify_report rep;
	struct error err = {{0}};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	uint8_t der[40], pk[28], sn[8];
	struct store_cert_list l;

	(void)state;
	st = open_store();
	fake_cert(&c, ikid_a, 5, "CN=v", der, sizeof(der));
	put_ok(st, &c);
	fake_cert(&c, ikid_a, 6, "CN=v", der, sizeof(der));
	put_ok(st, &c);
	assert_int_equal(store_verify(st, &rep, &err), 0);
	assert_int_equal(rep.records, 2);
	assert_int_equal(rep.serial_entries, 2);
	assert_int_equal(rep.subject_entries, 2);
	store_close(st);

	/* Drop one serial index entry behind the store's back. */
	memcpy(pk, ikid_a, 20);
	serial_from(5, sn);
	memcpy(pk + 20, sn + 7, 1);
	env = raw_open(&txn, &dbi, "certs_by_serial");
	k = (MDB_val){1, sn + 7};
	v = (MDB_val){21, pk};
	assert_int_equal(mdb_del(txn, dbi, &k, &v), 0);
	raw_close(env, txn);
	st = open_store();
	assert_int_equal(store_verify(st, &rep, &err), -1);
	assert_non_null(strstr(err.msg, "missing from an index"));
	store_close(st);

	/* Put it back, then break a record. */
	env = raw_open(&txn, &dbi, "certs_by_serial");
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_close(env, txn);
	st = open_store();
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
	env = raw_open(&txn, &dbi, "certs");
	k = (MDB_val){21, pk};
	v = (MDB_val){5, (void *)"\xff\xff\xff\xff\xff"};
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	raw_close(env, txn);
	st = open_store();
	assert_int_equal(store_verify(st, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "corrupt"));
	assert_int_equal(store_find_by_serial(st, sn, 8, &l, &err), -1);
	assert_null(l.certs);
	store_close(st);
}

/* --- readers while a writer writes --- */

struct reader_arg {
	struct store *st;
	atomic_bool *stop;
	atomic_int failures;
	atomic_int rounds;
};

static void *
reader_thread(void *p)
{
	struct reader_arg *a = p;
	struct store_verify_report rep;
	struct error err = {{0}};
	size_t last = 0;

	while (!atomic_load(a->stop)) {
		/* One snapshot: primary count equals each index count. */
		if (store_verify(a->st, &rep, &err) != 0 ||
		    rep.records < last) {
			atomic_fetch_add(&a->failures, 1);
			fprintf(stderr, "reader: %s\n", err.msg);
		}
		last = rep.records;
		atomic_fetch_add(&a->rounds, 1);
	}
	return NULL;
}

static void
test_readers_threads(void **state)
{
	struct store *st;
	struct store_cert c;
	struct reader_arg a[2];
	pthread_t t[2];
	atomic_bool stop = false;
	uint8_t der[200];
	uint64_t i;
	size_t j;

	(void)state;
	st = open_store();
	for (j = 0; j < 2; j++) {
		a[j].st = st;
		a[j].stop = &stop;
		atomic_init(&a[j].failures, 0);
		atomic_init(&a[j].rounds, 0);
		assert_int_equal(
		    pthread_create(&t[j], NULL, reader_thread, &a[j]), 0);
	}
	for (i = 1; i <= CONCURRENT_RECORDS; i++) {
		fake_cert(&c, i % 2 ? ikid_a : ikid_b, i,
		          i % 3 ? "CN=same" : "CN=other", der, sizeof(der));
		put_ok(st, &c);
	}
	atomic_store(&stop, true);
	for (j = 0; j < 2; j++) {
		assert_int_equal(pthread_join(t[j], NULL), 0);
		assert_int_equal(atomic_load(&a[j].failures), 0);
		assert_true(atomic_load(&a[j].rounds) > 0);
	}
	store_close(st);
}

/* A reader in another process, its own environment opened after fork. */
static void
test_readers_process(void **state)
{
	struct store *st;
	struct store_cert c;
	uint8_t der[200];
	pid_t pid;
	int fds[2], status;
	uint64_t i;

	(void)state;
	st = open_store(); /* create it, then close before forking */
	store_close(st);
	assert_int_equal(pipe(fds), 0);
	if ((pid = fork()) == 0) {
		struct store_verify_report rep;
		struct error err;
		struct pollfd pfd = {fds[0], POLLIN, 0};
		size_t last = 0, loops = 0;

		close(fds[1]);
		if (store_open(storedir, NULL, &st, &err) != 0)
			_exit(2);
		/* Until the parent closes its end: POLLHUP. */
		while (poll(&pfd, 1, 0) == 0 || loops == 0) {
			if (store_verify(st, &rep, &err) != 0) {
				fprintf(stderr, "child reader: %s\n", err.msg);
				_exit(3);
			}
			if (rep.records < last)
				_exit(4);
			last = rep.records;
			loops++;
		}
		store_close(st);
		_exit(0);
	}
	assert_true(pid > 0);
	close(fds[0]);
	st = open_store();
	for (i = 1; i <= CONCURRENT_RECORDS; i++) {
		fake_cert(&c, ikid_a, i, "CN=p", der, sizeof(der));
		put_ok(st, &c);
	}
	close(fds[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	store_close(st);
}

/*
 * A write transaction held open by another process does not delay reads:
 * they run on the last committed snapshot.
 */
static void
test_read_during_write(void **state)
{
	struct store *st;
	struct store_cert c, *got = NULL;
	struct error err = {{0}};
	uint8_t der[40], sn[8];
	size_t n;
	int go[2], held[2], status;
	int64_t t0;
	pid_t pid;
	char b;

	(void)state;
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(held), 0);
	if ((pid = fork()) == 0) {
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		MDB_val k = {4, (void *)"test"}, v = {1, (void *)"x"};

		/* Wait until the parent has created and opened the store. */
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		if (mdb_env_create(&env) != 0 ||
		    mdb_env_set_maxdbs(env, 32) != 0 ||
		    mdb_env_open(env, storedir, 0, 0600) != 0 ||
		    mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
		    mdb_dbi_open(txn, "meta", 0, &dbi) != 0 ||
		    mdb_put(txn, dbi, &k, &v, 0) != 0)
			_exit(3);
		if (write(held[1], "h", 1) != 1)
			_exit(4);
		/* Hold the write lock until the parent is done reading. */
		if (read(go[0], &b, 1) != 1)
			_exit(5);
		mdb_txn_abort(txn);
		mdb_env_close(env);
		_exit(0);
	}
	assert_true(pid > 0);
	st = open_store();
	fake_cert(&c, ikid_a, 9, "CN=r", der, sizeof(der));
	put_ok(st, &c);
	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(read(held[0], &b, 1), 1);

	t0 = time_mono_ms();
	serial_from(9, sn);
	assert_int_equal(store_get_cert(st, ikid_a, sn, 8, &got, &err),
	                 STORE_OK);
	store_cert_free(got);
	assert_int_equal(store_count_certs(st, NULL, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_verify(st, NULL, &err), 0);
	assert_true(time_mono_ms() - t0 < 2000);

	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(go[0]);
	close(go[1]);
	close(held[0]);
	close(held[1]);
	store_close(st);
}

/* --- the crash test --- */

/* What a crash-test child reports after each commit. */
struct crash_ack {
	uint32_t type; /* 'P' put, 'R' revoke */
	uint32_t round;
	uint32_t index;
};

static uint64_t
crash_serial(uint32_t round, uint32_t index)
{
	return (uint64_t)(0x10 + round) << 56 | (uint64_t)index << 8 | 0x5a;
}

static const uint8_t *
crash_ikid(uint32_t index)
{
	return index % 2 ? ikid_b : ikid_a;
}

static size_t
crash_der(uint32_t round, uint32_t index, uint8_t *der)
{
	size_t len = 100 + (index * 37u) % (CRASH_DER_MAX - 100), i;

	for (i = 0; i < len; i++)
		der[i] = (uint8_t)(round * 31u + index + i);
	return len;
}

static void
crash_subject(uint32_t round, uint32_t index, char *buf, size_t len)
{
	/* Many records share a few subjects: long duplicate lists. */
	if (index % 3 == 0)
		snprintf(buf, len, "CN=crash shared %u,O=lab", index % 4);
	else
		snprintf(buf, len, "CN=crash r%u i%u,O=lab", round, index);
}

static void
crash_record(uint32_t round, uint32_t index, struct store_cert *c, uint8_t *der,
             char *subject, size_t slen)
{
	size_t len = crash_der(round, index, der);

	crash_subject(round, index, subject, slen);
	fake_cert(c, crash_ikid(index), crash_serial(round, index), subject,
	          der, len);
	crash_der(round, index, der); /* fake_cert wrote its own pattern */
}

static void
write_ack(int fd, uint32_t type, uint32_t round, uint32_t index)
{
	struct crash_ack a = {type, round, index};

	/* Under PIPE_BUF bytes: one atomic write, never half a message. */
	if (write(fd, &a, sizeof(a)) != (ssize_t)sizeof(a))
		_exit(5);
}

static void __attribute__((noreturn)) crash_child(int fd, uint32_t round)
{
	struct store *st;
	struct store_cert c;
	struct error err;
	static uint8_t der[CRASH_DER_MAX];
	char subject[64];
	uint8_t sn[8];
	uint32_t i;

	if (store_open(storedir, NULL, &st, &err) != 0) {
		fprintf(stderr, "crash child: %s\n", err.msg);
		_exit(2);
	}
	for (i = 0; i < CRASH_CHILD_MAX; i++) {
		crash_record(round, i, &c, der, subject, sizeof(subject));
		if (store_put_cert(st, &c, &err) != STORE_OK) {
			fprintf(stderr, "crash child: %s\n", err.msg);
			_exit(3);
		}
		write_ack(fd, 'P', round, i);
		if (i % 4 == 3) {
			serial_from(crash_serial(round, i - 2), sn);
			if (store_revoke(st, crash_ikid(i - 2), sn, 8,
			                 1700000000 + i,
			                 STORE_REASON_KEY_COMPROMISE,
			                 &err) != STORE_OK) {
				fprintf(stderr, "crash child: %s\n", err.msg);
				_exit(4);
			}
			write_ack(fd, 'R', round, i - 2);
		}
	}
	_exit(0);
}

static void
test_crash(void **state)
{
	static uint8_t der[CRASH_DER_MAX];
	static struct crash_ack acks[CRASH_ROUNDS * (CRASH_CHILD_MAX + 64)];
	struct store *st;
	struct store_cert *got;
	struct store_verify_report rep;
	struct error err = {{0}};
	struct crash_ack a;
	char subject[64];
	const char *env_seed;
	unsigned int seed;
	size_t nacks = 0, puts = 0, i, count, target, got_acks;
	uint8_t sn[8];
	uint32_t round;
	ssize_t n;
	pid_t pid;
	int fds[2], status;

	(void)state;
	env_seed = getenv("STORE_TEST_SEED");
	seed = env_seed != NULL
	           ? (unsigned int)strtoul(env_seed, NULL, 0)
	           : (unsigned int)time(NULL) ^ (unsigned int)getpid();
	srand(seed);
	print_message("crash test seed %u (STORE_TEST_SEED)\n", seed);
	st = open_store();
	store_close(st);

	for (round = 0; round < CRASH_ROUNDS; round++) {
		assert_int_equal(pipe(fds), 0);
		/* No store is open here: the child opens its own. */
		if ((pid = fork()) == 0) {
			close(fds[0]);
			crash_child(fds[1], round);
		}
		assert_true(pid > 0);
		close(fds[1]);
		got_acks = 0;
		if (round % 2 == 0) {
			/* Kill after a random number of acknowledgements. */
			target = 1 + (size_t)rand() % CRASH_ACKS_MAX;
			while (got_acks < target &&
			       (n = read(fds[0], &a, sizeof(a))) ==
			           (ssize_t)sizeof(a)) {
				acks[nacks++] = a;
				got_acks++;
			}
		} else {
			/* Kill after a random delay, wherever it is. */
			usleep((useconds_t)(rand() % CRASH_DELAY_MAX_US));
		}
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
			fail_msg("crash child ended with status %d", status);
		/* Whatever it reported before dying was committed. */
		while ((n = read(fds[0], &a, sizeof(a))) ==
		       (ssize_t)sizeof(a)) {
			assert_true(nacks < ARRAY_SIZE(acks));
			acks[nacks++] = a;
		}
		assert_int_equal(n, 0);
		close(fds[0]);

		/* Reopen (LMDB recovers the write lock the child held). */
		st = open_store();
		if (store_verify(st, &rep, &err) != 0)
			fail_msg("after round %u: %s", round, err.msg);
		puts = 0;
		for (i = 0; i < nacks; i++) {
			serial_from(crash_serial(acks[i].round, acks[i].index),
			            sn);
			got = NULL;
			if (store_get_cert(st, crash_ikid(acks[i].index), sn, 8,
			                   &got, &err) != STORE_OK)
				fail_msg("acknowledged record r%u i%u lost: %s",
				         acks[i].round, acks[i].index, err.msg);
			if (acks[i].type == 'P') {
				puts++;
				crash_subject(acks[i].round, acks[i].index,
				              subject, sizeof(subject));
				assert_string_equal(got->subject, subject);
				assert_int_equal(got->der_len,
				                 crash_der(acks[i].round,
				                           acks[i].index, der));
				assert_memory_equal(got->der, der,
				                    got->der_len);
			} else {
				assert_int_equal(got->status,
				                 STORE_STATUS_REVOKED);
				assert_int_equal(got->reason,
				                 STORE_REASON_KEY_COMPROMISE);
			}
			store_cert_free(got);
		}
		/* At most one commit per round can be unacknowledged. */
		assert_int_equal(store_count_certs(st, NULL, &count, &err), 0);
		assert_int_equal(count, rep.records);
		assert_true(count >= puts);
		assert_true(count <= puts + round + 1);
		store_close(st);
	}
	print_message("crash test: %zu acknowledgements over %d rounds, all "
	              "present\n",
	              nacks, CRASH_ROUNDS);
}

/* --- generic tables and batches --- */

struct kv_seen {
	char keys[16][32]; /* keys in the order foreach gave them */
	size_t n;          /* keys seen */
	size_t stop_at;    /* return 7 after this many (0: never) */
};

static int
kv_collect(void *ctx, const void *key, size_t klen, const void *val,
           size_t vlen)
{
	struct kv_seen *s = ctx;

	(void)val;
	(void)vlen;
	assert_true(s->n < ARRAY_SIZE(s->keys));
	assert_true(klen < sizeof(s->keys[0]));
	memcpy(s->keys[s->n], key, klen);
	s->keys[s->n][klen] = '\0';
	s->n++;
	return s->stop_at != 0 && s->n == s->stop_at ? 7 : 0;
}

static void
kv_expect(struct store *st, enum store_table t, const char *key,
          const char *val)
{
	struct error err = {{0}};
	uint8_t *got = NULL;
	size_t len = 0;
	int rc;

	rc = store_kv_get(st, t, key, strlen(key), &got, &len, &err);
	if (val == NULL) {
		assert_int_equal(rc, STORE_NOT_FOUND);
		assert_null(got);
		return;
	}
	if (rc != STORE_OK)
		fail_msg("store_kv_get(%s): %d %s", key, rc, err.msg);
	assert_int_equal(len, strlen(val));
	assert_string_equal((char *)got, val);
	free(got);
}

static void
test_kv(void **state)
{
	struct store *st;
	struct error err = {{0}};
	struct kv_seen seen;
	uint8_t big[STORE_KV_KEY_MAX + 1], *got;
	size_t len;

	(void)state;
	st = open_store();
	assert_string_equal(store_table_name(STORE_TABLE_NODES), "nodes");
	assert_string_equal(store_table_name(STORE_TABLE_CONFIG), "config");
	assert_string_equal(store_table_name(STORE_TABLE_COUNT), "?");

	/* Round trip, replace, and tables that do not share keys. */
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn1", 4, "one", 3, &err), 0);
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_TOKENS, "psn1", 4, "tok", 3, &err), 0);
	kv_expect(st, STORE_TABLE_NODES, "psn1", "one");
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn1", 4, "two!", 4, &err), 0);
	kv_expect(st, STORE_TABLE_NODES, "psn1", "two!");
	kv_expect(st, STORE_TABLE_TOKENS, "psn1", "tok");
	kv_expect(st, STORE_TABLE_ALARMS, "psn1", NULL);
	/* An empty value is a value, not an absence. */
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_CONFIG, "empty", 5, NULL, 0, &err), 0);
	kv_expect(st, STORE_TABLE_CONFIG, "empty", "");
	/* Binary values come back byte for byte. */
	assert_int_equal(store_kv_put(st, STORE_TABLE_CONFIG, "bin", 3,
	                              "\x00\x01\xff", 3, &err),
	                 0);
	assert_int_equal(
	    store_kv_get(st, STORE_TABLE_CONFIG, "bin", 3, &got, &len, &err),
	    STORE_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(got, "\x00\x01\xff", 3);
	free(got);

	/* Foreach: key order, shorter first on a common prefix; stop. */
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn10", 5, "x", 1, &err), 0);
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn2", 4, "x", 1, &err), 0);
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "a", 1, "x", 1, &err), 0);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    store_kv_foreach(st, STORE_TABLE_NODES, kv_collect, &seen, &err),
	    0);
	assert_int_equal(seen.n, 4);
	assert_string_equal(seen.keys[0], "a");
	assert_string_equal(seen.keys[1], "psn1");
	assert_string_equal(seen.keys[2], "psn10");
	assert_string_equal(seen.keys[3], "psn2");
	memset(&seen, 0, sizeof(seen));
	seen.stop_at = 2;
	assert_int_equal(
	    store_kv_foreach(st, STORE_TABLE_NODES, kv_collect, &seen, &err),
	    7);
	assert_int_equal(seen.n, 2);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    store_kv_foreach(st, STORE_TABLE_ALARMS, kv_collect, &seen, &err),
	    0);
	assert_int_equal(seen.n, 0);

	/* Del: once found, then not. */
	assert_int_equal(store_kv_del(st, STORE_TABLE_NODES, "psn10", 5, &err),
	                 STORE_OK);
	assert_int_equal(store_kv_del(st, STORE_TABLE_NODES, "psn10", 5, &err),
	                 STORE_NOT_FOUND);
	kv_expect(st, STORE_TABLE_NODES, "psn10", NULL);
	kv_expect(st, STORE_TABLE_NODES, "psn1", "two!");

	/* Bad input. */
	memset(big, 'k', sizeof(big));
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "", 0, "x", 1, &err), -1);
	assert_non_null(strstr(err.msg, "key of 0 bytes"));
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, big, sizeof(big), "x", 1, &err),
	    -1);
	assert_int_equal(store_kv_put(st, STORE_TABLE_NODES, big,
	                              STORE_KV_KEY_MAX, "x", 1, &err),
	                 0);
	assert_int_equal(store_kv_put(st, STORE_TABLE_NODES, "k", 1, NULL,
	                              STORE_KV_VALUE_MAX + 1, &err),
	                 -1);
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_COUNT, "k", 1, "x", 1, &err), -1);
	assert_non_null(strstr(err.msg, "no store table"));
	assert_int_equal(
	    store_kv_get(st, (enum store_table) - 1, "k", 1, &got, &len, &err),
	    -1);
	assert_int_equal(store_kv_del(st, STORE_TABLE_COUNT, "k", 1, &err), -1);
	assert_int_equal(
	    store_kv_foreach(st, STORE_TABLE_NODES, NULL, NULL, &err), -1);
	store_close(st);

	/* Persistence across close and reopen. */
	st = open_store();
	kv_expect(st, STORE_TABLE_NODES, "psn1", "two!");
	kv_expect(st, STORE_TABLE_TOKENS, "psn1", "tok");
	kv_expect(st, STORE_TABLE_CONFIG, "empty", "");
	kv_expect(st, STORE_TABLE_NODES, "psn10", NULL);
	/* The generic tables do not disturb the certificate checks. */
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);
}

/* A store made before the generic tables existed. */
static void
test_kv_old_store(void **state)
{
	struct store *st;
	struct store_opts ro = {.read_only = true};
	struct error err = {{0}};
	struct kv_seen seen;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_env *env;
	size_t i;
	const char *tables[] = {"nodes", "tokens", "alarms", "config"};

	(void)state;
	st = open_store();
	store_close(st);
	for (i = 0; i < ARRAY_SIZE(tables); i++) {
		env = raw_open(&txn, &dbi, tables[i]);
		assert_int_equal(mdb_drop(txn, dbi, 1), 0);
		raw_close(env, txn);
	}
	/* Read-only: the missing tables read as empty. */
	assert_int_equal(store_open(storedir, &ro, &st, &err), 0);
	kv_expect(st, STORE_TABLE_NODES, "psn1", NULL);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    store_kv_foreach(st, STORE_TABLE_TOKENS, kv_collect, &seen, &err),
	    0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn1", 4, "x", 1, &err), -1);
	assert_non_null(strstr(err.msg, "read-only"));
	store_close(st);
	/* Read-write creates them. */
	st = open_store();
	assert_int_equal(
	    store_kv_put(st, STORE_TABLE_NODES, "psn1", 4, "x", 1, &err), 0);
	store_close(st);
	assert_int_equal(store_open(storedir, &ro, &st, &err), 0);
	kv_expect(st, STORE_TABLE_NODES, "psn1", "x");
	store_close(st);
}

static void
test_batch(void **state)
{
	struct store *st;
	struct store_batch *b;
	struct store_cert *got = NULL;
	struct store_cert_list list;
	struct error err = {{0}};
	EVP_PKEY *cakey, *key;
	X509 *ca, *leaf1, *leaf2, *leaf3;
	uint8_t ikid[STORE_KEY_ID_LEN];
	const uint8_t sn1[] = {0x11, 0x01}, sn2[] = {0x11, 0x02},
	              sn3[] = {0x11, 0x03};
	size_t count;

	(void)state;
	assert_non_null(cakey = EVP_EC_gen("P-256"));
	assert_non_null(key = EVP_EC_gen("P-256"));
	ca = make_x509(cakey, NULL, cakey, "Certificate Services Node CA",
	               (const uint8_t *)"\x01", 1, false);
	leaf1 = make_x509(key, ca, cakey, "psn1 sub ca", sn1, 2, false);
	leaf2 = make_x509(key, ca, cakey, "psn1 ocsp", sn2, 2, false);
	leaf3 = make_x509(key, ca, cakey, "psn2 sub ca", sn3, 2, false);
	assert_int_equal(store_issuer_key_id(ca, ikid, &err), 0);
	st = open_store();

	/* Empty batch: nothing to do. */
	assert_non_null(b = store_batch_new());
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);

	/* A join: node record, token used, two certificates, together. */
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_NODES, "psn1", 4, "node", 4), 0);
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_TOKENS, "t1", 2, "used", 4), 0);
	assert_int_equal(store_batch_put_x509(b, leaf1, ikid, "pan1",
	                                      "endpoint-sub-ca", 1700000000),
	                 0);
	assert_int_equal(store_batch_put_x509(b, leaf2, ikid, "pan1",
	                                      "ocsp-responder", 1700000000),
	                 0);
	assert_int_equal(store_batch_count(b), 4);
	/* The batch copied the certificate: the caller may free it. */
	X509_free(leaf2);
	leaf2 = NULL;
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);
	kv_expect(st, STORE_TABLE_NODES, "psn1", "node");
	kv_expect(st, STORE_TABLE_TOKENS, "t1", "used");
	assert_int_equal(store_get_cert(st, ikid, sn1, 2, &got, &err),
	                 STORE_OK);
	assert_string_equal(got->profile, "endpoint-sub-ca");
	assert_string_equal(got->issued_by, "pan1");
	store_cert_free(got);
	/* Indexes were written as store_put_x509() writes them. */
	assert_int_equal(store_find_by_serial(st, sn2, 2, &list, &err), 0);
	assert_int_equal(list.count, 1);
	store_cert_list_free(&list);
	assert_int_equal(
	    store_find_by_subject(st, "CN=psn1 ocsp,O=ise-lab", &list, &err),
	    0);
	assert_int_equal(list.count, 1);
	store_cert_list_free(&list);
	assert_int_equal(store_verify(st, NULL, &err), 0);

	/*
	 * Atomicity: a batch whose last operation fails (a certificate
	 * already stored) applies nothing, not even the operations before.
	 */
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_NODES, "psn2", 4, "node", 4), 0);
	assert_int_equal(store_batch_kv_del(b, STORE_TABLE_TOKENS, "t1", 2), 0);
	assert_int_equal(
	    store_batch_put_x509(b, leaf3, ikid, "pan1", "endpoint-sub-ca", 1),
	    0);
	assert_int_equal(store_batch_revoke(b, ikid, sn1, 2, 1700000500, 5), 0);
	assert_int_equal(
	    store_batch_put_x509(b, leaf1, ikid, "pan1", "endpoint-sub-ca", 1),
	    0);
	assert_int_equal(store_apply(st, b, &err), STORE_EXISTS);
	assert_non_null(strstr(err.msg, "operation 5"));
	assert_non_null(strstr(err.msg, "already stored"));
	store_batch_free(b);
	kv_expect(st, STORE_TABLE_NODES, "psn2", NULL);
	kv_expect(st, STORE_TABLE_TOKENS, "t1", "used");
	assert_int_equal(store_get_cert(st, ikid, sn3, 2, &got, &err),
	                 STORE_NOT_FOUND);
	assert_int_equal(store_get_cert(st, ikid, sn1, 2, &got, &err),
	                 STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	store_cert_free(got);
	assert_int_equal(store_count_certs(st, NULL, &count, &err), 0);
	assert_int_equal(count, 2);
	assert_int_equal(store_verify(st, NULL, &err), 0);

	/* The same certificate twice in one batch. */
	assert_non_null(b = store_batch_new());
	assert_int_equal(store_batch_put_x509(b, leaf3, ikid, "pan1", NULL, 1),
	                 0);
	assert_int_equal(store_batch_put_x509(b, leaf3, ikid, "pan1", NULL, 1),
	                 0);
	assert_int_equal(store_apply(st, b, &err), STORE_EXISTS);
	store_batch_free(b);
	assert_int_equal(store_get_cert(st, ikid, sn3, 2, &got, &err),
	                 STORE_NOT_FOUND);

	/* A revocation of an unknown certificate fails the batch. */
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_ALARMS, "a", 1, "x", 1), 0);
	assert_int_equal(store_batch_revoke(b, ikid, (const uint8_t *)"\x77", 1,
	                                    1700000500, 0),
	                 0);
	assert_int_equal(store_apply(st, b, &err), STORE_NOT_FOUND);
	assert_non_null(strstr(err.msg, "no certificate"));
	store_batch_free(b);
	kv_expect(st, STORE_TABLE_ALARMS, "a", NULL);

	/* A refused add fails the whole batch even if unchecked. */
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_ALARMS, "a", 1, "x", 1), 0);
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_ALARMS, "", 0, "x", 1), -1);
	assert_int_equal(store_batch_revoke(b, ikid, sn1, 2, 1700000500,
	                                    STORE_REASON_CERTIFICATE_HOLD),
	                 -1);
	assert_int_equal(store_batch_count(b), 1);
	assert_int_equal(store_apply(st, b, &err), -1);
	assert_non_null(strstr(err.msg, "operation 2 of the batch refused"));
	store_batch_free(b);
	kv_expect(st, STORE_TABLE_ALARMS, "a", NULL);
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_revoke(b, ikid, (const uint8_t *)"\x00", 1, 1, 0), -1);
	assert_int_equal(store_batch_revoke(b, ikid, sn1, 2, 0, 0), -1);
	assert_int_equal(store_batch_put_x509(b, NULL, ikid, "pan1", NULL, 1),
	                 -1);
	ikid[0] ^= 0xff; /* the authority key identifier check */
	assert_int_equal(store_batch_put_x509(b, leaf3, ikid, "pan1", NULL, 1),
	                 -1);
	ikid[0] ^= 0xff;
	assert_int_equal(store_apply(st, b, &err), -1);
	store_batch_free(b);
	assert_int_equal(store_apply(st, NULL, &err), -1);
	assert_int_equal(
	    store_batch_kv_put(NULL, STORE_TABLE_NODES, "a", 1, "x", 1), -1);
	store_batch_free(NULL);

	/*
	 * Removing a node: revoke, delete a key that is not there (fine in a
	 * batch), replay a revocation (first time and reason kept), and put
	 * and revoke a certificate in the same batch.
	 */
	assert_non_null(b = store_batch_new());
	assert_int_equal(store_batch_revoke(b, ikid, sn1, 2, 1700000500, 5), 0);
	assert_int_equal(store_batch_revoke(b, ikid, sn1, 2, 1700000900, 1), 0);
	assert_int_equal(
	    store_batch_kv_del(b, STORE_TABLE_TOKENS, "nothing", 7), 0);
	assert_int_equal(store_batch_kv_del(b, STORE_TABLE_NODES, "psn1", 4),
	                 0);
	assert_int_equal(store_batch_put_x509(b, leaf3, ikid, "pan1", NULL, 1),
	                 0);
	assert_int_equal(store_batch_revoke(b, ikid, sn3, 2, 1700000600, 4), 0);
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);
	store_close(st);

	/* Everything is there after a reopen. */
	st = open_store();
	kv_expect(st, STORE_TABLE_NODES, "psn1", NULL);
	kv_expect(st, STORE_TABLE_TOKENS, "t1", "used");
	assert_int_equal(store_get_cert(st, ikid, sn1, 2, &got, &err),
	                 STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	assert_int_equal(got->revoked_at, 1700000500);
	assert_int_equal(got->reason, 5);
	store_cert_free(got);
	assert_int_equal(store_get_cert(st, ikid, sn3, 2, &got, &err),
	                 STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_REVOKED);
	assert_int_equal(got->reason, 4);
	store_cert_free(got);
	assert_int_equal(store_verify(st, NULL, &err), 0);
	store_close(st);

	X509_free(leaf1);
	X509_free(leaf3);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(cakey);
}

/* A read-only store refuses a batch and stays as it was. */
/* Status set from elsewhere (an event), and the walk / last helpers. */
static int
count_fn(void *ctx, const void *key, size_t klen, const void *val,
         size_t vlen)
{
	(void)key;
	(void)val;
	(void)vlen;
	if (klen > 0 && ((const char *)key)[0] == 'z')
		return 1; /* stop */
	(*(size_t *)ctx)++;
	return 0;
}

static void
test_set_status_and_walks(void **state)
{
	struct store *st;
	struct store_batch *b;
	struct store_cert *got = NULL;
	struct error err = {{0}};
	EVP_PKEY *cakey;
	X509 *ca, *leaf;
	uint8_t ikid[STORE_KEY_ID_LEN], *last = NULL;
	const uint8_t sn[] = {0x21, 0x01}, other[] = {0x21, 0x02};
	size_t n = 0, len;

	(void)state;
	assert_non_null(cakey = EVP_EC_gen("P-256"));
	ca = make_x509(cakey, NULL, cakey, "Endpoint Sub CA",
	               (const uint8_t *)"\x01", 1, false);
	leaf = make_x509(cakey, ca, cakey, "phone", sn, 2, false);
	assert_int_equal(store_issuer_key_id(ca, ikid, &err), 0);
	st = open_store();
	assert_int_equal(store_put_x509(st, leaf, ikid, "psn1", "t", 1, &err),
	                 STORE_OK);
	/* Any order the PAN decided: hold, revoked, even back to good. */
	b = store_batch_new();
	assert_int_equal(store_batch_set_status(b, ikid, sn, 2,
	                                        STORE_STATUS_HOLD, 1000,
	                                        STORE_REASON_CERTIFICATE_HOLD),
	                 0);
	/* Another node's certificate: skipped, the batch still applies. */
	assert_int_equal(store_batch_set_status(b, ikid, other, 2,
	                                        STORE_STATUS_REVOKED, 1000,
	                                        STORE_REASON_KEY_COMPROMISE),
	                 0);
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);
	assert_int_equal(store_get_cert(st, ikid, sn, 2, &got, &err), STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_HOLD);
	assert_int_equal(got->revoked_at, 1000);
	store_cert_free(got);
	b = store_batch_new();
	assert_int_equal(store_batch_set_status(b, ikid, sn, 2,
	                                        STORE_STATUS_GOOD, 2000, 0),
	                 0);
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);
	assert_int_equal(store_get_cert(st, ikid, sn, 2, &got, &err), STORE_OK);
	assert_int_equal(got->status, STORE_STATUS_GOOD);
	assert_int_equal(got->revoked_at, 0);
	assert_int_equal(got->updated_at, 2000);
	store_cert_free(got);
	/* Refused adds: a hold that is not certificateHold, no status. */
	b = store_batch_new();
	assert_int_equal(store_batch_set_status(b, ikid, sn, 2,
	                                        STORE_STATUS_HOLD, 1, 1),
	                 -1);
	assert_int_equal(store_batch_set_status(b, ikid, sn, 2,
	                                        STORE_STATUS_REVOKED, 1,
	                                        STORE_REASON_REMOVE_FROM_CRL),
	                 -1);
	assert_int_equal(store_apply(st, b, &err), -1);
	store_batch_free(b);

	/* kv walks from a key, and the last key. */
	assert_int_equal(store_kv_last(st, STORE_TABLE_CONFIG, &last, &len,
	                               &err),
	                 STORE_NOT_FOUND);
	assert_int_equal(store_kv_put(st, STORE_TABLE_CONFIG, "a1", 2, "", 0,
	                              &err),
	                 0);
	assert_int_equal(store_kv_put(st, STORE_TABLE_CONFIG, "b1", 2, "", 0,
	                              &err),
	                 0);
	assert_int_equal(store_kv_put(st, STORE_TABLE_CONFIG, "b2", 2, "", 0,
	                              &err),
	                 0);
	assert_int_equal(store_kv_put(st, STORE_TABLE_CONFIG, "z9", 2, "", 0,
	                              &err),
	                 0);
	assert_int_equal(store_kv_foreach_from(st, STORE_TABLE_CONFIG, "b", 1,
	                                       count_fn, &n, &err),
	                 1);
	assert_int_equal(n, 2);
	assert_int_equal(store_kv_foreach_from(st, STORE_TABLE_CONFIG, "", 0,
	                                       count_fn, &n, &err),
	                 -1);
	assert_int_equal(store_kv_last(st, STORE_TABLE_CONFIG, &last, &len,
	                               &err),
	                 STORE_OK);
	assert_int_equal(len, 2);
	assert_memory_equal(last, "z9", 2);
	free(last);
	store_close(st);
	X509_free(leaf);
	X509_free(ca);
	EVP_PKEY_free(cakey);
}

static void
test_batch_read_only(void **state)
{
	struct store *st;
	struct store_opts ro = {.read_only = true};
	struct store_batch *b;
	struct error err = {{0}};

	(void)state;
	st = open_store();
	store_close(st);
	assert_int_equal(store_open(storedir, &ro, &st, &err), 0);
	assert_non_null(b = store_batch_new());
	assert_int_equal(
	    store_batch_kv_put(b, STORE_TABLE_CONFIG, "k", 1, "v", 1), 0);
	assert_int_equal(store_apply(st, b, &err), -1);
	assert_non_null(strstr(err.msg, "read-only"));
	store_batch_free(b);
	kv_expect(st, STORE_TABLE_CONFIG, "k", NULL);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_close_reopen, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_open_bad, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_version, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_put_x509, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_find_by_serial, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_find_by_subject, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_detects, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_readers_threads, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_readers_process, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_read_during_write, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kv_old_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_set_status_and_walks, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_batch_read_only, setup,
	                                    teardown),
	};

	/* A killed child must not take the test down through SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
