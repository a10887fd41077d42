/*
 * est: RFC 7030 / RFC 8951 request handling (see est.h).  One request runs
 * start to end on one http worker thread: route, authenticate, parse and
 * judge the CSR, ask the backend, format.  The published CA set (chain,
 * anchors, the ready-made cacerts body) is an immutable, reference-counted
 * snapshot swapped by est_refresh(), so a refresh never blocks a request
 * and a request never sees half a set.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "chain.h"
#include "csr.h"
#include "est.h"
#include "keys.h"
#include "log.h"
#include "util.h"

/* Longest "Authorization: Basic ..." value we decode. */
#define EST_AUTH_HEADER_MAX 1024
/* Longest subject as we log it. */
#define EST_SUBJECT_MAX 256
/* Boundary of serverkeygen answers (RFC 7030 4.4.2 leaves it to us). */
#define EST_BOUNDARY "estServerKeyGenBoundary"
/* Most OIDs in one CsrAttrs. */
#define EST_CSRATTRS_MAX 16

#define CT_PKCS7    "application/pkcs7-mime; smime-type=certs-only"
#define CT_CSRATTRS "application/csrattrs"
#define CT_PKCS10   "application/pkcs10"

enum est_op {
	EST_OP_CACERTS,
	EST_OP_SIMPLEENROLL,
	EST_OP_SIMPLEREENROLL,
	EST_OP_CSRATTRS,
	EST_OP_SERVERKEYGEN,
	EST_OP_COUNT
};

static const struct {
	const char *name;
	const char *method; /* the only one allowed (RFC 7030 3.2.2) */
} est_ops[EST_OP_COUNT] = {
    [EST_OP_CACERTS] = {"cacerts", "GET"},
    [EST_OP_SIMPLEENROLL] = {"simpleenroll", "POST"},
    [EST_OP_SIMPLEREENROLL] = {"simplereenroll", "POST"},
    [EST_OP_CSRATTRS] = {"csrattrs", "GET"},
    [EST_OP_SERVERKEYGEN] = {"serverkeygen", "POST"},
};

/* The published CA set; immutable once made. */
struct est_ca {
	atomic_int refs;
	bool ok;                  /* chain complete */
	char reason[ERROR_MAX];   /* why not */
	STACK_OF(X509) * chain;   /* issuing CA first, root last */
	STACK_OF(X509) * anchors; /* client authentication */
	STACK_OF(X509) * links;   /* root key update certs (cacerts) */
	STACK_OF(X509) * older;   /* earlier generations' CAs (untrusted) */
	char *cacerts;            /* base64 certs-only body */
	size_t cacerts_len;
};

struct est {
	struct est_backend be;
	char realm[EST_REALM_MAX];
	pthread_mutex_t lock; /* guards ca (the pointer, not the set) */
	struct est_ca *ca;
	size_t b64_line; /* base64 line length of answers; 0: one line */
};

/* One request in progress. */
struct est_req {
	struct est *est;
	struct http_request *http;
	struct est_ca *ca;
	enum est_op op;
	char label[EST_LABEL_MAX + 1];
	struct est_template tmpl;
	struct est_identity id;
	char user[EST_USER_MAX + 1];   /* Basic user or cert subject */
	char subject[EST_SUBJECT_MAX]; /* CSR subject, for the log */
	char serial[CERT_SERIAL_HEX_MAX];
	const char *auth_note; /* auth decision, for the log */
	int64_t t0;
};

static void
est_ca_release(struct est_ca *ca)
{
	if (ca == NULL || atomic_fetch_sub(&ca->refs, 1) != 1)
		return;
	chain_free(ca->chain);
	chain_free(ca->anchors);
	chain_free(ca->links);
	chain_free(ca->older);
	free(ca->cacerts);
	free(ca);
}

static struct est_ca *
est_ca_get(struct est *est)
{
	struct est_ca *ca;

	pthread_mutex_lock(&est->lock);
	ca = est->ca;
	if (ca != NULL)
		atomic_fetch_add(&ca->refs, 1);
	pthread_mutex_unlock(&est->lock);
	return ca;
}

void
est_set_base64_line(struct est *est, size_t line_len)
{
	est->b64_line = line_len;
}

struct est *
est_new(const struct est_backend *backend, const char *realm, struct error *err)
{
	struct est *est;

	if (backend->ca_certs == NULL || backend->trust_anchors == NULL ||
	    backend->check_basic == NULL || backend->lookup_label == NULL ||
	    backend->enroll == NULL || backend->is_revoked == NULL) {
		error_set(err, "EST backend is incomplete");
		return NULL;
	}
	if ((est = calloc(1, sizeof(*est))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	est->be = *backend;
	est->b64_line = EST_B64_LINE;
	snprintf(est->realm, sizeof(est->realm), "%s",
	         realm != NULL ? realm : "EST");
	pthread_mutex_init(&est->lock, NULL);
	return est;
}

void
est_free(struct est *est)
{
	if (est == NULL)
		return;
	est_ca_release(est->ca);
	pthread_mutex_destroy(&est->lock);
	free(est);
}

int
est_certs_only(STACK_OF(X509) * certs, uint8_t **der, size_t *len,
               struct error *err)
{
	PKCS7 *p7 = NULL;
	PKCS7_SIGNED *p7s;
	unsigned char *p;
	int i, n, rc = -1;

	*der = NULL;
	*len = 0;
	/*
	 * RFC 5272 section 4.1 (Simple PKI Response): SignedData version 1,
	 * no signerInfos, encapsulatedContentInfo id-data with no eContent,
	 * the certificates in certificates.  Built as `openssl crl2pkcs7
	 * -nocrl` builds it.
	 */
	if ((p7 = PKCS7_new()) == NULL || (p7s = PKCS7_SIGNED_new()) == NULL) {
		log_crypto(LOG_EST, err, "PKCS7_new", NULL);
		goto out;
	}
	p7->type = OBJ_nid2obj(NID_pkcs7_signed);
	p7->d.sign = p7s;
	p7s->contents->type = OBJ_nid2obj(NID_pkcs7_data);
	if (ASN1_INTEGER_set(p7s->version, 1) != 1 ||
	    (p7s->cert = sk_X509_new_null()) == NULL) {
		log_crypto(LOG_EST, err, "PKCS7_SIGNED", NULL);
		goto out;
	}
	for (i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);

		if (X509_up_ref(x) != 1 || sk_X509_push(p7s->cert, x) <= 0) {
			log_crypto(LOG_EST, err, "sk_X509_push", NULL);
			goto out;
		}
	}
	if ((n = i2d_PKCS7(p7, NULL)) <= 0 ||
	    (*der = malloc((size_t)n)) == NULL) {
		log_crypto(LOG_EST, err, "i2d_PKCS7", NULL);
		goto out;
	}
	p = *der;
	i2d_PKCS7(p7, &p);
	*len = (size_t)n;
	rc = 0;
out:
	PKCS7_free(p7);
	return rc;
}

/*
 * The set is complete when each certificate is issued by the next one, the
 * last is self-signed, the first is a CA, and the path verifies now.
 */
static int
est_chain_complete(STACK_OF(X509) * chain, struct error *err)
{
	STACK_OF(X509) *mid = NULL, *top = NULL;
	char dn[EST_SUBJECT_MAX];
	X509 *x, *last;
	int i, n = sk_X509_num(chain), rc = -1;

	if (n <= 0) {
		error_set(err, "no CA certificate");
		return -1;
	}
	x = sk_X509_value(chain, 0);
	if (X509_check_ca(x) == 0) {
		cert_name_string(X509_get_subject_name(x), dn, sizeof(dn));
		error_set(err, "%s is not a CA", dn);
		return -1;
	}
	for (i = 0; i + 1 < n; i++) {
		x = sk_X509_value(chain, i);
		if (X509_check_issued(sk_X509_value(chain, i + 1), x) !=
		    X509_V_OK) {
			cert_name_string(X509_get_issuer_name(x), dn,
			                 sizeof(dn));
			error_set(err,
			          "the issuer of certificate %d (%s) "
			          "is missing",
			          i, dn);
			return -1;
		}
	}
	last = sk_X509_value(chain, n - 1);
	if (X509_check_issued(last, last) != X509_V_OK) {
		cert_name_string(X509_get_issuer_name(last), dn, sizeof(dn));
		error_set(err, "no root CA: the issuer %s is missing", dn);
		return -1;
	}
	if ((mid = sk_X509_new_null()) == NULL ||
	    (top = sk_X509_new_null()) == NULL || !sk_X509_push(top, last))
		goto out;
	for (i = 1; i + 1 < n; i++)
		if (!sk_X509_push(mid, sk_X509_value(chain, i)))
			goto out;
	if (chain_verify(sk_X509_value(chain, 0), mid, top, CHAIN_PURPOSE_ANY,
	                 NULL, err) == -1)
		goto out;
	rc = 0;
out:
	sk_X509_free(mid);
	sk_X509_free(top);
	return rc;
}

/* The cacerts body: the chain, then the root key update certificates. */
static int
est_published(const struct est_ca *ca, uint8_t **der, size_t *len,
              struct error *err)
{
	STACK_OF(X509) *all;
	int i, rc = -1;

	if (ca->links == NULL || sk_X509_num(ca->links) == 0)
		return est_certs_only(ca->chain, der, len, err);
	if ((all = sk_X509_dup(ca->chain)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	for (i = 0; i < sk_X509_num(ca->links); i++)
		if (!sk_X509_push(all, sk_X509_value(ca->links, i))) {
			error_set(err, "out of memory");
			goto out;
		}
	rc = est_certs_only(all, der, len, err);
out:
	sk_X509_free(all);
	return rc;
}

int
est_refresh(struct est *est, struct error *err)
{
	struct est_ca *ca, *old;
	struct error lerr;
	uint8_t *der = NULL;
	size_t len;
	int rc = -1;

	if ((ca = calloc(1, sizeof(*ca))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	atomic_init(&ca->refs, 1);
	error_clear(&lerr);
	if ((ca->chain = est->be.ca_certs(est->be.ctx, &lerr)) == NULL) {
		snprintf(ca->reason, sizeof(ca->reason),
		         "CA certificates unavailable: %s", lerr.msg);
	} else if (est_chain_complete(ca->chain, &lerr) == -1) {
		snprintf(ca->reason, sizeof(ca->reason),
		         "CA certificate chain incomplete: %s", lerr.msg);
	} else if ((ca->anchors = est->be.trust_anchors(est->be.ctx, &lerr)) ==
	           NULL) {
		snprintf(ca->reason, sizeof(ca->reason),
		         "trust anchors unavailable: %s", lerr.msg);
	} else if (est->be.previous != NULL &&
	           est->be.previous(est->be.ctx, &ca->links, &ca->older,
	                            &lerr) == -1) {
		snprintf(ca->reason, sizeof(ca->reason),
		         "earlier CA chain generations: %s", lerr.msg);
	} else if (est_published(ca, &der, &len, &lerr) == -1) {
		snprintf(ca->reason, sizeof(ca->reason), "cacerts: %s",
		         lerr.msg);
	} else {
		ca->cacerts =
		    base64_encode(der, len, est->b64_line, &ca->cacerts_len);
		if (ca->cacerts == NULL)
			snprintf(ca->reason, sizeof(ca->reason),
			         "out of memory");
		else
			ca->ok = true;
	}
	free(der);
	if (ca->ok) {
		log_info(LOG_EST, "est: CA chain of %d certificates published",
		         sk_X509_num(ca->chain));
		rc = 0;
	} else {
		/* The product's troubleshooting step 1: say it loudly. */
		log_error(LOG_EST,
		          "est: %s; cacerts and enrollment answer "
		          "503",
		          ca->reason);
		error_set(err, "%s", ca->reason);
	}
	pthread_mutex_lock(&est->lock);
	old = est->ca;
	est->ca = ca;
	pthread_mutex_unlock(&est->lock);
	est_ca_release(old);
	return rc;
}

bool
est_chain_ok(struct est *est)
{
	struct est_ca *ca = est_ca_get(est);
	bool ok = ca != NULL && ca->ok;

	est_ca_release(ca);
	return ok;
}

/* Append a DER TLV to buf (capacity cap); -1 when it does not fit. */
static int
der_tlv(uint8_t *buf, size_t cap, size_t *off, uint8_t tag,
        const uint8_t *content, size_t clen)
{
	uint8_t hdr[6];
	size_t h = 0;

	hdr[h++] = tag;
	if (clen < 0x80)
		hdr[h++] = (uint8_t)clen;
	else if (clen <= 0xff) {
		hdr[h++] = 0x81;
		hdr[h++] = (uint8_t)clen;
	} else if (clen <= 0xffff) {
		hdr[h++] = 0x82;
		hdr[h++] = (uint8_t)(clen >> 8);
		hdr[h++] = (uint8_t)clen;
	} else
		return -1;
	if (*off + h + clen > cap)
		return -1;
	memcpy(buf + *off, hdr, h);
	memmove(buf + *off + h, content, clen);
	*off += h + clen;
	return 0;
}

/* The DER of an OID by NID into buf; returns its length or -1. */
static int
der_oid(int nid, uint8_t *buf, size_t cap)
{
	const ASN1_OBJECT *obj = OBJ_nid2obj(nid);
	unsigned char *p = buf;
	int n;

	if (obj == NULL || (n = i2d_ASN1_OBJECT(obj, NULL)) <= 0 ||
	    (size_t)n > cap)
		return -1;
	return i2d_ASN1_OBJECT(obj, &p);
}

int
est_csrattrs(const struct est_template *t, uint8_t **der, size_t *len,
             struct error *err)
{
	/* Each OID is < 16 bytes; all of it fits in a few hundred. */
	uint8_t body[512], curves[64], attr[128], oid[32];
	size_t off = 0, coff = 0, aoff = 0;
	int n, nids[EST_CSRATTRS_MAX], nn = 0, i;
	bool p256 = t->key_types & EST_KEY_BIT(KEY_EC_P256);
	bool p384 = t->key_types & EST_KEY_BIT(KEY_EC_P384);
	bool rsa = t->key_types &
	           (EST_KEY_BIT(KEY_RSA_2048) | EST_KEY_BIT(KEY_RSA_3072) |
	            EST_KEY_BIT(KEY_RSA_4096));

	*der = NULL;
	*len = 0;
	/*
	 * RFC 7030 section 4.5.2: CsrAttrs ::= SEQUENCE OF AttrOrOID.  We
	 * list challengePassword when proof of possession is wanted (3.5),
	 * the key types (ecPublicKey as an Attribute whose values are the
	 * curves, as in the RFC's example; rsaEncryption as an OID) and the
	 * signature algorithms that go with them.
	 */
	if (t->pop != EST_POP_OFF)
		nids[nn++] = NID_pkcs9_challengePassword;
	if (p384)
		nids[nn++] = NID_ecdsa_with_SHA384;
	if (p256)
		nids[nn++] = NID_ecdsa_with_SHA256;
	if (rsa) {
		nids[nn++] = NID_rsaEncryption;
		nids[nn++] = NID_sha256WithRSAEncryption;
	}
	for (i = 0; i < nn; i++) {
		if ((n = der_oid(nids[i], oid, sizeof(oid))) < 0 ||
		    (size_t)n > sizeof(body) - off)
			goto fail;
		memcpy(body + off, oid, (size_t)n);
		off += (size_t)n;
	}
	if (p256 || p384) {
		/* SET OF in DER order: secp384r1 (06 05 ..) sorts first. */
		if (p384) {
			if ((n = der_oid(NID_secp384r1, oid, sizeof(oid))) < 0)
				goto fail;
			memcpy(curves + coff, oid, (size_t)n);
			coff += (size_t)n;
		}
		if (p256) {
			if ((n = der_oid(NID_X9_62_prime256v1, oid,
			                 sizeof(oid))) < 0)
				goto fail;
			memcpy(curves + coff, oid, (size_t)n);
			coff += (size_t)n;
		}
		if ((n = der_oid(NID_X9_62_id_ecPublicKey, attr,
		                 sizeof(attr))) < 0)
			goto fail;
		aoff = (size_t)n;
		if (der_tlv(attr, sizeof(attr), &aoff, 0x31, curves, coff) ==
		        -1 ||
		    der_tlv(body, sizeof(body), &off, 0x30, attr, aoff) == -1)
			goto fail;
	}
	{
		uint8_t out[sizeof(body) + 8];
		size_t ooff = 0;

		if (der_tlv(out, sizeof(out), &ooff, 0x30, body, off) == -1 ||
		    (*der = malloc(ooff)) == NULL)
			goto fail;
		memcpy(*der, out, ooff);
		*len = ooff;
	}
	return 0;
fail:
	error_set(err, "cannot encode CsrAttrs");
	return -1;
}

int
est_key_type(const EVP_PKEY *key, enum key_type *type, struct error *err)
{
	char curve[64];
	size_t clen = 0;
	int bits = EVP_PKEY_get_bits(key);

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
		if (bits == 2048)
			*type = KEY_RSA_2048;
		else if (bits == 3072)
			*type = KEY_RSA_3072;
		else if (bits == 4096)
			*type = KEY_RSA_4096;
		else {
			error_set(err,
			          "RSA key of %d bits (2048, 3072 or "
			          "4096 wanted)",
			          bits);
			return -1;
		}
		return 0;
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(key, "group", curve,
		                                   sizeof(curve), &clen) != 1) {
			ERR_clear_error();
			error_set(err, "EC key with an unnamed curve");
			return -1;
		}
		if (strcmp(curve, "prime256v1") == 0 ||
		    strcmp(curve, "P-256") == 0)
			*type = KEY_EC_P256;
		else if (strcmp(curve, "secp384r1") == 0 ||
		         strcmp(curve, "P-384") == 0)
			*type = KEY_EC_P384;
		else {
			error_set(err, "EC curve %s (P-256 or P-384 wanted)",
			          curve);
			return -1;
		}
		return 0;
	default:
		error_set(err, "unsupported key algorithm");
		return -1;
	}
}

int
est_check_pop(X509_REQ *csr, enum est_pop pop, const uint8_t *binding,
              size_t blen, const char *btype, struct error *err)
{
	char pw[CSR_CHALLENGE_MAX + 1], *want = NULL;
	size_t wlen = 0;
	int have, rc = -1;

	if (pop == EST_POP_OFF)
		return 0;
	if ((have = csr_challenge_password(csr, pw, sizeof(pw), err)) == -1) {
		error_prefix(err, "proof of possession");
		return -1;
	}
	if (have == 0) {
		if (pop == EST_POP_REQUIRED) {
			error_set(err,
			          "proof of possession required: the CSR "
			          "must carry the base64 %s channel "
			          "binding in challengePassword "
			          "(RFC 7030 section 3.5)",
			          btype != NULL ? btype : "TLS");
			return -1;
		}
		return 0;
	}
	if (binding == NULL || blen == 0) {
		error_set(err, "proof of possession: no TLS channel binding on "
		               "this connection");
		return -1;
	}
	/*
	 * RFC 7030 section 3.5: the tls-unique value, base64-encoded
	 * (RFC 4648, one line), is the challengePassword; on TLS 1.3 the
	 * tls-exporter value of RFC 9266 takes its place.
	 */
	if ((want = base64_encode(binding, blen, 0, &wlen)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	if (strlen(pw) != wlen || CRYPTO_memcmp(pw, want, wlen) != 0) {
		error_set(err,
		          "proof of possession failed: challengePassword "
		          "is not the %s channel binding of this "
		          "connection",
		          btype);
		goto out;
	}
	rc = 0;
out:
	free(want);
	return rc;
}

/* The DER of the subjectAltName in exts, or NULL/0 when absent. */
static int
est_san_der(const STACK_OF(X509_EXTENSION) * exts, uint8_t **der, size_t *len)
{
	const X509_EXTENSION *ext;
	const ASN1_OCTET_STRING *v;
	int i;

	*der = NULL;
	*len = 0;
	if ((i = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1)) < 0)
		return 0;
	if (X509v3_get_ext_by_NID(exts, NID_subject_alt_name, i) >= 0)
		return -1; /* repeated */
	ext = X509v3_get_ext(exts, i);
	v = X509_EXTENSION_get_data((X509_EXTENSION *)ext);
	if ((*der = malloc((size_t)ASN1_STRING_length(v) + 1)) == NULL)
		return -1;
	memcpy(*der, ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
	*len = (size_t)ASN1_STRING_length(v);
	return 0;
}

int
est_same_identity(X509_REQ *csr, X509 *cert, struct error *err)
{
	STACK_OF(X509_EXTENSION) * exts;
	uint8_t *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	int rc = -1;

	/* RFC 7030 section 4.2.2: the Subject field MUST be identical. */
	if (X509_NAME_cmp(X509_REQ_get_subject_name(csr),
	                  X509_get_subject_name(cert)) != 0) {
		error_set(err, "reenrollment subject differs from the client "
		               "certificate's (RFC 7030 section 4.2.2)");
		return -1;
	}
	/* ... and the SubjectAltName extension too. */
	exts = X509_REQ_get_extensions(csr);
	if (est_san_der(exts, &a, &alen) == -1 ||
	    est_san_der(X509_get0_extensions(cert), &b, &blen) == -1) {
		error_set(err, "malformed subjectAltName");
		goto out;
	}
	if (alen != blen || (alen > 0 && memcmp(a, b, alen) != 0)) {
		error_set(err, "reenrollment subjectAltName differs from the "
		               "client certificate's (RFC 7030 section 4.2.2)");
		goto out;
	}
	rc = 0;
out:
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	free(a);
	free(b);
	return rc;
}

/* Log the outcome and answer with a plain-text reason. */
static void est_refuse(struct est_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
est_refuse(struct est_req *r, int status, const char *fmt, ...)
{
	char msg[ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_write(LOG_EST, status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO,
	          "est: %s %s from %s refused %d: %s (auth %s, %lld ms)",
	          http_request_method(r->http), http_request_path(r->http),
	          http_request_peer(r->http), status, msg,
	          r->auth_note != NULL ? r->auth_note : "-",
	          (long long)(time_mono_ms() - r->t0));
	if (status == 401) {
		char h[EST_REALM_MAX + 32];

		/* RFC 7030 3.2.3, RFC 7617: how to authenticate. */
		snprintf(h, sizeof(h), "Basic realm=\"%s\"", r->est->realm);
		http_reply_header(r->http, "WWW-Authenticate", h);
	}
	http_reply_text(r->http, status, "%s", msg);
}

/* Answer 200 with base64 of der, line-broken, and the CTE header. */
static void
est_reply_b64(struct est_req *r, const char *ctype, const uint8_t *der,
              size_t len)
{
	char *b64;
	size_t blen;

	if ((b64 = base64_encode(der, len, r->est->b64_line, &blen)) == NULL) {
		est_refuse(r, 500, "out of memory");
		return;
	}
	/*
	 * RFC 8951 section 3.2: clients must not rely on it, but older ones
	 * (and RFC 7030 as written) expect it.
	 */
	http_reply_header(r->http, "Content-Transfer-Encoding", "base64");
	http_reply(r->http, 200, ctype, b64, blen);
	free(b64);
}

/* Route: path -> label and operation; 0 or -1 after answering 404. */
static int
est_route(struct est_req *r)
{
	const char *path = http_request_path(r->http), *rest, *slash, *op;
	size_t llen, i;
	int k;

	if (strncmp(path, EST_PATH_PREFIX, strlen(EST_PATH_PREFIX)) != 0) {
		est_refuse(r, 404, "not an EST path (%s...)", EST_PATH_PREFIX);
		return -1;
	}
	rest = path + strlen(EST_PATH_PREFIX);
	op = rest;
	r->label[0] = '\0';
	if ((slash = strchr(rest, '/')) != NULL) {
		/* RFC 7030 3.2.2: /.well-known/est/<label>/<operation> */
		llen = (size_t)(slash - rest);
		if (llen == 0 || llen > EST_LABEL_MAX) {
			est_refuse(r, 404, "bad label");
			return -1;
		}
		for (i = 0; i < llen; i++) {
			char c = rest[i];

			if (!((c >= 'a' && c <= 'z') ||
			      (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
			      c == '.') ||
			    (i == 0 && c == '.')) {
				est_refuse(r, 404, "bad label");
				return -1;
			}
		}
		memcpy(r->label, rest, llen);
		r->label[llen] = '\0';
		op = slash + 1;
	}
	for (k = 0; k < EST_OP_COUNT; k++)
		if (strcmp(op, est_ops[k].name) == 0)
			break;
	if (k == EST_OP_COUNT) {
		est_refuse(r, 404, "unknown EST operation");
		return -1;
	}
	r->op = (enum est_op)k;
	if (strcmp(http_request_method(r->http), est_ops[k].method) != 0) {
		http_reply_header(r->http, "Allow", est_ops[k].method);
		est_refuse(r, 405, "%s takes %s only", est_ops[k].name,
		           est_ops[k].method);
		return -1;
	}
	k = r->est->be.lookup_label(
	    r->est->be.ctx, r->label[0] != '\0' ? r->label : NULL, &r->tmpl);
	if (k == 0) {
		est_refuse(r, 404, "unknown label \"%s\"", r->label);
		return -1;
	}
	if (k == -1) {
		est_refuse(r, 500, "template lookup failed");
		return -1;
	}
	return 0;
}

/*
 * The client certificate: verified against the anchors (through the
 * certificates it sent and our own CA chain) and not revoked.  Returns 1
 * good, 0 none sent, -1 refused with err set.
 */
static int
est_auth_cert(struct est_req *r, struct error *err)
{
	X509 *cert = http_request_peer_cert(r->http);
	STACK_OF(X509) *sent = http_request_peer_chain(r->http), *untrusted;
	int i, rc = -1, rev;

	if (cert == NULL)
		return 0;
	if ((untrusted = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	for (i = 0; sent != NULL && i < sk_X509_num(sent); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(sent, i)))
			goto out;
	for (i = 0; i < sk_X509_num(r->ca->chain); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(r->ca->chain, i)))
			goto out;
	/* A certificate issued under an earlier root CA chain generation. */
	for (i = 0; r->ca->older != NULL && i < sk_X509_num(r->ca->older); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(r->ca->older, i)))
			goto out;
	/* RFC 7030 3.3.2: the client certificate must chain to our anchors. */
	if (chain_verify(cert, untrusted, r->ca->anchors,
	                 CHAIN_PURPOSE_TLS_CLIENT, NULL, err) == -1) {
		error_prefix(err, "client certificate");
		goto out;
	}
	rev =
	    r->est->be.is_revoked(r->est->be.ctx, X509_get0_serialNumber(cert),
	                          X509_get_issuer_name(cert));
	if (rev != 0) {
		error_set(err, "client certificate %s",
		          rev == 1 ? "is revoked"
		                   : "revocation status unknown");
		goto out;
	}
	cert_name_string(X509_get_subject_name(cert), r->user, sizeof(r->user));
	rc = 1;
out:
	sk_X509_free(untrusted);
	return rc;
}

/* Basic credentials: 1 good, 0 none sent, -1 refused with err set. */
static int
est_auth_basic(struct est_req *r, struct error *err)
{
	const char *h = http_request_header(r->http, "Authorization");
	char cred[EST_USER_MAX + EST_PASSWORD_MAX + 2], *colon;
	uint8_t *dec = NULL;
	size_t dlen = 0;
	int rc = -1;

	if (h == NULL)
		return 0;
	if (strncasecmp(h, "Basic ", 6) != 0) {
		error_set(err, "only Basic authentication is supported");
		return -1;
	}
	h += 6;
	if (strlen(h) > EST_AUTH_HEADER_MAX ||
	    (dec = base64_decode(h, strlen(h), &dlen, NULL)) == NULL) {
		error_set(err, "malformed Basic credentials");
		return -1;
	}
	/* RFC 7617 section 2: user-id ":" password; no NUL anywhere. */
	if (memchr(dec, '\0', dlen) != NULL ||
	    (colon = memchr(dec, ':', dlen)) == NULL ||
	    (size_t)(colon - (char *)dec) > EST_USER_MAX ||
	    dlen - (size_t)(colon - (char *)dec) - 1 > EST_PASSWORD_MAX) {
		error_set(err, "malformed Basic credentials");
		goto out;
	}
	memcpy(cred, dec, dlen);
	cred[dlen] = '\0';
	colon = cred + (colon - (char *)dec);
	*colon = '\0';
	if (r->est->be.check_basic(r->est->be.ctx, cred, colon + 1) != 1) {
		error_set(err, "wrong user name or password");
		goto out;
	}
	snprintf(r->user, sizeof(r->user), "%s", cred);
	rc = 1;
out:
	secure_zero(cred, sizeof(cred));
	secure_zero(dec, dlen);
	free(dec);
	return rc;
}

/* Authenticate for op; 0 or -1 after answering. */
static int
est_authenticate(struct est_req *r)
{
	struct error cerr, berr;
	int c, b;

	error_clear(&cerr);
	error_clear(&berr);
	c = est_auth_cert(r, &cerr);
	if (r->op == EST_OP_SIMPLEREENROLL) {
		/*
		 * RFC 7030 4.2.2: reenrollment renews the certificate the
		 * client authenticates with, so only that certificate
		 * counts.  Basic cannot help: 403, not 401.
		 */
		if (c == 1)
			goto cert;
		r->auth_note = "refused";
		log_debug(LOG_EST,
		          "est: authentication of %s: refused (a TLS client "
		          "certificate is required for re-enrollment): %s",
		          http_request_peer(r->http),
		          c == 0 ? "none presented" : cerr.msg);
		est_refuse(r, 403, "%s",
		           c == 0 ? "simplereenroll needs the TLS client "
		                    "certificate being renewed"
		                  : cerr.msg);
		return -1;
	}
	if (c == 1)
		goto cert;
	b = est_auth_basic(r, &berr);
	if (b == 1) {
		r->id.auth = EST_AUTH_BASIC;
		r->auth_note = "basic";
		r->id.user = r->user;
		log_debug(LOG_EST,
		          "est: authentication of %s: HTTP Basic user %s "
		          "accepted%s%s",
		          http_request_peer(r->http), r->user,
		          c == -1 ? " (client certificate refused: " : "",
		          c == -1 ? cerr.msg : "");
		return 0;
	}
	/* RFC 7030 3.2.3: ask for credentials with 401. */
	r->auth_note = "refused";
	log_debug(LOG_EST,
	          "est: authentication of %s: refused: certificate: %s; "
	          "Basic: %s",
	          http_request_peer(r->http),
	          c == 0 ? "none presented" : cerr.msg,
	          b == 0 ? "no credentials" : berr.msg);
	if (c == -1 && b == -1)
		est_refuse(r, 401, "%s; %s", cerr.msg, berr.msg);
	else if (c == -1)
		est_refuse(r, 401, "%s", cerr.msg);
	else if (b == -1)
		est_refuse(r, 401, "%s", berr.msg);
	else
		est_refuse(r, 401,
		           "authentication required: a client "
		           "certificate of this deployment or HTTP "
		           "Basic credentials");
	return -1;
cert:
	r->id.auth = EST_AUTH_CERT;
	r->id.cert = http_request_peer_cert(r->http);
	r->id.user = r->user;
	r->auth_note = "certificate";
	log_debug(LOG_EST,
	          "est: authentication of %s: TLS client certificate %s "
	          "accepted (chains to our anchors, not revoked)",
	          http_request_peer(r->http), r->user);
	return 0;
}

/* The media type without parameters equals want (case-insensitive). */
static bool
est_media_type_is(const char *ct, const char *want)
{
	size_t n = strlen(want);

	if (ct == NULL)
		return false;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return false;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* Most bytes of a CSR's subjectAltNames a debug line shows. */
#define EST_DEBUG_SANS_MAX 512

/* The CSR's subjectAltName extension as text ("-" when none). */
static void
est_csr_sans(X509_REQ *csr, char *buf, size_t len)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(csr);
	X509_EXTENSION *ext;
	BIO *bio = NULL;
	int i, n;

	snprintf(buf, len, "-");
	if (exts == NULL)
		goto out;
	if ((i = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1)) < 0)
		goto out;
	ext = sk_X509_EXTENSION_value(exts, i);
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509V3_EXT_print(bio, ext, 0, 0) != 1) {
		ERR_clear_error();
		snprintf(buf, len, "(does not print)");
		goto out;
	}
	if ((n = BIO_read(bio, buf, (int)len - 1)) < 0)
		n = 0;
	buf[n] = '\0';
out:
	BIO_free(bio);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

/* Debug: what the client asks to be certified. */
static void
est_debug_csr(struct est_req *r, X509_REQ *csr)
{
	char key[64], sans[EST_DEBUG_SANS_MAX];

	if (!log_enabled(LOG_EST, LOG_LEVEL_DEBUG))
		return;
	key_describe(X509_REQ_get0_pubkey(csr), key, sizeof(key));
	est_csr_sans(csr, sans, sizeof(sans));
	log_debug(LOG_EST, "est: %s from %s: CSR subject %s, key %s, SANs %s",
	          http_request_path(r->http), http_request_peer(r->http),
	          r->subject[0] != '\0' ? r->subject : "(empty)", key, sans);
}

/* Parse and judge the CSR of an enrollment; NULL after answering. */
static X509_REQ *
est_read_csr(struct est_req *r)
{
	const uint8_t *body;
	struct error err;
	uint8_t binding[HTTP_BINDING_MAX];
	size_t len, blen = sizeof(binding);
	const char *btype = NULL;
	enum key_type kt;
	X509_REQ *csr;
	char cn[CSR_CN_MAX * 4 + 1];
	int has_cn;

	error_clear(&err);
	/* RFC 7030 4.2.1: the body is application/pkcs10. */
	if (!est_media_type_is(http_request_header(r->http, "Content-Type"),
	                       CT_PKCS10)) {
		est_refuse(r, 415, "Content-Type must be %s", CT_PKCS10);
		return NULL;
	}
	/*
	 * RFC 8951 section 3.2: base64 with or without line breaks, whatever
	 * Content-Transfer-Encoding says (or whether it is there at all).
	 */
	body = http_request_body(r->http, &len);
	if (len == 0) {
		est_refuse(r, 400, "empty body: a base64 PKCS#10 CSR expected");
		return NULL;
	}
	if ((csr = csr_parse(body, len, &err)) == NULL) {
		est_refuse(r, 400, "%s", err.msg);
		return NULL;
	}
	cert_name_string(X509_REQ_get_subject_name(csr), r->subject,
	                 sizeof(r->subject));
	est_debug_csr(r, csr);
	if (csr_verify(csr, &err) == -1) {
		est_refuse(r, 400, "%s", err.msg);
		goto fail;
	}
	if (est_key_type(X509_REQ_get0_pubkey(csr), &kt, &err) == -1) {
		est_refuse(r, 400, "%s", err.msg);
		goto fail;
	}
	if (r->op != EST_OP_SERVERKEYGEN &&
	    !(r->tmpl.key_types & EST_KEY_BIT(kt))) {
		est_refuse(r, 400, "key type %s is not allowed by template %s",
		           key_type_name(kt), r->tmpl.name);
		goto fail;
	}
	if (r->tmpl.require_cn) {
		has_cn = csr_subject_cn(csr, cn, sizeof(cn), &err);
		if (has_cn != 1) {
			est_refuse(r, 400,
			           "template %s needs exactly one "
			           "subject commonName",
			           r->tmpl.name);
			goto fail;
		}
	}
	if (r->tmpl.pop != EST_POP_OFF &&
	    http_request_channel_binding(r->http, binding, &blen, &btype,
	                                 &err) == -1)
		blen = 0;
	if (est_check_pop(csr, r->tmpl.pop, binding, blen, btype, &err) == -1) {
		est_refuse(r, 400, "%s", err.msg);
		goto fail;
	}
	if (r->op == EST_OP_SIMPLEREENROLL &&
	    est_same_identity(csr, r->id.cert, &err) == -1) {
		est_refuse(r, 400, "%s", err.msg);
		goto fail;
	}
	return csr;
fail:
	X509_REQ_free(csr);
	return NULL;
}

static void
est_cacerts(struct est_req *r)
{
	http_reply_header(r->http, "Content-Transfer-Encoding", "base64");
	http_reply(r->http, 200, CT_PKCS7, r->ca->cacerts, r->ca->cacerts_len);
}

static void
est_csrattrs_op(struct est_req *r)
{
	struct error err;
	uint8_t *der;
	size_t len;

	if (est_csrattrs(&r->tmpl, &der, &len, &err) == -1) {
		est_refuse(r, 500, "%s", err.msg);
		return;
	}
	est_reply_b64(r, CT_CSRATTRS, der, len);
	free(der);
}

static void
est_enroll(struct est_req *r)
{
	STACK_OF(X509) *one = NULL;
	struct error err;
	X509_REQ *csr;
	X509 *cert = NULL;
	uint8_t *der = NULL;
	size_t len;
	int status = 500;

	error_clear(&err);
	if ((csr = est_read_csr(r)) == NULL)
		return;
	cert = r->est->be.enroll(r->est->be.ctx, csr, &r->tmpl, &r->id, &status,
	                         &err);
	if (cert == NULL) {
		est_refuse(r, status >= 400 ? status : 500,
		           "enrollment refused: %s", err.msg);
		goto out;
	}
	cert_serial_hex(cert, r->serial, sizeof(r->serial), NULL);
	/* RFC 7030 4.2.3: certs-only, with only the issued certificate. */
	if ((one = sk_X509_new_null()) == NULL || !sk_X509_push(one, cert) ||
	    est_certs_only(one, &der, &len, &err) == -1) {
		est_refuse(r, 500, "cannot encode the answer");
		goto out;
	}
	est_reply_b64(r, CT_PKCS7, der, len);
out:
	sk_X509_free(one);
	X509_free(cert);
	X509_REQ_free(csr);
	free(der);
}

/* RFC 7030 4.4.2: multipart/mixed, the key part, then the certificate. */
static void
est_serverkeygen(struct est_req *r)
{
	STACK_OF(X509) *one = NULL;
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	struct error err;
	X509_REQ *csr;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	enum key_type kt;
	uint8_t *p7der = NULL, *p8der = NULL;
	unsigned char *p;
	char *k64 = NULL, *c64 = NULL, *body = NULL;
	size_t p7len, p8len = 0, k64len, c64len, blen;
	int n, status = 500;

	error_clear(&err);
	if ((csr = est_read_csr(r)) == NULL)
		return;
	/*
	 * The CSR's key type is a hint (RFC 7030 4.4.1): honoured when the
	 * template allows it, else the template's own type.
	 */
	if (est_key_type(X509_REQ_get0_pubkey(csr), &kt, NULL) == -1 ||
	    !(r->tmpl.key_types & EST_KEY_BIT(kt)))
		kt = r->tmpl.keygen_type;
	if (r->est->be.serverkeygen == NULL) {
		est_refuse(r, 501, "serverkeygen is not offered");
		goto out;
	}
	if (r->est->be.serverkeygen(r->est->be.ctx, csr, &r->tmpl, kt, &r->id,
	                            &key, &cert, &status, &err) == -1) {
		est_refuse(r, status >= 400 ? status : 500,
		           "key generation refused: %s", err.msg);
		goto out;
	}
	cert_serial_hex(cert, r->serial, sizeof(r->serial), NULL);
	/* RFC 7030 4.4.2: unencrypted PKCS#8 when no encryption is asked. */
	if ((p8 = EVP_PKEY2PKCS8(key)) == NULL ||
	    (n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL)) <= 0 ||
	    (p8der = malloc((size_t)n)) == NULL) {
		log_crypto(LOG_EST, NULL, "EVP_PKEY2PKCS8", r->subject);
		est_refuse(r, 500, "cannot encode the key");
		goto out;
	}
	p = p8der;
	p8len = (size_t)i2d_PKCS8_PRIV_KEY_INFO(p8, &p);
	if ((one = sk_X509_new_null()) == NULL || !sk_X509_push(one, cert) ||
	    est_certs_only(one, &p7der, &p7len, &err) == -1 ||
	    (k64 = base64_encode(p8der, p8len, r->est->b64_line, &k64len)) ==
	        NULL ||
	    (c64 = base64_encode(p7der, p7len, r->est->b64_line, &c64len)) ==
	        NULL) {
		est_refuse(r, 500, "cannot encode the answer");
		goto out;
	}
	blen = k64len + c64len + 512;
	if ((body = malloc(blen)) == NULL) {
		est_refuse(r, 500, "out of memory");
		goto out;
	}
	n = snprintf(body, blen,
	             "--" EST_BOUNDARY "\r\n"
	             "Content-Type: application/pkcs8\r\n"
	             "Content-Transfer-Encoding: base64\r\n"
	             "\r\n"
	             "%s\r\n"
	             "--" EST_BOUNDARY "\r\n"
	             "Content-Type: " CT_PKCS7 "\r\n"
	             "Content-Transfer-Encoding: base64\r\n"
	             "\r\n"
	             "%s\r\n"
	             "--" EST_BOUNDARY "--\r\n",
	             k64, c64);
	if (n < 0 || (size_t)n >= blen) {
		est_refuse(r, 500, "cannot encode the answer");
		goto out;
	}
	http_reply(r->http, 200, "multipart/mixed; boundary=" EST_BOUNDARY,
	           body, (size_t)n);
out:
	if (body != NULL)
		secure_zero(body, blen);
	if (k64 != NULL)
		secure_zero(k64, k64len);
	if (p8der != NULL)
		secure_zero(p8der, p8len);
	free(body);
	free(k64);
	free(c64);
	free(p8der);
	free(p7der);
	PKCS8_PRIV_KEY_INFO_free(p8);
	sk_X509_free(one);
	X509_free(cert);
	EVP_PKEY_free(key);
	X509_REQ_free(csr);
}

void
est_handle(struct http_request *hreq, void *arg)
{
	struct est_req r;

	memset(&r, 0, sizeof(r));
	r.est = arg;
	r.http = hreq;
	r.t0 = time_mono_ms();
	r.id.peer = http_request_peer(hreq);
	r.id.label = r.label;
	log_debug(LOG_EST, "est: request %s %s from %s",
	          http_request_method(hreq), http_request_path(hreq), r.id.peer);
	if (est_route(&r) == -1)
		goto out;
	r.ca = est_ca_get(r.est);
	if (r.op != EST_OP_CSRATTRS && (r.ca == NULL || !r.ca->ok)) {
		/*
		 * The product: cacerts fails when the chain is incomplete.
		 * Nothing is issued under a chain we could not publish.
		 */
		est_refuse(&r, 503, "%s",
		           r.ca != NULL ? r.ca->reason
		                        : "CA certificates not loaded yet");
		goto out;
	}
	switch (r.op) {
	case EST_OP_CACERTS:
		/* RFC 7030 4.1.1: no client authentication required. */
		est_cacerts(&r);
		break;
	case EST_OP_CSRATTRS:
		/* RFC 7030 4.5.1: SHOULD NOT require client authentication. */
		est_csrattrs_op(&r);
		break;
	case EST_OP_SIMPLEENROLL:
	case EST_OP_SIMPLEREENROLL:
		if (est_authenticate(&r) == 0)
			est_enroll(&r);
		break;
	case EST_OP_SERVERKEYGEN:
		if (est_authenticate(&r) == 0)
			est_serverkeygen(&r);
		break;
	case EST_OP_COUNT:
		break;
	}
	if (http_request_status(hreq) == 200)
		log_debug(LOG_EST,
		          "est: %s %s from %s: 200, label \"%s\", auth %s%s%s, "
		          "subject %s, serial %s, %lld ms",
		          http_request_method(hreq), http_request_path(hreq),
		          r.id.peer, r.label,
		          r.auth_note != NULL ? r.auth_note : "none",
		          r.user[0] != '\0' ? " " : "", r.user,
		          r.subject[0] != '\0' ? r.subject : "-",
		          r.serial[0] != '\0' ? r.serial : "-",
		          (long long)(time_mono_ms() - r.t0));
out:
	est_ca_release(r.ca);
}
