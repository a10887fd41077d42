/*
 * provisioning: the PSN's provisioning service (process "provisioning"),
 * forked and supervised by services.c like the CA service and the EST
 * server, where session services are on.  docs/byod.md is its guide.
 *
 * It is two things, as in the product, where both live in the node's
 * application server:
 * - the node's EST client: libcurl with the PSN's own EST client
 *   certificate (D/ca/est-client.crt, key decrypted at start) against the
 *   local EST server (est.listen; 0.0.0.0 is reached as 127.0.0.1),
 *   trusting only the deployment's root.  It calls cacerts before anything
 *   else, then every provisioning.cacerts-interval (5 minutes), every
 *   provisioning.retry-interval (10 s) while the last call failed, and once
 *   before an enrollment when the last call failed.  A failed call or an
 *   incomplete chain raises the alarm PROV_ALARM_NAME on the node (control
 *   socket: "alarm raise"), and the next good call clears it.
 * - the BYOD portal: HTTPS on provisioning.listen (0.0.0.0:8443) with the
 *   EST server's TLS certificate.  POST /byod/enroll takes the endpoint's
 *   CSR and its user's credentials as JSON, checks the password against
 *   the enrollment users in the store (read-only), checks that the CSR
 *   names the user (CN) and the endpoint's MAC address (subjectAltName
 *   urn:dev:mac:, RFC 9039), and hands the CSR unchanged to simpleenroll.
 *
 * It holds no CA key: its private keys are the EST client key and the
 * portal's TLS key.
 */
#ifndef ISELAB_PSN_PROVISIONING_H
#define ISELAB_PSN_PROVISIONING_H

#include <stddef.h>

/* Process name (ps, logs) and the row of the status table. */
#define PROVISIONING_PROCESS "provisioning"
#define PROVISIONING_TITLE   "Provisioning Service"

/* The alarm the EST client raises on its node (and the PAN shows). */
#define PROV_ALARM_NAME     "EST Client CA Certificates Retrieval Failed"
#define PROV_ALARM_SEVERITY "major"

/* Portal paths. */
#define PROV_PATH_ENROLL "/byod/enroll"
#define PROV_PATH_CA     "/byod/ca"
#define PROV_PATH_INDEX  "/byod/"

/* The MAC address in the certificate's subjectAltName (RFC 9039). */
#define PROV_MAC_URN_PREFIX "urn:dev:mac:"
/* An EUI-48 as 12 lower-case hex digits, plus the NUL. */
#define PROV_MAC_HEX_LEN 12

/* The process body (a proc_fork() function): 0 on a clean stop. */
int provisioning_main(void *arg);

/*
 * A MAC address as a user types it ("AA:BB:CC:DD:EE:FF",
 * "aa-bb-cc-dd-ee-ff", "aabb.ccdd.eeff", "aabbccddeeff") into 12
 * lower-case hex digits in out (PROV_MAC_HEX_LEN + 1 bytes).  -1 when it
 * is not an EUI-48 in one of those forms.
 */
int prov_mac_normalise(const char *in, char out[PROV_MAC_HEX_LEN + 1]);

#endif
