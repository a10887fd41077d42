/*
 * ca: `pan ca certs [--pem | --verify]`, the deployment's CA certificates as the
 * product's "Certificate Authority Certificates" page shows them: a tree
 * from the Root CA through the Node CAs to each PSN's Endpoint Sub CA and
 * OCSP responder (DESIGN.md section 2), each with serial, key type and
 * expiry.
 *
 * The PAN shows what it knows: the certificates it issued (from the
 * store) and its own.  In the rfc6960 hierarchy a PSN issues its OCSP
 * responder certificate itself and delivers it through its outbox
 * (common/outbox.h, registry_outbox()); until it arrived the tree names it
 * "pending delivery".  --pem exports the Root CA, the PAN's Node CA and
 * every node's CA certificate as one PEM bundle.  --verify checks each
 * node's CA certificate up to the Root CA (ca_verify()).
 *
 * `pan cert list` and `pan cert show SERIAL` read every certificate the
 * store holds: those the PAN issued and those the PSNs delivered.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "adminview.h"
#include "cert.h"
#include "chain.h"
#include "keys.h"
#include "log.h"
#include "pan.h"
#include "registry.pb-c.h"
#include "store.h"
#include "util.h"

/* Longest tree prefix (depth 4, a few bytes of box drawing each). */
#define CA_PREFIX_MAX 64

/* What one node contributes to the tree. */
struct ca_node {
	const struct pan_node *node;
	X509 *ca;          /* its Node CA or Endpoint Sub CA */
	X509 *ocsp;        /* its OCSP responder certificate, if known */
	bool ocsp_by_node; /* legacy: issued by the PAN's Node CA */
	int ca_status;     /* enum store_cert_status */
	int ocsp_status;   /* the same, when ocsp_by_node */
};

static X509 *
ca_fetch(struct pan *p, const uint8_t *kid, const uint8_t *serial,
         size_t serial_len, int *status)
{
	struct store_cert *sc = NULL;
	X509 *x = NULL;

	if (store_get_cert(p->st, kid, serial, serial_len, &sc, NULL) ==
	    STORE_OK) {
		x = cert_parse_der(sc->der, sc->der_len, NULL);
		if (status != NULL)
			*status = sc->status;
	}
	store_cert_free(sc);
	return x;
}

/* rfc6960: the responder certificate a PSN issued, once delivered. */
static X509 *
ca_find_ocsp(struct pan *p, X509 *sub_ca, const char *host)
{
	struct store_cert_list l = {0};
	uint8_t kid[STORE_KEY_ID_LEN];
	char cn[CERT_CN_BUF], subject[CERT_CN_BUF + 8];
	X509 *x = NULL;
	size_t i;

	if (cert_profile_cn(CERT_PROFILE_OCSP_RESPONDER, host, cn, sizeof(cn),
	                    NULL) == -1 ||
	    store_issuer_key_id(sub_ca, kid, NULL) == -1)
		return NULL;
	snprintf(subject, sizeof(subject), "CN=%s", cn);
	if (store_find_by_subject(p->st, subject, &l, NULL) == -1)
		return NULL;
	/* The newest good one from this Sub CA. */
	for (i = l.count; i-- > 0 && x == NULL;)
		if (memcmp(l.certs[i].issuer_key_id, kid, STORE_KEY_ID_LEN) ==
		        0 &&
		    l.certs[i].status == STORE_STATUS_GOOD)
			x = cert_parse_der(l.certs[i].der, l.certs[i].der_len,
			                   NULL);
	store_cert_list_free(&l);
	return x;
}

static void
ca_line(FILE *out, const char *prefix, const char *branch, const char *cont,
        X509 *x, const char *title, const char *note)
{
	char cn[CERT_CN_BUF], serial[CERT_SERIAL_HEX_MAX] = "?";
	char keydesc[64] = "?", when[32] = "?";
	time_t na;

	if (x == NULL) {
		fprintf(out, "%s%s%s\n%s%s   %s\n", prefix, branch, title,
		        prefix, cont, note);
		return;
	}
	if (cert_subject_cn(x, cn, sizeof(cn), NULL) == -1)
		snprintf(cn, sizeof(cn), "?");
	(void)cert_serial_hex(x, serial, sizeof(serial), NULL);
	key_describe(X509_get0_pubkey(x), keydesc, sizeof(keydesc));
	if (cert_not_after(x, &na, NULL) == 0)
		pan_format_time(na, when, sizeof(when));
	fprintf(out, "%s%s%s%s%s\n%s%s   serial %s, %s, expires %s\n", prefix,
	        branch, cn, note != NULL ? "  " : "", note != NULL ? note : "",
	        prefix, cont, serial, keydesc, when);
}

/* A CA certificate that is not good says so. */
static const char *
ca_status_note(int status)
{
	switch (status) {
	case STORE_STATUS_REVOKED:
		return "(REVOKED)";
	case STORE_STATUS_HOLD:
		return "(ON HOLD)";
	default:
		return NULL;
	}
}

static int
ca_node_cmp(const void *a, const void *b)
{
	const struct ca_node *x = a, *y = b;

	return strcmp(x->node->hostname, y->node->hostname);
}

/*
 * The CA certificate (and legacy OCSP certificate) of every node; a node
 * whose CA certificate the store does not hold is left out unless
 * keep_missing (then its ca is NULL).
 */
static struct ca_node *
ca_collect(struct pan *p, bool keep_missing, size_t *count)
{
	struct ca_node *v;
	Iselab__NodeRecord *r;
	size_t i, j, n = 0;

	if ((v = calloc(p->nnodes + 1, sizeof(*v))) == NULL)
		return NULL;
	for (i = 0; i < p->nnodes; i++) {
		const struct pan_node *pn = &p->nodes[i];
		struct ca_node *c = &v[n];

		/* A removed node stays in the tree, its certificates revoked.
		 */
		if (registry_record(p, pn->hostname, &r, NULL) == -1)
			continue;
		c->node = pn;
		for (j = 0; j < r->n_certs; j++) {
			Iselab__IssuedCertRef *ref = r->certs[j];
			X509 *x;
			int st = 0;

			if (ref->issuer_key_id.len != STORE_KEY_ID_LEN)
				continue;
			x = ca_fetch(p, ref->issuer_key_id.data,
			             ref->serial.data, ref->serial.len, &st);
			if (x == NULL)
				continue;
			if (strcmp(ref->profile,
			           cert_profile_name(
			               CERT_PROFILE_OCSP_RESPONDER)) == 0 &&
			    c->ocsp == NULL) {
				c->ocsp = x;
				c->ocsp_by_node = true;
				c->ocsp_status = st;
			} else if (c->ca == NULL) {
				c->ca = x;
				c->ca_status = st;
			} else
				X509_free(x);
		}
		iselab__node_record__free_unpacked(r, NULL);
		if (c->ca == NULL && !keep_missing) {
			X509_free(c->ocsp);
			memset(c, 0, sizeof(*c));
			continue;
		}
		if (pn->role == NODE_ROLE_PSN && c->ca != NULL &&
		    c->ocsp == NULL &&
		    pn->link != PAN_LINK_REMOVED)
			c->ocsp = ca_find_ocsp(p, c->ca, pn->hostname);
		n++;
	}
	qsort(v, n, sizeof(*v), ca_node_cmp);
	*count = n;
	return v;
}

static void
ca_tree(struct pan *p, struct ca_node *v, size_t n, FILE *out)
{
	char prefix[CA_PREFIX_MAX], title[CERT_CN_BUF + 64];
	size_t i, nsan = 0, npsn_items = 0, k;
	bool last;

	for (i = 0; i < n; i++) {
		if (v[i].node->role == NODE_ROLE_SAN)
			nsan++;
		else
			npsn_items += 1 + (v[i].ocsp_by_node ? 1 : 0);
	}
	ca_line(out, "", "", "", p->root_ca, NULL, NULL);
	/* Under the root: this PAN's Node CA, then each SAN's. */
	ca_line(out, "", nsan > 0 ? "├─ " : "└─ ", nsan > 0 ? "│  " : "   ",
	        p->node_ca, NULL, NULL);
	snprintf(prefix, sizeof(prefix), "%s", nsan > 0 ? "│  " : "   ");
	for (i = 0, k = 0; i < n; i++) {
		struct ca_node *c = &v[i];
		char sub[CA_PREFIX_MAX];

		if (c->node->role != NODE_ROLE_PSN)
			continue;
		last = ++k == npsn_items;
		ca_line(out, prefix, last ? "└─ " : "├─ ", last ? "   " : "│  ",
		        c->ca, NULL, ca_status_note(c->ca_status));
		snprintf(sub, sizeof(sub), "%s%s", prefix,
		         last ? "   " : "│  ");
		if (!c->ocsp_by_node && c->node->link != PAN_LINK_REMOVED) {
			/* rfc6960: the PSN's own responder certificate. */
			char note[NODE_HOSTNAME_MAX + 64];

			if (cert_profile_cn(CERT_PROFILE_OCSP_RESPONDER,
			                    c->node->hostname, title,
			                    sizeof(title), NULL) == -1)
				snprintf(title, sizeof(title),
				         "OCSP Responder - %s",
				         c->node->hostname);
			snprintf(note, sizeof(note),
			         "issued by the PSN itself (rfc6960); pending "
			         "delivery from %s",
			         c->node->hostname);
			ca_line(out, sub, "└─ ", "   ", c->ocsp, title,
			        c->ocsp != NULL ? NULL : note);
		}
		if (c->ocsp_by_node) {
			last = ++k == npsn_items;
			ca_line(out, prefix, last ? "└─ " : "├─ ",
			        last ? "   " : "│  ", c->ocsp, NULL,
			        c->ocsp_status != STORE_STATUS_GOOD
			            ? "(legacy hierarchy, REVOKED)"
			            : "(legacy hierarchy)");
		}
	}
	for (i = 0, k = 0; i < n; i++) {
		if (v[i].node->role != NODE_ROLE_SAN)
			continue;
		last = ++k == nsan;
		ca_line(out, "", last ? "└─ " : "├─ ", last ? "   " : "│  ",
		        v[i].ca, NULL, ca_status_note(v[i].ca_status));
	}
}

static void
ca_nodes_free(struct ca_node *v, size_t n)
{
	size_t i;

	for (i = 0; i < n && v != NULL; i++) {
		X509_free(v[i].ca);
		X509_free(v[i].ocsp);
	}
	free(v);
}

/* ---- pan ca certs --verify ---------------------------------------------- */

/*
 * One CA certificate of the deployment judged the way the product's
 * troubleshooting asks: present, inside its validity, a CA (basic
 * constraints CA:TRUE and keyUsage keyCertSign), and verifying up to
 * the Root CA with OpenSSL's strict path validation (chain_verify()).
 * 0 valid; -1 with why naming the certificate ("Endpoint Sub CA of
 * psn1 expired on ...").
 */
static int
ca_verify_one(struct pan *p, X509 *x, const char *label, const char *host,
              char *why, size_t whylen)
{
	STACK_OF(X509) *anchors = NULL, *untrusted = NULL;
	struct error e = {{0}};
	char when[32];
	time_t nb, na, now = time(NULL);
	uint32_t ku;
	int rc = -1;

	if (x == NULL) {
		snprintf(why, whylen, "%s of %s not found", label, host);
		return -1;
	}
	if (cert_not_before(x, &nb, NULL) == -1 ||
	    cert_not_after(x, &na, NULL) == -1) {
		snprintf(why, whylen, "%s of %s: its validity does not decode",
		         label, host);
		return -1;
	}
	if (na < now) {
		pan_format_time(na, when, sizeof(when));
		snprintf(why, whylen, "%s of %s expired on %s", label, host,
		         when);
		return -1;
	}
	if (nb > now) {
		pan_format_time(nb, when, sizeof(when));
		snprintf(why, whylen, "%s of %s is not valid before %s", label,
		         host, when);
		return -1;
	}
	if (X509_check_ca(x) != 1) {
		snprintf(why, whylen,
		         "%s of %s is not a CA certificate (basicConstraints)",
		         label, host);
		return -1;
	}
	ku = X509_get_key_usage(x);
	if ((X509_get_extension_flags(x) & EXFLAG_KUSAGE) == 0 ||
	    (ku & KU_KEY_CERT_SIGN) == 0) {
		snprintf(why, whylen, "%s of %s may not sign certificates "
		                      "(keyUsage without keyCertSign)",
		         label, host);
		return -1;
	}
	if (p->root_ca == NULL) {
		snprintf(why, whylen, "Root CA of %s not found", p->id.hostname);
		return -1;
	}
	if ((anchors = sk_X509_new_null()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL ||
	    !sk_X509_push(anchors, p->root_ca) ||
	    (p->node_ca != NULL && !sk_X509_push(untrusted, p->node_ca))) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	if (X509_check_issued(p->root_ca, x) != X509_V_OK &&
	    (p->node_ca == NULL ||
	     X509_check_issued(p->node_ca, x) != X509_V_OK)) {
		snprintf(why, whylen,
		         "the issuer of the %s of %s is not found: neither "
		         "the Root CA nor the Node CA of %s issued it",
		         label, host, p->id.hostname);
		goto out;
	}
	if (chain_verify(x, untrusted, anchors, CHAIN_PURPOSE_ANY, NULL, &e) ==
	    -1) {
		snprintf(why, whylen, "%s of %s does not verify up to the Root "
		                      "CA: %s",
		         label, host, e.msg);
		goto out;
	}
	rc = 0;
out:
	/* The stacks hold borrowed pointers. */
	sk_X509_free(anchors);
	sk_X509_free(untrusted);
	return rc;
}

/* One line of `pan ca certs --verify`; 0 when the certificate is valid. */
static int
ca_verify_line(struct pan *p, FILE *out, const char *host, const char *role,
               X509 *x, int status, const char *label)
{
	char why[ERROR_MAX + 256], when[32] = "?";
	time_t na;
	int rc;

	rc = ca_verify_one(p, x, label, host, why, sizeof(why));
	if (rc == 0 && status != STORE_STATUS_GOOD) {
		snprintf(why, sizeof(why), "%s of %s is %s", label, host,
		         status == STORE_STATUS_HOLD ? "on hold" : "revoked");
		rc = -1;
	}
	if (rc == -1) {
		fprintf(out, "%-16s %-4s %-16s INVALID: %s\n", host, role, label,
		        why);
		return -1;
	}
	if (cert_not_after(x, &na, NULL) == 0)
		pan_format_time(na, when, sizeof(when));
	fprintf(out, "%-16s %-4s %-16s valid up to the Root CA, expires %s\n",
	        host, role, label, when);
	return 0;
}

/*
 * `pan ca certs --verify`: the PAN's Root CA and Node CA, then each live
 * node's CA certificate as the PAN's store holds it (a SAN's Node CA, a
 * PSN's Endpoint Sub CA).  Exit status 0 when every one is valid.
 */
static int
ca_verify(struct pan *p, FILE *out, FILE *errf)
{
	struct ca_node *v;
	size_t i, n = 0, bad = 0, total = 0;
	const char *role;

	if ((v = ca_collect(p, true, &n)) == NULL) {
		fprintf(errf, "pan ca certs: out of memory\n");
		return PAN_EXIT_FAIL;
	}
	fprintf(out, "%-16s %-4s %-16s %s\n", "NODE", "ROLE", "CERTIFICATE",
	        "CHAIN");
	total += 2;
	bad += ca_verify_line(p, out, p->id.hostname, "pan", p->root_ca,
	                      STORE_STATUS_GOOD, "Root CA") != 0;
	bad += ca_verify_line(p, out, p->id.hostname, "pan", p->node_ca,
	                      STORE_STATUS_GOOD, "Node CA") != 0;
	for (i = 0; i < n; i++) {
		/* A removed node's certificates are revoked on purpose. */
		if (v[i].node->link == PAN_LINK_REMOVED)
			continue;
		role = v[i].node->role == NODE_ROLE_SAN ? "san" : "psn";
		total++;
		bad += ca_verify_line(p, out, v[i].node->hostname, role, v[i].ca,
		                      v[i].ca_status,
		                      v[i].node->role == NODE_ROLE_SAN
		                          ? "Node CA"
		                          : "Endpoint Sub CA") != 0;
	}
	if (bad == 0)
		fprintf(out, "All %zu CA certificates are valid.\n", total);
	else
		fprintf(out, "%zu of %zu CA certificates are not valid.\n", bad,
		        total);
	ca_nodes_free(v, n);
	return bad == 0 ? PAN_EXIT_OK : PAN_EXIT_FAIL;
}

int
ca_certs(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct ca_node *v = NULL;
	bool pem = false, verify = false;
	size_t i, n = 0;
	int a, rc = PAN_EXIT_FAIL;

	/* argv: ca certs [--pem | --verify] */
	for (a = 2; a < argc; a++) {
		if (strcmp(argv[a], "--pem") == 0)
			pem = true;
		else if (strcmp(argv[a], "--verify") == 0)
			verify = true;
		else
			break;
	}
	if (a < argc || (pem && verify)) {
		fprintf(errf,
		        "pan ca certs: %s%s%s\nusage: pan ca certs [--pem | "
		        "--verify] --data-dir DIR\n",
		        a < argc ? "unexpected argument '" : "--pem and "
		                                             "--verify "
		                                             "exclude each "
		                                             "other",
		        a < argc ? argv[a] : "", a < argc ? "'" : "");
		return PAN_EXIT_USAGE;
	}
	if (verify)
		return ca_verify(p, out, errf);
	if ((v = ca_collect(p, false, &n)) == NULL) {
		fprintf(errf, "pan ca certs: out of memory\n");
		return PAN_EXIT_FAIL;
	}
	if (pem) {
		if (!PEM_write_X509(out, p->root_ca) ||
		    !PEM_write_X509(out, p->node_ca))
			goto pemfail;
		/* The live chain: a removed node's CA is left out. */
		for (i = 0; i < n; i++)
			if (v[i].ca_status == STORE_STATUS_GOOD &&
			    !PEM_write_X509(out, v[i].ca))
				goto pemfail;
	} else
		ca_tree(p, v, n, out);
	rc = PAN_EXIT_OK;
	goto out;
pemfail:
	log_crypto(LOG_MAIN, NULL, "PEM_write_X509", "pan ca certs");
	fprintf(errf, "pan ca certs: cannot write PEM\n");
out:
	ca_nodes_free(v, n);
	return rc;
}

/* ---- pan cert list | show ------------------------------------------------ */

#define CERT_SHOW_USAGE "usage: pan cert show SERIAL --data-dir DIR\n"
static void
ca_time(int64_t secs, char *buf, size_t len)
{
	if (secs == 0)
		snprintf(buf, len, "-");
	else
		pan_format_time(secs, buf, len);
}

int
ca_cert_list(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	return adminview_cert_list(p->st, "pan", argc, argv, out, errf);
}

/* A serial as hex, with optional "0x" and ':' between bytes. */
int
ca_parse_serial(const char *s, uint8_t *out, size_t *len)
{
	char hex[2 * STORE_SERIAL_MAX + 2];
	size_t n = 0;
	ssize_t r;

	if (strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0)
		s += 2;
	hex[n++] = '0'; /* room for an odd digit count */
	for (; *s != '\0'; s++) {
		if (*s == ':')
			continue;
		if (!isxdigit((unsigned char)*s) || n >= sizeof(hex) - 1)
			return -1;
		hex[n++] = *s;
	}
	hex[n] = '\0';
	if (n == 1)
		return -1;
	r = hex_decode(n % 2 == 0 ? hex : hex + 1, out, STORE_SERIAL_MAX);
	if (r <= 0)
		return -1;
	*len = (size_t)r;
	return 0;
}

static void
ca_show_one(const struct store_cert *c, FILE *out)
{
	char serial[2 * STORE_SERIAL_MAX + 1], kid[2 * STORE_KEY_ID_LEN + 1];
	char when[32], name[CERT_CN_BUF + 256], keydesc[64] = "?";
	X509 *x;

	hex_encode(c->serial, c->serial_len, serial);
	hex_encode(c->issuer_key_id, STORE_KEY_ID_LEN, kid);
	fprintf(out, "Serial:        %s\n", serial);
	fprintf(out, "Subject:       %s\n", c->subject);
	x = cert_parse_der(c->der, c->der_len, NULL);
	if (x != NULL) {
		cert_name_string(X509_get_issuer_name(x), name, sizeof(name));
		fprintf(out, "Issuer:        %s\n", name);
		key_describe(X509_get0_pubkey(x), keydesc, sizeof(keydesc));
	}
	fprintf(out, "Issuer key id: %s\n", kid);
	fprintf(out, "Issuer node:   %s\n",
	        c->issued_by != NULL && c->issued_by[0] != '\0' ? c->issued_by
	                                                        : "-");
	fprintf(out, "Profile:       %s\n",
	        c->profile != NULL && c->profile[0] != '\0' ? c->profile : "-");
	fprintf(out, "Key:           %s\n", keydesc);
	ca_time(c->not_before, when, sizeof(when));
	fprintf(out, "Not before:    %s\n", when);
	ca_time(c->not_after, when, sizeof(when));
	fprintf(out, "Not after:     %s\n", when);
	ca_time(c->issued_at, when, sizeof(when));
	fprintf(out, "Issued at:     %s\n", when);
	fprintf(out, "Status:        %s\n", store_status_name(c->status));
	if (c->status == STORE_STATUS_REVOKED ||
	    c->status == STORE_STATUS_HOLD) {
		ca_time(c->revoked_at, when, sizeof(when));
		fprintf(out, "Revoked at:    %s\nReason:        %s\n", when,
		        store_reason_name(c->reason));
	}
	if (x != NULL && !PEM_write_X509(out, x))
		log_crypto(LOG_MAIN, NULL, "PEM_write_X509", serial);
	X509_free(x);
}

int
ca_cert_show(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct store_cert_list l = {0};
	struct error err = {{0}};
	uint8_t serial[STORE_SERIAL_MAX];
	size_t len, i;

	/* argv: cert show SERIAL */
	if (argc != 3) {
		fputs(CERT_SHOW_USAGE, errf);
		return PAN_EXIT_USAGE;
	}
	if (ca_parse_serial(argv[2], serial, &len) == -1) {
		fprintf(errf,
		        "pan cert show: '%s' is not a serial number (hex, at "
		        "most %d bytes)\n",
		        argv[2], STORE_SERIAL_MAX);
		return PAN_EXIT_USAGE;
	}
	if (store_find_by_serial(p->st, serial, len, &l, &err) == -1) {
		fprintf(errf, "pan cert show: %s\n", err.msg);
		return PAN_EXIT_FAIL;
	}
	if (l.count == 0) {
		fprintf(errf, "pan cert show: no certificate with serial %s\n",
		        argv[2]);
		store_cert_list_free(&l);
		return PAN_EXIT_FAIL;
	}
	for (i = 0; i < l.count; i++) {
		if (i > 0)
			fputc('\n', out);
		ca_show_one(&l.certs[i], out);
	}
	store_cert_list_free(&l);
	return PAN_EXIT_OK;
}
