/*
 * join: what a SAN or a PSN needs to become part of a deployment and stay
 * in touch with it (docs/registration.md).
 *
 * - The join string that `pan node add` prints and `psn join` / `san join`
 *   take: parsed strictly here, so that a string cut short by a terminal or
 *   a mail client is refused with the part that is wrong, not sent.
 * - The join exchange: a CURVE DEALER to the PAN whose public key comes
 *   from the join string, watched by a socket monitor so that a server that
 *   fails the handshake (a man in the middle) stops the join before the
 *   token leaves; the PAN unreachable is retried with ZeroMQ's reconnect
 *   backoff until a deadline.
 * - Checking what came back (the CA certificate holds our key and chains
 *   to the root the PAN sent) and saving it, with every file made during
 *   the join removed again if a later step fails: a failed join leaves the
 *   data directory as it found it.
 * - deployment.conf, the deployment as the node learned it at join time.
 * - The member daemon shared by `psn run` and `san run` (join_run_main()):
 *   options and config, the pid file, signals, the heartbeat link to the
 *   PAN, the node's store, the control socket answering `status`, and the
 *   loop.  What differs between the roles comes in through struct
 *   join_daemon_hooks: the PSN starts and supervises its services there
 *   and sends its outbox.
 * - `psn status` / `san status` (join_status_main()): the daemon's answer,
 *   or the offline view from the files.
 */
#ifndef ISELAB_JOIN_H
#define ISELAB_JOIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <sys/types.h>

#include "config.h"
#include "curve.h"
#include "keys.h"
#include "msg.h"
#include "node.h"

struct certwatch;
struct certwatch_cert;
struct error;
struct store;

/* Exit statuses of every member subcommand (psn(8), san(8) EXIT STATUS). */
#define JOIN_EXIT_OK    0
#define JOIN_EXIT_FAIL  1 /* the operation failed; the message says why */
#define JOIN_EXIT_USAGE 2 /* bad command line */

/* First label of a join string; bumped if its layout ever changes. */
#define JOIN_TICKET_PREFIX "iselab1"
/* Token id: 8 random bytes in hex, the record key on the PAN. */
#define JOIN_TOKEN_ID_HEX 16
/* Token secret: 32 random bytes in hex. */
#define JOIN_SECRET_LEN 32
#define JOIN_SECRET_HEX (2 * JOIN_SECRET_LEN)
/* "tcp://" + host (253, or a bracketed IPv6) + ":65535", with the NUL. */
#define JOIN_ENDPOINT_MAX 300
/* Longest join string we read or print (prefix, 3 hex fields, address). */
#define JOIN_TICKET_MAX 512
/* Longest a join may wait for the PAN, and the default (--timeout). */
#define JOIN_TIMEOUT_MAX_MS     (24LL * 3600 * 1000)
#define JOIN_TIMEOUT_DEFAULT_MS (30LL * 1000)
/* Admin nodes a deployment has: the primary PAN and a secondary. */
#define JOIN_ADMIN_MAX 2
/* The deployment as learned at join time, next to node.conf. */
#define JOIN_DEPLOYMENT_FILE "deployment.conf"
/* Port the OCSP responder of a PSN listens on (DESIGN.md section 1). */
#define JOIN_OCSP_PORT 2560
/* Files one join writes (keys, certificates, config, store files). */
#define JOIN_FILES_MAX 32

/*
 * A parsed join string:
 *   iselab1.<token-id>.<secret>.<pan-curve-public-hex>@<host>:<port>
 * Hex fields are kept in lower case whatever case the string used.
 */
struct join_ticket {
	char token_id[JOIN_TOKEN_ID_HEX + 1];
	char secret[JOIN_SECRET_HEX + 1];
	unsigned char pan_curve_public[CURVE_KEY_LEN];
	char endpoint[JOIN_ENDPOINT_MAX]; /* "tcp://host:port" */
};

/*
 * Parse s strictly: the prefix, exactly 16, 64 and 64 hex digits (either
 * case), and host:port with a host name, an IPv4 address or an IPv6
 * address in brackets, port 1 to 65535.  Leading and trailing white space
 * (a pasted line) is ignored; anything else is an error naming the part.
 */
int join_ticket_parse(const char *s, struct join_ticket *t, struct error *err);
/* The string for t; refuses a t that join_ticket_parse() would refuse. */
int join_ticket_format(const struct join_ticket *t, char *buf, size_t len,
                       struct error *err);
/* "host:port" of an endpoint "tcp://host:port", for messages. */
const char *join_endpoint_address(const char *endpoint);

/* One admin node (PAN or secondary) as the deployment config names it. */
struct join_admin {
	char hostname[NODE_HOSTNAME_MAX + 1];
	enum node_role role;
	char messaging[JOIN_ENDPOINT_MAX]; /* tcp://host:8671 */
	char events[JOIN_ENDPOINT_MAX];    /* tcp://host:8672, may be "" */
	unsigned char curve_public[CURVE_KEY_LEN];
};

/* The deployment config of a JoinResponse, and of deployment.conf. */
struct join_deployment {
	char id[NODE_DEPLOYMENT_ID_LEN + 1];
	uint64_t epoch;
	enum node_ocsp_hierarchy hierarchy;
	bool session_services;
	struct join_admin admin[JOIN_ADMIN_MAX];
	size_t nadmin;
};

/*
 * Take the config of a JoinResponse.  An admin node without a messaging
 * endpoint or CURVE key gets the join string's (the PAN we talked to); a
 * PAN whose key differs from the join string's is refused.
 */
int join_deployment_from_msg(const Iselab__DeploymentConfig *c,
                             const struct join_ticket *t,
                             struct join_deployment *d, struct error *err);
int join_deployment_write(const char *datadir, const struct join_deployment *d,
                          struct error *err);
int join_deployment_read(const char *datadir, struct join_deployment *d,
                         struct error *err);
/* The admin node with role PAN, else the first one; NULL if none. */
const struct join_admin *join_deployment_pan(const struct join_deployment *d);

/* What the node sends in its JoinRequest. */
struct join_request {
	const char *hostname;
	enum node_role role;   /* NODE_ROLE_SAN or NODE_ROLE_PSN */
	EVP_PKEY *curve_key;   /* the node's own CURVE key pair */
	const uint8_t *ca_csr; /* DER */
	size_t ca_csr_len;
	const uint8_t *ocsp_csr; /* DER, PSN only, else NULL */
	size_t ocsp_csr_len;
	int64_t timeout_ms;       /* give up after; 0: the default */
	int64_t reconnect_ivl_ms; /* first retry delay; 0: default */
};

/*
 * Run the join exchange with the PAN of t.  Returns the JoinResponse
 * envelope (msg_free() it), or NULL with err saying why: the server failed
 * the CURVE handshake (not the PAN of the join string), the PAN could not
 * be reached before the deadline, or it refused (its message).  The token
 * is sent only after the handshake proved the server holds the key.
 */
Iselab__Envelope *join_exchange(const struct join_ticket *t,
                                const struct join_request *req,
                                struct error *err);

/* What a JoinResponse gives a node, checked. */
struct join_material {
	X509 *ca_cert;          /* our Node CA or Endpoint Sub CA */
	X509 *ocsp_cert;        /* PSN, legacy hierarchy only, else NULL */
	STACK_OF(X509) * chain; /* issuer of ca_cert first, root last */
	X509 *root;             /* the last of chain (not a separate ref) */
	struct join_deployment deployment;
};

/*
 * Check a JoinResponse: ca_cert holds ca_key, has the product CN for
 * hostname and the profile the role gets (Node CA for a SAN, Endpoint Sub
 * CA for a PSN), and verifies strictly up to the self-signed root at the
 * end of chain.  The root is trusted because it came over the channel
 * authenticated by the PAN's CURVE key from the join string.  For a PSN in
 * the legacy hierarchy ocsp_cert must hold ocsp_key and verify for OCSP
 * signing through the same chain.
 */
int join_material_check(const Iselab__JoinResponse *resp,
                        const struct join_ticket *t, const char *hostname,
                        enum node_role role, EVP_PKEY *ca_key,
                        EVP_PKEY *ocsp_key, struct join_material *m,
                        struct error *err);
void join_material_free(struct join_material *m);

/*
 * The files one join makes.  Every save records its path; on failure
 * join_files_rollback() removes them (newest first), and the directories
 * the join created, so nothing is left behind.
 */
struct join_files {
	char *paths[JOIN_FILES_MAX];
	size_t npaths;
	char *dirs[JOIN_FILES_MAX];
	size_t ndirs;
};

void join_files_init(struct join_files *f);
/* Remember a file (made by someone else, e.g. the store). */
int join_files_add(struct join_files *f, const char *path, struct error *err);
/* mkdir datadir/rel (mode) if absent, and remember it. */
int join_files_mkdir(struct join_files *f, const char *datadir, const char *rel,
                     mode_t mode, struct error *err);
int join_files_save_key(struct join_files *f, const char *datadir,
                        const char *rel, const EVP_PKEY *key, const char *pass,
                        size_t passlen, struct error *err);
int join_files_save_cert(struct join_files *f, const char *datadir,
                         const char *rel, X509 *cert, struct error *err);
/*
 * What every member saves: ca/chain.pem, ca/root-ca.crt, curve.key (under
 * the passphrase), curve.pub and deployment.conf.
 */
int join_files_save_common(struct join_files *f, const char *datadir,
                           const struct join_material *m, EVP_PKEY *curve_key,
                           const char *pass, size_t passlen, struct error *err);
/* Remove every recorded file and directory. */
void join_files_rollback(struct join_files *f);
/* Forget the record (after success). */
void join_files_free(struct join_files *f);

/* What the role tells the shared daemon and status code about itself. */
struct join_role {
	enum node_role role;
	const char *name;         /* "psn" */
	const char *title;        /* "Policy Service Node" */
	const char *const *certs; /* ca/ files shown by status, NULL-ended */
	const char *const *cert_labels;
	const char *const *services; /* rows after Messaging Service */
	/*
	 * Certificates whose end raises an expiry alarm on the PAN
	 * (certwatch.h), ended by a NULL label; NULL: none.
	 */
	const struct certwatch_cert *expiry;
};

/*
 * The join command, as `psn join` and `san join` share it.
 */

/* Default key type of a joining node's keys: the product's CA uses RSA. */
#define JOIN_KEY_DEFAULT "rsa:4096"

struct join_opts {
	const char *join;            /* the join string (--join) */
	const char *hostname;        /* --hostname */
	const char *datadir;         /* --data-dir or ISELAB_DATA_DIR */
	const char *passphrase_file; /* --passphrase-file, else the env */
	enum key_type key_type;      /* --ca-key: every key the node makes */
	int64_t timeout_ms;          /* --timeout */
	bool force;                  /* --force: replace a node in datadir */
};

/*
 * "500ms", "30s", "5m", "1h" or plain seconds, 1 ms to
 * JOIN_TIMEOUT_MAX_MS.
 */
int join_parse_duration(const char *s, int64_t *ms, struct error *err);

/*
 * Parse `<role> join` options (argv[0] is "join").  Returns 0, 1 when
 * --help was printed (exit 0), -1 after printing a usage error.
 */
int join_cli_parse(const struct join_role *role, int argc, char **argv,
                   struct join_opts *o);

/* What a join holds while it saves, for the role's own steps. */
struct join_state {
	const struct join_role *role;
	const struct join_opts *opts;
	const char *pass; /* the node passphrase */
	size_t passlen;
	EVP_PKEY *ca_key;   /* Node CA or Endpoint Sub CA key */
	EVP_PKEY *ocsp_key; /* PSN: OCSP responder key, else NULL */
	struct join_material material;
	struct join_files files; /* every file made so far */
};

/*
 * The role's steps after the common material is saved and before
 * node.conf: a PSN issues its OCSP (rfc6960), EST server and EST client
 * certificates; both roles create their store.  Every file made must be
 * recorded in js->files, so that a failure removes it.
 */
typedef int (*join_finish_fn)(struct join_state *js, struct error *err);

/*
 * The whole join: refuse a directory that holds a node (unless --force),
 * read the passphrase, parse the join string, make the keys and CSRs, run
 * the exchange, check and save the answer, call finish, write node.conf
 * last.  On any failure every file the join made is removed again.
 */
int join_node(const struct join_role *role, const struct join_opts *o,
              join_finish_fn finish, struct error *err);
/* `<role> join` from its command line; returns the exit status. */
int join_main(const struct join_role *role, join_finish_fn finish, int argc,
              char **argv);

/* Whether the PAN link answers (docs/registration.md "Heartbeats"). */
enum join_link_state {
	JOIN_LINK_CONNECTING,   /* no ack yet since start */
	JOIN_LINK_CONNECTED,    /* an ack within the timeout */
	JOIN_LINK_DISCONNECTED, /* no ack for the timeout */
};

const char *join_link_state_name(enum join_link_state s);

/*
 * The heartbeat client: a CURVE DEALER to the PAN's messaging endpoint
 * that sends a Heartbeat every interval and watches for HeartbeatAcks.
 */
struct join_link;

struct join_link *join_link_new(void *zctx, const char *hostname,
                                const struct join_admin *pan,
                                EVP_PKEY *curve_key, int64_t interval_ms,
                                int64_t timeout_ms, struct error *err);
void join_link_free(struct join_link *l);
/* The DEALER, for zmq_poll (ZMQ_POLLIN). */
void *join_link_socket(const struct join_link *l);
/* Send a heartbeat if due and update the state; ms until the next tick. */
int64_t join_link_tick(struct join_link *l, int64_t now_mono);
/* Read and handle everything waiting on the DEALER. */
void join_link_recv(struct join_link *l, int64_t now_mono);
/*
 * A body the link does not handle itself (everything but heartbeat acks
 * and errors) goes to fn: 1 when it took it, 0 to have it counted and
 * logged as unhandled.  fn NULL: none.
 */
typedef int (*join_link_handler_fn)(void *ctx, const Iselab__Envelope *env);
void join_link_set_handler(struct join_link *l, join_link_handler_fn fn,
                           void *ctx);
/*
 * Send env to the PAN now, or fail with -1 (no connection up, or the send
 * queue is full): the link never queues for a PAN that is away.
 */
int join_link_send(struct join_link *l, const Iselab__Envelope *env,
                   struct error *err);
/*
 * The event log (events.h).  fn applies, in one transaction, the events
 * of evs that follow *applied and advances it; it returns how many it
 * applied, or -1 with err set (nothing applied).
 */
typedef int (*join_link_events_fn)(void *ctx, Iselab__Event *const *evs,
                                   size_t n, uint64_t *applied,
                                   struct error *err);
/* Start taking events, the last applied being applied. */
void join_link_set_events(struct join_link *l, uint64_t applied,
                          join_link_events_fn fn, void *ctx);
/* The SUB on the PAN's events endpoint, for zmq_poll; NULL if none. */
void *join_link_events_socket(const struct join_link *l);
/* Read and apply everything waiting on the SUB. */
void join_link_recv_events(struct join_link *l, int64_t now_mono);
/* The last event applied here, and the newest the PAN announced. */
uint64_t join_link_applied(const struct join_link *l);
uint64_t join_link_pan_seq(const struct join_link *l);

/*
 * The node's own alarms, sent whole in every heartbeat (NodeAlarm): the
 * PAN raises what is listed and clears what no longer is.  set returns 1
 * when that changed the list (a heartbeat goes at once), 0 when the alarm
 * was already there as it is, -1 when JOIN_ALARMS_MAX are active; clear
 * returns 1 when it was active, 0 when not.
 */
#define JOIN_ALARMS_MAX 16
struct join_alarm {
	char name[64];
	char text[256];
	int severity; /* AlarmSeverity (registry.proto) */
};
int join_link_alarm_set(struct join_link *l, const char *name, int severity,
                        const char *text);
int join_link_alarm_clear(struct join_link *l, const char *name);

/*
 * The node's service table, sent with every heartbeat: set() replaces it
 * (the daemon refreshes it from the role's service hook every turn).
 */
#define JOIN_SERVICES_MAX 8
struct join_service {
	char name[40];
	char state[24];
	unsigned pid;
};
void join_link_set_services(struct join_link *l, const struct join_service *s,
                            size_t n);
const struct join_alarm *join_link_alarms(const struct join_link *l,
                                          size_t *n);

/*
 * The admin nodes and the epoch (a deployment event, deployment.conf):
 * the one with role PAN is the primary, and the link moves to it if it is
 * another one.  A lower epoch than the link's is ignored.
 */
void join_link_set_deployment(struct join_link *l,
                              const struct join_admin *admins, size_t n,
                              uint64_t epoch);
/*
 * Called when the link adopts another primary (its answer had a higher
 * epoch) or learns a higher epoch: admins (the primary has role PAN) and
 * the epoch, for deployment.conf.
 */
typedef void (*join_link_adopt_fn)(void *ctx, const struct join_admin *admins,
                                   size_t n, uint64_t epoch);
void join_link_set_adopt(struct join_link *l, join_link_adopt_fn fn,
                         void *ctx);
/* A SAN: the endpoints it serves at once promoted, for its heartbeats. */
void join_link_set_endpoints(struct join_link *l, const char *messaging,
                             const char *events);
uint64_t join_link_epoch(const struct join_link *l);
/* Host name of the primary the link follows. */
const char *join_link_primary(const struct join_link *l);

/* Our host name, the sender of every envelope on the link. */
const char *join_link_hostname(const struct join_link *l);
enum join_link_state join_link_state(const struct join_link *l);
/* Realtime ms of the last ack, 0 if none. */
int64_t join_link_last_ack(const struct join_link *l);
const struct msg_stats *join_link_stats(const struct join_link *l);

/* Keys a member daemon reads (config.h), for config_new(). */
extern const struct config_key join_run_keys[];
extern const size_t join_run_nkeys;
/*
 * Variables under ISELAB_ that are not config keys: the passphrase and
 * the data directory (read directly), the test harness's build dir.
 */
extern const char *const join_env_ignore[];

struct join_daemon;

/*
 * What a role adds to the shared member daemon; every member may be NULL,
 * and arg is handed back to each.  A run goes: options and config, the
 * pid file, the log, the signal fd, start(), the CURVE key and the link
 * to the PAN, the store, the control socket, the loop (tick() every
 * turn, message() for what the PAN sends, child_exited() for each child
 * reaped on SIGCHLD), then stop() and everything closed.
 *
 * The PSN's services (CA service, EST server, OCSP responder) are forked
 * in start(): it runs before the daemon makes its ZeroMQ context and
 * opens its store, so no child inherits either (store.h: an LMDB
 * environment must not cross fork()), and it is the only hook that gets
 * the node passphrase, which is wiped right after it returns.
 * child_exited() sees every child the daemon reaps: the place to log a
 * service that died and start it again.
 */
struct join_daemon_hooks {
	void *arg;
	/*
	 * The role's configuration instead of join_run_keys alone: it must
	 * hold them (and log.level), loaded from defaults < D/<role>.conf <
	 * ISELAB_* < sets ("key=value"), and checked.
	 */
	struct config *(*config)(const char *datadir, char *const *sets,
	                         size_t nsets, struct error *err);
	/* Start the role's services; -1 stops the daemon (stop() runs). */
	int (*start)(struct join_daemon *d, void *arg, const char *pass,
	             size_t passlen, struct error *err);
	/* Every turn of the loop; ms until it wants to run again. */
	int64_t (*tick)(struct join_daemon *d, void *arg, int64_t now_mono);
	/* A message from the PAN the link does not handle: 1 taken, 0 not. */
	int (*message)(struct join_daemon *d, void *arg,
	               const Iselab__Envelope *env);
	/*
	 * An event from the PAN's log was applied to the store (events.h):
	 * the role acts on what concerns it (its own settings).
	 */
	void (*applied)(struct join_daemon *d, void *arg,
	                const Iselab__Event *ev);
	/* A child ended; status as waitpid() gives it. */
	void (*child_exited)(struct join_daemon *d, void *arg, pid_t pid,
	                     int status);
	/* Extra status lines, after the PAN link line. */
	void (*status)(const struct join_daemon *d, void *arg, FILE *fp);
	/*
	 * State and pid of role->services[i] for the status table; NULL
	 * (or no hook) shows "not running".
	 */
	const char *(*service)(const struct join_daemon *d, void *arg, size_t i,
	                       pid_t *pid);
	/* The daemon is stopping: stop the services. */
	void (*stop)(struct join_daemon *d, void *arg);
	/*
	 * An admin command on the control socket that the shared daemon
	 * does not answer itself ("status", "alarm"): the role's own (the
	 * SAN's views of its replica).  Writes to out and err; returns the
	 * exit status, or -1 when the role has no such command.
	 */
	int (*command)(struct join_daemon *d, void *arg, int argc, char **argv,
	               FILE *out, FILE *err);
	/*
	 * Everything is open (link, store, control socket), the loop is
	 * next: the role binds what it serves itself (the SAN's answer to
	 * nodes that take it for the primary).  -1 stops the daemon.
	 */
	int (*ready)(struct join_daemon *d, void *arg, struct error *err);
};

/* A member daemon's state once the role's run command has set it up. */
struct join_daemon {
	const struct join_role *role;
	const struct join_daemon_hooks *hooks; /* never NULL once running */
	const char *datadir;
	struct node_identity id;
	struct join_deployment deployment;
	void *zctx;
	struct join_link *link;
	struct store *st;   /* D/store, opened after start() */
	void *control;      /* REP, bound to ipc://D/control.sock */
	int signal_fd;      /* signalfd for SIGINT/SIGTERM/SIGHUP/SIGCHLD */
	int64_t started;    /* realtime ms */
	struct config *cfg; /* join_run_keys */
	struct certwatch *certwatch; /* role->expiry, NULL if none */
	/* A socket of the role's in the loop: extra_fn when readable. */
	void *extra;
	void (*extra_fn)(struct join_daemon *d, void *arg);
	bool stop; /* the role asks the loop to end (status 0) */
};

/*
 * `<role> run`: the whole member daemon, from the command line (argv[0]
 * is "run") to a clean stop on SIGTERM or SIGINT.  hooks may be NULL.
 * Returns the exit status (JOIN_EXIT_*).
 */
int join_run_main(const struct join_role *role,
                  const struct join_daemon_hooks *hooks, int argc, char **argv);

/*
 * `<role> status`: asks the running daemon; when none answers, the
 * offline view from the files (no passphrase, nothing changed).
 */
int join_status_main(const struct join_role *role, int argc, char **argv);

/*
 * `<role> CMD ...` answered by the running daemon (its command hook):
 * argv (without --data-dir DIR, taken here) goes over the control
 * socket and the answer is printed.  No daemon: an error, exit 1.
 */
int join_command_main(const struct join_role *role, int argc, char **argv);

/*
 * Set up a member daemon: node.conf must hold this role; configuration
 * from defaults, D/<role>.conf when present, the environment and sets
 * ("key=value" flags); log levels applied.  Nothing is opened yet.
 */
int join_daemon_init(struct join_daemon *d, const struct join_role *role,
                     const char *datadir, char *const *sets, size_t nsets,
                     struct error *err);
/*
 * Load the node's CURVE key with pass, read deployment.conf and start the
 * heartbeat link to the PAN (a ZeroMQ context of its own, in d->zctx).
 */
int join_daemon_start(struct join_daemon *d, const char *pass, size_t passlen,
                      struct error *err);
/* Close the link, the store, the control socket (if set) and the context. */
void join_daemon_close(struct join_daemon *d);

/*
 * Serve until SIGINT or SIGTERM: heartbeats, acks, control requests.
 * Returns 0 on a clean stop.
 */
int join_daemon_loop(struct join_daemon *d, struct error *err);

/*
 * The status text (node, deployment, PAN link, CA certificates, process
 * table) into a malloc'd string.  d NULL: the offline view, built from the
 * files of datadir, with every service "not running".
 */
char *join_status_text(const struct join_role *role, const char *datadir,
                       const struct join_daemon *d, struct error *err);

#endif
