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
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
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

/* Most earlier root CA chain generations shown (as OCSP_GENERATIONS_MAX). */
#define CA_GENS_MAX 16

/*
 * An earlier root CA chain generation (`pan ca replace-root-chain`,
 * docs/certificates.md): its Root CA and the PAN's Node CA of then, as
 * D/ca/gen-K/ keeps them.  What they issued stays trusted until it
 * expires.
 */
struct ca_gen {
	unsigned gen;
	X509 *root;
	X509 *node_ca;
};

/* The generations: [0] the current one (p's), then older, newest first. */
struct ca_gens {
	struct ca_gen g[CA_GENS_MAX + 1];
	size_t n;
};

/* What one node contributes to the tree. */
struct ca_node {
	const struct pan_node *node;
	X509 *ca;          /* its Node CA or Endpoint Sub CA (current chain) */
	X509 *ocsp;        /* its OCSP responder certificate, if known */
	bool ocsp_by_node; /* legacy: issued by the PAN's Node CA */
	int ca_status;     /* enum store_cert_status */
	int ocsp_status;   /* the same, when ocsp_by_node */
	/* Its CA of the newest earlier generation, when it had one. */
	X509 *old;
	X509 *old_ocsp; /* legacy: that generation's responder */
	int old_status;
	int old_ocsp_status;
	size_t old_gen; /* index into struct ca_gens */
};

static void
ca_gens_free(struct ca_gens *gs)
{
	size_t i;

	/* [0] borrows p's. */
	for (i = 1; i < gs->n; i++) {
		X509_free(gs->g[i].root);
		X509_free(gs->g[i].node_ca);
	}
	gs->n = 0;
}

/* The current generation and the earlier ones D/ca/gen-K/ holds. */
static void
ca_gens_load(struct pan *p, struct ca_gens *gs)
{
	char path[PATH_MAX];
	struct error e = {{0}};
	unsigned cur = rootchain_generation(p->datadir), k;
	struct ca_gen *g;

	memset(gs, 0, sizeof(*gs));
	gs->g[0].gen = cur;
	gs->g[0].root = p->root_ca;
	gs->g[0].node_ca = p->node_ca;
	gs->n = 1;
	for (k = cur - 1; k >= 1 && gs->n <= CA_GENS_MAX; k--) {
		g = &gs->g[gs->n];
		g->gen = k;
		if (node_ca_path(p->datadir, path, sizeof(path), &e,
		                 "%s/gen-%u/root-ca.crt", NODE_CA_DIR, k) ==
		        -1 ||
		    (g->root = cert_load_pem(path, &e)) == NULL ||
		    node_ca_path(p->datadir, path, sizeof(path), &e,
		                 "%s/gen-%u/node-ca.crt", NODE_CA_DIR, k) ==
		        -1 ||
		    (g->node_ca = cert_load_pem(path, &e)) == NULL) {
			log_warn(LOG_MAIN, "root CA chain generation %u: %s", k,
			         e.msg);
			X509_free(g->root);
			memset(g, 0, sizeof(*g));
			continue;
		}
		gs->n++;
	}
}

/*
 * The generation (index into gs) whose CA signed x: the Root CA for a
 * SAN's Node CA, the PAN's Node CA otherwise.  Old and new CAs share their
 * names: the signature tells them apart.  -1: none of them.
 */
static int
ca_gen_of(const struct ca_gens *gs, X509 *x, bool by_root)
{
	size_t i;
	X509 *issuer;

	for (i = 0; i < gs->n; i++) {
		issuer = by_root ? gs->g[i].root : gs->g[i].node_ca;
		if (issuer != NULL &&
		    X509_check_issued(issuer, x) == X509_V_OK &&
		    X509_verify(x, X509_get0_pubkey(issuer)) == 1)
			return (int)i;
	}
	ERR_clear_error();
	return -1;
}

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
ca_collect(struct pan *p, const struct ca_gens *gs, bool keep_missing,
           size_t *count)
{
	struct ca_node *v;
	Iselab__NodeRecord *r;
	size_t i, j, n = 0;
	int g;
	bool ocsp;

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
			ocsp = strcmp(ref->profile,
			              cert_profile_name(
			                  CERT_PROFILE_OCSP_RESPONDER)) == 0;
			/* One generation only: what there is is current. */
			g = gs->n <= 1 ? 0
			               : ca_gen_of(gs, x,
			                           !ocsp && pn->role ==
			                                        NODE_ROLE_SAN);
			if (g > 0) {
				/* The newest earlier generation's. */
				if (c->old != NULL && ocsp &&
				    (size_t)g == c->old_gen &&
				    c->old_ocsp == NULL) {
					c->old_ocsp = x;
					c->old_ocsp_status = st;
				} else if (!ocsp &&
				           (c->old == NULL ||
				            (size_t)g < c->old_gen)) {
					X509_free(c->old);
					X509_free(c->old_ocsp);
					c->old_ocsp = NULL;
					c->old = x;
					c->old_status = st;
					c->old_gen = (size_t)g;
				} else
					X509_free(x);
			} else if (ocsp && c->ocsp == NULL) {
				c->ocsp = x;
				c->ocsp_by_node = true;
				c->ocsp_status = st;
			} else if (!ocsp && c->ca == NULL) {
				c->ca = x;
				c->ca_status = st;
			} else
				X509_free(x);
		}
		iselab__node_record__free_unpacked(r, NULL);
		if (c->ca == NULL && c->old == NULL && !keep_missing) {
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

/* A note of status and generation: "(REVOKED; generation 1, old)". */
static const char *
ca_note(char *buf, size_t len, int status, const char *gen_note)
{
	const char *st = ca_status_note(status);

	if (gen_note == NULL)
		return st;
	if (st == NULL)
		snprintf(buf, len, "(%s)", gen_note);
	else
		snprintf(buf, len, "(%.*s; %s)", (int)strlen(st) - 2, st + 1,
		         gen_note);
	return buf;
}

/*
 * A node whose CA of the generation shown is missing while it has an
 * earlier one: its line says it has not renewed yet.
 */
static void
ca_pending_line(FILE *out, const struct ca_gens *gs, const struct ca_node *c,
                enum cert_profile profile, const char *prefix, bool last)
{
	char title[CERT_CN_BUF + 64], pending[128];

	if (cert_profile_cn(profile, c->node->hostname, title, sizeof(title),
	                    NULL) == -1)
		snprintf(title, sizeof(title), "%s", c->node->hostname);
	snprintf(pending, sizeof(pending), "not renewed yet (generation %u)",
	         c->old != NULL ? gs->g[c->old_gen].gen : 0);
	ca_line(out, prefix, last ? "└─ " : "├─ ", last ? "   " : "│  ", NULL,
	        title, pending);
}

/*
 * The tree of one generation: root, the PAN's node_ca, and the nodes' CAs
 * of that generation (v[i].ca).  gen_note marks every line of an earlier
 * generation ("generation 1, old").  A node whose CA of this generation
 * is missing while it has an earlier one (v[i].old) is shown as not
 * renewed yet.
 */
static void
ca_tree(const struct ca_gens *gs, X509 *root, X509 *node_ca,
        struct ca_node *v, size_t n, const char *gen_note, FILE *out)
{
	char prefix[CA_PREFIX_MAX], title[CERT_CN_BUF + 64], nb[128];
	size_t i, nsan = 0, npsn_items = 0, k;
	bool last;

	for (i = 0; i < n; i++) {
		if (v[i].node->role == NODE_ROLE_SAN)
			nsan++;
		else
			npsn_items += 1 + (v[i].ocsp_by_node ? 1 : 0);
	}
	ca_line(out, "", "", "", root, NULL, ca_note(nb, sizeof(nb),
	                                             STORE_STATUS_GOOD,
	                                             gen_note));
	/* Under the root: this PAN's Node CA, then each SAN's. */
	ca_line(out, "", nsan > 0 ? "├─ " : "└─ ", nsan > 0 ? "│  " : "   ",
	        node_ca, NULL,
	        ca_note(nb, sizeof(nb), STORE_STATUS_GOOD, gen_note));
	snprintf(prefix, sizeof(prefix), "%s", nsan > 0 ? "│  " : "   ");
	for (i = 0, k = 0; i < n; i++) {
		struct ca_node *c = &v[i];
		char sub[CA_PREFIX_MAX];

		if (c->node->role != NODE_ROLE_PSN)
			continue;
		last = ++k == npsn_items;
		if (c->ca == NULL) {
			ca_pending_line(out, gs, c, CERT_PROFILE_ENDPOINT_SUB_CA, prefix,
			                last);
			continue;
		}
		ca_line(out, prefix, last ? "└─ " : "├─ ", last ? "   " : "│  ",
		        c->ca, NULL,
		        ca_note(nb, sizeof(nb), c->ca_status, gen_note));
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
			        c->ocsp != NULL
			            ? ca_note(nb, sizeof(nb), STORE_STATUS_GOOD,
			                      gen_note)
			            : note);
		}
		if (c->ocsp_by_node) {
			last = ++k == npsn_items;
			snprintf(title, sizeof(title), "legacy hierarchy%s%s%s",
			         c->ocsp_status != STORE_STATUS_GOOD
			             ? ", REVOKED"
			             : "",
			         gen_note != NULL ? "; " : "",
			         gen_note != NULL ? gen_note : "");
			snprintf(nb, sizeof(nb), "(%s)", title);
			ca_line(out, prefix, last ? "└─ " : "├─ ",
			        last ? "   " : "│  ", c->ocsp, NULL, nb);
		}
	}
	for (i = 0, k = 0; i < n; i++) {
		struct ca_node *c = &v[i];

		if (c->node->role != NODE_ROLE_SAN)
			continue;
		last = ++k == nsan;
		if (c->ca == NULL) {
			ca_pending_line(out, gs, c, CERT_PROFILE_NODE_CA, "",
			                last);
			continue;
		}
		ca_line(out, "", last ? "└─ " : "├─ ", last ? "   " : "│  ",
		        c->ca, NULL,
		        ca_note(nb, sizeof(nb), c->ca_status, gen_note));
	}
}

/*
 * `pan ca certs`: the current generation's tree, then each earlier
 * generation's (its certificates are still trusted until they expire),
 * every line of those marked old.
 */
static void
ca_trees(struct pan *p, const struct ca_gens *gs, struct ca_node *v,
         size_t n, FILE *out)
{
	struct ca_node *old;
	char note[64];
	size_t i, j, m;

	ca_tree(gs, p->root_ca, p->node_ca, v, n, NULL, out);
	if (gs->n <= 1 || (old = calloc(n + 1, sizeof(*old))) == NULL)
		return;
	for (j = 1; j < gs->n; j++) {
		for (i = 0, m = 0; i < n; i++) {
			if (v[i].old == NULL || v[i].old_gen != j)
				continue;
			old[m].node = v[i].node;
			old[m].ca = v[i].old;
			old[m].ca_status = v[i].old_status;
			old[m].ocsp = v[i].old_ocsp;
			old[m].ocsp_by_node = v[i].old_ocsp != NULL;
			old[m].ocsp_status = v[i].old_ocsp_status;
			/* rfc6960: that Sub CA's own responder. */
			if (old[m].ocsp == NULL &&
			    v[i].node->role == NODE_ROLE_PSN &&
			    v[i].node->link != PAN_LINK_REMOVED)
				old[m].ocsp = ca_find_ocsp(
				    p, v[i].old, v[i].node->hostname);
			m++;
		}
		snprintf(note, sizeof(note), "generation %u, old",
		         gs->g[j].gen);
		fprintf(out, "\nRoot CA chain generation %u (old: what it "
		             "issued is trusted until it expires):\n",
		        gs->g[j].gen);
		ca_tree(gs, gs->g[j].root, gs->g[j].node_ca, old, m, note, out);
		for (i = 0; i < m; i++)
			if (!old[i].ocsp_by_node)
				X509_free(old[i].ocsp);
		memset(old, 0, (n + 1) * sizeof(*old));
	}
	free(old);
}

static void
ca_nodes_free(struct ca_node *v, size_t n)
{
	size_t i;

	for (i = 0; i < n && v != NULL; i++) {
		X509_free(v[i].ca);
		X509_free(v[i].ocsp);
		X509_free(v[i].old);
		X509_free(v[i].old_ocsp);
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
ca_verify_one(struct pan *p, const struct ca_gen *g, X509 *x,
              const char *label, const char *host, char *why, size_t whylen)
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
	if (g->root == NULL) {
		snprintf(why, whylen, "Root CA of %s not found", p->id.hostname);
		return -1;
	}
	if ((anchors = sk_X509_new_null()) == NULL ||
	    (untrusted = sk_X509_new_null()) == NULL ||
	    !sk_X509_push(anchors, g->root) ||
	    (g->node_ca != NULL && !sk_X509_push(untrusted, g->node_ca))) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	if (X509_check_issued(g->root, x) != X509_V_OK &&
	    (g->node_ca == NULL ||
	     X509_check_issued(g->node_ca, x) != X509_V_OK)) {
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

/*
 * One line of `pan ca certs --verify`; 0 when the certificate is valid
 * (up to the Root CA of generation g; an earlier generation's line says
 * so, with what: "not renewed yet" for a node's CA).
 */
static int
ca_verify_line(struct pan *p, const struct ca_gens *gs, size_t g, FILE *out,
               const char *host, const char *role, X509 *x, int status,
               const char *label, const char *old_what)
{
	char why[ERROR_MAX + 256], when[32] = "?";
	time_t na;
	int rc;

	rc = ca_verify_one(p, &gs->g[g], x, label, host, why, sizeof(why));
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
	if (g == 0)
		fprintf(out,
		        "%-16s %-4s %-16s valid up to the Root CA, expires "
		        "%s\n",
		        host, role, label, when);
	else
		fprintf(out,
		        "%-16s %-4s %-16s %s (generation %u): valid up to its "
		        "Root CA, expires %s\n",
		        host, role, label, old_what, gs->g[g].gen, when);
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
	struct ca_gens gs;
	size_t i, j, n = 0, bad = 0, total = 0;
	const char *role, *label;

	ca_gens_load(p, &gs);
	if ((v = ca_collect(p, &gs, true, &n)) == NULL) {
		fprintf(errf, "pan ca certs: out of memory\n");
		ca_gens_free(&gs);
		return PAN_EXIT_FAIL;
	}
	fprintf(out, "%-16s %-4s %-16s %s\n", "NODE", "ROLE", "CERTIFICATE",
	        "CHAIN");
	/* The PAN's own, of every generation kept: the old ones trusted. */
	for (j = 0; j < gs.n; j++) {
		total += 2;
		bad += ca_verify_line(p, &gs, j, out, p->id.hostname, "pan",
		                      gs.g[j].root, STORE_STATUS_GOOD,
		                      "Root CA", "old chain") != 0;
		bad += ca_verify_line(p, &gs, j, out, p->id.hostname, "pan",
		                      gs.g[j].node_ca, STORE_STATUS_GOOD,
		                      "Node CA", "old chain") != 0;
	}
	for (i = 0; i < n; i++) {
		/* A removed node's certificates are revoked on purpose. */
		if (v[i].node->link == PAN_LINK_REMOVED)
			continue;
		role = v[i].node->role == NODE_ROLE_SAN ? "san" : "psn";
		label = v[i].node->role == NODE_ROLE_SAN ? "Node CA"
		                                         : "Endpoint Sub CA";
		total++;
		/* Still on an earlier chain: judged by that chain's root. */
		if (v[i].ca == NULL && v[i].old != NULL)
			bad += ca_verify_line(p, &gs, v[i].old_gen, out,
			                      v[i].node->hostname, role,
			                      v[i].old, v[i].old_status, label,
			                      "not renewed yet") != 0;
		else
			bad += ca_verify_line(p, &gs, 0, out,
			                      v[i].node->hostname, role,
			                      v[i].ca, v[i].ca_status, label,
			                      NULL) != 0;
	}
	if (bad == 0)
		fprintf(out, "All %zu CA certificates are valid.\n", total);
	else
		fprintf(out, "%zu of %zu CA certificates are not valid.\n", bad,
		        total);
	ca_nodes_free(v, n);
	ca_gens_free(&gs);
	return bad == 0 ? PAN_EXIT_OK : PAN_EXIT_FAIL;
}

int
ca_certs(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	struct ca_node *v = NULL;
	struct ca_gens gs;
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
	ca_gens_load(p, &gs);
	if ((v = ca_collect(p, &gs, false, &n)) == NULL) {
		fprintf(errf, "pan ca certs: out of memory\n");
		ca_gens_free(&gs);
		return PAN_EXIT_FAIL;
	}
	if (pem) {
		if (!PEM_write_X509(out, p->root_ca) ||
		    !PEM_write_X509(out, p->node_ca))
			goto pemfail;
		/* The live chain: a removed node's CA is left out. */
		for (i = 0; i < n; i++)
			if (v[i].ca != NULL &&
			    v[i].ca_status == STORE_STATUS_GOOD &&
			    !PEM_write_X509(out, v[i].ca))
				goto pemfail;
	} else
		ca_trees(p, &gs, v, n, out);
	rc = PAN_EXIT_OK;
	goto out;
pemfail:
	log_crypto(LOG_MAIN, NULL, "PEM_write_X509", "pan ca certs");
	fprintf(errf, "pan ca certs: cannot write PEM\n");
out:
	ca_nodes_free(v, n);
	ca_gens_free(&gs);
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
