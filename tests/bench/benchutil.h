/*
 * benchutil: what every benchmark program of tests/bench/ needs: dying
 * with the program's name and OpenSSL's errors, clocks, and whole-number
 * options.
 */
#ifndef ISELAB_BENCHUTIL_H
#define ISELAB_BENCHUTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The program's name in messages; set it first thing in main(). */
extern const char *bench_prog;
/* Exit status of bench_die(); 2 unless the program sets another. */
extern int bench_die_status;

/* "<prog>: <message>", OpenSSL's error queue, exit(bench_die_status). */
void bench_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* CPU seconds this process used so far, all threads. */
double bench_cpu_s(void);
/* Monotonic seconds. */
double bench_now_s(void);
/* A whole number in [min, max], or exit 2 naming the option. */
long bench_parse_long(const char *s, const char *what, long min, long max);

/*
 * A failed request: counted in bench_errors always, the first few
 * printed with OpenSSL's last error (whose queue is cleared).
 */
extern atomic_long bench_errors;
void bench_fail(long idx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * --connect HOST:PORT or [V6]:PORT: the address to connect to, and the
 * host part (host, hostlen); numeric: no name lookup.  Dies when bad.
 */
void bench_resolve(const char *connect, bool numeric,
                   struct sockaddr_storage *peer, socklen_t *peerlen,
                   char *host, size_t hostlen);

/* The index of quantile q in n sorted values (n > 0). */
long bench_percentile_index(long n, double q);
/* Quantile q of n sorted values (any number type), 0 when n is 0. */
#define BENCH_PERCENTILE(sorted, n, q)                                        \
	((n) > 0 ? (double)(sorted)[bench_percentile_index((n), (q))] : 0.0)

#endif
