/*
 * psn: thin entry point; each subcommand lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "iselab-version.h"
#include "psn.h"
#include "services.h"

static const struct {
	const char *name;
	int (*main)(int, char **);
	const char *help;
} commands[] = {
    {"join", psn_join_main,
     "join a deployment with the string `pan node add` printed"},
    {"run", psn_run_main, "run the node in the foreground"},
    {"status", psn_status_main,
     "show this node, its PAN link, certificates and services"},
    {"service", psn_service_main,
     "run the CA service or the EST server in the foreground"},
    {"user", psn_user_main, "add, remove or list EST enrollment users"},
};

static void
usage(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: psn <command> [options]   (psn <command> --help)"
	            "\n\ncommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(fp, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int
main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return PSN_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 ||
	    strcmp(argv[1], "version") == 0) {
		printf("psn (ise-lab) %s\n", ISELAB_VERSION);
		return PSN_EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return PSN_EXIT_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "psn: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return PSN_EXIT_USAGE;
}
