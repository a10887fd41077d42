/*
 * Unit tests for common/cert.c: every profile of the hierarchy (DESIGN.md
 * section 2) issued with EC and RSA keys and its extensions read back from
 * the issued certificates; a CSR cannot choose its extensions; refusals of
 * weak keys, wrong issuers and malformed requests; the helpers.
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

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../pki/hierarchy.h"
#include "cert.h"
#include "chain.h"
#include "keys.h"
#include "util.h"
#include "tmpdir.h"

#define PAN "pan1"
#define PSN "psn1"


static time_t
asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
	return timegm(&tm);
}

/* Is the extension present, and is it critical? */
static int
ext_crit(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	if (i < 0)
		return -1;
	return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

static void
check_basic_constraints(X509 *x, int pathlen)
{
	BASIC_CONSTRAINTS *bc;
	int crit = 0;

	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_int_equal(crit, 1);
	if (pathlen < 0) {
		assert_int_equal(bc->ca, 0);
		assert_null(bc->pathlen);
	} else {
		assert_int_not_equal(bc->ca, 0);
		assert_non_null(bc->pathlen);
		assert_int_equal(ASN1_INTEGER_get(bc->pathlen), pathlen);
	}
	BASIC_CONSTRAINTS_free(bc);
}

/* The EKU OIDs as NIDs; returns how many. */
static int
eku_nids(X509 *x, int *out, int max)
{
	EXTENDED_KEY_USAGE *eku;
	int i, n;

	if ((eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL)) == NULL)
		return 0;
	n = sk_ASN1_OBJECT_num(eku);
	for (i = 0; i < n && i < max; i++)
		out[i] = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return n;
}

static void
check_serial(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);

	assert_non_null(bn);
	/* RFC 5280 4.1.2.2: positive, <= 20 octets; CA/B: >= 64 bits. */
	assert_false(BN_is_negative(bn));
	assert_true(BN_num_bits(bn) >= 64);
	assert_true(BN_num_bytes(bn) <= 20);
	assert_int_equal(BN_num_bytes(bn), CERT_SERIAL_LEN);
	BN_free(bn);
}

static void
check_key_ids(X509 *x, X509 *issuer)
{
	unsigned char id[KEY_ID_LEN];
	const ASN1_OCTET_STRING *ski, *aki, *iski;

	ski = X509_get0_subject_key_id(x);
	aki = X509_get0_authority_key_id(x);
	assert_non_null(ski);
	assert_non_null(aki);
	assert_int_equal(ext_crit(x, NID_subject_key_identifier), 0);
	assert_int_equal(ext_crit(x, NID_authority_key_identifier), 0);
	assert_int_equal(key_id(X509_get0_pubkey(x), id, NULL), 0);
	assert_int_equal(ASN1_STRING_length(ski), KEY_ID_LEN);
	assert_memory_equal(ASN1_STRING_get0_data(ski), id, KEY_ID_LEN);
	iski = X509_get0_subject_key_id(issuer);
	assert_non_null(iski);
	assert_int_equal(ASN1_OCTET_STRING_cmp(aki, iski), 0);
	assert_int_equal(cert_key_id(x, id, NULL), 0);
	assert_memory_equal(ASN1_STRING_get0_data(ski), id, KEY_ID_LEN);
}

static void
check_ocsp_url(X509 *x, const char *want)
{
	STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(x);

	if (want == NULL) {
		assert_int_equal(ext_crit(x, NID_info_access), -1);
		X509_email_free(urls);
		return;
	}
	assert_non_null(urls);
	assert_int_equal(sk_OPENSSL_STRING_num(urls), 1);
	assert_string_equal(sk_OPENSSL_STRING_value(urls, 0), want);
	assert_int_equal(ext_crit(x, NID_info_access), 0);
	X509_email_free(urls);
}

/* Signature digest follows the issuer key (cert.h). */
static void
check_sig_alg(X509 *x, EVP_PKEY *issuer_key)
{
	int sig = X509_get_signature_nid(x), want;
	char group[64];
	size_t glen;

	if (EVP_PKEY_get_base_id(issuer_key) == EVP_PKEY_RSA) {
		want = NID_sha256WithRSAEncryption;
	} else {
		assert_int_equal(EVP_PKEY_get_group_name(issuer_key, group,
		                                         sizeof(group), &glen),
		                 1);
		want = strcmp(group, "secp384r1") == 0 ? NID_ecdsa_with_SHA384
		                                       : NID_ecdsa_with_SHA256;
	}
	assert_int_equal(sig, want);
}

static void
check_slot(struct hier *h, enum hier_slot slot)
{
	const struct hier_def *d = &hier_defs[slot];
	X509 *x = h->cert[slot];
	X509 *issuer = d->issuer >= 0 ? h->cert[d->issuer] : x;
	EVP_PKEY *issuer_key =
	    d->issuer >= 0 ? h->key[d->issuer] : h->key[slot];
	char cn[CERT_CN_BUF], want[CERT_CN_BUF];
	uint32_t ku, want_ku;
	int ekus[8], n, rsa;

	assert_non_null(x);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x),
	                               X509_get_subject_name(issuer)),
	                 0);
	assert_int_equal(X509_verify(x, X509_get0_pubkey(issuer)), 1);
	check_serial(x);
	check_key_ids(x, issuer);
	check_sig_alg(x, issuer_key);

	/* Names as the product spells them. */
	assert_int_equal(cert_subject_cn(x, cn, sizeof(cn), NULL), 0);
	switch (slot) {
	case H_ROOT:
		assert_string_equal(cn, "Certificate Services Root CA - " PAN);
		break;
	case H_NODE:
		assert_string_equal(cn, "Certificate Services Node CA - " PAN);
		break;
	case H_SUB:
		assert_string_equal(
		    cn, "Certificate Services Endpoint Sub CA - " PSN);
		break;
	case H_OCSP:
	case H_OCSP_LEGACY:
		assert_string_equal(
		    cn, "Certificate Services OCSP Responder - " PSN);
		break;
	case H_SERVER:
		assert_string_equal(cn, PSN ".lab.example");
		break;
	default:
		assert_string_equal(cn, "alice");
		break;
	}
	assert_int_equal(cert_profile_cn(d->profile, d->on_psn ? PSN : PAN,
	                                 want, sizeof(want), NULL),
	                 0);
	if (slot != H_SERVER && slot != H_CLIENT)
		assert_string_equal(cn, want);
	/* Exactly one RDN: CN only, as the product. */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);

	/* basicConstraints and keyUsage, both critical. */
	check_basic_constraints(x, slot == H_ROOT   ? 2
	                           : slot == H_NODE ? 1
	                           : slot == H_SUB  ? 0
	                                            : -1);
	assert_int_equal(ext_crit(x, NID_key_usage), 1);
	ku = X509_get_key_usage(x);
	rsa = EVP_PKEY_get_base_id(h->key[slot]) == EVP_PKEY_RSA;
	if (cert_profile_is_ca(d->profile))
		want_ku = KU_KEY_CERT_SIGN | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE;
	else if (d->profile == CERT_PROFILE_OCSP_RESPONDER)
		want_ku = KU_DIGITAL_SIGNATURE;
	else if (d->profile == CERT_PROFILE_TLS_SERVER)
		want_ku =
		    KU_DIGITAL_SIGNATURE | (rsa ? KU_KEY_ENCIPHERMENT : 0);
	else
		want_ku = KU_DIGITAL_SIGNATURE; /* RFC 5280 4.2.1.12 */
	assert_int_equal(ku, want_ku);

	/* extendedKeyUsage: exactly the profile's one, never critical. */
	n = eku_nids(x, ekus, 8);
	switch (d->profile) {
	case CERT_PROFILE_OCSP_RESPONDER:
		assert_int_equal(n, 1);
		assert_int_equal(ekus[0], NID_OCSP_sign);
		break;
	case CERT_PROFILE_TLS_SERVER:
		assert_int_equal(n, 1);
		assert_int_equal(ekus[0], NID_server_auth);
		break;
	case CERT_PROFILE_TLS_CLIENT:
		assert_int_equal(n, 1);
		assert_int_equal(ekus[0], NID_client_auth);
		break;
	default:
		assert_int_equal(n, 0);
		break;
	}
	if (n > 0)
		assert_int_equal(ext_crit(x, NID_ext_key_usage), 0);

	/* id-pkix-ocsp-nocheck, NULL, on responders only. */
	if (d->profile == CERT_PROFILE_OCSP_RESPONDER) {
		int i = X509_get_ext_by_NID(x, NID_id_pkix_OCSP_noCheck, -1);
		const ASN1_OCTET_STRING *v;

		assert_true(i >= 0);
		v = X509_EXTENSION_get_data(X509_get_ext(x, i));
		assert_int_equal(ASN1_STRING_length(v), 2);
		assert_memory_equal(ASN1_STRING_get0_data(v), "\x05\x00", 2);
	} else {
		assert_int_equal(ext_crit(x, NID_id_pkix_OCSP_noCheck), -1);
	}

	/* SAN and AIA only on the end-entity profiles that take them. */
	if (slot == H_SERVER || slot == H_CLIENT) {
		assert_int_equal(ext_crit(x, NID_subject_alt_name), 0);
		check_ocsp_url(x, "http://" PSN ":2560/ocsp");
	} else {
		assert_int_equal(ext_crit(x, NID_subject_alt_name), -1);
		check_ocsp_url(x, NULL);
	}
	if (slot == H_SERVER) {
		assert_int_equal(
		    X509_check_host(x, PSN ".lab.example", 0, 0, NULL), 1);
		assert_int_equal(X509_check_ip_asc(x, "192.0.2.10", 0), 1);
		assert_int_equal(X509_check_ip_asc(x, "2001:db8::10", 0), 1);
	}
	if (slot == H_CLIENT)
		assert_int_equal(
		    X509_check_email(x, "alice@" PSN ".lab.example", 0, 0), 1);

	/* Never outlives the issuer. */
	assert_true(ASN1_TIME_compare(X509_get0_notAfter(x),
	                              X509_get0_notAfter(issuer)) <= 0);
	assert_true(ASN1_TIME_compare(X509_get0_notBefore(x),
	                              X509_get0_notBefore(issuer)) >= 0);
}

static void
check_hierarchy(const char *const flavours[H_COUNT])
{
	STACK_OF(X509) * anchors, *untrusted, *built = NULL;
	struct hier h;
	struct error err = {""};
	int i;
	unsigned purpose;

	if (hier_build(&h, flavours, PAN, PSN, &err) == -1)
		fail_msg("hierarchy: %s", err.msg);
	anchors = hier_stack1(h.cert[H_ROOT]);
	for (i = 0; i < H_COUNT; i++) {
		check_slot(&h, (enum hier_slot)i);
		untrusted = hier_untrusted(&h, (enum hier_slot)i);
		purpose = i == H_SERVER   ? CHAIN_PURPOSE_TLS_SERVER
		          : i == H_CLIENT ? CHAIN_PURPOSE_TLS_CLIENT
		          : i == H_OCSP || i == H_OCSP_LEGACY
		              ? CHAIN_PURPOSE_OCSP_SIGN
		              : CHAIN_PURPOSE_ANY;
		if (chain_verify(h.cert[i], untrusted, anchors, purpose, &built,
		                 &err) == -1)
			fail_msg("%s: %s", hier_defs[i].file, err.msg);
		chain_free(built);
		chain_free(untrusted);
	}
	chain_free(anchors);
	hier_free(&h);
}

static void
test_hierarchy_ec_p256(void **state)
{
	const char *f[H_COUNT] = {"ec-p256", "ec-p256", "ec-p256", "ec-p256",
	                          "ec-p256", "ec-p256", "ec-p256"};

	(void)state;
	check_hierarchy(f);
}

static void
test_hierarchy_ec_p384(void **state)
{
	const char *f[H_COUNT] = {"ec-p384", "ec-p384", "ec-p384", "ec-p384",
	                          "ec-p384", "ec-p384", "ec-p384"};

	(void)state;
	check_hierarchy(f);
}

static void
test_hierarchy_rsa(void **state)
{
	const char *f[H_COUNT] = {"rsa-3072", "rsa-2048", "rsa-2048",
	                          "rsa-2048", "rsa-2048", "rsa-2048",
	                          "rsa-2048"};

	(void)state;
	check_hierarchy(f);
}

static void
test_hierarchy_mixed(void **state)
{
	/* Digest follows the issuer key, KU the subject key. */
	const char *f[H_COUNT] = {"rsa-2048", "ec-p384",  "ec-p256", "rsa-2048",
	                          "ec-p384",  "rsa-2048", "ec-p256"};

	(void)state;
	check_hierarchy(f);
}

static void
test_profile_names(void **state)
{
	char buf[CERT_CN_BUF], host[80];
	enum cert_profile p;
	struct error err;
	int i;

	(void)state;
	assert_int_equal(cert_profile_cn(CERT_PROFILE_ROOT_CA, "pan1", buf,
	                                 sizeof(buf), &err),
	                 0);
	assert_string_equal(buf, "Certificate Services Root CA - pan1");
	assert_int_equal(cert_profile_cn(CERT_PROFILE_ENDPOINT_SUB_CA, "psn2",
	                                 buf, sizeof(buf), &err),
	                 0);
	assert_string_equal(buf, "Certificate Services Endpoint Sub CA - psn2");
	assert_int_equal(cert_profile_cn(CERT_PROFILE_TLS_SERVER, "psn2", buf,
	                                 sizeof(buf), &err),
	                 0);
	assert_string_equal(buf, "psn2");
	assert_int_equal(
	    cert_profile_cn(CERT_PROFILE_NODE_CA, "", buf, sizeof(buf), &err),
	    -1);
	assert_non_null(strstr(err.msg, "empty host"));
	/* 64 characters is ub-common-name: the prefix leaves room for 28. */
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	assert_int_equal(cert_profile_cn(CERT_PROFILE_ENDPOINT_SUB_CA, host,
	                                 buf, sizeof(buf), &err),
	                 -1);
	assert_non_null(strstr(err.msg, "longer than 64"));
	assert_int_equal(
	    cert_profile_cn(CERT_PROFILE_COUNT, "x", buf, sizeof(buf), &err),
	    -1);
	for (i = 0; i < CERT_PROFILE_COUNT; i++) {
		assert_int_equal(
		    cert_profile_from_name(
		        cert_profile_name((enum cert_profile)i), &p, &err),
		    0);
		assert_int_equal(p, i);
		assert_true(cert_profile_default_validity(p) > 0);
	}
	assert_int_equal(cert_profile_from_name("web-server", &p, &err), -1);
	assert_non_null(strstr(err.msg, "web-server"));
	assert_true(cert_profile_is_ca(CERT_PROFILE_ENDPOINT_SUB_CA));
	assert_false(cert_profile_is_ca(CERT_PROFILE_OCSP_RESPONDER));
}

/* A root, Node CA and Sub CA to hang single tests from. */
static void
small_build(struct hier *h, time_t root_not_before)
{
	struct error err = {""};
	EVP_PKEY *k;

	memset(h, 0, sizeof(*h));
	k = hier_keygen("ec-p256");
	assert_non_null(k);
	if (hier_issue(h, H_ROOT, k, PAN, PSN, root_not_before, 0, &err) == -1)
		fail_msg("root: %s", err.msg);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p256");
	if (hier_issue(h, H_NODE, k, PAN, PSN, 0, 0, &err) == -1)
		fail_msg("node: %s", err.msg);
	EVP_PKEY_free(k);
	k = hier_keygen("ec-p256");
	if (hier_issue(h, H_SUB, k, PAN, PSN, 0, 0, &err) == -1)
		fail_msg("sub: %s", err.msg);
	EVP_PKEY_free(k);
}

static void
request_for(struct cert_request *req, enum cert_profile profile, const char *cn,
            EVP_PKEY *key)
{
	cert_request_init(req, profile);
	assert_int_equal(cert_request_set_cn(req, cn, NULL), 0);
	assert_int_equal(cert_request_set_key(req, key, NULL), 0);
}

static void
test_validity(void **state)
{
	struct cert_request req;
	struct error err;
	struct hier h;
	EVP_PKEY *k;
	X509 *x;
	time_t now = time(NULL), nb, na;

	(void)state;
	/* Root starts 10 s ago: children's default backdate is cut to it. */
	small_build(&h, now - 10);
	assert_int_equal(cert_not_before(h.cert[H_NODE], &nb, NULL), 0);
	assert_int_equal(nb, now - 10);
	assert_int_equal(cert_not_before(h.cert[H_ROOT], &nb, NULL), 0);
	assert_int_equal(nb, now - 10);

	k = hier_keygen("ec-p256");
	request_for(&req, CERT_PROFILE_TLS_CLIENT, "bob", k);
	/* 20 years under a Sub CA of 10: clamped to the issuer's notAfter. */
	req.validity = 20 * 365 * 24 * 3600;
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), 0);
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(x),
	                                   X509_get0_notAfter(h.cert[H_SUB])),
	                 0);
	X509_free(x);

	/* Default: now - 5 minutes, for the profile's default validity. */
	req.validity = 0;
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), 0);
	nb = asn1_time(X509_get0_notBefore(x));
	na = asn1_time(X509_get0_notAfter(x));
	assert_true(nb >= now - 10 && nb <= time(NULL));
	/* Counted from the requested start, before it was moved up. */
	assert_true(na - nb <=
	            cert_profile_default_validity(CERT_PROFILE_TLS_CLIENT));
	assert_true(na - nb >=
	            cert_profile_default_validity(CERT_PROFILE_TLS_CLIENT) -
	                CERT_BACKDATE_SECS - 5);
	X509_free(x);
	cert_request_free(&req);
	hier_free(&h);

	/* A root with the default backdate. */
	now = time(NULL);
	small_build(&h, 0);
	nb = asn1_time(X509_get0_notBefore(h.cert[H_ROOT]));
	assert_true(nb <= now - CERT_BACKDATE_SECS &&
	            nb >= now - CERT_BACKDATE_SECS - 5);

	/* Explicit validity in the past: an expired certificate. */
	request_for(&req, CERT_PROFILE_TLS_CLIENT, "old", k);
	req.not_before = now - 3600;
	req.validity = 60;
	/* Before the issuer's notBefore: refused, nothing left. */
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_null(x);
	assert_non_null(strstr(err.msg, "outside"));
	/* Validity of 0 seconds after the default and negative: refused. */
	req.not_before = 0;
	req.validity = -5;
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "out of range"));
	cert_request_free(&req);
	EVP_PKEY_free(k);
	hier_free(&h);
}

static void
test_expired_issuer(void **state)
{
	struct cert_request req;
	struct error err;
	struct hier h;
	EVP_PKEY *k;
	X509 *x = NULL;
	time_t now = time(NULL);

	(void)state;
	memset(&h, 0, sizeof(h));
	k = hier_keygen("ec-p256");
	assert_int_equal(
	    hier_issue(&h, H_ROOT, k, PAN, PSN, now - 30 * 86400, 0, &err), 0);
	EVP_PKEY_free(k);
	/* A Node CA that expired ten days ago. */
	k = hier_keygen("ec-p256");
	assert_int_equal(hier_issue(&h, H_NODE, k, PAN, PSN, now - 20 * 86400,
	                            10 * 86400, &err),
	                 0);
	EVP_PKEY_free(k);
	assert_true(X509_cmp_current_time(X509_get0_notAfter(h.cert[H_NODE])) <
	            0);

	/* Issuing now under it is refused. */
	k = hier_keygen("ec-p256");
	request_for(&req, CERT_PROFILE_OCSP_RESPONDER,
	            "Certificate Services OCSP Responder - psn1", k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_NODE], h.key[H_NODE], &x, &err), -1);
	assert_non_null(strstr(err.msg, "is valid only until"));
	/* Inside its window (all in the past) it is issued, clamped. */
	req.not_before = now - 15 * 86400;
	req.validity = 365 * 86400;
	assert_int_equal(
	    cert_issue(&req, h.cert[H_NODE], h.key[H_NODE], &x, &err), 0);
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(x),
	                                   X509_get0_notAfter(h.cert[H_NODE])),
	                 0);
	X509_free(x);
	cert_request_free(&req);
	EVP_PKEY_free(k);
	hier_free(&h);
}

static void
test_refusals(void **state)
{
	struct cert_request req;
	struct error err;
	struct hier h;
	EVP_PKEY *k, *weak, *p224;
	X509 *x = NULL;

	(void)state;
	small_build(&h, 0);
	k = hier_keygen("ec-p256");

	/* Weak subject keys. */
	weak = hier_keygen("rsa-1024");
	assert_non_null(weak);
	request_for(&req, CERT_PROFILE_TLS_CLIENT, "weak", weak);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_null(x);
	assert_non_null(strstr(err.msg, "subject key"));
	cert_request_free(&req);
	p224 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-224");
	assert_non_null(p224);
	request_for(&req, CERT_PROFILE_TLS_CLIENT, "p224", p224);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "subject key"));
	cert_request_free(&req);

	/* A non-CA issuer. */
	request_for(&req, CERT_PROFILE_TLS_SERVER, "srv", k);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "srv.lab.example", &err),
	    0);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), 0);
	h.cert[H_SERVER] = x;
	h.key[H_SERVER] = k;
	EVP_PKEY_up_ref(k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SERVER], h.key[H_SERVER], &x, &err), -1);
	assert_non_null(strstr(err.msg, "is not a CA"));

	/* Issuer key that does not belong to the issuer certificate. */
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_NODE], &x, &err), -1);
	assert_non_null(strstr(err.msg, "does not match"));
	cert_request_free(&req);

	/* pathLen: a Sub CA (0) cannot sign a CA; a Node CA cannot sign one
	 * with pathLen 1. */
	request_for(&req, CERT_PROFILE_ENDPOINT_SUB_CA, "sub2", k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "pathLenConstraint 0"));
	cert_request_free(&req);
	request_for(&req, CERT_PROFILE_NODE_CA, "node2", k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_NODE], h.key[H_NODE], &x, &err), -1);
	assert_non_null(strstr(err.msg, "pathLenConstraint 1"));
	/* Only a root is self-signed; a root must be. */
	assert_int_equal(cert_issue(&req, NULL, k, &x, &err), -1);
	assert_non_null(strstr(err.msg, "only a root CA"));
	cert_request_free(&req);
	request_for(&req, CERT_PROFILE_ROOT_CA, "root2", k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_ROOT], h.key[H_ROOT], &x, &err), -1);
	assert_non_null(strstr(err.msg, "must be self-signed"));
	assert_int_equal(cert_issue(&req, NULL, h.key[H_ROOT], &x, &err), -1);
	assert_non_null(strstr(err.msg, "its own key"));
	cert_request_free(&req);

	/* TLS server without DNS/IP SAN. */
	request_for(&req, CERT_PROFILE_TLS_SERVER, "srv", k);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "subjectAltName"));
	cert_request_free(&req);

	/* Empty subject, no key. */
	cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
	assert_int_equal(cert_request_set_key(&req, k, &err), 0);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "empty subject"));
	cert_request_free(&req);
	cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
	assert_int_equal(cert_request_set_cn(&req, "nokey", &err), 0);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), -1);
	assert_non_null(strstr(err.msg, "no subject or issuer key"));
	assert_null(x);
	cert_request_free(&req);

	EVP_PKEY_free(weak);
	EVP_PKEY_free(p224);
	EVP_PKEY_free(k);
	hier_free(&h);
}

static void
test_request_input(void **state)
{
	struct cert_request req;
	struct error err;
	char long_cn[CERT_CN_MAX + 2], long_dns[300];
	X509_NAME *empty;
	int i;

	(void)state;
	cert_request_init(&req, CERT_PROFILE_TLS_SERVER);
	/* DNS names */
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_DNS,
	                                      "*.psn1.lab.example", &err),
	                 0);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_DNS, "a..b", &err),
	                 -1);
	assert_non_null(strstr(err.msg, "not a valid DNS name"));
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "-a.example", &err), -1);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "a.example.", &err), -1);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "a_b.example", &err), -1);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "a.*.example", &err), -1);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_DNS, "", &err),
	                 -1);
	memset(long_dns, 'a', sizeof(long_dns) - 1);
	long_dns[sizeof(long_dns) - 1] = '\0';
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, long_dns, &err), -1);
	/* IP */
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_IP, "::1", &err),
	                 0);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_IP, "1.2.3", &err),
	                 -1);
	assert_non_null(strstr(err.msg, "not an IPv4 or IPv6"));
	/* The server profile takes no e-mail or URI. */
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_EMAIL, "a@b.example", &err),
	    -1);
	assert_non_null(strstr(err.msg, "does not take email"));
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_TYPE_COUNT, "x", &err), -1);
	/* OCSP URL */
	assert_int_equal(
	    cert_request_set_ocsp_url(&req, "https://psn1:2560/ocsp", &err),
	    -1);
	assert_int_equal(cert_request_set_ocsp_url(&req, "http://", &err), -1);
	assert_int_equal(cert_request_set_ocsp_url(&req, "http://a b/", &err),
	                 -1);
	assert_int_equal(
	    cert_request_set_ocsp_url(&req, "http://psn1:2560/ocsp", &err), 0);
	/* CN */
	assert_int_equal(cert_request_set_cn(&req, "", &err), -1);
	memset(long_cn, 'c', sizeof(long_cn) - 1);
	long_cn[sizeof(long_cn) - 1] = '\0';
	assert_int_equal(cert_request_set_cn(&req, long_cn, &err), -1);
	assert_non_null(strstr(err.msg, "1 to 64"));
	long_cn[CERT_CN_MAX] = '\0';
	assert_int_equal(cert_request_set_cn(&req, long_cn, &err), 0);
	/* Multi-byte UTF-8 counts characters: 64 x U+00E9 is fine. */
	for (i = 0; i < CERT_CN_MAX; i++)
		memcpy(long_dns + 2 * i, "\xc3\xa9", 2);
	long_dns[2 * CERT_CN_MAX] = '\0';
	assert_int_equal(cert_request_set_cn(&req, long_dns, &err), 0);
	empty = X509_NAME_new();
	assert_int_equal(cert_request_set_subject(&req, empty, &err), -1);
	X509_NAME_free(empty);
	assert_int_equal(cert_request_set_key(&req, NULL, &err), -1);
	cert_request_free(&req);

	/* Client: every SAN type; the limit on their number. */
	cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_EMAIL,
	                                      "alice@lab.example", &err),
	                 0);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_EMAIL,
	                                      "alice@@lab.example", &err),
	                 -1);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_EMAIL, "@lab.example", &err),
	    -1);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_EMAIL,
	                                      "al ice@lab.example", &err),
	                 -1);
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_URI,
	                                      "https://lab.example/x", &err),
	                 0);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_URI, "/relative", &err), -1);
	assert_non_null(strstr(err.msg, "absolute URI"));
	assert_int_equal(cert_request_add_san(&req, CERT_SAN_URI, "urn:", &err),
	                 -1);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "*.wild.example", &err),
	    -1);
	while (req.nsan < CERT_SAN_MAX)
		assert_int_equal(
		    cert_request_add_san(&req, CERT_SAN_IP, "192.0.2.1", &err),
		    0);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_IP, "192.0.2.1", &err), -1);
	assert_non_null(strstr(err.msg, "more than"));
	cert_request_free(&req);
	assert_int_equal(req.nsan, 0);
	assert_int_equal(req.profile, CERT_PROFILE_TLS_CLIENT);

	/* CA and responder profiles take no SAN; the root no AIA. */
	cert_request_init(&req, CERT_PROFILE_NODE_CA);
	assert_int_equal(
	    cert_request_add_san(&req, CERT_SAN_DNS, "pan1.lab.example", &err),
	    -1);
	cert_request_free(&req);
	cert_request_init(&req, CERT_PROFILE_ROOT_CA);
	assert_int_equal(
	    cert_request_set_ocsp_url(&req, "http://pan1/ocsp", &err), -1);
	cert_request_free(&req);
}

/* A CSR asking for everything it should not get. */
static X509_REQ *
greedy_csr(EVP_PKEY *key)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	X509_NAME *name;
	X509_REQ *csr;
	static const char *ext_conf[][2] = {
	    {"basicConstraints", "critical,CA:TRUE,pathlen:5"},
	    {"keyUsage", "critical,keyCertSign,cRLSign,digitalSignature"},
	    {"extendedKeyUsage", "serverAuth,codeSigning,clientAuth"},
	    {"subjectAltName", "DNS:ep1.lab.example,email:ep1@lab.example,"
	                       "URI:urn:ep1,IP:192.0.2.77,RID:1.2.3.4"},
	    {"nsComment", "please"},
	};
	size_t i;

	csr = X509_REQ_new();
	assert_non_null(csr);
	name = X509_REQ_get_subject_name(csr);
	assert_int_equal(
	    X509_NAME_add_entry_by_txt(name, "DC", MBSTRING_ASC,
	                               (const unsigned char *)"lab", -1, -1, 0),
	    1);
	assert_int_equal(
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
	                               (const unsigned char *)"Lab", -1, -1, 0),
	    1);
	assert_int_equal(X509_NAME_add_entry_by_txt(
	                     name, "title", MBSTRING_ASC,
	                     (const unsigned char *)"boss", -1, -1, 0),
	                 1);
	assert_int_equal(
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                               (const unsigned char *)"ep1", -1, -1, 0),
	    1);
	X509V3_set_ctx(&ctx, NULL, NULL, csr, NULL, 0);
	for (i = 0; i < ARRAY_SIZE(ext_conf); i++) {
		e = X509V3_EXT_nconf(NULL, &ctx, ext_conf[i][0],
		                     ext_conf[i][1]);
		assert_non_null(e);
		sk_X509_EXTENSION_push(exts, e);
	}
	assert_int_equal(X509_REQ_add_extensions(csr, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	assert_int_equal(X509_REQ_set_pubkey(csr, key), 1);
	assert_true(X509_REQ_sign(csr, key, EVP_sha256()) > 0);
	return csr;
}

static void
test_csr_profile_decides(void **state)
{
	struct cert_request req;
	struct error err;
	struct hier h;
	EVP_PKEY *k;
	X509_REQ *csr;
	X509 *x;
	X509_NAME *subj;
	BASIC_CONSTRAINTS *bc;
	GENERAL_NAMES *gens;
	int ekus[8];
	char dn[256];

	(void)state;
	small_build(&h, 0);
	k = hier_keygen("rsa-2048");
	csr = greedy_csr(k);

	cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
	assert_int_equal(cert_request_from_csr(&req, csr, &err), 0);
	assert_int_equal(req.nsan, 4); /* DNS, email, URI, IP; RID dropped */
	assert_int_equal(
	    cert_issue(&req, h.cert[H_SUB], h.key[H_SUB], &x, &err), 0);
	bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_int_equal(bc->ca, 0);
	BASIC_CONSTRAINTS_free(bc);
	/* RSA client key: digitalSignature only, whatever the CSR asked. */
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	assert_int_equal(eku_nids(x, ekus, 8), 1);
	assert_int_equal(ekus[0], NID_client_auth);
	assert_int_equal(ext_crit(x, NID_netscape_comment), -1);
	assert_int_equal(X509_check_ca(x), 0);
	/* Subject: O and CN kept in order, DC and title dropped. */
	subj = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_entry_count(subj), 2);
	cert_name_string(subj, dn, sizeof(dn));
	assert_string_equal(dn, "CN=ep1,O=Lab");
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 4);
	GENERAL_NAMES_free(gens);
	assert_int_equal(X509_check_ip_asc(x, "192.0.2.77", 0), 1);
	X509_free(x);
	cert_request_free(&req);

	/* The server profile keeps DNS and IP only. */
	cert_request_init(&req, CERT_PROFILE_TLS_SERVER);
	assert_int_equal(cert_request_from_csr(&req, csr, &err), 0);
	assert_int_equal(req.nsan, 2);
	cert_request_free(&req);

	/* A CA profile from a CSR: no SANs, pathLen from the profile. */
	cert_request_init(&req, CERT_PROFILE_ENDPOINT_SUB_CA);
	assert_int_equal(cert_request_from_csr(&req, csr, &err), 0);
	assert_int_equal(req.nsan, 0);
	assert_int_equal(cert_request_set_product_cn(&req, "psn9", &err), 0);
	assert_int_equal(
	    cert_issue(&req, h.cert[H_NODE], h.key[H_NODE], &x, &err), 0);
	assert_int_equal(X509_get_pathlen(x), 0);
	X509_free(x);
	cert_request_free(&req);

	/* A CSR whose signature does not verify (signed by another key). */
	{
		EVP_PKEY *other = hier_keygen("ec-p256");

		assert_int_equal(X509_REQ_set_pubkey(csr, other), 1);
		cert_request_init(&req, CERT_PROFILE_TLS_CLIENT);
		assert_int_equal(cert_request_set_cn(&req, "keep", &err), 0);
		assert_int_equal(cert_request_from_csr(&req, csr, &err), -1);
		assert_non_null(strstr(err.msg, "signature does not verify"));
		/* req untouched on failure */
		assert_non_null(req.subject);
		assert_null(req.key);
		cert_request_free(&req);
		EVP_PKEY_free(other);
	}
	X509_REQ_free(csr);
	EVP_PKEY_free(k);
	hier_free(&h);
}

static void
test_csr_bad_san(void **state)
{
	STACK_OF(X509_EXTENSION) * exts;
	struct cert_request req;
	struct error err;
	X509V3_CTX ctx;
	EVP_PKEY *k;
	X509_REQ *csr;
	X509_NAME *name;

	(void)state;
	k = hier_keygen("ec-p256");
	csr = X509_REQ_new();
	name = X509_REQ_get_subject_name(csr);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"x", -1, -1, 0);
	X509V3_set_ctx(&ctx, NULL, NULL, csr, NULL, 0);
	exts = sk_X509_EXTENSION_new_null();
	sk_X509_EXTENSION_push(exts,
	                       X509V3_EXT_nconf(NULL, &ctx, "subjectAltName",
	                                        "DNS:bad..name.example"));
	assert_int_equal(X509_REQ_add_extensions(csr, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	assert_int_equal(X509_REQ_set_pubkey(csr, k), 1);
	assert_true(X509_REQ_sign(csr, k, EVP_sha256()) > 0);
	cert_request_init(&req, CERT_PROFILE_TLS_SERVER);
	assert_int_equal(cert_request_from_csr(&req, csr, &err), -1);
	assert_non_null(strstr(err.msg, "bad..name.example"));
	cert_request_free(&req);
	X509_REQ_free(csr);
	EVP_PKEY_free(k);
}

static void
test_helpers(void **state)
{
	char path[128], serial[CERT_SERIAL_HEX_MAX], line[512], cn[8];
	unsigned char der[8192], *p = der;
	struct error err;
	struct hier h;
	X509 *x;
	time_t t;
	int len;
	struct stat st;
	FILE *f;

	(void)state;
	small_build(&h, 0);
	snprintf(path, sizeof(path), "%s/node.pem", tmpdir);
	assert_int_equal(cert_save_pem(h.cert[H_NODE], path, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	x = cert_load_pem(path, &err);
	assert_non_null(x);
	assert_int_equal(X509_cmp(x, h.cert[H_NODE]), 0);
	X509_free(x);

	/* DER, and DER with a trailing byte. */
	len = i2d_X509(h.cert[H_NODE], &p);
	assert_true(len > 0 && len < (int)sizeof(der) - 1);
	x = cert_parse_der(der, (size_t)len, &err);
	assert_non_null(x);
	X509_free(x);
	snprintf(path, sizeof(path), "%s/node.der", tmpdir);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(der, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	x = cert_load_der(path, &err);
	assert_non_null(x);
	X509_free(x);
	der[len] = 0;
	assert_null(cert_parse_der(der, (size_t)len + 1, &err));
	assert_non_null(strstr(err.msg, "after the certificate"));
	assert_null(cert_parse_der(der, 10, &err));
	/* PEM loader on the DER file, on a missing file. */
	assert_null(cert_load_pem(path, &err));
	assert_non_null(strstr(err.msg, "PEM_read_bio_X509"));
	snprintf(path, sizeof(path), "%s/missing.pem", tmpdir);
	assert_null(cert_load_pem(path, &err));
	assert_null(cert_load_der(path, &err));

	assert_int_equal(
	    cert_serial_hex(h.cert[H_NODE], serial, sizeof(serial), &err), 0);
	assert_int_equal(strlen(serial), CERT_SERIAL_LEN * 2);
	assert_int_equal(cert_serial_hex(h.cert[H_NODE], serial, 8, &err), -1);
	assert_int_equal(cert_not_after(h.cert[H_NODE], &t, &err), 0);
	assert_true(t > time(NULL));
	assert_int_equal(cert_subject_cn(h.cert[H_NODE], cn, sizeof(cn), &err),
	                 -1);
	cert_describe(h.cert[H_NODE], line, sizeof(line));
	assert_non_null(strstr(line, "CN=Certificate Services Node CA - pan1"));
	assert_non_null(strstr(line, "issuer CN=Certificate Services Root CA"));
	assert_non_null(strstr(line, "EC P-256"));
	assert_non_null(strstr(line, serial));
	hier_free(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_profile_names),
	    cmocka_unit_test(test_hierarchy_ec_p256),
	    cmocka_unit_test(test_hierarchy_ec_p384),
	    cmocka_unit_test(test_hierarchy_rsa),
	    cmocka_unit_test(test_hierarchy_mixed),
	    cmocka_unit_test(test_validity),
	    cmocka_unit_test(test_expired_issuer),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_request_input),
	    cmocka_unit_test(test_csr_profile_decides),
	    cmocka_unit_test(test_csr_bad_san),
	    cmocka_unit_test(test_helpers),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
