/*
 * outbox: the PSN's queue of issued certificates for the PAN (outbox.h).
 *
 * The queue is a store table, so it survives a restart of the node and is
 * written in the transaction that records the certificate: there is no
 * moment when a certificate is issued but not queued.  The sender keeps
 * one batch in flight at a time; that keeps the PAN's work per message
 * bounded and makes "what was acked" a plain list of keys.
 */
#include "outbox.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>

#include "log.h"
#include "util.h"

int
outbox_key(int64_t issued_at_ms, X509 *cert, uint8_t key[OUTBOX_KEY_MAX],
           size_t *len, struct error *err)
{
	BIGNUM *bn;
	uint64_t t = (uint64_t)issued_at_ms;
	int i, n;

	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL)) ==
	    NULL) {
		log_crypto(LOG_MESSAGING, err, "ASN1_INTEGER_to_BN",
		           "outbox key");
		return -1;
	}
	n = BN_num_bytes(bn);
	if (BN_is_negative(bn) || n <= 0 || n > STORE_SERIAL_MAX) {
		error_set(err,
		          "outbox: the serial must be positive and at most "
		          "%d bytes",
		          STORE_SERIAL_MAX);
		BN_free(bn);
		return -1;
	}
	for (i = OUTBOX_TIME_LEN - 1; i >= 0; i--) {
		key[i] = (uint8_t)(t & 0xff);
		t >>= 8;
	}
	*len = OUTBOX_TIME_LEN + (size_t)BN_bn2bin(bn, key + OUTBOX_TIME_LEN);
	BN_free(bn);
	return 0;
}

int
outbox_batch_add(struct store_batch *b, X509 *cert,
                 const uint8_t issuer_kid[STORE_KEY_ID_LEN],
                 const char *profile, const char *issued_by,
                 int64_t issued_at_ms, struct error *err)
{
	Iselab__OutboxItem item = ISELAB__OUTBOX_ITEM__INIT;
	uint8_t key[OUTBOX_KEY_MAX], *der = NULL, *val = NULL;
	size_t klen, vlen;
	int n, rc = -1;

	if (b == NULL || cert == NULL || profile == NULL || issued_by == NULL ||
	    issued_at_ms < 0) {
		error_set(err, "outbox: missing argument");
		return -1;
	}
	if (outbox_key(issued_at_ms, cert, key, &klen, err) == -1)
		return -1;
	if ((n = i2d_X509(cert, &der)) <= 0) {
		log_crypto(LOG_MESSAGING, err, "i2d_X509",
		           "outbox certificate");
		return -1;
	}
	item.cert.data = der;
	item.cert.len = (size_t)n;
	item.profile = (char *)profile;
	item.issued_by = (char *)issued_by;
	item.issued_at_ms = issued_at_ms;
	vlen = iselab__outbox_item__get_packed_size(&item);
	if ((val = malloc(vlen > 0 ? vlen : 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	iselab__outbox_item__pack(&item, val);
	if (store_batch_put_x509(b, cert, issuer_kid, issued_by, profile,
	                         issued_at_ms / 1000) == -1) {
		error_set(err, "outbox: the store refused the certificate "
		               "(serial, subject or key id)");
		goto out;
	}
	if (store_batch_kv_put(b, STORE_TABLE_OUTBOX, key, klen, val, vlen) ==
	    -1) {
		error_set(err, "outbox: the store refused the entry");
		goto out;
	}
	rc = 0;
out:
	OPENSSL_free(der);
	free(val);
	return rc;
}

void
outbox_batch_free(Iselab__OutboxBatch *b)
{
	size_t i;

	if (b == NULL)
		return;
	for (i = 0; i < b->n_items; i++)
		iselab__outbox_item__free_unpacked(b->items[i], NULL);
	free(b->items);
	free(b);
}

/* What outbox_batch_next() collects in its read snapshot. */
struct next_ctx {
	Iselab__OutboxBatch *b; /* items so far */
	size_t max;             /* most items */
	size_t bytes;           /* certificate bytes so far */
	int failed;             /* out of memory */
};

static int
next_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct next_ctx *c = ctx;
	Iselab__OutboxItem *item;
	char hex[2 * OUTBOX_KEY_MAX + 1];

	if (c->b->n_items >= c->max)
		return 1;
	item = iselab__outbox_item__unpack(NULL, vlen, val);
	if (item == NULL || klen > OUTBOX_KEY_MAX || klen <= OUTBOX_TIME_LEN) {
		hex_encode(key, klen < OUTBOX_KEY_MAX ? klen : OUTBOX_KEY_MAX,
		           hex);
		log_error(LOG_MESSAGING, "outbox entry %s is corrupt; left out",
		          hex);
		if (item != NULL)
			iselab__outbox_item__free_unpacked(item, NULL);
		return 0;
	}
	if (c->b->n_items > 0 &&
	    c->bytes + item->cert.len > OUTBOX_BATCH_BYTES_MAX) {
		iselab__outbox_item__free_unpacked(item, NULL);
		return 1;
	}
	/* The stored value has no key: the table's key is the key. */
	if ((item->key.data = malloc(klen)) == NULL) {
		iselab__outbox_item__free_unpacked(item, NULL);
		c->failed = 1;
		return 1;
	}
	memcpy(item->key.data, key, klen);
	item->key.len = klen;
	c->bytes += item->cert.len;
	c->b->items[c->b->n_items++] = item;
	return 0;
}

int
outbox_batch_next(struct store *st, size_t max, Iselab__OutboxBatch **out,
                  struct error *err)
{
	struct next_ctx c;

	*out = NULL;
	if (max == 0 || max > OUTBOX_BATCH_MAX)
		max = OUTBOX_BATCH_MAX;
	memset(&c, 0, sizeof(c));
	c.max = max;
	if ((c.b = calloc(1, sizeof(*c.b))) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__outbox_batch__init(c.b);
	if ((c.b->items = calloc(max, sizeof(*c.b->items))) == NULL) {
		free(c.b);
		error_set(err, "out of memory");
		return -1;
	}
	if (store_kv_foreach(st, STORE_TABLE_OUTBOX, next_fn, &c, err) == -1) {
		outbox_batch_free(c.b);
		return -1;
	}
	if (c.failed) {
		outbox_batch_free(c.b);
		error_set(err, "out of memory");
		return -1;
	}
	if (c.b->n_items == 0) {
		outbox_batch_free(c.b);
		return 0;
	}
	*out = c.b;
	return 0;
}

static bool
outbox_key_ok(const ProtobufCBinaryData *k)
{
	return k->len > OUTBOX_TIME_LEN && k->len <= OUTBOX_KEY_MAX;
}

/*
 * Move one refused item from the outbox to outbox_refused in b, with the
 * PAN's reason: 1 when moved, 0 when it is not in the outbox (an earlier
 * answer moved it), -1.
 */
static int
refusal_move(struct store *st, struct store_batch *b,
             const Iselab__OutboxRefusal *r, struct error *err)
{
	Iselab__OutboxRefusal keep = ISELAB__OUTBOX_REFUSAL__INIT;
	uint8_t *val = NULL, *buf = NULL;
	size_t vlen, len;
	int rc;

	rc = store_kv_get(st, STORE_TABLE_OUTBOX, r->key.data, r->key.len, &val,
	                  &vlen, err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	keep.key = r->key;
	keep.reason = r->reason != NULL ? r->reason : "";
	keep.item.data = val;
	keep.item.len = vlen;
	len = iselab__outbox_refusal__get_packed_size(&keep);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		error_set(err, "out of memory");
		free(val);
		return -1;
	}
	iselab__outbox_refusal__pack(&keep, buf);
	rc = store_batch_kv_del(b, STORE_TABLE_OUTBOX, r->key.data,
	                        r->key.len) == -1 ||
	             store_batch_kv_put(b, STORE_TABLE_OUTBOX_REFUSED,
	                                r->key.data, r->key.len, buf,
	                                len) == -1
	         ? -1
	         : 1;
	if (rc == -1)
		error_set(err, "outbox ack: the store refused a refused item");
	free(buf);
	free(val);
	return rc;
}

/* Length of an outbox_acked key: acked_at_ms, then the outbox key. */
#define ACKED_KEY_MAX (OUTBOX_TIME_LEN + OUTBOX_KEY_MAX)

/*
 * Keep the acked item of key (still in the outbox) in outbox_acked under
 * now || key, in b; an item already gone (an ack twice) is not an error.
 */
static int
acked_keep(struct store *st, struct store_batch *b,
           const ProtobufCBinaryData *key, int64_t now, struct error *err)
{
	uint8_t k[ACKED_KEY_MAX], *val = NULL;
	size_t vlen;
	int rc, i;

	rc = store_kv_get(st, STORE_TABLE_OUTBOX, key->data, key->len, &val,
	                  &vlen, err);
	if (rc == STORE_NOT_FOUND)
		return 0;
	if (rc != STORE_OK)
		return -1;
	for (i = 0; i < OUTBOX_TIME_LEN; i++)
		k[i] = (uint8_t)((uint64_t)now >> (8 * (OUTBOX_TIME_LEN - 1 - i)));
	memcpy(k + OUTBOX_TIME_LEN, key->data, key->len);
	rc = store_batch_kv_put(b, STORE_TABLE_OUTBOX_ACKED, k,
	                        OUTBOX_TIME_LEN + key->len, val, vlen);
	free(val);
	if (rc == -1)
		error_set(err, "outbox ack: the store refused to keep an item");
	return rc;
}

int
outbox_ack_apply(struct store *st, const Iselab__OutboxAck *ack,
                 size_t *refused, struct error *err)
{
	struct store_batch *b;
	int64_t now = time_now_ms();
	size_t i, moved = 0;
	int rc = -1, m;

	if (refused != NULL)
		*refused = 0;
	if (ack->n_keys == 0 && ack->n_refused == 0)
		return 0;
	if ((b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	for (i = 0; i < ack->n_keys; i++) {
		if (!outbox_key_ok(&ack->keys[i])) {
			error_set(err,
			          "outbox ack: key %zu has %zu bytes, not an "
			          "outbox key",
			          i, ack->keys[i].len);
			goto out;
		}
		if (acked_keep(st, b, &ack->keys[i], now, err) == -1)
			goto out;
		if (store_batch_kv_del(b, STORE_TABLE_OUTBOX, ack->keys[i].data,
		                       ack->keys[i].len) == -1) {
			error_set(err, "outbox ack: the store refused key %zu",
			          i);
			goto out;
		}
	}
	for (i = 0; i < ack->n_refused; i++) {
		const Iselab__OutboxRefusal *r = ack->refused[i];

		if (r == NULL || !outbox_key_ok(&r->key)) {
			error_set(err, "outbox ack: refusal %zu without an "
			               "outbox key",
			          i);
			goto out;
		}
		if ((m = refusal_move(st, b, r, err)) == -1)
			goto out;
		moved += (size_t)m;
	}
	if (store_apply(st, b, err) != STORE_OK)
		goto out;
	/* Said once the move is durable, one line an item. */
	for (i = 0; i < ack->n_refused; i++)
		log_error(LOG_MESSAGING,
		          "outbox: the PAN refuses a certificate for good (%s); "
		          "it is set aside in outbox_refused and not sent "
		          "again",
		          ack->refused[i]->reason != NULL
		              ? ack->refused[i]->reason
		              : "no reason given");
	if (refused != NULL)
		*refused = moved;
	rc = 0;
out:
	store_batch_free(b);
	return rc;
}

static int
count_fn(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(size_t *)ctx)++;
	return 0;
}

int
outbox_count(struct store *st, size_t *count, struct error *err)
{
	*count = 0;
	return store_kv_foreach(st, STORE_TABLE_OUTBOX, count_fn, count, err) ==
	               -1
	           ? -1
	           : 0;
}

int
outbox_acked_count(struct store *st, size_t *count, struct error *err)
{
	*count = 0;
	return store_kv_foreach(st, STORE_TABLE_OUTBOX_ACKED, count_fn, count,
	                        err) == -1
	           ? -1
	           : 0;
}

/* The acked entries a walk collects: their keys, and values if wanted. */
struct acked_walk {
	struct store_batch *b; /* the moves or deletes */
	bool requeue;          /* true: back into the outbox */
	int64_t cutoff;        /* prune: entries acked before this */
	size_t n, max;
};

static int
acked_fn(void *ctx, const void *key, size_t klen, const void *val,
         size_t vlen)
{
	struct acked_walk *w = ctx;
	const uint8_t *k = key;
	int64_t at = 0;
	int i;

	if (klen <= OUTBOX_TIME_LEN || klen > ACKED_KEY_MAX)
		return 0; /* not ours: left alone */
	if (w->n >= w->max)
		return 1;
	for (i = 0; i < OUTBOX_TIME_LEN; i++)
		at = (int64_t)(((uint64_t)at << 8) | k[i]);
	/* Keys are in acked order: the first young one ends a prune. */
	if (!w->requeue && at >= w->cutoff)
		return 1;
	if (store_batch_kv_del(w->b, STORE_TABLE_OUTBOX_ACKED, key, klen) ==
	        -1 ||
	    (w->requeue &&
	     store_batch_kv_put(w->b, STORE_TABLE_OUTBOX, k + OUTBOX_TIME_LEN,
	                        klen - OUTBOX_TIME_LEN, val, vlen) == -1))
		return -1;
	w->n++;
	return 0;
}

/* One walk over outbox_acked, its changes applied in one transaction. */
static int
acked_walk(struct store *st, struct acked_walk *w, size_t *n,
           struct error *err)
{
	int rc = -1;

	*n = 0;
	if ((w->b = store_batch_new()) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	if (store_kv_foreach(st, STORE_TABLE_OUTBOX_ACKED, acked_fn, w, err) <
	    0) {
		if (err->msg[0] == '\0')
			error_set(err, "outbox_acked: the store refused a "
			               "change");
		goto out;
	}
	if (w->n > 0 && store_apply(st, w->b, err) != STORE_OK)
		goto out;
	*n = w->n;
	rc = 0;
out:
	store_batch_free(w->b);
	return rc;
}

int
outbox_requeue_acked(struct store *st, size_t *n, struct error *err)
{
	struct acked_walk w = {.requeue = true, .max = SIZE_MAX};

	return acked_walk(st, &w, n, err);
}

int
outbox_prune_acked(struct store *st, int64_t cutoff_ms, size_t *n,
                   struct error *err)
{
	struct acked_walk w = {.cutoff = cutoff_ms,
	                       .max = OUTBOX_ACKED_PRUNE_MAX};

	return acked_walk(st, &w, n, err);
}

int
outbox_refused_count(struct store *st, size_t *count, struct error *err)
{
	*count = 0;
	return store_kv_foreach(st, STORE_TABLE_OUTBOX_REFUSED, count_fn, count,
	                        err) == -1
	           ? -1
	           : 0;
}

void
outbox_sender_init(struct outbox_sender *s, struct store *st,
                   const char *hostname, int64_t ack_timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->st = st;
	s->hostname = hostname;
	s->ack_timeout_ms =
	    ack_timeout_ms > 0 ? ack_timeout_ms : OUTBOX_ACK_TIMEOUT_MS;
	s->next_id = 1;
}

int64_t
outbox_sender_tick(struct outbox_sender *s, bool connected, int64_t now,
                   outbox_send_fn send, void *ctx)
{
	Iselab__Envelope env;
	Iselab__OutboxBatch *b = NULL;
	struct error err = {{0}};
	int64_t left;

	if (s->inflight_id != 0) {
		left = s->inflight_since + s->ack_timeout_ms - now;
		if (left > 0)
			return left;
		log_warn(LOG_MESSAGING,
		         "no ack from the PAN for outbox batch %" PRIu64
		         " (%zu certificates) after %" PRId64
		         " ms; it goes again",
		         s->inflight_id, s->inflight_count, s->ack_timeout_ms);
		s->inflight_id = 0;
		s->batches_resent++;
		s->next_look = 0;
	}
	if (now >= s->next_prune) {
		size_t pruned;

		s->next_prune = now + OUTBOX_ACKED_PRUNE_MS;
		if (outbox_prune_acked(s->st, time_now_ms() - OUTBOX_ACKED_KEEP_MS,
		                       &pruned, &err) == -1)
			log_error(LOG_MESSAGING, "outbox: %s", err.msg);
		else if (pruned > 0)
			log_info(LOG_MESSAGING,
			         "outbox: %zu acked certificates older than "
			         "a day no longer kept",
			         pruned);
	}
	if (!connected)
		return OUTBOX_POLL_MS;
	if (s->next_look > now)
		return s->next_look - now;
	if (outbox_batch_next(s->st, OUTBOX_BATCH_MAX, &b, &err) == -1) {
		log_error(LOG_MESSAGING, "outbox: %s", err.msg);
		s->next_look = now + OUTBOX_POLL_MS;
		return OUTBOX_POLL_MS;
	}
	if (b == NULL) {
		s->next_look = now + OUTBOX_POLL_MS;
		return OUTBOX_POLL_MS;
	}
	msg_init(&env, s->next_id, s->hostname);
	env.body_case = ISELAB__ENVELOPE__BODY_OUTBOX_BATCH;
	env.outbox_batch = b;
	if (send(ctx, &env, &err) == -1) {
		log_debug(LOG_MESSAGING, "outbox batch not sent: %s", err.msg);
		outbox_batch_free(b);
		s->next_look = now + OUTBOX_RETRY_MS;
		return OUTBOX_RETRY_MS;
	}
	s->inflight_id = s->next_id++;
	s->inflight_since = now;
	s->inflight_count = b->n_items;
	s->batches_sent++;
	log_info(LOG_MESSAGING,
	         "outbox batch %" PRIu64 " to the PAN: %zu certificates",
	         s->inflight_id, b->n_items);
	outbox_batch_free(b);
	return s->ack_timeout_ms;
}

int
outbox_sender_ack(struct outbox_sender *s, const Iselab__Envelope *env,
                  int64_t now, struct error *err)
{
	size_t refused;

	if (env->body_case != ISELAB__ENVELOPE__BODY_OUTBOX_ACK) {
		error_set(err, "not an outbox ack");
		return -1;
	}
	if (outbox_ack_apply(s->st, env->outbox_ack, &refused, err) == -1)
		return -1;
	s->certs_acked += env->outbox_ack->n_keys;
	s->certs_refused += refused;
	log_info(LOG_MESSAGING,
	         "outbox batch %" PRIu64 ": the PAN acked %zu certificates",
	         env->request_id, env->outbox_ack->n_keys);
	/* A late ack of an earlier batch deletes its keys all the same. */
	if (env->request_id == s->inflight_id) {
		s->inflight_id = 0;
		s->next_look = env->outbox_ack->n_keys == 0 && refused == 0
		                   ? now + OUTBOX_EMPTY_ACK_RETRY_MS
		                   : 0;
	}
	return 0;
}
