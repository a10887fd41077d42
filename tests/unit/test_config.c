/*
 * Unit tests for common/config.c: every source, the precedence in every
 * load order, the all-or-nothing rule, and the words of each refusal (a
 * message must name the key and where the value came from).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "util.h"
#include "tmpdir.h"

static const char *const hierarchies[] = {"rfc6960", "legacy", NULL};

static const struct config_key keys[] = {
    {"est.port", CONFIG_INT, "8084", "EST port", 1, 65535, NULL, 0},
    {"est.listen", CONFIG_ADDRESS, "0.0.0.0:8084", "EST listen address", 0, 0,
     NULL, 0},
    {"est.enabled", CONFIG_BOOL, "true", "run the EST server", 0, 0, NULL, 0},
    {"est.max-body", CONFIG_SIZE, "64k", "largest request body", 1024,
     1024 * 1024, NULL, 0},
    {"ocsp.hierarchy", CONFIG_ENUM, "rfc6960", "responder chain", 0, 0,
     hierarchies, 0},
    {"ocsp.max-age", CONFIG_DURATION, "1h", "RFC 5019 max-age", 1, 7 * 86400,
     NULL, 0},
    {"node.data-dir", CONFIG_STRING, "/var/lib/iselab", "data directory", 0, 0,
     NULL, 0},
    {"node.name", CONFIG_STRING, NULL, "node name", 0, 0, NULL,
     CONFIG_F_REQUIRED},
    {"node.passphrase", CONFIG_STRING, NULL, "key passphrase", 0, 0, NULL,
     CONFIG_F_SECRET},
    {"node.pin", CONFIG_INT, "1234", "a secret number", 0, 9999, NULL,
     CONFIG_F_SECRET},
    {"node.comment", CONFIG_STRING, "", "free text", 0, 0, NULL,
     CONFIG_F_EMPTY_OK},
    {"node.timeout", CONFIG_DURATION, "30s", "unbounded duration", 0, 0, NULL,
     0},
};


static struct config *
new_config(void)
{
	struct error err;
	struct config *cfg;

	error_clear(&err);
	cfg = config_new(keys, ARRAY_SIZE(keys), &err);
	if (cfg == NULL)
		fail_msg("config_new: %s", err.msg);
	return cfg;
}

/* Write a config file with mode 0600 under tmpdir; returns its path. */
static const char *
write_conf(const char *name, const char *text, size_t len, mode_t mode)
{
	static char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	(void)unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd != -1);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

static const char *
conf(const char *name, const char *text)
{
	return write_conf(name, text, strlen(text), 0600);
}

/* Fail showing the message unless it is exactly want. */
static void
assert_msg(const struct error *err, const char *want)
{
	if (strcmp(err->msg, want) != 0)
		fail_msg("message\n  got:  %s\n  want: %s", err->msg, want);
}

static void
assert_msg_has(const struct error *err, const char *part)
{
	if (strstr(err->msg, part) == NULL)
		fail_msg("message '%s' lacks '%s'", err->msg, part);
}

static void
test_defaults(void **state)
{
	struct config *cfg = new_config();
	const struct config_address *a;
	struct error err;

	(void)state;
	assert_int_equal(config_get_int(cfg, "est.port"), 8084);
	assert_true(config_get_bool(cfg, "est.enabled"));
	assert_int_equal(config_get_size(cfg, "est.max-body"), 65536);
	assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 3600);
	assert_int_equal(config_get_enum(cfg, "ocsp.hierarchy"), 0);
	assert_string_equal(config_get_string(cfg, "ocsp.hierarchy"),
	                    "rfc6960");
	assert_string_equal(config_get_string(cfg, "node.data-dir"),
	                    "/var/lib/iselab");
	assert_string_equal(config_get_string(cfg, "node.comment"), "");
	assert_null(config_get_string(cfg, "node.name"));
	assert_false(config_is_set(cfg, "node.name"));
	assert_true(config_is_set(cfg, "est.port"));
	a = config_get_address(cfg, "est.listen");
	assert_non_null(a);
	assert_string_equal(a->host, "0.0.0.0");
	assert_int_equal(a->port, 8084);
	assert_int_equal(a->family, AF_INET);
	assert_string_equal(config_source(cfg, "est.port"), "default");
	assert_string_equal(config_source(cfg, "node.name"), "default");
	assert_int_equal(config_source_rank(cfg, "est.port"),
	                 CONFIG_SOURCE_DEFAULT);

	/* A required key that no source gave. */
	assert_int_equal(config_check(cfg, "ISELAB_", &err), -1);
	assert_msg(&err,
	           "node.name is not set; set it in the config file "
	           "([node] name = ...) or the environment (ISELAB_NODE_NAME)");
	assert_int_equal(config_set(cfg, "node.name", "psn1",
	                            CONFIG_SOURCE_FLAG, "--name", &err),
	                 0);
	assert_int_equal(config_check(cfg, "ISELAB_", &err), 0);
	config_free(cfg);
}

static void
test_file(void **state)
{
	struct config *cfg = new_config();
	struct error err;
	char want[256];
	const char *path;

	(void)state;
	/* BOM, CRLF, comments of both kinds, an inline one, indentation. */
	path = conf("good.conf", "\xef\xbb\xbf; ise-lab psn\r\n"
	                         "[est]\r\n"
	                         "port = 9443\r\n"
	                         "# a comment\n"
	                         "   enabled = off ; inline comment\n"
	                         "max-body=1M\n"
	                         "listen = [::1]:9443\n"
	                         "\n"
	                         "[ocsp]\n"
	                         "hierarchy = LEGACY\n"
	                         "max-age = 2d\n"
	                         "[node]\n"
	                         "data-dir = /srv/iselab/psn1\n"
	                         "comment =\n"
	                         "timeout = 90\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 9443);
	assert_false(config_get_bool(cfg, "est.enabled"));
	assert_int_equal(config_get_size(cfg, "est.max-body"), 1024 * 1024);
	assert_string_equal(config_get_address(cfg, "est.listen")->host, "::1");
	assert_int_equal(config_get_address(cfg, "est.listen")->family,
	                 AF_INET6);
	assert_int_equal(config_get_enum(cfg, "ocsp.hierarchy"), 1);
	assert_string_equal(config_get_string(cfg, "ocsp.hierarchy"), "legacy");
	assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 2 * 86400);
	assert_string_equal(config_get_string(cfg, "node.data-dir"),
	                    "/srv/iselab/psn1");
	assert_string_equal(config_get_string(cfg, "node.comment"), "");
	assert_int_equal(config_get_duration(cfg, "node.timeout"), 90);
	snprintf(want, sizeof(want), "file %s line 3", path);
	assert_string_equal(config_source(cfg, "est.port"), want);
	snprintf(want, sizeof(want), "file %s line 11", path);
	assert_string_equal(config_source(cfg, "ocsp.max-age"), want);
	assert_string_equal(config_source(cfg, "node.pin"), "default");
	assert_int_equal(config_source_rank(cfg, "est.port"),
	                 CONFIG_SOURCE_FILE);
	config_free(cfg);
}

static void
test_env(void **state)
{
	char *envp[] = {"PATH=/bin",
	                "ISELAB_EST_PORT=9000",
	                "ISELAB_OCSP_MAX_AGE=5m",
	                "ISELAB_NODE_DATA_DIR=/d",
	                "OTHER_EST_PORT=1",
	                "ISELAB_EST_PORT=9001",
	                NULL};
	const char *const ignore[] = {"ISELAB_PASSPHRASE_FILE", NULL};
	char *envp2[] = {"ISELAB_PASSPHRASE_FILE=/x", NULL};
	struct config *cfg = new_config();
	struct error err;

	(void)state;
	assert_int_equal(config_load_env(cfg, "ISELAB_", envp, NULL, &err), 0);
	/* The first of two, as getenv(3) would give. */
	assert_int_equal(config_get_int(cfg, "est.port"), 9000);
	assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 300);
	assert_string_equal(config_get_string(cfg, "node.data-dir"), "/d");
	assert_string_equal(config_source(cfg, "est.port"),
	                    "environment ISELAB_EST_PORT");
	assert_string_equal(config_source(cfg, "ocsp.max-age"),
	                    "environment ISELAB_OCSP_MAX_AGE");

	/* A variable owned by someone else is skipped only when listed. */
	assert_int_equal(config_load_env(cfg, "ISELAB_", envp2, ignore, &err),
	                 0);
	assert_int_equal(config_load_env(cfg, "ISELAB_", envp2, NULL, &err),
	                 -1);
	assert_msg(&err, "environment ISELAB_PASSPHRASE_FILE: names no "
	                 "configuration key");

	/* envp NULL reads the real environment. */
	assert_int_equal(setenv("TESTCFG_EST_PORT", "7000", 1), 0);
	assert_int_equal(config_load_env(cfg, "TESTCFG_", NULL, NULL, &err), 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 7000);
	assert_int_equal(unsetenv("TESTCFG_EST_PORT"), 0);

	assert_int_equal(config_load_env(cfg, "", envp, NULL, &err), -1);
	config_free(cfg);
}

/* A listen address follows another one while it is not set. */
static void
test_listen_address(void **state)
{
	static const struct config_key lk[] = {
	    {"est.listen", CONFIG_ADDRESS, "0.0.0.0:8084", "EST", 0, 0, NULL,
	     0},
	    {"ocsp.listen", CONFIG_ADDRESS, "0.0.0.0:2560", "OCSP", 0, 0, NULL,
	     0},
	};
	struct config_address a;
	struct error err;
	struct config *cfg = config_new(lk, 2, &err);

	(void)state;
	assert_non_null(cfg);
	/* Both wildcards: the default stays. */
	assert_int_equal(
	    config_listen_address(cfg, "ocsp.listen", "est.listen", &a, &err), 0);
	assert_string_equal(a.host, "0.0.0.0");
	assert_int_equal(a.port, 2560);
	/* est.listen one address: OCSP on it, with its own port. */
	assert_int_equal(config_set(cfg, "est.listen", "127.0.0.21:8084",
	                            CONFIG_SOURCE_FLAG, "--set", &err),
	                 0);
	assert_int_equal(
	    config_listen_address(cfg, "ocsp.listen", "est.listen", &a, &err), 0);
	assert_string_equal(a.host, "127.0.0.21");
	assert_int_equal(a.port, 2560);
	/* Set itself: it wins. */
	assert_int_equal(config_set(cfg, "ocsp.listen", "[::1]:2561",
	                            CONFIG_SOURCE_FLAG, "--set", &err),
	                 0);
	assert_int_equal(
	    config_listen_address(cfg, "ocsp.listen", "est.listen", &a, &err), 0);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 2561);
	/* A host name is not a listen address. */
	assert_int_equal(config_set(cfg, "ocsp.listen", "psn1:2560",
	                            CONFIG_SOURCE_FLAG, "--set", &err),
	                 0);
	assert_int_equal(
	    config_listen_address(cfg, "ocsp.listen", "est.listen", &a, &err),
	    -1);
	config_free(cfg);
}

static void
test_flags(void **state)
{
	struct config *cfg = new_config();
	struct error err;

	(void)state;
	assert_int_equal(config_set(cfg, "node.data-dir", "/tmp/x",
	                            CONFIG_SOURCE_FLAG, "--data-dir", &err),
	                 0);
	assert_string_equal(config_get_string(cfg, "node.data-dir"), "/tmp/x");
	assert_string_equal(config_source(cfg, "node.data-dir"),
	                    "flag --data-dir");
	assert_int_equal(config_set_pair(cfg, "est.port=1", CONFIG_SOURCE_FLAG,
	                                 "--set", &err),
	                 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 1);
	assert_string_equal(config_source(cfg, "est.port"), "flag --set");
	/* The later of two flags wins. */
	assert_int_equal(config_set_pair(cfg, "est.port=2", CONFIG_SOURCE_FLAG,
	                                 "--set", &err),
	                 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 2);
	/* '=' in the value is the value's. */
	assert_int_equal(config_set_pair(cfg, "node.comment=a=b",
	                                 CONFIG_SOURCE_FLAG, "--set", &err),
	                 0);
	assert_string_equal(config_get_string(cfg, "node.comment"), "a=b");

	assert_int_equal(
	    config_set_pair(cfg, "est.port", CONFIG_SOURCE_FLAG, "--set", &err),
	    -1);
	assert_msg(&err, "flag --set: expected name=value");
	assert_int_equal(
	    config_set_pair(cfg, "=5", CONFIG_SOURCE_FLAG, "--set", &err), -1);
	assert_int_equal(
	    config_set(cfg, "est.port", "5", CONFIG_SOURCE_FILE, "x", &err),
	    -1);
	assert_int_equal(config_get_int(cfg, "est.port"), 2);

	/* A computed default does not beat anything loaded. */
	assert_int_equal(
	    config_set(cfg, "est.port", "3", CONFIG_SOURCE_DEFAULT, NULL, &err),
	    0);
	assert_int_equal(config_get_int(cfg, "est.port"), 2);
	assert_int_equal(config_set(cfg, "ocsp.max-age", "3h",
	                            CONFIG_SOURCE_DEFAULT, NULL, &err),
	                 0);
	assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 3 * 3600);
	assert_string_equal(config_source(cfg, "ocsp.max-age"), "default");
	config_free(cfg);
}

enum { LOAD_FILE, LOAD_ENV, LOAD_FLAG };

/*
 * Each source sets some keys: est.port by all three, ocsp.max-age by file
 * and environment, est.max-body by file and flag, node.data-dir by the
 * file only.  The winner must not depend on the order of loading.
 */
static void
test_precedence_every_order(void **state)
{
	static const int orders[6][3] = {
	    {LOAD_FILE, LOAD_ENV, LOAD_FLAG}, {LOAD_FILE, LOAD_FLAG, LOAD_ENV},
	    {LOAD_ENV, LOAD_FILE, LOAD_FLAG}, {LOAD_ENV, LOAD_FLAG, LOAD_FILE},
	    {LOAD_FLAG, LOAD_FILE, LOAD_ENV}, {LOAD_FLAG, LOAD_ENV, LOAD_FILE},
	};
	char *envp[] = {"ISELAB_EST_PORT=2000", "ISELAB_OCSP_MAX_AGE=2m", NULL};
	const char *path;
	struct config *cfg;
	struct error err;
	char want[256];
	size_t o, i;

	(void)state;
	path = conf("prec.conf", "[est]\nport = 1000\nmax-body = 2k\n"
	                         "[ocsp]\nmax-age = 1m\n"
	                         "[node]\ndata-dir = /file\n");
	for (o = 0; o < 6; o++) {
		cfg = new_config();
		for (i = 0; i < 3; i++) {
			switch (orders[o][i]) {
			case LOAD_FILE:
				assert_int_equal(
				    config_load_file(cfg, path, &err), 0);
				break;
			case LOAD_ENV:
				assert_int_equal(config_load_env(cfg, "ISELAB_",
				                                 envp, NULL,
				                                 &err),
				                 0);
				break;
			case LOAD_FLAG:
				assert_int_equal(
				    config_set_pair(cfg, "est.port=3000",
				                    CONFIG_SOURCE_FLAG, "--set",
				                    &err),
				    0);
				assert_int_equal(
				    config_set_pair(cfg, "est.max-body=3k",
				                    CONFIG_SOURCE_FLAG, "--set",
				                    &err),
				    0);
				break;
			}
		}
		assert_int_equal(config_get_int(cfg, "est.port"), 3000);
		assert_string_equal(config_source(cfg, "est.port"),
		                    "flag --set");
		assert_int_equal(config_get_size(cfg, "est.max-body"), 3072);
		assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 120);
		assert_string_equal(config_source(cfg, "ocsp.max-age"),
		                    "environment ISELAB_OCSP_MAX_AGE");
		assert_string_equal(config_get_string(cfg, "node.data-dir"),
		                    "/file");
		snprintf(want, sizeof(want), "file %s line 7", path);
		assert_string_equal(config_source(cfg, "node.data-dir"), want);
		assert_string_equal(config_source(cfg, "ocsp.hierarchy"),
		                    "default");
		config_free(cfg);
	}
}

static void
test_unknown_key(void **state)
{
	char *envp[] = {"ISELAB_EST_PORT=1", "ISELAB_EST_PROT=2", NULL};
	char *envp2[] = {"ISELAB_ZZZZZZ=2", NULL};
	struct config *cfg = new_config();
	struct error err;
	char want[512];
	const char *path;

	(void)state;
	path = conf("unk.conf", "[est]\nport = 1\n\nprot = 2\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 4: unknown key "
	         "'est.prot' (did you mean 'est.port'?)",
	         path);
	assert_msg(&err, want);

	path = conf("unk2.conf", "[est]\nport = 1\n[nodes]\nname = x\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 3: unknown "
	         "section '[nodes]'",
	         path);
	assert_msg(&err, want);

	/* A section with no keys in it is still checked. */
	path = conf("unk3.conf", "[est]\nport = 1\n[estt]\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	assert_msg_has(&err, "line 3: unknown section '[estt]'");

	path = conf("unk4.conf", "port = 1\n[est]\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 1: key 'port' is "
	         "outside any section (put it under a [section] line)",
	         path);
	assert_msg(&err, want);

	path = conf("unk5.conf", "[est]\nxyzzy = 1\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 2: unknown key "
	         "'est.xyzzy'",
	         path);
	assert_msg(&err, want);

	assert_int_equal(config_load_env(cfg, "ISELAB_", envp, NULL, &err), -1);
	assert_msg(&err, "environment ISELAB_EST_PROT: names no configuration "
	                 "key (did you mean ISELAB_EST_PORT?)");
	assert_int_equal(config_load_env(cfg, "ISELAB_", envp2, NULL, &err),
	                 -1);
	assert_msg(&err, "environment ISELAB_ZZZZZZ: names no configuration "
	                 "key");

	assert_int_equal(
	    config_set(cfg, "est.prot", "1", CONFIG_SOURCE_FLAG, "--set", &err),
	    -1);
	assert_msg(&err, "flag --set: unknown key 'est.prot' (did you mean "
	                 "'est.port'?)");

	/* Nothing of the refused sources stuck. */
	assert_int_equal(config_get_int(cfg, "est.port"), 8084);
	assert_string_equal(config_source(cfg, "est.port"), "default");
	config_free(cfg);
}

struct bad_value {
	const char *key;
	const char *value;
	const char *msg; /* after "flag --set: " */
};

static const struct bad_value bad_values[] = {
    {"est.port", "http",
     "est.port: 'http' is not a number from 1 to "
     "65535"},
    {"est.port", "80800",
     "est.port: '80800' is not a number from 1 to "
     "65535"},
    {"est.port", "0", "est.port: '0' is not a number from 1 to 65535"},
    {"est.port", "-1", "est.port: '-1' is not a number from 1 to 65535"},
    {"est.port", "+80",
     "est.port: '+80' is not a number from 1 to "
     "65535"},
    {"est.port", " 80",
     "est.port: ' 80' is not a number from 1 to "
     "65535"},
    {"est.port", "80 ",
     "est.port: '80 ' is not a number from 1 to "
     "65535"},
    {"est.port", "0x50",
     "est.port: '0x50' is not a number from 1 to "
     "65535"},
    {"est.port", "99999999999999999999",
     "est.port: "
     "'99999999999999999999' is not a number from 1 to 65535"},
    {"est.port", "", "est.port: empty value"},
    {"est.enabled", "maybe",
     "est.enabled: 'maybe' is not a boolean "
     "(true/false, yes/no, on/off, 1/0)"},
    {"est.enabled", "2",
     "est.enabled: '2' is not a boolean "
     "(true/false, yes/no, on/off, 1/0)"},
    {"ocsp.hierarchy", "rfc5019",
     "ocsp.hierarchy: 'rfc5019' is not one "
     "of: rfc6960, legacy"},
    {"ocsp.max-age", "5x",
     "ocsp.max-age: '5x' is not a duration from "
     "1s to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"ocsp.max-age", "1.5h",
     "ocsp.max-age: '1.5h' is not a duration "
     "from 1s to 7d (write 30s, 5m, 1h, 2d or "
     "plain seconds)"},
    {"ocsp.max-age", "5M",
     "ocsp.max-age: '5M' is not a duration from "
     "1s to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"ocsp.max-age", "8d",
     "ocsp.max-age: '8d' is not a duration from "
     "1s to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"ocsp.max-age", "0",
     "ocsp.max-age: '0' is not a duration from 1s "
     "to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"ocsp.max-age", "-5s",
     "ocsp.max-age: '-5s' is not a duration from "
     "1s to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"ocsp.max-age", "s",
     "ocsp.max-age: 's' is not a duration from 1s "
     "to 7d (write 30s, 5m, 1h, 2d or plain "
     "seconds)"},
    {"node.timeout", "9999999999999999d",
     "node.timeout: "
     "'9999999999999999d' is not a duration of at least 0s (write 30s, "
     "5m, 1h, 2d or plain seconds)"},
    {"est.max-body", "64q",
     "est.max-body: '64q' is not a size from 1k "
     "to 1M bytes (write 512, 64k, 1M or 1G)"},
    {"est.max-body", "2M",
     "est.max-body: '2M' is not a size from 1k to "
     "1M bytes (write 512, 64k, 1M or 1G)"},
    {"est.max-body", "512",
     "est.max-body: '512' is not a size from 1k "
     "to 1M bytes (write 512, 64k, 1M or 1G)"},
    {"est.max-body", "1kb",
     "est.max-body: '1kb' is not a size from 1k "
     "to 1M bytes (write 512, 64k, 1M or 1G)"},
    {"est.listen", "8084",
     "est.listen: '8084' is not a listen address: "
     "missing ':port' (write host:port)"},
    {"est.listen", "::1:8084",
     "est.listen: '::1:8084' is not a listen "
     "address: an IPv6 address goes in "
     "brackets, as [::1]:8084"},
    {"est.listen", "[::1]",
     "est.listen: '[::1]' is not a listen "
     "address: missing ':port' after ']'"},
    {"est.listen", "[::1:8084",
     "est.listen: '[::1:8084' is not a "
     "listen address: no ']' after the IPv6 "
     "address"},
    {"est.listen", "[1.2.3.4]:80",
     "est.listen: '[1.2.3.4]:80' is not a "
     "listen address: '1.2.3.4' is not an "
     "IPv6 address"},
    {"est.listen", "1.2.3:80",
     "est.listen: '1.2.3:80' is not a listen "
     "address: '1.2.3' is not an IPv4 "
     "address"},
    {"est.listen", "256.1.1.1:80",
     "est.listen: '256.1.1.1:80' is not a "
     "listen address: '256.1.1.1' is not "
     "an IPv4 address"},
    {"est.listen", "host_name:80",
     "est.listen: 'host_name:80' is not a "
     "listen address: 'host_name' is not "
     "a host name"},
    {"est.listen", "-psn:80",
     "est.listen: '-psn:80' is not a listen "
     "address: '-psn' is not a host name"},
    {"est.listen", "psn..lab:80",
     "est.listen: 'psn..lab:80' is not a "
     "listen address: 'psn..lab' is not a "
     "host name"},
    {"est.listen", ":80",
     "est.listen: ':80' is not a listen address: "
     "missing host (0.0.0.0 or [::] listen on every "
     "address)"},
    {"est.listen", "psn1:0",
     "est.listen: 'psn1:0' is not a listen "
     "address: port '0' is not a number from 1 "
     "to 65535"},
    {"est.listen", "psn1:65536",
     "est.listen: 'psn1:65536' is not a "
     "listen address: port '65536' is not a "
     "number from 1 to 65535"},
    {"est.listen", "psn1:",
     "est.listen: 'psn1:' is not a listen "
     "address: port '' is not a number from 1 to "
     "65535"},
    {"node.data-dir", "", "node.data-dir: empty value"},
    {"node.data-dir", "/a\tb",
     "node.data-dir: the value contains a "
     "control character"},
    {"node.data-dir", "/a\x1b[2J",
     "node.data-dir: the value contains a "
     "control character"},
    /* A secret is never quoted back. */
    {"node.pin", "12345",
     "node.pin: the value is not a number from 0 to "
     "9999"},
};

/* est.max-body -> ISELAB_EST_MAX_BODY, written out independently. */
static void
env_name(const char *key, char *out, size_t outlen)
{
	size_t i, n = (size_t)snprintf(out, outlen, "ISELAB_");

	for (i = 0; key[i] != '\0' && n + 1 < outlen; i++)
		out[n++] = key[i] == '.' || key[i] == '-'
		               ? '_'
		               : (char)toupper((unsigned char)key[i]);
	out[n] = '\0';
}

static void
test_bad_values(void **state)
{
	struct config *cfg = new_config();
	struct error err;
	char want[ERROR_MAX], env[512], name[64], *envp[2];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_values); i++) {
		const struct bad_value *b = &bad_values[i];

		error_clear(&err);
		/* node.pin is a secret: no flag; check it through the env. */
		if (strcmp(b->key, "node.pin") != 0) {
			assert_int_equal(config_set(cfg, b->key, b->value,
			                            CONFIG_SOURCE_FLAG, "--set",
			                            &err),
			                 -1);
			snprintf(want, sizeof(want), "flag --set: %s", b->msg);
			assert_msg(&err, want);
		}
		env_name(b->key, name, sizeof(name));
		snprintf(env, sizeof(env), "%s=%s", name, b->value);
		envp[0] = env;
		envp[1] = NULL;
		assert_int_equal(
		    config_load_env(cfg, "ISELAB_", envp, NULL, &err), -1);
		snprintf(want, sizeof(want), "environment %s: %s", name,
		         b->msg);
		assert_msg(&err, want);
	}
	/* Nothing changed. */
	assert_int_equal(config_get_int(cfg, "est.port"), 8084);
	assert_string_equal(config_get_string(cfg, "est.listen"),
	                    "0.0.0.0:8084");
	assert_int_equal(config_get_int(cfg, "node.pin"), 1234);
	config_free(cfg);
}

static void
test_good_values(void **state)
{
	static const struct {
		const char *key, *value;
		int64_t num;
	} good[] = {
	    {"est.enabled", "TRUE", 1},
	    {"est.enabled", "Yes", 1},
	    {"est.enabled", "on", 1},
	    {"est.enabled", "1", 1},
	    {"est.enabled", "false", 0},
	    {"est.enabled", "NO", 0},
	    {"est.enabled", "off", 0},
	    {"est.enabled", "0", 0},
	    {"est.port", "1", 1},
	    {"est.port", "65535", 65535},
	    {"est.port", "08084", 8084},
	    {"ocsp.max-age", "30s", 30},
	    {"ocsp.max-age", "5m", 300},
	    {"ocsp.max-age", "1h", 3600},
	    {"ocsp.max-age", "7d", 7 * 86400},
	    {"ocsp.max-age", "45", 45},
	    {"est.max-body", "1024", 1024},
	    {"est.max-body", "64k", 65536},
	    {"est.max-body", "64K", 65536},
	    {"est.max-body", "1m", 1048576},
	    {"node.timeout", "0", 0},
	};
	static const struct {
		const char *value, *host;
		uint16_t port;
		int family;
	} addrs[] = {
	    {"127.0.0.1:8084", "127.0.0.1", 8084, AF_INET},
	    {"[::]:2560", "::", 2560, AF_INET6},
	    {"[fe80::1:2]:1", "fe80::1:2", 1, AF_INET6},
	    {"psn1.lab.example:65535", "psn1.lab.example", 65535, AF_UNSPEC},
	    {"localhost:8443", "localhost", 8443, AF_UNSPEC},
	    {"a-b.1c:80", "a-b.1c", 80, AF_UNSPEC},
	};
	const struct config_address *a;
	struct config *cfg = new_config();
	struct error err;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(good); i++) {
		if (config_set(cfg, good[i].key, good[i].value,
		               CONFIG_SOURCE_FLAG, "--set", &err) == -1)
			fail_msg("%s=%s: %s", good[i].key, good[i].value,
			         err.msg);
		if (strcmp(good[i].key, "est.enabled") == 0)
			assert_int_equal(config_get_bool(cfg, good[i].key),
			                 good[i].num);
		else if (strcmp(good[i].key, "est.port") == 0)
			assert_int_equal(config_get_int(cfg, good[i].key),
			                 good[i].num);
		else if (strcmp(good[i].key, "est.max-body") == 0)
			assert_int_equal(config_get_size(cfg, good[i].key),
			                 good[i].num);
		else
			assert_int_equal(config_get_duration(cfg, good[i].key),
			                 good[i].num);
	}
	/* Canonical text for bools. */
	assert_int_equal(config_set(cfg, "est.enabled", "YES",
	                            CONFIG_SOURCE_FLAG, "--set", &err),
	                 0);
	assert_string_equal(config_get_string(cfg, "ocsp.hierarchy"),
	                    "rfc6960");
	for (i = 0; i < ARRAY_SIZE(addrs); i++) {
		if (config_set(cfg, "est.listen", addrs[i].value,
		               CONFIG_SOURCE_FLAG, "--listen", &err) == -1)
			fail_msg("%s: %s", addrs[i].value, err.msg);
		a = config_get_address(cfg, "est.listen");
		assert_string_equal(a->host, addrs[i].host);
		assert_int_equal(a->port, addrs[i].port);
		assert_int_equal(a->family, addrs[i].family);
		assert_string_equal(config_get_string(cfg, "est.listen"),
		                    addrs[i].value);
	}
	config_free(cfg);
}

static void
test_secret(void **state)
{
	char *envp[] = {"ISELAB_NODE_PASSPHRASE=correct horse battery", NULL};
	struct config *cfg = new_config();
	char *buf = NULL, want[256];
	struct error err;
	size_t len = 0;
	const char *path;
	FILE *fp;

	(void)state;
	assert_int_equal(config_set(cfg, "node.passphrase", "hunter22",
	                            CONFIG_SOURCE_FLAG, "--set", &err),
	                 -1);
	assert_msg(&err, "flag --set: node.passphrase cannot be given on the "
	                 "command line, where other users can read it; use "
	                 "the config file or the environment");
	assert_int_equal(config_set_pair(cfg, "node.passphrase=hunter22",
	                                 CONFIG_SOURCE_FLAG, "--set", &err),
	                 -1);
	assert_null(strstr(err.msg, "hunter22"));
	assert_false(config_is_set(cfg, "node.passphrase"));

	assert_int_equal(config_load_env(cfg, "ISELAB_", envp, NULL, &err), 0);
	assert_string_equal(config_get_string(cfg, "node.passphrase"),
	                    "correct horse battery");

	/* A file with a secret must be private to its owner. */
	path = write_conf("secret.conf", "[node]\npassphrase = s3cret-pass\n",
	                  strlen("[node]\npassphrase = s3cret-pass\n"), 0640);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(
	    want, sizeof(want),
	    "config file %s: holds the secret "
	    "node.passphrase but is readable by group or others (mode 640); "
	    "chmod 600 it",
	    path);
	assert_msg(&err, want);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	/* The environment still wins over the file. */
	assert_string_equal(config_get_string(cfg, "node.passphrase"),
	                    "correct horse battery");

	/* inih would cut "abc ;def" to "abc" without a word. */
	path = conf("secret2.conf", "[node]\npassphrase = abc ;def\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(
	    want, sizeof(want),
	    "config file %s line 2: node.passphrase: "
	    "a secret in the file cannot contain ' ;' or have a comment after "
	    "it (' ;' starts a comment); use the environment",
	    path);
	assert_msg(&err, want);
	assert_null(strstr(err.msg, "abc"));
	path = conf("secret3.conf", "[node]\npassphrase = abc;def\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);

	fp = open_memstream(&buf, &len);
	assert_non_null(fp);
	assert_int_equal(config_dump(cfg, fp), 0);
	fclose(fp);
	assert_null(strstr(buf, "correct horse"));
	assert_null(strstr(buf, "1234")); /* node.pin */
	assert_non_null(strstr(buf, "node.passphrase"));
	assert_non_null(strstr(buf, "********"));
	assert_non_null(strstr(buf, "environment ISELAB_NODE_PASSPHRASE"));
	free(buf);
	config_free(cfg);
}

static void
test_failed_file_keeps_values(void **state)
{
	char *envp[] = {"ISELAB_OCSP_MAX_AGE=2h", "ISELAB_EST_PORT=x", NULL};
	struct config *cfg = new_config();
	struct error err;
	char want[256], good[128];
	const char *bad;

	(void)state;
	snprintf(good, sizeof(good), "%s",
	         conf("keep1.conf", "[est]\nport = 1111\n"));
	assert_int_equal(config_load_file(cfg, good, &err), 0);
	bad = conf("keep2.conf", "[est]\nport = 2222\nenabled = no\n"
	                         "max-body = 2k\n[ocsp]\nmax-age = forever\n");
	assert_int_equal(config_load_file(cfg, bad, &err), -1);
	snprintf(
	    want, sizeof(want),
	    "config file %s line 6: ocsp.max-age: "
	    "'forever' is not a duration from 1s to 7d (write 30s, 5m, 1h, "
	    "2d or plain seconds)",
	    bad);
	assert_msg(&err, want);
	assert_int_equal(config_get_int(cfg, "est.port"), 1111);
	assert_true(config_get_bool(cfg, "est.enabled"));
	assert_int_equal(config_get_size(cfg, "est.max-body"), 65536);
	snprintf(want, sizeof(want), "file %s line 2", good);
	assert_string_equal(config_source(cfg, "est.port"), want);

	/* The same holds for the environment. */
	assert_int_equal(config_load_env(cfg, "ISELAB_", envp, NULL, &err), -1);
	assert_int_equal(config_get_duration(cfg, "ocsp.max-age"), 3600);
	config_free(cfg);
}

static void
test_file_limits(void **state)
{
	struct config *cfg = new_config();
	char line[CONFIG_LINE_MAX + 64], want[512], *big;
	struct error err;
	const char *path;
	size_t n;

	(void)state;
	/* Over the size limit: refused before parsing. */
	big = malloc(CONFIG_FILE_MAX + 2);
	assert_non_null(big);
	memset(big, '\n', CONFIG_FILE_MAX + 1);
	memcpy(big, "[est]\nport = 1\n", 15);
	path = write_conf("big.conf", big, CONFIG_FILE_MAX + 1, 0600);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s: %d bytes is over the "
	         "limit of %d",
	         path, CONFIG_FILE_MAX + 1, CONFIG_FILE_MAX);
	assert_msg(&err, want);
	/* Exactly the limit is fine. */
	path = write_conf("big.conf", big, CONFIG_FILE_MAX, 0600);
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 1);
	free(big);

	/* A line of exactly CONFIG_LINE_MAX is fine, one more is not. */
	n = (size_t)snprintf(line, sizeof(line), "[node]\ndata-dir = /");
	memset(line + n, 'a', CONFIG_LINE_MAX - (n - 7));
	n += CONFIG_LINE_MAX - (n - 7);
	line[n++] = '\r';
	line[n++] = '\n';
	line[n] = '\0';
	path = conf("line.conf", line);
	if (config_load_file(cfg, path, &err) == -1)
		fail_msg("%s", err.msg);
	assert_int_equal(strlen(config_get_string(cfg, "node.data-dir")),
	                 CONFIG_LINE_MAX - strlen("data-dir = "));
	line[n - 2] = 'a';
	path = conf("line.conf", line);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 2: the line is %d "
	         "bytes long; the limit is %d",
	         path, CONFIG_LINE_MAX + 1, CONFIG_LINE_MAX);
	assert_msg(&err, want);

	/* A NUL byte would hide the rest of its line from inih. */
	path = write_conf("nul.conf", "[est]\nport = 1\0 junk\n", 20, 0600);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 2: contains a NUL "
	         "byte",
	         path);
	assert_msg(&err, want);
	config_free(cfg);
}

static void
test_file_errors(void **state)
{
	struct config *cfg = new_config();
	char want[512], missing[128];
	struct error err;
	const char *path;

	(void)state;
	snprintf(missing, sizeof(missing), "%s/none.conf", tmpdir);
	assert_int_equal(config_load_file(cfg, missing, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s: No such file or "
	         "directory",
	         missing);
	assert_msg(&err, want);

	assert_int_equal(config_load_file(cfg, tmpdir, &err), -1);
	snprintf(want, sizeof(want), "config file %s: not a regular file",
	         tmpdir);
	assert_msg(&err, want);

	path = write_conf("ww.conf", "[est]\nport = 1\n", 15, 0666);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s: writable by group or "
	         "others (mode 666); chmod go-w it",
	         path);
	assert_msg(&err, want);
	path = write_conf("gw.conf", "[est]\nport = 1\n", 15, 0620);
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	/* Readable by all is fine without a secret. */
	path = write_conf("ro.conf", "[est]\nport = 1\n", 15, 0644);
	assert_int_equal(config_load_file(cfg, path, &err), 0);

	path = conf("dup.conf", "[est]\nport = 1\n[ocsp]\nmax-age = 1\n"
	                        "[est]\nport = 2\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 6: 'est.port' "
	         "given twice (first on line 2)",
	         path);
	assert_msg(&err, want);

	path = conf("empty.conf", "[est]\nport =\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 2: est.port: empty "
	         "value",
	         path);
	assert_msg(&err, want);
	path = conf("empty2.conf", "[est]\nport = ; nothing\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	assert_msg_has(&err, "line 2: est.port: empty value");

	path = conf("syntax.conf", "[est]\nport = 1\nenabled\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	snprintf(want, sizeof(want),
	         "config file %s line 3: expected "
	         "'[section]' or 'key = value'",
	         path);
	assert_msg(&err, want);
	path = conf("syntax2.conf", "[est\nport = 1\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	assert_msg_has(&err, "line 1: expected '[section]'");
	path = conf("syntax4.conf", "[est] port = 1\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	assert_msg_has(&err, "line 1: text after '[est]'");
	path = conf("syntax5.conf", "[est] ; comment\nport = 7\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 7);
	path = conf("syntax6.conf", "[est]\nport = 1\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	/* The first error wins, whichever kind. */
	path = conf("syntax3.conf", "[est]\nprot = 1\nenabled\n");
	assert_int_equal(config_load_file(cfg, path, &err), -1);
	assert_msg_has(&err, "line 2: unknown key 'est.prot'");

	/* An empty file, or one with only comments, changes nothing. */
	path = conf("nothing.conf", "");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	path = conf("comments.conf", "; nothing\n# here\n\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	assert_int_equal(config_get_int(cfg, "est.port"), 1);
	config_free(cfg);
}

static void
test_dump(void **state)
{
	struct config *cfg = new_config();
	char *buf = NULL, want[256];
	struct error err;
	size_t len = 0;
	const char *path;
	FILE *fp;

	(void)state;
	path = conf("dump.conf", "[est]\nport = 9443\n");
	assert_int_equal(config_load_file(cfg, path, &err), 0);
	fp = open_memstream(&buf, &len);
	assert_non_null(fp);
	assert_int_equal(config_dump(cfg, fp), 0);
	fclose(fp);
	snprintf(want, sizeof(want),
	         "est.port         9443%30sfile %s line "
	         "2\n",
	         "", path);
	if (strstr(buf, want) == NULL)
		fail_msg("dump lacks\n%s\nin\n%s", want, buf);
	assert_non_null(strstr(buf, "\nnode.name        (unset)"));
	assert_non_null(strstr(buf, "\nnode.comment     \"\""));
	assert_non_null(strstr(buf, "\nest.max-body     64k "));
	free(buf);

	buf = NULL;
	fp = open_memstream(&buf, &len);
	assert_non_null(fp);
	assert_int_equal(config_help(cfg, "ISELAB_", fp), 0);
	fclose(fp);
	assert_non_null(strstr(buf, "est.port (int 1..65535, default 8084, "
	                            "env ISELAB_EST_PORT)\n    EST port\n"));
	assert_non_null(strstr(buf, "node.passphrase (string, secret: file "
	                            "or environment only, env "
	                            "ISELAB_NODE_PASSPHRASE)"));
	assert_non_null(strstr(buf, "ocsp.max-age (duration 1s..7d"));
	assert_non_null(strstr(buf, "ocsp.hierarchy (enum rfc6960|legacy"));
	free(buf);
	config_free(cfg);
}

static void
test_bad_table(void **state)
{
	static const struct config_key dup[] = {
	    {"a.b", CONFIG_STRING, "x", "", 0, 0, NULL, 0},
	    {"a.b", CONFIG_STRING, "y", "", 0, 0, NULL, 0},
	};
	static const struct config_key collide[] = {
	    {"a.b-c", CONFIG_STRING, "x", "", 0, 0, NULL, 0},
	    {"a.b_c", CONFIG_STRING, "y", "", 0, 0, NULL, 0},
	};
	static const struct config_key badname[] = {
	    {"Port", CONFIG_INT, "1", "", 1, 2, NULL, 0},
	};
	static const struct config_key baddef[] = {
	    {"a.port", CONFIG_INT, "0", "", 1, 2, NULL, 0},
	};
	static const struct config_key nodef[] = {
	    {"a.port", CONFIG_INT, NULL, "", 1, 2, NULL, 0},
	};
	static const struct config_key nochoice[] = {
	    {"a.mode", CONFIG_ENUM, "x", "", 0, 0, NULL, 0},
	};
	struct error err;

	(void)state;
	assert_null(config_new(dup, ARRAY_SIZE(dup), &err));
	assert_msg(&err, "config table: a.b and a.b are the same environment "
	                 "variable");
	assert_null(config_new(collide, ARRAY_SIZE(collide), &err));
	assert_msg_has(&err, "a.b_c and a.b-c");
	assert_null(config_new(badname, ARRAY_SIZE(badname), &err));
	assert_msg_has(&err, "bad key name 'Port'");
	assert_null(config_new(baddef, ARRAY_SIZE(baddef), &err));
	assert_msg(&err, "config table: default: a.port: '0' is not a number "
	                 "from 1 to 2");
	assert_null(config_new(nodef, ARRAY_SIZE(nodef), &err));
	assert_null(config_new(nochoice, ARRAY_SIZE(nochoice), &err));
	config_free(NULL);
}

/* Run fn in a child; it must die of SIGABRT (a programming error). */
static void
assert_aborts(void (*fn)(struct config *))
{
	struct config *cfg = new_config();
	pid_t pid;
	int st;

	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		if (fd != -1)
			dup2(fd, 2);
		fn(cfg);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
	config_free(cfg);
}

static void
get_unknown(struct config *cfg)
{
	(void)config_get_int(cfg, "est.prot");
}

static void
get_wrong_type(struct config *cfg)
{
	(void)config_get_int(cfg, "est.enabled");
}

static void
get_unset_required(struct config *cfg)
{
	static const struct config_key req[] = {
	    {"a.n", CONFIG_INT, NULL, "", 0, 9, NULL, CONFIG_F_REQUIRED},
	};
	struct config *c = config_new(req, 1, NULL);

	(void)cfg;
	(void)config_get_int(c, "a.n");
}

static void
test_programming_errors_abort(void **state)
{
	(void)state;
	assert_aborts(get_unknown);
	assert_aborts(get_wrong_type);
	assert_aborts(get_unset_required);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_file),
	    cmocka_unit_test(test_env),
	    cmocka_unit_test(test_flags),
	    cmocka_unit_test(test_listen_address),
	    cmocka_unit_test(test_precedence_every_order),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_good_values),
	    cmocka_unit_test(test_secret),
	    cmocka_unit_test(test_failed_file_keeps_values),
	    cmocka_unit_test(test_file_limits),
	    cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_dump),
	    cmocka_unit_test(test_bad_table),
	    cmocka_unit_test(test_programming_errors_abort),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
