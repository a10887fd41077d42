/*
 * psn: the Policy Service Node, the deployment's certificate services
 * front: its Endpoint Sub CA issues endpoint certificates over EST, and its
 * OCSP responder answers for them.
 *
 * One entry point per subcommand; main.c only picks one.  Until the EST and
 * OCSP issues land, `psn run` registers, heartbeats and reports status.
 */
#ifndef ISELAB_PSN_H
#define ISELAB_PSN_H

#include "join.h"

/* Exit statuses shared by every subcommand (psn(8) EXIT STATUS). */
#define PSN_EXIT_OK    0
#define PSN_EXIT_FAIL  1 /* the operation failed; the message says why */
#define PSN_EXIT_USAGE 2 /* bad command line */

/* How the shared member code sees this role. */
extern const struct join_role psn_role;

int psn_join_main(int argc, char **argv);
int psn_run_main(int argc, char **argv);
int psn_status_main(int argc, char **argv);

#endif
