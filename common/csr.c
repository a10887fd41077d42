/*
 * csr: build, parse, verify and read PKCS#10 requests.  See csr.h for why
 * the parser accepts the encodings it does.
 *
 * Everything that comes from the network is bounded before OpenSSL sees it
 * and checked for exact length after, so that a request is one DER object
 * and nothing else: bytes smuggled after it would be signed by nobody.
 */
#include "csr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "keys.h"
#include "log.h"
#include "util.h"

/* Longest DNS label (RFC 1035 section 2.3.4). */
#define CSR_DNS_LABEL_MAX 63
/* Longest subject we show in a log line. */
#define CSR_SUBJECT_LOG_MAX 256

/* The subject as one line for log messages. */
static const char *
csr_subject_str(X509_REQ *req, char *buf, size_t len)
{
	if (X509_NAME_oneline(X509_REQ_get_subject_name(req), buf, (int)len) ==
	    NULL)
		snprintf(buf, len, "(unprintable subject)");
	return buf;
}

/*
 * A host name we are willing to request: LDH labels (RFC 1123 section
 * 2.1), optionally behind one leading "*." wildcard label.
 */
static int
csr_dns_name_valid(const char *name)
{
	size_t len, label = 0, i;

	if (name == NULL || (len = strlen(name)) == 0 || len > CSR_DNS_NAME_MAX)
		return 0;
	if (strncmp(name, "*.", 2) == 0)
		name += 2;
	for (i = 0; name[i] != '\0'; i++) {
		char c = name[i];

		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-'))
			return 0;
		if (label == 0 && c == '-')
			return 0;
		if (++label > CSR_DNS_LABEL_MAX)
			return 0;
	}
	return label > 0 && name[i - 1] != '-';
}

/* Number of UTF-8 characters (not bytes): what ub-common-name counts. */
static size_t
utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* The subjectAltName extension request, critical when subject is empty. */
static int
csr_add_san(X509_REQ *req, const char *const *dns_names, size_t ndns,
            int critical, struct error *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *gn = NULL;
	ASN1_IA5STRING *ia5 = NULL;
	X509_EXTENSION *ext = NULL;
	size_t i;
	int rc = -1;

	if ((gens = sk_GENERAL_NAME_new_null()) == NULL) {
		log_crypto(LOG_MAIN, err, "sk_GENERAL_NAME_new_null", NULL);
		goto out;
	}
	for (i = 0; i < ndns; i++) {
		if ((gn = GENERAL_NAME_new()) == NULL ||
		    (ia5 = ASN1_IA5STRING_new()) == NULL ||
		    !ASN1_STRING_set(ia5, dns_names[i], -1)) {
			log_crypto(LOG_MAIN, err, "ASN1_STRING_set",
			           dns_names[i]);
			goto out;
		}
		GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
		ia5 = NULL;
		if (!sk_GENERAL_NAME_push(gens, gn)) {
			log_crypto(LOG_MAIN, err, "sk_GENERAL_NAME_push",
			           dns_names[i]);
			goto out;
		}
		gn = NULL;
	}
	if ((ext = X509V3_EXT_i2d(NID_subject_alt_name, critical, gens)) ==
	        NULL ||
	    (exts = sk_X509_EXTENSION_new_null()) == NULL ||
	    !sk_X509_EXTENSION_push(exts, ext)) {
		log_crypto(LOG_MAIN, err, "X509V3_EXT_i2d", "subjectAltName");
		goto out;
	}
	ext = NULL;
	if (!X509_REQ_add_extensions(req, exts)) {
		log_crypto(LOG_MAIN, err, "X509_REQ_add_extensions",
		           "subjectAltName");
		goto out;
	}
	rc = 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_EXTENSION_free(ext);
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return rc;
}

int
csr_sign(X509_REQ *req, EVP_PKEY *key, struct error *err)
{
	char subject[CSR_SUBJECT_LOG_MAX];

	if (X509_REQ_sign(req, key, key_signature_md(key)) <= 0) {
		log_crypto(LOG_MAIN, err, "X509_REQ_sign",
		           csr_subject_str(req, subject, sizeof(subject)));
		return -1;
	}
	return 0;
}

X509_REQ *
csr_create_name(EVP_PKEY *key, const X509_NAME *subject,
                const char *const *dns_names, size_t ndns, struct error *err)
{
	X509_REQ *req = NULL;
	size_t i;
	int empty;

	if (key_check_strength(key, err) == -1) {
		error_prefix(err, "CSR not created");
		return NULL;
	}
	if (ndns > CSR_DNS_NAMES_MAX) {
		error_set(err, "CSR not created: %zu DNS names, at most %d",
		          ndns, CSR_DNS_NAMES_MAX);
		return NULL;
	}
	for (i = 0; i < ndns; i++) {
		if (!csr_dns_name_valid(dns_names[i])) {
			error_set(err,
			          "CSR not created: \"%s\" is not a valid "
			          "DNS name",
			          dns_names[i] ? dns_names[i] : "");
			return NULL;
		}
	}
	empty = subject == NULL || X509_NAME_entry_count(subject) == 0;
	if (empty && ndns == 0) {
		error_set(err, "CSR not created: neither a subject nor a DNS "
		               "name");
		return NULL;
	}
	if ((req = X509_REQ_new()) == NULL) {
		log_crypto(LOG_MAIN, err, "X509_REQ_new", NULL);
		return NULL;
	}
	/* RFC 2986 section 4.1: version is 0 for this edition. */
	if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
	    (subject != NULL && !X509_REQ_set_subject_name(req, subject)) ||
	    !X509_REQ_set_pubkey(req, key)) {
		log_crypto(LOG_MAIN, err, "X509_REQ_set_pubkey", NULL);
		goto fail;
	}
	/* RFC 5280 section 4.2.1.6: SAN MUST be critical if subject empty. */
	if (ndns > 0 && csr_add_san(req, dns_names, ndns, empty, err) == -1)
		goto fail;
	if (csr_sign(req, key, err) == -1)
		goto fail;
	return req;
fail:
	X509_REQ_free(req);
	return NULL;
}

X509_REQ *
csr_create(EVP_PKEY *key, const char *cn, const char *const *dns_names,
           size_t ndns, struct error *err)
{
	X509_NAME *name = NULL;
	X509_REQ *req = NULL;

	if (cn != NULL) {
		if (*cn == '\0' || utf8_chars(cn) > CSR_CN_MAX) {
			error_set(err,
			          "CSR not created: commonName must have "
			          "1 to %d characters",
			          CSR_CN_MAX);
			return NULL;
		}
		if ((name = X509_NAME_new()) == NULL ||
		    !X509_NAME_add_entry_by_NID(
		        name, NID_commonName, MBSTRING_UTF8,
		        (const unsigned char *)cn, -1, -1, 0)) {
			log_crypto(LOG_MAIN, err, "X509_NAME_add_entry_by_NID",
			           cn);
			goto out;
		}
	}
	req = csr_create_name(key, name, dns_names, ndns, err);
out:
	X509_NAME_free(name);
	return req;
}

int
csr_set_challenge_password(X509_REQ *req, const char *password,
                           struct error *err)
{
	size_t len;
	int idx;

	if (password == NULL || (len = strlen(password)) == 0 ||
	    len > CSR_CHALLENGE_MAX) {
		error_set(err, "challengePassword must have 1 to %d bytes",
		          CSR_CHALLENGE_MAX);
		return -1;
	}
	while ((idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword,
	                                       -1)) >= 0)
		X509_ATTRIBUTE_free(X509_REQ_delete_attr(req, idx));
	/* OpenSSL picks the DirectoryString type the string mask allows. */
	if (!X509_REQ_add1_attr_by_NID(
	        req, NID_pkcs9_challengePassword, MBSTRING_UTF8,
	        (const unsigned char *)password, (int)len)) {
		log_crypto(LOG_MAIN, err, "X509_REQ_add1_attr_by_NID",
		           "challengePassword");
		return -1;
	}
	return 0;
}

/*
 * One DER SEQUENCE, exactly len bytes, that decodes as a v1 PKCS#10
 * request.  Looking at the outer header first gives "truncated" and
 * "trailing bytes" their own messages instead of an ASN.1 error stack.
 */
static X509_REQ *
csr_from_der(const uint8_t *der, size_t len, struct error *err)
{
	const unsigned char *p = der;
	X509_REQ *req = NULL;
	long objlen;
	size_t total;
	int ret, tag, xclass;

	if (len == 0 || der[0] != 0x30) {
		error_set(err, "CSR is not a DER SEQUENCE");
		return NULL;
	}
	ret = ASN1_get_object(&p, &objlen, &tag, &xclass, (long)len);
	if (ret & 0x80) {
		ERR_clear_error();
		error_set(err, "CSR DER is truncated or malformed");
		return NULL;
	}
	/* 0x21 would be an indefinite length: BER, not DER. */
	if (ret != V_ASN1_CONSTRUCTED || tag != V_ASN1_SEQUENCE ||
	    xclass != V_ASN1_UNIVERSAL) {
		error_set(err, "CSR is not a DER SEQUENCE");
		return NULL;
	}
	total = (size_t)(p - der) + (size_t)objlen;
	if (total < len) {
		error_set(err,
		          "CSR has %zu bytes after the end of its DER "
		          "object",
		          len - total);
		return NULL;
	}
	p = der;
	if ((req = d2i_X509_REQ(NULL, &p, (long)len)) == NULL) {
		log_crypto(LOG_MAIN, NULL, "d2i_X509_REQ", "CSR");
		error_set(err, "not a PKCS#10 certificate request (the DER "
		               "does not decode as one)");
		return NULL;
	}
	if (p != der + len) {
		error_set(err,
		          "CSR has %zu bytes after the end of its DER "
		          "object",
		          (size_t)(der + len - p));
		goto fail;
	}
	/* RFC 2986 section 4.1: version MUST be 0. */
	if (X509_REQ_get_version(req) != X509_REQ_VERSION_1) {
		error_set(err, "CSR version %ld is not 0 (PKCS#10 v1)",
		          X509_REQ_get_version(req));
		goto fail;
	}
	return req;
fail:
	X509_REQ_free(req);
	return NULL;
}

static X509_REQ *
csr_from_pem(const uint8_t *buf, size_t len, struct error *err)
{
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	long derlen = 0;

	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		log_crypto(LOG_MAIN, err, "BIO_new_mem_buf", "CSR");
		goto out;
	}
	if (!PEM_read_bio(bio, &name, &header, &der, &derlen)) {
		ERR_clear_error();
		error_set(err, "CSR PEM is truncated or malformed");
		goto out;
	}
	/* RFC 7468 section 7; "NEW" is what old Netscape-era tools write. */
	if (strcmp(name, PEM_STRING_X509_REQ) != 0 &&
	    strcmp(name, PEM_STRING_X509_REQ_OLD) != 0) {
		error_set(err, "PEM block is a %s, not a CERTIFICATE REQUEST",
		          name);
		goto out;
	}
	if (header != NULL && *header != '\0') {
		error_set(err, "CSR PEM has RFC 1421 headers");
		goto out;
	}
	req = csr_from_der(der, (size_t)derlen, err);
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	return req;
}

X509_REQ *
csr_parse(const uint8_t *buf, size_t len, struct error *err)
{
	X509_REQ *req;
	uint8_t *der;
	size_t i, derlen;

	if (buf == NULL || len == 0) {
		error_set(err, "empty CSR");
		return NULL;
	}
	if (len > CSR_MAX_SIZE) {
		error_set(err, "CSR of %zu bytes is over the limit of %d bytes",
		          len, CSR_MAX_SIZE);
		return NULL;
	}
	/* DER always opens with a SEQUENCE tag; base64 text never does. */
	if (buf[0] == 0x30)
		return csr_from_der(buf, len, err);
	for (i = 0; i < len; i++)
		if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' &&
		    buf[i] != '\n')
			break;
	if (i == len) {
		error_set(err, "empty CSR");
		return NULL;
	}
	if (len - i >= 11 && memcmp(buf + i, "-----BEGIN ", 11) == 0)
		return csr_from_pem(buf, len, err);
	/* RFC 8951 section 3.2: base64 with or without line breaks. */
	if ((der = base64_decode((const char *)buf, len, &derlen, err)) ==
	    NULL) {
		error_prefix(err, "CSR is not PEM, DER or valid base64");
		return NULL;
	}
	req = csr_from_der(der, derlen, err);
	free(der);
	return req;
}

int
csr_verify(X509_REQ *req, struct error *err)
{
	char subject[CSR_SUBJECT_LOG_MAX];
	const X509_ALGOR *alg = NULL;
	const ASN1_OBJECT *oid;
	EVP_PKEY *pkey;
	int mdnid = NID_undef;

	csr_subject_str(req, subject, sizeof(subject));
	if ((pkey = X509_REQ_get0_pubkey(req)) == NULL) {
		log_crypto(LOG_MAIN, NULL, "X509_REQ_get0_pubkey", subject);
		error_set(err, "CSR public key does not decode");
		return -1;
	}
	/* Strength first: no work for keys we would refuse anyway. */
	if (key_check_strength(pkey, err) == -1)
		return -1;
	X509_REQ_get0_signature(req, NULL, &alg);
	X509_ALGOR_get0(&oid, NULL, NULL, alg);
	if (!OBJ_find_sigid_algs(OBJ_obj2nid(oid), &mdnid, NULL)) {
		error_set(err, "CSR signature algorithm %s is not supported",
		          OBJ_nid2sn(OBJ_obj2nid(oid)));
		return -1;
	}
	if (mdnid == NID_md2 || mdnid == NID_md4 || mdnid == NID_md5 ||
	    mdnid == NID_sha1 || mdnid == NID_md5_sha1) {
		error_set(err, "CSR is signed with %s, a broken hash",
		          OBJ_nid2sn(mdnid));
		return -1;
	}
	/* RFC 2986 section 3: the signature proves possession of the key. */
	if (X509_REQ_verify(req, pkey) != 1) {
		log_crypto(LOG_MAIN, NULL, "X509_REQ_verify", subject);
		error_set(err, "CSR signature does not verify");
		return -1;
	}
	return 0;
}

int
csr_to_der(X509_REQ *req, uint8_t **der, size_t *len)
{
	unsigned char *p;
	int n;

	*der = NULL;
	*len = 0;
	if ((n = i2d_X509_REQ(req, NULL)) <= 0) {
		log_crypto(LOG_MAIN, NULL, "i2d_X509_REQ", NULL);
		return -1;
	}
	if ((*der = malloc((size_t)n)) == NULL) {
		log_error(LOG_MAIN, "csr_to_der: out of memory");
		return -1;
	}
	p = *der;
	if (i2d_X509_REQ(req, &p) != n) {
		log_crypto(LOG_MAIN, NULL, "i2d_X509_REQ", NULL);
		free(*der);
		*der = NULL;
		return -1;
	}
	*len = (size_t)n;
	return 0;
}

char *
csr_to_pem(X509_REQ *req)
{
	BIO *bio;
	BUF_MEM *mem;
	char *pem = NULL;

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_X509_REQ(bio, req)) {
		log_crypto(LOG_MAIN, NULL, "PEM_write_bio_X509_REQ", NULL);
		goto out;
	}
	BIO_get_mem_ptr(bio, &mem);
	if ((pem = malloc(mem->length + 1)) == NULL) {
		log_error(LOG_MAIN, "csr_to_pem: out of memory");
		goto out;
	}
	memcpy(pem, mem->data, mem->length);
	pem[mem->length] = '\0';
out:
	BIO_free(bio);
	return pem;
}

int
csr_challenge_password(X509_REQ *req, char *buf, size_t len, struct error *err)
{
	X509_ATTRIBUTE *attr;
	ASN1_TYPE *value;
	const unsigned char *data;
	int idx, type, n;

	if ((idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword,
	                                    -1)) < 0)
		return 0;
	if (X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, idx) >=
	    0) {
		error_set(err, "CSR has more than one challengePassword");
		return -1;
	}
	attr = X509_REQ_get_attr(req, idx);
	/* RFC 2985 section 5.4.1: SINGLE VALUE TRUE. */
	if (X509_ATTRIBUTE_count(attr) != 1 ||
	    (value = X509_ATTRIBUTE_get0_type(attr, 0)) == NULL) {
		error_set(err, "CSR challengePassword must have exactly one "
		               "value");
		return -1;
	}
	type = ASN1_TYPE_get(value);
	if (type != V_ASN1_PRINTABLESTRING && type != V_ASN1_UTF8STRING) {
		error_set(err,
		          "CSR challengePassword is a %s, not a "
		          "PrintableString or UTF8String",
		          ASN1_tag2str(type));
		return -1;
	}
	data = ASN1_STRING_get0_data(value->value.asn1_string);
	n = ASN1_STRING_length(value->value.asn1_string);
	if (n < 0 || n > CSR_CHALLENGE_MAX || (size_t)n >= len) {
		error_set(err, "CSR challengePassword of %d bytes is too long",
		          n);
		return -1;
	}
	if (memchr(data, '\0', (size_t)n) != NULL) {
		error_set(err, "CSR challengePassword holds a NUL byte");
		return -1;
	}
	memcpy(buf, data, (size_t)n);
	buf[n] = '\0';
	return 1;
}

int
csr_subject_cn(X509_REQ *req, char *buf, size_t len, struct error *err)
{
	const X509_NAME *name = X509_REQ_get_subject_name(req);
	unsigned char *utf8 = NULL;
	int idx, n, rc = -1;

	if ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) < 0)
		return 0;
	if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) {
		error_set(err, "CSR subject has more than one commonName");
		return -1;
	}
	if ((n = ASN1_STRING_to_UTF8(
	         &utf8, X509_NAME_ENTRY_get_data(
	                    X509_NAME_get_entry(name, idx)))) < 0) {
		log_crypto(LOG_MAIN, err, "ASN1_STRING_to_UTF8",
		           "CSR commonName");
		return -1;
	}
	if (memchr(utf8, '\0', (size_t)n) != NULL) {
		error_set(err, "CSR commonName holds a NUL byte");
		goto out;
	}
	if ((size_t)n >= len) {
		error_set(err, "CSR commonName of %d bytes is too long", n);
		goto out;
	}
	memcpy(buf, utf8, (size_t)n);
	buf[n] = '\0';
	rc = 1;
out:
	OPENSSL_free(utf8);
	return rc;
}

void
csr_dns_names_free(char **names, size_t count)
{
	size_t i;

	if (names == NULL)
		return;
	for (i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

int
csr_dns_names(X509_REQ *req, char ***names, size_t *count, struct error *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	char **out = NULL;
	size_t n = 0;
	int i, idx, rc = -1;

	*names = NULL;
	*count = 0;
	ERR_clear_error();
	if ((exts = X509_REQ_get_extensions(req)) == NULL) {
		if (ERR_peek_error() == 0)
			return 0;
		log_crypto(LOG_MAIN, NULL, "X509_REQ_get_extensions", "CSR");
		error_set(err, "CSR extension request does not decode");
		return -1;
	}
	if ((idx = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1)) < 0) {
		rc = 0;
		goto out;
	}
	/* RFC 5280 section 4.2: at most one instance of an extension. */
	if (X509v3_get_ext_by_NID(exts, NID_subject_alt_name, idx) >= 0) {
		error_set(err, "CSR requests subjectAltName twice");
		goto out;
	}
	if ((gens = X509V3_EXT_d2i(X509v3_get_ext(exts, idx))) == NULL) {
		log_crypto(LOG_MAIN, NULL, "X509V3_EXT_d2i", "CSR SAN");
		error_set(err, "CSR subjectAltName does not decode");
		goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		const unsigned char *data;
		char **grown;
		int len;

		if (gn->type != GEN_DNS)
			continue;
		if (n == CSR_DNS_NAMES_MAX) {
			error_set(err, "CSR has more than %d DNS names",
			          CSR_DNS_NAMES_MAX);
			goto out;
		}
		data = ASN1_STRING_get0_data(gn->d.dNSName);
		len = ASN1_STRING_length(gn->d.dNSName);
		if (len > CSR_DNS_NAME_MAX ||
		    memchr(data, '\0', (size_t)len) != NULL) {
			error_set(err, "CSR has a malformed DNS name");
			goto out;
		}
		if ((grown = realloc(out, (n + 1) * sizeof(*out))) == NULL) {
			error_set(err, "out of memory");
			goto out;
		}
		out = grown;
		if ((out[n] = strndup((const char *)data, (size_t)len)) ==
		    NULL) {
			error_set(err, "out of memory");
			goto out;
		}
		n++;
	}
	*names = out;
	*count = n;
	out = NULL;
	rc = 0;
out:
	csr_dns_names_free(out, n);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rc;
}
