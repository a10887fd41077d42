/*
 * castore: the internal CA store as the product's "Export / Import
 * Internal CA Store" moves it (docs/san.md): the PAN's Root CA and Node CA
 * keys and certificates, and its OCSP responder's when it has one, in one
 * PKCS#12 file (RFC 7292) that openssl can open:
 *
 * - each key in a pkcs8ShroudedKeyBag, PBES2 (RFC 8018) with PBKDF2
 *   HMAC-SHA-256 and AES-256-CBC, CASTORE_ITER iterations;
 * - the certificates in an encrypted safe, same scheme;
 * - an HMAC-SHA-256 MAC over the whole (RFC 7292 section 5), so that a
 *   wrong key or a changed byte is found before anything is used;
 * - every bag named by friendlyName (CASTORE_ROOT_CA ...), each key tied
 *   to its certificate by localKeyId.
 *
 * The key that protects it is the admin's: from a file or the
 * environment, never the command line (a process list or shell history
 * would show it).  The CA keys never cross the network: export and import
 * are local commands on each node, the file is carried by the admin.
 */
#ifndef ISELAB_CASTORE_H
#define ISELAB_CASTORE_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

struct error;

/* The environment variable that may hold the export key. */
#define CASTORE_KEY_ENV "ISELAB_EXPORT_KEY"
/* PBKDF2 iterations for keys, certificates and the MAC. */
#define CASTORE_ITER 600000
/* Largest export file we read (a few keys and certificates). */
#define CASTORE_FILE_MAX (1024 * 1024)

/* friendlyName of each entry: the same name on a key and its certificate. */
#define CASTORE_ROOT_CA "root-ca"
#define CASTORE_NODE_CA "node-ca"
#define CASTORE_OCSP    "ocsp-responder"

/* One entry: a certificate and its private key. */
struct castore_entry {
	X509 *cert;
	EVP_PKEY *key;
};

/* What a CA store holds; ocsp is optional (cert and key both, or none). */
struct castore {
	struct castore_entry root;
	struct castore_entry node;
	struct castore_entry ocsp;
};

void castore_free(struct castore *cs);

/* The PKCS#12 DER of cs under pass, into a malloc'd *der.  0 or -1. */
int castore_pack(const struct castore *cs, const char *pass, size_t passlen,
                 unsigned char **der, size_t *len, struct error *err);

/*
 * Open der with pass: the MAC first ("wrong export key or damaged file"
 * when it does not verify, or the file does not parse), then every bag.
 * Refuses a file without the Root CA and Node CA, with an entry twice, a
 * key without certificate or one that does not match it, a Node CA that
 * the Root CA did not sign or an OCSP responder the Node CA did not.
 * 0 with cs filled, or -1 with cs empty.
 */
int castore_unpack(const unsigned char *der, size_t len, const char *pass,
                   size_t passlen, struct castore *cs, struct error *err);

/*
 * The export key: from file (mode 0600 or stricter) when not NULL, else
 * CASTORE_KEY_ENV.  At least PASSPHRASE_MIN bytes.  Wipe with
 * passphrase_free().
 */
char *castore_key_load(const char *file, size_t *len, struct error *err);

/*
 * true when arg is an option that would carry the export key on the
 * command line (--key, --export-key, --password, --pass, their "=" forms):
 * refused with CASTORE_ARGV_REFUSED.
 */
bool castore_argv_key(const char *arg);
#define CASTORE_ARGV_REFUSED                                                   \
	"the export key is never taken from the command line (a process "     \
	"list and the shell history would show it): give it in a file "       \
	"(--key-file FILE, mode 0600) or in " CASTORE_KEY_ENV

/* The command line of `pan ca export` and `san ca import`. */
struct castore_args {
	const char *file;     /* --out (export) or --in (import) */
	const char *keyfile;  /* --key-file; NULL: CASTORE_KEY_ENV */
	const char *passfile; /* --passphrase-file; NULL: the environment */
	const char *datadir;  /* --data-dir, else datadir_env's value */
};

/*
 * Parse the command line of cmd ("pan ca export"), whose file option is
 * --file_opt ("out" or "in"): a key on the command line is refused before
 * anything else.  usage goes to stdout on --help, to stderr on a bad
 * line.  -1: go on with *a; else the exit status (CLI_EXIT_OK after
 * --help, CLI_EXIT_USAGE).
 */
int castore_args_parse(const char *cmd, const char *file_opt,
                       const char *usage, const char *datadir_env, int argc,
                       char **argv, struct castore_args *a);

#endif
