/*
 * Unit tests for common/curve.c: an X25519 key made by OpenSSL is the CURVE
 * key libzmq expects, survives encryption at rest, and really authenticates
 * a CURVE handshake; a bad Z85 public key is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "curve.h"
#include "keys.h"
#include "util.h"

static void
test_z85_matches_libzmq(void **state)
{
	char pub[CURVE_Z85_LEN], sec[CURVE_Z85_LEN], derived[CURVE_Z85_LEN];
	unsigned char raw[CURVE_KEY_LEN];
	struct error err;
	EVP_PKEY *key;

	(void)state;
	key = curve_generate(&err);
	assert_non_null(key);
	assert_int_equal(curve_z85(key, pub, sec, &err), 0);
	assert_int_equal(strlen(pub), 40);
	assert_int_equal(zmq_curve_public(derived, sec), 0);
	assert_string_equal(derived, pub);
	assert_int_equal(curve_public_from_z85(pub, raw, &err), 0);
	EVP_PKEY_free(key);
}

static void
test_bad_public(void **state)
{
	unsigned char raw[CURVE_KEY_LEN];
	struct error err;

	(void)state;
	assert_int_equal(curve_public_from_z85("short", raw, &err), -1);
	assert_non_null(strstr(err.msg, "Z85"));
	assert_int_equal(curve_public_from_z85(
			     "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~", raw,
			     &err),
	    -1);
}

static void
test_not_x25519(void **state)
{
	char pub[CURVE_Z85_LEN];
	struct error err;
	EVP_PKEY *key;

	(void)state;
	key = key_generate(KEY_EC_P256, &err);
	assert_non_null(key);
	assert_int_equal(curve_z85(key, pub, NULL, &err), -1);
	EVP_PKEY_free(key);
}

static void
test_saved_key_handshakes(void **state)
{
	char dir[] = "/tmp/test_curve.XXXXXX", path[64];
	char spub[CURVE_Z85_LEN], ssec[CURVE_Z85_LEN];
	char cpub[CURVE_Z85_LEN], csec[CURVE_Z85_LEN];
	char wrong_pub[CURVE_Z85_LEN], endpoint[128], buf[8];
	EVP_PKEY *key, *loaded, *client, *other;
	void *ctx, *srv, *cli;
	struct error err;
	int timeout = 2000, n;
	size_t len = sizeof(endpoint);

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/curve.key", dir);
	key = curve_generate(&err);
	assert_non_null(key);
	assert_int_equal(key_save(key, path, "passphrase-1", 12, &err), 0);
	loaded = key_load(path, "passphrase-1", 12, &err);
	assert_non_null(loaded);
	assert_int_equal(curve_z85(loaded, spub, ssec, &err), 0);
	client = curve_generate(&err);
	other = curve_generate(&err);
	assert_non_null(client);
	assert_non_null(other);
	assert_int_equal(curve_z85(client, cpub, csec, &err), 0);
	assert_int_equal(curve_z85(other, wrong_pub, NULL, &err), 0);

	ctx = zmq_ctx_new();
	srv = zmq_socket(ctx, ZMQ_REP);
	n = 1;
	assert_int_equal(zmq_setsockopt(srv, ZMQ_CURVE_SERVER, &n, sizeof(n)),
	    0);
	assert_int_equal(zmq_setsockopt(srv, ZMQ_CURVE_SECRETKEY, ssec, 40),
	    0);
	assert_int_equal(zmq_bind(srv, "tcp://127.0.0.1:*"), 0);
	assert_int_equal(
	    zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, endpoint, &len), 0);

	/* A client that knows the right server key gets through... */
	cli = zmq_socket(ctx, ZMQ_REQ);
	zmq_setsockopt(cli, ZMQ_CURVE_SERVERKEY, spub, 40);
	zmq_setsockopt(cli, ZMQ_CURVE_PUBLICKEY, cpub, 40);
	zmq_setsockopt(cli, ZMQ_CURVE_SECRETKEY, csec, 40);
	zmq_setsockopt(cli, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	zmq_setsockopt(srv, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	assert_int_equal(zmq_connect(cli, endpoint), 0);
	assert_int_equal(zmq_send(cli, "ping", 4, 0), 4);
	assert_int_equal(zmq_recv(srv, buf, sizeof(buf), 0), 4);
	assert_int_equal(zmq_send(srv, "pong", 4, 0), 4);
	assert_int_equal(zmq_recv(cli, buf, sizeof(buf), 0), 4);
	zmq_close(cli);

	/* ...and one that expects another server key never does. */
	cli = zmq_socket(ctx, ZMQ_REQ);
	zmq_setsockopt(cli, ZMQ_CURVE_SERVERKEY, wrong_pub, 40);
	zmq_setsockopt(cli, ZMQ_CURVE_PUBLICKEY, cpub, 40);
	zmq_setsockopt(cli, ZMQ_CURVE_SECRETKEY, csec, 40);
	timeout = 500;
	zmq_setsockopt(srv, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	assert_int_equal(zmq_connect(cli, endpoint), 0);
	assert_int_equal(zmq_send(cli, "ping", 4, 0), 4);
	assert_int_equal(zmq_recv(srv, buf, sizeof(buf), 0), -1);
	n = 0;
	zmq_setsockopt(cli, ZMQ_LINGER, &n, sizeof(n));
	zmq_close(cli);
	zmq_close(srv);
	zmq_ctx_term(ctx);

	secure_zero(ssec, sizeof(ssec));
	secure_zero(csec, sizeof(csec));
	EVP_PKEY_free(key);
	EVP_PKEY_free(loaded);
	EVP_PKEY_free(client);
	EVP_PKEY_free(other);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_z85_matches_libzmq),
		cmocka_unit_test(test_bad_public),
		cmocka_unit_test(test_not_x25519),
		cmocka_unit_test(test_saved_key_handshakes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
