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
#include "join.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "proc.h"
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
/* Longest path we build in the data directory. */
#define SVC_PATH_MAX 4096
/* Most --set flags of `psn service`. */
#define SVC_SETS_MAX 64

/* PBKDF2-HMAC-SHA256 for enrollment users. */
#define USER_ITERATIONS     100000
#define USER_ITERATIONS_MIN 1000
#define USER_ITERATIONS_MAX 10000000
#define USER_SALT_LEN       16
#define USER_HASH_LEN       32
#define USER_HASH_SCHEME    "pbkdf2-sha256"
/* Longest record: scheme, iterations, salt and hash in hex. */
#define USER_RECORD_MAX 160
/* Shortest password we store. */
#define USER_PASSWORD_MIN 8
/* The password of `psn user add`, when not on stdin. */
#define USER_PASSWORD_ENV NODE_ENV_PREFIX "USER_PASSWORD"

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
};
const size_t psn_services_nkeys = ARRAY_SIZE(psn_services_keys);

/* Variables under ISELAB_ that are not config keys (join's and ours). */
static const char *const svc_env_ignore[] = {
    NODE_PASSPHRASE_ENV,
    NODE_ENV_PREFIX "DATA_DIR",
    NODE_ENV_PREFIX "BUILD_DIR",
    USER_PASSWORD_ENV,
    NULL,
};

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

/* --- enrollment users --- */

static int
user_derive(const char *password, const uint8_t *salt, size_t saltlen,
            int iterations, uint8_t out[USER_HASH_LEN])
{
	return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt,
	                         (int)saltlen, iterations, EVP_sha256(),
	                         USER_HASH_LEN, out) == 1
	           ? 0
	           : -1;
}

char *
psn_user_hash(const char *password, struct error *err)
{
	uint8_t salt[USER_SALT_LEN], hash[USER_HASH_LEN];
	char shex[2 * USER_SALT_LEN + 1], hhex[2 * USER_HASH_LEN + 1], *rec;

	if (RAND_bytes(salt, sizeof(salt)) != 1 ||
	    user_derive(password, salt, sizeof(salt), USER_ITERATIONS, hash) ==
	        -1) {
		log_crypto(LOG_MAIN, err, "PKCS5_PBKDF2_HMAC", NULL);
		return NULL;
	}
	hex_encode(salt, sizeof(salt), shex);
	hex_encode(hash, sizeof(hash), hhex);
	secure_zero(hash, sizeof(hash));
	if ((rec = malloc(USER_RECORD_MAX)) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	snprintf(rec, USER_RECORD_MAX, "%s$%d$%s$%s", USER_HASH_SCHEME,
	         USER_ITERATIONS, shex, hhex);
	return rec;
}

int
psn_user_verify(const char *record, const char *password)
{
	uint8_t salt[USER_SALT_LEN], want[USER_HASH_LEN], got[USER_HASH_LEN];
	char copy[USER_RECORD_MAX], *p = copy, *scheme, *iter, *shex, *hhex;
	char *end;
	long n;
	int ok;

	if (strlen(record) >= sizeof(copy))
		goto bad;
	snprintf(copy, sizeof(copy), "%s", record);
	scheme = strsep(&p, "$");
	iter = strsep(&p, "$");
	shex = strsep(&p, "$");
	hhex = p;
	if (iter == NULL || shex == NULL || hhex == NULL ||
	    strcmp(scheme, USER_HASH_SCHEME) != 0)
		goto bad;
	errno = 0;
	n = strtol(iter, &end, 10);
	if (errno != 0 || *end != '\0' || n < USER_ITERATIONS_MIN ||
	    n > USER_ITERATIONS_MAX)
		goto bad;
	if (strlen(shex) != 2 * USER_SALT_LEN ||
	    strlen(hhex) != 2 * USER_HASH_LEN ||
	    hex_decode(shex, salt, sizeof(salt)) != USER_SALT_LEN ||
	    hex_decode(hhex, want, sizeof(want)) != USER_HASH_LEN)
		goto bad;
	if (user_derive(password, salt, sizeof(salt), (int)n, got) == -1)
		return 0;
	ok = CRYPTO_memcmp(got, want, sizeof(got)) == 0;
	secure_zero(got, sizeof(got));
	return ok;
bad:
	log_warn(LOG_EST, "an enrollment user record is malformed");
	psn_user_verify_dummy(password);
	return 0;
}

void
psn_user_verify_dummy(const char *password)
{
	static const uint8_t salt[USER_SALT_LEN];
	uint8_t out[USER_HASH_LEN];

	(void)user_derive(password, salt, sizeof(salt), USER_ITERATIONS, out);
	secure_zero(out, sizeof(out));
}

/* --- the supervisor --- */

enum svc_id { SVC_CA, SVC_EST, SVC_COUNT };

enum svc_state {
	SVC_DOWN,     /* not started */
	SVC_STARTING, /* forked; its "ok" not read yet */
	SVC_RUNNING,  /* serving */
	SVC_BACKOFF,  /* ended; restarted at due */
	SVC_HELD,     /* EST only: stopped while the CA service is down */
};

static const char *const svc_state_names[] = {
    [SVC_DOWN] = "not running", [SVC_STARTING] = "initializing",
    [SVC_RUNNING] = "running",  [SVC_BACKOFF] = "restarting",
    [SVC_HELD] = "not running",
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
	char *pass;               /* locked page: the node passphrase */
	size_t passlen;
	size_t passmap; /* bytes mapped at pass */
	struct psn_svc svc[SVC_COUNT];
};

static int
svc_pass_keep(struct psn_services *s, const char *pass, size_t len,
              struct error *err)
{
	long page = sysconf(_SC_PAGESIZE);

	if (len > PASSPHRASE_MAX) {
		error_set(err, "passphrase too long");
		return -1;
	}
	s->passmap = (size_t)(page > 0 ? page : 4096);
	while (s->passmap < len + 1)
		s->passmap *= 2;
	s->pass = mmap(NULL, s->passmap, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->pass == MAP_FAILED) {
		s->pass = NULL;
		error_set(err, "mmap: %s", strerror(errno));
		return -1;
	}
	/* Never swapped, never in a core file; forks keep a copy. */
	if (mlock(s->pass, s->passmap) == -1)
		log_debug(LOG_MAIN, "mlock of the passphrase: %s",
		          strerror(errno));
	(void)madvise(s->pass, s->passmap, MADV_DONTDUMP);
	memcpy(s->pass, pass, len);
	s->pass[len] = '\0';
	s->passlen = len;
	return 0;
}

static void
svc_pass_wipe(struct psn_services *s)
{
	if (s->pass == NULL)
		return;
	secure_zero(s->pass, s->passmap);
	(void)munlock(s->pass, s->passmap);
	(void)munmap(s->pass, s->passmap);
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
	struct psn_svc *ca, *est;
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

static int
svc_start(struct psn_services **out, const char *datadir,
          const struct node_identity *id, const struct config *cfg,
          const char *passphrase, size_t passlen, struct error *err)
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
	for (i = 0; i < SVC_COUNT; i++) {
		s->svc[i].ready_fd = -1;
		s->svc[i].backoff = SVC_BACKOFF_MIN_MS;
		s->svc[i].args.ready_fd = -1;
	}
	if ((s->cfg = cfg) == NULL &&
	    (s->cfg = s->own_cfg =
	         psn_services_config(datadir, NULL, 0, err)) == NULL)
		goto fail;
	if (svc_pass_keep(s, passphrase != NULL ? passphrase : "", passlen,
	                  err) == -1)
		goto fail;
	/* CA first: EST follows CA, and asks it for the chain at start. */
	if (svc_start_wait(s, &s->svc[SVC_CA], err) == -1 ||
	    svc_start_wait(s, &s->svc[SVC_EST], err) == -1)
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
	return svc_start(out, datadir, id, NULL, passphrase, passlen, err);
}

int
psn_services_start_cfg(struct psn_services **out, const char *datadir,
                       const struct node_identity *id, const struct config *cfg,
                       const char *passphrase, size_t passlen,
                       struct error *err)
{
	return svc_start(out, datadir, id, cfg, passphrase, passlen, err);
}

void
psn_services_stop(struct psn_services *s)
{
	if (s == NULL)
		return;
	/* EST first: nothing should reach for a CA that is going away. */
	svc_stop_one(&s->svc[SVC_EST]);
	svc_stop_one(&s->svc[SVC_CA]);
	svc_pass_wipe(s);
	config_free(s->own_cfg);
	free(s);
}

/* --- commands --- */

static void
service_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: psn service ca|est|all --data-dir DIR "
	        "[--passphrase-file FILE] [--set key=value]...\n"
	        "\n"
	        "  ca    run the CA service in the foreground\n"
	        "  est   run the EST server in the foreground (the CA service "
	        "must run)\n"
	        "  all   run both under the supervisor (restart with "
	        "backoff, EST follows CA)\n"
	        "  --set key=value  est.listen (0.0.0.0:8084), "
	        "est.cacerts-refresh (5m),\n"
	        "                   est.workers (0), est.timeout (10s), "
	        "log.level (info)\n");
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
	rc = (strcmp(which, "ca") == 0 ? ca_service_main(&a)
	                               : est_service_main(&a)) == 0
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

static void
user_usage(FILE *fp)
{
	fprintf(fp,
	        "usage: psn user add NAME --data-dir DIR   (password: one "
	        "line on stdin, or %s)\n"
	        "       psn user remove NAME --data-dir DIR\n"
	        "       psn user list --data-dir DIR\n",
	        USER_PASSWORD_ENV);
}

/* A user name Basic can carry (RFC 7617: no ':') and a log can show. */
static int
user_name_check(const char *name, struct error *err)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > EST_USER_MAX) {
		error_set(err, "a user name has 1 to %d characters",
		          EST_USER_MAX);
		return -1;
	}
	for (i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-' || ch == '@')) {
			error_set(err,
			          "user name '%s': letters, digits, '.', '_', "
			          "'-' and '@' only",
			          name);
			return -1;
		}
	}
	return 0;
}

/* The password: ISELAB_USER_PASSWORD, else one line of stdin. */
static char *
user_password(struct error *err)
{
	char buf[EST_PASSWORD_MAX + 2], *p, *nl;
	const char *env = getenv(USER_PASSWORD_ENV);
	size_t n;

	if (env != NULL)
		snprintf(buf, sizeof(buf), "%s", env);
	else if (fgets(buf, sizeof(buf), stdin) == NULL) {
		error_set(err, "no password on stdin (or in %s)",
		          USER_PASSWORD_ENV);
		return NULL;
	}
	if ((nl = strchr(buf, '\n')) != NULL)
		*nl = '\0';
	n = strlen(buf);
	if (nl != NULL && n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	if (n < USER_PASSWORD_MIN || n > EST_PASSWORD_MAX) {
		secure_zero(buf, sizeof(buf));
		error_set(err, "a password has %d to %d characters",
		          USER_PASSWORD_MIN, EST_PASSWORD_MAX);
		return NULL;
	}
	p = strdup(buf);
	secure_zero(buf, sizeof(buf));
	if (p == NULL)
		error_set(err, "out of memory");
	return p;
}

static int
user_print(void *ctx, const void *key, size_t klen, const void *val,
           size_t vlen)
{
	size_t plen = strlen(PSN_USER_PREFIX);

	(void)val;
	(void)vlen;
	(*(int *)ctx)++;
	if (klen > plen && memcmp(key, PSN_USER_PREFIX, plen) == 0)
		printf("%.*s\n", (int)(klen - plen), (const char *)key + plen);
	return 0;
}

/*
 * Enrollment users are written to this PSN's store directly, not over
 * the control socket: the PAN will own and replicate them (`pan user
 * add`); until then this is the operator's way to make one.
 */
int
psn_user_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct node_identity id;
	struct store *st = NULL;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR"), *verb,
	           *name = NULL;
	char path[SVC_PATH_MAX], key[STORE_KV_KEY_MAX + 1], *pw = NULL,
	                                                    *rec = NULL;
	int c, n = 0, rc = 1, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			datadir = optarg;
			break;
		case 'H':
			user_usage(stdout);
			return 0;
		default:
			user_usage(stderr);
			return 2;
		}
	}
	if (datadir == NULL || datadir[0] == '\0' || optind >= argc) {
		user_usage(stderr);
		return 2;
	}
	verb = argv[optind];
	if (strcmp(verb, "list") == 0) {
		if (optind + 1 != argc) {
			user_usage(stderr);
			return 2;
		}
	} else if (strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0) {
		if (optind + 2 != argc) {
			user_usage(stderr);
			return 2;
		}
		name = argv[optind + 1];
	} else {
		user_usage(stderr);
		return 2;
	}
	if (node_identity_read(datadir, &id, &err) == -1)
		goto out;
	if (id.role != NODE_ROLE_PSN) {
		error_set(&err, "%s holds a %s node, not a psn", datadir,
		          node_role_name(id.role));
		goto out;
	}
	if (name != NULL && user_name_check(name, &err) == -1)
		goto out;
	if (name != NULL)
		snprintf(key, sizeof(key), "%s%s", PSN_USER_PREFIX, name);
	if (strcmp(verb, "add") == 0 &&
	    ((pw = user_password(&err)) == NULL ||
	     (rec = psn_user_hash(pw, &err)) == NULL))
		goto out;
	if (node_path(path, sizeof(path), datadir, NODE_STORE_DIR, &err) ==
	        -1 ||
	    store_open(path, NULL, &st, &err) == -1)
		goto out;
	if (strcmp(verb, "add") == 0) {
		if (store_kv_put(st, STORE_TABLE_CONFIG, key, strlen(key), rec,
		                 strlen(rec), &err) == -1)
			goto out;
		printf("enrollment user %s saved\n", name);
	} else if (strcmp(verb, "remove") == 0) {
		r = store_kv_del(st, STORE_TABLE_CONFIG, key, strlen(key),
		                 &err);
		if (r == -1)
			goto out;
		if (r == STORE_NOT_FOUND) {
			error_set(&err, "no enrollment user %s", name);
			goto out;
		}
		printf("enrollment user %s removed\n", name);
	} else if (store_kv_foreach(st, STORE_TABLE_CONFIG, user_print, &n,
	                            &err) == -1)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "psn user %s: %s\n", verb, err.msg);
	if (pw != NULL) {
		secure_zero(pw, strlen(pw));
		free(pw);
	}
	free(rec);
	store_close(st);
	return rc;
}
