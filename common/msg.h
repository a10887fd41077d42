/*
 * msg: the envelope every message travels in, between nodes and between the
 * processes of one node (DESIGN.md section 3).
 *
 * Anything that arrives from a socket goes through msg_unpack(), which
 * refuses oversized input before parsing it, anything protobuf-c cannot
 * unpack, a protocol version we do not speak and an envelope without a body.
 * The caller counts the refusal in a struct msg_stats, logs it and drops the
 * message: bad input from the network never ends a daemon.  A message that
 * unpacks is dispatched through a table of { body case, handler }, in the
 * style of zyre, so that adding a message is adding a row.
 */
#ifndef ISELAB_MSG_H
#define ISELAB_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.pb-c.h"

struct error;

/* Largest envelope we accept; a join response with a chain is a few KiB. */
#define MSG_MAX_SIZE (256 * 1024)

typedef Iselab__Envelope__BodyCase msg_body_t;

/* Why msg_unpack() refused a message; indexes struct msg_stats. */
enum msg_drop {
	MSG_DROP_OVERSIZED, /* over MSG_MAX_SIZE, not parsed */
	MSG_DROP_MALFORMED, /* protobuf-c could not unpack it */
	MSG_DROP_VERSION,   /* a protocol version we do not speak */
	MSG_DROP_NO_BODY,   /* the oneof is not set */
	MSG_DROP_UNHANDLED, /* no handler for this body here */
	MSG_DROP_COUNT
};

/* Counters a daemon keeps per socket and shows in its status. */
struct msg_stats {
	uint64_t received;                /* envelopes accepted */
	uint64_t dropped[MSG_DROP_COUNT]; /* refused, by reason */
};

const char *msg_drop_name(enum msg_drop why);
const char *msg_body_name(msg_body_t body);

/* Fill in a fresh envelope with the current protocol version. */
void msg_init(Iselab__Envelope *env, uint64_t request_id, const char *sender);

/*
 * Serialize; returns a malloc'd buffer, or NULL when the envelope would be
 * over MSG_MAX_SIZE (we never send what our peer would refuse).
 */
uint8_t *msg_pack(const Iselab__Envelope *env, size_t *len, struct error *err);

/*
 * Parse and check.  On refusal returns NULL, counts the reason in stats (if
 * not NULL), and says why in err; the caller logs and drops.
 */
Iselab__Envelope *msg_unpack(const uint8_t *buf, size_t len,
                             struct msg_stats *stats, struct error *err);
void msg_free(Iselab__Envelope *env);

/* A handler gets the envelope it was picked for and the caller's context. */
typedef int (*msg_handler_fn)(void *ctx, const Iselab__Envelope *env);

struct msg_handler {
	msg_body_t body;
	msg_handler_fn fn;
};

/*
 * Call the handler for env's body.  No handler: counted as
 * MSG_DROP_UNHANDLED and -1 returned with err set.  Otherwise the handler's
 * return value.
 */
int msg_dispatch(const struct msg_handler *table, size_t n, void *ctx,
                 const Iselab__Envelope *env, struct msg_stats *stats,
                 struct error *err);

#endif
