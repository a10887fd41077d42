/*
 * http: the HTTP/1.1 server under EST (HTTPS, 8084), the BYOD portal (8443)
 * and the OCSP responder (plain HTTP, 2560), on libevent's evhttp with TLS
 * from bufferevent_openssl (docs/http-library.md).
 *
 * The server runs N worker threads, each with its own event_base and evhttp
 * accepting on its own SO_REUSEPORT socket bound to the same address: the
 * kernel spreads connections over the workers, no lock is shared on the hot
 * path, and there is no fork per request.  A handler runs on the worker that
 * read the request and must answer (http_reply*) before it returns.
 *
 * TLS: each connection gets an SSL made from the server's current SSL_CTX.
 * The owner replaces the context with http_server_set_tls() after building
 * a complete new one (the Redis tlsConfigure pattern); connections keep the
 * context they started with.  A client certificate is requested but never
 * required, and any chain is accepted at the TLS layer: the application
 * (EST) decides, with chain_verify() against its own trust anchors, so that
 * cacerts works without a client certificate and a bad one gets a clear
 * HTTP answer rather than a handshake alert.
 *
 * Every refusal is a text/plain reason, libevent's own too (a request it
 * cannot parse, a body over the limit: see evhttp_send_error in http.c).
 *
 * Slow clients: libevent's timeouts drop a connection idle for the timeout;
 * on TLS listeners we also give every request a total deadline (handshake,
 * headers and body must arrive within the timeout of the connection start or
 * of the previous answer), so a slowloris client that trickles a byte at a
 * time cannot hold a connection either.
 */
#ifndef ISELAB_HTTP_H
#define ISELAB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"

struct error;
struct evbuffer;

/*
 * Largest request body (an EST CSR is 1-3 KiB): 413 as soon as the
 * announced length is over it, then the connection is closed.
 */
#define HTTP_MAX_BODY (64 * 1024)
/* Largest request line plus headers: 400 (libevent 2.1), then closed. */
#define HTTP_MAX_HEADERS (16 * 1024)
/* Default idle timeout and total per-request deadline, in seconds. */
#define HTTP_TIMEOUT_DEFAULT 10
/* Default most connections one worker holds (TLS listeners). */
#define HTTP_MAX_CONNS_DEFAULT 4096
/* Most worker threads. */
#define HTTP_WORKERS_MAX 64
/* Longest "address:port" text of a peer. */
#define HTTP_PEER_MAX 64
/* Longest channel binding value (tls-unique is 12 bytes, exporter 32). */
#define HTTP_BINDING_MAX 64
/* Most extra headers one answer carries. */
#define HTTP_EXTRA_HEADERS_MAX 8

struct http_server;
struct http_request;

/* Called on a worker thread for every complete request. */
typedef void (*http_handler)(struct http_request *req, void *arg);

struct http_config {
	const char *address; /* IPv4 or IPv6 literal to bind */
	uint16_t port;       /* 0: any free port (see http_server_port) */
	unsigned workers;    /* 0: one per online CPU */
	unsigned timeout;    /* seconds; 0: HTTP_TIMEOUT_DEFAULT */
	unsigned max_conns;  /* per worker, TLS only; 0: default */
	SSL_CTX *tls;        /* NULL: plain HTTP; else a reference is taken */
	enum log_category category; /* where connection events are logged */
};

/*
 * A TLS server context as every server of the lab wants it: TLS 1.2
 * minimum (TLS 1.0 and 1.1 get no handshake), no renegotiation, no
 * compression, the certificate, its key and the chain to send (may be
 * NULL), and a client certificate requested but optional.  Returns NULL
 * with err set; the key must match the certificate.
 */
SSL_CTX *http_tls_ctx_new(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain,
                          struct error *err);

/*
 * Bind the sockets (so that a port in use fails here, in the caller's
 * thread) and start the workers.  Returns NULL with err set.
 */
struct http_server *http_server_start(const struct http_config *cfg,
                                      http_handler handler, void *arg,
                                      struct error *err);
/* The bound port (useful when cfg->port was 0). */
uint16_t http_server_port(const struct http_server *srv);
unsigned http_server_workers(const struct http_server *srv);
/*
 * Replace the TLS context for new connections (a reference is taken; the
 * old one is released when its last connection ends).  Fails on a plain
 * HTTP server.
 */
int http_server_set_tls(struct http_server *srv, SSL_CTX *ctx,
                        struct error *err);
/*
 * Stop: close the listening sockets, let each worker finish the request it
 * is handling, close the remaining connections, join the threads and free
 * everything.  NULL is fine.
 */
void http_server_stop(struct http_server *srv);

/* The request, as handlers see it.  Strings live as long as the request. */
const char *http_request_method(const struct http_request *req);
/* The decoded path without the query ("/.well-known/est/cacerts"). */
const char *http_request_path(const struct http_request *req);
/* A request header by name (case-insensitive), NULL when absent. */
const char *http_request_header(const struct http_request *req,
                                const char *name);
/* The body, made contiguous; *len 0 and a non-NULL pointer when empty. */
const uint8_t *http_request_body(struct http_request *req, size_t *len);
/* "127.0.0.1:40000" */
const char *http_request_peer(const struct http_request *req);
/* NULL on plain HTTP. */
SSL *http_request_ssl(const struct http_request *req);
/*
 * The client certificate and the other certificates the client sent (not
 * verified: the TLS layer accepts any chain).  Borrowed; NULL when none.
 */
X509 *http_request_peer_cert(const struct http_request *req);
STACK_OF(X509) * http_request_peer_chain(const struct http_request *req);

/*
 * The TLS channel binding of the connection: "tls-unique" on TLS 1.2
 * (RFC 5929 section 3.1: the first Finished message of the latest
 * handshake, which is the client's in a full handshake and the server's
 * in an abbreviated one) and "tls-exporter" on TLS 1.3 (RFC 9266: 32 bytes
 * exported with label "EXPORTER-Channel-Binding" and an empty context).
 * *type receives the name.  Returns -1 on plain HTTP or failure.
 */
int http_ssl_channel_binding(SSL *ssl, bool server, uint8_t *buf, size_t *len,
                             const char **type, struct error *err);
int http_request_channel_binding(const struct http_request *req, uint8_t *buf,
                                 size_t *len, const char **type,
                                 struct error *err);

/*
 * Answers.  Headers added with http_reply_header() go out with the next
 * http_reply().  Exactly one http_reply* per request.
 */
int http_reply_header(struct http_request *req, const char *name,
                      const char *value);
void http_reply(struct http_request *req, int status, const char *content_type,
                const void *body, size_t len);
/* A text/plain answer: the reason, with a newline added. */
void http_reply_text(struct http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The status of the answer given, 0 before. */
int http_request_status(const struct http_request *req);

#endif
