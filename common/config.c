/*
 * config: a node's settings from defaults, an INI file, the environment and
 * flags, with a precedence that does not depend on load order.
 *
 * Every source is parsed into a pending set first and committed only when
 * the whole source is good, so a refused file or environment changes
 * nothing.  Committing compares ranks: a value replaces the current one only
 * if its source ranks the same or higher (a later --set beats an earlier
 * one; the environment never beats a flag).  The INI syntax is libinih's;
 * we feed it lines through our own reader so that we know the line number
 * of every key, refuse over-long lines instead of letting inih split them,
 * and turn off inih's indented continuation lines.  See config.h.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "util.h"

extern char **environ;

/* How a secret is shown by config_dump(). */
#define CONFIG_MASK "********"
/* Longest piece of a value quoted back in an error message. */
#define CONFIG_QUOTE_MAX 64
/* Largest edit distance for which we suggest "did you mean". */
#define CONFIG_SUGGEST_DISTANCE 2
/* Longest host name label (RFC 1035 section 2.3.4). */
#define CONFIG_LABEL_MAX 63
/* Longest section name: inih keeps MAX_SECTION (50) bytes with the NUL. */
#define CONFIG_SECTION_MAX 49
/* Widest value column of config_dump(); longer values just push on. */
#define CONFIG_DUMP_VALUE_WIDTH 32

#if CONFIG_LINE_MAX + 3 > INI_MAX_LINE
#error "CONFIG_LINE_MAX does not fit inih's line buffer (INI_MAX_LINE)"
#endif

/* One key's current value.  text NULL means unset. */
struct config_value {
	char *text;  /* as given; canonical for bool and enum */
	int64_t num; /* int, bool, enum index, duration (s), size (bytes) */
	struct config_address addr; /* CONFIG_ADDRESS */
	enum config_source rank;    /* the source, which is its precedence */
	char *origin; /* "default", "file /d/pan.conf line 12", ... */
};

struct config {
	const struct config_key *keys; /* the role's table, not ours */
	size_t nkeys;
	struct config_value *vals; /* nkeys values, same order as keys */
};

/*
 * Values parsed from one source and not yet committed.  Each key appears
 * at most once per source: the file refuses a key given twice and the
 * environment, like getenv(3), takes the first of a variable given twice.
 */
struct config_pending {
	struct config_value *vals; /* nkeys */
	unsigned *line;            /* nkeys; 0 = not given, else line (or 1) */
};

static const char *const type_names[] = {
    [CONFIG_STRING] = "string",     [CONFIG_INT] = "int",
    [CONFIG_BOOL] = "bool",         [CONFIG_ENUM] = "enum",
    [CONFIG_DURATION] = "duration", [CONFIG_SIZE] = "size",
    [CONFIG_ADDRESS] = "address",
};

const char *
config_type_name(enum config_type type)
{
	if ((size_t)type >= ARRAY_SIZE(type_names))
		return "unknown";
	return type_names[type];
}

static void
value_clear(struct config_value *v, bool secret)
{
	if (v->text != NULL) {
		if (secret)
			secure_zero(v->text, strlen(v->text));
		free(v->text);
	}
	free(v->origin);
	memset(v, 0, sizeof(*v));
}

static void
pending_free(const struct config *cfg, struct config_pending *p)
{
	size_t i;

	if (p->vals != NULL) {
		for (i = 0; i < cfg->nkeys; i++)
			value_clear(&p->vals[i],
			            cfg->keys[i].flags & CONFIG_F_SECRET);
	}
	free(p->vals);
	free(p->line);
	p->vals = NULL;
	p->line = NULL;
}

static int
pending_init(const struct config *cfg, struct config_pending *p,
             struct error *err)
{
	p->vals = calloc(cfg->nkeys, sizeof(*p->vals));
	p->line = calloc(cfg->nkeys, sizeof(*p->line));
	if (p->vals == NULL || p->line == NULL) {
		pending_free(cfg, p);
		error_set(err, "out of memory");
		return -1;
	}
	return 0;
}

/*
 * Move pending values in.  Cannot fail, which is what makes a load
 * all-or-nothing: every check has been done before we get here.
 */
static void
pending_commit(struct config *cfg, struct config_pending *p)
{
	size_t i;
	bool secret;

	for (i = 0; i < cfg->nkeys; i++) {
		if (p->line[i] == 0)
			continue;
		secret = cfg->keys[i].flags & CONFIG_F_SECRET;
		if (p->vals[i].rank < cfg->vals[i].rank) {
			/* A higher source already set it: precedence holds. */
			value_clear(&p->vals[i], secret);
			continue;
		}
		value_clear(&cfg->vals[i], secret);
		cfg->vals[i] = p->vals[i];
		memset(&p->vals[i], 0, sizeof(p->vals[i]));
	}
	pending_free(cfg, p);
}

static const struct config_key *
key_find(const struct config *cfg, const char *name, size_t *idx)
{
	size_t i;

	for (i = 0; i < cfg->nkeys; i++) {
		if (strcmp(cfg->keys[i].name, name) == 0) {
			if (idx != NULL)
				*idx = i;
			return &cfg->keys[i];
		}
	}
	return NULL;
}

/* The key name as an environment suffix: est.data-dir -> EST_DATA_DIR. */
static void
env_form(const char *name, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; name[i] != '\0' && i + 1 < outlen; i++) {
		if (name[i] == '.' || name[i] == '-')
			out[i] = '_';
		else
			out[i] = (char)toupper((unsigned char)name[i]);
	}
	out[i] = '\0';
}

/* Levenshtein distance, or SIZE_MAX for strings too long to be keys. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t row[CONFIG_NAME_MAX + 1];
	size_t la = strlen(a), lb = strlen(b), i, j, diag, up, best;

	if (la > CONFIG_NAME_MAX || lb > CONFIG_NAME_MAX)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			up = row[j];
			best = diag + (a[i - 1] != b[j - 1]);
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			if (up + 1 < best)
				best = up + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/*
 * The key closest to a mistyped name, compared in environment form when
 * env is true (so ISELAB_EST_PROT finds est.port), or NULL.
 */
static const struct config_key *
key_suggest(const struct config *cfg, const char *name, bool env)
{
	const struct config_key *best = NULL;
	char form[CONFIG_NAME_MAX + 1];
	size_t i, d, bestd = SIZE_MAX;

	for (i = 0; i < cfg->nkeys; i++) {
		if (env)
			env_form(cfg->keys[i].name, form, sizeof(form));
		else
			snprintf(form, sizeof(form), "%s", cfg->keys[i].name);
		d = edit_distance(name, form);
		if (d < bestd) {
			bestd = d;
			best = &cfg->keys[i];
		}
	}
	return bestd <= CONFIG_SUGGEST_DISTANCE ? best : NULL;
}

static void
unknown_key(const struct config *cfg, const char *name, struct error *err)
{
	const struct config_key *near = key_suggest(cfg, name, false);

	if (near != NULL)
		error_set(err, "unknown key '%s' (did you mean '%s'?)", name,
		          near->name);
	else
		error_set(err, "unknown key '%s'", name);
}

/* The value as quoted in a message: never a secret, never a page of it. */
static void
quote(const struct config_key *k, const char *text, char *out, size_t outlen)
{
	if (k->flags & CONFIG_F_SECRET)
		snprintf(out, outlen, "the value");
	else if (strlen(text) > CONFIG_QUOTE_MAX)
		snprintf(out, outlen, "'%.*s...'", CONFIG_QUOTE_MAX, text);
	else
		snprintf(out, outlen, "'%s'", text);
}

/* Both bounds of a key; 0, 0 in the table means 0..INT64_MAX. */
static void
key_range(const struct config_key *k, int64_t *min, int64_t *max)
{
	*min = k->min;
	*max = k->max;
	if (k->min == 0 && k->max == 0)
		*max = INT64_MAX;
}

/* A run of decimal digits with an optional '-': strict, no spaces. */
static int
parse_number(const char *s, const char **end, int64_t *out)
{
	const char *p = s;
	long long v;
	char *e;

	if (*p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return -1;
	errno = 0;
	v = strtoll(s, &e, 10);
	if (errno == ERANGE)
		return -1;
	*end = e;
	*out = v;
	return 0;
}

/* 90 -> "90s", 300 -> "5m", 86400 -> "1d": bounds as a user writes them. */
static void
duration_format(int64_t s, char *out, size_t outlen)
{
	if (s != 0 && s % 86400 == 0)
		snprintf(out, outlen, "%" PRId64 "d", s / 86400);
	else if (s != 0 && s % 3600 == 0)
		snprintf(out, outlen, "%" PRId64 "h", s / 3600);
	else if (s != 0 && s % 60 == 0)
		snprintf(out, outlen, "%" PRId64 "m", s / 60);
	else
		snprintf(out, outlen, "%" PRId64 "s", s);
}

static void
size_format(int64_t b, char *out, size_t outlen)
{
	if (b != 0 && b % (1024 * 1024 * 1024) == 0)
		snprintf(out, outlen, "%" PRId64 "G", b / (1024 * 1024 * 1024));
	else if (b != 0 && b % (1024 * 1024) == 0)
		snprintf(out, outlen, "%" PRId64 "M", b / (1024 * 1024));
	else if (b != 0 && b % 1024 == 0)
		snprintf(out, outlen, "%" PRId64 "k", b / 1024);
	else
		snprintf(out, outlen, "%" PRId64, b);
}

static int
parse_int(const struct config_key *k, const char *text, const char *q,
          int64_t *out, struct error *err)
{
	const char *end;
	int64_t v, min, max;

	key_range(k, &min, &max);
	if (parse_number(text, &end, &v) == -1 || *end != '\0' || v < min ||
	    v > max) {
		error_set(err,
		          "%s: %s is not a number from %" PRId64 " to %" PRId64,
		          k->name, q, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int
parse_bool(const struct config_key *k, const char *text, const char *q,
           int64_t *out, struct error *err)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	error_set(err,
	          "%s: %s is not a boolean (true/false, yes/no, on/off, "
	          "1/0)",
	          k->name, q);
	return -1;
}

static int
parse_enum(const struct config_key *k, const char *text, const char *q,
           int64_t *out, struct error *err)
{
	char list[ERROR_MAX / 2];
	size_t i, used = 0;

	for (i = 0; k->choices[i] != NULL; i++) {
		if (strcasecmp(text, k->choices[i]) == 0) {
			*out = (int64_t)i;
			return 0;
		}
	}
	list[0] = '\0';
	for (i = 0; k->choices[i] != NULL && used < sizeof(list); i++)
		used += (size_t)snprintf(list + used, sizeof(list) - used,
		                         "%s%s", i ? ", " : "", k->choices[i]);
	error_set(err, "%s: %s is not one of: %s", k->name, q, list);
	return -1;
}

/* A count with an optional one-letter unit: letters[i] means mult[i]. */
static int
parse_scaled(const char *text, const char *letters, const int64_t *mult,
             int64_t *out)
{
	const char *end, *u;
	int64_t v, m = 1;

	if (*text == '-' || parse_number(text, &end, &v) == -1)
		return -1;
	if (*end != '\0') {
		if (end[1] != '\0' || (u = strchr(letters, *end)) == NULL)
			return -1;
		m = mult[u - letters];
	}
	if (v > INT64_MAX / m)
		return -1;
	*out = v * m;
	return 0;
}

static int
parse_duration(const struct config_key *k, const char *text, const char *q,
               int64_t *out, struct error *err)
{
	static const int64_t mult[] = {1, 60, 3600, 86400};
	char lo[32], hi[32];
	int64_t v, min, max;

	key_range(k, &min, &max);
	if (parse_scaled(text, "smhd", mult, &v) == 0 && v >= min && v <= max) {
		*out = v;
		return 0;
	}
	duration_format(min, lo, sizeof(lo));
	if (max == INT64_MAX)
		error_set(err,
		          "%s: %s is not a duration of at least %s "
		          "(write 30s, 5m, 1h, 2d or plain seconds)",
		          k->name, q, lo);
	else {
		duration_format(max, hi, sizeof(hi));
		error_set(err,
		          "%s: %s is not a duration from %s to %s "
		          "(write 30s, 5m, 1h, 2d or plain seconds)",
		          k->name, q, lo, hi);
	}
	return -1;
}

static int
parse_size(const struct config_key *k, const char *text, const char *q,
           int64_t *out, struct error *err)
{
	static const int64_t mult[] = {1024,
	                               1024,
	                               1024 * 1024,
	                               1024 * 1024,
	                               1024 * 1024 * 1024,
	                               1024 * 1024 * 1024};
	char lo[32], hi[32];
	int64_t v, min, max;

	key_range(k, &min, &max);
	if (parse_scaled(text, "kKmMgG", mult, &v) == 0 && v >= min &&
	    v <= max) {
		*out = v;
		return 0;
	}
	size_format(min, lo, sizeof(lo));
	if (max == INT64_MAX)
		error_set(err,
		          "%s: %s is not a size of at least %s bytes "
		          "(write 512, 64k, 1M or 1G)",
		          k->name, q, lo);
	else {
		size_format(max, hi, sizeof(hi));
		error_set(err,
		          "%s: %s is not a size from %s to %s bytes "
		          "(write 512, 64k, 1M or 1G)",
		          k->name, q, lo, hi);
	}
	return -1;
}

/* RFC 1123 section 2.1 host name: letters, digits, '-', dot-separated. */
static bool
hostname_valid(const char *h)
{
	size_t label = 0, total = 0;
	const char *p;

	for (p = h; *p != '\0'; p++, total++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-')
			return false;
		if (*p == '-' && label == 0)
			return false;
		if (++label > CONFIG_LABEL_MAX)
			return false;
	}
	return label > 0 && p[-1] != '-' && total <= CONFIG_HOST_MAX;
}

static int
parse_address(const struct config_key *k, const char *text, const char *q,
              struct config_address *out, struct error *err)
{
	static const struct config_key port_key = {
	    .name = "port", .min = 1, .max = 65535};
	char host[CONFIG_HOST_MAX + 1];
	const char *colon, *close;
	unsigned char bin[16];
	struct error perr;
	int64_t port;
	size_t hlen, i;
	bool digits = true;

	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		if ((close = strchr(text, ']')) == NULL) {
			error_set(err,
			          "%s: %s is not a listen address: no "
			          "']' after the IPv6 address",
			          k->name, q);
			return -1;
		}
		if (close[1] != ':') {
			error_set(err,
			          "%s: %s is not a listen address: "
			          "missing ':port' after ']'",
			          k->name, q);
			return -1;
		}
		colon = close + 1;
		hlen = (size_t)(close - text - 1);
		if (hlen >= INET6_ADDRSTRLEN) {
			error_set(err,
			          "%s: %s is not a listen address: not "
			          "an IPv6 address in brackets",
			          k->name, q);
			return -1;
		}
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, bin) != 1) {
			error_set(err,
			          "%s: %s is not a listen address: '%s' "
			          "is not an IPv6 address",
			          k->name, q, host);
			return -1;
		}
		out->family = AF_INET6;
	} else {
		if ((colon = strrchr(text, ':')) == NULL) {
			error_set(err,
			          "%s: %s is not a listen address: "
			          "missing ':port' (write host:port)",
			          k->name, q);
			return -1;
		}
		if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
			error_set(
			    err,
			    "%s: %s is not a listen address: an "
			    "IPv6 address goes in brackets, as [::1]:8084",
			    k->name, q);
			return -1;
		}
		hlen = (size_t)(colon - text);
		if (hlen == 0) {
			error_set(
			    err,
			    "%s: %s is not a listen address: "
			    "missing host (0.0.0.0 or [::] listen on every "
			    "address)",
			    k->name, q);
			return -1;
		}
		if (hlen > CONFIG_HOST_MAX) {
			error_set(err,
			          "%s: %s is not a listen address: host "
			          "longer than %d bytes",
			          k->name, q, CONFIG_HOST_MAX);
			return -1;
		}
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		for (i = 0; i < hlen; i++)
			if (!isdigit((unsigned char)host[i]) && host[i] != '.')
				digits = false;
		if (digits) {
			/* All digits and dots: an IPv4 address or nothing. */
			if (inet_pton(AF_INET, host, bin) != 1) {
				error_set(
				    err,
				    "%s: %s is not a listen "
				    "address: '%s' is not an IPv4 address",
				    k->name, q, host);
				return -1;
			}
			out->family = AF_INET;
		} else if (!hostname_valid(host)) {
			error_set(err,
			          "%s: %s is not a listen address: '%s' "
			          "is not a host name",
			          k->name, q, host);
			return -1;
		} else
			out->family = AF_UNSPEC;
	}
	if (parse_int(&port_key, colon + 1, colon + 1, &port, &perr) == -1) {
		error_set(err,
		          "%s: %s is not a listen address: port '%s' is "
		          "not a number from 1 to 65535",
		          k->name, q, colon + 1);
		return -1;
	}
	memcpy(out->host, host, sizeof(out->host));
	out->port = (uint16_t)port;
	return 0;
}

/*
 * Parse text for key k into v (text, num, addr).  origin says where it came
 * from.  err gets "est.port: '80800' is not a number from 1 to 65535";
 * the caller prefixes the source.
 */
static int
value_parse(const struct config_key *k, const char *text,
            enum config_source rank, const char *origin, struct config_value *v,
            struct error *err)
{
	char q[CONFIG_QUOTE_MAX + 8];
	const char *canon = text;
	size_t len = strlen(text), i;

	memset(v, 0, sizeof(*v));
	if (len > CONFIG_VALUE_MAX) {
		error_set(err, "%s: the value is longer than %d bytes", k->name,
		          CONFIG_VALUE_MAX);
		return -1;
	}
	if (len == 0 &&
	    !(k->type == CONFIG_STRING && (k->flags & CONFIG_F_EMPTY_OK))) {
		error_set(err, "%s: empty value", k->name);
		return -1;
	}
	/* Values end up in logs and in `config show`: no terminal escapes. */
	for (i = 0; i < len; i++) {
		if (iscntrl((unsigned char)text[i])) {
			error_set(err,
			          "%s: the value contains a control "
			          "character",
			          k->name);
			return -1;
		}
	}
	quote(k, text, q, sizeof(q));
	switch (k->type) {
	case CONFIG_STRING:
		break;
	case CONFIG_INT:
		if (parse_int(k, text, q, &v->num, err) == -1)
			return -1;
		break;
	case CONFIG_BOOL:
		if (parse_bool(k, text, q, &v->num, err) == -1)
			return -1;
		canon = v->num ? "true" : "false";
		break;
	case CONFIG_ENUM:
		if (parse_enum(k, text, q, &v->num, err) == -1)
			return -1;
		canon = k->choices[v->num];
		break;
	case CONFIG_DURATION:
		if (parse_duration(k, text, q, &v->num, err) == -1)
			return -1;
		break;
	case CONFIG_SIZE:
		if (parse_size(k, text, q, &v->num, err) == -1)
			return -1;
		break;
	case CONFIG_ADDRESS:
		if (parse_address(k, text, q, &v->addr, err) == -1)
			return -1;
		v->num = v->addr.port;
		break;
	default:
		error_set(err, "%s: unknown type %d", k->name, (int)k->type);
		return -1;
	}
	v->text = strdup(canon);
	v->origin = strdup(origin);
	if (v->text == NULL || v->origin == NULL) {
		value_clear(v, k->flags & CONFIG_F_SECRET);
		error_set(err, "out of memory");
		return -1;
	}
	v->rank = rank;
	return 0;
}

static bool
name_valid(const char *name)
{
	size_t len = strlen(name), i;

	if (len == 0 || len > CONFIG_NAME_MAX || strchr(name, '.') == NULL)
		return false;
	if (name[0] == '.' || name[len - 1] == '.' || strstr(name, "..") ||
	    name[0] == '-')
		return false;
	if ((size_t)(strchr(name, '.') - name) > CONFIG_SECTION_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if (!islower((unsigned char)name[i]) &&
		    !isdigit((unsigned char)name[i]) && name[i] != '.' &&
		    name[i] != '-' && name[i] != '_')
			return false;
	}
	return true;
}

static int
table_check(const struct config_key *keys, size_t nkeys, struct error *err)
{
	char a[CONFIG_NAME_MAX + 1], b[CONFIG_NAME_MAX + 1];
	size_t i, j;

	for (i = 0; i < nkeys; i++) {
		const struct config_key *k = &keys[i];

		if (k->name == NULL || !name_valid(k->name)) {
			error_set(err,
			          "config table: entry %zu: bad key name "
			          "'%s'",
			          i, k->name ? k->name : "(null)");
			return -1;
		}
		if ((size_t)k->type >= ARRAY_SIZE(type_names)) {
			error_set(err, "config table: %s: unknown type",
			          k->name);
			return -1;
		}
		if (k->type == CONFIG_ENUM &&
		    (k->choices == NULL || k->choices[0] == NULL)) {
			error_set(err,
			          "config table: %s: enum without "
			          "choices",
			          k->name);
			return -1;
		}
		if (k->min > k->max) {
			error_set(err, "config table: %s: min above max",
			          k->name);
			return -1;
		}
		if (k->def == NULL && k->type != CONFIG_STRING &&
		    k->type != CONFIG_ADDRESS &&
		    !(k->flags & CONFIG_F_REQUIRED)) {
			error_set(err,
			          "config table: %s: a %s key needs a "
			          "default or CONFIG_F_REQUIRED",
			          k->name, config_type_name(k->type));
			return -1;
		}
		env_form(k->name, a, sizeof(a));
		for (j = 0; j < i; j++) {
			env_form(keys[j].name, b, sizeof(b));
			if (strcmp(a, b) == 0) {
				error_set(err,
				          "config table: %s and %s are "
				          "the same environment variable",
				          k->name, keys[j].name);
				return -1;
			}
		}
	}
	return 0;
}

struct config *
config_new(const struct config_key *keys, size_t nkeys, struct error *err)
{
	struct config *cfg;
	size_t i;

	if (table_check(keys, nkeys, err) == -1)
		return NULL;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    (cfg->vals = calloc(nkeys ? nkeys : 1, sizeof(*cfg->vals))) ==
	        NULL) {
		free(cfg);
		error_set(err, "out of memory");
		return NULL;
	}
	cfg->keys = keys;
	cfg->nkeys = nkeys;
	for (i = 0; i < nkeys; i++) {
		if (keys[i].def == NULL) {
			cfg->vals[i].rank = CONFIG_SOURCE_DEFAULT;
			if ((cfg->vals[i].origin = strdup("default")) == NULL) {
				error_set(err, "out of memory");
				goto fail;
			}
			continue;
		}
		if (value_parse(&keys[i], keys[i].def, CONFIG_SOURCE_DEFAULT,
		                "default", &cfg->vals[i], err) == -1) {
			error_prefix(err, "config table: default");
			goto fail;
		}
	}
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nkeys; i++)
		value_clear(&cfg->vals[i],
		            cfg->keys[i].flags & CONFIG_F_SECRET);
	free(cfg->vals);
	free(cfg);
}

/* State of one file load, shared by our line reader and inih's handler. */
struct file_load {
	struct config *cfg;
	const char *path;
	const char *buf; /* the whole file, NUL-terminated */
	size_t len, pos; /* bytes in buf; start of the next line */
	unsigned lineno; /* line inih is working on */
	struct config_pending pend;
	const char *secret; /* name of a secret key found, or NULL */
	bool comment;       /* this line has an inline " ;" comment */
	unsigned errline;   /* line of the first error we found, 0 none */
	struct error err;   /* its reason, without the file prefix */
};

static void file_fail(struct file_load *fl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
file_fail(struct file_load *fl, const char *fmt, ...)
{
	va_list ap;

	if (fl->errline != 0)
		return;
	fl->errline = fl->lineno;
	va_start(ap, fmt);
	vsnprintf(fl->err.msg, sizeof(fl->err.msg), fmt, ap);
	va_end(ap);
}

/* Does any key live in this section? */
static bool
section_known(const struct config *cfg, const char *sec, size_t len)
{
	size_t i;

	for (i = 0; i < cfg->nkeys; i++) {
		if (strncmp(cfg->keys[i].name, sec, len) == 0 &&
		    cfg->keys[i].name[len] == '.')
			return true;
	}
	return false;
}

/*
 * inih's fgets.  Leading blanks are dropped, which turns off inih's
 * continuation lines (an indented line would otherwise be appended to the
 * previous key); a section header is checked here because inih does not
 * tell the handler about a section with no keys in it.  Line lengths were
 * checked before parsing, so a line always fits.
 */
static char *
file_reader(char *str, int num, void *stream)
{
	struct file_load *fl = stream;
	const char *line, *nl, *close, *p;
	size_t n;

	if (fl->pos >= fl->len)
		return NULL;
	line = fl->buf + fl->pos;
	nl = memchr(line, '\n', fl->len - fl->pos);
	n = nl != NULL ? (size_t)(nl - line) + 1 : fl->len - fl->pos;
	fl->pos += n;
	fl->lineno++;
	/* inih would drop a UTF-8 BOM too; we need the '[' in front. */
	if (fl->lineno == 1 && n >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3;
		n -= 3;
	}
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	if (num < 1 || n + 1 > (size_t)num) {
		/* Only if inih was built with a smaller line buffer. */
		file_fail(fl, "line too long for the INI parser");
		return NULL;
	}
	memcpy(str, line, n);
	str[n] = '\0';
	/* Where inih would cut a value: a ';' after a blank, past the '='. */
	fl->comment = false;
	if ((p = strpbrk(str, "=:")) != NULL) {
		for (; *p != '\0' && p[1] != '\0'; p++)
			if ((*p == ' ' || *p == '\t') && p[1] == ';')
				fl->comment = true;
	}
	if (str[0] != '[' || (close = strchr(str, ']')) == NULL)
		return str;
	if (!section_known(fl->cfg, str + 1, (size_t)(close - str - 1)))
		file_fail(fl, "unknown section '%.*s'", (int)(close - str + 1),
		          str);
	/* inih ignores the rest of a section line: "[est] port = 1". */
	for (p = close + 1; *p == ' ' || *p == '\t'; p++)
		;
	if (*p != '\0' && *p != '\r' && *p != '\n' && *p != ';' && *p != '#')
		file_fail(fl, "text after '%.*s'", (int)(close - str + 1), str);
	return str;
}

static int
file_handler(void *user, const char *section, const char *name,
             const char *value)
{
	struct file_load *fl = user;
	const struct config_key *k;
	char full[CONFIG_NAME_MAX + 2], origin[PATH_MAX + 32];
	struct error perr;
	size_t idx;

	if (section[0] == '\0') {
		file_fail(fl,
		          "key '%s' is outside any section (put it under "
		          "a [section] line)",
		          name);
		return 0;
	}
	if ((size_t)snprintf(full, sizeof(full), "%s.%s", section, name) >=
	        sizeof(full) ||
	    (k = key_find(fl->cfg, full, &idx)) == NULL) {
		unknown_key(fl->cfg, full, &perr);
		file_fail(fl, "%s", perr.msg);
		return 0;
	}
	if (fl->pend.line[idx] != 0) {
		file_fail(fl, "'%s' given twice (first on line %u)", k->name,
		          fl->pend.line[idx]);
		return 0;
	}
	/* A passphrase with " ;" in it would be cut short without a word. */
	if ((k->flags & CONFIG_F_SECRET) && fl->comment) {
		file_fail(
		    fl,
		    "%s: a secret in the file cannot contain ' ;' "
		    "or have a comment after it (' ;' starts a comment); use "
		    "the environment",
		    k->name);
		return 0;
	}
	snprintf(origin, sizeof(origin), "file %s line %u", fl->path,
	         fl->lineno);
	if (value_parse(k, value, CONFIG_SOURCE_FILE, origin,
	                &fl->pend.vals[idx], &perr) == -1) {
		file_fail(fl, "%s", perr.msg);
		return 0;
	}
	fl->pend.line[idx] = fl->lineno;
	if ((k->flags & CONFIG_F_SECRET) && fl->secret == NULL)
		fl->secret = k->name;
	return 1;
}

/* Lines too long for inih, or with a NUL that would cut them short. */
static int
file_check_lines(const char *path, const char *buf, size_t len,
                 struct error *err)
{
	size_t pos = 0, n, next;
	unsigned lineno = 0;
	const char *nl;

	while (pos < len) {
		lineno++;
		nl = memchr(buf + pos, '\n', len - pos);
		n = nl != NULL ? (size_t)(nl - (buf + pos)) : len - pos;
		next = nl != NULL ? pos + n + 1 : len;
		if (memchr(buf + pos, '\0', n) != NULL) {
			error_set(err,
			          "config file %s line %u: contains a NUL "
			          "byte",
			          path, lineno);
			return -1;
		}
		if (n > 0 && buf[pos + n - 1] == '\r')
			n--;
		if (n > CONFIG_LINE_MAX) {
			error_set(err,
			          "config file %s line %u: the line is "
			          "%zu bytes long; the limit is %d",
			          path, lineno, n, CONFIG_LINE_MAX);
			return -1;
		}
		pos = next;
	}
	return 0;
}

int
config_load_file(struct config *cfg, const char *path, struct error *err)
{
	struct file_load fl;
	struct stat st;
	uint8_t *buf = NULL;
	size_t len = 0, plen = strlen(path);
	int rc = -1, ret;

	memset(&fl, 0, sizeof(fl));
	if (stat(path, &st) == -1) {
		error_set(err, "config file %s: %s", path, strerror(errno));
		return -1;
	}
	/*
	 * Whoever can write the file chooses our data dir, listen addresses
	 * and trust settings.  The check is against a careless mode; someone
	 * who can write to the directory could replace the file anyway.
	 */
	if (S_ISREG(st.st_mode) && (st.st_mode & (S_IWGRP | S_IWOTH))) {
		error_set(err,
		          "config file %s: writable by group or others "
		          "(mode %03o); chmod go-w it",
		          path, (unsigned)(st.st_mode & 0777));
		return -1;
	}
	if ((buf = file_read(path, CONFIG_FILE_MAX, &len, err)) == NULL) {
		/* file_read says "<path>: reason"; keep one copy of path. */
		if (err != NULL) {
			char reason[ERROR_MAX];

			if (strncmp(err->msg, path, plen) == 0 &&
			    err->msg[plen] == ':')
				snprintf(reason, sizeof(reason), "%s",
				         err->msg + plen + 2);
			else
				snprintf(reason, sizeof(reason), "%s",
				         err->msg);
			error_set(err, "config file %s: %s", path, reason);
		}
		return -1;
	}
	if (file_check_lines(path, (char *)buf, len, err) == -1)
		goto out;
	if (pending_init(cfg, &fl.pend, err) == -1)
		goto out;
	fl.cfg = cfg;
	fl.path = path;
	fl.buf = (char *)buf;
	fl.len = len;
	ret = ini_parse_stream(file_reader, &fl, file_handler, &fl);
	if (ret > 0 && (fl.errline == 0 || (unsigned)ret < fl.errline)) {
		error_set(err,
		          "config file %s line %d: expected '[section]' "
		          "or 'key = value'",
		          path, ret);
		goto out;
	}
	if (fl.errline != 0) {
		error_set(err, "config file %s line %u: %s", path, fl.errline,
		          fl.err.msg);
		goto out;
	}
	if (ret != 0) {
		error_set(err, "config file %s: the INI parser failed (%d)",
		          path, ret);
		goto out;
	}
	if (fl.secret != NULL && (st.st_mode & (S_IRGRP | S_IROTH))) {
		error_set(
		    err,
		    "config file %s: holds the secret %s but is "
		    "readable by group or others (mode %03o); chmod 600 it",
		    path, fl.secret, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	pending_commit(cfg, &fl.pend);
	rc = 0;
out:
	pending_free(cfg, &fl.pend);
	/* The file may hold a secret; don't leave it in freed memory. */
	secure_zero(buf, len);
	free(buf);
	return rc;
}

static bool
env_ignored(const char *var, size_t len, const char *const *ignore)
{
	size_t i;

	for (i = 0; ignore != NULL && ignore[i] != NULL; i++) {
		if (strlen(ignore[i]) == len &&
		    strncmp(ignore[i], var, len) == 0)
			return true;
	}
	return false;
}

int
config_load_env(struct config *cfg, const char *prefix, char *const *envp,
                const char *const *ignore, struct error *err)
{
	struct config_pending pend;
	char var[CONFIG_NAME_MAX + 1], form[CONFIG_NAME_MAX + 1];
	char origin[CONFIG_NAME_MAX + 64];
	const struct config_key *near;
	struct error perr;
	size_t plen = strlen(prefix), i, idx, nlen;
	const char *eq, *e;
	int rc = -1;

	if (plen == 0) {
		error_set(err, "environment: empty prefix");
		return -1;
	}
	if (envp == NULL)
		envp = environ;
	if (pending_init(cfg, &pend, err) == -1)
		return -1;
	for (i = 0; envp[i] != NULL; i++) {
		e = envp[i];
		if (strncmp(e, prefix, plen) != 0)
			continue;
		if ((eq = strchr(e, '=')) == NULL || (size_t)(eq - e) < plen)
			continue;
		nlen = (size_t)(eq - e);
		if (env_ignored(e, nlen, ignore))
			continue;
		/* Compare the part after the prefix with each key's form. */
		if (nlen - plen > CONFIG_NAME_MAX) {
			error_set(err,
			          "environment %.*s: names no "
			          "configuration key",
			          (int)nlen, e);
			goto out;
		}
		memcpy(var, e + plen, nlen - plen);
		var[nlen - plen] = '\0';
		for (idx = 0; idx < cfg->nkeys; idx++) {
			env_form(cfg->keys[idx].name, form, sizeof(form));
			if (strcmp(form, var) == 0)
				break;
		}
		if (idx == cfg->nkeys) {
			near = key_suggest(cfg, var, true);
			if (near != NULL) {
				env_form(near->name, form, sizeof(form));
				error_set(
				    err,
				    "environment %.*s: names no "
				    "configuration key (did you mean %s%s?)",
				    (int)nlen, e, prefix, form);
			} else
				error_set(err,
				          "environment %.*s: names no "
				          "configuration key",
				          (int)nlen, e);
			goto out;
		}
		if (pend.line[idx] != 0)
			continue; /* getenv(3) would return the first one */
		snprintf(origin, sizeof(origin), "environment %.*s", (int)nlen,
		         e);
		if (value_parse(&cfg->keys[idx], eq + 1, CONFIG_SOURCE_ENV,
		                origin, &pend.vals[idx], &perr) == -1) {
			error_set(err, "%s: %s", origin, perr.msg);
			goto out;
		}
		pend.line[idx] = 1;
	}
	pending_commit(cfg, &pend);
	rc = 0;
out:
	pending_free(cfg, &pend);
	return rc;
}

static const char *
source_word(enum config_source source)
{
	switch (source) {
	case CONFIG_SOURCE_DEFAULT:
		return "default";
	case CONFIG_SOURCE_FILE:
		return "file";
	case CONFIG_SOURCE_ENV:
		return "environment";
	case CONFIG_SOURCE_FLAG:
		return "flag";
	}
	return "unknown source";
}

/* "flag --data-dir", "environment ISELAB_X", "default". */
static void
where_format(enum config_source source, const char *origin, char *out,
             size_t outlen)
{
	if (origin != NULL)
		snprintf(out, outlen, "%s %s", source_word(source), origin);
	else
		snprintf(out, outlen, "%s", source_word(source));
}

int
config_set(struct config *cfg, const char *name, const char *value,
           enum config_source source, const char *origin, struct error *err)
{
	struct config_pending pend;
	const struct config_key *k;
	char where[CONFIG_NAME_MAX + 64];
	struct error perr;
	size_t idx;

	where_format(source, origin, where, sizeof(where));
	if (source != CONFIG_SOURCE_DEFAULT && source != CONFIG_SOURCE_ENV &&
	    source != CONFIG_SOURCE_FLAG) {
		error_set(err,
		          "%s: config_set() takes a default, the "
		          "environment or a flag; use config_load_file()",
		          where);
		return -1;
	}
	if ((k = key_find(cfg, name, &idx)) == NULL) {
		unknown_key(cfg, name, &perr);
		error_set(err, "%s: %s", where, perr.msg);
		return -1;
	}
	if ((k->flags & CONFIG_F_SECRET) && source == CONFIG_SOURCE_FLAG) {
		error_set(
		    err,
		    "%s: %s cannot be given on the command line, "
		    "where other users can read it; use the config file or "
		    "the environment",
		    where, k->name);
		return -1;
	}
	if (pending_init(cfg, &pend, err) == -1)
		return -1;
	if (value_parse(k, value, source, where, &pend.vals[idx], &perr) ==
	    -1) {
		error_set(err, "%s: %s", where, perr.msg);
		pending_free(cfg, &pend);
		return -1;
	}
	pend.line[idx] = 1;
	pending_commit(cfg, &pend);
	return 0;
}

int
config_set_pair(struct config *cfg, const char *pair, enum config_source source,
                const char *origin, struct error *err)
{
	char name[CONFIG_NAME_MAX + 1];
	const char *eq = strchr(pair, '=');
	char where[CONFIG_NAME_MAX + 64];
	size_t n;

	where_format(source, origin, where, sizeof(where));
	if (eq == NULL || eq == pair) {
		/* Don't echo it: it may be a passphrase typed by mistake. */
		error_set(err, "%s: expected name=value", where);
		return -1;
	}
	n = (size_t)(eq - pair);
	if (n > CONFIG_NAME_MAX) {
		error_set(err, "%s: unknown key '%.*s...'", where,
		          CONFIG_QUOTE_MAX, pair);
		return -1;
	}
	memcpy(name, pair, n);
	name[n] = '\0';
	return config_set(cfg, name, eq + 1, source, origin, err);
}

int
config_check(const struct config *cfg, const char *env_prefix,
             struct error *err)
{
	char form[CONFIG_NAME_MAX + 1];
	const struct config_key *k;
	const char *dot;
	size_t i;

	for (i = 0; i < cfg->nkeys; i++) {
		k = &cfg->keys[i];
		if (!(k->flags & CONFIG_F_REQUIRED) ||
		    cfg->vals[i].text != NULL)
			continue;
		dot = strchr(k->name, '.');
		env_form(k->name, form, sizeof(form));
		error_set(err,
		          "%s is not set; set it in the config file "
		          "([%.*s] %s = ...)%s%s%s%s",
		          k->name, (int)(dot - k->name), k->name, dot + 1,
		          env_prefix != NULL ? " or the environment (" : "",
		          env_prefix != NULL ? env_prefix : "",
		          env_prefix != NULL ? form : "",
		          env_prefix != NULL ? ")" : "");
		return -1;
	}
	return 0;
}

/* A getter's lookup: a name not in the table is a bug in our code. */
static const struct config_value *
value_get(const struct config *cfg, const char *name, enum config_type type,
          const struct config_key **kp)
{
	const struct config_key *k;
	size_t idx;

	if ((k = key_find(cfg, name, &idx)) == NULL) {
		fprintf(stderr, "config: no key '%s' in the table\n", name);
		abort();
	}
	if (k->type != type &&
	    !(type == CONFIG_STRING &&
	      (k->type == CONFIG_ENUM || k->type == CONFIG_ADDRESS))) {
		fprintf(stderr, "config: %s is a %s, not a %s\n", name,
		        config_type_name(k->type), config_type_name(type));
		abort();
	}
	if (kp != NULL)
		*kp = k;
	return &cfg->vals[idx];
}

/* Numeric getters need a value: a required key read before config_check(). */
static const struct config_value *
value_get_set(const struct config *cfg, const char *name, enum config_type type)
{
	const struct config_value *v = value_get(cfg, name, type, NULL);

	if (v->text == NULL) {
		fprintf(stderr, "config: %s read while unset\n", name);
		abort();
	}
	return v;
}

const char *
config_get_string(const struct config *cfg, const char *name)
{
	return value_get(cfg, name, CONFIG_STRING, NULL)->text;
}

int64_t
config_get_int(const struct config *cfg, const char *name)
{
	return value_get_set(cfg, name, CONFIG_INT)->num;
}

bool
config_get_bool(const struct config *cfg, const char *name)
{
	return value_get_set(cfg, name, CONFIG_BOOL)->num != 0;
}

int
config_get_enum(const struct config *cfg, const char *name)
{
	return (int)value_get_set(cfg, name, CONFIG_ENUM)->num;
}

int64_t
config_get_duration(const struct config *cfg, const char *name)
{
	return value_get_set(cfg, name, CONFIG_DURATION)->num;
}

int64_t
config_get_size(const struct config *cfg, const char *name)
{
	return value_get_set(cfg, name, CONFIG_SIZE)->num;
}

const struct config_address *
config_get_address(const struct config *cfg, const char *name)
{
	const struct config_value *v;

	v = value_get(cfg, name, CONFIG_ADDRESS, NULL);
	return v->text != NULL ? &v->addr : NULL;
}

bool
config_is_set(const struct config *cfg, const char *name)
{
	size_t idx;

	if (key_find(cfg, name, &idx) == NULL) {
		fprintf(stderr, "config: no key '%s' in the table\n", name);
		abort();
	}
	return cfg->vals[idx].text != NULL;
}

const char *
config_source(const struct config *cfg, const char *name)
{
	size_t idx;

	if (key_find(cfg, name, &idx) == NULL) {
		fprintf(stderr, "config: no key '%s' in the table\n", name);
		abort();
	}
	return cfg->vals[idx].origin;
}

enum config_source
config_source_rank(const struct config *cfg, const char *name)
{
	size_t idx;

	if (key_find(cfg, name, &idx) == NULL) {
		fprintf(stderr, "config: no key '%s' in the table\n", name);
		abort();
	}
	return cfg->vals[idx].rank;
}

int
config_dump(const struct config *cfg, FILE *fp)
{
	const struct config_value *v;
	const char *shown;
	size_t i, w = 0;

	for (i = 0; i < cfg->nkeys; i++)
		if (strlen(cfg->keys[i].name) > w)
			w = strlen(cfg->keys[i].name);
	for (i = 0; i < cfg->nkeys; i++) {
		v = &cfg->vals[i];
		if (v->text == NULL)
			shown = "(unset)";
		else if (cfg->keys[i].flags & CONFIG_F_SECRET)
			shown = CONFIG_MASK;
		else if (v->text[0] == '\0')
			shown = "\"\"";
		else
			shown = v->text;
		fprintf(fp, "%-*s  %-*s  %s\n", (int)w, cfg->keys[i].name,
		        CONFIG_DUMP_VALUE_WIDTH, shown, v->origin);
	}
	return ferror(fp) ? -1 : 0;
}

int
config_help(const struct config *cfg, const char *env_prefix, FILE *fp)
{
	char form[CONFIG_NAME_MAX + 1], lo[32], hi[32];
	const struct config_key *k;
	int64_t min, max;
	size_t i, j;

	for (i = 0; i < cfg->nkeys; i++) {
		k = &cfg->keys[i];
		key_range(k, &min, &max);
		fprintf(fp, "%s (%s", k->name, config_type_name(k->type));
		switch (k->type) {
		case CONFIG_INT:
			fprintf(fp, " %" PRId64 "..%" PRId64, min, max);
			break;
		case CONFIG_DURATION:
		case CONFIG_SIZE:
			if (k->type == CONFIG_DURATION) {
				duration_format(min, lo, sizeof(lo));
				duration_format(max, hi, sizeof(hi));
			} else {
				size_format(min, lo, sizeof(lo));
				size_format(max, hi, sizeof(hi));
			}
			if (max == INT64_MAX)
				fprintf(fp, " >= %s", lo);
			else
				fprintf(fp, " %s..%s", lo, hi);
			break;
		case CONFIG_ENUM:
			for (j = 0; k->choices[j] != NULL; j++)
				fprintf(fp, "%s%s", j ? "|" : " ",
				        k->choices[j]);
			break;
		default:
			break;
		}
		if (k->def != NULL && !(k->flags & CONFIG_F_SECRET))
			fprintf(fp, ", default %s",
			        k->def[0] ? k->def : "\"\"");
		if (k->flags & CONFIG_F_REQUIRED)
			fprintf(fp, ", required");
		if (k->flags & CONFIG_F_SECRET)
			fprintf(fp, ", secret: file or environment only");
		if (env_prefix != NULL) {
			env_form(k->name, form, sizeof(form));
			fprintf(fp, ", env %s%s", env_prefix, form);
		}
		fprintf(fp, ")\n    %s\n", k->help != NULL ? k->help : "");
	}
	return ferror(fp) ? -1 : 0;
}

int
config_listen_address(const struct config *cfg, const char *key,
                      const char *follow, struct config_address *out,
                      struct error *err)
{
	const struct config_address *f = config_get_address(cfg, follow);

	*out = *config_get_address(cfg, key);
	if (config_source_rank(cfg, key) == CONFIG_SOURCE_DEFAULT &&
	    f->family != AF_UNSPEC && strcmp(f->host, "0.0.0.0") != 0 &&
	    strcmp(f->host, "::") != 0) {
		memcpy(out->host, f->host, sizeof(out->host));
		out->family = f->family;
	}
	if (out->family == AF_UNSPEC) {
		error_set(err, "%s must be an IP address, not '%s'", key,
		          out->host);
		return -1;
	}
	return 0;
}
