/*
 * registry: the deployment's nodes as the PAN knows them: join tokens, the
 * join exchange, heartbeats and link state, and removal
 * (docs/registration.md).
 *
 * The store holds a NodeRecord per host name and a TokenRecord per token;
 * memory holds what changes every few seconds (last heartbeat, link state),
 * written back only when the link changes state, so a heartbeat costs no
 * disk write.  A join is checked completely before anything is issued, and
 * everything it produces (node record, certificates, the token's "used"
 * mark) is written in one store transaction before the node hears back:
 * a refused join leaves nothing but a log line and a counter, and an
 * accepted one is never half recorded.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cert.h"
#include "config.h"
#include "csr.h"
#include "join.h"
#include "log.h"
#include "outbox.h"
#include "pan.h"
#include "registry.pb-c.h"
#include "signer.h"
#include "store.h"
#include "util.h"

/* Token id and secret lengths in bytes (docs/registration.md). */
#define TOKEN_ID_LEN     8
#define TOKEN_SECRET_LEN 32
/* Token lifetime: default, and the bounds `--ttl` accepts (seconds). */
#define TOKEN_TTL_DEFAULT "1h"
#define TOKEN_TTL_MIN     1
#define TOKEN_TTL_MAX     (7 * 24 * 3600)
/* How often the link timer looks at the nodes. */
#define REGISTRY_TICK_MS 1000

/* ---- records ---------------------------------------------------------- */

static int
pack_put(struct pan *p, enum store_table t, const char *key,
         const ProtobufCMessage *m, struct error *err)
{
	uint8_t *buf;
	size_t len;
	int rc;

	len = protobuf_c_message_get_packed_size(m);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	protobuf_c_message_pack(m, buf);
	rc = store_kv_put(p->st, t, key, strlen(key), buf, len, err);
	free(buf);
	return rc == -1 ? -1 : 0;
}

int
registry_record(struct pan *p, const char *hostname, Iselab__NodeRecord **out,
                struct error *err)
{
	uint8_t *val = NULL;
	size_t vlen;
	int rc;

	*out = NULL;
	rc = store_kv_get(p->st, STORE_TABLE_NODES, hostname, strlen(hostname),
	                  &val, &vlen, err);
	if (rc == -1)
		return -1;
	if (rc == STORE_NOT_FOUND) {
		error_set(err, "no node record for %s", hostname);
		return -1;
	}
	*out = iselab__node_record__unpack(NULL, vlen, val);
	free(val);
	if (*out == NULL) {
		error_set(err, "node record of %s does not unpack", hostname);
		return -1;
	}
	return 0;
}

static Iselab__TokenRecord *
token_get(struct pan *p, const char *token_id, int *rc, struct error *err)
{
	Iselab__TokenRecord *t;
	uint8_t *val = NULL;
	size_t vlen;

	*rc = store_kv_get(p->st, STORE_TABLE_TOKENS, token_id,
	                   strlen(token_id), &val, &vlen, err);
	if (*rc != STORE_OK)
		return NULL;
	t = iselab__token_record__unpack(NULL, vlen, val);
	free(val);
	if (t == NULL) {
		error_set(err, "token record %s does not unpack", token_id);
		*rc = -1;
	}
	return t;
}

static enum node_role
role_from_proto(Iselab__Role r)
{
	switch (r) {
	case ISELAB__ROLE__ROLE_SAN:
		return NODE_ROLE_SAN;
	case ISELAB__ROLE__ROLE_PSN:
		return NODE_ROLE_PSN;
	default:
		return NODE_ROLE_PAN;
	}
}

static const char *
proto_role_name(Iselab__Role r)
{
	switch (r) {
	case ISELAB__ROLE__ROLE_SAN:
		return "san";
	case ISELAB__ROLE__ROLE_PSN:
		return "psn";
	case ISELAB__ROLE__ROLE_PAN:
		return "pan";
	default:
		return "unspecified";
	}
}

static int
remember_removed_key(struct pan *p, const uint8_t *key)
{
	unsigned char(*k)[CURVE_KEY_LEN];

	if (registry_key_removed(p, key))
		return 0;
	k = reallocarray(p->removed_keys, p->nremoved + 1, sizeof(*k));
	if (k == NULL)
		return -1;
	p->removed_keys = k;
	memcpy(p->removed_keys[p->nremoved++], key, CURVE_KEY_LEN);
	return 0;
}

int64_t
registry_ca_expiry(const Iselab__NodeRecord *r)
{
	enum cert_profile prof;
	size_t i = r->n_certs;

	/* A renewal (root CA chain replacement) appends the new ones. */
	while (i-- > 0)
		if (cert_profile_from_name(r->certs[i]->profile, &prof, NULL) ==
		        0 &&
		    cert_profile_is_ca(prof))
			return r->certs[i]->not_after;
	return r->n_certs > 0 ? r->certs[0]->not_after : 0;
}

/* Fill the in-memory node from its record (load and join). */
static void
node_from_record(struct pan_node *n, const Iselab__NodeRecord *r)
{
	memset(n, 0, sizeof(*n));
	snprintf(n->hostname, sizeof(n->hostname), "%s", r->hostname);
	n->role = role_from_proto(r->role);
	n->session_services = r->session_services;
	n->ca_disabled = r->ca_disabled;
	if (r->curve_public_key.len == CURVE_KEY_LEN)
		memcpy(n->curve, r->curve_public_key.data, CURVE_KEY_LEN);
	n->link = r->status == ISELAB__NODE_STATUS__NODE_STATUS_REMOVED
	              ? PAN_LINK_REMOVED
	              : PAN_LINK_REGISTERED;
	n->last_heartbeat = r->last_heartbeat_ms;
	n->persisted_hb = r->last_heartbeat_ms;
	n->cert_expiry = registry_ca_expiry(r);
}

struct load_ctx {
	struct pan *p;
	int failed;
};

static int
load_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct load_ctx *c = ctx;
	struct pan *p = c->p;
	Iselab__NodeRecord *r;
	size_t i;

	if ((r = iselab__node_record__unpack(NULL, vlen, val)) == NULL) {
		log_error(LOG_MAIN,
		          "node record '%.*s' does not unpack; "
		          "skipped",
		          (int)klen, (const char *)key);
		return 0;
	}
	/* A promoted SAN finds itself in the replica: not a node to watch. */
	if (r->hostname != NULL && strcmp(r->hostname, p->id.hostname) == 0) {
		iselab__node_record__free_unpacked(r, NULL);
		return 0;
	}
	if (p->nnodes >= PAN_NODES_MAX) {
		log_error(LOG_MAIN,
		          "more than %d nodes in the store; '%s' "
		          "and later ones ignored",
		          PAN_NODES_MAX, r->hostname);
		iselab__node_record__free_unpacked(r, NULL);
		return 1;
	}
	node_from_record(&p->nodes[p->nnodes++], r);
	for (i = 0; i < r->n_removed_curve_keys; i++)
		if (r->removed_curve_keys[i].len == CURVE_KEY_LEN &&
		    remember_removed_key(p, r->removed_curve_keys[i].data))
			c->failed = 1;
	if (r->status == ISELAB__NODE_STATUS__NODE_STATUS_REMOVED &&
	    r->curve_public_key.len == CURVE_KEY_LEN &&
	    remember_removed_key(p, r->curve_public_key.data))
		c->failed = 1;
	iselab__node_record__free_unpacked(r, NULL);
	return 0;
}

int
registry_load(struct pan *p, struct error *err)
{
	struct load_ctx c = {p, 0};

	if ((p->nodes = calloc(PAN_NODES_MAX, sizeof(*p->nodes))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	p->nnodes = 0;
	if (store_kv_foreach(p->st, STORE_TABLE_NODES, load_fn, &c, err) == -1)
		return -1;
	if (c.failed) {
		error_set(err, "out of memory loading the node registry");
		return -1;
	}
	log_info(LOG_MAIN, "registry: %zu nodes, %zu refused CURVE keys",
	         p->nnodes, p->nremoved);
	return 0;
}

void
registry_free(struct pan *p)
{
	free(p->nodes);
	free(p->removed_keys);
	p->nodes = NULL;
	p->removed_keys = NULL;
	p->nnodes = p->nremoved = 0;
}

struct pan_node *
registry_find(struct pan *p, const char *hostname)
{
	size_t i;

	for (i = 0; i < p->nnodes; i++)
		if (strcmp(p->nodes[i].hostname, hostname) == 0)
			return &p->nodes[i];
	return NULL;
}

struct pan_node *
registry_find_key(struct pan *p, const unsigned char key[CURVE_KEY_LEN])
{
	size_t i;

	for (i = 0; i < p->nnodes; i++)
		if (p->nodes[i].link != PAN_LINK_REMOVED &&
		    memcmp(p->nodes[i].curve, key, CURVE_KEY_LEN) == 0)
			return &p->nodes[i];
	return NULL;
}

bool
registry_key_removed(struct pan *p, const unsigned char key[CURVE_KEY_LEN])
{
	size_t i;

	for (i = 0; i < p->nremoved; i++)
		if (memcmp(p->removed_keys[i], key, CURVE_KEY_LEN) == 0)
			return true;
	return false;
}

/* Write the node's last heartbeat into its record (on link changes). */
static void
node_persist(struct pan *p, struct pan_node *n)
{
	Iselab__NodeRecord *r = NULL;
	struct error err = {{0}};

	if (n->persisted_hb == n->last_heartbeat)
		return;
	if (registry_record(p, n->hostname, &r, &err) == -1)
		goto fail;
	r->last_heartbeat_ms = n->last_heartbeat;
	if (pack_put(p, STORE_TABLE_NODES, n->hostname, &r->base, &err) == -1)
		goto fail;
	n->persisted_hb = n->last_heartbeat;
	iselab__node_record__free_unpacked(r, NULL);
	return;
fail:
	log_error(LOG_MAIN, "cannot record the last heartbeat of %s: %s",
	          n->hostname, err.msg);
	if (r != NULL)
		iselab__node_record__free_unpacked(r, NULL);
}

void
registry_persist(struct pan *p)
{
	size_t i;

	for (i = 0; i < p->nnodes; i++)
		if (p->nodes[i].link != PAN_LINK_REMOVED)
			node_persist(p, &p->nodes[i]);
}

/* ---- join --------------------------------------------------------------- */

/* What a join issued, or what a replay found. */
struct join_out {
	X509 *ca_cert;
	X509 *ocsp_cert; /* legacy PSN only */
	bool session_services;
};

static void
join_out_free(struct join_out *o)
{
	X509_free(o->ca_cert);
	X509_free(o->ocsp_cert);
	memset(o, 0, sizeof(*o));
}

static void
join_refuse(struct pan *p, const struct pan_peer *peer,
            const Iselab__Envelope *env, Iselab__Error__Code code,
            const char *why)
{
	Iselab__Envelope reply;
	Iselab__Error e = ISELAB__ERROR__INIT;
	const Iselab__JoinRequest *jr = env->join_request;

	uint64_t held;

	p->joins_refused++;
	/* Any CURVE client may send joins: the log line is rate-limited. */
	if (messaging_ratelimit(&p->join_rl, &held))
		log_warn(LOG_MESSAGING,
		         "join of '%s' (%s) from CURVE key %s refused: %s "
		         "(%llu more refused joins not logged since the last "
		         "line)",
		         jr->hostname, proto_role_name(jr->role), peer->key_z85,
		         why, (unsigned long long)held);
	msg_init(&reply, env->request_id, p->id.hostname);
	e.code = code;
	e.message = (char *)why;
	reply.body_case = ISELAB__ENVELOPE__BODY_ERROR;
	reply.error = &e;
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
}

int
registry_der(X509 *x, ProtobufCBinaryData *out)
{
	unsigned char *der = NULL;
	int len;

	if ((len = i2d_X509(x, &der)) <= 0)
		return -1;
	out->data = der;
	out->len = (size_t)len;
	return 0;
}

static int
join_respond(struct pan *p, const struct pan_peer *peer,
             const Iselab__Envelope *env, const struct join_out *o,
             enum node_role role)
{
	Iselab__Envelope reply;
	Iselab__JoinResponse jr = ISELAB__JOIN_RESPONSE__INIT;
	Iselab__DeploymentConfig cfg;
	Iselab__AdminNode admins[PAN_ADMINS_MAX + 1];
	Iselab__AdminNode *adminp[PAN_ADMINS_MAX + 1];
	ProtobufCBinaryData chain[2];
	size_t i;
	int rc = -1;

	memset(chain, 0, sizeof(chain));
	if (registry_der(o->ca_cert, &jr.ca_cert) == -1 ||
	    (o->ocsp_cert != NULL && registry_der(o->ocsp_cert, &jr.ocsp_cert) == -1))
		goto out;
	/* Issuer of ca_cert first, root last. */
	jr.n_chain = 0;
	if (role == NODE_ROLE_PSN &&
	    registry_der(p->node_ca, &chain[jr.n_chain++]) == -1)
		goto out;
	if (registry_der(p->root_ca, &chain[jr.n_chain++]) == -1)
		goto out;
	jr.chain = chain;

	primary_config(p, &cfg, admins, adminp);
	cfg.session_services = o->session_services;
	jr.config = &cfg;

	msg_init(&reply, env->request_id, p->id.hostname);
	reply.body_case = ISELAB__ENVELOPE__BODY_JOIN_RESPONSE;
	reply.join_response = &jr;
	rc = messaging_reply(p, peer->rid, peer->rid_len, &reply);
out:
	if (rc == -1 && jr.ca_cert.data == NULL)
		log_crypto(LOG_MESSAGING, NULL, "i2d_X509", "join response");
	OPENSSL_free(jr.ca_cert.data);
	OPENSSL_free(jr.ocsp_cert.data);
	for (i = 0; i < ARRAY_SIZE(chain); i++)
		OPENSSL_free(chain[i].data);
	return rc;
}

/* A replayed join: the certificates the first one issued, from the store. */
static int
join_replay(struct pan *p, const char *hostname, struct join_out *o,
            struct error *err)
{
	Iselab__NodeRecord *r = NULL;
	struct store_cert *sc = NULL;
	size_t i;
	X509 *x;
	int rc = -1;

	if (registry_record(p, hostname, &r, err) == -1)
		return -1;
	if (r->status != ISELAB__NODE_STATUS__NODE_STATUS_REGISTERED) {
		error_set(err, "token already used, and %s was removed since",
		          hostname);
		goto out;
	}
	o->session_services = r->session_services;
	for (i = 0; i < r->n_certs; i++) {
		Iselab__IssuedCertRef *c = r->certs[i];

		if (c->issuer_key_id.len != STORE_KEY_ID_LEN ||
		    store_get_cert(p->st, c->issuer_key_id.data, c->serial.data,
		                   c->serial.len, &sc, err) != STORE_OK) {
			error_prefix(err, "certificate %zu of %s", i, hostname);
			goto out;
		}
		if ((x = cert_parse_der(sc->der, sc->der_len, err)) == NULL)
			goto out;
		store_cert_free(sc);
		sc = NULL;
		if (strcmp(c->profile, cert_profile_name(
		                           CERT_PROFILE_OCSP_RESPONDER)) == 0 &&
		    o->ocsp_cert == NULL)
			o->ocsp_cert = x;
		else if (o->ca_cert == NULL)
			o->ca_cert = x;
		else
			X509_free(x);
	}
	if (o->ca_cert == NULL) {
		error_set(err, "no CA certificate recorded for %s", hostname);
		goto out;
	}
	rc = 0;
out:
	store_cert_free(sc);
	iselab__node_record__free_unpacked(r, NULL);
	return rc;
}

/*
 * A CSR from the join request: DER PKCS#10 (RFC 2986) whose signature
 * verifies, whose key is strong enough, and whose CN is the product CN of
 * profile for host.
 */
int
registry_check_csr(const ProtobufCBinaryData *der, enum cert_profile profile,
               const char *host, const char *what, char *why, size_t whylen)
{
	struct error err = {{0}};
	char want[CERT_CN_BUF], cn[CERT_CN_BUF];
	X509_REQ *req = NULL;
	int rc = -1, r;

	if (der->len == 0) {
		snprintf(why, whylen, "the request has no %s CSR", what);
		return -1;
	}
	if ((req = csr_parse(der->data, der->len, &err)) == NULL ||
	    csr_verify(req, &err) == -1) {
		snprintf(why, whylen, "%s CSR refused: %s", what, err.msg);
		goto out;
	}
	if (cert_profile_cn(profile, host, want, sizeof(want), &err) == -1) {
		snprintf(why, whylen, "%s CSR: %s", what, err.msg);
		goto out;
	}
	r = csr_subject_cn(req, cn, sizeof(cn), &err);
	if (r != 1) {
		snprintf(why, whylen, "%s CSR refused: %s", what,
		         r == 0 ? "its subject has no CN" : err.msg);
		goto out;
	}
	if (strcmp(cn, want) != 0) {
		snprintf(why, whylen,
		         "%s CSR refused: its CN is \"%s\"; "
		         "for %s it must be \"%s\"",
		         what, cn, host, want);
		goto out;
	}
	rc = 0;
out:
	X509_REQ_free(req);
	return rc;
}


/* Sign one CSR with the CA signer. */
X509 *
registry_sign(struct pan *p, enum cert_profile profile, const char *issuer,
          const ProtobufCBinaryData *csr, const char *host, struct error *err)
{
	X509 *x = NULL;
	int64_t validity = 0; /* the profile's default */

	if (p->signer == NULL) {
		error_set(err, "the CA signer is not running");
		return NULL;
	}
	if (profile == CERT_PROFILE_ENDPOINT_SUB_CA)
		validity =
		    config_get_duration(p->cfg, "ca.endpoint-sub-ca-validity");
	else if (profile == CERT_PROFILE_OCSP_RESPONDER)
		validity =
		    config_get_duration(p->cfg, "ca.ocsp-responder-validity");
	/*
	 * A PSN's Endpoint Sub CA names our responder (ocsp.c), which
	 * answers for what the Node CA issued; nothing answers for the
	 * Root CA's children, so a SAN's Node CA names none.
	 */
	if (signer_sign(p->signer, cert_profile_name(profile), issuer,
	                csr->data, csr->len, host, validity,
	                profile == CERT_PROFILE_ENDPOINT_SUB_CA &&
	                        p->ocsp_url[0] != '\0'
	                    ? p->ocsp_url
	                    : NULL,
	                &x, err) == -1) {
		error_prefix(err, "CA signer");
		return NULL;
	}
	return x;
}

int
registry_cert_ref(X509 *x, const uint8_t kid[STORE_KEY_ID_LEN],
                  const char *profile, uint8_t serial[STORE_SERIAL_MAX],
                  Iselab__IssuedCertRef *ref, struct error *err)
{
	time_t na;

	iselab__issued_cert_ref__init(ref);
	if (store_x509_serial(x, serial, &ref->serial.len, NULL) == -1 ||
	    cert_not_after(x, &na, err) == -1) {
		error_set(err, "issued certificate has a bad serial or validity");
		return -1;
	}
	ref->serial.data = serial;
	ref->issuer_key_id.data = (uint8_t *)kid;
	ref->issuer_key_id.len = STORE_KEY_ID_LEN;
	ref->profile = (char *)profile;
	ref->not_after = na;
	return 0;
}

/*
 * The node record, the certificates and the used token in one
 * transaction, as events (the SAN's replica gets them all).
 * The record keeps the removed CURVE keys of the host's earlier
 * incarnations so that they stay refused.
 */
static int
join_record(struct pan *p, const Iselab__JoinRequest *jr,
            Iselab__TokenRecord *tok, const struct pan_peer *peer,
            const struct join_out *o, int64_t now, struct error *err)
{
	Iselab__NodeRecord rec = ISELAB__NODE_RECORD__INIT, *old = NULL;
	Iselab__IssuedCertRef refs[2], *refp[2];
	uint8_t serials[2][STORE_SERIAL_MAX];
	uint8_t kids[2][STORE_KEY_ID_LEN];
	ProtobufCBinaryData *removed = NULL;
	struct eventlog_set set = {0};
	X509 *certs[2] = {o->ca_cert, o->ocsp_cert};
	const char *profiles[2];
	size_t i, n = 0, nrem = 0;
	int rc = -1;

	profiles[0] = cert_profile_name(jr->role == ISELAB__ROLE__ROLE_SAN
	                                    ? CERT_PROFILE_NODE_CA
	                                    : CERT_PROFILE_ENDPOINT_SUB_CA);
	profiles[1] = cert_profile_name(CERT_PROFILE_OCSP_RESPONDER);

	for (i = 0; i < 2 && certs[i] != NULL; i++) {
		/* SAN Node CA: by the root; PSN certificates: by the Node CA.
		 */
		memcpy(kids[i],
		       jr->role == ISELAB__ROLE__ROLE_SAN ? p->root_kid
		                                          : p->node_kid,
		       STORE_KEY_ID_LEN);
		if (registry_cert_ref(certs[i], kids[i], profiles[i], serials[i],
		                      &refs[i], err) == -1)
			goto out;
		refp[i] = &refs[i];
		n++;
		if (eventlog_set_x509(&set, certs[i], kids[i], p->id.hostname,
		                      profiles[i], now, err) == -1)
			goto out;
	}

	/* Carry over the refused keys of an earlier, removed incarnation. */
	if (registry_find(p, jr->hostname) != NULL &&
	    registry_record(p, jr->hostname, &old, NULL) == 0) {
		removed =
		    calloc(old->n_removed_curve_keys + 1, sizeof(*removed));
		if (removed == NULL) {
			error_set(err, "out of memory");
			goto out;
		}
		for (i = 0; i < old->n_removed_curve_keys; i++)
			removed[nrem++] = old->removed_curve_keys[i];
		if (old->status == ISELAB__NODE_STATUS__NODE_STATUS_REMOVED)
			removed[nrem++] = old->curve_public_key;
	}

	rec.hostname = jr->hostname;
	rec.role = jr->role;
	rec.session_services = tok->session_services;
	rec.curve_public_key.data = (uint8_t *)peer->key;
	rec.curve_public_key.len = CURVE_KEY_LEN;
	rec.status = ISELAB__NODE_STATUS__NODE_STATUS_REGISTERED;
	rec.joined_at = now;
	rec.token_id = tok->token_id;
	rec.n_certs = n;
	rec.certs = refp;
	rec.n_removed_curve_keys = nrem;
	rec.removed_curve_keys = removed;
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_NODE_RECORD,
	                        jr->hostname, strlen(jr->hostname), &rec.base,
	                        err) == -1)
		goto out;

	tok->used_at = now;
	tok->used_by_curve_key.data = (uint8_t *)peer->key;
	tok->used_by_curve_key.len = CURVE_KEY_LEN;
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_TOKEN_RECORD,
	                        tok->token_id, strlen(tok->token_id),
	                        &tok->base, err) == -1 ||
	    eventlog_set_commit(p, &set, NULL, false, err) == -1)
		goto out;
	rc = 0;
out:
	/* tok is freed by the caller: do not let it free our pointer. */
	tok->used_by_curve_key.data = NULL;
	tok->used_by_curve_key.len = 0;
	eventlog_set_free(&set);
	free(removed);
	if (old != NULL)
		iselab__node_record__free_unpacked(old, NULL);
	return rc;
}

/* Secret from the request: 32 raw bytes, or their 64 hex digits. */
static int
join_secret(const ProtobufCBinaryData *s, uint8_t out[TOKEN_SECRET_LEN])
{
	char hex[2 * TOKEN_SECRET_LEN + 1];

	if (s->len == TOKEN_SECRET_LEN) {
		memcpy(out, s->data, TOKEN_SECRET_LEN);
		return 0;
	}
	if (s->len != 2 * TOKEN_SECRET_LEN)
		return -1;
	memcpy(hex, s->data, s->len);
	hex[s->len] = '\0';
	return hex_decode(hex, out, TOKEN_SECRET_LEN) == TOKEN_SECRET_LEN ? 0
	                                                                  : -1;
}

static bool
is_hex(const char *s, size_t len)
{
	size_t i;

	if (strlen(s) != len)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/*
 * docs/registration.md "Join exchange": token, host name, CURVE key, CSRs,
 * in this order; then issue, record, answer.
 */
int
registry_join(struct pan *p, const struct pan_peer *peer,
              const Iselab__Envelope *env)
{
	const Iselab__JoinRequest *jr = env->join_request;
	Iselab__TokenRecord *tok = NULL;
	struct join_out o;
	struct error err = {{0}};
	uint8_t secret[TOKEN_SECRET_LEN], digest[32];
	unsigned int dlen = sizeof(digest);
	char why[ERROR_MAX], when[32];
	enum node_role role;
	struct pan_node *n;
	int64_t now = time(NULL);
	Iselab__Error__Code code = ISELAB__ERROR__CODE__ERROR_UNAUTHORIZED;
	int rc, refused = 1;

	memset(&o, 0, sizeof(o));
	why[0] = '\0';
	if (jr->token_id == NULL || !is_hex(jr->token_id, 2 * TOKEN_ID_LEN) ||
	    join_secret(&jr->token_secret, secret) == -1) {
		code = ISELAB__ERROR__CODE__ERROR_BAD_REQUEST;
		snprintf(why, sizeof(why),
		         "malformed token (want a 16-hex-"
		         "digit id and a 32-byte secret)");
		goto out;
	}
	tok = token_get(p, jr->token_id, &rc, &err);
	if (rc == -1) {
		code = ISELAB__ERROR__CODE__ERROR_INTERNAL;
		snprintf(why, sizeof(why), "store: %s", err.msg);
		goto out;
	}
	if (tok == NULL) {
		snprintf(why, sizeof(why),
		         "unknown token (not made by this "
		         "PAN, or a wrong join string)");
		goto out;
	}
	if (!EVP_Digest(secret, sizeof(secret), digest, &dlen, EVP_sha256(),
	                NULL)) {
		log_crypto(LOG_MESSAGING, &err, "EVP_Digest", "token secret");
		code = ISELAB__ERROR__CODE__ERROR_INTERNAL;
		snprintf(why, sizeof(why), "cannot hash the token secret");
		goto out;
	}
	/* Constant time: the comparison says nothing about the secret. */
	if (tok->secret_sha256.len != sizeof(digest) ||
	    CRYPTO_memcmp(digest, tok->secret_sha256.data, sizeof(digest)) !=
	        0) {
		snprintf(why, sizeof(why), "wrong token secret");
		goto out;
	}
	if (tok->used_at != 0) {
		pan_format_time(tok->used_at, when, sizeof(when));
		if (tok->used_by_curve_key.len == CURVE_KEY_LEN &&
		    memcmp(tok->used_by_curve_key.data, peer->key,
		           CURVE_KEY_LEN) == 0 &&
		    strcmp(tok->hostname, jr->hostname) == 0) {
			/* Our first answer may have been lost: same again. */
			if (join_replay(p, tok->hostname, &o, &err) == -1) {
				snprintf(why, sizeof(why), "%s", err.msg);
				goto out;
			}
			p->joins_replayed++;
			log_info(
			    LOG_MESSAGING,
			    "join of %s repeated by the "
			    "same CURVE key; sending the same certificates",
			    tok->hostname);
			refused = 0;
			(void)join_respond(p, peer, env, &o,
			                   role_from_proto(tok->role));
			goto out;
		}
		snprintf(why, sizeof(why), "token already used (at %s)", when);
		goto out;
	}
	if (tok->expires_at <= now) {
		pan_format_time(tok->expires_at, when, sizeof(when));
		snprintf(why, sizeof(why), "token expired at %s", when);
		goto out;
	}
	if (jr->role != tok->role) {
		snprintf(why, sizeof(why), "token is for a %s, not a %s",
		         proto_role_name(tok->role), proto_role_name(jr->role));
		goto out;
	}
	if (jr->hostname == NULL || strcmp(jr->hostname, tok->hostname) != 0) {
		snprintf(why, sizeof(why), "token is for host %s, not %s",
		         tok->hostname, jr->hostname ? jr->hostname : "(none)");
		goto out;
	}
	code = ISELAB__ERROR__CODE__ERROR_BAD_REQUEST;
	if (node_hostname_check(jr->hostname, &err) == -1) {
		snprintf(why, sizeof(why), "%s", err.msg);
		goto out;
	}
	if (jr->curve_public_key.len != CURVE_KEY_LEN ||
	    memcmp(jr->curve_public_key.data, peer->key, CURVE_KEY_LEN) != 0) {
		snprintf(why, sizeof(why),
		         "the CURVE key in the request is "
		         "not the key of the connection");
		goto out;
	}
	code = ISELAB__ERROR__CODE__ERROR_UNAUTHORIZED;
	if ((n = registry_find(p, jr->hostname)) != NULL &&
	    n->link != PAN_LINK_REMOVED) {
		snprintf(why, sizeof(why),
		         "%s is already registered (remove "
		         "it first: pan node remove %s)",
		         jr->hostname, jr->hostname);
		goto out;
	}
	if ((n = registry_find_key(p, peer->key)) != NULL) {
		snprintf(why, sizeof(why), "this CURVE key belongs to %s",
		         n->hostname);
		goto out;
	}
	if (registry_find(p, jr->hostname) == NULL &&
	    p->nnodes >= PAN_NODES_MAX) {
		code = ISELAB__ERROR__CODE__ERROR_INTERNAL;
		snprintf(why, sizeof(why), "the deployment is full (%d nodes)",
		         PAN_NODES_MAX);
		goto out;
	}

	role = role_from_proto(jr->role);
	code = ISELAB__ERROR__CODE__ERROR_REFUSED_CSR;
	if (registry_check_csr(&jr->ca_csr,
	                   role == NODE_ROLE_SAN ? CERT_PROFILE_NODE_CA
	                                         : CERT_PROFILE_ENDPOINT_SUB_CA,
	                   jr->hostname,
	                   role == NODE_ROLE_SAN ? "Node CA"
	                                         : "Endpoint Sub CA",
	                   why, sizeof(why)) == -1)
		goto out;
	/* Legacy: the PAN's Node CA signs the OCSP responder certificate. */
	if (role == NODE_ROLE_PSN && p->id.ocsp_hierarchy == NODE_OCSP_LEGACY &&
	    registry_check_csr(&jr->ocsp_csr, CERT_PROFILE_OCSP_RESPONDER,
	                   jr->hostname, "OCSP responder", why,
	                   sizeof(why)) == -1)
		goto out;

	code = ISELAB__ERROR__CODE__ERROR_INTERNAL;
	o.session_services = tok->session_services;
	if (role == NODE_ROLE_SAN)
		o.ca_cert = registry_sign(p, CERT_PROFILE_NODE_CA, "root-ca",
		                      &jr->ca_csr, jr->hostname, &err);
	else
		o.ca_cert =
		    registry_sign(p, CERT_PROFILE_ENDPOINT_SUB_CA, "node-ca",
		              &jr->ca_csr, jr->hostname, &err);
	if (o.ca_cert == NULL) {
		snprintf(why, sizeof(why), "%s", err.msg);
		goto out;
	}
	if (role == NODE_ROLE_PSN && p->id.ocsp_hierarchy == NODE_OCSP_LEGACY &&
	    (o.ocsp_cert = registry_sign(p, CERT_PROFILE_OCSP_RESPONDER, "node-ca",
	                             &jr->ocsp_csr, jr->hostname, &err)) ==
	        NULL) {
		snprintf(why, sizeof(why), "%s", err.msg);
		goto out;
	}
	if (join_record(p, jr, tok, peer, &o, now, &err) == -1) {
		snprintf(why, sizeof(why), "cannot record the join: %s",
		         err.msg);
		goto out;
	}

	/* Recorded: now it exists, in memory too. */
	if ((n = registry_find(p, jr->hostname)) == NULL)
		n = &p->nodes[p->nnodes++];
	memset(n, 0, sizeof(*n));
	snprintf(n->hostname, sizeof(n->hostname), "%s", jr->hostname);
	n->role = role;
	n->session_services = tok->session_services;
	memcpy(n->curve, peer->key, CURVE_KEY_LEN);
	n->link = PAN_LINK_REGISTERED;
	{
		time_t na;

		if (cert_not_after(o.ca_cert, &na, NULL) == 0)
			n->cert_expiry = na;
	}
	p->joins_accepted++;
	{
		char serial[CERT_SERIAL_HEX_MAX] = "?";

		(void)cert_serial_hex(o.ca_cert, serial, sizeof(serial), NULL);
		log_info(LOG_MESSAGING,
		         "%s (%s) joined with token %s, CURVE "
		         "key %s; %s serial %s",
		         jr->hostname, node_role_name(role), tok->token_id,
		         peer->key_z85,
		         role == NODE_ROLE_SAN ? "Node CA" : "Endpoint Sub CA",
		         serial);
	}
	refused = 0;
	(void)join_respond(p, peer, env, &o, role);
out:
	if (refused)
		join_refuse(p, peer, env, code, why);
	secure_zero(secret, sizeof(secret));
	join_out_free(&o);
	if (tok != NULL)
		iselab__token_record__free_unpacked(tok, NULL);
	return 0;
}

/* ---- heartbeats and links ----------------------------------------------- */

static void
link_up(struct pan *p, struct pan_node *n)
{
	log_info(LOG_MESSAGING, "%s connected (was %s)", n->hostname,
	         pan_link_name(n->link));
	n->link = PAN_LINK_CONNECTED;
	node_persist(p, n);
	(void)alarm_clear(p, PAN_ALARM_QUEUE_LINK, n->hostname);
}

static void
link_down(struct pan *p, struct pan_node *n, int64_t silent_ms)
{
	char text[ERROR_MAX], when[32];

	n->link = PAN_LINK_DISCONNECTED;
	if (n->last_heartbeat != 0)
		pan_format_time(n->last_heartbeat / 1000, when, sizeof(when));
	else
		snprintf(when, sizeof(when), "never");
	snprintf(text, sizeof(text),
	         "no heartbeat from %s for %llds "
	         "(last: %s)",
	         n->hostname, (long long)(silent_ms / 1000), when);
	log_warn(LOG_MESSAGING, "%s disconnected: %s", n->hostname, text);
	node_persist(p, n);
	(void)alarm_raise(p, PAN_ALARM_QUEUE_LINK, n->hostname,
	                  ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_MAJOR, text);
}

/* A node's status table from its heartbeat (printable text only). */
static void
registry_services(struct pan_node *n, const Iselab__Heartbeat *hb)
{
	size_t i, k;

	n->nservices = 0;
	for (i = 0; i < hb->n_services && n->nservices < PAN_NODE_SERVICES_MAX;
	     i++) {
		struct pan_service *s = &n->services[n->nservices];
		const Iselab__ServiceState *ss = hb->services[i];

		if (ss->name == NULL || ss->state == NULL)
			continue;
		snprintf(s->name, sizeof(s->name), "%s", ss->name);
		snprintf(s->state, sizeof(s->state), "%s", ss->state);
		for (k = 0; s->name[k] != '\0'; k++)
			if ((unsigned char)s->name[k] < 0x20)
				s->name[k] = '?';
		for (k = 0; s->state[k] != '\0'; k++)
			if ((unsigned char)s->state[k] < 0x20)
				s->state[k] = '?';
		s->pid = ss->pid;
		n->nservices++;
	}
}

int
registry_heartbeat(struct pan *p, const struct pan_peer *peer,
                   const Iselab__Envelope *env)
{
	Iselab__Envelope reply;
	Iselab__HeartbeatAck ack = ISELAB__HEARTBEAT_ACK__INIT;
	struct pan_node *n;

	if ((n = registry_find_key(p, peer->key)) == NULL) {
		Iselab__Error e = ISELAB__ERROR__INIT;

		messaging_drop(
		    p, PAN_DROP_UNKNOWN_KEY,
		    "heartbeat for '%s' "
		    "from CURVE key %s, which no registered node holds",
		    env->sender, peer->key_z85);
		/*
		 * Another admin node of the deployment (a former primary
		 * that probes us) is told, with our epoch, that it is the
		 * primary no longer.  Any other key gets nothing: a forger
		 * learns nothing of the deployment.
		 */
		if (!primary_admin_key(p, peer->key))
			return 0;
		msg_init(&reply, env->request_id, p->id.hostname);
		e.code = ISELAB__ERROR__CODE__ERROR_UNAUTHORIZED;
		e.message = "not a node of this deployment";
		primary_error(p, &e);
		reply.body_case = ISELAB__ENVELOPE__BODY_ERROR;
		reply.error = &e;
		(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
		return 0;
	}
	if (strcmp(env->sender, n->hostname) != 0) {
		messaging_drop(p, PAN_DROP_FOREIGN,
		               "heartbeat for '%s' from "
		               "the CURVE key of %s",
		               env->sender, n->hostname);
		return 0;
	}
	p->heartbeats++;
	n->last_seen_mono = time_mono_ms();
	n->last_heartbeat = time_now_ms();
	n->applied_seq = env->heartbeat->last_event_seq;
	if (n->link != PAN_LINK_CONNECTED)
		link_up(p, n);
	alarm_reported(p, n, env->heartbeat->alarms, env->heartbeat->n_alarms);
	registry_services(n, env->heartbeat);
	primary_san_report(p, n, env->heartbeat);
	/* It knows a higher epoch: another admin node is the primary. */
	if (env->heartbeat->epoch > p->epoch) {
		primary_superseded(p, env->heartbeat->epoch, NULL);
		return 0;
	}
	msg_init(&reply, env->request_id, p->id.hostname);
	ack.sent_ms = time_now_ms();
	ack.last_event_seq = p->event_seq;
	ack.epoch = p->epoch;
	ack.primary = p->id.hostname;
	reply.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK;
	reply.heartbeat_ack = &ack;
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
	return 0;
}

int64_t
registry_tick(struct pan *p)
{
	int64_t now = time_mono_ms(), silent;
	size_t i;

	for (i = 0; i < p->nnodes; i++) {
		struct pan_node *n = &p->nodes[i];

		if (n->link == PAN_LINK_CONNECTED) {
			silent = now - n->last_seen_mono;
			if (silent > p->hb_timeout_ms)
				link_down(p, n, silent);
		} else if (n->link == PAN_LINK_REGISTERED &&
		           n->last_heartbeat != 0 &&
		           now - p->started_mono > p->hb_timeout_ms) {
			/*
			 * Heard from before this PAN started, silent for a
			 * whole timeout since: down.  A node never heard
			 * from at all stays "registered" without alarm.
			 */
			link_down(p, n, time_now_ms() - n->last_heartbeat);
		}
	}
	return REGISTRY_TICK_MS;
}

/* ---- admin commands ----------------------------------------------------- */

/*
 * "--name value" or "--name=value" at argv[*i]: 1 with *val set, 0 when
 * argv[*i] is another argument, -1 when the value is missing.
 */
int
opt_match(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t len = strlen(name);

	if (strncmp(argv[*i], name, len) != 0)
		return 0;
	if (argv[*i][len] == '=') {
		*val = argv[*i] + len + 1;
		return 1;
	}
	if (argv[*i][len] != '\0')
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

static int
parse_ttl(const char *s, int64_t *ttl, struct error *err)
{
	static const struct config_key keys[] = {
	    {"token.ttl", CONFIG_DURATION, TOKEN_TTL_DEFAULT,
	     "lifetime of a join token", TOKEN_TTL_MIN, TOKEN_TTL_MAX, NULL, 0},
	};
	struct config *cfg;
	int rc = -1;

	if ((cfg = config_new(keys, ARRAY_SIZE(keys), err)) == NULL)
		return -1;
	if (s != NULL && config_set(cfg, "token.ttl", s, CONFIG_SOURCE_FLAG,
	                            "--ttl", err) == -1)
		goto out;
	*ttl = config_get_duration(cfg, "token.ttl");
	rc = 0;
out:
	config_free(cfg);
	return rc;
}

#define NODE_ADD_USAGE                                                         \
	"usage: pan node add HOST --role psn|san [--session-services on|off] " \
	"[--ttl 1h] --data-dir DIR\n"

int
registry_node_add(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	Iselab__TokenRecord tok = ISELAB__TOKEN_RECORD__INIT;
	struct eventlog_set set = {0};
	struct error err = {{0}};
	const char *host = NULL, *role_s = NULL, *ss_s = NULL, *ttl_s = NULL;
	uint8_t id[TOKEN_ID_LEN], secret[TOKEN_SECRET_LEN], digest[32];
	char idhex[2 * TOKEN_ID_LEN + 1], sechex[2 * TOKEN_SECRET_LEN + 1];
	char when[32], line[JOIN_TICKET_MAX];
	struct join_ticket ticket;
	unsigned int dlen = sizeof(digest);
	struct pan_node *n;
	bool ss;
	int64_t ttl, now = time(NULL);
	int i, m = 0, rc = PAN_EXIT_FAIL;

	/* argv: node add HOST [options] */
	for (i = 2; i < argc; i++) {
		if ((m = opt_match(argc, argv, &i, "--role", &role_s)) == 0 &&
		    (m = opt_match(argc, argv, &i, "--session-services",
		                   &ss_s)) == 0 &&
		    (m = opt_match(argc, argv, &i, "--ttl", &ttl_s)) == 0) {
			if (argv[i][0] == '-') {
				fprintf(errf,
				        "pan node add: unknown option "
				        "'%s'\n%s",
				        argv[i], NODE_ADD_USAGE);
				return PAN_EXIT_USAGE;
			}
			if (host != NULL) {
				fprintf(errf,
				        "pan node add: unexpected "
				        "argument '%s'\n%s",
				        argv[i], NODE_ADD_USAGE);
				return PAN_EXIT_USAGE;
			}
			host = argv[i];
		}
		if (m == -1) {
			fprintf(errf, "pan node add: %s needs a value\n%s",
			        argv[i], NODE_ADD_USAGE);
			return PAN_EXIT_USAGE;
		}
	}
	if (host == NULL || role_s == NULL) {
		fprintf(errf, "pan node add: HOST and --role are required\n%s",
		        NODE_ADD_USAGE);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(role_s, "psn") == 0)
		tok.role = ISELAB__ROLE__ROLE_PSN;
	else if (strcmp(role_s, "san") == 0)
		tok.role = ISELAB__ROLE__ROLE_SAN;
	else {
		fprintf(errf, "pan node add: --role: '%s' is not psn or san\n",
		        role_s);
		return PAN_EXIT_USAGE;
	}
	ss = tok.role == ISELAB__ROLE__ROLE_PSN;
	if (ss_s != NULL) {
		if (strcmp(ss_s, "on") == 0)
			ss = true;
		else if (strcmp(ss_s, "off") == 0)
			ss = false;
		else {
			fprintf(errf,
			        "pan node add: --session-services: '%s' "
			        "is not on or off\n",
			        ss_s);
			return PAN_EXIT_USAGE;
		}
		if (ss && tok.role == ISELAB__ROLE__ROLE_SAN) {
			fprintf(errf, "pan node add: session services run on "
			              "a psn, not on a san\n");
			return PAN_EXIT_USAGE;
		}
	}
	if (parse_ttl(ttl_s, &ttl, &err) == -1) {
		fprintf(errf, "pan node add: %s\n", err.msg);
		return PAN_EXIT_USAGE;
	}
	if (node_hostname_check(host, &err) == -1) {
		fprintf(errf, "pan node add: %s\n", err.msg);
		return PAN_EXIT_USAGE;
	}
	if (strcmp(host, p->id.hostname) == 0) {
		fprintf(errf, "pan node add: %s is this PAN\n", host);
		return PAN_EXIT_FAIL;
	}
	if ((n = registry_find(p, host)) != NULL &&
	    n->link != PAN_LINK_REMOVED) {
		fprintf(errf,
		        "pan node add: %s is already registered (as a "
		        "%s); remove it first: pan node remove %s\n",
		        host, node_role_name(n->role), host);
		return PAN_EXIT_FAIL;
	}

	if (RAND_bytes(id, sizeof(id)) != 1 ||
	    RAND_bytes(secret, sizeof(secret)) != 1 ||
	    !EVP_Digest(secret, sizeof(secret), digest, &dlen, EVP_sha256(),
	                NULL)) {
		log_crypto(LOG_MAIN, &err, "RAND_bytes", "join token");
		fprintf(errf, "pan node add: %s\n", err.msg);
		goto out;
	}
	hex_encode(id, sizeof(id), idhex);
	hex_encode(secret, sizeof(secret), sechex);
	tok.token_id = idhex;
	tok.secret_sha256.data = digest;
	tok.secret_sha256.len = sizeof(digest);
	tok.hostname = (char *)host;
	tok.session_services = ss;
	tok.created_at = now;
	tok.expires_at = now + ttl;
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_TOKEN_RECORD,
	                        idhex, strlen(idhex), &tok.base, &err) == -1 ||
	    eventlog_set_commit(p, &set, NULL, false, &err) == -1) {
		fprintf(errf, "pan node add: cannot record the token: %s\n",
		        err.msg);
		goto out;
	}
	pan_format_time(tok.expires_at, when, sizeof(when));
	/* docs/registration.md "Join string". */
	memset(&ticket, 0, sizeof(ticket));
	snprintf(ticket.token_id, sizeof(ticket.token_id), "%s", idhex);
	snprintf(ticket.secret, sizeof(ticket.secret), "%s", sechex);
	memcpy(ticket.pan_curve_public, p->curve_public, CURVE_KEY_LEN);
	snprintf(ticket.endpoint, sizeof(ticket.endpoint), "%s",
	         p->messaging_endpoint);
	if (join_ticket_format(&ticket, line, sizeof(line), &err) == -1) {
		/* The token is stored but nobody can have it: harmless. */
		fprintf(errf, "pan node add: %s\n", err.msg);
		goto out;
	}
	fprintf(out, "%s\n", line);
	fprintf(
	    errf,
	    "Join string for %s (%s, session services %s): "
	    "works once, until %s.\nOn %s: %s join --join STRING --hostname "
	    "%s --data-dir DIR\n",
	    host, role_s, ss ? "on" : "off", when, host, role_s, host);
	log_info(LOG_MAIN, "token %s made for %s (%s), expires %s", idhex, host,
	         role_s, when);
	rc = PAN_EXIT_OK;
out:
	eventlog_set_free(&set);
	secure_zero(secret, sizeof(secret));
	secure_zero(sechex, sizeof(sechex));
	secure_zero(&ticket, sizeof(ticket));
	secure_zero(line, sizeof(line));
	return rc;
}

static int
node_cmp(const void *a, const void *b)
{
	const struct pan_node *const *x = a, *const *y = b;

	return strcmp((*x)->hostname, (*y)->hostname);
}

const char *
registry_sync_name(const struct pan *p, const struct pan_node *n)
{
	if (n->link == PAN_LINK_REMOVED)
		return "-";
	if (n->link != PAN_LINK_CONNECTED)
		return "Out of Sync";
	return n->applied_seq >= p->event_seq ? "Sync Completed"
	                                      : "Sync In Progress";
}

int
registry_node_list(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct pan_node **v;
	char hb[32], exp[32];
	const char *ss;
	bool services = argc == 3 && strcmp(argv[2], "--services") == 0;
	size_t i;

	if (argc > 2 && !services) {
		fprintf(errf,
		        "pan node list: unexpected argument '%s'\n"
		        "usage: pan node list [--services] --data-dir DIR\n",
		        argv[2]);
		return PAN_EXIT_USAGE;
	}
	if ((v = calloc(p->nnodes + 1, sizeof(*v))) == NULL) {
		fprintf(errf, "pan node list: out of memory\n");
		return PAN_EXIT_FAIL;
	}
	for (i = 0; i < p->nnodes; i++)
		v[i] = &p->nodes[i];
	qsort(v, p->nnodes, sizeof(*v), node_cmp);
	fprintf(out, "%-24s %-5s %-16s %-13s %-20s %-20s %s\n", "HOSTNAME",
	        "ROLE", "SESSION-SERVICES", "STATE", "LAST-HEARTBEAT",
	        "CERT-EXPIRY", "SYNC");
	for (i = 0; i < p->nnodes; i++) {
		struct pan_node *n = v[i];
		char sync[64];

		if (n->last_heartbeat != 0)
			pan_format_time(n->last_heartbeat / 1000, hb,
			                sizeof(hb));
		else
			snprintf(hb, sizeof(hb), "-");
		if (n->cert_expiry != 0)
			pan_format_time(n->cert_expiry, exp, sizeof(exp));
		else
			snprintf(exp, sizeof(exp), "-");
		if (n->role == NODE_ROLE_PSN)
			ss = n->session_services ? "on" : "off";
		else
			ss = "-";
		/* Events applied, as its last heartbeat said. */
		if (n->link == PAN_LINK_CONNECTED &&
		    n->applied_seq < p->event_seq)
			snprintf(sync, sizeof(sync), "%s (%" PRIu64 " behind)",
			         registry_sync_name(p, n),
			         p->event_seq - n->applied_seq);
		else
			snprintf(sync, sizeof(sync), "%s",
			         registry_sync_name(p, n));
		fprintf(out, "%-24s %-5s %-16s %-13s %-20s %-20s %s\n",
		        n->hostname, node_role_name(n->role), ss,
		        pan_link_name(n->link), hb, exp, sync);
	}
	/*
	 * As the admin GUI's deployment page: each node's application status
	 * as its last heartbeat reported it (stale while the link is down).
	 */
	for (i = 0; services && i < p->nnodes; i++) {
		struct pan_node *n = v[i];
		size_t k;

		if (n->link == PAN_LINK_REMOVED)
			continue;
		fprintf(out, "\n%s (%s)%s\n%-32s %-14s %s\n", n->hostname,
		        pan_link_name(n->link),
		        n->link == PAN_LINK_CONNECTED ? ""
		        : n->nservices > 0 ? ": as last reported"
		                           : ": not reported yet",
		        "PROCESS NAME", "STATE", "PROCESS ID");
		for (k = 0; k < n->nservices; k++) {
			char pid[16] = "-";

			if (n->services[k].pid != 0)
				snprintf(pid, sizeof(pid), "%u",
				         n->services[k].pid);
			fprintf(out, "%-32s %-14s %s\n", n->services[k].name,
			        n->services[k].state, pid);
		}
	}
	free(v);
	return PAN_EXIT_OK;
}

static void
say_admin_removed(const struct pan *p, const char *host, FILE *out)
{
	fprintf(out,
	        "%s removed from the admin nodes (event %" PRIu64
	        "); the nodes stop probing it\n",
	        host, p->event_seq);
}

int
registry_node_remove(struct pan *p, int argc, char **argv, FILE *out,
                     FILE *errf)
{
	Iselab__NodeRecord *r = NULL;
	struct eventlog_set set = {0};
	struct error err = {{0}};
	struct pan_node *n;
	int64_t now = time(NULL);
	const char *host;
	size_t i;
	int got, rc = PAN_EXIT_FAIL;

	if (argc != 3 || argv[2][0] == '-') {
		fprintf(errf, "usage: pan node remove HOST --data-dir DIR\n");
		return PAN_EXIT_USAGE;
	}
	host = argv[2];
	if ((n = registry_find(p, host)) == NULL) {
		/*
		 * A former primary is an admin node with no node record on the
		 * promoted SAN: dropping it from the deployment is all there is
		 * to do (what its Node CA issued stays valid).
		 */
		got = primary_admin_remove(p, host, &err);
		if (got == -1)
			goto fail;
		if (got == 1) {
			say_admin_removed(p, host, out);
			return PAN_EXIT_OK;
		}
		fprintf(errf,
		        "pan node remove: no node %s in this "
		        "deployment\n",
		        host);
		return PAN_EXIT_FAIL;
	}
	if (n->link == PAN_LINK_REMOVED) {
		fprintf(errf, "pan node remove: %s is already removed\n", host);
		return PAN_EXIT_FAIL;
	}
	if (registry_record(p, host, &r, &err) == -1)
		goto fail;
	/*
	 * RFC 5280 section 5.3.1: the node is gone, not compromised.  One
	 * cert-status event per certificate that is not revoked yet (the
	 * first revocation stands; a hold becomes a revocation with its
	 * time), and the record, in one transaction: every node learns it.
	 */
	for (i = 0; i < r->n_certs; i++) {
		struct store_cert *c = NULL;

		if (r->certs[i]->issuer_key_id.len != STORE_KEY_ID_LEN) {
			error_set(&err, "a certificate reference without an "
			                "issuer key id");
			goto fail;
		}
		if (store_get_cert(p->st, r->certs[i]->issuer_key_id.data,
		                   r->certs[i]->serial.data,
		                   r->certs[i]->serial.len, &c, &err) == -1)
			goto fail;
		got = 0;
		if (c != NULL && c->status != STORE_STATUS_REVOKED)
			got = eventlog_set_status(
			    &set, c, STORE_STATUS_REVOKED,
			    c->status == STORE_STATUS_HOLD && c->revoked_at != 0
			        ? c->revoked_at
			        : now,
			    STORE_REASON_CESSATION_OF_OPERATION, &err);
		store_cert_free(c);
		if (got == -1)
			goto fail;
	}
	r->status = ISELAB__NODE_STATUS__NODE_STATUS_REMOVED;
	r->removed_at = now;
	r->last_heartbeat_ms = n->last_heartbeat;
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_NODE_RECORD, host,
	                        strlen(host), &r->base, &err) == -1 ||
	    eventlog_set_commit(p, &set, NULL, false, &err) == -1)
		goto fail;
	if (remember_removed_key(p, n->curve) == -1)
		log_error(LOG_MAIN,
		          "out of memory: the key of %s is refused "
		          "only after a restart",
		          host);
	/* Its link state goes; its record stays, as "removed". */
	n->link = PAN_LINK_REMOVED;
	n->last_seen_mono = 0;
	(void)alarm_clear(p, PAN_ALARM_QUEUE_LINK, host);
	alarm_reported_clear_node(p, n);
	/* Cut its event subscription: every subscriber passes ZAP again. */
	if (messaging_events_rebind(p, &err) == -1)
		log_error(LOG_MESSAGING, "events socket: %s", err.msg);
	fprintf(
	    out,
	    "%s removed: %zu certificate%s revoked "
	    "(cessationOfOperation); its CURVE key is refused from now on\n",
	    host, r->n_certs, r->n_certs == 1 ? "" : "s");
	/*
	 * A SAN: out of the admin nodes too.  Were this to fail, the next
	 * start drops it (a removed node is never taken as one).
	 */
	got = primary_admin_remove(p, host, &err);
	if (got == 1)
		say_admin_removed(p, host, out);
	else if (got == -1)
		log_error(LOG_MAIN,
		          "%s: deployment event: %s (sent again at the next "
		          "start)",
		          host, err.msg);
	log_info(LOG_MAIN, "%s removed; %zu certificates revoked", host,
	         r->n_certs);
	rc = PAN_EXIT_OK;
	goto out;
fail:
	fprintf(errf, "pan node remove: %s: %s\n", host, err.msg);
out:
	eventlog_set_free(&set);
	if (r != NULL)
		iselab__node_record__free_unpacked(r, NULL);
	return rc;
}

/* ---- the outbox: certificates the nodes issued ------------------------- */

/* The CA certificates a node holds (its Endpoint Sub CA or Node CA). */
#define OUTBOX_NODE_CAS_MAX 4

/* A node's CA certificates, from its record and the store. */
static size_t
outbox_node_cas(struct pan *p, const char *host, X509 **cas,
                uint8_t kids[][STORE_KEY_ID_LEN])
{
	Iselab__NodeRecord *r;
	struct store_cert *sc;
	struct error err = {{0}};
	size_t i, n = 0;

	if (registry_record(p, host, &r, &err) == -1) {
		log_error(LOG_MESSAGING, "outbox of %s: %s", host, err.msg);
		return 0;
	}
	for (i = 0; i < r->n_certs && n < OUTBOX_NODE_CAS_MAX; i++) {
		Iselab__IssuedCertRef *ref = r->certs[i];
		enum cert_profile prof;

		if (ref->issuer_key_id.len != STORE_KEY_ID_LEN ||
		    cert_profile_from_name(ref->profile, &prof, NULL) == -1 ||
		    !cert_profile_is_ca(prof))
			continue;
		sc = NULL;
		if (store_get_cert(p->st, ref->issuer_key_id.data,
		                   ref->serial.data, ref->serial.len, &sc,
		                   NULL) != STORE_OK)
			continue;
		if (sc->status == STORE_STATUS_GOOD &&
		    (cas[n] = cert_parse_der(sc->der, sc->der_len, NULL)) !=
		        NULL) {
			if (store_issuer_key_id(cas[n], kids[n], NULL) == 0)
				n++;
			else
				X509_free(cas[n]);
		}
		store_cert_free(sc);
	}
	iselab__node_record__free_unpacked(r, NULL);
	return n;
}

/* Which of cas issued x (issuer name and signature), or -1. */
static int
outbox_issuer(X509 *x, X509 **cas, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (X509_NAME_cmp(X509_get_issuer_name(x),
		                  X509_get_subject_name(cas[i])) == 0 &&
		    X509_verify(x, X509_get0_pubkey(cas[i])) == 1)
			return (int)i;
	ERR_clear_error();
	return -1;
}

static bool
outbox_profile_ok(const char *s)
{
	size_t i, len = strlen(s);

	if (len == 0 || len > STORE_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/* Refuse one item: logged, counted, not acked (the node sends it again). */
/*
 * The items of one batch refused for good, answered in the ack so that the
 * PSN sets them aside rather than sending them again forever.
 */
struct outbox_refusals {
	Iselab__OutboxRefusal r[OUTBOX_BATCH_MAX];
	Iselab__OutboxRefusal *rp[OUTBOX_BATCH_MAX];
	char why[OUTBOX_BATCH_MAX][ERROR_MAX];
	size_t n;
};

static void outbox_refuse(struct pan *p, struct outbox_refusals *rf,
                          const char *host, size_t i,
                          const ProtobufCBinaryData *key, const char *fmt,
                          ...) __attribute__((format(printf, 6, 7)));
static void
outbox_refuse(struct pan *p, struct outbox_refusals *rf, const char *host,
              size_t i, const ProtobufCBinaryData *key, const char *fmt, ...)
{
	char *why = rf->why[rf->n];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, ERROR_MAX, fmt, ap);
	va_end(ap);
	p->outbox_refused++;
	log_warn(LOG_MESSAGING, "outbox of %s: item %zu refused: %s", host, i,
	         why);
	/* Without a key the PSN could not tell which item: nothing to say. */
	if (key->len == 0 || key->len > OUTBOX_KEY_MAX)
		return;
	iselab__outbox_refusal__init(&rf->r[rf->n]);
	rf->r[rf->n].key = *key;
	rf->r[rf->n].reason = why;
	rf->rp[rf->n] = &rf->r[rf->n];
	rf->n++;
}

/* One item that is not stored yet, waiting for the batch's transaction. */
struct outbox_pending {
	uint8_t kid[STORE_KEY_ID_LEN];
	uint8_t serial[STORE_SERIAL_MAX];
	size_t serial_len;
	const ProtobufCBinaryData *key; /* the item's key, to ack */
};

int
registry_outbox(struct pan *p, const struct pan_peer *peer,
                const Iselab__Envelope *env)
{
	const Iselab__OutboxBatch *batch = env->outbox_batch;
	Iselab__Envelope reply;
	Iselab__OutboxAck ack = ISELAB__OUTBOX_ACK__INIT;
	ProtobufCBinaryData acks[OUTBOX_BATCH_MAX];
	struct outbox_pending pend[OUTBOX_BATCH_MAX];
	struct outbox_refusals *rf = NULL;
	uint8_t kids[OUTBOX_NODE_CAS_MAX][STORE_KEY_ID_LEN];
	uint8_t key[OUTBOX_KEY_MAX];
	X509 *cas[OUTBOX_NODE_CAS_MAX];
	struct store_batch *b = NULL;
	struct eventlog_set set = {0};
	struct store_cert *sc;
	struct error err = {{0}};
	struct pan_node *n;
	size_t ncas = 0, nacks = 0, npend = 0, stored = 0, i, j, klen;
	int ci, rc;

	if ((n = registry_find_key(p, peer->key)) == NULL) {
		messaging_drop(p, PAN_DROP_UNKNOWN_KEY,
		               "outbox batch for '%s' from CURVE key %s, which "
		               "no registered node holds",
		               env->sender, peer->key_z85);
		return 0;
	}
	if (strcmp(env->sender, n->hostname) != 0) {
		messaging_drop(p, PAN_DROP_FOREIGN,
		               "outbox batch for '%s' from the CURVE key of %s",
		               env->sender, n->hostname);
		return 0;
	}
	if (batch->n_items > OUTBOX_BATCH_MAX) {
		p->outbox_refused += batch->n_items;
		log_warn(LOG_MESSAGING,
		         "outbox of %s: a batch of %zu certificates refused "
		         "(at most %d)",
		         n->hostname, batch->n_items, OUTBOX_BATCH_MAX);
		return 0;
	}
	p->outbox_batches++;
	ncas = outbox_node_cas(p, n->hostname, cas, kids);
	if ((b = store_batch_new()) == NULL ||
	    (rf = calloc(1, sizeof(*rf))) == NULL) {
		log_error(LOG_MESSAGING, "outbox of %s: out of memory",
		          n->hostname);
		goto out;
	}
	for (i = 0; i < batch->n_items; i++) {
		const Iselab__OutboxItem *it = batch->items[i];
		X509 *x;

		if ((x = cert_parse_der(it->cert.data, it->cert.len, NULL)) ==
		    NULL) {
			outbox_refuse(p, rf, n->hostname, i, &it->key,
			              "the certificate does not parse");
			continue;
		}
		if (it->issued_at_ms < 0 ||
		    outbox_key(it->issued_at_ms, x, key, &klen, NULL) == -1 ||
		    klen != it->key.len ||
		    memcmp(key, it->key.data, klen) != 0) {
			outbox_refuse(p, rf, n->hostname, i, &it->key,
			              "its key is not issued_at_ms || serial");
			X509_free(x);
			continue;
		}
		if (it->profile == NULL || !outbox_profile_ok(it->profile) ||
		    X509_check_ca(x) != 0) {
			outbox_refuse(p, rf, n->hostname, i, &it->key,
			              "a CA certificate or a bad profile name");
			X509_free(x);
			continue;
		}
		if ((ci = outbox_issuer(x, cas, ncas)) == -1) {
			char subject[CERT_CN_BUF + 64];

			cert_name_string(X509_get_issuer_name(x), subject,
			                 sizeof(subject));
			outbox_refuse(p, rf, n->hostname, i, &it->key,
			              "not issued by a CA certificate of %s "
			              "(issuer %s)",
			              n->hostname, subject);
			X509_free(x);
			continue;
		}
		/* Already stored (a redelivery) or earlier in this batch. */
		sc = NULL;
		rc = store_get_cert(p->st, kids[ci], key + OUTBOX_TIME_LEN,
		                    klen - OUTBOX_TIME_LEN, &sc, &err);
		store_cert_free(sc);
		for (j = 0; rc == STORE_NOT_FOUND && j < npend; j++)
			if (memcmp(pend[j].kid, kids[ci], STORE_KEY_ID_LEN) ==
			        0 &&
			    pend[j].serial_len == klen - OUTBOX_TIME_LEN &&
			    memcmp(pend[j].serial, key + OUTBOX_TIME_LEN,
			           pend[j].serial_len) == 0)
				rc = STORE_EXISTS;
		if (rc == STORE_OK || rc == STORE_EXISTS) {
			p->outbox_known++;
			acks[nacks++] = it->key;
		} else if (rc == -1) {
			log_error(LOG_MESSAGING, "outbox of %s: %s",
			          n->hostname, err.msg);
		} else if (store_batch_put_x509(
		               b, x, kids[ci], n->hostname, it->profile,
		               it->issued_at_ms / 1000) == -1) {
			/* b is a dry run: the store's checks, per item. */
			outbox_refuse(p, rf, n->hostname, i, &it->key,
			              "the store refuses the certificate");
		} else if (eventlog_set_cert(&set, it->cert.data, it->cert.len,
		                             kids[ci], n->hostname, it->profile,
		                             it->issued_at_ms / 1000,
		                             &err) == -1) {
			log_error(LOG_MESSAGING, "outbox of %s: %s",
			          n->hostname, err.msg);
		} else {
			memcpy(pend[npend].kid, kids[ci], STORE_KEY_ID_LEN);
			memcpy(pend[npend].serial, key + OUTBOX_TIME_LEN,
			       klen - OUTBOX_TIME_LEN);
			pend[npend].serial_len = klen - OUTBOX_TIME_LEN;
			pend[npend].key = &it->key;
			npend++;
		}
		X509_free(x);
	}
	/*
	 * One transaction for the batch, one cert-issued event per new
	 * certificate (the SAN's replica); acked only once it is durable.
	 * What was already stored is acked without an event.
	 */
	if (npend > 0) {
		if (eventlog_set_commit(p, &set, NULL, false, &err) == -1)
			log_error(
			    LOG_MESSAGING,
			    "outbox of %s: %zu certificates not stored: %s",
			    n->hostname, npend, err.msg);
		else {
			for (j = 0; j < npend; j++)
				acks[nacks++] = *pend[j].key;
			stored = npend;
			p->outbox_stored += npend;
		}
	}
	log_info(LOG_MESSAGING,
	         "outbox of %s: %zu certificates, %zu stored, %zu already "
	         "known, %zu refused, %zu not acked",
	         n->hostname, batch->n_items, stored, nacks - stored, rf->n,
	         batch->n_items - nacks - rf->n);
	msg_init(&reply, env->request_id, p->id.hostname);
	ack.n_keys = nacks;
	ack.keys = acks;
	ack.n_refused = rf->n;
	ack.refused = rf->rp;
	reply.body_case = ISELAB__ENVELOPE__BODY_OUTBOX_ACK;
	reply.outbox_ack = &ack;
	(void)messaging_reply(p, peer->rid, peer->rid_len, &reply);
out:
	free(rf);
	store_batch_free(b);
	eventlog_set_free(&set);
	for (i = 0; i < ncas; i++)
		X509_free(cas[i]);
	return 0;
}

/*
 * The settings of node n as they are now (session services, CA service),
 * for the node: one event, written with the node's record.
 */
static int
settings_commit(struct pan *p, struct pan_node *n, bool ss, bool ca_disabled,
                struct error *err)
{
	Iselab__NodeRecord *r = NULL;
	Iselab__NodeSettings ns = ISELAB__NODE_SETTINGS__INIT;
	Iselab__Event ev = ISELAB__EVENT__INIT, *evs[2];
	struct eventlog_set set = {0};
	int rc = -1;

	if (registry_record(p, n->hostname, &r, err) == -1)
		return -1;
	r->session_services = ss;
	r->ca_disabled = ca_disabled;
	r->last_heartbeat_ms = n->last_heartbeat;
	ns.hostname = n->hostname;
	ns.session_services = ss;
	ns.ca_disabled = ca_disabled;
	/* The settings for the node, its record for the replica. */
	if (eventlog_set_record(&set, ISELAB__EVENT__CHANGE_NODE_RECORD,
	                        n->hostname, strlen(n->hostname), &r->base,
	                        err) == -1)
		goto out;
	ev.change_case = ISELAB__EVENT__CHANGE_NODE_SETTINGS;
	ev.node_settings = &ns;
	evs[0] = &ev;
	evs[1] = set.evs[0];
	if (eventlog_commit_n(p, evs, 2, NULL, false, err) == -1)
		goto out;
	n->session_services = ss;
	n->ca_disabled = ca_disabled;
	rc = 0;
out:
	eventlog_set_free(&set);
	iselab__node_record__free_unpacked(r, NULL);
	return rc;
}

#define NODE_EDIT_USAGE                                                        \
	"usage: pan node edit HOST --session-services on|off --data-dir DIR\n"

int
registry_node_edit(struct pan *p, int argc, char **argv, FILE *out,
                   FILE *errf)
{
	struct error err = {{0}};
	struct pan_node *n;
	const char *host = NULL, *ss_s = NULL;
	bool ss;
	int i, m;

	/* argv: node edit HOST --session-services on|off */
	for (i = 2; i < argc; i++) {
		if ((m = opt_match(argc, argv, &i, "--session-services",
		                   &ss_s)) == -1) {
			fprintf(errf, "pan node edit: --session-services needs "
			              "on or off\n" NODE_EDIT_USAGE);
			return PAN_EXIT_USAGE;
		}
		if (m == 1)
			continue;
		if (argv[i][0] == '-' || host != NULL) {
			fprintf(errf, "pan node edit: unexpected argument '%s'\n"
			              NODE_EDIT_USAGE,
			        argv[i]);
			return PAN_EXIT_USAGE;
		}
		host = argv[i];
	}
	if (host == NULL || ss_s == NULL ||
	    (strcmp(ss_s, "on") != 0 && strcmp(ss_s, "off") != 0)) {
		fputs(NODE_EDIT_USAGE, errf);
		return PAN_EXIT_USAGE;
	}
	ss = strcmp(ss_s, "on") == 0;
	if ((n = registry_find(p, host)) == NULL ||
	    n->link == PAN_LINK_REMOVED) {
		fprintf(errf, "pan node edit: no node %s in this deployment\n",
		        host);
		return PAN_EXIT_FAIL;
	}
	if (n->role != NODE_ROLE_PSN) {
		fprintf(errf, "pan node edit: %s is a %s; session services are "
		              "a PSN's\n",
		        host, node_role_name(n->role));
		return PAN_EXIT_FAIL;
	}
	if (n->session_services == ss) {
		fprintf(out, "%s: session services are already %s\n", host,
		        ss_s);
		return PAN_EXIT_OK;
	}
	if (settings_commit(p, n, ss, n->ca_disabled, &err) == -1) {
		fprintf(errf, "pan node edit: %s: %s\n", host, err.msg);
		return PAN_EXIT_FAIL;
	}
	fprintf(out, "%s: session services %s (event %" PRIu64 ")\n", host,
	        ss_s, p->event_seq);
	log_info(LOG_MAIN, "%s: session services turned %s", host, ss_s);
	return PAN_EXIT_OK;
}

#define CA_SERVICE_USAGE                                                       \
	"usage: pan ca disable|enable [--node HOST] --data-dir DIR\n"

int
registry_ca_service(struct pan *p, int argc, char **argv, FILE *out,
                    FILE *errf)
{
	struct error err = {{0}};
	const char *node = NULL;
	bool disable = strcmp(argv[1], "disable") == 0;
	size_t k, changed = 0, psns = 0;
	int i, m, rc = PAN_EXIT_OK;

	for (i = 2; i < argc; i++) {
		if ((m = opt_match(argc, argv, &i, "--node", &node)) == 1)
			continue;
		fprintf(errf, "pan ca %s: unexpected argument '%s'\n"
		              CA_SERVICE_USAGE,
		        argv[1], argv[i]);
		return PAN_EXIT_USAGE;
	}
	if (node != NULL) {
		struct pan_node *n = registry_find(p, node);

		if (n == NULL || n->link == PAN_LINK_REMOVED ||
		    n->role != NODE_ROLE_PSN) {
			fprintf(errf, "pan ca %s: no PSN %s in this deployment\n",
			        argv[1], node);
			return PAN_EXIT_FAIL;
		}
	}
	for (k = 0; k < p->nnodes; k++) {
		struct pan_node *n = &p->nodes[k];

		if (n->role != NODE_ROLE_PSN || n->link == PAN_LINK_REMOVED ||
		    (node != NULL && strcmp(node, n->hostname) != 0))
			continue;
		psns++;
		if (n->ca_disabled == disable) {
			fprintf(out, "%s: the CA service is already %s\n",
			        n->hostname, disable ? "disabled" : "enabled");
			continue;
		}
		if (settings_commit(p, n, n->session_services, disable, &err) ==
		    -1) {
			fprintf(errf, "pan ca %s: %s: %s\n", argv[1],
			        n->hostname, err.msg);
			rc = PAN_EXIT_FAIL;
			continue;
		}
		changed++;
		fprintf(out, "%s: the CA service %s (event %" PRIu64 ")%s\n",
		        n->hostname, disable ? "disabled" : "enabled",
		        p->event_seq,
		        disable ? "; its EST server stops with it" : "");
		log_info(LOG_MAIN, "%s: CA service %s", n->hostname,
		         disable ? "disabled" : "enabled");
	}
	if (psns == 0)
		fprintf(out, "No PSN in this deployment.\n");
	return rc;
}
