/*
 * Unit tests for common/log.c: levels per category, the line format, the log
 * file, and draining the OpenSSL error queue.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "log.h"
#include "util.h"

static char tmpdir[64];
static char logfile[128];

static int
setup(void **state)
{
	struct error err;
	int i;

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_log.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(logfile, sizeof(logfile), "%s/node1.log", tmpdir);
	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		log_set_level(i, LOG_LEVEL_INFO);
	return log_open("node1", "tester", tmpdir, false, &err);
}

static int
teardown(void **state)
{
	(void)state;
	log_close();
	unlink(logfile);
	return rmdir(tmpdir);
}

/* The whole log file as a string (freed by the caller). */
static char *
slurp(void)
{
	struct error err;
	size_t len;

	return (char *)file_read(logfile, 1 << 20, &len, &err);
}

static void
test_names(void **state)
{
	(void)state;
	assert_int_equal(log_category_from_name("est"), LOG_EST);
	assert_int_equal(log_category_from_name("ca-service-cert"),
	    LOG_CA_SERVICE_CERT);
	assert_int_equal(log_category_from_name("provisioning"),
	    LOG_PROVISIONING);
	assert_int_equal(log_category_from_name("OCSP"), LOG_OCSP);
	assert_int_equal(log_category_from_name("nope"), -1);
	assert_int_equal(log_level_from_name("debug"), LOG_LEVEL_DEBUG);
	assert_int_equal(log_level_from_name("warning"), LOG_LEVEL_WARN);
	assert_int_equal(log_level_from_name("loud"), -1);
	assert_string_equal(log_category_name(LOG_CA_SERVICE), "ca-service");
}

static void
test_levels_per_category(void **state)
{
	struct error err;
	char *s;

	(void)state;
	log_debug(LOG_EST, "hidden-before");
	assert_int_equal(log_set_level_by_name("est", "debug", &err), 0);
	log_debug(LOG_EST, "shown-est-debug");
	log_debug(LOG_OCSP, "hidden-ocsp-debug");
	log_info(LOG_OCSP, "shown-ocsp-info");
	assert_int_equal(log_set_level_by_name("all", "error", &err), 0);
	log_warn(LOG_MESSAGING, "hidden-warn");
	log_error(LOG_MESSAGING, "shown-error");
	assert_int_equal(log_set_level_by_name("bogus", "debug", &err), -1);
	assert_non_null(strstr(err.msg, "bogus"));
	assert_int_equal(log_set_level_by_name("est", "shouty", &err), -1);
	assert_non_null(strstr(err.msg, "shouty"));

	s = slurp();
	assert_non_null(s);
	assert_null(strstr(s, "hidden"));
	assert_non_null(strstr(s, "shown-est-debug"));
	assert_non_null(strstr(s, " est DEBUG shown-est-debug"));
	assert_non_null(strstr(s, " ocsp INFO shown-ocsp-info"));
	assert_non_null(strstr(s, " messaging ERROR shown-error"));
	assert_non_null(strstr(s, " node1 tester["));
	free(s);
}

static void
test_one_line_per_entry(void **state)
{
	char *s, *p;
	int lines = 0;

	(void)state;
	/* A newline in a message (say, from a CSR subject) must not forge
	 * a second log line. */
	log_error(LOG_EST, "subject CN=x\n2026-01-01T00:00:00Z forged");
	s = slurp();
	assert_non_null(s);
	for (p = s; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 1);
	free(s);
}

static void
test_long_line_cut(void **state)
{
	char *big, *s;

	(void)state;
	big = malloc(10000);
	assert_non_null(big);
	memset(big, 'y', 9999);
	big[9999] = '\0';
	log_error(LOG_MAIN, "%s", big);
	s = slurp();
	assert_non_null(s);
	assert_true(strlen(s) < 4200);
	assert_non_null(strstr(s, "...\n"));
	free(s);
	free(big);
}

static void
test_crypto_drains_queue(void **state)
{
	struct error err;
	BIO *bio;
	char *s;

	(void)state;
	/* Make OpenSSL queue several errors. */
	bio = BIO_new_mem_buf("-----BEGIN PRIVATE KEY-----\nZm9v\n"
			      "-----END PRIVATE KEY-----\n", -1);
	assert_null(PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL));
	BIO_free(bio);
	assert_int_not_equal(ERR_peek_error(), 0);
	log_crypto(LOG_CA_SERVICE, &err, "PEM_read_bio_PrivateKey",
	    "/d/ca.key");
	assert_int_equal(ERR_peek_error(), 0);
	assert_non_null(
	    strstr(err.msg, "PEM_read_bio_PrivateKey(/d/ca.key) failed: "));
	s = slurp();
	assert_non_null(s);
	assert_non_null(strstr(s, "ca-service ERROR PEM_read_bio_PrivateKey("));
	free(s);
	/* An empty queue is said, not left blank. */
	log_crypto(LOG_CA_SERVICE, &err, "X509_sign", NULL);
	assert_non_null(strstr(err.msg, "no OpenSSL error queued"));
}

static void
test_concurrent_appenders(void **state)
{
	/* Two processes share one node log: no line may be torn. */
	enum { WRITERS = 4, LINES = 500 };
	char *s, *line, *save = NULL;
	pid_t pids[WRITERS];
	int i, j, st, count = 0;

	(void)state;
	for (i = 0; i < WRITERS; i++) {
		if ((pids[i] = fork()) == 0) {
			for (j = 0; j < LINES; j++)
				log_info(LOG_MAIN, "writer-%d line-%d %0200d",
				    i, j, 0);
			_exit(0);
		}
		assert_true(pids[i] > 0);
	}
	for (i = 0; i < WRITERS; i++) {
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	s = slurp();
	assert_non_null(s);
	for (line = strtok_r(s, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		assert_non_null(strstr(line, " main INFO writer-"));
		assert_int_equal(strlen(strrchr(line, ' ') + 1), 200);
		count++;
	}
	assert_int_equal(count, WRITERS * LINES);
	free(s);
}

static void
test_stderr_only(void **state)
{
	struct error err;

	(void)state;
	assert_int_equal(log_open("node1", "tester", NULL, true, &err), 0);
	assert_null(log_path());
	log_info(LOG_MAIN, "to stderr");
	assert_int_equal(log_open("node1", "tester", "/nonexistent/dir",
			     false, &err),
	    -1);
	assert_non_null(strstr(err.msg, "/nonexistent/dir/node1.log"));
	assert_int_equal(log_open("node1", "tester", tmpdir, false, &err), 0);
	assert_string_equal(log_path(), logfile);
}

/* Each test starts with an empty file and every category at info. */
static int
truncate_log(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		log_set_level(i, LOG_LEVEL_INFO);
	return truncate(logfile, 0);
}

/* The runtime levels file (`pan log-level set`): written, parsed, taken. */
static void
test_runtime_levels_file(void **state)
{
	int lv[LOG_CATEGORY_COUNT], i;
	struct error err;
	char path[160], desc[256];

	(void)state;
	assert_int_equal(log_levels_parse("# c\nest debug\n\nocsp warn\n", lv,
	                                  &err),
	                 0);
	assert_int_equal(lv[LOG_EST], LOG_LEVEL_DEBUG);
	assert_int_equal(lv[LOG_OCSP], LOG_LEVEL_WARN);
	assert_int_equal(lv[LOG_MAIN], -1);
	assert_int_equal(log_levels_parse("est\n", lv, &err), -1);
	assert_int_equal(log_levels_parse("est loud\n", lv, &err), -1);
	assert_int_equal(log_levels_parse("nope debug\n", lv, &err), -1);
	assert_int_equal(log_levels_parse("est debug extra\n", lv, &err), -1);

	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		lv[i] = -1;
	lv[LOG_EST] = LOG_LEVEL_DEBUG;
	assert_int_equal(log_levels_write(tmpdir, lv, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, LOG_LEVELS_FILE);
	assert_int_equal(access(path, F_OK), 0);
	/* Read at log_open(); the file wins over log_set_level(). */
	assert_int_equal(log_open("node1", "tester", tmpdir, false, &err), 0);
	assert_int_equal(log_get_level(LOG_EST), LOG_LEVEL_DEBUG);
	assert_int_equal(log_get_level(LOG_OCSP), LOG_LEVEL_INFO);
	log_set_level(LOG_EST, LOG_LEVEL_ERROR);
	assert_int_equal(log_get_level(LOG_EST), LOG_LEVEL_DEBUG);
	log_levels_describe(desc, sizeof(desc));
	assert_non_null(strstr(desc, "est=debug"));
	assert_non_null(strstr(desc, "ocsp=info"));
	/* Nothing set: no file, the base level again. */
	lv[LOG_EST] = -1;
	assert_int_equal(log_levels_write(tmpdir, lv, &err), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(log_open("node1", "tester", tmpdir, false, &err), 0);
	assert_int_equal(log_get_level(LOG_EST), LOG_LEVEL_ERROR);
	log_set_level(LOG_EST, LOG_LEVEL_INFO);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_names, truncate_log),
		cmocka_unit_test_setup(test_levels_per_category, truncate_log),
		cmocka_unit_test_setup(test_one_line_per_entry, truncate_log),
		cmocka_unit_test_setup(test_long_line_cut, truncate_log),
		cmocka_unit_test_setup(test_crypto_drains_queue, truncate_log),
		cmocka_unit_test_setup(test_concurrent_appenders,
		    truncate_log),
		cmocka_unit_test_setup(test_stderr_only, truncate_log),
		cmocka_unit_test_setup(test_runtime_levels_file, truncate_log),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
