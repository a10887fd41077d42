/*
 * services: the PSN's certificate services, each its own process
 * (DESIGN.md section 1), and the supervisor that starts and watches them
 * for `psn run`.
 *
 * - The CA service (ca_service.c, process "ca-service") is the only holder
 *   of the Endpoint Sub CA key.  It has no network socket: its one way in
 *   is a REP socket at ipc://D/ca-service.sock (0600).  It publishes the CA
 *   chain and issues endpoint certificates, recording each in the PSN's
 *   store and its outbox to the PAN before it answers.
 * - The EST server (est_service.c, process "est") listens on 8084 and
 *   holds no CA key, only its own TLS key.  It runs common/est.c with a
 *   backend that asks the CA service to sign (the client below), reads
 *   revocation status and enrollment users from the store (read-only), and
 *   takes certificate templates from the store.
 * - Provisioning (provisioning.c, process "provisioning"; provisioning.h)
 *   is the node's EST client and the BYOD portal on 8443.  It holds no CA
 *   key: its EST client key and the portal's TLS key (the EST server's).
 * - The supervisor (services.c) forks the three, restarts a crashed one
 *   with exponential backoff, and makes EST follow CA, as the product
 *   does: while the CA service is down the EST server is stopped (8084
 *   closed) and it comes back when the CA service does.  Provisioning
 *   follows neither: with EST down it answers 503 and raises its alarm.
 *
 * docs/est.md, "How the PSN runs it", describes the processes, the
 * messages, the templates and the users; docs/byod.md the provisioning.
 */
#ifndef ISELAB_PSN_SERVICES_H
#define ISELAB_PSN_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "cert.h"
#include "config.h"
#include "enroll.h"
#include "member_rootchain.h"
#include "node.h"
#include "util.h"

struct error;

/* The CA service's socket in the data directory (ca-service.sock). */
#define CA_SERVICE_SOCKET "ca-service"
/* Process names (ps, logs; at most PROC_NAME_MAX bytes). */
#define CA_SERVICE_PROCESS  "ca-service"
#define EST_SERVICE_PROCESS "est"
#define OCSP_SERVICE_PROCESS "ocsp"
/* Its row in the status tables. */
#define PSN_OCSP_TITLE "OCSP Responder"
/* How long a client waits for the CA service's answer. */
#define CA_CLIENT_TIMEOUT_MS 10000
/* Longest validity the CA service issues: the product's template limit. */
#define CA_SERVICE_VALIDITY_MAX ((int64_t)3652 * 24 * 3600)
/* Most subjectAltNames an enrollment may impose (cert.h CERT_SAN_MAX). */
#define CA_SERVICE_SAN_MAX CERT_SAN_MAX
/* Longest requester and template text carried for the log and store. */
#define CA_SERVICE_TEXT_MAX 255

/*
 * Enrollment users and templates: common/enroll.h (the PAN defines them,
 * events bring them here).  These names stay for the services' code.
 */
#define PSN_TEMPLATE_DEFAULT ENROLL_TEMPLATE_DEFAULT
#define PSN_USER_PREFIX      ENROLL_USER_PREFIX
#define PSN_TEMPLATE_PREFIX  ENROLL_TEMPLATE_PREFIX
#define psn_user_verify       enroll_user_verify
#define psn_user_verify_dummy enroll_user_verify_dummy

/*
 * The configuration keys of the services (est.listen, est.cacerts-refresh,
 * est.workers, est.timeout, provisioning.*), to be merged into the PSN's
 * table so that `psn run` accepts them from D/psn.conf, the environment
 * and --set.
 */
extern const struct config_key psn_services_keys[];
extern const size_t psn_services_nkeys;

/*
 * A configuration with the member daemon's keys (join_run_keys) and the
 * services' keys: defaults < D/psn.conf < ISELAB_* < sets ("key=value").
 */
struct config *psn_services_config(const char *datadir, char *const *sets,
                                   size_t nsets, struct error *err);

/*
 * What a service process is started with.  Under the supervisor the
 * pointers point into the supervisor's memory, which the forked child has
 * a copy of; the child wipes its copy of the passphrase once its keys are
 * loaded.
 */
struct psn_service_args {
	const char *datadir;
	const struct node_identity *id;
	char *pass; /* the node passphrase (a copy the service wipes) */
	size_t passlen;
	/*
	 * The configuration (psn_services_config()); NULL: the service
	 * loads its own from D/psn.conf, the environment and sets.
	 */
	const struct config *cfg;
	char *const *sets; /* "key=value" overrides, may be NULL */
	size_t nsets;
	int ready_fd;    /* write "ok" or why not, then close; -1: none */
	bool foreground; /* `psn service`: SIGINT stops it too */
	/*
	 * The hand-over secret of this service (keys.h; NULL outside the
	 * supervisor) and every service's as the fork inherited them:
	 * psn_service_secrets() keeps ours in own and wipes the inherited.
	 */
	const struct secret *handover;
	struct secret *inherited;
	size_t ninherited;
	struct secret own;
};

/*
 * Keep our hand-over secret in a->own (empty outside the supervisor) and
 * wipe every inherited one: a service can read only what was handed to
 * it.  psn_service_begin() calls it; the CA service, which does not use
 * begin, calls it itself.
 */
int psn_service_secrets(struct psn_service_args *a, struct error *err);


/*
 * What every service process does (services.c):
 * - ready: report "ok" (or why not) to the supervisor, once.
 * - begin: close every inherited descriptor but the ready pipe, ignore
 *   SIGPIPE (a client that went away is an error, not a death), and take
 *   the configuration: the supervisor's, or *own loaded from the files.
 * - store_ro: the node's store, read-only (every service but the CA
 *   service only reads it).
 */
void psn_service_ready(struct psn_service_args *a, const char *msg);
int psn_service_begin(struct psn_service_args *a, const struct config **cfg,
                      struct config **own, struct error *err);
struct store;
int psn_service_store_ro(const char *datadir, struct store **out,
                         struct error *err);
/*
 * Wait up to wait_ms for a signal on sigfd (proc_signals_fd()): the
 * service's loop between two timed jobs.  PSN_SERVICE_TIMEOUT when the
 * time is up, _STOP on SIGTERM (SIGINT too in the foreground), _HUP on
 * SIGHUP, -1 on an error (logged in cat).
 */
enum { PSN_SERVICE_TIMEOUT = 0, PSN_SERVICE_STOP = 1, PSN_SERVICE_HUP = 2 };
/*
 * Raise (severity and text given) or clear (severity NULL) an alarm of
 * this node through its daemon's control socket (`alarm raise|clear`,
 * docs/events.md): the PAN shows it while the daemon reports it.  0, or
 * -1 when the daemon did not take it (not up yet: try again later).
 */
int psn_service_alarm(const char *datadir, const char *name,
                      const char *severity, const char *text,
                      struct error *err);
int psn_service_wait(const struct psn_service_args *a, int sigfd,
                     int64_t wait_ms, enum log_category cat);

/* The processes' bodies (proc_fork() functions): 0 on a clean stop. */
int ca_service_main(void *arg);
int est_service_main(void *arg);
/*
 * The OCSP responder (ocsp_service.c, docs/ocsp.md): plain HTTP on
 * ocsp.listen (2560), holding only the OCSP responder key; reads status
 * from the store read-only.  Independent of the CA service.
 */
int ocsp_service_main(void *arg);

/*
 * Client of the CA service, used by the EST server's worker threads and
 * refresh timer: thread-safe (one REQ socket behind a mutex, made afresh
 * after a timeout).
 */
struct ca_client;

/* Why a CA service call failed. */
enum ca_client_failure {
	CA_CLIENT_UNAVAILABLE, /* not running, or no answer in time */
	CA_CLIENT_REFUSED,     /* it refused the request (err says why) */
	CA_CLIENT_INTERNAL,    /* it failed (store, signing) */
};

struct ca_client *ca_client_new(void *zmq_ctx, const char *datadir,
                                int timeout_ms, struct error *err);
void ca_client_free(struct ca_client *c);

/*
 * The chain as the CA service reads it: *certs (free with chain_free())
 * holds what it found, issuing CA first; *complete says whether it is the
 * whole chain to a root, reason (when not) why.  -1 with *why set when the
 * call failed.
 */
int ca_client_chain(struct ca_client *c, STACK_OF(X509) * *certs,
                    bool *complete, char *reason, size_t rlen,
                    enum ca_client_failure *why, struct error *err);

/* An enrollment as the CA service takes it. */
struct ca_enroll {
	X509_REQ *csr;
	enum cert_profile profile;  /* TLS_CLIENT or TLS_SERVER */
	int64_t validity;           /* seconds; 0: the profile's default */
	const char *subject_cn;     /* NULL: the CSR's subject */
	const struct cert_san *san; /* nsan > 0: instead of the CSR's */
	size_t nsan;
	const char *requester;     /* for the log */
	const char *template_name; /* recorded with the certificate */
};

int ca_client_enroll(struct ca_client *c, const struct ca_enroll *req,
                     X509 **out, enum ca_client_failure *why,
                     struct error *err);

/*
 * The supervisor (for the daemon's hook).
 */
struct psn_services;

/*
 * Fork the CA service and, once it is serving, the EST server, then
 * provisioning, each as its own process (proc_fork) that re-opens the
 * node log under its name.  Returns when all three are serving, or -1
 * with the reason (a wrong passphrase, a missing key, a port in use) after
 * stopping what started.
 * The supervisor keeps a locked, non-dumpable copy of the passphrase to
 * restart the CA service; the caller wipes its own.
 */
int psn_services_start(struct psn_services **out, const char *datadir,
                       const struct node_identity *id, const char *passphrase,
                       size_t passlen, struct error *err);
/*
 * The same with the daemon's configuration (made by psn_services_config(),
 * as the join_daemon_hooks config hook does), which must outlive the
 * services: they read est.* from it, --set flags of `psn run` included.
 */
int psn_services_start_cfg(struct psn_services **out, const char *datadir,
                           const struct node_identity *id,
                           const struct config *cfg, const char *passphrase,
                           size_t passlen, struct error *err);
/*
 * The same with the node's settings (ISE-CA-EST.md "Service status"):
 * session services off, only the OCSP responder runs; the CA service
 * disabled (`pan ca disable`), neither it nor EST, which follows it.  What
 * does not run shows "disabled".  set() applies new settings to running
 * services: it stops what is turned off and starts what is turned on.
 */
int psn_services_start_as(struct psn_services **out, const char *datadir,
                          const struct node_identity *id,
                          const struct config *cfg, const char *passphrase,
                          size_t passlen, bool session, bool ca,
                          struct error *err);
void psn_services_set(struct psn_services *s, bool session, bool ca);
/*
 * The node passphrase the supervisor keeps (NULL when s is), for the
 * CA renewal worker (member_rootchain.h).
 */
const char *psn_services_pass(const struct psn_services *s, size_t *len);
/*
 * The hand-over copies the services that may run need (into out, at most
 * MEMBER_HANDOVERS_MAX); how many.
 */
size_t psn_services_handovers(const struct psn_services *s,
                              struct member_handover *out);
/*
 * A new root CA chain generation is installed (member_rootchain.h): SIGHUP
 * to every service that runs, in start order (the CA service first), so
 * that each switches to the new files in place, its key from its
 * hand-over copy; one that cannot ends and is started again on them.
 */
void psn_services_renewed(struct psn_services *s);
/*
 * Call every loop turn: reaps our children, restarts a crashed service
 * after its backoff (1 s doubling to 60 s, reset after a minute of good
 * service), and keeps EST following CA.
 */
void psn_services_tick(struct psn_services *s);
/* Milliseconds until tick has something to do (for the poll timeout). */
int64_t psn_services_next_ms(const struct psn_services *s);
/*
 * For a pid the caller reaped: 1 (and logged, "est terminated signal 9")
 * when it was one of ours, 0 otherwise.
 */
int psn_services_child_exited(struct psn_services *s, pid_t pid, int status);
/*
 * Rows of the status table ("%-32s %-14s %s\n": PROCESS NAME, STATE,
 * PROCESS ID) for the CA, EST and provisioning services.  Returns the
 * length written, or -1 when it does not fit.
 */
int psn_services_status(struct psn_services *s, char *buf, size_t len);
/*
 * The state ("running", "initializing", "restarting", "not running") and
 * pid (0: none) of the service whose status title is title ("Certificate
 * Authority Service", "EST Service"); NULL when it is not one of ours.
 */
const char *psn_services_state(const struct psn_services *s, const char *title,
                               pid_t *pid);
/*
 * SIGTERM each (provisioning, EST, then CA), wait, reap, wipe the
 * passphrase, free.
 */
void psn_services_stop(struct psn_services *s);

/* Command: `psn service ca|est|provisioning|all ...`. */
int psn_service_main(int argc, char **argv);

#endif
