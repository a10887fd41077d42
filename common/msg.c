/*
 * msg: envelope packing, checked unpacking and table dispatch; see msg.h.
 */
#include "msg.h"
#include "util.h"

#include <stdlib.h>

static const char *const drop_names[MSG_DROP_COUNT] = {
    [MSG_DROP_OVERSIZED] = "oversized",   [MSG_DROP_MALFORMED] = "malformed",
    [MSG_DROP_VERSION] = "wrong version", [MSG_DROP_NO_BODY] = "no body",
    [MSG_DROP_UNHANDLED] = "unhandled",
};

const char *
msg_drop_name(enum msg_drop why)
{
	if ((unsigned)why >= MSG_DROP_COUNT)
		return "?";
	return drop_names[why];
}

const char *
msg_body_name(msg_body_t body)
{
	const ProtobufCFieldDescriptor *f;

	if (body == ISELAB__ENVELOPE__BODY__NOT_SET)
		return "none";
	f = protobuf_c_message_descriptor_get_field(
	    &iselab__envelope__descriptor, (unsigned)body);
	return f != NULL ? f->name : "unknown";
}

void
msg_init(Iselab__Envelope *env, uint64_t request_id, const char *sender)
{
	iselab__envelope__init(env);
	env->version = ISELAB__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT;
	env->request_id = request_id;
	/* protobuf-c wants a non-const pointer; it never writes through it. */
	env->sender = (char *)(sender != NULL ? sender : "");
}

uint8_t *
msg_pack(const Iselab__Envelope *env, size_t *len, struct error *err)
{
	uint8_t *buf;
	size_t n;

	n = iselab__envelope__get_packed_size(env);
	if (n > MSG_MAX_SIZE) {
		error_set(err, "message of %zu bytes is over the limit of %d",
		          n, MSG_MAX_SIZE);
		return NULL;
	}
	/* malloc(0) may return NULL; an empty envelope is still one byte. */
	if ((buf = malloc(n > 0 ? n : 1)) == NULL) {
		error_set(err, "out of memory packing a message");
		return NULL;
	}
	*len = iselab__envelope__pack(env, buf);
	return buf;
}

static void *
drop(struct msg_stats *stats, enum msg_drop why)
{
	if (stats != NULL)
		stats->dropped[why]++;
	return NULL;
}

Iselab__Envelope *
msg_unpack(const uint8_t *buf, size_t len, struct msg_stats *stats,
           struct error *err)
{
	Iselab__Envelope *env;

	/* Refuse before parsing: protobuf-c would allocate for all of it. */
	if (len > MSG_MAX_SIZE) {
		error_set(err, "message of %zu bytes is over the limit of %d",
		          len, MSG_MAX_SIZE);
		return drop(stats, MSG_DROP_OVERSIZED);
	}
	if ((env = iselab__envelope__unpack(NULL, len, buf)) == NULL) {
		error_set(err,
		          "message of %zu bytes does not unpack as an "
		          "envelope",
		          len);
		return drop(stats, MSG_DROP_MALFORMED);
	}
	if (env->version !=
	    ISELAB__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT) {
		error_set(err,
		          "message from '%s' has protocol version %u; "
		          "this node speaks %d",
		          env->sender, env->version,
		          ISELAB__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT);
		msg_free(env);
		return drop(stats, MSG_DROP_VERSION);
	}
	if (env->body_case == ISELAB__ENVELOPE__BODY__NOT_SET) {
		error_set(err, "message from '%s' has no body", env->sender);
		msg_free(env);
		return drop(stats, MSG_DROP_NO_BODY);
	}
	if (stats != NULL)
		stats->received++;
	return env;
}

void
msg_free(Iselab__Envelope *env)
{
	if (env != NULL)
		iselab__envelope__free_unpacked(env, NULL);
}

int
msg_dispatch(const struct msg_handler *table, size_t n, void *ctx,
             const Iselab__Envelope *env, struct msg_stats *stats,
             struct error *err)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (table[i].body == env->body_case)
			return table[i].fn(ctx, env);
	error_set(err, "no handler for a '%s' message from '%s'",
	          msg_body_name(env->body_case), env->sender);
	drop(stats, MSG_DROP_UNHANDLED);
	return -1;
}
