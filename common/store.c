/*
 * store: the node's LMDB environment and its issued-certificate tables.
 *
 * LMDB gives us what a CA's database needs without a server: ACID
 * transactions, one writer at a time across all the processes of a node,
 * readers that never wait (each reads an MVCC snapshot), and a
 * copy-on-write B+tree that a crash cannot leave half-written (the new root
 * is published by the last write of a commit).  We keep LMDB's default
 * sync mode: mdb_txn_commit() returns after fdatasync(), so a record the
 * store acknowledged is on disk.  No MDB_NOSYNC, MDB_NOMETASYNC or
 * MDB_WRITEMAP: each would trade that guarantee for speed.
 *
 * All named databases are listed in store_tables[]; a new table is one
 * more line there (and an enum value), created on open in existing stores
 * too.  The generic key-value tables (nodes, tokens, alarms, config,
 * outbox) and write batches (store_apply) are at the end of this file; a
 * batch runs the same code as the single-record calls, inside one
 * transaction.  Changing
 * the layout of an existing table is a schema version bump with an entry in
 * store_migrations[].
 *
 * An MDB_env must not be used across fork(): its locks and reader slot
 * belong to the opening process.  Every process opens its own store after
 * it forks (store.h).
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "store.pb-c.h"
#include "util.h"

/* Most named databases the environment may hold (LMDB needs a bound). */
#define STORE_MAX_DBS 32
/* Subject index key: SHA-256 of the canonical subject. */
#define STORE_SUBJECT_HASH_LEN 32
/* Records one store_list_certs() call examines, so that a filter that
 * matches little cannot hold a read snapshot (and old pages) for long. */
#define STORE_SCAN_MAX 100000
/* Key in "meta" that holds the schema version (4 bytes, big-endian). */
#define STORE_META_VERSION "schema_version"
/* Longest "issuer <hex> serial <hex>" we put in a message. */
#define STORE_KEY_STR_MAX (2 * STORE_PKEY_MAX + 32)

enum store_db {
	STORE_DB_META,
	STORE_DB_CERTS,
	STORE_DB_CERTS_BY_SERIAL,
	STORE_DB_CERTS_BY_SUBJECT,
	STORE_DB_NODES,
	STORE_DB_TOKENS,
	STORE_DB_ALARMS,
	STORE_DB_CONFIG,
	STORE_DB_OUTBOX,
	STORE_DB_EVENTS,
	STORE_DB_OUTBOX_REFUSED,
	STORE_DB_OUTBOX_ACKED,
	STORE_DB_COUNT
};

/*
 * Every named database, created on open.  Later tables (the event log)
 * are added here.  Keys and values are described in
 * docs/storage.md.  A table added after schema version 1 was first
 * shipped is "optional": a read-only open of a store made before it
 * existed (which cannot create it) reads it as empty instead of refusing
 * the whole store.
 */
static const struct store_db_def {
	const char *name;
	unsigned int flags;
	bool optional;
} store_tables[STORE_DB_COUNT] = {
    /* name -> value; the schema version and little else */
    [STORE_DB_META] = {"meta", 0},
    /* issuer key id || serial -> CertRecord */
    [STORE_DB_CERTS] = {"certs", 0},
    /* serial -> primary keys (any issuer) */
    [STORE_DB_CERTS_BY_SERIAL] = {"certs_by_serial", MDB_DUPSORT},
    /* SHA-256(canonical subject) -> primary keys */
    [STORE_DB_CERTS_BY_SUBJECT] = {"certs_by_subject", MDB_DUPSORT},
    /* generic tables (enum store_table): bytes -> bytes */
    [STORE_DB_NODES] = {"nodes", 0, true},
    [STORE_DB_TOKENS] = {"tokens", 0, true},
    [STORE_DB_ALARMS] = {"alarms", 0, true},
    [STORE_DB_CONFIG] = {"config", 0, true},
    /* PSN: certificates waiting for the PAN's ack (common/outbox.h) */
    [STORE_DB_OUTBOX] = {"outbox", 0, true},
    /* admin nodes: seq (8 bytes big-endian) -> Event (common/events.h) */
    [STORE_DB_EVENTS] = {"events", 0, true},
    /* PSN: outbox items the PAN refused for good -> OutboxRefusal */
    [STORE_DB_OUTBOX_REFUSED] = {"outbox_refused", 0, true},
    /* PSN: acked outbox items kept for a new primary (common/outbox.h) */
    [STORE_DB_OUTBOX_ACKED] = {"outbox_acked", 0, true},
};

/* The named database behind each generic table. */
static const enum store_db store_table_db[STORE_TABLE_COUNT] = {
    [STORE_TABLE_NODES] = STORE_DB_NODES,
    [STORE_TABLE_TOKENS] = STORE_DB_TOKENS,
    [STORE_TABLE_ALARMS] = STORE_DB_ALARMS,
    [STORE_TABLE_CONFIG] = STORE_DB_CONFIG,
    [STORE_TABLE_OUTBOX] = STORE_DB_OUTBOX,
    [STORE_TABLE_EVENTS] = STORE_DB_EVENTS,
    [STORE_TABLE_OUTBOX_REFUSED] = STORE_DB_OUTBOX_REFUSED,
    [STORE_TABLE_OUTBOX_ACKED] = STORE_DB_OUTBOX_ACKED,
};

_Static_assert(STORE_DB_COUNT <= STORE_MAX_DBS, "raise STORE_MAX_DBS");

struct store;

/*
 * One step up the schema: run() rewrites what version `from` stored into
 * what version from + 1 expects, inside the open transaction, so that a
 * failure leaves the store at `from`.  Version 1 is the first; none yet.
 */
static const struct store_migration {
	uint32_t from;
	int (*run)(struct store *st, MDB_txn *txn, struct error *err);
} store_migrations[] = {
    {0, NULL},
};

struct store {
	MDB_env *env;                 /* the environment, this process only */
	MDB_dbi dbi[STORE_DB_COUNT];  /* handles, valid for the env's life */
	bool present[STORE_DB_COUNT]; /* false: optional table not in a
	                                 store opened read-only */
	char *path;                   /* the directory, for messages */
	bool read_only;               /* opened with MDB_RDONLY */
};

/*
 * An LMDB call failed: log it once, naming the store and the object, and
 * hand the same reason to the caller.
 */
static int
store_fail(const struct store *st, struct error *err, const char *call,
           const char *object, int rc)
{
	char msg[ERROR_MAX];

	if (rc == MDB_MAP_FULL)
		snprintf(msg, sizeof(msg),
		         "store at %s is full (%s: %s); raise its map size",
		         st->path, call, object != NULL ? object : "");
	else if (object != NULL)
		snprintf(msg, sizeof(msg), "store at %s: %s(%s): %s", st->path,
		         call, object, mdb_strerror(rc));
	else
		snprintf(msg, sizeof(msg), "store at %s: %s: %s", st->path,
		         call, mdb_strerror(rc));
	log_error(LOG_MAIN, "%s", msg);
	error_set(err, "%s", msg);
	return -1;
}

/* A record or index entry that cannot be what we wrote. */
static int
store_corrupt(const struct store *st, struct error *err, const char *what,
              const char *object)
{
	log_error(LOG_MAIN, "store at %s is corrupt: %s (%s)", st->path, what,
	          object);
	error_set(err, "store at %s is corrupt: %s (%s)", st->path, what,
	          object);
	return -1;
}

static void
key_string(const uint8_t *pkey, size_t len, char buf[STORE_KEY_STR_MAX])
{
	char ikid[2 * STORE_KEY_ID_LEN + 1], serial[2 * STORE_SERIAL_MAX + 1];

	if (len < STORE_KEY_ID_LEN || len > STORE_PKEY_MAX) {
		snprintf(buf, STORE_KEY_STR_MAX, "bad key of %zu bytes", len);
		return;
	}
	hex_encode(pkey, STORE_KEY_ID_LEN, ikid);
	hex_encode(pkey + STORE_KEY_ID_LEN, len - STORE_KEY_ID_LEN, serial);
	snprintf(buf, STORE_KEY_STR_MAX, "issuer %s serial %s", ikid, serial);
}

/*
 * The serial as the store keys it: magnitude without leading zero bytes,
 * 1 to STORE_SERIAL_MAX bytes.  RFC 5280 section 4.1.2.2 makes serials
 * positive and at most 20 octets; a zero serial is refused.
 */
static int
serial_norm(const uint8_t *serial, size_t len, const uint8_t **out,
            size_t *outlen, struct error *err)
{
	if (serial == NULL && len != 0) {
		error_set(err, "no serial");
		return -1;
	}
	while (len > 0 && serial[0] == 0) {
		serial++;
		len--;
	}
	if (len == 0) {
		error_set(err, "serial is zero or empty");
		return -1;
	}
	if (len > STORE_SERIAL_MAX) {
		error_set(err, "serial of %zu bytes is over the limit of %d",
		          len, STORE_SERIAL_MAX);
		return -1;
	}
	*out = serial;
	*outlen = len;
	return 0;
}

static size_t
pkey_make(uint8_t out[STORE_PKEY_MAX], const uint8_t *ikid,
          const uint8_t *serial, size_t len)
{
	memcpy(out, ikid, STORE_KEY_ID_LEN);
	memcpy(out + STORE_KEY_ID_LEN, serial, len);
	return STORE_KEY_ID_LEN + len;
}

/*
 * Subjects are indexed by a hash because LMDB keys stop at 511 bytes.  The
 * canonical form folds ASCII letters so that "CN=Alice" finds "cn=alice";
 * a byte-wise fold, independent of the locale.
 */
static int
subject_hash(const char *subject, uint8_t out[STORE_SUBJECT_HASH_LEN],
             struct error *err)
{
	EVP_MD_CTX *ctx = NULL;
	unsigned char c;
	size_t i, len = strlen(subject);
	int rc = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		log_crypto(LOG_MAIN, err, "EVP_DigestInit_ex", subject);
		goto out;
	}
	for (i = 0; i < len; i++) {
		c = (unsigned char)subject[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (!EVP_DigestUpdate(ctx, &c, 1)) {
			log_crypto(LOG_MAIN, err, "EVP_DigestUpdate", subject);
			goto out;
		}
	}
	if (!EVP_DigestFinal_ex(ctx, out, NULL)) {
		log_crypto(LOG_MAIN, err, "EVP_DigestFinal_ex", subject);
		goto out;
	}
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

static bool
subject_equal(const char *a, const char *b)
{
	unsigned char ca, cb;

	for (;; a++, b++) {
		ca = (unsigned char)*a;
		cb = (unsigned char)*b;
		if (ca >= 'A' && ca <= 'Z')
			ca = (unsigned char)(ca - 'A' + 'a');
		if (cb >= 'A' && cb <= 'Z')
			cb = (unsigned char)(cb - 'A' + 'a');
		if (ca != cb)
			return false;
		if (ca == '\0')
			return true;
	}
}

/* RFC 5280 section 5.3.1: reasons a permanent revocation may carry. */
static bool
reason_revocable(int reason)
{
	switch (reason) {
	case STORE_REASON_UNSPECIFIED:
	case STORE_REASON_KEY_COMPROMISE:
	case STORE_REASON_CA_COMPROMISE:
	case STORE_REASON_AFFILIATION_CHANGED:
	case STORE_REASON_SUPERSEDED:
	case STORE_REASON_CESSATION_OF_OPERATION:
	case STORE_REASON_PRIVILEGE_WITHDRAWN:
	case STORE_REASON_AA_COMPROMISE:
		return true;
	default:
		/* certificateHold is HOLD; removeFromCRL is for delta CRLs. */
		return false;
	}
}

const char *
store_status_name(enum store_cert_status status)
{
	switch (status) {
	case STORE_STATUS_ANY:
		return "any";
	case STORE_STATUS_GOOD:
		return "good";
	case STORE_STATUS_REVOKED:
		return "revoked";
	case STORE_STATUS_HOLD:
		return "hold";
	}
	return "unknown";
}

const char *
store_reason_name(int reason)
{
	/* The names RFC 5280 section 5.3.1 gives the CRLReason values. */
	static const char *const names[] = {
	    "unspecified",     "keyCompromise",
	    "cACompromise",    "affiliationChanged",
	    "superseded",      "cessationOfOperation",
	    "certificateHold", NULL,
	    "removeFromCRL",   "privilegeWithdrawn",
	    "aACompromise",
	};

	if (reason < 0 || (size_t)reason >= ARRAY_SIZE(names) ||
	    names[reason] == NULL)
		return "unknown";
	return names[reason];
}

static int
txn_begin(struct store *st, bool write, MDB_txn **txn, struct error *err)
{
	int rc;

	*txn = NULL;
	if (write && st->read_only) {
		error_set(err, "store at %s is open read-only", st->path);
		return -1;
	}
	rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, txn);
	if (rc != 0)
		return store_fail(st, err, "mdb_txn_begin", NULL, rc);
	return 0;
}

static void
txn_abort(MDB_txn *txn)
{
	if (txn != NULL)
		mdb_txn_abort(txn);
}

/*
 * The commit is where durability happens: LMDB writes the pages, syncs
 * them, then writes and syncs the meta page that makes them current.  On
 * error LMDB has freed the transaction and nothing of it is visible.
 */
static int
txn_commit(struct store *st, MDB_txn *txn, const char *object,
           struct error *err)
{
	int rc;

	if ((rc = mdb_txn_commit(txn)) != 0)
		return store_fail(st, err, "mdb_txn_commit", object, rc);
	return 0;
}

static int
meta_version_get(struct store *st, MDB_txn *txn, uint32_t *version, bool *found,
                 struct error *err)
{
	MDB_val k = {sizeof(STORE_META_VERSION) - 1,
	             (void *)STORE_META_VERSION};
	MDB_val v;
	const uint8_t *p;
	int rc;

	*found = false;
	rc = mdb_get(txn, st->dbi[STORE_DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return store_fail(st, err, "mdb_get", STORE_META_VERSION, rc);
	if (v.mv_size != 4)
		return store_corrupt(st, err, "schema version is not 4 bytes",
		                     STORE_META_VERSION);
	p = v.mv_data;
	*version = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	           (uint32_t)p[2] << 8 | p[3];
	*found = true;
	return 0;
}

static int
meta_version_put(struct store *st, MDB_txn *txn, uint32_t version,
                 struct error *err)
{
	MDB_val k = {sizeof(STORE_META_VERSION) - 1,
	             (void *)STORE_META_VERSION};
	uint8_t b[4] = {(uint8_t)(version >> 24), (uint8_t)(version >> 16),
	                (uint8_t)(version >> 8), (uint8_t)version};
	MDB_val v = {sizeof(b), b};
	int rc;

	if ((rc = mdb_put(txn, st->dbi[STORE_DB_META], &k, &v, 0)) != 0)
		return store_fail(st, err, "mdb_put", STORE_META_VERSION, rc);
	return 0;
}

/* True when no table but meta holds anything: a store nobody wrote yet. */
static int
store_is_empty(struct store *st, MDB_txn *txn, bool *empty, struct error *err)
{
	MDB_stat ms;
	size_t i;
	int rc;

	*empty = true;
	for (i = 0; i < STORE_DB_COUNT; i++) {
		if (i == STORE_DB_META || !st->present[i])
			continue;
		if ((rc = mdb_stat(txn, st->dbi[i], &ms)) != 0)
			return store_fail(st, err, "mdb_stat",
			                  store_tables[i].name, rc);
		if (ms.ms_entries != 0)
			*empty = false;
	}
	return 0;
}

/*
 * Bring the schema to STORE_SCHEMA_VERSION in the open transaction, or
 * refuse.  A newer store is never touched: this build would misread it.
 */
static int
schema_check(struct store *st, MDB_txn *txn, struct error *err)
{
	const struct store_migration *m;
	uint32_t version;
	bool found, empty;

	if (meta_version_get(st, txn, &version, &found, err) == -1)
		return -1;
	if (!found) {
		if (store_is_empty(st, txn, &empty, err) == -1)
			return -1;
		if (!empty) {
			error_set(
			    err, "store at %s holds data but no schema version",
			    st->path);
			return -1;
		}
		if (st->read_only) {
			error_set(err, "store at %s was never initialised",
			          st->path);
			return -1;
		}
		log_info(LOG_MAIN, "store at %s: new, schema version %d",
		         st->path, STORE_SCHEMA_VERSION);
		return meta_version_put(st, txn, STORE_SCHEMA_VERSION, err);
	}
	if (version > STORE_SCHEMA_VERSION) {
		error_set(
		    err,
		    "store at %s has schema version %u; this build knows up "
		    "to %d",
		    st->path, version, STORE_SCHEMA_VERSION);
		return -1;
	}
	if (version < STORE_SCHEMA_VERSION && st->read_only) {
		error_set(
		    err,
		    "store at %s has schema version %u; open it read-write "
		    "to migrate it to %d",
		    st->path, version, STORE_SCHEMA_VERSION);
		return -1;
	}
	while (version < STORE_SCHEMA_VERSION) {
		for (m = store_migrations; m->run != NULL; m++)
			if (m->from == version)
				break;
		if (m->run == NULL) {
			error_set(
			    err,
			    "store at %s has schema version %u, which this "
			    "build cannot migrate to %d",
			    st->path, version, STORE_SCHEMA_VERSION);
			return -1;
		}
		if (m->run(st, txn, err) == -1) {
			error_prefix(err,
			             "migrating store at %s from schema "
			             "version %u",
			             st->path, version);
			return -1;
		}
		version++;
		if (meta_version_put(st, txn, version, err) == -1)
			return -1;
		log_info(LOG_MAIN, "store at %s: migrated to schema version %u",
		         st->path, version);
	}
	return 0;
}

/*
 * Open every table and settle the schema in one transaction: either the
 * store is complete and current afterwards, or nothing changed.
 */
static int
store_init(struct store *st, struct error *err)
{
	MDB_txn *txn = NULL;
	unsigned int flags;
	size_t i;
	int rc;

	if (txn_begin(st, !st->read_only, &txn, err) == -1)
		return -1;
	for (i = 0; i < STORE_DB_COUNT; i++) {
		flags = store_tables[i].flags;
		if (!st->read_only)
			flags |= MDB_CREATE;
		rc =
		    mdb_dbi_open(txn, store_tables[i].name, flags, &st->dbi[i]);
		if (rc == MDB_NOTFOUND && store_tables[i].optional) {
			/* Only read-only opens get here: read as empty. */
			st->present[i] = false;
			continue;
		}
		if (rc == MDB_NOTFOUND) {
			error_set(
			    err,
			    "store at %s has no table %s; open it read-write "
			    "once to create it",
			    st->path, store_tables[i].name);
			goto fail;
		}
		if (rc != 0) {
			store_fail(st, err, "mdb_dbi_open",
			           store_tables[i].name, rc);
			goto fail;
		}
		st->present[i] = true;
	}
	if (schema_check(st, txn, err) == -1)
		goto fail;
	/* Even a read-only txn commits, so that the handles outlive it. */
	return txn_commit(st, txn, "open", err);
fail:
	txn_abort(txn);
	return -1;
}

int
store_open(const char *dir, const struct store_opts *opts, struct store **out,
           struct error *err)
{
	struct store *st = NULL;
	struct stat sb;
	size_t map_size = STORE_MAP_SIZE_DEFAULT;
	unsigned int readers = STORE_READERS_DEFAULT;
	int dead = 0, rc;

	*out = NULL;
	if (opts != NULL && opts->map_size != 0)
		map_size = opts->map_size;
	if (opts != NULL && opts->max_readers != 0)
		readers = opts->max_readers;
	if (map_size < STORE_MAP_SIZE_MIN) {
		error_set(err, "store map size %zu is below the minimum of %zu",
		          map_size, STORE_MAP_SIZE_MIN);
		return -1;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL ||
	    (st->path = strdup(dir)) == NULL) {
		error_set(err, "out of memory");
		goto fail;
	}
	st->read_only = opts != NULL && opts->read_only;
	if (!st->read_only && dir_create(dir, 0700, err) == -1)
		goto fail;
	if (stat(dir, &sb) == -1) {
		error_set(err, "store at %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (!S_ISDIR(sb.st_mode)) {
		error_set(err, "store at %s: not a directory", dir);
		goto fail;
	}
	if ((rc = mdb_env_create(&st->env)) != 0) {
		store_fail(st, err, "mdb_env_create", NULL, rc);
		goto fail;
	}
	if ((rc = mdb_env_set_mapsize(st->env, map_size)) != 0) {
		store_fail(st, err, "mdb_env_set_mapsize", NULL, rc);
		goto fail;
	}
	if ((rc = mdb_env_set_maxreaders(st->env, readers)) != 0) {
		store_fail(st, err, "mdb_env_set_maxreaders", NULL, rc);
		goto fail;
	}
	if ((rc = mdb_env_set_maxdbs(st->env, STORE_MAX_DBS)) != 0) {
		store_fail(st, err, "mdb_env_set_maxdbs", NULL, rc);
		goto fail;
	}
	/*
	 * Default flags on purpose: synced commits (no MDB_NOSYNC or
	 * MDB_NOMETASYNC), and the data file is only as large as what it
	 * holds; the map size just reserves address space.
	 */
	rc = mdb_env_open(st->env, dir, st->read_only ? MDB_RDONLY : 0, 0600);
	if (rc != 0) {
		store_fail(st, err, "mdb_env_open", dir, rc);
		goto fail;
	}
	/* Free reader slots of processes that died inside a read txn. */
	if ((rc = mdb_reader_check(st->env, &dead)) != 0) {
		store_fail(st, err, "mdb_reader_check", NULL, rc);
		goto fail;
	}
	if (dead > 0)
		log_info(LOG_MAIN, "store at %s: cleared %d stale readers", dir,
		         dead);
	if (store_init(st, err) == -1)
		goto fail;
	*out = st;
	return 0;
fail:
	store_close(st);
	return -1;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->env != NULL)
		mdb_env_close(st->env);
	free(st->path);
	free(st);
}

const char *
store_path(const struct store *st)
{
	return st->path;
}

/*
 * Unpack a record and check it against its key.  Anything that is not what
 * store_put_cert() wrote is corruption, reported as such.
 */
static Iselab__CertRecord *
record_unpack(const struct store *st, const MDB_val *key, const MDB_val *val,
              struct error *err)
{
	Iselab__CertRecord *rec;
	char object[STORE_KEY_STR_MAX];
	const uint8_t *k = key->mv_data;
	const char *what = NULL;

	key_string(k, key->mv_size, object);
	if (key->mv_size <= STORE_KEY_ID_LEN || key->mv_size > STORE_PKEY_MAX) {
		store_corrupt(st, err, "primary key of a wrong size", object);
		return NULL;
	}
	if (val->mv_size > STORE_RECORD_MAX) {
		store_corrupt(st, err, "record over the size limit", object);
		return NULL;
	}
	rec = iselab__cert_record__unpack(NULL, val->mv_size, val->mv_data);
	if (rec == NULL) {
		store_corrupt(st, err, "record does not decode", object);
		return NULL;
	}
	if (rec->issuer_key_id.len != STORE_KEY_ID_LEN ||
	    memcmp(rec->issuer_key_id.data, k, STORE_KEY_ID_LEN) != 0)
		what = "issuer key id differs from the key";
	else if (rec->serial.len != key->mv_size - STORE_KEY_ID_LEN ||
	         memcmp(rec->serial.data, k + STORE_KEY_ID_LEN,
	                rec->serial.len) != 0)
		what = "serial differs from the key";
	else if (rec->status != ISELAB__CERT_STATUS__CERT_STATUS_GOOD &&
	         rec->status != ISELAB__CERT_STATUS__CERT_STATUS_REVOKED &&
	         rec->status != ISELAB__CERT_STATUS__CERT_STATUS_HOLD)
		what = "record has no valid status";
	else if (rec->der.len == 0)
		what = "record has no certificate";
	if (what != NULL) {
		store_corrupt(st, err, what, object);
		iselab__cert_record__free_unpacked(rec, NULL);
		return NULL;
	}
	return rec;
}

/* Copy a string that may be empty into caller-owned memory (NULL if ""). */
static int
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL || *s == '\0')
		return 0;
	return (*out = strdup(s)) == NULL ? -1 : 0;
}

static void
cert_clear(struct store_cert *c)
{
	free(c->der);
	free(c->subject);
	free(c->issued_by);
	free(c->profile);
	memset(c, 0, sizeof(*c));
}

static int
record_to_cert(const Iselab__CertRecord *rec, struct store_cert *c,
               struct error *err)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->issuer_key_id, rec->issuer_key_id.data, STORE_KEY_ID_LEN);
	memcpy(c->serial, rec->serial.data, rec->serial.len);
	c->serial_len = rec->serial.len;
	if ((c->der = malloc(rec->der.len)) == NULL)
		goto nomem;
	memcpy(c->der, rec->der.data, rec->der.len);
	c->der_len = rec->der.len;
	if ((c->subject = strdup(rec->subject)) == NULL)
		goto nomem;
	if (dup_opt(rec->issued_by, &c->issued_by) == -1 ||
	    dup_opt(rec->profile, &c->profile) == -1)
		goto nomem;
	c->not_before = rec->not_before;
	c->not_after = rec->not_after;
	c->issued_at = rec->issued_at;
	c->status = (enum store_cert_status)rec->status;
	c->revoked_at = rec->revoked_at;
	c->reason = (int)rec->revocation_reason;
	c->updated_at = rec->updated_at;
	return 0;
nomem:
	cert_clear(c);
	error_set(err, "out of memory");
	return -1;
}

void
store_cert_free(struct store_cert *cert)
{
	if (cert == NULL)
		return;
	cert_clear(cert);
	free(cert);
}

void
store_cert_list_free(struct store_cert_list *list)
{
	size_t i;

	if (list == NULL)
		return;
	for (i = 0; i < list->count; i++)
		cert_clear(&list->certs[i]);
	free(list->certs);
	memset(list, 0, sizeof(*list));
}

/* Decode the record at key/val onto the end of list. */
static int
list_append(const struct store *st, struct store_cert_list *list, size_t *cap,
            const MDB_val *key, const MDB_val *val, struct error *err)
{
	Iselab__CertRecord *rec;
	struct store_cert *grown;
	size_t ncap;
	int rc;

	if (list->count == *cap) {
		ncap = *cap == 0 ? 16 : *cap * 2;
		grown = reallocarray(list->certs, ncap, sizeof(*grown));
		if (grown == NULL) {
			error_set(err, "out of memory");
			return -1;
		}
		list->certs = grown;
		*cap = ncap;
	}
	if ((rec = record_unpack(st, key, val, err)) == NULL)
		return -1;
	rc = record_to_cert(rec, &list->certs[list->count], err);
	iselab__cert_record__free_unpacked(rec, NULL);
	if (rc == 0)
		list->count++;
	return rc;
}

/* The checks a record passes before it is stored. */
static int
cert_check(const struct store_cert *c, struct error *err)
{
	size_t len;

	if (c->der == NULL || c->der_len == 0) {
		error_set(err, "no certificate");
		return -1;
	}
	if (c->der_len > STORE_DER_MAX) {
		error_set(err,
		          "certificate of %zu bytes is over the limit of %d",
		          c->der_len, STORE_DER_MAX);
		return -1;
	}
	if (c->subject == NULL) {
		error_set(err, "no subject");
		return -1;
	}
	if ((len = strlen(c->subject)) > STORE_SUBJECT_MAX) {
		error_set(err, "subject of %zu bytes is over the limit of %d",
		          len, STORE_SUBJECT_MAX);
		return -1;
	}
	if ((c->issued_by != NULL && strlen(c->issued_by) > STORE_NAME_MAX) ||
	    (c->profile != NULL && strlen(c->profile) > STORE_NAME_MAX)) {
		error_set(err, "node or profile name over %d bytes",
		          STORE_NAME_MAX);
		return -1;
	}
	if (c->not_after < c->not_before) {
		error_set(err, "notAfter is before notBefore");
		return -1;
	}
	switch (c->status) {
	case STORE_STATUS_GOOD:
		if (c->revoked_at != 0 || c->reason != 0) {
			error_set(err, "a good certificate has no revocation");
			return -1;
		}
		break;
	case STORE_STATUS_REVOKED:
		if (c->revoked_at <= 0 || !reason_revocable(c->reason)) {
			error_set(err,
			          "revoked without a time or with reason "
			          "%d (%s)",
			          c->reason, store_reason_name(c->reason));
			return -1;
		}
		break;
	case STORE_STATUS_HOLD:
		if (c->revoked_at <= 0 ||
		    c->reason != STORE_REASON_CERTIFICATE_HOLD) {
			error_set(err, "on hold without a time or with a "
			               "reason other than certificateHold");
			return -1;
		}
		break;
	default:
		error_set(err, "invalid status %d", (int)c->status);
		return -1;
	}
	return 0;
}

/* Protobuf strings must not be NULL; an absent name is the empty one. */
static char *
str_or_empty(char *s)
{
	return s != NULL ? s : (char *)"";
}

/*
 * A record checked, encoded and keyed, ready to be written by
 * put_cert_txn(): the encoding work happens before any transaction, so a
 * batch holds the write lock only for the writes.
 */
struct cert_put {
	uint8_t pkey[STORE_PKEY_MAX];          /* issuer key id || serial */
	size_t plen;                           /* bytes of pkey */
	uint8_t serial[STORE_SERIAL_MAX];      /* normalised serial */
	size_t slen;                           /* bytes of serial */
	uint8_t shash[STORE_SUBJECT_HASH_LEN]; /* subject index key */
	uint8_t *buf;                          /* packed CertRecord */
	size_t blen;                           /* bytes of buf */
	char object[STORE_KEY_STR_MAX];        /* the key, for messages */
};

static void
cert_put_clear(struct cert_put *p)
{
	free(p->buf);
	memset(p, 0, sizeof(*p));
}

static int
cert_put_prepare(const struct store_cert *cert, struct cert_put *p,
                 struct error *err)
{
	Iselab__CertRecord rec = ISELAB__CERT_RECORD__INIT;
	const uint8_t *serial;

	memset(p, 0, sizeof(*p));
	if (serial_norm(cert->serial, cert->serial_len, &serial, &p->slen,
	                err) == -1 ||
	    cert_check(cert, err) == -1) {
		error_prefix(err, "record refused");
		return -1;
	}
	memcpy(p->serial, serial, p->slen);
	p->plen = pkey_make(p->pkey, cert->issuer_key_id, p->serial, p->slen);
	key_string(p->pkey, p->plen, p->object);

	rec.der.data = cert->der;
	rec.der.len = cert->der_len;
	rec.subject = cert->subject;
	rec.serial.data = p->serial;
	rec.serial.len = p->slen;
	rec.issuer_key_id.data = (uint8_t *)cert->issuer_key_id;
	rec.issuer_key_id.len = STORE_KEY_ID_LEN;
	rec.not_before = cert->not_before;
	rec.not_after = cert->not_after;
	rec.issued_at = cert->issued_at;
	rec.issued_by = str_or_empty(cert->issued_by);
	rec.profile = str_or_empty(cert->profile);
	rec.status = (Iselab__CertStatus)cert->status;
	rec.revoked_at = cert->revoked_at;
	rec.revocation_reason = (uint32_t)cert->reason;
	rec.updated_at = cert->updated_at;
	p->blen = iselab__cert_record__get_packed_size(&rec);
	if (p->blen > STORE_RECORD_MAX) {
		error_set(err,
		          "%s: record of %zu bytes is over the limit of %d",
		          p->object, p->blen, STORE_RECORD_MAX);
		return -1;
	}
	if ((p->buf = malloc(p->blen)) == NULL) {
		error_set(err, "out of memory");
		return -1;
	}
	iselab__cert_record__pack(&rec, p->buf);
	if (subject_hash(cert->subject, p->shash, err) == -1) {
		cert_put_clear(p);
		return -1;
	}
	return 0;
}

/*
 * Write a prepared record and both index entries in the open write
 * transaction.  STORE_OK, STORE_EXISTS (nothing written), or -1; after -1
 * the transaction must be aborted.
 */
static int
put_cert_txn(struct store *st, MDB_txn *txn, const struct cert_put *p,
             struct error *err)
{
	MDB_val k, v;
	int rc;

	k = (MDB_val){p->plen, (void *)p->pkey};
	v = (MDB_val){p->blen, p->buf};
	rc = mdb_put(txn, st->dbi[STORE_DB_CERTS], &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST)
		return STORE_EXISTS;
	if (rc != 0)
		return store_fail(st, err, "mdb_put", p->object, rc);
	k = (MDB_val){p->slen, (void *)p->serial};
	v = (MDB_val){p->plen, (void *)p->pkey};
	rc = mdb_put(txn, st->dbi[STORE_DB_CERTS_BY_SERIAL], &k, &v,
	             MDB_NODUPDATA);
	if (rc == MDB_KEYEXIST)
		return store_corrupt(
		    st, err, "serial index entry without record", p->object);
	if (rc != 0)
		return store_fail(st, err, "mdb_put", p->object, rc);
	k = (MDB_val){sizeof(p->shash), (void *)p->shash};
	rc = mdb_put(txn, st->dbi[STORE_DB_CERTS_BY_SUBJECT], &k, &v,
	             MDB_NODUPDATA);
	if (rc == MDB_KEYEXIST)
		return store_corrupt(
		    st, err, "subject index entry without record", p->object);
	if (rc != 0)
		return store_fail(st, err, "mdb_put", p->object, rc);
	return STORE_OK;
}

int
store_put_cert(struct store *st, const struct store_cert *cert,
               struct error *err)
{
	struct cert_put p;
	MDB_txn *txn = NULL;
	int rc, ret = -1;

	if (cert_put_prepare(cert, &p, err) == -1)
		return -1;
	if (txn_begin(st, true, &txn, err) == -1)
		goto out;
	/* The record and both index entries commit together or not at all. */
	if ((ret = put_cert_txn(st, txn, &p, err)) != STORE_OK)
		goto out;
	rc = txn_commit(st, txn, p.object, err);
	txn = NULL;
	if (rc == -1)
		ret = -1;
out:
	txn_abort(txn);
	cert_put_clear(&p);
	return ret;
}

static int
asn1_time_to_unix(const ASN1_TIME *t, int64_t *out, const char *object,
                  struct error *err)
{
	struct tm tm;
	time_t secs;

	if (!ASN1_TIME_to_tm(t, &tm)) {
		log_crypto(LOG_MAIN, err, "ASN1_TIME_to_tm", object);
		return -1;
	}
	if ((secs = timegm(&tm)) == (time_t)-1) {
		error_set(err, "%s: validity out of range", object);
		return -1;
	}
	*out = (int64_t)secs;
	return 0;
}

int
store_x509_serial(X509 *cert, uint8_t out[STORE_SERIAL_MAX], size_t *len,
                  struct error *err)
{
	const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
	const uint8_t *serial;

	if (ASN1_STRING_type(sn) == V_ASN1_NEG_INTEGER) {
		error_set(err, "negative serial number");
		return -1;
	}
	if (serial_norm(ASN1_STRING_get0_data(sn),
	                (size_t)ASN1_STRING_length(sn), &serial, len,
	                err) == -1)
		return -1;
	memcpy(out, serial, *len);
	return 0;
}

/*
 * The record store_put_x509() stores for cert, in memory the caller
 * releases with cert_clear(): der and subject are malloc'd copies,
 * issued_by and profile are strdup'd (or NULL).
 */
static int
x509_to_cert(X509 *cert, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
             const char *issued_by, const char *profile, int64_t issued_at,
             struct store_cert *c, struct error *err)
{
	const ASN1_INTEGER *sn;
	const ASN1_OCTET_STRING *aki;
	const uint8_t *serial;
	unsigned char *p;
	size_t slen;
	int len;

	memset(c, 0, sizeof(*c));
	memcpy(c->issuer_key_id, issuer_key_id, STORE_KEY_ID_LEN);
	if ((c->subject = store_subject_string(X509_get_subject_name(cert),
	                                       err)) == NULL)
		goto fail;
	sn = X509_get0_serialNumber(cert);
	if (ASN1_STRING_type(sn) == V_ASN1_NEG_INTEGER) {
		error_set(err, "%s: negative serial number", c->subject);
		goto fail;
	}
	/* The magnitude without leading zero bytes, as the key wants it. */
	if (serial_norm(ASN1_STRING_get0_data(sn),
	                (size_t)ASN1_STRING_length(sn), &serial, &slen,
	                err) == -1) {
		error_prefix(err, "%s", c->subject);
		goto fail;
	}
	memcpy(c->serial, serial, slen);
	c->serial_len = slen;
	/*
	 * The authority key identifier names the issuer's key (RFC 5280
	 * section 4.2.1.1); one that disagrees means the caller passed the
	 * wrong issuer, and the record would be unreachable by OCSP.
	 */
	aki = X509_get0_authority_key_id(cert);
	if (aki != NULL && (ASN1_STRING_length(aki) != STORE_KEY_ID_LEN ||
	                    memcmp(ASN1_STRING_get0_data(aki), issuer_key_id,
	                           STORE_KEY_ID_LEN) != 0)) {
		error_set(
		    err,
		    "%s: authority key identifier does not match the issuer "
		    "key id",
		    c->subject);
		goto fail;
	}
	if (asn1_time_to_unix(X509_get0_notBefore(cert), &c->not_before,
	                      c->subject, err) == -1 ||
	    asn1_time_to_unix(X509_get0_notAfter(cert), &c->not_after,
	                      c->subject, err) == -1)
		goto fail;
	if ((len = i2d_X509(cert, NULL)) <= 0) {
		log_crypto(LOG_MAIN, err, "i2d_X509", c->subject);
		goto fail;
	}
	if ((c->der = malloc((size_t)len)) == NULL) {
		error_set(err, "out of memory");
		goto fail;
	}
	p = c->der;
	if (i2d_X509(cert, &p) != len) {
		log_crypto(LOG_MAIN, err, "i2d_X509", c->subject);
		goto fail;
	}
	c->der_len = (size_t)len;
	if (dup_opt(issued_by, &c->issued_by) == -1 ||
	    dup_opt(profile, &c->profile) == -1) {
		error_set(err, "out of memory");
		goto fail;
	}
	c->issued_at = issued_at;
	c->status = STORE_STATUS_GOOD;
	return 0;
fail:
	cert_clear(c);
	return -1;
}

int
store_put_x509(struct store *st, X509 *cert,
               const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
               const char *issued_by, const char *profile, int64_t issued_at,
               struct error *err)
{
	struct store_cert c;
	int ret;

	if (x509_to_cert(cert, issuer_key_id, issued_by, profile, issued_at, &c,
	                 err) == -1)
		return -1;
	ret = store_put_cert(st, &c, err);
	cert_clear(&c);
	return ret;
}

int
store_get_cert(struct store *st, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
               const uint8_t *serial, size_t serial_len,
               struct store_cert **out, struct error *err)
{
	Iselab__CertRecord *rec = NULL;
	struct store_cert *c = NULL;
	uint8_t pkey[STORE_PKEY_MAX];
	char object[STORE_KEY_STR_MAX];
	const uint8_t *sn;
	size_t slen, plen;
	MDB_txn *txn = NULL;
	MDB_val k, v;
	int rc, ret = -1;

	*out = NULL;
	if (serial_norm(serial, serial_len, &sn, &slen, err) == -1)
		return -1;
	plen = pkey_make(pkey, issuer_key_id, sn, slen);
	key_string(pkey, plen, object);
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	k = (MDB_val){plen, pkey};
	rc = mdb_get(txn, st->dbi[STORE_DB_CERTS], &k, &v);
	if (rc == MDB_NOTFOUND) {
		ret = STORE_NOT_FOUND;
		goto out;
	}
	if (rc != 0) {
		store_fail(st, err, "mdb_get", object, rc);
		goto out;
	}
	/* v points into the map, valid only until the txn ends. */
	if ((rec = record_unpack(st, &k, &v, err)) == NULL)
		goto out;
	if ((c = malloc(sizeof(*c))) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	if (record_to_cert(rec, c, err) == -1) {
		free(c);
		goto out;
	}
	*out = c;
	ret = STORE_OK;
out:
	if (rec != NULL)
		iselab__cert_record__free_unpacked(rec, NULL);
	txn_abort(txn);
	return ret;
}

/*
 * Every record an index lists under key, filtered by match (NULL: all).
 * One read snapshot, so the index and the records agree.
 */
static int
find_by_index(struct store *st, enum store_db index, const MDB_val *key,
              const char *subject, struct store_cert_list *out,
              struct error *err)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k = *key, v, pk, rv;
	char object[STORE_KEY_STR_MAX];
	size_t cap = 0;
	int rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->dbi[index], &cur)) != 0) {
		store_fail(st, err, "mdb_cursor_open", store_tables[index].name,
		           rc);
		goto out;
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
		pk = v;
		key_string(pk.mv_data, pk.mv_size, object);
		if ((rc = mdb_get(txn, st->dbi[STORE_DB_CERTS], &pk, &rv)) ==
		    MDB_NOTFOUND) {
			store_corrupt(st, err, "index entry without record",
			              object);
			goto out;
		}
		if (rc != 0) {
			store_fail(st, err, "mdb_get", object, rc);
			goto out;
		}
		if (out->count == STORE_FIND_MAX) {
			out->truncated = true;
			break;
		}
		if (list_append(st, out, &cap, &pk, &rv, err) == -1)
			goto out;
		/* A hash collision is astronomically rare; still, filter. */
		if (subject != NULL &&
		    !subject_equal(out->certs[out->count - 1].subject,
		                   subject)) {
			out->count--;
			cert_clear(&out->certs[out->count]);
		}
	}
	if (rc != 0 && rc != MDB_NOTFOUND && !out->truncated) {
		store_fail(st, err, "mdb_cursor_get", store_tables[index].name,
		           rc);
		goto out;
	}
	ret = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	txn_abort(txn);
	if (ret == -1)
		store_cert_list_free(out);
	return ret;
}

int
store_find_by_serial(struct store *st, const uint8_t *serial, size_t serial_len,
                     struct store_cert_list *out, struct error *err)
{
	const uint8_t *sn;
	size_t slen;
	MDB_val k;

	memset(out, 0, sizeof(*out));
	if (serial_norm(serial, serial_len, &sn, &slen, err) == -1)
		return -1;
	k = (MDB_val){slen, (void *)sn};
	return find_by_index(st, STORE_DB_CERTS_BY_SERIAL, &k, NULL, out, err);
}

int
store_find_by_subject(struct store *st, const char *subject,
                      struct store_cert_list *out, struct error *err)
{
	uint8_t shash[STORE_SUBJECT_HASH_LEN];
	MDB_val k = {sizeof(shash), shash};

	memset(out, 0, sizeof(*out));
	if (subject == NULL) {
		error_set(err, "no subject");
		return -1;
	}
	if (subject_hash(subject, shash, err) == -1)
		return -1;
	return find_by_index(st, STORE_DB_CERTS_BY_SUBJECT, &k, subject, out,
	                     err);
}

/*
 * Move the record at pkey to status `to` in the open write transaction.
 * The indexes do not depend on the status, so only the record is
 * rewritten.  STORE_OK, STORE_UNCHANGED, STORE_NOT_FOUND, or -1 (a
 * refused transition, or an LMDB failure after which the transaction
 * must be aborted).  decided: another node (the PAN) judged the
 * transition already; set the status as it says, without checking.
 */
static int
status_change_txn(struct store *st, MDB_txn *txn, const uint8_t *pkey,
                  size_t plen, Iselab__CertStatus to, int64_t when, int reason,
                  bool decided, struct error *err)
{
	Iselab__CertRecord *rec = NULL;
	uint8_t *buf = NULL;
	char object[STORE_KEY_STR_MAX];
	size_t blen;
	MDB_val k, v;
	int rc, ret = -1;

	key_string(pkey, plen, object);
	k = (MDB_val){plen, (void *)pkey};
	rc = mdb_get(txn, st->dbi[STORE_DB_CERTS], &k, &v);
	if (rc == MDB_NOTFOUND)
		return STORE_NOT_FOUND;
	if (rc != 0)
		return store_fail(st, err, "mdb_get", object, rc);
	if ((rec = record_unpack(st, &k, &v, err)) == NULL)
		goto out;

	switch (to) {
	case ISELAB__CERT_STATUS__CERT_STATUS_REVOKED:
		if (!decided &&
		    rec->status == ISELAB__CERT_STATUS__CERT_STATUS_REVOKED) {
			/* First revocation wins: a replay changes nothing. */
			ret = STORE_UNCHANGED;
			goto out;
		}
		rec->revoked_at = when;
		rec->revocation_reason = (uint32_t)reason;
		break;
	case ISELAB__CERT_STATUS__CERT_STATUS_HOLD:
		if (!decided &&
		    rec->status == ISELAB__CERT_STATUS__CERT_STATUS_HOLD) {
			ret = STORE_UNCHANGED;
			goto out;
		}
		if (!decided &&
		    rec->status == ISELAB__CERT_STATUS__CERT_STATUS_REVOKED) {
			error_set(err,
			          "%s is revoked; it cannot be put on hold",
			          object);
			goto out;
		}
		rec->revoked_at = when;
		rec->revocation_reason = STORE_REASON_CERTIFICATE_HOLD;
		break;
	case ISELAB__CERT_STATUS__CERT_STATUS_GOOD:
		/* RFC 5280 section 5.3.1: only certificateHold is reversible.
		 */
		if (!decided &&
		    rec->status != ISELAB__CERT_STATUS__CERT_STATUS_HOLD) {
			error_set(err,
			          "%s is %s, not on hold; only a held "
			          "certificate can be released",
			          object,
			          store_status_name(
			              (enum store_cert_status)rec->status));
			goto out;
		}
		rec->revoked_at = 0;
		rec->revocation_reason = 0;
		break;
	default:
		error_set(err, "%s: invalid status", object);
		goto out;
	}
	rec->status = to;
	rec->updated_at = when;

	blen = iselab__cert_record__get_packed_size(rec);
	if ((buf = malloc(blen)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	iselab__cert_record__pack(rec, buf);
	v = (MDB_val){blen, buf};
	if ((rc = mdb_put(txn, st->dbi[STORE_DB_CERTS], &k, &v, 0)) != 0) {
		store_fail(st, err, "mdb_put", object, rc);
		goto out;
	}
	ret = STORE_OK;
out:
	if (rec != NULL)
		iselab__cert_record__free_unpacked(rec, NULL);
	free(buf);
	return ret;
}

/* Normalise the key and check the time of a status change. */
static int
status_key(const uint8_t *ikid, const uint8_t *serial, size_t serial_len,
           int64_t when, uint8_t pkey[STORE_PKEY_MAX], size_t *plen,
           struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	const uint8_t *sn;
	size_t slen;

	if (serial_norm(serial, serial_len, &sn, &slen, err) == -1)
		return -1;
	*plen = pkey_make(pkey, ikid, sn, slen);
	if (when <= 0) {
		key_string(pkey, *plen, object);
		error_set(err, "%s: no time for the status change", object);
		return -1;
	}
	return 0;
}

/* Move a record to status `to` in one write transaction of its own. */
static int
status_change(struct store *st, const uint8_t *ikid, const uint8_t *serial,
              size_t serial_len, Iselab__CertStatus to, int64_t when,
              int reason, struct error *err)
{
	uint8_t pkey[STORE_PKEY_MAX];
	char object[STORE_KEY_STR_MAX];
	size_t plen;
	MDB_txn *txn = NULL;
	int rc, ret;

	if (status_key(ikid, serial, serial_len, when, pkey, &plen, err) == -1)
		return -1;
	key_string(pkey, plen, object);
	if (txn_begin(st, true, &txn, err) == -1)
		return -1;
	ret = status_change_txn(st, txn, pkey, plen, to, when, reason, false,
	                        err);
	if (ret != STORE_OK) {
		txn_abort(txn);
		return ret;
	}
	rc = txn_commit(st, txn, object, err);
	return rc == -1 ? -1 : STORE_OK;
}

int
store_revoke(struct store *st, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
             const uint8_t *serial, size_t serial_len, int64_t when, int reason,
             struct error *err)
{
	if (!reason_revocable(reason)) {
		error_set(err, "reason %d (%s) cannot be used to revoke%s",
		          reason, store_reason_name(reason),
		          reason == STORE_REASON_CERTIFICATE_HOLD ? "; use hold"
		                                                  : "");
		return -1;
	}
	return status_change(st, issuer_key_id, serial, serial_len,
	                     ISELAB__CERT_STATUS__CERT_STATUS_REVOKED, when,
	                     reason, err);
}

int
store_hold(struct store *st, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
           const uint8_t *serial, size_t serial_len, int64_t when,
           struct error *err)
{
	return status_change(st, issuer_key_id, serial, serial_len,
	                     ISELAB__CERT_STATUS__CERT_STATUS_HOLD, when,
	                     STORE_REASON_CERTIFICATE_HOLD, err);
}

int
store_release(struct store *st, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
              const uint8_t *serial, size_t serial_len, int64_t when,
              struct error *err)
{
	return status_change(st, issuer_key_id, serial, serial_len,
	                     ISELAB__CERT_STATUS__CERT_STATUS_GOOD, when, 0,
	                     err);
}

static bool
filter_all(const struct store_filter *f)
{
	return f == NULL ||
	       (f->status == STORE_STATUS_ANY && f->issued_by == NULL);
}

static bool
filter_match(const struct store_filter *f, const Iselab__CertRecord *rec)
{
	if (f == NULL)
		return true;
	if (f->status != STORE_STATUS_ANY && (int)f->status != (int)rec->status)
		return false;
	if (f->issued_by != NULL && strcmp(f->issued_by, rec->issued_by) != 0)
		return false;
	return true;
}

static int
filter_check(const struct store_filter *f, struct error *err)
{
	if (f == NULL)
		return 0;
	switch (f->status) {
	case STORE_STATUS_ANY:
	case STORE_STATUS_GOOD:
	case STORE_STATUS_REVOKED:
	case STORE_STATUS_HOLD:
		return 0;
	}
	error_set(err, "invalid status %d in filter", (int)f->status);
	return -1;
}

int
store_list_certs(struct store *st, const struct store_filter *filter,
                 size_t limit, struct store_cursor *cursor,
                 struct store_cert_list *out, struct error *err)
{
	Iselab__CertRecord *rec;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t cap = 0, scanned = 0;
	bool match;
	int rc, ret = -1;

	memset(out, 0, sizeof(*out));
	if (limit == 0)
		limit = STORE_PAGE_DEFAULT;
	if (limit > STORE_PAGE_MAX) {
		error_set(err, "page of %zu records is over the limit of %d",
		          limit, STORE_PAGE_MAX);
		return -1;
	}
	if (filter_check(filter, err) == -1)
		return -1;
	if (cursor->len > STORE_PKEY_MAX) {
		error_set(err, "invalid cursor");
		return -1;
	}
	if (cursor->done)
		return 0;
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CERTS], &cur)) != 0) {
		store_fail(st, err, "mdb_cursor_open", "certs", rc);
		goto out;
	}
	/* Keyset paging: resume at the first key after the cursor. */
	if (cursor->len == 0) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	} else {
		k = (MDB_val){cursor->len, cursor->key};
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc == 0 && k.mv_size == cursor->len &&
		    memcmp(k.mv_data, cursor->key, cursor->len) == 0)
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	while (rc == 0) {
		/* The record under the cursor is unread: not done yet. */
		if (out->count == limit || scanned == STORE_SCAN_MAX)
			break;
		scanned++;
		if ((rec = record_unpack(st, &k, &v, err)) == NULL)
			goto out;
		match = filter_match(filter, rec);
		iselab__cert_record__free_unpacked(rec, NULL);
		if (match && list_append(st, out, &cap, &k, &v, err) == -1)
			goto out;
		memcpy(cursor->key, k.mv_data, k.mv_size);
		cursor->len = k.mv_size;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (rc == MDB_NOTFOUND)
		cursor->done = true;
	else if (rc != 0) {
		store_fail(st, err, "mdb_cursor_get", "certs", rc);
		goto out;
	}
	ret = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	txn_abort(txn);
	if (ret == -1)
		store_cert_list_free(out);
	return ret;
}

int
store_count_certs(struct store *st, const struct store_filter *filter,
                  size_t *count, struct error *err)
{
	Iselab__CertRecord *rec;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_stat ms;
	MDB_val k, v;
	int rc, ret = -1;

	*count = 0;
	if (filter_check(filter, err) == -1)
		return -1;
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if (filter_all(filter)) {
		if ((rc = mdb_stat(txn, st->dbi[STORE_DB_CERTS], &ms)) != 0) {
			store_fail(st, err, "mdb_stat", "certs", rc);
			goto out;
		}
		*count = ms.ms_entries;
		ret = 0;
		goto out;
	}
	if ((rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CERTS], &cur)) != 0) {
		store_fail(st, err, "mdb_cursor_open", "certs", rc);
		goto out;
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if ((rec = record_unpack(st, &k, &v, err)) == NULL)
			goto out;
		if (filter_match(filter, rec))
			(*count)++;
		iselab__cert_record__free_unpacked(rec, NULL);
	}
	if (rc != MDB_NOTFOUND) {
		store_fail(st, err, "mdb_cursor_get", "certs", rc);
		goto out;
	}
	ret = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	txn_abort(txn);
	if (ret == -1)
		*count = 0;
	return ret;
}

/* Is the (key, pkey) pair in a DUPSORT index? */
static int
index_has(const struct store *st, MDB_cursor *cur, const void *key, size_t klen,
          const MDB_val *pk, const char *object, struct error *err)
{
	MDB_val k = {klen, (void *)key}, v = *pk;
	int rc;

	rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH);
	if (rc == MDB_NOTFOUND)
		return store_corrupt(st, err, "record missing from an index",
		                     object);
	if (rc != 0)
		return store_fail(st, err, "mdb_cursor_get", object, rc);
	return 0;
}

/*
 * Walk one index: every entry must point at an existing record whose
 * serial / subject hash is the entry's key.
 */
static int
verify_index(struct store *st, MDB_txn *txn, enum store_db index,
             size_t *entries, struct error *err)
{
	Iselab__CertRecord *rec = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v, rv;
	uint8_t shash[STORE_SUBJECT_HASH_LEN];
	char object[STORE_KEY_STR_MAX];
	bool ok;
	int rc, ret = -1;

	*entries = 0;
	if ((rc = mdb_cursor_open(txn, st->dbi[index], &cur)) != 0)
		return store_fail(st, err, "mdb_cursor_open",
		                  store_tables[index].name, rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		(*entries)++;
		key_string(v.mv_data, v.mv_size, object);
		rc = mdb_get(txn, st->dbi[STORE_DB_CERTS], &v, &rv);
		if (rc == MDB_NOTFOUND) {
			store_corrupt(st, err, "index entry without record",
			              object);
			goto out;
		}
		if (rc != 0) {
			store_fail(st, err, "mdb_get", object, rc);
			goto out;
		}
		if ((rec = record_unpack(st, &v, &rv, err)) == NULL)
			goto out;
		if (index == STORE_DB_CERTS_BY_SERIAL) {
			ok =
			    k.mv_size == rec->serial.len &&
			    memcmp(k.mv_data, rec->serial.data, k.mv_size) == 0;
		} else {
			if (subject_hash(rec->subject, shash, err) == -1)
				goto out;
			ok = k.mv_size == sizeof(shash) &&
			     memcmp(k.mv_data, shash, sizeof(shash)) == 0;
		}
		iselab__cert_record__free_unpacked(rec, NULL);
		rec = NULL;
		if (!ok) {
			store_corrupt(st, err, "index entry under a wrong key",
			              object);
			goto out;
		}
	}
	if (rc != MDB_NOTFOUND) {
		store_fail(st, err, "mdb_cursor_get", store_tables[index].name,
		           rc);
		goto out;
	}
	ret = 0;
out:
	if (rec != NULL)
		iselab__cert_record__free_unpacked(rec, NULL);
	mdb_cursor_close(cur);
	return ret;
}

int
store_verify(struct store *st, struct store_verify_report *report,
             struct error *err)
{
	struct store_verify_report r = {0};
	Iselab__CertRecord *rec = NULL;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL, *bys = NULL, *bysub = NULL;
	MDB_val k, v;
	uint8_t shash[STORE_SUBJECT_HASH_LEN];
	char object[STORE_KEY_STR_MAX];
	int rc, ret = -1;

	if (report != NULL)
		memset(report, 0, sizeof(*report));
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CERTS], &cur)) != 0 ||
	    (rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CERTS_BY_SERIAL],
	                          &bys)) != 0 ||
	    (rc = mdb_cursor_open(txn, st->dbi[STORE_DB_CERTS_BY_SUBJECT],
	                          &bysub)) != 0) {
		store_fail(st, err, "mdb_cursor_open", NULL, rc);
		goto out;
	}
	/* Every record decodes and has its entry in each index... */
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		r.records++;
		key_string(k.mv_data, k.mv_size, object);
		if ((rec = record_unpack(st, &k, &v, err)) == NULL)
			goto out;
		if (index_has(st, bys, rec->serial.data, rec->serial.len, &k,
		              object, err) == -1)
			goto out;
		if (subject_hash(rec->subject, shash, err) == -1 ||
		    index_has(st, bysub, shash, sizeof(shash), &k, object,
		              err) == -1)
			goto out;
		iselab__cert_record__free_unpacked(rec, NULL);
		rec = NULL;
	}
	if (rc != MDB_NOTFOUND) {
		store_fail(st, err, "mdb_cursor_get", "certs", rc);
		goto out;
	}
	/*
	 * ...and every index entry points at a matching record.  With DUPSORT
	 * pairs unique, equal counts then make the mapping one to one.
	 */
	if (verify_index(st, txn, STORE_DB_CERTS_BY_SERIAL, &r.serial_entries,
	                 err) == -1 ||
	    verify_index(st, txn, STORE_DB_CERTS_BY_SUBJECT, &r.subject_entries,
	                 err) == -1)
		goto out;
	if (r.serial_entries != r.records || r.subject_entries != r.records) {
		snprintf(object, sizeof(object),
		         "%zu records, %zu serial and "
		         "%zu subject entries",
		         r.records, r.serial_entries, r.subject_entries);
		store_corrupt(st, err, "index and records disagree", object);
		goto out;
	}
	ret = 0;
out:
	if (rec != NULL)
		iselab__cert_record__free_unpacked(rec, NULL);
	if (cur != NULL)
		mdb_cursor_close(cur);
	if (bys != NULL)
		mdb_cursor_close(bys);
	if (bysub != NULL)
		mdb_cursor_close(bysub);
	txn_abort(txn);
	if (report != NULL)
		*report = r;
	return ret;
}

void
store_cursor_format(const struct store_cursor *cursor,
                    char buf[STORE_CURSOR_STR_MAX])
{
	if (cursor->len == 0 || cursor->len > STORE_PKEY_MAX) {
		buf[0] = '\0';
		return;
	}
	hex_encode(cursor->key, cursor->len, buf);
}

int
store_cursor_parse(const char *s, struct store_cursor *cursor,
                   struct error *err)
{
	size_t len = strlen(s);
	ssize_t n;

	memset(cursor, 0, sizeof(*cursor));
	if (len == 0)
		return 0;
	if (len % 2 != 0 || len > 2 * STORE_PKEY_MAX ||
	    (n = hex_decode(s, cursor->key, sizeof(cursor->key))) == -1 ||
	    (size_t)n <= STORE_KEY_ID_LEN) {
		memset(cursor, 0, sizeof(*cursor));
		error_set(err, "invalid cursor \"%.*s\"", 2 * STORE_PKEY_MAX,
		          s);
		return -1;
	}
	cursor->len = (size_t)n;
	return 0;
}

char *
store_subject_string(const X509_NAME *name, struct error *err)
{
	BIO *bio = NULL;
	char *data, *s = NULL;
	long len;

	if (name == NULL) {
		error_set(err, "no name");
		return NULL;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		log_crypto(LOG_MAIN, err, "BIO_new", NULL);
		return NULL;
	}
	/* RFC 2253 order and escaping, but UTF-8 kept readable. */
	if (X509_NAME_print_ex(bio, name, 0,
	                       XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
		log_crypto(LOG_MAIN, err, "X509_NAME_print_ex", NULL);
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	if (len < 0 || (s = malloc((size_t)len + 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	memcpy(s, data, (size_t)len);
	s[len] = '\0';
	if (strlen(s) != (size_t)len) {
		error_set(err, "subject contains a NUL byte");
		free(s);
		s = NULL;
	}
out:
	BIO_free(bio);
	return s;
}

int
store_issuer_key_id(const X509 *issuer, uint8_t out[STORE_KEY_ID_LEN],
                    struct error *err)
{
	unsigned int len = 0;

	/* Hashes the subjectPublicKey BIT STRING contents: the RFC 5280
	 * section 4.2.1.2 method (1) key id and RFC 6960 issuerKeyHash. */
	if (!X509_pubkey_digest(issuer, EVP_sha1(), out, &len) ||
	    len != STORE_KEY_ID_LEN) {
		log_crypto(LOG_MAIN, err, "X509_pubkey_digest", NULL);
		return -1;
	}
	return 0;
}

/* --- generic tables --- */

const char *
store_table_name(enum store_table t)
{
	if ((unsigned)t >= STORE_TABLE_COUNT)
		return "?";
	return store_tables[store_table_db[t]].name;
}

/* The table's database, or -1 for a value outside the enum. */
static int
kv_db(enum store_table t, enum store_db *db, struct error *err)
{
	if ((unsigned)t >= STORE_TABLE_COUNT) {
		error_set(err, "no store table %d", (int)t);
		return -1;
	}
	*db = store_table_db[t];
	return 0;
}

static int
kv_check(enum store_table t, const void *key, size_t klen, const void *val,
         size_t vlen, bool with_val, struct error *err)
{
	enum store_db db;

	if (kv_db(t, &db, err) == -1)
		return -1;
	/* LMDB refuses empty keys and keys over its compiled-in limit. */
	if (key == NULL || klen == 0 || klen > STORE_KV_KEY_MAX) {
		error_set(err, "%s: key of %zu bytes (1 to %d allowed)",
		          store_tables[db].name, key == NULL ? 0 : klen,
		          STORE_KV_KEY_MAX);
		return -1;
	}
	if (with_val &&
	    ((val == NULL && vlen != 0) || vlen > STORE_KV_VALUE_MAX)) {
		error_set(err, "%s: value of %zu bytes (at most %d allowed)",
		          store_tables[db].name, vlen, STORE_KV_VALUE_MAX);
		return -1;
	}
	return 0;
}

/* "nodes/psn1", or the key in hex when it is not printable. */
static void
kv_object(enum store_db db, const void *key, size_t klen, char *buf, size_t len)
{
	const uint8_t *k = key;
	char hex[2 * 32 + 1];
	size_t i;
	bool text = klen <= 64;

	for (i = 0; text && i < klen; i++)
		if (k[i] < 0x20 || k[i] > 0x7e)
			text = false;
	if (text) {
		snprintf(buf, len, "%s/%.*s", store_tables[db].name, (int)klen,
		         (const char *)key);
		return;
	}
	hex_encode(k, klen < 32 ? klen : 32, hex);
	snprintf(buf, len, "%s/%s%s", store_tables[db].name, hex,
	         klen > 32 ? "..." : "");
}

/* Write one kv operation in the open transaction; del may find nothing. */
static int
kv_put_txn(struct store *st, MDB_txn *txn, enum store_db db, const void *key,
           size_t klen, const void *val, size_t vlen, struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	int rc;

	/* An empty value: LMDB wants a valid pointer even for 0 bytes. */
	if (vlen == 0)
		v.mv_data = (void *)"";
	if ((rc = mdb_put(txn, st->dbi[db], &k, &v, 0)) != 0) {
		kv_object(db, key, klen, object, sizeof(object));
		return store_fail(st, err, "mdb_put", object, rc);
	}
	return 0;
}

static int
kv_del_txn(struct store *st, MDB_txn *txn, enum store_db db, const void *key,
           size_t klen, struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	MDB_val k = {klen, (void *)key};
	int rc;

	rc = mdb_del(txn, st->dbi[db], &k, NULL);
	if (rc == MDB_NOTFOUND)
		return STORE_NOT_FOUND;
	if (rc != 0) {
		kv_object(db, key, klen, object, sizeof(object));
		return store_fail(st, err, "mdb_del", object, rc);
	}
	return STORE_OK;
}

int
store_kv_put(struct store *st, enum store_table t, const void *key, size_t klen,
             const void *val, size_t vlen, struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	enum store_db db;
	MDB_txn *txn = NULL;

	if (kv_check(t, key, klen, val, vlen, true, err) == -1 ||
	    kv_db(t, &db, err) == -1)
		return -1;
	if (txn_begin(st, true, &txn, err) == -1)
		return -1;
	if (kv_put_txn(st, txn, db, key, klen, val, vlen, err) == -1) {
		txn_abort(txn);
		return -1;
	}
	kv_object(db, key, klen, object, sizeof(object));
	return txn_commit(st, txn, object, err);
}

int
store_kv_get(struct store *st, enum store_table t, const void *key, size_t klen,
             uint8_t **val, size_t *vlen, struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	enum store_db db;
	MDB_txn *txn = NULL;
	MDB_val k = {klen, (void *)key}, v;
	int rc, ret = -1;

	*val = NULL;
	*vlen = 0;
	if (kv_check(t, key, klen, NULL, 0, false, err) == -1 ||
	    kv_db(t, &db, err) == -1)
		return -1;
	if (!st->present[db])
		return STORE_NOT_FOUND;
	kv_object(db, key, klen, object, sizeof(object));
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	rc = mdb_get(txn, st->dbi[db], &k, &v);
	if (rc == MDB_NOTFOUND) {
		ret = STORE_NOT_FOUND;
		goto out;
	}
	if (rc != 0) {
		store_fail(st, err, "mdb_get", object, rc);
		goto out;
	}
	if (v.mv_size > STORE_KV_VALUE_MAX) {
		store_corrupt(st, err, "value over the size limit", object);
		goto out;
	}
	/* v points into the map, valid only until the txn ends: copy. */
	if ((*val = malloc(v.mv_size + 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	memcpy(*val, v.mv_data, v.mv_size);
	(*val)[v.mv_size] = '\0';
	*vlen = v.mv_size;
	ret = STORE_OK;
out:
	txn_abort(txn);
	return ret;
}

int
store_kv_del(struct store *st, enum store_table t, const void *key, size_t klen,
             struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	enum store_db db;
	MDB_txn *txn = NULL;
	int ret;

	if (kv_check(t, key, klen, NULL, 0, false, err) == -1 ||
	    kv_db(t, &db, err) == -1)
		return -1;
	if (txn_begin(st, true, &txn, err) == -1)
		return -1;
	ret = kv_del_txn(st, txn, db, key, klen, err);
	if (ret != STORE_OK) {
		txn_abort(txn);
		return ret;
	}
	kv_object(db, key, klen, object, sizeof(object));
	return txn_commit(st, txn, object, err) == -1 ? -1 : STORE_OK;
}

int
store_kv_foreach(struct store *st, enum store_table t,
                 int (*fn)(void *ctx, const void *key, size_t klen,
                           const void *val, size_t vlen),
                 void *ctx, struct error *err)
{
	return store_kv_foreach_from(st, t, NULL, 0, fn, ctx, err);
}

int
store_kv_foreach_from(struct store *st, enum store_table t, const void *start,
                      size_t slen,
                      int (*fn)(void *ctx, const void *key, size_t klen,
                                const void *val, size_t vlen),
                      void *ctx, struct error *err)
{
	enum store_db db;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc, ret = -1;

	if (kv_db(t, &db, err) == -1)
		return -1;
	if (fn == NULL) {
		error_set(err, "%s: no function to call",
		          store_tables[db].name);
		return -1;
	}
	if (start != NULL && (slen == 0 || slen > STORE_KV_KEY_MAX)) {
		error_set(err, "%s: a start key has 1 to %d bytes",
		          store_tables[db].name, STORE_KV_KEY_MAX);
		return -1;
	}
	if (!st->present[db])
		return 0;
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->dbi[db], &cur)) != 0) {
		store_fail(st, err, "mdb_cursor_open", store_tables[db].name,
		           rc);
		goto out;
	}
	if (start != NULL) {
		k.mv_data = (void *)start;
		k.mv_size = slen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	} else
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if ((ret = fn(ctx, k.mv_data, k.mv_size, v.mv_data,
		              v.mv_size)) != 0)
			goto out;
	}
	ret = -1;
	if (rc != MDB_NOTFOUND) {
		store_fail(st, err, "mdb_cursor_get", store_tables[db].name,
		           rc);
		goto out;
	}
	ret = 0;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	txn_abort(txn);
	return ret;
}

int
store_kv_last(struct store *st, enum store_table t, uint8_t **key,
              size_t *klen, struct error *err)
{
	enum store_db db;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc, ret = -1;

	*key = NULL;
	*klen = 0;
	if (kv_db(t, &db, err) == -1)
		return -1;
	if (!st->present[db])
		return STORE_NOT_FOUND;
	if (txn_begin(st, false, &txn, err) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, st->dbi[db], &cur)) != 0) {
		store_fail(st, err, "mdb_cursor_open", store_tables[db].name,
		           rc);
		goto out;
	}
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND) {
		ret = STORE_NOT_FOUND;
		goto out;
	}
	if (rc != 0) {
		store_fail(st, err, "mdb_cursor_get", store_tables[db].name,
		           rc);
		goto out;
	}
	if ((*key = malloc(k.mv_size + 1)) == NULL) {
		error_set(err, "out of memory");
		goto out;
	}
	memcpy(*key, k.mv_data, k.mv_size);
	(*key)[k.mv_size] = 0;
	*klen = k.mv_size;
	ret = STORE_OK;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	txn_abort(txn);
	return ret;
}

/* --- write batches --- */

enum batch_op_type {
	BATCH_KV_PUT,
	BATCH_KV_DEL,
	BATCH_PUT_CERT,
	BATCH_REVOKE,
	BATCH_SET_STATUS,
};

/* One operation of a batch; everything it points at is owned by it. */
struct batch_op {
	enum batch_op_type type;
	enum store_db db;             /* KV_*: the table */
	uint8_t *key;                 /* KV_*: the key */
	size_t klen;                  /* KV_*: bytes of key */
	uint8_t *val;                 /* KV_PUT: the value (may be empty) */
	size_t vlen;                  /* KV_PUT: bytes of val */
	struct cert_put cert;         /* PUT_CERT: the prepared record */
	uint8_t pkey[STORE_PKEY_MAX]; /* REVOKE: issuer key id || serial */
	size_t plen;                  /* REVOKE: bytes of pkey */
	int64_t when;                 /* REVOKE: revocation time */
	int reason;                   /* REVOKE: CRLReason */
	Iselab__CertStatus status;    /* SET_STATUS: the status to set */
};

struct store_batch {
	struct batch_op *ops; /* in the order added */
	size_t count;         /* ops in use */
	size_t cap;           /* ops allocated */
	bool failed;          /* an add was refused: apply refuses all */
	struct error err;     /* why the first refused add was refused */
};

struct store_batch *
store_batch_new(void)
{
	return calloc(1, sizeof(struct store_batch));
}

static void
batch_op_clear(struct batch_op *op)
{
	free(op->key);
	free(op->val);
	cert_put_clear(&op->cert);
	memset(op, 0, sizeof(*op));
}

void
store_batch_free(struct store_batch *b)
{
	size_t i;

	if (b == NULL)
		return;
	for (i = 0; i < b->count; i++)
		batch_op_clear(&b->ops[i]);
	free(b->ops);
	free(b);
}

size_t
store_batch_count(const struct store_batch *b)
{
	return b != NULL ? b->count : 0;
}

/* A refused add: remember the first reason for store_apply(). */
static int
batch_refuse(struct store_batch *b, const struct error *why)
{
	if (!b->failed) {
		b->failed = true;
		error_set(&b->err, "operation %zu of the batch refused: %s",
		          b->count + 1, why->msg);
	}
	return -1;
}

/* A zeroed slot at the end of the batch, not yet counted. */
static struct batch_op *
batch_slot(struct store_batch *b)
{
	struct error e;
	struct batch_op *grown;
	size_t ncap;

	if (b->count == STORE_BATCH_OPS_MAX) {
		error_set(&e, "over the limit of %d operations",
		          STORE_BATCH_OPS_MAX);
		batch_refuse(b, &e);
		return NULL;
	}
	if (b->count == b->cap) {
		ncap = b->cap == 0 ? 8 : b->cap * 2;
		if ((grown = reallocarray(b->ops, ncap, sizeof(*grown))) ==
		    NULL) {
			error_set(&e, "out of memory");
			batch_refuse(b, &e);
			return NULL;
		}
		b->ops = grown;
		b->cap = ncap;
	}
	memset(&b->ops[b->count], 0, sizeof(b->ops[0]));
	return &b->ops[b->count];
}

static int
batch_kv(struct store_batch *b, enum batch_op_type type, enum store_table t,
         const void *key, size_t klen, const void *val, size_t vlen)
{
	struct batch_op *op;
	struct error e;

	if (b == NULL)
		return -1;
	if (kv_check(t, key, klen, val, vlen, type == BATCH_KV_PUT, &e) == -1)
		return batch_refuse(b, &e);
	if ((op = batch_slot(b)) == NULL)
		return -1;
	op->type = type;
	(void)kv_db(t, &op->db, NULL);
	op->klen = klen;
	op->vlen = vlen;
	if ((op->key = malloc(klen)) == NULL ||
	    (type == BATCH_KV_PUT && (op->val = malloc(vlen + 1)) == NULL)) {
		batch_op_clear(op);
		error_set(&e, "out of memory");
		return batch_refuse(b, &e);
	}
	memcpy(op->key, key, klen);
	if (type == BATCH_KV_PUT && vlen > 0)
		memcpy(op->val, val, vlen);
	b->count++;
	return 0;
}

int
store_batch_kv_put(struct store_batch *b, enum store_table t, const void *key,
                   size_t klen, const void *val, size_t vlen)
{
	return batch_kv(b, BATCH_KV_PUT, t, key, klen, val, vlen);
}

int
store_batch_kv_del(struct store_batch *b, enum store_table t, const void *key,
                   size_t klen)
{
	return batch_kv(b, BATCH_KV_DEL, t, key, klen, NULL, 0);
}

int
store_batch_put_x509(struct store_batch *b, X509 *cert,
                     const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                     const char *issued_by, const char *profile,
                     int64_t issued_at)
{
	struct store_cert c;
	struct batch_op *op;
	struct error e;
	int rc;

	if (b == NULL)
		return -1;
	if (cert == NULL || issuer_key_id == NULL) {
		error_set(&e, "no certificate or no issuer key id");
		return batch_refuse(b, &e);
	}
	if (x509_to_cert(cert, issuer_key_id, issued_by, profile, issued_at, &c,
	                 &e) == -1)
		return batch_refuse(b, &e);
	if ((op = batch_slot(b)) == NULL) {
		cert_clear(&c);
		return -1;
	}
	op->type = BATCH_PUT_CERT;
	rc = cert_put_prepare(&c, &op->cert, &e);
	cert_clear(&c);
	if (rc == -1) {
		batch_op_clear(op);
		return batch_refuse(b, &e);
	}
	b->count++;
	return 0;
}

int
store_batch_revoke(struct store_batch *b,
                   const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                   const uint8_t *serial, size_t serial_len, int64_t when,
                   int reason)
{
	struct batch_op *op;
	struct error e;
	uint8_t pkey[STORE_PKEY_MAX];
	size_t plen;

	if (b == NULL)
		return -1;
	if (issuer_key_id == NULL) {
		error_set(&e, "no issuer key id");
		return batch_refuse(b, &e);
	}
	if (!reason_revocable(reason)) {
		error_set(&e, "reason %d (%s) cannot be used to revoke", reason,
		          store_reason_name(reason));
		return batch_refuse(b, &e);
	}
	if (status_key(issuer_key_id, serial, serial_len, when, pkey, &plen,
	               &e) == -1)
		return batch_refuse(b, &e);
	if ((op = batch_slot(b)) == NULL)
		return -1;
	op->type = BATCH_REVOKE;
	memcpy(op->pkey, pkey, plen);
	op->plen = plen;
	op->when = when;
	op->reason = reason;
	b->count++;
	return 0;
}

int
store_batch_set_status(struct store_batch *b,
                       const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                       const uint8_t *serial, size_t serial_len,
                       enum store_cert_status status, int64_t when,
                       int reason)
{
	struct batch_op *op;
	struct error e;
	uint8_t pkey[STORE_PKEY_MAX];
	size_t plen;

	if (b == NULL)
		return -1;
	if (issuer_key_id == NULL) {
		error_set(&e, "no issuer key id");
		return batch_refuse(b, &e);
	}
	switch (status) {
	case STORE_STATUS_GOOD:
		break;
	case STORE_STATUS_HOLD:
		if (reason != STORE_REASON_CERTIFICATE_HOLD) {
			error_set(&e, "hold with reason %d", reason);
			return batch_refuse(b, &e);
		}
		break;
	case STORE_STATUS_REVOKED:
		if (!reason_revocable(reason)) {
			error_set(&e, "reason %d (%s) cannot be used to revoke",
			          reason, store_reason_name(reason));
			return batch_refuse(b, &e);
		}
		break;
	default:
		error_set(&e, "status %d cannot be set", (int)status);
		return batch_refuse(b, &e);
	}
	if (status_key(issuer_key_id, serial, serial_len, when, pkey, &plen,
	               &e) == -1)
		return batch_refuse(b, &e);
	if ((op = batch_slot(b)) == NULL)
		return -1;
	op->type = BATCH_SET_STATUS;
	memcpy(op->pkey, pkey, plen);
	op->plen = plen;
	op->when = when;
	op->reason = reason;
	op->status = (Iselab__CertStatus)status;
	b->count++;
	return 0;
}

/*
 * One operation in the open transaction.  STORE_OK, or what makes the
 * whole batch fail (STORE_EXISTS, STORE_NOT_FOUND, -1) with err set.
 */
static int
batch_op_apply(struct store *st, MDB_txn *txn, const struct batch_op *op,
               size_t n, struct error *err)
{
	char object[STORE_KEY_STR_MAX];
	int rc;

	switch (op->type) {
	case BATCH_KV_PUT:
		return kv_put_txn(st, txn, op->db, op->key, op->klen, op->val,
		                  op->vlen, err);
	case BATCH_KV_DEL:
		rc = kv_del_txn(st, txn, op->db, op->key, op->klen, err);
		return rc == STORE_NOT_FOUND ? STORE_OK : rc;
	case BATCH_PUT_CERT:
		rc = put_cert_txn(st, txn, &op->cert, err);
		if (rc == STORE_EXISTS)
			error_set(err,
			          "operation %zu of the batch: %s is already "
			          "stored",
			          n, op->cert.object);
		return rc;
	case BATCH_REVOKE:
		rc = status_change_txn(st, txn, op->pkey, op->plen,
		                       ISELAB__CERT_STATUS__CERT_STATUS_REVOKED,
		                       op->when, op->reason, false, err);
		if (rc == STORE_NOT_FOUND) {
			key_string(op->pkey, op->plen, object);
			error_set(err,
			          "operation %zu of the batch: no certificate "
			          "%s to revoke",
			          n, object);
		}
		return rc == STORE_UNCHANGED ? STORE_OK : rc;
	case BATCH_SET_STATUS:
		rc = status_change_txn(st, txn, op->pkey, op->plen, op->status,
		                       op->when, op->reason, true, err);
		/* Not held here: nothing to set (another node's certificate). */
		return rc == STORE_NOT_FOUND ? STORE_OK : rc;
	}
	error_set(err, "operation %zu of the batch: unknown type", n);
	return -1;
}

int
store_apply(struct store *st, struct store_batch *b, struct error *err)
{
	MDB_txn *txn = NULL;
	char object[64];
	size_t i;
	int rc;

	if (b == NULL) {
		error_set(err, "no batch");
		return -1;
	}
	if (b->failed) {
		error_set(err, "%s", b->err.msg);
		return -1;
	}
	if (b->count == 0)
		return STORE_OK;
	if (txn_begin(st, true, &txn, err) == -1)
		return -1;
	for (i = 0; i < b->count; i++) {
		if ((rc = batch_op_apply(st, txn, &b->ops[i], i + 1, err)) !=
		    STORE_OK) {
			/* Nothing of the batch becomes visible. */
			txn_abort(txn);
			return rc;
		}
	}
	snprintf(object, sizeof(object), "batch of %zu operations", b->count);
	return txn_commit(st, txn, object, err) == -1 ? -1 : STORE_OK;
}
