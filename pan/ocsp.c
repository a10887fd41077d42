/*
 * ocsp: the PAN's OCSP responder for the upper levels (docs/ocsp.md, "The
 * upper levels"): the certificates the PAN's Node CA issued -- each PSN's
 * Endpoint Sub CA, and in the legacy hierarchy the PSNs' OCSP responder
 * certificates -- answered with the statuses of the PAN's store, so that
 * a validator can check a whole chain: the endpoint at its PSN's
 * responder, the Sub CA here.
 *
 * Responses are signed by a delegated responder certificate that the
 * PAN's Node CA issued (profile ocsp-responder: id-kp-OCSPSigning,
 * id-pkix-ocsp-nocheck), D/ca/ocsp-responder.{crt,key} as on a PSN, so
 * that strict clients accept them (RFC 6960 4.2.2.2).  `pan init` makes
 * it with the Node CA key it holds; `pan run` makes it at start through
 * the CA signer when it is absent (a deployment made before this).
 *
 * Processes.  `pan run` forks "ocsp" right after the CA signer, before it
 * opens any socket or the store.  "ocsp" loads the responder key (the
 * passphrase is then wiped), opens no socket and reads nothing from the
 * network: it only forks the network-facing worker "ocsp-http" (the store
 * read-only, plain HTTP on ocsp.listen, common/ocsp_http.c) and restarts
 * it after a crash with a backoff of 1 s doubling to 60 s (reset after a
 * minute of good service): a crash on network input costs an outage of the
 * responder, never the PAN.  Neither holds a CA key.  If "ocsp" itself
 * ends, the daemon cannot start it again (the passphrase is gone, as for
 * the CA signer), so `pan run` exits 1 for the service manager.
 *
 * A promoted SAN answers for the former primary's Node CA too, with the
 * imported responder certificate and key (ca/imported/, docs/san.md).
 *
 * The Root CA's own children (the Node CAs) are not answered for: that
 * would take a responder certificate issued by the Root CA, which the
 * signer's policy does not allow (common/signer.h); docs/ocsp.md says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <zmq.h>

#include "cert.h"
#include "config.h"
#include "csr.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "ocsp.h"
#include "ocsp_http.h"
#include "pan.h"
#include "proc.h"
#include "signer.h"
#include "store.h"
#include "util.h"

/* First restart delay of the worker, its ceiling, the run that resets it. */
#define OCSP_BACKOFF_MIN_MS 1000
#define OCSP_BACKOFF_MAX_MS 60000
#define OCSP_STABLE_MS      60000
/* How long a process may take to report that it serves. */
#define OCSP_START_TIMEOUT_MS 30000
/* How long the worker gets to stop on SIGTERM before SIGKILL. */
#define OCSP_STOP_TIMEOUT_MS 5000
/* Longest start report ("ok" or why not). */
#define OCSP_READY_MAX ERROR_MAX
/* What the refresh log lines call our issuer. */
#define OCSP_WHAT "the Node CA"

/* What the "ocsp" process is started with (a copy the fork keeps). */
struct pan_ocsp_args {
	char datadir[PATH_MAX];
	char hostname[NODE_HOSTNAME_MAX + 1];
	char *pass; /* the node passphrase; wiped once the key is loaded */
	size_t passlen;
	/* The caller's passphrase buffer: the fork has a copy to wipe too. */
	char *parent_pass;
	int ready_fd; /* "ok" or why not, then closed */
	struct pan_ocsp_settings set;
	const struct secret *handover; /* the caller's; NULL: none */
};

/* The "ocsp" process's state; the worker inherits a copy. */
struct pan_ocsp_proc {
	struct pan_ocsp_args *a;
	X509 *issuer;  /* D/ca/node-ca.crt: whom we answer for */
	X509 *signer;  /* D/ca/ocsp-responder.crt; NULL: tryLater */
	EVP_PKEY *key; /* its key */
	unsigned gen;  /* the root CA chain generation of these three */
	/* Earlier generations, newest first, answered for too. */
	struct ocsp_generation gens[OCSP_GENERATIONS_MAX];
	size_t ngens;
	/*
	 * The hand-over secret (pan.h): the CA signer leaves the key of a
	 * new generation's responder encrypted under it, as the passphrase
	 * is gone.  Both read the copy: the "ocsp" process for the workers
	 * it starts later, then the worker, which takes the new generation
	 * in place and removes the copy.
	 */
	struct secret handover;
	int sigfd;     /* the supervisor's signals (the worker closes it) */
	int wready;    /* the worker's start report pipe, its end */
};

/* --- the responder certificate --- */

/* A key of the Node CA's type: the deployment's choice (--ca-key). */
static EVP_PKEY *
ocsp_key_like(X509 *ca, struct error *err)
{
	EVP_PKEY *pub = X509_get0_pubkey(ca);
	enum key_type t = KEY_RSA_4096;
	int bits;

	if (pub == NULL) {
		error_set(err, "the Node CA certificate has no public key");
		return NULL;
	}
	bits = EVP_PKEY_get_bits(pub);
	if (EVP_PKEY_is_a(pub, "EC"))
		t = bits > 256 ? KEY_EC_P384 : KEY_EC_P256;
	else if (bits <= 2048)
		t = KEY_RSA_2048;
	else if (bits <= 3072)
		t = KEY_RSA_3072;
	return key_generate(t, err);
}

/* Record cert in D/store as the Node CA's (the store must not be open). */
static int
ocsp_record(const char *datadir, const char *hostname, X509 *node_ca,
            X509 *cert, struct error *err)
{
	uint8_t kid[STORE_KEY_ID_LEN];
	char path[PAN_PATH_MAX];
	struct store *st = NULL;
	int rc;

	if (store_issuer_key_id(node_ca, kid, err) == -1 ||
	    node_path(path, sizeof(path), datadir, NODE_STORE_DIR, err) == -1 ||
	    store_open(path, NULL, &st, err) == -1)
		return -1;
	rc = store_put_x509(st, cert, kid, hostname,
	                    cert_profile_name(CERT_PROFILE_OCSP_RESPONDER),
	                    (int64_t)time(NULL), err);
	store_close(st);
	return rc == -1 ? -1 : 0;
}

/*
 * Save key (encrypted) then cert, and record cert.  The key goes first:
 * a certificate on disk always has its key, and a start that finds a key
 * without certificate makes both again.
 */
static int
ocsp_save(const char *datadir, const char *hostname, X509 *node_ca,
          EVP_PKEY *key, X509 *cert, const char *pass, size_t passlen,
          struct error *err)
{
	char path[PAN_PATH_MAX];

	if (node_path(path, sizeof(path), datadir, PAN_OCSP_KEY, err) == -1 ||
	    key_save(key, path, pass, passlen, err) == -1 ||
	    node_path(path, sizeof(path), datadir, PAN_OCSP_CERT, err) == -1 ||
	    cert_save_pem(cert, path, err) == -1)
		return -1;
	return ocsp_record(datadir, hostname, node_ca, cert, err);
}

int
pan_ocsp_create_local(const char *datadir, const char *hostname,
                      X509 *node_ca, EVP_PKEY *node_key, const char *pass,
                      size_t passlen, struct error *err)
{
	struct cert_request req;
	EVP_PKEY *key;
	X509 *cert = NULL;
	int rc = -1;

	cert_request_init(&req, CERT_PROFILE_OCSP_RESPONDER);
	if ((key = ocsp_key_like(node_ca, err)) == NULL)
		goto out;
	if (cert_request_set_product_cn(&req, hostname, err) == -1 ||
	    cert_request_set_key(&req, key, err) == -1 ||
	    cert_issue(&req, node_ca, node_key, &cert, err) == -1 ||
	    ocsp_save(datadir, hostname, node_ca, key, cert, pass, passlen,
	              err) == -1)
		goto out;
	rc = 0;
out:
	cert_request_free(&req);
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

int
pan_ocsp_ensure(const char *datadir, const char *hostname, const char *pass,
                size_t passlen, struct error *err)
{
	char cpath[PAN_PATH_MAX], kpath[PAN_PATH_MAX], cn[CERT_CN_BUF];
	X509 *node_ca = NULL, *cert = NULL;
	EVP_PKEY *key = NULL;
	X509_REQ *csr = NULL;
	struct signer *s = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	void *zctx = NULL;
	int rc = -1;

	if (node_path(cpath, sizeof(cpath), datadir, PAN_OCSP_CERT, err) ==
	        -1 ||
	    node_path(kpath, sizeof(kpath), datadir, PAN_OCSP_KEY, err) == -1)
		return -1;
	if (file_exists(cpath) && file_exists(kpath))
		return 0;
	log_info(LOG_MAIN, "no OCSP responder certificate yet (%s): making "
	                   "one, issued by the Node CA",
	         cpath);
	if (node_path(cpath, sizeof(cpath), datadir,
	              NODE_CA_DIR "/node-ca.crt", err) == -1 ||
	    (node_ca = cert_load_pem(cpath, err)) == NULL ||
	    (key = ocsp_key_like(node_ca, err)) == NULL ||
	    cert_profile_cn(CERT_PROFILE_OCSP_RESPONDER, hostname, cn,
	                    sizeof(cn), err) == -1 ||
	    (csr = csr_create(key, cn, NULL, 0, err)) == NULL)
		goto out;
	if (csr_to_der(csr, &der, &len) == -1) {
		error_set(err, "cannot encode the OCSP responder CSR");
		goto out;
	}
	/*
	 * A context of our own, terminated before anything is forked: no
	 * ZeroMQ thread or socket outlives this call.
	 */
	if ((zctx = zmq_ctx_new()) == NULL) {
		error_set(err, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((s = signer_connect(zctx, datadir, err)) == NULL)
		goto out;
	if (signer_sign(s, cert_profile_name(CERT_PROFILE_OCSP_RESPONDER),
	                "node-ca", der, len, hostname, 0, NULL, &cert,
	                err) == -1) {
		error_prefix(err, "CA signer");
		goto out;
	}
	if (ocsp_save(datadir, hostname, node_ca, key, cert, pass, passlen,
	              err) == -1)
		goto out;
	log_info(LOG_MAIN, "OCSP responder certificate of %s issued by the "
	                   "Node CA and saved",
	         hostname);
	rc = 0;
out:
	if (rc == -1)
		error_prefix(err, "the PAN's OCSP responder certificate");
	if (s != NULL)
		signer_close(s);
	if (zctx != NULL)
		zmq_ctx_term(zctx);
	free(der);
	X509_REQ_free(csr);
	EVP_PKEY_free(key);
	X509_free(cert);
	X509_free(node_ca);
	return rc;
}

/* --- start reports --- */

static void
ocsp_ready(int *fd, const char *msg)
{
	size_t len = strlen(msg);

	if (*fd == -1)
		return;
	if (write(*fd, msg, len) != (ssize_t)len)
		log_debug(LOG_OCSP, "start report cut short");
	close(*fd);
	*fd = -1;
}

/* Read a start report until EOF: 0 for "ok", else -1 with err set. */
static int
ocsp_read_ready(int fd, const char *who, struct error *err)
{
	char msg[OCSP_READY_MAX];
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int64_t deadline = time_mono_ms() + OCSP_START_TIMEOUT_MS, left;
	size_t got = 0;
	ssize_t n;

	for (;;) {
		if ((left = deadline - time_mono_ms()) <= 0) {
			error_set(err, "%s did not start within %d s", who,
			          OCSP_START_TIMEOUT_MS / 1000);
			return -1;
		}
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR) {
			error_set(err, "poll: %s", strerror(errno));
			return -1;
		}
		if (pfd.revents == 0)
			continue;
		n = read(fd, msg + got, sizeof(msg) - 1 - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0 || (got += (size_t)n) == sizeof(msg) - 1)
			break;
	}
	msg[got] = '\0';
	if (strcmp(msg, "ok") == 0)
		return 0;
	if (got > 0)
		error_set(err, "%s", msg);
	else
		error_set(err, "%s ended before it was ready", who);
	return -1;
}

/* --- the worker: the network-facing responder --- */

static void ocsp_load_signer(struct pan_ocsp_proc *o, const char *keyfile,
                             const char *pass, size_t passlen);

/*
 * The installed generation's Node CA, responder certificate and (from
 * the hand-over copy) its key into *fresh, zeroed first: 0, or -1 with e
 * set and nothing held.
 */
static int
ocsp_load_fresh(const struct pan_ocsp_proc *o, struct pan_ocsp_proc *fresh,
                struct error *e)
{
	char path[PAN_PATH_MAX];

	memset(fresh, 0, sizeof(*fresh));
	fresh->a = o->a;
	if (node_path(path, sizeof(path), o->a->datadir,
	              NODE_CA_DIR "/node-ca.crt", e) == -1 ||
	    (fresh->issuer = cert_load_pem(path, e)) == NULL)
		return -1;
	if (o->handover.buf != NULL)
		ocsp_load_signer(fresh, NODE_CA_DIR "/" SIGNER_OCSP_HANDOVER,
		                 o->handover.buf, o->handover.len);
	if (fresh->signer == NULL) {
		error_set(e, "no readable hand-over copy of the new responder "
		             "key");
		X509_free(fresh->issuer);
		fresh->issuer = NULL;
		return -1;
	}
	return 0;
}

/*
 * In the worker, on SIGHUP: a newer generation that the "ocsp" process
 * took already (ocsp_take_generation(), which left the hand-over copy
 * for us)?  Then a responder for the new Node CA with the new responder
 * certificate and key replaces ours for the HTTP workers, ours answering
 * for the old generation as its older: no connection is dropped.  1
 * taken, 0 nothing newer, -1 (logged) it cannot be: the worker ends and
 * the "ocsp" process starts a new one on what it took.
 */
static int
ocsp_worker_take(struct pan_ocsp_proc *o, struct ocsp_http_slot *slot,
                 struct ocsp_responder **r, struct store *st,
                 const struct ocsp_config *oc)
{
	const char *d = o->a->datadir;
	unsigned gen = node_ca_generation(d);
	struct pan_ocsp_proc fresh;
	struct ocsp_responder *nr = NULL;
	struct error e = {{0}};
	char path[PAN_PATH_MAX];

	if (gen <= o->gen)
		return 0;
	if (ocsp_load_fresh(o, &fresh, &e) == -1)
		goto fail;
	if ((nr = ocsp_responder_new(fresh.signer, fresh.key, fresh.issuer, st,
	                             oc, &e)) == NULL)
		goto fail;
	ocsp_http_slot_replace(slot, nr); /* *r is nr's older now */
	*r = nr;
	o->gen = gen;
	if (node_path(path, sizeof(path), d,
	              NODE_CA_DIR "/" SIGNER_OCSP_HANDOVER, &e) == 0)
		(void)unlink(path);
	log_info(LOG_OCSP,
	         "root CA chain generation %u taken in place: the new "
	         "responder certificate answers for the new Node CA",
	         gen);
	X509_free(fresh.issuer);
	X509_free(fresh.signer);
	EVP_PKEY_free(fresh.key);
	return 1;
fail:
	log_error(LOG_OCSP,
	          "root CA chain generation %u: cannot switch in place: %s; "
	          "ending, to be started again on the new files",
	          gen, e.msg);
	X509_free(fresh.issuer);
	X509_free(fresh.signer);
	EVP_PKEY_free(fresh.key);
	return -1;
}

static int
ocsp_worker_main(void *arg)
{
	struct pan_ocsp_proc *o = arg;
	const struct pan_ocsp_settings *set = &o->a->set;
	struct ocsp_responder *r = NULL;
	struct ocsp_http_slot slot;
	struct http_server *srv = NULL;
	struct store *st = NULL;
	struct store_opts ro = {.read_only = true};
	struct ocsp_config oc;
	struct http_config hc;
	struct error e = {{0}};
	char path[PAN_PATH_MAX];
	int64_t next = 0, now;
	bool first = true, stop = false;
	int sigfd = -1, sig, ret = 1;

	/* Only the start report pipe stays: not the supervisor's signalfd. */
	if (proc_close_fds(&o->wready, 1, &e) == -1)
		goto out;
	(void)signal(SIGPIPE, SIG_IGN);
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (node_path(path, sizeof(path), o->a->datadir, NODE_STORE_DIR, &e) ==
	        -1 ||
	    store_open(path, &ro, &st, &e) == -1)
		goto out;
	memset(&oc, 0, sizeof(oc));
	oc.nonce = set->nonce;
	oc.validity = set->validity;
	if ((r = ocsp_responder_new(o->signer, o->key, o->issuer, st, &oc,
	                            &e)) == NULL ||
	    ocsp_generations_attach(r, o->gens, o->ngens, st, &oc, &e) == -1)
		goto out;
	ocsp_http_slot_init(&slot, r);
	memset(&hc, 0, sizeof(hc));
	hc.address = set->host;
	hc.port = set->port;
	hc.workers = set->workers;
	hc.timeout = set->timeout;
	hc.tls = NULL; /* RFC 6960 A.1: OCSP over plain HTTP */
	hc.category = LOG_OCSP;
	if ((srv = http_server_start(&hc, ocsp_http_handle_slot, &slot, &e)) ==
	    NULL)
		goto out;
	log_info(LOG_OCSP,
	         "OCSP responder of %s for the certificates of its Node CA "
	         "listening on http://%s%s%s:%u%s, %u workers, pid %ld; nonces "
	         "%s, responses valid %lld s; %s",
	         o->a->hostname, set->family == AF_INET6 ? "[" : "", set->host,
	         set->family == AF_INET6 ? "]" : "",
	         (unsigned)http_server_port(srv), OCSP_HTTP_PATH,
	         http_server_workers(srv), (long)getpid(),
	         set->nonce ? "on" : "off (RFC 5019)", (long long)set->validity,
	         ocsp_responder_can_sign(r)
	             ? "signing with the OCSP responder key"
	             : "NO responder key: answering tryLater");
	ocsp_ready(&o->wready, "ok");
	while (!stop) {
		struct pollfd pfd = {.fd = sigfd, .events = POLLIN};

		now = time_mono_ms();
		if (now >= next) {
			ocsp_http_refresh(r, OCSP_WHAT, first);
			first = false;
			next = time_mono_ms() + OCSP_HTTP_REFRESH_MS;
			continue;
		}
		if (poll(&pfd, 1, (int)(next - now)) == -1 && errno != EINTR) {
			log_error(LOG_OCSP, "poll: %s", strerror(errno));
			goto out;
		}
		while ((sig = proc_signal_read(sigfd, NULL)) > 0) {
			if (sig == SIGTERM || sig == SIGINT)
				stop = true;
			else if (sig == SIGHUP) {
				if (ocsp_worker_take(o, &slot, &r, st, &oc) ==
				    -1)
					goto out;
				next = 0; /* refresh now */
			}
		}
	}
	ret = 0;
out:
	if (ret != 0 && e.msg[0] != '\0') {
		log_error(LOG_OCSP, "OCSP responder cannot serve: %s", e.msg);
		ocsp_ready(&o->wready, e.msg);
	}
	ocsp_ready(&o->wready, "failed");
	http_server_stop(srv);
	ocsp_responder_free(r);
	store_close(st);
	secret_wipe(&o->handover);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}

/* Fork the worker and wait for its report; *pid 0 when it failed. */
static int
ocsp_worker_start(struct pan_ocsp_proc *o, pid_t *pid, struct error *err)
{
	int fds[2], st, rc;

	*pid = 0;
	if (pipe2(fds, O_CLOEXEC) == -1) {
		error_set(err, "pipe: %s", strerror(errno));
		return -1;
	}
	o->wready = fds[1];
	rc = proc_fork(PAN_OCSP_WORKER, ocsp_worker_main, o, pid, err);
	close(fds[1]);
	o->wready = -1;
	if (rc == -1) {
		close(fds[0]);
		*pid = 0;
		return -1;
	}
	rc = ocsp_read_ready(fds[0], PAN_OCSP_WORKER, err);
	close(fds[0]);
	if (rc == -1) {
		(void)kill(*pid, SIGTERM);
		while (waitpid(*pid, &st, 0) == -1 && errno == EINTR)
			;
		*pid = 0;
	}
	return rc;
}

/* --- the "ocsp" process: keeps the key, restarts the worker --- */

/*
 * Responder certificate and key (keyfile under D, decrypted with pass);
 * a failure leaves both NULL (tryLater).
 */
static void
ocsp_load_signer(struct pan_ocsp_proc *o, const char *keyfile,
                 const char *pass, size_t passlen)
{
	const struct pan_ocsp_args *a = o->a;
	char path[PAN_PATH_MAX];
	struct error e = {{0}};

	if (node_path(path, sizeof(path), a->datadir, PAN_OCSP_CERT, &e) ==
	        -1 ||
	    (o->signer = cert_load_pem(path, &e)) == NULL ||
	    node_path(path, sizeof(path), a->datadir, keyfile, &e) == -1 ||
	    (o->key = key_load(path, pass, passlen, &e)) == NULL)
		goto fail;
	if (X509_check_private_key(o->signer, o->key) != 1) {
		error_set(&e, "%s does not match its certificate", path);
		goto fail;
	}
	/* RFC 6960 4.2.2.2: a delegate of the CA whose certificates it
	 * answers for; anything else would be refused by every client. */
	if (X509_check_issued(o->issuer, o->signer) != X509_V_OK ||
	    !(X509_get_extended_key_usage(o->signer) & XKU_OCSP_SIGN)) {
		error_set(&e, "the responder certificate is not an OCSP "
		              "signing certificate of the Node CA");
		goto fail;
	}
	return;
fail:
	ERR_clear_error();
	log_error(LOG_OCSP,
	          "OCSP responder key unavailable: %s; every request will be "
	          "answered tryLater",
	          e.msg);
	X509_free(o->signer);
	EVP_PKEY_free(o->key);
	o->signer = NULL;
	o->key = NULL;
}

/*
 * On SIGHUP: a root CA chain generation newer than ours installed (`pan ca
 * replace-root-chain`, pan/rootchain.c)?  Then ours becomes the first of
 * the earlier ones, and the new Node CA, responder certificate and its
 * key (the hand-over copy the CA signer left, which is removed once read)
 * take its place.  1 when taken (the worker must be made again), 0 when
 * nothing changed (no new generation, or its key cannot be read: logged,
 * it is taken at the next start of `pan run`).
 */
static int
ocsp_take_generation(struct pan_ocsp_proc *o)
{
	const struct pan_ocsp_args *a = o->a;
	unsigned gen = node_ca_generation(a->datadir);
	struct pan_ocsp_proc fresh;
	struct error e = {{0}};

	if (gen <= o->gen)
		return 0;
	if (ocsp_load_fresh(o, &fresh, &e) == -1) {
		log_error(LOG_OCSP,
		          "root CA chain generation %u: %s; still answering for "
		          "generation %u only until `pan run` starts again",
		          gen, e.msg, o->gen);
		return 0;
	}
	/* The oldest goes when the list is full. */
	if (o->ngens == OCSP_GENERATIONS_MAX)
		ocsp_generations_free(&o->gens[--o->ngens], 1);
	memmove(&o->gens[1], &o->gens[0], o->ngens * sizeof(o->gens[0]));
	o->gens[0].gen = o->gen;
	o->gens[0].issuer = o->issuer;
	o->gens[0].signer = o->signer;
	o->gens[0].key = o->key;
	o->ngens++;
	o->issuer = fresh.issuer;
	o->signer = fresh.signer;
	o->key = fresh.key;
	o->gen = gen;
	/* The copy stays for the worker, which removes it once taken. */
	log_info(LOG_OCSP,
	         "root CA chain generation %u: the new responder certificate "
	         "answers for the new Node CA, generation %u's for its own",
	         gen, o->gens[0].gen);
	return 1;
}

static int
ocsp_main(void *arg)
{
	struct pan_ocsp_args *a = arg;
	struct pan_ocsp_proc o;
	struct error e = {{0}};
	char path[PAN_PATH_MAX];
	pid_t worker = 0;
	int64_t started = 0, restart_at = 0, backoff = OCSP_BACKOFF_MIN_MS;
	int64_t now, wait;
	bool stop = false;
	int sig, st, ret = 1;

	memset(&o, 0, sizeof(o));
	o.a = a;
	o.sigfd = -1;
	o.wready = -1;
	/* Nothing inherited stays but the report pipe. */
	if (proc_close_fds(&a->ready_fd, 1, &e) == -1)
		goto out;
	(void)signal(SIGPIPE, SIG_IGN);
	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/node-ca.crt", &e) == -1 ||
	    (o.issuer = cert_load_pem(path, &e)) == NULL)
		goto out;
	ocsp_load_signer(&o, PAN_OCSP_KEY, a->pass, a->passlen);
	o.gen = node_ca_generation(a->datadir);
	o.ngens = ocsp_generations_load(a->datadir, "node-ca.crt", a->pass,
	                                a->passlen, o.gens);
	/* A promoted SAN: the former primary's Node CA too (docs/san.md). */
	if (o.ngens < OCSP_GENERATIONS_MAX) {
		struct error ie = {{0}};
		int got = ocsp_imported_load(a->datadir, NODE_CA_IMPORT_DIR,
		                             a->pass, a->passlen,
		                             &o.gens[o.ngens], &ie);

		if (got == 1)
			o.ngens++;
		else if (got == -1)
			log_error(LOG_OCSP,
			          "the imported Node CA: %s; its certificates "
			          "are answered unauthorized",
			          ie.msg);
	}
	secure_zero(a->pass, a->passlen);
	secure_zero(a->parent_pass, a->passlen);
	if (a->handover != NULL &&
	    secret_keep(&o.handover, a->handover->buf, a->handover->len, &e) ==
	        -1)
		goto out;
	/* Blocked before the worker exists; it starts unblocked. */
	if ((o.sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (ocsp_worker_start(&o, &worker, &e) == -1)
		goto out;
	started = time_mono_ms();
	ocsp_ready(&a->ready_fd, "ok");
	while (!stop) {
		struct pollfd pfd = {.fd = o.sigfd, .events = POLLIN};

		now = time_mono_ms();
		if (worker == 0 && now >= restart_at) {
			struct error we = {{0}};

			log_info(LOG_OCSP, "restarting the OCSP responder");
			if (ocsp_worker_start(&o, &worker, &we) == 0)
				started = time_mono_ms();
			else {
				log_error(LOG_OCSP, "%s; next try in %lld s",
				          we.msg, (long long)(backoff / 1000));
				restart_at = time_mono_ms() + backoff;
				backoff = backoff * 2 > OCSP_BACKOFF_MAX_MS
				              ? OCSP_BACKOFF_MAX_MS
				              : backoff * 2;
			}
			continue;
		}
		wait = worker == 0 ? restart_at - now : -1;
		if (poll(&pfd, 1, wait < 0 ? -1 : (int)wait) == -1 &&
		    errno != EINTR) {
			log_error(LOG_OCSP, "poll: %s", strerror(errno));
			goto out;
		}
		while ((sig = proc_signal_read(o.sigfd, NULL)) > 0) {
			if (sig == SIGTERM || sig == SIGINT)
				stop = true;
			else if (sig == SIGHUP) {
				/*
				 * A new generation: ours first (for a worker
				 * started later), then the worker's, which
				 * takes it in place without dropping a
				 * connection (or ends, and is started again
				 * on what we took).
				 */
				(void)ocsp_take_generation(&o);
				if (worker > 0)
					(void)kill(worker, SIGHUP);
			}
		}
		if (worker > 0 && !stop) {
			static const char *const names[] = {PAN_OCSP_WORKER};
			pid_t pids[1] = {worker};

			if (proc_reap(pids, names, 1, &st) <= 0)
				continue;
			worker = 0;
			now = time_mono_ms();
			if (now - started >= OCSP_STABLE_MS)
				backoff = OCSP_BACKOFF_MIN_MS;
			restart_at = now + backoff;
			log_error(LOG_OCSP,
			          "the OCSP responder ended; restarting it in "
			          "%lld s",
			          (long long)(backoff / 1000));
			backoff = backoff * 2 > OCSP_BACKOFF_MAX_MS
			              ? OCSP_BACKOFF_MAX_MS
			              : backoff * 2;
		}
	}
	ret = 0;
out:
	if (ret != 0 && e.msg[0] != '\0') {
		log_error(LOG_OCSP, "OCSP responder cannot start: %s", e.msg);
		ocsp_ready(&a->ready_fd, e.msg);
	}
	ocsp_ready(&a->ready_fd, "failed");
	secure_zero(a->pass, a->passlen);
	secure_zero(a->parent_pass, a->passlen);
	if (worker > 0 && proc_stop(worker, PAN_OCSP_WORKER,
	                            OCSP_STOP_TIMEOUT_MS, &e) == -1)
		log_warn(LOG_OCSP, "stopping the OCSP responder: %s", e.msg);
	X509_free(o.issuer);
	X509_free(o.signer);
	EVP_PKEY_free(o.key);
	ocsp_generations_free(o.gens, o.ngens);
	secret_wipe(&o.handover);
	if (o.sigfd != -1)
		close(o.sigfd);
	return ret;
}

int
pan_ocsp_spawn(const char *datadir, const char *hostname,
               const struct pan_ocsp_settings *set, const char *pass,
               size_t passlen, const struct secret *handover, pid_t *pid,
               struct error *err)
{
	struct pan_ocsp_args *a = NULL;
	int fds[2] = {-1, -1}, st, ret = -1;

	*pid = 0;
	if ((a = calloc(1, sizeof(*a))) == NULL ||
	    (a->pass = malloc(passlen + 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	if ((size_t)snprintf(a->datadir, sizeof(a->datadir), "%s", datadir) >=
	        sizeof(a->datadir) ||
	    (size_t)snprintf(a->hostname, sizeof(a->hostname), "%s",
	                     hostname) >= sizeof(a->hostname)) {
		error_set(err, "data directory or host name too long");
		goto out;
	}
	if (passlen > 0)
		memcpy(a->pass, pass, passlen);
	a->pass[passlen] = '\0';
	a->passlen = passlen;
	a->parent_pass = (char *)(uintptr_t)pass;
	a->set = *set;
	a->handover = handover;
	if (pipe2(fds, O_CLOEXEC) == -1) {
		error_set(err, "pipe: %s", strerror(errno));
		goto out;
	}
	a->ready_fd = fds[1];
	if (proc_fork(PAN_OCSP_PROCESS, ocsp_main, a, pid, err) == -1) {
		*pid = 0;
		goto out;
	}
	close(fds[1]);
	fds[1] = -1;
	if (ocsp_read_ready(fds[0], PAN_OCSP_PROCESS, err) == -1) {
		error_prefix(err, "OCSP responder");
		(void)kill(*pid, SIGTERM);
		while (waitpid(*pid, &st, 0) == -1 && errno == EINTR)
			;
		*pid = 0;
		goto out;
	}
	ret = 0;
out:
	if (fds[0] != -1)
		close(fds[0]);
	if (fds[1] != -1)
		close(fds[1]);
	if (a != NULL) {
		if (a->pass != NULL) {
			secure_zero(a->pass, a->passlen);
			free(a->pass);
		}
		free(a);
	}
	return ret;
}

int
pan_ocsp_settings(const struct config *cfg, struct pan_ocsp_settings *set,
                  struct error *err)
{
	struct config_address ol;

	memset(set, 0, sizeof(*set));
	/*
	 * Unset, it follows messaging.listen's address when that is one
	 * address: a lab that puts its nodes on addresses of one host must
	 * not have the PAN take 2560 on all of them (the PSNs' port).
	 */
	if (config_listen_address(cfg, "ocsp.listen", "messaging.listen", &ol,
	                          err) == -1)
		return -1;
	snprintf(set->host, sizeof(set->host), "%s", ol.host);
	set->port = ol.port;
	set->family = ol.family;
	set->workers = (unsigned)config_get_int(cfg, "ocsp.workers");
	set->timeout = (unsigned)config_get_duration(cfg, "ocsp.timeout");
	set->nonce = config_get_bool(cfg, "ocsp.nonce");
	set->validity = config_get_duration(cfg, "ocsp.validity");
	return 0;
}
