/*
 * keys: key pairs for every node role, and how they rest on disk.
 *
 * Every private key is made on the node that uses it (DESIGN.md section 2)
 * and stored as encrypted PKCS#8 (PBES2: PBKDF2-HMAC-SHA256 into AES-256-CBC)
 * under the node's passphrase.  The passphrase comes from a file or from the
 * environment, never from argv, where any local user can read it.
 */
#ifndef ISELAB_KEYS_H
#define ISELAB_KEYS_H

#include <stddef.h>

#include <openssl/evp.h>

struct error;

enum key_type {
	KEY_RSA_2048,
	KEY_RSA_3072,
	KEY_RSA_4096,
	KEY_EC_P256,
	KEY_EC_P384,
	KEY_TYPE_COUNT
};

/* Longest passphrase we accept, and the shortest. */
#define PASSPHRASE_MAX 1024
#define PASSPHRASE_MIN 8

/* Names as the CLI takes them: rsa:2048 rsa:3072 rsa:4096 ec:p256 ec:p384. */
const char *key_type_name(enum key_type type);
int key_type_from_name(const char *name, enum key_type *type,
                       struct error *err);

EVP_PKEY *key_generate(enum key_type type, struct error *err);

/*
 * The type of an existing key, so that a replacement is made alike (a
 * new root of the same size as the old); -1 when it is none of ours.
 */
int key_type_of(const EVP_PKEY *key, enum key_type *type, struct error *err);

/*
 * Refuse keys we do not issue for: RSA below 2048 or above 8192 bits, RSA
 * with an even or tiny public exponent, EC keys on any curve but P-256,
 * P-384 and P-521, and any other algorithm.  err says why.
 */
int key_check_strength(const EVP_PKEY *key, struct error *err);

/* "RSA 2048", "EC P-256": as `pan ca certs` shows a key. */
void key_describe(const EVP_PKEY *key, char *buf, size_t len);

/*
 * The digest to sign with this key: SHA-384 for P-384, SHA-512 for P-521,
 * SHA-256 otherwise (RFC 5480 section 4 pairs hash and curve strength).
 * Used for CSRs and certificates alike.
 */
const EVP_MD *key_signature_md(const EVP_PKEY *key);

/*
 * Environment variable with the PBKDF2 iteration count key_save() uses
 * instead of its default (600000), from 1000 to 10000000: test labs set it
 * low to start fast, at the cost of the keys' protection at rest.
 */
#define KEY_KDF_ITER_ENV "ISELAB_KDF_ITERATIONS"

/*
 * Save as encrypted PKCS#8 PEM, mode 0600, atomically (util.h
 * file_write_atomic).  Loading with a wrong passphrase is an error that says
 * so ("wrong passphrase or corrupt key file"), never a garbage key.  A bad
 * KEY_KDF_ITER_ENV is an error too, and nothing is written.
 */
int key_save(const EVP_PKEY *key, const char *path, const char *passphrase,
             size_t passlen, struct error *err);
EVP_PKEY *key_load(const char *path, const char *passphrase, size_t passlen,
                   struct error *err);

/*
 * Hand-over copies (docs/certificates.md "Hand-over secret"): a process
 * that wiped the node passphrase once its key was loaded gets, at fork, a
 * random secret of its own (secret_random(KEY_HANDOVER_BYTES)); whoever
 * makes a new key for it leaves a copy encrypted under that secret, which
 * the process reads (and removes) when told to take a new generation.
 *
 * key_handover_copy: the key at from (encrypted under pass) saved again
 * at to under handover.  key_handover_take: the key at path under
 * handover, the file removed once read.
 */
#define KEY_HANDOVER_BYTES 32
struct secret;
int key_handover_copy(const char *from, const char *pass, size_t passlen,
                      const char *to, const struct secret *handover,
                      struct error *err);
EVP_PKEY *key_handover_take(const char *path, const struct secret *handover,
                            struct error *err);

/*
 * The node's passphrase: from file (when not NULL; trailing newline removed;
 * the file must not be readable by group or others) else from the
 * environment variable env.  Returns a malloc'd NUL-terminated string that
 * the caller wipes with passphrase_free().  Too short or too long, missing,
 * or with a NUL byte: an error naming the source.
 */
char *passphrase_load(const char *file, const char *env, size_t *len,
                      struct error *err);
void passphrase_free(char *pass, size_t len);

/*
 * SHA-1 of the subjectPublicKey BIT STRING contents: RFC 5280 section
 * 4.2.1.2 method (1) key identifier, and the OCSP CertID issuerKeyHash
 * (RFC 6960 section 4.1.1), so one value indexes both.
 */
#define KEY_ID_LEN 20
int key_id(const EVP_PKEY *key, unsigned char out[KEY_ID_LEN],
           struct error *err);

#endif
