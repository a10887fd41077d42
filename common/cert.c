/*
 * cert: issuing X.509 certificates by profile (see cert.h for why the
 * profile, not the caller, owns the extensions), and the small certificate
 * helpers every process needs: load, save, describe.
 */
#include "cert.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "util.h"

/* Longest validity we sign: far beyond any profile default. */
#define CERT_VALIDITY_MAX ((time_t)50 * 365 * 24 * 3600)
/* Longest DNS name (RFC 1035 2.3.4, without the trailing dot). */
#define CERT_DNS_MAX 253
/* Longest DNS label (RFC 1035 2.3.4). */
#define CERT_LABEL_MAX 63
/* Buffer for a DN or a one-line description. */
#define CERT_LINE_MAX 512
/* Buffer for an EC group name. */
#define CERT_GROUP_MAX 64

#define YEAR_SECS ((time_t)365 * 24 * 3600)
#define DAY_SECS  ((time_t)24 * 3600)

#define SAN_BIT(t) (1u << (t))

/* Everything a profile decides. */
struct profile_def {
	const char *name;      /* as cert_profile_name() returns it */
	const char *cn_prefix; /* product CN before " - <host>", or NULL */
	int pathlen;           /* basicConstraints pathLen; -1: CA:FALSE */
	time_t validity;       /* default validity */
	unsigned san_types;    /* SAN_BIT() of the allowed SAN types */
	int eku;               /* extendedKeyUsage purpose, or NID_undef */
	int nocheck;           /* id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1) */
};

static const struct profile_def profiles[CERT_PROFILE_COUNT] = {
    [CERT_PROFILE_ROOT_CA] =
        {
            .name = "root-ca",
            .cn_prefix = "Certificate Services Root CA",
            .pathlen = 2,
            .validity = 10 * YEAR_SECS,
            .eku = NID_undef,
        },
    [CERT_PROFILE_NODE_CA] =
        {
            .name = "node-ca",
            .cn_prefix = "Certificate Services Node CA",
            .pathlen = 1,
            .validity = 10 * YEAR_SECS,
            .eku = NID_undef,
        },
    [CERT_PROFILE_ENDPOINT_SUB_CA] =
        {
            .name = "endpoint-sub-ca",
            .cn_prefix = "Certificate Services Endpoint Sub CA",
            .pathlen = 0,
            .validity = 10 * YEAR_SECS,
            .eku = NID_undef,
        },
    [CERT_PROFILE_OCSP_RESPONDER] =
        {
            .name = "ocsp-responder",
            .cn_prefix = "Certificate Services OCSP Responder",
            .pathlen = -1,
            .validity = 5 * YEAR_SECS,
            .eku = NID_OCSP_sign,
            .nocheck = 1,
        },
    [CERT_PROFILE_TLS_SERVER] =
        {
            .name = "tls-server",
            .pathlen = -1,
            .validity = 730 * DAY_SECS,
            .san_types = SAN_BIT(CERT_SAN_DNS) | SAN_BIT(CERT_SAN_IP),
            .eku = NID_server_auth,
        },
    [CERT_PROFILE_TLS_CLIENT] =
        {
            .name = "tls-client",
            .pathlen = -1,
            .validity = 730 * DAY_SECS,
            .san_types = SAN_BIT(CERT_SAN_DNS) | SAN_BIT(CERT_SAN_IP) |
                         SAN_BIT(CERT_SAN_EMAIL) | SAN_BIT(CERT_SAN_URI),
            .eku = NID_client_auth,
        },
};

static const char *san_type_names[CERT_SAN_TYPE_COUNT] = {
    [CERT_SAN_DNS] = "DNS",
    [CERT_SAN_IP] = "IP",
    [CERT_SAN_EMAIL] = "email",
    [CERT_SAN_URI] = "URI",
};

/* Subject attributes a CSR may bring (cert_request_from_csr). */
static const int csr_subject_nids[] = {
    NID_commonName,         NID_organizationName,    NID_organizationalUnitName,
    NID_countryName,        NID_stateOrProvinceName, NID_localityName,
    NID_pkcs9_emailAddress,
};

static bool
profile_valid(enum cert_profile profile)
{
	return (unsigned)profile < CERT_PROFILE_COUNT;
}

const char *
cert_profile_name(enum cert_profile profile)
{
	return profile_valid(profile) ? profiles[profile].name : "unknown";
}

int
cert_profile_from_name(const char *name, enum cert_profile *profile,
                       struct error *err)
{
	size_t i;

	for (i = 0; i < CERT_PROFILE_COUNT; i++) {
		if (strcmp(name, profiles[i].name) == 0) {
			*profile = (enum cert_profile)i;
			return 0;
		}
	}
	error_set(err, "unknown certificate profile \"%s\"", name);
	return -1;
}

bool
cert_profile_is_ca(enum cert_profile profile)
{
	return profile_valid(profile) && profiles[profile].pathlen >= 0;
}

time_t
cert_profile_default_validity(enum cert_profile profile)
{
	return profile_valid(profile) ? profiles[profile].validity : 0;
}

/* Characters of a UTF-8 string (continuation bytes not counted). */
static size_t
utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

int
cert_profile_cn(enum cert_profile profile, const char *host, char *buf,
                size_t len, struct error *err)
{
	int n;

	if (!profile_valid(profile)) {
		error_set(err, "unknown certificate profile %d", (int)profile);
		return -1;
	}
	if (host == NULL || host[0] == '\0') {
		error_set(err, "%s: empty host name", profiles[profile].name);
		return -1;
	}
	if (profiles[profile].cn_prefix != NULL)
		n = snprintf(buf, len, "%s - %s", profiles[profile].cn_prefix,
		             host);
	else
		n = snprintf(buf, len, "%s", host);
	if (n < 0 || (size_t)n >= len || utf8_chars(buf) > CERT_CN_MAX) {
		error_set(err,
		          "%s: CN for host \"%s\" is longer than %d "
		          "characters",
		          profiles[profile].name, host, CERT_CN_MAX);
		return -1;
	}
	return 0;
}

void
cert_request_init(struct cert_request *req, enum cert_profile profile)
{
	memset(req, 0, sizeof(*req));
	req->profile = profile;
}

static void
san_free_all(struct cert_san *san, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(san[i].value);
		san[i].value = NULL;
	}
}

void
cert_request_free(struct cert_request *req)
{
	enum cert_profile profile = req->profile;

	X509_NAME_free(req->subject);
	EVP_PKEY_free(req->key);
	san_free_all(req->san, req->nsan);
	free(req->ocsp_url);
	cert_request_init(req, profile);
}

/* Add one attribute; OpenSSL's string table enforces the upper bounds. */
static int
name_add_utf8(X509_NAME *name, int nid, const char *value, int len,
              struct error *err)
{
	if (X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8,
	                               (const unsigned char *)value, len, -1,
	                               0) != 1) {
		ERR_clear_error();
		error_set(err,
		          "subject attribute %s \"%.*s\" is empty, too "
		          "long or not valid for its type",
		          OBJ_nid2sn(nid), len < 0 ? 80 : (len > 80 ? 80 : len),
		          value);
		return -1;
	}
	return 0;
}

int
cert_request_set_cn(struct cert_request *req, const char *cn, struct error *err)
{
	X509_NAME *name;
	size_t n;

	n = utf8_chars(cn);
	if (n == 0 || n > CERT_CN_MAX) {
		error_set(err, "CN must have 1 to %d characters, not %zu",
		          CERT_CN_MAX, n);
		return -1;
	}
	if ((name = X509_NAME_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_NAME_new", cn);
		return -1;
	}
	if (name_add_utf8(name, NID_commonName, cn, -1, err) == -1) {
		X509_NAME_free(name);
		return -1;
	}
	X509_NAME_free(req->subject);
	req->subject = name;
	return 0;
}

int
cert_request_set_product_cn(struct cert_request *req, const char *host,
                            struct error *err)
{
	char cn[CERT_CN_BUF];

	if (cert_profile_cn(req->profile, host, cn, sizeof(cn), err) == -1)
		return -1;
	return cert_request_set_cn(req, cn, err);
}

int
cert_request_set_subject(struct cert_request *req, const X509_NAME *name,
                         struct error *err)
{
	X509_NAME *copy;

	if (name == NULL || X509_NAME_entry_count(name) == 0) {
		error_set(err, "empty subject");
		return -1;
	}
	if ((copy = X509_NAME_dup(name)) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_NAME_dup", NULL);
		return -1;
	}
	X509_NAME_free(req->subject);
	req->subject = copy;
	return 0;
}

int
cert_request_set_key(struct cert_request *req, EVP_PKEY *key, struct error *err)
{
	if (key == NULL) {
		error_set(err, "no subject key");
		return -1;
	}
	if (EVP_PKEY_up_ref(key) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "EVP_PKEY_up_ref", NULL);
		return -1;
	}
	EVP_PKEY_free(req->key);
	req->key = key;
	return 0;
}

/* Printable ASCII without space: what IA5String SANs and URLs may hold. */
static bool
ascii_graphic(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < 0x21 || *s > 0x7e)
			return false;
	return true;
}

/*
 * A host name as RFC 5280 4.2.1.6 wants a dNSName ("preferred name syntax",
 * RFC 1034 3.5 as relaxed by RFC 1123 2.1): LDH labels of 1..63 characters,
 * not starting or ending with a hyphen.  A wildcard is only the whole
 * leftmost label.
 */
static int
check_dns(const char *v, bool wildcard, struct error *err)
{
	const char *p = v, *label;
	size_t n;

	if (strlen(v) == 0 || strlen(v) > CERT_DNS_MAX) {
		error_set(err,
		          "DNS name \"%.80s\" must have 1 to %d "
		          "characters",
		          v, CERT_DNS_MAX);
		return -1;
	}
	if (wildcard && strncmp(v, "*.", 2) == 0 && v[2] != '\0')
		p = v + 2;
	for (;;) {
		label = p;
		while (*p != '\0' && *p != '.') {
			if (!isalnum((unsigned char)*p) && *p != '-')
				goto bad;
			p++;
		}
		n = (size_t)(p - label);
		if (n == 0 || n > CERT_LABEL_MAX || label[0] == '-' ||
		    label[n - 1] == '-')
			goto bad;
		if (*p == '\0')
			return 0;
		p++;
	}
bad:
	error_set(err, "\"%.80s\" is not a valid DNS name", v);
	return -1;
}

static int
check_san(enum cert_san_type type, const char *v, bool wildcard,
          struct error *err)
{
	unsigned char ip[16];
	const char *at, *p;

	if (strlen(v) > CERT_SAN_LEN_MAX) {
		error_set(err, "%s SAN longer than %d characters",
		          san_type_names[type], CERT_SAN_LEN_MAX);
		return -1;
	}
	switch (type) {
	case CERT_SAN_DNS:
		return check_dns(v, wildcard, err);
	case CERT_SAN_IP:
		if (inet_pton(AF_INET, v, ip) == 1 ||
		    inet_pton(AF_INET6, v, ip) == 1)
			return 0;
		error_set(err, "\"%.80s\" is not an IPv4 or IPv6 address", v);
		return -1;
	case CERT_SAN_EMAIL:
		/* RFC 5280 4.2.1.6: rfc822Name is an addr-spec, IA5String. */
		at = strchr(v, '@');
		if (!ascii_graphic(v) || at == NULL || at == v ||
		    strchr(at + 1, '@') != NULL) {
			error_set(err, "\"%.80s\" is not an e-mail address", v);
			return -1;
		}
		if (check_dns(at + 1, false, err) == -1) {
			error_prefix(err, "e-mail address \"%.80s\"", v);
			return -1;
		}
		return 0;
	case CERT_SAN_URI:
		/* RFC 5280 4.2.1.6: absolute, with scheme and more. */
		p = v;
		if (!isalpha((unsigned char)*p))
			goto bad_uri;
		while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' ||
		       *p == '.')
			p++;
		if (*p != ':' || p[1] == '\0' || !ascii_graphic(v))
			goto bad_uri;
		return 0;
	case CERT_SAN_TYPE_COUNT:
		break;
	}
	error_set(err, "unknown SAN type %d", (int)type);
	return -1;
bad_uri:
	error_set(err, "\"%.80s\" is not an absolute URI", v);
	return -1;
}

int
cert_request_add_san(struct cert_request *req, enum cert_san_type type,
                     const char *value, struct error *err)
{
	const struct profile_def *pd;
	char *copy;

	if (!profile_valid(req->profile) ||
	    (unsigned)type >= CERT_SAN_TYPE_COUNT) {
		error_set(err, "unknown profile or SAN type");
		return -1;
	}
	pd = &profiles[req->profile];
	if ((pd->san_types & SAN_BIT(type)) == 0) {
		error_set(err, "profile %s does not take %s names", pd->name,
		          san_type_names[type]);
		return -1;
	}
	if (req->nsan >= CERT_SAN_MAX) {
		error_set(err, "more than %d subjectAltNames", CERT_SAN_MAX);
		return -1;
	}
	if (check_san(type, value, req->profile == CERT_PROFILE_TLS_SERVER,
	              err) == -1)
		return -1;
	if ((copy = strdup(value)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	req->san[req->nsan].type = type;
	req->san[req->nsan].value = copy;
	req->nsan++;
	return 0;
}

int
cert_request_set_ocsp_url(struct cert_request *req, const char *url,
                          struct error *err)
{
	char *copy;

	/*
	 * Plain HTTP only (RFC 6960 appendix A.1): a client cannot check an
	 * HTTPS responder's certificate without first asking OCSP about it.
	 */
	if (strlen(url) > CERT_URL_MAX || !ascii_graphic(url) ||
	    strncmp(url, "http://", 7) != 0 || url[7] == '\0' ||
	    url[7] == '/') {
		error_set(err, "\"%.80s\" is not an http:// OCSP URL", url);
		return -1;
	}
	if (req->profile == CERT_PROFILE_ROOT_CA) {
		error_set(err, "a root CA has no OCSP responder above it");
		return -1;
	}
	if ((copy = strdup(url)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	free(req->ocsp_url);
	req->ocsp_url = copy;
	return 0;
}

/* Copy the allowed attributes of a CSR subject, re-encoded as UTF-8. */
static X509_NAME *
name_filter(const X509_NAME *in, struct error *err)
{
	const X509_NAME_ENTRY *e;
	unsigned char *utf8 = NULL;
	X509_NAME *out;
	int i, j, nid, len;
	bool keep;

	if ((out = X509_NAME_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_NAME_new", NULL);
		return NULL;
	}
	for (i = 0; i < X509_NAME_entry_count(in); i++) {
		e = X509_NAME_get_entry(in, i);
		nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
		keep = false;
		for (j = 0; j < (int)ARRAY_SIZE(csr_subject_nids); j++)
			if (nid == csr_subject_nids[j])
				keep = true;
		if (!keep) {
			log_debug(LOG_CA_SERVICE_CERT,
			          "CSR subject: dropping attribute %s",
			          nid == NID_undef ? "(unknown)"
			                           : OBJ_nid2sn(nid));
			continue;
		}
		len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
		if (len < 0) {
			ERR_clear_error();
			error_set(err,
			          "CSR subject attribute %s does not "
			          "decode",
			          OBJ_nid2sn(nid));
			goto fail;
		}
		if (memchr(utf8, '\0', (size_t)len) != NULL) {
			error_set(err, "CSR subject attribute %s holds a NUL",
			          OBJ_nid2sn(nid));
			goto fail;
		}
		if (name_add_utf8(out, nid, (const char *)utf8, len, err) ==
		    -1) {
			error_prefix(err, "CSR");
			goto fail;
		}
		OPENSSL_free(utf8);
		utf8 = NULL;
	}
	return out;
fail:
	OPENSSL_free(utf8);
	X509_NAME_free(out);
	return NULL;
}

/* One GENERAL_NAME of a CSR into tmp, if the profile takes its type. */
static int
csr_add_general_name(struct cert_request *tmp, const GENERAL_NAME *gn,
                     struct error *err)
{
	char text[INET6_ADDRSTRLEN], value[CERT_SAN_LEN_MAX + 1];
	const ASN1_STRING *s;
	enum cert_san_type type;
	int len;

	switch (gn->type) {
	case GEN_DNS:
		type = CERT_SAN_DNS;
		s = gn->d.dNSName;
		break;
	case GEN_EMAIL:
		type = CERT_SAN_EMAIL;
		s = gn->d.rfc822Name;
		break;
	case GEN_URI:
		type = CERT_SAN_URI;
		s = gn->d.uniformResourceIdentifier;
		break;
	case GEN_IPADD:
		type = CERT_SAN_IP;
		s = gn->d.iPAddress;
		break;
	default:
		log_debug(LOG_CA_SERVICE_CERT,
		          "CSR: dropping SAN of GeneralName type %d", gn->type);
		return 0;
	}
	if ((profiles[tmp->profile].san_types & SAN_BIT(type)) == 0) {
		log_debug(LOG_CA_SERVICE_CERT, "CSR: profile %s drops %s names",
		          profiles[tmp->profile].name, san_type_names[type]);
		return 0;
	}
	len = ASN1_STRING_length(s);
	if (type == CERT_SAN_IP) {
		if (len != 4 && len != 16) {
			error_set(err, "CSR iPAddress of %d octets", len);
			return -1;
		}
		inet_ntop(len == 4 ? AF_INET : AF_INET6,
		          ASN1_STRING_get0_data(s), text, sizeof(text));
		return cert_request_add_san(tmp, type, text, err);
	}
	/* IA5String: no NUL inside, or "a.example\0.evil" games start. */
	if (len <= 0 || len > CERT_SAN_LEN_MAX ||
	    memchr(ASN1_STRING_get0_data(s), '\0', (size_t)len) != NULL) {
		error_set(err, "CSR %s name empty, too long or holding a NUL",
		          san_type_names[type]);
		return -1;
	}
	memcpy(value, ASN1_STRING_get0_data(s), (size_t)len);
	value[len] = '\0';
	return cert_request_add_san(tmp, type, value, err);
}

int
cert_request_from_csr(struct cert_request *req, X509_REQ *csr,
                      struct error *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	struct cert_request tmp;
	X509_EXTENSION *ext;
	EVP_PKEY *key;
	int i, j, nid, rc = -1;

	cert_request_init(&tmp, req->profile);
	if (!profile_valid(req->profile)) {
		error_set(err, "unknown certificate profile");
		return -1;
	}
	if ((key = X509_REQ_get0_pubkey(csr)) == NULL) {
		ERR_clear_error();
		error_set(err, "CSR public key does not decode");
		goto out;
	}
	/* Proof of possession: the CSR is signed by its own key. */
	if (X509_REQ_verify(csr, key) != 1) {
		ERR_clear_error();
		error_set(err, "CSR signature does not verify");
		goto out;
	}
	if (cert_request_set_key(&tmp, key, err) == -1)
		goto out;
	if ((tmp.subject = name_filter(X509_REQ_get_subject_name(csr), err)) ==
	    NULL)
		goto out;

	exts = X509_REQ_get_extensions(csr);
	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		ext = sk_X509_EXTENSION_value(exts, i);
		nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
		if (nid != NID_subject_alt_name) {
			log_debug(LOG_CA_SERVICE_CERT,
			          "CSR: ignoring requested extension %s",
			          nid == NID_undef ? "(unknown)"
			                           : OBJ_nid2sn(nid));
			continue;
		}
		GENERAL_NAMES_free(gens);
		if ((gens = X509V3_EXT_d2i(ext)) == NULL) {
			ERR_clear_error();
			error_set(err, "CSR subjectAltName does not decode");
			goto out;
		}
		for (j = 0; j < sk_GENERAL_NAME_num(gens); j++)
			if (csr_add_general_name(&tmp,
			                         sk_GENERAL_NAME_value(gens, j),
			                         err) == -1)
				goto out;
	}

	/* Success: move subject, key and SANs into req. */
	X509_NAME_free(req->subject);
	EVP_PKEY_free(req->key);
	san_free_all(req->san, req->nsan);
	req->subject = tmp.subject;
	req->key = tmp.key;
	memcpy(req->san, tmp.san, sizeof(req->san));
	req->nsan = tmp.nsan;
	tmp.subject = NULL;
	tmp.key = NULL;
	tmp.nsan = 0;
	rc = 0;
out:
	if (rc == -1)
		log_info(LOG_CA_SERVICE_CERT, "CSR refused: %s",
		         err != NULL ? err->msg : "(no reason kept)");
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	cert_request_free(&tmp);
	return rc;
}

static int
asn1_time_get(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return -1;
	*out = timegm(&tm);
	return 0;
}

static void
time_format(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/* Digest for the issuer key (cert.h: cert_issue). */
static const EVP_MD *
sig_digest(EVP_PKEY *key, struct error *err)
{
	char group[CERT_GROUP_MAX];
	size_t glen;
	int nid;

	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
		return EVP_sha256();
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_group_name(key, group, sizeof(group), &glen) !=
		    1) {
			log_crypto(LOG_CA_SERVICE_CERT, err,
			           "EVP_PKEY_get_group_name", "issuer key");
			return NULL;
		}
		nid = OBJ_sn2nid(group);
		if (nid == NID_X9_62_prime256v1)
			return EVP_sha256();
		if (nid == NID_secp384r1)
			return EVP_sha384();
		if (nid == NID_secp521r1)
			return EVP_sha512();
		error_set(err, "issuer key on curve %s is not supported",
		          group);
		return NULL;
	default:
		error_set(err, "issuer key type %s is not supported",
		          OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
		return NULL;
	}
}

/* 126 random bits, positive, always 16 octets (RFC 5280 4.1.2.2). */
static int
set_serial(X509 *x, struct error *err)
{
	unsigned char buf[CERT_SERIAL_LEN];
	BIGNUM *bn = NULL;
	int rc = -1;

	if (RAND_bytes(buf, sizeof(buf)) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "RAND_bytes", "serial");
		return -1;
	}
	/* Top bit clear: positive.  Next bit set: no leading zero octet. */
	buf[0] = (unsigned char)((buf[0] & 0x7f) | 0x40);
	if ((bn = BN_bin2bn(buf, sizeof(buf), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "BN_to_ASN1_INTEGER",
		           "serial");
		goto out;
	}
	rc = 0;
out:
	BN_free(bn);
	return rc;
}

static int
add_ext(X509 *x, int nid, void *value, int crit, struct error *err)
{
	if (X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_DEFAULT) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_add1_ext_i2d",
		           OBJ_nid2sn(nid));
		return -1;
	}
	return 0;
}

static ASN1_OCTET_STRING *
octets(const unsigned char *p, size_t len, struct error *err)
{
	ASN1_OCTET_STRING *os;

	if ((os = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(os, p, (int)len) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_OCTET_STRING_set",
		           NULL);
		ASN1_OCTET_STRING_free(os);
		return NULL;
	}
	return os;
}

/* basicConstraints, critical (RFC 5280 4.2.1.9: MUST for CAs). */
static int
add_basic_constraints(X509 *x, const struct profile_def *pd, struct error *err)
{
	BASIC_CONSTRAINTS *bc;
	int rc = -1;

	if ((bc = BASIC_CONSTRAINTS_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "BASIC_CONSTRAINTS_new",
		           NULL);
		return -1;
	}
	if (pd->pathlen >= 0) {
		bc->ca = 0xff;
		if ((bc->pathlen = ASN1_INTEGER_new()) == NULL ||
		    ASN1_INTEGER_set(bc->pathlen, pd->pathlen) != 1) {
			log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_INTEGER_set",
			           "pathLenConstraint");
			goto out;
		}
	}
	rc = add_ext(x, NID_basic_constraints, bc, 1, err);
out:
	BASIC_CONSTRAINTS_free(bc);
	return rc;
}

/* keyUsage, critical (RFC 5280 4.2.1.3: SHOULD be critical). */
static int
add_key_usage(X509 *x, const struct profile_def *pd, EVP_PKEY *subject_key,
              struct error *err)
{
	/* Bit numbers of RFC 5280 4.2.1.3 KeyUsage. */
	enum { KU_BIT_DS = 0, KU_BIT_KE = 2, KU_BIT_CERT = 5, KU_BIT_CRL = 6 };
	ASN1_BIT_STRING *ku;
	int ok, rc = -1;

	if ((ku = ASN1_BIT_STRING_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_BIT_STRING_new",
		           NULL);
		return -1;
	}
	ok = ASN1_BIT_STRING_set_bit(ku, KU_BIT_DS, 1);
	if (pd->pathlen >= 0) {
		ok = ok && ASN1_BIT_STRING_set_bit(ku, KU_BIT_CERT, 1);
		ok = ok && ASN1_BIT_STRING_set_bit(ku, KU_BIT_CRL, 1);
	} else if (pd->eku == NID_server_auth &&
	           EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA) {
		/*
		 * TLS RSA key transport encrypts to the server's key.  Not on
		 * clients: RFC 5280 4.2.1.12 pairs clientAuth with
		 * digitalSignature and/or keyAgreement only, and a client
		 * key never decrypts anything in TLS.
		 */
		ok = ok && ASN1_BIT_STRING_set_bit(ku, KU_BIT_KE, 1);
	}
	if (!ok) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_BIT_STRING_set_bit",
		           "keyUsage");
		goto out;
	}
	rc = add_ext(x, NID_key_usage, ku, 1, err);
out:
	ASN1_BIT_STRING_free(ku);
	return rc;
}

static int
add_eku(X509 *x, int nid, struct error *err)
{
	EXTENDED_KEY_USAGE *eku;
	int rc = -1;

	if ((eku = sk_ASN1_OBJECT_new_null()) == NULL ||
	    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(nid)) <= 0) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "sk_ASN1_OBJECT_push",
		           "extendedKeyUsage");
		goto out;
	}
	rc = add_ext(x, NID_ext_key_usage, eku, 0, err);
out:
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return rc;
}

/* A GEN_URI/GEN_DNS/GEN_EMAIL/GEN_IPADD GeneralName from text. */
static GENERAL_NAME *
general_name(enum cert_san_type type, const char *value, struct error *err)
{
	ASN1_IA5STRING *ia5 = NULL;
	ASN1_OCTET_STRING *ip = NULL;
	GENERAL_NAME *gn;
	int gtype;

	if ((gn = GENERAL_NAME_new()) == NULL)
		goto fail;
	if (type == CERT_SAN_IP) {
		if ((ip = a2i_IPADDRESS(value)) == NULL)
			goto fail;
		GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
		return gn;
	}
	gtype = type == CERT_SAN_DNS     ? GEN_DNS
	        : type == CERT_SAN_EMAIL ? GEN_EMAIL
	                                 : GEN_URI;
	if ((ia5 = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(ia5, value, -1) != 1)
		goto fail;
	GENERAL_NAME_set0_value(gn, gtype, ia5);
	return gn;
fail:
	log_crypto(LOG_CA_SERVICE_CERT, err, "GENERAL_NAME", value);
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gn);
	return NULL;
}

static int
add_san(X509 *x, const struct cert_request *req, struct error *err)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gn;
	size_t i;
	int rc = -1;

	if ((gens = sk_GENERAL_NAME_new_null()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "sk_GENERAL_NAME_new",
		           NULL);
		return -1;
	}
	for (i = 0; i < req->nsan; i++) {
		if ((gn = general_name(req->san[i].type, req->san[i].value,
		                       err)) == NULL)
			goto out;
		if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
			GENERAL_NAME_free(gn);
			log_crypto(LOG_CA_SERVICE_CERT, err,
			           "sk_GENERAL_NAME_push", NULL);
			goto out;
		}
	}
	/* Not critical: we never issue an empty subject (RFC 5280 4.2.1.6). */
	rc = add_ext(x, NID_subject_alt_name, gens, 0, err);
out:
	GENERAL_NAMES_free(gens);
	return rc;
}

static int
add_aia_ocsp(X509 *x, const char *url, struct error *err)
{
	AUTHORITY_INFO_ACCESS *aia;
	ACCESS_DESCRIPTION *ad = NULL;
	int rc = -1;

	if ((aia = sk_ACCESS_DESCRIPTION_new_null()) == NULL ||
	    (ad = ACCESS_DESCRIPTION_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ACCESS_DESCRIPTION_new",
		           url);
		goto out;
	}
	ASN1_OBJECT_free(ad->method);
	ad->method = OBJ_nid2obj(NID_ad_OCSP);
	GENERAL_NAME_free(ad->location);
	if ((ad->location = general_name(CERT_SAN_URI, url, err)) == NULL)
		goto out;
	if (sk_ACCESS_DESCRIPTION_push(aia, ad) <= 0) {
		log_crypto(LOG_CA_SERVICE_CERT, err,
		           "sk_ACCESS_DESCRIPTION_push", url);
		goto out;
	}
	ad = NULL;
	rc = add_ext(x, NID_info_access, aia, 0, err);
out:
	ACCESS_DESCRIPTION_free(ad);
	AUTHORITY_INFO_ACCESS_free(aia);
	return rc;
}

/* SKI and AKI keyIdentifier, both RFC 5280 4.2.1.2 method (1). */
static int
add_key_ids(X509 *x, EVP_PKEY *subject_key, X509 *issuer_cert,
            struct error *err)
{
	unsigned char ski[KEY_ID_LEN], aki[KEY_ID_LEN];
	ASN1_OCTET_STRING *os = NULL;
	AUTHORITY_KEYID *akid = NULL;
	const ASN1_OCTET_STRING *issuer_ski;
	const ASN1_BIT_STRING *bits;
	unsigned int mdlen = 0;
	int rc = -1;

	/*
	 * Method (1) over the key bits x already holds (X509_set_pubkey ran):
	 * the same value as key_id(subject_key), without encoding the key
	 * again, which OpenSSL 3.0 makes costly (docs/PERFORMANCE.md).
	 */
	(void)subject_key;
	if ((bits = X509_get0_pubkey_bitstr(x)) == NULL ||
	    !EVP_Digest(bits->data, (size_t)bits->length, ski, &mdlen,
	                EVP_sha1(), NULL) ||
	    mdlen != KEY_ID_LEN) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "EVP_Digest",
		           "subject key identifier");
		return -1;
	}
	/*
	 * AKI keyIdentifier is the issuer's SKI as it appears there, so path
	 * building matches even if that SKI was made another way.  On the
	 * self-signed root it equals its own SKI (RFC 5280 4.2.1.1 allows
	 * omitting it; OpenSSL's X509_STRICT and CA/B want it).
	 */
	if (issuer_cert == NULL) {
		memcpy(aki, ski, sizeof(aki));
		issuer_ski = NULL;
	} else if ((issuer_ski = X509_get0_subject_key_id(issuer_cert)) ==
	           NULL) {
		if (key_id(X509_get0_pubkey(issuer_cert), aki, err) == -1) {
			error_prefix(err, "issuer key identifier");
			return -1;
		}
	}
	if ((os = octets(ski, sizeof(ski), err)) == NULL ||
	    add_ext(x, NID_subject_key_identifier, os, 0, err) == -1)
		goto out;
	if ((akid = AUTHORITY_KEYID_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "AUTHORITY_KEYID_new",
		           NULL);
		goto out;
	}
	if (issuer_ski != NULL)
		akid->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
	else
		akid->keyid = octets(aki, sizeof(aki), err);
	if (akid->keyid == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_OCTET_STRING_dup",
		           "authorityKeyIdentifier");
		goto out;
	}
	rc = add_ext(x, NID_authority_key_identifier, akid, 0, err);
out:
	ASN1_OCTET_STRING_free(os);
	AUTHORITY_KEYID_free(akid);
	return rc;
}

static int
add_nocheck(X509 *x, struct error *err)
{
	ASN1_NULL *null;
	int rc;

	if ((null = ASN1_NULL_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_NULL_new", NULL);
		return -1;
	}
	rc = add_ext(x, NID_id_pkix_OCSP_noCheck, null, 0, err);
	ASN1_NULL_free(null);
	return rc;
}

/* Is issuer allowed to sign a certificate of profile pd? */
static int
check_issuer(X509 *issuer, EVP_PKEY *issuer_key, const struct profile_def *pd,
             const char *issuer_dn, struct error *err)
{
	uint32_t flags;
	long pathlen;

	flags = X509_get_extension_flags(issuer);
	if (flags & EXFLAG_INVALID) {
		error_set(err, "issuer %s has invalid extensions", issuer_dn);
		return -1;
	}
	if ((flags & EXFLAG_CA) == 0) {
		error_set(err, "issuer %s is not a CA", issuer_dn);
		return -1;
	}
	/* RFC 5280 4.2.1.3: signing certificates needs keyCertSign. */
	if ((flags & EXFLAG_KUSAGE) == 0 ||
	    (X509_get_key_usage(issuer) & KU_KEY_CERT_SIGN) == 0) {
		error_set(err, "issuer %s lacks keyCertSign", issuer_dn);
		return -1;
	}
	/* RFC 5280 4.2.1.9: pathLen counts the CAs that may follow. */
	pathlen = X509_get_pathlen(issuer);
	if (pd->pathlen >= 0 && pathlen >= 0 && pathlen < pd->pathlen + 1) {
		error_set(err,
		          "issuer %s has pathLenConstraint %ld; it cannot "
		          "sign a %s",
		          issuer_dn, pathlen, pd->name);
		return -1;
	}
	if (X509_check_private_key(issuer, issuer_key) != 1) {
		ERR_clear_error();
		error_set(err,
		          "issuer key does not match issuer certificate "
		          "%s",
		          issuer_dn);
		return -1;
	}
	return 0;
}

/* notBefore/notAfter of the new certificate, inside the issuer's. */
static int
set_validity(X509 *x, const struct cert_request *req, X509 *issuer,
             const char *issuer_dn, struct error *err)
{
	char t1[32], t2[32];
	time_t now, nb, na, validity, inb, ina;

	now = time(NULL);
	validity = req->validity != 0
	               ? req->validity
	               : cert_profile_default_validity(req->profile);
	if (validity <= 0 || validity > CERT_VALIDITY_MAX) {
		error_set(err, "validity of %lld seconds is out of range",
		          (long long)validity);
		return -1;
	}
	nb = req->not_before != 0 ? req->not_before : now - CERT_BACKDATE_SECS;
	na = nb + validity;
	if (issuer != NULL) {
		if (asn1_time_get(X509_get0_notBefore(issuer), &inb) == -1 ||
		    asn1_time_get(X509_get0_notAfter(issuer), &ina) == -1) {
			ERR_clear_error();
			error_set(err, "issuer %s validity does not decode",
			          issuer_dn);
			return -1;
		}
		/* Refuse a window wholly outside the issuer's. */
		if (na <= inb) {
			error_set(
			    err,
			    "requested validity lies outside issuer "
			    "%s validity: it ends before the issuer's starts",
			    issuer_dn);
			return -1;
		}
		if (nb >= ina) {
			time_format(ina, t2, sizeof(t2));
			error_set(err,
			          "issuer %s is valid only until %s, "
			          "before the requested validity starts",
			          issuer_dn, t2);
			return -1;
		}
		if (nb < inb) {
			log_debug(LOG_CA_SERVICE_CERT,
			          "notBefore moved to "
			          "issuer %s notBefore",
			          issuer_dn);
			nb = inb;
		}
		if (na > ina) {
			time_format(na, t1, sizeof(t1));
			time_format(ina, t2, sizeof(t2));
			log_info(LOG_CA_SERVICE_CERT,
			         "notAfter %s clamped to "
			         "issuer %s notAfter %s",
			         t1, issuer_dn, t2);
			na = ina;
		}
	}
	/* ASN1_TIME_set picks UTCTime/GeneralizedTime (RFC 5280 4.1.2.5). */
	if (ASN1_TIME_set(X509_getm_notBefore(x), nb) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), na) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "ASN1_TIME_set", NULL);
		return -1;
	}
	return 0;
}

static bool
has_host_san(const struct cert_request *req)
{
	size_t i;

	for (i = 0; i < req->nsan; i++)
		if (req->san[i].type == CERT_SAN_DNS ||
		    req->san[i].type == CERT_SAN_IP)
			return true;
	return false;
}

int
cert_issue(const struct cert_request *req, X509 *issuer_cert,
           EVP_PKEY *issuer_key, X509 **out, struct error *err)
{
	char subject_dn[CERT_LINE_MAX], issuer_dn[CERT_LINE_MAX];
	char line[CERT_LINE_MAX];
	const struct profile_def *pd;
	const EVP_MD *md;
	X509 *x = NULL;
	int rc = -1;

	*out = NULL;
	if (!profile_valid(req->profile)) {
		error_set(err, "unknown certificate profile %d",
		          (int)req->profile);
		return -1;
	}
	pd = &profiles[req->profile];
	if (req->subject == NULL || X509_NAME_entry_count(req->subject) == 0) {
		/* RFC 5280 4.1.2.6: we would need a critical SAN; refuse. */
		error_set(err, "%s: empty subject", pd->name);
		goto out;
	}
	cert_name_string(req->subject, subject_dn, sizeof(subject_dn));
	if (req->key == NULL || issuer_key == NULL) {
		error_set(err, "%s %s: no subject or issuer key", pd->name,
		          subject_dn);
		goto out;
	}
	if (key_check_strength(req->key, err) == -1) {
		error_prefix(err, "%s: subject key", subject_dn);
		goto out;
	}
	if ((issuer_cert == NULL) != (req->profile == CERT_PROFILE_ROOT_CA)) {
		error_set(err, "%s: %s", subject_dn,
		          issuer_cert == NULL
		              ? "only a root CA is self-signed"
		              : "a root CA must be self-signed");
		goto out;
	}
	if (issuer_cert == NULL) {
		snprintf(issuer_dn, sizeof(issuer_dn), "%s", subject_dn);
		if (EVP_PKEY_eq(req->key, issuer_key) != 1) {
			ERR_clear_error();
			error_set(err,
			          "%s: a self-signed root must be signed "
			          "by its own key",
			          subject_dn);
			goto out;
		}
	} else {
		cert_name_string(X509_get_subject_name(issuer_cert), issuer_dn,
		                 sizeof(issuer_dn));
		if (check_issuer(issuer_cert, issuer_key, pd, issuer_dn, err) ==
		    -1)
			goto out;
	}
	if (req->profile == CERT_PROFILE_TLS_SERVER && !has_host_san(req)) {
		error_set(err,
		          "%s: a TLS server certificate needs a DNS or IP "
		          "subjectAltName",
		          subject_dn);
		goto out;
	}
	if ((md = sig_digest(issuer_key, err)) == NULL)
		goto out;

	if ((x = X509_new()) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_new", subject_dn);
		goto out;
	}
	if (X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_subject_name(x, req->subject) != 1 ||
	    X509_set_issuer_name(x, issuer_cert != NULL
	                                ? X509_get_subject_name(issuer_cert)
	                                : req->subject) != 1 ||
	    X509_set_pubkey(x, req->key) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_set", subject_dn);
		goto out;
	}
	if (set_serial(x, err) == -1 ||
	    set_validity(x, req, issuer_cert, issuer_dn, err) == -1)
		goto out;
	if (add_basic_constraints(x, pd, err) == -1 ||
	    add_key_usage(x, pd, req->key, err) == -1)
		goto out;
	if (pd->eku != NID_undef && add_eku(x, pd->eku, err) == -1)
		goto out;
	if (add_key_ids(x, req->key, issuer_cert, err) == -1)
		goto out;
	if (req->nsan > 0 && add_san(x, req, err) == -1)
		goto out;
	if (req->ocsp_url != NULL && add_aia_ocsp(x, req->ocsp_url, err) == -1)
		goto out;
	if (pd->nocheck && add_nocheck(x, err) == -1)
		goto out;
	if (X509_sign(x, issuer_key, md) <= 0) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_sign", subject_dn);
		goto out;
	}
	cert_describe(x, line, sizeof(line));
	log_info(LOG_CA_SERVICE_CERT, "issued %s: %s", pd->name, line);
	*out = x;
	x = NULL;
	rc = 0;
out:
	if (rc == -1)
		log_info(LOG_CA_SERVICE_CERT, "%s not issued: %s",
		         profile_valid(req->profile)
		             ? profiles[req->profile].name
		             : "certificate",
		         err != NULL ? err->msg : "(no reason kept)");
	X509_free(x);
	return rc;
}

/* Replace x's AKI by one naming the issuer's SKI. */
static int
link_set_aki(X509 *x, X509 *issuer, struct error *err)
{
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(issuer);
	AUTHORITY_KEYID *akid = NULL;
	int idx, rc = -1;

	if (ski == NULL) {
		error_set(err, "the issuing root has no subject key identifier");
		return -1;
	}
	while ((idx = X509_get_ext_by_NID(x, NID_authority_key_identifier,
	                                  -1)) >= 0)
		X509_EXTENSION_free(X509_delete_ext(x, idx));
	if ((akid = AUTHORITY_KEYID_new()) == NULL ||
	    (akid->keyid = ASN1_OCTET_STRING_dup(ski)) == NULL ||
	    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0,
	                      X509V3_ADD_DEFAULT) != 1) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_add1_ext_i2d",
		           "authorityKeyIdentifier");
		goto out;
	}
	rc = 0;
out:
	AUTHORITY_KEYID_free(akid);
	return rc;
}

int
cert_link(X509 *subject, X509 *issuer, EVP_PKEY *issuer_key, X509 **out,
          struct error *err)
{
	char dn[CERT_LINE_MAX], line[CERT_LINE_MAX];
	const EVP_MD *md;
	time_t snb, sna, inb, ina;
	X509 *x = NULL;
	int rc = -1;

	*out = NULL;
	cert_name_string(X509_get_subject_name(subject), dn, sizeof(dn));
	if (X509_check_issued(subject, subject) != X509_V_OK ||
	    X509_check_issued(issuer, issuer) != X509_V_OK ||
	    (X509_get_extension_flags(subject) & EXFLAG_CA) == 0 ||
	    (X509_get_extension_flags(issuer) & EXFLAG_CA) == 0) {
		ERR_clear_error();
		error_set(err, "%s: a link certificate joins two self-signed "
		               "roots", dn);
		goto out;
	}
	if (X509_check_private_key(issuer, issuer_key) != 1) {
		ERR_clear_error();
		error_set(err, "%s: the issuing key does not match its root",
		          dn);
		goto out;
	}
	if (asn1_time_get(X509_get0_notBefore(subject), &snb) == -1 ||
	    asn1_time_get(X509_get0_notAfter(subject), &sna) == -1 ||
	    asn1_time_get(X509_get0_notBefore(issuer), &inb) == -1 ||
	    asn1_time_get(X509_get0_notAfter(issuer), &ina) == -1) {
		ERR_clear_error();
		error_set(err, "%s: validity does not decode", dn);
		goto out;
	}
	/* Within both windows, so that neither certificate outlives a root. */
	if (snb < inb)
		snb = inb;
	if (sna > ina)
		sna = ina;
	if (snb >= sna) {
		error_set(err, "%s: the two roots' validities do not overlap",
		          dn);
		goto out;
	}
	if ((md = sig_digest(issuer_key, err)) == NULL)
		goto out;
	if ((x = X509_dup(subject)) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_dup", dn);
		goto out;
	}
	if (X509_set_issuer_name(x, X509_get_subject_name(issuer)) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), snb) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), sna) == NULL) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_set", dn);
		goto out;
	}
	if (set_serial(x, err) == -1 || link_set_aki(x, issuer, err) == -1)
		goto out;
	if (X509_sign(x, issuer_key, md) <= 0) {
		log_crypto(LOG_CA_SERVICE_CERT, err, "X509_sign", dn);
		goto out;
	}
	cert_describe(x, line, sizeof(line));
	log_info(LOG_CA_SERVICE_CERT, "issued root link certificate: %s",
	         line);
	*out = x;
	x = NULL;
	rc = 0;
out:
	X509_free(x);
	return rc;
}

X509 *
cert_parse_der(const uint8_t *der, size_t len, struct error *err)
{
	const unsigned char *p = der;
	X509 *x;

	if (len > CERT_FILE_MAX) {
		error_set(err, "certificate of %zu bytes is too large", len);
		return NULL;
	}
	if ((x = d2i_X509(NULL, &p, (long)len)) == NULL) {
		log_crypto(LOG_MAIN, err, "d2i_X509", NULL);
		return NULL;
	}
	if (p != der + len) {
		error_set(err, "%zu bytes after the certificate",
		          (size_t)(der + len - p));
		X509_free(x);
		return NULL;
	}
	return x;
}

X509 *
cert_load_der(const char *path, struct error *err)
{
	uint8_t *buf;
	size_t len;
	X509 *x;

	if ((buf = file_read(path, CERT_FILE_MAX, &len, err)) == NULL) {
		log_error(LOG_MAIN, "%s", err != NULL ? err->msg : path);
		return NULL;
	}
	if ((x = cert_parse_der(buf, len, err)) == NULL)
		error_prefix(err, "%s", path);
	free(buf);
	return x;
}

X509 *
cert_load_pem(const char *path, struct error *err)
{
	uint8_t *buf;
	size_t len;
	BIO *bio = NULL;
	X509 *x = NULL;

	if ((buf = file_read(path, CERT_FILE_MAX, &len, err)) == NULL) {
		log_error(LOG_MAIN, "%s", err != NULL ? err->msg : path);
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL)
		log_crypto(LOG_MAIN, err, "PEM_read_bio_X509", path);
	BIO_free(bio);
	free(buf);
	return x;
}

int
cert_save_pem(X509 *cert, const char *path, struct error *err)
{
	BIO *bio;
	char *data;
	long len;
	int rc = -1;

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(bio, cert) != 1) {
		log_crypto(LOG_MAIN, err, "PEM_write_bio_X509", path);
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	if (file_write_atomic(path, data, (size_t)len, 0644, err) == -1) {
		log_error(LOG_MAIN, "%s", err != NULL ? err->msg : path);
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	return rc;
}

int
cert_serial_hex(const X509 *cert, char *buf, size_t len, struct error *err)
{
	const ASN1_INTEGER *ai = X509_get0_serialNumber(cert);
	BIGNUM *bn;
	unsigned char bin[CERT_SERIAL_HEX_MAX / 2];
	int n;

	if ((bn = ASN1_INTEGER_to_BN(ai, NULL)) == NULL) {
		log_crypto(LOG_MAIN, err, "ASN1_INTEGER_to_BN", "serial");
		return -1;
	}
	/* RFC 5280 4.1.2.2: at most 20 octets; reject what we cannot key. */
	if (BN_is_negative(bn) || (n = BN_num_bytes(bn)) > (int)sizeof(bin) ||
	    len < (size_t)n * 2 + 1 || len < 2) {
		BN_free(bn);
		error_set(err, "serial number negative, over 20 octets or "
		               "buffer too small");
		return -1;
	}
	BN_bn2bin(bn, bin);
	BN_free(bn);
	if (n == 0)
		snprintf(buf, len, "00");
	else
		hex_encode(bin, (size_t)n, buf);
	return 0;
}

int
cert_key_id(const X509 *cert, unsigned char out[KEY_ID_LEN], struct error *err)
{
	EVP_PKEY *key;

	if ((key = X509_get0_pubkey(cert)) == NULL) {
		log_crypto(LOG_MAIN, err, "X509_get0_pubkey", NULL);
		return -1;
	}
	return key_id(key, out, err);
}

int
cert_not_before(const X509 *cert, time_t *out, struct error *err)
{
	if (asn1_time_get(X509_get0_notBefore(cert), out) == -1) {
		log_crypto(LOG_MAIN, err, "ASN1_TIME_to_tm", "notBefore");
		return -1;
	}
	return 0;
}

int
cert_not_after(const X509 *cert, time_t *out, struct error *err)
{
	if (asn1_time_get(X509_get0_notAfter(cert), out) == -1) {
		log_crypto(LOG_MAIN, err, "ASN1_TIME_to_tm", "notAfter");
		return -1;
	}
	return 0;
}

int
cert_subject_cn(const X509 *cert, char *buf, size_t len, struct error *err)
{
	const X509_NAME *name = X509_get_subject_name(cert);
	unsigned char *utf8 = NULL;
	int i, last = -1, n;

	for (i = -1;
	     (i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0;)
		last = i;
	if (last < 0) {
		error_set(err, "subject has no CN");
		return -1;
	}
	n = ASN1_STRING_to_UTF8(
	    &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last)));
	if (n < 0) {
		log_crypto(LOG_MAIN, err, "ASN1_STRING_to_UTF8", "CN");
		return -1;
	}
	if ((size_t)n >= len || memchr(utf8, '\0', (size_t)n) != NULL) {
		error_set(err, "CN too long or holding a NUL");
		OPENSSL_free(utf8);
		return -1;
	}
	memcpy(buf, utf8, (size_t)n);
	buf[n] = '\0';
	OPENSSL_free(utf8);
	return 0;
}

void
cert_name_string(const X509_NAME *name, char *buf, size_t len)
{
	BIO *bio;
	int n;

	if (len == 0)
		return;
	buf[0] = '\0';
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		ERR_clear_error();
		snprintf(buf, len, "(out of memory)");
		return;
	}
	/* RFC 2253 order, UTF-8 kept as is rather than escaped. */
	if (X509_NAME_print_ex(bio, name, 0,
	                       XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
		ERR_clear_error();
		snprintf(buf, len, "(unprintable name)");
	} else if ((n = BIO_read(bio, buf, (int)len - 1)) > 0)
		buf[n] = '\0';
	BIO_free(bio);
}

void
cert_describe(const X509 *cert, char *buf, size_t len)
{
	char subject[CERT_LINE_MAX], issuer[CERT_LINE_MAX];
	char serial[CERT_SERIAL_HEX_MAX], nb[32], na[32], key[64];
	const EVP_PKEY *pk;
	time_t t;

	cert_name_string(X509_get_subject_name(cert), subject, sizeof(subject));
	cert_name_string(X509_get_issuer_name(cert), issuer, sizeof(issuer));
	if (cert_serial_hex(cert, serial, sizeof(serial), NULL) == -1)
		snprintf(serial, sizeof(serial), "?");
	if (cert_not_before(cert, &t, NULL) == 0)
		time_format(t, nb, sizeof(nb));
	else
		snprintf(nb, sizeof(nb), "?");
	if (cert_not_after(cert, &t, NULL) == 0)
		time_format(t, na, sizeof(na));
	else
		snprintf(na, sizeof(na), "?");
	if ((pk = X509_get0_pubkey(cert)) != NULL)
		key_describe(pk, key, sizeof(key));
	else
		snprintf(key, sizeof(key), "unknown key");
	ERR_clear_error();
	snprintf(buf, len, "%s, serial %s, issuer %s, %s..%s, %s", subject,
	         serial, issuer, nb, na, key);
}
