/*
 * Unit tests for common/node.c: host names, the identity file, and its
 * refusal of a hand-edited file with a mistake.
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

#include "castore.h"
#include "enroll.h"
#include "keys.h"
#include "node.h"
#include "util.h"

static void
test_hostnames(void **state)
{
	const char *good[] = { "pan1", "psn-2", "a", "psn1.lab.example",
		"123", "A-b.C" };
	const char *bad[] = { "", "-pan", "pan-", "pan_1", "pan..lab",
		".pan", "pan.", "p n", "pän",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" };
	struct error err;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(good); i++)
		assert_int_equal(node_hostname_check(good[i], &err), 0);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(node_hostname_check(bad[i], &err), -1);
		assert_non_null(strstr(err.msg, "host name"));
	}
}

static void
test_identity_round_trip(void **state)
{
	char dir[] = "/tmp/test_node.XXXXXX", path[64];
	struct node_identity id = { 0 }, back;
	struct error err;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(node_identity_read(dir, &back, &err), -1);
	assert_non_null(strstr(err.msg, "holds no node"));

	snprintf(id.hostname, sizeof(id.hostname), "psn7");
	id.role = NODE_ROLE_PSN;
	id.ocsp_hierarchy = NODE_OCSP_LEGACY;
	id.created = 1700000000;
	assert_int_equal(node_new_deployment_id(id.deployment_id, &err), 0);
	assert_int_equal(strlen(id.deployment_id), NODE_DEPLOYMENT_ID_LEN);
	assert_int_equal(node_identity_write(dir, &id, &err), 0);
	assert_int_equal(node_identity_read(dir, &back, &err), 0);
	assert_string_equal(back.hostname, "psn7");
	assert_int_equal(back.role, NODE_ROLE_PSN);
	assert_int_equal(back.ocsp_hierarchy, NODE_OCSP_LEGACY);
	assert_string_equal(back.deployment_id, id.deployment_id);
	assert_int_equal(back.created, 1700000000);

	/* A hand edit with a typo is refused, naming the line. */
	snprintf(path, sizeof(path), "%s/node.conf", dir);
	fp = fopen(path, "a");
	assert_non_null(fp);
	fputs("[node]\nrole = pnn\n", fp);
	fclose(fp);
	assert_int_equal(node_identity_read(dir, &back, &err), -1);
	assert_non_null(strstr(err.msg, "node.conf"));
	unlink(path);
	rmdir(dir);
}

static void
test_hierarchy_names(void **state)
{
	enum node_ocsp_hierarchy h;
	struct error err;

	(void)state;
	assert_int_equal(node_ocsp_hierarchy_from_name("legacy", &h, &err), 0);
	assert_int_equal(h, NODE_OCSP_LEGACY);
	assert_int_equal(node_ocsp_hierarchy_from_name("rfc6960", &h, &err),
	    0);
	assert_int_equal(h, NODE_OCSP_RFC6960);
	assert_int_equal(node_ocsp_hierarchy_from_name("x", &h, &err), -1);
	assert_string_equal(node_role_name(NODE_ROLE_SAN), "san");
}

/*
 * Every ISELAB_ variable that is not a setting is in the list the runs'
 * config_load_env() ignores: exported in a shell, none stops a daemon.
 */
static void
test_env_not_settings(void **state)
{
	const char *const list[] = {NODE_ENV_NOT_SETTINGS};
	const char *const want[] = {NODE_PASSPHRASE_ENV, KEY_KDF_ITER_ENV,
	                            CASTORE_KEY_ENV, ENROLL_PASSWORD_ENV,
	                            "ISELAB_DATA_DIR", "ISELAB_BUILD_DIR"};
	size_t i, j;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(want); i++) {
		for (j = 0; j < ARRAY_SIZE(list); j++)
			if (strcmp(want[i], list[j]) == 0)
				break;
		if (j == ARRAY_SIZE(list))
			fail_msg("%s is not in NODE_ENV_NOT_SETTINGS", want[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostnames),
		cmocka_unit_test(test_identity_round_trip),
		cmocka_unit_test(test_hierarchy_names),
		cmocka_unit_test(test_env_not_settings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
