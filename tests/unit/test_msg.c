/*
 * Unit tests for common/msg.c: envelopes that unpack, and every way one
 * that arrives from the network can be wrong (garbage, truncated, oversized,
 * wrong version, no body, no handler), each counted and refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "util.h"

static uint8_t *
pack_join(size_t *len, uint32_t version)
{
	Iselab__Envelope env;
	Iselab__JoinRequest req = ISELAB__JOIN_REQUEST__INIT;
	uint8_t secret[32] = { 1, 2, 3 };
	struct error err;
	uint8_t *buf;

	msg_init(&env, 42, "psn1");
	env.version = version;
	req.token_id = "tok-1";
	req.token_secret.data = secret;
	req.token_secret.len = sizeof(secret);
	req.hostname = "psn1";
	req.role = ISELAB__ROLE__ROLE_PSN;
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_REQUEST;
	env.join_request = &req;
	buf = msg_pack(&env, len, &err);
	assert_non_null(buf);
	return buf;
}

static void
test_round_trip(void **state)
{
	struct msg_stats stats = { 0 };
	Iselab__Envelope *env;
	struct error err;
	uint8_t *buf;
	size_t len;

	(void)state;
	buf = pack_join(&len, ISELAB__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT);
	env = msg_unpack(buf, len, &stats, &err);
	assert_non_null(env);
	assert_int_equal(env->request_id, 42);
	assert_string_equal(env->sender, "psn1");
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_JOIN_REQUEST);
	assert_string_equal(env->join_request->token_id, "tok-1");
	assert_int_equal(env->join_request->token_secret.len, 32);
	assert_int_equal(stats.received, 1);
	assert_string_equal(msg_body_name(env->body_case), "join_request");
	msg_free(env);
	free(buf);
}

static void
test_wrong_version(void **state)
{
	struct msg_stats stats = { 0 };
	struct error err;
	uint8_t *buf;
	size_t len;

	(void)state;
	buf = pack_join(&len, 99);
	assert_null(msg_unpack(buf, len, &stats, &err));
	assert_int_equal(stats.dropped[MSG_DROP_VERSION], 1);
	assert_non_null(strstr(err.msg, "protocol version 99"));
	free(buf);
	/* A message that never set a version (0) is refused too. */
	buf = pack_join(&len, 0);
	assert_null(msg_unpack(buf, len, &stats, &err));
	assert_int_equal(stats.dropped[MSG_DROP_VERSION], 2);
	assert_int_equal(stats.received, 0);
	free(buf);
}

static void
test_no_body(void **state)
{
	struct msg_stats stats = { 0 };
	Iselab__Envelope env;
	struct error err;
	uint8_t *buf;
	size_t len;

	(void)state;
	msg_init(&env, 1, "san1");
	buf = msg_pack(&env, &len, &err);
	assert_non_null(buf);
	assert_null(msg_unpack(buf, len, &stats, &err));
	assert_int_equal(stats.dropped[MSG_DROP_NO_BODY], 1);
	free(buf);
}

static void
test_garbage_and_truncated(void **state)
{
	struct msg_stats stats = { 0 };
	Iselab__Envelope *env;
	uint8_t junk[512];
	struct error err;
	uint8_t *buf;
	size_t len, cut, i, refused = 0;

	(void)state;
	/* Every truncation of a valid message is refused or, if protobuf's
	 * framing happens to end on a field boundary, still well-formed:
	 * never a crash. */
	buf = pack_join(&len, ISELAB__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT);
	for (cut = 0; cut < len; cut++) {
		env = msg_unpack(buf, cut, &stats, &err);
		if (env == NULL)
			refused++;
		msg_free(env);
	}
	assert_true(refused > len / 2);
	free(buf);
	/* Random bytes: a deterministic generator, many rounds. */
	srand(1234);
	for (i = 0; i < 20000; i++) {
		size_t n = (size_t)rand() % sizeof(junk);

		for (size_t k = 0; k < n; k++)
			junk[k] = (uint8_t)rand();
		msg_free(msg_unpack(junk, n, &stats, &err));
	}
	assert_true(stats.dropped[MSG_DROP_MALFORMED] > 0);
}

static void
test_oversized(void **state)
{
	struct msg_stats stats = { 0 };
	Iselab__Envelope env;
	Iselab__JoinRequest req = ISELAB__JOIN_REQUEST__INIT;
	struct error err;
	uint8_t *big;
	size_t len;

	(void)state;
	big = calloc(1, MSG_MAX_SIZE + 1);
	assert_non_null(big);
	/* Refused before parsing, whatever the bytes. */
	assert_null(msg_unpack(big, MSG_MAX_SIZE + 1, &stats, &err));
	assert_int_equal(stats.dropped[MSG_DROP_OVERSIZED], 1);
	assert_non_null(strstr(err.msg, "over the limit"));
	/* And we never send what a peer would refuse. */
	msg_init(&env, 1, "pan1");
	req.ca_csr.data = big;
	req.ca_csr.len = MSG_MAX_SIZE;
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_REQUEST;
	env.join_request = &req;
	assert_null(msg_pack(&env, &len, &err));
	free(big);
}

static int handled_joins;

static int
on_join(void *ctx, const Iselab__Envelope *env)
{
	(void)ctx;
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_JOIN_REQUEST);
	handled_joins++;
	return 7;
}

static void
test_dispatch(void **state)
{
	static const struct msg_handler table[] = {
		{ ISELAB__ENVELOPE__BODY_JOIN_REQUEST, on_join },
	};
	struct msg_stats stats = { 0 };
	Iselab__Envelope env;
	Iselab__Heartbeat hb = ISELAB__HEARTBEAT__INIT;
	Iselab__JoinRequest req = ISELAB__JOIN_REQUEST__INIT;
	struct error err;

	(void)state;
	msg_init(&env, 1, "psn1");
	env.body_case = ISELAB__ENVELOPE__BODY_JOIN_REQUEST;
	env.join_request = &req;
	assert_int_equal(msg_dispatch(table, ARRAY_SIZE(table), NULL, &env,
			     &stats, &err),
	    7);
	assert_int_equal(handled_joins, 1);
	env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	assert_int_equal(msg_dispatch(table, ARRAY_SIZE(table), NULL, &env,
			     &stats, &err),
	    -1);
	assert_int_equal(stats.dropped[MSG_DROP_UNHANDLED], 1);
	assert_non_null(strstr(err.msg, "heartbeat"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_wrong_version),
		cmocka_unit_test(test_no_body),
		cmocka_unit_test(test_garbage_and_truncated),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_dispatch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
