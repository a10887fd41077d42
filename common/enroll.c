/*
 * enroll: enrollment users and certificate templates (enroll.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "cert.h"
#include "enroll.h"
#include "keys.h"
#include "log.h"
#include "util.h"

/* PBKDF2-HMAC-SHA256 for enrollment users. */
#define USER_ITERATIONS     100000
#define USER_ITERATIONS_MIN 1000
#define USER_ITERATIONS_MAX 10000000
#define USER_SALT_LEN       16
#define USER_HASH_LEN       32
#define USER_HASH_SCHEME    "pbkdf2-sha256"
/* Longest validity a template may give: as the CA service allows. */
#define TEMPLATE_VALIDITY_MAX ((long long)3652 * 24 * 3600)

/* --- enrollment users --- */


static int
user_derive(const char *password, const uint8_t *salt, size_t saltlen,
            int iterations, uint8_t out[USER_HASH_LEN])
{
	return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt,
	                         (int)saltlen, iterations, EVP_sha256(),
	                         USER_HASH_LEN, out) == 1
	           ? 0
	           : -1;
}

char *
enroll_user_hash(const char *password, struct error *err)
{
	uint8_t salt[USER_SALT_LEN], hash[USER_HASH_LEN];
	char shex[2 * USER_SALT_LEN + 1], hhex[2 * USER_HASH_LEN + 1], *rec;

	if (RAND_bytes(salt, sizeof(salt)) != 1 ||
	    user_derive(password, salt, sizeof(salt), USER_ITERATIONS, hash) ==
	        -1) {
		log_crypto(LOG_MAIN, err, "PKCS5_PBKDF2_HMAC", NULL);
		return NULL;
	}
	hex_encode(salt, sizeof(salt), shex);
	hex_encode(hash, sizeof(hash), hhex);
	secure_zero(hash, sizeof(hash));
	if ((rec = malloc(ENROLL_RECORD_MAX)) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	snprintf(rec, ENROLL_RECORD_MAX, "%s$%d$%s$%s", USER_HASH_SCHEME,
	         USER_ITERATIONS, shex, hhex);
	return rec;
}

/* Split a record into its iterations, salt and hash; -1 when malformed. */
static int
user_record_parse(const char *record, long *iterations,
                  uint8_t salt[USER_SALT_LEN], uint8_t hash[USER_HASH_LEN])
{
	char copy[ENROLL_RECORD_MAX], *p = copy, *scheme, *iter, *shex, *hhex;
	char *end;
	long n;

	if (strlen(record) >= sizeof(copy))
		return -1;
	snprintf(copy, sizeof(copy), "%s", record);
	scheme = strsep(&p, "$");
	iter = strsep(&p, "$");
	shex = strsep(&p, "$");
	hhex = p;
	if (iter == NULL || shex == NULL || hhex == NULL ||
	    strcmp(scheme, USER_HASH_SCHEME) != 0)
		return -1;
	errno = 0;
	n = strtol(iter, &end, 10);
	if (errno != 0 || end == iter || *end != '\0' ||
	    n < USER_ITERATIONS_MIN || n > USER_ITERATIONS_MAX)
		return -1;
	if (strlen(shex) != 2 * USER_SALT_LEN ||
	    strlen(hhex) != 2 * USER_HASH_LEN ||
	    hex_decode(shex, salt, USER_SALT_LEN) != USER_SALT_LEN ||
	    hex_decode(hhex, hash, USER_HASH_LEN) != USER_HASH_LEN)
		return -1;
	*iterations = n;
	return 0;
}

int
enroll_user_record_check(const char *record, struct error *err)
{
	uint8_t salt[USER_SALT_LEN], hash[USER_HASH_LEN];
	long n;

	if (user_record_parse(record, &n, salt, hash) == -1) {
		error_set(err, "not a %s user record", USER_HASH_SCHEME);
		return -1;
	}
	return 0;
}

int
enroll_user_verify(const char *record, const char *password)
{
	uint8_t salt[USER_SALT_LEN], want[USER_HASH_LEN], got[USER_HASH_LEN];
	long n;
	int ok;

	if (user_record_parse(record, &n, salt, want) == -1) {
		log_warn(LOG_EST, "an enrollment user record is malformed");
		enroll_user_verify_dummy(password);
		return 0;
	}
	if (user_derive(password, salt, sizeof(salt), (int)n, got) == -1)
		return 0;
	ok = CRYPTO_memcmp(got, want, sizeof(got)) == 0;
	secure_zero(got, sizeof(got));
	return ok;
}

void
enroll_user_verify_dummy(const char *password)
{
	static const uint8_t salt[USER_SALT_LEN];
	uint8_t out[USER_HASH_LEN];

	(void)user_derive(password, salt, sizeof(salt), USER_ITERATIONS, out);
	secure_zero(out, sizeof(out));
}


/* A user name Basic can carry (RFC 7617: no ':') and a log can show. */
int
enroll_user_name_check(const char *name, struct error *err)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > EST_USER_MAX) {
		error_set(err, "a user name has 1 to %d characters",
		          EST_USER_MAX);
		return -1;
	}
	for (i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-' || ch == '@')) {
			error_set(err,
			          "user name '%s': letters, digits, '.', '_', "
			          "'-' and '@' only",
			          name);
			return -1;
		}
	}
	return 0;
}

/* The password: ISELAB_USER_PASSWORD, else one line of stdin. */
char *
enroll_user_password(struct error *err)
{
	char buf[EST_PASSWORD_MAX + 2], *p, *nl;
	const char *env = getenv(ENROLL_PASSWORD_ENV);
	size_t n;

	if (env != NULL)
		snprintf(buf, sizeof(buf), "%s", env);
	else if (fgets(buf, sizeof(buf), stdin) == NULL) {
		error_set(err, "no password on stdin (or in %s)",
		          ENROLL_PASSWORD_ENV);
		return NULL;
	}
	if ((nl = strchr(buf, '\n')) != NULL)
		*nl = '\0';
	n = strlen(buf);
	if (nl != NULL && n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	if (n < ENROLL_PASSWORD_MIN || n > EST_PASSWORD_MAX) {
		secure_zero(buf, sizeof(buf));
		error_set(err, "a password has %d to %d characters",
		          ENROLL_PASSWORD_MIN, EST_PASSWORD_MAX);
		return NULL;
	}
	p = strdup(buf);
	secure_zero(buf, sizeof(buf));
	if (p == NULL)
		error_set(err, "out of memory");
	return p;
}


/* The product's EAP authentication template (clientAuth, 730 days). */
void
enroll_template_default(struct est_template *t)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", ENROLL_TEMPLATE_DEFAULT);
	t->profile = CERT_PROFILE_TLS_CLIENT;
	t->validity = (time_t)ENROLL_TEMPLATE_DEFAULT_DAYS * 24 * 3600;
	t->key_types = EST_KEY_BIT(KEY_EC_P256) | EST_KEY_BIT(KEY_EC_P384) |
	               EST_KEY_BIT(KEY_RSA_2048) | EST_KEY_BIT(KEY_RSA_3072) |
	               EST_KEY_BIT(KEY_RSA_4096);
	t->keygen_type = KEY_EC_P256;
	t->pop = EST_POP_OPTIONAL;
	t->require_cn = true;
}

/* "730d", "12h", "90m", "3600s" or plain seconds. */
static int
parse_validity(const char *v, time_t *out)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || end == v || n <= 0)
		return -1;
	switch (*end) {
	case 'd':
		n *= 86400;
		end++;
		break;
	case 'h':
		n *= 3600;
		end++;
		break;
	case 'm':
		n *= 60;
		end++;
		break;
	case 's':
		end++;
		break;
	default:
		break;
	}
	if (*end != '\0' || n > TEMPLATE_VALIDITY_MAX)
		return -1;
	*out = (time_t)n;
	return 0;
}

static int
parse_key_types(char *v, unsigned *out)
{
	enum key_type kt;
	char *tok;

	*out = 0;
	while ((tok = strsep(&v, ", ")) != NULL) {
		if (*tok == '\0')
			continue;
		if (key_type_from_name(tok, &kt, NULL) == -1)
			return -1;
		*out |= EST_KEY_BIT(kt);
	}
	return *out != 0 ? 0 : -1;
}

/* One "key = value" line of a template record. */
static int
template_line(struct est_template *t, char *k, char *v, struct error *err)
{
	enum key_type kt;

	if (strcmp(k, "profile") == 0) {
		if (cert_profile_from_name(v, &t->profile, err) == -1 ||
		    (t->profile != CERT_PROFILE_TLS_CLIENT &&
		     t->profile != CERT_PROFILE_TLS_SERVER)) {
			error_set(err, "profile must be tls-client or "
			               "tls-server");
			return -1;
		}
	} else if (strcmp(k, "validity") == 0) {
		if (parse_validity(v, &t->validity) == -1) {
			error_set(err, "bad validity '%.32s'", v);
			return -1;
		}
	} else if (strcmp(k, "key-types") == 0) {
		if (parse_key_types(v, &t->key_types) == -1) {
			error_set(err, "bad key-types");
			return -1;
		}
	} else if (strcmp(k, "keygen") == 0) {
		if (key_type_from_name(v, &kt, err) == -1)
			return -1;
		t->keygen_type = kt;
	} else if (strcmp(k, "pop") == 0) {
		if (strcmp(v, "off") == 0)
			t->pop = EST_POP_OFF;
		else if (strcmp(v, "optional") == 0)
			t->pop = EST_POP_OPTIONAL;
		else if (strcmp(v, "required") == 0)
			t->pop = EST_POP_REQUIRED;
		else {
			error_set(err, "pop must be off, optional or required");
			return -1;
		}
	} else if (strcmp(k, "require-cn") == 0) {
		if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0)
			t->require_cn = true;
		else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0)
			t->require_cn = false;
		else {
			error_set(err, "require-cn must be yes or no");
			return -1;
		}
	} else {
		error_set(err, "unknown template key '%.32s'", k);
		return -1;
	}
	return 0;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/*
 * A template record: "key = value" lines over the default template
 * (docs/est.md).  Any bad line refuses the whole template.
 */
int
enroll_template_parse(const char *label, char *text, struct est_template *t,
               struct error *err)
{
	char *line, *eq;

	enroll_template_default(t);
	snprintf(t->name, sizeof(t->name), "%s", label);
	while ((line = strsep(&text, "\n")) != NULL) {
		line = trim(line);
		if (*line == '\0' || *line == '#')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			error_set(err, "line without '='");
			return -1;
		}
		*eq = '\0';
		if (template_line(t, trim(line), trim(eq + 1), err) == -1)
			return -1;
	}
	if (!(t->key_types & EST_KEY_BIT(t->keygen_type))) {
		error_set(err, "keygen type is not among key-types");
		return -1;
	}
	return 0;
}


int
enroll_label_check(const char *label, struct error *err)
{
	size_t i, n = strlen(label);

	if (n == 0 || n > EST_LABEL_MAX) {
		error_set(err, "a label has 1 to %d characters", EST_LABEL_MAX);
		return -1;
	}
	for (i = 0; i < n; i++) {
		char c = label[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.') ||
		    (i == 0 && c == '.')) {
			error_set(err,
			          "label '%s': letters, digits, '-', '_' and "
			          "'.' (not first) only",
			          label);
			return -1;
		}
	}
	if (strcmp(label, "default") == 0 ||
	    strcmp(label, ENROLL_TEMPLATE_DEFAULT) == 0) {
		error_set(err, "label '%s' names the built-in template", label);
		return -1;
	}
	return 0;
}

static const char *
pop_name(enum est_pop pop)
{
	switch (pop) {
	case EST_POP_OFF:
		return "off";
	case EST_POP_REQUIRED:
		return "required";
	case EST_POP_OPTIONAL:
		break;
	}
	return "optional";
}

int
enroll_template_format(const struct est_template *t, char *buf, size_t len,
                       struct error *err)
{
	char types[128] = "";
	size_t used = 0;
	int k, n;

	for (k = 0; k < KEY_TYPE_COUNT; k++) {
		if (!(t->key_types & EST_KEY_BIT(k)))
			continue;
		n = snprintf(types + used, sizeof(types) - used, "%s%s",
		             used > 0 ? "," : "",
		             key_type_name((enum key_type)k));
		if (n < 0 || (size_t)n >= sizeof(types) - used)
			break;
		used += (size_t)n;
	}
	n = snprintf(buf, len,
	             "profile = %s\nvalidity = %llds\nkey-types = %s\n"
	             "keygen = %s\npop = %s\nrequire-cn = %s\n",
	             cert_profile_name(t->profile), (long long)t->validity,
	             types, key_type_name(t->keygen_type), pop_name(t->pop),
	             t->require_cn ? "yes" : "no");
	if (n < 0 || (size_t)n >= len) {
		error_set(err, "template text too long");
		return -1;
	}
	return 0;
}
