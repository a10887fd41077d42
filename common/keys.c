/*
 * keys: generate, check, describe, identify, save and load the key pairs of
 * every node role.
 *
 * A key is written once, when a node is set up or a CA is rotated, and read
 * at every start, so the encryption is deliberately slow (PBKDF2 with many
 * iterations): the key file sits in a data directory that backups and
 * container images copy around, and the passphrase is the only thing
 * between a stolen copy and the CA.  Loading refuses anything that is not
 * encrypted PKCS#8 with PBES2, so a key that was once written in the clear
 * (by hand, by an old tool) is noticed instead of silently used.
 */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/x509.h>

#include "log.h"
#include "util.h"

/*
 * PBKDF2-HMAC-SHA256 iterations for a saved key: OWASP's 2023 figure for
 * this PRF.  About 0.15 s per save or load on one core, paid once per start.
 */
#define KEY_PBKDF2_ITER 600000
/*
 * Fewest iterations KEY_KDF_ITER_ENV may ask for: RFC 8018 section 4.2's
 * minimum.
 */
#define KEY_PBKDF2_ITER_MIN 1000
/* Most iterations we run on load: a tampered file must not hang a start. */
#define KEY_PBKDF2_ITER_MAX 10000000
/* PBKDF2 salt length in bytes (NIST SP 800-132 asks for at least 16). */
#define KEY_SALT_LEN 16
/* Largest key file we read: an encrypted RSA-8192 key is about 6.5 KiB. */
#define KEY_FILE_MAX (64 * 1024)
/* RSA modulus sizes we accept. */
#define KEY_RSA_MIN_BITS 2048
#define KEY_RSA_MAX_BITS 8192
/*
 * Smallest RSA public exponent we accept, and the most bits it may have:
 * FIPS 186-4 section B.3.1 requires 2^16 < e < 2^256.
 */
#define KEY_RSA_MIN_E      65537
#define KEY_RSA_MAX_E_BITS 256
/* Longest curve or algorithm name we copy out of a key. */
#define KEY_NAME_MAX 64

static const struct {
	const char *name;  /* as the CLI takes it */
	const char *algo;  /* EVP_PKEY_Q_keygen() algorithm */
	const char *curve; /* NULL for RSA */
	unsigned int bits; /* RSA modulus size */
} key_types[KEY_TYPE_COUNT] = {
    [KEY_RSA_2048] = {"rsa:2048", "RSA", NULL, 2048},
    [KEY_RSA_3072] = {"rsa:3072", "RSA", NULL, 3072},
    [KEY_RSA_4096] = {"rsa:4096", "RSA", NULL, 4096},
    [KEY_EC_P256] = {"ec:p256", "EC", "P-256", 0},
    [KEY_EC_P384] = {"ec:p384", "EC", "P-384", 0},
};

const char *
key_type_name(enum key_type type)
{
	if ((unsigned int)type >= KEY_TYPE_COUNT)
		return "unknown";
	return key_types[type].name;
}

int
key_type_from_name(const char *name, enum key_type *type, struct error *err)
{
	size_t i;

	for (i = 0; i < KEY_TYPE_COUNT; i++) {
		if (name != NULL && strcasecmp(name, key_types[i].name) == 0) {
			*type = (enum key_type)i;
			return 0;
		}
	}
	error_set(err,
	          "unknown key type \"%s\" (use rsa:2048, rsa:3072, rsa:4096, "
	          "ec:p256 or ec:p384)",
	          name != NULL ? name : "");
	return -1;
}

int
key_type_of(const EVP_PKEY *key, enum key_type *type, struct error *err)
{
	char curve[KEY_NAME_MAX];
	size_t i, len = 0;
	bool rsa = EVP_PKEY_is_a(key, "RSA");

	if (!rsa && (!EVP_PKEY_is_a(key, "EC") ||
	             EVP_PKEY_get_utf8_string_param(
	                 key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve),
	                 &len) != 1)) {
		ERR_clear_error();
		error_set(err, "a key of a type we do not make");
		return -1;
	}
	for (i = 0; i < KEY_TYPE_COUNT; i++) {
		if (rsa ? key_types[i].curve == NULL &&
		              (int)key_types[i].bits == EVP_PKEY_get_bits(key)
		        : key_types[i].curve != NULL &&
		              (strcmp(curve, key_types[i].curve) == 0 ||
		               OBJ_sn2nid(curve) ==
		                   EC_curve_nist2nid(key_types[i].curve))) {
			*type = (enum key_type)i;
			return 0;
		}
	}
	error_set(err, "a key of a size or curve we do not make");
	return -1;
}

EVP_PKEY *
key_generate(enum key_type type, struct error *err)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	OSSL_PARAM params[4], *p = params;
	size_t bits;
	BIGNUM *e = NULL;

	if ((unsigned int)type >= KEY_TYPE_COUNT) {
		error_set(err, "key_generate: unknown key type %d", (int)type);
		return NULL;
	}
	bits = key_types[type].bits;
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, key_types[type].algo,
	                                      NULL)) == NULL) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY_CTX_new_from_name",
		           key_types[type].name);
		goto out;
	}
	if (EVP_PKEY_keygen_init(ctx) <= 0) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY_keygen_init",
		           key_types[type].name);
		goto out;
	}
	if (key_types[type].curve == NULL) {
		/* e = 65537, said explicitly rather than trusting a default. */
		if ((e = BN_new()) == NULL || !BN_set_word(e, RSA_F4) ||
		    EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e) <= 0) {
			log_crypto(LOG_MAIN, err,
			           "EVP_PKEY_CTX_set1_rsa_keygen_pubexp",
			           key_types[type].name);
			goto out;
		}
		*p++ = OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS,
		                                   &bits);
	} else {
		/*
		 * Named curve and uncompressed points: RFC 5480 section 2.1.1
		 * (CAs MUST NOT use specifiedCurve) and section 2.2 (the
		 * uncompressed form MUST be supported, others MAY not be).
		 */
		*p++ = OSSL_PARAM_construct_utf8_string(
		    OSSL_PKEY_PARAM_GROUP_NAME, (char *)key_types[type].curve,
		    0);
		*p++ = OSSL_PARAM_construct_utf8_string(
		    OSSL_PKEY_PARAM_EC_ENCODING,
		    (char *)OSSL_PKEY_EC_ENCODING_GROUP, 0);
		*p++ = OSSL_PARAM_construct_utf8_string(
		    OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
		    (char *)OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED,
		    0);
	}
	*p = OSSL_PARAM_construct_end();
	if (EVP_PKEY_CTX_set_params(ctx, params) <= 0) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY_CTX_set_params",
		           key_types[type].name);
		goto out;
	}
	if (EVP_PKEY_generate(ctx, &key) <= 0) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY_generate",
		           key_types[type].name);
		key = NULL;
		goto out;
	}
out:
	BN_free(e);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

/*
 * Curve short name ("prime256v1") to NID, NID_undef when not named.  A key
 * encoded with explicit parameters counts as not named even when they are
 * those of a named curve: RFC 5480 section 2.1.1 forbids specifiedCurve in
 * certificates, and we would copy the encoding into the one we issue.
 */
static int
key_ec_curve_nid(const EVP_PKEY *key)
{
	char name[KEY_NAME_MAX];
	size_t len = 0;
	int nid = NID_undef;

	/* A failed query is an answer here, not an error for the caller. */
	ERR_set_mark();
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING,
	                                   name, sizeof(name), &len) == 1 &&
	    strcmp(name, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
		goto out;
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME,
	                                   name, sizeof(name), &len) != 1)
		goto out;
	if ((nid = OBJ_sn2nid(name)) == NID_undef)
		nid = EC_curve_nist2nid(name);
out:
	ERR_pop_to_mark();
	return nid;
}

static int
key_check_rsa(const EVP_PKEY *key, int bits, struct error *err)
{
	BIGNUM *e = NULL;
	int rc = -1;

	if (bits < KEY_RSA_MIN_BITS) {
		error_set(err, "RSA key of %d bits is below the minimum of %d",
		          bits, KEY_RSA_MIN_BITS);
		return -1;
	}
	if (bits > KEY_RSA_MAX_BITS) {
		error_set(err, "RSA key of %d bits is above the maximum of %d",
		          bits, KEY_RSA_MAX_BITS);
		return -1;
	}
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY_get_bn_param", "RSA e");
		return -1;
	}
	if (!BN_is_odd(e)) {
		error_set(err, "RSA public exponent is even");
		goto out;
	}
	if (BN_num_bits(e) > KEY_RSA_MAX_E_BITS) {
		error_set(err,
		          "RSA public exponent of %d bits is above the "
		          "maximum of %d",
		          BN_num_bits(e), KEY_RSA_MAX_E_BITS);
		goto out;
	}
	if (BN_num_bits(e) <= 32 && BN_get_word(e) < KEY_RSA_MIN_E) {
		error_set(err,
		          "RSA public exponent %lu is below the minimum "
		          "of %d",
		          (unsigned long)BN_get_word(e), KEY_RSA_MIN_E);
		goto out;
	}
	rc = 0;
out:
	BN_free(e);
	return rc;
}

int
key_check_strength(const EVP_PKEY *key, struct error *err)
{
	const char *name;
	int nid, bits;

	if (key == NULL) {
		error_set(err, "no key");
		return -1;
	}
	bits = EVP_PKEY_get_bits(key);
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
		return key_check_rsa(key, bits, err);
	case EVP_PKEY_EC:
		nid = key_ec_curve_nid(key);
		if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1 ||
		    nid == NID_secp521r1)
			return 0;
		if (nid == NID_undef)
			error_set(err,
			          "EC key with explicit curve parameters is "
			          "not accepted (only P-256, P-384, P-521)");
		else
			error_set(err,
			          "EC key on curve %s is not accepted "
			          "(only P-256, P-384, P-521)",
			          OBJ_nid2sn(nid));
		return -1;
	default:
		if ((name = EVP_PKEY_get0_type_name(key)) == NULL)
			name = OBJ_nid2sn(EVP_PKEY_get_base_id(key));
		error_set(err,
		          "%s keys are not accepted (only RSA and EC "
		          "P-256, P-384, P-521)",
		          name != NULL ? name : "unknown");
		return -1;
	}
}

void
key_describe(const EVP_PKEY *key, char *buf, size_t len)
{
	const char *name;
	int nid;

	if (len == 0)
		return;
	if (key == NULL) {
		snprintf(buf, len, "none");
		return;
	}
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_RSA:
		snprintf(buf, len, "RSA %d", EVP_PKEY_get_bits(key));
		return;
	case EVP_PKEY_EC:
		nid = key_ec_curve_nid(key);
		if (nid == NID_undef)
			snprintf(buf, len, "EC explicit-%d",
			         EVP_PKEY_get_bits(key));
		else if ((name = EC_curve_nid2nist(nid)) != NULL)
			snprintf(buf, len, "EC %s", name);
		else
			snprintf(buf, len, "EC %s", OBJ_nid2sn(nid));
		return;
	default:
		if ((name = EVP_PKEY_get0_type_name(key)) == NULL)
			name = "unknown";
		snprintf(buf, len, "%s %d", name, EVP_PKEY_get_bits(key));
		return;
	}
}

const EVP_MD *
key_signature_md(const EVP_PKEY *key)
{
	/*
	 * Match the hash to the curve's strength (RFC 5480 section 4);
	 * SHA-256 for RSA as every current relying party expects.
	 */
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
		switch (key_ec_curve_nid(key)) {
		case NID_secp384r1:
			return EVP_sha384();
		case NID_secp521r1:
			return EVP_sha512();
		default:
			break;
		}
	}
	return EVP_sha256();
}

/*
 * The iteration count for the keys this process saves: KEY_PBKDF2_ITER, or
 * what KEY_KDF_ITER_ENV says.  A test suite starts hundreds of processes
 * over throwaway keys, each loading several of them; under AddressSanitizer
 * PBKDF2 at the default count was most of its run time.  A lower count
 * protects the key files it writes that much less, so every such save is
 * logged.  Loading takes whatever count the file holds (key_check_pbe).
 */
static int
key_kdf_iterations(const char *path, int *iter, struct error *err)
{
	const char *v = getenv(KEY_KDF_ITER_ENV);
	char *end;
	long n;

	*iter = KEY_PBKDF2_ITER;
	if (v == NULL || *v == '\0')
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	/* Digits only: strtol() would take " 1000" and "+1000" too. */
	if (*v < '0' || *v > '9' || errno != 0 || *end != '\0' ||
	    n < KEY_PBKDF2_ITER_MIN || n > KEY_PBKDF2_ITER_MAX) {
		error_set(err,
		          "%s: %s=%s is not a PBKDF2 iteration count from %d "
		          "to %d; key not saved",
		          path, KEY_KDF_ITER_ENV, v, KEY_PBKDF2_ITER_MIN,
		          KEY_PBKDF2_ITER_MAX);
		return -1;
	}
	*iter = (int)n;
	if (n < KEY_PBKDF2_ITER)
		log_warn(LOG_MAIN,
		         "%s: encrypted with %ld PBKDF2 iterations (%s), "
		         "fewer than the default %d: for a test lab, not for "
		         "keys that matter",
		         path, n, KEY_KDF_ITER_ENV, KEY_PBKDF2_ITER);
	return 0;
}

int
key_save(const EVP_PKEY *key, const char *path, const char *passphrase,
         size_t passlen, struct error *err)
{
	PKCS8_PRIV_KEY_INFO *p8inf = NULL;
	X509_ALGOR *pbe = NULL;
	X509_SIG *p8 = NULL;
	BIO *bio = NULL;
	BUF_MEM *mem;
	struct error lerr;
	int rc = -1, iter;

	if (passphrase == NULL || passlen < PASSPHRASE_MIN ||
	    passlen > PASSPHRASE_MAX) {
		error_set(err,
		          "%s: refusing to save a key with a passphrase "
		          "of %zu bytes (%d to %d required)",
		          path, passphrase == NULL ? 0 : passlen,
		          PASSPHRASE_MIN, PASSPHRASE_MAX);
		return -1;
	}
	if (key_kdf_iterations(path, &iter, err) == -1)
		return -1;
	if ((p8inf = EVP_PKEY2PKCS8(key)) == NULL) {
		log_crypto(LOG_MAIN, err, "EVP_PKEY2PKCS8", path);
		goto out;
	}
	/* Random salt and IV; PBES2 per RFC 8018 section 6.2. */
	if ((pbe = PKCS5_pbe2_set_iv_ex(EVP_aes_256_cbc(), iter,
	                                NULL, KEY_SALT_LEN, NULL,
	                                NID_hmacWithSHA256, NULL)) == NULL) {
		log_crypto(LOG_MAIN, err, "PKCS5_pbe2_set_iv_ex", path);
		goto out;
	}
	if ((p8 = PKCS8_set0_pbe_ex(passphrase, (int)passlen, p8inf, pbe, NULL,
	                            NULL)) == NULL) {
		log_crypto(LOG_MAIN, err, "PKCS8_set0_pbe_ex", path);
		goto out;
	}
	pbe = NULL; /* owned by p8 now */
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PKCS8(bio, p8)) {
		log_crypto(LOG_MAIN, err, "PEM_write_bio_PKCS8", path);
		goto out;
	}
	BIO_get_mem_ptr(bio, &mem);
	if (file_write_atomic(path, mem->data, mem->length, 0600, &lerr) ==
	    -1) {
		log_error(LOG_MAIN, "saving key: %s", lerr.msg);
		error_set(err, "%s", lerr.msg);
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	X509_SIG_free(p8);
	X509_ALGOR_free(pbe);
	PKCS8_PRIV_KEY_INFO_free(p8inf);
	return rc;
}

/*
 * Look at the PBES2 parameters before running PBKDF2: refuse the legacy
 * PKCS#5 v1 / PKCS#12 schemes (DES, RC2, 3DES with MD5 or SHA-1) and an
 * iteration count that would stall the start.
 */
static int
key_check_pbe(const X509_SIG *p8, const char *path, struct error *err)
{
	const X509_ALGOR *alg;
	const ASN1_OBJECT *oid;
	const void *pval;
	int ptype;
	PBE2PARAM *pbe2 = NULL;
	PBKDF2PARAM *kdf = NULL;
	long iter;
	int rc = -1;

	X509_SIG_get0(p8, &alg, NULL);
	X509_ALGOR_get0(&oid, &ptype, &pval, alg);
	if (OBJ_obj2nid(oid) != NID_pbes2) {
		error_set(err,
		          "%s: key is encrypted with %s, not PBES2: "
		          "re-encrypt it",
		          path, OBJ_nid2sn(OBJ_obj2nid(oid)));
		return -1;
	}
	if (ptype != V_ASN1_SEQUENCE ||
	    (pbe2 = ASN1_item_unpack(pval, ASN1_ITEM_rptr(PBE2PARAM))) ==
	        NULL) {
		ERR_clear_error();
		error_set(err, "corrupt key file %s: bad PBES2 parameters",
		          path);
		goto out;
	}
	X509_ALGOR_get0(&oid, &ptype, &pval, pbe2->keyfunc);
	if (OBJ_obj2nid(oid) != NID_id_pbkdf2) {
		error_set(err, "%s: key derivation %s is not PBKDF2", path,
		          OBJ_nid2sn(OBJ_obj2nid(oid)));
		goto out;
	}
	if (ptype != V_ASN1_SEQUENCE ||
	    (kdf = ASN1_item_unpack(pval, ASN1_ITEM_rptr(PBKDF2PARAM))) ==
	        NULL) {
		ERR_clear_error();
		error_set(err, "corrupt key file %s: bad PBKDF2 parameters",
		          path);
		goto out;
	}
	iter = ASN1_INTEGER_get(kdf->iter);
	if (iter < 1 || iter > KEY_PBKDF2_ITER_MAX) {
		error_set(err,
		          "%s: PBKDF2 iteration count %ld is outside 1 to "
		          "%d",
		          path, iter, KEY_PBKDF2_ITER_MAX);
		goto out;
	}
	rc = 0;
out:
	PBKDF2PARAM_free(kdf);
	PBE2PARAM_free(pbe2);
	return rc;
}

EVP_PKEY *
key_load(const char *path, const char *passphrase, size_t passlen,
         struct error *err)
{
	PKCS8_PRIV_KEY_INFO *p8inf = NULL;
	X509_SIG *p8 = NULL;
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *der = NULL;
	const unsigned char *p;
	uint8_t *buf;
	size_t len;
	long derlen = 0;
	struct error lerr = {{0}}, kerr = {{0}};
	int logged = 0; /* log_crypto() already wrote the line */

	if ((buf = file_read(path, KEY_FILE_MAX, &len, &lerr)) == NULL)
		goto out;
	if (passphrase == NULL || passlen == 0 || passlen > PASSPHRASE_MAX) {
		error_set(&lerr, "%s: no usable passphrase given", path);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		log_crypto(LOG_MAIN, &lerr, "BIO_new_mem_buf", path);
		logged = 1;
		goto out;
	}
	if (!PEM_read_bio(bio, &name, &header, &der, &derlen)) {
		ERR_clear_error();
		error_set(&lerr,
		          "corrupt key file %s: no complete PEM block "
		          "(truncated or not a key)",
		          path);
		goto out;
	}
	/* Keys must be encrypted at rest (DESIGN.md section 4). */
	if (strcmp(name, PEM_STRING_PKCS8) != 0) {
		if (strstr(name, "PRIVATE KEY") != NULL)
			error_set(&lerr,
			          "%s: unencrypted private key (%s) "
			          "refused: keys must be encrypted at rest",
			          path, name);
		else
			error_set(&lerr,
			          "%s: holds a %s, not an encrypted "
			          "private key",
			          path, name);
		goto out;
	}
	p = der;
	if ((p8 = d2i_X509_SIG(NULL, &p, derlen)) == NULL ||
	    p != der + derlen) {
		ERR_clear_error();
		error_set(&lerr, "corrupt key file %s: bad encrypted PKCS#8",
		          path);
		goto out;
	}
	if (key_check_pbe(p8, path, &lerr) == -1)
		goto out;
	/*
	 * A wrong passphrase shows as bad CBC padding or, one time in 256,
	 * as a PrivateKeyInfo that does not decode; either way the same
	 * message, and no key is returned.
	 */
	if ((p8inf = PKCS8_decrypt(p8, passphrase, (int)passlen)) == NULL ||
	    (key = EVP_PKCS82PKEY(p8inf)) == NULL) {
		log_crypto(LOG_MAIN, NULL, "PKCS8_decrypt", path);
		logged = 1;
		error_set(&lerr, "wrong passphrase or corrupt key file %s",
		          path);
		goto out;
	}
	/*
	 * A weak key on disk was not made by us: say so, do not use it.  The
	 * X25519 CURVE key of the messaging layer (curve.h) is no
	 * certificate key and has no strength to check.
	 */
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_X25519 &&
	    key_check_strength(key, &kerr) == -1) {
		error_set(&lerr, "%s: %s", path, kerr.msg);
		EVP_PKEY_free(key);
		key = NULL;
		goto out;
	}
out:
	if (key == NULL) {
		if (!logged)
			log_error(LOG_MAIN, "loading key: %s", lerr.msg);
		error_set(err, "%s", lerr.msg);
	}
	PKCS8_PRIV_KEY_INFO_free(p8inf);
	X509_SIG_free(p8);
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	free(buf);
	return key;
}

/* Strip one trailing newline ("\n" or "\r\n") that editors and echo add. */
static size_t
passphrase_strip_newline(const char *s, size_t len)
{
	if (len > 0 && s[len - 1] == '\n') {
		len--;
		if (len > 0 && s[len - 1] == '\r')
			len--;
	}
	return len;
}

/* Read a passphrase file that only its owner may read. */
static char *
passphrase_read_file(const char *file, size_t *lenp, struct error *err)
{
	/* Room for the longest passphrase, a CRLF and one byte to see more. */
	enum { READ_MAX = PASSPHRASE_MAX + 3 };
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		error_set(err, "passphrase file %s: %s", file, strerror(errno));
		return NULL;
	}
	/* fstat the open file, so a swap after the check changes nothing. */
	if (fstat(fd, &st) == -1) {
		error_set(err, "passphrase file %s: %s", file, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		error_set(err, "passphrase file %s: not a regular file", file);
		goto out;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		error_set(err,
		          "passphrase file %s: mode %04o gives access to "
		          "group or others; chmod 600 it",
		          file, (unsigned int)(st.st_mode & 07777));
		goto out;
	}
	if ((buf = malloc(READ_MAX + 1)) == NULL) {
		error_set(err, "passphrase file %s: out of memory", file);
		goto out;
	}
	while (got < READ_MAX) {
		n = read(fd, buf + got, READ_MAX - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			error_set(err, "passphrase file %s: %s", file,
			          strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*lenp = got;
	goto out;
fail:
	secure_zero(buf, READ_MAX + 1);
	free(buf);
	buf = NULL;
out:
	close(fd);
	return buf;
}

char *
passphrase_load(const char *file, const char *env, size_t *len,
                struct error *err)
{
	char source[PATH_MAX + 32];
	char *raw = NULL, *pass = NULL;
	const char *val;
	size_t rawlen = 0, plen;

	if (file != NULL) {
		snprintf(source, sizeof(source), "passphrase file %s", file);
		if ((raw = passphrase_read_file(file, &rawlen, err)) == NULL)
			return NULL;
		val = raw;
		plen = passphrase_strip_newline(raw, rawlen);
	} else if (env != NULL) {
		snprintf(source, sizeof(source), "environment variable %s",
		         env);
		if ((val = getenv(env)) == NULL || *val == '\0') {
			error_set(err,
			          "no passphrase: %s is not set and no "
			          "passphrase file was given",
			          env);
			return NULL;
		}
		plen = strlen(val);
	} else {
		error_set(err, "no passphrase: neither a passphrase file nor "
		               "an environment variable was given");
		return NULL;
	}
	if (memchr(val, '\0', plen) != NULL) {
		error_set(err, "%s: passphrase contains a NUL byte", source);
		goto out;
	}
	if (plen < PASSPHRASE_MIN) {
		error_set(err,
		          "%s: passphrase of %zu bytes is shorter than "
		          "the minimum of %d",
		          source, plen, PASSPHRASE_MIN);
		goto out;
	}
	if (plen > PASSPHRASE_MAX) {
		error_set(err,
		          "%s: passphrase is longer than the maximum of "
		          "%d bytes",
		          source, PASSPHRASE_MAX);
		goto out;
	}
	if ((pass = malloc(plen + 1)) == NULL) {
		error_set(err, "%s: out of memory", source);
		goto out;
	}
	memcpy(pass, val, plen);
	pass[plen] = '\0';
	*len = plen;
out:
	if (raw != NULL) {
		secure_zero(raw, rawlen);
		free(raw);
	}
	return pass;
}

void
passphrase_free(char *pass, size_t len)
{
	if (pass == NULL)
		return;
	secure_zero(pass, len);
	free(pass);
}

int
key_id(const EVP_PKEY *key, unsigned char out[KEY_ID_LEN], struct error *err)
{
	X509_PUBKEY *xpk = NULL;
	unsigned char *spki = NULL;
	const unsigned char *p, *pk;
	unsigned int mdlen = 0;
	int spkilen, pklen, rc = -1;

	/* Encode the SubjectPublicKeyInfo exactly as a certificate holds it. */
	if ((spkilen = i2d_PUBKEY(key, &spki)) <= 0) {
		log_crypto(LOG_MAIN, err, "i2d_PUBKEY", "key id");
		spki = NULL;
		goto out;
	}
	p = spki;
	if ((xpk = d2i_X509_PUBKEY(NULL, &p, spkilen)) == NULL ||
	    !X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, xpk)) {
		log_crypto(LOG_MAIN, err, "d2i_X509_PUBKEY", "key id");
		goto out;
	}
	/* RFC 5280 section 4.2.1.2 (1): the BIT STRING value only. */
	if (!EVP_Digest(pk, (size_t)pklen, out, &mdlen, EVP_sha1(), NULL) ||
	    mdlen != KEY_ID_LEN) {
		log_crypto(LOG_MAIN, err, "EVP_Digest", "key id");
		goto out;
	}
	rc = 0;
out:
	X509_PUBKEY_free(xpk);
	OPENSSL_free(spki);
	return rc;
}

int
key_handover_copy(const char *from, const char *pass, size_t passlen,
                  const char *to, const struct secret *handover,
                  struct error *err)
{
	EVP_PKEY *key;
	int rc;

	if (handover == NULL || handover->buf == NULL) {
		error_set(err, "%s: no hand-over secret", to);
		return -1;
	}
	if ((key = key_load(from, pass, passlen, err)) == NULL)
		return -1;
	rc = key_save(key, to, handover->buf, handover->len, err);
	EVP_PKEY_free(key);
	return rc;
}

EVP_PKEY *
key_handover_take(const char *path, const struct secret *handover,
                  struct error *err)
{
	EVP_PKEY *key;

	if (handover == NULL || handover->buf == NULL) {
		error_set(err, "no hand-over secret held (a service started "
		               "outside the supervisor)");
		return NULL;
	}
	if (!file_exists(path)) {
		error_set(err, "%s: no hand-over copy", path);
		return NULL;
	}
	if ((key = key_load(path, handover->buf, handover->len, err)) == NULL)
		return NULL;
	/* Read once: the copy has no use after this. */
	if (unlink(path) == -1)
		log_warn(LOG_MAIN, "%s: %s", path, strerror(errno));
	return key;
}
