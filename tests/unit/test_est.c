/*
 * Unit tests for common/est.c, the parts that need no network: the
 * certs-only encoding, CsrAttrs per template, key types, the proof of
 * possession check, the reenrollment identity check, and the chain
 * completeness check that decides between cacerts and 503.  The whole
 * protocol over TLS is tested by tests/est/test_est_conformance.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pkcs7.h>

#include "../pki/hierarchy.h"
#include "chain.h"
#include "csr.h"
#include "est.h"
#include "util.h"

static struct hier h;

static int
setup(void **state)
{
	(void)state;
	return hier_build_uniform(&h, "ec-p256", "pan1", "psn1", NULL);
}

static int
teardown(void **state)
{
	(void)state;
	hier_free(&h);
	return 0;
}

static STACK_OF(X509) * stack(int a, int b, int c)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	int v[3] = {a, b, c}, i;

	for (i = 0; i < 3; i++) {
		if (v[i] < 0)
			continue;
		X509_up_ref(h.cert[v[i]]);
		sk_X509_push(sk, h.cert[v[i]]);
	}
	return sk;
}

static void
test_certs_only(void **state)
{
	STACK_OF(X509) *sk = stack(H_SUB, H_NODE, H_ROOT);
	const unsigned char *p;
	uint8_t *der;
	size_t len;
	PKCS7 *p7;

	(void)state;
	assert_int_equal(est_certs_only(sk, &der, &len, NULL), 0);
	p = der;
	p7 = d2i_PKCS7(NULL, &p, (long)len);
	assert_non_null(p7);
	assert_true(PKCS7_type_is_signed(p7));
	assert_int_equal(sk_X509_num(p7->d.sign->cert), 3);
	assert_int_equal(
	    X509_cmp(sk_X509_value(p7->d.sign->cert, 0), h.cert[H_SUB]), 0);
	assert_int_equal(sk_PKCS7_SIGNER_INFO_num(p7->d.sign->signer_info), 0);
	/* RFC 5272 4.1: no encapsulated content. */
	assert_null(p7->d.sign->contents->d.ptr);
	PKCS7_free(p7);
	free(der);
	chain_free(sk);
}

static bool
has_oid(const uint8_t *der, size_t len, int nid)
{
	unsigned char buf[32], *p = buf;
	int n = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &p);

	return memmem(der, len, buf, (size_t)n) != NULL;
}

static void
test_csrattrs(void **state)
{
	struct est_template t;
	uint8_t *der;
	size_t len;

	(void)state;
	memset(&t, 0, sizeof(t));
	t.key_types = EST_KEY_BIT(KEY_EC_P256);
	t.pop = EST_POP_REQUIRED;
	assert_int_equal(est_csrattrs(&t, &der, &len, NULL), 0);
	assert_int_equal(der[0], 0x30);
	assert_int_equal(der[1], len - 2);
	assert_true(has_oid(der, len, NID_pkcs9_challengePassword));
	assert_true(has_oid(der, len, NID_X9_62_prime256v1));
	assert_true(has_oid(der, len, NID_ecdsa_with_SHA256));
	assert_false(has_oid(der, len, NID_secp384r1));
	assert_false(has_oid(der, len, NID_rsaEncryption));
	free(der);

	t.pop = EST_POP_OFF;
	t.key_types = EST_KEY_BIT(KEY_RSA_2048);
	assert_int_equal(est_csrattrs(&t, &der, &len, NULL), 0);
	assert_false(has_oid(der, len, NID_pkcs9_challengePassword));
	assert_false(has_oid(der, len, NID_X9_62_id_ecPublicKey));
	assert_true(has_oid(der, len, NID_rsaEncryption));
	free(der);
}

static void
test_key_type(void **state)
{
	EVP_PKEY *k;
	enum key_type t;
	struct error err;

	(void)state;
	k = hier_keygen("ec-p384");
	assert_int_equal(est_key_type(k, &t, &err), 0);
	assert_int_equal(t, KEY_EC_P384);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p521");
	assert_int_equal(est_key_type(k, &t, &err), -1);
	assert_non_null(strstr(err.msg, "secp521r1"));
	EVP_PKEY_free(k);
	k = hier_keygen("rsa-1024");
	assert_int_equal(est_key_type(k, &t, &err), -1);
	assert_non_null(strstr(err.msg, "1024"));
	EVP_PKEY_free(k);
}

static void
test_pop(void **state)
{
	EVP_PKEY *k = hier_keygen("ec-p256");
	X509_REQ *req = csr_create(k, "dev", NULL, 0, NULL);
	const uint8_t bind[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	uint8_t other[12] = {0};
	char *b64 = base64_encode(bind, sizeof(bind), 0, NULL);
	struct error err;

	(void)state;
	assert_non_null(req);
	/* No challengePassword. */
	assert_int_equal(est_check_pop(req, EST_POP_OFF, bind, 12, "x", &err),
	                 0);
	assert_int_equal(
	    est_check_pop(req, EST_POP_OPTIONAL, bind, 12, "x", &err), 0);
	assert_int_equal(
	    est_check_pop(req, EST_POP_REQUIRED, bind, 12, "tls-unique", &err),
	    -1);
	assert_non_null(strstr(err.msg, "required"));
	/* The right one. */
	assert_int_equal(csr_set_challenge_password(req, b64, NULL), 0);
	assert_int_equal(
	    est_check_pop(req, EST_POP_REQUIRED, bind, 12, "x", &err), 0);
	/* Another connection's binding, or none. */
	assert_int_equal(
	    est_check_pop(req, EST_POP_OPTIONAL, other, 12, "x", &err), -1);
	assert_non_null(strstr(err.msg, "failed"));
	assert_int_equal(
	    est_check_pop(req, EST_POP_REQUIRED, NULL, 0, NULL, &err), -1);
	/* Off: not looked at. */
	assert_int_equal(est_check_pop(req, EST_POP_OFF, other, 12, "x", &err),
	                 0);
	free(b64);
	X509_REQ_free(req);
	EVP_PKEY_free(k);
}

static void
test_same_identity(void **state)
{
	EVP_PKEY *k = hier_keygen("ec-p256");
	X509 *cert = h.cert[H_SUB]; /* no SAN */
	const char *dns[] = {"x.example"};
	X509_REQ *same, *other, *withsan;
	struct error err;

	(void)state;
	same = csr_create_name(k, X509_get_subject_name(cert), NULL, 0, NULL);
	other = csr_create(k, "someone", NULL, 0, NULL);
	withsan = csr_create_name(k, X509_get_subject_name(cert), dns, 1, NULL);
	assert_int_equal(est_same_identity(same, cert, &err), 0);
	assert_int_equal(est_same_identity(other, cert, &err), -1);
	assert_non_null(strstr(err.msg, "subject differs"));
	assert_int_equal(est_same_identity(withsan, cert, &err), -1);
	assert_non_null(strstr(err.msg, "subjectAltName differs"));
	/* The server certificate has SANs: a CSR without them differs. */
	X509_REQ_free(same);
	same = csr_create_name(k, X509_get_subject_name(h.cert[H_SERVER]), NULL,
	                       0, NULL);
	assert_int_equal(est_same_identity(same, h.cert[H_SERVER], &err), -1);
	X509_REQ_free(same);
	X509_REQ_free(other);
	X509_REQ_free(withsan);
	EVP_PKEY_free(k);
}

/* A backend whose CA set the test chooses. */
static int chain_slots[3];

static STACK_OF(X509) * be_ca(void *ctx, struct error *err)
{
	(void)ctx;
	(void)err;
	return stack(chain_slots[0], chain_slots[1], chain_slots[2]);
}

static STACK_OF(X509) * be_anchors(void *ctx, struct error *err)
{
	(void)ctx;
	(void)err;
	return stack(H_ROOT, -1, -1);
}

static int
be_rev(void *ctx, const ASN1_INTEGER *s, const X509_NAME *i)
{
	(void)ctx;
	(void)s;
	(void)i;
	return 0;
}

static int
be_basic(void *ctx, const char *u, const char *p)
{
	(void)ctx;
	(void)u;
	(void)p;
	return 0;
}

static int
be_label(void *ctx, const char *l, struct est_template *t)
{
	(void)ctx;
	(void)l;
	(void)t;
	return 0;
}

static X509 *
be_enroll(void *ctx, X509_REQ *csr, const struct est_template *t,
          const struct est_identity *id, int *status, struct error *err)
{
	(void)ctx;
	(void)csr;
	(void)t;
	(void)id;
	(void)status;
	(void)err;
	return NULL;
}

static void
test_refresh(void **state)
{
	struct est_backend be = {
	    .ca_certs = be_ca,
	    .trust_anchors = be_anchors,
	    .is_revoked = be_rev,
	    .check_basic = be_basic,
	    .lookup_label = be_label,
	    .enroll = be_enroll,
	};
	struct est_backend incomplete = be;
	struct error err;
	struct est *est;

	(void)state;
	incomplete.enroll = NULL;
	assert_null(est_new(&incomplete, "r", &err));
	est = est_new(&be, "r", &err);
	assert_non_null(est);
	assert_false(est_chain_ok(est));
	/* Complete. */
	chain_slots[0] = H_SUB;
	chain_slots[1] = H_NODE;
	chain_slots[2] = H_ROOT;
	assert_int_equal(est_refresh(est, &err), 0);
	assert_true(est_chain_ok(est));
	/* The Node CA missing. */
	chain_slots[1] = -1;
	assert_int_equal(est_refresh(est, &err), -1);
	assert_non_null(strstr(err.msg, "incomplete"));
	assert_false(est_chain_ok(est));
	/* No root. */
	chain_slots[1] = H_NODE;
	chain_slots[2] = -1;
	assert_int_equal(est_refresh(est, &err), -1);
	assert_non_null(strstr(err.msg, "root"));
	/* A leaf first is not a CA. */
	chain_slots[0] = H_SERVER;
	chain_slots[1] = -1;
	chain_slots[2] = -1;
	assert_int_equal(est_refresh(est, &err), -1);
	assert_non_null(strstr(err.msg, "not a CA"));
	/* Back to complete. */
	chain_slots[0] = H_SUB;
	chain_slots[1] = H_NODE;
	chain_slots[2] = H_ROOT;
	assert_int_equal(est_refresh(est, &err), 0);
	est_free(est);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_certs_only),
	    cmocka_unit_test(test_csrattrs),
	    cmocka_unit_test(test_key_type),
	    cmocka_unit_test(test_pop),
	    cmocka_unit_test(test_same_identity),
	    cmocka_unit_test(test_refresh),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
