/*
 * Unit tests for common/events.c: the event log on an admin node, and
 * applying it on a member, in order, once, all or nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enroll.h"
#include "events.h"
#include "registry.pb-c.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"

/* A record enroll_user_hash() would make (the hash itself is not checked). */
#define RECORD                                                                \
	"pbkdf2-sha256$100000$00112233445566778899aabbccddeeff$"              \
	"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

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

/* Events built on the stack; texts point at static strings. */
static Iselab__UserSet us[8];
static Iselab__TemplateSet ts[8];
static Iselab__Event evs[8];

static Iselab__Event *
user_set(size_t i, uint64_t seq, const char *name)
{
	iselab__event__init(&evs[i]);
	iselab__user_set__init(&us[i]);
	us[i].name = (char *)name;
	us[i].record = RECORD;
	evs[i].seq = seq;
	evs[i].change_case = ISELAB__EVENT__CHANGE_USER_SET;
	evs[i].user_set = &us[i];
	return &evs[i];
}

static Iselab__Event *
template_set(size_t i, uint64_t seq, const char *label, const char *text)
{
	iselab__event__init(&evs[i]);
	iselab__template_set__init(&ts[i]);
	ts[i].label = (char *)label;
	ts[i].text = (char *)text;
	evs[i].seq = seq;
	evs[i].change_case = ISELAB__EVENT__CHANGE_TEMPLATE_SET;
	evs[i].template_set = &ts[i];
	return &evs[i];
}

static Iselab__Event *
user_delete(size_t i, uint64_t seq, const char *name)
{
	iselab__event__init(&evs[i]);
	evs[i].seq = seq;
	evs[i].change_case = ISELAB__EVENT__CHANGE_USER_DELETE;
	evs[i].user_delete = (char *)name;
	return &evs[i];
}

static int
config_has(struct store *st, const char *key)
{
	uint8_t *val = NULL;
	size_t vlen;
	int rc = store_kv_get(st, STORE_TABLE_CONFIG, key, strlen(key), &val,
	                      &vlen, NULL);

	free(val);
	return rc == STORE_OK;
}

/* The PAN side: log + effect in one batch, read back in ranges. */
static void
test_log_and_read(void **state)
{
	struct store *st = open_store("pan");
	struct store_batch *b;
	struct error err = {{0}};
	Iselab__Event **out = NULL;
	uint64_t last;
	size_t n, i;
	char name[16];

	(void)state;
	assert_int_equal(events_last_seq(st, &last, &err), 0);
	assert_int_equal(last, 0);
	for (i = 1; i <= 300; i++) {
		snprintf(name, sizeof(name), "user%zu", i);
		b = store_batch_new();
		assert_int_equal(events_batch_log(b, user_set(0, i, name), &err),
		                 0);
		assert_int_equal(events_batch_effect(b, &evs[0], EVENTS_MEMBER, &err), 0);
		assert_int_equal(store_apply(st, b, &err), STORE_OK);
		store_batch_free(b);
	}
	assert_int_equal(events_last_seq(st, &last, &err), 0);
	assert_int_equal(last, 300);
	assert_true(config_has(st, "user/user300"));
	/* A batch stops at EVENTS_BATCH_MAX, in order, from after+1. */
	assert_int_equal(events_read(st, 10, 0, &out, &n, &err), 0);
	assert_int_equal(n, EVENTS_BATCH_MAX);
	for (i = 0; i < n; i++)
		assert_int_equal(out[i]->seq, 11 + i);
	events_free(out, n);
	assert_int_equal(events_read(st, 290, 5, &out, &n, &err), 0);
	assert_int_equal(n, 5);
	assert_string_equal(out[0]->user_set->name, "user291");
	events_free(out, n);
	/* Nothing after the last. */
	assert_int_equal(events_read(st, 300, 0, &out, &n, &err), 0);
	assert_int_equal(n, 0);
	events_free(out, n);
	assert_int_equal(events_read(st, UINT64_MAX, 0, &out, &n, &err), 0);
	assert_int_equal(n, 0);
	/* Big events: a batch stays under EVENTS_BATCH_BYTES. */
	{
		static char text[ENROLL_TEMPLATE_MAX];
		size_t k;

		memset(text, '#', sizeof(text) - 2);
		text[0] = '\n';
		text[sizeof(text) - 2] = '\n';
		text[sizeof(text) - 1] = '\0';
		for (k = 301; k <= 400; k++) {
			b = store_batch_new();
			assert_int_equal(
			    events_batch_log(b, template_set(0, k, "big", text),
			                     &err),
			    0);
			assert_int_equal(store_apply(st, b, &err), STORE_OK);
			store_batch_free(b);
		}
		assert_int_equal(events_read(st, 300, 0, &out, &n, &err), 0);
		assert_true(n > 1 && n < 100);
		assert_true(n * ENROLL_TEMPLATE_MAX <= EVENTS_BATCH_BYTES);
		assert_int_equal(out[0]->seq, 301);
		events_free(out, n);
	}
	store_close(st);
}

/* The member side: in order, once; a gap stops; replays are harmless. */
static void
test_apply_order_gaps_replays(void **state)
{
	struct store *st = open_store("member");
	struct error err = {{0}};
	Iselab__Event *list[4];
	uint64_t applied = 0, stored;

	(void)state;
	/* 2 without 1: nothing applied. */
	list[0] = user_set(0, 2, "bob");
	assert_int_equal(events_apply(st, list, 1, EVENTS_MEMBER, &applied, &err), 0);
	assert_int_equal(applied, 0);
	assert_false(config_has(st, "user/bob"));
	/* 1, 2, 4 out of order: 1 and 2 applied, 4 waits for 3. */
	list[0] = user_set(0, 2, "bob");
	list[1] = user_set(1, 4, "dave");
	list[2] = user_set(2, 1, "alice");
	assert_int_equal(events_apply(st, list, 3, EVENTS_MEMBER, &applied, &err), 2);
	assert_int_equal(applied, 2);
	assert_true(config_has(st, "user/alice"));
	assert_true(config_has(st, "user/bob"));
	assert_false(config_has(st, "user/dave"));
	assert_int_equal(events_applied(st, &stored, &err), 0);
	assert_int_equal(stored, 2);
	/* A replay of 1 and 2 changes nothing. */
	list[0] = user_delete(0, 1, "alice");
	assert_int_equal(events_apply(st, list, 1, EVENTS_MEMBER, &applied, &err), 0);
	assert_true(config_has(st, "user/alice"));
	/* 3 (a delete) and 4 (a template). */
	list[0] = user_delete(0, 3, "alice");
	list[1] = template_set(1, 4, "short", "validity = 1d\npop = off\n");
	assert_int_equal(events_apply(st, list, 2, EVENTS_MEMBER, &applied, &err), 2);
	assert_false(config_has(st, "user/alice"));
	assert_true(config_has(st, "template/short"));
	assert_int_equal(events_applied(st, &stored, &err), 0);
	assert_int_equal(stored, 4);
	store_close(st);
}

/* A bad event in a run: nothing of the run is applied, the seq stays. */
static void
test_apply_refuses_bad_events(void **state)
{
	struct store *st = open_store("refuse");
	struct error err = {{0}};
	Iselab__Event *list[2], unknown = ISELAB__EVENT__INIT;
	uint64_t applied = 0, stored;

	(void)state;
	list[0] = user_set(0, 1, "carol");
	list[1] = template_set(1, 2, "bad", "validity = forever\n");
	assert_int_equal(events_apply(st, list, 2, EVENTS_MEMBER, &applied, &err), -1);
	assert_non_null(strstr(err.msg, "validity"));
	assert_int_equal(applied, 0);
	assert_false(config_has(st, "user/carol"));
	assert_int_equal(events_applied(st, &stored, &err), 0);
	assert_int_equal(stored, 0);
	/* Bad names, bad records, reserved labels, unknown changes. */
	assert_int_equal(events_check(user_set(0, 1, "a:b"), &err), -1);
	us[0].record = "plain-text-password";
	assert_int_equal(events_check(&evs[0], &err), -1);
	assert_int_equal(
	    events_check(template_set(0, 1, "default", "pop = off\n"), &err),
	    -1);
	assert_int_equal(
	    events_check(template_set(0, 1, "../x", "pop = off\n"), &err), -1);
	unknown.seq = 1;
	assert_int_equal(events_check(&unknown, &err), -1);
	/* Certificate status: key id, serial, status and reason checked. */
	{
		Iselab__CertStatusChange cs = ISELAB__CERT_STATUS_CHANGE__INIT;
		Iselab__Event ev = ISELAB__EVENT__INIT;
		uint8_t kid[STORE_KEY_ID_LEN] = {1}, sn[3] = {0x01, 0x02, 0x03};
		struct store_batch *b;
		Iselab__Event *one[1] = {&ev};

		ev.seq = 1;
		ev.change_case = ISELAB__EVENT__CHANGE_CERT_STATUS;
		ev.cert_status = &cs;
		cs.issuer_key_id.data = kid;
		cs.issuer_key_id.len = sizeof(kid);
		cs.serial.data = sn;
		cs.serial.len = sizeof(sn);
		cs.status = STORE_STATUS_REVOKED;
		cs.reason = STORE_REASON_KEY_COMPROMISE;
		cs.when = 1700000000;
		assert_int_equal(events_check(&ev, &err), 0);
		cs.reason = STORE_REASON_CERTIFICATE_HOLD; /* not a revocation */
		assert_int_equal(events_check(&ev, &err), -1);
		cs.status = STORE_STATUS_HOLD;
		assert_int_equal(events_check(&ev, &err), 0);
		cs.status = 7;
		assert_int_equal(events_check(&ev, &err), -1);
		cs.status = STORE_STATUS_GOOD;
		cs.reason = 0;
		cs.issuer_key_id.len = 19;
		assert_int_equal(events_check(&ev, &err), -1);
		cs.issuer_key_id.len = sizeof(kid);
		cs.serial.len = 0;
		assert_int_equal(events_check(&ev, &err), -1);
		/* A certificate this node does not hold: applied, skipped. */
		cs.serial.len = sizeof(sn);
		applied = 0;
		assert_int_equal(events_apply(st, one, 1, EVENTS_MEMBER, &applied, &err), 1);
		assert_int_equal(applied, 1);
		b = store_batch_new();
		assert_int_equal(store_batch_set_status(b, kid, sn, sizeof(sn),
		                                        STORE_STATUS_ANY, 1, 0),
		                 -1);
		store_batch_free(b);
	}
	assert_int_equal(events_check(user_set(0, 0, "zero"), &err), -1);
	store_close(st);
}

/* A table record event of the replica: checked by both, kept by a SAN. */
static void
test_replica_records(void **state)
{
	Iselab__NodeRecord nr = ISELAB__NODE_RECORD__INIT;
	Iselab__TableRecord tr = ISELAB__TABLE_RECORD__INIT;
	Iselab__Event ev = ISELAB__EVENT__INIT, *one[1] = {&ev};
	struct store *psn = open_store("replica-psn");
	struct store *san = open_store("replica-san");
	struct error err = {{0}};
	uint8_t rec[64], garbage[3] = {0xff, 0xff, 0xff}, *val;
	size_t vlen;
	uint64_t applied = 0, last = 0;

	(void)state;
	nr.hostname = "psn1";
	nr.role = ISELAB__ROLE__ROLE_PSN;
	tr.key.data = (uint8_t *)"psn1";
	tr.key.len = 4;
	tr.record.len = iselab__node_record__pack(&nr, rec);
	tr.record.data = rec;
	ev.seq = 1;
	ev.change_case = ISELAB__EVENT__CHANGE_NODE_RECORD;
	ev.node_record = &tr;
	assert_int_equal(events_check(&ev, &err), 0);
	assert_true(events_replica_only(&ev));
	/* A key that is not the record's host, a record that does not unpack. */
	tr.key.data = (uint8_t *)"psn2";
	assert_int_equal(events_check(&ev, &err), -1);
	tr.key.data = (uint8_t *)"psn1";
	tr.record.data = garbage;
	tr.record.len = sizeof(garbage);
	assert_int_equal(events_check(&ev, &err), -1);
	tr.record.data = rec;
	tr.record.len = iselab__node_record__pack(&nr, rec);
	/* A token or alarm key of the wrong shape. */
	ev.change_case = ISELAB__EVENT__CHANGE_TOKEN_RECORD;
	ev.token_record = &tr;
	assert_int_equal(events_check(&ev, &err), -1);
	ev.change_case = ISELAB__EVENT__CHANGE_ALARM_RECORD;
	ev.alarm_record = &tr;
	assert_int_equal(events_check(&ev, &err), -1);
	ev.change_case = ISELAB__EVENT__CHANGE_NODE_RECORD;
	ev.node_record = &tr;

	/* A PSN checks it and passes over it: nothing but the sequence. */
	assert_int_equal(events_apply(psn, one, 1, EVENTS_MEMBER, &applied,
	                              &err),
	                 1);
	assert_int_equal(applied, 1);
	assert_int_equal(store_kv_get(psn, STORE_TABLE_NODES, "psn1", 4, &val,
	                              &vlen, &err),
	                 STORE_NOT_FOUND);
	assert_int_equal(events_last_seq(psn, &last, &err), 0);
	assert_int_equal(last, 0);

	/* A SAN keeps the record, byte for byte, and the event. */
	applied = 0;
	assert_int_equal(events_apply(san, one, 1, EVENTS_REPLICA, &applied,
	                              &err),
	                 1);
	assert_int_equal(store_kv_get(san, STORE_TABLE_NODES, "psn1", 4, &val,
	                              &vlen, &err),
	                 STORE_OK);
	assert_int_equal(vlen, tr.record.len);
	assert_memory_equal(val, rec, vlen);
	free(val);
	assert_int_equal(events_last_seq(san, &last, &err), 0);
	assert_int_equal(last, 1);
	store_close(psn);
	store_close(san);
}

/* A deployment event: an epoch, one primary among 1 or 2 admin nodes. */
static void
test_deployment_event(void **state)
{
	struct store *st = open_store("deployment");
	struct error err = {{0}};
	Iselab__DeploymentConfig dc = ISELAB__DEPLOYMENT_CONFIG__INIT, *got;
	Iselab__AdminNode an[3], *nodes[3] = {&an[0], &an[1], &an[2]};
	Iselab__Event ev = ISELAB__EVENT__INIT, *one[1] = {&ev};
	uint8_t key[32] = {7};
	uint64_t applied = 0;
	size_t i;

	(void)state;
	for (i = 0; i < 3; i++) {
		iselab__admin_node__init(&an[i]);
		an[i].hostname = i == 0 ? "pan1" : i == 1 ? "san1" : "san2";
		an[i].role = i == 0 ? ISELAB__ROLE__ROLE_PAN
		                    : ISELAB__ROLE__ROLE_SAN;
		an[i].messaging_endpoint = "tcp://127.0.0.1:8671";
		an[i].events_endpoint = "tcp://127.0.0.1:8672";
		an[i].curve_public_key.data = key;
		an[i].curve_public_key.len = sizeof(key);
	}
	dc.epoch = 2;
	dc.admin_nodes = nodes;
	dc.n_admin_nodes = 2;
	ev.seq = 1;
	ev.change_case = ISELAB__EVENT__CHANGE_DEPLOYMENT;
	ev.deployment = &dc;
	assert_int_equal(events_check(&ev, &err), 0);
	/* The primary alone is a whole deployment too. */
	dc.n_admin_nodes = 1;
	assert_int_equal(events_check(&ev, &err), 0);
	dc.n_admin_nodes = 2;

	/* Each fault alone is refused, with why. */
	dc.epoch = 0;
	assert_int_equal(events_check(&ev, &err), -1);
	assert_non_null(strstr(err.msg, "epoch"));
	dc.epoch = 2;
	dc.n_admin_nodes = 0;
	assert_int_equal(events_check(&ev, &err), -1);
	dc.n_admin_nodes = 3; /* above EVENTS_ADMIN_MAX */
	assert_int_equal(events_check(&ev, &err), -1);
	assert_non_null(strstr(err.msg, "admin nodes"));
	dc.n_admin_nodes = 2;
	an[1].role = ISELAB__ROLE__ROLE_PAN; /* two primaries */
	assert_int_equal(events_check(&ev, &err), -1);
	assert_non_null(strstr(err.msg, "primaries"));
	an[0].role = ISELAB__ROLE__ROLE_SAN; /* none */
	an[1].role = ISELAB__ROLE__ROLE_SAN;
	assert_int_equal(events_check(&ev, &err), -1);
	assert_non_null(strstr(err.msg, "primaries"));
	an[0].role = ISELAB__ROLE__ROLE_PAN;
	an[1].role = ISELAB__ROLE__ROLE_PSN; /* a PSN is no admin node */
	assert_int_equal(events_check(&ev, &err), -1);
	assert_non_null(strstr(err.msg, "admin node 2"));
	an[1].role = ISELAB__ROLE__ROLE_SAN;
	an[1].curve_public_key.len = 31;
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].curve_public_key.len = sizeof(key);
	an[1].messaging_endpoint = "";
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].messaging_endpoint = NULL;
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].messaging_endpoint = "tcp://127.0.0.1:8671";
	an[1].hostname = "san 1";
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].hostname = "san1\n[admin1]";
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].hostname = NULL;
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].hostname = "san1";
	an[1].events_endpoint = "tcp://x:1\nrole = pan";
	assert_int_equal(events_check(&ev, &err), -1);
	an[1].events_endpoint = "";
	assert_int_equal(events_check(&ev, &err), 0);
	an[1].hostname = "san1";
	ev.deployment = NULL;
	assert_int_equal(events_check(&ev, &err), -1);
	ev.deployment = &dc;

	/* A bad one changes nothing; a good one is kept as sent. */
	dc.epoch = 0;
	assert_int_equal(events_apply(st, one, 1, EVENTS_MEMBER, &applied, &err),
	                 -1);
	assert_int_equal(events_deployment(st, &got, &err), 0);
	assert_null(got);
	dc.epoch = 3;
	assert_int_equal(events_apply(st, one, 1, EVENTS_MEMBER, &applied, &err),
	                 1);
	assert_int_equal(applied, 1);
	assert_int_equal(events_deployment(st, &got, &err), 1);
	assert_non_null(got);
	assert_int_equal(got->epoch, 3);
	assert_int_equal(got->n_admin_nodes, 2);
	assert_string_equal(got->admin_nodes[0]->hostname, "pan1");
	assert_int_equal(got->admin_nodes[1]->role, ISELAB__ROLE__ROLE_SAN);
	assert_memory_equal(got->admin_nodes[1]->curve_public_key.data, key,
	                    sizeof(key));
	iselab__deployment_config__free_unpacked(got, NULL);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_and_read),
	    cmocka_unit_test(test_apply_order_gaps_replays),
	    cmocka_unit_test(test_apply_refuses_bad_events),
	    cmocka_unit_test(test_replica_records),
	    cmocka_unit_test(test_deployment_event),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
