/*
 * messaging: the PAN's side of node-to-node messaging (DESIGN.md section 3,
 * docs/registration.md): the ZAP handler, the ROUTER on messaging.listen
 * (8671) and the PUB on events.listen (8672), both CURVE servers.
 *
 * This is the part of the PAN that meets the network, so it trusts nothing
 * it reads: a message must be exactly [routing id][payload], the payload
 * must unpack (msg_unpack() refuses oversized, malformed, wrong-version and
 * bodiless envelopes), and every envelope is attributed to the CURVE key
 * that sent it, as libzmq reports it in the "User-Id" property that our ZAP
 * handler set.  Anything else is counted, logged at most once a second per
 * reason, and dropped; the loop goes on serving everyone else.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "log.h"
#include "msg.h"
#include "pan.h"
#include "util.h"

/* The ZAP endpoint libzmq asks (RFC 27 section "Transport"). */
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* ZAP domain of our sockets; the handler serves only this one. */
#define ZAP_DOMAIN "iselab"
/*
 * The PUB's domain: only registered nodes subscribe (the log carries
 * user hashes), where the ROUTER must let unknown keys in to join.
 */
#define ZAP_DOMAIN_EVENTS "iselab-events"
/* Frames of a ZAP request: version .. mechanism, then credentials. */
#define ZAP_FRAMES_MAX 8
/* Longest ZAP frame we copy (request ids and credentials are short). */
#define ZAP_FRAME_MAX 256
/* Messages read from the ROUTER in one go before the others get a turn. */
#define ROUTER_BATCH 64
/* Largest frame libzmq hands us; bigger ones close the connection. */
#define MESSAGING_WIRE_MAX (2 * MSG_MAX_SIZE)
/* Least time between two log lines for the same drop reason. */
#define DROP_LOG_INTERVAL_MS 1000

static const char *const drop_names[PAN_DROP_COUNT] = {
    [PAN_DROP_FRAMES] = "bad framing",
    [PAN_DROP_EMPTY] = "empty payload",
    [PAN_DROP_NO_USER_ID] = "no CURVE identity",
    [PAN_DROP_UNKNOWN_KEY] = "unknown CURVE key",
    [PAN_DROP_FOREIGN] = "sender is not the key's node",
};

const char *
messaging_drop_name(enum pan_drop why)
{
	return (unsigned)why < PAN_DROP_COUNT ? drop_names[why] : "?";
}

bool
messaging_ratelimit(struct pan_ratelimit *rl, uint64_t *suppressed)
{
	int64_t now = time_mono_ms();

	if (rl->last_ms != 0 && now - rl->last_ms < DROP_LOG_INTERVAL_MS) {
		rl->suppressed++;
		return false;
	}
	rl->last_ms = now;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}

static void
ratelimited_log(struct pan_ratelimit *rl, const char *what, const char *fmt,
                va_list ap)
{
	char line[ERROR_MAX];
	uint64_t suppressed;

	if (!messaging_ratelimit(rl, &suppressed))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (suppressed > 0)
		log_warn(LOG_MESSAGING,
		         "dropped (%s): %s (%llu more since "
		         "the last line)",
		         what, line, (unsigned long long)suppressed);
	else
		log_warn(LOG_MESSAGING, "dropped (%s): %s", what, line);
}

void
messaging_drop(struct pan *p, enum pan_drop why, const char *fmt, ...)
{
	va_list ap;

	p->drops[why]++;
	va_start(ap, fmt);
	ratelimited_log(&p->drop_rl[why], drop_names[why], fmt, ap);
	va_end(ap);
}

/* A refusal msg_unpack() or msg_dispatch() already counted. */
static void messaging_msg_drop(struct pan *p, enum msg_drop why,
                               const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
messaging_msg_drop(struct pan *p, enum msg_drop why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ratelimited_log(&p->msg_rl[why], msg_drop_name(why), fmt, ap);
	va_end(ap);
}

/* "tcp://0.0.0.0:8671", "tcp://[::]:8671" from a parsed address. */
static void
endpoint_of(const struct config_address *a, char *buf, size_t len)
{
	if (a->family == AF_INET6)
		snprintf(buf, len, "tcp://[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "tcp://%s:%u", a->host, a->port);
}

static bool
address_is_any(const struct config_address *a)
{
	return strcmp(a->host, "0.0.0.0") == 0 || strcmp(a->host, "::") == 0 ||
	       strcmp(a->host, "*") == 0;
}

/*
 * The addresses nodes use: messaging.advertise ("host:port", "[v6]:port")
 * when set, else the listen address, or this PAN's host name when that is
 * a wildcard.  The events endpoint takes the same host.
 */
int
pan_advertise(const struct config *cfg, const char *hostname,
              char adv_host[PAN_ENDPOINT_MAX], char msg[PAN_ENDPOINT_MAX],
              char ev[PAN_ENDPOINT_MAX], struct error *err)
{
	const struct config_address *ml, *el;
	const char *adv;
	char host[PAN_ENDPOINT_MAX];
	unsigned long port;
	const char *colon;
	char *end;
	bool v6;

	ml = config_get_address(cfg, "messaging.listen");
	el = config_get_address(cfg, "events.listen");
	adv = config_get_string(cfg, "messaging.advertise");
	if (adv != NULL && *adv != '\0') {
		if ((colon = strrchr(adv, ':')) == NULL || colon == adv ||
		    (size_t)(colon - adv) >= sizeof(host)) {
			error_set(err,
			          "messaging.advertise '%s' is not "
			          "host:port",
			          adv);
			return -1;
		}
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno != 0 || *end != '\0' || port == 0 || port > 65535) {
			error_set(err, "messaging.advertise '%s': bad port",
			          adv);
			return -1;
		}
		memcpy(host, adv, (size_t)(colon - adv));
		host[colon - adv] = '\0';
		v6 = host[0] == '[';
		if (v6 && host[strlen(host) - 1] != ']') {
			error_set(err,
			          "messaging.advertise '%s': IPv6 needs "
			          "brackets",
			          adv);
			return -1;
		}
		if (!v6 && strchr(host, ':') != NULL) {
			error_set(err,
			          "messaging.advertise '%s': IPv6 needs "
			          "brackets ([::1]:8671)",
			          adv);
			return -1;
		}
	} else {
		port = ml->port;
		if (address_is_any(ml))
			snprintf(host, sizeof(host), "%s", hostname);
		else if (ml->family == AF_INET6)
			snprintf(host, sizeof(host), "[%s]", ml->host);
		else
			snprintf(host, sizeof(host), "%s", ml->host);
	}
	snprintf(adv_host, PAN_ENDPOINT_MAX, "%s:%lu", host, port);
	snprintf(msg, PAN_ENDPOINT_MAX, "tcp://%s:%lu", host, port);
	snprintf(ev, PAN_ENDPOINT_MAX, "tcp://%s:%u", host, el->port);
	return 0;
}

static int
messaging_advertise(struct pan *p, struct error *err)
{
	return pan_advertise(p->cfg, p->id.hostname, p->advertise_host,
	                     p->messaging_endpoint, p->events_endpoint, err);
}

static int
sockopt_int(void *s, int opt, int v, const char *name, struct error *err)
{
	if (zmq_setsockopt(s, opt, &v, sizeof(v)) == -1) {
		error_set(err, "zmq_setsockopt(%s): %s", name,
		          zmq_strerror(errno));
		return -1;
	}
	return 0;
}

/* A CURVE server socket bound to the address of key (config). */
static void *
curve_server(struct pan *p, int type, const char *key, const char *secret_z85,
             struct error *err)
{
	const struct config_address *a = config_get_address(p->cfg, key);
	int64_t maxmsg = MESSAGING_WIRE_MAX;
	char ep[PAN_ENDPOINT_MAX];
	void *s;

	if ((s = zmq_socket(p->zctx, type)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		return NULL;
	}
	if (sockopt_int(s, ZMQ_LINGER, 0, "ZMQ_LINGER", err) == -1 ||
	    sockopt_int(s, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER", err) ==
	        -1 ||
	    sockopt_int(s, ZMQ_IPV6, a->family != AF_INET, "ZMQ_IPV6", err) ==
	        -1)
		goto fail;
	/* CURVE wants the Z85 text with its NUL (41 bytes). */
	if (zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret_z85, CURVE_Z85_LEN) ==
	        -1 ||
	    zmq_setsockopt(s, ZMQ_ZAP_DOMAIN,
	                   type == ZMQ_PUB ? ZAP_DOMAIN_EVENTS : ZAP_DOMAIN,
	                   strlen(type == ZMQ_PUB ? ZAP_DOMAIN_EVENTS
	                                          : ZAP_DOMAIN)) == -1) {
		error_set(err, "zmq_setsockopt(CURVE): %s",
		          zmq_strerror(errno));
		goto fail;
	}
	/*
	 * libzmq checks the size in the frame header and drops the
	 * connection before buffering a frame over this: a peer cannot make
	 * us hold more than MESSAGING_WIRE_MAX per frame.  Frames between
	 * MSG_MAX_SIZE and that get through so that msg_unpack() counts and
	 * logs them as oversized; a connection cut by libzmq is not counted
	 * (libzmq gives no reason with the disconnect).
	 */
	if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) == -1) {
		error_set(err, "zmq_setsockopt(ZMQ_MAXMSGSIZE): %s",
		          zmq_strerror(errno));
		goto fail;
	}
	/*
	 * ZMTP heartbeats reap the pipe of a peer that vanished without a
	 * FIN (a killed VM), so its routing id is free for its reconnection.
	 */
	if (sockopt_int(s, ZMQ_HEARTBEAT_IVL, (int)p->hb_interval_ms,
	                "ZMQ_HEARTBEAT_IVL", err) == -1 ||
	    sockopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, (int)p->hb_timeout_ms,
	                "ZMQ_HEARTBEAT_TIMEOUT", err) == -1)
		goto fail;
	if (type == ZMQ_ROUTER) {
		/*
		 * A node that reconnects (its process restarted, its old
		 * TCP connection not yet timed out) and sets the same
		 * routing id takes the id over instead of being refused
		 * until the stale pipe dies.  Replies go by routing id
		 * only; every message is still attributed by CURVE key.
		 */
		if (sockopt_int(s, ZMQ_ROUTER_HANDOVER, 1,
		                "ZMQ_ROUTER_HANDOVER", err) == -1 ||
		    /* A reply to a peer that left fails instead of vanishing.
		     */
		    sockopt_int(s, ZMQ_ROUTER_MANDATORY, 1,
		                "ZMQ_ROUTER_MANDATORY", err) == -1)
			goto fail;
	}
	endpoint_of(a, ep, sizeof(ep));
	if (zmq_bind(s, ep) == -1) {
		error_set(err, "cannot listen on %s (%s, %s): %s", ep + 6, key,
		          config_source(p->cfg, key), zmq_strerror(errno));
		goto fail;
	}
	log_info(LOG_MESSAGING, "%s listening on %s (CURVE server)",
	         type == ZMQ_ROUTER ? "messaging" : "events", ep);
	return s;
fail:
	zmq_close(s);
	return NULL;
}

int
messaging_open(struct pan *p, const char *curve_secret_z85, struct error *err)
{
	if (messaging_advertise(p, err) == -1)
		return -1;
	/* The handler must be bound before any CURVE socket is. */
	if ((p->zap = zmq_socket(p->zctx, ZMQ_REP)) == NULL ||
	    sockopt_int(p->zap, ZMQ_LINGER, 0, "ZMQ_LINGER", err) == -1 ||
	    zmq_bind(p->zap, ZAP_ENDPOINT) == -1) {
		error_set(err, "ZAP handler %s: %s", ZAP_ENDPOINT,
		          zmq_strerror(errno));
		return -1;
	}
	if ((p->router = curve_server(p, ZMQ_ROUTER, "messaging.listen",
	                              curve_secret_z85, err)) == NULL)
		return -1;
	if ((p->pub = curve_server(p, ZMQ_PUB, "events.listen",
	                           curve_secret_z85, err)) == NULL)
		return -1;
	log_info(LOG_MESSAGING,
	         "nodes reach this PAN at %s (events %s); "
	         "CURVE public key %s",
	         p->messaging_endpoint, p->events_endpoint,
	         p->curve_public_z85);
	return 0;
}

int
messaging_events_rebind(struct pan *p, struct error *err)
{
	char secret[CURVE_Z85_LEN];
	size_t len = sizeof(secret);
	int tries;

	if (p->pub == NULL)
		return 0;
	if (zmq_getsockopt(p->pub, ZMQ_CURVE_SECRETKEY, secret, &len) == -1) {
		error_set(err, "zmq_getsockopt(ZMQ_CURVE_SECRETKEY): %s",
		          zmq_strerror(errno));
		return -1;
	}
	zmq_close(p->pub);
	p->pub = NULL;
	/* The old socket's port is freed by the I/O thread: a moment. */
	for (tries = 0; tries < 50 && p->pub == NULL; tries++) {
		p->pub = curve_server(p, ZMQ_PUB, "events.listen", secret, err);
		if (p->pub == NULL)
			(void)nanosleep(&(struct timespec){0, 20 * 1000 * 1000},
			                NULL);
	}
	secure_zero(secret, sizeof(secret));
	if (p->pub == NULL)
		return -1;
	log_info(LOG_MESSAGING, "events socket bound again: every node "
	                        "subscribes anew through ZAP");
	return 0;
}

void
messaging_close(struct pan *p)
{
	if (p->router != NULL)
		zmq_close(p->router);
	if (p->pub != NULL)
		zmq_close(p->pub);
	if (p->zap != NULL)
		zmq_close(p->zap);
	p->router = p->pub = p->zap = NULL;
}

/*
 * RFC 27: the request is version "1.0", request id, domain, address,
 * identity, mechanism, then the mechanism's credentials (CURVE: the
 * client's 32-byte public key).  The reply is version, request id,
 * status code, status text, user id and metadata.
 */
void
messaging_zap(struct pan *p)
{
	uint8_t frames[ZAP_FRAMES_MAX][ZAP_FRAME_MAX];
	size_t lens[ZAP_FRAMES_MAX];
	char user_id[CURVE_Z85_LEN] = "";
	const char *code = "400", *text = "refused";
	int n = 0, more, r;
	bool truncated = false;
	size_t morelen;
	uint64_t suppressed;

	do {
		r = zmq_recv(p->zap,
		             n < ZAP_FRAMES_MAX ? frames[n]
		                                : frames[ZAP_FRAMES_MAX - 1],
		             ZAP_FRAME_MAX, ZMQ_DONTWAIT);
		if (r == -1) {
			if (n == 0)
				return; /* nothing there after all */
			log_error(LOG_MESSAGING, "ZAP: zmq_recv: %s",
			          zmq_strerror(errno));
			return;
		}
		/* zmq_recv() returns the frame's size even when it cut it. */
		if (r > ZAP_FRAME_MAX)
			truncated = true;
		if (n < ZAP_FRAMES_MAX)
			lens[n] = r > ZAP_FRAME_MAX ? ZAP_FRAME_MAX : (size_t)r;
		n++;
		morelen = sizeof(more);
		if (zmq_getsockopt(p->zap, ZMQ_RCVMORE, &more, &morelen) == -1)
			more = 0;
	} while (more);

	if (n < 7 || n > ZAP_FRAMES_MAX || truncated || lens[0] != 3 ||
	    memcmp(frames[0], "1.0", 3) != 0) {
		/* libzmq wrote it; a malformed one is a libzmq bug. */
		log_error(LOG_MESSAGING, "ZAP: malformed request (%d frames)",
		          n);
		code = "500";
		text = "malformed ZAP request";
	} else if (lens[5] != 5 || memcmp(frames[5], "CURVE", 5) != 0 ||
	           lens[6] != CURVE_KEY_LEN) {
		code = "400";
		text = "CURVE only";
	} else if (registry_key_removed(p, frames[6])) {
		zmq_z85_encode(user_id, frames[6], CURVE_KEY_LEN);
		p->zap_refused++;
		if (messaging_ratelimit(&p->zap_rl, &suppressed))
			log_warn(LOG_MESSAGING,
			         "refused CURVE key %s: it "
			         "belongs to a removed node%s",
			         user_id,
			         suppressed > 0
			             ? " (and more refusals since the "
			               "last line)"
			             : "");
		user_id[0] = '\0';
		code = "400";
		text = "node removed from the deployment";
	} else if (lens[2] == strlen(ZAP_DOMAIN_EVENTS) &&
	           memcmp(frames[2], ZAP_DOMAIN_EVENTS, lens[2]) == 0 &&
	           registry_find_key(p, frames[6]) == NULL) {
		p->zap_refused++;
		code = "400";
		text = "events are for registered nodes only";
	} else {
		/* Any other key may connect: a joining node is not known
		 * yet.  Messages are attributed to the key from here on. */
		zmq_z85_encode(user_id, frames[6], CURVE_KEY_LEN);
		p->zap_accepted++;
		code = "200";
		text = "OK";
	}
	zmq_send(p->zap, "1.0", 3, ZMQ_SNDMORE);
	zmq_send(p->zap, n > 1 ? frames[1] : (uint8_t *)"",
	         n > 1 && n <= ZAP_FRAMES_MAX ? lens[1] : 0, ZMQ_SNDMORE);
	zmq_send(p->zap, code, 3, ZMQ_SNDMORE);
	zmq_send(p->zap, text, strlen(text), ZMQ_SNDMORE);
	zmq_send(p->zap, user_id, strlen(user_id), ZMQ_SNDMORE);
	zmq_send(p->zap, "", 0, 0);
}

int
messaging_reply(struct pan *p, const void *rid, size_t rid_len,
                Iselab__Envelope *env)
{
	struct error err = {{0}};
	uint8_t *buf;
	size_t len;
	int rc = -1;

	if ((buf = msg_pack(env, &len, &err)) == NULL) {
		log_error(LOG_MESSAGING, "cannot send %s: %s",
		          msg_body_name(env->body_case), err.msg);
		return -1;
	}
	if (zmq_send(p->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) ==
	        -1 ||
	    zmq_send(p->router, buf, len, ZMQ_DONTWAIT) == -1) {
		/* EHOSTUNREACH: the peer left; EAGAIN: its queue is full. */
		uint64_t held;

		if (messaging_ratelimit(&p->reply_rl, &held))
			log_info(LOG_MESSAGING,
			         "%s not delivered: %s (%llu more not "
			         "logged since the last line)",
			         msg_body_name(env->body_case),
			         zmq_strerror(errno), (unsigned long long)held);
		goto out;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

struct dispatch_ctx {
	struct pan *p;
	struct pan_peer peer;
};

static int
on_join(void *ctx, const Iselab__Envelope *env)
{
	struct dispatch_ctx *c = ctx;

	return registry_join(c->p, &c->peer, env);
}

static int
on_heartbeat(void *ctx, const Iselab__Envelope *env)
{
	struct dispatch_ctx *c = ctx;

	return registry_heartbeat(c->p, &c->peer, env);
}

static int
on_outbox(void *ctx, const Iselab__Envelope *env)
{
	struct dispatch_ctx *c = ctx;

	return registry_outbox(c->p, &c->peer, env);
}

static int
on_events_request(void *ctx, const Iselab__Envelope *env)
{
	struct dispatch_ctx *c = ctx;

	return eventlog_request(c->p, &c->peer, env);
}

static int
on_renew(void *ctx, const Iselab__Envelope *env)
{
	struct dispatch_ctx *c = ctx;

	return rootchain_renew(c->p, &c->peer, env);
}

/* What nodes may send to 8671; anything else is counted as unhandled. */
static const struct msg_handler router_handlers[] = {
    {ISELAB__ENVELOPE__BODY_JOIN_REQUEST, on_join},
    {ISELAB__ENVELOPE__BODY_HEARTBEAT, on_heartbeat},
    {ISELAB__ENVELOPE__BODY_OUTBOX_BATCH, on_outbox},
    {ISELAB__ENVELOPE__BODY_EVENTS_REQUEST, on_events_request},
    {ISELAB__ENVELOPE__BODY_RENEW_REQUEST, on_renew},
};

/* One message: the routing id ROUTER added, and the node's payload. */
static void
messaging_message(struct pan *p, zmq_msg_t *rid, zmq_msg_t *payload)
{
	uint64_t before[MSG_DROP_COUNT];
	struct dispatch_ctx c;
	struct error err = {{0}};
	Iselab__Envelope *env;
	const char *uid;
	size_t len, i;

	len = zmq_msg_size(payload);
	if (len == 0) {
		messaging_drop(p, PAN_DROP_EMPTY, "an empty message");
		return;
	}
	uid = zmq_msg_gets(payload, "User-Id");
	memset(&c, 0, sizeof(c));
	c.p = p;
	if (uid == NULL || strlen(uid) != CURVE_Z85_LEN - 1 ||
	    zmq_z85_decode(c.peer.key, uid) == NULL) {
		messaging_drop(p, PAN_DROP_NO_USER_ID,
		               "a message of %zu bytes "
		               "without a CURVE identity",
		               len);
		return;
	}
	memcpy(c.peer.key_z85, uid, CURVE_Z85_LEN);
	c.peer.rid = zmq_msg_data(rid);
	c.peer.rid_len = zmq_msg_size(rid);

	memcpy(before, p->router_stats.dropped, sizeof(before));
	env = msg_unpack(zmq_msg_data(payload), len, &p->router_stats, &err);
	if (env == NULL) {
		/* msg_unpack() counted it; log under the reason it counted. */
		for (i = 0; i < MSG_DROP_COUNT - 1; i++)
			if (p->router_stats.dropped[i] != before[i])
				break;
		messaging_msg_drop(p, (enum msg_drop)i, "from CURVE key %s: %s",
		                   uid, err.msg);
		return;
	}
	log_debug(LOG_MESSAGING, "%s from '%s' (key %s)",
	          msg_body_name(env->body_case), env->sender, uid);
	/*
	 * No longer the primary: every node is told so (a PSN goes on
	 * looking for the primary), and nothing is stored or answered.
	 */
	if (p->superseded != 0) {
		Iselab__Envelope reply;
		Iselab__Error e = ISELAB__ERROR__INIT;

		msg_init(&reply, env->request_id, p->id.hostname);
		e.code = ISELAB__ERROR__CODE__ERROR_NOT_PRIMARY;
		e.message = "not primary: this admin node was superseded";
		primary_error(p, &e);
		reply.body_case = ISELAB__ENVELOPE__BODY_ERROR;
		reply.error = &e;
		(void)messaging_reply(p, c.peer.rid, c.peer.rid_len, &reply);
		msg_free(env);
		return;
	}
	if (msg_dispatch(router_handlers, ARRAY_SIZE(router_handlers), &c, env,
	                 &p->router_stats, &err) == -1 &&
	    err.msg[0] != '\0')
		messaging_msg_drop(p, MSG_DROP_UNHANDLED,
		                   "from CURVE key %s: "
		                   "%s",
		                   uid, err.msg);
	msg_free(env);
}

void
messaging_router(struct pan *p)
{
	zmq_msg_t f[2];
	int batch, n, more;

	for (batch = 0; batch < ROUTER_BATCH; batch++) {
		zmq_msg_init(&f[0]);
		if (zmq_msg_recv(&f[0], p->router, ZMQ_DONTWAIT) == -1) {
			zmq_msg_close(&f[0]);
			if (errno != EAGAIN)
				log_error(LOG_MESSAGING,
				          "ROUTER: zmq_msg_recv: "
				          "%s",
				          zmq_strerror(errno));
			return;
		}
		n = 1;
		more = zmq_msg_more(&f[0]);
		zmq_msg_init(&f[1]);
		/* The rest of a multipart message is always there at once. */
		while (more) {
			zmq_msg_t m;

			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, p->router, 0) == -1) {
				zmq_msg_close(&m);
				break;
			}
			more = zmq_msg_more(&m);
			if (n == 1)
				zmq_msg_move(&f[1], &m);
			zmq_msg_close(&m);
			n++;
		}
		/* ROUTER prepends the routing id: a node sends one frame. */
		if (n != 2)
			messaging_drop(
			    p, PAN_DROP_FRAMES,
			    "a message of %d "
			    "frames (want one frame after the routing id)",
			    n - 1);
		else
			messaging_message(p, &f[0], &f[1]);
		zmq_msg_close(&f[0]);
		zmq_msg_close(&f[1]);
	}
}
