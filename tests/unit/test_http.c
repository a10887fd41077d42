/*
 * Unit tests for common/http.c: a real server on 127.0.0.1 (port 0), spoken
 * to with plain sockets and with OpenSSL clients: request fields reach the
 * handler, the body limit answers 413 at once and libevent's own refusals
 * are plain text, TLS below 1.2 gets no handshake, the
 * channel binding seen by the server equals the client's (TLS 1.2 and 1.3),
 * the request deadline drops a silent client, a replaced TLS context serves
 * new connections, and bad configuration is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../pki/hierarchy.h"
#include "http.h"
#include "util.h"

static struct hier h;

static int
setup(void **state)
{
	(void)state;
	return hier_build_uniform(&h, "ec-p256", "pan1", "psn1", NULL);
}

static int
teardown(void **state)
{
	(void)state;
	hier_free(&h);
	return 0;
}

/* Echo what the handler saw, as text. */
static void
echo(struct http_request *req, void *arg)
{
	uint8_t b[HTTP_BINDING_MAX];
	char hex[2 * HTTP_BINDING_MAX + 1] = "-";
	size_t blen = sizeof(b), len;
	const char *type = "-", *x = http_request_header(req, "X-Test");

	(void)arg;
	(void)http_request_body(req, &len);
	if (http_request_ssl(req) != NULL &&
	    http_request_channel_binding(req, b, &blen, &type, NULL) == 0)
		hex_encode(b, blen, hex);
	http_reply_header(req, "X-Echo", "1");
	http_reply_text(
	    req, 200, "%s|%s|%s|%zu|%s|%s|%s", http_request_method(req),
	    http_request_path(req), x != NULL ? x : "-", len, type, hex,
	    http_request_peer_cert(req) != NULL ? "cert" : "nocert");
}

static int
tcp_connect(uint16_t port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_not_equal(fd, -1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Read until EOF (Connection: close) into buf. */
static size_t
read_all(int fd, SSL *ssl, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t n;

	for (;;) {
		n = ssl != NULL ? SSL_read(ssl, buf + len, (int)(cap - 1 - len))
		                : read(fd, buf + len, cap - 1 - len);
		if (n <= 0 || len + (size_t)n >= cap - 1) {
			if (n > 0)
				len += (size_t)n;
			break;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	return len;
}

static struct http_server *
start(SSL_CTX *tls, unsigned timeout)
{
	struct http_config cfg;
	struct error err;
	struct http_server *srv;

	memset(&cfg, 0, sizeof(cfg));
	cfg.address = "127.0.0.1";
	cfg.workers = 2;
	cfg.timeout = timeout;
	cfg.tls = tls;
	srv = http_server_start(&cfg, echo, NULL, &err);
	if (srv == NULL)
		fail_msg("%s", err.msg);
	assert_int_equal(http_server_workers(srv), 2);
	return srv;
}

static SSL_CTX *
server_ctx(void)
{
	struct error err;
	SSL_CTX *ctx =
	    http_tls_ctx_new(h.cert[H_SERVER], h.key[H_SERVER], NULL, &err);

	if (ctx == NULL)
		fail_msg("%s", err.msg);
	return ctx;
}

static void
test_plain_request(void **state)
{
	struct http_server *srv = start(NULL, 0);
	char buf[4096];
	const char *req = "POST /a%20b?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: "
	                  "hello\r\nContent-Length: 3\r\nConnection: "
	                  "close\r\n\r\nabc";
	int fd = tcp_connect(http_server_port(srv));

	(void)state;
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	read_all(fd, NULL, buf, sizeof(buf));
	close(fd);
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK"));
	assert_non_null(strstr(buf, "X-Echo: 1"));
	assert_non_null(strstr(buf, "text/plain"));
	assert_non_null(strstr(buf, "POST|/a b|hello|3|-|-|nocert"));
	http_server_stop(srv);
}

/* An answer of libevent's own error path: plain text, then closed. */
static void
check_refusal(const char *buf, const char *status, const char *reason)
{
	if (strstr(buf, status) == NULL || strstr(buf, reason) == NULL ||
	    strstr(buf, "Content-Type: text/plain") == NULL ||
	    strstr(buf, "Connection: close") == NULL ||
	    strstr(buf, "<HTML") != NULL)
		fail_msg("want %s with text/plain \"%s\" in:\n%s", status,
		         reason, buf);
}

static void
test_body_limit(void **state)
{
	struct http_server *srv = start(NULL, 0);
	char head[256], buf[4096], *body;
	size_t blen = HTTP_MAX_BODY + 1;
	int fd = tcp_connect(http_server_port(srv));
	int64_t t0;

	(void)state;
	body = calloc(1, blen);
	assert_non_null(body);
	memset(body, 'A', blen);
	snprintf(head, sizeof(head),
	         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
	         blen);
	/*
	 * The announced length is enough: 413 at once, without waiting for
	 * (or reading) the body, and the connection is closed after it.
	 */
	t0 = time_mono_ms();
	assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
	read_all(fd, NULL, buf, sizeof(buf));
	assert_true(time_mono_ms() - t0 < 3000);
	close(fd);
	check_refusal(buf, "HTTP/1.1 413 ", "request body too large");

	/* A client that sends the body anyway still reads the answer. */
	fd = tcp_connect(http_server_port(srv));
	assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
	assert_int_equal(write(fd, body, blen), (ssize_t)blen);
	read_all(fd, NULL, buf, sizeof(buf));
	close(fd);
	free(body);
	check_refusal(buf, "HTTP/1.1 413 ", "request body too large");
	http_server_stop(srv);
}

static void
send_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* libevent's other refusals are plain text too. */
static void
test_parse_errors_plain_text(void **state)
{
	struct http_server *srv = start(NULL, 0);
	char buf[4096], *big;
	size_t n = HTTP_MAX_HEADERS + 100;
	int fd;

	(void)state;
	fd = tcp_connect(http_server_port(srv));
	send_str(fd, "GARBAGE\r\n\r\n");
	read_all(fd, NULL, buf, sizeof(buf));
	close(fd);
	check_refusal(buf, "HTTP/1.1 400 ", "could not be parsed");

	big = malloc(n + 64);
	assert_non_null(big);
	memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 24);
	memset(big + 24, 'a', n);
	memcpy(big + 24 + n, "\r\n\r\n", 4);
	fd = tcp_connect(http_server_port(srv));
	assert_int_equal(write(fd, big, n + 28), (ssize_t)(n + 28));
	read_all(fd, NULL, buf, sizeof(buf));
	close(fd);
	free(big);
	check_refusal(buf, "HTTP/1.1 400 ", "over 16384 bytes");

	fd = tcp_connect(http_server_port(srv));
	send_str(fd, "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n");
	read_all(fd, NULL, buf, sizeof(buf));
	close(fd);
	check_refusal(buf, "HTTP/1.1 501 ", "not implemented");
	http_server_stop(srv);
}

static SSL *
tls_client(uint16_t port, int version, bool with_cert, SSL_CTX **cctx)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	int fd = tcp_connect(port);

	assert_non_null(c);
	SSL_CTX_set_min_proto_version(c, version);
	SSL_CTX_set_max_proto_version(c, version);
	/* TLS 1.1 needs the lowest security level to be even offered. */
	if (version < TLS1_2_VERSION)
		SSL_CTX_set_security_level(c, 0);
	if (with_cert) {
		assert_int_equal(SSL_CTX_use_certificate(c, h.cert[H_CLIENT]),
		                 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(c, h.key[H_CLIENT]), 1);
	}
	ssl = SSL_new(c);
	SSL_set_fd(ssl, fd);
	*cctx = c;
	return ssl;
}

static void
tls_free(SSL *ssl, SSL_CTX *c)
{
	int fd = SSL_get_fd(ssl);

	SSL_free(ssl);
	SSL_CTX_free(c);
	close(fd);
}

static void
check_binding(struct http_server *srv, int version, const char *want_type)
{
	SSL_CTX *c;
	SSL *ssl = tls_client(http_server_port(srv), version, true, &c);
	char buf[4096], hex[2 * HTTP_BINDING_MAX + 1], want[256];
	const char *req = "GET /x HTTP/1.1\r\nHost: x\r\nConnection: "
	                  "close\r\n\r\n";
	uint8_t b[HTTP_BINDING_MAX];
	size_t blen = sizeof(b);
	const char *type;

	assert_int_equal(SSL_connect(ssl), 1);
	assert_int_equal(
	    http_ssl_channel_binding(ssl, false, b, &blen, &type, NULL), 0);
	assert_string_equal(type, want_type);
	hex_encode(b, blen, hex);
	SSL_write(ssl, req, (int)strlen(req));
	read_all(-1, ssl, buf, sizeof(buf));
	snprintf(want, sizeof(want), "GET|/x|-|0|%s|%s|cert", want_type, hex);
	if (strstr(buf, want) == NULL)
		fail_msg("want %s in %s", want, buf);
	tls_free(ssl, c);
}

static void
test_tls_binding(void **state)
{
	SSL_CTX *ctx = server_ctx();
	struct http_server *srv = start(ctx, 0);

	(void)state;
	check_binding(srv, TLS1_2_VERSION, "tls-unique");
	check_binding(srv, TLS1_3_VERSION, "tls-exporter");
	http_server_stop(srv);
	SSL_CTX_free(ctx);
}

static void
test_tls11_refused(void **state)
{
	SSL_CTX *ctx = server_ctx(), *c;
	struct http_server *srv = start(ctx, 0);
	SSL *ssl;

	(void)state;
	ssl = tls_client(http_server_port(srv), TLS1_1_VERSION, false, &c);
	assert_int_not_equal(SSL_connect(ssl), 1);
	ERR_clear_error();
	tls_free(ssl, c);
	http_server_stop(srv);
	SSL_CTX_free(ctx);
}

static void
test_deadline_drops_silent_client(void **state)
{
	SSL_CTX *ctx = server_ctx();
	struct http_server *srv = start(ctx, 1);
	int fd = tcp_connect(http_server_port(srv));
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int64_t t0 = time_mono_ms();
	char c;

	(void)state;
	/* No handshake at all: dropped after the 1 s deadline. */
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_true(read(fd, &c, 1) <= 0);
	assert_true(time_mono_ms() - t0 < 4000);
	close(fd);
	http_server_stop(srv);
	SSL_CTX_free(ctx);
}

/*
 * Plain HTTP too: a client that is never idle (a byte every 200 ms) but
 * never finishes its request is dropped at the 1 s deadline; one that
 * finishes in time is served, and its connection gets a fresh deadline.
 */
static void
test_deadline_plain_trickle(void **state)
{
	struct http_server *srv = start(NULL, 1);
	int fd = tcp_connect(http_server_port(srv));
	int64_t t0 = time_mono_ms(), dropped = -1;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char buf[512];
	int i;
	ssize_t n;

	(void)state;
	assert_int_equal(write(fd, "GET /", 5), 5);
	for (i = 0; i < 30 && dropped < 0; i++) {
		if (poll(&p, 1, 200) == 1) {
			if (read(fd, buf, sizeof(buf)) <= 0)
				dropped = time_mono_ms() - t0;
		} else if (write(fd, "a", 1) != 1)
			dropped = time_mono_ms() - t0;
	}
	assert_true(dropped >= 800 && dropped < 4000);
	close(fd);
	/* A request that completes is answered on the same listener. */
	fd = tcp_connect(http_server_port(srv));
	assert_int_equal(write(fd, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 30),
	                 30);
	p.fd = fd;
	assert_int_equal(poll(&p, 1, 3000), 1);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "200"));
	close(fd);
	/* Many short connections: the sweep lets every one go. */
	for (i = 0; i < 200; i++)
		close(tcp_connect(http_server_port(srv)));
	http_server_stop(srv);
}

static void
test_set_tls(void **state)
{
	SSL_CTX *ctx = server_ctx(), *ctx2, *c;
	struct http_server *srv = start(ctx, 0), *plain;
	struct error err;
	SSL *ssl;
	X509 *peer;

	(void)state;
	/* Serve the OCSP responder certificate from now on. */
	ctx2 = http_tls_ctx_new(h.cert[H_OCSP], h.key[H_OCSP], NULL, &err);
	assert_non_null(ctx2);
	assert_int_equal(http_server_set_tls(srv, ctx2, &err), 0);
	SSL_CTX_free(ctx2);
	ssl = tls_client(http_server_port(srv), TLS1_3_VERSION, false, &c);
	assert_int_equal(SSL_connect(ssl), 1);
	peer = SSL_get0_peer_certificate(ssl);
	assert_int_equal(X509_cmp(peer, h.cert[H_OCSP]), 0);
	tls_free(ssl, c);
	http_server_stop(srv);
	SSL_CTX_free(ctx);

	plain = start(NULL, 0);
	assert_int_equal(http_server_set_tls(plain, ctx, &err), -1);
	http_server_stop(plain);
}

static void
test_bad_config(void **state)
{
	struct http_config cfg;
	struct error err;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.address = "not-an-address";
	assert_null(http_server_start(&cfg, echo, NULL, &err));
	assert_non_null(strstr(err.msg, "not-an-address"));
	cfg.address = "192.0.2.1"; /* not ours: bind fails */
	assert_null(http_server_start(&cfg, echo, NULL, &err));
	assert_non_null(strstr(err.msg, "bind"));
	/* Key and certificate that do not match. */
	assert_null(
	    http_tls_ctx_new(h.cert[H_SERVER], h.key[H_CLIENT], NULL, &err));
	ERR_clear_error();
	http_server_stop(NULL);
}

static void
test_port_in_use_refused(void **state)
{
	struct http_server *first, *second;
	struct http_config cfg;
	struct error err;

	(void)state;
	/*
	 * SO_REUSEPORT would let a second server share the port silently;
	 * the second start must fail instead, and the first keep serving.
	 */
	first = start(NULL, 5);
	memset(&cfg, 0, sizeof(cfg));
	cfg.address = "127.0.0.1";
	cfg.port = http_server_port(first);
	cfg.workers = 2;
	second = http_server_start(&cfg, echo, NULL, &err);
	assert_null(second);
	assert_non_null(strstr(err.msg, "another server"));
	http_server_stop(first);
	/* Once it is gone the port is free again. */
	second = http_server_start(&cfg, echo, NULL, &err);
	if (second == NULL)
		fail_msg("%s", err.msg);
	http_server_stop(second);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_request),
	    cmocka_unit_test(test_body_limit),
	    cmocka_unit_test(test_parse_errors_plain_text),
	    cmocka_unit_test(test_tls_binding),
	    cmocka_unit_test(test_tls11_refused),
	    cmocka_unit_test(test_deadline_drops_silent_client),
	    cmocka_unit_test(test_deadline_plain_trickle),
	    cmocka_unit_test(test_set_tls),
	    cmocka_unit_test(test_bad_config),
	    cmocka_unit_test(test_port_in_use_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
