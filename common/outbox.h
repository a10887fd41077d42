/*
 * outbox: certificates a PSN issued, on their way to the PAN (DESIGN.md
 * section 3: "Issued certificates flow PSN -> PAN through an outbox that is
 * retried until acknowledged; nothing is lost when the PAN is down").
 *
 * The issuer records a certificate and queues it in the same store
 * transaction (outbox_batch_add()), so a certificate is either issued and
 * queued or neither.  The node's main process sends what is queued, in key
 * order, as OutboxBatch messages over its link to the PAN, one batch at a
 * time (outbox_sender), and deletes exactly the keys the PAN acknowledges.
 * A batch that gets no ack in time is sent again: the PAN stores what it
 * does not have and acknowledges what it already had, so a redelivery
 * stores nothing twice (docs/storage.md "outbox").
 *
 * Key of an entry: issued_at_ms as 8 bytes big-endian, then the serial's
 * bytes (big-endian magnitude), so that key order is issue order.  Value:
 * a packed OutboxItem (proto/envelope.proto) without its key field.
 */
#ifndef ISELAB_OUTBOX_H
#define ISELAB_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "envelope.pb-c.h"
#include "msg.h"
#include "store.h"

struct error;

/* Length of the time part of a key (issued_at_ms, big-endian). */
#define OUTBOX_TIME_LEN 8
/* Longest outbox key: the time, then the longest serial. */
#define OUTBOX_KEY_MAX (OUTBOX_TIME_LEN + STORE_SERIAL_MAX)
/* Most certificates one OutboxBatch carries. */
#define OUTBOX_BATCH_MAX 64
/* Most certificate bytes in one batch: well under MSG_MAX_SIZE. */
#define OUTBOX_BATCH_BYTES_MAX (MSG_MAX_SIZE / 2)
/* A batch without an ack for this long is sent again. */
#define OUTBOX_ACK_TIMEOUT_MS 10000
/* How often the sender looks at an outbox that was empty. */
#define OUTBOX_POLL_MS 1000
/* Retry delay when a batch could not be handed to the link. */
#define OUTBOX_RETRY_MS 200
/*
 * How long an acked item is kept (outbox_acked) to be sent again to a new
 * primary: the PAN acks once its own store holds an item, and a SAN that
 * was behind when the PAN died and is then promoted would otherwise never
 * learn it.  A day covers any replica lag a lab sees.
 */
#define OUTBOX_ACKED_KEEP_MS (24LL * 3600 * 1000)
/* How often the sender drops acked items older than that. */
#define OUTBOX_ACKED_PRUNE_MS 60000
/* Most acked items one prune deletes (one transaction). */
#define OUTBOX_ACKED_PRUNE_MAX 4096
/*
 * Wait after an ack that took nothing (the PAN could not store the batch
 * just now): sending the same batch again at once would only spin.
 */
#define OUTBOX_EMPTY_ACK_RETRY_MS 2000

/*
 * The outbox key of cert issued at issued_at_ms into key (OUTBOX_KEY_MAX
 * bytes), its length in *len.  0, or -1 for a serial that is zero,
 * negative or longer than STORE_SERIAL_MAX bytes.
 */
int outbox_key(int64_t issued_at_ms, X509 *cert, uint8_t key[OUTBOX_KEY_MAX],
               size_t *len, struct error *err);

/*
 * Queue an issued certificate for delivery to the PAN, in the same store
 * transaction that records it as issued: adds store_batch_put_x509(cert,
 * issuer_kid, issued_by, profile, issued_at_ms / 1000) AND an outbox entry
 * keyed by 8-byte big-endian issued_at_ms followed by the serial bytes.
 * 0, or -1 with err set (and the batch marked failed by the store when
 * its add was refused).
 */
int outbox_batch_add(struct store_batch *b, X509 *cert,
                     const uint8_t issuer_kid[STORE_KEY_ID_LEN],
                     const char *profile, const char *issued_by,
                     int64_t issued_at_ms, struct error *err);

/*
 * The first entries of the outbox in key order, at most max (0 or above
 * OUTBOX_BATCH_MAX: OUTBOX_BATCH_MAX) and at most OUTBOX_BATCH_BYTES_MAX
 * bytes of certificates (but always one), each with its key.  *out is
 * NULL when the outbox is empty; else free it with outbox_batch_free().
 * An entry that does not unpack is logged and left out.  0 or -1.
 */
int outbox_batch_next(struct store *st, size_t max, Iselab__OutboxBatch **out,
                      struct error *err);
void outbox_batch_free(Iselab__OutboxBatch *b);

/*
 * Move exactly the acked keys to outbox_acked (kept for a new primary,
 * OUTBOX_ACKED_KEEP_MS), and the items the PAN refused for good to
 * outbox_refused with its reason (so that they no longer block
 * the queue), in one store transaction (a key that is not there any more,
 * an ack that came twice, is not an error).  A key longer than
 * OUTBOX_KEY_MAX or empty is refused with the whole ack.  *refused (when
 * not NULL): the items moved.  0 or -1.
 */
int outbox_ack_apply(struct store *st, const Iselab__OutboxAck *ack,
                     size_t *refused,
                     struct error *err);

/* Entries waiting in the outbox. */
int outbox_count(struct store *st, size_t *count, struct error *err);
/* Entries the PAN refused for good (outbox_refused). */
int outbox_refused_count(struct store *st, size_t *count, struct error *err);
/* Acked entries kept for a new primary (outbox_acked). */
int outbox_acked_count(struct store *st, size_t *count, struct error *err);

/*
 * A new primary (a promotion, docs/san.md): every acked entry still kept
 * goes back into the outbox, in one transaction, so that the new primary
 * gets what the old one acked but had not yet passed on to its replica
 * (it acks what it already holds without storing it twice).  *n: the
 * entries queued again.  0 or -1.
 */
int outbox_requeue_acked(struct store *st, size_t *n, struct error *err);

/*
 * Drop the acked entries acked before cutoff_ms (realtime), at most
 * OUTBOX_ACKED_PRUNE_MAX.  *n: how many.  0 or -1.
 */
int outbox_prune_acked(struct store *st, int64_t cutoff_ms, size_t *n,
                       struct error *err);

/*
 * Hands one envelope to the link to the PAN; 0 when it went out (queued
 * by ZeroMQ), -1 when it could not (no connection up).
 */
typedef int (*outbox_send_fn)(void *ctx, const Iselab__Envelope *env,
                              struct error *err);

/* What the node's main process keeps to send its outbox. */
struct outbox_sender {
	struct store *st;        /* the node's store, with the outbox */
	const char *hostname;    /* our host name: envelope sender */
	int64_t ack_timeout_ms;  /* resend a batch after this */
	uint64_t next_id;        /* request id of the next batch */
	uint64_t inflight_id;    /* request id of the unacked batch; 0: none */
	int64_t inflight_since;  /* monotonic ms it was sent */
	size_t inflight_count;   /* certificates in it */
	int64_t next_look;       /* monotonic ms of the next look; 0: now */
	uint64_t batches_sent;   /* batches handed to the link */
	uint64_t batches_resent; /* of them, sent again after a timeout */
	uint64_t certs_acked;    /* keys deleted on an ack */
	uint64_t certs_refused;  /* moved to outbox_refused on an ack */
	int64_t next_prune;      /* monotonic ms of the next outbox_acked prune */
};

/* ack_timeout_ms 0: OUTBOX_ACK_TIMEOUT_MS.  hostname is not copied. */
void outbox_sender_init(struct outbox_sender *s, struct store *st,
                        const char *hostname, int64_t ack_timeout_ms);

/*
 * Send the next batch when the link is connected, the outbox is not empty
 * and no batch is in flight (or the one in flight got no ack within the
 * timeout).  Returns the ms until it wants to be called again.
 */
int64_t outbox_sender_tick(struct outbox_sender *s, bool connected,
                           int64_t now_mono, outbox_send_fn send, void *ctx);

/*
 * An OutboxAck from the PAN at now_mono: delete the acked keys and set
 * aside the refused ones (outbox_ack_apply()); when it answers the batch
 * in flight, the next one may go at once, or after
 * OUTBOX_EMPTY_ACK_RETRY_MS when the ack took nothing.  0 or -1.
 */
int outbox_sender_ack(struct outbox_sender *s, const Iselab__Envelope *env,
                      int64_t now_mono, struct error *err);

#endif
