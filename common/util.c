/*
 * util: error buffers, bounded file reads, crash-safe writes, base64, hex.
 * See util.h for why each exists.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void
error_set(struct error *err, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

void
error_prefix(struct error *err, const char *fmt, ...)
{
	char prefix[ERROR_MAX], old[ERROR_MAX];
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	if (old[0] == '\0')
		snprintf(err->msg, sizeof(err->msg), "%s", prefix);
	else
		snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
}

void
error_clear(struct error *err)
{
	if (err != NULL)
		err->msg[0] = '\0';
}

uint8_t *
file_read(const char *path, size_t max, size_t *len, struct error *err)
{
	uint8_t *buf = NULL;
	struct stat st;
	size_t got = 0;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		error_set(err, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1) {
		error_set(err, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		error_set(err, "%s: not a regular file", path);
		goto out;
	}
	if ((uintmax_t)st.st_size > max) {
		error_set(err, "%s: %jd bytes is over the limit of %zu", path,
		    (intmax_t)st.st_size, max);
		goto out;
	}
	/* One byte more than the limit tells us if the file grew meanwhile. */
	if ((buf = malloc(max + 1)) == NULL) {
		error_set(err, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		n = read(fd, buf + got, max + 1 - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			error_set(err, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > max) {
			error_set(err, "%s: over the limit of %zu bytes", path,
			    max);
			goto fail;
		}
	}
	buf[got] = '\0';
	*len = got;
	close(fd);
	return buf;
fail:
	free(buf);
	buf = NULL;
out:
	close(fd);
	return buf;
}

static int
fsync_dir_of(const char *path, struct error *err)
{
	char copy[PATH_MAX];
	int fd, rc = 0;

	if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy)) {
		error_set(err, "%s: path too long", path);
		return -1;
	}
	if ((fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1) {
		error_set(err, "%s: %s", copy, strerror(errno));
		return -1;
	}
	if (fsync(fd) == -1) {
		error_set(err, "fsync(%s): %s", copy, strerror(errno));
		rc = -1;
	}
	close(fd);
	return rc;
}

int
file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode,
    struct error *err)
{
	char tmp[PATH_MAX];
	const uint8_t *p = buf;
	size_t done = 0;
	ssize_t n;
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		error_set(err, "%s: path too long", path);
		return -1;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd == -1) {
		error_set(err, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	/* open() honours the umask; a secret must get exactly mode. */
	if (fchmod(fd, mode) == -1) {
		error_set(err, "fchmod(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	while (done < len) {
		n = write(fd, p + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			error_set(err, "write(%s): %s", tmp, strerror(errno));
			goto fail;
		}
		done += (size_t)n;
	}
	if (fsync(fd) == -1) {
		error_set(err, "fsync(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		error_set(err, "close(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		error_set(err, "rename(%s, %s): %s", tmp, path,
		    strerror(errno));
		goto fail;
	}
	return fsync_dir_of(path, err);
fail:
	if (fd != -1)
		close(fd);
	(void)unlink(tmp);
	return -1;
}

int
dir_create(const char *path, mode_t mode, struct error *err)
{
	char copy[PATH_MAX];
	char *p;

	if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy)) {
		error_set(err, "%s: path too long", path);
		return -1;
	}
	for (p = copy + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, mode) == -1 && errno != EEXIST) {
			error_set(err, "mkdir(%s): %s", copy, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	if (mkdir(copy, mode) == -1 && errno != EEXIST) {
		error_set(err, "mkdir(%s): %s", copy, strerror(errno));
		return -1;
	}
	return 0;
}

bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

uint8_t *
base64_decode(const char *in, size_t inlen, size_t *outlen, struct error *err)
{
	uint8_t *out;
	uint32_t acc = 0;
	size_t i, o = 0, nchars = 0, npad = 0;
	int v;

	if ((out = malloc(inlen / 4 * 3 + 3)) == NULL) {
		error_set(err, "base64: out of memory");
		return NULL;
	}
	for (i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			npad++;
			continue;
		}
		if (npad > 0) {
			error_set(err, "base64: data after padding at offset "
			    "%zu", i);
			goto fail;
		}
		if ((v = b64_value(c)) < 0) {
			error_set(err, "base64: invalid character 0x%02x at "
			    "offset %zu", c, i);
			goto fail;
		}
		acc = (acc << 6) | (uint32_t)v;
		if (++nchars % 4 == 0) {
			out[o++] = (uint8_t)(acc >> 16);
			out[o++] = (uint8_t)(acc >> 8);
			out[o++] = (uint8_t)acc;
			acc = 0;
		}
	}
	switch (nchars % 4) {
	case 0:
		if (npad != 0) {
			error_set(err, "base64: unexpected padding");
			goto fail;
		}
		break;
	case 1:
		error_set(err, "base64: truncated input (%zu characters)",
		    nchars);
		goto fail;
	case 2:
		if (npad != 0 && npad != 2) {
			error_set(err, "base64: wrong padding");
			goto fail;
		}
		if (acc & 0xf) {
			error_set(err, "base64: non-zero trailing bits");
			goto fail;
		}
		out[o++] = (uint8_t)(acc >> 4);
		break;
	case 3:
		if (npad != 0 && npad != 1) {
			error_set(err, "base64: wrong padding");
			goto fail;
		}
		if (acc & 0x3) {
			error_set(err, "base64: non-zero trailing bits");
			goto fail;
		}
		out[o++] = (uint8_t)(acc >> 10);
		out[o++] = (uint8_t)(acc >> 2);
		break;
	}
	if (o == 0) {
		error_set(err, "base64: no data");
		goto fail;
	}
	*outlen = o;
	return out;
fail:
	free(out);
	return NULL;
}

char *
base64_encode(const uint8_t *in, size_t inlen, size_t line_len,
    size_t *outlen)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t chars = (inlen + 2) / 3 * 4;
	size_t breaks = line_len ? (chars + line_len - 1) / line_len : 0;
	size_t i, o = 0, col = 0;
	char *out;
	char quad[4];
	int k;

	if ((out = malloc(chars + 2 * breaks + 1)) == NULL)
		return NULL;
	for (i = 0; i < inlen; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t left = inlen - i;

		if (left > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		quad[0] = tab[(v >> 18) & 63];
		quad[1] = tab[(v >> 12) & 63];
		quad[2] = left > 1 ? tab[(v >> 6) & 63] : '=';
		quad[3] = left > 2 ? tab[v & 63] : '=';
		for (k = 0; k < 4; k++) {
			out[o++] = quad[k];
			if (line_len && ++col == line_len) {
				out[o++] = '\r';
				out[o++] = '\n';
				col = 0;
			}
		}
	}
	if (line_len && col != 0) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	out[o] = '\0';
	if (outlen != NULL)
		*outlen = o;
	return out;
}

void
hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

ssize_t
hex_decode(const char *in, uint8_t *out, size_t outmax)
{
	size_t n = strlen(in), i;
	int hi, lo;

	if (n % 2 != 0 || n / 2 > outmax)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if ((hi = hex_value(in[2 * i])) < 0 ||
		    (lo = hex_value(in[2 * i + 1])) < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (ssize_t)(n / 2);
}

void
secure_zero(void *p, size_t len)
{
	if (p != NULL)
		explicit_bzero(p, len);
}

int64_t
time_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
time_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Largest secret kept (a passphrase is at most 1 KiB, keys.h). */
#define SECRET_MAX 4096

int
secret_keep(struct secret *s, const void *data, size_t len, struct error *err)
{
	long page = sysconf(_SC_PAGESIZE);

	memset(s, 0, sizeof(*s));
	if (len > SECRET_MAX) {
		error_set(err, "secret too long");
		return -1;
	}
	s->map = (size_t)(page > 0 ? page : 4096);
	while (s->map < len + 1)
		s->map *= 2;
	s->buf = mmap(NULL, s->map, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->buf == MAP_FAILED) {
		memset(s, 0, sizeof(*s));
		error_set(err, "mmap: %s", strerror(errno));
		return -1;
	}
	/* The quota may be 0 for an unprivileged user: still kept. */
	(void)mlock(s->buf, s->map);
	(void)madvise(s->buf, s->map, MADV_DONTDUMP);
	if (len > 0)
		memcpy(s->buf, data, len);
	s->buf[len] = '\0';
	s->len = len;
	return 0;
}

int
secret_random(struct secret *s, size_t n, struct error *err)
{
	uint8_t raw[SECRET_MAX / 2];
	char hex[SECRET_MAX + 1];
	int rc;

	if (n == 0 || n > sizeof(raw) / 2) {
		error_set(err, "bad secret size %zu", n);
		return -1;
	}
	if (getrandom(raw, n, 0) != (ssize_t)n) {
		error_set(err, "getrandom: %s", strerror(errno));
		return -1;
	}
	hex_encode(raw, n, hex);
	rc = secret_keep(s, hex, 2 * n, err);
	secure_zero(raw, sizeof(raw));
	secure_zero(hex, sizeof(hex));
	return rc;
}

void
secret_wipe(struct secret *s)
{
	if (s->buf == NULL)
		return;
	secure_zero(s->buf, s->map);
	(void)munlock(s->buf, s->map);
	(void)munmap(s->buf, s->map);
	memset(s, 0, sizeof(*s));
}
