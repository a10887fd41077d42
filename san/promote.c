/*
 * promote: `san promote`, the SAN becomes the deployment's primary (docs/
 * san.md "Promotion"; the product's "Promote to Primary").
 *
 * What it takes: the CA store of the PAN, imported (`san ca import`): the
 * Root CA key is what makes a primary (it signs a new SAN's Node CA, and
 * the CA signer of the promoted node loads it from ca/root-ca.key, a copy
 * of the imported one, still encrypted under this node's passphrase).
 * New PSNs get their Endpoint Sub CA from this node's own Node CA; the
 * PAN's Node CA key stays in ca/imported/ for its OCSP responder
 * certificate and is not used to sign.
 *
 * What it changes: deployment.conf names this node the primary (role
 * pan) at an epoch one above the highest this node knows, and the old
 * primary a secondary.  `san run` over such a directory runs the primary
 * daemon (pan/run.c over the replica store); the running member daemon,
 * when there is one, does the promotion itself and goes on as the primary
 * in the same process.  Nothing else is touched, so a promotion that
 * fails half-way is simply run again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "curve.h"
#include "join.h"
#include "node.h"
#include "pan.h"
#include "proc.h"
#include "san.h"
#include "util.h"

/* Longest path we build inside the data directory. */
#define PROMOTE_PATH_MAX 4096
/* Largest key file we copy (an encrypted RSA 4096 PKCS#8 is ~3.5 KiB). */
#define PROMOTE_KEY_MAX (64 * 1024)
/* How long `san promote` waits for the running daemon. */
#define PROMOTE_TIMEOUT_MS 30000

#define PROMOTE_USAGE "usage: san promote --data-dir DIR\n"

int
san_is_primary(const char *datadir, const struct node_identity *id,
               struct error *err)
{
	struct join_deployment d;
	const struct join_admin *pan;

	if (join_deployment_read(datadir, &d, err) == -1)
		return -1;
	pan = join_deployment_pan(&d);
	return pan != NULL && strcmp(pan->hostname, id->hostname) == 0;
}

/* This node as the primary in d: its endpoints from cfg, its CURVE key. */
static int
promote_self(const char *datadir, const struct node_identity *id,
             const struct config *cfg, struct join_admin *a, struct error *err)
{
	char adv[PAN_ENDPOINT_MAX], msg[PAN_ENDPOINT_MAX], ev[PAN_ENDPOINT_MAX];
	char path[PROMOTE_PATH_MAX];
	uint8_t *z85;
	size_t len;
	int rc;

	memset(a, 0, sizeof(*a));
	if (pan_advertise(cfg, id->hostname, adv, msg, ev, err) == -1)
		return -1;
	snprintf(a->hostname, sizeof(a->hostname), "%s", id->hostname);
	a->role = NODE_ROLE_PAN;
	snprintf(a->messaging, sizeof(a->messaging), "%s", msg);
	snprintf(a->events, sizeof(a->events), "%s", ev);
	if (node_path(path, sizeof(path), datadir, NODE_CURVE_PUB, err) == -1 ||
	    (z85 = file_read(path, CURVE_Z85_LEN + 16, &len, err)) == NULL)
		return -1;
	z85[strcspn((char *)z85, "\r\n")] = '\0';
	rc = curve_public_from_z85((char *)z85, a->curve_public, err);
	free(z85);
	return rc;
}

int
san_promote(const char *datadir, const struct node_identity *id,
            const struct config *cfg, FILE *out, FILE *errf)
{
	struct join_deployment d;
	struct join_admin self;
	struct error err = {{0}};
	char src[PROMOTE_PATH_MAX], dst[PROMOTE_PATH_MAX];
	uint8_t *key = NULL;
	size_t len, i, n = 0;
	int rc = SAN_EXIT_FAIL;

	if (id->role != NODE_ROLE_SAN) {
		fprintf(errf,
		        "san promote: %s holds a %s node; only a SAN can be "
		        "promoted\n",
		        datadir, node_role_name(id->role));
		return SAN_EXIT_FAIL;
	}
	if (join_deployment_read(datadir, &d, &err) == -1)
		goto fail;
	if (strcmp(join_deployment_pan(&d)->hostname, id->hostname) == 0) {
		fprintf(errf,
		        "san promote: %s is the primary already (epoch %llu)\n",
		        id->hostname, (unsigned long long)d.epoch);
		return SAN_EXIT_FAIL;
	}
	if (node_path(src, sizeof(src), datadir, CA_IMPORT_DIR "/root-ca.key",
	              &err) == -1)
		goto fail;
	if (!file_exists(src)) {
		fprintf(errf,
		        "san promote: refused: no imported CA store in "
		        "%s/%s (the Root CA key a primary needs): export it on "
		        "the PAN (pan ca export) and import it here (san ca "
		        "import) first\n",
		        datadir, CA_IMPORT_DIR);
		return SAN_EXIT_FAIL;
	}
	if (promote_self(datadir, id, cfg, &self, &err) == -1)
		goto fail;
	/* The Root CA key where the CA signer loads it, as encrypted. */
	if ((key = file_read(src, PROMOTE_KEY_MAX, &len, &err)) == NULL ||
	    node_path(dst, sizeof(dst), datadir, NODE_CA_DIR "/root-ca.key",
	              &err) == -1 ||
	    file_write_atomic(dst, key, len, 0600, &err) == -1)
		goto fail;
	/* Us first, as the primary; the others (the old PAN) secondaries. */
	{
		struct join_admin admins[JOIN_ADMIN_MAX];

		admins[n++] = self;
		for (i = 0; i < d.nadmin && n < JOIN_ADMIN_MAX; i++) {
			if (strcmp(d.admin[i].hostname, id->hostname) == 0)
				continue;
			admins[n] = d.admin[i];
			admins[n++].role = NODE_ROLE_SAN;
		}
		memcpy(d.admin, admins, n * sizeof(*admins));
		d.nadmin = n;
	}
	d.epoch++;
	if (join_deployment_write(datadir, &d, &err) == -1)
		goto fail;
	fprintf(out,
	        "%s is now the primary of deployment %s (epoch %llu); nodes "
	        "reach it at %s\n",
	        id->hostname, d.id, (unsigned long long)d.epoch,
	        join_endpoint_address(self.messaging));
	rc = SAN_EXIT_OK;
	goto out;
fail:
	fprintf(errf, "san promote: %s\n", err.msg);
out:
	if (key != NULL) {
		secure_zero(key, len);
		free(key);
	}
	return rc;
}

int
san_promote_main(int argc, char **argv)
{
	static const char *const args[] = {"promote"};
	struct node_identity id;
	struct config *cfg = NULL;
	struct error err = {{0}};
	const char *datadir = getenv(NODE_ENV_PREFIX "DATA_DIR");
	char *out = NULL, *errtext = NULL;
	int i, status;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
			datadir = argv[++i];
		else if (strncmp(argv[i], "--data-dir=", 11) == 0)
			datadir = argv[i] + 11;
		else if (strcmp(argv[i], "--help") == 0) {
			fputs(PROMOTE_USAGE, stdout);
			return SAN_EXIT_OK;
		} else {
			fprintf(stderr, "san promote: unexpected argument '%s'\n%s",
			        argv[i], PROMOTE_USAGE);
			return SAN_EXIT_USAGE;
		}
	}
	if (datadir == NULL || datadir[0] == '\0') {
		fputs(PROMOTE_USAGE, stderr);
		return SAN_EXIT_USAGE;
	}
	if (node_identity_read(datadir, &id, &err) == -1) {
		fprintf(stderr, "san promote: %s\n", err.msg);
		return SAN_EXIT_FAIL;
	}
	/* The running daemon does it, and goes on as the primary. */
	if (id.role == NODE_ROLE_SAN &&
	    control_call(datadir, args, 1, PROMOTE_TIMEOUT_MS, &out, &errtext,
	                 &status, &err) == 0) {
		fputs(out, stdout);
		fputs(errtext, stderr);
		free(out);
		free(errtext);
		return status;
	}
	if (id.role == NODE_ROLE_SAN &&
	    (cfg = pan_run_config(datadir, SAN_CONFIG_FILE, NULL, 0, &err)) ==
	        NULL) {
		fprintf(stderr, "san promote: %s\n", err.msg);
		return SAN_EXIT_FAIL;
	}
	status = san_promote(datadir, &id, cfg, stdout, stderr);
	if (status == SAN_EXIT_OK)
		printf("start it as the primary: san run --data-dir %s\n",
		       datadir);
	config_free(cfg);
	return status;
}

int
san_user_main(int argc, char **argv)
{
	return pan_user_main(argc, argv);
}
