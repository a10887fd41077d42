/*
 * tls_ceiling: the reference server of the EST benchmark
 * (docs/PERFORMANCE.md).  It does what the EST server does before any EST
 * work, and nothing else: a full mutual-TLS handshake with the same TLS
 * context (http_tls_ctx_new(): same certificate and key, same chain sent,
 * TLS 1.2 minimum, same options, a client certificate requested), then the
 * same client certificate check as EST (chain_verify() to the deployment
 * root, purpose TLS client, the CA chain as untrusted helpers), then a tiny
 * fixed HTTP answer, and it closes.  est_bench --handshake-only against it
 * measures the mutual-TLS handshake ceiling of this machine.
 *
 *	tls_ceiling --listen ADDR:PORT --cert F --key F [--passphrase-file F]
 *	    --root F [--chain F] [--workers N] [--engine epoll|http]
 *	    [--timeout S]
 *
 * --engine epoll (default): N worker threads (default one per online CPU),
 *   each with its own SO_REUSEPORT socket and a non-blocking epoll loop of
 *   plain OpenSSL calls; the least overhead we know how to write.
 * --engine http: the lab's own HTTP server (common/http.c, libevent) with
 *   a handler that does the same check and answers "ok": the same stack
 *   as the EST server, so est_bench against it separates the cost of the
 *   stack from the cost of enrollment.
 *
 * The answer is 200 "ok" when the client certificate verified, 403 when
 * it did not, 401 when none was sent.  Prints "ready ADDR:PORT" once
 * serving; on SIGTERM or SIGINT prints the counts and exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "benchutil.h"
#include "cert.h"
#include "chain.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "util.h"

#define CEIL_WORKERS_MAX 64
#define CEIL_BACKLOG     1024
/* Largest request head we read; the client sends ~60 bytes. */
#define CEIL_REQ_MAX 4096
#define CEIL_EVENTS  64

static const char ANSWER_OK[] = "HTTP/1.1 200 OK\r\n"
                                "Content-Type: text/plain\r\n"
                                "Content-Length: 3\r\n"
                                "Connection: close\r\n\r\nok\n";
static const char ANSWER_FORBIDDEN[] = "HTTP/1.1 403 Forbidden\r\n"
                                       "Content-Type: text/plain\r\n"
                                       "Content-Length: 10\r\n"
                                       "Connection: close\r\n\r\nforbidden\n";
static const char ANSWER_NOCERT[] = "HTTP/1.1 401 Unauthorized\r\n"
                                    "Content-Type: text/plain\r\n"
                                    "Content-Length: 8\r\n"
                                    "Connection: close\r\n\r\nno cert\n";

/* What every connection needs; read-only once the workers run. */
static SSL_CTX *ctx;
static STACK_OF(X509) *anchors;  /* the deployment root */
static STACK_OF(X509) *cachain;  /* the CA chain, untrusted helpers */
static int timeout_s = 10;
static atomic_long n_ok, n_forbidden, n_nocert, n_failed, n_timeout;
static atomic_bool stopping;

static void
usage(void)
{
	fprintf(stderr, "usage: tls_ceiling --listen ADDR:PORT --cert F "
	                "--key F [--passphrase-file F]\n"
	                "    --root F [--chain F] [--workers N] "
	                "[--engine epoll|http] [--timeout S]\n");
	exit(2);
}

/*
 * The EST server's client certificate check (est.c est_auth_cert), minus
 * the revocation lookup: the path to the root through what the client sent
 * and our CA chain.  Returns the answer to send.
 */
static const char *
check_client(SSL *ssl, size_t *len)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	STACK_OF(X509) *sent = SSL_get_peer_cert_chain(ssl), *untrusted;
	struct error err = {{0}};
	const char *ans = ANSWER_FORBIDDEN;
	int i;

	*len = sizeof(ANSWER_FORBIDDEN) - 1;
	if (cert == NULL) {
		atomic_fetch_add(&n_nocert, 1);
		*len = sizeof(ANSWER_NOCERT) - 1;
		return ANSWER_NOCERT;
	}
	if ((untrusted = sk_X509_new_null()) == NULL)
		return ans;
	for (i = 0; sent != NULL && i < sk_X509_num(sent); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(sent, i)))
			goto out;
	for (i = 0; i < sk_X509_num(cachain); i++)
		if (!sk_X509_push(untrusted, sk_X509_value(cachain, i)))
			goto out;
	if (chain_verify(cert, untrusted, anchors, CHAIN_PURPOSE_TLS_CLIENT,
	                 NULL, &err) == 0) {
		ans = ANSWER_OK;
		*len = sizeof(ANSWER_OK) - 1;
	}
out:
	if (ans == ANSWER_OK)
		atomic_fetch_add(&n_ok, 1);
	else
		atomic_fetch_add(&n_forbidden, 1);
	sk_X509_free(untrusted);
	return ans;
}

/* --- engine epoll --- */

enum conn_state { C_HANDSHAKE, C_READ, C_WRITE };

struct conn {
	int fd;
	SSL *ssl;
	enum conn_state state;
	const char *ans; /* the answer, once chosen */
	size_t anslen, sent;
	size_t reqlen;
	time_t started;
	struct conn *prev, *next; /* the worker's list, for the timeout sweep */
	char req[CEIL_REQ_MAX + 1];
};

struct worker {
	pthread_t thread;
	int lfd, ep;
	struct conn *conns;
};

static void
conn_close(struct worker *w, struct conn *c)
{
	(void)epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
	SSL_free(c->ssl);
	close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c);
}

/* Wait for what OpenSSL wants; false when the connection is done for. */
static bool
conn_wait(struct worker *w, struct conn *c, int ret)
{
	struct epoll_event ev = {0};

	switch (SSL_get_error(c->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		ev.events = EPOLLIN;
		break;
	case SSL_ERROR_WANT_WRITE:
		ev.events = EPOLLOUT;
		break;
	default:
		ERR_clear_error();
		return false;
	}
	ev.data.ptr = c;
	return epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0;
}

/* Move a connection along as far as it goes without blocking. */
static void
conn_step(struct worker *w, struct conn *c)
{
	int n;

	for (;;) {
		switch (c->state) {
		case C_HANDSHAKE:
			if ((n = SSL_do_handshake(c->ssl)) != 1) {
				if (!conn_wait(w, c, n))
					goto fail;
				return;
			}
			c->ans = check_client(c->ssl, &c->anslen);
			c->state = C_READ;
			break;
		case C_READ:
			n = SSL_read(c->ssl, c->req + c->reqlen,
			             (int)(CEIL_REQ_MAX - c->reqlen));
			if (n <= 0) {
				if (!conn_wait(w, c, n))
					goto fail;
				return;
			}
			c->reqlen += (size_t)n;
			c->req[c->reqlen] = '\0';
			if (strstr(c->req, "\r\n\r\n") != NULL)
				c->state = C_WRITE;
			else if (c->reqlen == CEIL_REQ_MAX)
				goto fail;
			break;
		case C_WRITE:
			n = SSL_write(c->ssl, c->ans + c->sent,
			              (int)(c->anslen - c->sent));
			if (n <= 0) {
				if (!conn_wait(w, c, n))
					goto fail;
				return;
			}
			c->sent += (size_t)n;
			if (c->sent < c->anslen)
				break;
			/* One close_notify, not waiting for the client's. */
			(void)SSL_shutdown(c->ssl);
			ERR_clear_error();
			conn_close(w, c);
			return;
		}
	}
fail:
	atomic_fetch_add(&n_failed, 1);
	conn_close(w, c);
}

static void
worker_accept(struct worker *w)
{
	struct epoll_event ev = {0};
	struct conn *c;
	int fd, one = 1;

	while ((fd = accept4(w->lfd, NULL, NULL,
	                     SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		                 sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL ||
		    (c->ssl = SSL_new(ctx)) == NULL ||
		    SSL_set_fd(c->ssl, fd) != 1) {
			if (c != NULL)
				SSL_free(c->ssl);
			free(c);
			close(fd);
			atomic_fetch_add(&n_failed, 1);
			continue;
		}
		SSL_set_accept_state(c->ssl);
		c->fd = fd;
		c->started = time(NULL);
		c->next = w->conns;
		if (w->conns != NULL)
			w->conns->prev = c;
		w->conns = c;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
			atomic_fetch_add(&n_failed, 1);
			conn_close(w, c);
			continue;
		}
		conn_step(w, c);
	}
}

/* Drop connections older than the timeout: a stuck client holds nothing. */
static void
worker_sweep(struct worker *w)
{
	time_t now = time(NULL);
	struct conn *c = w->conns, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		if (now - c->started >= timeout_s) {
			atomic_fetch_add(&n_timeout, 1);
			conn_close(w, c);
		}
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[CEIL_EVENTS];
	time_t last_sweep = time(NULL);
	int n, i;

	while (!atomic_load(&stopping)) {
		n = epoll_wait(w->ep, evs, CEIL_EVENTS, 1000);
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == w)
				worker_accept(w);
			else if (evs[i].data.ptr != NULL)
				conn_step(w, evs[i].data.ptr);
		}
		if (time(NULL) != last_sweep) {
			last_sweep = time(NULL);
			worker_sweep(w);
		}
	}
	while (w->conns != NULL)
		conn_close(w, w->conns);
	return NULL;
}

static int
listen_socket(const struct addrinfo *ai, bool reuseport)
{
	int fd, one = 1;

	if ((fd = socket(ai->ai_family,
	                 SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ==
	        -1 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
	                             sizeof(one)) == -1) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 ||
	    listen(fd, CEIL_BACKLOG) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
run_epoll(const char *host, const char *port, unsigned nworkers,
          const sigset_t *set)
{
	struct worker workers[CEIL_WORKERS_MAX];
	struct addrinfo hints, *ai = NULL;
	struct epoll_event ev = {0};
	unsigned i;
	int probe, sig;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
	if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
		bench_die("--listen %s:%s: not an address", host, port);
	/*
	 * Refuse a port someone listens on, as common/http.c does: with
	 * SO_REUSEPORT we would silently share it.
	 */
	if ((probe = listen_socket(ai, false)) == -1)
		bench_die("cannot listen on %s:%s: %s", host, port, strerror(errno));
	close(probe);
	memset(workers, 0, sizeof(workers));
	for (i = 0; i < nworkers; i++) {
		struct worker *w = &workers[i];

		if ((w->lfd = listen_socket(ai, true)) == -1 ||
		    (w->ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
			bench_die("cannot listen on %s:%s: %s", host, port,
			    strerror(errno));
		ev.events = EPOLLIN;
		ev.data.ptr = w;
		if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd, &ev) == -1)
			bench_die("epoll_ctl: %s", strerror(errno));
	}
	freeaddrinfo(ai);
	for (i = 0; i < nworkers; i++)
		if (pthread_create(&workers[i].thread, NULL, worker_main,
		                   &workers[i]) != 0)
			bench_die("%s", "cannot start a worker");
	printf("ready %s:%s epoll %u workers\n", host, port, nworkers);
	fflush(stdout);
	while (sigwait(set, &sig) == 0 && sig != SIGTERM && sig != SIGINT)
		;
	atomic_store(&stopping, true);
	for (i = 0; i < nworkers; i++) {
		pthread_join(workers[i].thread, NULL);
		close(workers[i].lfd);
		close(workers[i].ep);
	}
}

/* --- engine http --- */

static void
ceiling_handler(struct http_request *req, void *arg)
{
	SSL *ssl = http_request_ssl(req);
	const char *ans;
	size_t len;

	(void)arg;
	if (ssl == NULL) {
		http_reply_text(req, 400, "TLS only");
		return;
	}
	ans = check_client(ssl, &len);
	if (ans == ANSWER_OK)
		http_reply(req, 200, "text/plain", "ok\n", 3);
	else if (ans == ANSWER_NOCERT)
		http_reply_text(req, 401, "no cert");
	else
		http_reply_text(req, 403, "forbidden");
}

static void
run_http(const char *host, const char *port, unsigned nworkers,
         const sigset_t *set)
{
	struct http_config cfg;
	struct http_server *srv;
	struct error err = {{0}};
	int sig;

	memset(&cfg, 0, sizeof(cfg));
	cfg.address = host;
	cfg.port = (uint16_t)atoi(port);
	cfg.workers = nworkers;
	cfg.timeout = (unsigned)timeout_s;
	cfg.tls = ctx;
	cfg.category = LOG_EST;
	srv = http_server_start(&cfg, ceiling_handler, NULL, &err);
	if (srv == NULL)
		bench_die("%s", err.msg);
	printf("ready %s:%s http %u workers\n", host, port,
	       http_server_workers(srv));
	fflush(stdout);
	while (sigwait(set, &sig) == 0 && sig != SIGTERM && sig != SIGINT)
		;
	http_server_stop(srv);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"passphrase-file", required_argument, NULL, 'P'},
	    {"root", required_argument, NULL, 'r'},
	    {"chain", required_argument, NULL, 'C'},
	    {"workers", required_argument, NULL, 'w'},
	    {"engine", required_argument, NULL, 'e'},
	    {"timeout", required_argument, NULL, 't'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_arg = NULL, *certf = NULL, *keyf = NULL;
	const char *passf = NULL;
	const char *rootf = NULL, *chainf = NULL, *engine = "epoll";
	struct error err = {{0}};
	STACK_OF(X509) *sent;
	char host[256], *colon, *end;
	char *pass = NULL;
	size_t passlen = 0;
	long nworkers = 0, cpus;
	X509 *cert;
	EVP_PKEY *key;
	sigset_t set;
	int c, i;

	bench_prog = "tls_ceiling";
	bench_prog = "tls_ceiling";
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_arg = optarg;
			break;
		case 'c':
			certf = optarg;
			break;
		case 'k':
			keyf = optarg;
			break;
		case 'P':
			passf = optarg;
			break;
		case 'r':
			rootf = optarg;
			break;
		case 'C':
			chainf = optarg;
			break;
		case 'w':
			nworkers = strtol(optarg, &end, 10);
			if (*end != '\0' || nworkers < 1 ||
			    nworkers > CEIL_WORKERS_MAX)
				bench_die("--workers: '%s' is not a number from 1 "
				    "to %d",
				    optarg, CEIL_WORKERS_MAX);
			break;
		case 'e':
			engine = optarg;
			break;
		case 't':
			timeout_s = (int)strtol(optarg, &end, 10);
			if (*end != '\0' || timeout_s < 1 || timeout_s > 300)
				bench_die("--timeout: '%s' is not a number from 1 "
				    "to 300",
				    optarg);
			break;
		default:
			usage();
		}
	}
	if (optind != argc || listen_arg == NULL || certf == NULL ||
	    keyf == NULL || rootf == NULL)
		usage();
	if (strcmp(engine, "epoll") != 0 && strcmp(engine, "http") != 0)
		bench_die("--engine: '%s' is not epoll or http", engine);
	if ((colon = strrchr(listen_arg, ':')) == NULL ||
	    (size_t)(colon - listen_arg) >= sizeof(host) || colon == listen_arg)
		bench_die("--listen %s: ADDR:PORT expected", listen_arg);
	memcpy(host, listen_arg, (size_t)(colon - listen_arg));
	host[colon - listen_arg] = '\0';
	{
		long p = strtol(colon + 1, &end, 10);

		if (*end != '\0' || p < 1 || p > 65535)
			bench_die("--listen %s: bad port", listen_arg);
	}
	if (nworkers == 0) {
		/* One per online CPU, as the EST server (est.workers 0). */
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		nworkers = cpus < 1 ? 1
		           : cpus > CEIL_WORKERS_MAX ? CEIL_WORKERS_MAX
		                                     : cpus;
	}
	if (log_open("tls-ceiling", "ceiling", NULL, true, &err) == -1)
		bench_die("%s", err.msg);

	if (passf != NULL &&
	    (pass = passphrase_load(passf, NULL, &passlen, &err)) == NULL)
		bench_die("%s", err.msg);
	if ((cert = cert_load_pem(certf, &err)) == NULL)
		bench_die("%s", err.msg);
	if (pass != NULL) {
		if ((key = key_load(keyf, pass, passlen, &err)) == NULL)
			bench_die("%s", err.msg);
	} else {
		/* A test fixture's plain key (est_harness writes those). */
		FILE *f = fopen(keyf, "r");

		if (f == NULL)
			bench_die("%s: %s", keyf, strerror(errno));
		key = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
		fclose(f);
		if (key == NULL)
			bench_die("%s: not a plain PEM private key (encrypted? give "
			    "--passphrase-file)", keyf);
	}
	if (pass != NULL)
		passphrase_free(pass, passlen);
	if ((anchors = chain_load_pem(rootf, &err)) == NULL)
		bench_die("%s", err.msg);
	if (chainf != NULL) {
		if ((cachain = chain_load_pem(chainf, &err)) == NULL)
			bench_die("%s", err.msg);
	} else if ((cachain = sk_X509_new_null()) == NULL)
		bench_die("%s", "out of memory");
	/* Send what the EST server sends: the chain without the root. */
	if ((sent = sk_X509_new_null()) == NULL)
		bench_die("%s", "out of memory");
	for (i = 0; i < sk_X509_num(cachain); i++) {
		X509 *x = sk_X509_value(cachain, i);

		if (X509_check_issued(x, x) != X509_V_OK &&
		    !sk_X509_push(sent, x))
			bench_die("%s", "out of memory");
	}
	if ((ctx = http_tls_ctx_new(cert, key, sent, &err)) == NULL)
		bench_die("%s", err.msg);
	sk_X509_free(sent);

	/* Signals by sigwait() here; the workers inherit the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	(void)signal(SIGPIPE, SIG_IGN);

	if (strcmp(engine, "epoll") == 0)
		run_epoll(host, colon + 1, (unsigned)nworkers, &set);
	else
		run_http(host, colon + 1, (unsigned)nworkers, &set);

	printf("tls_ceiling: %ld verified, %ld refused, %ld without "
	       "certificate, %ld failed, %ld timed out\n",
	       atomic_load(&n_ok), atomic_load(&n_forbidden),
	       atomic_load(&n_nocert), atomic_load(&n_failed),
	       atomic_load(&n_timeout));
	SSL_CTX_free(ctx);
	chain_free(anchors);
	chain_free(cachain);
	X509_free(cert);
	EVP_PKEY_free(key);
	log_close();
	return 0;
}
