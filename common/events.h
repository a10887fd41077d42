/*
 * events: the deployment's event log (DESIGN.md section 3, the "clone"
 * pattern of the ZeroMQ guide; docs/events.md).
 *
 * The PAN numbers every change that the other nodes must know (enrollment
 * users, templates, certificate status, node settings, and for the SAN's
 * replica every issued certificate, node record, token and alarm) from
 * 1 without gaps, keeps each in its store (STORE_TABLE_EVENTS, key: the
 * sequence number as 8 bytes big-endian) in the same transaction as the
 * change itself, and then publishes it on its PUB socket (8672).  A member
 * (PSN, SAN) applies events strictly in order, each once: its store keeps
 * the last sequence applied (EVENTS_APPLIED_KEY in STORE_TABLE_CONFIG),
 * written in the transaction that applies the event.  A member that sees a
 * gap (an event further on than the next, or a heartbeat ack naming a
 * newer sequence) asks the PAN for what it missed over the messaging link
 * (EventsRequest / EventBatch).  So nothing depends on PUB delivering
 * everything: PUB makes the common case fast, the catch-up makes it right.
 *
 * This module is the store side shared by both ends: keys, reading a range
 * of the log, and the effect of an event on a node's store, which is the
 * same on the PAN (where it is written with the event), on a SAN (which
 * keeps the whole replica and the log itself, EVENTS_REPLICA) and, for
 * what a PSN needs, on a PSN (which checks and skips the rest).
 */
#ifndef ISELAB_EVENTS_H
#define ISELAB_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.pb-c.h"
#include "log.h"

struct error;
struct store;
struct store_batch;

/* Most events one EventBatch carries (and one apply takes). */
#define EVENTS_BATCH_MAX 256
/*
 * Most bytes of events one EventBatch carries (at least one event): well
 * under MSG_MAX_SIZE, the largest envelope a node accepts.
 */
#define EVENTS_BATCH_BYTES (128 * 1024)
/* Largest packed event we keep or accept (a template is a few KiB). */
#define EVENTS_EVENT_MAX (64 * 1024)
/* Config key (STORE_TABLE_CONFIG) of a member's last applied sequence. */
#define EVENTS_APPLIED_KEY "events/applied"
/* Config key prefix of a node's settings (NodeSettings, packed). */
#define EVENTS_SETTINGS_PREFIX "settings/"
/* Config key prefix of a node's runtime log levels (LogLevels, packed). */
#define EVENTS_LOG_LEVELS_PREFIX "loglevels/"
/* Config key of the deployment config the last deployment event set. */
#define EVENTS_DEPLOYMENT_KEY "deployment/config"
/* Admin nodes a deployment event names: the primary and a secondary. */
#define EVENTS_ADMIN_MAX 2
/* Longest endpoint an admin node may have (JOIN_ENDPOINT_MAX's room). */
#define EVENTS_ENDPOINT_MAX 300

/*
 * How a node applies events: EVENTS_MEMBER (a PSN) sets users, templates,
 * statuses and settings and checks and skips the replica's changes
 * (cert-issued, node, token and alarm records); EVENTS_REPLICA (the PAN
 * itself and a SAN) applies everything and keeps each event in its own
 * events table under the PAN's key, so that a promoted SAN holds the log.
 */
#define EVENTS_MEMBER  0u
#define EVENTS_REPLICA 1u

/*
 * Config key of the newest CA chain a ca-chain event brought (CaChain,
 * packed): the generation a member must reach (docs/certificates.md,
 * "Replacing the root CA chain").
 */
#define EVENTS_CA_CHAIN_KEY "ca-chain"

/* The log key of seq. */
void events_key(uint64_t seq, uint8_t key[8]);

/* The newest sequence in the log: 0 when empty.  0 or -1. */
int events_last_seq(struct store *st, uint64_t *seq, struct error *err);

/*
 * Check an event's change (names, records, templates), as both ends do
 * before writing it: an admin command's and a PAN's word are checked
 * alike.  0 or -1 with err saying what is wrong.
 */
int events_check(const Iselab__Event *ev, struct error *err);

/*
 * Add to b: the event itself under its key (admin nodes), and its effect
 * on the config table.  ev->seq must be set.  0 or -1.
 */
int events_batch_log(struct store_batch *b, const Iselab__Event *ev,
                     struct error *err);
int events_batch_effect(struct store_batch *b, const Iselab__Event *ev,
                        unsigned flags, struct error *err);
/* Whether ev changes only what the replica keeps (a PSN skips it). */
bool events_replica_only(const Iselab__Event *ev);
/*
 * The deployment config the last deployment event set (*out, free with
 * iselab__deployment_config__free_unpacked): 1, 0 when none yet, -1.
 */
int events_deployment(struct store *st, Iselab__DeploymentConfig **out,
                      struct error *err);

/*
 * Up to max (at most EVENTS_BATCH_MAX) events after seq `after`, in
 * order, and no more than EVENTS_BATCH_BYTES of them (but at least one),
 * unpacked into *out (an array of *n events; free it with events_free()).
 * 0 or -1.
 */
int events_read(struct store *st, uint64_t after, size_t max,
                Iselab__Event ***out, size_t *n, struct error *err);
void events_free(Iselab__Event **evs, size_t n);

/* A member's last applied sequence, 0 before the first.  0 or -1. */
int events_applied(struct store *st, uint64_t *seq, struct error *err);

/*
 * Apply, in one transaction, the events of evs that follow *applied
 * without a gap (evs in any order; those at or before *applied are
 * skipped, as replays are).  *applied is advanced to the last one
 * applied.  flags: EVENTS_MEMBER or EVENTS_REPLICA (which also writes each
 * event into the events table; a certificate it already holds is left as
 * it is).  Returns the number applied, or -1 (nothing applied) when an
 * event is refused by events_check() or the store fails.
 */
int events_apply(struct store *st, Iselab__Event *const *evs, size_t n,
                 unsigned flags, uint64_t *applied, struct error *err);

/* Realtime ms of event seq in the store's events table; 0 if absent. */
int events_time(struct store *st, uint64_t seq, int64_t *time_ms,
                struct error *err);

/*
 * The settings of node hostname as the events left them: 1 with *out
 * filled, 0 when no event set them (the join-time settings hold), -1.
 */
struct events_settings {
	bool session_services;
	bool ca_disabled;
};
int events_settings(struct store *st, const char *hostname,
                    struct events_settings *out, struct error *err);

/*
 * The CaChain the events left in st (EVENTS_CA_CHAIN_KEY): 1 with *out
 * set (free with iselab__ca_chain__free_unpacked), 0 when there is none
 * (the chain of `pan init`, generation 1), -1.
 */
int events_ca_chain(struct store *st, Iselab__CaChain **out,
                    struct error *err);

/*
 * Check a CaChain: generation 2 or more, root self-signed, node_ca
 * issued by root, old_root self-signed, old_with_new the old root's key
 * signed by the new root and new_with_old the new root's key signed by
 * the old root.  0 or -1 with err set.
 */
int events_ca_chain_check(const Iselab__CaChain *c, struct error *err);

/*
 * The runtime log levels of node hostname as the events left them, in
 * levels (-1: not set, log.level holds): 1, 0 when no event set them, -1.
 */
int events_log_levels(struct store *st, const char *hostname,
                      int levels[LOG_CATEGORY_COUNT], struct error *err);

/*
 * Make logdir/LOG_LEVELS_FILE say what the events left for hostname (no
 * file when nothing), so that every process of the node takes it
 * (log.h).  The node's daemon calls it when it opens its store and after
 * applying a LogLevels event for itself.  0 or -1.
 */
int events_log_levels_sync(struct store *st, const char *hostname,
                           const char *logdir, struct error *err);

/* What the event does, for logs: "user-set alice", "template-delete x". */
void events_describe(const Iselab__Event *ev, char *buf, size_t len);

#endif
