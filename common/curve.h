/*
 * curve: the node's ZeroMQ CURVE key pair (RFC 26/CURVEZMQ).
 *
 * CURVE keys are Curve25519 (libsodium crypto_box: the secret key is an
 * X25519 scalar, the public key its point), so we make them with OpenSSL as
 * an X25519 EVP_PKEY and keep the secret encrypted at rest with key_save(),
 * like every other private key of the node.  ZeroMQ takes them as Z85 text.
 */
#ifndef ISELAB_CURVE_H
#define ISELAB_CURVE_H

#include <openssl/evp.h>

struct error;

/* Raw key length, and its Z85 text with the NUL (zmq_z85_encode). */
#define CURVE_KEY_LEN 32
#define CURVE_Z85_LEN 41

EVP_PKEY *curve_generate(struct error *err);

/*
 * The Z85 texts ZeroMQ wants.  secret_z85 may be NULL; when given, the
 * caller wipes it after use.  The public key is checked against the one
 * libzmq derives from the secret, so a key that ZeroMQ would see
 * differently is refused here, not at the first handshake.
 */
int curve_z85(const EVP_PKEY *key, char public_z85[CURVE_Z85_LEN],
              char *secret_z85, struct error *err);

/* Decode a Z85 public key (from a join string); -1 if malformed. */
int curve_public_from_z85(const char *z85, unsigned char out[CURVE_KEY_LEN],
                          struct error *err);

#endif
