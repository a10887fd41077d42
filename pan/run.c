/*
 * run: `pan run`, the PAN daemon (DESIGN.md section 1, docs/registration.md).
 *
 * Start-up order matters and is the point of this file:
 *
 *  1. settings (node.conf, D/pan.conf, ISELAB_* environment, flags) and
 *     the passphrase, before anything is started, so a typo fails fast;
 *  2. the pid file (D/run.pid): a second `pan run` on the same data
 *     directory stops here;
 *  3. the CA signer, forked before any socket or store is open, so it
 *     inherits nothing that faces the network; it alone holds the CA keys;
 *     then the OCSP responder for the upper levels (ocsp.c): its
 *     certificate made through the signer if it is missing, and its
 *     process "ocsp" forked, which holds only the responder key;
 *  4. the CURVE key, then the passphrase is wiped: the main process never
 *     holds it again;
 *  5. store, registry, ZAP handler, ROUTER and PUB (CURVE servers), control
 *     socket; with --daemon the parent waits until here, so a bind error is
 *     its error and its exit status;
 *  6. one zmq_poll loop over the ROUTER, the control socket, the ZAP
 *     handler and a signalfd, with a one-second tick for link timeouts.
 *
 * SIGTERM and SIGINT stop the signer and leave with status 0.  If the CA
 * signer dies, the daemon cannot restart it (the passphrase is gone, by
 * design), so it logs why and exits with status 1 for the service manager
 * to restart the whole node; docs/pan.md says so.  The same holds for the
 * "ocsp" process, which has no network input (its network-facing worker
 * is restarted by it, with a backoff, without the daemon).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "cert.h"
#include "config.h"
#include "curve.h"
#include "http.h"
#include "ocsp_http.h"
#include "keys.h"
#include "adminview.h"
#include "log.h"
#include "node.h"
#include "pan.h"
#include "proc.h"
#include "signer.h"
#include "store.h"
#include "util.h"

/* Most --set flags one command line takes. */
#define RUN_SETS_MAX 64
/* How long the signer gets to leave after SIGTERM before SIGKILL. */
#define RUN_SIGNER_STOP_MS 5000
/* Longest start-up error the daemon child hands its parent. */
#define RUN_READY_MAX ERROR_MAX

static const char *const log_levels[] = {"error", "warn", "info", "debug",
                                         NULL};

/* docs/pan.md "Configuration"; interface (5) of the registration work. */
static const struct config_key pan_keys[] = {
    {"messaging.listen", CONFIG_ADDRESS, "0.0.0.0:8671",
     "node messaging (ZeroMQ ROUTER, CURVE)", 0, 0, NULL, 0},
    {"messaging.advertise", CONFIG_STRING, NULL,
     "host:port nodes use to reach messaging (join strings); default: "
     "the listen address, or this host name for 0.0.0.0",
     0, 0, NULL, CONFIG_F_EMPTY_OK},
    {"events.listen", CONFIG_ADDRESS, "0.0.0.0:8672",
     "events (ZeroMQ PUB, CURVE)", 0, 0, NULL, 0},
    {"heartbeat.interval", CONFIG_DURATION, "5s",
     "how often nodes send heartbeats", 1, 3600, NULL, 0},
    {"heartbeat.timeout", CONFIG_DURATION, "15s",
     "silence after which a node is disconnected", 1, 86400, NULL, 0},
    {"log.level", CONFIG_ENUM, "info", "error, warn, info or debug", 0, 0,
     log_levels, 0},
    {"ocsp.listen", CONFIG_ADDRESS, "0.0.0.0:2560",
     "the OCSP responder for the Node CA's certificates (plain HTTP, RFC "
     "6960); unset, it takes messaging.listen's address unless that is a "
     "wildcard",
     0, 0, NULL, 0},
    OCSP_HTTP_CONFIG_KEYS,
    /* At most the profile's default (cert.c), which the CA signer checks. */
    {"ca.endpoint-sub-ca-validity", CONFIG_DURATION, "3650d",
     "validity of the Endpoint Sub CA certificate a PSN gets at join (its "
     "OCSP responder and EST certificates end with it at the latest)",
     PAN_CERT_VALIDITY_MIN, 3650 * 86400, NULL, 0},
    {"ca.ocsp-responder-validity", CONFIG_DURATION, "1825d",
     "validity of the OCSP responder certificate the Node CA issues a PSN "
     "at join (legacy hierarchy)",
     PAN_CERT_VALIDITY_MIN, 1825 * 86400, NULL, 0},
};

/* Variables of ours that are not settings of pan run. */
static const char *const env_ignore[] = {NODE_ENV_NOT_SETTINGS, NULL};

struct run_opts {
	const char *datadir;
	const char *passphrase_file;
	const char *listen;
	const char *events_listen;
	const char *sets[RUN_SETS_MAX];
	size_t nsets;
	bool daemon;
};

static const char *const link_names[] = {
    [PAN_LINK_REGISTERED] = "registered",
    [PAN_LINK_CONNECTED] = "connected",
    [PAN_LINK_DISCONNECTED] = "disconnected",
    [PAN_LINK_REMOVED] = "removed",
};

const char *
pan_link_name(enum pan_link link)
{
	return (unsigned)link < ARRAY_SIZE(link_names) ? link_names[link] : "?";
}

/* ISO 8601 in UTC, one word so tables stay splittable. */
void
pan_format_time(int64_t secs, char *buf, size_t len)
{
	adminview_time(secs, buf, len);
}

static void
run_usage(FILE *fp)
{
	fprintf(
	    fp,
	    "usage: pan run --data-dir DIR [--passphrase-file FILE] "
	    "[--listen ADDR]\n"
	    "               [--events-listen ADDR] [--set KEY=VALUE]... "
	    "[--daemon]\n"
	    "\n"
	    "  --listen ADDR         messaging.listen (default "
	    "0.0.0.0:8671)\n"
	    "  --events-listen ADDR  events.listen (default 0.0.0.0:8672)\n"
	    "  --set KEY=VALUE       any setting; `pan run --help-config` "
	    "lists them\n"
	    "  --daemon              run in the background once the sockets "
	    "are bound;\n"
	    "                        logs go to DIR/log only\n"
	    "Settings also come from DIR/%s and ISELAB_* variables.\n",
	    PAN_CONFIG_FILE);
}

static int
run_parse(int argc, char **argv, struct run_opts *o, bool *help_config)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"passphrase-file", required_argument, NULL, 'p'},
	    {"listen", required_argument, NULL, 'l'},
	    {"events-listen", required_argument, NULL, 'e'},
	    {"set", required_argument, NULL, 's'},
	    {"daemon", no_argument, NULL, 'D'},
	    {"help-config", no_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	memset(o, 0, sizeof(*o));
	*help_config = false;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o->datadir = optarg;
			break;
		case 'p':
			o->passphrase_file = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'e':
			o->events_listen = optarg;
			break;
		case 's':
			if (o->nsets >= RUN_SETS_MAX) {
				fprintf(stderr,
				        "pan run: more than %d --set "
				        "flags\n",
				        RUN_SETS_MAX);
				return -1;
			}
			o->sets[o->nsets++] = optarg;
			break;
		case 'D':
			o->daemon = true;
			break;
		case 'C':
			*help_config = true;
			break;
		case 'H':
			run_usage(stdout);
			exit(PAN_EXIT_OK);
		default:
			run_usage(stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "pan run: unexpected argument '%s'\n",
		        argv[optind]);
		return -1;
	}
	if (o->datadir == NULL)
		o->datadir = getenv(PAN_DATA_DIR_ENV);
	if (o->datadir == NULL && !*help_config) {
		fprintf(stderr, "pan run: --data-dir is required (or %s)\n",
		        PAN_DATA_DIR_ENV);
		return -1;
	}
	return 0;
}

/* Defaults < D/pan.conf < environment < flags (docs/configuration.md). */
static struct config *
run_config(const struct run_opts *o, const char *conf, struct error *err)
{
	struct config *cfg;
	char path[PAN_PATH_MAX];
	size_t i;

	if ((cfg = config_new(pan_keys, ARRAY_SIZE(pan_keys), err)) == NULL)
		return NULL;
	if (o->datadir != NULL) {
		if (node_path(path, sizeof(path), o->datadir, conf, err) == -1)
			goto fail;
		if (file_exists(path) && config_load_file(cfg, path, err) == -1)
			goto fail;
	}
	if (config_load_env(cfg, NODE_ENV_PREFIX, NULL, env_ignore, err) == -1)
		goto fail;
	if (o->listen != NULL &&
	    config_set(cfg, "messaging.listen", o->listen, CONFIG_SOURCE_FLAG,
	               "--listen", err) == -1)
		goto fail;
	if (o->events_listen != NULL &&
	    config_set(cfg, "events.listen", o->events_listen,
	               CONFIG_SOURCE_FLAG, "--events-listen", err) == -1)
		goto fail;
	for (i = 0; i < o->nsets; i++)
		if (config_set_pair(cfg, o->sets[i], CONFIG_SOURCE_FLAG,
		                    "--set", err) == -1)
			goto fail;
	if (config_get_duration(cfg, "heartbeat.timeout") <
	    config_get_duration(cfg, "heartbeat.interval")) {
		error_set(
		    err,
		    "heartbeat.timeout (%llds) is shorter than "
		    "heartbeat.interval (%llds)",
		    (long long)config_get_duration(cfg, "heartbeat.timeout"),
		    (long long)config_get_duration(cfg, "heartbeat.interval"));
		goto fail;
	}
	{
		struct pan_ocsp_settings set;

		if (pan_ocsp_settings(cfg, &set, err) == -1)
			goto fail;
	}
	return cfg;
fail:
	config_free(cfg);
	return NULL;
}

struct config *
pan_run_config(const char *datadir, const char *conf, char *const *sets,
               size_t nsets, struct error *err)
{
	struct run_opts o;
	size_t i;

	memset(&o, 0, sizeof(o));
	o.datadir = datadir;
	for (i = 0; i < nsets && i < RUN_SETS_MAX; i++)
		o.sets[o.nsets++] = sets[i];
	return run_config(&o, conf, err);
}

static int
run_load_ca(struct pan *p, struct error *err)
{
	char path[PAN_PATH_MAX];

	if (node_path(path, sizeof(path), p->datadir,
	              NODE_CA_DIR "/root-ca.crt", err) == -1 ||
	    (p->root_ca = cert_load_pem(path, err)) == NULL)
		return -1;
	if (node_path(path, sizeof(path), p->datadir,
	              NODE_CA_DIR "/node-ca.crt", err) == -1 ||
	    (p->node_ca = cert_load_pem(path, err)) == NULL)
		return -1;
	if (store_issuer_key_id(p->root_ca, p->root_kid, err) == -1 ||
	    store_issuer_key_id(p->node_ca, p->node_kid, err) == -1)
		return -1;
	return 0;
}

/* The CURVE secret in Z85 for the sockets; the caller wipes it. */
static int
run_load_curve(struct pan *p, const char *pass, size_t passlen,
               char secret[CURVE_Z85_LEN], struct error *err)
{
	char path[PAN_PATH_MAX];
	EVP_PKEY *key;
	int rc = -1;

	if (node_path(path, sizeof(path), p->datadir, NODE_CURVE_KEY, err) ==
	        -1 ||
	    (key = key_load(path, pass, passlen, err)) == NULL)
		return -1;
	if (curve_z85(key, p->curve_public_z85, secret, err) == -1 ||
	    curve_public_from_z85(p->curve_public_z85, p->curve_public, err) ==
	        -1)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(key);
	return rc;
}

/*
 * Reap the signer and the OCSP process if they ended; either death ends
 * the daemon (see the top).
 */
static void
run_reap(struct pan *p)
{
	static const char *const names[] = {SIGNER_PROCESS_NAME,
	                                    PAN_OCSP_PROCESS};
	pid_t pids[2] = {p->signer_pid, p->ocsp_pid};
	int st[2];

	if (proc_reap(pids, names, 2, st) <= 0)
		return;
	if (p->signer_pid > 0 && pids[0] == 0) {
		p->signer_pid = 0;
		if (!p->stop)
			log_error(LOG_MAIN,
			          "the CA keys are no longer available and "
			          "this process does not hold the passphrase to "
			          "reload them; stopping (restart: pan run "
			          "--data-dir %s)",
			          p->datadir);
	} else if (p->ocsp_pid > 0 && pids[1] == 0) {
		p->ocsp_pid = 0;
		if (!p->stop)
			log_error(LOG_MAIN,
			          "the OCSP responder key is no longer "
			          "available and this process does not hold the "
			          "passphrase to reload it; stopping (restart: "
			          "pan run --data-dir %s)",
			          p->datadir);
	}
	if (!p->stop) {
		p->stop = true;
		p->exit_status = PAN_EXIT_FAIL;
	}
}

static void
run_signal(struct pan *p)
{
	int sig;

	while ((sig = proc_signal_read(p->sigfd, NULL)) > 0) {
		switch (sig) {
		case SIGTERM:
		case SIGINT:
			if (!p->stop)
				log_info(LOG_MAIN, "%s: stopping",
				         strsignal(sig));
			p->stop = true;
			break;
		case SIGCHLD:
			run_reap(p);
			break;
		case SIGHUP: {
			char dir[PAN_PATH_MAX];

			/* Log rotation: re-open the file. */
			if (node_path(dir, sizeof(dir), p->datadir,
			              NODE_LOG_DIR, NULL) == 0)
				(void)proc_log_open(p->id.hostname, "main", dir,
				                    !p->daemon, NULL);
			log_info(LOG_MAIN, "SIGHUP: log file re-opened");
			break;
		}
		default:
			break;
		}
	}
}

/* The OCSP process first: it answers from the store, not the signer. */
static void
run_stop_signer(struct pan *p)
{
	struct error err = {{0}};

	if (p->ocsp_pid > 0 &&
	    proc_stop(p->ocsp_pid, PAN_OCSP_PROCESS, RUN_SIGNER_STOP_MS,
	              &err) == -1)
		log_warn(LOG_MAIN, "stopping the OCSP responder: %s", err.msg);
	p->ocsp_pid = 0;
	if (p->signer_pid <= 0)
		return;
	if (proc_stop(p->signer_pid, SIGNER_PROCESS_NAME, RUN_SIGNER_STOP_MS,
	              &err) == -1)
		log_warn(LOG_MAIN, "stopping the CA signer: %s", err.msg);
	p->signer_pid = 0;
}

/* What runs on time: link timeouts, certificate expiry; ms to the next. */
static int64_t
run_tick(struct pan *p)
{
	int64_t a = registry_tick(p), b = alarm_certwatch_tick(p);

	return b >= 0 && b < a ? b : a;
}

static void
run_loop(struct pan *p)
{
	zmq_pollitem_t items[5];
	int64_t next_tick, now, wait, left;
	size_t nitems;
	int n;

	memset(items, 0, sizeof(items));
	items[0].socket = p->zap;
	items[0].events = ZMQ_POLLIN;
	items[1].socket = p->router;
	items[1].events = ZMQ_POLLIN;
	items[2].socket = p->control;
	items[2].events = ZMQ_POLLIN;
	items[3].fd = p->sigfd;
	items[3].events = ZMQ_POLLIN;
	items[4].events = ZMQ_POLLIN;
	next_tick = time_mono_ms() + run_tick(p);
	while (!p->stop) {
		now = time_mono_ms();
		wait = next_tick > now ? next_tick - now : 0;
		/* A root CA chain replacement: the signer's answer too. */
		nitems = 4;
		if (p->rollover &&
		    (items[4].socket = signer_busy_socket(p->signer)) != NULL) {
			nitems = 5;
			left = signer_busy_ms(p->signer);
			if (left >= 0 && left < wait)
				wait = left;
		}
		items[4].revents = 0;
		n = zmq_poll(items, (int)nitems, (long)wait);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			log_error(LOG_MAIN, "zmq_poll: %s",
			          zmq_strerror(errno));
			p->exit_status = PAN_EXIT_FAIL;
			break;
		}
		if (items[3].revents & ZMQ_POLLIN)
			run_signal(p);
		if (p->stop)
			break;
		/* Handshakes wait for ZAP: serve it first. */
		if (items[0].revents & ZMQ_POLLIN)
			messaging_zap(p);
		if (items[1].revents & ZMQ_POLLIN)
			messaging_router(p);
		if (items[2].revents & ZMQ_POLLIN)
			control_serve(p);
		if (p->rollover && ((items[4].revents & ZMQ_POLLIN) ||
		                    signer_busy_ms(p->signer) == 0))
			rootchain_poll(p);
		if (time_mono_ms() >= next_tick) {
			primary_tick(p);
			next_tick = time_mono_ms() + run_tick(p);
		}
	}
}

/*
 * The AIA OCSP URL of the Endpoint Sub CA certificates we issue: the host
 * nodes reach us by (messaging.advertise, or what messaging_advertise()
 * made of messaging.listen), the responder's port.
 */
static void
run_ocsp_url(struct pan *p)
{
	char host[PAN_ENDPOINT_MAX];
	char *colon;

	snprintf(host, sizeof(host), "%s", p->advertise_host);
	if ((colon = strrchr(host, ':')) != NULL)
		*colon = '\0';
	snprintf(p->ocsp_url, sizeof(p->ocsp_url), "http://%s:%u/ocsp", host,
	         (unsigned)p->ocsp.port);
}

/* Tell the waiting parent (--daemon) how start-up went. */
static void
run_ready(int fd, const char *errtext)
{
	char buf[RUN_READY_MAX + 4];
	ssize_t r;

	if (fd < 0)
		return;
	/* One line: the parent stops at the newline, not at EOF (the
	 * signer may still hold an inherited copy of the pipe). */
	snprintf(buf, sizeof(buf), "%s\n", errtext != NULL ? errtext : "OK");
	do
		r = write(fd, buf, strlen(buf));
	while (r == -1 && errno == EINTR);
	close(fd);
}

static void
run_null_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	(void)dup2(fd, STDIN_FILENO);
	(void)dup2(fd, STDOUT_FILENO);
	(void)dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/* Start everything, serve, stop.  Wipes pass (and frees it). */
static int
run_daemon(struct pan *p, char *pass, size_t passlen, int readyfd)
{
	struct error err = {{0}};
	char path[PAN_PATH_MAX], secret[CURVE_Z85_LEN];
	struct secret handover = {NULL, 0, 0};
	bool pidfile = false, logging = false;
	int rc = PAN_EXIT_FAIL, st, seeded;

	memset(secret, 0, sizeof(secret));
	p->sigfd = -1;
	if (node_path(path, sizeof(path), p->datadir, NODE_LOG_DIR, &err) ==
	        -1 ||
	    dir_create(path, 0750, &err) == -1 ||
	    proc_log_open(p->id.hostname, "main", path, !p->daemon, &err) == -1)
		goto out;
	logging = true;
	(void)log_set_level_by_name(
	    "all", config_get_string(p->cfg, "log.level"), NULL);
	p->hb_interval_ms =
	    config_get_duration(p->cfg, "heartbeat.interval") * 1000;
	p->hb_timeout_ms =
	    config_get_duration(p->cfg, "heartbeat.timeout") * 1000;

	if (proc_pidfile_acquire(p->datadir, &err) == -1)
		goto out;
	pidfile = true;
	log_info(LOG_MAIN, "pan run: %s, deployment %s, data directory %s",
	         p->id.hostname, p->id.deployment_id, p->datadir);

	/* Before any socket or store exists: the signer inherits neither. */
	if (secret_random(&handover, KEY_HANDOVER_BYTES, &err) == -1 ||
	    signer_spawn(p->datadir, p->id.hostname, pass, passlen, &handover,
	                 &p->signer_pid, &err) == -1)
		goto out;
	/*
	 * Still before any socket or store is open (ensure opens and closes
	 * its own): the OCSP process inherits nothing of the network either.
	 */
	if (pan_ocsp_settings(p->cfg, &p->ocsp, &err) == -1 ||
	    pan_ocsp_ensure(p->datadir, p->id.hostname, pass, passlen, &err) ==
	        -1 ||
	    pan_ocsp_spawn(p->datadir, p->id.hostname, &p->ocsp, pass, passlen,
	                   &handover, &p->ocsp_pid, &err) == -1)
		goto out;
	/* The two that need it have their copies. */
	secret_wipe(&handover);
	if (run_load_curve(p, pass, passlen, secret, &err) == -1)
		goto out;
	passphrase_free(pass, passlen);
	pass = NULL;

	if ((p->sigfd = proc_signals_fd(&err)) == -1)
		goto out;
	/* A signer that died before SIGCHLD was blocked: catch it here. */
	if (waitpid(p->signer_pid, &st, WNOHANG) == p->signer_pid) {
		p->signer_pid = 0;
		error_set(&err, "the CA signer exited at start (see %s)",
		          log_path() != NULL ? log_path() : "the log");
		goto out;
	}
	if (waitpid(p->ocsp_pid, &st, WNOHANG) == p->ocsp_pid) {
		p->ocsp_pid = 0;
		error_set(&err, "the OCSP responder exited at start (see %s)",
		          log_path() != NULL ? log_path() : "the log");
		goto out;
	}

	if (node_path(path, sizeof(path), p->datadir, NODE_STORE_DIR, &err) ==
	        -1 ||
	    store_open(path, NULL, &p->st, &err) == -1)
		goto out;
	if (run_load_ca(p, &err) == -1 || registry_load(p, &err) == -1 ||
	    alarm_load(p, &err) == -1 || eventlog_open(p, &err) == -1 ||
	    primary_load(p, &err) == -1 ||
	    (seeded = eventlog_seed(p, &err)) == -1 ||
	    eventlog_own_certs(p, seeded == 1, &err) == -1 ||
	    alarm_certwatch_open(p, &err) == -1)
		goto out;
	loglevel_sync(p);

	if ((p->zctx = zmq_ctx_new()) == NULL) {
		error_set(&err, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((p->signer = signer_connect(p->zctx, p->datadir, &err)) == NULL)
		goto out;
	/* A replacement of the root CA chain cut short (rootchain.c). */
	if (rootchain_recover(p, &err) == -1)
		goto out;
	if (messaging_open(p, secret, &err) == -1)
		goto out;
	secure_zero(secret, sizeof(secret));
	run_ocsp_url(p);
	if (primary_sync(p, &err) == -1)
		goto out;
	if (control_open(p, &err) == -1)
		goto out;

	p->started_mono = time_mono_ms();
	p->started_real = time_now_ms();
	log_info(LOG_MAIN,
	         "ready (pid %ld, CA signer pid %ld, OCSP responder pid %ld; "
	         "Endpoint Sub CA certificates name %s)",
	         (long)getpid(), (long)p->signer_pid, (long)p->ocsp_pid,
	         p->ocsp_url);
	run_ready(readyfd, NULL);
	readyfd = -1;

	p->exit_status = PAN_EXIT_OK;
	run_loop(p);
	rc = p->exit_status;
	registry_persist(p);
	log_info(LOG_MAIN, "stopped (status %d)", rc);
out:
	if (rc != PAN_EXIT_OK && err.msg[0] != '\0') {
		/* In the foreground the log line goes to stderr too. */
		if (logging)
			log_error(LOG_MAIN, "pan run: %s", err.msg);
		else if (readyfd < 0)
			fprintf(stderr, "pan run: %s\n", err.msg);
	}
	run_ready(readyfd, err.msg[0] != '\0' ? err.msg : "failed");
	secure_zero(secret, sizeof(secret));
	secret_wipe(&handover);
	if (pass != NULL)
		passphrase_free(pass, passlen);
	run_stop_signer(p);
	if (p->signer != NULL)
		signer_close(p->signer);
	control_close(p);
	primary_close(p);
	messaging_close(p);
	if (p->zctx != NULL)
		zmq_ctx_term(p->zctx);
	store_close(p->st);
	registry_free(p);
	alarm_certwatch_close(p);
	X509_free(p->root_ca);
	X509_free(p->node_ca);
	if (p->sigfd >= 0)
		close(p->sigfd);
	if (pidfile)
		proc_pidfile_release(p->datadir);
	log_close();
	return rc;
}

/*
 * --daemon: fork now; the child starts everything and reports "OK" or its
 * error over a pipe once the sockets are bound, and the parent exits with
 * the matching status.  Forking this early keeps the signer a child of
 * the daemon, which reaps and watches it.
 */
static int
run_background(struct pan *p, char *pass, size_t passlen)
{
	char buf[RUN_READY_MAX + 4];
	size_t got = 0;
	ssize_t r;
	int fds[2], st;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) == -1) {
		fprintf(stderr, "pan run: pipe: %s\n", strerror(errno));
		passphrase_free(pass, passlen);
		return PAN_EXIT_FAIL;
	}
	if ((pid = fork()) == -1) {
		fprintf(stderr, "pan run: fork: %s\n", strerror(errno));
		passphrase_free(pass, passlen);
		return PAN_EXIT_FAIL;
	}
	if (pid == 0) {
		close(fds[0]);
		(void)setsid();
		if (chdir("/") == -1)
			_exit(PAN_EXIT_FAIL);
		/*
		 * Nothing of the daemon (nor the signer it forks) keeps the
		 * caller's terminal or pipes: errors go up the ready pipe,
		 * logs to the file.
		 */
		run_null_stdio();
		_exit(run_daemon(p, pass, passlen, fds[1]));
	}
	close(fds[1]);
	passphrase_free(pass, passlen);
	while (got < sizeof(buf) - 1 && memchr(buf, '\n', got) == NULL) {
		r = read(fds[0], buf + got, sizeof(buf) - 1 - got);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	got = strlen(buf);
	close(fds[0]);
	if (strcmp(buf, "OK") == 0) {
		printf("pan running in the background, pid %ld; logs in "
		       "%s/%s\n",
		       (long)pid, p->datadir, NODE_LOG_DIR);
		return PAN_EXIT_OK;
	}
	(void)waitpid(pid, &st, 0);
	fprintf(stderr, "pan run: %s\n",
	        got > 0 ? buf : "the daemon exited during start-up");
	return PAN_EXIT_FAIL;
}

int
pan_run_main(int argc, char **argv)
{
	return pan_run_role(argc, argv, NODE_ROLE_PAN, PAN_CONFIG_FILE);
}

int
pan_run_role(int argc, char **argv, enum node_role role, const char *conf)
{
	struct run_opts o;
	struct pan p;
	struct error err = {{0}};
	char datadir[PATH_MAX];
	char *pass;
	size_t passlen = 0;
	bool help_config;
	int rc;

	if (run_parse(argc, argv, &o, &help_config) == -1)
		return PAN_EXIT_USAGE;
	memset(&p, 0, sizeof(p));
	if (help_config) {
		if ((p.cfg = config_new(pan_keys, ARRAY_SIZE(pan_keys),
		                        &err)) == NULL) {
			fprintf(stderr, "pan run: %s\n", err.msg);
			return PAN_EXIT_FAIL;
		}
		config_help(p.cfg, NODE_ENV_PREFIX, stdout);
		config_free(p.cfg);
		return PAN_EXIT_OK;
	}
	/* Absolute: the daemon leaves the working directory. */
	if (realpath(o.datadir, datadir) == NULL) {
		fprintf(stderr, "pan run: %s: %s\n", o.datadir,
		        strerror(errno));
		return PAN_EXIT_FAIL;
	}
	o.datadir = p.datadir = datadir;
	p.daemon = o.daemon;
	if (node_identity_read(datadir, &p.id, &err) == -1) {
		fprintf(stderr, "pan run: %s\n", err.msg);
		return PAN_EXIT_FAIL;
	}
	if (p.id.role != role) {
		fprintf(stderr, "pan run: %s holds a %s node, not a %s\n",
		        datadir, node_role_name(p.id.role), node_role_name(role));
		return PAN_EXIT_FAIL;
	}
	if ((p.cfg = run_config(&o, conf, &err)) == NULL) {
		fprintf(stderr, "pan run: %s\n", err.msg);
		return PAN_EXIT_FAIL;
	}
	if ((pass = node_passphrase(o.passphrase_file, &passlen, &err)) ==
	    NULL) {
		fprintf(stderr, "pan run: %s\n", err.msg);
		config_free(p.cfg);
		return PAN_EXIT_FAIL;
	}
	(void)signal(SIGPIPE, SIG_IGN);
	if (o.daemon)
		rc = run_background(&p, pass, passlen);
	else
		rc = run_daemon(&p, pass, passlen, -1);
	config_free(p.cfg);
	return rc;
}
