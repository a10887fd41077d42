/*
 * san: thin entry point; each subcommand lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "iselab-version.h"
#include "san.h"

static const struct {
	const char *name;
	int (*main)(int, char **);
	const char *help;
} commands[] = {
    {"join", san_join_main,
     "join a deployment with the string `pan node add` printed"},
    {"run", san_run_main, "run the node in the foreground"},
    {"status", san_status_main,
     "show this node, its PAN link, certificates and services"},
};

static void
usage(FILE *fp)
{
	size_t i;

	fprintf(fp, "usage: san <command> [options]   (san <command> --help)"
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
		return SAN_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 ||
	    strcmp(argv[1], "version") == 0) {
		printf("san (ise-lab) %s\n", ISELAB_VERSION);
		return SAN_EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return SAN_EXIT_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "san: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return SAN_EXIT_USAGE;
}
