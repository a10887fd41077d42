/*
 * san: a Secondary Administration Node, the deployment's standby admin
 * node: it holds its own Node CA (signed by the PAN's Root CA) and takes
 * over as primary when promoted.
 *
 * One entry point per subcommand; main.c only picks one.  `san run` keeps
 * a replica of the PAN's state (run.c); `san alarms`, `san node list` and
 * `san cert list` show it, answered by the running daemon.
 */
#ifndef ISELAB_SAN_H
#define ISELAB_SAN_H

#include "join.h"

/* Exit statuses shared by every subcommand (san(8) EXIT STATUS). */
#define SAN_EXIT_OK    0
#define SAN_EXIT_FAIL  1 /* the operation failed; the message says why */
#define SAN_EXIT_USAGE 2 /* bad command line */

/* Where an imported CA store lives, under the data directory (ca.c). */
#define CA_IMPORT_DIR NODE_CA_IMPORT_DIR
/* The SAN's settings file, in either mode (member or primary). */
#define SAN_CONFIG_FILE "san.conf"

/* How the shared member code sees this role. */
extern const struct join_role san_role;

int san_join_main(int argc, char **argv);
int san_run_main(int argc, char **argv);
int san_status_main(int argc, char **argv);
/* `san alarms|node|cert ...`: a view of the replica, from the daemon. */
int san_view_main(int argc, char **argv);
/* `san ca import`: the PAN's CA store, from `pan ca export` (ca.c). */
int san_ca_main(int argc, char **argv);

/*
 * promote.c.  `san promote`: through the running daemon (which then runs
 * as the primary), or offline.  san_promote() does it: checks, the
 * imported Root CA key where the CA signer takes it, deployment.conf with
 * the raised epoch and this node as the primary.  Writes what it did to
 * out, why not to errf; returns an exit status.  san_is_primary(): 1 when
 * deployment.conf names this node the primary, 0 when not, -1.
 */
struct config;
struct node_identity;
int san_promote_main(int argc, char **argv);
/* `san user ...`: pan user's client (the password hashed here). */
int san_user_main(int argc, char **argv);
int san_promote(const char *datadir, const struct node_identity *id,
                const struct config *cfg, FILE *out, FILE *errf);
int san_is_primary(const char *datadir, const struct node_identity *id,
                   struct error *err);

#endif
