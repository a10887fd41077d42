/*
 * pan: the Primary Administration Node, the deployment's root CA.
 *
 * One entry point per subcommand; main.c only picks one.  `pan run` is the
 * daemon: its state (struct pan) is shared by the files that make it up,
 * one per concern, all declared here in the style of acme-client's
 * extern.h:
 *
 *   run.c        lifecycle: config, pid file, CA signer, sockets, poll loop
 *   messaging.c  ZAP handler (RFC 27) and the ROUTER on 8671: framing,
 *                unpacking, dispatch, replies, drop counters
 *   registry.c   nodes and tokens: join, heartbeats, link timeouts, remove;
 *                the PSNs' outbox batches
 *   alarm.c      alarms kept in the store (Queue Link Error, the nodes'
 *                own, expiry of the PAN's CA certificates)
 *   control.c    the control socket: admin commands run in the daemon
 *   ca.c         `pan ca certs`: the CA tree as the admin page shows it;
 *                `pan cert list|show`: the issued certificates
 *   admin.c      client side of the admin subcommands
 *   status.c     `pan status`, from the daemon or offline
 *   loglevel.c   `pan log-level`: runtime log levels of every node
 *   ocsp.c       the OCSP responder for the upper levels (processes
 *                "ocsp" and "ocsp-http", docs/ocsp.md)
 */
#ifndef ISELAB_PAN_H
#define ISELAB_PAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "cert.h"
#include "config.h"
#include "curve.h"
#include "envelope.pb-c.h"
#include "msg.h"
#include "node.h"
#include "registry.pb-c.h"
#include "store.h"

struct certwatch;
struct config;
struct error;
struct signer;

/* Exit statuses shared by every subcommand (pan(8) EXIT STATUS). */
#define PAN_EXIT_OK    0
#define PAN_EXIT_FAIL  1 /* the operation failed; the message says why */
#define PAN_EXIT_USAGE 2 /* bad command line */
/*
 * Not an exit status: a control command that answers later, from the
 * daemon loop (control_deferred_reply()); the control socket (a ROUTER)
 * serves other commands meanwhile.
 */
#define PAN_CONTROL_DEFERRED (-1)
/* Longest ZeroMQ routing id (the control socket's clients). */
#define PAN_CONTROL_PEER_MAX 255

/* Default CA key type: the product's internal CA uses RSA 4096. */
#define PAN_CA_KEY_DEFAULT "rsa:4096"

/* Optional config file in the data directory. */
#define PAN_CONFIG_FILE "pan.conf"
/* The data directory, when --data-dir is not given. */
#define PAN_DATA_DIR_ENV "ISELAB_DATA_DIR"
/* Name of the control socket in the data directory (control.sock). */
#define PAN_CONTROL_NAME "control"
/* How long an admin command waits for the daemon. */
#define PAN_CONTROL_TIMEOUT_MS 30000
/* How long `pan status` waits before showing the offline view. */
#define PAN_STATUS_TIMEOUT_MS 3000
/* Most nodes one deployment holds (the product supports 50 PSNs). */
#define PAN_NODES_MAX 1000
/* Longest endpoint text ("tcp://[host]:port"). */
#define PAN_ENDPOINT_MAX 300
/* Longest path inside the data directory. */
#define PAN_PATH_MAX 4096
/* The alarm the product raises for a node link that misses heartbeats. */
#define PAN_ALARM_QUEUE_LINK "Queue Link Error"

/*
 * Shortest validity ca.*-validity may set for a node's certificates:
 * notBefore is backdated by CERT_BACKDATE_SECS (cert.h), and a minute of
 * use must be left.  Short values are for labs and tests (an expired
 * Endpoint Sub CA without touching the clock).
 */
#define PAN_CERT_VALIDITY_MIN (CERT_BACKDATE_SECS + 60)
/* Other admin nodes a primary knows (a deployment has two). */
#define PAN_ADMINS_MAX 1

/* Rows of a node's status table the PAN keeps. */
#define PAN_NODE_SERVICES_MAX 8
/* Alarms one node may report about itself at a time, and a name's size. */
#define PAN_NODE_ALARMS_MAX 16
#define PAN_ALARM_NAME_MAX  64
/* Longest alarm text kept from a node's report. */
#define PAN_ALARM_TEXT_MAX 256

/* The PAN's OCSP responder (ocsp.c): files, processes, status row. */
#define PAN_OCSP_CERT    NODE_CA_DIR "/ocsp-responder.crt"
#define PAN_OCSP_KEY     NODE_CA_DIR "/ocsp-responder.key"
#define PAN_OCSP_PROCESS "ocsp"      /* keeps the key, restarts the worker */
#define PAN_OCSP_WORKER  "ocsp-http" /* serves HTTP on ocsp.listen */
#define PAN_OCSP_TITLE   "OCSP Responder"
/* Longest AIA OCSP URL we put into a certificate. */
#define PAN_OCSP_URL_MAX 300

/* The ocsp.* settings as the responder uses them. */
struct pan_ocsp_settings {
	char host[CONFIG_HOST_MAX + 1]; /* IP literal, IPv6 without brackets */
	uint16_t port;
	int family;
	unsigned workers;
	unsigned timeout;
	bool nonce;
	int64_t validity;
};

/* A node's link as `pan node list` shows it (docs/registration.md). */
enum pan_link {
	PAN_LINK_REGISTERED,   /* not heard from since join or PAN start */
	PAN_LINK_CONNECTED,    /* heartbeats arrive */
	PAN_LINK_DISCONNECTED, /* missed heartbeat.timeout */
	PAN_LINK_REMOVED,      /* pan node remove */
};

/* Why a message on the ROUTER was dropped after or besides msg_unpack(). */
enum pan_drop {
	PAN_DROP_FRAMES,      /* not [routing id][payload] */
	PAN_DROP_EMPTY,       /* empty payload */
	PAN_DROP_NO_USER_ID,  /* no authenticated CURVE key (cannot happen) */
	PAN_DROP_UNKNOWN_KEY, /* heartbeat from a key no node holds */
	PAN_DROP_FOREIGN,     /* sender name is not the key's node */
	PAN_DROP_COUNT
};

/* One registered node, in memory; the store holds the NodeRecord. */
struct pan_node {
	char hostname[NODE_HOSTNAME_MAX + 1];
	enum node_role role;
	bool session_services;
	unsigned char curve[CURVE_KEY_LEN]; /* authenticates its messages */
	enum pan_link link;
	int64_t last_seen_mono; /* monotonic ms of the last heartbeat */
	int64_t last_heartbeat; /* realtime ms of it; 0: never */
	int64_t persisted_hb;   /* last_heartbeat as the store has it */
	int64_t cert_expiry;    /* notAfter of its CA certificate, seconds */
	bool ca_disabled;       /* `pan ca disable`: its CA (and EST) off */
	uint64_t applied_seq;   /* last event it applied (its heartbeat) */
	/* Its application status table, from its last heartbeat. */
	struct pan_service {
		char name[40];
		char state[24];
		unsigned pid;
	} services[PAN_NODE_SERVICES_MAX];
	size_t nservices;
	/* Alarms it reports about itself (Heartbeat.alarms) that are active. */
	char reported[PAN_NODE_ALARMS_MAX][PAN_ALARM_NAME_MAX];
	size_t nreported;
};

/* A drop reason's log rate limit: one line per second, the rest counted. */
struct pan_ratelimit {
	int64_t last_ms;     /* monotonic ms of the last line logged */
	uint64_t suppressed; /* lines not logged since */
};

/* Everything `pan run` holds; one per process, owned by run.c. */
struct pan {
	const char *datadir;
	struct node_identity id; /* node.conf */
	struct config *cfg;      /* pan.conf, environment, flags */
	bool daemon;             /* --daemon: logs to the file only */

	void *zctx;    /* ZeroMQ context */
	void *zap;     /* REP inproc://zeromq.zap.01 (RFC 27) */
	void *router;  /* ROUTER messaging.listen, CURVE server */
	void *pub;     /* PUB events.listen, CURVE server */
	void *control; /* REP ipc://D/control.sock */
	int sigfd;     /* signalfd: INT, TERM, CHLD, HUP */
	bool stop;     /* leave the poll loop */
	int exit_status;

	struct signer *signer; /* client of the CA signer process */
	pid_t signer_pid;      /* 0 once it is gone */
	/*
	 * `pan ca replace-root-chain` while the signer makes the new keys
	 * (rootchain.c): the loop goes on serving; its answer is deferred.
	 */
	bool rollover;
	unsigned rollover_gen;
	int64_t rollover_t0; /* mono ms */
	bool control_deferred;         /* a control answer is owed */
	uint64_t control_deferred_id;  /* to this request */
	/* ZeroMQ routing id of the client it is owed to (at most 255). */
	uint8_t control_deferred_peer[PAN_CONTROL_PEER_MAX];
	size_t control_deferred_peer_len;
	pid_t ocsp_pid;        /* the "ocsp" process; 0 once it is gone */
	struct pan_ocsp_settings ocsp;
	/* AIA OCSP URL of the Endpoint Sub CA certificates we issue. */
	char ocsp_url[PAN_OCSP_URL_MAX];
	struct store *st;      /* D/store, opened after the signer fork */

	unsigned char curve_public[CURVE_KEY_LEN];
	char curve_public_z85[CURVE_Z85_LEN];
	char messaging_endpoint[PAN_ENDPOINT_MAX]; /* advertised, tcp:// */
	char events_endpoint[PAN_ENDPOINT_MAX];    /* advertised, tcp:// */
	char advertise_host[PAN_ENDPOINT_MAX];     /* host:port of tickets */

	X509 *root_ca; /* D/ca/root-ca.crt */
	X509 *node_ca; /* D/ca/node-ca.crt */
	uint8_t root_kid[STORE_KEY_ID_LEN];
	uint8_t node_kid[STORE_KEY_ID_LEN];

	struct pan_node *nodes; /* every node ever joined, removed included */
	size_t nnodes;
	/* CURVE keys of removed nodes: ZAP refuses them (RFC 27 400). */
	unsigned char (*removed_keys)[CURVE_KEY_LEN];
	size_t nremoved;

	int64_t hb_interval_ms; /* heartbeat.interval */
	int64_t hb_timeout_ms;  /* heartbeat.timeout */
	int64_t started_mono;   /* no link alarms before started + timeout */
	int64_t started_real;   /* realtime ms, for status */
	uint64_t next_alarm_id;

	struct msg_stats router_stats;  /* envelopes on 8671 */
	struct msg_stats control_stats; /* envelopes on the control socket */
	uint64_t drops[PAN_DROP_COUNT];
	struct pan_ratelimit drop_rl[PAN_DROP_COUNT];
	struct pan_ratelimit msg_rl[MSG_DROP_COUNT]; /* router_stats drops */
	struct pan_ratelimit zap_rl;                 /* refused CURVE keys */
	struct pan_ratelimit join_rl;  /* refused joins: anyone may send them */
	struct pan_ratelimit reply_rl; /* replies that could not be delivered */
	uint64_t zap_accepted, zap_refused;
	uint64_t joins_accepted, joins_refused, joins_replayed;
	uint64_t heartbeats;
	/* Outbox batches from PSNs (registry_outbox()). */
	uint64_t outbox_batches; /* batches handled */
	uint64_t outbox_stored;  /* certificates stored */
	uint64_t outbox_known;   /* redelivered: already stored, acked */
	uint64_t outbox_refused; /* not the node's, malformed: not acked */

	uint64_t event_seq; /* the newest event in the log (eventlog.c) */
	struct certwatch *certwatch; /* expiry of our own CA certificates */

	/* primary.c: the deployment epoch and the other admin nodes. */
	uint64_t epoch;      /* ours: 1, raised by every promotion */
	uint64_t superseded; /* a higher epoch heard of; 0: we are primary */
	char superseded_by[NODE_HOSTNAME_MAX + 1]; /* its primary */
	struct pan_admin {
		char hostname[NODE_HOSTNAME_MAX + 1];
		char messaging[PAN_ENDPOINT_MAX]; /* tcp://host:8671 */
		char events[PAN_ENDPOINT_MAX];
		unsigned char curve[CURVE_KEY_LEN];
		void *probe; /* DEALER with our key; NULL: not open */
	} admins[PAN_ADMINS_MAX];   /* the secondaries */
	size_t nadmins;
	int64_t next_probe; /* monotonic ms of the next probe heartbeat */
};

/* Subcommands (main.c). */
int pan_init_main(int argc, char **argv);
int pan_status_main(int argc, char **argv);
int pan_run_main(int argc, char **argv);
int pan_node_main(int argc, char **argv);
int pan_ca_main(int argc, char **argv);
int pan_alarms_main(int argc, char **argv);
int pan_loglevel_main(int argc, char **argv);
int pan_cert_main(int argc, char **argv);
int pan_user_main(int argc, char **argv);
int pan_template_main(int argc, char **argv);

/* export.c: `pan ca export` (argv[0] is "export"). */
int pan_ca_export(int argc, char **argv);

/* run.c */
const char *pan_link_name(enum pan_link link);
/*
 * A node's sync state as the product's deployment page words it: "Sync
 * Completed" (connected, every event applied), "Sync In Progress"
 * (connected, behind), "Out of Sync" (link down or not heard from since
 * the PAN started), "-" (removed).
 */
const char *registry_sync_name(const struct pan *p, const struct pan_node *n);
void pan_format_time(int64_t secs, char *buf, size_t len);

/* messaging.c */
/*
 * Where nodes reach an admin node with these settings: messaging.advertise
 * (host:port), else the messaging.listen address, or hostname for a
 * wildcard; the events endpoint on the same host.
 */
int pan_advertise(const struct config *cfg, const char *hostname,
                  char adv_host[PAN_ENDPOINT_MAX], char msg[PAN_ENDPOINT_MAX],
                  char ev[PAN_ENDPOINT_MAX], struct error *err);
int messaging_open(struct pan *p, const char *curve_secret_z85,
                   struct error *err);
void messaging_close(struct pan *p);
/*
 * Close and bind the PUB again, so that every subscriber reconnects
 * through ZAP: a removed node's subscription ends there.
 */
int messaging_events_rebind(struct pan *p, struct error *err);
/* One ZAP request (RFC 27); called when the ZAP socket is readable. */
void messaging_zap(struct pan *p);
/* Every message waiting on the ROUTER. */
void messaging_router(struct pan *p);
/* Count a drop and log it, at most one line a second per reason. */
/*
 * true when a line may be logged now (one a second per limiter); the lines
 * held back meanwhile are counted and handed back with the next one, so a
 * client that floods us with refusals cannot flood the log.
 */
bool messaging_ratelimit(struct pan_ratelimit *rl, uint64_t *suppressed);
void messaging_drop(struct pan *p, enum pan_drop why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reply to one peer of the ROUTER; the envelope is sent as one frame. */
int messaging_reply(struct pan *p, const void *rid, size_t rid_len,
                    Iselab__Envelope *env);
const char *messaging_drop_name(enum pan_drop why);

/* registry.c */
int registry_load(struct pan *p, struct error *err);
void registry_free(struct pan *p);
struct pan_node *registry_find(struct pan *p, const char *hostname);
/* The node, not removed, that holds this CURVE key; NULL if none. */
struct pan_node *registry_find_key(struct pan *p,
                                   const unsigned char key[CURVE_KEY_LEN]);
/* The key belongs to a removed node (ZAP refuses it). */
bool registry_key_removed(struct pan *p,
                          const unsigned char key[CURVE_KEY_LEN]);
/*
 * Handlers for envelopes from the ROUTER: rid is the peer's routing id,
 * key its authenticated CURVE public key.
 */
struct pan_peer {
	const void *rid;
	size_t rid_len;
	unsigned char key[CURVE_KEY_LEN];
	char key_z85[CURVE_Z85_LEN];
};
int registry_join(struct pan *p, const struct pan_peer *peer,
                  const Iselab__Envelope *env);
int registry_heartbeat(struct pan *p, const struct pan_peer *peer,
                       const Iselab__Envelope *env);
/*
 * An OutboxBatch from a registered, non-removed node: each certificate
 * must be issued by one of that node's CA certificates; what is not
 * stored yet is stored (one transaction), and what is stored (or was
 * already) is acked.  A refused item is logged, counted, not acked.
 */
int registry_outbox(struct pan *p, const struct pan_peer *peer,
                    const Iselab__Envelope *env);
/* Link timeouts; returns ms until it wants to run again. */
int64_t registry_tick(struct pan *p);
/* Write every changed last heartbeat (at shutdown). */
void registry_persist(struct pan *p);
/* Admin commands; they write to out and err, and return an exit status. */
int registry_node_add(struct pan *p, int argc, char **argv, FILE *out,
                      FILE *err);
int registry_node_list(struct pan *p, int argc, char **argv, FILE *out,
                       FILE *err);
int registry_node_remove(struct pan *p, int argc, char **argv, FILE *out,
                         FILE *err);
/* `pan node edit HOST --session-services on|off` */
int registry_node_edit(struct pan *p, int argc, char **argv, FILE *out,
                       FILE *err);
/* `pan ca disable|enable [--node HOST]`: every PSN, or one */
int registry_ca_service(struct pan *p, int argc, char **argv, FILE *out,
                        FILE *err);
/*
 * Shared with the renewal of a node's CA (rootchain.c): a CSR checked as
 * at join (signature, key, the product CN of profile for host; why says
 * what is wrong), a CSR signed through the CA signer, a certificate's
 * DER (OPENSSL_free) and serial, a record packed into a table.
 */
int registry_check_csr(const ProtobufCBinaryData *der,
                       enum cert_profile profile, const char *host,
                       const char *what, char *why, size_t whylen);
X509 *registry_sign(struct pan *p, enum cert_profile profile,
                    const char *issuer, const ProtobufCBinaryData *csr,
                    const char *host, struct error *err);
int registry_der(X509 *x, ProtobufCBinaryData *out);
/*
 * A node record's reference to x, issued by the key kid as profile; serial
 * holds the serial's bytes for *ref.  0 or -1.
 */
int registry_cert_ref(X509 *x, const uint8_t kid[STORE_KEY_ID_LEN],
                      const char *profile, uint8_t serial[STORE_SERIAL_MAX],
                      Iselab__IssuedCertRef *ref, struct error *err);
/*
 * "--name value" or "--name=value" at argv[*i]: 1 with *val set, 0 when
 * argv[*i] is another argument, -1 when the value is missing.
 */
int opt_match(int argc, char **argv, int *i, const char *name,
              const char **val);
/* The node's record from the store; free with ..._free_unpacked. */
int registry_record(struct pan *p, const char *hostname,
                    Iselab__NodeRecord **out, struct error *err);
/* The notAfter of the newest CA certificate in a node's record. */
int64_t registry_ca_expiry(const Iselab__NodeRecord *r);

/* alarm.c */
int alarm_load(struct pan *p, struct error *err);
/* Raise name for node unless one is active; text says why. */
int alarm_raise(struct pan *p, const char *name, const char *node, int severity,
                const char *text);
/* Clear the active alarm name for node, if there is one. */
int alarm_clear(struct pan *p, const char *name, const char *node);
int alarm_list(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
/*
 * A node's own report of its active alarms (every heartbeat): raise what
 * is new, clear what it reported before and no longer does.
 */
void alarm_reported(struct pan *p, struct pan_node *n,
                    Iselab__NodeAlarm *const *alarms, size_t count);
/* Clear every alarm the node reported (it was removed). */
void alarm_reported_clear_node(struct pan *p, struct pan_node *n);
size_t alarm_active_count(struct pan *p);
/*
 * Expiry alarms of the PAN's own Root CA, Node CA and OCSP responder
 * certificates (common/certwatch.h), raised here for this node.  tick:
 * check what is due, ms until the next check.
 */
int alarm_certwatch_open(struct pan *p, struct error *err);
int64_t alarm_certwatch_tick(struct pan *p);
void alarm_certwatch_close(struct pan *p);

/* eventlog.c: the event log (common/events.h) and what travels in it. */
int eventlog_open(struct pan *p, struct error *err);
/*
 * Number ev, write it and its effect in one transaction (with the
 * operations already in batch `with`, which may be NULL and stays the
 * caller's), publish it.  0, or -1 with err set and nothing written.
 */
int eventlog_commit(struct pan *p, Iselab__Event *ev, struct store_batch *with,
                    struct error *err);
/*
 * The same for n events, numbered in order, in one transaction.
 * log_only: the effects are in the store already (the backfill of
 * eventlog_seed()), only the events are written.
 */
int eventlog_commit_n(struct pan *p, Iselab__Event *const *evs, size_t n,
                      struct store_batch *with, bool log_only,
                      struct error *err);
/*
 * Events made to be committed together (a join: its certificates, the
 * node record and the used token), and the memory they point into.
 */
struct eventlog_set {
	Iselab__Event **evs;
	size_t n, cap;
};
void eventlog_set_free(struct eventlog_set *s);
/* A record of the nodes, tokens or alarms table, packed from m. */
int eventlog_set_record(struct eventlog_set *s, Iselab__Event__ChangeCase which,
                        const void *key, size_t klen, const ProtobufCMessage *m,
                        struct error *err);
/* The same with the record already packed. */
int eventlog_set_raw(struct eventlog_set *s, Iselab__Event__ChangeCase which,
                     const void *key, size_t klen, const void *rec, size_t rlen,
                     struct error *err);
/* A certificate stored as store_batch_put_x509() stores it. */
int eventlog_set_cert(struct eventlog_set *s, const uint8_t *der,
                      size_t der_len, const uint8_t kid[STORE_KEY_ID_LEN],
                      const char *issued_by, const char *profile,
                      int64_t issued_at, struct error *err);
int eventlog_set_x509(struct eventlog_set *s, X509 *x,
                      const uint8_t kid[STORE_KEY_ID_LEN],
                      const char *issued_by, const char *profile,
                      int64_t issued_at, struct error *err);
/* The status the PAN decided for c. */
int eventlog_set_status(struct eventlog_set *s, const struct store_cert *c,
                        enum store_cert_status to, int64_t when, int reason,
                        struct error *err);
/* eventlog_commit_n() of the set; the set stays the caller's. */
int eventlog_set_commit(struct pan *p, struct eventlog_set *s,
                        struct store_batch *with, bool log_only,
                        struct error *err);
/*
 * Once per store: put into the log what the store held before the log
 * carried it (the certificates `pan init` stored, and everything of a
 * deployment made by an older build), so that a SAN's replica is whole.
 * 1 when it ran now, 0 when it had run before, -1.
 */
int eventlog_seed(struct pan *p, struct error *err);
/*
 * The PAN's OCSP responder certificate, which pan_ocsp_ensure() stores
 * before the daemon opens the log: logged once (seeded: the backfill
 * that just ran has it).  0 or -1.
 */
int eventlog_own_certs(struct pan *p, bool seeded, struct error *err);
/* An EventsRequest from a node: the events it missed. */
int eventlog_request(struct pan *p, const struct pan_peer *peer,
                     const Iselab__Envelope *env);
int eventlog_user(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
int eventlog_template(struct pan *p, int argc, char **argv, FILE *out,
                      FILE *err);

/*
 * loglevel.c: `pan log-level set CATEGORY LEVEL [--node HOST]` and
 * `pan log-level list [--node HOST]`; the levels travel as LogLevels
 * events, the PAN's own included.  sync: the PAN's levels from the store
 * into its log directory's levels file (log.h), at start and after a
 * change for itself.
 */
int loglevel_cmd(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
void loglevel_sync(struct pan *p);

/*
 * primary.c: the epoch, the other admin nodes and the deployment event
 * that names them; the probe that finds out whether a higher epoch exists.
 * load: after the store is open (a promoted SAN also reads its
 * deployment.conf); sync: after messaging_open(), a deployment event when
 * the config changed; tick: every registry tick.
 */
int primary_load(struct pan *p, struct error *err);
int primary_sync(struct pan *p, struct error *err);
void primary_tick(struct pan *p);
void primary_close(struct pan *p);
void primary_config(struct pan *p, Iselab__DeploymentConfig *cfg,
                    Iselab__AdminNode nodes[PAN_ADMINS_MAX + 1],
                    Iselab__AdminNode *ptrs[PAN_ADMINS_MAX + 1]);
/*
 * Drops the admin node host from the deployment (`pan node remove` of a
 * SAN, `san node remove` of a former primary on a promoted SAN): no probe
 * of it any more, and a deployment event without it, so that the members
 * stop probing it and drop it from their deployment.conf.  1 if it was an
 * admin node, 0 if not, -1 on error.
 */
int primary_admin_remove(struct pan *p, const char *host, struct error *err);
/* A higher epoch than ours exists, with that primary: we step down. */
void primary_superseded(struct pan *p, uint64_t epoch, const char *primary);
/* key is the CURVE key of another admin node of the deployment. */
bool primary_admin_key(const struct pan *p,
                       const unsigned char key[CURVE_KEY_LEN]);
/* Superseded: says so on errf ("not primary: ...") and returns true. */
bool primary_refuse(struct pan *p, const char *cmd, FILE *errf);
/* Our epoch and primary into a refusal. */
void primary_error(const struct pan *p, Iselab__Error *e);
/* A SAN's heartbeat: where it serves once promoted. */
void primary_san_report(struct pan *p, const struct pan_node *n,
                        const Iselab__Heartbeat *hb);
void primary_status(const struct pan *p, FILE *fp);
/*
 * `pan run` for a role: PAN, or a promoted SAN (conf: "san.conf"),
 * which runs this daemon over its replica (san/run.c).
 */
int pan_run_role(int argc, char **argv, enum node_role role,
                 const char *conf);
/* The settings of `pan run` from DIR/conf, the environment and sets. */
struct config *pan_run_config(const char *datadir, const char *conf,
                              char *const *sets, size_t nsets,
                              struct error *err);

/* control.c */
int control_open(struct pan *p, struct error *err);
void control_close(struct pan *p);
/* One request on the control socket. */
void control_serve(struct pan *p);
/* The answer owed to a command that returned PAN_CONTROL_DEFERRED. */
void control_deferred_reply(struct pan *p, int status, const char *out,
                            const char *errtext);

/* ca.c */
int ca_certs(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
/* `pan cert list`, `pan cert show SERIAL`: the store's certificates. */
int ca_cert_list(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
int ca_cert_show(struct pan *p, int argc, char **argv, FILE *out, FILE *err);
/* A serial as hex ("0x" and ':' allowed); -1 when it is not one. */
int ca_parse_serial(const char *s, uint8_t *out, size_t *len);

/*
 * revoke.c: `pan cert revoke|hold|release`: check the transition here,
 * then one event per certificate (the PAN's store and every node's).
 */
int revoke_cert(struct pan *p, int argc, char **argv, FILE *out, FILE *err);

/*
 * ocsp.c.  settings: the ocsp.* keys (ocsp.listen unset follows
 * messaging.listen's address when that is not a wildcard).
 * create_local: `pan init`'s responder certificate, issued with the Node
 * CA key in hand; ensure: `pan run`'s, through the CA signer, when either
 * file is missing (both are made again).  Both save the key encrypted and
 * record the certificate in the store (which must not be open).  spawn:
 * fork the "ocsp" process (before any socket) and wait until it serves.
 * handover: a random secret `pan run` makes at start and gives only to
 * the CA signer and the "ocsp" process (in their fork memory, locked),
 * then wipes: after a root CA chain replacement the signer leaves the
 * new responder key encrypted under it, and "ocsp", whose passphrase is
 * gone, takes it on SIGHUP (docs/certificates.md).
 */
int pan_ocsp_settings(const struct config *cfg, struct pan_ocsp_settings *set,
                      struct error *err);
int pan_ocsp_create_local(const char *datadir, const char *hostname,
                          X509 *node_ca, EVP_PKEY *node_key, const char *pass,
                          size_t passlen, struct error *err);
int pan_ocsp_ensure(const char *datadir, const char *hostname, const char *pass,
                    size_t passlen, struct error *err);
struct secret;
int pan_ocsp_spawn(const char *datadir, const char *hostname,
                   const struct pan_ocsp_settings *set, const char *pass,
                   size_t passlen, const struct secret *handover, pid_t *pid,
                   struct error *err);

/*
 * rootchain.c: `pan ca replace-root-chain` and the members' renewals
 * that follow it (docs/certificates.md, "Replacing the root CA chain").
 * generation: the chain generation D/ca/ holds (1: `pan init`'s).
 * install: move generation gen from D/ca/next/ into D/ca/, the old files
 * into D/ca/gen-<gen-1>/; can be run again after a crash.  recover: at
 * start, finish a replacement whose event is in the store.  renew: a
 * RenewRequest from a node.
 */
unsigned rootchain_generation(const char *datadir);
int rootchain_install(const char *datadir, unsigned gen, struct error *err);
int rootchain_recover(struct pan *p, struct error *err);
int rootchain_replace(struct pan *p, int argc, char **argv, FILE *out,
                      FILE *err);
/* From the daemon loop: the signer's answer to a replacement, if any. */
void rootchain_poll(struct pan *p);
int rootchain_renew(struct pan *p, const struct pan_peer *peer,
                    const Iselab__Envelope *env);
/* Longest wait of `pan ca replace-root-chain` (new RSA 4096 keys). */
#define PAN_ROOTCHAIN_TIMEOUT_MS 330000


/* status.c: the node and its CA certificates, shared by both views. */
int status_print_node(FILE *fp, const char *datadir,
                      const struct node_identity *id, struct error *err);
/* The running daemon's view (the control command "status"). */
int status_daemon(struct pan *p, int argc, char **argv, FILE *out, FILE *err);

/*
 * admin.c: send argv to the daemon on datadir and print its answer;
 * returns its exit status.  *answered is false when no daemon answered
 * (then, unless quiet, says so: "pan is not running on D ...").
 */
int admin_call(const char *cmd, const char *datadir, char **argv, int argc,
               int timeout_ms, bool quiet, bool *answered);

#endif
