/*
 * Unit tests for common/util.c: base64 as EST clients send it (RFC 8951),
 * bounded reads, atomic writes and the error buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "tmpdir.h"


static void
test_base64_round_trip(void **state)
{
	uint8_t in[256], *out;
	size_t n, len, outlen;
	char *enc;
	struct error err;

	(void)state;
	for (n = 0; n < sizeof(in); n++)
		in[n] = (uint8_t)(n * 7 + 3);
	for (n = 1; n < sizeof(in); n += 13) {
		enc = base64_encode(in, n, 0, &len);
		assert_non_null(enc);
		assert_int_equal(len, (n + 2) / 3 * 4);
		out = base64_decode(enc, len, &outlen, &err);
		assert_non_null(out);
		assert_int_equal(outlen, n);
		assert_memory_equal(out, in, n);
		free(out);
		free(enc);
	}
}

static void
test_base64_line_breaks(void **state)
{
	/* RFC 8951 3.2: accept base64 with or without line breaks. */
	const char *variants[] = {
		"SGVsbG8sIEVTVCB3b3JsZCE=",
		"SGVsbG8s\nIEVTVCB3\nb3JsZCE=\n",
		"SGVsbG8s\r\nIEVTVCB3\r\nb3JsZCE=\r\n",
		"  SGVsbG8sIEVT\tVCB3b3JsZCE",
	};
	struct error err;
	uint8_t *out;
	size_t i, n;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(variants); i++) {
		out = base64_decode(variants[i], strlen(variants[i]), &n,
		    &err);
		assert_non_null(out);
		assert_int_equal(n, 17);
		assert_memory_equal(out, "Hello, EST world!", 17);
		free(out);
	}
}

static void
test_base64_encode_breaks(void **state)
{
	uint8_t in[100] = { 0 };
	size_t len;
	char *enc;

	(void)state;
	enc = base64_encode(in, sizeof(in), 64, &len);
	assert_non_null(enc);
	/* 136 characters: two lines of 64 and one of 8, each with CRLF. */
	assert_int_equal(len, 136 + 3 * 2);
	assert_int_equal(enc[64], '\r');
	assert_int_equal(enc[65], '\n');
	assert_int_equal(enc[len - 1], '\n');
	free(enc);
}

static void
test_base64_bad(void **state)
{
	const char *bad[] = {
		"",		/* nothing */
		"   \r\n",	/* only whitespace */
		"SGVsbG8*",	/* bad character */
		"SGVsb",	/* 5 characters: truncated */
		"SGVsbG8=QQ==", /* data after padding */
		"SGVsbG8===",	/* too much padding */
		"SGVsbG9=",	/* non-zero trailing bits */
		"====",		/* padding only */
		"SGVs\0bG8=",	/* embedded NUL (length below covers it) */
	};
	size_t lens[ARRAY_SIZE(bad)];
	struct error err;
	size_t i, n;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		lens[i] = strlen(bad[i]);
	lens[ARRAY_SIZE(bad) - 1] = 9;
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		error_clear(&err);
		assert_null(base64_decode(bad[i], lens[i], &n, &err));
		assert_non_null(strstr(err.msg, "base64"));
	}
}

static void
test_hex(void **state)
{
	uint8_t in[] = { 0x00, 0x7f, 0xab, 0xff }, out[4];
	char s[9];

	(void)state;
	hex_encode(in, sizeof(in), s);
	assert_string_equal(s, "007fabff");
	assert_int_equal(hex_decode("007FABff", out, sizeof(out)), 4);
	assert_memory_equal(in, out, 4);
	assert_int_equal(hex_decode("007", out, sizeof(out)), -1);
	assert_int_equal(hex_decode("0g", out, sizeof(out)), -1);
	assert_int_equal(hex_decode("0011223344", out, sizeof(out)), -1);
}

static void
test_file_write_read(void **state)
{
	char path[128];
	struct error err;
	struct stat st;
	uint8_t *buf;
	size_t len;

	(void)state;
	snprintf(path, sizeof(path), "%s/a/b/secret", tmpdir);
	assert_int_equal(dir_create(path, 0700, &err), 0);
	assert_true(file_exists(path));
	snprintf(path, sizeof(path), "%s/a/b/secret/file", tmpdir);
	assert_int_equal(file_write_atomic(path, "abc", 3, 0600, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Overwrite keeps the mode asked for, whatever the umask. */
	assert_int_equal(file_write_atomic(path, "defg", 4, 0640, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	buf = file_read(path, 4, &len, &err);
	assert_non_null(buf);
	assert_int_equal(len, 4);
	assert_string_equal((char *)buf, "defg");
	free(buf);
	/* One byte over the limit is refused, and says so. */
	assert_null(file_read(path, 3, &len, &err));
	assert_non_null(strstr(err.msg, "limit"));
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_null(file_read(path, 100, &len, &err));
	assert_non_null(strstr(err.msg, "missing"));
	/* A directory is not a file. */
	assert_null(file_read(tmpdir, 100, &len, &err));
	assert_non_null(strstr(err.msg, "not a regular file"));
	/* The temporary file never lingers. */
	snprintf(path, sizeof(path), "%s/a/b/secret/file.tmp", tmpdir);
	assert_false(file_exists(path));
}

static void
test_error(void **state)
{
	struct error err;
	char big[2 * ERROR_MAX];

	(void)state;
	error_set(&err, "bad %s", "thing");
	error_prefix(&err, "while %s", "testing");
	assert_string_equal(err.msg, "while testing: bad thing");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	error_set(&err, "%s", big);
	assert_int_equal(strlen(err.msg), ERROR_MAX - 1);
	error_set(NULL, "ignored");
	error_clear(&err);
	assert_string_equal(err.msg, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_round_trip),
		cmocka_unit_test(test_base64_line_breaks),
		cmocka_unit_test(test_base64_encode_breaks),
		cmocka_unit_test(test_base64_bad),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_file_write_read),
		cmocka_unit_test(test_error),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
