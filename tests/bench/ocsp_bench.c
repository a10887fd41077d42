/*
 * ocsp_bench: an OCSP load generator over plain HTTP/1.1 (docs/PERFORMANCE.md).
 *
 *	ocsp_bench --connect HOST:PORT --mode get|post|nonce|raw
 *	    [--issuer SUBCA.pem --serials FILE] [--path P] [--expect-size N]
 *	    [--concurrency N] [--threads T] [--count N] [--duration S]
 *	    [--new-conn] [--verify-every K --cafile ROOT [--untrusted F]]
 *	    [--timeout S] [--name TEXT]
 *
 * Modes (every request is made before the clock starts):
 *   get    GET /ocsp/<url-encoded base64 of an OCSPRequest> (RFC 6960
 *          A.1), one certificate, no nonce: what an RFC 5019 client sends,
 *          answered from the responder's pre-signed cache.
 *   post   POST /ocsp, the same requests as DER bodies.
 *   nonce  POST /ocsp with a 16-octet RFC 8954 nonce, a different one for
 *          each prepared request: signed on the fly.
 *   raw    GET --path (default "/"): any server's static body (nginx), for
 *          the reference rate; the answer must be 200 and, with
 *          --expect-size, exactly that long.
 * The OCSP requests are for the serials of --serials (hex, one a line) of
 * issuer --issuer, SHA-1 CertIDs as `openssl ocsp` makes them, and rotate
 * over the list.
 *
 * Every answer is checked cheaply: HTTP 200, a complete body, and for the
 * OCSP modes an OCSPResponse with status successful and basic response
 * bytes that repeats the request's CertID (and its nonce).  One answer in
 * --verify-every K (default 50; 0: none) is verified in full as well:
 * parsed, signature and responder chain verified against --cafile (with
 * --untrusted intermediates), the certificate's status good, thisUpdate
 * and nextUpdate sane, the nonce echoed.  Doing that for every answer
 * would make the checker the bottleneck (each parse decodes the included
 * responder certificate's key).
 *
 * Connections: --concurrency N keep-alive connections (HTTP/1.1), each with
 * one request in flight, driven by --threads T epoll loops (default 1: the
 * machine's cores are for the server).  A connection the server closes
 * ("Connection: close", or idle) is opened again; a request that found its
 * kept-alive connection closed before any byte of the answer is sent again
 * once on a new one, as HTTP clients do (counted as retries).  --new-conn:
 * a new connection for every request, with "Connection: close".
 *
 * Load is bounded in count and time: no request starts after --count
 * requests (default 100000) or --duration seconds (default 5); a request
 * without an answer after --timeout seconds (default 10) is an error.  The
 * rate counts the good answers within the window (start to the last
 * answer, or to the duration if that comes first).
 *
 * Output: a human line, then
 *   RESULT name=.. mode=.. concurrency=N threads=T requests=N ok=N
 *   errors=N retries=N connects=N verified=N elapsed=S rate=R p50_ms=X
 *   p99_ms=Y bytes=B cpu_s=C
 * (bytes: body size of the last good answer).  Exit status 0 when every
 * request succeeded, 1 when some failed, 2 on a usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "benchutil.h"
#include "util.h"

#define BENCH_CONCURRENCY_MAX 4096
#define BENCH_THREADS_MAX     64
#define BENCH_COUNT_MAX       10000000L
#define BENCH_DURATION_MAX    600.0
#define BENCH_TIMEOUT_MAX     300
#define BENCH_SERIALS_MAX     1000000
/* Largest answer (head and body) we take; an OCSP response is ~1 KiB. */
#define BENCH_ANSWER_MAX (32 * 1024)
#define BENCH_NONCE_LEN    16
#define BENCH_PATH_MAX     4096

enum mode { MODE_GET, MODE_POST, MODE_NONCE, MODE_RAW };

static const char *const mode_names[] = {"get", "post", "nonce", "raw"};

/* One prepared request. */
struct prep {
	char *http; /* the whole HTTP request */
	size_t len;
	uint8_t *certid; /* DER of the CertID the answer must repeat */
	size_t cidlen;
	uint8_t nonce[BENCH_NONCE_LEN];
	OCSP_CERTID *cid;  /* for the full verification */
	OCSP_REQUEST *req; /* nonce check */
};

enum conn_state { C_IDLE, C_CONNECTING, C_SENDING, C_READING };

struct conn {
	int fd;
	enum conn_state state;
	struct prep *p;
	long idx;     /* request slot */
	double start; /* when the request started (connect included) */
	size_t sent;
	size_t got;
	bool reused; /* this connection answered a request before */
	bool retried;
	char buf[BENCH_ANSWER_MAX + 1];
};

static struct {
	const char *connect, *issuer, *serials, *path, *cafile, *untrusted;
	const char *name;
	enum mode mode;
	unsigned concurrency, threads;
	long count;
	double duration;
	long expect_size;
	long verify_every;
	bool new_conn;
	int timeout;
} opt = {
    .mode = MODE_GET,
    .concurrency = 16,
    .threads = 1,
    .count = 100000,
    .duration = 5.0,
    .expect_size = -1,
    .verify_every = 50,
    .timeout = 10,
};

static struct sockaddr_storage peer;
static socklen_t peerlen;
static char host[300];
static struct prep *preps;
static size_t npreps;
static X509_STORE *trust;
static STACK_OF(X509) *untrusted;
static double t0, deadline;
static atomic_long next_req, nretries, nconnects, nverified;
static atomic_long last_bytes;
static float *latency;   /* per request slot, seconds; <0: failed */
static float *finished;  /* per request slot, since t0 */
static unsigned char *ran; /* per request slot: it was started */

/* --- preparing the requests --- */

static void
resolve(void)
{
	bench_resolve(opt.connect, true, &peer, &peerlen, host, sizeof(host));
}

static char *
xasprintf(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *
xasprintf(size_t *len, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		bench_die("out of memory");
	*len = (size_t)n;
	return s;
}

/* RFC 3986 percent-encoding of the base64 characters a path cannot hold. */
static char *
url_b64(const uint8_t *der, size_t len)
{
	char *b64 = base64_encode(der, len, 0, NULL), *out, *o;
	const char *p;

	if (b64 == NULL || (out = malloc(3 * strlen(b64) + 1)) == NULL)
		bench_die("out of memory");
	for (p = b64, o = out; *p != '\0'; p++) {
		if (*p == '+' || *p == '/' || *p == '=')
			o += sprintf(o, "%%%02X", (unsigned char)*p);
		else
			*o++ = *p;
	}
	*o = '\0';
	free(b64);
	return out;
}

static const char *
conn_header(void)
{
	return opt.new_conn ? "Connection: close\r\n" : "";
}

static void
prep_ocsp(struct prep *p, X509 *issuer, const char *hex)
{
	uint8_t sn[64], *der = NULL, *cid = NULL;
	ASN1_INTEGER *ai = NULL;
	BIGNUM *bn = NULL;
	ssize_t n = hex_decode(hex, sn, sizeof(sn));
	char *path;
	int dlen, clen;
	size_t hlen;

	if (n <= 0 || n > 20)
		bench_die("--serials: '%s' is not a serial in hex", hex);
	if ((bn = BN_bin2bn(sn, (int)n, NULL)) == NULL ||
	    (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    (p->cid = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
	                               X509_get0_pubkey_bitstr(issuer), ai)) ==
	        NULL ||
	    (p->req = OCSP_REQUEST_new()) == NULL ||
	    OCSP_request_add0_id(p->req, OCSP_CERTID_dup(p->cid)) == NULL)
		bench_die("cannot make an OCSP request");
	if (opt.mode == MODE_NONCE &&
	    (RAND_bytes(p->nonce, sizeof(p->nonce)) != 1 ||
	     OCSP_request_add1_nonce(p->req, p->nonce, sizeof(p->nonce)) != 1))
		bench_die("cannot add a nonce");
	if ((dlen = i2d_OCSP_REQUEST(p->req, &der)) <= 0 ||
	    (clen = i2d_OCSP_CERTID(p->cid, &cid)) <= 0)
		bench_die("cannot encode an OCSP request");
	p->certid = cid;
	p->cidlen = (size_t)clen;
	if (opt.mode == MODE_GET) {
		path = url_b64(der, (size_t)dlen);
		p->http = xasprintf(&p->len,
		                    "GET /ocsp/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
		                    path, host, conn_header());
		free(path);
	} else {
		char *head = xasprintf(
		    &hlen,
		    "POST %s HTTP/1.1\r\nHost: %s\r\n"
		    "Content-Type: application/ocsp-request\r\n"
		    "Content-Length: %d\r\n%s\r\n",
		    opt.path != NULL ? opt.path : "/ocsp", host, dlen,
		    conn_header());

		if ((p->http = malloc(hlen + (size_t)dlen)) == NULL)
			bench_die("out of memory");
		memcpy(p->http, head, hlen);
		memcpy(p->http + hlen, der, (size_t)dlen);
		p->len = hlen + (size_t)dlen;
		free(head);
	}
	OPENSSL_free(der);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
}

static void
prepare(void)
{
	char line[256];
	X509 *issuer = NULL;
	FILE *f;
	size_t cap = 0, n;

	if (opt.mode == MODE_RAW) {
		if ((preps = calloc(1, sizeof(*preps))) == NULL)
			bench_die("out of memory");
		preps[0].http = xasprintf(&preps[0].len,
		                          "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
		                          opt.path != NULL ? opt.path : "/", host,
		                          conn_header());
		npreps = 1;
		return;
	}
	if (opt.issuer == NULL || opt.serials == NULL)
		bench_die("--mode %s needs --issuer and --serials",
		    mode_names[opt.mode]);
	if ((f = fopen(opt.issuer, "r")) == NULL ||
	    (issuer = PEM_read_X509(f, NULL, NULL, NULL)) == NULL)
		bench_die("cannot read --issuer %s", opt.issuer);
	fclose(f);
	if ((f = fopen(opt.serials, "r")) == NULL)
		bench_die("cannot read --serials %s: %s", opt.serials,
		    strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		n = strcspn(line, "\r\n \t");
		line[n] = '\0';
		if (n == 0)
			continue;
		if (npreps == BENCH_SERIALS_MAX)
			bench_die("--serials: more than %d", BENCH_SERIALS_MAX);
		if (npreps == cap) {
			cap = cap ? 2 * cap : 1024;
			if ((preps = realloc(preps, cap * sizeof(*preps))) ==
			    NULL)
				bench_die("out of memory");
		}
		memset(&preps[npreps], 0, sizeof(*preps));
		prep_ocsp(&preps[npreps++], issuer, line);
	}
	fclose(f);
	if (npreps == 0)
		bench_die("--serials %s: no serial", opt.serials);
	X509_free(issuer);
}

static void
trust_load(void)
{
	BIO *b;
	X509 *x;

	if (opt.verify_every == 0 || opt.mode == MODE_RAW)
		return;
	if (opt.cafile == NULL)
		bench_die("--verify-every needs --cafile (or --verify-every 0)");
	if ((trust = X509_STORE_new()) == NULL ||
	    X509_STORE_load_file(trust, opt.cafile) != 1)
		bench_die("cannot load --cafile %s", opt.cafile);
	if ((untrusted = sk_X509_new_null()) == NULL)
		bench_die("out of memory");
	if (opt.untrusted == NULL)
		return;
	if ((b = BIO_new_file(opt.untrusted, "r")) == NULL)
		bench_die("cannot read --untrusted %s", opt.untrusted);
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(untrusted, x) <= 0)
			bench_die("out of memory");
	ERR_clear_error();
	BIO_free(b);
}

/* --- checking an answer --- */

/* One DER header at *p (short or long form); 0, or -1 if malformed. */
static int
der_head(const uint8_t **p, const uint8_t *end, int *tag, size_t *len)
{
	const uint8_t *q = *p;
	size_t n, k;

	if (end - q < 2)
		return -1;
	*tag = *q++;
	n = *q++;
	if (n & 0x80) {
		k = n & 0x7f;
		if (k == 0 || k > 4 || (size_t)(end - q) < k)
			return -1;
		for (n = 0; k > 0; k--)
			n = (n << 8) | *q++;
	}
	if ((size_t)(end - q) < n)
		return -1;
	*len = n;
	*p = q;
	return 0;
}

/*
 * OCSPResponse { responseStatus ENUMERATED 0, [0] { SEQUENCE {
 * id-pkix-ocsp-basic, OCTET STRING } } } without decoding the rest.
 */
static const char *
cheap_check(const uint8_t *b, size_t len)
{
	static const uint8_t basic[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x05,
	                                0x05, 0x07, 0x30, 0x01, 0x01};
	const uint8_t *p = b, *end = b + len;
	size_t n;
	int tag;

	if (der_head(&p, end, &tag, &n) == -1 || tag != 0x30 || p + n != end)
		return "the body is not one DER SEQUENCE";
	if (der_head(&p, end, &tag, &n) == -1 || tag != 0x0a || n != 1)
		return "no responseStatus";
	if (*p != 0)
		return *p == 1   ? "malformedRequest"
		       : *p == 2 ? "internalError"
		       : *p == 3 ? "tryLater"
		       : *p == 6 ? "unauthorized"
		                 : "unsuccessful responseStatus";
	p++;
	if (der_head(&p, end, &tag, &n) == -1 || tag != 0xa0 ||
	    der_head(&p, end, &tag, &n) == -1 || tag != 0x30 ||
	    (size_t)(end - p) < sizeof(basic) ||
	    memcmp(p, basic, sizeof(basic)) != 0)
		return "no basic OCSP response bytes";
	return NULL;
}

/* The full check of one answer; NULL, or why it fails. */
static const char *
full_check(const struct prep *p, const uint8_t *b, size_t len)
{
	const unsigned char *q = b;
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
	const char *why = NULL;
	int status, reason;

	if ((resp = d2i_OCSP_RESPONSE(NULL, &q, (long)len)) == NULL)
		why = "not an OCSPResponse";
	else if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
		why = "not successful";
	else if ((bs = OCSP_response_get1_basic(resp)) == NULL)
		why = "no basic response";
	else if (OCSP_basic_verify(bs, untrusted, trust, 0) != 1)
		why = "signature or responder certificate does not verify";
	else if (OCSP_resp_find_status(bs, p->cid, &status, &reason, &rev,
	                               &thisupd, &nextupd) != 1)
		why = "no answer for the requested CertID";
	else if (status != V_OCSP_CERTSTATUS_GOOD)
		why = "certificate status is not good";
	else if (OCSP_check_validity(thisupd, nextupd, 300, -1) != 1)
		why = "thisUpdate/nextUpdate out of range";
	else if (opt.mode == MODE_NONCE && OCSP_check_nonce(p->req, bs) != 1)
		why = "nonce not echoed";
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	return why;
}

/*
 * A complete answer in c->buf (head of hlen bytes, body of blen): 0 when
 * it is what the mode wants.
 */
static int
check_answer(struct conn *c, int status, const char *ctype, size_t hlen,
             size_t blen)
{
	const uint8_t *body = (const uint8_t *)c->buf + hlen;
	const char *why;

	if (status != 200) {
		bench_fail(c->idx, "HTTP status %d", status);
		return -1;
	}
	if (opt.mode == MODE_RAW) {
		if (opt.expect_size >= 0 && blen != (size_t)opt.expect_size) {
			bench_fail(c->idx, "body of %zu bytes, not %ld", blen,
			           opt.expect_size);
			return -1;
		}
		atomic_store(&last_bytes, (long)blen);
		return 0;
	}
	if (ctype == NULL ||
	    strncasecmp(ctype, "application/ocsp-response", 25) != 0) {
		bench_fail(c->idx, "Content-Type is not application/ocsp-response");
		return -1;
	}
	if ((why = cheap_check(body, blen)) != NULL) {
		bench_fail(c->idx, "%s", why);
		return -1;
	}
	if (memmem(body, blen, c->p->certid, c->p->cidlen) == NULL) {
		bench_fail(c->idx, "the answer is not for the requested CertID");
		return -1;
	}
	if (opt.mode == MODE_NONCE &&
	    memmem(body, blen, c->p->nonce, sizeof(c->p->nonce)) == NULL) {
		bench_fail(c->idx, "the nonce is not echoed");
		return -1;
	}
	if (opt.verify_every > 0 && c->idx % opt.verify_every == 0) {
		if ((why = full_check(c->p, body, blen)) != NULL) {
			bench_fail(c->idx, "full check: %s", why);
			return -1;
		}
		atomic_fetch_add(&nverified, 1);
	}
	atomic_store(&last_bytes, (long)blen);
	return 0;
}

/* --- the connection machine --- */

struct loop {
	pthread_t thread;
	int ep;
	struct conn *conns;
	unsigned nconns;
	unsigned active;
};

static void
conn_close(struct loop *l, struct conn *c)
{
	if (c->fd != -1) {
		epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->reused = false;
}

static void
conn_watch(struct loop *l, struct conn *c, uint32_t events, bool add)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (epoll_ctl(l->ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) ==
	    -1)
		bench_die("epoll_ctl: %s", strerror(errno));
}

static int
conn_open(struct loop *l, struct conn *c)
{
	int one = 1;

	c->fd = socket(peer.ss_family,
	               SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		bench_fail(c->idx, "socket: %s", strerror(errno));
		return -1;
	}
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	atomic_fetch_add(&nconnects, 1);
	c->reused = false;
	if (connect(c->fd, (struct sockaddr *)&peer, peerlen) == -1 &&
	    errno != EINPROGRESS) {
		bench_fail(c->idx, "connect %s: %s", opt.connect,
		           strerror(errno));
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	c->state = C_CONNECTING;
	conn_watch(l, c, EPOLLOUT, true);
	return 0;
}

static void conn_next(struct loop *l, struct conn *c);

static void
conn_done(struct loop *l, struct conn *c, bool ok)
{
	double end = bench_now_s();

	latency[c->idx] = ok ? (float)(end - c->start) : -1.0f;
	finished[c->idx] = (float)(end - t0);
	if (!ok)
		conn_close(l, c);
	conn_next(l, c);
}

/* Send what is left of the request; then wait for the answer. */
static void
conn_send(struct loop *l, struct conn *c)
{
	ssize_t n;

	while (c->sent < c->p->len) {
		n = send(c->fd, c->p->http + c->sent, c->p->len - c->sent,
		         MSG_NOSIGNAL);
		if (n > 0) {
			c->sent += (size_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			c->state = C_SENDING;
			conn_watch(l, c, EPOLLOUT, false);
			return;
		}
		if (c->reused && !c->retried) {
			/* The server closed the kept-alive connection. */
			c->retried = true;
			atomic_fetch_add(&nretries, 1);
			conn_close(l, c);
			c->sent = 0;
			if (conn_open(l, c) == -1)
				conn_done(l, c, false);
			return;
		}
		bench_fail(c->idx, "send: %s", strerror(errno));
		conn_done(l, c, false);
		return;
	}
	c->state = C_READING;
	c->got = 0;
	conn_watch(l, c, EPOLLIN, false);
}

/* Start the next request on c, or retire it. */
static void
conn_next(struct loop *l, struct conn *c)
{
	long idx = atomic_fetch_add(&next_req, 1);

	if (idx >= opt.count || bench_now_s() >= deadline) {
		conn_close(l, c);
		c->state = C_IDLE;
		l->active--;
		return;
	}
	ran[idx] = 1;
	c->idx = idx;
	c->p = &preps[(size_t)idx % npreps];
	c->start = bench_now_s();
	c->sent = 0;
	c->got = 0;
	c->retried = false;
	if (c->fd == -1) {
		if (conn_open(l, c) == -1)
			conn_done(l, c, false);
		return;
	}
	conn_send(l, c);
}

/*
 * Parse what is in c->buf: 1 when the answer is complete (and checked),
 * 0 when more is needed, -1 on a broken answer.
 */
static int
conn_parse(struct loop *l, struct conn *c, bool eof)
{
	char *hend, *v, ctype[128];
	size_t hlen, clen = 0, n;
	bool have_len = false, close_after;
	int status, minor;

	c->buf[c->got] = '\0';
	if ((hend = strstr(c->buf, "\r\n\r\n")) == NULL)
		return eof ? -1 : 0;
	hlen = (size_t)(hend + 4 - c->buf);
	*hend = '\0';
	if (sscanf(c->buf, "HTTP/1.%d %d", &minor, &status) != 2) {
		*hend = '\r';
		bench_fail(c->idx, "not an HTTP answer");
		return -1;
	}
	if ((v = strcasestr(c->buf, "\r\nContent-Length:")) != NULL) {
		clen = strtoul(v + 17, NULL, 10);
		have_len = true;
	}
	/* HTTP/1.0 (openssl ocsp): closed after the answer unless kept. */
	close_after = minor == 0;
	if ((v = strcasestr(c->buf, "\r\nConnection:")) != NULL) {
		v += 13 + strspn(v + 13, " \t");
		if (strncasecmp(v, "close", 5) == 0)
			close_after = true;
		else if (strncasecmp(v, "keep-alive", 10) == 0)
			close_after = false;
	}
	ctype[0] = '\0';
	if ((v = strcasestr(c->buf, "\r\nContent-Type:")) != NULL) {
		v += 15;
		v += strspn(v, " \t");
		n = strcspn(v, "\r");
		if (n >= sizeof(ctype))
			n = sizeof(ctype) - 1;
		memcpy(ctype, v, n);
		ctype[n] = '\0';
	}
	*hend = '\r';
	if (!have_len) {
		/* HTTP/1.0 style: the body runs to EOF. */
		if (!eof)
			return 0;
		clen = c->got - hlen;
		close_after = true;
	}
	if (c->got < hlen + clen)
		return eof ? -1 : 0;
	if (c->got > hlen + clen) {
		bench_fail(c->idx, "bytes after the answer");
		return -1;
	}
	if (check_answer(c, status, ctype[0] ? ctype : NULL, hlen, clen) == -1)
		return -1;
	if (close_after || opt.new_conn)
		conn_close(l, c);
	else
		c->reused = true;
	return 1;
}

static void
conn_read(struct loop *l, struct conn *c)
{
	ssize_t n;
	int rc;

	for (;;) {
		if (c->got >= BENCH_ANSWER_MAX) {
			bench_fail(c->idx, "answer over %d bytes",
			           BENCH_ANSWER_MAX);
			conn_done(l, c, false);
			return;
		}
		n = recv(c->fd, c->buf + c->got, BENCH_ANSWER_MAX - c->got, 0);
		if (n > 0) {
			c->got += (size_t)n;
			if ((rc = conn_parse(l, c, false)) == 1) {
				conn_done(l, c, true);
				return;
			}
			if (rc == -1) {
				conn_done(l, c, false);
				return;
			}
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if ((n == 0 || errno == ECONNRESET) && c->got == 0 &&
		    c->reused && !c->retried) {
			/*
			 * The server closed the kept-alive connection while
			 * it was idle (EOF, or a reset for the request that
			 * reached a closed socket): send it again, once.
			 */
			c->retried = true;
			atomic_fetch_add(&nretries, 1);
			conn_close(l, c);
			c->sent = 0;
			if (conn_open(l, c) == -1)
				conn_done(l, c, false);
			return;
		}
		if (n == 0 && (rc = conn_parse(l, c, true)) == 1) {
			conn_close(l, c);
			conn_done(l, c, true);
			return;
		}
		if (n == 0)
			bench_fail(c->idx, "connection closed after %zu bytes "
			                   "of the answer", c->got);
		else
			bench_fail(c->idx, "recv: %s", strerror(errno));
		conn_done(l, c, false);
		return;
	}
}

static void
conn_event(struct loop *l, struct conn *c, uint32_t ev)
{
	int err = 0;
	socklen_t len = sizeof(err);

	switch (c->state) {
	case C_CONNECTING:
		/* A stale event of the socket this one replaced: ignore. */
		if (!(ev & (EPOLLOUT | EPOLLERR)))
			return;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
		    err != 0) {
			bench_fail(c->idx, "connect %s: %s", opt.connect,
			           strerror(err ? err : errno));
			conn_done(l, c, false);
			return;
		}
		c->state = C_SENDING;
		conn_send(l, c);
		return;
	case C_SENDING:
		conn_send(l, c);
		return;
	case C_READING:
		if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
			conn_read(l, c);
		return;
	case C_IDLE:
		return;
	}
}

static void *
loop_main(void *arg)
{
	struct loop *l = arg;
	struct epoll_event evs[256];
	double now, last_sweep = 0;
	unsigned i;
	int n;

	for (i = 0; i < l->nconns; i++) {
		l->conns[i].fd = -1;
		l->active++;
		conn_next(l, &l->conns[i]);
	}
	while (l->active > 0) {
		n = epoll_wait(l->ep, evs, 256, 100);
		for (int k = 0; k < n; k++)
			conn_event(l, evs[k].data.ptr, evs[k].events);
		now = bench_now_s();
		if (now - last_sweep < 0.1)
			continue;
		last_sweep = now;
		for (i = 0; i < l->nconns; i++) {
			struct conn *c = &l->conns[i];

			if (c->state != C_IDLE &&
			    now - c->start > (double)opt.timeout) {
				bench_fail(c->idx, "no answer within %d s",
				           opt.timeout);
				conn_done(l, c, false);
			}
		}
	}
	return NULL;
}

static int
cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return x < y ? -1 : x > y;
}

static void
usage(void)
{
	fprintf(stderr,
	        "usage: ocsp_bench --connect HOST:PORT --mode get|post|nonce|raw "
	        "[--issuer SUBCA.pem --serials FILE] [--path P] "
	        "[--expect-size N] [--concurrency N] [--threads T] "
	        "[--count N] [--duration S] [--new-conn] [--verify-every K "
	        "--cafile ROOT [--untrusted F]] [--timeout S] [--name TEXT]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"connect", required_argument, NULL, 'c'},
	    {"mode", required_argument, NULL, 'm'},
	    {"issuer", required_argument, NULL, 'i'},
	    {"serials", required_argument, NULL, 's'},
	    {"path", required_argument, NULL, 'p'},
	    {"expect-size", required_argument, NULL, 'e'},
	    {"concurrency", required_argument, NULL, 'n'},
	    {"threads", required_argument, NULL, 't'},
	    {"count", required_argument, NULL, 'N'},
	    {"duration", required_argument, NULL, 'd'},
	    {"new-conn", no_argument, NULL, 'x'},
	    {"verify-every", required_argument, NULL, 'v'},
	    {"cafile", required_argument, NULL, 'A'},
	    {"untrusted", required_argument, NULL, 'U'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"name", required_argument, NULL, 'a'},
	    {NULL, 0, NULL, 0},
	};
	struct loop *loops;
	double cpu0, cpu, window, last = 0, rate;
	float *ok_lat;
	long n, requests = 0, ok = 0, in_window = 0, i, errs;
	unsigned t, k;
	char *end;
	int c;

	bench_prog = "ocsp_bench";
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opt.connect = optarg;
			break;
		case 'm':
			for (k = 0; k < 4; k++)
				if (strcmp(optarg, mode_names[k]) == 0)
					break;
			if (k == 4)
				usage();
			opt.mode = (enum mode)k;
			break;
		case 'i':
			opt.issuer = optarg;
			break;
		case 's':
			opt.serials = optarg;
			break;
		case 'p':
			if (optarg[0] != '/' || strlen(optarg) > BENCH_PATH_MAX ||
			    strpbrk(optarg, " \r\n") != NULL)
				bench_die("--path: an absolute path without spaces");
			opt.path = optarg;
			break;
		case 'e':
			opt.expect_size = bench_parse_long(optarg, "--expect-size", 0,
			                             BENCH_ANSWER_MAX);
			break;
		case 'n':
			opt.concurrency = (unsigned)bench_parse_long(
			    optarg, "--concurrency", 1, BENCH_CONCURRENCY_MAX);
			break;
		case 't':
			opt.threads = (unsigned)bench_parse_long(
			    optarg, "--threads", 1, BENCH_THREADS_MAX);
			break;
		case 'N':
			opt.count = bench_parse_long(optarg, "--count", 1,
			                       BENCH_COUNT_MAX);
			break;
		case 'd':
			errno = 0;
			opt.duration = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' ||
			    !(opt.duration > 0 &&
			      opt.duration <= BENCH_DURATION_MAX))
				bench_die("--duration: seconds, more than 0 and at "
				    "most %.0f", BENCH_DURATION_MAX);
			break;
		case 'x':
			opt.new_conn = true;
			break;
		case 'v':
			opt.verify_every = bench_parse_long(optarg, "--verify-every",
			                              0, BENCH_COUNT_MAX);
			break;
		case 'A':
			opt.cafile = optarg;
			break;
		case 'U':
			opt.untrusted = optarg;
			break;
		case 'T':
			opt.timeout = (int)bench_parse_long(optarg, "--timeout", 1,
			                              BENCH_TIMEOUT_MAX);
			break;
		case 'a':
			opt.name = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || opt.connect == NULL)
		usage();
	if (opt.threads > opt.concurrency)
		opt.threads = opt.concurrency;
	resolve();
	prepare();
	trust_load();
	if ((latency = malloc((size_t)opt.count * sizeof(float))) == NULL ||
	    (finished = malloc((size_t)opt.count * sizeof(float))) == NULL ||
	    (ran = calloc((size_t)opt.count, 1)) == NULL ||
	    (loops = calloc(opt.threads, sizeof(*loops))) == NULL)
		bench_die("out of memory");
	for (t = 0; t < opt.threads; t++) {
		loops[t].nconns = opt.concurrency / opt.threads +
		                  (t < opt.concurrency % opt.threads ? 1 : 0);
		if ((loops[t].conns = calloc(loops[t].nconns,
		                             sizeof(struct conn))) == NULL ||
		    (loops[t].ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
			bench_die("out of memory");
	}
	cpu0 = bench_cpu_s();
	t0 = bench_now_s();
	deadline = t0 + opt.duration;
	for (t = 0; t < opt.threads; t++)
		if (pthread_create(&loops[t].thread, NULL, loop_main,
		                   &loops[t]) != 0)
			bench_die("cannot start a thread");
	for (t = 0; t < opt.threads; t++)
		pthread_join(loops[t].thread, NULL);
	cpu = bench_cpu_s() - cpu0;
	n = atomic_load(&next_req);
	if (n > opt.count)
		n = opt.count;
	if ((ok_lat = malloc((size_t)(n + 1) * sizeof(float))) == NULL)
		bench_die("out of memory");
	for (i = 0; i < n; i++) {
		if (!ran[i])
			continue;
		requests++;
		if (finished[i] > last)
			last = finished[i];
		if (latency[i] >= 0)
			ok_lat[ok++] = latency[i];
	}
	window = last < opt.duration ? last : opt.duration;
	for (i = 0; i < n; i++)
		if (ran[i] && latency[i] >= 0 && finished[i] <= window)
			in_window++;
	rate = window > 0 ? (double)in_window / window : 0;
	qsort(ok_lat, (size_t)ok, sizeof(float), cmp_float);
	errs = atomic_load(&bench_errors);
	printf("%s: %ld requests (%s%s, %u connections), %ld ok, %ld errors, "
	       "%.1f req/s, p50 %.2f ms, p99 %.2f ms, %ld verified in full\n",
	       opt.name != NULL ? opt.name : "ocsp_bench", requests,
	       mode_names[opt.mode], opt.new_conn ? ", new connection each" : "",
	       opt.concurrency, ok, errs, rate,
	       1e3 * BENCH_PERCENTILE(ok_lat, ok, 0.50),
	       1e3 * BENCH_PERCENTILE(ok_lat, ok, 0.99), atomic_load(&nverified));
	printf("RESULT name=%s mode=%s concurrency=%u threads=%u requests=%ld "
	       "ok=%ld errors=%ld retries=%ld connects=%ld verified=%ld "
	       "elapsed=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f bytes=%ld "
	       "cpu_s=%.3f\n",
	       opt.name != NULL ? opt.name : "ocsp_bench", mode_names[opt.mode],
	       opt.concurrency, opt.threads, requests, ok, errs,
	       atomic_load(&nretries), atomic_load(&nconnects),
	       atomic_load(&nverified), window, rate,
	       1e3 * BENCH_PERCENTILE(ok_lat, ok, 0.50),
	       1e3 * BENCH_PERCENTILE(ok_lat, ok, 0.99), atomic_load(&last_bytes),
	       cpu);
	fflush(stdout);
	/* Everything released, so that a leak checker sees only real leaks. */
	for (t = 0; t < opt.threads; t++) {
		close(loops[t].ep);
		free(loops[t].conns);
	}
	for (i = 0; i < (long)npreps; i++) {
		free(preps[i].http);
		OPENSSL_free(preps[i].certid);
		OCSP_CERTID_free(preps[i].cid);
		OCSP_REQUEST_free(preps[i].req);
	}
	free(preps);
	free(loops);
	free(ok_lat);
	free(latency);
	free(finished);
	free(ran);
	X509_STORE_free(trust);
	sk_X509_pop_free(untrusted, X509_free);
	return errs == 0 && ok == requests ? 0 : 1;
}
