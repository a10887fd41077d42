/*
 * ocsp: the OCSP responder core (ocsp.h): request parsing, CertID
 * matching, status from the store, signing, and the cache of pre-signed
 * single responses.
 *
 * The cache is a hash table keyed by serial; an entry holds the DER of
 * the CertID it answers (clients hash with SHA-1 or SHA-256, with or
 * without NULL parameters: each exact CertID gets its own response, since
 * the response must repeat it), the store record state it was signed for,
 * and the signed bytes.  A lookup is a copy under the mutex; signing never
 * happens under it, so two workers that miss at once may both sign, and
 * the second insert replaces the first (both answers are correct).
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "keys.h"
#include "log.h"
#include "ocsp.h"
#include "store.h"
#include "util.h"

/* Hash buckets of the cache (a power of two). */
#define OCSP_CACHE_BUCKETS 16384
/* New entries stop here while refreshing: room is left for requests. */
#define OCSP_PRESIGN_MAX (OCSP_CACHE_MAX / 4 * 3)
/* CertID hash algorithms we answer for. */
#define OCSP_NHASH 4

static const int ocsp_hash_nids[OCSP_NHASH] = {NID_sha1, NID_sha256,
                                               NID_sha384, NID_sha512};

/* Our issuer's name and key hashed with one algorithm (RFC 6960 4.1.1). */
struct ocsp_issuer_hash {
	int nid;
	unsigned char name[EVP_MAX_MD_SIZE]; /* hash of the subject DER */
	unsigned char key[EVP_MAX_MD_SIZE];  /* hash of the key BIT STRING */
	unsigned len;
};

/* One pre-signed response for one CertID. */
struct ocsp_entry {
	struct ocsp_entry *next; /* bucket chain */
	uint8_t serial[STORE_SERIAL_MAX];
	size_t serial_len;
	uint8_t certid[OCSP_CERTID_DER_MAX]; /* DER of the CertID answered */
	size_t certid_len;
	/* The store record as it was when signed. */
	enum store_cert_status status;
	int64_t updated_at;
	int64_t revoked_at;
	int reason;
	uint8_t *der; /* the OCSPResponse */
	size_t len;
	int64_t this_update;
	int64_t next_update;
	int64_t produced_at;
	char etag[OCSP_ETAG_MAX];
};

struct ocsp_responder {
	X509 *signer;       /* responder certificate; NULL: tryLater */
	EVP_PKEY *key;      /* its key */
	const EVP_MD *md;   /* signature digest for key */
	/*
	 * A signing context initialised once (EVP_DigestSignInit) and copied
	 * for each signature: OpenSSL 3 fetches the algorithms again on
	 * every init, which cost more than the ECDSA signature itself
	 * (docs/PERFORMANCE.md, "OCSP").  NULL: OCSP_basic_sign().
	 */
	EVP_MD_CTX *sign_tmpl;
	pthread_mutex_t sign_lock; /* guards the copying of sign_tmpl */
	int64_t signer_nb;  /* signer notBefore */
	int64_t signer_na;  /* signer notAfter: no nextUpdate beyond it */
	X509 *issuer;       /* the Endpoint Sub CA we answer for */
	uint8_t issuer_kid[STORE_KEY_ID_LEN]; /* its store key id */
	struct ocsp_issuer_hash hash[OCSP_NHASH];
	struct store *st;   /* status source, not ours */
	bool nonce;         /* echo nonces */
	int64_t validity;   /* thisUpdate to nextUpdate */
	int64_t margin;     /* re-sign this long before nextUpdate */
	pthread_mutex_t lock; /* guards what follows */
	struct ocsp_entry *bucket[OCSP_CACHE_BUCKETS];
	size_t nentries;  /* entries in the buckets */
	size_t hand;      /* next bucket to evict from when full */
	/*
	 * The responder of the previous root CA chain generation (its own
	 * issuer, signer and cache; ours to free), asked for a request none
	 * of whose CertIDs is ours: certificates of the old chain are still
	 * answered, by the old responder certificate, until they expire.
	 * Set once before the responder serves; read-only afterwards.
	 */
	struct ocsp_responder *older;
};

/* A CertID of a request, classified. */
enum ocsp_match {
	OCSP_MATCH_OURS,   /* our issuer, a serial we can look up */
	OCSP_MATCH_BADSN,  /* our issuer, a serial no certificate of ours has */
	OCSP_MATCH_OTHER,  /* another issuer */
	OCSP_MATCH_HASH,   /* a hash algorithm we do not support */
};

/* One single response to make. */
struct ocsp_item {
	OCSP_CERTID *cid;       /* borrowed from the request */
	enum ocsp_match match;  /* how it matched */
	uint8_t serial[STORE_SERIAL_MAX];
	size_t serial_len;
	struct store_cert *rec; /* OURS and in the store; else NULL */
};

const char *
ocsp_status_name(int status)
{
	switch (status) {
	case OCSP_RESPONSE_STATUS_SUCCESSFUL:
		return "successful";
	case OCSP_RESPONSE_STATUS_MALFORMEDREQUEST:
		return "malformedRequest";
	case OCSP_RESPONSE_STATUS_INTERNALERROR:
		return "internalError";
	case OCSP_RESPONSE_STATUS_TRYLATER:
		return "tryLater";
	case OCSP_RESPONSE_STATUS_SIGREQUIRED:
		return "sigRequired";
	case OCSP_RESPONSE_STATUS_UNAUTHORIZED:
		return "unauthorized";
	}
	return "?";
}

static int64_t
asn1_time_secs(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/* "\"<hex SHA-1>\"": a strong validator (RFC 9110 8.8.3), per byte. */
static void
ocsp_etag(const uint8_t *der, size_t len, char out[OCSP_ETAG_MAX])
{
	unsigned char md[SHA_DIGEST_LENGTH];

	SHA1(der, len, md);
	out[0] = '"';
	hex_encode(md, sizeof(md), out + 1);
	out[1 + 2 * SHA_DIGEST_LENGTH] = '"';
	out[2 + 2 * SHA_DIGEST_LENGTH] = '\0';
}

/* DER of resp into ans (malloc'd); 0 or -1. */
static int
ocsp_encode(OCSP_RESPONSE *resp, struct ocsp_answer *ans)
{
	unsigned char *p;
	int n;

	if ((n = i2d_OCSP_RESPONSE(resp, NULL)) <= 0 ||
	    (ans->der = malloc((size_t)n)) == NULL) {
		ERR_clear_error();
		return -1;
	}
	p = ans->der;
	if (i2d_OCSP_RESPONSE(resp, &p) != n) {
		free(ans->der);
		ans->der = NULL;
		ERR_clear_error();
		return -1;
	}
	ans->len = (size_t)n;
	ocsp_etag(ans->der, ans->len, ans->etag);
	return 0;
}

void
ocsp_answer_free(struct ocsp_answer *ans)
{
	if (ans == NULL)
		return;
	free(ans->der);
	memset(ans, 0, sizeof(*ans));
}

int
ocsp_error_answer(int status, const char *why, struct ocsp_answer *ans)
{
	OCSP_RESPONSE *resp;
	int rc;

	memset(ans, 0, sizeof(*ans));
	/* RFC 6960 4.2.1: error statuses carry no responseBytes. */
	if ((resp = OCSP_response_create(status, NULL)) == NULL) {
		ERR_clear_error();
		return -1;
	}
	rc = ocsp_encode(resp, ans);
	OCSP_RESPONSE_free(resp);
	if (rc == -1)
		return -1;
	ans->status = status;
	snprintf(ans->summary, sizeof(ans->summary), "%s: %s",
	         ocsp_status_name(status), why);
	return 0;
}

/* --- the responder --- */

static int
issuer_hashes(struct ocsp_responder *r, struct error *err)
{
	const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(r->issuer);
	const X509_NAME *name = X509_get_subject_name(r->issuer);
	const EVP_MD *md;
	unsigned int klen;
	size_t i;

	if (bits == NULL) {
		error_set(err, "the issuer certificate has no public key");
		return -1;
	}
	for (i = 0; i < OCSP_NHASH; i++) {
		r->hash[i].nid = ocsp_hash_nids[i];
		md = EVP_get_digestbynid(ocsp_hash_nids[i]);
		if (md == NULL ||
		    X509_NAME_digest(name, md, r->hash[i].name,
		                     &r->hash[i].len) != 1 ||
		    EVP_Digest(bits->data, (size_t)bits->length, r->hash[i].key,
		               &klen, md, NULL) != 1 ||
		    klen != r->hash[i].len) {
			log_crypto(LOG_OCSP, err, "X509_NAME_digest",
			           OBJ_nid2sn(ocsp_hash_nids[i]));
			return -1;
		}
	}
	return 0;
}

struct ocsp_responder *
ocsp_responder_new(X509 *signer, EVP_PKEY *key, X509 *issuer, struct store *st,
                   const struct ocsp_config *cfg, struct error *err)
{
	struct ocsp_responder *r;

	if (issuer == NULL || st == NULL || (signer == NULL) != (key == NULL)) {
		error_set(err, "ocsp: issuer, store, and signer with key or "
		               "neither, are needed");
		return NULL;
	}
	if (signer != NULL && X509_check_private_key(signer, key) != 1) {
		ERR_clear_error();
		error_set(err, "the responder key does not match the responder "
		               "certificate");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		free(r);
		error_set(err, "pthread_mutex_init failed");
		return NULL;
	}
	if (pthread_mutex_init(&r->sign_lock, NULL) != 0) {
		pthread_mutex_destroy(&r->lock);
		free(r);
		error_set(err, "pthread_mutex_init failed");
		return NULL;
	}
	r->st = st;
	r->nonce = cfg == NULL || cfg->nonce;
	r->validity = cfg != NULL && cfg->validity > 0 ? cfg->validity
	                                               : OCSP_VALIDITY_DEFAULT;
	if (r->validity < OCSP_VALIDITY_MIN)
		r->validity = OCSP_VALIDITY_MIN;
	r->margin = cfg != NULL ? cfg->margin : 0;
	if (r->margin <= 0 || r->margin >= r->validity)
		r->margin = r->validity / 4;
	X509_up_ref(issuer);
	r->issuer = issuer;
	if (store_issuer_key_id(issuer, r->issuer_kid, err) == -1 ||
	    issuer_hashes(r, err) == -1)
		goto fail;
	if (signer != NULL) {
		X509_up_ref(signer);
		EVP_PKEY_up_ref(key);
		r->signer = signer;
		r->key = key;
		r->md = key_signature_md(key);
		r->signer_nb = asn1_time_secs(X509_get0_notBefore(signer));
		r->signer_na = asn1_time_secs(X509_get0_notAfter(signer));
		if ((r->sign_tmpl = EVP_MD_CTX_new()) == NULL ||
		    EVP_DigestSignInit(r->sign_tmpl, NULL, r->md, NULL, key) !=
		        1) {
			/* Still correct, only slower: sign the usual way. */
			ERR_clear_error();
			EVP_MD_CTX_free(r->sign_tmpl);
			r->sign_tmpl = NULL;
		}
	}
	return r;
fail:
	ocsp_responder_free(r);
	return NULL;
}

static void
entry_free(struct ocsp_entry *e)
{
	if (e == NULL)
		return;
	free(e->der);
	free(e);
}

void
ocsp_responder_free(struct ocsp_responder *r)
{
	struct ocsp_entry *e, *next;
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < OCSP_CACHE_BUCKETS; i++)
		for (e = r->bucket[i]; e != NULL; e = next) {
			next = e->next;
			entry_free(e);
		}
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->sign_lock);
	EVP_MD_CTX_free(r->sign_tmpl);
	X509_free(r->signer);
	EVP_PKEY_free(r->key);
	X509_free(r->issuer);
	ocsp_responder_free(r->older);
	free(r);
}

void
ocsp_responder_set_older(struct ocsp_responder *r,
                         struct ocsp_responder *older)
{
	struct ocsp_responder **tail = &r->older;

	while (*tail != NULL)
		tail = &(*tail)->older;
	*tail = older;
}

bool
ocsp_responder_can_sign(const struct ocsp_responder *r)
{
	return r->signer != NULL;
}

size_t
ocsp_responder_cached(struct ocsp_responder *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->nentries;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* --- matching --- */

static enum ocsp_match
ocsp_match(struct ocsp_responder *r, OCSP_CERTID *cid, struct ocsp_item *it)
{
	ASN1_OCTET_STRING *nh = NULL, *kh = NULL;
	ASN1_OBJECT *alg = NULL;
	ASN1_INTEGER *sn = NULL;
	const struct ocsp_issuer_hash *h = NULL;
	const unsigned char *p;
	int nid, len;
	size_t i;

	if (OCSP_id_get0_info(&nh, &alg, &kh, &sn, cid) != 1 || nh == NULL ||
	    alg == NULL || kh == NULL || sn == NULL)
		return OCSP_MATCH_OTHER;
	nid = OBJ_obj2nid(alg);
	for (i = 0; i < OCSP_NHASH; i++)
		if (r->hash[i].nid == nid)
			h = &r->hash[i];
	if (h == NULL)
		return OCSP_MATCH_HASH;
	/*
	 * RFC 6960 4.1.1: both hashes with the CertID's algorithm; the name
	 * alone could be a look-alike CA, the key alone a re-keyed one.
	 */
	if ((unsigned)ASN1_STRING_length(nh) != h->len ||
	    (unsigned)ASN1_STRING_length(kh) != h->len ||
	    memcmp(ASN1_STRING_get0_data(nh), h->name, h->len) != 0 ||
	    memcmp(ASN1_STRING_get0_data(kh), h->key, h->len) != 0)
		return OCSP_MATCH_OTHER;
	/* ASN1_INTEGER holds the magnitude; the sign is in its type. */
	if (ASN1_STRING_type(sn) == V_ASN1_NEG_INTEGER)
		return OCSP_MATCH_BADSN;
	p = ASN1_STRING_get0_data(sn);
	len = ASN1_STRING_length(sn);
	while (len > 0 && *p == 0) {
		p++;
		len--;
	}
	if (len == 0 || len > STORE_SERIAL_MAX)
		return OCSP_MATCH_BADSN;
	memcpy(it->serial, p, (size_t)len);
	it->serial_len = (size_t)len;
	return OCSP_MATCH_OURS;
}

/*
 * The nonce (RFC 8954 section 2.1): *len its octets, 0 when absent.
 * Returns -1 with why set for a request to refuse as malformed.
 */
static int
ocsp_nonce(OCSP_REQUEST *req, size_t *len, char *why, size_t wlen)
{
	const ASN1_OCTET_STRING *v;
	ASN1_OCTET_STRING *inner;
	X509_EXTENSION *ext;
	const unsigned char *p;
	int i;

	*len = 0;
	if ((i = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1)) <
	    0)
		return 0;
	if (OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, i) >= 0) {
		snprintf(why, wlen, "more than one nonce extension");
		return -1;
	}
	if ((ext = OCSP_REQUEST_get_ext(req, i)) == NULL ||
	    (v = X509_EXTENSION_get_data(ext)) == NULL) {
		snprintf(why, wlen, "unreadable nonce extension");
		return -1;
	}
	/*
	 * RFC 8954: Nonce ::= OCTET STRING (SIZE(1..32)) inside extnValue.
	 * Some old clients put the bytes directly in extnValue: then those
	 * bytes are the nonce.
	 */
	p = v->data;
	inner = d2i_ASN1_OCTET_STRING(NULL, &p, v->length);
	if (inner != NULL && p == v->data + v->length)
		*len = (size_t)inner->length;
	else
		*len = (size_t)v->length;
	ASN1_OCTET_STRING_free(inner);
	ERR_clear_error();
	if (*len == 0 || *len > OCSP_NONCE_MAX) {
		snprintf(why, wlen,
		         "nonce of %zu octets (RFC 8954: 1 to %d octets)", *len,
		         OCSP_NONCE_MAX);
		return -1;
	}
	return 0;
}

/* --- signing --- */

static const char *
rec_status_text(const struct store_cert *rec, char *buf, size_t len)
{
	if (rec == NULL)
		return "unknown";
	switch (rec->status) {
	case STORE_STATUS_GOOD:
		return "good";
	case STORE_STATUS_HOLD:
		return "revoked (certificateHold)";
	case STORE_STATUS_REVOKED:
		snprintf(buf, len, "revoked (%s)",
		         store_reason_name(rec->reason));
		return buf;
	default:
		return "unknown";
	}
}

/* The single response for it into bs; 0 or -1. */
static int
ocsp_add_status(OCSP_BASICRESP *bs, const struct ocsp_item *it,
                ASN1_TIME *thisupd, ASN1_TIME *nextupd)
{
	const struct store_cert *rec = it->rec;
	int status = V_OCSP_CERTSTATUS_UNKNOWN;
	int reason = OCSP_REVOKED_STATUS_NOSTATUS;
	ASN1_TIME *rev = NULL;
	OCSP_SINGLERESP *one;

	if (rec != NULL && rec->status == STORE_STATUS_GOOD)
		status = V_OCSP_CERTSTATUS_GOOD;
	else if (rec != NULL && (rec->status == STORE_STATUS_REVOKED ||
	                         rec->status == STORE_STATUS_HOLD)) {
		status = V_OCSP_CERTSTATUS_REVOKED;
		if (rec->status == STORE_STATUS_HOLD)
			reason = OCSP_REVOKED_STATUS_CERTIFICATEHOLD;
		else if (rec->reason != STORE_REASON_UNSPECIFIED)
			/*
			 * RFC 5280 5.3.1: unspecified is shown by leaving
			 * the reason out, as in a CRL entry.
			 */
			reason = rec->reason;
		if ((rev = ASN1_TIME_set(NULL, (time_t)rec->revoked_at)) ==
		    NULL)
			return -1;
	}
	one = OCSP_basic_add1_status(bs, it->cid, status, reason, rev, thisupd,
	                             nextupd);
	ASN1_TIME_free(rev);
	return one != NULL ? 0 : -1;
}

/* A copy of the initialised signing context, or NULL. */
static EVP_MD_CTX *
sign_ctx(struct ocsp_responder *r)
{
	EVP_MD_CTX *c;

	if (r->sign_tmpl == NULL || (c = EVP_MD_CTX_new()) == NULL)
		return NULL;
	pthread_mutex_lock(&r->sign_lock);
	if (EVP_MD_CTX_copy_ex(c, r->sign_tmpl) != 1) {
		pthread_mutex_unlock(&r->sign_lock);
		EVP_MD_CTX_free(c);
		ERR_clear_error();
		return NULL;
	}
	pthread_mutex_unlock(&r->sign_lock);
	/* Used once: the final step need not keep it reusable (a copy). */
	EVP_MD_CTX_set_flags(c, EVP_MD_CTX_FLAG_FINALISE);
	return c;
}

/*
 * Sign a successful response with the n items (and the request's nonce
 * when nonce_req is given) into ans.  0, or -1 with the reason logged.
 */
static int
ocsp_sign(struct ocsp_responder *r, struct ocsp_item *items, size_t n,
          OCSP_REQUEST *nonce_req, int64_t now, struct ocsp_answer *ans)
{
	OCSP_BASICRESP *bs = NULL;
	OCSP_RESPONSE *resp = NULL;
	ASN1_TIME *thisupd = NULL, *nextupd = NULL;
	EVP_MD_CTX *sctx;
	int64_t next = now + r->validity;
	size_t i;
	int ret = -1, rc;

	/* Never promise past the responder certificate's own life. */
	if (next > r->signer_na)
		next = r->signer_na;
	if ((bs = OCSP_BASICRESP_new()) == NULL ||
	    (thisupd = ASN1_TIME_set(NULL, (time_t)now)) == NULL ||
	    (nextupd = ASN1_TIME_set(NULL, (time_t)next)) == NULL)
		goto out;
	for (i = 0; i < n; i++)
		if (ocsp_add_status(bs, &items[i], thisupd, nextupd) == -1)
			goto out;
	/* RFC 8954 / RFC 6960 4.4.1: the nonce goes back as it came. */
	if (nonce_req != NULL && OCSP_copy_nonce(bs, nonce_req) != 1)
		goto out;
	/*
	 * RFC 6960 4.2.2.3 byKey responderID; the responder certificate is
	 * included (no OCSP_NOCERTS) so that clients need not have it.
	 */
	if ((sctx = sign_ctx(r)) != NULL) {
		rc = OCSP_basic_sign_ctx(bs, r->signer, sctx, NULL,
		                         OCSP_RESPID_KEY);
		EVP_MD_CTX_free(sctx);
	} else
		rc = OCSP_basic_sign(bs, r->signer, r->key, r->md, NULL,
		                     OCSP_RESPID_KEY);
	if (rc != 1)
		goto out;
	if ((resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL,
	                                 bs)) == NULL ||
	    ocsp_encode(resp, ans) == -1)
		goto out;
	ans->status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
	ans->ncerts = n;
	ans->this_update = now;
	ans->next_update = next;
	ans->produced_at = asn1_time_secs(OCSP_resp_get0_produced_at(bs));
	ret = 0;
out:
	if (ret == -1)
		log_crypto(LOG_OCSP, NULL, "OCSP_basic_sign", "OCSP response");
	ASN1_TIME_free(thisupd);
	ASN1_TIME_free(nextupd);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	return ret;
}

/* --- the cache --- */

static size_t
serial_hash(const uint8_t *sn, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= sn[i];
		h *= 16777619u;
	}
	return h & (OCSP_CACHE_BUCKETS - 1);
}

static bool
entry_current(const struct ocsp_responder *r, const struct ocsp_entry *e,
              const struct store_cert *rec, int64_t now)
{
	return e->status == rec->status && e->updated_at == rec->updated_at &&
	       e->revoked_at == rec->revoked_at && e->reason == rec->reason &&
	       now >= e->this_update && now < e->next_update - r->margin;
}

/* Copy a current entry for this CertID into ans: 1, or 0 on a miss. */
static int
cache_get(struct ocsp_responder *r, const uint8_t *sn, size_t snlen,
          const uint8_t *cid, size_t cidlen, const struct store_cert *rec,
          int64_t now, struct ocsp_answer *ans)
{
	struct ocsp_entry *e;
	int hit = 0;

	pthread_mutex_lock(&r->lock);
	for (e = r->bucket[serial_hash(sn, snlen)]; e != NULL; e = e->next) {
		if (e->certid_len != cidlen ||
		    memcmp(e->certid, cid, cidlen) != 0)
			continue;
		if (!entry_current(r, e, rec, now) ||
		    (ans->der = malloc(e->len)) == NULL)
			break;
		memcpy(ans->der, e->der, e->len);
		ans->len = e->len;
		ans->this_update = e->this_update;
		ans->next_update = e->next_update;
		ans->produced_at = e->produced_at;
		memcpy(ans->etag, e->etag, sizeof(ans->etag));
		hit = 1;
		break;
	}
	pthread_mutex_unlock(&r->lock);
	return hit;
}

/* Drop one entry at the clock hand (the cache is full). */
static void
cache_evict_one(struct ocsp_responder *r)
{
	struct ocsp_entry *e;
	size_t i;

	for (i = 0; i < OCSP_CACHE_BUCKETS; i++) {
		r->hand = (r->hand + 1) & (OCSP_CACHE_BUCKETS - 1);
		if ((e = r->bucket[r->hand]) != NULL) {
			r->bucket[r->hand] = e->next;
			entry_free(e);
			r->nentries--;
			return;
		}
	}
}

/*
 * Keep a copy of a signed single response for cid (DER) and the record
 * it was signed for, replacing an older one.  Out of memory: not cached.
 */
static void
cache_put(struct ocsp_responder *r, const uint8_t *sn, size_t snlen,
          const uint8_t *cid, size_t cidlen, const struct store_cert *rec,
          const struct ocsp_answer *ans)
{
	struct ocsp_entry *e, **pp;
	size_t b = serial_hash(sn, snlen);

	if (cidlen > OCSP_CERTID_DER_MAX || snlen > STORE_SERIAL_MAX ||
	    (e = calloc(1, sizeof(*e))) == NULL)
		return;
	if ((e->der = malloc(ans->len)) == NULL) {
		free(e);
		return;
	}
	memcpy(e->der, ans->der, ans->len);
	e->len = ans->len;
	memcpy(e->serial, sn, snlen);
	e->serial_len = snlen;
	memcpy(e->certid, cid, cidlen);
	e->certid_len = cidlen;
	e->status = rec->status;
	e->updated_at = rec->updated_at;
	e->revoked_at = rec->revoked_at;
	e->reason = rec->reason;
	e->this_update = ans->this_update;
	e->next_update = ans->next_update;
	e->produced_at = ans->produced_at;
	memcpy(e->etag, ans->etag, sizeof(e->etag));
	pthread_mutex_lock(&r->lock);
	for (pp = &r->bucket[b]; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->certid_len == cidlen &&
		    memcmp((*pp)->certid, cid, cidlen) == 0) {
			struct ocsp_entry *old = *pp;

			e->next = old->next;
			*pp = e;
			entry_free(old);
			pthread_mutex_unlock(&r->lock);
			return;
		}
	if (r->nentries >= OCSP_CACHE_MAX)
		cache_evict_one(r);
	e->next = r->bucket[b];
	r->bucket[b] = e;
	r->nentries++;
	pthread_mutex_unlock(&r->lock);
}

/* DER of a CertID into buf; its length, or 0 when it does not fit. */
static size_t
certid_der(OCSP_CERTID *cid, uint8_t buf[OCSP_CERTID_DER_MAX])
{
	unsigned char *p = buf;
	int n = i2d_OCSP_CERTID(cid, NULL);

	if (n <= 0 || n > OCSP_CERTID_DER_MAX) {
		ERR_clear_error();
		return 0;
	}
	if (i2d_OCSP_CERTID(cid, &p) != n) {
		ERR_clear_error();
		return 0;
	}
	return (size_t)n;
}

/* --- answering --- */

static void
serial_text(const struct ocsp_item *it, char *buf, size_t len)
{
	char hex[2 * STORE_SERIAL_MAX + 1];

	if (it->match == OCSP_MATCH_OURS) {
		hex_encode(it->serial, it->serial_len, hex);
		snprintf(buf, len, "serial %s", hex);
	} else
		snprintf(buf, len, "%s",
		         it->match == OCSP_MATCH_BADSN ? "a serial of no "
		                                         "certificate of ours"
		         : it->match == OCSP_MATCH_HASH
		             ? "a CertID hashed with an unsupported algorithm"
		             : "another issuer's certificate");
}

static void
items_free(struct ocsp_item *items, size_t n)
{
	size_t i;

	if (items == NULL)
		return;
	for (i = 0; i < n; i++)
		store_cert_free(items[i].rec);
	free(items);
}

/* Look the status up; 0, or -1 on a store error (logged). */
static int
item_lookup(struct ocsp_responder *r, struct ocsp_item *it)
{
	struct error e = {{0}};
	int rc;

	if (it->match != OCSP_MATCH_OURS)
		return 0;
	rc = store_get_cert(r->st, r->issuer_kid, it->serial, it->serial_len,
	                    &it->rec, &e);
	if (rc == STORE_NOT_FOUND) {
		it->rec = NULL;
		return 0;
	}
	if (rc != STORE_OK) {
		log_error(LOG_OCSP, "store: %s", e.msg);
		it->rec = NULL;
		return -1;
	}
	return 0;
}

/* One certificate, no nonce: the cache, or sign and keep it. */
static int
respond_single(struct ocsp_responder *r, struct ocsp_item *it, int64_t now,
               struct ocsp_answer *ans)
{
	uint8_t cid[OCSP_CERTID_DER_MAX];
	size_t cidlen = 0;
	char buf[64], who[64];

	serial_text(it, who, sizeof(who));
	if (it->rec != NULL &&
	    (cidlen = certid_der(it->cid, cid)) > 0 &&
	    cache_get(r, it->serial, it->serial_len, cid, cidlen, it->rec, now,
	              ans)) {
		ans->status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
		ans->ncerts = 1;
		ans->cache_hit = true;
	} else {
		if (ocsp_sign(r, it, 1, NULL, now, ans) == -1)
			return -1;
		/* Only certificates we hold: unknown serials are unbounded. */
		if (it->rec != NULL && cidlen > 0)
			cache_put(r, it->serial, it->serial_len, cid, cidlen,
			          it->rec, ans);
	}
	ans->cacheable = true;
	snprintf(ans->summary, sizeof(ans->summary), "%s %s%s", who,
	         rec_status_text(it->rec, buf, sizeof(buf)),
	         ans->cache_hit ? " (cached)" : "");
	return 0;
}

int
ocsp_respond(struct ocsp_responder *r, const uint8_t *der, size_t len,
             struct ocsp_answer *ans)
{
	OCSP_REQUEST *req = NULL;
	struct ocsp_item *items = NULL;
	const unsigned char *p = der;
	char why[128], buf[64];
	size_t n = 0, i, nonce_len = 0, ours = 0, counts[3] = {0, 0, 0};
	int64_t now = (int64_t)time(NULL);
	int ret;

	memset(ans, 0, sizeof(*ans));
	if (len == 0 || len > LONG_MAX ||
	    (req = d2i_OCSP_REQUEST(NULL, &p, (long)len)) == NULL ||
	    p != der + len) {
		ERR_clear_error();
		ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
		                        len == 0 ? "empty request"
		                        : req == NULL
		                            ? "not a DER OCSPRequest"
		                            : "bytes after the OCSPRequest",
		                        ans);
		goto out;
	}
	n = (size_t)OCSP_request_onereq_count(req);
	if (n == 0 || n > OCSP_REQUEST_CERTS_MAX) {
		snprintf(why, sizeof(why), "%zu certificates (1 to %d)", n,
		         OCSP_REQUEST_CERTS_MAX);
		ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
		                        why, ans);
		goto out;
	}
	/* Nonce off (RFC 5019 profile): a nonce is not ours to judge. */
	if (r->nonce &&
	    ocsp_nonce(req, &nonce_len, why, sizeof(why)) == -1) {
		ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
		                        why, ans);
		goto out;
	}
	if ((items = calloc(n, sizeof(*items))) == NULL) {
		ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_INTERNALERROR,
		                        "out of memory", ans);
		goto out;
	}
	for (i = 0; i < n; i++) {
		items[i].cid = OCSP_onereq_get0_id(
		    OCSP_request_onereq_get0(req, (int)i));
		items[i].match = ocsp_match(r, items[i].cid, &items[i]);
		if (items[i].match == OCSP_MATCH_OURS ||
		    items[i].match == OCSP_MATCH_BADSN)
			ours++;
	}
	ERR_clear_error();
	if (ours == 0 && r->older != NULL) {
		/* Perhaps a certificate of an earlier chain generation. */
		OCSP_REQUEST_free(req);
		free(items);
		return ocsp_respond(r->older, der, len, ans);
	}
	if (ours == 0) {
		/* RFC 6960 2.3: not a responder for any of them. */
		serial_text(&items[0], buf, sizeof(buf));
		snprintf(why, sizeof(why), "%s%s", buf,
		         n > 1 ? " and others, none of ours" : "");
		ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_UNAUTHORIZED, why,
		                        ans);
		goto out;
	}
	if (r->signer == NULL || now < r->signer_nb || now >= r->signer_na) {
		ret = ocsp_error_answer(
		    OCSP_RESPONSE_STATUS_TRYLATER,
		    r->signer == NULL ? "the responder key is unavailable"
		    : now < r->signer_nb
		        ? "the responder certificate is not valid yet"
		        : "the responder certificate has expired",
		    ans);
		goto out;
	}
	for (i = 0; i < n; i++)
		if (item_lookup(r, &items[i]) == -1) {
			ret = ocsp_error_answer(
			    OCSP_RESPONSE_STATUS_INTERNALERROR,
			    "the certificate store cannot be read", ans);
			goto out;
		}
	if (n == 1 && nonce_len == 0) {
		if (respond_single(r, &items[0], now, ans) == 0) {
			ret = 0;
			goto out;
		}
	} else if (ocsp_sign(r, items, n, nonce_len > 0 ? req : NULL, now,
	                     ans) == 0) {
		for (i = 0; i < n; i++)
			counts[items[i].rec == NULL                   ? 2
			       : items[i].rec->status == STORE_STATUS_GOOD ? 0
			                                                 : 1]++;
		serial_text(&items[0], buf, sizeof(buf));
		if (n == 1)
			snprintf(ans->summary, sizeof(ans->summary),
			         "%s %s, nonce of %zu octets", buf,
			         rec_status_text(items[0].rec, why, sizeof(why)),
			         nonce_len);
		else
			snprintf(ans->summary, sizeof(ans->summary),
			         "%zu certificates: %zu good, %zu revoked, %zu "
			         "unknown%s",
			         n, counts[0], counts[1], counts[2],
			         nonce_len > 0 ? ", nonce" : "");
		ret = 0;
		goto out;
	}
	ret = ocsp_error_answer(OCSP_RESPONSE_STATUS_INTERNALERROR,
	                        "signing failed", ans);
out:
	items_free(items, n);
	OCSP_REQUEST_free(req);
	return ret;
}

/* --- refresh --- */

/* Re-sign (or pre-sign) the response for one CertID DER of rec. */
static int
refresh_sign(struct ocsp_responder *r, const struct store_cert *rec,
             const uint8_t *cid, size_t cidlen, int64_t now)
{
	struct ocsp_answer ans;
	struct ocsp_item it;
	const unsigned char *p = cid;
	OCSP_CERTID *id;
	int ret = -1;

	memset(&it, 0, sizeof(it));
	memset(&ans, 0, sizeof(ans));
	if ((id = d2i_OCSP_CERTID(NULL, &p, (long)cidlen)) == NULL) {
		ERR_clear_error();
		return -1;
	}
	it.cid = id;
	it.match = OCSP_MATCH_OURS;
	it.rec = (struct store_cert *)rec;
	if (ocsp_sign(r, &it, 1, NULL, now, &ans) == 0) {
		cache_put(r, rec->serial, rec->serial_len, cid, cidlen, rec,
		          &ans);
		ret = 0;
	}
	ocsp_answer_free(&ans);
	OCSP_CERTID_free(id);
	return ret;
}

/* The SHA-1 CertID an RFC 5019 client sends for rec, as DER. */
static size_t
canonical_certid(struct ocsp_responder *r, const struct store_cert *rec,
                 uint8_t buf[OCSP_CERTID_DER_MAX])
{
	ASN1_INTEGER *sn = NULL;
	OCSP_CERTID *id = NULL;
	BIGNUM *bn = NULL;
	size_t n = 0;

	if ((bn = BN_bin2bn(rec->serial, (int)rec->serial_len, NULL)) ==
	        NULL ||
	    (sn = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    (id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(r->issuer),
	                           X509_get0_pubkey_bitstr(r->issuer), sn)) ==
	        NULL)
		ERR_clear_error();
	else
		n = certid_der(id, buf);
	OCSP_CERTID_free(id);
	ASN1_INTEGER_free(sn);
	BN_free(bn);
	return n;
}

/* Cache entries of one bucket copied by the refresh, at most. */
#define OCSP_SNAP_MAX 64

/*
 * Phase one: re-sign what the cache holds and is no longer current.
 * Walks the cache (at most OCSP_CACHE_MAX entries), not the store, and
 * reads the record of each entry by key: its cost does not grow with the
 * number of certificates in the store.  Each bucket is copied under the
 * lock; the store is read and the signing done without it.
 */
static int
refresh_cached(struct ocsp_responder *r, int64_t now,
               struct ocsp_refresh_report *rep, struct error *err)
{
	struct ocsp_entry *snap, *e;
	struct store_cert *rec;
	size_t b, i, n;
	int rc;

	if ((snap = malloc(OCSP_SNAP_MAX * sizeof(*snap))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	for (b = 0; b < OCSP_CACHE_BUCKETS; b++) {
		n = 0;
		pthread_mutex_lock(&r->lock);
		for (e = r->bucket[b]; e != NULL && n < OCSP_SNAP_MAX;
		     e = e->next) {
			snap[n] = *e;
			snap[n].der = NULL;
			snap[n++].next = NULL;
		}
		pthread_mutex_unlock(&r->lock);
		for (i = 0; i < n; i++) {
			rc = store_get_cert(r->st, r->issuer_kid, snap[i].serial,
			                    snap[i].serial_len, &rec, err);
			if (rc == STORE_NOT_FOUND)
				continue; /* served as unknown, never cached */
			if (rc != STORE_OK) {
				free(snap);
				return -1;
			}
			if (entry_current(r, &snap[i], rec, now))
				rep->fresh++;
			else if (refresh_sign(r, rec, snap[i].certid,
			                      snap[i].certid_len, now) == 0)
				rep->signed_++;
			else
				rep->failed++;
			store_cert_free(rec);
		}
	}
	free(snap);
	return 0;
}

/* Whether the cache holds any response for this serial; *room as well. */
static bool
cache_has_serial(struct ocsp_responder *r, const uint8_t *sn, size_t snlen,
                 bool *room)
{
	struct ocsp_entry *e;
	bool found = false;

	pthread_mutex_lock(&r->lock);
	for (e = r->bucket[serial_hash(sn, snlen)]; e != NULL; e = e->next)
		if (e->serial_len == snlen &&
		    memcmp(e->serial, sn, snlen) == 0) {
			found = true;
			break;
		}
	*room = r->nentries < OCSP_PRESIGN_MAX;
	pthread_mutex_unlock(&r->lock);
	return found;
}

/*
 * Phase two, only while the cache has room for pre-signed responses:
 * walk the store and pre-sign the SHA-1 CertID response of each of our
 * certificates that has no response yet.  The walk stops when the room
 * runs out, and is not made at all when there is none: with a million
 * certificates a walk decodes a million records, every refresh, to
 * pre-sign nothing (measured: ~9 s of CPU per walk; docs/PERFORMANCE.md).
 * Certificates beyond the room are signed at their first request and
 * cached then.
 */
static int
refresh_presign(struct ocsp_responder *r, struct ocsp_refresh_report *rep,
                struct error *err)
{
	uint8_t canon[OCSP_CERTID_DER_MAX];
	struct store_cursor cur;
	struct store_cert_list list;
	const struct store_cert *rec;
	size_t i, n, canon_len;
	int64_t now;
	bool room = true;

	memset(&cur, 0, sizeof(cur));
	while (!cur.done && room) {
		memset(&list, 0, sizeof(list));
		if (store_list_certs(r->st, NULL, STORE_PAGE_MAX, &cur, &list,
		                     err) == -1)
			return -1;
		now = (int64_t)time(NULL);
		if (now < r->signer_nb || now >= r->signer_na) {
			store_cert_list_free(&list);
			break;
		}
		for (i = 0; i < list.count; i++) {
			rec = &list.certs[i];
			if (memcmp(rec->issuer_key_id, r->issuer_kid,
			           STORE_KEY_ID_LEN) != 0)
				continue;
			rep->ours++;
			if (!room ||
			    cache_has_serial(r, rec->serial, rec->serial_len,
			                     &room) ||
			    !room)
				continue;
			if ((canon_len = canonical_certid(r, rec, canon)) == 0 ||
			    refresh_sign(r, rec, canon, canon_len, now) == -1)
				rep->failed++;
			else
				rep->signed_++;
		}
		n = list.count;
		store_cert_list_free(&list);
		if (n == 0)
			break;
	}
	rep->partial = !room;
	return 0;
}

int
ocsp_responder_refresh(struct ocsp_responder *r,
                       struct ocsp_refresh_report *rep, struct error *err)
{
	struct ocsp_refresh_report local, older;
	int64_t now = (int64_t)time(NULL);
	int rc = -1;

	memset(&older, 0, sizeof(older));
	if (rep == NULL)
		rep = &local;
	memset(rep, 0, sizeof(*rep));
	/* The earlier chain generations, added to our report. */
	if (r->older != NULL &&
	    ocsp_responder_refresh(r->older, &older, err) == -1)
		return -1;
	if (r->signer == NULL || now < r->signer_nb || now >= r->signer_na) {
		rc = 0;
		goto out;
	}
	if (refresh_cached(r, now, rep, err) == -1)
		goto out;
	if (ocsp_responder_cached(r) < OCSP_PRESIGN_MAX) {
		if (refresh_presign(r, rep, err) == -1)
			goto out;
	} else
		rep->partial = true;
	rc = 0;
out:
	rep->cached = ocsp_responder_cached(r) + older.cached;
	rep->ours += older.ours;
	rep->partial = rep->partial || older.partial;
	rep->signed_ += older.signed_;
	rep->fresh += older.fresh;
	rep->failed += older.failed;
	return rc;
}

/* --- GET --- */

uint8_t *
ocsp_get_decode(const char *b64, size_t len, size_t *outlen,
                struct error *err)
{
	uint8_t *out;
	char *std;
	size_t i;

	if (len == 0) {
		error_set(err, "no request in the GET path");
		return NULL;
	}
	if ((std = malloc(len)) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	/* base64url (RFC 4648 section 5) as some clients send it. */
	for (i = 0; i < len; i++) {
		std[i] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
		if (std[i] == ' ' || std[i] == '\t' || std[i] == '\r' ||
		    std[i] == '\n' || std[i] == '\0') {
			free(std);
			error_set(err, "base64: invalid character at offset "
			               "%zu",
			          i);
			return NULL;
		}
	}
	out = base64_decode(std, len, outlen, err);
	free(std);
	return out;
}
