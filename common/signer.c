/*
 * signer: the CA signer process and its client; see signer.h.
 *
 * The process side is three steps, in acme-client's keyproc order: give
 * up what was inherited (descriptors, the right to gain privileges or be
 * ptraced), load the keys, then serve one socket.  Each request is
 * answered exactly once, an issued certificate or an Error, so the REP
 * socket's send/receive alternation never breaks.  Bad framing from our
 * own main process is a bug there; it is logged and answered with an
 * Error, and the signer keeps serving, since a signer that dies takes
 * every later join with it.
 */
#include "signer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/x509.h>
#include <zmq.h>

#include "cert.h"
#include "csr.h"
#include "keys.h"
#include "log.h"
#include "msg.h"
#include "node.h"
#include "proc.h"
#include "util.h"

/* Longest message the signer sends its parent at start ("ok" or why). */
#define SIGNER_READY_MAX ERROR_MAX
/* Longest path we build in the data directory. */
#define SIGNER_PATH_MAX 4096
/* How long making a new chain may take (three RSA 4096 keys, a loaded box). */
#define SIGNER_ROLLOVER_TIMEOUT_MS 300000

/* The two keys a signer may hold. */
enum signer_ca { SIGNER_CA_ROOT, SIGNER_CA_NODE, SIGNER_CA_COUNT };

static const char *const signer_ca_names[SIGNER_CA_COUNT] = {
    [SIGNER_CA_ROOT] = "root-ca",
    [SIGNER_CA_NODE] = "node-ca",
};

/*
 * Which profile each issuer may sign (DESIGN.md section 2): the Root CA
 * signs Node CAs; the Node CA signs PSN Endpoint Sub CAs and, in the
 * legacy OCSP hierarchy, OCSP responders.  Nothing else, ever: endpoint
 * and TLS certificates are issued by the PSNs' own CAs.
 */
static const struct {
	enum signer_ca issuer;
	enum cert_profile profile;
} signer_allowed[] = {
    {SIGNER_CA_ROOT, CERT_PROFILE_NODE_CA},
    {SIGNER_CA_NODE, CERT_PROFILE_ENDPOINT_SUB_CA},
    {SIGNER_CA_NODE, CERT_PROFILE_OCSP_RESPONDER},
};

/* What signer_spawn() hands the child. */
struct signer_args {
	char datadir[PATH_MAX];               /* the node's data directory */
	char hostname[NODE_HOSTNAME_MAX + 1]; /* this node, for logs */
	char *pass;                           /* passphrase copy, wiped */
	size_t passlen;                       /* bytes of pass */
	const struct secret *handover;        /* the caller's; NULL: none */
	int ready_fd;                         /* pipe: "ok" or why not */
};

/* The signer process's state. */
struct signer_proc {
	const struct signer_args *args; /* how we were started */
	X509 *cert[SIGNER_CA_COUNT];    /* CA certificates, NULL if absent */
	EVP_PKEY *key[SIGNER_CA_COUNT]; /* their keys */
	/*
	 * The passphrase, for the new keys of a replacement (signer.h), and
	 * the PAN OCSP process's hand-over secret, for the copy of its new
	 * responder key that it can read; locked pages, wiped at exit.
	 */
	struct secret pass;
	struct secret handover;
	struct msg_stats stats;         /* requests received and dropped */
	uint64_t issued;                /* certificates issued */
	uint64_t refused;               /* requests refused */
};

/* A refusal: which Error code, and why (for the log and the answer). */
struct signer_refusal {
	int code;         /* Iselab__Error__Code */
	struct error err; /* the reason */
};

/* The client's handle. */
struct signer {
	void *ctx;                             /* the caller's context */
	void *sock;                            /* REQ, remade on timeout */
	char endpoint[PROC_ENDPOINT_MAX + 64]; /* ipc://D/signer.sock */
	int timeout_ms;                        /* answer timeout */
	/* A rollover sent and not answered yet (signer_rollover_start()). */
	bool busy;
	uint64_t busy_id;      /* its request id */
	int64_t busy_deadline; /* mono ms */
};

/* Refused at once while the signer makes a new generation's keys. */
static int
signer_check_busy(const struct signer *s, struct error *err)
{
	if (s != NULL && s->busy) {
		error_set(err, "the CA signer is busy making the keys of a new "
		               "root CA chain; try again shortly");
		return -1;
	}
	return 0;
}

/* --- the signer process --- */

static void
signer_ready(struct signer_args *a, const char *msg)
{
	size_t len = strlen(msg);

	if (a->ready_fd == -1)
		return;
	/* The parent reads until EOF; a short write only cuts the text. */
	if (write(a->ready_fd, msg, len) != (ssize_t)len)
		log_debug(LOG_CA_SERVICE, "start report cut short");
	close(a->ready_fd);
	a->ready_fd = -1;
}

/*
 * Load one CA: both files absent is "not held"; one without the other, a
 * key that does not open, or a key that does not match its certificate is
 * an error.
 */
static int
signer_load_ca(struct signer_proc *sp, enum signer_ca ca, struct error *err)
{
	const struct signer_args *a = sp->args;
	char kpath[SIGNER_PATH_MAX], cpath[SIGNER_PATH_MAX], rel[64];
	bool have_key, have_cert;

	snprintf(rel, sizeof(rel), "%s/%s.key", NODE_CA_DIR,
	         signer_ca_names[ca]);
	if (node_path(kpath, sizeof(kpath), a->datadir, rel, err) == -1)
		return -1;
	snprintf(rel, sizeof(rel), "%s/%s.crt", NODE_CA_DIR,
	         signer_ca_names[ca]);
	if (node_path(cpath, sizeof(cpath), a->datadir, rel, err) == -1)
		return -1;
	have_key = file_exists(kpath);
	have_cert = file_exists(cpath);
	if (!have_key && !have_cert)
		return 0;
	if (!have_key || !have_cert) {
		error_set(err, "%s without %s", have_key ? kpath : cpath,
		          have_key ? cpath : kpath);
		return -1;
	}
	if ((sp->cert[ca] = cert_load_pem(cpath, err)) == NULL)
		return -1;
	if ((sp->key[ca] = key_load(kpath, sp->pass.buf, sp->pass.len, err)) ==
	    NULL)
		return -1;
	if (X509_check_private_key(sp->cert[ca], sp->key[ca]) != 1) {
		log_crypto(LOG_CA_SERVICE, err, "X509_check_private_key",
		           kpath);
		error_set(err, "%s does not match %s", kpath, cpath);
		return -1;
	}
	log_info(LOG_CA_SERVICE, "holding the %s key (%s)", signer_ca_names[ca],
	         kpath);
	return 0;
}

static void refuse(struct signer_refusal *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
refuse(struct signer_refusal *r, int code, const char *fmt, ...)
{
	va_list ap;

	r->code = code;
	va_start(ap, fmt);
	vsnprintf(r->err.msg, sizeof(r->err.msg), fmt, ap);
	va_end(ap);
}

/*
 * Check a SignRequest against the hierarchy and issue it.  On success
 * *der and *derlen hold the certificate (OPENSSL_free) and *x the X509 for the
 * log line.  On refusal r says why.
 */
static int
signer_issue(struct signer_proc *sp, const Iselab__SignRequest *req, X509 **x,
             unsigned char **der, int *derlen, struct signer_refusal *r)
{
	struct cert_request creq;
	enum cert_profile profile;
	enum signer_ca ca;
	X509_REQ *csr = NULL;
	char want[CERT_CN_BUF], got[CERT_CN_BUF];
	struct error e = {{0}};
	size_t i;
	bool allowed = false;
	int ret = -1, rc;

	*x = NULL;
	*der = NULL;
	cert_request_init(&creq, CERT_PROFILE_TLS_CLIENT);
	for (ca = 0; ca < SIGNER_CA_COUNT; ca++)
		if (strcmp(req->issuer, signer_ca_names[ca]) == 0)
			break;
	if (ca == SIGNER_CA_COUNT) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		       "unknown issuer '%.64s' (root-ca or node-ca)",
		       req->issuer);
		goto out;
	}
	if (sp->key[ca] == NULL) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		       "this node holds no %s key", signer_ca_names[ca]);
		goto out;
	}
	if (cert_profile_from_name(req->profile, &profile, &e) == -1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST, "%s", e.msg);
		goto out;
	}
	for (i = 0; i < ARRAY_SIZE(signer_allowed); i++)
		if (signer_allowed[i].issuer == ca &&
		    signer_allowed[i].profile == profile)
			allowed = true;
	if (!allowed) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		       "%s may not sign a %s certificate", signer_ca_names[ca],
		       cert_profile_name(profile));
		goto out;
	}
	if (node_hostname_check(req->hostname, &e) == -1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		       "host name: %s", e.msg);
		goto out;
	}
	if (req->validity < 0 ||
	    req->validity > (int64_t)cert_profile_default_validity(profile)) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		       "validity of %lld s is outside 0..%lld for %s",
		       (long long)req->validity,
		       (long long)cert_profile_default_validity(profile),
		       cert_profile_name(profile));
		goto out;
	}
	if (req->csr.len == 0) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "no CSR");
		goto out;
	}
	/* Proof of possession and key strength, then the name. */
	if ((csr = csr_parse(req->csr.data, req->csr.len, &e)) == NULL ||
	    csr_verify(csr, &e) == -1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "CSR: %s",
		       e.msg);
		goto out;
	}
	if (cert_profile_cn(profile, req->hostname, want, sizeof(want), &e) ==
	    -1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_BAD_REQUEST, "%s", e.msg);
		goto out;
	}
	if ((rc = csr_subject_cn(csr, got, sizeof(got), &e)) != 1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR,
		       "CSR has %s; expected CN \"%s\"",
		       rc == 0 ? "no CN" : e.msg, want);
		goto out;
	}
	if (strcmp(got, want) != 0) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR,
		       "CSR names CN \"%s\"; expected \"%s\"", got, want);
		goto out;
	}

	/* The profile decides every extension; the CSR gives the key. */
	cert_request_free(&creq);
	cert_request_init(&creq, profile);
	creq.validity = (time_t)req->validity;
	if (cert_request_from_csr(&creq, csr, &e) == -1 ||
	    cert_request_set_product_cn(&creq, req->hostname, &e) == -1 ||
	    (req->ocsp_url[0] != '\0' &&
	     cert_request_set_ocsp_url(&creq, req->ocsp_url, &e) == -1)) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_REFUSED_CSR, "%s", e.msg);
		goto out;
	}
	if (cert_issue(&creq, sp->cert[ca], sp->key[ca], x, &e) == -1) {
		refuse(r, ISELAB__ERROR__CODE__ERROR_INTERNAL,
		       "issuing failed: %s", e.msg);
		goto out;
	}
	if ((*derlen = i2d_X509(*x, der)) <= 0) {
		log_crypto(LOG_CA_SERVICE, &e, "i2d_X509", want);
		refuse(r, ISELAB__ERROR__CODE__ERROR_INTERNAL, "%s", e.msg);
		X509_free(*x);
		*x = NULL;
		*der = NULL;
		goto out;
	}
	ret = 0;
out:
	cert_request_free(&creq);
	X509_REQ_free(csr);
	return ret;
}

/* --- replacing the root CA chain --- */

/*
 * The files of a generation in ca/next/: what signer_rollover() makes,
 * in the order it makes them; "generation" last says they are complete.
 */
static const char *const signer_next_files[] = {
    "root-ca.key",          "root-ca.crt",        "node-ca.key",
    "node-ca.crt",          "ocsp-responder.key", "ocsp-responder.crt",
    "old-with-new.crt",     "new-with-old.crt",   SIGNER_GENERATION_FILE,
};

/* D/ca/next/name into buf. */
static int
next_path(const struct signer_proc *sp, const char *name, char *buf,
          size_t len, struct error *err)
{
	char rel[128];

	snprintf(rel, sizeof(rel), "%s/%s/%s", NODE_CA_DIR, SIGNER_NEXT_DIR,
	         name);
	return node_path(buf, len, sp->args->datadir, rel, err);
}

/* The generation next/ holds complete; 0 when none. */
static unsigned
next_generation(const struct signer_proc *sp)
{
	char path[SIGNER_PATH_MAX], *text;
	unsigned long gen;
	size_t len, i;

	for (i = 0; i < ARRAY_SIZE(signer_next_files); i++)
		if (next_path(sp, signer_next_files[i], path, sizeof(path),
		              NULL) == -1 ||
		    !file_exists(path))
			return 0;
	if ((text = (char *)file_read(path, 32, &len, NULL)) == NULL)
		return 0;
	gen = strtoul(text, NULL, 10);
	free(text);
	return gen > 0 && gen < UINT_MAX ? (unsigned)gen : 0;
}

/* Make a CA key and its certificate, save the key in next/. */
static X509 *
rollover_ca(struct signer_proc *sp, enum key_type type, enum cert_profile prof,
            X509 *issuer, EVP_PKEY *issuer_key, const char *keyname,
            EVP_PKEY **keyp, struct error *err)
{
	struct cert_request req;
	char path[SIGNER_PATH_MAX];
	EVP_PKEY *key;
	X509 *x = NULL;

	cert_request_init(&req, prof);
	if ((key = key_generate(type, err)) == NULL)
		goto out;
	if (cert_request_set_product_cn(&req, sp->args->hostname, err) == -1 ||
	    cert_request_set_key(&req, key, err) == -1 ||
	    cert_issue(&req, issuer, issuer != NULL ? issuer_key : key, &x,
	               err) == -1 ||
	    next_path(sp, keyname, path, sizeof(path), err) == -1 ||
	    key_save(key, path, sp->pass.buf, sp->pass.len, err) == -1) {
		X509_free(x);
		x = NULL;
		goto out;
	}
out:
	cert_request_free(&req);
	if (x != NULL && keyp != NULL)
		*keyp = key;
	else
		EVP_PKEY_free(key);
	return x;
}

static int
rollover_save(struct signer_proc *sp, const char *name, X509 *x,
              struct error *err)
{
	char path[SIGNER_PATH_MAX];

	return next_path(sp, name, path, sizeof(path), err) == -1
	           ? -1
	           : cert_save_pem(x, path, err);
}

/*
 * The hand-over copy of next/'s OCSP responder key, under the PAN OCSP
 * process's secret (signer.h); written again each time, as the secret is
 * the current process's (a generation made before a restart has a copy
 * under a secret that is gone).
 */
static int
rollover_handover(struct signer_proc *sp, struct error *err)
{
	char from[SIGNER_PATH_MAX], to[SIGNER_PATH_MAX];

	if (sp->handover.buf == NULL)
		return 0;
	if (next_path(sp, "ocsp-responder.key", from, sizeof(from), err) ==
	        -1 ||
	    next_path(sp, SIGNER_OCSP_HANDOVER, to, sizeof(to), err) == -1)
		return -1;
	return key_handover_copy(from, sp->pass.buf, sp->pass.len, to,
	                         &sp->handover, err);
}

static int
signer_do_rollover(struct signer_proc *sp, unsigned gen, struct error *err)
{
	char path[SIGNER_PATH_MAX], text[32];
	EVP_PKEY *root_key = NULL, *node_key = NULL;
	X509 *root = NULL, *node = NULL, *ocsp = NULL, *own = NULL,
	     *nwo = NULL;
	enum key_type type;
	size_t i;
	int rc = -1;

	if (next_generation(sp) == gen) {
		log_info(LOG_CA_SERVICE, "generation %u is made already (%s/%s)",
		         gen, NODE_CA_DIR, SIGNER_NEXT_DIR);
		return rollover_handover(sp, err);
	}
	if (sp->key[SIGNER_CA_ROOT] == NULL) {
		error_set(err, "this node holds no root CA key");
		return -1;
	}
	if (key_type_of(sp->key[SIGNER_CA_ROOT], &type, err) == -1)
		return -1;
	/* What an earlier, unfinished attempt left goes; then anew. */
	for (i = 0; i < ARRAY_SIZE(signer_next_files); i++) {
		if (next_path(sp, signer_next_files[i], path, sizeof(path),
		              err) == -1)
			return -1;
		if (unlink(path) == -1 && errno != ENOENT) {
			error_set(err, "cannot remove %s: %s", path,
			          strerror(errno));
			return -1;
		}
	}
	snprintf(text, sizeof(text), "%s/%s", NODE_CA_DIR, SIGNER_NEXT_DIR);
	if (node_path(path, sizeof(path), sp->args->datadir, text, err) ==
	        -1 ||
	    dir_create(path, 0700, err) == -1)
		return -1;
	log_info(LOG_CA_SERVICE, "making root CA chain generation %u (%s keys)",
	         gen, key_type_name(type));
	if ((root = rollover_ca(sp, type, CERT_PROFILE_ROOT_CA, NULL, NULL,
	                        "root-ca.key", &root_key, err)) == NULL ||
	    (node = rollover_ca(sp, type, CERT_PROFILE_NODE_CA, root, root_key,
	                        "node-ca.key", &node_key, err)) == NULL ||
	    (ocsp = rollover_ca(sp, type, CERT_PROFILE_OCSP_RESPONDER, node,
	                        node_key, "ocsp-responder.key", NULL, err)) ==
	        NULL)
		goto out;
	/* RFC 7030 4.1.3 / RFC 4210 4.4: the root key update pair. */
	if (cert_link(sp->cert[SIGNER_CA_ROOT], root, root_key, &own, err) ==
	        -1 ||
	    cert_link(root, sp->cert[SIGNER_CA_ROOT], sp->key[SIGNER_CA_ROOT],
	              &nwo, err) == -1)
		goto out;
	if (rollover_save(sp, "root-ca.crt", root, err) == -1 ||
	    rollover_save(sp, "node-ca.crt", node, err) == -1 ||
	    rollover_save(sp, "ocsp-responder.crt", ocsp, err) == -1 ||
	    rollover_save(sp, "old-with-new.crt", own, err) == -1 ||
	    rollover_save(sp, "new-with-old.crt", nwo, err) == -1)
		goto out;
	snprintf(text, sizeof(text), "%u\n", gen);
	if (rollover_handover(sp, err) == -1 ||
	    next_path(sp, SIGNER_GENERATION_FILE, path, sizeof(path), err) ==
	        -1 ||
	    file_write_atomic(path, text, strlen(text), 0600, err) == -1)
		goto out;
	log_info(LOG_CA_SERVICE, "root CA chain generation %u made", gen);
	rc = 0;
out:
	EVP_PKEY_free(root_key);
	EVP_PKEY_free(node_key);
	X509_free(root);
	X509_free(node);
	X509_free(ocsp);
	X509_free(own);
	X509_free(nwo);
	return rc;
}

/* Load the keys of D/ca/ again; the old ones stay if that fails. */
static int
signer_do_reload(struct signer_proc *sp, struct error *err)
{
	struct signer_proc fresh;
	enum signer_ca ca;
	int rc = 0;

	memset(&fresh, 0, sizeof(fresh));
	fresh.args = sp->args;
	fresh.pass = sp->pass; /* borrowed: not wiped here */
	for (ca = 0; ca < SIGNER_CA_COUNT && rc == 0; ca++)
		rc = signer_load_ca(&fresh, ca, err);
	for (ca = 0; ca < SIGNER_CA_COUNT; ca++) {
		EVP_PKEY *k = rc == 0 ? sp->key[ca] : fresh.key[ca];
		X509 *x = rc == 0 ? sp->cert[ca] : fresh.cert[ca];

		if (rc == 0) {
			sp->key[ca] = fresh.key[ca];
			sp->cert[ca] = fresh.cert[ca];
		}
		EVP_PKEY_free(k);
		X509_free(x);
	}
	return rc;
}

/* A ControlRequest: "rollover GEN" or "reload"; answered once. */
static void
signer_control_handle(struct signer_proc *sp, void *rep,
                      const Iselab__Envelope *env)
{
	const Iselab__ControlRequest *cr = env->control_request;
	Iselab__ControlResponse resp = ISELAB__CONTROL_RESPONSE__INIT;
	Iselab__Envelope out;
	struct error e = {{0}};
	unsigned long gen = 0;
	char *end = NULL;
	int rc = -1;

	if (cr->n_argv == 2 && strcmp(cr->argv[0], "rollover") == 0) {
		gen = strtoul(cr->argv[1], &end, 10);
		if (end == cr->argv[1] || *end != '\0' || gen < 2 ||
		    gen >= UINT_MAX)
			error_set(&e, "rollover: bad generation '%.32s'",
			          cr->argv[1]);
		else
			rc = signer_do_rollover(sp, (unsigned)gen, &e);
	} else if (cr->n_argv == 1 && strcmp(cr->argv[0], "reload") == 0) {
		if ((rc = signer_do_reload(sp, &e)) == 0)
			log_info(LOG_CA_SERVICE, "CA keys loaded again");
	} else
		error_set(&e, "the CA signer takes rollover GEN and reload");
	if (rc == -1) {
		log_error(LOG_CA_SERVICE, "%s", e.msg);
		if (proc_send_error(rep, env->request_id,
		                    ISELAB__ERROR__CODE__ERROR_INTERNAL, e.msg,
		                    &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		return;
	}
	msg_init(&out, env->request_id, sp->args->hostname);
	resp.out = (char *)"";
	resp.err = (char *)"";
	out.body_case = ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE;
	out.control_response = &resp;
	if (proc_send(rep, &out, &e) == -1)
		log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
}

/* Answer one request; never fails the loop. */
static void
signer_handle(struct signer_proc *sp, void *rep)
{
	Iselab__Envelope *env, out;
	Iselab__SignResponse resp = ISELAB__SIGN_RESPONSE__INIT;
	const Iselab__SignRequest *req;
	struct signer_refusal r = {0};
	struct error e = {{0}};
	unsigned char *der = NULL;
	char serial[CERT_SERIAL_HEX_MAX], subject[512], issuer[512];
	X509 *x = NULL;
	int derlen = 0;

	if ((env = proc_recv(rep, &sp->stats, NULL, &e)) == NULL) {
		/* Our own main sent this: a bug there, not an attack. */
		log_error(LOG_CA_SERVICE,
		          "bad message from the main process: "
		          "%s",
		          e.msg);
		if (proc_send_error(rep, 0,
		                    ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		                    e.msg, &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		return;
	}
	if (env->body_case == ISELAB__ENVELOPE__BODY_CONTROL_REQUEST) {
		signer_control_handle(sp, rep, env);
		msg_free(env);
		return;
	}
	if (env->body_case != ISELAB__ENVELOPE__BODY_SIGN_REQUEST) {
		log_error(LOG_CA_SERVICE,
		          "a %s message; the signer takes only "
		          "sign requests",
		          msg_body_name(env->body_case));
		sp->stats.dropped[MSG_DROP_UNHANDLED]++;
		if (proc_send_error(rep, env->request_id,
		                    ISELAB__ERROR__CODE__ERROR_BAD_REQUEST,
		                    "the CA signer takes only sign requests",
		                    &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		msg_free(env);
		return;
	}
	req = env->sign_request;
	if (signer_issue(sp, req, &x, &der, &derlen, &r) == -1) {
		sp->refused++;
		log_warn(LOG_CA_SERVICE,
		         "refused a %.64s certificate by %.16s for %.253s: %s",
		         req->profile, req->issuer, req->hostname, r.err.msg);
		if (proc_send_error(rep, env->request_id, r.code, r.err.msg,
		                    &e) == -1)
			log_error(LOG_CA_SERVICE, "answering: %s", e.msg);
		msg_free(env);
		return;
	}
	sp->issued++;
	(void)cert_serial_hex(x, serial, sizeof(serial), NULL);
	cert_name_string(X509_get_subject_name(x), subject, sizeof(subject));
	cert_name_string(X509_get_issuer_name(x), issuer, sizeof(issuer));
	log_info(LOG_CA_SERVICE_CERT,
	         "issued %s certificate serial %s subject %s issuer %s for %s",
	         req->profile, serial, subject, issuer, req->hostname);
	msg_init(&out, env->request_id, sp->args->hostname);
	resp.cert.data = der;
	resp.cert.len = (size_t)derlen;
	out.body_case = ISELAB__ENVELOPE__BODY_SIGN_RESPONSE;
	out.sign_response = &resp;
	if (proc_send(rep, &out, &e) == -1)
		log_error(LOG_CA_SERVICE, "sending serial %s: %s", serial,
		          e.msg);
	OPENSSL_free(der);
	X509_free(x);
	msg_free(env);
}

/* proc_serve() wants a void * context. */
static void
signer_handle_cb(void *ctx, void *rep)
{
	signer_handle((struct signer_proc *)ctx, rep);
}

static int
signer_main(void *arg)
{
	struct signer_args *a = arg;
	struct signer_proc sp;
	struct error e = {{0}};
	char msg[SIGNER_READY_MAX];
	void *ctx = NULL, *rep = NULL;
	int sigfd = -1, ret = 1, held = 0;
	enum signer_ca ca;

	memset(&sp, 0, sizeof(sp));
	sp.args = a;
	/* Nothing inherited stays: not the parent's sockets, store, pid
	 * file or ZeroMQ context. */
	if (proc_close_fds(&a->ready_fd, 1, &e) == -1)
		goto out;
	/* No setuid gains, no core dumps or ptrace of the key pages. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		error_set(&e, "prctl: %s", strerror(errno));
		goto out;
	}
	if ((sigfd = proc_signals_fd(&e)) == -1)
		goto out;
	/*
	 * Kept for the keys of a root CA chain replacement, which this
	 * process makes (signer.h), in locked pages; wiped at exit.
	 */
	if (secret_keep(&sp.pass, a->pass, a->passlen, &e) == -1 ||
	    (a->handover != NULL &&
	     secret_keep(&sp.handover, a->handover->buf, a->handover->len,
	                 &e) == -1))
		goto out;
	for (ca = 0; ca < SIGNER_CA_COUNT; ca++) {
		if (signer_load_ca(&sp, ca, &e) == -1)
			goto out;
		if (sp.key[ca] != NULL)
			held++;
	}
	secure_zero(a->pass, a->passlen);
	if (held == 0) {
		error_set(&e, "no CA key in %s/%s (root-ca.key, node-ca.key)",
		          a->datadir, NODE_CA_DIR);
		goto out;
	}

	if ((ctx = zmq_ctx_new()) == NULL) {
		error_set(&e, "zmq_ctx_new: %s", zmq_strerror(errno));
		goto out;
	}
	if ((rep = proc_rep_bind(ctx, a->datadir, SIGNER_SOCKET_NAME, &e)) ==
	    NULL)
		goto out;
	log_info(LOG_CA_SERVICE, "CA signer for %s serving ipc://%s/%s.sock",
	         a->hostname, a->datadir, SIGNER_SOCKET_NAME);
	signer_ready(a, "ok");
	ret = proc_serve(rep, sigfd, false, NULL, signer_handle_cb, &sp) == 0
	          ? 0
	          : 1;
	log_info(LOG_CA_SERVICE,
	         "CA signer stopping: %llu issued, %llu refused, %llu bad "
	         "messages",
	         (unsigned long long)sp.issued, (unsigned long long)sp.refused,
	         (unsigned long long)(sp.stats.dropped[MSG_DROP_MALFORMED] +
	                              sp.stats.dropped[MSG_DROP_OVERSIZED] +
	                              sp.stats.dropped[MSG_DROP_VERSION] +
	                              sp.stats.dropped[MSG_DROP_NO_BODY] +
	                              sp.stats.dropped[MSG_DROP_UNHANDLED]));
out:
	if (ret != 0 && a->ready_fd != -1) {
		log_error(LOG_CA_SERVICE, "CA signer cannot start: %s", e.msg);
		snprintf(msg, sizeof(msg), "%s", e.msg);
		signer_ready(a, msg);
	}
	secure_zero(a->pass, a->passlen);
	secret_wipe(&sp.pass);
	secret_wipe(&sp.handover);
	if (rep != NULL) {
		zmq_close(rep);
		proc_ipc_unlink(a->datadir, SIGNER_SOCKET_NAME);
	}
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	/* EVP_PKEY_free() clears the key material (OpenSSL's free). */
	for (ca = 0; ca < SIGNER_CA_COUNT; ca++) {
		EVP_PKEY_free(sp.key[ca]);
		X509_free(sp.cert[ca]);
	}
	if (sigfd != -1)
		close(sigfd);
	return ret;
}

int
signer_spawn(const char *datadir, const char *hostname, const char *passphrase,
             size_t passlen, const struct secret *handover, pid_t *pid,
             struct error *err)
{
	struct signer_args *a = NULL;
	struct pollfd pfd;
	char msg[SIGNER_READY_MAX];
	size_t got = 0;
	ssize_t n;
	int64_t deadline, left;
	int fds[2] = {-1, -1}, status, ret = -1;

	*pid = -1;
	if (datadir == NULL || hostname == NULL ||
	    (passphrase == NULL && passlen != 0)) {
		error_set(err, "signer_spawn: missing argument");
		return -1;
	}
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
		memcpy(a->pass, passphrase, passlen);
	a->pass[passlen] = '\0';
	a->passlen = passlen;
	a->handover = handover;
	if (pipe2(fds, O_CLOEXEC) == -1) {
		error_set(err, "pipe: %s", strerror(errno));
		goto out;
	}
	a->ready_fd = fds[1];
	if (proc_fork(SIGNER_PROCESS_NAME, signer_main, a, pid, err) == -1)
		goto out;
	close(fds[1]);
	fds[1] = -1;

	/* "ok", or the reason it could not start, then EOF. */
	deadline = time_mono_ms() + SIGNER_START_TIMEOUT_MS;
	for (;;) {
		if ((left = deadline - time_mono_ms()) <= 0) {
			error_set(err,
			          "the CA signer did not start within %d s",
			          SIGNER_START_TIMEOUT_MS / 1000);
			goto fail;
		}
		pfd.fd = fds[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR) {
			error_set(err, "poll: %s", strerror(errno));
			goto fail;
		}
		if (pfd.revents == 0)
			continue;
		n = read(fds[0], msg + got, sizeof(msg) - 1 - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0 || (got += (size_t)n) == sizeof(msg) - 1)
			break;
	}
	msg[got] = '\0';
	if (strcmp(msg, "ok") == 0) {
		ret = 0;
		goto out;
	}
	error_set(err, "CA signer: %s",
	          got > 0 ? msg : "ended before it was ready");
fail:
	(void)kill(*pid, SIGTERM);
	while (waitpid(*pid, &status, 0) == -1 && errno == EINTR)
		;
	*pid = -1;
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

/* --- the client --- */

static int
signer_socket(struct signer *s, struct error *err)
{
	if (s->sock != NULL)
		zmq_close(s->sock);
	s->sock = proc_req_socket(s->ctx, s->endpoint, s->timeout_ms, err);
	return s->sock != NULL ? 0 : -1;
}

struct signer *
signer_connect(void *zmq_ctx, const char *datadir, struct error *err)
{
	struct signer *s;

	if (zmq_ctx == NULL) {
		error_set(err, "no ZeroMQ context");
		return NULL;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	s->ctx = zmq_ctx;
	s->timeout_ms = SIGNER_TIMEOUT_MS;
	if (proc_ipc_endpoint(s->endpoint, sizeof(s->endpoint), datadir,
	                      SIGNER_SOCKET_NAME, err) == -1 ||
	    signer_socket(s, err) == -1) {
		free(s);
		return NULL;
	}
	return s;
}

void
signer_set_timeout(struct signer *s, int timeout_ms)
{
	if (s == NULL || timeout_ms <= 0)
		return;
	s->timeout_ms = timeout_ms;
	/* Takes effect on the socket now; REQ state is kept. */
	if (s->sock != NULL) {
		zmq_setsockopt(s->sock, ZMQ_SNDTIMEO, &timeout_ms,
		               sizeof(timeout_ms));
		zmq_setsockopt(s->sock, ZMQ_RCVTIMEO, &timeout_ms,
		               sizeof(timeout_ms));
	}
}

int
signer_sign(struct signer *s, const char *profile, const char *issuer,
            const uint8_t *csr_der, size_t csr_len, const char *hostname,
            int64_t validity, const char *ocsp_url, X509 **out,
            struct error *err)
{
	Iselab__Envelope env, *resp = NULL;
	Iselab__SignRequest req = ISELAB__SIGN_REQUEST__INIT;
	struct error e = {{0}};
	uint64_t id = 0;
	bool timed_out = false;
	int ret = -1;

	*out = NULL;
	if (s == NULL || profile == NULL || issuer == NULL ||
	    hostname == NULL || (csr_der == NULL && csr_len != 0)) {
		error_set(err, "signer_sign: missing argument");
		return -1;
	}
	if (signer_check_busy(s, err) == -1)
		return -1;
	if (s->sock == NULL && signer_socket(s, err) == -1)
		return -1;
	(void)getrandom(&id, sizeof(id), 0);
	msg_init(&env, id, NULL);
	req.profile = (char *)profile;
	req.issuer = (char *)issuer;
	req.csr.data = (uint8_t *)csr_der;
	req.csr.len = csr_len;
	req.hostname = (char *)hostname;
	req.validity = validity;
	req.ocsp_url = (char *)(ocsp_url != NULL ? ocsp_url : "");
	env.body_case = ISELAB__ENVELOPE__BODY_SIGN_REQUEST;
	env.sign_request = &req;
	if (proc_send(s->sock, &env, &e) == -1) {
		error_set(err, "CA signer at %s: %s", s->endpoint, e.msg);
		goto reset;
	}
	if ((resp = proc_recv(s->sock, NULL, &timed_out, &e)) == NULL) {
		if (timed_out)
			error_set(err,
			          "the CA signer did not answer within %d ms "
			          "(%s)",
			          s->timeout_ms, s->endpoint);
		else
			error_set(err, "CA signer answer: %s", e.msg);
		goto reset;
	}
	if (resp->request_id != id) {
		error_set(err, "CA signer answered another request");
		goto reset;
	}
	if (resp->body_case == ISELAB__ENVELOPE__BODY_ERROR) {
		error_set(err, "%s", resp->error->message);
		goto out;
	}
	if (resp->body_case != ISELAB__ENVELOPE__BODY_SIGN_RESPONSE) {
		error_set(err, "CA signer sent a %s message",
		          msg_body_name(resp->body_case));
		goto out;
	}
	if ((*out = cert_parse_der(resp->sign_response->cert.data,
	                           resp->sign_response->cert.len, &e)) ==
	    NULL) {
		error_set(err, "CA signer's certificate: %s", e.msg);
		goto out;
	}
	ret = 0;
	goto out;
reset:
	/*
	 * A REQ socket whose answer is lost refuses to send again (EFSM):
	 * make a new one, so that the next call starts clean.  A late
	 * answer to this request then goes nowhere.
	 */
	log_warn(LOG_CA_SERVICE, "%s", err != NULL ? err->msg : e.msg);
	if (signer_socket(s, &e) == -1)
		log_error(LOG_CA_SERVICE, "%s", e.msg);
out:
	msg_free(resp);
	return ret;
}

/* Send one control request; *id gets its request id. */
static int
signer_control_send(struct signer *s, char **argv, size_t argc, uint64_t *id,
                    struct error *err)
{
	Iselab__Envelope env;
	Iselab__ControlRequest req = ISELAB__CONTROL_REQUEST__INIT;
	struct error e = {{0}};

	if (signer_check_busy(s, err) == -1)
		return -1;
	if (s->sock == NULL && signer_socket(s, err) == -1)
		return -1;
	*id = 0;
	(void)getrandom(id, sizeof(*id), 0);
	msg_init(&env, *id, NULL);
	req.argv = argv;
	req.n_argv = argc;
	env.body_case = ISELAB__ENVELOPE__BODY_CONTROL_REQUEST;
	env.control_request = &req;
	if (proc_send(s->sock, &env, &e) == -1) {
		error_set(err, "CA signer: %s", e.msg);
		if (signer_socket(s, &e) == -1)
			log_error(LOG_CA_SERVICE, "%s", e.msg);
		return -1;
	}
	return 0;
}

/*
 * The answer to control request id (resp NULL: none came, timed_out
 * saying whether for want of time, e why not); 0 when it was done.  A
 * lost answer leaves a REQ socket that refuses to send: a new one is made.
 */
static int
signer_control_answer(struct signer *s, Iselab__Envelope *resp, uint64_t id,
                      bool timed_out, const struct error *e,
                      struct error *err)
{
	struct error se = {{0}};

	if (resp == NULL || resp->request_id != id) {
		error_set(err, "CA signer: %s",
		          timed_out ? "no answer in time"
		          : resp != NULL ? "answered another request"
		                         : e->msg);
		if (signer_socket(s, &se) == -1)
			log_error(LOG_CA_SERVICE, "%s", se.msg);
		return -1;
	}
	if (resp->body_case == ISELAB__ENVELOPE__BODY_ERROR) {
		error_set(err, "%s", resp->error->message);
		return -1;
	}
	if (resp->body_case != ISELAB__ENVELOPE__BODY_CONTROL_RESPONSE) {
		error_set(err, "CA signer sent a %s message",
		          msg_body_name(resp->body_case));
		return -1;
	}
	return 0;
}

/* One control request to the signer; 0 when it did it. */
static int
signer_control(struct signer *s, char **argv, size_t argc, int timeout_ms,
               struct error *err)
{
	Iselab__Envelope *resp = NULL;
	struct error e = {{0}};
	uint64_t id = 0;
	bool timed_out = false;
	int ret = -1, saved = s->timeout_ms;

	/* Making RSA keys takes longer than signing. */
	signer_set_timeout(s, timeout_ms);
	if (signer_control_send(s, argv, argc, &id, err) == 0) {
		resp = proc_recv(s->sock, NULL, &timed_out, &e);
		ret = signer_control_answer(s, resp, id, timed_out, &e, err);
	}
	signer_set_timeout(s, saved);
	msg_free(resp);
	return ret;
}

int
signer_rollover(struct signer *s, unsigned gen, struct error *err)
{
	char num[16], *argv[2] = {(char *)"rollover", num};

	snprintf(num, sizeof(num), "%u", gen);
	return signer_control(s, argv, 2, SIGNER_ROLLOVER_TIMEOUT_MS, err);
}

int
signer_rollover_start(struct signer *s, unsigned gen, struct error *err)
{
	char num[16], *argv[2] = {(char *)"rollover", num};

	snprintf(num, sizeof(num), "%u", gen);
	if (signer_control_send(s, argv, 2, &s->busy_id, err) == -1)
		return -1;
	s->busy = true;
	s->busy_deadline = time_mono_ms() + SIGNER_ROLLOVER_TIMEOUT_MS;
	return 0;
}

void *
signer_busy_socket(const struct signer *s)
{
	return s != NULL && s->busy ? s->sock : NULL;
}

int64_t
signer_busy_ms(const struct signer *s)
{
	int64_t left;

	if (s == NULL || !s->busy)
		return -1;
	left = s->busy_deadline - time_mono_ms();
	return left > 0 ? left : 0;
}

int
signer_rollover_poll(struct signer *s, bool *done, struct error *err)
{
	Iselab__Envelope *resp = NULL;
	struct error e = {{0}};
	bool timed_out = false;
	int flags = ZMQ_DONTWAIT, rc;
	zmq_msg_t m;

	*done = false;
	if (s == NULL || !s->busy) {
		error_set(err, "no root CA chain rollover under way");
		*done = true;
		return -1;
	}
	/* Nothing yet, and still time: keep waiting. */
	zmq_msg_init(&m);
	rc = zmq_msg_recv(&m, s->sock, flags);
	if (rc == -1 && errno == EAGAIN && time_mono_ms() < s->busy_deadline) {
		zmq_msg_close(&m);
		return 0;
	}
	if (rc == -1) {
		timed_out = errno == EAGAIN;
		error_set(&e, "zmq_msg_recv: %s", zmq_strerror(errno));
	} else if (zmq_msg_more(&m)) {
		error_set(&e, "a multipart answer");
		/* The REQ socket is made again below: the rest goes with it. */
	} else
		resp = msg_unpack(zmq_msg_data(&m), zmq_msg_size(&m), NULL, &e);
	zmq_msg_close(&m);
	s->busy = false;
	*done = true;
	rc = signer_control_answer(s, resp, s->busy_id, timed_out, &e, err);
	msg_free(resp);
	return rc;
}

int
signer_reload(struct signer *s, struct error *err)
{
	char *argv[1] = {(char *)"reload"};

	/*
	 * Loading the keys runs PBKDF2 for each, as a start does: on a loaded
	 * box that takes what a start may take, not what a signature does.
	 */
	return signer_control(s, argv, 1, SIGNER_START_TIMEOUT_MS, err);
}

void
signer_close(struct signer *s)
{
	if (s == NULL)
		return;
	if (s->sock != NULL)
		zmq_close(s->sock);
	free(s);
}
