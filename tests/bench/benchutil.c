/*
 * benchutil: shared by the benchmark programs (benchutil.h).
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/err.h>

#include "benchutil.h"

const char *bench_prog = "bench";
int bench_die_status = 2;

void
bench_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", bench_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	ERR_print_errors_fp(stderr);
	exit(bench_die_status);
}

double
bench_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) == -1)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double
bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long
bench_parse_long(const char *s, const char *what, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a number from %ld to %ld\n",
		        bench_prog, what, s, min, max);
		exit(2);
	}
	return v;
}

/* Failed requests printed before they are only counted. */
#define BENCH_ERRORS_SHOWN 5

atomic_long bench_errors;
static pthread_mutex_t errors_lock = PTHREAD_MUTEX_INITIALIZER;
static long errors_shown;

void
bench_fail(long idx, const char *fmt, ...)
{
	char msg[512];
	unsigned long e;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if ((e = ERR_peek_last_error()) != 0) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, " (%s)",
		         ERR_reason_error_string(e) != NULL
		             ? ERR_reason_error_string(e)
		             : "openssl error");
	}
	ERR_clear_error();
	atomic_fetch_add(&bench_errors, 1);
	pthread_mutex_lock(&errors_lock);
	if (errors_shown++ < BENCH_ERRORS_SHOWN)
		fprintf(stderr, "%s: request %ld: %s\n", bench_prog, idx, msg);
	pthread_mutex_unlock(&errors_lock);
}

void
bench_resolve(const char *connect, bool numeric, struct sockaddr_storage *peer,
              socklen_t *peerlen, char *host, size_t hostlen)
{
	struct addrinfo hints, *ai = NULL;
	const char *colon, *port;
	size_t hl;

	if ((colon = strrchr(connect, ':')) == NULL)
		bench_die("--connect %s: HOST:PORT expected", connect);
	port = colon + 1;
	hl = (size_t)(colon - connect);
	if (hl >= 2 && connect[0] == '[' && connect[hl - 1] == ']' &&
	    hl - 2 < hostlen) {
		memcpy(host, connect + 1, hl - 2);
		host[hl - 2] = '\0';
	} else if (hl > 0 && hl < hostlen) {
		memcpy(host, connect, hl);
		host[hl] = '\0';
	} else
		bench_die("--connect %s: HOST:PORT expected", connect);
	(void)bench_parse_long(port, "--connect port", 1, 65535);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (numeric)
		hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
		bench_die("--connect %s: %s", connect,
		          numeric ? "a numeric address and port expected"
		                  : "cannot resolve it");
	memcpy(peer, ai->ai_addr, ai->ai_addrlen);
	*peerlen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

long
bench_percentile_index(long n, double q)
{
	long i = (long)(q * (double)n + 0.5) - 1;

	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return i;
}
