/*
 * services: the supervisor of the PSN's service processes, their shared
 * configuration, enrollment users, and the `psn service` and `psn user`
 * commands (services.h).
 *
 * The supervisor runs in the PSN's main process and never blocks it for
 * long: a service it starts reports "ok" (or why not) on a pipe that tick
 * reads without waiting, and a restart is a fork at a due time.  Only the
 * first start, in psn_services_start(), waits, so that `psn run` fails at
 * once with the reason (a wrong passphrase, 8084 in use) rather than
 * restarting a hopeless service forever.
 *
 * To restart the CA service the supervisor must open its key again, so it
 * keeps the node passphrase: in its own locked page, left out of core
 * dumps, wiped at stop.  (The alternative, a key-holding parent of the CA
 * service, would be one more process for the same secret.)
 *
 * Each service also gets at fork a hand-over secret of its own (keys.h),
 * made at start and kept for the supervisor's life, so that a restarted
 * service has the same one: after a root CA chain replacement the renewal
 * worker leaves the service's new key encrypted under it, and SIGHUP
 * tells the service, which wiped the passphrase, to switch in place
 * (psn_services_renewed()).  A service copies its own secret and wipes
 * the others it inherited (psn_service_secrets()).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "config.h"
#include "est.h"
#include "http.h"
#include "ocsp_http.h"
#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "proc.h"
#include "provisioning.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* First restart delay, its ceiling, and the run that resets it. */
#define SVC_BACKOFF_MIN_MS 1000
#define SVC_BACKOFF_MAX_MS 60000
#define SVC_STABLE_MS      60000
/* How long a service may take to report it is serving. */
#define SVC_START_TIMEOUT_MS 60000
/* How long a service may take to stop on SIGTERM before SIGKILL. */
#define SVC_STOP_TIMEOUT_MS 10000
/* Poll interval of tick while a service is starting. */
#define SVC_STARTING_POLL_MS 100
/* What next_ms answers when nothing is pending. */
#define SVC_IDLE_MS 60000
/* How long a service waits for its daemon to take an alarm. */
#define SVC_CONTROL_TIMEOUT_MS 2000
/* Longest path we build in the data directory. */
#define SVC_PATH_MAX 4096
/* Most --set flags of `psn service`. */
#define SVC_SETS_MAX 64

/* --- configuration --- */

const struct config_key psn_services_keys[] = {
    {"est.listen", CONFIG_ADDRESS, "0.0.0.0:8084",
     "address the EST server listens on (HTTPS, RFC 7030)", 0, 0, NULL, 0},
    {"est.base64-line-length", CONFIG_INT, "64",
     "base64 line length of EST answers; 0: one line (strongSwan pki 5.9 "
     "cannot read line breaks)",
     0, 76, NULL, 0},
    {"est.cacerts-refresh", CONFIG_DURATION, "5m",
     "how often the EST server fetches the CA chain from the CA service", 1,
     86400, NULL, 0},
    {"est.workers", CONFIG_INT, "0",
     "EST worker threads; 0: one per online CPU", 0, HTTP_WORKERS_MAX, NULL, 0},
    {"est.timeout", CONFIG_DURATION, "10s",
     "EST idle timeout and per-request deadline", 1, 300, NULL, 0},
    {"provisioning.listen", CONFIG_ADDRESS, "0.0.0.0:8443",
     "address the BYOD portal listens on (HTTPS); unset: est.listen's "
     "address, port 8443",
     0, 0, NULL, 0},
    {"provisioning.cacerts-interval", CONFIG_DURATION, "5m",
     "how often the PSN's EST client calls cacerts on the EST server", 1, 86400,
     NULL, 0},
    {"provisioning.retry-interval", CONFIG_DURATION, "10s",
     "how often the EST client retries cacerts while it fails", 1, 3600, NULL,
     0},
    {"provisioning.est-timeout", CONFIG_DURATION, "10s",
     "longest wait of the EST client for one EST call", 1, 300, NULL, 0},
    {"provisioning.workers", CONFIG_INT, "0",
     "BYOD portal worker threads; 0: one per online CPU", 0, HTTP_WORKERS_MAX,
     NULL, 0},
    {"provisioning.timeout", CONFIG_DURATION, "10s",
     "BYOD portal idle timeout and per-request deadline", 1, 300, NULL, 0},
    {"ocsp.listen", CONFIG_ADDRESS, "0.0.0.0:2560",
     "address the OCSP responder listens on (plain HTTP, RFC 6960)", 0, 0,
     NULL, 0},
    OCSP_HTTP_CONFIG_KEYS,
};
const size_t psn_services_nkeys = ARRAY_SIZE(psn_services_keys);

/* Variables under ISELAB_ that are not config keys (join's and ours). */
static const char *const svc_env_ignore[] = {NODE_ENV_NOT_SETTINGS, NULL};

/* join_run_keys and ours, made once (config_new keeps the pointer). */
static struct config_key *svc_keys;
static size_t svc_nkeys;

struct config *
psn_services_config(const char *datadir, char *const *sets, size_t nsets,
                    struct error *err)
{
	struct config *cfg;
	char path[SVC_PATH_MAX];
	size_t i;
	int c;

	if (svc_keys == NULL) {
		svc_nkeys = join_run_nkeys + psn_services_nkeys;
		if ((svc_keys = calloc(svc_nkeys, sizeof(*svc_keys))) == NULL) {
			error_set(err, "out of memory");
			return NULL;
		}
		memcpy(svc_keys, join_run_keys,
		       join_run_nkeys * sizeof(*svc_keys));
		memcpy(svc_keys + join_run_nkeys, psn_services_keys,
		       psn_services_nkeys * sizeof(*svc_keys));
	}
	if ((cfg = config_new(svc_keys, svc_nkeys, err)) == NULL)
		return NULL;
	if (node_path(path, sizeof(path), datadir, "psn.conf", err) == -1)
		goto fail;
	if (file_exists(path) && config_load_file(cfg, path, err) == -1)
		goto fail;
	if (config_load_env(cfg, NODE_ENV_PREFIX, NULL, svc_env_ignore, err) ==
	    -1)
		goto fail;
	for (i = 0; i < nsets; i++)
		if (config_set_pair(cfg, sets[i], CONFIG_SOURCE_FLAG, "--set",
		                    err) == -1)
			goto fail;
	if (config_check(cfg, NODE_ENV_PREFIX, err) == -1)
		goto fail;
	for (c = 0; c < LOG_CATEGORY_COUNT; c++)
		log_set_level(
		    (enum log_category)c,
		    (enum log_level)config_get_enum(cfg, "log.level"));
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

/* --- what every service process does --- */

void
psn_service_ready(struct psn_service_args *a, const char *msg)
{
	size_t len = strlen(msg);

	if (a->ready_fd == -1)
		return;
	if (write(a->ready_fd, msg, len) != (ssize_t)len)
		log_debug(LOG_MAIN, "start report cut short");
	close(a->ready_fd);
	a->ready_fd = -1;
}

int
psn_service_secrets(struct psn_service_args *a, struct error *err)
{
	size_t i;
	int rc = 0;

	if (a->handover != NULL && a->handover->buf != NULL)
		rc = secret_keep(&a->own, a->handover->buf, a->handover->len,
		                 err);
	for (i = 0; i < a->ninherited; i++)
		secret_wipe(&a->inherited[i]);
	a->handover = NULL;
	return rc;
}

int
psn_service_begin(struct psn_service_args *a, const struct config **cfg,
                  struct config **own, struct error *err)
{
	*own = NULL;
	/* Nothing inherited stays: sockets, store, pid file, ZeroMQ. */
	if (proc_close_fds(&a->ready_fd, a->ready_fd == -1 ? 0 : 1, err) == -1)
		return -1;
	if (psn_service_secrets(a, err) == -1)
		return -1;
	(void)signal(SIGPIPE, SIG_IGN);
	if ((*cfg = a->cfg) == NULL &&
	    (*cfg = *own = psn_services_config(a->datadir, a->sets, a->nsets,
	                                       err)) == NULL)
		return -1;
	return 0;
}

int
psn_service_store_ro(const char *datadir, struct store **out,
                     struct error *err)
{
	struct store_opts opts = {0};
	char path[SVC_PATH_MAX];

	opts.read_only = true;
	if (node_path(path, sizeof(path), datadir, NODE_STORE_DIR, err) == -1)
		return -1;
	return store_open(path, &opts, out, err);
}

int
psn_service_wait(const struct psn_service_args *a, int sigfd,
                 int64_t wait_ms, enum log_category cat)
{
	struct pollfd pfd = {.fd = sigfd, .events = POLLIN};
	struct error e = {{0}};
	int sig, ret = PSN_SERVICE_TIMEOUT;

	if (wait_ms < 0)
		wait_ms = 0;
	if (poll(&pfd, 1, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms) == -1) {
		if (errno == EINTR)
			return PSN_SERVICE_TIMEOUT;
		log_error(cat, "poll: %s", strerror(errno));
		return -1;
	}
	if (!(pfd.revents & POLLIN))
		return PSN_SERVICE_TIMEOUT;
	while ((sig = proc_signal_read(sigfd, &e)) > 0) {
		if (sig == SIGTERM || (sig == SIGINT && a->foreground))
			return PSN_SERVICE_STOP;
		if (sig == SIGHUP)
			ret = PSN_SERVICE_HUP;
	}
	if (sig == -1) {
		log_error(cat, "%s", e.msg);
		return -1;
	}
	return ret;
}

int
psn_service_alarm(const char *datadir, const char *name, const char *severity,
                  const char *text, struct error *err)
{
	const char *argv[5] = {"alarm", severity != NULL ? "raise" : "clear",
	                       name, severity, text};
	char *out = NULL, *errtext = NULL;
	int status = 1, rc;

	rc = control_call(datadir, argv, severity != NULL ? 5 : 3,
	                  SVC_CONTROL_TIMEOUT_MS, &out, &errtext, &status, err);
	if (rc == 0 && status != 0) {
		error_set(err, "%s",
		          errtext != NULL && errtext[0] != '\0' ? errtext
		                                                : "refused");
		rc = -1;
	}
	free(out);
	free(errtext);
	return rc;
}

/* --- the supervisor --- */

/*
 * In start order.  Provisioning follows neither: while EST is down it
 * stays up to answer the portal's 503 and raise its alarm.  The OCSP
 * responder needs only the store and its own key: it follows nobody, and
 * runs on every PSN, session services on or off.
 */
enum svc_id { SVC_CA, SVC_EST, SVC_OCSP, SVC_PROV, SVC_COUNT };

enum svc_state {
	SVC_DOWN,     /* not started */
	SVC_STARTING, /* forked; its "ok" not read yet */
	SVC_RUNNING,  /* serving */
	SVC_BACKOFF,  /* ended; restarted at due */
	SVC_HELD,     /* EST only: stopped while the CA service is down */
	SVC_DISABLED, /* not run on this node (session services off) */
};

static const char *const svc_state_names[] = {
    [SVC_DOWN] = "not running", [SVC_STARTING] = "initializing",
    [SVC_RUNNING] = "running",  [SVC_BACKOFF] = "restarting",
    [SVC_HELD] = "not running", [SVC_DISABLED] = "disabled",
};

/* One supervised service. */
struct psn_svc {
	const char *name;             /* process name */
	const char *title;            /* row of the status table */
	int (*main)(void *);          /* the process body */
	struct psn_service_args args; /* handed to the child */
	enum svc_state state;
	pid_t pid;             /* while STARTING or RUNNING */
	int ready_fd;          /* read end while STARTING, else -1 */
	char ready[ERROR_MAX]; /* what it reported so far */
	size_t got;            /* bytes of ready */
	int64_t started;       /* mono ms of the fork */
	int64_t due;           /* BACKOFF: mono ms of the restart */
	int64_t backoff;       /* the next delay, ms */
	unsigned restarts;     /* restarts so far */
};

struct psn_services {
	char datadir[PATH_MAX];
	struct node_identity id;
	const struct config *cfg; /* the daemon's, or own_cfg */
	struct config *own_cfg;   /* when we loaded it */
	struct secret passbuf;    /* locked page: the node passphrase */
	char *pass;               /* passbuf.buf */
	size_t passlen;
	struct psn_svc svc[SVC_COUNT];
	/* Each service's hand-over secret (keys.h), made once at start. */
	struct secret handover[SVC_COUNT];
};

/* The keys each service takes from a hand-over copy (its own only). */
static const struct {
	enum svc_id id;
	const char *key;
} svc_handover_keys[] = {
    {SVC_CA, "endpoint-sub-ca"}, {SVC_EST, "est-server"},
    {SVC_OCSP, "ocsp-responder"}, {SVC_PROV, "est-server"},
    {SVC_PROV, "est-client"},
};

static int
svc_pass_keep(struct psn_services *s, const char *pass, size_t len,
              struct error *err)
{
	if (len > PASSPHRASE_MAX) {
		error_set(err, "passphrase too long");
		return -1;
	}
	if (secret_keep(&s->passbuf, pass, len, err) == -1)
		return -1;
	s->pass = s->passbuf.buf;
	s->passlen = len;
	return 0;
}

static void
svc_pass_wipe(struct psn_services *s)
{
	secret_wipe(&s->passbuf);
	s->pass = NULL;
	s->passlen = 0;
}

static void
svc_log_ending(const struct psn_svc *v, pid_t pid, int status)
{
	if (WIFSIGNALED(status))
		log_warn(LOG_MAIN, "%s terminated signal %d (pid %ld)", v->name,
		         WTERMSIG(status), (long)pid);
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		log_warn(LOG_MAIN, "%s exited with status %d (pid %ld)",
		         v->name, WEXITSTATUS(status), (long)pid);
	else
		log_info(LOG_MAIN, "%s exited (pid %ld)", v->name, (long)pid);
}

static void
svc_close_ready(struct psn_svc *v)
{
	if (v->ready_fd != -1)
		close(v->ready_fd);
	v->ready_fd = -1;
	v->got = 0;
	v->ready[0] = '\0';
}

/* Fork v; STARTING on success, BACKOFF (after a log line) on failure. */
static int
svc_fork(struct psn_services *s, struct psn_svc *v, int64_t now,
         struct error *err)
{
	int fds[2];

	svc_close_ready(v);
	if (pipe2(fds, O_CLOEXEC) == -1) {
		error_set(err, "pipe: %s", strerror(errno));
		goto fail;
	}
	v->args.datadir = s->datadir;
	v->args.id = &s->id;
	v->args.cfg = s->cfg;
	v->args.pass = s->pass;
	v->args.passlen = s->passlen;
	v->args.ready_fd = fds[1];
	v->args.foreground = false;
	v->args.handover = &s->handover[v - s->svc];
	v->args.inherited = s->handover;
	v->args.ninherited = SVC_COUNT;
	if (proc_fork(v->name, v->main, &v->args, &v->pid, err) == -1) {
		close(fds[0]);
		close(fds[1]);
		goto fail;
	}
	close(fds[1]);
	v->args.ready_fd = -1;
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	v->ready_fd = fds[0];
	v->state = SVC_STARTING;
	v->started = now;
	log_info(LOG_MAIN, "starting %s (pid %ld)", v->name, (long)v->pid);
	return 0;
fail:
	log_error(LOG_MAIN, "cannot start %s: %s", v->name, err->msg);
	v->pid = 0;
	v->state = SVC_BACKOFF;
	v->due = now + v->backoff;
	return -1;
}

/*
 * Read what a starting service reported: 1 serving, 0 not yet, -1 it
 * failed (err holds its reason; it exits by itself).
 */
static int
svc_read_ready(struct psn_svc *v, struct error *err)
{
	ssize_t n;

	for (;;) {
		n = read(v->ready_fd, v->ready + v->got,
		         sizeof(v->ready) - 1 - v->got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return 0;
		if (n > 0) {
			v->got += (size_t)n;
			v->ready[v->got] = '\0';
			if (v->got < sizeof(v->ready) - 1)
				continue;
		}
		break;
	}
	/* EOF (or the buffer is full): the report is complete. */
	if (strcmp(v->ready, "ok") == 0)
		return 1;
	error_set(err, "%s",
	          v->got > 0 ? v->ready : "ended before it was ready");
	return -1;
}

/* The service ended (reaped by us or by the caller). */
static void
svc_ended(struct psn_svc *v, int64_t now)
{
	v->pid = 0;
	svc_close_ready(v);
	if (v->state == SVC_HELD)
		return; /* we stopped it: EST follows CA */
	/* A minute of good service forgives the earlier crashes. */
	if (v->state == SVC_RUNNING && now - v->started >= SVC_STABLE_MS)
		v->backoff = SVC_BACKOFF_MIN_MS;
	v->state = SVC_BACKOFF;
	v->due = now + v->backoff;
	v->restarts++;
	log_warn(LOG_MAIN, "%s will be restarted in %lld s (restart %u)",
	         v->name, (long long)(v->backoff / 1000), v->restarts);
	v->backoff *= 2;
	if (v->backoff > SVC_BACKOFF_MAX_MS)
		v->backoff = SVC_BACKOFF_MAX_MS;
}

/* Stop a service now (SIGTERM, then SIGKILL), reaped here. */
static void
svc_stop_one(struct psn_svc *v)
{
	struct error e = {{0}};

	if (v->pid > 0 &&
	    proc_stop(v->pid, v->name, SVC_STOP_TIMEOUT_MS, &e) == -1)
		log_error(LOG_MAIN, "stopping %s: %s", v->name, e.msg);
	v->pid = 0;
	svc_close_ready(v);
}

static void
svc_check_starting(struct psn_svc *v, int64_t now)
{
	struct error e = {{0}};
	int r;

	if (v->state != SVC_STARTING || v->ready_fd == -1)
		return;
	if ((r = svc_read_ready(v, &e)) == 1) {
		svc_close_ready(v);
		v->state = SVC_RUNNING;
		log_info(LOG_MAIN, "%s is running (pid %ld)", v->name,
		         (long)v->pid);
	} else if (r == -1) {
		/* It exits by itself; the reaper restarts it. */
		log_error(LOG_MAIN, "%s cannot start: %s", v->name, e.msg);
		svc_close_ready(v);
	} else if (now - v->started > SVC_START_TIMEOUT_MS) {
		log_error(LOG_MAIN, "%s did not start within %d s: killing it",
		          v->name, SVC_START_TIMEOUT_MS / 1000);
		(void)kill(v->pid, SIGKILL);
		svc_close_ready(v);
	}
}

void
psn_services_tick(struct psn_services *s)
{
	struct psn_svc *ca, *est, *prov, *ocsp;
	struct error e = {{0}};
	const char *names[SVC_COUNT];
	pid_t pids[SVC_COUNT];
	int statuses[SVC_COUNT];
	int64_t now = time_mono_ms();
	size_t i;

	if (s == NULL)
		return;
	ca = &s->svc[SVC_CA];
	est = &s->svc[SVC_EST];
	prov = &s->svc[SVC_PROV];
	ocsp = &s->svc[SVC_OCSP];
	/* Ours that ended, if the caller has not reaped them. */
	for (i = 0; i < SVC_COUNT; i++) {
		pids[i] = s->svc[i].pid;
		names[i] = s->svc[i].name;
	}
	if (proc_reap(pids, names, SVC_COUNT, statuses) > 0)
		for (i = 0; i < SVC_COUNT; i++)
			if (s->svc[i].pid > 0 && pids[i] == 0)
				svc_ended(&s->svc[i], now);
	for (i = 0; i < SVC_COUNT; i++)
		svc_check_starting(&s->svc[i], now);

	/* The CA service again, after its backoff. */
	if (ca->state == SVC_BACKOFF && now >= ca->due)
		(void)svc_fork(s, ca, now, &e);
	/* Provisioning and OCSP again, whatever the state of CA and EST. */
	if (prov->state == SVC_BACKOFF && now >= prov->due)
		(void)svc_fork(s, prov, now, &e);
	if (ocsp->state == SVC_BACKOFF && now >= ocsp->due)
		(void)svc_fork(s, ocsp, now, &e);
	if (ca->state == SVC_DISABLED)
		return;

	/* EST follows CA: the product's EST is down while its CA is. */
	if (ca->state != SVC_RUNNING) {
		if (est->state == SVC_STARTING || est->state == SVC_RUNNING) {
			log_warn(LOG_MAIN,
			         "the CA service is down: stopping the EST "
			         "service (EST follows CA)");
			est->state = SVC_HELD;
			svc_stop_one(est);
		} else if (est->state == SVC_BACKOFF)
			est->state = SVC_HELD;
		return;
	}
	if (est->state == SVC_HELD) {
		log_info(LOG_MAIN, "the CA service is back: starting the EST "
		                   "service");
		est->backoff = SVC_BACKOFF_MIN_MS;
		(void)svc_fork(s, est, now, &e);
	} else if (est->state == SVC_BACKOFF && now >= est->due)
		(void)svc_fork(s, est, now, &e);
}

int64_t
psn_services_next_ms(const struct psn_services *s)
{
	int64_t now = time_mono_ms(), next = SVC_IDLE_MS, d;
	size_t i;

	if (s == NULL)
		return next;
	for (i = 0; i < SVC_COUNT; i++) {
		const struct psn_svc *v = &s->svc[i];

		if (v->state == SVC_STARTING && next > SVC_STARTING_POLL_MS)
			next = SVC_STARTING_POLL_MS;
		if (v->state == SVC_BACKOFF) {
			d = v->due - now;
			if (d < next)
				next = d < 0 ? 0 : d;
		}
	}
	return next;
}

int
psn_services_child_exited(struct psn_services *s, pid_t pid, int status)
{
	size_t i;

	if (s == NULL || pid <= 0)
		return 0;
	for (i = 0; i < SVC_COUNT; i++)
		if (s->svc[i].pid == pid) {
			svc_log_ending(&s->svc[i], pid, status);
			svc_ended(&s->svc[i], time_mono_ms());
			return 1;
		}
	return 0;
}

const char *
psn_services_state(const struct psn_services *s, const char *title, pid_t *pid)
{
	size_t i;

	*pid = 0;
	if (s == NULL || title == NULL)
		return NULL;
	for (i = 0; i < SVC_COUNT; i++)
		if (strcmp(s->svc[i].title, title) == 0) {
			if (s->svc[i].state == SVC_RUNNING ||
			    s->svc[i].state == SVC_STARTING)
				*pid = s->svc[i].pid;
			return svc_state_names[s->svc[i].state];
		}
	return NULL;
}

int
psn_services_status(struct psn_services *s, char *buf, size_t len)
{
	size_t off = 0, i;
	char pid[32];
	int n;

	if (len > 0)
		buf[0] = '\0';
	for (i = 0; s != NULL && i < SVC_COUNT; i++) {
		const struct psn_svc *v = &s->svc[i];

		if (v->pid > 0 &&
		    (v->state == SVC_RUNNING || v->state == SVC_STARTING))
			snprintf(pid, sizeof(pid), "%ld", (long)v->pid);
		else
			snprintf(pid, sizeof(pid), "-");
		n = snprintf(buf + off, len - off, "%-32s %-14s %s\n", v->title,
		             svc_state_names[v->state], pid);
		if (n < 0 || (size_t)n >= len - off)
			return -1;
		off += (size_t)n;
	}
	return (int)off;
}

/* The first start: wait for v to serve; -1 with its reason. */
static int
svc_start_wait(struct psn_services *s, struct psn_svc *v, struct error *err)
{
	struct pollfd pfd;
	int64_t deadline, left;
	int status, r;

	if (svc_fork(s, v, time_mono_ms(), err) == -1)
		return -1;
	deadline = time_mono_ms() + SVC_START_TIMEOUT_MS;
	for (;;) {
		if ((left = deadline - time_mono_ms()) <= 0) {
			error_set(err, "%s did not start within %d s", v->name,
			          SVC_START_TIMEOUT_MS / 1000);
			break;
		}
		pfd.fd = v->ready_fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR) {
			error_set(err, "poll: %s", strerror(errno));
			break;
		}
		if (pfd.revents == 0)
			continue;
		if ((r = svc_read_ready(v, err)) == 0)
			continue;
		if (r == 1) {
			svc_close_ready(v);
			v->state = SVC_RUNNING;
			log_info(LOG_MAIN, "%s is running (pid %ld)", v->name,
			         (long)v->pid);
			return 0;
		}
		error_prefix(err, "%s", v->name);
		break;
	}
	(void)kill(v->pid, SIGTERM);
	while (waitpid(v->pid, &status, 0) == -1 && errno == EINTR)
		;
	v->pid = 0;
	svc_close_ready(v);
	v->state = SVC_DOWN;
	return -1;
}

/* Whether service i runs with these settings. */
static bool
svc_wanted(size_t i, bool session, bool ca)
{
	switch (i) {
	case SVC_CA:
	case SVC_EST:
		return session && ca;
	case SVC_PROV:
		return session;
	default:
		return true; /* the OCSP responder runs on every PSN */
	}
}

/*
 * Hand-over copies an earlier run left (it stopped before its services
 * took them): under secrets that are gone, of no use to anybody.
 */
static void
svc_handover_clean(const struct psn_services *s)
{
	char path[SVC_PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(svc_handover_keys); i++)
		if (member_handover_path(s->datadir, svc_handover_keys[i].key,
		                         s->svc[svc_handover_keys[i].id].name,
		                         path, sizeof(path), NULL) == 0 &&
		    unlink(path) == 0)
			log_info(LOG_MAIN, "removed a stale hand-over copy %s",
			         path);
}

static int
svc_start(struct psn_services **out, const char *datadir,
          const struct node_identity *id, const struct config *cfg,
          const char *passphrase, size_t passlen, bool session, bool ca,
          struct error *err)
{
	struct psn_services *s;
	size_t i;

	*out = NULL;
	if (datadir == NULL || id == NULL ||
	    (passphrase == NULL && passlen != 0)) {
		error_set(err, "psn_services_start: missing argument");
		return -1;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	if ((size_t)snprintf(s->datadir, sizeof(s->datadir), "%s", datadir) >=
	    sizeof(s->datadir)) {
		error_set(err, "data directory path too long");
		free(s);
		return -1;
	}
	s->id = *id;
	s->svc[SVC_CA].name = CA_SERVICE_PROCESS;
	s->svc[SVC_CA].title = "Certificate Authority Service";
	s->svc[SVC_CA].main = ca_service_main;
	s->svc[SVC_EST].name = EST_SERVICE_PROCESS;
	s->svc[SVC_EST].title = "EST Service";
	s->svc[SVC_EST].main = est_service_main;
	s->svc[SVC_PROV].name = PROVISIONING_PROCESS;
	s->svc[SVC_PROV].title = PROVISIONING_TITLE;
	s->svc[SVC_PROV].main = provisioning_main;
	s->svc[SVC_OCSP].name = OCSP_SERVICE_PROCESS;
	s->svc[SVC_OCSP].title = PSN_OCSP_TITLE;
	s->svc[SVC_OCSP].main = ocsp_service_main;
	for (i = 0; i < SVC_COUNT; i++) {
		s->svc[i].ready_fd = -1;
		s->svc[i].backoff = SVC_BACKOFF_MIN_MS;
		s->svc[i].args.ready_fd = -1;
		if (!svc_wanted(i, session, ca))
			s->svc[i].state = SVC_DISABLED;
	}
	if ((s->cfg = cfg) == NULL &&
	    (s->cfg = s->own_cfg =
	         psn_services_config(datadir, NULL, 0, err)) == NULL)
		goto fail;
	if (svc_pass_keep(s, passphrase != NULL ? passphrase : "", passlen,
	                  err) == -1)
		goto fail;
	for (i = 0; i < SVC_COUNT; i++)
		if (secret_random(&s->handover[i], KEY_HANDOVER_BYTES, err) ==
		    -1)
			goto fail;
	svc_handover_clean(s);
	/*
	 * CA first: EST follows CA, and asks it for the chain at start.
	 * Provisioning last: its EST client calls cacerts before anything.
	 */
	for (i = 0; i < SVC_COUNT; i++)
		if (s->svc[i].state != SVC_DISABLED &&
		    svc_start_wait(s, &s->svc[i], err) == -1)
			goto fail;
	*out = s;
	return 0;
fail:
	psn_services_stop(s);
	return -1;
}

int
psn_services_start(struct psn_services **out, const char *datadir,
                   const struct node_identity *id, const char *passphrase,
                   size_t passlen, struct error *err)
{
	return svc_start(out, datadir, id, NULL, passphrase, passlen, true,
	                 true, err);
}

int
psn_services_start_cfg(struct psn_services **out, const char *datadir,
                       const struct node_identity *id, const struct config *cfg,
                       const char *passphrase, size_t passlen,
                       struct error *err)
{
	return svc_start(out, datadir, id, cfg, passphrase, passlen, true,
	                 true, err);
}

int
psn_services_start_as(struct psn_services **out, const char *datadir,
                      const struct node_identity *id, const struct config *cfg,
                      const char *passphrase, size_t passlen, bool session,
                      bool ca, struct error *err)
{
	return svc_start(out, datadir, id, cfg, passphrase, passlen, session,
	                 ca, err);
}

void
psn_services_set(struct psn_services *s, bool session, bool ca)
{
	/* Stopped in the reverse of start order, started in start order. */
	static const size_t stop_order[] = {SVC_PROV, SVC_OCSP, SVC_EST,
	                                    SVC_CA};
	struct error e = {{0}};
	int64_t now = time_mono_ms();
	size_t k, i;

	if (s == NULL)
		return;
	for (k = 0; k < ARRAY_SIZE(stop_order); k++) {
		i = stop_order[k];
		if (svc_wanted(i, session, ca) ||
		    s->svc[i].state == SVC_DISABLED)
			continue;
		log_info(LOG_MAIN, "%s: turned off by the PAN", s->svc[i].name);
		svc_stop_one(&s->svc[i]);
		s->svc[i].state = SVC_DISABLED;
	}
	for (i = 0; i < SVC_COUNT; i++) {
		struct psn_svc *v = &s->svc[i];

		if (!svc_wanted(i, session, ca) || v->state != SVC_DISABLED)
			continue;
		log_info(LOG_MAIN, "%s: turned on by the PAN", v->name);
		v->backoff = SVC_BACKOFF_MIN_MS;
		/* EST follows CA: tick starts it once the CA service runs. */
		if (i == SVC_EST) {
			v->state = SVC_HELD;
			continue;
		}
		(void)svc_fork(s, v, now, &e);
	}
}

const char *
psn_services_pass(const struct psn_services *s, size_t *len)
{
	*len = s != NULL ? s->passlen : 0;
	return s != NULL ? s->pass : NULL;
}

size_t
psn_services_handovers(const struct psn_services *s,
                       struct member_handover *out)
{
	size_t i, n = 0;

	for (i = 0; s != NULL && i < ARRAY_SIZE(svc_handover_keys) &&
	            n < MEMBER_HANDOVERS_MAX;
	     i++) {
		const struct psn_svc *v = &s->svc[svc_handover_keys[i].id];

		if (v->state == SVC_DISABLED)
			continue;
		out[n].key = svc_handover_keys[i].key;
		out[n].process = v->name;
		out[n].secret = &s->handover[svc_handover_keys[i].id];
		n++;
	}
	return n;
}

void
psn_services_renewed(struct psn_services *s)
{
	size_t i;

	if (s == NULL)
		return;
	/*
	 * In start order: the CA service signs with the new Sub CA before
	 * EST fetches the new chain from it.  One not running takes the
	 * new files when it starts.
	 */
	for (i = 0; i < SVC_COUNT; i++) {
		struct psn_svc *v = &s->svc[i];

		if (v->pid <= 0 ||
		    (v->state != SVC_RUNNING && v->state != SVC_STARTING))
			continue;
		log_info(LOG_MAIN, "%s: switching to the new certificates "
		                   "(pid %ld)",
		         v->name, (long)v->pid);
		if (kill(v->pid, SIGHUP) == -1)
			log_warn(LOG_MAIN, "%s: SIGHUP: %s", v->name,
			         strerror(errno));
	}
}

void
psn_services_stop(struct psn_services *s)
{
	if (s == NULL)
		return;
	/*
	 * The EST client first, then EST: nothing should reach for a
	 * service that is going away.
	 */
	svc_stop_one(&s->svc[SVC_PROV]);
	svc_stop_one(&s->svc[SVC_OCSP]);
	svc_stop_one(&s->svc[SVC_EST]);
	svc_stop_one(&s->svc[SVC_CA]);
	svc_pass_wipe(s);
	for (size_t i = 0; i < SVC_COUNT; i++)
		secret_wipe(&s->handover[i]);
	config_free(s->own_cfg);
	free(s);
}

/* --- commands --- */

static void
service_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: psn service ca|est|ocsp|provisioning|all --data-dir DIR "
	        "[--passphrase-file FILE] [--set key=value]...\n"
	        "\n"
	        "  ca            run the CA service in the foreground\n"
	        "  est           run the EST server in the foreground (the CA "
	        "service must run)\n"
	        "  ocsp          run the OCSP responder in the foreground\n"
	        "  provisioning  run the EST client and BYOD portal in the "
	        "foreground\n"
	        "  all           run the four under the supervisor (restart "
	        "with backoff,\n"
	        "                EST follows CA)\n"
	        "  --set key=value  est.listen (0.0.0.0:8084), "
	        "est.cacerts-refresh (5m),\n"
	        "                   est.workers (0), est.timeout (10s),\n"
	        "                   provisioning.listen (0.0.0.0:8443),\n"
	        "                   provisioning.cacerts-interval (5m),\n"
	        "                   provisioning.retry-interval (10s),\n"
	        "                   provisioning.est-timeout (10s),\n"
	        "                   provisioning.workers (0), "
	        "provisioning.timeout (10s),\n"
	        "                   ocsp.listen (0.0.0.0:2560), ocsp.nonce (on), "
	        "ocsp.validity (1h),\n"
	        "                   ocsp.workers (0), ocsp.timeout (10s),\n"
	        "                   log.level (info)\n");
}

/* Supervise until SIGTERM or SIGINT. */
static int
service_all(const char *datadir, const struct node_identity *id,
            const struct config *cfg, const char *pass, size_t passlen,
            struct error *err)
{
	struct psn_services *s = NULL;
	char rows[512];
	struct pollfd pfd;
	int64_t wait;
	int sigfd, sig, rc = -1;

	if ((sigfd = proc_signals_fd(err)) == -1)
		return -1;
	if (psn_services_start_cfg(&s, datadir, id, cfg, pass, passlen, err) ==
	    -1)
		goto out;
	for (;;) {
		psn_services_tick(s);
		wait = psn_services_next_ms(s);
		if (wait > 1000)
			wait = 1000;
		pfd.fd = sigfd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)wait) == -1 && errno != EINTR) {
			error_set(err, "poll: %s", strerror(errno));
			goto out;
		}
		if (!(pfd.revents & POLLIN))
			continue;
		while ((sig = proc_signal_read(sigfd, err)) > 0) {
			if (sig == SIGTERM || sig == SIGINT) {
				rc = 0;
				goto out;
			}
			if (sig == SIGHUP &&
			    psn_services_status(s, rows, sizeof(rows)) > 0)
				log_info(LOG_MAIN, "services:\n%s", rows);
		}
		if (sig == -1)
			goto out;
	}
out:
	psn_services_stop(s);
	close(sigfd);
	return rc;
}

int
psn_service_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"set", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct psn_service_args a;
	struct node_identity id;
	struct config *cfg = NULL;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	const char *passfile = NULL, *which, *process;
	char *sets[SVC_SETS_MAX], *pass = NULL, logdir[SVC_PATH_MAX];
	size_t nsets = 0, passlen = 0;
	int c, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 's':
			if (nsets == SVC_SETS_MAX) {
				fprintf(stderr,
				        "psn service: more than %d --set\n",
				        SVC_SETS_MAX);
				return 2;
			}
			sets[nsets++] = optarg;
			break;
		case 'H':
			service_usage(stdout);
			return 0;
		default:
			service_usage(stderr);
			return 2;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind + 1 != argc) {
		service_usage(stderr);
		return 2;
	}
	which = argv[optind];
	if (strcmp(which, "ca") == 0)
		process = CA_SERVICE_PROCESS;
	else if (strcmp(which, "est") == 0)
		process = EST_SERVICE_PROCESS;
	else if (strcmp(which, "provisioning") == 0)
		process = PROVISIONING_PROCESS;
	else if (strcmp(which, "ocsp") == 0)
		process = OCSP_SERVICE_PROCESS;
	else if (strcmp(which, "all") == 0)
		process = "main";
	else {
		service_usage(stderr);
		return 2;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_PSN) {
		error_set(&err, "%s holds a %s node, not a psn", datadir,
		          node_role_name(id.role));
		goto out;
	}
	if ((cfg = psn_services_config(datadir, sets, nsets, &err)) == NULL)
		goto out;
	if ((pass = node_passphrase(passfile, &passlen, &err)) == NULL)
		goto out;
	if (node_path(logdir, sizeof(logdir), datadir, NODE_LOG_DIR, &err) ==
	        -1 ||
	    dir_create(logdir, 0750, &err) == -1 ||
	    proc_log_open(id.hostname, process, logdir, true, &err) == -1)
		goto out;
	if (strcmp(which, "all") == 0) {
		rc = service_all(datadir, &id, cfg, pass, passlen, &err) == 0
		         ? 0
		         : 1;
		goto out;
	}
	(void)prctl(PR_SET_NAME, process, 0, 0, 0);
	memset(&a, 0, sizeof(a));
	a.datadir = datadir;
	a.id = &id;
	a.cfg = cfg;
	a.pass = pass;
	a.passlen = passlen;
	a.ready_fd = -1;
	a.foreground = true;
	rc = (strcmp(which, "ca") == 0    ? ca_service_main(&a)
	      : strcmp(which, "est") == 0 ? est_service_main(&a)
	      : strcmp(which, "ocsp") == 0 ? ocsp_service_main(&a)
	                                  : provisioning_main(&a)) == 0
	         ? 0
	         : 1;
	if (rc != 0)
		error_set(&err, "%s failed (see the log)", process);
out:
	if (rc != 0)
		fprintf(stderr, "psn service %s: %s\n", argv[optind], err.msg);
	passphrase_free(pass, passlen);
	config_free(cfg);
	return rc;
}
