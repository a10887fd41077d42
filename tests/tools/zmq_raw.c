/*
 * zmq_raw: a test client that completes a real CURVE handshake with a PAN's
 * messaging port (8671) and then sends whatever it is told, bad input
 * included.
 *
 * Raw TCP garbage never gets past libzmq's ZMTP and CURVE checks; to reach
 * the PAN's own parser (msg_unpack(), the framing and key attribution
 * checks of pan/messaging.c) a client must be authenticated first.  Python
 * has no ZeroMQ binding here, so the integration tests drive this program:
 * it connects a DEALER with a fresh CURVE key (or a node's own key, to act
 * as that node), waits for the handshake, sends --count copies of one kind
 * of message, and can then send a legitimate probe and wait for its answer,
 * to show the PAN still serves.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <zmq.h>

#include "curve.h"
#include "keys.h"
#include "msg.h"
#include "node.h"
#include "util.h"

#define ZRAW_USAGE                                                             \
	"usage: zmq_raw --connect ENDPOINT --server-key KEY [options]\n"       \
	"\n"                                                                   \
	"Connect a CURVE DEALER to a PAN's messaging port, send --count\n"     \
	"messages of one kind, then optionally probe that the PAN answers.\n"  \
	"\n"                                                                   \
	"  --connect ENDPOINT     tcp://HOST:PORT (or HOST:PORT)\n"            \
	"  --server-key KEY       the PAN's CURVE public key: 64 hex digits\n" \
	"                         (join string), 40 Z85 characters, or a\n"    \
	"                         file holding either (D/curve.pub)\n"         \
	"  --client-key FILE      a node's encrypted curve.key (default: a\n"  \
	"                         fresh key pair made for this run)\n"         \
	"  --passphrase-file F    its passphrase (else $ISELAB_PASSPHRASE)\n"  \
	"  --sender NAME          the envelope's sender (default zraw)\n"      \
	"\n"                                                                   \
	"What to send (at most one; none: only the probe):\n"                  \
	"  --hex HEX              this payload (\"\" sends an empty frame)\n"  \
	"  --file F               the bytes of F\n"                            \
	"  --heartbeat            a valid Heartbeat envelope from --sender\n"  \
	"  --wrong-version        a Heartbeat envelope with version 99\n"      \
	"  --no-body              a version-1 envelope without a body\n"       \
	"  --unhandled            a valid HeartbeatAck (the PAN takes none)\n" \
	"  --empty                an empty frame\n"                            \
	"  --oversized N          N random bytes in one frame\n"               \
	"  --garbage N            N random bytes that never parse as an\n"     \
	"                         envelope (the first byte is a field tag\n"   \
	"                         with wire type 7, which protobuf forbids)\n" \
	"  --bad-join             a JoinRequest with an unknown token (the\n"  \
	"                         PAN refuses it and answers an Error)\n"      \
	"  --frames K             K extra 8-byte frames after each payload\n"  \
	"                         (alone: after a valid Heartbeat)\n"          \
	"  --count M              send M messages (default 1)\n"               \
	"\n"                                                                   \
	"  --expect-reply         then send a probe and wait for its answer\n" \
	"  --probe heartbeat|join the probe: a Heartbeat from --sender\n"      \
	"                         (answered only for a registered node's\n"    \
	"                         own key), or a JoinRequest with an "         \
	"unknown\n"                                                            \
	"                         token (answered with an Error, any key)\n"   \
	"  --timeout MS           for the handshake, sends and the reply\n"    \
	"                         (default 10000)\n"                           \
	"\n"                                                                   \
	"Output, on stdout, one line each:\n"                                  \
	"  handshake ok: client key Z85\n"                                     \
	"  sent M x KIND (N bytes, F frames each)\n"                           \
	"  reply: BODY from 'SENDER' request_id R [code C: TEXT]\n"            \
	"\n"                                                                   \
	"Exit status: 0 done (and the probe answered); 1 usage; 2 setup\n"     \
	"(keys, files, ZeroMQ); 3 CURVE handshake failed or timed out, or a\n" \
	"send failed; 4 no answer to the probe within --timeout.\n"

/* Exit statuses, as the usage text documents them. */
#define ZRAW_EXIT_OK       0
#define ZRAW_EXIT_USAGE    1
#define ZRAW_EXIT_SETUP    2
#define ZRAW_EXIT_LINK     3
#define ZRAW_EXIT_NO_REPLY 4

/* Default wait for the handshake, each send and the probe's answer. */
#define ZRAW_TIMEOUT_MS 10000
/* Largest --count, --oversized, --garbage and --frames we take. */
#define ZRAW_COUNT_MAX  1000000
#define ZRAW_SIZE_MAX   (64 * 1024 * 1024)
#define ZRAW_FRAMES_MAX 1000
/* Size of each extra frame of --frames. */
#define ZRAW_EXTRA_FRAME 8
/* Largest --file or --server-key file. */
#define ZRAW_FILE_MAX ZRAW_SIZE_MAX
/* The version --wrong-version claims. */
#define ZRAW_BAD_VERSION 99
/* Field 1, wire type 7: no protobuf parser accepts this tag. */
#define ZRAW_BAD_TAG 0x0f
/* Where the socket monitor publishes, and what. */
#define ZRAW_MONITOR "inproc://zmq-raw-monitor"
#define ZRAW_MONITOR_EVENTS                                                    \
	(ZMQ_EVENT_HANDSHAKE_SUCCEEDED |                                       \
	 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |                                \
	 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                                 \
	 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

enum zraw_kind {
	ZRAW_NONE,
	ZRAW_HEX,
	ZRAW_FILE,
	ZRAW_HEARTBEAT,
	ZRAW_WRONG_VERSION,
	ZRAW_NO_BODY,
	ZRAW_UNHANDLED,
	ZRAW_EMPTY,
	ZRAW_OVERSIZED,
	ZRAW_GARBAGE,
	ZRAW_BAD_JOIN,
};

static const char *const kind_names[] = {
    [ZRAW_NONE] = "none",
    [ZRAW_HEX] = "hex",
    [ZRAW_FILE] = "file",
    [ZRAW_HEARTBEAT] = "heartbeat",
    [ZRAW_WRONG_VERSION] = "wrong-version",
    [ZRAW_NO_BODY] = "no-body",
    [ZRAW_UNHANDLED] = "unhandled",
    [ZRAW_EMPTY] = "empty",
    [ZRAW_OVERSIZED] = "oversized",
    [ZRAW_GARBAGE] = "garbage",
    [ZRAW_BAD_JOIN] = "bad-join",
};

struct zraw_opts {
	char endpoint[300];          /* tcp://host:port */
	const char *server_key;      /* as given */
	const char *client_key;      /* node's curve.key, or NULL */
	const char *passphrase_file; /* for client_key */
	const char *sender;          /* envelope sender */
	enum zraw_kind kind;         /* what to send */
	const char *arg;             /* --hex text, --file path */
	size_t size;                 /* --oversized, --garbage */
	long frames;                 /* extra frames per message */
	long count;                  /* messages */
	bool expect_reply;           /* probe afterwards */
	bool probe_join;             /* probe with a JoinRequest */
	int timeout_ms;
};

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("zmq_raw: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
parse_long(const char *s, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
		fail("'%s' is not a number from 0 to %ld", s, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int
set_kind(struct zraw_opts *o, enum zraw_kind k)
{
	if (o->kind != ZRAW_NONE) {
		fail("--%s and --%s: one kind of message at a time",
		     kind_names[o->kind], kind_names[k]);
		return -1;
	}
	o->kind = k;
	return 0;
}

/* 0, 1 after --help, -1 on a usage error (printed). */
static int
parse_opts(int argc, char **argv, struct zraw_opts *o)
{
	static const struct option longopts[] = {
	    {"connect", required_argument, NULL, 'c'},
	    {"server-key", required_argument, NULL, 'S'},
	    {"client-key", required_argument, NULL, 'k'},
	    {"passphrase-file", required_argument, NULL, 'P'},
	    {"sender", required_argument, NULL, 's'},
	    {"hex", required_argument, NULL, 'x'},
	    {"file", required_argument, NULL, 'f'},
	    {"heartbeat", no_argument, NULL, 'h'},
	    {"wrong-version", no_argument, NULL, 'V'},
	    {"no-body", no_argument, NULL, 'B'},
	    {"unhandled", no_argument, NULL, 'u'},
	    {"empty", no_argument, NULL, 'e'},
	    {"oversized", required_argument, NULL, 'o'},
	    {"garbage", required_argument, NULL, 'g'},
	    {"bad-join", no_argument, NULL, 'j'},
	    {"frames", required_argument, NULL, 'F'},
	    {"count", required_argument, NULL, 'n'},
	    {"expect-reply", no_argument, NULL, 'r'},
	    {"probe", required_argument, NULL, 'p'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	long v = 0;
	int c, rc;

	memset(o, 0, sizeof(*o));
	o->sender = "zraw";
	o->count = 1;
	o->timeout_ms = ZRAW_TIMEOUT_MS;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'c':
			snprintf(o->endpoint, sizeof(o->endpoint), "%s%s",
			         strstr(optarg, "://") ? "" : "tcp://", optarg);
			break;
		case 'S':
			o->server_key = optarg;
			break;
		case 'k':
			o->client_key = optarg;
			break;
		case 'P':
			o->passphrase_file = optarg;
			break;
		case 's':
			o->sender = optarg;
			break;
		case 'x':
			rc = set_kind(o, ZRAW_HEX);
			o->arg = optarg;
			break;
		case 'f':
			rc = set_kind(o, ZRAW_FILE);
			o->arg = optarg;
			break;
		case 'h':
			rc = set_kind(o, ZRAW_HEARTBEAT);
			break;
		case 'V':
			rc = set_kind(o, ZRAW_WRONG_VERSION);
			break;
		case 'B':
			rc = set_kind(o, ZRAW_NO_BODY);
			break;
		case 'u':
			rc = set_kind(o, ZRAW_UNHANDLED);
			break;
		case 'e':
			rc = set_kind(o, ZRAW_EMPTY);
			break;
		case 'o':
		case 'g':
			if ((rc = set_kind(o, c == 'o' ? ZRAW_OVERSIZED
			                               : ZRAW_GARBAGE)) == 0 &&
			    (rc = parse_long(optarg, ZRAW_SIZE_MAX, &v)) == 0)
				o->size = (size_t)v;
			if (rc == 0 && c == 'g' && v == 0) {
				fail("--garbage needs at least one byte");
				rc = -1;
			}
			break;
		case 'j':
			rc = set_kind(o, ZRAW_BAD_JOIN);
			break;
		case 'F':
			rc = parse_long(optarg, ZRAW_FRAMES_MAX, &o->frames);
			break;
		case 'n':
			rc = parse_long(optarg, ZRAW_COUNT_MAX, &o->count);
			break;
		case 'r':
			o->expect_reply = true;
			break;
		case 'p':
			if (strcmp(optarg, "join") == 0)
				o->probe_join = true;
			else if (strcmp(optarg, "heartbeat") != 0) {
				fail("--probe heartbeat or --probe join");
				rc = -1;
			}
			break;
		case 't':
			if ((rc = parse_long(optarg, 3600000, &v)) == 0)
				o->timeout_ms = (int)v;
			break;
		case 'H':
			fputs(ZRAW_USAGE, stdout);
			return 1;
		default:
			rc = -1;
			break;
		}
		if (rc == -1)
			goto usage;
	}
	if (optind != argc || o->endpoint[0] == '\0' || o->server_key == NULL)
		goto usage;
	if (o->frames > 0 && o->kind == ZRAW_NONE)
		o->kind = ZRAW_HEARTBEAT;
	if (o->kind == ZRAW_NONE && !o->expect_reply) {
		fail("nothing to send: give a message kind or --expect-reply");
		goto usage;
	}
	return 0;
usage:
	fputs(ZRAW_USAGE, stderr);
	return -1;
}

/* 64 hex digits, 40 Z85 characters, or a file holding either. */
static int
server_key_decode(const char *s, unsigned char key[CURVE_KEY_LEN], bool file)
{
	char text[128];
	struct error err = {{0}};
	uint8_t *buf;
	size_t len, n;
	int rc;

	n = strcspn(s, " \t\r\n");
	if (n == 2 * CURVE_KEY_LEN && s[n + strspn(s + n, " \t\r\n")] == '\0') {
		memcpy(text, s, n);
		text[n] = '\0';
		if (hex_decode(text, key, CURVE_KEY_LEN) == CURVE_KEY_LEN)
			return 0;
	}
	if (n == CURVE_Z85_LEN - 1 && s[n + strspn(s + n, " \t\r\n")] == '\0') {
		memcpy(text, s, n);
		text[n] = '\0';
		if (zmq_z85_decode(key, text) != NULL)
			return 0;
	}
	if (file) {
		fail("server key in a file: want 64 hex digits or 40 Z85 "
		     "characters");
		return -1;
	}
	if ((buf = file_read(s, ZRAW_FILE_MAX, &len, &err)) == NULL) {
		fail("--server-key '%s' is no key (64 hex digits or 40 Z85 "
		     "characters) and no readable file: %s",
		     s, err.msg);
		return -1;
	}
	rc = server_key_decode((const char *)buf, key, true);
	free(buf);
	return rc;
}

/* Our Z85 key pair: the node's, decrypted, or a fresh one. */
static int
client_keys(const struct zraw_opts *o, char pub[CURVE_Z85_LEN],
            char sec[CURVE_Z85_LEN])
{
	struct error err = {{0}};
	EVP_PKEY *key = NULL;
	char *pass = NULL;
	size_t passlen = 0;
	int rc = -1;

	if (o->client_key == NULL) {
		if (zmq_curve_keypair(pub, sec) == -1) {
			fail("zmq_curve_keypair: %s", zmq_strerror(errno));
			return -1;
		}
		return 0;
	}
	if ((pass = node_passphrase(o->passphrase_file, &passlen, &err)) ==
	        NULL ||
	    (key = key_load(o->client_key, pass, passlen, &err)) == NULL ||
	    curve_z85(key, pub, sec, &err) == -1) {
		fail("client key %s: %s", o->client_key, err.msg);
		goto out;
	}
	rc = 0;
out:
	if (pass != NULL)
		passphrase_free(pass, passlen);
	EVP_PKEY_free(key);
	return rc;
}

/* A packed envelope from sender with the given body; NULL on failure. */
static uint8_t *
envelope(const struct zraw_opts *o, enum zraw_kind kind, uint64_t id,
         size_t *len)
{
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	Iselab__HeartbeatAck ack = ISELAB__HEARTBEAT_ACK__INIT;
	struct error err = {{0}};
	uint8_t *buf;

	msg_init(&env, id, o->sender);
	switch (kind) {
	case ZRAW_WRONG_VERSION:
		env.version = ZRAW_BAD_VERSION;
		/* FALLTHROUGH */
	case ZRAW_HEARTBEAT:
		hb.sent_ms = time_now_ms();
		env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
		env.heartbeat = &hb;
		break;
	case ZRAW_UNHANDLED:
		ack.sent_ms = time_now_ms();
		env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK;
		env.heartbeat_ack = &ack;
		break;
	default: /* ZRAW_NO_BODY */
		break;
	}
	if ((buf = msg_pack(&env, len, &err)) == NULL)
		fail("%s", err.msg);
	return buf;
}

/* A JoinRequest with a well-formed token no PAN issued. */
static uint8_t *
join_probe(const struct zraw_opts *o, uint64_t id, size_t *len)
{
	Iselab__Envelope env;
	Iselab__JoinRequest jr = ISELAB__JOIN_REQUEST__INIT;
	struct error err = {{0}};
	uint8_t tid[8], secret[32], curve[CURVE_KEY_LEN];
	char tid_hex[2 * sizeof(tid) + 1];
	uint8_t *buf;

	if (RAND_bytes(tid, sizeof(tid)) != 1 ||
	    RAND_bytes(secret, sizeof(secret)) != 1 ||
	    RAND_bytes(curve, sizeof(curve)) != 1) {
		fail("RAND_bytes failed");
		return NULL;
	}
	hex_encode(tid, sizeof(tid), tid_hex);
	msg_init(&env, id, o->sender);
	jr.token_id = tid_hex;
	jr.token_secret.data = secret;
	jr.token_secret.len = sizeof(secret);
	jr.hostname = (char *)o->sender;
	jr.role = ISELAB__ROLE__ROLE_PSN;
	jr.curve_public_key.data = curve;
	jr.curve_public_key.len = sizeof(curve);
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_REQUEST;
	env.join_request = &jr;
	if ((buf = msg_pack(&env, len, &err)) == NULL)
		fail("%s", err.msg);
	return buf;
}

/* The payload of one message of o->kind (malloc'd; may be empty). */
static uint8_t *
payload(const struct zraw_opts *o, uint64_t id, size_t *len)
{
	struct error err = {{0}};
	uint8_t *buf;
	ssize_t n;

	switch (o->kind) {
	case ZRAW_HEX:
		*len = strlen(o->arg) / 2;
		if ((buf = malloc(*len + 1)) == NULL) {
			fail("out of memory");
			return NULL;
		}
		n = hex_decode(o->arg, buf, *len + 1);
		if (strlen(o->arg) % 2 != 0 || n < 0 || (size_t)n != *len) {
			fail("--hex '%s' is not an even number of hex digits",
			     o->arg);
			free(buf);
			return NULL;
		}
		return buf;
	case ZRAW_FILE:
		if ((buf = file_read(o->arg, ZRAW_FILE_MAX, len, &err)) == NULL)
			fail("%s", err.msg);
		return buf;
	case ZRAW_EMPTY:
		*len = 0;
		return calloc(1, 1);
	case ZRAW_OVERSIZED:
	case ZRAW_GARBAGE:
		*len = o->size;
		if ((buf = malloc(o->size + 1)) == NULL) {
			fail("out of memory");
			return NULL;
		}
		if (o->size > 0 && RAND_bytes(buf, (int)o->size) != 1) {
			fail("RAND_bytes failed");
			free(buf);
			return NULL;
		}
		if (o->kind == ZRAW_GARBAGE)
			buf[0] = ZRAW_BAD_TAG;
		return buf;
	case ZRAW_BAD_JOIN:
		return join_probe(o, id, len);
	default:
		return envelope(o, o->kind, id, len);
	}
}

/* Wait for the monitor to report the handshake's outcome. */
static int
wait_handshake(void *mon, int timeout_ms)
{
	int64_t deadline = time_mono_ms() + timeout_ms, left;
	zmq_pollitem_t pi = {.socket = mon, .events = ZMQ_POLLIN};
	uint8_t ev[6];
	char addr[300];
	uint16_t event;
	uint32_t value;
	int r;

	while ((left = deadline - time_mono_ms()) > 0) {
		if (zmq_poll(&pi, 1, (long)left) <= 0)
			continue;
		if (zmq_recv(mon, ev, sizeof(ev), 0) != (int)sizeof(ev))
			continue;
		r = zmq_recv(mon, addr, sizeof(addr) - 1, 0);
		addr[r < 0 ? 0
		           : (r >= (int)sizeof(addr) ? (int)sizeof(addr) - 1
		                                     : r)] = '\0';
		memcpy(&event, ev, sizeof(event));
		memcpy(&value, ev + 2, sizeof(value));
		switch (event) {
		case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
			return 0;
		case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
		case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
			fail("CURVE handshake with %s failed (event 0x%x, "
			     "value %" PRIu32 ")",
			     addr, event, value);
			return -1;
		default:
			break;
		}
	}
	fail("no CURVE handshake within %d ms", timeout_ms);
	return -1;
}

/* One message: the payload, then extra frames. */
static int
send_one(void *s, const uint8_t *buf, size_t len, long frames)
{
	uint8_t extra[ZRAW_EXTRA_FRAME];
	long i;

	if (zmq_send(s, buf, len, frames > 0 ? ZMQ_SNDMORE : 0) == -1)
		goto fail;
	for (i = 0; i < frames; i++) {
		memset(extra, 'A' + (int)(i % 26), sizeof(extra));
		if (zmq_send(s, extra, sizeof(extra),
		             i + 1 < frames ? ZMQ_SNDMORE : 0) == -1)
			goto fail;
	}
	return 0;
fail:
	fail("zmq_send: %s", zmq_strerror(errno));
	return -1;
}

static int
send_all(void *s, const struct zraw_opts *o, uint64_t *next_id)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	long i;

	for (i = 0; i < o->count; i++) {
		/* Envelopes get a fresh request id each; the rest is fixed. */
		if (buf == NULL || o->kind == ZRAW_HEARTBEAT ||
		    o->kind == ZRAW_WRONG_VERSION || o->kind == ZRAW_NO_BODY ||
		    o->kind == ZRAW_UNHANDLED || o->kind == ZRAW_BAD_JOIN) {
			free(buf);
			if ((buf = payload(o, (*next_id)++, &len)) == NULL)
				return ZRAW_EXIT_SETUP;
		}
		if (send_one(s, buf, len, o->frames) == -1) {
			free(buf);
			return ZRAW_EXIT_LINK;
		}
	}
	printf("sent %ld x %s (%zu bytes, %ld frames each)\n", o->count,
	       kind_names[o->kind], len, o->frames + 1);
	free(buf);
	return ZRAW_EXIT_OK;
}

/* Send the probe and wait for the answer carrying its request id. */
static int
probe(void *s, const struct zraw_opts *o, uint64_t id)
{
	int64_t deadline = time_mono_ms() + o->timeout_ms, left;
	zmq_pollitem_t pi = {.socket = s, .events = ZMQ_POLLIN};
	Iselab__Envelope *env;
	struct error err = {{0}};
	uint8_t *buf;
	size_t len;
	zmq_msg_t m;
	int rc;

	buf = o->probe_join ? join_probe(o, id, &len)
	                    : envelope(o, ZRAW_HEARTBEAT, id, &len);
	if (buf == NULL)
		return ZRAW_EXIT_SETUP;
	rc = send_one(s, buf, len, 0);
	free(buf);
	if (rc == -1)
		return ZRAW_EXIT_LINK;
	while ((left = deadline - time_mono_ms()) > 0) {
		if (zmq_poll(&pi, 1, (long)left) <= 0)
			continue;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s, 0) == -1) {
			zmq_msg_close(&m);
			continue;
		}
		env =
		    msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), NULL, &err);
		zmq_msg_close(&m);
		if (env == NULL) {
			printf("unparsable reply: %s\n", err.msg);
			continue;
		}
		if (env->request_id != id) {
			printf("other: %s from '%s' request_id %" PRIu64 "\n",
			       msg_body_name(env->body_case), env->sender,
			       env->request_id);
			msg_free(env);
			continue;
		}
		printf("reply: %s from '%s' request_id %" PRIu64,
		       msg_body_name(env->body_case), env->sender,
		       env->request_id);
		if (env->body_case == ISELAB__ENVELOPE__BODY_ERROR)
			printf(" code %d: %s", (int)env->error->code,
			       env->error->message);
		printf("\n");
		msg_free(env);
		return ZRAW_EXIT_OK;
	}
	fail("no answer to the %s probe within %d ms",
	     o->probe_join ? "join" : "heartbeat", o->timeout_ms);
	return ZRAW_EXIT_NO_REPLY;
}

static int
sockopt(void *s, int opt, int v)
{
	return zmq_setsockopt(s, opt, &v, sizeof(v));
}

int
main(int argc, char **argv)
{
	struct zraw_opts o;
	unsigned char server[CURVE_KEY_LEN];
	char pub[CURVE_Z85_LEN], sec[CURVE_Z85_LEN];
	void *ctx = NULL, *s = NULL, *mon = NULL;
	uint64_t next_id = 1;
	int rc;

	if ((rc = parse_opts(argc, argv, &o)) != 0)
		return rc == 1 ? ZRAW_EXIT_OK : ZRAW_EXIT_USAGE;
	if (server_key_decode(o.server_key, server, false) == -1 ||
	    client_keys(&o, pub, sec) == -1)
		return ZRAW_EXIT_SETUP;

	rc = ZRAW_EXIT_SETUP;
	if ((ctx = zmq_ctx_new()) == NULL ||
	    (s = zmq_socket(ctx, ZMQ_DEALER)) == NULL) {
		fail("zmq: %s", zmq_strerror(errno));
		goto out;
	}
	if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, CURVE_KEY_LEN) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, CURVE_Z85_LEN - 1) ==
	        -1 ||
	    /* Messages go only to a connection whose handshake is done. */
	    sockopt(s, ZMQ_IMMEDIATE, 1) == -1 ||
	    sockopt(s, ZMQ_SNDTIMEO, o.timeout_ms) == -1 ||
	    /* At exit, give queued messages that long to leave. */
	    sockopt(s, ZMQ_LINGER, o.timeout_ms) == -1 ||
	    sockopt(s, ZMQ_SNDHWM, 0) == -1 ||
	    (strchr(o.endpoint, '[') != NULL &&
	     sockopt(s, ZMQ_IPV6, 1) == -1) ||
	    /* Only the handshake's outcome: libzmq sends monitor events
	     * blocking, so none may be pending once we stop reading. */
	    zmq_socket_monitor(s, ZRAW_MONITOR, ZRAW_MONITOR_EVENTS) == -1 ||
	    (mon = zmq_socket(ctx, ZMQ_PAIR)) == NULL ||
	    zmq_connect(mon, ZRAW_MONITOR) == -1) {
		fail("zmq_setsockopt: %s", zmq_strerror(errno));
		goto out;
	}
	secure_zero(sec, sizeof(sec));
	if (zmq_connect(s, o.endpoint) == -1) {
		fail("cannot connect to %s: %s", o.endpoint,
		     zmq_strerror(errno));
		goto out;
	}
	if (wait_handshake(mon, o.timeout_ms) == -1) {
		rc = ZRAW_EXIT_LINK;
		goto out;
	}
	zmq_socket_monitor(s, NULL, 0);
	zmq_close(mon);
	mon = NULL;
	printf("handshake ok: client key %s\n", pub);
	fflush(stdout);
	if (o.kind != ZRAW_NONE &&
	    (rc = send_all(s, &o, &next_id)) != ZRAW_EXIT_OK)
		goto out;
	fflush(stdout);
	rc = o.expect_reply ? probe(s, &o, next_id++) : ZRAW_EXIT_OK;
out:
	secure_zero(sec, sizeof(sec));
	if (mon != NULL) {
		/* Stop the monitor while its reader is still there. */
		zmq_socket_monitor(s, NULL, 0);
		zmq_close(mon);
	}
	if (s != NULL)
		zmq_close(s);
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	fflush(stdout);
	return rc;
}
