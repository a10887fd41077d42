/*
 * util: the small things every module needs and that no library gives us in
 * the shape we want: an error buffer that carries a human-readable reason back
 * to the caller, bounded file reads, crash-safe file writes, and the
 * whitespace-tolerant base64 that EST clients send (RFC 8951).
 */
#ifndef ISELAB_UTIL_H
#define ISELAB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Longest reason we carry back to a caller (an HTTP body, a CLI message). */
#define ERROR_MAX 512

/*
 * A reason for a failure, written once by the function that detected it and
 * shown by whoever talks to the user.  Every function that takes one accepts
 * NULL when the caller does not care.
 */
struct error {
	char msg[ERROR_MAX];
};

void error_set(struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the existing message: "context: old message". */
void error_prefix(struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void error_clear(struct error *err);

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Read a whole file, refusing one larger than max bytes.  The buffer is
 * NUL-terminated (not counted in *len) so text can be used as a string.
 * Returns NULL with err set.
 */
uint8_t *file_read(const char *path, size_t max, size_t *len,
                   struct error *err);

/*
 * Write a file so that a crash leaves either the old or the new content:
 * write to path.tmp, fsync, rename, fsync the directory.  mode is applied to
 * the new file before any byte is written (0600 for secrets).
 */
int file_write_atomic(const char *path, const void *buf, size_t len,
                      mode_t mode, struct error *err);

/* mkdir -p with mode for each created component. */
int dir_create(const char *path, mode_t mode, struct error *err);

bool file_exists(const char *path);

/*
 * Decode base64 (RFC 4648 section 4 alphabet).  Whitespace (space, tab, CR,
 * LF) anywhere is ignored, as RFC 8951 section 3.2 tells EST servers to accept
 * bodies with or without line breaks.  Padding is optional but must be
 * correct if present; any other character is an error.  Returns a malloc'd
 * buffer or NULL with err set.
 */
uint8_t *base64_decode(const char *in, size_t inlen, size_t *outlen,
                       struct error *err);

/*
 * Encode base64; line_len > 0 breaks lines every line_len characters with
 * CRLF (EST responses, RFC 7030 section 4.1.3 uses base64 with line breaks),
 * 0 gives one line.  The result is NUL-terminated and malloc'd.
 */
char *base64_encode(const uint8_t *in, size_t inlen, size_t line_len,
                    size_t *outlen);

/* Lower-case hex of a byte string into out (2*len+1 bytes). */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* Decode hex (either case); returns bytes written or -1. */
ssize_t hex_decode(const char *in, uint8_t *out, size_t outmax);

/* Zero memory that held a secret, in a way the compiler cannot drop. */
void secure_zero(void *p, size_t len);

/*
 * A secret (a passphrase, a hand-over secret) in memory of its own:
 * mlock'ed (never swapped; a failed mlock is only logged at debug, as an
 * unprivileged user may have no lock quota), MADV_DONTDUMP (never in a
 * core file), NUL-terminated; a fork keeps a copy.  secret_wipe() zeroes
 * and unmaps it (a zeroed struct secret is empty; wiping it is fine).
 */
struct secret {
	char *buf;
	size_t len; /* bytes of the secret */
	size_t map; /* bytes mapped at buf */
};
int secret_keep(struct secret *s, const void *data, size_t len,
                struct error *err);
/* A new random secret of n bytes, kept as 2n hex characters. */
int secret_random(struct secret *s, size_t n, struct error *err);
void secret_wipe(struct secret *s);

/* Current time in milliseconds, realtime and monotonic. */
int64_t time_now_ms(void);
int64_t time_mono_ms(void);

#endif
