/*
 * Unit tests for common/enroll.c: user records and templates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enroll.h"
#include "util.h"

static void
test_user_hash_verify(void **state)
{
	struct error err = {{0}};
	char *rec;

	(void)state;
	rec = enroll_user_hash("correct horse", &err);
	assert_non_null(rec);
	assert_int_equal(enroll_user_record_check(rec, &err), 0);
	assert_int_equal(enroll_user_verify(rec, "correct horse"), 1);
	assert_int_equal(enroll_user_verify(rec, "correct horsE"), 0);
	assert_int_equal(enroll_user_verify(rec, ""), 0);
	/* Salted: the same password hashes differently. */
	{
		char *again = enroll_user_hash("correct horse", &err);

		assert_string_not_equal(rec, again);
		free(again);
	}
	free(rec);
	/* Malformed records never verify. */
	assert_int_equal(enroll_user_record_check("secret", &err), -1);
	assert_int_equal(enroll_user_verify("secret", "secret"), 0);
	assert_int_equal(
	    enroll_user_record_check("pbkdf2-sha256$10$00$00", &err), -1);
	assert_int_equal(enroll_user_record_check(
	                     "md5$100000$00112233445566778899aabbccddeeff$"
	                     "00112233445566778899aabbccddeeff0011223344556677"
	                     "8899aabbccddeeff",
	                     &err),
	                 -1);
}

static void
test_names_and_labels(void **state)
{
	struct error err = {{0}};

	(void)state;
	assert_int_equal(enroll_user_name_check("alice@example.com", &err), 0);
	assert_int_equal(enroll_user_name_check("a:b", &err), -1);
	assert_int_equal(enroll_user_name_check("", &err), -1);
	assert_int_equal(enroll_user_name_check("bad name", &err), -1);
	assert_int_equal(enroll_label_check("iot-devices_1.2", &err), 0);
	assert_int_equal(enroll_label_check(".hidden", &err), -1);
	assert_int_equal(enroll_label_check("a/b", &err), -1);
	assert_int_equal(enroll_label_check("default", &err), -1);
	assert_int_equal(enroll_label_check(ENROLL_TEMPLATE_DEFAULT, &err), -1);
}

static void
test_template_round_trip(void **state)
{
	struct est_template t, back;
	struct error err = {{0}};
	char text[] = "profile = tls-server\nvalidity = 30d\n"
	              "key-types = ec:p256,rsa:3072\nkeygen = rsa:3072\n"
	              "pop = required\nrequire-cn = no\n";
	char out[ENROLL_TEMPLATE_MAX];

	(void)state;
	assert_int_equal(enroll_template_parse("srv", text, &t, &err), 0);
	assert_int_equal(t.profile, CERT_PROFILE_TLS_SERVER);
	assert_int_equal(t.validity, 30 * 86400);
	assert_int_equal(t.pop, EST_POP_REQUIRED);
	assert_false(t.require_cn);
	assert_int_equal(t.key_types,
	                 EST_KEY_BIT(KEY_EC_P256) | EST_KEY_BIT(KEY_RSA_3072));
	assert_int_equal(enroll_template_format(&t, out, sizeof(out), &err), 0);
	assert_int_equal(enroll_template_parse("srv", out, &back, &err), 0);
	assert_memory_equal(&t, &back, sizeof(t));
}

static void
test_template_refusals(void **state)
{
	struct est_template t;
	struct error err = {{0}};
	const char *bad[] = {
	    "validity = 0\n",         "validity = 100y\n",
	    "validity = 4000d\n",     "profile = ocsp-responder\n",
	    "key-types = ec:p521\n",  "key-types = \n",
	    "pop = maybe\n",          "require-cn = perhaps\n",
	    "colour = blue\n",        "no equals sign\n",
	    "key-types = ec:p256\nkeygen = rsa:2048\n",
	};
	char buf[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", bad[i]);
		assert_int_equal(enroll_template_parse("x", buf, &t, &err), -1);
	}
	/* Comments and blank lines are fine; the default fills the rest. */
	snprintf(buf, sizeof(buf), "# a comment\n\npop = off\n");
	assert_int_equal(enroll_template_parse("x", buf, &t, &err), 0);
	assert_int_equal(t.pop, EST_POP_OFF);
	assert_int_equal(t.profile, CERT_PROFILE_TLS_CLIENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_hash_verify),
	    cmocka_unit_test(test_names_and_labels),
	    cmocka_unit_test(test_template_round_trip),
	    cmocka_unit_test(test_template_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
