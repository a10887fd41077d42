/*
 * http: multi-threaded HTTP/HTTPS server on libevent's evhttp (see http.h
 * for the model).  Everything a worker touches after start belongs to that
 * worker's thread, except the current SSL_CTX, which is read under a mutex
 * when a connection is accepted.
 *
 * Per-connection state on TLS listeners (the total deadline and the
 * connection count) rides on the SSL object as ex_data: evhttp frees the
 * bufferevent, which frees the SSL, which runs our free function.  libevent
 * 2.1 has no hook of its own for "connection closed" before the first
 * request, and no total request deadline (2.2 adds both).
 *
 * Plain listeners (OCSP) have no SSL to carry it, so their connections are
 * kept on a per-worker list, each holding a reference on its bufferevent
 * (bufferevent_incref): the memory stays valid whatever evhttp does, and a
 * sweep notices the ones evhttp has freed (bufferevent_free() clears the
 * callbacks; evhttp's event callback is set for as long as it uses the
 * connection) and drops our reference, which closes the socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include <openssl/err.h>

#include "http.h"
#include "log.h"
#include "util.h"

/* Pending connections the kernel queues per listening socket. */
#define HTTP_BACKLOG 1024
/* Longest decoded request path we pass to handlers. */
#define HTTP_PATH_MAX 2048
/* TLS session id context (any constant: we run one service per port). */
#define HTTP_SESSION_ID_CTX "iselab-http"
/* Bytes of the RFC 9266 tls-exporter value. */
#define HTTP_EXPORTER_LEN 32

struct http_worker {
	struct http_server *srv; /* back pointer */
	pthread_t thread;        /* valid when started */
	bool started;            /* thread created */
	int fd;                  /* our SO_REUSEPORT listening socket */
	struct event_base *base; /* this worker's loop */
	struct evhttp *http;     /* this worker's evhttp */
	unsigned nconns;         /* open connections (worker only) */
	struct http_conn *plains; /* plain listeners: our connections */
	struct event *sweep;      /* plain listeners: frees what evhttp let go */
	struct http_linger *lingers; /* closing connections (worker only) */
	unsigned nlingers;           /* entries in lingers */
};

struct http_server {
	http_handler handler;     /* application entry point */
	void *arg;                /* its argument */
	struct timeval timeout;   /* idle timeout and request deadline */
	unsigned max_conns;       /* per worker, TLS */
	uint16_t port;            /* bound port */
	enum log_category cat;    /* log category */
	bool tls;                 /* TLS listener */
	pthread_mutex_t tls_lock; /* guards ctx */
	SSL_CTX *ctx;             /* context for new connections */
	unsigned nworkers;        /* entries used in workers */
	struct http_worker workers[HTTP_WORKERS_MAX];
};

/*
 * One connection: a TLS one attached to its SSL (http_conn_index), a
 * plain one on its worker's list, holding a reference on its bev.
 */
struct http_conn {
	struct http_worker *w;   /* owning worker */
	struct bufferevent *bev; /* the connection's bufferevent */
	struct event *deadline;  /* drops the connection when it fires */
	struct http_conn *next;  /* plain: in w->plains */
};

/* How often a plain listener's sweep looks for connections evhttp freed. */
#define HTTP_SWEEP_MS 200

/*
 * A connection closed after an error answer, in stages (RFC 9112 section
 * 9.6): our write side is shut, and what the client still sends is read
 * and discarded for a little while, so that closing with unread data does
 * not reset the connection under the answer before the client has read
 * it.  Holds a dup of the socket: libevent closes its own descriptor as
 * soon as the answer is written.
 */
struct http_linger {
	struct http_worker *w;
	int fd;                   /* our dup of the socket */
	size_t drained;           /* bytes read and thrown away */
	struct event *ev;         /* readable, or the time is up */
	struct http_linger *next; /* in w->lingers */
};

struct http_request {
	struct evhttp_request *ev; /* libevent's request */
	const char *method;        /* "GET" */
	char *path;                /* decoded, malloc'd */
	char peer[HTTP_PEER_MAX];  /* address:port */
	SSL *ssl;                  /* NULL on plain HTTP */
	struct http_conn *conn;    /* NULL on plain HTTP */
	int status;                /* answer given, 0 before */
};

/* Staged close: how long, and how much, we read after an error answer. */
#define HTTP_LINGER_SECONDS 2
#define HTTP_LINGER_BYTES   (1024 * 1024)

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static int http_once_rc = -1;
static int http_conn_index = -1;
/* The worker whose loop runs on this thread (NULL elsewhere). */
static _Thread_local struct http_worker *http_self;

static void
http_conn_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                  long argl, void *argp)
{
	struct http_conn *c = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (c == NULL)
		return;
	if (c->deadline != NULL)
		event_free(c->deadline);
	c->w->nconns--;
	free(c);
}

static void
http_init_once(void)
{
	/* Worker loops are woken from the stopping thread. */
	if (evthread_use_pthreads() == -1)
		return;
	http_conn_index =
	    SSL_get_ex_new_index(0, NULL, NULL, NULL, http_conn_free_cb);
	if (http_conn_index < 0)
		return;
	http_once_rc = 0;
}

static int
http_init(struct error *err)
{
	pthread_once(&http_once, http_init_once);
	if (http_once_rc == -1) {
		error_set(err, "cannot initialise libevent threads or OpenSSL "
		               "ex_data");
		return -1;
	}
	return 0;
}

/*
 * Accept any client chain at the TLS layer: the application decides with
 * chain_verify() against the deployment's anchors (see http.h).
 */
static int
http_verify_any(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

SSL_CTX *
http_tls_ctx_new(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain,
                 struct error *err)
{
	SSL_CTX *ctx;
	int i;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		log_crypto(LOG_MAIN, err, "SSL_CTX_new", NULL);
		return NULL;
	}
	/* Below TLS 1.2 no handshake at all (RFC 8996). */
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		log_crypto(LOG_MAIN, err, "SSL_CTX_set_min_proto_version",
		           NULL);
		goto fail;
	}
	/*
	 * No renegotiation: tls-unique names "the latest handshake", and a
	 * renegotiation would change the binding under a request.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_NO_COMPRESSION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate(ctx, cert) != 1) {
		log_crypto(LOG_MAIN, err, "SSL_CTX_use_certificate", NULL);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_crypto(LOG_MAIN, err, "SSL_CTX_use_PrivateKey", NULL);
		goto fail;
	}
	for (i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) !=
		    1) {
			log_crypto(LOG_MAIN, err, "SSL_CTX_add1_chain_cert",
			           NULL);
			goto fail;
		}
	}
	/* Resumed sessions with client certificates need a context id. */
	if (SSL_CTX_set_session_id_context(
	        ctx, (const unsigned char *)HTTP_SESSION_ID_CTX,
	        sizeof(HTTP_SESSION_ID_CTX) - 1) != 1) {
		log_crypto(LOG_MAIN, err, "SSL_CTX_set_session_id_context",
		           NULL);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, http_verify_any);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Drop a connection: the kernel then reports EOF and evhttp frees it. */
static void
http_conn_drop(evutil_socket_t unused, short what, void *arg)
{
	struct http_conn *c = arg;
	evutil_socket_t fd;

	(void)unused;
	(void)what;
	fd = bufferevent_getfd(c->bev);
	log_debug(c->w->srv->cat,
	          "http: dropping connection fd %d "
	          "(deadline or connection limit)",
	          (int)fd);
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/* Arm a new connection's deadline (or drop it at once over the limit). */
static void
http_conn_arm(struct http_worker *w, struct http_conn *c)
{
	struct http_server *srv = w->srv;
	struct timeval now0 = {0, 0};

	if (c->deadline == NULL)
		return;
	/* Over the limit (closing ones count): drop as soon as the loop runs. */
	if (w->nconns + w->nlingers > srv->max_conns) {
		log_warn(srv->cat,
		         "http: worker has %u connections and %u closing "
		         "(limit %u), refusing one",
		         w->nconns - 1, w->nlingers, srv->max_conns);
		evtimer_add(c->deadline, &now0);
	} else
		evtimer_add(c->deadline, &srv->timeout);
}

static struct bufferevent *
http_plain_bevcb(struct event_base *base, void *arg)
{
	struct http_worker *w = arg;
	struct http_conn *c;
	struct bufferevent *bev;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	if ((bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) ==
	    NULL) {
		free(c);
		return NULL;
	}
	/* Ours too: valid until the sweep sees evhttp has let it go. */
	bufferevent_incref(bev);
	c->w = w;
	c->bev = bev;
	c->deadline = evtimer_new(base, http_conn_drop, c);
	c->next = w->plains;
	w->plains = c;
	w->nconns++;
	http_conn_arm(w, c);
	return bev;
}

/* Our reference on c's bev goes (closing the socket if evhttp is done). */
static void
http_plain_free(struct http_conn *c)
{
	if (c->deadline != NULL)
		event_free(c->deadline);
	bufferevent_decref(c->bev);
	c->w->nconns--;
	free(c);
}

static void
http_plain_sweep(evutil_socket_t unused, short what, void *arg)
{
	struct http_worker *w = arg;
	struct http_conn **pp = &w->plains, *c;
	bufferevent_event_cb eventcb;

	(void)unused;
	(void)what;
	while ((c = *pp) != NULL) {
		eventcb = NULL;
		bufferevent_getcb(c->bev, NULL, NULL, &eventcb, NULL);
		if (eventcb != NULL) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		http_plain_free(c);
	}
}

/* A plain connection's state, from its bufferevent. */
static struct http_conn *
http_plain_find(struct http_worker *w, struct bufferevent *bev)
{
	struct http_conn *c;

	for (c = w->plains; c != NULL; c = c->next)
		if (c->bev == bev)
			return c;
	return NULL;
}

static struct bufferevent *
http_bevcb(struct event_base *base, void *arg)
{
	struct http_worker *w = arg;
	struct http_server *srv = w->srv;
	struct bufferevent *bev = NULL;
	struct http_conn *c = NULL;
	SSL *ssl;

	pthread_mutex_lock(&srv->tls_lock);
	ssl = SSL_new(srv->ctx); /* takes its own reference on ctx */
	pthread_mutex_unlock(&srv->tls_lock);
	if (ssl == NULL) {
		log_crypto(srv->cat, NULL, "SSL_new", NULL);
		return NULL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	c->w = w;
	w->nconns++;
	if (SSL_set_ex_data(ssl, http_conn_index, c) != 1) {
		w->nconns--;
		free(c);
		SSL_free(ssl);
		return NULL;
	}
	/* From here SSL_free(ssl) frees c. */
	bev = bufferevent_openssl_socket_new(
	    base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	c->bev = bev;
	c->deadline = evtimer_new(base, http_conn_drop, c);
	http_conn_arm(w, c);
	return bev;
}

static const char *
http_method_name(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "UNKNOWN";
}

static void
http_gencb(struct evhttp_request *ev, void *arg)
{
	struct http_worker *w = arg;
	struct http_server *srv = w->srv;
	struct http_request req;
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	const struct evhttp_uri *uri;
	const char *p;
	char *addr = NULL;
	ev_uint16_t port = 0;
	size_t plen = 0;

	memset(&req, 0, sizeof(req));
	req.ev = ev;
	req.method = http_method_name(evhttp_request_get_command(ev));
	evcon = evhttp_request_get_connection(ev);
	if (evcon != NULL) {
		evhttp_connection_get_peer(evcon, &addr, &port);
		snprintf(req.peer, sizeof(req.peer), "%s:%u",
		         addr != NULL ? addr : "?", (unsigned)port);
		if (srv->tls &&
		    (bev = evhttp_connection_get_bufferevent(evcon)) != NULL &&
		    (req.ssl = bufferevent_openssl_get_ssl(bev)) != NULL) {
			req.conn = SSL_get_ex_data(req.ssl, http_conn_index);
		} else if (!srv->tls &&
		           (bev = evhttp_connection_get_bufferevent(evcon)) !=
		               NULL)
			req.conn = http_plain_find(w, bev);
		/* Complete in time: the deadline stops here. */
		if (req.conn != NULL && req.conn->deadline != NULL)
			evtimer_del(req.conn->deadline);
	}
	/*
	 * When our bevcb fails (out of memory) evhttp falls back to a plain
	 * socket: never serve plain text on a TLS listener.
	 */
	if (srv->tls && req.ssl == NULL) {
		evhttp_send_error(ev, HTTP_SERVUNAVAIL, NULL);
		return;
	}
	uri = evhttp_request_get_evhttp_uri(ev);
	p = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	if (p == NULL || *p == '\0')
		p = "/";
	req.path = evhttp_uridecode(p, 0, &plen);
	if (req.path == NULL) {
		evhttp_send_error(ev, HTTP_INTERNAL, NULL);
		return;
	}
	if (plen != strlen(req.path) || plen > HTTP_PATH_MAX) {
		http_reply_text(&req, 400, "bad request path");
		goto out;
	}
	srv->handler(&req, srv->arg);
	if (req.status == 0) {
		log_error(srv->cat, "http: handler gave no answer for %s %s",
		          req.method, req.path);
		http_reply_text(&req, 500, "no answer");
	}
out:
	free(req.path);
}

static void *
http_worker_main(void *arg)
{
	struct http_worker *w = arg;

	http_self = w;
	event_base_dispatch(w->base);
	http_self = NULL;
	return NULL;
}

static void
http_linger_free(struct http_linger *l)
{
	struct http_linger **pp;

	for (pp = &l->w->lingers; *pp != NULL; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			l->w->nlingers--;
			break;
		}
	if (l->ev != NULL)
		event_free(l->ev);
	close(l->fd);
	free(l);
}

/* Read and discard until EOF, the time limit or the byte limit. */
static void
http_linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_linger *l = arg;
	char buf[16384];
	ssize_t n;

	if (what & EV_READ) {
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			l->drained += (size_t)n;
			if (l->drained >= HTTP_LINGER_BYTES)
				break;
		}
		if (n == -1 && (errno == EAGAIN || errno == EINTR) &&
		    l->drained < HTTP_LINGER_BYTES)
			return; /* more may come; the timeout still runs */
	}
	http_linger_free(l);
}

/*
 * on_complete callback of an error answer with "Connection: close": the
 * answer is in the kernel, and evhttp is about to close its descriptor.
 * Keep the socket open through a dup, send FIN after the answer, and
 * read what the client still sends for a bounded time before closing.
 * Without it, a client still sending its (refused) body would get a
 * reset, which may destroy the answer before it reads it.
 */
static void
http_linger_start(struct evhttp_request *ev, void *arg)
{
	struct http_worker *w = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
	struct bufferevent *bev;
	struct http_linger *l;
	struct timeval tv = {HTTP_LINGER_SECONDS, 0};
	evutil_socket_t fd;
	int dfd;

	/*
	 * Lingering sockets count against the connection limit: a client
	 * making refusal after refusal must not pile up descriptors.  Over
	 * it, the socket is closed at once, as libevent would.
	 */
	if (w->nconns + w->nlingers >= w->srv->max_conns || evcon == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (fd = bufferevent_getfd(bev)) < 0)
		return;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return;
	if ((dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1) {
		free(l);
		return;
	}
	l->w = w;
	l->fd = dfd;
	(void)shutdown(dfd, SHUT_WR);
	if ((l->ev = event_new(w->base, dfd, EV_READ | EV_PERSIST,
	                       http_linger_cb, l)) == NULL ||
	    event_add(l->ev, &tv) == -1) {
		if (l->ev != NULL)
			event_free(l->ev);
		close(dfd);
		free(l);
		return;
	}
	l->next = w->lingers;
	w->lingers = l;
	w->nlingers++;
}

/*
 * Is address:port free?  SO_REUSEPORT lets any process of the same user
 * bind a port we listen on and silently take a share of our connections
 * (a second PSN started on the same address, say), so before our own
 * sockets we bind once without it: that fails while anyone listens there.
 * SO_REUSEADDR only lets the probe past TIME_WAIT leftovers of a previous
 * run, never past a listener.
 */
static int
http_port_free(const struct addrinfo *ai, const char *address, uint16_t port,
               struct error *err)
{
	int fd, one = 1, rc = -1;

	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		error_set(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
		error_set(err, "setsockopt: %s", strerror(errno));
	else if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1)
		error_set(err,
		          "bind %s port %u: %s (is another server "
		          "listening there?)",
		          address, (unsigned)port, strerror(errno));
	else
		rc = 0;
	close(fd);
	return rc;
}

/*
 * A listening socket with SO_REUSEPORT on address:port.  The first of a
 * server's sockets (first) checks that nobody else listens there.
 */
static int
http_listen(const char *address, uint16_t port, bool first, uint16_t *bound,
            struct error *err)
{
	struct addrinfo hints, *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char portstr[8];
	int fd = -1, one = 1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	if ((rc = getaddrinfo(address, portstr, &hints, &res)) != 0) {
		error_set(err, "address %s: %s", address, gai_strerror(rc));
		return -1;
	}
	if (first && port != 0 && http_port_free(res, address, port, err) == -1)
		goto fail;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	            0);
	if (fd == -1) {
		error_set(err, "socket: %s", strerror(errno));
		goto fail;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
	    /*
	     * Accepted sockets inherit it (Linux): an answer written as
	     * several TLS records must not wait for the client's delayed ACK.
	     */
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1) {
		error_set(err, "setsockopt: %s", strerror(errno));
		goto fail;
	}
	if (bind(fd, res->ai_addr, res->ai_addrlen) == -1) {
		error_set(err, "bind %s port %u: %s", address, (unsigned)port,
		          strerror(errno));
		goto fail;
	}
	if (listen(fd, HTTP_BACKLOG) == -1) {
		error_set(err, "listen %s port %u: %s", address, (unsigned)port,
		          strerror(errno));
		goto fail;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == -1) {
		error_set(err, "getsockname: %s", strerror(errno));
		goto fail;
	}
	if (ss.ss_family == AF_INET)
		*bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else
		*bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	freeaddrinfo(res);
	return fd;
fail:
	if (fd != -1)
		close(fd);
	freeaddrinfo(res);
	return -1;
}

static int
http_worker_setup(struct http_server *srv, struct http_worker *w,
                  struct error *err)
{
	w->srv = srv;
	if ((w->base = event_base_new()) == NULL ||
	    (w->http = evhttp_new(w->base)) == NULL) {
		error_set(err, "cannot create an event loop");
		return -1;
	}
	evhttp_set_max_body_size(w->http, HTTP_MAX_BODY);
	evhttp_set_max_headers_size(w->http, HTTP_MAX_HEADERS);
	evhttp_set_timeout_tv(w->http, &srv->timeout);
	/*
	 * No EVHTTP_SERVER_LINGERING_CLOSE: with it libevent reads (and
	 * throws away) the whole announced body before it answers 413, so a
	 * client announcing gigabytes keeps us reading them.  Without it the
	 * 413 goes out as soon as Content-Length (or the chunks so far) is
	 * over the limit, and the connection is closed in stages after it
	 * (evhttp_send_error below, http_linger_start).
	 */
	evhttp_set_allowed_methods(
	    w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(w->http, http_gencb, w);
	if (srv->tls)
		evhttp_set_bevcb(w->http, http_bevcb, w);
	else {
		struct timeval ivl = {0, HTTP_SWEEP_MS * 1000};

		evhttp_set_bevcb(w->http, http_plain_bevcb, w);
		if ((w->sweep = event_new(w->base, -1, EV_PERSIST,
		                          http_plain_sweep, w)) == NULL ||
		    event_add(w->sweep, &ivl) == -1) {
			error_set(err, "cannot create the connection sweep");
			return -1;
		}
	}
	if (evhttp_accept_socket(w->http, w->fd) == -1) {
		error_set(err, "evhttp_accept_socket failed");
		return -1;
	}
	return 0;
}

static void
http_server_free(struct http_server *srv)
{
	unsigned i;

	for (i = 0; i < srv->nworkers; i++) {
		struct http_worker *w = &srv->workers[i];

		while (w->lingers != NULL)
			http_linger_free(w->lingers);
		/* evhttp_free closes the listening socket it accepted. */
		if (w->http != NULL)
			evhttp_free(w->http);
		/* evhttp freed its connections: ours go too. */
		while (w->plains != NULL) {
			struct http_conn *c = w->plains;

			w->plains = c->next;
			http_plain_free(c);
		}
		if (w->sweep != NULL)
			event_free(w->sweep);
		else if (w->fd != -1)
			close(w->fd);
		if (w->base != NULL)
			event_base_free(w->base);
	}
	SSL_CTX_free(srv->ctx);
	pthread_mutex_destroy(&srv->tls_lock);
	free(srv);
}

struct http_server *
http_server_start(const struct http_config *cfg, http_handler handler,
                  void *arg, struct error *err)
{
	struct http_server *srv;
	sigset_t all, old;
	unsigned i, n;
	long ncpu;
	uint16_t port;

	if (http_init(err) == -1)
		return NULL;
	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&srv->tls_lock, NULL);
	srv->handler = handler;
	srv->arg = arg;
	srv->cat = cfg->category;
	srv->timeout.tv_sec =
	    cfg->timeout != 0 ? cfg->timeout : HTTP_TIMEOUT_DEFAULT;
	srv->max_conns =
	    cfg->max_conns != 0 ? cfg->max_conns : HTTP_MAX_CONNS_DEFAULT;
	if (cfg->tls != NULL) {
		SSL_CTX_up_ref(cfg->tls);
		srv->ctx = cfg->tls;
		srv->tls = true;
	}
	n = cfg->workers;
	if (n == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		n = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	if (n > HTTP_WORKERS_MAX)
		n = HTTP_WORKERS_MAX;
	/* Bind every socket first: a port in use fails before any thread. */
	port = cfg->port;
	for (i = 0; i < n; i++) {
		srv->workers[i].fd = -1;
		srv->nworkers = i + 1;
		srv->workers[i].fd =
		    http_listen(cfg->address, port, i == 0,
		                &port, err);
		if (srv->workers[i].fd == -1)
			goto fail;
		if (http_worker_setup(srv, &srv->workers[i], err) == -1)
			goto fail;
	}
	srv->port = port;
	/*
	 * Workers take no asynchronous signal (the owner's main thread
	 * handles SIGTERM) and never die of SIGPIPE, which is delivered to
	 * the thread that wrote to the closed socket.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < n; i++) {
		if (pthread_create(&srv->workers[i].thread, NULL,
		                   http_worker_main, &srv->workers[i]) != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			error_set(err, "cannot start worker thread");
			http_server_stop(srv);
			return NULL;
		}
		srv->workers[i].started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	log_info(srv->cat,
	         "http: listening on %s port %u (%s, %u workers, "
	         "timeout %ld s)",
	         cfg->address, (unsigned)port, srv->tls ? "TLS" : "plain", n,
	         (long)srv->timeout.tv_sec);
	return srv;
fail:
	error_prefix(err, "http server");
	http_server_free(srv);
	return NULL;
}

uint16_t
http_server_port(const struct http_server *srv)
{
	return srv->port;
}

unsigned
http_server_workers(const struct http_server *srv)
{
	return srv->nworkers;
}

int
http_server_set_tls(struct http_server *srv, SSL_CTX *ctx, struct error *err)
{
	SSL_CTX *old;

	if (!srv->tls || ctx == NULL) {
		error_set(err, "not a TLS server");
		return -1;
	}
	SSL_CTX_up_ref(ctx);
	pthread_mutex_lock(&srv->tls_lock);
	old = srv->ctx;
	srv->ctx = ctx;
	pthread_mutex_unlock(&srv->tls_lock);
	/* Open connections hold their own references through their SSL. */
	SSL_CTX_free(old);
	log_info(srv->cat, "http: TLS context replaced");
	return 0;
}

void
http_server_stop(struct http_server *srv)
{
	unsigned i;

	if (srv == NULL)
		return;
	/*
	 * loopexit lets the callback that is running (a request being
	 * handled) finish; evhttp_free then closes what is left.
	 */
	for (i = 0; i < srv->nworkers; i++)
		if (srv->workers[i].started)
			event_base_loopexit(srv->workers[i].base, NULL);
	for (i = 0; i < srv->nworkers; i++)
		if (srv->workers[i].started)
			pthread_join(srv->workers[i].thread, NULL);
	http_server_free(srv);
}

const char *
http_request_method(const struct http_request *req)
{
	return req->method;
}

const char *
http_request_path(const struct http_request *req)
{
	return req->path;
}

const char *
http_request_header(const struct http_request *req, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req->ev),
	                          name);
}

const uint8_t *
http_request_body(struct http_request *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
	const uint8_t *p;

	*len = in != NULL ? evbuffer_get_length(in) : 0;
	if (*len == 0)
		return (const uint8_t *)"";
	p = evbuffer_pullup(in, -1);
	if (p == NULL)
		*len = 0;
	return p != NULL ? p : (const uint8_t *)"";
}

const char *
http_request_peer(const struct http_request *req)
{
	return req->peer;
}

SSL *
http_request_ssl(const struct http_request *req)
{
	return req->ssl;
}

X509 *
http_request_peer_cert(const struct http_request *req)
{
	return req->ssl != NULL ? SSL_get0_peer_certificate(req->ssl) : NULL;
}

STACK_OF(X509) * http_request_peer_chain(const struct http_request *req)
{
	/* Server side: the certificates after the leaf, as sent. */
	return req->ssl != NULL ? SSL_get_peer_cert_chain(req->ssl) : NULL;
}

int
http_ssl_channel_binding(SSL *ssl, bool server, uint8_t *buf, size_t *len,
                         const char **type, struct error *err)
{
	size_t n;
	bool first_is_mine;

	if (ssl == NULL) {
		error_set(err, "no TLS connection");
		return -1;
	}
	switch (SSL_version(ssl)) {
	case TLS1_3_VERSION:
		/* RFC 9266 section 2: tls-exporter, 32 bytes. */
		if (*len < HTTP_EXPORTER_LEN) {
			error_set(err, "binding buffer too small");
			return -1;
		}
		if (SSL_export_keying_material(ssl, buf, HTTP_EXPORTER_LEN,
		                               "EXPORTER-Channel-Binding",
		                               strlen("EXPORTER-Channel-"
		                                      "Binding"),
		                               NULL, 0, 0) != 1) {
			log_crypto(LOG_MAIN, err, "SSL_export_keying_material",
			           NULL);
			return -1;
		}
		*len = HTTP_EXPORTER_LEN;
		*type = "tls-exporter";
		return 0;
	case TLS1_2_VERSION:
		/*
		 * RFC 5929 section 3.1: the first Finished message of the
		 * latest handshake.  The client sends it first in a full
		 * handshake, the server in an abbreviated (resumed) one.
		 */
		first_is_mine = server == (SSL_session_reused(ssl) == 1);
		n = first_is_mine ? SSL_get_finished(ssl, buf, *len)
		                  : SSL_get_peer_finished(ssl, buf, *len);
		if (n == 0 || n > *len) {
			error_set(err, "no Finished message for tls-unique");
			return -1;
		}
		*len = n;
		*type = "tls-unique";
		return 0;
	default:
		error_set(err, "no channel binding for %s",
		          SSL_get_version(ssl));
		return -1;
	}
}

int
http_request_channel_binding(const struct http_request *req, uint8_t *buf,
                             size_t *len, const char **type, struct error *err)
{
	return http_ssl_channel_binding(req->ssl, true, buf, len, type, err);
}

int
http_reply_header(struct http_request *req, const char *name, const char *value)
{
	return evhttp_add_header(evhttp_request_get_output_headers(req->ev),
	                         name, value);
}

static const char *
http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Payload Too Large";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	}
	return status < 400 ? "OK" : "Error";
}

/*
 * The requests libevent refuses by itself never reach our handler: a
 * request line or header it cannot parse, or a head over
 * evhttp_set_max_headers_size() (400), a body over
 * evhttp_set_max_body_size() (413), a method it does not allow (501), an Expect other than
 * 100-continue (417).  libevent 2.1 answers them with
 * evhttp_send_error(), which sends an HTML page, and has no hook to change
 * that (2.2 adds evhttp_set_errorcb()).  Every refusal of ours is a
 * text/plain reason, so this file defines evhttp_send_error() itself: the
 * library is built without -Bsymbolic and calls its exported functions
 * through the PLT, so the executable's definition takes the place of the
 * library's for libevent's own calls too (tests/unit/test_http.c and the
 * EST conformance tests check that the answers are text/plain).  It keeps
 * the documented contract: one answer with "Connection: close", after
 * which evhttp closes the connection (in stages: http_linger_start).
 */
void
evhttp_send_error(struct evhttp_request *req, int error, const char *reason)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct http_worker *w = http_self;
	struct evbuffer *body;
	char text[256], *addr = NULL;
	ev_uint16_t port = 0;

	switch (error) {
	case HTTP_BADREQUEST:
		/* libevent 2.1 says 400 for a head over its limit too. */
		snprintf(text, sizeof(text),
		         "bad request: the request line or headers could not "
		         "be parsed or are over %d bytes",
		         HTTP_MAX_HEADERS);
		break;
	case HTTP_ENTITYTOOLARGE:
		snprintf(text, sizeof(text),
		         "request body too large: at most %d bytes",
		         HTTP_MAX_BODY);
		break;
	case HTTP_NOTIMPLEMENTED:
		snprintf(text, sizeof(text), "method not implemented");
		break;
	case 417:
		snprintf(text, sizeof(text),
		         "Expect: only 100-continue is supported");
		break;
	default:
		snprintf(text, sizeof(text), "%s",
		         reason != NULL ? reason : http_reason(error));
		break;
	}
	if (evcon != NULL)
		evhttp_connection_get_peer(evcon, &addr, &port);
	log_info(w != NULL ? w->srv->cat : LOG_MAIN,
	         "http: request from %s:%u refused %d: %s",
	         addr != NULL ? addr : "?", (unsigned)port, error, text);
	/*
	 * As libevent's own (evhttp_send_page_): HTTP/1.1 when the request
	 * line was not understood (2.1 has no setter: http_struct.h), and no
	 * header of an answer begun before.
	 */
	if (req->major == 0) {
		req->major = 1;
		req->minor = 1;
	}
	evhttp_clear_headers(out);
	evhttp_add_header(out, "Content-Type", "text/plain; charset=utf-8");
	evhttp_add_header(out, "Connection", "close");
	if ((body = evbuffer_new()) == NULL ||
	    evbuffer_add_printf(body, "%s\n", text) == -1) {
		if (body != NULL)
			evbuffer_free(body);
		/* What libevent does when it cannot allocate: drop it. */
		if (evcon != NULL)
			evhttp_connection_free(evcon);
		return;
	}
	if (w != NULL && evcon != NULL)
		evhttp_request_set_on_complete_cb(req, http_linger_start, w);
	evhttp_send_reply(req, error, http_reason(error), body);
	evbuffer_free(body);
}

void
http_reply(struct http_request *req, int status, const char *content_type,
           const void *body, size_t len)
{
	struct evbuffer *out;

	if (req->status != 0)
		return;
	req->status = status;
	if (content_type != NULL)
		http_reply_header(req, "Content-Type", content_type);
	if ((out = evbuffer_new()) == NULL ||
	    (len > 0 && evbuffer_add(out, body, len) == -1)) {
		if (out != NULL)
			evbuffer_free(out);
		evhttp_send_error(req->ev, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req->ev, status, http_reason(status), out);
	evbuffer_free(out);
	/* The next request on this connection gets a fresh deadline. */
	if (req->conn != NULL && req->conn->deadline != NULL)
		evtimer_add(req->conn->deadline, &req->conn->w->srv->timeout);
}

void
http_reply_text(struct http_request *req, int status, const char *fmt, ...)
{
	char buf[ERROR_MAX + 2];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	buf[n] = '\0';
	http_reply(req, status, "text/plain; charset=utf-8", buf, (size_t)n);
}

int
http_request_status(const struct http_request *req)
{
	return req->status;
}
