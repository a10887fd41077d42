/*
 * log: categories and levels for every process of a node; see log.h.
 *
 * A line looks like
 *   2026-11-28T07:54:11.123Z psn1 est[4242] est INFO enrolled serial 5f...
 * and is written with a single write(2) on an O_APPEND descriptor, which
 * POSIX makes atomic with respect to other appenders for regular files, so
 * the CA service and the EST server can share one file.
 */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

/* Longest line we write; longer messages are cut with "..." at the end. */
#define LOG_LINE_MAX 4096
/* How often a process looks at the runtime levels file (ms). */
#define LOG_LEVELS_CHECK_MS 1000
/* Largest runtime levels file we read (a line per category is ~30 B). */
#define LOG_LEVELS_FILE_MAX 1024

static const char *const category_names[LOG_CATEGORY_COUNT] = {
	[LOG_MAIN] = "main",
	[LOG_EST] = "est",
	[LOG_PROVISIONING] = "provisioning",
	[LOG_CA_SERVICE] = "ca-service",
	[LOG_CA_SERVICE_CERT] = "ca-service-cert",
	[LOG_MESSAGING] = "messaging",
	[LOG_OCSP] = "ocsp",
};

static const char *const level_names[LOG_LEVEL_COUNT] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

static const char *const level_tags[LOG_LEVEL_COUNT] = {
	[LOG_LEVEL_ERROR] = "ERROR",
	[LOG_LEVEL_WARN] = "WARN",
	[LOG_LEVEL_INFO] = "INFO",
	[LOG_LEVEL_DEBUG] = "DEBUG",
};

static struct {
	char node[64];		/* node name, e.g. psn1 */
	char process[32];	/* process role, e.g. est */
	char path[PATH_MAX];	/* log file, "" when stderr only */
	int fd;			/* log file descriptor, -1 when none */
	bool to_stderr;		/* copy lines to stderr */
	/*
	 * The level in force, read by every thread (the EST workers);
	 * written only under `busy`: base[] unless the runtime levels
	 * file overrides it.
	 */
	_Atomic int level[LOG_CATEGORY_COUNT];
	int base[LOG_CATEGORY_COUNT];	  /* log_set_level(), log.level */
	int override[LOG_CATEGORY_COUNT]; /* the levels file; -1: none */
	bool levels_set;	/* base[] and override[] initialised */
	atomic_flag busy;	/* a thread is changing level[] */
	char levels_path[PATH_MAX]; /* dir/LOG_LEVELS_FILE, "" when none */
	_Atomic long long next_check; /* monotonic ms of the next look */
	bool levels_seen;	/* the file existed at the last look */
	struct stat levels_st;	/* ... as it was then */
} logger = { .node = "-", .process = "-", .fd = -1, .to_stderr = true,
	     .busy = ATOMIC_FLAG_INIT };

static void
levels_default(void)
{
	int i;

	if (logger.levels_set)
		return;
	for (i = 0; i < LOG_CATEGORY_COUNT; i++) {
		logger.base[i] = LOG_LEVEL_INFO;
		logger.override[i] = -1;
		atomic_store(&logger.level[i], LOG_LEVEL_INFO);
	}
	logger.levels_set = true;
}

/* level[] from base[] and override[]; the caller holds busy. */
static void
levels_apply(void)
{
	int i;

	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		atomic_store(&logger.level[i], logger.override[i] >= 0
		                                   ? logger.override[i]
		                                   : logger.base[i]);
}

static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
log_levels_parse(const char *text, int levels[LOG_CATEGORY_COUNT],
                 struct error *err)
{
	char line[128], cat[64], lvl[64], extra[2];
	const char *p = text, *nl;
	size_t n;
	int c, l, i, lineno = 0;

	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		levels[i] = -1;
	while (*p != '\0') {
		lineno++;
		nl = strchr(p, '\n');
		n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (n >= sizeof(line)) {
			error_set(err, "line %d too long", lineno);
			return -1;
		}
		memcpy(line, p, n);
		line[n] = '\0';
		p += n + (nl != NULL);
		if (line[0] == '#' || strspn(line, " \t") == n)
			continue;
		if (sscanf(line, "%63s %63s %1s", cat, lvl, extra) != 2 ||
		    (c = log_category_from_name(cat)) < 0 ||
		    (l = log_level_from_name(lvl)) < 0) {
			error_set(err, "line %d: not \"CATEGORY LEVEL\"",
			          lineno);
			return -1;
		}
		levels[c] = l;
	}
	return 0;
}

/*
 * Read the levels file again if it changed since the last look (a stat
 * a second at most): `pan log-level set` reaches every process of the
 * node this way, whatever loop it runs, without a signal or a restart.
 */
static void
levels_check(void)
{
	long long now = mono_ms(), due;
	struct stat st;
	char buf[LOG_LEVELS_FILE_MAX + 1];
	int lv[LOG_CATEGORY_COUNT], i, fd;
	struct error e = {{0}};
	bool exists, changed = false;
	ssize_t n;

	due = atomic_load(&logger.next_check);
	if (logger.levels_path[0] == '\0' || now < due ||
	    !atomic_compare_exchange_strong(&logger.next_check, &due,
	                                    now + LOG_LEVELS_CHECK_MS))
		return;
	if (atomic_flag_test_and_set(&logger.busy))
		return;
	exists = stat(logger.levels_path, &st) == 0;
	if (exists == logger.levels_seen &&
	    (!exists || (st.st_ino == logger.levels_st.st_ino &&
	                 st.st_size == logger.levels_st.st_size &&
	                 st.st_mtim.tv_sec == logger.levels_st.st_mtim.tv_sec &&
	                 st.st_mtim.tv_nsec ==
	                     logger.levels_st.st_mtim.tv_nsec)))
		goto out;
	logger.levels_seen = exists;
	if (exists)
		logger.levels_st = st;
	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		lv[i] = -1;
	if (exists) {
		if ((fd = open(logger.levels_path, O_RDONLY | O_CLOEXEC)) == -1)
			goto out;
		n = read(fd, buf, LOG_LEVELS_FILE_MAX);
		close(fd);
		if (n < 0)
			goto out;
		buf[n] = '\0';
		/* A bad file changes nothing (it is ours: say so once). */
		if (log_levels_parse(buf, lv, &e) == -1) {
			atomic_flag_clear(&logger.busy);
			log_warn(LOG_MAIN, "%s: %s; log levels unchanged",
			         logger.levels_path, e.msg);
			return;
		}
	}
	for (i = 0; i < LOG_CATEGORY_COUNT; i++) {
		changed = changed || lv[i] != logger.override[i];
		logger.override[i] = lv[i];
	}
	levels_apply();
out:
	atomic_flag_clear(&logger.busy);
	if (changed) {
		char desc[256];

		log_levels_describe(desc, sizeof(desc));
		log_info(LOG_MAIN, "log levels now: %s", desc);
	}
}

void
log_levels_describe(char *buf, size_t len)
{
	size_t n = 0;
	int i, k;

	buf[0] = '\0';
	for (i = 0; i < LOG_CATEGORY_COUNT && n < len; i++) {
		k = snprintf(buf + n, len - n, "%s%s=%s", i > 0 ? " " : "",
		             category_names[i],
		             level_names[atomic_load(&logger.level[i])]);
		if (k < 0)
			break;
		n += (size_t)k;
	}
}

int
log_levels_write(const char *dir, const int levels[LOG_CATEGORY_COUNT],
                 struct error *err)
{
	char path[PATH_MAX], tmp[PATH_MAX], buf[LOG_LEVELS_FILE_MAX];
	size_t n = 0;
	int i, k, fd = -1, rc = -1;
	bool any = false;

	if (snprintf(path, sizeof(path), "%s/%s", dir, LOG_LEVELS_FILE) >=
	        (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, LOG_LEVELS_FILE) >=
	        (int)sizeof(tmp)) {
		error_set(err, "path of the log levels file in %s too long",
		          dir);
		return -1;
	}
	k = snprintf(buf, sizeof(buf),
	             "# written by the node's daemon from `pan log-level "
	             "set`; read by every process of the node\n");
	n = (size_t)k;
	for (i = 0; i < LOG_CATEGORY_COUNT; i++) {
		if (levels[i] < 0 || levels[i] >= LOG_LEVEL_COUNT)
			continue;
		any = true;
		k = snprintf(buf + n, sizeof(buf) - n, "%s %s\n",
		             category_names[i], level_names[levels[i]]);
		n += (size_t)k;
	}
	if (!any) {
		if (unlink(path) == -1 && errno != ENOENT) {
			error_set(err, "cannot remove %s: %s", path,
			          strerror(errno));
			return -1;
		}
		return 0;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) ==
	    -1) {
		error_set(err, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (write(fd, buf, n) != (ssize_t)n || fsync(fd) == -1) {
		error_set(err, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) == -1) {
		fd = -1;
		error_set(err, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	/* Readers see the old file or the new one, never half of one. */
	if (rename(tmp, path) == -1) {
		error_set(err, "cannot rename %s to %s: %s", tmp, path,
		          strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	if (rc == -1)
		(void)unlink(tmp);
	return rc;
}

int
log_open(const char *node, const char *process, const char *dir,
    bool foreground, struct error *err)
{
	char path[PATH_MAX];
	int fd = -1;

	levels_default();
	if (dir != NULL) {
		if (snprintf(path, sizeof(path), "%s/%s.log", dir, node) >=
		    (int)sizeof(path)) {
			error_set(err, "log file path in %s too long", dir);
			return -1;
		}
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
		    0640);
		if (fd == -1) {
			error_set(err, "cannot open log file %s: %s", path,
			    strerror(errno));
			return -1;
		}
	}
	if (logger.fd != -1)
		close(logger.fd);
	logger.fd = fd;
	snprintf(logger.path, sizeof(logger.path), "%s",
	    dir != NULL ? path : "");
	snprintf(logger.node, sizeof(logger.node), "%s", node);
	snprintf(logger.process, sizeof(logger.process), "%s", process);
	logger.to_stderr = foreground || dir == NULL;
	/*
	 * The runtime levels of the node, read now and watched; read afresh
	 * (a forked process says which levels it runs with).
	 */
	while (atomic_flag_test_and_set(&logger.busy))
		; /* see log_set_level() */
	logger.levels_seen = false;
	memset(&logger.levels_st, 0, sizeof(logger.levels_st));
	for (int i = 0; i < LOG_CATEGORY_COUNT; i++)
		logger.override[i] = -1;
	levels_apply();
	atomic_flag_clear(&logger.busy);
	if (dir == NULL || snprintf(logger.levels_path,
	                            sizeof(logger.levels_path), "%s/%s", dir,
	                            LOG_LEVELS_FILE) >=
	                       (int)sizeof(logger.levels_path))
		logger.levels_path[0] = '\0';
	atomic_store(&logger.next_check, 0);
	levels_check();
	return 0;
}

void
log_close(void)
{
	if (logger.fd != -1)
		close(logger.fd);
	logger.fd = -1;
	logger.path[0] = '\0';
	logger.to_stderr = true;
}

const char *
log_path(void)
{
	return logger.path[0] != '\0' ? logger.path : NULL;
}

void
log_set_level(enum log_category cat, enum log_level level)
{
	levels_default();
	if ((unsigned)cat >= LOG_CATEGORY_COUNT ||
	    (unsigned)level >= LOG_LEVEL_COUNT)
		return;
	while (atomic_flag_test_and_set(&logger.busy))
		; /* a levels_check() in another thread: a few stat()s */
	logger.base[cat] = level;
	levels_apply();
	atomic_flag_clear(&logger.busy);
}

enum log_level
log_get_level(enum log_category cat)
{
	levels_default();
	if ((unsigned)cat >= LOG_CATEGORY_COUNT)
		return LOG_LEVEL_INFO;
	levels_check();
	return (enum log_level)atomic_load(&logger.level[cat]);
}

const char *
log_category_name(enum log_category cat)
{
	if ((unsigned)cat >= LOG_CATEGORY_COUNT)
		return "?";
	return category_names[cat];
}

const char *
log_level_name(enum log_level level)
{
	if ((unsigned)level >= LOG_LEVEL_COUNT)
		return "?";
	return level_names[level];
}

int
log_category_from_name(const char *name)
{
	int i;

	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		if (strcasecmp(name, category_names[i]) == 0)
			return i;
	return -1;
}

int
log_level_from_name(const char *name)
{
	int i;

	for (i = 0; i < LOG_LEVEL_COUNT; i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	/* The product and syslog both say "warning". */
	if (strcasecmp(name, "warning") == 0)
		return LOG_LEVEL_WARN;
	return -1;
}

int
log_set_level_by_name(const char *cat, const char *level, struct error *err)
{
	int c, l, i;

	if ((l = log_level_from_name(level)) < 0) {
		error_set(err, "unknown log level '%s' (error, warn, info, "
		    "debug)", level);
		return -1;
	}
	if (strcasecmp(cat, "all") == 0) {
		for (i = 0; i < LOG_CATEGORY_COUNT; i++)
			log_set_level(i, l);
		return 0;
	}
	if ((c = log_category_from_name(cat)) < 0) {
		error_set(err, "unknown log category '%s' (main, est, "
		    "provisioning, ca-service, ca-service-cert, messaging, "
		    "ocsp, all)", cat);
		return -1;
	}
	log_set_level(c, l);
	return 0;
}

bool
log_enabled(enum log_category cat, enum log_level level)
{
	return level <= log_get_level(cat);
}

static void
write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* nowhere left to report a logging failure */
		buf += n;
		len -= (size_t)n;
	}
}

void
log_vwrite(enum log_category cat, enum log_level level, const char *fmt,
    va_list ap)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	int saved_errno = errno;
	size_t n;
	int k;

	if (!log_enabled(cat, level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s[%ld] %s %s ",
	    ts.tv_nsec / 1000000, logger.node, logger.process,
	    (long)getpid(), log_category_name(cat),
	    level_tags[(unsigned)level < LOG_LEVEL_COUNT ? level : 0]);
	if (k > 0)
		n += (size_t)k;
	if (n < sizeof(line)) {
		k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (k > 0)
			n += (size_t)k;
	}
	if (n >= sizeof(line) - 1) {
		n = sizeof(line) - 1;
		memcpy(line + n - 4, "...", 3);
		n--;
	}
	/* One line per entry: a newline in a message would forge a line. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	if (logger.fd != -1)
		write_all(logger.fd, line, n);
	if (logger.to_stderr)
		write_all(STDERR_FILENO, line, n);
	errno = saved_errno;
}

void
log_write(enum log_category cat, enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(cat, level, fmt, ap);
	va_end(ap);
}

void
log_crypto(enum log_category cat, struct error *err, const char *call,
    const char *object)
{
	char msg[ERROR_MAX * 2];
	char one[256];
	const char *data, *func;
	unsigned long e;
	size_t n;
	int flags, count = 0;

	if (object != NULL)
		n = (size_t)snprintf(msg, sizeof(msg), "%s(%s) failed", call,
		    object);
	else
		n = (size_t)snprintf(msg, sizeof(msg), "%s failed", call);
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	while ((e = ERR_get_error_all(NULL, NULL, &func, &data, &flags)) !=
	    0) {
		ERR_error_string_n(e, one, sizeof(one));
		if (n < sizeof(msg) - 1) {
			int k = snprintf(msg + n, sizeof(msg) - n, "%s%s%s%s",
			    count == 0 ? ": " : "; ", one,
			    (flags & ERR_TXT_STRING) && data && *data ? ": "
								       : "",
			    (flags & ERR_TXT_STRING) && data ? data : "");
			if (k > 0)
				n += (size_t)k;
			if (n >= sizeof(msg))
				n = sizeof(msg) - 1;
		}
		count++;
	}
	if (count == 0 && n < sizeof(msg) - 1)
		snprintf(msg + n, sizeof(msg) - n, ": no OpenSSL error queued");
	log_error(cat, "%s", msg);
	error_set(err, "%s", msg);
}
