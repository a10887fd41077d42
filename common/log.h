/*
 * log: per-category, per-level logging for every process of a node.
 *
 * The categories are the product's debug categories (est, provisioning,
 * ca-service, ca-service-cert) plus our own (messaging, ocsp, and main for
 * everything else), so that "turn on est debug on psn1" means the same here
 * as in the product.  Each process of a node appends to the node's log file
 * in its data directory, one write(2) per line with O_APPEND so that lines
 * of concurrent processes never interleave; in the foreground the same line
 * also goes to stderr.
 */
#ifndef ISELAB_LOG_H
#define ISELAB_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct error;

enum log_category {
	LOG_MAIN,
	LOG_EST,
	LOG_PROVISIONING,
	LOG_CA_SERVICE,
	LOG_CA_SERVICE_CERT,
	LOG_MESSAGING,
	LOG_OCSP,
	LOG_CATEGORY_COUNT
};

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_COUNT
};

/*
 * Start logging for this process.  node names the node (pan1), process the
 * role within it (ca-signer, est).  dir NULL logs to stderr only; otherwise
 * lines go to dir/<node>.log (created 0640).  foreground also copies lines to
 * stderr.  Calling it again re-opens (after fork, or for log rotation).
 */
int log_open(const char *node, const char *process, const char *dir,
             bool foreground, struct error *err);
void log_close(void);

/* Path of the log file, or NULL when logging to stderr only. */
const char *log_path(void);

void log_set_level(enum log_category cat, enum log_level level);
enum log_level log_get_level(enum log_category cat);
/* "est"/"all" and "debug"; returns -1 with err set on an unknown name. */
int log_set_level_by_name(const char *cat, const char *level,
                          struct error *err);

/*
 * Runtime levels (`pan log-level set`, docs/cli.md): the node's daemon
 * writes them to LOG_LEVELS_FILE in the log directory, and every process
 * that logs there reads that file at log_open() and whenever it changed
 * (looked at once a second at most, from the logging calls themselves).
 * A category the file names takes its level from the file; the others
 * keep the level log_set_level() gave them (log.level).
 */
#define LOG_LEVELS_FILE "levels"
/*
 * Write levels (-1: not set) to dir/LOG_LEVELS_FILE atomically; none set
 * removes the file.  0 or -1 with err set.
 */
int log_levels_write(const char *dir, const int levels[LOG_CATEGORY_COUNT],
                     struct error *err);
/* "CATEGORY LEVEL" lines ('#' comments) into levels (-1: not named). */
int log_levels_parse(const char *text, int levels[LOG_CATEGORY_COUNT],
                     struct error *err);
/* The levels in force: "main=info est=debug ...". */
void log_levels_describe(char *buf, size_t len);

const char *log_category_name(enum log_category cat);
const char *log_level_name(enum log_level level);
/* Returns -1 for an unknown name. */
int log_category_from_name(const char *name);
int log_level_from_name(const char *name);

bool log_enabled(enum log_category cat, enum log_level level);

void log_write(enum log_category cat, enum log_level level, const char *fmt,
               ...) __attribute__((format(printf, 3, 4)));
void log_vwrite(enum log_category cat, enum log_level level, const char *fmt,
                va_list ap) __attribute__((format(printf, 3, 0)));

#define log_error(cat, ...) log_write((cat), LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(cat, ...)  log_write((cat), LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(cat, ...)  log_write((cat), LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(cat, ...)                                                    \
	do {                                                                   \
		if (log_enabled((cat), LOG_LEVEL_DEBUG))                       \
			log_write((cat), LOG_LEVEL_DEBUG, __VA_ARGS__);        \
	} while (0)

/*
 * Drain the whole OpenSSL error queue into one error line, naming the call
 * that failed and the object it worked on (a path, a subject, a serial), as
 * nginx does: "PEM_read_bio_PrivateKey(/d/ca.key) failed: <e1>; <e2>".
 * object may be NULL.  If err is given it receives the same text, so the
 * caller can hand the reason on.  Leaves the queue empty.
 */
void log_crypto(enum log_category cat, struct error *err, const char *call,
                const char *object);

#endif
