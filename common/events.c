/*
 * events: the deployment's event log, store side (events.h).
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "cert.h"
#include "enroll.h"
#include "events.h"
#include "registry.pb-c.h"
#include "log.h"
#include "node.h"
#include "store.h"
#include "util.h"

void
events_key(uint64_t seq, uint8_t key[8])
{
	int i;

	for (i = 7; i >= 0; i--) {
		key[i] = (uint8_t)(seq & 0xff);
		seq >>= 8;
	}
}

static uint64_t
key_seq(const uint8_t *key)
{
	uint64_t seq = 0;
	int i;

	for (i = 0; i < 8; i++)
		seq = (seq << 8) | key[i];
	return seq;
}

int
events_last_seq(struct store *st, uint64_t *seq, struct error *err)
{
	uint8_t *key;
	size_t klen;
	int rc;

	*seq = 0;
	rc = store_kv_last(st, STORE_TABLE_EVENTS, &key, &klen, err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	if (klen != 8) {
		free(key);
		error_set(err, "event log: a key of %zu bytes", klen);
		return -1;
	}
	*seq = key_seq(key);
	free(key);
	return 0;
}

/* The config key of a user or template name. */
static int
config_key(char *buf, size_t len, const char *prefix, const char *name,
           struct error *err)
{
	int n = snprintf(buf, len, "%s%s", prefix, name);

	if (n < 0 || (size_t)n >= len || (size_t)n > STORE_KV_KEY_MAX) {
		error_set(err, "name too long");
		return -1;
	}
	return 0;
}

/* A join token id: the key of the tokens table, 16 hex digits. */
#define EVENTS_TOKEN_ID_LEN 16

/* A host name as the nodes table keys it. */
static bool
host_ok(const char *h, size_t len)
{
	return len > 0 && len <= STORE_NAME_MAX &&
	       memchr(h, '/', len) == NULL && memchr(h, '\0', len) == NULL;
}

/* The certificate of a cert-issued event, parsed; NULL with err. */
static X509 *
issued_x509(const Iselab__CertIssued *c, struct error *err)
{
	const uint8_t *p;
	X509 *x;

	if (c == NULL || c->issuer_key_id.len != STORE_KEY_ID_LEN ||
	    c->cert.len == 0 || c->cert.len > STORE_RECORD_MAX) {
		error_set(err, "cert-issued without a certificate or issuer "
		               "key id");
		return NULL;
	}
	p = c->cert.data;
	if ((x = d2i_X509(NULL, &p, (long)c->cert.len)) == NULL ||
	    p != c->cert.data + c->cert.len) {
		X509_free(x);
		error_set(err, "cert-issued: the certificate does not parse");
		return NULL;
	}
	return x;
}

/* Add the certificate of a cert-issued event to b (the store checks it). */
static int
issued_batch(struct store_batch *b, const Iselab__CertIssued *c,
             struct error *err)
{
	X509 *x;
	int rc;

	if ((x = issued_x509(c, err)) == NULL)
		return -1;
	rc = store_batch_put_x509(b, x, c->issuer_key_id.data, c->issued_by,
	                          c->profile, c->issued_at);
	X509_free(x);
	if (rc == -1)
		error_set(err, "cert-issued: the store refuses the certificate");
	return rc;
}

/*
 * A table record of the replica: its key as its table keys it, and a
 * record that unpacks and repeats the key.
 */
static int
record_check(const Iselab__Event *ev, struct error *err)
{
	const Iselab__TableRecord *r = ev->node_record;
	const char *what = "node";
	bool ok = false;

	if (ev->change_case == ISELAB__EVENT__CHANGE_TOKEN_RECORD) {
		r = ev->token_record;
		what = "token";
	} else if (ev->change_case == ISELAB__EVENT__CHANGE_ALARM_RECORD) {
		r = ev->alarm_record;
		what = "alarm";
	}
	if (r == NULL || r->key.len == 0 || r->key.len > STORE_KV_KEY_MAX ||
	    r->record.len > STORE_KV_VALUE_MAX) {
		error_set(err, "%s record without a key", what);
		return -1;
	}
	switch (ev->change_case) {
	case ISELAB__EVENT__CHANGE_NODE_RECORD: {
		Iselab__NodeRecord *n;

		if (!host_ok((const char *)r->key.data, r->key.len))
			break;
		n = iselab__node_record__unpack(NULL, r->record.len,
		                                r->record.data);
		ok = n != NULL && n->hostname != NULL &&
		     strlen(n->hostname) == r->key.len &&
		     memcmp(n->hostname, r->key.data, r->key.len) == 0;
		if (n != NULL)
			iselab__node_record__free_unpacked(n, NULL);
		break;
	}
	case ISELAB__EVENT__CHANGE_TOKEN_RECORD: {
		Iselab__TokenRecord *t;

		if (r->key.len != EVENTS_TOKEN_ID_LEN)
			break;
		t = iselab__token_record__unpack(NULL, r->record.len,
		                                 r->record.data);
		ok = t != NULL && t->token_id != NULL &&
		     strlen(t->token_id) == r->key.len &&
		     memcmp(t->token_id, r->key.data, r->key.len) == 0;
		if (t != NULL)
			iselab__token_record__free_unpacked(t, NULL);
		break;
	}
	default: {
		Iselab__AlarmRecord *a;

		if (r->key.len != 8)
			break;
		a = iselab__alarm_record__unpack(NULL, r->record.len,
		                                 r->record.data);
		ok = a != NULL && a->id == key_seq(r->key.data) &&
		     a->name != NULL && a->node != NULL;
		if (a != NULL)
			iselab__alarm_record__free_unpacked(a, NULL);
		break;
	}
	}
	if (!ok) {
		error_set(err, "%s record: bad key, or a record that does not "
		               "unpack or repeat it",
		          what);
		return -1;
	}
	return 0;
}

bool
events_replica_only(const Iselab__Event *ev)
{
	switch (ev->change_case) {
	case ISELAB__EVENT__CHANGE_CERT_ISSUED:
	case ISELAB__EVENT__CHANGE_NODE_RECORD:
	case ISELAB__EVENT__CHANGE_TOKEN_RECORD:
	case ISELAB__EVENT__CHANGE_ALARM_RECORD:
		return true;
	default:
		return false;
	}
}

/* One certificate of a CaChain, parsed; what names it for err. */
static X509 *
chain_cert(const ProtobufCBinaryData *der, const char *what,
           struct error *err)
{
	X509 *x;

	if (der->len == 0) {
		error_set(err, "ca-chain without its %s", what);
		return NULL;
	}
	if ((x = cert_parse_der(der->data, der->len, err)) == NULL)
		error_prefix(err, "ca-chain %s", what);
	return x;
}

/* x is signed by the key of signer and names it as issuer. */
static bool
chain_signed_by(X509 *x, X509 *signer)
{
	bool ok = X509_NAME_cmp(X509_get_issuer_name(x),
	                        X509_get_subject_name(signer)) == 0 &&
	          X509_verify(x, X509_get0_pubkey(signer)) == 1;

	ERR_clear_error();
	return ok;
}

int
events_ca_chain_check(const Iselab__CaChain *c, struct error *err)
{
	X509 *root = NULL, *node = NULL, *old = NULL, *own = NULL, *nwo = NULL;
	int rc = -1;

	if (c == NULL || c->generation < 2) {
		error_set(err, "ca-chain without a generation of 2 or more");
		return -1;
	}
	if ((root = chain_cert(&c->root, "root", err)) == NULL ||
	    (node = chain_cert(&c->node_ca, "node CA", err)) == NULL ||
	    (old = chain_cert(&c->old_root, "old root", err)) == NULL ||
	    (own = chain_cert(&c->old_with_new, "OldWithNew", err)) == NULL ||
	    (nwo = chain_cert(&c->new_with_old, "NewWithOld", err)) == NULL)
		goto out;
	if (!chain_signed_by(root, root) || !chain_signed_by(old, old)) {
		error_set(err, "ca-chain: a root is not self-signed");
		goto out;
	}
	if (!chain_signed_by(node, root)) {
		error_set(err, "ca-chain: the node CA is not the new root's");
		goto out;
	}
	/* RFC 4210 4.4: each link holds one root's key under the other's. */
	if (!chain_signed_by(own, root) ||
	    EVP_PKEY_eq(X509_get0_pubkey(own), X509_get0_pubkey(old)) != 1 ||
	    !chain_signed_by(nwo, old) ||
	    EVP_PKEY_eq(X509_get0_pubkey(nwo), X509_get0_pubkey(root)) != 1) {
		ERR_clear_error();
		error_set(err, "ca-chain: the root link certificates do not "
		               "join the old and the new root");
		goto out;
	}
	rc = 0;
out:
	X509_free(root);
	X509_free(node);
	X509_free(old);
	X509_free(own);
	X509_free(nwo);
	return rc;
}

/*
 * The message of type desc that the config table holds under key: 1 with
 * *out set (free with protobuf_c_message_free_unpacked), 0 when there is
 * none, -1.
 */
static int
config_message(struct store *st, const char *key,
               const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
               struct error *err)
{
	uint8_t *val;
	size_t vlen;
	int rc;

	*out = NULL;
	rc = store_kv_get(st, STORE_TABLE_CONFIG, key, strlen(key), &val, &vlen,
	                  err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	*out = protobuf_c_message_unpack(desc, NULL, vlen, val);
	free(val);
	if (*out == NULL) {
		error_set(err, "%s does not unpack", key);
		return -1;
	}
	return 1;
}

/* m packed into the config table under key, in b. */
static int
config_put_message(struct store_batch *b, const char *key,
                   const ProtobufCMessage *m, struct error *err)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len > 0 ? len : 1);
	int rc;

	if (buf == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	protobuf_c_message_pack(m, buf);
	rc = store_batch_kv_put(b, STORE_TABLE_CONFIG, key, strlen(key), buf,
	                        len);
	free(buf);
	return rc;
}

int
events_ca_chain(struct store *st, Iselab__CaChain **out, struct error *err)
{
	return config_message(st, EVENTS_CA_CHAIN_KEY,
	                      &iselab__ca_chain__descriptor,
	                      (ProtobufCMessage **)out, err);
}

/* An endpoint of a deployment event: printable, no blank, bounded. */
static bool
endpoint_ok(const char *e, bool may_be_empty)
{
	size_t i, len;

	if (e == NULL)
		return may_be_empty;
	len = strlen(e);
	if (len == 0)
		return may_be_empty;
	if (len >= EVENTS_ENDPOINT_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!isgraph((unsigned char)e[i]))
			return false;
	return true;
}

/*
 * A deployment config as an event carries it: an epoch, one primary (role
 * PAN) among 1 to EVENTS_ADMIN_MAX admin nodes, each with a host name, a
 * messaging endpoint and a 32-byte CURVE key.
 */
static int
deployment_check(const Iselab__DeploymentConfig *c, struct error *err)
{
	size_t i, primaries = 0;

	if (c == NULL || c->epoch == 0 || c->n_admin_nodes == 0 ||
	    c->n_admin_nodes > EVENTS_ADMIN_MAX) {
		error_set(err, "deployment without an epoch or with %zu admin "
		               "nodes (1 to %d)",
		          c != NULL ? c->n_admin_nodes : 0, EVENTS_ADMIN_MAX);
		return -1;
	}
	for (i = 0; i < c->n_admin_nodes; i++) {
		const Iselab__AdminNode *a = c->admin_nodes[i];

		/* Both go into deployment.conf: names and printable text. */
		if (a->hostname == NULL ||
		    node_hostname_check(a->hostname, NULL) == -1 ||
		    !endpoint_ok(a->messaging_endpoint, false) ||
		    !endpoint_ok(a->events_endpoint, true) ||
		    a->curve_public_key.len != 32 ||
		    (a->role != ISELAB__ROLE__ROLE_PAN &&
		     a->role != ISELAB__ROLE__ROLE_SAN)) {
			error_set(err, "deployment: admin node %zu is "
			               "incomplete",
			          i + 1);
			return -1;
		}
		primaries += a->role == ISELAB__ROLE__ROLE_PAN;
	}
	if (primaries != 1) {
		error_set(err, "deployment: %zu primaries, not one", primaries);
		return -1;
	}
	return 0;
}

int
events_deployment(struct store *st, Iselab__DeploymentConfig **out,
                  struct error *err)
{
	return config_message(st, EVENTS_DEPLOYMENT_KEY,
	                      &iselab__deployment_config__descriptor,
	                      (ProtobufCMessage **)out, err);
}

/* A node's host name as a settings key takes it. */
static bool
events_hostname_ok(const char *h)
{
	return h != NULL && h[0] != '\0' && strlen(h) <= STORE_NAME_MAX &&
	       strchr(h, '/') == NULL;
}

/* Known categories and levels, each category once. */
static int
events_check_log_levels(const Iselab__LogLevels *ll, struct error *err)
{
	bool seen[LOG_CATEGORY_COUNT] = {false};
	size_t i;
	int c;

	if (ll == NULL || !events_hostname_ok(ll->hostname)) {
		error_set(err, "log-levels without a host name");
		return -1;
	}
	if (ll->n_levels > LOG_CATEGORY_COUNT) {
		error_set(err, "log-levels: %zu levels for %d categories",
		          ll->n_levels, LOG_CATEGORY_COUNT);
		return -1;
	}
	for (i = 0; i < ll->n_levels; i++) {
		const Iselab__CategoryLevel *cl = ll->levels[i];

		if (cl == NULL || cl->category == NULL || cl->level == NULL ||
		    (c = log_category_from_name(cl->category)) < 0 ||
		    log_level_from_name(cl->level) < 0) {
			error_set(err, "log-levels: an unknown category or "
			               "level");
			return -1;
		}
		if (seen[c]) {
			error_set(err, "log-levels: %s given twice",
			          cl->category);
			return -1;
		}
		seen[c] = true;
	}
	return 0;
}

int
events_check(const Iselab__Event *ev, struct error *err)
{
	struct est_template t;
	char *text;
	int rc;

	if (ev->seq == 0) {
		error_set(err, "event without a sequence number");
		return -1;
	}
	switch (ev->change_case) {
	case ISELAB__EVENT__CHANGE_USER_SET:
		if (ev->user_set == NULL || ev->user_set->name == NULL ||
		    ev->user_set->record == NULL) {
			error_set(err, "user-set without name or record");
			return -1;
		}
		if (enroll_user_name_check(ev->user_set->name, err) == -1)
			return -1;
		return enroll_user_record_check(ev->user_set->record, err);
	case ISELAB__EVENT__CHANGE_USER_DELETE:
		return enroll_user_name_check(ev->user_delete, err);
	case ISELAB__EVENT__CHANGE_TEMPLATE_SET:
		if (ev->template_set == NULL ||
		    ev->template_set->label == NULL ||
		    ev->template_set->text == NULL) {
			error_set(err, "template-set without label or text");
			return -1;
		}
		if (enroll_label_check(ev->template_set->label, err) == -1)
			return -1;
		if (strlen(ev->template_set->text) > ENROLL_TEMPLATE_MAX) {
			error_set(err, "template text over %d bytes",
			          ENROLL_TEMPLATE_MAX);
			return -1;
		}
		if ((text = strdup(ev->template_set->text)) == NULL) {
			error_set(err, "out of memory");
			return -1;
		}
		rc = enroll_template_parse(ev->template_set->label, text, &t,
		                           err);
		free(text);
		return rc;
	case ISELAB__EVENT__CHANGE_TEMPLATE_DELETE:
		return enroll_label_check(ev->template_delete, err);
	case ISELAB__EVENT__CHANGE_CERT_STATUS: {
		const Iselab__CertStatusChange *c = ev->cert_status;
		struct store_batch *b;

		if (c == NULL || c->issuer_key_id.len != STORE_KEY_ID_LEN) {
			error_set(err, "cert-status without an issuer key id");
			return -1;
		}
		/* The store's own checks: a dry run into a batch. */
		if ((b = store_batch_new()) == NULL) {
			error_set(err, "out of memory");
			return -1;
		}
		rc = store_batch_set_status(b, c->issuer_key_id.data,
		                            c->serial.data, c->serial.len,
		                            (enum store_cert_status)c->status,
		                            c->when, (int)c->reason);
		store_batch_free(b);
		if (rc == -1)
			error_set(err, "cert-status: status %u, reason %u, "
			               "serial of %zu bytes refused",
			          c->status, c->reason, c->serial.len);
		return rc;
	}
	case ISELAB__EVENT__CHANGE_NODE_SETTINGS:
		if (ev->node_settings == NULL ||
		    !events_hostname_ok(ev->node_settings->hostname)) {
			error_set(err, "node-settings without a host name");
			return -1;
		}
		return 0;
	case ISELAB__EVENT__CHANGE_CERT_ISSUED: {
		/* The store's own checks: a dry run into a batch. */
		struct store_batch *b;

		if ((b = store_batch_new()) == NULL) {
			error_set(err, "out of memory");
			return -1;
		}
		rc = issued_batch(b, ev->cert_issued, err);
		store_batch_free(b);
		return rc;
	}
	case ISELAB__EVENT__CHANGE_NODE_RECORD:
	case ISELAB__EVENT__CHANGE_TOKEN_RECORD:
	case ISELAB__EVENT__CHANGE_ALARM_RECORD:
		return record_check(ev, err);
	case ISELAB__EVENT__CHANGE_CA_CHAIN:
		return events_ca_chain_check(ev->ca_chain, err);
	case ISELAB__EVENT__CHANGE_LOG_LEVELS:
		return events_check_log_levels(ev->log_levels, err);
	case ISELAB__EVENT__CHANGE_DEPLOYMENT:
		return deployment_check(ev->deployment, err);
	case ISELAB__EVENT__CHANGE__NOT_SET:
	default:
		/*
		 * A change this build does not know: refuse it rather than
		 * skip it, so that the member stops at it (and says so)
		 * instead of moving past a change it did not make.
		 */
		error_set(err, "event %" PRIu64 ": unknown change %d", ev->seq,
		          (int)ev->change_case);
		return -1;
	}
}

int
events_batch_log(struct store_batch *b, const Iselab__Event *ev,
                 struct error *err)
{
	uint8_t key[8], *buf;
	size_t len;
	int rc;

	len = iselab__event__get_packed_size(ev);
	if (len > EVENTS_EVENT_MAX) {
		error_set(err, "event of %zu bytes", len);
		return -1;
	}
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__event__pack(ev, buf);
	events_key(ev->seq, key);
	rc = store_batch_kv_put(b, STORE_TABLE_EVENTS, key, sizeof(key), buf,
	                        len);
	free(buf);
	if (rc == -1)
		error_set(err, "event %" PRIu64 ": cannot add to the batch",
		          ev->seq);
	return rc;
}

int
events_batch_effect(struct store_batch *b, const Iselab__Event *ev,
                    unsigned flags, struct error *err)
{
	char key[STORE_KV_KEY_MAX + 1];
	const char *val;
	int rc;

	/* A PSN keeps no replica: checked (events_check), then skipped. */
	if (!(flags & EVENTS_REPLICA) && events_replica_only(ev))
		return 0;
	switch (ev->change_case) {
	case ISELAB__EVENT__CHANGE_USER_SET:
		if (config_key(key, sizeof(key), ENROLL_USER_PREFIX,
		               ev->user_set->name, err) == -1)
			return -1;
		val = ev->user_set->record;
		rc = store_batch_kv_put(b, STORE_TABLE_CONFIG, key, strlen(key),
		                        val, strlen(val));
		break;
	case ISELAB__EVENT__CHANGE_USER_DELETE:
		if (config_key(key, sizeof(key), ENROLL_USER_PREFIX,
		               ev->user_delete, err) == -1)
			return -1;
		rc = store_batch_kv_del(b, STORE_TABLE_CONFIG, key,
		                        strlen(key));
		break;
	case ISELAB__EVENT__CHANGE_TEMPLATE_SET:
		if (config_key(key, sizeof(key), ENROLL_TEMPLATE_PREFIX,
		               ev->template_set->label, err) == -1)
			return -1;
		val = ev->template_set->text;
		rc = store_batch_kv_put(b, STORE_TABLE_CONFIG, key, strlen(key),
		                        val, strlen(val));
		break;
	case ISELAB__EVENT__CHANGE_TEMPLATE_DELETE:
		if (config_key(key, sizeof(key), ENROLL_TEMPLATE_PREFIX,
		               ev->template_delete, err) == -1)
			return -1;
		rc = store_batch_kv_del(b, STORE_TABLE_CONFIG, key,
		                        strlen(key));
		break;
	case ISELAB__EVENT__CHANGE_NODE_SETTINGS:
		if (config_key(key, sizeof(key), EVENTS_SETTINGS_PREFIX,
		               ev->node_settings->hostname, err) == -1)
			return -1;
		rc = config_put_message(b, key, &ev->node_settings->base, err);
		break;
	case ISELAB__EVENT__CHANGE_CA_CHAIN:
		rc = config_put_message(b, EVENTS_CA_CHAIN_KEY,
		                        &ev->ca_chain->base, err);
		break;
	case ISELAB__EVENT__CHANGE_LOG_LEVELS:
		if (config_key(key, sizeof(key), EVENTS_LOG_LEVELS_PREFIX,
		               ev->log_levels->hostname, err) == -1)
			return -1;
		rc = config_put_message(b, key, &ev->log_levels->base, err);
		break;
	case ISELAB__EVENT__CHANGE_CERT_STATUS:
		rc = store_batch_set_status(
		    b, ev->cert_status->issuer_key_id.data,
		    ev->cert_status->serial.data, ev->cert_status->serial.len,
		    (enum store_cert_status)ev->cert_status->status,
		    ev->cert_status->when, (int)ev->cert_status->reason);
		break;
	case ISELAB__EVENT__CHANGE_CERT_ISSUED:
		return issued_batch(b, ev->cert_issued, err);
	case ISELAB__EVENT__CHANGE_NODE_RECORD:
		rc = store_batch_kv_put(b, STORE_TABLE_NODES,
		                        ev->node_record->key.data,
		                        ev->node_record->key.len,
		                        ev->node_record->record.data,
		                        ev->node_record->record.len);
		break;
	case ISELAB__EVENT__CHANGE_TOKEN_RECORD:
		rc = store_batch_kv_put(b, STORE_TABLE_TOKENS,
		                        ev->token_record->key.data,
		                        ev->token_record->key.len,
		                        ev->token_record->record.data,
		                        ev->token_record->record.len);
		break;
	case ISELAB__EVENT__CHANGE_ALARM_RECORD:
		rc = store_batch_kv_put(b, STORE_TABLE_ALARMS,
		                        ev->alarm_record->key.data,
		                        ev->alarm_record->key.len,
		                        ev->alarm_record->record.data,
		                        ev->alarm_record->record.len);
		break;
	case ISELAB__EVENT__CHANGE_DEPLOYMENT:
		rc = config_put_message(b, EVENTS_DEPLOYMENT_KEY,
		                        &ev->deployment->base, err);
		break;
	default:
		error_set(err, "event %" PRIu64 ": unknown change", ev->seq);
		return -1;
	}
	if (rc == -1)
		error_set(err, "event %" PRIu64 ": cannot add to the batch",
		          ev->seq);
	return rc;
}

struct read_ctx {
	uint64_t next; /* the sequence expected next */
	size_t max;
	Iselab__Event **evs;
	size_t n;
	size_t bytes; /* packed size of the events taken */
	struct error *err;
	int failed;
};

static int
read_one(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct read_ctx *c = arg;
	Iselab__Event *ev;

	if (c->n >= c->max || (c->n > 0 && c->bytes + vlen > EVENTS_BATCH_BYTES))
		return 1;
	if (klen != 8 || key_seq(key) != c->next) {
		/* The log has no gaps: one is a damaged store. */
		error_set(c->err, "event log: expected event %" PRIu64
		                  ", found %s",
		          c->next, klen == 8 ? "another" : "a bad key");
		c->failed = 1;
		return 1;
	}
	if ((ev = iselab__event__unpack(NULL, vlen, val)) == NULL ||
	    ev->seq != c->next) {
		if (ev != NULL)
			iselab__event__free_unpacked(ev, NULL);
		error_set(c->err, "event log: event %" PRIu64 " does not unpack",
		          c->next);
		c->failed = 1;
		return 1;
	}
	c->evs[c->n++] = ev;
	c->bytes += vlen;
	c->next++;
	return 0;
}

int
events_read(struct store *st, uint64_t after, size_t max,
            Iselab__Event ***out, size_t *n, struct error *err)
{
	struct read_ctx c = {0};
	uint8_t key[8];

	*out = NULL;
	*n = 0;
	if (max == 0 || max > EVENTS_BATCH_MAX)
		max = EVENTS_BATCH_MAX;
	if (after == UINT64_MAX)
		return 0;
	if ((c.evs = calloc(max, sizeof(*c.evs))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	c.next = after + 1;
	c.max = max;
	c.err = err;
	events_key(after + 1, key);
	if (store_kv_foreach_from(st, STORE_TABLE_EVENTS, key, sizeof(key),
	                          read_one, &c, err) == -1 ||
	    c.failed) {
		events_free(c.evs, c.n);
		return -1;
	}
	*out = c.evs;
	*n = c.n;
	return 0;
}

void
events_free(Iselab__Event **evs, size_t n)
{
	size_t i;

	if (evs == NULL)
		return;
	for (i = 0; i < n; i++)
		iselab__event__free_unpacked(evs[i], NULL);
	free(evs);
}

int
events_applied(struct store *st, uint64_t *seq, struct error *err)
{
	uint8_t *val;
	size_t vlen;
	int rc;

	*seq = 0;
	rc = store_kv_get(st, STORE_TABLE_CONFIG, EVENTS_APPLIED_KEY,
	                  strlen(EVENTS_APPLIED_KEY), &val, &vlen, err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	if (vlen != 8) {
		free(val);
		error_set(err, "%s: %zu bytes, not 8", EVENTS_APPLIED_KEY,
		          vlen);
		return -1;
	}
	*seq = key_seq(val);
	free(val);
	return 0;
}

/*
 * A replica that already holds the certificate of a cert-issued event
 * leaves it as it is (its status may have moved on since): 1 held, 0 not,
 * -1.
 */
static int
issued_held(struct store *st, const Iselab__CertIssued *c, struct error *err)
{
	struct store_cert *sc = NULL;
	uint8_t serial[STORE_SERIAL_MAX];
	size_t slen;
	X509 *x;
	int rc;

	if ((x = issued_x509(c, err)) == NULL)
		return -1;
	rc = store_x509_serial(x, serial, &slen, err);
	X509_free(x);
	if (rc == -1)
		return -1;
	rc = store_get_cert(st, c->issuer_key_id.data, serial, slen, &sc, err);
	store_cert_free(sc);
	return rc == STORE_OK ? 1 : rc == STORE_NOT_FOUND ? 0 : -1;
}

/* Add one event of a member's run to b, as flags say. */
static int
apply_one(struct store *st, struct store_batch *b, const Iselab__Event *ev,
          unsigned flags, struct error *err)
{
	int held = 0;

	if (events_check(ev, err) == -1)
		return -1;
	if ((flags & EVENTS_REPLICA) &&
	    ev->change_case == ISELAB__EVENT__CHANGE_CERT_ISSUED &&
	    (held = issued_held(st, ev->cert_issued, err)) == -1)
		return -1;
	if ((flags & EVENTS_REPLICA) && events_batch_log(b, ev, err) == -1)
		return -1;
	return held ? 0 : events_batch_effect(b, ev, flags, err);
}

int
events_apply(struct store *st, Iselab__Event *const *evs, size_t n,
             unsigned flags, uint64_t *applied, struct error *err)
{
	struct store_batch *b;
	uint64_t next = *applied + 1;
	uint8_t val[8];
	size_t i, count = 0;
	int progress;

	if ((b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	/* evs is short (EVENTS_BATCH_MAX): a pass per event is fine. */
	do {
		progress = 0;
		for (i = 0; i < n; i++) {
			if (evs[i]->seq != next)
				continue;
			if (apply_one(st, b, evs[i], flags, err) == -1) {
				store_batch_free(b);
				return -1;
			}
			next++;
			count++;
			progress = 1;
		}
	} while (progress && count < n);
	if (count == 0) {
		store_batch_free(b);
		return 0;
	}
	events_key(next - 1, val);
	if (store_batch_kv_put(b, STORE_TABLE_CONFIG, EVENTS_APPLIED_KEY,
	                       strlen(EVENTS_APPLIED_KEY), val,
	                       sizeof(val)) == -1 ||
	    store_apply(st, b, err) != STORE_OK) {
		if (err->msg[0] == '\0')
			error_set(err, "cannot apply events");
		store_batch_free(b);
		return -1;
	}
	store_batch_free(b);
	*applied = next - 1;
	return (int)count;
}

void
events_describe(const Iselab__Event *ev, char *buf, size_t len)
{
	switch (ev->change_case) {
	case ISELAB__EVENT__CHANGE_USER_SET:
		snprintf(buf, len, "user-set %s",
		         ev->user_set != NULL && ev->user_set->name != NULL
		             ? ev->user_set->name
		             : "?");
		break;
	case ISELAB__EVENT__CHANGE_USER_DELETE:
		snprintf(buf, len, "user-delete %s", ev->user_delete);
		break;
	case ISELAB__EVENT__CHANGE_TEMPLATE_SET:
		snprintf(buf, len, "template-set %s",
		         ev->template_set != NULL &&
		                 ev->template_set->label != NULL
		             ? ev->template_set->label
		             : "?");
		break;
	case ISELAB__EVENT__CHANGE_TEMPLATE_DELETE:
		snprintf(buf, len, "template-delete %s", ev->template_delete);
		break;
	case ISELAB__EVENT__CHANGE_CERT_STATUS: {
		const Iselab__CertStatusChange *c = ev->cert_status;
		char hex[2 * STORE_SERIAL_MAX + 1] = "";

		if (c->serial.len <= STORE_SERIAL_MAX)
			hex_encode(c->serial.data, c->serial.len, hex);
		snprintf(buf, len, "cert-status %s serial %s of %s (%s)",
		         store_status_name((enum store_cert_status)c->status),
		         hex, c->issued_by != NULL && c->issued_by[0] != '\0'
		                  ? c->issued_by
		                  : "?",
		         c->status == STORE_STATUS_GOOD
		             ? "released"
		             : store_reason_name((int)c->reason));
		break;
	}
	case ISELAB__EVENT__CHANGE_NODE_SETTINGS:
		snprintf(buf, len,
		         "node-settings %s: session services %s, CA service %s",
		         ev->node_settings->hostname,
		         ev->node_settings->session_services ? "on" : "off",
		         ev->node_settings->ca_disabled ? "disabled" : "enabled");
		break;
	case ISELAB__EVENT__CHANGE_CERT_ISSUED:
		snprintf(buf, len, "cert-issued by %s (%s)",
		         ev->cert_issued->issued_by != NULL
		             ? ev->cert_issued->issued_by
		             : "?",
		         ev->cert_issued->profile != NULL
		             ? ev->cert_issued->profile
		             : "?");
		break;
	case ISELAB__EVENT__CHANGE_NODE_RECORD:
		snprintf(buf, len, "node-record %.*s",
		         (int)(ev->node_record->key.len < 64
		                   ? ev->node_record->key.len
		                   : 64),
		         (const char *)ev->node_record->key.data);
		break;
	case ISELAB__EVENT__CHANGE_TOKEN_RECORD:
		snprintf(buf, len, "token-record %.*s",
		         (int)(ev->token_record->key.len < 64
		                   ? ev->token_record->key.len
		                   : 64),
		         (const char *)ev->token_record->key.data);
		break;
	case ISELAB__EVENT__CHANGE_ALARM_RECORD:
		snprintf(buf, len, "alarm-record %" PRIu64,
		         ev->alarm_record->key.len == 8
		             ? key_seq(ev->alarm_record->key.data)
		             : 0);
		break;
	case ISELAB__EVENT__CHANGE_CA_CHAIN:
		snprintf(buf, len, "ca-chain generation %u",
		         ev->ca_chain->generation);
		break;
	case ISELAB__EVENT__CHANGE_LOG_LEVELS: {
		size_t i, n;
		int k;

		k = snprintf(buf, len, "log-levels %s:",
		             ev->log_levels->hostname);
		n = k > 0 ? (size_t)k : 0;
		for (i = 0; i < ev->log_levels->n_levels && n < len; i++) {
			k = snprintf(buf + n, len - n, " %s=%s",
			             ev->log_levels->levels[i]->category,
			             ev->log_levels->levels[i]->level);
			n += k > 0 ? (size_t)k : 0;
		}
		if (ev->log_levels->n_levels == 0 && n < len)
			snprintf(buf + n, len - n, " (log.level)");
		break;
	}
	case ISELAB__EVENT__CHANGE_DEPLOYMENT: {
		const char *primary = "?";
		size_t i;

		for (i = 0; i < ev->deployment->n_admin_nodes; i++)
			if (ev->deployment->admin_nodes[i]->role ==
			    ISELAB__ROLE__ROLE_PAN)
				primary = ev->deployment->admin_nodes[i]->hostname;
		snprintf(buf, len,
		         "deployment epoch %" PRIu64 ": primary %s, %zu admin "
		         "node(s)",
		         ev->deployment->epoch, primary,
		         ev->deployment->n_admin_nodes);
		break;
	}
	default:
		snprintf(buf, len, "change %d", (int)ev->change_case);
		break;
	}
}

int
events_log_levels(struct store *st, const char *hostname,
                  int levels[LOG_CATEGORY_COUNT], struct error *err)
{
	char key[STORE_KV_KEY_MAX + 1];
	Iselab__LogLevels *ll;
	size_t i;
	int rc, c, l;

	for (c = 0; c < LOG_CATEGORY_COUNT; c++)
		levels[c] = -1;
	if (config_key(key, sizeof(key), EVENTS_LOG_LEVELS_PREFIX, hostname,
	               err) == -1)
		return -1;
	rc = config_message(st, key, &iselab__log_levels__descriptor,
	                    (ProtobufCMessage **)&ll, err);
	if (rc != 1)
		return rc;
	for (i = 0; i < ll->n_levels; i++) {
		c = log_category_from_name(ll->levels[i]->category);
		l = log_level_from_name(ll->levels[i]->level);
		if (c >= 0 && l >= 0)
			levels[c] = l;
	}
	iselab__log_levels__free_unpacked(ll, NULL);
	return 1;
}

int
events_settings(struct store *st, const char *hostname,
                struct events_settings *out, struct error *err)
{
	char key[STORE_KV_KEY_MAX + 1];
	Iselab__NodeSettings *ns;
	int rc;

	if (config_key(key, sizeof(key), EVENTS_SETTINGS_PREFIX, hostname,
	               err) == -1)
		return -1;
	rc = config_message(st, key, &iselab__node_settings__descriptor,
	                    (ProtobufCMessage **)&ns, err);
	if (rc != 1)
		return rc;
	out->session_services = ns->session_services;
	out->ca_disabled = ns->ca_disabled;
	iselab__node_settings__free_unpacked(ns, NULL);
	return 1;
}

int
events_time(struct store *st, uint64_t seq, int64_t *time_ms,
            struct error *err)
{
	Iselab__Event *ev;
	uint8_t key[8], *val;
	size_t vlen;
	int rc;

	*time_ms = 0;
	if (seq == 0)
		return 0;
	events_key(seq, key);
	rc = store_kv_get(st, STORE_TABLE_EVENTS, key, sizeof(key), &val, &vlen,
	                  err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	ev = iselab__event__unpack(NULL, vlen, val);
	free(val);
	if (ev == NULL) {
		error_set(err, "event log: event %" PRIu64 " does not unpack",
		          seq);
		return -1;
	}
	*time_ms = ev->time_ms;
	iselab__event__free_unpacked(ev, NULL);
	return 0;
}

int
events_log_levels_sync(struct store *st, const char *hostname,
                       const char *logdir, struct error *err)
{
	int levels[LOG_CATEGORY_COUNT];

	if (events_log_levels(st, hostname, levels, err) == -1)
		return -1;
	/* None set (or never): no file, log.level holds everywhere. */
	return log_levels_write(logdir, levels, err);
}
