/*
 * Unit tests for common/ocsp.c, the OCSP responder core.  A lab hierarchy
 * for psn1 (tests/pki/hierarchy.h) and another for psn2 are made in the
 * test; leaf certificates of psn1's Endpoint Sub CA go into a real store
 * in a temporary directory, some revoked or held.  Requests are built with
 * OpenSSL's OCSP client API and every answer is judged by it too:
 * OCSP_basic_verify against the root (strict RFC 6960 4.2.2.2 for the
 * rfc6960 hierarchy, and refused for the legacy one), OCSP_resp_find_status,
 * OCSP_check_nonce.  Covered: good, revoked (time and reason), hold,
 * unknown, unauthorized, SHA-256 CertIDs, unsupported hash algorithms, a
 * multi-certificate request, nonces (echo, too long, empty, twice, policy
 * off), garbage, the cache (identical bytes, invalidation after a status
 * change, re-signing within the margin of nextUpdate, pre-signing by
 * refresh), no responder key, an expired responder certificate, GET
 * base64, and concurrent use from several threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "../pki/hierarchy.h"
#include "cert.h"
#include "ocsp.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"

/* Time of the keyCompromise revocation recorded in the store. */
#define REVOKED_AT ((int64_t)1700000000)

enum leaf {
	L_GOOD,    /* good */
	L_REVOKED, /* revoked, keyCompromise at REVOKED_AT */
	L_HOLD,    /* on hold */
	L_UNKNOWN, /* ours, never recorded */
	L_CHANGE,  /* good, changed by the cache tests */
	L_REFRESH, /* good, revoked by the refresh test */
	L_THREADS, /* good, revoked while threads ask */
	L_OTHER,   /* psn2's, another issuer */
	L_COUNT
};

static struct hier h, h2;     /* psn1's and psn2's hierarchies */
static X509 *leaf[L_COUNT];
static struct store *st;
static uint8_t sub_kid[STORE_KEY_ID_LEN];
static X509_STORE *trust;     /* the root */
static STACK_OF(X509) * chain; /* sub CA and node CA, untrusted */

static X509 *
issue_leaf(struct hier *hh, const char *cn)
{
	struct cert_request req;
	struct error err = {{0}};
	X509 *x = NULL;

	cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
	if (cert_request_set_cn(&req, cn, &err) == -1 ||
	    cert_request_set_key(&req, hh->key[H_CLIENT], &err) == -1 ||
	    cert_request_set_ocsp_url(&req, "http://psn1:2560/ocsp", &err) ==
	        -1 ||
	    cert_issue(&req, hh->cert[H_SUB], hh->key[H_SUB], &x, &err) == -1)
		fail_msg("issue %s: %s", cn, err.msg);
	cert_request_free(&req);
	return x;
}

/* The serial's magnitude, as the store keys it. */
static size_t
serial_of(X509 *x, uint8_t out[STORE_SERIAL_MAX])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	int n;

	assert_non_null(bn);
	n = BN_bn2bin(bn, out);
	BN_free(bn);
	return (size_t)n;
}

static int
setup(void **state)
{
	struct store_opts o = {0};
	struct error err = {{0}};
	char dir[128], cn[32];
	uint8_t sn[STORE_SERIAL_MAX];
	int i;

	if (tmpdir_setup(state) != 0)
		return -1;
	if (hier_build_uniform(&h, "ec-p256", "pan1", "psn1", &err) != 0 ||
	    hier_build_uniform(&h2, "ec-p256", "pan1", "psn2", &err) != 0) {
		fprintf(stderr, "hierarchy: %s\n", err.msg);
		return -1;
	}
	for (i = 0; i < L_COUNT; i++) {
		snprintf(cn, sizeof(cn), "device%d", i);
		leaf[i] = issue_leaf(i == L_OTHER ? &h2 : &h, cn);
	}
	snprintf(dir, sizeof(dir), "%s/store", tmpdir);
	o.map_size = STORE_MAP_SIZE_MIN * 16;
	if (store_open(dir, &o, &st, &err) != 0 ||
	    store_issuer_key_id(h.cert[H_SUB], sub_kid, &err) != 0) {
		fprintf(stderr, "store: %s\n", err.msg);
		return -1;
	}
	for (i = 0; i < L_COUNT; i++) {
		if (i == L_UNKNOWN || i == L_OTHER)
			continue;
		if (store_put_x509(st, leaf[i], sub_kid, "psn1", "tls-client",
		                   time(NULL), &err) != STORE_OK) {
			fprintf(stderr, "store_put_x509: %s\n", err.msg);
			return -1;
		}
	}
	if (store_revoke(st, sub_kid, sn, serial_of(leaf[L_REVOKED], sn),
	                 REVOKED_AT, STORE_REASON_KEY_COMPROMISE,
	                 &err) != STORE_OK ||
	    store_hold(st, sub_kid, sn, serial_of(leaf[L_HOLD], sn),
	               REVOKED_AT + 60, &err) != STORE_OK) {
		fprintf(stderr, "revoke: %s\n", err.msg);
		return -1;
	}
	trust = X509_STORE_new();
	X509_STORE_add_cert(trust, h.cert[H_ROOT]);
	chain = sk_X509_new_null();
	sk_X509_push(chain, h.cert[H_SUB]);
	sk_X509_push(chain, h.cert[H_NODE]);
	return 0;
}

static int
teardown(void **state)
{
	int i;

	for (i = 0; i < L_COUNT; i++)
		X509_free(leaf[i]);
	sk_X509_free(chain);
	X509_STORE_free(trust);
	store_close(st);
	hier_free(&h);
	hier_free(&h2);
	return tmpdir_teardown(state);
}

static struct ocsp_responder *
responder_with(X509 *signer, EVP_PKEY *key, bool nonce, int64_t validity,
               int64_t margin)
{
	struct ocsp_config cfg = {0};
	struct ocsp_responder *r;
	struct error err = {{0}};

	cfg.nonce = nonce;
	cfg.validity = validity;
	cfg.margin = margin;
	r = ocsp_responder_new(signer, key, h.cert[H_SUB], st, &cfg, &err);
	if (r == NULL)
		fail_msg("ocsp_responder_new: %s", err.msg);
	return r;
}

static struct ocsp_responder *
responder(void)
{
	return responder_with(h.cert[H_OCSP], h.key[H_OCSP], true, 3600, 0);
}

/* The CertID for leaf l with md; psn2's leaf under psn2's sub CA. */
static OCSP_CERTID *
certid(enum leaf l, const EVP_MD *md)
{
	OCSP_CERTID *id = OCSP_cert_to_id(
	    md, leaf[l], l == L_OTHER ? h2.cert[H_SUB] : h.cert[H_SUB]);

	assert_non_null(id);
	return id;
}

static uint8_t *
req_der(OCSP_REQUEST *req, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_OCSP_REQUEST(req, &der);

	assert_true(n > 0);
	*len = (size_t)n;
	return der;
}

/*
 * A request for n leaves with md; nonce_len > 0 adds a nonce of that
 * many random octets.  *out keeps the request (for the nonce check).
 */
static uint8_t *
make_req(const enum leaf *ls, size_t n, const EVP_MD *md, int nonce_len,
         OCSP_REQUEST **out, size_t *len)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	uint8_t *der;
	size_t i;

	assert_non_null(req);
	for (i = 0; i < n; i++)
		assert_non_null(OCSP_request_add0_id(req, certid(ls[i], md)));
	if (nonce_len > 0)
		assert_int_equal(
		    OCSP_request_add1_nonce(req, NULL, nonce_len), 1);
	der = req_der(req, len);
	if (out != NULL)
		*out = req;
	else
		OCSP_REQUEST_free(req);
	return der;
}

static void
ask(struct ocsp_responder *r, const uint8_t *der, size_t len,
    struct ocsp_answer *ans)
{
	assert_int_equal(ocsp_respond(r, der, len, ans), 0);
	assert_non_null(ans->der);
	assert_true(ans->len > 0);
}

/* The answer as OpenSSL reads it: status, and basic when successful. */
static OCSP_BASICRESP *
parse(const struct ocsp_answer *ans, int want_status)
{
	const unsigned char *p = ans->der;
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)ans->len);
	OCSP_BASICRESP *bs;

	assert_non_null(resp);
	assert_ptr_equal(p, ans->der + ans->len);
	assert_int_equal(OCSP_response_status(resp), want_status);
	assert_int_equal(ans->status, want_status);
	bs = OCSP_response_get1_basic(resp);
	OCSP_RESPONSE_free(resp);
	if (want_status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
		/* RFC 6960 4.2.1: no responseBytes in an error answer. */
		assert_null(bs);
		ERR_clear_error();
		return NULL;
	}
	assert_non_null(bs);
	return bs;
}

/* Strict verification, as a client that has the chain and the root. */
static int
verify(OCSP_BASICRESP *bs)
{
	int rc = OCSP_basic_verify(bs, chain, trust, 0);

	ERR_clear_error();
	return rc;
}

/* The status of leaf l (hashed with md) in bs; reason and times out. */
static int
status_of(OCSP_BASICRESP *bs, enum leaf l, const EVP_MD *md, int *reason,
          int64_t *rev, int64_t *thisupd, int64_t *nextupd)
{
	ASN1_GENERALIZEDTIME *r = NULL, *t = NULL, *nx = NULL;
	OCSP_CERTID *id = certid(l, md);
	int status = -1, why = -1, days, secs;
	ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);

	assert_int_equal(
	    OCSP_resp_find_status(bs, id, &status, &why, &r, &t, &nx), 1);
	OCSP_CERTID_free(id);
	if (reason != NULL)
		*reason = why;
	if (rev != NULL) {
		*rev = 0;
		if (r != NULL && ASN1_TIME_diff(&days, &secs, epoch, r))
			*rev = (int64_t)days * 86400 + secs;
	}
	if (thisupd != NULL && ASN1_TIME_diff(&days, &secs, epoch, t))
		*thisupd = (int64_t)days * 86400 + secs;
	if (nextupd != NULL) {
		assert_non_null(nx);
		assert_true(ASN1_TIME_diff(&days, &secs, epoch, nx));
		*nextupd = (int64_t)days * 86400 + secs;
	}
	ASN1_TIME_free(epoch);
	return status;
}

/* One leaf, SHA-1, no nonce: the status, after checking the basics. */
static int
ask_one(struct ocsp_responder *r, enum leaf l, const EVP_MD *md, int *reason,
        struct ocsp_answer *ans)
{
	OCSP_BASICRESP *bs;
	uint8_t *der;
	size_t len;
	int s;

	der = make_req(&l, 1, md, 0, NULL, &len);
	ask(r, der, len, ans);
	OPENSSL_free(der);
	bs = parse(ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(OCSP_resp_count(bs), 1);
	s = status_of(bs, l, md, reason, NULL, NULL, NULL);
	OCSP_BASICRESP_free(bs);
	return s;
}

static void
test_good(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	const ASN1_OCTET_STRING *kid = NULL;
	const X509_NAME *name = NULL;
	const STACK_OF(X509) * certs;
	unsigned char want[SHA_DIGEST_LENGTH];
	OCSP_BASICRESP *bs;
	int64_t t0 = time(NULL), thisupd = 0, nextupd = 0;
	enum leaf l = L_GOOD;
	uint8_t *der;
	size_t len;

	(void)state;
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(status_of(bs, L_GOOD, EVP_sha1(), NULL, NULL,
	                           &thisupd, &nextupd),
	                 V_OCSP_CERTSTATUS_GOOD);
	/* thisUpdate now, nextUpdate a validity later (RFC 5019 2.2.4). */
	assert_true(thisupd >= t0 && thisupd <= t0 + 2);
	assert_int_equal(nextupd - thisupd, 3600);
	assert_int_equal(ans.this_update, thisupd);
	assert_int_equal(ans.next_update, nextupd);
	assert_true(ans.produced_at >= t0);
	/* responderID byKey: SHA-1 of the responder's key (4.2.2.3). */
	assert_int_equal(OCSP_resp_get0_id(bs, &kid, &name), 1);
	assert_null(name);
	assert_non_null(kid);
	assert_int_equal(X509_pubkey_digest(h.cert[H_OCSP], EVP_sha1(), want,
	                                    NULL),
	                 1);
	assert_int_equal(ASN1_STRING_length(kid), SHA_DIGEST_LENGTH);
	assert_memory_equal(ASN1_STRING_get0_data(kid), want,
	                    SHA_DIGEST_LENGTH);
	/* The responder certificate is included, and only it. */
	certs = OCSP_resp_get0_certs(bs);
	assert_int_equal(sk_X509_num(certs), 1);
	assert_int_equal(X509_cmp(sk_X509_value(certs, 0), h.cert[H_OCSP]),
	                 0);
	/* No nonce asked, none given. */
	assert_int_equal(OCSP_BASICRESP_get_ext_by_NID(
	                     bs, NID_id_pkix_OCSP_Nonce, -1),
	                 -1);
	assert_true(ans.cacheable);
	assert_int_equal(ans.ncerts, 1);
	assert_int_equal(strlen(ans.etag), 42);
	assert_non_null(strstr(ans.summary, "good"));
	OCSP_BASICRESP_free(bs);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_revoked_and_hold(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	OCSP_BASICRESP *bs;
	int64_t rev = 0;
	int reason = -1;
	enum leaf l = L_REVOKED;
	uint8_t *der;
	size_t len;

	(void)state;
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(
	    status_of(bs, L_REVOKED, EVP_sha1(), &reason, &rev, NULL, NULL),
	    V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	assert_int_equal(rev, REVOKED_AT);
	assert_non_null(strstr(ans.summary, "revoked (keyCompromise)"));
	OCSP_BASICRESP_free(bs);
	ocsp_answer_free(&ans);

	/* Hold: revoked with reason certificateHold. */
	l = L_HOLD;
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(
	    status_of(bs, L_HOLD, EVP_sha1(), &reason, &rev, NULL, NULL),
	    V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_CERTIFICATEHOLD);
	assert_int_equal(rev, REVOKED_AT + 60);
	OCSP_BASICRESP_free(bs);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_unknown_and_unauthorized(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	enum leaf l = L_OTHER;
	uint8_t *der;
	size_t len;

	(void)state;
	/* Ours, but never issued as far as the store knows. */
	assert_int_equal(ask_one(r, L_UNKNOWN, EVP_sha1(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_UNKNOWN);
	assert_true(ans.cacheable);
	ocsp_answer_free(&ans);
	/* Another PSN's certificate: not our issuer at all. */
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	assert_false(ans.cacheable);
	assert_non_null(strstr(ans.summary, "unauthorized"));
	ocsp_answer_free(&ans);
	/* Even with its nonce. */
	der = make_req(&l, 1, EVP_sha256(), 16, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_sha256(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	int reason;

	(void)state;
	assert_int_equal(ask_one(r, L_GOOD, EVP_sha256(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_GOOD);
	ocsp_answer_free(&ans);
	assert_int_equal(ask_one(r, L_REVOKED, EVP_sha256(), &reason, &ans),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	ocsp_answer_free(&ans);
	assert_int_equal(ask_one(r, L_GOOD, EVP_sha512(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_GOOD);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

/* The SHA-1 algorithm OID in a DER CertID, to swap for another. */
static const uint8_t sha1_oid[] = {0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a};

static void
test_unsupported_hash(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	OCSP_BASICRESP *bs;
	OCSP_REQUEST *req;
	OCSP_CERTID *md5id, *odd;
	enum leaf ls[2] = {L_GOOD, L_GOOD};
	uint8_t *der, *p;
	const unsigned char *q;
	unsigned char *cid = NULL;
	size_t len, i;
	int n;

	(void)state;
	/* MD5 alone: we cannot tell whose it is. */
	der = make_req(ls, 1, EVP_md5(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	assert_non_null(strstr(ans.summary, "unsupported algorithm"));
	ocsp_answer_free(&ans);

	/* With one of ours: ours answered, the MD5 one unknown. */
	req = OCSP_REQUEST_new();
	assert_non_null(OCSP_request_add0_id(req, certid(L_GOOD, EVP_sha1())));
	md5id = certid(L_GOOD, EVP_md5());
	assert_non_null(OCSP_request_add0_id(req, md5id));
	der = req_der(req, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(OCSP_resp_count(bs), 2);
	assert_int_equal(status_of(bs, L_GOOD, EVP_sha1(), NULL, NULL, NULL,
	                           NULL),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(status_of(bs, L_GOOD, EVP_md5(), NULL, NULL, NULL,
	                           NULL),
	                 V_OCSP_CERTSTATUS_UNKNOWN);
	assert_false(ans.cacheable);
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&ans);

	/* An algorithm OID nobody knows (1.3.14.3.2.27), hashes of SHA-1. */
	odd = certid(L_GOOD, EVP_sha1());
	n = i2d_OCSP_CERTID(odd, &cid);
	assert_true(n > 0);
	OCSP_CERTID_free(odd);
	for (i = 0, p = NULL; i + sizeof(sha1_oid) <= (size_t)n; i++)
		if (memcmp(cid + i, sha1_oid, sizeof(sha1_oid)) == 0)
			p = cid + i;
	assert_non_null(p);
	if (p != NULL)
		p[sizeof(sha1_oid) - 1] = 0x1b;
	q = cid;
	assert_non_null(odd = d2i_OCSP_CERTID(NULL, &q, n));
	OPENSSL_free(cid);
	req = OCSP_REQUEST_new();
	assert_non_null(OCSP_request_add0_id(req, odd));
	der = req_der(req, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_multi_with_nonce(void **state)
{
	struct ocsp_responder *r = responder();
	enum leaf ls[5] = {L_GOOD, L_REVOKED, L_HOLD, L_UNKNOWN, L_OTHER};
	struct ocsp_answer ans;
	OCSP_BASICRESP *bs;
	OCSP_REQUEST *req;
	int reason;
	uint8_t *der;
	size_t len;

	(void)state;
	der = make_req(ls, 5, EVP_sha1(), 32, &req, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	/* psn2's certificate is not ours: the strict check refuses the
	 * whole response for it, so verify what we can answer for. */
	assert_int_equal(OCSP_resp_count(bs), 5);
	assert_int_equal(OCSP_check_nonce(req, bs), 1);
	assert_int_equal(
	    status_of(bs, L_GOOD, EVP_sha1(), NULL, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(
	    status_of(bs, L_REVOKED, EVP_sha1(), &reason, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
	assert_int_equal(
	    status_of(bs, L_HOLD, EVP_sha1(), &reason, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_CERTIFICATEHOLD);
	assert_int_equal(
	    status_of(bs, L_UNKNOWN, EVP_sha1(), NULL, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_UNKNOWN);
	assert_int_equal(
	    status_of(bs, L_OTHER, EVP_sha1(), NULL, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_UNKNOWN);
	assert_false(ans.cacheable);
	assert_int_equal(ans.ncerts, 5);
	assert_non_null(strstr(ans.summary, "5 certificates: 1 good, 2 "
	                                    "revoked, 2 unknown, nonce"));
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&ans);

	/* Ours only: the strict verification passes. */
	der = make_req(ls, 4, EVP_sha256(), 16, &req, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(OCSP_check_nonce(req, bs), 1);
	assert_int_equal(OCSP_resp_count(bs), 4);
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

/*
 * A request for L_GOOD with times nonce extensions holding value (vlen
 * octets), encoded as RFC 8954 says (an OCTET STRING in extnValue).
 */
static uint8_t *
nonce_req(const uint8_t *value, int vlen, int times, size_t *len)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	ASN1_OCTET_STRING *wrapped = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext;
	unsigned char *inner = NULL;
	uint8_t *der;
	int i, n;

	assert_non_null(OCSP_request_add0_id(req, certid(L_GOOD, EVP_sha1())));
	assert_int_equal(ASN1_OCTET_STRING_set(os, value, vlen), 1);
	n = i2d_ASN1_OCTET_STRING(os, &inner);
	assert_true(n > 0);
	assert_int_equal(ASN1_OCTET_STRING_set(wrapped, inner, n), 1);
	for (i = 0; i < times; i++) {
		ext = X509_EXTENSION_create_by_NID(
		    NULL, NID_id_pkix_OCSP_Nonce, 0, wrapped);
		assert_non_null(ext);
		assert_int_equal(OCSP_REQUEST_add_ext(req, ext, -1), 1);
		X509_EXTENSION_free(ext);
	}
	der = req_der(req, len);
	OPENSSL_free(inner);
	ASN1_OCTET_STRING_free(wrapped);
	ASN1_OCTET_STRING_free(os);
	OCSP_REQUEST_free(req);
	return der;
}

static void
test_nonce(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer a1, a2;
	OCSP_BASICRESP *bs;
	OCSP_REQUEST *req;
	enum leaf l = L_GOOD;
	uint8_t *der, big[64];
	size_t len;

	(void)state;
	memset(big, 0xa5, sizeof(big));
	/* 32 octets, the most RFC 8954 allows: echoed, signed each time. */
	der = make_req(&l, 1, EVP_sha1(), 32, &req, &len);
	ask(r, der, len, &a1);
	ask(r, der, len, &a2);
	OPENSSL_free(der);
	bs = parse(&a1, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(OCSP_check_nonce(req, bs), 1);
	assert_false(a1.cacheable);
	assert_false(a1.cache_hit);
	assert_false(a2.cache_hit);
	/* ECDSA signatures are randomised: a fresh signature differs. */
	assert_false(a1.len == a2.len &&
	             memcmp(a1.der, a2.der, a1.len) == 0);
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&a1);
	ocsp_answer_free(&a2);

	/* 33 octets: malformedRequest (RFC 8954 section 2.1). */
	der = make_req(&l, 1, EVP_sha1(), 33, NULL, &len);
	ask(r, der, len, &a1);
	OPENSSL_free(der);
	parse(&a1, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	assert_non_null(strstr(a1.summary, "nonce of 33 octets"));
	ocsp_answer_free(&a1);
	/* 1 octet is allowed, 0 is not, and neither are two nonces. */
	der = nonce_req(big, 1, 1, &len);
	ask(r, der, len, &a1);
	OPENSSL_free(der);
	OCSP_BASICRESP_free(parse(&a1, OCSP_RESPONSE_STATUS_SUCCESSFUL));
	ocsp_answer_free(&a1);
	der = nonce_req(big, 0, 1, &len);
	ask(r, der, len, &a1);
	OPENSSL_free(der);
	parse(&a1, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&a1);
	der = nonce_req(big, 64, 1, &len);
	ask(r, der, len, &a1);
	OPENSSL_free(der);
	parse(&a1, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&a1);
	der = nonce_req(big, 16, 2, &len);
	ask(r, der, len, &a1);
	OPENSSL_free(der);
	parse(&a1, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	assert_non_null(strstr(a1.summary, "more than one nonce"));
	ocsp_answer_free(&a1);
	ocsp_responder_free(r);
}

static void
test_nonce_off(void **state)
{
	struct ocsp_responder *r =
	    responder_with(h.cert[H_OCSP], h.key[H_OCSP], false, 3600, 0);
	struct ocsp_answer a1, a2;
	OCSP_BASICRESP *bs;
	OCSP_REQUEST *req;
	enum leaf l = L_GOOD;
	uint8_t *der;
	size_t len;

	(void)state;
	/* RFC 5019 profile: the nonce is ignored, even a long one. */
	der = make_req(&l, 1, EVP_sha1(), 33, &req, &len);
	ask(r, der, len, &a1);
	ask(r, der, len, &a2);
	OPENSSL_free(der);
	bs = parse(&a1, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(verify(bs), 1);
	assert_int_equal(OCSP_check_nonce(req, bs), -1);
	assert_true(a1.cacheable);
	assert_true(a2.cache_hit);
	assert_int_equal(a1.len, a2.len);
	assert_memory_equal(a1.der, a2.der, a1.len);
	OCSP_BASICRESP_free(bs);
	OCSP_REQUEST_free(req);
	ocsp_answer_free(&a1);
	ocsp_answer_free(&a2);
	ocsp_responder_free(r);
}

static void
test_garbage(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	OCSP_REQUEST *empty;
	enum leaf l = L_GOOD;
	uint8_t junk[512], *der, *longer;
	unsigned char *cert = NULL;
	size_t len, i;
	int n;

	(void)state;
	/* Nothing, random bytes, a certificate, cut and padded requests. */
	assert_int_equal(ocsp_respond(r, (const uint8_t *)"", 0, &ans), 0);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	for (i = 0; i < 50; i++) {
		RAND_bytes(junk, sizeof(junk));
		if (i % 2 == 0)
			junk[0] = 0x30; /* a SEQUENCE, to go deeper */
		ask(r, junk, 1 + i * 10, &ans);
		parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
		ocsp_answer_free(&ans);
	}
	n = i2d_X509(leaf[L_GOOD], &cert);
	ask(r, cert, (size_t)n, &ans);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	OPENSSL_free(cert);
	der = make_req(&l, 1, EVP_sha1(), 16, NULL, &len);
	for (i = 1; i < len; i += 7) {
		ask(r, der, i, &ans);
		parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
		ocsp_answer_free(&ans);
	}
	longer = malloc(len + 1);
	memcpy(longer, der, len);
	longer[len] = 0;
	ask(r, longer, len + 1, &ans);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	assert_non_null(strstr(ans.summary, "bytes after"));
	ocsp_answer_free(&ans);
	free(longer);
	OPENSSL_free(der);
	/* A request for no certificate at all. */
	empty = OCSP_REQUEST_new();
	der = req_der(empty, &len);
	ask(r, der, len, &ans);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	OPENSSL_free(der);
	OCSP_REQUEST_free(empty);
	/* And the responder still answers. */
	assert_int_equal(ask_one(r, L_GOOD, EVP_sha1(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_GOOD);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_too_many_certs(void **state)
{
	struct ocsp_responder *r = responder();
	enum leaf ls[OCSP_REQUEST_CERTS_MAX + 1];
	struct ocsp_answer ans;
	uint8_t *der;
	size_t len, i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(ls); i++)
		ls[i] = L_GOOD;
	der = make_req(ls, OCSP_REQUEST_CERTS_MAX, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	assert_int_equal(ans.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(ans.ncerts, OCSP_REQUEST_CERTS_MAX);
	ocsp_answer_free(&ans);
	der = make_req(ls, ARRAY_SIZE(ls), EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
set_status(enum leaf l, enum store_cert_status to, int64_t when)
{
	struct error err = {{0}};
	uint8_t sn[STORE_SERIAL_MAX];
	size_t n = serial_of(leaf[l], sn);
	int rc;

	switch (to) {
	case STORE_STATUS_REVOKED:
		rc = store_revoke(st, sub_kid, sn, n, when,
		                  STORE_REASON_SUPERSEDED, &err);
		break;
	case STORE_STATUS_HOLD:
		rc = store_hold(st, sub_kid, sn, n, when, &err);
		break;
	default:
		rc = store_release(st, sub_kid, sn, n, when, &err);
		break;
	}
	if (rc != STORE_OK)
		fail_msg("status change: %d %s", rc, err.msg);
}

static void
test_cache(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer a1, a2, a3;
	int reason;

	(void)state;
	/* Hold L_CHANGE first (good -> hold -> good -> revoked below). */
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), NULL, &a1),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_false(a1.cache_hit);
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), NULL, &a2),
	                 V_OCSP_CERTSTATUS_GOOD);
	/* A hit: the very same bytes, no new signature. */
	assert_true(a2.cache_hit);
	assert_int_equal(a1.len, a2.len);
	assert_memory_equal(a1.der, a2.der, a1.len);
	assert_string_equal(a1.etag, a2.etag);
	assert_int_equal(a1.this_update, a2.this_update);
	assert_int_equal(a1.next_update, a2.next_update);
	assert_non_null(strstr(a2.summary, "(cached)"));
	/* SHA-256 is another CertID, another entry. */
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha256(), NULL, &a3),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_false(a3.cache_hit);
	assert_string_not_equal(a1.etag, a3.etag);
	ocsp_answer_free(&a2);
	ocsp_answer_free(&a3);
	assert_int_equal(ocsp_responder_cached(r), 2);

	/* Held: the next answer says so at once, newly signed. */
	set_status(L_CHANGE, STORE_STATUS_HOLD, time(NULL));
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), &reason, &a2),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_CERTIFICATEHOLD);
	assert_false(a2.cache_hit);
	assert_string_not_equal(a1.etag, a2.etag);
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha256(), &reason, &a3),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_false(a3.cache_hit);
	ocsp_answer_free(&a3);
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), &reason, &a3),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_true(a3.cache_hit);
	assert_memory_equal(a2.der, a3.der, a2.len);
	ocsp_answer_free(&a2);
	ocsp_answer_free(&a3);
	/* Released, in the same second as the hold: good again. */
	set_status(L_CHANGE, STORE_STATUS_GOOD, time(NULL));
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), NULL, &a2),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_false(a2.cache_hit);
	ocsp_answer_free(&a2);
	/* Revoked for good. */
	set_status(L_CHANGE, STORE_STATUS_REVOKED, time(NULL));
	assert_int_equal(ask_one(r, L_CHANGE, EVP_sha1(), &reason, &a2),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_SUPERSEDED);
	assert_false(a2.cache_hit);
	ocsp_answer_free(&a2);
	assert_int_equal(ocsp_responder_cached(r), 2);
	ocsp_answer_free(&a1);
	ocsp_responder_free(r);
}

static void
test_resign_before_next_update(void **state)
{
	/* 3 s validity, re-signed 2 s before nextUpdate: good for 1 s. */
	struct ocsp_responder *r =
	    responder_with(h.cert[H_OCSP], h.key[H_OCSP], true, 3, 2);
	struct ocsp_answer a1, a2;

	(void)state;
	assert_int_equal(ask_one(r, L_GOOD, EVP_sha1(), NULL, &a1),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_int_equal(a1.next_update - a1.this_update, 3);
	while (time(NULL) < a1.this_update + 1)
		usleep(50000);
	assert_int_equal(ask_one(r, L_GOOD, EVP_sha1(), NULL, &a2),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_false(a2.cache_hit);
	assert_true(a2.this_update > a1.this_update);
	ocsp_answer_free(&a1);
	ocsp_answer_free(&a2);
	ocsp_responder_free(r);
}

static void
test_refresh(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_refresh_report rep;
	struct ocsp_answer ans;
	struct error err = {{0}};
	size_t ours;
	int reason;

	(void)state;
	assert_int_equal(ocsp_responder_refresh(r, &rep, &err), 0);
	/* Every leaf of ours in the store (and nothing of psn2's). */
	ours = rep.ours;
	assert_int_equal(ours, L_COUNT - 2);
	assert_int_equal(rep.signed_, ours);
	assert_int_equal(rep.cached, ours);
	assert_int_equal(rep.failed, 0);
	/* Pre-signed: even the first GET-style request is a hit. */
	assert_int_equal(ask_one(r, L_REFRESH, EVP_sha1(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_true(ans.cache_hit);
	ocsp_answer_free(&ans);
	/* A SHA-256 variant joins the cache when asked. */
	assert_int_equal(ask_one(r, L_REFRESH, EVP_sha256(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_GOOD);
	assert_false(ans.cache_hit);
	ocsp_answer_free(&ans);
	/* Nothing changed: nothing signed. */
	assert_int_equal(ocsp_responder_refresh(r, &rep, &err), 0);
	assert_int_equal(rep.signed_, 0);
	assert_int_equal(rep.fresh, ours + 1);
	/* A revocation: both variants of that one re-signed, ahead. */
	set_status(L_REFRESH, STORE_STATUS_REVOKED, REVOKED_AT + 120);
	assert_int_equal(ocsp_responder_refresh(r, &rep, &err), 0);
	assert_int_equal(rep.signed_, 2);
	assert_int_equal(rep.fresh, ours - 1);
	assert_int_equal(ask_one(r, L_REFRESH, EVP_sha1(), &reason, &ans),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_true(ans.cache_hit);
	assert_int_equal(reason, OCSP_REVOKED_STATUS_SUPERSEDED);
	ocsp_answer_free(&ans);
	assert_int_equal(ask_one(r, L_REFRESH, EVP_sha256(), &reason, &ans),
	                 V_OCSP_CERTSTATUS_REVOKED);
	assert_true(ans.cache_hit);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_no_key(void **state)
{
	struct ocsp_responder *r;
	struct ocsp_answer ans;
	struct ocsp_refresh_report rep;
	struct error err = {{0}};
	enum leaf l = L_GOOD;
	uint8_t *der;
	size_t len;

	(void)state;
	/* A key that is not the certificate's is refused. */
	assert_null(ocsp_responder_new(h.cert[H_OCSP], h.key[H_SUB],
	                               h.cert[H_SUB], st, NULL, &err));
	assert_non_null(strstr(err.msg, "does not match"));
	assert_null(ocsp_responder_new(h.cert[H_OCSP], NULL, h.cert[H_SUB],
	                               st, NULL, &err));
	/* No key at all: tryLater, never a crash or an unsigned "good". */
	r = responder_with(NULL, NULL, true, 3600, 0);
	assert_false(ocsp_responder_can_sign(r));
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	parse(&ans, OCSP_RESPONSE_STATUS_TRYLATER);
	assert_non_null(strstr(ans.summary, "key is unavailable"));
	ocsp_answer_free(&ans);
	assert_int_equal(ocsp_responder_refresh(r, &rep, &err), 0);
	assert_int_equal(rep.signed_, 0);
	/* Garbage is still malformed. */
	ask(r, (const uint8_t *)"\x30\x03\x02\x01\x01", 5, &ans);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

/*
 * A hierarchy backdated by ten days (cert_issue() keeps a certificate
 * inside its issuer's validity), so that its responder certificate can
 * have expired already.  Only the responder certificate matters here.
 */
static void
backdated(struct hier *hx)
{
	static const enum hier_slot slots[] = {H_ROOT, H_NODE, H_SUB};
	struct error err = {{0}};
	EVP_PKEY *k;
	size_t i;

	memset(hx, 0, sizeof(*hx));
	for (i = 0; i < ARRAY_SIZE(slots); i++) {
		assert_non_null(k = hier_keygen("ec-p256"));
		if (hier_issue(hx, slots[i], k, "pan1", "psn1",
		               time(NULL) - 10 * 86400, 0, &err) != 0)
			fail_msg("%s", err.msg);
		EVP_PKEY_free(k);
	}
}

static void
test_responder_validity(void **state)
{
	struct hier hx;
	struct ocsp_responder *r;
	struct ocsp_answer ans;
	struct error err = {{0}};
	enum leaf l = L_GOOD;
	time_t na;
	uint8_t *der;
	size_t len;

	(void)state;
	backdated(&hx);
	/* Expired an hour ago: tryLater. */
	if (hier_issue(&hx, H_OCSP, h.key[H_OCSP], "pan1", "psn1",
	               time(NULL) - 7200, 3600, &err) != 0)
		fail_msg("%s", err.msg);
	r = responder_with(hx.cert[H_OCSP], h.key[H_OCSP], true, 3600, 0);
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	parse(&ans, OCSP_RESPONSE_STATUS_TRYLATER);
	assert_non_null(strstr(ans.summary, "expired"));
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
	/* Expiring in 100 s: nextUpdate no later than that. */
	if (hier_issue(&hx, H_OCSP, h.key[H_OCSP], "pan1", "psn1",
	               time(NULL) - 3500, 3600, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(cert_not_after(hx.cert[H_OCSP], &na, &err), 0);
	r = responder_with(hx.cert[H_OCSP], h.key[H_OCSP], true, 3600, 0);
	ask(r, der, len, &ans);
	assert_int_equal(ans.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_int_equal(ans.next_update, (int64_t)na);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
	OPENSSL_free(der);
	hier_free(&hx);
}

static void
test_legacy_hierarchy(void **state)
{
	struct ocsp_responder *r = responder_with(
	    h.cert[H_OCSP_LEGACY], h.key[H_OCSP_LEGACY], true, 3600, 0);
	STACK_OF(X509) *va = sk_X509_new_null();
	struct ocsp_answer ans;
	OCSP_BASICRESP *bs;
	enum leaf l = L_GOOD;
	uint8_t *der;
	size_t len;

	(void)state;
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	ask(r, der, len, &ans);
	OPENSSL_free(der);
	bs = parse(&ans, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	/*
	 * RFC 6960 4.2.2.2: the Node CA did not issue the endpoint
	 * certificate, so its delegate may not answer for it.
	 */
	assert_true(verify(bs) <= 0);
	/* Trusting the responder certificate itself (-VAfile) works. */
	sk_X509_push(va, h.cert[H_OCSP_LEGACY]);
	assert_int_equal(OCSP_basic_verify(bs, va, trust, OCSP_TRUSTOTHER), 1);
	assert_int_equal(
	    status_of(bs, L_GOOD, EVP_sha1(), NULL, NULL, NULL, NULL),
	    V_OCSP_CERTSTATUS_GOOD);
	OCSP_BASICRESP_free(bs);
	sk_X509_free(va);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_get_decode(void **state)
{
	struct ocsp_responder *r = responder();
	struct ocsp_answer ans;
	struct error err = {{0}};
	enum leaf l = L_GOOD;
	uint8_t *der, *back;
	char *b64, *u;
	size_t len, blen, i;

	(void)state;
	der = make_req(&l, 1, EVP_sha1(), 0, NULL, &len);
	b64 = base64_encode(der, len, 0, &blen);
	back = ocsp_get_decode(b64, blen, &blen, &err);
	assert_non_null(back);
	assert_int_equal(blen, len);
	assert_memory_equal(back, der, len);
	free(back);
	/* base64url without padding is the same request. */
	u = strdup(b64);
	for (i = 0; u[i] != '\0'; i++)
		u[i] = u[i] == '+' ? '-' : u[i] == '/' ? '_' : u[i];
	while (i > 0 && u[i - 1] == '=')
		u[--i] = '\0';
	back = ocsp_get_decode(u, strlen(u), &blen, &err);
	assert_non_null(back);
	assert_memory_equal(back, der, len);
	ask(r, back, blen, &ans);
	assert_int_equal(ans.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
	ocsp_answer_free(&ans);
	free(back);
	/* Bad characters, a cut group, empty: refused. */
	assert_null(ocsp_get_decode("MEow*A", 6, &blen, &err));
	assert_null(ocsp_get_decode("MEow A==", 8, &blen, &err));
	assert_null(ocsp_get_decode("MEowA", 5, &blen, &err));
	assert_null(ocsp_get_decode("", 0, &blen, &err));
	assert_int_equal(ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
	                                   err.msg, &ans),
	                 0);
	parse(&ans, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	ocsp_answer_free(&ans);
	free(u);
	free(b64);
	OPENSSL_free(der);
	ocsp_responder_free(r);
}

/* Workers asking while the main thread changes the status. */
struct ask_thread {
	struct ocsp_responder *r;
	int good, revoked, other;
};

static void *
ask_loop(void *arg)
{
	struct ask_thread *t = arg;
	struct ocsp_answer ans;
	enum leaf l = L_THREADS;
	OCSP_BASICRESP *bs;
	const unsigned char *p;
	OCSP_RESPONSE *resp;
	OCSP_CERTID *id;
	uint8_t *der;
	size_t len;
	int i, s;

	for (i = 0; i < 150; i++) {
		der = make_req(&l, 1, i % 3 == 0 ? EVP_sha256() : EVP_sha1(),
		               i % 5 == 0 ? 16 : 0, NULL, &len);
		if (ocsp_respond(t->r, der, len, &ans) != 0 ||
		    ans.status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
			t->other++;
			OPENSSL_free(der);
			ocsp_answer_free(&ans);
			continue;
		}
		p = ans.der;
		resp = d2i_OCSP_RESPONSE(NULL, &p, (long)ans.len);
		bs = resp != NULL ? OCSP_response_get1_basic(resp) : NULL;
		id = OCSP_cert_to_id(i % 3 == 0 ? EVP_sha256() : EVP_sha1(),
		                     leaf[L_THREADS], h.cert[H_SUB]);
		s = -1;
		if (bs == NULL ||
		    OCSP_resp_find_status(bs, id, &s, NULL, NULL, NULL,
		                          NULL) != 1)
			t->other++;
		else if (s == V_OCSP_CERTSTATUS_GOOD)
			t->good++;
		else if (s == V_OCSP_CERTSTATUS_REVOKED)
			t->revoked++;
		else
			t->other++;
		OCSP_CERTID_free(id);
		OCSP_BASICRESP_free(bs);
		OCSP_RESPONSE_free(resp);
		OPENSSL_free(der);
		ocsp_answer_free(&ans);
	}
	return NULL;
}

static void
test_threads(void **state)
{
	struct ocsp_responder *r = responder();
	struct ask_thread t[4];
	pthread_t tid[4];
	struct ocsp_answer ans;
	int i, good = 0, revoked = 0;

	(void)state;
	memset(t, 0, sizeof(t));
	for (i = 0; i < 4; i++) {
		t[i].r = r;
		assert_int_equal(pthread_create(&tid[i], NULL, ask_loop, &t[i]),
		                 0);
	}
	usleep(20000);
	set_status(L_THREADS, STORE_STATUS_REVOKED, time(NULL));
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(t[i].other, 0);
		good += t[i].good;
		revoked += t[i].revoked;
	}
	assert_int_equal(good + revoked, 4 * 150);
	/* After the change, never the old answer. */
	assert_int_equal(ask_one(r, L_THREADS, EVP_sha1(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_REVOKED);
	ocsp_answer_free(&ans);
	assert_int_equal(ask_one(r, L_THREADS, EVP_sha256(), NULL, &ans),
	                 V_OCSP_CERTSTATUS_REVOKED);
	ocsp_answer_free(&ans);
	ocsp_responder_free(r);
}

static void
test_status_names(void **state)
{
	(void)state;
	assert_string_equal(
	    ocsp_status_name(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST),
	    "malformedRequest");
	assert_string_equal(ocsp_status_name(OCSP_RESPONSE_STATUS_UNAUTHORIZED),
	                    "unauthorized");
	assert_string_equal(ocsp_status_name(OCSP_RESPONSE_STATUS_TRYLATER),
	                    "tryLater");
	assert_string_equal(ocsp_status_name(99), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_revoked_and_hold),
	    cmocka_unit_test(test_unknown_and_unauthorized),
	    cmocka_unit_test(test_sha256),
	    cmocka_unit_test(test_unsupported_hash),
	    cmocka_unit_test(test_multi_with_nonce),
	    cmocka_unit_test(test_nonce),
	    cmocka_unit_test(test_nonce_off),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_too_many_certs),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_resign_before_next_update),
	    cmocka_unit_test(test_refresh),
	    cmocka_unit_test(test_no_key),
	    cmocka_unit_test(test_responder_validity),
	    cmocka_unit_test(test_legacy_hierarchy),
	    cmocka_unit_test(test_get_decode),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_status_names),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
