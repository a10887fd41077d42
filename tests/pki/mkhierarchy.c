/*
 * mkhierarchy: write the lab's certificate hierarchy (DESIGN.md section 2)
 * as PEM files, once per key flavour, so that tools other than our own code
 * (openssl verify, zlint) can judge what cert_issue() makes.  Used by
 * check-profiles.sh; also handy to look at the profiles by hand.
 *
 *	mkhierarchy DIR [FLAVOUR...]
 *
 * For each flavour (default: ec-p256 ec-p384 rsa-2048 rsa-3072 mixed) it
 * writes DIR/FLAVOUR/NAME.pem and NAME.key (unencrypted PKCS#8, 0600: test
 * keys only), NAME.untrusted.pem with the intermediates between NAME and the
 * root when there are any, and one line per certificate to DIR/index.txt:
 *
 *	FLAVOUR/NAME.pem UNTRUSTED|- PURPOSE|- HIERARCHY
 *
 * HIERARCHY is "rfc6960" for the responder under the Endpoint Sub CA,
 * "legacy" for the one under the Node CA, "both" for the rest.  Every
 * certificate is also checked with chain_verify() before it is written.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "chain.h"
#include "hierarchy.h"
#include "log.h"
#include "util.h"

/* Longest path we build under DIR. */
#define MK_PATH_MAX 4096

/* The key of each slot in the "mixed" flavour: digest and KU per key. */
static const char *const mixed[H_COUNT] = {
    [H_ROOT] = "rsa-3072",       [H_NODE] = "ec-p384",
    [H_SUB] = "ec-p256",         [H_OCSP] = "rsa-2048",
    [H_OCSP_LEGACY] = "ec-p384", [H_SERVER] = "rsa-2048",
    [H_CLIENT] = "ec-p256",
};

static const char *const default_flavours[] = {
    "ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "mixed",
};

static int
save_key(EVP_PKEY *key, const char *path, struct error *err)
{
	BIO *bio;
	char *data;
	long len;
	int rc = -1;

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) !=
	        1) {
		error_set(err, "%s: PEM_write_bio_PrivateKey failed", path);
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	rc = file_write_atomic(path, data, (size_t)len, 0600, err);
out:
	BIO_free(bio);
	return rc;
}

static int
write_flavour(const char *dir, const char *flavour, FILE *index,
              struct error *err)
{
	char path[MK_PATH_MAX], upath[MK_PATH_MAX], fdir[MK_PATH_MAX];
	const char *f[H_COUNT];
	STACK_OF(X509) *untrusted = NULL, *anchors = NULL;
	struct hier h;
	unsigned purpose;
	int i, rc = -1;

	for (i = 0; i < H_COUNT; i++)
		f[i] = strcmp(flavour, "mixed") == 0 ? mixed[i] : flavour;
	if (hier_build(&h, f, "pan1", "psn1", err) == -1) {
		error_prefix(err, "%s", flavour);
		hier_free(&h);
		return -1;
	}
	snprintf(fdir, sizeof(fdir), "%s/%s", dir, flavour);
	if (dir_create(fdir, 0755, err) == -1)
		goto out;
	if ((anchors = hier_stack1(h.cert[H_ROOT])) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	for (i = 0; i < H_COUNT; i++) {
		const struct hier_def *d = &hier_defs[i];

		snprintf(path, sizeof(path), "%s/%s.pem", fdir, d->file);
		if (cert_save_pem(h.cert[i], path, err) == -1)
			goto out;
		snprintf(path, sizeof(path), "%s/%s.key", fdir, d->file);
		if (save_key(h.key[i], path, err) == -1)
			goto out;
		if ((untrusted = hier_untrusted(&h, (enum hier_slot)i)) ==
		    NULL) {
			error_set(err, "out of memory");
			goto out;
		}
		purpose = i == H_SERVER   ? CHAIN_PURPOSE_TLS_SERVER
		          : i == H_CLIENT ? CHAIN_PURPOSE_TLS_CLIENT
		          : d->profile == CERT_PROFILE_OCSP_RESPONDER
		              ? CHAIN_PURPOSE_OCSP_SIGN
		              : CHAIN_PURPOSE_ANY;
		if (chain_verify(h.cert[i], untrusted, anchors, purpose, NULL,
		                 err) == -1) {
			error_prefix(err, "%s/%s", flavour, d->file);
			goto out;
		}
		snprintf(upath, sizeof(upath), "-");
		if (sk_X509_num(untrusted) > 0) {
			snprintf(path, sizeof(path), "%s/%s.untrusted.pem",
			         fdir, d->file);
			if (chain_save_pem(untrusted, path, err) == -1)
				goto out;
			snprintf(upath, sizeof(upath), "%s/%s.untrusted.pem",
			         flavour, d->file);
		}
		chain_free(untrusted);
		untrusted = NULL;
		fprintf(index, "%s/%s.pem %s %s %s\n", flavour, d->file, upath,
		        d->purpose != NULL ? d->purpose : "-", d->hierarchy);
	}
	rc = 0;
out:
	chain_free(untrusted);
	chain_free(anchors);
	hier_free(&h);
	return rc;
}

int
main(int argc, char *argv[])
{
	char path[MK_PATH_MAX];
	struct error err = {""};
	FILE *index;
	int i;

	if (argc < 2) {
		fprintf(stderr, "usage: mkhierarchy DIR [FLAVOUR...]\n"
		                "flavours: ec-p256 ec-p384 ec-p521 rsa-2048 "
		                "rsa-3072 rsa-4096 mixed\n");
		return 2;
	}
	/* One "issued" line per certificate is noise here; keep warnings. */
	for (i = 0; i < LOG_CATEGORY_COUNT; i++)
		log_set_level((enum log_category)i, LOG_LEVEL_WARN);
	if (dir_create(argv[1], 0755, &err) == -1) {
		fprintf(stderr, "mkhierarchy: %s\n", err.msg);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/index.txt", argv[1]);
	if ((index = fopen(path, "w")) == NULL) {
		fprintf(stderr, "mkhierarchy: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (argc == 2) {
		for (i = 0; i < (int)ARRAY_SIZE(default_flavours); i++)
			if (write_flavour(argv[1], default_flavours[i], index,
			                  &err) == -1)
				goto fail;
	} else {
		for (i = 2; i < argc; i++)
			if (write_flavour(argv[1], argv[i], index, &err) == -1)
				goto fail;
	}
	if (fclose(index) != 0) {
		fprintf(stderr, "mkhierarchy: %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
fail:
	fclose(index);
	fprintf(stderr, "mkhierarchy: %s\n", err.msg);
	return 1;
}
