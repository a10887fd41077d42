/*
 * proc: the plumbing every daemon of the lab shares (DESIGN.md section 1):
 * forking a named service process and reaping it, the pid file that keeps
 * two daemons off one data directory, signals as a file descriptor that a
 * zmq_poll() loop can wait on, the ipc:// sockets in the data directory
 * (named, claimed from a dead daemon, made 0600), and both ends of the
 * control socket that admin subcommands use (docs/registration.md, "Admin
 * commands").
 *
 * The shape follows OpenBSD's acme-client: one helper forks and names a
 * role, the parent reaps and names children that die ("ca-signer
 * terminated signal 9").  Nothing here exits; every call returns an error.
 *
 * ZeroMQ and fork(): a child must never use a context, socket or message
 * of its parent.  proc_fork() children create their own context; the
 * parent's inherited one is left alone (not even terminated).
 */
#ifndef ISELAB_PROC_H
#define ISELAB_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "msg.h"

struct error;

/* Longest process name: the kernel keeps 15 bytes (PR_SET_NAME). */
#define PROC_NAME_MAX 15
/* The main process's pid file in the data directory. */
#define PROC_PIDFILE "run.pid"
/* Longest socket path: sizeof(sun_path) is 108 with the NUL on Linux. */
#define PROC_IPC_PATH_MAX 107
/* Buffer for "ipc://" and a socket path. */
#define PROC_ENDPOINT_MAX (PROC_IPC_PATH_MAX + sizeof("ipc://"))
/* The control socket's name in the data directory (control.sock). */
#define PROC_CONTROL_NAME "control"
/* Default wait for the daemon's answer to an admin subcommand. */
#define CONTROL_TIMEOUT_DEFAULT_MS 30000
/* Most arguments one control request carries. */
#define CONTROL_ARGS_MAX 64
/* Longest single argument of a control request. */
#define CONTROL_ARG_MAX 4096

/*
 * Fork a named child that runs fn(arg) and _exit()s with its return (a
 * negative return exits 1).  The child sets its process name (PR_SET_NAME),
 * asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG), drops the
 * parent's pid file descriptor, and re-opens logging with name as the
 * process (see proc_log_open()).  stdio is flushed before the fork so
 * nothing buffered is written twice.  The parent gets the pid in *pid.
 * Fork from the main thread: the kernel sends PR_SET_PDEATHSIG when the
 * forking thread ends, not the process.  The child starts with no signal
 * blocked (the parent's signalfd mask is not inherited).
 */
int proc_fork(const char *name, int (*fn)(void *arg), void *arg, pid_t *pid,
              struct error *err);

/*
 * log_open() that also remembers node, dir and foreground, so that
 * proc_fork() children re-open logging exactly as the main process did
 * and only change the process name.  Without it a child takes node and
 * dir from log_path() and copies to stderr unless stderr is /dev/null.
 */
int proc_log_open(const char *node, const char *process, const char *dir,
                  bool foreground, struct error *err);

/*
 * Close every descriptor from 3 up but those in keep: a process that holds
 * keys gives up whatever it inherited.  Logging is re-opened afterwards
 * (its descriptor is among those closed).  0 or -1.
 */
int proc_close_fds(const int *keep, size_t nkeep, struct error *err);

/*
 * Reap the listed children that ended, without blocking, and log each as
 * acme-client does: "ca-signer exited with status 1", "ca-signer
 * terminated signal 9" (warn; a zero exit is info).  A reaped child's
 * pids[i] becomes 0; when statuses is not NULL, statuses[i] receives its
 * wait status.  Only the listed pids are waited for, so other children
 * (and other code's waitpid()) are not disturbed.  Returns how many
 * ended, or -1 on a waitpid() failure.
 */
int proc_reap(pid_t *pids, const char *const *names, size_t n, int *statuses);

/*
 * Stop a child: SIGTERM, wait up to timeout_ms, then SIGKILL and wait.
 * Logs the ending as proc_reap() does.  Returns the child's exit status
 * (0..255) when it exited, 128 + the signal when a signal ended it, or
 * -1 with err set.
 */
int proc_stop(pid_t pid, const char *name, int timeout_ms, struct error *err);

/*
 * D/run.pid: created, locked (flock) for the life of the process and
 * holding its pid.  While another process holds the lock the call fails
 * with "already running, pid N".  A pid file whose lock nobody holds is
 * stale (its daemon died, even by SIGKILL: the kernel drops the lock) and
 * is taken over.  Forked children do not keep the lock.
 */
int proc_pidfile_acquire(const char *datadir, struct error *err);
/* Remove and unlock D/run.pid, if this process holds it. */
void proc_pidfile_release(const char *datadir);
/* The pid in D/run.pid whose lock is held, 0 when none, -1 on error. */
pid_t proc_pidfile_owner(const char *datadir, struct error *err);

/*
 * Block SIGINT, SIGTERM, SIGCHLD and SIGHUP for the calling thread (call
 * it before starting threads other than ZeroMQ's, which block every
 * signal themselves) and return a non-blocking, close-on-exec signalfd for
 * them, to poll as a plain fd in zmq_poll().  -1 on error.
 */
int proc_signals_fd(struct error *err);
/*
 * Read one pending signal from a proc_signals_fd() descriptor: its number,
 * 0 when none is pending, -1 on error.
 */
int proc_signal_read(int fd, struct error *err);

/*
 * "ipc://D/name.sock", with D made absolute.  -1 when the path would not
 * fit a socket address (PROC_IPC_PATH_MAX) or buf.
 */
int proc_ipc_endpoint(char *buf, size_t len, const char *datadir,
                      const char *name, struct error *err);
/* The socket file's path, D/name.sock, under the same rules. */
int proc_ipc_path(char *buf, size_t len, const char *datadir, const char *name,
                  struct error *err);
/* chmod 0600 D/name.sock; call right after zmq_bind(). */
int proc_ipc_secure(const char *datadir, const char *name, struct error *err);
/*
 * Call before zmq_bind() (which would silently unlink a live daemon's
 * socket): when D/name.sock exists and nothing accepts connections on it,
 * remove it (a killed daemon's leftover).  When a process answers, refuse:
 * "D/name.sock is in use (is the daemon already running?)".  A file that
 * is not a socket is refused too.  0 when the path is free.
 */
int proc_ipc_claim(const char *datadir, const char *name, struct error *err);
/*
 * A node-local service's REP socket in zctx, ready to serve: the path
 * claimed (proc_ipc_claim), linger 0, envelopes over MSG_MAX_SIZE dropped
 * by ZeroMQ before they are allocated, bound to ipc://D/name.sock and made
 * 0600.  NULL with err set; on success remove D/name.sock with
 * proc_ipc_unlink() when done.
 */
void *proc_rep_bind(void *zctx, const char *datadir, const char *name,
                    struct error *err);
/* Remove D/name.sock (a service that bound it is stopping). */
void proc_ipc_unlink(const char *datadir, const char *name);

/*
 * Send one envelope as one frame.  0 or -1 (EAGAIN on a timeout included).
 */
int proc_send(void *sock, const Iselab__Envelope *env, struct error *err);
/*
 * Receive one message and unpack it.  Every frame of a multipart message
 * is consumed, so that a REP socket can still answer; more than one frame
 * is refused as malformed.  Returns the envelope, or NULL with err set and
 * the refusal counted in stats (when not NULL); *timed_out (when not
 * NULL) says the receive timed out rather than met bad input.
 */
Iselab__Envelope *proc_recv(void *sock, struct msg_stats *stats,
                            bool *timed_out, struct error *err);
/* Answer with an Error body (code: Iselab__Error__Code). */
int proc_send_error(void *sock, uint64_t request_id, int code,
                    const char *message, struct error *err);

/*
 * Client side of the control socket: send argv in a ControlRequest over a
 * REQ socket (ZMQ_LINGER 0, so nothing ever hangs on exit) to
 * ipc://D/control.sock and wait up to timeout_ms (0: the default) for the
 * ControlResponse.  On success *out and *errtext are malloc'd strings (may
 * be empty; free() them) and *status is the exit status the daemon chose.
 * When nobody answers: -1 with "is <role> running? (no answer on
 * D/control.sock)", at once when no process listens on the socket, after
 * timeout_ms when one listens but does not answer.  An Error answer is -1
 * with its message.
 */
int control_call(const char *datadir, const char *const *argv, int argc,
                 int timeout_ms, char **out, char **errtext, int *status,
                 struct error *err);

/*
 * Server side: answer a control request (request_id from the request)
 * with a ControlResponse.  out and errtext may be NULL (empty).
 */
int control_reply(void *rep_socket, uint64_t request_id, int status,
                  const char *out, const char *errtext, struct error *err);

/*
 * A REQ socket to one of the node's own services (ipc://D/x.sock) that
 * never blocks the caller beyond timeout_ms: linger 0, send and receive
 * timeouts.  After a timeout a REQ socket is stuck in its state machine,
 * so the caller closes it and asks for a new one.  NULL with err set.
 */
void *proc_req_socket(void *zmq_ctx, const char *endpoint, int timeout_ms,
                      struct error *err);

/*
 * The loop of a node's own ipc service (CA signer, CA service): poll the
 * REP socket and the signalfd, call handle(ctx, rep) for each request,
 * return 0 on SIGTERM (and on SIGINT when stop_on_sigint: in the
 * foreground), -1 on a poll or signalfd failure.  SIGHUP calls
 * on_hup(ctx) when given (-1 from it ends the loop with -1); other
 * signals are ignored: the parent decides when a service stops.
 */
int proc_serve(void *rep, int sigfd, bool stop_on_sigint,
               int (*on_hup)(void *ctx),
               void (*handle)(void *ctx, void *rep), void *ctx);

#endif
