/*
 * est_pop_client: an EST client that proves possession by channel binding
 * (RFC 7030 section 3.5), which curl and the openssl CLI cannot do: it
 * makes the TLS connection, reads the binding of that connection (client
 * side: tls-unique on TLS 1.2, RFC 5929; tls-exporter on TLS 1.3,
 * RFC 9266), builds a CSR whose challengePassword is its base64, and posts
 * it on the same connection.  The binding is computed here independently
 * of common/http.c, so the two can check each other.
 *
 *	est_pop_client --host ADDR --port PORT --cafile F [--cert F --key F]
 *	    [--user U --pass P] [--tls 1.2|1.3] [--label L]
 *	    [--binding right|wrong|none] [--resume] [--cn CN]
 *	    [--op simpleenroll|simplereenroll] [--key-type ec:p256]
 *	    [--servername NAME]
 *
 * --resume first fetches cacerts on one connection, then resumes that
 * session for the enrollment (tls-unique is then the server's Finished).
 * --servername: the name the server's certificate must carry (and the SNI
 * name), when it is not --host (a PSN's EST certificate names psn1).
 * Prints "binding TYPE", "reused 0|1", "status NNN", then the body.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "csr.h"
#include "keys.h"
#include "util.h"

/* Largest answer we read. */
#define CLIENT_ANSWER_MAX (256 * 1024)

static const char *host = "127.0.0.1", *cafile, *certfile, *keyfile;
static const char *user, *pass, *label, *binding_mode = "right";
static const char *cn = "pop-client", *op = "simpleenroll";
static const char *servername;
static int port, tlsver = 13;

static void
die(const char *msg)
{
	fprintf(stderr, "est_pop_client: %s\n", msg);
	ERR_print_errors_fp(stderr);
	exit(2);
}

static SSL *
tls_connect(SSL_CTX *ctx, SSL_SESSION *sess)
{
	struct sockaddr_in sa;
	SSL *ssl;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		die("bad --host");
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		die("connect");
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1)
		die("SSL_new");
	if (servername != NULL) {
		SSL_set1_host(ssl, servername);
		SSL_set_tlsext_host_name(ssl, servername);
	} else
		SSL_set1_host(ssl, host);
	if (sess != NULL)
		SSL_set_session(ssl, sess);
	if (SSL_connect(ssl) != 1)
		die("TLS handshake failed");
	return ssl;
}

/* Send req, read to EOF; returns the malloc'd answer. */
static char *
exchange(SSL *ssl, const char *req, size_t reqlen, size_t *outlen)
{
	char *buf = malloc(CLIENT_ANSWER_MAX + 1);
	size_t len = 0;
	int n;

	if (buf == NULL || SSL_write(ssl, req, (int)reqlen) != (int)reqlen)
		die("write");
	/*
	 * Read headers and Content-Length bytes, not to EOF: the server
	 * closes without close_notify, which makes OpenSSL drop the session
	 * we want to resume.
	 */
	while (len < CLIENT_ANSWER_MAX &&
	       (n = SSL_read(ssl, buf + len, (int)(CLIENT_ANSWER_MAX - len))) >
	           0) {
		char *hend, *cl;
		size_t want;

		len += (size_t)n;
		buf[len] = '\0';
		if ((hend = strstr(buf, "\r\n\r\n")) == NULL ||
		    (cl = strcasestr(buf, "Content-Length:")) == NULL ||
		    cl > hend)
			continue;
		want = (size_t)(hend + 4 - buf) + strtoul(cl + 15, NULL, 10);
		if (len >= want)
			break;
	}
	buf[len] = '\0';
	*outlen = len;
	return buf;
}

static void
tls_close(SSL *ssl)
{
	int fd = SSL_get_fd(ssl);

	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
}

/* The client's view of the channel binding. */
static size_t
binding(SSL *ssl, unsigned char *buf, size_t cap, const char **type)
{
	size_t n;

	if (SSL_version(ssl) == TLS1_3_VERSION) {
		*type = "tls-exporter";
		if (SSL_export_keying_material(ssl, buf, 32,
		                               "EXPORTER-Channel-Binding", 24,
		                               NULL, 0, 0) != 1)
			die("exporter");
		return 32;
	}
	*type = "tls-unique";
	/* Full handshake: the client's Finished came first; resumed: the
	 * server's. */
	if (SSL_session_reused(ssl))
		n = SSL_get_peer_finished(ssl, buf, cap);
	else
		n = SSL_get_finished(ssl, buf, cap);
	return n;
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
	    {"host", required_argument, NULL, 'h'},
	    {"port", required_argument, NULL, 'p'},
	    {"cafile", required_argument, NULL, 'a'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"user", required_argument, NULL, 'u'},
	    {"pass", required_argument, NULL, 'P'},
	    {"tls", required_argument, NULL, 't'},
	    {"label", required_argument, NULL, 'l'},
	    {"binding", required_argument, NULL, 'b'},
	    {"resume", no_argument, NULL, 'r'},
	    {"cn", required_argument, NULL, 'n'},
	    {"op", required_argument, NULL, 'o'},
	    {"key-type", required_argument, NULL, 'K'},
	    {"servername", required_argument, NULL, 'S'},
	    {NULL, 0, NULL, 0},
	};
	const char *ktname = "ec:p256", *btype = NULL;
	enum key_type kt;
	bool resume = false;
	SSL_CTX *ctx;
	SSL_SESSION *sess = NULL;
	SSL *ssl;
	EVP_PKEY *key;
	X509_REQ *csr;
	X509 *cert = NULL;
	unsigned char b[64];
	size_t blen, derlen, b64len, anslen;
	uint8_t *der;
	char *b64, *pw, *ans, req[16384], path[256], auth[512], cred[300];
	char *authb64;
	int c, status = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'a':
			cafile = optarg;
			break;
		case 'c':
			certfile = optarg;
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		case 'P':
			pass = optarg;
			break;
		case 't':
			tlsver = strcmp(optarg, "1.2") == 0 ? 12 : 13;
			break;
		case 'l':
			label = optarg;
			break;
		case 'b':
			binding_mode = optarg;
			break;
		case 'r':
			resume = true;
			break;
		case 'n':
			cn = optarg;
			break;
		case 'o':
			op = optarg;
			break;
		case 'K':
			ktname = optarg;
			break;
		case 'S':
			servername = optarg;
			break;
		default:
			die("bad option");
		}
	}
	if (cafile == NULL || port == 0)
		die("--cafile and --port are required");
	if (key_type_from_name(ktname, &kt, NULL) == -1)
		die("bad --key-type");
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		die("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, tlsver == 12 ? TLS1_2_VERSION
	                                                : TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, tlsver == 12 ? TLS1_2_VERSION
	                                                : TLS1_3_VERSION);
	if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1)
		die("cafile");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (certfile != NULL &&
	    (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1 ||
	     SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1))
		die("client certificate");
	if (certfile != NULL) {
		FILE *fp = fopen(certfile, "r");

		if (fp == NULL ||
		    (cert = PEM_read_X509(fp, NULL, NULL, NULL)) == NULL)
			die("read --cert");
		fclose(fp);
	}
	snprintf(path, sizeof(path), "/.well-known/est/%s%s%s",
	         label != NULL ? label : "", label != NULL ? "/" : "", op);

	if (resume) {
		ssl = tls_connect(ctx, NULL);
		snprintf(req, sizeof(req),
		         "GET /.well-known/est/cacerts HTTP/1.1\r\nHost: "
		         "%s\r\nConnection: close\r\n\r\n",
		         host);
		ans = exchange(ssl, req, strlen(req), &anslen);
		free(ans);
		if ((sess = SSL_get1_session(ssl)) == NULL)
			die("no session to resume");
		tls_close(ssl);
	}
	ssl = tls_connect(ctx, sess);
	blen = binding(ssl, b, sizeof(b), &btype);
	if (blen == 0)
		die("no channel binding");
	if (strcmp(binding_mode, "wrong") == 0)
		b[0] ^= 0xff;
	if ((pw = base64_encode(b, blen, 0, NULL)) == NULL)
		die("base64");

	if ((key = key_generate(kt, NULL)) == NULL)
		die("keygen");
	if (strcmp(op, "simplereenroll") == 0 && cert != NULL)
		csr = csr_create_name(key, X509_get_subject_name(cert), NULL, 0,
		                      NULL);
	else
		csr = csr_create(key, cn, NULL, 0, NULL);
	if (csr == NULL)
		die("csr");
	if (strcmp(binding_mode, "none") != 0 &&
	    (csr_set_challenge_password(csr, pw, NULL) == -1 ||
	     csr_sign(csr, key, NULL) == -1))
		die("challengePassword");
	if (csr_to_der(csr, &der, &derlen) == -1 ||
	    (b64 = base64_encode(der, derlen, 64, &b64len)) == NULL)
		die("encode");
	auth[0] = '\0';
	if (user != NULL) {
		snprintf(cred, sizeof(cred), "%s:%s", user, pass ? pass : "");
		authb64 = base64_encode((uint8_t *)cred, strlen(cred), 0, NULL);
		snprintf(auth, sizeof(auth), "Authorization: Basic %s\r\n",
		         authb64);
		free(authb64);
	}
	snprintf(req, sizeof(req),
	         "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
	         "Content-Type: application/pkcs10\r\n"
	         "Content-Transfer-Encoding: base64\r\n%s"
	         "Content-Length: %zu\r\n\r\n%s",
	         path, host, auth, b64len, b64);
	ans = exchange(ssl, req, strlen(req), &anslen);
	sscanf(ans, "HTTP/1.%*d %d", &status);
	printf("binding %s\nreused %d\nstatus %d\n", btype,
	       SSL_session_reused(ssl), status);
	{
		char *bodyp = strstr(ans, "\r\n\r\n");

		if (bodyp != NULL)
			fputs(bodyp + 4, stdout);
	}
	tls_close(ssl);
	free(ans);
	free(b64);
	free(der);
	free(pw);
	X509_REQ_free(csr);
	EVP_PKEY_free(key);
	X509_free(cert);
	SSL_SESSION_free(sess);
	SSL_CTX_free(ctx);
	return status == 0 ? 2 : 0;
}
