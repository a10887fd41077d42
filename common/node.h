/*
 * node: what every role knows about itself, and where it keeps it.
 *
 * A node's data directory holds its identity file (node.conf: host name,
 * role, deployment, written once by init or join), its CA material, its
 * CURVE key, its LMDB store and its logs.  The layout is written down here
 * once, so pan, san and psn cannot disagree about it; docs/data-dir.md
 * shows it to users.
 */
#ifndef ISELAB_NODE_H
#define ISELAB_NODE_H

#include <stdint.h>
#include <stddef.h>

struct error;

#define NODE_IDENTITY_FILE "node.conf" /* identity, written at init/join */
#define NODE_CA_DIR        "ca"        /* certificates and encrypted keys */
/* A SAN's imported CA store of the PAN (`san ca import`, docs/san.md). */
#define NODE_CA_IMPORT_DIR NODE_CA_DIR "/imported"
#define NODE_STORE_DIR     "store"     /* LMDB environment */
#define NODE_LOG_DIR       "log"       /* <hostname>.log */
#define NODE_CURVE_KEY     "curve.key" /* CURVE secret, encrypted PKCS#8 */
#define NODE_CURVE_PUB     "curve.pub" /* CURVE public key, Z85 */

/* Every variable of ours in the environment starts with this. */
#define NODE_ENV_PREFIX "ISELAB_"
/* The node passphrase, when not in a file (--passphrase-file). */
#define NODE_PASSPHRASE_ENV "ISELAB_PASSPHRASE"
/*
 * Variables of ours that are not settings of a run, which config_load_env()
 * would refuse as unknown keys: the passphrase, the data directory, the
 * build tree of the tests, keys.h KEY_KDF_ITER_ENV, castore.h
 * CASTORE_KEY_ENV, enroll.h ENROLL_PASSWORD_ENV.  A shell that exports any
 * of them must not stop a daemon from starting.
 */
#define NODE_ENV_NOT_SETTINGS                                                 \
	NODE_PASSPHRASE_ENV, NODE_ENV_PREFIX "DATA_DIR",                       \
	    NODE_ENV_PREFIX "BUILD_DIR", NODE_ENV_PREFIX "KDF_ITERATIONS",     \
	    NODE_ENV_PREFIX "EXPORT_KEY", NODE_ENV_PREFIX "USER_PASSWORD"

/* RFC 1123 host name: 253 characters, labels of 63. */
#define NODE_HOSTNAME_MAX 253
/* Deployment id: 128 random bits in hex. */
#define NODE_DEPLOYMENT_ID_LEN 32

enum node_role {
	NODE_ROLE_PAN,
	NODE_ROLE_SAN,
	NODE_ROLE_PSN,
};

/* Which issuer signs a PSN's OCSP responder certificate (DESIGN.md 2). */
enum node_ocsp_hierarchy {
	NODE_OCSP_RFC6960, /* the PSN's Endpoint Sub CA (default) */
	NODE_OCSP_LEGACY,  /* the PAN's Node CA, before ISE 3.1 patch 2 */
};

struct node_identity {
	char hostname[NODE_HOSTNAME_MAX + 1];
	enum node_role role;
	char deployment_id[NODE_DEPLOYMENT_ID_LEN + 1];
	enum node_ocsp_hierarchy ocsp_hierarchy;
	int64_t created; /* seconds since the epoch */
};

const char *node_role_name(enum node_role role);
const char *node_ocsp_hierarchy_name(enum node_ocsp_hierarchy h);
int node_ocsp_hierarchy_from_name(const char *name, enum node_ocsp_hierarchy *h,
                                  struct error *err);

/* A host name as RFC 1123 section 2.1 allows (letters, digits, '-', '.'). */
int node_hostname_check(const char *host, struct error *err);

/* datadir/rel into buf; -1 if it does not fit. */
int node_path(char *buf, size_t len, const char *datadir, const char *rel,
              struct error *err);

/* A fresh deployment id (hex of 16 random bytes). */
int node_new_deployment_id(char out[NODE_DEPLOYMENT_ID_LEN + 1],
                           struct error *err);

/*
 * Write and read datadir/node.conf.  Reading checks every field (through
 * the config module, so a hand-edited file with a typo is refused with the
 * line) and says when the directory holds no node at all.
 */
int node_identity_write(const char *datadir, const struct node_identity *id,
                        struct error *err);
int node_identity_read(const char *datadir, struct node_identity *id,
                       struct error *err);

/*
 * The node passphrase: from file when not NULL, else from the environment
 * (NODE_PASSPHRASE_ENV).  Wipe with passphrase_free() (keys.h).
 */
char *node_passphrase(const char *file, size_t *len, struct error *err);

/*
 * Root CA chain generations (docs/certificates.md, "Replacing the root CA
 * chain").  D/ca/generation holds the generation whose files are in
 * D/ca/ (absent: 1, the chain of `pan init` and of a join).  A new
 * generation is made in D/ca/next/; install moves each of files from
 * there into D/ca/, after a hard link of the file it replaces into
 * D/ca/gen-<gen-1>/ (what the old chain issued still verifies and is
 * still answered for), then writes D/ca/generation and removes next/.
 * Every step can be done again: install after a crash finishes the job.
 */
#define NODE_CA_NEXT       "next"
#define NODE_CA_GENERATION "generation"
unsigned node_ca_generation(const char *datadir);
/* D/<formatted> into buf (fmt usually starts with NODE_CA_DIR). */
int node_ca_path(const char *datadir, char *buf, size_t len,
                 struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int node_ca_install(const char *datadir, const char *const *files,
                    size_t nfiles, unsigned gen, struct error *err);

#endif
