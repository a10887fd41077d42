/*
 * node: identity file and data directory layout; see node.h.
 */
#include "node.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

static const char *const role_names[] = { "pan", "san", "psn", NULL };
static const char *const hierarchy_names[] = { "rfc6960", "legacy", NULL };

/* node.conf: written by us, but a person may read and (carefully) edit it. */
static const struct config_key identity_keys[] = {
	{ "node.hostname", CONFIG_STRING, NULL, "this node's host name", 0, 0,
	    NULL, CONFIG_F_REQUIRED },
	{ "node.role", CONFIG_ENUM, NULL, "pan, san or psn", 0, 0, role_names,
	    CONFIG_F_REQUIRED },
	{ "deployment.id", CONFIG_STRING, NULL, "deployment identifier", 0, 0,
	    NULL, CONFIG_F_REQUIRED },
	{ "deployment.ocsp-hierarchy", CONFIG_ENUM, "rfc6960",
	    "issuer of PSN OCSP responder certificates", 0, 0,
	    hierarchy_names, 0 },
	{ "deployment.created", CONFIG_INT, NULL,
	    "when the node was created (seconds since 1970)", 0, INT64_MAX,
	    NULL, CONFIG_F_REQUIRED },
};

const char *
node_role_name(enum node_role role)
{
	if ((unsigned)role > NODE_ROLE_PSN)
		return "?";
	return role_names[role];
}

const char *
node_ocsp_hierarchy_name(enum node_ocsp_hierarchy h)
{
	if ((unsigned)h > NODE_OCSP_LEGACY)
		return "?";
	return hierarchy_names[h];
}

int
node_ocsp_hierarchy_from_name(const char *name, enum node_ocsp_hierarchy *h,
    struct error *err)
{
	int i;

	for (i = 0; hierarchy_names[i] != NULL; i++)
		if (strcmp(name, hierarchy_names[i]) == 0) {
			*h = (enum node_ocsp_hierarchy)i;
			return 0;
		}
	error_set(err, "unknown OCSP hierarchy '%s' (rfc6960 or legacy)",
	    name);
	return -1;
}

int
node_hostname_check(const char *host, struct error *err)
{
	size_t len = strlen(host), label = 0, i;

	if (len == 0 || len > NODE_HOSTNAME_MAX) {
		error_set(err, "host name must have 1 to %d characters",
		    NODE_HOSTNAME_MAX);
		return -1;
	}
	for (i = 0; i < len; i++) {
		char c = host[i];

		if (c == '.') {
			if (label == 0 || host[i - 1] == '-')
				goto bad;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '-'))
			goto bad;
		if (c == '-' && label == 0)
			goto bad;
		if (++label > 63)
			goto bad;
	}
	if (label == 0 || host[len - 1] == '-')
		goto bad;
	return 0;
bad:
	error_set(err, "'%s' is not a valid host name (RFC 1123: letters, "
	    "digits and inner hyphens, labels of 1 to 63 characters)", host);
	return -1;
}

int
node_path(char *buf, size_t len, const char *datadir, const char *rel,
    struct error *err)
{
	if ((size_t)snprintf(buf, len, "%s/%s", datadir, rel) >= len) {
		error_set(err, "path %s/%s is too long", datadir, rel);
		return -1;
	}
	return 0;
}

int
node_new_deployment_id(char out[NODE_DEPLOYMENT_ID_LEN + 1],
    struct error *err)
{
	unsigned char raw[NODE_DEPLOYMENT_ID_LEN / 2];

	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		error_set(err, "RAND_bytes failed");
		return -1;
	}
	hex_encode(raw, sizeof(raw), out);
	return 0;
}

int
node_identity_write(const char *datadir, const struct node_identity *id,
    struct error *err)
{
	char path[4096], text[1024];
	int n;

	if (node_path(path, sizeof(path), datadir, NODE_IDENTITY_FILE, err))
		return -1;
	n = snprintf(text, sizeof(text),
	    "# Identity of this node, written once when it was created.\n"
	    "# Changing it by hand breaks the node's link to its deployment.\n"
	    "[node]\n"
	    "hostname = %s\n"
	    "role = %s\n"
	    "\n"
	    "[deployment]\n"
	    "id = %s\n"
	    "ocsp-hierarchy = %s\n"
	    "created = %" PRId64 "\n",
	    id->hostname, node_role_name(id->role), id->deployment_id,
	    node_ocsp_hierarchy_name(id->ocsp_hierarchy), id->created);
	if (n < 0 || (size_t)n >= sizeof(text)) {
		error_set(err, "%s: identity too long", path);
		return -1;
	}
	return file_write_atomic(path, text, (size_t)n, 0644, err);
}

int
node_identity_read(const char *datadir, struct node_identity *id,
    struct error *err)
{
	struct config *cfg;
	char path[4096];
	int rc = -1;

	if (node_path(path, sizeof(path), datadir, NODE_IDENTITY_FILE, err))
		return -1;
	if (!file_exists(path)) {
		error_set(err, "%s holds no node (no %s); create one with "
		    "init or join", datadir, NODE_IDENTITY_FILE);
		return -1;
	}
	if ((cfg = config_new(identity_keys, ARRAY_SIZE(identity_keys),
		 err)) == NULL)
		return -1;
	if (config_load_file(cfg, path, err) == -1 ||
	    config_check(cfg, NULL, err) == -1)
		goto out;
	memset(id, 0, sizeof(*id));
	snprintf(id->hostname, sizeof(id->hostname), "%s",
	    config_get_string(cfg, "node.hostname"));
	if (node_hostname_check(id->hostname, err) == -1) {
		error_prefix(err, "%s", path);
		goto out;
	}
	id->role = (enum node_role)config_get_enum(cfg, "node.role");
	if (strlen(config_get_string(cfg, "deployment.id")) !=
	    NODE_DEPLOYMENT_ID_LEN) {
		error_set(err, "%s: deployment.id must be %d hex digits", path,
		    NODE_DEPLOYMENT_ID_LEN);
		goto out;
	}
	snprintf(id->deployment_id, sizeof(id->deployment_id), "%s",
	    config_get_string(cfg, "deployment.id"));
	id->ocsp_hierarchy = (enum node_ocsp_hierarchy)config_get_enum(cfg,
	    "deployment.ocsp-hierarchy");
	id->created = config_get_int(cfg, "deployment.created");
	rc = 0;
out:
	config_free(cfg);
	return rc;
}

char *
node_passphrase(const char *file, size_t *len, struct error *err)
{
	return passphrase_load(file, file != NULL ? NULL : NODE_PASSPHRASE_ENV,
	    len, err);
}

/* Longest path below the data directory, and a generation file's text. */
#define NODE_CA_PATH_MAX     4096
#define NODE_CA_GEN_TEXT_MAX 16

int
node_ca_path(const char *datadir, char *buf, size_t len, struct error *err,
        const char *fmt, ...)
{
	char rel[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(rel)) {
		error_set(err, "path too long");
		return -1;
	}
	return node_path(buf, len, datadir, rel, err);
}

unsigned
node_ca_generation(const char *datadir)
{
	char path[NODE_CA_PATH_MAX], *text;
	unsigned long gen;
	size_t len;

	if (node_ca_path(datadir, path, sizeof(path), NULL, "%s/%s", NODE_CA_DIR,
	            NODE_CA_GENERATION) == -1 ||
	    (text = (char *)file_read(path, NODE_CA_GEN_TEXT_MAX, &len,
	                              NULL)) == NULL)
		return 1;
	gen = strtoul(text, NULL, 10);
	free(text);
	return gen >= 1 && gen < UINT32_MAX ? (unsigned)gen : 1;
}

int
node_ca_install(const char *datadir, const char *const *files, size_t nfiles,
                unsigned gen, struct error *err)
{
	char next[NODE_CA_PATH_MAX], cur[NODE_CA_PATH_MAX], prev[NODE_CA_PATH_MAX];
	char text[NODE_CA_GEN_TEXT_MAX];
	size_t i;

	if (node_ca_path(datadir, prev, sizeof(prev), err, "%s/gen-%u", NODE_CA_DIR,
	            gen - 1) == -1 ||
	    dir_create(prev, 0700, err) == -1)
		return -1;
	for (i = 0; i < nfiles; i++) {
		const char *f = files[i];

		if (node_ca_path(datadir, next, sizeof(next), err, "%s/%s/%s",
		            NODE_CA_DIR, NODE_CA_NEXT, f) == -1 ||
		    node_ca_path(datadir, cur, sizeof(cur), err, "%s/%s",
		            NODE_CA_DIR, f) == -1 ||
		    node_ca_path(datadir, prev, sizeof(prev), err, "%s/gen-%u/%s",
		            NODE_CA_DIR, gen - 1, f) == -1)
			return -1;
		if (!file_exists(next))
			continue; /* moved by an earlier, interrupted run */
		/* The old file stays reachable under gen-<N-1>/ first. */
		if (file_exists(cur) && !file_exists(prev) &&
		    link(cur, prev) == -1) {
			error_set(err, "cannot keep %s as %s: %s", cur, prev,
			          strerror(errno));
			return -1;
		}
		if (rename(next, cur) == -1) {
			error_set(err, "cannot install %s: %s", next,
			          strerror(errno));
			return -1;
		}
	}
	snprintf(text, sizeof(text), "%u\n", gen);
	if (node_ca_path(datadir, cur, sizeof(cur), err, "%s/%s", NODE_CA_DIR,
	            NODE_CA_GENERATION) == -1 ||
	    file_write_atomic(cur, text, strlen(text), 0600, err) == -1)
		return -1;
	/* next/ is done with: its generation file, then the directory. */
	if (node_ca_path(datadir, next, sizeof(next), err, "%s/%s/%s", NODE_CA_DIR,
	            NODE_CA_NEXT, NODE_CA_GENERATION) == -1)
		return -1;
	(void)unlink(next);
	if (node_ca_path(datadir, next, sizeof(next), err, "%s/%s", NODE_CA_DIR,
	            NODE_CA_NEXT) == -1)
		return -1;
	if (rmdir(next) == -1 && errno != ENOENT)
		log_warn(LOG_MAIN, "%s left behind: %s", next,
		         strerror(errno));
	log_info(LOG_MAIN, "root CA chain generation %u installed", gen);
	return 0;
}

