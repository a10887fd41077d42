/*
 * Unit tests for common/ocsp_http.c, the HTTP face of an OCSP responder
 * that the PSN and the PAN share: a real http_server on 127.0.0.1 (any
 * port) with ocsp_http_handle over a responder for a lab hierarchy's
 * Endpoint Sub CA, spoken to over a raw socket.  Covered: POST (200,
 * application/ocsp-response, no-cache, a response OpenSSL verifies),
 * a wrong Content-Type (415), GET with base64 (RFC 5019 caching headers),
 * GET with bad base64 (malformedRequest), garbage POST (malformedRequest),
 * other paths (404), other methods (405 with Allow), the HTTP date and the
 * media type matcher, and a refresh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "../pki/hierarchy.h"
#include "cert.h"
#include "http.h"
#include "ocsp.h"
#include "ocsp_http.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"

static struct hier h;
static struct store *st;
static struct ocsp_responder *r;
static struct http_server *srv;
static uint8_t *req_der; /* a request for the tls-client certificate */
static size_t req_len;

/* "30030a0101": OCSPResponse { malformedRequest }. */
static const uint8_t malformed[] = {0x30, 0x03, 0x0a, 0x01, 0x01};

static int
setup(void **state)
{
	struct store_opts o = {0};
	struct http_config hc;
	struct error err = {{0}};
	uint8_t kid[STORE_KEY_ID_LEN];
	char dir[256];
	OCSP_REQUEST *req = NULL;
	OCSP_CERTID *id;
	unsigned char *p = NULL;
	int n;

	if (tmpdir_setup(state) != 0)
		return -1;
	if (hier_build_uniform(&h, "ec-p256", "pan1", "psn1", &err) != 0) {
		fprintf(stderr, "hierarchy: %s\n", err.msg);
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s/store", tmpdir);
	o.map_size = STORE_MAP_SIZE_MIN * 4;
	if (store_open(dir, &o, &st, &err) != 0 ||
	    store_issuer_key_id(h.cert[H_SUB], kid, &err) != 0 ||
	    store_put_x509(st, h.cert[H_CLIENT], kid, "psn1", "tls-client",
	                   time(NULL), &err) != STORE_OK) {
		fprintf(stderr, "store: %s\n", err.msg);
		return -1;
	}
	if ((r = ocsp_responder_new(h.cert[H_OCSP], h.key[H_OCSP],
	                            h.cert[H_SUB], st, NULL, &err)) == NULL) {
		fprintf(stderr, "responder: %s\n", err.msg);
		return -1;
	}
	memset(&hc, 0, sizeof(hc));
	hc.address = "127.0.0.1";
	hc.port = 0;
	hc.workers = 2;
	hc.timeout = 5;
	hc.category = LOG_OCSP;
	if ((srv = http_server_start(&hc, ocsp_http_handle, r, &err)) ==
	    NULL) {
		fprintf(stderr, "http: %s\n", err.msg);
		return -1;
	}
	/* A request without a nonce: what an RFC 5019 client sends. */
	if ((req = OCSP_REQUEST_new()) == NULL ||
	    (id = OCSP_cert_to_id(EVP_sha1(), h.cert[H_CLIENT],
	                          h.cert[H_SUB])) == NULL ||
	    OCSP_request_add0_id(req, id) == NULL ||
	    (n = i2d_OCSP_REQUEST(req, &p)) <= 0)
		return -1;
	req_der = p;
	req_len = (size_t)n;
	OCSP_REQUEST_free(req);
	return 0;
}

static int
teardown(void **state)
{
	http_server_stop(srv);
	ocsp_responder_free(r);
	store_close(st);
	OPENSSL_free(req_der);
	hier_free(&h);
	return tmpdir_teardown(state);
}

/* One exchange on a fresh connection; the whole answer in buf. */
static size_t
exchange(const char *head, const void *body, size_t blen, char *buf,
         size_t cap)
{
	struct sockaddr_in sa;
	size_t len = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_not_equal(fd, -1);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(http_server_port(srv));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
	if (blen > 0)
		assert_int_equal(write(fd, body, blen), (ssize_t)blen);
	while ((n = read(fd, buf + len, cap - 1 - len)) > 0 &&
	       len + (size_t)n < cap - 1)
		len += (size_t)n;
	if (n > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fd);
	return len;
}

/* The body after the blank line, and its length. */
static const uint8_t *
body_of(const char *buf, size_t len, size_t *blen)
{
	const char *p = strstr(buf, "\r\n\r\n");

	assert_non_null(p);
	p += 4;
	*blen = len - (size_t)(p - buf);
	return (const uint8_t *)p;
}

static char *
post_head(const char *ctype, size_t len)
{
	static char head[512];

	snprintf(head, sizeof(head),
	         "POST /ocsp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	         "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
	         ctype, len);
	return head;
}

/* The response verifies against the root and says good. */
static void
assert_good(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	OCSP_BASICRESP *bs;
	OCSP_CERTID *id;
	X509_STORE *trust = X509_STORE_new();
	STACK_OF(X509) *chain = sk_X509_new_null();
	int status = -1, reason;

	assert_non_null(resp);
	assert_int_equal(OCSP_response_status(resp),
	                 OCSP_RESPONSE_STATUS_SUCCESSFUL);
	assert_non_null(bs = OCSP_response_get1_basic(resp));
	X509_STORE_add_cert(trust, h.cert[H_ROOT]);
	sk_X509_push(chain, h.cert[H_SUB]);
	sk_X509_push(chain, h.cert[H_NODE]);
	assert_int_equal(OCSP_basic_verify(bs, chain, trust, 0), 1);
	id = OCSP_cert_to_id(EVP_sha1(), h.cert[H_CLIENT], h.cert[H_SUB]);
	assert_int_equal(OCSP_resp_find_status(bs, id, &status, &reason, NULL,
	                                       NULL, NULL),
	                 1);
	assert_int_equal(status, V_OCSP_CERTSTATUS_GOOD);
	OCSP_CERTID_free(id);
	sk_X509_free(chain);
	X509_STORE_free(trust);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
}

static void
test_date_and_media(void **state)
{
	char d[OCSP_HTTP_DATE_MAX];

	(void)state;
	ocsp_http_date(784111777, d);
	assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT");
	ocsp_http_date(0, d);
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
	assert_true(ocsp_http_media_is("application/ocsp-request",
	                               OCSP_HTTP_MEDIA_REQUEST));
	assert_true(ocsp_http_media_is(" Application/OCSP-Request ; x=1",
	                               OCSP_HTTP_MEDIA_REQUEST));
	assert_false(ocsp_http_media_is("application/ocsp-requests",
	                                OCSP_HTTP_MEDIA_REQUEST));
	assert_false(ocsp_http_media_is("text/plain", OCSP_HTTP_MEDIA_REQUEST));
	assert_false(ocsp_http_media_is(NULL, OCSP_HTTP_MEDIA_REQUEST));
}

static void
test_post(void **state)
{
	static char buf[65536];
	const uint8_t *b;
	size_t len, blen;

	(void)state;
	len = exchange(post_head(OCSP_HTTP_MEDIA_REQUEST, req_len), req_der,
	               req_len, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "Content-Type: application/ocsp-response"));
	assert_non_null(strstr(buf, "no-cache"));
	b = body_of(buf, len, &blen);
	assert_good(b, blen);

	len = exchange(post_head("text/plain", req_len), req_der, req_len, buf,
	               sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 415"));

	len = exchange(post_head(OCSP_HTTP_MEDIA_REQUEST, 5), "\x30\x03junk",
	               5, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	b = body_of(buf, len, &blen);
	assert_int_equal(blen, sizeof(malformed));
	assert_memory_equal(b, malformed, sizeof(malformed));
}

static void
test_get(void **state)
{
	static char buf[65536], head[4096];
	const uint8_t *b;
	char *b64;
	size_t len, blen, i;

	(void)state;
	assert_non_null(b64 = base64_encode(req_der, req_len, 0, NULL));
	/* base64url, unpadded, as some clients send it. */
	for (i = 0; b64[i] != '\0'; i++)
		b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	while (i > 0 && b64[i - 1] == '=')
		b64[--i] = '\0';
	snprintf(head, sizeof(head),
	         "GET /ocsp/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	         b64);
	free(b64);
	len = exchange(head, NULL, 0, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	assert_non_null(strstr(buf, "max-age="));
	assert_non_null(strstr(buf, "ETag: \""));
	assert_non_null(strstr(buf, "Expires: "));
	assert_non_null(strstr(buf, "Last-Modified: "));
	b = body_of(buf, len, &blen);
	assert_good(b, blen);

	len = exchange("GET /ocsp/%%%%%% HTTP/1.1\r\nHost: x\r\n"
	               "Connection: close\r\n\r\n",
	               NULL, 0, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200"));
	b = body_of(buf, len, &blen);
	assert_int_equal(blen, sizeof(malformed));
	assert_memory_equal(b, malformed, sizeof(malformed));
}

static void
test_paths_and_methods(void **state)
{
	static char buf[8192];

	(void)state;
	exchange("GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	         NULL, 0, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	exchange("GET /ocspx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	         NULL, 0, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404"));
	exchange("PUT /ocsp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	         "Content-Length: 0\r\n\r\n",
	         NULL, 0, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 405"));
	assert_non_null(strstr(buf, "Allow: GET, POST"));
}

static void
test_refresh(void **state)
{
	(void)state;
	ocsp_http_refresh(r, "the Sub CA", true);
	/* The one certificate of ours is pre-signed (at least once). */
	assert_true(ocsp_responder_cached(r) >= 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_date_and_media),
	    cmocka_unit_test(test_post),
	    cmocka_unit_test(test_get),
	    cmocka_unit_test(test_paths_and_methods),
	    cmocka_unit_test(test_refresh),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
