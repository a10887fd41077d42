/*
 * signer: the CA signer process of an admin node (PAN, SAN) and the
 * client its main process uses (DESIGN.md section 1, docs/registration.md).
 *
 * The Root CA and Node CA private keys live in this process only.  It is
 * forked before the main process opens any network socket, loads the keys,
 * closes every descriptor it inherited, and from then on has exactly one
 * way in: a REP socket at ipc://D/signer.sock (0600).  It never opens a
 * network socket.  Like acme-client's keyproc it trusts nothing it is sent:
 * each SignRequest is checked again here (issuer, which profile that issuer
 * may sign, the CSR's signature and key, the CN the profile gives the
 * host), so that a bug in the network-facing main process cannot make it
 * sign anything the hierarchy does not allow (DESIGN.md section 2).
 *
 * What each issuer may sign:
 *   root-ca: node-ca (a SAN's Node CA)
 *   node-ca: endpoint-sub-ca (a PSN's CA), ocsp-responder (the "legacy"
 *            OCSP hierarchy, where the PAN's Node CA signs the responder)
 */
#ifndef ISELAB_SIGNER_H
#define ISELAB_SIGNER_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "node.h"

struct error;

/* The signer's socket in the data directory (signer.sock). */
#define SIGNER_SOCKET_NAME "signer"
/* Process name of the signer (ps, logs). */
#define SIGNER_PROCESS_NAME "ca-signer"
/* How long the client waits for an answer (REQ timeout). */
#define SIGNER_TIMEOUT_MS 10000
/* How long signer_spawn() waits for the keys to load and the bind. */
#define SIGNER_START_TIMEOUT_MS 60000

/* Client handle held by the node's main process. */
struct signer;

/*
 * Fork the CA signer.  It loads D/ca/root-ca.{key,crt} and
 * D/ca/node-ca.{key,crt}, whichever exist (a SAN has only its node CA),
 * binds ipc://D/signer.sock 0600 and serves SignRequests until SIGTERM
 * (exit 0).  Returns once the signer is serving, or -1 with its reason (a
 * wrong passphrase, a missing key, a socket in use) after reaping it.
 * hostname names this node in the signer's log lines.  The caller wipes
 * its own passphrase after.  The signer keeps a copy in a locked page
 * (struct secret) for the keys of a root CA chain replacement, and wipes
 * it at exit.  handover (NULL: none): the PAN OCSP process's hand-over
 * secret (pan.h), which the signer keeps likewise to leave a copy of a
 * new OCSP responder key encrypted under it.
 */
struct secret;
int signer_spawn(const char *datadir, const char *hostname,
                 const char *passphrase, size_t passlen,
                 const struct secret *handover, pid_t *pid,
                 struct error *err);

/*
 * A REQ socket to the signer in zmq_ctx (the caller's context, which must
 * outlive the handle).  Connecting does not wait for the signer.
 */
struct signer *signer_connect(void *zmq_ctx, const char *datadir,
                              struct error *err);

/*
 * Ask for a certificate: profile (cert_profile_name()), issuer ("root-ca"
 * or "node-ca"), the DER CSR, the host the certificate is for, validity
 * in seconds (0: the profile's default) and the AIA OCSP URL (NULL or ""
 * for none).  On success *out is the issued certificate.  A refusal is -1
 * with err holding the signer's reason.  No answer within
 * SIGNER_TIMEOUT_MS is -1 too, and the socket is made afresh, so that the
 * next call works (a REQ socket that lost its answer cannot send again).
 */
int signer_sign(struct signer *s, const char *profile, const char *issuer,
                const uint8_t *csr_der, size_t csr_len, const char *hostname,
                int64_t validity, const char *ocsp_url, X509 **out,
                struct error *err);

/*
 * Replacing the root CA chain (docs/certificates.md).  The signer keeps
 * the node passphrase for this (in the one process that already holds
 * the CA keys in the clear): the new keys are made here and rest
 * encrypted like the others.
 *
 * signer_rollover(): make generation gen's Root CA, Node CA and the
 * PAN's OCSP responder (new keys of the old root's type) and the RFC
 * 4210 4.4 root link certificates OldWithNew and NewWithOld, in
 * D/ca/next/ (SIGNER_NEXT_FILES, "generation" written last).  Done
 * already for gen: nothing is made again, so a replacement cut short is
 * finished with the same keys.  Keys are signed with what the signer
 * holds, so it must be the current generation.
 * signer_reload(): load the CA keys of D/ca/ again (after the files of
 * next/ took their place); if that fails the old keys stay.
 */
#define SIGNER_NEXT_DIR NODE_CA_NEXT
#define SIGNER_GENERATION_FILE NODE_CA_GENERATION
/* In next/: the new OCSP responder key under the hand-over secret. */
#define SIGNER_OCSP_HANDOVER "ocsp-responder.handover"

int signer_rollover(struct signer *s, unsigned gen, struct error *err);
int signer_reload(struct signer *s, struct error *err);
/*
 * The same rollover without waiting for it (making RSA 4096 keys takes
 * seconds, and the caller's loop must go on serving): start sends it;
 * while it runs, every other call to the signer is refused at once
 * ("busy"), busy_socket is the socket to poll for the answer (NULL when
 * none is awaited) and busy_ms the time left before it is given up
 * (SIGNER_ROLLOVER_TIMEOUT_MS; -1: none awaited).  poll takes the answer
 * when there is one: *done false, 0: not yet; *done true: 0 done, -1 not
 * (err says why, the timeout included).
 */
int signer_rollover_start(struct signer *s, unsigned gen, struct error *err);
void *signer_busy_socket(const struct signer *s);
int64_t signer_busy_ms(const struct signer *s);
int signer_rollover_poll(struct signer *s, bool *done, struct error *err);

/* Change the answer timeout (tests; SIGNER_TIMEOUT_MS by default). */
void signer_set_timeout(struct signer *s, int timeout_ms);

void signer_close(struct signer *s);

#endif
