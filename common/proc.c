/*
 * proc: forking and reaping named service processes, the pid file, signals
 * as a descriptor, the data directory's ipc:// sockets and the control
 * socket's two ends; see proc.h.
 *
 * Why a pid file with flock() rather than O_EXCL alone: a daemon killed
 * with SIGKILL leaves its pid file behind, and a pid can be reused by an
 * unrelated process, so "the file exists" and "the pid is alive" both lie
 * after a crash.  A lock held on the open file is released by the kernel
 * when its process dies, however it dies: the lock is the truth and the
 * pid in the file is only for the message.
 *
 * Why proc_ipc_claim(): libzmq's ipc listener unlinks whatever file is at
 * the path before it binds, so a second daemon started by mistake would
 * silently steal the first one's socket.  We test the file with a plain
 * connect(2) first: refused means a dead daemon's leftover, accepted means
 * a live one.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "log.h"
#include "util.h"

/* Longest pid file content we read: a pid and a newline. */
#define PROC_PIDFILE_READ_MAX 32
/* Times we retry when the pid file is replaced under us while locking. */
#define PROC_PIDFILE_TRIES 3
/* How often proc_stop() looks whether the child has ended. */
#define PROC_STOP_POLL_MS 10
/* Highest descriptor the close loop visits when close_range(2) fails. */
#define PROC_FD_SCAN_MAX 65536
/* Longest node name we remember for re-opening logs in children. */
#define PROC_LOG_NODE_MAX 64

/* How this process opened its log, to re-open it the same in children. */
static struct {
	bool set;                        /* proc_log_open() was called */
	char node[PROC_LOG_NODE_MAX];    /* node name, e.g. pan1 */
	char dir[PATH_MAX];              /* log directory, "" for stderr only */
	bool foreground;                 /* copy lines to stderr */
	char process[PROC_NAME_MAX + 1]; /* current process name */
} proc_log;

/* The pid file this process holds, if any. */
static struct {
	int fd;              /* locked descriptor, -1 when none */
	pid_t owner;         /* the process that locked it (not a child) */
	char path[PATH_MAX]; /* D/run.pid */
} pidfile = {.fd = -1};

int
proc_log_open(const char *node, const char *process, const char *dir,
              bool foreground, struct error *err)
{
	if (log_open(node, process, dir, foreground, err) == -1)
		return -1;
	proc_log.set = true;
	snprintf(proc_log.node, sizeof(proc_log.node), "%s", node);
	snprintf(proc_log.dir, sizeof(proc_log.dir), "%s",
	         dir != NULL ? dir : "");
	proc_log.foreground = foreground;
	snprintf(proc_log.process, sizeof(proc_log.process), "%s", process);
	return 0;
}

/* Is stderr somewhere a person may read (not closed, not /dev/null)? */
static bool
stderr_is_live(void)
{
	struct stat sb, null;

	if (fstat(STDERR_FILENO, &sb) == -1)
		return false;
	if (stat("/dev/null", &null) == 0 && S_ISCHR(sb.st_mode) &&
	    sb.st_rdev == null.st_rdev)
		return false;
	return true;
}

/*
 * Re-open logging under a new process name.  Without a remembered
 * identity, take the node and directory from the log file's path
 * (dir/node.log, log.h).
 */
static void
proc_log_reopen(const char *process)
{
	char path[PATH_MAX], name[PROC_NAME_MAX + 1], *slash, *dot;
	const char *p;

	/* process may be proc_log.process itself. */
	snprintf(name, sizeof(name), "%s", process);
	snprintf(proc_log.process, sizeof(proc_log.process), "%s", name);
	process = proc_log.process;
	if (proc_log.set) {
		(void)log_open(proc_log.node, process,
		               proc_log.dir[0] != '\0' ? proc_log.dir : NULL,
		               proc_log.foreground, NULL);
		return;
	}
	if ((p = log_path()) == NULL) {
		(void)log_open("-", process, NULL, true, NULL);
		return;
	}
	snprintf(path, sizeof(path), "%s", p);
	if ((slash = strrchr(path, '/')) == NULL ||
	    (dot = strrchr(slash, '.')) == NULL || strcmp(dot, ".log") != 0)
		return;
	*slash = '\0';
	*dot = '\0';
	(void)log_open(slash + 1, process, path[0] != '\0' ? path : "/",
	               stderr_is_live(), NULL);
}

int
proc_fork(const char *name, int (*fn)(void *arg), void *arg, pid_t *pid,
          struct error *err)
{
	sigset_t none;
	pid_t parent = getpid(), child;
	int rc;

	*pid = -1;
	if (name == NULL || *name == '\0' || strlen(name) > PROC_NAME_MAX) {
		error_set(err, "process name must be 1 to %d bytes",
		          PROC_NAME_MAX);
		return -1;
	}
	/* Buffered output would be written by both processes. */
	fflush(stdout);
	fflush(stderr);
	if ((child = fork()) == -1) {
		error_set(err, "fork %s: %s", name, strerror(errno));
		log_error(LOG_MAIN, "fork %s: %s", name, strerror(errno));
		return -1;
	}
	if (child > 0) {
		*pid = child;
		log_debug(LOG_MAIN, "started %s (pid %ld)", name, (long)child);
		return 0;
	}

	/* Child. */
	(void)prctl(PR_SET_NAME, name, 0, 0, 0);
	/* Die with the parent rather than hold keys for nobody. */
	(void)prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
	if (getppid() != parent)
		_exit(1);
	/*
	 * The parent may have blocked signals for its signalfd; the child
	 * starts with none blocked, so SIGTERM ends it until it sets up
	 * its own signal handling.
	 */
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	/* The pid file lock belongs to the parent alone. */
	if (pidfile.fd != -1) {
		close(pidfile.fd);
		pidfile.fd = -1;
	}
	proc_log_reopen(name);
	rc = fn(arg);
	fflush(stdout);
	fflush(stderr);
	_exit(rc < 0 ? 1 : rc & 0xff);
}

static int
int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Close [from, to], by close_range(2) or one by one where it is missing. */
static void
close_span(unsigned int from, unsigned int to)
{
	unsigned int fd;

	if (from > to)
		return;
	if (close_range(from, to, 0) == 0)
		return;
	if (to > PROC_FD_SCAN_MAX)
		to = PROC_FD_SCAN_MAX;
	for (fd = from; fd <= to; fd++)
		(void)close((int)fd);
}

int
proc_close_fds(const int *keep, size_t nkeep, struct error *err)
{
	int *sorted = NULL;
	unsigned int from = 3;
	size_t i, n = nkeep;

	/* One more slot: the pid file lock of the process that holds it. */
	if ((sorted = calloc(nkeep + 1, sizeof(*sorted))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	if (nkeep > 0)
		memcpy(sorted, keep, nkeep * sizeof(*sorted));
	if (pidfile.fd != -1 && pidfile.owner == getpid())
		sorted[n++] = pidfile.fd;
	qsort(sorted, n, sizeof(*sorted), int_cmp);
	/*
	 * Close the log through its module first: once its number is
	 * reused, log_open() would close the new descriptor as the old one.
	 */
	log_close();
	for (i = 0; i < n; i++) {
		if (sorted[i] < (int)from)
			continue;
		close_span(from, (unsigned int)sorted[i] - 1);
		from = (unsigned int)sorted[i] + 1;
	}
	close_span(from, ~0U);
	free(sorted);
	if (pidfile.fd != -1 && pidfile.owner != getpid())
		pidfile.fd = -1;
	/* The log's descriptor went with the others. */
	proc_log_reopen(proc_log.process[0] != '\0' ? proc_log.process
	                                            : "main");
	return 0;
}

/* acme-client's wording, with the pid for whoever reads the log. */
static void
log_ending(const char *name, pid_t pid, int status)
{
	if (WIFSIGNALED(status))
		log_warn(LOG_MAIN, "%s terminated signal %d (pid %ld)", name,
		         WTERMSIG(status), (long)pid);
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		log_warn(LOG_MAIN, "%s exited with status %d (pid %ld)", name,
		         WEXITSTATUS(status), (long)pid);
	else
		log_info(LOG_MAIN, "%s exited (pid %ld)", name, (long)pid);
}

int
proc_reap(pid_t *pids, const char *const *names, size_t n, int *statuses)
{
	const char *name;
	size_t i;
	int status, ended = 0;
	pid_t r;

	for (i = 0; i < n; i++) {
		if (pids[i] <= 0)
			continue;
		name = names != NULL && names[i] != NULL ? names[i] : "child";
		do
			r = waitpid(pids[i], &status, WNOHANG);
		while (r == -1 && errno == EINTR);
		if (r == 0)
			continue;
		if (r == -1 && errno != ECHILD) {
			log_error(LOG_MAIN, "waitpid %s (pid %ld): %s", name,
			          (long)pids[i], strerror(errno));
			return -1;
		}
		if (r == -1) {
			/* Reaped by someone else: gone all the same. */
			log_warn(LOG_MAIN, "%s (pid %ld) is gone", name,
			         (long)pids[i]);
			status = 0;
		} else
			log_ending(name, pids[i], status);
		if (statuses != NULL)
			statuses[i] = status;
		pids[i] = 0;
		ended++;
	}
	return ended;
}

static int
wait_code(int status)
{
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int
proc_stop(pid_t pid, const char *name, int timeout_ms, struct error *err)
{
	struct timespec ts = {0, PROC_STOP_POLL_MS * 1000000L};
	int64_t deadline;
	int status;
	pid_t r;

	if (pid <= 0) {
		error_set(err, "no process to stop");
		return -1;
	}
	if (name == NULL)
		name = "child";
	if (kill(pid, SIGTERM) == -1 && errno != ESRCH) {
		error_set(err, "kill %s (pid %ld): %s", name, (long)pid,
		          strerror(errno));
		return -1;
	}
	deadline = time_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r == -1 && errno != EINTR) {
			error_set(err, "waitpid %s (pid %ld): %s", name,
			          (long)pid, strerror(errno));
			return -1;
		}
		if (time_mono_ms() >= deadline) {
			log_warn(LOG_MAIN,
			         "%s (pid %ld) did not stop within %d ms; "
			         "killing it",
			         name, (long)pid, timeout_ms);
			(void)kill(pid, SIGKILL);
			do
				r = waitpid(pid, &status, 0);
			while (r == -1 && errno == EINTR);
			if (r == -1) {
				error_set(err, "waitpid %s (pid %ld): %s", name,
				          (long)pid, strerror(errno));
				return -1;
			}
			break;
		}
		nanosleep(&ts, NULL);
	}
	log_ending(name, pid, status);
	return wait_code(status);
}

static int
pidfile_path(char *buf, size_t len, const char *datadir, struct error *err)
{
	if (datadir == NULL || *datadir == '\0') {
		error_set(err, "no data directory");
		return -1;
	}
	if ((size_t)snprintf(buf, len, "%s/%s", datadir, PROC_PIDFILE) >= len) {
		error_set(err, "data directory path too long: %s", datadir);
		return -1;
	}
	return 0;
}

/* The pid written in the file at fd, or 0 when it holds none. */
static pid_t
pidfile_read(int fd)
{
	char buf[PROC_PIDFILE_READ_MAX];
	ssize_t n;
	char *end;
	long v;

	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno != 0 || end == buf || v <= 0 || v > INT_MAX)
		return 0;
	return (pid_t)v;
}

int
proc_pidfile_acquire(const char *datadir, struct error *err)
{
	char path[PATH_MAX], line[PROC_PIDFILE_READ_MAX];
	struct stat fsb, psb;
	pid_t old;
	int fd = -1, tries, len;

	if (pidfile_path(path, sizeof(path), datadir, err) == -1)
		return -1;
	for (tries = 0; tries < PROC_PIDFILE_TRIES; tries++) {
		fd =
		    open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd == -1) {
			error_set(err, "cannot open %s: %s", path,
			          strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
			if (errno == EWOULDBLOCK) {
				old = pidfile_read(fd);
				error_set(err, "already running, pid %ld (%s)",
				          (long)old, path);
			} else
				error_set(err, "cannot lock %s: %s", path,
				          strerror(errno));
			close(fd);
			return -1;
		}
		/*
		 * Locked; but the holder we waited for may have unlinked the
		 * file and another process created a new one meanwhile.  The
		 * lock counts only on the file that is at the path.
		 */
		if (fstat(fd, &fsb) == 0 && stat(path, &psb) == 0 &&
		    fsb.st_dev == psb.st_dev && fsb.st_ino == psb.st_ino)
			break;
		close(fd);
		fd = -1;
	}
	if (fd == -1) {
		error_set(err, "%s keeps changing; is another daemon starting?",
		          path);
		return -1;
	}
	if ((old = pidfile_read(fd)) != 0 && old != getpid())
		log_info(LOG_MAIN,
		         "%s named pid %ld, which no longer runs; "
		         "taken over",
		         path, (long)old);
	len = snprintf(line, sizeof(line), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, line, (size_t)len, 0) != len ||
	    fsync(fd) == -1) {
		error_set(err, "cannot write %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (pidfile.fd != -1 && pidfile.owner == getpid())
		close(pidfile.fd);
	pidfile.fd = fd;
	pidfile.owner = getpid();
	snprintf(pidfile.path, sizeof(pidfile.path), "%s", path);
	return 0;
}

void
proc_pidfile_release(const char *datadir)
{
	char path[PATH_MAX];

	if (pidfile.fd == -1 || pidfile.owner != getpid() ||
	    pidfile_path(path, sizeof(path), datadir, NULL) == -1 ||
	    strcmp(path, pidfile.path) != 0)
		return;
	/* Unlink while still locked, so nobody locks a file we remove. */
	(void)unlink(path);
	close(pidfile.fd);
	pidfile.fd = -1;
	pidfile.path[0] = '\0';
}

pid_t
proc_pidfile_owner(const char *datadir, struct error *err)
{
	char path[PATH_MAX];
	pid_t pid = 0;
	int fd;

	if (pidfile_path(path, sizeof(path), datadir, err) == -1)
		return -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1) {
		if (errno == ENOENT)
			return 0;
		error_set(err, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_SH | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			pid = pidfile_read(fd);
		else {
			error_set(err, "cannot lock %s: %s", path,
			          strerror(errno));
			pid = -1;
		}
	}
	/* Closing drops the shared lock if we got it. */
	close(fd);
	return pid;
}

int
proc_signals_fd(struct error *err)
{
	sigset_t mask;
	int fd;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	/* Blocked, so that they queue for the signalfd instead. */
	if ((errno = pthread_sigmask(SIG_BLOCK, &mask, NULL)) != 0) {
		error_set(err, "pthread_sigmask: %s", strerror(errno));
		return -1;
	}
	if ((fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1) {
		error_set(err, "signalfd: %s", strerror(errno));
		return -1;
	}
	return fd;
}

int
proc_signal_read(int fd, struct error *err)
{
	struct signalfd_siginfo si;
	ssize_t n;

	do
		n = read(fd, &si, sizeof(si));
	while (n == -1 && errno == EINTR);
	if (n == -1 && errno == EAGAIN)
		return 0;
	if (n != (ssize_t)sizeof(si)) {
		error_set(err, "reading signals: %s",
		          n == -1 ? strerror(errno) : "short read");
		return -1;
	}
	return (int)si.ssi_signo;
}

int
proc_ipc_path(char *buf, size_t len, const char *datadir, const char *name,
              struct error *err)
{
	char abs[PATH_MAX];
	const char *dir = datadir;
	size_t n;

	if (datadir == NULL || *datadir == '\0') {
		error_set(err, "no data directory");
		return -1;
	}
	if (name == NULL || *name == '\0' || strchr(name, '/') != NULL) {
		error_set(err, "invalid socket name");
		return -1;
	}
	/* Absolute, so the endpoint survives a chdir and reads in logs. */
	if (datadir[0] != '/') {
		if (realpath(datadir, abs) == NULL) {
			error_set(err, "data directory %s: %s", datadir,
			          strerror(errno));
			return -1;
		}
		dir = abs;
	}
	n = (size_t)snprintf(buf, len, "%s/%s.sock", dir, name);
	if (n >= len || n > PROC_IPC_PATH_MAX) {
		error_set(err,
		          "socket path %s/%s.sock is longer than the %d bytes "
		          "a Unix socket address holds; use a shorter data "
		          "directory",
		          dir, name, PROC_IPC_PATH_MAX);
		return -1;
	}
	return 0;
}

int
proc_ipc_endpoint(char *buf, size_t len, const char *datadir, const char *name,
                  struct error *err)
{
	char path[PROC_IPC_PATH_MAX + 1 + 64];

	if (proc_ipc_path(path, sizeof(path), datadir, name, err) == -1)
		return -1;
	if ((size_t)snprintf(buf, len, "ipc://%s", path) >= len) {
		error_set(err, "endpoint buffer too small for %s", path);
		return -1;
	}
	return 0;
}

int
proc_ipc_secure(const char *datadir, const char *name, struct error *err)
{
	char path[PROC_IPC_PATH_MAX + 1 + 64];

	if (proc_ipc_path(path, sizeof(path), datadir, name, err) == -1)
		return -1;
	if (chmod(path, 0600) == -1) {
		error_set(err, "chmod 0600 %s: %s", path, strerror(errno));
		log_error(LOG_MAIN, "chmod 0600 %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Does a process accept connections on the socket at path?  1 yes, 0 no
 * (refused, or no file), -1 on another error.
 */
static int
ipc_listening(const char *path, struct error *err)
{
	struct sockaddr_un sa;
	int fd, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		error_set(err, "socket path too long: %s", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		error_set(err, "socket: %s", strerror(errno));
		return -1;
	}
	do
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc == -1 && errno == EINTR);
	if (rc == 0)
		rc = 1;
	else if (errno == ECONNREFUSED || errno == ENOENT)
		rc = 0;
	else {
		error_set(err, "connect %s: %s", path, strerror(errno));
		rc = -1;
	}
	close(fd);
	return rc;
}

int
proc_ipc_claim(const char *datadir, const char *name, struct error *err)
{
	char path[PROC_IPC_PATH_MAX + 1 + 64];
	struct stat sb;
	int rc;

	if (proc_ipc_path(path, sizeof(path), datadir, name, err) == -1)
		return -1;
	if (lstat(path, &sb) == -1) {
		if (errno == ENOENT)
			return 0;
		error_set(err, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(sb.st_mode)) {
		error_set(err, "%s exists and is not a socket", path);
		return -1;
	}
	if ((rc = ipc_listening(path, err)) == -1)
		return -1;
	if (rc == 1) {
		error_set(err, "%s is in use (is the daemon already running?)",
		          path);
		return -1;
	}
	if (unlink(path) == -1 && errno != ENOENT) {
		error_set(err, "cannot remove stale socket %s: %s", path,
		          strerror(errno));
		return -1;
	}
	log_info(LOG_MAIN, "removed stale socket %s", path);
	return 0;
}

int
proc_send(void *sock, const Iselab__Envelope *env, struct error *err)
{
	uint8_t *buf;
	size_t len;
	int rc;

	if ((buf = msg_pack(env, &len, err)) == NULL)
		return -1;
	rc = zmq_send(sock, buf, len, 0);
	free(buf);
	if (rc == -1) {
		if (errno == EAGAIN)
			error_set(err, "timed out sending a %s message",
			          msg_body_name(env->body_case));
		else
			error_set(err, "zmq_send: %s", zmq_strerror(errno));
		return -1;
	}
	return 0;
}

Iselab__Envelope *
proc_recv(void *sock, struct msg_stats *stats, bool *timed_out,
          struct error *err)
{
	Iselab__Envelope *env = NULL;
	zmq_msg_t m;
	size_t frames = 1;
	bool more;

	if (timed_out != NULL)
		*timed_out = false;
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, sock, 0) == -1) {
		if (errno == EAGAIN) {
			if (timed_out != NULL)
				*timed_out = true;
			error_set(err, "no answer");
		} else
			error_set(err, "zmq_msg_recv: %s", zmq_strerror(errno));
		zmq_msg_close(&m);
		return NULL;
	}
	more = zmq_msg_more(&m);
	if (!more) {
		env =
		    msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), stats, err);
		zmq_msg_close(&m);
		return env;
	}
	/* The rest of a multipart message is already here: drain it. */
	while (more) {
		zmq_msg_close(&m);
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) == -1)
			break;
		frames++;
		more = zmq_msg_more(&m);
	}
	zmq_msg_close(&m);
	if (stats != NULL)
		stats->dropped[MSG_DROP_MALFORMED]++;
	error_set(err, "message of %zu frames; an envelope is one frame",
	          frames);
	return NULL;
}

int
proc_send_error(void *sock, uint64_t request_id, int code, const char *message,
                struct error *err)
{
	Iselab__Envelope env;
	Iselab__Error e = ISELAB__ERROR__INIT;

	msg_init(&env, request_id, NULL);
	e.code = (Iselab__Error__Code)code;
	e.message = (char *)(message != NULL ? message : "");
	env.body_case = ISELAB__ENVELOPE__BODY_ERROR;
	env.error = &e;
	return proc_send(sock, &env, err);
}

/* "pan", "psn" or "san" when one of those runs us, for the message. */
static const char *
control_role(void)
{
	const char *p = program_invocation_short_name;

	if (p != NULL && (strcmp(p, "pan") == 0 || strcmp(p, "psn") == 0 ||
	                  strcmp(p, "san") == 0))
		return p;
	return "the daemon";
}

static int
control_not_running(const char *path, const char *why, struct error *err)
{
	error_set(err, "is %s running? (no answer on %s%s)", control_role(),
	          path, why);
	return -1;
}

int
control_call(const char *datadir, const char *const *argv, int argc,
             int timeout_ms, char **out, char **errtext, int *status,
             struct error *err)
{
	char path[PROC_IPC_PATH_MAX + 1 + 64], endpoint[PROC_ENDPOINT_MAX + 64];
	char why[64];
	Iselab__Envelope env, *resp = NULL;
	Iselab__ControlRequest req = ISELAB__CONTROL_REQUEST__INIT;
	Iselab__ControlResponse *cr;
	uint64_t id = 0;
	void *ctx = NULL, *sock = NULL;
	bool timed_out;
	int i, zero = 0, rc, ret = -1;

	*out = NULL;
	*errtext = NULL;
	*status = -1;
	if (argc < 0 || argc > CONTROL_ARGS_MAX || (argc > 0 && argv == NULL)) {
		error_set(err, "%d arguments (at most %d)", argc,
		          CONTROL_ARGS_MAX);
		return -1;
	}
	for (i = 0; i < argc; i++) {
		if (argv[i] == NULL || strlen(argv[i]) > CONTROL_ARG_MAX) {
			error_set(err, "argument %d missing or over %d bytes",
			          i + 1, CONTROL_ARG_MAX);
			return -1;
		}
	}
	if (timeout_ms <= 0)
		timeout_ms = CONTROL_TIMEOUT_DEFAULT_MS;
	if (proc_ipc_path(path, sizeof(path), datadir, PROC_CONTROL_NAME,
	                  err) == -1 ||
	    proc_ipc_endpoint(endpoint, sizeof(endpoint), datadir,
	                      PROC_CONTROL_NAME, err) == -1)
		return -1;
	/* Nobody listening: say so now rather than after the timeout. */
	if ((rc = ipc_listening(path, err)) == -1)
		return -1;
	if (rc == 0)
		return control_not_running(path, "", err);

	if ((ctx = zmq_ctx_new()) == NULL ||
	    (sock = zmq_socket(ctx, ZMQ_REQ)) == NULL) {
		error_set(err, "zmq: %s", zmq_strerror(errno));
		goto out;
	}
	/* LINGER 0: an unanswered request must never hold up our exit. */
	if (zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms,
	                   sizeof(timeout_ms)) == -1 ||
	    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms,
	                   sizeof(timeout_ms)) == -1 ||
	    zmq_connect(sock, endpoint) == -1) {
		error_set(err, "zmq %s: %s", endpoint, zmq_strerror(errno));
		goto out;
	}
	(void)getrandom(&id, sizeof(id), 0);
	msg_init(&env, id, NULL);
	req.n_argv = (size_t)argc;
	req.argv = (char **)argv;
	env.body_case = ISELAB__ENVELOPE__BODY_CONTROL_REQUEST;
	env.control_request = &req;
	if (proc_send(sock, &env, err) == -1)
		goto out;
	if ((resp = proc_recv(sock, NULL, &timed_out, err)) == NULL) {
		if (timed_out) {
			snprintf(why, sizeof(why), " within %d.%03d s",
			         timeout_ms / 1000, timeout_ms % 1000);
			control_not_running(path, why, err);
		} else
			error_prefix(err, "answer on %s", path);
		goto out;
	}
	if (resp->request_id != id) {
		error_set(err, "answer on %s is for another request", path);
		goto out;
	}
	if (resp->body_case == ISELAB__ENVELOPE__BODY_ERROR) {
		error_set(err, "%s", resp->error->message);
		goto out;
	}
	if (resp->body_case != ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE) {
		error_set(err, "unexpected %s answer on %s",
		          msg_body_name(resp->body_case), path);
		goto out;
	}
	cr = resp->control_response;
	if ((*out = strdup(cr->out)) == NULL ||
	    (*errtext = strdup(cr->err)) == NULL) {
		free(*out);
		*out = NULL;
		error_set(err, "out of memory");
		goto out;
	}
	*status = cr->status;
	ret = 0;
out:
	msg_free(resp);
	if (sock != NULL)
		zmq_close(sock);
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	return ret;
}

int
control_reply(void *rep_socket, uint64_t request_id, int status,
              const char *out, const char *errtext, struct error *err)
{
	Iselab__Envelope env;
	Iselab__ControlResponse cr = ISELAB__CONTROL_RESPONSE__INIT;

	msg_init(&env, request_id, NULL);
	cr.status = status;
	cr.out = (char *)(out != NULL ? out : "");
	cr.err = (char *)(errtext != NULL ? errtext : "");
	env.body_case = ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE;
	env.control_response = &cr;
	return proc_send(rep_socket, &env, err);
}

void *
proc_req_socket(void *zmq_ctx, const char *endpoint, int timeout_ms,
                struct error *err)
{
	void *sock;
	int zero = 0;

	if ((sock = zmq_socket(zmq_ctx, ZMQ_REQ)) == NULL) {
		error_set(err, "zmq_socket: %s", zmq_strerror(errno));
		return NULL;
	}
	if (zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms,
	                   sizeof(timeout_ms)) == -1 ||
	    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms,
	                   sizeof(timeout_ms)) == -1 ||
	    zmq_connect(sock, endpoint) == -1) {
		error_set(err, "zmq %s: %s", endpoint, zmq_strerror(errno));
		zmq_close(sock);
		return NULL;
	}
	return sock;
}

int
proc_serve(void *rep, int sigfd, bool stop_on_sigint, int (*on_hup)(void *ctx),
           void (*handle)(void *ctx, void *rep), void *ctx)
{
	zmq_pollitem_t items[2];
	struct error e = {{0}};
	int sig;

	for (;;) {
		memset(items, 0, sizeof(items));
		items[0].socket = rep;
		items[0].events = ZMQ_POLLIN;
		items[1].fd = sigfd;
		items[1].events = ZMQ_POLLIN;
		if (zmq_poll(items, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			log_error(LOG_CA_SERVICE, "zmq_poll: %s",
			          zmq_strerror(errno));
			return -1;
		}
		if (items[1].revents & ZMQ_POLLIN) {
			while ((sig = proc_signal_read(sigfd, &e)) > 0) {
				if (sig == SIGTERM ||
				    (sig == SIGINT && stop_on_sigint))
					return 0;
				if (sig == SIGHUP && on_hup != NULL) {
					if (on_hup(ctx) == -1)
						return -1;
					continue;
				}
				/*
				 * SIGINT from a terminal reaches the whole
				 * process group: the parent decides when we
				 * stop, by SIGTERM.
				 */
				log_debug(LOG_CA_SERVICE, "ignoring signal %d",
				          sig);
			}
			if (sig == -1) {
				log_error(LOG_CA_SERVICE, "%s", e.msg);
				return -1;
			}
		}
		if (items[0].revents & ZMQ_POLLIN)
			handle(ctx, rep);
	}
}

void *
proc_rep_bind(void *zctx, const char *datadir, const char *name,
              struct error *err)
{
	char endpoint[PROC_ENDPOINT_MAX + 64];
	int64_t maxsize = MSG_MAX_SIZE;
	int zero = 0;
	void *rep;

	if (proc_ipc_endpoint(endpoint, sizeof(endpoint), datadir, name, err) ==
	        -1 ||
	    proc_ipc_claim(datadir, name, err) == -1)
		return NULL;
	if ((rep = zmq_socket(zctx, ZMQ_REP)) == NULL) {
		error_set(err, "zmq: %s", zmq_strerror(errno));
		return NULL;
	}
	if (zmq_setsockopt(rep, ZMQ_LINGER, &zero, sizeof(zero)) == -1 ||
	    zmq_setsockopt(rep, ZMQ_MAXMSGSIZE, &maxsize, sizeof(maxsize)) ==
	        -1 ||
	    zmq_bind(rep, endpoint) == -1) {
		error_set(err, "zmq %s: %s", endpoint, zmq_strerror(errno));
		zmq_close(rep);
		return NULL;
	}
	if (proc_ipc_secure(datadir, name, err) == -1) {
		zmq_close(rep);
		proc_ipc_unlink(datadir, name);
		return NULL;
	}
	return rep;
}

void
proc_ipc_unlink(const char *datadir, const char *name)
{
	char path[PROC_ENDPOINT_MAX + 64];

	if (proc_ipc_path(path, sizeof(path), datadir, name, NULL) == 0)
		(void)unlink(path);
}
