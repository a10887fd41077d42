/*
 * Unit tests for common/csr.c: requests we make, and requests as EST
 * clients send them (PEM, DER, base64 with and without line breaks,
 * RFC 8951), including the malformed ones: truncated, trailing bytes, bad
 * base64, oversized, not a CSR, bad signature, weak key.
 *
 * Fixtures in $UNIT_DATA_DIR were made with `openssl req` (see
 * tests/unit/data/README).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "csr.h"
#include "keys.h"
#include "util.h"

static EVP_PKEY *ec_key;   /* P-256, made once for the whole run */
static EVP_PKEY *rsa_key;  /* RSA 2048 */
static EVP_PKEY *p384_key; /* P-384 */

static int
setup(void **state)
{
	(void)state;
	ec_key = key_generate(KEY_EC_P256, NULL);
	rsa_key = key_generate(KEY_RSA_2048, NULL);
	p384_key = key_generate(KEY_EC_P384, NULL);
	return ec_key && rsa_key && p384_key ? 0 : -1;
}

static int
teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(ec_key);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(p384_key);
	return 0;
}

static void
assert_err(const struct error *err, const char *want)
{
	if (strstr(err->msg, want) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err->msg,
		         want);
}

static uint8_t *
fixture(const char *name, size_t *len)
{
	const char *dir = getenv("UNIT_DATA_DIR");
	char path[PATH_MAX];
	struct error err;
	uint8_t *buf;

	if (dir == NULL)
		fail_msg("UNIT_DATA_DIR is not set (run through meson test)");
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((buf = file_read(path, 1 << 20, len, &err)) == NULL)
		fail_msg("%s", err.msg);
	return buf;
}

static X509_REQ *
parse_fixture(const char *name)
{
	struct error err;
	X509_REQ *req;
	uint8_t *buf;
	size_t len;

	buf = fixture(name, &len);
	if ((req = csr_parse(buf, len, &err)) == NULL)
		fail_msg("%s: %s", name, err.msg);
	free(buf);
	return req;
}

/* Parse buf and check it is the same request as der. */
static void
assert_parses_to(const void *buf, size_t len, const uint8_t *der, size_t derlen)
{
	struct error err;
	X509_REQ *req;
	uint8_t *back;
	size_t backlen;

	if ((req = csr_parse(buf, len, &err)) == NULL)
		fail_msg("csr_parse: %s", err.msg);
	assert_int_equal(csr_to_der(req, &back, &backlen), 0);
	assert_int_equal(backlen, derlen);
	assert_memory_equal(back, der, derlen);
	assert_int_equal(csr_verify(req, &err), 0);
	free(back);
	X509_REQ_free(req);
}

/* base64 with a line break every line_len characters, LF or CRLF. */
static char *
b64_lines(const uint8_t *der, size_t len, size_t line_len, int crlf)
{
	char *crlf_text, *out;
	size_t i, o = 0, n;

	assert_non_null(crlf_text = base64_encode(der, len, line_len, &n));
	if (crlf) {
		out = crlf_text;
	} else {
		assert_non_null(out = malloc(n + 1));
		for (i = 0; i < n; i++)
			if (crlf_text[i] != '\r')
				out[o++] = crlf_text[i];
		out[o] = '\0';
		free(crlf_text);
	}
	return out;
}

static void
check_round_trip(EVP_PKEY *key, int signid)
{
	const char *const dns[] = {"psn1.example.com", "psn1"};
	struct error err;
	X509_REQ *req;
	uint8_t *der;
	size_t derlen, n;
	char *pem, *b64, buf[CSR_CN_MAX + 1];
	char **names;

	req = csr_create(key, "psn1.example.com", dns, ARRAY_SIZE(dns), &err);
	if (req == NULL)
		fail_msg("csr_create: %s", err.msg);
	assert_int_equal(X509_REQ_get_signature_nid(req), signid);
	assert_int_equal(X509_REQ_get_version(req), 0);
	assert_int_equal(csr_verify(req, &err), 0);
	assert_int_equal(csr_to_der(req, &der, &derlen), 0);
	assert_non_null(pem = csr_to_pem(req));
	X509_REQ_free(req);

	/* PEM, DER, base64 on one line, 64 with CRLF, 76 with LF. */
	assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
	assert_parses_to(pem, strlen(pem), der, derlen);
	assert_parses_to(der, derlen, der, derlen);
	b64 = b64_lines(der, derlen, 0, 0);
	assert_null(strchr(b64, '\n'));
	assert_parses_to(b64, strlen(b64), der, derlen);
	free(b64);
	b64 = b64_lines(der, derlen, 64, 1);
	assert_non_null(strstr(b64, "\r\n"));
	assert_parses_to(b64, strlen(b64), der, derlen);
	free(b64);
	b64 = b64_lines(der, derlen, 76, 0);
	assert_null(strchr(b64, '\r'));
	assert_non_null(strchr(b64, '\n'));
	assert_parses_to(b64, strlen(b64), der, derlen);
	free(b64);

	/* What the PAN reads back to match the join token. */
	assert_non_null(req = csr_parse((uint8_t *)pem, strlen(pem), &err));
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), 1);
	assert_string_equal(buf, "psn1.example.com");
	assert_int_equal(csr_dns_names(req, &names, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "psn1.example.com");
	assert_string_equal(names[1], "psn1");
	csr_dns_names_free(names, n);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 0);
	X509_REQ_free(req);
	free(pem);
	free(der);
}

static void
test_create_parse(void **state)
{
	(void)state;
	check_round_trip(ec_key, NID_ecdsa_with_SHA256);
	check_round_trip(rsa_key, NID_sha256WithRSAEncryption);
	check_round_trip(p384_key, NID_ecdsa_with_SHA384);
}

static void
test_create_refuses(void **state)
{
	const char *const bad_dns[][1] = {{"bad_name.example.com"},
	                                  {"-lead.example.com"},
	                                  {"trail-.example.com"},
	                                  {"a..b"},
	                                  {""},
	                                  {"x.example.com."},
	                                  {"*"},
	                                  {"a.*.example.com"}};
	const char *const ok_dns[] = {"*.example.com", "a-b.c0.example.com"};
	char longcn[CSR_CN_MAX + 2];
	struct error err;
	EVP_PKEY *weak;
	X509_REQ *req;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_dns); i++) {
		assert_null(csr_create(ec_key, "x", bad_dns[i], 1, &err));
		assert_err(&err, "not a valid DNS name");
	}
	assert_non_null(req = csr_create(ec_key, "x", ok_dns, 2, &err));
	X509_REQ_free(req);

	assert_null(csr_create(ec_key, NULL, NULL, 0, &err));
	assert_err(&err, "neither a subject nor a DNS name");
	assert_null(csr_create(ec_key, "", NULL, 0, &err));
	memset(longcn, 'c', sizeof(longcn) - 1);
	longcn[sizeof(longcn) - 1] = '\0';
	assert_null(csr_create(ec_key, longcn, NULL, 0, &err));
	assert_err(&err, "commonName");
	longcn[CSR_CN_MAX] = '\0';
	assert_non_null(req = csr_create(ec_key, longcn, NULL, 0, &err));
	X509_REQ_free(req);

	assert_non_null(weak =
	                    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024));
	assert_null(csr_create(weak, "weak", NULL, 0, &err));
	assert_err(&err, "RSA key of 1024 bits is below the minimum of 2048");
	EVP_PKEY_free(weak);
}

/* No subject: RFC 5280 4.1.2.6 wants the SAN, and critical. */
static void
test_create_empty_subject(void **state)
{
	const char *const dns[] = {"host.example.com"};
	STACK_OF(X509_EXTENSION) * exts;
	struct error err;
	X509_REQ *req;
	char buf[CSR_CN_MAX + 1], **names;
	size_t n;
	int idx;

	(void)state;
	assert_non_null(req = csr_create(ec_key, NULL, dns, 1, &err));
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), 0);
	assert_non_null(exts = X509_REQ_get_extensions(req));
	idx = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
	assert_true(idx >= 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509v3_get_ext(exts, idx)),
	                 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	assert_int_equal(csr_dns_names(req, &names, &n, &err), 0);
	assert_int_equal(n, 1);
	csr_dns_names_free(names, n);
	assert_int_equal(csr_verify(req, &err), 0);
	X509_REQ_free(req);

	/* And a request without any SAN has no DNS names. */
	assert_non_null(req = csr_create(ec_key, "only-cn", NULL, 0, &err));
	names = (char **)&n;
	assert_int_equal(csr_dns_names(req, &names, &n, &err), 0);
	assert_null(names);
	assert_int_equal(n, 0);
	X509_REQ_free(req);
}

static void
test_fixtures(void **state)
{
	char buf[CSR_CN_MAX + 1], **names;
	struct error err;
	X509_REQ *req, *old;
	size_t n;

	(void)state;
	req = parse_fixture("csr-rsa2048.pem");
	assert_int_equal(csr_verify(req, &err), 0);
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), 1);
	assert_string_equal(buf, "psn1.example.com");
	assert_int_equal(csr_dns_names(req, &names, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "psn1.example.com");
	assert_string_equal(names[1], "psn1");
	csr_dns_names_free(names, n);

	/* The old "NEW CERTIFICATE REQUEST" header, same request. */
	old = parse_fixture("csr-new-header.pem");
	assert_int_equal(X509_REQ_get_signature_nid(old),
	                 X509_REQ_get_signature_nid(req));
	assert_int_equal(csr_verify(old, &err), 0);
	X509_REQ_free(old);
	X509_REQ_free(req);

	req = parse_fixture("csr-badsig.pem");
	assert_int_equal(csr_verify(req, &err), -1);
	assert_string_equal(err.msg, "CSR signature does not verify");
	assert_int_equal(ERR_peek_error(), 0);
	X509_REQ_free(req);

	req = parse_fixture("csr-rsa1024.pem");
	assert_int_equal(csr_verify(req, &err), -1);
	assert_string_equal(
	    err.msg, "RSA key of 1024 bits is below the minimum of 2048");
	X509_REQ_free(req);
}

static void
test_bad_signature(void **state)
{
	struct error err;
	X509_REQ *req;
	uint8_t *der;
	size_t len, i;

	(void)state;
	assert_non_null(req = csr_create(rsa_key, "sig", NULL, 0, &err));
	assert_int_equal(csr_to_der(req, &der, &len), 0);
	X509_REQ_free(req);
	/* Flip one bit in several places of the signature (the tail). */
	for (i = 1; i <= 64; i += 21) {
		der[len - i] ^= 0x01;
		if ((req = csr_parse(der, len, &err)) == NULL)
			fail_msg("csr_parse: %s", err.msg);
		assert_int_equal(csr_verify(req, &err), -1);
		assert_string_equal(err.msg, "CSR signature does not verify");
		X509_REQ_free(req);
		der[len - i] ^= 0x01;
	}
	free(der);
}

static void
test_sha1_refused(void **state)
{
	struct error err;
	X509_REQ *req;

	(void)state;
	assert_non_null(req = csr_create(rsa_key, "sha1", NULL, 0, &err));
	assert_true(X509_REQ_sign(req, rsa_key, EVP_sha1()) > 0);
	assert_int_equal(csr_verify(req, &err), -1);
	assert_err(&err, "SHA1");
	X509_REQ_free(req);
}

static void
test_truncated_and_trailing(void **state)
{
	const size_t cuts[] = {1, 2, 3, 4, 10};
	struct error err;
	X509_REQ *req;
	uint8_t *der, *big;
	size_t len, i;
	char *b64;

	(void)state;
	assert_non_null(req = csr_create(ec_key, "trunc", NULL, 0, &err));
	assert_int_equal(csr_to_der(req, &der, &len), 0);
	X509_REQ_free(req);

	for (i = 0; i < ARRAY_SIZE(cuts); i++) {
		assert_null(csr_parse(der, len - cuts[i], &err));
		assert_err(&err, "truncated");
	}
	assert_null(csr_parse(der, len / 2, &err));
	assert_err(&err, "truncated");
	assert_null(csr_parse(der, 1, &err));
	assert_err(&err, "truncated");

	/* Bytes after the DER object: raw, and inside base64. */
	assert_non_null(big = malloc(len + 3));
	memcpy(big, der, len);
	memcpy(big + len, "xyz", 3);
	assert_null(csr_parse(big, len + 1, &err));
	assert_err(&err, "1 bytes after the end");
	assert_null(csr_parse(big, len + 3, &err));
	assert_err(&err, "3 bytes after the end");
	assert_non_null(b64 = base64_encode(big, len + 3, 64, NULL));
	assert_null(csr_parse((uint8_t *)b64, strlen(b64), &err));
	assert_err(&err, "after the end");
	free(b64);

	free(big);
	free(der);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
test_bad_input(void **state)
{
	struct error err;
	uint8_t *buf, *pem;
	size_t len;
	char *b64;

	(void)state;
	/* Empty. */
	assert_null(csr_parse((const uint8_t *)"", 0, &err));
	assert_err(&err, "empty");
	assert_null(csr_parse(NULL, 0, &err));
	assert_null(csr_parse((const uint8_t *)" \r\n\t", 4, &err));
	assert_err(&err, "empty");

	/* Bad base64. */
	assert_null(csr_parse((const uint8_t *)"MIIB!!!!", 8, &err));
	assert_err(&err, "base64");
	assert_null(csr_parse((const uint8_t *)"MIIBx", 5, &err));
	assert_err(&err, "base64");
	assert_null(csr_parse((const uint8_t *)"MIIB=AAA", 8, &err));
	assert_err(&err, "base64");

	/* Good base64, not DER. */
	b64 = base64_encode((const uint8_t *)"hello, EST world", 16, 0, NULL);
	assert_null(csr_parse((uint8_t *)b64, strlen(b64), &err));
	assert_err(&err, "not a DER SEQUENCE");
	free(b64);

	/* Oversized, in each encoding. */
	assert_non_null(buf = malloc(CSR_MAX_SIZE + 1));
	memset(buf, 'A', CSR_MAX_SIZE + 1);
	assert_null(csr_parse(buf, CSR_MAX_SIZE + 1, &err));
	assert_err(&err, "over the limit");
	buf[0] = 0x30;
	assert_null(csr_parse(buf, CSR_MAX_SIZE + 1, &err));
	assert_err(&err, "over the limit");
	free(buf);

	/* A certificate is not a CSR: as PEM, then as DER. */
	pem = fixture("ca-ec.crt", &len);
	assert_null(csr_parse(pem, len, &err));
	assert_err(&err, "not a CERTIFICATE REQUEST");
	{
		BIO *bio = BIO_new_mem_buf(pem, (int)len);
		X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		unsigned char *der = NULL;
		int n;

		assert_non_null(x);
		assert_true((n = i2d_X509(x, &der)) > 0);
		assert_null(csr_parse(der, (size_t)n, &err));
		assert_err(&err, "not a PKCS#10");
		OPENSSL_free(der);
		X509_free(x);
		BIO_free(bio);
	}
	free(pem);

	/* A truncated PEM CSR. */
	pem = fixture("csr-rsa2048.pem", &len);
	assert_null(csr_parse(pem, len - 30, &err));
	assert_err(&err, "truncated");
	assert_null(csr_parse(pem, len / 2, &err));
	assert_err(&err, "truncated");
	free(pem);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
test_challenge_password(void **state)
{
	/* DER of the OID 1.2.840.113549.1.9.2 (unstructuredName). */
	static const uint8_t oid_un[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
	                                 0xf7, 0x0d, 0x01, 0x09, 0x02};
	char buf[CSR_CHALLENGE_MAX + 1];
	X509_ATTRIBUTE *attr;
	struct error err;
	X509_REQ *req;
	uint8_t *der;
	size_t len, i;

	(void)state;
	req = parse_fixture("csr-challenge.pem");
	assert_int_equal(csr_verify(req, &err), 0);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 1);
	assert_string_equal(buf, "ABCDEFGH1234");
	/* Too small a buffer. */
	assert_int_equal(csr_challenge_password(req, buf, 12, &err), -1);
	assert_int_equal(csr_challenge_password(req, buf, 13, &err), 1);
	X509_REQ_free(req);

	/* Absent. */
	req = parse_fixture("csr-rsa2048.pem");
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 0);
	X509_REQ_free(req);

	/* Set ours (tls-unique in base64), re-sign, parse back. */
	assert_non_null(req = csr_create(ec_key, "est", NULL, 0, &err));
	assert_int_equal(csr_set_challenge_password(req, "x+Y/z0==", &err), 0);
	/* The old signature no longer covers the request. */
	assert_int_equal(csr_verify(req, &err), -1);
	assert_int_equal(csr_sign(req, ec_key, &err), 0);
	assert_int_equal(csr_verify(req, &err), 0);
	assert_int_equal(csr_set_challenge_password(req, "second-one", &err),
	                 0);
	assert_int_equal(csr_sign(req, ec_key, &err), 0);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 1);
	assert_string_equal(buf, "second-one");
	assert_int_equal(csr_set_challenge_password(req, "", &err), -1);
	X509_REQ_free(req);

	/*
	 * PrintableString is accepted, IA5String is not.  (With a plain
	 * type, len -1 would make OpenSSL read data as an ASN1_STRING.)
	 */
	assert_non_null(req = csr_create(ec_key, "est", NULL, 0, &err));
	assert_int_equal(X509_REQ_add1_attr_by_NID(
	                     req, NID_pkcs9_challengePassword,
	                     V_ASN1_PRINTABLESTRING,
	                     (const unsigned char *)"Printable 123", 13),
	                 1);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 1);
	assert_string_equal(buf, "Printable 123");
	X509_REQ_free(req);

	/* Two values in the one attribute (RFC 2985: SINGLE VALUE). */
	assert_non_null(req = csr_create(ec_key, "est", NULL, 0, &err));
	assert_non_null(attr = X509_ATTRIBUTE_create_by_NID(
	                    NULL, NID_pkcs9_challengePassword,
	                    V_ASN1_PRINTABLESTRING,
	                    (const unsigned char *)"one", 3));
	assert_int_equal(
	    X509_ATTRIBUTE_set1_data(attr, V_ASN1_PRINTABLESTRING, "two", 3),
	    1);
	assert_int_equal(X509_REQ_add1_attr(req, attr), 1);
	X509_ATTRIBUTE_free(attr);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 -1);
	assert_err(&err, "exactly one value");
	X509_REQ_free(req);

	/*
	 * Two challengePassword attributes: OpenSSL will not add a second,
	 * so rename an unstructuredName (1.2.840.113549.1.9.2, same length)
	 * into one (...9.7) in the DER, as a hostile client could send it.
	 */
	assert_non_null(req = csr_create(ec_key, "est", NULL, 0, &err));
	assert_int_equal(csr_set_challenge_password(req, "first-one", &err), 0);
	assert_int_equal(
	    X509_REQ_add1_attr_by_NID(req, NID_pkcs9_unstructuredName,
	                              V_ASN1_PRINTABLESTRING,
	                              (const unsigned char *)"again", 5),
	    1);
	assert_int_equal(csr_sign(req, ec_key, &err), 0);
	assert_int_equal(csr_to_der(req, &der, &len), 0);
	X509_REQ_free(req);
	for (i = 0; i + sizeof(oid_un) <= len; i++)
		if (memcmp(der + i, oid_un, sizeof(oid_un)) == 0)
			break;
	assert_true(i + sizeof(oid_un) <= len);
	der[i + sizeof(oid_un) - 1] = 0x07;
	if ((req = csr_parse(der, len, &err)) == NULL)
		fail_msg("csr_parse: %s", err.msg);
	free(der);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 -1);
	assert_err(&err, "more than one");
	X509_REQ_free(req);

	assert_non_null(req = csr_create(ec_key, "est", NULL, 0, &err));
	assert_int_equal(X509_REQ_add1_attr_by_NID(
	                     req, NID_pkcs9_challengePassword, V_ASN1_IA5STRING,
	                     (const unsigned char *)"ia5", 3),
	                 1);
	assert_int_equal(csr_challenge_password(req, buf, sizeof(buf), &err),
	                 -1);
	assert_err(&err, "not a PrintableString or UTF8String");
	X509_REQ_free(req);
}

static void
test_subject_cn(void **state)
{
	char buf[CSR_CN_MAX + 1];
	struct error err;
	X509_NAME *name;
	X509_REQ *req;

	(void)state;
	assert_non_null(name = X509_NAME_new());
	assert_int_equal(
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
	                               (const unsigned char *)"Lab", -1, -1, 0),
	    1);
	assert_non_null(req = csr_create_name(ec_key, name, NULL, 0, &err));
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), 0);
	X509_REQ_free(req);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	                                            (const unsigned char *)"a",
	                                            -1, -1, 0),
	                 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
	                                            (const unsigned char *)"b",
	                                            -1, -1, 0),
	                 1);
	assert_non_null(req = csr_create_name(ec_key, name, NULL, 0, &err));
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), -1);
	assert_err(&err, "more than one");
	X509_REQ_free(req);
	X509_NAME_free(name);

	/* UTF-8 comes back as UTF-8; a too small buffer is an error. */
	assert_non_null(req = csr_create(ec_key, "h\xc3\xb6st", NULL, 0, &err));
	assert_int_equal(csr_subject_cn(req, buf, sizeof(buf), &err), 1);
	assert_string_equal(buf, "h\xc3\xb6st");
	assert_int_equal(csr_subject_cn(req, buf, 5, &err), -1);
	X509_REQ_free(req);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_parse),
	    cmocka_unit_test(test_create_refuses),
	    cmocka_unit_test(test_create_empty_subject),
	    cmocka_unit_test(test_fixtures),
	    cmocka_unit_test(test_bad_signature),
	    cmocka_unit_test(test_sha1_refused),
	    cmocka_unit_test(test_truncated_and_trailing),
	    cmocka_unit_test(test_bad_input),
	    cmocka_unit_test(test_challenge_password),
	    cmocka_unit_test(test_subject_cn),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
