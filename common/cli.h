/*
 * cli: the subcommand dispatcher that pan, san and psn share, so that
 * `ROLE help`, `ROLE --version` and an unknown command behave the same in
 * every role.
 */
#ifndef ISELAB_CLI_H
#define ISELAB_CLI_H

#include <stddef.h>

/* Exit statuses of every subcommand (EXIT STATUS in pan(8), psn(8), san(8)). */
#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1 /* the operation failed; the message says why */
#define CLI_EXIT_USAGE 2 /* bad command line */

struct cli_command {
	const char *name;
	int (*main)(int argc, char **argv); /* argv[0] is the command */
	const char *help;                   /* one line for `ROLE help` */
};

/* Run the command argv[1] names; returns its exit status. */
int cli_dispatch(const char *prog, const struct cli_command *cmds, size_t n,
                 int argc, char **argv);

#endif
