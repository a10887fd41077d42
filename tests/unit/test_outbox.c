/*
 * test_outbox: the PSN's outbox (common/outbox.c): entries written with
 * their certificate in one store transaction, keys in issue order,
 * batches in key order and within their limits, acks deleting exactly
 * their keys, and the sender's one-batch-in-flight rule with its resend
 * after a timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "outbox.h"
#include "store.h"
#include "tmpdir.h"
#include "util.h"

static EVP_PKEY *cakey, *leafkey;
static X509 *ca;

/* A certificate with this serial (big-endian bytes), signed by ca. */
static X509 *
make_cert(const uint8_t *serial, size_t slen, bool negative, const char *cn)
{
	X509 *x;
	X509_NAME *n;
	BIGNUM *bn;

	assert_non_null(x = X509_new());
	assert_true(X509_set_version(x, X509_VERSION_3));
	assert_non_null(bn = BN_bin2bn(serial, (int)slen, NULL));
	BN_set_negative(bn, negative);
	assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
	BN_free(bn);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	n = X509_get_subject_name(x);
	assert_true(X509_NAME_add_entry_by_txt(
	    n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0));
	assert_true(X509_set_issuer_name(
	    x, ca != NULL ? X509_get_subject_name(ca) : n));
	assert_true(X509_set_pubkey(x, ca != NULL ? leafkey : cakey));
	assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
	return x;
}

static int
group_setup(void **state)
{
	if (tmpdir_setup(state) != 0)
		return -1;
	if ((cakey = EVP_EC_gen("P-256")) == NULL ||
	    (leafkey = EVP_EC_gen("P-256")) == NULL)
		return -1;
	ca = NULL;
	ca = make_cert((const uint8_t *)"\x01", 1, false, "test CA");
	return 0;
}

static int
group_teardown(void **state)
{
	X509_free(ca);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(leafkey);
	return tmpdir_teardown(state);
}

static struct store *
open_store(const char *name)
{
	char path[256];
	struct store *st = NULL;
	struct error err = {{0}};

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	assert_int_equal(store_open(path, NULL, &st, &err), 0);
	return st;
}

static void
test_key(void **state)
{
	uint8_t key[OUTBOX_KEY_MAX], big[STORE_SERIAL_MAX + 1];
	const uint8_t sn[] = {0x00, 0x81, 0x02};
	struct error err = {{0}};
	size_t len;
	X509 *x;

	(void)state;
	x = make_cert(sn, sizeof(sn), false, "k");
	assert_int_equal(outbox_key(0x0102030405060708LL, x, key, &len, &err),
	                 0);
	/* 8 bytes of time, big-endian, then the serial without its zero. */
	assert_int_equal(len, 8 + 2);
	assert_memory_equal(key, "\x01\x02\x03\x04\x05\x06\x07\x08\x81\x02",
	                    10);
	X509_free(x);

	/* A negative serial and one over 20 bytes are refused. */
	x = make_cert(sn, sizeof(sn), true, "neg");
	assert_int_equal(outbox_key(1, x, key, &len, &err), -1);
	X509_free(x);
	memset(big, 0x7f, sizeof(big));
	x = make_cert(big, sizeof(big), false, "big");
	assert_int_equal(outbox_key(1, x, key, &len, &err), -1);
	assert_non_null(strstr(err.msg, "serial"));
	X509_free(x);
}

/* Queue n certificates issued at times[i] with serials 0x10 + i. */
static void
queue(struct store *st, const int64_t *times, size_t n)
{
	uint8_t kid[STORE_KEY_ID_LEN];
	struct store_batch *b;
	struct error err = {{0}};
	size_t i;

	assert_int_equal(store_issuer_key_id(ca, kid, &err), 0);
	assert_non_null(b = store_batch_new());
	for (i = 0; i < n; i++) {
		uint8_t sn[2] = {0x10, (uint8_t)i};
		X509 *x = make_cert(sn, sizeof(sn), false, "leaf");

		assert_int_equal(outbox_batch_add(b, x, kid, "tls-client",
		                                  "psn1", times[i], &err),
		                 0);
		X509_free(x);
	}
	assert_int_equal(store_apply(st, b, &err), STORE_OK);
	store_batch_free(b);
}

static void
test_add_and_order(void **state)
{
	/* Added out of order: the batch comes in issue-time order. */
	const int64_t times[] = {3000, 1000, 2000, 1000};
	struct store *st = open_store("order");
	Iselab__OutboxBatch *b = NULL;
	struct store_cert *sc = NULL;
	struct error err = {{0}};
	uint8_t kid[STORE_KEY_ID_LEN];
	size_t n, i;

	(void)state;
	queue(st, times, 4);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 4);
	/* The certificate is recorded as issued, in the same transaction. */
	assert_int_equal(store_issuer_key_id(ca, kid, &err), 0);
	assert_int_equal(
	    store_get_cert(st, kid, (const uint8_t *)"\x10\x01", 2, &sc, &err),
	    STORE_OK);
	assert_string_equal(sc->issued_by, "psn1");
	assert_string_equal(sc->profile, "tls-client");
	assert_int_equal(sc->issued_at, 1);
	store_cert_free(sc);

	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	assert_non_null(b);
	assert_int_equal(b->n_items, 4);
	/* 1000/serial 1001, 1000/serial 1003, 2000, 3000. */
	assert_int_equal(b->items[0]->issued_at_ms, 1000);
	assert_int_equal(b->items[0]->key.data[9], 0x01);
	assert_int_equal(b->items[1]->issued_at_ms, 1000);
	assert_int_equal(b->items[1]->key.data[9], 0x03);
	assert_int_equal(b->items[2]->issued_at_ms, 2000);
	assert_int_equal(b->items[3]->issued_at_ms, 3000);
	for (i = 1; i < 4; i++)
		assert_true(memcmp(b->items[i - 1]->key.data,
		                   b->items[i]->key.data, 10) < 0);
	assert_string_equal(b->items[3]->profile, "tls-client");
	assert_string_equal(b->items[3]->issued_by, "psn1");
	assert_true(b->items[3]->cert.len > 0);
	outbox_batch_free(b);

	/* A limit: the first two only. */
	assert_int_equal(outbox_batch_next(st, 2, &b, &err), 0);
	assert_int_equal(b->n_items, 2);
	assert_int_equal(b->items[1]->key.data[9], 0x03);
	outbox_batch_free(b);
	store_close(st);
}

/*
 * An acked item is kept (outbox_acked) until a new primary: then it goes
 * again, once; a prune drops what was acked before its cutoff.
 */
static void
test_acked_kept_for_a_new_primary(void **state)
{
	const int64_t times[] = {10, 20, 30};
	struct store *st = open_store("acked");
	Iselab__OutboxBatch *b = NULL;
	Iselab__OutboxAck ack = ISELAB__OUTBOX_ACK__INIT;
	ProtobufCBinaryData keys[2];
	struct error err = {{0}};
	size_t n;

	(void)state;
	queue(st, times, 3);
	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	keys[0] = b->items[0]->key;
	keys[1] = b->items[1]->key;
	ack.n_keys = 2;
	ack.keys = keys;
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), 0);
	/* Twice: kept once. */
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), 0);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(outbox_acked_count(st, &n, &err), 0);
	assert_int_equal(n, 2);
	/* A new primary: both go again, before the one never acked. */
	assert_int_equal(outbox_requeue_acked(st, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_int_equal(outbox_acked_count(st, &n, &err), 0);
	assert_int_equal(n, 0);
	outbox_batch_free(b);
	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	assert_int_equal(b->n_items, 3);
	assert_int_equal(b->items[0]->issued_at_ms, 10);
	assert_int_equal(b->items[1]->issued_at_ms, 20);
	/* Nothing more the second time. */
	assert_int_equal(outbox_requeue_acked(st, &n, &err), 0);
	assert_int_equal(n, 0);

	/* Acked again; a prune before they were acked keeps them, after not. */
	keys[0] = b->items[0]->key;
	keys[1] = b->items[1]->key;
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), 0);
	assert_int_equal(outbox_prune_acked(st, 1, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(outbox_prune_acked(st, time_now_ms() + 1000, &n,
	                                    &err),
	                 0);
	assert_int_equal(n, 2);
	assert_int_equal(outbox_acked_count(st, &n, &err), 0);
	assert_int_equal(n, 0);
	outbox_batch_free(b);
	store_close(st);
}

/*
 * An item the PAN refuses for good leaves the queue for outbox_refused,
 * with the reason and the item as it was, so that what follows it is sent;
 * an acked one is deleted in the same transaction.
 */
static void
test_refused(void **state)
{
	const int64_t times[] = {10, 20, 30};
	struct store *st = open_store("refused");
	Iselab__OutboxBatch *b = NULL, *after = NULL;
	Iselab__OutboxAck ack = ISELAB__OUTBOX_ACK__INIT;
	Iselab__OutboxRefusal r = ISELAB__OUTBOX_REFUSAL__INIT, *rp = &r, *kept;
	ProtobufCBinaryData keys[1];
	struct error err = {{0}};
	uint8_t *val;
	size_t n, vlen, moved;

	(void)state;
	queue(st, times, 3);
	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	keys[0] = b->items[1]->key;
	ack.n_keys = 1;
	ack.keys = keys;
	r.key = b->items[0]->key;
	r.reason = "not issued by a CA certificate of psn1";
	ack.n_refused = 1;
	ack.refused = &rp;
	assert_int_equal(outbox_ack_apply(st, &ack, &moved, &err), 0);
	assert_int_equal(moved, 1);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(outbox_refused_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	/* The head of the queue is now the third item. */
	assert_int_equal(outbox_batch_next(st, 0, &after, &err), 0);
	assert_int_equal(after->n_items, 1);
	assert_int_equal(after->items[0]->issued_at_ms, 30);
	outbox_batch_free(after);
	/* Kept whole: the reason and the certificate. */
	assert_int_equal(store_kv_get(st, STORE_TABLE_OUTBOX_REFUSED,
	                              r.key.data, r.key.len, &val, &vlen,
	                              &err),
	                 STORE_OK);
	kept = iselab__outbox_refusal__unpack(NULL, vlen, val);
	free(val);
	assert_non_null(kept);
	assert_string_equal(kept->reason, r.reason);
	assert_true(kept->item.len > 0);
	iselab__outbox_refusal__free_unpacked(kept, NULL);
	/* The same answer again moves nothing more. */
	assert_int_equal(outbox_ack_apply(st, &ack, &moved, &err), 0);
	assert_int_equal(moved, 0);
	assert_int_equal(outbox_refused_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	/* A refusal without a key refuses the whole answer. */
	r.key.len = 0;
	ack.n_keys = 0;
	assert_int_equal(outbox_ack_apply(st, &ack, &moved, &err), -1);
	outbox_batch_free(b);
	store_close(st);
}

static void
test_add_refused(void **state)
{
	struct store *st = open_store("refused");
	uint8_t kid[STORE_KEY_ID_LEN];
	const uint8_t sn[] = {0x42};
	struct store_batch *b;
	struct error err = {{0}};
	X509 *x, *neg;
	size_t n;

	(void)state;
	assert_int_equal(store_issuer_key_id(ca, kid, &err), 0);
	assert_non_null(b = store_batch_new());
	x = make_cert(sn, sizeof(sn), false, "x");
	neg = make_cert(sn, sizeof(sn), true, "neg");
	assert_int_equal(outbox_batch_add(b, NULL, kid, "p", "psn1", 1, &err),
	                 -1);
	assert_int_equal(outbox_batch_add(b, x, kid, NULL, "psn1", 1, &err),
	                 -1);
	assert_int_equal(outbox_batch_add(b, x, kid, "p", "psn1", -1, &err),
	                 -1);
	assert_int_equal(outbox_batch_add(b, neg, kid, "p", "psn1", 1, &err),
	                 -1);
	/* The same certificate twice: the store refuses the whole batch. */
	assert_int_equal(outbox_batch_add(b, x, kid, "p", "psn1", 5, &err), 0);
	assert_int_equal(outbox_batch_add(b, x, kid, "p", "psn1", 5, &err), 0);
	assert_int_not_equal(store_apply(st, b, &err), STORE_OK);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 0);
	store_batch_free(b);
	X509_free(x);
	X509_free(neg);
	store_close(st);
}

static void
test_ack(void **state)
{
	const int64_t times[] = {10, 20, 30};
	struct store *st = open_store("ack");
	Iselab__OutboxBatch *b = NULL;
	Iselab__OutboxAck ack = ISELAB__OUTBOX_ACK__INIT;
	ProtobufCBinaryData keys[2];
	uint8_t badkey[OUTBOX_KEY_MAX + 1];
	struct error err = {{0}};
	size_t n;

	(void)state;
	queue(st, times, 3);
	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	/* Ack the first and the third: only the second stays. */
	keys[0] = b->items[0]->key;
	keys[1] = b->items[2]->key;
	ack.n_keys = 2;
	ack.keys = keys;
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), 0);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	/* The same ack again is harmless. */
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), 0);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	outbox_batch_free(b);
	assert_int_equal(outbox_batch_next(st, 0, &b, &err), 0);
	assert_int_equal(b->n_items, 1);
	assert_int_equal(b->items[0]->issued_at_ms, 20);

	/* A key of the wrong size refuses the whole ack: nothing deleted. */
	memset(badkey, 0, sizeof(badkey));
	keys[0] = b->items[0]->key;
	keys[1].data = badkey;
	keys[1].len = sizeof(badkey);
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), -1);
	keys[1].len = 3;
	assert_int_equal(outbox_ack_apply(st, &ack, NULL, &err), -1);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	outbox_batch_free(b);
	store_close(st);
}

/* What the fake link saw. */
struct fake_link {
	int up;            /* 0: sends fail */
	int sent;          /* batches handed over */
	uint64_t last_id;  /* request id of the last */
	size_t last_items; /* its size */
	uint8_t last_key[OUTBOX_KEY_MAX];
	size_t last_klen;
};

static int
fake_send(void *ctx, const Iselab__Envelope *env, struct error *err)
{
	struct fake_link *f = ctx;

	if (!f->up) {
		error_set(err, "no connection");
		return -1;
	}
	assert_int_equal(env->body_case, ISELAB__ENVELOPE__BODY_OUTBOX_BATCH);
	assert_string_equal(env->sender, "psn1");
	f->sent++;
	f->last_id = env->request_id;
	f->last_items = env->outbox_batch->n_items;
	f->last_klen = env->outbox_batch->items[0]->key.len;
	memcpy(f->last_key, env->outbox_batch->items[0]->key.data,
	       f->last_klen);
	return 0;
}

static void
ack_env(Iselab__Envelope *env, Iselab__OutboxAck *ack, ProtobufCBinaryData *key,
        uint64_t id, struct fake_link *f)
{
	msg_init(env, id, "pan1");
	iselab__outbox_ack__init(ack);
	key->data = f->last_key;
	key->len = f->last_klen;
	ack->n_keys = 1;
	ack->keys = key;
	env->body_case = ISELAB__ENVELOPE__BODY_OUTBOX_ACK;
	env->outbox_ack = ack;
}

static void
test_sender(void **state)
{
	const int64_t times[] = {1, 2};
	struct store *st = open_store("sender");
	struct outbox_sender s;
	struct fake_link f;
	Iselab__Envelope env;
	Iselab__OutboxAck ack;
	ProtobufCBinaryData key;
	struct error err = {{0}};
	int64_t now = 1000000, wait;
	size_t n;

	(void)state;
	memset(&f, 0, sizeof(f));
	outbox_sender_init(&s, st, "psn1", 5000);
	/* Empty outbox: nothing sent, look again later. */
	wait = outbox_sender_tick(&s, true, now, fake_send, &f);
	assert_int_equal(f.sent, 0);
	assert_int_equal(wait, OUTBOX_POLL_MS);

	queue(st, times, 2);
	/* Not connected: nothing goes. */
	now += OUTBOX_POLL_MS;
	outbox_sender_tick(&s, false, now, fake_send, &f);
	assert_int_equal(f.sent, 0);
	/* Connected but the send fails: retried soon, nothing in flight. */
	wait = outbox_sender_tick(&s, true, now, fake_send, &f);
	assert_int_equal(wait, OUTBOX_RETRY_MS);
	assert_int_equal(s.inflight_id, 0);
	f.up = 1;
	now += OUTBOX_RETRY_MS;
	outbox_sender_tick(&s, true, now, fake_send, &f);
	assert_int_equal(f.sent, 1);
	assert_int_equal(f.last_items, 2);
	/* In flight: no second batch before the ack or the timeout. */
	outbox_sender_tick(&s, true, now + 4999, fake_send, &f);
	assert_int_equal(f.sent, 1);
	/* No ack within the timeout: the same entries go again. */
	now += 5000;
	outbox_sender_tick(&s, true, now, fake_send, &f);
	assert_int_equal(f.sent, 2);
	assert_int_equal(s.batches_resent, 1);
	assert_int_equal(f.last_items, 2);

	/* An ack of the first key: deleted, and the next batch goes at once. */
	ack_env(&env, &ack, &key, f.last_id, &f);
	assert_int_equal(outbox_sender_ack(&s, &env, now, &err), 0);
	assert_int_equal(s.inflight_id, 0);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 1);
	outbox_sender_tick(&s, true, now, fake_send, &f);
	assert_int_equal(f.sent, 3);
	assert_int_equal(f.last_items, 1);
	/* A late ack of an older batch deletes its keys, keeps the flight. */
	ack_env(&env, &ack, &key, f.last_id - 1, &f);
	assert_int_equal(outbox_sender_ack(&s, &env, now, &err), 0);
	assert_int_not_equal(s.inflight_id, 0);
	assert_int_equal(outbox_count(st, &n, &err), 0);
	assert_int_equal(n, 0);
	/*
	 * An ack of the batch in flight that takes nothing (the PAN could not
	 * store it just now): the batch goes again, but not at once.
	 */
	ack.n_keys = 0;
	env.request_id = s.inflight_id;
	assert_int_equal(outbox_sender_ack(&s, &env, now, &err), 0);
	assert_int_equal(s.inflight_id, 0);
	assert_int_equal(outbox_sender_tick(&s, true, now, fake_send, &f),
	                 OUTBOX_EMPTY_ACK_RETRY_MS);
	/* Not an ack: refused. */
	env.body_case = ISELAB__ENVELOPE__BODY_HEARTBEAT_ACK;
	assert_int_equal(outbox_sender_ack(&s, &env, now, &err), -1);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key),
	    cmocka_unit_test(test_add_and_order),
	    cmocka_unit_test(test_add_refused),
	    cmocka_unit_test(test_ack),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_acked_kept_for_a_new_primary),
	    cmocka_unit_test(test_sender),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
