/*
 * curve: CURVE key pairs as X25519 keys; see curve.h.
 */
#include "curve.h"
#include "log.h"
#include "util.h"

#include <string.h>

#include <openssl/evp.h>
#include <zmq.h>

EVP_PKEY *
curve_generate(struct error *err)
{
	EVP_PKEY *key;

	if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519")) == NULL)
		log_crypto(LOG_MESSAGING, err, "EVP_PKEY_Q_keygen", "X25519");
	return key;
}

int
curve_z85(const EVP_PKEY *key, char public_z85[CURVE_Z85_LEN],
    char *secret_z85, struct error *err)
{
	unsigned char pub[CURVE_KEY_LEN], sec[CURVE_KEY_LEN];
	char sec_z85[CURVE_Z85_LEN], derived[CURVE_Z85_LEN];
	size_t len;
	int rc = -1;

	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_X25519) {
		error_set(err, "CURVE key is not an X25519 key");
		return -1;
	}
	len = sizeof(pub);
	if (!EVP_PKEY_get_raw_public_key(key, pub, &len) ||
	    len != sizeof(pub)) {
		log_crypto(LOG_MESSAGING, err, "EVP_PKEY_get_raw_public_key",
		    "CURVE key");
		goto out;
	}
	len = sizeof(sec);
	if (!EVP_PKEY_get_raw_private_key(key, sec, &len) ||
	    len != sizeof(sec)) {
		log_crypto(LOG_MESSAGING, err, "EVP_PKEY_get_raw_private_key",
		    "CURVE key");
		goto out;
	}
	if (zmq_z85_encode(public_z85, pub, sizeof(pub)) == NULL ||
	    zmq_z85_encode(sec_z85, sec, sizeof(sec)) == NULL) {
		error_set(err, "zmq_z85_encode failed");
		goto out;
	}
	/* Both libraries must agree that this secret has this public key. */
	if (zmq_curve_public(derived, sec_z85) != 0 ||
	    strcmp(derived, public_z85) != 0) {
		error_set(err, "CURVE key: libzmq derives another public key "
		    "from the secret");
		goto out;
	}
	if (secret_z85 != NULL)
		memcpy(secret_z85, sec_z85, CURVE_Z85_LEN);
	rc = 0;
out:
	secure_zero(sec, sizeof(sec));
	secure_zero(sec_z85, sizeof(sec_z85));
	return rc;
}

int
curve_public_from_z85(const char *z85, unsigned char out[CURVE_KEY_LEN],
    struct error *err)
{
	if (strlen(z85) != CURVE_Z85_LEN - 1 ||
	    zmq_z85_decode(out, z85) == NULL) {
		error_set(err, "'%s' is not a Z85 CURVE public key (40 "
		    "characters)", z85);
		return -1;
	}
	return 0;
}
