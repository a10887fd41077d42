/*
 * Unit tests for common/proc.c: named children and how their ending is
 * logged, the pid file (exclusive while its holder lives, taken over
 * after it dies, even by SIGKILL), signals through a signalfd, the data
 * directory's ipc sockets (path limits, stale file claimed, live one
 * refused, 0600), and the control socket's client against a small REP
 * server in the test, including no server at all and a server that never
 * answers (a clear error, in bounded time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "log.h"
#include "msg.h"
#include "proc.h"
#include "util.h"

/* Control timeout in the tests that wait for one, milliseconds. */
#define TEST_TIMEOUT_MS 300

static char tmpdir[64];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_proc.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	log_close();
	return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The whole log file, NUL-terminated; the caller frees. */
static char *
log_text(void)
{
	char path[128];
	size_t len;

	snprintf(path, sizeof(path), "%s/t1.log", tmpdir);
	return (char *)file_read(path, 1 << 20, &len, NULL);
}

/* --- children --- */

static int
child_status(void *arg)
{
	return (int)(intptr_t)arg;
}

struct name_check {
	int fd; /* pipe to write the process name into */
};

static int
child_name(void *arg)
{
	struct name_check *nc = arg;
	char name[17] = {0};

	prctl(PR_GET_NAME, name, 0, 0, 0);
	log_info(LOG_MAIN, "hello from the child");
	return write(nc->fd, name, strlen(name)) > 0 ? 0 : 1;
}

static int
child_sleep(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static int
child_stubborn(void *arg)
{
	sigset_t mask;

	(void)arg;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	for (;;)
		pause();
	return 0;
}

static int
wait_status(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
test_fork(void **state)
{
	struct error err = {{0}};
	struct name_check nc;
	pid_t pid, pids[2];
	const char *names[2] = {"sleeper", "quitter"};
	int fds[2], status, statuses[2], n, i;
	char buf[32] = {0}, *text;

	(void)state;
	assert_int_equal(proc_log_open("t1", "main", tmpdir, false, &err), 0);

	/* The child's return is its exit status; a negative one is 1. */
	assert_int_equal(
	    proc_fork("seven", child_status, (void *)7, &pid, &err), 0);
	status = wait_status(pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 7);
	assert_int_equal(proc_fork("neg", child_status, (void *)-1, &pid, &err),
	                 0);
	assert_int_equal(WEXITSTATUS(wait_status(pid)), 1);

	/* The child is named, and logs under its name. */
	assert_int_equal(pipe(fds), 0);
	nc.fd = fds[1];
	assert_int_equal(proc_fork("ca-signer", child_name, &nc, &pid, &err),
	                 0);
	close(fds[1]);
	assert_true(read(fds[0], buf, sizeof(buf) - 1) > 0);
	close(fds[0]);
	assert_string_equal(buf, "ca-signer");
	assert_int_equal(WEXITSTATUS(wait_status(pid)), 0);
	assert_non_null(text = log_text());
	assert_non_null(strstr(text, " t1 ca-signer["));
	assert_non_null(strstr(text, "hello from the child"));
	free(text);

	/* Bad names. */
	assert_int_equal(proc_fork("", child_status, NULL, &pid, &err), -1);
	assert_int_equal(proc_fork("a-name-that-is-too-long", child_status,
	                           NULL, &pid, &err),
	                 -1);
	assert_non_null(strstr(err.msg, "process name"));

	/* Reaping names the children as acme-client does. */
	assert_int_equal(
	    proc_fork("sleeper", child_sleep, NULL, &pids[0], &err), 0);
	assert_int_equal(
	    proc_fork("quitter", child_status, (void *)3, &pids[1], &err), 0);
	assert_int_equal(kill(pids[0], SIGKILL), 0);
	for (n = 0, i = 0; n < 2 && i < 500; i++) {
		int r = proc_reap(pids, names, 2, statuses);

		assert_true(r >= 0);
		n += r;
		if (n < 2)
			usleep(10000);
	}
	assert_int_equal(n, 2);
	assert_int_equal(pids[0], 0);
	assert_int_equal(pids[1], 0);
	assert_true(WIFSIGNALED(statuses[0]));
	assert_int_equal(WEXITSTATUS(statuses[1]), 3);
	/* Nothing left to reap. */
	assert_int_equal(proc_reap(pids, names, 2, NULL), 0);
	assert_non_null(text = log_text());
	assert_non_null(strstr(text, "sleeper terminated signal 9"));
	assert_non_null(strstr(text, "quitter exited with status 3"));
	free(text);
}

static void
test_stop(void **state)
{
	struct error err = {{0}};
	pid_t pid;
	int64_t t0;

	(void)state;
	assert_int_equal(proc_fork("sleeper", child_sleep, NULL, &pid, &err),
	                 0);
	assert_int_equal(proc_stop(pid, "sleeper", 2000, &err), 128 + SIGTERM);
	/* One that ignores SIGTERM is killed after the timeout. */
	assert_int_equal(
	    proc_fork("stubborn", child_stubborn, NULL, &pid, &err), 0);
	usleep(50000); /* let it block SIGTERM */
	t0 = time_mono_ms();
	assert_int_equal(proc_stop(pid, "stubborn", 200, &err), 128 + SIGKILL);
	assert_true(time_mono_ms() - t0 < 2000);
	assert_int_equal(proc_stop(0, "none", 10, &err), -1);
}

static int
child_close_fds(void *arg)
{
	int keep = *(int *)arg, other;

	/* High, so that the re-opened log cannot take its number. */
	if ((other = dup2(STDERR_FILENO, 900)) != 900)
		return 10;
	if (proc_close_fds(&keep, 1, NULL) == -1)
		return 11;
	if (fcntl(other, F_GETFD) != -1 || errno != EBADF)
		return 12;
	if (fcntl(keep, F_GETFD) == -1)
		return 13;
	if (fcntl(STDERR_FILENO, F_GETFD) == -1)
		return 14;
	/* Logging still works after its descriptor was closed. */
	log_info(LOG_MAIN, "still logging after close");
	return 0;
}

static void
test_close_fds(void **state)
{
	struct error err = {{0}};
	pid_t pid;
	int keep, a, b;
	char *text;

	(void)state;
	assert_int_equal(proc_log_open("t1", "main", tmpdir, false, &err), 0);
	/* A gap below keep and descriptors above it. */
	a = open("/dev/null", O_RDONLY);
	keep = open("/dev/null", O_RDONLY);
	b = open("/dev/null", O_RDONLY);
	assert_true(a >= 0 && keep >= 0 && b >= 0);
	assert_int_equal(
	    proc_fork("closer", child_close_fds, &keep, &pid, &err), 0);
	assert_int_equal(WEXITSTATUS(wait_status(pid)), 0);
	close(a);
	close(keep);
	close(b);
	assert_non_null(text = log_text());
	if (strstr(text, "closer[") == NULL)
		fail_msg("log: %s", text);
	assert_non_null(strstr(text, "still logging after close"));
	free(text);
}

/* --- pid file --- */

static int
child_hold_pidfile(void *arg)
{
	int fd = *(int *)arg;
	char c = 'x';

	if (proc_pidfile_acquire(tmpdir, NULL) == -1)
		c = 'n';
	if (write(fd, &c, 1) != 1)
		return 1;
	for (;;)
		pause();
	return 0;
}

static void
test_pidfile(void **state)
{
	struct error err = {{0}};
	char path[128], expect[64], *text;
	size_t len;
	pid_t pid, dead;
	int fds[2];
	char c;

	(void)state;
	snprintf(path, sizeof(path), "%s/%s", tmpdir, PROC_PIDFILE);
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), 0);

	/* A live holder: refused, naming its pid. */
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(
	    proc_fork("holder", child_hold_pidfile, &fds[1], &pid, &err), 0);
	assert_int_equal(read(fds[0], &c, 1), 1);
	assert_int_equal(c, 'x');
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(proc_pidfile_acquire(tmpdir, &err), -1);
	snprintf(expect, sizeof(expect), "already running, pid %ld", (long)pid);
	assert_non_null(strstr(err.msg, expect));
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), pid);

	/* Killed without a chance to clean up: the file stays, is stale. */
	kill(pid, SIGKILL);
	wait_status(pid);
	assert_true(file_exists(path));
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), 0);
	assert_int_equal(proc_pidfile_acquire(tmpdir, &err), 0);
	assert_non_null(text = (char *)file_read(path, 64, &len, &err));
	snprintf(expect, sizeof(expect), "%ld\n", (long)getpid());
	assert_string_equal(text, expect);
	free(text);
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), getpid());
	/* A second acquire, even by the holder, is refused. */
	assert_int_equal(proc_pidfile_acquire(tmpdir, &err), -1);
	assert_non_null(strstr(err.msg, "already running"));
	/* A forked child does not keep the lock past its parent's release. */
	assert_int_equal(proc_fork("sleeper", child_sleep, NULL, &pid, &err),
	                 0);
	proc_pidfile_release(tmpdir);
	assert_false(file_exists(path));
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), 0);
	assert_int_equal(proc_pidfile_acquire(tmpdir, &err), 0);
	proc_pidfile_release(tmpdir);
	assert_int_equal(proc_stop(pid, "sleeper", 1000, &err), 128 + SIGTERM);

	/* A pid file left with a dead pid and no lock is taken over. */
	assert_int_equal(proc_fork("dead", child_status, NULL, &dead, &err), 0);
	wait_status(dead);
	snprintf(expect, sizeof(expect), "%ld\n", (long)dead);
	assert_int_equal(
	    file_write_atomic(path, expect, strlen(expect), 0644, &err), 0);
	assert_int_equal(proc_pidfile_acquire(tmpdir, &err), 0);
	assert_int_equal(proc_pidfile_owner(tmpdir, &err), getpid());
	proc_pidfile_release(tmpdir);
	/* Releasing twice or for another directory does nothing. */
	proc_pidfile_release(tmpdir);
	proc_pidfile_release("/nonexistent");

	assert_int_equal(proc_pidfile_acquire("", &err), -1);
	assert_int_equal(proc_pidfile_acquire("/nonexistent/dir", &err), -1);
}

/* --- signals --- */

static void
test_signals(void **state)
{
	struct error err = {{0}};
	sigset_t mask;
	int fd;

	(void)state;
	assert_true((fd = proc_signals_fd(&err)) >= 0);
	assert_int_equal(proc_signal_read(fd, &err), 0);
	assert_int_equal(kill(getpid(), SIGTERM), 0);
	assert_int_equal(proc_signal_read(fd, &err), SIGTERM);
	assert_int_equal(kill(getpid(), SIGHUP), 0);
	assert_int_equal(proc_signal_read(fd, &err), SIGHUP);
	assert_int_equal(proc_signal_read(fd, &err), 0);
	close(fd);
	assert_int_equal(proc_signal_read(fd, &err), -1);
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
}

/* --- ipc sockets --- */

/* Leave a socket file behind as a killed daemon does. */
static void
stale_socket(const char *path)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_true((fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	close(fd);
}

static void
test_ipc(void **state)
{
	struct error err = {{0}};
	char ep[PROC_ENDPOINT_MAX + 64], expect[256], path[256], longdir[200];
	struct stat sb;
	void *ctx, *rep;
	int fd, cwd;

	(void)state;
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), tmpdir, "signer", &err), 0);
	snprintf(expect, sizeof(expect), "ipc://%s/signer.sock", tmpdir);
	assert_string_equal(ep, expect);
	/* A relative data directory is made absolute. */
	assert_true((cwd = open(".", O_RDONLY)) >= 0);
	assert_int_equal(chdir("/tmp"), 0);
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), tmpdir + 5, "control", &err), 0);
	snprintf(expect, sizeof(expect), "ipc://%s/control.sock", tmpdir);
	assert_string_equal(ep, expect);
	assert_int_equal(fchdir(cwd), 0);
	close(cwd);
	/* Too long for sun_path, too small a buffer, bad names. */
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), longdir, "control", &err), -1);
	assert_non_null(strstr(err.msg, "shorter data directory"));
	assert_int_equal(proc_ipc_endpoint(ep, 10, tmpdir, "control", &err),
	                 -1);
	assert_int_equal(proc_ipc_endpoint(ep, sizeof(ep), tmpdir, "a/b", &err),
	                 -1);
	assert_int_equal(proc_ipc_endpoint(ep, sizeof(ep), tmpdir, "", &err),
	                 -1);
	assert_int_equal(proc_ipc_endpoint(ep, sizeof(ep), "", "x", &err), -1);

	/* Nothing there: free. */
	assert_int_equal(proc_ipc_claim(tmpdir, "control", &err), 0);
	/* A dead daemon's file: removed. */
	snprintf(path, sizeof(path), "%s/control.sock", tmpdir);
	stale_socket(path);
	assert_true(file_exists(path));
	assert_int_equal(proc_ipc_claim(tmpdir, "control", &err), 0);
	assert_false(file_exists(path));
	/* A live one: refused and left alone. */
	assert_non_null(ctx = zmq_ctx_new());
	assert_non_null(rep = zmq_socket(ctx, ZMQ_REP));
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), tmpdir, "control", &err), 0);
	assert_int_equal(zmq_bind(rep, ep), 0);
	assert_int_equal(proc_ipc_secure(tmpdir, "control", &err), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_int_equal(proc_ipc_claim(tmpdir, "control", &err), -1);
	assert_non_null(strstr(err.msg, "in use"));
	assert_true(file_exists(path));
	zmq_close(rep);
	zmq_ctx_term(ctx);
	/* A file that is not a socket is not ours to remove. */
	snprintf(path, sizeof(path), "%s/file.sock", tmpdir);
	assert_true((fd = open(path, O_CREAT | O_WRONLY, 0600)) >= 0);
	close(fd);
	assert_int_equal(proc_ipc_claim(tmpdir, "file", &err), -1);
	assert_non_null(strstr(err.msg, "not a socket"));
	assert_true(file_exists(path));
	assert_int_equal(proc_ipc_secure(tmpdir, "missing", &err), -1);
}

/* --- control socket --- */

enum server_mode {
	SERVE_ANSWER,  /* answer with a ControlResponse */
	SERVE_ERROR,   /* answer with an Error body */
	SERVE_SILENT,  /* receive and never answer */
	SERVE_GARBAGE, /* expect a bad message and answer Error */
};

struct server {
	enum server_mode mode;
	void *ctx;           /* the server's own context */
	void *rep;           /* bound REP socket */
	pthread_t thread;    /* serving thread */
	int requests;        /* requests seen */
	char argv_seen[256]; /* argv joined with spaces */
	struct msg_stats stats;
};

static void *
serve(void *arg)
{
	struct server *s = arg;
	struct error err = {{0}};
	Iselab__Envelope *env;
	size_t i;
	char out[300];
	int timeout = 3000;

	zmq_setsockopt(s->rep, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	env = proc_recv(s->rep, &s->stats, NULL, &err);
	if (s->mode == SERVE_GARBAGE) {
		if (env == NULL)
			proc_send_error(s->rep, 0, 1, err.msg, NULL);
		msg_free(env);
		return NULL;
	}
	if (env == NULL)
		return NULL;
	s->requests++;
	if (env->body_case == ISELAB__ENVELOPE__BODY_CONTROL_REQUEST)
		for (i = 0; i < env->control_request->n_argv; i++) {
			strncat(s->argv_seen, env->control_request->argv[i],
			        sizeof(s->argv_seen) - strlen(s->argv_seen) -
			            2);
			strcat(s->argv_seen, " ");
		}
	switch (s->mode) {
	case SERVE_ANSWER:
		snprintf(out, sizeof(out), "ran: %s\n", s->argv_seen);
		control_reply(s->rep, env->request_id, 3, out, "a warning\n",
		              NULL);
		break;
	case SERVE_ERROR:
		proc_send_error(s->rep, env->request_id,
		                ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		                "unknown command", NULL);
		break;
	default:
		break;
	}
	msg_free(env);
	return NULL;
}

static void
server_start(struct server *s, enum server_mode mode)
{
	char ep[PROC_ENDPOINT_MAX + 64];

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	assert_int_equal(proc_ipc_claim(tmpdir, PROC_CONTROL_NAME, NULL), 0);
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), tmpdir, PROC_CONTROL_NAME, NULL),
	    0);
	assert_non_null(s->ctx = zmq_ctx_new());
	assert_non_null(s->rep = zmq_socket(s->ctx, ZMQ_REP));
	assert_int_equal(zmq_bind(s->rep, ep), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void
server_stop(struct server *s)
{
	int zero = 0;

	pthread_join(s->thread, NULL);
	zmq_setsockopt(s->rep, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_close(s->rep);
	zmq_ctx_term(s->ctx);
}

static void
test_control(void **state)
{
	struct error err = {{0}};
	struct server s;
	const char *argv[] = {"node", "add", "psn1", "--role", "psn"};
	char *out = NULL, *errtext = NULL, path[256];
	int status;
	int64_t t0;

	(void)state;
	server_start(&s, SERVE_ANSWER);
	assert_int_equal(
	    control_call(tmpdir, argv, 5, 2000, &out, &errtext, &status, &err),
	    0);
	server_stop(&s);
	assert_int_equal(status, 3);
	assert_string_equal(out, "ran: node add psn1 --role psn \n");
	assert_string_equal(errtext, "a warning\n");
	assert_int_equal(s.requests, 1);
	free(out);
	free(errtext);

	/* An Error answer is an error with its message. */
	server_start(&s, SERVE_ERROR);
	assert_int_equal(
	    control_call(tmpdir, argv, 1, 2000, &out, &errtext, &status, &err),
	    -1);
	server_stop(&s);
	assert_string_equal(err.msg, "unknown command");
	assert_null(out);
	assert_null(errtext);

	/* Nobody at all: at once, with a clear message. */
	snprintf(path, sizeof(path), "%s/control.sock", tmpdir);
	unlink(path);
	t0 = time_mono_ms();
	assert_int_equal(
	    control_call(tmpdir, argv, 2, 5000, &out, &errtext, &status, &err),
	    -1);
	assert_true(time_mono_ms() - t0 < 1000);
	assert_non_null(strstr(err.msg, "running? (no answer on "));
	assert_non_null(strstr(err.msg, path));
	/* A dead daemon's socket file: the same, at once. */
	stale_socket(path);
	t0 = time_mono_ms();
	assert_int_equal(
	    control_call(tmpdir, argv, 2, 5000, &out, &errtext, &status, &err),
	    -1);
	assert_true(time_mono_ms() - t0 < 1000);
	assert_non_null(strstr(err.msg, "no answer on "));

	/* A daemon that never answers: after the timeout, not later. */
	server_start(&s, SERVE_SILENT);
	t0 = time_mono_ms();
	assert_int_equal(control_call(tmpdir, argv, 2, TEST_TIMEOUT_MS, &out,
	                              &errtext, &status, &err),
	                 -1);
	assert_true(time_mono_ms() - t0 >= TEST_TIMEOUT_MS - 10);
	assert_true(time_mono_ms() - t0 < TEST_TIMEOUT_MS + 2000);
	assert_non_null(strstr(err.msg, "no answer on "));
	assert_non_null(strstr(err.msg, "within 0.300 s"));
	server_stop(&s);

	/* Bad arguments never reach the socket. */
	assert_int_equal(
	    control_call(tmpdir, argv, -1, 100, &out, &errtext, &status, &err),
	    -1);
	assert_int_equal(control_call(tmpdir, argv, CONTROL_ARGS_MAX + 1, 100,
	                              &out, &errtext, &status, &err),
	                 -1);
	assert_int_equal(
	    control_call("", argv, 1, 100, &out, &errtext, &status, &err), -1);
}

/* A multipart or garbage message is refused and the REP can answer. */
static void
test_recv_bad(void **state)
{
	struct error err = {{0}};
	struct server s;
	char ep[PROC_ENDPOINT_MAX + 64];
	void *ctx, *req;
	Iselab__Envelope *env;
	int timeout = 3000, zero = 0;

	(void)state;
	assert_int_equal(
	    proc_ipc_endpoint(ep, sizeof(ep), tmpdir, PROC_CONTROL_NAME, &err),
	    0);
	assert_non_null(ctx = zmq_ctx_new());

	/* Two frames. */
	server_start(&s, SERVE_GARBAGE);
	assert_non_null(req = zmq_socket(ctx, ZMQ_REQ));
	zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof(zero));
	assert_int_equal(zmq_connect(req, ep), 0);
	assert_int_equal(zmq_send(req, "a", 1, ZMQ_SNDMORE), 1);
	assert_int_equal(zmq_send(req, "b", 1, 0), 1);
	assert_non_null(env = proc_recv(req, NULL, NULL, &err));
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_ERROR);
	assert_non_null(strstr(env->error->message, "2 frames"));
	msg_free(env);
	zmq_close(req);
	server_stop(&s);
	assert_int_equal(s.stats.dropped[MSG_DROP_MALFORMED], 1);

	/* Bytes that are no envelope. */
	server_start(&s, SERVE_GARBAGE);
	assert_non_null(req = zmq_socket(ctx, ZMQ_REQ));
	zmq_setsockopt(req, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
	zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof(zero));
	assert_int_equal(zmq_connect(req, ep), 0);
	assert_int_equal(zmq_send(req, "\xff\xff\xff", 3, 0), 3);
	assert_non_null(env = proc_recv(req, NULL, NULL, &err));
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_ERROR);
	assert_non_null(strstr(env->error->message, "does not unpack"));
	msg_free(env);
	zmq_close(req);
	server_stop(&s);
	assert_int_equal(s.stats.dropped[MSG_DROP_MALFORMED], 1);
	zmq_ctx_term(ctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fork, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_fds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pidfile, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_signals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ipc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recv_bad, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
