/*
 * psn_rootchain: a PSN's renewal after `pan ca replace-root-chain`
 * (rootchain.c, docs/certificates.md "Replacing the root CA chain"),
 * driven by `psn run`'s hooks.
 */
#ifndef ISELAB_PSN_ROOTCHAIN_H
#define ISELAB_PSN_ROOTCHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "join.h"

struct store;

struct psn_rootchain {
	const char *datadir;
	const char *hostname;
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

void psn_rootchain_init(struct psn_rootchain *rc, const char *datadir,
                        const char *hostname, bool legacy);
/* The generation the store's ca-chain names (after an event, at start). */
void psn_rootchain_target(struct psn_rootchain *rc, struct store *st);
/*
 * The next step if one is due (pass: the node passphrase the supervisor
 * keeps, for the worker).  *installed is true when the new generation
 * took its place: the services must take the new files.  Returns ms
 * until it wants to run again, or -1.
 */
struct psn_handover;
int psn_rootchain_tick(struct psn_rootchain *rc, struct join_link *link,
                       const char *pass, size_t passlen,
                       const struct psn_handover *ho, size_t nho, int64_t now,
                       bool *installed);
/* A RenewResponse (or the Error to our request): 1 taken, 0 not ours. */
int psn_rootchain_response(struct psn_rootchain *rc,
                           const Iselab__Envelope *env);
bool psn_rootchain_owns(const struct psn_rootchain *rc, pid_t pid);
void psn_rootchain_exited(struct psn_rootchain *rc, int status);

#endif
