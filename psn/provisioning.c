/*
 * provisioning: the PSN's EST client and BYOD portal, one process
 * (provisioning.h; docs/byod.md).
 *
 * Threads: the main thread runs the EST client's schedule (cacerts at
 * start, every provisioning.cacerts-interval, every
 * provisioning.retry-interval while failing) and is the only one that
 * talks to the node's control socket (alarms).  The portal's handlers run
 * on the http workers; they call simpleenroll themselves (one libcurl easy
 * handle per call, so nothing of libcurl is shared between threads) and,
 * when the last cacerts failed, cacerts once before.  The EST client's
 * state (the last good chain, whether the last call worked and why not)
 * is behind a mutex; a worker that sees EST fail wakes the main thread
 * through an eventfd so the alarm goes up at once, not at the next retry.
 *
 * The portal trusts nothing it is sent: every field of the JSON is
 * bounded and checked, the CSR is parsed and its signature verified here
 * before the EST server sees it, and an answer is built only from what
 * the EST server returned and we verified (the certificate chains to our
 * root and holds the CSR's key).  A refusal stores nothing: the only
 * store write of an enrollment is the CA service's, after the EST server
 * accepted it.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "chain.h"
#include "config.h"
#include "csr.h"
#include "enroll.h"
#include "est.h"
#include "http.h"
#include "iselab-version.h"
#include "keys.h"
#include "log.h"
#include "node.h"
#include "proc.h"
#include "provisioning.h"
#include "services.h"
#include "store.h"
#include "util.h"

/* Longest path we build in the data directory. */
#define PROV_PATH_MAX 4096
/* Largest EST answer we read (a certs-only of three RSA-4096 CAs ~7 KiB). */
#define PROV_EST_BODY_MAX (64 * 1024)
/* Most certificates we take from one EST answer. */
#define PROV_EST_CERTS_MAX 16
/* Longest URL we build ("https://host:port/.well-known/est/cacerts"). */
#define PROV_URL_MAX 512
/* Of the EST server's text of a refusal, what we pass on. */
#define PROV_EST_REASON_MAX 300
/* How long the main thread waits for the node's control socket. */
#define PROV_CONTROL_TIMEOUT_MS 5000
/* Nesting the portal's JSON parser allows (we need 1). */
#define PROV_JSON_DEPTH 4
/* Alarm text we send (the control socket takes up to CONTROL_ARG_MAX). */
#define PROV_ALARM_TEXT_MAX 1024

/*
 * The EST client's identity and trust, replaced whole when a new root CA
 * chain generation is taken while workers may be in an EST call with the
 * old one: each call holds a reference.
 */
struct prov_ident {
	atomic_int refs;
	X509 *client_cert;    /* D/ca/est-client.crt */
	EVP_PKEY *client_key; /* its key */
	X509 *root;           /* D/ca/root-ca.crt: the only anchor */
	uint8_t *root_pem;    /* the same as PEM, for libcurl */
	size_t root_pem_len;
};

/* The one process's state. */
struct prov {
	const struct psn_service_args *args;
	const struct config *cfg;
	struct config *own_cfg;
	char hostname[NODE_HOSTNAME_MAX + 1];
	/* The EST client: where and with what. */
	char est_base[PROV_URL_MAX]; /* https://psn1:8084/.well-known/est/ */
	char resolve[PROV_URL_MAX];  /* psn1:8084:127.0.0.1 */
	long est_timeout_ms;
	unsigned gen; /* root CA chain generation of what follows */
	/* The portal (main thread only). */
	X509 *tls_cert;             /* D/ca/est-server.crt */
	EVP_PKEY *tls_key;          /* its key */
	STACK_OF(X509) * tls_chain; /* sub CA, Node CA: sent with it */
	struct store *store;        /* read-only: enrollment users */
	struct http_server *srv;
	int wake_fd; /* eventfd: a worker wants the main thread */
	/* Shared with the workers, under mu. */
	pthread_mutex_t mu;
	struct prov_ident *id; /* the EST client's; a new generation's */
	STACK_OF(X509) * chain; /* last good cacerts: sub CA .. root */
	bool ok;                /* the last EST call worked */
	bool fetch_now;         /* a worker saw EST fail: cacerts now */
	bool failed_once;       /* a call failed since the start */
	char reason[ERROR_MAX]; /* why the last call failed */
	/* Main thread only. */
	bool alarm_up; /* as the node last accepted it */
	char alarm_text[PROV_ALARM_TEXT_MAX];
	bool alarm_warned; /* the control socket refused once */
};

/* The MAC in a JSON request, normalised, and the user. */
struct prov_enroll {
	const char *user;
	const char *password;
	char mac[PROV_MAC_HEX_LEN + 1];
	const char *csr_text;
	size_t csr_len;
};

/* --- MAC addresses --- */

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
prov_mac_normalise(const char *in, char out[PROV_MAC_HEX_LEN + 1])
{
	size_t n = strlen(in), i, o = 0;
	char sep = '\0';
	int group;

	/* aabbccddeeff */
	if (n == 12) {
		for (i = 0; i < 12; i++) {
			if (hexval((unsigned char)in[i]) < 0)
				return -1;
			out[i] = (char)tolower((unsigned char)in[i]);
		}
		out[12] = '\0';
		return 0;
	}
	/* aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff: pairs, one separator. */
	if (n == 17) {
		sep = in[2];
		if (sep != ':' && sep != '-')
			return -1;
		group = 2;
	} else if (n == 14) {
		/* aabb.ccdd.eeff (Cisco's dotted form) */
		sep = '.';
		group = 4;
	} else
		return -1;
	for (i = 0; i < n; i++) {
		if ((i + 1) % (size_t)(group + 1) == 0) {
			if (in[i] != sep)
				return -1;
			continue;
		}
		if (hexval((unsigned char)in[i]) < 0 || o >= 12)
			return -1;
		out[o++] = (char)tolower((unsigned char)in[i]);
	}
	if (o != 12)
		return -1;
	out[12] = '\0';
	return 0;
}

/* "aa:bb:cc:dd:ee:ff" from 12 hex digits, for logs and errors. */
static void
mac_colons(const char *hex, char out[18])
{
	size_t i, o = 0;

	for (i = 0; i < 12; i++) {
		out[o++] = hex[i];
		if (i % 2 == 1 && i != 11)
			out[o++] = ':';
	}
	out[o] = '\0';
}

/* --- the EST client --- */

/* A bounded buffer for libcurl's answers. */
struct prov_buf {
	uint8_t *data;
	size_t len;
	bool too_big;
};

static size_t
prov_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct prov_buf *b = userdata;
	size_t n = size * nmemb;
	uint8_t *p;

	if (n > PROV_EST_BODY_MAX - b->len) {
		b->too_big = true;
		return 0; /* libcurl stops with CURLE_WRITE_ERROR */
	}
	if ((p = realloc(b->data, b->len + n + 1)) == NULL)
		return 0;
	memcpy(p + b->len, ptr, n);
	b->len += n;
	p[b->len] = '\0';
	b->data = p;
	return n;
}

/*
 * Our certificate and key straight into libcurl's SSL_CTX (OpenSSL
 * backend): the key never exists unencrypted outside this process's
 * EVP_PKEY, not even as a PEM in memory.
 */
static CURLcode
prov_ssl_ctx_cb(CURL *curl, void *sslctx, void *userptr)
{
	struct prov_ident *id = userptr;
	SSL_CTX *ctx = sslctx;

	(void)curl;
	if (SSL_CTX_use_certificate(ctx, id->client_cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, id->client_key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_crypto(LOG_PROVISIONING, NULL, "SSL_CTX_use_PrivateKey",
		           "est-client");
		return CURLE_SSL_CERTPROBLEM;
	}
	return CURLE_OK;
}

static void
prov_ident_release(struct prov_ident *id)
{
	if (id == NULL || atomic_fetch_sub(&id->refs, 1) != 1)
		return;
	X509_free(id->client_cert);
	EVP_PKEY_free(id->client_key);
	X509_free(id->root);
	free(id->root_pem);
	free(id);
}

/* The current identity, with a reference the caller releases. */
static struct prov_ident *
prov_ident_get(struct prov *p)
{
	struct prov_ident *id;

	pthread_mutex_lock(&p->mu);
	id = p->id;
	atomic_fetch_add(&id->refs, 1);
	pthread_mutex_unlock(&p->mu);
	return id;
}

/* Outcome of one EST call. */
struct prov_call {
	long status;     /* HTTP status; 0: no answer (transport) */
	char ctype[128]; /* Content-Type of the answer */
	struct prov_buf body;
};

static void
prov_call_free(struct prov_call *c)
{
	free(c->body.data);
	memset(c, 0, sizeof(*c));
}

/*
 * One HTTPS request to the local EST server with our client certificate.
 * -1 with err set when there was no HTTP answer (connection refused, TLS
 * failure, timeout): the EST server is not available.
 */
static int
prov_est_call(struct prov *p, const char *op, const uint8_t *post,
              size_t postlen, struct prov_call *out, struct error *err)
{
	struct curl_slist *resolve = NULL, *hdrs = NULL;
	struct prov_ident *id;
	struct curl_blob ca;
	char url[PROV_URL_MAX], errbuf[CURL_ERROR_SIZE];
	const char *ct = NULL;
	CURLcode rc;
	CURL *h;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	errbuf[0] = '\0';
	snprintf(url, sizeof(url), "%s%s", p->est_base, op);
	if ((h = curl_easy_init()) == NULL) {
		error_set(err, "curl_easy_init failed");
		return -1;
	}
	id = prov_ident_get(p);
	if ((resolve = curl_slist_append(NULL, p->resolve)) == NULL ||
	    (post != NULL &&
	     (hdrs = curl_slist_append(
	          NULL, "Content-Type: application/pkcs10")) == NULL)) {
		error_set(err, "out of memory");
		goto out;
	}
	ca.data = id->root_pem;
	ca.len = id->root_pem_len;
	ca.flags = CURL_BLOB_NOCOPY;
	/*
	 * Only https, to the EST server's name pinned to its address, no
	 * proxy from the environment, the deployment's root as the only CA,
	 * and a bounded time: a hung EST server must not hang the portal.
	 */
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_RESOLVE, resolve) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOPROXY, "*") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, p->est_timeout_ms) !=
	        CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, p->est_timeout_ms) !=
	        CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSLVERSION,
	                     (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CAPATH, NULL) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, prov_ssl_ctx_cb) !=
	        CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, id) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, prov_write_cb) !=
	        CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out->body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT,
	                     "iselab-provisioning/" ISELAB_VERSION) !=
	        CURLE_OK) {
		error_set(err, "libcurl refused an option (built without "
		               "OpenSSL or too old?)");
		goto out;
	}
	if (post != NULL &&
	    (curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
	     curl_easy_setopt(h, CURLOPT_POSTFIELDS, post) != CURLE_OK ||
	     curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
	                      (curl_off_t)postlen) != CURLE_OK)) {
		error_set(err, "libcurl refused the POST options");
		goto out;
	}
	if ((rc = curl_easy_perform(h)) != CURLE_OK) {
		if (out->body.too_big)
			error_set(err, "%s: the answer is larger than %d bytes",
			          op, PROV_EST_BODY_MAX);
		else
			error_set(err, "%s: %s", op,
			          errbuf[0] != '\0' ? errbuf
			                            : curl_easy_strerror(rc));
		goto out;
	}
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK &&
	    ct != NULL)
		snprintf(out->ctype, sizeof(out->ctype), "%s", ct);
	ret = 0;
out:
	curl_slist_free_all(resolve);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	prov_ident_release(id);
	if (ret == -1)
		prov_call_free(out);
	return ret;
}

/* The EST server's text of a refusal, one printable line, bounded. */
static void
est_reason(const struct prov_call *c, char *buf, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < c->body.len && o + 1 < len && o < PROV_EST_REASON_MAX;
	     i++) {
		unsigned char ch = c->body.data[i];

		if (ch == '\n' || ch == '\r') {
			if (o > 0 && buf[o - 1] != ' ')
				buf[o++] = ' ';
			continue;
		}
		buf[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	while (o > 0 && buf[o - 1] == ' ')
		o--;
	buf[o] = '\0';
	if (o == 0)
		snprintf(buf, len, "(no reason given)");
}

/* The media type of a Content-Type, without parameters, matches want. */
static bool
media_type_is(const char *ctype, const char *want)
{
	size_t n = strlen(want);

	if (ctype == NULL)
		return false;
	while (*ctype == ' ')
		ctype++;
	if (strncasecmp(ctype, want, n) != 0)
		return false;
	ctype += n;
	while (*ctype == ' ')
		ctype++;
	return *ctype == '\0' || *ctype == ';';
}

/* The certificates of a base64 certs-only CMC answer (RFC 7030 4.1.3). */
static STACK_OF(X509) *
    certs_only_parse(const struct prov_call *c, struct error *err)
{
	STACK_OF(X509) *out = NULL, *in;
	const unsigned char *q;
	uint8_t *der;
	size_t len;
	PKCS7 *p7 = NULL;
	int i;

	if (!media_type_is(c->ctype, "application/pkcs7-mime")) {
		error_set(err,
		          "answer of type '%.64s', not "
		          "application/pkcs7-mime",
		          c->ctype[0] != '\0' ? c->ctype : "(none)");
		return NULL;
	}
	if (c->body.len == 0 ||
	    (der = base64_decode((const char *)c->body.data, c->body.len, &len,
	                         err)) == NULL) {
		if (c->body.len == 0)
			error_set(err, "empty answer");
		else
			error_prefix(err, "answer is not base64");
		return NULL;
	}
	q = der;
	if ((p7 = d2i_PKCS7(NULL, &q, (long)len)) == NULL || q != der + len ||
	    !PKCS7_type_is_signed(p7) || p7->d.sign == NULL ||
	    (in = p7->d.sign->cert) == NULL || sk_X509_num(in) < 1 ||
	    sk_X509_num(in) > PROV_EST_CERTS_MAX) {
		ERR_clear_error();
		error_set(err,
		          "answer is not a certs-only PKCS#7 with 1 to "
		          "%d certificates",
		          PROV_EST_CERTS_MAX);
		goto out;
	}
	if ((out = sk_X509_new_null()) == NULL)
		goto oom;
	for (i = 0; i < sk_X509_num(in); i++) {
		X509 *x = sk_X509_value(in, i);

		if (X509_up_ref(x) != 1)
			goto oom;
		if (!sk_X509_push(out, x)) {
			X509_free(x);
			goto oom;
		}
	}
	goto out;
oom:
	error_set(err, "out of memory");
	chain_free(out);
	out = NULL;
out:
	PKCS7_free(p7);
	free(der);
	return out;
}

/*
 * A cacerts answer is complete when its first certificate (the issuing
 * CA, RFC 7030 4.1.3) verifies, through the others only, up to our root,
 * and the root itself is among them: the chain an endpoint is given must
 * be the whole chain (ISE-CA-EST.md: an incomplete chain breaks BYOD).
 * *path: the verified path, issuing CA first, root last.
 */
static int
chain_check(struct prov *p, STACK_OF(X509) * certs, STACK_OF(X509) * *path,
            struct error *err)
{
	STACK_OF(X509) *anchors = NULL, *rest = NULL;
	X509 *first = sk_X509_value(certs, 0);
	X509 *root = p->id->root; /* main thread: the only writer */
	char name[256];
	bool has_root = false;
	int i, rc = -1;

	for (i = 0; i < sk_X509_num(certs); i++)
		if (X509_cmp(sk_X509_value(certs, i), root) == 0)
			has_root = true;
	if (!has_root) {
		cert_name_string(X509_get_subject_name(root), name,
		                 sizeof(name));
		error_set(err,
		          "chain incomplete: the deployment's root (%s) "
		          "is not among the %d CA certificates",
		          name, sk_X509_num(certs));
		return -1;
	}
	if (X509_check_ca(first) == 0) {
		error_set(err, "the first certificate is not a CA");
		return -1;
	}
	if ((anchors = sk_X509_new_null()) == NULL ||
	    !sk_X509_push(anchors, root) ||
	    (rest = sk_X509_dup(certs)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	(void)sk_X509_shift(rest);
	if (chain_verify(first, rest, anchors, CHAIN_PURPOSE_ANY, path, err) ==
	    -1) {
		error_prefix(err, "chain incomplete");
		goto out;
	}
	rc = 0;
out:
	sk_X509_free(anchors);
	sk_X509_free(rest);
	return rc;
}

/* Record the outcome of an EST call for everyone (under mu). */
static void
prov_set_state(struct prov *p, bool ok, const char *reason,
               STACK_OF(X509) * chain)
{
	bool warn, back;

	pthread_mutex_lock(&p->mu);
	/* Changes only: a retry every 10 s that fails again says nothing. */
	warn = !ok && (p->ok || !p->failed_once);
	back = ok && !p->ok && p->failed_once;
	p->ok = ok;
	if (!ok) {
		p->failed_once = true;
		snprintf(p->reason, sizeof(p->reason), "%s", reason);
	} else
		p->reason[0] = '\0';
	if (chain != NULL) {
		chain_free(p->chain);
		p->chain = chain;
	}
	pthread_mutex_unlock(&p->mu);
	if (warn)
		log_warn(LOG_PROVISIONING, "EST client: %s", reason);
	else if (back)
		log_info(LOG_PROVISIONING,
		         "EST client: CA certificates retrieved again; BYOD "
		         "enrollment works");
}

/* Wake the main thread (alarm now, cacerts now). */
static void
prov_wake(struct prov *p, bool fetch)
{
	uint64_t one = 1;

	if (fetch) {
		pthread_mutex_lock(&p->mu);
		p->fetch_now = true;
		pthread_mutex_unlock(&p->mu);
	}
	if (write(p->wake_fd, &one, sizeof(one)) != sizeof(one))
		log_debug(LOG_PROVISIONING, "wake: %s", strerror(errno));
}

/*
 * GET cacerts, check the chain, record the outcome: 0 good, -1 with err
 * set (and the state "failed") otherwise.
 */
static int
prov_cacerts(struct prov *p, struct error *err)
{
	STACK_OF(X509) *certs = NULL, *path = NULL;
	struct prov_call c;
	char why[PROV_EST_REASON_MAX + 1];

	if (prov_est_call(p, "cacerts", NULL, 0, &c, err) == -1) {
		error_prefix(err, "the EST server is not available");
		goto fail;
	}
	if (c.status != 200) {
		est_reason(&c, why, sizeof(why));
		error_set(err, "cacerts answered %ld: %s", c.status, why);
		goto fail;
	}
	if ((certs = certs_only_parse(&c, err)) == NULL) {
		error_prefix(err, "cacerts");
		goto fail;
	}
	if (chain_check(p, certs, &path, err) == -1)
		goto fail;
	log_debug(LOG_PROVISIONING,
	          "EST client: cacerts gave %d CA "
	          "certificates, chain complete",
	          sk_X509_num(certs));
	chain_free(certs);
	prov_call_free(&c);
	prov_set_state(p, true, NULL, path);
	return 0;
fail:
	chain_free(certs);
	prov_call_free(&c);
	prov_set_state(p, false, err->msg, NULL);
	return -1;
}

/* --- the node's alarm --- */

/* Tell the node (control socket) what the alarm should be now. */
static void
prov_alarm_sync(struct prov *p)
{
	const char *argv[5];
	char text[PROV_ALARM_TEXT_MAX], *out = NULL, *errtext = NULL;
	struct error e = {{0}};
	int argc, status = 0;
	bool want;

	pthread_mutex_lock(&p->mu);
	want = !p->ok;
	snprintf(text, sizeof(text),
	         "%s: the EST client cannot retrieve the CA certificates "
	         "from %scacerts: %s; BYOD onboarding fails until it can",
	         p->hostname, p->est_base, p->reason);
	pthread_mutex_unlock(&p->mu);
	/* Raised again when the reason changed: the text says what now. */
	if (want == p->alarm_up && (!want || strcmp(text, p->alarm_text) == 0))
		return;
	argv[0] = "alarm";
	argv[1] = want ? "raise" : "clear";
	argv[2] = PROV_ALARM_NAME;
	argv[3] = PROV_ALARM_SEVERITY;
	argv[4] = text;
	argc = want ? 5 : 3;
	if (control_call(p->args->datadir, argv, argc, PROV_CONTROL_TIMEOUT_MS,
	                 &out, &errtext, &status, &e) == -1 ||
	    status != 0) {
		/*
		 * The clear at start: at the node's start its daemon holds
		 * no alarm yet (and may not answer yet); it matters only
		 * after a crash of ours, when the daemon runs.  No retry.
		 */
		if (!want && p->alarm_text[0] == '\0') {
			log_debug(LOG_PROVISIONING,
			          "clearing a leftover alarm: %s",
			          e.msg[0] != '\0' ? e.msg : "refused");
			p->alarm_up = false;
			goto out;
		}
		/* Once per outage, not every retry: the daemon may be old. */
		if (!p->alarm_warned)
			log_warn(LOG_PROVISIONING,
			         "cannot %s the alarm \"%s\" on %s: %s",
			         argv[1], PROV_ALARM_NAME, p->hostname,
			         e.msg[0] != '\0'
			             ? e.msg
			             : (errtext != NULL && errtext[0] != '\0'
			                    ? errtext
			                    : "refused"));
		p->alarm_warned = true;
		goto out;
	}
	p->alarm_warned = false;
	p->alarm_up = want;
	if (want)
		log_warn(LOG_PROVISIONING, "alarm raised: %s (%s): %s",
		         PROV_ALARM_NAME, PROV_ALARM_SEVERITY, text);
	else if (p->alarm_text[0] == '\0')
		log_debug(LOG_PROVISIONING,
		          "no alarm \"%s\" left from an earlier run",
		          PROV_ALARM_NAME);
	else
		log_info(LOG_PROVISIONING, "alarm cleared: %s",
		         PROV_ALARM_NAME);
	snprintf(p->alarm_text, sizeof(p->alarm_text), "%s", want ? text : "");
out:
	free(out);
	free(errtext);
}

/* --- the portal --- */

/* {"error": "..."} with status. */
static void reply_error(struct http_request *req, int status, const char *fmt,
                        ...) __attribute__((format(printf, 3, 4)));

static void
reply_error(struct http_request *req, int status, const char *fmt, ...)
{
	char msg[ERROR_MAX];
	json_object *o;
	const char *s;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if ((o = json_object_new_object()) == NULL ||
	    json_object_object_add(o, "error", json_object_new_string(msg)) !=
	        0 ||
	    (s = json_object_to_json_string_ext(
	         o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)) ==
	        NULL) {
		json_object_put(o);
		http_reply_text(req, status, "%s", msg);
		return;
	}
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply(req, status, "application/json", s, strlen(s));
	json_object_put(o);
}

/* A string field of the request: NULL (and a 400) when wrong. */
static const char *
json_field(json_object *o, const char *name, size_t max, size_t *len,
           struct error *err)
{
	json_object *v;
	const char *s;
	int n;

	if (!json_object_object_get_ex(o, name, &v) || v == NULL) {
		error_set(err, "missing \"%s\"", name);
		return NULL;
	}
	if (!json_object_is_type(v, json_type_string)) {
		error_set(err, "\"%s\" must be a string", name);
		return NULL;
	}
	s = json_object_get_string(v);
	n = json_object_get_string_len(v);
	if (n <= 0 || (size_t)n > max) {
		error_set(err, "\"%s\" must have 1 to %zu characters", name,
		          max);
		return NULL;
	}
	/* A NUL inside would make C see a shorter string than JSON did. */
	if (memchr(s, '\0', (size_t)n) != NULL) {
		error_set(err, "\"%s\" holds a NUL character", name);
		return NULL;
	}
	if (len != NULL)
		*len = (size_t)n;
	return s;
}

/*
 * The JSON body into e (pointers into the returned object, which the
 * caller puts).  NULL with err set (a 400).
 */
static json_object *
parse_request(const uint8_t *body, size_t len, struct prov_enroll *e,
              struct error *err)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	json_object *o = NULL;
	const char *mac;
	size_t i;

	memset(e, 0, sizeof(*e));
	if (len == 0) {
		error_set(err, "empty body");
		return NULL;
	}
	if ((tok = json_tokener_new_ex(PROV_JSON_DEPTH)) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, (const char *)body, (int)len);
	jerr = json_tokener_get_error(tok);
	if (o == NULL || jerr != json_tokener_success) {
		error_set(err, "the body is not JSON: %s",
		          jerr == json_tokener_continue
		              ? "it ends too early"
		              : json_tokener_error_desc(jerr));
		goto fail;
	}
	/* Only blanks may follow the object. */
	for (i = json_tokener_get_parse_end(tok); i < len; i++)
		if (!isspace(body[i])) {
			error_set(err, "the body holds more than one JSON "
			               "value");
			goto fail;
		}
	if (!json_object_is_type(o, json_type_object)) {
		error_set(err, "the body must be a JSON object");
		goto fail;
	}
	if ((e->user = json_field(o, "username", EST_USER_MAX, NULL, err)) ==
	        NULL ||
	    (e->password = json_field(o, "password", EST_PASSWORD_MAX, NULL,
	                              err)) == NULL ||
	    (mac = json_field(o, "mac", 64, NULL, err)) == NULL ||
	    (e->csr_text =
	         json_field(o, "csr", CSR_MAX_SIZE, &e->csr_len, err)) == NULL)
		goto fail;
	if (prov_mac_normalise(mac, e->mac) == -1) {
		error_set(err, "\"mac\" is not a MAC address "
		               "(aa:bb:cc:dd:ee:ff)");
		goto fail;
	}
	json_tokener_free(tok);
	return o;
fail:
	json_tokener_free(tok);
	if (e->password != NULL)
		secure_zero((void *)e->password, strlen(e->password));
	json_object_put(o);
	return NULL;
}

/* 1 when user/password is an enrollment user of this PSN, 0 when not. */
static int
check_user(struct prov *p, const char *user, const char *password)
{
	char key[STORE_KV_KEY_MAX + 1];
	struct error e = {{0}};
	uint8_t *val = NULL;
	size_t vlen;
	int rc, ok;

	if (strlen(user) + strlen(ENROLL_USER_PREFIX) > STORE_KV_KEY_MAX) {
		enroll_user_verify_dummy(password);
		return 0;
	}
	snprintf(key, sizeof(key), "%s%s", ENROLL_USER_PREFIX, user);
	rc = store_kv_get(p->store, STORE_TABLE_CONFIG, key, strlen(key), &val,
	                  &vlen, &e);
	if (rc != STORE_OK) {
		if (rc == -1)
			log_error(LOG_PROVISIONING, "store: %s", e.msg);
		/* The same work for an unknown user: time tells nothing. */
		enroll_user_verify_dummy(password);
		return 0;
	}
	/* The record is text; make sure it ends where its length does. */
	ok = memchr(val, '\0', vlen) == NULL && val[vlen] == '\0'
	         ? enroll_user_verify((const char *)val, password)
	         : 0;
	free(val);
	return ok;
}

/*
 * The CSR names the user and the endpoint, as the product's Native
 * Supplicant Provisioning builds it from the certificate template (CN =
 * $UserName$, SAN = MAC address): CN equal to the user name, and a
 * subjectAltName of exactly one URI, urn:dev:mac:<the request's MAC>.
 */
static int
check_csr_names(X509_REQ *csr, const struct prov_enroll *e, struct error *err)
{
	STACK_OF(X509_EXTENSION) * exts;
	GENERAL_NAMES *gens = NULL;
	const GENERAL_NAME *gn;
	char cn[CERT_CN_BUF], got[PROV_MAC_HEX_LEN + 1], want[18];
	const unsigned char *uri;
	size_t plen = strlen(PROV_MAC_URN_PREFIX);
	int i, n, crit = 0, rc = -1;

	if (csr_subject_cn(csr, cn, sizeof(cn), err) != 1) {
		if (err->msg[0] == '\0')
			error_set(err, "the CSR has no commonName");
		return -1;
	}
	if (strcmp(cn, e->user) != 0) {
		error_set(err,
		          "the CSR's commonName '%.64s' is not the user "
		          "name '%.64s'",
		          cn, e->user);
		return -1;
	}
	mac_colons(e->mac, want);
	exts = X509_REQ_get_extensions(csr);
	/* idx NULL: a repeated extension is refused (crit -2). */
	gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
	if (gens == NULL) {
		ERR_clear_error();
		if (crit == -1)
			error_set(err,
			          "the CSR has no subjectAltName; it must "
			          "hold the MAC address as the URI %s<12 "
			          "hex digits>",
			          PROV_MAC_URN_PREFIX);
		else if (crit == -2)
			error_set(err, "the CSR has more than one "
			               "subjectAltName");
		else
			error_set(err, "the CSR's subjectAltName does not "
			               "decode");
		goto out;
	}
	if ((n = sk_GENERAL_NAME_num(gens)) != 1) {
		error_set(err,
		          "the CSR's subjectAltName must hold exactly the "
		          "MAC address, not %d names",
		          n);
		goto out;
	}
	gn = sk_GENERAL_NAME_value(gens, 0);
	if (gn->type != GEN_URI) {
		error_set(err,
		          "the CSR's subjectAltName must be the URI "
		          "%s<mac>, not another type of name",
		          PROV_MAC_URN_PREFIX);
		goto out;
	}
	uri = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
	n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
	if ((size_t)n != plen + PROV_MAC_HEX_LEN ||
	    strncasecmp((const char *)uri, PROV_MAC_URN_PREFIX, plen) != 0) {
		error_set(err,
		          "the CSR's subjectAltName URI is not %s<12 hex "
		          "digits>",
		          PROV_MAC_URN_PREFIX);
		goto out;
	}
	for (i = 0; i < PROV_MAC_HEX_LEN; i++) {
		if (hexval(uri[plen + (size_t)i]) < 0) {
			error_set(err,
			          "the CSR's subjectAltName URI is not "
			          "%s<12 hex digits>",
			          PROV_MAC_URN_PREFIX);
			goto out;
		}
		got[i] = (char)tolower(uri[plen + (size_t)i]);
	}
	got[PROV_MAC_HEX_LEN] = '\0';
	if (strcmp(got, e->mac) != 0) {
		char gotc[18];

		mac_colons(got, gotc);
		error_set(err,
		          "the CSR's MAC address %s is not the "
		          "endpoint's %s",
		          gotc, want);
		goto out;
	}
	rc = 0;
out:
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rc;
}

/* PEM of certs, concatenated, malloc'd. */
static char *
certs_pem(STACK_OF(X509) * certs, int from, struct error *err)
{
	BIO *b;
	BUF_MEM *m;
	char *s = NULL;
	int i;

	if ((b = BIO_new(BIO_s_mem())) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	for (i = from; i < sk_X509_num(certs); i++)
		if (PEM_write_bio_X509(b, sk_X509_value(certs, i)) != 1) {
			log_crypto(LOG_PROVISIONING, err, "PEM_write_bio_X509",
			           NULL);
			goto out;
		}
	BIO_get_mem_ptr(b, &m);
	if ((s = malloc(m->length + 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	memcpy(s, m->data, m->length);
	s[m->length] = '\0';
out:
	BIO_free(b);
	return s;
}

/* A copy of the last good chain, NULL when the last call failed. */
static STACK_OF(X509) *
    prov_chain_copy(struct prov *p, char *reason, size_t rlen)
{
	STACK_OF(X509) *c = NULL;

	pthread_mutex_lock(&p->mu);
	if (p->ok && p->chain != NULL)
		c = X509_chain_up_ref(p->chain);
	else
		snprintf(reason, rlen, "%s",
		         p->reason[0] != '\0' ? p->reason : "no CA chain yet");
	pthread_mutex_unlock(&p->mu);
	return c;
}

/*
 * The chain we hand out, fetched again first when the last call failed
 * (the product's EST client: cacerts before an enrollment when it has
 * none).  NULL with reason set (a 503).
 */
static STACK_OF(X509) *
    prov_chain_for_use(struct prov *p, char *reason, size_t rlen)
{
	STACK_OF(X509) * c;
	struct error e = {{0}};

	if ((c = prov_chain_copy(p, reason, rlen)) != NULL)
		return c;
	if (prov_cacerts(p, &e) == -1) {
		snprintf(reason, rlen, "%s", e.msg);
		prov_wake(p, false); /* the alarm, now */
		return NULL;
	}
	prov_wake(p, false); /* the alarm clears */
	return prov_chain_copy(p, reason, rlen);
}

/*
 * simpleenroll with our EST client certificate.  The certificate on
 * success; NULL with *status (the portal's answer) and err set.
 */
static X509 *
prov_simpleenroll(struct prov *p, X509_REQ *csr, int *status, struct error *err)
{
	STACK_OF(X509) *certs = NULL;
	struct prov_call c;
	char why[PROV_EST_REASON_MAX + 1], *b64 = NULL;
	uint8_t *der = NULL;
	size_t dlen = 0, blen = 0;
	X509 *x = NULL;

	*status = 500;
	if (csr_to_der(csr, &der, &dlen) == -1 ||
	    (b64 = base64_encode(der, dlen, EST_B64_LINE, &blen)) == NULL) {
		free(der);
		error_set(err, "cannot encode the CSR");
		return NULL;
	}
	free(der);
	if (prov_est_call(p, "simpleenroll", (const uint8_t *)b64, blen, &c,
	                  err) == -1) {
		free(b64);
		error_prefix(err, "the EST server is not available");
		*status = 503;
		/* The alarm, and cacerts until EST is back. */
		prov_set_state(p, false, err->msg, NULL);
		prov_wake(p, true);
		return NULL;
	}
	free(b64);
	switch (c.status) {
	case 200:
		break;
	case 400:
		est_reason(&c, why, sizeof(why));
		error_set(err, "the EST server refused the CSR: %s", why);
		*status = 400;
		goto out;
	case 401:
	case 403:
		/* Our own certificate refused: the node is misconfigured. */
		est_reason(&c, why, sizeof(why));
		error_set(err,
		          "the EST server refused this PSN's EST client "
		          "certificate (%ld): %s",
		          c.status, why);
		*status = 502;
		goto out;
	case 503:
		est_reason(&c, why, sizeof(why));
		error_set(err, "the EST server cannot enroll now: %s", why);
		*status = 503;
		prov_set_state(p, false, err->msg, NULL);
		prov_wake(p, true);
		goto out;
	default:
		est_reason(&c, why, sizeof(why));
		error_set(err, "the EST server answered %ld: %s", c.status,
		          why);
		*status = 502;
		goto out;
	}
	if ((certs = certs_only_parse(&c, err)) == NULL) {
		error_prefix(err, "simpleenroll");
		*status = 502;
		goto out;
	}
	if (sk_X509_num(certs) != 1) {
		error_set(err, "simpleenroll returned %d certificates, not 1",
		          sk_X509_num(certs));
		*status = 502;
		goto out;
	}
	x = sk_X509_value(certs, 0);
	(void)X509_up_ref(x);
out:
	chain_free(certs);
	prov_call_free(&c);
	return x;
}

/*
 * What we hand back must be what the endpoint asked for, under our root:
 * its key, and a path through the chain we publish.
 */
static int
check_issued(X509 *x, X509_REQ *csr, STACK_OF(X509) * chain, struct error *err)
{
	STACK_OF(X509) *anchors = NULL, *untrusted = NULL;
	int rc = -1;

	if (EVP_PKEY_eq(X509_get0_pubkey(x), X509_REQ_get0_pubkey(csr)) != 1) {
		ERR_clear_error();
		error_set(err, "the issued certificate does not hold the CSR's "
		               "key");
		return -1;
	}
	if ((anchors = sk_X509_new_null()) == NULL ||
	    !sk_X509_push(anchors,
	                  sk_X509_value(chain, sk_X509_num(chain) - 1)) ||
	    (untrusted = sk_X509_dup(chain)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	if (chain_verify(x, untrusted, anchors, CHAIN_PURPOSE_TLS_CLIENT, NULL,
	                 err) == -1) {
		error_prefix(err, "the issued certificate does not verify");
		goto out;
	}
	rc = 0;
out:
	sk_X509_free(anchors);
	sk_X509_free(untrusted);
	return rc;
}

static void
reply_enrolled(struct http_request *req, X509 *x, STACK_OF(X509) * chain,
               struct error *err)
{
	STACK_OF(X509) * one;
	char *cert = NULL, *ca = NULL;
	json_object *o = NULL;
	const char *s;

	if ((one = sk_X509_new_null()) == NULL || !sk_X509_push(one, x) ||
	    (cert = certs_pem(one, 0, err)) == NULL ||
	    (ca = certs_pem(chain, 0, err)) == NULL)
		goto fail;
	if ((o = json_object_new_object()) == NULL ||
	    json_object_object_add(o, "certificate",
	                           json_object_new_string(cert)) != 0 ||
	    json_object_object_add(o, "chain", json_object_new_string(ca)) !=
	        0 ||
	    (s = json_object_to_json_string_ext(
	         o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)) ==
	        NULL) {
		error_set(err, "out of memory");
		goto fail;
	}
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply(req, 200, "application/json", s, strlen(s));
	goto out;
fail:
	reply_error(req, 500, "cannot build the answer: %s", err->msg);
out:
	json_object_put(o);
	sk_X509_free(one);
	free(cert);
	free(ca);
}

static void
handle_enroll(struct prov *p, struct http_request *req)
{
	struct prov_enroll e;
	STACK_OF(X509) *chain = NULL;
	const char *ctype = http_request_header(req, "Content-Type");
	const char *peer = http_request_peer(req);
	const uint8_t *body;
	char reason[ERROR_MAX], macc[18], serial[CERT_SERIAL_HEX_MAX];
	struct error err = {{0}};
	json_object *o = NULL;
	X509_REQ *csr = NULL;
	X509 *x = NULL;
	size_t len;
	int status;

	if (!media_type_is(ctype, "application/json")) {
		reply_error(req, 415, "the body must be application/json");
		log_info(LOG_PROVISIONING,
		         "BYOD enrollment from %s refused: "
		         "Content-Type '%.64s'",
		         peer, ctype != NULL ? ctype : "(none)");
		return;
	}
	body = http_request_body(req, &len);
	if ((o = parse_request(body, len, &e, &err)) == NULL) {
		reply_error(req, 400, "%s", err.msg);
		log_info(LOG_PROVISIONING,
		         "BYOD enrollment from %s refused: %s", peer, err.msg);
		return;
	}
	mac_colons(e.mac, macc);
	/* Who asks, before anything about what they ask for. */
	if (!check_user(p, e.user, e.password)) {
		reply_error(req, 401, "wrong user name or password");
		log_info(LOG_PROVISIONING,
		         "BYOD enrollment for user %.64s mac %s from %s "
		         "refused: wrong user name or password",
		         e.user, macc, peer);
		goto out;
	}
	if ((csr = csr_parse((const uint8_t *)e.csr_text, e.csr_len, &err)) ==
	        NULL ||
	    csr_verify(csr, &err) == -1 ||
	    check_csr_names(csr, &e, &err) == -1) {
		error_prefix(&err, "CSR");
		reply_error(req, 400, "%s", err.msg);
		goto refused;
	}
	if ((chain = prov_chain_for_use(p, reason, sizeof(reason))) == NULL) {
		reply_error(req, 503,
		            "BYOD enrollment is not available: the "
		            "CA certificates cannot be retrieved "
		            "from the EST server: %s",
		            reason);
		error_set(&err, "%s", reason);
		goto refused;
	}
	if ((x = prov_simpleenroll(p, csr, &status, &err)) == NULL) {
		reply_error(req, status, "%s", err.msg);
		goto refused;
	}
	if (check_issued(x, csr, chain, &err) == -1) {
		/* Issued and recorded, but not what was asked: never hand out.
		 */
		log_error(LOG_PROVISIONING,
		          "BYOD enrollment for user %.64s "
		          "mac %s: %s",
		          e.user, macc, err.msg);
		reply_error(req, 502, "%s", err.msg);
		goto out;
	}
	reply_enrolled(req, x, chain, &err);
	if (cert_serial_hex(x, serial, sizeof(serial), NULL) == -1)
		snprintf(serial, sizeof(serial), "?");
	log_info(LOG_PROVISIONING,
	         "BYOD enrollment for user %.64s mac %s from %s: certificate "
	         "serial %s issued",
	         e.user, macc, peer, serial);
	goto out;
refused:
	log_info(LOG_PROVISIONING,
	         "BYOD enrollment for user %.64s mac %s from %s refused: %s",
	         e.user, macc, peer, err.msg);
out:
	X509_free(x);
	chain_free(chain);
	X509_REQ_free(csr);
	/* The password lives in the JSON object: wipe it before freeing. */
	if (e.password != NULL)
		secure_zero((void *)e.password, strlen(e.password));
	json_object_put(o);
}

static void
handle_ca(struct prov *p, struct http_request *req)
{
	STACK_OF(X509) * chain;
	char reason[ERROR_MAX], *pem;
	struct error err = {{0}};

	if ((chain = prov_chain_for_use(p, reason, sizeof(reason))) == NULL) {
		reply_error(req, 503,
		            "the CA certificates cannot be "
		            "retrieved from the EST server: %s",
		            reason);
		return;
	}
	if ((pem = certs_pem(chain, 0, &err)) == NULL)
		reply_error(req, 500, "%s", err.msg);
	else
		http_reply(req, 200, "application/pem-certificate-chain", pem,
		           strlen(pem));
	free(pem);
	chain_free(chain);
}

static const char index_html[] =
    "<!DOCTYPE html>\n"
    "<html><head><meta charset=\"utf-8\"><title>BYOD onboarding</title>"
    "</head>\n<body>\n<h1>Bring your own device: onboarding</h1>\n"
    "<p>Your device makes a key pair and a certificate request (PKCS#10) "
    "with your user name as the common name and its MAC address as the "
    "subjectAltName URI <code>urn:dev:mac:&lt;12 hex digits&gt;</code>, "
    "and posts it with your credentials:</p>\n"
    "<pre>POST /byod/enroll\nContent-Type: application/json\n\n"
    "{\"username\": \"alice\", \"password\": \"...\", "
    "\"mac\": \"aa:bb:cc:dd:ee:ff\", \"csr\": \"-----BEGIN CERTIFICATE "
    "REQUEST-----...\"}</pre>\n"
    "<p>The answer holds the certificate and the CA chain (PEM). "
    "<a href=\"/byod/ca\">/byod/ca</a> gives the chain alone. "
    "<code>deploy/byod-onboard.sh</code> does all of it with openssl and "
    "curl.</p>\n</body></html>\n";

static void
prov_handle(struct http_request *req, void *arg)
{
	struct prov *p = arg;
	const char *method = http_request_method(req);
	const char *path = http_request_path(req);
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	if (strcmp(path, PROV_PATH_ENROLL) == 0) {
		if (strcmp(method, "POST") != 0) {
			http_reply_header(req, "Allow", "POST");
			reply_error(req, 405, "use POST");
			return;
		}
		handle_enroll(p, req);
	} else if (strcmp(path, PROV_PATH_CA) == 0 ||
	           strcmp(path, PROV_PATH_INDEX) == 0 ||
	           strcmp(path, "/byod") == 0) {
		if (!get) {
			http_reply_header(req, "Allow", "GET, HEAD");
			reply_error(req, 405, "use GET");
			return;
		}
		if (strcmp(path, PROV_PATH_CA) == 0)
			handle_ca(p, req);
		else
			http_reply(req, 200, "text/html; charset=utf-8",
			           index_html, sizeof(index_html) - 1);
	} else
		reply_error(req, 404, "no such resource; see %s",
		            PROV_PATH_INDEX);
}

/* --- the process --- */

/* The EST server's address as the EST client reaches it. */
static int
prov_est_target(struct prov *p, struct error *err)
{
	const struct config_address *a =
	    config_get_address(p->cfg, "est.listen");
	const char *ip = a->host;
	bool v6 = a->family == AF_INET6;

	if (a->family == AF_UNSPEC) {
		error_set(err, "est.listen must be an IP address, not '%s'",
		          a->host);
		return -1;
	}
	/* A wildcard listener is reached on loopback; the name may not resolve.
	 */
	if (strcmp(ip, "0.0.0.0") == 0)
		ip = "127.0.0.1";
	else if (strcmp(ip, "::") == 0)
		ip = "::1";
	/*
	 * The URL names the PSN (the EST server's certificate is for it) and
	 * CURLOPT_RESOLVE pins that name to the address.
	 */
	snprintf(p->est_base, sizeof(p->est_base), "https://%s:%u%s",
	         p->hostname, (unsigned)a->port, EST_PATH_PREFIX);
	snprintf(p->resolve, sizeof(p->resolve), "%s:%u:%s%s%s", p->hostname,
	         (unsigned)a->port, v6 ? "[" : "", ip, v6 ? "]" : "");
	return 0;
}

/*
 * The portal's address: provisioning.listen when it is set; by default
 * est.listen's address with the portal's port, because the portal is
 * one more HTTPS listener of the node, next to EST (and a node that puts
 * EST on one address must not open 8443 on every other).
 */
static int
prov_listen(struct prov *p, struct config_address *out, struct error *err)
{
	return config_listen_address(p->cfg, "provisioning.listen",
	                             "est.listen", out, err);
}

/*
 * The certificates of D/ca/ for the two keys given (client_key taken:
 * freed here whatever happens; tls_key only checked against its
 * certificate): a new EST client identity, and the portal's certificate
 * with the chain it sends (the sub CA and the Node CA).
 */
static int
prov_load_files(const char *datadir, EVP_PKEY *client_key, EVP_PKEY *tls_key,
                struct prov_ident **idp, X509 **tls_cert,
                STACK_OF(X509) * *tls_chain, struct error *err)
{
	char path[PROV_PATH_MAX];
	STACK_OF(X509) *nodechain = NULL, *sk = NULL;
	struct prov_ident *id;
	X509 *sub = NULL, *cert = NULL;
	int i, rc = -1;

	if ((id = calloc(1, sizeof(*id))) == NULL) {
		error_set(err, "out of memory");
		EVP_PKEY_free(client_key);
		return -1;
	}
	atomic_init(&id->refs, 1);
	id->client_key = client_key;
	if (node_path(path, sizeof(path), datadir,
	              NODE_CA_DIR "/est-client.crt", err) == -1 ||
	    (id->client_cert = cert_load_pem(path, err)) == NULL ||
	    node_path(path, sizeof(path), datadir,
	              NODE_CA_DIR "/est-server.crt", err) == -1 ||
	    (cert = cert_load_pem(path, err)) == NULL)
		goto out;
	/* Files moved under us would pair a key with the wrong certificate. */
	if (X509_check_private_key(id->client_cert, client_key) != 1 ||
	    X509_check_private_key(cert, tls_key) != 1) {
		ERR_clear_error();
		error_set(err, "a key does not match its certificate in %s/%s",
		          datadir, NODE_CA_DIR);
		goto out;
	}
	if (node_path(path, sizeof(path), datadir, NODE_CA_DIR "/root-ca.crt",
	              err) == -1 ||
	    (id->root = cert_load_pem(path, err)) == NULL ||
	    (id->root_pem = file_read(path, CERT_FILE_MAX, &id->root_pem_len,
	                              err)) == NULL)
		goto out;
	if ((sk = sk_X509_new_null()) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	if (node_path(path, sizeof(path), datadir,
	              NODE_CA_DIR "/endpoint-sub-ca.crt", err) == -1 ||
	    (sub = cert_load_pem(path, err)) == NULL)
		goto out;
	if (!sk_X509_push(sk, sub)) {
		error_set(err, "out of memory");
		goto out;
	}
	sub = NULL;
	if (node_path(path, sizeof(path), datadir, NODE_CA_DIR "/chain.pem",
	              err) == -1)
		goto out;
	/* A missing chain.pem is the EST client's alarm, not a dead portal. */
	if ((nodechain = chain_load_pem(path, NULL)) != NULL)
		for (i = 0; i < sk_X509_num(nodechain); i++) {
			X509 *x = sk_X509_value(nodechain, i);

			if (X509_check_issued(x, x) == X509_V_OK ||
			    X509_up_ref(x) != 1)
				continue;
			if (!sk_X509_push(sk, x))
				X509_free(x);
		}
	*idp = id;
	*tls_cert = cert;
	*tls_chain = sk;
	id = NULL;
	cert = NULL;
	sk = NULL;
	rc = 0;
out:
	prov_ident_release(id);
	X509_free(cert);
	X509_free(sub);
	chain_free(sk);
	chain_free(nodechain);
	return rc;
}

static int
prov_load(struct prov *p, struct error *err)
{
	const struct psn_service_args *a = p->args;
	char path[PROV_PATH_MAX];
	EVP_PKEY *client_key = NULL, *tls_key = NULL;

	if (node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/est-client.key", err) == -1 ||
	    (client_key = key_load(path, a->pass, a->passlen, err)) == NULL ||
	    node_path(path, sizeof(path), a->datadir,
	              NODE_CA_DIR "/est-server.key", err) == -1 ||
	    (tls_key = key_load(path, a->pass, a->passlen, err)) == NULL) {
		EVP_PKEY_free(client_key);
		return -1;
	}
	secure_zero(a->pass, a->passlen);
	p->gen = node_ca_generation(a->datadir);
	p->tls_key = tls_key;
	return prov_load_files(a->datadir, client_key, tls_key, &p->id,
	                       &p->tls_cert, &p->tls_chain, err);
}

/*
 * SIGHUP: a newer root CA chain generation installed (member_rootchain.h)?
 * Then take it in place: both keys from our hand-over copies
 * (services.h), the portal's new TLS context swapped in once complete
 * (open connections keep theirs), and the EST client's new identity for
 * the calls that start from now on.  1 taken, 0 nothing newer, -1
 * (logged) it cannot be: we end, and the supervisor starts us again on
 * the new files.
 */
static int
prov_take_generation(struct prov *p)
{
	const char *d = p->args->datadir;
	unsigned gen = node_ca_generation(d);
	struct prov_ident *id = NULL, *old;
	STACK_OF(X509) *chain = NULL, *sk;
	EVP_PKEY *client_key = NULL, *tls_key = NULL, *k;
	X509 *cert = NULL, *x;
	SSL_CTX *ctx = NULL;
	struct error e = {{0}};

	if (gen <= p->gen)
		return 0;
	/* prov_load_files() checks each against its certificate. */
	if ((client_key = member_handover_take(d, "est-client",
	                                       PROVISIONING_PROCESS,
	                                       &p->args->own, NULL, &e)) ==
	        NULL ||
	    (tls_key = member_handover_take(d, "est-server",
	                                    PROVISIONING_PROCESS, &p->args->own,
	                                    NULL, &e)) == NULL) {
		EVP_PKEY_free(client_key);
		goto fail;
	}
	if (prov_load_files(d, client_key, tls_key, &id, &cert, &chain, &e) ==
	        -1 ||
	    (ctx = http_tls_ctx_new(cert, tls_key, chain, &e)) == NULL ||
	    http_server_set_tls(p->srv, ctx, &e) == -1)
		goto fail;
	SSL_CTX_free(ctx);
	pthread_mutex_lock(&p->mu);
	old = p->id;
	p->id = id;
	pthread_mutex_unlock(&p->mu);
	prov_ident_release(old);
	x = p->tls_cert;
	k = p->tls_key;
	sk = p->tls_chain;
	p->tls_cert = cert;
	p->tls_key = tls_key;
	p->tls_chain = chain;
	X509_free(x);
	EVP_PKEY_free(k);
	chain_free(sk);
	log_info(LOG_PROVISIONING,
	         "root CA chain generation %u: new portal TLS certificate for "
	         "new connections, new EST client certificate and root",
	         gen);
	p->gen = gen;
	return 1;
fail:
	log_error(LOG_PROVISIONING,
	          "root CA chain generation %u: cannot switch in place: %s; "
	          "ending, to be started again on the new files",
	          gen, e.msg);
	SSL_CTX_free(ctx);
	prov_ident_release(id);
	X509_free(cert);
	chain_free(chain);
	EVP_PKEY_free(tls_key);
	return -1;
}

/*
 * The EST client's schedule until SIGTERM (SIGINT too in the foreground).
 * SIGHUP: cacerts now.
 */
static int
prov_loop(struct prov *p, int sigfd)
{
	int64_t every =
	    config_get_duration(p->cfg, "provisioning.cacerts-interval") * 1000;
	int64_t retry =
	    config_get_duration(p->cfg, "provisioning.retry-interval") * 1000;
	int64_t next, now, wait;
	struct pollfd pfd[2];
	struct error e = {{0}};
	uint64_t v;
	bool ok, fetch;
	int sig;

	pthread_mutex_lock(&p->mu);
	ok = p->ok;
	pthread_mutex_unlock(&p->mu);
	next = time_mono_ms() + (ok ? every : retry);
	for (;;) {
		prov_alarm_sync(p);
		pthread_mutex_lock(&p->mu);
		fetch = p->fetch_now;
		p->fetch_now = false;
		pthread_mutex_unlock(&p->mu);
		now = time_mono_ms();
		if (fetch || now >= next) {
			ok = prov_cacerts(p, &e) == 0;
			next = time_mono_ms() + (ok ? every : retry);
			continue;
		}
		wait = next - now;
		pfd[0].fd = sigfd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = p->wake_fd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		/* An alarm the node did not take yet is tried each retry. */
		if (p->alarm_warned && wait > retry)
			wait = retry;
		if (poll(pfd, 2, wait > INT_MAX ? INT_MAX : (int)wait) == -1) {
			if (errno == EINTR)
				continue;
			log_error(LOG_PROVISIONING, "poll: %s",
			          strerror(errno));
			return -1;
		}
		if (pfd[1].revents & POLLIN)
			(void)read(p->wake_fd, &v, sizeof(v));
		if (!(pfd[0].revents & POLLIN))
			continue;
		while ((sig = proc_signal_read(sigfd, &e)) > 0) {
			if (sig == SIGTERM ||
			    (sig == SIGINT && p->args->foreground))
				return 0;
			if (sig == SIGHUP) {
				if (prov_take_generation(p) == -1)
					return -1;
				log_info(LOG_PROVISIONING,
				         "SIGHUP: EST cacerts now");
				next = 0;
			}
		}
		if (sig == -1) {
			log_error(LOG_PROVISIONING, "%s", e.msg);
			return -1;
		}
	}
}

int
provisioning_main(void *arg)
{
	struct psn_service_args *a = arg;
	const struct config_address *addr;
	struct config_address listen;
	struct http_config hc;
	struct prov p;
	struct error e = {{0}};
	SSL_CTX *ctx = NULL;
	bool curl_up = false, mu_up = false;
	int sigfd = -1, ret = 1;

	memset(&p, 0, sizeof(p));
	p.args = a;
	p.wake_fd = -1;
	/*
	 * As if an alarm were up with no text: the first sync then either
	 * raises it or clears it, so an alarm a crashed predecessor raised
	 * does not outlive the outage.
	 */
	p.alarm_up = true;
	snprintf(p.hostname, sizeof(p.hostname), "%s", a->id->hostname);
	if (psn_service_begin(a, &p.cfg, &p.own_cfg, &e) == -1)
		goto out;
	if (prov_listen(&p, &listen, &e) == -1)
		goto out;
	addr = &listen;
	p.est_timeout_ms =
	    (long)config_get_duration(p.cfg, "provisioning.est-timeout") * 1000;
	if (prov_est_target(&p, &e) == -1)
		goto out;
	/* Blocked before the workers start, so they inherit the mask. */
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	if (prov_load(&p, &e) == -1 || psn_service_store_ro(a->datadir, &p.store, &e) == -1)
		goto out;
	if ((p.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		error_set(&e, "eventfd: %s", strerror(errno));
		goto out;
	}
	if (pthread_mutex_init(&p.mu, NULL) != 0) {
		error_set(&e, "pthread_mutex_init failed");
		goto out;
	}
	mu_up = true;
	/* Before any thread: curl_global_init is not thread-safe. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		error_set(&e, "curl_global_init failed");
		goto out;
	}
	curl_up = true;
	/* cacerts before anything else (the product's EST client). */
	if (prov_cacerts(&p, &e) == -1)
		log_warn(
		    LOG_PROVISIONING,
		    "EST client: %s; the portal answers 503 until it works",
		    e.msg);
	error_clear(&e);
	if ((ctx = http_tls_ctx_new(p.tls_cert, p.tls_key, p.tls_chain, &e)) ==
	    NULL)
		goto out;
	memset(&hc, 0, sizeof(hc));
	hc.address = addr->host;
	hc.port = addr->port;
	hc.workers = (unsigned)config_get_int(p.cfg, "provisioning.workers");
	hc.timeout =
	    (unsigned)config_get_duration(p.cfg, "provisioning.timeout");
	hc.tls = ctx;
	hc.category = LOG_PROVISIONING;
	if ((p.srv = http_server_start(&hc, prov_handle, &p, &e)) == NULL)
		goto out;
	log_info(LOG_PROVISIONING,
	         "BYOD portal of %s listening on https://%s%s%s:%u%s, %u "
	         "workers, pid %ld; EST client to %s, CA chain %s",
	         p.hostname, addr->family == AF_INET6 ? "[" : "", addr->host,
	         addr->family == AF_INET6 ? "]" : "",
	         (unsigned)http_server_port(p.srv), PROV_PATH_INDEX,
	         http_server_workers(p.srv), (long)getpid(), p.est_base,
	         p.ok ? "complete" : "NOT available (503)");
	psn_service_ready(a, "ok");
	ret = prov_loop(&p, sigfd) == 0 ? 0 : 1;
	log_info(LOG_PROVISIONING, "provisioning of %s stopping", p.hostname);
out:
	if (ret != 0 && e.msg[0] != '\0')
		log_error(LOG_PROVISIONING, "provisioning cannot start: %s",
		          e.msg);
	if (ret != 0)
		psn_service_ready(a, e.msg[0] != '\0' ? e.msg : "failed");
	secure_zero(a->pass, a->passlen);
	http_server_stop(p.srv);
	SSL_CTX_free(ctx);
	if (curl_up)
		curl_global_cleanup();
	if (mu_up)
		pthread_mutex_destroy(&p.mu);
	chain_free(p.chain);
	chain_free(p.tls_chain);
	store_close(p.store);
	prov_ident_release(p.id);
	X509_free(p.tls_cert);
	EVP_PKEY_free(p.tls_key);
	secret_wipe(&a->own);
	config_free(p.own_cfg);
	if (p.wake_fd != -1)
		close(p.wake_fd);
	if (sigfd != -1)
		close(sigfd);
	return ret;
}
