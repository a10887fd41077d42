/*
 * Unit tests for common/chain.c: paths through the lab hierarchy verify,
 * and each way they can fail (missing intermediate, expired certificate,
 * wrong anchor, wrong purpose) is reported with the error, the depth and the
 * subject at that depth.  PEM bundles in and out, and their bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "../pki/hierarchy.h"
#include "cert.h"
#include "chain.h"
#include "util.h"

#define PAN "pan1"
#define PSN "psn1"

static char tmpdir[64];
static struct hier lab;   /* the good hierarchy, EC P-256 */
static struct hier other; /* a second PKI for the same host names */

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
	struct error err;

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_chain.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	if (hier_build_uniform(&lab, "ec-p256", PAN, PSN, &err) == -1 ||
	    hier_build_uniform(&other, "ec-p256", PAN, PSN, &err) == -1) {
		fprintf(stderr, "hierarchy: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	hier_free(&lab);
	hier_free(&other);
	return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Verify slot of h against anchor, with the usual intermediates. */
static int
verify(struct hier *h, enum hier_slot slot, X509 *anchor, unsigned flags,
       STACK_OF(X509) * *built, struct error *err)
{
	STACK_OF(X509) *untrusted = hier_untrusted(h, slot);
	STACK_OF(X509) *anchors = hier_stack1(anchor);
	int rc;

	assert_non_null(untrusted);
	assert_non_null(anchors);
	rc = chain_verify(h->cert[slot], untrusted, anchors, flags, built, err);
	chain_free(untrusted);
	chain_free(anchors);
	return rc;
}

static void
test_verify_ok(void **state)
{
	STACK_OF(X509) *built = NULL;
	struct error err = {""};
	int i;

	(void)state;
	if (verify(&lab, H_SERVER, lab.cert[H_ROOT], CHAIN_PURPOSE_TLS_SERVER,
	           &built, &err) == -1)
		fail_msg("%s", err.msg);
	/* Leaf first, anchor last. */
	assert_int_equal(sk_X509_num(built), 4);
	assert_int_equal(X509_cmp(sk_X509_value(built, 0), lab.cert[H_SERVER]),
	                 0);
	assert_int_equal(X509_cmp(sk_X509_value(built, 1), lab.cert[H_SUB]), 0);
	assert_int_equal(X509_cmp(sk_X509_value(built, 2), lab.cert[H_NODE]),
	                 0);
	assert_int_equal(X509_cmp(sk_X509_value(built, 3), lab.cert[H_ROOT]),
	                 0);
	chain_free(built);

	for (i = 0; i < H_COUNT; i++)
		if (verify(&lab, (enum hier_slot)i, lab.cert[H_ROOT],
		           CHAIN_PURPOSE_ANY, NULL, &err) == -1)
			fail_msg("%s: %s", hier_defs[i].file, err.msg);
	assert_int_equal(verify(&lab, H_CLIENT, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_TLS_CLIENT, NULL, &err),
	                 0);
	assert_int_equal(verify(&lab, H_OCSP, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_OCSP_SIGN, NULL, &err),
	                 0);
	assert_int_equal(verify(&lab, H_OCSP_LEGACY, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_OCSP_SIGN, NULL, &err),
	                 0);
}

static void
test_verify_partial(void **state)
{
	STACK_OF(X509) *anchors = hier_stack1(lab.cert[H_SUB]);
	STACK_OF(X509) *built = NULL;
	struct error err;

	(void)state;
	/* Trusting the Sub CA alone works only with CHAIN_PARTIAL. */
	assert_int_equal(chain_verify(lab.cert[H_CLIENT], NULL, anchors,
	                              CHAIN_PURPOSE_TLS_CLIENT, &built, &err),
	                 -1);
	assert_null(built);
	assert_non_null(strstr(err.msg, "at depth 1 (CN=Certificate Services "
	                                "Endpoint Sub CA - psn1)"));
	assert_int_equal(chain_verify(lab.cert[H_CLIENT], NULL, anchors,
	                              CHAIN_PURPOSE_TLS_CLIENT | CHAIN_PARTIAL,
	                              &built, &err),
	                 0);
	assert_int_equal(sk_X509_num(built), 2);
	chain_free(built);
	chain_free(anchors);
}

static void
test_missing_intermediate(void **state)
{
	STACK_OF(X509) *anchors = hier_stack1(lab.cert[H_ROOT]);
	STACK_OF(X509) *untrusted = hier_stack1(lab.cert[H_NODE]);
	STACK_OF(X509) *built = NULL;
	struct error err;

	(void)state;
	/* The Sub CA is missing between the server and the Node CA. */
	assert_int_equal(chain_verify(lab.cert[H_SERVER], untrusted, anchors,
	                              CHAIN_PURPOSE_TLS_SERVER, &built, &err),
	                 -1);
	assert_null(built);
	assert_string_equal(err.msg,
	                    "unable to get local issuer certificate at depth 0 "
	                    "(CN=psn1.lab.example)");
	/* No intermediates at all. */
	assert_int_equal(chain_verify(lab.cert[H_SUB], NULL, anchors,
	                              CHAIN_PURPOSE_ANY, NULL, &err),
	                 -1);
	assert_string_equal(err.msg,
	                    "unable to get local issuer certificate at depth 0 "
	                    "(CN=Certificate Services Endpoint Sub CA - psn1)");
	chain_free(untrusted);
	chain_free(anchors);
}

static void
test_wrong_anchor(void **state)
{
	struct error err;

	(void)state;
	/* Same names, other keys: the path stops at our Node CA. */
	assert_int_equal(verify(&lab, H_SERVER, other.cert[H_ROOT],
	                        CHAIN_PURPOSE_TLS_SERVER, NULL, &err),
	                 -1);
	assert_string_equal(err.msg,
	                    "unable to get local issuer certificate at depth 2 "
	                    "(CN=Certificate Services Node CA - pan1)");
	/* Our own root is fine, the other hierarchy's leaf is not. */
	assert_int_equal(verify(&other, H_CLIENT, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_TLS_CLIENT, NULL, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "at depth 2"));
}

static void
test_wrong_purpose(void **state)
{
	struct error err;

	(void)state;
	assert_int_equal(verify(&lab, H_CLIENT, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_TLS_SERVER, NULL, &err),
	                 -1);
	assert_string_equal(
	    err.msg, "unsuitable certificate purpose at depth 0 (CN=alice)");
	assert_int_equal(verify(&lab, H_SERVER, lab.cert[H_ROOT],
	                        CHAIN_PURPOSE_OCSP_SIGN, NULL, &err),
	                 -1);
	assert_string_equal(
	    err.msg, "no id-kp-OCSPSigning in extendedKeyUsage at depth 0 "
	             "(CN=psn1.lab.example)");
	assert_int_equal(
	    verify(&lab, H_SERVER, lab.cert[H_ROOT], 0x7, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "unknown purpose"));
}

static void
test_expired(void **state)
{
	STACK_OF(X509) * anchors, *untrusted;
	struct error err;
	struct hier h;
	EVP_PKEY *k;
	time_t now = time(NULL);

	(void)state;
	memset(&h, 0, sizeof(h));
	k = hier_keygen("ec-p256");
	assert_int_equal(
	    hier_issue(&h, H_ROOT, k, PAN, PSN, now - 30 * 86400, 0, &err), 0);
	EVP_PKEY_free(k);
	/* A Node CA that expired ten days ago, a responder from its time. */
	k = hier_keygen("ec-p256");
	assert_int_equal(hier_issue(&h, H_NODE, k, PAN, PSN, now - 20 * 86400,
	                            10 * 86400, &err),
	                 0);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p256");
	assert_int_equal(hier_issue(&h, H_OCSP_LEGACY, k, PAN, PSN,
	                            now - 19 * 86400, 86400, &err),
	                 0);
	EVP_PKEY_free(k);
	anchors = hier_stack1(h.cert[H_ROOT]);
	untrusted = hier_stack1(h.cert[H_NODE]);
	assert_int_equal(chain_verify(h.cert[H_OCSP_LEGACY], untrusted, anchors,
	                              CHAIN_PURPOSE_OCSP_SIGN, NULL, &err),
	                 -1);
	assert_string_equal(err.msg,
	                    "certificate has expired at depth 1 "
	                    "(CN=Certificate Services Node CA - pan1)");
	/* The Node CA itself, at depth 0. */
	assert_int_equal(chain_verify(h.cert[H_NODE], NULL, anchors,
	                              CHAIN_PURPOSE_ANY, NULL, &err),
	                 -1);
	assert_string_equal(err.msg,
	                    "certificate has expired at depth 0 "
	                    "(CN=Certificate Services Node CA - pan1)");
	chain_free(untrusted);
	chain_free(anchors);

	/* An expired leaf under a valid chain. */
	k = hier_keygen("ec-p256");
	assert_int_equal(
	    hier_issue(&h, H_NODE, k, PAN, PSN, now - 2 * 86400, 0, &err), 0);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p256");
	assert_int_equal(
	    hier_issue(&h, H_SUB, k, PAN, PSN, now - 2 * 86400, 0, &err), 0);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p256");
	assert_int_equal(
	    hier_issue(&h, H_CLIENT, k, PAN, PSN, now - 7200, 3600, &err), 0);
	EVP_PKEY_free(k);
	assert_int_equal(verify(&h, H_CLIENT, h.cert[H_ROOT],
	                        CHAIN_PURPOSE_TLS_CLIENT, NULL, &err),
	                 -1);
	assert_string_equal(err.msg,
	                    "certificate has expired at depth 0 (CN=alice)");
	hier_free(&h);
}

static void
test_bad_args(void **state)
{
	STACK_OF(X509) *empty = sk_X509_new_null();
	struct error err;

	(void)state;
	assert_int_equal(chain_verify(lab.cert[H_SERVER], NULL, NULL,
	                              CHAIN_PURPOSE_ANY, NULL, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "no trust anchor"));
	assert_int_equal(chain_verify(lab.cert[H_SERVER], NULL, empty,
	                              CHAIN_PURPOSE_ANY, NULL, &err),
	                 -1);
	assert_int_equal(
	    chain_verify(NULL, NULL, empty, CHAIN_PURPOSE_ANY, NULL, NULL), -1);
	sk_X509_free(empty);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_bundle(void **state)
{
	STACK_OF(X509) * certs, *back;
	char path[128];
	struct error err;
	struct stat st;
	BIO *bio;
	char *data, *text;
	long len;
	int i;

	(void)state;
	certs = hier_untrusted(&lab, H_SERVER);
	assert_non_null(certs);
	assert_int_equal(X509_up_ref(lab.cert[H_ROOT]), 1);
	sk_X509_push(certs, lab.cert[H_ROOT]);
	snprintf(path, sizeof(path), "%s/chain.pem", tmpdir);
	assert_int_equal(chain_save_pem(certs, path, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	back = chain_load_pem(path, &err);
	assert_non_null(back);
	assert_int_equal(sk_X509_num(back), 3);
	for (i = 0; i < 3; i++)
		assert_int_equal(
		    X509_cmp(sk_X509_value(back, i), sk_X509_value(certs, i)),
		    0);
	chain_free(back);

	/* Text around and between blocks, and a key block, are skipped. */
	bio = BIO_new(BIO_s_mem());
	BIO_puts(bio, "subject=whatever\n");
	PEM_write_bio_X509(bio, lab.cert[H_SUB]);
	PEM_write_bio_PUBKEY(bio, lab.key[H_SUB]);
	BIO_puts(bio, "# comment\n");
	PEM_write_bio_X509(bio, lab.cert[H_NODE]);
	len = BIO_get_mem_data(bio, &data);
	back = chain_parse_pem(data, (size_t)len, &err);
	assert_non_null(back);
	assert_int_equal(sk_X509_num(back), 2);
	chain_free(back);

	/* A corrupt block is an error, not the end of the bundle. */
	text = malloc((size_t)len + 200);
	assert_non_null(text);
	snprintf(text, (size_t)len + 200,
	         "%.*s-----BEGIN CERTIFICATE-----\nAAAA\n-----END "
	         "CERTIFICATE-----\n",
	         (int)len, data);
	assert_null(chain_parse_pem(text, strlen(text), &err));
	assert_non_null(strstr(err.msg, "PEM_read_bio_X509"));
	free(text);
	BIO_free(bio);

	/* No certificate, empty file, missing file, too many. */
	assert_null(chain_parse_pem("hello\n", 6, &err));
	assert_non_null(strstr(err.msg, "no certificate"));
	snprintf(path, sizeof(path), "%s/empty.pem", tmpdir);
	write_file(path, "");
	assert_null(chain_load_pem(path, &err));
	assert_non_null(strstr(err.msg, "empty.pem"));
	snprintf(path, sizeof(path), "%s/none.pem", tmpdir);
	assert_null(chain_load_pem(path, &err));
	bio = BIO_new(BIO_s_mem());
	for (i = 0; i <= CHAIN_BUNDLE_MAX; i++)
		PEM_write_bio_X509(bio, lab.cert[H_ROOT]);
	len = BIO_get_mem_data(bio, &data);
	assert_null(chain_parse_pem(data, (size_t)len, &err));
	assert_non_null(strstr(err.msg, "more than"));
	BIO_free(bio);

	/* Nothing to save. */
	back = sk_X509_new_null();
	assert_int_equal(chain_save_pem(back, path, &err), -1);
	sk_X509_free(back);
	chain_free(certs);
	chain_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_verify_ok),
	    cmocka_unit_test(test_verify_partial),
	    cmocka_unit_test(test_missing_intermediate),
	    cmocka_unit_test(test_wrong_anchor),
	    cmocka_unit_test(test_wrong_purpose),
	    cmocka_unit_test(test_expired),
	    cmocka_unit_test(test_bad_args),
	    cmocka_unit_test(test_bundle),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
