/*
 * Unit tests for common/join.c: join strings (good and bad), the deployment
 * config round trip, and the join exchange and heartbeat link against a
 * fake PAN in a thread (a CURVE ROUTER): a normal join, a refusal, a server
 * with another key (a man in the middle, which must never see the token),
 * an unreachable PAN, checks of the response, and the rollback of files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "cert.h"
#include "chain.h"
#include "csr.h"
#include "curve.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "msg.h"
#include "node.h"
#include "util.h"

#define TOKEN "0123456789abcdef"
#define SECRET                                                                 \
	"00112233445566778899aabbccddeeff"                                     \
	"00112233445566778899aabbccddeeff"
#define KEYHEX                                                                 \
	"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"                                     \
	"b0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
#define GOOD "iselab1." TOKEN "." SECRET "." KEYHEX

/*
 * Join strings.
 */

static void
test_ticket_good(void **state)
{
	struct join_ticket t;
	struct error err;
	char buf[JOIN_TICKET_MAX + 1];

	(void)state;
	assert_int_equal(join_ticket_parse(GOOD "@127.0.0.11:8671", &t, &err),
	                 0);
	assert_string_equal(t.token_id, TOKEN);
	assert_string_equal(t.secret, SECRET);
	assert_int_equal(t.pan_curve_public[0], 0xa0);
	assert_int_equal(t.pan_curve_public[31], 0xbf);
	assert_string_equal(t.endpoint, "tcp://127.0.0.11:8671");

	/* Upper case hex is taken and kept in lower case. */
	assert_int_equal(join_ticket_parse("iselab1.0123456789ABCDEF."
	                                   "00112233445566778899AABBCCDDEEFF"
	                                   "00112233445566778899aabbccddeeff."
	                                   "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
	                                   "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF"
	                                   "@pan1.lab.example:1",
	                                   &t, &err),
	                 0);
	assert_string_equal(t.token_id, TOKEN);
	assert_string_equal(t.secret, SECRET);
	assert_string_equal(t.endpoint, "tcp://pan1.lab.example:1");

	assert_int_equal(
	    join_ticket_parse(" \t" GOOD "@[::1]:65535\r\n", &t, &err), 0);
	assert_string_equal(t.endpoint, "tcp://[::1]:65535");
	assert_int_equal(
	    join_ticket_parse(GOOD "@[2001:db8::1]:8671", &t, &err), 0);
	assert_string_equal(t.endpoint, "tcp://[2001:db8::1]:8671");

	/* Format gives back what parse takes. */
	assert_int_equal(join_ticket_format(&t, buf, sizeof(buf), &err), 0);
	assert_string_equal(buf, GOOD "@[2001:db8::1]:8671");
	assert_int_equal(join_ticket_format(&t, buf, 20, &err), -1);
	assert_string_equal(join_endpoint_address(t.endpoint),
	                    "[2001:db8::1]:8671");
}

static void
test_ticket_bad(void **state)
{
	static const struct {
		const char *s;
		const char *why; /* a part of the message */
	} bad[] = {
	    {"", "empty"},
	    {"   \n", "empty"},
	    {GOOD, "no '@host:port'"},
	    {"iselab2." TOKEN "." SECRET "." KEYHEX "@pan1:8671",
	     "does not start with 'iselab1.'"},
	    {"iselab1." TOKEN "." SECRET "@pan1:8671", "4 fields"},
	    {GOOD ".00@pan1:8671", "4 fields"},
	    {"iselab1.0123456789abcde." SECRET "." KEYHEX "@pan1:8671",
	     "token id must be 16 hex digits, found 15"},
	    {"iselab1.0123456789abcdef0." SECRET "." KEYHEX "@pan1:8671",
	     "token id must be 16 hex digits, found 17"},
	    {"iselab1.0123456789abcdeg." SECRET "." KEYHEX "@pan1:8671",
	     "token id holds a character that is not a hex digit"},
	    {"iselab1." TOKEN ".0011." KEYHEX "@pan1:8671",
	     "secret must be 64 hex digits"},
	    {"iselab1." TOKEN "." SECRET ".a0a1@pan1:8671",
	     "PAN key must be 64 hex digits"},
	    {GOOD "@pan1", "no port"},
	    {GOOD "@", "no PAN address"},
	    {GOOD "@:8671", "no host"},
	    {GOOD "@::1:8671", "must be in brackets"},
	    {GOOD "@[::1:8671", "without ']'"},
	    {GOOD "@[::1]", "no port after the IPv6"},
	    {GOOD "@[::g]:8671", "not an IPv6 address"},
	    {GOOD "@[]:8671", "bad IPv6"},
	    {GOOD "@999.1.1.1:8671", "not an IPv4 address"},
	    {GOOD "@pan_1:8671", "pan_1"},
	    {GOOD "@pan1:0", "port '0'"},
	    {GOOD "@pan1:65536", "port '65536'"},
	    {GOOD "@pan1:+80", "port '+80'"},
	    {GOOD "@pan1:", "port ''"},
	    {GOOD "@pan1:123456", "port '123456'"},
	    {GOOD "@pan1:80@pan2:80", "more than one '@'"},
	    {"iselab1." TOKEN " ." SECRET "." KEYHEX "@pan1:8671",
	     "blank or control character at position 25"},
	};
	char longer[JOIN_TICKET_MAX + 10];
	struct join_ticket t;
	struct error err;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&err, 0, sizeof(err));
		memset(&t, 0x55, sizeof(t));
		if (join_ticket_parse(bad[i].s, &t, &err) != -1)
			fail_msg("accepted '%s'", bad[i].s);
		if (strstr(err.msg, bad[i].why) == NULL)
			fail_msg("'%s': message '%s' does not say '%s'",
			         bad[i].s, err.msg, bad[i].why);
		/* A refused string leaves no secret behind. */
		assert_int_equal(t.secret[0], 0);
	}
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	assert_int_equal(join_ticket_parse(longer, &t, &err), -1);
	assert_non_null(strstr(err.msg, "at most 512"));

	/* Format refuses what parse would. */
	assert_int_equal(join_ticket_parse(GOOD "@pan1:8671", &t, &err), 0);
	snprintf(t.endpoint, sizeof(t.endpoint), "ipc:///tmp/x");
	assert_int_equal(join_ticket_format(&t, longer, sizeof(longer), &err),
	                 -1);
	snprintf(t.endpoint, sizeof(t.endpoint), "tcp://pan1:99999");
	assert_int_equal(join_ticket_format(&t, longer, sizeof(longer), &err),
	                 -1);
	assert_non_null(strstr(err.msg, "port"));
	snprintf(t.endpoint, sizeof(t.endpoint), "tcp://pan1:80");
	t.token_id[3] = 'x';
	assert_int_equal(join_ticket_format(&t, longer, sizeof(longer), &err),
	                 -1);
}

static void
test_duration(void **state)
{
	static const struct {
		const char *s;
		int64_t ms;
	} good[] = {
	    {"30", 30000},  {"30s", 30000},  {"500ms", 500},
	    {"5m", 300000}, {"1h", 3600000}, {"24h", 86400000},
	};
	static const char *const bad[] = {
	    "",     "s",   "-1s",  "0",   "0ms",
	    "1.5s", "10x", "30 s", "25h", "99999999999999999999",
	};
	struct error err;
	int64_t ms;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(good); i++) {
		assert_int_equal(join_parse_duration(good[i].s, &ms, &err), 0);
		assert_int_equal(ms, good[i].ms);
	}
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		if (join_parse_duration(bad[i], &ms, &err) != -1)
			fail_msg("accepted duration '%s'", bad[i]);
}

/*
 * A test PKI: root and node CA of "pan1", made once.
 */

struct pki {
	EVP_PKEY *root_key, *node_key;
	X509 *root, *node_ca;
};

static struct pki pki;

static X509 *
issue(enum cert_profile profile, const char *host, EVP_PKEY *key, X509 *issuer,
      EVP_PKEY *issuer_key)
{
	struct cert_request req;
	struct error err;
	X509 *x = NULL;

	cert_request_init(&req, profile);
	assert_int_equal(cert_request_set_product_cn(&req, host, &err), 0);
	assert_int_equal(cert_request_set_key(&req, key, &err), 0);
	if (cert_issue(&req, issuer, issuer_key, &x, &err) == -1)
		fail_msg("cert_issue: %s", err.msg);
	cert_request_free(&req);
	return x;
}

static int
pki_setup(void **state)
{
	struct error err;

	(void)state;
	pki.root_key = key_generate(KEY_EC_P256, &err);
	pki.node_key = key_generate(KEY_EC_P256, &err);
	pki.root = issue(CERT_PROFILE_ROOT_CA, "pan1", pki.root_key, NULL,
	                 pki.root_key);
	pki.node_ca = issue(CERT_PROFILE_NODE_CA, "pan1", pki.node_key,
	                    pki.root, pki.root_key);
	return 0;
}

static int
pki_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(pki.root_key);
	EVP_PKEY_free(pki.node_key);
	X509_free(pki.root);
	X509_free(pki.node_ca);
	return 0;
}

/*
 * A fake PAN: a CURVE ROUTER in a thread.
 */

enum fake_mode {
	FAKE_JOIN,   /* answer a JoinRequest with certificates */
	FAKE_REFUSE, /* answer with an Error */
	FAKE_ACK,    /* acknowledge heartbeats */
	FAKE_SILENT, /* read and say nothing */
};

struct fake_pan {
	enum fake_mode mode;
	void *ctx, *sock;
	char endpoint[128];
	unsigned char pub[CURVE_KEY_LEN]; /* the key it holds */
	pthread_t thread;
	atomic_int stop;
	atomic_int received;   /* envelopes it got */
	atomic_int heartbeats; /* of which heartbeats */
	char token_seen[32];   /* token id of the last JoinRequest */
	int delimiter;         /* reply with an empty frame first */
};

static void
fake_send(struct fake_pan *f, zmq_msg_t *id, Iselab__Envelope *env)
{
	struct error err;
	uint8_t *buf;
	size_t len;

	buf = msg_pack(env, &len, &err);
	assert_non_null(buf);
	zmq_msg_send(id, f->sock, ZMQ_SNDMORE);
	if (f->delimiter)
		zmq_send(f->sock, "", 0, ZMQ_SNDMORE);
	zmq_send(f->sock, buf, len, 0);
	free(buf);
}

static void
fake_join(struct fake_pan *f, zmq_msg_t *id, const Iselab__Envelope *in)
{
	const Iselab__JoinRequest *jr = in->join_request;
	Iselab__Envelope env;
	Iselab__JoinResponse resp = ISELAB__JOIN_RESPONSE__INIT;
	Iselab__DeploymentConfig cfg = ISELAB__DEPLOYMENT_CONFIG__INIT;
	Iselab__AdminNode admin = ISELAB__ADMIN_NODE__INIT, *admins[1];
	ProtobufCBinaryData chain[2];
	struct cert_request req;
	struct error err;
	X509_REQ *csr;
	X509 *x = NULL;
	uint8_t *der[3] = {NULL, NULL, NULL};
	int len[3], n = 0;
	bool psn = jr->role == ISELAB__ROLE__ROLE_PSN;

	csr = csr_parse(jr->ca_csr.data, jr->ca_csr.len, &err);
	assert_non_null(csr);
	cert_request_init(&req, psn ? CERT_PROFILE_ENDPOINT_SUB_CA
	                            : CERT_PROFILE_NODE_CA);
	assert_int_equal(cert_request_from_csr(&req, csr, &err), 0);
	assert_int_equal(cert_issue(&req, psn ? pki.node_ca : pki.root,
	                            psn ? pki.node_key : pki.root_key, &x,
	                            &err),
	                 0);
	cert_request_free(&req);
	X509_REQ_free(csr);
	len[0] = i2d_X509(x, &der[0]);
	X509_free(x);
	if (psn) {
		len[1] = i2d_X509(pki.node_ca, &der[1]);
		chain[n].data = der[1];
		chain[n++].len = (size_t)len[1];
	}
	len[2] = i2d_X509(pki.root, &der[2]);
	chain[n].data = der[2];
	chain[n++].len = (size_t)len[2];

	msg_init(&env, in->request_id, "pan1");
	resp.ca_cert.data = der[0];
	resp.ca_cert.len = (size_t)len[0];
	resp.chain = chain;
	resp.n_chain = (size_t)n;
	cfg.deployment_id = "00112233445566778899aabbccddeeff";
	cfg.epoch = 3;
	cfg.ocsp_hierarchy = ISELAB__OCSP_HIERARCHY__OCSP_HIERARCHY_RFC6960;
	cfg.session_services = 1;
	admin.hostname = "pan1";
	admin.role = ISELAB__ROLE__ROLE_PAN;
	admin.messaging_endpoint = f->endpoint;
	admin.events_endpoint = "tcp://127.0.0.1:8672";
	admin.curve_public_key.data = f->pub;
	admin.curve_public_key.len = CURVE_KEY_LEN;
	admins[0] = &admin;
	cfg.admin_nodes = admins;
	cfg.n_admin_nodes = 1;
	resp.config = &cfg;
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_RESPONSE;
	env.join_response = &resp;
	fake_send(f, id, &env);
	OPENSSL_free(der[0]);
	OPENSSL_free(der[1]);
	OPENSSL_free(der[2]);
}

static void *
fake_main(void *arg)
{
	struct fake_pan *f = arg;
	Iselab__Envelope *in, env;
	Iselab__Error e = ISELAB__ERROR__INIT;
	Iselab__HeartbeatAck ack = ISELAB__HEARTBEAT_ACK__INIT;
	zmq_msg_t id, body;
	struct error err;

	while (!atomic_load(&f->stop)) {
		zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};

		if (zmq_poll(&it, 1, 20) <= 0)
			continue;
		zmq_msg_init(&id);
		zmq_msg_init(&body);
		zmq_msg_recv(&id, f->sock, 0);
		zmq_msg_recv(&body, f->sock, 0);
		in = msg_unpack(zmq_msg_data(&body), zmq_msg_size(&body), NULL,
		                &err);
		zmq_msg_close(&body);
		if (in == NULL) {
			zmq_msg_close(&id);
			continue;
		}
		atomic_fetch_add(&f->received, 1);
		msg_init(&env, in->request_id, "pan1");
		if (in->body_case == ISELAB__ENVELOPE__BODY_JOIN_REQUEST)
			snprintf(f->token_seen, sizeof(f->token_seen), "%s",
			         in->join_request->token_id);
		if (f->mode == FAKE_JOIN &&
		    in->body_case == ISELAB__ENVELOPE__BODY_JOIN_REQUEST)
			fake_join(f, &id, in);
		else if (f->mode == FAKE_REFUSE) {
			e.code = ISELAB__ERROR__CODE__ERROR_UNAUTHORIZED;
			e.message = "token already used";
			env.body_case = ISELAB__ENVELOPE__BODY_ERROR;
			env.error = &e;
			fake_send(f, &id, &env);
		} else if (in->body_case == ISELAB__ENVELOPE__BODY_HEARTBEAT) {
			atomic_fetch_add(&f->heartbeats, 1);
			if (f->mode == FAKE_ACK) {
				env.body_case =
				    ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK;
				env.heartbeat_ack = &ack;
				fake_send(f, &id, &env);
			}
		}
		zmq_msg_close(&id);
		msg_free(in);
	}
	return NULL;
}

/* Start a fake PAN holding key (or a fresh one if NULL). */
static void
fake_start(struct fake_pan *f, enum fake_mode mode, EVP_PKEY *key)
{
	char pub[CURVE_Z85_LEN], sec[CURVE_Z85_LEN];
	struct error err;
	size_t len = sizeof(f->endpoint);
	int one = 1, zero = 0;
	EVP_PKEY *own = NULL;

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	if (key == NULL)
		key = own = curve_generate(&err);
	assert_int_equal(curve_z85(key, pub, sec, &err), 0);
	len = CURVE_KEY_LEN;
	assert_int_equal(EVP_PKEY_get_raw_public_key(key, f->pub, &len), 1);
	f->ctx = zmq_ctx_new();
	f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
	zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_setsockopt(f->sock, ZMQ_CURVE_SERVER, &one, sizeof(one));
	zmq_setsockopt(f->sock, ZMQ_CURVE_SECRETKEY, sec, 40);
	assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
	len = sizeof(f->endpoint);
	zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &len);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	EVP_PKEY_free(own);
}

static void
fake_stop(struct fake_pan *f)
{
	atomic_store(&f->stop, 1);
	pthread_join(f->thread, NULL);
	zmq_close(f->sock);
	zmq_ctx_term(f->ctx);
}

/* A joining node: its keys and CSRs. */
struct joiner {
	EVP_PKEY *curve, *ca_key;
	uint8_t *csr;
	size_t csr_len;
	struct join_request req;
	struct join_ticket t;
};

static void
joiner_init(struct joiner *j, const char *host, enum node_role role,
            const struct fake_pan *f, const unsigned char *pan_key)
{
	char cn[CERT_CN_BUF];
	struct error err;
	X509_REQ *csr;

	memset(j, 0, sizeof(*j));
	j->curve = curve_generate(&err);
	j->ca_key = key_generate(KEY_EC_P256, &err);
	assert_int_equal(cert_profile_cn(role == NODE_ROLE_PSN
	                                     ? CERT_PROFILE_ENDPOINT_SUB_CA
	                                     : CERT_PROFILE_NODE_CA,
	                                 host, cn, sizeof(cn), &err),
	                 0);
	csr = csr_create(j->ca_key, cn, NULL, 0, &err);
	assert_non_null(csr);
	assert_int_equal(csr_to_der(csr, &j->csr, &j->csr_len), 0);
	X509_REQ_free(csr);
	snprintf(j->t.token_id, sizeof(j->t.token_id), TOKEN);
	snprintf(j->t.secret, sizeof(j->t.secret), SECRET);
	memcpy(j->t.pan_curve_public, pan_key != NULL ? pan_key : f->pub,
	       CURVE_KEY_LEN);
	snprintf(j->t.endpoint, sizeof(j->t.endpoint), "%s", f->endpoint);
	j->req.hostname = host;
	j->req.role = role;
	j->req.curve_key = j->curve;
	j->req.ca_csr = j->csr;
	j->req.ca_csr_len = j->csr_len;
	j->req.timeout_ms = 5000;
	j->req.reconnect_ivl_ms = 50;
}

static void
joiner_free(struct joiner *j)
{
	EVP_PKEY_free(j->curve);
	EVP_PKEY_free(j->ca_key);
	free(j->csr);
}

static void
test_exchange_san(void **state)
{
	struct fake_pan f;
	struct joiner j;
	struct join_material m;
	Iselab__Envelope *env;
	struct error err;

	(void)state;
	fake_start(&f, FAKE_JOIN, NULL);
	f.delimiter = 1; /* a ROUTER that adds a delimiter is fine too */
	joiner_init(&j, "san1", NODE_ROLE_SAN, &f, NULL);
	env = join_exchange(&j.t, &j.req, &err);
	if (env == NULL)
		fail_msg("join_exchange: %s", err.msg);
	assert_string_equal(f.token_seen, TOKEN);
	assert_int_equal(join_material_check(env->join_response, &j.t, "san1",
	                                     NODE_ROLE_SAN, j.ca_key, NULL, &m,
	                                     &err),
	                 0);
	assert_int_equal(sk_X509_num(m.chain), 1);
	assert_ptr_equal(m.root, sk_X509_value(m.chain, 0));
	assert_string_equal(m.deployment.id,
	                    "00112233445566778899aabbccddeeff");
	assert_int_equal(m.deployment.epoch, 3);
	assert_int_equal(m.deployment.nadmin, 1);
	assert_string_equal(m.deployment.admin[0].messaging, f.endpoint);

	/* The certificate must be for our key, our host, our role. */
	join_material_free(&m);
	assert_int_equal(join_material_check(env->join_response, &j.t, "san2",
	                                     NODE_ROLE_SAN, j.ca_key, NULL, &m,
	                                     &err),
	                 -1);
	assert_non_null(strstr(err.msg, "expected 'Certificate Services Node "
	                                "CA - san2'"));
	assert_int_equal(join_material_check(env->join_response, &j.t, "san1",
	                                     NODE_ROLE_SAN, pki.root_key, NULL,
	                                     &m, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "another key"));
	assert_int_equal(join_material_check(env->join_response, &j.t, "san1",
	                                     NODE_ROLE_PSN, j.ca_key, NULL, &m,
	                                     &err),
	                 -1);
	/* The deployment must name the PAN of the join string. */
	j.t.pan_curve_public[0] ^= 1;
	assert_int_equal(join_material_check(env->join_response, &j.t, "san1",
	                                     NODE_ROLE_SAN, j.ca_key, NULL, &m,
	                                     &err),
	                 -1);
	assert_non_null(strstr(err.msg, "another CURVE key"));
	msg_free(env);
	joiner_free(&j);
	fake_stop(&f);
}

/* A PSN's chain has the Node CA; a broken chain is refused. */
static void
test_exchange_psn_and_bad_chain(void **state)
{
	struct fake_pan f;
	struct joiner j;
	struct join_material m;
	Iselab__Envelope *env;
	ProtobufCBinaryData saved;
	struct error err;

	(void)state;
	fake_start(&f, FAKE_JOIN, NULL);
	joiner_init(&j, "psn1", NODE_ROLE_PSN, &f, NULL);
	env = join_exchange(&j.t, &j.req, &err);
	if (env == NULL)
		fail_msg("join_exchange: %s", err.msg);
	assert_int_equal(join_material_check(env->join_response, &j.t, "psn1",
	                                     NODE_ROLE_PSN, j.ca_key, NULL, &m,
	                                     &err),
	                 0);
	assert_int_equal(sk_X509_num(m.chain), 2);
	join_material_free(&m);

	/* Without the Node CA the path does not reach the root. */
	saved = env->join_response->chain[0];
	env->join_response->chain[0] = env->join_response->chain[1];
	assert_int_equal(join_material_check(env->join_response, &j.t, "psn1",
	                                     NODE_ROLE_PSN, j.ca_key, NULL, &m,
	                                     &err),
	                 -1);
	assert_non_null(strstr(err.msg, "does not verify"));
	/* A chain that ends with no root. */
	env->join_response->chain[0] = saved;
	env->join_response->n_chain = 1;
	assert_int_equal(join_material_check(env->join_response, &j.t, "psn1",
	                                     NODE_ROLE_PSN, j.ca_key, NULL, &m,
	                                     &err),
	                 -1);
	assert_non_null(strstr(err.msg, "self-signed root"));
	env->join_response->n_chain = 2;
	env->join_response->chain[0] = saved;
	msg_free(env);
	joiner_free(&j);
	fake_stop(&f);
}

static void
test_exchange_refused(void **state)
{
	struct fake_pan f;
	struct joiner j;
	struct error err;

	(void)state;
	fake_start(&f, FAKE_REFUSE, NULL);
	joiner_init(&j, "psn1", NODE_ROLE_PSN, &f, NULL);
	assert_null(join_exchange(&j.t, &j.req, &err));
	assert_non_null(strstr(err.msg, "refused the join: token already "
	                                "used"));
	joiner_free(&j);
	fake_stop(&f);
}

/* A server with another key never sees a byte of the token. */
static void
test_exchange_mitm(void **state)
{
	unsigned char real[CURVE_KEY_LEN];
	struct fake_pan f;
	struct joiner j;
	struct error err;
	EVP_PKEY *pan;
	size_t len = sizeof(real);
	int64_t t0;

	(void)state;
	pan = curve_generate(&err);
	assert_int_equal(EVP_PKEY_get_raw_public_key(pan, real, &len), 1);
	fake_start(&f, FAKE_JOIN, NULL); /* holds another key */
	joiner_init(&j, "psn1", NODE_ROLE_PSN, &f, real);
	t0 = time_mono_ms();
	assert_null(join_exchange(&j.t, &j.req, &err));
	assert_non_null(strstr(err.msg, "does not hold the PAN key of the "
	                                "join string (man in the middle?)"));
	/* At once, not after the timeout. */
	assert_true(time_mono_ms() - t0 < 3000);
	assert_int_equal(atomic_load(&f.received), 0);
	assert_string_equal(f.token_seen, "");
	joiner_free(&j);
	EVP_PKEY_free(pan);
	fake_stop(&f);
}

static void
test_exchange_unreachable(void **state)
{
	struct fake_pan f;
	struct joiner j;
	struct error err;
	int64_t t0, took;

	(void)state;
	/* Take a free port, then close the server: nobody listens there. */
	fake_start(&f, FAKE_JOIN, NULL);
	fake_stop(&f);
	joiner_init(&j, "psn1", NODE_ROLE_PSN, &f, NULL);
	j.req.timeout_ms = 1500;
	t0 = time_mono_ms();
	assert_null(join_exchange(&j.t, &j.req, &err));
	took = time_mono_ms() - t0;
	assert_true(took >= 1400 && took < 4000);
	assert_non_null(strstr(err.msg, "cannot reach the PAN at 127.0.0.1:"));
	assert_non_null(strstr(err.msg, "after 1500ms"));

	/* A PAN that answers nothing: "no answer", not "cannot reach". */
	fake_start(&f, FAKE_SILENT, NULL);
	joiner_free(&j);
	joiner_init(&j, "psn1", NODE_ROLE_PSN, &f, NULL);
	j.req.timeout_ms = 1000;
	assert_null(join_exchange(&j.t, &j.req, &err));
	assert_non_null(strstr(err.msg, "no answer from the PAN"));
	assert_int_equal(atomic_load(&f.received), 1);
	joiner_free(&j);
	fake_stop(&f);
}

/*
 * Deployment config and files.
 */

static void
rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void
test_deployment_round_trip(void **state)
{
	char dir[] = "/tmp/test_join.XXXXXX", path[128];
	struct join_deployment d, r;
	struct error err;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	memset(&d, 0, sizeof(d));
	snprintf(d.id, sizeof(d.id), "00112233445566778899aabbccddeeff");
	d.epoch = 7;
	d.hierarchy = NODE_OCSP_LEGACY;
	d.session_services = true;
	d.nadmin = 2;
	snprintf(d.admin[0].hostname, sizeof(d.admin[0].hostname), "pan1");
	d.admin[0].role = NODE_ROLE_PAN;
	snprintf(d.admin[0].messaging, sizeof(d.admin[0].messaging),
	         "tcp://127.0.0.11:8671");
	snprintf(d.admin[0].events, sizeof(d.admin[0].events),
	         "tcp://127.0.0.11:8672");
	memset(d.admin[0].curve_public, 0xab, CURVE_KEY_LEN);
	snprintf(d.admin[1].hostname, sizeof(d.admin[1].hostname), "san1");
	d.admin[1].role = NODE_ROLE_SAN;
	snprintf(d.admin[1].messaging, sizeof(d.admin[1].messaging),
	         "tcp://[::1]:8671");
	memset(d.admin[1].curve_public, 0x01, CURVE_KEY_LEN);
	assert_int_equal(join_deployment_write(dir, &d, &err), 0);
	if (join_deployment_read(dir, &r, &err) == -1)
		fail_msg("read: %s", err.msg);
	assert_memory_equal(&d, &r, sizeof(d));
	assert_ptr_equal(join_deployment_pan(&r), &r.admin[0]);

	/* A hand edit that breaks a key is refused with the key's name. */
	snprintf(path, sizeof(path), "%s/%s", dir, JOIN_DEPLOYMENT_FILE);
	fp = fopen(path, "a");
	assert_non_null(fp);
	fprintf(fp, "bogus = 1\n");
	fclose(fp);
	assert_int_equal(join_deployment_read(dir, &r, &err), -1);
	d.nadmin = 1;
	snprintf(d.admin[0].messaging, sizeof(d.admin[0].messaging),
	         "tcp://pan1");
	assert_int_equal(join_deployment_write(dir, &d, &err), 0);
	assert_int_equal(join_deployment_read(dir, &r, &err), -1);
	assert_non_null(strstr(err.msg, "admin1.messaging"));
	unlink(path);
	assert_int_equal(join_deployment_read(dir, &r, &err), -1);
	rm_rf(dir);
}

static void
test_files_rollback(void **state)
{
	char dir[] = "/tmp/test_join.XXXXXX", node[64], path[128];
	struct join_files f;
	struct error err;
	EVP_PKEY *key;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(node, sizeof(node), "%s/node", dir);
	key = key_generate(KEY_EC_P256, &err);
	join_files_init(&f);
	assert_int_equal(join_files_mkdir(&f, node, NULL, 0700, &err), 0);
	assert_int_equal(join_files_mkdir(&f, node, "ca", 0700, &err), 0);
	assert_int_equal(join_files_save_key(&f, node, "ca/x.key", key,
	                                     "passphrase", 10, &err),
	                 0);
	assert_int_equal(
	    join_files_save_cert(&f, node, "ca/root.crt", pki.root, &err), 0);
	snprintf(path, sizeof(path), "%s/ca/x.key", node);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	join_files_rollback(&f);
	assert_int_equal(stat(node, &st), -1);

	/* A directory that was there stays; only our files go. */
	assert_int_equal(mkdir(node, 0700), 0);
	join_files_init(&f);
	assert_int_equal(join_files_mkdir(&f, node, NULL, 0700, &err), 0);
	assert_int_equal(
	    join_files_save_cert(&f, node, "root.crt", pki.root, &err), 0);
	join_files_rollback(&f);
	assert_int_equal(stat(node, &st), 0);
	snprintf(path, sizeof(path), "%s/root.crt", node);
	assert_int_equal(stat(path, &st), -1);
	EVP_PKEY_free(key);
	rm_rf(dir);
}

/*
 * The heartbeat link.
 */

/* Run the link for ms, as the daemon loop does. */
static void
link_run(struct join_link *l, int64_t ms)
{
	int64_t end = time_mono_ms() + ms, wait;

	while (time_mono_ms() < end) {
		zmq_pollitem_t it = {join_link_socket(l), 0, ZMQ_POLLIN, 0};

		wait = join_link_tick(l, time_mono_ms());
		if (wait > end - time_mono_ms())
			wait = end - time_mono_ms();
		if (wait < 0)
			wait = 0;
		if (zmq_poll(&it, 1, (long)wait) > 0)
			join_link_recv(l, time_mono_ms());
	}
}

static void
test_link(void **state)
{
	struct join_admin pan;
	struct fake_pan f;
	struct join_link *l;
	struct error err;
	EVP_PKEY *pan_key, *key;
	void *zctx;

	(void)state;
	pan_key = curve_generate(&err);
	key = curve_generate(&err);
	fake_start(&f, FAKE_ACK, pan_key);
	memset(&pan, 0, sizeof(pan));
	snprintf(pan.hostname, sizeof(pan.hostname), "pan1");
	snprintf(pan.messaging, sizeof(pan.messaging), "%s", f.endpoint);
	memcpy(pan.curve_public, f.pub, CURVE_KEY_LEN);
	zctx = zmq_ctx_new();
	l = join_link_new(zctx, "psn1", &pan, key, 100, 400, &err);
	assert_non_null(l);
	assert_int_equal(join_link_state(l), JOIN_LINK_CONNECTING);
	link_run(l, 500);
	assert_int_equal(join_link_state(l), JOIN_LINK_CONNECTED);
	assert_true(join_link_last_ack(l) > 0);
	assert_true(atomic_load(&f.heartbeats) >= 3);

	/* The PAN goes away: disconnected after the timeout. */
	fake_stop(&f);
	link_run(l, 700);
	assert_int_equal(join_link_state(l), JOIN_LINK_DISCONNECTED);

	/* It comes back on the same port: the link returns by itself. */
	{
		char ep[128];

		snprintf(ep, sizeof(ep), "%s", pan.messaging);
		fake_start(&f, FAKE_ACK, pan_key);
		zmq_unbind(f.sock, f.endpoint);
		/* Rebind on the old port (the thread polls; races are ok). */
		atomic_store(&f.stop, 1);
		pthread_join(f.thread, NULL);
		assert_int_equal(zmq_bind(f.sock, ep), 0);
		atomic_store(&f.stop, 0);
		snprintf(f.endpoint, sizeof(f.endpoint), "%s", ep);
		assert_int_equal(pthread_create(&f.thread, NULL, fake_main, &f),
		                 0);
	}
	link_run(l, 6000);
	assert_int_equal(join_link_state(l), JOIN_LINK_CONNECTED);
	fake_stop(&f);
	join_link_free(l);
	zmq_ctx_term(zctx);
	EVP_PKEY_free(pan_key);
	EVP_PKEY_free(key);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ticket_good),
	    cmocka_unit_test(test_ticket_bad),
	    cmocka_unit_test(test_duration),
	    cmocka_unit_test(test_deployment_round_trip),
	    cmocka_unit_test(test_files_rollback),
	    cmocka_unit_test(test_exchange_san),
	    cmocka_unit_test(test_exchange_psn_and_bad_chain),
	    cmocka_unit_test(test_exchange_refused),
	    cmocka_unit_test(test_exchange_mitm),
	    cmocka_unit_test(test_exchange_unreachable),
	    cmocka_unit_test(test_link),
	};

	log_open("test", "join", NULL, true, NULL);
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
