/*
 * member_rootchain: a member's renewal after `pan ca replace-root-chain`
 * (member_rootchain.c, docs/certificates.md "Replacing the root CA
 * chain"), driven by the hooks of `psn run` (a PSN: a new Endpoint Sub
 * CA and its own certificates) and `san run` (a SAN: a new Node CA).
 */
#ifndef ISELAB_MEMBER_ROOTCHAIN_H
#define ISELAB_MEMBER_ROOTCHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "join.h"
#include "node.h"

struct error;
struct secret;
struct store;

/*
 * A new key for a running service (docs/certificates.md "Replacing the
 * root CA chain"): the renewal worker saves the new D/ca/<key>.key again
 * at D/ca/<key>.<process>.handover under the service's hand-over secret;
 * the service, told by SIGHUP that a newer generation is installed, takes
 * it with key_handover_take().  The path of that copy:
 */
int member_handover_path(const char *datadir, const char *key,
                         const char *process, char *buf, size_t len,
                         struct error *err);
/*
 * The service's side: take its copy of D/ca/<key>.key (gone once taken)
 * and, with cert (the new D/ca/<key>.crt) not NULL, check that it is that
 * certificate's key.  NULL with err set when it is not there, not readable
 * under own, or not the certificate's.
 */
EVP_PKEY *member_handover_take(const char *datadir, const char *key,
                               const char *process, const struct secret *own,
                               X509 *cert, struct error *err);
/* One hand-over copy to write, and the most there are. */
struct member_handover {
	const char *key;     /* "est-server": D/ca/est-server.key */
	const char *process; /* "est" */
	const struct secret *secret;
};
#define MEMBER_HANDOVERS_MAX 5

struct member_rootchain {
	const char *datadir;
	const char *hostname;
	const struct member_renewal *kind; /* what the role renews */
	bool legacy;         /* OCSP hierarchy: the PAN signs our responder */
	unsigned installed;  /* generation in D/ca/ */
	unsigned target;     /* newest generation a ca-chain event named */
	unsigned reached;    /* generation the PAN signed for */
	pid_t worker;        /* the "ca-renew" process; 0 if none */
	int64_t not_before;  /* mono ms: no step before */
	uint64_t request_id; /* of the last RenewRequest */
	bool worker_handover; /* the worker runs step "handover" */
	bool handed_over;     /* this run's hand-over copies are written */
};

struct member_renewal;
/* role: NODE_ROLE_PSN or NODE_ROLE_SAN. */
void member_rootchain_init(struct member_rootchain *rc, const char *datadir,
                           const char *hostname, enum node_role role,
                           bool legacy);
/* The generation the store's ca-chain names (after an event, at start). */
void member_rootchain_target(struct member_rootchain *rc, struct store *st);
/*
 * The next step if one is due (pass: the node passphrase the supervisor
 * keeps, for the worker).  *installed is true when the new generation
 * took its place: the services must take the new files.  Returns ms
 * until it wants to run again, or -1.
 */
int member_rootchain_tick(struct member_rootchain *rc, struct join_link *link,
                          const char *pass, size_t passlen,
                          const struct member_handover *ho, size_t nho,
                          int64_t now, bool *installed);
/* A RenewResponse (or the Error to our request): 1 taken, 0 not ours. */
int member_rootchain_response(struct member_rootchain *rc,
                              const Iselab__Envelope *env);
bool member_rootchain_owns(const struct member_rootchain *rc, pid_t pid);
void member_rootchain_exited(struct member_rootchain *rc, int status);

#endif
