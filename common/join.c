/*
 * join: join strings, the join exchange, saving what a join brings, and the
 * member daemon shared by `psn run` and `san run` (pid file, signals,
 * heartbeat link, store, control socket, loop, and the hooks through which
 * a role adds its own services); see join.h and docs/registration.md.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "cert.h"
#include "certwatch.h"
#include "chain.h"
#include "config.h"
#include "csr.h"
#include "curve.h"
#include "events.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "msg.h"
#include "node.h"
#include "outbox.h"
#include "proc.h"
#include "store.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define JOIN_PATH_MAX 4096
/* First reconnect delay of the join; ZeroMQ doubles it up to the max. */
#define JOIN_RECONNECT_IVL_MS 250
/* Longest reconnect delay: the backoff's ceiling. */
#define JOIN_RECONNECT_IVL_MAX_MS 4000
/*
 * Longest a CURVE handshake may take once TCP is up: a server that accepts
 * and then says nothing is dropped and retried rather than waited for.
 */
#define JOIN_HANDSHAKE_IVL_MS 10000
/* Poll interval while the handshake is done but the pipe is not attached. */
#define JOIN_SEND_RETRY_MS 20
/* Reconnect delays of the member daemon's link to the PAN. */
#define LINK_RECONNECT_IVL_MS     500
#define LINK_RECONNECT_IVL_MAX_MS 5000
/* Retry delay of a heartbeat that found no connection up. */
#define LINK_RETRY_MS 200
/*
 * Heartbeats queued at most while the PAN is away: one stale heartbeat is
 * as good as a hundred, and ZMQ_IMMEDIATE keeps even that one out of the
 * queue of a connection that is not up.
 */
#define LINK_SNDHWM 2
/* A catch-up request unanswered for this long is sent again. */
#define LINK_CATCHUP_RETRY_MS 3000
/* Longest IPv6 address text in brackets (INET6_ADDRSTRLEN - 1). */
#define JOIN_IPV6_TEXT_MAX 45
/* Longest status text the daemon sends (a page of text). */
#define JOIN_STATUS_MAX (64 * 1024)

/* The inproc endpoint the join exchange's socket monitor publishes on. */
#define JOIN_MONITOR_ENDPOINT "inproc://iselab-join-monitor"
/* The monitor events the join acts on (and logs). */
#define JOIN_MONITOR_EVENTS                                                    \
	(ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED |                     \
	 ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |              \
	 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |                                \
	 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                                 \
	 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

static const char *const role_choices[] = {"pan", "san", "psn", NULL};
static const char *const hierarchy_choices[] = {"rfc6960", "legacy", NULL};
static const char *const level_choices[] = {"error", "warn", "info", "debug",
                                            NULL};

/*
 * Join strings.
 */

static bool
is_hex(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* Copy a hex field of exactly want digits, lower-cased. */
static int
hex_field(const char *what, const char *s, size_t len, size_t want, char *out,
          struct error *err)
{
	size_t i;

	if (len != want) {
		error_set(err,
		          "join string: the %s must be %zu hex digits, "
		          "found %zu characters",
		          what, want, len);
		return -1;
	}
	if (!is_hex(s, len)) {
		error_set(err,
		          "join string: the %s holds a character that is "
		          "not a hex digit",
		          what);
		return -1;
	}
	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[len] = '\0';
	return 0;
}

static bool
all_digits_and_dots(const char *s)
{
	for (; *s != '\0'; s++)
		if (!isdigit((unsigned char)*s) && *s != '.')
			return false;
	return true;
}

/*
 * host:port as a join string or a deployment config carries it; writes
 * "tcp://host:port" (IPv6 in brackets) into endpoint.
 */
static int
parse_address(const char *addr, char *endpoint, size_t len, struct error *err)
{
	char host[NODE_HOSTNAME_MAX + 1];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *colon, *port;
	bool v6 = false;
	size_t hlen, i;
	long p;

	if (*addr == '\0') {
		error_set(err, "no PAN address (host:port)");
		return -1;
	}
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (close == NULL) {
			error_set(err,
			          "PAN address '%s': '[' without ']' around "
			          "the IPv6 address",
			          addr);
			return -1;
		}
		hlen = (size_t)(close - addr - 1);
		if (hlen == 0 || hlen > JOIN_IPV6_TEXT_MAX) {
			error_set(err, "PAN address '%s': bad IPv6 address",
			          addr);
			return -1;
		}
		memcpy(host, addr + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, bin) != 1) {
			error_set(err,
			          "PAN address '%s': '%s' is not an IPv6 "
			          "address",
			          addr, host);
			return -1;
		}
		if (close[1] != ':') {
			error_set(err,
			          "PAN address '%s' has no port after the "
			          "IPv6 address ([addr]:port)",
			          addr);
			return -1;
		}
		port = close + 2;
		v6 = true;
	} else {
		if ((colon = strrchr(addr, ':')) == NULL) {
			error_set(err,
			          "PAN address '%s' has no port (host:port)",
			          addr);
			return -1;
		}
		hlen = (size_t)(colon - addr);
		if (memchr(addr, ':', hlen) != NULL) {
			error_set(err,
			          "PAN address '%s': an IPv6 address must be "
			          "in brackets ([::1]:8671)",
			          addr);
			return -1;
		}
		if (hlen == 0 || hlen > NODE_HOSTNAME_MAX) {
			error_set(err, "PAN address '%s': %s host", addr,
			          hlen == 0 ? "no" : "too long a");
			return -1;
		}
		memcpy(host, addr, hlen);
		host[hlen] = '\0';
		if (all_digits_and_dots(host)) {
			if (inet_pton(AF_INET, host, bin) != 1) {
				error_set(err,
				          "PAN address '%s': '%s' is not an "
				          "IPv4 address",
				          addr, host);
				return -1;
			}
		} else if (node_hostname_check(host, err) == -1) {
			error_prefix(err, "PAN address '%s'", addr);
			return -1;
		}
		port = colon + 1;
	}
	/* Digits only: strtol would take "+80", " 80" and "0x50". */
	for (i = 0; port[i] != '\0'; i++)
		if (!isdigit((unsigned char)port[i]) || i >= 5) {
			error_set(err,
			          "PAN address '%s': port '%s' is not a number "
			          "from 1 to 65535",
			          addr, port);
			return -1;
		}
	p = i > 0 ? strtol(port, NULL, 10) : 0;
	if (p < 1 || p > 65535) {
		error_set(err,
		          "PAN address '%s': port '%s' is not a number from 1 "
		          "to 65535",
		          addr, port);
		return -1;
	}
	if ((size_t)snprintf(endpoint, len,
	                     v6 ? "tcp://[%s]:%ld" : "tcp://%s:%ld", host,
	                     p) >= len) {
		error_set(err, "PAN address '%s' is too long", addr);
		return -1;
	}
	return 0;
}

/* Check an endpoint "tcp://host:port" and normalise it into out. */
static int
parse_endpoint(const char *endpoint, char *out, size_t len, struct error *err)
{
	if (strncmp(endpoint, "tcp://", 6) != 0) {
		error_set(err, "endpoint '%s' does not start with tcp://",
		          endpoint);
		return -1;
	}
	return parse_address(endpoint + 6, out, len, err);
}

const char *
join_endpoint_address(const char *endpoint)
{
	if (strncmp(endpoint, "tcp://", 6) == 0)
		return endpoint + 6;
	return endpoint;
}

/* "30s", "1m30s" or "500ms" for messages. */
static void
duration_text(int64_t ms, char *buf, size_t len)
{
	if (ms % 1000 != 0)
		snprintf(buf, len, "%" PRId64 "ms", ms);
	else if (ms >= 60000 && ms % 60000 == 0)
		snprintf(buf, len, "%" PRId64 "m", ms / 60000);
	else
		snprintf(buf, len, "%" PRId64 "s", ms / 1000);
}

int
join_ticket_parse(const char *s, struct join_ticket *t, struct error *err)
{
	char buf[JOIN_TICKET_MAX + 1], key_hex[2 * CURVE_KEY_LEN + 1];
	char *fields[4], *p, *at;
	size_t len, i, n;
	int rc = -1;

	memset(t, 0, sizeof(*t));
	/* A pasted line may come with blanks and a line end around it. */
	while (isspace((unsigned char)*s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	if (len == 0) {
		error_set(err, "the join string is empty");
		return -1;
	}
	if (len > JOIN_TICKET_MAX) {
		error_set(err,
		          "the join string is %zu characters long; a join "
		          "string is at most %d",
		          len, JOIN_TICKET_MAX);
		return -1;
	}
	for (i = 0; i < len; i++)
		if (!isgraph((unsigned char)s[i])) {
			error_set(err,
			          "the join string holds a blank or control "
			          "character at position %zu (was it cut "
			          "across lines?)",
			          i + 1);
			return -1;
		}
	memcpy(buf, s, len);
	buf[len] = '\0';

	if ((at = strchr(buf, '@')) == NULL) {
		error_set(err, "the join string has no '@host:port' at its end "
		               "(is it cut short?)");
		goto out;
	}
	*at++ = '\0';
	if (strchr(at, '@') != NULL) {
		error_set(err, "the join string holds more than one '@'");
		goto out;
	}
	p = buf;
	for (n = 0; n < ARRAY_SIZE(fields) && p != NULL; n++)
		fields[n] = strsep(&p, ".");
	if (strcmp(fields[0], JOIN_TICKET_PREFIX) != 0) {
		error_set(err,
		          "the join string does not start with '%s.' (is it "
		          "the line `pan node add` printed?)",
		          JOIN_TICKET_PREFIX);
		goto out;
	}
	if (n != ARRAY_SIZE(fields) || p != NULL) {
		error_set(err,
		          "the join string must have 4 fields separated by "
		          "'.' before the '@' (%s.<token-id>.<secret>."
		          "<pan-key>), found %s",
		          JOIN_TICKET_PREFIX, p != NULL ? "more" : "fewer");
		goto out;
	}
	if (hex_field("token id", fields[1], strlen(fields[1]),
	              JOIN_TOKEN_ID_HEX, t->token_id, err) == -1 ||
	    hex_field("secret", fields[2], strlen(fields[2]), JOIN_SECRET_HEX,
	              t->secret, err) == -1 ||
	    hex_field("PAN key", fields[3], strlen(fields[3]),
	              2 * CURVE_KEY_LEN, key_hex, err) == -1)
		goto out;
	if (hex_decode(key_hex, t->pan_curve_public, CURVE_KEY_LEN) !=
	    CURVE_KEY_LEN) {
		error_set(err, "join string: the PAN key does not decode");
		goto out;
	}
	if (parse_address(at, t->endpoint, sizeof(t->endpoint), err) == -1) {
		error_prefix(err, "join string");
		goto out;
	}
	rc = 0;
out:
	secure_zero(buf, sizeof(buf));
	if (rc == -1)
		secure_zero(t, sizeof(*t));
	return rc;
}

int
join_ticket_format(const struct join_ticket *t, char *buf, size_t len,
                   struct error *err)
{
	char key_hex[2 * CURVE_KEY_LEN + 1];
	struct join_ticket check;
	int n;

	if (strncmp(t->endpoint, "tcp://", 6) != 0) {
		error_set(err, "PAN endpoint '%s' does not start with tcp://",
		          t->endpoint);
		return -1;
	}
	hex_encode(t->pan_curve_public, CURVE_KEY_LEN, key_hex);
	n = snprintf(buf, len, "%s.%s.%s.%s@%s", JOIN_TICKET_PREFIX,
	             t->token_id, t->secret, key_hex, t->endpoint + 6);
	if (n < 0 || (size_t)n >= len) {
		error_set(err, "join string does not fit in %zu bytes", len);
		return -1;
	}
	/* Never print what the joining node would refuse. */
	if (join_ticket_parse(buf, &check, err) == -1) {
		secure_zero(buf, len);
		return -1;
	}
	secure_zero(&check, sizeof(check));
	return 0;
}

/*
 * Deployment config.
 */

static enum node_role
role_from_msg(Iselab__Role r, bool *ok)
{
	*ok = true;
	switch (r) {
	case ISELAB__ROLE__ROLE_PAN:
		return NODE_ROLE_PAN;
	case ISELAB__ROLE__ROLE_SAN:
		return NODE_ROLE_SAN;
	case ISELAB__ROLE__ROLE_PSN:
		return NODE_ROLE_PSN;
	default:
		*ok = false;
		return NODE_ROLE_PAN;
	}
}

static Iselab__Role
role_to_msg(enum node_role r)
{
	switch (r) {
	case NODE_ROLE_PAN:
		return ISELAB__ROLE__ROLE_PAN;
	case NODE_ROLE_SAN:
		return ISELAB__ROLE__ROLE_SAN;
	case NODE_ROLE_PSN:
		return ISELAB__ROLE__ROLE_PSN;
	}
	return ISELAB__ROLE__ROLE_UNSPECIFIED;
}

int
join_deployment_from_msg(const Iselab__DeploymentConfig *c,
                         const struct join_ticket *t, struct join_deployment *d,
                         struct error *err)
{
	size_t i;
	bool ok;

	memset(d, 0, sizeof(*d));
	if (c == NULL) {
		error_set(err, "the PAN sent no deployment config");
		return -1;
	}
	if (c->deployment_id == NULL ||
	    strlen(c->deployment_id) != NODE_DEPLOYMENT_ID_LEN ||
	    !is_hex(c->deployment_id, NODE_DEPLOYMENT_ID_LEN)) {
		error_set(err,
		          "the PAN sent a deployment id that is not %d "
		          "hex digits",
		          NODE_DEPLOYMENT_ID_LEN);
		return -1;
	}
	memcpy(d->id, c->deployment_id, NODE_DEPLOYMENT_ID_LEN);
	d->epoch = c->epoch;
	switch (c->ocsp_hierarchy) {
	case ISELAB__OCSP_HIERARCHY__OCSP_HIERARCHY_RFC6960:
		d->hierarchy = NODE_OCSP_RFC6960;
		break;
	case ISELAB__OCSP_HIERARCHY__OCSP_HIERARCHY_LEGACY:
		d->hierarchy = NODE_OCSP_LEGACY;
		break;
	default:
		error_set(err, "the PAN sent no OCSP hierarchy (value %d)",
		          (int)c->ocsp_hierarchy);
		return -1;
	}
	d->session_services = c->session_services;
	if (c->n_admin_nodes == 0 || c->n_admin_nodes > JOIN_ADMIN_MAX) {
		error_set(err,
		          "the PAN sent %zu admin nodes; a deployment has 1 "
		          "to %d",
		          c->n_admin_nodes, JOIN_ADMIN_MAX);
		return -1;
	}
	for (i = 0; i < c->n_admin_nodes; i++) {
		const Iselab__AdminNode *a = c->admin_nodes[i];
		struct join_admin *o = &d->admin[i];

		if (a == NULL || a->hostname == NULL ||
		    node_hostname_check(a->hostname, err) == -1) {
			error_prefix(err,
			             "admin node %zu of the deployment "
			             "config",
			             i + 1);
			return -1;
		}
		snprintf(o->hostname, sizeof(o->hostname), "%s", a->hostname);
		o->role = role_from_msg(a->role, &ok);
		if (!ok || o->role == NODE_ROLE_PSN) {
			error_set(err,
			          "admin node %s has role %d, not pan or "
			          "san",
			          a->hostname, (int)a->role);
			return -1;
		}
		if (a->messaging_endpoint == NULL ||
		    a->messaging_endpoint[0] == '\0') {
			if (o->role != NODE_ROLE_PAN || t == NULL) {
				error_set(err,
				          "admin node %s has no messaging "
				          "endpoint",
				          a->hostname);
				return -1;
			}
			/* The PAN we joined through is where it is. */
			snprintf(o->messaging, sizeof(o->messaging), "%s",
			         t->endpoint);
		} else if (parse_endpoint(a->messaging_endpoint, o->messaging,
		                          sizeof(o->messaging), err) == -1) {
			error_prefix(err, "admin node %s", a->hostname);
			return -1;
		}
		if (a->events_endpoint != NULL &&
		    a->events_endpoint[0] != '\0' &&
		    parse_endpoint(a->events_endpoint, o->events,
		                   sizeof(o->events), err) == -1) {
			error_prefix(err, "admin node %s", a->hostname);
			return -1;
		}
		if (a->curve_public_key.len == 0 && o->role == NODE_ROLE_PAN &&
		    t != NULL) {
			memcpy(o->curve_public, t->pan_curve_public,
			       CURVE_KEY_LEN);
		} else if (a->curve_public_key.len != CURVE_KEY_LEN) {
			error_set(err,
			          "admin node %s has a CURVE key of %zu "
			          "bytes, not %d",
			          a->hostname, a->curve_public_key.len,
			          CURVE_KEY_LEN);
			return -1;
		} else
			memcpy(o->curve_public, a->curve_public_key.data,
			       CURVE_KEY_LEN);
		if (o->role == NODE_ROLE_PAN && t != NULL &&
		    memcmp(o->curve_public, t->pan_curve_public,
		           CURVE_KEY_LEN) != 0) {
			error_set(err,
			          "the PAN's deployment config names another "
			          "CURVE key for %s than the join string",
			          a->hostname);
			return -1;
		}
	}
	d->nadmin = c->n_admin_nodes;
	return 0;
}

const struct join_admin *
join_deployment_pan(const struct join_deployment *d)
{
	size_t i;

	for (i = 0; i < d->nadmin; i++)
		if (d->admin[i].role == NODE_ROLE_PAN)
			return &d->admin[i];
	return d->nadmin > 0 ? &d->admin[0] : NULL;
}

/* deployment.conf keys: admin1 is required, admin2 optional. */
#define ADMIN_KEYS(n, req)                                                     \
	{"admin" #n ".hostname",                                               \
	 CONFIG_STRING,                                                        \
	 NULL,                                                                 \
	 "admin node host name",                                               \
	 0,                                                                    \
	 0,                                                                    \
	 NULL,                                                                 \
	 req},                                                                 \
	    {"admin" #n ".role",                                               \
	     CONFIG_ENUM,                                                      \
	     "pan",                                                            \
	     "pan or san",                                                     \
	     0,                                                                \
	     0,                                                                \
	     role_choices,                                                     \
	     0},                                                               \
	    {"admin" #n ".messaging",                                          \
	     CONFIG_STRING,                                                    \
	     NULL,                                                             \
	     "messaging endpoint (tcp://host:8671)",                           \
	     0,                                                                \
	     0,                                                                \
	     NULL,                                                             \
	     req},                                                             \
	    {"admin" #n ".events",                                             \
	     CONFIG_STRING,                                                    \
	     NULL,                                                             \
	     "events endpoint (tcp://host:8672)",                              \
	     0,                                                                \
	     0,                                                                \
	     NULL,                                                             \
	     CONFIG_F_EMPTY_OK},                                               \
	{                                                                      \
		"admin" #n ".curve-public", CONFIG_STRING, NULL,               \
		    "CURVE public key, 64 hex digits", 0, 0, NULL, req         \
	}

static const struct config_key deployment_keys[] = {
    {"deployment.id", CONFIG_STRING, NULL, "deployment identifier", 0, 0, NULL,
     CONFIG_F_REQUIRED},
    {"deployment.epoch", CONFIG_INT, "0",
     "raised by every promotion of an admin node", 0, INT64_MAX, NULL, 0},
    {"deployment.ocsp-hierarchy", CONFIG_ENUM, "rfc6960",
     "issuer of PSN OCSP responder certificates", 0, 0, hierarchy_choices, 0},
    {"deployment.session-services", CONFIG_BOOL, "off",
     "this node runs session services", 0, 0, NULL, 0},
    ADMIN_KEYS(1, CONFIG_F_REQUIRED),
    ADMIN_KEYS(2, 0),
};

/* Append one "key = value" line, refusing one the reader would refuse. */
static int
conf_line(FILE *fp, const char *path, const char *key, const char *value,
          struct error *err)
{
	if (strlen(key) + 3 + strlen(value) > CONFIG_LINE_MAX) {
		error_set(err,
		          "%s: the line for %s would be longer than %d "
		          "characters",
		          path, key, CONFIG_LINE_MAX);
		return -1;
	}
	fprintf(fp, "%s = %s\n", key, value);
	return 0;
}

int
join_deployment_write(const char *datadir, const struct join_deployment *d,
                      struct error *err)
{
	char path[JOIN_PATH_MAX], hex[2 * CURVE_KEY_LEN + 1], num[32];
	char *text = NULL;
	size_t len = 0, i;
	FILE *fp;
	int rc = -1;

	if (node_path(path, sizeof(path), datadir, JOIN_DEPLOYMENT_FILE, err) ==
	    -1)
		return -1;
	if ((fp = open_memstream(&text, &len)) == NULL) {
		error_set(err, "open_memstream: %s", strerror(errno));
		return -1;
	}
	fprintf(fp, "# The deployment as this node learned it when it "
	            "joined.\n[deployment]\n");
	snprintf(num, sizeof(num), "%" PRIu64, d->epoch);
	if (conf_line(fp, path, "id", d->id, err) == -1 ||
	    conf_line(fp, path, "epoch", num, err) == -1 ||
	    conf_line(fp, path, "ocsp-hierarchy",
	              node_ocsp_hierarchy_name(d->hierarchy), err) == -1 ||
	    conf_line(fp, path, "session-services",
	              d->session_services ? "on" : "off", err) == -1)
		goto out;
	for (i = 0; i < d->nadmin && i < JOIN_ADMIN_MAX; i++) {
		const struct join_admin *a = &d->admin[i];

		fprintf(fp, "\n[admin%zu]\n", i + 1);
		hex_encode(a->curve_public, CURVE_KEY_LEN, hex);
		if (conf_line(fp, path, "hostname", a->hostname, err) == -1 ||
		    conf_line(fp, path, "role", node_role_name(a->role), err) ==
		        -1 ||
		    conf_line(fp, path, "messaging", a->messaging, err) == -1 ||
		    (a->events[0] != '\0' &&
		     conf_line(fp, path, "events", a->events, err) == -1) ||
		    conf_line(fp, path, "curve-public", hex, err) == -1)
			goto out;
	}
	if (fflush(fp) != 0 || ferror(fp)) {
		error_set(err, "%s: out of memory", path);
		goto out;
	}
	rc = 0;
out:
	fclose(fp);
	if (rc == 0)
		rc = file_write_atomic(path, text, len, 0644, err);
	free(text);
	return rc;
}

static int
admin_read(const struct config *cfg, int n, const char *path,
           struct join_admin *a, struct error *err)
{
	char key[CONFIG_NAME_MAX];
	const char *v;

	memset(a, 0, sizeof(*a));
	snprintf(key, sizeof(key), "admin%d.hostname", n);
	if ((v = config_get_string(cfg, key)) == NULL)
		return 0;
	if (node_hostname_check(v, err) == -1) {
		error_prefix(err, "%s: %s", path, key);
		return -1;
	}
	snprintf(a->hostname, sizeof(a->hostname), "%s", v);
	snprintf(key, sizeof(key), "admin%d.role", n);
	a->role = (enum node_role)config_get_enum(cfg, key);
	snprintf(key, sizeof(key), "admin%d.messaging", n);
	if ((v = config_get_string(cfg, key)) == NULL ||
	    parse_endpoint(v, a->messaging, sizeof(a->messaging), err) == -1) {
		if (v == NULL)
			error_set(err, "%s: %s is missing", path, key);
		else
			error_prefix(err, "%s: %s", path, key);
		return -1;
	}
	snprintf(key, sizeof(key), "admin%d.events", n);
	if ((v = config_get_string(cfg, key)) != NULL && v[0] != '\0' &&
	    parse_endpoint(v, a->events, sizeof(a->events), err) == -1) {
		error_prefix(err, "%s: %s", path, key);
		return -1;
	}
	snprintf(key, sizeof(key), "admin%d.curve-public", n);
	if ((v = config_get_string(cfg, key)) == NULL ||
	    strlen(v) != 2 * CURVE_KEY_LEN ||
	    hex_decode(v, a->curve_public, CURVE_KEY_LEN) != CURVE_KEY_LEN) {
		error_set(err, "%s: %s must be %d hex digits", path, key,
		          2 * CURVE_KEY_LEN);
		return -1;
	}
	return 1;
}

int
join_deployment_read(const char *datadir, struct join_deployment *d,
                     struct error *err)
{
	struct config *cfg;
	char path[JOIN_PATH_MAX];
	const char *id;
	int i, r, rc = -1;

	memset(d, 0, sizeof(*d));
	if (node_path(path, sizeof(path), datadir, JOIN_DEPLOYMENT_FILE, err) ==
	    -1)
		return -1;
	if ((cfg = config_new(deployment_keys, ARRAY_SIZE(deployment_keys),
	                      err)) == NULL)
		return -1;
	if (config_load_file(cfg, path, err) == -1 ||
	    config_check(cfg, NULL, err) == -1)
		goto out;
	id = config_get_string(cfg, "deployment.id");
	if (strlen(id) != NODE_DEPLOYMENT_ID_LEN ||
	    !is_hex(id, NODE_DEPLOYMENT_ID_LEN)) {
		error_set(err, "%s: deployment.id must be %d hex digits", path,
		          NODE_DEPLOYMENT_ID_LEN);
		goto out;
	}
	memcpy(d->id, id, NODE_DEPLOYMENT_ID_LEN + 1);
	d->epoch = (uint64_t)config_get_int(cfg, "deployment.epoch");
	d->hierarchy = (enum node_ocsp_hierarchy)config_get_enum(
	    cfg, "deployment.ocsp-hierarchy");
	d->session_services =
	    config_get_bool(cfg, "deployment.session-services");
	for (i = 1; i <= JOIN_ADMIN_MAX; i++) {
		if ((r = admin_read(cfg, i, path, &d->admin[d->nadmin], err)) ==
		    -1)
			goto out;
		d->nadmin += (size_t)r;
	}
	rc = 0;
out:
	config_free(cfg);
	return rc;
}

/*
 * The join exchange.
 */

/* What the monitor of the join's DEALER reports. */
struct monitor_event {
	uint16_t event;
	uint32_t value;
};

/* Read one event: a 6-byte frame (event, value) and the endpoint frame. */
static int
monitor_read(void *mon, struct monitor_event *ev)
{
	zmq_msg_t m;
	uint8_t *p;
	int rc = -1, more;

	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) == -1)
		goto out;
	if (zmq_msg_size(&m) < 6)
		goto drain;
	p = zmq_msg_data(&m);
	memcpy(&ev->event, p, sizeof(ev->event));
	memcpy(&ev->value, p + 2, sizeof(ev->value));
	rc = 0;
drain:
	more = zmq_msg_more(&m);
	while (more) {
		if (zmq_msg_recv(&m, mon, 0) == -1)
			break;
		more = zmq_msg_more(&m);
	}
out:
	zmq_msg_close(&m);
	return rc;
}

/*
 * Receive one multipart message and keep its last frame: a ROUTER may or
 * may not put an empty delimiter before the payload.  Returns a malloc'd
 * copy, NULL with errno EAGAIN when nothing waits.
 */
static uint8_t *
recv_payload(void *sock, size_t *len, int flags)
{
	zmq_msg_t m;
	uint8_t *buf = NULL;
	int more;

	zmq_msg_init(&m);
	do {
		if (zmq_msg_recv(&m, sock, flags) == -1) {
			free(buf);
			zmq_msg_close(&m);
			return NULL;
		}
		more = zmq_msg_more(&m);
		if (zmq_msg_size(&m) > 0 || !more) {
			free(buf);
			*len = zmq_msg_size(&m);
			if ((buf = malloc(*len > 0 ? *len : 1)) != NULL)
				memcpy(buf, zmq_msg_data(&m), *len);
		}
		flags = 0;
	} while (more);
	zmq_msg_close(&m);
	if (buf == NULL)
		errno = ENOMEM;
	return buf;
}

/* Pack env and send it as one frame; -1 with err set. */
static int
send_envelope(void *sock, const Iselab__Envelope *env, int flags,
              struct error *err)
{
	uint8_t *buf;
	size_t len;
	int rc;

	if ((buf = msg_pack(env, &len, err)) == NULL)
		return -1;
	rc = zmq_send(sock, buf, len, flags);
	free(buf);
	if (rc == -1) {
		int saved = errno;

		error_set(err, "zmq_send: %s", zmq_strerror(saved));
		errno = saved; /* EAGAIN tells the caller to try again */
		return -1;
	}
	return 0;
}

/*
 * A CURVE client socket of ours: the PAN's key, our key pair, no linger,
 * our message size limit, reconnect backoff.
 */
static void *
curve_client(void *zctx, int type, const char *endpoint,
             const unsigned char server[CURVE_KEY_LEN], EVP_PKEY *key, int ivl,
             int ivl_max, struct error *err)
{
	char pub[CURVE_Z85_LEN], sec[CURVE_Z85_LEN];
	int64_t maxmsg = MSG_MAX_SIZE;
	int zero = 0, one = 1;
	void *s;

	if (curve_z85(key, pub, sec, err) == -1)
		return NULL;
	if ((s = zmq_socket(zctx, type)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		goto fail;
	}
	if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, CURVE_KEY_LEN) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) == -1 ||
	    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl)) == -1 ||
	    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max,
	                   sizeof(ivl_max)) == -1 ||
	    /* Queue only on connections that are up (and authenticated). */
	    zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof(one)) == -1 ||
	    (strchr(endpoint, '[') != NULL &&
	     zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof(one)) == -1)) {
		error_set(err, "zmq_setsockopt: %s", zmq_strerror(errno));
		goto fail;
	}
	secure_zero(sec, sizeof(sec));
	return s;
fail:
	secure_zero(sec, sizeof(sec));
	if (s != NULL)
		zmq_close(s);
	return NULL;
}

/* Build and send the JoinRequest. */
static int
join_send_request(void *sock, const struct join_ticket *t,
                  const struct join_request *req, uint64_t request_id,
                  struct error *err)
{
	Iselab__Envelope env;
	Iselab__JoinRequest jr = ISELAB__JOIN_REQUEST__INIT;
	unsigned char secret[JOIN_SECRET_LEN], pub[CURVE_KEY_LEN];
	size_t len = sizeof(pub);
	int rc = -1;

	if (!EVP_PKEY_get_raw_public_key(req->curve_key, pub, &len) ||
	    len != CURVE_KEY_LEN) {
		log_crypto(LOG_MESSAGING, err, "EVP_PKEY_get_raw_public_key",
		           "CURVE key");
		return -1;
	}
	if (hex_decode(t->secret, secret, sizeof(secret)) != JOIN_SECRET_LEN) {
		error_set(err, "join string: the secret does not decode");
		return -1;
	}
	msg_init(&env, request_id, req->hostname);
	jr.token_id = (char *)t->token_id;
	jr.token_secret.data = secret;
	jr.token_secret.len = sizeof(secret);
	jr.hostname = (char *)req->hostname;
	jr.role = role_to_msg(req->role);
	jr.curve_public_key.data = pub;
	jr.curve_public_key.len = sizeof(pub);
	jr.ca_csr.data = (uint8_t *)req->ca_csr;
	jr.ca_csr.len = req->ca_csr_len;
	if (req->ocsp_csr != NULL) {
		jr.ocsp_csr.data = (uint8_t *)req->ocsp_csr;
		jr.ocsp_csr.len = req->ocsp_csr_len;
	}
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_REQUEST;
	env.join_request = &jr;
	/* The handshake is done: this cannot block for long. */
	rc = send_envelope(sock, &env, ZMQ_DONTWAIT, err);
	secure_zero(secret, sizeof(secret));
	return rc;
}

/* Handle one message during the join: 1 done, 0 keep waiting, -1 failed. */
static int
join_handle_reply(void *sock, uint64_t request_id, const char *addr,
                  Iselab__Envelope **out, struct error *err)
{
	Iselab__Envelope *env;
	struct error why;
	uint8_t *buf;
	size_t len;

	if ((buf = recv_payload(sock, &len, ZMQ_DONTWAIT)) == NULL)
		return 0;
	env = msg_unpack(buf, len, NULL, &why);
	free(buf);
	if (env == NULL) {
		log_warn(LOG_MESSAGING,
		         "dropped a message from the PAN at %s: %s", addr,
		         why.msg);
		return 0;
	}
	if (env->request_id != request_id) {
		log_warn(
		    LOG_MESSAGING,
		    "dropped a '%s' message from the PAN at %s for request "
		    "%" PRIu64 " (ours is %" PRIu64 ")",
		    msg_body_name(env->body_case), addr, env->request_id,
		    request_id);
		msg_free(env);
		return 0;
	}
	switch (env->body_case) {
	case ISELAB__ENVELOPE__BODY_JOIN_RESPONSE:
		*out = env;
		return 1;
	case ISELAB__ENVELOPE__BODY_ERROR:
		error_set(err, "the PAN at %s refused the join: %s", addr,
		          env->error->message != NULL &&
		                  env->error->message[0] != '\0'
		              ? env->error->message
		              : "(no reason given)");
		msg_free(env);
		return -1;
	default:
		log_warn(
		    LOG_MESSAGING,
		    "dropped an unexpected '%s' message from the PAN at %s",
		    msg_body_name(env->body_case), addr);
		msg_free(env);
		return 0;
	}
}

Iselab__Envelope *
join_exchange(const struct join_ticket *t, const struct join_request *req,
              struct error *err)
{
	Iselab__Envelope *resp = NULL;
	struct monitor_event ev;
	const char *addr = join_endpoint_address(t->endpoint);
	void *zctx, *sock = NULL, *mon = NULL;
	int64_t timeout, deadline, now;
	uint64_t request_id;
	bool ready = false, sent = false;
	int ivl, hs = JOIN_HANDSHAKE_IVL_MS, r, unbounded = 0;
	long wait;
	char when[32];

	timeout =
	    req->timeout_ms > 0 ? req->timeout_ms : JOIN_TIMEOUT_DEFAULT_MS;
	ivl = req->reconnect_ivl_ms > 0 ? (int)req->reconnect_ivl_ms
	                                : JOIN_RECONNECT_IVL_MS;
	/* Any value works; a random one never matches a stale reply. */
	if (RAND_bytes((unsigned char *)&request_id, sizeof(request_id)) != 1)
		request_id = (uint64_t)time_now_ms();
	if ((zctx = zmq_ctx_new()) == NULL) {
		error_set(err, "zmq_ctx_new: %s", zmq_strerror(errno));
		return NULL;
	}
	if ((sock = curve_client(zctx, ZMQ_DEALER, t->endpoint,
	                         t->pan_curve_public, req->curve_key, ivl,
	                         JOIN_RECONNECT_IVL_MAX_MS, err)) == NULL)
		goto out;
	if (hs > timeout)
		hs = (int)timeout;
	if (zmq_setsockopt(sock, ZMQ_HANDSHAKE_IVL, &hs, sizeof(hs)) == -1) {
		error_set(err, "zmq_setsockopt: %s", zmq_strerror(errno));
		goto out;
	}
	/*
	 * The monitor must be listening before the first connect.  libzmq
	 * sends monitor events blocking, from its I/O thread, while holding
	 * the lock that zmq_socket_monitor(NULL) needs: a full monitor pipe
	 * would deadlock our cleanup.  So: only the events we act on, and an
	 * unbounded pipe on the reading side (RCVHWM 0).
	 */
	if (zmq_socket_monitor(sock, JOIN_MONITOR_ENDPOINT,
	                       JOIN_MONITOR_EVENTS) == -1 ||
	    (mon = zmq_socket(zctx, ZMQ_PAIR)) == NULL ||
	    zmq_setsockopt(mon, ZMQ_RCVHWM, &unbounded, sizeof(unbounded)) ==
	        -1 ||
	    zmq_connect(mon, JOIN_MONITOR_ENDPOINT) == -1) {
		error_set(err, "zmq_socket_monitor: %s", zmq_strerror(errno));
		goto out;
	}
	if (zmq_connect(sock, t->endpoint) == -1) {
		error_set(err, "cannot connect to %s: %s", t->endpoint,
		          zmq_strerror(errno));
		goto out;
	}
	log_info(LOG_MESSAGING, "joining through the PAN at %s as %s (%s)",
	         addr, req->hostname, node_role_name(req->role));
	deadline = time_mono_ms() + timeout;
	while ((now = time_mono_ms()) < deadline) {
		zmq_pollitem_t items[2] = {
		    {mon, 0, ZMQ_POLLIN, 0},
		    {sock, 0, ZMQ_POLLIN, 0},
		};

		/*
		 * After the handshake the pipe may reach the socket a moment
		 * after the monitor's event: poll briefly and send again.
		 */
		wait = (long)(deadline - now);
		if (ready && !sent && wait > JOIN_SEND_RETRY_MS)
			wait = JOIN_SEND_RETRY_MS;
		if (zmq_poll(items, 2, wait) == -1) {
			if (errno == EINTR)
				continue;
			error_set(err, "zmq_poll: %s", zmq_strerror(errno));
			goto out;
		}
		while (monitor_read(mon, &ev) == 0) {
			switch (ev.event) {
			case ZMQ_EVENT_CONNECT_RETRIED:
				log_info(LOG_MESSAGING,
				         "cannot reach the PAN at %s yet; "
				         "retrying in %u ms",
				         addr, ev.value);
				break;
			case ZMQ_EVENT_CONNECTED:
				log_debug(LOG_MESSAGING,
				          "TCP connection to %s up; CURVE "
				          "handshake",
				          addr);
				break;
			case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
				log_info(
				    LOG_MESSAGING,
				    "the server at %s holds the PAN key of "
				    "the join string",
				    addr);
				ready = true;
				break;
			case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
			case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
			case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
				/*
				 * CURVE (RFC 26) fails when the server cannot
				 * open our HELLO, which only the holder of
				 * the secret key can: stop before any token.
				 */
				error_set(err,
				          "the server at %s does not hold the "
				          "PAN key of the join string (man in "
				          "the middle?)",
				          addr);
				log_error(LOG_MESSAGING,
				          "%s (handshake event 0x%x, value %u)",
				          err != NULL ? err->msg
				                      : "handshake "
				                        "failed",
				          ev.event, ev.value);
				goto out;
			case ZMQ_EVENT_DISCONNECTED:
				if (sent && resp == NULL) {
					log_warn(
					    LOG_MESSAGING,
					    "lost the connection to the PAN "
					    "at %s; the request goes again "
					    "once it is back",
					    addr);
					sent = false;
				}
				ready = false;
				break;
			default:
				break;
			}
		}
		/* Belt and braces: the token leaves only after the proof. */
		if (ready && !sent) {
			if (join_send_request(sock, t, req, request_id, err) ==
			    -1) {
				if (errno != EAGAIN)
					goto out;
				/* The pipe is not attached yet: next event. */
			} else {
				sent = true;
				log_info(LOG_MESSAGING,
				         "join request for %s sent to %s",
				         req->hostname, addr);
			}
		}
		while ((r = join_handle_reply(sock, request_id, addr, &resp,
		                              err)) != 0) {
			if (r == -1)
				goto out;
			if (resp != NULL)
				goto out;
		}
	}
	duration_text(timeout, when, sizeof(when));
	if (sent)
		error_set(err, "no answer from the PAN at %s after %s", addr,
		          when);
	else if (ready)
		error_set(err,
		          "the PAN at %s took the connection but the join "
		          "request could not be sent within %s",
		          addr, when);
	else
		error_set(err, "cannot reach the PAN at %s after %s", addr,
		          when);
out:
	/*
	 * Stop the monitor while its reader is still there: libzmq's monitor
	 * sends its last event blocking, and with no peer it would wait
	 * forever.
	 */
	if (sock != NULL) {
		if (mon != NULL)
			while (monitor_read(mon, &ev) == 0)
				;
		zmq_socket_monitor(sock, NULL, 0);
		zmq_close(sock);
	}
	if (mon != NULL)
		zmq_close(mon);
	zmq_ctx_term(zctx);
	return resp;
}

/*
 * Checking what the PAN sent.
 */

void
join_material_free(struct join_material *m)
{
	X509_free(m->ca_cert);
	X509_free(m->ocsp_cert);
	chain_free(m->chain);
	memset(m, 0, sizeof(*m));
}

/* cert holds key, and its CN is the product's for profile and host. */
static int
check_issued(X509 *cert, EVP_PKEY *key, enum cert_profile profile,
             const char *hostname, struct error *err)
{
	char want[CERT_CN_BUF], got[CERT_CN_BUF];

	if (EVP_PKEY_eq(X509_get0_pubkey(cert), key) != 1) {
		error_set(err,
		          "the PAN sent a %s certificate for another key than "
		          "the one this node asked for",
		          cert_profile_name(profile));
		return -1;
	}
	if (cert_profile_cn(profile, hostname, want, sizeof(want), err) == -1 ||
	    cert_subject_cn(cert, got, sizeof(got), err) == -1)
		return -1;
	if (strcmp(want, got) != 0) {
		error_set(err,
		          "the PAN sent a certificate for '%s', expected '%s'",
		          got, want);
		return -1;
	}
	return 0;
}

int
join_material_check(const Iselab__JoinResponse *resp,
                    const struct join_ticket *t, const char *hostname,
                    enum node_role role, EVP_PKEY *ca_key, EVP_PKEY *ocsp_key,
                    struct join_material *m, struct error *err)
{
	STACK_OF(X509) *untrusted = NULL, *anchors = NULL;
	enum cert_profile profile;
	X509 *x;
	size_t i;
	int rc = -1;

	memset(m, 0, sizeof(*m));
	profile = role == NODE_ROLE_PSN ? CERT_PROFILE_ENDPOINT_SUB_CA
	                                : CERT_PROFILE_NODE_CA;
	if (join_deployment_from_msg(resp->config, t, &m->deployment, err) ==
	    -1)
		goto out;
	if (resp->ca_cert.len == 0) {
		error_set(err, "the PAN sent no CA certificate");
		goto out;
	}
	if ((m->ca_cert = cert_parse_der(resp->ca_cert.data, resp->ca_cert.len,
	                                 err)) == NULL) {
		error_prefix(err, "the PAN's CA certificate");
		goto out;
	}
	if (check_issued(m->ca_cert, ca_key, profile, hostname, err) == -1)
		goto out;
	if (resp->n_chain == 0 || resp->n_chain > CHAIN_BUNDLE_MAX) {
		error_set(err,
		          "the PAN sent a chain of %zu certificates; expected "
		          "1 to %d",
		          resp->n_chain, CHAIN_BUNDLE_MAX);
		goto out;
	}
	if ((m->chain = sk_X509_new_null()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL ||
	    (anchors = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < resp->n_chain; i++) {
		if ((x = cert_parse_der(resp->chain[i].data, resp->chain[i].len,
		                        err)) == NULL) {
			error_prefix(err, "certificate %zu of the PAN's chain",
			             i + 1);
			goto out;
		}
		if (sk_X509_push(m->chain, x) <= 0) {
			X509_free(x);
			error_set(err, "out of memory");
			goto out;
		}
		if (i + 1 < resp->n_chain && sk_X509_push(untrusted, x) <= 0) {
			error_set(err, "out of memory");
			goto out;
		}
	}
	m->root = sk_X509_value(m->chain, (int)resp->n_chain - 1);
	if (X509_check_issued(m->root, m->root) != X509_V_OK) {
		error_set(err, "the last certificate of the PAN's chain is not "
		               "a self-signed root");
		goto out;
	}
	/*
	 * Trust on first use, but not blind: the root arrived over CURVE
	 * from the key in the join string, which the admin copied from the
	 * PAN.  The path must still hold under RFC 5280 (strict).
	 */
	if (sk_X509_push(anchors, m->root) <= 0) {
		error_set(err, "out of memory");
		goto out;
	}
	if (chain_verify(m->ca_cert, untrusted, anchors, CHAIN_PURPOSE_ANY,
	                 NULL, err) == -1) {
		error_prefix(err, "the PAN's chain does not verify");
		goto out;
	}
	if (role == NODE_ROLE_PSN &&
	    m->deployment.hierarchy == NODE_OCSP_LEGACY) {
		if (resp->ocsp_cert.len == 0) {
			error_set(err, "the PAN sent no OCSP responder "
			               "certificate (legacy hierarchy)");
			goto out;
		}
		if ((m->ocsp_cert = cert_parse_der(resp->ocsp_cert.data,
		                                   resp->ocsp_cert.len, err)) ==
		    NULL) {
			error_prefix(err,
			             "the PAN's OCSP responder certificate");
			goto out;
		}
		if (check_issued(m->ocsp_cert, ocsp_key,
		                 CERT_PROFILE_OCSP_RESPONDER, hostname,
		                 err) == -1)
			goto out;
		if (chain_verify(m->ocsp_cert, untrusted, anchors,
		                 CHAIN_PURPOSE_OCSP_SIGN, NULL, err) == -1) {
			error_prefix(err, "the OCSP responder certificate does "
			                  "not verify");
			goto out;
		}
	} else if (resp->ocsp_cert.len != 0) {
		log_warn(LOG_MESSAGING,
		         "the PAN sent an OCSP responder certificate that the "
		         "%s hierarchy does not use; ignored",
		         node_ocsp_hierarchy_name(m->deployment.hierarchy));
	}
	rc = 0;
out:
	/* The stacks borrow the chain's certificates. */
	sk_X509_free(untrusted);
	sk_X509_free(anchors);
	if (rc == -1)
		join_material_free(m);
	return rc;
}

/*
 * Saving, with rollback.
 */

void
join_files_init(struct join_files *f)
{
	memset(f, 0, sizeof(*f));
}

int
join_files_add(struct join_files *f, const char *path, struct error *err)
{
	size_t i;

	for (i = 0; i < f->npaths; i++)
		if (strcmp(f->paths[i], path) == 0)
			return 0;
	if (f->npaths == JOIN_FILES_MAX) {
		error_set(err, "more than %d files in one join",
		          JOIN_FILES_MAX);
		return -1;
	}
	if ((f->paths[f->npaths] = strdup(path)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	f->npaths++;
	return 0;
}

int
join_files_mkdir(struct join_files *f, const char *datadir, const char *rel,
                 mode_t mode, struct error *err)
{
	char path[JOIN_PATH_MAX];
	struct stat st;

	if (rel == NULL)
		snprintf(path, sizeof(path), "%s", datadir);
	else if (node_path(path, sizeof(path), datadir, rel, err) == -1)
		return -1;
	if (stat(path, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			error_set(err, "%s exists and is not a directory",
			          path);
			return -1;
		}
		return 0;
	}
	if (f->ndirs == JOIN_FILES_MAX) {
		error_set(err, "more than %d directories in one join",
		          JOIN_FILES_MAX);
		return -1;
	}
	if (dir_create(path, mode, err) == -1)
		return -1;
	if ((f->dirs[f->ndirs] = strdup(path)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	f->ndirs++;
	return 0;
}

int
join_files_save_key(struct join_files *f, const char *datadir, const char *rel,
                    const EVP_PKEY *key, const char *pass, size_t passlen,
                    struct error *err)
{
	char path[JOIN_PATH_MAX];

	if (node_path(path, sizeof(path), datadir, rel, err) == -1 ||
	    join_files_add(f, path, err) == -1)
		return -1;
	return key_save(key, path, pass, passlen, err);
}

int
join_files_save_cert(struct join_files *f, const char *datadir, const char *rel,
                     X509 *cert, struct error *err)
{
	char path[JOIN_PATH_MAX];

	if (node_path(path, sizeof(path), datadir, rel, err) == -1 ||
	    join_files_add(f, path, err) == -1)
		return -1;
	return cert_save_pem(cert, path, err);
}

int
join_files_save_common(struct join_files *f, const char *datadir,
                       const struct join_material *m, EVP_PKEY *curve_key,
                       const char *pass, size_t passlen, struct error *err)
{
	char path[JOIN_PATH_MAX], pub[CURVE_Z85_LEN];

	if (node_path(path, sizeof(path), datadir, NODE_CA_DIR "/chain.pem",
	              err) == -1 ||
	    join_files_add(f, path, err) == -1 ||
	    chain_save_pem(m->chain, path, err) == -1)
		return -1;
	if (join_files_save_cert(f, datadir, NODE_CA_DIR "/root-ca.crt",
	                         m->root, err) == -1)
		return -1;
	if (join_files_save_key(f, datadir, NODE_CURVE_KEY, curve_key, pass,
	                        passlen, err) == -1)
		return -1;
	if (curve_z85(curve_key, pub, NULL, err) == -1)
		return -1;
	/* As pan init writes it: Z85 and a line end. */
	pub[CURVE_Z85_LEN - 1] = '\n';
	if (node_path(path, sizeof(path), datadir, NODE_CURVE_PUB, err) == -1 ||
	    join_files_add(f, path, err) == -1 ||
	    file_write_atomic(path, pub, CURVE_Z85_LEN, 0644, err) == -1)
		return -1;
	if (node_path(path, sizeof(path), datadir, JOIN_DEPLOYMENT_FILE, err) ==
	        -1 ||
	    join_files_add(f, path, err) == -1)
		return -1;
	return join_deployment_write(datadir, &m->deployment, err);
}

void
join_files_rollback(struct join_files *f)
{
	char tmp[JOIN_PATH_MAX];
	size_t i;

	for (i = f->npaths; i > 0; i--) {
		if (unlink(f->paths[i - 1]) == -1 && errno != ENOENT)
			log_warn(LOG_MAIN, "cannot remove %s: %s",
			         f->paths[i - 1], strerror(errno));
		/* file_write_atomic's leftover after a failed write. */
		snprintf(tmp, sizeof(tmp), "%s.tmp", f->paths[i - 1]);
		(void)unlink(tmp);
	}
	for (i = f->ndirs; i > 0; i--)
		if (rmdir(f->dirs[i - 1]) == -1 && errno != ENOENT)
			log_warn(LOG_MAIN, "cannot remove %s: %s",
			         f->dirs[i - 1], strerror(errno));
	join_files_free(f);
}

void
join_files_free(struct join_files *f)
{
	size_t i;

	for (i = 0; i < f->npaths; i++)
		free(f->paths[i]);
	for (i = 0; i < f->ndirs; i++)
		free(f->dirs[i]);
	join_files_init(f);
}

/*
 * The heartbeat link to the PAN.
 */

struct join_link {
	void *sock;                           /* DEALER, CURVE client */
	char hostname[NODE_HOSTNAME_MAX + 1]; /* ours, the envelope sender */
	char pan[NODE_HOSTNAME_MAX + 1];      /* the PAN's host name */
	char endpoint[JOIN_ENDPOINT_MAX];     /* where it listens */
	int64_t interval_ms;                  /* heartbeat.interval */
	int64_t timeout_ms;                   /* heartbeat.timeout */
	int64_t started;                      /* mono ms of join_link_new() */
	int64_t next_send;            /* mono ms of the next heartbeat */
	int64_t last_ack;             /* mono ms of the last ack, 0: none */
	int64_t last_ack_real;        /* realtime ms of the same */
	uint64_t next_id;             /* request id of the next heartbeat */
	uint64_t pan_event_seq;       /* newest event seq the PAN announced */
	uint64_t unsent;              /* heartbeats dropped: no connection */
	enum join_link_state state;   /* what status shows */
	struct msg_stats stats;       /* what arrived on the DEALER */
	join_link_handler_fn handler; /* other bodies; NULL: none */
	void *handler_ctx;            /* its first argument */

	/* The event log (events.h): PUB from the PAN, catch-up on sock. */
	void *sub;                   /* SUB, CURVE client; NULL: no events */
	uint64_t applied;            /* last event applied here */
	join_link_events_fn apply;   /* applies events; NULL: not yet */
	void *apply_ctx;
	int64_t catchup_sent;        /* mono ms of the open request, 0: none */
	uint64_t events_published;   /* events that came on the SUB */
	uint64_t events_caught_up;   /* events that came in batches */
	bool apply_failed;           /* the last apply failed: say it once */

	/* This node's active alarms, sent in every heartbeat. */
	struct join_alarm alarms[JOIN_ALARMS_MAX];
	size_t nalarms;
	/* Its service table, likewise. */
	struct join_service services[JOIN_SERVICES_MAX];
	size_t nservices;
	/*
	 * The admin nodes (docs/san.md "Promotion"): heartbeats go to the
	 * primary; while it does not answer, to the others too (probe), and
	 * the one that answers as primary with a higher epoch is adopted.
	 */
	void *zctx;                            /* for sockets made later */
	EVP_PKEY *curve_key;                   /* ours, for those sockets */
	struct join_admin admins[JOIN_ADMIN_MAX];
	size_t nadmin;
	uint64_t epoch;                        /* the epoch we follow */
	void *probe[JOIN_ADMIN_MAX];           /* DEALERs; NULL: none */
	int64_t next_probe;                    /* mono ms */
	bool refused_logged;                   /* a lower epoch, said once */
	join_link_adopt_fn adopt;              /* a new primary adopted */
	void *adopt_ctx;
	/* A SAN: where it serves once promoted, in every heartbeat. */
	char own_messaging[JOIN_ENDPOINT_MAX];
	char own_events[JOIN_ENDPOINT_MAX];
};

const char *
join_link_state_name(enum join_link_state s)
{
	switch (s) {
	case JOIN_LINK_CONNECTING:
		return "connecting";
	case JOIN_LINK_CONNECTED:
		return "connected";
	case JOIN_LINK_DISCONNECTED:
		return "disconnected";
	}
	return "?";
}

/* The DEALER and the SUB to pan, in place of any we had. */
static int
link_connect(struct join_link *l, const struct join_admin *pan,
             struct error *err)
{
	int hwm = LINK_SNDHWM, ivl = (int)l->interval_ms;
	int hb_timeout = (int)l->timeout_ms;

	if (l->sock != NULL)
		zmq_close(l->sock);
	if (l->sub != NULL)
		zmq_close(l->sub);
	l->sock = l->sub = NULL;
	snprintf(l->pan, sizeof(l->pan), "%s", pan->hostname);
	snprintf(l->endpoint, sizeof(l->endpoint), "%s", pan->messaging);
	if ((l->sock = curve_client(l->zctx, ZMQ_DEALER, pan->messaging,
	                            pan->curve_public, l->curve_key,
	                            LINK_RECONNECT_IVL_MS,
	                            LINK_RECONNECT_IVL_MAX_MS, err)) == NULL)
		return -1;
	/*
	 * A small queue, and ZMTP heartbeats so that a PAN that vanished
	 * without a FIN (power off, cable) is noticed and reconnected to.
	 */
	if (zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm)) == -1 ||
	    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof(ivl)) ==
	        -1 ||
	    zmq_setsockopt(l->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout,
	                   sizeof(hb_timeout)) == -1) {
		error_set(err, "zmq_setsockopt: %s", zmq_strerror(errno));
		return -1;
	}
	if (zmq_connect(l->sock, pan->messaging) == -1) {
		error_set(err, "cannot connect to %s: %s", pan->messaging,
		          zmq_strerror(errno));
		return -1;
	}
	if (pan->events[0] != '\0') {
		if ((l->sub = curve_client(l->zctx, ZMQ_SUB, pan->events,
		                           pan->curve_public, l->curve_key,
		                           LINK_RECONNECT_IVL_MS,
		                           LINK_RECONNECT_IVL_MAX_MS, err)) ==
		    NULL)
			return -1;
		if (zmq_setsockopt(l->sub, ZMQ_SUBSCRIBE, "", 0) == -1 ||
		    zmq_setsockopt(l->sub, ZMQ_HEARTBEAT_IVL, &ivl,
		                   sizeof(ivl)) == -1 ||
		    zmq_setsockopt(l->sub, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout,
		                   sizeof(hb_timeout)) == -1) {
			error_set(err, "zmq_setsockopt: %s",
			          zmq_strerror(errno));
			return -1;
		}
		if (zmq_connect(l->sub, pan->events) == -1) {
			error_set(err, "cannot connect to %s: %s", pan->events,
			          zmq_strerror(errno));
			return -1;
		}
	}
	log_info(LOG_MESSAGING,
	         "heartbeats to the PAN %s at %s every %" PRId64 " ms "
	         "(timeout %" PRId64 " ms); events from %s",
	         l->pan, join_endpoint_address(l->endpoint), l->interval_ms,
	         l->timeout_ms,
	         pan->events[0] != '\0' ? join_endpoint_address(pan->events)
	                                : "nowhere (no events endpoint)");
	return 0;
}

struct join_link *
join_link_new(void *zctx, const char *hostname, const struct join_admin *pan,
              EVP_PKEY *curve_key, int64_t interval_ms, int64_t timeout_ms,
              struct error *err)
{
	struct join_link *l;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	snprintf(l->hostname, sizeof(l->hostname), "%s", hostname);
	l->interval_ms = interval_ms;
	l->timeout_ms = timeout_ms;
	l->started = time_mono_ms();
	l->next_send = l->started;
	l->next_id = 1;
	l->state = JOIN_LINK_CONNECTING;
	l->zctx = zctx;
	if (EVP_PKEY_up_ref(curve_key) != 1) {
		error_set(err, "EVP_PKEY_up_ref failed");
		free(l);
		return NULL;
	}
	l->curve_key = curve_key;
	l->admins[0] = *pan;
	l->nadmin = 1;
	if (link_connect(l, pan, err) == -1) {
		join_link_free(l);
		return NULL;
	}
	return l;
}

static int link_send_heartbeat_to(struct join_link *l, void *sock);

static void
link_probes_close(struct join_link *l)
{
	size_t i;

	for (i = 0; i < JOIN_ADMIN_MAX; i++) {
		if (l->probe[i] != NULL)
			zmq_close(l->probe[i]);
		l->probe[i] = NULL;
	}
}

/* Index of the primary (role PAN) among l->admins. */
static size_t
link_primary(const struct join_link *l)
{
	size_t i;

	for (i = 0; i < l->nadmin; i++)
		if (l->admins[i].role == NODE_ROLE_PAN)
			return i;
	return 0;
}

/* Heartbeats and events from admin node i from now on. */
static void
link_adopt(struct join_link *l, size_t i, uint64_t epoch)
{
	struct error err = {{0}};
	size_t k;

	for (k = 0; k < l->nadmin; k++)
		l->admins[k].role = k == i ? NODE_ROLE_PAN : NODE_ROLE_SAN;
	l->epoch = epoch;
	link_probes_close(l);
	log_warn(LOG_MESSAGING,
	         "the primary is now %s at %s (epoch %" PRIu64 ")",
	         l->admins[i].hostname,
	         join_endpoint_address(l->admins[i].messaging), epoch);
	if (link_connect(l, &l->admins[i], &err) == -1)
		log_error(LOG_MESSAGING, "cannot connect to %s: %s",
		          l->admins[i].hostname, err.msg);
	l->state = JOIN_LINK_CONNECTING;
	l->started = time_mono_ms();
	l->last_ack = 0;
	l->next_send = 0;
	l->catchup_sent = 0;
	l->refused_logged = false;
	if (l->adopt != NULL)
		l->adopt(l->adopt_ctx, l->admins, l->nadmin, l->epoch);
}

void
join_link_set_adopt(struct join_link *l, join_link_adopt_fn fn, void *ctx)
{
	l->adopt = fn;
	l->adopt_ctx = ctx;
}

void
join_link_set_endpoints(struct join_link *l, const char *messaging,
                        const char *events)
{
	snprintf(l->own_messaging, sizeof(l->own_messaging), "%s",
	         messaging != NULL ? messaging : "");
	snprintf(l->own_events, sizeof(l->own_events), "%s",
	         events != NULL ? events : "");
}

uint64_t
join_link_epoch(const struct join_link *l)
{
	return l->epoch;
}

const char *
join_link_primary(const struct join_link *l)
{
	return l->pan;
}

void
join_link_set_deployment(struct join_link *l, const struct join_admin *admins,
                         size_t n, uint64_t epoch)
{
	size_t primary;

	/* A lower epoch never wins (an old event replayed, say). */
	if (n == 0 || n > JOIN_ADMIN_MAX || epoch < l->epoch)
		return;
	link_probes_close(l);
	memcpy(l->admins, admins, n * sizeof(*admins));
	l->nadmin = n;
	primary = link_primary(l);
	if (strcmp(l->admins[primary].hostname, l->pan) != 0 ||
	    strcmp(l->admins[primary].messaging, l->endpoint) != 0)
		link_adopt(l, primary, epoch);
	l->epoch = epoch;
}

/* An admin node's answer to a probe: adopt it if it is a newer primary. */
static void
link_probe_read(struct join_link *l, size_t i)
{
	Iselab__Envelope *env;
	struct error err;
	uint8_t *buf;
	size_t len;

	while (l->probe[i] != NULL &&
	       (buf = recv_payload(l->probe[i], &len, ZMQ_DONTWAIT)) != NULL) {
		env = msg_unpack(buf, len, &l->stats, &err);
		free(buf);
		if (env == NULL)
			continue;
		if (env->body_case == ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK &&
		    env->heartbeat_ack->epoch > l->epoch) {
			uint64_t e = env->heartbeat_ack->epoch;

			msg_free(env);
			link_adopt(l, i, e);
			return;
		}
		if (env->body_case == ISELAB__ENVELOPE__BODY_ERROR)
			log_debug(LOG_MESSAGING,
			          "admin node %s: %s (epoch %" PRIu64 ")",
			          l->admins[i].hostname, env->error->message,
			          env->error->epoch);
		else if (env->body_case == ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK)
			log_debug(LOG_MESSAGING,
			          "admin node %s answers at epoch %" PRIu64
			          ", not above ours (%" PRIu64 "): not adopted",
			          l->admins[i].hostname,
			          env->heartbeat_ack->epoch, l->epoch);
		msg_free(env);
	}
}

/*
 * While the primary does not answer: a heartbeat to every other admin
 * node each interval, and their answers read.
 */
static void
link_probe(struct join_link *l, int64_t now)
{
	struct error err = {{0}};
	size_t i, primary = link_primary(l);

	for (i = 0; i < l->nadmin; i++) {
		if (i == primary ||
		    strcmp(l->admins[i].hostname, l->hostname) == 0)
			continue;
		if (l->probe[i] == NULL) {
			l->probe[i] = curve_client(
			    l->zctx, ZMQ_DEALER, l->admins[i].messaging,
			    l->admins[i].curve_public, l->curve_key,
			    LINK_RECONNECT_IVL_MS, LINK_RECONNECT_IVL_MAX_MS,
			    &err);
			if (l->probe[i] == NULL ||
			    zmq_connect(l->probe[i], l->admins[i].messaging) ==
			        -1) {
				log_warn(LOG_MESSAGING, "probe of %s: %s",
				         l->admins[i].hostname,
				         err.msg[0] != '\0' ? err.msg
				                            : zmq_strerror(errno));
				continue;
			}
			log_info(LOG_MESSAGING,
			         "the primary %s does not answer: asking the "
			         "admin node %s at %s",
			         l->pan, l->admins[i].hostname,
			         join_endpoint_address(l->admins[i].messaging));
		}
		link_probe_read(l, i);
		/* Adopted: the probes are gone, the loop is over. */
		if (l->probe[i] == NULL)
			return;
		if (now >= l->next_probe)
			(void)link_send_heartbeat_to(l, l->probe[i]);
	}
	if (now >= l->next_probe)
		l->next_probe = now + l->interval_ms;
}

void
join_link_free(struct join_link *l)
{
	if (l == NULL)
		return;
	if (l->sock != NULL)
		zmq_close(l->sock);
	if (l->sub != NULL)
		zmq_close(l->sub);
	link_probes_close(l);
	EVP_PKEY_free(l->curve_key);
	free(l);
}

void *
join_link_socket(const struct join_link *l)
{
	return l->sock;
}

enum join_link_state
join_link_state(const struct join_link *l)
{
	return l->state;
}

int64_t
join_link_last_ack(const struct join_link *l)
{
	return l->last_ack_real;
}

const struct msg_stats *
join_link_stats(const struct join_link *l)
{
	return &l->stats;
}

const char *
join_link_hostname(const struct join_link *l)
{
	return l->hostname;
}

void
join_link_set_handler(struct join_link *l, join_link_handler_fn fn, void *ctx)
{
	l->handler = fn;
	l->handler_ctx = ctx;
}

int
join_link_send(struct join_link *l, const Iselab__Envelope *env,
               struct error *err)
{
	/* ZMQ_IMMEDIATE: EAGAIN when no connection is up. */
	return send_envelope(l->sock, env, ZMQ_DONTWAIT, err);
}

/*
 * The event log, member side (events.h): events come on the SUB as the
 * PAN publishes them, and in EventBatch answers to our EventsRequest when
 * we missed some.  Either way they are applied in order, each once.
 */

void
join_link_set_events(struct join_link *l, uint64_t applied,
                     join_link_events_fn fn, void *ctx)
{
	l->applied = applied;
	l->apply = fn;
	l->apply_ctx = ctx;
}

void *
join_link_events_socket(const struct join_link *l)
{
	return l->sub;
}

uint64_t
join_link_applied(const struct join_link *l)
{
	return l->applied;
}

uint64_t
join_link_pan_seq(const struct join_link *l)
{
	return l->pan_event_seq > l->applied ? l->pan_event_seq : l->applied;
}

/* Ask the PAN for the events after the last applied, unless asked lately. */
static void
link_catch_up(struct join_link *l, int64_t now)
{
	Iselab__Envelope env;
	Iselab__EventsRequest req = ISELAB__EVENTS_REQUEST__INIT;
	struct error err;

	if (l->apply == NULL || l->pan_event_seq <= l->applied)
		return;
	if (l->catchup_sent != 0 &&
	    now - l->catchup_sent < LINK_CATCHUP_RETRY_MS)
		return;
	msg_init(&env, l->next_id++, l->hostname);
	req.after_seq = l->applied;
	env.body_case = ISELAB__ENVELOPE__BODY_EVENTS_REQUEST;
	env.events_request = &req;
	if (send_envelope(l->sock, &env, ZMQ_DONTWAIT, &err) == -1) {
		log_debug(LOG_MESSAGING, "events request not sent: %s",
		          err.msg);
		return;
	}
	l->catchup_sent = now;
	log_info(LOG_MESSAGING,
	         "catching up: asked the PAN %s for the events after %" PRIu64
	         " (it has %" PRIu64 ")",
	         l->pan, l->applied, l->pan_event_seq);
}

/* Apply what follows l->applied among evs; the count applied. */
static size_t
link_apply(struct join_link *l, Iselab__Event *const *evs, size_t n)
{
	struct error err = {{0}};
	uint64_t before = l->applied;
	int rc;

	if (l->apply == NULL || n == 0)
		return 0;
	rc = l->apply(l->apply_ctx, evs, n, &l->applied, &err);
	if (rc < 0) {
		/* Stay where we are: the next catch-up tries again. */
		if (!l->apply_failed)
			log_error(LOG_MESSAGING,
			          "cannot apply event %" PRIu64 ": %s",
			          before + 1, err.msg);
		l->apply_failed = true;
		return 0;
	}
	if (l->apply_failed && rc > 0)
		log_info(LOG_MESSAGING, "events apply again");
	l->apply_failed = false;
	return (size_t)rc;
}

static void
link_event_batch(struct join_link *l, const Iselab__EventBatch *b, int64_t now)
{
	size_t got;

	l->catchup_sent = 0;
	if (b->last_seq > l->pan_event_seq)
		l->pan_event_seq = b->last_seq;
	got = link_apply(l, b->events, b->n_events);
	l->events_caught_up += got;
	if (got > 0)
		log_info(LOG_MESSAGING,
		         "caught up %zu event(s), now at %" PRIu64 " of %" PRIu64,
		         got, l->applied, l->pan_event_seq);
	/* More to fetch: ask at once, as long as we move forward. */
	if (got > 0)
		link_catch_up(l, now);
}

void
join_link_recv_events(struct join_link *l, int64_t now)
{
	Iselab__Envelope *env;
	struct error err;
	uint8_t *buf;
	size_t len;

	if (l->sub == NULL)
		return;
	while ((buf = recv_payload(l->sub, &len, ZMQ_DONTWAIT)) != NULL) {
		env = msg_unpack(buf, len, &l->stats, &err);
		free(buf);
		if (env == NULL) {
			log_warn(LOG_MESSAGING,
			         "dropped an event from the PAN %s: %s", l->pan,
			         err.msg);
			continue;
		}
		if (env->body_case != ISELAB__ENVELOPE__BODY_EVENT) {
			l->stats.dropped[MSG_DROP_UNHANDLED]++;
			log_warn(LOG_MESSAGING,
			         "dropped a '%s' message on the events socket",
			         msg_body_name(env->body_case));
			msg_free(env);
			continue;
		}
		if (env->event->seq > l->pan_event_seq)
			l->pan_event_seq = env->event->seq;
		if (env->event->seq == l->applied + 1)
			l->events_published +=
			    link_apply(l, &env->event, 1);
		/* Further on than the next: we missed some. */
		link_catch_up(l, now);
		msg_free(env);
	}
}

/* This node's alarms. */

int
join_link_alarm_set(struct join_link *l, const char *name, int severity,
                    const char *text)
{
	struct join_alarm *a = NULL;
	size_t i;

	for (i = 0; i < l->nalarms; i++)
		if (strcmp(l->alarms[i].name, name) == 0)
			a = &l->alarms[i];
	if (a != NULL && a->severity == severity &&
	    strncmp(a->text, text, sizeof(a->text) - 1) == 0)
		return 0;
	if (a == NULL) {
		if (l->nalarms == JOIN_ALARMS_MAX)
			return -1;
		a = &l->alarms[l->nalarms++];
	}
	snprintf(a->name, sizeof(a->name), "%s", name);
	snprintf(a->text, sizeof(a->text), "%s", text);
	a->severity = severity;
	/* Tell the PAN now rather than at the next interval. */
	l->next_send = 0;
	return 1;
}

int
join_link_alarm_clear(struct join_link *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->nalarms; i++) {
		if (strcmp(l->alarms[i].name, name) != 0)
			continue;
		l->alarms[i] = l->alarms[--l->nalarms];
		l->next_send = 0;
		return 1;
	}
	return 0;
}

void
join_link_set_services(struct join_link *l, const struct join_service *s,
                       size_t n)
{
	if (n > JOIN_SERVICES_MAX)
		n = JOIN_SERVICES_MAX;
	memcpy(l->services, s, n * sizeof(*s));
	l->nservices = n;
}

const struct join_alarm *
join_link_alarms(const struct join_link *l, size_t *n)
{
	*n = l->nalarms;
	return l->alarms;
}

/* 0 sent, -1 not (no connection up). */
static int
link_send_heartbeat_to(struct join_link *l, void *sock)
{
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	struct error err;

	msg_init(&env, l->next_id++, l->hostname);
	hb.sent_ms = time_now_ms();
	Iselab__NodeAlarm na[JOIN_ALARMS_MAX], *nap[JOIN_ALARMS_MAX];
	Iselab__ServiceState ss[JOIN_SERVICES_MAX], *ssp[JOIN_SERVICES_MAX];
	size_t i;

	hb.last_event_seq = l->applied;
	hb.epoch = l->epoch;
	hb.messaging_endpoint = l->own_messaging;
	hb.events_endpoint = l->own_events;
	for (i = 0; i < l->nalarms; i++) {
		iselab__node_alarm__init(&na[i]);
		na[i].name = l->alarms[i].name;
		na[i].severity = (uint32_t)l->alarms[i].severity;
		na[i].text = l->alarms[i].text;
		nap[i] = &na[i];
	}
	hb.n_alarms = l->nalarms;
	hb.alarms = l->nalarms > 0 ? nap : NULL;
	for (i = 0; i < l->nservices; i++) {
		iselab__service_state__init(&ss[i]);
		ss[i].name = l->services[i].name;
		ss[i].state = l->services[i].state;
		ss[i].pid = l->services[i].pid;
		ssp[i] = &ss[i];
	}
	hb.n_services = l->nservices;
	hb.services = l->nservices > 0 ? ssp : NULL;
	env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	if (send_envelope(sock, &env, ZMQ_DONTWAIT, &err) == -1) {
		/* EAGAIN: no connection up; the next one goes fresh. */
		l->unsent++;
		log_debug(LOG_MESSAGING, "heartbeat to %s not sent: %s", l->pan,
		          err.msg);
		return -1;
	}
	log_debug(LOG_MESSAGING, "heartbeat %" PRIu64 " to %s", l->next_id - 1,
	          l->pan);
	return 0;
}

static int
link_send_heartbeat(struct join_link *l)
{
	return link_send_heartbeat_to(l, l->sock);
}

int64_t
join_link_tick(struct join_link *l, int64_t now)
{
	int64_t since, next;

	if (now >= l->next_send) {
		/*
		 * No connection up: try again soon rather than a whole
		 * interval later, so a PAN that comes back hears from us as
		 * soon as the reconnect is through.
		 */
		if (link_send_heartbeat(l) == -1 &&
		    l->interval_ms > LINK_RETRY_MS)
			l->next_send = now + LINK_RETRY_MS;
		else
			l->next_send = now + l->interval_ms;
	}
	since = now - (l->last_ack != 0 ? l->last_ack : l->started);
	if (since >= l->timeout_ms && l->state != JOIN_LINK_DISCONNECTED) {
		if (l->state == JOIN_LINK_CONNECTED)
			log_warn(LOG_MESSAGING,
			         "no heartbeat ack from the PAN %s at %s for "
			         "%" PRId64 " ms: link disconnected",
			         l->pan, join_endpoint_address(l->endpoint),
			         since);
		else
			log_warn(LOG_MESSAGING,
			         "no answer from the PAN %s at %s since the "
			         "start (%" PRId64 " ms): link disconnected",
			         l->pan, join_endpoint_address(l->endpoint),
			         since);
		l->state = JOIN_LINK_DISCONNECTED;
	}
	next = l->next_send;
	if (l->state == JOIN_LINK_DISCONNECTED && l->nadmin > 1) {
		link_probe(l, now);
		/* Their answers are read here: look again soon. */
		if (now + LINK_RETRY_MS < next)
			next = now + LINK_RETRY_MS;
	}
	if (l->state != JOIN_LINK_DISCONNECTED) {
		int64_t expire = (l->last_ack != 0 ? l->last_ack : l->started) +
		                 l->timeout_ms;

		if (expire < next)
			next = expire;
	}
	return next > now ? next - now : 0;
}

void
join_link_recv(struct join_link *l, int64_t now)
{
	Iselab__Envelope *env;
	struct error err;
	uint8_t *buf;
	size_t len;

	while ((buf = recv_payload(l->sock, &len, ZMQ_DONTWAIT)) != NULL) {
		env = msg_unpack(buf, len, &l->stats, &err);
		free(buf);
		if (env == NULL) {
			log_warn(LOG_MESSAGING,
			         "dropped a message from the PAN %s: %s",
			         l->pan, err.msg);
			continue;
		}
		switch (env->body_case) {
		case ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK:
			/* A lower epoch never wins: a former primary. */
			if (env->heartbeat_ack->epoch < l->epoch) {
				if (!l->refused_logged)
					log_warn(LOG_MESSAGING,
					         "the admin node %s answers at "
					         "epoch %" PRIu64 ", older than "
					         "%" PRIu64 ": refused as "
					         "primary (it must rejoin as "
					         "secondary)",
					         l->pan,
					         env->heartbeat_ack->epoch,
					         l->epoch);
				l->refused_logged = true;
				break;
			}
			if (env->heartbeat_ack->epoch > l->epoch) {
				l->epoch = env->heartbeat_ack->epoch;
				if (l->adopt != NULL)
					l->adopt(l->adopt_ctx, l->admins,
					         l->nadmin, l->epoch);
			}
			link_probes_close(l);
			if (l->state != JOIN_LINK_CONNECTED)
				log_info(LOG_MESSAGING,
				         "link to the PAN %s at %s %s", l->pan,
				         join_endpoint_address(l->endpoint),
				         l->state == JOIN_LINK_CONNECTING
				             ? "up"
				             : "is back");
			l->state = JOIN_LINK_CONNECTED;
			l->last_ack = now;
			l->last_ack_real = time_now_ms();
			l->pan_event_seq = env->heartbeat_ack->last_event_seq;
			link_catch_up(l, now);
			break;
		case ISELAB__ENVELOPE__BODY_EVENT_BATCH:
			link_event_batch(l, env->event_batch, now);
			break;
		case ISELAB__ENVELOPE__BODY_ERROR:
			/* Not the primary (any more): the timeout moves on. */
			if (env->error->code ==
			        ISELAB__ERROR__CODE__ERROR_NOT_PRIMARY &&
			    l->refused_logged)
				break;
			log_warn(LOG_MESSAGING, "the PAN %s says: %s", l->pan,
			         env->error->message);
			if (env->error->code ==
			    ISELAB__ERROR__CODE__ERROR_NOT_PRIMARY)
				l->refused_logged = true;
			break;
		default:
			if (l->handler != NULL &&
			    l->handler(l->handler_ctx, env) == 1)
				break;
			l->stats.dropped[MSG_DROP_UNHANDLED]++;
			log_warn(LOG_MESSAGING,
			         "dropped a '%s' message from the PAN %s",
			         msg_body_name(env->body_case), l->pan);
			break;
		}
		msg_free(env);
	}
}

/*
 * The member daemon.
 */

const struct config_key join_run_keys[] = {
    {"heartbeat.interval", CONFIG_DURATION, "5s",
     "time between two heartbeats to the PAN", 1, 3600, NULL, 0},
    {"heartbeat.timeout", CONFIG_DURATION, "15s",
     "no heartbeat ack for this long: the PAN link is disconnected", 1, 86400,
     NULL, 0},
    {"log.level", CONFIG_ENUM, "info", "log level of every category", 0, 0,
     level_choices, 0},
};
const size_t join_run_nkeys = ARRAY_SIZE(join_run_keys);

const char *const join_env_ignore[] = {NODE_ENV_NOT_SETTINGS, NULL};

/* Severity names of `alarm raise`, as AlarmSeverity numbers them. */
static const char *const alarm_severities[] = {
    "", "critical", "major", "minor", "warning", "info",
};

/*
 * `alarm raise NAME SEVERITY TEXT` / `alarm clear NAME`: a service of this
 * node (provisioning, the supervisor) reports an alarm about itself.  The
 * link sends the active ones in every heartbeat.  An exit status.
 */
static int
daemon_alarm(struct join_daemon *d, size_t argc, char **argv, char *errtext,
             size_t len)
{
	size_t i;
	int rc;

	if (strcmp(argv[1], "raise") == 0 && argc == 5) {
		for (i = 1; i < ARRAY_SIZE(alarm_severities); i++)
			if (strcmp(argv[3], alarm_severities[i]) == 0)
				break;
		if (i == ARRAY_SIZE(alarm_severities) || argv[2][0] == '\0' ||
		    strlen(argv[2]) >= sizeof(((struct join_alarm *)0)->name)) {
			snprintf(errtext, len,
			         "alarm raise: a name (under 64 characters) "
			         "and a severity: critical, major, minor, "
			         "warning or info\n");
			return 2;
		}
		rc = join_link_alarm_set(d->link, argv[2], (int)i, argv[4]);
		if (rc == -1) {
			snprintf(errtext, len, "alarm raise: %d alarms active\n",
			         JOIN_ALARMS_MAX);
			return 1;
		}
		if (rc == 1)
			log_warn(LOG_MAIN, "alarm raised: %s (%s): %s", argv[2],
			         argv[3], argv[4]);
		return 0;
	}
	if (strcmp(argv[1], "clear") == 0 && argc == 3) {
		if (join_link_alarm_clear(d->link, argv[2]) == 1)
			log_info(LOG_MAIN, "alarm cleared: %s", argv[2]);
		return 0;
	}
	snprintf(errtext, len,
	         "usage: alarm raise NAME SEVERITY TEXT | alarm clear NAME\n");
	return 2;
}

/*
 * The role's command hook for req: 0 when it answered (cr filled, *out
 * and *errout malloc'd), -1 when the role has no such command.
 */
static int
daemon_command(struct join_daemon *d, const Iselab__ControlRequest *req,
               Iselab__ControlResponse *cr, char **out, char **errout)
{
	FILE *fo = NULL, *fe = NULL;
	size_t olen = 0, elen = 0;
	int status = -1;

	if (d->hooks == NULL || d->hooks->command == NULL ||
	    req->n_argv == 0)
		return -1;
	if ((fo = open_memstream(out, &olen)) == NULL ||
	    (fe = open_memstream(errout, &elen)) == NULL) {
		if (fo != NULL)
			fclose(fo);
		free(*out);
		*out = NULL;
		log_error(LOG_MAIN, "control socket: out of memory");
		return -1;
	}
	status = d->hooks->command(d, d->hooks->arg, (int)req->n_argv,
	                           req->argv, fo, fe);
	fclose(fo);
	fclose(fe);
	if (status == -1) {
		free(*out);
		free(*errout);
		*out = *errout = NULL;
		return -1;
	}
	cr->status = status;
	cr->out = *out;
	cr->err = *errout;
	return 0;
}

/* Answer one control request on the REP socket: it must get a reply. */
static void
daemon_control(struct join_daemon *d)
{
	Iselab__Envelope *req, env;
	Iselab__ControlResponse cr = ISELAB__CONTROL_RESPONSE__INIT;
	Iselab__Error e = ISELAB__ERROR__INIT;
	struct error err = {{0}};
	char *out = NULL, *errout = NULL, errtext[ERROR_MAX + 64];
	uint8_t *buf;
	size_t len;
	uint64_t id = 0;

	if ((buf = recv_payload(d->control, &len, ZMQ_DONTWAIT)) == NULL)
		return;
	req = msg_unpack(buf, len, NULL, &err);
	free(buf);
	msg_init(&env, 0, d->id.hostname);
	if (req == NULL ||
	    req->body_case != ISELAB__ENVELOPE__BODY_CONTROL_REQUEST) {
		log_warn(LOG_MAIN, "control socket: %s",
		         req == NULL ? err.msg : "not a control request");
		e.code = ISELAB__ERROR__CODE__ERROR_BAD_REQUEST;
		e.message = req == NULL ? err.msg : "not a control request";
		env.body_case = ISELAB__ENVELOPE__BODY_ERROR;
		env.error = &e;
		goto reply;
	}
	id = req->request_id;
	env.request_id = id;
	env.body_case = ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE;
	env.control_response = &cr;
	cr.out = cr.err = "";
	if (req->control_request->n_argv == 1 &&
	    strcmp(req->control_request->argv[0], "status") == 0) {
		if ((out = join_status_text(d->role, d->datadir, d, &err)) ==
		    NULL) {
			cr.status = 1;
			snprintf(errtext, sizeof(errtext), "%s\n", err.msg);
			cr.err = errtext;
		} else
			cr.out = out;
	} else if (req->control_request->n_argv >= 3 &&
	           strcmp(req->control_request->argv[0], "alarm") == 0) {
		cr.status = daemon_alarm(d, req->control_request->n_argv,
		                         req->control_request->argv, errtext,
		                         sizeof(errtext));
		if (cr.status != 0)
			cr.err = errtext;
	} else if (daemon_command(d, req->control_request, &cr, &out,
	                          &errout) == 0) {
		/* The role's own command answered. */
	} else {
		cr.status = 2;
		snprintf(errtext, sizeof(errtext),
		         "%s: the daemon answers only 'status' and 'alarm'\n",
		         req->control_request->n_argv > 0
		             ? req->control_request->argv[0]
		             : "(empty request)");
		cr.err = errtext;
	}
reply:
	if (send_envelope(d->control, &env, 0, &err) == -1)
		log_warn(LOG_MAIN, "control socket: cannot reply: %s", err.msg);
	free(out);
	free(errout);
	msg_free(req);
}

/* 1: stop, 0: go on. */
static int
daemon_signal(struct join_daemon *d)
{
	struct signalfd_siginfo si;
	ssize_t n;
	int status;

	n = read(d->signal_fd, &si, sizeof(si));
	if (n != (ssize_t)sizeof(si))
		return 0;
	switch (si.ssi_signo) {
	case SIGINT:
	case SIGTERM:
		log_info(LOG_MAIN, "stopping on %s",
		         si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
		return 1;
	case SIGCHLD: {
		/* Every child is the role's: it supervises them. */
		pid_t pid;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			if (d->hooks->child_exited != NULL)
				d->hooks->child_exited(d, d->hooks->arg, pid,
				                       status);
		return 0;
	}
	case SIGHUP: {
		/* Log rotation: the new file under the old name. */
		char dir[JOIN_PATH_MAX];

		if (node_path(dir, sizeof(dir), d->datadir, NODE_LOG_DIR,
		              NULL) == 0 &&
		    log_open(d->id.hostname, "main", dir, true, NULL) == 0)
			log_info(LOG_MAIN, "log re-opened on SIGHUP");
		return 0;
	}
	default:
		log_info(LOG_MAIN, "signal %u ignored", si.ssi_signo);
		return 0;
	}
}

/* The status table's rows, as the heartbeats report them. */
static void
daemon_services(struct join_daemon *d)
{
	struct join_service s[JOIN_SERVICES_MAX];
	const char *state;
	size_t i, n = 0;
	pid_t pid;

	snprintf(s[n].name, sizeof(s[n].name), "Messaging Service");
	snprintf(s[n].state, sizeof(s[n].state), "running");
	s[n++].pid = (unsigned)getpid();
	for (i = 0; d->role->services[i] != NULL && n < JOIN_SERVICES_MAX;
	     i++) {
		pid = 0;
		state = d->hooks->service != NULL
		            ? d->hooks->service(d, d->hooks->arg, i, &pid)
		            : NULL;
		snprintf(s[n].name, sizeof(s[n].name), "%s",
		         d->role->services[i]);
		snprintf(s[n].state, sizeof(s[n].state), "%s",
		         state != NULL ? state : "not running");
		s[n++].pid = state != NULL && pid > 0 ? (unsigned)pid : 0;
	}
	join_link_set_services(d->link, s, n);
}

/* An expiry alarm of certwatch: into the heartbeats. */
static void
daemon_certwatch_alarm(void *arg, const char *name, int severity,
                       const char *text)
{
	struct join_daemon *d = arg;

	if (text == NULL)
		(void)join_link_alarm_clear(d->link, name);
	else if (join_link_alarm_set(d->link, name, severity, text) == -1)
		log_warn(LOG_MAIN, "alarm %s not reported: %d alarms active",
		         name, JOIN_ALARMS_MAX);
}

int
join_daemon_loop(struct join_daemon *d, struct error *err)
{
	int64_t wait, hook;

	for (;;) {
		if (d->stop)
			return 0;
		daemon_services(d);
		/* Before the items: a new primary adopted means new sockets. */
		wait = join_link_tick(d->link, time_mono_ms());
		hook = certwatch_tick(d->certwatch, time_mono_ms(),
		                      daemon_certwatch_alarm, d);
		if (hook >= 0 && hook < wait)
			wait = hook;
		if (d->hooks->tick != NULL) {
			hook = d->hooks->tick(d, d->hooks->arg, time_mono_ms());
			if (hook >= 0 && hook < wait)
				wait = hook;
		}
		zmq_pollitem_t items[5] = {
		    {join_link_socket(d->link), 0, ZMQ_POLLIN, 0},
		    {d->control, 0, ZMQ_POLLIN, 0},
		    {NULL, d->signal_fd, ZMQ_POLLIN, 0},
		    {d->extra, -1, d->extra != NULL ? ZMQ_POLLIN : 0, 0},
		    {join_link_events_socket(d->link), 0, ZMQ_POLLIN, 0},
		};
		int nitems = items[4].socket != NULL ? 5 : 4;

		if (zmq_poll(items, nitems, (long)wait) == -1) {
			if (errno == EINTR)
				continue;
			error_set(err, "zmq_poll: %s", zmq_strerror(errno));
			return -1;
		}
		if (items[0].revents & ZMQ_POLLIN)
			join_link_recv(d->link, time_mono_ms());
		if (items[1].revents & ZMQ_POLLIN)
			daemon_control(d);
		if (nitems > 4 && (items[4].revents & ZMQ_POLLIN))
			join_link_recv_events(d->link, time_mono_ms());
		if (d->extra != NULL && (items[3].revents & ZMQ_POLLIN))
			d->extra_fn(d, d->hooks->arg);
		if ((items[2].revents & ZMQ_POLLIN) && daemon_signal(d))
			return 0;
	}
}

/*
 * Status.
 */

static void
format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void
status_cert(FILE *fp, const char *datadir, const char *label, const char *file)
{
	char path[JOIN_PATH_MAX], rel[64], cn[CERT_CN_BUF];
	char serial[CERT_SERIAL_HEX_MAX], keydesc[64], when[64];
	struct error err;
	time_t na;
	X509 *cert;

	snprintf(rel, sizeof(rel), "%s/%s", NODE_CA_DIR, file);
	if (node_path(path, sizeof(path), datadir, rel, &err) == -1 ||
	    (cert = cert_load_pem(path, &err)) == NULL) {
		fprintf(fp, "  %-16s (%s)\n", label, err.msg);
		return;
	}
	if (cert_subject_cn(cert, cn, sizeof(cn), &err) == -1 ||
	    cert_serial_hex(cert, serial, sizeof(serial), &err) == -1 ||
	    cert_not_after(cert, &na, &err) == -1) {
		fprintf(fp, "  %-16s (%s)\n", label, err.msg);
		X509_free(cert);
		return;
	}
	key_describe(X509_get0_pubkey(cert), keydesc, sizeof(keydesc));
	format_time(na, when, sizeof(when));
	fprintf(fp, "  %-16s %s\n  %-16s serial %s, %s, expires %s\n", label,
	        cn, "", serial, keydesc, when);
	X509_free(cert);
}

char *
join_status_text(const struct join_role *role, const char *datadir,
                 const struct join_daemon *d, struct error *err)
{
	struct node_identity id;
	struct join_deployment dep;
	const struct join_admin *pan;
	char *text = NULL, when[64], pid[32];
	size_t len = 0, i;
	FILE *fp;
	int64_t ack;

	if (d != NULL) {
		id = d->id;
		dep = d->deployment;
	} else if (node_identity_read(datadir, &id, err) == -1 ||
	           join_deployment_read(datadir, &dep, err) == -1)
		return NULL;
	if (id.role != role->role) {
		error_set(err, "%s holds a %s node, not a %s", datadir,
		          node_role_name(id.role), role->name);
		return NULL;
	}
	if ((fp = open_memstream(&text, &len)) == NULL) {
		error_set(err, "open_memstream: %s", strerror(errno));
		return NULL;
	}
	format_time((time_t)id.created, when, sizeof(when));
	fprintf(fp, "Node:            %s (%s)\n", id.hostname, role->title);
	fprintf(fp, "Deployment:      %s, joined %s\n", id.deployment_id, when);
	fprintf(fp, "OCSP hierarchy:  %s\n",
	        node_ocsp_hierarchy_name(dep.hierarchy));
	if (role->role == NODE_ROLE_PSN)
		fprintf(fp, "Session services: %s\n",
		        dep.session_services ? "on" : "off");
	fprintf(fp, "Data directory:  %s\n", datadir);
	if ((pan = join_deployment_pan(&dep)) != NULL)
		fprintf(fp, "PAN:             %s at %s\n", pan->hostname,
		        join_endpoint_address(pan->messaging));
	if (d == NULL)
		fprintf(fp, "PAN link:        - (%s is not running)\n",
		        role->name);
	else {
		fprintf(fp, "PAN link:        %s (primary %s, epoch %" PRIu64 ")",
		        join_link_state_name(join_link_state(d->link)),
		        join_link_primary(d->link), join_link_epoch(d->link));
		if ((ack = join_link_last_ack(d->link)) != 0) {
			format_time((time_t)(ack / 1000), when, sizeof(when));
			fprintf(fp,
			        ", last heartbeat ack %s (%" PRId64 "s ago)",
			        when, (time_now_ms() - ack) / 1000);
		} else
			fprintf(fp, ", no heartbeat ack yet");
		fprintf(fp, "\n");
		/* "applied N of M": tests and scripts wait on this line. */
		fprintf(fp, "Events:          applied %" PRIu64 " of %" PRIu64
		            "\n",
		        join_link_applied(d->link), join_link_pan_seq(d->link));
		{
			const struct join_alarm *al;
			size_t n, k;

			al = join_link_alarms(d->link, &n);
			for (k = 0; k < n; k++)
				fprintf(fp, "Alarm:           %s (%s): %s\n",
				        al[k].name,
				        alarm_severities[al[k].severity],
				        al[k].text);
		}
		if (d->hooks != NULL && d->hooks->status != NULL)
			d->hooks->status(d, d->hooks->arg, fp);
	}
	fprintf(fp, "\nCA certificates:\n");
	for (i = 0; role->certs[i] != NULL; i++)
		status_cert(fp, datadir, role->cert_labels[i], role->certs[i]);
	fprintf(fp, "\nApplication status:\n%-32s %-14s %s\n", "PROCESS NAME",
	        "STATE", "PROCESS ID");
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	fprintf(fp, "%-32s %-14s %s\n", "Messaging Service",
	        d != NULL ? "running" : "not running", d != NULL ? pid : "-");
	for (i = 0; role->services[i] != NULL; i++) {
		const char *state = NULL;
		pid_t spid = 0;

		if (d != NULL && d->hooks != NULL && d->hooks->service != NULL)
			state = d->hooks->service(d, d->hooks->arg, i, &spid);
		if (state != NULL && spid > 0)
			snprintf(pid, sizeof(pid), "%ld", (long)spid);
		else
			snprintf(pid, sizeof(pid), "-");
		fprintf(fp, "%-32s %-14s %s\n", role->services[i],
		        state != NULL ? state : "not running", pid);
	}
	if (fclose(fp) != 0 || len > JOIN_STATUS_MAX) {
		error_set(err, "status text too long or out of memory");
		free(text);
		return NULL;
	}
	return text;
}

/*
 * The join command.
 */

int
join_parse_duration(const char *s, int64_t *ms, struct error *err)
{
	int64_t v = 0, mult;
	const char *p = s;

	if (!isdigit((unsigned char)*p)) {
		error_set(err, "'%s' is not a duration (30s, 5m, 500ms)", s);
		return -1;
	}
	for (; isdigit((unsigned char)*p); p++) {
		if (v > JOIN_TIMEOUT_MAX_MS) {
			error_set(err, "duration '%s' is too long", s);
			return -1;
		}
		v = v * 10 + (*p - '0');
	}
	if (*p == '\0' || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else {
		error_set(err,
		          "'%s' is not a duration: unit '%s' is not ms, s, m "
		          "or h",
		          s, p);
		return -1;
	}
	if (v == 0 || v > JOIN_TIMEOUT_MAX_MS / mult) {
		error_set(err, "duration '%s' is out of range (1ms to 24h)", s);
		return -1;
	}
	*ms = v * mult;
	return 0;
}

static void
join_usage(const struct join_role *role, FILE *fp)
{
	fprintf(fp,
	        "usage: %s join --join STRING --hostname HOST --data-dir DIR\n"
	        "                [--passphrase-file FILE] [--ca-key TYPE] "
	        "[--timeout 30s] [--force]\n"
	        "\n"
	        "  --join STRING        the line `pan node add HOST --role %s` "
	        "printed\n"
	        "  --ca-key TYPE        rsa:2048 rsa:3072 rsa:4096 ec:p256 "
	        "ec:p384, for every\n"
	        "                       key this node makes (default %s)\n"
	        "  --timeout D          give up when the PAN cannot be "
	        "reached for D\n"
	        "                       (default 30s)\n"
	        "  --passphrase-file F  the passphrase that encrypts the "
	        "keys; without it,\n"
	        "                       the environment variable %s\n"
	        "  --force              replace the node in DIR\n"
	        "\n"
	        "--data-dir may also come from %sDATA_DIR.\n",
	        role->name, role->name, JOIN_KEY_DEFAULT, NODE_PASSPHRASE_ENV,
	        NODE_ENV_PREFIX);
}

int
join_cli_parse(const struct join_role *role, int argc, char **argv,
               struct join_opts *o)
{
	static const struct option longopts[] = {
	    {"join", required_argument, NULL, 'j'},
	    {"hostname", required_argument, NULL, 'h'},
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"ca-key", required_argument, NULL, 'k'},
	    {"timeout", required_argument, NULL, 't'},
	    {"force", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct error err;
	int c;

	memset(o, 0, sizeof(*o));
	(void)key_type_from_name(JOIN_KEY_DEFAULT, &o->key_type, NULL);
	o->timeout_ms = JOIN_TIMEOUT_DEFAULT_MS;
	o->datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->join = optarg;
			break;
		case 'h':
			o->hostname = optarg;
			break;
		case 'd':
			o->datadir = optarg;
			break;
		case 'p':
			o->passphrase_file = optarg;
			break;
		case 'k':
			if (key_type_from_name(optarg, &o->key_type, &err)) {
				fprintf(stderr, "%s join: --ca-key: %s\n",
				        role->name, err.msg);
				return -1;
			}
			break;
		case 't':
			if (join_parse_duration(optarg, &o->timeout_ms, &err)) {
				fprintf(stderr, "%s join: --timeout: %s\n",
				        role->name, err.msg);
				return -1;
			}
			break;
		case 'f':
			o->force = true;
			break;
		case 'H':
			join_usage(role, stdout);
			return 1;
		default:
			join_usage(role, stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "%s join: unexpected argument '%s'\n",
		        role->name, argv[optind]);
		return -1;
	}
	if (o->join == NULL || o->hostname == NULL || o->datadir == NULL ||
	    o->datadir[0] == '\0') {
		fprintf(stderr,
		        "%s join: --join, --hostname and --data-dir are "
		        "required\n",
		        role->name);
		join_usage(role, stderr);
		return -1;
	}
	if (node_hostname_check(o->hostname, &err) == -1) {
		fprintf(stderr, "%s join: --hostname: %s\n", role->name,
		        err.msg);
		return -1;
	}
	return 0;
}

/* A key and a DER CSR with the product CN of profile for host. */
static EVP_PKEY *
join_make_csr(enum key_type type, enum cert_profile profile, const char *host,
              uint8_t **der, size_t *len, struct error *err)
{
	char cn[CERT_CN_BUF];
	X509_REQ *csr = NULL;
	EVP_PKEY *key;

	if ((key = key_generate(type, err)) == NULL)
		return NULL;
	if (cert_profile_cn(profile, host, cn, sizeof(cn), err) == -1 ||
	    (csr = csr_create(key, cn, NULL, 0, err)) == NULL)
		goto fail;
	if (csr_to_der(csr, der, len) == -1) {
		error_set(err, "cannot encode the CSR for '%s'", cn);
		goto fail;
	}
	X509_REQ_free(csr);
	return key;
fail:
	X509_REQ_free(csr);
	EVP_PKEY_free(key);
	return NULL;
}

/* With --force: the files whose presence would mix two nodes. */
static int
join_remove_previous(const char *datadir, struct error *err)
{
	static const char *const files[] = {
	    NODE_IDENTITY_FILE,
	    NODE_STORE_DIR "/data.mdb",
	    NODE_STORE_DIR "/lock.mdb",
	};
	char path[JOIN_PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(files); i++) {
		if (node_path(path, sizeof(path), datadir, files[i], err) == -1)
			return -1;
		if (unlink(path) == -1 && errno != ENOENT) {
			error_set(err, "cannot remove %s: %s", path,
			          strerror(errno));
			return -1;
		}
	}
	return 0;
}

int
join_node(const struct join_role *role, const struct join_opts *o,
          join_finish_fn finish, struct error *err)
{
	struct join_state js;
	struct join_ticket t;
	struct join_request req;
	struct node_identity id, old;
	Iselab__Envelope *env = NULL;
	const struct join_admin *pan;
	EVP_PKEY *curve = NULL;
	uint8_t *ca_csr = NULL, *ocsp_csr = NULL;
	size_t ca_csr_len = 0, ocsp_csr_len = 0;
	char *pass = NULL, path[JOIN_PATH_MAX], rel[64];
	const char *ca_name;
	size_t passlen = 0;
	int rc = -1;

	memset(&js, 0, sizeof(js));
	join_files_init(&js.files);
	js.role = role;
	js.opts = o;
	ca_name = role->role == NODE_ROLE_PSN ? "endpoint-sub-ca" : "node-ca";

	/* Refuse before any work, and before asking for the passphrase. */
	if (node_identity_read(o->datadir, &old, NULL) == 0 && !o->force) {
		error_set(err,
		          "%s already holds a node (%s, %s, deployment %s); "
		          "use --force to replace it",
		          o->datadir, old.hostname, node_role_name(old.role),
		          old.deployment_id);
		return -1;
	}
	if ((pass = node_passphrase(o->passphrase_file, &passlen, err)) == NULL)
		return -1;
	js.pass = pass;
	js.passlen = passlen;
	if (join_ticket_parse(o->join, &t, err) == -1)
		goto out;
	/* Until the node exists, its log goes to stderr only. */
	if (log_open(o->hostname, "join", NULL, true, err) == -1)
		goto out;

	log_info(LOG_MAIN, "making the keys of %s %s (%s)", role->name,
	         o->hostname, key_type_name(o->key_type));
	if ((curve = curve_generate(err)) == NULL)
		goto out;
	if ((js.ca_key = join_make_csr(
	         o->key_type,
	         role->role == NODE_ROLE_PSN ? CERT_PROFILE_ENDPOINT_SUB_CA
	                                     : CERT_PROFILE_NODE_CA,
	         o->hostname, &ca_csr, &ca_csr_len, err)) == NULL)
		goto out;
	if (role->role == NODE_ROLE_PSN &&
	    (js.ocsp_key = join_make_csr(
	         o->key_type, CERT_PROFILE_OCSP_RESPONDER, o->hostname,
	         &ocsp_csr, &ocsp_csr_len, err)) == NULL)
		goto out;

	memset(&req, 0, sizeof(req));
	req.hostname = o->hostname;
	req.role = role->role;
	req.curve_key = curve;
	req.ca_csr = ca_csr;
	req.ca_csr_len = ca_csr_len;
	req.ocsp_csr = ocsp_csr;
	req.ocsp_csr_len = ocsp_csr_len;
	req.timeout_ms = o->timeout_ms;
	if ((env = join_exchange(&t, &req, err)) == NULL)
		goto out;
	if (join_material_check(env->join_response, &t, o->hostname, role->role,
	                        js.ca_key, js.ocsp_key, &js.material,
	                        err) == -1)
		goto out;

	/* From here on every file is recorded, and removed on failure. */
	if (o->force && join_remove_previous(o->datadir, err) == -1)
		goto out;
	if (join_files_mkdir(&js.files, o->datadir, NULL, 0700, err) == -1 ||
	    join_files_mkdir(&js.files, o->datadir, NODE_CA_DIR, 0700, err) ==
	        -1)
		goto fail;
	snprintf(rel, sizeof(rel), "%s/%s.key", NODE_CA_DIR, ca_name);
	if (join_files_save_key(&js.files, o->datadir, rel, js.ca_key, pass,
	                        passlen, err) == -1)
		goto fail;
	snprintf(rel, sizeof(rel), "%s/%s.crt", NODE_CA_DIR, ca_name);
	if (join_files_save_cert(&js.files, o->datadir, rel,
	                         js.material.ca_cert, err) == -1)
		goto fail;
	if (js.ocsp_key != NULL &&
	    join_files_save_key(&js.files, o->datadir,
	                        NODE_CA_DIR "/ocsp-responder.key", js.ocsp_key,
	                        pass, passlen, err) == -1)
		goto fail;
	if (js.material.ocsp_cert != NULL &&
	    join_files_save_cert(&js.files, o->datadir,
	                         NODE_CA_DIR "/ocsp-responder.crt",
	                         js.material.ocsp_cert, err) == -1)
		goto fail;
	if (join_files_save_common(&js.files, o->datadir, &js.material, curve,
	                           pass, passlen, err) == -1)
		goto fail;
	if (finish != NULL && finish(&js, err) == -1)
		goto fail;

	/* node.conf last: its presence means "joined". */
	memset(&id, 0, sizeof(id));
	snprintf(id.hostname, sizeof(id.hostname), "%s", o->hostname);
	id.role = role->role;
	memcpy(id.deployment_id, js.material.deployment.id,
	       sizeof(id.deployment_id));
	id.ocsp_hierarchy = js.material.deployment.hierarchy;
	id.created = time(NULL);
	if (node_path(path, sizeof(path), o->datadir, NODE_IDENTITY_FILE,
	              err) == -1 ||
	    join_files_add(&js.files, path, err) == -1 ||
	    node_identity_write(o->datadir, &id, err) == -1)
		goto fail;
	join_files_free(&js.files);

	/* The node exists: its log file too. */
	if (node_path(path, sizeof(path), o->datadir, NODE_LOG_DIR, err) == 0 &&
	    dir_create(path, 0750, err) == 0)
		(void)log_open(o->hostname, "join", path, true, NULL);
	pan = join_deployment_pan(&js.material.deployment);
	log_info(LOG_MAIN, "%s joined deployment %s through the PAN %s at %s",
	         o->hostname, id.deployment_id,
	         pan != NULL ? pan->hostname : "?",
	         join_endpoint_address(t.endpoint));
	printf("%s joined deployment %s (OCSP hierarchy %s) through the PAN "
	       "%s at %s\nStart it with: %s run --data-dir %s\n",
	       o->hostname, id.deployment_id,
	       node_ocsp_hierarchy_name(id.ocsp_hierarchy),
	       pan != NULL ? pan->hostname : "?",
	       join_endpoint_address(t.endpoint), role->name, o->datadir);
	rc = 0;
	goto out;
fail:
	log_error(LOG_MAIN, "join failed, removing what it made: %s",
	          err != NULL ? err->msg : "");
	join_files_rollback(&js.files);
out:
	secure_zero(&t, sizeof(t));
	passphrase_free(pass, passlen);
	msg_free(env);
	join_material_free(&js.material);
	EVP_PKEY_free(curve);
	EVP_PKEY_free(js.ca_key);
	EVP_PKEY_free(js.ocsp_key);
	free(ca_csr);
	free(ocsp_csr);
	return rc;
}

int
join_main(const struct join_role *role, join_finish_fn finish, int argc,
          char **argv)
{
	struct join_opts o;
	struct error err = {{0}};
	int r;

	if ((r = join_cli_parse(role, argc, argv, &o)) != 0)
		return r == 1 ? JOIN_EXIT_OK : JOIN_EXIT_USAGE;
	if (join_node(role, &o, finish, &err) == -1) {
		fprintf(stderr, "%s join: %s\n", role->name, err.msg);
		return JOIN_EXIT_FAIL;
	}
	return JOIN_EXIT_OK;
}

/*
 * Member daemon set-up.
 */

/* join_daemon_init(), with the role's own configuration when it has one. */
static int
daemon_init(struct join_daemon *d, const struct join_role *role,
            const char *datadir, char *const *sets, size_t nsets,
            const struct join_daemon_hooks *hooks, struct error *err)
{
	char path[JOIN_PATH_MAX], rel[64];
	size_t i;
	int c;

	memset(d, 0, sizeof(*d));
	d->role = role;
	d->datadir = datadir;
	d->signal_fd = -1;
	if (node_identity_read(datadir, &d->id, err) == -1)
		return -1;
	if (d->id.role != role->role) {
		error_set(err, "%s holds a %s node, not a %s", datadir,
		          node_role_name(d->id.role), role->name);
		return -1;
	}
	if (hooks != NULL && hooks->config != NULL) {
		if ((d->cfg = hooks->config(datadir, sets, nsets, err)) == NULL)
			return -1;
		goto levels;
	}
	if ((d->cfg = config_new(join_run_keys, join_run_nkeys, err)) == NULL)
		return -1;
	snprintf(rel, sizeof(rel), "%s.conf", role->name);
	if (node_path(path, sizeof(path), datadir, rel, err) == -1)
		goto fail;
	if (file_exists(path) && config_load_file(d->cfg, path, err) == -1)
		goto fail;
	if (config_load_env(d->cfg, NODE_ENV_PREFIX, NULL, join_env_ignore,
	                    err) == -1)
		goto fail;
	for (i = 0; i < nsets; i++)
		if (config_set_pair(d->cfg, sets[i], CONFIG_SOURCE_FLAG,
		                    "--set", err) == -1)
			goto fail;
	if (config_check(d->cfg, NODE_ENV_PREFIX, err) == -1)
		goto fail;
levels:
	for (c = 0; c < LOG_CATEGORY_COUNT; c++)
		log_set_level(
		    (enum log_category)c,
		    (enum log_level)config_get_enum(d->cfg, "log.level"));
	return 0;
fail:
	config_free(d->cfg);
	d->cfg = NULL;
	return -1;
}

int
join_daemon_init(struct join_daemon *d, const struct join_role *role,
                 const char *datadir, char *const *sets, size_t nsets,
                 struct error *err)
{
	return daemon_init(d, role, datadir, sets, nsets, NULL, err);
}

int
join_daemon_start(struct join_daemon *d, const char *pass, size_t passlen,
                  struct error *err)
{
	const struct join_admin *pan;
	char path[JOIN_PATH_MAX];
	EVP_PKEY *curve = NULL;
	int rc = -1;

	if (join_deployment_read(d->datadir, &d->deployment, err) == -1)
		return -1;
	if ((pan = join_deployment_pan(&d->deployment)) == NULL) {
		error_set(err, "%s/%s names no PAN", d->datadir,
		          JOIN_DEPLOYMENT_FILE);
		return -1;
	}
	if (node_path(path, sizeof(path), d->datadir, NODE_CURVE_KEY, err) ==
	        -1 ||
	    (curve = key_load(path, pass, passlen, err)) == NULL)
		return -1;
	if ((d->zctx = zmq_ctx_new()) == NULL) {
		error_set(err, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((d->link = join_link_new(
	         d->zctx, d->id.hostname, pan, curve,
	         config_get_duration(d->cfg, "heartbeat.interval") * 1000,
	         config_get_duration(d->cfg, "heartbeat.timeout") * 1000,
	         err)) == NULL)
		goto out;
	if (d->role->expiry != NULL &&
	    (d->certwatch = certwatch_new(d->datadir, d->id.hostname,
	                                  d->role->expiry, err)) == NULL)
		goto out;
	join_link_set_deployment(d->link, d->deployment.admin,
	                         d->deployment.nadmin, d->deployment.epoch);
	d->started = time_now_ms();
	rc = 0;
out:
	EVP_PKEY_free(curve);
	return rc;
}

void
join_daemon_close(struct join_daemon *d)
{
	certwatch_free(d->certwatch);
	d->certwatch = NULL;
	join_link_free(d->link);
	d->link = NULL;
	store_close(d->st);
	d->st = NULL;
	if (d->control != NULL)
		zmq_close(d->control);
	d->control = NULL;
	if (d->zctx != NULL)
		zmq_ctx_term(d->zctx);
	d->zctx = NULL;
	config_free(d->cfg);
	d->cfg = NULL;
}

/*
 * The member daemon's command line: `psn run`, `san run`.
 */

/* Most --set flags one command line takes. */
#define RUN_SETS_MAX 64
/* How long `<role> status` waits for a running daemon. */
#define STATUS_TIMEOUT_MS 5000

/* Hooks of a role that adds nothing. */
static const struct join_daemon_hooks join_no_hooks;

static void
run_usage(const struct join_role *role, FILE *fp)
{
	fprintf(fp,
	        "usage: %s run --data-dir DIR [--passphrase-file FILE] "
	        "[--set key=value]...\n"
	        "\n"
	        "  --set key=value      heartbeat.interval (5s), "
	        "heartbeat.timeout (15s),\n"
	        "                       log.level (info); also from "
	        "DIR/%s.conf and %s*\n"
	        "  --passphrase-file F  the node passphrase; without it, %s\n",
	        role->name, role->name, NODE_ENV_PREFIX, NODE_PASSPHRASE_ENV);
}

/* Bind the control socket: claim a dead daemon's file, bind, 0600. */
static void *
run_control(struct join_daemon *d, struct error *err)
{
	char endpoint[PROC_ENDPOINT_MAX];
	int zero = 0;
	void *s;

	if (proc_ipc_claim(d->datadir, PROC_CONTROL_NAME, err) == -1 ||
	    proc_ipc_endpoint(endpoint, sizeof(endpoint), d->datadir,
	                      PROC_CONTROL_NAME, err) == -1)
		return NULL;
	if ((s = zmq_socket(d->zctx, ZMQ_REP)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		return NULL;
	}
	(void)zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	if (zmq_bind(s, endpoint) == -1) {
		error_set(err, "cannot bind %s: %s", endpoint,
		          zmq_strerror(errno));
		zmq_close(s);
		return NULL;
	}
	if (proc_ipc_secure(d->datadir, PROC_CONTROL_NAME, err) == -1) {
		zmq_close(s);
		return NULL;
	}
	return s;
}

/* The link's hand-off of bodies it does not know to the role. */
static int
run_message(void *ctx, const Iselab__Envelope *env)
{
	struct join_daemon *d = ctx;

	return d->hooks->message(d, d->hooks->arg, env);
}

/*
 * The runtime log levels the PAN set for this node, from the store into
 * the file every process of the node watches (log.h): after a restart
 * too, and whatever the file held before.
 */
static void
run_log_levels(struct join_daemon *d)
{
	char logdir[JOIN_PATH_MAX];
	struct error e = {{0}};

	if (node_path(logdir, sizeof(logdir), d->datadir, NODE_LOG_DIR, &e) ==
	        -1 ||
	    events_log_levels_sync(d->st, d->id.hostname, logdir, &e) == -1)
		log_error(LOG_MAIN, "runtime log levels: %s", e.msg);
}

/*
 * The admin nodes and epoch changed (a new primary adopted, a deployment
 * event): deployment.conf says so from now on, so that a restart goes to
 * the primary of the highest epoch known.
 */
static void
run_adopt(void *ctx, const struct join_admin *admins, size_t n, uint64_t epoch)
{
	struct join_daemon *d = ctx;
	struct error err = {{0}};
	size_t again;

	/*
	 * A promotion: what the old primary acked may not have reached the
	 * new one's replica before it died.  Everything acked lately goes
	 * again; the new primary stores what it lacks and acks the rest.
	 */
	if (epoch > d->deployment.epoch && d->st != NULL) {
		if (outbox_requeue_acked(d->st, &again, &err) == -1)
			log_error(LOG_MESSAGING, "outbox: %s", err.msg);
		else if (again > 0)
			log_info(LOG_MESSAGING,
			         "outbox: %zu certificates the former primary "
			         "acked go again to the new one",
			         again);
	}
	memcpy(d->deployment.admin, admins, n * sizeof(*admins));
	d->deployment.nadmin = n;
	if (epoch > d->deployment.epoch)
		d->deployment.epoch = epoch;
	if (join_deployment_write(d->datadir, &d->deployment, &err) == -1)
		log_error(LOG_MAIN, "cannot keep the new primary: %s", err.msg);
	else
		log_info(LOG_MAIN,
		         "%s: primary %s, epoch %" PRIu64 ", %zu admin node(s)",
		         JOIN_DEPLOYMENT_FILE, join_deployment_pan(&d->deployment)
		                                   ->hostname,
		         d->deployment.epoch, n);
}

/* A deployment event: the admin nodes every node should know. */
static void
run_deployment_event(struct join_daemon *d, const Iselab__Event *ev)
{
	struct join_deployment nd;
	struct error err = {{0}};

	if (ev->change_case != ISELAB__EVENT__CHANGE_DEPLOYMENT)
		return;
	/* An older epoch's config, caught up after a newer one: history. */
	if (ev->deployment->epoch < d->deployment.epoch ||
	    ev->deployment->epoch < join_link_epoch(d->link))
		return;
	if (join_deployment_from_msg(ev->deployment, NULL, &nd, &err) == -1) {
		log_error(LOG_MAIN, "deployment event %" PRIu64 ": %s", ev->seq,
		          err.msg);
		return;
	}
	d->deployment.epoch = nd.epoch;
	run_adopt(d, nd.admin, nd.nadmin, nd.epoch);
	join_link_set_deployment(d->link, nd.admin, nd.nadmin, nd.epoch);
}

/* The link's events, into the node's store (events.h). */
static int
run_apply_events(void *ctx, Iselab__Event *const *evs, size_t n,
                 uint64_t *applied, struct error *err)
{
	struct join_daemon *d = ctx;
	uint64_t from = *applied;
	char what[256];
	bool levels = false;
	size_t i;
	int rc;

	if ((rc = events_apply(d->st, evs, n,
	                       d->role->role == NODE_ROLE_SAN ? EVENTS_REPLICA
	                                                      : EVENTS_MEMBER,
	                       applied, err)) <= 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (evs[i]->seq <= from || evs[i]->seq > *applied)
			continue;
		events_describe(evs[i], what, sizeof(what));
		/* A PSN passes over the replica's changes (events.h). */
		if (d->role->role != NODE_ROLE_SAN &&
		    events_replica_only(evs[i]))
			log_debug(LOG_MESSAGING,
			          "event %" PRIu64 " passed over (the replica's): "
			          "%s",
			          evs[i]->seq, what);
		else
			log_info(LOG_MESSAGING, "event %" PRIu64 " applied: %s",
			         evs[i]->seq, what);
		if (evs[i]->change_case == ISELAB__EVENT__CHANGE_LOG_LEVELS &&
		    strcmp(evs[i]->log_levels->hostname, d->id.hostname) == 0)
			levels = true;
		run_deployment_event(d, evs[i]);
		if (d->hooks->applied != NULL)
			d->hooks->applied(d, d->hooks->arg, evs[i]);
	}
	if (levels)
		run_log_levels(d);
	return rc;
}

/* D/store: the node's certificates (and the PSN's outbox). */
static int
run_store(struct join_daemon *d, struct error *err)
{
	char path[JOIN_PATH_MAX];

	if (node_path(path, sizeof(path), d->datadir, NODE_STORE_DIR, err) ==
	    -1)
		return -1;
	return store_open(path, NULL, &d->st, err);
}

int
join_run_main(const struct join_role *role,
              const struct join_daemon_hooks *hooks, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"set", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct join_daemon d;
	struct error err = {{0}};
	char *sets[RUN_SETS_MAX], *pass = NULL, logdir[JOIN_PATH_MAX];
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	const char *passfile = NULL;
	size_t nsets = 0, passlen = 0;
	char sock[PROC_ENDPOINT_MAX];
	bool pidfile = false, started = false, bound;
	int c, rc = JOIN_EXIT_FAIL;

	if (hooks == NULL)
		hooks = &join_no_hooks;
	memset(&d, 0, sizeof(d));
	d.signal_fd = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 's':
			if (nsets == RUN_SETS_MAX) {
				fprintf(stderr, "%s run: more than %d --set\n",
				        role->name, RUN_SETS_MAX);
				return JOIN_EXIT_USAGE;
			}
			sets[nsets++] = optarg;
			break;
		case 'H':
			run_usage(role, stdout);
			return JOIN_EXIT_OK;
		default:
			run_usage(role, stderr);
			return JOIN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind != argc) {
		run_usage(role, stderr);
		return JOIN_EXIT_USAGE;
	}
	if (daemon_init(&d, role, datadir, sets, nsets, hooks, &err) == -1)
		goto out;
	d.hooks = hooks;
	if ((pass = node_passphrase(passfile, &passlen, &err)) == NULL)
		goto out;
	if (proc_pidfile_acquire(datadir, &err) == -1)
		goto out;
	pidfile = true;
	if (node_path(logdir, sizeof(logdir), datadir, NODE_LOG_DIR, &err) ==
	        -1 ||
	    dir_create(logdir, 0750, &err) == -1 ||
	    proc_log_open(d.id.hostname, "main", logdir, true, &err) == -1)
		goto out;
	if ((d.signal_fd = proc_signals_fd(&err)) == -1)
		goto out;
	/*
	 * Before any ZeroMQ context or store exists: see join.h.  The
	 * deployment (session services on or off) is what start decides by.
	 */
	started = true;
	if (join_deployment_read(datadir, &d.deployment, &err) == -1)
		goto out;
	if (hooks->start != NULL &&
	    hooks->start(&d, hooks->arg, pass, passlen, &err) == -1)
		goto out;
	if (join_daemon_start(&d, pass, passlen, &err) == -1)
		goto out;
	passphrase_free(pass, passlen);
	pass = NULL;
	if (hooks->message != NULL)
		join_link_set_handler(d.link, run_message, &d);
	join_link_set_adopt(d.link, run_adopt, &d);
	if (run_store(&d, &err) == -1)
		goto out;
	run_log_levels(&d);
	{
		uint64_t applied;

		if (events_applied(d.st, &applied, &err) == -1)
			goto out;
		join_link_set_events(d.link, applied, run_apply_events, &d);
		log_info(LOG_MESSAGING, "events applied so far: %" PRIu64,
		         applied);
	}
	if ((d.control = run_control(&d, &err)) == NULL)
		goto out;
	if (hooks->ready != NULL && hooks->ready(&d, hooks->arg, &err) == -1)
		goto out;
	log_info(LOG_MAIN, "%s %s running, pid %ld, deployment %s", role->name,
	         d.id.hostname, (long)getpid(), d.id.deployment_id);
	if (join_daemon_loop(&d, &err) == -1)
		goto out;
	log_info(LOG_MAIN, "%s %s stopped", role->name, d.id.hostname);
	rc = JOIN_EXIT_OK;
out:
	if (rc != JOIN_EXIT_OK) {
		if (log_path() != NULL)
			log_error(LOG_MAIN, "run failed: %s", err.msg);
		fprintf(stderr, "%s run: %s\n", role->name, err.msg);
	}
	passphrase_free(pass, passlen);
	if (started && hooks->stop != NULL)
		hooks->stop(&d, hooks->arg);
	if (d.extra != NULL)
		zmq_close(d.extra);
	d.extra = NULL;
	bound = d.control != NULL;
	join_daemon_close(&d);
	/* Leave no socket file for status to knock on. */
	if (bound && proc_ipc_path(sock, sizeof(sock), datadir,
	                           PROC_CONTROL_NAME, NULL) == 0)
		(void)unlink(sock);
	if (d.signal_fd != -1)
		close(d.signal_fd);
	if (pidfile)
		proc_pidfile_release(datadir);
	return rc;
}

int
join_status_main(const struct join_role *role, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	static const char *const args[] = {"status"};
	struct node_identity id;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	char *out = NULL, *errtext = NULL, *text;
	int c, status;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'H':
			printf("usage: %s status --data-dir DIR\n", role->name);
			return JOIN_EXIT_OK;
		default:
			fprintf(stderr, "usage: %s status --data-dir DIR\n",
			        role->name);
			return JOIN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind != argc) {
		fprintf(stderr, "usage: %s status --data-dir DIR\n",
		        role->name);
		return JOIN_EXIT_USAGE;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto fail;
	if (id.role != role->role) {
		error_set(&err, "%s holds a %s node, not a %s", datadir,
		          node_role_name(id.role), role->name);
		goto fail;
	}
	if (control_call(datadir, args, 1, STATUS_TIMEOUT_MS, &out, &errtext,
	                 &status, &err) == 0) {
		fputs(out, stdout);
		fputs(errtext, stderr);
		free(out);
		free(errtext);
		return status;
	}
	/* Not running (or not answering): what the files say. */
	if ((text = join_status_text(role, datadir, NULL, &err)) == NULL)
		goto fail;
	fputs(text, stdout);
	free(text);
	return JOIN_EXIT_OK;
fail:
	fprintf(stderr, "%s status: %s\n", role->name, err.msg);
	return JOIN_EXIT_FAIL;
}

int
join_command_main(const struct join_role *role, int argc, char **argv)
{
	struct node_identity id;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	const char **args = NULL;
	char *out = NULL, *errtext = NULL;
	int i, n = 0, status = JOIN_EXIT_FAIL;

	if ((args = calloc((size_t)argc + 1, sizeof(*args))) == NULL) {
		fprintf(stderr, "%s %s: out of memory\n", role->name, argv[0]);
		return JOIN_EXIT_FAIL;
	}
	/* --data-dir is ours; everything else is the daemon's to judge. */
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
			datadir = argv[++i];
		else if (strncmp(argv[i], "--data-dir=", 11) == 0)
			datadir = argv[i] + 11;
		else
			args[n++] = argv[i];
	}
	if (datadir == NULL || datadir[0] == '\0') {
		fprintf(stderr, "%s %s: which node? --data-dir DIR\n",
		        role->name, argv[0]);
		status = JOIN_EXIT_USAGE;
		goto out;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto fail;
	if (id.role != role->role) {
		error_set(&err, "%s holds a %s node, not a %s", datadir,
		          node_role_name(id.role), role->name);
		goto fail;
	}
	if (control_call(datadir, args, n, STATUS_TIMEOUT_MS, &out, &errtext,
	                 &status, &err) == -1)
		goto fail;
	fputs(out, stdout);
	fputs(errtext, stderr);
	goto out;
fail:
	fprintf(stderr, "%s %s: %s\n", role->name, argv[0], err.msg);
	status = JOIN_EXIT_FAIL;
out:
	free(out);
	free(errtext);
	free(args);
	return status;
}
