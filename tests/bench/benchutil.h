/*
 * benchutil: what every benchmark program of tests/bench/ needs: dying
 * with the program's name and OpenSSL's errors, clocks, and whole-number
 * options.
 */
#ifndef ISELAB_BENCHUTIL_H
#define ISELAB_BENCHUTIL_H

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

#endif
