/*
 * est_bench: an EST load generator (docs/PERFORMANCE.md).
 *
 *	est_bench --connect HOST:PORT --cacert ROOT [--cert F --key F
 *	    [--passphrase-file F]] [--servername NAME] [--concurrency N]
 *	    [--count N] [--duration S] [--csr-dir D | --csrs N] [--label L]
 *	    [--handshake-only [--path P] [--expect-status N]]
 *	    [--tls 1.2|1.3] [--timeout S] [--name TEXT]
 *
 * Every request is a new TCP connection and a full TLS handshake (no
 * session is ever offered for resumption, and the client's session cache
 * is off), with the client certificate when --cert is given, then one HTTP
 * request with "Connection: close":
 *
 *   enrollment (default): POST /.well-known/est[/LABEL]/simpleenroll with
 *     a base64 PKCS#10 CSR; the answer must be 200, application/pkcs7-mime,
 *     and decode to exactly one certificate whose public key is the CSR's.
 *   --handshake-only: GET PATH (default "/"); the answer must have status
 *     --expect-status (default 200).  Against tls_ceiling this is the
 *     mutual-TLS handshake ceiling.
 *
 * The CSRs (EC P-256, CN "est-bench-<n>") are made before the clock starts,
 * or read from --csr-dir (PEM or DER, one per file).  Concurrency is N
 * threads with blocking sockets: N requests really are in flight at once
 * (max-inflight in the result shows it), whatever the number of cores.
 *
 * Load is bounded in count and in time: no request starts after --count
 * requests (default 2000) or after --duration seconds (default 5), and
 * every socket operation times out after --timeout seconds (default 10).
 * The rate counts the good answers that arrived within the window (start
 * to the last answer, or to the duration if that comes first), so that
 * the drain of the last requests does not dilute it.
 *
 * Output: a human line, then one machine line for tests/bench/run-est-bench:
 *   RESULT name=.. mode=enroll|handshake concurrency=N requests=N ok=N
 *   errors=N elapsed=S rate=R p50_ms=X p99_ms=Y max_inflight=N tls=V
 *   group=G cpu_s=C
 * (cpu_s: this process's CPU time while the clock ran, CSRs not included).
 * Exit status: 0 when every request succeeded, 1 when some failed, 2 on a
 * usage or setup error.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "benchutil.h"
#include "csr.h"
#include "keys.h"
#include "util.h"

/* Bounds on what one run may ask for. */
#define BENCH_CONCURRENCY_MAX 1024
#define BENCH_COUNT_MAX       1000000
#define BENCH_DURATION_MAX    600.0
#define BENCH_TIMEOUT_MAX     300
/* CSRs made in advance at most; more requests reuse them in turn. */
#define BENCH_CSRS_MAX 20000
/* Largest answer we read (one certificate in base64 is ~1 KiB). */
#define BENCH_ANSWER_MAX (256 * 1024)
/* Error messages printed in full; the rest are only counted. */
#define BENCH_PATH_MAX     512

/* One prepared CSR: the base64 body we send and the key we expect back. */
struct bench_csr {
	char *b64;
	size_t b64len;
	uint8_t *spki; /* DER SubjectPublicKeyInfo of the CSR */
	int spkilen;
};

/* Options. */
static struct {
	const char *connect, *cacert, *cert, *key, *passfile, *servername;
	const char *csr_dir, *label, *path, *name;
	unsigned concurrency;
	long count;
	double duration;
	long ncsrs;
	bool handshake_only;
	int expect_status;
	int tls; /* 0: any from 1.2, else 12 or 13 */
	int timeout;
} opt = {
    .concurrency = 1,
    .count = 2000,
    .duration = 5.0,
    .ncsrs = 0,
    .path = "/",
    .expect_status = 200,
    .timeout = 10,
};

/* Shared state of a run. */
static struct sockaddr_storage peer;
static socklen_t peerlen;
static char hostport[300];
static SSL_CTX *ctx;
static struct bench_csr *csrs;
static size_t ncsrs;
static double t0, deadline;
static atomic_long next_req;
static atomic_long inflight, max_inflight;
static double *latency;       /* per request slot, seconds; <0: failed */
static double *finished_at;   /* per request slot, since t0 */
static _Atomic(const char *) tls_seen; /* a negotiated version (report) */
static _Atomic(const char *) group_seen; /* the key exchange group */
static unsigned char *ran;    /* per request slot: it was made */

static void
usage(void)
{
	fprintf(stderr,
	        "usage: est_bench --connect HOST:PORT --cacert ROOT "
	        "[--cert F --key F [--passphrase-file F]]\n"
	        "    [--servername NAME] [--concurrency N] [--count N] "
	        "[--duration S]\n"
	        "    [--csr-dir D | --csrs N] [--label L] [--handshake-only "
	        "[--path P] [--expect-status N]]\n"
	        "    [--tls 1.2|1.3] [--timeout S] [--name TEXT]\n");
	exit(2);
}

/* --- preparation (not timed) --- */

static int
csr_add(X509_REQ *req)
{
	struct bench_csr *c = &csrs[ncsrs];
	uint8_t *der = NULL;
	size_t len;

	if (csr_to_der(req, &der, &len) == -1)
		return -1;
	/* One line: the smallest body and the cheapest decode. */
	c->b64 = base64_encode(der, len, 0, &c->b64len);
	free(der);
	c->spki = NULL;
	c->spkilen = i2d_PUBKEY(X509_REQ_get0_pubkey(req), &c->spki);
	if (c->b64 == NULL || c->spkilen <= 0)
		return -1;
	ncsrs++;
	return 0;
}

static void
csrs_generate(size_t n)
{
	struct error err = {{0}};
	char cn[64];
	size_t i;

	if ((csrs = calloc(n, sizeof(*csrs))) == NULL)
		bench_die("%s", "out of memory");
	for (i = 0; i < n; i++) {
		EVP_PKEY *k = key_generate(KEY_EC_P256, &err);
		X509_REQ *req;

		snprintf(cn, sizeof(cn), "est-bench-%zu", i);
		if (k == NULL ||
		    (req = csr_create(k, cn, NULL, 0, &err)) == NULL)
			bench_die("cannot make a CSR: %s", err.msg);
		if (csr_add(req) == -1)
			bench_die("%s", "cannot encode a CSR");
		X509_REQ_free(req);
		EVP_PKEY_free(k);
	}
}

static void
csrs_load(const char *dir)
{
	struct error err = {{0}};
	struct dirent **names = NULL;
	char path[PATH_MAX];
	int n, i;

	if ((n = scandir(dir, &names, NULL, alphasort)) < 0)
		bench_die("cannot read --csr-dir %s", dir);
	if ((csrs = calloc((size_t)n + 1, sizeof(*csrs))) == NULL)
		bench_die("%s", "out of memory");
	for (i = 0; i < n; i++) {
		X509_REQ *req;
		uint8_t *buf;
		size_t len;

		if (names[i]->d_name[0] == '.') {
			free(names[i]);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		free(names[i]);
		if ((buf = file_read(path, CSR_MAX_SIZE, &len, &err)) == NULL)
			bench_die("%s", err.msg);
		if ((req = csr_parse(buf, len, &err)) == NULL ||
		    csr_verify(req, &err) == -1) {
			fprintf(stderr, "est_bench: %s: %s\n", path, err.msg);
			exit(2);
		}
		free(buf);
		if (csr_add(req) == -1)
			bench_die("cannot encode %s", path);
		X509_REQ_free(req);
	}
	free(names);
	if (ncsrs == 0)
		bench_die("no CSR in --csr-dir %s", dir);
}

static int
pass_cb(char *buf, int size, int rwflag, void *u)
{
	const char *p = u;
	size_t n = strlen(p);

	(void)rwflag;
	if (n > (size_t)size)
		return -1;
	memcpy(buf, p, n);
	return (int)n;
}

static void
ctx_setup(void)
{
	struct error err = {{0}};
	char *pass = NULL;
	size_t passlen = 0;
	EVP_PKEY *key;
	/* --tls pins one version; without it, anything from TLS 1.2. */
	int ver = opt.tls == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		bench_die("%s", "SSL_CTX_new");
	if (SSL_CTX_set_min_proto_version(ctx, ver) != 1 ||
	    (opt.tls != 0 && SSL_CTX_set_max_proto_version(ctx, ver) != 1))
		bench_die("%s", "cannot set the TLS version");
	/*
	 * Full handshakes only: nothing is cached, so nothing can be offered
	 * for resumption (TLS 1.2 session ids or tickets, TLS 1.3 PSKs).
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (SSL_CTX_load_verify_locations(ctx, opt.cacert, NULL) != 1)
		bench_die("cannot load --cacert %s", opt.cacert);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (opt.cert != NULL) {
		if (SSL_CTX_use_certificate_chain_file(ctx, opt.cert) != 1)
			bench_die("cannot load --cert %s", opt.cert);
		if (opt.passfile != NULL &&
		    (pass = passphrase_load(opt.passfile, NULL, &passlen,
		                            &err)) == NULL)
			bench_die("%s", err.msg);
		if (pass != NULL) {
			/* key_load() refuses a plain key with a passphrase. */
			if ((key = key_load(opt.key, pass, passlen, &err)) ==
			    NULL)
				bench_die("%s", err.msg);
			if (SSL_CTX_use_PrivateKey(ctx, key) != 1)
				bench_die("cannot use --key %s", opt.key);
			EVP_PKEY_free(key);
			passphrase_free(pass, passlen);
		} else {
			SSL_CTX_set_default_passwd_cb(ctx, pass_cb);
			SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)"");
			if (SSL_CTX_use_PrivateKey_file(ctx, opt.key,
			                                SSL_FILETYPE_PEM) != 1)
				bench_die("cannot load --key %s (encrypted? give "
				    "--passphrase-file)",
				    opt.key);
		}
		if (SSL_CTX_check_private_key(ctx) != 1)
			bench_die("%s", "--key does not match --cert");
	}
}

static void
resolve(void)
{
	char host[256];

	bench_resolve(opt.connect, false, &peer, &peerlen, host, sizeof(host));
	snprintf(hostport, sizeof(hostport), "%s",
	         opt.servername != NULL ? opt.servername : host);
}

/* --- one request --- */

/* Read until the answer is complete (Content-Length) or EOF. */
static long
read_answer(SSL *ssl, char *buf, size_t max)
{
	size_t len = 0, want = 0;
	int n;

	while (len < max) {
		n = SSL_read(ssl, buf + len, (int)(max - len));
		if (n <= 0) {
			int e = SSL_get_error(ssl, n);

			/* The server may close without close_notify. */
			if (e == SSL_ERROR_ZERO_RETURN ||
			    (e == SSL_ERROR_SYSCALL && len > 0) ||
			    (e == SSL_ERROR_SSL && len > 0 &&
			     ERR_GET_REASON(ERR_peek_last_error()) ==
			         SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
				ERR_clear_error();
				break;
			}
			return -1;
		}
		len += (size_t)n;
		buf[len] = '\0';
		if (want == 0) {
			char *hend = strstr(buf, "\r\n\r\n"), *cl;

			if (hend == NULL)
				continue;
			*hend = '\0';
			cl = strcasestr(buf, "\r\nContent-Length:");
			*hend = '\r';
			if (cl == NULL)
				continue; /* read to EOF */
			want = (size_t)(hend + 4 - buf) +
			       strtoul(cl + 17, NULL, 10);
		}
		if (want > 0 && len >= want)
			break;
	}
	buf[len] = '\0';
	return (long)len;
}

/* The value of header name in the head (NUL-terminated copy in out). */
static bool
header_value(const char *head, const char *name, char *out, size_t outlen)
{
	char pat[64];
	const char *p, *e;
	size_t n;

	snprintf(pat, sizeof(pat), "\r\n%s:", name);
	if ((p = strcasestr(head, pat)) == NULL)
		return false;
	p += strlen(pat);
	while (*p == ' ' || *p == '\t')
		p++;
	if ((e = strstr(p, "\r\n")) == NULL)
		return false;
	n = (size_t)(e - p) < outlen - 1 ? (size_t)(e - p) : outlen - 1;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* The EST answer: 200, pkcs7-mime, one certificate with our key. */
static int
check_enroll(long idx, const char *ans, const struct bench_csr *c)
{
	char ct[128];
	const char *body;
	uint8_t *der = NULL, *spki = NULL;
	const uint8_t *p;
	size_t derlen;
	PKCS7 *p7 = NULL;
	STACK_OF(X509) *certs = NULL;
	int spkilen, rc = -1;

	if (!header_value(ans, "Content-Type", ct, sizeof(ct)) ||
	    strncasecmp(ct, "application/pkcs7-mime", 22) != 0) {
		bench_fail(idx, "answer is not application/pkcs7-mime");
		return -1;
	}
	body = strstr(ans, "\r\n\r\n") + 4;
	if ((der = base64_decode(body, strlen(body), &derlen, NULL)) == NULL) {
		bench_fail(idx, "answer is not base64");
		return -1;
	}
	p = der;
	if ((p7 = d2i_PKCS7(NULL, &p, (long)derlen)) == NULL ||
	    p != der + derlen || !PKCS7_type_is_signed(p7) ||
	    p7->d.sign == NULL || (certs = p7->d.sign->cert) == NULL) {
		bench_fail(idx, "answer is not a PKCS#7 certs-only");
		goto out;
	}
	if (sk_X509_num(certs) != 1) {
		bench_fail(idx, "answer holds %d certificates, not 1",
		           sk_X509_num(certs));
		goto out;
	}
	spkilen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(sk_X509_value(certs, 0)),
	                          &spki);
	if (spkilen != c->spkilen ||
	    memcmp(spki, c->spki, (size_t)spkilen) != 0) {
		bench_fail(idx, "issued certificate is not for the CSR's key");
		goto out;
	}
	rc = 0;
out:
	OPENSSL_free(spki);
	PKCS7_free(p7);
	free(der);
	return rc;
}

static void
note_inflight(long delta)
{
	long now = atomic_fetch_add(&inflight, delta) + delta;
	long max = atomic_load(&max_inflight);

	while (now > max &&
	       !atomic_compare_exchange_weak(&max_inflight, &max, now))
		;
}

/* One request; 0 on success. */
static int
one_request(long idx, char *req, size_t reqmax, char *ans)
{
	const struct bench_csr *c = NULL;
	struct timeval tv = {opt.timeout, 0};
	SSL *ssl = NULL;
	int fd, one = 1, rc = -1, status;
	size_t reqlen;
	long alen;

	if (opt.handshake_only)
		reqlen = (size_t)snprintf(req, reqmax,
		                          "GET %s HTTP/1.1\r\nHost: %s\r\n"
		                          "Connection: close\r\n\r\n",
		                          opt.path, hostport);
	else {
		c = &csrs[(size_t)idx % ncsrs];
		reqlen = (size_t)snprintf(
		    req, reqmax,
		    "POST /.well-known/est/%s%ssimpleenroll HTTP/1.1\r\n"
		    "Host: %s\r\n"
		    "Content-Type: application/pkcs10\r\n"
		    "Content-Transfer-Encoding: base64\r\n"
		    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		    opt.label != NULL ? opt.label : "",
		    opt.label != NULL ? "/" : "", hostport, c->b64len);
		if (reqlen + c->b64len >= reqmax) {
			bench_fail(idx, "request too large");
			return -1;
		}
		memcpy(req + reqlen, c->b64, c->b64len);
		reqlen += c->b64len;
	}
	fd = socket(peer.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		bench_fail(idx, "socket: %s", strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&peer, peerlen) == -1) {
		bench_fail(idx, "connect %s: %s", opt.connect, strerror(errno));
		goto out;
	}
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
		bench_fail(idx, "SSL_new");
		goto out;
	}
	if (opt.servername != NULL &&
	    (SSL_set_tlsext_host_name(ssl, opt.servername) != 1 ||
	     SSL_set1_host(ssl, opt.servername) != 1)) {
		bench_fail(idx, "bad --servername");
		goto out;
	}
	if (SSL_connect(ssl) != 1) {
		long v = SSL_get_verify_result(ssl);

		bench_fail(idx, "TLS handshake failed%s%s",
		           v != X509_V_OK ? ": " : "",
		           v != X509_V_OK ? X509_verify_cert_error_string(v)
		                          : "");
		goto out;
	}
	if (SSL_session_reused(ssl)) {
		bench_fail(idx, "session was resumed: not a full handshake");
		goto out;
	}
	atomic_store(&tls_seen, SSL_get_version(ssl));
	{
		int nid = SSL_get_negotiated_group(ssl);

		if (nid != NID_undef && OBJ_nid2sn(nid) != NULL)
			atomic_store(&group_seen, OBJ_nid2sn(nid));
	}
	if (SSL_write(ssl, req, (int)reqlen) != (int)reqlen) {
		bench_fail(idx, "write failed");
		goto out;
	}
	if ((alen = read_answer(ssl, ans, BENCH_ANSWER_MAX)) <= 0) {
		bench_fail(idx, "no answer");
		goto out;
	}
	if (sscanf(ans, "HTTP/1.%*d %d", &status) != 1) {
		bench_fail(idx, "not an HTTP answer");
		goto out;
	}
	if (strstr(ans, "\r\n\r\n") == NULL) {
		bench_fail(idx, "answer cut short");
		goto out;
	}
	if (opt.handshake_only) {
		if (status != opt.expect_status) {
			bench_fail(idx, "status %d, not %d", status,
			           opt.expect_status);
			goto out;
		}
	} else if (status != 200) {
		const char *body = strstr(ans, "\r\n\r\n") + 4;

		bench_fail(idx, "status %d: %.200s", status, body);
		goto out;
	} else if (check_enroll(idx, ans, c) == -1)
		goto out;
	rc = 0;
out:
	if (ssl != NULL) {
		/* Tell the server we are done, as curl does. */
		if (rc == 0)
			(void)SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	return rc;
}

static void *
worker(void *arg)
{
	char *req = malloc(CSR_MAX_SIZE + 1024);
	char *ans = malloc(BENCH_ANSWER_MAX + 1);
	long idx;
	double start, end;

	(void)arg;
	if (req == NULL || ans == NULL)
		bench_die("%s", "out of memory");
	for (;;) {
		idx = atomic_fetch_add(&next_req, 1);
		if (idx >= opt.count || bench_now_s() >= deadline)
			break;
		ran[idx] = 1;
		note_inflight(1);
		start = bench_now_s();
		if (one_request(idx, req, CSR_MAX_SIZE + 1024, ans) == 0) {
			end = bench_now_s();
			latency[idx] = end - start;
		} else {
			end = bench_now_s();
			latency[idx] = -1;
		}
		finished_at[idx] = end - t0;
		note_inflight(-1);
	}
	free(req);
	free(ans);
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"connect", required_argument, NULL, 'c'},
	    {"cacert", required_argument, NULL, 'A'},
	    {"cert", required_argument, NULL, 'C'},
	    {"key", required_argument, NULL, 'K'},
	    {"passphrase-file", required_argument, NULL, 'P'},
	    {"servername", required_argument, NULL, 's'},
	    {"concurrency", required_argument, NULL, 'n'},
	    {"count", required_argument, NULL, 'N'},
	    {"duration", required_argument, NULL, 'd'},
	    {"csr-dir", required_argument, NULL, 'D'},
	    {"csrs", required_argument, NULL, 'r'},
	    {"label", required_argument, NULL, 'l'},
	    {"handshake-only", no_argument, NULL, 'H'},
	    {"path", required_argument, NULL, 'p'},
	    {"expect-status", required_argument, NULL, 'e'},
	    {"tls", required_argument, NULL, 't'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"name", required_argument, NULL, 'a'},
	    {NULL, 0, NULL, 0},
	};
	pthread_t *threads;
	double elapsed, window_end, *ok_lat, rate, cpu0, cpu;
	long requests, ok = 0, in_window = 0, i, errs;
	char *end;
	unsigned t;
	int c;

	bench_prog = "est_bench";
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opt.connect = optarg;
			break;
		case 'A':
			opt.cacert = optarg;
			break;
		case 'C':
			opt.cert = optarg;
			break;
		case 'K':
			opt.key = optarg;
			break;
		case 'P':
			opt.passfile = optarg;
			break;
		case 's':
			opt.servername = optarg;
			break;
		case 'n':
			opt.concurrency = (unsigned)bench_parse_long(
			    optarg, "--concurrency", 1, BENCH_CONCURRENCY_MAX);
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
				bench_die("--duration: '%s' is not a number of "
				    "seconds from 0 to 600",
				    optarg);
			break;
		case 'D':
			opt.csr_dir = optarg;
			break;
		case 'r':
			opt.ncsrs = bench_parse_long(optarg, "--csrs", 1,
			                       BENCH_CSRS_MAX);
			break;
		case 'l':
			opt.label = optarg;
			break;
		case 'H':
			opt.handshake_only = true;
			break;
		case 'p':
			opt.path = optarg;
			break;
		case 'e':
			opt.expect_status = (int)bench_parse_long(
			    optarg, "--expect-status", 100, 599);
			break;
		case 't':
			if (strcmp(optarg, "1.2") == 0)
				opt.tls = 12;
			else if (strcmp(optarg, "1.3") == 0)
				opt.tls = 13;
			else
				bench_die("--tls: '%s' is not 1.2 or 1.3", optarg);
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
	if (optind != argc || opt.connect == NULL || opt.cacert == NULL)
		usage();
	if ((opt.cert == NULL) != (opt.key == NULL))
		bench_die("%s", "--cert and --key go together");
	if (opt.passfile != NULL && opt.key == NULL)
		bench_die("%s", "--passphrase-file is for --key");
	if (opt.csr_dir != NULL && opt.ncsrs != 0)
		bench_die("%s", "--csr-dir and --csrs exclude each other");
	if (opt.label != NULL &&
	    (opt.label[0] == '\0' || strspn(opt.label,
	                                    "abcdefghijklmnopqrstuvwxyz"
	                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                    "0123456789-_.") !=
	                                 strlen(opt.label)))
		bench_die("--label '%s': letters, digits, '-', '_' and '.' only",
		    opt.label);
	if (opt.path[0] != '/' || strlen(opt.path) > BENCH_PATH_MAX ||
	    strpbrk(opt.path, " \r\n") != NULL)
		bench_die("--path '%s': an absolute path without spaces", opt.path);
	/* A write to a server that went away is an error, not a death. */
	(void)signal(SIGPIPE, SIG_IGN);

	/* Everything before the clock starts: address, TLS, CSRs. */
	resolve();
	ctx_setup();
	if (!opt.handshake_only) {
		if (opt.csr_dir != NULL)
			csrs_load(opt.csr_dir);
		else
			csrs_generate(opt.ncsrs != 0 ? (size_t)opt.ncsrs
			              : (size_t)(opt.count < BENCH_CSRS_MAX
			                             ? opt.count
			                             : BENCH_CSRS_MAX));
	}
	latency = calloc((size_t)opt.count, sizeof(*latency));
	finished_at = calloc((size_t)opt.count, sizeof(*finished_at));
	ok_lat = calloc((size_t)opt.count, sizeof(*ok_lat));
	ran = calloc((size_t)opt.count, 1);
	threads = calloc(opt.concurrency, sizeof(*threads));
	if (latency == NULL || finished_at == NULL || ok_lat == NULL ||
	    threads == NULL || ran == NULL)
		bench_die("%s", "out of memory");

	cpu0 = bench_cpu_s();
	t0 = bench_now_s();
	deadline = t0 + opt.duration;
	for (t = 0; t < opt.concurrency; t++)
		if (pthread_create(&threads[t], NULL, worker, NULL) != 0)
			bench_die("%s", "cannot start a thread");
	for (t = 0; t < opt.concurrency; t++)
		pthread_join(threads[t], NULL);
	elapsed = bench_now_s() - t0;
	cpu = bench_cpu_s() - cpu0;

	/*
	 * A slot claimed after the deadline was never made; a slot made
	 * has ran set.  Every thread is joined: nothing is still in flight.
	 */
	for (i = 0, requests = 0, window_end = 0; i < opt.count; i++) {
		if (!ran[i])
			continue;
		requests++;
		if (finished_at[i] > window_end)
			window_end = finished_at[i];
	}
	if (window_end > opt.duration)
		window_end = opt.duration;
	for (i = 0; i < opt.count; i++) {
		if (!ran[i] || latency[i] < 0)
			continue;
		ok_lat[ok++] = latency[i];
		if (finished_at[i] <= window_end)
			in_window++;
	}
	errs = atomic_load(&bench_errors);
	qsort(ok_lat, (size_t)ok, sizeof(*ok_lat), cmp_double);
	rate = window_end > 0 ? (double)in_window / window_end : 0;
	printf("%s: %s, concurrency %u, %s: %ld requests, %ld ok, %ld errors "
	       "in %.2f s: %.1f/s, latency p50 %.1f ms p99 %.1f ms, "
	       "max in flight %ld\n",
	       opt.name != NULL ? opt.name : "est_bench",
	       opt.handshake_only ? "handshake + tiny request" : "enrollment",
	       opt.concurrency,
	       atomic_load(&tls_seen) != NULL ? atomic_load(&tls_seen)
	                                      : "no TLS",
	       requests, ok, errs, elapsed, rate,
	       BENCH_PERCENTILE(ok_lat, ok, 0.50) * 1e3,
	       BENCH_PERCENTILE(ok_lat, ok, 0.99) * 1e3,
	       atomic_load(&max_inflight));
	printf("RESULT name=%s mode=%s concurrency=%u requests=%ld ok=%ld "
	       "errors=%ld elapsed=%.3f rate=%.2f p50_ms=%.2f p99_ms=%.2f "
	       "max_inflight=%ld tls=%s group=%s cpu_s=%.3f\n",
	       opt.name != NULL ? opt.name : "-",
	       opt.handshake_only ? "handshake" : "enroll", opt.concurrency,
	       requests, ok, errs, elapsed, rate,
	       BENCH_PERCENTILE(ok_lat, ok, 0.50) * 1e3,
	       BENCH_PERCENTILE(ok_lat, ok, 0.99) * 1e3, atomic_load(&max_inflight),
	       atomic_load(&tls_seen) != NULL ? atomic_load(&tls_seen) : "-",
	       atomic_load(&group_seen) != NULL ? atomic_load(&group_seen)
	                                        : "-",
	       cpu);
	fflush(stdout);

	for (i = 0; i < (long)ncsrs; i++) {
		free(csrs[i].b64);
		OPENSSL_free(csrs[i].spki);
	}
	free(csrs);
	free(latency);
	free(finished_at);
	free(ok_lat);
	free(ran);
	free(threads);
	SSL_CTX_free(ctx);
	return errs == 0 && ok > 0 ? 0 : 1;
}
