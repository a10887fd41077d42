/*
 * config: a node's settings, from built-in defaults, a config file, the
 * environment and command-line flags.
 *
 * Each role (pan, san, psn) declares a table of keys (struct config_key)
 * with a type, a default, limits and a one-line help.  Values from every
 * source go through the same parser, so "est.port = 80800" in the file,
 * ISELAB_EST_PORT=80800 and --set est.port=80800 are refused with the same
 * words, each naming where the value came from.
 *
 * Precedence is default < file < environment < flag, and it holds whatever
 * order the sources are loaded in: every value remembers the rank of its
 * source and a lower rank never replaces a higher one.  A load is
 * all-or-nothing: a source with one bad line changes nothing.  Unknown keys
 * are refused from every source, because a typo that is silently ignored
 * leaves a daemon running with a setting the admin believes is changed.
 *
 * This module does not log: configuration is read before logging is set
 * up, and the caller shows err once.  See docs/configuration.md.
 */
#ifndef ISELAB_CONFIG_H
#define ISELAB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct error;

/* Largest config file we read; ours are a few hundred bytes. */
#define CONFIG_FILE_MAX (1024 * 1024)
/*
 * Longest line of a config file, without its line end.  inih's line buffer
 * is INI_MAX_LINE bytes including CR, LF and NUL; a longer line would be
 * cut by inih and its tail read as a line of its own, so we refuse it first.
 */
#define CONFIG_LINE_MAX 197
/* Longest value from the environment or a flag (a path may be PATH_MAX). */
#define CONFIG_VALUE_MAX 4096
/* Longest key name ("provisioning.portal-listen"). */
#define CONFIG_NAME_MAX 64
/* Longest host name in a listen address (RFC 1035 section 2.3.4). */
#define CONFIG_HOST_MAX 253

enum config_type {
	CONFIG_STRING,
	CONFIG_INT,      /* decimal, min..max */
	CONFIG_BOOL,     /* true/false yes/no on/off 1/0, any case */
	CONFIG_ENUM,     /* one of choices, any case, stored as the choice */
	CONFIG_DURATION, /* "30s" "5m" "1h" "2d" or plain seconds; seconds */
	CONFIG_SIZE,     /* "512" "64k" "1M" "1G" (k = 1024); bytes */
	CONFIG_ADDRESS,  /* listen address host:port, IPv4, [IPv6] or name */
};

/* Where a value came from; the order is the precedence (higher wins). */
enum config_source {
	CONFIG_SOURCE_DEFAULT,
	CONFIG_SOURCE_FILE,
	CONFIG_SOURCE_ENV,
	CONFIG_SOURCE_FLAG,
};

/*
 * A secret (node.passphrase): accepted from the file and the environment,
 * refused from flags because any local user can read a process's argv, and
 * shown as ******** by config_dump().  A file holding a secret must not be
 * readable by group or others.  config_free() wipes it.
 */
#define CONFIG_F_SECRET 0x1
/* An empty value ("key =") is allowed; otherwise it is refused. */
#define CONFIG_F_EMPTY_OK 0x2
/* Must be set by some source: config_check() fails while it is unset. */
#define CONFIG_F_REQUIRED 0x4

/*
 * One key of a role's table.  name is "section.key" (lower case letters,
 * digits, '-', '_' and '.'), as written "[section]\nkey = ..." in the file.
 * def is parsed like any other source when the table is loaded; NULL
 * leaves the key unset (for a string only).  min and max bound an int, a
 * duration (seconds) or a size (bytes); min == max == 0 means 0..INT64_MAX.
 */
struct config_key {
	const char *name;
	enum config_type type;
	const char *def;
	const char *help;
	int64_t min, max;
	const char *const *choices; /* CONFIG_ENUM: NULL-terminated */
	unsigned flags;             /* CONFIG_F_* */
};

/* A parsed listen address. */
struct config_address {
	char host[CONFIG_HOST_MAX + 1]; /* without brackets for IPv6 */
	uint16_t port;
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC for a host name */
};

struct config;

/*
 * Make a configuration holding the defaults of the table, which must stay
 * valid as long as the configuration.  A table with a bad name, a name
 * given twice, two names that map to one environment variable, or a default
 * that does not parse is a programming error reported in err (NULL).
 */
struct config *config_new(const struct config_key *keys, size_t nkeys,
                          struct error *err);
/* Free, wiping every value that held a secret.  NULL is fine. */
void config_free(struct config *cfg);

/*
 * Load an INI file: "[est]\nport = 8084" sets est.port.  Comments start a
 * line with ';' or '#', or follow a value after " ;".  Refused as a whole:
 * a file that is missing, not a regular file, larger than CONFIG_FILE_MAX,
 * writable by group or others, holding a secret while readable by group or
 * others, with a line longer than CONFIG_LINE_MAX, a NUL byte, a syntax
 * error, a key outside a section, an unknown section or key, a key given
 * twice, or a bad value.
 */
int config_load_file(struct config *cfg, const char *path, struct error *err);

/*
 * Load the environment: prefix "ISELAB_" maps ISELAB_EST_PORT to est.port
 * (upper case, '.' and '-' as '_').  envp NULL means environ.  A variable
 * under the prefix that names no key is refused, unless listed in ignore
 * (NULL-terminated, may be NULL) because another part of the program owns
 * it.
 */
int config_load_env(struct config *cfg, const char *prefix, char *const *envp,
                    const char *const *ignore, struct error *err);

/*
 * Set one key from any source but the file, e.g. config_set(cfg,
 * "node.data-dir", optarg, CONFIG_SOURCE_FLAG, "--data-dir", err).
 * origin names the flag or variable and shows in config_source():
 * "flag --data-dir".  A secret from CONFIG_SOURCE_FLAG is refused.
 */
int config_set(struct config *cfg, const char *name, const char *value,
               enum config_source source, const char *origin,
               struct error *err);
/* The same for "name=value", as --set takes it. */
int config_set_pair(struct config *cfg, const char *pair,
                    enum config_source source, const char *origin,
                    struct error *err);

/* Fail, naming the key and where it can be set, if a required key is unset. */
int config_check(const struct config *cfg, const char *env_prefix,
                 struct error *err);

/*
 * Getters.  A name not in the table, or of another type, is a programming
 * error and abort()s.  config_get_string() takes string, enum and address
 * keys and returns NULL for an unset string.
 */
const char *config_get_string(const struct config *cfg, const char *name);
int64_t config_get_int(const struct config *cfg, const char *name);
bool config_get_bool(const struct config *cfg, const char *name);
/* Index into the key's choices. */
int config_get_enum(const struct config *cfg, const char *name);
int64_t config_get_duration(const struct config *cfg, const char *name);
int64_t config_get_size(const struct config *cfg, const char *name);
const struct config_address *config_get_address(const struct config *cfg,
                                                const char *name);
/*
 * A listen address that follows another one while it is not set: key's
 * address, or, when key has its default and follow is one specific IP
 * address (not a wildcard), follow's address with key's port.  Several
 * services of a node then share the node's address without each being
 * configured (a lab puts nodes on addresses of one host).  -1 with err
 * set when the result is not an IP address.
 */
int config_listen_address(const struct config *cfg, const char *key,
                          const char *follow, struct config_address *out,
                          struct error *err);
bool config_is_set(const struct config *cfg, const char *name);

/*
 * Where the value came from: "default", "file /d/pan.conf line 12",
 * "environment ISELAB_EST_PORT", "flag --set".
 */
const char *config_source(const struct config *cfg, const char *name);
enum config_source config_source_rank(const struct config *cfg,
                                      const char *name);

/* Every key, its value (secrets as ********) and its source, one a line. */
int config_dump(const struct config *cfg, FILE *fp);
/* Every key with its type, default, environment variable and help. */
int config_help(const struct config *cfg, const char *env_prefix, FILE *fp);

const char *config_type_name(enum config_type type);

#endif
