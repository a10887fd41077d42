/*
 * store: a node's durable state in one LMDB environment in its data dir
 * (DESIGN.md section 4).  This module owns the environment, the table of
 * named databases, the schema version, and the issued-certificate tables
 * that the CA service writes and the OCSP responder, EST server and admin
 * commands read.  It also keeps generic key-value tables (node registry,
 * join tokens, alarms, deployment config) whose values are opaque to the
 * store (their owners encode them, proto/registry.proto), and write
 * batches that apply certificates and key-value changes in one
 * transaction, all or nothing.
 *
 * Every call runs in its own LMDB transaction and never leaves one open, so
 * a struct store may be shared by the threads of one process.  Reads run on
 * an MVCC snapshot and never wait for a writer; writers are serialised by
 * LMDB across every process of the node.  A write returns only after its
 * transaction is committed and synced to disk (LMDB's default sync mode):
 * whatever the store acknowledged survives a crash of the process or of
 * the machine.
 *
 * An open store must not be used across fork(): LMDB's locks belong to the
 * process that opened the environment.  Fork first, then store_open() in
 * the process that uses it.  A child that inherited an open store leaves
 * it alone, store_close() included (closing would free the parent's LMDB
 * reader slots).  docs/storage.md describes the format.
 */
#ifndef ISELAB_STORE_H
#define ISELAB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

struct error;
struct store;

/* Schema version this build writes; see docs/storage.md for the history. */
#define STORE_SCHEMA_VERSION 1

/* Default map size: room for about a million certificates (sparse file). */
#define STORE_MAP_SIZE_DEFAULT ((size_t)4 << 30)
/* Smallest map size we accept: below it a store fills up in normal use. */
#define STORE_MAP_SIZE_MIN ((size_t)1 << 20)
/* Default reader slots: LMDB's own default; one per concurrent read txn. */
#define STORE_READERS_DEFAULT 126
/* Issuer key id: SHA-1 of the issuer's subjectPublicKey BIT STRING bits. */
#define STORE_KEY_ID_LEN 20
/* Longest serial, in bytes of magnitude (RFC 5280 section 4.1.2.2). */
#define STORE_SERIAL_MAX 20
/* Longest primary key: issuer key id followed by the serial. */
#define STORE_PKEY_MAX (STORE_KEY_ID_LEN + STORE_SERIAL_MAX)
/* Largest encoded record we store; certificates are a few KiB at most. */
#define STORE_RECORD_MAX (64 * 1024)
/* Largest certificate DER inside a record. */
#define STORE_DER_MAX (STORE_RECORD_MAX - 8 * 1024)
/* Longest subject (RFC 2253 string) we store. */
#define STORE_SUBJECT_MAX 4096
/* Longest node hostname and profile name in a record. */
#define STORE_NAME_MAX 255
/* Most records one store_list_certs() call returns. */
#define STORE_PAGE_MAX 1000
/* Records per page when the caller asks for 0. */
#define STORE_PAGE_DEFAULT 100
/* Most records one store_find_by_*() call returns; more sets truncated. */
#define STORE_FIND_MAX 1000
/* Buffer for a cursor as text: hex of a primary key and a NUL. */
#define STORE_CURSOR_STR_MAX (2 * STORE_PKEY_MAX + 1)

/*
 * Results besides 0 and -1.  Functions return int; -1 always means an error
 * with err set (a refused argument, a refused transition, an LMDB failure).
 */
enum store_result {
	STORE_OK = 0,
	STORE_EXISTS = 1,    /* put: a record with that key is already there */
	STORE_NOT_FOUND = 2, /* get/status: no record with that key */
	STORE_UNCHANGED = 3, /* status: already in the requested state */
};

/* Values match proto/store.proto CertStatus. */
enum store_cert_status {
	STORE_STATUS_ANY = 0, /* only in filters: any status */
	STORE_STATUS_GOOD = 1,
	STORE_STATUS_REVOKED = 2,
	STORE_STATUS_HOLD = 3,
};

/* CRLReason codes, RFC 5280 section 5.3.1 (7 is not used). */
enum store_crl_reason {
	STORE_REASON_UNSPECIFIED = 0,
	STORE_REASON_KEY_COMPROMISE = 1,
	STORE_REASON_CA_COMPROMISE = 2,
	STORE_REASON_AFFILIATION_CHANGED = 3,
	STORE_REASON_SUPERSEDED = 4,
	STORE_REASON_CESSATION_OF_OPERATION = 5,
	STORE_REASON_CERTIFICATE_HOLD = 6,
	STORE_REASON_REMOVE_FROM_CRL = 8,
	STORE_REASON_PRIVILEGE_WITHDRAWN = 9,
	STORE_REASON_AA_COMPROMISE = 10,
};

struct store_opts {
	size_t map_size;      /* 0: STORE_MAP_SIZE_DEFAULT */
	unsigned max_readers; /* 0: STORE_READERS_DEFAULT */
	bool read_only;       /* open an existing store for reading only */
};

/*
 * One issued certificate.  For store_put_cert() the caller fills it and
 * keeps ownership of the pointers.  Records the store returns are
 * allocated by the store, members included, and released only with
 * store_cert_free() / store_cert_list_free().
 */
struct store_cert {
	uint8_t issuer_key_id[STORE_KEY_ID_LEN];
	uint8_t serial[STORE_SERIAL_MAX]; /* big-endian magnitude */
	size_t serial_len;
	uint8_t *der; /* the certificate, DER */
	size_t der_len;
	char *subject;      /* RFC 2253, as store_subject_string() makes it */
	int64_t not_before; /* seconds since the epoch, UTC */
	int64_t not_after;
	int64_t issued_at;
	char *issued_by; /* hostname of the issuing node; may be NULL on put */
	char *profile;   /* template name; may be NULL on put */
	enum store_cert_status status;
	int64_t revoked_at; /* REVOKED/HOLD: revocation time, else 0 */
	int reason;         /* REVOKED/HOLD: enum store_crl_reason, else 0 */
	int64_t updated_at; /* last status change, 0 if never */
};

struct store_cert_list {
	struct store_cert *certs;
	size_t count;
	bool truncated; /* find: more than STORE_FIND_MAX matched */
};

/* Which records store_list_certs() and store_count_certs() consider. */
struct store_filter {
	enum store_cert_status status; /* STORE_STATUS_ANY: all */
	const char *issued_by;         /* NULL: every node */
};

/*
 * Where the next page starts: the primary key of the last record returned.
 * Zero it to start from the beginning; done is set when the last page has
 * been returned.  Records added or removed between pages do not make the
 * walk repeat or skip any record that exists throughout.
 */
struct store_cursor {
	uint8_t key[STORE_PKEY_MAX];
	size_t len;
	bool done;
};

/* What store_verify() saw. */
struct store_verify_report {
	size_t records;         /* entries in the primary table */
	size_t serial_entries;  /* entries in the serial index */
	size_t subject_entries; /* entries in the subject index */
};

/*
 * Generic tables: keys and values are bytes the store does not interpret.
 * Their owners (the PAN registry) define what they hold; docs/storage.md
 * lists them.
 */
enum store_table {
	STORE_TABLE_NODES,  /* hostname -> node record */
	STORE_TABLE_TOKENS, /* token id -> join token record */
	STORE_TABLE_ALARMS, /* alarm key -> alarm record */
	STORE_TABLE_CONFIG, /* setting name -> value */
	STORE_TABLE_OUTBOX, /* PSN: issued_at_ms || serial -> OutboxItem */
	STORE_TABLE_EVENTS, /* admin nodes: seq (8 bytes BE) -> Event */
	STORE_TABLE_OUTBOX_REFUSED, /* PSN: outbox key -> OutboxRefusal */
	STORE_TABLE_OUTBOX_ACKED, /* PSN: acked_at_ms || outbox key -> item */
	STORE_TABLE_COUNT
};

/* Longest key of a generic table: LMDB's compiled-in key limit. */
#define STORE_KV_KEY_MAX 511
/* Largest value of a generic table; records are a few KiB at most. */
#define STORE_KV_VALUE_MAX (1024 * 1024)
/* Most operations one batch may hold; a join writes a handful. */
#define STORE_BATCH_OPS_MAX 10000

/*
 * Open (and create, unless read_only) the store in dir, creating dir 0700
 * when absent.  A new store gets STORE_SCHEMA_VERSION; an older store is
 * migrated in one transaction or refused; a newer one is refused.  opts may
 * be NULL for defaults.
 */
int store_open(const char *dir, const struct store_opts *opts,
               struct store **out, struct error *err);
void store_close(struct store *st);
const char *store_path(const struct store *st);

/*
 * Insert a record.  Returns STORE_OK, STORE_EXISTS when that issuer key id
 * and serial are already stored (the stored record is left as it is, so
 * redelivery is harmless), or -1.  The serial's leading zero bytes are
 * ignored; a zero serial is refused.
 */
int store_put_cert(struct store *st, const struct store_cert *cert,
                   struct error *err);

/*
 * Insert an issued certificate, taking subject, serial and validity from
 * it; status GOOD.  The certificate's authority key identifier, when
 * present, must equal issuer_key_id.  Returns as store_put_cert().
 */
int store_put_x509(struct store *st, X509 *cert,
                   const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                   const char *issued_by, const char *profile,
                   int64_t issued_at, struct error *err);

/*
 * The serial of cert as the store keys it (the magnitude without leading
 * zero bytes), into out; *len its length.  0, or -1 for a zero, negative
 * or too long serial.
 */
int store_x509_serial(X509 *cert, uint8_t out[STORE_SERIAL_MAX], size_t *len,
                      struct error *err);

/* Returns STORE_OK with *out set, STORE_NOT_FOUND, or -1. */
int store_get_cert(struct store *st,
                   const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                   const uint8_t *serial, size_t serial_len,
                   struct store_cert **out, struct error *err);

/* Every record with this serial, any issuer.  0 or -1; out may be empty. */
int store_find_by_serial(struct store *st, const uint8_t *serial,
                         size_t serial_len, struct store_cert_list *out,
                         struct error *err);

/*
 * Every record whose subject matches; subjects compare as RFC 2253
 * strings with ASCII letters folded to lower case.  0 or -1.
 */
int store_find_by_subject(struct store *st, const char *subject,
                          struct store_cert_list *out, struct error *err);

/*
 * Status changes.  Each returns STORE_OK, STORE_UNCHANGED, STORE_NOT_FOUND
 * or -1 with err saying why the transition is refused:
 * - revoke: GOOD or HOLD -> REVOKED with time and reason (not
 *   certificateHold, not removeFromCRL).  Revoking a REVOKED record is
 *   STORE_UNCHANGED and keeps the first time and reason, so a replayed
 *   revocation event is harmless.
 * - hold: GOOD -> HOLD (reason certificateHold).  HOLD again is
 *   STORE_UNCHANGED; a REVOKED record cannot be held.
 * - release: HOLD -> GOOD only; anything else is refused.
 */
int store_revoke(struct store *st,
                 const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                 const uint8_t *serial, size_t serial_len, int64_t when,
                 int reason, struct error *err);
int store_hold(struct store *st, const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
               const uint8_t *serial, size_t serial_len, int64_t when,
               struct error *err);
int store_release(struct store *st,
                  const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                  const uint8_t *serial, size_t serial_len, int64_t when,
                  struct error *err);

/*
 * One page of records in key order (issuer key id, then serial bytes),
 * starting after *cursor, at most limit (0: STORE_PAGE_DEFAULT; above
 * STORE_PAGE_MAX refused), filtered by filter (NULL: all).  *cursor is
 * advanced.  0 or -1.
 */
int store_list_certs(struct store *st, const struct store_filter *filter,
                     size_t limit, struct store_cursor *cursor,
                     struct store_cert_list *out, struct error *err);
/* Records matching filter (NULL: all, answered without a scan). */
int store_count_certs(struct store *st, const struct store_filter *filter,
                      size_t *count, struct error *err);

/*
 * Check, in one read snapshot, that every record decodes and matches its
 * key and that the indexes hold exactly one entry per record, each pointing
 * at an existing record with that serial / subject.  0 when consistent,
 * -1 with err naming the first problem.  report may be NULL.
 */
int store_verify(struct store *st, struct store_verify_report *report,
                 struct error *err);

void store_cert_free(struct store_cert *cert);
void store_cert_list_free(struct store_cert_list *list);

/* Cursor as text for a CLI or a message, and back ("" is the start). */
void store_cursor_format(const struct store_cursor *cursor,
                         char buf[STORE_CURSOR_STR_MAX]);
int store_cursor_parse(const char *s, struct store_cursor *cursor,
                       struct error *err);

/*
 * The subject string the store keeps and indexes: RFC 2253 with UTF-8
 * left as is.  malloc'd; NULL with err set.
 */
char *store_subject_string(const X509_NAME *name, struct error *err);

/* The issuer key id of a CA certificate (SHA-1 of its public key bits). */
int store_issuer_key_id(const X509 *issuer, uint8_t out[STORE_KEY_ID_LEN],
                        struct error *err);

/*
 * Generic tables.  Keys are 1 to STORE_KV_KEY_MAX bytes, values 0 to
 * STORE_KV_VALUE_MAX bytes.  Each call is its own transaction; a put or
 * del is durable when it returns.
 * - put: insert or replace.  0 or -1.
 * - get: STORE_OK with *val a malloc'd copy (free() it; a NUL byte
 *   follows the value, not counted in *vlen, so text can be used as a
 *   string), STORE_NOT_FOUND, or -1.
 * - del: STORE_OK, STORE_NOT_FOUND, or -1.
 * - foreach: every pair in key order (bytewise, shorter first on a tie)
 *   in one read snapshot.  The pointers are valid only during the call,
 *   and fn must not call the store (one transaction per thread).  fn
 *   returning non-zero stops the walk and foreach returns that value;
 *   otherwise 0 after the last pair, or -1 on a store error.
 * A store opened read-only that predates a table reads it as empty.
 */
int store_kv_put(struct store *st, enum store_table t, const void *key,
                 size_t klen, const void *val, size_t vlen, struct error *err);
int store_kv_get(struct store *st, enum store_table t, const void *key,
                 size_t klen, uint8_t **val, size_t *vlen, struct error *err);
int store_kv_del(struct store *st, enum store_table t, const void *key,
                 size_t klen, struct error *err);
int store_kv_foreach(struct store *st, enum store_table t,
                     int (*fn)(void *ctx, const void *key, size_t klen,
                               const void *val, size_t vlen),
                     void *ctx, struct error *err);

/*
 * As foreach, from the first key >= start (start NULL: the first key),
 * for a walk that resumes where a previous one stopped.
 */
int store_kv_foreach_from(struct store *st, enum store_table t,
                          const void *start, size_t slen,
                          int (*fn)(void *ctx, const void *key, size_t klen,
                                    const void *val, size_t vlen),
                          void *ctx, struct error *err);
/*
 * The greatest key of a table: STORE_OK with *key a malloc'd copy (free()
 * it), STORE_NOT_FOUND when the table is empty, or -1.
 */
int store_kv_last(struct store *st, enum store_table t, uint8_t **key,
                  size_t *klen, struct error *err);

/* "nodes", "tokens", "alarms", "config", "outbox", "events"; "?" otherwise. */
const char *store_table_name(enum store_table t);

/*
 * A write batch: operations collected in memory, then applied by
 * store_apply() in one write transaction, in the order they were added.
 * The adders copy what they are given (the caller may free its X509 and
 * buffers at once) and check their arguments; they return 0, or -1 when
 * an argument is refused or memory runs out.  A refused add also marks
 * the batch failed, so that store_apply() refuses the whole batch with
 * the reason even if the caller did not check the add.
 */
struct store_batch;

struct store_batch *store_batch_new(void);
void store_batch_free(struct store_batch *b);
/* Operations in the batch (a refused add is not counted). */
size_t store_batch_count(const struct store_batch *b);

int store_batch_kv_put(struct store_batch *b, enum store_table t,
                       const void *key, size_t klen, const void *val,
                       size_t vlen);
/* Deleting a key that is not there is not an error in a batch. */
int store_batch_kv_del(struct store_batch *b, enum store_table t,
                       const void *key, size_t klen);
/* As store_put_x509(), checks included (done when added). */
int store_batch_put_x509(struct store_batch *b, X509 *cert,
                         const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                         const char *issued_by, const char *profile,
                         int64_t issued_at);
/*
 * As store_revoke(); an already revoked record is left as it is (first
 * time and reason kept) and does not fail the batch.  The certificate may
 * be one put earlier in the same batch.
 */
int store_batch_revoke(struct store_batch *b,
                       const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                       const uint8_t *serial, size_t serial_len, int64_t when,
                       int reason);

/*
 * Set a certificate's status as decided elsewhere (an event from the PAN,
 * which checked the transition): GOOD (released), HOLD (reason
 * certificateHold) or REVOKED (a revocable reason), with when as the
 * revocation and update time.  No transition check; a certificate not in
 * this store is skipped without failing the batch.
 */
int store_batch_set_status(struct store_batch *b,
                           const uint8_t issuer_key_id[STORE_KEY_ID_LEN],
                           const uint8_t *serial, size_t serial_len,
                           enum store_cert_status status, int64_t when,
                           int reason);

/*
 * Apply every operation in one write transaction, committed and synced
 * before it returns; either all of them are applied or none.  Returns
 * STORE_OK; STORE_EXISTS when a certificate of the batch is already
 * stored (or put twice in the batch); STORE_NOT_FOUND when a revocation
 * names no stored certificate; -1 on any other error (a refused add, a
 * refused transition, an LMDB failure).  Every result but STORE_OK leaves
 * the store untouched, with err naming the operation.  An empty batch is
 * STORE_OK without a transaction.  The batch is not consumed: free it
 * with store_batch_free().
 */
int store_apply(struct store *st, struct store_batch *b, struct error *err);

const char *store_status_name(enum store_cert_status status);
const char *store_reason_name(int reason);

#endif
