/*
 * cli: subcommand dispatch for the role executables; see cli.h.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "iselab-version.h"

static void
cli_usage(FILE *fp, const char *prog, const struct cli_command *cmds, size_t n)
{
	size_t i;

	fprintf(fp,
	        "usage: %s <command> [options]   (%s <command> --help)\n\n"
	        "commands:\n",
	        prog, prog);
	for (i = 0; i < n; i++)
		fprintf(fp, "  %-8s %s\n", cmds[i].name, cmds[i].help);
}

int
cli_dispatch(const char *prog, const struct cli_command *cmds, size_t n,
             int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		cli_usage(stderr, prog, cmds, n);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 ||
	    strcmp(argv[1], "version") == 0) {
		printf("%s (ise-lab) %s\n", prog, ISELAB_VERSION);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		cli_usage(stdout, prog, cmds, n);
		return CLI_EXIT_OK;
	}
	for (i = 0; i < n; i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].main(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
	cli_usage(stderr, prog, cmds, n);
	return CLI_EXIT_USAGE;
}
